//! Liveness: which nodes the coordinator believes are up.
//!
//! The coordinator does not run failure detection itself. Membership
//! (gossip) implements [`Liveness`] and tells the coordinator when a node
//! comes back ([`super::ClusterStore::on_node_up`]) so its hints replay.

use crate::model::NodeId;
use parking_lot::RwLock;
use std::collections::BTreeSet;

/// What the coordinator asks about other nodes before sending them work.
pub trait Liveness: Send + Sync + 'static {
    /// Whether `node` is believed to be up.
    fn is_alive(&self, node: NodeId) -> bool;
}

/// A liveness view set by hand: every node is alive unless marked down.
/// For tests (mirroring the simulation's kill and revive) and for static
/// set-ups without gossip.
#[derive(Debug, Default)]
pub struct ManualLiveness {
    down: RwLock<BTreeSet<NodeId>>,
}

impl ManualLiveness {
    /// Every node alive.
    pub fn new() -> ManualLiveness {
        ManualLiveness::default()
    }

    /// Marks a node down.
    pub fn set_down(&self, node: NodeId) {
        self.down.write().insert(node);
    }

    /// Marks a node up.
    pub fn set_up(&self, node: NodeId) {
        self.down.write().remove(&node);
    }

    /// The nodes marked down.
    pub fn down(&self) -> Vec<NodeId> {
        self.down.read().iter().copied().collect()
    }
}

impl Liveness for ManualLiveness {
    fn is_alive(&self, node: NodeId) -> bool {
        !self.down.read().contains(&node)
    }
}
