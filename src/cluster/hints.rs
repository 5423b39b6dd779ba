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
//!
//! Replay reads a target's hints in batches of its oldest segments, up to
//! [`HintOptions::replay_batch_bytes`] (but always one whole segment), and
//! deletes each batch once it is delivered. So a node that was down for
//! hours under heavy writes, with gigabytes of hints, is caught up while
//! holding about one batch in memory, and a failed replay keeps what it
//! already delivered. A replay round ([`HintStore::start_round`]) covers
//! the segments the target had when it began; hints stored meanwhile wait
//! for the next round.

use crate::model::NodeId;
use crate::storage::commitlog::sync_dir;
use crate::storage::framing::{self, Frame, RecordReader};
use crate::storage::{Result, StorageError};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The default hint window (`--hint-window-hours`): three hours, as
/// Cassandra's `max_hint_window`.
pub const DEFAULT_HINT_WINDOW: Duration = Duration::from_secs(3 * 3600);

/// Settings of the hint store.
#[derive(Debug, Clone)]
pub struct HintOptions {
    /// Hints older than this are dropped instead of replayed.
    pub window: Duration,
    /// fsync every stored hint before `store` returns.
    pub sync: bool,
    /// Roll a target's segment past this size.
    pub segment_bytes: u64,
    /// A replay batch reads whole segments, oldest first, up to this many
    /// bytes; a segment larger than this is read alone.
    pub replay_batch_bytes: u64,
}

impl Default for HintOptions {
    fn default() -> Self {
        HintOptions {
            window: DEFAULT_HINT_WINDOW,
            sync: true,
            segment_bytes: 16 << 20,
            replay_batch_bytes: 16 << 20,
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
    /// Segment files read to look for expired hints ([`HintStore::expire`]).
    /// A segment whose newest hint is known and still inside the window is
    /// not read, so a target that stays down costs reads only as its
    /// segments expire, not on every sweep.
    pub expiry_scans: u64,
}

/// The hints waiting for one target, as `ringdb admin status` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingHints {
    /// The node they are for.
    pub target: NodeId,
    /// Segment files holding them.
    pub segments: usize,
    /// Bytes of those files (delivered hints of a segment that is being
    /// replayed included, until the segment is removed).
    pub bytes: u64,
}

/// Hints for one target, read from its oldest segments, to be delivered
/// and then acknowledged with [`HintStore::ack`].
#[derive(Debug)]
pub struct HintBatch {
    /// The target node.
    pub target: NodeId,
    /// Hints in the order they were stored, expired ones left out.
    pub hints: Vec<Hint>,
    /// The segments read, oldest first.
    segments: Vec<u64>,
    /// Hints of those segments past the hint window.
    expired: u64,
    /// Bytes of those segments.
    bytes: u64,
}

impl HintBatch {
    fn empty(target: NodeId) -> HintBatch {
        HintBatch {
            target,
            hints: Vec::new(),
            segments: Vec::new(),
            expired: 0,
            bytes: 0,
        }
    }
}

/// One replay round of a target: it covers the segments the target had
/// when the round began (see [`HintStore::start_round`]).
#[derive(Debug, Clone, Copy)]
pub struct HintRound {
    target: NodeId,
    /// The newest segment when the round began; `None` when there was none.
    last: Option<u64>,
}

impl HintRound {
    /// The node the hints are for.
    pub fn target(&self) -> NodeId {
        self.target
    }
}

struct Target {
    dir: PathBuf,
    /// Segment ids present on disk, oldest first.
    segments: Vec<u64>,
    /// The id of the next segment. Ids are never reused while the store is
    /// open, so a round never takes a segment created after it began.
    next_id: u64,
    /// The segment receiving new hints, and its size.
    active: Option<(u64, File, u64)>,
    /// The newest hint's `created_ms` of segments where it is known (those
    /// written since open, and those `expire` read): such a segment cannot
    /// be all expired before that hint is.
    newest_ms: BTreeMap<u64, u64>,
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
    expiry_scans: AtomicU64,
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
            let next_id = segments.last().map_or(0, |last| last + 1);
            targets.insert(
                NodeId(node),
                Target {
                    dir: target_dir,
                    segments,
                    next_id,
                    active: None,
                    newest_ms: BTreeMap::new(),
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
            expiry_scans: AtomicU64::new(0),
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
            next_id: 0,
            active: None,
            newest_ms: BTreeMap::new(),
        });
        let roll = t
            .active
            .as_ref()
            .is_none_or(|(_, _, len)| *len >= self.opts.segment_bytes);
        if roll {
            fs::create_dir_all(&t.dir).map_err(|e| StorageError::io(&t.dir, e))?;
            let id = t.next_id;
            let path = segment_path(&t.dir, id);
            let file = OpenOptions::new()
                .append(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| StorageError::io(&path, e))?;
            t.next_id = id + 1;
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
        let newest = t.newest_ms.entry(*id).or_insert(hint.created_ms);
        *newest = (*newest).max(hint.created_ms);
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

    /// Starts a replay round of `target`: closes the segment receiving its
    /// hints, so hints stored from now on go to a new segment and wait for
    /// the next round, and notes its newest segment, where the round ends.
    pub fn start_round(&self, target: NodeId) -> HintRound {
        let mut targets = self.targets.lock();
        let last = targets.get_mut(&target).and_then(|t| {
            t.active = None;
            t.segments.last().copied()
        });
        HintRound { target, last }
    }

    /// Reads the next batch of `round`: the oldest segments of its target
    /// that existed when the round began, whole, up to
    /// `replay_batch_bytes` (at least one segment, however large). Hints
    /// past the hint window at `now_ms` are left out and counted, damaged
    /// records skipped and counted as corrupt. `None` once the round's
    /// segments are all gone (acknowledged, expired or discarded); a batch
    /// that is not acknowledged is read again by the next call.
    pub fn next_batch(&self, round: &HintRound, now_ms: u64) -> Result<Option<HintBatch>> {
        let Some(last) = round.last else {
            return Ok(None);
        };
        let candidates = {
            let mut targets = self.targets.lock();
            let Some(t) = targets.get_mut(&round.target) else {
                return Ok(None);
            };
            // The round's segments were closed when it began; this only
            // makes sure none is read while it still grows.
            if t.active.as_ref().is_some_and(|(id, _, _)| *id <= last) {
                t.active = None;
            }
            t.segments
                .iter()
                .take_while(|id| **id <= last)
                .map(|id| (*id, segment_path(&t.dir, *id)))
                .collect::<Vec<_>>()
        };
        if candidates.is_empty() {
            return Ok(None);
        }
        let window_ms = self.opts.window.as_millis() as u64;
        let mut batch = HintBatch::empty(round.target);
        for (id, path) in candidates {
            let mut file = match File::open(&path) {
                Ok(file) => file,
                // Expired or discarded meanwhile: nothing to read, and the
                // acknowledgement forgets it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    batch.segments.push(id);
                    continue;
                }
                Err(e) => return Err(StorageError::io(&path, e)),
            };
            let size = file
                .metadata()
                .map_err(|e| StorageError::io(&path, e))?
                .len();
            if !batch.segments.is_empty()
                && batch.bytes.saturating_add(size) > self.opts.replay_batch_bytes
            {
                break;
            }
            let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            file.read_to_end(&mut data)
                .map_err(|e| StorageError::io(&path, e))?;
            batch.segments.push(id);
            batch.bytes = batch.bytes.saturating_add(data.len() as u64);
            for frame in RecordReader::new(&path, &data) {
                match frame {
                    Frame::Record { offset, payload } => {
                        match bincode::serde::decode_from_slice::<Hint, _>(
                            payload,
                            bincode::config::standard(),
                        ) {
                            Ok((hint, _)) if hint.created_ms.saturating_add(window_ms) < now_ms => {
                                batch.expired += 1
                            }
                            Ok((hint, _)) => batch.hints.push(hint),
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
        Ok(Some(batch))
    }

    /// Reads the oldest hints waiting for `target`: the first batch of a
    /// new round (see [`HintStore::start_round`] and
    /// [`HintStore::next_batch`]); an empty batch when there are none.
    pub fn take_batch(&self, target: NodeId, now_ms: u64) -> Result<HintBatch> {
        let round = self.start_round(target);
        Ok(self
            .next_batch(&round, now_ms)?
            .unwrap_or_else(|| HintBatch::empty(target)))
    }

    /// Deletes the segments of `target` whose every hint is past the hint
    /// window at `now_ms`, counting those hints as expired; returns how
    /// many. For a node that stays down: its hints would only be dropped
    /// when replayed, so without this they would sit on disk until it came
    /// back or left. A segment with one hint still inside the window is
    /// kept whole (its expired hints are dropped when it is replayed).
    pub fn expire(&self, target: NodeId, now_ms: u64) -> Result<u64> {
        let window_ms = self.opts.window.as_millis() as u64;
        let expired = |created_ms: u64| created_ms.saturating_add(window_ms) < now_ms;
        let segments = {
            let targets = self.targets.lock();
            let Some(t) = targets.get(&target) else {
                return Ok(0);
            };
            t.segments
                .iter()
                // A segment whose newest hint is still inside the window
                // cannot be all expired: no need to read it.
                .filter(|id| t.newest_ms.get(id).is_none_or(|&ms| expired(ms)))
                .map(|id| (*id, segment_path(&t.dir, *id)))
                .collect::<Vec<_>>()
        };
        let mut stale = Vec::new();
        let mut dropped = 0u64;
        let mut learned = Vec::new();
        for (id, path) in segments {
            let data = match fs::read(&path) {
                Ok(data) => data,
                // Replayed and deleted meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StorageError::io(&path, e)),
            };
            self.expiry_scans.fetch_add(1, Ordering::Relaxed);
            let mut hints = 0u64;
            let mut all_expired = true;
            let mut newest = 0u64;
            for frame in RecordReader::new(&path, &data) {
                match frame {
                    Frame::Record { payload, .. } => {
                        hints += 1;
                        match bincode::serde::decode_from_slice::<Hint, _>(
                            payload,
                            bincode::config::standard(),
                        ) {
                            Ok((hint, _)) => {
                                newest = newest.max(hint.created_ms);
                                all_expired &= expired(hint.created_ms);
                            }
                            Err(_) => all_expired = false,
                        }
                    }
                    // Damaged records are counted when the segment is
                    // replayed.
                    Frame::Corrupt { .. } | Frame::TornTail { .. } => all_expired = false,
                }
            }
            if all_expired && hints > 0 {
                stale.push(id);
                dropped += hints;
            } else if hints > 0 {
                learned.push((id, newest));
            }
        }
        if !learned.is_empty() {
            let mut targets = self.targets.lock();
            if let Some(t) = targets.get_mut(&target) {
                for (id, newest) in learned {
                    // Only segments still there and not being appended to
                    // (a store after the read would make `newest` stale;
                    // `store` keeps the active segment's own entry).
                    let active = t.active.as_ref().is_some_and(|(a, _, _)| *a == id);
                    if t.segments.contains(&id) && !active {
                        t.newest_ms.insert(id, newest);
                    }
                }
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
            segments: stale,
            ..HintBatch::empty(target)
        })?;
        self.expired.fetch_add(dropped, Ordering::Relaxed);
        Ok(dropped)
    }

    /// Records that every hint of `batch` was delivered: its segments are
    /// deleted (the next batch of the round starts after them).
    pub fn ack(&self, batch: HintBatch) -> Result<()> {
        self.remove_segments(&batch)?;
        self.delivered
            .fetch_add(batch.hints.len() as u64, Ordering::Relaxed);
        self.expired.fetch_add(batch.expired, Ordering::Relaxed);
        Ok(())
    }

    /// Drops every hint waiting for `target`, a node that left the ring
    /// (the nodes that took its ranges got those writes as pending copies
    /// or from its hand-over). Returns how many were dropped. Reads (to
    /// count them) one batch at a time.
    pub fn discard_target(&self, target: NodeId) -> Result<u64> {
        let round = self.start_round(target);
        let mut dropped = 0u64;
        // At time 0 nothing is past the window: every hint is counted here.
        while let Some(batch) = self.next_batch(&round, 0)? {
            self.remove_segments(&batch)?;
            let n = batch.hints.len() as u64 + batch.expired;
            self.discarded.fetch_add(n, Ordering::Relaxed);
            dropped += n;
        }
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
            t.newest_ms.retain(|id, _| t.segments.contains(id));
            if t.dir.exists() {
                sync_dir(&t.dir)?;
            }
        }
        Ok(())
    }

    /// The hints waiting, per target with any, in target order. The
    /// segment files are measured on disk (one that cannot be is counted
    /// as empty), outside the lock that storing hints takes.
    pub fn pending(&self) -> Vec<PendingHints> {
        let listed: Vec<(NodeId, Vec<PathBuf>)> = self
            .targets
            .lock()
            .iter()
            .filter(|(_, t)| !t.segments.is_empty())
            .map(|(n, t)| {
                let paths = t.segments.iter().map(|id| segment_path(&t.dir, *id));
                (*n, paths.collect())
            })
            .collect();
        listed
            .into_iter()
            .map(|(target, paths)| PendingHints {
                target,
                segments: paths.len(),
                bytes: paths
                    .iter()
                    .filter_map(|p| fs::metadata(p).ok())
                    .map(|m| m.len())
                    .sum(),
            })
            .collect()
    }

    /// How long a hint is kept before it is dropped as expired.
    pub fn window(&self) -> Duration {
        self.opts.window
    }

    /// Counters since open.
    pub fn stats(&self) -> HintStats {
        HintStats {
            stored: self.stored.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            discarded: self.discarded.load(Ordering::Relaxed),
            corrupt: self.corrupt.load(Ordering::Relaxed),
            expiry_scans: self.expiry_scans.load(Ordering::Relaxed),
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

    /// Options with 64-byte segments (a few hints each), unsynced.
    fn tiny_segments(window: Duration, replay_batch_bytes: u64) -> HintOptions {
        HintOptions {
            window,
            sync: false,
            segment_bytes: 64,
            replay_batch_bytes,
        }
    }

    fn hint(ms: u64, tag: u8) -> Hint {
        Hint {
            created_ms: ms,
            payload: vec![tag; (tag as usize % 7) + 1],
        }
    }

    const WINDOW_MS: u64 = 100;

    /// A hint telling its sequence number (the first 4 payload bytes).
    fn numbered(ms: u64, seq: u32, tag: u8) -> Hint {
        let mut payload = seq.to_le_bytes().to_vec();
        payload.extend(std::iter::repeat_n(tag, tag as usize % 7));
        Hint {
            created_ms: ms,
            payload,
        }
    }

    fn seq_of(h: &Hint) -> u32 {
        u32::from_le_bytes([h.payload[0], h.payload[1], h.payload[2], h.payload[3]])
    }

    fn live(hints: &[Hint], now: u64) -> Vec<Hint> {
        hints
            .iter()
            .filter(|h| h.created_ms + WINDOW_MS >= now)
            .cloned()
            .collect()
    }

    /// Checks `batch` against the hints the model has waiting for its
    /// target: it covers a prefix of them (a non-empty one when any wait),
    /// holds that prefix's hints inside the window, in order, and counts
    /// the others as expired; it stays within the budget unless it is a
    /// single segment. Returns the prefix's length.
    fn check_batch(
        batch: &HintBatch,
        waiting: &[Hint],
        now: u64,
        budget: u64,
    ) -> std::result::Result<usize, TestCaseError> {
        let n = batch.hints.len() + batch.expired as usize;
        prop_assert!(n <= waiting.len(), "{n} > {}", waiting.len());
        prop_assert!(waiting.is_empty() || n > 0, "a batch without progress");
        prop_assert_eq!(&batch.hints, &live(&waiting[..n], now));
        prop_assert!(
            batch.bytes <= budget || batch.segments.len() == 1,
            "{} bytes in {} segments over a budget of {budget}",
            batch.bytes,
            batch.segments.len()
        );
        Ok(n)
    }

    #[derive(Debug, Clone)]
    enum Op {
        Store(u64, u8),
        /// The oldest batch is delivered and acknowledged.
        DeliverBatch(u64),
        /// A whole replay round, with this many hints stored after its
        /// first batch (they wait for the next round).
        Round(u64, u8),
        /// The oldest batch is read but its delivery fails.
        TakeAndFail(u64),
        Expire(u64),
        Discard(u64),
        Wait(u64),
        Reopen,
    }

    proptest! {
        /// Against a model (a queue of waiting hints per target), over many
        /// small segments and a range of batch budgets: every batch is the
        /// next part of its target's queue, within the budget; every
        /// stored hint is delivered exactly once, in order, unless it
        /// expired or its target was discarded; a round ends with the
        /// hints stored before it; nothing survives an acknowledged
        /// delivery; reopening loses nothing.
        #[test]
        fn hints_are_delivered_once_in_order_unless_expired(
            budget in prop_oneof![Just(1u64), Just(100), Just(250), Just(u64::MAX)],
            ops in proptest::collection::vec(prop_oneof![
                6 => (0u64..3, any::<u8>()).prop_map(|(t, tag)| Op::Store(t, tag)),
                2 => (0u64..3).prop_map(Op::DeliverBatch),
                1 => (0u64..3, 0u8..4).prop_map(|(t, n)| Op::Round(t, n)),
                1 => (0u64..3).prop_map(Op::TakeAndFail),
                1 => (0u64..3).prop_map(Op::Expire),
                1 => (0u64..3).prop_map(Op::Discard),
                1 => (0u64..150).prop_map(Op::Wait),
                1 => Just(Op::Reopen),
            ], 1..80),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let opts = tiny_segments(Duration::from_millis(WINDOW_MS), budget);
            let mut store = HintStore::open(dir.path(), opts.clone()).unwrap();
            let mut model: BTreeMap<u64, Vec<Hint>> = BTreeMap::new();
            // Sequence numbers delivered, and dropped (expired or discarded).
            let mut delivered: Vec<u32> = Vec::new();
            let mut dropped: Vec<u32> = Vec::new();
            let mut seq = 0u32;
            let mut now = 1_000u64;
            for op in ops {
                now += 10;
                match op {
                    Op::Store(t, tag) => {
                        let h = numbered(now, seq, tag);
                        seq += 1;
                        store.store(NodeId(t), &h).unwrap();
                        model.entry(t).or_default().push(h);
                    }
                    Op::DeliverBatch(t) => {
                        let batch = store.take_batch(NodeId(t), now).unwrap();
                        let waiting = model.entry(t).or_default();
                        let n = check_batch(&batch, waiting, now, budget)?;
                        let taken: Vec<Hint> = waiting.drain(..n).collect();
                        delivered.extend(batch.hints.iter().map(seq_of));
                        dropped.extend(taken.iter().filter(|h| h.created_ms + WINDOW_MS < now).map(seq_of));
                        store.ack(batch).unwrap();
                    }
                    Op::Round(t, extra) => {
                        let round = store.start_round(NodeId(t));
                        let at_start = model.get(&t).map_or(0, Vec::len);
                        let mut taken_in_round = 0;
                        let mut first = true;
                        while let Some(batch) = store.next_batch(&round, now).unwrap() {
                            let waiting = model.entry(t).or_default();
                            let n = check_batch(&batch, waiting, now, budget)?;
                            prop_assert!(n > 0, "a round's batch without progress");
                            let taken: Vec<Hint> = waiting.drain(..n).collect();
                            delivered.extend(batch.hints.iter().map(seq_of));
                            dropped.extend(taken.iter().filter(|h| h.created_ms + WINDOW_MS < now).map(seq_of));
                            store.ack(batch).unwrap();
                            taken_in_round += n;
                            if first {
                                first = false;
                                for i in 0..extra {
                                    let h = numbered(now, seq, i);
                                    seq += 1;
                                    store.store(NodeId(t), &h).unwrap();
                                    model.entry(t).or_default().push(h);
                                }
                            }
                        }
                        prop_assert_eq!(taken_in_round, at_start, "the round covers what waited when it began");
                    }
                    Op::TakeAndFail(t) => {
                        // Delivery failed: nothing acknowledged, all still waiting.
                        let batch = store.take_batch(NodeId(t), now).unwrap();
                        check_batch(&batch, model.get(&t).map_or(&[][..], Vec::as_slice), now, budget)?;
                    }
                    Op::Expire(t) => {
                        let before = store.stats().expired;
                        let n = store.expire(NodeId(t), now).unwrap() as usize;
                        prop_assert_eq!(store.stats().expired - before, n as u64);
                        // Hints are stored in time order, so the segments
                        // wholly past the window are the oldest ones.
                        let waiting = model.entry(t).or_default();
                        prop_assert!(n <= waiting.len());
                        prop_assert!(live(&waiting[..n], now).is_empty(), "a live hint expired");
                        dropped.extend(waiting.drain(..n).map(|h| seq_of(&h)));
                    }
                    Op::Discard(t) => {
                        // The target left: all its hints go, expired or not.
                        let waiting = model.remove(&t).unwrap_or_default();
                        let before = store.stats().discarded;
                        prop_assert_eq!(store.discard_target(NodeId(t)).unwrap(), waiting.len() as u64);
                        prop_assert_eq!(store.stats().discarded - before, waiting.len() as u64);
                        prop_assert!(store.take_batch(NodeId(t), now).unwrap().segments.is_empty());
                        dropped.extend(waiting.iter().map(seq_of));
                    }
                    Op::Wait(ms) => now += ms,
                    Op::Reopen => {
                        drop(store);
                        store = HintStore::open(dir.path(), opts.clone()).unwrap();
                    }
                }
            }
            let waiting: Vec<NodeId> = model.iter().filter(|(_, v)| !v.is_empty()).map(|(t, _)| NodeId(*t)).collect();
            prop_assert_eq!(store.targets(), waiting);
            // A last round per target delivers the rest.
            for (t, queue) in &mut model {
                let round = store.start_round(NodeId(*t));
                while let Some(batch) = store.next_batch(&round, now).unwrap() {
                    let n = check_batch(&batch, queue, now, budget)?;
                    let taken: Vec<Hint> = queue.drain(..n).collect();
                    delivered.extend(batch.hints.iter().map(seq_of));
                    dropped.extend(taken.iter().filter(|h| h.created_ms + WINDOW_MS < now).map(seq_of));
                    store.ack(batch).unwrap();
                }
                prop_assert!(queue.is_empty());
            }
            prop_assert!(store.targets().is_empty());
            // Every stored hint was delivered or dropped, exactly once.
            let mut all: Vec<u32> = delivered.iter().chain(&dropped).copied().collect();
            all.sort_unstable();
            prop_assert_eq!(all, (0..seq).collect::<Vec<u32>>());
        }
    }

    /// The sizes of `target`'s segment files, oldest first.
    fn segment_sizes(store: &HintStore, target: NodeId) -> Vec<(u64, u64)> {
        let targets = store.targets.lock();
        let t = &targets[&target];
        t.segments
            .iter()
            .map(|id| (*id, fs::metadata(segment_path(&t.dir, *id)).unwrap().len()))
            .collect()
    }

    #[test]
    fn a_batch_holds_at_most_its_budget_or_one_whole_segment() {
        let dir = tempfile::tempdir().unwrap();
        let target = NodeId(3);
        for budget in [1u64, 150, 400] {
            let opts = tiny_segments(Duration::from_secs(60), budget);
            let store = HintStore::open(&dir.path().join(budget.to_string()), opts).unwrap();
            let stored: Vec<Hint> = (0..60u8).map(|i| hint(1_000, i)).collect();
            for h in &stored {
                store.store(target, h).unwrap();
            }
            let sizes = segment_sizes(&store, target);
            assert!(sizes.len() >= 10, "{sizes:?}");
            let largest = sizes.iter().map(|(_, len)| *len).max().unwrap();
            assert!(largest < 150, "{sizes:?}");
            let mut delivered = Vec::new();
            let mut batches = 0;
            loop {
                let batch = store.take_batch(target, 1_000).unwrap();
                if batch.segments.is_empty() {
                    break;
                }
                // The batch is the oldest segments, whole.
                let oldest = segment_sizes(&store, target);
                let expected = &oldest[..batch.segments.len()];
                assert_eq!(
                    batch.segments,
                    expected.iter().map(|(id, _)| *id).collect::<Vec<_>>()
                );
                assert_eq!(
                    batch.bytes,
                    expected.iter().map(|(_, len)| len).sum::<u64>()
                );
                assert!(
                    batch.bytes <= budget || batch.segments.len() == 1,
                    "budget {budget}: {} bytes in {} segments",
                    batch.bytes,
                    batch.segments.len()
                );
                assert!(batch.bytes <= budget + largest);
                // And as many as fit.
                if let Some((_, next)) = oldest.get(batch.segments.len()) {
                    assert!(batch.bytes + next > budget, "budget {budget}: room left");
                }
                batches += 1;
                delivered.extend(batch.hints.iter().cloned());
                store.ack(batch).unwrap();
            }
            assert_eq!(delivered, stored, "budget {budget}");
            if budget == 1 {
                assert_eq!(batches, sizes.len(), "one segment per batch");
            } else {
                assert!(
                    batches > 1 && batches < sizes.len(),
                    "budget {budget}: {batches} batches"
                );
            }
        }
    }

    #[test]
    fn pending_shows_each_target_with_its_segments_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            HintStore::open(dir.path(), tiny_segments(Duration::from_secs(60), 150)).unwrap();
        assert!(store.pending().is_empty());
        for i in 0..30u8 {
            store.store(NodeId(9), &hint(1_000, i)).unwrap();
        }
        store.store(NodeId(4), &hint(1_000, 0)).unwrap();
        let on_disk = |t: u64| {
            let sizes = segment_sizes(&store, NodeId(t));
            (sizes.len(), sizes.iter().map(|(_, b)| b).sum::<u64>())
        };
        let pending = store.pending();
        let shown: Vec<(u64, usize, u64)> = pending
            .iter()
            .map(|p| (p.target.0, p.segments, p.bytes))
            .collect();
        let (nine, four) = (on_disk(9), on_disk(4));
        assert_eq!(shown, vec![(4, four.0, four.1), (9, nine.0, nine.1)]);
        assert!(nine.0 > 1 && nine.1 > four.1, "{shown:?}");
        // Delivered and acknowledged: the target is no longer pending.
        let batch = store.take_batch(NodeId(4), 1_000).unwrap();
        store.ack(batch).unwrap();
        let left: Vec<u64> = store.pending().iter().map(|p| p.target.0).collect();
        assert_eq!(left, vec![9]);
        assert_eq!(store.window(), Duration::from_secs(60));
    }

    #[test]
    fn a_round_ends_with_the_segments_it_began_with() {
        let dir = tempfile::tempdir().unwrap();
        let opts = tiny_segments(Duration::from_secs(60), 100);
        let store = HintStore::open(dir.path(), opts).unwrap();
        let target = NodeId(2);
        let old: Vec<Hint> = (0..20u8).map(|i| hint(1_000, i)).collect();
        for h in &old {
            store.store(target, h).unwrap();
        }
        let round = store.start_round(target);
        assert_eq!(round.target(), target);
        let mut delivered = Vec::new();
        let mut tag = 20u8;
        let mut batches = 0;
        while let Some(batch) = store.next_batch(&round, 2_000).unwrap() {
            delivered.extend(batch.hints.iter().cloned());
            store.ack(batch).unwrap();
            // Hints keep coming while the round runs (a round chasing them
            // would not end: the bound makes it fail instead).
            batches += 1;
            assert!(batches <= 20, "the round does not end");
            for _ in 0..5 {
                store.store(target, &hint(2_000, tag)).unwrap();
                tag += 1;
            }
        }
        assert!(batches > 1, "{batches}");
        assert_eq!(
            delivered, old,
            "the round took only what waited when it began"
        );
        let stored_meanwhile = store.stats().stored - 20;
        assert_eq!(stored_meanwhile, 5 * batches);
        // They wait for the next round.
        let next = store.start_round(target);
        let mut later = 0;
        while let Some(batch) = store.next_batch(&next, 2_000).unwrap() {
            later += batch.hints.len() as u64;
            store.ack(batch).unwrap();
        }
        assert_eq!(later, stored_meanwhile);
        assert!(store.targets().is_empty());
    }

    #[test]
    fn a_failed_batch_and_the_later_ones_stay_and_the_acknowledged_ones_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let opts = HintOptions {
            sync: true,
            ..tiny_segments(Duration::from_secs(60), 150)
        };
        let target = NodeId(7);
        let stored: Vec<Hint> = (0..40u8).map(|i| hint(1_000, i)).collect();
        let (acked, delivered, kept) = {
            let store = HintStore::open(dir.path(), opts.clone()).unwrap();
            for h in &stored {
                store.store(target, h).unwrap();
            }
            let round = store.start_round(target);
            let mut acked = Vec::new();
            let mut delivered = 0;
            for _ in 0..2 {
                let batch = store.next_batch(&round, 1_000).unwrap().unwrap();
                delivered += batch.hints.len();
                acked.extend(batch.segments.iter().copied());
                store.ack(batch).unwrap();
            }
            // The third batch fails: the replay stops without acknowledging it.
            let failed = store.next_batch(&round, 1_000).unwrap().unwrap();
            assert_eq!(failed.hints[0], stored[delivered]);
            let kept: Vec<u64> = segment_sizes(&store, target)
                .iter()
                .map(|(id, _)| *id)
                .collect();
            assert!(kept.starts_with(&failed.segments), "{kept:?}");
            assert_eq!(store.stats().delivered, delivered as u64);
            (acked, delivered, kept)
        };
        let target_dir = dir.path().join("node-0000000000000007");
        for id in &acked {
            assert!(
                !segment_path(&target_dir, *id).exists(),
                "acknowledged segment {id} left"
            );
        }
        for id in &kept {
            assert!(segment_path(&target_dir, *id).exists(), "segment {id} lost");
        }
        // A later replay (here after a restart) sends only the rest, from
        // the failed batch on.
        let store = HintStore::open(dir.path(), opts).unwrap();
        let round = store.start_round(target);
        let mut rest = Vec::new();
        while let Some(batch) = store.next_batch(&round, 1_000).unwrap() {
            rest.extend(batch.hints.iter().cloned());
            store.ack(batch).unwrap();
        }
        assert_eq!(rest, stored[delivered..]);
        assert!(store.targets().is_empty());
    }

    #[test]
    fn hints_of_a_node_that_stays_down_expire_by_whole_segments() {
        let dir = tempfile::tempdir().unwrap();
        let opts = tiny_segments(Duration::from_millis(100), 1 << 20);
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
        // Nothing is past the window yet, and the store knows it without
        // reading a segment, however often it is asked.
        for _ in 0..5 {
            assert_eq!(store.expire(target, 1_050).unwrap(), 0);
        }
        assert_eq!(store.stats().expiry_scans, 0);
        // At 5,050 the old ones are: their segments go, counted; a segment
        // holding a new hint stays.
        let only_old = store.targets.lock()[&target]
            .newest_ms
            .values()
            .filter(|&&ms| ms == 1_000)
            .count() as u64;
        assert!(only_old >= 2, "{only_old}");
        let dropped = store.expire(target, 5_050).unwrap();
        assert!((1..=12).contains(&dropped), "{dropped}");
        // Only the segments holding nothing but old hints were read.
        assert_eq!(store.stats().expiry_scans, only_old);
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

    /// After a restart the store does not know its segments' newest hints:
    /// the first sweep reads each once, later sweeps read none until one
    /// may have expired.
    #[test]
    fn after_a_reopen_each_segment_is_read_once_until_it_may_expire() {
        let dir = tempfile::tempdir().unwrap();
        let opts = tiny_segments(Duration::from_millis(100), 1 << 20);
        let target = NodeId(4);
        {
            let store = HintStore::open(dir.path(), opts.clone()).unwrap();
            for i in 0..12u8 {
                store.store(target, &hint(1_000 + u64::from(i), i)).unwrap();
            }
        }
        let store = HintStore::open(dir.path(), opts).unwrap();
        let segments = store.targets.lock()[&target].segments.len() as u64;
        assert!(segments >= 3);
        assert_eq!(store.expire(target, 1_050).unwrap(), 0);
        assert_eq!(store.stats().expiry_scans, segments, "each read once");
        for _ in 0..3 {
            assert_eq!(store.expire(target, 1_080).unwrap(), 0);
        }
        assert_eq!(store.stats().expiry_scans, segments, "and not again");
        assert_eq!(store.expire(target, 2_000).unwrap(), 12);
        assert_eq!(store.stats().expiry_scans, 2 * segments);
        assert!(store.targets().is_empty());
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
