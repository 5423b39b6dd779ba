//! Ring changes on a real cluster that holds data.
//!
//! - Joining: three `ringdb server` processes take writes at QUORUM
//!   (RF=3), a fourth joins while the writes go on, and once it is normal
//!   it holds every acknowledged write it replicates: with the three others
//!   killed (SIGKILL), a read at ONE through it answers each of them, never
//!   an empty row.
//! - Leaving: `ringdb admin decommission` on one of four nodes (RF=3)
//!   while writes go on; the node stops, and each remaining node, alone,
//!   answers every acknowledged write at ONE.
//! - Removing: one of four nodes is SIGKILLed for good; `ringdb admin
//!   removenode` on another copies its ranges while writes go on; each
//!   remaining node, alone, answers every acknowledged write at ONE, and
//!   the dead node, started again with its old data, is refused.
//! - Coming back during a removal: the dead node restarts while its ranges
//!   are copied; the removal stops, it stays a normal replica, and a
//!   decommission then takes it out without losing a write.
//! - Two leaves at once: two decommissions started at the same moment
//!   never stream at once; run again, one after the other, both finish and
//!   nothing acknowledged is lost. A decommission is refused while a node
//!   that would take over its ranges is down.

mod support;

use cql_lite::Value;
use ringdb::client::Client;
use ringdb::model::Consistency;
use ringdb::query::api::{QueryError, QueryResult};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::process::{
    admin_ok, make_node, new_cluster, run_admin, run_admin_at, start_nodes, Cluster, Node,
};

const INSERT: &str = "INSERT INTO ks.kv (k, v) VALUES (?, ?)";

#[test]
fn a_joining_node_takes_its_ranges_and_the_writes_made_while_it_joins() {
    let root = tempfile::tempdir().unwrap();
    let (ca, cluster) = new_cluster(root.path());
    let [mut n1, mut n2, mut n3] =
        <[Node; 3]>::try_from(start_nodes(&cluster, root.path(), &ca, 3, &[], |_, _| {}))
            .ok()
            .unwrap();
    let mut n4 = make_node(root.path(), &ca, "node4", Some(n1.peer));

    let (client, mut acked) = load_kv(&cluster, &n1);
    let run =
        |c: &Client, text: &str, values: Vec<Value>| cluster.rt.block_on(c.execute(text, values));
    // A deleted row must stay deleted on the new node.
    run(&client, "DELETE FROM ks.kv WHERE k = 11", vec![]).expect("delete");
    acked.retain(|k| *k != 11);

    // Node 4 joins while writes go on through node 2.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = background_writer(&cluster, cluster.connect(&n2), 1000, stop.clone());
    n4.start_with_env(&[("RUST_LOG", "info".to_string())]);
    let status = wait_for_up_or_logs(&cluster, &n1, 4, &[n4.log.clone()]);
    stop.store(true, Ordering::Relaxed);
    let during = writer.join().unwrap();
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

    // Node 4 alone, once every copy landed: a QUORUM write is acknowledged
    // with its third copy on the way, and a copy that timed out (a loaded
    // machine) waits as a hint.
    wait_for_copies(&cluster, &[&n1, &n2, &n3, &n4]);
    // Node 1 gave node 4 part of its ranges and still holds their old
    // copies: cleanup drops them (about a quarter of the keys).
    let cleaned = admin_ok(root.path(), &n1, "cleanup ks");
    let dropped: usize = cleaned
        .split_whitespace()
        .skip_while(|w| *w != "dropped")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {cleaned}"));
    // Node 4's 16 tokens are random: its share, and so what node 1 gives
    // up, is about a quarter but varies; the bounds leave room for that.
    assert!(
        dropped * 20 > acked.len() && dropped * 2 < acked.len(),
        "node 1 dropped {dropped} of {} keys: {cleaned}",
        acked.len()
    );
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
    // With the others down, node 4 cannot tell whether they left: cleanup
    // refuses rather than drop what it may replicate.
    let out = run_admin(root.path(), &n4, "cleanup");
    assert!(!out.status.success(), "cleanup ran with three nodes down");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("are down"), "{stderr}");
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

/// Writes `k, 3k` at QUORUM through `client` on a thread, keys from
/// `first` up, until `stop`; returns the acknowledged keys.
/// Connects to `node` at QUORUM, creates `ks.kv` with RF 3 and writes
/// keys 0..400 (v = 3k); returns the client and the keys written.
fn load_kv(cluster: &Cluster, node: &Node) -> (Client, Vec<i32>) {
    let client = cluster.connect(node);
    client.set_consistency(Consistency::Quorum);
    cluster.create_kv_rf3(&client);
    for k in 0..400 {
        cluster
            .rt
            .block_on(client.execute(INSERT, vec![Value::Int(k), Value::Int(k * 3)]))
            .expect("write");
    }
    (client, (0..400).collect())
}

fn background_writer(
    cluster: &Cluster,
    client: Client,
    first: i32,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<i32>> {
    let handle = cluster.rt.handle().clone();
    std::thread::spawn(move || {
        let mut acked = Vec::new();
        let mut k = first;
        while !stop.load(Ordering::Relaxed) {
            let values = vec![Value::Int(k), Value::Int(k * 3)];
            if handle.block_on(client.execute(INSERT, values)).is_ok() {
                acked.push(k);
            }
            k += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
        handle.block_on(client.close());
        acked
    })
}

/// Waits until `node` sees `n` nodes down.
fn wait_for_down(cluster: &Cluster, node: &Node, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = cluster.status(node);
        if s.lines().filter(|l| l.starts_with("DN")).count() == n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never saw {n} nodes down:\n{s}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_decommissioned_node_hands_its_ranges_over_and_stops() {
    let root = tempfile::tempdir().unwrap();
    let FourNodes {
        cluster,
        nodes: [mut n1, mut n2, mut n3, mut n4],
        logs,
    } = start_four_nodes(root.path());

    let (client, mut acked) = load_kv(&cluster, &n1);

    let stop = Arc::new(AtomicBool::new(false));
    let writer = background_writer(&cluster, cluster.connect(&n2), 1000, stop.clone());
    let out = run_admin(root.path(), &n4, "decommission");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("decommissioned node"),
        "decommission failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The node stops by itself.
    wait_until_exited(&mut n4);
    stop.store(true, Ordering::Relaxed);
    let during = writer.join().unwrap();
    assert!(during.len() > 10, "too few writes while node 4 left");
    // Every copy lands before anybody is killed (see the other test).
    wait_for_copies(&cluster, &[&n1, &n2, &n3]);
    acked.extend(&during);
    let status = cluster.status(&n1);
    assert_eq!(
        status.lines().filter(|l| l.starts_with("UN")).count(),
        3,
        "{status}"
    );
    cluster.rt.block_on(client.close());

    // RF=3 on three nodes: each holds every key.
    first_then_second_alone_hold(&cluster, [&mut n1, &mut n2, &mut n3], &acked, &logs);
}

#[test]
fn a_dead_node_is_removed_by_another_and_refused_when_it_comes_back() {
    let root = tempfile::tempdir().unwrap();
    let FourNodes {
        cluster,
        nodes: [mut n1, mut n2, mut n3, mut n4],
        logs,
    } = start_four_nodes(root.path());
    let (id2, id4) = (
        host_id_of(&cluster, &n1, &n2),
        host_id_of(&cluster, &n1, &n4),
    );

    let (client, mut acked) = load_kv(&cluster, &n1);
    // Refused: a node that is up, and something that is not a host id.
    let out = run_admin(root.path(), &n1, &format!("removenode {id2}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("is up"),
        "{stderr}"
    );
    let out = run_admin(root.path(), &n1, "removenode node4");
    assert!(!out.status.success(), "a name taken for a host id");

    // Node 4 dies for good; writes go on (hinted for it meanwhile).
    n4.kill9();
    wait_for_down(&cluster, &n1, 1);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = background_writer(&cluster, cluster.connect(&n2), 1000, stop.clone());
    std::thread::sleep(Duration::from_millis(500));
    let out = run_admin(root.path(), &n1, &format!("removenode {id4}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("removed node {id4}")),
        "removenode failed: {stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        log_tails(&logs)
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let during = writer.join().unwrap();
    assert!(during.len() > 10, "too few writes while node 4 was removed");
    acked.extend(&during);
    // Its hints are dropped everywhere, and it shows as removed.
    wait_for_copies(&cluster, &[&n1, &n2, &n3]);
    for node in [&n1, &n2, &n3] {
        let status = cluster.status(node);
        assert_eq!(
            status.lines().filter(|l| l.starts_with("UN")).count(),
            3,
            "{status}"
        );
        assert!(
            status
                .lines()
                .any(|l| l.starts_with("DR") && l.contains(&id4)),
            "{status}"
        );
    }
    // A second removal of the same node is refused.
    let out = run_admin(root.path(), &n2, &format!("removenode {id4}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("already removed"),
        "{stderr}"
    );

    // Node 4 comes back with its old data and tokens: it learns it was
    // removed and exits with an error saying so; nobody takes it back.
    n4.start();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let child = n4.child.as_mut().expect("node 4 runs");
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the removed node kept running"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    n4.child = None;
    assert!(!exit.success(), "the removed node exited with success");
    let log = std::fs::read_to_string(&n4.log).unwrap();
    assert!(
        log.contains("was removed from the cluster"),
        "node 4 did not say why it stopped:\n{log}"
    );
    let status = cluster.status(&n1);
    assert!(
        status
            .lines()
            .any(|l| l.contains(&id4) && l.starts_with(['U', 'D', 'S']) && l[1..].starts_with('R')),
        "{status}"
    );
    cluster.rt.block_on(client.close());

    // RF=3 on the three nodes left: each holds every key on its own.
    first_then_second_alone_hold(&cluster, [&mut n1, &mut n2, &mut n3], &acked, &logs);
}

/// A dead node that comes back up while another removes it stays in the
/// ring: node 1's stream limit is cut to 1 MiB/s so the copy of node 4's
/// ranges (about 12 MiB) takes seconds, and node 4 is started again as it
/// starts. The removal fails saying why; node 4 is a normal replica again
/// (reads at ALL, which need it for most keys, answer every write made
/// meanwhile), and a decommission then takes it out as the error advises,
/// losing nothing.
#[test]
fn a_dead_node_that_comes_back_during_its_removal_stays_in_the_ring() {
    let root = tempfile::tempdir().unwrap();
    let FourNodes {
        cluster,
        nodes: [mut n1, mut n2, mut n3, mut n4],
        logs,
    } = start_four_nodes(root.path());
    let id4 = host_id_of(&cluster, &n1, &n4);
    let (client, mut acked) = load_kv(&cluster, &n1);
    // Bulk, so that the copy takes long at 1 MiB/s.
    cluster
        .rt
        .block_on(client.execute("CREATE TABLE ks.bulk (k int PRIMARY KEY, v text)", vec![]))
        .expect("create ks.bulk");
    let filler = "x".repeat(10_000);
    for k in 0..1200 {
        cluster
            .rt
            .block_on(client.execute(
                "INSERT INTO ks.bulk (k, v) VALUES (?, ?)",
                vec![Value::Int(k), Value::Text(filler.clone())],
            ))
            .expect("bulk write");
    }
    let out = admin_ok(root.path(), &n1, "setstreamthroughput 1");
    assert!(out.contains("1 MiB/s"), "{out}");

    n4.kill9();
    wait_for_down(&cluster, &n1, 1);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = background_writer(&cluster, cluster.connect(&n2), 1000, stop.clone());
    let removal = {
        let (root, host) = (root.path().to_path_buf(), n1.client);
        let command = format!("removenode {id4}");
        std::thread::spawn(move || run_admin_at(&root, host, &command))
    };
    wait_for_log(&n1.log, "removenode stream starts", &logs);
    n4.start_with_env(&[("RUST_LOG", "info".to_string())]);
    let out = removal.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("came back up while its ranges were copied"),
        "the removal did not stop for the node that came back: {}\n{stderr}\n{}",
        String::from_utf8_lossy(&out.stdout),
        log_tails(&logs)
    );
    for node in [&n1, &n2, &n3, &n4] {
        wait_for_up_or_logs(&cluster, node, 4, &logs);
    }
    stop.store(true, Ordering::Relaxed);
    let during = writer.join().unwrap();
    assert!(during.len() > 10, "too few writes during the removal");
    acked.extend(&during);
    // Every write is on all three of its replicas, node 4 among them for
    // three keys in four.
    client.set_consistency(Consistency::All);
    for &k in &acked {
        let got = cluster
            .rt
            .block_on(client.execute("SELECT v FROM ks.kv WHERE k = ?", vec![Value::Int(k)]))
            .map(|r| r.result);
        match got {
            Ok(QueryResult::Rows(rs)) => assert_eq!(
                rs.rows.first().map(|r| r.values[0].clone()),
                Some(Value::Int(k * 3)),
                "key {k} at ALL"
            ),
            other => panic!("key {k} at ALL: {other:?}\n{}", log_tails(&logs)),
        }
    }
    cluster.rt.block_on(client.close());

    // As the error advises: a decommission takes it out, losing nothing.
    let out = admin_ok(root.path(), &n4, "decommission");
    assert!(out.contains("decommissioned node"), "{out}");
    wait_until_exited(&mut n4);
    wait_for_copies(&cluster, &[&n1, &n2, &n3]);
    first_then_second_alone_hold(&cluster, [&mut n1, &mut n2, &mut n3], &acked, &logs);
}

/// Waits (at most 60 s) until `log` has a line containing `marker`.
fn wait_for_log(log: &std::path::Path, marker: &str, logs: &[std::path::PathBuf]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(log).is_ok_and(|t| t.contains(marker)) {
        assert!(
            std::time::Instant::now() < deadline,
            "no {marker:?} in {}:\n{}",
            log.display(),
            log_tails(logs)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Nodes leave one at a time. A decommission is refused while a node
/// that would take over some of its ranges is down. Two decommissions
/// started at the same moment (nodes 4 and 5) never stream at the same
/// time: one is refused because the other is leaving, or both are, or
/// the second finds the first already gone. Run again one after the
/// other, both finish, and each node left holds every acknowledged write
/// on its own.
#[test]
fn two_leaves_at_once_run_one_at_a_time() {
    let root = tempfile::tempdir().unwrap();
    let (ca, cluster) = new_cluster(root.path());
    let info = [("RUST_LOG", "info".to_string())];
    let nodes = start_nodes(&cluster, root.path(), &ca, 5, &info, |_, _| {});
    let logs: Vec<_> = nodes.iter().map(|n| n.log.clone()).collect();
    let [mut n1, mut n2, mut n3, mut n4, mut n5] = <[Node; 5]>::try_from(nodes).ok().unwrap();
    let id5 = host_id_of(&cluster, &n1, &n5);
    let (client, mut acked) = load_kv(&cluster, &n1);

    // Node 5 is down: node 4 cannot hand it its ranges.
    n5.kill9();
    wait_for_down(&cluster, &n4, 1);
    let out = run_admin(root.path(), &n4, "decommission");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains(&id5) && stderr.contains("are down"),
        "{stderr}"
    );
    n5.start_with_env(&info);
    for node in [&n1, &n2, &n3, &n4, &n5] {
        cluster.wait_for_up(node, 5);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let writer = background_writer(&cluster, cluster.connect(&n2), 1000, stop.clone());
    // Both requests leave at once from connected clients, so both usually
    // land before either node's `leaving` has reached the other.
    let (c4, c5) = (cluster.connect(&n4), cluster.connect(&n5));
    let (first, second) = cluster.rt.block_on(async {
        let (a, b) = tokio::join!(c4.admin_decommission(), c5.admin_decommission());
        (a.map_err(|e| e.to_string()), b.map_err(|e| e.to_string()))
    });
    eprintln!("concurrent decommissions: {first:?}, {second:?}");
    // Both may finish only one after the other: the second checked for
    // leaving nodes after the first had streamed everything and left.
    if first.is_ok() && second.is_ok() {
        let streams = [&n4, &n5].map(|n| {
            stream_interval(&n.log).unwrap_or_else(|| panic!("no stream in {}", n.log.display()))
        });
        assert!(
            streams[0].1 < streams[1].0 || streams[1].1 < streams[0].0,
            "the two streams overlapped: {streams:?}\n{first:?}\n{second:?}"
        );
    }
    for refused in [&first, &second]
        .into_iter()
        .filter_map(|r| r.as_ref().err())
    {
        assert!(
            refused.contains("leaving"),
            "refused for another reason: {refused}\n{}",
            log_tails(&logs)
        );
    }
    // A refused leave put its node back to normal: once the other is done
    // (and the others know), it runs.
    for (out, node) in [(&first, &mut n4), (&second, &mut n5)] {
        if out.is_ok() {
            wait_until_exited(node);
        }
    }
    for (out, node) in [(&first, &mut n4), (&second, &mut n5)] {
        if out.is_err() {
            admin_until_ok(root.path(), node, "decommission", &logs);
            wait_until_exited(node);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let during = writer.join().unwrap();
    assert!(during.len() > 10, "too few writes while nodes 4 and 5 left");
    acked.extend(during);
    wait_for_copies(&cluster, &[&n1, &n2, &n3]);
    let status = cluster.status(&n1);
    assert_eq!(
        status.lines().filter(|l| l.starts_with("UN")).count(),
        3,
        "{status}"
    );
    cluster.rt.block_on(async {
        client.close().await;
        c4.close().await;
        c5.close().await;
    });
    first_then_second_alone_hold(&cluster, [&mut n1, &mut n2, &mut n3], &acked, &logs);
}

/// When a node's decommission stream started and ended, as its log's
/// timestamps (RFC 3339 with microseconds: they sort as text).
fn stream_interval(log: &std::path::Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string(log).ok()?;
    let time_of = |marker: &str| {
        text.lines().rfind(|l| l.contains(marker)).map(|line| {
            // Strip the ANSI colours around the timestamp.
            let plain: String = line
                .split('\u{1b}')
                .map(|part| part.split_once('m').map_or(part, |(_, rest)| rest))
                .collect();
            plain
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string()
        })
    };
    Some((
        time_of("decommission stream starts")?,
        time_of("decommission stream done")?,
    ))
}

/// Runs `ringdb admin COMMAND` on `node` until it succeeds, for at most
/// 30 s.
fn admin_until_ok(root: &std::path::Path, node: &Node, command: &str, logs: &[std::path::PathBuf]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = run_admin(root, node, command);
        if out.status.success() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "admin {command}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            log_tails(logs)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `node`'s host id (16 hex digits) in `seen_by`'s `admin status`.
fn host_id_of(cluster: &Cluster, seen_by: &Node, node: &Node) -> String {
    let status = cluster.status(seen_by);
    let line = status
        .lines()
        .find(|l| l.contains(&format!(" {} ", node.peer)))
        .unwrap_or_else(|| panic!("no line for {} in\n{status}", node.peer));
    line.split_whitespace()
        .find(|w| w.len() == 16 && w.chars().all(|c| c.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("no host id in {line}"))
        .to_string()
}

/// Waits until a decommissioned node's process has stopped by itself.
fn wait_until_exited(node: &mut Node) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let child = node.child.as_mut().expect("the node runs");
    while child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the node did not stop after its decommission:\n{}",
            log_tails(std::slice::from_ref(&node.log))
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    node.child = None;
}

/// A running 4-node cluster (node 1 everyone's seed, logs at info).
struct FourNodes {
    cluster: Cluster,
    nodes: [Node; 4],
    logs: Vec<std::path::PathBuf>,
}

/// Starts four nodes under `root` and waits until node 1 sees them up.
fn start_four_nodes(root: &std::path::Path) -> FourNodes {
    let (ca, cluster) = new_cluster(root);
    let info = [("RUST_LOG", "info".to_string())];
    let nodes = start_nodes(&cluster, root, &ca, 4, &info, |_, _| {});
    let logs = nodes.iter().map(|n| n.log.clone()).collect();
    let nodes = <[Node; 4]>::try_from(nodes).ok().unwrap();
    FourNodes {
        cluster,
        nodes,
        logs,
    }
}

/// Of three nodes at RF=3, the first alone holds every one of `keys`, then
/// (the others back, then the first and third killed) the second alone.
fn first_then_second_alone_hold(
    cluster: &Cluster,
    [n1, n2, n3]: [&mut Node; 3],
    keys: &[i32],
    logs: &[std::path::PathBuf],
) {
    n2.kill9();
    n3.kill9();
    assert_alone_holds(cluster, n1, keys, logs);
    n2.start();
    n3.start();
    cluster.wait_for_up(n1, 3);
    cluster.wait_for_up(n2, 3);
    n1.kill9();
    n3.kill9();
    assert_alone_holds(cluster, n2, keys, logs);
}

/// With every other node down (waits until `node` sees two down), `node`
/// answers each of `keys` at ONE with its value.
fn assert_alone_holds(cluster: &Cluster, node: &Node, keys: &[i32], logs: &[std::path::PathBuf]) {
    wait_for_down(cluster, node, 2);
    let c = cluster.connect(node);
    c.set_consistency(Consistency::One);
    for &k in keys {
        let got = cluster
            .rt
            .block_on(c.execute("SELECT v FROM ks.kv WHERE k = ?", vec![Value::Int(k)]))
            .map(|r| r.result);
        match got {
            Ok(QueryResult::Rows(rs)) => assert_eq!(
                rs.rows.first().map(|r| r.values[0].clone()),
                Some(Value::Int(k * 3)),
                "key {k} at ONE from {} alone; logs:\n{}",
                node.client,
                log_tails(logs)
            ),
            other => panic!("key {k}: {other:?}; logs:\n{}", log_tails(logs)),
        }
    }
    cluster.rt.block_on(c.close());
}

/// The last lines of each log, for a failure message.
fn log_tails(logs: &[std::path::PathBuf]) -> String {
    let mut out = String::new();
    for path in logs {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!("== {}\n", path.display()));
        for line in &lines[lines.len().saturating_sub(25)..] {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[test]
fn decommissioning_the_only_node_is_refused_and_it_keeps_serving() {
    let root = tempfile::tempdir().unwrap();
    let (ca, cluster) = new_cluster(root.path());
    let mut n1 = make_node(root.path(), &ca, "node1", None);
    n1.start();
    cluster.wait_for_up(&n1, 1);
    let out = run_admin(root.path(), &n1, "decommission");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "decommission of the only node succeeded"
    );
    assert!(
        stderr.contains("only node of the ring"),
        "unclear refusal: {stderr}"
    );
    // Still normal, still serving.
    let status = cluster.wait_for_up(&n1, 1);
    assert!(n1.child.as_mut().unwrap().try_wait().unwrap().is_none());
    assert!(status.contains("UN"), "{status}");
}

/// Waits until the copies of the writes made so far have landed: two
/// seconds for those on the way, then until no node of `nodes` holds a
/// hint (`pending_targets=0`; hints for a node that left are dropped).
fn wait_for_copies(cluster: &Cluster, nodes: &[&Node]) {
    std::thread::sleep(Duration::from_secs(2));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for node in nodes {
        loop {
            let status = cluster.status(node);
            if status.contains("pending_targets=0") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "hints never delivered:\n{status}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// [`Cluster::wait_for_up`], with the tail of `logs` in the failure.
fn wait_for_up_or_logs(
    cluster: &Cluster,
    node: &Node,
    up: usize,
    logs: &[std::path::PathBuf],
) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = cluster.status(node);
        if s.lines().filter(|l| l.starts_with("UN")).count() == up {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never saw {up} nodes up:\n{s}\n{}",
            log_tails(logs)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}
