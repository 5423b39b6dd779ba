//! A real cluster of three `ringdb server` processes on 127.0.0.1.
//!
//! - Writes at QUORUM keep succeeding while one node is killed with
//!   SIGKILL; after it restarts, the others replay their hints to it, and
//!   every acknowledged write is readable at ONE from that node alone (the
//!   other two stopped).
//! - A node whose certificate comes from another CA never joins.
//! - Schema changes made concurrently on two nodes merge: two nodes, each
//!   alone (a partition), create the same keyspace and different tables;
//!   once joined, both tables exist on both and take writes. The same
//!   table name created on both keeps the earliest creation, without the
//!   other's rows. Two tables created at the same moment on the joined
//!   cluster both exist too.
//! - A client of a node killed (SIGKILL) and started again connects again
//!   by itself, on the keyspace it was using.
//! - SIGTERM while a node is still starting (here: waiting for a seed that
//!   never answers) stops it cleanly, with exit status 0, instead of by
//!   the signal's default action.

mod support;

use cql_lite::Value;
use ringdb::client::{Client, ClientError};
use ringdb::model::Consistency;
use ringdb::net::tls::ClusterCa;
use ringdb::query::api::{QueryError, QueryResult};
use std::time::{Duration, Instant};
use support::process::{make_node, new_cluster, start_nodes, Cluster, Node};

fn hint_line(status: &str) -> (u64, u64, u64) {
    let line = status
        .lines()
        .find(|l| l.starts_with("Hints:"))
        .expect("hints line");
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .expect("hint counter")
    };
    (
        field("stored"),
        field("delivered"),
        field("pending_targets"),
    )
}

#[test]
fn quorum_writes_survive_sigkill_and_hints_reach_the_restarted_node() {
    let root = tempfile::tempdir().unwrap();
    let (ca, cluster) = new_cluster(root.path());
    // Each node in a rack of its own (`--rack`): with RF=3 every node
    // still holds every key, and gossip spreads each node's rack.
    let nodes = start_nodes(&cluster, root.path(), &ca, 3, &[], |i, node| {
        node.extra_args
            .extend(["--rack".into(), format!("rack{i}")])
    });
    let [mut n1, mut n2, mut n3] = <[Node; 3]>::try_from(nodes).ok().unwrap();
    let status = cluster.wait_for_up(&n3, 3);
    for (i, node) in [&n1, &n2, &n3].into_iter().enumerate() {
        let line = status
            .lines()
            .find(|l| l.starts_with("UN") && l.contains(&node.peer.to_string()))
            .unwrap_or_else(|| panic!("no line for {}:\n{status}", node.peer));
        let cells: Vec<&str> = line.split_whitespace().collect();
        // State, address, load (two words), tokens (16 by default), rack.
        assert_eq!(cells[4..6], ["16", &format!("rack{}", i + 1)], "{status}");
    }

    let client = cluster.connect(&n1);
    client.set_consistency(Consistency::Quorum);
    let run =
        |c: &Client, text: &str, values: Vec<Value>| cluster.rt.block_on(c.execute(text, values));
    cluster.create_kv_rf3(&client);
    // A schema change answers only once every live node has it: a write
    // through node 2 right after it finds the table.
    let other = cluster.connect(&n2);
    other.set_consistency(Consistency::Quorum);
    run(&other, "INSERT INTO ks.kv (k, v) VALUES (-1, -1)", vec![])
        .expect("the table exists on node 2 as soon as CREATE TABLE answered");
    cluster.rt.block_on(other.close());
    // The schema change made on node 1 reaches the other nodes by gossip.
    for node in [&n2, &n3] {
        let c = cluster.connect(node);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let schema = cluster.rt.block_on(c.describe_schema()).unwrap();
            if schema.keyspace("ks").and_then(|k| k.table("kv")).is_some() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "schema never reached {}",
                node.client
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster.rt.block_on(c.close());
    }

    let mut acked = Vec::new();
    for k in 0..300 {
        if k == 100 {
            n3.kill9();
        }
        let result = run(
            &client,
            "INSERT INTO ks.kv (k, v) VALUES (?, ?)",
            vec![Value::Int(k), Value::Int(k * 7)],
        );
        match result {
            Ok(_) => acked.push(k),
            Err(e) => panic!("QUORUM write {k} failed with one node down: {e}"),
        }
    }
    assert_eq!(acked.len(), 300);
    // The copies for node 3 time out and become hints, and admin status
    // names node 3 by its address as the node they wait for.
    let waiting = format!("  waiting for {} (", n3.peer);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let statuses = [cluster.status(&n1), cluster.status(&n2)];
        let shown: Vec<&str> = statuses
            .iter()
            .flat_map(|s| s.lines())
            .filter(|l| l.starts_with(&waiting))
            .collect();
        if !shown.is_empty() {
            assert!(shown.iter().all(|l| l.contains(" segment")), "{shown:?}");
            assert!(statuses.iter().any(|s| hint_line(s).2 >= 1));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no hints shown waiting for node 3: {statuses:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Node 3 comes back; the others replay the hints they hold for it.
    n3.start();
    cluster.wait_for_up(&n1, 3);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (s1, d1, p1) = hint_line(&cluster.status(&n1));
        let (s2, d2, p2) = hint_line(&cluster.status(&n2));
        if p1 == 0 && p2 == 0 && d1 + d2 >= 1 && d1 >= s1 && d2 >= s2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "hints not replayed: node1 {s1}/{d1}/{p1}, node2 {s2}/{d2}/{p2}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // Node 3 alone must now hold every acknowledged write.
    cluster.rt.block_on(client.close());
    n1.stop();
    n2.stop();
    let alone = cluster.connect(&n3);
    alone.set_consistency(Consistency::One);
    let mut missing = Vec::new();
    for k in &acked {
        let rows = match cluster
            .rt
            .block_on(alone.execute("SELECT v FROM ks.kv WHERE k = ?", vec![Value::Int(*k)]))
        {
            Ok(r) => format!("{:?}", r.result),
            Err(e) => panic!("read of {k} from node 3 alone failed: {e}"),
        };
        if !rows.contains(&format!("Int({})", k * 7)) {
            missing.push(*k);
        }
    }
    assert!(
        missing.is_empty(),
        "node 3 lacks {} acknowledged writes, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}

/// A client whose node was killed and started again connects again by
/// itself: a statement may fail once (sent on the dead connection before
/// the restarted node's reset arrived), the next runs on the keyspace the
/// session was using, and `reconnects()` counts one reconnection.
#[test]
fn a_client_connects_again_to_a_restarted_node() {
    let root = tempfile::tempdir().unwrap();
    let (ca, cluster) = new_cluster(root.path());
    let mut n1 = make_node(root.path(), &ca, "node1", None);
    n1.start();
    cluster.wait_for_up(&n1, 1);
    let client = cluster.connect(&n1);
    // Far below the 5-minute idle timeout of a stale connection.
    client.set_timeout(Duration::from_secs(5));
    let run = |text: &str| cluster.rt.block_on(client.execute(text, vec![]));
    for ddl in [
        "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
        "USE ks",
        "CREATE TABLE kv (k int PRIMARY KEY, v int)",
        "INSERT INTO kv (k, v) VALUES (1, 10)",
    ] {
        run(ddl).unwrap_or_else(|e| panic!("{ddl}: {e}"));
    }
    n1.kill9();
    n1.start();
    cluster.wait_for_up(&n1, 1);
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        let got = run("SELECT v FROM kv WHERE k = 1");
        let done = got.is_ok();
        outcomes.push(got);
        if done {
            break;
        }
    }
    let (last, before) = outcomes.split_last().unwrap();
    match last {
        Ok(response) => assert_eq!(first_column(&response.result), vec![Value::Int(10)]),
        Err(e) => panic!("no answer after the restart: {e}; before: {before:?}"),
    }
    assert!(
        before
            .iter()
            .all(|r| matches!(r, Err(ClientError::Connection(_)))),
        "{before:?}"
    );
    assert_eq!(client.reconnects(), 1);
    assert_eq!(client.keyspace().as_deref(), Some("ks"));

    // The session's keyspace is dropped (through another client) and the
    // node restarts: the client connects again without a keyspace, and a
    // statement that needs one says so, rather than every request failing.
    let other = cluster.connect(&n1);
    cluster
        .rt
        .block_on(other.execute("DROP KEYSPACE ks", vec![]))
        .expect("drop");
    cluster.rt.block_on(other.close());
    n1.kill9();
    n1.start();
    cluster.wait_for_up(&n1, 1);
    let mut errors = Vec::new();
    let invalid = loop {
        match run("SELECT v FROM kv WHERE k = 1") {
            Err(ClientError::Connection(e)) if errors.is_empty() => errors.push(e),
            Err(ClientError::Query(e @ QueryError::Invalid { .. })) => break e,
            other => panic!("after {errors:?}: {other:?}"),
        }
    };
    assert!(
        invalid
            .to_string()
            .contains("No keyspace has been specified"),
        "the error should say no keyspace is in use: {invalid}"
    );
    assert_eq!(client.reconnects(), 2);
    assert_eq!(client.keyspace(), None);
    // The session works: a keyspace can be chosen again.
    run("CREATE KEYSPACE ks2 WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}")
        .expect("create");
    run("USE ks2").expect("use");
    assert_eq!(client.keyspace().as_deref(), Some("ks2"));
    cluster.rt.block_on(client.close());
}

#[test]
fn sigterm_while_a_node_starts_stops_it_cleanly() {
    let root = tempfile::tempdir().unwrap();
    let ca = ClusterCa::generate().unwrap();
    // A seed nobody listens on: the node waits for peers for a while
    // before it starts a cluster of its own.
    let silent_seed = std::net::SocketAddr::from(([127, 0, 0, 1], support::process::free_port()));
    let mut node = make_node(root.path(), &ca, "node1", Some(silent_seed));
    node.start();
    let deadline = Instant::now() + Duration::from_secs(60);
    let starting = |log: &str| log.contains("ringdb: starting");
    while !starting(&std::fs::read_to_string(&node.log).unwrap_or_default()) {
        assert!(
            Instant::now() < deadline,
            "the node never said it was starting"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut child = node.child.take().unwrap();
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(&node.log).unwrap();
    assert_eq!(status.code(), Some(0), "exit: {status:?}\n{log}");
    assert!(
        log.contains("stop requested while starting"),
        "the stop came after the start finished?\n{log}"
    );
    assert!(!log.contains("serving clients on"), "{log}");
}

#[test]
fn a_node_with_a_foreign_certificate_never_joins() {
    let root = tempfile::tempdir().unwrap();
    let ca = ClusterCa::generate().unwrap();
    ca.save(&root.path().join("certs"), false).unwrap();
    let mut n1 = make_node(root.path(), &ca, "node1", None);
    let mut n2 = make_node(root.path(), &ca, "node2", Some(n1.peer));
    let rogue_root = root.path().join("rogue");
    let rogue_ca = ClusterCa::generate().unwrap();
    let mut rogue = make_node(&rogue_root, &rogue_ca, "rogue", Some(n1.peer));
    let cluster = Cluster {
        rt: tokio::runtime::Runtime::new().unwrap(),
        ca_pem: ca.cert_pem().to_string(),
    };
    n1.start();
    cluster.wait_for_up(&n1, 1);
    n2.start();
    rogue.start();
    cluster.wait_for_up(&n1, 2);
    // Give the rogue node many gossip rounds to try.
    std::thread::sleep(Duration::from_secs(6));
    for node in [&n1, &n2] {
        let status = cluster.status(node);
        assert!(
            status.contains("Cluster: 2 nodes, 2 up"),
            "only the two real nodes are members:\n{status}"
        );
        let node_rows = status.lines().filter(|l| l.contains("127.0.0.1:")).count();
        assert_eq!(node_rows, 2, "{status}");
        assert!(!status.contains(&rogue.peer.to_string()), "{status}");
    }
    // And the rogue node, for its part, sees nobody but itself.
    let rogue_view = Cluster {
        rt: tokio::runtime::Runtime::new().unwrap(),
        ca_pem: rogue_ca.cert_pem().to_string(),
    }
    .status(&rogue);
    assert!(
        rogue_view.contains("Cluster: 1 nodes, 1 up"),
        "{rogue_view}"
    );
}

/// The values of the first column of a SELECT's rows, sorted.
fn first_column(result: &QueryResult) -> Vec<Value> {
    let QueryResult::Rows(rows) = result else {
        panic!("not rows: {result:?}")
    };
    let mut out: Vec<Value> = rows.rows.iter().map(|r| r.values[0].clone()).collect();
    out.sort_by_key(|v| format!("{v:?}"));
    out
}

impl Cluster {
    /// Waits until `node` describes every table of `tables` in `ks`;
    /// returns their CREATE statements.
    fn wait_for_tables(&self, node: &Node, ks: &str, tables: &[&str]) -> Vec<String> {
        let c = self.connect(node);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let schema = self.rt.block_on(c.describe_schema()).unwrap();
            let found: Vec<String> = tables
                .iter()
                .filter_map(|t| schema.keyspace(ks).and_then(|k| k.table(t)))
                .map(|t| t.create_statement.clone())
                .collect();
            if found.len() == tables.len() {
                self.rt.block_on(c.close());
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "{} never had all of {ks}.{tables:?}: {:?}; log {}",
                node.client,
                schema.keyspace(ks).map(|k| &k.tables),
                node.log.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn schema_changes_made_apart_merge_when_the_nodes_meet() {
    let root = tempfile::tempdir().unwrap();
    let ca = ClusterCa::generate().unwrap();
    ca.save(&root.path().join("certs"), false).unwrap();
    // Two nodes, each its own cluster for now: a partition.
    let mut n1 = make_node(root.path(), &ca, "node1", None);
    let mut n2 = make_node(root.path(), &ca, "node2", None);
    let cluster = Cluster {
        rt: tokio::runtime::Runtime::new().unwrap(),
        ca_pem: ca.cert_pem().to_string(),
    };
    n1.start();
    n2.start();
    cluster.wait_for_up(&n1, 1);
    cluster.wait_for_up(&n2, 1);
    let run = |c: &Client, text: &str| {
        cluster
            .rt
            .block_on(c.execute(text, vec![]))
            .unwrap_or_else(|e| panic!("{text}: {e}"))
    };
    let create_ks =
        "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 2}";
    let c1 = cluster.connect(&n1);
    run(&c1, create_ks);
    run(&c1, "CREATE TABLE ks.a (k int PRIMARY KEY, v int)");
    run(&c1, "CREATE TABLE ks.dup (k int PRIMARY KEY, v int)");
    run(&c1, "INSERT INTO ks.dup (k, v) VALUES (1, 1)");
    cluster.rt.block_on(c1.close());
    let c2 = cluster.connect(&n2);
    run(&c2, create_ks);
    run(&c2, "CREATE TABLE ks.b (k int PRIMARY KEY, v int)");
    run(&c2, "CREATE TABLE ks.dup (k int PRIMARY KEY, w text)");
    run(&c2, "INSERT INTO ks.dup (k, w) VALUES (2, 'two')");
    cluster.rt.block_on(c2.close());

    // The partition heals: node 2 restarts with node 1 as its seed.
    n2.stop();
    n2.seed = Some(n1.peer);
    n2.start();
    cluster.wait_for_up(&n1, 2);
    cluster.wait_for_up(&n2, 2);
    let on1 = cluster.wait_for_tables(&n1, "ks", &["a", "b", "dup"]);
    let on2 = cluster.wait_for_tables(&n2, "ks", &["a", "b", "dup"]);
    assert_eq!(on1, on2, "both nodes describe the same tables");
    // The earliest CREATE of ks.dup (node 1's) is the table.
    assert!(
        on1[2].contains("v int") && !on1[2].contains("w text"),
        "{}",
        on1[2]
    );
    // Each node warned about the conflict when its merge first met it.
    for node in [&n1, &n2] {
        let log = std::fs::read_to_string(&node.log).unwrap();
        assert!(
            log.contains("table ks.dup was created concurrently"),
            "no conflict warning in {}",
            node.log.display()
        );
    }

    // Two more tables created at the same moment through both nodes.
    let barrier = std::sync::Barrier::new(2);
    std::thread::scope(|scope| {
        for (node, table) in [(&n1, "c"), (&n2, "d")] {
            let (cluster, barrier) = (&cluster, &barrier);
            scope.spawn(move || {
                let c = cluster.connect(node);
                barrier.wait();
                let text = format!("CREATE TABLE ks.{table} (k int PRIMARY KEY, v int)");
                cluster
                    .rt
                    .block_on(c.execute(&text, vec![]))
                    .unwrap_or_else(|e| panic!("{text}: {e}"));
                cluster.rt.block_on(c.close());
            });
        }
    });
    let all = ["a", "b", "c", "d", "dup"];
    assert_eq!(
        cluster.wait_for_tables(&n1, "ks", &all),
        cluster.wait_for_tables(&n2, "ks", &all)
    );

    // Every table takes writes at QUORUM (both replicas) through either
    // node, and reads them back.
    for (i, node) in [&n1, &n2].into_iter().enumerate() {
        let c = cluster.connect(node);
        c.set_consistency(Consistency::Quorum);
        for t in ["a", "b", "c", "d"] {
            run(&c, &format!("INSERT INTO ks.{t} (k, v) VALUES ({i}, {i})"));
        }
        cluster.rt.block_on(c.close());
    }
    let c = cluster.connect(&n2);
    c.set_consistency(Consistency::Quorum);
    for t in ["a", "b", "c", "d"] {
        let keys = first_column(&run(&c, &format!("SELECT k FROM ks.{t}")).result);
        assert_eq!(keys, vec![Value::Int(0), Value::Int(1)], "ks.{t}");
    }
    // ks.dup holds node 1's row only: node 2's losing table is not mixed in.
    let keys = first_column(&run(&c, "SELECT k FROM ks.dup").result);
    assert_eq!(keys, vec![Value::Int(1)]);
    cluster.rt.block_on(c.close());
}
