//! Crash recovery with real processes: a child process writes in `batch`
//! mode and reports every acknowledged write; the parent kills it with
//! SIGKILL at a random moment, reopens the data directory and checks that
//! every acknowledged write is there. Twenty rounds on one directory, so
//! later rounds also recover from earlier crashes' leftovers (torn log
//! tails, unfinished flushes and compactions).

use cql_lite::Value;
use rand::RngExt;
use ringdb::model::{CellValue, Entry};
use ringdb::storage::engine::{Engine, EngineOptions};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../src/cli/crash_writer.rs"]
#[allow(dead_code)]
mod crash_writer;

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rng();
    let mut acked: Vec<(i64, i64, u64)> = Vec::new();
    let rounds = 20;
    for round in 0..rounds {
        let start = round as u64 * 1_000_000;
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringdb"))
            .args(["crash-writer", "--dir"])
            .arg(dir.path())
            .args(["--start", &start.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn crash writer");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let parts: Vec<&str> = line.split_whitespace().collect();
                if let ["ack", p, r, v] = parts[..] {
                    let _ = tx.send((
                        p.parse::<i64>().unwrap(),
                        r.parse::<i64>().unwrap(),
                        v.parse::<u64>().unwrap(),
                    ));
                }
            }
        });
        // Let it get going (at least one ack), then kill it at a random moment.
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("writer acknowledges writes");
        acked.push(first);
        let deadline = Instant::now() + Duration::from_millis(rng.random_range(20..400));
        while Instant::now() < deadline {
            if let Ok(a) = rx.recv_timeout(Duration::from_millis(5)) {
                acked.push(a);
            }
        }
        child.kill().expect("SIGKILL the writer");
        child.wait().unwrap();
        reader.join().unwrap();
        acked.extend(rx.try_iter());

        let engine = Engine::open(
            dir.path(),
            EngineOptions {
                background: false,
                ..EngineOptions::default()
            },
        )
        .expect("reopen after SIGKILL");
        let mut missing = Vec::new();
        for &(p, r, v) in &acked {
            let found = match engine.get(&crash_writer::crash_key(p, r)).unwrap() {
                Some(Entry::Row(state)) => {
                    state
                        .resolve(None, 0)
                        .and_then(|row| match row.cells.get("v") {
                            Some(cell) => match &cell.value {
                                CellValue::Live(Value::BigInt(x)) => Some(*x as u64),
                                _ => None,
                            },
                            None => None,
                        })
                }
                _ => None,
            };
            if found != Some(v) {
                missing.push((p, r, v, found));
            }
        }
        assert!(
            missing.is_empty(),
            "round {round}: {} acknowledged writes lost, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        drop(engine);
    }
    assert!(
        acked.len() > rounds,
        "the writers made progress: {} acks",
        acked.len()
    );
}
