//! Durable hints: writes held for a replica that was down or silent.
//!
//! When a coordinator cannot reach a replica, it stores the replica's copy
//! of the write here (durably, before the write counts as acknowledged
//! through it) and replays it when gossip says the replica is back.
//!
//! Layout: one directory per target node, holding segment files of framed
//! records (`storage::framing`: magic, length, CRC32C). A segment is deleted
//! once every hint in it was delivered or expired. Hints older than the
//! hint window are dropped (and counted) instead of replayed, as in
//! Cassandra's `max_hint_window`: past it, repair is the way to converge.

use crate::model::NodeId;
use crate::storage::commitlog::sync_dir;
use crate::storage::framing::{self, Frame, RecordReader};
use crate::storage::{Result, StorageError};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Settings of the hint store.
#[derive(Debug, Clone)]
pub struct HintOptions {
    /// Hints older than this are dropped instead of replayed.
    pub window: Duration,
    /// fsync every stored hint before `store` returns.
    pub sync: bool,
    /// Roll a target's segment past this size.
    pub segment_bytes: u64,
}

impl Default for HintOptions {
    fn default() -> Self {
        HintOptions {
            window: Duration::from_secs(3 * 3600),
            sync: true,
            segment_bytes: 16 << 20,
        }
    }
}

/// One stored hint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hint {
    /// Wall-clock millisecond when the hint was stored.
    pub created_ms: u64,
    /// The write, encoded by the coordinator.
    pub payload: Vec<u8>,
}

/// Counters of the hint store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HintStats {
    /// Hints stored.
    pub stored: u64,
    /// Hints delivered to their target.
    pub delivered: u64,
    /// Hints dropped because they outlived the hint window.
    pub expired: u64,
    /// Hints dropped because their target left the ring.
    pub discarded: u64,
    /// Damaged records skipped on reading (each also logged).
    pub corrupt: u64,
}

/// Hints for one target, read from disk, to be delivered and then
/// acknowledged with [`HintStore::ack`].
#[derive(Debug)]
pub struct HintBatch {
    /// The target node.
    pub target: NodeId,
    /// Hints in the order they were stored, expired ones left out.
    pub hints: Vec<Hint>,
    segments: Vec<u64>,
    expired: u64,
}

struct Target {
    dir: PathBuf,
    /// Segment ids present on disk, oldest first.
    segments: Vec<u64>,
    /// The segment receiving new hints, and its size.
    active: Option<(u64, File, u64)>,
}

/// The hints of one node, for all targets.
pub struct HintStore {
    dir: PathBuf,
    opts: HintOptions,
    targets: Mutex<BTreeMap<NodeId, Target>>,
    stored: AtomicU64,
    delivered: AtomicU64,
    expired: AtomicU64,
    discarded: AtomicU64,
    corrupt: AtomicU64,
}

impl HintStore {
    /// Opens (creating if needed) the hint store under `dir`.
    pub fn open(dir: &Path, opts: HintOptions) -> Result<HintStore> {
        fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        let mut targets = BTreeMap::new();
        for entry in fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
            let entry = entry.map_err(|e| StorageError::io(dir, e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(node) = name
                .strip_prefix("node-")
                .and_then(|h| u64::from_str_radix(h, 16).ok())
            else {
                continue;
            };
            let target_dir = entry.path();
            let segments = list_segments(&target_dir)?;
            targets.insert(
                NodeId(node),
                Target {
                    dir: target_dir,
                    segments,
                    active: None,
                },
            );
        }
        Ok(HintStore {
            dir: dir.to_path_buf(),
            opts,
            targets: Mutex::new(targets),
            stored: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            discarded: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
        })
    }

    /// Stores a hint for `target`, durably when `sync` is set.
    pub fn store(&self, target: NodeId, hint: &Hint) -> Result<()> {
        let payload = bincode::serde::encode_to_vec(hint, bincode::config::standard())
            .map_err(|e| StorageError::Codec(e.to_string()))?;
        let record = framing::encode_record(&payload)?;
        let mut targets = self.targets.lock();
        let t = targets.entry(target).or_insert_with(|| Target {
            dir: self.dir.join(format!("node-{:016x}", target.0)),
            segments: Vec::new(),
            active: None,
        });
        let roll = t
            .active
            .as_ref()
            .is_none_or(|(_, _, len)| *len >= self.opts.segment_bytes);
        if roll {
            fs::create_dir_all(&t.dir).map_err(|e| StorageError::io(&t.dir, e))?;
            let id = t.segments.last().map_or(0, |last| last + 1);
            let path = segment_path(&t.dir, id);
            let file = OpenOptions::new()
                .append(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| StorageError::io(&path, e))?;
            sync_dir(&t.dir)?;
            t.segments.push(id);
            t.active = Some((id, file, 0));
        }
        let Some((id, file, len)) = t.active.as_mut() else {
            return Err(StorageError::Closed("hint segment missing".into()));
        };
        let path = segment_path(&t.dir, *id);
        file.write_all(&record)
            .map_err(|e| StorageError::io(&path, e))?;
        if self.opts.sync {
            file.sync_data().map_err(|e| StorageError::io(&path, e))?;
        }
        *len += record.len() as u64;
        self.stored.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Targets that have hints waiting.
    pub fn targets(&self) -> Vec<NodeId> {
        self.targets
            .lock()
            .iter()
            .filter(|(_, t)| !t.segments.is_empty())
            .map(|(n, _)| *n)
            .collect()
    }

    /// Reads the hints waiting for `target` (as of now; hints stored while
    /// they are delivered go to a new segment and wait for the next round),
    /// leaving out the ones past the hint window at `now_ms`.
    pub fn take_batch(&self, target: NodeId, now_ms: u64) -> Result<HintBatch> {
        let segments = {
            let mut targets = self.targets.lock();
            let Some(t) = targets.get_mut(&target) else {
                return Ok(HintBatch {
                    target,
                    hints: Vec::new(),
                    segments: Vec::new(),
                    expired: 0,
                });
            };
            // Close the active segment so new hints start a fresh one.
            t.active = None;
            t.segments
                .iter()
                .map(|id| (*id, segment_path(&t.dir, *id)))
                .collect::<Vec<_>>()
        };
        let window_ms = self.opts.window.as_millis() as u64;
        let mut hints = Vec::new();
        let mut expired = 0;
        for (_, path) in &segments {
            let data = match fs::read(path) {
                Ok(data) => data,
                // Expired and deleted meanwhile (`HintStore::expire`).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StorageError::io(path, e)),
            };
            for frame in RecordReader::new(path, &data) {
                match frame {
                    Frame::Record { offset, payload } => {
                        match bincode::serde::decode_from_slice::<Hint, _>(
                            payload,
                            bincode::config::standard(),
                        ) {
                            Ok((hint, _)) if hint.created_ms.saturating_add(window_ms) < now_ms => {
                                expired += 1
                            }
                            Ok((hint, _)) => hints.push(hint),
                            Err(e) => {
                                self.corrupt.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(path = %path.display(), offset, error = %e, "undecodable hint skipped");
                            }
                        }
                    }
                    Frame::Corrupt { error, .. } | Frame::TornTail { error, .. } => {
                        self.corrupt.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%error, "damaged hint record skipped");
                    }
                }
            }
        }
        Ok(HintBatch {
            target,
            hints,
            segments: segments.into_iter().map(|(id, _)| id).collect(),
            expired,
        })
    }

    /// Deletes the segments of `target` whose every hint is past the hint
    /// window at `now_ms`, counting those hints as expired; returns how
    /// many. For a node that stays down: its hints would only be dropped
    /// when replayed, so without this they would sit on disk until it came
    /// back or left. A segment with one hint still inside the window is
    /// kept whole (its expired hints are dropped when it is replayed).
    pub fn expire(&self, target: NodeId, now_ms: u64) -> Result<u64> {
        let window_ms = self.opts.window.as_millis() as u64;
        let segments = {
            let targets = self.targets.lock();
            let Some(t) = targets.get(&target) else {
                return Ok(0);
            };
            t.segments
                .iter()
                .map(|id| (*id, segment_path(&t.dir, *id)))
                .collect::<Vec<_>>()
        };
        let mut stale = Vec::new();
        let mut dropped = 0u64;
        for (id, path) in segments {
            let data = match fs::read(&path) {
                Ok(data) => data,
                // Replayed and deleted meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StorageError::io(&path, e)),
            };
            let mut hints = 0u64;
            let all_expired = RecordReader::new(&path, &data).all(|frame| match frame {
                Frame::Record { payload, .. } => {
                    hints += 1;
                    bincode::serde::decode_from_slice::<Hint, _>(
                        payload,
                        bincode::config::standard(),
                    )
                    .is_ok_and(|(hint, _)| hint.created_ms.saturating_add(window_ms) < now_ms)
                }
                // Damaged records are counted when the segment is replayed.
                Frame::Corrupt { .. } | Frame::TornTail { .. } => false,
            });
            if all_expired && hints > 0 {
                stale.push(id);
                dropped += hints;
            }
        }
        if stale.is_empty() {
            return Ok(0);
        }
        {
            // A segment that is still being appended to is closed first.
            let mut targets = self.targets.lock();
            if let Some(t) = targets.get_mut(&target) {
                if t.active
                    .as_ref()
                    .is_some_and(|(id, _, _)| stale.contains(id))
                {
                    t.active = None;
                }
            }
        }
        self.remove_segments(&HintBatch {
            target,
            hints: Vec::new(),
            segments: stale,
            expired: 0,
        })?;
        self.expired.fetch_add(dropped, Ordering::Relaxed);
        Ok(dropped)
    }

    /// Records that every hint of `batch` was delivered: its segments are
    /// deleted.
    pub fn ack(&self, batch: HintBatch) -> Result<()> {
        self.remove_segments(&batch)?;
        self.delivered
            .fetch_add(batch.hints.len() as u64, Ordering::Relaxed);
        self.expired.fetch_add(batch.expired, Ordering::Relaxed);
        Ok(())
    }

    /// Drops every hint waiting for `target`, a node that left the ring
    /// (the nodes that took its ranges got those writes as pending copies
    /// or from its hand-over). Returns how many were dropped.
    pub fn discard_target(&self, target: NodeId) -> Result<u64> {
        let batch = self.take_batch(target, 0)?;
        self.remove_segments(&batch)?;
        let dropped = batch.hints.len() as u64 + batch.expired;
        self.discarded.fetch_add(dropped, Ordering::Relaxed);
        Ok(dropped)
    }

    /// Deletes the segments of `batch`.
    fn remove_segments(&self, batch: &HintBatch) -> Result<()> {
        let mut targets = self.targets.lock();
        if let Some(t) = targets.get_mut(&batch.target) {
            for id in &batch.segments {
                let path = segment_path(&t.dir, *id);
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StorageError::io(&path, e)),
                }
            }
            t.segments.retain(|id| !batch.segments.contains(id));
            if t.dir.exists() {
                sync_dir(&t.dir)?;
            }
        }
        Ok(())
    }

    /// Counters since open.
    pub fn stats(&self) -> HintStats {
        HintStats {
            stored: self.stored.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            discarded: self.discarded.load(Ordering::Relaxed),
            corrupt: self.corrupt.load(Ordering::Relaxed),
        }
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("hints-{id:020}.log"))
}

fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
        let entry = entry.map_err(|e| StorageError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(id) = name
            .strip_prefix("hints-")
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hint(ms: u64, tag: u8) -> Hint {
        Hint {
            created_ms: ms,
            payload: vec![tag; (tag as usize % 7) + 1],
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Store(u64, u8),
        DeliverAll(u64),
        TakeAndFail(u64),
        Discard(u64),
        Reopen,
    }

    proptest! {
        /// Against a model (a list of waiting hints per target): every
        /// stored hint is delivered exactly once, in order, unless it
        /// expired; nothing survives an acknowledged delivery; reopening
        /// loses nothing.
        #[test]
        fn hints_are_delivered_once_in_order_unless_expired(
            ops in proptest::collection::vec(prop_oneof![
                4 => (0u64..3, any::<u8>()).prop_map(|(t, tag)| Op::Store(t, tag)),
                2 => (0u64..3).prop_map(Op::DeliverAll),
                1 => (0u64..3).prop_map(Op::TakeAndFail),
                1 => (0u64..3).prop_map(Op::Discard),
                1 => Just(Op::Reopen),
            ], 1..40),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let opts = HintOptions { window: Duration::from_millis(100), sync: false, segment_bytes: 64 };
            let mut store = HintStore::open(dir.path(), opts.clone()).unwrap();
            let mut model: BTreeMap<u64, Vec<Hint>> = BTreeMap::new();
            let mut now = 1_000u64;
            for op in ops {
                now += 10;
                match op {
                    Op::Store(t, tag) => {
                        let h = hint(now, tag);
                        store.store(NodeId(t), &h).unwrap();
                        model.entry(t).or_default().push(h);
                    }
                    Op::DeliverAll(t) => {
                        let batch = store.take_batch(NodeId(t), now).unwrap();
                        let waiting = model.remove(&t).unwrap_or_default();
                        let live: Vec<Hint> = waiting.into_iter().filter(|h| h.created_ms + 100 >= now).collect();
                        prop_assert_eq!(&batch.hints, &live);
                        store.ack(batch).unwrap();
                    }
                    Op::TakeAndFail(t) => {
                        // Delivery failed: nothing acknowledged, all still waiting.
                        let batch = store.take_batch(NodeId(t), now).unwrap();
                        let live: Vec<Hint> = model.get(&t).cloned().unwrap_or_default()
                            .into_iter().filter(|h| h.created_ms + 100 >= now).collect();
                        prop_assert_eq!(&batch.hints, &live);
                    }
                    Op::Discard(t) => {
                        // The target left: all its hints go, expired or not.
                        let waiting = model.remove(&t).unwrap_or_default();
                        let before = store.stats().discarded;
                        prop_assert_eq!(store.discard_target(NodeId(t)).unwrap(), waiting.len() as u64);
                        prop_assert_eq!(store.stats().discarded - before, waiting.len() as u64);
                        prop_assert!(store.take_batch(NodeId(t), now).unwrap().hints.is_empty());
                    }
                    Op::Reopen => {
                        drop(store);
                        store = HintStore::open(dir.path(), opts.clone()).unwrap();
                    }
                }
            }
            let waiting: Vec<NodeId> = model.iter().filter(|(_, v)| !v.is_empty()).map(|(t, _)| NodeId(*t)).collect();
            prop_assert_eq!(store.targets(), waiting);
        }
    }

    #[test]
    fn hints_of_a_node_that_stays_down_expire_by_whole_segments() {
        let dir = tempfile::tempdir().unwrap();
        let opts = HintOptions {
            window: Duration::from_millis(100),
            sync: false,
            segment_bytes: 64,
        };
        let store = HintStore::open(dir.path(), opts).unwrap();
        let target = NodeId(4);
        let segments = |store: &HintStore| store.targets.lock()[&target].segments.len();
        // Old hints fill a few segments; then new ones (64-byte segments:
        // every few hints start a new one).
        for i in 0..12u8 {
            store.store(target, &hint(1_000, i)).unwrap();
        }
        let old_segments = segments(&store);
        assert!(old_segments >= 3, "{old_segments}");
        for i in 0..3u8 {
            store.store(target, &hint(5_000, i)).unwrap();
        }
        // Nothing is past the window yet.
        assert_eq!(store.expire(target, 1_050).unwrap(), 0);
        // At 5,050 the old ones are: their segments go, counted; a segment
        // holding a new hint stays.
        let dropped = store.expire(target, 5_050).unwrap();
        assert!((1..=12).contains(&dropped), "{dropped}");
        assert_eq!(store.stats().expired, dropped);
        assert!(segments(&store) < old_segments + 1);
        let batch = store.take_batch(target, 5_050).unwrap();
        let new: Vec<Hint> = (0..3u8).map(|i| hint(5_000, i)).collect();
        assert_eq!(batch.hints, new, "every hint inside the window is kept");
        assert_eq!(dropped + batch.expired, 12, "each old hint counted once");
        // Once every hint is past the window, the target has nothing left.
        store.store(NodeId(5), &hint(1_000, 1)).unwrap();
        assert_eq!(store.expire(NodeId(5), 9_000).unwrap(), 1);
        assert!(!store.targets().contains(&NodeId(5)));
        assert_eq!(store.expire(NodeId(6), 9_000).unwrap(), 0, "unknown target");
    }

    #[test]
    fn damaged_hint_is_skipped_and_counted_and_the_rest_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let opts = HintOptions {
            sync: true,
            ..HintOptions::default()
        };
        let store = HintStore::open(dir.path(), opts).unwrap();
        for i in 0..10u8 {
            store.store(NodeId(9), &hint(1_000, i)).unwrap();
        }
        let seg = dir
            .path()
            .join("node-0000000000000009")
            .join("hints-00000000000000000000.log");
        let mut bytes = fs::read(&seg).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xFF;
        fs::write(&seg, bytes).unwrap();
        let batch = store.take_batch(NodeId(9), 1_000).unwrap();
        assert_eq!(
            batch.hints.len(),
            9,
            "one damaged record lost, the rest kept"
        );
        assert_eq!(store.stats().corrupt, 1);
        store.ack(batch).unwrap();
        assert_eq!(store.stats().delivered, 9);
        assert!(store.targets().is_empty());
    }
}
