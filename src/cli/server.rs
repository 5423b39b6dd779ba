//! `ringdb server`: runs one ringdb node.
//!
//! Settings come from flags, or from a TOML file (`--config`) whose keys
//! are the flag names with underscores; flags given on the command line
//! win over the file. A node with no seeds starts a new cluster; a node
//! with seeds joins theirs. Without `--certs-dir`, a throw-away CA and node
//! certificate are created in `<data-dir>/certs` (fine for one node; a
//! cluster needs certificates from one CA: `ringdb certs`).

use anyhow::Context;
use ringdb::cluster::membership::MembershipConfig;
use ringdb::cluster::ring::DEFAULT_VNODES;
use ringdb::coordinator::CoordinatorConfig;
use ringdb::net::tls::{ClusterCa, NodeCert};
use ringdb::node::{Node, NodeConfig, DEFAULT_ROW_CACHE_BYTES};
use ringdb::storage::commitlog::SyncMode;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Arguments of `ringdb server`.
#[derive(clap::Args, Debug, Default)]
pub struct ServerArgs {
    /// A TOML file with any of the settings below (keys as the flag names,
    /// with underscores: `listen`, `peer_listen`, `seeds`, `data_dir`, ...).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address of the client listener (QUIC, ALPN `ringdb-cql/1`).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Address of the peer listener (QUIC with mutual TLS; also gossip).
    #[arg(long)]
    pub peer_listen: Option<SocketAddr>,
    /// Peer addresses of seed nodes (repeat or separate with commas).
    #[arg(long, value_delimiter = ',')]
    pub seeds: Vec<SocketAddr>,
    /// Data directory of the node.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Directory of the node's certificates (`ca.pem`, `node.pem`, `node.key`).
    #[arg(long)]
    pub certs_dir: Option<PathBuf>,
    /// Rack of the node (replicas go to distinct racks first).
    #[arg(long)]
    pub rack: Option<String>,
    /// Tokens (virtual nodes) to take on first start.
    #[arg(long)]
    pub vnodes: Option<usize>,
    /// Exact tokens (unsigned 64-bit, comma-separated) to take on first
    /// start instead of picking them.
    #[arg(long, value_delimiter = ',')]
    pub tokens: Vec<u64>,
    /// Commit-log durability: `batch` (acknowledge after fsync) or
    /// `periodic:<ms>`.
    #[arg(long, value_parser = parse_sync_mode)]
    pub commitlog_sync: Option<SyncMode>,
    /// Milliseconds a write waits for its acknowledgements.
    #[arg(long)]
    pub write_timeout_ms: Option<u64>,
    /// Milliseconds a read waits for its replicas.
    #[arg(long)]
    pub read_timeout_ms: Option<u64>,
    /// Hours a hint is kept for a node that is down.
    #[arg(long)]
    pub hint_window_hours: Option<u64>,
    /// Milliseconds after which a logged batch still in this node's batch
    /// log is replayed (default: twice the write timeout).
    #[arg(long)]
    pub batchlog_replay_delay_ms: Option<u64>,
    /// Send a write this node stamped to the other replicas while its own
    /// fsync runs (one fsync round per `batch`-mode write instead of two in
    /// sequence). On by default; `--overlap-local-sync=false` waits for the
    /// local fsync first (see docs/operations.md).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub overlap_local_sync: Option<bool>,
    /// One partition read in this many asks every alive replica and
    /// repairs them all; the others ask only the replicas the consistency
    /// level needs (default 10; 1 asks all on every read; 0 never).
    #[arg(long)]
    pub read_repair_every: Option<u32>,
    /// Milliseconds after which a read still missing answers asks one more
    /// replica for each (default 50; 0 turns speculation off).
    #[arg(long)]
    pub speculative_retry_ms: Option<u64>,
    /// Threads running the node's async work (requests, replication,
    /// gossip); default: one per CPU. Several nodes sharing one machine
    /// (`ringdb dev`, the benchmark) do better with fewer each. With 1 the
    /// node runs tokio's single-threaded runtime, which wakes and
    /// schedules tasks more cheaply than a one-worker thread pool.
    #[arg(long)]
    pub worker_threads: Option<usize>,
    /// MiB of each table's row cache: whole small partitions kept merged in
    /// memory after a read (default 64; 0 turns it off). See
    /// docs/operations.md.
    #[arg(long)]
    pub row_cache_mb: Option<usize>,
}

/// The TOML form of [`ServerArgs`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    peer_listen: Option<SocketAddr>,
    #[serde(default)]
    seeds: Vec<SocketAddr>,
    data_dir: Option<PathBuf>,
    certs_dir: Option<PathBuf>,
    rack: Option<String>,
    vnodes: Option<usize>,
    #[serde(default)]
    tokens: Vec<u64>,
    commitlog_sync: Option<String>,
    write_timeout_ms: Option<u64>,
    read_timeout_ms: Option<u64>,
    hint_window_hours: Option<u64>,
    batchlog_replay_delay_ms: Option<u64>,
    overlap_local_sync: Option<bool>,
    read_repair_every: Option<u32>,
    speculative_retry_ms: Option<u64>,
    worker_threads: Option<usize>,
    row_cache_mb: Option<usize>,
}

fn parse_sync_mode(text: &str) -> Result<SyncMode, String> {
    match text.split_once(':') {
        None if text == "batch" => Ok(SyncMode::Batch),
        Some(("periodic", ms)) => match ms.parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(SyncMode::Periodic {
                interval: Duration::from_millis(ms),
            }),
            _ => Err(format!("'{ms}' is not a positive number of milliseconds")),
        },
        _ => Err(format!("'{text}' is neither 'batch' nor 'periodic:<ms>'")),
    }
}

/// Everything `ringdb server` was told: the node's configuration and the
/// process's own settings.
#[derive(Debug)]
struct Settings {
    node: NodeConfig,
    /// Async worker threads (`None`: one per CPU).
    worker_threads: Option<usize>,
}

/// Flags over the file over the defaults.
fn merge(args: ServerArgs) -> anyhow::Result<Settings> {
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str::<FileConfig>(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .context("--data-dir is required (or data_dir in --config)")?;
    let sync_mode = match (args.commitlog_sync, file.commitlog_sync) {
        (Some(m), _) => m,
        (None, Some(text)) => parse_sync_mode(&text)
            .map_err(anyhow::Error::msg)
            .context("commitlog_sync")?,
        (None, None) => SyncMode::Batch,
    };
    let seeds = if args.seeds.is_empty() {
        file.seeds
    } else {
        args.seeds
    };
    let worker_threads = args.worker_threads.or(file.worker_threads);
    if worker_threads == Some(0) {
        anyhow::bail!("worker_threads must be at least 1");
    }
    let defaults = CoordinatorConfig::default();
    let coordinator = CoordinatorConfig {
        write_timeout: args
            .write_timeout_ms
            .or(file.write_timeout_ms)
            .map(Duration::from_millis)
            .unwrap_or(defaults.write_timeout),
        read_timeout: args
            .read_timeout_ms
            .or(file.read_timeout_ms)
            .map(Duration::from_millis)
            .unwrap_or(defaults.read_timeout),
        overlap_local_sync: args
            .overlap_local_sync
            .or(file.overlap_local_sync)
            .unwrap_or(defaults.overlap_local_sync),
        read_repair_every: args
            .read_repair_every
            .or(file.read_repair_every)
            .unwrap_or(defaults.read_repair_every),
        speculative_retry: args
            .speculative_retry_ms
            .or(file.speculative_retry_ms)
            .map(Duration::from_millis)
            .unwrap_or(defaults.speculative_retry),
        ..defaults
    };
    let node = NodeConfig {
        certs_dir: args
            .certs_dir
            .or(file.certs_dir)
            .unwrap_or_else(|| data_dir.join("certs")),
        client_listen: args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9042))),
        peer_listen: args
            .peer_listen
            .or(file.peer_listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7000))),
        membership: MembershipConfig::with_seeds(seeds.clone()),
        seeds,
        rack: args.rack.or(file.rack),
        vnodes: args.vnodes.or(file.vnodes).unwrap_or(DEFAULT_VNODES),
        initial_tokens: match (args.tokens.is_empty(), file.tokens.is_empty()) {
            (false, _) => Some(args.tokens),
            (true, false) => Some(file.tokens),
            (true, true) => None,
        },
        sync_mode,
        coordinator,
        hint_window: Duration::from_secs(
            3600 * args
                .hint_window_hours
                .or(file.hint_window_hours)
                .unwrap_or(3),
        ),
        batchlog_replay_delay: args
            .batchlog_replay_delay_ms
            .or(file.batchlog_replay_delay_ms)
            .map(Duration::from_millis),
        row_cache_bytes: args
            .row_cache_mb
            .or(file.row_cache_mb)
            .map_or(DEFAULT_ROW_CACHE_BYTES, |mb| mb.saturating_mul(1 << 20)),
        data_dir,
    };
    Ok(Settings {
        node,
        worker_threads,
    })
}

/// Creates a throw-away CA and node certificate when `certs_dir` has none.
pub fn ensure_certs(certs_dir: &Path) -> anyhow::Result<()> {
    if certs_dir.join("node.pem").exists() {
        return Ok(());
    }
    let ca = ClusterCa::generate().context("generating a CA")?;
    ca.save(certs_dir, false)
        .with_context(|| format!("saving the CA in {}", certs_dir.display()))?;
    let ips = ["127.0.0.1".parse()?, "::1".parse()?];
    NodeCert::issue(&ca, "node", &ips, &[])
        .context("issuing the node certificate")?
        // The node's files include ca.pem again (same content).
        .save(certs_dir, true)
        .with_context(|| format!("saving the node certificate in {}", certs_dir.display()))?;
    eprintln!(
        "ringdb: created a throw-away CA and node certificate in {} (clients trust {})",
        certs_dir.display(),
        certs_dir.join("ca.pem").display()
    );
    Ok(())
}

/// Runs the node until SIGINT or SIGTERM.
pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    let Settings {
        node: config,
        worker_threads,
    } = merge(args)?;
    ensure_certs(&config.certs_dir)?;
    let mut builder = super::runtime_builder(worker_threads);
    let runtime = builder
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        // The handlers first: a stop while the node starts (a join can
        // stream for minutes) then ends it here instead of by SIGTERM's
        // default action. Dropping the start leaves what it stored, like
        // any stop; a join not finished starts over at the next start.
        let mut stop = ringdb::server::StopSignal::install();
        eprintln!("ringdb: starting (data in {})", config.data_dir.display());
        let node = tokio::select! {
            node = Node::start(config) => node?,
            _ = stop.recv() => {
                eprintln!("ringdb: stop requested while starting; stopped before serving");
                return Ok(());
            }
        };
        eprintln!(
            "ringdb: node {} serving clients on {}, peers on {}",
            node.cluster.node_id().0,
            node.client_addr(),
            node.peer_addr()
        );
        tokio::select! {
            _ = stop.recv() => eprintln!("ringdb: shutting down"),
            _ = node.left() => eprintln!("ringdb: decommissioned: left the ring, shutting down"),
        }
        // What this node did as a coordinator (repairs, hints, retries),
        // for whoever reads the log after a run.
        eprintln!("ringdb: coordinator counters: {:?}", node.cluster.stats());
        node.shutdown().await;
        anyhow::Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_modes_parse_and_nonsense_is_refused() {
        assert_eq!(parse_sync_mode("batch"), Ok(SyncMode::Batch));
        assert_eq!(
            parse_sync_mode("periodic:10"),
            Ok(SyncMode::Periodic {
                interval: Duration::from_millis(10)
            })
        );
        assert!(parse_sync_mode("periodic:0").is_err());
        assert!(parse_sync_mode("sometimes").is_err());
    }

    #[test]
    fn flags_win_over_the_file_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(
            &file,
            "data_dir = \"/data/a\"\nlisten = \"127.0.0.1:9100\"\nseeds = [\"127.0.0.1:7001\"]\ncommitlog_sync = \"periodic:20\"\ntokens = [5, 1000]\nbatchlog_replay_delay_ms = 2500\noverlap_local_sync = false\nread_repair_every = 4\nspeculative_retry_ms = 20\nworker_threads = 3\nrow_cache_mb = 5\n",
        )
        .unwrap();
        let settings = merge(ServerArgs {
            config: Some(file.clone()),
            listen: Some("127.0.0.1:9200".parse().unwrap()),
            worker_threads: None,
            ..ServerArgs::default()
        })
        .unwrap();
        assert_eq!(settings.worker_threads, Some(3), "from the file");
        let config = settings.node;
        assert_eq!(config.client_listen, "127.0.0.1:9200".parse().unwrap());
        assert_eq!(config.data_dir, PathBuf::from("/data/a"));
        assert_eq!(config.initial_tokens, Some(vec![5, 1000]));
        assert!(!config.coordinator.overlap_local_sync, "from the file");
        assert_eq!(config.coordinator.read_repair_every, 4, "from the file");
        assert_eq!(config.row_cache_bytes, 5 << 20, "from the file");
        assert_eq!(
            config.coordinator.speculative_retry,
            Duration::from_millis(20),
            "from the file"
        );
        assert_eq!(config.seeds, vec!["127.0.0.1:7001".parse().unwrap()]);
        assert_eq!(
            config.batchlog_replay_delay,
            Some(Duration::from_millis(2500)),
            "from the file"
        );
        assert_eq!(
            config.sync_mode,
            SyncMode::Periodic {
                interval: Duration::from_millis(20)
            }
        );
        std::fs::write(
            &file,
            "data_dir = \"/x\"\nlisten_adress = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        let err = merge(ServerArgs {
            config: Some(file),
            ..ServerArgs::default()
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("listen_adress"), "{err:#}");
        assert!(
            merge(ServerArgs::default()).is_err(),
            "data dir is required"
        );
        let err = merge(ServerArgs {
            data_dir: Some(PathBuf::from("/x")),
            worker_threads: Some(0),
            ..ServerArgs::default()
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("worker_threads"), "{err:#}");
        let defaults = merge(ServerArgs {
            data_dir: Some(PathBuf::from("/x")),
            ..ServerArgs::default()
        })
        .unwrap();
        assert_eq!(defaults.node.row_cache_bytes, DEFAULT_ROW_CACHE_BYTES);
        let off = merge(ServerArgs {
            data_dir: Some(PathBuf::from("/x")),
            row_cache_mb: Some(0),
            ..ServerArgs::default()
        })
        .unwrap();
        assert_eq!(off.node.row_cache_bytes, 0, "a flag of 0 turns it off");
    }

    #[test]
    fn overlap_is_on_unless_a_flag_or_the_file_turns_it_off() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            server: ServerArgs,
        }
        use clap::Parser;
        let overlap = |argv: &[&str]| {
            let mut full = vec!["ringdb", "--data-dir", "/x"];
            full.extend_from_slice(argv);
            let cli = Cli::try_parse_from(full).map_err(|e| e.to_string())?;
            merge(cli.server)
                .map(|s| s.node.coordinator.overlap_local_sync)
                .map_err(|e| format!("{e:#}"))
        };
        assert_eq!(overlap(&[]), Ok(true), "the default");
        assert_eq!(overlap(&["--overlap-local-sync"]), Ok(true));
        assert_eq!(overlap(&["--overlap-local-sync=false"]), Ok(false));
        assert!(overlap(&["--overlap-local-sync=perhaps"]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(&file, "overlap_local_sync = false\n").unwrap();
        let config = file.to_str().unwrap();
        assert_eq!(overlap(&["--config", config]), Ok(false), "from the file");
        assert_eq!(
            overlap(&["--config", config, "--overlap-local-sync"]),
            Ok(true),
            "the flag wins"
        );
    }
}
