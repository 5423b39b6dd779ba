//! Membership: who is in the cluster, who is up, and what each node says
//! about itself.
//!
//! # Failure detection
//!
//! SWIM, as implemented by the `foca` crate, over the transport's datagrams
//! ([`GossipSender`]). Every [`MembershipConfig::probe_period`] each node
//! pings one member (round robin over a shuffled list); a member that does
//! not answer within [`MembershipConfig::probe_rtt`], directly or through
//! [`MembershipConfig::num_indirect_probes`] others, becomes
//! [`Liveness::Suspect`], and [`Liveness::Down`] after
//! [`MembershipConfig::suspect_to_down`] unless it refutes the suspicion.
//! With the defaults (1 s, 500 ms, 3 s) a dead node of a simulated
//! five-node cluster was down everywhere 4 to 8 s after it died (over
//! hundreds of seeds, with and without 10% loss), and at worst after
//! [`MembershipConfig::failure_detection_bound`] (12 s for five nodes).
//!
//! # Joining, restarting, partitions
//!
//! A node joins by announcing itself to its seeds
//! ([`MembershipConfig::seeds`], by address only), again every
//! [`MembershipConfig::join_retry`] (to the seeds and a few known members)
//! until a member has answered its current identity. A
//! member's identity is a [`PeerId`]: address, node id and generation. A
//! restarted node comes back with a larger generation and replaces its old
//! identity everywhere. A node that finds itself declared down while alive
//! (a partition that healed: members keep announcing to down members, and
//! tell a down member it is down) renews its identity (generation + 1) and
//! rejoins on its own.
//!
//! # Metadata
//!
//! Every node publishes its [`NodeMetadata`] (tokens, address, rack,
//! status, schema version and digest, load) as a foca custom broadcast,
//! piggybacked on SWIM traffic; receivers keep the newest version per node
//! and pass on only news. Because broadcasts stop after a few
//! transmissions, two nodes that meet ([`MembershipEvent::Up`]), and a
//! random pair every [`MembershipConfig::sync_interval`], also run a small
//! anti-entropy exchange (digest of versions, then the missing metadata), so
//! a new node learns everyone's metadata within a round trip of joining and
//! nothing stays missed after a partition.
//!
//! # The service
//!
//! [`Membership::start`] spawns one task that owns foca; inputs reach it over
//! channels: datagrams ([`Membership::handle_datagram`], called by the
//! node's `net::Handler`), its timers (on the tokio clock, so the paused
//! clock of the simulation drives them), local changes
//! ([`Membership::update_local`]) and [`Membership::leave_gracefully`].
//! Outputs: the [`ClusterView`] ([`Membership::watch`]) and the
//! [`MembershipEvent`]s ([`Membership::subscribe`]). All randomness comes
//! from the seed given to [`Membership::start`]: on the simulated network the
//! same seeds give the same history.
//!
//! # Packets
//!
//! A gossip datagram is one tag byte and a body: a foca packet, one pushed
//! [`NodeMetadata`], or an anti-entropy digest. Packets are at most
//! `min(MembershipConfig::max_packet_size, the transport's datagram size)`,
//! fixed at start; when the transport cannot tell yet,
//! [`FALLBACK_DATAGRAM_SIZE`] (1,100: what a fresh QUIC path carries, with
//! margin). A packet that does not fit a peer's path is dropped and counted
//! ([`MembershipStats::oversize`]). Anything that does not decode, and foca packets whose
//! sender is not the address they came from, are counted
//! ([`Membership::stats`]) and dropped; nothing a peer sends can panic the
//! node.

mod identity;
mod metadata;
mod sender;
mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use foca::{AccumulatingRuntime, Codec, Foca, OwnedNotification, PeriodicParams, State, Timer};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::model::NodeId;

pub use identity::{generation_now, BincodeCodec, CodecError, PeerId};
pub use metadata::{NodeMetadata, NodeStatus};
pub use sender::GossipSender;
pub use view::{human_bytes, status_table, ClusterView, Liveness, Member, MembershipEvent};

use metadata::{
    decode_metadata, encode_metadata, DigestEntry, MetaBroadcasts, MetaStore, SyncMessage,
    DIGEST_ENTRY_MAX,
};

/// Datagram payload assumed while the transport cannot tell its size. QUIC
/// carries 1,200-byte UDP payloads on any path, but its packet and frame
/// overhead and the transport's datagram header leave 1,152 bytes on a
/// fresh IPv4 path (measured with quinn 0.11 on 127.0.0.1), a little less
/// with IPv6 addresses: 1,100 fits with room to spare.
pub const FALLBACK_DATAGRAM_SIZE: usize = 1100;

/// The smallest gossip packet size: below it foca's packets and one
/// node's metadata may not fit.
pub const MIN_PACKET_SIZE: usize = 1024;

/// The largest encoded [`NodeMetadata`]: it must fit one gossip packet with
/// foca's header around it (about 90 tokens).
pub const MAX_METADATA_BYTES: usize = 900;

const TAG_FOCA: u8 = 0xF0;
const TAG_PUSH: u8 = 0xF1;
const TAG_SYNC: u8 = 0xF2;

/// Settings of the membership service. The defaults detect a failure in a
/// few seconds on a LAN.
#[derive(Debug, Clone, PartialEq)]
pub struct MembershipConfig {
    /// Addresses to announce to when joining (the node's own address is
    /// skipped, so every node can be given the same list).
    pub seeds: Vec<SocketAddr>,
    /// How often each node probes one member. Default 1 s.
    pub probe_period: Duration,
    /// How long a direct probe may take before indirect probes start;
    /// below `probe_period`. Default 500 ms.
    pub probe_rtt: Duration,
    /// Members asked to probe indirectly. Default 3.
    pub num_indirect_probes: usize,
    /// How long a suspect has to refute before it is declared down.
    /// Default 3 s.
    pub suspect_to_down: Duration,
    /// How many times each update or broadcast is sent along. Default 6.
    pub max_transmissions: u8,
    /// Upper bound of a gossip packet (tag byte included); the transport's
    /// datagram size lowers it. Default 1,400 (foca's default).
    /// Must be at least [`MIN_PACKET_SIZE`].
    pub max_packet_size: usize,
    /// How often pending updates are gossiped besides probes. Default
    /// 200 ms.
    pub gossip_interval: Duration,
    /// Members each periodic gossip goes to. Default 3.
    pub gossip_fanout: usize,
    /// How often a node asks a random member for more members. Default 10 s.
    pub announce_interval: Duration,
    /// How often a node announces itself to two members it thinks are
    /// down, which heals partitions. Default 5 s.
    pub announce_down_interval: Duration,
    /// How often a node that is not (or no longer) connected announces
    /// itself again to its seeds and a few members. Default 1 s.
    pub join_retry: Duration,
    /// How often a node runs the metadata anti-entropy exchange with one
    /// random member. Default 2 s.
    pub sync_interval: Duration,
    /// How long a down member is remembered (an identity forgotten could
    /// rejoin unchanged). Default 24 h.
    pub remove_down_after: Duration,
    /// Incoming datagrams queued for the service before more are dropped.
    /// Default 4,096.
    pub inbox_capacity: usize,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            seeds: Vec::new(),
            probe_period: Duration::from_secs(1),
            probe_rtt: Duration::from_millis(500),
            num_indirect_probes: 3,
            suspect_to_down: Duration::from_secs(3),
            max_transmissions: 6,
            max_packet_size: 1400,
            gossip_interval: Duration::from_millis(200),
            gossip_fanout: 3,
            announce_interval: Duration::from_secs(10),
            announce_down_interval: Duration::from_secs(5),
            join_retry: Duration::from_secs(1),
            sync_interval: Duration::from_secs(2),
            remove_down_after: Duration::from_secs(24 * 3600),
            inbox_capacity: 4096,
        }
    }
}

impl MembershipConfig {
    /// The defaults with `seeds`.
    pub fn with_seeds(seeds: Vec<SocketAddr>) -> Self {
        MembershipConfig {
            seeds,
            ..MembershipConfig::default()
        }
    }

    /// The longest a node of a `cluster_size`-node cluster can stay up in
    /// every other node's view after it died, with no message loss: each
    /// member probes every other at least once in `2 (n - 1)` periods
    /// (round robin, reshuffled after each round), a failed probe makes it
    /// suspect one period later, the suspicion becomes down after
    /// `suspect_to_down`, and one more period spreads the news.
    pub fn failure_detection_bound(&self, cluster_size: usize) -> Duration {
        let others = u32::try_from(cluster_size.saturating_sub(1).max(1)).unwrap_or(u32::MAX);
        self.probe_period
            .saturating_mul(others.saturating_mul(2).saturating_add(1))
            .saturating_add(self.suspect_to_down)
    }

    /// Checks the settings foca would reject or that make no sense.
    pub fn validate(&self) -> Result<(), MembershipError> {
        let fail = |reason: &str| Err(MembershipError::Config(reason.to_string()));
        if self.probe_rtt.is_zero() || self.probe_period <= self.probe_rtt {
            return fail("probe_rtt must be above zero and below probe_period");
        }
        if self.suspect_to_down.is_zero() {
            return fail("suspect_to_down must be above zero");
        }
        for (name, d) in [
            ("gossip_interval", self.gossip_interval),
            ("announce_interval", self.announce_interval),
            ("announce_down_interval", self.announce_down_interval),
            ("join_retry", self.join_retry),
            ("sync_interval", self.sync_interval),
            ("remove_down_after", self.remove_down_after),
        ] {
            if d.is_zero() {
                return fail(&format!("{name} must be above zero"));
            }
        }
        if self.num_indirect_probes == 0 || self.gossip_fanout == 0 || self.max_transmissions == 0 {
            return fail(
                "num_indirect_probes, gossip_fanout and max_transmissions must be above zero",
            );
        }
        if self.max_packet_size < MIN_PACKET_SIZE {
            return fail(&format!(
                "max_packet_size must be at least {MIN_PACKET_SIZE}"
            ));
        }
        if self.inbox_capacity == 0 {
            return fail("inbox_capacity must be above zero");
        }
        Ok(())
    }

    fn foca_config(&self, max_packet_size: usize) -> foca::Config {
        let nz = |n: usize| NonZeroUsize::new(n.max(1)).unwrap_or(NonZeroUsize::MIN);
        foca::Config {
            probe_period: self.probe_period,
            probe_rtt: self.probe_rtt,
            num_indirect_probes: nz(self.num_indirect_probes),
            max_transmissions: NonZeroU8::new(self.max_transmissions.max(1))
                .unwrap_or(NonZeroU8::MIN),
            suspect_to_down_after: self.suspect_to_down,
            remove_down_after: Some(self.remove_down_after),
            // The tag byte goes in front of foca's packet.
            max_packet_size: nz(max_packet_size - 1),
            notify_down_members: true,
            periodic_announce: Some(PeriodicParams {
                frequency: self.announce_interval,
                num_members: nz(1),
            }),
            periodic_announce_to_down_members: Some(PeriodicParams {
                frequency: self.announce_down_interval,
                num_members: nz(2),
            }),
            periodic_gossip: Some(PeriodicParams {
                frequency: self.gossip_interval,
                num_members: nz(self.gossip_fanout),
            }),
        }
    }
}

/// Errors of the membership service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// The configuration is invalid.
    #[error("invalid membership configuration: {0}")]
    Config(String),
    /// The node's metadata is too large for one gossip packet.
    #[error("node metadata of {size} bytes does not fit a gossip packet (at most {max})")]
    MetadataTooLarge {
        /// Encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// [`Membership::start`] was called outside a tokio runtime.
    #[error("the membership service must be started inside a tokio runtime")]
    NoRuntime,
    /// The service has stopped (left the cluster or shut down).
    #[error("the membership service has stopped")]
    Stopped,
    /// A node tried to publish metadata on behalf of a node it knows no
    /// metadata of, or on behalf of itself.
    #[error("cannot publish on behalf of node {node:016x}: {reason}")]
    NotPublishable {
        /// The node.
        node: u64,
        /// Why not.
        reason: &'static str,
    },
}

/// Counters of one membership service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MembershipStats {
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Received datagrams that did not decode (unknown tag, bad body).
    pub malformed: u64,
    /// foca packets whose sender is not the address they came from.
    pub spoofed: u64,
    /// foca packets foca rejected (stale, too large, bad broadcast, ...).
    pub rejected: u64,
    /// Datagrams dropped because the service's inbox was full.
    pub inbox_full: u64,
    /// Outgoing packets dropped because they did not fit the path.
    pub oversize: u64,
}

#[derive(Default)]
struct Counters {
    datagrams_in: AtomicU64,
    datagrams_out: AtomicU64,
    malformed: AtomicU64,
    spoofed: AtomicU64,
    rejected: AtomicU64,
    inbox_full: AtomicU64,
    oversize: AtomicU64,
}

fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> MembershipStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MembershipStats {
            datagrams_in: get(&self.datagrams_in),
            datagrams_out: get(&self.datagrams_out),
            malformed: get(&self.malformed),
            spoofed: get(&self.spoofed),
            rejected: get(&self.rejected),
            inbox_full: get(&self.inbox_full),
            oversize: get(&self.oversize),
        }
    }
}

enum Control {
    LocalChanged,
    /// Metadata of another node, published on its behalf.
    PublishFor(NodeMetadata),
    Leave(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

struct Inner {
    inbox: mpsc::Sender<(SocketAddr, Bytes)>,
    control: mpsc::UnboundedSender<Control>,
    view: watch::Receiver<ClusterView>,
    events: broadcast::Sender<MembershipEvent>,
    local: Arc<Mutex<NodeMetadata>>,
    counters: Arc<Counters>,
    /// Turns true once another node says this one was removed.
    removed: watch::Receiver<bool>,
}

/// A running membership service (see the module docs). Cheap to clone;
/// clones share the service.
///
/// The task runs until [`Membership::shutdown`] or
/// [`Membership::leave_gracefully`], or until every clone is dropped (a
/// clone held by the transport's handler keeps it alive: shut it down).
#[derive(Clone)]
pub struct Membership {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("local", &self.inner.local.lock().node)
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// Starts the service of this node and announces it to the seeds.
    ///
    /// `local` is this node's metadata; its address and generation are
    /// replaced by the sender's listen address and `generation`.
    /// `generation` must be larger than any this node used before (see
    /// [`generation_now`]). `rng_seed` seeds all of the service's randomness.
    /// Must be called inside a tokio runtime.
    pub fn start(
        sender: impl GossipSender,
        config: MembershipConfig,
        mut local: NodeMetadata,
        generation: u64,
        rng_seed: u64,
    ) -> Result<Membership, MembershipError> {
        config.validate()?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(MembershipError::NoRuntime);
        }
        local.addr = sender.local_addr();
        local.generation = generation;
        let encoded = encode_metadata(&local);
        if encoded.len() > MAX_METADATA_BYTES {
            return Err(MembershipError::MetadataTooLarge {
                size: encoded.len(),
                max: MAX_METADATA_BYTES,
            });
        }
        let identity = PeerId::new(local.addr, local.node, generation);
        let packet_limit = packet_limit(&sender, &config);
        let foca_config = config.foca_config(packet_limit);
        let store = Arc::new(Mutex::new(MetaStore::new(identity)));
        let foca = Foca::with_custom_broadcast(
            identity,
            foca_config,
            StdRng::seed_from_u64(rng_seed),
            BincodeCodec,
            MetaBroadcasts {
                store: store.clone(),
            },
        );
        let (inbox, inbox_rx) = mpsc::channel(config.inbox_capacity);
        let (control, control_rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(1024);
        let local = Arc::new(Mutex::new(local));
        let counters = Arc::new(Counters::default());
        let (removed_tx, removed) = watch::channel(false);
        let mut task = Task {
            removed: removed_tx,
            foca,
            runtime: AccumulatingRuntime::new(),
            sender: Arc::new(sender),
            // A different stream than foca's, from the same seed.
            rng: StdRng::seed_from_u64(rng_seed ^ 0x6d65_6d62_6572_7368),
            store,
            local: local.clone(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            packet_limit,
            view: ClusterView {
                local: identity.node,
                members: BTreeMap::new(),
            },
            view_signature: None,
            events: events.clone(),
            counters: counters.clone(),
            connected: false,
            left: false,
            config,
        };
        task.publish_local();
        task.announce_to_seeds();
        task.schedule(task.config.join_retry, TaskTimer::JoinRetry);
        task.schedule(task.config.sync_interval, TaskTimer::Sync);
        task.drain();
        task.view = task.build_view();
        let (view_tx, view) = watch::channel(task.view.clone());
        tokio::spawn(task.run(view_tx, inbox_rx, control_rx));
        Ok(Membership {
            inner: Arc::new(Inner {
                inbox,
                control,
                view,
                events,
                local,
                counters,
                removed,
            }),
        })
    }

    /// Hands the service one datagram received from `from` (the node's
    /// `net::Handler::on_datagram` calls this). Never blocks: when the
    /// service is behind, the datagram is dropped and counted.
    pub fn handle_datagram(&self, from: SocketAddr, payload: Bytes) {
        match self.inner.inbox.try_send((from, payload)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => inc(&self.inner.counters.inbox_full),
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// The current view of the cluster.
    pub fn view(&self) -> ClusterView {
        self.inner.view.borrow().clone()
    }

    /// Whether `node` is known and up (alive or suspect) in the current
    /// view: [`ClusterView::is_up`] without copying the view, for the
    /// coordinator, which asks for every replica of every request.
    pub fn is_up(&self, node: NodeId) -> bool {
        self.inner.view.borrow().is_up(node)
    }

    /// A receiver of the view, to wait for changes.
    pub fn watch(&self) -> watch::Receiver<ClusterView> {
        self.inner.view.clone()
    }

    /// Subscribes to the events from now on (a slow subscriber misses the
    /// oldest: see `tokio::sync::broadcast`).
    pub fn subscribe(&self) -> broadcast::Receiver<MembershipEvent> {
        self.inner.events.subscribe()
    }

    /// This node's current metadata.
    pub fn local(&self) -> NodeMetadata {
        self.inner.local.lock().clone()
    }

    /// This node's current identity (its generation grows when it renews
    /// itself after being declared down).
    pub fn identity(&self) -> PeerId {
        let view = self.inner.view.borrow();
        let local = self.inner.local.lock();
        let generation = view
            .members
            .get(&local.node)
            .map_or(local.generation, |m| m.generation);
        PeerId::new(local.addr, local.node, generation)
    }

    /// Changes this node's metadata with `change` and disseminates it.
    /// The node id, address and generation cannot change; the version
    /// bumps. Returns the new metadata.
    pub fn update_local(
        &self,
        change: impl FnOnce(&mut NodeMetadata),
    ) -> Result<NodeMetadata, MembershipError> {
        let mut local = self.inner.local.lock();
        let next = next_version(&local, change)?;
        if self.inner.control.is_closed() {
            return Err(MembershipError::Stopped);
        }
        *local = next.clone();
        self.inner
            .control
            .send(Control::LocalChanged)
            .map_err(|_| MembershipError::Stopped)?;
        Ok(next)
    }

    /// Publishes a new version of another node's metadata on its behalf:
    /// `change` applied to the newest known version, with the version
    /// bumped (same node, address and generation). Used by `ringdb admin
    /// removenode` to mark a down node leaving, then removed. The node
    /// itself, should it run, publishes its own versions, and a newer one
    /// wins, except over a removal ([`NodeMetadata::freshness`]).
    pub fn publish_for(
        &self,
        node: NodeId,
        change: impl FnOnce(&mut NodeMetadata),
    ) -> Result<NodeMetadata, MembershipError> {
        let not = |reason| MembershipError::NotPublishable {
            node: node.0,
            reason,
        };
        if node == self.inner.local.lock().node {
            return Err(not("it is this node (use update_local)"));
        }
        let known = self
            .inner
            .view
            .borrow()
            .get(node)
            .and_then(|m| m.metadata.clone())
            .ok_or_else(|| not("its metadata is unknown"))?;
        let next = next_version(&known, change)?;
        self.inner
            .control
            .send(Control::PublishFor(next.clone()))
            .map_err(|_| MembershipError::Stopped)?;
        Ok(next)
    }

    /// Whether another node said this one was removed from the cluster
    /// (`ringdb admin removenode` while it was down or cut off). A removed
    /// node is out of every ring for good and should stop.
    pub fn is_removed(&self) -> bool {
        *self.inner.removed.borrow()
    }

    /// Resolves once this node learns it was removed from the cluster
    /// (never, if it is not).
    pub async fn removed(&self) {
        let mut removed = self.inner.removed.clone();
        if removed.wait_for(|r| *r).await.is_err() {
            // The service stopped without learning of a removal.
            std::future::pending::<()>().await;
        }
    }

    /// Leaves the cluster: publishes status [`NodeStatus::Left`], tells a
    /// few members this node is going away, and stops the service.
    pub async fn leave_gracefully(&self) -> Result<(), MembershipError> {
        let (done, wait) = oneshot::channel();
        self.inner
            .control
            .send(Control::Leave(done))
            .map_err(|_| MembershipError::Stopped)?;
        wait.await.map_err(|_| MembershipError::Stopped)
    }

    /// Stops the service without telling anyone (as a crash would).
    pub async fn shutdown(&self) {
        let (done, wait) = oneshot::channel();
        if self.inner.control.send(Control::Shutdown(done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Whether the service is still running.
    pub fn is_running(&self) -> bool {
        !self.inner.control.is_closed()
    }

    /// The service's counters.
    pub fn stats(&self) -> MembershipStats {
        self.inner.counters.snapshot()
    }
}

/// The version after `current`: `change` applied, with the node id,
/// address and generation kept and the version bumped; an error if it no
/// longer fits a gossip packet.
fn next_version(
    current: &NodeMetadata,
    change: impl FnOnce(&mut NodeMetadata),
) -> Result<NodeMetadata, MembershipError> {
    let mut next = current.clone();
    change(&mut next);
    next.node = current.node;
    next.addr = current.addr;
    next.generation = current.generation;
    next.version = current.version.saturating_add(1);
    let size = encode_metadata(&next).len();
    if size > MAX_METADATA_BYTES {
        return Err(MembershipError::MetadataTooLarge {
            size,
            max: MAX_METADATA_BYTES,
        });
    }
    Ok(next)
}

/// The size of every gossip packet this node sends, tag byte included:
/// `min(config.max_packet_size, the transport's datagram size)`, with
/// [`FALLBACK_DATAGRAM_SIZE`] while the transport cannot tell (a QUIC
/// transport knows only once connected). It is fixed for the life of the
/// service: foca sizes its send buffer once (changing it later trips an
/// assertion in foca).
fn packet_limit(sender: &impl GossipSender, config: &MembershipConfig) -> usize {
    let transport = config
        .seeds
        .iter()
        .filter(|&&seed| seed != sender.local_addr())
        .find_map(|&seed| sender.max_datagram_size(seed))
        .unwrap_or(FALLBACK_DATAGRAM_SIZE);
    config.max_packet_size.min(transport).max(MIN_PACKET_SIZE)
}

enum TaskTimer {
    Foca(Timer<PeerId>),
    JoinRetry,
    Sync,
}

type Swim = Foca<PeerId, BincodeCodec, StdRng, MetaBroadcasts>;

/// What the view is made of, to rebuild it only when something changed.
type ViewSignature = (Vec<(SocketAddr, NodeId, u64, Liveness)>, u64, bool);

/// The service's task: owns foca and everything it needs.
struct Task {
    foca: Swim,
    runtime: AccumulatingRuntime<PeerId>,
    sender: Arc<dyn GossipSender>,
    config: MembershipConfig,
    rng: StdRng,
    store: Arc<Mutex<MetaStore>>,
    local: Arc<Mutex<NodeMetadata>>,
    timers: BTreeMap<(Instant, u64), TaskTimer>,
    timer_seq: u64,
    /// Largest datagram sent, tag byte included (see [`packet_limit`]).
    packet_limit: usize,
    view: ClusterView,
    view_signature: Option<ViewSignature>,
    events: broadcast::Sender<MembershipEvent>,
    counters: Arc<Counters>,
    /// Set once another node says this one was removed.
    removed: watch::Sender<bool>,
    /// Whether foca is connected: it knows a live member that knows this
    /// node's current identity (foca's `Active`, until `Idle` or a
    /// renewal). While not, the node announces itself every `join_retry`.
    connected: bool,
    left: bool,
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn liveness(state: State) -> Liveness {
    match state {
        State::Alive => Liveness::Alive,
        State::Suspect => Liveness::Suspect,
        State::Down => Liveness::Down,
    }
}

impl Task {
    async fn run(
        mut self,
        view_tx: watch::Sender<ClusterView>,
        mut inbox: mpsc::Receiver<(SocketAddr, Bytes)>,
        mut control: mpsc::UnboundedReceiver<Control>,
    ) {
        loop {
            let next_timer = self.timers.keys().next().map(|&(at, _)| at);
            let mut stop = None;
            tokio::select! {
                // A fixed order: no randomness outside the seeds.
                biased;
                _ = sleep_until(next_timer) => self.fire_due_timers(),
                msg = control.recv() => match msg {
                    None => stop = Some(None),
                    Some(Control::LocalChanged) => self.publish_local(),
                    Some(Control::PublishFor(meta)) => self.publish_for(&meta),
                    Some(Control::Leave(done)) => {
                        self.leave();
                        stop = Some(Some(done));
                    }
                    Some(Control::Shutdown(done)) => stop = Some(Some(done)),
                },
                datagram = inbox.recv() => match datagram {
                    None => stop = Some(None),
                    Some((from, payload)) => self.on_datagram(from, payload),
                },
            }
            self.drain();
            self.refresh_view(&view_tx);
            if let Some(done) = stop {
                // Close before answering: whoever waited sees a stopped
                // service.
                control.close();
                inbox.close();
                if let Some(done) = done {
                    let _ = done.send(());
                }
                return;
            }
        }
    }

    fn schedule(&mut self, after: Duration, timer: TaskTimer) {
        self.timer_seq += 1;
        self.timers
            .insert((Instant::now() + after, self.timer_seq), timer);
    }

    fn fire_due_timers(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            match entry.remove() {
                TaskTimer::Foca(timer) => {
                    if let Err(err) = self.foca.handle_timer(timer, &mut self.runtime) {
                        tracing::debug!(%err, "foca timer");
                    }
                }
                TaskTimer::JoinRetry => {
                    if !self.connected && !self.left {
                        self.announce_to_seeds();
                        self.announce_to_members();
                    }
                    self.schedule(self.config.join_retry, TaskTimer::JoinRetry);
                }
                TaskTimer::Sync => {
                    let members: Vec<SocketAddr> =
                        self.foca.iter_members().map(|m| m.id().addr).collect();
                    if !members.is_empty() {
                        let to = members[self.rng.random_range(0..members.len())];
                        self.start_sync(to);
                    }
                    self.schedule(self.config.sync_interval, TaskTimer::Sync);
                }
            }
            self.drain();
        }
    }

    fn announce_to_seeds(&mut self) {
        let me = self.foca.identity().addr;
        let seeds: BTreeSet<SocketAddr> = self.config.seeds.iter().copied().collect();
        for seed in seeds {
            if seed != me {
                if let Err(err) = self.foca.announce(PeerId::seed(seed), &mut self.runtime) {
                    tracing::debug!(%seed, %err, "cannot announce to seed");
                }
            }
        }
    }

    /// Announces this node to a few members it believes alive. After foca
    /// renews the identity it waits, disconnected, until some member
    /// answers the new identity; if the few gossips it sent were lost, the
    /// others keep talking to the old identity, which is no longer
    /// accepted, so ask them directly.
    fn announce_to_members(&mut self) {
        let mut members: Vec<PeerId> = self.foca.iter_members().map(|m| *m.id()).collect();
        let fanout = self.config.num_indirect_probes.max(1);
        while members.len() > fanout {
            let i = self.rng.random_range(0..members.len());
            members.swap_remove(i);
        }
        for member in members {
            if let Err(err) = self.foca.announce(member, &mut self.runtime) {
                tracing::debug!(peer = %member.addr, %err, "cannot announce to member");
            }
        }
    }

    /// Hands foca this node's current metadata to disseminate, and gossips
    /// it right away.
    fn publish_local(&mut self) {
        let meta = self.local.lock().clone();
        self.learn(&meta);
        if self.foca.num_members() > 0 {
            if let Err(err) = self.foca.gossip(&mut self.runtime) {
                tracing::debug!(%err, "foca gossip");
            }
        }
    }

    /// Merges `meta`; news is passed on as a foca broadcast.
    fn learn(&mut self, meta: &NodeMetadata) {
        let data = encode_metadata(meta);
        if let Err(err) = self.foca.add_broadcast(&data) {
            // Too large to broadcast: keep it anyway, anti-entropy pushes it.
            tracing::debug!(node = meta.node.0, %err, "metadata not broadcast");
            self.store.lock().merge(meta.clone());
        }
    }

    /// Disseminates metadata published on another node's behalf, and
    /// pushes it to every member at once: it changes the ring.
    fn publish_for(&mut self, meta: &NodeMetadata) {
        self.learn(meta);
        let body = encode_metadata(meta);
        let members: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        for to in members {
            self.send(to, TAG_PUSH, &body);
        }
    }

    fn leave(&mut self) {
        let meta = {
            let mut local = self.local.lock();
            local.status = NodeStatus::Left;
            local.version = local.version.saturating_add(1);
            local.clone()
        };
        self.learn(&meta);
        // Tell every live member directly: the process stops right after.
        let body = encode_metadata(&meta);
        let members: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        for to in members {
            self.send(to, TAG_PUSH, &body);
        }
        if let Err(err) = self.foca.leave_cluster(&mut self.runtime) {
            tracing::debug!(%err, "foca leave");
        }
        self.left = true;
        self.drain();
    }

    fn on_datagram(&mut self, from: SocketAddr, payload: Bytes) {
        inc(&self.counters.datagrams_in);
        let Some((&tag, body)) = payload.split_first() else {
            inc(&self.counters.malformed);
            return;
        };
        match tag {
            TAG_FOCA => {
                // foca trusts the sender named in the header; only take
                // packets whose sender is the address they came from.
                match BincodeCodec.decode_header(body) {
                    Ok(header) if header.src.addr == from => {}
                    Ok(header) => {
                        inc(&self.counters.spoofed);
                        tracing::debug!(%from, claimed = %header.src.addr, "gossip from another address than its sender's");
                        return;
                    }
                    Err(err) => {
                        inc(&self.counters.malformed);
                        tracing::debug!(%from, %err, "undecodable gossip packet");
                        return;
                    }
                }
                if let Err(err) = self.foca.handle_data(body, &mut self.runtime) {
                    inc(&self.counters.rejected);
                    tracing::debug!(%from, %err, "gossip packet rejected");
                }
            }
            TAG_PUSH => match decode_metadata(body) {
                Ok(meta) => self.learn(&meta),
                Err(err) => {
                    inc(&self.counters.malformed);
                    tracing::debug!(%from, %err, "undecodable metadata push");
                }
            },
            TAG_SYNC => match SyncMessage::decode(body) {
                Ok(msg) => self.on_sync(from, msg),
                Err(err) => {
                    inc(&self.counters.malformed);
                    tracing::debug!(%from, %err, "undecodable metadata digest");
                }
            },
            _ => {
                inc(&self.counters.malformed);
                tracing::debug!(%from, tag, "gossip datagram of unknown kind");
            }
        }
    }

    /// Starts an anti-entropy exchange with `to`: our digest, asking for
    /// theirs.
    fn start_sync(&mut self, to: SocketAddr) {
        let have = self.store.lock().digest();
        self.send_sync(to, have, Vec::new(), true);
    }

    /// Answers a digest: pushes what the peer lacks or has older, asks for
    /// what it has newer, and sends our digest back when asked.
    fn on_sync(&mut self, from: SocketAddr, msg: SyncMessage) {
        let mut push = BTreeSet::new();
        let mut want = Vec::new();
        let have = {
            let store = self.store.lock();
            for entry in &msg.have {
                match store.get(entry.node) {
                    Some(ours) if ours.freshness() > entry.freshness() => {
                        push.insert(entry.node);
                    }
                    Some(ours) if ours.freshness() == entry.freshness() => {}
                    _ => want.push(entry.node),
                }
            }
            push.extend(msg.want.iter().copied().filter(|n| store.get(*n).is_some()));
            if msg.reply {
                store.digest()
            } else {
                Vec::new()
            }
        };
        for node in push {
            let body = self.store.lock().get(node).map(encode_metadata);
            if let Some(body) = body {
                self.send(from, TAG_PUSH, &body);
            }
        }
        if !have.is_empty() || !want.is_empty() {
            self.send_sync(from, have, want, false);
        }
    }

    /// Sends a digest in as many datagrams as it takes; only the first asks
    /// for a reply.
    fn send_sync(
        &mut self,
        to: SocketAddr,
        have: Vec<DigestEntry>,
        want: Vec<NodeId>,
        mut reply: bool,
    ) {
        let per_packet = ((self.packet_limit - 16) / DIGEST_ENTRY_MAX).max(1);
        let mut have = have.into_iter().peekable();
        let mut want = want.into_iter().peekable();
        while reply || have.peek().is_some() || want.peek().is_some() {
            let mut msg = SyncMessage {
                have: have.by_ref().take(per_packet).collect(),
                want: Vec::new(),
                reply,
            };
            msg.want = want.by_ref().take(per_packet - msg.have.len()).collect();
            reply = false;
            self.send(to, TAG_SYNC, &msg.encode());
        }
    }

    /// Sends one datagram if it fits the path to `to`.
    fn send(&mut self, to: SocketAddr, tag: u8, body: &[u8]) {
        let len = body.len() + 1;
        if let Some(max) = self.sender.max_datagram_size(to) {
            if len > max {
                inc(&self.counters.oversize);
                tracing::warn!(%to, len, max, "gossip packet larger than the path allows: dropped");
                return;
            }
        }
        let mut datagram = BytesMut::with_capacity(len);
        datagram.put_u8(tag);
        datagram.put_slice(body);
        inc(&self.counters.datagrams_out);
        self.sender.send(to, datagram.freeze());
    }

    /// Acts on everything foca asked for: packets, timers, notifications.
    fn drain(&mut self) {
        while self.runtime.backlog() > 0 {
            while let Some((to, data)) = self.runtime.to_send() {
                self.send(to.addr, TAG_FOCA, &data);
            }
            while let Some((after, timer)) = self.runtime.to_schedule() {
                self.schedule(after, TaskTimer::Foca(timer));
            }
            while let Some(notification) = self.runtime.to_notify() {
                match notification {
                    // Two nodes that meet exchange metadata directly: a new
                    // node learns everyone's within a round trip.
                    OwnedNotification::MemberUp(id) | OwnedNotification::Rename(_, id)
                        if !self.left =>
                    {
                        self.start_sync(id.addr);
                    }
                    OwnedNotification::Active => self.connected = true,
                    OwnedNotification::Idle => self.connected = false,
                    OwnedNotification::Rejoin(id) => {
                        self.connected = false;
                        tracing::info!(
                            generation = id.generation,
                            "declared down while alive: rejoined with a new identity"
                        );
                    }
                    OwnedNotification::Defunct => {
                        self.connected = false;
                        tracing::warn!("declared down by the cluster");
                    }
                    _ => {}
                }
            }
        }
    }

    fn signature(&self) -> ViewSignature {
        let members = self
            .foca
            .iter_membership_state()
            .map(|m| {
                let id = m.id();
                (id.addr, id.node, id.generation, liveness(m.state()))
            })
            .collect();
        (members, self.foca.identity().generation, self.left)
    }

    fn build_view(&self) -> ClusterView {
        let store = self.store.lock();
        let mut members: BTreeMap<NodeId, Member> = BTreeMap::new();
        for m in self.foca.iter_membership_state() {
            let id = m.id();
            let candidate = Member {
                addr: id.addr,
                generation: id.generation,
                liveness: liveness(m.state()),
                metadata: store.get(id.node).cloned(),
            };
            // Two addresses with the same node id (the node moved): show the
            // live one, else the newest.
            let better = |old: &Member| {
                (candidate.liveness.is_up(), candidate.generation)
                    > (old.liveness.is_up(), old.generation)
            };
            if members.get(&id.node).is_none_or(better) {
                members.insert(id.node, candidate);
            }
        }
        let me = self.foca.identity();
        members.insert(
            me.node,
            Member {
                addr: me.addr,
                generation: me.generation,
                liveness: if self.left {
                    Liveness::Down
                } else {
                    Liveness::Alive
                },
                metadata: store.get(me.node).cloned(),
            },
        );
        for (node, meta) in store.all() {
            members.entry(*node).or_insert_with(|| Member {
                addr: meta.addr,
                generation: meta.generation,
                liveness: Liveness::Down,
                metadata: Some(meta.clone()),
            });
        }
        ClusterView {
            local: me.node,
            members,
        }
    }

    /// Publishes a new view and its events if anything changed.
    fn refresh_view(&mut self, view_tx: &watch::Sender<ClusterView>) {
        if !*self.removed.borrow() && self.store.lock().is_removed() {
            tracing::error!(
                "another node removed this one from the cluster (ringdb admin removenode)"
            );
            self.removed.send_replace(true);
        }
        let signature = self.signature();
        let metadata_changed = self.store.lock().take_changed();
        if !metadata_changed && self.view_signature.as_ref() == Some(&signature) {
            return;
        }
        self.view_signature = Some(signature);
        let view = self.build_view();
        if view == self.view {
            return;
        }
        let events = view::diff(&self.view, &view);
        self.view = view.clone();
        // The view first: whoever handles an event reads the view it
        // describes. (Sent the other way round, a subscriber on another
        // thread could rebuild its ring from the view before the event, and
        // keep that ring until the next change.)
        view_tx.send_replace(view);
        for event in events {
            let _ = self.events.send(event);
        }
    }
}
