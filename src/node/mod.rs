//! The node process: every layer composed into one running ringdb node.
//!
//! ```text
//! clients --QUIC (ringdb-cql/1)--> ClientServer -> Executor (query) -> BatchCoordinator -> ClusterStore (coordinator)
//!                                                                        |        |        |
//! peers   --QUIC (ringdb-peer/1, mutual TLS)--> NodeHandler ---------> replica  hints  batch log
//!                                   datagrams -> Membership (SWIM) -> ring, liveness, schema sync
//! ```
//!
//! A node keeps its identity and tokens in its data directory: the node id
//! (`LocalStore`), and the tokens it picked when it first joined
//! (`tokens`), so a restart rejoins with the same ranges under a new
//! generation.

mod admin;
mod agreement;
pub mod auto_repair;
mod grace;
mod handler;
mod removal;

pub use admin::{parse_repair_line, NodeAdmin};
pub use agreement::AgreeingExecutor;

use crate::cluster::batchlog::{BatchLog, BatchLogOptions};
use crate::cluster::hints::{HintOptions, HintStore};
use crate::cluster::membership::{
    generation_now, Membership, MembershipConfig, MembershipEvent, NodeMetadata, NodeStatus,
};
use crate::cluster::ring::{pick_tokens, NodeInfo, Ring};
use crate::coordinator::{
    BatchConfig, BatchCoordinator, BatchFault, ClusterStore, CoordinatorConfig, Liveness,
    PeerRequest, PeerResponse, FAULT_ENV,
};
use crate::model::key::Token;
use crate::model::{HybridClock, NodeId, SystemClock};
use crate::net::quic::{QuicConfig, QuicTransport};
use crate::net::tls::NodeTls;
use crate::net::Transport;
use crate::query::api::TableRef;
use crate::query::{Executor, ExecutorConfig, LocalStore};
use crate::schema::SchemaStore;
use crate::server::{CatalogSource, ClientServer, ServerLimits};
use crate::storage::commitlog::SyncMode;
use crate::storage::engine::EngineOptions;
use grace::{watch_gc_grace, GraceWatch};
use handler::NodeHandler;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Data directory (schema, tables, hints, node id, tokens).
    pub data_dir: PathBuf,
    /// Certificates: `ca.pem`, `node.pem`, `node.key` (the cluster CA and
    /// this node's certificate, used for peers and for clients).
    pub certs_dir: PathBuf,
    /// Client listener (QUIC, `ringdb-cql/1`).
    pub client_listen: SocketAddr,
    /// Peer listener (QUIC, `ringdb-peer/1`, mutual TLS); also gossip.
    pub peer_listen: SocketAddr,
    /// Peer addresses of seed nodes to join through (empty: a new cluster).
    pub seeds: Vec<SocketAddr>,
    /// Rack, for rack-aware replica placement.
    pub rack: Option<String>,
    /// Virtual nodes (tokens) to pick on first start.
    pub vnodes: usize,
    /// Tokens to take on first start instead of picking them (ignored once
    /// the node has tokens in its data directory).
    pub initial_tokens: Option<Vec<Token>>,
    /// Commit-log durability.
    pub sync_mode: SyncMode,
    /// Coordinator timeouts, read repair and hint replay.
    pub coordinator: CoordinatorConfig,
    /// Gossip timing.
    pub membership: MembershipConfig,
    /// How long a hint is kept for a node that is down.
    pub hint_window: Duration,
    /// How often the node repairs the ranges it is the first replica of
    /// (zero: never; see [`auto_repair`]).
    pub auto_repair_interval: Duration,
    /// Age at which a batch-log entry is replayed (`None`: twice the
    /// write timeout).
    pub batchlog_replay_delay: Option<Duration>,
    /// Bytes of each table's row cache (0: none; see
    /// [`crate::storage::row_cache`]).
    pub row_cache_bytes: usize,
    /// Limits that protect the client listener from its clients
    /// (connections, per client address too, request bytes held, idle
    /// time).
    pub client_limits: ServerLimits,
}

/// Default size of each table's row cache.
pub use crate::storage::row_cache::DEFAULT_ROW_CACHE_BYTES;

/// Errors starting or running a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A file of the node could not be read or written.
    #[error("{what} ({path}): {reason}")]
    File {
        /// What it was.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why it failed.
        reason: String,
    },
    /// A layer failed to start.
    #[error("cannot start {layer}: {reason}")]
    Start {
        /// Which layer.
        layer: &'static str,
        /// Why.
        reason: String,
    },
    /// Another node removed this one from the cluster (`ringdb admin
    /// removenode`) while it was down: it must not serve its old ranges.
    #[error(
        "this node ({node:016x}) was removed from the cluster with `ringdb admin removenode`; \
         its data is out of date and its ranges belong to other nodes now. To add this \
         machine again, empty its data directory ({data_dir}) and start it as a new node"
    )]
    Removed {
        /// The node's id.
        node: u64,
        /// Its data directory.
        data_dir: PathBuf,
    },
}

fn start_err(layer: &'static str) -> impl Fn(&dyn std::fmt::Display) -> NodeError {
    move |e| NodeError::Start {
        layer,
        reason: e.to_string(),
    }
}

/// Liveness as gossip sees it: this node is always up; others are up when
/// the membership view says so.
struct GossipLiveness {
    membership: Membership,
    local: NodeId,
}

impl Liveness for GossipLiveness {
    fn is_alive(&self, node: NodeId) -> bool {
        node == self.local || self.membership.is_up(node)
    }
}

/// A running node.
pub struct Node {
    /// The coordinator.
    pub cluster: ClusterStore,
    /// Logged batches and the batch log over the coordinator.
    pub batches: BatchCoordinator,
    /// Gossip membership.
    pub membership: Membership,
    /// The schema.
    pub schema: Arc<SchemaStore>,
    client_server: ClientServer,
    transport: Arc<dyn Transport<PeerRequest, PeerResponse>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    left: tokio::sync::watch::Receiver<bool>,
    data_dir: PathBuf,
}

/// Share of the memtable size by which each of a node's memtables may be
/// switched early (`EngineOptions::memtable_jitter`).
pub const MEMTABLE_JITTER: f64 = 0.25;

/// Nice value of a node's flush and compaction threads
/// (`EngineOptions::background_nice`).
pub const BACKGROUND_NICE: i32 = 10;

impl Node {
    /// Starts the node: opens its data, binds its listeners, joins the
    /// cluster through the seeds (picking tokens on first start), and
    /// serves clients. Must run inside a multi-threaded tokio runtime.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let schema = Arc::new(
            SchemaStore::open(&config.data_dir.join("schema"))
                .map_err(|e| start_err("the schema")(&e))?,
        );
        // Tables whose grace period is too short for the hint window: in
        // the log at start, and later as the schema changes.
        let repair_interval =
            (!config.auto_repair_interval.is_zero()).then_some(config.auto_repair_interval);
        let grace_watch = Arc::new(GraceWatch::new(config.hint_window, repair_interval));
        grace_watch.check(&schema.current());
        let clock = Arc::new(HybridClock::new(Arc::new(SystemClock)));
        let template = EngineOptions {
            sync_mode: config.sync_mode,
            // Replicas get the same writes: without jitter they would all
            // flush (and take the CPU for it) at the same moment.
            memtable_jitter: MEMTABLE_JITTER,
            // Flushes and compactions yield to requests while CPUs are busy.
            background_nice: BACKGROUND_NICE,
            row_cache_bytes: config.row_cache_bytes,
            ..EngineOptions::default()
        };
        let local = Arc::new(
            LocalStore::open(
                &config.data_dir.join("data"),
                clock.clone(),
                schema.clone(),
                template,
            )
            .map_err(|e| start_err("the local store")(&e))?,
        );
        let node_id = local.node_id();
        let hints = Arc::new(
            HintStore::open(
                &config.data_dir.join("hints"),
                HintOptions {
                    window: config.hint_window,
                    ..HintOptions::default()
                },
            )
            .map_err(|e| start_err("the hint store")(&e))?,
        );
        let batch_log = Arc::new(
            BatchLog::open(
                &config.data_dir.join("batchlog"),
                BatchLogOptions::default(),
            )
            .map_err(|e| start_err("the batch log")(&e))?,
        );
        let tls =
            NodeTls::load(&config.certs_dir).map_err(|e| start_err("the node certificate")(&e))?;

        let handler = Arc::new(NodeHandler::new(
            local.clone(),
            hints.clone(),
            batch_log.clone(),
            schema.clone(),
        ));
        let client_restart_keys = tls.restart_keys("clients");
        let quic = QuicTransport::bind(QuicConfig::new(config.peer_listen, tls), handler.clone())
            .map_err(|e| start_err("the peer listener")(&e))?;
        let transport: Arc<dyn Transport<PeerRequest, PeerResponse>> = Arc::new(quic);
        let peer_addr = transport.local_addr();

        // Tokens: kept from the first start; picked after joining, so they
        // split the ranges of the nodes already there.
        let tokens_path = config.data_dir.join("tokens");
        let saved_tokens = load_tokens(&tokens_path)?;
        let mut metadata = NodeMetadata::new(
            node_id,
            peer_addr,
            config.rack.clone(),
            saved_tokens.clone().unwrap_or_default(),
        );
        (metadata.schema_version, metadata.schema_digest) = schema.current().fingerprint();
        metadata.stamp_id = local.stamp_actor();
        if saved_tokens.is_some() {
            metadata.status = NodeStatus::Normal;
        }
        let membership = Membership::start(
            transport.clone(),
            config.membership.clone(),
            metadata,
            generation_now(),
            node_id.0 ^ generation_now(),
        )
        .map_err(|e| start_err("gossip")(&e))?;
        handler.set_membership(membership.clone());
        // A node restarting with its tokens may have been removed while it
        // was down: the seeds tell it within a round trip of meeting it.
        // (Found out later, a removal stops the node too: `Node::removed`.)
        if saved_tokens.is_some() && !config.seeds.is_empty() {
            wait_for_peers(&membership, Duration::from_secs(5)).await;
        }
        if membership.is_removed() {
            membership.shutdown().await;
            transport.shutdown().await;
            return Err(NodeError::Removed {
                node: node_id.0,
                data_dir: config.data_dir.clone(),
            });
        }

        // Tokens this node joins with, when it joins a cluster whose nodes
        // own tokens already: it takes its ranges' data before it owns them.
        let mut joining_with: Option<Vec<Token>> = None;
        if saved_tokens.is_none() {
            if !config.seeds.is_empty() {
                wait_for_peers(&membership, Duration::from_secs(5)).await;
            }
            let ring = Ring::new(membership.view().ring_nodes()).unwrap_or_else(|_| Ring::empty());
            let tokens = match &config.initial_tokens {
                Some(tokens) if !tokens.is_empty() => tokens.clone(),
                _ => pick_tokens(node_id, config.vnodes, &ring, node_id.0),
            };
            if ring.is_empty() {
                // The first node of a new cluster: nothing to take over.
                save_tokens(&tokens_path, &tokens)?;
            } else {
                // The schema first: once this node says it joins, writes
                // arrive as pending copies, and a copy for a table it does
                // not know fails (and its hint could be dropped as one for
                // a dropped table).
                let sync = SchemaSync {
                    schema: schema.clone(),
                    transport: transport.clone(),
                    clock: clock.clone(),
                };
                for peer in ring.nodes() {
                    if membership.is_up(peer.id) {
                        sync.pull(peer.addr).await;
                    }
                }
                joining_with = Some(tokens.clone());
            }
            let status = if ring.is_empty() {
                NodeStatus::Normal
            } else {
                NodeStatus::Joining
            };
            membership
                .update_local(|m| {
                    m.tokens = tokens.clone();
                    m.status = status;
                })
                .map_err(|e| start_err("gossip")(&e))?;
        }

        let liveness = Arc::new(GossipLiveness {
            membership: membership.clone(),
            local: node_id,
        });
        let (ring, pending) = rings_of(&membership);
        let cluster = ClusterStore::new(
            local.clone(),
            hints.clone(),
            schema.clone(),
            transport.clone(),
            ring,
            liveness.clone(),
            config.coordinator.clone(),
        );
        cluster.set_pending_ring(pending);
        handler.set_coordinator(cluster.clone());
        let mut batch_config = BatchConfig::for_write_timeout(config.coordinator.write_timeout);
        if let Some(delay) = config.batchlog_replay_delay {
            batch_config.replay_delay = delay;
            batch_config.replay_interval =
                (delay / 2).clamp(Duration::from_millis(100), Duration::from_secs(10));
        }
        // Test-only: inert unless the environment variable is set.
        batch_config.fault = BatchFault::from_env();
        if batch_config.fault.is_some() {
            tracing::warn!("the logged-batch test fault point ({FAULT_ENV}) is enabled");
        }
        let batches = BatchCoordinator::new(
            cluster.clone(),
            batch_log,
            schema.clone(),
            transport.clone(),
            liveness,
            batch_config,
        );
        let mut tasks = vec![
            cluster.spawn_hint_sweeper(Duration::from_secs(10)),
            tokio::spawn(drop_hints_of_left_nodes(
                membership.clone(),
                cluster.clone(),
                Duration::from_secs(10),
            )),
            batches.spawn_replayer(),
            tokio::spawn(react_to_gossip(
                membership.clone(),
                cluster.clone(),
                local.clone(),
                SchemaSync {
                    schema: schema.clone(),
                    transport: transport.clone(),
                    clock: clock.clone(),
                },
            )),
        ];
        tasks.push(tokio::spawn(publish_load(
            membership.clone(),
            local.clone(),
            LOAD_PUBLISH_INTERVAL,
        )));
        let auto_repair = auto_repair::AutoRepair::new(
            cluster.clone(),
            schema.clone(),
            config.auto_repair_interval,
            &config.data_dir,
        );
        tasks.push(tokio::spawn(auto_repair.clone().run()));
        tasks.push(tokio::spawn(watch_gc_grace(
            schema.clone(),
            grace_watch,
            grace::CHECK_INTERVAL,
        )));
        tasks.push(tokio::spawn(publish_schema_changes(
            membership.clone(),
            SchemaSync {
                schema: schema.clone(),
                transport: transport.clone(),
                clock: clock.clone(),
            },
        )));

        if let Some(tokens) = joining_with {
            let sync = SchemaSync {
                schema: schema.clone(),
                transport: transport.clone(),
                clock: clock.clone(),
            };
            let write_timeout = config.coordinator.write_timeout;
            bootstrap(&membership, &cluster, &sync, &tokens, write_timeout).await?;
            save_tokens(&tokens_path, &tokens)?;
            membership
                .update_local(|m| m.status = NodeStatus::Normal)
                .map_err(|e| start_err("gossip")(&e))?;
        }

        let executor = Arc::new(AgreeingExecutor::new(
            Arc::new(Executor::new(
                Arc::new(batches.clone()),
                schema.clone(),
                clock,
                ExecutorConfig {
                    hint_window: Some(config.hint_window),
                    auto_repair_interval: repair_interval,
                    ..ExecutorConfig::default()
                },
            )),
            membership.clone(),
            schema.clone(),
            Duration::from_secs(10),
        ));
        let client_tls = client_tls(&config.certs_dir)?;
        let (left_tx, left) = tokio::sync::watch::channel(false);
        let decommission = Arc::new(Decommission {
            membership: membership.clone(),
            cluster: cluster.clone(),
            schema: schema.clone(),
            transport: transport.clone(),
            write_timeout: config.coordinator.write_timeout,
            tokens_path: tokens_path.clone(),
            started: parking_lot::Mutex::new(false),
            left: left_tx,
        });
        let removal = Arc::new(removal::RemoveNode {
            membership: membership.clone(),
            cluster: cluster.clone(),
            schema: schema.clone(),
            transport: transport.clone(),
            write_timeout: config.coordinator.write_timeout,
            running: parking_lot::Mutex::new(false),
        });
        let admin = Arc::new(NodeAdmin::new(
            membership.clone(),
            cluster.clone(),
            batches.clone(),
            decommission,
            removal,
            transport.clone(),
            schema.clone(),
            auto_repair,
        ));
        let client_server = ClientServer::bind_full(
            config.client_listen,
            client_tls,
            executor,
            Arc::new(CatalogSource(schema.clone())),
            Some(admin),
            config.client_limits,
            Some(client_restart_keys),
        )
        .map_err(|e| start_err("the client listener")(&e))?;
        Ok(Node {
            cluster,
            batches,
            membership,
            schema,
            client_server,
            transport,
            tasks,
            left,
            data_dir: config.data_dir.clone(),
        })
    }

    /// Resolves once the node has left the ring (`ringdb admin
    /// decommission`); the server should then shut it down.
    pub async fn left(&self) {
        let mut left = self.left.clone();
        // An error means the sender is gone: nobody can decommission.
        if left.wait_for(|l| *l).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Resolves once another node has removed this one from the cluster
    /// (`ringdb admin removenode` while it was cut off, or before it
    /// restarted): the server should then stop, with
    /// [`NodeError::Removed`].
    pub async fn removed(&self) -> NodeError {
        self.membership.removed().await;
        NodeError::Removed {
            node: self.cluster.node_id().0,
            data_dir: self.data_dir.clone(),
        }
    }

    /// The client listener's address.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_server.local_addr()
    }

    /// The peer listener's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.transport.local_addr()
    }

    /// Stops cleanly: tells the cluster it is leaving for now (it keeps
    /// its tokens), stops serving clients and peers.
    pub async fn shutdown(self) {
        self.client_server.shutdown().await;
        self.membership.shutdown().await;
        for t in &self.tasks {
            t.abort();
        }
        self.transport.shutdown().await;
    }
}

/// The ring as gossip describes it now, and the ring it will be once the
/// joining nodes own their tokens and the leaving ones are gone (`None`
/// when no node is joining or leaving).
fn rings_of(membership: &Membership) -> (Ring, Option<Ring>) {
    let view = membership.view();
    let owners = view.ring_nodes();
    let joining = view.joining_nodes();
    let leaving = view.leaving_nodes();
    let (ring, conflicts) = Ring::from_gossip(owners.clone());
    for e in conflicts {
        tracing::warn!(error = %e, "gossiped ring is inconsistent; settled the same way on every node");
    }
    if joining.is_empty() && leaving.is_empty() {
        return (ring, None);
    }
    let staying = owners.into_iter().filter(|n| !leaving.contains(&n.id));
    let (future, conflicts) = Ring::from_gossip(staying.chain(joining));
    for e in conflicts {
        tracing::warn!(error = %e, "the ring after the joins and leaves is inconsistent; settled the same way on every node");
    }
    (ring, Some(future))
}

/// Tries of [`ClusterStore::bootstrap_stream`] before the node gives up
/// starting.
const BOOTSTRAP_ATTEMPTS: usize = 5;

/// How long a node changing the ring waits for every other node to confirm
/// that it learned the change before it goes on anyway (with a warning).
const RING_CHANGE_PATIENCE: Duration = Duration::from_secs(60);

/// The ring change [`wait_until_known`] waits for every node to know of.
#[derive(Debug, Clone, Copy)]
enum RingChange {
    /// This node joins.
    Joining(NodeId),
    /// This node (decommission) or a down one (removenode) leaves.
    Leaving(NodeId),
}

/// Waits until every up node of the ring but this one (and the node
/// changing) answers that its coordinator treats the node as joining or as
/// leaving (`change`): from then on each copies the writes the change
/// needs. Then waits one write timeout more, so the writes they
/// coordinated before they learned are over. After [`RING_CHANGE_PATIENCE`]
/// it goes on with a warning naming the nodes that did not confirm.
async fn wait_until_known(
    membership: &Membership,
    cluster: &ClusterStore,
    transport: &Arc<dyn Transport<PeerRequest, PeerResponse>>,
    change: RingChange,
    write_timeout: Duration,
) {
    let me = cluster.node_id();
    let changing = match change {
        RingChange::Joining(n) | RingChange::Leaving(n) => n,
    };
    let deadline = tokio::time::Instant::now() + RING_CHANGE_PATIENCE;
    loop {
        let mut unconfirmed = Vec::new();
        for peer in cluster.ring().nodes() {
            if peer.id == me || peer.id == changing || !membership.is_up(peer.id) {
                continue;
            }
            let answer = transport
                .request(peer.addr, PeerRequest::RingChanges, Duration::from_secs(2))
                .await;
            let knows = match (answer, change) {
                (Ok(PeerResponse::RingChanges { joining, .. }), RingChange::Joining(n)) => {
                    joining.contains(&n)
                }
                (Ok(PeerResponse::RingChanges { leaving, .. }), RingChange::Leaving(n)) => {
                    leaving.contains(&n)
                }
                _ => false,
            };
            if !knows {
                unconfirmed.push(format!("{:016x}", peer.id.0));
            }
        }
        if unconfirmed.is_empty() {
            tracing::info!(
                waited_ms = (RING_CHANGE_PATIENCE
                    - deadline.saturating_duration_since(tokio::time::Instant::now()))
                .as_millis() as u64,
                "every node knows of the ring change"
            );
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                nodes = %unconfirmed.join(","),
                "these nodes did not confirm the ring change; going on (writes they coordinate may miss the node gaining ranges until repaired)"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(write_timeout).await;
}

/// The nodes other than `subject` that this node sees leaving, as hex host
/// ids. Leaves run one at a time: each streams its ranges to the nodes
/// that gain them in the ring without it alone, so two at once could both
/// hand a range to the same node and none to the second node that gains
/// it. (Joins need no such rule: a join only narrows what other nodes
/// gain, and a joining node copies its own ranges.)
fn other_leaves(membership: &Membership, subject: NodeId) -> Vec<String> {
    let mut others: Vec<NodeId> = membership
        .view()
        .leaving_nodes()
        .into_iter()
        .filter(|n| *n != subject)
        .collect();
    others.sort();
    others.iter().map(|n| format!("{:016x}", n.0)).collect()
}

/// Refuses a leave (decommission or removenode of `subject`) that started
/// while another node was leaving too. Called twice: before the leave is
/// gossiped, and again, before anything is streamed, once every node
/// confirmed it. Two leaves started at the same moment may both pass the
/// first check, but their streams never overlap: each waits until every
/// up node (the other's runner among them) knows of it before it checks
/// again, so the one that checks last sees the other still leaving unless
/// the other has already streamed everything and left.
fn refuse_concurrent_leave(
    membership: &Membership,
    subject: NodeId,
    confirmed: bool,
) -> Result<(), String> {
    let others = other_leaves(membership, subject);
    if others.is_empty() {
        return Ok(());
    }
    let others = others.join(", ");
    Err(if confirmed {
        format!(
            "node(s) {others} started leaving at the same time: nodes leave one at a time, so \
             this leave stopped and node {:016x} stays in the ring; run it again once they are \
             done",
            subject.0
        )
    } else {
        format!(
            "node(s) {others} are leaving: nodes leave one at a time; run it again once they are \
             done (a node stuck leaving, `DL` in `ringdb admin status`, is finished by \
             `ringdb admin removenode` of it)"
        )
    })
}

/// Joins a cluster that holds data: with this node gossiping `joining` and
/// its tokens, waits until every coordinator has learned it (from then on
/// they send it copies of the writes to its future ranges), pulls the
/// schema, then copies its future ranges from their current replicas. The
/// caller then makes the node normal.
async fn bootstrap(
    membership: &Membership,
    cluster: &ClusterStore,
    sync: &SchemaSync,
    tokens: &[Token],
    write_timeout: Duration,
) -> Result<(), NodeError> {
    let local = membership.view().local;
    tracing::info!(
        tokens = tokens.len(),
        "joining a cluster that owns tokens: streaming this node's ranges before owning them"
    );
    wait_until_known(
        membership,
        cluster,
        &sync.transport,
        RingChange::Joining(local),
        write_timeout,
    )
    .await;
    let (ring, _) = rings_of(membership);
    for peer in ring.nodes() {
        if membership.is_up(peer.id) {
            sync.pull(peer.addr).await;
        }
    }
    let me = NodeInfo::new(
        local,
        cluster_addr(membership, local),
        rack_of(membership, local),
        tokens.to_vec(),
    );
    let mut last_error = String::new();
    for attempt in 1..=BOOTSTRAP_ATTEMPTS {
        let current = cluster.ring();
        let future = current.add_node(me.clone()).map_err(|e| NodeError::Start {
            layer: "bootstrap",
            reason: e.to_string(),
        })?;
        match cluster
            .bootstrap_stream(&future, &all_tables(&sync.schema))
            .await
        {
            Ok(report) => {
                tracing::info!(
                    tables = report.tables,
                    spans = report.spans,
                    partitions = report.partitions,
                    "bootstrap stream done"
                );
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(attempt, error = %e, "bootstrap stream failed; trying again");
                last_error = e.to_string();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    Err(NodeError::Start {
        layer: "bootstrap",
        reason: format!(
            "streaming this node's ranges failed {BOOTSTRAP_ATTEMPTS} times: {last_error}"
        ),
    })
}

/// `ringdb admin decommission` on a running node: what it needs to hand
/// its ranges over and leave.
pub(crate) struct Decommission {
    membership: Membership,
    cluster: ClusterStore,
    schema: Arc<SchemaStore>,
    transport: Arc<dyn Transport<PeerRequest, PeerResponse>>,
    write_timeout: Duration,
    tokens_path: PathBuf,
    /// Set once started: a second request is refused.
    started: parking_lot::Mutex<bool>,
    /// Turns true once the node has left: the server then stops.
    left: tokio::sync::watch::Sender<bool>,
}

impl Decommission {
    /// Gossips `leaving`, waits until every node knows (coordinators then
    /// copy writes to the nodes taking its ranges), streams its ranges to them, forgets
    /// its tokens (a restart joins afresh), gossips `left` and asks the
    /// server to stop.
    pub(crate) async fn run(&self) -> Result<String, String> {
        {
            let mut started = self.started.lock();
            if *started {
                return Err("this node is already decommissioning".into());
            }
            *started = true;
        }
        let result = self.hand_over().await;
        if result.is_err() {
            // It still owns its ranges: back to normal, try again later.
            let _ = self
                .membership
                .update_local(|m| m.status = NodeStatus::Normal);
            *self.started.lock() = false;
        }
        result
    }

    async fn hand_over(&self) -> Result<String, String> {
        let me = self.cluster.node_id();
        let current = self.cluster.ring();
        if !current.contains_node(me) {
            return Err("this node owns no tokens: nothing to decommission".into());
        }
        if current.len() < 2 {
            return Err(
                "this is the only node of the ring: it cannot hand its data to anyone".into(),
            );
        }
        refuse_concurrent_leave(&self.membership, me, false)?;
        let future = current.remove_node(me).map_err(|e| e.to_string())?;
        let down = self
            .cluster
            .down_gainers(me, &future, &all_tables(&self.schema))
            .map_err(|e| e.to_string())?;
        if !down.is_empty() {
            let down: Vec<String> = down.iter().map(|n| format!("{:016x}", n.0)).collect();
            return Err(format!(
                "node(s) {} are down and would take over some of this node's ranges: bring them \
                 back up, or take a dead one out with `ringdb admin removenode` first",
                down.join(", ")
            ));
        }
        self.membership
            .update_local(|m| m.status = NodeStatus::Leaving)
            .map_err(|e| e.to_string())?;
        tracing::info!(
            "decommissioning: leaving, then streaming this node's ranges to their new replicas"
        );
        wait_until_known(
            &self.membership,
            &self.cluster,
            &self.transport,
            RingChange::Leaving(me),
            self.write_timeout,
        )
        .await;
        refuse_concurrent_leave(&self.membership, me, true)?;
        tracing::info!("decommission stream starts: no other node is leaving");
        let mut last_error = String::new();
        let mut report = None;
        for attempt in 1..=BOOTSTRAP_ATTEMPTS {
            let current = self.cluster.ring();
            let future = current.remove_node(me).map_err(|e| e.to_string())?;
            match self
                .cluster
                .decommission_stream(&future, &all_tables(&self.schema))
                .await
            {
                Ok(r) => {
                    report = Some(r);
                    break;
                }
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "decommission stream failed; trying again");
                    last_error = e.to_string();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        let Some(report) = report else {
            return Err(format!(
                "handing the ranges over failed {BOOTSTRAP_ATTEMPTS} times (the node stays normal): {last_error}"
            ));
        };
        match std::fs::remove_file(&self.tokens_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot remove {}: {e}", self.tokens_path.display())),
        }
        tracing::info!(
            tables = report.tables,
            spans = report.spans,
            partitions = report.partitions,
            "decommission stream done; leaving the ring"
        );
        if let Err(e) = self.membership.leave_gracefully().await {
            tracing::warn!(error = %e, "could not announce the leave; the others will see this node down");
        }
        // Answer the admin request before the server stops.
        let left = self.left.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = left.send(true);
        });
        Ok(format!(
            "decommissioned node {:016x}: {} partition(s) of {} table(s) handed over in {} span(s); it has left the ring and stops now\n",
            me.0, report.partitions, report.tables, report.spans
        ))
    }
}

/// Every table of `schema`.
pub(crate) fn all_tables(schema: &SchemaStore) -> Vec<TableRef> {
    let schema = schema.current();
    schema
        .keyspaces()
        .flat_map(|ks| schema.tables(&ks.name))
        .map(|t| TableRef {
            keyspace: t.keyspace().to_string(),
            table: t.name().to_string(),
            id: t.id,
        })
        .collect()
}

/// The peer address this node gossips.
fn cluster_addr(membership: &Membership, node: NodeId) -> SocketAddr {
    let view = membership.view();
    view.get(node)
        .and_then(|m| m.metadata.as_ref())
        .map(|m| m.addr)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// The rack this node gossips.
fn rack_of(membership: &Membership, node: NodeId) -> Option<String> {
    let view = membership.view();
    view.get(node)
        .and_then(|m| m.metadata.as_ref())
        .and_then(|m| m.rack.clone())
}

/// Drops the hints held for `node`, which left the ring.
fn drop_hints_of(cluster: &ClusterStore, node: NodeId) {
    if !cluster.hints().targets().contains(&node) {
        return;
    }
    match cluster.hints().discard_target(node) {
        Ok(n) => tracing::info!(
            node = node.0,
            hints = n,
            "dropped the hints of a node that left the ring"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot drop the hints of a node that left"),
    }
}

/// Every `every`, drops the hints held for nodes gossip says have left: a
/// write coordinated just before this node learned of the leave can still
/// store one after the event.
async fn drop_hints_of_left_nodes(membership: Membership, cluster: ClusterStore, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let left: Vec<NodeId> = {
            let view = membership.view();
            cluster
                .hints()
                .targets()
                .into_iter()
                .filter(|t| {
                    view.get(*t)
                        .and_then(|m| m.metadata.as_ref())
                        .is_some_and(|m| m.status.is_gone())
                })
                .collect()
        };
        for node in left {
            drop_hints_of(&cluster, node);
        }
    }
}

/// Gives the coordinator the rings gossip describes now.
fn set_rings(cluster: &ClusterStore, membership: &Membership) {
    let (ring, pending) = rings_of(membership);
    cluster.set_rings(ring, pending);
}

/// Tells the store's stamping-id registry which ids the members stamp
/// with (members that left stamp no more), for context pruning.
fn observe_stamp_ids(local: &LocalStore, membership: &Membership) {
    let view = membership.view();
    let in_use = view
        .members
        .values()
        .filter_map(|m| m.metadata.as_ref())
        .filter(|m| !m.status.is_gone())
        .map(|m| m.stamp_id)
        .chain(std::iter::once(local.stamp_actor()));
    local.stamp_ids().observe(in_use);
}

/// Follows gossip: a node coming up gets its hints; metadata changes
/// rebuild the ring and tell the store which stamping ids are in use; a node gossiping a schema other than ours is pulled
/// from and its schema merged into ours.
async fn react_to_gossip(
    membership: Membership,
    cluster: ClusterStore,
    local: Arc<LocalStore>,
    sync: SchemaSync,
) {
    let mut events = membership.subscribe();
    observe_stamp_ids(&local, &membership);
    let sync = Arc::new(sync);
    // Schema pulls run in tasks of their own (one at a time per node
    // pulled from), so a peer slow to answer one (up to its 5 s timeout)
    // does not hold up the ring updates and hint replays of the events
    // behind it.
    let pulling: Arc<parking_lot::Mutex<HashSet<SocketAddr>>> = Arc::default();
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                set_rings(&cluster, &membership);
                observe_stamp_ids(&local, &membership);
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        match event {
            MembershipEvent::Up { node, .. } => {
                set_rings(&cluster, &membership);
                observe_stamp_ids(&local, &membership);
                // Replays in the background; the task handle is not needed.
                drop(cluster.on_node_up(node));
            }
            MembershipEvent::MetadataChanged { node, metadata } => {
                set_rings(&cluster, &membership);
                observe_stamp_ids(&local, &membership);
                if metadata.status.is_gone() {
                    drop_hints_of(&cluster, node);
                }
            }
            MembershipEvent::SchemaVersionChanged { node, .. } => {
                let view = membership.view();
                if node == view.local {
                    continue;
                }
                let Some(meta) = view.get(node).and_then(|m| m.metadata.clone()) else {
                    continue;
                };
                if meta.status.is_gone() {
                    continue;
                }
                if (meta.schema_version, meta.schema_digest) != sync.schema.current().fingerprint()
                    && pulling.lock().insert(meta.addr)
                {
                    let (sync, pulling) = (sync.clone(), pulling.clone());
                    tokio::spawn(async move {
                        sync.pull(meta.addr).await;
                        pulling.lock().remove(&meta.addr);
                    });
                }
            }
            _ => {}
        }
    }
}

/// What schema exchange needs: the node's schema, the transport to pull
/// with, and the clock that must move past every schema change seen.
struct SchemaSync {
    schema: Arc<SchemaStore>,
    transport: Arc<dyn Transport<PeerRequest, PeerResponse>>,
    clock: Arc<HybridClock>,
}

impl SchemaSync {
    /// Pulls the schema of the node at `from` and merges it into ours.
    /// The clock observes the merged schema's latest change, so what this
    /// node does next (a DDL statement, a write to a column added
    /// elsewhere) is stamped after it.
    async fn pull(&self, from: SocketAddr) {
        match self
            .transport
            .request(from, PeerRequest::GetSchema, Duration::from_secs(5))
            .await
        {
            Ok(PeerResponse::Schema(theirs)) => match self.schema.merge(&theirs) {
                Ok(merged) => self.clock.observe(merged.latest()),
                Err(e) => {
                    tracing::warn!(error = %e, "could not merge the schema pulled from {from}")
                }
            },
            Ok(other) => tracing::warn!(?other, "unexpected answer to a schema pull from {from}"),
            Err(e) => tracing::warn!(error = %e, "schema pull from {from} failed"),
        }
    }
}

/// How often a node checks how much data it stores and gossips it when it
/// changed (the `Load` column of `ringdb admin status`).
const LOAD_PUBLISH_INTERVAL: Duration = Duration::from_secs(2);

/// Publishes in gossip how many bytes of SSTables this node stores (the
/// `Load` of `nodetool status`), at once and then whenever it changed,
/// looking every `interval`.
async fn publish_load(membership: Membership, local: Arc<LocalStore>, interval: Duration) {
    let mut published = None;
    loop {
        let load = local.storage_stats().load_bytes();
        if published != Some(load) && membership.update_local(|m| m.load_bytes = load).is_ok() {
            published = Some(load);
        }
        tokio::time::sleep(interval).await;
    }
}

/// Keeps this node's schema in step with the cluster: publishes its own
/// fingerprint (version, digest) in gossip whenever it changes, and about
/// every second pulls the schema of one live node whose fingerprint
/// differs (taking such nodes in turn) and merges it. Merging is
/// symmetric: the other node sees our new fingerprint and pulls ours, so
/// changes made concurrently on different nodes meet everywhere. The
/// periodic pull makes up for a pull that failed or an event that was
/// missed.
async fn publish_schema_changes(membership: Membership, sync: SchemaSync) {
    let mut last = (0u64, 0u64);
    let mut tick = 0u64;
    loop {
        let now = sync.schema.current().fingerprint();
        if now != last {
            last = now;
            let _ = membership.update_local(|m| {
                (m.schema_version, m.schema_digest) = now;
            });
        }
        tick += 1;
        if tick.is_multiple_of(10) {
            let view = membership.view();
            let differing: Vec<SocketAddr> = view
                .members
                .values()
                .filter(|m| m.liveness.is_up())
                .filter_map(|m| m.metadata.as_ref())
                .filter(|md| md.node != view.local && !md.status.is_gone())
                .filter(|md| (md.schema_version, md.schema_digest) != now)
                .map(|md| md.addr)
                .collect();
            if !differing.is_empty() {
                let pick = (tick / 10) as usize % differing.len();
                sync.pull(differing[pick]).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until gossip knows at least one other node's metadata (or the
/// time runs out: the seeds may all be down).
async fn wait_for_peers(membership: &Membership, patience: Duration) {
    let deadline = tokio::time::Instant::now() + patience;
    while tokio::time::Instant::now() < deadline {
        let view = membership.view();
        if view.members.values().any(|m| {
            m.metadata.is_some()
                && view.local != m.metadata.as_ref().map_or(view.local, |md| md.node)
        }) {
            // Give metadata of the rest a moment to arrive.
            tokio::time::sleep(Duration::from_millis(500)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn load_tokens(path: &Path) -> Result<Option<Vec<Token>>, NodeError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let tokens: Result<Vec<Token>, _> =
                text.split_whitespace().map(str::parse::<u64>).collect();
            match tokens {
                Ok(t) if !t.is_empty() => Ok(Some(t)),
                _ => Err(NodeError::File {
                    what: "token file",
                    path: path.to_path_buf(),
                    reason: "expected whitespace-separated unsigned 64-bit tokens".into(),
                }),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(NodeError::File {
            what: "token file",
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

fn save_tokens(path: &Path, tokens: &[Token]) -> Result<(), NodeError> {
    let text: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
    write_durably(path, &(text.join("\n") + "\n")).map_err(|e| NodeError::File {
        what: "token file",
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Replaces the file at `path` with `text` so that a crash leaves the old
/// file or the new one, both whole: written to a temporary file, synced,
/// renamed over `path`, and the directory synced.
pub(crate) fn write_durably(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn client_tls(certs_dir: &Path) -> Result<rustls::ServerConfig, NodeError> {
    let read = |name: &str| {
        let path = certs_dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| NodeError::File {
            what: "certificate",
            path,
            reason: e.to_string(),
        })
    };
    crate::server::tls_config_from_pem(&read("node.pem")?, &read("node.key")?)
        .map_err(|e| start_err("client TLS")(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        assert_eq!(load_tokens(&path).unwrap(), None);
        save_tokens(&path, &[3, 1, u64::MAX]).unwrap();
        assert_eq!(load_tokens(&path).unwrap(), Some(vec![3, 1, u64::MAX]));
        std::fs::write(&path, "12 nope").unwrap();
        assert!(matches!(load_tokens(&path), Err(NodeError::File { .. })));
    }
}
