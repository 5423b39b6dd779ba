//! A table whose `gc_grace_seconds` is at or below the node's hint window
//! is warned about, on a real server process started with
//! `--hint-window-hours 1`: the DDL statement's client gets a warning (the
//! node gives its executor its own window, not the default of 3 h), and
//! the node's log names the table once while it runs and once more at
//! every start, never a table whose grace period is above the window.

mod support;

use ringdb::client::Client;
use std::time::{Duration, Instant};
use support::process::{make_node, new_cluster, Cluster, Node};

/// The start of the warning for table `ks.<table>`.
fn warning_for(table: &str) -> String {
    format!("Table ks.{table} has gc_grace_seconds")
}

/// Runs `ddl` through `client`; its warnings.
fn ddl(cluster: &Cluster, client: &Client, ddl: &str) -> Vec<String> {
    cluster
        .rt
        .block_on(client.execute(ddl, vec![]))
        .unwrap_or_else(|e| panic!("{ddl}: {e}"))
        .warnings
}

/// How many times the node's log holds `text`.
fn logged(node: &Node, text: &str) -> usize {
    std::fs::read_to_string(&node.log)
        .unwrap_or_default()
        .matches(text)
        .count()
}

/// Waits (up to 20 s) until the node's log holds `text` `count` times.
fn wait_logged(node: &Node, text: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while logged(node, text) < count {
        assert!(
            Instant::now() < deadline,
            "{text:?} logged {} time(s), not {count}; log {}",
            logged(node, text),
            node.log.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts `node` with its warnings logged whatever the environment says.
fn start(node: &mut Node) {
    node.start_with_env(&[("RUST_LOG", "warn".into())]);
}

/// A node with a hint window of one hour and automatic repair every
/// `repair_secs` (0: off), and a client of it that created keyspace `ks`.
fn node_with_keyspace(root: &std::path::Path, repair_secs: u64) -> (Cluster, Node, Client) {
    let (ca, cluster) = new_cluster(root);
    let mut node = make_node(root, &ca, "n1", None);
    node.extra_args = vec![
        "--hint-window-hours".into(),
        "1".into(),
        "--auto-repair-interval-secs".into(),
        repair_secs.to_string(),
    ];
    start(&mut node);
    cluster.wait_for_up(&node, 1);
    let client = cluster.connect(&node);
    ddl(
        &cluster,
        &client,
        "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
    );
    (cluster, node, client)
}

#[test]
fn a_grace_period_within_the_hint_window_is_warned_about() {
    let root = tempfile::tempdir().unwrap();
    // Automatic repair off: its interval has a warning of its own (below).
    let (cluster, mut node, client) = node_with_keyspace(root.path(), 0);
    // At the window (one hour): warned, with both values and the remedy.
    let warnings = ddl(
        &cluster,
        &client,
        "CREATE TABLE ks.short (k int PRIMARY KEY, v int) WITH gc_grace_seconds = 3600",
    );
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    for part in [
        &warning_for("short"),
        "= 3600",
        "hint window of 3600 s (1 h)",
        "--hint-window-hours",
    ] {
        assert!(warnings[0].contains(part), "{part:?} in {warnings:?}");
    }
    // Above this node's window, though below the default one: no warning.
    let warnings = ddl(
        &cluster,
        &client,
        "CREATE TABLE ks.long (k int PRIMARY KEY, v int) WITH gc_grace_seconds = 7200",
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    // Lowered into the window by ALTER: warned.
    let warnings = ddl(
        &cluster,
        &client,
        "ALTER TABLE ks.long WITH gc_grace_seconds = 1800",
    );
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains(&warning_for("long")), "{warnings:?}");
    cluster.rt.block_on(client.close());

    // The log: each short table once, however long the node runs.
    wait_logged(&node, &warning_for("short"), 1);
    wait_logged(&node, &warning_for("long"), 1);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(logged(&node, &warning_for("short")), 1);
    assert_eq!(logged(&node, &warning_for("long")), 1);

    // A restart logs them again, from the schema the node starts with.
    node.stop();
    start(&mut node);
    cluster.wait_for_up(&node, 1);
    wait_logged(&node, &warning_for("short"), 2);
    wait_logged(&node, &warning_for("long"), 2);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(logged(&node, &warning_for("short")), 2);
    assert_eq!(logged(&node, &warning_for("long")), 2);

    // Raised above the window: nothing more.
    let client = cluster.connect(&node);
    let warnings = ddl(
        &cluster,
        &client,
        "ALTER TABLE ks.short WITH gc_grace_seconds = 864000",
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    cluster.rt.block_on(client.close());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(logged(&node, &warning_for("short")), 2);
}

/// With automatic repair every two hours, a grace period at or below that
/// is warned about too, naming the interval and its setting; one at or
/// below the hint window as well gets both warnings.
#[test]
fn a_grace_period_within_the_repair_interval_is_warned_about() {
    let root = tempfile::tempdir().unwrap();
    let (cluster, node, client) = node_with_keyspace(root.path(), 7200);
    let warnings = ddl(
        &cluster,
        &client,
        "CREATE TABLE ks.daily (k int PRIMARY KEY, v int) WITH gc_grace_seconds = 5400",
    );
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    for part in [
        &warning_for("daily"),
        "= 5400",
        "automatic repair interval of 7200 s (2 h)",
        "--auto-repair-interval-secs",
    ] {
        assert!(warnings[0].contains(part), "{part:?} in {warnings:?}");
    }
    let warnings = ddl(
        &cluster,
        &client,
        "CREATE TABLE ks.hourly (k int PRIMARY KEY, v int) WITH gc_grace_seconds = 3600",
    );
    assert_eq!(warnings.len(), 2, "hint window and repair: {warnings:?}");
    assert!(
        warnings[0].contains("hint window of 3600 s"),
        "{warnings:?}"
    );
    assert!(
        warnings[1].contains("automatic repair interval"),
        "{warnings:?}"
    );
    let warnings = ddl(
        &cluster,
        &client,
        "CREATE TABLE ks.safe (k int PRIMARY KEY, v int) WITH gc_grace_seconds = 86400",
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    cluster.rt.block_on(client.close());
    // The log says it too, once per table and check.
    let logged_for = |table: &str| format!("Table ks.{table} has gc_grace_seconds = ");
    wait_logged(&node, "automatic repair interval of 7200 s (2 h)", 2);
    wait_logged(&node, &logged_for("hourly"), 2);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(logged(&node, &logged_for("daily")), 1);
    assert_eq!(logged(&node, &logged_for("safe")), 0);
}
