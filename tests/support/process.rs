//! Real `ringdb server` processes on 127.0.0.1 for tests: each node has its
//! own data directory, certificate and log file, and is stopped with
//! SIGKILL (or SIGTERM) like an operator would.

use ringdb::client::{Client, ClientTlsConfig};
use ringdb::coordinator::FAULT_ENV;
use ringdb::net::tls::{ClusterCa, NodeCert};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    ringdb::net::udp::pick_free_local_ports(1).unwrap()[0]
}

/// One server process (or its place while it is stopped).
pub struct Node {
    pub data: PathBuf,
    pub certs: PathBuf,
    pub client: SocketAddr,
    pub peer: SocketAddr,
    pub seed: Option<SocketAddr>,
    pub log: PathBuf,
    /// Flags added to every start (after the common ones).
    pub extra_args: Vec<String>,
    pub child: Option<Child>,
}

impl Node {
    /// Starts the server (write timeout 1 s, output appended to `log`).
    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    /// Starts the server with extra environment variables (a test-only
    /// fault point, say). The fault point is never inherited otherwise.
    pub fn start_with_env(&mut self, env: &[(&str, String)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringdb"));
        cmd.arg("server")
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--certs-dir")
            .arg(&self.certs)
            .args(["--listen", &self.client.to_string()])
            .args(["--peer-listen", &self.peer.to_string()])
            .args(["--write-timeout-ms", "1000"])
            // One async thread, as `ringdb dev` gives each of three nodes
            // on two CPUs (the single-threaded runtime): the tests run
            // what ships.
            .args(["--worker-threads", "1"])
            .args(&self.extra_args)
            .env_remove(FAULT_ENV)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(seed) = self.seed {
            cmd.args(["--seeds", &seed.to_string()]);
        }
        self.child = Some(cmd.spawn().expect("start ringdb server"));
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM (a clean stop), then reap.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            c.wait().unwrap();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `ringdb admin <command>` against `node` (`command` split at
/// whitespace, so it may carry arguments), trusting the CA saved under
/// `<root>/certs`; its exit status and output.
pub fn run_admin(root: &Path, node: &Node, command: &str) -> std::process::Output {
    run_admin_at(root, node.client, command)
}

/// [`run_admin`] against the node whose client listener is `host` (for a
/// thread that cannot borrow the [`Node`]).
pub fn run_admin_at(root: &Path, host: SocketAddr, command: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ringdb"))
        .arg("admin")
        .args(command.split_whitespace())
        .args(["--host", &host.to_string()])
        .arg("--ca-cert")
        .arg(root.join("certs").join("ca.pem"))
        .output()
        .unwrap_or_else(|e| panic!("run ringdb admin {command}: {e}"))
}

/// [`run_admin`] that must succeed; its standard output.
pub fn admin_ok(root: &Path, node: &Node, command: &str) -> String {
    let out = run_admin(root, node, command);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "admin {command} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A node named `name` under `root`, with a certificate from `ca`, free
/// ports, and `seed` as its seed; not started.
pub fn make_node(root: &Path, ca: &ClusterCa, name: &str, seed: Option<SocketAddr>) -> Node {
    let certs = root.join("certs").join(name);
    NodeCert::issue(ca, name, &["127.0.0.1".parse().unwrap()], &[])
        .unwrap()
        .save(&certs, true)
        .unwrap();
    Node {
        data: root.join(name),
        certs,
        client: SocketAddr::from(([127, 0, 0, 1], free_port())),
        peer: SocketAddr::from(([127, 0, 0, 1], free_port())),
        seed,
        log: root.join(format!("{name}.log")),
        extra_args: Vec::new(),
        child: None,
    }
}

/// `count` nodes named `node1`, `node2`, ... under `root`, node 1 the seed
/// of all; `configure` adjusts each (1-based index) before any starts, its
/// flags say. Starts node 1 and waits until it is up, starts the others,
/// all with `env`, and waits until node 1 sees every one up and normal.
#[allow(dead_code)] // Not every test file that includes this module uses it.
pub fn start_nodes(
    cluster: &Cluster,
    root: &Path,
    ca: &ClusterCa,
    count: usize,
    env: &[(&str, String)],
    mut configure: impl FnMut(usize, &mut Node),
) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::with_capacity(count);
    for i in 1..=count {
        let seed = nodes.first().map(|n1| n1.peer);
        let mut node = make_node(root, ca, &format!("node{i}"), seed);
        configure(i, &mut node);
        nodes.push(node);
    }
    for (i, node) in nodes.iter_mut().enumerate() {
        node.start_with_env(env);
        if i == 0 {
            cluster.wait_for_up(node, 1);
        }
    }
    cluster.wait_for_up(&nodes[0], count);
    nodes
}

/// The client side of a test: a runtime and the CA clients trust.
pub struct Cluster {
    pub rt: tokio::runtime::Runtime,
    pub ca_pem: String,
}

impl Cluster {
    /// Connects to `node`, retrying for up to a minute while it starts.
    pub fn connect(&self, node: &Node) -> Client {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let tls = ClientTlsConfig::new(self.ca_pem.clone(), "ringdb-node");
            let attempt = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(3), Client::connect(node.client, tls))
                    .await
            });
            if let Ok(Ok(c)) = attempt {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "node at {} never answered; log {}",
                node.client,
                node.log.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `ringdb admin status` as `node` answers it.
    pub fn status(&self, node: &Node) -> String {
        let c = self.connect(node);
        let s = self.rt.block_on(c.admin_status()).unwrap();
        self.rt.block_on(c.close());
        s
    }

    /// Waits until `node` sees `up` nodes up and normal; its last status.
    pub fn wait_for_up(&self, node: &Node, up: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.status(node);
            if s.lines().filter(|l| l.starts_with("UN")).count() == up {
                return s;
            }
            assert!(Instant::now() < deadline, "never saw {up} nodes up:\n{s}");
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// A new cluster CA saved under `<root>/certs`, and the client side that
/// trusts it.
pub fn new_cluster(root: &Path) -> (ClusterCa, Cluster) {
    let ca = ClusterCa::generate().unwrap();
    ca.save(&root.join("certs"), false).unwrap();
    let cluster = Cluster {
        rt: tokio::runtime::Runtime::new().unwrap(),
        ca_pem: ca.cert_pem().to_string(),
    };
    (ca, cluster)
}

impl Cluster {
    /// Creates keyspace `ks` (RF=3) and table `ks.kv (k int PRIMARY KEY,
    /// v int)` through `client`.
    pub fn create_kv_rf3(&self, client: &Client) {
        for ddl in [
            "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 3}",
            "CREATE TABLE ks.kv (k int PRIMARY KEY, v int)",
        ] {
            self.rt.block_on(client.execute(ddl, vec![])).unwrap();
        }
    }
}
