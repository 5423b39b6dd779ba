//! A node joining a real cluster that holds data: three `ringdb server`
//! processes take writes at QUORUM (RF=3), a fourth joins while the writes
//! go on, and once it is normal it holds every acknowledged write it
//! replicates: with the three others killed (SIGKILL), a read at ONE
//! through it answers each of them, never an empty row.

mod support;

use cql_lite::Value;
use ringdb::client::Client;
use ringdb::model::Consistency;
use ringdb::net::tls::ClusterCa;
use ringdb::query::api::{QueryError, QueryResult};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::process::{make_node, Cluster};

const INSERT: &str = "INSERT INTO ks.kv (k, v) VALUES (?, ?)";

#[test]
fn a_joining_node_takes_its_ranges_and_the_writes_made_while_it_joins() {
    let root = tempfile::tempdir().unwrap();
    let ca = ClusterCa::generate().unwrap();
    ca.save(&root.path().join("certs"), false).unwrap();
    let mut n1 = make_node(root.path(), &ca, "node1", None);
    let seed = Some(n1.peer);
    let mut n2 = make_node(root.path(), &ca, "node2", seed);
    let mut n3 = make_node(root.path(), &ca, "node3", seed);
    let mut n4 = make_node(root.path(), &ca, "node4", seed);
    n4.extra_args = vec!["--join-settle-ms".into(), "1500".into()];
    let cluster = Cluster {
        rt: tokio::runtime::Runtime::new().unwrap(),
        ca_pem: ca.cert_pem().to_string(),
    };
    n1.start();
    cluster.wait_for_up(&n1, 1);
    n2.start();
    n3.start();
    cluster.wait_for_up(&n1, 3);

    let client = cluster.connect(&n1);
    client.set_consistency(Consistency::Quorum);
    let run =
        |c: &Client, text: &str, values: Vec<Value>| cluster.rt.block_on(c.execute(text, values));
    run(&client, "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 3}", vec![]).unwrap();
    run(
        &client,
        "CREATE TABLE ks.kv (k int PRIMARY KEY, v int)",
        vec![],
    )
    .unwrap();
    let mut acked: Vec<i32> = Vec::new();
    for k in 0..400 {
        run(&client, INSERT, vec![Value::Int(k), Value::Int(k * 3)]).expect("write");
        acked.push(k);
    }
    // A deleted row must stay deleted on the new node.
    run(&client, "DELETE FROM ks.kv WHERE k = 11", vec![]).expect("delete");
    acked.retain(|k| *k != 11);

    // Node 4 joins while writes go on through node 2.
    let writer_client = cluster.connect(&n2);
    writer_client.set_consistency(Consistency::Quorum);
    let stop = Arc::new(AtomicBool::new(false));
    let during = Arc::new(Mutex::new(Vec::<i32>::new()));
    let writer = {
        let (stop, during) = (stop.clone(), during.clone());
        let handle = cluster.rt.handle().clone();
        std::thread::spawn(move || {
            let mut k = 1000;
            while !stop.load(Ordering::Relaxed) {
                let values = vec![Value::Int(k), Value::Int(k * 3)];
                if handle
                    .block_on(writer_client.execute(INSERT, values))
                    .is_ok()
                {
                    during.lock().unwrap().push(k);
                }
                k += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            handle.block_on(writer_client.close());
        })
    };
    n4.start_with_env(&[("RUST_LOG", "info".to_string())]);
    let status = cluster.wait_for_up(&n1, 4);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let during = during.lock().unwrap().clone();
    assert!(
        during.len() > 20,
        "too few writes while node 4 joined: {}\n{status}",
        during.len()
    );
    acked.extend(&during);
    let log = std::fs::read_to_string(&n4.log).unwrap();
    assert!(
        log.contains("bootstrap stream done"),
        "node 4 did not stream:\n{log}"
    );
    cluster.rt.block_on(client.close());

    // Node 4 alone.
    n1.kill9();
    n2.kill9();
    n3.kill9();
    // Wait until node 4 sees them down: a key it does not replicate is
    // then Unavailable at once.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = cluster.status(&n4);
        if s.lines().filter(|l| l.starts_with("DN")).count() == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node 4 never saw the others down:\n{s}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let alone = cluster.connect(&n4);
    alone.set_consistency(Consistency::One);
    let mut served = 0usize;
    for &k in &acked {
        match run(
            &alone,
            "SELECT v FROM ks.kv WHERE k = ?",
            vec![Value::Int(k)],
        )
        .map(|r| r.result)
        {
            Ok(QueryResult::Rows(rs)) => {
                assert_eq!(
                    rs.rows.first().map(|r| r.values[0].clone()),
                    Some(Value::Int(k * 3)),
                    "key {k} read at ONE from node 4 alone"
                );
                served += 1;
            }
            Ok(other) => panic!("unexpected answer {other:?}"),
            // Not one of node 4's keys: its replicas are down.
            Err(e) if matches!(e.as_query_error(), Some(QueryError::Unavailable { .. })) => {}
            Err(e) => panic!("key {k}: {e}"),
        }
    }
    // RF=3 of 4 nodes: node 4 replicates about three keys in four.
    assert!(
        served * 2 > acked.len(),
        "node 4 served only {served} of {} keys",
        acked.len()
    );
    let deleted = run(
        &alone,
        "SELECT v FROM ks.kv WHERE k = ?",
        vec![Value::Int(11)],
    );
    if let Ok(QueryResult::Rows(rs)) = deleted.map(|r| r.result) {
        assert!(rs.rows.is_empty(), "the deleted row came back on node 4");
    }
    cluster.rt.block_on(alone.close());
}
