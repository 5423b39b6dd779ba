//! A logged batch survives the SIGKILL of its coordinator: three real
//! `ringdb server` processes on 127.0.0.1; node 1 runs with the test-only
//! fault point `RINGDB_TEST_BATCH_STALL_AFTER`, so it writes the batch
//! log, applies the first partitions of a large logged batch and stalls;
//! the test kills it with SIGKILL there. After the replay delay the two
//! survivors hold every partition (read at TWO: both of them), and once
//! node 1 is back every partition reads at ALL, with no row conflicted.

mod support;

use cql_lite::Value;
use ringdb::client::Client;
use ringdb::coordinator::FAULT_ENV;
use ringdb::model::Consistency;
use ringdb::net::tls::ClusterCa;
use ringdb::query::api::QueryResult;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::process::{make_node, Cluster};

const PARTITIONS: i32 = 150;
const APPLIED_BEFORE_STALL: usize = 40;

/// What this test reads, on top of the shared harness.
impl Cluster {
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
    /// conflicted ones, from the last round, and its first read error.
    fn read_all_until_whole(
        &self,
        c: &Client,
        patience: Duration,
    ) -> (Vec<i32>, Vec<i32>, Option<String>) {
        let deadline = Instant::now() + patience;
        loop {
            let mut missing = Vec::new();
            let mut conflicted = Vec::new();
            let mut error = None;
            for k in 0..PARTITIONS {
                match self.read(c, k) {
                    Ok(Some((v, conflict))) => {
                        assert_eq!(v, Value::Int(k * 3), "key {k}");
                        if conflict {
                            conflicted.push(k);
                        }
                    }
                    Ok(None) => missing.push(k),
                    Err(e) => {
                        error.get_or_insert(format!("key {k}: {e}"));
                        missing.push(k);
                    }
                }
            }
            if missing.is_empty() || Instant::now() >= deadline {
                return (missing, conflicted, error);
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
    let root = tempfile::tempdir().unwrap();
    let ca = ClusterCa::generate().unwrap();
    ca.save(&root.path().join("certs"), false).unwrap();
    let mut n1 = make_node(root.path(), &ca, "node1", None);
    let seed = Some(n1.peer);
    let mut n2 = make_node(root.path(), &ca, "node2", seed);
    let mut n3 = make_node(root.path(), &ca, "node3", seed);
    for n in [&mut n1, &mut n2, &mut n3] {
        n.extra_args = vec!["--batchlog-replay-delay-ms".into(), "2000".into()];
    }
    let h = Cluster {
        rt: tokio::runtime::Runtime::new().unwrap(),
        ca_pem: ca.cert_pem().to_string(),
    };
    n1.start_with_env(&[(FAULT_ENV, APPLIED_BEFORE_STALL.to_string())]);
    h.wait_for_up(&n1, 1);
    n2.start();
    n3.start();
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
    let (missing, conflicted, error) = h.read_all_until_whole(&c2, Duration::from_secs(20));
    assert!(
        missing.is_empty(),
        "{} partitions missing on the survivors after the replay delay, e.g. {:?} (first error: {error:?})",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(conflicted.is_empty(), "conflicted: {conflicted:?}");

    // Node 1 comes back (without the fault point): at ALL, everything.
    n1.start();
    h.wait_for_up(&n2, 3);
    // A read at ALL through node 1 needs node 1 to see the others up.
    h.wait_for_up(&n1, 3);
    let back = h.connect(&n1);
    back.set_consistency(Consistency::All);
    let (missing, conflicted, error) = h.read_all_until_whole(&back, Duration::from_secs(20));
    assert!(
        missing.is_empty(),
        "missing at ALL: {missing:?} (first error: {error:?})"
    );
    assert!(conflicted.is_empty(), "conflicted at ALL: {conflicted:?}");

    // `admin status` tells the story: a survivor replayed the entry, and
    // once every replica was back no node holds it any more.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let statuses: Vec<String> = [&n1, &n2, &n3].iter().map(|n| h.status(n)).collect();
        let sum = |name: &str| -> u64 { statuses.iter().map(|s| batch_counter(s, name)).sum() };
        if sum("replayed_entries") >= 1 && sum("held") == 0 {
            assert_eq!(sum("log_failures"), 0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the batch log never drained: {statuses:#?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A counter of the `Batch log:` line of `admin status`.
fn batch_counter(status: &str, name: &str) -> u64 {
    let line = status
        .lines()
        .find(|l| l.starts_with("Batch log:"))
        .expect("a batch log line");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}
