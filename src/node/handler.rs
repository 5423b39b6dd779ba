//! The node's peer handler: requests go to the replica side of the
//! coordinator (or, for schema pulls, to the schema); datagrams go to
//! gossip.

use crate::cluster::batchlog::BatchLog;
use crate::cluster::hints::HintStore;
use crate::cluster::membership::Membership;
use crate::coordinator::{ClusterStore, PeerRequest, PeerResponse, ReplicaHandler};
use crate::net::{BoxFuture, Handler};
use crate::query::LocalStore;
use crate::schema::SchemaStore;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

/// Serves peers: replica requests, schema pulls and gossip datagrams.
pub struct NodeHandler {
    replica: ReplicaHandler,
    schema: Arc<SchemaStore>,
    /// Set once gossip is started (it needs the transport this handler
    /// belongs to); datagrams before that are dropped, and gossip retries.
    membership: OnceLock<Membership>,
    /// Set once the coordinator exists, for ring questions and for repair
    /// hashing under its stream limit.
    coordinator: OnceLock<ClusterStore>,
}

impl NodeHandler {
    /// A handler over the node's data, hints, batch log and schema.
    pub fn new(
        local: Arc<LocalStore>,
        hints: Arc<HintStore>,
        batch_log: Arc<BatchLog>,
        schema: Arc<SchemaStore>,
    ) -> NodeHandler {
        NodeHandler {
            replica: ReplicaHandler::new(local, hints).with_batch_log(batch_log),
            schema,
            membership: OnceLock::new(),
            coordinator: OnceLock::new(),
        }
    }

    /// Connects gossip datagrams to the membership service.
    pub fn set_membership(&self, membership: Membership) {
        let _ = self.membership.set(membership);
    }

    /// Connects ring questions ([`PeerRequest::RingChanges`]) to the
    /// node's coordinator.
    pub fn set_coordinator(&self, coordinator: ClusterStore) {
        let _ = self.coordinator.set(coordinator);
    }
}

impl Handler<PeerRequest, PeerResponse> for NodeHandler {
    fn on_request(&self, _from: SocketAddr, req: PeerRequest) -> BoxFuture<'static, PeerResponse> {
        if let PeerRequest::GetSchema = req {
            let schema = self.schema.current();
            return Box::pin(async move { PeerResponse::Schema(Box::new((*schema).clone())) });
        }
        if let PeerRequest::RingChanges = req {
            let (joining, leaving) = self
                .coordinator
                .get()
                .map(ClusterStore::ring_changes)
                .unwrap_or_default();
            return Box::pin(async move { PeerResponse::RingChanges { joining, leaving } });
        }
        if let (PeerRequest::HashSpan { table, span }, Some(coordinator)) =
            (&req, self.coordinator.get())
        {
            // Repair hashing shares the node's stream limit, which the
            // coordinator holds.
            let (coordinator, table, span) = (coordinator.clone(), table.clone(), *span);
            return Box::pin(async move { coordinator.serve_hash_span(table, span).await });
        }
        let replica = self.replica.clone();
        Box::pin(async move { replica.serve(req).await })
    }

    fn on_datagram(&self, from: SocketAddr, payload: Bytes) {
        if let Some(m) = self.membership.get() {
            m.handle_datagram(from, payload);
        }
    }
}
