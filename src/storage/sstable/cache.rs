//! A sharded cache of decoded, verified data blocks, bounded in bytes and
//! evicting by SIEVE (`crate::storage::sieve`).

use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use parking_lot::Mutex;

use super::block::Block;
use crate::storage::sieve::{LookupCounters, Sieve};

/// Cache key: (file id of an open [`SsTable`](super::SsTable), block offset).
type Key = (u64, u64);

/// Fixed per-entry bookkeeping charged on top of the block bytes.
const ENTRY_OVERHEAD: usize = 96;
/// Smallest per-shard capacity worth sharding for.
const MIN_SHARD_CAPACITY: usize = 1 << 20;
const MAX_SHARDS: usize = 16;

#[inline]
fn mix(a: u64, b: u64) -> u64 {
    let h = (a ^ b.rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^ (h >> 29)
}

/// Hasher for the `(u64, u64)` keys: the keys are already well spread
/// integers, so SipHash would only cost time.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = mix(self.0, u64::from(b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = mix(self.0, v);
    }
}

type Shard = Sieve<Key, Arc<Block>, BuildHasherDefault<KeyHasher>>;

/// Shared cache of decoded, checksum-verified data blocks, keyed by
/// (open file id, block offset) and bounded in bytes.
///
/// One cache is meant to be shared by all SSTables of a node (pass the same
/// `Arc` to every [`SsTable::open`](super::SsTable::open)). It is split into
/// shards, each under its own lock, so concurrent readers rarely contend.
/// Each opened table gets a fresh id, so blocks of a closed or replaced file
/// are never served again; they are evicted as the entries not read again.
pub struct BlockCache {
    shards: Box<[Mutex<Shard>]>,
    capacity: usize,
    lookups: LookupCounters,
}

/// What a [`BlockCache`] holds and how often it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlockCacheStats {
    /// Configured capacity in bytes.
    pub capacity: usize,
    /// Bytes charged to cached blocks.
    pub usage: usize,
    /// Lookups that found their block.
    pub hits: u64,
    /// Lookups that did not (the block was then read from its file).
    pub misses: u64,
}

impl BlockCache {
    /// A cache holding at most `capacity_bytes` of blocks (plus a small
    /// per-entry overhead). A capacity of 0 caches nothing.
    pub fn new(capacity_bytes: usize) -> Arc<Self> {
        let shards = (capacity_bytes / MIN_SHARD_CAPACITY).clamp(1, MAX_SHARDS);
        let shards = 1usize << shards.ilog2();
        let per_shard = capacity_bytes / shards;
        Arc::new(BlockCache {
            shards: (0..shards)
                .map(|_| Mutex::new(Shard::new(per_shard)))
                .collect(),
            capacity: capacity_bytes,
            lookups: LookupCounters::default(),
        })
    }

    /// Capacity, usage and the lookups answered and missed since creation.
    pub fn stats(&self) -> BlockCacheStats {
        let (hits, misses) = self.lookups.get();
        BlockCacheStats {
            capacity: self.capacity,
            usage: self.usage(),
            hits,
            misses,
        }
    }

    /// The configured capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes currently charged to cached blocks.
    pub fn usage(&self) -> usize {
        self.shards.iter().map(|s| s.lock().usage()).sum()
    }

    #[inline]
    fn shard(&self, key: &Key) -> &Mutex<Shard> {
        let h = mix(key.0, key.1);
        &self.shards[(h >> 32) as usize & (self.shards.len() - 1)]
    }

    pub(crate) fn get(&self, file_id: u64, offset: u64) -> Option<Arc<Block>> {
        let key = (file_id, offset);
        self.lookups.count(self.shard(&key).lock().get(&key))
    }

    /// Drops the block if it is cached.
    pub(crate) fn remove(&self, file_id: u64, offset: u64) {
        let key = (file_id, offset);
        self.shard(&key).lock().remove(&key);
    }

    pub(crate) fn insert(&self, file_id: u64, offset: u64, block: Arc<Block>) {
        let key = (file_id, offset);
        let charge = block.size() + ENTRY_OVERHEAD;
        self.shard(&key).lock().insert(key, block, charge);
    }
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache")
            .field("capacity", &self.capacity)
            .field("usage", &self.usage())
            .field("shards", &self.shards.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::super::block::BlockBuilder;
    use super::*;

    fn block(size: usize) -> Arc<Block> {
        let mut b = BlockBuilder::default();
        b.add(b"k", &vec![0u8; size]);
        let mut out = Vec::new();
        b.finish_into(&mut out);
        Arc::new(Block::decode(out, None, b"k").unwrap())
    }

    #[test]
    fn evicts_entries_not_read_again_within_capacity() {
        let one = block(1000).size() + ENTRY_OVERHEAD;
        let cache = BlockCache::new(3 * one);
        assert_eq!(cache.shards.len(), 1);
        cache.insert(1, 0, block(1000));
        cache.insert(1, 1, block(1000));
        cache.insert(1, 2, block(1000));
        assert_eq!(cache.usage(), 3 * one);
        // Read 0 again so 1 is the oldest entry not read again.
        assert!(cache.get(1, 0).is_some());
        cache.insert(1, 3, block(1000));
        assert!(cache.usage() <= cache.capacity());
        assert!(cache.get(1, 1).is_none());
        assert!(cache.get(1, 0).is_some());
        assert!(cache.get(1, 2).is_some());
        assert!(cache.get(1, 3).is_some());
        assert!(cache.get(2, 0).is_none());
        // Every lookup above counted: 4 found their block, 2 did not.
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses), (4, 2));
        assert_eq!((stats.usage, stats.capacity), (3 * one, 3 * one));
        // Replacing an entry does not double-charge it.
        cache.insert(1, 3, block(1000));
        assert_eq!(cache.usage(), 3 * one);
        // Too big for the cache: not cached, nothing evicted.
        cache.insert(9, 9, block(10 * one));
        assert!(cache.get(9, 9).is_none());
        assert_eq!(cache.usage(), 3 * one);
    }

    #[test]
    fn zero_capacity_caches_nothing_and_large_caches_shard() {
        let cache = BlockCache::new(0);
        cache.insert(1, 0, block(10));
        assert!(cache.get(1, 0).is_none());
        assert_eq!(cache.usage(), 0);
        let big = BlockCache::new(64 << 20);
        assert_eq!(big.shards.len(), MAX_SHARDS);
        for i in 0..1000 {
            big.insert(7, i, block(100));
        }
        for i in 0..1000 {
            assert!(big.get(7, i).is_some());
        }
    }
}
