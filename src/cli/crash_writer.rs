//! `ringdb crash-writer`: the child process of the crash-recovery test.
//!
//! It stamps writes into an engine in `batch` mode from several threads and
//! prints `ack <partition> <row> <value>` after each write is acknowledged,
//! until the parent kills it with SIGKILL.

use anyhow::Context;
use cql_lite::{DataType, Value};
use ringdb::model::key::{self, ClusteringOrder};
use ringdb::model::{CellValue, NodeId, RowWrite, Timestamp};
use ringdb::storage::commitlog::{CommitLog, CommitLogOptions, SegmentId, SyncMode};
use ringdb::storage::engine::{Engine, EngineOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// What the crash writer writes to.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashTarget {
    /// Stamped row writes through the whole engine; prints `ack <partition> <row> <value>`.
    Engine,
    /// Raw records appended to a commit log alone; prints `ACK t<thread>-<n>`.
    Commitlog,
}

/// Arguments of `ringdb crash-writer`.
#[derive(clap::Args, Debug)]
pub struct CrashWriterArgs {
    /// What to write to.
    #[arg(long, value_enum, default_value_t = CrashTarget::Engine)]
    pub target: CrashTarget,
    /// Use `periodic` fsync every this many milliseconds instead of `batch`.
    #[arg(long)]
    pub periodic_ms: Option<u64>,
    /// Data directory of the engine.
    #[arg(long)]
    pub dir: PathBuf,
    /// Writer threads.
    #[arg(long, default_value_t = 4)]
    pub threads: u64,
    /// First value to write (so each round writes new values).
    #[arg(long, default_value_t = 0)]
    pub start: u64,
    /// Memtable size in bytes (small, so flushes and compactions run while
    /// the process is killed).
    #[arg(long, default_value_t = 32 * 1024)]
    pub memtable_bytes: usize,
}

/// The key of row `row` in partition `partition` (shared with the test).
pub fn crash_key(partition: i64, row: i64) -> Vec<u8> {
    let spk = key::serialize_partition_key(&[Value::BigInt(partition)], &[DataType::BigInt])
        .unwrap_or_default();
    let clustering = key::encode_clustering(
        &[Value::BigInt(row)],
        &[DataType::BigInt],
        &[ClusteringOrder::Asc],
    )
    .unwrap_or_default();
    key::row_key(&key::partition_prefix(&spk), &clustering)
}

/// Runs the writer until killed.
pub fn run(args: CrashWriterArgs) -> anyhow::Result<()> {
    let sync_mode = match args.periodic_ms {
        Some(ms) => SyncMode::Periodic {
            interval: std::time::Duration::from_millis(ms),
        },
        None => SyncMode::Batch,
    };
    if args.target == CrashTarget::Commitlog {
        return run_commitlog(&args, sync_mode);
    }
    let opts = EngineOptions {
        sync_mode,
        memtable_bytes: args.memtable_bytes,
        segment_size: 256 * 1024,
        ..EngineOptions::default()
    };
    let engine = Arc::new(
        Engine::open(&args.dir, opts).with_context(|| format!("opening {}", args.dir.display()))?,
    );
    let stdout = Arc::new(parking_lot::Mutex::new(std::io::stdout()));
    let mut handles = Vec::new();
    for t in 0..args.threads {
        let engine = engine.clone();
        let stdout = stdout.clone();
        let threads = args.threads;
        let start = args.start;
        handles.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let mut i = 0u64;
            loop {
                let value = start + i * threads + t;
                i += 1;
                let partition = (value % 16) as i64;
                let row = (value / 16) as i64;
                let write = RowWrite {
                    ts: Timestamp(value + 1),
                    insert_marker: Some(None),
                    delete_row: false,
                    cells: vec![(
                        "v".into(),
                        CellValue::Live(Value::BigInt(value as i64)),
                        None,
                    )],
                };
                engine.update_row(&crash_key(partition, row), |cur| {
                    cur.stamp(NodeId(7), None, &write)
                })?;
                let mut out = stdout.lock();
                writeln!(out, "ack {partition} {row} {value}")?;
                out.flush()?;
            }
        }));
    }
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
    }
    Ok(())
}

fn run_commitlog(args: &CrashWriterArgs, sync_mode: SyncMode) -> anyhow::Result<()> {
    let opts = CommitLogOptions {
        sync_mode,
        segment_size: 64 << 10,
    };
    let (log, _) = CommitLog::open(&args.dir, SegmentId(0), opts)
        .with_context(|| format!("opening {}", args.dir.display()))?;
    std::thread::scope(|s| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for t in 0..args.threads {
            let log = &log;
            handles.push(s.spawn(move || -> anyhow::Result<()> {
                for i in 0.. {
                    let rec = format!("t{t}-{i}");
                    log.append(rec.as_bytes())?;
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {rec}")?;
                    out.flush()?;
                }
                Ok(())
            }));
        }
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
        }
        Ok(())
    })
}
