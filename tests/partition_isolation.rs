//! A write of several rows of one partition is isolated on a replica: a
//! reader of the partition, a scan over it, or a CQL SELECT sees every row
//! of the write or none of them, while flushes move memtables to SSTables
//! underneath.
//!
//! Every write of a partition writes all of its rows with one "batch
//! number" (and a timestamp growing with it where this test picks
//! timestamps). The value a row reads as is the one of the newest write
//! applied to it, so as long as a reader sees each write whole or not at
//! all, every row of a partition reads the same number. Loops are bounded
//! by counts: writers write a fixed number of batches, readers read until
//! the writers are done or a cap is reached.

use cql_lite::{DataType, Value};
use ringdb::model::key;
use ringdb::model::{
    CellValue, Entry, HybridClock, NodeId, ResolvedRow, RowState, RowWrite, SystemClock, Timestamp,
};
use ringdb::query::api::{QueryExecutor, QueryOptions, QueryResult, SessionState};
use ringdb::query::{Executor, ExecutorConfig, LocalStore};
use ringdb::schema::SchemaStore;
use ringdb::storage::commitlog::SyncMode;
use ringdb::storage::engine::{Engine, EngineOptions, PartitionUpdate, RowStamp};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const NODE: NodeId = NodeId(7);
/// Rows per partition: every write writes all of them.
const ROWS: i32 = 24;
/// Multi-row writes per writer thread.
const BATCHES: u64 = 300;
/// Most reads (or scans) per reader thread.
const MAX_READS: usize = 20_000;
/// Most explicit flushes.
const MAX_FLUSHES: usize = 200;

fn prefix(p: i32) -> Vec<u8> {
    let pk = key::serialize_partition_key(&[Value::Int(p)], &[DataType::Int]).unwrap();
    key::partition_prefix(&pk)
}

fn clustering(c: i32) -> Vec<u8> {
    key::encode_clustering(
        &[Value::Int(c)],
        &[DataType::Int],
        &[key::ClusteringOrder::Asc],
    )
    .unwrap()
}

fn write_of(n: u64) -> RowWrite {
    RowWrite {
        ts: Timestamp(1_000_000 + n),
        insert_marker: Some(None),
        delete_row: false,
        cells: vec![("v".into(), CellValue::Live(Value::BigInt(n as i64)), None)],
    }
}

fn options() -> EngineOptions {
    EngineOptions {
        sync_mode: SyncMode::Periodic {
            interval: Duration::from_millis(200),
        },
        // Small memtables: background switches and flushes as well as the
        // explicit ones.
        memtable_bytes: 256 << 10,
        block_cache_bytes: 1 << 20,
        ..EngineOptions::default()
    }
}

/// Writes batch `n` to every row of partition `p` through the replica's
/// stamping path (one commit-log record, row locks).
fn stamp_partition(engine: &Engine, p: i32, n: u64) {
    let pre = prefix(p);
    let updates: Vec<PartitionUpdate<'_>> = (0..ROWS)
        .map(|c| {
            let stamp: RowStamp<'_> =
                Box::new(move |cur: &RowState| cur.stamp(NODE, None, &write_of(n)));
            PartitionUpdate::Row(key::row_key(&pre, &clustering(c)), stamp)
        })
        .collect();
    let (_, ticket) = engine.update_partition_unsynced(&pre, updates).unwrap();
    engine.wait_synced(ticket.unwrap()).unwrap();
}

/// The batch number a resolved row holds.
fn number(row: &ResolvedRow) -> i64 {
    match row.cells.get("v").map(|c| &c.value) {
        Some(CellValue::Live(Value::BigInt(n))) => *n,
        other => panic!("row without a number: {other:?}"),
    }
}

/// Checks one partition's numbers (in clustering order): every row there,
/// every row the same.
fn check_uniform(what: &str, numbers: &[i64]) {
    assert_eq!(numbers.len(), ROWS as usize, "{what}: rows missing");
    assert!(
        numbers.iter().all(|n| *n == numbers[0]),
        "{what}: a partial write is visible: {numbers:?}"
    );
}

/// Runs `writers` (each to completion) alongside `readers` (each called
/// with its read index until the writers are done or `MAX_READS` reads)
/// and a flusher. Returns how many reads overlapped the writers.
fn race(
    engine: &Arc<Engine>,
    writers: Vec<Box<dyn FnOnce() + Send>>,
    readers: Vec<Box<dyn Fn(usize) + Send>>,
) -> usize {
    let active = Arc::new(AtomicUsize::new(writers.len()));
    let overlapped = Arc::new(AtomicUsize::new(0));
    std::thread::scope(|s| {
        for w in writers {
            let active = active.clone();
            s.spawn(move || {
                w();
                active.fetch_sub(1, Ordering::SeqCst);
            });
        }
        for r in readers {
            let (active, overlapped) = (active.clone(), overlapped.clone());
            s.spawn(move || {
                for i in 0..MAX_READS {
                    if active.load(Ordering::SeqCst) == 0 {
                        break;
                    }
                    r(i);
                    overlapped.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let (active, engine) = (active.clone(), engine.clone());
        s.spawn(move || {
            for _ in 0..MAX_FLUSHES {
                if active.load(Ordering::SeqCst) == 0 {
                    break;
                }
                engine.flush().unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
        });
    });
    overlapped.load(Ordering::Relaxed)
}

#[test]
fn point_reads_never_see_part_of_a_partition_write() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(dir.path(), options()).unwrap());
    stamp_partition(&engine, 1, 0);
    let next = Arc::new(AtomicU64::new(1));
    let writers: Vec<Box<dyn FnOnce() + Send>> = (0..2)
        .map(|_| {
            let (engine, next) = (engine.clone(), next.clone());
            Box::new(move || {
                for _ in 0..BATCHES {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    stamp_partition(&engine, 1, n);
                }
            }) as Box<dyn FnOnce() + Send>
        })
        .collect();
    let pre = prefix(1);
    let readers: Vec<Box<dyn Fn(usize) + Send>> = (0..2)
        .map(|_| {
            let (engine, pre) = (engine.clone(), pre.clone());
            Box::new(move |i: usize| {
                let reverse = i % 2 == 1;
                let mut numbers: Vec<i64> = if i % 4 < 2 {
                    engine
                        .read_partition(&pre, Bound::Unbounded, Bound::Unbounded, reverse, None)
                        .unwrap()
                        .rows
                        .iter()
                        .map(|r| number(&r.row))
                        .collect()
                } else {
                    engine
                        .read_partition_states(
                            &pre,
                            Bound::Unbounded,
                            Bound::Unbounded,
                            reverse,
                            None,
                        )
                        .unwrap()
                        .rows
                        .iter()
                        .map(|r| number(&r.state.resolve(None, 0).unwrap()))
                        .collect()
                };
                if reverse {
                    numbers.reverse();
                }
                check_uniform("partition read", &numbers);
            }) as Box<dyn Fn(usize) + Send>
        })
        .collect();
    let overlapped = race(&engine, writers, readers);
    assert!(overlapped > 0, "no read ran alongside the writers");
    let last = engine
        .read_partition(&pre, Bound::Unbounded, Bound::Unbounded, false, None)
        .unwrap();
    let numbers: Vec<i64> = last.rows.iter().map(|r| number(&r.row)).collect();
    check_uniform("final read", &numbers);
    assert_eq!(numbers[0], 2 * BATCHES as i64);
}

/// Partitions the scans see.
const PARTS: i32 = 4;

/// Groups a scan's entries by partition and checks each.
fn check_scan(items: impl Iterator<Item = (Vec<u8>, Entry)>, reverse: bool) {
    let mut parts: BTreeMap<Vec<u8>, Vec<i64>> = BTreeMap::new();
    for (k, entry) in items {
        let plen = key::classify(&k).unwrap().partition_len();
        let Entry::Row(state) = entry else {
            continue;
        };
        let row = state.resolve(None, 0).unwrap();
        parts
            .entry(k[..plen].to_vec())
            .or_default()
            .push(number(&row));
    }
    assert_eq!(
        parts.len(),
        PARTS as usize,
        "partitions missing from a scan"
    );
    for numbers in parts.values_mut() {
        if reverse {
            numbers.reverse();
        }
        check_uniform("scan", numbers);
    }
}

#[test]
fn scans_never_see_part_of_a_partition_write() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(dir.path(), options()).unwrap());
    for p in 0..PARTS {
        stamp_partition(&engine, p, 0);
    }
    let next = Arc::new(AtomicU64::new(1));
    let mut writers: Vec<Box<dyn FnOnce() + Send>> = Vec::new();
    // A replica stamping writes of one partition.
    {
        let (engine, next) = (engine.clone(), next.clone());
        writers.push(Box::new(move || {
            for _ in 0..BATCHES {
                let n = next.fetch_add(1, Ordering::SeqCst);
                stamp_partition(&engine, (n % PARTS as u64) as i32, n);
            }
        }));
    }
    // A replica applying stamped deltas of two partitions in one write (a
    // write from another replica, a hint, a repair), stamped by a node of
    // its own from what it wrote before.
    {
        let (engine, next) = (engine.clone(), next.clone());
        writers.push(Box::new(move || {
            let other = NodeId(100);
            let mut states: BTreeMap<Vec<u8>, RowState> = BTreeMap::new();
            for _ in 0..BATCHES {
                let n = next.fetch_add(1, Ordering::SeqCst);
                let mut deltas = Vec::new();
                for p in [n % PARTS as u64, (n + 1) % PARTS as u64] {
                    let pre = prefix(p as i32);
                    for c in 0..ROWS {
                        let k = key::row_key(&pre, &clustering(c));
                        let state = states.entry(k.clone()).or_default();
                        let delta = state.stamp(other, None, &write_of(n));
                        *state = state.join(&delta);
                        deltas.push((k, Entry::Row(delta)));
                    }
                }
                engine.write_batch(&deltas).unwrap();
            }
        }));
    }
    let readers: Vec<Box<dyn Fn(usize) + Send>> = (0..2)
        .map(|_| {
            let engine = engine.clone();
            Box::new(move |i: usize| match i % 3 {
                0 => check_scan(engine.scan_tokens(0, u64::MAX).map(|r| r.unwrap()), false),
                1 => check_scan(
                    engine
                        .scan(Bound::Unbounded, Bound::Unbounded, true)
                        .map(|r| r.unwrap()),
                    true,
                ),
                _ => check_scan(
                    engine
                        .scan(Bound::Unbounded, Bound::Unbounded, false)
                        .map(|r| r.unwrap()),
                    false,
                ),
            }) as Box<dyn Fn(usize) + Send>
        })
        .collect();
    let overlapped = race(&engine, writers, readers);
    assert!(overlapped > 0, "no scan ran alongside the writers");
    check_scan(engine.scan_tokens(0, u64::MAX).map(|r| r.unwrap()), false);
}

/// A single node: executor over a local store.
struct Node {
    store: Arc<LocalStore>,
    exec: Arc<Executor>,
    _dir: tempfile::TempDir,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn run(rt: &tokio::runtime::Runtime, exec: &Executor, text: &str) -> QueryResult {
    let mut session = SessionState::default();
    match rt.block_on(exec.execute(&mut session, text, vec![], QueryOptions::default())) {
        Ok(r) => r.result,
        Err(e) => panic!("{text}: {e}"),
    }
}

/// (p, c, v) of every row of a SELECT p, c, v.
fn select(rt: &tokio::runtime::Runtime, exec: &Executor, text: &str) -> Vec<(i32, i32, i64)> {
    let QueryResult::Rows(rs) = run(rt, exec, text) else {
        panic!("{text}: not rows");
    };
    assert!(rs.paging_state.is_none(), "{text}: more than one page");
    rs.rows
        .iter()
        .map(|r| match &r.values[..] {
            [Value::Int(p), Value::Int(c), Value::BigInt(v)] => (*p, *c, *v),
            other => panic!("{text}: unexpected row {other:?}"),
        })
        .collect()
}

fn check_rows(what: &str, rows: &[(i32, i32, i64)], partitions: usize) {
    let mut parts: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (p, _, v) in rows {
        parts.entry(*p).or_default().push(*v);
    }
    assert_eq!(parts.len(), partitions, "{what}: partitions missing");
    for numbers in parts.values() {
        check_uniform(what, numbers);
    }
}

fn batch(p: i32, n: u64) -> String {
    let mut text = String::from("BEGIN BATCH\n");
    for c in 0..ROWS {
        text.push_str(&format!(
            "INSERT INTO ks.t (p, c, v) VALUES ({p}, {c}, {n});\n"
        ));
    }
    text.push_str("APPLY BATCH");
    text
}

#[test]
fn cql_batches_to_one_partition_are_never_seen_in_part() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(HybridClock::new(Arc::new(SystemClock)));
    let schema = Arc::new(SchemaStore::open(&dir.path().join("schema")).unwrap());
    let store = Arc::new(
        LocalStore::open(
            &dir.path().join("data"),
            clock.clone(),
            schema.clone(),
            options(),
        )
        .unwrap(),
    );
    let exec = Arc::new(Executor::new(
        store.clone(),
        schema,
        clock,
        ExecutorConfig::default(),
    ));
    let node = Node {
        store,
        exec,
        _dir: dir,
    };
    let rt = runtime();
    run(
        &rt,
        &node.exec,
        "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
    );
    run(
        &rt,
        &node.exec,
        "CREATE TABLE ks.t (p int, c int, v bigint, PRIMARY KEY (p, c))",
    );
    for p in [1, 2] {
        run(&rt, &node.exec, &batch(p, 0));
    }
    let next = Arc::new(AtomicU64::new(1));
    let active = Arc::new(AtomicUsize::new(2));
    let overlapped = Arc::new(AtomicUsize::new(0));
    std::thread::scope(|s| {
        for _ in 0..2 {
            let (exec, next, active) = (node.exec.clone(), next.clone(), active.clone());
            s.spawn(move || {
                let rt = runtime();
                for _ in 0..BATCHES {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    run(&rt, &exec, &batch(1 + (n % 2) as i32, n));
                }
                active.fetch_sub(1, Ordering::SeqCst);
            });
        }
        for scan in [false, true] {
            let (exec, active, overlapped) =
                (node.exec.clone(), active.clone(), overlapped.clone());
            s.spawn(move || {
                let rt = runtime();
                for i in 0..MAX_READS {
                    if active.load(Ordering::SeqCst) == 0 {
                        break;
                    }
                    if scan {
                        let rows = select(&rt, &exec, "SELECT p, c, v FROM ks.t");
                        check_rows("SELECT of the table", &rows, 2);
                    } else {
                        let p = 1 + (i % 2) as i32;
                        let rows = select(
                            &rt,
                            &exec,
                            &format!("SELECT p, c, v FROM ks.t WHERE p = {p}"),
                        );
                        check_rows("SELECT of a partition", &rows, 1);
                    }
                    overlapped.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let (store, active) = (node.store.clone(), active.clone());
        s.spawn(move || {
            for _ in 0..MAX_FLUSHES {
                if active.load(Ordering::SeqCst) == 0 {
                    break;
                }
                store.flush_all().unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
        });
    });
    assert!(overlapped.load(Ordering::Relaxed) > 0);
    let rows = select(&rt, &node.exec, "SELECT p, c, v FROM ks.t");
    check_rows("final SELECT", &rows, 2);
}
