//! Streaming merge of sorted sources (memtables and SSTables).
//!
//! Each source yields `(key, entry)` in key order (ascending, or descending
//! for reverse scans). The merge yields every key once, with the entries of
//! all sources that hold it joined: the version-merge rules of `model`.

use super::memtable::Memtable;
use super::{Result, StorageError};
use crate::model::Entry;
use std::collections::VecDeque;
use std::iter::Peekable;
use std::ops::Bound;
use std::sync::Arc;

/// One sorted source of entries.
pub type Source = Box<dyn Iterator<Item = Result<(Vec<u8>, Entry)>> + Send>;

/// Walks a memtable's key range without holding a borrow across calls, so
/// the iterator can own an `Arc` of the memtable. It takes the entries in
/// runs (one search, then a walk along the list; each run twice as long
/// as the last, up to [`MAX_RUN`]) and hands them out one by one.
pub struct MemtableRange {
    mem: Arc<Memtable>,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    reverse: bool,
    /// Entries taken from the memtable and not handed out yet.
    run: VecDeque<(Vec<u8>, Entry)>,
    /// How many entries the next run asks for.
    next_run: usize,
    /// The last key taken from the memtable.
    last: Option<Vec<u8>>,
    done: bool,
}

/// The first run's length: a whole single-row partition (its header and
/// its row) and a little more, in one search.
const FIRST_RUN: usize = 4;

/// The longest run: bounds the copies made ahead of a reader that may stop.
const MAX_RUN: usize = 64;

impl MemtableRange {
    /// The entries of `mem` within the bounds, in the given direction.
    pub fn new(
        mem: Arc<Memtable>,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        reverse: bool,
    ) -> Self {
        MemtableRange {
            mem,
            lower,
            upper,
            reverse,
            run: VecDeque::new(),
            next_run: FIRST_RUN,
            last: None,
            done: false,
        }
    }

    /// Takes the next run from the memtable; marks the range done when the
    /// run comes back short.
    fn refill(&mut self) {
        let (start, end) = if self.reverse {
            (&self.upper, &self.lower)
        } else {
            (&self.lower, &self.upper)
        };
        let from = match &self.last {
            Some(k) => Bound::Excluded(k.as_slice()),
            None => as_ref(start),
        };
        let want = self.next_run;
        let got = self
            .mem
            .collect_run(from, as_ref(end), self.reverse, want, &mut self.run);
        if got < want {
            self.done = true;
        }
        if let Some((k, _)) = self.run.back() {
            self.last = Some(k.clone());
        }
        self.next_run = (want * 2).min(MAX_RUN);
    }
}

fn as_ref(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(k) => Bound::Included(k.as_slice()),
        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl Iterator for MemtableRange {
    type Item = Result<(Vec<u8>, Entry)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.run.is_empty() && !self.done {
            self.refill();
        }
        self.run.pop_front().map(Ok)
    }
}

/// The merge of several sorted sources.
pub struct MergeIter {
    sources: Vec<Peekable<Source>>,
    reverse: bool,
    failed: bool,
}

impl MergeIter {
    /// Merges `sources`, all sorted in the same direction.
    pub fn new(sources: Vec<Source>, reverse: bool) -> MergeIter {
        MergeIter {
            sources: sources.into_iter().map(Iterator::peekable).collect(),
            reverse,
            failed: false,
        }
    }
}

impl Iterator for MergeIter {
    type Item = Result<(Vec<u8>, Entry)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        // Find the next key across sources; surface the first error.
        let mut best: Option<Vec<u8>> = None;
        for i in 0..self.sources.len() {
            match self.sources[i].peek() {
                None => {}
                Some(Err(_)) => {
                    self.failed = true;
                    return self.sources[i].next();
                }
                Some(Ok((key, _))) => {
                    let better = match &best {
                        None => true,
                        Some(b) if self.reverse => key > b,
                        Some(b) => key < b,
                    };
                    if better {
                        best = Some(key.clone());
                    }
                }
            }
        }
        let key = best?;
        let mut merged: Option<Entry> = None;
        for source in &mut self.sources {
            if matches!(source.peek(), Some(Ok((k, _))) if *k == key) {
                if let Some(Ok((_, entry))) = source.next() {
                    merged = Some(match merged {
                        None => entry,
                        Some(acc) => match acc.join(&entry) {
                            Ok(joined) => joined,
                            Err(e) => {
                                self.failed = true;
                                return Some(Err(StorageError::Codec(format!(
                                    "key {}: {e}",
                                    hex(&key)
                                ))));
                            }
                        },
                    });
                }
            }
        }
        merged.map(|entry| Ok((key, entry)))
    }
}

/// Lowercase hex of a key, for error messages.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PartitionHeader;
    use crate::model::Timestamp;
    use proptest::prelude::*;

    fn header(ts: u64) -> Entry {
        Entry::Header(PartitionHeader {
            deleted_at: Some(Timestamp(ts)),
            ranges: vec![],
        })
    }

    fn source(items: Vec<(&'static str, u64)>) -> Source {
        Box::new(
            items
                .into_iter()
                .map(|(k, t)| Ok((k.as_bytes().to_vec(), header(t)))),
        )
    }

    #[test]
    fn merges_and_joins_equal_keys_in_both_directions() {
        let forward = MergeIter::new(
            vec![
                source(vec![("a", 1), ("c", 5)]),
                source(vec![("b", 2), ("c", 7)]),
            ],
            false,
        );
        let got: Vec<_> = forward.map(|r| r.unwrap()).collect();
        assert_eq!(
            got,
            vec![
                (b"a".to_vec(), header(1)),
                (b"b".to_vec(), header(2)),
                (b"c".to_vec(), header(7))
            ]
        );
        let backward = MergeIter::new(
            vec![
                source(vec![("c", 5), ("a", 1)]),
                source(vec![("c", 7), ("b", 2)]),
            ],
            true,
        );
        let keys: Vec<_> = backward.map(|r| r.unwrap().0).collect();
        assert_eq!(keys, vec![b"c".to_vec(), b"b".to_vec(), b"a".to_vec()]);
    }

    #[test]
    fn memtable_range_respects_bounds() {
        let mem = Arc::new(Memtable::new());
        for k in ["a", "b", "c", "d"] {
            mem.apply(k.as_bytes(), header(1), 1).unwrap();
        }
        let keys = |lower, upper, reverse| {
            MemtableRange::new(mem.clone(), lower, upper, reverse)
                .map(|r| String::from_utf8(r.unwrap().0).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            keys(
                Bound::Excluded(b"a".to_vec()),
                Bound::Included(b"c".to_vec()),
                false
            ),
            ["b", "c"]
        );
        assert_eq!(
            keys(
                Bound::Included(b"b".to_vec()),
                Bound::Excluded(b"d".to_vec()),
                true
            ),
            ["c", "b"]
        );
        assert_eq!(
            keys(Bound::Unbounded, Bound::Unbounded, true),
            ["d", "c", "b", "a"]
        );
    }

    fn bound_strategy() -> impl Strategy<Value = Bound<Vec<u8>>> {
        prop_oneof![
            Just(Bound::Unbounded),
            (0u16..300).prop_map(|k| Bound::Included(k.to_be_bytes().to_vec())),
            (0u16..300).prop_map(|k| Bound::Excluded(k.to_be_bytes().to_vec())),
        ]
    }

    proptest! {
        /// Runs of any length (past the first and the longest) hand out
        /// exactly the keys in the bounds, in order, each once.
        #[test]
        fn memtable_range_is_the_sorted_range(
            keys in proptest::collection::btree_set(0u16..300, 0..200),
            lower in bound_strategy(),
            upper in bound_strategy(),
            reverse in any::<bool>(),
        ) {
            let mem = Arc::new(Memtable::new());
            for k in &keys {
                mem.apply(&k.to_be_bytes(), header(u64::from(*k)), 1).unwrap();
            }
            let inside = |k: &Vec<u8>| {
                let above = match &lower {
                    Bound::Included(l) => k >= l,
                    Bound::Excluded(l) => k > l,
                    Bound::Unbounded => true,
                };
                let below = match &upper {
                    Bound::Included(u) => k <= u,
                    Bound::Excluded(u) => k < u,
                    Bound::Unbounded => true,
                };
                above && below
            };
            let mut expected: Vec<Vec<u8>> = keys
                .iter()
                .map(|k| k.to_be_bytes().to_vec())
                .filter(inside)
                .collect();
            if reverse {
                expected.reverse();
            }
            let got: Vec<(Vec<u8>, Entry)> = MemtableRange::new(mem.clone(), lower.clone(), upper.clone(), reverse)
                .map(|r| r.unwrap())
                .collect();
            let got_keys: Vec<Vec<u8>> = got.iter().map(|(k, _)| k.clone()).collect();
            prop_assert_eq!(got_keys, expected);
            for (k, entry) in &got {
                let n = u16::from_be_bytes([k[0], k[1]]);
                prop_assert_eq!(entry, &header(u64::from(n)));
            }
        }
    }
}
