//! `ringdb bench ycsb`: YCSB's core workloads against a ringdb cluster.
//!
//! By default it starts a 3-node cluster (RF=3) and then a 1-node cluster
//! (RF=1) as real `ringdb server` processes on 127.0.0.1 (see
//! [`super::local_cluster`]), and on each: loads `records` rows of
//! `usertable` (10 text fields of 100 bytes, YCSB's 1 KB row), runs each
//! workload (A: 50 % read, 50 % update; B: 95/5; C: read only; F: 50 %
//! read, 50 % read-modify-write) for `operations` operations with
//! `concurrency` requests in flight, keys chosen by YCSB's scrambled
//! zipfian (constant 0.99); right after one of them (B by default) it runs
//! that workload again paced at 70 % of the peak just measured. It prints throughput and p50/p99/p99.9
//! latency per operation type (HdrHistogram) and the ratio of throughputs
//! between the clusters: the cost of replication.
//!
//! With `--host` it runs once against an existing cluster instead.

mod cpu;
mod disk;
mod pacing;
mod runner;
mod timeline;
mod zipfian;

use super::local_cluster::{LocalCluster, LocalClusterSpec, SERVER_NAME};
use anyhow::Context;
use comfy_table::{presets, Cell, CellAlignment, Table};
use cpu::CpuSample;
use indicatif::{ProgressBar, ProgressStyle};
use ringdb::client::ClientTlsConfig;
use ringdb::model::Consistency;
use runner::{Op, OpStats, PhaseKind, PhasePlan, PhaseResult, Session, Target, Workload};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Arguments of `ringdb bench ycsb`.
#[derive(clap::Args, Debug, Clone)]
pub struct YcsbArgs {
    /// Rows loaded before the workloads run [default: 50000; 5000 with
    /// --quick].
    #[arg(long)]
    pub records: Option<u64>,
    /// Operations per workload [default: 50000; 5000 with --quick].
    #[arg(long)]
    pub operations: Option<u64>,
    /// Requests in flight at once (one task each) [default: 64; 16 with
    /// --quick].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub concurrency: Option<u64>,
    /// Workloads to run, in order: a (50 % read / 50 % update), b (95/5),
    /// c (read only), f (50 % read / 50 % read-modify-write).
    #[arg(long, value_delimiter = ',', default_value = "a,b,c,f")]
    pub workloads: Vec<String>,
    /// A smoke-test size: 5000 records, 5000 operations per workload,
    /// concurrency 16 (explicit flags win).
    #[arg(long)]
    pub quick: bool,
    /// Local clusters to start, one after the other, by node count; each
    /// gets RF = its node count.
    #[arg(long, value_delimiter = ',', default_value = "3,1",
          value_parser = clap::value_parser!(u16).range(1..=16))]
    pub clusters: Vec<u16>,
    /// Run against an existing cluster at these client addresses (repeat
    /// or separate with commas; connections are spread over them) instead
    /// of starting local clusters.
    #[arg(long, value_delimiter = ',')]
    pub host: Vec<SocketAddr>,
    /// CA certificate of the existing cluster (with --host).
    #[arg(long, requires = "host")]
    pub ca_cert: Option<PathBuf>,
    /// Name the existing cluster's certificates carry (with --host).
    #[arg(long, default_value = SERVER_NAME)]
    pub server_name: String,
    /// Replication factor of the benchmark keyspace on an existing cluster
    /// (with --host; local clusters use their node count).
    #[arg(long, default_value_t = 3)]
    pub rf: usize,
    /// Consistency level of every request (QUORUM is 1 of 1 at RF=1).
    #[arg(long, default_value = "QUORUM", value_parser = parse_consistency)]
    pub consistency: Consistency,
    /// Keyspace of the benchmark table (created if missing).
    #[arg(long, default_value = "ycsb")]
    pub keyspace: String,
    /// Directory of the local clusters' data, certificates and logs
    /// (`<dir>/<n>-node/`, emptied before each run).
    #[arg(long, default_value = "ringdb-ycsb")]
    pub dir: PathBuf,
    /// Commit-log durability of the local nodes: `batch` (their default:
    /// acknowledge after fsync) or `periodic:<ms>`.
    #[arg(long)]
    pub commitlog_sync: Option<String>,
    /// Start the local nodes with `--overlap-local-sync` (a write's stamp
    /// syncs while it is replicated; see `ringdb server --help`). It is
    /// their default now, so this changes nothing; kept so that older
    /// commands in docs/performance.md still run. Compare with
    /// `--server-arg=--overlap-local-sync=false`.
    #[arg(long)]
    pub overlap_local_sync: bool,
    /// One more argument for every local `ringdb server` (repeat it; e.g.
    /// `--server-arg=--read-repair-every=1`), to compare settings with the
    /// same binary.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// Client connections (QUIC) to each node; the tasks share them.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub connections_per_node: u64,
    /// Threads of the load generator [default: 1 with local clusters, one
    /// per CPU with --host]. 1 runs it on tokio's single-threaded runtime,
    /// which on a machine the servers share leaves them more CPU and packs
    /// the requests of one wake-up into fewer datagrams.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub client_threads: Option<u64>,
    /// The workload run again, right after its closed-loop run, paced at
    /// --paced-fraction of the peak that run measured (`none` to skip).
    #[arg(long, default_value = "b")]
    pub paced_workload: String,
    /// Fraction of the peak throughput the paced run asks for.
    #[arg(long, default_value_t = 0.7)]
    pub paced_fraction: f64,
    /// Requests the paced run may have in flight at once. It starts every
    /// operation when it is due (an open loop, as independent clients
    /// would), however many are still unanswered, up to this bound; with
    /// only --concurrency slots, a pace near what those slots can carry
    /// makes the load generator the queue.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub paced_max_in_flight: u64,
    /// Before every measured run (warm-up, each workload, the paced run;
    /// not the peak check right after the paced run), ask every node to write its memtables to
    /// SSTables and finish due compactions (`ringdb admin flush`), so each
    /// run starts from the same state instead of inheriting a memtable
    /// the phases before filled to the brim, whose flush would then land
    /// in it by chance. `false` leaves the memtables as they are.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub flush_before_runs: bool,
    /// Operations of the first workload run (closed loop) after the load
    /// and before any measured run, and not counted: the peak, and the
    /// pace derived from it, are then measured on warm caches
    /// [default: a fifth of --operations; 0 skips the warm-up].
    #[arg(long)]
    pub warmup_operations: Option<u64>,
    /// Seed of the key and operation choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The load generator's threads: as asked, else one when the servers run
/// on this machine (local clusters) and one per CPU (`None`) when they run
/// elsewhere (`--host`).
fn client_threads(args: &YcsbArgs) -> Option<usize> {
    match args.client_threads {
        Some(n) => Some(n as usize),
        None if args.host.is_empty() => Some(1),
        None => None,
    }
}

fn parse_consistency(text: &str) -> Result<Consistency, String> {
    Consistency::parse(text).ok_or_else(|| format!("'{text}' is not a consistency level"))
}

/// Sizes after `--quick` and the explicit flags.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    records: u64,
    operations: u64,
    concurrency: usize,
    /// Unmeasured operations before the first measured run.
    warmup: u64,
    /// Most requests in flight in a paced run.
    paced_in_flight: usize,
    /// Whether every node flushed its memtables before each measured run.
    flush_before_runs: bool,
}

/// What one cluster measured.
struct ClusterResult {
    label: String,
    nodes: usize,
    rf: usize,
    consistency: Consistency,
    load: PhaseResult,
    runs: Vec<(Workload, PhaseResult)>,
    paced: Option<Paced>,
}

/// The paced run of one workload.
struct Paced {
    workload: Workload,
    /// The closed-loop throughput the pace was derived from.
    peak: f64,
    result: PhaseResult,
    /// The closed-loop throughput measured again right after the paced run
    /// (a shorter run): on a shared or throttled machine the peak drifts,
    /// and a paced run asked for 70 % of a peak the machine no longer has
    /// measures an overload.
    peak_after: Option<f64>,
}

/// Drift of the peak between before and after the paced run beyond which
/// the verdict says not to trust it.
const PEAK_DRIFT_WARN: f64 = 0.2;

/// Runs `ringdb bench ycsb`. Fails (after printing the results) if any
/// operation failed.
pub fn run(args: YcsbArgs) -> anyhow::Result<()> {
    let sizes = Sizes {
        records: args
            .records
            .unwrap_or(if args.quick { 5_000 } else { 50_000 }),
        operations: args
            .operations
            .unwrap_or(if args.quick { 5_000 } else { 50_000 }),
        concurrency: args.concurrency.unwrap_or(if args.quick { 16 } else { 64 }) as usize,
        warmup: 0,
        paced_in_flight: args.paced_max_in_flight as usize,
        flush_before_runs: args.flush_before_runs,
    };
    let sizes = Sizes {
        warmup: args.warmup_operations.unwrap_or(sizes.operations / 5),
        ..sizes
    };
    anyhow::ensure!(sizes.records > 0, "--records must be at least 1");
    let mut workloads = Vec::new();
    for name in &args.workloads {
        let w = Workload::by_name(name)
            .with_context(|| format!("unknown workload '{name}' (known: a, b, c, f)"))?;
        workloads.push(w);
    }
    let paced =
        match args.paced_workload.trim().to_ascii_lowercase().as_str() {
            "none" | "" => None,
            name => Some(Workload::by_name(name).with_context(|| {
                format!("unknown --paced-workload '{name}' (a, b, c, f or none)")
            })?),
        };
    anyhow::ensure!(
        args.paced_fraction > 0.0 && args.paced_fraction <= 1.0,
        "--paced-fraction must be in (0, 1]"
    );
    let mut builder = super::runtime_builder(client_threads(&args));
    let runtime = builder
        .enable_all()
        .build()
        .context("starting the client runtime")?;
    eprintln!(
        "ycsb: {} records, {} operations per workload (after a warm-up of {}), {} requests in flight \
         (a paced run: each when due, up to {}), {} per request",
        sizes.records,
        sizes.operations,
        sizes.warmup,
        sizes.concurrency,
        sizes.paced_in_flight,
        args.consistency
    );

    let mut notes = Vec::new();
    if args.host.is_empty() {
        let mode = args
            .commitlog_sync
            .clone()
            .unwrap_or_else(|| "batch".to_string());
        notes.push(format!(
            "Commit log: {mode} ({}).",
            if mode == "batch" {
                "a write is acknowledged after its fsync"
            } else {
                "fsync in the background; a write is acknowledged before it"
            }
        ));
        let samples = if args.quick { 20 } else { 100 };
        match disk::sync_latency(&args.dir, samples) {
            Ok(d) => notes.push(format!(
                "The disk under {}, idle: fdatasync of a 4 KiB append p50 {:.1} ms, p99 {:.1} ms, \
                 max {:.1} ms ({} samples); a batch-mode write waits for at least one.",
                args.dir.display(),
                d.p50_us as f64 / 1000.0,
                d.p99_us as f64 / 1000.0,
                d.max_us as f64 / 1000.0,
                d.samples
            )),
            Err(e) => notes.push(format!(
                "Could not time fdatasync under {}: {e}",
                args.dir.display()
            )),
        }
        for note in &notes {
            eprintln!("ycsb: {note}");
        }
    }

    let mut results = Vec::new();
    if !args.host.is_empty() {
        let ca_path = args
            .ca_cert
            .as_ref()
            .context("--host needs --ca-cert (the cluster's CA certificate)")?;
        let ca_pem = std::fs::read_to_string(ca_path)
            .with_context(|| format!("reading {}", ca_path.display()))?;
        let target = Target {
            addrs: args.host.clone(),
            tls: ClientTlsConfig::new(ca_pem, args.server_name.clone()),
            keyspace: args.keyspace.clone(),
            rf: args.rf,
            consistency: args.consistency,
            connections_per_node: args.connections_per_node as usize,
        };
        let label = format!(
            "{} host(s) RF={} {}",
            args.host.len(),
            args.rf,
            args.consistency
        );
        results.push(runtime.block_on(bench_cluster(
            label,
            args.host.len(),
            &[],
            &target,
            &workloads,
            paced,
            &args,
            sizes,
        ))?);
    } else {
        for &nodes in &args.clusters {
            let dir = cluster_dir(&args.dir, nodes);
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("emptying {}", dir.display()))?;
            }
            let mut spec = LocalClusterSpec::free_ports(dir.clone(), nodes)?;
            if let Some(sync) = &args.commitlog_sync {
                spec.server_args = vec!["--commitlog-sync".into(), sync.into()];
            }
            if args.overlap_local_sync {
                spec.server_args.push("--overlap-local-sync".into());
            }
            spec.server_args
                .extend(args.server_args.iter().map(Into::into));
            eprintln!("ycsb: starting {nodes} node(s) in {}", dir.display());
            let cluster = LocalCluster::start(spec)?;
            eprintln!(
                "ycsb: {nodes} node(s) up (server pids {:?})",
                cluster.pids()
            );
            let ca_pem = std::fs::read_to_string(cluster.ca_cert())
                .with_context(|| format!("reading {}", cluster.ca_cert().display()))?;
            let target = Target {
                addrs: cluster.client_addrs(),
                tls: ClientTlsConfig::new(ca_pem, SERVER_NAME),
                keyspace: args.keyspace.clone(),
                rf: nodes as usize,
                consistency: args.consistency,
                connections_per_node: args.connections_per_node as usize,
            };
            let label = format!("{nodes}-node RF={nodes} {}", args.consistency);
            let pids = cluster.pids();
            let result = runtime.block_on(bench_cluster(
                label,
                nodes as usize,
                &pids,
                &target,
                &workloads,
                paced,
                &args,
                sizes,
            ));
            cluster.stop();
            results.push(result?);
        }
    }
    drop(runtime);

    print!(
        "{}",
        render(&results, sizes, args.connections_per_node, &notes)
    );
    if let Some(path) = &args.json {
        std::fs::write(path, to_json(&results, sizes))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let failed: u64 = results
        .iter()
        .flat_map(|r| phases(r).map(|(_, p)| p.total_errors()))
        .sum();
    anyhow::ensure!(failed == 0, "{failed} operation(s) failed (see the table)");
    Ok(())
}

/// Every phase of a cluster's run with its name.
fn phases(r: &ClusterResult) -> impl Iterator<Item = (String, &PhaseResult)> {
    std::iter::once(("load".to_string(), &r.load))
        .chain(r.runs.iter().map(|(w, p)| (w.label(), p)))
        .chain(r.paced.iter().map(|p| {
            (
                format!("{} paced", p.workload.label()),
                &p.result as &PhaseResult,
            )
        }))
}

fn progress(total: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:>24} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_string());
    bar
}

fn report_phase(label: &str, name: &str, result: &PhaseResult) {
    let per_op = |f: fn(&cpu::CpuUsage, u64) -> Option<f64>| {
        result
            .cpu
            .and_then(|c| f(&c, result.total_ok()))
            .map_or("-".to_string(), |v| format!("{v:.0}"))
    };
    let datagrams = result
        .cpu
        .and_then(|c| c.udp_sent_per_op(result.total_ok()))
        .map_or("-".to_string(), |v| format!("{v:.2}"));
    eprintln!(
        "ycsb: {label} {name}: {} ok, {} failed in {:.1} s ({:.0} ops/s, {} ops per server CPU-s, \
         {datagrams} UDP datagrams per op, at most {} in flight)",
        result.total_ok(),
        result.total_errors(),
        result.elapsed.as_secs_f64(),
        result.throughput(),
        per_op(cpu::CpuUsage::ops_per_server_cpu_second),
        result.most_in_flight,
    );
    for e in &result.error_samples {
        eprintln!("ycsb:   error: {e}");
    }
}

/// Loads the table and runs the workloads (and the paced run) on one
/// cluster.
#[allow(clippy::too_many_arguments)]
async fn bench_cluster(
    label: String,
    nodes: usize,
    server_pids: &[u32],
    target: &Target,
    workloads: &[Workload],
    paced: Option<Workload>,
    args: &YcsbArgs,
    sizes: Sizes,
) -> anyhow::Result<ClusterResult> {
    runner::create_schema(target)
        .await
        .context("creating the benchmark table")?;
    let session = Session::open(target)
        .await
        .context("connecting and preparing statements")?;
    let plan = |kind, operations, rate: Option<f64>, seed| PhasePlan {
        kind,
        records: sizes.records,
        operations,
        // A paced run is an open loop: an operation starts when it is
        // due, not when one of the closed loop's slots frees up.
        concurrency: if rate.is_some() {
            sizes.paced_in_flight
        } else {
            sizes.concurrency
        },
        rate,
        seed,
    };
    let (load, _) = run_on_idle_servers(
        &session,
        server_pids,
        plan(PhaseKind::Load, sizes.records, None, args.seed),
        &format!("{label} load"),
    )
    .await;
    report_phase(&label, "load", &load);
    if let Some(first) = workloads.first().filter(|_| sizes.warmup > 0) {
        flush_before(target, args, &label, "the warm-up").await;
        let (warmup, _) = run_on_idle_servers(
            &session,
            server_pids,
            plan(
                PhaseKind::Run(*first),
                sizes.warmup,
                None,
                args.seed.wrapping_add(300),
            ),
            &format!("{label} warm-up"),
        )
        .await;
        eprintln!(
            "ycsb: {label}: warm-up (not counted): {} operations of workload {} at {:.0} ops/s, {} failed",
            sizes.warmup,
            first.label(),
            warmup.throughput(),
            warmup.total_errors()
        );
        for e in &warmup.error_samples {
            eprintln!("ycsb:   warm-up error: {e}");
        }
    }
    let mut runs = Vec::new();
    let mut paced_result = None;
    for (i, w) in workloads.iter().enumerate() {
        let name = format!("workload {}", w.label());
        // Every measured run starts on idle servers: the load (or the
        // workload before) leaves flushes and compactions behind, and a
        // peak measured beside them is too low, and so is the pace derived
        // from it.
        flush_before(target, args, &label, &name).await;
        let (result, waited) = run_on_idle_servers(
            &session,
            server_pids,
            plan(
                PhaseKind::Run(*w),
                sizes.operations,
                None,
                args.seed.wrapping_add(1 + i as u64),
            ),
            &format!("{label} {}", w.label()),
        )
        .await;
        eprintln!(
            "ycsb: {label}: waited {:.1} s for idle servers before {name}",
            waited.as_secs_f64()
        );
        report_phase(&label, &name, &result);
        // The paced run follows its workload's closed-loop run at once, so
        // both see the database in the same state: 70 % of a peak measured
        // before other workloads ran need not be 70 % of what the database
        // can do after them, nor in the same minutes of a shared machine.
        if paced == Some(*w) && paced_result.is_none() {
            let peak = result.throughput();
            let rate = peak * args.paced_fraction;
            flush_before(target, args, &label, "the paced run").await;
            let (paced_run, waited) = run_on_idle_servers(
                &session,
                server_pids,
                plan(
                    PhaseKind::Run(*w),
                    sizes.operations,
                    Some(rate),
                    args.seed.wrapping_add(100),
                ),
                &format!("{label} {} @{rate:.0}/s", w.label()),
            )
            .await;
            eprintln!(
                "ycsb: {label}: waited {:.1} s for the servers to finish the previous phase's work before the paced run",
                waited.as_secs_f64()
            );
            report_phase(&label, &format!("workload {} paced", w.label()), &paced_run);
            report_timeline(&label, *w, &paced_run, &args.dir);
            // The peak again, on half as many operations: did the machine
            // keep the speed the pace was derived from?
            let check_ops = (sizes.operations / 2).max(1);
            // No flush here: the check should find the database as the paced
            // run left it (a flush can start a compaction, whose output
            // starts with no block cached, and the check would measure
            // cold caches).
            let (check, _) = run_on_idle_servers(
                &session,
                server_pids,
                plan(
                    PhaseKind::Run(*w),
                    check_ops,
                    None,
                    args.seed.wrapping_add(200),
                ),
                &format!("{label} {} peak check", w.label()),
            )
            .await;
            let peak_after = check.throughput();
            eprintln!(
                "ycsb: {label}: workload {} peak {peak:.0} ops/s before the paced run, {peak_after:.0} after it",
                w.label()
            );
            paced_result = Some(Paced {
                workload: *w,
                peak,
                result: paced_run,
                peak_after: Some(peak_after),
            });
        }
        runs.push((*w, result));
    }
    if let Some(pw) = paced.filter(|pw| !workloads.contains(pw)) {
        eprintln!(
            "ycsb: no paced run: workload {} is not among --workloads",
            pw.label()
        );
    }
    session.close().await;
    // How the caches answered over the whole run, for reading the figures.
    match runner::storage_status(target).await {
        Ok(nodes) => {
            for (addr, lines) in nodes {
                for line in lines {
                    eprintln!("ycsb: {label}: node {addr}: {line}");
                }
            }
        }
        Err(e) => eprintln!("ycsb: {label}: no storage status from the nodes: {e:#}"),
    }
    Ok(ClusterResult {
        label,
        nodes,
        rf: target.rf,
        consistency: target.consistency,
        load,
        runs,
        paced: paced_result,
    })
}

/// With `--flush-before-runs`, asks every node to flush its memtables
/// and finish due compactions ([`runner::flush_nodes`]) before `what`,
/// and says how long that took. A failed flush is reported and the run
/// goes on from whatever state the nodes are in.
async fn flush_before(target: &Target, args: &YcsbArgs, label: &str, what: &str) {
    if !args.flush_before_runs {
        return;
    }
    let started = std::time::Instant::now();
    match runner::flush_nodes(target).await {
        Ok(answers) => {
            let (bytes, compactions) = answers
                .iter()
                .map(|a| flush_figures(a))
                .fold((0, 0), |(b, c), (nb, nc)| (b + nb, c + nc));
            eprintln!(
                "ycsb: {label}: flushed every node before {what} in {:.1} s: {:.1} MB written to SSTables, {compactions} compaction(s) run",
                started.elapsed().as_secs_f64(),
                bytes as f64 / 1e6
            );
        }
        Err(e) => eprintln!("ycsb: {label}: could not flush the nodes before {what}: {e:#}"),
    }
}

/// The bytes written and compactions run that a node's `admin flush`
/// answer reports (see [`ringdb::query::FlushSummary`]); 0 for a figure
/// it does not carry.
fn flush_figures(answer: &str) -> (u64, u64) {
    let words: Vec<&str> = answer.split_whitespace().collect();
    let before = |marker: &str| {
        words
            .iter()
            .position(|w| *w == marker)
            .and_then(|at| at.checked_sub(1))
            .and_then(|at| words[at].parse::<u64>().ok())
            .unwrap_or(0)
    };
    (before("bytes"), before("compaction(s)"))
}

/// Longest wait for the servers to go idle before a measured run.
const IDLE_PATIENCE: Duration = Duration::from_secs(15);

/// Servers using less than this share of one core, together, are idle.
const IDLE_CORES: f64 = 0.05;

/// Waits until the servers have used less than [`IDLE_CORES`] over 200 ms
/// (at most `patience`), and returns how long that took. Each run follows
/// a load or run that leaves flushes and compactions behind; waiting for
/// them makes every run measure its own load, as separate YCSB
/// invocations would. Without the servers' process ids (a cluster of
/// `--host`) it waits one second.
async fn wait_for_idle_servers(server_pids: &[u32], patience: Duration) -> Duration {
    let started = std::time::Instant::now();
    if server_pids.is_empty() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        return started.elapsed();
    }
    loop {
        let before = CpuSample::now(server_pids);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let usage = before.until(&CpuSample::now(server_pids));
        let busy = usage.servers.map(|cpu| cpu / usage.wall.max(1e-3));
        if busy.is_none_or(|cores| cores < IDLE_CORES) || started.elapsed() >= patience {
            return started.elapsed();
        }
    }
}

/// Runs one phase once the servers are idle ([`wait_for_idle_servers`]):
/// each run then measures its own load, not the flushes and compactions
/// the one before left behind. Returns the result, with the servers' CPU
/// over the phase, and how long the wait took. `what` labels the
/// progress bar.
async fn run_on_idle_servers(
    session: &Session,
    server_pids: &[u32],
    plan: PhasePlan,
    what: &str,
) -> (PhaseResult, Duration) {
    let waited = wait_for_idle_servers(server_pids, IDLE_PATIENCE).await;
    let before = CpuSample::now(server_pids);
    let bar = progress(plan.operations, what);
    let result = runner::run_phase(session, plan, bar).await;
    let cpu = Some(before.until(&CpuSample::now(server_pids)));
    (PhaseResult { cpu, ..result }, waited)
}

/// Width of the windows a paced run's latency is summarised in.
const TIMELINE_WINDOW: Duration = Duration::from_millis(100);

/// Prints a paced run's slowest windows (with wall-clock times, to match
/// the servers' logs) and draws its latency over time into
/// `<dir>/paced-<cluster>-<workload>.svg`.
fn report_timeline(label: &str, workload: Workload, result: &PhaseResult, dir: &Path) {
    let timeline = &result.timeline;
    let spread = timeline.spread(TIMELINE_WINDOW, P99_TARGET_US);
    if spread.windows > 0 {
        eprintln!(
            "ycsb:   p99 per {} ms window: median {:.1} ms, 90th percentile {:.1} ms; \
             {} of {} windows at or over {:.0} ms",
            TIMELINE_WINDOW.as_millis(),
            spread.median_p99_us as f64 / 1000.0,
            spread.p90_p99_us as f64 / 1000.0,
            spread.over_target,
            spread.windows,
            P99_TARGET_US as f64 / 1000.0,
        );
    }
    for w in timeline.slowest(TIMELINE_WINDOW, 3) {
        eprintln!(
            "ycsb:   slow window at {:.1} s ({} UTC): {} ops due, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            w.start_us as f64 / 1e6,
            timeline.wall_clock(w.start_us).unwrap_or_default(),
            w.ops,
            w.p50_us as f64 / 1000.0,
            w.p99_us as f64 / 1000.0,
            w.max_us as f64 / 1000.0,
        );
    }
    let slug: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let path = dir.join(format!("paced-{slug}-{}.svg", workload.label()));
    let title = format!(
        "{label}, workload {} paced at {:.0} ops/s",
        workload.label(),
        result.rate.unwrap_or(0.0)
    );
    let written = timeline
        .render_svg(&title, TIMELINE_WINDOW, P99_TARGET_US)
        .and_then(|svg| {
            std::fs::create_dir_all(dir)?;
            std::fs::write(&path, svg)?;
            Ok(())
        });
    match written {
        Ok(()) => eprintln!("ycsb:   latency over time: {}", path.display()),
        Err(e) => eprintln!("ycsb:   could not draw {}: {e:#}", path.display()),
    }
}

fn quantile(stats: &OpStats, q: f64) -> u64 {
    if stats.count() == 0 {
        0
    } else {
        stats.latency.value_at_quantile(q)
    }
}

fn right(text: impl ToString) -> Cell {
    Cell::new(text.to_string()).set_alignment(CellAlignment::Right)
}

fn new_table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::ASCII_MARKDOWN);
    table.set_header(header.iter().map(|h| Cell::new(*h)).collect::<Vec<_>>());
    table
}

/// The results as text tables (markdown-compatible, so they paste into
/// the docs).
fn render(
    results: &[ClusterResult],
    sizes: Sizes,
    connections_per_node: u64,
    notes: &[String],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nYCSB: {} records of {} fields x {} bytes, {} operations per workload \
         (after {} unmeasured warm-up operations), {} requests in flight, {} connection(s) \
         per node; latency in microseconds\n",
        sizes.records,
        runner::FIELDS,
        runner::FIELD_LENGTH,
        sizes.operations,
        sizes.warmup,
        sizes.concurrency,
        connections_per_node
    );
    for note in notes {
        let _ = writeln!(out, "{note}");
    }
    if !notes.is_empty() {
        let _ = writeln!(out);
    }
    let mut table = new_table(&[
        "cluster", "phase", "op", "ok", "errors", "ops/s", "p50", "p99", "p99.9", "max",
    ]);
    for r in results {
        for (name, phase) in phases(r).filter(|(n, _)| !n.ends_with("paced")) {
            for (op, stats) in &phase.ops {
                table.add_row(vec![
                    Cell::new(&r.label),
                    Cell::new(&name),
                    Cell::new(op.name()),
                    right(stats.count()),
                    right(stats.errors),
                    right(format!("{:.0}", phase.op_throughput(*op))),
                    right(quantile(stats, 0.5)),
                    right(quantile(stats, 0.99)),
                    right(quantile(stats, 0.999)),
                    right(stats.latency.max()),
                ]);
            }
            if phase.ops.len() > 1 {
                table.add_row(vec![
                    Cell::new(&r.label),
                    Cell::new(&name),
                    Cell::new("total"),
                    right(phase.total_ok()),
                    right(phase.total_errors()),
                    right(format!("{:.0}", phase.throughput())),
                    Cell::new(""),
                    Cell::new(""),
                    Cell::new(""),
                    Cell::new(""),
                ]);
            }
        }
    }
    let _ = writeln!(out, "{table}\n");

    // Throughput of each cluster against the one with the fewest nodes.
    if results.len() > 1 {
        if let Some(base) = results.iter().min_by_key(|r| r.nodes) {
            let mut header = vec!["phase".to_string(), format!("{} ops/s", base.label)];
            let others: Vec<&ClusterResult> =
                results.iter().filter(|r| !std::ptr::eq(*r, base)).collect();
            for o in &others {
                header.push(format!("{} ops/s", o.label));
                header.push(format!("{}n / {}n", o.nodes, base.nodes));
            }
            let header: Vec<&str> = header.iter().map(String::as_str).collect();
            let mut ratios = new_table(&header);
            for (name, phase) in phases(base).filter(|(n, _)| !n.ends_with("paced")) {
                let mut row = vec![
                    Cell::new(&name),
                    right(format!("{:.0}", phase.throughput())),
                ];
                for o in &others {
                    match phases(o).find(|(n, _)| *n == name) {
                        Some((_, p)) => {
                            row.push(right(format!("{:.0}", p.throughput())));
                            let ratio = if phase.throughput() > 0.0 {
                                format!("{:.2}", p.throughput() / phase.throughput())
                            } else {
                                "-".into()
                            };
                            row.push(right(ratio));
                        }
                        None => {
                            row.push(Cell::new("-"));
                            row.push(Cell::new("-"));
                        }
                    }
                }
                ratios.add_row(row);
            }
            let _ = writeln!(
                out,
                "Throughput against {} (the cost of replication):\n\n{ratios}\n",
                base.label
            );
        }
    }

    let _ = writeln!(
        out,
        "CPU while each phase ran (seconds of CPU time from /proc; 'per server CPU-s' is \
         operations per second of server CPU, i.e. per busy core; 'client' is this load \
         generator; 'others' is every other process of the machine; 'steal' is CPU time the \
         hypervisor took from this virtual machine while it wanted to run; 'UDP datagrams per op' \
         is the machine's UDP OutDatagrams from /proc/net/snmp over the phase, divided by \
         its operations):\n\n{}\n",
        efficiency_table(results)
    );

    let paced: Vec<(&ClusterResult, &Paced)> = results
        .iter()
        .filter_map(|r| r.paced.as_ref().map(|p| (r, p)))
        .collect();
    if !paced.is_empty() {
        let mut table = new_table(&[
            "cluster",
            "workload",
            "op",
            "peak ops/s",
            "asked ops/s",
            "got ops/s",
            "p50",
            "p99",
            "p99.9",
            "p99 service",
        ]);
        for (r, p) in paced {
            for (op, stats) in &p.result.ops {
                table.add_row(vec![
                    Cell::new(&r.label),
                    Cell::new(p.workload.label()),
                    Cell::new(op.name()),
                    right(format!("{:.0}", p.peak)),
                    right(format!("{:.0}", p.result.rate.unwrap_or(0.0))),
                    right(format!("{:.0}", p.result.throughput())),
                    right(quantile(stats, 0.5)),
                    right(quantile(stats, 0.99)),
                    right(quantile(stats, 0.999)),
                    right(if stats.count() == 0 {
                        0
                    } else {
                        stats.service.value_at_quantile(0.99)
                    }),
                ]);
            }
        }
        let _ = writeln!(
            out,
            "Paced runs (latency from each operation's scheduled start, so queueing \
             behind a stall counts; 'service' from when it was sent):\n\n{table}\n"
        );
        for r in results {
            if let Some(p) = &r.paced {
                let _ = writeln!(out, "{}", paced_verdict(&r.label, p, P99_TARGET_US));
            }
        }
        let _ = writeln!(out);
    }
    out
}

/// The latency target: p99 under 5 ms at 70 % of peak.
const P99_TARGET_US: u64 = 5_000;

/// A share of the pace asked for below which a paced run did not keep up.
const KEPT_PACE: f64 = 0.95;

/// One line saying whether a paced run met the p99 target: every
/// operation type's p99 (from the scheduled start) under `target_us`, and
/// the run kept the pace asked for.
fn paced_verdict(label: &str, p: &Paced, target_us: u64) -> String {
    let asked = p.result.rate.unwrap_or(0.0);
    let got = p.result.throughput();
    let kept = asked <= 0.0 || got >= asked * KEPT_PACE;
    let mut worst = 0u64;
    let mut parts = Vec::new();
    for (op, stats) in &p.result.ops {
        let p99 = quantile(stats, 0.99);
        worst = worst.max(p99);
        parts.push(format!("{} p99 {:.1} ms", op.name(), p99 as f64 / 1000.0));
    }
    let errors = p.result.total_errors();
    let met = kept && errors == 0 && !parts.is_empty() && worst < target_us;
    format!(
        "p99 verdict, {label}, workload {} at {:.0}% of {:.0} ops/s ({:.0} asked, {:.0} done, \
         at most {} in flight{}{}): {}: target p99 < {:.0} ms: {}",
        p.workload.label(),
        if p.peak > 0.0 {
            asked / p.peak * 100.0
        } else {
            0.0
        },
        p.peak,
        asked,
        got,
        p.result.most_in_flight,
        if errors > 0 {
            format!(", {errors} failed")
        } else {
            String::new()
        },
        match p.result.cpu.as_ref().and_then(|c| c.busy_share()) {
            Some(busy) => format!(", CPUs {:.0}% busy", busy * 100.0),
            None => String::new(),
        } + &peak_drift(p),
        if parts.is_empty() {
            "no operations".to_string()
        } else {
            parts.join(", ")
        },
        target_us as f64 / 1000.0,
        if met {
            "MET"
        } else if !kept {
            "NOT MET (did not keep the pace)"
        } else {
            "NOT MET"
        }
    )
}

/// The peak measured after the paced run, for the verdict line, with a
/// warning when it moved more than [`PEAK_DRIFT_WARN`] from the peak
/// before.
fn peak_drift(p: &Paced) -> String {
    let Some(after) = p.peak_after else {
        return String::new();
    };
    if p.peak <= 0.0 {
        return String::new();
    }
    let drift = after / p.peak - 1.0;
    let warning = if drift.abs() > PEAK_DRIFT_WARN {
        ": the peak moved (caches still warming, or a machine whose speed changes), \
         so the pace was not the fraction asked of it and this verdict is uncertain"
    } else {
        ""
    };
    format!(
        ", peak after it {after:.0} ops/s ({:+.0}%{warning})",
        drift * 100.0
    )
}

fn secs_cell(v: Option<f64>) -> Cell {
    right(v.map_or("-".to_string(), |v| format!("{v:.1}")))
}

/// Server, client and other CPU per phase, and operations per server CPU
/// second.
fn efficiency_table(results: &[ClusterResult]) -> Table {
    let mut table = new_table(&[
        "cluster",
        "phase",
        "ops/s",
        "server CPU s",
        "server cores busy",
        "ops per server CPU-s",
        "client CPU s",
        "others CPU s",
        "others share",
        "steal share",
        "UDP datagrams per op",
    ]);
    for r in results {
        for (name, phase) in phases(r) {
            let cpu = phase.cpu;
            let busy =
                |v: Option<f64>| cpu.and_then(|c| v.filter(|_| c.wall > 0.0).map(|v| v / c.wall));
            table.add_row(vec![
                Cell::new(&r.label),
                Cell::new(&name),
                right(format!("{:.0}", phase.throughput())),
                secs_cell(cpu.and_then(|c| c.servers)),
                right(busy(cpu.and_then(|c| c.servers)).map_or("-".into(), |b| format!("{b:.2}"))),
                right(
                    cpu.and_then(|c| c.ops_per_server_cpu_second(phase.total_ok()))
                        .map_or("-".into(), |v| format!("{v:.0}")),
                ),
                secs_cell(cpu.and_then(|c| c.client)),
                secs_cell(cpu.and_then(|c| c.others)),
                right(
                    cpu.and_then(|c| c.others_share())
                        .map_or("-".into(), |s| format!("{:.0}%", s * 100.0)),
                ),
                right(
                    cpu.and_then(|c| c.steal_share())
                        .map_or("-".into(), |s| format!("{:.1}%", s * 100.0)),
                ),
                right(
                    cpu.and_then(|c| c.udp_sent_per_op(phase.total_ok()))
                        .map_or("-".into(), |v| format!("{v:.2}")),
                ),
            ]);
        }
    }
    table
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_phase(name: &str, phase: &PhaseResult) -> String {
    let ops: Vec<String> = phase
        .ops
        .iter()
        .map(|(op, s)| op_json(*op, s, phase))
        .collect();
    let num = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.3}"));
    let cpu = phase.cpu;
    format!(
        "{{\"phase\":{},\"elapsed_s\":{:.3},\"ops_per_s\":{:.1},\"ok\":{},\"errors\":{},\
         \"rate\":{},\"server_cpu_s\":{},\"client_cpu_s\":{},\"others_cpu_s\":{},\
         \"ops_per_server_cpu_s\":{},\"udp_sent_per_op\":{},\"udp_received_per_op\":{},\
         \"most_in_flight\":{},\"ops\":[{}]}}",
        json_string(name),
        phase.elapsed.as_secs_f64(),
        phase.throughput(),
        phase.total_ok(),
        phase.total_errors(),
        phase.rate.map_or("null".to_string(), |r| format!("{r:.1}")),
        num(cpu.and_then(|c| c.servers)),
        num(cpu.and_then(|c| c.client)),
        num(cpu.and_then(|c| c.others)),
        num(cpu.and_then(|c| c.ops_per_server_cpu_second(phase.total_ok()))),
        num(cpu.and_then(|c| c.udp_sent_per_op(phase.total_ok()))),
        num(cpu.and_then(|c| c.udp_received_per_op(phase.total_ok()))),
        phase.most_in_flight,
        ops.join(",")
    )
}

fn op_json(op: Op, s: &OpStats, phase: &PhaseResult) -> String {
    let q = |h: &hdrhistogram::Histogram<u64>, q: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(q)
        }
    };
    format!(
        "{{\"op\":{},\"ok\":{},\"errors\":{},\"ops_per_s\":{:.1},\"p50_us\":{},\"p99_us\":{},\
         \"p999_us\":{},\"max_us\":{},\"service_p99_us\":{}}}",
        json_string(op.name()),
        s.count(),
        s.errors,
        phase.op_throughput(op),
        q(&s.latency, 0.5),
        q(&s.latency, 0.99),
        q(&s.latency, 0.999),
        s.latency.max(),
        q(&s.service, 0.99)
    )
}

/// The results as JSON (written by hand: a handful of numbers and names).
fn to_json(results: &[ClusterResult], sizes: Sizes) -> String {
    let clusters: Vec<String> = results
        .iter()
        .map(|r| {
            let phases: Vec<String> = phases(r).map(|(n, p)| json_phase(&n, p)).collect();
            let paced = r.paced.as_ref().map_or("null".to_string(), |p| {
                format!(
                    "{{\"workload\":{},\"peak_ops_per_s\":{:.1},\"peak_after_ops_per_s\":{}}}",
                    json_string(&p.workload.label()),
                    p.peak,
                    p.peak_after
                        .map_or("null".to_string(), |v| format!("{v:.1}"))
                )
            });
            format!(
                "{{\"cluster\":{},\"nodes\":{},\"rf\":{},\"consistency\":{},\"paced\":{},\
                 \"phases\":[{}]}}",
                json_string(&r.label),
                r.nodes,
                r.rf,
                json_string(&r.consistency.to_string()),
                paced,
                phases.join(",")
            )
        })
        .collect();
    format!(
        "{{\"records\":{},\"operations\":{},\"warmup_operations\":{},\"concurrency\":{},\"flush_before_runs\":{},\"clusters\":[{}]}}\n",
        sizes.records,
        sizes.operations,
        sizes.warmup,
        sizes.concurrency,
        sizes.flush_before_runs,
        clusters.join(",")
    )
}

/// Where `ringdb bench ycsb` keeps a local cluster of `nodes` nodes under `dir`.
fn cluster_dir(dir: &Path, nodes: u16) -> PathBuf {
    dir.join(format!("{nodes}-node"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn paced(rate: f64, done: u64, p99s_us: &[(Op, u64)]) -> Paced {
        let mut ops = BTreeMap::new();
        for &(op, p99) in p99s_us {
            let mut stats = runner::OpStats::new();
            for _ in 0..done {
                stats.latency.saturating_record(p99);
                stats.service.saturating_record(p99);
            }
            ops.insert(op, stats);
        }
        Paced {
            workload: Workload::ALL[1],
            peak: rate / 0.7,
            result: PhaseResult {
                elapsed: Duration::from_secs(1),
                ops,
                error_samples: Vec::new(),
                rate: Some(rate),
                cpu: None,
                timeline: Default::default(),
                most_in_flight: 64,
            },
            peak_after: None,
        }
    }

    #[test]
    fn the_verdict_warns_when_the_peak_drifted_during_the_run() {
        let mut p = paced(100.0, 100, &[(Op::Read, 1_200)]);
        let peak = p.peak;
        p.peak_after = Some(peak * 1.05);
        let steady = paced_verdict("c", &p, 5_000);
        assert!(steady.contains("(+5%)"), "{steady}");
        assert!(!steady.contains("uncertain"), "{steady}");
        assert!(steady.ends_with(": MET"), "{steady}");
        p.peak_after = Some(peak * 0.7);
        let drifted = paced_verdict("c", &p, 5_000);
        assert!(drifted.contains("(-30%: the peak moved"), "{drifted}");
        assert!(drifted.contains("uncertain"), "{drifted}");
    }

    #[test]
    fn paced_verdict_needs_every_p99_under_the_target_and_the_pace_kept() {
        let ok = paced(100.0, 50, &[(Op::Read, 1_200), (Op::Update, 4_000)]);
        let line = paced_verdict("c", &ok, 5_000);
        assert!(line.ends_with(": MET"), "{line}");
        assert!(line.contains("READ p99 1.2 ms"), "{line}");
        let slow = paced(100.0, 50, &[(Op::Read, 1_200), (Op::Update, 9_000)]);
        assert!(paced_verdict("c", &slow, 5_000).ends_with(": NOT MET"));
        // Fast answers, but only 60 of the 100 asked per second were done.
        let behind = paced(100.0, 30, &[(Op::Read, 1_000), (Op::Update, 1_000)]);
        let line = paced_verdict("c", &behind, 5_000);
        assert!(line.ends_with("NOT MET (did not keep the pace)"), "{line}");
        let empty = paced(100.0, 0, &[]);
        assert!(paced_verdict("c", &empty, 5_000).contains("NOT MET"));
    }

    #[test]
    fn the_verdict_says_how_busy_the_machine_was_when_it_is_known() {
        let mut p = paced(100.0, 50, &[(Op::Read, 1_200)]);
        assert!(!paced_verdict("c", &p, 5_000).contains("busy"));
        p.result.cpu = Some(cpu::CpuUsage {
            wall: 1.0,
            servers: Some(1.3),
            client: Some(0.4),
            others: Some(0.1),
            steal: Some(0.0),
            machine: Some(2.0),
            udp: None,
        });
        let line = paced_verdict("c", &p, 5_000);
        assert!(
            line.contains("done, at most 64 in flight, CPUs 90% busy)"),
            "{line}"
        );
    }

    /// `ringdb bench ycsb` flags as the command line gives them.
    fn ycsb_args(flags: &[&str]) -> YcsbArgs {
        #[derive(clap::Parser)]
        struct Command {
            #[command(flatten)]
            args: YcsbArgs,
        }
        let argv = std::iter::once("ycsb").chain(flags.iter().copied());
        match <Command as clap::Parser>::try_parse_from(argv) {
            Ok(c) => c.args,
            Err(e) => panic!("{flags:?} should parse: {e}"),
        }
    }

    #[test]
    fn flush_figures_reads_what_a_flush_summary_says() {
        let summary = ringdb::query::FlushSummary {
            tables: 2,
            flushed_bytes: 63_663_818,
            compactions: 3,
            sstables: 4,
        };
        let answer = format!("{summary} in 219 ms\n");
        assert_eq!(flush_figures(&answer), (63_663_818, 3));
        assert_eq!(flush_figures("this server cannot flush"), (0, 0));
    }

    #[test]
    fn the_load_generator_takes_one_thread_beside_local_servers_unless_told() {
        assert_eq!(client_threads(&ycsb_args(&[])), Some(1));
        assert_eq!(
            client_threads(&ycsb_args(&["--client-threads", "3"])),
            Some(3)
        );
        let remote = ycsb_args(&["--host", "127.0.0.1:9042", "--ca-cert", "ca.pem"]);
        assert_eq!(client_threads(&remote), None);
    }
}
