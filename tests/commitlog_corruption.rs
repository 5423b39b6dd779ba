//! Commit-log recovery through the public API: damage spread over several
//! segments, and `kill -9` of a process in the middle of appending.

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringdb::storage::commitlog::{segment_file_name, CommitLog, CommitLogOptions, SegmentId};
use ringdb::storage::framing;
use ringdb::storage::StorageError;

fn record(i: usize) -> Vec<u8> {
    format!("record-{i:05}-{}", "p".repeat(i % 40)).into_bytes()
}

#[test]
fn damage_in_several_segments_loses_only_damaged_records() {
    let dir = tempfile::tempdir().unwrap();
    let opts = CommitLogOptions {
        segment_size: 2048,
        ..CommitLogOptions::default()
    };
    let (log, _) = CommitLog::open(dir.path(), SegmentId(0), opts.clone()).unwrap();
    let mut placed = Vec::new(); // (segment, offset, index)
    let mut offset_in = std::collections::HashMap::new();
    for i in 0..300 {
        let seg = log.active_segment();
        let off = offset_in.entry(seg).or_insert(0u64);
        placed.push((seg, *off, i));
        *off += framing::encoded_len(record(i).len()) as u64;
        log.append(&record(i)).unwrap();
    }
    let last = log.active_segment();
    drop(log);
    assert!(last.0 >= 4, "expected several segments");

    // Flip a byte inside record 40's payload (an early segment) and cut the
    // last record of the last segment in half.
    let (seg_a, off_a, _) = placed[40];
    let path_a = dir.path().join(segment_file_name(seg_a));
    let mut data = fs::read(&path_a).unwrap();
    data[off_a as usize + framing::HEADER_LEN + 3] ^= 0x01;
    fs::write(&path_a, &data).unwrap();
    let (seg_b, off_b, _) = placed[299];
    assert_eq!(seg_b, last);
    let path_b = dir.path().join(segment_file_name(seg_b));
    let f = fs::OpenOptions::new().write(true).open(&path_b).unwrap();
    f.set_len(off_b + 5).unwrap();
    drop(f);

    let (log, replay) = CommitLog::open(dir.path(), SegmentId(0), opts.clone()).unwrap();
    let want: Vec<Vec<u8>> = (0..299).filter(|&i| i != 40).map(record).collect();
    let got: Vec<Vec<u8>> = replay.records.iter().map(|(_, r)| r.clone()).collect();
    assert_eq!(got, want);
    let found: Vec<(std::path::PathBuf, u64, bool)> = replay
        .problems
        .iter()
        .map(|p| match p {
            StorageError::Corrupt {
                path,
                offset,
                reason,
            } => (path.clone(), *offset, reason.contains("torn tail")),
            other => panic!("unexpected problem {other:?}"),
        })
        .collect();
    assert_eq!(
        found,
        vec![
            (path_a.clone(), off_a, false),
            (path_b.clone(), off_b, true)
        ]
    );
    log.append(b"after").unwrap();
    drop(log);

    // The torn tail was truncated away; the mid-file damage is still there
    // (and still reported) until its segment is released.
    let (log, replay) = CommitLog::open(dir.path(), SegmentId(0), opts.clone()).unwrap();
    assert_eq!(replay.problems.len(), 1);
    assert_eq!(replay.records.last().unwrap().1, b"after".to_vec());
    assert_eq!(replay.records.len(), 299);
    log.release_before(SegmentId(seg_a.0 + 1)).unwrap();
    drop(log);
    let (_log, replay) = CommitLog::open(dir.path(), SegmentId(seg_a.0 + 1), opts).unwrap();
    assert!(replay.problems.is_empty());
    assert!(replay.records.iter().all(|(s, _)| s.0 > seg_a.0));
}

fn kill9_run(periodic: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringdb"));
    cmd.args([
        "crash-writer",
        "--target",
        "commitlog",
        "--threads",
        "8",
        "--dir",
    ])
    .arg(dir.path())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if periodic {
        cmd.args(["--periodic-ms", "50"]);
    }
    let mut child = cmd.spawn().unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut acked = Vec::new();
    let start = Instant::now();
    let mut line = String::new();
    while acked.len() < 3000 && start.elapsed() < Duration::from_secs(20) {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(rec) = line.strip_prefix("ACK ").and_then(|l| l.strip_suffix('\n')) {
            acked.push(rec.to_string());
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Acks printed after our last read are fine to ignore; each one we saw
    // was printed after its append returned.
    assert!(
        acked.len() >= 100,
        "child acknowledged only {}",
        acked.len()
    );

    let (_log, replay) =
        CommitLog::open(dir.path(), SegmentId(0), CommitLogOptions::default()).unwrap();
    let stored: HashSet<String> = replay
        .records
        .iter()
        .map(|(_, r)| String::from_utf8(r.clone()).unwrap())
        .collect();
    for rec in &acked {
        assert!(stored.contains(rec), "acknowledged {rec} lost");
    }
    // Every damage found can only be a torn tail of the last segment.
    for p in &replay.problems {
        assert!(p.to_string().contains("torn tail"), "{p}");
    }
}

#[test]
fn kill9_loses_no_acknowledged_append() {
    kill9_run(false);
}

#[test]
fn kill9_loses_no_acknowledged_append_periodic() {
    kill9_run(true);
}
