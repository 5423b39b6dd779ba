//! The memtable: recent writes, sorted by key, merged on insert.
//!
//! A lock-free skip list lets any number of readers walk it while one
//! writer at a time merges new entries in. An entry, once in the list, is
//! never replaced: its value sits behind its own lock and is joined in
//! place. (Replacing a skip-list entry removes the old one before linking
//! the new one, so a concurrent reader could miss the key altogether: the
//! YCSB benchmark caught a read finding no row that way.)
//!
//! Beside the list, a small bloom filter over the tokens of the partitions
//! written says which partitions the memtable surely does not hold, so a
//! read of a partition that lives only in SSTables skips the list's
//! search (a walk of pointer chases and key comparisons over every row not
//! yet flushed).

use super::sstable::key_prefix;
use crate::model::{Entry, Timestamp};
use crossbeam_skiplist::SkipMap;
use parking_lot::{Mutex, RwLock};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Bits of a memtable's partition filter, as a power of two: 2^20 bits
/// (128 KiB). With three bits per partition, 50,000 partitions in one
/// memtable give about 0.3 % false positives, 200,000 about 9 %; a false
/// positive only costs the search the filter would have saved.
const FILTER_BITS_LOG2: u32 = 20;

/// A bloom filter over the tokens (the leading 8 bytes of every key, the
/// partition key's SipHash) of the partitions a memtable holds: `false`
/// from [`PartitionFilter::may_contain`] means no key of that partition
/// was ever applied. The token is already a uniform hash, so its bits
/// pick the filter's bits directly.
#[derive(Debug)]
struct PartitionFilter {
    words: Box<[AtomicU64]>,
    /// Set when a key too short to carry a token was applied: the filter
    /// then answers "maybe" for every partition.
    saturated: AtomicBool,
}

impl PartitionFilter {
    fn new() -> PartitionFilter {
        PartitionFilter {
            words: (0..1usize << (FILTER_BITS_LOG2 - 6))
                .map(|_| AtomicU64::new(0))
                .collect(),
            saturated: AtomicBool::new(false),
        }
    }

    fn token(key: &[u8]) -> Option<u64> {
        let bytes: [u8; 8] = key.get(..8)?.try_into().ok()?;
        Some(u64::from_be_bytes(bytes))
    }

    /// The three bit positions of a token: three disjoint 21-bit slices
    /// of it, each cut to the filter's size.
    fn positions(token: u64) -> [usize; 3] {
        let mask = (1u64 << FILTER_BITS_LOG2) - 1;
        [token & mask, (token >> 21) & mask, (token >> 42) & mask].map(|p| p as usize)
    }

    fn insert(&self, key: &[u8]) {
        match Self::token(key) {
            Some(token) => {
                for p in Self::positions(token) {
                    self.words[p >> 6].fetch_or(1 << (p & 63), Ordering::Release);
                }
            }
            None => self.saturated.store(true, Ordering::Release),
        }
    }

    fn may_contain(&self, partition: &[u8]) -> bool {
        if self.saturated.load(Ordering::Acquire) {
            return true;
        }
        match Self::token(partition) {
            Some(token) => Self::positions(token)
                .iter()
                .all(|&p| self.words[p >> 6].load(Ordering::Acquire) & (1 << (p & 63)) != 0),
            None => true,
        }
    }
}

/// A key in a memtable's list: its bytes, with their first eight (the
/// partition's token) kept beside them as an integer and compared first.
/// A search compares its key with some twenty nodes' keys; the integer
/// decides all but the last few without reading the key bytes from
/// another heap block (a cache miss each, with a large memtable). Orders
/// exactly as the bytes do ([`key_prefix`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ListKey {
    prefix: u64,
    bytes: Vec<u8>,
}

impl ListKey {
    fn new(bytes: &[u8]) -> ListKey {
        ListKey {
            prefix: key_prefix(bytes),
            bytes: bytes.to_vec(),
        }
    }
}

impl Ord for ListKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.prefix
            .cmp(&other.prefix)
            .then_with(|| self.bytes.cmp(&other.bytes))
    }
}

impl PartialOrd for ListKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// A bound on list keys from a bound on key bytes.
fn list_bound(bound: Bound<&[u8]>) -> Bound<ListKey> {
    bound.map(ListKey::new)
}

/// A sorted in-memory table of merged entries.
#[derive(Debug)]
pub struct Memtable {
    map: SkipMap<ListKey, RwLock<Entry>>,
    partitions: PartitionFilter,
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
            partitions: PartitionFilter::new(),
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
        let key_len = key.len();
        let key = ListKey::new(key);
        match self.map.get(&key) {
            Some(existing) => {
                let mut value = existing.value().write();
                let merged = value.join(&entry)?;
                *value = merged;
            }
            None => {
                // The filter learns the partition before the list holds
                // the key: a reader that finds the key can also find it
                // through the filter.
                self.partitions.insert(&key.bytes);
                self.map.insert(key, RwLock::new(entry));
            }
        }
        self.approximate_bytes
            .fetch_add(key_len + encoded_len + 32, Ordering::Relaxed);
        Ok(())
    }

    /// Whether any key of the partition with serialized prefix `partition`
    /// (token, length, partition key) may be here; `false` is certain.
    pub fn may_contain_partition(&self, partition: &[u8]) -> bool {
        self.partitions.may_contain(partition)
    }

    /// The merged entry for `key`, if any.
    pub fn get(&self, key: &[u8]) -> Option<Entry> {
        self.map
            .get(&ListKey::new(key))
            .map(|e| e.value().read().clone())
    }

    /// The first entry after `after` (or from the start) within `upper`,
    /// walking up; used by the engine's streaming iterators.
    pub fn next_after(&self, after: Bound<&[u8]>, upper: Bound<&[u8]>) -> Option<(Vec<u8>, Entry)> {
        let entry = self.map.lower_bound(list_bound(after).as_ref())?;
        let key = &entry.key().bytes;
        let in_range = match upper {
            Bound::Included(u) => key.as_slice() <= u,
            Bound::Excluded(u) => key.as_slice() < u,
            Bound::Unbounded => true,
        };
        in_range.then(|| (key.clone(), entry.value().read().clone()))
    }

    /// Appends to `out` up to `max` entries in key order from `from`
    /// (walking up from a lower bound, or down from an upper bound when
    /// `reverse`) that lie within `end`: one search, then a walk along the
    /// list, where calling [`Memtable::next_after`] per entry searches
    /// from the top each time. Returns how many it appended; fewer than
    /// `max` means the range holds no more (as of the walk).
    pub fn collect_run(
        &self,
        from: Bound<&[u8]>,
        end: Bound<&[u8]>,
        reverse: bool,
        max: usize,
        out: &mut std::collections::VecDeque<(Vec<u8>, Entry)>,
    ) -> usize {
        let from = list_bound(from);
        let first = if reverse {
            self.map.upper_bound(from.as_ref())
        } else {
            self.map.lower_bound(from.as_ref())
        };
        let within = |key: &[u8]| match (end, reverse) {
            (Bound::Unbounded, _) => true,
            (Bound::Included(e), false) => key <= e,
            (Bound::Excluded(e), false) => key < e,
            (Bound::Included(e), true) => key >= e,
            (Bound::Excluded(e), true) => key > e,
        };
        let mut appended = 0;
        let mut cursor = first;
        while let Some(entry) = cursor {
            if appended >= max || !within(&entry.key().bytes) {
                break;
            }
            out.push_back((entry.key().bytes.clone(), entry.value().read().clone()));
            appended += 1;
            cursor = if reverse { entry.prev() } else { entry.next() };
        }
        appended
    }

    /// The last entry before `before` (or from the end) within `lower`,
    /// walking down.
    pub fn next_before(
        &self,
        before: Bound<&[u8]>,
        lower: Bound<&[u8]>,
    ) -> Option<(Vec<u8>, Entry)> {
        let entry = self.map.upper_bound(list_bound(before).as_ref())?;
        let key = &entry.key().bytes;
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
            .map(|e| (e.key().bytes.clone(), e.value().read().clone()))
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

    fn prefix_of(id: u64) -> Vec<u8> {
        let spk = crate::model::key::serialize_partition_key(
            &[Value::BigInt(id as i64)],
            &[cql_lite::DataType::BigInt],
        )
        .unwrap();
        crate::model::key::partition_prefix(&spk)
    }

    proptest::proptest! {
        /// The filter never rules out a partition that has a key here,
        /// whatever the keys (rows or headers) and their order.
        #[test]
        fn the_partition_filter_never_rules_out_a_written_partition(
            ids in proptest::collection::vec(proptest::prelude::any::<u64>(), 1..200),
            headers in proptest::collection::vec(proptest::prelude::any::<bool>(), 200),
        ) {
            let m = Memtable::new();
            for (i, id) in ids.iter().enumerate() {
                let prefix = prefix_of(*id);
                let (key, entry) = if headers[i] {
                    (crate::model::key::header_key(&prefix), Entry::Header(Default::default()))
                } else {
                    let row = delta(&RowState::default(), 1, i as u64 + 1, 0);
                    (crate::model::key::row_key(&prefix, &[]), Entry::Row(row))
                };
                m.apply(&key, entry, 10).unwrap();
            }
            for id in &ids {
                proptest::prop_assert!(m.may_contain_partition(&prefix_of(*id)));
            }
        }
    }

    #[test]
    fn the_partition_filter_rules_out_most_partitions_never_written() {
        let m = Memtable::new();
        assert!(!m.may_contain_partition(&prefix_of(7)), "empty memtable");
        for id in 0..50_000u64 {
            let key = crate::model::key::row_key(&prefix_of(id), &[]);
            m.apply(&key, Entry::Row(delta(&RowState::default(), 1, 1, 0)), 10)
                .unwrap();
        }
        let maybe = (1_000_000..1_010_000u64)
            .filter(|id| m.may_contain_partition(&prefix_of(*id)))
            .count();
        // About 0.3 % expected for 50,000 partitions.
        assert!(
            maybe < 100,
            "{maybe} of 10,000 unwritten partitions not ruled out"
        );
    }

    #[test]
    fn a_key_without_a_token_makes_the_filter_answer_maybe() {
        let m = Memtable::new();
        m.apply(b"k1", Entry::Row(delta(&RowState::default(), 1, 1, 0)), 10)
            .unwrap();
        assert!(m.may_contain_partition(&prefix_of(3)));
        assert!(m.may_contain_partition(b"k1"));
    }

    proptest::proptest! {
        /// List keys sort exactly as their bytes, also where the first
        /// eight bytes tie or a key is shorter than eight (zeros in the
        /// alphabet make padding and real bytes meet).
        #[test]
        fn list_keys_sort_as_their_bytes(
            a in proptest::collection::vec(proptest::sample::select(vec![0u8, 1, 255]), 0..12),
            b in proptest::collection::vec(proptest::sample::select(vec![0u8, 1, 255]), 0..12),
        ) {
            proptest::prop_assert_eq!(ListKey::new(&a).cmp(&ListKey::new(&b)), a.cmp(&b));
        }
    }
}
