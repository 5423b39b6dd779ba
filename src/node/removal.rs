//! `ringdb admin removenode`: taking a node that is down for good out of
//! the ring, from another node, on its behalf (like `nodetool removenode`).
//!
//! A decommission needs the leaving node to run; a node whose machine is
//! gone cannot. The node asked to remove it does what a decommission would:
//!
//! 1. It checks the removal makes sense: the node is known, down, not this
//!    one, no other node is joining or leaving, and every other node of the
//!    ring is up (they are the sources of the removed node's data).
//! 2. It gossips the node as `leaving` on its behalf
//!    ([`Membership::publish_for`]) and waits until every up node confirms
//!    it knows (coordinators then copy each write to the nodes that gain a
//!    range, besides hinting the down one), then one write timeout. If
//!    another node started leaving meanwhile, it stops and gossips the
//!    node `normal` again: nodes leave one at a time (see
//!    `refuse_concurrent_leave`).
//! 3. It streams every range the node replicated to the nodes that gain
//!    it, merged from every other replica ([`ClusterStore::handover_stream`]).
//!    On failure the node is gossiped `normal` again, as it was; so it is
//!    if it comes back up meanwhile (it took writes the new replicas never
//!    saw), and the error says to decommission it instead.
//! 4. It gossips the node as `removed`. That status outranks anything the
//!    node itself may publish later: should it restart with its old data
//!    directory, every node keeps it out of the ring, tells it, and it
//!    stops (see [`super::Node::removed`]).
//!
//! Writes acknowledged by the removed node alone (consistency ONE or ANY)
//! and never copied elsewhere are lost with it, as are ranges it was the
//! only replica of (RF=1); the report counts the latter.

use super::{
    all_tables, refuse_concurrent_leave, wait_until_known, RingChange, BOOTSTRAP_ATTEMPTS,
};
use crate::cluster::membership::{Membership, NodeStatus};
use crate::coordinator::messages::{PeerRequest, PeerResponse};
use crate::coordinator::{ClusterStore, StreamReport};
use crate::model::NodeId;
use crate::net::Transport;
use crate::schema::SchemaStore;
use std::sync::Arc;
use std::time::Duration;

/// What a node needs to remove another one.
pub(crate) struct RemoveNode {
    pub(crate) membership: Membership,
    pub(crate) cluster: ClusterStore,
    pub(crate) schema: Arc<SchemaStore>,
    pub(crate) transport: Arc<dyn Transport<PeerRequest, PeerResponse>>,
    pub(crate) write_timeout: Duration,
    /// Set while a removal runs: one at a time.
    pub(crate) running: parking_lot::Mutex<bool>,
}

impl RemoveNode {
    /// Removes `target` from the ring (see the module docs); the text says
    /// what was streamed, the error why the removal was refused or failed.
    pub(crate) async fn run(&self, target: NodeId) -> Result<String, String> {
        {
            let mut running = self.running.lock();
            if *running {
                return Err("a removenode already runs on this node".into());
            }
            *running = true;
        }
        let result = self.remove(target).await;
        *self.running.lock() = false;
        result
    }

    /// Why `target` cannot be removed now, if it cannot; else its status.
    fn check(&self, target: NodeId) -> Result<NodeStatus, String> {
        let me = self.cluster.node_id();
        if target == me {
            return Err(format!(
                "node {:016x} is this node: to take a running node out of the ring, run \
                 `ringdb admin decommission` on it",
                target.0
            ));
        }
        let view = self.membership.view();
        let Some(member) = view.get(target) else {
            return Err(format!(
                "no node with host id {:016x} in this cluster (see the Host ID column of \
                 `ringdb admin status`)",
                target.0
            ));
        };
        let Some(meta) = member.metadata.as_ref() else {
            return Err(format!(
                "what node {:016x} gossiped is not known yet: try again in a few seconds",
                target.0
            ));
        };
        match meta.status {
            NodeStatus::Removed => {
                return Err(format!("node {:016x} is already removed", target.0))
            }
            NodeStatus::Left => {
                return Err(format!(
                    "node {:016x} has left the ring (decommissioned): nothing to remove",
                    target.0
                ))
            }
            _ => {}
        }
        if member.liveness.is_up() {
            return Err(format!(
                "node {:016x} ({}) is up: removenode is for a node that is down for good; \
                 run `ringdb admin decommission` on it instead, or stop it first",
                target.0, meta.addr
            ));
        }
        let busy: Vec<String> = view
            .joining_nodes()
            .into_iter()
            .map(|n| n.id)
            .chain(view.leaving_nodes())
            .filter(|n| *n != target)
            .map(|n| format!("{:016x}", n.0))
            .collect();
        if !busy.is_empty() {
            return Err(format!(
                "node(s) {} are joining or leaving: one ring change at a time, try again once \
                 they are done",
                busy.join(", ")
            ));
        }
        let down: Vec<String> = view
            .ring_nodes()
            .into_iter()
            .filter(|n| n.id != target && n.id != me && !self.membership.is_up(n.id))
            .map(|n| format!("{:016x}", n.id.0))
            .collect();
        if !down.is_empty() {
            return Err(format!(
                "node(s) {} are down too: the removed node's ranges are copied from their \
                 other replicas, so every other node of the ring must be up",
                down.join(", ")
            ));
        }
        Ok(meta.status)
    }

    async fn remove(&self, target: NodeId) -> Result<String, String> {
        let started = std::time::Instant::now();
        let status = self.check(target)?;
        let report = if status == NodeStatus::Joining {
            // It never owned a token: there is nothing to hand over.
            StreamReport::default()
        } else {
            self.hand_over(target).await?
        };
        if self.membership.is_up(target) {
            return Err(self.came_back(target));
        }
        self.membership
            .publish_for(target, |m| m.status = NodeStatus::Removed)
            .map_err(|e| e.to_string())?;
        tracing::info!(
            node = target.0,
            partitions = report.partitions,
            spans_lost = report.spans_lost,
            "removed a down node from the ring"
        );
        let mut text = format!(
            "removed node {:016x}: {} partition(s) of {} table(s) copied to the nodes that took \
             its ranges over, in {} span(s), in {} ms\n",
            target.0,
            report.partitions,
            report.tables,
            report.spans,
            started.elapsed().as_millis()
        );
        if report.spans_lost > 0 {
            text.push_str(&format!(
                "warning: {} span(s) had no replica but the removed node (keyspaces with \
                 replication factor 1): what they held is lost\n",
                report.spans_lost
            ));
        }
        Ok(text)
    }

    /// The node came back up while its ranges were copied: it takes writes
    /// as a replica again, some of which the nodes that received its ranges
    /// never saw. Removing it now could hide them from quorum reads, so it
    /// stays (gossiped normal: a restart gossips that anyway, and a healed
    /// partition may not have yet), and can be decommissioned. The error
    /// says so.
    fn came_back(&self, target: NodeId) -> String {
        let _ = self
            .membership
            .publish_for(target, |m| m.status = NodeStatus::Normal);
        format!(
            "node {:016x} came back up while its ranges were copied: it stays in the ring \
             (run `ringdb admin decommission` on it to take it out)",
            target.0
        )
    }

    /// Resolves once gossip sees `target` up.
    async fn until_up(&self, target: NodeId) {
        let mut view = self.membership.watch();
        // Only an error if the membership service stopped: then never.
        if view.wait_for(|v| v.is_up(target)).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Gossips `target` leaving, waits until every node knows, and streams
    /// its ranges to the nodes that gain them; on failure gossips it
    /// `normal` again.
    async fn hand_over(&self, target: NodeId) -> Result<StreamReport, String> {
        self.membership
            .publish_for(target, |m| m.status = NodeStatus::Leaving)
            .map_err(|e| e.to_string())?;
        tracing::info!(
            node = target.0,
            "removenode: the down node is leaving; streaming its ranges to their new replicas"
        );
        // This node's own coordinator learns through its gossip task.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !self.cluster.ring_changes().1.contains(&target)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        wait_until_known(
            &self.membership,
            &self.cluster,
            &self.transport,
            RingChange::Leaving(target),
            self.write_timeout,
        )
        .await;
        if let Err(refused) = refuse_concurrent_leave(&self.membership, target, true) {
            let _ = self
                .membership
                .publish_for(target, |m| m.status = NodeStatus::Normal);
            return Err(refused);
        }
        tracing::info!(
            node = target.0,
            "removenode stream starts: no other node is leaving"
        );
        let mut last_error = String::new();
        for attempt in 1..=BOOTSTRAP_ATTEMPTS {
            if self.membership.is_up(target) {
                return Err(self.came_back(target));
            }
            let current = self.cluster.ring();
            let future = current.remove_node(target).map_err(|e| e.to_string())?;
            let tables = all_tables(&self.schema);
            // Should it come back up, the copy stops there (a copy cut
            // short is harmless: what landed is data the gainers may hold).
            let streamed = tokio::select! {
                streamed = self.cluster.handover_stream(target, &future, &tables) => streamed,
                () = self.until_up(target) => return Err(self.came_back(target)),
            };
            match streamed {
                Ok(report) => return Ok(report),
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "removenode stream failed; trying again");
                    last_error = e.to_string();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        // It still owns its ranges: as it was before.
        let _ = self
            .membership
            .publish_for(target, |m| m.status = NodeStatus::Normal);
        Err(format!(
            "copying the ranges of node {:016x} failed (it stays in the ring): {last_error}",
            target.0
        ))
    }
}
