//! The simulated network: deterministic from its seed on a paused clock,
//! with loss, delay, partitions (both ways and one way) and node kills.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use ringdb::net::sim::{DropReason, Event, LogEntry, PacketKind};
use ringdb::net::{BoxFuture, Handler, NetError, SimConfig, SimNetwork, SimTransport, Transport};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Req {
    Ping(u64),
    /// Asks the node to wait this many virtual milliseconds before answering.
    Slow(u64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Resp {
    Pong { n: u64, by: SocketAddr },
}

#[derive(Default)]
struct Node {
    me: Mutex<Option<SocketAddr>>,
    requests: AtomicUsize,
    datagrams: Mutex<Vec<(SocketAddr, Vec<u8>)>>,
}

impl Handler<Req, Resp> for Node {
    fn on_request(&self, _from: SocketAddr, req: Req) -> BoxFuture<'static, Resp> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let by = self
            .me
            .lock()
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        Box::pin(async move {
            match req {
                Req::Ping(n) => Resp::Pong { n, by },
                Req::Slow(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Resp::Pong { n: ms, by }
                }
            }
        })
    }

    fn on_datagram(&self, from: SocketAddr, payload: Bytes) {
        self.datagrams.lock().push((from, payload.to_vec()));
    }
}

fn addr(i: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8], 7000 + i))
}

fn add(net: &SimNetwork, i: u16) -> (SimTransport<Req, Resp>, Arc<Node>) {
    let node = Arc::new(Node::default());
    *node.me.lock() = Some(addr(i));
    (net.add_node(addr(i), node.clone()), node)
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
}

/// Everything observable of one run of the gossip-and-requests scenario.
#[derive(Debug, PartialEq)]
struct Run {
    log: Vec<LogEntry>,
    results: Vec<(usize, u64, Result<Resp, NetError>)>,
    datagrams: Vec<Vec<(SocketAddr, Vec<u8>)>>,
    elapsed: Duration,
}

/// Five nodes with 20 % loss and 1 to 30 ms delays: each sends 20 requests
/// and 20 datagrams round-robin to the others, all concurrently.
fn scenario(seed: u64) -> Run {
    paused_runtime().block_on(async move {
        let net = SimNetwork::new(SimConfig {
            seed,
            drop_probability: 0.2,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(30),
            ..SimConfig::default()
        });
        let nodes: Vec<_> = (1..=5).map(|i| add(&net, i)).collect();
        let mut tasks = Vec::new();
        for (i, (t, _)) in nodes.iter().enumerate() {
            for k in 0..20u64 {
                let to = addr(((i as u16 + 1 + (k as u16 % 4)) % 5) + 1);
                let t = t.clone();
                tasks.push(tokio::spawn(async move {
                    let _ = t
                        .send_datagram(to, Bytes::from(format!("gossip {i} {k}")))
                        .await;
                    (
                        i,
                        k,
                        t.request(to, Req::Ping(k), Duration::from_millis(200))
                            .await,
                    )
                }));
            }
        }
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.expect("task"));
        }
        Run {
            log: net.log(),
            results,
            datagrams: nodes
                .iter()
                .map(|(_, n)| n.datagrams.lock().clone())
                .collect(),
            elapsed: net.elapsed(),
        }
    })
}

#[test]
fn same_seed_same_run_different_seed_different_run() {
    let first = scenario(42);
    let second = scenario(42);
    assert_eq!(first, second);
    // The scenario exercised loss, delivery and timeouts.
    assert!(first
        .log
        .iter()
        .any(|e| e.event == Event::Dropped(DropReason::Random)));
    assert!(first.log.iter().any(|e| e.event == Event::Delivered));
    assert!(first.results.iter().any(|r| r.2.is_ok()));
    assert!(first
        .results
        .iter()
        .any(|r| matches!(r.2, Err(NetError::Timeout { .. }))));
    // Delays were virtual: 200 ms timeouts, 30 ms delays, in no real time.
    assert!(first.elapsed >= Duration::from_millis(200));

    let other = scenario(43);
    assert_ne!(first.log, other.log);
}

#[tokio::test(start_paused = true)]
async fn partitions_block_both_directions_and_heal_restores() {
    let net = SimNetwork::new(SimConfig::with_seed(1));
    let (a, _) = add(&net, 1);
    let (b, hb) = add(&net, 2);
    let (c, _) = add(&net, 3);
    let t = Duration::from_secs(1);

    net.partition(&[addr(1)], &[addr(2)]);
    assert_eq!(
        a.request(addr(2), Req::Ping(1), t).await,
        Err(NetError::Timeout {
            peer: addr(2),
            timeout: t
        })
    );
    assert!(matches!(
        b.request(addr(1), Req::Ping(2), t).await,
        Err(NetError::Timeout { .. })
    ));
    assert_eq!(hb.requests.load(Ordering::SeqCst), 0);
    // Others still talk to both sides.
    assert_eq!(
        c.request(addr(1), Req::Ping(3), t).await,
        Ok(Resp::Pong { n: 3, by: addr(1) })
    );
    assert_eq!(
        c.request(addr(2), Req::Ping(4), t).await,
        Ok(Resp::Pong { n: 4, by: addr(2) })
    );
    a.send_datagram(addr(2), Bytes::from_static(b"x"))
        .await
        .expect("sent");
    assert!(net.log().iter().any(|e| e.from == addr(1)
        && e.to == addr(2)
        && e.event == Event::Dropped(DropReason::Partition)));

    net.heal();
    assert_eq!(
        a.request(addr(2), Req::Ping(5), t).await,
        Ok(Resp::Pong { n: 5, by: addr(2) })
    );
    assert_eq!(
        b.request(addr(1), Req::Ping(6), t).await,
        Ok(Resp::Pong { n: 6, by: addr(1) })
    );
}

#[tokio::test(start_paused = true)]
async fn one_way_partition_blocks_one_direction() {
    let net = SimNetwork::new(SimConfig::with_seed(2));
    let (a, ha) = add(&net, 1);
    let (b, hb) = add(&net, 2);
    let t = Duration::from_secs(1);

    net.partition_one_way(&[addr(1)], &[addr(2)]);
    // A -> B is cut: A's request never arrives.
    assert!(matches!(
        a.request(addr(2), Req::Ping(1), t).await,
        Err(NetError::Timeout { .. })
    ));
    assert_eq!(hb.requests.load(Ordering::SeqCst), 0);
    // B -> A arrives, but A's response to B is cut.
    assert!(matches!(
        b.request(addr(1), Req::Ping(2), t).await,
        Err(NetError::Timeout { .. })
    ));
    assert_eq!(ha.requests.load(Ordering::SeqCst), 1);
    // Datagrams: B -> A gets through, A -> B does not.
    b.send_datagram(addr(1), Bytes::from_static(b"b to a"))
        .await
        .expect("sent");
    a.send_datagram(addr(2), Bytes::from_static(b"a to b"))
        .await
        .expect("sent");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(*ha.datagrams.lock(), vec![(addr(2), b"b to a".to_vec())]);
    assert!(hb.datagrams.lock().is_empty());

    net.heal();
    assert!(b.request(addr(1), Req::Ping(3), t).await.is_ok());
    assert!(a.request(addr(2), Req::Ping(4), t).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn drop_probability_one_drops_everything() {
    let net = SimNetwork::new(SimConfig::with_seed(3));
    let (a, _) = add(&net, 1);
    let (_b, hb) = add(&net, 2);
    net.set_drop(1.0);
    for n in 0..20 {
        let r = a
            .request(addr(2), Req::Ping(n), Duration::from_millis(50))
            .await;
        assert!(matches!(r, Err(NetError::Timeout { .. })), "{r:?}");
        a.send_datagram(addr(2), Bytes::from_static(b"lost"))
            .await
            .expect("sent");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(hb.requests.load(Ordering::SeqCst), 0);
    assert!(hb.datagrams.lock().is_empty());
    let counters = net.counters();
    assert_eq!(counters.delivered, 0);
    assert_eq!(counters.sent, 0);
    assert_eq!(counters.dropped, 40);
    assert_eq!(a.stats().requests_failed, 20);

    // A lossy link alone, then no loss at all.
    net.set_drop(0.0);
    net.set_link_drop(addr(1), addr(2), Some(1.0));
    assert!(a
        .request(addr(2), Req::Ping(1), Duration::from_millis(50))
        .await
        .is_err());
    net.set_link_drop(addr(1), addr(2), None);
    assert_eq!(
        a.request(addr(2), Req::Ping(2), Duration::from_millis(50))
            .await,
        Ok(Resp::Pong { n: 2, by: addr(2) })
    );
}

#[tokio::test(start_paused = true)]
async fn killed_nodes_are_silent_and_revive() {
    let net = SimNetwork::new(SimConfig::with_seed(4));
    let (a, _) = add(&net, 1);
    let (b, hb) = add(&net, 2);
    let t = Duration::from_millis(500);

    net.kill(addr(2));
    assert!(!net.is_up(addr(2)));
    assert!(matches!(
        a.request(addr(2), Req::Ping(1), t).await,
        Err(NetError::Timeout { .. })
    ));
    assert_eq!(
        b.request(addr(1), Req::Ping(2), t).await,
        Err(NetError::Closed)
    );
    assert_eq!(hb.requests.load(Ordering::SeqCst), 0);

    // A node killed while answering: its response is lost.
    net.revive(addr(2));
    let slow = tokio::spawn({
        let a = a.clone();
        async move {
            a.request(addr(2), Req::Slow(100), Duration::from_secs(1))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    net.kill(addr(2));
    assert!(matches!(
        slow.await.expect("task"),
        Err(NetError::Timeout { .. })
    ));
    assert!(net
        .log()
        .iter()
        .any(|e| matches!(e.kind, PacketKind::Response { .. })
            && e.event == Event::Dropped(DropReason::SenderDown)));

    net.revive(addr(2));
    assert_eq!(
        a.request(addr(2), Req::Ping(3), t).await,
        Ok(Resp::Pong { n: 3, by: addr(2) })
    );
    // Unknown addresses are silent too.
    assert!(matches!(
        a.request(addr(9), Req::Ping(4), t).await,
        Err(NetError::Timeout { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn delays_are_virtual_and_deadlines_reach_the_handler() {
    let net = SimNetwork::new(SimConfig::with_seed(5));
    let (a, _) = add(&net, 1);
    let (b, _) = add(&net, 2);
    net.set_delay(Duration::from_secs(2), Duration::from_secs(2));
    let start = net.elapsed();
    assert!(a
        .request(addr(2), Req::Ping(1), Duration::from_secs(10))
        .await
        .is_ok());
    // Two 2 s hops, in virtual time.
    assert_eq!(net.elapsed() - start, Duration::from_secs(4));

    // The handler outlives the deadline: the node gives up and says so.
    net.set_delay(Duration::ZERO, Duration::ZERO);
    let r = a
        .request(addr(2), Req::Slow(10_000), Duration::from_secs(1))
        .await;
    assert!(matches!(r, Err(NetError::Timeout { .. })), "{r:?}");
    // The node's own deadline expires at the same virtual instant.
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(b.stats().deadlines_exceeded, 1);

    // Datagrams over the size limit are refused.
    let max = a.max_datagram_size(addr(2)).expect("known");
    let r = a
        .send_datagram(addr(2), Bytes::from(vec![0; max + 1]))
        .await;
    assert!(matches!(r, Err(NetError::TooLarge { .. })), "{r:?}");
    assert!(a
        .send_datagram(addr(2), Bytes::from(vec![0; max]))
        .await
        .is_ok());
}
