//! A write of several rows of one partition (a multi-row mutation or a
//! single-partition batch) is one commit-log record: cut anywhere inside
//! that record by a crash, recovery finds none of its rows; whole, all.

use std::fs;
use std::path::{Path, PathBuf};

use cql_lite::{DataType, Value};
use ringdb::model::key;
use ringdb::model::{CellValue, NodeId, PartitionHeader, RowState, RowWrite, Timestamp};
use ringdb::storage::engine::{Engine, EngineOptions, PartitionUpdate, RowStamp};

const NODE: NodeId = NodeId(7);

fn prefix() -> Vec<u8> {
    let pk = key::serialize_partition_key(&[Value::Int(1)], &[DataType::Int]).unwrap();
    key::partition_prefix(&pk)
}

fn clustering(i: i32) -> Vec<u8> {
    key::encode_clustering(
        &[Value::Int(i)],
        &[DataType::Int],
        &[key::ClusteringOrder::Asc],
    )
    .unwrap()
}

fn write(i: i32) -> RowWrite {
    RowWrite {
        ts: Timestamp(1_000 + i as u64),
        insert_marker: Some(None),
        delete_row: false,
        cells: vec![("v".into(), CellValue::Live(Value::Int(i)), None)],
    }
}

fn stamp_of(i: i32) -> RowStamp<'static> {
    Box::new(move |cur: &RowState| cur.stamp(NODE, None, &write(i)))
}

/// The commit-log segments holding records, in order (the log may also
/// hold an empty segment made ahead for its next roll).
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join("commitlog"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| fs::metadata(p).unwrap().len() > 0)
        .collect();
    files.sort();
    files
}

fn present(dir: &Path) -> Vec<i32> {
    let engine = Engine::open(dir, EngineOptions::default()).unwrap();
    let p = prefix();
    (0..10)
        .filter(|&i| {
            let (row, _) = engine.read_row(&p, &clustering(i)).unwrap();
            row.is_some_and(|r| !r.versions().is_empty())
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn a_partition_write_survives_a_crash_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let p = prefix();
    let engine = Engine::open(dir.path(), EngineOptions::default()).unwrap();
    engine
        .update_row(&key::row_key(&p, &clustering(0)), |cur| {
            cur.stamp(NODE, None, &write(0))
        })
        .unwrap();
    let segment = segments(dir.path()).pop().unwrap();
    let before = fs::metadata(&segment).unwrap().len();
    // Rows 1..=3, a range deletion and row 1 again, as one write.
    let updates = vec![
        PartitionUpdate::Row(key::row_key(&p, &clustering(1)), stamp_of(1)),
        PartitionUpdate::Row(key::row_key(&p, &clustering(2)), stamp_of(2)),
        PartitionUpdate::Header(PartitionHeader::default()),
        PartitionUpdate::Row(key::row_key(&p, &clustering(3)), stamp_of(3)),
        PartitionUpdate::Row(key::row_key(&p, &clustering(1)), stamp_of(4)),
    ];
    let (deltas, ticket) = engine.update_partition_unsynced(&p, updates).unwrap();
    engine.wait_synced(ticket.unwrap()).unwrap();
    assert_eq!(deltas.len(), 5);
    // The second write of row 1 superseded the first: one version left.
    let (row1, _) = engine.read_row(&p, &clustering(1)).unwrap();
    assert_eq!(row1.unwrap().versions().len(), 1);
    drop(engine); // no flush: the commit log is all there is
    assert_eq!(segments(dir.path()).pop().unwrap(), segment);
    let after = fs::metadata(&segment).unwrap().len();
    assert!(after > before);

    let whole = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), whole.path());
    assert_eq!(present(whole.path()), vec![0, 1, 2, 3]);

    let span = after - before;
    for cut in [
        before,
        before + 1,
        before + span / 3,
        before + span / 2,
        after - 1,
    ] {
        let crashed = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), crashed.path());
        let seg = crashed
            .path()
            .join("commitlog")
            .join(segment.file_name().unwrap());
        fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(cut)
            .unwrap();
        assert_eq!(present(crashed.path()), vec![0], "cut at {cut}");
    }
}

#[test]
fn rows_of_another_partition_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineOptions::default()).unwrap();
    let other_pk = key::serialize_partition_key(&[Value::Int(2)], &[DataType::Int]).unwrap();
    let other = key::partition_prefix(&other_pk);
    let updates = vec![
        PartitionUpdate::Row(key::row_key(&prefix(), &clustering(1)), stamp_of(1)),
        PartitionUpdate::Row(key::row_key(&other, &clustering(1)), stamp_of(2)),
    ];
    let err = engine
        .update_partition_unsynced(&prefix(), updates)
        .unwrap_err();
    assert!(err.to_string().contains("not a row of partition"), "{err}");
    // Nothing of the refused write was applied.
    let (row, _) = engine.read_row(&prefix(), &clustering(1)).unwrap();
    assert!(row.is_none());
}
