//! A raw QUIC peer for the node-to-node transport tests: a quinn client
//! holding a certificate of the cluster CA, so the tests can send a node
//! whatever bytes they like over an authenticated connection.

use ringdb::net::tls::{ClusterCa, NodeTls, PEER_SERVER_NAME};
use std::net::SocketAddr;

/// An ephemeral port on the loopback address.
pub fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Connects to the node at `to` as peer `name` with a certificate of `ca`.
/// The endpoint is returned too: the connection lives as long as it does.
pub async fn certified_raw_peer(
    ca: &ClusterCa,
    name: &str,
    to: SocketAddr,
) -> (quinn::Endpoint, quinn::Connection) {
    let tls = NodeTls::throwaway(ca, name).expect("cert");
    let endpoint = quinn::Endpoint::client(localhost()).expect("endpoint");
    let client = quinn::ClientConfig::new(tls.quic_client_crypto().expect("crypto"));
    let conn = endpoint
        .connect_with(client, to, PEER_SERVER_NAME)
        .expect("connect")
        .await
        .expect("handshake");
    (endpoint, conn)
}
