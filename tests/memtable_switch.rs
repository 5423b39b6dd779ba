//! Memtable switches under concurrent writers: every acknowledged write
//! survives a reopen when switches (and so commit-log rolls) race the
//! writers, and writers that find the memtable full together switch it
//! once, not once each (the second and third used to switch the fresh,
//! nearly empty memtable again, each an exclusive stall of its own).

use cql_lite::Value;
use ringdb::model::{CellValue, Entry, NodeId, RowWrite, Timestamp};
use ringdb::storage::engine::{Engine, EngineOptions};

#[path = "../src/cli/crash_writer.rs"]
#[allow(dead_code)]
mod crash_writer;

fn write(engine: &Engine, value: u64) {
    let w = RowWrite {
        ts: Timestamp(value + 1),
        insert_marker: Some(None),
        delete_row: false,
        cells: vec![(
            "v".into(),
            CellValue::Live(Value::Text("x".repeat(200) + &value.to_string())),
            None,
        )],
    };
    let key = crash_writer::crash_key((value % 64) as i64, (value / 64) as i64);
    engine
        .update_row(&key, |cur| cur.stamp(NodeId(1), None, &w))
        .expect("write");
}

fn read(engine: &Engine, value: u64) -> bool {
    let key = crash_writer::crash_key((value % 64) as i64, (value / 64) as i64);
    matches!(engine.get(&key).expect("read"), Some(Entry::Row(state)) if !state.versions().is_empty())
}

#[test]
fn racing_writers_switch_a_full_memtable_once_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let memtable_bytes = 64 << 10;
    let opts = || EngineOptions {
        memtable_bytes,
        segment_size: 1 << 30, // rolls come from memtable switches only
        background: false,     // no compaction: every flush stays a table
        ..EngineOptions::default()
    };
    let threads = 8u64;
    let per_thread = 600u64;
    {
        let engine = Engine::open(dir.path(), opts()).unwrap();
        std::thread::scope(|s| {
            for t in 0..threads {
                let engine = &engine;
                s.spawn(move || {
                    for i in 0..per_thread {
                        write(engine, i * threads + t);
                    }
                });
            }
        });
        let stats = engine.stats();
        // Each switch froze a memtable of at least `memtable_bytes` (the
        // last one is still active). A memtable counts an entry's key and
        // encoding plus 32 bytes, the log record a little less, so there
        // are at most (ingested + 32 per write) / memtable_bytes tables.
        let writes = threads * per_thread;
        let most = (stats.ingested_bytes + 32 * writes) / memtable_bytes as u64;
        assert!(stats.sstables >= 2, "switches happened: {stats:?}");
        assert!(
            stats.sstables as u64 <= most,
            "{} tables (at most {most}) for {} bytes ingested with \
             {memtable_bytes}-byte memtables: racing writers switched a \
             memtable that was not full",
            stats.sstables,
            stats.ingested_bytes
        );
        // Dropped without a flush: what is not in a table comes back from
        // the commit log, across the segments the switches rolled.
    }
    let engine = Engine::open(dir.path(), opts()).unwrap();
    let missing: Vec<u64> = (0..threads * per_thread)
        .filter(|&v| !read(&engine, v))
        .collect();
    assert!(missing.is_empty(), "lost acknowledged writes: {missing:?}");
}

#[test]
fn the_write_stall_predicate_follows_the_memtables() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(
        dir.path(),
        EngineOptions {
            memtable_bytes: 4 << 20,
            background: false,
            ..EngineOptions::default()
        },
    )
    .unwrap();
    // An empty memtable far from its limit: writes stay on the async thread.
    assert!(!engine.write_may_stall());
    // A memtable within 1 MiB of its limit: the next write may switch it.
    let small = tempfile::tempdir().unwrap();
    let engine = Engine::open(
        small.path(),
        EngineOptions {
            memtable_bytes: 1 << 20,
            background: false,
            ..EngineOptions::default()
        },
    )
    .unwrap();
    assert!(engine.write_may_stall());
    // With a background thread, a memtable at its limit only needs a
    // switch, which is cheap once the thread has made the commit log's
    // next segment: writes stay on the async thread.
    let background = tempfile::tempdir().unwrap();
    let engine = Engine::open(
        background.path(),
        EngineOptions {
            memtable_bytes: 1 << 20,
            background: true,
            ..EngineOptions::default()
        },
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while engine.write_may_stall() {
        assert!(
            std::time::Instant::now() < deadline,
            "the background thread never made the next commit-log segment"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // Filling the memtable past its limit switches it; every write still
    // gets through, and the switched memtable is flushed in the background.
    for v in 0..6_000 {
        write(&engine, v);
    }
    engine.wait_idle().unwrap();
    assert!(engine.stats().sstables >= 1, "{:?}", engine.stats());
}
