//! Causal contexts stay bounded through OS restarts, on real server
//! processes.
//!
//! Two nodes, RF=2. Node 1 stamps a row's writes, and is restarted three
//! times as after an OS restart (its stamping-id file removed while it is
//! down, so it takes a fresh id each time: see `query::stamp_actor`).
//! Node 2 writes the row once too. The row's context then names five ids,
//! of which only two are in use. `ringdb admin compact` on both nodes
//! notices the three retired ids; once the table's grace period has
//! passed, the next compaction forgets them. Reads at ONE from each node
//! alone then return a context of exactly the two ids in use (node 2's id
//! is in use only through gossip: without it, node 1 would forget it too),
//! the last value, and no conflict.

mod support;

use cql_lite::Value;
use ringdb::client::Client;
use ringdb::model::Consistency;
use ringdb::model::DotSet;
use ringdb::query::api::{QueryOptions, QueryResult};
use std::path::Path;
use std::time::Duration;
use support::process::{admin_ok, make_node, new_cluster, Cluster, Node};

/// Runs `ringdb admin compact` against `node`; its standard output.
fn admin_compact(root: &Path, node: &Node) -> String {
    admin_ok(root, node, "compact")
}

/// The "(N entries)" figure of an `admin compact` answer.
fn pruned_entries(answer: &str) -> u64 {
    let at = answer
        .find(" entries)")
        .unwrap_or_else(|| panic!("no pruning figure in {answer:?}"));
    let start = answer[..at].rfind('(').expect("opening parenthesis") + 1;
    answer[start..at]
        .parse()
        .unwrap_or_else(|_| panic!("no pruning figure in {answer:?}"))
}

/// Writes `v` for the row through `client` at ALL.
fn write(cluster: &Cluster, client: &Client, v: i32) {
    let options = QueryOptions {
        consistency: Consistency::All,
        ..QueryOptions::default()
    };
    cluster
        .rt
        .block_on(client.execute_with(
            "UPDATE ks.t SET v = ? WHERE k = 1",
            vec![Value::Int(v)],
            options,
        ))
        .expect("write at ALL");
}

/// Reads the row at ONE through `node` alone: its value, conflict flag
/// and causal context.
fn read(cluster: &Cluster, node: &Node) -> (Value, bool, DotSet) {
    let client = cluster.connect(node);
    let response = cluster
        .rt
        .block_on(client.execute("SELECT v FROM ks.t WHERE k = 1", vec![]))
        .expect("read at ONE");
    cluster.rt.block_on(client.close());
    let QueryResult::Rows(rows) = response.result else {
        panic!("not rows: {:?}", response.result);
    };
    let row = rows.rows.first().expect("the row");
    (
        row.values[0].clone(),
        row.conflict,
        rows.causal_context.clone().expect("a causal context"),
    )
}

#[test]
fn contexts_forget_retired_stamping_ids_after_the_grace_period() {
    let root = tempfile::tempdir().unwrap();
    let (ca, cluster) = new_cluster(root.path());
    let mut n1 = make_node(root.path(), &ca, "n1", None);
    n1.start();
    cluster.wait_for_up(&n1, 1);
    let mut n2 = make_node(root.path(), &ca, "n2", Some(n1.peer));
    n2.start();
    cluster.wait_for_up(&n1, 2);

    let client = cluster.connect(&n1);
    for ddl in [
        "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 2}",
        "CREATE TABLE ks.t (k int PRIMARY KEY, v int) WITH gc_grace_seconds = 2",
    ] {
        cluster.rt.block_on(client.execute(ddl, vec![])).unwrap();
    }
    cluster.rt.block_on(client.close());

    // Node 1 coordinates and stamps (it is a replica); after each write it
    // restarts as after an OS restart.
    for v in 1..=4 {
        let client = cluster.connect(&n1);
        write(&cluster, &client, v);
        cluster.rt.block_on(client.close());
        if v < 4 {
            n1.kill9();
            std::fs::remove_file(n1.data.join("data").join("stamp_actor"))
                .expect("node 1's stamping-id file");
            n1.start();
            cluster.wait_for_up(&n1, 2);
            cluster.wait_for_up(&n2, 2);
        }
    }
    let client = cluster.connect(&n2);
    write(&cluster, &client, 5);
    cluster.rt.block_on(client.close());

    let (value, conflict, context) = read(&cluster, &n1);
    assert_eq!((value, conflict), (Value::Int(5), false));
    assert_eq!(
        context.nodes().len(),
        5,
        "four ids of node 1 and node 2's: {context:?}"
    );

    // The first compaction notices the retired ids; none has been retired
    // for a grace period yet, so nothing is forgotten.
    for node in [&n1, &n2] {
        let answer = admin_compact(root.path(), node);
        assert_eq!(pruned_entries(&answer), 0, "{answer}");
    }
    assert_eq!(read(&cluster, &n1).2.nodes().len(), 5);

    std::thread::sleep(Duration::from_millis(2_500));
    for node in [&n1, &n2] {
        let answer = admin_compact(root.path(), node);
        assert_eq!(
            pruned_entries(&answer),
            3,
            "the three retired ids of node 1 go: {answer}"
        );
    }
    for node in [&n1, &n2] {
        let (value, conflict, context) = read(&cluster, node);
        assert_eq!((value, conflict), (Value::Int(5), false));
        assert_eq!(
            context.nodes().len(),
            2,
            "only the ids in use are left: {context:?}"
        );
        assert!(
            context.vector().values().all(|&n| n == 1),
            "each id in use stamped the row once: {context:?}"
        );
    }
    let status = cluster.status(&n1);
    assert!(
        status.contains("pruned_rows=1 pruned_context_entries=3"),
        "{status}"
    );

    // A write that reads first (read-modify-write with the pruned context)
    // supersedes the row on both replicas: still one version, no conflict.
    let client = cluster.connect(&n1);
    let (_, _, context) = read(&cluster, &n1);
    let options = QueryOptions {
        consistency: Consistency::All,
        causal_context: Some(context),
        ..QueryOptions::default()
    };
    cluster
        .rt
        .block_on(client.execute_with("UPDATE ks.t SET v = 6 WHERE k = 1", vec![], options))
        .expect("read-modify-write");
    cluster.rt.block_on(client.close());
    for node in [&n1, &n2] {
        let (value, conflict, _) = read(&cluster, node);
        assert_eq!((value, conflict), (Value::Int(6), false));
    }
}
