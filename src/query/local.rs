//! [`LocalStore`]: the [`DataStore`] of a single node, over one storage
//! engine per table.
//!
//! Layout: `<data>/<keyspace>/<table>-<id hex>/` holds a table's engine
//! (opened on first use, with the compaction strategy and grace period of
//! the table's options, which it is given again when `ALTER TABLE ... WITH`
//! changes them); `<data>/node_id` holds the node's id, chosen at
//! random on first start; `<data>/stamp_actor` the id its dots carry
//! (the node id until the OS restarts: see [`super::stamp_actor`]);
//! `<data>/retired_stamp_ids` the stamping ids it knows retired, for
//! pruning (see [`super::stamp_ids`]).
//!
//! Engine calls may block (fsync, file reads, a memtable switch), so those
//! that may run in `tokio::task::spawn_blocking` when a tokio runtime is
//! present, and inline otherwise; the query layer above only awaits
//! futures. Calls that cannot block for long run on the calling task,
//! saving two thread hand-offs each: a write that will not wait for a
//! flush or switch a memtable (`Engine::write_may_stall` is false), and a
//! partition read whose file reads the page cache serves
//! (`storage::cached_read`; a read answered by the row cache or the
//! memtables reads no file at all). A read moves to a blocking thread
//! only when a file read would wait for the disk. The wait for the commit log's
//! fsync is an async notification (`Engine::wait_synced_async`), not a
//! blocked thread; in inline mode (`set_inline_io`, deterministic
//! simulation) everything runs on the calling task, as before.
//!
//! Logged batches: tables have engines (and commit logs) of their own, so
//! no single commit-log record can hold a batch across tables. A logged
//! batch spanning several partitions is first stored in the store's own
//! batch log (`<dir>/local-batchlog/`, fsynced), then applied, then
//! removed. When the store opens, every entry still there (the process died
//! half way) is applied again before anything else runs, so after a crash a
//! logged batch is either wholly there or (if the crash came before its log
//! entry was durable, and the client was not answered) not at all.
//! Applying again re-stamps the rows on this node, with the node's own
//! causal context: the new versions supersede the ones the first attempt
//! wrote, and carry the batch's timestamp, so nothing changes for readers.

use super::api::{
    check_causal_contexts, decode_partition_writes, encode_partition_writes, BoxFuture, DataStore,
    Mutation, PartitionWrite, QueryError, ScannedPartition, SliceRequest, StoredPartition,
    StoredRow, TableRef,
};
use super::stamp_ids::StampIdRegistry;
use crate::cluster::batchlog::{BatchEntry, BatchLog, BatchLogOptions};
use crate::model::key::{self, KeyKind};
use crate::model::{Consistency, Entry, HybridClock, NodeId, PartitionHeader, RowState};
use crate::schema::SchemaStore;
use crate::storage::cached_read;
use crate::storage::commitlog::SyncTicket;
use crate::storage::engine::{
    Engine, EngineOptions, EngineStats, PartitionUpdate, RowStamp, StateSlice, TablePolicy,
};
use crate::storage::sstable::BlockCacheStats;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Partitions (prefix and every row state) from
/// [`LocalStore::scan_states`], and whether the scan stopped at its limit.
pub type ScannedStates = (Vec<(Vec<u8>, StateSlice)>, bool);

/// The data of a single node: one storage engine per table.
pub struct LocalStore {
    dir: PathBuf,
    node: NodeId,
    /// The node part of the dots this store stamps (see
    /// [`super::stamp_actor`]).
    stamp_actor: NodeId,
    /// What this node knows of the cluster's stamping ids: every table's
    /// compactions prune causal contexts with it (`model::pruning`).
    stamp_ids: Arc<StampIdRegistry>,
    clock: Arc<HybridClock>,
    schema: Arc<SchemaStore>,
    template: EngineOptions,
    /// Open engines by table id, with the schema version whose table
    /// options (compaction, grace period) they were last given.
    engines: Mutex<HashMap<u128, (Arc<Engine>, u64)>>,
    inline_io: AtomicBool,
    /// The batch log of logged batches run on this store directly (opened
    /// on first use; a store under a cluster coordinator never uses it).
    batch_log: Mutex<Option<Arc<BatchLog>>>,
}

/// A node's storage counters ([`LocalStore::storage_stats`]).
#[derive(Debug, Clone, Default)]
pub struct StorageStats {
    /// The block cache the node's tables share, if they share one.
    pub block_cache: Option<BlockCacheStats>,
    /// Each open table's engine counters, by `keyspace.table`.
    pub tables: Vec<(String, EngineStats)>,
}

/// `hits` as a share of all lookups, or `-` before the first.
fn hit_rate(hits: u64, misses: u64) -> String {
    if hits + misses == 0 {
        "-".to_string()
    } else {
        format!("{:.1}%", 100.0 * hits as f64 / (hits + misses) as f64)
    }
}

impl StorageStats {
    /// Bytes of SSTables over every table: the node's load, as
    /// `nodetool status` counts it (memtables and the commit log not
    /// included).
    pub fn load_bytes(&self) -> u64 {
        self.tables.iter().map(|(_, t)| t.sstable_bytes).sum()
    }
}

impl std::fmt::Display for StorageStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
        if let Some(c) = &self.block_cache {
            writeln!(
                f,
                "Block cache: {:.1} of {:.1} MiB, hits={} misses={} hit_rate={}",
                mib(c.usage as u64),
                mib(c.capacity as u64),
                c.hits,
                c.misses,
                hit_rate(c.hits, c.misses)
            )?;
        }
        for (name, t) in &self.tables {
            writeln!(
                f,
                "Table {name}: memtables={} sstables={} sstable_bytes={} flushed_bytes={} compacted_bytes={} compactions={} row_cache_partitions={} row_cache_bytes={} row_cache_hits={} row_cache_misses={} row_cache_hit_rate={} log_syncs={} log_sync_p50_us={} log_sync_p99_us={} log_sync_max_us={} pruned_rows={} pruned_context_entries={}",
                t.memtables,
                t.sstables,
                t.sstable_bytes,
                t.flush_bytes,
                t.compaction_bytes,
                t.compactions,
                t.row_cache.partitions,
                t.row_cache.bytes,
                t.row_cache.hits,
                t.row_cache.misses,
                hit_rate(t.row_cache.hits, t.row_cache.misses),
                t.log_syncs.count,
                t.log_syncs.p50_us,
                t.log_syncs.p99_us,
                t.log_syncs.max_us,
                t.pruned_rows,
                t.pruned_context_entries
            )?;
        }
        Ok(())
    }
}

/// What [`LocalStore::flush_tables`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlushSummary {
    /// Tables flushed (every table of the schema).
    pub tables: usize,
    /// Bytes of SSTables the flushes wrote.
    pub flushed_bytes: u64,
    /// Compactions run after the flushes.
    pub compactions: u64,
    /// Live SSTables of those tables afterwards.
    pub sstables: usize,
}

impl std::fmt::Display for FlushSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "flushed {} table(s): {} bytes written to SSTables, {} compaction(s) run, {} SSTable(s) live",
            self.tables, self.flushed_bytes, self.compactions, self.sstables
        )
    }
}

/// What [`LocalStore::compact_tables`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompactSummary {
    /// Tables compacted (every table of the schema).
    pub tables: usize,
    /// Bytes the compactions wrote.
    pub compacted_bytes: u64,
    /// Live SSTables of those tables afterwards.
    pub sstables: usize,
    /// Rows whose causal context was pruned (`model::pruning`).
    pub pruned_rows: u64,
    /// Context entries those prunings removed.
    pub pruned_context_entries: u64,
}

impl std::fmt::Display for CompactSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "compacted {} table(s): {} bytes written, {} SSTable(s) live, causal contexts of {} row(s) pruned ({} entries)",
            self.tables,
            self.compacted_bytes,
            self.sstables,
            self.pruned_rows,
            self.pruned_context_entries
        )
    }
}

/// Directory of a local store's batch log, inside its data directory (a
/// keyspace name cannot contain '-', so it never collides with one).
const LOCAL_BATCH_LOG: &str = "local-batchlog";

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore")
            .field("dir", &self.dir)
            .field("node", &self.node)
            .finish()
    }
}

fn server(e: impl std::fmt::Display) -> QueryError {
    QueryError::Server(e.to_string())
}

/// Reads the node id from `<dir>/node_id`, or picks one at random and
/// writes it (atomically) on first start.
pub fn load_or_create_node_id(dir: &Path) -> Result<NodeId, QueryError> {
    std::fs::create_dir_all(dir).map_err(|e| server(format!("{}: {e}", dir.display())))?;
    let path = dir.join("node_id");
    match std::fs::read_to_string(&path) {
        Ok(text) => u64::from_str_radix(text.trim(), 16)
            .map(NodeId)
            .map_err(|_| server(format!("{}: not a node id: {text:?}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = NodeId(rand::random::<u64>());
            let tmp = dir.join("node_id.tmp");
            let write = || -> std::io::Result<()> {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(format!("{:016x}\n", id.0).as_bytes())?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                std::fs::File::open(dir)?.sync_all()
            };
            write().map_err(|e| server(format!("{}: {e}", path.display())))?;
            Ok(id)
        }
        Err(e) => Err(server(format!("{}: {e}", path.display()))),
    }
}

/// Whether `dir` is missing or holds at most a node id: no write was ever
/// stamped in it (anything else, or a directory that cannot be listed,
/// counts as used).
fn holds_nothing_stamped(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.into_iter().all(|entry| {
            entry.is_ok_and(|e| matches!(e.file_name().to_str(), Some("node_id" | "node_id.tmp")))
        }),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Runs blocking work off the async threads when a tokio runtime is there
/// (and `inline` is off).
async fn blocking<T, F>(inline: bool, f: F) -> Result<T, QueryError>
where
    F: FnOnce() -> Result<T, QueryError> + Send + 'static,
    T: Send + 'static,
{
    if inline {
        return f();
    }
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle
            .spawn_blocking(f)
            .await
            .map_err(|e| server(format!("storage task failed: {e}")))?,
        Err(_) => f(),
    }
}

/// Runs `f` on the calling task when `cheap` (memory-only work that
/// cannot block for long) or in inline mode, else like [`blocking`].
async fn maybe_blocking<T, F>(inline: bool, cheap: bool, f: F) -> Result<T, QueryError>
where
    F: FnOnce() -> Result<T, QueryError> + Send + 'static,
    T: Send + 'static,
{
    if cheap {
        return f();
    }
    blocking(inline, f).await
}

/// Runs a partition read on the calling task when every file read it
/// makes is served from the page cache (`cached_read::try_cached`; one
/// answered by the row cache or the memtables makes none), else like
/// [`blocking`]: a read abandoned for a read from disk is run again on a
/// blocking thread.
///
/// There is no check beforehand of whether the read may touch an SSTable:
/// it cost a bloom filter probe per table on every read (about 1 % of a
/// node's CPU in YCSB workload B), twice for a read that then touched
/// them, while the attempt itself costs two thread-local flags.
async fn read_maybe_blocking<T, F>(inline: bool, f: F) -> Result<T, QueryError>
where
    F: Fn() -> Result<T, QueryError> + Send + 'static,
    T: Send + 'static,
{
    if !inline {
        if let Some(result) = cached_read::try_cached(&f) {
            return result;
        }
    }
    blocking(inline, f).await
}

/// Waits for the commit log's fsync of `ticket`: on the calling thread in
/// inline mode (the simulation's single thread), else by async
/// notification.
async fn wait_synced_on(
    inline: bool,
    engine: &Engine,
    ticket: SyncTicket,
) -> Result<(), QueryError> {
    if inline {
        engine.wait_synced(ticket)?;
    } else {
        engine.wait_synced_async(ticket).await?;
    }
    Ok(())
}

impl LocalStore {
    /// A store on the data directory `dir`: node id from `<dir>/node_id`,
    /// tables' settings from `schema`, write timestamps and TTL expiry from
    /// `clock` (its wall clock is given to every engine). `template` holds
    /// the engine settings common to all tables (sync mode, sizes,
    /// background work); compaction, grace period and clock are set per
    /// table.
    pub fn open(
        dir: &Path,
        clock: Arc<HybridClock>,
        schema: Arc<SchemaStore>,
        template: EngineOptions,
    ) -> Result<LocalStore, QueryError> {
        let boot_id = super::stamp_actor::current_boot_id();
        LocalStore::open_under_boot(dir, clock, schema, template, boot_id.as_deref())
    }

    /// [`LocalStore::open`] as if the running OS had the boot id `boot_id`
    /// (`None`: unknown), which decides whether the store keeps its
    /// stamping id (see [`super::stamp_actor`]). Tests use it to stand for
    /// an OS restart.
    pub fn open_under_boot(
        dir: &Path,
        clock: Arc<HybridClock>,
        schema: Arc<SchemaStore>,
        template: EngineOptions,
        boot_id: Option<&str>,
    ) -> Result<LocalStore, QueryError> {
        // Every table's engine shares one block cache of the template's
        // size: the node's block memory does not grow with its tables.
        let mut template = template;
        if template.block_cache.is_none() {
            template.block_cache = Some(crate::storage::sstable::BlockCache::new(
                template.block_cache_bytes,
            ));
        }
        let new_directory = holds_nothing_stamped(dir);
        let node = load_or_create_node_id(dir)?;
        let stamp_actor = super::stamp_actor::load_or_renew(dir, node, boot_id, new_directory)?;
        let stamp_ids = Arc::new(StampIdRegistry::open(dir, stamp_actor));
        template.stamp_ids = Some(stamp_ids.clone());
        let store = LocalStore {
            dir: dir.to_path_buf(),
            node,
            stamp_actor,
            stamp_ids,
            clock,
            schema,
            template,
            engines: Mutex::new(HashMap::new()),
            inline_io: AtomicBool::new(false),
            batch_log: Mutex::new(None),
        };
        if dir.join(LOCAL_BATCH_LOG).exists() {
            store.replay_local_batches()?;
        }
        Ok(store)
    }

    /// The local batch log, opened (and created) on first use.
    fn local_batch_log(&self) -> Result<Arc<BatchLog>, QueryError> {
        let mut slot = self.batch_log.lock();
        if let Some(log) = slot.as_ref() {
            return Ok(log.clone());
        }
        let log = Arc::new(
            BatchLog::open(&self.dir.join(LOCAL_BATCH_LOG), BatchLogOptions::default())
                .map_err(server)?,
        );
        *slot = Some(log.clone());
        Ok(log)
    }

    /// Applies again every logged batch a previous process stored and did
    /// not finish, then removes it. A batch for a table that was dropped
    /// since is discarded (logged).
    fn replay_local_batches(&self) -> Result<(), QueryError> {
        let log = self.local_batch_log()?;
        for entry in log.due(u64::MAX, 0) {
            match decode_partition_writes(&entry.payload) {
                Ok(parts) => {
                    tracing::info!(
                        batch = entry.id,
                        partitions = parts.len(),
                        "applying a logged batch left unfinished"
                    );
                    for p in parts {
                        self.apply_logged_partition(p)?;
                    }
                }
                Err(e) => {
                    tracing::warn!(batch = entry.id, error = %e, "undecodable batch-log entry dropped")
                }
            }
            log.remove(entry.id).map_err(server)?;
        }
        Ok(())
    }

    /// Stamps and applies one partition of a logged batch (blocking).
    fn apply_logged_partition(&self, p: PartitionWrite) -> Result<(), QueryError> {
        let engine = match self.engine(&p.table) {
            Ok(e) => e,
            Err(QueryError::Invalid { rendered, .. }) => {
                tracing::warn!(
                    table = %format!("{}.{}", p.table.keyspace, p.table.table),
                    reason = %rendered,
                    "logged batch: the table was dropped; its mutations are discarded"
                );
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        apply_mutations(&engine, self.stamp_actor, &p.partition_key, p.mutations).map(|_| ())
    }

    /// Runs engine calls inline on the calling task instead of in
    /// `spawn_blocking` (deterministic simulation: one thread, paused
    /// clock, no work finishing in another thread's order).
    pub fn set_inline_io(&self, inline: bool) {
        self.inline_io.store(inline, Ordering::Relaxed);
    }

    fn inline(&self) -> bool {
        self.inline_io.load(Ordering::Relaxed)
    }

    /// Stamps mutations to one partition as its replica (see
    /// `RowState::stamp`), applies them and returns the deltas written:
    /// what the other replicas are sent.
    pub async fn stamp(
        &self,
        table: &TableRef,
        partition_key: &[u8],
        mutations: Vec<Mutation>,
    ) -> Result<Vec<(Vec<u8>, Entry)>, QueryError> {
        let (deltas, pending) = self.stamp_unsynced(table, partition_key, mutations).await?;
        self.wait_synced(pending).await?;
        Ok(deltas)
    }

    /// [`LocalStore::stamp`] without waiting for the commit log's fsync:
    /// the deltas are written to the OS (they survive a crash of this
    /// process) and visible to reads here; they are durable against an OS
    /// crash once [`LocalStore::wait_synced`] with the returned handle
    /// succeeds. A coordinator that is a replica sends the deltas to the
    /// other replicas meanwhile.
    pub async fn stamp_unsynced(
        &self,
        table: &TableRef,
        partition_key: &[u8],
        mutations: Vec<Mutation>,
    ) -> Result<(Vec<(Vec<u8>, Entry)>, PendingSync), QueryError> {
        let engine = self.engine(table)?;
        let node = self.stamp_actor;
        let pk = partition_key.to_vec();
        let pending_engine = engine.clone();
        let cheap = !engine.write_may_stall();
        let (deltas, ticket) = maybe_blocking(self.inline(), cheap, move || {
            apply_mutations(&engine, node, &pk, mutations)
        })
        .await?;
        Ok((
            deltas,
            PendingSync {
                engine: pending_engine,
                ticket,
            },
        ))
    }

    /// Waits until the writes of `pending` are durable (see
    /// [`LocalStore::stamp_unsynced`]).
    pub async fn wait_synced(&self, pending: PendingSync) -> Result<(), QueryError> {
        let Some(ticket) = pending.ticket else {
            return Ok(());
        };
        wait_synced_on(self.inline(), &pending.engine, ticket).await
    }

    /// Merges already stamped deltas (from another replica, read repair or
    /// a hint) into the table, atomically. Idempotent.
    pub async fn apply(
        &self,
        table: &TableRef,
        entries: Vec<(Vec<u8>, Entry)>,
    ) -> Result<(), QueryError> {
        if entries.is_empty() {
            return Ok(());
        }
        let engine = self.engine(table)?;
        let cheap = !engine.write_may_stall();
        let writer = engine.clone();
        let ticket = maybe_blocking(self.inline(), cheap, move || {
            writer
                .write_batch_unsynced(&entries)
                .map_err(QueryError::from)
        })
        .await?;
        wait_synced_on(self.inline(), &engine, ticket).await
    }

    /// Reads a slice of one partition with every row state in the range,
    /// dead ones included (see `Engine::read_partition_states`).
    pub async fn read_states(
        &self,
        table: &TableRef,
        partition_key: &[u8],
        slice: SliceRequest,
    ) -> Result<StateSlice, QueryError> {
        let engine = self.engine(table)?;
        let prefix = key::partition_prefix(partition_key);
        read_maybe_blocking(self.inline(), move || {
            engine
                .read_partition_states(
                    &prefix,
                    bound_ref(&slice.lower),
                    bound_ref(&slice.upper),
                    slice.reverse,
                    slice.limit,
                )
                .map_err(QueryError::from)
        })
        .await
    }

    /// Reads partitions with keys in `[lower, upper)` (key bounds, in key
    /// order), at most `max_partitions` of them (every partition met
    /// counts, even one holding only deletions), each with at most
    /// `rows_per_partition` live rows plus the dead rows met on the way.
    /// Returns the partitions (prefix and slice) and whether the scan
    /// stopped at `max_partitions` (more may follow).
    pub async fn scan_states(
        &self,
        table: &TableRef,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        max_partitions: usize,
        rows_per_partition: Option<usize>,
    ) -> Result<ScannedStates, QueryError> {
        let engine = self.engine(table)?;
        let now = self.clock.wall().now_millis();
        blocking(self.inline(), move || {
            scan_states(
                &engine,
                lower,
                upper,
                max_partitions,
                rows_per_partition,
                now,
            )
        })
        .await
    }

    /// This node's id in the cluster.
    pub fn node_id(&self) -> NodeId {
        self.node
    }

    /// The node part of the dots this store stamps: the node id until the
    /// OS restarts under the data directory (see [`super::stamp_actor`]).
    pub fn stamp_actor(&self) -> NodeId {
        self.stamp_actor
    }

    /// What this node knows of the cluster's stamping ids; the node tells
    /// it the ids its members use ([`StampIdRegistry::observe`]).
    pub fn stamp_ids(&self) -> &Arc<StampIdRegistry> {
        &self.stamp_ids
    }

    /// The hybrid clock of the node.
    pub fn clock(&self) -> &Arc<HybridClock> {
        &self.clock
    }

    fn table_dir(&self, table: &TableRef) -> PathBuf {
        self.dir
            .join(&table.keyspace)
            .join(format!("{}-{:032x}", table.table, table.id))
    }

    /// What the node's storage holds and how its caches answer, for
    /// `ringdb admin status`: the shared block cache (if the node's
    /// engines share one) and each open table's engine counters, by
    /// `keyspace.table`. Tables not read or written since start are not
    /// open and not listed.
    pub fn storage_stats(&self) -> StorageStats {
        let schema = self.schema.current();
        let engines = self.engines.lock();
        let mut tables = Vec::new();
        for keyspace in schema.keyspaces() {
            for table in schema.tables(&keyspace.name) {
                if let Some((engine, _)) = engines.get(&table.id) {
                    tables.push((
                        format!("{}.{}", keyspace.name, table.name()),
                        engine.stats(),
                    ));
                }
            }
        }
        tables.sort_by(|a, b| a.0.cmp(&b.0));
        StorageStats {
            block_cache: self.template.block_cache.as_ref().map(|c| c.stats()),
            tables,
        }
    }

    /// About how many bytes of `table` this node holds (SSTables and
    /// memtables), opening its engine if it is not open.
    pub fn table_data_bytes(&self, table: &TableRef) -> Result<u64, QueryError> {
        let stats = self.engine(table)?.stats();
        Ok(stats.sstable_bytes + stats.memtable_bytes)
    }

    /// Writes the memtables of every table to SSTables, then runs the
    /// compactions that became due, and returns when both are done (like
    /// `nodetool flush` followed by waiting for compactions to finish).
    /// Reads and writes go on meanwhile; writes that arrive during the
    /// flush may stay in the new memtables.
    pub async fn flush_tables(&self) -> Result<FlushSummary, QueryError> {
        let engines = self.schema_engines()?;
        blocking(false, move || {
            let mut summary = FlushSummary::default();
            for engine in engines {
                let before = engine.stats();
                engine.flush().map_err(server)?;
                engine.wait_idle().map_err(server)?;
                let after = engine.stats();
                summary.tables += 1;
                summary.flushed_bytes += after.flush_bytes.saturating_sub(before.flush_bytes);
                summary.compactions += after.compactions.saturating_sub(before.compactions);
                summary.sstables += after.sstables;
            }
            Ok(summary)
        })
        .await
    }

    /// The engine of every table of the current schema (opening those not
    /// open yet).
    fn schema_engines(&self) -> Result<Vec<Arc<Engine>>, QueryError> {
        let schema = self.schema.current();
        let mut engines = Vec::new();
        for keyspace in schema.keyspaces() {
            for table in schema.tables(&keyspace.name) {
                engines.push(self.engine(&super::write::table_ref(table))?);
            }
        }
        Ok(engines)
    }

    /// Flushes every table of the schema and compacts each into one
    /// SSTable (like `nodetool compact`): tombstones past their grace
    /// period are purged and causal contexts pruned wherever they may be
    /// (a major compaction sees every copy of each row on this node).
    pub async fn compact_tables(&self) -> Result<CompactSummary, QueryError> {
        let engines = self.schema_engines()?;
        blocking(false, move || {
            let mut summary = CompactSummary::default();
            for engine in engines {
                let before = engine.stats();
                engine.flush().map_err(server)?;
                engine.compact().map_err(server)?;
                let after = engine.stats();
                summary.tables += 1;
                summary.compacted_bytes += after
                    .compaction_bytes
                    .saturating_sub(before.compaction_bytes);
                summary.sstables += after.sstables;
                summary.pruned_rows += after.pruned_rows.saturating_sub(before.pruned_rows);
                summary.pruned_context_entries += after
                    .pruned_context_entries
                    .saturating_sub(before.pruned_context_entries);
            }
            Ok(summary)
        })
        .await
    }

    /// Drops from `table` every partition whose token `keep` refuses
    /// (flush, then a rewrite of its SSTables; see [`Engine::cleanup`]);
    /// how many partitions were dropped.
    pub async fn cleanup_table(
        &self,
        table: &TableRef,
        keep: Arc<dyn Fn(key::Token) -> bool + Send + Sync>,
    ) -> Result<u64, QueryError> {
        let engine = self.engine(table)?;
        blocking(false, move || engine.cleanup(&*keep).map_err(server)).await
    }

    /// The engine of a table, opened on first use. After a schema change
    /// it gets the table's current compaction strategy and grace period.
    pub fn engine(&self, table: &TableRef) -> Result<Arc<Engine>, QueryError> {
        let schema = self.schema.current();
        let mut engines = self.engines.lock();
        if let Some((engine, applied)) = engines.get_mut(&table.id) {
            if *applied != schema.version() {
                // ALTER TABLE ... WITH may have changed the options since.
                if let Some(def) = schema
                    .get_table(&table.keyspace, &table.table)
                    .filter(|t| t.id == table.id)
                {
                    engine.set_policy(TablePolicy {
                        compaction: def.storage_compaction().map_err(server)?,
                        gc_grace: def.gc_grace(),
                    });
                }
                *applied = schema.version();
            }
            return Ok(engine.clone());
        }
        let def = schema
            .get_table(&table.keyspace, &table.table)
            .filter(|t| t.id == table.id)
            .ok_or_else(|| QueryError::Invalid {
                message: format!("unconfigured table {}", table.table),
                rendered: format!(
                    "unconfigured table {}.{} (it was dropped or recreated)",
                    table.keyspace, table.table
                ),
            })?;
        let mut opts = self.template.clone();
        opts.compaction = def.storage_compaction().map_err(server)?;
        opts.gc_grace = def.gc_grace();
        opts.clock = self.clock.wall().clone();
        // Names arrive in schemas merged from peers too: never open a
        // directory outside the data directory.
        if !one_path_component(&table.keyspace) || !one_path_component(&table.table) {
            return Err(server(format!(
                "refusing to open table {:?}.{:?}: its name is not a directory name",
                table.keyspace, table.table
            )));
        }
        let dir = self.table_dir(table);
        let engine = Arc::new(Engine::open(&dir, opts)?);
        engines.insert(table.id, (engine.clone(), schema.version()));
        Ok(engine)
    }

    /// Flushes every open engine's memtables to SSTables.
    pub fn flush_all(&self) -> Result<(), QueryError> {
        let engines: Vec<Arc<Engine>> = self
            .engines
            .lock()
            .values()
            .map(|(e, _)| e.clone())
            .collect();
        for e in engines {
            e.flush()?;
        }
        Ok(())
    }

    /// Runs a major compaction on every open engine.
    pub fn compact_all(&self) -> Result<(), QueryError> {
        let engines: Vec<Arc<Engine>> = self
            .engines
            .lock()
            .values()
            .map(|(e, _)| e.clone())
            .collect();
        for e in engines {
            e.compact()?;
        }
        Ok(())
    }
}

/// Stamped deltas: `(encoded key, entry)` pairs.
type Deltas = Vec<(Vec<u8>, Entry)>;

/// Writes of [`LocalStore::stamp_unsynced`] waiting for their fsync.
#[derive(Clone)]
pub struct PendingSync {
    engine: Arc<Engine>,
    /// The last write's ticket (covers the earlier ones); `None` when
    /// nothing was written.
    ticket: Option<SyncTicket>,
}

impl std::fmt::Debug for PendingSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingSync")
            .field("ticket", &self.ticket)
            .finish_non_exhaustive()
    }
}

/// Stamps and applies mutations to one partition without waiting for the
/// fsync, as one commit-log record (all or nothing after a crash); returns
/// the deltas written, in order, and the record's sync ticket.
fn apply_mutations(
    engine: &Engine,
    node: NodeId,
    partition_key: &[u8],
    mutations: Vec<Mutation>,
) -> Result<(Deltas, Option<SyncTicket>), QueryError> {
    let prefix = key::partition_prefix(partition_key);
    check_causal_contexts(&mutations)?;
    let updates: Vec<PartitionUpdate<'_>> = mutations
        .into_iter()
        .map(|m| match m {
            Mutation::Row {
                clustering,
                write,
                context,
            } => {
                let stamp: RowStamp<'_> =
                    Box::new(move |cur: &RowState| cur.stamp(node, context.as_ref(), &write));
                PartitionUpdate::Row(key::row_key(&prefix, &clustering), stamp)
            }
            Mutation::Range(rt) => PartitionUpdate::Header(PartitionHeader {
                deleted_at: None,
                ranges: vec![rt],
            }),
            Mutation::Partition(ts) => PartitionUpdate::Header(PartitionHeader {
                deleted_at: Some(ts),
                ranges: vec![],
            }),
        })
        .collect();
    Ok(engine.update_partition_unsynced(&prefix, updates)?)
}

/// See [`LocalStore::scan_states`].
fn scan_states(
    engine: &Engine,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    max_partitions: usize,
    rows_per_partition: Option<usize>,
    now_ms: u64,
) -> Result<ScannedStates, QueryError> {
    use crate::storage::engine::StateRow;
    let per = rows_per_partition.unwrap_or(usize::MAX);
    let mut out: Vec<(Vec<u8>, StateSlice)> = Vec::new();
    let mut live_in_current = 0usize;
    if max_partitions == 0 {
        return Ok((out, true));
    }
    for item in engine.scan(lower, upper, false) {
        let (k, entry) = item?;
        let kind = key::classify(&k).map_err(server)?;
        let plen = kind.partition_len();
        let prefix = &k[..plen];
        if out.last().is_none_or(|(p, _)| p.as_slice() != prefix) {
            if out.len() >= max_partitions {
                return Ok((out, true));
            }
            out.push((prefix.to_vec(), StateSlice::default()));
            live_in_current = 0;
        }
        let Some((_, part)) = out.last_mut() else {
            continue;
        };
        match (kind, entry) {
            (KeyKind::Header { .. }, Entry::Header(h)) => part.header = part.header.join(&h),
            (KeyKind::Row { .. }, Entry::Row(state)) => {
                if live_in_current >= per {
                    part.cut = true;
                    continue;
                }
                let clustering = k[plen + 1..].to_vec();
                let shadow = part.header.shadow_for(&clustering);
                let live = state.is_live(shadow, now_ms);
                live_in_current += usize::from(live);
                part.rows.push(StateRow {
                    clustering,
                    state,
                    live,
                });
            }
            _ => return Err(server(format!("entry of the wrong kind at key {k:02x?}"))),
        }
    }
    Ok((out, false))
}

fn bound_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(v) => Bound::Included(v.as_slice()),
        Bound::Excluded(v) => Bound::Excluded(v.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn read_slice(
    engine: &Engine,
    partition_key: &[u8],
    slice: &SliceRequest,
) -> Result<StoredPartition, QueryError> {
    let prefix = key::partition_prefix(partition_key);
    let got = engine.read_partition(
        &prefix,
        bound_ref(&slice.lower),
        bound_ref(&slice.upper),
        slice.reverse,
        slice.limit,
    )?;
    Ok(StoredPartition {
        header: got.header,
        rows: got
            .rows
            .into_iter()
            .map(|r| StoredRow {
                clustering: r.clustering,
                state: r.state,
            })
            .collect(),
    })
}

fn scan_partitions(
    engine: &Engine,
    after: Option<Vec<u8>>,
    max_partitions: usize,
    rows_per_partition: Option<usize>,
    now_ms: u64,
) -> Result<Vec<ScannedPartition>, QueryError> {
    let lower = match after {
        Some(prefix) => Bound::Included(key::partition_end(&prefix)),
        None => Bound::Unbounded,
    };
    let mut out: Vec<ScannedPartition> = Vec::new();
    let mut current: Option<(Vec<u8>, StoredPartition)> = None;
    let per = rows_per_partition.unwrap_or(usize::MAX);
    let finish = |cur: Option<(Vec<u8>, StoredPartition)>, out: &mut Vec<ScannedPartition>| {
        if let Some((p, part)) = cur {
            if !part.rows.is_empty() {
                out.push((p, part));
            }
        }
    };
    for item in engine.scan(lower, Bound::Unbounded, false) {
        let (k, entry) = item?;
        let kind = key::classify(&k).map_err(server)?;
        let plen = kind.partition_len();
        let prefix = &k[..plen];
        if current.as_ref().is_none_or(|(p, _)| p.as_slice() != prefix) {
            finish(current.take(), &mut out);
            if out.len() >= max_partitions {
                return Ok(out);
            }
            current = Some((prefix.to_vec(), StoredPartition::default()));
        }
        let Some((_, part)) = current.as_mut() else {
            continue;
        };
        match (kind, entry) {
            (KeyKind::Header { .. }, Entry::Header(h)) => part.header = part.header.join(&h),
            (KeyKind::Row { .. }, Entry::Row(state)) => {
                if part.rows.len() >= per {
                    continue;
                }
                let clustering = k[plen + 1..].to_vec();
                let shadow = part.header.shadow_for(&clustering);
                if state.is_live(shadow, now_ms) {
                    part.rows.push(StoredRow { clustering, state });
                }
            }
            _ => return Err(server(format!("entry of the wrong kind at key {k:02x?}"))),
        }
    }
    finish(current.take(), &mut out);
    out.truncate(max_partitions);
    Ok(out)
}

impl DataStore for LocalStore {
    fn write<'a>(
        &'a self,
        table: &'a TableRef,
        partition_key: &'a [u8],
        mutations: Vec<Mutation>,
        _consistency: Consistency,
    ) -> BoxFuture<'a, Result<(), QueryError>> {
        Box::pin(async move {
            self.stamp(table, partition_key, mutations).await?;
            Ok(())
        })
    }

    fn read<'a>(
        &'a self,
        table: &'a TableRef,
        partition_key: &'a [u8],
        slice: SliceRequest,
        _consistency: Consistency,
    ) -> BoxFuture<'a, Result<StoredPartition, QueryError>> {
        Box::pin(async move {
            let engine = self.engine(table)?;
            let pk = partition_key.to_vec();
            read_maybe_blocking(self.inline(), move || read_slice(&engine, &pk, &slice)).await
        })
    }

    fn scan<'a>(
        &'a self,
        table: &'a TableRef,
        after: Option<Vec<u8>>,
        max_partitions: usize,
        rows_per_partition: Option<usize>,
        _consistency: Consistency,
    ) -> BoxFuture<'a, Result<Vec<ScannedPartition>, QueryError>> {
        Box::pin(async move {
            let engine = self.engine(table)?;
            let now = self.clock.wall().now_millis();
            blocking(self.inline(), move || {
                scan_partitions(&engine, after, max_partitions, rows_per_partition, now)
            })
            .await
        })
    }

    /// Stores the batch in the local batch log (fsynced), applies every
    /// partition, then removes the entry: after a crash, the next open
    /// applies what is left (see the module documentation).
    fn write_logged_batch<'a>(
        &'a self,
        partitions: Vec<PartitionWrite>,
        consistency: Consistency,
    ) -> BoxFuture<'a, Result<(), QueryError>> {
        Box::pin(async move {
            if partitions.len() < 2 {
                for p in partitions {
                    self.write(&p.table, &p.partition_key, p.mutations, consistency)
                        .await?;
                }
                return Ok(());
            }
            // Every table must be known before anything is logged.
            for p in &partitions {
                self.engine(&p.table)?;
            }
            let payload = encode_partition_writes(&partitions).map_err(server)?;
            let log = self.local_batch_log()?;
            let entry = BatchEntry {
                id: u128::from(self.clock.now().0),
                written_ms: self.clock.wall().now_millis(),
                payload,
            };
            let id = entry.id;
            let engines: Vec<Arc<Engine>> = partitions
                .iter()
                .map(|p| self.engine(&p.table))
                .collect::<Result<_, _>>()?;
            let node = self.stamp_actor;
            blocking(self.inline(), move || {
                log.store(&entry).map_err(server)?;
                for (p, engine) in partitions.into_iter().zip(engines) {
                    apply_mutations(&engine, node, &p.partition_key, p.mutations)?;
                }
                log.remove(id).map_err(server)?;
                Ok(())
            })
            .await
        })
    }

    fn truncate<'a>(&'a self, table: &'a TableRef) -> BoxFuture<'a, Result<(), QueryError>> {
        Box::pin(async move {
            // The names come from peers too, and a dropped table is no
            // longer in the schema to check them against: names that are
            // not one plain path component ("..", "/a/b") would remove a
            // directory outside the data directory.
            if !one_path_component(&table.keyspace) || !one_path_component(&table.table) {
                return Err(QueryError::Invalid {
                    message: format!("no table {} in {}", table.table, table.keyspace),
                    rendered: format!(
                        "refusing to truncate {:?}.{:?}: not a table's name",
                        table.keyspace, table.table
                    ),
                });
            }
            let engine = self.engines.lock().remove(&table.id);
            let dir = self.table_dir(table);
            blocking(self.inline(), move || {
                // The last handle stops the engine's background work before
                // its files go.
                drop(engine);
                match std::fs::remove_dir_all(&dir) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(server(format!("{}: {e}", dir.display()))),
                }
            })
            .await
        })
    }
}

/// Whether `name` joined to a directory names an entry right inside it.
fn one_path_component(name: &str) -> bool {
    let mut parts = Path::new(name).components();
    matches!(
        (parts.next(), parts.next()),
        (Some(std::path::Component::Normal(_)), None)
    ) && !name.contains('/')
}
