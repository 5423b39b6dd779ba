//! [`ClusterStore`]: the coordinator, a [`DataStore`] over the replicas.

mod cleanup;
mod repair;
mod stream;

pub use cleanup::CleanupReport;
pub use repair::{RepairProgress, RepairReport, RepairTuning};
pub use stream::StreamReport;

use super::fanout::{Fanout, Running};
use super::liveness::Liveness;
use super::merge::{merge_partition, MergedPartition};
use super::messages::{
    to_key_bound, Deltas, HintPayload, PeerError, PeerRequest, PeerResponse, ReplicaPartition,
    WireSlice,
};
use super::replica::ReplicaHandler;
use super::throttle::StreamThrottle;
use crate::cluster::hints::{Hint, HintStore};
use crate::cluster::Ring;
use crate::model::key::{self, Token};
use crate::model::row::Liveness as RowMarker;
use crate::model::{Consistency, Dot, DotSet, Entry, NodeId, RowState, RowVersion};
use crate::net::{NetError, Transport};
use crate::query::api::{
    check_causal_contexts, BoxFuture, DataStore, Mutation, QueryError, ScannedPartition,
    SliceRequest, StoredPartition, TableRef,
};
use crate::query::local::PendingSync;
use crate::query::LocalStore;
use crate::schema::SchemaStore;
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Settings of a [`ClusterStore`].
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// How long a write waits for its acknowledgements.
    pub write_timeout: Duration,
    /// How long a partition read waits for its replicas (repair included).
    pub read_timeout: Duration,
    /// How long one step of a scan (one token range) waits.
    pub range_timeout: Duration,
    /// Repair, in the background, the replicas a read did not wait for.
    pub background_read_repair: bool,
    /// Hint requests replayed concurrently to one node.
    pub hint_replay_concurrency: usize,
    /// Pause between two groups of replayed hint requests (throttle).
    pub hint_replay_pause: Duration,
    /// Hints of one table that follow each other in the hint log go to
    /// their node in one request of up to this many bytes of hints (one
    /// hint, however large, at least); 1 sends a request per hint.
    pub hint_replay_request_bytes: usize,
    /// Bytes of hints per second this node replays, to all nodes together;
    /// 0 is no limit. Cassandra's `hinted_handoff_throttle`.
    pub hint_throughput: u64,
    /// When this node stamps a write, send the deltas to the other replicas
    /// while its own commit-log fsync runs, instead of after it: in `batch`
    /// mode a write then waits for one fsync round, not two in sequence.
    /// Its own copy counts toward W once synced. An OS crash before that
    /// fsync can lose this node's copy (the other replicas hold it); the
    /// restarted node stamps with a new id (`query::stamp_actor`), so it
    /// never reuses the lost write's dot. On by default; off sends the
    /// deltas only after the local fsync (for comparison).
    pub overlap_local_sync: bool,
    /// One partition read in this many asks every alive replica (and so
    /// compares and repairs them all); the others ask only the R replicas
    /// the consistency level needs, this node first. 1 asks all replicas on
    /// every read (the most repair, the most work); 0 never asks more than
    /// R up front. Cassandra's equivalent was `read_repair_chance`.
    pub read_repair_every: u32,
    /// A read that has not had all the answers it needs after this long
    /// asks one more replica for each answer still missing (Cassandra's
    /// speculative retry); a replica that fails is replaced at once. Zero
    /// turns speculation off (a failed replica is still replaced).
    pub speculative_retry: Duration,
    /// How finely anti-entropy repair compares ranges.
    pub repair: RepairTuning,
    /// Bytes per second that all range streams of this node together may
    /// copy (bootstrap, decommission, removenode and repair streams; what
    /// the pages read from the source replicas weigh on the wire); 0 is no
    /// limit. See [`crate::coordinator::throttle`].
    pub stream_throughput: u64,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            write_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(5),
            range_timeout: Duration::from_secs(10),
            background_read_repair: true,
            hint_replay_concurrency: 8,
            hint_replay_pause: Duration::from_millis(10),
            hint_replay_request_bytes: 64 << 10,
            hint_throughput: 4 << 20,
            overlap_local_sync: true,
            read_repair_every: 10,
            speculative_retry: Duration::from_millis(50),
            repair: RepairTuning::default(),
            stream_throughput: 64 << 20,
        }
    }
}

/// Counters of a coordinator since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoordinatorStats {
    /// Hints this node stored for replicas that were down or did not
    /// answer.
    pub hints_stored: u64,
    /// Writes sent to a sloppy-quorum fallback node with a hint.
    pub hints_sent_to_fallbacks: u64,
    /// Hints delivered by replay.
    pub hints_replayed: u64,
    /// Read repairs sent before answering (one per stale replica).
    pub read_repairs: u64,
    /// Read repairs sent in the background.
    pub background_repairs: u64,
    /// Reads retried with a larger limit (short-read protection).
    pub short_read_retries: u64,
    /// Reads answered from one full answer whose digest the other
    /// replicas' digests matched.
    pub digest_reads: u64,
    /// Digest reads that found a differing replica and fell back to full
    /// data (and repair).
    pub digest_mismatches: u64,
    /// Partition reads that asked every alive replica up front (one in
    /// `read_repair_every`).
    pub full_fanout_reads: u64,
    /// Requests sent to one more replica because the first ones were slow
    /// or failed (speculative retry).
    pub speculative_retries: u64,
    /// Write copies sent to a joining node for a range it is about to own.
    pub pending_writes: u64,
    /// Partitions a bootstrapping node received from the replicas of the
    /// ranges it took.
    pub partitions_streamed: u64,
    /// Anti-entropy repairs this node ran.
    pub repairs: u64,
    /// Entries (rows, partition deletions) those repairs sent to replicas
    /// that lacked them.
    pub repair_entries_sent: u64,
    /// Bytes of the pages range streams read from source replicas (what
    /// the stream throttle counts).
    pub stream_bytes: u64,
    /// Microseconds range streams waited for the stream throttle.
    pub stream_throttled_us: u64,
    /// Bytes of row states this node read to hash spans for repairs (its
    /// own and other nodes').
    pub repair_hash_bytes: u64,
    /// Microseconds that hashing waited for the stream throttle.
    pub repair_hash_throttled_us: u64,
}

#[derive(Default)]
struct Counters {
    hints_stored: AtomicU64,
    hints_sent_to_fallbacks: AtomicU64,
    hints_replayed: AtomicU64,
    read_repairs: AtomicU64,
    background_repairs: AtomicU64,
    short_read_retries: AtomicU64,
    digest_reads: AtomicU64,
    digest_mismatches: AtomicU64,
    partition_reads: AtomicU64,
    full_fanout_reads: AtomicU64,
    speculative_retries: AtomicU64,
    pending_writes: AtomicU64,
    partitions_streamed: AtomicU64,
    repairs: AtomicU64,
    repair_entries_sent: AtomicU64,
    stream_bytes: AtomicU64,
    stream_throttled_us: AtomicU64,
    repair_hash_bytes: AtomicU64,
    repair_hash_throttled_us: AtomicU64,
}

/// What one hint replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Hints delivered in batches that were acknowledged (so deleted).
    pub delivered: usize,
    /// Hints whose delivery failed: their batch and the later ones were
    /// kept for a later replay (which sends that whole batch again).
    pub failed: usize,
    /// Hints dropped, in acknowledged batches, because the target does not
    /// know their table any more, or their payload did not decode.
    pub discarded: usize,
    /// Another replay to the same node was running; nothing was done.
    pub busy: bool,
}

/// Why one request to a peer failed.
#[derive(Debug)]
enum SendError {
    Net(NetError),
    Peer(PeerError),
    UnknownNode(NodeId),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Net(e) => e.fmt(f),
            SendError::Peer(e) => e.fmt(f),
            SendError::UnknownNode(n) => write!(f, "node {:016x} is not in the ring", n.0),
        }
    }
}

/// How one copy of a write went: the replica it is for, the fallback it
/// went to as a hint (if so), and the outcome.
type WriteCopy = (NodeId, Option<NodeId>, Result<(), SendError>);

/// What [`ClusterStore::stamp`] gives back: the stamper, the deltas, the
/// replicas that failed to stamp (with why) and, when this node stamped,
/// its write still waiting for the commit log's fsync.
type Stamped = (
    NodeId,
    Deltas,
    Vec<(NodeId, SendError)>,
    Option<PendingSync>,
);

impl SendError {
    /// Whether the request ran out of time, rather than failed.
    fn is_timeout(&self) -> bool {
        matches!(self, SendError::Net(NetError::Timeout { .. }))
    }
}

/// The replicas a request could not count: the ones that failed (with why)
/// and whether any ran out of time. It decides how a request that falls
/// short is reported: [`QueryError::Failure`] when every replica that did
/// not answer failed, [`QueryError::Timeout`] when one ran out of time.
#[derive(Debug, Default)]
struct Shortfall {
    failures: Vec<String>,
    timed_out: bool,
}

impl Shortfall {
    /// Records that the replica `who` (its name for people) did not answer
    /// because of `error`.
    fn note(&mut self, who: String, error: &SendError) {
        if error.is_timeout() {
            self.timed_out = true;
        } else {
            self.failures.push(format!("{who}: {error}"));
        }
    }

    /// Whether some replica failed and none ran out of time.
    fn only_failures(&self) -> bool {
        !self.timed_out && !self.failures.is_empty()
    }

    /// The error of a request that got `received` of `required` answers.
    fn into_error(
        self,
        consistency: Consistency,
        required: usize,
        received: usize,
        write: bool,
    ) -> QueryError {
        if self.only_failures() {
            QueryError::Failure {
                consistency,
                required,
                received,
                failures: self.failures,
                write,
            }
        } else {
            QueryError::Timeout {
                consistency,
                required,
                received,
                write,
            }
        }
    }
}

struct Inner {
    node: NodeId,
    local: Arc<LocalStore>,
    replica: ReplicaHandler,
    hints: Arc<HintStore>,
    schema: Arc<SchemaStore>,
    transport: Arc<dyn Transport<PeerRequest, PeerResponse>>,
    ring: RwLock<Ring>,
    /// The ring once the joining nodes own their tokens (`None`: nobody is
    /// joining). Writes also go to the replicas it adds: see
    /// [`ClusterStore::set_pending_ring`].
    pending: RwLock<Option<Ring>>,
    liveness: Arc<dyn Liveness>,
    config: CoordinatorConfig,
    replaying: Mutex<BTreeSet<NodeId>>,
    counters: Counters,
    /// How far the repair running on this node is, if one is.
    repair_progress: Mutex<Option<RepairProgress>>,
    /// The byte-rate limit every range stream of this node shares.
    stream_throttle: StreamThrottle,
    /// The byte-rate limit of this node's hint replays.
    hint_throttle: StreamThrottle,
}

impl Inner {
    /// Where `node` listens for peers, from the ring or the pending ring.
    fn addr_of(&self, node: NodeId) -> Option<std::net::SocketAddr> {
        let known = self.ring.read().node(node).map(|n| n.addr);
        known.or_else(|| {
            let pending = self.pending.read();
            pending.as_ref().and_then(|r| r.node(node)).map(|n| n.addr)
        })
    }
}

/// The coordinator: implements [`DataStore`] over the replicas of the
/// ring, so the query executor runs unchanged on any node. Cheap to clone.
///
/// See the module documentation of [`crate::coordinator`] for the write,
/// read, repair and hint paths.
#[derive(Clone)]
pub struct ClusterStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ClusterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterStore")
            .field("node", &self.inner.node)
            .finish_non_exhaustive()
    }
}

fn server(e: impl std::fmt::Display) -> QueryError {
    QueryError::Server(e.to_string())
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

impl ClusterStore {
    /// A coordinator for the node whose data is `local` (its node id is the
    /// local store's), with its hint store, schema, transport (whose
    /// handler should be a [`ReplicaHandler`] over the same `local` and
    /// `hints`), the current ring and a liveness view.
    pub fn new(
        local: Arc<LocalStore>,
        hints: Arc<HintStore>,
        schema: Arc<SchemaStore>,
        transport: Arc<dyn Transport<PeerRequest, PeerResponse>>,
        ring: Ring,
        liveness: Arc<dyn Liveness>,
        config: CoordinatorConfig,
    ) -> ClusterStore {
        ClusterStore {
            inner: Arc::new(Inner {
                node: local.node_id(),
                replica: ReplicaHandler::new(local.clone(), hints.clone()),
                local,
                hints,
                schema,
                transport,
                ring: RwLock::new(ring),
                pending: RwLock::new(None),
                liveness,
                stream_throttle: StreamThrottle::new(config.stream_throughput),
                hint_throttle: StreamThrottle::new(config.hint_throughput),
                config,
                replaying: Mutex::new(BTreeSet::new()),
                counters: Counters::default(),
                repair_progress: Mutex::new(None),
            }),
        }
    }

    /// The byte-rate limit hint replay keeps to (`hint_throughput`).
    pub fn hint_throttle(&self) -> &StreamThrottle {
        &self.inner.hint_throttle
    }

    /// The byte-rate limit this node's range streams share; it can be
    /// changed while they run.
    pub fn stream_throttle(&self) -> &StreamThrottle {
        &self.inner.stream_throttle
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.node
    }

    /// The node's local store.
    pub fn local(&self) -> &Arc<LocalStore> {
        &self.inner.local
    }

    /// The node's hint store.
    pub fn hints(&self) -> &Arc<HintStore> {
        &self.inner.hints
    }

    /// The ring in use.
    pub fn ring(&self) -> Ring {
        self.inner.ring.read().clone()
    }

    /// Replaces the ring (bootstrap, decommission, learned from gossip).
    pub fn set_ring(&self, ring: Ring) {
        *self.inner.ring.write() = ring;
    }

    /// Sets the ring as it will be once the joining nodes own their tokens
    /// (`None` when no node is joining). While it is set, every write also
    /// goes to the replicas it has and the current ring has not (a joining
    /// node, for the ranges it is about to take), in the background and not
    /// counted toward W: a node streaming its ranges
    /// ([`ClusterStore::bootstrap_stream`]) misses no write made after the
    /// coordinators learned that it joins.
    pub fn set_pending_ring(&self, future: Option<Ring>) {
        *self.inner.pending.write() = future;
    }

    /// The ring set by [`ClusterStore::set_pending_ring`], if any.
    pub fn pending_ring(&self) -> Option<Ring> {
        self.inner.pending.read().clone()
    }

    /// The nodes this coordinator treats as joining (in the pending ring,
    /// not in the ring) and as leaving (in the ring, not in the pending
    /// ring).
    pub fn ring_changes(&self) -> (Vec<NodeId>, Vec<NodeId>) {
        let (ring, future) = self.rings();
        match future {
            None => (Vec::new(), Vec::new()),
            Some(future) => (
                future
                    .nodes()
                    .iter()
                    .map(|n| n.id)
                    .filter(|n| !ring.contains_node(*n))
                    .collect(),
                ring.nodes()
                    .iter()
                    .map(|n| n.id)
                    .filter(|n| !future.contains_node(*n))
                    .collect(),
            ),
        }
    }

    /// Replaces the ring and the pending ring together: a write that
    /// reads them ([`ClusterStore::rings`]) sees both before or both after.
    pub fn set_rings(&self, ring: Ring, future: Option<Ring>) {
        let mut r = self.inner.ring.write();
        let mut p = self.inner.pending.write();
        *r = ring;
        *p = future;
    }

    /// The ring and the pending ring, as one snapshot (locks taken in the
    /// order [`ClusterStore::set_rings`] takes them). A write places its
    /// copies with one snapshot: read apart, a node turning normal between
    /// the two reads would get neither a replica's copy (the old ring) nor
    /// a pending one (no pending ring any more).
    fn rings(&self) -> (Ring, Option<Ring>) {
        let r = self.inner.ring.read();
        let p = self.inner.pending.read();
        (r.clone(), p.clone())
    }

    /// Whether writes to `keyspace` use sloppy quorum: the keyspace's
    /// `sloppy_quorum` property in this node's schema (on for a keyspace
    /// this node does not know; its writes fail on the replication
    /// factor anyway).
    pub fn sloppy_quorum(&self, keyspace: &str) -> bool {
        self.inner
            .schema
            .current()
            .keyspace(keyspace)
            .is_none_or(|k| k.sloppy_quorum)
    }

    /// Counters since start.
    pub fn stats(&self) -> CoordinatorStats {
        let c = &self.inner.counters;
        CoordinatorStats {
            hints_stored: c.hints_stored.load(Ordering::Relaxed),
            hints_sent_to_fallbacks: c.hints_sent_to_fallbacks.load(Ordering::Relaxed),
            hints_replayed: c.hints_replayed.load(Ordering::Relaxed),
            read_repairs: c.read_repairs.load(Ordering::Relaxed),
            background_repairs: c.background_repairs.load(Ordering::Relaxed),
            short_read_retries: c.short_read_retries.load(Ordering::Relaxed),
            digest_reads: c.digest_reads.load(Ordering::Relaxed),
            digest_mismatches: c.digest_mismatches.load(Ordering::Relaxed),
            full_fanout_reads: c.full_fanout_reads.load(Ordering::Relaxed),
            speculative_retries: c.speculative_retries.load(Ordering::Relaxed),
            pending_writes: c.pending_writes.load(Ordering::Relaxed),
            partitions_streamed: c.partitions_streamed.load(Ordering::Relaxed),
            repairs: c.repairs.load(Ordering::Relaxed),
            repair_entries_sent: c.repair_entries_sent.load(Ordering::Relaxed),
            stream_bytes: c.stream_bytes.load(Ordering::Relaxed),
            stream_throttled_us: c.stream_throttled_us.load(Ordering::Relaxed),
            repair_hash_bytes: c.repair_hash_bytes.load(Ordering::Relaxed),
            repair_hash_throttled_us: c.repair_hash_throttled_us.load(Ordering::Relaxed),
        }
    }

    /// Whether every node of the ring is up, as this node sees it.
    pub fn all_nodes_up(&self) -> bool {
        self.ring().nodes().iter().all(|n| self.is_alive(n.id))
    }

    fn is_alive(&self, node: NodeId) -> bool {
        node == self.inner.node || self.inner.liveness.is_alive(node)
    }

    /// The replication factor of `keyspace` and whether its writes use
    /// sloppy quorum, from one reading of the schema.
    fn write_settings(&self, keyspace: &str) -> Result<(usize, bool), QueryError> {
        let schema = self.inner.schema.current();
        let ks = schema
            .keyspace(keyspace)
            .ok_or_else(|| QueryError::Invalid {
                message: format!("Keyspace {keyspace} does not exist"),
                rendered: format!("Keyspace {keyspace} does not exist"),
            })?;
        Ok((ks.replication.total_replicas() as usize, ks.sloppy_quorum))
    }

    fn rf(&self, keyspace: &str) -> Result<usize, QueryError> {
        self.write_settings(keyspace).map(|(rf, _)| rf)
    }

    /// A node as errors name it: its address, or its id when neither the
    /// ring nor the pending ring knows it.
    fn node_name(&self, node: NodeId) -> String {
        match self.inner.addr_of(node) {
            Some(addr) => addr.to_string(),
            None => format!("node {:016x}", node.0),
        }
    }

    /// Alive nodes of `nodes`, this node first, then in the given order.
    fn ordered_alive(&self, nodes: &[NodeId]) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = nodes
            .iter()
            .copied()
            .filter(|n| *n == self.inner.node)
            .collect();
        out.extend(
            nodes
                .iter()
                .copied()
                .filter(|n| *n != self.inner.node && self.is_alive(*n)),
        );
        out
    }

    /// Sends one request; this node's own requests are served directly.
    fn send(
        &self,
        node: NodeId,
        req: PeerRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<PeerResponse, SendError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let resp = if node == inner.node {
                match req {
                    PeerRequest::HashSpan { table, span } => {
                        inner.serve_hash_span(&table, span).await
                    }
                    req => inner.replica.serve(req).await,
                }
            } else {
                let addr = inner.addr_of(node).ok_or(SendError::UnknownNode(node))?;
                if timeout.is_zero() {
                    return Err(SendError::Net(NetError::Timeout {
                        peer: addr,
                        timeout,
                    }));
                }
                inner
                    .transport
                    .request(addr, req, timeout)
                    .await
                    .map_err(SendError::Net)?
            };
            match resp {
                PeerResponse::Error(e) => Err(SendError::Peer(e)),
                r => Ok(r),
            }
        })
    }

    /// Stores a hint for `target` in this node's hint store; returns
    /// whether it is stored (durably), so that only a stored hint counts
    /// towards a write at ANY.
    fn store_hint(&self, target: NodeId, table: &TableRef, entries: &Deltas) -> bool {
        let payload = match (HintPayload {
            table: table.clone(),
            entries: entries.clone(),
        })
        .encode()
        {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a hint");
                return false;
            }
        };
        let hint = Hint {
            created_ms: self.inner.local.clock().wall().now_millis(),
            payload,
        };
        match self.inner.hints.store(target, &hint) {
            Ok(()) => {
                self.inner
                    .counters
                    .hints_stored
                    .fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, target = target.0, "cannot store a hint");
                false
            }
        }
    }

    // ---------------------------------------------------------------- writes

    async fn write_partition(
        &self,
        table: &TableRef,
        pk: &[u8],
        mutations: Vec<Mutation>,
        cl: Consistency,
    ) -> Result<(), QueryError> {
        check_causal_contexts(&mutations)?;
        let (rf, sloppy) = self.write_settings(&table.keyspace)?;
        let token = key::token_of(pk);
        let (ring, future) = self.rings();
        let replicas = ring.replicas(token, rf);
        if replicas.is_empty() {
            return Err(server("the ring has no nodes"));
        }
        let required = cl.required(rf);
        let any = cl == Consistency::Any;
        let (alive, down): (Vec<NodeId>, Vec<NodeId>) =
            replicas.iter().partition(|n| self.is_alive(**n));
        let mut fallbacks: Vec<(NodeId, NodeId)> = Vec::new();
        if sloppy && !down.is_empty() {
            let mut candidates = ring
                .next_fallback_nodes(token, rf, &[])
                .into_iter()
                .filter(|n| self.is_alive(*n));
            for t in &down {
                if let Some(f) = candidates.next() {
                    fallbacks.push((*t, f));
                }
            }
        }
        let capable = alive.len() + fallbacks.len();
        if !any && capable < required {
            return Err(QueryError::Unavailable {
                consistency: cl,
                required,
                alive: capable,
            });
        }
        let deadline = Instant::now() + self.inner.config.write_timeout;
        let alive = self.ordered_alive(&alive);
        let mut shortfall = Shortfall::default();
        let (stamper, deltas, failed_stampers, local_sync) = if alive.is_empty() {
            (
                None,
                self.orphan_stamp(pk, mutations, cl)?,
                Vec::new(),
                None,
            )
        } else {
            let stamped = self
                .stamp(table, pk, mutations, &alive, deadline, cl, required)
                .await?;
            let failed: Vec<NodeId> = stamped.2.iter().map(|(n, _)| *n).collect();
            for (n, e) in &stamped.2 {
                shortfall.note(self.node_name(*n), e);
            }
            (Some(stamped.0), stamped.1, failed, stamped.3)
        };
        // A remote stamper answered after its own durable write: that is
        // the first acknowledgement. This node's own stamp is still being
        // synced: it counts when its fsync returns (below).
        let mut acks = usize::from(stamper.is_some() && local_sync.is_none());
        let mut hinted = 0usize;
        // Each copy answers with the replica it is for, the fallback it
        // went to as a hint (if so), and how it went.
        let mut set: JoinSet<WriteCopy> = JoinSet::new();
        for &r in &alive {
            if Some(r) == stamper || failed_stampers.contains(&r) {
                continue;
            }
            let req = PeerRequest::Apply {
                table: table.clone(),
                entries: deltas.clone(),
            };
            let fut = self.send(r, req, remaining(deadline));
            set.spawn(async move { (r, None, fut.await.map(|_| ())) });
        }
        for &(target, fallback) in &fallbacks {
            let req = PeerRequest::StoreHint {
                target,
                table: table.clone(),
                entries: deltas.clone(),
            };
            self.inner
                .counters
                .hints_sent_to_fallbacks
                .fetch_add(1, Ordering::Relaxed);
            let fut = self.send(fallback, req, remaining(deadline));
            set.spawn(async move { (target, Some(fallback), fut.await.map(|_| ())) });
        }
        if let Some(pending) = local_sync {
            let (local, me) = (self.inner.local.clone(), self.inner.node);
            set.spawn(async move {
                match local.wait_synced(pending).await {
                    Ok(()) => (me, None, Ok(())),
                    Err(e) => {
                        tracing::error!(error = %e, "the local copy of a write did not sync");
                        let error = PeerError::Storage(format!("the commit log did not sync: {e}"));
                        (me, None, Err(SendError::Peer(error)))
                    }
                }
            });
        }
        if let Some(future) = &future {
            self.forward_to_pending(table, future, token, rf, &replicas, &deltas, deadline);
        }
        for &t in down
            .iter()
            .filter(|t| !fallbacks.iter().any(|(x, _)| x == *t))
            .chain(failed_stampers.iter())
        {
            if self.store_hint(t, table, &deltas) {
                hinted += 1;
            }
        }
        let me = self.inner.node;
        let done = |acks: usize, hinted: usize| acks >= required || (any && acks + hinted >= 1);
        while !done(acks, hinted) {
            // Failed copies can leave too few outstanding to reach W: the
            // write fails now rather than at the deadline (ANY can still be
            // met by a hint this node stores, so it waits for every copy).
            if !any && acks + set.len() < required && shortfall.only_failures() {
                break;
            }
            match set.join_next().await {
                Some(Ok((_, _, Ok(())))) => acks += 1,
                Some(Ok((target, fallback, Err(e)))) => {
                    let who = match fallback {
                        Some(f) => format!(
                            "{} (a hint for {})",
                            self.node_name(f),
                            self.node_name(target)
                        ),
                        None => self.node_name(target),
                    };
                    shortfall.note(who, &e);
                    // This node's copy is written (it survives a process
                    // crash) but its fsync failed: no hint to itself.
                    if target != me && self.store_hint(target, table, &deltas) {
                        hinted += 1;
                    }
                }
                Some(Err(e)) => tracing::error!(error = %e, "write task failed"),
                None => break,
            }
        }
        if !set.is_empty() {
            // The rest finish in the background; whoever fails gets a hint.
            let this = self.clone();
            let table = table.clone();
            tokio::spawn(async move {
                while let Some(res) = set.join_next().await {
                    match res {
                        Ok((target, _, Err(_))) if target != me => {
                            this.store_hint(target, &table, &deltas);
                        }
                        _ => {}
                    }
                }
            });
        }
        if done(acks, hinted) {
            Ok(())
        } else {
            Err(shortfall.into_error(cl, required, acks, true))
        }
    }

    /// Sends a write's deltas to the nodes that will replicate `token` once
    /// the joining nodes own their tokens, in the background: not counted
    /// toward W, and a copy that fails becomes a hint (replayed like any
    /// other once the node is seen up).
    #[allow(clippy::too_many_arguments)]
    fn forward_to_pending(
        &self,
        table: &TableRef,
        future: &Ring,
        token: key::Token,
        rf: usize,
        replicas: &[NodeId],
        deltas: &Deltas,
        deadline: Instant,
    ) {
        let gainers = future
            .replicas(token, rf)
            .into_iter()
            .filter(|n| !replicas.contains(n));
        for target in gainers {
            self.inner
                .counters
                .pending_writes
                .fetch_add(1, Ordering::Relaxed);
            let req = PeerRequest::Apply {
                table: table.clone(),
                entries: deltas.clone(),
            };
            let fut = self.send(target, req, remaining(deadline));
            let (this, table, deltas) = (self.clone(), table.clone(), deltas.clone());
            tokio::spawn(async move {
                if fut.await.is_err() {
                    this.store_hint(target, &table, &deltas);
                }
            });
        }
    }

    /// Has one alive replica stamp the write (this node first if it is
    /// one). Returns the stamper, the deltas, the replicas that failed
    /// to stamp, with why (they get hints) and, when this node stamped, its write
    /// still waiting for the commit log's fsync: the deltas go to the
    /// other replicas while it syncs, and it counts as an acknowledgement
    /// once synced. Its record is written to the OS before the deltas
    /// leave, so a crash of this process cannot lose a dot that other
    /// replicas hold; an OS crash before the fsync can, and the node then
    /// stamps with a new id (see docs/architecture.md).
    #[allow(clippy::too_many_arguments)]
    async fn stamp(
        &self,
        table: &TableRef,
        pk: &[u8],
        mutations: Vec<Mutation>,
        alive: &[NodeId],
        deadline: Instant,
        cl: Consistency,
        required: usize,
    ) -> Result<Stamped, QueryError> {
        let mut failed: Vec<(NodeId, SendError)> = Vec::new();
        let mut shortfall = Shortfall::default();
        let mut last_error = None;
        for (i, &node) in alive.iter().enumerate() {
            let left = remaining(deadline);
            if left.is_zero() {
                break;
            }
            if node == self.inner.node {
                match self
                    .inner
                    .local
                    .stamp_unsynced(table, pk, mutations.clone())
                    .await
                {
                    Ok((deltas, pending)) if self.inner.config.overlap_local_sync => {
                        self.inner.replica.observe(&deltas);
                        return Ok((node, deltas, failed, Some(pending)));
                    }
                    Ok((deltas, pending)) => {
                        // Overlap off: durable here before any other
                        // replica sees the dot.
                        match self.inner.local.wait_synced(pending).await {
                            Ok(()) => {
                                self.inner.replica.observe(&deltas);
                                return Ok((node, deltas, failed, None));
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "the local stamp did not sync");
                                let error =
                                    PeerError::Storage(format!("the commit log did not sync: {e}"));
                                failed.push((node, SendError::Peer(error)));
                            }
                        }
                    }
                    Err(e) => {
                        let error = PeerError::from(e);
                        match &error {
                            PeerError::UnknownTable(m) => last_error = Some(m.clone()),
                            e => tracing::debug!(error = %e, "stamping here failed"),
                        }
                        failed.push((node, SendError::Peer(error)));
                    }
                }
                continue;
            }
            // Leave time for another replica unless this is the last one.
            let timeout = if i + 1 == alive.len() { left } else { left / 2 };
            let req = PeerRequest::Stamp {
                table: table.clone(),
                pk: pk.to_vec(),
                mutations: mutations.clone(),
            };
            let error = match self.send(node, req, timeout).await {
                Ok(PeerResponse::Stamped(deltas)) => return Ok((node, deltas, failed, None)),
                Ok(_) => {
                    let m = "unexpected answer to a stamp request".to_string();
                    last_error = Some(m.clone());
                    SendError::Peer(PeerError::Invalid(m))
                }
                Err(SendError::Peer(PeerError::UnknownTable(m))) => {
                    last_error = Some(m.clone());
                    SendError::Peer(PeerError::UnknownTable(m))
                }
                Err(e) => {
                    tracing::debug!(node = node.0, error = %e, "stamping failed");
                    e
                }
            };
            failed.push((node, error));
        }
        if let Some(m) = last_error {
            if failed.len() == alive.len() {
                return Err(server(format!("no replica could stamp the write: {m}")));
            }
        }
        // Replicas not tried for want of time ran out of it.
        shortfall.timed_out = failed.len() < alive.len();
        for (n, e) in &failed {
            shortfall.note(self.node_name(*n), e);
        }
        Err(shortfall.into_error(cl, required, 0, true))
    }

    /// Stamps a write at this node when no replica is alive (consistency
    /// ANY): the counter of the dot is the node's HLC value, unique per node
    /// without a stored state. Only blind writes: a write with a causal
    /// context must carry forward cells this node does not have.
    fn orphan_stamp(
        &self,
        pk: &[u8],
        mutations: Vec<Mutation>,
        cl: Consistency,
    ) -> Result<Deltas, QueryError> {
        let prefix = key::partition_prefix(pk);
        let mut out = Vec::new();
        for m in mutations {
            match m {
                Mutation::Row {
                    clustering,
                    write,
                    context,
                } => {
                    if context.is_some() {
                        return Err(QueryError::Unavailable {
                            consistency: cl,
                            required: 1,
                            alive: 0,
                        });
                    }
                    let dot = Dot {
                        node: self.inner.local.stamp_actor(),
                        counter: self.inner.local.clock().now().0,
                    };
                    let deleted_at = write.delete_row.then_some(write.ts);
                    let alive = |ts| deleted_at.is_none_or(|d| ts > d);
                    let version = RowVersion {
                        dot,
                        marker: write
                            .insert_marker
                            .map(|expires_at| RowMarker {
                                ts: write.ts,
                                expires_at,
                            })
                            .filter(|m| alive(m.ts)),
                        deleted_at,
                        cells: write
                            .cells
                            .iter()
                            .filter(|_| alive(write.ts))
                            .map(|(name, value, expires_at)| {
                                let cell = crate::model::Cell {
                                    ts: write.ts,
                                    value: value.clone(),
                                    expires_at: *expires_at,
                                };
                                (name.clone(), cell)
                            })
                            .collect(),
                    };
                    let state = RowState::from_parts(vec![version], DotSet::new());
                    out.push((key::row_key(&prefix, &clustering), Entry::Row(state)));
                }
                Mutation::Range(rt) => out.push((
                    key::header_key(&prefix),
                    Entry::Header(crate::model::PartitionHeader {
                        deleted_at: None,
                        ranges: vec![rt],
                    }),
                )),
                Mutation::Partition(ts) => out.push((
                    key::header_key(&prefix),
                    Entry::Header(crate::model::PartitionHeader {
                        deleted_at: Some(ts),
                        ranges: vec![],
                    }),
                )),
            }
        }
        Ok(out)
    }

    // ----------------------------------------------------------------- reads

    /// Sends `req` to the first `initial` nodes of `nodes` and waits for
    /// `need` answers. A node that fails is replaced at once by the next
    /// one in `nodes`; when answers are still missing after the
    /// speculative-retry delay, one more node is asked for each (again
    /// after each further delay). Returns the answers (in completion order)
    /// with the requests still running.
    #[allow(clippy::too_many_arguments)]
    async fn gather(
        &self,
        nodes: &[NodeId],
        req: PeerRequest,
        need: usize,
        initial: usize,
        deadline: Instant,
        cl: Consistency,
    ) -> Result<(Vec<(NodeId, PeerResponse)>, Replies), QueryError> {
        let send = |n: NodeId| self.send(n, req.clone(), remaining(deadline));
        let mut requests = Fanout::start(
            nodes,
            initial.max(need),
            self.inner.config.speculative_retry,
            &self.inner.counters.speculative_retries,
            send,
        );
        let mut got = Vec::new();
        let mut shortfall = Shortfall::default();
        while got.len() < need {
            match requests.next(need - got.len()).await {
                Some((n, Ok(resp))) => got.push((n, resp)),
                Some((n, Err(e))) => {
                    tracing::debug!(node = n.0, error = %e, "replica did not answer");
                    shortfall.note(self.node_name(n), &e);
                    requests.replace();
                    // Failures left too few answers to come: fail now
                    // rather than wait for the ones still running.
                    if got.len() + requests.left() < need && shortfall.only_failures() {
                        break;
                    }
                }
                None => break,
            }
        }
        if got.len() < need {
            return Err(shortfall.into_error(cl, need, got.len(), false));
        }
        Ok((got, requests.into_running()))
    }

    /// Asks every node of `nodes` and waits, at most `timeout`, for all
    /// their answers (streaming and repair need every replica's view).
    async fn ask_all(
        &self,
        nodes: &[NodeId],
        req: PeerRequest,
        timeout: Duration,
    ) -> Result<Vec<(NodeId, PeerResponse)>, QueryError> {
        let deadline = Instant::now() + timeout;
        let (got, _rest) = self
            .gather(
                nodes,
                req,
                nodes.len(),
                nodes.len(),
                deadline,
                Consistency::All,
            )
            .await?;
        Ok(got)
    }

    /// How many of `alive` replicas a partition read asks up front: all of
    /// them for one read in `read_repair_every`, else only `required`.
    fn read_fanout(&self, alive: usize, required: usize) -> usize {
        let every = u64::from(self.inner.config.read_repair_every);
        let n = self
            .inner
            .counters
            .partition_reads
            .fetch_add(1, Ordering::Relaxed);
        if every != 0 && n.is_multiple_of(every) && alive > required {
            self.inner
                .counters
                .full_fanout_reads
                .fetch_add(1, Ordering::Relaxed);
            alive
        } else {
            required
        }
    }

    fn read_targets(
        &self,
        keyspace: &str,
        token: Token,
        cl: Consistency,
    ) -> Result<(Vec<NodeId>, usize), QueryError> {
        if cl == Consistency::Any {
            return Err(QueryError::Invalid {
                message: "ANY consistency is not supported for reads".into(),
                rendered: "ANY consistency is not supported for reads".into(),
            });
        }
        let rf = self.rf(keyspace)?;
        let replicas = self.ring().replicas(token, rf);
        let required = cl.required(rf);
        let alive = self.ordered_alive(&replicas);
        if alive.len() < required {
            return Err(QueryError::Unavailable {
                consistency: cl,
                required,
                alive: alive.len(),
            });
        }
        Ok((alive, required))
    }

    async fn read_partition(
        &self,
        table: &TableRef,
        pk: &[u8],
        slice: SliceRequest,
        cl: Consistency,
    ) -> Result<StoredPartition, QueryError> {
        let (alive, required) = self.read_targets(&table.keyspace, key::token_of(pk), cl)?;
        let deadline = Instant::now() + self.inner.config.read_timeout;
        let fanout = self.read_fanout(alive.len(), required);
        if required >= 2 {
            if let Some(answer) = self
                .read_by_digests(table, pk, &slice, &alive, required, fanout, deadline)
                .await
            {
                return Ok(answer);
            }
            // A digest differed, or an answer failed: full data from every
            // alive replica, merged and repaired.
            let all = alive.len();
            return self
                .read_full(table, pk, slice, &alive, required, all, deadline, cl)
                .await;
        }
        self.read_full(table, pk, slice, &alive, required, fanout, deadline, cl)
            .await
    }

    /// Asks one replica (this node first) for the slice and `fanout - 1`
    /// others for its digest. When the `required - 1` first digests match
    /// the full answer's, the answer stands without a merge or repair, and
    /// digests that come later and differ start a full read with repair in
    /// the background. A digest that fails is asked of a spare replica at
    /// once, and digests still missing after the speculative-retry delay of
    /// one more spare each. `None` when a digest differs, the full answer
    /// failed, was slower than the speculative-retry delay, or was cut
    /// short: the caller reads full data from every replica.
    #[allow(clippy::too_many_arguments)]
    async fn read_by_digests(
        &self,
        table: &TableRef,
        pk: &[u8],
        slice: &SliceRequest,
        alive: &[NodeId],
        required: usize,
        fanout: usize,
        deadline: Instant,
    ) -> Option<StoredPartition> {
        let (data_node, others) = alive.split_first()?;
        let wire = WireSlice::from(slice);
        let data = self.send(
            *data_node,
            PeerRequest::Read {
                table: table.clone(),
                pk: pk.to_vec(),
                slice: wire.clone(),
            },
            remaining(deadline),
        );
        let digest_req = PeerRequest::ReadDigest {
            table: table.clone(),
            pk: pk.to_vec(),
            slice: wire,
        };
        let send = |n: NodeId| -> BoxFuture<'static, Option<u128>> {
            let fut = self.send(n, digest_req.clone(), remaining(deadline));
            Box::pin(async move {
                match fut.await {
                    Ok(PeerResponse::Digest(d)) => Some(d),
                    _ => None,
                }
            })
        };
        let mut digest_requests = Fanout::start(
            others,
            fanout.max(required).saturating_sub(1),
            self.inner.config.speculative_retry,
            &self.inner.counters.speculative_retries,
            send,
        );
        let speculate = self.inner.config.speculative_retry;
        let answer = if speculate.is_zero() {
            data.await
        } else {
            match tokio::time::timeout(speculate, data).await {
                Ok(r) => r,
                Err(_) => {
                    self.inner
                        .counters
                        .speculative_retries
                        .fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            }
        };
        let answer = match answer {
            Ok(PeerResponse::Partition(p)) => p,
            _ => return None,
        };
        let expected = answer.digest();
        let mut matched = 0;
        while matched + 1 < required {
            match digest_requests.next(required - 1 - matched).await {
                Some((_, Some(d))) if d == expected => matched += 1,
                Some((_, Some(_))) => {
                    self.inner
                        .counters
                        .digest_mismatches
                        .fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                Some((_, None)) => {
                    digest_requests.replace();
                    // Too few digests left to come: the full read decides
                    // (and fails at once if the replicas failed).
                    if matched + digest_requests.left() < required - 1 {
                        return None;
                    }
                }
                None => return None,
            }
        }
        let mut digests = digest_requests.into_running();
        let merged = MergedPartition::from_answer(answer, slice.reverse);
        let cut = merged.cut;
        self.observe(&merged);
        let now = self.inner.local.clock().wall().now_millis();
        let (header, rows, live) = merged.into_live_rows(now, slice.limit);
        if cut && slice.limit.is_some_and(|want| live < want) {
            return None;
        }
        self.inner
            .counters
            .digest_reads
            .fetch_add(1, Ordering::Relaxed);
        if self.inner.config.background_read_repair && !digests.is_empty() {
            let this = self.clone();
            let (table, pk, slice, alive) =
                (table.clone(), pk.to_vec(), slice.clone(), alive.to_vec());
            tokio::spawn(async move {
                let mut differs = false;
                while let Some((_, answer)) = digests.next().await {
                    if let Some(d) = answer {
                        differs |= d != expected;
                    }
                }
                if differs {
                    this.inner
                        .counters
                        .digest_mismatches
                        .fetch_add(1, Ordering::Relaxed);
                    let deadline = Instant::now() + this.inner.config.read_timeout;
                    let all = alive.len();
                    if let Err(e) = this
                        .read_full(
                            &table,
                            &pk,
                            slice,
                            &alive,
                            all,
                            all,
                            deadline,
                            Consistency::All,
                        )
                        .await
                    {
                        tracing::debug!(error = %e, "background repair after a digest mismatch failed");
                    }
                }
            });
        }
        Some(StoredPartition { header, rows })
    }

    /// Reads full data from `fanout` of the `alive` replicas (more when
    /// they fail or are slow), merges, protects against short reads and
    /// repairs (see the module documentation).
    #[allow(clippy::too_many_arguments)]
    async fn read_full(
        &self,
        table: &TableRef,
        pk: &[u8],
        slice: SliceRequest,
        alive: &[NodeId],
        required: usize,
        fanout: usize,
        deadline: Instant,
        cl: Consistency,
    ) -> Result<StoredPartition, QueryError> {
        let prefix = key::partition_prefix(pk);
        let mut limit = slice.limit;
        loop {
            let ask = SliceRequest {
                limit,
                ..slice.clone()
            };
            let req = PeerRequest::Read {
                table: table.clone(),
                pk: pk.to_vec(),
                slice: WireSlice::from(&ask),
            };
            let (got, rest) = self
                .gather(alive, req, required, fanout, deadline, cl)
                .await?;
            let answers = partitions_of(got)?;
            let refs: Vec<&ReplicaPartition> = answers.iter().map(|(_, a)| a).collect();
            let merged = merge_partition(&refs, slice.reverse);
            let now = self.inner.local.clock().wall().now_millis();
            let (rows, live) = merged.live_rows(now, slice.limit);
            if let (true, Some(want), Some(asked)) = (merged.cut, slice.limit, limit) {
                if live < want {
                    // Short read: deletions on one replica hid rows another
                    // returned. Ask again for more.
                    self.inner
                        .counters
                        .short_read_retries
                        .fetch_add(1, Ordering::Relaxed);
                    limit = Some(asked.saturating_mul(2).max(asked + 1));
                    continue;
                }
            }
            self.observe(&merged);
            self.repair_blocking(table, &prefix, &merged, &answers, required, deadline, cl)
                .await?;
            if self.inner.config.background_read_repair && !rest.is_empty() {
                self.repair_background(
                    table.clone(),
                    prefix,
                    merged.clone(),
                    answers,
                    rest,
                    slice.reverse,
                );
            }
            return Ok(StoredPartition {
                header: merged.header,
                rows,
            });
        }
    }

    fn observe(&self, merged: &MergedPartition) {
        let hi = merged
            .rows
            .iter()
            .filter_map(|(_, s)| s.ts_bounds().map(|(_, hi)| hi))
            .chain(merged.header.ts_bounds().map(|(_, hi)| hi))
            .max();
        if let Some(ts) = hi {
            self.inner.local.clock().observe(ts);
        }
    }

    /// Writes the merge to the stale replicas among those that answered and
    /// waits: after it, `required` replicas hold the merge (monotonic
    /// quorum reads), or the read times out.
    #[allow(clippy::too_many_arguments)]
    async fn repair_blocking(
        &self,
        table: &TableRef,
        prefix: &[u8],
        merged: &MergedPartition,
        answers: &[(NodeId, ReplicaPartition)],
        required: usize,
        deadline: Instant,
        cl: Consistency,
    ) -> Result<(), QueryError> {
        let mut ok = 0;
        let mut set: JoinSet<(NodeId, Result<PeerResponse, SendError>)> = JoinSet::new();
        for (n, a) in answers {
            let deltas = merged.repair_for(prefix, a);
            if deltas.is_empty() {
                ok += 1;
                continue;
            }
            self.inner
                .counters
                .read_repairs
                .fetch_add(1, Ordering::Relaxed);
            let req = PeerRequest::Apply {
                table: table.clone(),
                entries: deltas,
            };
            let (n, fut) = (*n, self.send(*n, req, remaining(deadline)));
            set.spawn(async move { (n, fut.await) });
        }
        let mut shortfall = Shortfall::default();
        while let Some(res) = set.join_next().await {
            match res {
                Ok((_, Ok(_))) => ok += 1,
                Ok((n, Err(e))) => shortfall.note(self.node_name(n), &e),
                Err(e) => tracing::error!(error = %e, "read repair task failed"),
            }
        }
        if ok < required {
            return Err(shortfall.into_error(cl, required, ok, false));
        }
        Ok(())
    }

    /// Collects the answers the read did not wait for and repairs every
    /// replica that differs from the merge of all answers.
    fn repair_background(
        &self,
        table: TableRef,
        prefix: Vec<u8>,
        merged: MergedPartition,
        answered: Vec<(NodeId, ReplicaPartition)>,
        mut rest: Replies,
        reverse: bool,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut late = Vec::new();
            while let Some(answer) = rest.next().await {
                if let (n, Ok(PeerResponse::Partition(p))) = answer {
                    late.push((n, p));
                }
            }
            if late.is_empty() {
                return;
            }
            // The replicas that answered in time now hold `merged`.
            let repaired = ReplicaPartition {
                header: merged.header.clone(),
                rows: merged.rows.clone(),
                cut: merged.cut,
            };
            let mut views: Vec<(NodeId, &ReplicaPartition)> =
                answered.iter().map(|(n, _)| (*n, &repaired)).collect();
            views.extend(late.iter().map(|(n, p)| (*n, p)));
            let refs: Vec<&ReplicaPartition> = views.iter().map(|(_, p)| *p).collect();
            let all = merge_partition(&refs, reverse);
            let timeout = this.inner.config.write_timeout;
            let mut set = JoinSet::new();
            for (n, view) in views {
                let deltas = all.repair_for(&prefix, view);
                if deltas.is_empty() {
                    continue;
                }
                this.inner
                    .counters
                    .background_repairs
                    .fetch_add(1, Ordering::Relaxed);
                let req = PeerRequest::Apply {
                    table: table.clone(),
                    entries: deltas,
                };
                set.spawn(this.send(n, req, timeout));
            }
            while set.join_next().await.is_some() {}
        });
    }

    // ----------------------------------------------------------------- scans

    async fn scan_all(
        &self,
        table: &TableRef,
        after: Option<Vec<u8>>,
        max_partitions: usize,
        rows_per_partition: Option<usize>,
        cl: Consistency,
    ) -> Result<Vec<ScannedPartition>, QueryError> {
        let mut out: Vec<ScannedPartition> = Vec::new();
        if max_partitions == 0 {
            return Ok(out);
        }
        if cl == Consistency::Any {
            return Err(QueryError::Invalid {
                message: "ANY consistency is not supported for reads".into(),
                rendered: "ANY consistency is not supported for reads".into(),
            });
        }
        let rf = self.rf(&table.keyspace)?;
        let required = cl.required(rf);
        let start = match &after {
            Some(p) => key::token_of_key(p).map_err(server)?,
            None => 0,
        };
        let mut pos = after;
        for (lo, hi, replicas) in scan_spans(&self.ring(), rf) {
            if hi < start {
                continue;
            }
            let alive = self.ordered_alive(&replicas);
            if alive.len() < required {
                return Err(QueryError::Unavailable {
                    consistency: cl,
                    required,
                    alive: alive.len(),
                });
            }
            loop {
                let lower = match &pos {
                    Some(p) if key::token_of_key(p).is_ok_and(|t| t >= lo) => {
                        Bound::Included(key::partition_end(p))
                    }
                    _ => Bound::Included(lo.to_be_bytes().to_vec()),
                };
                let upper = match hi.checked_add(1) {
                    Some(n) => Bound::Excluded(n.to_be_bytes().to_vec()),
                    None => Bound::Unbounded,
                };
                let want = max_partitions - out.len();
                let req = PeerRequest::Scan {
                    table: table.clone(),
                    lower: to_key_bound(&lower),
                    upper: to_key_bound(&upper),
                    max_partitions: u32::try_from(want).unwrap_or(u32::MAX),
                    rows_per_partition: rows_per_partition
                        .map(|r| u32::try_from(r).unwrap_or(u32::MAX)),
                };
                let deadline = Instant::now() + self.inner.config.range_timeout;
                // Scan pages can be slow: every alive replica up front, no
                // speculation needed.
                let (got, _rest) = self
                    .gather(&alive, req, required, alive.len(), deadline, cl)
                    .await?;
                let mut answers: Vec<(NodeId, BTreeMap<Vec<u8>, ReplicaPartition>, bool)> =
                    Vec::new();
                for (n, resp) in got {
                    match resp {
                        PeerResponse::Partitions { partitions, cut } => {
                            answers.push((n, partitions.into_iter().collect(), cut))
                        }
                        _ => return Err(server("a replica answered a scan with something else")),
                    }
                }
                // Every answer covers the range up to its last partition
                // when it was cut, so the merge stops at the earliest one.
                let cutoff: Option<Vec<u8>> = answers
                    .iter()
                    .filter(|(_, _, cut)| *cut)
                    .filter_map(|(_, parts, _)| parts.keys().next_back().cloned())
                    .min();
                let prefixes: BTreeSet<Vec<u8>> = answers
                    .iter()
                    .flat_map(|(_, parts, _)| parts.keys())
                    .filter(|p| cutoff.as_ref().is_none_or(|c| *p <= c))
                    .cloned()
                    .collect();
                let empty = ReplicaPartition::default();
                let mut repairs: BTreeMap<NodeId, Deltas> = BTreeMap::new();
                let now = self.inner.local.clock().wall().now_millis();
                let mut full = false;
                for p in prefixes {
                    let views: Vec<&ReplicaPartition> = answers
                        .iter()
                        .map(|(_, parts, _)| parts.get(&p).unwrap_or(&empty))
                        .collect();
                    let merged = merge_partition(&views, false);
                    for ((n, _, _), view) in answers.iter().zip(&views) {
                        let deltas = merged.repair_for(&p, view);
                        if !deltas.is_empty() {
                            repairs.entry(*n).or_default().extend(deltas);
                        }
                    }
                    let (rows, live) = merged.live_rows(now, rows_per_partition);
                    let part = if merged.cut && rows_per_partition.is_some_and(|l| live < l) {
                        let pk = p.get(10..).unwrap_or_default();
                        let slice = SliceRequest {
                            lower: Bound::Unbounded,
                            upper: Bound::Unbounded,
                            reverse: false,
                            limit: rows_per_partition,
                        };
                        Box::pin(self.read_partition(table, pk, slice, cl)).await?
                    } else {
                        self.observe(&merged);
                        StoredPartition {
                            header: merged.header,
                            rows,
                        }
                    };
                    if !part.rows.is_empty() {
                        out.push((p, part));
                        if out.len() >= max_partitions {
                            full = true;
                            break;
                        }
                    }
                }
                self.apply_repairs(table, repairs, deadline).await;
                if full {
                    return Ok(out);
                }
                match cutoff {
                    Some(c) => pos = Some(c),
                    None => break,
                }
            }
        }
        Ok(out)
    }

    async fn apply_repairs(
        &self,
        table: &TableRef,
        repairs: BTreeMap<NodeId, Deltas>,
        deadline: Instant,
    ) {
        let mut set = JoinSet::new();
        for (n, entries) in repairs {
            self.inner
                .counters
                .read_repairs
                .fetch_add(1, Ordering::Relaxed);
            let req = PeerRequest::Apply {
                table: table.clone(),
                entries,
            };
            set.spawn(self.send(n, req, remaining(deadline)));
        }
        while set.join_next().await.is_some() {}
    }

    async fn truncate_everywhere(&self, table: &TableRef) -> Result<(), QueryError> {
        let ring = self.ring();
        let nodes: Vec<NodeId> = ring.nodes().iter().map(|n| n.id).collect();
        let alive = self.ordered_alive(&nodes);
        if alive.len() < nodes.len() {
            return Err(QueryError::Unavailable {
                consistency: Consistency::All,
                required: nodes.len(),
                alive: alive.len(),
            });
        }
        let deadline = Instant::now() + self.inner.config.write_timeout;
        let req = PeerRequest::Truncate {
            table: table.clone(),
        };
        self.gather(
            &alive,
            req,
            alive.len(),
            alive.len(),
            deadline,
            Consistency::All,
        )
        .await
        .map(|_| ())
    }

    // ----------------------------------------------------------------- hints

    /// Replays the hints this node holds for `target`, one batch of its
    /// oldest hint segments at a time (at most the hint store's
    /// `replay_batch_bytes`, or one segment, in memory): sends a batch,
    /// deletes it once all of it was delivered, then reads the next, until
    /// the hints held when the replay began are done (hints stored
    /// meanwhile wait for the next replay). Hints past the hint window are
    /// dropped and counted by the hint store. A failed delivery stops the
    /// replay: that batch and the later ones are kept for the next replay
    /// (applying a hint twice is harmless), the batches before it stay
    /// deleted.
    ///
    /// A batch goes out as requests that each carry the hints of one table
    /// that follow each other, up to `hint_replay_request_bytes`, at most
    /// `hint_replay_concurrency` requests at a time, pausing
    /// `hint_replay_pause` between groups, each group waiting its turn
    /// under `hint_throughput`. Why so many hints per request: one hint per
    /// request replayed about 700 hints a second on the test machine, so a
    /// node down for a minute under load took a quarter of an hour to
    /// catch up; the replica applies a request's hints as one write.
    pub async fn replay_hints(&self, target: NodeId) -> Result<ReplayReport, QueryError> {
        if !self.inner.replaying.lock().insert(target) {
            return Ok(ReplayReport {
                busy: true,
                ..ReplayReport::default()
            });
        }
        struct Release(Weak<Inner>, NodeId);
        impl Drop for Release {
            fn drop(&mut self) {
                if let Some(inner) = self.0.upgrade() {
                    inner.replaying.lock().remove(&self.1);
                }
            }
        }
        let _release = Release(Arc::downgrade(&self.inner), target);
        let hints = self.inner.hints.clone();
        let round = hints.start_round(target);
        let mut report = ReplayReport::default();
        let per_group = self.inner.config.hint_replay_concurrency.max(1);
        let pause = self.inner.config.hint_replay_pause;
        let timeout = self.inner.config.write_timeout;
        let request_bytes = self.inner.config.hint_replay_request_bytes.max(1);
        let mut first_group = true;
        loop {
            let now = self.inner.local.clock().wall().now_millis();
            let Some(batch) = hints.next_batch(&round, now).map_err(server)? else {
                break;
            };
            let (mut delivered, mut discarded, mut failed) = (0usize, 0usize, 0usize);
            let mut requests: Vec<HintRequest> = Vec::new();
            for hint in &batch.hints {
                match HintPayload::decode(&hint.payload) {
                    Ok(p) => match requests.last_mut() {
                        Some(last)
                            if last.table == p.table
                                && last.bytes + hint.payload.len() <= request_bytes =>
                        {
                            last.entries.extend(p.entries);
                            last.bytes += hint.payload.len();
                            last.hints += 1;
                        }
                        _ => requests.push(HintRequest {
                            table: p.table,
                            entries: p.entries,
                            bytes: hint.payload.len(),
                            hints: 1,
                        }),
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "undecodable hint dropped");
                        discarded += 1;
                    }
                }
            }
            let mut requests = requests.into_iter().peekable();
            while requests.peek().is_some() {
                let group: Vec<HintRequest> = requests.by_ref().take(per_group).collect();
                // The throttles hold across batches too.
                if !first_group && !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                first_group = false;
                let bytes = group.iter().map(|r| r.bytes).sum();
                self.inner.hint_throttle.pass(bytes).await;
                let mut set = JoinSet::new();
                for request in group {
                    let req = PeerRequest::Apply {
                        table: request.table,
                        entries: request.entries,
                    };
                    let sent = self.send(target, req, timeout);
                    let hints = request.hints;
                    set.spawn(async move { (sent.await, hints) });
                }
                while let Some(res) = set.join_next().await {
                    match res {
                        Ok((Ok(_), hints)) => delivered += hints,
                        Ok((Err(SendError::Peer(PeerError::UnknownTable(_))), hints)) => {
                            discarded += hints
                        }
                        Ok((Err(_), hints)) => failed += hints,
                        Err(e) => {
                            tracing::error!(error = %e, "hint replay task failed");
                            failed += 1;
                        }
                    }
                }
                if failed > 0 {
                    report.failed += failed;
                    return Ok(report);
                }
            }
            hints.ack(batch).map_err(server)?;
            report.delivered += delivered;
            report.discarded += discarded;
            self.inner
                .counters
                .hints_replayed
                .fetch_add(delivered as u64, Ordering::Relaxed);
        }
        Ok(report)
    }

    /// Membership saw `node` come up: replays its hints in the background.
    /// Returns the replay's task (awaiting it is optional).
    pub fn on_node_up(
        &self,
        node: NodeId,
    ) -> tokio::task::JoinHandle<Result<ReplayReport, QueryError>> {
        let this = self.clone();
        tokio::spawn(async move { this.replay_hints(node).await })
    }

    /// Every `every`, replays the hints of every target that is alive (for
    /// up-events that were missed). Stops when the store is dropped.
    pub fn spawn_hint_sweeper(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(inner) = weak.upgrade() else { return };
                let this = ClusterStore { inner };
                for target in this.inner.hints.targets() {
                    if target == this.inner.node {
                        continue;
                    }
                    if this.is_alive(target) {
                        if let Err(e) = this.replay_hints(target).await {
                            tracing::warn!(error = %e, target = target.0, "hint replay failed");
                        }
                    } else {
                        // Down: its hints past the window need not wait
                        // on disk for it to come back.
                        let now = this.inner.local.clock().wall().now_millis();
                        match this.inner.hints.expire(target, now) {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(
                                target = target.0,
                                hints = n,
                                "dropped hints past the hint window for a node still down"
                            ),
                            Err(e) => {
                                tracing::warn!(error = %e, target = target.0, "expiring hints failed")
                            }
                        }
                    }
                }
            }
        })
    }
}

type Replies = Running<Result<PeerResponse, SendError>>;

/// Hints of one table that follow each other in a replay batch, sent to
/// their node as one `Apply` ([`ClusterStore::replay_hints`]).
struct HintRequest {
    table: TableRef,
    entries: Deltas,
    /// Bytes of the hints packed (as stored).
    bytes: usize,
    /// How many hints.
    hints: usize,
}

fn partitions_of(
    got: Vec<(NodeId, PeerResponse)>,
) -> Result<Vec<(NodeId, ReplicaPartition)>, QueryError> {
    got.into_iter()
        .map(|(n, r)| match r {
            PeerResponse::Partition(p) => Ok((n, p)),
            _ => Err(server("a replica answered a read with something else")),
        })
        .collect()
}

/// The ring as inclusive token spans in ascending order, each with its
/// replicas; neighbouring spans with the same replicas are joined.
fn scan_spans(ring: &Ring, rf: usize) -> Vec<(Token, Token, Vec<NodeId>)> {
    let mut spans: Vec<(Token, Token, Vec<NodeId>)> = Vec::new();
    for (range, replicas) in ring.range_replicas(rf) {
        for s in range.spans() {
            spans.push((*s.start(), *s.end(), replicas.clone()));
        }
    }
    spans.sort_by_key(|s| s.0);
    let mut out: Vec<(Token, Token, Vec<NodeId>)> = Vec::new();
    for (lo, hi, reps) in spans {
        if let Some(last) = out.last_mut() {
            let same = {
                let mut a = last.2.clone();
                let mut b = reps.clone();
                a.sort();
                b.sort();
                a == b
            };
            if same && last.1.checked_add(1) == Some(lo) {
                last.1 = hi;
                continue;
            }
        }
        out.push((lo, hi, reps));
    }
    out
}

impl DataStore for ClusterStore {
    fn write<'a>(
        &'a self,
        table: &'a TableRef,
        partition_key: &'a [u8],
        mutations: Vec<Mutation>,
        consistency: Consistency,
    ) -> BoxFuture<'a, Result<(), QueryError>> {
        Box::pin(self.write_partition(table, partition_key, mutations, consistency))
    }

    fn read<'a>(
        &'a self,
        table: &'a TableRef,
        partition_key: &'a [u8],
        slice: SliceRequest,
        consistency: Consistency,
    ) -> BoxFuture<'a, Result<StoredPartition, QueryError>> {
        Box::pin(self.read_partition(table, partition_key, slice, consistency))
    }

    fn scan<'a>(
        &'a self,
        table: &'a TableRef,
        after: Option<Vec<u8>>,
        max_partitions: usize,
        rows_per_partition: Option<usize>,
        consistency: Consistency,
    ) -> BoxFuture<'a, Result<Vec<ScannedPartition>, QueryError>> {
        Box::pin(self.scan_all(
            table,
            after,
            max_partitions,
            rows_per_partition,
            consistency,
        ))
    }

    fn truncate<'a>(&'a self, table: &'a TableRef) -> BoxFuture<'a, Result<(), QueryError>> {
        Box::pin(self.truncate_everywhere(table))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::NodeInfo;

    #[test]
    fn scan_spans_cover_the_ring_in_order() {
        let nodes = (1..=3u64).map(|i| {
            NodeInfo::new(
                NodeId(i),
                std::net::SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
                None,
                vec![i * (u64::MAX / 4), i * (u64::MAX / 4) + 1000],
            )
        });
        let ring = Ring::new(nodes).expect("ring");
        let spans = scan_spans(&ring, 2);
        assert_eq!(spans.first().map(|s| s.0), Some(0));
        assert_eq!(spans.last().map(|s| s.1), Some(u64::MAX));
        for w in spans.windows(2) {
            assert_eq!(w[0].1 + 1, w[1].0);
        }
    }
}
