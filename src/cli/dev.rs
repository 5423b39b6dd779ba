//! `ringdb dev`: a local ringdb cluster in one command.
//!
//! Creates a throw-away CA and node certificates, starts `--nodes` real
//! `ringdb server` processes on 127.0.0.1 with their data under one
//! directory (node 1 is everyone's seed), waits until every node answers
//! and gossip sees them all up, opens the shell on node 1, and stops the
//! nodes cleanly when the shell exits.

use super::local_cluster::{LocalCluster, LocalClusterSpec, SERVER_NAME};
use ringdb::shell::ShellArgs;
use std::path::PathBuf;

/// Arguments of `ringdb dev`.
#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Directory holding the nodes' data, certificates and logs (kept
    /// between runs; delete it to start afresh).
    #[arg(long, default_value = "ringdb-dev")]
    pub dir: PathBuf,
    /// Number of nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub nodes: u16,
    /// Client port of node 1 (node i uses port + i - 1).
    #[arg(long, default_value_t = 9042)]
    pub port: u16,
    /// Peer (gossip and replication) port of node 1 (node i uses
    /// peer-port + i - 1).
    #[arg(long, default_value_t = 7000)]
    pub peer_port: u16,
    /// Run these statements instead of an interactive shell.
    #[arg(short = 'e', long = "execute")]
    pub execute: Option<String>,
    /// Keyspace to use from the start.
    #[arg(short = 'k', long)]
    pub keyspace: Option<String>,
}

/// Runs `ringdb dev`; returns the shell's exit code.
pub fn run(args: DevArgs) -> anyhow::Result<i32> {
    let spec =
        LocalClusterSpec::consecutive(args.dir.clone(), args.nodes, args.port, args.peer_port)?;
    let last_port = spec.ports.last().map_or(args.port, |&(client, _)| client);
    let cluster = LocalCluster::start(spec)?;
    eprintln!(
        "ringdb dev: {} node(s) up, clients on 127.0.0.1:{}..{} (data in {}); leave the shell to stop them",
        args.nodes,
        args.port,
        last_port,
        args.dir.display()
    );
    let shell = ShellArgs {
        host: format!("127.0.0.1:{}", args.port),
        keyspace: args.keyspace,
        execute: args.execute,
        file: None,
        ca_cert: Some(cluster.ca_cert().to_path_buf()),
        server_name: SERVER_NAME.into(),
        no_color: false,
    };
    let code = ringdb::shell::run(shell);
    cluster.stop();
    Ok(code)
}
