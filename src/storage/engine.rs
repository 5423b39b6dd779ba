//! The engine: commit log, memtables, SSTables and manifest on one data
//! directory, with background flush and compaction.
//!
//! Layout of a data directory:
//!
//! ```text
//! <dir>/commitlog/commitlog-<id>.log   commit-log segments
//! <dir>/tables/<id>.sst                SSTables
//! <dir>/CURRENT, <dir>/MANIFEST-<n>    the manifest (live tables, flushed log position)
//! ```
//!
//! Writes: a batch of `(key, entry)` deltas is appended to the commit log as
//! one record (durable per the sync mode), then merged into the active
//! memtable. A full memtable is frozen, the log rolls to a new segment, and
//! the flush thread writes the frozen memtable to an SSTable, records it in
//! the manifest with the log position it covers, and deletes the log
//! segments it made redundant.
//!
//! Reads merge the memtables and every SSTable that may hold the key (key
//! range, bloom filter on the partition, clustering bounds) with the model's
//! join, so the order of sources never matters.
//!
//! Isolation: a write of several entries is seen by readers of a partition
//! whole or not at all, through striped partition locks (see
//! [`super::isolation`], which also gives the order in which the engine's
//! locks are taken).

use super::commitlog::{sync_dir, CommitLog, CommitLogOptions, SegmentId, SyncMode, SyncTicket};
use super::compaction::{CompactionStrategy, TableStats};
use super::isolation::{PartitionLocks, PartitionwiseRange};
use super::iter::{hex, MemtableRange, MergeIter, Source};
use super::latency::LatencySummary;
use super::manifest::{Manifest, ManifestEdit, TableRecord};
use super::memtable::Memtable;
use super::row_cache::{CachedPartition, RowCache, RowCacheStats};
use super::sstable::{BlockCache, SsTable, SsTableIter, SsTableOptions, SsTableWriter};
use super::{Result, StorageError};
use crate::model::key::{self, KeyKind};
use crate::model::pruning::StampIdHistory;
use crate::model::{
    Entry, PartitionHeader, ResolvedRow, RowState, SystemClock, Timestamp, WallClock,
};
use parking_lot::{Condvar, Mutex, RwLock};
use std::collections::{BTreeSet, VecDeque};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Settings of one engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// When a write is acknowledged: after fsync (`Batch`) or periodically.
    pub sync_mode: SyncMode,
    /// Commit-log segment size before rolling.
    pub segment_size: u64,
    /// Memtable size that triggers a flush.
    pub memtable_bytes: usize,
    /// Frozen memtables waiting for flush before writers are slowed down.
    pub max_frozen_memtables: usize,
    /// SSTable block size and bloom filter density.
    pub sstable: SsTableOptions,
    /// Size of the cache of decoded SSTable blocks the engine creates for
    /// itself when `block_cache` is `None`.
    pub block_cache_bytes: usize,
    /// A block cache shared with other engines (all the tables of a node
    /// share one, so the node's block memory is bounded whatever the
    /// number of tables); `None`: the engine gets one of its own.
    pub block_cache: Option<Arc<BlockCache>>,
    /// Cache of whole small partitions' merged state (0: none; see
    /// [`super::row_cache`]).
    pub row_cache_bytes: usize,
    /// Which tables compaction merges.
    pub compaction: CompactionStrategy,
    /// How long tombstones are kept before compaction may purge them.
    pub gc_grace: Duration,
    /// Wall clock for TTL expiry and tombstone purging.
    pub clock: Arc<dyn WallClock>,
    /// Flush and compact in background threads (tests may turn this off and
    /// call [`Engine::flush`] and [`Engine::compact`] themselves).
    pub background: bool,
    /// Each memtable is switched at a size drawn at random between
    /// `(1 - memtable_jitter) * memtable_bytes` and `memtable_bytes` (at
    /// most 0.9; 0 switches exactly at `memtable_bytes`). Replicas that
    /// receive the same writes then do not all flush at the same moment.
    pub memtable_jitter: f64,
    /// Nice value of the background (flush and compaction) thread, so it
    /// gets less CPU than request threads while both want it, and all of
    /// it otherwise (Linux; 0 leaves the thread's priority alone).
    pub background_nice: i32,
    /// What the node knows of the cluster's stamping ids: with it,
    /// compactions that see every copy of a row prune its causal context
    /// (`model::pruning`); `None` never prunes.
    pub stamp_ids: Option<Arc<dyn StampIdHistory>>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            sync_mode: SyncMode::Batch,
            segment_size: 64 << 20,
            memtable_bytes: 64 << 20,
            max_frozen_memtables: 4,
            sstable: SsTableOptions::default(),
            block_cache_bytes: 64 << 20,
            block_cache: None,
            row_cache_bytes: super::row_cache::DEFAULT_ROW_CACHE_BYTES,
            compaction: CompactionStrategy::default(),
            gc_grace: Duration::from_secs(10 * 24 * 3600),
            clock: Arc::new(SystemClock),
            background: true,
            memtable_jitter: 0.0,
            background_nice: 0,
            stamp_ids: None,
        }
    }
}

/// Byte counters, for write amplification and monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Bytes of keys and encoded entries written by callers.
    pub ingested_bytes: u64,
    /// Bytes written to the commit log.
    pub log_bytes: u64,
    /// Bytes written to SSTables by flushes.
    pub flush_bytes: u64,
    /// Bytes written to SSTables by compactions.
    pub compaction_bytes: u64,
    /// Live SSTables.
    pub sstables: usize,
    /// Bytes of live SSTables.
    pub sstable_bytes: u64,
    /// Memtables not yet flushed (active and frozen).
    pub memtables: usize,
    /// About how many bytes those memtables hold.
    pub memtable_bytes: u64,
    /// Compactions run.
    pub compactions: u64,
    /// The row cache's hits, misses and size.
    pub row_cache: RowCacheStats,
    /// The commit log's syncs since open and how long their fdatasyncs
    /// took (what a write in `batch` mode waits for).
    pub log_syncs: LatencySummary,
    /// Rows whose causal context compaction pruned, and the context
    /// entries (vector entries and cloud dots) it removed.
    pub pruned_rows: u64,
    /// See `pruned_rows`.
    pub pruned_context_entries: u64,
}

/// One row of a partition slice.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceRow {
    /// Encoded clustering key.
    pub clustering: Vec<u8>,
    /// All versions the replica holds (for causal contexts and repair).
    pub state: RowState,
    /// What a reader sees.
    pub row: ResolvedRow,
}

/// Result of a partition slice read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartitionSlice {
    /// The partition's deletions.
    pub header: PartitionHeader,
    /// Live rows in the requested order.
    pub rows: Vec<SliceRow>,
}

/// One row of a [`Engine::read_partition_states`] slice: live or not.
#[derive(Debug, Clone, PartialEq)]
pub struct StateRow {
    /// Encoded clustering key.
    pub clustering: Vec<u8>,
    /// All versions the replica holds, as stored (deletions included).
    pub state: RowState,
    /// Whether the row reads as live here, after the partition's deletions.
    pub live: bool,
}

/// Result of [`Engine::read_partition_states`]: every row state in the
/// range, dead ones included, so a coordinator merging several replicas
/// lets a newer deletion on one shadow an older live row on another.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateSlice {
    /// The partition's deletions.
    pub header: PartitionHeader,
    /// Rows in the requested order, live and dead.
    pub rows: Vec<StateRow>,
    /// The read stopped at the limit of live rows: rows after the last one
    /// returned were not read.
    pub cut: bool,
}

struct Frozen {
    mem: Arc<Memtable>,
    /// Every record of this memtable is in a log segment below this id.
    log_before: SegmentId,
}

struct LiveTable {
    record: TableRecord,
    table: Arc<SsTable>,
}

/// An immutable view of the engine's sources, swapped on flush/compaction.
struct Snapshot {
    active: Arc<Memtable>,
    /// Oldest first.
    frozen: VecDeque<Arc<Frozen>>,
    /// Newest first.
    tables: Vec<Arc<LiveTable>>,
}

struct Inner {
    dir: PathBuf,
    /// The options the engine opened with; compaction and gc_grace there
    /// are only the initial policy (see `policy`).
    opts: EngineOptions,
    /// The table's compaction strategy and tombstone grace period, which
    /// `ALTER TABLE ... WITH` may change while the engine runs.
    policy: Mutex<TablePolicy>,
    log: CommitLog,
    manifest: Mutex<Manifest>,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Writers hold it shared across log append and memtable apply; a
    /// memtable switch holds it exclusively, so every record lands in a
    /// memtable whose log segments are still live. Taken after the row
    /// locks and the partition locks (see [`super::isolation`]).
    switch_lock: RwLock<()>,
    /// Isolates multi-entry writes from readers of their partitions.
    partition_locks: Arc<PartitionLocks>,
    flush_lock: Mutex<()>,
    compaction_lock: Mutex<()>,
    row_locks: Vec<Mutex<()>>,
    cache: Arc<BlockCache>,
    row_cache: RowCache,
    work: Mutex<bool>,
    work_ready: Condvar,
    flushed: Condvar,
    flushed_mutex: Mutex<()>,
    shutdown: AtomicBool,
    failure: Mutex<Option<String>>,
    recovery_problems: Vec<String>,
    ingested: AtomicU64,
    /// Size (approximate bytes) at which the active memtable is switched
    /// (`memtable_bytes`, less the jitter drawn for this memtable).
    switch_at: AtomicUsize,
    flush_bytes: AtomicU64,
    compaction_bytes: AtomicU64,
    compactions: AtomicU64,
    pruned_rows: AtomicU64,
    pruned_context_entries: AtomicU64,
}

/// An LSM storage engine on one data directory. Cheap to share: clone the
/// `Arc<Engine>`; dropping the last handle stops background work.
pub struct Engine {
    inner: Arc<Inner>,
    threads: Vec<JoinHandle<()>>,
}

const ROW_LOCK_STRIPES: usize = 256;

/// The per-table settings an engine can change while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePolicy {
    /// Which tables compaction merges.
    pub compaction: CompactionStrategy,
    /// How long tombstones are kept before compaction may purge them.
    pub gc_grace: Duration,
}

/// An encoded key and the entry written at it.
pub type KeyedEntry = (Vec<u8>, Entry);

/// Stamps a row's new version from its current state (see
/// [`Engine::update_partition_unsynced`]).
pub type RowStamp<'a> = Box<dyn FnOnce(&RowState) -> RowState + 'a>;

/// One change of [`Engine::update_partition_unsynced`].
pub enum PartitionUpdate<'a> {
    /// A row, by its encoded key, stamped from its current state.
    Row(Vec<u8>, RowStamp<'a>),
    /// A partition or range deletion, merged into the partition's header.
    Header(PartitionHeader),
}

impl std::fmt::Debug for PartitionUpdate<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PartitionUpdate::Row(k, _) => write!(f, "Row({})", hex(k)),
            PartitionUpdate::Header(h) => write!(f, "Header({h:?})"),
        }
    }
}

impl Engine {
    /// Opens (creating if needed) the engine in `dir` and replays its log.
    pub fn open(dir: &Path, opts: EngineOptions) -> Result<Engine> {
        let tables_dir = dir.join("tables");
        std::fs::create_dir_all(&tables_dir).map_err(|e| StorageError::io(&tables_dir, e))?;
        let (manifest, state) = Manifest::open(dir)?;
        remove_orphans(&tables_dir, |id| state.live_tables.contains_key(&id))?;
        let cache = opts
            .block_cache
            .clone()
            .unwrap_or_else(|| BlockCache::new(opts.block_cache_bytes));
        let mut tables = Vec::new();
        for record in state.live_tables.values() {
            let table = SsTable::open(&table_path(dir, record.file_id), Some(cache.clone()))?;
            tables.push(Arc::new(LiveTable {
                record: record.clone(),
                table,
            }));
        }
        tables.sort_by_key(|t| std::cmp::Reverse(t.record.file_id));
        let log_opts = CommitLogOptions {
            sync_mode: opts.sync_mode,
            segment_size: opts.segment_size,
        };
        let log_dir = dir.join("commitlog");
        let (log, replay) =
            CommitLog::open(&log_dir, SegmentId(state.log_flushed_before), log_opts)?;
        for problem in &replay.problems {
            tracing::warn!(%problem, "commit log damage found on replay");
        }
        let active = Arc::new(Memtable::new());
        for (segment, record) in &replay.records {
            match decode_record(record) {
                Ok(mutations) => {
                    for (k, entry, len) in mutations {
                        active.apply(&k, entry, len).map_err(|e| {
                            StorageError::Codec(format!("replaying key {}: {e}", hex(&k)))
                        })?;
                    }
                }
                Err(reason) => {
                    tracing::warn!(?segment, %reason, "skipping undecodable commit log record")
                }
            }
        }
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            log,
            manifest: Mutex::new(manifest),
            snapshot: RwLock::new(Arc::new(Snapshot {
                active,
                frozen: VecDeque::new(),
                tables,
            })),
            switch_lock: RwLock::new(()),
            partition_locks: Arc::new(PartitionLocks::new()),
            flush_lock: Mutex::new(()),
            compaction_lock: Mutex::new(()),
            row_locks: (0..ROW_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            cache,
            row_cache: RowCache::new(opts.row_cache_bytes),
            work: Mutex::new(false),
            work_ready: Condvar::new(),
            flushed: Condvar::new(),
            flushed_mutex: Mutex::new(()),
            shutdown: AtomicBool::new(false),
            failure: Mutex::new(None),
            recovery_problems: replay.problems.iter().map(|p| p.to_string()).collect(),
            ingested: AtomicU64::new(0),
            switch_at: AtomicUsize::new(switch_size(&opts)),
            flush_bytes: AtomicU64::new(0),
            compaction_bytes: AtomicU64::new(0),
            compactions: AtomicU64::new(0),
            pruned_rows: AtomicU64::new(0),
            pruned_context_entries: AtomicU64::new(0),
            policy: Mutex::new(TablePolicy {
                compaction: opts.compaction.clone(),
                gc_grace: opts.gc_grace,
            }),
            opts,
        });
        let mut threads = Vec::new();
        if inner.opts.background {
            let bg = inner.clone();
            let handle = std::thread::Builder::new()
                .name("ringdb-lsm".into())
                .spawn(move || bg.background_loop())
                .map_err(|e| StorageError::io(dir, e))?;
            threads.push(handle);
            inner.wake_background();
        }
        Ok(Engine { inner, threads })
    }

    /// Damage found in the commit log when the engine opened (each names
    /// the file and offset); the records around it were recovered.
    pub fn recovery_problems(&self) -> &[String] {
        &self.inner.recovery_problems
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Merges one entry into the row or header at `key`, durably.
    pub fn write(&self, key: &[u8], entry: Entry) -> Result<()> {
        self.write_batch(&[(key.to_vec(), entry)])
    }

    /// Merges several entries atomically: after a crash, all or none are
    /// there. Isolated too: a reader of one of their partitions sees all of
    /// that partition's entries or none.
    pub fn write_batch(&self, mutations: &[(Vec<u8>, Entry)]) -> Result<()> {
        let ticket = self.write_batch_unsynced(mutations)?;
        self.wait_synced(ticket)
    }

    /// [`Engine::write_batch`] without waiting for the commit log's fsync:
    /// returns once the record is written to the OS (it survives a crash of
    /// the process) and merged into the memtable, so readers on this node
    /// see it. Durable against an OS crash, in `batch` mode, only after
    /// [`Engine::wait_synced`] with the ticket returns.
    pub fn write_batch_unsynced(&self, mutations: &[(Vec<u8>, Entry)]) -> Result<SyncTicket> {
        self.inner.check_open()?;
        let mut encoded = Vec::with_capacity(mutations.len());
        for (k, entry) in mutations {
            check_key(k, entry)?;
            encoded.push(entry.encode());
        }
        let record = encode_record(
            mutations
                .iter()
                .map(|(k, _)| k.as_slice())
                .zip(encoded.iter()),
        );
        let started = std::time::Instant::now();
        self.inner.wait_for_flush_capacity();
        let ticket = {
            // Several entries go into the memtable one by one: readers of
            // their partitions wait until all are in (one entry is atomic
            // by itself). Taken before `switch_lock`, so a writer waiting
            // here for a long partition read holds up no memtable switch
            // (and through it every other writer).
            let _isolated = if mutations.len() > 1 {
                self.inner
                    .partition_locks
                    .write_all(mutations.iter().map(|(k, _)| k.as_slice()))
            } else {
                Vec::new()
            };
            let _shared = self.inner.switch_lock.read();
            let locked = started.elapsed();
            let ticket = self.inner.log.append_unsynced(&record)?;
            if started.elapsed() > Duration::from_millis(10) {
                tracing::debug!(
                    capacity_and_lock_us = locked.as_micros() as u64,
                    append_us = (started.elapsed() - locked).as_micros() as u64,
                    "slow write (timing)"
                );
            }
            let active = self.inner.snapshot.read().active.clone();
            // Cached copies of these partitions are taken out before the
            // entries go in, and put back with them joined in after
            // (unless another write overlapped: see `row_cache`).
            let uncached = self
                .inner
                .row_cache
                .begin_write(mutations.iter().map(|(k, _)| {
                    key::classify(k).map_or(k.as_slice(), |kind| &k[..kind.partition_len()])
                }));
            for ((k, entry), bytes) in mutations.iter().zip(&encoded) {
                active
                    .apply(k, entry.clone(), bytes.len())
                    .map_err(|e| StorageError::Codec(format!("key {}: {e}", hex(k))))?;
            }
            uncached.applied(mutations.iter().map(|(k, e)| (k.as_slice(), e)));
            ticket
        };
        self.inner
            .ingested
            .fetch_add(record.len() as u64, Ordering::Relaxed);
        self.inner.maybe_switch()?;
        Ok(ticket)
    }

    /// Waits until the write of `ticket` (and every earlier write) is as
    /// durable as the sync mode promises: fsynced in `batch` mode, written
    /// to the OS (already true) in `periodic` mode.
    pub fn wait_synced(&self, ticket: SyncTicket) -> Result<()> {
        self.inner.log.wait_synced(ticket)
    }

    /// [`Engine::wait_synced`] for async callers: the commit log's sync
    /// thread runs the fsync and the task is woken when it covers
    /// `ticket`, so no thread blocks per waiter.
    pub async fn wait_synced_async(&self, ticket: SyncTicket) -> Result<()> {
        self.inner.log.wait_synced_async(ticket).await
    }

    /// Whether a write now may block for long: writers are being held
    /// back for the flush to catch up, the write may switch the memtable
    /// before the commit log's next segment is made, or (without
    /// background threads) the active memtable is nearly at its size
    /// limit, so the write may flush it. False means a write only appends
    /// to the commit log (a `write` system call, no fsync), joins the
    /// memtable and perhaps switches it: cheap enough to run on an async
    /// thread.
    pub fn write_may_stall(&self) -> bool {
        let snap = self.inner.snapshot.read().clone();
        if !self.inner.opts.background {
            // The write that fills the memtable flushes it, inline. Leave
            // room for the write itself (rows are small; 1 MiB is far more
            // than one write adds).
            return snap.active.approximate_bytes().saturating_add(1 << 20)
                >= self.inner.switch_at.load(Ordering::Relaxed);
        }
        // With a background thread the write that fills the memtable only
        // switches it, which takes no file-system time once the commit
        // log's next segment is made (the background thread makes it
        // after every switch). Waiting is left: for a flush when the
        // frozen memtables are at their limit, or for the segment.
        snap.frozen.len() >= self.inner.opts.max_frozen_memtables.max(1)
            || !self.inner.log.next_segment_ready()
    }

    /// Reads the current state of a row and writes the delta `f` computes
    /// from it, atomically with respect to other `update_row` calls on the
    /// same key (a replica stamping a write). Returns the delta.
    ///
    /// The state `f` sees has the partition's deletions applied (content
    /// they shadow is removed, the causal context is whole), so a stamped
    /// version never carries forward cells that were already dead.
    pub fn update_row<F>(&self, key: &[u8], f: F) -> Result<RowState>
    where
        F: FnOnce(&RowState) -> RowState,
    {
        let (delta, ticket) = self.update_row_unsynced(key, f)?;
        self.wait_synced(ticket)?;
        Ok(delta)
    }

    /// [`Engine::update_row`] without waiting for the commit log's fsync
    /// (see [`Engine::write_batch_unsynced`]). The row's lock is held only
    /// until the delta is written to the OS and in the memtable, so the
    /// next update of the same row stamps on top of it without waiting for
    /// this one's fsync (its record comes later in the log, so it cannot be
    /// durable before this one).
    pub fn update_row_unsynced<F>(&self, key: &[u8], f: F) -> Result<(RowState, SyncTicket)>
    where
        F: FnOnce(&RowState) -> RowState,
    {
        let kind = key::classify(key).map_err(|e| StorageError::InvalidKey(e.to_string()))?;
        let KeyKind::Row { partition_len } = kind else {
            return Err(StorageError::InvalidKey(format!(
                "{} is a partition header key",
                hex(key)
            )));
        };
        let stripe = (key::token_of(key) as usize) % ROW_LOCK_STRIPES;
        let _row = self.inner.row_locks[stripe].lock();
        let mut current = match self.get(key)? {
            Some(Entry::Row(r)) => r,
            _ => RowState::default(),
        };
        if !current.versions().is_empty() {
            let header = self.read_header(&key[..partition_len])?;
            if let Some(shadow) = header.shadow_for(&key[partition_len + 1..]) {
                current = current.without_content_at_or_below(shadow);
            }
        }
        let delta = f(&current);
        let ticket = self.write_batch_unsynced(&[(key.to_vec(), Entry::Row(delta.clone()))])?;
        Ok((delta, ticket))
    }

    /// Applies several changes to one partition as one commit-log record:
    /// after a crash, all of them are there or none (a replica applying a
    /// multi-row write or a single-partition batch). Each row is stamped by
    /// its function from its current state, as in
    /// [`Engine::update_row_unsynced`], seeing the changes made before it in
    /// `updates` (an earlier deletion in the same batch shadows it, an
    /// earlier write of the same row is superseded). The locks of every row
    /// involved are held until the record is written and in the memtable.
    /// Isolated: a reader of the partition sees every change or none.
    /// Returns the deltas in order and the record's sync ticket (`None`
    /// when `updates` is empty).
    pub fn update_partition_unsynced(
        &self,
        prefix: &[u8],
        updates: Vec<PartitionUpdate<'_>>,
    ) -> Result<(Vec<KeyedEntry>, Option<SyncTicket>)> {
        if updates.is_empty() {
            return Ok((Vec::new(), None));
        }
        for u in &updates {
            if let PartitionUpdate::Row(k, _) = u {
                let kind = key::classify(k).map_err(|e| StorageError::InvalidKey(e.to_string()))?;
                match kind {
                    KeyKind::Row { partition_len } if k[..partition_len] == *prefix => {}
                    _ => {
                        return Err(StorageError::InvalidKey(format!(
                            "{} is not a row of partition {}",
                            hex(k),
                            hex(prefix)
                        )))
                    }
                }
            }
        }
        // The same stripes as `update_row_unsynced`, taken in ascending
        // order so two multi-row updates cannot deadlock.
        let mut stripes: Vec<usize> = updates
            .iter()
            .filter_map(|u| match u {
                PartitionUpdate::Row(k, _) => Some((key::token_of(k) as usize) % ROW_LOCK_STRIPES),
                PartitionUpdate::Header(_) => None,
            })
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        let _locks: Vec<_> = stripes
            .iter()
            .map(|&s| self.inner.row_locks[s].lock())
            .collect();
        let header_key = key::header_key(prefix);
        let mut stored_header: Option<PartitionHeader> = None;
        let mut batch_header = PartitionHeader::default();
        let mut written: std::collections::HashMap<Vec<u8>, RowState> =
            std::collections::HashMap::new();
        let mut out: Vec<(Vec<u8>, Entry)> = Vec::with_capacity(updates.len());
        for u in updates {
            match u {
                PartitionUpdate::Header(h) => {
                    batch_header = batch_header.join(&h);
                    out.push((header_key.clone(), Entry::Header(h)));
                }
                PartitionUpdate::Row(k, stamp) => {
                    let mut current = match self.get(&k)? {
                        Some(Entry::Row(r)) => r,
                        _ => RowState::default(),
                    };
                    if let Some(earlier) = written.get(&k) {
                        current = current.join(earlier);
                    }
                    if !current.versions().is_empty() {
                        let stored = match &stored_header {
                            Some(h) => h,
                            None => stored_header.insert(self.read_header(prefix)?),
                        };
                        let header = stored.join(&batch_header);
                        if let Some(shadow) = header.shadow_for(&k[prefix.len() + 1..]) {
                            current = current.without_content_at_or_below(shadow);
                        }
                    }
                    let delta = stamp(&current);
                    match written.get_mut(&k) {
                        Some(acc) => *acc = acc.join(&delta),
                        None => {
                            written.insert(k.clone(), delta.clone());
                        }
                    }
                    out.push((k, Entry::Row(delta)));
                }
            }
        }
        let ticket = self.write_batch_unsynced(&out)?;
        Ok((out, Some(ticket)))
    }

    /// The merged entry at `key` from every source.
    pub fn get(&self, key: &[u8]) -> Result<Option<Entry>> {
        let kind = key::classify(key).map_err(|e| StorageError::InvalidKey(e.to_string()))?;
        let partition = &key[..kind.partition_len()];
        let snap = self.inner.snapshot.read().clone();
        let mut found: Option<Entry> = None;
        let mut add = |entry: Entry| -> Result<()> {
            found = Some(match found.take() {
                None => entry,
                Some(acc) => acc
                    .join(&entry)
                    .map_err(|e| StorageError::Codec(format!("key {}: {e}", hex(key))))?,
            });
            Ok(())
        };
        if snap.active.may_contain_partition(partition) {
            if let Some(e) = snap.active.get(key) {
                add(e)?;
            }
        }
        for frozen in &snap.frozen {
            if !frozen.mem.may_contain_partition(partition) {
                continue;
            }
            if let Some(e) = frozen.mem.get(key) {
                add(e)?;
            }
        }
        for live in &snap.tables {
            let meta = live.table.meta();
            if key < meta.min_key.as_slice() || key > meta.max_key.as_slice() {
                continue;
            }
            if !live.table.may_contain_partition(partition) {
                continue;
            }
            if let Some(bytes) = live.table.get(key)? {
                add(decode_entry(&bytes, live.table.path(), key)?)?;
            }
        }
        Ok(found)
    }

    /// A streaming merge of every entry with a key within the bounds,
    /// ascending or descending. Used for partition slices, token-range
    /// scans (repair, streaming) and compaction.
    ///
    /// Each partition comes out isolated: with every multi-entry write to
    /// it or none (the scan holds no lock between items; see
    /// [`super::isolation`]). The scan as a whole is no snapshot: writes to
    /// partitions it has not reached yet may show.
    pub fn scan(&self, lower: Bound<Vec<u8>>, upper: Bound<Vec<u8>>, reverse: bool) -> MergeIter {
        self.scan_within(lower, upper, reverse, None)
    }

    /// [`Engine::scan`], skipping more SSTables when the range lies inside
    /// one partition (`partition` is its prefix): those whose bloom filter
    /// rules the partition out, and those whose clustering bounds (file-wide
    /// minimum and maximum of the key after the partition prefix) miss the
    /// range. With a partition, the caller must hold its stripe shared.
    fn scan_within(
        &self,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        reverse: bool,
        partition: Option<&[u8]>,
    ) -> MergeIter {
        let tail = |b: &Bound<Vec<u8>>, plen: usize| match b {
            Bound::Included(k) => Bound::Included(k.get(plen..).unwrap_or_default().to_vec()),
            Bound::Excluded(k) => Bound::Excluded(k.get(plen..).unwrap_or_default().to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let clustering_bounds = partition.map(|p| (tail(&lower, p.len()), tail(&upper, p.len())));
        let snap = self.inner.snapshot.read().clone();
        let mut sources: Vec<Source> = Vec::new();
        // Only the active memtable still changes: frozen ones and SSTables
        // hold whole writes. Within one partition the caller holds its
        // stripe; across partitions the source takes each one's in turn.
        // Within one partition, a memtable whose filter rules the partition
        // out is not searched at all.
        let may_hold = |mem: &Memtable| partition.is_none_or(|p| mem.may_contain_partition(p));
        if let Some(p) = partition {
            if snap.active.may_contain_partition(p) {
                sources.push(Box::new(MemtableRange::new(
                    snap.active.clone(),
                    lower.clone(),
                    upper.clone(),
                    reverse,
                )));
            }
        } else {
            sources.push(Box::new(PartitionwiseRange::new(
                snap.active.clone(),
                self.inner.partition_locks.clone(),
                lower.clone(),
                upper.clone(),
                reverse,
            )));
        }
        for frozen in snap.frozen.iter().filter(|f| may_hold(&f.mem)) {
            sources.push(Box::new(MemtableRange::new(
                frozen.mem.clone(),
                lower.clone(),
                upper.clone(),
                reverse,
            )));
        }
        for live in &snap.tables {
            let meta = live.table.meta();
            if !overlaps(&lower, &upper, &meta.min_key, &meta.max_key) {
                continue;
            }
            if let (Some(p), Some((lo, hi))) = (partition, &clustering_bounds) {
                if !live.table.may_contain_partition(p)
                    || !overlaps(lo, hi, &meta.min_clustering, &meta.max_clustering)
                {
                    continue;
                }
            }
            sources.push(table_source(
                &live.table,
                lower.clone(),
                upper.clone(),
                reverse,
            ));
        }
        MergeIter::new(sources, reverse)
    }

    /// Every entry whose token lies in `[start, end]`.
    pub fn scan_tokens(&self, start: key::Token, end: key::Token) -> MergeIter {
        let upper = match end.checked_add(1) {
            Some(next) => Bound::Excluded(next.to_be_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        self.scan(Bound::Included(start.to_be_bytes().to_vec()), upper, false)
    }

    /// Reads one row: its state and the partition header, if any, both
    /// from the same side of any multi-entry write to the partition.
    pub fn read_row(
        &self,
        prefix: &[u8],
        clustering: &[u8],
    ) -> Result<(Option<RowState>, PartitionHeader)> {
        let _isolated = self.inner.partition_locks.read(prefix);
        let header = self.read_header(prefix)?;
        let row = match self.get(&key::row_key(prefix, clustering))? {
            Some(Entry::Row(state)) => Some(state),
            _ => None,
        };
        Ok((row, header))
    }

    /// The merged header (partition and range tombstones) of a partition.
    pub fn read_header(&self, prefix: &[u8]) -> Result<PartitionHeader> {
        Ok(match self.get(&key::header_key(prefix))? {
            Some(Entry::Header(h)) => h,
            _ => PartitionHeader::default(),
        })
    }

    /// Reads live rows of one partition between two bounds on the encoded
    /// clustering key, in clustering order or reversed, up to `limit` rows.
    /// A bound is a clustering prefix: `Included(p)` takes every key that
    /// starts with `p`, `Excluded(p)` none of them. Isolated: a multi-entry
    /// write to the partition shows whole or not at all.
    pub fn read_partition(
        &self,
        prefix: &[u8],
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        reverse: bool,
        limit: Option<usize>,
    ) -> Result<PartitionSlice> {
        let _isolated = self.inner.partition_locks.read(prefix);
        let header = self.read_header(prefix)?;
        let Some((lo, hi)) = slice_bounds(prefix, lower, upper) else {
            return Ok(PartitionSlice {
                header,
                rows: vec![],
            });
        };
        let now = self.inner.opts.clock.now_millis();
        let mut rows = Vec::new();
        let limit = limit.unwrap_or(usize::MAX);
        if limit == 0 {
            return Ok(PartitionSlice { header, rows });
        }
        for item in self.scan_within(lo, hi, reverse, Some(prefix)) {
            let (k, entry) = item?;
            let Entry::Row(state) = entry else { continue };
            let clustering = k[prefix.len() + 1..].to_vec();
            let shadow = header.shadow_for(&clustering);
            if let Some(row) = state.resolve(shadow, now) {
                rows.push(SliceRow {
                    clustering,
                    state,
                    row,
                });
                if rows.len() >= limit {
                    break;
                }
            }
        }
        Ok(PartitionSlice { header, rows })
    }

    /// Like [`Engine::read_partition`], but returns every row state in the
    /// range as stored, dead rows (deleted, expired, shadowed) included,
    /// each flagged live or not; `limit` counts live rows only. This is
    /// what a replica answers a coordinator's read with. Isolated, as
    /// [`Engine::read_partition`].
    pub fn read_partition_states(
        &self,
        prefix: &[u8],
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        reverse: bool,
        limit: Option<usize>,
    ) -> Result<StateSlice> {
        let _isolated = self.inner.partition_locks.read(prefix);
        let limit = limit.unwrap_or(usize::MAX);
        let bounds = slice_bounds(prefix, lower, upper);
        let now = self.inner.opts.clock.now_millis();
        if let Some(cached) = self.inner.row_cache.get(prefix) {
            let Some((lo, hi)) = bounds else {
                return Ok(StateSlice {
                    header: cached.header.clone(),
                    ..StateSlice::default()
                });
            };
            let mut out = StateSlice {
                header: cached.header.clone(),
                rows: Vec::new(),
                cut: limit == 0,
            };
            if limit == 0 {
                return Ok(out);
            }
            let rows = cached_rows_within(&cached.rows, &lo, &hi);
            let rows: Box<dyn Iterator<Item = &(Vec<u8>, RowState)>> = if reverse {
                Box::new(rows.iter().rev())
            } else {
                Box::new(rows.iter())
            };
            let items = rows.map(|(k, state)| Ok((k.as_slice(), Entry::Row(state.clone()))));
            collect_states(&mut out, prefix, None, items, limit, now)?;
            return Ok(out);
        }
        let ticket = self.inner.row_cache.fill_ticket(prefix);
        // A forward read from the partition's first row key (a whole
        // partition, or the one row of a table without clustering columns)
        // scans from the header key instead: the header sorts right before
        // the rows, so the same seek into each memtable and SSTable finds
        // both, where a separate header lookup searched them all again.
        let header_key = key::header_key(prefix);
        let from_header = !reverse
            && limit > 0
            && matches!(&bounds, Some((Bound::Included(lo), _)) if *lo == key::rows_start(prefix));
        let header = if from_header {
            PartitionHeader::default()
        } else {
            self.read_header(prefix)?
        };
        let mut out = StateSlice {
            header,
            rows: Vec::new(),
            cut: false,
        };
        let Some((lo, hi)) = bounds else {
            return Ok(out);
        };
        if limit == 0 {
            out.cut = true;
            return Ok(out);
        }
        let whole = from_header && hi == Bound::Excluded(key::partition_end(prefix));
        let lo = if from_header {
            Bound::Included(header_key.clone())
        } else {
            lo
        };
        let items = self.scan_within(lo, hi, reverse, Some(prefix));
        let from_header = from_header.then_some(header_key.as_slice());
        collect_states(&mut out, prefix, from_header, items, limit, now)?;
        if whole && !out.cut {
            let cached = CachedPartition {
                header: out.header.clone(),
                rows: out
                    .rows
                    .iter()
                    .map(|r| (key::row_key(prefix, &r.clustering), r.state.clone()))
                    .collect(),
            };
            self.inner.row_cache.fill(prefix, ticket, cached);
        }
        Ok(out)
    }

    /// Freezes the active memtable and writes every frozen memtable to an
    /// SSTable before returning.
    pub fn flush(&self) -> Result<()> {
        self.inner.check_open()?;
        self.inner.switch_memtable(false)?;
        while self.inner.flush_one()? {}
        Ok(())
    }

    /// Runs compactions the strategy asks for until none is due.
    pub fn compact_due(&self) -> Result<usize> {
        let mut n = 0;
        while self.inner.compact_once(false)? {
            n += 1;
        }
        Ok(n)
    }

    /// Merges every SSTable into one (a major compaction), purging
    /// tombstones older than the grace period.
    pub fn compact(&self) -> Result<()> {
        self.inner.check_open()?;
        self.inner.compact_once(true)?;
        Ok(())
    }

    /// Drops every partition whose token `keep` refuses: flushes, then
    /// rewrites every SSTable into one without them (a major compaction
    /// that also purges as [`Engine::compact`] does). `ringdb admin
    /// cleanup` uses it for the ranges a node no longer replicates.
    /// Returns how many partitions were dropped. Writes made meanwhile
    /// stay, whatever their token.
    pub fn cleanup(&self, keep: &dyn Fn(key::Token) -> bool) -> Result<u64> {
        self.inner.check_open()?;
        self.flush()?;
        Ok(self.inner.compact_filtered(true, Some(keep))?.1)
    }

    /// The compaction strategy and grace period in force.
    pub fn policy(&self) -> TablePolicy {
        self.inner.policy.lock().clone()
    }

    /// Changes the compaction strategy and grace period (after `ALTER
    /// TABLE ... WITH`); the next compaction uses them, and the background
    /// worker looks for one at once.
    pub fn set_policy(&self, policy: TablePolicy) {
        let mut current = self.inner.policy.lock();
        if *current != policy {
            *current = policy;
            drop(current);
            self.inner.wake_background();
        }
    }

    /// The cache of decoded SSTable blocks this engine reads through
    /// (shared with the node's other engines when it was given one).
    pub fn block_cache(&self) -> &Arc<BlockCache> {
        &self.inner.cache
    }

    /// Byte counters and table counts.
    pub fn stats(&self) -> EngineStats {
        let snap = self.inner.snapshot.read().clone();
        EngineStats {
            ingested_bytes: self.inner.ingested.load(Ordering::Relaxed),
            log_bytes: self.inner.log.bytes_written(),
            flush_bytes: self.inner.flush_bytes.load(Ordering::Relaxed),
            compaction_bytes: self.inner.compaction_bytes.load(Ordering::Relaxed),
            sstables: snap.tables.len(),
            sstable_bytes: snap.tables.iter().map(|t| t.record.size_bytes).sum(),
            memtables: 1 + snap.frozen.len(),
            memtable_bytes: (snap.active.approximate_bytes()
                + snap
                    .frozen
                    .iter()
                    .map(|f| f.mem.approximate_bytes())
                    .sum::<usize>()) as u64,
            compactions: self.inner.compactions.load(Ordering::Relaxed),
            row_cache: self.inner.row_cache.stats(),
            log_syncs: self.inner.log.sync_latency(),
            pruned_rows: self.inner.pruned_rows.load(Ordering::Relaxed),
            pruned_context_entries: self.inner.pruned_context_entries.load(Ordering::Relaxed),
        }
    }

    /// Waits until background flushes and due compactions are done (for
    /// benchmarks that measure settled state).
    pub fn wait_idle(&self) -> Result<()> {
        while self.inner.flush_one()? {}
        self.compact_due()?;
        Ok(())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.inner.shutdown.store(true, Ordering::SeqCst);
        self.inner.wake_background();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Inner {
    fn check_open(&self) -> Result<()> {
        match &*self.failure.lock() {
            Some(reason) => Err(StorageError::Closed(reason.clone())),
            None => Ok(()),
        }
    }

    fn wake_background(&self) {
        *self.work.lock() = true;
        self.work_ready.notify_all();
    }

    fn background_loop(self: Arc<Self>) {
        lower_thread_priority(self.opts.background_nice);
        loop {
            {
                let mut work = self.work.lock();
                while !*work && !self.shutdown.load(Ordering::SeqCst) {
                    self.work_ready
                        .wait_for(&mut work, Duration::from_millis(500));
                    if !*work {
                        break;
                    }
                }
                *work = false;
            }
            if self.shutdown.load(Ordering::SeqCst) {
                return;
            }
            self.prepare_next_segment();
            let result = (|| -> Result<()> {
                while self.flush_one()? {}
                while !self.shutdown.load(Ordering::SeqCst) {
                    if !self.compact_once(false)? {
                        break;
                    }
                }
                Ok(())
            })();
            if let Err(e) = result {
                tracing::error!(error = %e, "background flush or compaction failed; engine stops accepting writes");
                *self.failure.lock() = Some(e.to_string());
                self.flushed.notify_all();
                return;
            }
        }
    }

    fn wait_for_flush_capacity(&self) {
        if !self.opts.background {
            return;
        }
        let mut guard = self.flushed_mutex.lock();
        while self.snapshot.read().frozen.len() >= self.opts.max_frozen_memtables.max(1)
            && self.failure.lock().is_none()
            && !self.shutdown.load(Ordering::SeqCst)
        {
            self.flushed
                .wait_for(&mut guard, Duration::from_millis(100));
        }
    }

    /// Makes the commit log's next segment ahead of the roll that needs it
    /// (outside the switch lock). A failure only means the roll will
    /// create the segment itself.
    fn prepare_next_segment(&self) {
        if let Err(error) = self.log.prepare_next_segment() {
            tracing::warn!(%error, "commit log: could not make the next segment ahead of time");
        }
    }

    fn maybe_switch(&self) -> Result<()> {
        let full = self.snapshot.read().active.approximate_bytes()
            >= self.switch_at.load(Ordering::Relaxed);
        if full {
            self.switch_memtable(true)?;
            if self.opts.background {
                self.wake_background();
            } else {
                while self.flush_one()? {}
            }
        }
        Ok(())
    }

    /// Freezes the active memtable (if it holds anything; with
    /// `only_if_full`, if it is still at its size limit: writers that saw
    /// it full together switch it once, not once each) and rolls the log.
    /// Writers wait only for the switch itself: the next log segment is
    /// made before the switch lock is taken, and the roll does not fsync
    /// the old segment (the next group-commit fsync covers it).
    fn switch_memtable(&self, only_if_full: bool) -> Result<()> {
        self.prepare_next_segment();
        let started = std::time::Instant::now();
        let _exclusive = self.switch_lock.write();
        let locked = started.elapsed();
        {
            let snap = self.snapshot.read();
            if snap.active.is_empty()
                || (only_if_full
                    && snap.active.approximate_bytes() < self.switch_at.load(Ordering::Relaxed))
            {
                return Ok(());
            }
        }
        let log_before = self.log.roll()?;
        tracing::debug!(
            wait_lock_us = locked.as_micros() as u64,
            roll_us = (started.elapsed() - locked).as_micros() as u64,
            "memtable switch (timing)"
        );
        // Read-modify-write under the snapshot lock: flushes and compactions
        // swap the snapshot concurrently and must not be undone.
        let mut guard = self.snapshot.write();
        let mut frozen = guard.frozen.clone();
        frozen.push_back(Arc::new(Frozen {
            mem: guard.active.clone(),
            log_before,
        }));
        *guard = Arc::new(Snapshot {
            active: Arc::new(Memtable::new()),
            frozen,
            tables: guard.tables.clone(),
        });
        self.switch_at
            .store(switch_size(&self.opts), Ordering::Relaxed);
        Ok(())
    }

    /// Flushes the oldest frozen memtable; false if there was none.
    fn flush_one(&self) -> Result<bool> {
        let _flush = self.flush_lock.lock();
        let Some(frozen) = self.snapshot.read().frozen.front().cloned() else {
            return Ok(false);
        };
        let file_id = self.manifest.lock().allocate_file_id()?;
        let path = table_path(&self.dir, file_id);
        let started = std::time::Instant::now();
        let mut writer = SsTableWriter::create(&path, &self.opts.sstable)?;
        for (k, entry) in frozen.mem.iter() {
            add_to_table(&mut writer, &k, &entry)?;
        }
        let written = started.elapsed();
        let table = self.finish_table(writer, file_id, 0)?;
        let finished = started.elapsed();
        let table_bytes = table.record.size_bytes;
        self.flush_bytes.fetch_add(table_bytes, Ordering::Relaxed);
        self.manifest.lock().apply(vec![
            ManifestEdit::AddTables(vec![table.record.clone()]),
            ManifestEdit::LogFlushedBefore(frozen.log_before.0),
        ])?;
        {
            let mut guard = self.snapshot.write();
            let mut frozen_list = guard.frozen.clone();
            frozen_list.pop_front();
            let mut tables = guard.tables.clone();
            tables.insert(0, Arc::new(table));
            *guard = Arc::new(Snapshot {
                active: guard.active.clone(),
                frozen: frozen_list,
                tables,
            });
        }
        self.log.release_before(frozen.log_before)?;
        tracing::debug!(
            bytes = table_bytes,
            write_us = written.as_micros() as u64,
            finish_us = (finished - written).as_micros() as u64,
            manifest_and_release_us = (started.elapsed() - finished).as_micros() as u64,
            "memtable flush (timing)"
        );
        self.flushed.notify_all();
        Ok(true)
    }

    fn finish_table(&self, writer: SsTableWriter, file_id: u64, tier: u32) -> Result<LiveTable> {
        let path = table_path(&self.dir, file_id);
        let meta = writer.finish()?;
        sync_dir(&self.dir.join("tables"))?;
        let table = SsTable::open(&path, Some(self.cache.clone()))?;
        Ok(LiveTable {
            record: TableRecord {
                file_id,
                level_or_tier: tier,
                size_bytes: meta.file_size,
                min_ts: meta.min_ts,
                max_ts: meta.max_ts,
            },
            table,
        })
    }

    /// Runs one compaction: all tables when `major`, else what the strategy
    /// picks. Returns whether anything was compacted.
    fn compact_once(&self, major: bool) -> Result<bool> {
        Ok(self.compact_filtered(major, None)?.0)
    }

    /// [`Inner::compact_once`], dropping the partitions whose token
    /// `keep` refuses; also returns how many it dropped.
    fn compact_filtered(
        &self,
        major: bool,
        keep: Option<&dyn Fn(key::Token) -> bool>,
    ) -> Result<(bool, u64)> {
        let _compaction = self.compaction_lock.lock();
        let policy = self.policy.lock().clone();
        let snap = self.snapshot.read().clone();
        let now_ms = self.opts.clock.now_millis();
        let inputs: Vec<Arc<LiveTable>> = if major {
            snap.tables.clone()
        } else {
            let stats: Vec<TableStats> = snap
                .tables
                .iter()
                .map(|t| TableStats {
                    id: t.record.file_id,
                    size: t.record.size_bytes,
                    max_ts_millis: Timestamp(t.record.max_ts).millis(),
                })
                .collect();
            let picked = policy.compaction.pick(&stats, now_ms);
            snap.tables
                .iter()
                .filter(|t| picked.contains(&t.record.file_id))
                .cloned()
                .collect()
        };
        if inputs.len() < 2 && !(major && inputs.len() == 1) {
            return Ok((false, 0));
        }
        // Tombstones may be purged only when no other copy of the key can
        // exist outside this compaction: no table left out of it may hold
        // the partition (its bloom filter and key range say so; both are
        // exact when they say no) and no memtable of this snapshot holds
        // the key.
        let input_ids: Vec<u64> = inputs.iter().map(|t| t.record.file_id).collect();
        let left_out: Vec<&Arc<LiveTable>> = snap
            .tables
            .iter()
            .filter(|t| !input_ids.contains(&t.record.file_id))
            .collect();
        let mut left_out_verdict: Option<(Vec<u8>, bool)> = None;
        let mut held_elsewhere = |partition: &[u8]| -> bool {
            if let Some((p, held)) = &left_out_verdict {
                if p.as_slice() == partition {
                    return *held;
                }
            }
            let end = key::partition_end(partition);
            let held = left_out.iter().any(|t| {
                let meta = t.table.meta();
                t.table.may_contain_partition(partition)
                    && meta.min_key.as_slice() < end.as_slice()
                    && meta.max_key.as_slice() >= partition
            });
            left_out_verdict = Some((partition.to_vec(), held));
            held
        };
        let grace_ms = policy.gc_grace.as_millis() as u64;
        let purge_before = Timestamp::from_millis(now_ms.saturating_sub(grace_ms));
        let memtables: Vec<&Arc<Memtable>> = std::iter::once(&snap.active)
            .chain(snap.frozen.iter().map(|f| &f.mem))
            .collect();
        let in_memtables = |k: &[u8]| memtables.iter().any(|m| m.get(k).is_some());
        // Causal contexts are pruned under the same condition as
        // tombstones: a row's other copies (in tables outside this
        // compaction, or a memtable) could hold a live version with a dot
        // the pruned context forgot, which would come back as a sibling.
        let stamp_ids = self
            .opts
            .stamp_ids
            .as_ref()
            .map(|h| (h, h.view(now_ms, now_ms.saturating_sub(grace_ms))));
        let mut unknown_ids = BTreeSet::new();
        let (mut pruned_rows, mut pruned_entries) = (0u64, 0u64);
        // A partition deletion may be dropped only if no memtable holds any
        // key of the partition: their shadowed content would come back.
        let partition_in_memtables = |prefix: &[u8]| {
            let end = key::partition_end(prefix);
            memtables.iter().any(|m| {
                m.next_after(Bound::Included(prefix), Bound::Excluded(&end))
                    .is_some()
            })
        };
        let started = std::time::Instant::now();
        let sources: Vec<Source> = inputs.iter().map(|t| compaction_source(&t.table)).collect();
        let file_id = self.manifest.lock().allocate_file_id()?;
        let mut writer =
            SsTableWriter::create(&table_path(&self.dir, file_id), &self.opts.sstable)?;
        let mut current_header: Option<(Vec<u8>, PartitionHeader)> = None;
        // The partitions whose output differs from the merged inputs
        // (something was purged): their cached copies may differ from the
        // tables now.
        let mut purged = PurgedPartitions::default();
        // The last partition dropped by `keep`, and how many were.
        let mut last_dropped: Option<Vec<u8>> = None;
        let mut dropped = 0u64;
        for item in MergeIter::new(sources, false) {
            let (k, entry) = item?;
            let kind = key::classify(&k).map_err(|e| StorageError::InvalidKey(e.to_string()))?;
            if let Some(keep) = keep {
                let token =
                    key::token_of_key(&k).map_err(|e| StorageError::InvalidKey(e.to_string()))?;
                if !keep(token) {
                    let partition = &k[..kind.partition_len()];
                    if last_dropped.as_deref() != Some(partition) {
                        dropped += 1;
                        purged.note(partition);
                        last_dropped = Some(partition.to_vec());
                    }
                    continue;
                }
            }
            let purgeable_here = !held_elsewhere(&k[..kind.partition_len()]) && !in_memtables(&k);
            match entry {
                Entry::Header(header) => {
                    let partition = k[..kind.partition_len()].to_vec();
                    let kept = if purgeable_here
                        && header_purgeable(&header, purge_before)
                        && !partition_in_memtables(&partition)
                    {
                        header.purge(purge_before)
                    } else {
                        Some(header.clone())
                    };
                    // Rows of this partition follow; while the header is
                    // being dropped, apply its deletions to them physically.
                    current_header = match &kept {
                        Some(h) if *h == header => None,
                        _ => Some((partition, header)),
                    };
                    if current_header.is_some() {
                        purged.note(&k[..kind.partition_len()]);
                    }
                    if let Some(h) = kept {
                        add_to_table(&mut writer, &k, &Entry::Header(h))?;
                    }
                }
                Entry::Row(mut state) => {
                    if let KeyKind::Row { partition_len } = kind {
                        if let Some((p, h)) = &current_header {
                            if k.starts_with(p) && p.len() == partition_len {
                                let clustering = &k[partition_len + 1..];
                                if let Some(shadow) = h.shadow_for(clustering) {
                                    state = state.without_content_at_or_below(shadow);
                                }
                            }
                        }
                    }
                    if purgeable_here && state.is_purgeable(purge_before, now_ms) {
                        purged.note(&k[..kind.partition_len()]);
                        continue;
                    }
                    if let (true, Some((_, view))) = (purgeable_here, &stamp_ids) {
                        if let Some(pruned) =
                            state.pruned_context(view, purge_before, &mut unknown_ids)
                        {
                            pruned_rows += 1;
                            pruned_entries +=
                                (state.context().size() - pruned.context().size()) as u64;
                            purged.note(&k[..kind.partition_len()]);
                            state = pruned;
                        }
                    }
                    add_to_table(&mut writer, &k, &Entry::Row(state))?;
                }
            }
        }
        let output = self.finish_table(writer, file_id, 1)?;
        if let Some((history, _)) = &stamp_ids {
            if !unknown_ids.is_empty() {
                history.notice_unknown(&unknown_ids, now_ms);
            }
        }
        if pruned_rows > 0 {
            tracing::debug!(
                rows = pruned_rows,
                entries = pruned_entries,
                "compaction pruned causal contexts"
            );
        }
        tracing::debug!(
            inputs = inputs.len(),
            input_bytes = inputs.iter().map(|t| t.record.size_bytes).sum::<u64>(),
            output_bytes = output.record.size_bytes,
            us = started.elapsed().as_micros() as u64,
            "compaction (timing)"
        );
        let empty = output.table.meta().entries == 0;
        self.compaction_bytes
            .fetch_add(output.record.size_bytes, Ordering::Relaxed);
        let mut edits = vec![ManifestEdit::RemoveTables(input_ids.clone())];
        if !empty {
            edits.insert(0, ManifestEdit::AddTables(vec![output.record.clone()]));
        }
        self.manifest.lock().apply(edits)?;
        {
            let mut guard = self.snapshot.write();
            let mut tables: Vec<Arc<LiveTable>> = guard
                .tables
                .iter()
                .filter(|t| !input_ids.contains(&t.record.file_id))
                .cloned()
                .collect();
            if !empty {
                tables.push(Arc::new(output));
                tables.sort_by_key(|t| std::cmp::Reverse(t.record.file_id));
            }
            *guard = Arc::new(Snapshot {
                active: guard.active.clone(),
                frozen: guard.frozen.clone(),
                tables,
            });
        }
        match purged.partitions {
            Some(prefixes) => self
                .row_cache
                .invalidate(prefixes.iter().map(Vec::as_slice)),
            None => self.row_cache.clear(),
        }
        for input in &inputs {
            input.table.evict_cached_blocks();
        }
        for id in input_ids {
            let path = table_path(&self.dir, id);
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not delete compacted table");
            }
        }
        if empty {
            let _ = std::fs::remove_file(table_path(&self.dir, file_id));
        }
        sync_dir(&self.dir.join("tables"))?;
        self.compactions.fetch_add(1, Ordering::Relaxed);
        self.pruned_rows.fetch_add(pruned_rows, Ordering::Relaxed);
        self.pruned_context_entries
            .fetch_add(pruned_entries, Ordering::Relaxed);
        Ok((true, dropped))
    }
}

/// The partitions a compaction purged something from, for the row cache:
/// their prefixes, or `None` once there were more than
/// [`PurgedPartitions::MOST`] (the whole cache is dropped then: the list
/// stays small, and a compaction that purged that many partitions changed
/// much of what a cache of hot partitions holds anyway).
struct PurgedPartitions {
    partitions: Option<Vec<Vec<u8>>>,
}

impl Default for PurgedPartitions {
    fn default() -> Self {
        PurgedPartitions {
            partitions: Some(Vec::new()),
        }
    }
}

impl PurgedPartitions {
    const MOST: usize = 4096;

    /// Notes partition `prefix` (compaction meets keys in order, so a
    /// partition met again is the last one noted).
    fn note(&mut self, prefix: &[u8]) {
        let Some(list) = &mut self.partitions else {
            return;
        };
        if list.last().is_some_and(|last| last.as_slice() == prefix) {
            return;
        }
        if list.len() == Self::MOST {
            self.partitions = None;
        } else {
            list.push(prefix.to_vec());
        }
    }
}

/// Lower and upper key bounds.
type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// Key bounds of the rows of a partition between two clustering prefix
/// bounds; `None` when the range is empty.
fn slice_bounds(prefix: &[u8], lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> Option<KeyRange> {
    let lo = match lower {
        Bound::Unbounded => Bound::Included(key::rows_start(prefix)),
        Bound::Included(p) => Bound::Included(key::row_key(prefix, p)),
        Bound::Excluded(p) => Bound::Included(key::prefix_successor(&key::row_key(prefix, p))?),
    };
    let hi = match upper {
        Bound::Unbounded => Bound::Excluded(key::partition_end(prefix)),
        Bound::Included(p) => match key::prefix_successor(&key::row_key(prefix, p)) {
            Some(s) => Bound::Excluded(s),
            None => Bound::Excluded(key::partition_end(prefix)),
        },
        Bound::Excluded(p) => Bound::Excluded(key::row_key(prefix, p)),
    };
    Some((lo, hi))
}

/// The rows of a cached partition (ascending by key) within a key range.
fn cached_rows_within<'a>(
    rows: &'a [(Vec<u8>, RowState)],
    lo: &Bound<Vec<u8>>,
    hi: &Bound<Vec<u8>>,
) -> &'a [(Vec<u8>, RowState)] {
    let start = match lo {
        Bound::Unbounded => 0,
        Bound::Included(k) => rows.partition_point(|(r, _)| r < k),
        Bound::Excluded(k) => rows.partition_point(|(r, _)| r <= k),
    };
    let end = match hi {
        Bound::Unbounded => rows.len(),
        Bound::Included(k) => rows.partition_point(|(r, _)| r <= k),
        Bound::Excluded(k) => rows.partition_point(|(r, _)| r < k),
    };
    &rows[start..end.max(start)]
}

/// Adds the row states of `items` (entries of one partition, in the
/// order asked) to `out`, up to `limit` live rows, as
/// [`Engine::read_partition_states`] answers them. With `header_key`, the
/// items start at the partition's header, which becomes `out.header`.
fn collect_states<K: AsRef<[u8]>>(
    out: &mut StateSlice,
    prefix: &[u8],
    header_key: Option<&[u8]>,
    items: impl IntoIterator<Item = Result<(K, Entry)>>,
    limit: usize,
    now: u64,
) -> Result<()> {
    let mut live_rows = 0;
    for item in items {
        let (k, entry) = item?;
        let k = k.as_ref();
        let state = match entry {
            Entry::Row(state) => state,
            Entry::Header(h) => {
                if header_key == Some(k) {
                    out.header = h;
                }
                continue;
            }
        };
        if live_rows >= limit {
            out.cut = true;
            break;
        }
        let clustering = k[prefix.len() + 1..].to_vec();
        let shadow = out.header.shadow_for(&clustering);
        let live = state.is_live(shadow, now);
        live_rows += usize::from(live);
        // Every clustering column encodes to at least one byte (and
        // there are no static columns), so a row with an empty
        // clustering key is one of a table without clustering columns:
        // the partition's only row. Stop at it instead of seeking past
        // it in every source: a single-row read is then one seek.
        let only_row = clustering.is_empty();
        out.rows.push(StateRow {
            clustering,
            state,
            live,
        });
        if only_row {
            break;
        }
    }
    Ok(())
}

fn header_purgeable(header: &PartitionHeader, purge_before: Timestamp) -> bool {
    header.ts_bounds().is_some_and(|(lo, _)| lo < purge_before)
}

fn table_path(dir: &Path, id: u64) -> PathBuf {
    dir.join("tables").join(format!("{id:010}.sst"))
}

fn table_source(
    table: &Arc<SsTable>,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    reverse: bool,
) -> Source {
    decoded(table, table.range(lower, upper, reverse))
}

/// Every entry of `table`, for a compaction: its blocks are not put into
/// the block cache (`SsTable::scan_uncached`).
fn compaction_source(table: &Arc<SsTable>) -> Source {
    decoded(table, table.scan_uncached())
}

/// The entries of an iterator over `table`, decoded.
fn decoded(table: &SsTable, iter: SsTableIter) -> Source {
    let path = table.path().to_path_buf();
    Box::new(iter.map(move |item| {
        let (k, v) = item?;
        let entry = decode_entry(&v, &path, &k)?;
        Ok((k, entry))
    }))
}

fn decode_entry(bytes: &[u8], path: &Path, key: &[u8]) -> Result<Entry> {
    Entry::decode(bytes).map_err(|e| StorageError::Corrupt {
        path: path.to_path_buf(),
        offset: 0,
        reason: format!("entry for key {} does not decode: {e}", hex(key)),
    })
}

fn add_to_table(writer: &mut SsTableWriter, k: &[u8], entry: &Entry) -> Result<()> {
    let kind = key::classify(k).map_err(|e| StorageError::InvalidKey(e.to_string()))?;
    let (lo, hi) = entry.ts_bounds().unwrap_or_default();
    writer.add(k, kind.partition_len(), &entry.encode(), lo.0, hi.0)
}

fn overlaps(lower: &Bound<Vec<u8>>, upper: &Bound<Vec<u8>>, min: &[u8], max: &[u8]) -> bool {
    let above_lower = match lower {
        Bound::Included(l) => max >= l.as_slice(),
        Bound::Excluded(l) => max > l.as_slice(),
        Bound::Unbounded => true,
    };
    let below_upper = match upper {
        Bound::Included(u) => min <= u.as_slice(),
        Bound::Excluded(u) => min < u.as_slice(),
        Bound::Unbounded => true,
    };
    above_lower && below_upper
}

fn check_key(k: &[u8], entry: &Entry) -> Result<()> {
    let kind = key::classify(k).map_err(|e| StorageError::InvalidKey(e.to_string()))?;
    match (kind, entry) {
        (KeyKind::Row { .. }, Entry::Row(_)) | (KeyKind::Header { .. }, Entry::Header(_)) => Ok(()),
        _ => Err(StorageError::InvalidKey(format!(
            "key {} does not match its entry kind",
            hex(k)
        ))),
    }
}

/// A commit-log record: `count u32`, then per mutation `key_len u32, key,
/// entry_len u32, entry` (little-endian lengths).
fn encode_record<'a>(mutations: impl Iterator<Item = (&'a [u8], &'a Vec<u8>)>) -> Vec<u8> {
    let mut out = vec![0u8; 4];
    let mut count = 0u32;
    for (k, v) in mutations {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v);
        count += 1;
    }
    out[..4].copy_from_slice(&count.to_le_bytes());
    out
}

fn decode_record(record: &[u8]) -> std::result::Result<Vec<(Vec<u8>, Entry, usize)>, String> {
    fn take<'a>(buf: &mut &'a [u8], n: usize) -> std::result::Result<&'a [u8], String> {
        if buf.len() < n {
            return Err(format!(
                "record ends early: wanted {n} bytes, {} left",
                buf.len()
            ));
        }
        let (head, tail) = buf.split_at(n);
        *buf = tail;
        Ok(head)
    }
    fn take_u32(buf: &mut &[u8]) -> std::result::Result<usize, String> {
        let b = take(buf, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    let mut buf = record;
    let count = take_u32(&mut buf)?;
    let mut out = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let klen = take_u32(&mut buf)?;
        let k = take(&mut buf, klen)?.to_vec();
        let vlen = take_u32(&mut buf)?;
        let v = take(&mut buf, vlen)?;
        let entry = Entry::decode(v).map_err(|e| e.to_string())?;
        check_key(&k, &entry).map_err(|e| e.to_string())?;
        out.push((k, entry, vlen));
    }
    if !buf.is_empty() {
        return Err(format!("{} trailing bytes in record", buf.len()));
    }
    Ok(out)
}

fn remove_orphans(tables_dir: &Path, live: impl Fn(u64) -> bool) -> Result<()> {
    let entries = std::fs::read_dir(tables_dir).map_err(|e| StorageError::io(tables_dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io(tables_dir, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        let id = name
            .strip_suffix(".sst")
            .and_then(|s| s.parse::<u64>().ok());
        if id.is_none_or(|id| !live(id)) {
            tracing::info!(file = %name, "removing file not in the manifest (unfinished flush or compaction)");
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// The size at which a new memtable is switched: `memtable_bytes` less a
/// random share of up to `memtable_jitter` of it.
fn switch_size(opts: &EngineOptions) -> usize {
    let jitter = opts.memtable_jitter.clamp(0.0, 0.9);
    if jitter <= 0.0 {
        return opts.memtable_bytes;
    }
    let cut = opts.memtable_bytes as f64 * jitter * rand::random::<f64>();
    opts.memtable_bytes.saturating_sub(cut as usize).max(1)
}

/// Gives the calling thread the nice value `nice` (Linux: priorities are
/// per thread); 0 or a refusal leaves it as it is.
fn lower_thread_priority(nice: i32) {
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `gettid` has no preconditions; `setpriority` on this
        // thread's own id only changes its scheduling weight.
        let rc = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
        };
        if rc != 0 {
            tracing::warn!(nice, error = %std::io::Error::last_os_error(), "could not lower the background thread's priority");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purged_partitions_are_noted_once_each_up_to_a_bound() {
        let mut purged = PurgedPartitions::default();
        for p in [b"a", b"a", b"b", b"b", b"c"] {
            purged.note(p);
        }
        assert_eq!(
            purged.partitions,
            Some(vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()])
        );
        let mut many = PurgedPartitions::default();
        for i in 0..PurgedPartitions::MOST as u32 {
            many.note(&i.to_be_bytes());
        }
        assert_eq!(
            many.partitions.as_ref().map(Vec::len),
            Some(PurgedPartitions::MOST)
        );
        many.note(b"one more");
        assert_eq!(
            many.partitions, None,
            "past the bound: the whole cache goes"
        );
        many.note(b"and another");
        assert_eq!(many.partitions, None);
    }

    #[test]
    fn switch_sizes_stay_within_the_jitter_and_vary() {
        let mut opts = EngineOptions {
            memtable_bytes: 1 << 20,
            ..EngineOptions::default()
        };
        assert_eq!(switch_size(&opts), 1 << 20, "no jitter by default");
        opts.memtable_jitter = 0.25;
        let sizes: Vec<usize> = (0..1000).map(|_| switch_size(&opts)).collect();
        let low = (1 << 20) - (1 << 18);
        assert!(sizes.iter().all(|s| (low..=1 << 20).contains(s)));
        let (min, max) = (sizes.iter().min(), sizes.iter().max());
        assert!(
            max.zip(min).is_some_and(|(a, b)| a - b > 1 << 17),
            "1000 draws spread over most of the range"
        );
        // A jitter past 0.9 is capped: a memtable is never switched empty.
        opts.memtable_jitter = 5.0;
        assert!((0..1000).all(|_| switch_size(&opts) >= (1 << 20) / 10 - 1));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_priority_is_lowered_for_the_calling_thread_only() {
        let nice_of = |tid: libc::pid_t| {
            // SAFETY: reads the nice value of a thread of this process.
            unsafe { libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t) }
        };
        // SAFETY: gettid has no preconditions.
        let main_tid = unsafe { libc::gettid() };
        let before = nice_of(main_tid);
        let lowered = std::thread::spawn(move || {
            lower_thread_priority(5);
            // SAFETY: as above.
            nice_of(unsafe { libc::gettid() })
        })
        .join()
        .unwrap();
        assert_eq!(lowered, (before + 5).min(19));
        assert_eq!(nice_of(main_tid), before, "other threads keep theirs");
    }
}
