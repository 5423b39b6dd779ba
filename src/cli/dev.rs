//! `ringdb dev`: a local ringdb cluster in one command.
//!
//! Creates a throw-away CA and node certificates, starts `--nodes` real
//! `ringdb server` processes on 127.0.0.1 with their data under one
//! directory (node 1 is everyone's seed), waits until every node answers
//! and gossip sees them all up, opens the shell on node 1, and stops the
//! nodes cleanly when the shell exits.

use anyhow::Context;
use ringdb::client::{Client, ClientTlsConfig};
use ringdb::net::tls::{ClusterCa, NodeCert};
use ringdb::shell::ShellArgs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Arguments of `ringdb dev`.
#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Directory holding the node's data, certificates and log (kept
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

/// A server child process, stopped (SIGTERM, then SIGKILL) when dropped.
struct ServerProcess {
    child: Child,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) with a pid we spawned and a valid signal.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates the CA and a certificate for each node, unless they exist.
fn ensure_certs(dir: &Path, nodes: u16) -> anyhow::Result<PathBuf> {
    let certs = dir.join("certs");
    let ca = if certs.join("ca.key").exists() {
        ClusterCa::load(&certs).context("loading the dev CA")?
    } else {
        let ca = ClusterCa::generate().context("generating the dev CA")?;
        ca.save(&certs, false).context("saving the dev CA")?;
        ca
    };
    for i in 1..=nodes {
        let node_dir = certs.join(format!("node{i}"));
        if !node_dir.join("node.pem").exists() {
            NodeCert::issue(&ca, &format!("node{i}"), &["127.0.0.1".parse()?], &[])
                .context("issuing a node certificate")?
                .save(&node_dir, true)
                .with_context(|| format!("saving {}", node_dir.display()))?;
        }
    }
    Ok(certs.join("ca.pem"))
}

fn start_server(dir: &Path, i: u16, args: &DevArgs) -> anyhow::Result<ServerProcess> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let log_path = dir.join(format!("node{i}.log"));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let exe = std::env::current_exe().context("finding the ringdb binary")?;
    let mut command = Command::new(exe);
    command
        .arg("server")
        .arg("--data-dir")
        .arg(dir.join(format!("node{i}")))
        .arg("--certs-dir")
        .arg(dir.join("certs").join(format!("node{i}")))
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", args.port + i - 1))
        .arg("--peer-listen")
        .arg(format!("127.0.0.1:{}", args.peer_port + i - 1));
    if i > 1 {
        command
            .arg("--seeds")
            .arg(format!("127.0.0.1:{}", args.peer_port));
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting ringdb server")?;
    Ok(ServerProcess { child })
}

/// Waits until the node accepts a client connection and its gossip sees
/// `expected` nodes up.
fn wait_until_up(
    server: &mut ServerProcess,
    port: u16,
    ca: &Path,
    log: &Path,
    expected: usize,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let ca_pem =
        std::fs::read_to_string(ca).with_context(|| format!("reading {}", ca.display()))?;
    loop {
        if let Some(status) = server.child.try_wait()? {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            anyhow::bail!("ringdb server exited ({status}) before it was up; its log:\n{tail}");
        }
        let addr = format!("127.0.0.1:{port}").parse()?;
        let tls = ClientTlsConfig::new(ca_pem.clone(), "ringdb-node");
        let up = runtime.block_on(async {
            let client = tokio::time::timeout(Duration::from_secs(2), Client::connect(addr, tls))
                .await
                .ok()?
                .ok()?;
            let status = client.admin_status().await.ok();
            client.close().await;
            status
        });
        if let Some(status) = up {
            let nodes_up = status.lines().filter(|l| l.starts_with("UN")).count();
            if nodes_up >= expected {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "ringdb server on port {port} was not up with {expected} nodes within 60 s; see {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `ringdb dev`; returns the shell's exit code.
pub fn run(args: DevArgs) -> anyhow::Result<i32> {
    let ca = ensure_certs(&args.dir, args.nodes)?;
    let mut servers = Vec::new();
    for i in 1..=args.nodes {
        servers.push(start_server(&args.dir, i, &args)?);
        if i == 1 {
            // The seed first, so the others find it at once.
            let log = args.dir.join("node1.log");
            wait_until_up(&mut servers[0], args.port, &ca, &log, 1)?;
        }
    }
    for (i, server) in servers.iter_mut().enumerate() {
        let log = args.dir.join(format!("node{}.log", i + 1));
        wait_until_up(server, args.port + i as u16, &ca, &log, args.nodes as usize)?;
    }
    eprintln!(
        "ringdb dev: {} node(s) up, clients on 127.0.0.1:{}..{} (data in {}); leave the shell to stop them",
        args.nodes,
        args.port,
        args.port + args.nodes - 1,
        args.dir.display()
    );
    let shell = ShellArgs {
        host: format!("127.0.0.1:{}", args.port),
        keyspace: args.keyspace,
        execute: args.execute,
        file: None,
        ca_cert: Some(ca),
        server_name: "ringdb-node".into(),
        no_color: false,
    };
    let code = ringdb::shell::run(shell);
    drop(servers);
    Ok(code)
}
