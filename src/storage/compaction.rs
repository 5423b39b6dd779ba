//! Compaction strategies: which SSTables to merge next.
//!
//! The choice is a pure function of the live tables' sizes and timestamps,
//! so it is tested without files. The engine runs the merge itself.

use std::time::Duration;

/// How the engine picks SSTables to compact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompactionStrategy {
    /// Size-tiered (the default): merge `min_threshold` or more tables of
    /// similar size (within half to one and a half times their average).
    SizeTiered {
        /// Fewest tables in a bucket before it is compacted.
        min_threshold: usize,
        /// Most tables merged at once.
        max_threshold: usize,
    },
    /// Time-window, for time series: tables are grouped by the window of
    /// their newest write; a closed window is compacted into one table, the
    /// current window is compacted size-tiered.
    TimeWindow {
        /// Width of a window.
        window: Duration,
        /// Fewest tables in the current window before it is compacted.
        min_threshold: usize,
    },
}

impl Default for CompactionStrategy {
    fn default() -> Self {
        CompactionStrategy::SizeTiered {
            min_threshold: 4,
            max_threshold: 32,
        }
    }
}

/// What the strategy needs to know of a live table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableStats {
    /// The table's file id.
    pub id: u64,
    /// Size on disk.
    pub size: u64,
    /// Newest write timestamp, in wall-clock milliseconds.
    pub max_ts_millis: u64,
}

/// Tables smaller than this are all one size class (as in Cassandra's
/// `min_sstable_size`), so many tiny flushes get merged together.
const SMALL_TABLE_BYTES: u64 = 8 << 20;

impl CompactionStrategy {
    /// The ids of the tables to merge next, or an empty list.
    pub fn pick(&self, tables: &[TableStats], now_millis: u64) -> Vec<u64> {
        match *self {
            CompactionStrategy::SizeTiered {
                min_threshold,
                max_threshold,
            } => size_tiered(tables, min_threshold.max(2), max_threshold.max(2)),
            CompactionStrategy::TimeWindow {
                window,
                min_threshold,
            } => {
                let width = (window.as_millis() as u64).max(1);
                let current = now_millis / width;
                let mut windows: std::collections::BTreeMap<u64, Vec<TableStats>> =
                    Default::default();
                for t in tables {
                    windows.entry(t.max_ts_millis / width).or_default().push(*t);
                }
                // Closed windows first, oldest first: one table per window.
                for (w, group) in &windows {
                    if *w < current && group.len() >= 2 {
                        return group.iter().map(|t| t.id).collect();
                    }
                }
                match windows
                    .get(&current)
                    .or_else(|| windows.values().next_back())
                {
                    Some(group) => size_tiered(group, min_threshold.max(2), 32),
                    None => Vec::new(),
                }
            }
        }
    }
}

fn size_tiered(tables: &[TableStats], min_threshold: usize, max_threshold: usize) -> Vec<u64> {
    let mut sorted: Vec<TableStats> = tables.to_vec();
    sorted.sort_by_key(|t| (t.size, t.id));
    let mut buckets: Vec<Vec<TableStats>> = Vec::new();
    for t in sorted {
        let fits = buckets.last().is_some_and(|b| {
            let avg = b.iter().map(|x| x.size).sum::<u64>() / b.len() as u64;
            (t.size <= SMALL_TABLE_BYTES && avg <= SMALL_TABLE_BYTES)
                || (t.size as f64 >= avg as f64 * 0.5 && t.size as f64 <= avg as f64 * 1.5)
        });
        match buckets.last_mut() {
            Some(b) if fits => b.push(t),
            _ => buckets.push(vec![t]),
        }
    }
    // The bucket of the smallest tables that qualifies: cheapest work first.
    buckets
        .into_iter()
        .find(|b| b.len() >= min_threshold)
        .map(|b| b.into_iter().take(max_threshold).map(|t| t.id).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(id: u64, size: u64, ts: u64) -> TableStats {
        TableStats {
            id,
            size,
            max_ts_millis: ts,
        }
    }

    #[test]
    fn size_tiered_waits_for_enough_similar_tables() {
        let s = CompactionStrategy::default();
        let mb = 1 << 20;
        assert!(s
            .pick(&[t(1, mb, 0), t(2, mb, 0), t(3, mb, 0)], 0)
            .is_empty());
        let mut picked = s.pick(&[t(1, mb, 0), t(2, mb, 0), t(3, 2 * mb, 0), t(4, mb, 0)], 0);
        picked.sort();
        assert_eq!(picked, vec![1, 2, 3, 4]);
        // Big tables of very different sizes are not merged.
        let big = 100 * mb;
        assert!(s
            .pick(
                &[
                    t(1, big, 0),
                    t(2, 4 * big, 0),
                    t(3, 16 * big, 0),
                    t(4, 64 * big, 0)
                ],
                0
            )
            .is_empty());
    }

    #[test]
    fn time_window_merges_closed_windows_whole() {
        let s = CompactionStrategy::TimeWindow {
            window: Duration::from_millis(100),
            min_threshold: 4,
        };
        let tables = [t(1, 10, 5), t(2, 10, 50), t(3, 10, 150), t(4, 10, 250)];
        assert_eq!(s.pick(&tables, 260), vec![1, 2]);
        assert!(s.pick(&tables[2..], 260).is_empty());
    }

    proptest! {
        #[test]
        fn picks_are_live_distinct_and_within_limits(
            sizes in proptest::collection::vec((1u64..(64 << 20), 0u64..1000), 0..40),
            window in proptest::bool::ANY,
        ) {
            let tables: Vec<_> = sizes.iter().enumerate().map(|(i, (s, ts))| t(i as u64, *s, *ts)).collect();
            let strategy = if window {
                CompactionStrategy::TimeWindow { window: Duration::from_millis(100), min_threshold: 4 }
            } else {
                CompactionStrategy::default()
            };
            let picked = strategy.pick(&tables, 1000);
            let mut dedup = picked.clone();
            dedup.sort();
            dedup.dedup();
            prop_assert_eq!(dedup.len(), picked.len());
            prop_assert!(picked.is_empty() || picked.len() >= 2);
            prop_assert!(picked.len() <= 32);
            prop_assert!(picked.iter().all(|id| (*id as usize) < tables.len()));
        }
    }
}
