//! What `ringdb admin` shows: the cluster as this node sees it.

use super::Decommission;
use crate::cluster::membership::{status_table, Membership};
use crate::coordinator::{BatchCoordinator, ClusterStore};
use crate::query::api::BoxFuture;
use crate::server::AdminSource;
use std::sync::Arc;

/// Answers `ringdb admin status` from gossip and the coordinator.
pub struct NodeAdmin {
    membership: Membership,
    cluster: ClusterStore,
    batches: BatchCoordinator,
    decommission: Arc<Decommission>,
}

impl NodeAdmin {
    /// An admin view over a running node.
    pub(crate) fn new(
        membership: Membership,
        cluster: ClusterStore,
        batches: BatchCoordinator,
        decommission: Arc<Decommission>,
    ) -> NodeAdmin {
        NodeAdmin {
            membership,
            cluster,
            batches,
            decommission,
        }
    }
}

impl AdminSource for NodeAdmin {
    fn status(&self) -> String {
        let view = self.membership.view();
        let stats = self.cluster.stats();
        let hints = self.cluster.hints().stats();
        let batches = self.batches.stats();
        format!(
            "{}\nThis node: {:016x}\nHints: stored={} delivered={} expired={} discarded={} pending_targets={}\nBatch log: held={} logged={} log_failures={} replayed_entries={} replayed_partitions={} discarded_partitions={}\nCoordinator: {:?}\n{}",
            status_table(&view),
            self.cluster.node_id().0,
            hints.stored,
            hints.delivered,
            hints.expired,
            hints.discarded,
            self.cluster.hints().targets().len(),
            self.batches.batch_log().len(),
            batches.logged,
            batches.log_failures,
            batches.replayed_entries,
            batches.replayed_partitions,
            batches.discarded_partitions,
            stats,
            self.cluster.local().storage_stats()
        )
    }

    fn decommission(&self) -> BoxFuture<'static, Result<String, String>> {
        let decommission = self.decommission.clone();
        Box::pin(async move { decommission.run().await })
    }

    fn flush(&self) -> BoxFuture<'static, Result<String, String>> {
        let local = self.cluster.local().clone();
        Box::pin(async move {
            let started = std::time::Instant::now();
            match local.flush_tables().await {
                Ok(summary) => Ok(format!(
                    "{summary} in {} ms\n",
                    started.elapsed().as_millis()
                )),
                Err(e) => Err(format!("flush failed: {e}")),
            }
        })
    }
}
