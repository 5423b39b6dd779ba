//! The storage engine's row cache under concurrency: reads served from it
//! never go back in time while writers, flushes and compactions run, and a
//! writer always reads its own write. (The model test in
//! `storage_model.rs` checks single-threaded reads through the cache
//! against a model; this one looks for races between fills and writes.)

use cql_lite::{DataType, Value};
use ringdb::model::key::{self, ClusteringOrder};
use ringdb::model::{CellValue, NodeId, RowWrite, Timestamp};
use ringdb::storage::compaction::CompactionStrategy;
use ringdb::storage::engine::{Engine, EngineOptions};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const WRITES: i64 = 3000;
const PARTITIONS: i64 = 4;

fn prefix(pk: i64) -> Vec<u8> {
    let spk = key::serialize_partition_key(&[Value::BigInt(pk)], &[DataType::BigInt]).unwrap();
    key::partition_prefix(&spk)
}

fn clustering(ck: i32) -> Vec<u8> {
    key::encode_clustering(&[Value::Int(ck)], &[DataType::Int], &[ClusteringOrder::Asc]).unwrap()
}

/// The value of column `a` in row 0 of partition `pk` (0 when absent), as
/// a replica's whole-partition read gives it.
fn read_a(engine: &Engine, pk: i64) -> i64 {
    let slice = engine
        .read_partition_states(&prefix(pk), Bound::Unbounded, Bound::Unbounded, false, None)
        .unwrap();
    let row = slice.rows.iter().find(|r| r.clustering == clustering(0));
    match row.and_then(|r| r.state.resolve(slice.header.shadow_for(&r.clustering), 0)) {
        Some(resolved) => match resolved.cells.get("a").map(|c| &c.value) {
            Some(CellValue::Live(Value::BigInt(v))) => *v,
            other => panic!("unexpected cell {other:?}"),
        },
        None => 0,
    }
}

#[test]
fn cached_reads_never_go_back_in_time_and_writers_read_their_writes() {
    let dir = tempfile::tempdir().unwrap();
    let opts = EngineOptions {
        // Small memtables: flushes and compactions run all along.
        memtable_bytes: 16 << 10,
        compaction: CompactionStrategy::SizeTiered {
            min_threshold: 2,
            max_threshold: 4,
        },
        row_cache_bytes: 1 << 20,
        ..EngineOptions::default()
    };
    let engine = Arc::new(Engine::open(dir.path(), opts).unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for pk in 0..PARTITIONS {
        let engine = engine.clone();
        threads.push(std::thread::spawn(move || {
            let row = key::row_key(&prefix(pk), &clustering(0));
            // A second row, so the partition is more than the row read.
            let other = key::row_key(&prefix(pk), &clustering(1));
            for i in 1..=WRITES {
                for (k, v) in [(&row, i), (&other, -i)] {
                    let write = RowWrite {
                        ts: Timestamp(i as u64 + 1),
                        insert_marker: Some(None),
                        delete_row: false,
                        cells: vec![("a".into(), CellValue::Live(Value::BigInt(v)), None)],
                    };
                    engine
                        .update_row(k, |cur| cur.stamp(NodeId(1), None, &write))
                        .unwrap();
                }
                assert_eq!(read_a(&engine, pk), i, "partition {pk}: own write {i}");
            }
        }));
    }
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let engine = engine.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut seen = [0i64; PARTITIONS as usize];
                let mut reads = 0u64;
                while !done.load(Ordering::Relaxed) {
                    for pk in 0..PARTITIONS {
                        let a = read_a(&engine, pk);
                        assert!(
                            a >= seen[pk as usize],
                            "reader {r}: partition {pk} went back from {} to {a}",
                            seen[pk as usize]
                        );
                        seen[pk as usize] = a;
                        reads += 1;
                    }
                }
                reads
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(reads > 0);
    for pk in 0..PARTITIONS {
        assert_eq!(read_a(&engine, pk), WRITES);
    }
    let stats = engine.stats();
    assert!(stats.compactions > 0, "no compaction ran: {stats:?}");
    // Once the writers are done the partitions stay cached.
    let before = engine.stats().row_cache.hits;
    for pk in 0..PARTITIONS {
        read_a(&engine, pk);
    }
    assert_eq!(engine.stats().row_cache.hits, before + PARTITIONS as u64);
}
