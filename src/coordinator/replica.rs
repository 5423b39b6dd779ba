//! The replica side: a [`Handler`] that serves coordinators' requests from
//! the node's local store, hint store and batch log.

use super::messages::{
    from_key_bound, Deltas, HintPayload, LoggedBatch, PeerError, PeerRequest, PeerResponse,
    ReplicaPartition,
};
use super::throttle::StreamThrottle;
use crate::cluster::anti_entropy::{SlicedSpan, SpanHasher, SpanHashes};
use crate::cluster::batchlog::{BatchEntry, BatchLog};
use crate::cluster::hints::{Hint, HintStore};
use crate::model::key;
use crate::model::Entry;
use crate::net::{BoxFuture, Handler};
use crate::query::api::{DataStore, TableRef};
use crate::query::LocalStore;
use bytes::Bytes;
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Serves [`PeerRequest`]s on one node. Give it to the node's transport
/// (`SimNetwork::add_node`, `QuicTransport::bind`) at construction.
#[derive(Clone)]
pub struct ReplicaHandler {
    local: Arc<LocalStore>,
    hints: Arc<HintStore>,
    batch_log: Option<Arc<BatchLog>>,
}

impl std::fmt::Debug for ReplicaHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaHandler")
            .field("node", &self.local.node_id())
            .finish()
    }
}

impl ReplicaHandler {
    /// A handler over the node's data and hints.
    pub fn new(local: Arc<LocalStore>, hints: Arc<HintStore>) -> ReplicaHandler {
        ReplicaHandler {
            local,
            hints,
            batch_log: None,
        }
    }

    /// The same handler, also holding logged batches for coordinators in
    /// `batch_log` (without one, batch-log requests are refused as
    /// unsupported).
    pub fn with_batch_log(mut self, batch_log: Arc<BatchLog>) -> ReplicaHandler {
        self.batch_log = Some(batch_log);
        self
    }

    fn batch_log(&self) -> Result<&Arc<BatchLog>, PeerError> {
        self.batch_log
            .as_ref()
            .ok_or_else(|| PeerError::Unsupported("this node keeps no batch log".into()))
    }

    /// Serves one request (also what the coordinator calls for itself,
    /// without the network).
    pub async fn serve(&self, req: PeerRequest) -> PeerResponse {
        match self.serve_inner(req).await {
            Ok(r) => r,
            Err(e) => PeerResponse::Error(e),
        }
    }

    /// Moves this node's clock past the newest timestamp in `entries`.
    pub(super) fn observe(&self, entries: &Deltas) {
        if let Some(max) = entries
            .iter()
            .filter_map(|(_, e)| e.ts_bounds().map(|(_, hi)| hi))
            .max()
        {
            self.local.clock().observe(max);
        }
    }

    async fn serve_inner(&self, req: PeerRequest) -> Result<PeerResponse, PeerError> {
        match req {
            PeerRequest::Stamp {
                table,
                pk,
                mutations,
            } => {
                let deltas = self.local.stamp(&table, &pk, mutations).await?;
                self.observe(&deltas);
                Ok(PeerResponse::Stamped(deltas))
            }
            PeerRequest::Apply { table, entries } => {
                check_entries(&entries)?;
                self.observe(&entries);
                self.local.apply(&table, entries).await?;
                Ok(PeerResponse::Applied)
            }
            PeerRequest::Read { table, pk, slice } => {
                let got = self.local.read_states(&table, &pk, slice.into()).await?;
                Ok(PeerResponse::Partition(got.into()))
            }
            PeerRequest::ReadDigest { table, pk, slice } => {
                let got = self.local.read_states(&table, &pk, slice.into()).await?;
                Ok(PeerResponse::Digest(ReplicaPartition::from(got).digest()))
            }
            PeerRequest::Scan {
                table,
                lower,
                upper,
                max_partitions,
                rows_per_partition,
            } => {
                let (parts, cut) = self
                    .local
                    .scan_states(
                        &table,
                        from_key_bound(lower),
                        from_key_bound(upper),
                        max_partitions as usize,
                        rows_per_partition.map(|r| r as usize),
                    )
                    .await?;
                Ok(PeerResponse::Partitions {
                    partitions: parts
                        .into_iter()
                        .map(|(p, s)| (p, ReplicaPartition::from(s)))
                        .collect(),
                    cut,
                })
            }
            PeerRequest::StoreHint {
                target,
                table,
                entries,
            } => {
                check_entries(&entries)?;
                let payload = HintPayload { table, entries }
                    .encode()
                    .map_err(PeerError::Invalid)?;
                let hint = Hint {
                    created_ms: self.local.clock().wall().now_millis(),
                    payload,
                };
                let hints = self.hints.clone();
                // The hint store writes (and fsyncs) inline: hints are small
                // and rare, and the simulation needs no blocking pool.
                hints
                    .store(target, &hint)
                    .map_err(|e| PeerError::Storage(e.to_string()))?;
                Ok(PeerResponse::HintStored)
            }
            PeerRequest::Truncate { table } => {
                self.local.truncate(&table).await?;
                Ok(PeerResponse::Applied)
            }
            PeerRequest::StoreBatch { id, payload } => {
                let log = self.batch_log()?;
                // Only a well-formed batch is worth keeping: a replay could
                // do nothing with garbage.
                let batch = LoggedBatch::decode(&payload)
                    .map_err(|e| PeerError::Invalid(format!("logged batch: {e}")))?;
                if batch.id != id {
                    return Err(PeerError::Invalid(
                        "the logged batch's id does not match the request's".into(),
                    ));
                }
                let entry = BatchEntry {
                    id,
                    written_ms: self.local.clock().wall().now_millis(),
                    payload,
                };
                // Written and fsynced inline, as hints are.
                log.store(&entry)
                    .map_err(|e| PeerError::Storage(e.to_string()))?;
                Ok(PeerResponse::BatchStored)
            }
            PeerRequest::RemoveBatch { id } => {
                self.batch_log()?
                    .remove(id)
                    .map_err(|e| PeerError::Storage(e.to_string()))?;
                Ok(PeerResponse::BatchRemoved)
            }
            PeerRequest::GetSchema => Err(PeerError::Unsupported(
                "schema pulls are served by the node's handler, not the replica".into(),
            )),
            PeerRequest::RingChanges => Err(PeerError::Unsupported(
                "ring questions are served by the node's handler, not the replica".into(),
            )),
            PeerRequest::HashSpan { table, span } => {
                let (hashes, _) = self.hash_span(&table, span, None).await?;
                Ok(PeerResponse::SpanHashes(hashes))
            }
        }
    }

    /// Hashes every partition of `table` in `span` (anti-entropy), paging
    /// through the store so that only a page of partitions is in memory;
    /// with `pacing`, each page's bytes pass the throttle once read, so the
    /// page (or span) after it waits its turn. Returns the hashes and what
    /// reading the span cost.
    pub async fn hash_span(
        &self,
        table: &TableRef,
        span: SlicedSpan,
        pacing: Option<HashPacing<'_>>,
    ) -> Result<(SpanHashes, HashCost), PeerError> {
        span.check()
            .map_err(|e| PeerError::Invalid(e.to_string()))?;
        let mut cost = HashCost::default();
        let mut hasher = SpanHasher::new(span);
        let upper = match span.hi().checked_add(1) {
            Some(n) => Bound::Excluded(n.to_be_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        let mut lower = Bound::Included(span.lo().to_be_bytes().to_vec());
        loop {
            let (parts, more) = self
                .local
                .scan_states(table, lower, upper.clone(), HASH_PAGE, None)
                .await?;
            let next = match parts.last() {
                Some((prefix, _)) if more => Some(key::partition_end(prefix)),
                _ => None,
            };
            let page_bytes: usize = parts
                .iter()
                .map(|(prefix, slice)| {
                    let rows: usize = slice
                        .rows
                        .iter()
                        .map(|r| r.clustering.len() + r.state.approximate_bytes())
                        .sum();
                    prefix.len() + slice.header.approximate_bytes() + rows
                })
                .sum();
            cost.bytes += page_bytes as u64;
            for (prefix, slice) in parts {
                let token = key::token_of_key(&prefix)
                    .map_err(|e| PeerError::Storage(format!("a stored key: {e}")))?;
                let digest = ReplicaPartition::from(slice).digest();
                hasher
                    .add(token, &prefix, digest)
                    .map_err(|e| PeerError::Storage(e.to_string()))?;
            }
            // The next page (or the next span) waits its turn.
            if let Some(p) = pacing {
                cost.waited += p.throttle.pass_until(page_bytes, p.until).await;
            }
            match next {
                Some(end) => lower = Bound::Included(end),
                None => return Ok((hasher.finish(), cost)),
            }
        }
    }
}

/// How [`ReplicaHandler::hash_span`] paces its reads, so that a repair's
/// hashing (which reads every partition of the span) leaves the disks and
/// CPUs to the requests served meanwhile.
#[derive(Debug, Clone, Copy)]
pub struct HashPacing<'a> {
    /// The node's limit for range streams, which hashing shares.
    pub throttle: &'a StreamThrottle,
    /// No page waits past this instant: a throttled hash still answers
    /// within the coordinator's timeout.
    pub until: Instant,
}

/// What hashing a span read and waited for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HashCost {
    /// About how many bytes of row states were read (as a cache would
    /// count them).
    pub bytes: u64,
    /// How long pages waited under the throttle.
    pub waited: Duration,
}

/// Partitions read per page while hashing a span.
const HASH_PAGE: usize = 512;

/// Every key must be a well-formed key of the entry's kind.
fn check_entries(entries: &Deltas) -> Result<(), PeerError> {
    use crate::model::key::{classify, KeyKind};
    for (k, e) in entries {
        match (classify(k), e) {
            (Ok(KeyKind::Row { .. }), Entry::Row(_))
            | (Ok(KeyKind::Header { .. }), Entry::Header(_)) => {}
            (Ok(_), _) => {
                return Err(PeerError::Invalid(
                    "a key does not match its entry kind".into(),
                ))
            }
            (Err(err), _) => return Err(PeerError::Invalid(format!("bad key: {err}"))),
        }
    }
    Ok(())
}

impl Handler<PeerRequest, PeerResponse> for ReplicaHandler {
    fn on_request(&self, _from: SocketAddr, req: PeerRequest) -> BoxFuture<'static, PeerResponse> {
        let this = self.clone();
        Box::pin(async move { this.serve(req).await })
    }

    fn on_datagram(&self, _from: SocketAddr, _payload: Bytes) {}
}
