//! The row cache: whole partitions' merged state, kept in memory after a
//! read so the next read of a hot partition skips the memtables, the
//! SSTables and the merge.
//!
//! A read of a partition that is not cached merges every memtable and
//! SSTable that may hold it: a seek into each, block lookups, entry
//! decoding, version joins. Under a skewed workload (YCSB's zipfian keys,
//! or any real one with hot rows) most reads ask for the same few
//! partitions again and again, so the engine keeps the merged result: the
//! partition header and every row state, exactly what the sources would
//! give, dead rows and all. Liveness (deletions, TTL expiry) is decided at
//! each read from the cached states, as it is for stored ones.
//!
//! Only reads of a whole partition fill the cache, and only partitions
//! small enough (an eighth of a shard) are kept: a wide time-series
//! partition would evict everything else. Any slice of a cached partition
//! is then answered from it. While a shard has room, a partition is kept
//! at its first miss (keeping it evicts nothing). Once the shard is full,
//! a partition is admitted only at its second miss within a while (a
//! per-shard table of recently missed tokens, the "doorkeeper" of
//! TinyLFU): a key read once would only push out one that is read again,
//! and evicting costs CPU of its own (freeing a decoded partition touches
//! all of its cold memory; profiled at a third of a miss's cost in a YCSB
//! run whose keys outnumber the cache).
//!
//! ## Staying coherent with writes
//!
//! A write [`RowCache::begin_write`]s before its entries go into the
//! memtable and ends after: beginning takes the partition's entry out,
//! bumps its shard's epoch and counts the write as in flight until it
//! ends. A reader that misses takes a [`FillTicket`] before it reads the
//! sources; the ticket is void if a write to the shard was in flight, and
//! [`RowCache::fill`] keeps the result only if the shard's epoch has not
//! moved since. So a cached partition was read while no write to its shard
//! was under way and none started after: it is what the sources hold, and
//! a reader that already saw a newer state (from the memtable) never gets
//! an older one from the cache. Compaction, which may purge tombstones and
//! drop shadowed content, drops the partitions it purged something from
//! ([`RowCache::invalidate`]; all of them, [`RowCache::clear`], past a few
//! thousand); every other partition reads the same from the cache after it
//! as before (merging the tables changes nothing a join would not).
//!
//! A write keeps a hot partition cached ([`WriteGuard::applied`]): the
//! entry it took out, joined with the written entries, is what the sources
//! hold once they are in (the memtable joins them too, and the join is
//! associative and commutative), so it goes back in, provided no other
//! write to the shard began (or the cache was cleared) meanwhile and none
//! is still in flight. Otherwise the partition is simply read again.

use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use parking_lot::Mutex;

use super::sieve::{LookupCounters, Sieve};
use crate::model::key::{self, KeyKind};
use crate::model::{Entry, PartitionHeader, RowState};

/// Default size of a table's row cache (as the block cache's).
pub const DEFAULT_ROW_CACHE_BYTES: usize = 64 << 20;

/// Smallest per-shard capacity worth sharding for.
const MIN_SHARD_CAPACITY: usize = 1 << 20;
const MAX_SHARDS: usize = 16;
/// Fixed bookkeeping charged per cached partition and per row.
const ENTRY_OVERHEAD: usize = 128;
const ROW_OVERHEAD: usize = 48;

/// One cached partition: its merged header and every row state it holds,
/// in key order.
#[derive(Debug)]
pub struct CachedPartition {
    /// The partition's deletions.
    pub header: PartitionHeader,
    /// Full row keys and their merged states, ascending by key.
    pub rows: Vec<(Vec<u8>, RowState)>,
}

impl CachedPartition {
    /// This partition with `entries` (of its keys) joined in, or `None` if
    /// one does not join (a key and entry of different kinds).
    fn joined<'m>(&self, entries: impl Iterator<Item = (&'m [u8], &'m Entry)>) -> Option<Self> {
        let mut header = self.header.clone();
        let mut rows = self.rows.clone();
        for (k, entry) in entries {
            match (key::classify(k), entry) {
                (Ok(KeyKind::Header { .. }), Entry::Header(h)) => header = header.join(h),
                (Ok(KeyKind::Row { .. }), Entry::Row(state)) => {
                    match rows.binary_search_by(|(r, _)| r.as_slice().cmp(k)) {
                        Ok(i) => rows[i].1 = rows[i].1.join(state),
                        Err(i) => rows.insert(i, (k.to_vec(), state.clone())),
                    }
                }
                _ => return None,
            }
        }
        Some(CachedPartition { header, rows })
    }

    fn charge(&self, prefix: &[u8]) -> usize {
        ENTRY_OVERHEAD
            + prefix.len()
            + self.header.approximate_bytes()
            + self
                .rows
                .iter()
                .map(|(k, s)| ROW_OVERHEAD + k.len() + s.approximate_bytes())
                .sum::<usize>()
    }
}

/// Hasher for partition prefixes: they start with the partition's 64-bit
/// token (a SipHash of the key), already well spread, so a multiply-fold
/// of the bytes is enough.
#[derive(Default)]
struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
}

struct Shard {
    partitions: Sieve<Vec<u8>, Arc<CachedPartition>, BuildHasherDefault<PrefixHasher>>,
    /// Moves whenever a write to one of the shard's partitions starts, or
    /// the cache is cleared.
    epoch: u64,
    /// Writes to the shard's partitions that started and have not ended.
    writing: u32,
    /// Tokens of partitions whose fill was refused once, by slot.
    missed_once: Box<[u64]>,
}

/// Slots of a shard's doorkeeper table.
const DOORKEEPER_SLOTS: usize = 4096;

impl Shard {
    /// Whether `prefix` was refused once already (and may be admitted now);
    /// if not, remembers it.
    fn admit(&mut self, prefix: &[u8]) -> bool {
        let token = token_of(prefix);
        // Bits of the token the shard choice does not use; never 0, the
        // empty slot's value.
        let slot = (token >> 8) as usize % DOORKEEPER_SLOTS;
        let tag = token | 1;
        if self.missed_once[slot] == tag {
            return true;
        }
        self.missed_once[slot] = tag;
        false
    }
}

/// A partition prefix's token (its first 8 bytes; a prefix shorter than
/// a token is not a valid key and maps to 0).
fn token_of(prefix: &[u8]) -> u64 {
    let mut token = [0u8; 8];
    if let Some(bytes) = prefix.get(..8) {
        token.copy_from_slice(bytes);
    }
    u64::from_be_bytes(token)
}

/// What a reader that missed holds while it reads the sources: whether
/// (and at which epoch) its result may fill the cache.
#[derive(Debug, Clone, Copy)]
pub struct FillTicket {
    shard: usize,
    /// `None`: a write was in flight, the result may not be kept.
    epoch: Option<u64>,
}

/// Counters of a [`RowCache`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowCacheStats {
    /// Reads answered from the cache.
    pub hits: u64,
    /// Reads that were not.
    pub misses: u64,
    /// Partitions cached.
    pub partitions: usize,
    /// Bytes charged to them.
    pub bytes: usize,
}

/// A sharded cache of whole partitions, bounded in (estimated) bytes and
/// evicting by SIEVE (`super::sieve`).
pub struct RowCache {
    shards: Box<[Mutex<Shard>]>,
    /// Largest charge one partition may have.
    max_entry: usize,
    lookups: LookupCounters,
}

/// A write to some partitions in progress: [`WriteGuard::applied`] ends it
/// once its entries are in the memtable; dropping it otherwise (the write
/// failed) ends it too, without putting anything back.
pub struct WriteGuard<'a, 'k> {
    cache: &'a RowCache,
    partitions: Vec<Written<'k>>,
}

/// One partition a write changes.
struct Written<'k> {
    shard: usize,
    prefix: &'k [u8],
    /// The shard's epoch right after this write began.
    epoch: u64,
    /// The cached copy taken out when the write began.
    taken: Option<Arc<CachedPartition>>,
}

impl WriteGuard<'_, '_> {
    /// Ends the write after all of `mutations` (keys with the entries
    /// written, the partitions' prefixes as given to
    /// [`RowCache::begin_write`]) went into the memtable: each partition
    /// that was cached goes back with them joined in, when no other write
    /// to its shard overlapped this one.
    pub fn applied<'m>(
        mut self,
        mutations: impl IntoIterator<Item = (&'m [u8], &'m Entry)> + Clone,
    ) {
        for w in std::mem::take(&mut self.partitions) {
            let updated = w.taken.and_then(|p| {
                let mine = mutations.clone().into_iter().filter(|(k, _)| {
                    k.starts_with(w.prefix)
                        && key::classify(k).is_ok_and(|kind| kind.partition_len() == w.prefix.len())
                });
                p.joined(mine)
            });
            let charge = updated.as_ref().map(|p| p.charge(w.prefix));
            let mut shard = self.cache.shards[w.shard].lock();
            shard.writing -= 1;
            if let (Some(p), Some(charge)) = (updated, charge) {
                if shard.epoch == w.epoch && shard.writing == 0 && charge <= self.cache.max_entry {
                    shard
                        .partitions
                        .insert(w.prefix.to_vec(), Arc::new(p), charge);
                }
            }
        }
    }
}

impl Drop for WriteGuard<'_, '_> {
    fn drop(&mut self) {
        for w in &self.partitions {
            self.cache.shards[w.shard].lock().writing -= 1;
        }
    }
}

impl RowCache {
    /// A cache of at most `capacity_bytes`; 0 caches nothing.
    pub fn new(capacity_bytes: usize) -> RowCache {
        let shards = (capacity_bytes / MIN_SHARD_CAPACITY).clamp(1, MAX_SHARDS);
        let shards = 1usize << shards.ilog2();
        let per_shard = capacity_bytes / shards;
        RowCache {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        partitions: Sieve::new(per_shard),
                        epoch: 0,
                        writing: 0,
                        missed_once: vec![0; DOORKEEPER_SLOTS].into_boxed_slice(),
                    })
                })
                .collect(),
            max_entry: per_shard / 8,
            lookups: LookupCounters::default(),
        }
    }

    fn shard_of(&self, prefix: &[u8]) -> usize {
        // The token's top bits.
        (token_of(prefix) >> 40) as usize & (self.shards.len() - 1)
    }

    /// The cached partition `prefix`, counting a hit or a miss.
    pub fn get(&self, prefix: &[u8]) -> Option<Arc<CachedPartition>> {
        self.lookups.count(
            self.shards[self.shard_of(prefix)]
                .lock()
                .partitions
                .get(prefix),
        )
    }

    /// Whether partition `prefix` is cached (without touching its recency).
    pub fn contains(&self, prefix: &[u8]) -> bool {
        self.shards[self.shard_of(prefix)]
            .lock()
            .partitions
            .contains(prefix)
    }

    /// Taken by a reader that missed, before it reads the sources.
    pub fn fill_ticket(&self, prefix: &[u8]) -> FillTicket {
        let i = self.shard_of(prefix);
        let shard = self.shards[i].lock();
        FillTicket {
            shard: i,
            epoch: (shard.writing == 0).then_some(shard.epoch),
        }
    }

    /// Keeps `partition` (read from the sources after `ticket` was taken)
    /// unless a write to its shard started since, or one was in flight
    /// when the ticket was taken, or it is too large, or its shard is full
    /// and this is its first miss in a while (see the module
    /// documentation). Returns whether it was kept.
    pub fn fill(&self, prefix: &[u8], ticket: FillTicket, partition: CachedPartition) -> bool {
        let Some(epoch) = ticket.epoch else {
            return false;
        };
        let charge = partition.charge(prefix);
        if charge > self.max_entry {
            return false;
        }
        let mut shard = self.shards[ticket.shard].lock();
        if shard.epoch != epoch || shard.writing != 0 {
            return false;
        }
        // While the shard has room, keeping a partition evicts nothing, so
        // it is kept at its first miss; once full, only at its second.
        let has_room = shard.partitions.usage() + charge <= shard.partitions.capacity();
        if !has_room && !shard.admit(prefix) {
            return false;
        }
        shard
            .partitions
            .insert(prefix.to_vec(), Arc::new(partition), charge);
        true
    }

    /// Called before a write's entries go into the memtable, with the
    /// prefixes of the partitions it changes; the write ends when the
    /// guard is dropped (after the entries are in).
    pub fn begin_write<'a, 'k>(
        &'a self,
        prefixes: impl IntoIterator<Item = &'k [u8]>,
    ) -> WriteGuard<'a, 'k> {
        let mut partitions: Vec<Written<'k>> = Vec::new();
        for prefix in prefixes {
            if partitions.iter().any(|w| w.prefix == prefix) {
                continue;
            }
            let i = self.shard_of(prefix);
            let mut shard = self.shards[i].lock();
            shard.epoch += 1;
            shard.writing += 1;
            let taken = shard.partitions.take(prefix);
            partitions.push(Written {
                shard: i,
                prefix,
                epoch: shard.epoch,
                taken,
            });
        }
        WriteGuard {
            cache: self,
            partitions,
        }
    }

    /// Drops the cached partitions `prefixes` and voids every ticket taken
    /// so far for their shards (a reader that read the sources before may
    /// not put its older copy in after), as [`RowCache::clear`] does for
    /// all.
    pub fn invalidate<'k>(&self, prefixes: impl IntoIterator<Item = &'k [u8]>) {
        for prefix in prefixes {
            let mut shard = self.shards[self.shard_of(prefix)].lock();
            shard.epoch += 1;
            shard.partitions.remove(prefix);
        }
    }

    /// Drops every cached partition and voids every ticket taken so far.
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            shard.epoch += 1;
            shard.partitions.clear();
        }
    }

    /// Hits, misses and what is held.
    pub fn stats(&self) -> RowCacheStats {
        let (partitions, bytes) = self.shards.iter().fold((0, 0), |(n, b), s| {
            let s = s.lock();
            (n + s.partitions.len(), b + s.partitions.usage())
        });
        let (hits, misses) = self.lookups.get();
        RowCacheStats {
            hits,
            misses,
            partitions,
            bytes,
        }
    }
}

impl std::fmt::Debug for RowCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowCache")
            .field("shards", &self.shards.len())
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(token: u64) -> Vec<u8> {
        crate::model::key::partition_prefix(&token.to_be_bytes())
    }

    fn partition() -> CachedPartition {
        CachedPartition {
            header: PartitionHeader::default(),
            rows: Vec::new(),
        }
    }

    #[test]
    fn a_fill_is_kept_only_when_no_write_overlapped_the_read() {
        let cache = RowCache::new(1 << 20);
        let p = prefix(1);
        // Nothing in flight and room to spare: kept at the first miss,
        // then hit.
        let ticket = cache.fill_ticket(&p);
        assert!(cache.fill(&p, ticket, partition()));
        assert!(cache.get(&p).is_some());
        // A write starting removes it.
        let write = cache.begin_write([p.as_slice()]);
        assert!(cache.get(&p).is_none());
        // A ticket taken while the write is in flight is void, even after
        // the write ends.
        let during = cache.fill_ticket(&p);
        drop(write);
        assert!(!cache.fill(&p, during, partition()));
        // A ticket taken before a write started is void once it started,
        // even if it ended before the fill.
        let before = cache.fill_ticket(&p);
        drop(cache.begin_write([p.as_slice()]));
        assert!(!cache.fill(&p, before, partition()));
        // A clear voids tickets too.
        let before_clear = cache.fill_ticket(&p);
        cache.clear();
        assert!(!cache.fill(&p, before_clear, partition()));
        let after = cache.fill_ticket(&p);
        assert!(cache.fill(&p, after, partition()));
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.partitions), (1, 1, 1));
    }

    fn stamped(value: i64) -> RowState {
        let write = crate::model::RowWrite {
            ts: crate::model::Timestamp(value as u64 + 10),
            insert_marker: None,
            delete_row: false,
            cells: vec![(
                "a".into(),
                crate::model::CellValue::Live(cql_lite::Value::BigInt(value)),
                None,
            )],
        };
        RowState::default().stamp(crate::model::NodeId(1), None, &write)
    }

    #[test]
    fn a_write_puts_the_partition_back_with_its_entries_joined_in() {
        let cache = RowCache::new(1 << 20);
        let p = prefix(3);
        let (k1, k2) = (key::row_key(&p, b"b"), key::row_key(&p, b"a"));
        let first = stamped(1);
        let ticket = cache.fill_ticket(&p);
        assert!(cache.fill(
            &p,
            ticket,
            CachedPartition {
                header: PartitionHeader::default(),
                rows: vec![(k1.clone(), first.clone())],
            }
        ));
        // A write to the cached row and a new row before it.
        let (second, new_row) = (stamped(2), stamped(3));
        let entries = [
            (k1.clone(), Entry::Row(second.clone())),
            (k2.clone(), Entry::Row(new_row.clone())),
        ];
        let write = cache.begin_write([p.as_slice()]);
        assert!(!cache.contains(&p), "taken out while the write runs");
        write.applied(entries.iter().map(|(k, e)| (k.as_slice(), e)));
        let got = cache.get(&p).expect("put back");
        assert_eq!(
            got.rows,
            vec![(k2.clone(), new_row), (k1.clone(), first.join(&second))]
        );
        // Two overlapping writes: neither puts it back (the first cannot
        // know what the second wrote, the second found nothing cached).
        let a = cache.begin_write([p.as_slice()]);
        let b = cache.begin_write([p.as_slice()]);
        a.applied(entries.iter().map(|(k, e)| (k.as_slice(), e)));
        b.applied(entries.iter().map(|(k, e)| (k.as_slice(), e)));
        assert!(!cache.contains(&p));
        // Nor does a write whose entry does not match its key's kind.
        let ticket = cache.fill_ticket(&p);
        assert!(cache.fill(&p, ticket, partition()));
        let bad = [(k1.clone(), Entry::Header(PartitionHeader::default()))];
        let write = cache.begin_write([p.as_slice()]);
        write.applied(bad.iter().map(|(k, e)| (k.as_slice(), e)));
        assert!(!cache.contains(&p));
        // A failed write (guard dropped) leaves it out, and ends.
        let ticket = cache.fill_ticket(&p);
        assert!(cache.fill(&p, ticket, partition()));
        drop(cache.begin_write([p.as_slice()]));
        assert!(!cache.contains(&p));
        let ticket = cache.fill_ticket(&p);
        assert!(
            cache.fill(&p, ticket, partition()),
            "no write in flight any more"
        );
    }

    #[test]
    fn first_misses_are_kept_while_there_is_room_and_only_second_ones_after() {
        let cache = RowCache::new(4 << 10);
        // With room, every first miss is kept, until one would not fit.
        let mut kept = Vec::new();
        for token in 100u64.. {
            let p = prefix(token);
            let ticket = cache.fill_ticket(&p);
            if !cache.fill(&p, ticket, partition()) {
                break;
            }
            assert!(cache.contains(&p));
            kept.push(p);
        }
        assert!(kept.len() >= 4, "only {} partitions fit", kept.len());
        let full = cache.stats().partitions;
        assert_eq!(full, kept.len());
        // Full: a new partition's first miss is only remembered...
        let p = prefix(1);
        let ticket = cache.fill_ticket(&p);
        assert!(!cache.fill(&p, ticket, partition()));
        assert!(!cache.contains(&p));
        // ...and its second is kept, evicting the oldest entry not read again.
        let ticket = cache.fill_ticket(&p);
        assert!(cache.fill(&p, ticket, partition()));
        assert!(cache.contains(&p));
        assert!(!cache.contains(&kept[0]), "the oldest was evicted");
        assert_eq!(cache.stats().partitions, full);
    }

    #[test]
    fn partitions_too_large_for_a_shard_are_not_kept() {
        let cache = RowCache::new(64 << 10);
        let p = prefix(2);
        let big = CachedPartition {
            header: PartitionHeader::default(),
            rows: (0..200u32)
                .map(|i| (i.to_be_bytes().to_vec(), RowState::default()))
                .collect(),
        };
        let ticket = cache.fill_ticket(&p);
        assert!(!cache.fill(&p, ticket, big));
        assert!(!cache.contains(&p));
        let none = RowCache::new(0);
        let ticket = none.fill_ticket(&p);
        assert!(!none.fill(&p, ticket, partition()));
    }
}
