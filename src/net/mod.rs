//! The transport layer: how nodes talk to each other.
//!
//! `net` moves typed messages between nodes and knows nothing of what they
//! mean. The cluster layer defines its request, response and gossip types and
//! plugs them in through two traits:
//!
//! - [`Transport`] is what a node uses to talk: [`Transport::request`] sends
//!   one request and waits for its response within a timeout,
//!   [`Transport::send_datagram`] sends one unreliable datagram (gossip).
//! - [`Handler`] is what a node gives its transport at construction to answer
//!   incoming requests and receive incoming datagrams.
//!
//! Two implementations:
//!
//! - [`quic::QuicTransport`]: one QUIC endpoint (quinn) per node for all
//!   node-to-node traffic, mutual TLS under a cluster CA ([`tls`]), requests
//!   multiplexed on one long-lived stream per connection ([`mux`]),
//!   datagrams for gossip.
//! - [`sim::SimTransport`] on a [`sim::SimNetwork`]: in memory, seeded and
//!   deterministic on a paused tokio clock, with drop, delay, partitions and
//!   node kills, so whole clusters run inside one test.
//!
//! Both encode every message with the same codec ([`frame`]): a protocol
//! version, a request id, the remaining deadline and the sender's listen
//! address around a bincode body. Anything a peer sends that does not decode
//! is rejected with a typed [`NetError`], logged and counted in [`NetStats`];
//! it never panics the node.

pub mod budget;
pub mod error;
pub mod frame;
pub mod mux;
pub mod quic;
pub(crate) mod rpc;
pub mod sim;
pub mod stats;
pub mod tls;
pub mod udp;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The longest a closed QUIC endpoint waits for its connections to drain
/// (peers told of the close, late packets absorbed). quinn's `wait_idle`
/// waits for every connection's draining period, and a connection whose
/// driver stalls can keep it waiting for ever: a node that was asked to
/// stop (or that decommissioned, with clients still connected) hung there.
/// RFC 9000, section 10.2, lets an endpoint that closes its socket end the
/// draining early.
pub const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Waits until the connections of the closed `endpoint` have drained, at
/// most [`DRAIN_LIMIT`]; false when it gave up waiting.
pub async fn wait_drained(endpoint: &quinn::Endpoint) -> bool {
    let drained = tokio::time::timeout(DRAIN_LIMIT, endpoint.wait_idle())
        .await
        .is_ok();
    if !drained {
        tracing::debug!(
            open = endpoint.open_connections(),
            "QUIC connections still draining after the limit; closing anyway"
        );
    }
    drained
}

pub use error::NetError;
pub use frame::{Envelope, MAX_FRAME_SIZE, PROTOCOL_VERSION};
pub use quic::{PathStats, QuicConfig, QuicTransport};
pub use sim::{SimConfig, SimNetwork, SimTransport};
pub use stats::{NetStats, NetStatsSnapshot};
pub use tls::{CertError, ClusterCa, NodeCert, NodeTls};

/// A boxed, sendable future: what the object-safe traits of this module
/// return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A type that can travel in a request or a response: serde-serializable,
/// owned and sendable between tasks. Implemented for every such type.
pub trait Message: Serialize + DeserializeOwned + Send + 'static {}

impl<T: Serialize + DeserializeOwned + Send + 'static> Message for T {}

/// What a node does with the traffic that reaches it.
///
/// Given to a transport at construction. Both methods are called from the
/// transport's tasks, possibly concurrently.
pub trait Handler<Req, Resp>: Send + Sync + 'static {
    /// Answers one request from the node whose listen address is `from`.
    ///
    /// The returned future is dropped (cancelled) if the request's deadline
    /// passes before it completes; the requester then gets
    /// [`NetError::Timeout`]. Errors the application wants to report belong
    /// in `Resp`.
    fn on_request(&self, from: SocketAddr, req: Req) -> BoxFuture<'static, Resp>;

    /// Receives one datagram sent by the node whose listen address is `from`.
    /// Datagrams may be lost, duplicated or reordered.
    fn on_datagram(&self, from: SocketAddr, payload: Bytes);
}

/// How a node talks to other nodes. Object-safe: the cluster layer holds an
/// `Arc<dyn Transport<Req, Resp>>` and does not know whether it is QUIC or
/// the simulation.
///
/// Peers are named by their listen address (the address they advertise in
/// gossip). The futures are `'static`: they may be spawned.
pub trait Transport<Req: Message, Resp: Message>: Send + Sync + 'static {
    /// Sends `req` to `to` and waits at most `timeout` for its response.
    ///
    /// The remaining time travels with the request as its deadline: the peer
    /// gives up on it when the deadline passes. Errors: [`NetError::Timeout`]
    /// when no response came in time (including when the request or response
    /// was lost), [`NetError::Tls`] when the peer is not of this cluster,
    /// [`NetError::VersionMismatch`] when the peer speaks another protocol
    /// version, and the others of [`NetError`].
    fn request(
        &self,
        to: SocketAddr,
        req: Req,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Resp, NetError>>;

    /// Sends one unreliable datagram to `to`. `Ok` means it was handed to the
    /// network, not that it arrived. The payload must fit
    /// [`Transport::max_datagram_size`], or the result is
    /// [`NetError::TooLarge`].
    fn send_datagram(
        &self,
        to: SocketAddr,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<(), NetError>>;

    /// The largest datagram payload that can be sent to `to` now, or `None`
    /// when it is not known yet (QUIC: no connection to `to` yet). Gossip
    /// sizes its packets from this.
    fn max_datagram_size(&self, to: SocketAddr) -> Option<usize>;

    /// This node's listen address, as peers know it.
    fn local_addr(&self) -> SocketAddr;

    /// A snapshot of this transport's counters.
    fn stats(&self) -> NetStatsSnapshot;

    /// Stops the transport: closes connections (telling peers), stops
    /// accepting traffic. Later calls fail with [`NetError::Closed`].
    fn shutdown(&self) -> BoxFuture<'static, ()>;
}
