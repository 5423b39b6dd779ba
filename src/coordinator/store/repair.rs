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
    /// Most comparison rounds for one span.
    pub max_levels: u8,
    /// About how many bytes of a table one span should hold at most: a
    /// range holding more of this node's data is cut into spans of equal
    /// token width, so that a replica hashes each one well within the
    /// coordinator's timeout for it. 0 never cuts a range.
    pub span_bytes: u64,
}

impl Default for RepairTuning {
    /// 256 slices per round, up to three rounds (`2^24` slices of a span
    /// at the finest), slices of up to 64 partitions streamed, spans of
    /// about 256 MiB (a few seconds to hash at full speed, four at the
    /// default stream limit).
    fn default() -> Self {
        RepairTuning {
            slice_depth: 8,
            leaf_partitions: 64,
            max_levels: 3,
            span_bytes: 256 << 20,
        }
    }
}

/// Most spans one range is cut into.
const MAX_PIECES: u128 = 1 << 16;

/// How many spans of equal width `[lo, hi]` is cut into so that each
/// holds about `span_bytes` at most, when this node holds `table_bytes`
/// of the table over token ranges `held_width` wide (data is spread
/// evenly over tokens by the partitioner).
fn pieces_for(lo: Token, hi: Token, table_bytes: u64, held_width: u128, span_bytes: u64) -> u64 {
    let width = u128::from(hi - lo) + 1;
    if held_width == 0 || span_bytes == 0 {
        return 1;
    }
    let estimate = u128::from(table_bytes) * width / held_width;
    let pieces = estimate.div_ceil(u128::from(span_bytes));
    pieces.clamp(1, MAX_PIECES.min(width)) as u64
}

/// `[lo, hi]` cut into `pieces` contiguous spans of equal width (within
/// one token), in order.
fn split_span(lo: Token, hi: Token, pieces: u64) -> Vec<(Token, Token)> {
    let width = u128::from(hi - lo) + 1;
    let pieces = u128::from(pieces).clamp(1, width);
    (0..pieces)
        .map(|i| {
            let start = u128::from(lo) + width * i / pieces;
            let end = u128::from(lo) + width * (i + 1) / pieces - 1;
            (start as Token, end as Token)
        })
        .collect()
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
        let span_bytes = self.inner.config.repair.span_bytes;
        for table in tables {
            let rf = self.rf(&table.keyspace)?;
            report.tables += 1;
            let ranges = ring.range_replicas(rf);
            // This node's data of the table sizes the spans (replicas of a
            // range hold about the same).
            let held_width: u128 = ranges
                .iter()
                .filter(|(_, replicas)| replicas.contains(&me))
                .map(|(range, _)| range.width())
                .sum();
            // A table this node cannot open is compared in whole ranges,
            // and each span then reports why it failed.
            let table_bytes = self.inner.local.table_data_bytes(table).unwrap_or(0);
            for (range, replicas) in ranges {
                let mine = if primary_only {
                    replicas.first() == Some(&me)
                } else {
                    replicas.contains(&me)
                };
                if mine {
                    for span in range.spans() {
                        let (lo, hi) = (*span.start(), *span.end());
                        let pieces = pieces_for(lo, hi, table_bytes, held_width, span_bytes);
                        for (lo, hi) in split_span(lo, hi, pieces) {
                            work.push((table, lo, hi, replicas.clone()));
                        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_range_is_cut_by_the_share_of_the_node_s_data_it_holds() {
        let mib = 1u64 << 20;
        // A quarter of what the node holds, 1 GiB of 4: four spans of
        // 256 MiB.
        let held = 1u128 << 64;
        let quarter = (u64::MAX / 4) - 1;
        assert_eq!(pieces_for(0, quarter, 4096 * mib, held, 256 * mib), 4);
        // Little data, no limit, nothing held: one span.
        assert_eq!(pieces_for(0, quarter, 10 * mib, held, 256 * mib), 1);
        assert_eq!(pieces_for(0, quarter, 4096 * mib, held, 0), 1);
        assert_eq!(pieces_for(0, quarter, 4096 * mib, 0, 256 * mib), 1);
        // Never more pieces than tokens, nor than MAX_PIECES.
        assert_eq!(pieces_for(7, 9, u64::MAX, 3, 1), 3);
        assert_eq!(
            pieces_for(0, u64::MAX, u64::MAX, held, 1) as u128,
            MAX_PIECES
        );
    }

    proptest! {
        #[test]
        fn split_spans_cover_the_span_in_order_with_equal_widths(
            lo in any::<u64>(),
            len in prop_oneof![0u64..10, any::<u64>()],
            pieces in 1u64..300,
        ) {
            let hi = lo.saturating_add(len);
            let spans = split_span(lo, hi, pieces);
            let width = u128::from(hi - lo) + 1;
            prop_assert_eq!(spans.len() as u128, u128::from(pieces).min(width));
            prop_assert_eq!(spans[0].0, lo);
            prop_assert_eq!(spans[spans.len() - 1].1, hi);
            for pair in spans.windows(2) {
                prop_assert_eq!(pair[0].1.checked_add(1), Some(pair[1].0));
            }
            let widths: Vec<u128> = spans.iter().map(|(a, b)| u128::from(b - a) + 1).collect();
            let (min, max) = (widths.iter().min(), widths.iter().max());
            prop_assert!(max.zip(min).is_some_and(|(max, min)| max - min <= 1), "{:?}", widths);
        }
    }
}
