//! The fjall peer: a pure-Rust LSM key-value store, run in this process.
//!
//! Built without its `lz4` feature, so its blocks are not compressed (as
//! ringdb's and db_bench's `--compression_type=none`). Settings: 64 MiB
//! block cache and 64 MiB memtable (as ringdb), fjall's defaults otherwise
//! (4 KiB blocks, bloom filters, leveled compaction).
//!
//! Durability: by default every write is flushed from fjall's journal
//! buffer to the OS (`PersistMode::Buffer`, like db_bench's default and
//! ringdb's `periodic` mode); in durable mode the journal is persisted by
//! hand with `PersistMode::SyncData` (fdatasync) after every write.

use anyhow::Context;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::path::Path;
use std::time::{Duration, Instant};

/// Block cache given to fjall, as ringdb's default.
const CACHE_BYTES: u64 = 64 << 20;
/// Longest wait for fjall's background compactions to finish.
const SETTLE_LIMIT: Duration = Duration::from_secs(600);

/// One fjall database with one keyspace.
pub struct FjallStore {
    db: Database,
    keyspace: Keyspace,
    sync_each_write: bool,
}

impl FjallStore {
    /// Opens a fresh database in `dir`; `sync_each_write` fdatasyncs the
    /// journal after every write.
    pub fn open(dir: &Path, sync_each_write: bool) -> anyhow::Result<FjallStore> {
        let db = Database::builder(dir)
            .cache_size(CACHE_BYTES)
            .open()
            .with_context(|| format!("opening fjall in {}", dir.display()))?;
        let keyspace = db
            .keyspace("bench", || {
                KeyspaceCreateOptions::default()
                    .max_memtable_size(64 << 20)
                    .manual_journal_persist(sync_each_write)
            })
            .context("creating the fjall keyspace")?;
        Ok(FjallStore {
            db,
            keyspace,
            sync_each_write,
        })
    }

    /// Inserts `value` at `key` (and fdatasyncs in durable mode).
    pub fn put(&self, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
        self.keyspace.insert(key, value)?;
        if self.sync_each_write {
            self.db.persist(PersistMode::SyncData)?;
        }
        Ok(())
    }

    /// Point read; true if the key has a value.
    pub fn get(&self, key: &[u8]) -> anyhow::Result<bool> {
        Ok(self.keyspace.get(key)?.is_some_and(|v| !v.is_empty()))
    }

    /// Reads up to `limit` entries whose key starts with `prefix`, forward or
    /// backward; returns how many came back (values are read too).
    pub fn slice(&self, prefix: &[u8], reverse: bool, limit: usize) -> anyhow::Result<usize> {
        let mut n = 0;
        let mut bytes = 0usize;
        let iter = self.keyspace.prefix(prefix);
        let mut each = |guard: fjall::Guard| -> anyhow::Result<()> {
            let (_k, v) = guard.into_inner()?;
            bytes += v.len();
            n += 1;
            Ok(())
        };
        if reverse {
            for g in iter.rev().take(limit) {
                each(g)?;
            }
        } else {
            for g in iter.take(limit) {
                each(g)?;
            }
        }
        std::hint::black_box(bytes);
        Ok(n)
    }

    /// Table count and bytes on disk, for the report.
    pub fn describe(&self) -> String {
        format!(
            "{} tables, {:.1} MiB on disk",
            self.keyspace.table_count(),
            self.keyspace.disk_space() as f64 / (1 << 20) as f64
        )
    }

    /// Syncs the journal, flushes the memtable and waits until no flush or
    /// compaction has run for half a second.
    pub fn settle(&self) -> anyhow::Result<()> {
        self.db.persist(PersistMode::SyncAll)?;
        self.keyspace
            .rotate_memtable_and_wait()
            .context("flushing the fjall memtable")?;
        let started = Instant::now();
        let mut quiet = 0;
        while quiet < 5 && started.elapsed() < SETTLE_LIMIT {
            std::thread::sleep(Duration::from_millis(100));
            if self.db.outstanding_flushes() == 0 && self.db.active_compactions() == 0 {
                quiet += 1;
            } else {
                quiet = 0;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_read_back_and_prefix_slices() {
        let dir = tempfile::tempdir().unwrap();
        let store = FjallStore::open(dir.path(), true).unwrap();
        store.put(b"a1", b"x").unwrap();
        store.put(b"a2", b"y").unwrap();
        store.put(b"b1", b"z").unwrap();
        assert!(store.get(b"a1").unwrap());
        assert!(!store.get(b"c").unwrap());
        store.settle().unwrap();
        assert_eq!(store.slice(b"a", false, 10).unwrap(), 2);
        assert_eq!(store.slice(b"a", true, 1).unwrap(), 1);
    }
}
