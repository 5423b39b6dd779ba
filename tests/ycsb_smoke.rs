//! `ringdb bench ycsb` end to end with tiny numbers: a 3-node RF=3 and a 1-node
//! RF=1 cluster of real processes, every phase (load, workloads A and F,
//! A paced) done with operations counted and none failed. No timing is
//! asserted.

use std::process::Command;

/// The cells of the markdown table rows on stdout whose first column is a
/// cluster label.
fn rows(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .filter(|l| l.starts_with("| ") && l.contains("-node RF="))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

#[test]
fn ycsb_runs_every_phase_on_both_clusters_without_errors() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("ycsb.json");
    let out = Command::new(env!("CARGO_BIN_EXE_ringdb"))
        .args(["bench", "ycsb", "--records", "200", "--operations", "200"])
        .args(["--workloads", "a,f", "--concurrency", "4"])
        .args(["--clusters", "3,1", "--paced-workload", "a"])
        .arg("--dir")
        .arg(dir.path().join("clusters"))
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run ringdb bench ycsb");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
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
            let ok: u64 = row[3].parse().unwrap();
            let errors: u64 = row[4].parse().unwrap();
            let p99: u64 = row[7].parse().unwrap();
            assert!(ok > 0, "{row:?}");
            assert_eq!(errors, 0, "{row:?}");
            assert!(p99 > 0, "{row:?}");
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
