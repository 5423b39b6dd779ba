//! The client protocol over real QUIC connections: the client library end
//! to end against the server (with the in-test executor), and a fuzzer
//! that sends random, truncated, oversized and out-of-order frames on many
//! streams while good requests keep being answered on other streams and
//! connections.

#[path = "protocol_support.rs"]
mod support;

use ringdb::client::protocol::{
    self, BatchKind, ClientFrame, ProtocolError, ProtocolErrorCode, RepairRequest, ServerFrame,
    WireError, MAX_FRAME_LEN, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use ringdb::client::{Batch, Client, ClientError};
use ringdb::model::Consistency;
use ringdb::query::api::{QueryError, QueryOptions, QueryResult};
use ringdb::server::{ClientServer, ServerLimits};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use support::{client_tls, server_tls, test_certs, TestCerts, TestExecutor};

fn start(limits: ServerLimits) -> (ClientServer, TestCerts) {
    start_on("127.0.0.1:0", limits)
}

/// A server with the test executor listening on `addr`.
fn start_on(addr: &str, limits: ServerLimits) -> (ClientServer, TestCerts) {
    let certs = test_certs();
    let executor = TestExecutor::new();
    let server = ClientServer::bind_with_limits(
        addr.parse().expect("address"),
        server_tls(&certs),
        executor.clone(),
        executor,
        limits,
    )
    .expect("server binds");
    (server, certs)
}

fn rows(result: &QueryResult) -> &ringdb::query::api::ResultSet {
    match result {
        QueryResult::Rows(rows) => rows,
        other => panic!("rows expected, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_library_end_to_end() {
    let (server, certs) = start(ServerLimits::default());
    let client = Client::connect(server.local_addr(), client_tls(&certs))
        .await
        .expect("connects");
    assert_eq!(client.keyspace(), None);

    // Without a keyspace the table is unknown: an Invalid error with a caret.
    let err = client
        .execute("SELECT * FROM users", vec![])
        .await
        .unwrap_err();
    match err {
        ClientError::Query(QueryError::Invalid { rendered, .. }) => {
            assert!(rendered.contains('^'), "{rendered}")
        }
        other => panic!("invalid expected, got {other:?}"),
    }

    client.use_keyspace("demo").await.expect("USE");
    assert_eq!(client.keyspace().as_deref(), Some("demo"));

    // Paging through 25 rows, 10 at a time.
    let options = QueryOptions {
        page_size: Some(10),
        ..client.default_options()
    };
    let mut pager = client.pages("SELECT * FROM users", vec![], options);
    let mut sizes = Vec::new();
    while let Some(page) = pager.next_page().await.expect("page") {
        sizes.push(page.rows.len());
    }
    assert_eq!(sizes, vec![10, 10, 5]);
    client.set_page_size(Some(7));
    assert_eq!(
        client
            .fetch_all("SELECT id FROM users", vec![])
            .await
            .expect("all")
            .rows
            .len(),
        25
    );

    // Syntax errors come back typed, with the caret.
    match client.execute("SELEC * FROM users", vec![]).await {
        Err(ClientError::Query(QueryError::Syntax { rendered, .. })) => {
            assert!(rendered.contains("SELEC * FROM users\n^"), "{rendered}")
        }
        other => panic!("syntax error expected, got {other:?}"),
    }

    // The default consistency travels with each request.
    client.set_consistency(Consistency::All);
    assert!(matches!(
        client.execute("SELECT * FROM users", vec![]).await,
        Err(ClientError::Query(QueryError::Unavailable { .. }))
    ));
    client.set_consistency(Consistency::Three);
    match client.execute("SELECT * FROM users", vec![]).await {
        Err(ClientError::Query(QueryError::Failure {
            received: 2,
            failures,
            ..
        })) => assert_eq!(failures.len(), 1),
        other => panic!("a failure expected, got {other:?}"),
    }
    client.set_consistency(Consistency::Quorum);

    // Prepared statements and batches mixing text and prepared statements.
    let insert = client
        .prepare("INSERT INTO users (id, name, age) VALUES (?, ?, ?)")
        .await
        .expect("prepare");
    assert_eq!(insert.prepared.bind_markers.len(), 3);
    client
        .execute_prepared(
            &insert,
            vec![
                cql_lite::Value::Int(100),
                cql_lite::Value::Text("hundred".into()),
                cql_lite::Value::Int(1),
            ],
        )
        .await
        .expect("execute prepared");
    let batch = Batch::new(BatchKind::Logged)
        .add(
            "INSERT INTO users (id, name) VALUES (?, 'text-insert');",
            vec![cql_lite::Value::Int(101)],
        )
        .add_prepared(
            &insert,
            vec![
                cql_lite::Value::Int(102),
                cql_lite::Value::Text("prepared-insert".into()),
                cql_lite::Value::Int(2),
            ],
        );
    client.batch(&batch).await.expect("batch");
    let found = client
        .execute(
            "SELECT name FROM users WHERE id = ?",
            vec![cql_lite::Value::Int(102)],
        )
        .await
        .expect("select");
    assert_eq!(
        rows(&found.result).rows[0].values,
        vec![cql_lite::Value::Text("prepared-insert".into())]
    );
    let found = client
        .execute("SELECT name FROM users WHERE id = 101", vec![])
        .await
        .expect("select");
    assert_eq!(
        rows(&found.result).rows[0].values,
        vec![cql_lite::Value::Text("text-insert".into())]
    );

    // The schema for DESCRIBE and completion.
    let schema = client.describe_schema().await.expect("schema");
    let demo = schema.keyspace("demo").expect("demo");
    assert!(demo
        .table("users")
        .expect("users")
        .create_statement
        .starts_with("CREATE TABLE"));

    // A panic in the executor fails that request only.
    match client
        .execute("SELECT panic_please FROM users", vec![])
        .await
    {
        Err(ClientError::Refused(e)) => assert_eq!(e.code, ProtocolErrorCode::Internal),
        other => panic!("internal error expected, got {other:?}"),
    }
    assert!(client
        .execute("SELECT * FROM conflicts", vec![])
        .await
        .is_ok());

    // A session opened with a keyspace.
    let second =
        Client::connect_with_keyspace(server.local_addr(), client_tls(&certs), Some("demo".into()))
            .await
            .expect("connects with keyspace");
    assert_eq!(second.keyspace().as_deref(), Some("demo"));
    assert!(second
        .execute("SELECT * FROM users LIMIT 1", vec![])
        .await
        .is_ok());
    // ... and one with a keyspace that does not exist is refused.
    assert!(matches!(
        Client::connect_with_keyspace(server.local_addr(), client_tls(&certs), Some("nope".into()))
            .await,
        Err(ClientError::Query(QueryError::Invalid { .. }))
    ));

    let stats = server.stats();
    assert!(stats.requests >= 10, "{stats:?}");
    assert!(stats.query_errors >= 3, "{stats:?}");
    assert_eq!(stats.internal_errors, 1, "{stats:?}");
    second.close().await;
    client.close().await;
    server.shutdown().await;
}

/// A deterministic generator for the fuzzer (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

async fn raw_connection(
    addr: SocketAddr,
    certs: &TestCerts,
) -> (quinn::Endpoint, quinn::Connection) {
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("endpoint");
    endpoint.set_default_client_config(client_tls(certs).quinn_config().expect("client config"));
    let connection = endpoint
        .connect(addr, support::SERVER_NAME)
        .expect("connect")
        .await
        .expect("handshake");
    (endpoint, connection)
}

/// Sends `bytes` on a new stream (finishing it if asked) and returns the
/// server's answer, which must be one valid frame when there is one.
async fn raw_exchange(
    connection: &quinn::Connection,
    bytes: &[u8],
    finish: bool,
) -> Option<ServerFrame> {
    let (mut send, mut recv) = connection.open_bi().await.expect("stream");
    // The server may stop reading early (oversized frame): ignore write errors.
    let _ = send.write_all(bytes).await;
    if finish {
        let _ = send.finish();
    }
    let answer = recv.read_to_end(MAX_FRAME_LEN as usize + 4).await.ok()?;
    if answer.is_empty() {
        return None;
    }
    Some(
        protocol::decode_frame::<ServerFrame>(&answer)
            .expect("the server's answer is a valid frame"),
    )
}

fn protocol_code(answer: &Option<ServerFrame>) -> Option<ProtocolErrorCode> {
    match answer {
        Some(ServerFrame::Error(WireError::Protocol(e))) => Some(e.code),
        _ => None,
    }
}

fn frame(frame: &ClientFrame) -> Vec<u8> {
    protocol::encode_frame(frame).expect("encodes")
}

fn startup(version: u16) -> Vec<u8> {
    frame(&ClientFrame::Startup {
        protocol_version: version,
        keyspace: None,
    })
}

fn query(text: &str) -> Vec<u8> {
    frame(&ClientFrame::Query {
        text: text.into(),
        values: vec![],
        options: QueryOptions::default(),
    })
}

async fn assert_good_query(connection: &quinn::Connection) {
    let answer = raw_exchange(connection, &query("SELECT * FROM demo.users LIMIT 2"), true).await;
    match answer {
        Some(ServerFrame::Result(response)) => assert_eq!(rows(&response.result).rows.len(), 2),
        other => panic!("a result expected, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_fail_only_their_own_stream() {
    let limits = ServerLimits {
        request_read_timeout: Duration::from_millis(300),
        ..ServerLimits::default()
    };
    let (server, certs) = start(limits);
    let addr = server.local_addr();
    let good = Client::connect(addr, client_tls(&certs))
        .await
        .expect("good client");
    let (_endpoint, raw) = raw_connection(addr, &certs).await;

    // Before a startup: refused, and the connection stays usable.
    assert_eq!(
        protocol_code(&raw_exchange(&raw, &query("SELECT * FROM demo.users"), true).await),
        Some(ProtocolErrorCode::NotStarted)
    );
    // A startup with a version the server does not speak.
    assert_eq!(
        protocol_code(&raw_exchange(&raw, &startup(PROTOCOL_VERSION + 1), true).await),
        Some(ProtocolErrorCode::UnsupportedVersion)
    );
    assert_eq!(
        protocol_code(&raw_exchange(&raw, &startup(MIN_PROTOCOL_VERSION - 1), true).await),
        Some(ProtocolErrorCode::UnsupportedVersion)
    );
    // Every version from the oldest to the newest opens a session of that
    // version.
    for version in MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION {
        match raw_exchange(&raw, &startup(version), true).await {
            Some(ServerFrame::Ready {
                protocol_version, ..
            }) => assert_eq!(protocol_version, version),
            other => panic!("version {version}: {other:?}"),
        }
    }
    assert_good_query(&raw).await;

    // An oversized length prefix: refused before the body is read, without
    // waiting for the stream to end.
    let mut oversized = (MAX_FRAME_LEN + 1).to_be_bytes().to_vec();
    oversized.extend_from_slice(&[7; 64]);
    assert_eq!(
        protocol_code(&raw_exchange(&raw, &oversized, false).await),
        Some(ProtocolErrorCode::FrameTooLarge)
    );
    assert_eq!(
        protocol_code(&raw_exchange(&raw, &u32::MAX.to_be_bytes(), true).await),
        Some(ProtocolErrorCode::FrameTooLarge)
    );
    // Truncated frames: the body, and the length prefix itself.
    let whole = query("SELECT * FROM demo.users");
    assert_eq!(
        protocol_code(&raw_exchange(&raw, &whole[..whole.len() / 2], true).await),
        Some(ProtocolErrorCode::Truncated)
    );
    assert_eq!(
        protocol_code(&raw_exchange(&raw, &whole[..2], true).await),
        Some(ProtocolErrorCode::Truncated)
    );
    // A body that does not decode, with a correct length.
    let mut garbage = 8u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(&[0xFF; 8]);
    assert_eq!(
        protocol_code(&raw_exchange(&raw, &garbage, true).await),
        Some(ProtocolErrorCode::Malformed)
    );
    // A frame whose length is too long for its body's content.
    let mut padded = whole.clone();
    let len = u32::from_be_bytes([padded[0], padded[1], padded[2], padded[3]]) + 3;
    padded[..4].copy_from_slice(&len.to_be_bytes());
    padded.extend_from_slice(&[0, 0, 0]);
    assert_eq!(
        protocol_code(&raw_exchange(&raw, &padded, true).await),
        Some(ProtocolErrorCode::Malformed)
    );
    // A stream that never sends its request.
    assert_eq!(
        protocol_code(&raw_exchange(&raw, &[0, 0], false).await),
        Some(ProtocolErrorCode::ReadTimeout)
    );
    assert_good_query(&raw).await;
    good.use_keyspace("demo")
        .await
        .expect("good client still served");

    // Random and mutated frames on many concurrent streams, while good
    // requests run on the same connection and on another one.
    let raw = Arc::new(raw);
    let good = Arc::new(good);
    let mut tasks = Vec::new();
    for seed in 1..=24u64 {
        let raw = raw.clone();
        let good = good.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            for _ in 0..8 {
                let valid = query("SELECT * FROM demo.users");
                let bytes = match rng.below(4) {
                    0 => {
                        let n = rng.below(300) as usize;
                        rng.bytes(n)
                    }
                    1 => {
                        let mut b = valid.clone();
                        let at = rng.below(b.len() as u64) as usize;
                        b[at] ^= (rng.below(255) + 1) as u8;
                        b
                    }
                    2 => {
                        let cut = rng.below(valid.len() as u64) as usize;
                        valid[..cut].to_vec()
                    }
                    _ => {
                        let mut b = (rng.below(u64::from(u32::MAX)) as u32)
                            .to_be_bytes()
                            .to_vec();
                        let n = rng.below(64) as usize;
                        b.extend(rng.bytes(n));
                        b
                    }
                };
                // Whatever comes back is a valid frame (checked inside) or
                // nothing; what matters is that the server keeps serving.
                let _ = raw_exchange(&raw, &bytes, true).await;
                assert_good_query(&raw).await;
                let answer = good
                    .execute("SELECT * FROM users LIMIT 1", vec![])
                    .await
                    .expect("good request");
                assert_eq!(rows(&answer.result).rows.len(), 1);
            }
        }));
    }
    for task in tasks {
        task.await.expect("fuzz task");
    }

    // A client that does not speak the protocol's ALPN is turned away at
    // the handshake; the server goes on.
    let mut wrong = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3")
    .with_root_certificates({
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(certs.ca_pem.as_bytes()) {
            roots.add(cert.expect("pem")).expect("root");
        }
        roots
    })
    .with_no_client_auth();
    wrong.alpn_protocols = vec![b"not-ringdb".to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(wrong).expect("quic config");
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    assert!(endpoint
        .connect(addr, support::SERVER_NAME)
        .expect("connect")
        .await
        .is_err());

    assert_good_query(&raw).await;
    let stats = server.stats();
    assert!(stats.oversized_frames >= 2, "{stats:?}");
    assert!(stats.truncated_frames >= 2, "{stats:?}");
    assert!(stats.malformed_frames >= 2, "{stats:?}");
    assert!(stats.bad_versions >= 1, "{stats:?}");
    assert!(stats.not_started >= 1, "{stats:?}");
    assert!(stats.read_timeouts >= 1, "{stats:?}");
    assert!(stats.handshake_failures >= 1, "{stats:?}");
    assert!(stats.protocol_errors() >= 10, "{stats:?}");
    assert_eq!(stats.internal_errors, 0, "{stats:?}");
    assert_eq!(stats.connections_open, 2, "{stats:?}");
    server.shutdown().await;
}

/// A session of the oldest version gets a replica failure as the Timeout
/// that version knows; a session of the newest gets the Failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_of_version_1_gets_a_failure_as_a_timeout() {
    let (server, certs) = start(ServerLimits::default());
    let addr = server.local_addr();
    let at_three = frame(&ClientFrame::Query {
        text: "SELECT * FROM demo.users".into(),
        values: vec![],
        options: QueryOptions {
            consistency: Consistency::Three,
            ..QueryOptions::default()
        },
    });
    let (_endpoint, v1) = raw_connection(addr, &certs).await;
    for (version, failure) in [(MIN_PROTOCOL_VERSION, false), (PROTOCOL_VERSION, true)] {
        assert!(matches!(
            raw_exchange(&v1, &startup(version), true).await,
            Some(ServerFrame::Ready { .. })
        ));
        match raw_exchange(&v1, &at_three, true).await {
            Some(ServerFrame::Error(WireError::Query(QueryError::Timeout {
                consistency: Consistency::Three,
                required: 3,
                received: 2,
                write: false,
            }))) if !failure => {}
            Some(ServerFrame::Error(WireError::Query(QueryError::Failure { .. }))) if failure => {}
            other => panic!("version {version}: {other:?}"),
        }
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consistency_level_travels_with_each_request() {
    let (server, certs) = start(ServerLimits::default());
    let client =
        Client::connect_with_keyspace(server.local_addr(), client_tls(&certs), Some("demo".into()))
            .await
            .expect("connects");
    let all = QueryOptions {
        consistency: Consistency::All,
        ..QueryOptions::default()
    };
    assert!(client
        .execute_with("SELECT * FROM users", vec![], all)
        .await
        .is_err());
    assert!(client.execute("SELECT * FROM users", vec![]).await.is_ok());
    client.close().await;
    server.shutdown().await;
}

/// A normal exchange ends its stream cleanly: the server reads the
/// request's half to its end and finishes its answer, stopping nothing.
/// (Stopping every request stream after its frame made quinn send a
/// STOP_SENDING frame per request.) Bytes after the one frame are not read
/// and do not keep the answer from coming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_requests_end_their_streams_without_stop_sending() {
    let (server, certs) = start(ServerLimits::default());
    let (_endpoint, raw) = raw_connection(server.local_addr(), &certs).await;
    assert!(matches!(
        raw_exchange(&raw, &startup(PROTOCOL_VERSION), true).await,
        Some(ServerFrame::Ready { .. })
    ));
    for _ in 0..20 {
        assert_good_query(&raw).await;
    }
    // However late each FIN comes (in a packet of its own, after the answer
    // is ready, on a loaded machine), the server waits for it after
    // answering instead of stopping the stream.
    let stopped = raw.stats().frame_rx.stop_sending;
    assert_eq!(stopped, 0, "STOP_SENDING frames for 21 finished requests");

    let mut extra = query("SELECT * FROM demo.users LIMIT 2");
    extra.extend_from_slice(&[0; 16]);
    match raw_exchange(&raw, &extra, true).await {
        Some(ServerFrame::Result(response)) => assert_eq!(rows(&response.result).rows.len(), 2),
        other => panic!("a result expected, got {other:?}"),
    }
    // The bytes after the frame are refused by stopping that stream.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while raw.stats().frame_rx.stop_sending == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(raw.stats().frame_rx.stop_sending, 1);
    assert_good_query(&raw).await;
    server.shutdown().await;
}

/// One chunk of a request lane (`ringdb::net::mux`).
fn lane_chunk(request_id: u64, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = request_id.to_be_bytes().to_vec();
    bytes.push(kind);
    bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// The client library sends its requests on one lane: many in flight at
/// once on one stream, each answered under its own id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sends_its_requests_on_one_lane() {
    let (server, certs) = start(ServerLimits::default());
    let client = Arc::new(
        Client::connect_with_keyspace(server.local_addr(), client_tls(&certs), Some("demo".into()))
            .await
            .expect("connects"),
    );
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let limit = 1 + i % 3;
                let response = client
                    .execute(&format!("SELECT * FROM users LIMIT {limit}"), vec![])
                    .await
                    .expect("query");
                (limit, rows(&response.result).rows.len())
            })
        })
        .collect();
    for task in tasks {
        let (limit, got) = task.await.expect("task");
        assert_eq!(got, limit);
    }
    let stats = server.stats();
    assert_eq!(stats.lanes_opened, 1, "{stats:?}");
    assert_eq!(stats.requests, 51, "{stats:?}");
    server.shutdown().await;
}

/// Bad requests on a lane are answered with error frames under their ids;
/// a lane whose chunks do not parse is closed alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_lane_fails_alone() {
    use ringdb::net::mux::{LaneMessage, LaneReader, LANE_MAGIC};
    let (server, certs) = start(ServerLimits::default());
    let (_endpoint, raw) = raw_connection(server.local_addr(), &certs).await;
    assert!(matches!(
        raw_exchange(&raw, &startup(PROTOCOL_VERSION), true).await,
        Some(ServerFrame::Ready { .. })
    ));
    let (mut send, recv) = raw.open_bi().await.expect("lane");
    let mut bytes = LANE_MAGIC.to_vec();
    bytes.extend(lane_chunk(1, 1, &query("SELECT * FROM demo.users LIMIT 2")));
    bytes.extend(lane_chunk(2, 1, &[0, 0, 0, 3, 0xff, 0xff, 0xff]));
    bytes.extend(lane_chunk(3, 1, &query("SELECT * FROM demo.users LIMIT 1")));
    send.write_all(&bytes).await.expect("write");
    let mut reader = LaneReader::new(recv, 1 << 20, 1 << 20, false);
    let mut answers = std::collections::HashMap::new();
    for _ in 0..3 {
        let (id, message) = tokio::time::timeout(Duration::from_secs(10), reader.next())
            .await
            .expect("in time")
            .expect("readable")
            .expect("an answer");
        let LaneMessage::Frame(frame) = message else {
            panic!("a rejection for {id}");
        };
        answers.insert(
            id,
            protocol::decode_frame::<ServerFrame>(&frame).expect("frame"),
        );
    }
    for (id, limit) in [(1u64, 2usize), (3, 1)] {
        match answers.get(&id) {
            Some(ServerFrame::Result(response)) => {
                assert_eq!(rows(&response.result).rows.len(), limit)
            }
            other => panic!("a result for {id} expected, got {other:?}"),
        }
    }
    assert_eq!(
        protocol_code(&answers.remove(&2)),
        Some(ProtocolErrorCode::Malformed)
    );
    // A chunk of an unknown kind: the lane ends; the connection serves on.
    send.write_all(&lane_chunk(4, 7, b"?"))
        .await
        .expect("write");
    let end = tokio::time::timeout(Duration::from_secs(10), reader.next())
        .await
        .expect("in time");
    assert!(matches!(end, Ok(None)), "{end:?}");
    assert_good_query(&raw).await;
    // The lane's answers end before the server's lane task counts the
    // break: wait for the count rather than race it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.stats().lanes_broken == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = server.stats();
    assert_eq!(
        (
            stats.lanes_opened,
            stats.lanes_broken,
            stats.malformed_frames
        ),
        (1, 1, 1),
        "{stats:?}"
    );
    server.shutdown().await;
}

/// A hand-written server of the client protocol, standing in for builds
/// older than this one: on each stream it reads one frame and answers with
/// what `answer` makes of the read (a read that failed also stops the
/// stream, as servers do); `None` answers nothing.
fn frame_server<F>(certs: &TestCerts, answer: F) -> SocketAddr
where
    F: Fn(Result<ClientFrame, protocol::StreamFrameError>) -> Option<ServerFrame>
        + Send
        + Sync
        + 'static,
{
    let mut tls = server_tls(certs);
    tls.alpn_protocols = vec![protocol::ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).expect("quic config");
    let endpoint = quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(Arc::new(quic)),
        "127.0.0.1:0".parse().expect("address"),
    )
    .expect("endpoint");
    let addr = endpoint.local_addr().expect("address");
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let answer = answer.clone();
                    tokio::spawn(async move {
                        let read = protocol::read_frame::<ClientFrame>(&mut recv).await;
                        if read.is_err() {
                            let _ = recv.stop(quinn::VarInt::from_u32(1));
                        }
                        if let Some(frame) = answer(read) {
                            let _ = protocol::write_frame(&mut send, &frame).await;
                            let _ = send.finish();
                        }
                    });
                }
            });
        }
    });
    addr
}

/// A frame that did not read as the error frame a server answers with, if
/// it can answer at all.
fn read_error_answer(e: protocol::StreamFrameError) -> Option<ServerFrame> {
    match e {
        protocol::StreamFrameError::Frame(e) => Some(ServerFrame::Error(WireError::Protocol(
            e.to_protocol_error(),
        ))),
        _ => None,
    }
}

/// A server from before lanes reads a lane's magic as a frame far over the
/// limit and answers with an error frame: the client then sends every
/// request on a stream of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_lanes_gets_a_stream_per_request() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let certs = test_certs();
    let oversized = Arc::new(AtomicUsize::new(0));
    let seen = oversized.clone();
    // What the server did before lanes: one frame per stream; Startup is
    // answered, any other request gets a query error.
    let addr = frame_server(&certs, move |read| match read {
        Ok(ClientFrame::Startup { keyspace, .. }) => Some(ServerFrame::Ready {
            protocol_version: PROTOCOL_VERSION,
            keyspace,
        }),
        Ok(_) => Some(ServerFrame::Error(WireError::Query(QueryError::Server(
            "served on a stream".into(),
        )))),
        Err(e) => {
            seen.fetch_add(1, Ordering::SeqCst);
            read_error_answer(e)
        }
    });
    let client = Client::connect(addr, client_tls(&certs))
        .await
        .expect("connects");
    for n in 0..10 {
        match client.execute("SELECT * FROM demo.users", vec![]).await {
            Err(ClientError::Query(QueryError::Server(message))) => {
                assert_eq!(message, "served on a stream")
            }
            other => assert!(n == 0, "request {n}: {other:?}"),
        }
    }
    assert_eq!(oversized.load(Ordering::SeqCst), 1);
}

/// A server of protocol version 1 refuses the client's newer version: the
/// client opens a version-1 session instead and works as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_speaks_version_1_to_a_server_of_version_1() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let certs = test_certs();
    let refused = Arc::new(AtomicUsize::new(0));
    let seen = refused.clone();
    // A version-1 server: any other version is refused, as servers before
    // version 2 did.
    let addr = frame_server(&certs, move |read| match read {
        Ok(ClientFrame::Startup {
            protocol_version: 1,
            keyspace,
        }) => Some(ServerFrame::Ready {
            protocol_version: 1,
            keyspace,
        }),
        Ok(ClientFrame::Startup {
            protocol_version, ..
        }) => {
            seen.fetch_add(1, Ordering::SeqCst);
            Some(ServerFrame::Error(WireError::Protocol(ProtocolError::new(
                ProtocolErrorCode::UnsupportedVersion,
                format!(
                    "protocol version {protocol_version} is not supported; this server speaks version 1"
                ),
            ))))
        }
        Ok(_) => Some(ServerFrame::Error(WireError::Query(QueryError::Server(
            "served by version 1".into(),
        )))),
        Err(e) => read_error_answer(e),
    });
    let client = Client::connect(addr, client_tls(&certs))
        .await
        .expect("connects with version 1");
    assert_eq!(client.protocol_version(), 1);
    assert_eq!(refused.load(Ordering::SeqCst), 1, "version 2 asked first");
    for n in 0..3 {
        match client.execute("SELECT * FROM demo.users", vec![]).await {
            Err(ClientError::Query(QueryError::Server(message))) => {
                assert_eq!(message, "served by version 1")
            }
            other => assert!(n == 0, "request {n}: {other:?}"),
        }
    }
}

/// A client dropped without `close` still goes away: its lane's tasks do
/// not keep the lane, or the connection, alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_client_ends_its_lane_and_connection() {
    let (server, certs) = start(ServerLimits::default());
    let client =
        Client::connect_with_keyspace(server.local_addr(), client_tls(&certs), Some("demo".into()))
            .await
            .expect("connects");
    client
        .execute("SELECT * FROM users LIMIT 1", vec![])
        .await
        .expect("query");
    assert_eq!(server.stats().lanes_opened, 1);
    assert_eq!(server.stats().connections_open, 1);
    drop(client);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.stats().connections_open > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.stats().connections_open, 0, "{:?}", server.stats());
    server.shutdown().await;
}

/// This machine's address on the interface that carries its default route
/// (not a loopback address), found by "connecting" a UDP socket, which
/// sends nothing.
fn non_loopback_address() -> std::net::IpAddr {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").expect("UDP socket");
    probe
        .connect("198.51.100.1:9")
        .expect("this test needs a network interface with a default route");
    let ip = probe.local_addr().expect("local address").ip();
    assert!(!ip.is_loopback() && !ip.is_unspecified(), "{ip}");
    ip
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_requests_that_change_the_node_are_served_only_to_its_own_machine() {
    let (server, certs) = start_on("0.0.0.0:0", ServerLimits::default());
    let port = server.local_addr().port();
    // From another address of the machine, as from another machine: both
    // refused as forbidden, naming where the request came from.
    let ip = non_loopback_address();
    let remote = Client::connect(SocketAddr::new(ip, port), client_tls(&certs))
        .await
        .expect("connects over the network interface");
    for (what, result) in [
        ("flush", remote.admin_flush().await),
        ("decommission", remote.admin_decommission().await),
        ("compact", remote.admin_compact().await),
        (
            "repair",
            remote.admin_repair(RepairRequest::default()).await,
        ),
        ("cleanup", remote.admin_cleanup(None, None).await),
        ("removenode", remote.admin_remove_node(7).await),
        (
            "setstreamthroughput",
            remote.admin_set_stream_throughput(8).await,
        ),
    ] {
        match result {
            Err(ClientError::Refused(e)) => {
                assert_eq!(e.code, ProtocolErrorCode::Forbidden, "{what}: {e}");
                assert!(e.message.contains(&ip.to_string()), "{what}: {e}");
                assert!(e.message.contains(what), "{what}: {e}");
            }
            other => panic!("{what}: forbidden expected, got {other:?}"),
        }
    }
    // Reading the status is allowed from anywhere (this test server has no
    // cluster layer, so it answers that it has none).
    assert!(matches!(
        remote.admin_status().await,
        Err(ClientError::Refused(e)) if e.code == ProtocolErrorCode::Unsupported
    ));
    // From the loopback address the request passes the check and reaches
    // the node (which, again, has no cluster layer here).
    let local = Client::connect(SocketAddr::from(([127, 0, 0, 1], port)), client_tls(&certs))
        .await
        .expect("connects over loopback");
    assert!(matches!(
        local.admin_flush().await,
        Err(ClientError::Refused(e)) if e.code == ProtocolErrorCode::Unsupported
    ));
    assert!(matches!(
        local.admin_compact().await,
        Err(ClientError::Refused(e)) if e.code == ProtocolErrorCode::Unsupported
    ));
    assert!(matches!(
        local.admin_repair(RepairRequest::default()).await,
        Err(ClientError::Refused(e)) if e.code == ProtocolErrorCode::Unsupported
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_servers_byte_budget_are_refused_as_overloaded() {
    let (server, certs) = start(ServerLimits {
        max_request_bytes: 50 * 1024,
        ..ServerLimits::default()
    });
    let client = Client::connect(server.local_addr(), client_tls(&certs))
        .await
        .expect("connects");
    let text = |n: usize| format!("SELECT * FROM users WHERE name = '{}'", "x".repeat(n));
    let overloaded = |r: &Result<ringdb::query::api::Response, ClientError>| matches!(r, Err(ClientError::Refused(e)) if e.code == ProtocolErrorCode::Overloaded);
    // 60 KiB: one chunk on the client's lane; 300 KiB: a stream of its own
    // (over the lane's largest request). Both are past the 50 KiB budget.
    for n in [60 * 1024, 300 * 1024] {
        let r = client.execute(&text(n), vec![]).await;
        assert!(overloaded(&r), "{n} bytes: {r:?}");
        if let Err(ClientError::Refused(e)) = &r {
            assert!(e.message.contains("retry"), "{e}");
        }
    }
    // Within the budget requests are served as before, again and again:
    // what the refused and the served ones charged came back.
    for _ in 0..5 {
        let r = client.execute(&text(30 * 1024), vec![]).await;
        assert!(!overloaded(&r), "{r:?}");
    }
    client.use_keyspace("demo").await.expect("USE");
    let rows_back = client
        .execute("SELECT * FROM users", vec![])
        .await
        .expect("a small request");
    assert!(!rows(&rows_back.result).rows.is_empty());
    assert_eq!(server.stats().overloaded, 2);
}

/// A raw connection from `local` (an address of this machine, any port)
/// to `server`: its endpoint and how its handshake ended.
async fn connect_from(
    local: [u8; 4],
    server: SocketAddr,
    certs: &TestCerts,
) -> (
    quinn::Endpoint,
    Result<quinn::Connection, quinn::ConnectionError>,
) {
    let config = client_tls(certs).quinn_config().expect("client config");
    connect_with(local, server, config).await
}

/// Like [`connect_from`], with a client configuration made already.
async fn connect_with(
    local: [u8; 4],
    server: SocketAddr,
    config: quinn::ClientConfig,
) -> (
    quinn::Endpoint,
    Result<quinn::Connection, quinn::ConnectionError>,
) {
    let mut endpoint =
        quinn::Endpoint::client(SocketAddr::from((local, 0))).expect("client endpoint");
    endpoint.set_default_client_config(config);
    let connecting = endpoint
        .connect(server, support::SERVER_NAME)
        .expect("connect");
    (endpoint, connecting.await)
}

/// Whether a handshake ended with the server refusing the connection
/// (before its handshake, as past `max_connections`).
fn refused(handshake: &Result<quinn::Connection, quinn::ConnectionError>) -> bool {
    matches!(
        handshake,
        Err(quinn::ConnectionError::ConnectionClosed(close))
            if close.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED
    )
}

/// Waits (up to 10 s) until the server has `n` connections open.
async fn until_open(server: &ClientServer, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.stats().connections_open != n && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.stats().connections_open, n, "{:?}", server.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_address_gets_at_most_max_connections_per_ip() {
    let (server, certs) = start_on(
        "0.0.0.0:0",
        ServerLimits {
            max_connections_per_ip: Some(2),
            ..ServerLimits::default()
        },
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], server.local_addr().port()));
    let (_e1, first) = connect_from([127, 0, 0, 1], addr, &certs).await;
    let first = first.expect("the first connection from 127.0.0.1");
    // The client's handshake ends a moment before the server's: each
    // connection is counted before the next one arrives, so that one is
    // refused before its handshake (not closed after it).
    until_open(&server, 1).await;
    let (_e2, second) = connect_from([127, 0, 0, 1], addr, &certs).await;
    let second = second.expect("the second connection from 127.0.0.1");
    until_open(&server, 2).await;
    let (_e3, third) = connect_from([127, 0, 0, 1], addr, &certs).await;
    assert!(refused(&third), "the third from 127.0.0.1: {third:?}");
    let stats = server.stats();
    assert_eq!(stats.connections_refused, 1, "{stats:?}");
    assert_eq!(stats.connections_refused_per_ip, 1, "{stats:?}");
    assert_eq!(stats.connections_open, 2, "{stats:?}");

    // Another address of the machine has connections of its own.
    let (_e4, other) = connect_from([127, 0, 0, 2], addr, &certs).await;
    let other = other.expect("a connection from 127.0.0.2");
    assert!(other.close_reason().is_none());
    until_open(&server, 3).await;

    // A connection that ends gives its address's slot back, and only one.
    first.close(0u32.into(), b"done");
    until_open(&server, 2).await;
    let (_e5, again) = connect_from([127, 0, 0, 1], addr, &certs).await;
    let again = again.expect("127.0.0.1 again, once one of its connections closed");
    until_open(&server, 3).await;
    let (_e6, past) = connect_from([127, 0, 0, 1], addr, &certs).await;
    assert!(refused(&past), "127.0.0.1 at its limit again: {past:?}");
    let stats = server.stats();
    assert_eq!(stats.connections_refused_per_ip, 2, "{stats:?}");
    assert_eq!(stats.connections_accepted, 4, "{stats:?}");
    assert!(second.close_reason().is_none() && again.close_reason().is_none());
    server.shutdown().await;
}

/// Connections whose handshakes overlap pass the check made before the
/// handshake together; the limit still holds once they complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_handshakes_from_one_address_stay_within_its_limit() {
    let (server, certs) = start(ServerLimits {
        max_connections_per_ip: Some(2),
        ..ServerLimits::default()
    });
    let addr = server.local_addr();
    let config = client_tls(&certs).quinn_config().expect("client config");
    let attempts: Vec<_> = (0..8)
        .map(|_| tokio::spawn(connect_with([127, 0, 0, 1], addr, config.clone())))
        .collect();
    let mut outcomes = Vec::new();
    for attempt in attempts {
        outcomes.push(attempt.await.expect("a connection attempt"));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let live = loop {
        let live: Vec<_> = outcomes
            .iter()
            .filter_map(|(_, handshake)| handshake.as_ref().ok())
            .filter(|c| c.close_reason().is_none())
            .collect();
        if live.len() <= 2 || tokio::time::Instant::now() >= deadline {
            break live.len();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(live, 2, "{:?}", server.stats());
    until_open(&server, 2).await;
    assert_eq!(server.stats().connections_refused_per_ip, 6);
    // Those refused before their handshake see a refusal; those closed
    // after it are told why.
    for (_, handshake) in &outcomes {
        let closed = match handshake {
            Ok(connection) => connection.close_reason(),
            Err(_) if refused(handshake) => continue,
            Err(e) => Some(e.clone()),
        };
        match closed {
            None => {}
            Some(quinn::ConnectionError::ApplicationClosed(close)) => {
                let reason = String::from_utf8_lossy(&close.reason);
                assert!(
                    reason.contains("127.0.0.1") && reason.contains("max_connections_per_ip"),
                    "{reason}"
                );
            }
            Some(other) => panic!("refused or closed with a reason expected, got {other:?}"),
        }
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_idle_gives_its_address_slot_back() {
    let (server, certs) = start(ServerLimits {
        max_connections_per_ip: Some(1),
        idle_timeout: Duration::from_millis(300),
        ..ServerLimits::default()
    });
    let addr = server.local_addr();
    // The client pings every 15 s: with the server's 300 ms this
    // connection idles out.
    let (_e1, first) = connect_from([127, 0, 0, 1], addr, &certs).await;
    let first = first.expect("the first connection");
    until_open(&server, 1).await;
    let (_e2, second) = connect_from([127, 0, 0, 1], addr, &certs).await;
    assert!(refused(&second), "{second:?}");
    let closed = tokio::time::timeout(Duration::from_secs(10), first.closed())
        .await
        .expect("the idle connection is closed");
    assert!(
        matches!(closed, quinn::ConnectionError::TimedOut),
        "{closed:?}"
    );
    until_open(&server, 0).await;
    let (_e3, again) = connect_from([127, 0, 0, 1], addr, &certs).await;
    again.expect("a connection once the idle one was closed");
    server.shutdown().await;
}
