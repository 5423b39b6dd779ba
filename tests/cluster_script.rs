//! `scripts/cluster.sh` itself, run by bash against the real `ringdb`
//! binary: `start 3` starts three live processes that form a cluster
//! (`status` shows them `UN`); writes at QUORUM keep succeeding after
//! `kill 2`, which `status` then shows `DN`; after `restart 2` the hints
//! reach node 2, which alone (the others killed, one by the script, one
//! by a signal from outside it, which `status` must notice) serves every
//! row at ONE; `restart` brings the others back; `stop` ends every
//! process and `status` then says none runs.
//!
//! The test makes itself the child subreaper, so the orphaned server
//! processes become its children and stay zombies once they exit (as
//! under a container init that never reaps): the script must not take a
//! zombie for a running node. A guard stops the cluster and reaps every
//! server however the test ends.

#![cfg(target_os = "linux")]

mod support;

use cql_lite::Value;
use ringdb::client::Client;
use ringdb::coordinator::FAULT_ENV;
use ringdb::model::Consistency;
use ringdb::query::api::QueryResult;
use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::process::{Cluster, Node};

const NODES: u16 = 3;

/// `count` consecutive UDP ports on 127.0.0.1, all free a moment ago and
/// none in `avoid`; the first of them.
fn consecutive_free_ports(count: u16, avoid: &[u16]) -> u16 {
    for _ in 0..200 {
        let base = support::process::free_port();
        let Some(last) = base.checked_add(count - 1) else {
            continue;
        };
        if (base..=last).any(|p| avoid.contains(&p)) {
            continue;
        }
        // Hold every candidate at once, then let them all go.
        let held: Vec<_> = (base..=last)
            .map(|p| UdpSocket::bind(("127.0.0.1", p)))
            .collect();
        if held.iter().all(Result::is_ok) {
            return base;
        }
    }
    panic!("no {count} consecutive free UDP ports on 127.0.0.1");
}

/// The fields of `/proc/<pid>/stat` after the command name: state first,
/// then the parent's pid.
fn proc_stat(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Whether process `pid` runs: it exists and has not exited (a zombie
/// has).
fn alive(pid: i32) -> bool {
    let exists = unsafe { libc::kill(pid, 0) } == 0;
    exists && proc_stat(pid).is_some_and(|s| s[0] != "Z")
}

/// Waits up to `timeout` for `check` to give a value; panics with its
/// last complaint otherwise.
fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return v,
            Err(why) => assert!(
                Instant::now() < deadline,
                "{what}: not within {timeout:?}; last: {why}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The cluster `scripts/cluster.sh` runs in a temporary directory. On
/// drop: `cluster.sh stop`, then SIGKILL to any server still running, and
/// every server this test adopted is reaped.
struct ScriptCluster {
    dir: tempfile::TempDir,
    base_port: u16,
    peer_base_port: u16,
    /// Every server pid the pid files ever named.
    seen: Mutex<BTreeSet<i32>>,
}

impl ScriptCluster {
    fn new() -> Self {
        let base_port = consecutive_free_ports(NODES, &[]);
        let clients: Vec<u16> = (base_port..base_port + NODES).collect();
        let peer_base_port = consecutive_free_ports(NODES, &clients);
        ScriptCluster {
            dir: tempfile::tempdir().expect("temporary cluster directory"),
            base_port,
            peer_base_port,
            seen: Mutex::new(BTreeSet::new()),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg("scripts/cluster.sh")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("RINGDB_BIN", env!("CARGO_BIN_EXE_ringdb"))
            .env("RINGDB_CLUSTER_DIR", self.dir.path())
            .env("BASE_PORT", self.base_port.to_string())
            .env("PEER_BASE_PORT", self.peer_base_port.to_string())
            .env_remove(FAULT_ENV)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `cluster.sh ARGS`, which must succeed; its standard output.
    fn run(&self, args: &[&str]) -> String {
        let out: Output = self
            .command(args)
            .output()
            .expect("run bash scripts/cluster.sh");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "cluster.sh {args:?} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        self.note_pids();
        stdout
    }

    /// The pid in node `i`'s pid file, if there is one.
    fn pid(&self, i: u16) -> Option<i32> {
        let text = std::fs::read_to_string(self.dir.path().join(format!("node{i}.pid"))).ok()?;
        Some(text.trim().parse().expect("a pid file holds a pid"))
    }

    fn note_pids(&self) {
        let mut seen = self.seen.lock().expect("pid set");
        seen.extend((1..=NODES).filter_map(|i| self.pid(i)));
    }

    /// Node `i` as the test helpers know a node (never started by them).
    fn node(&self, i: u16) -> Node {
        let dir = self.dir.path();
        Node {
            data: dir.join(format!("node{i}")),
            certs: dir.join("certs").join(format!("node{i}")),
            client: SocketAddr::from(([127, 0, 0, 1], self.base_port + i - 1)),
            peer: SocketAddr::from(([127, 0, 0, 1], self.peer_base_port + i - 1)),
            seed: None,
            log: dir.join(format!("node{i}.log")),
            extra_args: Vec::new(),
            child: None,
        }
    }

    fn log(&self, i: u16) -> PathBuf {
        self.dir.path().join(format!("node{i}.log"))
    }

    /// Waits until `cluster.sh status` satisfies `check`; that status.
    fn wait_for_status(&self, what: &str, check: impl Fn(&str) -> Result<(), String>) -> String {
        wait_for(what, Duration::from_secs(30), || {
            let status = self.run(&["status"]);
            check(&status)
                .map(|()| status.clone())
                .map_err(|why| format!("{why}\n{status}\nlog of node 1: {}", self.log(1).display()))
        })
    }
}

impl Drop for ScriptCluster {
    fn drop(&mut self) {
        let _ = self.command(&["stop"]).output();
        let seen = self.seen.lock().map(|s| s.clone()).unwrap_or_default();
        let me = std::process::id().to_string();
        for pid in seen {
            // Only this test's own (adopted) children: a pid the kernel
            // gave to some other process since is left alone.
            if proc_stat(pid).is_some_and(|s| s[1] == me) {
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
            }
        }
    }
}

/// The `UN` lines of an `admin status` table.
fn up_normal(status: &str) -> usize {
    status.lines().filter(|l| l.starts_with("UN")).count()
}

/// The hint counters (stored, delivered, pending targets) of an `admin
/// status` answer.
fn hints(status: &str) -> (u64, u64, u64) {
    let line = status
        .lines()
        .find(|l| l.starts_with("Hints:"))
        .expect("admin status has a hints line");
    let counter = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
    };
    (
        counter("stored"),
        counter("delivered"),
        counter("pending_targets"),
    )
}

/// The `v` that `SELECT v FROM ks.kv WHERE k = k` answers through `c`.
fn read_v(cluster: &Cluster, c: &Client, k: i32) -> Result<Option<Value>, String> {
    let response = cluster
        .rt
        .block_on(c.execute("SELECT v FROM ks.kv WHERE k = ?", vec![Value::Int(k)]))
        .map_err(|e| format!("read of {k}: {e}"))?;
    let QueryResult::Rows(rows) = response.result else {
        return Err(format!("read of {k} answered {:?}", response.result));
    };
    Ok(rows.rows.first().map(|r| r.values[0].clone()))
}

#[test]
fn cluster_script_starts_kills_restarts_and_stops_real_nodes() {
    let script = ScriptCluster::new();
    // Orphans (the servers, once the script's bash exits) become this
    // process's children, and zombies when they exit until it reaps them.
    let subreaper = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(subreaper, 0, "prctl(PR_SET_CHILD_SUBREAPER)");

    // 1. start 3: three live processes, three nodes up and normal.
    let started = script.run(&["start", "3"]);
    let pids: Vec<i32> = (1..=NODES)
        .map(|i| {
            script
                .pid(i)
                .unwrap_or_else(|| panic!("no pid file for node {i}:\n{started}"))
        })
        .collect();
    for (i, pid) in pids.iter().enumerate() {
        assert!(alive(*pid), "node {} (pid {pid}) does not run", i + 1);
    }
    assert_eq!(pids.iter().collect::<BTreeSet<_>>().len(), 3, "{started}");
    script.wait_for_status("three nodes up", |s| {
        for i in 1..=NODES {
            let line = format!("node {i}: up (pid {})", pids[usize::from(i) - 1]);
            if !s.contains(&line) {
                return Err(format!("no {line:?}"));
            }
        }
        match up_normal(s) {
            3 => Ok(()),
            n => Err(format!("{n} UN")),
        }
    });

    // 2. A keyspace with three replicas, and writes at QUORUM.
    let ca_pem = std::fs::read_to_string(script.dir.path().join("certs").join("ca.pem"))
        .expect("the script made a CA");
    let cluster = Cluster {
        rt: tokio::runtime::Runtime::new().expect("tokio runtime"),
        ca_pem,
    };
    let nodes: Vec<Node> = (1..=NODES).map(|i| script.node(i)).collect();
    let client = cluster.connect(&nodes[0]);
    client.set_consistency(Consistency::Quorum);
    cluster.create_kv_rf3(&client);
    let write = |k: i32| {
        cluster
            .rt
            .block_on(client.execute(
                "INSERT INTO ks.kv (k, v) VALUES (?, ?)",
                vec![Value::Int(k), Value::Int(k * 7)],
            ))
            .unwrap_or_else(|e| panic!("QUORUM write of {k} failed: {e}"));
    };
    (0..50).for_each(write);

    // 3. kill 2: its process ends, the others see it down, and QUORUM
    // writes through node 1 go on.
    script.run(&["kill", "2"]);
    wait_for("node 2's process ends", Duration::from_secs(10), || {
        if alive(pids[1]) {
            Err(format!("pid {} still runs", pids[1]))
        } else {
            Ok(())
        }
    });
    assert!(script.pid(2).is_none(), "kill left node 2's pid file");
    (50..100).for_each(write);
    let node2_peer = nodes[1].peer.to_string();
    script.wait_for_status("node 2 down", |s| {
        if !s.contains("node 2: down") {
            return Err("the script thinks node 2 runs".into());
        }
        let line = s.lines().find(|l| l.contains(&node2_peer));
        match line {
            Some(l) if l.starts_with("DN") && up_normal(s) == 2 => Ok(()),
            _ => Err(format!("node 2 ({node2_peer}) is not DN beside two UN")),
        }
    });
    (100..150).for_each(write);

    // 4. restart 2: up again; once node 1 and node 3 have replayed their
    // hints, node 2 alone holds every row.
    script.run(&["restart", "2"]);
    let pid2 = script.pid(2).expect("restart wrote node 2's pid file");
    assert!(alive(pid2), "restarted node 2 (pid {pid2}) does not run");
    script.wait_for_status("three nodes up again", |s| match up_normal(s) {
        3 => Ok(()),
        n => Err(format!("{n} UN")),
    });
    wait_for("hints for node 2 replayed", Duration::from_secs(30), || {
        let mut delivered = 0;
        for node in [&nodes[0], &nodes[2]] {
            let (stored, done, pending) = hints(&cluster.status(node));
            if pending != 0 || done < stored {
                return Err(format!(
                    "{}: stored={stored} delivered={done} pending_targets={pending}",
                    node.client
                ));
            }
            delivered += done;
        }
        if delivered == 0 {
            return Err("no hint delivered yet".into());
        }
        Ok(())
    });
    cluster.rt.block_on(client.close());
    // Node 1 goes by the script; node 3 dies of a signal the script never
    // sent: `status` must see that it does not run any more.
    script.run(&["kill", "1"]);
    let pid3 = pids[2];
    assert_eq!(
        unsafe { libc::kill(pid3, libc::SIGKILL) },
        0,
        "SIGKILL node 3"
    );
    wait_for("nodes 1 and 3 end", Duration::from_secs(10), || {
        match [pids[0], pid3].into_iter().find(|p| alive(*p)) {
            Some(p) => Err(format!("pid {p} still runs")),
            None => Ok(()),
        }
    });
    script.wait_for_status("the script sees node 3 gone", |s| {
        for line in ["node 1: down", "node 2: up", "node 3: down"] {
            if !s.contains(line) {
                return Err(format!("no {line:?}"));
            }
        }
        Ok(())
    });
    let alone = cluster.connect(&nodes[1]);
    alone.set_consistency(Consistency::One);
    for k in 0..150 {
        // Retried while node 2 still sends reads to the dead nodes; a
        // wrong or missing row fails at once.
        let v = wait_for(
            &format!("read of {k} from node 2"),
            Duration::from_secs(20),
            || read_v(&cluster, &alone, k),
        );
        assert_eq!(
            v,
            Some(Value::Int(k * 7)),
            "node 2 alone lacks row {k} (log {})",
            script.log(2).display()
        );
    }
    cluster.rt.block_on(alone.close());

    // Both come back through the script: a crashed node restarts too.
    script.run(&["restart", "1"]);
    let restarted = script.run(&["restart", "3"]);
    assert!(!restarted.contains("already runs"), "{restarted}");
    let final_pids: Vec<i32> = (1..=NODES)
        .map(|i| script.pid(i).expect("every node has a pid file"))
        .collect();
    assert!(final_pids.iter().all(|p| alive(*p)), "{final_pids:?}");
    script.wait_for_status("three nodes up after the restarts", |s| {
        match up_normal(s) {
            3 => Ok(()),
            n => Err(format!("{n} UN")),
        }
    });
    // Every replica is up and held every write: repair through the script
    // compares all of node 1's ranges and finds the table's replicas equal.
    let repaired = script.run(&["repair", "1", "ks"]);
    assert!(repaired.contains("repaired 1 table(s)"), "{repaired}");
    // Three nodes at RF 3: node 1 replicates everything, so cleanup keeps
    // it all.
    let cleaned = script.run(&["cleanup", "1", "ks"]);
    assert!(cleaned.contains("dropped 0 partition(s)"), "{cleaned}");

    // Node 3 dies for good: node 1 removes it through the script (which
    // finds its host id in the status), it shows as removed, and started
    // again with its old data it exits by itself.
    script.run(&["kill", "3"]);
    let node3_peer = nodes[2].peer.to_string();
    script.wait_for_status("node 3 down", |s| {
        match s.lines().find(|l| l.contains(&node3_peer)) {
            Some(l) if l.starts_with("DN") => Ok(()),
            _ => Err(format!("node 3 ({node3_peer}) is not DN")),
        }
    });
    let removed = script.run(&["removenode", "1", "3"]);
    assert!(removed.contains("removed node"), "{removed}");
    script.wait_for_status("node 3 removed", |s| {
        match s.lines().find(|l| l.contains(&node3_peer)) {
            Some(l) if l.starts_with("DR") && up_normal(s) == 2 => Ok(()),
            _ => Err(format!("node 3 ({node3_peer}) is not DR beside two UN")),
        }
    });
    script.run(&["restart", "3"]);
    let pid3 = script.pid(3).expect("restart wrote node 3's pid file");
    wait_for("the removed node 3 exits", Duration::from_secs(30), || {
        if alive(pid3) {
            Err(format!("pid {pid3} still runs"))
        } else {
            Ok(())
        }
    });
    let log3 = std::fs::read_to_string(script.log(3)).unwrap_or_default();
    assert!(log3.contains("was removed from the cluster"), "{log3}");

    // 5. stop: every process ends and `status` says none runs.
    let began = Instant::now();
    script.run(&["stop"]);
    let took = began.elapsed();
    wait_for(
        "every node stops",
        Duration::from_secs(10),
        || match final_pids.iter().find(|p| alive(**p)) {
            Some(p) => Err(format!("pid {p} still runs")),
            None => Ok(()),
        },
    );
    assert!(
        took < Duration::from_secs(15),
        "stop took {took:?} for three nodes"
    );
    let status = script.run(&["status"]);
    for i in 1..=NODES {
        assert!(
            status.contains(&format!("node {i}: down")),
            "after stop:\n{status}"
        );
        assert!(script.pid(i).is_none(), "stop left node {i}'s pid file");
    }
    assert!(!status.contains(": up"), "after stop:\n{status}");
}
