//! The memtable: recent writes, sorted by key, merged on insert.
//!
//! A lock-free skip list lets any number of readers walk it while one
//! writer at a time merges new entries in. An entry, once in the list, is
//! never replaced: its value sits behind its own lock and is joined in
//! place. (Replacing a skip-list entry removes the old one before linking
//! the new one, so a concurrent reader could miss the key altogether: the
//! YCSB benchmark caught a read finding no row that way.)

use crate::model::{Entry, Timestamp};
use crossbeam_skiplist::SkipMap;
use parking_lot::{Mutex, RwLock};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A sorted in-memory table of merged entries.
#[derive(Debug)]
pub struct Memtable {
    map: SkipMap<Vec<u8>, RwLock<Entry>>,
    write_lock: Mutex<()>,
    approximate_bytes: AtomicUsize,
    min_ts: AtomicU64,
}

impl Default for Memtable {
    fn default() -> Self {
        Memtable::new()
    }
}

impl Memtable {
    /// An empty memtable.
    pub fn new() -> Memtable {
        Memtable {
            map: SkipMap::new(),
            write_lock: Mutex::new(()),
            approximate_bytes: AtomicUsize::new(0),
            min_ts: AtomicU64::new(u64::MAX),
        }
    }

    /// Merges `entry` into whatever the memtable holds for `key`.
    /// `encoded_len` is the entry's encoded size, for accounting.
    pub fn apply(
        &self,
        key: &[u8],
        entry: Entry,
        encoded_len: usize,
    ) -> Result<(), crate::model::ModelError> {
        if let Some((lo, _)) = entry.ts_bounds() {
            self.min_ts.fetch_min(lo.0, Ordering::Relaxed);
        }
        let _guard = self.write_lock.lock();
        match self.map.get(key) {
            Some(existing) => {
                let mut value = existing.value().write();
                let merged = value.join(&entry)?;
                *value = merged;
            }
            None => {
                self.map.insert(key.to_vec(), RwLock::new(entry));
            }
        }
        self.approximate_bytes
            .fetch_add(key.len() + encoded_len + 32, Ordering::Relaxed);
        Ok(())
    }

    /// The merged entry for `key`, if any.
    pub fn get(&self, key: &[u8]) -> Option<Entry> {
        self.map.get(key).map(|e| e.value().read().clone())
    }

    /// The first entry after `after` (or from the start) within `upper`,
    /// walking up; used by the engine's streaming iterators.
    pub fn next_after(&self, after: Bound<&[u8]>, upper: Bound<&[u8]>) -> Option<(Vec<u8>, Entry)> {
        let entry = self.map.lower_bound(after.map(|k| k))?;
        let key = entry.key();
        let in_range = match upper {
            Bound::Included(u) => key.as_slice() <= u,
            Bound::Excluded(u) => key.as_slice() < u,
            Bound::Unbounded => true,
        };
        in_range.then(|| (key.clone(), entry.value().read().clone()))
    }

    /// The last entry before `before` (or from the end) within `lower`,
    /// walking down.
    pub fn next_before(
        &self,
        before: Bound<&[u8]>,
        lower: Bound<&[u8]>,
    ) -> Option<(Vec<u8>, Entry)> {
        let entry = self.map.upper_bound(before.map(|k| k))?;
        let key = entry.key();
        let in_range = match lower {
            Bound::Included(l) => key.as_slice() >= l,
            Bound::Excluded(l) => key.as_slice() > l,
            Bound::Unbounded => true,
        };
        in_range.then(|| (key.clone(), entry.value().read().clone()))
    }

    /// Approximate memory held, in bytes.
    pub fn approximate_bytes(&self) -> usize {
        self.approximate_bytes.load(Ordering::Relaxed)
    }

    /// Number of distinct keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The smallest write timestamp in the memtable (`None` if empty).
    pub fn min_ts(&self) -> Option<Timestamp> {
        let ts = self.min_ts.load(Ordering::Relaxed);
        (ts != u64::MAX).then_some(Timestamp(ts))
    }

    /// Every entry in key order (for flushing).
    pub fn iter(&self) -> impl Iterator<Item = (Vec<u8>, Entry)> + '_ {
        self.map
            .iter()
            .map(|e| (e.key().clone(), e.value().read().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CellValue, NodeId, RowState, RowWrite};
    use cql_lite::Value;

    fn delta(state: &RowState, node: u64, ts: u64, v: i64) -> RowState {
        state.stamp(
            NodeId(node),
            None,
            &RowWrite {
                ts: Timestamp(ts),
                cells: vec![("x".into(), CellValue::Live(Value::BigInt(v)), None)],
                ..RowWrite::default()
            },
        )
    }

    #[test]
    fn applies_merge_and_iteration_is_ordered_both_ways() {
        let m = Memtable::new();
        let a = delta(&RowState::default(), 1, 1, 1);
        let b = delta(&RowState::default(), 2, 2, 2);
        m.apply(b"k2", Entry::Row(a.clone()), 10).unwrap();
        m.apply(b"k2", Entry::Row(b.clone()), 10).unwrap();
        m.apply(b"k1", Entry::Row(a.clone()), 10).unwrap();
        assert_eq!(m.get(b"k2"), Some(Entry::Row(a.join(&b))));
        assert_eq!(m.len(), 2);
        let first = m.next_after(Bound::Unbounded, Bound::Unbounded).unwrap();
        assert_eq!(first.0, b"k1");
        let second = m
            .next_after(Bound::Excluded(b"k1"), Bound::Unbounded)
            .unwrap();
        assert_eq!(second.0, b"k2");
        assert!(m
            .next_after(Bound::Excluded(b"k1"), Bound::Excluded(b"k2"))
            .is_none());
        let last = m.next_before(Bound::Unbounded, Bound::Unbounded).unwrap();
        assert_eq!(last.0, b"k2");
        assert!(m
            .next_before(Bound::Excluded(b"k1"), Bound::Unbounded)
            .is_none());
        assert_eq!(m.min_ts(), Some(Timestamp(1)));
        assert!(m
            .apply(b"k1", Entry::Header(Default::default()), 1)
            .is_err());
    }

    #[test]
    fn readers_never_miss_a_key_while_it_is_updated() {
        let m = std::sync::Arc::new(Memtable::new());
        let mut state = RowState::default();
        let first = delta(&state, 1, 1, 0);
        state = state.join(&first);
        m.apply(b"k", Entry::Row(first), 10).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (m, stop) = (m.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut misses = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        if m.get(b"k").is_none() {
                            misses += 1;
                        }
                        if m.next_after(Bound::Unbounded, Bound::Unbounded).is_none() {
                            misses += 1;
                        }
                    }
                    misses
                })
            })
            .collect();
        for i in 0..20_000 {
            let d = delta(&state, 1, i + 2, i as i64);
            state = state.join(&d);
            m.apply(b"k", Entry::Row(d), 10).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let misses: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
        assert_eq!(
            misses, 0,
            "a reader saw the key missing while it was updated"
        );
    }
}
