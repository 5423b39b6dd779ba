//! Dots and dot sets: the causal metadata of row versions.
//!
//! A [`Dot`] names one write: the node that stamped it and that node's
//! counter for the row. A [`DotSet`] is an exact set of dots, kept compact as
//! a version vector (every counter up to `n` for a node) plus a "cloud" of
//! dots above the vector that are not yet contiguous.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A node's identity in version vectors: chosen at random on first start
/// and kept in the data directory.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct NodeId(pub u64);

/// One write event: the stamping node and its per-row counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// The node that stamped the write.
    pub node: NodeId,
    /// The node's counter for this row, starting at 1.
    pub counter: u64,
}

/// The largest counter a causal context from outside the node may carry.
/// A counter counts the writes one stamping id made to one row (or, for a
/// write stamped with every replica down, is a clock reading in
/// milliseconds), so a real one stays far below this; a larger one could
/// only make the next stamp's counter overflow. Contexts above it are
/// refused where they are used to stamp.
pub const MAX_COUNTER: u64 = 1 << 62;

/// An exact set of dots: a version vector plus non-contiguous extra dots.
///
/// The representation is kept normal (no cloud dot is covered by or
/// adjacent to the vector), so structural equality is set equality.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DotSet {
    vector: BTreeMap<NodeId, u64>,
    cloud: BTreeSet<Dot>,
}

impl DotSet {
    /// The empty set.
    pub fn new() -> DotSet {
        DotSet::default()
    }

    /// True when no dot is in the set.
    pub fn is_empty(&self) -> bool {
        self.vector.is_empty() && self.cloud.is_empty()
    }

    /// Whether the set holds `dot`.
    pub fn contains(&self, dot: Dot) -> bool {
        self.vector
            .get(&dot.node)
            .is_some_and(|&n| dot.counter <= n)
            || self.cloud.contains(&dot)
    }

    /// Adds one dot.
    pub fn insert(&mut self, dot: Dot) {
        if dot.counter == 0 || self.contains(dot) {
            return;
        }
        self.cloud.insert(dot);
        self.normalize();
    }

    /// Adds every dot of `other`.
    pub fn union_with(&mut self, other: &DotSet) {
        for (&node, &n) in &other.vector {
            let entry = self.vector.entry(node).or_insert(0);
            *entry = (*entry).max(n);
        }
        self.cloud.extend(other.cloud.iter().copied());
        self.normalize();
    }

    /// Whether every dot of this set is in `other`.
    pub fn is_subset_of(&self, other: &DotSet) -> bool {
        // Normal form: a dot right above `other`'s vector entry would have
        // joined that entry, so `other` holds 1..=n of a node exactly when
        // its vector entry reaches n.
        self.vector
            .iter()
            .all(|(node, &n)| other.vector.get(node).is_some_and(|&m| m >= n))
            && self.cloud.iter().all(|&d| other.contains(d))
    }

    /// The largest counter of `node` in the set (0 if none).
    pub fn max_counter(&self, node: NodeId) -> u64 {
        let base = self.vector.get(&node).copied().unwrap_or(0);
        let cloud = self
            .cloud
            .range(
                Dot { node, counter: 0 }..=Dot {
                    node,
                    counter: u64::MAX,
                },
            )
            .next_back()
            .map(|d| d.counter)
            .unwrap_or(0);
        base.max(cloud)
    }

    /// The largest counter of any node in the set (0 when empty).
    pub fn largest_counter(&self) -> u64 {
        let vector = self.vector.values().copied().max().unwrap_or(0);
        let cloud = self.cloud.iter().map(|d| d.counter).max().unwrap_or(0);
        vector.max(cloud)
    }

    /// Number of entries in the representation (vector entries plus cloud
    /// dots): what the metadata costs.
    pub fn size(&self) -> usize {
        self.vector.len() + self.cloud.len()
    }

    /// Every dot's node and the contiguous counter: the version-vector view.
    pub fn vector(&self) -> &BTreeMap<NodeId, u64> {
        &self.vector
    }

    /// Dots above the vector that are not contiguous with it.
    pub fn cloud(&self) -> impl Iterator<Item = Dot> + '_ {
        self.cloud.iter().copied()
    }

    /// The set without every dot of the ids `drop_id` names (vector entry
    /// and cloud dots) and without the cloud dots `drop_cloud_dot` names:
    /// what pruning leaves (see `RowState::pruned_context`). Removing
    /// whole ids and cloud dots keeps the representation normal: no
    /// remaining cloud dot becomes adjacent to its vector entry.
    pub fn without(
        &self,
        drop_id: impl Fn(NodeId) -> bool,
        drop_cloud_dot: impl Fn(Dot) -> bool,
    ) -> DotSet {
        DotSet {
            vector: self
                .vector
                .iter()
                .filter(|(node, _)| !drop_id(**node))
                .map(|(node, n)| (*node, *n))
                .collect(),
            cloud: self
                .cloud
                .iter()
                .filter(|d| !drop_id(d.node) && !drop_cloud_dot(**d))
                .copied()
                .collect(),
        }
    }

    /// The ids with a dot in the set.
    pub fn nodes(&self) -> BTreeSet<NodeId> {
        self.vector
            .keys()
            .copied()
            .chain(self.cloud.iter().map(|d| d.node))
            .collect()
    }

    fn normalize(&mut self) {
        let cloud = std::mem::take(&mut self.cloud);
        for dot in cloud {
            let base = self.vector.get(&dot.node).copied().unwrap_or(0);
            if dot.counter <= base {
                continue;
            }
            if dot.counter == base + 1 {
                self.vector.insert(dot.node, dot.counter);
            } else {
                self.cloud.insert(dot);
            }
        }
        // The cloud is ordered by (node, counter): one pass above extends a
        // vector entry through consecutive dots of the same node, since a
        // node's dots come in increasing order.
    }
}

impl FromIterator<Dot> for DotSet {
    fn from_iter<I: IntoIterator<Item = Dot>>(iter: I) -> Self {
        let mut set = DotSet::new();
        set.cloud.extend(iter.into_iter().filter(|d| d.counter > 0));
        set.normalize();
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dots() -> impl Strategy<Value = Vec<Dot>> {
        proptest::collection::vec(
            (0u64..3, 1u64..8).prop_map(|(n, c)| Dot {
                node: NodeId(n),
                counter: c,
            }),
            0..12,
        )
    }

    proptest! {
        #[test]
        fn dot_set_is_an_exact_set(a in dots(), b in dots(), probe in dots()) {
            let model: BTreeSet<Dot> = a.iter().chain(b.iter()).copied().collect();
            let mut set: DotSet = a.iter().copied().collect();
            set.union_with(&b.iter().copied().collect());
            for d in probe.iter().chain(model.iter()) {
                prop_assert_eq!(set.contains(*d), model.contains(d));
            }
            let mut inserted = DotSet::new();
            for d in a.iter().chain(b.iter()) {
                inserted.insert(*d);
            }
            prop_assert_eq!(&inserted, &set);
            let a_set: DotSet = a.iter().copied().collect();
            let b_set: DotSet = b.iter().copied().collect();
            let a_model: BTreeSet<Dot> = a.iter().copied().collect();
            let b_model: BTreeSet<Dot> = b.iter().copied().collect();
            prop_assert_eq!(a_set.is_subset_of(&b_set), a_model.is_subset(&b_model));
            prop_assert_eq!(b_set.is_subset_of(&a_set), b_model.is_subset(&a_model));
            prop_assert!(a_set.is_subset_of(&set));
            let dropped = set.without(|n| n == NodeId(0), |d| d.counter % 3 == 0);
            let kept: BTreeSet<Dot> = model
                .iter()
                .filter(|d| d.node != NodeId(0) && (set.vector().get(&d.node).is_some_and(|&n| d.counter <= n) || d.counter % 3 != 0))
                .copied()
                .collect();
            let rebuilt: DotSet = kept.iter().copied().collect();
            prop_assert_eq!(&dropped, &rebuilt, "pruning keeps the normal form");
            for d in &model {
                prop_assert_eq!(dropped.contains(*d), kept.contains(d));
            }
            for n in 0..3 {
                let node = NodeId(n);
                let max = model.iter().filter(|d| d.node == node).map(|d| d.counter).max().unwrap_or(0);
                prop_assert_eq!(set.max_counter(node), max);
            }
        }
    }
}
