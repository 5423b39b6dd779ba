//! Bad peers against a real `ringdb server` process: an insider holding a
//! certificate of the node's cluster CA sends its peer port garbage
//! streams (random bytes, truncated frames, huge length prefixes, another
//! protocol version, bodies that are not a `PeerRequest`), hostile but
//! well-formed `PeerRequest`s (unknown tables, wrong schema ids, absurd
//! limits, reversed bounds, bad keys, garbage batches), request lanes
//! carrying garbage requests and broken chunk framing, a stream it never
//! finishes, junk QUIC datagrams (some shaped like gossip), and plain
//! non-QUIC UDP junk. Everything is drawn from a seeded RNG.
//!
//! Afterwards the process still runs, every rejection was logged where
//! the node counts it (the transport's and gossip's counters are not
//! exposed, so their log lines stand in), clients still read the rows
//! written before, and a second node joins the cluster through the
//! attacked port.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cql_lite::Value;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use ringdb::coordinator::messages::WireSlice;
use ringdb::coordinator::{PeerError, PeerRequest, PeerResponse};
use ringdb::model::key::{self, serialize_partition_key};
use ringdb::model::{Entry, KeyBound, PartitionHeader};
use ringdb::net::frame::{self, code, Envelope, MAX_FRAME_SIZE, PROTOCOL_VERSION};
use ringdb::net::mux::{self, LaneClient, LaneError, LaneMessage, LaneReader, LANE_MAGIC};
use ringdb::net::quic::LANE_MAX_REQUEST;
use ringdb::net::tls::ClusterCa;
use ringdb::query::api::{QueryResult, TableRef};
use support::process::{make_node, new_cluster, Cluster, Node};

const SEED: u64 = 0x6261_645f_7065_6572;
const ROWS: i32 = 24;
/// How long one exchange with the node may take before the test calls it
/// a hang.
const EXCHANGE: Duration = Duration::from_secs(30);

/// What the node did with one stream.
#[derive(Debug, PartialEq)]
enum Answer {
    Frame(Vec<u8>),
    Reset(u64),
}

/// Rejections the node must have logged, by log message.
#[derive(Debug, Default)]
struct Expected {
    /// "rejecting malformed request frame" (streams and lane requests).
    malformed_frames: usize,
    /// "request of another protocol version".
    version_mismatches: usize,
    /// "closing a request lane that does not parse".
    broken_lanes: usize,
    /// "peer did not finish its request frame in time".
    unfinished: usize,
}

/// Sends `bytes` on a new stream of `conn` (finished unless `finish` is
/// false) and reads the node's answer.
async fn exchange(conn: &quinn::Connection, bytes: &[u8], finish: bool) -> Answer {
    let talk = async {
        let (mut send, mut recv) = conn.open_bi().await.expect("open stream");
        send.write_all(bytes).await.expect("write");
        if finish {
            send.finish().expect("finish");
        }
        match recv.read_to_end(2 * MAX_FRAME_SIZE).await {
            Ok(frame) => Answer::Frame(frame),
            Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => {
                Answer::Reset(code.into_inner())
            }
            Err(e) => panic!("unexpected stream error: {e}"),
        }
    };
    tokio::time::timeout(EXCHANGE, talk)
        .await
        .expect("the node answered a stream in time")
}

fn frame_of<T: serde::Serialize>(id: u64, deadline_ms: u32, body: &T) -> Vec<u8> {
    let from = SocketAddr::from(([127, 0, 0, 1], 9));
    frame::encode_frame(&Envelope::new(id, deadline_ms, from, body)).expect("frame")
}

fn random_bytes(rng: &mut StdRng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.random::<u8>()).collect()
}

/// Random bytes, as many as a random pick from `lens`.
fn junk(rng: &mut StdRng, lens: std::ops::Range<usize>) -> Vec<u8> {
    let len = rng.random_range(lens);
    random_bytes(rng, len)
}

/// A PeerRequest sent on a stream of its own; its decoded response.
async fn ask(conn: &quinn::Connection, id: u64, req: &PeerRequest) -> PeerResponse {
    match exchange(conn, &frame_of(id, 10_000, req), true).await {
        Answer::Frame(bytes) => {
            let env = frame::decode_frame::<PeerResponse>(&bytes).expect("a response frame");
            assert_eq!(env.request_id, id, "{req:?}");
            env.body
        }
        Answer::Reset(code) => panic!("{req:?} was refused with code {code}"),
    }
}

/// How the node answers a one-request stream of `bytes` (which must not
/// start with the lane magic), by the frame codec; `None` if the bytes
/// happen to be a valid request.
fn predicted(bytes: &[u8], expected: &mut Expected) -> Option<Answer> {
    match frame::decode_frame::<PeerRequest>(bytes) {
        Ok(_) => None,
        Err(ringdb::net::NetError::VersionMismatch { .. }) => {
            expected.version_mismatches += 1;
            Some(Answer::Frame(frame::version_only_frame()))
        }
        Err(ringdb::net::NetError::TooLarge { .. }) => {
            expected.malformed_frames += 1;
            Some(Answer::Reset(code::TOO_LARGE))
        }
        Err(_) => {
            expected.malformed_frames += 1;
            Some(Answer::Reset(code::MALFORMED))
        }
    }
}

/// A lane chunk header: request id, kind, length.
fn chunk_header(id: u64, kind: u8, len: u32) -> Vec<u8> {
    let mut h = id.to_be_bytes().to_vec();
    h.push(kind);
    h.extend_from_slice(&len.to_be_bytes());
    h
}

/// Opens a raw lane, writes `bytes` after the magic, finishes, and waits
/// until the node ends its side (a clean end: the lane is closed, not the
/// connection).
async fn raw_lane(conn: &quinn::Connection, bytes: &[u8]) {
    let talk = async {
        let (mut send, mut recv) = conn.open_bi().await.expect("open lane");
        let mut all = LANE_MAGIC.to_vec();
        all.extend_from_slice(bytes);
        // The node may stop reading as soon as it sees the framing break.
        if send.write_all(&all).await.is_ok() {
            let _ = send.finish();
        }
        let mut answers = LaneReader::new(&mut recv, usize::MAX, usize::MAX, true);
        while let Some((_, message)) = answers.next().await.expect("the node's lane answers parse")
        {
            assert!(
                matches!(message, LaneMessage::Reject(_))
                    || matches!(&message, LaneMessage::Frame(f) if frame::frame_version(f).is_ok()),
                "{message:?}"
            );
        }
    };
    tokio::time::timeout(EXCHANGE, talk)
        .await
        .expect("the node ended a broken lane in time");
}

/// What the node does with a lane carrying `bytes` after the magic, by its
/// own chunk reader over the same bytes.
async fn predict_lane(bytes: &[u8], expected: &mut Expected) {
    let mut reader = LaneReader::new(bytes, LANE_MAX_REQUEST, mux::MAX_BUFFERED_REQUESTS, false);
    loop {
        match reader.next().await {
            Ok(Some((_, LaneMessage::Frame(request)))) => {
                // A request that decodes is served, not counted.
                let _ = predicted(&request, expected);
            }
            Ok(Some((_, LaneMessage::Reject(_)))) | Ok(None) => return,
            Err(LaneError::Io(_)) => return,
            Err(_) => {
                expected.broken_lanes += 1;
                return;
            }
        }
    }
}

/// Everything the bad peer sends, over QUIC. Returns what the node must
/// have logged.
async fn hammer(ca: &ClusterCa, peer: SocketAddr, rng: &mut StdRng, victim: &Path) -> Expected {
    let mut expected = Expected::default();
    let (_endpoint, conn) = support::peer::certified_raw_peer(ca, "evil", peer).await;
    let conn2 = conn.clone();

    // A stream never finished: cut after the node's read timeout (10 s),
    // meanwhile the rest goes on.
    let never_finished = tokio::spawn(async move { exchange(&conn2, &[0, 0, 1], false).await });
    expected.unfinished += 1;

    // The schema, as a peer pulls it: the table's id for the requests
    // below.
    let PeerResponse::Schema(schema) = ask(&conn, 1, &PeerRequest::GetSchema).await else {
        panic!("no schema");
    };
    let table = schema.get_table("ks", "kv").expect("ks.kv in the schema");
    let kv = TableRef {
        keyspace: "ks".into(),
        table: "kv".into(),
        id: table.id,
    };
    let pk_types = table.partition_types();
    let pk = |k: i32| serialize_partition_key(&[Value::Int(k)], &pk_types).expect("key");

    // Hostile but well-formed requests.
    let unknown = TableRef {
        keyspace: "nope".into(),
        table: "nothing".into(),
        id: rng.random(),
    };
    let wrong_id = TableRef {
        id: kv.id ^ 1,
        ..kv.clone()
    };
    let everything = WireSlice {
        lower: KeyBound::Unbounded,
        upper: KeyBound::Unbounded,
        reverse: false,
        limit: Some(u32::MAX),
    };
    let backwards = WireSlice {
        lower: KeyBound::Included(vec![0xff; 40]),
        upper: KeyBound::Excluded(vec![0x00]),
        reverse: true,
        limit: Some(0),
    };
    let empty_range = WireSlice {
        lower: KeyBound::Excluded(vec![7; 3]),
        upper: KeyBound::Excluded(vec![7; 3]),
        reverse: false,
        limit: None,
    };
    let mut id = 100;
    let mut next_id = || {
        id += 1;
        id
    };
    for t in [&unknown, &wrong_id] {
        for req in [
            PeerRequest::Read {
                table: t.clone(),
                pk: pk(1),
                slice: everything.clone(),
            },
            PeerRequest::ReadDigest {
                table: t.clone(),
                pk: pk(1),
                slice: everything.clone(),
            },
            PeerRequest::Scan {
                table: t.clone(),
                lower: KeyBound::Unbounded,
                upper: KeyBound::Unbounded,
                max_partitions: u32::MAX,
                rows_per_partition: None,
            },
            PeerRequest::Stamp {
                table: t.clone(),
                pk: pk(1),
                mutations: Vec::new(),
            },
            PeerRequest::Apply {
                table: t.clone(),
                entries: vec![(
                    key::header_key(&key::partition_prefix(&pk(1))),
                    Entry::Header(PartitionHeader::default()),
                )],
            },
        ] {
            let answer = ask(&conn, next_id(), &req).await;
            assert!(
                matches!(answer, PeerResponse::Error(PeerError::UnknownTable(_))),
                "{req:?}: {answer:?}"
            );
        }
        // A truncate also removes the data of dropped tables, which the
        // schema no longer names: it answers, and (the scan below checks)
        // leaves the real table alone.
        let req = PeerRequest::Truncate { table: t.clone() };
        assert_eq!(ask(&conn, next_id(), &req).await, PeerResponse::Applied);
    }
    // Names that are paths: a truncate must not reach outside the data
    // directory (`victim` is shaped like a table's directory elsewhere).
    let victim_table = victim
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.rsplit_once('-'))
        .expect("victim directory name");
    let outside = TableRef {
        keyspace: victim.parent().expect("parent").display().to_string(),
        table: victim_table.0.to_string(),
        id: u128::from_str_radix(victim_table.1, 16).expect("hex id"),
    };
    for table in [
        outside.clone(),
        TableRef {
            keyspace: "..".into(),
            ..outside.clone()
        },
        TableRef {
            keyspace: "ks".into(),
            table: format!("../../../{}", outside.table),
            id: outside.id,
        },
    ] {
        let req = PeerRequest::Truncate { table };
        let answer = ask(&conn, next_id(), &req).await;
        assert!(
            matches!(answer, PeerResponse::Error(_)),
            "{req:?}: {answer:?}"
        );
    }
    assert!(
        victim.join("keep").exists(),
        "a peer's truncate removed {}",
        victim.display()
    );

    // Whole-table reads with absurd limits answer what was written.
    let answer = ask(
        &conn,
        next_id(),
        &PeerRequest::Scan {
            table: kv.clone(),
            lower: KeyBound::Unbounded,
            upper: KeyBound::Unbounded,
            max_partitions: u32::MAX,
            rows_per_partition: Some(u32::MAX),
        },
    )
    .await;
    let PeerResponse::Partitions { partitions, cut } = answer else {
        panic!("scan: {answer:?}");
    };
    assert_eq!((partitions.len(), cut), (ROWS as usize, false));
    for reverse in [false, true] {
        let answer = ask(
            &conn,
            next_id(),
            &PeerRequest::Read {
                table: kv.clone(),
                pk: pk(3),
                slice: WireSlice {
                    reverse,
                    ..everything.clone()
                },
            },
        )
        .await;
        let PeerResponse::Partition(part) = answer else {
            panic!("read: {answer:?}");
        };
        assert_eq!(part.rows.len(), 1, "{part:?}");
    }
    // Reversed, empty and garbage bounds and keys: any answer but a
    // failure of the node.
    for _ in 0..8 {
        let garbage_pk = junk(rng, 0..64);
        let bound = |rng: &mut StdRng| match rng.random_range(0..3) {
            0 => KeyBound::Unbounded,
            1 => KeyBound::Included(random_bytes(rng, 9)),
            _ => KeyBound::Excluded(random_bytes(rng, 9)),
        };
        let slice = WireSlice {
            lower: bound(rng),
            upper: bound(rng),
            reverse: rng.random(),
            limit: [None, Some(0), Some(1), Some(u32::MAX)][rng.random_range(0..4)],
        };
        for req in [
            PeerRequest::Read {
                table: kv.clone(),
                pk: garbage_pk.clone(),
                slice: slice.clone(),
            },
            PeerRequest::ReadDigest {
                table: kv.clone(),
                pk: pk(rng.random_range(0..ROWS)),
                slice: slice.clone(),
            },
            PeerRequest::Read {
                table: kv.clone(),
                pk: pk(5),
                slice: backwards.clone(),
            },
            PeerRequest::Read {
                table: kv.clone(),
                pk: garbage_pk.clone(),
                slice: empty_range.clone(),
            },
            PeerRequest::Scan {
                table: kv.clone(),
                lower: slice.lower.clone(),
                upper: slice.upper.clone(),
                max_partitions: [0, 1, u32::MAX][rng.random_range(0..3)],
                rows_per_partition: slice.limit,
            },
            PeerRequest::Scan {
                table: kv.clone(),
                lower: KeyBound::Excluded(garbage_pk.clone()),
                upper: KeyBound::Excluded(garbage_pk),
                max_partitions: u32::MAX,
                rows_per_partition: Some(0),
            },
        ] {
            let answer = ask(&conn, next_id(), &req).await;
            assert!(
                !matches!(answer, PeerResponse::Error(PeerError::Storage(_))),
                "{req:?}: {answer:?}"
            );
        }
    }
    // Deltas under keys that are not keys, and batches that are not
    // batches, are refused.
    for len in [0usize, 1, 5, 33] {
        let req = PeerRequest::Apply {
            table: kv.clone(),
            entries: vec![(
                random_bytes(rng, len),
                Entry::Header(PartitionHeader::default()),
            )],
        };
        let answer = ask(&conn, next_id(), &req).await;
        assert!(
            matches!(answer, PeerResponse::Error(PeerError::Invalid(_))),
            "{req:?}: {answer:?}"
        );
        let req = PeerRequest::StoreBatch {
            id: rng.random(),
            payload: random_bytes(rng, len * 7),
        };
        let answer = ask(&conn, next_id(), &req).await;
        assert!(
            matches!(answer, PeerResponse::Error(PeerError::Invalid(_))),
            "{req:?}: {answer:?}"
        );
    }
    let answer = ask(
        &conn,
        next_id(),
        &PeerRequest::RemoveBatch { id: rng.random() },
    )
    .await;
    assert_eq!(answer, PeerResponse::BatchRemoved);
    let answer = ask(&conn, next_id(), &PeerRequest::RingChanges).await;
    assert_eq!(
        answer,
        PeerResponse::RingChanges {
            joining: Vec::new(),
            leaving: Vec::new()
        }
    );
    // No time at all to answer, and all the time in the world.
    for deadline in [0, 1, u32::MAX] {
        let req = frame_of(next_id(), deadline, &PeerRequest::GetSchema);
        let answer = exchange(&conn, &req, true).await;
        assert!(
            matches!(
                answer,
                Answer::Frame(_) | Answer::Reset(code::DEADLINE_EXCEEDED)
            ),
            "deadline {deadline}: {answer:?}"
        );
    }

    // Garbage on streams of their own, many at once.
    let good = frame_of(
        7,
        10_000,
        &PeerRequest::Read {
            table: kv.clone(),
            pk: pk(2),
            slice: everything.clone(),
        },
    );
    let mut cases: Vec<(Vec<u8>, Answer)> = Vec::new();
    // Random bytes, and random bodies behind a right length and version.
    for i in 0..240 {
        let len = rng.random_range(0..3000);
        let mut bytes = random_bytes(rng, len);
        if i % 2 == 1 && bytes.len() >= 6 {
            let body_len = (bytes.len() - 4) as u32;
            bytes[..4].copy_from_slice(&body_len.to_be_bytes());
            bytes[4..6].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        }
        if bytes.starts_with(&LANE_MAGIC) {
            continue;
        }
        if let Some(answer) = predicted(&bytes, &mut expected) {
            cases.push((bytes, answer));
        }
    }
    // Every prefix of a good frame: a right length prefix, fewer bytes.
    for cut in 0..good.len() {
        expected.malformed_frames += 1;
        cases.push((good[..cut].to_vec(), Answer::Reset(code::MALFORMED)));
    }
    // A good frame with trailing bytes.
    let mut long = good.clone();
    long.extend_from_slice(&random_bytes(rng, 5));
    expected.malformed_frames += 1;
    cases.push((long, Answer::Reset(code::MALFORMED)));
    // Huge length prefixes, with the data missing.
    for len in [
        u32::MAX,
        MAX_FRAME_SIZE as u32 + 1,
        0x7fff_ffff,
        rng.random_range(MAX_FRAME_SIZE as u32 + 1..u32::MAX),
    ] {
        let mut huge = good.clone();
        huge[..4].copy_from_slice(&len.to_be_bytes());
        expected.malformed_frames += 1;
        cases.push((huge, Answer::Reset(code::TOO_LARGE)));
    }
    // A right length prefix that is just short of the frame's size.
    let mut short = good.clone();
    short[..4].copy_from_slice(&((good.len() - 5) as u32).to_be_bytes());
    expected.malformed_frames += 1;
    cases.push((short, Answer::Reset(code::MALFORMED)));
    // Other protocol versions: answered with ours.
    for version in [0, PROTOCOL_VERSION + 1, u16::MAX] {
        let mut other = good.clone();
        other[4..6].copy_from_slice(&version.to_be_bytes());
        expected.version_mismatches += 1;
        cases.push((other, Answer::Frame(frame::version_only_frame())));
    }
    // Well-formed envelopes whose body is not a PeerRequest.
    for wrong in [
        frame_of(8, 1000, &"not a request".to_string()),
        frame_of(9, 1000, &(u64::MAX, vec![1u8; 100])),
        frame_of(10, 1000, &PeerResponse::Applied),
        frame_of(11, 1000, &()),
    ] {
        expected.malformed_frames += 1;
        cases.push((wrong, Answer::Reset(code::MALFORMED)));
    }
    // An envelope whose variant tag names no PeerRequest.
    let mut unknown_variant = frame_of(12, 1000, &PeerRequest::RingChanges);
    let last = unknown_variant.len() - 1;
    unknown_variant[last] = 0xfa;
    expected.malformed_frames += 1;
    cases.push((unknown_variant, Answer::Reset(code::MALFORMED)));

    let started = Instant::now();
    let cases = Arc::new(cases);
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..16 {
        let conn = conn.clone();
        let cases = cases.clone();
        tasks.spawn(async move {
            for (bytes, want) in cases.iter().skip(worker).step_by(16) {
                let got = exchange(&conn, bytes, true).await;
                assert_eq!(
                    &got,
                    want,
                    "{} bytes {:02x?}",
                    bytes.len(),
                    &bytes[..bytes.len().min(16)]
                );
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a stream worker");
    }
    eprintln!("{} garbage streams in {:?}", cases.len(), started.elapsed());

    // A lane carrying garbage requests: each is refused on its own, and
    // the lane keeps serving.
    let (send, recv) = conn.open_bi().await.expect("open lane");
    let lane = LaneClient::start(recv, send, 1 << 24, 1 << 26, |_, _| {});
    for (i, (bytes, want)) in cases.iter().enumerate().step_by(3) {
        let got = tokio::time::timeout(EXCHANGE, lane.call(i as u64, Bytes::from(bytes.clone())))
            .await
            .expect("the lane answered in time")
            .expect("the lane stays open");
        let want = match want {
            Answer::Frame(f) => LaneMessage::Frame(Bytes::from(f.clone())),
            Answer::Reset(code) => LaneMessage::Reject(*code),
        };
        assert_eq!(got, want, "lane request {i}");
        match want {
            LaneMessage::Frame(_) => expected.version_mismatches += 1,
            LaneMessage::Reject(_) => expected.malformed_frames += 1,
        }
    }
    let schema_req = frame_of(1 << 40, 10_000, &PeerRequest::GetSchema);
    match lane.call(1 << 40, Bytes::from(schema_req)).await {
        Ok(LaneMessage::Frame(f)) => assert!(matches!(
            frame::decode_frame::<PeerResponse>(&f).map(|e| e.body),
            Ok(PeerResponse::Schema(_))
        )),
        other => panic!("a good request on the lane after garbage: {other:?}"),
    }
    drop(lane);

    // Lanes whose chunk framing breaks.
    let crafted: Vec<Vec<u8>> = vec![
        chunk_header(1, 7, 0),
        chunk_header(1, 1, mux::MAX_CHUNK as u32 + 1),
        chunk_header(1, 0, 0),
        [chunk_header(1, 2, 8), vec![0; 8]].concat(),
        {
            // Parts of one request adding up to more than a lane takes.
            let mut parts = Vec::new();
            let n = LANE_MAX_REQUEST / mux::MAX_CHUNK + 1;
            for _ in 0..n {
                parts.extend(chunk_header(3, 0, mux::MAX_CHUNK as u32));
                parts.extend(std::iter::repeat_n(0xab, mux::MAX_CHUNK));
            }
            parts
        },
        [
            chunk_header(4, 1, good.len() as u32),
            good.clone(),
            chunk_header(5, 9, 1),
        ]
        .concat(),
    ];
    for bytes in &crafted {
        let before = expected.broken_lanes;
        predict_lane(bytes, &mut expected).await;
        assert_eq!(
            expected.broken_lanes,
            before + 1,
            "a crafted lane must break"
        );
        raw_lane(&conn, bytes).await;
    }
    // Lanes of random chunks: random bytes, and random bodies behind
    // plausible headers.
    for i in 0..40 {
        let bytes = if i % 2 == 0 {
            junk(rng, 1..4096)
        } else {
            let mut b = Vec::new();
            for _ in 0..rng.random_range(1..6) {
                let len = rng.random_range(0..300u32);
                b.extend(chunk_header(rng.random(), rng.random_range(0..4), len));
                let body = random_bytes(rng, len as usize);
                b.extend(body);
            }
            b
        };
        predict_lane(&bytes, &mut expected).await;
        raw_lane(&conn, &bytes).await;
    }

    // Junk datagrams: random bytes, broken headers, other versions, and
    // gossip-shaped payloads (the gossip tags with junk behind them).
    let max = conn.max_datagram_size().expect("datagrams are enabled");
    let claimed = SocketAddr::from(([127, 0, 0, 1], 1));
    let mut sent = 0;
    for i in 0..200 {
        let datagram = match i % 5 {
            0 => junk(rng, 1..max),
            1 => {
                let mut d = PROTOCOL_VERSION.to_be_bytes().to_vec();
                d.extend(junk(rng, 0..8).iter().map(|b| b | 0x80));
                d
            }
            2 => {
                let mut d = (PROTOCOL_VERSION + 1 + rng.random_range(0..100))
                    .to_be_bytes()
                    .to_vec();
                d.extend(random_bytes(rng, 30));
                d
            }
            _ => {
                let tag: u8 = [0xF0, 0xF1, 0xF2, 0x00, 0xEE][rng.random_range(0..5)];
                let mut payload = vec![tag];
                payload.extend(junk(rng, 0..200));
                frame::encode_datagram(claimed, &payload)
                    .expect("datagram")
                    .to_vec()
            }
        };
        conn.send_datagram(Bytes::from(datagram))
            .expect("send datagram");
        sent += 1;
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    eprintln!("{sent} junk datagrams");

    // The node still serves this very connection.
    let answer = ask(&conn, next_id(), &PeerRequest::RingChanges).await;
    assert!(
        matches!(answer, PeerResponse::RingChanges { .. }),
        "{answer:?}"
    );
    // And cut the stream it never got the end of.
    let answer = never_finished.await.expect("the unfinished stream task");
    assert_eq!(answer, Answer::Reset(code::MALFORMED));
    expected
}

/// Plain UDP, not QUIC, at the peer port: random bytes of many sizes,
/// empty and one-byte packets, the largest UDP payload, and packets
/// shaped like QUIC long and short headers.
fn udp_junk(peer: SocketAddr, rng: &mut StdRng) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("udp socket");
    let mut packets: Vec<Vec<u8>> = vec![Vec::new(), vec![0], vec![0xff], vec![0; 65_507]];
    for _ in 0..100 {
        let len = rng.random_range(0..1500);
        packets.push(random_bytes(rng, len));
    }
    packets.push(random_bytes(rng, 65_507));
    for version in [1u32, 0, 0xface_b00c, rng.random()] {
        // A long header (Initial) of some version, padded like a real one.
        let mut p = vec![0xc0 | rng.random_range(0..0x10u8)];
        p.extend_from_slice(&version.to_be_bytes());
        p.push(8);
        p.extend(random_bytes(rng, 8));
        p.push(8);
        p.extend(random_bytes(rng, 8));
        p.extend(random_bytes(rng, 1200 - p.len()));
        packets.push(p);
    }
    for _ in 0..20 {
        // Short headers with random connection ids.
        let mut p = vec![0x40 | rng.random_range(0..0x40u8)];
        p.extend(junk(rng, 20..1400));
        packets.push(p);
    }
    for (i, p) in packets.iter().enumerate() {
        socket.send_to(p, peer).expect("send udp junk");
        if i % 20 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn count(log: &str, message: &str) -> usize {
    log.lines().filter(|l| l.contains(message)).count()
}

fn assert_running(node: &mut Node) {
    let status = node
        .child
        .as_mut()
        .expect("started")
        .try_wait()
        .expect("wait");
    assert!(
        status.is_none(),
        "the node exited ({status:?}); log {}:\n{}",
        node.log.display(),
        std::fs::read_to_string(&node.log).unwrap_or_default()
    );
}

/// `k` and `v` of every row of ks.kv, sorted.
fn all_rows(cluster: &Cluster, node: &Node) -> Vec<(i32, i32)> {
    let client = cluster.connect(node);
    let result = cluster
        .rt
        .block_on(client.execute("SELECT k, v FROM ks.kv", vec![]))
        .expect("select");
    cluster.rt.block_on(client.close());
    let QueryResult::Rows(rows) = result.result else {
        panic!("not rows: {:?}", result.result);
    };
    let mut out: Vec<(i32, i32)> = rows
        .rows
        .iter()
        .map(|r| match (&r.values[0], &r.values[1]) {
            (Value::Int(k), Value::Int(v)) => (*k, *v),
            other => panic!("not two ints: {other:?}"),
        })
        .collect();
    out.sort();
    out
}

#[test]
fn garbage_at_the_peer_port_does_not_hurt_a_real_node() {
    let started = Instant::now();
    let root = tempfile::tempdir().unwrap();
    let (ca, cluster) = new_cluster(root.path());
    let mut n1 = make_node(root.path(), &ca, "node1", None);
    // The transport's and gossip's rejections of datagrams are debug
    // lines; streams and lanes are warnings.
    n1.start_with_env(&[
        (
            "RUST_LOG",
            "warn,ringdb::net=debug,ringdb::cluster::membership=debug".to_string(),
        ),
        ("NO_COLOR", "1".to_string()),
    ]);
    cluster.wait_for_up(&n1, 1);

    let client = cluster.connect(&n1);
    for ddl in [
        "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
        "CREATE TABLE ks.kv (k int PRIMARY KEY, v int)",
    ] {
        cluster.rt.block_on(client.execute(ddl, vec![])).unwrap();
    }
    let written: Vec<(i32, i32)> = (0..ROWS).map(|k| (k, k * 31 - 7)).collect();
    for (k, v) in &written {
        let insert = format!("INSERT INTO ks.kv (k, v) VALUES ({k}, {v})");
        cluster
            .rt
            .block_on(client.execute(&insert, vec![]))
            .unwrap();
    }
    cluster.rt.block_on(client.close());
    let before = std::fs::read_to_string(&n1.log).unwrap();
    let messages = [
        "rejecting malformed request frame",
        "request of another protocol version",
        "closing a request lane that does not parse",
        "peer did not finish its request frame in time",
    ];
    assert!(
        messages.iter().all(|m| count(&before, m) == 0),
        "rejections logged before any garbage:\n{before}"
    );

    let mut rng = StdRng::seed_from_u64(SEED);
    let peer = n1.peer;
    udp_junk(peer, &mut rng);
    let victim = root
        .path()
        .join("elsewhere")
        .join(format!("x-{:032x}", rng.random::<u128>()));
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("keep"), b"not the node's").unwrap();
    let expected = cluster.rt.block_on(hammer(&ca, peer, &mut rng, &victim));
    udp_junk(peer, &mut rng);
    eprintln!("expected rejections: {expected:?}");
    assert_running(&mut n1);

    // Every rejection was logged (the log is written as they happen; wait
    // a bounded time for the last ones).
    let want = [
        expected.malformed_frames,
        expected.version_mismatches,
        expected.broken_lanes,
        expected.unfinished,
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    let log = loop {
        let log = std::fs::read_to_string(&n1.log).unwrap();
        let got = messages.map(|m| count(&log, m));
        if got == want || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(messages.map(|m| count(&log, m)), want, "{messages:?}");
    assert!(expected.malformed_frames > 300, "{expected:?}");
    assert!(expected.broken_lanes >= 6, "{expected:?}");
    // Datagrams are unreliable, so these are only required to have been
    // seen at all: the transport dropped malformed ones, gossip refused
    // the gossip-shaped junk.
    assert!(count(&log, "dropping bad datagram") > 0);
    let gossip_refusals = [
        "undecodable gossip packet",
        "undecodable metadata push",
        "undecodable metadata digest",
        "gossip datagram of unknown kind",
    ];
    for m in gossip_refusals {
        assert!(count(&log, m) > 0, "no {m:?} in the log");
    }
    assert!(
        !log.contains("panicked"),
        "a panic in the node's log:\n{log}"
    );
    // `admin status` counts them too: every frame logged as malformed or
    // of another version was counted (other paths count as well).
    let status = cluster.status(&n1);
    let counter = |name: &str| -> usize {
        let line = status
            .lines()
            .find(|l| l.starts_with("Peer transport:"))
            .unwrap_or_else(|| panic!("no transport line in:\n{status}"));
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name}= in {line}"))
    };
    assert!(
        counter("malformed") >= expected.malformed_frames,
        "{status}"
    );
    assert!(
        counter("version_mismatches") >= expected.version_mismatches,
        "{status}"
    );
    assert!(counter("requests_in") > 0, "{status}");
    // Gossip counts the junk it refused, each logged refusal at least.
    let gossip_line = status
        .lines()
        .find(|l| l.starts_with("Gossip:"))
        .unwrap_or_else(|| panic!("no gossip line in:\n{status}"));
    let gossip_malformed: usize = gossip_line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("malformed="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no malformed= in {gossip_line}"));
    let logged: usize = gossip_refusals.iter().map(|m| count(&log, m)).sum();
    assert!(
        gossip_malformed >= logged && logged > 0,
        "{logged} refusals logged: {gossip_line}"
    );

    // Clients still read what was written.
    assert_eq!(all_rows(&cluster, &n1), written);
    assert_running(&mut n1);

    // A second node joins through the attacked peer port; the cluster
    // serves the same rows from either node.
    let mut n2 = make_node(root.path(), &ca, "node2", Some(peer));
    n2.start();
    cluster.wait_for_up(&n1, 2);
    cluster.wait_for_up(&n2, 2);
    assert_eq!(all_rows(&cluster, &n2), written);
    assert_eq!(all_rows(&cluster, &n1), written);
    assert_running(&mut n1);
    assert_running(&mut n2);
    eprintln!("whole test: {:?}", started.elapsed());
}
