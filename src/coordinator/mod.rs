//! The coordinator: one request, over the replicas of the ring.
//!
//! Any node coordinates. [`ClusterStore`] implements the query layer's
//! [`crate::query::api::DataStore`], so the executor runs unchanged over the
//! cluster. Replicas serve coordinators through [`ReplicaHandler`], a
//! [`crate::net::Handler`] of [`PeerRequest`] / [`PeerResponse`] that runs
//! over the simulated network and over QUIC alike.
//!
//! # Writes
//!
//! 1. The ring gives the partition's N replicas; [`Liveness`] says which
//!    are up. If fewer than W could take the write (alive replicas, plus
//!    sloppy-quorum fallbacks), the write fails at once with
//!    `QueryError::Unavailable { required, alive }`.
//! 2. One alive replica stamps it (this node if it is one; otherwise the
//!    first alive replica, then the next if that one fails): it applies
//!    the write locally and answers with the stamped deltas. A remote
//!    stamper answers after its commit log synced, so its answer is the
//!    first acknowledgement. When this node stamps, it does not wait for
//!    its own fsync: the stamped record is written to the OS and in the
//!    memtable, the deltas go out to the other replicas at once, and this
//!    node's copy counts as an acknowledgement when its fsync returns. In
//!    `batch` mode an acknowledged write is still on W synced copies.
//! 3. The deltas (never the unstamped mutations) go to the other alive
//!    replicas (`Apply`; merging is idempotent, so retries are safe). For a
//!    replica known down, with sloppy quorum on, the next healthy node
//!    after the replicas on the ring walk gets the deltas as a durable hint
//!    (`StoreHint`); its acknowledgement counts toward W. Without a
//!    fallback (or with sloppy quorum off for the keyspace) this node
//!    stores the hint; that counts only for ANY.
//! 4. W acknowledgements answer the client; otherwise, at the deadline,
//!    `QueryError::Timeout { received }`. When replicas *fail* (answer
//!    with an error, or their connection breaks) so that too few are
//!    left to reach W, the write fails at once with
//!    `QueryError::Failure { received, failures }`, each failure naming
//!    the replica and why (Cassandra's WriteFailure); a replica that ran
//!    out of time makes it a Timeout. Replicas that fail or do not
//!    answer get a hint on this node, also after the client was answered.
//!
//! ANY with every replica down: this node stamps the write itself (a blind
//! write only; its dot counter is its HLC value, unique without stored
//! state) and keeps hints for all replicas.
//!
//! # Reads
//!
//! The request goes to the R alive replicas the consistency level needs,
//! this node first (`CoordinatorConfig::read_repair_every`: one read in N,
//! 10 by default, goes to every alive replica instead, so replicas that
//! reads did not ask are compared and repaired too). A replica that fails
//! is replaced at once by the next alive one; answers still missing after
//! `CoordinatorConfig::speculative_retry` (50 ms by default) are asked of
//! one more replica each, so a silent replica costs that delay and not the
//! read timeout. The read waits for R answers. Replicas answer with every row state in the slice,
//! deleted rows included, so a newer deletion on one replica shadows an
//! older live row on another. The answers are joined row by row (the
//! model's join) with the joined partition header. A replica that stopped
//! at the limit covers the slice only up to its last row; the merge stops
//! there, and if too few rows are live the read is asked again with twice
//! the limit (short-read protection).
//!
//! A read that gets fewer than R answers fails like a write: `Failure`
//! when replicas failed so that too few answers are left to come (it
//! fails then, without waiting for the requests still running), `Timeout`
//! when one ran out of time.
//!
//! Read repair: before answering, the merged state of every row where an
//! answering replica differs is written to it and awaited (so quorum reads
//! are monotonic); answers that come after the R-th are merged in the
//! background and their replicas repaired too.
//!
//! Digests: when R is 2 or more, the coordinator first asks one replica
//! (itself when it is one) for the slice and the others for a 128-bit
//! digest of theirs. If the first R - 1 digests match the full answer's,
//! that answer stands: no merge, no repair, one full copy over the wire.
//! A digest that differs (or a failed or cut-short full answer) falls back
//! to full data from every replica, merged and repaired as above; a late
//! digest that differs starts that full read in the background. R = 1
//! reads skip digests: there is nothing to compare.
//!
//! # Scans
//!
//! The ring is walked in token order, one span of equal replicas at a
//! time; each span is read from R replicas in pages, merged per partition
//! as above (with the same cut-off rule on partitions), repaired, and a
//! partition whose rows were cut is re-read as a partition read.
//!
//! # Hints
//!
//! Hints are stored in the node's `cluster::hints::HintStore`, replayed by
//! [`ClusterStore::replay_hints`] when membership reports the target up
//! ([`ClusterStore::on_node_up`]) and by a periodic sweep
//! ([`ClusterStore::spawn_hint_sweeper`]), one bounded batch of hint
//! segments at a time (each deleted once delivered; a failure stops the
//! replay and keeps the rest), throttled (a bounded group in flight, a
//! pause between groups), and dropped and counted by the hint store past
//! the hint window.
//!
//! # Logged batches
//!
//! A logged batch across partitions goes through [`BatchCoordinator`]: the
//! batch is stored durably in the batch log of one or two other nodes
//! first, then applied partition by partition through the write path
//! above, then removed; a node holding an entry older than the replay
//! delay replays it (read of every alive replica with blocking repair,
//! then a write with the stamping replica's own context, so the replay
//! supersedes what a first, partial attempt left instead of becoming its
//! sibling). See the `batch` module for the details.
//!
//! # Sloppy quorum per keyspace
//!
//! It is the keyspace property `sloppy_quorum` (default `true`), set by
//! `CREATE KEYSPACE ... AND sloppy_quorum = false` or `ALTER KEYSPACE`
//! and spread with the schema. The coordinator reads it from its schema
//! for every write ([`ClusterStore::sloppy_quorum`]): off, no fallbacks
//! are chosen, so only the keyspace's own alive replicas count toward W
//! (strict quorums) and the hints this node keeps count only for ANY.
//!
//! # Versions
//!
//! Stamping happens on a replica (`RowState::stamp`): a write without a
//! causal context takes the stamping replica's own context, so blind
//! writes through one replica form a chain; writes stamped by different
//! replicas during a partition become siblings, kept by every replica
//! until a write whose context has seen both supersedes them.
//!
//! # Determinism
//!
//! All waiting is tokio time, all randomness comes from outside, and a
//! node's own requests are served on the calling task: on a paused
//! current-thread runtime with [`TokioClock`], a `SimNetwork` and a local
//! store in inline mode (`LocalStore::set_inline_io`), the same seed gives
//! the same history.

mod batch;
mod clock;
mod fanout;
mod liveness;
pub mod merge;
pub mod messages;
mod replica;
mod store;
pub mod throttle;

pub use batch::{
    BatchConfig, BatchCoordinator, BatchFault, BatchReplayReport, BatchStats, FAULT_ENV,
    MAX_LOGGED_BATCH_BYTES,
};
pub use clock::TokioClock;
pub use liveness::{Liveness, ManualLiveness};
pub use messages::{PeerError, PeerRequest, PeerResponse};
pub use replica::{HashCost, HashPacing, ReplicaHandler};
pub use store::{
    CleanupReport, ClusterStore, CoordinatorConfig, CoordinatorStats, RepairProgress, RepairReport,
    RepairTuning, ReplayReport, StreamReport,
};
