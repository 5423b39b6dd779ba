//! A local cluster of real `ringdb server` processes on 127.0.0.1, shared
//! by `ringdb dev` and `ringdb bench ycsb`.
//!
//! Creates a throw-away CA and node certificates under one directory,
//! starts the nodes (node 1 first: it is everyone's seed), waits until
//! every node answers clients and its gossip sees all of them up, and stops
//! the processes (SIGTERM, then SIGKILL) when the [`LocalCluster`] is
//! dropped.

use anyhow::Context;
use ringdb::client::{Client, ClientTlsConfig};
use ringdb::net::tls::{ClusterCa, NodeCert};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The name every local node's certificate carries (and clients expect).
pub const SERVER_NAME: &str = "ringdb-node";

/// What to start.
#[derive(Debug, Clone)]
pub struct LocalClusterSpec {
    /// Holds `certs/`, one data directory `node<i>/` and one log
    /// `node<i>.log` per node.
    pub dir: PathBuf,
    /// Client and peer port of each node, node 1 first (node 1 is the seed).
    pub ports: Vec<(u16, u16)>,
    /// Extra `ringdb server` arguments given to every node. Unless they
    /// set `--worker-threads`, each node gets
    /// [`worker_threads_per_node`].
    pub server_args: Vec<OsString>,
}

impl LocalClusterSpec {
    /// `nodes` nodes on consecutive ports: node i listens for clients on
    /// `port + i - 1` and for peers on `peer_port + i - 1`. An error if a
    /// port would be above 65535.
    pub fn consecutive(
        dir: PathBuf,
        nodes: u16,
        port: u16,
        peer_port: u16,
    ) -> anyhow::Result<LocalClusterSpec> {
        let clients = consecutive_ports(port, nodes, "--port")?;
        let peers = consecutive_ports(peer_port, nodes, "--peer-port")?;
        Ok(LocalClusterSpec {
            dir,
            ports: clients.into_iter().zip(peers).collect(),
            server_args: Vec::new(),
        })
    }

    /// `nodes` nodes on ports that are free now, picked below the
    /// system's ephemeral range so that no other socket binding port 0 can
    /// take one before the node starts
    /// ([`ringdb::net::udp::pick_free_local_ports`]).
    pub fn free_ports(dir: PathBuf, nodes: u16) -> anyhow::Result<LocalClusterSpec> {
        let picked = ringdb::net::udp::pick_free_local_ports(2 * usize::from(nodes))
            .context("picking free UDP ports")?;
        Ok(LocalClusterSpec {
            dir,
            ports: picked.chunks(2).map(|p| (p[0], p[1])).collect(),
            server_args: Vec::new(),
        })
    }
}

/// `nodes` ports from `first` on, one per node; an error naming `flag` (the
/// option `first` came from) when the last would be above 65535.
pub fn consecutive_ports(first: u16, nodes: u16, flag: &str) -> anyhow::Result<Vec<u16>> {
    (0..nodes)
        .map(|i| {
            first.checked_add(i).with_context(|| {
                format!(
                    "{flag} {first} leaves no room for {nodes} nodes on consecutive ports \
                     (node {} would need port {}); use {flag} {} or lower",
                    u32::from(i) + 1,
                    u32::from(first) + u32::from(i),
                    u16::MAX - (nodes - 1),
                )
            })
        })
        .collect()
}

/// A server child process, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct ServerProcess {
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

/// Running nodes; dropping it stops them (the data directories stay).
pub struct LocalCluster {
    servers: Vec<ServerProcess>,
    ca: PathBuf,
    spec: LocalClusterSpec,
}

impl LocalCluster {
    /// Creates the certificates (unless they exist), starts every node and
    /// waits until each answers clients and sees all nodes up (60 s per
    /// node at most). Must not be called from within a Tokio runtime.
    pub fn start(spec: LocalClusterSpec) -> anyhow::Result<LocalCluster> {
        let nodes = spec.ports.len();
        anyhow::ensure!(nodes > 0, "a cluster needs at least one node");
        let ca = ensure_certs(&spec.dir, nodes)?;
        let mut servers = Vec::new();
        for i in 0..nodes {
            servers.push(start_server(&spec, i)?);
            if i == 0 {
                // The seed first, so the others find it at once.
                wait_until_up(
                    &mut servers[0],
                    spec.ports[0].0,
                    &ca,
                    &log_path(&spec, 0),
                    1,
                )?;
            }
        }
        for (i, server) in servers.iter_mut().enumerate() {
            wait_until_up(server, spec.ports[i].0, &ca, &log_path(&spec, i), nodes)?;
        }
        Ok(LocalCluster { servers, ca, spec })
    }

    /// The cluster CA certificate (what clients trust).
    pub fn ca_cert(&self) -> &Path {
        &self.ca
    }

    /// Every node's client address, node 1 first.
    pub fn client_addrs(&self) -> Vec<SocketAddr> {
        self.spec
            .ports
            .iter()
            .map(|(client, _)| SocketAddr::from(([127, 0, 0, 1], *client)))
            .collect()
    }

    /// The process id of each node, node 1 first.
    pub fn pids(&self) -> Vec<u32> {
        self.servers.iter().map(|s| s.child.id()).collect()
    }

    /// Stops every node and waits for them to exit.
    pub fn stop(self) {
        drop(self);
    }
}

fn log_path(spec: &LocalClusterSpec, i: usize) -> PathBuf {
    spec.dir.join(format!("node{}.log", i + 1))
}

/// Creates the CA and a certificate for each node, unless they exist;
/// returns the CA certificate's path.
fn ensure_certs(dir: &Path, nodes: usize) -> anyhow::Result<PathBuf> {
    let certs = dir.join("certs");
    let ca = if certs.join("ca.key").exists() {
        ClusterCa::load(&certs).context("loading the local CA")?
    } else {
        let ca = ClusterCa::generate().context("generating the local CA")?;
        ca.save(&certs, false).context("saving the local CA")?;
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

fn start_server(spec: &LocalClusterSpec, i: usize) -> anyhow::Result<ServerProcess> {
    let dir = &spec.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let log_path = log_path(spec, i);
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let exe = std::env::current_exe().context("finding the ringdb binary")?;
    let (port, peer_port) = spec.ports[i];
    let mut command = Command::new(exe);
    command
        .arg("server")
        .arg("--data-dir")
        .arg(dir.join(format!("node{}", i + 1)))
        .arg("--certs-dir")
        .arg(dir.join("certs").join(format!("node{}", i + 1)))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--peer-listen")
        .arg(format!("127.0.0.1:{peer_port}"));
    if i > 0 {
        command
            .arg("--seeds")
            .arg(format!("127.0.0.1:{}", spec.ports[0].1));
    }
    command.args(&spec.server_args);
    if !spec
        .server_args
        .iter()
        .any(|a| a.to_string_lossy().starts_with("--worker-threads"))
    {
        command
            .arg("--worker-threads")
            .arg(worker_threads_per_node(spec.ports.len()).to_string());
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting ringdb server")?;
    Ok(ServerProcess { child })
}

/// Async worker threads for each of `nodes` servers sharing this machine:
/// its CPUs split between them, at least one each. More threads than CPUs
/// only add wake-ups and preemption (measured in docs/performance.md).
pub fn worker_threads_per_node(nodes: usize) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    (cpus / nodes.max(1)).max(1)
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
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let tls = ClientTlsConfig::new(ca_pem.clone(), SERVER_NAME);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_ports_stop_at_65535_with_an_error_naming_the_flag() {
        assert_eq!(
            consecutive_ports(9042, 3, "--port").unwrap(),
            [9042, 9043, 9044]
        );
        assert_eq!(
            consecutive_ports(65533, 3, "--port").unwrap(),
            [65533, 65534, 65535],
            "the last port fits"
        );
        let err = consecutive_ports(65534, 3, "--port").unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("--port 65534"), "{text}");
        assert!(text.contains("--port 65533 or lower"), "{text}");
        let err =
            LocalClusterSpec::consecutive(PathBuf::from("/x"), 2, 9042, u16::MAX).unwrap_err();
        assert!(format!("{err:#}").contains("--peer-port"), "{err:#}");
        let spec = LocalClusterSpec::consecutive(PathBuf::from("/x"), 2, 9042, 7000).unwrap();
        assert_eq!(spec.ports, [(9042, 7000), (9043, 7001)]);
    }

    #[test]
    fn nodes_split_the_cpus_and_each_gets_at_least_one_thread() {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(worker_threads_per_node(1), cpus);
        for nodes in 0..=2 * cpus + 1 {
            let each = worker_threads_per_node(nodes);
            assert!(each >= 1);
            assert!(
                each * nodes.max(1) <= cpus.max(nodes),
                "{nodes} nodes x {each} threads on {cpus} CPUs"
            );
        }
    }
}
