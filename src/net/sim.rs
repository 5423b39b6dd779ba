//! A simulated network: many nodes in one process, deterministic.
//!
//! [`SimNetwork`] carries the messages of every [`SimTransport`] attached to
//! it. Each message is encoded with the same frame code as QUIC
//! ([`super::frame`]), so the simulation exercises the codec; then the
//! network decides, from one seeded RNG, whether it is dropped and how long
//! it is delayed, and delivers it in order of (delivery time, send order).
//!
//! Determinism: run the simulation on a current-thread tokio runtime with
//! the clock paused (`#[tokio::test(start_paused = true)]`). Delays are then
//! virtual time (a simulated minute takes no real time), and with the same
//! seed and the same node code the same messages are delivered at the same
//! virtual times in the same order: [`SimNetwork::log`] is identical from run
//! to run. All randomness comes from [`SimConfig::seed`].
//!
//! Faults, all changeable while the simulation runs:
//! - [`SimNetwork::set_drop`] / [`SimNetwork::set_link_drop`]: loss
//!   probability, global or for one direction of one link;
//! - [`SimNetwork::set_delay`]: delay range (uniform);
//! - [`SimNetwork::partition`] (both directions) and
//!   [`SimNetwork::partition_one_way`], undone by [`SimNetwork::heal`];
//! - [`SimNetwork::kill`] / [`SimNetwork::revive`]: a killed node receives
//!   nothing, and what it would send (responses included) is lost; its own
//!   `request` and `send_datagram` fail with [`NetError::Closed`].
//!
//! A lost request or response looks to the requester as in production: a
//! [`NetError::Timeout`] when its timeout expires.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use super::frame::{self, Envelope};
use super::rpc;
use super::{BoxFuture, Handler, Message, NetError, NetStats, NetStatsSnapshot, Transport};

/// Settings of a [`SimNetwork`].
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Seed of the network's RNG: same seed, same run.
    pub seed: u64,
    /// Probability that any one message is lost, in `[0, 1]`.
    pub drop_probability: f64,
    /// Smallest delay of a message.
    pub min_delay: Duration,
    /// Largest delay of a message.
    pub max_delay: Duration,
    /// Largest datagram payload ([`Transport::max_datagram_size`]); 1,200
    /// bytes by default, as on a fresh QUIC path.
    pub max_datagram_size: usize,
    /// Whether to keep the delivery log ([`SimNetwork::log`]).
    pub record_log: bool,
}

impl Default for SimConfig {
    /// Seed 0, no loss, delays of 1 to 5 ms, 1,200-byte datagrams, log on.
    fn default() -> Self {
        SimConfig {
            seed: 0,
            drop_probability: 0.0,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            max_datagram_size: 1200,
            record_log: true,
        }
    }
}

impl SimConfig {
    /// The default configuration with `seed`.
    pub fn with_seed(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            ..SimConfig::default()
        }
    }
}

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketKind {
    /// A request, with the requester's request id.
    Request {
        /// The request id.
        id: u64,
    },
    /// The response (or rejection) of request `id`.
    Response {
        /// The request id.
        id: u64,
    },
    /// A datagram of `len` bytes (header included).
    Datagram {
        /// Encoded length.
        len: usize,
    },
}

/// Why a message was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The loss probability struck.
    Random,
    /// A partition separates sender and receiver (in this direction).
    Partition,
    /// The sender is killed.
    SenderDown,
    /// The receiver is killed.
    ReceiverDown,
    /// No node has the destination address.
    UnknownNode,
}

/// What happened to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// Accepted by the network, to be delivered after `delay`.
    Sent {
        /// The delay drawn for it.
        delay: Duration,
    },
    /// Delivered to the receiver.
    Delivered,
    /// Lost.
    Dropped(DropReason),
}

/// One line of the delivery log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LogEntry {
    /// Virtual time since the network was created.
    pub at: Duration,
    /// Sender's address.
    pub from: SocketAddr,
    /// Receiver's address.
    pub to: SocketAddr,
    /// The message.
    pub kind: PacketKind,
    /// What happened to it.
    pub event: Event,
}

/// Totals of a [`SimNetwork`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SimCounters {
    /// Messages accepted for delivery.
    pub sent: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Messages lost (for any [`DropReason`]).
    pub dropped: u64,
}

type Reply = oneshot::Sender<Result<Vec<u8>, u64>>;

enum Payload {
    Request {
        frame: Vec<u8>,
        reply: Reply,
    },
    Response {
        result: Result<Vec<u8>, u64>,
        reply: Reply,
    },
    Datagram(Bytes),
}

struct Packet {
    from: SocketAddr,
    to: SocketAddr,
    kind: PacketKind,
    payload: Payload,
}

/// A node as the network sees it: frames in, frames out, types erased.
trait SimEndpoint: Send + Sync {
    fn serve(&self, peer: SocketAddr, frame: Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, u64>>;
    fn datagram(&self, peer: SocketAddr, datagram: Bytes);
}

struct NodeEndpoint<Req, Resp> {
    handler: Arc<dyn Handler<Req, Resp>>,
    stats: Arc<NetStats>,
    addr: SocketAddr,
}

impl<Req: Message, Resp: Message> SimEndpoint for NodeEndpoint<Req, Resp> {
    fn serve(&self, peer: SocketAddr, frame: Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, u64>> {
        Box::pin(rpc::serve_request(
            self.handler.clone(),
            self.stats.clone(),
            self.addr,
            peer,
            frame.into(),
        ))
    }

    fn datagram(&self, peer: SocketAddr, datagram: Bytes) {
        rpc::deliver_datagram(&*self.handler, &self.stats, peer, datagram);
    }
}

struct NodeSlot {
    endpoint: Arc<dyn SimEndpoint>,
    up: bool,
}

struct State {
    rng: StdRng,
    drop_probability: f64,
    link_drop: HashMap<(SocketAddr, SocketAddr), f64>,
    min_delay: Duration,
    max_delay: Duration,
    max_datagram_size: usize,
    blocked: HashSet<(SocketAddr, SocketAddr)>,
    nodes: HashMap<SocketAddr, NodeSlot>,
    queue: BTreeMap<(Instant, u64), Packet>,
    seq: u64,
    record_log: bool,
    log: Vec<LogEntry>,
    counters: SimCounters,
    driver_started: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Arc<Notify>,
    start: Instant,
}

/// The simulated network. Cheap to clone; clones share the network.
#[derive(Clone)]
pub struct SimNetwork {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SimNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimNetwork").finish_non_exhaustive()
    }
}

fn clamp_probability(p: f64) -> f64 {
    if p.is_nan() {
        0.0
    } else {
        p.clamp(0.0, 1.0)
    }
}

impl SimNetwork {
    /// A network with no nodes. Probabilities outside `[0, 1]` are clamped;
    /// `max_delay` below `min_delay` is raised to it.
    ///
    /// Create it inside the (paused) runtime that runs the simulation: its
    /// virtual time starts now.
    pub fn new(config: SimConfig) -> SimNetwork {
        SimNetwork {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    rng: StdRng::seed_from_u64(config.seed),
                    drop_probability: clamp_probability(config.drop_probability),
                    link_drop: HashMap::new(),
                    min_delay: config.min_delay,
                    max_delay: config.max_delay.max(config.min_delay),
                    max_datagram_size: config.max_datagram_size,
                    blocked: HashSet::new(),
                    nodes: HashMap::new(),
                    queue: BTreeMap::new(),
                    seq: 0,
                    record_log: config.record_log,
                    log: Vec::new(),
                    counters: SimCounters::default(),
                    driver_started: false,
                }),
                wake: Arc::new(Notify::new()),
                start: Instant::now(),
            }),
        }
    }

    /// Attaches a node at `addr` served by `handler`, up, and returns its
    /// transport. A node already at `addr` is replaced (a restart with new
    /// state); messages in flight to the address reach the new node.
    pub fn add_node<Req: Message, Resp: Message>(
        &self,
        addr: SocketAddr,
        handler: Arc<dyn Handler<Req, Resp>>,
    ) -> SimTransport<Req, Resp> {
        let stats = Arc::new(NetStats::default());
        let endpoint = Arc::new(NodeEndpoint {
            handler,
            stats: stats.clone(),
            addr,
        });
        self.shared
            .state
            .lock()
            .nodes
            .insert(addr, NodeSlot { endpoint, up: true });
        SimTransport {
            net: self.clone(),
            addr,
            stats,
            next_id: Arc::new(AtomicU64::new(1)),
            _types: PhantomData,
        }
    }

    /// Cuts every link between a node of `a` and a node of `b`, both ways.
    pub fn partition(&self, a: &[SocketAddr], b: &[SocketAddr]) {
        self.partition_one_way(a, b);
        self.partition_one_way(b, a);
    }

    /// Cuts the links from every node of `from` to every node of `to`, in
    /// that direction only (a request gets through the other way, but not
    /// its response).
    pub fn partition_one_way(&self, from: &[SocketAddr], to: &[SocketAddr]) {
        let mut st = self.shared.state.lock();
        for &f in from {
            for &t in to {
                if f != t {
                    st.blocked.insert((f, t));
                }
            }
        }
    }

    /// Removes all partitions.
    pub fn heal(&self) {
        self.shared.state.lock().blocked.clear();
    }

    /// Sets the loss probability of every message (clamped to `[0, 1]`).
    pub fn set_drop(&self, probability: f64) {
        self.shared.state.lock().drop_probability = clamp_probability(probability);
    }

    /// Sets the loss probability of messages from `from` to `to` (that
    /// direction only), overriding the global one; `None` removes the
    /// override.
    pub fn set_link_drop(&self, from: SocketAddr, to: SocketAddr, probability: Option<f64>) {
        let mut st = self.shared.state.lock();
        match probability {
            Some(p) => st.link_drop.insert((from, to), clamp_probability(p)),
            None => st.link_drop.remove(&(from, to)),
        };
    }

    /// Sets the delay range of messages (`max` below `min` is raised to it).
    pub fn set_delay(&self, min: Duration, max: Duration) {
        let mut st = self.shared.state.lock();
        st.min_delay = min;
        st.max_delay = max.max(min);
    }

    /// Kills the node at `addr`: it receives nothing and sends nothing until
    /// [`SimNetwork::revive`]. Unknown addresses are ignored.
    pub fn kill(&self, addr: SocketAddr) {
        if let Some(node) = self.shared.state.lock().nodes.get_mut(&addr) {
            node.up = false;
        }
    }

    /// Brings a killed node back (with the state its handler kept).
    pub fn revive(&self, addr: SocketAddr) {
        if let Some(node) = self.shared.state.lock().nodes.get_mut(&addr) {
            node.up = true;
        }
    }

    /// Whether a node is attached at `addr` and up.
    pub fn is_up(&self, addr: SocketAddr) -> bool {
        self.shared
            .state
            .lock()
            .nodes
            .get(&addr)
            .is_some_and(|n| n.up)
    }

    /// Virtual time since the network was created.
    pub fn elapsed(&self) -> Duration {
        Instant::now().saturating_duration_since(self.shared.start)
    }

    /// A copy of the delivery log (empty if [`SimConfig::record_log`] is
    /// off).
    pub fn log(&self) -> Vec<LogEntry> {
        self.shared.state.lock().log.clone()
    }

    /// Empties the delivery log.
    pub fn clear_log(&self) {
        self.shared.state.lock().log.clear();
    }

    /// Totals of sent, delivered and lost messages.
    pub fn counters(&self) -> SimCounters {
        self.shared.state.lock().counters
    }

    fn max_datagram_size(&self) -> usize {
        self.shared.state.lock().max_datagram_size
    }

    /// Takes a message from `from`: drops it or queues it for delivery.
    fn send(&self, packet: Packet) {
        let mut st = self.shared.state.lock();
        let now = Instant::now();
        let at = now.saturating_duration_since(self.shared.start);
        let (from, to, kind) = (packet.from, packet.to, packet.kind);
        let drop_reason = if !st.nodes.get(&from).is_some_and(|n| n.up) {
            Some(DropReason::SenderDown)
        } else if !st.nodes.contains_key(&to) {
            Some(DropReason::UnknownNode)
        } else if st.blocked.contains(&(from, to)) {
            Some(DropReason::Partition)
        } else {
            let p = st
                .link_drop
                .get(&(from, to))
                .copied()
                .unwrap_or(st.drop_probability);
            (p > 0.0 && st.rng.random_bool(p)).then_some(DropReason::Random)
        };
        if let Some(reason) = drop_reason {
            st.counters.dropped += 1;
            st.record(at, from, to, kind, Event::Dropped(reason));
            // The reply sender inside is dropped: the requester waits out
            // its timeout, as it would for a lost packet.
            return;
        }
        let (min, max) = (st.min_delay, st.max_delay);
        let delay = if max > min {
            let lo = u64::try_from(min.as_nanos()).unwrap_or(u64::MAX);
            let hi = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
            Duration::from_nanos(st.rng.random_range(lo..=hi))
        } else {
            min
        };
        st.counters.sent += 1;
        st.record(at, from, to, kind, Event::Sent { delay });
        let seq = st.seq;
        st.seq += 1;
        st.queue.insert((now + delay, seq), packet);
        let start_driver = !st.driver_started;
        st.driver_started = true;
        drop(st);
        if start_driver {
            tokio::spawn(drive(
                Arc::downgrade(&self.shared),
                self.shared.wake.clone(),
            ));
        }
        self.shared.wake.notify_one();
    }

    /// Delivers one due message.
    fn deliver(&self, packet: Packet) {
        let mut st = self.shared.state.lock();
        let at = Instant::now().saturating_duration_since(self.shared.start);
        let (from, to, kind) = (packet.from, packet.to, packet.kind);
        let endpoint = match st.nodes.get(&to) {
            Some(node) if node.up => node.endpoint.clone(),
            _ => {
                st.counters.dropped += 1;
                st.record(at, from, to, kind, Event::Dropped(DropReason::ReceiverDown));
                return;
            }
        };
        st.counters.delivered += 1;
        st.record(at, from, to, kind, Event::Delivered);
        drop(st);
        match packet.payload {
            Payload::Request { frame, reply } => {
                let PacketKind::Request { id } = kind else {
                    return;
                };
                let net = self.clone();
                tokio::spawn(async move {
                    let result = endpoint.serve(from, frame).await;
                    net.send(Packet {
                        from: to,
                        to: from,
                        kind: PacketKind::Response { id },
                        payload: Payload::Response { result, reply },
                    });
                });
            }
            Payload::Response { result, reply } => {
                let _ = reply.send(result);
            }
            Payload::Datagram(bytes) => endpoint.datagram(from, bytes),
        }
    }
}

impl State {
    fn record(
        &mut self,
        at: Duration,
        from: SocketAddr,
        to: SocketAddr,
        kind: PacketKind,
        event: Event,
    ) {
        if self.record_log {
            self.log.push(LogEntry {
                at,
                from,
                to,
                kind,
                event,
            });
        }
    }
}

/// The network's delivery task: delivers due messages in (time, send
/// order), then sleeps until the next one is due or a new one is sent.
async fn drive(shared: Weak<Shared>, wake: Arc<Notify>) {
    loop {
        // Hold the network only while working, not while waiting.
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let net = SimNetwork { shared: strong };
        let now = Instant::now();
        let (due, next) = {
            let mut st = net.shared.state.lock();
            let mut due = Vec::new();
            while let Some(entry) = st.queue.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                due.push(entry.remove());
            }
            (due, st.queue.keys().next().map(|k| k.0))
        };
        let delivered_any = !due.is_empty();
        for packet in due {
            net.deliver(packet);
        }
        drop(net);
        if delivered_any {
            // Let the tasks just woken run before looking again.
            tokio::task::yield_now().await;
            continue;
        }
        // A message sent meanwhile left a permit: no wake-up is missed.
        match next {
            Some(at) => {
                tokio::select! {
                    // Fixed polling order: no randomness outside the seed.
                    biased;
                    _ = tokio::time::sleep_until(at) => {}
                    _ = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

/// A node's transport on a [`SimNetwork`]. Cheap to clone.
pub struct SimTransport<Req, Resp> {
    net: SimNetwork,
    addr: SocketAddr,
    stats: Arc<NetStats>,
    next_id: Arc<AtomicU64>,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> Clone for SimTransport<Req, Resp> {
    fn clone(&self) -> Self {
        SimTransport {
            net: self.net.clone(),
            addr: self.addr,
            stats: self.stats.clone(),
            next_id: self.next_id.clone(),
            _types: PhantomData,
        }
    }
}

impl<Req, Resp> SimTransport<Req, Resp> {
    /// The network this transport is attached to.
    pub fn network(&self) -> &SimNetwork {
        &self.net
    }
}

impl<Req: Message, Resp: Message> Transport<Req, Resp> for SimTransport<Req, Resp> {
    fn request(
        &self,
        to: SocketAddr,
        req: Req,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Resp, NetError>> {
        let this = self.clone();
        Box::pin(async move {
            this.stats.inc_requests_out();
            let result = this.request_inner(to, req, timeout).await;
            if result.is_err() {
                this.stats.inc_requests_failed();
            }
            result
        })
    }

    fn send_datagram(
        &self,
        to: SocketAddr,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<(), NetError>> {
        let this = self.clone();
        Box::pin(async move {
            let result = this.datagram_inner(to, &payload);
            match result {
                Ok(()) => this.stats.inc_datagrams_out(),
                Err(_) => this.stats.inc_datagrams_dropped(),
            }
            result
        })
    }

    fn max_datagram_size(&self, _to: SocketAddr) -> Option<usize> {
        Some(self.net.max_datagram_size())
    }

    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn stats(&self) -> NetStatsSnapshot {
        self.stats.snapshot()
    }

    /// Kills this node on the network.
    fn shutdown(&self) -> BoxFuture<'static, ()> {
        self.net.kill(self.addr);
        Box::pin(async {})
    }
}

impl<Req: Message, Resp: Message> SimTransport<Req, Resp> {
    async fn request_inner(
        &self,
        to: SocketAddr,
        req: Req,
        timeout: Duration,
    ) -> Result<Resp, NetError> {
        if !self.net.is_up(self.addr) {
            return Err(NetError::Closed);
        }
        let deadline = Instant::now() + timeout;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = frame::encode_frame(&Envelope::new(
            id,
            frame::deadline_ms(timeout),
            self.addr,
            req,
        ))?;
        let (reply, response) = oneshot::channel();
        self.net.send(Packet {
            from: self.addr,
            to,
            kind: PacketKind::Request { id },
            payload: Payload::Request { frame, reply },
        });
        match tokio::time::timeout_at(deadline, response).await {
            Ok(Ok(Ok(frame))) => rpc::read_response(&self.stats, to, id, &frame),
            Ok(Ok(Err(code))) => Err(NetError::from_stream_code(to, code, timeout)),
            Ok(Err(_lost)) => {
                tokio::time::sleep_until(deadline).await;
                Err(NetError::Timeout { peer: to, timeout })
            }
            Err(_) => Err(NetError::Timeout { peer: to, timeout }),
        }
    }

    fn datagram_inner(&self, to: SocketAddr, payload: &[u8]) -> Result<(), NetError> {
        if !self.net.is_up(self.addr) {
            return Err(NetError::Closed);
        }
        let max = self.net.max_datagram_size();
        if payload.len() > max {
            return Err(NetError::TooLarge {
                size: payload.len(),
                max,
            });
        }
        let datagram = frame::encode_datagram(self.addr, payload)?;
        self.net.send(Packet {
            from: self.addr,
            to,
            kind: PacketKind::Datagram {
                len: datagram.len(),
            },
            payload: Payload::Datagram(datagram),
        });
        Ok(())
    }
}
