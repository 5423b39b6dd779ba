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

#[test]
fn a_grace_period_within_the_hint_window_is_warned_about() {
    let root = tempfile::tempdir().unwrap();
    let (ca, cluster) = new_cluster(root.path());
    let mut node = make_node(root.path(), &ca, "n1", None);
    node.extra_args = vec!["--hint-window-hours".into(), "1".into()];
    start(&mut node);
    cluster.wait_for_up(&node, 1);

    let client = cluster.connect(&node);
    ddl(
        &cluster,
        &client,
        "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
    );
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
