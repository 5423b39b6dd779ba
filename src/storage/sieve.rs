//! A map bounded by a byte charge that evicts by SIEVE: the shard that the
//! block cache ([`super::sstable::BlockCache`]) and the row cache
//! ([`super::row_cache::RowCache`]) are made of.
//!
//! SIEVE (Zhang et al., NSDI 2024) keeps entries in insertion order, newest
//! at the head, each with a "visited" bit. A hit only sets the bit: nothing
//! moves, so a hit touches one entry instead of relinking it and its
//! neighbours as an LRU list does. To make room, a hand walks from the
//! oldest entry towards the newest (wrapping around), clearing set bits and
//! evicting the first entry whose bit was clear; it stays where it stopped
//! for the next eviction. An entry read again since the hand last passed
//! survives, and entries inserted and never read again (one block of a
//! scan, one row read once) go first, so a burst of those does not flush
//! the entries being read again and again, as it would an LRU. On skewed
//! (zipfian) key choice its hit rate is at least an LRU's
//! (`docs/architecture.md` gives figures).
//!
//! Entries live in a slab (`Vec`) linked in insertion order, found through
//! a hash map of slab indexes. Not synchronized: the caches put each shard
//! under its own lock.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

const NIL: usize = usize::MAX;

struct Node<K, V> {
    key: K,
    value: Option<V>,
    charge: usize,
    visited: bool,
    /// Towards the head (newer).
    prev: usize,
    /// Towards the tail (older).
    next: usize,
}

/// A map holding entries whose charges sum to at most `capacity`, evicting
/// by SIEVE (see the module documentation).
pub struct Sieve<K, V, S> {
    map: HashMap<K, usize, S>,
    nodes: Vec<Node<K, V>>,
    free: Vec<usize>,
    /// Newest.
    head: usize,
    /// Oldest.
    tail: usize,
    /// Where the next eviction looks first (`NIL`: at the tail).
    hand: usize,
    usage: usize,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V: Clone, S: BuildHasher + Default> Sieve<K, V, S> {
    /// An empty map that holds at most `capacity` of charge.
    pub fn new(capacity: usize) -> Self {
        Sieve {
            map: HashMap::default(),
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            hand: NIL,
            usage: 0,
            capacity,
        }
    }

    /// The sum of the charges of the entries held.
    pub fn usage(&self) -> usize {
        self.usage
    }

    /// The most charge it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The value at `key`, which is marked visited (so the next pass of
    /// the hand keeps it).
    pub fn get<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = *self.map.get(key)?;
        let node = &mut self.nodes[i];
        node.visited = true;
        node.value.clone()
    }

    /// Whether `key` is held (it is not marked visited).
    pub fn contains<Q>(&self, key: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.contains_key(key)
    }

    /// Inserts (or replaces) `key` as the newest entry, not yet visited,
    /// evicting entries until it fits. An entry whose charge exceeds the
    /// whole capacity is not kept (and evicts nothing).
    pub fn insert(&mut self, key: K, value: V, charge: usize) {
        self.remove(&key);
        if charge > self.capacity {
            return;
        }
        while self.usage + charge > self.capacity && self.tail != NIL {
            self.evict_one();
        }
        let node = Node {
            key: key.clone(),
            value: Some(value),
            charge,
            visited: false,
            prev: NIL,
            next: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[i] = node;
                i
            }
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        };
        self.push_front(i);
        self.map.insert(key, i);
        self.usage += charge;
    }

    /// Removes `key` and returns its value, if it was there.
    pub fn take<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = *self.map.get(key)?;
        let value = self.nodes[i].value.take();
        self.remove_at(i);
        value
    }

    /// Removes `key`; returns whether it was there.
    pub fn remove<Q>(&mut self, key: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self.map.get(key) {
            Some(&i) => {
                self.remove_at(i);
                true
            }
            None => false,
        }
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.map.clear();
        self.nodes.clear();
        self.free.clear();
        self.head = NIL;
        self.tail = NIL;
        self.hand = NIL;
        self.usage = 0;
    }

    /// Evicts one entry: the first one from the hand towards the head
    /// (wrapping to the tail) that was not visited since the hand last
    /// passed, clearing the marks it passes. Needs a non-empty map.
    fn evict_one(&mut self) {
        let mut i = if self.hand == NIL {
            self.tail
        } else {
            self.hand
        };
        // Every pass clears the marks it crosses, so this ends within one
        // lap of the list plus one entry.
        while self.nodes[i].visited {
            self.nodes[i].visited = false;
            i = match self.nodes[i].prev {
                NIL => self.tail,
                prev => prev,
            };
        }
        self.hand = i;
        self.remove_at(i);
    }

    fn remove_at(&mut self, i: usize) {
        if self.hand == i {
            self.hand = self.nodes[i].prev;
        }
        self.unlink(i);
        let node = &mut self.nodes[i];
        node.value = None;
        self.usage -= node.charge;
        self.map.remove(&node.key);
        self.free.push(i);
    }

    fn unlink(&mut self, i: usize) {
        let (prev, next) = (self.nodes[i].prev, self.nodes[i].next);
        if prev == NIL {
            self.head = next;
        } else {
            self.nodes[prev].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.nodes[next].prev = prev;
        }
    }

    fn push_front(&mut self, i: usize) {
        self.nodes[i].prev = NIL;
        self.nodes[i].next = self.head;
        if self.head != NIL {
            self.nodes[self.head].prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }
}

/// Hits and misses of a cache's lookups, counted without a lock.
#[derive(Debug, Default)]
pub struct LookupCounters {
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
}

impl LookupCounters {
    /// Counts `found` as a hit or a miss and passes it on.
    pub fn count<T>(&self, found: Option<T>) -> Option<T> {
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        found
    }

    /// Hits and misses so far.
    pub fn get(&self) -> (u64, u64) {
        (
            self.hits.load(std::sync::atomic::Ordering::Relaxed),
            self.misses.load(std::sync::atomic::Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::hash_map::RandomState;

    #[derive(Debug, Clone)]
    enum Op {
        Get(u8),
        Insert(u8, usize),
        Remove(u8),
        Take(u8),
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<u8>().prop_map(|k| Op::Get(k % 24)),
            4 => (any::<u8>(), 0usize..40).prop_map(|(k, c)| Op::Insert(k % 24, c)),
            1 => any::<u8>().prop_map(|k| Op::Remove(k % 24)),
            1 => any::<u8>().prop_map(|k| Op::Take(k % 24)),
            1 => Just(Op::Clear),
        ]
    }

    /// The reference SIEVE: entries newest first, each with its mark, and
    /// the key the hand is at.
    #[derive(Default)]
    struct Model {
        /// (key, value, charge, visited), newest first.
        entries: Vec<(u8, u64, usize, bool)>,
        hand: Option<u8>,
    }

    impl Model {
        fn position(&self, k: u8) -> Option<usize> {
            self.entries.iter().position(|e| e.0 == k)
        }

        fn remove(&mut self, k: u8) -> Option<u64> {
            let i = self.position(k)?;
            if self.hand == Some(k) {
                self.hand = i.checked_sub(1).map(|p| self.entries[p].0);
            }
            Some(self.entries.remove(i).1)
        }

        fn usage(&self) -> usize {
            self.entries.iter().map(|e| e.2).sum()
        }

        fn evict(&mut self) {
            let last = self.entries.len() - 1;
            let mut i = self.hand.and_then(|k| self.position(k)).unwrap_or(last);
            while self.entries[i].3 {
                self.entries[i].3 = false;
                i = i.checked_sub(1).unwrap_or(last);
            }
            let k = self.entries[i].0;
            self.hand = Some(k);
            self.remove(k);
        }
    }

    proptest! {
        /// Against a model (a list newest first with marks and a hand):
        /// the same entries, the same evictions, the usage within capacity.
        #[test]
        fn behaves_as_the_reference_sieve(capacity in 0usize..120, ops in prop::collection::vec(op(), 0..200)) {
            let mut sieve: Sieve<u8, u64, RandomState> = Sieve::new(capacity);
            let mut model = Model::default();
            for (n, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Get(k) => {
                        let want = model.position(k).map(|i| {
                            model.entries[i].3 = true;
                            model.entries[i].1
                        });
                        prop_assert_eq!(sieve.get(&k), want);
                    }
                    Op::Insert(k, charge) => {
                        model.remove(k);
                        if charge <= capacity {
                            while model.usage() + charge > capacity {
                                model.evict();
                            }
                            model.entries.insert(0, (k, n as u64, charge, false));
                        }
                        sieve.insert(k, n as u64, charge);
                    }
                    Op::Remove(k) => {
                        prop_assert_eq!(sieve.remove(&k), model.remove(k).is_some());
                    }
                    Op::Take(k) => {
                        prop_assert_eq!(sieve.take(&k), model.remove(k));
                    }
                    Op::Clear => {
                        model = Model::default();
                        sieve.clear();
                    }
                }
                prop_assert_eq!(sieve.len(), model.entries.len());
                for k in 0..24u8 {
                    prop_assert_eq!(sieve.contains(&k), model.position(k).is_some());
                }
                prop_assert_eq!(sieve.usage(), model.usage());
                prop_assert!(sieve.usage() <= capacity);
            }
            for (k, v, _, _) in model.entries.clone() {
                prop_assert_eq!(sieve.get(&k), Some(v));
            }
        }

        /// An entry read again survives any number of entries inserted and
        /// never read, as long as it is read again before the hand comes
        /// back to it (an LRU would evict it after `capacity` inserts).
        #[test]
        fn entries_read_again_outlive_entries_read_once(capacity in 2usize..40, cold in 0usize..200) {
            let mut sieve: Sieve<u32, u32, RandomState> = Sieve::new(capacity);
            sieve.insert(u32::MAX, 0, 1);
            for i in 0..cold as u32 {
                prop_assert_eq!(sieve.get(&u32::MAX), Some(0), "after {} cold inserts", i);
                sieve.insert(i, i, 1);
                prop_assert!(sieve.len() <= capacity);
            }
            prop_assert!(sieve.contains(&u32::MAX));
        }
    }
}
