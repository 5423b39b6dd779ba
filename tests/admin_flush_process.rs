//! `ringdb admin flush` on a real server process: the node writes its
//! memtables to SSTables on disk, says how many bytes it wrote, keeps
//! every row readable, and after a SIGKILL and restart still holds them
//! (from the SSTables the flush wrote). A second flush with nothing new
//! writes nothing. `admin status` shows the table's storage counters.

mod support;

use cql_lite::Value;
use ringdb::query::api::QueryResult;
use std::path::{Path, PathBuf};
use support::process::{admin_ok, make_node, new_cluster, Cluster, Node};

const ROWS: i32 = 300;

/// SSTable files of keyspace `ks` under a node's data directory.
fn sstables_of_ks(data: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, in_ks: bool, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let in_ks = in_ks || entry.file_name() == "ks";
            if path.is_dir() {
                walk(&path, in_ks, out);
            } else if in_ks && path.extension().is_some_and(|e| e == "sst") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(data, false, &mut out);
    out
}

/// Runs `ringdb admin flush` against `node`; its standard output.
fn admin_flush(root: &Path, node: &Node) -> String {
    admin_ok(root, node, "flush")
}

/// The "N bytes written" figure of an `admin flush` answer.
fn bytes_written(answer: &str) -> u64 {
    let words: Vec<&str> = answer.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "bytes")
        .unwrap_or_else(|| panic!("no byte count in {answer:?}"));
    words[at - 1]
        .parse()
        .unwrap_or_else(|_| panic!("no byte count in {answer:?}"))
}

/// The `Load` column of the one node line (state `UN`) of an `admin
/// status` answer, in bytes (it is printed as "12.34 KiB" or "512 B").
fn load_of(status: &str) -> Option<f64> {
    let line = status
        .lines()
        .find(|l| l.split_whitespace().any(|w| w == "UN"))?;
    let words: Vec<&str> = line
        .split(|c: char| c.is_whitespace() || c == '|')
        .filter(|w| !w.is_empty())
        .collect();
    words.windows(2).find_map(|w| {
        let scale = match w[1] {
            "B" => 1.0,
            "KiB" => 1024.0,
            "MiB" => 1024.0 * 1024.0,
            "GiB" => 1024.0 * 1024.0 * 1024.0,
            _ => return None,
        };
        w[0].parse::<f64>().ok().map(|v| v * scale)
    })
}

/// The numeric `name=value` fields of the `Table <name>:` line of an
/// `admin status` answer.
fn table_stats(status: &str, name: &str) -> std::collections::HashMap<String, f64> {
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("Table {name}:")))
        .unwrap_or_else(|| panic!("no line for table {name} in:\n{status}"));
    line.split_whitespace()
        .filter_map(|field| field.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse::<f64>().ok()?)))
        .collect()
}

/// Every row's value, read at ONE from `node`.
fn read_all(cluster: &Cluster, node: &Node) -> Vec<Option<i32>> {
    let client = cluster.connect(node);
    let mut values = Vec::new();
    for k in 0..ROWS {
        let r = cluster
            .rt
            .block_on(client.execute("SELECT v FROM ks.kv WHERE k = ?", vec![Value::Int(k)]))
            .unwrap();
        let QueryResult::Rows(rows) = r.result else {
            panic!("not rows: {:?}", r.result);
        };
        values.push(rows.rows.first().map(|row| match row.values[0] {
            Value::Int(v) => v,
            ref other => panic!("v is {other:?}"),
        }));
    }
    cluster.rt.block_on(client.close());
    values
}

#[test]
fn admin_flush_writes_memtables_to_sstables_that_survive_a_sigkill() {
    let root = tempfile::tempdir().unwrap();
    let (ca, cluster) = new_cluster(root.path());
    let mut node = make_node(root.path(), &ca, "n1", None);
    node.start();
    cluster.wait_for_up(&node, 1);

    let client = cluster.connect(&node);
    for ddl in [
        "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
        "CREATE TABLE ks.kv (k int PRIMARY KEY, v int)",
    ] {
        cluster.rt.block_on(client.execute(ddl, vec![])).unwrap();
    }
    for k in 0..ROWS {
        cluster
            .rt
            .block_on(client.execute(
                "INSERT INTO ks.kv (k, v) VALUES (?, ?)",
                vec![Value::Int(k), Value::Int(k * 7)],
            ))
            .unwrap();
    }
    cluster.rt.block_on(client.close());
    assert!(
        sstables_of_ks(&node.data).is_empty(),
        "300 small rows should still be in the memtable before the flush"
    );

    let answer = admin_flush(root.path(), &node);
    assert!(answer.contains("flushed"), "{answer}");
    assert!(
        bytes_written(&answer) > 0,
        "the flush wrote nothing: {answer}"
    );
    assert!(
        !sstables_of_ks(&node.data).is_empty(),
        "no SSTable on disk after the flush: {answer}"
    );
    let expected: Vec<Option<i32>> = (0..ROWS).map(|k| Some(k * 7)).collect();
    assert_eq!(read_all(&cluster, &node), expected, "rows after the flush");

    // `admin status` shows the table's storage: the flushed SSTables, and
    // a row cache that answers once a partition was read twice.
    read_all(&cluster, &node);
    read_all(&cluster, &node);
    let status = cluster.status(&node);
    assert!(status.contains("Block cache: "), "{status}");
    let table = table_stats(&status, "ks.kv");
    assert!(table["sstables"] >= 1.0, "{status}");
    assert!(table["flushed_bytes"] > 0.0, "{status}");
    assert!(table["row_cache_hits"] > 0.0, "{status}");
    assert!(table["row_cache_misses"] >= f64::from(ROWS), "{status}");
    // The commit log (`batch` mode, the default) synced the writes, and
    // says how long its fdatasyncs took.
    assert!(table["log_syncs"] >= 1.0, "{status}");
    assert!(
        table["log_sync_p50_us"] <= table["log_sync_p99_us"]
            && table["log_sync_p99_us"] <= table["log_sync_max_us"],
        "{status}"
    );

    // The node gossips its load (bytes of SSTables), and `admin status`
    // shows it in the node's line; it was 0 before the flush.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let load = loop {
        let status = cluster.status(&node);
        let load = load_of(&status);
        if load.is_some_and(|b| b > 0.0) || std::time::Instant::now() > deadline {
            break (load, status);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let sstable_bytes = table_stats(&load.1, "ks.kv")["sstable_bytes"];
    let shown = load.0.unwrap_or_else(|| panic!("no load in:\n{}", load.1));
    assert!(
        (shown - sstable_bytes).abs() <= sstable_bytes * 0.01 + 1.0,
        "load {shown} against {sstable_bytes} bytes of SSTables:\n{}",
        load.1
    );

    // Nothing new to write: a second flush writes no bytes.
    let again = admin_flush(root.path(), &node);
    assert_eq!(bytes_written(&again), 0, "second flush: {again}");

    // The SSTables hold the rows: after a SIGKILL and restart they read back.
    node.kill9();
    node.start();
    cluster.wait_for_up(&node, 1);
    assert_eq!(
        read_all(&cluster, &node),
        expected,
        "rows after the restart"
    );
}
