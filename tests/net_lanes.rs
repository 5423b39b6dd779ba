//! Request lanes (`net::mux`) over real QUIC: many requests on one stream,
//! answered out of order, rejections per request, a lane whose framing
//! breaks closed alone, large requests on streams of their own, and a peer
//! that predates lanes still reachable.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ringdb::net::frame::{self, code, Envelope};
use ringdb::net::mux::{LaneMessage, LaneReader, LANE_MAGIC};
use ringdb::net::quic::LANE_MAX_REQUEST;
use ringdb::net::tls::{ClusterCa, NodeTls};
use ringdb::net::{BoxFuture, Handler, QuicConfig, QuicTransport, Transport};
use serde::{Deserialize, Serialize};
use support::peer::localhost;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Req {
    /// Answer after this many milliseconds with this number.
    Echo { delay_ms: u64, n: u64 },
    /// A large request: answered with its length.
    Blob(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Resp {
    Echo(u64),
    Len(usize),
}

#[derive(Default)]
struct Echo {
    requests: AtomicUsize,
}

impl Handler<Req, Resp> for Echo {
    fn on_request(&self, _from: SocketAddr, req: Req) -> BoxFuture<'static, Resp> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            match req {
                Req::Echo { delay_ms, n } => {
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                    Resp::Echo(n)
                }
                Req::Blob(bytes) => Resp::Len(bytes.len()),
            }
        })
    }

    fn on_datagram(&self, _from: SocketAddr, _payload: Bytes) {}
}

fn node(ca: &ClusterCa, name: &str) -> (QuicTransport<Req, Resp>, Arc<Echo>) {
    let handler = Arc::new(Echo::default());
    let config = QuicConfig::new(localhost(), NodeTls::throwaway(ca, name).expect("cert"));
    let transport = QuicTransport::bind(config, handler.clone()).expect("bind");
    (transport, handler)
}

fn chunk(request_id: u64, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = request_id.to_be_bytes().to_vec();
    bytes.push(kind);
    bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

fn request_frame(id: u64, req: &Req) -> Vec<u8> {
    frame::encode_frame(&Envelope::new(id, 10_000, localhost(), req)).expect("frame")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_share_a_lane_and_finish_out_of_order() {
    let ca = ClusterCa::generate().expect("CA");
    let (a, _) = node(&ca, "a");
    let (b, b_handler) = node(&ca, "b");
    let b_addr = b.local_addr();
    // The first request is slow (5 s), the others fast: on one stream,
    // answers that waited for the slow one would all take as long. The
    // margin is wide so that a loaded machine cannot fake the order.
    let a = Arc::new(a);
    let slow = {
        let a = a.clone();
        tokio::spawn(async move {
            a.request(
                b_addr,
                Req::Echo {
                    delay_ms: 5000,
                    n: 0,
                },
                Duration::from_secs(10),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    let fast: Vec<_> = (1..=200u64)
        .map(|n| {
            let a = a.clone();
            tokio::spawn(async move {
                a.request(
                    b_addr,
                    Req::Echo { delay_ms: 0, n },
                    Duration::from_secs(10),
                )
                .await
            })
        })
        .collect();
    for (n, task) in (1..=200u64).zip(fast) {
        assert_eq!(task.await.expect("task"), Ok(Resp::Echo(n)));
    }
    assert!(
        !slow.is_finished(),
        "the fast requests waited for the slow one ({:?})",
        started.elapsed()
    );
    assert_eq!(slow.await.expect("task"), Ok(Resp::Echo(0)));

    // A request too large for a lane goes on a stream of its own.
    let blob = vec![7u8; LANE_MAX_REQUEST + 1000];
    assert_eq!(
        a.request(b_addr, Req::Blob(blob), Duration::from_secs(10))
            .await,
        Ok(Resp::Len(LANE_MAX_REQUEST + 1000))
    );
    assert_eq!(b_handler.requests.load(Ordering::SeqCst), 202);
    // A request whose deadline passes is a timeout, and the lane goes on.
    let late = a
        .request(
            b_addr,
            Req::Echo {
                delay_ms: 2000,
                n: 1,
            },
            Duration::from_millis(200),
        )
        .await;
    assert!(
        matches!(late, Err(ringdb::net::NetError::Timeout { .. })),
        "{late:?}"
    );
    assert_eq!(
        a.request(
            b_addr,
            Req::Echo { delay_ms: 0, n: 5 },
            Duration::from_secs(10)
        )
        .await,
        Ok(Resp::Echo(5))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_that_breaks_its_framing_is_closed_alone() {
    let ca = ClusterCa::generate().expect("CA");
    let (a, handler) = node(&ca, "a");
    let a_addr = a.local_addr();

    let (_endpoint, conn) = support::peer::certified_raw_peer(&ca, "evil", a_addr).await;

    // A good request, a request that does not decode, another good one.
    let (mut send, recv) = conn.open_bi().await.expect("open lane");
    let mut bytes = LANE_MAGIC.to_vec();
    bytes.extend(chunk(
        5,
        1,
        &request_frame(5, &Req::Echo { delay_ms: 0, n: 50 }),
    ));
    // Right length and version, a body that is not a request.
    let mut garbage = 6u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(&frame::PROTOCOL_VERSION.to_be_bytes());
    garbage.extend_from_slice(&[0xff; 4]);
    bytes.extend(chunk(6, 1, &garbage));
    bytes.extend(chunk(
        7,
        1,
        &request_frame(7, &Req::Echo { delay_ms: 0, n: 70 }),
    ));
    send.write_all(&bytes).await.expect("write");
    let mut reader = LaneReader::new(recv, 1 << 20, 1 << 20, true);
    let mut answers = HashMap::new();
    for _ in 0..3 {
        let (id, message) = tokio::time::timeout(Duration::from_secs(10), reader.next())
            .await
            .expect("answer in time")
            .expect("lane readable")
            .expect("a message");
        answers.insert(id, message);
    }
    assert_eq!(answers.get(&6), Some(&LaneMessage::Reject(code::MALFORMED)));
    for (id, n) in [(5u64, 50u64), (7, 70)] {
        let Some(LaneMessage::Frame(response)) = answers.get(&id) else {
            panic!("no response to {id}: {answers:?}");
        };
        let envelope = frame::decode_frame::<Resp>(response).expect("response frame");
        assert_eq!((envelope.request_id, envelope.body), (id, Resp::Echo(n)));
    }

    // A chunk of an unknown kind breaks the framing: the node stops reading
    // the lane and ends it.
    send.write_all(&chunk(8, 9, b"?")).await.expect("write");
    let end = tokio::time::timeout(Duration::from_secs(10), reader.next())
        .await
        .expect("the lane ends in time");
    assert!(matches!(end, Ok(None)), "{end:?}");
    let stopped = tokio::time::timeout(Duration::from_secs(10), send.stopped())
        .await
        .expect("stopped in time");
    assert_eq!(
        stopped.ok().flatten().map(|c| c.into_inner()),
        Some(code::MALFORMED)
    );
    assert_eq!(a.stats().malformed, 2, "{:?}", a.stats());

    // The connection and the node still serve: a new lane on the same
    // connection, and a good node.
    let (mut send, recv) = conn.open_bi().await.expect("open lane");
    let mut bytes = LANE_MAGIC.to_vec();
    bytes.extend(chunk(
        9,
        1,
        &request_frame(9, &Req::Echo { delay_ms: 0, n: 90 }),
    ));
    send.write_all(&bytes).await.expect("write");
    send.finish().expect("finish");
    let mut reader = LaneReader::new(recv, 1 << 20, 1 << 20, true);
    let (id, _) = reader
        .next()
        .await
        .expect("lane readable")
        .expect("a message");
    assert_eq!(id, 9);
    assert!(matches!(reader.next().await, Ok(None)));
    let (b, _) = node(&ca, "b");
    assert_eq!(
        b.request(
            a_addr,
            Req::Echo { delay_ms: 0, n: 3 },
            Duration::from_secs(10)
        )
        .await,
        Ok(Resp::Echo(3))
    );
    assert_eq!(handler.requests.load(Ordering::SeqCst), 4);
}

/// A node of the version before lanes: it reads every stream as one
/// request frame, so it resets a lane (its magic reads as a 1.3 GB length)
/// with `TOO_LARGE`.
async fn serve_like_an_older_node(endpoint: quinn::Endpoint, lanes_seen: Arc<AtomicUsize>) {
    while let Some(incoming) = endpoint.accept().await {
        let lanes_seen = lanes_seen.clone();
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                let lanes_seen = lanes_seen.clone();
                tokio::spawn(async move {
                    let mut first = [0u8; 4];
                    if recv.read_exact(&mut first).await.is_err() {
                        return;
                    }
                    if first == LANE_MAGIC {
                        lanes_seen.fetch_add(1, Ordering::SeqCst);
                        let _ = recv.stop(quinn::VarInt::from_u64(code::TOO_LARGE).expect("code"));
                        let _ = send.reset(quinn::VarInt::from_u64(code::TOO_LARGE).expect("code"));
                        return;
                    }
                    let Ok(rest) = recv.read_to_end(1 << 20).await else {
                        return;
                    };
                    let request = [&first[..], &rest[..]].concat();
                    let Ok(envelope) = frame::decode_frame::<Req>(&request) else {
                        return;
                    };
                    let response = frame::encode_frame(&Envelope::new(
                        envelope.request_id,
                        0,
                        localhost(),
                        Resp::Echo(1),
                    ))
                    .expect("frame");
                    let _ = send.write_all(&response).await;
                    let _ = send.finish();
                });
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_lanes_gets_a_stream_per_request() {
    let ca = ClusterCa::generate().expect("CA");
    let old_tls = NodeTls::throwaway(&ca, "old").expect("cert");
    let server = quinn::ServerConfig::with_crypto(old_tls.quic_server_crypto().expect("crypto"));
    let endpoint = quinn::Endpoint::server(server, localhost()).expect("endpoint");
    let old_addr = endpoint.local_addr().expect("address");
    let lanes_seen = Arc::new(AtomicUsize::new(0));
    tokio::spawn(serve_like_an_older_node(endpoint, lanes_seen.clone()));

    let (a, _) = node(&ca, "a");
    // The first request may fail with the refused lane; from then on every
    // request is answered on a stream of its own, and no lane is tried
    // again.
    let mut answered = 0;
    for n in 0..20 {
        let result = a
            .request(
                old_addr,
                Req::Echo { delay_ms: 0, n },
                Duration::from_secs(5),
            )
            .await;
        match result {
            Ok(Resp::Echo(1)) => answered += 1,
            other => assert!(n == 0, "request {n}: {other:?}"),
        }
    }
    assert!(answered >= 19, "{answered} of 20 answered");
    assert_eq!(lanes_seen.load(Ordering::SeqCst), 1);
}
