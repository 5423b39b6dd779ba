//! Connections, streams and requests of the client-facing server.

use super::{bump, AdminSource, SchemaSource, ServerLimits, ServerStats};
use crate::client::protocol::{
    self, BatchEntry, BatchKind, BatchStatement, ClientFrame, FrameError, ProtocolError,
    ProtocolErrorCode, ServerFrame, StreamFrameError, WireError, MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
};
use crate::model::DotSet;
use crate::net::budget::ByteBudget;
use crate::net::mux::{self, LaneMessage, LANE_MAGIC};
use crate::net::quic::LANE_MAX_REQUEST;
use crate::query::api::{QueryError, QueryExecutor, QueryOptions, SessionState};
use cql_lite::Value;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What every connection shares.
pub(super) struct Shared {
    executor: Arc<dyn QueryExecutor>,
    schema: Arc<dyn SchemaSource>,
    admin: Option<Arc<dyn AdminSource>>,
    stats: Arc<ServerStats>,
    limits: ServerLimits,
    prepared_texts: Mutex<PreparedTexts>,
    /// Request bytes held across every connection.
    request_budget: Arc<ByteBudget>,
    /// Connections open per client address.
    per_ip: Arc<ConnectionsPerIp>,
}

impl Shared {
    pub(super) fn new(
        executor: Arc<dyn QueryExecutor>,
        schema: Arc<dyn SchemaSource>,
        admin: Option<Arc<dyn AdminSource>>,
        stats: Arc<ServerStats>,
        limits: ServerLimits,
    ) -> Shared {
        Shared {
            executor,
            schema,
            admin,
            stats,
            request_budget: ByteBudget::new(limits.max_request_bytes),
            limits,
            prepared_texts: Mutex::new(PreparedTexts::default()),
            per_ip: Arc::default(),
        }
    }
}

/// Connections open per client address, for
/// [`ServerLimits::max_connections_per_ip`]. Addresses are kept in their
/// canonical form: an IPv4-mapped IPv6 address (a client of a server
/// listening on `[::]`) counts as its IPv4 address.
#[derive(Default)]
struct ConnectionsPerIp {
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnectionsPerIp {
    /// Connections open from `ip` now.
    fn open(&self, ip: IpAddr) -> usize {
        self.open
            .lock()
            .get(&ip.to_canonical())
            .copied()
            .unwrap_or(0)
    }

    /// Counts one more connection from `ip`, or `None` if `limit` are
    /// open from it already. The count goes down when the slot is dropped.
    fn try_take(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<IpSlot> {
        let ip = ip.to_canonical();
        let mut open = self.open.lock();
        let count = open.entry(ip).or_insert(0);
        if *count >= limit {
            if *count == 0 {
                open.remove(&ip);
            }
            return None;
        }
        *count += 1;
        Some(IpSlot {
            table: self.clone(),
            ip,
        })
    }
}

/// One connection counted in [`ConnectionsPerIp`] while it lives, however
/// it ends (closed by the client, failed, timed out idle, or its task
/// dropped).
struct IpSlot {
    table: Arc<ConnectionsPerIp>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock();
        if let Some(count) = open.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Why a client connection is refused.
enum Refusal {
    /// The server has [`ServerLimits::max_connections`] open.
    ServerFull,
    /// The client's address has [`ServerLimits::max_connections_per_ip`]
    /// open.
    AddressFull {
        /// The client's address (canonical).
        ip: IpAddr,
        /// The limit per address.
        limit: usize,
    },
}

/// Counts a refused connection and returns why it was refused, as logged.
fn count_refusal(shared: &Shared, refusal: &Refusal) -> String {
    bump(&shared.stats.connections_refused);
    let reason = match refusal {
        Refusal::ServerFull => format!(
            "the server has {} client connections open, its limit (max_connections)",
            shared.limits.max_connections
        ),
        Refusal::AddressFull { ip, limit } => {
            bump(&shared.stats.connections_refused_per_ip);
            format!(
                "{ip} has {limit} connections open, the most one client address may have \
                 (max_connections_per_ip)"
            )
        }
    };
    tracing::debug!("client connection refused: {reason}");
    reason
}

/// Texts of the statements prepared here, by id: a batch names prepared
/// statements by id and is run as one `BEGIN BATCH` text.
#[derive(Default)]
struct PreparedTexts {
    by_id: HashMap<Vec<u8>, String>,
    order: VecDeque<Vec<u8>>,
}

impl PreparedTexts {
    fn insert(&mut self, id: Vec<u8>, text: String, capacity: usize) {
        if self.by_id.insert(id.clone(), text).is_none() {
            self.order.push_back(id);
        }
        while self.by_id.len() > capacity.max(1) {
            match self.order.pop_front() {
                Some(old) => {
                    self.by_id.remove(&old);
                }
                None => break,
            }
        }
    }
}

/// One connection's session.
#[derive(Default)]
struct Connection {
    started: bool,
    /// The protocol version of the session (set by the startup).
    protocol_version: u16,
    session: SessionState,
    /// Where the client connects from (`None` only in tests).
    remote: Option<SocketAddr>,
}

/// Counts an open connection, and holds its address's slot (when
/// connections per address are limited), while it lives.
struct OpenGuard {
    stats: Arc<ServerStats>,
    slot: Option<IpSlot>,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        // The address's slot first: whoever sees the connection no longer
        // open can connect from that address again.
        drop(self.slot.take());
        self.stats.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(super) async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    while let Some(incoming) = endpoint.accept().await {
        let open = shared.stats.connections_open.load(Ordering::Relaxed);
        let refusal = if open >= shared.limits.max_connections as u64 {
            Some(Refusal::ServerFull)
        } else {
            address_full(&shared, incoming.remote_address().ip())
        };
        if let Some(refusal) = refusal {
            // Refused before the handshake: a QUIC refusal carries no
            // reason, so it goes to the log only.
            count_refusal(&shared, &refusal);
            incoming.refuse();
            continue;
        }
        tokio::spawn(serve_connection(incoming, shared.clone()));
    }
}

/// A refusal if `ip` has [`ServerLimits::max_connections_per_ip`]
/// connections open already.
///
/// Only connections whose handshake completed are counted: the source
/// address of a connection's first packet may be forged, and counting it
/// then would let anyone who forges a client's address use up that
/// client's connections. Before the handshake this refuses cheaply an
/// address at its limit; after it, [`serve_connection`] takes the
/// address's slot, closing a connection whose handshake overlapped others
/// from the same address that took the last ones.
fn address_full(shared: &Shared, ip: IpAddr) -> Option<Refusal> {
    let limit = shared.limits.max_connections_per_ip?;
    (shared.per_ip.open(ip) >= limit).then(|| Refusal::AddressFull {
        ip: ip.to_canonical(),
        limit,
    })
}

async fn serve_connection(incoming: quinn::Incoming, shared: Arc<Shared>) {
    let connection = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            bump(&shared.stats.handshake_failures);
            tracing::debug!("client handshake failed: {e}");
            return;
        }
    };
    let ip = connection.remote_address().ip();
    let slot = match shared.limits.max_connections_per_ip {
        None => None,
        Some(limit) => match shared.per_ip.try_take(ip, limit) {
            Some(slot) => Some(slot),
            None => {
                let refusal = Refusal::AddressFull {
                    ip: ip.to_canonical(),
                    limit,
                };
                let reason = count_refusal(&shared, &refusal);
                connection.close(
                    quinn::VarInt::from_u32(ProtocolErrorCode::Overloaded.code()),
                    reason.as_bytes(),
                );
                return;
            }
        },
    };
    bump(&shared.stats.connections_accepted);
    shared
        .stats
        .connections_open
        .fetch_add(1, Ordering::Relaxed);
    let _open = OpenGuard {
        stats: shared.stats.clone(),
        slot,
    };
    let remote = connection.remote_address();
    tracing::debug!(%remote, "client connected");
    let state = Arc::new(Mutex::new(Connection {
        remote: Some(remote),
        ..Connection::default()
    }));
    loop {
        match connection.accept_bi().await {
            Ok((send, recv)) => {
                tokio::spawn(serve_stream(shared.clone(), state.clone(), send, recv));
            }
            Err(e) => {
                tracing::debug!(%remote, "client connection ended: {e}");
                break;
            }
        }
    }
}

async fn serve_stream(
    shared: Arc<Shared>,
    state: Arc<Mutex<Connection>>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    // The request's bytes are charged to the server's budget from when
    // its length is known until it is answered.
    let mut charge = None;
    let read = tokio::time::timeout(shared.limits.request_read_timeout, async {
        let mut prefix = [0u8; protocol::LENGTH_PREFIX_LEN];
        recv.read_exact(&mut prefix)
            .await
            .map_err(protocol::read_exact_error)?;
        if prefix == LANE_MAGIC {
            return Ok(None);
        }
        let len = protocol::check_length(prefix)?;
        charge = shared.request_budget.try_charge(len);
        if charge.is_none() {
            return Ok(Some(Err(overloaded(&shared))));
        }
        protocol::read_frame_after::<ClientFrame>(&mut recv, prefix)
            .await
            .map(|frame| Some(Ok(frame)))
    })
    .await;
    let frame = match read {
        Err(_) => {
            bump(&shared.stats.read_timeouts);
            let error = ProtocolError::new(
                ProtocolErrorCode::ReadTimeout,
                "the request did not arrive in time",
            );
            return refuse(&mut send, &mut recv, error).await;
        }
        Ok(Err(StreamFrameError::Frame(e))) => {
            count_refused_frame(&shared, &e);
            return refuse(&mut send, &mut recv, e.to_protocol_error()).await;
        }
        Ok(Err(StreamFrameError::Stream(e))) => {
            bump(&shared.stats.stream_failures);
            tracing::debug!("client stream failed: {e}");
            return;
        }
        Ok(Ok(None)) => return serve_lane(shared, state, send, recv).await,
        Ok(Ok(Some(Err(error)))) => return refuse(&mut send, &mut recv, error).await,
        Ok(Ok(Some(Ok(frame)))) => frame,
    };
    bump(&shared.stats.requests);
    // The request runs in its own task so that a panic in the executor
    // fails this request only, with an error frame.
    let mut task = tokio::spawn(dispatch(shared.clone(), state, frame));
    // One request per stream. The client finishes its side right after the
    // frame, so the end is normally here already, or comes soon after:
    // reading it lets the stream close cleanly instead of costing a
    // STOP_SENDING. The answer never waits for it: an end that has not come
    // when the answer is ready is waited for after the answer has gone (as
    // long as a request may take to arrive), and only then is the stream
    // stopped. Bytes after the frame are not read: they stop it at once.
    let mut request_ended = None;
    let joined = tokio::select! {
        biased;
        ended = protocol::read_end(&mut recv) => {
            if !ended {
                let _ = recv.stop(quinn::VarInt::from_u32(0));
            }
            request_ended = Some(ended);
            (&mut task).await
        }
        joined = &mut task => joined,
    };
    let answer = match joined {
        Ok(answer) => Some(answer),
        Err(e) => {
            tracing::error!("a client request failed inside the server: {e}");
            None
        }
    };
    let Some(bytes) = answer_bytes(&shared, answer) else {
        let _ = send.reset(quinn::VarInt::from_u32(ProtocolErrorCode::Internal.code()));
        return;
    };
    if send.write_all(&bytes).await.is_err() {
        bump(&shared.stats.stream_failures);
        return;
    }
    let _ = send.finish();
    if request_ended.is_none() {
        let ended = tokio::time::timeout(
            shared.limits.request_read_timeout,
            protocol::read_end(&mut recv),
        )
        .await
        .unwrap_or(false);
        if !ended {
            let _ = recv.stop(quinn::VarInt::from_u32(0));
        }
    }
}

/// Counts a request frame refused as a frame.
fn count_refused_frame(shared: &Shared, e: &FrameError) {
    let counter = match e {
        FrameError::TooLarge(_) => &shared.stats.oversized_frames,
        FrameError::Truncated(_) => &shared.stats.truncated_frames,
        FrameError::Malformed(_) => &shared.stats.malformed_frames,
    };
    bump(counter);
    tracing::debug!("refused a client frame: {e}");
}

/// The encoded answer to one request, counted by kind; `None` for the
/// answer of a request that failed inside the server. An answer too large
/// to send becomes an error frame. `None` only when not even an error frame
/// encodes.
fn answer_bytes(shared: &Shared, answer: Option<ServerFrame>) -> Option<Vec<u8>> {
    let answer = answer.unwrap_or_else(|| {
        bump(&shared.stats.internal_errors);
        protocol_error(
            ProtocolErrorCode::Internal,
            "the request failed inside the server",
        )
    });
    match &answer {
        ServerFrame::Error(WireError::Query(_)) => bump(&shared.stats.query_errors),
        ServerFrame::Error(WireError::Protocol(e)) => match e.code {
            ProtocolErrorCode::UnsupportedVersion => bump(&shared.stats.bad_versions),
            ProtocolErrorCode::NotStarted => bump(&shared.stats.not_started),
            _ => {}
        },
        _ => {}
    }
    match protocol::encode_frame(&answer) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            bump(&shared.stats.internal_errors);
            let error = ProtocolError::new(ProtocolErrorCode::ResponseTooLarge, e.to_string());
            protocol::encode_frame(&ServerFrame::Error(WireError::Protocol(error))).ok()
        }
    }
}

/// Serves a request lane (`net::mux`): a client's stream carrying many
/// requests, each answered with its request id as soon as it is ready, at
/// most `max_streams_per_connection` running at once. A request that does
/// not decode is answered with an error frame like on a stream of its own;
/// a lane whose chunks do not parse is stopped (the answers already owed
/// are still sent).
async fn serve_lane(
    shared: Arc<Shared>,
    state: Arc<Mutex<Connection>>,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    bump(&shared.stats.lanes_opened);
    let limits = mux::LaneLimits {
        max_in_flight: shared.limits.max_streams_per_connection as usize,
        max_request: LANE_MAX_REQUEST,
        max_buffered: mux::MAX_BUFFERED_REQUESTS,
    };
    let serving = shared.clone();
    let budget = shared.request_budget.clone();
    let served = mux::serve_lane(recv, send, limits, Some(&budget), move |_, request| {
        let (shared, state) = (serving.clone(), state.clone());
        // Held until the request is answered.
        let charge = shared.request_budget.try_charge(request.len());
        async move {
            let Some(_charge) = charge else {
                let refusal = ServerFrame::Error(WireError::Protocol(overloaded(&shared)));
                return match protocol::encode_frame(&refusal) {
                    Ok(bytes) => LaneMessage::Frame(bytes.into()),
                    Err(_) => LaneMessage::Reject(u64::from(ProtocolErrorCode::Overloaded.code())),
                };
            };
            let bytes = match protocol::decode_frame::<ClientFrame>(&request) {
                Ok(frame) => {
                    bump(&shared.stats.requests);
                    let running = Box::pin(dispatch(shared.clone(), state, frame));
                    let answer = match crate::net::rpc::Contained(running).await {
                        Ok(answer) => Some(answer),
                        Err(_) => {
                            tracing::error!("a client request panicked inside the server");
                            None
                        }
                    };
                    answer_bytes(&shared, answer)
                }
                Err(e) => {
                    count_refused_frame(&shared, &e);
                    protocol::encode_frame(&ServerFrame::Error(WireError::Protocol(
                        e.to_protocol_error(),
                    )))
                    .ok()
                }
            };
            match bytes {
                Some(bytes) => LaneMessage::Frame(bytes.into()),
                None => LaneMessage::Reject(u64::from(ProtocolErrorCode::Internal.code())),
            }
        }
    })
    .await;
    match served {
        Ok(None) => {}
        Ok(Some(e)) => {
            bump(&shared.stats.stream_failures);
            tracing::debug!("client lane failed: {e}");
        }
        Err((e, mut recv)) => {
            bump(&shared.stats.lanes_broken);
            tracing::debug!("closing a client lane that does not parse: {e}");
            let code =
                quinn::VarInt::from_u64(e.stream_code()).unwrap_or(quinn::VarInt::from_u32(0));
            let _ = recv.stop(code);
        }
    }
}

/// The error a request gets when the server's budget of request bytes
/// ([`ServerLimits::max_request_bytes`]) is spent.
fn overloaded(shared: &Shared) -> ProtocolError {
    bump(&shared.stats.overloaded);
    ProtocolError::new(
        ProtocolErrorCode::Overloaded,
        format!(
            "the server holds {} bytes of requests from its clients, its limit is {}; retry later",
            shared.request_budget.used(),
            shared.request_budget.limit()
        ),
    )
}

/// Answers a bad request: stops reading the stream with the error's code,
/// sends the error frame and finishes.
async fn refuse(send: &mut quinn::SendStream, recv: &mut quinn::RecvStream, error: ProtocolError) {
    let _ = recv.stop(quinn::VarInt::from_u32(error.code.code()));
    if let Ok(bytes) = protocol::encode_frame(&ServerFrame::Error(WireError::Protocol(error))) {
        if send.write_all(&bytes).await.is_ok() {
            let _ = send.finish();
        }
    }
}

fn protocol_error(code: ProtocolErrorCode, message: impl Into<String>) -> ServerFrame {
    ServerFrame::Error(WireError::Protocol(ProtocolError::new(code, message)))
}

fn query_answer<T>(
    result: Result<T, QueryError>,
    ok: impl FnOnce(T) -> ServerFrame,
) -> ServerFrame {
    match result {
        Ok(v) => ok(v),
        Err(e) => ServerFrame::Error(WireError::Query(e)),
    }
}

async fn dispatch(
    shared: Arc<Shared>,
    state: Arc<Mutex<Connection>>,
    frame: ClientFrame,
) -> ServerFrame {
    if let ClientFrame::Startup {
        protocol_version,
        keyspace,
    } = frame
    {
        return startup(&shared, &state, protocol_version, keyspace).await;
    }
    let (started, mut session, remote, version) = {
        let conn = state.lock();
        (
            conn.started,
            conn.session.clone(),
            conn.remote,
            conn.protocol_version,
        )
    };
    if !started {
        return protocol_error(
            ProtocolErrorCode::NotStarted,
            "send a Startup frame before any request",
        );
    }
    let before = session.clone();
    let executor = &shared.executor;
    let answer = match frame {
        ClientFrame::Startup { .. } => unreachable_startup(),
        ClientFrame::Query {
            text,
            values,
            options,
        } => {
            let result = executor
                .execute(&mut session, &text, values, sanitize(options))
                .await;
            query_answer(result, ServerFrame::Result)
        }
        ClientFrame::Prepare { text } => {
            let result = executor.prepare(&session, &text).await;
            if let Ok(prepared) = &result {
                shared.prepared_texts.lock().insert(
                    prepared.id.clone(),
                    text,
                    shared.limits.max_prepared_texts,
                );
            }
            query_answer(result, ServerFrame::Prepared)
        }
        ClientFrame::Execute {
            id,
            values,
            options,
        } => {
            let result = executor
                .execute_prepared(&mut session, &id, values, sanitize(options))
                .await;
            query_answer(result, ServerFrame::Result)
        }
        ClientFrame::Batch {
            kind,
            statements,
            options,
        } => match batch_text(&shared, kind, statements) {
            Ok((text, values)) => {
                let result = executor
                    .execute(&mut session, &text, values, sanitize(options))
                    .await;
                query_answer(result, ServerFrame::Result)
            }
            Err(e) => ServerFrame::Error(WireError::Query(e)),
        },
        ClientFrame::DescribeSchema => ServerFrame::Schema(shared.schema.snapshot()),
        ClientFrame::AdminStatus => match &shared.admin {
            Some(admin) => ServerFrame::AdminText(admin.status()),
            None => protocol_error(
                ProtocolErrorCode::Unsupported,
                "this server runs without the cluster layer: no admin status",
            ),
        },
        // The admin requests that change the node or the ring: served only
        // to clients on the node's own machine.
        frame @ (ClientFrame::AdminDecommission
        | ClientFrame::AdminFlush
        | ClientFrame::AdminCompact
        | ClientFrame::AdminRepair(_)
        | ClientFrame::AdminCleanup { .. }
        | ClientFrame::AdminRemoveNode { .. }
        | ClientFrame::AdminSetStreamThroughput { .. }) => {
            let what = admin_command_name(&frame);
            if !is_local_client(remote) {
                protocol_error(
                    ProtocolErrorCode::Forbidden,
                    format!(
                        "admin {what} changes the node, so it is accepted only from the node's \
                         own machine (a loopback address), and this request came from {}; run \
                         `ringdb admin {what}` on the node itself",
                        remote.map_or_else(|| "an unknown address".to_string(), |r| r.to_string())
                    ),
                )
            } else if let Some(admin) = &shared.admin {
                match run_admin_command(admin.as_ref(), frame).await {
                    Ok(text) => ServerFrame::AdminText(text),
                    Err(e) => ServerFrame::Error(WireError::Query(QueryError::Server(e))),
                }
            } else {
                protocol_error(
                    ProtocolErrorCode::Unsupported,
                    format!("this server runs without the cluster layer: no admin {what}"),
                )
            }
        }
    };
    if session != before {
        state.lock().session = session;
    }
    answer.for_version(version)
}

/// The `ringdb admin` subcommand an admin frame comes from, for messages.
fn admin_command_name(frame: &ClientFrame) -> &'static str {
    match frame {
        ClientFrame::AdminStatus => "status",
        ClientFrame::AdminDecommission => "decommission",
        ClientFrame::AdminFlush => "flush",
        ClientFrame::AdminCompact => "compact",
        ClientFrame::AdminRepair(_) => "repair",
        ClientFrame::AdminCleanup { .. } => "cleanup",
        ClientFrame::AdminRemoveNode { .. } => "removenode",
        ClientFrame::AdminSetStreamThroughput { .. } => "setstreamthroughput",
        _ => "request",
    }
}

/// Runs an admin frame that changes the node on `admin`: the answer's
/// text, or why it was refused or failed.
async fn run_admin_command(admin: &dyn AdminSource, frame: ClientFrame) -> Result<String, String> {
    match frame {
        ClientFrame::AdminDecommission => admin.decommission().await,
        ClientFrame::AdminFlush => admin.flush().await,
        ClientFrame::AdminCompact => admin.compact().await,
        ClientFrame::AdminRepair(request) => admin.repair(request).await,
        ClientFrame::AdminCleanup { keyspace, table } => admin.cleanup(keyspace, table).await,
        ClientFrame::AdminRemoveNode { node } => admin.remove_node(node).await,
        ClientFrame::AdminSetStreamThroughput { mib_per_sec } => {
            admin.set_stream_throughput(mib_per_sec)
        }
        other => Err(format!(
            "{} is not an admin command that changes the node",
            admin_command_name(&other)
        )),
    }
}

/// Whether a client connecting from `remote` is on the node's own machine
/// (a loopback address, IPv4-mapped ones included): the only clients whose
/// admin requests that change the node or the ring (decommission, flush,
/// compact, repair, cleanup, removenode) are served,
/// as Cassandra's `nodetool` is local-only by default. The client port
/// takes clients without certificates, so an address is what tells an
/// operator on the node from anyone who can reach the port.
fn is_local_client(remote: Option<SocketAddr>) -> bool {
    remote.is_some_and(|r| r.ip().to_canonical().is_loopback())
}

/// The startup frame is handled before the match in [`dispatch`].
fn unreachable_startup() -> ServerFrame {
    protocol_error(ProtocolErrorCode::Internal, "startup handled out of order")
}

async fn startup(
    shared: &Shared,
    state: &Mutex<Connection>,
    protocol_version: u16,
    keyspace: Option<String>,
) -> ServerFrame {
    if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&protocol_version) {
        return protocol_error(
            ProtocolErrorCode::UnsupportedVersion,
            format!(
                "protocol version {protocol_version} is not supported; this server speaks \
                 versions {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}"
            ),
        );
    }
    let mut session = state.lock().session.clone();
    if let Some(keyspace) = &keyspace {
        let text = format!("USE {}", identifier(keyspace));
        let result = shared
            .executor
            .execute(&mut session, &text, Vec::new(), QueryOptions::default())
            .await;
        if let Err(e) = result {
            return ServerFrame::Error(WireError::Query(e));
        }
    }
    let mut conn = state.lock();
    conn.started = true;
    conn.protocol_version = protocol_version;
    conn.session = session;
    ServerFrame::Ready {
        protocol_version,
        keyspace: conn.session.keyspace.clone(),
    }
}

/// A keyspace name as given (an unquoted identifier or already quoted), or
/// quoted when it is neither.
fn identifier(name: &str) -> String {
    let plain = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let quoted = name.len() >= 2 && name.starts_with('"') && name.ends_with('"');
    if plain || quoted {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// Options as received, with the causal context brought to its normal form
/// (a client can send any bytes).
fn sanitize(mut options: QueryOptions) -> QueryOptions {
    if let Some(context) = options.causal_context.take() {
        let mut normal = DotSet::new();
        normal.union_with(&context);
        options.causal_context = Some(normal);
    }
    options
}

/// A batch as one `BEGIN ... BATCH` statement: the statements' texts (a
/// prepared statement's text as it was prepared here) and their values
/// concatenated in order, as the bind markers appear.
fn batch_text(
    shared: &Shared,
    kind: BatchKind,
    statements: Vec<BatchEntry>,
) -> Result<(String, Vec<Value>), QueryError> {
    let mut text = String::from(match kind {
        BatchKind::Logged => "BEGIN BATCH\n",
        BatchKind::Unlogged => "BEGIN UNLOGGED BATCH\n",
    });
    let mut values = Vec::new();
    let texts = shared.prepared_texts.lock();
    for entry in statements {
        let statement = match &entry.statement {
            BatchStatement::Text(t) => t.as_str(),
            BatchStatement::Prepared(id) => texts
                .by_id
                .get(id)
                .map(String::as_str)
                .ok_or_else(|| QueryError::UnknownPrepared(hex(id)))?,
        };
        let statement = statement.trim().trim_end_matches(';').trim_end();
        text.push_str("  ");
        text.push_str(statement);
        text.push_str(";\n");
        values.extend(entry.values);
    }
    text.push_str("APPLY BATCH");
    Ok((text, values))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_clients_count_as_local() {
        let local = |a: &str| is_local_client(Some(a.parse().expect("address")));
        assert!(local("127.0.0.1:1"));
        assert!(local("127.3.2.1:1"));
        assert!(local("[::1]:1"));
        assert!(local("[::ffff:127.0.0.1]:1"));
        assert!(!local("192.0.2.7:1"));
        assert!(!local("[::ffff:192.0.2.7]:1"));
        assert!(!local("[2001:db8::1]:1"));
        assert!(!local("0.0.0.0:1"));
        assert!(!is_local_client(None));
    }

    #[test]
    fn connections_per_ip_are_counted_by_canonical_address_until_dropped() {
        let table = Arc::new(ConnectionsPerIp::default());
        let ip = |a: &str| a.parse::<IpAddr>().expect("address");
        let first = table.try_take(ip("127.0.0.1"), 2).expect("first");
        let mapped = table
            .try_take(ip("::ffff:127.0.0.1"), 2)
            .expect("the same address, IPv4-mapped: second");
        assert_eq!(table.open(ip("127.0.0.1")), 2);
        assert_eq!(table.open(ip("::ffff:127.0.0.1")), 2);
        assert!(table.try_take(ip("127.0.0.1"), 2).is_none());
        assert!(table.try_take(ip("::ffff:127.0.0.1"), 2).is_none());
        let other = table.try_take(ip("127.0.0.2"), 2).expect("another address");
        drop(mapped);
        assert_eq!(table.open(ip("127.0.0.1")), 1);
        let again = table
            .try_take(ip("127.0.0.1"), 2)
            .expect("a slot came back");
        drop((first, again, other));
        assert!(table.open.lock().is_empty(), "no address kept at zero");
        assert!(table.try_take(ip("192.0.2.1"), 0).is_none());
        assert!(table.open.lock().is_empty(), "a refusal keeps nothing");
    }

    #[test]
    fn identifiers_are_quoted_only_when_needed() {
        assert_eq!(identifier("ks1"), "ks1");
        assert_eq!(identifier("\"MyKs\""), "\"MyKs\"");
        assert_eq!(identifier("my ks"), "\"my ks\"");
        assert_eq!(identifier("a\"b"), "\"a\"\"b\"");
        assert_eq!(identifier(""), "\"\"");
    }

    #[test]
    fn prepared_texts_forget_the_oldest() {
        let mut texts = PreparedTexts::default();
        for i in 0..5u8 {
            texts.insert(vec![i], format!("s{i}"), 3);
        }
        assert_eq!(texts.by_id.len(), 3);
        assert!(!texts.by_id.contains_key(&vec![0u8]));
        assert!(texts.by_id.contains_key(&vec![4u8]));
    }
}
