//! `ringdb bench ycsb` end to end with tiny numbers. No timing is asserted.
//!
//! - Local clusters: a 3-node RF=3 and a 1-node RF=1 cluster of real
//!   processes, every phase (load, workloads A and F, A paced) done with
//!   operations counted and none failed.
//! - `--host`: workloads B and C against a running 3-node cluster; the rows
//!   it loaded are YCSB's (10 fields of 100 bytes) and every one is there.

mod support;

use cql_lite::Value;
use ringdb::model::Consistency;
use ringdb::query::api::QueryResult;
use std::process::Command;
use support::process::{new_cluster, start_nodes};

/// The cells of the markdown table rows on stdout whose first column is a
/// cluster label.
fn rows(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .filter(|l| l.starts_with("| ") && (l.contains("-node RF=") || l.contains(" host(s) RF=")))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// Runs `ringdb` as `command` says and checks that it succeeded; its
/// standard output and error.
fn run_ringdb(command: &mut Command) -> (String, String) {
    let out = command.output().expect("run ringdb");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

/// Checks a results-table row: `ok` operations done, none failed, and its
/// latency columns (p50, p99, p99.9, max) in order and not zero.
fn check_result_row(row: &[String]) -> u64 {
    let ok: u64 = row[3].parse().unwrap();
    let errors: u64 = row[4].parse().unwrap();
    let latency: Vec<u64> = row[6..10].iter().map(|c| c.parse().unwrap()).collect();
    assert!(ok > 0, "{row:?}");
    assert_eq!(errors, 0, "{row:?}");
    assert!(latency[0] > 0, "{row:?}");
    assert!(latency.windows(2).all(|w| w[0] <= w[1]), "{row:?}");
    ok
}

#[test]
fn ycsb_runs_every_phase_on_both_clusters_without_errors() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("ycsb.json");
    let (stdout, stderr) = run_ringdb(
        Command::new(env!("CARGO_BIN_EXE_ringdb"))
            .args(["bench", "ycsb", "--records", "200", "--operations", "200"])
            .args(["--workloads", "a,f", "--concurrency", "4"])
            .args(["--clusters", "3,1", "--paced-workload", "a"])
            .arg("--dir")
            .arg(dir.path().join("clusters"))
            .arg("--json")
            .arg(&json),
    );

    // Results table: cluster | phase | op | ok | errors | ops/s | p50 | ...
    let results: Vec<Vec<String>> = rows(&stdout)
        .into_iter()
        .filter(|r| r.len() == 10)
        .collect();
    for cluster in ["3-node RF=3 QUORUM", "1-node RF=1 QUORUM"] {
        for (phase, op) in [
            ("load", "INSERT"),
            ("A", "READ"),
            ("A", "UPDATE"),
            ("F", "READ"),
            ("F", "READ-MODIFY-WRITE"),
        ] {
            let row = results
                .iter()
                .find(|r| r[0] == cluster && r[1] == phase && r[2] == op)
                .unwrap_or_else(|| panic!("no row {cluster} {phase} {op} in:\n{stdout}"));
            check_result_row(row);
        }
        // Every operation of a phase is counted, as done or failed.
        let load_ok: u64 = results
            .iter()
            .find(|r| r[0] == cluster && r[1] == "load")
            .map(|r| r[3].parse().unwrap())
            .unwrap();
        assert_eq!(load_ok, 200);
        let a_total: u64 = results
            .iter()
            .find(|r| r[0] == cluster && r[1] == "A" && r[2] == "total")
            .map(|r| r[3].parse().unwrap())
            .unwrap();
        assert_eq!(a_total, 200);
    }

    // The ratio table and the paced run are there.
    assert!(
        stdout.contains("3n / 1n"),
        "no throughput ratio in:\n{stdout}"
    );
    assert!(stdout.contains("Paced runs"), "no paced run in:\n{stdout}");
    // The header says which commit-log mode ran and how slow this disk's
    // fdatasync is (what a batch-mode write waits for).
    assert!(
        stdout.contains("Commit log: batch") && stdout.contains("fdatasync of a 4 KiB append p50"),
        "no commit-log and disk notes in:\n{stdout}"
    );

    // The CPU table: every phase of both clusters has the servers' and the
    // load generator's CPU seconds (read from /proc, so numbers, not "-"),
    // the hypervisor's steal share, and the UDP datagrams per operation
    // (from /proc/net/snmp).
    let cpu: Vec<Vec<String>> = rows(&stdout)
        .into_iter()
        .filter(|r| r.len() == 11)
        .collect();
    for cluster in ["3-node RF=3 QUORUM", "1-node RF=1 QUORUM"] {
        for phase in ["load", "A", "F", "A paced"] {
            let row = cpu
                .iter()
                .find(|r| r[0] == cluster && r[1] == phase)
                .unwrap_or_else(|| panic!("no CPU row {cluster} {phase} in:\n{stdout}"));
            let server: f64 = row[3].parse().unwrap();
            let client: f64 = row[6].parse().unwrap();
            assert!(server >= 0.0 && client >= 0.0, "{row:?}");
            if cfg!(target_os = "linux") {
                let steal: f64 = row[9].trim_end_matches('%').parse().unwrap();
                assert!((0.0..=100.0).contains(&steal), "{row:?}");
                let datagrams: f64 = row[10].parse().unwrap();
                assert!(datagrams > 0.0, "{row:?}");
            }
        }
        // The paced run's timeline: its slowest windows, and a drawing.
        assert!(
            stderr.contains("slow window at"),
            "no slow windows in:\n{stderr}"
        );
        let slug = cluster.replace([' ', '='], "-");
        let svg = dir
            .path()
            .join("clusters")
            .join(format!("paced-{slug}-A.svg"));
        let svg = std::fs::read_to_string(&svg)
            .unwrap_or_else(|e| panic!("{}: {e}\nstderr:\n{stderr}", svg.display()));
        assert!(svg.starts_with("<svg") && svg.contains("p99"), "{svg}");
        assert!(
            stdout.lines().any(
                |l| l.starts_with(&format!("p99 verdict, {cluster}, workload A"))
                    && l.contains("target p99 < 5 ms")
            ),
            "no p99 verdict for {cluster} in:\n{stdout}"
        );
    }

    let json = std::fs::read_to_string(&json).unwrap();
    assert!(json.contains("\"server_cpu_s\":"), "{json}");
    assert!(json.contains("\"udp_sent_per_op\":"), "{json}");
    assert!(json.contains("\"phase\":\"A paced\""), "{json}");
    // Every node flushed its memtables before each measured run (warm-up,
    // workload A, its paced run), in both clusters; not before the peak
    // check, which should find the database as the paced run left it.
    assert!(json.contains("\"flush_before_runs\":true,"), "{json}");
    assert!(!stderr.contains("before the peak check"), "{stderr}");
    for what in ["the warm-up", "workload A", "the paced run"] {
        assert_eq!(
            stderr
                .matches(&format!("flushed every node before {what} in"))
                .count(),
            2,
            "{stderr}"
        );
    }
    // A fifth of the operations warmed each cluster up, uncounted.
    assert!(json.contains("\"warmup_operations\":40,"), "{json}");
    assert_eq!(
        stderr
            .matches("warm-up (not counted): 40 operations of workload A")
            .count(),
        2,
        "{stderr}"
    );
    // The peak measured again after the paced run, a number.
    let after = json
        .split("\"peak_after_ops_per_s\":")
        .nth(1)
        .and_then(|rest| rest.split(['}', ',']).next())
        .and_then(|v| v.parse::<f64>().ok());
    assert!(after.is_some_and(|v| v > 0.0), "{json}");
    assert!(!json.contains("\"errors\":1"), "{json}");
    assert!(json.starts_with('{') && json.trim_end().ends_with('}'));
    // Requests in flight: a closed loop never has more than its
    // concurrency (4); the paced run is an open loop bounded by
    // --paced-max-in-flight (1024 by default).
    let phases: Vec<(&str, usize)> = json
        .split("{\"phase\":\"")
        .skip(1)
        .map(|chunk| {
            let name = chunk.split('"').next().unwrap();
            let most = chunk
                .split("\"most_in_flight\":")
                .nth(1)
                .and_then(|rest| rest.split([',', '}']).next())
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or_else(|| panic!("no most_in_flight for {name} in {json}"));
            (name, most)
        })
        .collect();
    assert_eq!(phases.len(), 8, "{phases:?}");
    for (name, most) in phases {
        let bound = if name.ends_with("paced") { 1024 } else { 4 };
        assert!((1..=bound).contains(&most), "{name}: {most} in flight");
    }
}

#[test]
fn ycsb_runs_workloads_b_and_c_against_a_running_cluster() {
    let root = tempfile::tempdir().unwrap();
    let (ca, cluster) = new_cluster(root.path());
    let nodes = start_nodes(&cluster, root.path(), &ca, 3, &[], |_, _| {});
    let hosts: Vec<String> = nodes.iter().map(|n| n.client.to_string()).collect();
    let (stdout, _) = run_ringdb(
        Command::new(env!("CARGO_BIN_EXE_ringdb"))
            .args(["bench", "ycsb", "--records", "300", "--operations", "400"])
            .args(["--workloads", "b,c", "--concurrency", "4"])
            .args(["--paced-workload", "none", "--host", &hosts.join(",")])
            .arg("--ca-cert")
            .arg(root.path().join("certs").join("ca.pem")),
    );
    let results: Vec<Vec<String>> = rows(&stdout)
        .into_iter()
        .filter(|r| r.len() == 10 && r[0] == "3 host(s) RF=3 QUORUM" && r[2] != "total")
        .collect();
    let ok = |phase: &str, op: &str| -> Option<u64> {
        results
            .iter()
            .find(|r| r[1] == phase && r[2] == op)
            .map(|r| check_result_row(r))
    };
    assert_eq!(ok("load", "INSERT"), Some(300), "{stdout}");
    // B: 95 % reads, 5 % updates; C: reads only.
    let b_reads = ok("B", "READ").expect("B reads");
    let b_updates = ok("B", "UPDATE").expect("B updates");
    assert_eq!(b_reads + b_updates, 400, "{stdout}");
    assert!(
        b_updates < b_reads / 4,
        "{b_reads} reads, {b_updates} updates"
    );
    assert_eq!(ok("C", "READ"), Some(400), "{stdout}");
    assert_eq!(ok("C", "UPDATE"), None, "{stdout}");

    // Every loaded record is in the table, as YCSB shapes it: a key and
    // ten text fields of 100 printable bytes (1 KB a row).
    let client = cluster.connect(&nodes[1]);
    let all = ringdb::query::api::QueryOptions {
        consistency: Consistency::All,
        ..Default::default()
    };
    let count = cluster
        .rt
        .block_on(client.execute_with("SELECT count(*) FROM ycsb.usertable", vec![], all.clone()))
        .unwrap();
    match count.result {
        QueryResult::Rows(rs) => assert_eq!(rs.rows[0].values[0], Value::BigInt(300)),
        other => panic!("count answered {other:?}"),
    }
    for record in [0, 150, 299] {
        let row = cluster
            .rt
            .block_on(client.execute_with(
                "SELECT * FROM ycsb.usertable WHERE y_id = ?",
                vec![Value::Text(format!("user{record}"))],
                all.clone(),
            ))
            .unwrap();
        let QueryResult::Rows(rs) = row.result else {
            panic!("read answered {:?}", row.result);
        };
        assert_eq!(rs.rows.len(), 1, "user{record}");
        let values = &rs.rows[0].values;
        assert_eq!(values.len(), 11, "{:?}", rs.columns);
        for field in &values[1..] {
            match field {
                Value::Text(t) => {
                    assert_eq!(t.len(), 100, "{t}");
                    assert!(t.bytes().all(|b| b.is_ascii_graphic()), "{t}");
                }
                other => panic!("field {other:?}"),
            }
        }
    }
    cluster.rt.block_on(client.close());
}
