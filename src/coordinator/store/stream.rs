//! Range streaming: a node joining a cluster that already holds data
//! copies, before it owns any token, every partition of the ranges it is
//! about to replicate; a node leaving the ring hands every partition of its
//! ranges to the nodes that take them over.
//!
//! The node computes the ring it will make (the current ring plus itself,
//! with the tokens it gossips as `joining`); for every range where it is
//! among the future replicas, it pages through the range on every alive
//! current replica (`PeerRequest::Scan` with all rows, dead ones included),
//! merges the answers partition by partition as a read would, and applies
//! the merged states to its own store. Merging is idempotent, so a page
//! fetched twice (a retry, a write that also arrived as a pending copy)
//! changes nothing.
//!
//! Writes made while the stream runs reach the joining node as pending
//! copies (`ClusterStore::set_pending_ring`), so once the stream is done
//! the node holds every write acknowledged before it started (each is on
//! W current replicas, and all alive ones are read) and every write made
//! since the coordinators learned it was joining.
//!
//! Decommission is the mirror image: while the node gossips `leaving` it
//! still owns its ranges, coordinators copy writes to the nodes that will
//! replace it, and it streams each of its ranges (merged from every alive
//! current replica, itself included) to the nodes that gain it.
//!
//! Removing a down node (`ringdb admin removenode`) is the same hand-over,
//! run by another node on the down node's behalf: the ranges come from the
//! other replicas, merged. A range whose only replica was the removed node
//! (RF=1) has no source left; its data is lost, and the report counts it.

use super::*;

/// Partitions asked for per scan page.
const STREAM_PAGE: u32 = 256;

/// Host ids as `admin status` shows them, comma-separated.
fn hex_ids(nodes: &[NodeId]) -> String {
    nodes
        .iter()
        .map(|n| format!("{:016x}", n.0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How many bytes `value` takes encoded as peer messages encode it (what
/// a streamed page weighs on the wire, for the stream throttle).
fn wire_bytes<T: serde::Serialize>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Encoding an in-memory value into a counter cannot fail; were it to,
    // the page would pass unthrottled.
    let _ = bincode::serde::encode_into_std_write(value, &mut count, bincode::config::standard());
    count.0
}

/// Where streamed partitions go.
pub(super) enum Sink<'a> {
    /// This node's store (bootstrap).
    Local,
    /// These nodes (decommission), each getting every partition.
    Nodes(&'a [NodeId]),
    /// The sources themselves (anti-entropy repair), each getting what it
    /// lacks of the merged state; counted in the report.
    Sources(&'a mut SpanRepair),
}

/// What streaming a span back to its own replicas sent
/// ([`ClusterStore::repair`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct SpanRepair {
    /// Entries (rows and partition headers) sent, over all replicas.
    pub entries_sent: usize,
    /// Partitions where at least one replica lacked something.
    pub partitions_repaired: usize,
}

/// The token spans `[lo, hi]` of `ring`'s ranges that `node` replicates
/// at `rf`, with the range's replicas (a range crossing the top of the
/// ring gives two spans).
fn spans_replicated_by(ring: &Ring, rf: usize, node: NodeId) -> Vec<(Token, Token, Vec<NodeId>)> {
    ring.range_replicas(rf)
        .into_iter()
        .filter(|(_, replicas)| replicas.contains(&node))
        .flat_map(|(range, replicas)| {
            range
                .spans()
                .into_iter()
                .map(move |span| (*span.start(), *span.end(), replicas.clone()))
        })
        .collect()
}

/// What [`ClusterStore::bootstrap_stream`] or
/// [`ClusterStore::decommission_stream`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamReport {
    /// Tables streamed.
    pub tables: usize,
    /// Token spans (pieces of ranges, split at the top of the ring)
    /// streamed, over all tables.
    pub spans: usize,
    /// Partitions received and applied, over all tables.
    pub partitions: usize,
    /// Spans skipped because no replica but the (down) node leaving held
    /// them: what they held is lost (removing a node of an RF=1 keyspace).
    pub spans_lost: usize,
}

impl ClusterStore {
    /// Copies to this node every partition of `tables` in the ranges it
    /// replicates in `future` (the ring once it owns its tokens) and not in
    /// the current ring, from every alive current replica of each range,
    /// merged. Fails when a range has no alive replica or a replica does
    /// not answer a page in time (`range_timeout`); running it again is
    /// safe.
    pub async fn bootstrap_stream(
        &self,
        future: &Ring,
        tables: &[TableRef],
    ) -> Result<StreamReport, QueryError> {
        let me = self.inner.node;
        let current = self.ring();
        let mut report = StreamReport::default();
        for table in tables {
            let rf = self.rf(&table.keyspace)?;
            report.tables += 1;
            // `future` has every boundary of `current` and more, so a span
            // of `future` has the current replicas of its last token.
            for (lo, hi, _) in spans_replicated_by(future, rf, me) {
                let sources: Vec<NodeId> = current
                    .replicas(hi, rf)
                    .into_iter()
                    .filter(|n| *n != me)
                    .collect();
                if sources.is_empty() {
                    continue;
                }
                report.partitions += self
                    .stream_span(table, lo, hi, &sources, Sink::Local)
                    .await?;
                report.spans += 1;
            }
        }
        Ok(report)
    }

    /// Hands every partition of `tables` in the ranges this node replicates
    /// now to the nodes that replicate them in `future` (the ring without
    /// this node) and do not now, merged from every alive current replica
    /// (this node included). Fails when a gaining node does not take a
    /// page in time (`write_timeout`); running it again is safe.
    pub async fn decommission_stream(
        &self,
        future: &Ring,
        tables: &[TableRef],
    ) -> Result<StreamReport, QueryError> {
        self.handover_stream(self.inner.node, future, tables).await
    }

    /// Hands every partition of `tables` in the ranges `leaving` replicates
    /// now to the nodes that replicate them in `future` (the ring without
    /// `leaving`) and do not now, merged from every alive current replica:
    /// [`ClusterStore::decommission_stream`] for this node, `ringdb admin
    /// removenode` for a down one. A range with no alive replica is
    /// skipped and counted in [`StreamReport::spans_lost`] only when
    /// `leaving` was its sole replica; otherwise it fails, as does a
    /// gaining node that does not take a page in time. Running it again is
    /// safe.
    pub async fn handover_stream(
        &self,
        leaving: NodeId,
        future: &Ring,
        tables: &[TableRef],
    ) -> Result<StreamReport, QueryError> {
        let down = self.down_gainers(leaving, future, tables)?;
        if !down.is_empty() {
            return Err(server(format!(
                "node(s) {} take over ranges of node {:016x} but are down: bring them back up, \
                 or remove them first (`ringdb admin removenode`)",
                hex_ids(&down),
                leaving.0
            )));
        }
        let current = self.ring();
        let mut report = StreamReport::default();
        for table in tables {
            let rf = self.rf(&table.keyspace)?;
            report.tables += 1;
            // `current` has every boundary of `future` and more.
            for (lo, hi, replicas) in spans_replicated_by(&current, rf, leaving) {
                let gainers: Vec<NodeId> = future
                    .replicas(hi, rf)
                    .into_iter()
                    .filter(|n| !replicas.contains(n))
                    .collect();
                if gainers.is_empty() {
                    continue;
                }
                if replicas.iter().all(|n| *n == leaving) && !self.is_alive(leaving) {
                    report.spans_lost += 1;
                    continue;
                }
                report.partitions += self
                    .stream_span(table, lo, hi, &replicas, Sink::Nodes(&gainers))
                    .await?;
                report.spans += 1;
            }
        }
        Ok(report)
    }

    /// The nodes that would gain a range of `tables` when `leaving` hands
    /// its ranges over to make `future` ([`ClusterStore::handover_stream`])
    /// and that this node sees down, sorted: a hand-over needs every one
    /// of them up, so a decommission checks before it starts.
    pub fn down_gainers(
        &self,
        leaving: NodeId,
        future: &Ring,
        tables: &[TableRef],
    ) -> Result<Vec<NodeId>, QueryError> {
        let current = self.ring();
        let mut down = BTreeSet::new();
        for table in tables {
            let rf = self.rf(&table.keyspace)?;
            for (_, hi, replicas) in spans_replicated_by(&current, rf, leaving) {
                down.extend(
                    future
                        .replicas(hi, rf)
                        .into_iter()
                        .filter(|n| !replicas.contains(n) && !self.is_alive(*n)),
                );
            }
        }
        Ok(down.into_iter().collect())
    }

    /// Streams the partitions with tokens in `[lo, hi]` of `table` from the
    /// alive nodes of `sources` to `sink`; returns how many were streamed.
    pub(super) async fn stream_span(
        &self,
        table: &TableRef,
        lo: Token,
        hi: Token,
        sources: &[NodeId],
        mut sink: Sink<'_>,
    ) -> Result<usize, QueryError> {
        let alive = self.ordered_alive(sources);
        if alive.is_empty() {
            return Err(QueryError::Unavailable {
                consistency: Consistency::One,
                required: 1,
                alive: 0,
            });
        }
        let mut applied = 0usize;
        let mut pos: Option<Vec<u8>> = None;
        loop {
            let lower = match &pos {
                Some(p) => Bound::Included(key::partition_end(p)),
                None => Bound::Included(lo.to_be_bytes().to_vec()),
            };
            let upper = match hi.checked_add(1) {
                Some(n) => Bound::Excluded(n.to_be_bytes().to_vec()),
                None => Bound::Unbounded,
            };
            let req = PeerRequest::Scan {
                table: table.clone(),
                lower: to_key_bound(&lower),
                upper: to_key_bound(&upper),
                max_partitions: STREAM_PAGE,
                rows_per_partition: None,
            };
            let got = self
                .ask_all(&alive, req, self.inner.config.range_timeout)
                .await?;
            let mut answers: Vec<(BTreeMap<Vec<u8>, ReplicaPartition>, bool)> = Vec::new();
            let mut answered: Vec<NodeId> = Vec::new();
            let mut page_bytes = 0usize;
            for (node, resp) in got {
                match resp {
                    PeerResponse::Partitions { partitions, cut } => {
                        page_bytes += wire_bytes(&partitions);
                        answers.push((partitions.into_iter().collect(), cut));
                        answered.push(node);
                    }
                    _ => {
                        return Err(server(
                            "a replica answered a stream page with something else",
                        ))
                    }
                }
            }
            // A cut answer covers the span up to its last partition only:
            // this page ends at the earliest such partition.
            let cutoff: Option<Vec<u8>> = answers
                .iter()
                .filter(|(_, cut)| *cut)
                .filter_map(|(parts, _)| parts.keys().next_back().cloned())
                .min();
            let prefixes: BTreeSet<Vec<u8>> = answers
                .iter()
                .flat_map(|(parts, _)| parts.keys())
                .filter(|p| cutoff.as_ref().is_none_or(|c| *p <= c))
                .cloned()
                .collect();
            let empty = ReplicaPartition::default();
            let mut deltas: Deltas = Vec::new();
            // Per answering source, what it lacks (repair only).
            let mut lacking: Vec<Deltas> = vec![Vec::new(); answers.len()];
            for p in &prefixes {
                let views: Vec<&ReplicaPartition> = answers
                    .iter()
                    .map(|(parts, _)| parts.get(p).unwrap_or(&empty))
                    .collect();
                let merged = merge_partition(&views, false);
                if let Sink::Sources(report) = &mut sink {
                    let mut stale = false;
                    for (view, out) in views.iter().zip(lacking.iter_mut()) {
                        let missing = merged.repair_for(p, view);
                        stale |= !missing.is_empty();
                        out.extend(missing);
                    }
                    report.partitions_repaired += usize::from(stale);
                } else {
                    deltas.extend(merged.repair_for(p, &empty));
                }
            }
            match &mut sink {
                Sink::Local => self.inner.local.apply(table, deltas).await?,
                Sink::Nodes(targets) if !deltas.is_empty() => {
                    for &target in targets.iter() {
                        let req = PeerRequest::Apply {
                            table: table.clone(),
                            entries: deltas.clone(),
                        };
                        self.send(target, req, self.inner.config.write_timeout)
                            .await
                            .map_err(|e| {
                                server(format!(
                                    "node {:016x} did not take streamed data: {e}",
                                    target.0
                                ))
                            })?;
                    }
                }
                Sink::Nodes(_) => {}
                Sink::Sources(report) => {
                    for (&node, missing) in answered.iter().zip(lacking) {
                        if missing.is_empty() {
                            continue;
                        }
                        let count = missing.len();
                        let req = PeerRequest::Apply {
                            table: table.clone(),
                            entries: missing,
                        };
                        self.send(node, req, self.inner.config.write_timeout)
                            .await
                            .map_err(|e| {
                                server(format!(
                                    "replica {:016x} did not take its repair: {e}",
                                    node.0
                                ))
                            })?;
                        report.entries_sent += count;
                    }
                }
            }
            applied += prefixes.len();
            self.inner
                .counters
                .partitions_streamed
                .fetch_add(prefixes.len() as u64, Ordering::Relaxed);
            self.inner
                .counters
                .stream_bytes
                .fetch_add(page_bytes as u64, Ordering::Relaxed);
            // The next page waits its turn under the node's stream limit.
            let waited = self.inner.stream_throttle.pass(page_bytes).await;
            self.inner
                .counters
                .stream_throttled_us
                .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
            match cutoff {
                Some(c) => pos = Some(c),
                None => return Ok(applied),
            }
        }
    }
}
