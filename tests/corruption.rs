//! Corruption on disk: flipped bytes in an SSTable and in the commit log are
//! reported with the file and offset, and everything else stays readable.

use cql_lite::{DataType, Value};
use ringdb::model::key::{self, ClusteringOrder};
use ringdb::model::{CellValue, Entry, NodeId, RowWrite, Timestamp};
use ringdb::storage::engine::{Engine, EngineOptions};
use ringdb::storage::sstable::SsTableOptions;
use ringdb::storage::StorageError;
use std::path::{Path, PathBuf};

fn key_of(i: i64) -> Vec<u8> {
    let spk = key::serialize_partition_key(&[Value::BigInt(i)], &[DataType::BigInt]).unwrap();
    let c = key::encode_clustering(&[Value::Int(0)], &[DataType::Int], &[ClusteringOrder::Asc])
        .unwrap();
    key::row_key(&key::partition_prefix(&spk), &c)
}

fn write(engine: &Engine, i: i64) {
    let w = RowWrite {
        ts: Timestamp(i as u64 + 1),
        insert_marker: Some(None),
        delete_row: false,
        cells: vec![(
            "v".into(),
            CellValue::Live(Value::Text(format!("value-{i:06}-{}", "x".repeat(40)))),
            None,
        )],
    };
    engine
        .update_row(&key_of(i), |cur| cur.stamp(NodeId(1), None, &w))
        .unwrap();
}

fn read(engine: &Engine, i: i64) -> Result<Option<String>, StorageError> {
    Ok(match engine.get(&key_of(i))? {
        Some(Entry::Row(r)) => {
            r.resolve(None, 0)
                .and_then(|row| match row.cells.get("v").map(|c| &c.value) {
                    Some(CellValue::Live(Value::Text(s))) => Some(s.clone()),
                    _ => None,
                })
        }
        _ => None,
    })
}

fn opts() -> EngineOptions {
    EngineOptions {
        background: false,
        sstable: SsTableOptions {
            block_size: 512,
            ..SsTableOptions::default()
        },
        ..EngineOptions::default()
    }
}

fn files_in(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    out.sort();
    out
}

fn flip(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x5A;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn flipped_byte_in_an_sstable_names_file_and_offset_and_spares_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let n = 2_000;
    {
        let engine = Engine::open(dir.path(), opts()).unwrap();
        for i in 0..n {
            write(&engine, i);
        }
        engine.flush().unwrap();
    }
    let tables = files_in(&dir.path().join("tables"), "sst");
    assert_eq!(tables.len(), 1);
    // Damage a byte a little into the data section (the first blocks).
    flip(&tables[0], 700);
    let engine = Engine::open(dir.path(), opts()).unwrap();
    let mut corrupt = 0;
    for i in 0..n {
        match read(&engine, i) {
            Ok(Some(v)) => assert!(v.starts_with(&format!("value-{i:06}"))),
            Ok(None) => panic!("key {i} silently missing"),
            Err(StorageError::Corrupt { path, offset, .. }) => {
                assert_eq!(path, tables[0]);
                assert!(
                    offset <= 700,
                    "offset {offset} is the damaged block's start"
                );
                corrupt += 1;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(corrupt > 0, "the damaged block is reported");
    assert!(
        corrupt < n / 10,
        "only the damaged block is lost: {corrupt} of {n}"
    );
}

#[test]
fn flipped_byte_in_an_sstable_footer_fails_open_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(dir.path(), opts()).unwrap();
        for i in 0..100 {
            write(&engine, i);
        }
        engine.flush().unwrap();
    }
    let table = files_in(&dir.path().join("tables"), "sst").remove(0);
    let len = std::fs::metadata(&table).unwrap().len();
    flip(&table, len - 3);
    match Engine::open(dir.path(), opts()) {
        Err(StorageError::Corrupt { path, .. }) => assert_eq!(path, table),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a table with a damaged footer must not open silently"),
    }
}

#[test]
fn flipped_byte_in_the_commit_log_is_reported_and_other_records_recover() {
    let dir = tempfile::tempdir().unwrap();
    let n = 500;
    {
        let engine = Engine::open(dir.path(), opts()).unwrap();
        for i in 0..n {
            write(&engine, i);
        }
    }
    let segments: Vec<PathBuf> = files_in(&dir.path().join("commitlog"), "log")
        .into_iter()
        .filter(|p| std::fs::metadata(p).unwrap().len() > 0)
        .collect();
    assert!(!segments.is_empty());
    let segment = &segments[0];
    let len = std::fs::metadata(segment).unwrap().len();
    flip(segment, len / 2);
    let engine = Engine::open(dir.path(), opts()).unwrap();
    let problems = engine.recovery_problems();
    assert!(!problems.is_empty(), "the damage is reported");
    let name = segment.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        problems.iter().any(|p| p.contains(&name)),
        "report names the file: {problems:?}"
    );
    let recovered = (0..n)
        .filter(|i| read(&engine, *i).unwrap().is_some())
        .count();
    assert!(
        recovered >= n as usize - 2,
        "only the damaged record is lost: {recovered} of {n}"
    );
    // New writes still work and survive another reopen.
    write(&engine, n);
    drop(engine);
    let engine = Engine::open(dir.path(), opts()).unwrap();
    assert!(read(&engine, n).unwrap().is_some());
}
