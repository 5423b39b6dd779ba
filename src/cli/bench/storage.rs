//! `ringdb bench storage`: the storage engine beside fjall and RocksDB's
//! db_bench, each figure from the same run, with ringdb's ratio to each.
//!
//! Sections (see `docs/performance.md` for what each figure means):
//!
//! 1. Key-value shape, as db_bench: `--ops` operations of 16-byte keys and
//!    100-byte values, one writer: fillseq, fillrandom, overwrite,
//!    readrandom, readmissing. Writes are handed to the OS but not fsynced
//!    per write: ringdb `periodic`, fjall `PersistMode::Buffer`, db_bench's
//!    default `--sync=0`.
//! 2. Durable writes: ringdb `batch` mode, fjall `PersistMode::SyncData`
//!    after each write, db_bench `--sync=1`; with 1 and N writer threads.
//! 3. Wide rows: partitions of 100 rows with 8-byte clustering keys; whole
//!    partition slices ascending and descending.
//! 4. Write amplification of fillrandom + overwrite after flushing and
//!    letting compaction settle.

use super::db_bench;
use super::fjall_peer::FjallStore;
use super::report::{probe_machine, PeerStatus, Report, Row, Section, Settings};
use super::ringdb_peer::{self, RingdbStore};
use super::ui::Ui;
use super::workload::{
    process_write_bytes, raw_key, run_phase, CpuShare, KeyOrder, PhaseResult, PhaseSpec, Values,
    KEY_BYTES, VALUE_BYTES,
};
use anyhow::Context;
use ringdb::storage::commitlog::SyncMode;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Arguments of `ringdb bench storage`.
#[derive(clap::Args, Debug, Clone)]
pub struct StorageArgs {
    /// Operations per key-value phase (db_bench's --num) [default: 2000000,
    /// or 200000 with --quick].
    #[arg(long)]
    pub ops: Option<u64>,
    /// A small run (200k operations, 1,000 wide partitions, 1 s durable
    /// phases) that finishes in well under a minute.
    #[arg(long)]
    pub quick: bool,
    /// Where benchmark data goes (a fresh subdirectory is made and removed)
    /// [default: the system temp dir unless it is tmpfs, else ./bench-data].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Peers not to run, comma-separated: rocksdb (db_bench), fjall.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub skip_peers: Vec<PeerName>,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also draw the ratios as an SVG bar chart to this file.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Wide-row partitions [default: 10000, or 1000 with --quick].
    #[arg(long)]
    pub partitions: Option<u64>,
    /// Rows per wide partition.
    #[arg(long, default_value_t = 100)]
    pub rows_per_partition: u64,
    /// Concurrent writers of the group-commit figure.
    #[arg(long, default_value_t = 32)]
    pub durable_writers: usize,
    /// Seconds each durable-write phase runs [default: 10, or 1 with --quick].
    #[arg(long)]
    pub durable_secs: Option<f64>,
    /// ringdb's periodic fsync interval in the key-value shape, in ms.
    #[arg(long, default_value_t = 1000)]
    pub periodic_sync_ms: u64,
    /// The db_bench binary [default: /usr/bin/db_bench, else db_bench on PATH].
    #[arg(long)]
    pub db_bench: Option<PathBuf>,
    /// Seed of every key choice.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Run nothing: print the tables of a report saved with --json (and
    /// write --svg / --json from it).
    #[arg(long, value_name = "FILE")]
    pub from_json: Option<PathBuf>,
}

/// A peer that `--skip-peers` can name.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerName {
    /// RocksDB's db_bench.
    #[value(alias = "db_bench", alias = "db-bench")]
    Rocksdb,
    /// The fjall crate.
    Fjall,
}

/// Resolved sizes of a run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Operations per key-value phase.
    pub ops: u64,
    /// Wide-row partitions.
    pub partitions: u64,
    /// Rows per wide partition.
    pub rows: u64,
    /// Writers of the group-commit figure.
    pub durable_writers: usize,
    /// Time limit of each durable phase.
    pub durable_time: Duration,
    /// Most operations of a durable phase.
    pub durable_max_ops: u64,
    /// ringdb's periodic fsync interval.
    pub periodic: Duration,
    /// Seed.
    pub seed: u64,
    /// Why fjall does not run, if it does not.
    pub skip_fjall: Option<String>,
    /// db_bench, or why it does not run.
    pub db_bench: Result<PathBuf, String>,
}

impl Config {
    /// Sizes from the arguments.
    pub fn from_args(args: &StorageArgs) -> anyhow::Result<Config> {
        let ops = args
            .ops
            .unwrap_or(if args.quick { 200_000 } else { 2_000_000 });
        anyhow::ensure!(ops > 0, "--ops must be positive");
        anyhow::ensure!(
            args.rows_per_partition > 0,
            "--rows-per-partition must be positive"
        );
        anyhow::ensure!(
            args.durable_writers > 0,
            "--durable-writers must be positive"
        );
        anyhow::ensure!(
            args.periodic_sync_ms > 0,
            "--periodic-sync-ms must be positive"
        );
        let durable_secs = args
            .durable_secs
            .unwrap_or(if args.quick { 1.0 } else { 10.0 });
        anyhow::ensure!(
            durable_secs.is_finite() && durable_secs > 0.0,
            "--durable-secs must be positive"
        );
        let skip_rocksdb = args.skip_peers.contains(&PeerName::Rocksdb);
        Ok(Config {
            ops,
            partitions: args
                .partitions
                .unwrap_or(if args.quick { 1_000 } else { 10_000 })
                .max(1),
            rows: args.rows_per_partition,
            durable_writers: args.durable_writers,
            durable_time: Duration::from_secs_f64(durable_secs),
            durable_max_ops: ops.max(100),
            periodic: Duration::from_millis(args.periodic_sync_ms),
            seed: args.seed,
            skip_fjall: args
                .skip_peers
                .contains(&PeerName::Fjall)
                .then(|| "--skip-peers fjall".to_string()),
            db_bench: if skip_rocksdb {
                Err("--skip-peers rocksdb".into())
            } else {
                db_bench::locate(args.db_bench.as_deref())
            },
        })
    }
}

/// Runs the benchmark, prints the tables and writes the requested files.
pub fn run(args: StorageArgs) -> anyhow::Result<()> {
    if let Some(saved) = &args.from_json {
        let report = Report::read_json(saved)?;
        return output(&report, &args, &Ui::stderr());
    }
    let config = Config::from_args(&args)?;
    let base = match &args.dir {
        Some(d) => d.clone(),
        None => default_base_dir(),
    };
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let data = tempfile::Builder::new()
        .prefix("ringdb-bench-")
        .tempdir_in(&base)
        .with_context(|| format!("making a data directory under {}", base.display()))?;
    let ui = Ui::stderr();
    ui.log(format!(
        "ringdb bench storage: {} ops per phase, data in {}",
        config.ops,
        data.path().display()
    ));
    let report = run_benchmark(&config, data.path(), &ui)?;
    output(&report, &args, &ui)
}

/// Prints the tables and writes the files `--json` and `--svg` ask for.
fn output(report: &Report, args: &StorageArgs, ui: &Ui) -> anyhow::Result<()> {
    print!("{}", report.render_text());
    if let Some(path) = &args.json {
        report.write_json(path)?;
        ui.log(format!("wrote {}", path.display()));
    }
    if let Some(path) = &args.svg {
        let svg = report.render_svg()?;
        std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
        ui.log(format!("wrote {}", path.display()));
    }
    Ok(())
}

/// The system temp dir, unless it is a tmpfs (memory, not disk): then
/// `./bench-data`.
fn default_base_dir() -> PathBuf {
    let tmp = std::env::temp_dir();
    let on_tmpfs = super::report::filesystem_of(&tmp)
        .is_some_and(|fs| fs.split_whitespace().nth(1) == Some("tmpfs"));
    if on_tmpfs {
        PathBuf::from("bench-data")
    } else {
        tmp
    }
}

/// Key-value figures of one engine.
#[derive(Debug, Clone, Default)]
struct KvFigures {
    fillseq: Option<PhaseResult>,
    fillrandom: Option<PhaseResult>,
    overwrite: Option<PhaseResult>,
    readrandom: Option<PhaseResult>,
    readmissing: Option<PhaseResult>,
    /// ringdb only: fillrandom through `Engine::write` of pre-stamped deltas.
    raw_fillrandom: Option<PhaseResult>,
    /// Bytes written over fillrandom + overwrite + settle (/proc/self/io).
    write_bytes: Option<u64>,
    /// ringdb only: log + flush + compaction bytes from its counters.
    engine_bytes: Option<u64>,
    /// Tables and sizes after settling.
    shape: Option<String>,
}

/// The operations every in-process engine offers the key-value phases.
trait KvTarget {
    fn put(&self, key: &[u8; KEY_BYTES], value: &[u8]) -> anyhow::Result<()>;
    fn get(&self, key: &[u8; KEY_BYTES]) -> anyhow::Result<bool>;
    fn settle(&self) -> anyhow::Result<()>;
    /// Bytes the engine says it wrote (log, flush, compaction), if it counts.
    fn engine_bytes(&self) -> Option<u64>;
    /// The engine's shape after `writes` writes (tables, sizes), for notes.
    fn describe(&self, writes: u64) -> String;
}

impl KvTarget for RingdbStore {
    fn put(&self, key: &[u8; KEY_BYTES], value: &[u8]) -> anyhow::Result<()> {
        self.put_row(&ringdb_peer::kv_row_key(key)?, value)
    }
    fn get(&self, key: &[u8; KEY_BYTES]) -> anyhow::Result<bool> {
        self.get_row(&ringdb_peer::kv_row_key(key)?)
    }
    fn settle(&self) -> anyhow::Result<()> {
        RingdbStore::settle(self)
    }
    fn engine_bytes(&self) -> Option<u64> {
        let s = self.stats();
        Some(s.log_bytes + s.flush_bytes + s.compaction_bytes)
    }
    fn describe(&self, writes: u64) -> String {
        RingdbStore::describe(self, writes)
    }
}

impl KvTarget for FjallStore {
    fn put(&self, key: &[u8; KEY_BYTES], value: &[u8]) -> anyhow::Result<()> {
        FjallStore::put(self, key, value)
    }
    fn get(&self, key: &[u8; KEY_BYTES]) -> anyhow::Result<bool> {
        FjallStore::get(self, key)
    }
    fn settle(&self) -> anyhow::Result<()> {
        FjallStore::settle(self)
    }
    fn engine_bytes(&self) -> Option<u64> {
        None
    }
    fn describe(&self, _writes: u64) -> String {
        FjallStore::describe(self)
    }
}

/// The operations every in-process engine offers the wide-row phases; keys
/// are ringdb's encoded row keys in every engine.
trait WideTarget {
    fn put_wide(&self, key: &[u8], value: &[u8]) -> anyhow::Result<()>;
    /// Reads up to `limit` rows of the partition with this prefix.
    fn slice_partition(&self, prefix: &[u8], reverse: bool, limit: usize) -> anyhow::Result<usize>;
    fn settle_wide(&self) -> anyhow::Result<()>;
}

impl WideTarget for RingdbStore {
    fn put_wide(&self, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
        self.put_row(key, value)
    }
    fn slice_partition(&self, prefix: &[u8], reverse: bool, limit: usize) -> anyhow::Result<usize> {
        self.slice(prefix, reverse, limit)
    }
    fn settle_wide(&self) -> anyhow::Result<()> {
        self.settle()
    }
}

impl WideTarget for FjallStore {
    fn put_wide(&self, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
        self.put(key, value)
    }
    fn slice_partition(&self, prefix: &[u8], reverse: bool, limit: usize) -> anyhow::Result<usize> {
        self.slice(&ringdb_peer::rows_prefix(prefix), reverse, limit)
    }
    fn settle_wide(&self) -> anyhow::Result<()> {
        self.settle()
    }
}

struct Bench<'a> {
    config: &'a Config,
    dir: &'a Path,
    ui: &'a Ui,
    values: Values,
    notes: Vec<String>,
    commands: Vec<String>,
    db_bench_version: Option<String>,
}

impl Bench<'_> {
    fn spec(
        &self,
        label: String,
        threads: usize,
        ops: u64,
        order: KeyOrder,
        seed: u64,
    ) -> PhaseSpec {
        PhaseSpec {
            label,
            threads,
            ops,
            order,
            key_space: self.config.ops,
            seed: self.config.seed.wrapping_add(seed),
            time_limit: None,
        }
    }

    fn fresh_dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(name);
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing {}", path.display()))?;
        }
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(path)
    }

    fn remove(&self, path: &Path) {
        if let Err(e) = std::fs::remove_dir_all(path) {
            self.ui
                .log(format!("could not remove {}: {e}", path.display()));
        }
    }

    fn log_phase(&self, label: &str, r: &PhaseResult) {
        let found = r
            .found
            .map(|f| format!(" ({f} of {} found)", r.ops))
            .unwrap_or_default();
        self.ui.log(format!(
            "{label:>34}: {:>12.0} ops/s  {} ops in {:.2} s{found}",
            r.ops_per_sec(),
            r.ops,
            r.secs
        ));
    }

    fn phase<F>(&self, spec: &PhaseSpec, reads: bool, op: F) -> anyhow::Result<PhaseResult>
    where
        F: Fn(u64, u64) -> anyhow::Result<bool> + Sync,
    {
        let r = run_phase(self.ui, spec, reads, op)?;
        self.log_phase(&spec.label, &r);
        Ok(r)
    }

    fn settle(&self, label: &str, f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
        let spinner = self
            .ui
            .spinner(&format!("{label}: flush and wait for compaction"));
        let started = std::time::Instant::now();
        let r = f();
        spinner.finish_and_clear();
        self.ui.log(format!(
            "{label:>34}: settled in {:.1} s",
            started.elapsed().as_secs_f64()
        ));
        r
    }

    /// The key-value phases on one in-process engine.
    fn kv_in_process<T: KvTarget + Sync>(
        &self,
        name: &str,
        open: impl Fn(&Path) -> anyhow::Result<T>,
    ) -> anyhow::Result<KvFigures> {
        let ops = self.config.ops;
        let values = &self.values;
        let mut fig = KvFigures::default();
        let seq_dir = self.fresh_dir(&format!("{name}-fillseq"))?;
        {
            let store = open(&seq_dir)?;
            let spec = self.spec(format!("{name} fillseq"), 1, ops, KeyOrder::Sequential, 0);
            fig.fillseq = Some(self.phase(&spec, false, |id, i| {
                store.put(&raw_key(id), values.get(i)).map(|_| true)
            })?);
        }
        self.remove(&seq_dir);

        let dir = self.fresh_dir(&format!("{name}-kv"))?;
        let io_before = process_write_bytes().ok();
        let store = open(&dir)?;
        let engine_before = store.engine_bytes();
        let spec = self.spec(format!("{name} fillrandom"), 1, ops, KeyOrder::Random, 1);
        fig.fillrandom = Some(self.phase(&spec, false, |id, i| {
            store.put(&raw_key(id), values.get(i)).map(|_| true)
        })?);
        let spec = self.spec(format!("{name} overwrite"), 1, ops, KeyOrder::Random, 2);
        fig.overwrite = Some(self.phase(&spec, false, |id, i| {
            store.put(&raw_key(id), values.get(i + ops)).map(|_| true)
        })?);
        self.settle(name, || store.settle())?;
        let io_after = process_write_bytes().ok();
        fig.write_bytes = io_before.zip(io_after).map(|(b, a)| a.saturating_sub(b));
        fig.engine_bytes = store
            .engine_bytes()
            .zip(engine_before)
            .map(|(a, b)| a.saturating_sub(b));
        let shape = format!(
            "{name} after fillrandom + overwrite, settled: {}",
            store.describe(2 * ops)
        );
        self.ui.log(&shape);
        fig.shape = Some(shape);
        let spec = self.spec(format!("{name} readrandom"), 1, ops, KeyOrder::Random, 3);
        fig.readrandom = Some(self.phase(&spec, true, |id, _| store.get(&raw_key(id)))?);
        let spec = self.spec(format!("{name} readmissing"), 1, ops, KeyOrder::Missing, 4);
        fig.readmissing = Some(self.phase(&spec, true, |id, _| store.get(&raw_key(id)))?);
        drop(store);
        self.remove(&dir);
        Ok(fig)
    }

    fn kv_ringdb(&self) -> anyhow::Result<KvFigures> {
        let periodic = SyncMode::Periodic {
            interval: self.config.periodic,
        };
        let mut fig = self.kv_in_process("ringdb", |d| RingdbStore::open(d, periodic))?;
        let dir = self.fresh_dir("ringdb-raw")?;
        {
            let store = RingdbStore::open(&dir, periodic)?;
            let values = &self.values;
            let spec = self.spec(
                "ringdb fillrandom (raw delta)".into(),
                1,
                self.config.ops,
                KeyOrder::Random,
                1,
            );
            fig.raw_fillrandom = Some(self.phase(&spec, false, |id, i| {
                let key = ringdb_peer::kv_row_key(&raw_key(id))?;
                store.put_row_raw_delta(&key, values.get(i)).map(|_| true)
            })?);
        }
        self.remove(&dir);
        Ok(fig)
    }

    fn kv_db_bench(&mut self, bin: &Path) -> anyhow::Result<KvFigures> {
        let ops = self.config.ops;
        let seed = self.config.seed;
        let mut fig = KvFigures::default();
        let seq_dir = self.fresh_dir("db_bench-fillseq")?;
        let mut args = db_bench::common_args(&seq_dir, ops, seed);
        args.push("--benchmarks=fillseq".into());
        let run = self.db_bench(bin, "fillseq", &args)?;
        fig.fillseq = Some(db_result(run.figure("fillseq")?));
        self.remove(&seq_dir);

        let dir = self.fresh_dir("db_bench-kv")?;
        let mut args = db_bench::common_args(&dir, ops, seed);
        args.push("--benchmarks=fillrandom,overwrite,flush,waitforcompaction".into());
        let run = self.db_bench(bin, "fillrandom,overwrite,flush,waitforcompaction", &args)?;
        fig.fillrandom = Some(db_result(run.figure("fillrandom")?));
        fig.overwrite = Some(db_result(run.figure("overwrite")?));
        fig.write_bytes = run.write_bytes;

        // db_bench seeds each benchmark from --seed and its position in the
        // invocation: a new seed keeps readrandom from replaying exactly
        // the keys fillrandom wrote.
        let mut args = db_bench::common_args(&dir, ops, seed.wrapping_add(1000));
        args.push("--use_existing_db=1".into());
        args.push("--benchmarks=readrandom,readmissing".into());
        let run = self.db_bench(bin, "readrandom,readmissing", &args)?;
        fig.readrandom = Some(db_result(run.figure("readrandom")?));
        fig.readmissing = Some(db_result(run.figure("readmissing")?));
        self.remove(&dir);
        Ok(fig)
    }

    fn db_bench(
        &mut self,
        bin: &Path,
        label: &str,
        args: &[String],
    ) -> anyhow::Result<db_bench::Run> {
        let run = db_bench::run(self.ui, bin, label, args)?;
        self.commands.push(run.command.clone());
        if self.db_bench_version.is_none() {
            self.db_bench_version = run.version.clone();
        }
        for f in &run.figures {
            self.ui.log(format!(
                "{:>34}: {:>12.0} ops/s",
                format!("db_bench {}", f.name),
                f.ops_per_sec
            ));
        }
        Ok(run)
    }

    /// Durable writes of one in-process engine with `threads` writers.
    fn durable_in_process<T: KvTarget + Sync>(
        &self,
        name: &str,
        threads: usize,
        open: impl Fn(&Path) -> anyhow::Result<T>,
    ) -> anyhow::Result<PhaseResult> {
        let dir = self.fresh_dir(&format!("{name}-durable-{threads}"))?;
        let r = {
            let store = open(&dir)?;
            let values = &self.values;
            let mut spec = self.spec(
                format!("{name} durable x{threads}"),
                threads,
                self.config.durable_max_ops,
                KeyOrder::Random,
                5,
            );
            spec.time_limit = Some(self.config.durable_time);
            self.phase(&spec, false, |id, i| {
                store.put(&raw_key(id), values.get(i)).map(|_| true)
            })?
        };
        self.remove(&dir);
        Ok(r)
    }

    fn durable_db_bench(&mut self, bin: &Path, threads: usize) -> anyhow::Result<PhaseResult> {
        let dir = self.fresh_dir(&format!("db_bench-durable-{threads}"))?;
        let mut args = db_bench::common_args(&dir, self.config.ops, self.config.seed);
        args.extend([
            "--benchmarks=fillrandom".to_string(),
            "--sync=1".into(),
            format!("--threads={threads}"),
            format!(
                "--duration={}",
                self.config.durable_time.as_secs_f64().ceil().max(1.0)
            ),
            "--ops_between_duration_checks=1".into(),
        ]);
        let run = self.db_bench(
            bin,
            &format!("fillrandom --sync=1 --threads={threads}"),
            &args,
        )?;
        let r = db_result(run.figure("fillrandom")?);
        self.remove(&dir);
        Ok(r)
    }

    /// Loads the wide partitions into one in-process engine and reads
    /// slices: (load, ascending, descending).
    fn wide_in_process<T: WideTarget + Sync>(
        &mut self,
        name: &str,
        store: &T,
    ) -> anyhow::Result<(PhaseResult, PhaseResult, PhaseResult)> {
        let (partitions, rows) = (self.config.partitions, self.config.rows);
        let prefixes: Vec<Vec<u8>> = (0..partitions)
            .map(|p| ringdb_peer::partition_prefix(&raw_key(p)))
            .collect::<anyhow::Result<_>>()?;
        let values = &self.values;
        let mut spec = self.spec(
            format!("{name} wide load"),
            1,
            partitions * rows,
            KeyOrder::Sequential,
            6,
        );
        spec.key_space = partitions * rows;
        // Rows arrive interleaved over partitions, as they would over time.
        let load = self.phase(&spec, false, |i, _| {
            let (p, r) = (i % partitions, i / partitions);
            let key = ringdb_peer::wide_row_key(&prefixes[p as usize], r)?;
            store.put_wide(&key, values.get(i)).map(|_| true)
        })?;
        self.settle(name, || store.settle_wide())?;
        let mut results = Vec::new();
        for (reverse, dir) in [(false, "asc"), (true, "desc")] {
            let mut spec = self.spec(
                format!("{name} slice {dir}"),
                1,
                partitions,
                KeyOrder::Random,
                7,
            );
            spec.key_space = partitions;
            let limit = rows as usize;
            let r = self.phase(&spec, true, |p, _| {
                Ok(store.slice_partition(&prefixes[p as usize], reverse, limit)? == limit)
            })?;
            if r.found != Some(r.ops) {
                self.notes.push(format!(
                    "{name} slice {dir}: {} of {} slices returned {rows} rows",
                    r.found.unwrap_or(0),
                    r.ops
                ));
            }
            results.push(r);
        }
        Ok((load, results[0], results[1]))
    }

    fn wide_db_bench(
        &mut self,
        bin: &Path,
    ) -> anyhow::Result<(PhaseResult, PhaseResult, PhaseResult)> {
        let (partitions, rows) = (self.config.partitions, self.config.rows);
        let dir = self.fresh_dir("db_bench-wide")?;
        let num = partitions * rows;
        let seed = self.config.seed;
        let mut args = db_bench::common_args(&dir, num, seed);
        args.push("--benchmarks=fillseq,flush,waitforcompaction".into());
        let load = db_result(
            self.db_bench(bin, "wide load (fillseq)", &args)?
                .figure("fillseq")?,
        );
        let mut out = Vec::new();
        for reverse in [false, true] {
            let mut args = db_bench::common_args(&dir, num, seed);
            args.extend([
                "--use_existing_db=1".to_string(),
                "--benchmarks=seekrandom".into(),
                format!("--seek_nexts={}", rows.saturating_sub(1)),
                format!("--reads={partitions}"),
                format!("--reverse_iterator={reverse}"),
            ]);
            let label = format!(
                "seekrandom --seek_nexts={} --reverse_iterator={reverse}",
                rows - 1
            );
            out.push(db_result(
                self.db_bench(bin, &label, &args)?.figure("seekrandom")?,
            ));
        }
        self.remove(&dir);
        Ok((load, out[0], out[1]))
    }
}

fn db_result(f: &db_bench::Figure) -> PhaseResult {
    let ops = f.operations.unwrap_or(0);
    PhaseResult {
        ops,
        secs: if f.ops_per_sec > 0.0 {
            ops as f64 / f.ops_per_sec
        } else {
            0.0
        },
        found: f.found.map(|(found, _)| found),
    }
}

fn rate(r: &Option<PhaseResult>) -> Option<f64> {
    r.as_ref().map(PhaseResult::ops_per_sec)
}

fn found_note(r: &Option<PhaseResult>) -> String {
    match r {
        Some(PhaseResult {
            ops,
            found: Some(f),
            ..
        }) if *ops > 0 => {
            format!("{:.1}%", *f as f64 * 100.0 / *ops as f64)
        }
        _ => "-".into(),
    }
}

/// Runs every section against every peer that is available.
pub fn run_benchmark(config: &Config, dir: &Path, ui: &Ui) -> anyhow::Result<Report> {
    let machine = probe_machine(dir);
    let mut bench = Bench {
        config,
        dir,
        ui,
        values: Values::new(config.seed),
        notes: Vec::new(),
        commands: Vec::new(),
        db_bench_version: None,
    };
    let mut fjall_skip = config.skip_fjall.clone();
    let mut db_bench_skip = config.db_bench.as_ref().err().cloned();
    let db_bench_bin = config.db_bench.as_ref().ok().cloned();
    // A peer that fails is reported as skipped with the error; ringdb's own
    // errors end the run.
    let peer_failed = |skip: &mut Option<String>, what: &str, e: anyhow::Error| {
        ui.log(format!("{what} failed: {e:#}"));
        skip.get_or_insert_with(String::new)
            .push_str(&format!("{what} failed: {e:#}; "));
    };

    // 1. Key-value shape.
    ui.log("== key-value shape ==");
    let cpu = CpuShare::start();
    let ringdb_kv = bench.kv_ringdb()?;
    let fjall_kv = if fjall_skip.is_none() {
        match bench.kv_in_process("fjall", |d| FjallStore::open(d, false)) {
            Ok(f) => f,
            Err(e) => {
                peer_failed(&mut fjall_skip, "fjall key-value", e);
                KvFigures::default()
            }
        }
    } else {
        KvFigures::default()
    };
    let db_kv = match &db_bench_bin {
        Some(bin) => match bench.kv_db_bench(bin) {
            Ok(f) => f,
            Err(e) => {
                peer_failed(&mut db_bench_skip, "db_bench key-value", e);
                KvFigures::default()
            }
        },
        None => KvFigures::default(),
    };
    let mut kv_rows = vec![
        Row::new(
            "fillseq",
            rate(&ringdb_kv.fillseq),
            rate(&fjall_kv.fillseq),
            rate(&db_kv.fillseq),
            "",
        ),
        Row::new(
            "fillrandom",
            rate(&ringdb_kv.fillrandom),
            rate(&fjall_kv.fillrandom),
            rate(&db_kv.fillrandom),
            "",
        ),
        Row::new(
            "overwrite",
            rate(&ringdb_kv.overwrite),
            rate(&fjall_kv.overwrite),
            rate(&db_kv.overwrite),
            "",
        ),
        Row::new(
            "readrandom",
            rate(&ringdb_kv.readrandom),
            rate(&fjall_kv.readrandom),
            rate(&db_kv.readrandom),
            format!(
                "found: ringdb {}, fjall {}, db_bench {}",
                found_note(&ringdb_kv.readrandom),
                found_note(&fjall_kv.readrandom),
                found_note(&db_kv.readrandom)
            ),
        ),
        Row::new(
            "readmissing",
            rate(&ringdb_kv.readmissing),
            rate(&fjall_kv.readmissing),
            rate(&db_kv.readmissing),
            "keys never written: bloom filters",
        ),
    ];
    kv_rows.push(Row::new(
        "fillrandom, ringdb raw delta",
        rate(&ringdb_kv.raw_fillrandom),
        rate(&fjall_kv.fillrandom),
        rate(&db_kv.fillrandom),
        "ringdb: Engine::write of a pre-stamped delta, no read-before-write",
    ));

    let kv_busy = cpu.others();
    for shape in [&ringdb_kv.shape, &fjall_kv.shape].into_iter().flatten() {
        bench.notes.push(shape.clone());
    }

    // 2. Durable writes.
    ui.log("== durable writes ==");
    let cpu = CpuShare::start();
    let mut durable_rows = Vec::new();
    for threads in [1, config.durable_writers] {
        let ringdb = bench
            .durable_in_process("ringdb", threads, |d| RingdbStore::open(d, SyncMode::Batch))?;
        let fjall = if fjall_skip.is_none() {
            match bench.durable_in_process("fjall", threads, |d| FjallStore::open(d, true)) {
                Ok(r) => Some(r),
                Err(e) => {
                    peer_failed(&mut fjall_skip, "fjall durable", e);
                    None
                }
            }
        } else {
            None
        };
        let db = match &db_bench_bin {
            Some(bin) if db_bench_skip.is_none() => match bench.durable_db_bench(bin, threads) {
                Ok(r) => Some(r),
                Err(e) => {
                    peer_failed(&mut db_bench_skip, "db_bench durable", e);
                    None
                }
            },
            _ => None,
        };
        durable_rows.push(Row::new(
            format!(
                "durable fillrandom, {threads} writer{}",
                if threads == 1 { "" } else { "s" }
            ),
            Some(ringdb.ops_per_sec()),
            fjall.map(|r| r.ops_per_sec()),
            db.map(|r| r.ops_per_sec()),
            "ringdb batch (group commit); fjall SyncData per write; db_bench --sync=1",
        ));
    }

    let durable_busy = cpu.others();

    // 3. Wide rows.
    ui.log("== wide rows ==");
    let cpu = CpuShare::start();
    let ringdb_wide = {
        let dir = bench.fresh_dir("ringdb-wide")?;
        let store = RingdbStore::open(
            &dir,
            SyncMode::Periodic {
                interval: config.periodic,
            },
        )?;
        let r = bench.wide_in_process("ringdb", &store)?;
        drop(store);
        bench.remove(&dir);
        r
    };
    let fjall_wide = if fjall_skip.is_none() {
        let dir = bench.fresh_dir("fjall-wide")?;
        let result =
            FjallStore::open(&dir, false).and_then(|store| bench.wide_in_process("fjall", &store));
        bench.remove(&dir);
        match result {
            Ok(r) => Some(r),
            Err(e) => {
                peer_failed(&mut fjall_skip, "fjall wide rows", e);
                None
            }
        }
    } else {
        None
    };
    let db_wide = match &db_bench_bin {
        Some(bin) if db_bench_skip.is_none() => match bench.wide_db_bench(bin) {
            Ok(r) => Some(r),
            Err(e) => {
                peer_failed(&mut db_bench_skip, "db_bench wide rows", e);
                None
            }
        },
        _ => None,
    };
    let rows_n = config.rows;
    let wide_rows = vec![
        Row::new(
            format!("wide load, rows/s ({} x {rows_n})", config.partitions),
            Some(ringdb_wide.0.ops_per_sec()),
            fjall_wide.map(|w| w.0.ops_per_sec()),
            None,
            "db_bench has no partitions: its load (fillseq) is not comparable",
        ),
        Row::new(
            format!("slice asc, {rows_n} rows"),
            Some(ringdb_wide.1.ops_per_sec()),
            fjall_wide.map(|w| w.1.ops_per_sec()),
            db_wide.map(|w| w.1.ops_per_sec()),
            format!(
                "fjall: prefix scan; db_bench: seekrandom --seek_nexts={}",
                rows_n - 1
            ),
        ),
        Row::new(
            format!("slice desc, {rows_n} rows"),
            Some(ringdb_wide.2.ops_per_sec()),
            fjall_wide.map(|w| w.2.ops_per_sec()),
            db_wide.map(|w| w.2.ops_per_sec()),
            "fjall: reversed prefix scan; db_bench: --reverse_iterator=true",
        ),
    ];

    let wide_busy = cpu.others();

    // 4. Write amplification.
    let ingested = 2 * config.ops * (KEY_BYTES + VALUE_BYTES) as u64;
    let amp = |b: Option<u64>| b.map(|b| b as f64 / ingested as f64);
    let wa_rows = vec![
        Row::new(
            "fillrandom + overwrite, settled (OS)",
            amp(ringdb_kv.write_bytes),
            amp(fjall_kv.write_bytes),
            amp(db_kv.write_bytes),
            format!(
                "write_bytes of /proc/self/io / {} B of keys+values",
                ingested
            ),
        ),
        Row::new(
            "same, engine's own counters",
            amp(ringdb_kv.engine_bytes),
            None,
            None,
            "ringdb: (commit log + flush + compaction bytes) / keys+values",
        ),
    ];

    let sections = vec![
        Section {
            title: format!(
                "Key-value shape: {} ops, {KEY_BYTES} B keys, {VALUE_BYTES} B values, 1 thread, no fsync per write",
                config.ops
            ),
            unit: "ops/s".into(),
            lower_is_better: false,
            rows: kv_rows,
            other_cpu_share: kv_busy,
        },
        Section {
            title: format!(
                "Durable writes: fsync before ack, {:.0} s per phase",
                config.durable_time.as_secs_f64()
            ),
            unit: "ops/s".into(),
            lower_is_better: false,
            rows: durable_rows,
            other_cpu_share: durable_busy,
        },
        Section {
            title: format!(
                "Wide rows: {} partitions x {rows_n} rows, 8 B clustering keys, slices/s",
                config.partitions
            ),
            unit: "ops/s".into(),
            lower_is_better: false,
            rows: wide_rows,
            other_cpu_share: wide_busy,
        },
        Section {
            title: "Write amplification: bytes written / bytes ingested".into(),
            unit: "x".into(),
            lower_is_better: true,
            rows: wa_rows,
            other_cpu_share: kv_busy,
        },
    ];
    let peers = vec![
        PeerStatus {
            name: "fjall".into(),
            version: None,
            skipped: fjall_skip,
        },
        PeerStatus {
            name: "db_bench".into(),
            version: bench.db_bench_version.clone(),
            skipped: db_bench_skip,
        },
    ];
    Ok(Report {
        machine,
        settings: Settings {
            ops: config.ops,
            partitions: config.partitions,
            rows_per_partition: config.rows,
            durable_writers: config.durable_writers,
            durable_secs: config.durable_time.as_secs_f64(),
            periodic_sync_ms: config.periodic.as_millis() as u64,
            seed: config.seed,
        },
        peers,
        sections,
        commands: bench.commands,
        notes: bench.notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny run of every section: each figure of ringdb and fjall is
    /// there and positive (no timing is asserted).
    #[test]
    fn smoke_run_produces_every_figure() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            ops: 2_000,
            partitions: 20,
            rows: 10,
            durable_writers: 4,
            durable_time: Duration::from_millis(300),
            durable_max_ops: 40,
            periodic: Duration::from_millis(100),
            seed: 1,
            skip_fjall: None,
            db_bench: Err("not used in tests".into()),
        };
        let report = run_benchmark(&config, dir.path(), &Ui::hidden()).unwrap();
        assert_eq!(report.sections.len(), 4);
        for s in &report.sections {
            for r in &s.rows {
                assert!(r.ringdb.is_some_and(|v| v > 0.0), "{}: {:?}", r.workload, r);
                if !r.workload.starts_with("same") {
                    assert!(r.fjall.is_some_and(|v| v > 0.0), "{}: {:?}", r.workload, r);
                    assert!(r.ringdb_vs_fjall.is_some());
                }
                assert!(r.db_bench.is_none());
            }
        }
        assert!(
            !report.notes.iter().any(|n| n.contains("slice")),
            "{:?}",
            report.notes
        );
        assert_eq!(report.notes.len(), 2, "{:?}", report.notes);
        assert_eq!(
            report.peers[1].skipped.as_deref(),
            Some("not used in tests")
        );
        // Only the run's own data directory was used, and it was cleaned.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
