//! The manifest: the set of live SSTables, changed atomically.
//!
//! # On disk
//!
//! `CURRENT` names the live manifest file, `MANIFEST-<n>`. That file is a
//! sequence of records framed by [`framing`], each a bincode
//! value: the first is a snapshot of the whole [`ManifestState`], every later
//! one a group of [`ManifestEdit`]s applied together. Each [`Manifest::apply`]
//! call appends one record and fsyncs it, so its edits take effect all
//! together or not at all.
//!
//! When the edits since the snapshot grow past
//! [`ManifestOptions::snapshot_after_bytes`], the state is written as a
//! snapshot into `MANIFEST-<n+1>` (fsynced), and `CURRENT` is switched to it
//! by writing `CURRENT.tmp`, fsyncing it, renaming it over `CURRENT` and
//! fsyncing the directory. Both files hold the same state, so a crash at any
//! point of the switch leaves a consistent manifest; open deletes whichever
//! file `CURRENT` does not name.
//!
//! # Damage
//!
//! A torn last record (a crash during an append, before `apply` returned) is
//! dropped with a warning and truncated away: the state is the one before
//! that edit, which is consistent. A damaged tail made only of zero bytes (a
//! file extended by a crash before its data reached the disk) is treated the
//! same way. Any other damage (a corrupt record with more records after it,
//! a complete record with a bad checksum) is a [`StorageError::Corrupt`]
//! naming the file and offset: the manifest is too important to guess at.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::commitlog::sync_dir;
use super::error::{Result, StorageError};
use super::framing::{self, Frame, RecordReader, MAX_PAYLOAD_LEN};

/// Name of the file naming the live manifest.
pub const CURRENT_FILE: &str = "CURRENT";
const CURRENT_TMP_FILE: &str = "CURRENT.tmp";
const MANIFEST_PREFIX: &str = "MANIFEST-";
/// Format version written in every snapshot.
const FORMAT_VERSION: u32 = 1;
/// Default for [`ManifestOptions::snapshot_after_bytes`] (1 MiB).
pub const DEFAULT_SNAPSHOT_AFTER_BYTES: u64 = 1 << 20;

/// One live SSTable as the manifest records it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TableRecord {
    /// The table's file id (unique, from [`Manifest::allocate_file_id`]).
    pub file_id: u64,
    /// Level or tier the compaction strategy placed it in.
    pub level_or_tier: u32,
    /// Size of the table file in bytes.
    pub size_bytes: u64,
    /// Smallest cell timestamp in the table.
    pub min_ts: u64,
    /// Largest cell timestamp in the table.
    pub max_ts: u64,
}

/// The state the manifest records.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestState {
    /// The next file id to hand out; every id in use is below it.
    pub next_file_id: u64,
    /// The live tables by file id.
    pub live_tables: BTreeMap<u64, TableRecord>,
    /// Commit-log segments with an id below this are flushed to tables.
    pub log_flushed_before: u64,
}

impl Default for ManifestState {
    /// The empty state. File ids start at 1 (0 is never handed out).
    fn default() -> Self {
        ManifestState {
            next_file_id: 1,
            live_tables: BTreeMap::new(),
            log_flushed_before: 0,
        }
    }
}

/// One change to the manifest state. [`Manifest::apply`] applies a list of
/// them, in order, as one atomic record.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum ManifestEdit {
    /// Makes tables live. Their ids must not be live already; ids at or
    /// above `next_file_id` advance it past them.
    AddTables(Vec<TableRecord>),
    /// Removes live tables by file id. Every id must be live.
    RemoveTables(Vec<u64>),
    /// Records that commit-log segments below this id are flushed. Must not
    /// go backwards.
    LogFlushedBefore(u64),
    /// Sets the next file id to hand out. Must not go backwards.
    NextFileId(u64),
}

impl ManifestState {
    /// Applies `edits` in order. On error `self` may be partly changed, so
    /// callers apply to a copy.
    fn apply_edits(&mut self, edits: &[ManifestEdit]) -> std::result::Result<(), String> {
        for edit in edits {
            match edit {
                ManifestEdit::AddTables(tables) => {
                    for t in tables {
                        if self.live_tables.contains_key(&t.file_id) {
                            return Err(format!("table {} is already live", t.file_id));
                        }
                        let after = t
                            .file_id
                            .checked_add(1)
                            .ok_or_else(|| format!("file id {} out of range", t.file_id))?;
                        self.next_file_id = self.next_file_id.max(after);
                        self.live_tables.insert(t.file_id, t.clone());
                    }
                }
                ManifestEdit::RemoveTables(ids) => {
                    for id in ids {
                        if self.live_tables.remove(id).is_none() {
                            return Err(format!("table {id} is not live"));
                        }
                    }
                }
                ManifestEdit::LogFlushedBefore(seg) => {
                    if *seg < self.log_flushed_before {
                        return Err(format!(
                            "log_flushed_before would go back from {} to {seg}",
                            self.log_flushed_before
                        ));
                    }
                    self.log_flushed_before = *seg;
                }
                ManifestEdit::NextFileId(id) => {
                    if *id < self.next_file_id {
                        return Err(format!(
                            "next_file_id would go back from {} to {id}",
                            self.next_file_id
                        ));
                    }
                    self.next_file_id = *id;
                }
            }
        }
        Ok(())
    }
}

/// A record of a manifest file, as decoded.
#[derive(Deserialize)]
enum ManifestRecord {
    Snapshot { format: u32, state: ManifestState },
    Edits(Vec<ManifestEdit>),
}

/// The same record, borrowed for encoding (serde encodes both alike).
#[derive(Serialize)]
enum ManifestRecordRef<'a> {
    Snapshot {
        format: u32,
        state: &'a ManifestState,
    },
    Edits(&'a [ManifestEdit]),
}

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_PAYLOAD_LEN>()
}

/// Encodes and frames one record.
fn encode(record: &ManifestRecordRef<'_>) -> Result<Vec<u8>> {
    let payload = bincode::serde::encode_to_vec(record, bincode_config())
        .map_err(|e| StorageError::Codec(e.to_string()))?;
    framing::encode_record(&payload)
}

/// Options of [`Manifest::open_with_options`].
#[derive(Clone, Debug)]
pub struct ManifestOptions {
    /// Once the edits appended after the snapshot exceed this many bytes,
    /// the next `apply` first writes a fresh snapshot into a new file.
    pub snapshot_after_bytes: u64,
}

impl Default for ManifestOptions {
    fn default() -> Self {
        ManifestOptions {
            snapshot_after_bytes: DEFAULT_SNAPSHOT_AFTER_BYTES,
        }
    }
}

/// File name of manifest number `n`.
fn manifest_file_name(n: u64) -> String {
    format!("{MANIFEST_PREFIX}{n:06}")
}

/// Parses a manifest file name back to its number.
fn parse_manifest_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(MANIFEST_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What replaying one manifest file found.
struct Replayed {
    /// `None` when the file holds no complete record at all.
    state: Option<ManifestState>,
    /// End of the last good record.
    good_end: u64,
    /// Length of the snapshot record.
    snapshot_len: u64,
    /// A torn or zero-filled tail was found (and must be truncated away).
    damaged_tail: bool,
}

/// Replays the manifest file `path` whose contents are `data`.
fn replay(path: &Path, data: &[u8]) -> Result<Replayed> {
    let mut out = Replayed {
        state: None,
        good_end: 0,
        snapshot_len: 0,
        damaged_tail: false,
    };
    for frame in RecordReader::new(path, data) {
        match frame {
            Frame::Record { offset, payload } => {
                let corrupt = |reason: String| StorageError::corrupt(path, offset, reason);
                let (record, used): (ManifestRecord, usize) =
                    bincode::serde::decode_from_slice(payload, bincode_config())
                        .map_err(|e| corrupt(format!("undecodable manifest record: {e}")))?;
                if used != payload.len() {
                    return Err(corrupt("trailing bytes after manifest record".into()));
                }
                let end = offset + framing::encoded_len(payload.len()) as u64;
                match (&mut out.state, record) {
                    (None, ManifestRecord::Snapshot { format, state }) => {
                        if format != FORMAT_VERSION {
                            return Err(corrupt(format!(
                                "unsupported manifest format version {format}"
                            )));
                        }
                        out.state = Some(state);
                        out.snapshot_len = end;
                    }
                    (None, ManifestRecord::Edits(_)) => {
                        return Err(corrupt("manifest does not start with a snapshot".into()));
                    }
                    (Some(_), ManifestRecord::Snapshot { .. }) => {
                        return Err(corrupt("snapshot record after the first record".into()));
                    }
                    (Some(state), ManifestRecord::Edits(edits)) => {
                        state
                            .apply_edits(&edits)
                            .map_err(|e| corrupt(format!("manifest edit does not apply: {e}")))?;
                    }
                }
                out.good_end = end;
            }
            Frame::Corrupt {
                offset,
                resume_at,
                error,
            } => {
                let range = usize::try_from(offset)
                    .ok()
                    .and_then(|o| data.get(o..))
                    .unwrap_or(&[]);
                if resume_at < data.len() as u64 || range.iter().any(|&b| b != 0) {
                    return Err(error);
                }
                tracing::warn!(%error, "manifest: dropping zero-filled tail left by a crash");
                out.damaged_tail = true;
            }
            Frame::TornTail { error, .. } => {
                tracing::warn!(%error, "manifest: dropping torn last record left by a crash");
                out.damaged_tail = true;
            }
        }
    }
    Ok(out)
}

/// Writes `CURRENT` to name manifest `n`, atomically. Returns whether the
/// failure (if any) happened after the rename, when `CURRENT` may name
/// either file.
fn write_current(dir: &Path, n: u64) -> std::result::Result<(), (StorageError, bool)> {
    let tmp = dir.join(CURRENT_TMP_FILE);
    let current = dir.join(CURRENT_FILE);
    let write_tmp = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(format!("{}\n", manifest_file_name(n)).as_bytes())?;
        f.sync_all()
    };
    write_tmp().map_err(|e| (StorageError::io(&tmp, e), false))?;
    fs::rename(&tmp, &current).map_err(|e| (StorageError::io(&current, e), false))?;
    sync_dir(dir).map_err(|e| (e, true))
}

/// Creates manifest file `n` holding a snapshot of `state`, fsynced.
fn create_manifest_file(dir: &Path, n: u64, state: &ManifestState) -> Result<(File, PathBuf, u64)> {
    let path = dir.join(manifest_file_name(n));
    let bytes = encode(&ManifestRecordRef::Snapshot {
        format: FORMAT_VERSION,
        state,
    })?;
    let create = || -> std::io::Result<File> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        Ok(f)
    };
    match create().map_err(|e| StorageError::io(&path, e)) {
        Ok(f) => match sync_dir(dir) {
            Ok(()) => Ok((f, path, bytes.len() as u64)),
            Err(e) => {
                let _ = fs::remove_file(&path);
                Err(e)
            }
        },
        Err(e) => {
            let _ = fs::remove_file(&path);
            Err(e)
        }
    }
}

/// The manifest of one data directory; see the [module docs](self).
pub struct Manifest {
    dir: PathBuf,
    number: u64,
    path: PathBuf,
    file: File,
    /// Bytes in the live manifest file.
    len: u64,
    /// Bytes of the snapshot at its head.
    snapshot_len: u64,
    state: ManifestState,
    opts: ManifestOptions,
    /// Set when an I/O error left the files in an unknown state.
    failed: Option<String>,
}

impl Manifest {
    /// Opens the manifest in `dir` (creating an empty one if there is none)
    /// with default options, and returns it with the recovered state.
    pub fn open(dir: &Path) -> Result<(Manifest, ManifestState)> {
        Self::open_with_options(dir, ManifestOptions::default())
    }

    /// Like [`open`](Self::open), with explicit options.
    pub fn open_with_options(
        dir: &Path,
        opts: ManifestOptions,
    ) -> Result<(Manifest, ManifestState)> {
        fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        let tmp = dir.join(CURRENT_TMP_FILE);
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io(&tmp, e)),
        }
        let mut numbers = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
            let entry = entry.map_err(|e| StorageError::io(dir, e))?;
            if let Some(n) = entry
                .file_name()
                .to_str()
                .and_then(parse_manifest_file_name)
            {
                numbers.push(n);
            }
        }
        numbers.sort_unstable();

        let current_path = dir.join(CURRENT_FILE);
        let (number, path, file, len, snapshot_len, state) = match fs::read(&current_path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Self::create_fresh(dir, &numbers)?
            }
            Err(e) => return Err(StorageError::io(&current_path, e)),
            Ok(content) => {
                let n = std::str::from_utf8(&content)
                    .ok()
                    .and_then(|s| s.strip_suffix('\n'))
                    .and_then(parse_manifest_file_name)
                    .ok_or_else(|| {
                        StorageError::corrupt(
                            &current_path,
                            0,
                            format!("CURRENT does not name a manifest file: {content:?}"),
                        )
                    })?;
                let path = dir.join(manifest_file_name(n));
                let data = match fs::read(&path) {
                    Ok(d) => d,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(StorageError::corrupt(
                            &current_path,
                            0,
                            format!("CURRENT names {} which does not exist", path.display()),
                        ))
                    }
                    Err(e) => return Err(StorageError::io(&path, e)),
                };
                let replayed = replay(&path, &data)?;
                let state = replayed.state.ok_or_else(|| {
                    StorageError::corrupt(&path, 0, "manifest holds no complete snapshot")
                })?;
                let file = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(|e| StorageError::io(&path, e))?;
                if replayed.damaged_tail {
                    file.set_len(replayed.good_end)
                        .and_then(|()| file.sync_all())
                        .map_err(|e| StorageError::io(&path, e))?;
                }
                (
                    n,
                    path,
                    file,
                    replayed.good_end,
                    replayed.snapshot_len,
                    state,
                )
            }
        };

        // Files CURRENT does not name are leftovers of a snapshot switch.
        let mut removed = false;
        for &n in numbers.iter().filter(|&&n| n != number) {
            let stale = dir.join(manifest_file_name(n));
            match fs::remove_file(&stale) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io(&stale, e)),
            }
        }
        if removed {
            sync_dir(dir)?;
        }

        let manifest = Manifest {
            dir: dir.to_path_buf(),
            number,
            path,
            file,
            len,
            snapshot_len,
            state: state.clone(),
            opts,
            failed: None,
        };
        Ok((manifest, state))
    }

    /// Creates a new, empty manifest when there is no `CURRENT`. Refuses if
    /// a manifest file with content exists (`CURRENT` was lost, not never
    /// written).
    #[allow(clippy::type_complexity)]
    fn create_fresh(
        dir: &Path,
        numbers: &[u64],
    ) -> Result<(u64, PathBuf, File, u64, u64, ManifestState)> {
        for &n in numbers {
            let path = dir.join(manifest_file_name(n));
            let data = fs::read(&path).map_err(|e| StorageError::io(&path, e))?;
            // Only an aborted creation leaves a manifest without CURRENT, and
            // that file holds at most an empty snapshot.
            let orphan_ok = match replay(&path, &data) {
                Ok(Replayed { state: None, .. }) => true,
                Ok(Replayed { state: Some(s), .. }) => s == ManifestState::default(),
                Err(_) => false,
            };
            if !orphan_ok {
                return Err(StorageError::corrupt(
                    dir.join(CURRENT_FILE),
                    0,
                    format!(
                        "CURRENT is missing but {} holds a manifest; refusing to start empty",
                        path.display()
                    ),
                ));
            }
        }
        let n = numbers
            .last()
            .map_or(Some(1), |m| m.checked_add(1))
            .ok_or_else(|| StorageError::corrupt(dir, 0, "manifest number space exhausted"))?;
        let state = ManifestState::default();
        let (file, path, len) = create_manifest_file(dir, n, &state)?;
        write_current(dir, n).map_err(|(e, _)| e)?;
        let file = {
            drop(file);
            OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| StorageError::io(&path, e))?
        };
        Ok((n, path, file, len, len, state))
    }

    /// Applies several edits as ONE atomic record, fsynced before returning.
    ///
    /// Edits that do not apply to the current state (see [`ManifestEdit`])
    /// fail with [`StorageError::InvalidArgument`] and change nothing. After
    /// an I/O error the manifest refuses further changes
    /// ([`StorageError::Closed`]); reopen it.
    pub fn apply(&mut self, edits: Vec<ManifestEdit>) -> Result<()> {
        self.check_failed()?;
        if edits.is_empty() {
            return Ok(());
        }
        let mut next = self.state.clone();
        next.apply_edits(&edits)
            .map_err(StorageError::InvalidArgument)?;
        let bytes = encode(&ManifestRecordRef::Edits(&edits))?;
        if self.len.saturating_sub(self.snapshot_len) >= self.opts.snapshot_after_bytes {
            self.write_snapshot()?;
        }
        let written = (&self.file)
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            let error = StorageError::io(&self.path, e);
            self.failed = Some(error.to_string());
            return Err(error);
        }
        self.len += bytes.len() as u64;
        self.state = next;
        Ok(())
    }

    /// The current state.
    pub fn state(&self) -> &ManifestState {
        &self.state
    }

    /// Hands out a new file id, durably: the same id is never handed out
    /// twice, even across crashes.
    pub fn allocate_file_id(&mut self) -> Result<u64> {
        let id = self.state.next_file_id;
        let next = id
            .checked_add(1)
            .ok_or_else(|| StorageError::InvalidArgument("file id space exhausted".into()))?;
        self.apply(vec![ManifestEdit::NextFileId(next)])?;
        Ok(id)
    }

    fn check_failed(&self) -> Result<()> {
        match &self.failed {
            None => Ok(()),
            Some(msg) => Err(StorageError::Closed(format!(
                "manifest stopped after an I/O error: {msg}"
            ))),
        }
    }

    /// Writes the state as a snapshot into a new manifest file and switches
    /// `CURRENT` to it.
    fn write_snapshot(&mut self) -> Result<()> {
        let n = self.number.checked_add(1).ok_or_else(|| {
            StorageError::corrupt(&self.dir, 0, "manifest number space exhausted")
        })?;
        let (file, path, len) = create_manifest_file(&self.dir, n, &self.state)?;
        if let Err((error, after_rename)) = write_current(&self.dir, n) {
            if after_rename {
                // CURRENT may name either file; appending to one of them could
                // lose edits. Stop; a reopen sorts it out.
                self.failed = Some(error.to_string());
            } else {
                let _ = fs::remove_file(&path);
            }
            return Err(error);
        }
        let file = {
            drop(file);
            OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| StorageError::io(&path, e))
        };
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                self.failed = Some(e.to_string());
                return Err(e);
            }
        };
        let old = std::mem::replace(&mut self.path, path);
        self.file = file;
        self.number = n;
        self.len = len;
        self.snapshot_len = len;
        // Leftovers are removed at the next open if this fails.
        if let Err(error) = fs::remove_file(&old)
            .map_err(|e| StorageError::io(&old, e))
            .and_then(|()| sync_dir(&self.dir))
        {
            tracing::warn!(%error, "manifest: could not remove the previous manifest file");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn table(id: u64) -> TableRecord {
        TableRecord {
            file_id: id,
            level_or_tier: (id % 3) as u32,
            size_bytes: id * 100,
            min_ts: id,
            max_ts: id + 10,
        }
    }

    fn small() -> ManifestOptions {
        ManifestOptions {
            snapshot_after_bytes: 200,
        }
    }

    fn manifest_files(dir: &Path) -> Vec<u64> {
        let mut v: Vec<u64> = fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| parse_manifest_file_name(e.unwrap().file_name().to_str().unwrap()))
            .collect();
        v.sort_unstable();
        v
    }

    fn current_number(dir: &Path) -> u64 {
        let s = fs::read_to_string(dir.join(CURRENT_FILE)).unwrap();
        parse_manifest_file_name(s.trim_end()).unwrap()
    }

    #[test]
    fn manifest_is_send() {
        fn send<T: Send>() {}
        send::<Manifest>();
    }

    #[test]
    fn fresh_manifest_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let (m, state) = Manifest::open(dir.path()).unwrap();
        assert_eq!(state, ManifestState::default());
        assert_eq!(m.state(), &state);
        assert_eq!(manifest_files(dir.path()), vec![current_number(dir.path())]);
    }

    #[test]
    fn edits_replayed_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, _) = Manifest::open(dir.path()).unwrap();
        let a = m.allocate_file_id().unwrap();
        let b = m.allocate_file_id().unwrap();
        m.apply(vec![
            ManifestEdit::AddTables(vec![table(a)]),
            ManifestEdit::LogFlushedBefore(3),
        ])
        .unwrap();
        m.apply(vec![
            ManifestEdit::AddTables(vec![table(b)]),
            ManifestEdit::RemoveTables(vec![a]),
        ])
        .unwrap();
        let expected = m.state().clone();
        assert_eq!(
            expected.live_tables.keys().copied().collect::<Vec<_>>(),
            vec![b]
        );
        assert_eq!(expected.log_flushed_before, 3);
        drop(m);
        let (m, state) = Manifest::open(dir.path()).unwrap();
        assert_eq!(state, expected);
        assert_eq!(m.state(), &expected);
    }

    #[test]
    fn invalid_edits_rejected_without_change() {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, _) = Manifest::open(dir.path()).unwrap();
        m.apply(vec![
            ManifestEdit::AddTables(vec![table(5)]),
            ManifestEdit::LogFlushedBefore(4),
        ])
        .unwrap();
        assert_eq!(
            m.state().next_file_id,
            6,
            "adding id 5 advances next_file_id"
        );
        let before = m.state().clone();
        let bad = [
            vec![ManifestEdit::RemoveTables(vec![9])],
            vec![ManifestEdit::AddTables(vec![table(5)])],
            vec![ManifestEdit::LogFlushedBefore(2)],
            vec![ManifestEdit::NextFileId(3)],
            // Valid first edit, invalid second: nothing applies.
            vec![
                ManifestEdit::AddTables(vec![table(7)]),
                ManifestEdit::RemoveTables(vec![8]),
            ],
        ];
        for edits in bad {
            assert!(matches!(
                m.apply(edits),
                Err(StorageError::InvalidArgument(_))
            ));
            assert_eq!(m.state(), &before);
        }
        drop(m);
        let (_, state) = Manifest::open(dir.path()).unwrap();
        assert_eq!(state, before);
    }

    #[test]
    fn snapshot_switch_then_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, _) = Manifest::open_with_options(dir.path(), small()).unwrap();
        let first = current_number(dir.path());
        for _ in 0..50 {
            let id = m.allocate_file_id().unwrap();
            m.apply(vec![ManifestEdit::AddTables(vec![table(id)])])
                .unwrap();
        }
        let expected = m.state().clone();
        assert_eq!(expected.live_tables.len(), 50);
        let now = current_number(dir.path());
        assert!(now > first, "no snapshot was written");
        assert_eq!(manifest_files(dir.path()), vec![now], "old manifest kept");
        assert!(m.len < 200 + 2 * m.snapshot_len, "file keeps growing");
        drop(m);
        let (_, state) = Manifest::open_with_options(dir.path(), small()).unwrap();
        assert_eq!(state, expected);
    }

    #[test]
    fn torn_last_record_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, _) = Manifest::open(dir.path()).unwrap();
        m.apply(vec![ManifestEdit::AddTables(vec![table(1)])])
            .unwrap();
        let after_first = m.state().clone();
        let good_len = m.len;
        m.apply(vec![ManifestEdit::AddTables(vec![table(2), table(3)])])
            .unwrap();
        let path = m.path.clone();
        drop(m);
        let full = fs::metadata(&path).unwrap().len();
        for cut in [good_len + 3, full - 1] {
            let f = OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len(cut).unwrap();
            drop(f);
            let (_, state) = Manifest::open(dir.path()).unwrap();
            assert_eq!(state, after_first);
            assert_eq!(
                fs::metadata(&path).unwrap().len(),
                good_len,
                "tail not truncated"
            );
        }
        // Appends after the truncation replay.
        let (mut m, _) = Manifest::open(dir.path()).unwrap();
        m.apply(vec![ManifestEdit::AddTables(vec![table(4)])])
            .unwrap();
        drop(m);
        let (_, state) = Manifest::open(dir.path()).unwrap();
        assert_eq!(
            state.live_tables.keys().copied().collect::<Vec<_>>(),
            vec![1, 4]
        );
    }

    #[test]
    fn zero_filled_tail_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, _) = Manifest::open(dir.path()).unwrap();
        m.apply(vec![ManifestEdit::LogFlushedBefore(7)]).unwrap();
        let (path, good_len) = (m.path.clone(), m.len);
        drop(m);
        let mut data = fs::read(&path).unwrap();
        data.extend_from_slice(&[0u8; 64]);
        fs::write(&path, &data).unwrap();
        let (_, state) = Manifest::open(dir.path()).unwrap();
        assert_eq!(state.log_flushed_before, 7);
        assert_eq!(fs::metadata(&path).unwrap().len(), good_len);
    }

    #[test]
    fn corrupt_middle_record_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, _) = Manifest::open(dir.path()).unwrap();
        let offset = m.len;
        m.apply(vec![ManifestEdit::AddTables(vec![table(1)])])
            .unwrap();
        m.apply(vec![ManifestEdit::AddTables(vec![table(2)])])
            .unwrap();
        let path = m.path.clone();
        drop(m);
        let mut data = fs::read(&path).unwrap();
        data[offset as usize + framing::HEADER_LEN + 1] ^= 0x10;
        fs::write(&path, &data).unwrap();
        match Manifest::open(dir.path()) {
            Err(StorageError::Corrupt {
                path: p, offset: o, ..
            }) => {
                assert_eq!(p, path);
                assert_eq!(o, offset);
            }
            other => panic!("expected corruption, got {:?}", other.map(|(_, s)| s)),
        }
        // Nothing was changed by the failed open.
        assert_eq!(fs::read(&path).unwrap(), data);
    }

    #[test]
    fn corrupt_complete_last_record_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, _) = Manifest::open(dir.path()).unwrap();
        m.apply(vec![ManifestEdit::AddTables(vec![table(1)])])
            .unwrap();
        let path = m.path.clone();
        drop(m);
        let mut data = fs::read(&path).unwrap();
        let last = data.len() - 1;
        data[last] ^= 1;
        fs::write(&path, &data).unwrap();
        assert!(matches!(
            Manifest::open(dir.path()),
            Err(StorageError::Corrupt { .. })
        ));
    }

    #[test]
    fn crash_during_snapshot_switch_leaves_consistent_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, _) = Manifest::open(dir.path()).unwrap();
        m.apply(vec![ManifestEdit::AddTables(vec![table(1), table(2)])])
            .unwrap();
        let expected = m.state().clone();
        let n = m.number;
        let path = m.path.clone();
        drop(m);

        // Crash after writing part of the new manifest, before CURRENT moved:
        // the partial file is ignored and removed.
        let full = fs::read(&path).unwrap();
        let next = dir.path().join(manifest_file_name(n + 1));
        fs::write(&next, &full[..full.len() / 2]).unwrap();
        fs::write(dir.path().join(CURRENT_TMP_FILE), b"MANIFEST-0").unwrap();
        let (_, state) = Manifest::open(dir.path()).unwrap();
        assert_eq!(state, expected);
        assert!(!next.exists());
        assert!(!dir.path().join(CURRENT_TMP_FILE).exists());

        // Crash after CURRENT moved, before the old file was deleted: the new
        // file is used and the old one removed.
        let (mut m, _) = Manifest::open(dir.path()).unwrap();
        m.write_snapshot().unwrap();
        let newer = m.number;
        assert_eq!(newer, n + 1);
        drop(m);
        fs::write(&path, &full).unwrap(); // resurrect the old file
        let (mut m, state) = Manifest::open(dir.path()).unwrap();
        assert_eq!(state, expected);
        assert_eq!(manifest_files(dir.path()), vec![newer]);
        m.apply(vec![ManifestEdit::RemoveTables(vec![1])]).unwrap();
        drop(m);
        let (_, state) = Manifest::open(dir.path()).unwrap();
        assert_eq!(
            state.live_tables.keys().copied().collect::<Vec<_>>(),
            vec![2]
        );
    }

    #[test]
    fn missing_current() {
        // An aborted creation (manifest without CURRENT, empty snapshot or
        // torn) starts fresh.
        let dir = tempfile::tempdir().unwrap();
        let (_, _) = Manifest::open(dir.path()).unwrap();
        fs::remove_file(dir.path().join(CURRENT_FILE)).unwrap();
        let (mut m, state) = Manifest::open(dir.path()).unwrap();
        assert_eq!(state, ManifestState::default());
        m.apply(vec![ManifestEdit::AddTables(vec![table(3)])])
            .unwrap();
        drop(m);
        // A manifest with content but no CURRENT is refused.
        fs::remove_file(dir.path().join(CURRENT_FILE)).unwrap();
        assert!(matches!(
            Manifest::open(dir.path()),
            Err(StorageError::Corrupt { .. })
        ));
    }

    #[test]
    fn garbage_current_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (_, _) = Manifest::open(dir.path()).unwrap();
        fs::write(dir.path().join(CURRENT_FILE), b"\xffnonsense").unwrap();
        assert!(matches!(
            Manifest::open(dir.path()),
            Err(StorageError::Corrupt { .. })
        ));
        fs::write(dir.path().join(CURRENT_FILE), b"MANIFEST-999999\n").unwrap();
        assert!(matches!(
            Manifest::open(dir.path()),
            Err(StorageError::Corrupt { .. })
        ));
    }

    #[test]
    fn file_ids_never_repeat_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = BTreeSet::new();
        for round in 0..5u64 {
            let (mut m, _) = Manifest::open_with_options(dir.path(), small()).unwrap();
            for _ in 0..10 {
                let id = m.allocate_file_id().unwrap();
                assert!(id > 0);
                assert!(seen.insert(id), "id {id} handed out twice");
            }
            // A table added with an explicit id also reserves it.
            let explicit = m.state().next_file_id + 5 + round;
            m.apply(vec![ManifestEdit::AddTables(vec![table(explicit)])])
                .unwrap();
            assert!(seen.insert(explicit));
        }
        assert_eq!(seen.len(), 55);
    }

    /// One step of the random-sequence test.
    #[derive(Clone, Debug)]
    enum Op {
        Add(Vec<u8>),
        Remove(Vec<prop::sample::Index>),
        Flush(u8),
        Allocate,
        Compact(prop::sample::Index, u8),
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => prop::collection::vec(any::<u8>(), 1..4).prop_map(Op::Add),
            2 => prop::collection::vec(any::<prop::sample::Index>(), 1..3).prop_map(Op::Remove),
            1 => any::<u8>().prop_map(Op::Flush),
            2 => Just(Op::Allocate),
            2 => (any::<prop::sample::Index>(), 1u8..3).prop_map(|(i, n)| Op::Compact(i, n)),
            1 => Just(Op::Reopen),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn prop_random_edits_match_model(ops in prop::collection::vec(op(), 1..40),
                                         threshold in 0u64..400) {
            let dir = tempfile::tempdir().unwrap();
            let opts = ManifestOptions { snapshot_after_bytes: threshold };
            let (mut m, _) = Manifest::open_with_options(dir.path(), opts.clone()).unwrap();
            let mut model = ManifestState::default();
            let mut handed_out = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Add(levels) => {
                        let mut tables = Vec::new();
                        for l in levels {
                            let id = model.next_file_id;
                            model.next_file_id += 1;
                            let t = TableRecord { level_or_tier: l as u32, ..table(id) };
                            model.live_tables.insert(id, t.clone());
                            tables.push(t);
                        }
                        m.apply(vec![ManifestEdit::AddTables(tables)]).unwrap();
                    }
                    Op::Remove(picks) => {
                        let live: Vec<u64> = model.live_tables.keys().copied().collect();
                        if live.is_empty() {
                            // Removing a table that is not live is refused.
                            prop_assert!(m.apply(vec![ManifestEdit::RemoveTables(vec![0])]).is_err());
                            continue;
                        }
                        let ids: BTreeSet<u64> = picks.iter().map(|i| live[i.index(live.len())]).collect();
                        for id in &ids {
                            model.live_tables.remove(id);
                        }
                        m.apply(vec![ManifestEdit::RemoveTables(ids.into_iter().collect())]).unwrap();
                    }
                    Op::Flush(step) => {
                        model.log_flushed_before += step as u64;
                        m.apply(vec![ManifestEdit::LogFlushedBefore(model.log_flushed_before)]).unwrap();
                    }
                    Op::Allocate => {
                        let id = m.allocate_file_id().unwrap();
                        prop_assert_eq!(id, model.next_file_id);
                        prop_assert!(handed_out.insert(id));
                        model.next_file_id += 1;
                    }
                    Op::Compact(pick, outputs) => {
                        // Replace one live table by fresh outputs, atomically,
                        // together with a flush marker.
                        let live: Vec<u64> = model.live_tables.keys().copied().collect();
                        if live.is_empty() {
                            continue;
                        }
                        let input = live[pick.index(live.len())];
                        model.live_tables.remove(&input);
                        let mut tables = Vec::new();
                        for _ in 0..outputs {
                            let id = model.next_file_id;
                            model.next_file_id += 1;
                            model.live_tables.insert(id, table(id));
                            tables.push(table(id));
                        }
                        model.log_flushed_before += 1;
                        m.apply(vec![
                            ManifestEdit::AddTables(tables),
                            ManifestEdit::RemoveTables(vec![input]),
                            ManifestEdit::LogFlushedBefore(model.log_flushed_before),
                        ]).unwrap();
                    }
                    Op::Reopen => {
                        drop(m);
                        let (m2, state) = Manifest::open_with_options(dir.path(), opts.clone()).unwrap();
                        prop_assert_eq!(&state, &model);
                        m = m2;
                    }
                }
                prop_assert_eq!(m.state(), &model);
            }
            drop(m);
            let (_, state) = Manifest::open_with_options(dir.path(), opts).unwrap();
            prop_assert_eq!(state, model);
            prop_assert_eq!(manifest_files(dir.path()).len(), 1);
        }
    }
}
