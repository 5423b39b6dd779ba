//! The client-facing listener: serves the client protocol
//! ([`crate::client::protocol`]) over QUIC.
//!
//! [`ClientServer::bind`] takes the TLS configuration, the
//! [`QueryExecutor`] that runs statements and the [`SchemaSource`] that
//! describes the schema. Each connection is one session (its keyspace);
//! each bidirectional stream carries one request and its answer. Bad input
//! fails only the stream that carried it: it is answered with an error
//! frame where possible, the stream is stopped with the error's code, the
//! matching counter of [`ServerStats`] rises, and nothing else is affected.
//!
//! [`run_server`] is the process-level entry point the `ringdb server`
//! subcommand calls.

mod handler;
pub mod schema_source;

pub use schema_source::CatalogSource;

use crate::client::protocol::{SchemaSnapshot, ALPN};
use crate::query::api::QueryExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the server needs to know of the schema, beyond running statements:
/// for `DESCRIBE` in the shell and for completion of keyspace, table and
/// column names.
///
/// The schema layer implements it (one snapshot of the current schema;
/// `create_statement`s are the CQL-lite text, e.g. printed from the
/// `CREATE` statements' ASTs).
pub trait SchemaSource: Send + Sync + 'static {
    /// The current schema: every keyspace sorted by name, each with its
    /// `CREATE KEYSPACE` text and its tables sorted by name, each with its
    /// columns and its `CREATE TABLE` text.
    fn snapshot(&self) -> SchemaSnapshot;
}

/// Cluster administration a node offers its clients (`ringdb admin`).
pub trait AdminSource: Send + Sync + 'static {
    /// Every node as this node sees it: state, address, load, tokens
    /// (like `nodetool status`).
    fn status(&self) -> String;

    /// Takes the node out of the ring, handing its data over first (like
    /// `nodetool decommission`); the text says what was done, the error
    /// why it was refused or failed.
    fn decommission(&self) -> crate::query::api::BoxFuture<'static, Result<String, String>> {
        Box::pin(async { Err("this server cannot decommission".to_string()) })
    }

    /// Takes the down node `node` (its host id) out of the ring, its
    /// ranges copied to the nodes that take them over from their other
    /// replicas (like `nodetool removenode`); the text says what was done,
    /// the error why it was refused or failed.
    fn remove_node(
        &self,
        node: u64,
    ) -> crate::query::api::BoxFuture<'static, Result<String, String>> {
        let _ = node;
        Box::pin(async { Err("this server cannot remove nodes".to_string()) })
    }

    /// Writes every table's memtables to SSTables and waits for the
    /// compactions that become due (like `nodetool flush`); the text says
    /// what was written.
    fn flush(&self) -> crate::query::api::BoxFuture<'static, Result<String, String>> {
        Box::pin(async { Err("this server cannot flush".to_string()) })
    }

    /// Flushes and compacts every table into one SSTable (like `nodetool
    /// compact`); the text says what was done.
    fn compact(&self) -> crate::query::api::BoxFuture<'static, Result<String, String>> {
        Box::pin(async { Err("this server cannot compact".to_string()) })
    }

    /// Runs anti-entropy repair over the ranges the node replicates (like
    /// `nodetool repair`); the text says what was done, the error what
    /// could not be repaired.
    fn repair(
        &self,
        request: crate::client::protocol::RepairRequest,
    ) -> crate::query::api::BoxFuture<'static, Result<String, String>> {
        let _ = request;
        Box::pin(async { Err("this server cannot repair".to_string()) })
    }

    /// Drops the data of the ranges the node no longer replicates, in
    /// every table, the tables of `keyspace`, or one `table` of it (like
    /// `nodetool cleanup`); the text says what was dropped.
    fn cleanup(
        &self,
        keyspace: Option<String>,
        table: Option<String>,
    ) -> crate::query::api::BoxFuture<'static, Result<String, String>> {
        let _ = (keyspace, table);
        Box::pin(async { Err("this server cannot clean up".to_string()) })
    }

    /// Sets the MiB per second the node's range streams may copy (0: no
    /// limit), until it restarts (like `nodetool setstreamthroughput`);
    /// the text gives the old and new limits.
    fn set_stream_throughput(&self, mib_per_sec: u64) -> Result<String, String> {
        let _ = mib_per_sec;
        Err("this server does not stream".to_string())
    }
}

/// Bytes a client connection may have sent that the server has not read
/// yet (QUIC's connection-level flow control window): twice the largest
/// frame.
const CONNECTION_RECEIVE_WINDOW: u32 = 2 * crate::client::protocol::MAX_FRAME_LEN;

/// Limits that protect the server from one client.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Concurrent requests (bidirectional streams) per connection.
    pub max_streams_per_connection: u32,
    /// Open connections; more are refused.
    pub max_connections: usize,
    /// Open connections from one client IP address (an IPv4-mapped IPv6
    /// address counts as its IPv4 address); more from that address are
    /// refused, so one machine cannot take every connection. A connection
    /// counts once its handshake has proved its address. `None` (the
    /// default): no limit per address, as Cassandra's
    /// `native_transport_max_concurrent_connections_per_ip`.
    pub max_connections_per_ip: Option<usize>,
    /// Time for a request frame to arrive once its stream is open.
    pub request_read_timeout: Duration,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Prepared statement texts remembered for batches (oldest forgotten first).
    pub max_prepared_texts: usize,
    /// Bytes of requests held at once across every connection: arriving,
    /// or waiting for their answer. A request past it is refused as
    /// overloaded (`net::budget`).
    pub max_request_bytes: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_streams_per_connection: 128,
            max_connections: 1024,
            max_connections_per_ip: None,
            request_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            max_prepared_texts: 10_000,
            max_request_bytes: 256 << 20,
        }
    }
}

/// Counters of the client-facing server.
#[derive(Debug, Default)]
pub struct ServerStats {
    connections_accepted: AtomicU64,
    connections_open: AtomicU64,
    connections_refused: AtomicU64,
    connections_refused_per_ip: AtomicU64,
    handshake_failures: AtomicU64,
    requests: AtomicU64,
    query_errors: AtomicU64,
    malformed_frames: AtomicU64,
    truncated_frames: AtomicU64,
    oversized_frames: AtomicU64,
    bad_versions: AtomicU64,
    not_started: AtomicU64,
    read_timeouts: AtomicU64,
    internal_errors: AtomicU64,
    stream_failures: AtomicU64,
    lanes_opened: AtomicU64,
    lanes_broken: AtomicU64,
    overloaded: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Connections whose handshake succeeded.
    pub connections_accepted: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Connections refused because of [`ServerLimits::max_connections`]
    /// or [`ServerLimits::max_connections_per_ip`].
    pub connections_refused: u64,
    /// Of [`StatsSnapshot::connections_refused`], those refused because
    /// their client's address had [`ServerLimits::max_connections_per_ip`]
    /// open already.
    pub connections_refused_per_ip: u64,
    /// Handshakes that failed (bad TLS, wrong ALPN, ...).
    pub handshake_failures: u64,
    /// Requests decoded and dispatched.
    pub requests: u64,
    /// Requests answered with a query error.
    pub query_errors: u64,
    /// Frames that did not decode.
    pub malformed_frames: u64,
    /// Streams that ended inside a frame.
    pub truncated_frames: u64,
    /// Frames whose length prefix exceeded the limit.
    pub oversized_frames: u64,
    /// Startups with an unsupported protocol version.
    pub bad_versions: u64,
    /// Requests before a successful startup.
    pub not_started: u64,
    /// Requests that did not arrive in time.
    pub read_timeouts: u64,
    /// Requests that failed inside the server (a panic in the executor, an
    /// answer too large to send).
    pub internal_errors: u64,
    /// Streams reset or lost by the peer or the connection.
    pub stream_failures: u64,
    /// Request lanes opened by clients (one stream carrying many requests).
    pub lanes_opened: u64,
    /// Lanes closed because their chunks did not parse.
    pub lanes_broken: u64,
    /// Requests refused because the server held
    /// [`ServerLimits::max_request_bytes`] of requests already.
    pub overloaded: u64,
}

impl StatsSnapshot {
    /// Every frame refused as a frame (malformed, truncated, oversized,
    /// bad version, not started, read timeout).
    pub fn protocol_errors(&self) -> u64 {
        self.malformed_frames
            + self.truncated_frames
            + self.oversized_frames
            + self.bad_versions
            + self.not_started
            + self.read_timeouts
    }
}

impl ServerStats {
    /// A copy of the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            connections_accepted: get(&self.connections_accepted),
            connections_open: get(&self.connections_open),
            connections_refused: get(&self.connections_refused),
            connections_refused_per_ip: get(&self.connections_refused_per_ip),
            handshake_failures: get(&self.handshake_failures),
            requests: get(&self.requests),
            query_errors: get(&self.query_errors),
            malformed_frames: get(&self.malformed_frames),
            truncated_frames: get(&self.truncated_frames),
            oversized_frames: get(&self.oversized_frames),
            bad_versions: get(&self.bad_versions),
            not_started: get(&self.not_started),
            read_timeouts: get(&self.read_timeouts),
            internal_errors: get(&self.internal_errors),
            stream_failures: get(&self.stream_failures),
            lanes_opened: get(&self.lanes_opened),
            lanes_broken: get(&self.lanes_broken),
            overloaded: get(&self.overloaded),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The TLS configuration is unusable for QUIC (it must allow TLS 1.3).
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Builds a TLS 1.3 server configuration (ring provider, no client
/// authentication) from a PEM certificate chain and its PEM private key.
pub fn tls_config_from_pem(
    cert_chain_pem: &str,
    key_pem: &str,
) -> Result<rustls::ServerConfig, ServerError> {
    let tls = |e: &dyn std::fmt::Display| ServerError::Tls(e.to_string());
    let chain = CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls(&e))?;
    if chain.is_empty() {
        return Err(ServerError::Tls(
            "no certificate found in the PEM given".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| tls(&e))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls(&e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| tls(&e))
}

/// The client-facing QUIC server.
pub struct ClientServer {
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    stats: Arc<ServerStats>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl ClientServer {
    /// Listens on `addr` with default limits. The TLS configuration's ALPN
    /// list is replaced by the client protocol's [`ALPN`]. Must be called
    /// within a Tokio runtime.
    pub fn bind(
        addr: SocketAddr,
        tls: rustls::ServerConfig,
        executor: Arc<dyn QueryExecutor>,
        schema: Arc<dyn SchemaSource>,
    ) -> Result<ClientServer, ServerError> {
        ClientServer::bind_with_limits(addr, tls, executor, schema, ServerLimits::default())
    }

    /// Like [`ClientServer::bind`], with explicit limits.
    pub fn bind_with_limits(
        addr: SocketAddr,
        tls: rustls::ServerConfig,
        executor: Arc<dyn QueryExecutor>,
        schema: Arc<dyn SchemaSource>,
        limits: ServerLimits,
    ) -> Result<ClientServer, ServerError> {
        ClientServer::bind_full(addr, tls, executor, schema, None, limits, None)
    }

    /// Like [`ClientServer::bind_with_limits`], with cluster administration
    /// (`admin`) for `ringdb admin` when the node runs the cluster layer,
    /// and the endpoint's [`RestartKeys`](crate::net::tls::RestartKeys)
    /// (derived from the node's private key, so that clients of a node
    /// restarted on the same address learn at once that their connections
    /// are gone; `None`: random keys).
    pub fn bind_full(
        addr: SocketAddr,
        mut tls: rustls::ServerConfig,
        executor: Arc<dyn QueryExecutor>,
        schema: Arc<dyn SchemaSource>,
        admin: Option<Arc<dyn AdminSource>>,
        limits: ServerLimits,
        restart_keys: Option<crate::net::tls::RestartKeys>,
    ) -> Result<ClientServer, ServerError> {
        tls.alpn_protocols = vec![ALPN.to_vec()];
        tls.max_early_data_size = 0;
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| ServerError::Tls(e.to_string()))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(quinn::VarInt::from_u32(limits.max_streams_per_connection))
            .max_concurrent_uni_streams(quinn::VarInt::from_u32(0))
            // What quinn itself buffers for one connection, unread by the
            // server (its default is unbounded): room for the largest
            // frame and the lane's traffic besides.
            .receive_window(quinn::VarInt::from_u32(CONNECTION_RECEIVE_WINDOW))
            .datagram_receive_buffer_size(None)
            .max_idle_timeout(quinn::IdleTimeout::try_from(limits.idle_timeout).ok());
        crate::net::quic::tune_transport(&mut transport);
        config.transport_config(Arc::new(transport));
        let endpoint = crate::net::udp::endpoint(addr, Some(config), restart_keys.as_ref())
            .map_err(|source| ServerError::Bind { addr, source })?;
        let local_addr = endpoint
            .local_addr()
            .map_err(|source| ServerError::Bind { addr, source })?;
        let stats = Arc::new(ServerStats::default());
        let shared = Arc::new(handler::Shared::new(
            executor,
            schema,
            admin,
            stats.clone(),
            limits,
        ));
        let accept_task = tokio::spawn(handler::accept_loop(endpoint.clone(), shared));
        tracing::info!(%local_addr, "client server listening");
        Ok(ClientServer {
            endpoint,
            local_addr,
            stats,
            accept_task,
        })
    }

    /// The address the server listens on (with the real port if 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters now.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Stops accepting, closes every connection and waits until the peers
    /// were told, at most [`crate::net::DRAIN_LIMIT`].
    pub async fn shutdown(self) {
        self.accept_task.abort();
        self.endpoint
            .close(quinn::VarInt::from_u32(0), b"server shutting down");
        crate::net::wait_drained(&self.endpoint).await;
    }
}

/// What `ringdb server` needs to serve clients.
#[derive(Debug)]
pub struct ServerConfig {
    /// Address of the client listener.
    pub listen: SocketAddr,
    /// The node's TLS identity for clients.
    pub tls: rustls::ServerConfig,
    /// Protection limits.
    pub limits: ServerLimits,
}

/// Runs the client-facing server until SIGINT (Ctrl-C) or SIGTERM, then
/// shuts down.
pub async fn run_server(
    config: ServerConfig,
    executor: Arc<dyn QueryExecutor>,
    schema: Arc<dyn SchemaSource>,
) -> Result<(), ServerError> {
    let server =
        ClientServer::bind_with_limits(config.listen, config.tls, executor, schema, config.limits)?;
    eprintln!("ringdb: serving clients on {}", server.local_addr());
    wait_for_stop_signal().await;
    eprintln!("ringdb: shutting down");
    server.shutdown().await;
    Ok(())
}

/// Waits for SIGINT or SIGTERM (a plain `kill`, as `ringdb dev` and
/// scripts/cluster.sh send).
pub async fn wait_for_stop_signal() {
    StopSignal::install().recv().await
}

/// Handlers for SIGINT and SIGTERM, installed when this is made: from then
/// on those signals no longer end the process by their default action but
/// wait for [`StopSignal::recv`]. A server installs them before its node
/// starts, so a stop during a long start (a joining node streams its
/// ranges first) ends it cleanly.
pub struct StopSignal {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
}

impl StopSignal {
    /// Installs the handlers; must be called inside a tokio runtime. A
    /// handler that cannot be installed is logged and left out.
    pub fn install() -> StopSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("cannot listen for {name} ({e}); it stops the process at once");
                None
            }
        };
        StopSignal {
            interrupt: listen(SignalKind::interrupt(), "SIGINT"),
            terminate: listen(SignalKind::terminate(), "SIGTERM"),
        }
    }

    /// Resolves at the next SIGINT or SIGTERM (never, if neither handler
    /// could be installed).
    pub async fn recv(&mut self) {
        async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(s) => {
                    // `None`: the signal driver is gone (the runtime is
                    // shutting down); nothing more will arrive.
                    if s.recv().await.is_none() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            _ = next(&mut self.interrupt) => {}
            _ = next(&mut self.terminate) => {}
        }
    }
}
