//! Anti-entropy repair (`ringdb admin repair`, like `nodetool repair`):
//! the replicas of every range this node replicates are compared by
//! hashes of slices of the range (`cluster::anti_entropy`), and the slices
//! that differ are streamed from every alive replica, merged as a read
//! merges, and each replica is sent what it lacks.
//!
//! A slice that differs and holds more than
//! [`RepairTuning::leaf_partitions`] partitions on some replica is cut into
//! finer slices and compared again, up to [`RepairTuning::max_levels`]
//! rounds, so a few stale rows in a large range cost
//! streaming a few small slices, not the range. Merging is idempotent and
//! never drops a version, so repair can run beside writes, twice, or from
//! several nodes at once: at worst it streams more than it needs.
//!
//! Repair covers only the alive replicas of a range. A range with a
//! replica down is repaired among the others and reported incomplete: the
//! grace-period contract (repair every replica within `gc_grace_seconds`)
//! is kept only by a repair that covered every replica.

use super::super::replica::HashPacing;
use super::stream::{Sink, SpanRepair};
use super::*;
use crate::cluster::anti_entropy::{differing_slices, SlicedSpan, SpanHashes};

/// How finely repair compares (part of
/// [`CoordinatorConfig`](super::CoordinatorConfig)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairTuning {
    /// Slices per comparison: `2^slice_depth` (at most
    /// [`crate::cluster::anti_entropy::MAX_DEPTH`]).
    pub slice_depth: u8,
    /// A differing slice with at most this many partitions (on the replica
    /// holding most) is streamed rather than cut finer.
    pub leaf_partitions: u64,
    /// Most comparison rounds for one range.
    pub max_levels: u8,
}

impl Default for RepairTuning {
    /// 256 slices per round, up to three rounds (`2^24` slices of a range
    /// at the finest), slices of up to 64 partitions streamed.
    fn default() -> Self {
        RepairTuning {
            slice_depth: 8,
            leaf_partitions: 64,
            max_levels: 3,
        }
    }
}

/// How long a replica may take to hash a span: it reads all its data in
/// the span, so this is many times a range step's timeout.
const HASH_TIMEOUT_FACTOR: u32 = 10;

impl Inner {
    /// Hashes `span` of `table` for a repair's comparison, this node's
    /// reads kept to its stream limit for at most half of the time the
    /// coordinator waits for the answer (after that, at full speed), and
    /// counted.
    pub(super) async fn serve_hash_span(&self, table: &TableRef, span: SlicedSpan) -> PeerResponse {
        let budget = self.config.range_timeout * HASH_TIMEOUT_FACTOR / 2;
        let pacing = HashPacing {
            throttle: &self.stream_throttle,
            until: Instant::now() + budget,
        };
        match self.replica.hash_span(table, span, Some(pacing)).await {
            Ok((hashes, cost)) => {
                self.counters
                    .repair_hash_bytes
                    .fetch_add(cost.bytes, Ordering::Relaxed);
                self.counters
                    .repair_hash_throttled_us
                    .fetch_add(cost.waited.as_micros() as u64, Ordering::Relaxed);
                PeerResponse::SpanHashes(hashes)
            }
            Err(e) => PeerResponse::Error(e),
        }
    }
}

impl ClusterStore {
    /// Serves another node's [`PeerRequest::HashSpan`] as this node's own
    /// are served: under the stream limit, and counted in
    /// [`CoordinatorStats::repair_hash_bytes`].
    pub async fn serve_hash_span(&self, table: TableRef, span: SlicedSpan) -> PeerResponse {
        self.inner.serve_hash_span(&table, span).await
    }
}

/// How far a running [`ClusterStore::repair`] is
/// ([`ClusterStore::repair_progress`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepairProgress {
    /// Spans compared and repaired so far (failed ones included).
    pub spans_done: usize,
    /// Spans the repair covers.
    pub spans_total: usize,
}

/// Clears the progress of a repair when it ends, however it ends.
struct ProgressGuard<'a>(&'a Mutex<Option<RepairProgress>>);

impl Drop for ProgressGuard<'_> {
    fn drop(&mut self) {
        *self.0.lock() = None;
    }
}

/// What [`ClusterStore::repair`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Tables repaired.
    pub tables: usize,
    /// Token spans (pieces of ranges) compared, over all tables.
    pub spans: usize,
    /// Spans with a replica down: repaired among the alive ones only.
    pub spans_incomplete: usize,
    /// Spans that failed (a replica did not answer in time, or answered
    /// nonsense), with why; the others were still repaired.
    pub failures: Vec<String>,
    /// Slices whose hashes were compared, over all rounds.
    pub slices_compared: usize,
    /// Slices that differed and were streamed.
    pub slices_streamed: usize,
    /// Partitions streamed and merged.
    pub partitions_streamed: usize,
    /// Partitions some replica lacked something of.
    pub partitions_repaired: usize,
    /// Entries (rows and partition deletions) sent to replicas.
    pub entries_sent: usize,
}

impl RepairReport {
    /// Whether every replica of every span took part and nothing failed:
    /// only then does the repair count for the grace period.
    pub fn is_complete(&self) -> bool {
        self.spans_incomplete == 0 && self.failures.is_empty()
    }
}

impl std::fmt::Display for RepairReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "repaired {} table(s) over {} span(s): compared {} slice(s), streamed {} \
             ({} partition(s)), {} partition(s) repaired with {} entries sent",
            self.tables,
            self.spans,
            self.slices_compared,
            self.slices_streamed,
            self.partitions_streamed,
            self.partitions_repaired,
            self.entries_sent
        )?;
        if self.spans_incomplete > 0 {
            write!(
                f,
                "; {} span(s) had a replica down and were repaired among the others only",
                self.spans_incomplete
            )?;
        }
        for failure in &self.failures {
            write!(f, "\n  failed: {failure}")?;
        }
        Ok(())
    }
}

impl ClusterStore {
    /// Repairs `tables` over every range this node replicates (only those
    /// it is the primary replica of when `primary_only`, so that running it
    /// on every node repairs each range once). A span that fails is
    /// reported in [`RepairReport::failures`] and the others are still
    /// repaired; an unknown keyspace fails the whole call, and so does a
    /// repair started while another runs on this node (one at a time).
    pub async fn repair(
        &self,
        tables: &[TableRef],
        primary_only: bool,
    ) -> Result<RepairReport, QueryError> {
        let me = self.inner.node;
        let ring = self.ring();
        let mut report = RepairReport::default();
        // Every (table, span, replicas) first, so progress has a total.
        let mut work = Vec::new();
        for table in tables {
            let rf = self.rf(&table.keyspace)?;
            report.tables += 1;
            for (range, replicas) in ring.range_replicas(rf) {
                let mine = if primary_only {
                    replicas.first() == Some(&me)
                } else {
                    replicas.contains(&me)
                };
                if mine {
                    for span in range.spans() {
                        work.push((table, *span.start(), *span.end(), replicas.clone()));
                    }
                }
            }
        }
        let progress = &self.inner.repair_progress;
        {
            // One repair at a time per node: a second would read the same
            // data again, and `admin status` shows one progress line.
            let mut running = progress.lock();
            if let Some(p) = *running {
                return Err(server(format!(
                    "a repair already runs on this node ({} of {} spans done): wait until \
                     `ringdb admin status` shows `Repair: idle`, then run it again",
                    p.spans_done, p.spans_total
                )));
            }
            *running = Some(RepairProgress {
                spans_done: 0,
                spans_total: work.len(),
            });
        }
        let _clear = ProgressGuard(progress);
        for (table, lo, hi, replicas) in work {
            report.spans += 1;
            let alive = self.ordered_alive(&replicas);
            if alive.len() < replicas.len() {
                report.spans_incomplete += 1;
            }
            if alive.len() >= 2 {
                if let Err(e) = self.repair_span(table, lo, hi, &alive, &mut report).await {
                    report.failures.push(format!(
                        "{}.{} tokens {lo:#018x}..={hi:#018x}: {e}",
                        table.keyspace, table.table
                    ));
                }
            }
            if let Some(p) = progress.lock().as_mut() {
                p.spans_done += 1;
            }
        }
        self.inner.counters.repairs.fetch_add(1, Ordering::Relaxed);
        self.inner
            .counters
            .repair_entries_sent
            .fetch_add(report.entries_sent as u64, Ordering::Relaxed);
        Ok(report)
    }

    /// How far the repair running on this node is; `None` when none runs.
    pub fn repair_progress(&self) -> Option<RepairProgress> {
        *self.inner.repair_progress.lock()
    }

    /// Compares and repairs the tokens `[lo, hi]` of `table` among
    /// `alive` (its alive replicas, at least two).
    async fn repair_span(
        &self,
        table: &TableRef,
        lo: Token,
        hi: Token,
        alive: &[NodeId],
        report: &mut RepairReport,
    ) -> Result<(), QueryError> {
        let tuning = self.inner.config.repair;
        let mut pending = vec![(lo, hi, 0u8)];
        while let Some((lo, hi, level)) = pending.pop() {
            let span =
                SlicedSpan::new(lo, hi, tuning.slice_depth).map_err(|e| server(e.to_string()))?;
            let answers = self.span_hashes(table, span, alive).await?;
            let views: Vec<&SpanHashes> = answers.iter().collect();
            report.slices_compared += span.slices();
            let differing = differing_slices(&span, &views)
                .map_err(|e| server(format!("a replica's slice hashes: {e}")))?;
            for i in differing {
                let Some((first, last)) = span.slice_bounds(i) else {
                    continue;
                };
                let most = views
                    .iter()
                    .filter_map(|a| a.partitions.get(i))
                    .max()
                    .copied()
                    .unwrap_or(0);
                if most > tuning.leaf_partitions && level + 1 < tuning.max_levels && first < last {
                    pending.push((first, last, level + 1));
                    continue;
                }
                let mut sent = SpanRepair::default();
                report.partitions_streamed += self
                    .stream_span(table, first, last, alive, Sink::Sources(&mut sent))
                    .await?;
                report.slices_streamed += 1;
                report.partitions_repaired += sent.partitions_repaired;
                report.entries_sent += sent.entries_sent;
            }
        }
        Ok(())
    }

    /// The hashes of `span` from every node of `alive`.
    async fn span_hashes(
        &self,
        table: &TableRef,
        span: SlicedSpan,
        alive: &[NodeId],
    ) -> Result<Vec<SpanHashes>, QueryError> {
        let req = PeerRequest::HashSpan {
            table: table.clone(),
            span,
        };
        let timeout = self.inner.config.range_timeout * HASH_TIMEOUT_FACTOR;
        self.ask_all(alive, req, timeout)
            .await?
            .into_iter()
            .map(|(node, resp)| match resp {
                PeerResponse::SpanHashes(h) => Ok(h),
                PeerResponse::Error(e) => Err(server(format!(
                    "replica {:016x} could not hash the span: {e}",
                    node.0
                ))),
                _ => Err(server(format!(
                    "replica {:016x} answered a span hash request with something else",
                    node.0
                ))),
            })
            .collect()
    }
}
