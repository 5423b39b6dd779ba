//! `ringdb admin`: operations on a running node.

use anyhow::Context;
use ringdb::client::protocol::RepairRequest;
use ringdb::client::{Client, ClientTlsConfig};
use std::path::PathBuf;

/// Arguments of `ringdb admin`.
#[derive(clap::Args, Debug)]
pub struct AdminArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: AdminCommand,
    /// The node to ask, `host:port` of its client listener.
    #[arg(long, global = true, default_value = "127.0.0.1:9042")]
    pub host: String,
    /// The CA certificate (PEM) to trust; `$RINGDB_CA_CERT` when omitted.
    #[arg(long, global = true)]
    pub ca_cert: Option<PathBuf>,
}

/// `ringdb admin` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum AdminCommand {
    /// Every node as this node sees it: state (U/D, N/J/L), address, load,
    /// tokens, rack, host id, schema version (like `nodetool status`).
    Status,
    /// Takes the node out of the ring: it shows as leaving (UL) while it
    /// hands the data of its ranges to the nodes that take them over, then
    /// leaves and stops. Its data directory can then be removed.
    Decommission,
    /// Writes every table's memtables to SSTables and waits until the
    /// compactions that then become due are done (like `nodetool flush`);
    /// the commit log segments they covered are deleted.
    Flush,
    /// Flushes, then compacts every table into one SSTable (like
    /// `nodetool compact`): tombstones past `gc_grace_seconds` are purged
    /// and the causal contexts of rows are pruned of retired stamping ids.
    Compact,
    /// Anti-entropy repair (like `nodetool repair`): compares what the
    /// replicas of every range this node replicates hold, by hashes of
    /// slices of the range, and sends each replica what it lacks. Run it
    /// on every node (or with `--primary-range` on every node) at least
    /// once per `gc_grace_seconds`. Fails, after repairing what it could,
    /// when a replica was down or did not answer.
    Repair {
        /// Only this keyspace.
        keyspace: Option<String>,
        /// Only this table of the keyspace.
        table: Option<String>,
        /// Only the ranges this node is the first replica of: run on every
        /// node, each range is repaired once instead of once per replica.
        #[arg(long, short = 'p')]
        primary_range: bool,
    },
    /// Takes a node that is down for good out of the ring, from this node
    /// (like `nodetool removenode`): the ranges it replicated are copied
    /// to the nodes that take them over from their other replicas, then it
    /// is gossiped as removed, and should it ever restart with its old
    /// data it is refused. Needs every other node up. For a node that runs,
    /// use `decommission` on it.
    Removenode {
        /// The host id of the node to remove, as `ringdb admin status`
        /// shows it (16 hex digits).
        #[arg(value_parser = parse_host_id)]
        host_id: u64,
    },
    /// Drops the data of the ranges this node no longer replicates (like
    /// `nodetool cleanup`): after a node joined and took ranges from this
    /// one, their old copies stay on disk until then. Rewrites every table.
    /// Refused while a node is joining, leaving or down.
    Cleanup {
        /// Only this keyspace.
        keyspace: Option<String>,
        /// Only this table of the keyspace.
        table: Option<String>,
    },
    /// Sets how many MiB per second all range streams of this node
    /// together may copy (joins, decommissions, removenode, repair), until
    /// it restarts (like `nodetool setstreamthroughput`); 0 lifts the
    /// limit. Streams already running use it from their next page. The
    /// default comes from `stream_throughput_mib` (64).
    Setstreamthroughput {
        /// MiB per second (0: no limit).
        mib_per_sec: u64,
    },
}

/// Runs `ringdb admin`.
pub fn run(args: AdminArgs) -> anyhow::Result<()> {
    let ca_path = args
        .ca_cert
        .or_else(|| std::env::var_os("RINGDB_CA_CERT").map(PathBuf::from))
        .context("give the cluster's CA certificate with --ca-cert or $RINGDB_CA_CERT")?;
    let ca = std::fs::read_to_string(&ca_path)
        .with_context(|| format!("reading {}", ca_path.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let addr = tokio::net::lookup_host(args.host.as_str())
            .await
            .with_context(|| format!("resolving {}", args.host))?
            .next()
            .with_context(|| format!("{} resolves to no address", args.host))?;
        let connect = Client::connect(addr, ClientTlsConfig::new(ca.clone(), "ringdb-node"));
        let client = tokio::time::timeout(std::time::Duration::from_secs(10), connect)
            .await
            .map_err(|_| {
                anyhow::anyhow!("no answer from {addr} within 10 s: is a node running there?")
            })?
            .with_context(|| format!("connecting to {addr}"))?;
        match args.command {
            AdminCommand::Status => print!("{}", client.admin_status().await?),
            AdminCommand::Decommission => {
                // Handing the data over takes as long as the data takes.
                client.set_timeout(std::time::Duration::from_secs(24 * 3600));
                eprintln!("decommissioning {addr}: handing its ranges over...");
                print!("{}", client.admin_decommission().await?);
            }
            AdminCommand::Flush => {
                // Writing out 64 MiB memtables and compacting takes seconds.
                client.set_timeout(std::time::Duration::from_secs(3600));
                print!("{}", client.admin_flush().await?);
            }
            AdminCommand::Compact => {
                // Rewriting every table takes as long as the data takes.
                client.set_timeout(std::time::Duration::from_secs(24 * 3600));
                print!("{}", client.admin_compact().await?);
            }
            AdminCommand::Repair {
                keyspace,
                table,
                primary_range,
            } => {
                // Comparing and streaming takes as long as the data takes.
                client.set_timeout(std::time::Duration::from_secs(7 * 24 * 3600));
                let request = RepairRequest {
                    keyspace,
                    table,
                    primary_range,
                };
                // The node answers once at the end; meanwhile a second
                // connection reads its progress from `admin status` for a
                // bar of spans (hidden when stderr is not a terminal).
                let bar = indicatif::ProgressBar::new(0);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg} [{bar:30}] {pos}/{len} spans {elapsed}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar.set_message(format!("repairing through {addr}"));
                bar.enable_steady_tick(std::time::Duration::from_millis(200));
                let watcher =
                    Client::connect(addr, ClientTlsConfig::new(ca.clone(), "ringdb-node"))
                        .await
                        .ok();
                let repair = client.admin_repair(request);
                tokio::pin!(repair);
                let answer = loop {
                    tokio::select! {
                        answer = &mut repair => break answer,
                        _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {
                            let Some(watcher) = &watcher else { continue };
                            if let Ok(status) = watcher.admin_status().await {
                                if let Some(p) = ringdb::node::parse_repair_line(&status) {
                                    bar.set_length(p.spans_total as u64);
                                    bar.set_position(p.spans_done as u64);
                                }
                            }
                        }
                    }
                };
                bar.finish_and_clear();
                if let Some(watcher) = watcher {
                    watcher.close().await;
                }
                print!("{}", answer?);
            }
            AdminCommand::Removenode { host_id } => {
                // Copying the ranges takes as long as the data takes.
                client.set_timeout(std::time::Duration::from_secs(24 * 3600));
                eprintln!("removing node {host_id:016x} through {addr}: copying its ranges...");
                print!("{}", client.admin_remove_node(host_id).await?);
            }
            AdminCommand::Setstreamthroughput { mib_per_sec } => {
                print!("{}", client.admin_set_stream_throughput(mib_per_sec).await?);
            }
            AdminCommand::Cleanup { keyspace, table } => {
                // Rewriting every table takes as long as the data takes.
                client.set_timeout(std::time::Duration::from_secs(24 * 3600));
                print!("{}", client.admin_cleanup(keyspace, table).await?);
            }
        }
        client.close().await;
        anyhow::Ok(())
    })
}

/// Parses a host id as `ringdb admin status` shows it: hexadecimal, with or
/// without `0x`.
fn parse_host_id(text: &str) -> Result<u64, String> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    if digits.is_empty() || digits.len() > 16 {
        return Err(format!(
            "a host id is 1 to 16 hexadecimal digits (the Host ID column of `ringdb admin \
             status`), not {text:?}"
        ));
    }
    u64::from_str_radix(digits, 16)
        .map_err(|_| format!("{text:?} is not a host id: expected hexadecimal digits"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ids_parse_as_status_shows_them_and_nonsense_is_refused() {
        assert_eq!(parse_host_id("00000000000000ff"), Ok(255));
        assert_eq!(parse_host_id("0xFF"), Ok(255));
        assert_eq!(parse_host_id("ffffffffffffffff"), Ok(u64::MAX));
        assert!(parse_host_id("").is_err());
        assert!(parse_host_id("1ffffffffffffffff").is_err());
        assert!(parse_host_id("node4").is_err());
        assert!(parse_host_id("-1").is_err());
    }
}
