//! What `ringdb admin` shows: the cluster as this node sees it.

use crate::cluster::membership::{status_table, Membership};
use crate::coordinator::ClusterStore;
use crate::server::AdminSource;

/// Answers `ringdb admin status` from gossip and the coordinator.
pub struct NodeAdmin {
    membership: Membership,
    cluster: ClusterStore,
}

impl NodeAdmin {
    /// An admin view over a running node.
    pub fn new(membership: Membership, cluster: ClusterStore) -> NodeAdmin {
        NodeAdmin {
            membership,
            cluster,
        }
    }
}

impl AdminSource for NodeAdmin {
    fn status(&self) -> String {
        let view = self.membership.view();
        let stats = self.cluster.stats();
        let hints = self.cluster.hints().stats();
        format!(
            "{}\nThis node: {:016x}\nHints: stored={} delivered={} expired={} pending_targets={}\nCoordinator: {:?}\n",
            status_table(&view),
            self.cluster.node_id().0,
            hints.stored,
            hints.delivered,
            hints.expired,
            self.cluster.hints().targets().len(),
            stats
        )
    }
}
