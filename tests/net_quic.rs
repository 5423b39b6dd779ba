//! The QUIC transport on 127.0.0.1: requests and datagrams between nodes of
//! one cluster CA, timeouts, restarts, and peers that are not of the cluster.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ringdb::net::tls::{ClusterCa, NodeCert, NodeTls, ALPN, PEER_SERVER_NAME};
use ringdb::net::{BoxFuture, Handler, NetError, QuicConfig, QuicTransport, Transport};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Req {
    Echo(u64, String),
    Hang,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Resp {
    Echo {
        n: u64,
        text: String,
        from: SocketAddr,
    },
}

struct TestHandler {
    requests: AtomicUsize,
    datagrams: AtomicUsize,
    datagram_tx: mpsc::UnboundedSender<(SocketAddr, Bytes)>,
}

impl TestHandler {
    fn new() -> (
        Arc<TestHandler>,
        mpsc::UnboundedReceiver<(SocketAddr, Bytes)>,
    ) {
        let (datagram_tx, rx) = mpsc::unbounded_channel();
        (
            Arc::new(TestHandler {
                requests: AtomicUsize::new(0),
                datagrams: AtomicUsize::new(0),
                datagram_tx,
            }),
            rx,
        )
    }

    fn calls(&self) -> usize {
        self.requests.load(Ordering::SeqCst) + self.datagrams.load(Ordering::SeqCst)
    }
}

impl Handler<Req, Resp> for TestHandler {
    fn on_request(&self, from: SocketAddr, req: Req) -> BoxFuture<'static, Resp> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            match req {
                Req::Echo(n, text) => Resp::Echo { n, text, from },
                Req::Hang => std::future::pending().await,
            }
        })
    }

    fn on_datagram(&self, from: SocketAddr, payload: Bytes) {
        self.datagrams.fetch_add(1, Ordering::SeqCst);
        let _ = self.datagram_tx.send((from, payload));
    }
}

type Node = QuicTransport<Req, Resp>;

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn bind(tls: NodeTls, addr: SocketAddr, handler: Arc<TestHandler>) -> Result<Node, NetError> {
    QuicTransport::bind(QuicConfig::new(addr, tls), handler)
}

fn node(
    ca: &ClusterCa,
    name: &str,
) -> (
    Node,
    Arc<TestHandler>,
    mpsc::UnboundedReceiver<(SocketAddr, Bytes)>,
) {
    let (handler, rx) = TestHandler::new();
    let tls = NodeTls::throwaway(ca, name).expect("node certificate");
    let node = bind(tls, localhost(), handler.clone()).expect("bind");
    (node, handler, rx)
}

const T: Duration = Duration::from_secs(10);

/// Binds `addr` again for a restarted node. The old endpoint releases its
/// port once its driver task has seen the last handle go: the bind is
/// retried a bounded number of times.
async fn bind_again(tls: &NodeTls, addr: SocketAddr, handler: &Arc<TestHandler>) -> Node {
    for _ in 0..100 {
        match bind(tls.clone(), addr, handler.clone()) {
            Ok(node) => return node,
            Err(NetError::Bind { .. }) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("cannot bind {addr} again: {e}"),
        }
    }
    panic!("{addr} still taken after 2 s")
}

/// Sends requests 1..=`count` from `a` to `b` all at once, the text of
/// request `n` being `text_of(n)`, and checks that each answer echoes its
/// own request.
async fn echo_concurrently(a: &Node, b: &Node, count: u64, text_of: impl Fn(u64) -> String) {
    let mut tasks = Vec::new();
    for n in 1..=count {
        let (a, b, text) = (a.clone(), b.clone(), text_of(n));
        tasks.push(tokio::spawn(async move {
            let resp = a
                .request(b.local_addr(), Req::Echo(n, text.clone()), T)
                .await;
            (n, text, resp)
        }));
    }
    for task in tasks {
        let (n, text, resp) = task.await.expect("task");
        assert_eq!(
            resp,
            Ok(Resp::Echo {
                n,
                text,
                from: a.local_addr()
            })
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_datagrams_between_two_nodes() {
    let ca = ClusterCa::generate().expect("CA");
    let (a, _ha, mut a_datagrams) = node(&ca, "a");
    let (b, hb, mut b_datagrams) = node(&ca, "b");

    // One request, then many concurrent ones on the same connection: each
    // response answers its own request.
    let resp = a
        .request(b.local_addr(), Req::Echo(0, "hello".into()), T)
        .await;
    assert_eq!(
        resp,
        Ok(Resp::Echo {
            n: 0,
            text: "hello".into(),
            from: a.local_addr()
        })
    );
    echo_concurrently(&a, &b, 300, |n| format!("request {n}")).await;
    assert_eq!(hb.requests.load(Ordering::SeqCst), 301);

    // The other direction, on B's own connection.
    let resp = b
        .request(a.local_addr(), Req::Echo(7, "back".into()), T)
        .await;
    assert!(matches!(resp, Ok(Resp::Echo { n: 7, .. })), "{resp:?}");

    // Datagrams both ways, with the sender's listen address.
    let max = a
        .max_datagram_size(b.local_addr())
        .expect("connected: size known");
    assert!(max >= 1000, "max datagram payload {max}");
    a.send_datagram(b.local_addr(), Bytes::from_static(b"gossip a->b"))
        .await
        .expect("datagram");
    let (from, payload) = tokio::time::timeout(T, b_datagrams.recv())
        .await
        .expect("datagram arrives")
        .expect("channel");
    assert_eq!((from, &payload[..]), (a.local_addr(), &b"gossip a->b"[..]));
    b.send_datagram(a.local_addr(), Bytes::from_static(b"gossip b->a"))
        .await
        .expect("datagram");
    let (from, payload) = tokio::time::timeout(T, a_datagrams.recv())
        .await
        .expect("datagram arrives")
        .expect("channel");
    assert_eq!((from, &payload[..]), (b.local_addr(), &b"gossip b->a"[..]));

    // Too large a datagram is a typed error, not a panic or a silent loss.
    let err = a
        .send_datagram(b.local_addr(), Bytes::from(vec![0u8; 64 * 1024]))
        .await;
    assert!(matches!(err, Err(NetError::TooLarge { .. })), "{err:?}");

    let stats = a.stats();
    assert_eq!(stats.requests_out, 301);
    assert_eq!(stats.requests_failed, 0);
    assert!(stats.datagrams_out >= 1);
    assert_eq!(b.stats().requests_in, 301);
    assert_eq!(b.stats().malformed, 0);

    a.shutdown().await;
    b.shutdown().await;
    let err = a.request(b.local_addr(), Req::Echo(1, "x".into()), T).await;
    assert_eq!(err, Err(NetError::Closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_exceeded_is_a_timeout() {
    let ca = ClusterCa::generate().expect("CA");
    let (a, _, _) = node(&ca, "a");
    let (b, hb, _) = node(&ca, "b");
    let timeout = Duration::from_millis(300);
    let err = a.request(b.local_addr(), Req::Hang, timeout).await;
    assert_eq!(
        err,
        Err(NetError::Timeout {
            peer: b.local_addr(),
            timeout
        })
    );
    assert_eq!(hb.requests.load(Ordering::SeqCst), 1);
    assert_eq!(a.stats().requests_failed, 1);
    // The connection is still good for the next request.
    let resp = a
        .request(b.local_addr(), Req::Echo(1, "after".into()), T)
        .await;
    assert!(matches!(resp, Ok(Resp::Echo { n: 1, .. })), "{resp:?}");
    // Nobody listening: the request times out (QUIC has no "refused").
    let silent = {
        let socket = std::net::UdpSocket::bind(localhost()).expect("udp");
        socket.local_addr().expect("addr")
    };
    let err = a
        .request(silent, Req::Echo(2, "void".into()), timeout)
        .await;
    assert!(matches!(err, Err(NetError::Timeout { .. })), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_restarted_on_the_same_port_is_reachable_again() {
    let ca = ClusterCa::generate().expect("CA");
    let (a, _, _) = node(&ca, "a");
    let (b, _, _) = node(&ca, "b");
    let b_addr = b.local_addr();
    let resp = a.request(b_addr, Req::Echo(1, "before".into()), T).await;
    assert!(resp.is_ok(), "{resp:?}");

    b.shutdown().await;
    drop(b);
    let tls = NodeTls::throwaway(&ca, "b").expect("cert");
    let (handler, _rx) = TestHandler::new();
    let b2 = bind_again(&tls, b_addr, &handler).await;
    assert_eq!(b2.local_addr(), b_addr);
    let resp = a.request(b_addr, Req::Echo(2, "after".into()), T).await;
    assert!(matches!(resp, Ok(Resp::Echo { n: 2, .. })), "{resp:?}");
    assert_eq!(handler.requests.load(Ordering::SeqCst), 1);
}

/// A peer that crashes (its process gone without a word, so the
/// connection to it stays open here) and restarts on the same address with
/// the same certificate resets the stale connection when the first packet
/// of it arrives (its stateless-reset and connection-ID keys come from its
/// private key: `RestartKeys`): requests to it fail at most once, fast,
/// and never wait out the 10 s idle timeout (each may wait 3 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_crashed_and_restarted_resets_the_stale_connection() {
    let ca = ClusterCa::generate().expect("CA");
    let (a, _, _) = node(&ca, "a");
    let b_tls = NodeTls::throwaway(&ca, "b").expect("cert");

    // B runs on a runtime of its own, which is then stopped in its tracks:
    // nothing of B runs or sends anything after that, as after SIGKILL.
    let b_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (b_handler, _rx) = TestHandler::new();
    let b = {
        let _in_b = b_runtime.enter();
        bind(b_tls.clone(), localhost(), b_handler).expect("bind b")
    };
    let b_addr = b.local_addr();
    let resp = a.request(b_addr, Req::Echo(1, "before".into()), T).await;
    assert!(resp.is_ok(), "{resp:?}");
    b_runtime.shutdown_background();
    drop(b);

    let (handler, _rx) = TestHandler::new();
    let b2 = bind_again(&b_tls, b_addr, &handler).await;
    let mut outcomes = Vec::new();
    for n in 2..4 {
        let resp = a
            .request(b_addr, Req::Echo(n, "after".into()), Duration::from_secs(3))
            .await;
        let done = resp.is_ok();
        outcomes.push(resp);
        if done {
            break;
        }
    }
    assert!(
        matches!(outcomes.last(), Some(Ok(Resp::Echo { .. }))),
        "the restarted peer never answered: {outcomes:?}"
    );
    assert!(
        !outcomes
            .iter()
            .any(|r| matches!(r, Err(NetError::Timeout { .. }))),
        "a request waited on the dead connection: {outcomes:?}"
    );
    assert_eq!(handler.requests.load(Ordering::SeqCst), 1);
    b2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_ca_cannot_talk_to_the_cluster() {
    let ca = ClusterCa::generate().expect("CA");
    let other_ca = ClusterCa::generate().expect("other CA");
    let (a, ha, _) = node(&ca, "a");
    let (c, hc, _) = node(&other_ca, "c");

    // C trusts only its own CA and presents a certificate A does not trust.
    let err = c
        .request(a.local_addr(), Req::Echo(1, "let me in".into()), T)
        .await;
    assert!(matches!(err, Err(NetError::Tls { .. })), "{err:?}");
    let err = c
        .send_datagram(a.local_addr(), Bytes::from_static(b"fake gossip"))
        .await;
    assert!(matches!(err, Err(NetError::Tls { .. })), "{err:?}");
    // And A refuses C as a server.
    let err = a
        .request(c.local_addr(), Req::Echo(2, "hello?".into()), T)
        .await;
    assert!(matches!(err, Err(NetError::Tls { .. })), "{err:?}");

    // A rogue node that trusts the cluster CA (it has ca.pem) but holds a
    // certificate of its own CA: it accepts A's certificate, A refuses its.
    let rogue_cert = NodeCert::issue(&other_ca, "rogue", &[], &[]).expect("cert");
    let rogue_tls =
        NodeTls::from_pem(ca.cert_pem(), rogue_cert.cert_pem(), rogue_cert.key_pem()).expect("tls");
    let (rogue_handler, _rx) = TestHandler::new();
    let rogue = bind(rogue_tls, localhost(), rogue_handler).expect("bind");
    let err = rogue
        .request(a.local_addr(), Req::Echo(3, "let me in".into()), T)
        .await;
    assert!(matches!(err, Err(NetError::Tls { .. })), "{err:?}");
    // Its datagram may leave (the client side of TLS 1.3 finishes before
    // the server checks the client certificate) but is never delivered.
    let _ = rogue
        .send_datagram(a.local_addr(), Bytes::from_static(b"fake gossip"))
        .await;

    // Prove A is serving and would have delivered them: a cluster node's
    // request and datagram get through, and only they reach the handler.
    let (b, _, _) = node(&ca, "b");
    let resp = b
        .request(a.local_addr(), Req::Echo(4, "member".into()), T)
        .await;
    assert!(resp.is_ok(), "{resp:?}");
    assert_eq!(ha.requests.load(Ordering::SeqCst), 1);
    assert_eq!(ha.datagrams.load(Ordering::SeqCst), 0);
    assert_eq!(hc.calls(), 0);
    assert!(a.stats().handshakes_failed >= 2, "{:?}", a.stats());
}

/// Sends one request frame over a raw quinn connection with `crypto` as the
/// client TLS configuration; the error as the transport would classify it.
async fn raw_request(
    crypto: quinn::crypto::rustls::QuicClientConfig,
    to: SocketAddr,
    frame: Vec<u8>,
) -> Result<Vec<u8>, NetError> {
    let endpoint = quinn::Endpoint::client(localhost()).map_err(|e| NetError::Bind {
        addr: localhost(),
        reason: e.to_string(),
    })?;
    let config = quinn::ClientConfig::new(Arc::new(crypto));
    let conn = endpoint
        .connect_with(config, to, PEER_SERVER_NAME)
        .map_err(|e| NetError::Unreachable {
            peer: to,
            reason: e.to_string(),
        })?
        .await
        .map_err(|e| NetError::from_connection(to, &e))?;
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| NetError::from_connection(to, &e))?;
    let lost = |e: quinn::ConnectionError| NetError::from_connection(to, &e);
    match send.write_all(&frame).await {
        Ok(()) => {}
        Err(quinn::WriteError::ConnectionLost(e)) => return Err(lost(e)),
        Err(e) => {
            return Err(NetError::Protocol {
                peer: to,
                reason: e.to_string(),
            })
        }
    }
    let _ = send.finish();
    match recv.read_to_end(1 << 20).await {
        Ok(bytes) => Ok(bytes),
        Err(quinn::ReadToEndError::Read(quinn::ReadError::ConnectionLost(e))) => Err(lost(e)),
        Err(e) => Err(NetError::Protocol {
            peer: to,
            reason: e.to_string(),
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_is_refused() {
    let ca = ClusterCa::generate().expect("CA");
    let (a, ha, _) = node(&ca, "a");
    let frame = ringdb::net::frame::encode_frame(&ringdb::net::Envelope::new(
        1,
        10_000,
        localhost(),
        Req::Echo(1, "anonymous".into()),
    ))
    .expect("frame");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone()).expect("root");
    let mut no_cert =
        rustls::ClientConfig::builder_with_provider(ringdb::net::tls::crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("tls13")
            .with_root_certificates(roots)
            .with_no_client_auth();
    no_cert.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(no_cert).expect("quic");
    let err = raw_request(crypto, a.local_addr(), frame.clone()).await;
    assert!(matches!(err, Err(NetError::Tls { .. })), "{err:?}");

    // A valid cluster certificate but another ALPN is refused too.
    let mut wrong_alpn = NodeTls::throwaway(&ca, "x")
        .expect("cert")
        .rustls_client_config()
        .expect("tls");
    wrong_alpn.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(wrong_alpn).expect("quic");
    let err = raw_request(crypto, a.local_addr(), frame.clone()).await;
    assert!(matches!(err, Err(NetError::Tls { .. })), "{err:?}");

    // The same raw client with a cluster certificate gets its answer: the
    // refusals above were about the certificate and the ALPN.
    let good = NodeTls::throwaway(&ca, "good")
        .expect("cert")
        .rustls_client_config()
        .expect("tls");
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(good).expect("quic");
    let resp = raw_request(crypto, a.local_addr(), frame)
        .await
        .expect("answer");
    let env = ringdb::net::frame::decode_frame::<Resp>(&resp).expect("decode");
    assert_eq!(env.request_id, 1);
    assert_eq!(ha.requests.load(Ordering::SeqCst), 1);
    assert_eq!(ha.datagrams.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtu_discovery_finds_bigger_packets_on_loopback_and_bursts_lose_none() {
    let ca = ClusterCa::generate().expect("CA");
    let (a, _ha, _a_datagrams) = node(&ca, "a");
    let (b, _hb, _b_datagrams) = node(&ca, "b");
    let resp = a
        .request(b.local_addr(), Req::Echo(0, "hello".into()), T)
        .await;
    assert!(matches!(resp, Ok(Resp::Echo { n: 0, .. })), "{resp:?}");
    assert_eq!(
        a.path_stats(a.local_addr()),
        None,
        "no connection to itself"
    );

    // QUIC starts at 1200-byte packets; discovery probes upward and
    // loopback carries far more than quinn's own 1452-byte bound.
    let start = std::time::Instant::now();
    let mut path = a.path_stats(b.local_addr()).expect("connected");
    while path.mtu <= 1452 && start.elapsed() < T {
        tokio::time::sleep(Duration::from_millis(50)).await;
        path = a.path_stats(b.local_addr()).expect("still connected");
    }
    assert!(
        path.mtu > 1452 && path.mtu <= ringdb::net::udp::MAX_UDP_PAYLOAD,
        "{path:?} after {:?}",
        start.elapsed()
    );

    // A burst: hundreds of 3 KB requests at once fill many full-size
    // packets, which quinn sends ten at a time in one GSO send. On
    // loopback none may be lost: a send the kernel refuses as too big is
    // a whole batch lost (and a stall until QUIC notices).
    echo_concurrently(&a, &b, 300, |n| format!("{n:>3000}")).await;
    let after = a.path_stats(b.local_addr()).expect("still connected");
    assert!(
        after.sent_packets > path.sent_packets + 50,
        "the burst took many packets: {path:?} -> {after:?}"
    );
    assert_eq!(after.lost_packets, 0, "{after:?}");
    a.shutdown().await;
    b.shutdown().await;
}
