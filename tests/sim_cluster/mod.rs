//! A cluster of in-process nodes over the simulated network, on a paused
//! clock: each node has its own data directory, storage engine, hint
//! store and coordinator (and, when asked, a batch log and a batch
//! coordinator), and a liveness view the test drives by hand. Shared by
//! the simulation tests (`mod sim_cluster;` in each); not every test file
//! uses every helper.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cql_lite::{DataType, Value};
use ringdb::cluster::batchlog::{BatchLog, BatchLogOptions};
use ringdb::cluster::hints::{HintOptions, HintStore};
use ringdb::cluster::{NodeInfo, Ring};
use ringdb::coordinator::{
    BatchConfig, BatchCoordinator, BatchFault, ClusterStore, CoordinatorConfig, ManualLiveness,
    PeerRequest, PeerResponse, ReplicaHandler, TokioClock,
};
use ringdb::model::key::serialize_partition_key;
use ringdb::model::{Consistency, DotSet, HybridClock, NodeId};
use ringdb::net::{SimConfig, SimNetwork, Transport};
use ringdb::query::api::{
    QueryError, QueryExecutor, QueryOptions, QueryResult, ResultSet, SessionState,
};
use ringdb::query::{Executor, ExecutorConfig, LocalStore};
use ringdb::schema::SchemaStore;
use ringdb::storage::commitlog::SyncMode;
use ringdb::storage::engine::EngineOptions;

/// The wall clock of every node starts here (and goes on across restarts).
pub const EPOCH_MS: u64 = 1_700_000_000_000;
/// Tokens per node.
pub const VNODES: u64 = 16;

/// Where the nodes of a test file live: their addresses, ids and tokens
/// (each file keeps its own, so the keys its tests pick keep their
/// replicas).
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Node `i` listens on `10.0.<subnet>.<i + 1>:7000`.
    pub subnet: u8,
    /// Node `i` has id `id_base + i`.
    pub id_base: u64,
    /// Added to every token.
    pub token_offset: u64,
}

impl Layout {
    /// The address of node `i`.
    pub fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([10, 0, self.subnet, (i + 1) as u8], 7000))
    }

    /// The id of node `i`.
    pub fn node_id(&self, i: usize) -> NodeId {
        NodeId(self.id_base + i as u64)
    }

    /// The index of the node with id `id`.
    pub fn index_of(&self, id: NodeId) -> usize {
        (id.0 - self.id_base) as usize
    }

    /// Evenly interleaved tokens for node `i` of `n`: the replicas of any
    /// token are consecutive nodes (mod n).
    pub fn tokens(&self, i: usize, n: usize) -> Vec<u64> {
        let step = u64::MAX / (VNODES * n as u64);
        (0..VNODES)
            .map(|j| (j * n as u64 + i as u64) * step + self.token_offset)
            .collect()
    }
}

/// Engine settings for simulated nodes: periodic sync, no background
/// threads, a small block cache.
pub fn engine_options() -> EngineOptions {
    EngineOptions {
        sync_mode: SyncMode::Periodic {
            interval: Duration::from_millis(200),
        },
        background: false,
        block_cache_bytes: 1 << 20,
        ..EngineOptions::default()
    }
}

/// How the nodes of a [`Cluster`] are built.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Addresses, ids and tokens.
    pub layout: Layout,
    /// Replication factor of keyspace `ks` (for [`Cluster::replicas_of`]).
    pub rf: usize,
    /// Every node's coordinator settings.
    pub config: CoordinatorConfig,
    /// Every node's hint store settings.
    pub hint_options: HintOptions,
    /// With `Some`, every node has a batch log and runs statements through
    /// a batch coordinator; node `i` with the fault at index `i`, if any.
    pub batches: Option<Vec<Option<BatchFault>>>,
}

/// One running node.
pub struct Node {
    /// Its data directory.
    pub dir: PathBuf,
    /// Its schema.
    pub schema: Arc<SchemaStore>,
    /// Its coordinator.
    pub store: ClusterStore,
    /// Its batch coordinator (when the cluster has batch logs).
    pub batches: Option<BatchCoordinator>,
    /// Statements coordinated by this node.
    pub exec: Executor,
    /// Statements on this node's own data only.
    pub local_exec: Executor,
}

impl Node {
    /// The batch coordinator; panics when the cluster has no batch logs.
    pub fn batches(&self) -> &BatchCoordinator {
        self.batches.as_ref().expect("the cluster has batch logs")
    }
}

/// The simulated cluster.
pub struct Cluster {
    /// The simulated network.
    pub net: SimNetwork,
    /// What every coordinator believes about liveness.
    pub live: Arc<ManualLiveness>,
    /// The ring every node starts from.
    pub ring: Ring,
    /// How nodes are built.
    pub options: ClusterOptions,
    /// Node `i`, or `None` while its process is gone.
    pub nodes: Vec<Option<Node>>,
    /// Holds every node's data directory.
    pub tmp: tempfile::TempDir,
}

impl Cluster {
    /// `n` nodes on `sim`, then `keyspace` and `tables` created through
    /// node 0 and handed to the others.
    pub async fn build(
        n: usize,
        sim: SimConfig,
        options: ClusterOptions,
        keyspace: &str,
        tables: &[&str],
    ) -> Cluster {
        let layout = options.layout;
        let ring =
            Ring::new((0..n).map(|i| {
                NodeInfo::new(layout.node_id(i), layout.addr(i), None, layout.tokens(i, n))
            }))
            .expect("ring");
        let mut cluster = Cluster {
            net: SimNetwork::new(sim),
            live: Arc::new(ManualLiveness::new()),
            ring,
            options,
            nodes: Vec::new(),
            tmp: tempfile::tempdir().expect("tempdir"),
        };
        for i in 0..n {
            let dir = cluster.tmp.path().join(format!("node{i}"));
            std::fs::create_dir_all(&dir).expect("dir");
            std::fs::write(
                dir.join("node_id"),
                format!("{:016x}\n", layout.node_id(i).0),
            )
            .expect("node id");
            let node = cluster.open_node(i, &dir);
            cluster.nodes.push(Some(node));
        }
        for stmt in std::iter::once(&keyspace).chain(tables) {
            cluster.ddl(0, stmt).await;
        }
        cluster
    }

    /// Opens node `i` from `dir` (its process starting) and puts it on
    /// the network.
    pub fn open_node(&self, i: usize, dir: &Path) -> Node {
        // Wall clocks agree across nodes and go on across a restart.
        let elapsed = u64::try_from(self.net.elapsed().as_millis()).expect("ms");
        let hlc = Arc::new(HybridClock::new(Arc::new(TokioClock::new(
            EPOCH_MS + elapsed,
        ))));
        let schema = Arc::new(SchemaStore::open(dir).expect("schema"));
        let local = Arc::new(
            LocalStore::open(dir, hlc.clone(), schema.clone(), engine_options()).expect("store"),
        );
        local.set_inline_io(true);
        assert_eq!(local.node_id(), self.options.layout.node_id(i));
        let hints = Arc::new(
            HintStore::open(&dir.join("hints"), self.options.hint_options.clone()).expect("hints"),
        );
        let log = self.options.batches.as_ref().map(|_| {
            Arc::new(
                BatchLog::open(
                    &dir.join("cluster-batchlog"),
                    BatchLogOptions {
                        sync: false,
                        ..BatchLogOptions::default()
                    },
                )
                .expect("batch log"),
            )
        });
        let mut handler = ReplicaHandler::new(local.clone(), hints.clone());
        if let Some(log) = &log {
            handler = handler.with_batch_log(log.clone());
        }
        let transport: Arc<dyn Transport<PeerRequest, PeerResponse>> = Arc::new(
            self.net
                .add_node(self.options.layout.addr(i), Arc::new(handler)),
        );
        let store = ClusterStore::new(
            local.clone(),
            hints,
            schema.clone(),
            transport.clone(),
            self.ring.clone(),
            self.live.clone(),
            self.options.config.clone(),
        );
        let batches = match (&self.options.batches, log) {
            (Some(faults), Some(log)) => Some(BatchCoordinator::new(
                store.clone(),
                log,
                schema.clone(),
                transport,
                self.live.clone(),
                BatchConfig {
                    fault: faults.get(i).cloned().flatten(),
                    ..BatchConfig::for_write_timeout(self.options.config.write_timeout)
                },
            )),
            _ => None,
        };
        let exec = match &batches {
            Some(b) => Executor::new(
                Arc::new(b.clone()),
                schema.clone(),
                hlc.clone(),
                ExecutorConfig::default(),
            ),
            None => Executor::new(
                Arc::new(store.clone()),
                schema.clone(),
                hlc.clone(),
                ExecutorConfig::default(),
            ),
        };
        let local_exec = Executor::new(local, schema.clone(), hlc, ExecutorConfig::default());
        Node {
            dir: dir.to_path_buf(),
            schema,
            store,
            batches,
            exec,
            local_exec,
        }
    }

    /// Node `i`; panics when its process is gone.
    pub fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("node is running")
    }

    /// Node `i`'s coordinator.
    pub fn store(&self, i: usize) -> &ClusterStore {
        &self.node(i).store
    }

    /// The nodes whose processes run, with their indices.
    pub fn running(&self) -> impl Iterator<Item = (usize, &Node)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
    }

    /// Runs a schema statement through node `i` and gives the resulting
    /// schema to every other running node (as schema gossip would).
    pub async fn ddl(&self, i: usize, stmt: &str) {
        self.query(i, Consistency::One, stmt).await.expect("ddl");
        let schema = (*self.node(i).schema.current()).clone();
        for (j, n) in self.running() {
            if j != i {
                n.schema.merge(&schema).expect("schema");
            }
        }
    }

    /// Runs a statement through node `i` as coordinator.
    pub async fn query(
        &self,
        i: usize,
        cl: Consistency,
        text: &str,
    ) -> Result<QueryResult, QueryError> {
        self.query_with(i, cl, text, None).await
    }

    /// [`Cluster::query`] with a causal context from an earlier read.
    pub async fn query_with(
        &self,
        i: usize,
        cl: Consistency,
        text: &str,
        context: Option<DotSet>,
    ) -> Result<QueryResult, QueryError> {
        let mut session = SessionState::default();
        let options = QueryOptions {
            consistency: cl,
            causal_context: context,
            ..QueryOptions::default()
        };
        self.node(i)
            .exec
            .execute(&mut session, text, vec![], options)
            .await
            .map(|r| r.result)
    }

    /// Runs a statement on node `i`'s own data only (no coordinator).
    pub async fn local_query(&self, i: usize, text: &str) -> ResultSet {
        let mut session = SessionState::default();
        match self
            .node(i)
            .local_exec
            .execute(&mut session, text, vec![], QueryOptions::default())
            .await
            .map(|r| r.result)
        {
            Ok(QueryResult::Rows(rs)) => rs,
            other => panic!("expected rows, got {other:?}"),
        }
    }

    /// The nodes (indices) holding key `k` of an int-keyed table of `ks`.
    pub fn replicas_of(&self, k: i32) -> Vec<usize> {
        let pk = serialize_partition_key(&[Value::Int(k)], &[DataType::Int]).expect("pk");
        self.ring
            .replicas_for_key(&pk, self.options.rf)
            .into_iter()
            .map(|id| self.options.layout.index_of(id))
            .collect()
    }

    /// Cuts node `i` off the network and marks it down.
    pub fn kill(&self, i: usize) {
        self.net.kill(self.options.layout.addr(i));
        self.live.set_down(self.options.layout.node_id(i));
    }

    /// Node `i` is back: up on the network and in liveness, and every
    /// other node replays the hints it holds for it. (Its own hints for
    /// others stay: [`Cluster::deliver_hints_of`].)
    pub async fn revive(&self, i: usize) {
        let layout = self.options.layout;
        self.net.revive(layout.addr(i));
        self.live.set_up(layout.node_id(i));
        let mut tasks = Vec::new();
        for (j, n) in self.running() {
            if j != i {
                tasks.push(n.store.on_node_up(layout.node_id(i)));
            }
        }
        for t in tasks {
            t.await.expect("replay task").expect("replay");
        }
    }

    /// Node `i` delivers the hints it holds for the other running nodes.
    pub async fn deliver_hints_of(&self, i: usize) {
        for (j, _) in self.running() {
            if j != i {
                self.node(i)
                    .store
                    .replay_hints(self.options.layout.node_id(j))
                    .await
                    .expect("replay");
            }
        }
    }

    /// The process of node `i` (killed) is gone; it starts again from its
    /// data directory, still cut off until [`Cluster::revive`].
    pub async fn restart(&mut self, i: usize) {
        let dir = self.node(i).dir.clone();
        self.nodes[i] = None;
        // Let in-flight work of the old process end.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let node = self.open_node(i, &dir);
        self.net.kill(self.options.layout.addr(i));
        self.nodes[i] = Some(node);
    }
}

/// The rows of a result; panics on any other result.
pub fn rows(r: &QueryResult) -> &ResultSet {
    match r {
        QueryResult::Rows(rs) => rs,
        other => panic!("expected rows, got {other:?}"),
    }
}

/// Three clients inserting `(k, seq, seq)` rows at QUORUM into `ks.log`
/// (`k` below `keys`) through random coordinators of a 4-node cluster,
/// while a nemesis kills, revives, partitions and heals nodes; then
/// everything heals, the drop rate goes to zero and every node is
/// revived (replaying the hints the others hold, or dropping those past
/// the window). Returns the `(k, seq)` inserts that were acknowledged.
/// Deterministic from `seed` (on a paused clock).
pub async fn faulty_log_workload(c: &Arc<Cluster>, seed: u64, keys: i32) -> Vec<(i32, i32)> {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    let acked = Arc::new(parking_lot::Mutex::new(Vec::<(i32, i32)>::new()));
    let mut tasks = Vec::new();
    for client in 0..3i32 {
        let c = c.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed * 31 + client as u64);
            for i in 0..25 {
                let node = rng.random_range(0..4usize);
                let k = rng.random_range(0..keys);
                let seq = client * 1000 + i;
                let text = format!("INSERT INTO ks.log (k, seq, v) VALUES ({k}, {seq}, {seq})");
                if c.query(node, Consistency::Quorum, &text).await.is_ok() {
                    acked.lock().push((k, seq));
                }
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..40))).await;
            }
        }));
    }
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let layout = c.options.layout;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..200))).await;
        let n = rng.random_range(0..4usize);
        match rng.random_range(0..4) {
            0 => c.kill(n),
            1 => c.revive(n).await,
            2 => {
                let others: Vec<SocketAddr> =
                    (0..4).filter(|m| *m != n).map(|m| layout.addr(m)).collect();
                c.net.partition(&[layout.addr(n)], &others);
            }
            _ => c.net.heal(),
        }
    }
    for t in tasks {
        t.await.expect("client");
    }
    c.net.heal();
    c.net.set_drop(0.0);
    tokio::time::sleep(Duration::from_secs(5)).await;
    for n in 0..4 {
        c.revive(n).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let acked = acked.lock().clone();
    acked
}
