//! The Rust client library: what the shell, the demo, the benchmark and
//! the tests use to talk to a ringdb node.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ringdb::client::ClientError> {
//! use ringdb::client::{Client, ClientTlsConfig};
//! let tls = ClientTlsConfig::new(std::fs::read_to_string("ca.pem").unwrap(), "ringdb-node");
//! let client = Client::connect("127.0.0.1:9042".parse().unwrap(), tls).await?;
//! client.use_keyspace("demo").await?;
//! let response = client.execute("SELECT * FROM users WHERE id = ?", vec![cql_lite::Value::Int(1)]).await?;
//! # let _ = response; Ok(()) }
//! ```
//!
//! The protocol is in [`protocol`]. A [`Client`] holds one QUIC connection
//! (one session on the server) and sends each request on its own stream, so
//! requests may run concurrently from several tasks.
//!
//! A connection found closed (the node restarted, or it closed the
//! connection) is dialed again before the next request, and the session
//! opened again with the keyspace in use; a request in flight when the
//! connection was lost fails with [`ClientError::Connection`] and is not
//! sent again (it may or may not have been applied).

pub mod protocol;

use crate::model::Consistency;
use crate::net::mux::{CallError, LaneClient, LaneEnd, LaneMessage};
use crate::net::quic::LANE_MAX_REQUEST;
use crate::query::api::{
    PagingState, Prepared, QueryError, QueryOptions, QueryResult, Response, ResultSet,
};
use cql_lite::Value;
use parking_lot::Mutex;
use protocol::{
    BatchEntry, BatchKind, BatchStatement, ClientFrame, ProtocolError, ProtocolErrorCode,
    RepairRequest, SchemaSnapshot, ServerFrame, StreamFrameError, WireError, ALPN,
    MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Errors of the client library.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// The statement failed on the server (syntax, schema, availability...).
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The server refused the request as a request, or answered something
    /// that is not a valid answer.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server refused the request with a protocol error code.
    #[error("server refused the request: {0}")]
    Refused(ProtocolError),
    /// Connecting failed or the connection was lost.
    #[error("connection error: {0}")]
    Connection(String),
    /// The TLS settings are unusable (bad PEM, bad server name...).
    #[error("TLS configuration error: {0}")]
    Tls(String),
    /// No answer within the client's timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

impl ClientError {
    /// The query error, if the server ran the statement and it failed.
    pub fn as_query_error(&self) -> Option<&QueryError> {
        match self {
            ClientError::Query(e) => Some(e),
            _ => None,
        }
    }
}

impl From<StreamFrameError> for ClientError {
    fn from(e: StreamFrameError) -> Self {
        match e {
            StreamFrameError::Frame(f) => ClientError::Protocol(f.to_string()),
            StreamFrameError::Stream(s) => ClientError::Connection(s),
        }
    }
}

/// How the client authenticates the server (and, optionally, itself).
#[derive(Debug, Clone)]
pub struct ClientTlsConfig {
    /// PEM of the CA certificate(s) to trust (the cluster CA).
    pub ca_pem: String,
    /// The name the server's certificate must carry.
    pub server_name: String,
    /// A client certificate chain and key (PEM), for servers that require
    /// mutual TLS.
    pub client_identity: Option<(String, String)>,
}

impl ClientTlsConfig {
    /// Trusts the CA in `ca_pem` and expects the server to be `server_name`.
    pub fn new(ca_pem: impl Into<String>, server_name: impl Into<String>) -> ClientTlsConfig {
        ClientTlsConfig {
            ca_pem: ca_pem.into(),
            server_name: server_name.into(),
            client_identity: None,
        }
    }

    /// Presents this certificate chain and key (PEM) to the server.
    pub fn with_identity(
        mut self,
        cert_pem: impl Into<String>,
        key_pem: impl Into<String>,
    ) -> ClientTlsConfig {
        self.client_identity = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// The QUIC client configuration (TLS 1.3, ring, the client protocol's
    /// ALPN) for these settings; [`Client::connect`] uses it, and tools that
    /// speak to the server at the frame level can too.
    pub fn quinn_config(&self) -> Result<quinn::ClientConfig, ClientError> {
        let tls_err = |e: &dyn std::fmt::Display| ClientError::Tls(e.to_string());
        let mut roots = rustls::RootCertStore::empty();
        let mut any = false;
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| tls_err(&e))?;
            roots.add(cert).map_err(|e| tls_err(&e))?;
            any = true;
        }
        if !any {
            return Err(ClientError::Tls(
                "no CA certificate found in the PEM given".into(),
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_err(&e))?
            .with_root_certificates(roots);
        let mut tls = match &self.client_identity {
            None => builder.with_no_client_auth(),
            Some((cert_pem, key_pem)) => {
                let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| tls_err(&e))?;
                let key =
                    PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| tls_err(&e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| tls_err(&e))?
            }
        };
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic =
            quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| tls_err(&e))?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        let mut transport = quinn::TransportConfig::default();
        // Keeps an idle session (a shell waiting for input) open.
        transport.keep_alive_interval(Some(KEEP_ALIVE_INTERVAL));
        crate::net::quic::tune_transport(&mut transport);
        config.transport_config(Arc::new(transport));
        Ok(config)
    }
}

/// A statement prepared on the server, with its text (kept so that the
/// client can prepare it again if the server forgot it).
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedStatement {
    /// The text that was prepared.
    pub text: String,
    /// The server's answer: id, bind columns and result columns.
    pub prepared: Prepared,
}

/// A batch being built: statements (text or prepared) with their values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    kind: BatchKind,
    entries: Vec<BatchEntry>,
}

impl Batch {
    /// An empty batch of this kind.
    pub fn new(kind: BatchKind) -> Batch {
        Batch {
            kind,
            entries: Vec::new(),
        }
    }

    /// Adds a statement given as text.
    pub fn add(mut self, text: impl Into<String>, values: Vec<Value>) -> Batch {
        self.entries.push(BatchEntry {
            statement: BatchStatement::Text(text.into()),
            values,
        });
        self
    }

    /// Adds a prepared statement.
    pub fn add_prepared(mut self, statement: &PreparedStatement, values: Vec<Value>) -> Batch {
        self.entries.push(BatchEntry {
            statement: BatchStatement::Prepared(statement.prepared.id.clone()),
            values,
        });
        self
    }

    /// Number of statements.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no statement was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// How often an idle connection pings the server so that it stays open.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// Default time the client waits for an answer.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection to one ringdb node: one session.
pub struct Client {
    endpoint: quinn::Endpoint,
    /// The current connection; replaced when found closed.
    connection: Mutex<quinn::Connection>,
    /// What dialing the node again needs.
    addr: SocketAddr,
    quinn_config: quinn::ClientConfig,
    server_name: String,
    /// Held while dialing again, so that one request does it.
    redial: tokio::sync::Mutex<()>,
    /// How many times the connection was dialed again.
    reconnects: AtomicU64,
    /// The protocol version of the session: [`PROTOCOL_VERSION`], or
    /// [`MIN_PROTOCOL_VERSION`] with a server that does not speak it.
    protocol_version: AtomicU16,
    inner: Mutex<ClientSettings>,
    /// The request lane (`net::mux`), opened after the startup; requests go
    /// on it, each tagged with its id, instead of a stream each.
    lane: Mutex<Option<Arc<LaneClient>>>,
    /// Set when the server took no lane (a server from before lanes): every
    /// request then gets a stream of its own.
    lanes_refused: Arc<AtomicBool>,
    next_request_id: AtomicU64,
}

#[derive(Debug, Clone)]
struct ClientSettings {
    consistency: Consistency,
    page_size: Option<u32>,
    keyspace: Option<String>,
    timeout: Duration,
}

impl Client {
    /// Connects to the node at `addr`, checks the protocol version and opens
    /// the session. Must be called within a Tokio runtime.
    pub async fn connect(addr: SocketAddr, tls: ClientTlsConfig) -> Result<Client, ClientError> {
        Client::connect_with_keyspace(addr, tls, None).await
    }

    /// Like [`Client::connect`], and uses `keyspace` from the start.
    pub async fn connect_with_keyspace(
        addr: SocketAddr,
        tls: ClientTlsConfig,
        keyspace: Option<String>,
    ) -> Result<Client, ClientError> {
        let config = tls.quinn_config()?;
        ServerName::try_from(tls.server_name.as_str())
            .map_err(|e| ClientError::Tls(format!("server name {:?}: {e}", tls.server_name)))?;
        let bind: SocketAddr = if addr.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let endpoint = crate::net::udp::endpoint(bind, None, None)
            .map_err(|e| ClientError::Connection(e.to_string()))?;
        let timeout = DEFAULT_REQUEST_TIMEOUT;
        let connection = dial(&endpoint, &config, addr, &tls.server_name, timeout).await?;
        let client = Client {
            endpoint,
            connection: Mutex::new(connection),
            addr,
            quinn_config: config,
            server_name: tls.server_name.clone(),
            redial: tokio::sync::Mutex::new(()),
            reconnects: AtomicU64::new(0),
            protocol_version: AtomicU16::new(PROTOCOL_VERSION),
            inner: Mutex::new(ClientSettings {
                consistency: Consistency::One,
                page_size: None,
                keyspace: None,
                timeout,
            }),
            lane: Mutex::new(None),
            lanes_refused: Arc::new(AtomicBool::new(false)),
            next_request_id: AtomicU64::new(1),
        };
        client.start_session(keyspace).await?;
        Ok(client)
    }

    /// Opens the session on the current connection: checks the protocol
    /// version and sets `keyspace`.
    async fn start_session(&self, keyspace: Option<String>) -> Result<(), ClientError> {
        let connection = self.connection.lock().clone();
        let keyspace = self.start_session_on(&connection, keyspace).await?;
        self.inner.lock().keyspace = keyspace;
        Ok(())
    }

    /// The connection, dialed again (and the session opened again with
    /// the keyspace in use) if it was closed.
    async fn live_connection(&self) -> Result<quinn::Connection, ClientError> {
        let current = self.connection.lock().clone();
        let Some(reason) = current.close_reason() else {
            return Ok(current);
        };
        let _redialing = self.redial.lock().await;
        let current = self.connection.lock().clone();
        if current.close_reason().is_none() {
            // Another request dialed meanwhile.
            return Ok(current);
        }
        let timeout = self.inner.lock().timeout;
        let fresh = dial(
            &self.endpoint,
            &self.quinn_config,
            self.addr,
            &self.server_name,
            timeout,
        )
        .await?;
        // The session first, then the connection is handed out: a request
        // never reaches a connection whose session is not open.
        let keyspace = self.inner.lock().keyspace.clone();
        let started = match self.start_session_on(&fresh, keyspace.clone()).await {
            Err(ClientError::Query(e)) if keyspace.is_some() => {
                // The keyspace was dropped meanwhile: a session without one
                // (statements then say no keyspace is in use).
                tracing::warn!(error = %e, "the session's keyspace is gone; connected again without one");
                self.start_session_on(&fresh, None).await
            }
            other => other,
        };
        let keyspace = match started {
            Ok(keyspace) => keyspace,
            Err(e) => {
                // Dialed again by the next request.
                fresh.close(0u32.into(), b"session not started");
                return Err(e);
            }
        };
        self.inner.lock().keyspace = keyspace;
        *self.connection.lock() = fresh.clone();
        *self.lane.lock() = None;
        self.lanes_refused.store(false, Ordering::Relaxed);
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        tracing::info!(addr = %self.addr, %reason, "connection lost; connected again");
        Ok(fresh)
    }

    /// Opens a session on `connection` with `keyspace`; the keyspace the
    /// server then reports in use. A server that does not speak this
    /// client's protocol version is asked for [`MIN_PROTOCOL_VERSION`].
    async fn start_session_on(
        &self,
        connection: &quinn::Connection,
        keyspace: Option<String>,
    ) -> Result<Option<String>, ClientError> {
        let mut version = self.protocol_version.load(Ordering::Relaxed);
        loop {
            let frame = protocol::encode_frame(&ClientFrame::Startup {
                protocol_version: version,
                keyspace: keyspace.clone(),
            })
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
            match self.request_on_stream_of(connection, &frame).await? {
                ServerFrame::Ready {
                    keyspace,
                    protocol_version,
                } if protocol_version == version => {
                    self.protocol_version.store(version, Ordering::Relaxed);
                    return Ok(keyspace);
                }
                ServerFrame::Ready {
                    protocol_version, ..
                } => {
                    return Err(ClientError::Protocol(format!(
                        "asked for protocol version {version}, the server answered with version {protocol_version}"
                    )))
                }
                ServerFrame::Error(WireError::Protocol(e))
                    if e.code == ProtocolErrorCode::UnsupportedVersion
                        && version > MIN_PROTOCOL_VERSION =>
                {
                    tracing::info!(
                        version,
                        error = %e,
                        "the server does not speak this protocol version; trying the oldest"
                    );
                    version = MIN_PROTOCOL_VERSION;
                }
                ServerFrame::Error(WireError::Query(e)) => return Err(ClientError::Query(e)),
                ServerFrame::Error(WireError::Protocol(e)) => return Err(ClientError::Refused(e)),
                other => return Err(unexpected(&other)),
            }
        }
    }

    /// The protocol version of the session (see
    /// [`protocol::PROTOCOL_VERSION`]).
    pub fn protocol_version(&self) -> u16 {
        self.protocol_version.load(Ordering::Relaxed)
    }

    /// How many times the connection was found closed and dialed again.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// Sets the consistency level used when no options are given.
    pub fn set_consistency(&self, consistency: Consistency) {
        self.inner.lock().consistency = consistency;
    }

    /// The consistency level used when no options are given.
    pub fn consistency(&self) -> Consistency {
        self.inner.lock().consistency
    }

    /// Sets the page size used when no options are given (`None`: the
    /// server's default).
    pub fn set_page_size(&self, page_size: Option<u32>) {
        self.inner.lock().page_size = page_size;
    }

    /// Sets how long to wait for each answer.
    pub fn set_timeout(&self, timeout: Duration) {
        self.inner.lock().timeout = timeout;
    }

    /// The keyspace in use on this session, as the server last reported it.
    pub fn keyspace(&self) -> Option<String> {
        self.inner.lock().keyspace.clone()
    }

    /// The server's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.addr
    }

    /// Options with the client's defaults (consistency, page size).
    pub fn default_options(&self) -> QueryOptions {
        let settings = self.inner.lock();
        QueryOptions {
            consistency: settings.consistency,
            page_size: settings.page_size,
            ..QueryOptions::default()
        }
    }

    /// Runs one statement with the default options.
    pub async fn execute(&self, text: &str, values: Vec<Value>) -> Result<Response, ClientError> {
        self.execute_with(text, values, self.default_options())
            .await
    }

    /// Runs one statement with explicit options.
    pub async fn execute_with(
        &self,
        text: &str,
        values: Vec<Value>,
        options: QueryOptions,
    ) -> Result<Response, ClientError> {
        let frame = ClientFrame::Query {
            text: text.to_string(),
            values,
            options,
        };
        self.response(frame).await
    }

    /// `USE keyspace` on this session.
    pub async fn use_keyspace(&self, keyspace: &str) -> Result<(), ClientError> {
        self.execute(&format!("USE {keyspace}"), Vec::new())
            .await
            .map(|_| ())
    }

    /// Prepares a statement.
    pub async fn prepare(&self, text: &str) -> Result<PreparedStatement, ClientError> {
        match self
            .request(ClientFrame::Prepare {
                text: text.to_string(),
            })
            .await?
        {
            ServerFrame::Prepared(prepared) => Ok(PreparedStatement {
                text: text.to_string(),
                prepared,
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// Runs a prepared statement with the default options.
    pub async fn execute_prepared(
        &self,
        statement: &PreparedStatement,
        values: Vec<Value>,
    ) -> Result<Response, ClientError> {
        self.execute_prepared_with(statement, values, self.default_options())
            .await
    }

    /// Runs a prepared statement with explicit options. If the server no
    /// longer knows the statement, it is prepared again once and retried.
    pub async fn execute_prepared_with(
        &self,
        statement: &PreparedStatement,
        values: Vec<Value>,
        options: QueryOptions,
    ) -> Result<Response, ClientError> {
        let frame = |id: Vec<u8>| ClientFrame::Execute {
            id,
            values: values.clone(),
            options: options.clone(),
        };
        match self.response(frame(statement.prepared.id.clone())).await {
            Err(ClientError::Query(QueryError::UnknownPrepared(_))) => {
                let again = self.prepare(&statement.text).await?;
                self.response(frame(again.prepared.id)).await
            }
            other => other,
        }
    }

    /// Runs a batch with the default consistency.
    pub async fn batch(&self, batch: &Batch) -> Result<Response, ClientError> {
        self.batch_with(batch, self.default_options()).await
    }

    /// Runs a batch with explicit options.
    pub async fn batch_with(
        &self,
        batch: &Batch,
        options: QueryOptions,
    ) -> Result<Response, ClientError> {
        self.response(ClientFrame::Batch {
            kind: batch.kind,
            statements: batch.entries.clone(),
            options,
        })
        .await
    }

    /// The schema: keyspaces, tables, columns and their CQL.
    pub async fn describe_schema(&self) -> Result<SchemaSnapshot, ClientError> {
        match self.request(ClientFrame::DescribeSchema).await? {
            ServerFrame::Schema(schema) => Ok(schema),
            other => Err(unexpected(&other)),
        }
    }

    /// The cluster's status as the connected node sees it (`ringdb admin
    /// status`).
    pub async fn admin_status(&self) -> Result<String, ClientError> {
        match self.request(ClientFrame::AdminStatus).await? {
            ServerFrame::AdminText(text) => Ok(text),
            other => Err(unexpected(&other)),
        }
    }

    /// Asks the node to leave the ring (`ringdb admin decommission`); the
    /// answer comes once it handed its data over. Set a timeout long
    /// enough for that ([`Client::set_timeout`]).
    pub async fn admin_decommission(&self) -> Result<String, ClientError> {
        match self.request(ClientFrame::AdminDecommission).await? {
            ServerFrame::AdminText(text) => Ok(text),
            other => Err(unexpected(&other)),
        }
    }

    /// Asks the node to write every table's memtables to SSTables and
    /// wait for the compactions that become due (`ringdb admin flush`).
    pub async fn admin_flush(&self) -> Result<String, ClientError> {
        match self.request(ClientFrame::AdminFlush).await? {
            ServerFrame::AdminText(text) => Ok(text),
            other => Err(unexpected(&other)),
        }
    }

    /// Asks the node to flush and compact every table into one SSTable
    /// (`ringdb admin compact`).
    pub async fn admin_compact(&self) -> Result<String, ClientError> {
        match self.request(ClientFrame::AdminCompact).await? {
            ServerFrame::AdminText(text) => Ok(text),
            other => Err(unexpected(&other)),
        }
    }

    /// Asks the node to run anti-entropy repair (`ringdb admin repair`);
    /// the answer comes once every range is compared and repaired. Set a
    /// timeout long enough for that ([`Client::set_timeout`]).
    pub async fn admin_repair(&self, request: RepairRequest) -> Result<String, ClientError> {
        match self.request(ClientFrame::AdminRepair(request)).await? {
            ServerFrame::AdminText(text) => Ok(text),
            other => Err(unexpected(&other)),
        }
    }

    /// Asks the node to drop the data of the ranges it no longer
    /// replicates (`ringdb admin cleanup`), in every table, the tables of
    /// `keyspace`, or one `table` of it. Set a timeout long enough to
    /// rewrite the tables ([`Client::set_timeout`]).
    pub async fn admin_cleanup(
        &self,
        keyspace: Option<String>,
        table: Option<String>,
    ) -> Result<String, ClientError> {
        match self
            .request(ClientFrame::AdminCleanup { keyspace, table })
            .await?
        {
            ServerFrame::AdminText(text) => Ok(text),
            other => Err(unexpected(&other)),
        }
    }

    /// Asks the node to take the down node `node` (its host id) out of the
    /// ring (`ringdb admin removenode`); the answer comes once its ranges
    /// are copied to their new replicas. Set a timeout long enough for that
    /// ([`Client::set_timeout`]).
    pub async fn admin_remove_node(&self, node: u64) -> Result<String, ClientError> {
        match self.request(ClientFrame::AdminRemoveNode { node }).await? {
            ServerFrame::AdminText(text) => Ok(text),
            other => Err(unexpected(&other)),
        }
    }

    /// Sets how many MiB per second the node's range streams may copy
    /// until it restarts, 0 for no limit (`ringdb admin
    /// setstreamthroughput`); the answer gives the old and new limits.
    pub async fn admin_set_stream_throughput(
        &self,
        mib_per_sec: u64,
    ) -> Result<String, ClientError> {
        match self
            .request(ClientFrame::AdminSetStreamThroughput { mib_per_sec })
            .await?
        {
            ServerFrame::AdminText(text) => Ok(text),
            other => Err(unexpected(&other)),
        }
    }

    /// Pages through the result of a SELECT: each call of
    /// [`Pager::next_page`] fetches the next page.
    pub fn pages(&self, text: &str, values: Vec<Value>, options: QueryOptions) -> Pager<'_> {
        Pager {
            client: self,
            text: text.to_string(),
            values,
            options,
            done: false,
        }
    }

    /// Runs a SELECT and collects every page's rows into one result set.
    pub async fn fetch_all(
        &self,
        text: &str,
        values: Vec<Value>,
    ) -> Result<ResultSet, ClientError> {
        let mut pager = self.pages(text, values, self.default_options());
        let mut all: Option<ResultSet> = None;
        while let Some(page) = pager.next_page().await? {
            match &mut all {
                None => all = Some(page),
                Some(all) => {
                    all.rows.extend(page.rows);
                    all.causal_context = page.causal_context;
                }
            }
        }
        let mut all = all
            .ok_or_else(|| ClientError::Protocol("the statement returned no rows result".into()))?;
        all.paging_state = None;
        Ok(all)
    }

    /// Closes the connection and waits until the server has been told.
    pub async fn close(self) {
        self.connection.lock().close(0u32.into(), b"bye");
        crate::net::wait_drained(&self.endpoint).await;
    }

    async fn response(&self, frame: ClientFrame) -> Result<Response, ClientError> {
        match self.request(frame).await? {
            ServerFrame::Result(response) => {
                if let QueryResult::SetKeyspace(keyspace) = &response.result {
                    self.inner.lock().keyspace = Some(keyspace.clone());
                }
                Ok(response)
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Sends one request and reads the answer: on the connection's lane
    /// when the request is small enough and the server takes lanes, else on
    /// a stream of its own. Error frames become errors.
    pub async fn request(&self, frame: ClientFrame) -> Result<ServerFrame, ClientError> {
        let timeout = self.inner.lock().timeout;
        let bytes =
            protocol::encode_frame(&frame).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let on_lane =
            !matches!(frame, ClientFrame::Startup { .. }) && bytes.len() <= LANE_MAX_REQUEST;
        let exchange = async {
            if on_lane {
                if let Some(lane) = self.lane().await? {
                    return self.request_on_lane(&lane, bytes).await;
                }
            }
            self.request_on_stream(&bytes).await
        };
        let answer = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout(timeout))??;
        match answer {
            ServerFrame::Error(WireError::Query(e)) => Err(ClientError::Query(e)),
            ServerFrame::Error(WireError::Protocol(e)) => Err(ClientError::Refused(e)),
            other => Ok(other),
        }
    }

    /// The open lane, opened if there is none; `None` when the server takes
    /// no lanes.
    async fn lane(&self) -> Result<Option<Arc<LaneClient>>, ClientError> {
        if let Some(lane) = self.lane.lock().as_ref().filter(|lane| lane.is_open()) {
            return Ok(Some(lane.clone()));
        }
        if self.lanes_refused.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let (send, recv) = self
            .live_connection()
            .await?
            .open_bi()
            .await
            .map_err(|e| ClientError::Connection(e.to_string()))?;
        let mut slot = self.lane.lock();
        // Another request may have opened one meanwhile: keep that one (the
        // new stream, dropped unused, is closed).
        if let Some(lane) = slot.as_ref().filter(|lane| lane.is_open()) {
            return Ok(Some(lane.clone()));
        }
        let refused = self.lanes_refused.clone();
        let lane = LaneClient::start(
            recv,
            send,
            protocol::LENGTH_PREFIX_LEN + protocol::MAX_FRAME_LEN as usize,
            crate::net::mux::MAX_BUFFERED_ANSWERS,
            move |end, answered| {
                if let LaneEnd::Failed(e) = end {
                    tracing::debug!("client lane ended: {e}");
                    if !answered {
                        // A server from before lanes answers the lane's
                        // magic with an error frame, which does not parse
                        // as chunks.
                        refused.store(true, Ordering::Relaxed);
                    }
                }
            },
        );
        *slot = Some(lane.clone());
        Ok(Some(lane))
    }

    async fn request_on_lane(
        &self,
        lane: &LaneClient,
        bytes: Vec<u8>,
    ) -> Result<ServerFrame, ClientError> {
        let request_id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        match lane.call(request_id, bytes.into()).await {
            Ok(LaneMessage::Frame(answer)) => protocol::decode_frame::<ServerFrame>(&answer)
                .map_err(|e| ClientError::Protocol(e.to_string())),
            Ok(LaneMessage::Reject(code)) => Err(ClientError::Protocol(format!(
                "the server dropped the request with code {code}"
            ))),
            Err(CallError::Closed) => {
                Err(ClientError::Connection("the request lane closed".into()))
            }
            Err(CallError::Ended(end)) => Err(ClientError::Connection(match &*end {
                LaneEnd::Finished => "the server closed the request lane".to_string(),
                LaneEnd::Failed(e) => format!("the request lane failed: {e}"),
            })),
        }
    }

    async fn request_on_stream(&self, bytes: &[u8]) -> Result<ServerFrame, ClientError> {
        let connection = self.live_connection().await?;
        self.request_on_stream_of(&connection, bytes).await
    }

    /// One request on a stream of its own on `connection`.
    async fn request_on_stream_of(
        &self,
        connection: &quinn::Connection,
        bytes: &[u8],
    ) -> Result<ServerFrame, ClientError> {
        let (mut send, mut recv) = connection
            .open_bi()
            .await
            .map_err(|e| ClientError::Connection(e.to_string()))?;
        send.write_all(bytes)
            .await
            .map_err(|e| ClientError::Connection(e.to_string()))?;
        // The server may have answered and stopped reading already.
        let _ = send.finish();
        let answer: ServerFrame = protocol::read_frame(&mut recv).await?;
        // The server finishes its side right after the answer: read to
        // that end, so the stream closes without a STOP_SENDING. Only
        // a server that sends more than one frame is stopped.
        if !protocol::read_end(&mut recv).await {
            let _ = recv.stop(quinn::VarInt::from_u32(0));
        }
        Ok(answer)
    }
}

/// Dials the node at `addr`, for at most `timeout`.
async fn dial(
    endpoint: &quinn::Endpoint,
    config: &quinn::ClientConfig,
    addr: SocketAddr,
    server_name: &str,
    timeout: Duration,
) -> Result<quinn::Connection, ClientError> {
    let connecting = endpoint
        .connect_with(config.clone(), addr, server_name)
        .map_err(|e| ClientError::Connection(e.to_string()))?;
    match tokio::time::timeout(timeout, connecting).await {
        Err(_) => Err(ClientError::Timeout(timeout)),
        Ok(Err(e)) => Err(ClientError::Connection(format!(
            "connecting to {addr}: {e}"
        ))),
        Ok(Ok(c)) => Ok(c),
    }
}

fn unexpected(frame: &ServerFrame) -> ClientError {
    let name = match frame {
        ServerFrame::Ready { .. } => "Ready",
        ServerFrame::Result(_) => "Result",
        ServerFrame::Prepared(_) => "Prepared",
        ServerFrame::Schema(_) => "Schema",
        ServerFrame::AdminText(_) => "AdminText",
        ServerFrame::Error(_) => "Error",
    };
    ClientError::Protocol(format!("unexpected {name} frame from the server"))
}

/// Pages of a SELECT, fetched one at a time.
pub struct Pager<'a> {
    client: &'a Client,
    text: String,
    values: Vec<Value>,
    options: QueryOptions,
    done: bool,
}

impl Pager<'_> {
    /// The next page, or `None` after the last one. A statement that
    /// returns no rows result (a write) yields no page.
    pub async fn next_page(&mut self) -> Result<Option<ResultSet>, ClientError> {
        if self.done {
            return Ok(None);
        }
        let response = self
            .client
            .execute_with(&self.text, self.values.clone(), self.options.clone())
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                self.done = true;
                return Err(e);
            }
        };
        match response.result {
            QueryResult::Rows(rows) => {
                match &rows.paging_state {
                    Some(state) => self.options.paging_state = Some(state.clone()),
                    None => self.done = true,
                }
                Ok(Some(rows))
            }
            _ => {
                self.done = true;
                Ok(None)
            }
        }
    }

    /// Where the next page starts (`None` once the last page was read).
    pub fn paging_state(&self) -> Option<&PagingState> {
        if self.done {
            None
        } else {
            self.options.paging_state.as_ref()
        }
    }

    /// True once the last page was returned.
    pub fn is_done(&self) -> bool {
        self.done
    }
}
