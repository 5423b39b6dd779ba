//! `ringdb server`: runs one ringdb node.
//!
//! Settings come from flags, or from a TOML file (`--config`) whose keys
//! are the flag names with underscores; flags given on the command line
//! win over the file. A node with no seeds starts a new cluster; a node
//! with seeds joins theirs. Without `--certs-dir` (or `certs_dir`), a
//! throw-away CA and node certificate are created in `<data-dir>/certs`
//! (fine for one node; a cluster needs certificates from one CA:
//! `ringdb certs`). A certificate directory that is given must hold the
//! node's files already.

use anyhow::Context;
use ringdb::cluster::hints::HintOptions;
use ringdb::cluster::membership::MembershipConfig;
use ringdb::cluster::ring::{NodeInfo, Ring, RingError, DEFAULT_VNODES};
use ringdb::coordinator::CoordinatorConfig;
use ringdb::model::NodeId;
use ringdb::net::tls::{ClusterCa, NodeCert, CA_CERT_FILE, NODE_CERT_FILE, NODE_KEY_FILE};
use ringdb::node::{Node, NodeConfig, DEFAULT_ROW_CACHE_BYTES};
use ringdb::server::ServerLimits;
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
    /// Directory of the node's certificates (`ca.pem`, `node.pem`,
    /// `node.key`, from `ringdb certs node`); they must exist. Default:
    /// `<data-dir>/certs`, where a throw-away CA is created if empty.
    #[arg(long)]
    pub certs_dir: Option<PathBuf>,
    /// Rack of the node (replicas go to distinct racks first).
    #[arg(long)]
    pub rack: Option<String>,
    /// Tokens (virtual nodes) to take on first start (at least 1; default
    /// 16).
    #[arg(long)]
    pub vnodes: Option<usize>,
    /// Exact tokens (unsigned 64-bit, comma-separated) to take on first
    /// start instead of picking them; no token twice.
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
    /// Hours a hint is kept for a node that is down (default 3; at least
    /// 1).
    #[arg(long)]
    pub hint_window_hours: Option<u64>,
    /// Seconds between two automatic repairs of the ranges this node is
    /// the first replica of (default 86400, a day; 0 turns it off). See
    /// docs/operations.md.
    #[arg(long)]
    pub auto_repair_interval_secs: Option<u64>,
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
    /// MiB per second that all range streams of this node together may
    /// copy (bootstrap, decommission, removenode, repair), so they leave
    /// room for requests (default 64; 0: no limit). See docs/operations.md.
    #[arg(long)]
    pub stream_throughput_mib: Option<u64>,
    /// KiB per second of hints this node replays to nodes back up, all
    /// together (default 4096; 0: no limit). See docs/operations.md.
    #[arg(long)]
    pub hint_throughput_kib: Option<u64>,
    /// Gossip (SWIM): milliseconds between two probes of this node, each
    /// of one member (default 1000).
    #[arg(long)]
    pub probe_period_ms: Option<u64>,
    /// Gossip (SWIM): milliseconds a direct probe may take before members
    /// are asked to probe indirectly; below the probe period (default 500).
    #[arg(long)]
    pub probe_rtt_ms: Option<u64>,
    /// Gossip (SWIM): milliseconds a suspected member has to refute the
    /// suspicion before it is declared down (default 3000).
    #[arg(long)]
    pub suspect_to_down_ms: Option<u64>,
    /// Gossip (SWIM): milliseconds between two gossips of pending updates
    /// besides probes (default 200).
    #[arg(long)]
    pub gossip_interval_ms: Option<u64>,
    /// Gossip (SWIM): members asked to probe a member that did not answer
    /// a direct probe (default 3).
    #[arg(long)]
    pub num_indirect_probes: Option<usize>,
    /// Client connections open at once; more are refused (default 1024;
    /// at least 1).
    #[arg(long)]
    pub max_client_connections: Option<usize>,
    /// Client connections open at once from one client IP address; more
    /// from it are refused, so one machine cannot take them all (default:
    /// no limit; at least 1).
    #[arg(long)]
    pub max_client_connections_per_ip: Option<usize>,
    /// Bytes of client requests held at once across all clients (arriving
    /// or waiting for their answer); a request past them is refused as
    /// overloaded, for the client to retry (default 268435456, 256 MiB; at
    /// least 16777216, the largest request frame).
    #[arg(long)]
    pub max_request_bytes: Option<usize>,
    /// Milliseconds after which a client connection with no traffic is
    /// closed (default 300000; 1 ms to one day). The client library pings
    /// every 15 s, so below that idle sessions are closed too.
    #[arg(long)]
    pub client_idle_timeout_ms: Option<u64>,
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
    auto_repair_interval_secs: Option<u64>,
    batchlog_replay_delay_ms: Option<u64>,
    overlap_local_sync: Option<bool>,
    read_repair_every: Option<u32>,
    speculative_retry_ms: Option<u64>,
    worker_threads: Option<usize>,
    row_cache_mb: Option<usize>,
    stream_throughput_mib: Option<u64>,
    hint_throughput_kib: Option<u64>,
    probe_period_ms: Option<u64>,
    probe_rtt_ms: Option<u64>,
    suspect_to_down_ms: Option<u64>,
    gossip_interval_ms: Option<u64>,
    num_indirect_probes: Option<usize>,
    max_client_connections: Option<usize>,
    max_client_connections_per_ip: Option<usize>,
    max_request_bytes: Option<usize>,
    client_idle_timeout_ms: Option<u64>,
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
    /// How the certificate directory was given (`--certs-dir` or the
    /// file's `certs_dir`, as [`pick`] names it), or `None` for the default
    /// `<data-dir>/certs`, the only one that gets a throw-away CA.
    certs_dir_given_by: Option<String>,
}

/// The value of a setting from its flag, else from the file, with the name
/// an error about it uses: `--flag-name`, or `key in FILE`.
fn pick<T>(flag: Option<T>, file: Option<T>, key: &str, file_name: &str) -> Option<(T, String)> {
    match (flag, file) {
        (Some(value), _) => Some((value, format!("--{}", key.replace('_', "-")))),
        (None, Some(value)) => Some((value, format!("{key} in {file_name}"))),
        (None, None) => None,
    }
}

/// The highest stream limit that may be set, in MiB per second (1 TiB/s:
/// far above any network, and its bytes fit in a `u64`).
const MAX_STREAM_THROUGHPUT_MIB: u64 = 1 << 20;

/// Largest `hint_throughput_kib` (1 TiB/s: no limit in practice).
const MAX_HINT_THROUGHPUT_KIB: u64 = 1 << 30;

/// The most milliseconds any membership timing may be set to (one hour):
/// SWIM timings are seconds, and a timer much further out could overflow
/// the clock when it is scheduled.
const MAX_MEMBERSHIP_MS: u64 = 3_600_000;

/// The membership (SWIM) settings: flags over the file over
/// [`MembershipConfig`]'s defaults, checked by [`MembershipConfig::validate`].
fn membership_config(
    args: &ServerArgs,
    file: &FileConfig,
    file_name: &str,
    seeds: Vec<SocketAddr>,
) -> anyhow::Result<MembershipConfig> {
    let mut config = MembershipConfig::with_seeds(seeds);
    // What was set, to name it when the combination is refused.
    let mut given = Vec::new();
    let timings = [
        (
            args.probe_period_ms,
            file.probe_period_ms,
            "probe_period_ms",
            &mut config.probe_period,
        ),
        (
            args.probe_rtt_ms,
            file.probe_rtt_ms,
            "probe_rtt_ms",
            &mut config.probe_rtt,
        ),
        (
            args.suspect_to_down_ms,
            file.suspect_to_down_ms,
            "suspect_to_down_ms",
            &mut config.suspect_to_down,
        ),
        (
            args.gossip_interval_ms,
            file.gossip_interval_ms,
            "gossip_interval_ms",
            &mut config.gossip_interval,
        ),
    ];
    for (flag, in_file, key, field) in timings {
        if let Some((ms, name)) = pick(flag, in_file, key, file_name) {
            if ms == 0 || ms > MAX_MEMBERSHIP_MS {
                anyhow::bail!(
                    "{name} must be between 1 and {MAX_MEMBERSHIP_MS} (one hour), not {ms}"
                );
            }
            *field = Duration::from_millis(ms);
            given.push(format!("{name} = {ms}"));
        }
    }
    if let Some((n, name)) = pick(
        args.num_indirect_probes,
        file.num_indirect_probes,
        "num_indirect_probes",
        file_name,
    ) {
        if n == 0 {
            anyhow::bail!("{name} must be at least 1");
        }
        config.num_indirect_probes = n;
        given.push(format!("{name} = {n}"));
    }
    config.validate().with_context(|| {
        format!(
            "membership settings {} (unset ones keep their defaults, see `ringdb server --help`)",
            given.join(", ")
        )
    })?;
    Ok(config)
}

/// The longest client idle timeout a node takes: one day. quinn counts
/// it in milliseconds of a QUIC varint and treats a longer one as no
/// timeout at all, which must not happen silently.
const MAX_CLIENT_IDLE_TIMEOUT_MS: u64 = 86_400_000;

/// The smallest request byte budget a node takes: one largest request
/// frame. A request is refused as overloaded when its bytes would take the
/// budget past its limit, so a smaller budget would refuse every request
/// larger than it, however idle the node.
const MIN_REQUEST_BYTES: usize = ringdb::client::protocol::MAX_FRAME_LEN as usize;

/// A client limit the node cannot work with; `name` is the flag or key it
/// came from, as [`pick`] names it.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum ClientLimitError {
    /// `--max-client-connections` of 0.
    #[error("{name} must be at least 1, not 0: the node would refuse every client")]
    NoConnections {
        /// The flag or key.
        name: String,
    },
    /// `--max-client-connections-per-ip` of 0.
    #[error(
        "{name} must be at least 1, not 0: the node would refuse every client \
         (leave it out for no limit per address)"
    )]
    NoConnectionsPerIp {
        /// The flag or key.
        name: String,
    },
    /// `--max-request-bytes` below [`MIN_REQUEST_BYTES`].
    #[error(
        "{name} must be at least {MIN_REQUEST_BYTES} (the largest request frame), not {bytes}: \
         a smaller budget would refuse every request larger than itself as overloaded"
    )]
    RequestBytesBelowFrame {
        /// The flag or key.
        name: String,
        /// The budget asked for.
        bytes: usize,
    },
    /// `--client-idle-timeout-ms` of 0 or over [`MAX_CLIENT_IDLE_TIMEOUT_MS`].
    #[error("{name} must be between 1 and {MAX_CLIENT_IDLE_TIMEOUT_MS} (one day), not {ms}")]
    IdleTimeoutOutOfRange {
        /// The flag or key.
        name: String,
        /// The timeout asked for, in milliseconds.
        ms: u64,
    },
}

/// The client server's limits: flags over the file over
/// [`ServerLimits`]'s defaults.
fn client_limits(
    args: &ServerArgs,
    file: &FileConfig,
    file_name: &str,
) -> Result<ServerLimits, ClientLimitError> {
    let mut limits = ServerLimits::default();
    if let Some((n, name)) = pick(
        args.max_client_connections,
        file.max_client_connections,
        "max_client_connections",
        file_name,
    ) {
        if n == 0 {
            return Err(ClientLimitError::NoConnections { name });
        }
        limits.max_connections = n;
    }
    if let Some((n, name)) = pick(
        args.max_client_connections_per_ip,
        file.max_client_connections_per_ip,
        "max_client_connections_per_ip",
        file_name,
    ) {
        if n == 0 {
            return Err(ClientLimitError::NoConnectionsPerIp { name });
        }
        limits.max_connections_per_ip = Some(n);
    }
    if let Some((bytes, name)) = pick(
        args.max_request_bytes,
        file.max_request_bytes,
        "max_request_bytes",
        file_name,
    ) {
        if bytes < MIN_REQUEST_BYTES {
            return Err(ClientLimitError::RequestBytesBelowFrame { name, bytes });
        }
        limits.max_request_bytes = bytes;
    }
    if let Some((ms, name)) = pick(
        args.client_idle_timeout_ms,
        file.client_idle_timeout_ms,
        "client_idle_timeout_ms",
        file_name,
    ) {
        if ms == 0 || ms > MAX_CLIENT_IDLE_TIMEOUT_MS {
            return Err(ClientLimitError::IdleTimeoutOutOfRange { name, ms });
        }
        limits.idle_timeout = Duration::from_millis(ms);
    }
    Ok(limits)
}

/// The longest read or write timeout (and speculative-retry delay) a
/// node takes: one hour. Deadlines are the current instant plus the
/// timeout, which a value near `u64::MAX` milliseconds would overflow.
const MAX_REQUEST_TIMEOUT_MS: u64 = 3_600_000;

/// A read or write timeout in milliseconds, from its flag or key (`None`:
/// not set). Zero is refused (every request would time out before its
/// replicas could answer), and so is anything over an hour.
fn request_timeout(ms: Option<(u64, String)>) -> anyhow::Result<Option<Duration>> {
    match ms {
        None => Ok(None),
        Some((ms, name)) if ms == 0 || ms > MAX_REQUEST_TIMEOUT_MS => anyhow::bail!(
            "{name} must be between 1 and {MAX_REQUEST_TIMEOUT_MS} (one hour), not {ms}"
        ),
        Some((ms, _)) => Ok(Some(Duration::from_millis(ms))),
    }
}

/// The hint window from `hours` (default: the hint store's). Zero is
/// refused: hints past the window are dropped instead of replayed, so a
/// window of 0 would drop every hint, also those a write at ANY was
/// acknowledged through. The hint store counts the window in milliseconds
/// of a `u64`, which bounds it from above.
/// The longest automatic-repair interval (a year): a longer one would
/// outlive any `gc_grace_seconds` worth having.
const MAX_AUTO_REPAIR_INTERVAL_SECS: u64 = 366 * 24 * 3600;

/// The automatic repair's interval from its setting (`name` says where it
/// was given); the default when not given.
fn auto_repair_interval(secs: Option<(u64, String)>) -> anyhow::Result<Duration> {
    match secs {
        None => Ok(ringdb::node::auto_repair::DEFAULT_INTERVAL),
        Some((secs, name)) if secs > MAX_AUTO_REPAIR_INTERVAL_SECS => anyhow::bail!(
            "{name} must be at most {MAX_AUTO_REPAIR_INTERVAL_SECS} (a year; 0 turns automatic \
             repair off), not {secs}"
        ),
        Some((secs, _)) => Ok(Duration::from_secs(secs)),
    }
}

fn hint_window(hours: Option<(u64, String)>) -> anyhow::Result<Duration> {
    let Some((hours, name)) = hours else {
        return Ok(HintOptions::default().window);
    };
    const MS_PER_HOUR: u64 = 3_600_000;
    if hours == 0 {
        anyhow::bail!(
            "{name} must be at least 1: hints older than the window are dropped, so 0 would drop every hint"
        );
    }
    let ms = hours.checked_mul(MS_PER_HOUR).with_context(|| {
        format!(
            "{name} = {hours} is too large (at most {})",
            u64::MAX / MS_PER_HOUR
        )
    })?;
    Ok(Duration::from_millis(ms))
}

/// Refuses `tokens` that the ring would refuse (a token listed twice), by
/// the ring's own rules: a one-node ring is built from them. `name` names
/// the setting in the error.
fn check_tokens(tokens: &[u64], name: &str) -> anyhow::Result<()> {
    let node = NodeInfo::new(
        NodeId(0),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        None,
        tokens.to_vec(),
    );
    match Ring::new([node]) {
        Ok(_) => Ok(()),
        Err(RingError::DuplicateToken { token, .. }) => {
            anyhow::bail!("{name} lists token {token} more than once")
        }
        Err(e) => Err(anyhow::Error::new(e).context(name.to_string())),
    }
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
    let file_name = args.config.as_deref().map_or_else(
        || "the config file".to_string(),
        |p| p.display().to_string(),
    );
    let data_dir = args
        .data_dir
        .clone()
        .or(file.data_dir.clone())
        .context("--data-dir is required (or data_dir in --config)")?;
    let sync_mode = match (args.commitlog_sync, &file.commitlog_sync) {
        (Some(m), _) => m,
        (None, Some(text)) => parse_sync_mode(text)
            .map_err(anyhow::Error::msg)
            .context("commitlog_sync")?,
        (None, None) => SyncMode::Batch,
    };
    let seeds = if args.seeds.is_empty() {
        file.seeds.clone()
    } else {
        args.seeds.clone()
    };
    let worker_threads = args.worker_threads.or(file.worker_threads);
    if worker_threads == Some(0) {
        anyhow::bail!("worker_threads must be at least 1");
    }
    let membership = membership_config(&args, &file, &file_name, seeds.clone())?;
    let client_limits = client_limits(&args, &file, &file_name)?;
    let vnodes = match pick(args.vnodes, file.vnodes, "vnodes", &file_name) {
        Some((0, name)) => anyhow::bail!(
            "{name} must be at least 1: a node without tokens owns no range and breaks the ring"
        ),
        Some((vnodes, _)) => vnodes,
        None => DEFAULT_VNODES,
    };
    let to_tokens = |tokens: Vec<u64>| (!tokens.is_empty()).then_some(tokens);
    let initial_tokens = pick(
        to_tokens(args.tokens),
        to_tokens(file.tokens),
        "tokens",
        &file_name,
    );
    if let Some((tokens, name)) = &initial_tokens {
        check_tokens(tokens, name)?;
    }
    let hint_window = hint_window(pick(
        args.hint_window_hours,
        file.hint_window_hours,
        "hint_window_hours",
        &file_name,
    ))?;
    let auto_repair_interval = auto_repair_interval(pick(
        args.auto_repair_interval_secs,
        file.auto_repair_interval_secs,
        "auto_repair_interval_secs",
        &file_name,
    ))?;
    let certs_dir = pick(args.certs_dir, file.certs_dir, "certs_dir", &file_name);
    let defaults = CoordinatorConfig::default();
    let write_timeout = request_timeout(pick(
        args.write_timeout_ms,
        file.write_timeout_ms,
        "write_timeout_ms",
        &file_name,
    ))?;
    let read_timeout = request_timeout(pick(
        args.read_timeout_ms,
        file.read_timeout_ms,
        "read_timeout_ms",
        &file_name,
    ))?;
    let speculative_retry = match pick(
        args.speculative_retry_ms,
        file.speculative_retry_ms,
        "speculative_retry_ms",
        &file_name,
    ) {
        Some((ms, name)) if ms > MAX_REQUEST_TIMEOUT_MS => anyhow::bail!(
            "{name} must be at most {MAX_REQUEST_TIMEOUT_MS} (one hour; 0 turns it off), not {ms}"
        ),
        Some((ms, _)) => Some(Duration::from_millis(ms)),
        None => None,
    };
    let stream_throughput = match pick(
        args.stream_throughput_mib,
        file.stream_throughput_mib,
        "stream_throughput_mib",
        &file_name,
    ) {
        Some((mib, name)) if mib > MAX_STREAM_THROUGHPUT_MIB => anyhow::bail!(
            "{name} must be at most {MAX_STREAM_THROUGHPUT_MIB} MiB/s (0 turns the limit off), \
             not {mib}"
        ),
        Some((mib, _)) => Some(mib << 20),
        None => None,
    };
    let hint_throughput = match pick(
        args.hint_throughput_kib,
        file.hint_throughput_kib,
        "hint_throughput_kib",
        &file_name,
    ) {
        Some((kib, name)) if kib > MAX_HINT_THROUGHPUT_KIB => anyhow::bail!(
            "{name} must be at most {MAX_HINT_THROUGHPUT_KIB} KiB/s (0 turns the limit off), \
             not {kib}"
        ),
        Some((kib, _)) => Some(kib << 10),
        None => None,
    };
    let coordinator = CoordinatorConfig {
        write_timeout: write_timeout.unwrap_or(defaults.write_timeout),
        read_timeout: read_timeout.unwrap_or(defaults.read_timeout),
        overlap_local_sync: args
            .overlap_local_sync
            .or(file.overlap_local_sync)
            .unwrap_or(defaults.overlap_local_sync),
        read_repair_every: args
            .read_repair_every
            .or(file.read_repair_every)
            .unwrap_or(defaults.read_repair_every),
        speculative_retry: speculative_retry.unwrap_or(defaults.speculative_retry),
        stream_throughput: stream_throughput.unwrap_or(defaults.stream_throughput),
        hint_throughput: hint_throughput.unwrap_or(defaults.hint_throughput),
        ..defaults
    };
    let (certs_dir, certs_dir_given_by) = match certs_dir {
        Some((dir, name)) => (dir, Some(name)),
        None => (data_dir.join("certs"), None),
    };
    let node = NodeConfig {
        certs_dir,
        client_listen: args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9042))),
        peer_listen: args
            .peer_listen
            .or(file.peer_listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7000))),
        membership,
        seeds,
        rack: args.rack.or(file.rack),
        vnodes,
        initial_tokens: initial_tokens.map(|(tokens, _)| tokens),
        sync_mode,
        coordinator,
        hint_window,
        auto_repair_interval,
        batchlog_replay_delay: args
            .batchlog_replay_delay_ms
            .or(file.batchlog_replay_delay_ms)
            .map(Duration::from_millis),
        row_cache_bytes: args
            .row_cache_mb
            .or(file.row_cache_mb)
            .map_or(DEFAULT_ROW_CACHE_BYTES, |mb| mb.saturating_mul(1 << 20)),
        data_dir,
        client_limits,
    };
    Ok(Settings {
        node,
        worker_threads,
        certs_dir_given_by,
    })
}

/// Checks that a certificate directory the operator named (`given_by`:
/// the flag or key) holds the node's files. A mistyped path must stop the
/// node, not start it with a CA of its own, alone in a cluster of one.
fn check_given_certs(certs_dir: &Path, given_by: &str) -> anyhow::Result<()> {
    let missing: Vec<&str> = [CA_CERT_FILE, NODE_CERT_FILE, NODE_KEY_FILE]
        .into_iter()
        .filter(|name| !certs_dir.join(name).exists())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "{given_by} {dir} has no {missing}. Create the cluster CA once with \
         `ringdb certs init --dir CA_DIR` and this node's files with \
         `ringdb certs node NAME --dir CA_DIR --out {dir}`, or leave out {given_by} \
         for a throw-away CA in <data-dir>/certs (a cluster of one node only)",
        dir = certs_dir.display(),
        missing = missing.join(", "),
    )
}

/// Creates a throw-away CA and node certificate when `certs_dir` (the
/// default `<data-dir>/certs`) has none.
fn ensure_throwaway_certs(certs_dir: &Path) -> anyhow::Result<()> {
    if certs_dir.join(NODE_CERT_FILE).exists() {
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
        certs_dir.join(CA_CERT_FILE).display()
    );
    Ok(())
}

/// Runs the node until SIGINT or SIGTERM.
pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    let Settings {
        node: config,
        worker_threads,
        certs_dir_given_by,
    } = merge(args)?;
    match &certs_dir_given_by {
        Some(given_by) => check_given_certs(&config.certs_dir, given_by)?,
        None => ensure_throwaway_certs(&config.certs_dir)?,
    }
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
        let removed = tokio::select! {
            _ = stop.recv() => {
                eprintln!("ringdb: shutting down");
                None
            }
            _ = node.left() => {
                eprintln!("ringdb: decommissioned: left the ring, shutting down");
                None
            }
            removed = node.removed() => Some(removed),
        };
        // What this node did as a coordinator (repairs, hints, retries),
        // for whoever reads the log after a run.
        eprintln!("ringdb: coordinator counters: {:?}", node.cluster.stats());
        node.shutdown().await;
        match removed {
            Some(removed) => Err(removed.into()),
            None => anyhow::Ok(()),
        }
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
            "data_dir = \"/data/a\"\nlisten = \"127.0.0.1:9100\"\nseeds = [\"127.0.0.1:7001\"]\ncommitlog_sync = \"periodic:20\"\ntokens = [5, 1000]\nbatchlog_replay_delay_ms = 2500\noverlap_local_sync = false\nread_repair_every = 4\nspeculative_retry_ms = 20\nworker_threads = 3\nrow_cache_mb = 5\nstream_throughput_mib = 8\nhint_throughput_kib = 512\nrack = \"rack-a\"\n",
        )
        .unwrap();
        let settings = merge(ServerArgs {
            config: Some(file.clone()),
            listen: Some("127.0.0.1:9200".parse().unwrap()),
            worker_threads: None,
            ..ServerArgs::default()
        })
        .unwrap();
        assert_eq!(
            settings.node.rack.as_deref(),
            Some("rack-a"),
            "from the file"
        );
        let racked = merge(ServerArgs {
            config: Some(file.clone()),
            rack: Some("rack-b".into()),
            ..ServerArgs::default()
        })
        .unwrap();
        assert_eq!(racked.node.rack.as_deref(), Some("rack-b"), "the flag wins");
        assert_eq!(settings.worker_threads, Some(3), "from the file");
        let config = settings.node;
        assert_eq!(config.client_listen, "127.0.0.1:9200".parse().unwrap());
        assert_eq!(config.data_dir, PathBuf::from("/data/a"));
        assert_eq!(config.initial_tokens, Some(vec![5, 1000]));
        assert!(!config.coordinator.overlap_local_sync, "from the file");
        assert_eq!(config.coordinator.read_repair_every, 4, "from the file");
        assert_eq!(config.row_cache_bytes, 5 << 20, "from the file");
        assert_eq!(
            config.coordinator.stream_throughput,
            8 << 20,
            "from the file"
        );
        assert_eq!(
            config.coordinator.hint_throughput,
            512 << 10,
            "from the file"
        );
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
        assert_eq!(
            defaults.node.coordinator.stream_throughput,
            64 << 20,
            "64 MiB/s by default"
        );
        let err = merge(ServerArgs {
            data_dir: Some(PathBuf::from("/x")),
            stream_throughput_mib: Some(u64::MAX),
            ..ServerArgs::default()
        })
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("--stream-throughput-mib must be at most"),
            "{err:#}"
        );
        assert_eq!(
            defaults.node.coordinator.hint_throughput,
            4 << 20,
            "4 MiB/s by default"
        );
        let err = merge(ServerArgs {
            data_dir: Some(PathBuf::from("/x")),
            hint_throughput_kib: Some(u64::MAX),
            ..ServerArgs::default()
        })
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("--hint-throughput-kib must be at most"),
            "{err:#}"
        );
    }

    /// `ringdb server --data-dir /x ARGV` merged, or its error (with causes).
    fn settings(argv: &[&str]) -> Result<Settings, String> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            server: ServerArgs,
        }
        use clap::Parser;
        let mut full = vec!["ringdb", "--data-dir", "/x"];
        full.extend_from_slice(argv);
        let cli = Cli::try_parse_from(full).map_err(|e| e.to_string())?;
        merge(cli.server).map_err(|e| format!("{e:#}"))
    }

    /// A config file holding `text`, and its directory (deleted on drop).
    fn config_file(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(&file, text).unwrap();
        let path = file.to_str().unwrap().to_string();
        (dir, path)
    }

    #[test]
    fn the_auto_repair_interval_comes_from_a_flag_or_the_file_and_is_bounded() {
        let interval = |argv: &[&str]| settings(argv).map(|s| s.node.auto_repair_interval);
        assert_eq!(interval(&[]), Ok(Duration::from_secs(24 * 3600)), "a day");
        assert_eq!(
            interval(&["--auto-repair-interval-secs", "0"]),
            Ok(Duration::ZERO),
            "0 turns it off"
        );
        let (_dir, file) = config_file("auto_repair_interval_secs = 3600\n");
        assert_eq!(
            interval(&["--config", &file]),
            Ok(Duration::from_secs(3600))
        );
        assert_eq!(
            interval(&["--config", &file, "--auto-repair-interval-secs", "60"]),
            Ok(Duration::from_secs(60)),
            "the flag wins"
        );
        let err = interval(&["--auto-repair-interval-secs", "40000000"]).unwrap_err();
        assert!(
            err.contains("--auto-repair-interval-secs must be at most 31622400"),
            "{err}"
        );
        let (_dir, file) = config_file("auto_repair_interval_secs = 99999999\n");
        let err = interval(&["--config", &file]).unwrap_err();
        assert!(err.contains("auto_repair_interval_secs in "), "{err}");
        assert!(interval(&["--auto-repair-interval-secs", "soon"]).is_err());
    }

    #[test]
    fn membership_timings_come_from_flags_over_the_file_over_the_defaults() {
        let defaults = MembershipConfig::default();
        let m = settings(&[]).unwrap().node.membership;
        assert_eq!(m.probe_period, defaults.probe_period);
        assert_eq!(m.probe_rtt, defaults.probe_rtt);
        assert_eq!(m.suspect_to_down, defaults.suspect_to_down);
        assert_eq!(m.gossip_interval, defaults.gossip_interval);
        assert_eq!(m.num_indirect_probes, defaults.num_indirect_probes);

        let (_dir, file) = config_file(
            "probe_period_ms = 2000\nprobe_rtt_ms = 800\nsuspect_to_down_ms = 5000\n\
             gossip_interval_ms = 300\nnum_indirect_probes = 4\n",
        );
        let m = settings(&["--config", &file]).unwrap().node.membership;
        assert_eq!(m.probe_period, Duration::from_millis(2000));
        assert_eq!(m.probe_rtt, Duration::from_millis(800));
        assert_eq!(m.suspect_to_down, Duration::from_millis(5000));
        assert_eq!(m.gossip_interval, Duration::from_millis(300));
        assert_eq!(m.num_indirect_probes, 4);

        let m = settings(&[
            "--config",
            &file,
            "--probe-period-ms",
            "1500",
            "--probe-rtt-ms",
            "600",
            "--suspect-to-down-ms",
            "4000",
            "--gossip-interval-ms",
            "100",
            "--num-indirect-probes",
            "2",
        ])
        .unwrap()
        .node
        .membership;
        assert_eq!(m.probe_period, Duration::from_millis(1500), "the flag wins");
        assert_eq!(m.probe_rtt, Duration::from_millis(600), "the flag wins");
        assert_eq!(m.suspect_to_down, Duration::from_millis(4000));
        assert_eq!(m.gossip_interval, Duration::from_millis(100));
        assert_eq!(m.num_indirect_probes, 2);
        assert_eq!(m.seeds, Vec::<SocketAddr>::new());
    }

    #[test]
    fn bad_membership_timings_are_refused_naming_the_flag_or_key() {
        let refused = |argv: &[&str], names: &[&str]| {
            let err = settings(argv).map(|_| ()).unwrap_err();
            for name in names {
                assert!(err.contains(name), "{argv:?}: {err}");
            }
        };
        refused(&["--probe-rtt-ms", "0"], &["--probe-rtt-ms", "not 0"]);
        refused(&["--probe-period-ms", "0"], &["--probe-period-ms"]);
        refused(&["--gossip-interval-ms", "0"], &["--gossip-interval-ms"]);
        refused(
            &["--suspect-to-down-ms", "3600001"],
            &["--suspect-to-down-ms", "one hour"],
        );
        refused(&["--num-indirect-probes", "0"], &["--num-indirect-probes"]);
        // The probe rtt must stay below the probe period, whichever is set.
        refused(
            &["--probe-rtt-ms", "1000"],
            &["--probe-rtt-ms = 1000", "probe_rtt"],
        );
        refused(
            &["--probe-period-ms", "400"],
            &["--probe-period-ms = 400", "probe_period"],
        );
        let (_dir, file) = config_file("probe_period_ms = 300\nsuspect_to_down_ms = 0\n");
        refused(
            &["--config", &file],
            &["suspect_to_down_ms in", "node.toml"],
        );
        refused(
            &["--config", &file, "--suspect-to-down-ms", "10"],
            &["probe_period_ms in", "node.toml"],
        );
        assert!(
            settings(&[
                "--config",
                &file,
                "--suspect-to-down-ms",
                "10",
                "--probe-rtt-ms",
                "100"
            ])
            .is_ok(),
            "the flags mend the file"
        );
    }

    #[test]
    fn client_limits_come_from_flags_over_the_file_over_the_defaults() {
        let limits = |argv: &[&str]| settings(argv).map(|s| s.node.client_limits);
        let defaults = ServerLimits::default();
        let set = limits(&[]).unwrap();
        assert_eq!(set.max_connections, defaults.max_connections);
        assert_eq!(set.max_connections_per_ip, None, "no limit per address");
        assert_eq!(set.max_request_bytes, defaults.max_request_bytes);
        assert_eq!(set.idle_timeout, defaults.idle_timeout);

        let (_dir, file) = config_file(
            "max_client_connections = 50\nmax_client_connections_per_ip = 5\n\
             max_request_bytes = 33554432\nclient_idle_timeout_ms = 60000\n",
        );
        let set = limits(&["--config", &file]).unwrap();
        assert_eq!(set.max_connections, 50);
        assert_eq!(set.max_connections_per_ip, Some(5));
        assert_eq!(set.max_request_bytes, 32 << 20);
        assert_eq!(set.idle_timeout, Duration::from_secs(60));

        let set = limits(&[
            "--config",
            &file,
            "--max-client-connections",
            "2000",
            "--max-client-connections-per-ip",
            "1",
            "--max-request-bytes",
            "16777216",
            "--client-idle-timeout-ms",
            "86400000",
        ])
        .unwrap();
        assert_eq!(set.max_connections, 2000, "the flag wins");
        assert_eq!(set.max_connections_per_ip, Some(1), "the flag wins");
        assert_eq!(
            set.max_request_bytes,
            16 << 20,
            "one largest frame is enough"
        );
        assert_eq!(set.idle_timeout, Duration::from_secs(86_400));
        // The limits the flags do not set keep their defaults.
        assert_eq!(
            set.max_streams_per_connection,
            defaults.max_streams_per_connection
        );
    }

    #[test]
    fn bad_client_limits_are_refused_naming_the_flag_or_key() {
        /// The typed refusal of `ringdb server --data-dir /x ARGV`.
        fn refusal(argv: &[&str]) -> ClientLimitError {
            #[derive(clap::Parser)]
            struct Cli {
                #[command(flatten)]
                server: ServerArgs,
            }
            use clap::Parser;
            let mut full = vec!["ringdb", "--data-dir", "/x"];
            full.extend_from_slice(argv);
            let cli = Cli::try_parse_from(full).expect("the flags parse");
            let err = merge(cli.server).map(|_| ()).unwrap_err();
            match err.downcast::<ClientLimitError>() {
                Ok(typed) => typed,
                Err(other) => panic!("{argv:?}: a client limit error expected, got {other:#}"),
            }
        }
        let flag = |name: &str| name.to_string();
        assert_eq!(
            refusal(&["--max-client-connections", "0"]),
            ClientLimitError::NoConnections {
                name: flag("--max-client-connections")
            }
        );
        assert_eq!(
            refusal(&["--max-client-connections-per-ip", "0"]),
            ClientLimitError::NoConnectionsPerIp {
                name: flag("--max-client-connections-per-ip")
            }
        );
        for bytes in [0, 1, MIN_REQUEST_BYTES - 1] {
            let err = refusal(&["--max-request-bytes", &bytes.to_string()]);
            assert_eq!(
                err,
                ClientLimitError::RequestBytesBelowFrame {
                    name: flag("--max-request-bytes"),
                    bytes
                }
            );
            let text = err.to_string();
            assert!(
                text.starts_with("--max-request-bytes must be at least 16777216"),
                "{text}"
            );
            assert!(text.contains(&format!("not {bytes}")), "{text}");
        }
        for ms in [0, MAX_CLIENT_IDLE_TIMEOUT_MS + 1, u64::MAX] {
            let err = refusal(&["--client-idle-timeout-ms", &ms.to_string()]);
            assert_eq!(
                err,
                ClientLimitError::IdleTimeoutOutOfRange {
                    name: flag("--client-idle-timeout-ms"),
                    ms
                }
            );
            let text = err.to_string();
            assert!(text.contains("--client-idle-timeout-ms"), "{text}");
            assert!(text.contains(&format!("not {ms}")), "{text}");
        }
        let text = refusal(&["--max-client-connections-per-ip", "0"]).to_string();
        assert!(text.contains("leave it out for no limit"), "{text}");
        // From the file, the key and the file are named; a flag mends it.
        let (_dir, file) =
            config_file("max_request_bytes = 1024\nmax_client_connections_per_ip = 0\n");
        let err = refusal(&["--config", &file, "--max-request-bytes", "16777216"]);
        assert!(
            err.to_string()
                .starts_with("max_client_connections_per_ip in "),
            "{err}"
        );
        assert!(err.to_string().contains("node.toml"), "{err}");
        let err = refusal(&["--config", &file, "--max-client-connections-per-ip", "3"]);
        assert!(
            err.to_string().starts_with("max_request_bytes in "),
            "{err}"
        );
        assert!(err.to_string().contains("not 1024"), "{err}");
        // Values that do not fit are refused by the parser, naming the
        // flag and the value, without a panic.
        for (name, value) in [
            ("--max-request-bytes", "99999999999999999999999"),
            ("--max-client-connections", "-1"),
            ("--client-idle-timeout-ms", "99999999999999999999999"),
        ] {
            let err = settings(&[&format!("{name}={value}")])
                .map(|_| ())
                .unwrap_err();
            assert!(err.contains(name) && err.contains(value), "{err}");
        }
        let (_dir, file) = config_file("max_client_connections = -5\n");
        let err = settings(&["--config", &file]).map(|_| ()).unwrap_err();
        assert!(err.contains("max_client_connections"), "{err}");
    }

    #[test]
    fn request_timeouts_are_refused_at_zero_and_past_an_hour() {
        let coordinator = |argv: &[&str]| settings(argv).map(|s| s.node.coordinator);
        let set = coordinator(&[
            "--write-timeout-ms",
            "1500",
            "--read-timeout-ms",
            "3600000",
            "--speculative-retry-ms",
            "0",
        ])
        .expect("valid timeouts");
        assert_eq!(set.write_timeout, Duration::from_millis(1500));
        assert_eq!(set.read_timeout, Duration::from_secs(3600));
        assert_eq!(set.speculative_retry, Duration::ZERO);
        for flag in ["--write-timeout-ms", "--read-timeout-ms"] {
            for bad in ["0", "3600001", &u64::MAX.to_string()] {
                let err = coordinator(&[flag, bad]).unwrap_err();
                assert!(err.contains(flag) && err.contains("between 1 and"), "{err}");
            }
        }
        let err = coordinator(&["--speculative-retry-ms", &u64::MAX.to_string()]).unwrap_err();
        assert!(
            err.contains("--speculative-retry-ms must be at most"),
            "{err}"
        );
        let (_dir, file) = config_file("read_timeout_ms = 0\n");
        let err = coordinator(&["--config", &file]).unwrap_err();
        assert!(err.contains("read_timeout_ms in"), "{err}");
    }

    #[test]
    fn the_hint_window_is_checked_hours() {
        let window = |argv: &[&str]| settings(argv).map(|s| s.node.hint_window);
        assert_eq!(
            window(&[]),
            Ok(Duration::from_secs(3 * 3600)),
            "the default"
        );
        assert_eq!(
            window(&["--hint-window-hours", "5"]),
            Ok(Duration::from_secs(5 * 3600))
        );
        let err = window(&["--hint-window-hours", "0"]).unwrap_err();
        assert!(
            err.contains("--hint-window-hours must be at least 1"),
            "{err}"
        );
        let err = window(&["--hint-window-hours", &u64::MAX.to_string()]).unwrap_err();
        assert!(err.contains("too large"), "{err}");
        let largest = u64::MAX / 3_600_000;
        assert_eq!(
            window(&["--hint-window-hours", &largest.to_string()]),
            Ok(Duration::from_millis(largest * 3_600_000))
        );
        let err = window(&["--hint-window-hours", &(largest + 1).to_string()]).unwrap_err();
        assert!(err.contains(&format!("at most {largest}")), "{err}");
        let (_dir, file) = config_file("hint_window_hours = 0\n");
        let err = window(&["--config", &file]).unwrap_err();
        assert!(err.contains("hint_window_hours in"), "{err}");
    }

    #[test]
    fn no_vnodes_and_repeated_tokens_are_refused() {
        let err = settings(&["--vnodes", "0"]).map(|_| ()).unwrap_err();
        assert!(err.contains("--vnodes must be at least 1"), "{err}");
        assert_eq!(settings(&["--vnodes", "4"]).map(|s| s.node.vnodes), Ok(4));
        let (_dir, file) = config_file("vnodes = 0\ntokens = [7, 3, 7]\n");
        let err = settings(&["--config", &file]).map(|_| ()).unwrap_err();
        assert!(err.contains("vnodes in"), "{err}");
        let err = settings(&["--config", &file, "--vnodes", "2"])
            .map(|_| ())
            .unwrap_err();
        assert!(err.contains("tokens in"), "{err}");
        assert!(err.contains("token 7 more than once"), "{err}");
        let err = settings(&["--tokens", "1,2,1"]).map(|_| ()).unwrap_err();
        assert!(
            err.contains("--tokens lists token 1 more than once"),
            "{err}"
        );
        assert_eq!(
            settings(&["--config", &file, "--vnodes", "2", "--tokens", "9,1"])
                .map(|s| s.node.initial_tokens),
            Ok(Some(vec![9, 1])),
            "the flag's tokens win over the file's"
        );
    }

    #[test]
    fn a_given_certs_dir_without_the_files_is_refused_not_filled() {
        let given = |argv: &[&str]| settings(argv).map(|s| s.certs_dir_given_by);
        assert_eq!(given(&[]), Ok(None), "the default dir");
        assert_eq!(
            given(&["--certs-dir", "/c"]),
            Ok(Some("--certs-dir".to_string()))
        );
        let (_dir, file) = config_file("certs_dir = \"/c\"\n");
        assert!(given(&["--config", &file])
            .unwrap()
            .is_some_and(|name| name.starts_with("certs_dir in")));

        let root = tempfile::tempdir().unwrap();
        let certs = root.path().join("certs-typo");
        let data = root.path().join("data");
        let err = run(ServerArgs {
            data_dir: Some(data.clone()),
            certs_dir: Some(certs.clone()),
            ..ServerArgs::default()
        })
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("--certs-dir"), "{text}");
        assert!(text.contains("has no ca.pem, node.pem, node.key"), "{text}");
        assert!(text.contains("ringdb certs node NAME"), "{text}");
        assert!(!certs.exists(), "no throw-away CA in a given dir");
        assert!(!data.join("certs").exists(), "nor in the default one");

        // Only the files that are missing are named; all present passes.
        let ca = ClusterCa::generate().unwrap();
        ca.save(&certs, false).unwrap();
        let err = check_given_certs(&certs, "--certs-dir").unwrap_err();
        assert!(
            format!("{err:#}").contains("has no node.pem, node.key."),
            "{err:#}"
        );
        NodeCert::issue(&ca, "n1", &[], &[])
            .unwrap()
            .save(&certs, true)
            .unwrap();
        check_given_certs(&certs, "--certs-dir").unwrap();
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
