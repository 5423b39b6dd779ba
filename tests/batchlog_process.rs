//! A logged batch survives the SIGKILL of its coordinator: three real
//! `ringdb server` processes on 127.0.0.1; node 1 runs with the test-only
//! fault point `RINGDB_TEST_BATCH_STALL_AFTER`, so it writes the batch
//! log, applies the first partitions of a large logged batch and stalls;
//! the test kills it with SIGKILL there. After the replay delay the two
//! survivors hold every partition (read at TWO: both of them), and once
//! node 1 is back every partition reads at ALL, with no row conflicted.

use cql_lite::Value;
use ringdb::client::{Client, ClientTlsConfig};
use ringdb::coordinator::FAULT_ENV;
use ringdb::model::Consistency;
use ringdb::net::tls::{ClusterCa, NodeCert};
use ringdb::query::api::QueryResult;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 150;
const APPLIED_BEFORE_STALL: usize = 40;

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Node {
    data: PathBuf,
    certs: PathBuf,
    client: SocketAddr,
    peer: SocketAddr,
    seed: Option<SocketAddr>,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self, stall_after: Option<usize>) {
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
            .args(["--batchlog-replay-delay-ms", "2000"])
            .env_remove(FAULT_ENV)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(n) = stall_after {
            cmd.env(FAULT_ENV, n.to_string());
        }
        if let Some(seed) = self.seed {
            cmd.args(["--seeds", &seed.to_string()]);
        }
        self.child = Some(cmd.spawn().expect("start ringdb server"));
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn make_node(root: &Path, ca: &ClusterCa, name: &str, seed: Option<SocketAddr>) -> Node {
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
        child: None,
    }
}

struct Harness {
    rt: tokio::runtime::Runtime,
    ca_pem: String,
}

impl Harness {
    fn connect(&self, node: &Node) -> Client {
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

    /// Waits until `node` sees `up` nodes up and normal.
    fn wait_for_up(&self, node: &Node, up: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let c = self.connect(node);
            let s = self.rt.block_on(c.admin_status()).unwrap();
            self.rt.block_on(c.close());
            if s.lines().filter(|l| l.starts_with("UN")).count() == up {
                return;
            }
            assert!(Instant::now() < deadline, "never saw {up} nodes up:\n{s}");
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// `(v, conflict)` of key `k`, or `None` if the row is not there.
    fn read(&self, c: &Client, k: i32) -> Result<Option<(Value, bool)>, String> {
        let r = self
            .rt
            .block_on(c.execute("SELECT v FROM ks.kv WHERE k = ?", vec![Value::Int(k)]))
            .map_err(|e| e.to_string())?;
        match r.result {
            QueryResult::Rows(rs) => Ok(rs
                .rows
                .first()
                .map(|row| (row.values[0].clone(), row.conflict))),
            other => Err(format!("not rows: {other:?}")),
        }
    }

    /// Reads every key at the client's consistency until all are there
    /// (or the deadline passes); returns the keys still missing and the
    /// conflicted ones, from the last round.
    fn read_all_until_whole(&self, c: &Client, patience: Duration) -> (Vec<i32>, Vec<i32>) {
        let deadline = Instant::now() + patience;
        loop {
            let mut missing = Vec::new();
            let mut conflicted = Vec::new();
            for k in 0..PARTITIONS {
                match self.read(c, k) {
                    Ok(Some((v, conflict))) => {
                        assert_eq!(v, Value::Int(k * 3), "key {k}");
                        if conflict {
                            conflicted.push(k);
                        }
                    }
                    Ok(None) | Err(_) => missing.push(k),
                }
            }
            if missing.is_empty() || Instant::now() >= deadline {
                return (missing, conflicted);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

fn batch_text() -> String {
    let mut s = String::from("BEGIN BATCH\n");
    for k in 0..PARTITIONS {
        s.push_str(&format!(
            "INSERT INTO ks.kv (k, v) VALUES ({k}, {});\n",
            k * 3
        ));
    }
    s.push_str("APPLY BATCH");
    s
}

#[test]
fn a_logged_batch_survives_the_sigkill_of_its_coordinator() {
    let started = Instant::now();
    let root = tempfile::tempdir().unwrap();
    let ca = ClusterCa::generate().unwrap();
    ca.save(&root.path().join("certs"), false).unwrap();
    let mut n1 = make_node(root.path(), &ca, "node1", None);
    let seed = Some(n1.peer);
    let mut n2 = make_node(root.path(), &ca, "node2", seed);
    let mut n3 = make_node(root.path(), &ca, "node3", seed);
    let h = Harness {
        rt: tokio::runtime::Runtime::new().unwrap(),
        ca_pem: ca.cert_pem().to_string(),
    };
    n1.start(Some(APPLIED_BEFORE_STALL));
    h.wait_for_up(&n1, 1);
    n2.start(None);
    n3.start(None);
    h.wait_for_up(&n1, 3);

    let c1 = Arc::new(h.connect(&n1));
    c1.set_consistency(Consistency::Quorum);
    for stmt in [
        "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 3}",
        "CREATE TABLE ks.kv (k int PRIMARY KEY, v int)",
    ] {
        h.rt.block_on(c1.execute(stmt, vec![])).unwrap();
    }

    // The batch never answers: node 1 stalls at the fault point.
    let batch_client = c1.clone();
    let _pending =
        h.rt.spawn(async move { batch_client.execute(&batch_text(), vec![]).await });
    let deadline = Instant::now() + Duration::from_secs(30);
    let line = loop {
        let log = std::fs::read_to_string(&n1.log).unwrap_or_default();
        if let Some(l) = log.lines().find(|l| l.contains("stalled after applying")) {
            break l.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "node 1 never reached the fault point; log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        line.contains(&format!(
            "after applying {APPLIED_BEFORE_STALL} of {PARTITIONS} partitions"
        )),
        "{line}"
    );
    n1.kill9();

    // The survivors replay the batch log: every partition on both.
    let c2 = h.connect(&n2);
    c2.set_consistency(Consistency::Two);
    let (missing, conflicted) = h.read_all_until_whole(&c2, Duration::from_secs(20));
    assert!(
        missing.is_empty(),
        "{} partitions missing on the survivors after the replay delay, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(conflicted.is_empty(), "conflicted: {conflicted:?}");

    // Node 1 comes back (without the fault point): at ALL, everything.
    n1.start(None);
    h.wait_for_up(&n2, 3);
    let back = h.connect(&n1);
    back.set_consistency(Consistency::All);
    let (missing, conflicted) = h.read_all_until_whole(&back, Duration::from_secs(20));
    assert!(missing.is_empty(), "missing at ALL: {missing:?}");
    assert!(conflicted.is_empty(), "conflicted at ALL: {conflicted:?}");
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "took {:?}",
        started.elapsed()
    );
}
