//! The client protocol: what a client and the client-facing server say to
//! each other over QUIC.
//!
//! - One QUIC connection per client, negotiated with the ALPN [`ALPN`]. The
//!   connection holds the session (the keyspace chosen by `USE`).
//! - Requests travel on a *request lane* (`crate::net::mux`): one
//!   bidirectional stream the client opens after the startup and keeps,
//!   starting with `LANE_MAGIC` and carrying each frame as chunks tagged
//!   with a request id; the server answers each under its id, in the order
//!   the answers are ready. A request over `LANE_MAX_REQUEST` bytes, and
//!   every request to a server that does not take lanes, goes on a
//!   bidirectional stream of its own: the client writes one
//!   [`ClientFrame`] and finishes its side; the server writes one
//!   [`ServerFrame`] and finishes its side.
//! - A frame is a big-endian `u32` length followed by that many bytes of
//!   bincode 2 (standard configuration). A length above [`MAX_FRAME_LEN`] is
//!   refused before anything is read or allocated; decoding is limited to the
//!   frame's length and must consume the frame exactly.
//! - The first request of a connection is [`ClientFrame::Startup`] with
//!   the client's protocol version; the server answers [`ServerFrame::Ready`]
//!   when it speaks that version (any from [`MIN_PROTOCOL_VERSION`] to
//!   [`PROTOCOL_VERSION`]), or an error with
//!   [`ProtocolErrorCode::UnsupportedVersion`]; a client then tries
//!   [`MIN_PROTOCOL_VERSION`], so a newer client still talks to an older
//!   server. Other requests before a successful startup get
//!   [`ProtocolErrorCode::NotStarted`].
//! - Versions: 1 is the first; 2 adds `QueryError::Failure` (replicas that
//!   failed rather than timed out). The server answers a version-1 session
//!   as version 1 did ([`ServerFrame::for_version`]). New variants are
//!   added last, so the variants before them keep their numbers.
//! - A malformed, oversized or truncated frame fails only its own request:
//!   on a stream of its own the server answers with an error frame where it
//!   can, stops reading the stream with the error's code and finishes it;
//!   on a lane it answers with an error frame under the request's id. A
//!   lane whose chunks do not parse is stopped. The connection and its
//!   other streams carry on.

use crate::query::api::{ColumnSpec, Prepared, QueryError, QueryOptions, Response};
use cql_lite::Value;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The ALPN protocol name of the client protocol (the node-to-node
/// transport uses its own).
pub const ALPN: &[u8] = b"ringdb-cql/1";

/// The newest protocol version this build speaks (the one its client asks
/// for first).
pub const PROTOCOL_VERSION: u16 = 2;

/// The oldest protocol version this build still speaks.
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// The largest frame body either side accepts, in bytes (16 MiB).
pub const MAX_FRAME_LEN: u32 = 16 * 1024 * 1024;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_LEN: usize = 4;

/// A request from a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientFrame {
    /// Opens the session: checks the protocol version and optionally
    /// chooses a keyspace (as `USE keyspace` would).
    Startup {
        /// From [`MIN_PROTOCOL_VERSION`] to [`PROTOCOL_VERSION`].
        protocol_version: u16,
        /// Keyspace to use from the start.
        keyspace: Option<String>,
    },
    /// Runs one statement given as text, with values for its bind markers.
    Query {
        /// The CQL-lite text.
        text: String,
        /// Values of the bind markers, in order.
        values: Vec<Value>,
        /// Consistency, paging and causal context.
        options: QueryOptions,
    },
    /// Prepares a statement for repeated execution.
    Prepare {
        /// The CQL-lite text.
        text: String,
    },
    /// Runs a prepared statement.
    Execute {
        /// The id from [`ServerFrame::Prepared`].
        id: Vec<u8>,
        /// Values of the bind markers, in order.
        values: Vec<Value>,
        /// Consistency, paging and causal context.
        options: QueryOptions,
    },
    /// Runs several writes as one `BEGIN ... BATCH`.
    Batch {
        /// Logged or unlogged.
        kind: BatchKind,
        /// The statements with their values, in order.
        statements: Vec<BatchEntry>,
        /// Consistency and causal context (paging does not apply).
        options: QueryOptions,
    },
    /// Asks for the schema: keyspaces, tables, columns and the CQL that
    /// recreates them (for `DESCRIBE` and completion).
    DescribeSchema,
    /// Asks for the cluster's status as this node sees it (`ringdb admin
    /// status`): every node, its state, load and tokens.
    AdminStatus,
    /// Asks the node to leave the ring (`ringdb admin decommission`): it
    /// hands the data of its ranges to the nodes that take them over, then
    /// stops. The answer (`AdminText`) comes once the data is handed over.
    AdminDecommission,
    /// Asks the node to write every table's memtables to SSTables and wait
    /// for the compactions that become due (`ringdb admin flush`). The
    /// answer (`AdminText`) says what was written.
    AdminFlush,
    /// Asks the node to flush and compact every table into one SSTable
    /// (`ringdb admin compact`), purging expired tombstones and pruning
    /// causal contexts. The answer (`AdminText`) says what was done.
    AdminCompact,
    /// Asks the node to run anti-entropy repair over the ranges it
    /// replicates (`ringdb admin repair`): replicas are compared by hashes
    /// and sent what they lack. The answer (`AdminText`) says what was
    /// done; an error when some replica or range could not take part.
    AdminRepair(RepairRequest),
    /// Asks the node to drop the data of ranges it no longer replicates
    /// (`ringdb admin cleanup`), in every table or the ones named. The
    /// answer (`AdminText`) says what was dropped; refused while the ring
    /// is changing or a node is down.
    AdminCleanup {
        /// Only this keyspace (every keyspace when `None`).
        keyspace: Option<String>,
        /// Only this table of `keyspace` (every table when `None`).
        table: Option<String>,
    },
    /// Asks the node to take another node, down for good, out of the ring
    /// (`ringdb admin removenode`): the ranges it replicated are copied to
    /// the nodes that take them over from their other replicas, then it is
    /// gossiped as removed. The answer (`AdminText`) comes once done.
    AdminRemoveNode {
        /// The host id of the node to remove (`ringdb admin status`).
        node: u64,
    },
    /// Sets how many MiB per second the node's range streams may copy,
    /// until it restarts (`ringdb admin setstreamthroughput`); 0 lifts the
    /// limit. The answer (`AdminText`) gives the old and new limits.
    AdminSetStreamThroughput {
        /// The new limit in MiB per second (0: none).
        mib_per_sec: u64,
    },
}

/// What `ringdb admin repair` repairs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RepairRequest {
    /// Only this keyspace (every keyspace when `None`).
    pub keyspace: Option<String>,
    /// Only this table of `keyspace` (every table when `None`).
    pub table: Option<String>,
    /// Only the ranges the node is the first replica of, so that running
    /// it on every node repairs each range once.
    pub primary_range: bool,
}

/// A logged or unlogged batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum BatchKind {
    /// `BEGIN BATCH`: all or nothing (the default).
    #[default]
    Logged,
    /// `BEGIN UNLOGGED BATCH`.
    Unlogged,
}

/// One statement of a batch: text or a prepared statement, with values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchEntry {
    /// What to run.
    pub statement: BatchStatement,
    /// Values of its bind markers, in order.
    pub values: Vec<Value>,
}

/// The statement of a [`BatchEntry`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BatchStatement {
    /// An INSERT, UPDATE or DELETE as text.
    Text(String),
    /// The id of a statement prepared on this server.
    Prepared(Vec<u8>),
}

/// An answer from the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ServerFrame {
    /// The session is open.
    Ready {
        /// The version of the session (equal to the client's).
        protocol_version: u16,
        /// The keyspace in use, if the startup chose one.
        keyspace: Option<String>,
    },
    /// A statement succeeded.
    Result(Response),
    /// A statement was prepared.
    Prepared(Prepared),
    /// The schema, for `DescribeSchema`.
    Schema(SchemaSnapshot),
    /// Text for an admin request (a `nodetool status`-like table).
    AdminText(String),
    /// The request failed.
    Error(WireError),
}

impl ServerFrame {
    /// This answer as a session of protocol `version` understands it: for
    /// version 1, a `QueryError::Failure` becomes the `Timeout` version 1
    /// reported for it.
    pub fn for_version(self, version: u16) -> ServerFrame {
        match self {
            ServerFrame::Error(WireError::Query(e)) if version < 2 => {
                ServerFrame::Error(WireError::Query(e.for_version_1()))
            }
            other => other,
        }
    }
}

/// An error as it travels to the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WireError {
    /// The statement failed (syntax, schema, availability, ...).
    Query(QueryError),
    /// The request itself was refused (bad frame, bad version, ...).
    Protocol(ProtocolError),
}

/// A request the server could not take as a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProtocolError {
    /// What class of problem.
    pub code: ProtocolErrorCode,
    /// Details for a person.
    pub message: String,
}

impl ProtocolError {
    /// A protocol error with a message.
    pub fn new(code: ProtocolErrorCode, message: impl Into<String>) -> ProtocolError {
        ProtocolError {
            code,
            message: message.into(),
        }
    }
}

/// Classes of protocol errors; each is also the QUIC application error
/// code with which the server stops reading the stream
/// ([`ProtocolErrorCode::code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProtocolErrorCode {
    /// The frame's bytes do not decode as a request, or have bytes left over.
    Malformed,
    /// The length prefix is above [`MAX_FRAME_LEN`].
    FrameTooLarge,
    /// The stream ended before the frame did.
    Truncated,
    /// The startup asked for a protocol version the server does not speak.
    UnsupportedVersion,
    /// A request came before a successful startup.
    NotStarted,
    /// The answer would exceed [`MAX_FRAME_LEN`].
    ResponseTooLarge,
    /// The request did not arrive in time.
    ReadTimeout,
    /// The server failed in a way that is not the request's fault.
    Internal,
    /// The server does not offer what was asked (e.g. admin status on a
    /// server without the cluster layer).
    Unsupported,
    /// The request is not accepted from this client (an admin request that
    /// changes the node, from another machine).
    Forbidden,
    /// The server holds as many request bytes as it allows across all
    /// clients (`ServerLimits::max_request_bytes`); retry later.
    Overloaded,
}

impl ProtocolErrorCode {
    /// The QUIC application error code of this class (stable numbers).
    pub fn code(self) -> u32 {
        match self {
            ProtocolErrorCode::Malformed => 1,
            ProtocolErrorCode::FrameTooLarge => 2,
            ProtocolErrorCode::Truncated => 3,
            ProtocolErrorCode::UnsupportedVersion => 4,
            ProtocolErrorCode::NotStarted => 5,
            ProtocolErrorCode::ResponseTooLarge => 6,
            ProtocolErrorCode::ReadTimeout => 7,
            ProtocolErrorCode::Internal => 8,
            ProtocolErrorCode::Unsupported => 9,
            ProtocolErrorCode::Forbidden => 10,
            ProtocolErrorCode::Overloaded => 11,
        }
    }
}

impl fmt::Display for ProtocolErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ProtocolErrorCode::Malformed => "malformed frame",
            ProtocolErrorCode::FrameTooLarge => "frame too large",
            ProtocolErrorCode::Truncated => "truncated frame",
            ProtocolErrorCode::UnsupportedVersion => "unsupported protocol version",
            ProtocolErrorCode::NotStarted => "session not started",
            ProtocolErrorCode::ResponseTooLarge => "response too large",
            ProtocolErrorCode::ReadTimeout => "request read timed out",
            ProtocolErrorCode::Internal => "internal server error",
            ProtocolErrorCode::Unsupported => "not supported by this server",
            ProtocolErrorCode::Forbidden => "not allowed from this client",
            ProtocolErrorCode::Overloaded => "server overloaded",
        };
        f.write_str(name)
    }
}

/// The schema as the server describes it: enough for `DESCRIBE` (the CQL
/// that recreates each object) and for completion (names of keyspaces,
/// tables and columns).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaSnapshot {
    /// Every keyspace, sorted by name.
    pub keyspaces: Vec<KeyspaceDescription>,
}

impl SchemaSnapshot {
    /// The keyspace named `name` (exact match first, then ignoring ASCII case).
    pub fn keyspace(&self, name: &str) -> Option<&KeyspaceDescription> {
        self.keyspaces.iter().find(|k| k.name == name).or_else(|| {
            self.keyspaces
                .iter()
                .find(|k| k.name.eq_ignore_ascii_case(name))
        })
    }
}

/// One keyspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyspaceDescription {
    /// Its name.
    pub name: String,
    /// `CREATE KEYSPACE ...;` recreating it (without its tables).
    pub create_statement: String,
    /// Its tables, sorted by name.
    pub tables: Vec<TableDescription>,
}

impl KeyspaceDescription {
    /// The table named `name` (exact match first, then ignoring ASCII case).
    pub fn table(&self, name: &str) -> Option<&TableDescription> {
        self.tables.iter().find(|t| t.name == name).or_else(|| {
            self.tables
                .iter()
                .find(|t| t.name.eq_ignore_ascii_case(name))
        })
    }
}

/// One table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDescription {
    /// Its name.
    pub name: String,
    /// Its columns in schema order.
    pub columns: Vec<ColumnSpec>,
    /// `CREATE TABLE ks.t (...) WITH ...;` recreating it.
    pub create_statement: String,
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix is above [`MAX_FRAME_LEN`].
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME_LEN} bytes")]
    TooLarge(u64),
    /// The input ended inside the frame.
    #[error("frame truncated: {0}")]
    Truncated(String),
    /// The body does not decode.
    #[error("frame does not decode: {0}")]
    Malformed(String),
}

impl FrameError {
    /// The protocol error class this maps to.
    pub fn code(&self) -> ProtocolErrorCode {
        match self {
            FrameError::TooLarge(_) => ProtocolErrorCode::FrameTooLarge,
            FrameError::Truncated(_) => ProtocolErrorCode::Truncated,
            FrameError::Malformed(_) => ProtocolErrorCode::Malformed,
        }
    }

    /// As a protocol error to send back.
    pub fn to_protocol_error(&self) -> ProtocolError {
        ProtocolError::new(self.code(), self.to_string())
    }
}

fn config() -> bincode::config::Configuration<
    bincode::config::BigEndian,
    bincode::config::Varint,
    bincode::config::Limit<{ MAX_FRAME_LEN as usize }>,
> {
    bincode::config::standard()
        .with_big_endian()
        .with_variable_int_encoding()
        .with_limit::<{ MAX_FRAME_LEN as usize }>()
}

/// Encodes a frame body (without the length prefix).
pub fn encode_body<T: Serialize>(frame: &T) -> Result<Vec<u8>, FrameError> {
    let body = bincode::serde::encode_to_vec(frame, config())
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if body.len() as u64 > u64::from(MAX_FRAME_LEN) {
        return Err(FrameError::TooLarge(body.len() as u64));
    }
    Ok(body)
}

/// Encodes a whole frame: length prefix and body.
pub fn encode_frame<T: Serialize>(frame: &T) -> Result<Vec<u8>, FrameError> {
    // The body is written in place after a placeholder prefix, into room
    // for a YCSB-sized row, so a typical answer is neither regrown while
    // it is encoded nor copied behind its prefix afterwards.
    let mut out = Vec::with_capacity(FRAME_START_CAPACITY);
    out.extend_from_slice(&[0; LENGTH_PREFIX_LEN]);
    bincode::serde::encode_into_std_write(frame, &mut out, config())
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    let len = out.len() - LENGTH_PREFIX_LEN;
    let prefix = u32::try_from(len)
        .ok()
        .filter(|&l| l <= MAX_FRAME_LEN)
        .ok_or(FrameError::TooLarge(len as u64))?;
    out[..LENGTH_PREFIX_LEN].copy_from_slice(&prefix.to_be_bytes());
    Ok(out)
}

/// The room a frame is encoded into at first (it grows past that).
const FRAME_START_CAPACITY: usize = 1536;

/// Checks a length prefix against [`MAX_FRAME_LEN`].
pub fn check_length(prefix: [u8; LENGTH_PREFIX_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix);
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(u64::from(len)));
    }
    Ok(len as usize)
}

/// Decodes a frame body: the bytes must decode as one `T` exactly.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    if body.len() as u64 > u64::from(MAX_FRAME_LEN) {
        return Err(FrameError::TooLarge(body.len() as u64));
    }
    let (value, used) = bincode::serde::decode_from_slice(body, config()).map_err(|e| match e {
        bincode::error::DecodeError::UnexpectedEnd { .. } => FrameError::Truncated(e.to_string()),
        other => FrameError::Malformed(other.to_string()),
    })?;
    if used != body.len() {
        return Err(FrameError::Malformed(format!(
            "{} bytes left over after the frame",
            body.len() - used
        )));
    }
    Ok(value)
}

/// Decodes a whole frame (length prefix and body) from `bytes`, which must
/// hold exactly one frame.
pub fn decode_frame<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FrameError> {
    let Some((prefix, body)) = bytes.split_first_chunk::<LENGTH_PREFIX_LEN>() else {
        return Err(FrameError::Truncated(format!(
            "{} bytes cannot hold the length prefix",
            bytes.len()
        )));
    };
    let len = check_length(*prefix)?;
    if body.len() < len {
        return Err(FrameError::Truncated(format!(
            "the prefix announces {len} bytes, {} arrived",
            body.len()
        )));
    }
    if body.len() > len {
        return Err(FrameError::Malformed(format!(
            "{} bytes follow the frame",
            body.len() - len
        )));
    }
    decode_body(body)
}

/// Reads one frame from a QUIC stream: the length prefix, then the body.
/// The body grows as bytes arrive, so a peer that announces a large frame
/// and sends little costs only what it sent; nothing beyond
/// [`MAX_FRAME_LEN`] is ever read.
pub async fn read_frame<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
) -> Result<T, StreamFrameError> {
    let mut prefix = [0u8; LENGTH_PREFIX_LEN];
    recv.read_exact(&mut prefix)
        .await
        .map_err(read_exact_error)?;
    read_frame_after(recv, prefix).await
}

/// Reads the rest of a frame whose length prefix was read already.
pub async fn read_frame_after<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    prefix: [u8; LENGTH_PREFIX_LEN],
) -> Result<T, StreamFrameError> {
    let len = check_length(prefix)?;
    let mut body = Vec::with_capacity(len.min(INITIAL_READ_CAPACITY));
    while body.len() < len {
        match recv.read_chunk(len - body.len(), true).await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk.bytes),
            Ok(None) => {
                return Err(StreamFrameError::Frame(FrameError::Truncated(format!(
                    "the stream ended after {} of {len} bytes",
                    body.len()
                ))))
            }
            Err(e) => return Err(StreamFrameError::Stream(e.to_string())),
        }
    }
    Ok(decode_body(&body)?)
}

/// Reads the end of a stream whose one frame was read with [`read_frame`].
///
/// Returns true when the peer finished the stream right after the frame:
/// the stream is then read to its end and closes cleanly, with nothing
/// sent back (a stream dropped before its end costs a STOP_SENDING frame,
/// and the packet and acknowledgement that carry it). Returns false when
/// more bytes follow the frame or the stream failed; the caller then stops
/// the stream. At most one byte past the frame is read.
pub async fn read_end(recv: &mut quinn::RecvStream) -> bool {
    matches!(recv.read_chunk(1, true).await, Ok(None))
}

/// What [`read_frame`] reserves before the body arrives.
const INITIAL_READ_CAPACITY: usize = 64 * 1024;

/// Writes one frame to a QUIC stream (does not finish the stream).
pub async fn write_frame<T: Serialize>(
    send: &mut quinn::SendStream,
    frame: &T,
) -> Result<(), StreamFrameError> {
    let bytes = encode_frame(frame)?;
    send.write_all(&bytes)
        .await
        .map_err(|e| StreamFrameError::Stream(e.to_string()))
}

/// What a failed read of a frame's first bytes means.
pub fn read_exact_error(e: quinn::ReadExactError) -> StreamFrameError {
    match e {
        quinn::ReadExactError::FinishedEarly(got) => StreamFrameError::Frame(
            FrameError::Truncated(format!("the stream ended after {got} more bytes")),
        ),
        quinn::ReadExactError::ReadError(e) => StreamFrameError::Stream(e.to_string()),
    }
}

/// Why a frame could not be read from or written to a stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamFrameError {
    /// The bytes were not a valid frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The stream or the connection failed (reset, closed, lost).
    #[error("stream failed: {0}")]
    Stream(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Consistency;

    fn failure() -> QueryError {
        QueryError::Failure {
            consistency: Consistency::Quorum,
            required: 2,
            received: 1,
            failures: vec!["127.0.0.1:7001: storage error on the replica: disk full".into()],
            write: true,
        }
    }

    #[test]
    fn a_version_1_session_gets_a_failure_as_the_timeout_it_knows() {
        let timeout = QueryError::Timeout {
            consistency: Consistency::Quorum,
            required: 2,
            received: 1,
            write: true,
        };
        let answer = ServerFrame::Error(WireError::Query(failure()));
        assert_eq!(
            answer.clone().for_version(1),
            ServerFrame::Error(WireError::Query(timeout.clone()))
        );
        assert_eq!(answer.clone().for_version(PROTOCOL_VERSION), answer);
        // Everything else is the same in both versions.
        let others = [
            ServerFrame::Error(WireError::Query(timeout)),
            ServerFrame::Error(WireError::Query(QueryError::Server("x".into()))),
            ServerFrame::AdminText("status".into()),
        ];
        for frame in others {
            assert_eq!(frame.clone().for_version(1), frame);
        }
    }

    #[test]
    fn the_errors_of_version_1_keep_their_bytes() {
        // A Timeout error frame as version 1 encoded it: adding `Failure`
        // after the other variants must not renumber them.
        let frame = ServerFrame::Error(WireError::Query(QueryError::Timeout {
            consistency: Consistency::Quorum,
            required: 2,
            received: 1,
            write: true,
        }));
        let bytes = encode_frame(&frame).unwrap();
        assert_eq!(bytes, VERSION_1_TIMEOUT_FRAME);
        assert_eq!(decode_frame::<ServerFrame>(&bytes).unwrap(), frame);
        // A failure round-trips under version 2.
        let frame = ServerFrame::Error(WireError::Query(failure()));
        let bytes = encode_frame(&frame).unwrap();
        assert_eq!(decode_frame::<ServerFrame>(&bytes).unwrap(), frame);
    }

    /// As the build before version 2 (commit e9b23e2) encoded it: length
    /// 7; `ServerFrame::Error` (5), `WireError::Query` (0),
    /// `QueryError::Timeout` (3), QUORUM (4), 2, 1, true.
    const VERSION_1_TIMEOUT_FRAME: &[u8] = &[0, 0, 0, 7, 5, 0, 3, 4, 2, 1, 1];

    #[test]
    fn frame_round_trip_and_exactness() {
        let frame = ClientFrame::Query {
            text: "SELECT * FROM t WHERE k = ?".into(),
            values: vec![Value::Int(3), Value::Text("x".into())],
            options: QueryOptions {
                consistency: Consistency::Quorum,
                page_size: Some(10),
                ..QueryOptions::default()
            },
        };
        let bytes = encode_frame(&frame).unwrap();
        assert_eq!(decode_frame::<ClientFrame>(&bytes).unwrap(), frame);
        // Every strict prefix is refused as truncated or malformed, never decoded.
        for cut in 0..bytes.len() {
            assert!(
                decode_frame::<ClientFrame>(&bytes[..cut]).is_err(),
                "prefix of {cut} bytes"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_frame::<ClientFrame>(&longer).is_err());
    }

    #[test]
    fn frames_larger_than_the_limit_are_refused_when_encoded() {
        let frame_of = |bytes: usize| ClientFrame::Query {
            text: "x".repeat(bytes),
            values: vec![],
            options: QueryOptions::default(),
        };
        let fits = encode_frame(&frame_of(MAX_FRAME_LEN as usize - 64)).unwrap();
        let len = u32::from_be_bytes(fits[..LENGTH_PREFIX_LEN].try_into().unwrap());
        assert_eq!(len as usize, fits.len() - LENGTH_PREFIX_LEN);
        assert!(len <= MAX_FRAME_LEN);
        assert!(matches!(
            encode_frame(&frame_of(MAX_FRAME_LEN as usize + 1)),
            Err(FrameError::TooLarge(n)) if n > u64::from(MAX_FRAME_LEN)
        ));
    }

    #[test]
    fn oversized_length_is_refused_before_reading() {
        let prefix = (MAX_FRAME_LEN + 1).to_be_bytes();
        assert_eq!(
            check_length(prefix),
            Err(FrameError::TooLarge(u64::from(MAX_FRAME_LEN) + 1))
        );
        assert_eq!(
            check_length(MAX_FRAME_LEN.to_be_bytes()),
            Ok(MAX_FRAME_LEN as usize)
        );
    }

    #[test]
    fn huge_claimed_collection_does_not_allocate() {
        // A Query whose text claims an enormous length: the decode limit
        // refuses it instead of allocating.
        let mut body = vec![1u8]; // variant 1: Query
        body.push(253); // varint marker for u64
        body.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(decode_body::<ClientFrame>(&body).is_err());
    }
}
