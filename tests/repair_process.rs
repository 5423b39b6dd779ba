//! `ringdb admin repair` on a real cluster of three `ringdb server`
//! processes (RF 3). Node 3 is killed with SIGKILL while writes go on at
//! QUORUM, and the hints held for it are lost (node 1, the coordinator
//! holding them, is stopped and its hints directory removed, as when a
//! disk is replaced or the hint window passed; node 2's too). Node 3 comes back without
//! those writes: read alone, it lacks them. `ringdb admin repair` on node
//! 3 sends them, after which node 3 alone holds every acknowledged write;
//! a second repair finds nothing to send; a repair with the other nodes
//! down says it is incomplete and fails; an unknown keyspace is refused.
//! Automatic repair (`--auto-repair-interval-secs`) does the same without
//! an operator.

mod support;

use cql_lite::Value;
use ringdb::client::Client;
use ringdb::model::Consistency;
use std::time::Duration;
use support::process::{admin_ok, new_cluster, run_admin, start_nodes, Cluster, Node};

/// The `N` before `label` in an admin repair report ("... 3 partition(s)
/// repaired ...").
fn count_before(report: &str, label: &str) -> u64 {
    let at = report
        .find(label)
        .unwrap_or_else(|| panic!("no {label:?} in {report}"));
    report[..at]
        .split_whitespace()
        .last()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count before {label:?} in {report}"))
}

/// The keys of `0..keys` whose value node `node`, read alone at ONE, does
/// not hold as `k * 7`.
fn missing_on(cluster: &Cluster, node: &Node, keys: i32) -> Vec<i32> {
    let alone = cluster.connect(node);
    alone.set_consistency(Consistency::One);
    let mut missing = Vec::new();
    for k in 0..keys {
        let got = cluster
            .rt
            .block_on(alone.execute("SELECT v FROM ks.kv WHERE k = ?", vec![Value::Int(k)]))
            .unwrap_or_else(|e| panic!("read of {k} from {} alone: {e}", node.client));
        if !format!("{:?}", got.result).contains(&format!("Int({})", k * 7)) {
            missing.push(k);
        }
    }
    cluster.rt.block_on(alone.close());
    missing
}

/// Three nodes, RF 3, all up, where node 3 lacks the writes 100..300 of
/// `ks.kv` (made while it was down, their hints lost) and holds 0..100.
/// Reads through node 3 ask only node 3 (no read repair): what node 3
/// holds comes from writes and repair alone.
fn node_3_missing_writes(root: &std::path::Path) -> (Cluster, [Node; 3]) {
    let (ca, cluster) = new_cluster(root);
    let nodes = start_nodes(&cluster, root, &ca, 3, &[], |i, n| {
        if i == 3 {
            n.extra_args = vec!["--read-repair-every".into(), "0".into()];
        }
    });
    let [mut n1, mut n2, mut n3] = <[Node; 3]>::try_from(nodes).ok().unwrap();

    let client = cluster.connect(&n1);
    cluster.create_kv_rf3(&client);
    let write = |c: &Client, k: i32| {
        cluster
            .rt
            .block_on(c.execute(
                "INSERT INTO ks.kv (k, v) VALUES (?, ?)",
                vec![Value::Int(k), Value::Int(k * 7)],
            ))
            .unwrap_or_else(|e| panic!("write {k}: {e}"));
    };
    client.set_consistency(Consistency::All);
    for k in 0..100 {
        write(&client, k);
    }
    n3.kill9();
    client.set_consistency(Consistency::Quorum);
    for k in 100..300 {
        write(&client, k);
    }
    cluster.rt.block_on(client.close());
    // The hints node 1 holds for node 3 are lost.
    n1.stop();
    std::fs::remove_dir_all(n1.data.join("hints")).expect("remove node 1's hints");
    n1.start();
    cluster.wait_for_up(&n2, 2);
    n3.start();
    cluster.wait_for_up(&n3, 3);

    // Node 3 alone lacks what was written while it was down. Node 2 may
    // hold hints for it too (a write can time out on node 3 before gossip
    // says it is down, and its hint go to another node): they are lost as
    // well, so that only repair can bring node 3 up to date.
    n1.stop();
    n2.stop();
    for node in [&n1, &n2] {
        let hints = node.data.join("hints");
        if hints.exists() {
            std::fs::remove_dir_all(&hints).expect("remove hints");
        }
    }
    let missing = missing_on(&cluster, &n3, 300);
    assert_eq!(
        missing,
        (100..300).collect::<Vec<_>>(),
        "node 3 should lack exactly the writes made while it was down"
    );
    n1.start();
    n2.start();
    cluster.wait_for_up(&n3, 3);
    (cluster, [n1, n2, n3])
}

#[test]
fn admin_repair_sends_a_node_the_writes_whose_hints_were_lost() {
    let root = tempfile::tempdir().unwrap();
    let (cluster, [mut n1, mut n2, n3]) = node_3_missing_writes(root.path());

    // The stream limit can be changed on the running node; repair keeps
    // to it (the simulation tests time it) and counts what it streamed.
    let set = admin_ok(root.path(), &n3, "setstreamthroughput 16");
    assert!(
        set.contains("16 MiB/s") && set.contains("was 64 MiB/s"),
        "{set}"
    );
    let status = cluster.status(&n3);
    assert!(
        status.contains("Streams: limit=16MiB/s bytes_streamed="),
        "{status}"
    );
    let out = run_admin(root.path(), &n3, "setstreamthroughput lots");
    assert!(!out.status.success(), "a limit that is not a number");

    let first = admin_ok(root.path(), &n3, "repair");
    assert!(first.contains("repaired"), "{first}");
    assert!(
        count_before(&first, "partition(s) repaired") >= 200,
        "{first}"
    );
    assert!(count_before(&first, "entries sent") >= 200, "{first}");
    let second = admin_ok(root.path(), &n3, "repair ks kv");
    assert_eq!(count_before(&second, "entries sent"), 0, "{second}");
    assert_eq!(
        count_before(&second, "partition(s) repaired"),
        0,
        "{second}"
    );
    let status = cluster.status(&n3);
    assert!(status.contains("repairs: 2"), "{status}");
    assert!(status.contains("Repair: idle"), "{status}");
    let streamed: u64 = status
        .split_whitespace()
        .find_map(|w| w.strip_prefix("bytes_streamed="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no Streams line in {status}"));
    assert!(streamed > 200 * 8, "{status}");
    // Every replica hashed its data for both repairs, node 1 for node 3's
    // requests (served under node 1's own limit) and node 3 for itself.
    for node in [&n1, &n3] {
        let status = cluster.status(node);
        let hashed: u64 = status
            .split_whitespace()
            .find_map(|w| w.strip_prefix("bytes_hashed="))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no bytes_hashed in {status}"));
        assert!(hashed > 2 * 300 * 8, "{status}");
        assert!(status.contains(" hash_throttled_ms="), "{status}");
    }
    let set = admin_ok(root.path(), &n3, "setstreamthroughput 0");
    assert!(set.contains("limit: none (was 16 MiB/s)"), "{set}");

    // Node 3 alone now holds every acknowledged write.
    n1.stop();
    n2.stop();
    let missing = missing_on(&cluster, &n3, 300);
    assert!(
        missing.is_empty(),
        "node 3 still lacks {} writes after repair, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );

    // The other replicas are down (node 3 may not know it yet: wait for
    // gossip to say so), so a repair is incomplete.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while cluster
        .status(&n3)
        .lines()
        .filter(|l| l.starts_with("DN"))
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "nodes 1 and 2 never seen down"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = run_admin(root.path(), &n3, "repair --primary-range");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a repair with replicas down succeeded"
    );
    assert!(stderr.contains("repair incomplete"), "{stderr}");
    assert!(stderr.contains("had a replica down"), "{stderr}");

    let out = run_admin(root.path(), &n3, "repair nosuchks");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no keyspace named nosuchks"), "{stderr}");
}

/// With automatic repair every 2 s, the nodes bring node 3 up to date by
/// themselves: each repairs the ranges it leads, so together they cover
/// every range. `admin status` says when the last one completed, and a
/// restarted node remembers it.
#[test]
fn automatic_repair_sends_a_node_the_writes_whose_hints_were_lost() {
    let root = tempfile::tempdir().unwrap();
    let (cluster, mut nodes) = node_3_missing_writes(root.path());
    let status = cluster.status(&nodes[2]);
    assert!(
        status.contains("Auto repair: every 24h (primary ranges), none complete yet, next in"),
        "the default is a day: {status}"
    );
    for node in &mut nodes {
        node.stop();
        node.extra_args
            .extend(["--auto-repair-interval-secs".to_string(), "2".to_string()]);
    }
    for node in &mut nodes {
        node.start();
    }
    let [n1, n2, mut n3] = nodes;
    cluster.wait_for_up(&n3, 3);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let missing = missing_on(&cluster, &n3, 300);
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node 3 still lacks {} writes, e.g. {:?}; its status:\n{}",
            missing.len(),
            &missing[..missing.len().min(10)],
            cluster.status(&n3)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Every node completes its own, and says so.
    for node in [&n1, &n2, &n3] {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let status = cluster.status(node);
            let line = status
                .lines()
                .find(|l| l.starts_with("Auto repair:"))
                .unwrap_or_else(|| panic!("no auto repair line: {status}"))
                .to_string();
            if line.contains("last complete") {
                assert!(
                    line.starts_with("Auto repair: every 2s (primary ranges)"),
                    "{line}"
                );
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{line}");
            std::thread::sleep(Duration::from_millis(300));
        }
        assert!(node.data.join("auto-repair").exists());
    }
    // Restarted, node 3 remembers its last complete repair.
    n3.stop();
    n3.start();
    cluster.wait_for_up(&n3, 3);
    let status = cluster.status(&n3);
    assert!(
        status.contains("Auto repair: every 2s (primary ranges), last complete"),
        "{status}"
    );

    // Node 1 goes down: node 2's repairs cannot complete, and it waits for
    // every node to be up rather than repairing again and again; once node
    // 1 is back, it completes again.
    let mut n1 = n1;
    n1.kill9();
    let auto_line = |node: &Node| {
        let status = cluster.status(node);
        status
            .lines()
            .find(|l| l.starts_with("Auto repair:"))
            .unwrap_or_else(|| panic!("no auto repair line: {status}"))
            .to_string()
    };
    let wait_for = |node: &Node, what: &str, ok: &dyn Fn(&str) -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let line = auto_line(node);
            if ok(&line) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "never {what}: {line}");
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    wait_for(&n2, "waiting for node 1", &|l| {
        l.contains("next once every node is up; last attempt incomplete")
    });
    let repairs_while_down = |node: &Node| -> u64 {
        let status = cluster.status(node);
        status
            .split("repairs: ")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no repairs counter: {status}"))
    };
    let before = repairs_while_down(&n2);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        repairs_while_down(&n2),
        before,
        "no repair runs while a node is down"
    );
    n1.start();
    wait_for(&n2, "complete again", &|l| {
        l.contains("last complete")
            && !l.contains("last attempt")
            && !l.contains("every node is up")
    });
}
