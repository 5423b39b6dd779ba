//! Bad peers: a client with a valid cluster certificate that sends garbage
//! (random bytes, truncated frames, huge lengths, another protocol version,
//! bodies of the wrong type, streams it never finishes, junk datagrams). The
//! node rejects each with a typed error, counts it, and keeps serving. And
//! the frame decoder never panics on any bytes.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use ringdb::net::frame::{self, code, Envelope, PROTOCOL_VERSION};
use ringdb::net::tls::{ClusterCa, NodeTls};
use ringdb::net::{BoxFuture, Handler, NetError, QuicConfig, QuicTransport, Transport};
use serde::{Deserialize, Serialize};
use support::peer::localhost;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Req {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        ttl: Option<u32>,
    },
    Get(Vec<u8>),
    Nested(Vec<Vec<String>>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Resp {
    Ok(u64),
}

#[derive(Default)]
struct Counting {
    requests: AtomicUsize,
    datagrams: AtomicUsize,
}

impl Handler<Req, Resp> for Counting {
    fn on_request(&self, _from: SocketAddr, _req: Req) -> BoxFuture<'static, Resp> {
        let n = self.requests.fetch_add(1, Ordering::SeqCst) as u64;
        Box::pin(async move { Resp::Ok(n) })
    }

    fn on_datagram(&self, _from: SocketAddr, _payload: Bytes) {
        self.datagrams.fetch_add(1, Ordering::SeqCst);
    }
}

/// What the node did with one stream of garbage.
#[derive(Debug, PartialEq)]
enum Answer {
    Frame(Vec<u8>),
    Reset(u64),
}

/// Opens a stream on `conn`, writes `bytes`, finishes if `finish`, reads the
/// answer.
async fn send_raw(conn: &quinn::Connection, bytes: &[u8], finish: bool) -> Answer {
    let (mut send, mut recv) = conn.open_bi().await.expect("open stream");
    send.write_all(bytes).await.expect("write");
    if finish {
        send.finish().expect("finish");
    }
    match recv.read_to_end(1 << 20).await {
        Ok(frame) => Answer::Frame(frame),
        Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => {
            Answer::Reset(code.into_inner())
        }
        Err(e) => panic!("unexpected stream error: {e}"),
    }
}

fn frame_of<T: Serialize>(id: u64, body: &T) -> Vec<u8> {
    frame::encode_frame(&Envelope::new(id, 10_000, localhost(), body)).expect("frame")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_a_certified_peer_does_not_hurt_the_node() {
    let ca = ClusterCa::generate().expect("CA");
    let handler = Arc::new(Counting::default());
    let mut config = QuicConfig::new(localhost(), NodeTls::throwaway(&ca, "a").expect("cert"));
    config.stream_read_timeout = Duration::from_millis(500);
    let a: QuicTransport<Req, Resp> = QuicTransport::bind(config, handler.clone()).expect("bind");
    let a_addr = a.local_addr();

    // The evil peer: a raw quinn client with a valid cluster certificate.
    let (_endpoint, conn) = support::peer::certified_raw_peer(&ca, "evil", a_addr).await;

    let good = frame_of(1, &Req::Get(b"k".to_vec()));
    let mut malformed = 0u64;

    // A well-formed request works on this connection.
    let Answer::Frame(resp) = send_raw(&conn, &good, true).await else {
        panic!("no answer to a good request");
    };
    assert_eq!(
        frame::decode_frame::<Resp>(&resp).map(|e| e.request_id),
        Ok(1)
    );

    // Random bytes.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for len in [1usize, 3, 4, 5, 17, 100, 4096] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let answer = send_raw(&conn, &bytes, true).await;
        assert!(
            matches!(
                answer,
                Answer::Reset(code::MALFORMED) | Answer::Reset(code::TOO_LARGE)
            ),
            "{len} random bytes: {answer:?}"
        );
        malformed += 1;
    }
    // An empty stream.
    assert_eq!(
        send_raw(&conn, &[], true).await,
        Answer::Reset(code::MALFORMED)
    );
    malformed += 1;
    // Truncated frames: every proper prefix of a good frame.
    for cut in 1..good.len() {
        assert_eq!(
            send_raw(&conn, &good[..cut], true).await,
            Answer::Reset(code::MALFORMED),
            "frame cut at {cut}"
        );
        malformed += 1;
    }
    // Trailing garbage after a good frame.
    let mut long = good.clone();
    long.extend_from_slice(b"junk");
    assert_eq!(
        send_raw(&conn, &long, true).await,
        Answer::Reset(code::MALFORMED)
    );
    malformed += 1;
    // A huge length prefix (the data is not there).
    let mut huge = good.clone();
    huge[..4].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        send_raw(&conn, &huge, true).await,
        Answer::Reset(code::TOO_LARGE)
    );
    malformed += 1;
    let mut over = good.clone();
    over[..4].copy_from_slice(&((frame::MAX_FRAME_SIZE + 1) as u32).to_be_bytes());
    assert_eq!(
        send_raw(&conn, &over, true).await,
        Answer::Reset(code::TOO_LARGE)
    );
    malformed += 1;
    // A body of the wrong type (a valid frame of a String, and a body whose
    // inner length claims gigabytes).
    let wrong = frame_of(2, &"not a request".to_string());
    assert_eq!(
        send_raw(&conn, &wrong, true).await,
        Answer::Reset(code::MALFORMED)
    );
    malformed += 1;
    let mut lying = frame_of(3, &Req::Nested(vec![vec!["x".into()]]));
    let body_start = lying.len() - 4;
    lying[body_start..].copy_from_slice(&[0xfc, 0xff, 0xff, 0xff]);
    assert_eq!(
        send_raw(&conn, &lying, true).await,
        Answer::Reset(code::MALFORMED)
    );
    malformed += 1;
    // A stream the peer never finishes is cut after the read timeout.
    assert_eq!(
        send_raw(&conn, &good[..3], false).await,
        Answer::Reset(code::MALFORMED)
    );
    malformed += 1;

    // Another protocol version: answered with ours, which the requester
    // reads as a version mismatch.
    let mut future = good.clone();
    future[4..6].copy_from_slice(&(PROTOCOL_VERSION + 1).to_be_bytes());
    let Answer::Frame(reply) = send_raw(&conn, &future, true).await else {
        panic!("no answer to another version");
    };
    assert_eq!(frame::frame_version(&reply), Ok(PROTOCOL_VERSION));
    assert_eq!(reply, frame::version_only_frame());

    // Junk datagrams: too short for a version, a version header with a
    // broken sender address (malformed), and two of other versions.
    let mut broken_header = PROTOCOL_VERSION.to_be_bytes().to_vec();
    broken_header.extend_from_slice(&[0xff; 5]);
    for d in [Bytes::from_static(b"\x00"), Bytes::from(broken_header)] {
        conn.send_datagram(d).expect("send datagram");
    }
    let junk_datagrams = 2u64;
    let mut other_version = (PROTOCOL_VERSION + 1).to_be_bytes().to_vec();
    other_version.extend_from_slice(b"payload");
    conn.send_datagram(Bytes::from(other_version))
        .expect("send datagram");
    conn.send_datagram(Bytes::from_static(b"\xff\xff\xff\xff"))
        .expect("send datagram");

    // The node still serves: the evil connection and a good node both get
    // answers.
    let Answer::Frame(resp) = send_raw(&conn, &frame_of(9, &Req::Get(b"k".to_vec())), true).await
    else {
        panic!("no answer after the garbage");
    };
    assert_eq!(
        frame::decode_frame::<Resp>(&resp).map(|e| e.request_id),
        Ok(9)
    );
    let b: QuicTransport<Req, Resp> = QuicTransport::bind(
        QuicConfig::new(localhost(), NodeTls::throwaway(&ca, "b").expect("cert")),
        Arc::new(Counting::default()),
    )
    .expect("bind");
    let resp = b
        .request(a_addr, Req::Get(b"k".to_vec()), Duration::from_secs(10))
        .await;
    assert!(matches!(resp, Ok(Resp::Ok(_))), "{resp:?}");
    b.send_datagram(a_addr, Bytes::from_static(b"real gossip"))
        .await
        .expect("datagram");

    // Datagrams are processed asynchronously: wait (bounded) for the good
    // one, which was sent last on another connection, and for the counters.
    let mut waited = 0;
    while (handler.datagrams.load(Ordering::SeqCst) == 0
        || a.stats().malformed < malformed + junk_datagrams
        || a.stats().version_mismatches < 3)
        && waited < 500
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
    }
    let stats = a.stats();
    assert_eq!(stats.malformed, malformed + junk_datagrams, "{stats:?}");
    assert_eq!(stats.version_mismatches, 3, "{stats:?}");
    assert_eq!(stats.datagrams_dropped, junk_datagrams + 2, "{stats:?}");
    assert_eq!(stats.requests_in, 3, "{stats:?}");
    assert_eq!(handler.requests.load(Ordering::SeqCst), 3);
    assert_eq!(handler.datagrams.load(Ordering::SeqCst), 1);
}

fn arb_req() -> impl Strategy<Value = Req> {
    prop_oneof![
        (
            proptest::collection::vec(any::<u8>(), 0..32),
            proptest::collection::vec(any::<u8>(), 0..64),
            any::<Option<u32>>()
        )
            .prop_map(|(key, value, ttl)| Req::Put { key, value, ttl }),
        proptest::collection::vec(any::<u8>(), 0..32).prop_map(Req::Get),
        proptest::collection::vec(proptest::collection::vec(".{0,8}", 0..4), 0..4)
            .prop_map(Req::Nested),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Any bytes: the decoders return a value or a typed error, never panic.
    #[test]
    fn decoders_never_panic_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = frame::decode_frame::<Req>(&bytes);
        let _ = frame::decode_frame::<Resp>(&bytes);
        let _ = frame::frame_version(&bytes);
        let _ = frame::decode_datagram(&Bytes::from(bytes));
    }

    /// Random bytes behind a correct length prefix and version reach the
    /// body decoder, which must reject them cleanly.
    #[test]
    fn body_decoder_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut frame = ((body.len() + 2) as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        frame.extend_from_slice(&body);
        match frame::decode_frame::<Req>(&frame) {
            Ok(env) => prop_assert_eq!(env.protocol_version, PROTOCOL_VERSION),
            Err(NetError::Malformed { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }

    /// Valid frames round-trip; with bytes flipped they decode to something
    /// or fail with a typed error.
    #[test]
    fn mutated_frames_never_panic(
        req in arb_req(),
        id in any::<u64>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
    ) {
        let frame = frame_of(id, &req);
        let env = frame::decode_frame::<Req>(&frame).expect("round trip");
        prop_assert_eq!(&env.body, &req);
        prop_assert_eq!(env.request_id, id);
        let mut mutated = frame.clone();
        for (at, byte) in flips {
            let i = at.index(mutated.len());
            mutated[i] ^= byte;
        }
        let _ = frame::decode_frame::<Req>(&mutated);
        let datagram = frame::encode_datagram(localhost(), &frame).expect("datagram");
        let (from, payload) = frame::decode_datagram(&datagram).expect("datagram round trip");
        prop_assert_eq!(from, localhost());
        prop_assert_eq!(&payload[..], &frame[..]);
        let _ = frame::decode_datagram(&Bytes::from(mutated));
    }
}
