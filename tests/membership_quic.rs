//! Membership over real QUIC on 127.0.0.1: three nodes of one cluster CA
//! converge; a node with a certificate from another CA never becomes a
//! member anywhere.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use ringdb::cluster::membership::{
    generation_now, Liveness, Membership, MembershipConfig, NodeMetadata,
};
use ringdb::model::NodeId;
use ringdb::net::{BoxFuture, ClusterCa, Handler, NodeTls, QuicConfig, QuicTransport, Transport};

#[derive(Default)]
struct GossipHandler {
    membership: OnceLock<Membership>,
}

impl Handler<(), ()> for GossipHandler {
    fn on_request(&self, _from: SocketAddr, _req: ()) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }

    fn on_datagram(&self, from: SocketAddr, payload: Bytes) {
        if let Some(m) = self.membership.get() {
            m.handle_datagram(from, payload);
        }
    }
}

/// Fast settings: this test waits in real time.
fn config(seeds: Vec<SocketAddr>) -> MembershipConfig {
    MembershipConfig {
        probe_period: Duration::from_millis(300),
        probe_rtt: Duration::from_millis(150),
        suspect_to_down: Duration::from_secs(1),
        gossip_interval: Duration::from_millis(100),
        join_retry: Duration::from_millis(300),
        sync_interval: Duration::from_millis(500),
        ..MembershipConfig::with_seeds(seeds)
    }
}

struct Node {
    transport: QuicTransport<(), ()>,
    membership: Membership,
}

fn start(ca: &ClusterCa, name: &str, id: u64, seeds: Vec<SocketAddr>) -> Node {
    let handler = Arc::new(GossipHandler::default());
    let tls = NodeTls::throwaway(ca, name).expect("node certificate");
    let transport = QuicTransport::bind(
        QuicConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), tls),
        handler.clone(),
    )
    .expect("bind");
    let addr = transport.local_addr();
    let seeds = if seeds.is_empty() { vec![addr] } else { seeds };
    let tokens = (0..16).map(|t| id << 56 | t << 40).collect();
    let metadata = NodeMetadata::new(NodeId(id), addr, None, tokens);
    let membership = Membership::start(
        transport.clone(),
        config(seeds),
        metadata,
        generation_now(),
        id,
    )
    .expect("start membership");
    assert!(handler.membership.set(membership.clone()).is_ok());
    Node {
        transport,
        membership,
    }
}

fn converged(nodes: &[&Node]) -> bool {
    nodes.iter().all(|viewer| {
        let view = viewer.membership.view();
        view.alive().count() == nodes.len()
            && nodes.iter().all(|n| {
                view.get(n.membership.local().node)
                    .and_then(|m| m.metadata.as_ref())
                    == Some(&n.membership.local())
            })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_converge_and_a_foreign_node_never_joins() {
    let ca = ClusterCa::generate().expect("CA");
    let a = start(&ca, "a", 1, Vec::new());
    let seed = a.transport.local_addr();
    let b = start(&ca, "b", 2, vec![seed]);
    let c = start(&ca, "c", 3, vec![seed]);
    let legit = [&a, &b, &c];

    let converge = tokio::time::timeout(Duration::from_secs(30), async {
        while !converged(&legit) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        converge.is_ok(),
        "3 nodes of one CA converge: {:#?}",
        legit.map(|n| n.membership.view())
    );

    // A node with a certificate of another CA, told about two real seeds.
    let other_ca = ClusterCa::generate().expect("other CA");
    let rogue = start(&other_ca, "rogue", 4, vec![seed, b.transport.local_addr()]);
    let rogue_addr = rogue.transport.local_addr();

    // Watch until the legit nodes have gossiped plenty (at least 40 more
    // datagrams received by each, about 20 probe rounds) and the rogue has
    // retried joining many times: it never shows up anywhere.
    let start_in: Vec<u64> = legit
        .iter()
        .map(|n| n.membership.stats().datagrams_in)
        .collect();
    let watched = tokio::time::timeout(Duration::from_secs(60), async {
        let mut polls = 0u32;
        loop {
            for n in legit {
                let view = n.membership.view();
                assert!(
                    view.get(NodeId(4)).is_none() && view.by_addr(rogue_addr).is_none(),
                    "the foreign node became a member: {view:#?}"
                );
                assert_eq!(view.alive().count(), 3);
            }
            let rogue_view = rogue.membership.view();
            assert_eq!(rogue_view.members.len(), 1, "{rogue_view:#?}");
            polls += 1;
            let gossiped = legit
                .iter()
                .zip(&start_in)
                .all(|(n, &s)| n.membership.stats().datagrams_in >= s + 40);
            if gossiped && polls >= 40 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(watched.is_ok(), "legit nodes kept gossiping");
    for n in legit {
        let stats = n.membership.stats();
        assert_eq!(
            stats.oversize, 0,
            "every packet fit the QUIC path: {stats:?}"
        );
    }
    assert_eq!(rogue.membership.stats().datagrams_in, 0);
    assert!(
        rogue.membership.stats().datagrams_out > 3,
        "the rogue kept trying"
    );
    for n in legit {
        assert!(converged(&legit));
        assert_eq!(
            n.membership
                .view()
                .members
                .values()
                .filter(|m| m.liveness == Liveness::Alive)
                .count(),
            3
        );
    }

    for n in [&a, &b, &c, &rogue] {
        n.membership.shutdown().await;
    }
    // Together: each waits for its connections to drain.
    tokio::join!(
        a.transport.shutdown(),
        b.transport.shutdown(),
        c.transport.shutdown(),
        rogue.transport.shutdown()
    );
}
