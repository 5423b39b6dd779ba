//! ringdb's side of the storage benchmark: real row keys, real row states,
//! the replica write path.
//!
//! A key-value key of 16 bytes becomes a blob partition key
//! (`serialize_partition_key`), then a row key with an empty clustering key
//! (`partition_prefix` + `row_key`). A value becomes a row state with one
//! version holding one 100-byte blob cell `v` and an INSERT row marker.
//! Writes go through [`Engine::update_row`] with [`RowState::stamp`] (read
//! the row, stamp a new version that supersedes it, write the delta), as a
//! replica does; reads are [`Engine::get`] then [`RowState::resolve`].

use super::workload::KEY_BYTES;
use anyhow::{anyhow, Context};
use cql_lite::{DataType, Value};
use ringdb::model::key::{self, ClusteringOrder};
use ringdb::model::{CellValue, Entry, HybridClock, NodeId, RowState, RowWrite, SystemClock};
use ringdb::storage::commitlog::SyncMode;
use ringdb::storage::engine::{Engine, EngineOptions, EngineStats};
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

/// The node id that stamps every benchmark write.
const NODE: NodeId = NodeId(1);
/// The value column.
const COLUMN: &str = "v";

/// One ringdb engine under benchmark.
pub struct RingdbStore {
    engine: Engine,
    clock: HybridClock,
}

impl RingdbStore {
    /// Opens a fresh engine in `dir` with default options and `sync_mode`.
    pub fn open(dir: &Path, sync_mode: SyncMode) -> anyhow::Result<RingdbStore> {
        let opts = EngineOptions {
            sync_mode,
            ..EngineOptions::default()
        };
        let engine = Engine::open(dir, opts)
            .with_context(|| format!("opening a ringdb engine in {}", dir.display()))?;
        Ok(RingdbStore {
            engine,
            clock: HybridClock::new(Arc::new(SystemClock)),
        })
    }

    /// The engine's byte counters.
    pub fn stats(&self) -> EngineStats {
        self.engine.stats()
    }

    fn write_of(&self, value: &[u8]) -> RowWrite {
        RowWrite {
            ts: self.clock.now(),
            insert_marker: Some(None),
            delete_row: false,
            cells: vec![(
                COLUMN.to_string(),
                CellValue::Live(Value::Blob(value.to_vec())),
                None,
            )],
        }
    }

    /// Writes `value` at row key `key` through the replica path: read the
    /// row, stamp a version superseding it, write the delta.
    pub fn put_row(&self, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
        let write = self.write_of(value);
        self.engine
            .update_row(key, |current| current.stamp(NODE, None, &write))?;
        Ok(())
    }

    /// Writes a delta stamped on an empty state with [`Engine::write`]: no
    /// read before the write (the raw engine path, not what a replica does).
    pub fn put_row_raw_delta(&self, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
        let delta = RowState::default().stamp(NODE, None, &self.write_of(value));
        self.engine.write(key, Entry::Row(delta))?;
        Ok(())
    }

    /// Reads and resolves the row at `key`; true if it exists with a value.
    pub fn get_row(&self, key: &[u8]) -> anyhow::Result<bool> {
        let Some(Entry::Row(state)) = self.engine.get(key)? else {
            return Ok(false);
        };
        let now = self.clock.wall().now_millis();
        Ok(state
            .resolve(None, now)
            .is_some_and(|row| row.cells.contains_key(COLUMN)))
    }

    /// Reads up to `limit` rows of a partition, ascending or descending;
    /// returns how many rows came back.
    pub fn slice(&self, prefix: &[u8], reverse: bool, limit: usize) -> anyhow::Result<usize> {
        let slice = self.engine.read_partition(
            prefix,
            Bound::Unbounded,
            Bound::Unbounded,
            reverse,
            Some(limit),
        )?;
        Ok(slice.rows.len())
    }

    /// SSTable count and bytes, compactions and the encoded size of a
    /// write, for the report.
    pub fn describe(&self, writes: u64) -> String {
        let s = self.stats();
        format!(
            "{} SSTables, {:.1} MiB; {} compactions; {:.0} B per commit-log record",
            s.sstables,
            s.sstable_bytes as f64 / (1 << 20) as f64,
            s.compactions,
            s.ingested_bytes as f64 / writes.max(1) as f64
        )
    }

    /// Flushes the memtable and waits until due compactions are done.
    pub fn settle(&self) -> anyhow::Result<()> {
        self.engine.flush().context("flushing")?;
        self.engine.wait_idle().context("waiting for compaction")?;
        Ok(())
    }
}

/// The partition prefix of a 16-byte blob partition key.
pub fn partition_prefix(raw: &[u8; KEY_BYTES]) -> anyhow::Result<Vec<u8>> {
    let spk = key::serialize_partition_key(&[Value::Blob(raw.to_vec())], &[DataType::Blob])
        .map_err(|e| anyhow!("serializing a partition key: {e}"))?;
    Ok(key::partition_prefix(&spk))
}

/// The row key of a key-value-shape entry: the partition alone (empty
/// clustering key).
pub fn kv_row_key(raw: &[u8; KEY_BYTES]) -> anyhow::Result<Vec<u8>> {
    Ok(key::row_key(&partition_prefix(raw)?, &[]))
}

/// The row key of row `row` (a `bigint` clustering column, ascending) in the
/// partition with prefix `prefix`.
pub fn wide_row_key(prefix: &[u8], row: u64) -> anyhow::Result<Vec<u8>> {
    let clustering = key::encode_clustering(
        &[Value::BigInt(row as i64)],
        &[DataType::BigInt],
        &[ClusteringOrder::Asc],
    )
    .map_err(|e| anyhow!("encoding a clustering key: {e}"))?;
    Ok(key::row_key(prefix, &clustering))
}

/// The first key of a partition's rows (for prefix scans in other engines).
pub fn rows_prefix(prefix: &[u8]) -> Vec<u8> {
    key::rows_start(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::bench::workload::raw_key;

    #[test]
    fn writes_read_back_and_slices_come_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = RingdbStore::open(dir.path(), SyncMode::Batch).unwrap();
        let k = kv_row_key(&raw_key(7)).unwrap();
        assert!(!store.get_row(&k).unwrap());
        store.put_row(&k, &[1u8; 100]).unwrap();
        store.put_row(&k, &[2u8; 100]).unwrap();
        assert!(store.get_row(&k).unwrap());
        let raw = kv_row_key(&raw_key(8)).unwrap();
        store.put_row_raw_delta(&raw, &[3u8; 100]).unwrap();
        assert!(store.get_row(&raw).unwrap());
        let prefix = partition_prefix(&raw_key(9)).unwrap();
        for r in 0..10 {
            store
                .put_row(&wide_row_key(&prefix, r).unwrap(), &[4u8; 100])
                .unwrap();
        }
        store.settle().unwrap();
        assert_eq!(store.slice(&prefix, false, 100).unwrap(), 10);
        assert_eq!(store.slice(&prefix, true, 4).unwrap(), 4);
        assert!(wide_row_key(&prefix, 1)
            .unwrap()
            .starts_with(&rows_prefix(&prefix)));
    }
}
