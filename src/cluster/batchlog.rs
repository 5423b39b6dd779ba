//! The batch log: logged batches held durably until they are applied.
//!
//! Before a coordinator applies a logged batch that spans several
//! partitions, it stores the whole batch here on one or two other nodes
//! (see `crate::coordinator` for who and when). Once every partition is
//! applied, the coordinator removes the entry everywhere. If the
//! coordinator dies half way, the entry stays, and the node holding it
//! replays it after the replay delay. This module is only the durable
//! store: what an entry means (its payload) is the coordinator's business.
//!
//! Layout: segment files `batchlog-<id>.log` of framed records
//! (`storage::framing`: magic, length, CRC32C over length and payload).
//! A record either stores an entry or removes one. The removal of an entry
//! is appended to the segment that holds the entry, so every segment is
//! self-contained: a segment whose entries are all removed (and that no
//! longer receives new entries) is deleted whole, and nothing outside it
//! can bring its entries back.
//!
//! Durability: storing fsyncs before it returns (the coordinator counts
//! the acknowledgement); removing does not (a lost removal only means the
//! batch is replayed once more, which is harmless).
//!
//! Damage: on open, a record cut short at the end of a segment (a crash in
//! the middle of an append) is a torn tail: the segment is truncated there
//! and the problem reported. A damaged record with good records after it is
//! reported and skipped; the reader resynchronizes at the next valid
//! record, so the other entries survive. Every problem is a typed
//! [`BatchLogError`] in [`BatchLog::recovery_problems`].

use crate::storage::framing::{self, Frame, RecordReader};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Largest payload an entry may carry (the framing allows 64 MiB).
pub const MAX_ENTRY_BYTES: usize = 32 << 20;

/// Why the batch log failed, or what was wrong with its files on open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchLogError {
    /// An operating-system error on a named file or directory.
    #[error("batch log I/O error on {path}: {reason}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        reason: String,
    },
    /// A damaged record (checksum, magic, length, or a payload that does
    /// not decode); the records around it were recovered.
    #[error("damaged batch-log record in {path} at offset {offset}: {reason}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the damaged record.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// An incomplete record at the end of a segment: a crash in the middle
    /// of an append. The segment was truncated at `offset`.
    #[error("torn batch-log tail in {path} at offset {offset} (truncated): {reason}")]
    TornTail {
        /// The segment file.
        path: PathBuf,
        /// Where the incomplete record started.
        offset: u64,
        /// What was found.
        reason: String,
    },
    /// An entry too large to store.
    #[error("batch-log entry of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit ([`MAX_ENTRY_BYTES`]).
        max: usize,
    },
    /// A record could not be encoded.
    #[error("cannot encode a batch-log record: {0}")]
    Codec(String),
}

fn io_err(path: &Path, e: std::io::Error) -> BatchLogError {
    BatchLogError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Settings of a [`BatchLog`].
#[derive(Debug, Clone)]
pub struct BatchLogOptions {
    /// fsync every stored entry before `store` returns (off only in tests
    /// that do not crash).
    pub sync: bool,
    /// New entries go to a fresh segment once the current one is this big.
    pub segment_bytes: u64,
}

impl Default for BatchLogOptions {
    fn default() -> Self {
        BatchLogOptions {
            sync: true,
            segment_bytes: 8 << 20,
        }
    }
}

/// One logged batch as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchEntry {
    /// The batch id (a timeuuid chosen by the coordinator).
    pub id: u128,
    /// Wall-clock millisecond at which this node stored it (by its own
    /// clock, so the replay delay does not depend on other nodes' clocks).
    pub written_ms: u64,
    /// The batch, encoded by the coordinator.
    pub payload: Vec<u8>,
}

/// What one record on disk says.
#[derive(Debug, Serialize, Deserialize)]
enum Record {
    Store(BatchEntry),
    Remove(u128),
}

/// Counters of a batch log since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchLogStats {
    /// Entries stored.
    pub stored: u64,
    /// Entries removed.
    pub removed: u64,
    /// Entries held now.
    pub pending: u64,
    /// Segment files on disk now.
    pub segments: u64,
}

struct Segment {
    path: PathBuf,
    /// Bytes in the file.
    len: u64,
    /// Entries stored in it and not removed.
    live: usize,
    /// Open for appending (opened on first append after open).
    file: Option<File>,
}

struct State {
    entries: BTreeMap<u128, (u64, BatchEntry)>,
    segments: BTreeMap<u64, Segment>,
    /// The segment receiving new entries.
    active: Option<u64>,
    next_segment: u64,
}

/// The durable batch log of one node.
pub struct BatchLog {
    dir: PathBuf,
    opts: BatchLogOptions,
    state: Mutex<State>,
    problems: Vec<BatchLogError>,
    stored: AtomicU64,
    removed: AtomicU64,
}

impl std::fmt::Debug for BatchLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchLog")
            .field("dir", &self.dir)
            .field("pending", &self.len())
            .finish()
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("batchlog-{id:020}.log"))
}

fn codec() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ 64 << 20 }>()
}

fn sync_dir(dir: &Path) -> Result<(), BatchLogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))
}

impl BatchLog {
    /// Opens (creating if needed) the batch log in `dir`, recovering every
    /// entry that was stored and not removed. Damage found on the way is
    /// reported in [`BatchLog::recovery_problems`], not as a failure: only
    /// I/O errors fail the open.
    pub fn open(dir: &Path, opts: BatchLogOptions) -> Result<BatchLog, BatchLogError> {
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let mut ids = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
            let entry = entry.map_err(|e| io_err(dir, e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(id) = name
                .strip_prefix("batchlog-")
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let mut problems = Vec::new();
        let mut entries: BTreeMap<u128, (u64, BatchEntry)> = BTreeMap::new();
        let mut segments = BTreeMap::new();
        for id in &ids {
            let path = segment_path(dir, *id);
            let data = fs::read(&path).map_err(|e| io_err(&path, e))?;
            let mut len = data.len() as u64;
            for frame in RecordReader::new(&path, &data) {
                match frame {
                    Frame::Record { offset, payload } => {
                        match bincode::serde::decode_from_slice::<Record, _>(payload, codec()) {
                            Ok((Record::Store(e), used)) if used == payload.len() => {
                                entries.insert(e.id, (*id, e));
                            }
                            Ok((Record::Remove(batch), used)) if used == payload.len() => {
                                entries.remove(&batch);
                            }
                            Ok(_) => problems.push(BatchLogError::Corrupt {
                                path: path.clone(),
                                offset,
                                reason: "trailing bytes after the record".into(),
                            }),
                            Err(e) => problems.push(BatchLogError::Corrupt {
                                path: path.clone(),
                                offset,
                                reason: format!("undecodable record: {e}"),
                            }),
                        }
                    }
                    Frame::Corrupt { offset, error, .. } => problems.push(BatchLogError::Corrupt {
                        path: path.clone(),
                        offset,
                        reason: error.to_string(),
                    }),
                    Frame::TornTail { offset, error } => {
                        // Cut it off, so later appends to this segment
                        // follow good records.
                        let file = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(|e| io_err(&path, e))?;
                        file.set_len(offset).map_err(|e| io_err(&path, e))?;
                        file.sync_all().map_err(|e| io_err(&path, e))?;
                        len = offset;
                        problems.push(BatchLogError::TornTail {
                            path: path.clone(),
                            offset,
                            reason: error.to_string(),
                        });
                    }
                }
            }
            segments.insert(
                *id,
                Segment {
                    path,
                    len,
                    live: 0,
                    file: None,
                },
            );
        }
        for (seg, _) in entries.values() {
            if let Some(s) = segments.get_mut(seg) {
                s.live += 1;
            }
        }
        // Segments with nothing left in them go now.
        let empty: Vec<u64> = segments
            .iter()
            .filter(|(_, s)| s.live == 0)
            .map(|(id, _)| *id)
            .collect();
        for id in &empty {
            if let Some(s) = segments.remove(id) {
                remove_file(&s.path)?;
            }
        }
        if !empty.is_empty() {
            sync_dir(dir)?;
        }
        for p in &problems {
            tracing::warn!(problem = %p, "batch log damage found on open");
        }
        let next_segment = ids.last().map_or(0, |last| last + 1);
        Ok(BatchLog {
            dir: dir.to_path_buf(),
            opts,
            state: Mutex::new(State {
                entries,
                segments,
                active: None,
                next_segment,
            }),
            problems,
            stored: AtomicU64::new(0),
            removed: AtomicU64::new(0),
        })
    }

    /// Damage found when the log was opened (each names the file and
    /// offset; the entries around it were kept).
    pub fn recovery_problems(&self) -> &[BatchLogError] {
        &self.problems
    }

    /// Stores an entry durably (fsynced when the options say so). Storing
    /// an id that is already held does nothing.
    pub fn store(&self, entry: &BatchEntry) -> Result<(), BatchLogError> {
        if entry.payload.len() > MAX_ENTRY_BYTES {
            return Err(BatchLogError::TooLarge {
                len: entry.payload.len(),
                max: MAX_ENTRY_BYTES,
            });
        }
        let payload = bincode::serde::encode_to_vec(Record::Store(entry.clone()), codec())
            .map_err(|e| BatchLogError::Codec(e.to_string()))?;
        let record =
            framing::encode_record(&payload).map_err(|e| BatchLogError::Codec(e.to_string()))?;
        let mut guard = self.state.lock();
        let state = &mut *guard;
        if state.entries.contains_key(&entry.id) {
            return Ok(());
        }
        let roll = state
            .active
            .and_then(|id| state.segments.get(&id))
            .is_none_or(|s| s.len >= self.opts.segment_bytes);
        if roll {
            if let Some(old) = state.active.take() {
                if state.segments.get(&old).is_some_and(|s| s.live == 0) {
                    if let Some(s) = state.segments.remove(&old) {
                        remove_file(&s.path)?;
                    }
                }
            }
            let id = state.next_segment;
            let path = segment_path(&self.dir, id);
            let file = OpenOptions::new()
                .append(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| io_err(&path, e))?;
            sync_dir(&self.dir)?;
            state.next_segment = id + 1;
            state.segments.insert(
                id,
                Segment {
                    path,
                    len: 0,
                    live: 0,
                    file: Some(file),
                },
            );
            state.active = Some(id);
        }
        let Some(seg_id) = state.active else {
            return Err(BatchLogError::Io {
                path: self.dir.clone(),
                reason: "no active segment".into(),
            });
        };
        let sync = self.opts.sync;
        let Some(seg) = state.segments.get_mut(&seg_id) else {
            return Err(BatchLogError::Io {
                path: self.dir.clone(),
                reason: "active segment missing".into(),
            });
        };
        append(seg, &record, sync)?;
        seg.live += 1;
        state.entries.insert(entry.id, (seg_id, entry.clone()));
        self.stored.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Removes an entry (not fsynced: a lost removal only replays the
    /// batch again). Returns whether it was held.
    pub fn remove(&self, id: u128) -> Result<bool, BatchLogError> {
        let payload = bincode::serde::encode_to_vec(Record::Remove(id), codec())
            .map_err(|e| BatchLogError::Codec(e.to_string()))?;
        let record =
            framing::encode_record(&payload).map_err(|e| BatchLogError::Codec(e.to_string()))?;
        let mut guard = self.state.lock();
        let state = &mut *guard;
        let Some((seg_id, _)) = state.entries.remove(&id) else {
            return Ok(false);
        };
        let Some(seg) = state.segments.get_mut(&seg_id) else {
            return Ok(true);
        };
        seg.live = seg.live.saturating_sub(1);
        if seg.live == 0 && state.active != Some(seg_id) {
            // Nothing left in it: the whole file goes (no removal record
            // needed).
            if let Some(s) = state.segments.remove(&seg_id) {
                remove_file(&s.path)?;
            }
        } else {
            append(seg, &record, false)?;
        }
        self.removed.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// The entry with this id, if held.
    pub fn get(&self, id: u128) -> Option<BatchEntry> {
        self.state.lock().entries.get(&id).map(|(_, e)| e.clone())
    }

    /// Entries stored at least `delay_ms` before `now_ms`, oldest first.
    pub fn due(&self, now_ms: u64, delay_ms: u64) -> Vec<BatchEntry> {
        let state = self.state.lock();
        let mut due: Vec<BatchEntry> = state
            .entries
            .values()
            .filter(|(_, e)| e.written_ms.saturating_add(delay_ms) <= now_ms)
            .map(|(_, e)| e.clone())
            .collect();
        due.sort_by_key(|e| (e.written_ms, e.id));
        due
    }

    /// Ids of every entry held.
    pub fn ids(&self) -> Vec<u128> {
        self.state.lock().entries.keys().copied().collect()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.state.lock().entries.len()
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counters since open.
    pub fn stats(&self) -> BatchLogStats {
        let state = self.state.lock();
        BatchLogStats {
            stored: self.stored.load(Ordering::Relaxed),
            removed: self.removed.load(Ordering::Relaxed),
            pending: state.entries.len() as u64,
            segments: state.segments.len() as u64,
        }
    }
}

fn append(seg: &mut Segment, record: &[u8], sync: bool) -> Result<(), BatchLogError> {
    if seg.file.is_none() {
        let file = OpenOptions::new()
            .append(true)
            .open(&seg.path)
            .map_err(|e| io_err(&seg.path, e))?;
        seg.file = Some(file);
    }
    let Some(file) = seg.file.as_mut() else {
        return Err(BatchLogError::Io {
            path: seg.path.clone(),
            reason: "segment not open".into(),
        });
    };
    file.write_all(record).map_err(|e| io_err(&seg.path, e))?;
    if sync {
        file.sync_data().map_err(|e| io_err(&seg.path, e))?;
    }
    seg.len += record.len() as u64;
    Ok(())
}

fn remove_file(path: &Path) -> Result<(), BatchLogError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn entry(id: u128, ms: u64) -> BatchEntry {
        BatchEntry {
            id,
            written_ms: ms,
            payload: vec![id as u8; (id % 13) as usize + 1],
        }
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        files.sort();
        files
    }

    #[derive(Debug, Clone)]
    enum Op {
        Store(u128),
        Remove(u128),
        Reopen,
    }

    proptest! {
        /// Against a model (the set of ids stored and not removed): the log
        /// holds exactly the model's entries, with their payloads, across
        /// any number of reopens; segment files whose entries are all gone
        /// are deleted; and removing everything leaves at most the one
        /// segment still receiving entries (none after a reopen).
        #[test]
        fn holds_exactly_what_was_stored_and_not_removed(
            ops in proptest::collection::vec(prop_oneof![
                4 => (0u128..24).prop_map(Op::Store),
                3 => (0u128..24).prop_map(Op::Remove),
                1 => Just(Op::Reopen),
            ], 1..60),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let opts = BatchLogOptions { sync: false, segment_bytes: 120 };
            let mut log = BatchLog::open(dir.path(), opts.clone()).unwrap();
            let mut model: BTreeMap<u128, BatchEntry> = BTreeMap::new();
            let mut now = 1_000;
            for op in ops {
                now += 1;
                match op {
                    Op::Store(id) => {
                        let e = entry(id, now);
                        log.store(&e).unwrap();
                        model.entry(id).or_insert(e);
                    }
                    Op::Remove(id) => {
                        prop_assert_eq!(log.remove(id).unwrap(), model.remove(&id).is_some());
                    }
                    Op::Reopen => {
                        drop(log);
                        log = BatchLog::open(dir.path(), opts.clone()).unwrap();
                        prop_assert!(log.recovery_problems().is_empty());
                        // Only segments holding live entries survive a reopen.
                        let segs: BTreeSet<PathBuf> = segment_files(dir.path()).into_iter().collect();
                        prop_assert!(segs.len() <= model.len());
                        prop_assert_eq!(log.stats().segments as usize, segs.len());
                    }
                }
                prop_assert_eq!(log.ids(), model.keys().copied().collect::<Vec<_>>());
                for (id, e) in &model {
                    prop_assert_eq!(log.get(*id), Some(e.clone()));
                }
            }
            for id in model.keys() {
                prop_assert!(log.remove(*id).unwrap());
            }
            prop_assert!(segment_files(dir.path()).len() <= 1);
            drop(log);
            let log = BatchLog::open(dir.path(), opts).unwrap();
            prop_assert!(log.is_empty());
            prop_assert!(segment_files(dir.path()).is_empty());
        }
    }

    #[test]
    fn entries_survive_a_reopen_and_become_due_after_the_delay() {
        let dir = tempfile::tempdir().unwrap();
        let log = BatchLog::open(dir.path(), BatchLogOptions::default()).unwrap();
        log.store(&entry(1, 1_000)).unwrap();
        log.store(&entry(2, 1_500)).unwrap();
        log.store(&entry(3, 2_000)).unwrap();
        assert!(log.remove(2).unwrap());
        assert!(!log.remove(2).unwrap(), "a second removal finds nothing");
        drop(log);
        let log = BatchLog::open(dir.path(), BatchLogOptions::default()).unwrap();
        assert!(log.recovery_problems().is_empty());
        assert_eq!(log.ids(), vec![1, 3]);
        assert_eq!(log.get(3), Some(entry(3, 2_000)));
        assert_eq!(log.due(1_999, 500), vec![entry(1, 1_000)]);
        assert_eq!(log.due(2_500, 500), vec![entry(1, 1_000), entry(3, 2_000)]);
        assert!(log.due(1_400, 500).is_empty());
    }

    #[test]
    fn a_torn_tail_is_reported_and_truncated_and_the_good_entries_survive() {
        let dir = tempfile::tempdir().unwrap();
        let log = BatchLog::open(dir.path(), BatchLogOptions::default()).unwrap();
        for id in 1..=3 {
            log.store(&entry(id, 100)).unwrap();
        }
        drop(log);
        let files = segment_files(dir.path());
        assert_eq!(files.len(), 1);
        let bytes = fs::read(&files[0]).unwrap();
        // Cut the last record in the middle, as a crash during its append.
        fs::write(&files[0], &bytes[..bytes.len() - 3]).unwrap();
        let log = BatchLog::open(dir.path(), BatchLogOptions::default()).unwrap();
        assert_eq!(log.ids(), vec![1, 2]);
        match log.recovery_problems() {
            [BatchLogError::TornTail { path, offset, .. }] => {
                assert_eq!(path, &files[0]);
                assert!(*offset > 0 && *offset < bytes.len() as u64);
            }
            other => panic!("expected one torn tail, got {other:?}"),
        }
        // The log goes on cleanly: what is stored now is read back, with
        // no damage reported.
        log.store(&entry(4, 100)).unwrap();
        assert!(log.remove(1).unwrap());
        drop(log);
        let log = BatchLog::open(dir.path(), BatchLogOptions::default()).unwrap();
        assert!(
            log.recovery_problems().is_empty(),
            "{:?}",
            log.recovery_problems()
        );
        assert_eq!(log.ids(), vec![2, 4]);
    }

    #[test]
    fn a_damaged_record_is_reported_and_the_records_after_it_survive() {
        let dir = tempfile::tempdir().unwrap();
        let log = BatchLog::open(dir.path(), BatchLogOptions::default()).unwrap();
        for id in 1..=5 {
            log.store(&entry(id, 100)).unwrap();
        }
        drop(log);
        let files = segment_files(dir.path());
        let mut bytes = fs::read(&files[0]).unwrap();
        // A byte inside the second record's payload.
        let first = framing::HEADER_LEN + {
            let len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
            len as usize
        };
        bytes[first + framing::HEADER_LEN + 2] ^= 0x5A;
        fs::write(&files[0], &bytes).unwrap();
        let log = BatchLog::open(dir.path(), BatchLogOptions::default()).unwrap();
        assert_eq!(log.ids(), vec![1, 3, 4, 5]);
        match log.recovery_problems() {
            [BatchLogError::Corrupt { offset, .. }] => assert_eq!(*offset, first as u64),
            other => panic!("expected one damaged record, got {other:?}"),
        }
    }

    #[test]
    fn an_oversized_entry_is_refused_with_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let log = BatchLog::open(dir.path(), BatchLogOptions::default()).unwrap();
        let big = BatchEntry {
            id: 1,
            written_ms: 0,
            payload: vec![0; MAX_ENTRY_BYTES + 1],
        };
        assert!(matches!(
            log.store(&big),
            Err(BatchLogError::TooLarge { .. })
        ));
        assert!(log.is_empty());
    }
}
