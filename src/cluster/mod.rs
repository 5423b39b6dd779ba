//! The cluster layer: how nodes share the data.
//!
//! - [`ring`]: the token ring. Tokens are SipHash of the serialized
//!   partition key; each node owns a few tokens (vnodes); a partition's
//!   replicas are the distinct nodes met walking the ring clockwise from its
//!   token, one per rack first where racks are set. Ownership changes only
//!   by explicit operations (bootstrap, decommission, removenode); liveness
//!   is not the ring's business.
//! - [`anti_entropy`]: how replicas compare what they hold of a token
//!   range by hashes of its slices, so repair streams only what differs.
//! - [`batchlog`]: the durable batch log, logged batches held for
//!   coordinators until they are applied (replayed by the coordinator
//!   layer when one is left behind).
//! - [`hints`]: durable hints, writes held for a replica that was down,
//!   replayed when it is back and dropped (counted) past the hint window.
//! - [`membership`]: who is in the cluster and who is up (SWIM via foca over
//!   the transport's datagrams), and every node's metadata (tokens, status,
//!   schema version, load) gossiped to all.

pub mod anti_entropy;
pub mod batchlog;
pub mod hints;
pub mod membership;
pub mod ring;

pub use membership::{
    status_table, ClusterView, GossipSender, Liveness, Member, Membership, MembershipConfig,
    MembershipError, MembershipEvent, NodeMetadata, NodeStatus, PeerId,
};
pub use ring::{pick_tokens, NodeInfo, Ring, RingError, TokenRange, DEFAULT_VNODES};

#[cfg(test)]
mod ring_tests;
