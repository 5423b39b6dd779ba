//! Logged batches: the coordinator side of the batch log.
//!
//! [`BatchCoordinator`] is the node's [`DataStore`]: it passes reads,
//! scans and single-partition writes to the [`ClusterStore`] and runs
//! logged batches that span several partitions itself, so that such a
//! batch is applied completely or (when its batch log cannot be written)
//! not at all, even if the coordinator dies half way. See
//! `docs/architecture.md`, "Logged batches", for the whole argument.
//!
//! # A logged batch
//!
//! 1. Every partition must be writable at the requested consistency (the
//!    same up-front check as a single write: `Unavailable` otherwise, and
//!    nothing is logged or applied).
//! 2. The batch log: the batch (its id, a timeuuid; the creation time;
//!    the consistency; the unstamped mutations per table and partition;
//!    the list of holders) is stored durably on up to two alive nodes
//!    other than this one, in different racks where racks are set (the
//!    local rack last), as Cassandra does. Every chosen node must
//!    acknowledge (TWO when two were chosen, ONE when only one other
//!    node is alive). With no other node in the ring the local node holds
//!    it; with other nodes but none alive, only ANY falls back to the
//!    local node. Otherwise the batch fails with
//!    [`QueryError::BatchLog`], and holders that did store it are told
//!    to drop it: nothing is applied. (A holder that stored it but can
//!    not be reached to drop it replays it later; this is the one way a
//!    failed batch can still be applied, as with Cassandra's BATCH_LOG
//!    timeout.)
//! 3. The partitions are applied concurrently through the normal write
//!    path, each at the requested consistency, so all are done within one
//!    write timeout.
//! 4. If all succeeded, the entry is removed from its holders in the
//!    background. If any failed, the error is returned and the entry
//!    stays: the batch is applied by replay.
//!
//! # Replay
//!
//! Every node sweeps its batch log ([`BatchCoordinator::spawn_replayer`])
//! and replays entries stored at least the replay delay ago (default two
//! write timeouts, so a live coordinator has finished with them). Of the
//! holders of an entry, the first one alive (in the entry's order)
//! replays it; the others wait, so two holders do not replay one batch at
//! once. For each partition, in turn (throttled by a pause):
//!
//! - the table was dropped since: its mutations are discarded (logged);
//! - the rows the batch writes are read from every alive replica with
//!   blocking read repair, so each alive replica, the stamping one
//!   included, holds every version any of them had (the first attempt's
//!   versions among them);
//! - the mutations are written again through the normal write path with no
//!   client context, at a consistency of every alive replica (hints for
//!   the others). The stamping replica's own context now covers the first
//!   attempt's versions, so the new version supersedes them instead of
//!   becoming their sibling; its cells carry the batch's timestamps, so
//!   what readers see does not change.
//!
//! A partition replayed while one of its replicas was down is written
//! (the data is available) but not finished: that replica may hold a
//! version of the first attempt nobody else has, which would become a
//! sibling of the replay's. The entry is kept, and once every replica is
//! up the partition is replayed again, which supersedes both. An entry is
//! removed from every holder when all its partitions are finished.

use super::liveness::Liveness;
use super::messages::{LoggedBatch, PeerError, PeerRequest, PeerResponse};
use super::store::ClusterStore;
use crate::cluster::batchlog::{BatchEntry, BatchLog};
use crate::model::key;
use crate::model::{Consistency, NodeId};
use crate::net::Transport;
use crate::query::api::{
    BoxFuture, DataStore, Mutation, PartitionWrite, QueryError, ScannedPartition, SliceRequest,
    StoredPartition, TableRef,
};
use crate::schema::SchemaStore;
use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap};
use std::hash::Hasher;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// Largest encoded logged batch (peer frames carry at most 16 MiB).
pub const MAX_LOGGED_BATCH_BYTES: usize = 8 << 20;

/// 100-ns intervals between the UUID epoch (1582-10-15) and the Unix epoch.
const UUID_EPOCH_OFFSET: u64 = 0x01B2_1DD2_1381_4000;

/// Environment variable of the test-only fault point (see
/// [`BatchFault::from_env`]).
pub const FAULT_ENV: &str = "RINGDB_TEST_BATCH_STALL_AFTER";

/// A test-only fault point in the logged-batch path: lets a test stop a
/// coordinator after its batch log was written and some partitions were
/// applied, as if it died there. Inert unless set.
#[derive(Clone, Default)]
pub struct BatchFault {
    /// Called once the batch log is written, before any partition is
    /// applied (a simulation cuts the coordinator off here).
    pub after_log: Option<Arc<dyn Fn() + Send + Sync>>,
    /// Apply only this many partitions (the first ones), then stop.
    pub apply_first: Option<usize>,
    /// How to stop: `true` never answers (prints a line to stderr first,
    /// so a test can kill the process); `false` fails the request with a
    /// server error, leaving the batch log entry in place.
    pub stall: bool,
}

impl std::fmt::Debug for BatchFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchFault")
            .field("after_log", &self.after_log.is_some())
            .field("apply_first", &self.apply_first)
            .field("stall", &self.stall)
            .finish()
    }
}

impl BatchFault {
    /// The fault point a real-process test asks for with
    /// `RINGDB_TEST_BATCH_STALL_AFTER=<n>`: after the batch log is written,
    /// apply the first `n` partitions of every logged batch, print
    /// `ringdb: test fault point: logged batch ... stalled after applying
    /// n of m partitions` to stderr and never answer. `None` when the
    /// variable is not set (or not a number).
    pub fn from_env() -> Option<BatchFault> {
        let n = std::env::var(FAULT_ENV)
            .ok()?
            .trim()
            .parse::<usize>()
            .ok()?;
        Some(BatchFault {
            after_log: None,
            apply_first: Some(n),
            stall: true,
        })
    }
}

/// Settings of a [`BatchCoordinator`].
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Entries stored at least this long ago are replayed (default: two
    /// write timeouts).
    pub replay_delay: Duration,
    /// How often the batch log is swept for entries to replay.
    pub replay_interval: Duration,
    /// Pause between two replayed partitions (the replay throttle).
    pub replay_pause: Duration,
    /// How long the batch log step waits for its acknowledgements.
    pub log_timeout: Duration,
    /// Test-only fault point; `None` in production.
    pub fault: Option<BatchFault>,
}

impl BatchConfig {
    /// The defaults for a coordinator whose writes time out after
    /// `write_timeout`: replay after twice that, sweep every half of the
    /// delay (between 100 ms and 10 s).
    pub fn for_write_timeout(write_timeout: Duration) -> BatchConfig {
        let replay_delay = write_timeout * 2;
        BatchConfig {
            replay_delay,
            replay_interval: (replay_delay / 2)
                .clamp(Duration::from_millis(100), Duration::from_secs(10)),
            replay_pause: Duration::from_millis(5),
            log_timeout: write_timeout,
            fault: None,
        }
    }
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig::for_write_timeout(super::CoordinatorConfig::default().write_timeout)
    }
}

/// Counters of a [`BatchCoordinator`] since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Logged batches whose batch log was written.
    pub logged: u64,
    /// Logged batches refused because the batch log could not be written.
    pub log_failures: u64,
    /// Entries replayed to the end and removed.
    pub replayed_entries: u64,
    /// Partitions written by replay.
    pub replayed_partitions: u64,
    /// Partitions discarded by replay (their table was dropped).
    pub discarded_partitions: u64,
}

/// What one sweep of the batch log did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchReplayReport {
    /// Entries old enough to replay.
    pub due: usize,
    /// Entries replayed to the end and removed.
    pub finished: usize,
    /// Entries kept for a later sweep (a partition failed, or was written
    /// while one of its replicas was down).
    pub kept: usize,
    /// Entries left to another holder, the first alive one.
    pub left_to_other_holder: usize,
    /// Entries dropped because they did not decode.
    pub undecodable: usize,
    /// Partitions written.
    pub partitions_written: usize,
    /// Partitions discarded because their table was dropped.
    pub partitions_discarded: usize,
    /// Partitions whose replay failed this time.
    pub partitions_failed: usize,
    /// Another sweep was running; nothing was done.
    pub busy: bool,
}

/// How the replay of one partition went.
enum PartitionReplay {
    /// Written with every replica up: done.
    Finished,
    /// Written, but a replica was down: do it again when all are up.
    WrittenWithReplicaDown,
    /// Already written with a replica down, which is still down: nothing
    /// done.
    Waiting,
    /// Its table was dropped: nothing to do, ever.
    Discarded,
    /// The read or the write failed.
    Failed(QueryError),
}

/// Per entry, what this process already replayed (partition indexes).
#[derive(Debug, Clone, Default)]
struct Progress {
    finished: BTreeSet<usize>,
    written_degraded: BTreeSet<usize>,
}

#[derive(Default)]
struct Counters {
    logged: AtomicU64,
    log_failures: AtomicU64,
    replayed_entries: AtomicU64,
    replayed_partitions: AtomicU64,
    discarded_partitions: AtomicU64,
}

struct Inner {
    node: NodeId,
    cluster: ClusterStore,
    log: Arc<BatchLog>,
    schema: Arc<SchemaStore>,
    transport: Arc<dyn Transport<PeerRequest, PeerResponse>>,
    liveness: Arc<dyn Liveness>,
    config: BatchConfig,
    last_ticks: AtomicU64,
    progress: Mutex<HashMap<u128, Progress>>,
    sweeping: AtomicBool,
    counters: Counters,
}

/// The node's data store with logged batches: a [`ClusterStore`] plus the
/// batch log (see the module documentation). Cheap to clone.
#[derive(Clone)]
pub struct BatchCoordinator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BatchCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchCoordinator")
            .field("node", &self.inner.node)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

fn server(e: impl std::fmt::Display) -> QueryError {
    QueryError::Server(e.to_string())
}

fn table_name(t: &TableRef) -> String {
    format!("{}.{}", t.keyspace, t.table)
}

impl BatchCoordinator {
    /// A batch coordinator over `cluster`, holding entries for others in
    /// `log` (the same log the node's replica handler stores into, see
    /// `ReplicaHandler::with_batch_log`), with the node's schema,
    /// transport and liveness view.
    pub fn new(
        cluster: ClusterStore,
        log: Arc<BatchLog>,
        schema: Arc<SchemaStore>,
        transport: Arc<dyn Transport<PeerRequest, PeerResponse>>,
        liveness: Arc<dyn Liveness>,
        config: BatchConfig,
    ) -> BatchCoordinator {
        BatchCoordinator {
            inner: Arc::new(Inner {
                node: cluster.node_id(),
                cluster,
                log,
                schema,
                transport,
                liveness,
                config,
                last_ticks: AtomicU64::new(0),
                progress: Mutex::new(HashMap::new()),
                sweeping: AtomicBool::new(false),
                counters: Counters::default(),
            }),
        }
    }

    /// The coordinator of single-partition requests underneath.
    pub fn cluster(&self) -> &ClusterStore {
        &self.inner.cluster
    }

    /// This node's batch log.
    pub fn batch_log(&self) -> &Arc<BatchLog> {
        &self.inner.log
    }

    /// The settings.
    pub fn config(&self) -> &BatchConfig {
        &self.inner.config
    }

    /// Counters since start.
    pub fn stats(&self) -> BatchStats {
        let c = &self.inner.counters;
        BatchStats {
            logged: c.logged.load(Ordering::Relaxed),
            log_failures: c.log_failures.load(Ordering::Relaxed),
            replayed_entries: c.replayed_entries.load(Ordering::Relaxed),
            replayed_partitions: c.replayed_partitions.load(Ordering::Relaxed),
            discarded_partitions: c.discarded_partitions.load(Ordering::Relaxed),
        }
    }

    fn is_alive(&self, node: NodeId) -> bool {
        node == self.inner.node || self.inner.liveness.is_alive(node)
    }

    fn now_ms(&self) -> u64 {
        self.inner.cluster.local().clock().wall().now_millis()
    }

    /// A new batch id: a version-1 UUID from this node's clock, with the
    /// node id in place of the MAC address (unique without randomness, so
    /// simulations stay deterministic).
    fn next_id(&self) -> u128 {
        let wanted = self
            .now_ms()
            .saturating_mul(10_000)
            .saturating_add(UUID_EPOCH_OFFSET);
        let last = &self.inner.last_ticks;
        let mut prev = last.load(Ordering::SeqCst);
        let ticks = loop {
            let next = wanted.max(prev.saturating_add(1));
            match last.compare_exchange(prev, next, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => break next,
                Err(actual) => prev = actual,
            }
        };
        let node = self.inner.node.0;
        let time_low = ticks & 0xFFFF_FFFF;
        let time_mid = (ticks >> 32) & 0xFFFF;
        let time_hi = ((ticks >> 48) & 0x0FFF) | 0x1000;
        let hi = (time_low << 32) | (time_mid << 16) | time_hi;
        let clock_seq = (node >> 48) & 0x3FFF;
        let lo = ((0x8000 | clock_seq) << 48) | (node & 0xFFFF_FFFF_FFFF);
        (u128::from(hi) << 64) | u128::from(lo)
    }

    /// The replication factor and sloppy-quorum setting of a keyspace.
    fn keyspace_settings(&self, keyspace: &str) -> Result<(usize, bool), QueryError> {
        let schema = self.inner.schema.current();
        let ks = schema
            .keyspace(keyspace)
            .ok_or_else(|| QueryError::Invalid {
                message: format!("Keyspace {keyspace} does not exist"),
                rendered: format!("Keyspace {keyspace} does not exist"),
            })?;
        Ok((ks.replication.total_replicas() as usize, ks.sloppy_quorum))
    }

    /// Whether a write to this partition could be acknowledged at `cl`
    /// now (alive replicas plus sloppy-quorum fallbacks), as the write path
    /// checks it.
    fn check_writable(&self, p: &PartitionWrite, cl: Consistency) -> Result<(), QueryError> {
        let (rf, sloppy) = self.keyspace_settings(&p.table.keyspace)?;
        if cl == Consistency::Any {
            return Ok(());
        }
        let ring = self.inner.cluster.ring();
        let token = key::token_of(&p.partition_key);
        let replicas = ring.replicas(token, rf);
        if replicas.is_empty() {
            return Err(server("the ring has no nodes"));
        }
        let alive = replicas.iter().filter(|n| self.is_alive(**n)).count();
        let down = replicas.len() - alive;
        let fallbacks = if sloppy && down > 0 {
            ring.next_fallback_nodes(token, rf, &[])
                .into_iter()
                .filter(|n| self.is_alive(*n))
                .count()
                .min(down)
        } else {
            0
        };
        let required = cl.required(rf);
        if alive + fallbacks < required {
            return Err(QueryError::Unavailable {
                consistency: cl,
                required,
                alive: alive + fallbacks,
            });
        }
        Ok(())
    }

    /// The nodes to hold a batch's log entry (see the module
    /// documentation).
    fn choose_holders(&self, id: u128, cl: Consistency) -> Result<Vec<NodeId>, QueryError> {
        let ring = self.inner.cluster.ring();
        let me = self.inner.node;
        if ring.nodes().iter().all(|n| n.id == me) {
            return Ok(vec![me]);
        }
        let my_rack = ring.node(me).and_then(|n| n.rack.clone());
        let spread = |node: NodeId| {
            let mut h = siphasher::sip::SipHasher13::new_with_keys(0x6261_7463_686c_6f67, 0);
            h.write(&id.to_le_bytes());
            h.write(&node.0.to_le_bytes());
            h.finish()
        };
        let mut candidates: Vec<(NodeId, Option<String>)> = ring
            .nodes()
            .iter()
            .filter(|n| n.id != me && self.is_alive(n.id))
            .map(|n| (n.id, n.rack.clone()))
            .collect();
        if candidates.is_empty() {
            if cl == Consistency::Any {
                return Ok(vec![me]);
            }
            return Err(QueryError::BatchLog {
                required: 1,
                alive: 0,
                received: 0,
            });
        }
        // Other racks first; within a preference, a spread per batch.
        candidates.sort_by_key(|(n, rack)| (my_rack.is_some() && *rack == my_rack, spread(*n)));
        let (first, first_rack) = candidates.remove(0);
        let second = candidates
            .iter()
            .min_by_key(|(n, rack)| {
                (
                    first_rack.is_some() && *rack == first_rack,
                    my_rack.is_some() && *rack == my_rack,
                    spread(*n),
                )
            })
            .map(|(n, _)| *n);
        Ok(std::iter::once(first).chain(second).collect())
    }

    /// Sends a batch-log request; this node's own are served directly.
    fn send_log_request(
        &self,
        node: NodeId,
        req: PeerRequest,
    ) -> BoxFuture<'static, Result<PeerResponse, String>> {
        let this = self.clone();
        Box::pin(async move {
            if node == this.inner.node {
                return this.serve_locally(req);
            }
            let addr = this
                .inner
                .cluster
                .ring()
                .node(node)
                .map(|n| n.addr)
                .ok_or_else(|| format!("node {:016x} is not in the ring", node.0))?;
            match this
                .inner
                .transport
                .request(addr, req, this.inner.config.log_timeout)
                .await
            {
                Ok(PeerResponse::Error(e)) => Err(e.to_string()),
                Ok(r) => Ok(r),
                Err(e) => Err(e.to_string()),
            }
        })
    }

    fn serve_locally(&self, req: PeerRequest) -> Result<PeerResponse, String> {
        match req {
            PeerRequest::StoreBatch { id, payload } => {
                let entry = BatchEntry {
                    id,
                    written_ms: self.now_ms(),
                    payload,
                };
                self.inner
                    .log
                    .store(&entry)
                    .map(|()| PeerResponse::BatchStored)
                    .map_err(|e| e.to_string())
            }
            PeerRequest::RemoveBatch { id } => self
                .inner
                .log
                .remove(id)
                .map(|_| PeerResponse::BatchRemoved)
                .map_err(|e| e.to_string()),
            _ => Err(PeerError::Unsupported("not a batch-log request".into()).to_string()),
        }
    }

    /// Tells every holder to drop the entry; waits for the answers (each
    /// bounded by the log timeout) and returns how many confirmed.
    async fn remove_from(&self, id: u128, holders: &[NodeId]) -> usize {
        let mut set = JoinSet::new();
        for &h in holders {
            set.spawn(self.send_log_request(h, PeerRequest::RemoveBatch { id }));
        }
        let mut done = 0;
        while let Some(res) = set.join_next().await {
            match res {
                Ok(Ok(_)) => done += 1,
                Ok(Err(e)) => tracing::debug!(batch = id, error = %e, "batch-log removal failed"),
                Err(e) => tracing::debug!(batch = id, error = %e, "batch-log removal task failed"),
            }
        }
        done
    }

    /// Runs a logged batch across partitions (see the module
    /// documentation).
    pub async fn write_logged(
        &self,
        partitions: Vec<PartitionWrite>,
        cl: Consistency,
    ) -> Result<(), QueryError> {
        if partitions.len() < 2 {
            for p in partitions {
                self.inner
                    .cluster
                    .write(&p.table, &p.partition_key, p.mutations, cl)
                    .await?;
            }
            return Ok(());
        }
        for p in &partitions {
            self.check_writable(p, cl)?;
        }
        let id = self.next_id();
        let holders = match self.choose_holders(id, cl) {
            Ok(h) => h,
            Err(e) => {
                self.inner
                    .counters
                    .log_failures
                    .fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        let batch = LoggedBatch {
            id,
            created_ms: self.now_ms(),
            consistency: cl,
            holders: holders.clone(),
            partitions,
        };
        let payload = batch.encode().map_err(server)?;
        if payload.len() > MAX_LOGGED_BATCH_BYTES {
            let message = format!(
                "Batch too large: {} bytes encoded, the limit of a logged batch is {MAX_LOGGED_BATCH_BYTES}",
                payload.len()
            );
            return Err(QueryError::Invalid {
                rendered: message.clone(),
                message,
            });
        }

        // The batch log step: every chosen holder must acknowledge.
        let mut set = JoinSet::new();
        for &h in &holders {
            let fut = self.send_log_request(
                h,
                PeerRequest::StoreBatch {
                    id,
                    payload: payload.clone(),
                },
            );
            set.spawn(async move { (h, fut.await) });
        }
        let mut stored = Vec::new();
        while let Some(res) = set.join_next().await {
            match res {
                Ok((h, Ok(PeerResponse::BatchStored))) => stored.push(h),
                Ok((h, Ok(other))) => {
                    tracing::warn!(node = h.0, ?other, "unexpected answer to a batch-log write")
                }
                Ok((h, Err(e))) => {
                    tracing::debug!(node = h.0, error = %e, "batch-log write failed")
                }
                Err(e) => tracing::error!(error = %e, "batch-log write task failed"),
            }
        }
        if stored.len() < holders.len() {
            self.inner
                .counters
                .log_failures
                .fetch_add(1, Ordering::Relaxed);
            // Whoever stored it must not replay it.
            self.remove_from(id, &stored).await;
            return Err(QueryError::BatchLog {
                required: holders.len(),
                alive: holders.len(),
                received: stored.len(),
            });
        }
        self.inner.counters.logged.fetch_add(1, Ordering::Relaxed);

        let fault = self.inner.config.fault.clone();
        if let Some(hook) = fault.as_ref().and_then(|f| f.after_log.clone()) {
            hook();
        }
        let total = batch.partitions.len();
        let apply = fault
            .as_ref()
            .and_then(|f| f.apply_first)
            .unwrap_or(total)
            .min(total);
        let mut set = JoinSet::new();
        for (i, p) in batch.partitions.into_iter().take(apply).enumerate() {
            let cluster = self.inner.cluster.clone();
            set.spawn(async move {
                let r = cluster
                    .write(&p.table, &p.partition_key, p.mutations, cl)
                    .await;
                (i, r)
            });
        }
        let mut first_error: Option<(usize, QueryError)> = None;
        while let Some(res) = set.join_next().await {
            let (i, r) = match res {
                Ok(x) => x,
                Err(e) => (
                    usize::MAX,
                    Err(server(format!("batch write task failed: {e}"))),
                ),
            };
            if let Err(e) = r {
                if first_error.as_ref().is_none_or(|(j, _)| i < *j) {
                    first_error = Some((i, e));
                }
            }
        }
        if let Some(f) = fault.filter(|f| f.apply_first.is_some_and(|n| n < total)) {
            if f.stall {
                eprintln!(
                    "ringdb: test fault point: logged batch {id:032x} stalled after applying {apply} of {total} partitions"
                );
                std::future::pending::<()>().await;
            }
            return Err(server(format!(
                "test fault point: the coordinator stopped after applying {apply} of {total} partitions"
            )));
        }
        match first_error {
            None => {
                let this = self.clone();
                tokio::spawn(async move {
                    this.remove_from(id, &holders).await;
                });
                Ok(())
            }
            // The entry stays: replay applies the batch.
            Some((_, e)) => Err(e),
        }
    }

    /// Whether this node is the one to replay `batch`: the first of its
    /// holders that is alive (or any holder, if none of them seems alive).
    fn is_replayer(&self, batch: &LoggedBatch) -> bool {
        match batch.holders.iter().find(|h| self.is_alive(**h)) {
            Some(h) => *h == self.inner.node,
            None => true,
        }
    }

    /// Replays every entry of this node's batch log that is older than the
    /// replay delay and that this node is to replay (see the module
    /// documentation). One sweep at a time.
    pub async fn replay_due(&self) -> BatchReplayReport {
        if self.inner.sweeping.swap(true, Ordering::SeqCst) {
            return BatchReplayReport {
                busy: true,
                ..BatchReplayReport::default()
            };
        }
        struct Release(Arc<Inner>);
        impl Drop for Release {
            fn drop(&mut self) {
                self.0.sweeping.store(false, Ordering::SeqCst);
            }
        }
        let _release = Release(self.inner.clone());
        let mut report = BatchReplayReport::default();
        let delay_ms =
            u64::try_from(self.inner.config.replay_delay.as_millis()).unwrap_or(u64::MAX);
        let due = self.inner.log.due(self.now_ms(), delay_ms);
        report.due = due.len();
        {
            // Forget the progress of entries another holder finished.
            let held: BTreeSet<u128> = self.inner.log.ids().into_iter().collect();
            self.inner.progress.lock().retain(|id, _| held.contains(id));
        }
        for entry in due {
            let batch = match LoggedBatch::decode(&entry.payload) {
                Ok(b) if b.id == entry.id => b,
                Ok(_) | Err(_) => {
                    tracing::warn!(
                        batch = entry.id,
                        "undecodable batch-log entry dropped (it cannot be replayed)"
                    );
                    if let Err(e) = self.inner.log.remove(entry.id) {
                        tracing::warn!(error = %e, "cannot drop a batch-log entry");
                    }
                    report.undecodable += 1;
                    continue;
                }
            };
            if !self.is_replayer(&batch) {
                report.left_to_other_holder += 1;
                continue;
            }
            self.replay_entry(batch, &mut report).await;
        }
        report
    }

    async fn replay_entry(&self, batch: LoggedBatch, report: &mut BatchReplayReport) {
        let id = batch.id;
        let mut progress = self
            .inner
            .progress
            .lock()
            .get(&id)
            .cloned()
            .unwrap_or_default();
        let mut wrote_any = false;
        for (i, p) in batch.partitions.iter().enumerate() {
            if progress.finished.contains(&i) {
                continue;
            }
            if wrote_any && !self.inner.config.replay_pause.is_zero() {
                tokio::time::sleep(self.inner.config.replay_pause).await;
            }
            let written_before = progress.written_degraded.contains(&i);
            match self
                .replay_partition(id, p, batch.consistency, written_before)
                .await
            {
                PartitionReplay::Finished => {
                    wrote_any = true;
                    progress.finished.insert(i);
                    report.partitions_written += 1;
                    self.inner
                        .counters
                        .replayed_partitions
                        .fetch_add(1, Ordering::Relaxed);
                }
                PartitionReplay::WrittenWithReplicaDown => {
                    wrote_any = true;
                    progress.written_degraded.insert(i);
                    report.partitions_written += 1;
                    self.inner
                        .counters
                        .replayed_partitions
                        .fetch_add(1, Ordering::Relaxed);
                }
                PartitionReplay::Waiting => {}
                PartitionReplay::Discarded => {
                    progress.finished.insert(i);
                    report.partitions_discarded += 1;
                    self.inner
                        .counters
                        .discarded_partitions
                        .fetch_add(1, Ordering::Relaxed);
                }
                PartitionReplay::Failed(e) => {
                    tracing::debug!(batch = id, partition = i, error = %e, "batch replay of a partition failed; kept for the next sweep");
                    report.partitions_failed += 1;
                }
            }
        }
        if progress.finished.len() == batch.partitions.len() {
            if let Err(e) = self.inner.log.remove(id) {
                tracing::warn!(batch = id, error = %e, "cannot drop a replayed batch-log entry");
            }
            self.inner.progress.lock().remove(&id);
            let others: Vec<NodeId> = batch
                .holders
                .iter()
                .copied()
                .filter(|h| *h != self.inner.node)
                .collect();
            self.remove_from(id, &others).await;
            report.finished += 1;
            self.inner
                .counters
                .replayed_entries
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                batch = id,
                partitions = batch.partitions.len(),
                "logged batch replayed"
            );
        } else {
            self.inner.progress.lock().insert(id, progress);
            report.kept += 1;
        }
    }

    async fn replay_partition(
        &self,
        id: u128,
        p: &PartitionWrite,
        batch_cl: Consistency,
        written_before: bool,
    ) -> PartitionReplay {
        let schema = self.inner.schema.current();
        let known = schema
            .get_table(&p.table.keyspace, &p.table.table)
            .is_some_and(|t| t.id == p.table.id);
        if !known {
            tracing::warn!(
                batch = id,
                table = %table_name(&p.table),
                "replaying a logged batch: the table was dropped (or recreated); its mutations are discarded"
            );
            return PartitionReplay::Discarded;
        }
        let rf = match self.keyspace_settings(&p.table.keyspace) {
            Ok((rf, _)) => rf,
            Err(e) => return PartitionReplay::Failed(e),
        };
        let replicas = self
            .inner
            .cluster
            .ring()
            .replicas(key::token_of(&p.partition_key), rf);
        let alive = replicas.iter().filter(|n| self.is_alive(**n)).count();
        let every_replica = alive == replicas.len() && alive > 0;
        if !every_replica && written_before {
            return PartitionReplay::Waiting;
        }
        // Without a causal context of the client: the stamping replica
        // uses its own, which the read below makes cover every version the
        // first attempt left on any alive replica.
        let mutations: Vec<Mutation> = p
            .mutations
            .iter()
            .cloned()
            .map(|m| match m {
                Mutation::Row {
                    clustering, write, ..
                } => Mutation::Row {
                    clustering,
                    write,
                    context: None,
                },
                other => other,
            })
            .collect();
        if alive == 0 {
            if batch_cl != Consistency::Any {
                return PartitionReplay::Failed(QueryError::Unavailable {
                    consistency: batch_cl,
                    required: 1,
                    alive: 0,
                });
            }
            return match self
                .inner
                .cluster
                .write(&p.table, &p.partition_key, mutations, Consistency::Any)
                .await
            {
                Ok(()) => PartitionReplay::WrittenWithReplicaDown,
                Err(e) => PartitionReplay::Failed(e),
            };
        }
        let every_alive = Consistency::Count(u8::try_from(alive).unwrap_or(u8::MAX));
        let rows = p.mutations.iter().filter_map(|m| match m {
            Mutation::Row { clustering, .. } => Some(clustering),
            _ => None,
        });
        let lo = rows.clone().min();
        let hi = rows.max();
        if let (Some(lo), Some(hi)) = (lo, hi) {
            let slice = SliceRequest {
                lower: Bound::Included(lo.clone()),
                upper: Bound::Included(hi.clone()),
                reverse: false,
                limit: None,
            };
            if let Err(e) = self
                .inner
                .cluster
                .read(&p.table, &p.partition_key, slice, every_alive)
                .await
            {
                return PartitionReplay::Failed(e);
            }
        }
        match self
            .inner
            .cluster
            .write(&p.table, &p.partition_key, mutations, every_alive)
            .await
        {
            Ok(()) if every_replica => PartitionReplay::Finished,
            Ok(()) => PartitionReplay::WrittenWithReplicaDown,
            Err(e) => PartitionReplay::Failed(e),
        }
    }

    /// Sweeps the batch log every `replay_interval` (replaying what is
    /// due); stops when the coordinator is dropped.
    pub fn spawn_replayer(&self) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        let every = self.inner.config.replay_interval;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(inner) = weak.upgrade() else { return };
                let this = BatchCoordinator { inner };
                let report = this.replay_due().await;
                if report.due > 0 {
                    tracing::debug!(?report, "batch log sweep");
                }
            }
        })
    }
}

impl DataStore for BatchCoordinator {
    fn write<'a>(
        &'a self,
        table: &'a TableRef,
        partition_key: &'a [u8],
        mutations: Vec<Mutation>,
        consistency: Consistency,
    ) -> BoxFuture<'a, Result<(), QueryError>> {
        self.inner
            .cluster
            .write(table, partition_key, mutations, consistency)
    }

    fn read<'a>(
        &'a self,
        table: &'a TableRef,
        partition_key: &'a [u8],
        slice: SliceRequest,
        consistency: Consistency,
    ) -> BoxFuture<'a, Result<StoredPartition, QueryError>> {
        self.inner
            .cluster
            .read(table, partition_key, slice, consistency)
    }

    fn scan<'a>(
        &'a self,
        table: &'a TableRef,
        after: Option<Vec<u8>>,
        max_partitions: usize,
        rows_per_partition: Option<usize>,
        consistency: Consistency,
    ) -> BoxFuture<'a, Result<Vec<ScannedPartition>, QueryError>> {
        self.inner.cluster.scan(
            table,
            after,
            max_partitions,
            rows_per_partition,
            consistency,
        )
    }

    fn truncate<'a>(&'a self, table: &'a TableRef) -> BoxFuture<'a, Result<(), QueryError>> {
        self.inner.cluster.truncate(table)
    }

    fn write_logged_batch<'a>(
        &'a self,
        partitions: Vec<PartitionWrite>,
        consistency: Consistency,
    ) -> BoxFuture<'a, Result<(), QueryError>> {
        Box::pin(self.write_logged(partitions, consistency))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_replay_delay_is_two_write_timeouts() {
        let c = BatchConfig::for_write_timeout(Duration::from_millis(1500));
        assert_eq!(c.replay_delay, Duration::from_millis(3000));
        assert_eq!(c.replay_interval, Duration::from_millis(1500));
        assert_eq!(c.log_timeout, Duration::from_millis(1500));
        assert!(c.fault.is_none());
        let long = BatchConfig::for_write_timeout(Duration::from_secs(60));
        assert_eq!(long.replay_interval, Duration::from_secs(10));
    }
}
