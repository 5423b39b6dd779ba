//! Partition isolation: a write of several entries is seen by readers of
//! a partition whole or not at all (Cassandra's per-partition isolation).
//!
//! A write reaches readers when it is merged into the active memtable,
//! entry by entry. [`PartitionLocks`] is a fixed array of reader-writer
//! locks; a partition's stripe is chosen by its token (the first 8 bytes
//! of every key of the partition, a SipHash of the partition key, so
//! uniform). Who takes what:
//!
//! - A write of **several** entries holds the stripes of every partition
//!   it touches exclusively, in ascending stripe order (no two writers can
//!   deadlock), while it merges them into the memtable. A write of one
//!   entry takes nothing: one entry is merged atomically anyway, and it is
//!   the hot path.
//! - A read of one partition (`read_row`, `read_partition`,
//!   `read_partition_states`) holds that partition's stripe shared for the
//!   whole read.
//! - A scan over many partitions holds no lock while its caller consumes
//!   it. Its source over the active memtable ([`PartitionwiseRange`])
//!   copies one partition at a time, under that partition's stripe
//!   shared, and never returns into a partition it has left. Every other
//!   source of a scan (frozen memtables, SSTables) is immutable, and a
//!   write lands wholly in one memtable, so each partition a scan yields
//!   holds every multi-entry write to it or none.
//!
//! Lock order (a thread holding one may take the ones after it, never
//! one before it): the engine's row locks, then partition stripes
//! (exclusive, ascending, for a multi-entry write; shared, one at a time,
//! for a reader), then `switch_lock` (shared by writers, exclusive for a
//! memtable switch), then the snapshot lock, the commit log's and the
//! memtable's own locks. A reader holds at most one stripe and never
//! takes a row lock or `switch_lock`; a memtable switch, a flush and a
//! compaction never take a stripe. So no cycle can form. A multi-entry
//! writer takes its stripes before `switch_lock` so that, while it waits
//! for a long read of its partition, it holds up no memtable switch (a
//! switch waiting for `switch_lock` would hold up every other writer).

use super::iter::hex;
use super::memtable::Memtable;
use super::{Result, StorageError};
use crate::model::key::{self, KeyKind};
use crate::model::Entry;
use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::collections::VecDeque;
use std::ops::Bound;
use std::sync::Arc;

/// Number of stripes: partitions sharing one only wait for each other
/// when a multi-entry write to one of them meets a read of another.
const STRIPES: usize = 256;

/// Striped reader-writer locks over partitions (see the module
/// documentation).
pub struct PartitionLocks {
    stripes: Vec<RwLock<()>>,
}

impl std::fmt::Debug for PartitionLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLocks")
            .field("stripes", &self.stripes.len())
            .finish()
    }
}

impl Default for PartitionLocks {
    fn default() -> Self {
        PartitionLocks::new()
    }
}

impl PartitionLocks {
    /// Every stripe unlocked.
    pub fn new() -> PartitionLocks {
        PartitionLocks {
            stripes: (0..STRIPES).map(|_| RwLock::new(())).collect(),
        }
    }

    /// The stripe of the partition of `key` (any key of the partition, or
    /// its prefix): chosen by the token, which every key of a partition
    /// starts with. A key too short to hold a token (never stored: keys are
    /// checked before they are written) maps to stripe 0.
    fn stripe_of(key: &[u8]) -> usize {
        key::token_of_key(key).map_or(0, |t| (t % STRIPES as u64) as usize)
    }

    /// Holds the stripe of `prefix`'s partition shared: multi-entry writes
    /// to it wait until the guard is dropped.
    pub fn read(&self, prefix: &[u8]) -> RwLockReadGuard<'_, ()> {
        self.stripes[Self::stripe_of(prefix)].read()
    }

    /// Holds the stripes of the partitions of every key exclusively, taken
    /// in ascending order.
    pub fn write_all<'a, I>(&self, keys: I) -> Vec<RwLockWriteGuard<'_, ()>>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let mut stripes: Vec<usize> = keys.into_iter().map(Self::stripe_of).collect();
        stripes.sort_unstable();
        stripes.dedup();
        stripes.iter().map(|&s| self.stripes[s].write()).collect()
    }
}

fn as_ref(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(k) => Bound::Included(k.as_slice()),
        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The entries of a memtable that writers are still merging into (the
/// active one) within a key range, read one partition at a time under the
/// partition's stripe shared, so a partition never shows part of a
/// multi-entry write. The stripe is held only inside `next` while one
/// partition is copied, never while the caller works.
///
/// Once it has read a partition it moves its bound past the partition's
/// end (its start, reversed): an entry written there later is not read,
/// since the earlier read of the partition may have missed other entries
/// of the same write.
///
/// Memory: one partition's entries in this memtable at a time.
pub struct PartitionwiseRange {
    mem: Arc<Memtable>,
    locks: Arc<PartitionLocks>,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    reverse: bool,
    /// The current partition's entries, in scan order.
    buffer: VecDeque<(Vec<u8>, Entry)>,
    /// A key met after the last partition read (the next one's, unless
    /// another partition appeared in between); `None` to look again.
    hint: Option<Vec<u8>>,
    done: bool,
}

impl PartitionwiseRange {
    /// The entries of `mem` within the bounds, in the given direction,
    /// isolated per partition by `locks`.
    pub fn new(
        mem: Arc<Memtable>,
        locks: Arc<PartitionLocks>,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        reverse: bool,
    ) -> Self {
        PartitionwiseRange {
            mem,
            locks,
            lower,
            upper,
            reverse,
            buffer: VecDeque::new(),
            hint: None,
            done: false,
        }
    }

    /// The next entry in scan order after `from` (the unread side of the
    /// range when `None`).
    fn step(&self, from: Option<&[u8]>) -> Option<(Vec<u8>, Entry)> {
        if self.reverse {
            let before = from.map_or(as_ref(&self.upper), Bound::Excluded);
            self.mem.next_before(before, as_ref(&self.lower))
        } else {
            let after = from.map_or(as_ref(&self.lower), Bound::Excluded);
            self.mem.next_after(after, as_ref(&self.upper))
        }
    }

    /// Copies every entry of the partition `prefix` still in range into
    /// the buffer, under its stripe, then moves the range past it. The
    /// buffer stays empty when an entry of another partition comes first
    /// (one written since the partition was found): it becomes the hint.
    fn fill(&mut self, prefix: &[u8]) {
        let locks = self.locks.clone();
        let _shared = locks.read(prefix);
        let mut last: Option<Vec<u8>> = None;
        loop {
            match self.step(last.as_deref()) {
                // Every key of a partition starts with its prefix, and no
                // other key does: the prefix ends with the partition key's
                // length and bytes, so a longer partition key differs in
                // the length field.
                Some((k, entry)) if k.starts_with(prefix) => {
                    last = Some(k.clone());
                    self.buffer.push_back((k, entry));
                }
                Some((k, _)) => {
                    self.hint = Some(k);
                    break;
                }
                None => {
                    self.done = true;
                    break;
                }
            }
        }
        if !self.buffer.is_empty() {
            if self.reverse {
                // Every key of the partition is above its prefix, every key
                // of an earlier partition below it.
                self.upper = Bound::Excluded(prefix.to_vec());
            } else {
                self.lower = Bound::Included(key::partition_end(prefix));
            }
        }
    }
}

impl Iterator for PartitionwiseRange {
    type Item = Result<(Vec<u8>, Entry)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.buffer.pop_front() {
                return Some(Ok(item));
            }
            if self.done {
                return None;
            }
            let found = match self.hint.take() {
                Some(k) => k,
                None => match self.step(None) {
                    Some((k, _)) => k,
                    None => {
                        self.done = true;
                        return None;
                    }
                },
            };
            let plen = match key::classify(&found) {
                Ok(KeyKind::Row { partition_len }) | Ok(KeyKind::Header { partition_len }) => {
                    partition_len
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(StorageError::InvalidKey(format!(
                        "memtable key {}: {e}",
                        hex(&found)
                    ))));
                }
            };
            let prefix = found[..plen].to_vec();
            self.fill(&prefix);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PartitionHeader, Timestamp};
    use cql_lite::{DataType, Value};

    fn prefix(p: i32) -> Vec<u8> {
        let pk = key::serialize_partition_key(&[Value::Int(p)], &[DataType::Int]).unwrap();
        key::partition_prefix(&pk)
    }

    fn header(ts: u64) -> Entry {
        Entry::Header(PartitionHeader {
            deleted_at: Some(Timestamp(ts)),
            ranges: vec![],
        })
    }

    /// Headers and "rows" (headers stored at row keys would not decode as
    /// rows in the engine, but the memtable does not care) of three
    /// partitions.
    fn filled() -> (Arc<Memtable>, Vec<Vec<u8>>) {
        let mem = Arc::new(Memtable::new());
        let mut keys = Vec::new();
        for p in 0..3 {
            let pre = prefix(p);
            keys.push(key::header_key(&pre));
            for c in 0..3u8 {
                keys.push(key::row_key(&pre, &[c]));
            }
        }
        for k in &keys {
            mem.apply(k, header(1), 1).unwrap();
        }
        keys.sort();
        (mem, keys)
    }

    fn keys_of(range: PartitionwiseRange) -> Vec<Vec<u8>> {
        range.map(|r| r.unwrap().0).collect()
    }

    #[test]
    fn yields_the_same_keys_as_a_plain_walk_in_both_directions() {
        let (mem, keys) = filled();
        let locks = Arc::new(PartitionLocks::new());
        let all = PartitionwiseRange::new(
            mem.clone(),
            locks.clone(),
            Bound::Unbounded,
            Bound::Unbounded,
            false,
        );
        assert_eq!(keys_of(all), keys);
        let back = PartitionwiseRange::new(
            mem.clone(),
            locks.clone(),
            Bound::Unbounded,
            Bound::Unbounded,
            true,
        );
        let mut rev = keys.clone();
        rev.reverse();
        assert_eq!(keys_of(back), rev);
        // Bounds cutting through partitions.
        let (lo, hi) = (keys[2].clone(), keys[9].clone());
        let mid = PartitionwiseRange::new(
            mem.clone(),
            locks.clone(),
            Bound::Excluded(lo.clone()),
            Bound::Included(hi.clone()),
            false,
        );
        assert_eq!(keys_of(mid), keys[3..=9].to_vec());
        let mid_back =
            PartitionwiseRange::new(mem, locks, Bound::Excluded(lo), Bound::Included(hi), true);
        let mut expect = keys[3..=9].to_vec();
        expect.reverse();
        assert_eq!(keys_of(mid_back), expect);
    }

    #[test]
    fn a_partition_once_left_is_not_entered_again() {
        let (mem, keys) = filled();
        let locks = Arc::new(PartitionLocks::new());
        let mut it = PartitionwiseRange::new(
            mem.clone(),
            locks,
            Bound::Unbounded,
            Bound::Unbounded,
            false,
        );
        // The first partition is copied whole on the first call.
        assert_eq!(it.next().unwrap().unwrap().0, keys[0]);
        let first = key::classify(&keys[0]).unwrap().partition_len();
        let late = key::row_key(&keys[0][..first], &[9]);
        mem.apply(&late, header(2), 1).unwrap();
        let rest: Vec<Vec<u8>> = it.map(|r| r.unwrap().0).collect();
        assert_eq!(rest, keys[1..].to_vec());
    }

    #[test]
    fn a_stripe_held_exclusively_blocks_the_partition_read() {
        let (mem, _) = filled();
        let locks = Arc::new(PartitionLocks::new());
        let guards = locks.write_all([prefix(0).as_slice(), prefix(1).as_slice()]);
        assert!(!guards.is_empty());
        let it = PartitionwiseRange::new(
            mem,
            locks.clone(),
            Bound::Unbounded,
            Bound::Unbounded,
            false,
        );
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let n = it.count();
            let _ = tx.send(n);
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(rx.try_recv().is_err(), "the scan read a locked partition");
        drop(guards);
        assert_eq!(rx.recv().unwrap(), 12);
        reader.join().unwrap();
    }
}
