//! Streaming merge of sorted sources (memtables and SSTables).
//!
//! Each source yields `(key, entry)` in key order (ascending, or descending
//! for reverse scans). The merge yields every key once, with the entries of
//! all sources that hold it joined: the version-merge rules of `model`.

use super::memtable::Memtable;
use super::{Result, StorageError};
use crate::model::Entry;
use std::iter::Peekable;
use std::ops::Bound;
use std::sync::Arc;

/// One sorted source of entries.
pub type Source = Box<dyn Iterator<Item = Result<(Vec<u8>, Entry)>> + Send>;

/// Walks a memtable's key range without holding a borrow across calls, so
/// the iterator can own an `Arc` of the memtable.
pub struct MemtableRange {
    mem: Arc<Memtable>,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    reverse: bool,
    last: Option<Vec<u8>>,
    done: bool,
}

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
            last: None,
            done: false,
        }
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
        if self.done {
            return None;
        }
        let next = if self.reverse {
            let from = match &self.last {
                Some(k) => Bound::Excluded(k.as_slice()),
                None => as_ref(&self.upper),
            };
            self.mem.next_before(from, as_ref(&self.lower))
        } else {
            let from = match &self.last {
                Some(k) => Bound::Excluded(k.as_slice()),
                None => as_ref(&self.lower),
            };
            self.mem.next_after(from, as_ref(&self.upper))
        };
        match next {
            Some((key, entry)) => {
                self.last = Some(key.clone());
                Some(Ok((key, entry)))
            }
            None => {
                self.done = true;
                None
            }
        }
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
}
