//! [`GossipSender`]: the little of the transport that membership needs.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

use crate::net::{Message, QuicTransport, SimTransport, Transport};

/// Sends gossip datagrams. Implemented for the node transports
/// ([`SimTransport`], [`QuicTransport`], `Arc<dyn Transport>`); a test can
/// implement it to watch or tamper with gossip.
pub trait GossipSender: Send + Sync + 'static {
    /// Sends one datagram to `to`, without waiting; losses are not
    /// reported (gossip tolerates them).
    fn send(&self, to: SocketAddr, payload: Bytes);

    /// The largest datagram payload that can be sent to `to` now, or
    /// `None` when not known yet.
    fn max_datagram_size(&self, to: SocketAddr) -> Option<usize>;

    /// This node's listen address, as peers know it.
    fn local_addr(&self) -> SocketAddr;
}

/// Sends through `transport` on a task of its own (a QUIC send may have to
/// dial first).
fn spawn_send<Req: Message, Resp: Message>(
    transport: &(impl Transport<Req, Resp> + ?Sized),
    to: SocketAddr,
    payload: Bytes,
) {
    let sending = transport.send_datagram(to, payload);
    tokio::spawn(async move {
        if let Err(err) = sending.await {
            tracing::trace!(%to, %err, "gossip datagram not sent");
        }
    });
}

impl<Req: Message, Resp: Message> GossipSender for SimTransport<Req, Resp> {
    fn send(&self, to: SocketAddr, payload: Bytes) {
        spawn_send(self, to, payload);
    }

    fn max_datagram_size(&self, to: SocketAddr) -> Option<usize> {
        Transport::max_datagram_size(self, to)
    }

    fn local_addr(&self) -> SocketAddr {
        Transport::local_addr(self)
    }
}

impl<Req: Message, Resp: Message> GossipSender for QuicTransport<Req, Resp> {
    fn send(&self, to: SocketAddr, payload: Bytes) {
        spawn_send(self, to, payload);
    }

    fn max_datagram_size(&self, to: SocketAddr) -> Option<usize> {
        Transport::max_datagram_size(self, to)
    }

    fn local_addr(&self) -> SocketAddr {
        Transport::local_addr(self)
    }
}

impl<Req: Message, Resp: Message> GossipSender for Arc<dyn Transport<Req, Resp>> {
    fn send(&self, to: SocketAddr, payload: Bytes) {
        spawn_send(&**self, to, payload);
    }

    fn max_datagram_size(&self, to: SocketAddr) -> Option<usize> {
        (**self).max_datagram_size(to)
    }

    fn local_addr(&self) -> SocketAddr {
        (**self).local_addr()
    }
}
