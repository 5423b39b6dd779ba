//! Merging replicas' answers and computing what each replica misses.
//!
//! Pure functions, no I/O: the read path, the scan path and the tests use
//! them.

use super::messages::{Deltas, ReplicaPartition};
use crate::model::key;
use crate::model::{Entry, PartitionHeader, RowState};
use crate::query::api::StoredRow;
use std::borrow::Borrow;
use std::collections::BTreeMap;

/// The join of several replicas' answers for one partition slice.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MergedPartition {
    /// The join of the headers.
    pub header: PartitionHeader,
    /// Every row (live or dead) up to the cut-off, joined over the
    /// answers, in the requested order.
    pub rows: Vec<(Vec<u8>, RowState)>,
    /// Some answer stopped at its limit: rows past the last one here were
    /// not read from every replica.
    pub cut: bool,
}

/// Whether `k` lies at or before `cutoff` in read order.
fn within(k: &[u8], cutoff: &[u8], reverse: bool) -> bool {
    if reverse {
        k >= cutoff
    } else {
        k <= cutoff
    }
}

/// The rows among `rows` that are live at `now_ms` under `header`, at
/// most `limit` of them made into [`StoredRow`]s by `keep`, and how many
/// are live in all (borrowed or owned rows alike).
fn collect_live<K: AsRef<[u8]>, S: Borrow<RowState>>(
    header: &PartitionHeader,
    rows: impl IntoIterator<Item = (K, S)>,
    now_ms: u64,
    limit: Option<usize>,
    keep: impl Fn(K, S) -> StoredRow,
) -> (Vec<StoredRow>, usize) {
    let mut out = Vec::new();
    let mut count = 0;
    let limit = limit.unwrap_or(usize::MAX);
    for (k, state) in rows {
        if state
            .borrow()
            .is_live(header.shadow_for(k.as_ref()), now_ms)
        {
            count += 1;
            if out.len() < limit {
                out.push(keep(k, state));
            }
        }
    }
    (out, count)
}

/// Joins answers for one partition slice read in one order. An answer that
/// was cut at its limit covers the range only up to its last row, so the
/// merge keeps only rows up to the earliest such point (short-read
/// protection: a row beyond it might be shadowed by a deletion the cut
/// replica did not send).
pub fn merge_partition(answers: &[&ReplicaPartition], reverse: bool) -> MergedPartition {
    let mut header = PartitionHeader::default();
    // `None`: no cut; `Some(None)`: a cut answer with no rows (covers
    // nothing); `Some(Some(k))`: covered up to `k`.
    let mut cutoff: Option<Option<&[u8]>> = None;
    for a in answers {
        header = header.join(&a.header);
        if a.cut {
            let last = a.rows.last().map(|(k, _)| k.as_slice());
            cutoff = Some(match (cutoff, last) {
                (None, l) => l,
                (Some(None), _) | (Some(Some(_)), None) => None,
                (Some(Some(c)), Some(l)) => Some(if within(l, c, reverse) { l } else { c }),
            });
        }
    }
    let mut rows: BTreeMap<&[u8], RowState> = BTreeMap::new();
    for a in answers {
        for (k, state) in &a.rows {
            let keep = match cutoff {
                None => true,
                Some(None) => false,
                Some(Some(c)) => within(k, c, reverse),
            };
            if !keep {
                continue;
            }
            rows.entry(k.as_slice())
                .and_modify(|s| *s = s.join(state))
                .or_insert_with(|| state.clone());
        }
    }
    let mut rows: Vec<(Vec<u8>, RowState)> =
        rows.into_iter().map(|(k, s)| (k.to_vec(), s)).collect();
    if reverse {
        rows.reverse();
    }
    MergedPartition {
        header,
        rows,
        cut: cutoff.is_some(),
    }
}

impl MergedPartition {
    /// The merge of one answer, taking it by value: the same as
    /// `merge_partition(&[&answer], reverse)` without cloning its rows
    /// (the digest read path, where one replica sent full data). An
    /// answer whose rows are not in strict read order goes through
    /// [`merge_partition`], which sorts and joins them.
    pub fn from_answer(answer: ReplicaPartition, reverse: bool) -> MergedPartition {
        let in_order = answer.rows.windows(2).all(|w| {
            if reverse {
                w[0].0 > w[1].0
            } else {
                w[0].0 < w[1].0
            }
        });
        if !in_order {
            return merge_partition(&[&answer], reverse);
        }
        MergedPartition {
            header: PartitionHeader::default().join(&answer.header),
            rows: answer.rows,
            cut: answer.cut,
        }
    }

    /// Like [`MergedPartition::live_rows`], consuming the merge: its
    /// header, the live rows at `now_ms` (at most `limit`) and how many
    /// live rows there are in all.
    pub fn into_live_rows(
        self,
        now_ms: u64,
        limit: Option<usize>,
    ) -> (PartitionHeader, Vec<StoredRow>, usize) {
        let MergedPartition { header, rows, .. } = self;
        let (rows, live) = collect_live(&header, rows, now_ms, limit, |clustering, state| {
            StoredRow { clustering, state }
        });
        (header, rows, live)
    }

    /// The live rows at `now_ms` (resolved with the joined header), at most
    /// `limit`, and how many live rows there are in all.
    pub fn live_rows(&self, now_ms: u64, limit: Option<usize>) -> (Vec<StoredRow>, usize) {
        let rows = self.rows.iter().map(|(k, s)| (k, s));
        collect_live(&self.header, rows, now_ms, limit, |k, s| StoredRow {
            clustering: k.clone(),
            state: s.clone(),
        })
    }

    /// The deltas that bring `answer` (one replica's view of the same
    /// slice) up to this merge: the merged state of every row where the
    /// replica's differs, and the header if it differs. Empty when the
    /// replica is up to date.
    pub fn repair_for(&self, prefix: &[u8], answer: &ReplicaPartition) -> Deltas {
        let mut out = Vec::new();
        if answer.header != self.header {
            out.push((key::header_key(prefix), Entry::Header(self.header.clone())));
        }
        let theirs: BTreeMap<&[u8], &RowState> =
            answer.rows.iter().map(|(k, s)| (k.as_slice(), s)).collect();
        for (k, state) in &self.rows {
            if theirs.get(k.as_slice()).is_none_or(|s| *s != state) {
                out.push((key::row_key(prefix, k), Entry::Row(state.clone())));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CellValue, NodeId, RowWrite, Timestamp};
    use cql_lite::Value;

    fn write(v: i32, ts: u64) -> RowWrite {
        RowWrite {
            ts: Timestamp(ts),
            insert_marker: Some(None),
            delete_row: false,
            cells: vec![("v".into(), CellValue::Live(Value::Int(v)), None)],
        }
    }

    fn row(node: u64, v: i32, ts: u64) -> RowState {
        RowState::default().stamp(NodeId(node), None, &write(v, ts))
    }

    #[test]
    fn a_cut_answer_limits_the_merge_to_what_it_covered() {
        let a = ReplicaPartition {
            header: PartitionHeader::default(),
            rows: vec![(vec![1], row(1, 1, 10)), (vec![2], row(1, 2, 10))],
            cut: true,
        };
        let b = ReplicaPartition {
            header: PartitionHeader::default(),
            rows: vec![(vec![1], row(2, 5, 20)), (vec![3], row(2, 3, 10))],
            cut: false,
        };
        let m = merge_partition(&[&a, &b], false);
        assert!(m.cut);
        assert_eq!(
            m.rows.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
            vec![vec![1], vec![2]]
        );
        // Row 1 has both versions (siblings: neither saw the other).
        assert_eq!(m.rows[0].1.versions().len(), 2);
        // A repairs row 1 only (it lacks b's version); b gets rows 1 and 2.
        assert_eq!(m.repair_for(&[0; 11], &a).len(), 1);
        assert_eq!(m.repair_for(&[0; 11], &b).len(), 2);
        let a_rev = ReplicaPartition {
            header: PartitionHeader::default(),
            rows: vec![(vec![3], row(1, 3, 10)), (vec![2], row(1, 2, 10))],
            cut: true,
        };
        let b_rev = ReplicaPartition {
            header: PartitionHeader::default(),
            rows: vec![(vec![3], row(1, 3, 10)), (vec![1], row(2, 1, 10))],
            cut: false,
        };
        let rev = merge_partition(&[&a_rev, &b_rev], true);
        let keys: Vec<Vec<u8>> = rev.rows.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(
            keys,
            vec![vec![3], vec![2]],
            "descending, up to a's cut at 2"
        );
        let agreed = merge_partition(&[&b, &b], false);
        assert!(agreed.repair_for(&[0; 11], &b).is_empty());
    }

    proptest::proptest! {
        /// Taking one answer by value gives what merging it gives, and its
        /// live rows are the borrowed path's, whatever order the replica
        /// sent its rows in.
        #[test]
        fn one_answer_by_value_is_its_merge(
            keys in proptest::collection::vec(0u8..8, 0..10),
            sent_in_order in proptest::bool::ANY,
            deleted in proptest::collection::vec(proptest::bool::ANY, 10),
            reverse in proptest::bool::ANY,
            cut in proptest::bool::ANY,
            partition_deleted_at in proptest::option::of(0u64..30),
            limit in proptest::option::of(0usize..6),
        ) {
            let mut keys = keys;
            if sent_in_order {
                keys.sort_unstable();
                keys.dedup();
                if reverse {
                    keys.reverse();
                }
            }
            let rows: Vec<(Vec<u8>, RowState)> = keys
                .iter()
                .zip(&deleted)
                .enumerate()
                .map(|(i, (k, del))| {
                    let mut w = write(i as i32, 10 + i as u64);
                    w.delete_row = *del;
                    (vec![*k], RowState::default().stamp(NodeId(1), None, &w))
                })
                .collect();
            let answer = ReplicaPartition {
                header: PartitionHeader {
                    deleted_at: partition_deleted_at.map(Timestamp),
                    ranges: Vec::new(),
                },
                rows,
                cut,
            };
            let merged = merge_partition(&[&answer], reverse);
            let by_value = MergedPartition::from_answer(answer, reverse);
            proptest::prop_assert_eq!(&by_value, &merged);
            let (rows, live) = merged.live_rows(15, limit);
            let (header, rows_by_value, live_by_value) = by_value.into_live_rows(15, limit);
            proptest::prop_assert_eq!(header, merged.header.clone());
            proptest::prop_assert_eq!(rows_by_value, rows);
            proptest::prop_assert_eq!(live_by_value, live);
        }
    }
}
