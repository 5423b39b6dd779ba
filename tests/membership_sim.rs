//! Membership on the simulated network (paused clock, fixed seeds): join
//! through one seed, failure detection, restart with a new generation,
//! partitions, metadata dissemination, garbage datagrams, graceful leave,
//! and the same seed giving the same history.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use foca::{Codec, Header, Message};
use parking_lot::Mutex;
use ringdb::cluster::membership::{
    status_table, BincodeCodec, ClusterView, Liveness, Membership, MembershipConfig,
    MembershipError, MembershipEvent, NodeMetadata, NodeStatus, PeerId,
};
use ringdb::model::NodeId;
use ringdb::net::sim::LogEntry;
use ringdb::net::{BoxFuture, Handler, SimConfig, SimNetwork, Transport};

/// A node's net handler: gossip datagrams go to its membership service.
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

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8], 7000))
}

fn config() -> MembershipConfig {
    MembershipConfig::with_seeds(vec![addr(1)])
}

fn metadata(i: usize) -> NodeMetadata {
    let tokens = (0..16).map(|t| (i as u64) << 56 | t << 40).collect();
    NodeMetadata::new(
        NodeId(i as u64),
        addr(i),
        Some(format!("rack{}", i % 2)),
        tokens,
    )
}

type History = Arc<Mutex<Vec<(Duration, usize, MembershipEvent)>>>;

/// Starts node `i` on `net` (replacing whatever was at its address) and
/// records its events in `history`.
fn start(net: &SimNetwork, i: usize, generation: u64, seed: u64, history: &History) -> Membership {
    let handler = Arc::new(GossipHandler::default());
    let transport = net.add_node::<(), ()>(addr(i), handler.clone());
    let m = Membership::start(
        transport,
        config(),
        metadata(i),
        generation,
        seed * 1000 + i as u64 * 10 + generation,
    )
    .expect("start membership");
    assert!(handler.membership.set(m.clone()).is_ok());
    let mut events = m.subscribe();
    let (net, history) = (net.clone(), history.clone());
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            history.lock().push((net.elapsed(), i, event));
        }
    });
    m
}

/// Waits (virtual time) until `cond` holds, at most `limit`; returns how
/// long it took.
async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = tokio::time::Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether `view` shows `node` with `liveness`.
fn shows(view: &ClusterView, node: usize, liveness: Liveness) -> bool {
    view.get(NodeId(node as u64))
        .is_some_and(|m| m.liveness == liveness)
}

/// Whether every node of `nodes` sees every node of `targets` as `liveness`.
fn all_see(nodes: &[(usize, &Membership)], targets: &[usize], liveness: Liveness) -> bool {
    nodes
        .iter()
        .all(|(_, m)| targets.iter().all(|&t| shows(&m.view(), t, liveness)))
}

/// Whether every node's view holds the current metadata of every node.
fn metadata_converged(nodes: &[(usize, &Membership)]) -> bool {
    nodes.iter().all(|(_, viewer)| {
        let view = viewer.view();
        nodes.iter().all(|(j, m)| {
            view.get(NodeId(*j as u64))
                .and_then(|member| member.metadata.as_ref())
                == Some(&m.local())
        })
    })
}

const ALL: [usize; 5] = [1, 2, 3, 4, 5];

/// Everything observable of one run.
#[derive(Debug, PartialEq)]
struct Run {
    history: Vec<(Duration, usize, MembershipEvent)>,
    log: Vec<LogEntry>,
    milestones: Vec<Duration>,
}

/// The whole life of a five-node cluster, asserting along the way.
async fn scenario(seed: u64) -> Run {
    let net = SimNetwork::new(SimConfig::with_seed(seed));
    let history: History = Arc::default();
    let mut milestones = Vec::new();
    let cfg = config();
    let bound = cfg.failure_detection_bound(5);

    // Join: five nodes through node 1.
    let mut nodes: Vec<Membership> = ALL
        .iter()
        .map(|&i| start(&net, i, 1, seed, &history))
        .collect();
    let pairs = |nodes: &[Membership]| -> Vec<(usize, Membership)> {
        ALL.iter().copied().zip(nodes.iter().cloned()).collect()
    };
    let p = pairs(&nodes);
    let refs: Vec<(usize, &Membership)> = p.iter().map(|(i, m)| (*i, m)).collect();
    let took = wait_until(Duration::from_secs(20), || {
        all_see(&refs, &ALL, Liveness::Alive) && metadata_converged(&refs)
    })
    .await
    .expect("5 nodes join through one seed and learn each other's metadata");
    milestones.push(took);
    for (_, m) in &refs {
        let view = m.view();
        assert_eq!(view.members.len(), 5);
        assert_eq!(view.alive().count(), 5);
        let node1 = view.get(NodeId(1)).and_then(|x| x.metadata.clone());
        assert_eq!(node1.map(|x| x.tokens.len()), Some(16));
    }

    // Bootstrap done: every node is Normal; everyone learns it.
    for m in &nodes {
        m.update_local(|x| x.status = NodeStatus::Normal)
            .expect("update");
    }
    let took = wait_until(Duration::from_secs(10), || metadata_converged(&refs))
        .await
        .expect("status Normal reaches everyone");
    milestones.push(took);
    let table = status_table(&nodes[0].view());
    println!("{table}");
    assert_eq!(
        table.lines().filter(|l| l.starts_with("UN ")).count(),
        5,
        "{table}"
    );

    // A metadata change on node 3 (Normal -> Leaving, schema bump) reaches
    // all others.
    nodes[2]
        .update_local(|x| {
            x.status = NodeStatus::Leaving;
            x.schema_version += 1;
            x.schema_digest = 0xabcd;
        })
        .expect("update");
    let took = wait_until(Duration::from_secs(10), || {
        refs.iter().all(|(_, m)| {
            m.view()
                .get(NodeId(3))
                .and_then(|x| x.metadata.as_ref())
                .is_some_and(|x| {
                    x.status == NodeStatus::Leaving
                        && x.schema_version == 1
                        && x.schema_digest == 0xabcd
                })
        })
    })
    .await
    .expect("node 3's metadata change reaches everyone");
    milestones.push(took);
    for i in [1, 2, 4, 5] {
        assert!(
            history.lock().iter().any(|(_, at, e)| *at == i
                && *e
                    == MembershipEvent::SchemaVersionChanged {
                        node: NodeId(3),
                        schema_version: 1,
                        schema_digest: 0xabcd
                    }),
            "node {i} saw node 3's schema change"
        );
    }
    let table = status_table(&nodes[0].view());
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("UL ") && l.contains("10.0.0.3:7000")),
        "{table}"
    );

    // Kill node 5: the others mark it down within the detection bound.
    net.kill(addr(5));
    let others: Vec<(usize, &Membership)> = refs[..4].to_vec();
    // SWIM: a node that stops answering is first suspected (it may still
    // refute), and declared down only after `suspect_to_down`.
    let mut suspected = false;
    let took = wait_until(bound, || {
        suspected |= others
            .iter()
            .any(|(_, m)| shows(&m.view(), 5, Liveness::Suspect));
        all_see(&others, &[5], Liveness::Down)
    })
    .await
    .unwrap_or_else(|| panic!("node 5 not down everywhere within {bound:?}"));
    assert!(suspected, "node 5 went down without being suspected first");
    assert!(
        took >= cfg.suspect_to_down,
        "down after {took:?}, before the suspicion could run out ({:?})",
        cfg.suspect_to_down
    );
    milestones.push(took);
    for i in 1..=4 {
        assert!(
            history.lock().iter().any(|(_, at, e)| *at == i
                && matches!(
                    e,
                    MembershipEvent::Down {
                        node: NodeId(5),
                        ..
                    }
                )),
            "node {i} got a Down event for node 5"
        );
    }
    // Down nodes keep their metadata: still in the table, as DN.
    let table = status_table(&nodes[0].view());
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("DN ") && l.contains("10.0.0.5:7000")),
        "{table}"
    );

    // Restart node 5 with a new generation: alive again everywhere.
    nodes[4].shutdown().await;
    nodes[4] = start(&net, 5, 2, seed, &history);
    let p = pairs(&nodes);
    let refs: Vec<(usize, &Membership)> = p.iter().map(|(i, m)| (*i, m)).collect();
    let took = wait_until(Duration::from_secs(20), || {
        all_see(&refs, &ALL, Liveness::Alive)
            && refs.iter().all(|(_, m)| {
                m.view().get(NodeId(5)).is_some_and(|x| {
                    x.generation >= 2 && x.metadata.as_ref().is_some_and(|md| md.generation == 2)
                })
            })
    })
    .await
    .expect("restarted node 5 is alive everywhere under its new generation");
    milestones.push(took);
    assert_eq!(nodes[4].identity().generation, 2);

    // Partition {1,2} | {3,4,5}: each side marks the other down.
    let (a, b) = ([addr(1), addr(2)], [addr(3), addr(4), addr(5)]);
    net.partition(&a, &b);
    let took = wait_until(bound, || {
        all_see(&refs[..2], &[3, 4, 5], Liveness::Down)
            && all_see(&refs[2..], &[1, 2], Liveness::Down)
            && all_see(&refs[..2], &[1, 2], Liveness::Alive)
            && all_see(&refs[2..], &[3, 4, 5], Liveness::Alive)
    })
    .await
    .unwrap_or_else(|| panic!("each side of the partition sees the other down within {bound:?}"));
    milestones.push(took);

    // Heal: everyone alive again (the members renew their identities).
    net.heal();
    let took = wait_until(Duration::from_secs(60), || {
        all_see(&refs, &ALL, Liveness::Alive)
    })
    .await
    .expect("everyone alive again after the partition heals");
    milestones.push(took);
    let took = wait_until(Duration::from_secs(20), || metadata_converged(&refs))
        .await
        .expect("metadata converges after the partition");
    milestones.push(took);

    // Garbage datagrams to node 2 do not crash it, and the cluster goes on.
    let rogue = net.add_node::<(), ()>(addr(99), Arc::new(GossipHandler::default()));
    let spoofed_header = Header {
        src: PeerId::new(addr(3), NodeId(3), 99),
        src_incarnation: 0,
        dst: nodes[1].identity(),
        message: Message::Ping(1),
    };
    let mut spoofed = vec![0xF0];
    BincodeCodec
        .encode_header(&spoofed_header, &mut spoofed)
        .expect("encode header");
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![0xF0],
        vec![0xF0, 0xff, 0xff, 0xff, 0xff, 0xff],
        vec![0xF1, 1, 2, 3],
        vec![0xF2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        vec![0xF2, 0, 0, 0],
        (0..1100).map(|k| (k * 7 % 256) as u8).collect(),
        spoofed,
    ];
    let before = nodes[1].stats();
    for bytes in &garbage {
        rogue
            .send_datagram(addr(2), Bytes::from(bytes.clone()))
            .await
            .expect("sent");
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(nodes[1].is_running());
    let after = nodes[1].stats();
    assert!(
        after.malformed >= before.malformed + 7,
        "{before:?} {after:?}"
    );
    assert!(after.spoofed > before.spoofed, "{before:?} {after:?}");
    assert!(all_see(&refs, &ALL, Liveness::Alive));
    assert!(refs
        .iter()
        .all(|(_, m)| m.view().by_addr(addr(99)).is_none()));

    for m in &nodes {
        m.shutdown().await;
    }
    let history = history.lock().clone();
    Run {
        history,
        log: net.log(),
        milestones,
    }
}

#[tokio::test(start_paused = true)]
async fn five_nodes_join_fail_restart_partition_and_heal() {
    let run = scenario(42).await;
    println!("milestones (virtual): {:?}", run.milestones);
    assert!(!run.history.is_empty());
}

#[tokio::test(start_paused = true)]
async fn same_seed_same_history() {
    let first = scenario(7).await;
    let second = scenario(7).await;
    assert_eq!(first.milestones, second.milestones);
    assert_eq!(first.history, second.history);
    assert!(first.log == second.log, "delivery logs differ");
    let other = scenario(8).await;
    assert!(other.log != first.log, "another seed, another history");
}

#[tokio::test(start_paused = true)]
async fn graceful_leave_is_seen_at_once() {
    let net = SimNetwork::new(SimConfig::with_seed(3));
    let history: History = Arc::default();
    let nodes: Vec<Membership> = (1..=3).map(|i| start(&net, i, 1, 3, &history)).collect();
    let refs: Vec<(usize, &Membership)> = (1..=3).zip(nodes.iter()).collect();
    wait_until(Duration::from_secs(20), || {
        all_see(&refs, &[1, 2, 3], Liveness::Alive) && metadata_converged(&refs)
    })
    .await
    .expect("3 nodes join");
    nodes[2].leave_gracefully().await.expect("leave");
    assert!(!nodes[2].is_running());
    assert_eq!(
        nodes[2].update_local(|m| m.load_bytes = 1),
        Err(MembershipError::Stopped)
    );
    // Well before failure detection could have noticed.
    let took = wait_until(Duration::from_secs(1), || {
        refs[..2].iter().all(|(_, m)| {
            m.view().get(NodeId(3)).is_some_and(|x| {
                x.liveness == Liveness::Down
                    && x.metadata.as_ref().map(|md| md.status) == Some(NodeStatus::Left)
            })
        })
    })
    .await;
    assert!(took.is_some(), "the leave reached the others within 1 s");
    for m in &nodes[..2] {
        m.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_removed_node_stays_out_of_the_ring_and_learns_it_was_removed() {
    let net = SimNetwork::new(SimConfig::with_seed(5));
    let history: History = Arc::default();
    let nodes: Vec<Membership> = (1..=3).map(|i| start(&net, i, 1, 5, &history)).collect();
    for m in &nodes {
        m.update_local(|md| md.status = NodeStatus::Normal)
            .expect("normal");
    }
    let refs: Vec<(usize, &Membership)> = (1..=3).zip(nodes.iter()).collect();
    wait_until(Duration::from_secs(20), || {
        all_see(&refs, &[1, 2, 3], Liveness::Alive) && metadata_converged(&refs)
    })
    .await
    .expect("3 nodes join");
    // Node 3 dies.
    nodes[2].shutdown().await;
    net.kill(addr(3));
    wait_until(Duration::from_secs(30), || {
        all_see(&refs[..2], &[3], Liveness::Down)
    })
    .await
    .expect("node 3 is seen down");
    let status_of = |m: &Membership| {
        m.view()
            .get(NodeId(3))
            .and_then(|x| x.metadata.as_ref().map(|md| md.status))
    };
    // A node cannot speak for itself this way, nor for a node it does not
    // know.
    assert!(matches!(
        nodes[0].publish_for(NodeId(1), |_| {}),
        Err(MembershipError::NotPublishable { .. })
    ));
    assert!(matches!(
        nodes[0].publish_for(NodeId(9), |_| {}),
        Err(MembershipError::NotPublishable { .. })
    ));
    // Node 1 marks it leaving, then removed, on its behalf: node 2 learns
    // each at once (pushed, not waiting for failure detection or a sync).
    nodes[0]
        .publish_for(NodeId(3), |md| md.status = NodeStatus::Leaving)
        .expect("leaving");
    wait_until(Duration::from_secs(1), || {
        nodes[1].view().leaving_nodes() == vec![NodeId(3)]
    })
    .await
    .expect("node 2 sees node 3 leaving");
    nodes[0]
        .publish_for(NodeId(3), |md| md.status = NodeStatus::Removed)
        .expect("removed");
    wait_until(Duration::from_secs(1), || {
        nodes[..2]
            .iter()
            .all(|m| status_of(m) == Some(NodeStatus::Removed))
    })
    .await
    .expect("both see node 3 removed");
    for m in &nodes[..2] {
        let view = m.view();
        assert!(view.ring_nodes().iter().all(|n| n.id != NodeId(3)));
        assert!(view.leaving_nodes().is_empty());
        assert!(!m.is_removed());
    }
    // Node 3 restarts with its old data: a new generation, normal, its
    // tokens. It learns it was removed, and nobody takes it back.
    net.revive(addr(3));
    let again = start(&net, 3, 2, 5, &history);
    again
        .update_local(|md| md.status = NodeStatus::Normal)
        .expect("normal");
    let took = wait_until(Duration::from_secs(10), || again.is_removed()).await;
    assert!(
        took.is_some(),
        "the restarted node never learned it was removed"
    );
    tokio::time::timeout(Duration::from_secs(1), again.removed())
        .await
        .expect("removed() resolves once removed");
    // It keeps publishing newer versions of itself; for a while, nobody
    // takes them.
    for round in 0..20u64 {
        let _ = again.update_local(|md| md.load_bytes = round);
        tokio::time::sleep(Duration::from_millis(500)).await;
        for m in &nodes[..2] {
            assert_eq!(status_of(m), Some(NodeStatus::Removed), "round {round}");
            assert!(m.view().ring_nodes().iter().all(|n| n.id != NodeId(3)));
        }
    }
    again.shutdown().await;
    for m in &nodes[..2] {
        m.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn bad_configuration_and_oversized_metadata_are_errors() {
    let net = SimNetwork::new(SimConfig::with_seed(1));
    let transport = net.add_node::<(), ()>(addr(1), Arc::new(GossipHandler::default()));
    let bad = MembershipConfig {
        probe_rtt: Duration::from_secs(2),
        ..config()
    };
    assert!(matches!(
        Membership::start(transport.clone(), bad, metadata(1), 1, 1),
        Err(MembershipError::Config(_))
    ));
    let mut huge = metadata(1);
    huge.tokens = (0..4096).map(|t| t * 0x0123_4567_89ab).collect();
    assert!(matches!(
        Membership::start(transport.clone(), config(), huge.clone(), 1, 1),
        Err(MembershipError::MetadataTooLarge { .. })
    ));
    let m = Membership::start(transport, config(), metadata(1), 1, 1).expect("start");
    let err = m.update_local(|x| x.tokens = huge.tokens.clone());
    assert!(matches!(err, Err(MembershipError::MetadataTooLarge { .. })));
    assert_eq!(m.local().version, 0);
    let updated = m.update_local(|x| x.load_bytes = 10).expect("update");
    assert_eq!((updated.version, updated.load_bytes), (1, 10));
    m.shutdown().await;
}

/// Five nodes on a lossy, jittery network (10% loss, 1 to 40 ms): they still
/// join, learn each other's metadata, and see a dead node down within the
/// bound. Returns the virtual times each step took.
async fn lossy(seed: u64) -> Vec<Duration> {
    let net = SimNetwork::new(SimConfig {
        drop_probability: 0.1,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(40),
        ..SimConfig::with_seed(seed)
    });
    let history: History = Arc::default();
    let nodes: Vec<Membership> = ALL
        .iter()
        .map(|&i| start(&net, i, 1, seed, &history))
        .collect();
    let refs: Vec<(usize, &Membership)> = ALL.iter().copied().zip(nodes.iter()).collect();
    let mut milestones = Vec::new();
    milestones.push(
        wait_until(Duration::from_secs(30), || {
            all_see(&refs, &ALL, Liveness::Alive) && metadata_converged(&refs)
        })
        .await
        .expect("join with 10% loss"),
    );
    net.kill(addr(5));
    let bound = config().failure_detection_bound(5);
    milestones.push(
        wait_until(bound, || all_see(&refs[..4], &[5], Liveness::Down))
            .await
            .unwrap_or_else(|| panic!("node 5 down everywhere within {bound:?} despite loss")),
    );
    milestones.push(
        wait_until(Duration::from_secs(30), || {
            all_see(&refs[..4], &[1, 2, 3, 4], Liveness::Alive)
        })
        .await
        .expect("the live nodes see each other alive"),
    );
    for m in &nodes {
        m.shutdown().await;
    }
    milestones
}

#[tokio::test(start_paused = true)]
async fn lossy_network_joins_and_detects() {
    // Seed 148 is the one where the three gossips a renewed node sent were
    // all lost: it must still get back in (it announces itself again).
    for seed in [5, 148] {
        let milestones = lossy(seed).await;
        println!("seed {seed}, milestones (virtual): {milestones:?}");
    }
}
