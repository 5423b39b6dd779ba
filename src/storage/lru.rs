//! A least-recently-used map bounded by a byte charge: the shard that the
//! block cache ([`super::sstable::BlockCache`]) and the row cache
//! ([`super::row_cache::RowCache`]) are made of.
//!
//! Entries live in a slab (`Vec`) linked in recency order, found through a
//! hash map of slab indexes, so a hit, an insert and an eviction are each a
//! few pointer updates. Not synchronized: the caches put each shard under
//! its own lock.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

const NIL: usize = usize::MAX;

struct Node<K, V> {
    key: K,
    value: Option<V>,
    charge: usize,
    prev: usize,
    next: usize,
}

/// An LRU map holding entries whose charges sum to at most `capacity`.
pub struct Lru<K, V, S> {
    map: HashMap<K, usize, S>,
    nodes: Vec<Node<K, V>>,
    free: Vec<usize>,
    /// Most recently used.
    head: usize,
    /// Least recently used.
    tail: usize,
    usage: usize,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V: Clone, S: BuildHasher + Default> Lru<K, V, S> {
    /// An empty map that holds at most `capacity` of charge.
    pub fn new(capacity: usize) -> Self {
        Lru {
            map: HashMap::default(),
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
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

    /// The value at `key`, which becomes the most recently used entry.
    pub fn get<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = *self.map.get(key)?;
        self.unlink(i);
        self.push_front(i);
        self.nodes[i].value.clone()
    }

    /// Whether `key` is held (its recency is left alone).
    pub fn contains<Q>(&self, key: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.contains_key(key)
    }

    /// Inserts (or replaces) `key` as the most recently used entry, evicting
    /// the least recently used ones until it fits. An entry whose charge
    /// exceeds the whole capacity is not kept (and evicts nothing).
    pub fn insert(&mut self, key: K, value: V, charge: usize) {
        self.remove(&key);
        if charge > self.capacity {
            return;
        }
        while self.usage + charge > self.capacity && self.tail != NIL {
            self.remove_at(self.tail);
        }
        let node = Node {
            key: key.clone(),
            value: Some(value),
            charge,
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
        self.usage = 0;
    }

    fn remove_at(&mut self, i: usize) {
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

    proptest! {
        /// Against a model (a list in recency order, most recent first):
        /// the same entries, the same evictions, the usage within capacity.
        #[test]
        fn behaves_as_a_recency_list(capacity in 0usize..120, ops in prop::collection::vec(op(), 0..200)) {
            let mut lru: Lru<u8, u64, RandomState> = Lru::new(capacity);
            // (key, value, charge), most recently used first.
            let mut model: Vec<(u8, u64, usize)> = Vec::new();
            for (n, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Get(k) => {
                        let want = model.iter().position(|e| e.0 == k).map(|i| {
                            let e = model.remove(i);
                            model.insert(0, e);
                            e.1
                        });
                        prop_assert_eq!(lru.get(&k), want);
                    }
                    Op::Insert(k, charge) => {
                        model.retain(|e| e.0 != k);
                        if charge <= capacity {
                            while model.iter().map(|e| e.2).sum::<usize>() + charge > capacity {
                                model.pop();
                            }
                            model.insert(0, (k, n as u64, charge));
                        }
                        lru.insert(k, n as u64, charge);
                    }
                    Op::Remove(k) => {
                        let had = model.iter().any(|e| e.0 == k);
                        model.retain(|e| e.0 != k);
                        prop_assert_eq!(lru.remove(&k), had);
                    }
                    Op::Take(k) => {
                        let want = model.iter().find(|e| e.0 == k).map(|e| e.1);
                        model.retain(|e| e.0 != k);
                        prop_assert_eq!(lru.take(&k), want);
                    }
                    Op::Clear => {
                        model.clear();
                        lru.clear();
                    }
                }
                prop_assert_eq!(lru.len(), model.len());
                for k in 0..24u8 {
                    prop_assert_eq!(lru.contains(&k), model.iter().any(|e| e.0 == k));
                }
                prop_assert_eq!(lru.usage(), model.iter().map(|e| e.2).sum::<usize>());
                prop_assert!(lru.usage() <= capacity);
            }
            for (k, v, _) in model.clone() {
                prop_assert_eq!(lru.get(&k), Some(v));
            }
        }
    }
}
