//! The commit log: makes writes durable before they are acknowledged.
//!
//! The log is a directory of segment files named
//! `commitlog-<id, 20 digits>.log`, each a sequence of records framed by
//! [`framing`]. Exactly one segment, the one with the highest
//! id, is *active* and receives appends; a segment is never appended to again
//! once it has been rolled away from (and never after a reopen).
//!
//! # Group commit
//!
//! Appending is two stages, each shared by every appender waiting for it.
//!
//! - **Write.** Appenders copy their framed records into a shared queue. If
//!   no other thread is writing, the appender becomes the *writer*: it takes
//!   everything queued and writes it with one `write` call. Appenders
//!   arriving meanwhile queue behind it, and one of them writes the next
//!   round, which covers all of them.
//! - **Sync** ([`SyncMode::Batch`]). An appender whose record is written
//!   waits for an `fdatasync` that covers it: if no other thread is
//!   syncing, it becomes the *syncer* and fsyncs everything written so far;
//!   otherwise it waits for that fsync, and then for the next one if the
//!   running one started before its record was written.
//!
//! Writes go on while an fsync runs, so under load one `fdatasync` covers
//! every record written during the previous one. A caller may also split
//! the stages ([`CommitLog::append_unsynced`], then
//! [`CommitLog::wait_synced`]): the record survives a crash of the process
//! from the first call on, and an OS crash from the second; in between the
//! caller can do other work (a replica sends a write to its peers while
//! its own copy is being synced). An async caller waits with
//! [`CommitLog::wait_synced_async`]: the log's own sync thread runs the
//! fdatasync for it and wakes it, so no thread blocks per waiter.
//!
//! # Rolling
//!
//! A roll switches appends to the next segment without fsyncing the old
//! one: the old segment joins a list of rolled segments that the next
//! fdatasync (group commit or periodic) syncs before the active one, and
//! no record in it counts as synced until then. The next segment's file
//! can be made (and its directory entry fsynced) ahead of time
//! ([`CommitLog::prepare_next_segment`]), so a roll holds appenders up
//! only for the switch itself.
//!
//! # Failures
//!
//! If a write or fsync fails, what reached the disk is unknown (and retrying
//! an fsync after a failure can falsely report success), so the log stops:
//! the failing call returns the I/O error and every later call returns
//! [`StorageError::Closed`]. Reopening replays what did reach the disk.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::error::{Result, StorageError};
use super::framing::{self, Frame, RecordReader, HEADER_LEN};
use super::latency::{LatencyHistogram, LatencySummary};
use super::writeback;

/// Default size past which the active segment is rolled (64 MiB).
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;

/// When appends become durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncMode {
    /// An append returns only after an fsync that covers it (group commit).
    #[default]
    Batch,
    /// An append returns once its record is handed to the OS (it survives a
    /// process kill); a background thread fsyncs every `interval`, so an OS
    /// crash can lose up to `interval` of acknowledged appends.
    Periodic {
        /// Time between background fsyncs. Must not be zero.
        interval: Duration,
    },
}

/// Options of [`CommitLog::open`].
#[derive(Clone, Debug)]
pub struct CommitLogOptions {
    /// When appends become durable.
    pub sync_mode: SyncMode,
    /// The active segment is rolled to a new file once it is at least this
    /// many bytes long. Must not be zero.
    pub segment_size: u64,
}

impl Default for CommitLogOptions {
    fn default() -> Self {
        CommitLogOptions {
            sync_mode: SyncMode::Batch,
            segment_size: DEFAULT_SEGMENT_SIZE,
        }
    }
}

/// Names one append for [`CommitLog::wait_synced`]. Tickets grow with
/// the order of appends: waiting for one covers every earlier append.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SyncTicket(u64);

/// Identifies a segment file; ids grow with time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentId(pub u64);

/// What [`CommitLog::open`] found in the existing segments.
#[derive(Debug, Default)]
pub struct Replay {
    /// Every recovered record, in log order, with the segment it came from.
    pub records: Vec<(SegmentId, Vec<u8>)>,
    /// Every corrupt range and torn tail found (all
    /// [`StorageError::Corrupt`], naming file and offset), already logged
    /// with `tracing::warn`.
    pub problems: Vec<StorageError>,
}

/// File name of segment `id`.
pub fn segment_file_name(id: SegmentId) -> String {
    format!("commitlog-{:020}.log", id.0)
}

/// Parses a segment file name back to its id.
fn parse_segment_file_name(name: &str) -> Option<SegmentId> {
    let digits = name.strip_prefix("commitlog-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(SegmentId)
}

/// fsyncs a directory, so file creations, deletions and renames in it are
/// durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(dir, e))
}

/// The ids of the segment files in `dir`.
fn list_segments(dir: &Path) -> Result<BTreeSet<u64>> {
    let mut ids = BTreeSet::new();
    let entries = fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io(dir, e))?;
        if let Some(id) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            ids.insert(id.0);
        }
    }
    Ok(ids)
}

/// Removes a file; a file that is already gone is not an error.
fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io(path, e)),
    }
}

/// The segment receiving appends, and the segments rolled away from
/// whose last records may not be synced yet.
struct Active {
    id: u64,
    path: PathBuf,
    file: Arc<File>,
    len: u64,
    /// Offset up to which the periodic sync thread has started the
    /// writeback (see [`writeback`]).
    writeback_from: u64,
    /// Segments rolled away from and not yet fdatasynced since (oldest
    /// first). A syncer syncs them before the active segment and removes
    /// them once synced; until then no record in them counts as synced.
    rolled: Vec<Rolled>,
}

/// A segment rolled away from whose tail may not be durable yet.
struct Rolled {
    id: u64,
    path: PathBuf,
    file: Arc<File>,
    len: u64,
}

/// A segment file created (and its directory entry fsynced) ahead of the
/// roll that will make it active, so the roll itself does no file system
/// work: see [`CommitLog::prepare_next_segment`].
struct Spare {
    id: u64,
    path: PathBuf,
    file: File,
}

/// The group-commit queue.
struct Queue {
    /// Framed records waiting for the next round.
    buf: Vec<u8>,
    /// A cleared buffer kept to avoid reallocating every round.
    spare: Vec<u8>,
    /// Sequence number of the last submission queued.
    queued_seq: u64,
    /// Every submission with a sequence number up to this one is written
    /// to the OS.
    written_seq: u64,
    /// Every submission with a sequence number up to this one is durable
    /// (fdatasync returned after it was written).
    synced_seq: u64,
    /// A thread is writing a round (it has the active segment for that).
    writer: bool,
    /// A thread is running an fdatasync for waiters.
    syncer: bool,
    /// The highest submission an async waiter
    /// ([`CommitLog::wait_synced_async`]) needs synced: the sync thread
    /// syncs until `synced_seq` reaches it.
    sync_requested: u64,
    /// Tells the batch-mode sync thread to exit.
    stop_sync_thread: bool,
    /// Set when an I/O error stopped the log.
    failed: Option<String>,
}

struct Shared {
    dir: PathBuf,
    fsync_each_round: bool,
    segment_size: u64,
    queue: Mutex<Queue>,
    queue_cv: Condvar,
    /// Wakes the batch-mode sync thread (async waiters asked for a sync,
    /// a syncer finished with requests pending, or stop).
    sync_cv: Condvar,
    /// `synced_seq` (and whether the log failed), published for async
    /// waiters.
    synced_tx: tokio::sync::watch::Sender<(u64, bool)>,
    /// Locked by the writer of a round, and briefly to sync or roll.
    active: Mutex<Active>,
    active_id: AtomicU64,
    /// Ids of the segment files that exist (not counting a spare).
    segments: Mutex<BTreeSet<u64>>,
    /// The next segment, made ahead of time; locked while it is created,
    /// and by a roll (inside `active`) to take it.
    spare: Mutex<Option<Spare>>,
    /// Every fdatasync of a segment: its id and the length it covered
    /// (tests check that every acknowledged record was covered).
    #[cfg(test)]
    sync_events: Mutex<Vec<(u64, u64)>>,
    bytes_written: AtomicU64,
    /// How long each sync's fdatasyncs took.
    sync_latency: LatencyHistogram,
    stop: Mutex<bool>,
    stop_cv: Condvar,
}

/// The commit log of one data directory; see the [module docs](self).
///
/// `Send + Sync`: share it between writer threads by reference or `Arc`.
pub struct CommitLog {
    shared: Arc<Shared>,
    syncer: Option<JoinHandle<()>>,
}

impl CommitLog {
    /// Opens (creating if needed) the log in `dir`, replays every segment
    /// with id >= `first_live` (older ones are deleted: their data was
    /// flushed), truncates a torn or corrupt tail of the last segment so new
    /// appends follow good data, and starts a new active segment.
    pub fn open(
        dir: &Path,
        first_live: SegmentId,
        opts: CommitLogOptions,
    ) -> Result<(CommitLog, Replay)> {
        if opts.segment_size == 0 {
            return Err(StorageError::InvalidArgument(
                "commit log segment_size must be positive".into(),
            ));
        }
        if let SyncMode::Periodic { interval } = opts.sync_mode {
            if interval.is_zero() {
                return Err(StorageError::InvalidArgument(
                    "commit log periodic sync interval must be positive".into(),
                ));
            }
        }
        fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        let found = list_segments(dir)?;
        let max_found = found.last().copied();

        // Segments below first_live were flushed: delete them.
        for &id in found.range(..first_live.0) {
            remove_if_exists(&dir.join(segment_file_name(SegmentId(id))))?;
        }
        let mut live: BTreeSet<u64> = found.range(first_live.0..).copied().collect();

        let mut replay = Replay::default();
        let last_live = live.last().copied();
        let mut empty = Vec::new();
        for &id in &live {
            let path = dir.join(segment_file_name(SegmentId(id)));
            let data = fs::read(&path).map_err(|e| StorageError::io(&path, e))?;
            let mut good_end = 0u64;
            let mut damaged_tail = false;
            for frame in RecordReader::new(&path, &data) {
                match frame {
                    Frame::Record { offset, payload } => {
                        replay.records.push((SegmentId(id), payload.to_vec()));
                        good_end = offset + framing::encoded_len(payload.len()) as u64;
                    }
                    Frame::Corrupt {
                        resume_at, error, ..
                    } => {
                        tracing::warn!(%error, "commit log replay: skipping corrupt range");
                        damaged_tail = resume_at == data.len() as u64;
                        replay.problems.push(error);
                    }
                    Frame::TornTail { error, .. } => {
                        tracing::warn!(%error, "commit log replay: torn tail");
                        damaged_tail = true;
                        replay.problems.push(error);
                    }
                }
            }
            if damaged_tail && Some(id) == last_live {
                tracing::warn!(
                    path = %path.display(),
                    from = data.len(),
                    to = good_end,
                    "truncating damaged tail of the last commit log segment"
                );
                let truncate = || -> std::io::Result<()> {
                    let f = OpenOptions::new().write(true).open(&path)?;
                    f.set_len(good_end)?;
                    f.sync_all()
                };
                truncate().map_err(|e| StorageError::io(&path, e))?;
            }
            if data.is_empty() {
                empty.push((id, path));
            }
        }
        // Empty segments hold nothing; drop them so reopening does not pile
        // them up. (New ids are still taken above the highest id seen.)
        for (id, path) in empty {
            remove_if_exists(&path)?;
            live.remove(&id);
        }

        let next_id = match max_found {
            Some(max) => max.checked_add(1).ok_or_else(|| {
                StorageError::corrupt(dir, 0, "commit log segment id space exhausted")
            })?,
            None => 0,
        }
        .max(first_live.0);
        let (file, path) = create_segment(dir, next_id)?;
        sync_dir(dir)?;
        live.insert(next_id);

        let fsync_each_round = opts.sync_mode == SyncMode::Batch;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            fsync_each_round,
            segment_size: opts.segment_size,
            queue: Mutex::new(Queue {
                buf: Vec::new(),
                spare: Vec::new(),
                queued_seq: 0,
                written_seq: 0,
                synced_seq: 0,
                writer: false,
                syncer: false,
                sync_requested: 0,
                stop_sync_thread: false,
                failed: None,
            }),
            queue_cv: Condvar::new(),
            sync_cv: Condvar::new(),
            synced_tx: tokio::sync::watch::Sender::new((0, false)),
            active: Mutex::new(Active {
                id: next_id,
                path,
                file: Arc::new(file),
                len: 0,
                writeback_from: 0,
                rolled: Vec::new(),
            }),
            active_id: AtomicU64::new(next_id),
            segments: Mutex::new(live),
            spare: Mutex::new(None),
            #[cfg(test)]
            sync_events: Mutex::new(Vec::new()),
            bytes_written: AtomicU64::new(0),
            sync_latency: LatencyHistogram::new(),
            stop: Mutex::new(false),
            stop_cv: Condvar::new(),
        });
        let syncer = match opts.sync_mode {
            SyncMode::Batch => {
                let shared = Arc::clone(&shared);
                let handle = std::thread::Builder::new()
                    .name("commitlog-sync".into())
                    .spawn(move || shared.batch_sync_thread())
                    .map_err(|e| StorageError::io(dir, e))?;
                Some(handle)
            }
            SyncMode::Periodic { interval } => {
                let shared = Arc::clone(&shared);
                let handle = std::thread::Builder::new()
                    .name("commitlog-sync".into())
                    .spawn(move || shared.periodic_sync(interval))
                    .map_err(|e| StorageError::io(dir, e))?;
                Some(handle)
            }
        };
        Ok((CommitLog { shared, syncer }, replay))
    }

    /// Appends one record. In [`SyncMode::Batch`] it returns only after an
    /// fsync (fdatasync) that covers the record; concurrent appenders share
    /// fsyncs (group commit). In [`SyncMode::Periodic`] it returns once the
    /// record is written to the OS.
    pub fn append(&self, record: &[u8]) -> Result<()> {
        let ticket = self.append_unsynced(record)?;
        self.wait_synced(ticket)
    }

    /// Appends one record and returns once it is written to the OS (it
    /// survives a crash of this process), without waiting for an fsync.
    /// The ticket is for [`wait_synced`](Self::wait_synced): in
    /// [`SyncMode::Batch`] the record is durable against an OS crash only
    /// after that returns.
    pub fn append_unsynced(&self, record: &[u8]) -> Result<SyncTicket> {
        let header = framing::record_header(record)?;
        self.shared.submit(|buf| {
            buf.extend_from_slice(&header);
            buf.extend_from_slice(record);
        })
    }

    /// Waits until the record of `ticket` (and every record appended
    /// before it) is durable: in [`SyncMode::Batch`] until an fdatasync
    /// that covers it returned (sharing it with other waiters), in
    /// [`SyncMode::Periodic`] at once (the record was written, which is
    /// that mode's promise).
    pub fn wait_synced(&self, ticket: SyncTicket) -> Result<()> {
        if self.shared.fsync_each_round {
            self.shared.wait_synced(ticket.0)
        } else {
            self.shared.check_failed(&self.shared.queue.lock())
        }
    }

    /// [`wait_synced`](Self::wait_synced) for async callers: no thread
    /// blocks per waiter. In [`SyncMode::Batch`] the log's sync thread
    /// runs the fdatasync (or joins one a blocking waiter runs; group
    /// commit is shared by both kinds of waiters) and the task is woken
    /// once an fdatasync covering `ticket` has returned.
    pub async fn wait_synced_async(&self, ticket: SyncTicket) -> Result<()> {
        if !self.shared.fsync_each_round {
            return self.shared.check_failed(&self.shared.queue.lock());
        }
        // Subscribe first: a publication after this wakes `changed`.
        let mut rx = self.shared.synced_tx.subscribe();
        {
            let mut q = self.shared.queue.lock();
            if q.synced_seq >= ticket.0 {
                return Ok(());
            }
            self.shared.check_failed(&q)?;
            if q.sync_requested < ticket.0 {
                q.sync_requested = ticket.0;
                if !q.syncer {
                    self.shared.sync_cv.notify_one();
                }
            }
        }
        loop {
            {
                let (synced, failed) = *rx.borrow_and_update();
                if synced >= ticket.0 {
                    return Ok(());
                }
                if failed {
                    return self.shared.check_failed(&self.shared.queue.lock());
                }
            }
            if rx.changed().await.is_err() {
                return Err(StorageError::Closed("commit log closed".into()));
            }
        }
    }

    /// Same as [`append`](Self::append) for several records, written in
    /// order and made durable together.
    pub fn append_batch(&self, records: &[&[u8]]) -> Result<()> {
        if records.is_empty() {
            return self.shared.check_failed(&self.shared.queue.lock());
        }
        let headers = records
            .iter()
            .map(|r| framing::record_header(r))
            .collect::<Result<Vec<_>>>()?;
        let total: usize = records.iter().map(|r| r.len() + HEADER_LEN).sum();
        let ticket = self.shared.submit(|buf| {
            buf.reserve(total);
            for (header, record) in headers.iter().zip(records) {
                buf.extend_from_slice(header);
                buf.extend_from_slice(record);
            }
        })?;
        self.wait_synced(ticket)
    }

    /// Closes the active segment and opens a new one; returns the new active
    /// segment's id. Every record appended before `roll` was called (and
    /// every record queued when it takes over the log) is in a segment with a
    /// smaller id; appends that start after `roll` returns go to the returned
    /// segment or a later one.
    ///
    /// A roll does not fsync the old segment: its unsynced tail is synced by
    /// the next group-commit fsync (or periodic sync), before any record in
    /// it counts as durable. With a segment made ahead of time
    /// ([`prepare_next_segment`](Self::prepare_next_segment)) a roll does no
    /// I/O beyond writing the records already queued; without one it
    /// creates the file and fsyncs the directory itself.
    pub fn roll(&self) -> Result<SegmentId> {
        self.shared.roll()
    }

    /// Creates the file of the segment the next roll will switch to and
    /// fsyncs the directory, unless that is already done. Call it outside
    /// any lock appenders need, ahead of [`roll`](Self::roll) (the engine
    /// calls it from its background thread after each memtable switch and
    /// before taking its switch lock), so rolls take no file-system time.
    /// A file made and never used is empty, and dropped on the next open.
    pub fn prepare_next_segment(&self) -> Result<()> {
        self.shared.prepare_next_segment()
    }

    /// Whether the segment the next roll switches to is already made
    /// ([`prepare_next_segment`](Self::prepare_next_segment)), so that the
    /// roll takes no file-system time.
    pub fn next_segment_ready(&self) -> bool {
        self.shared.next_segment_ready()
    }

    /// Deletes all segments with id < `segment` (their data is flushed to
    /// SSTables and recorded in the manifest). Never deletes the active
    /// segment.
    pub fn release_before(&self, segment: SegmentId) -> Result<()> {
        self.shared.release_before(segment)
    }

    /// fsyncs everything appended so far.
    pub fn sync(&self) -> Result<()> {
        self.shared.sync()
    }

    /// Bytes written to disk by the log since open.
    pub fn bytes_written(&self) -> u64 {
        self.shared.bytes_written.load(Ordering::Relaxed)
    }

    /// How many syncs (group commits in [`SyncMode::Batch`], the
    /// background syncs in [`SyncMode::Periodic`]) ran since open, and how
    /// long their fdatasyncs took.
    pub fn sync_latency(&self) -> LatencySummary {
        self.shared.sync_latency.summary()
    }

    /// Id of the segment currently receiving appends.
    pub fn active_segment(&self) -> SegmentId {
        SegmentId(self.shared.active_id.load(Ordering::Acquire))
    }
}

impl Drop for CommitLog {
    fn drop(&mut self) {
        if let Some(handle) = self.syncer.take() {
            *self.shared.stop.lock() = true;
            self.shared.stop_cv.notify_all();
            self.shared.queue.lock().stop_sync_thread = true;
            self.shared.sync_cv.notify_all();
            if handle.join().is_err() {
                tracing::error!("commit log sync thread panicked");
            }
            // A clean shutdown loses nothing, even in periodic mode.
            if let Err(error) = self.shared.sync() {
                tracing::warn!(%error, "commit log: final sync on close failed");
            }
        }
    }
}

/// Creates the file of segment `id` (the caller fsyncs the directory).
fn create_segment(dir: &Path, id: u64) -> Result<(File, PathBuf)> {
    let path = dir.join(segment_file_name(SegmentId(id)));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| StorageError::io(&path, e))?;
    Ok((file, path))
}

impl Shared {
    fn check_failed(&self, q: &Queue) -> Result<()> {
        match &q.failed {
            None => Ok(()),
            Some(msg) => Err(StorageError::Closed(format!(
                "commit log stopped after an I/O error: {msg}"
            ))),
        }
    }

    /// Stops the log after an I/O error whose effect on disk is unknown.
    fn poison(&self, error: &StorageError) {
        let mut q = self.queue.lock();
        if q.failed.is_none() {
            tracing::error!(%error, "commit log stopped after an I/O error");
            q.failed = Some(error.to_string());
        }
        self.queue_cv.notify_all();
        self.publish(&q);
    }

    /// Tells async waiters how far the log is synced (and whether it
    /// failed).
    fn publish(&self, q: &Queue) {
        let now = (q.synced_seq, q.failed.is_some());
        self.synced_tx.send_if_modified(|v| {
            let changed = *v != now;
            *v = now;
            changed
        });
    }

    /// Body of the batch-mode sync thread: runs fdatasyncs for async
    /// waiters ([`CommitLog::wait_synced_async`]) whenever one asked for a
    /// submission not yet synced and no other thread is syncing.
    fn batch_sync_thread(&self) {
        let mut q = self.queue.lock();
        loop {
            if q.stop_sync_thread {
                return;
            }
            if q.failed.is_some() || q.syncer || q.sync_requested <= q.synced_seq {
                self.sync_cv.wait(&mut q);
                continue;
            }
            // A failure is recorded in the queue (every waiter sees it).
            let _ = self.run_sync(&mut q);
        }
    }

    /// Runs one fdatasync of everything written so far as the syncer (the
    /// caller checked that no one else is syncing), then records the
    /// outcome, wakes the waiters (blocking and async) and, if async
    /// waiters still need more, the sync thread. Returns it.
    fn run_sync(&self, q: &mut MutexGuard<'_, Queue>) -> Result<()> {
        q.syncer = true;
        // Everything written so far is in the active segment or in a
        // rolled one still on the unsynced list: `sync_written` syncs them
        // all.
        let upto = q.written_seq;
        let result = MutexGuard::unlocked(q, || self.sync_written());
        q.syncer = false;
        match &result {
            Ok(()) => q.synced_seq = q.synced_seq.max(upto),
            Err(e) => {
                if q.failed.is_none() {
                    tracing::error!(error = %e, "commit log stopped after an I/O error");
                    q.failed = Some(e.to_string());
                }
            }
        }
        self.queue_cv.notify_all();
        if q.sync_requested > q.synced_seq {
            self.sync_cv.notify_one();
        }
        self.publish(q);
        result
    }

    /// Takes everything queued for a round; the caller must be the writer.
    fn take_round(q: &mut Queue) -> (Vec<u8>, u64) {
        let spare = std::mem::take(&mut q.spare);
        (std::mem::replace(&mut q.buf, spare), q.queued_seq)
    }

    /// Ends a write round: records its outcome, recycles the buffer, wakes
    /// waiters.
    fn finish_round(
        &self,
        q: &mut Queue,
        mut batch: Vec<u8>,
        upto: u64,
        error: Option<&StorageError>,
    ) {
        q.writer = false;
        match error {
            None => q.written_seq = upto,
            Some(e) => {
                if q.failed.is_none() {
                    tracing::error!(error = %e, "commit log stopped after an I/O error");
                    q.failed = Some(e.to_string());
                }
                self.publish(q);
            }
        }
        // Keep one buffer of moderate size for reuse.
        if batch.capacity() <= 4 << 20 && q.spare.capacity() == 0 {
            batch.clear();
            q.spare = batch;
        }
        self.queue_cv.notify_all();
    }

    /// Queues framed bytes (written by `fill`) and waits until a round has
    /// written them to the OS; returns their ticket.
    fn submit(&self, fill: impl FnOnce(&mut Vec<u8>)) -> Result<SyncTicket> {
        let mut q = self.queue.lock();
        self.check_failed(&q)?;
        fill(&mut q.buf);
        q.queued_seq += 1;
        let my_seq = q.queued_seq;
        loop {
            if q.written_seq >= my_seq {
                return Ok(SyncTicket(my_seq));
            }
            self.check_failed(&q)?;
            if q.writer {
                self.queue_cv.wait(&mut q);
                continue;
            }
            q.writer = true;
            let (batch, upto) = Self::take_round(&mut q);
            let result = MutexGuard::unlocked(&mut q, || {
                let mut active = self.active.lock();
                self.write_locked(&mut active, &batch)?;
                if active.len >= self.segment_size {
                    if let Err(error) = self.roll_locked(&mut active) {
                        // The records are safe; keep using the current segment.
                        tracing::warn!(%error, "commit log: could not roll to a new segment");
                    }
                }
                Ok(())
            });
            self.finish_round(&mut q, batch, upto, result.as_ref().err());
            result?;
        }
    }

    /// Waits until an fdatasync that started after submission `seq` was
    /// written has returned; runs that fsync itself when no other thread
    /// is syncing.
    fn wait_synced(&self, seq: u64) -> Result<()> {
        let mut q = self.queue.lock();
        loop {
            if q.synced_seq >= seq {
                return Ok(());
            }
            self.check_failed(&q)?;
            if q.syncer || q.written_seq < seq {
                self.queue_cv.wait(&mut q);
                continue;
            }
            self.run_sync(&mut q)?;
        }
    }

    /// Writes `batch` to the active segment (no fsync: see `wait_synced`).
    fn write_locked(&self, active: &mut Active, batch: &[u8]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        (&*active.file)
            .write_all(batch)
            .map_err(|e| StorageError::io(&active.path, e))?;
        active.len += batch.len() as u64;
        self.bytes_written
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// fdatasyncs every segment that may hold written, unsynced records:
    /// the rolled-away segments on the unsynced list (oldest first), then
    /// the active one. Everything written before the call is durable when
    /// it returns `Ok`. Rolled segments leave the list only once synced,
    /// so a concurrent caller never skips one another is still syncing.
    fn sync_written(&self) -> Result<()> {
        let started = Instant::now();
        let (rolled, file, path, _len, _id) = {
            let active = self.active.lock();
            let rolled: Vec<(u64, Arc<File>, PathBuf, u64)> = active
                .rolled
                .iter()
                .map(|r| (r.id, Arc::clone(&r.file), r.path.clone(), r.len))
                .collect();
            (
                rolled,
                Arc::clone(&active.file),
                active.path.clone(),
                active.len,
                active.id,
            )
        };
        let got = started.elapsed();
        for (_id, file, path, _len) in &rolled {
            if let Err(e) = file.sync_data() {
                let error = StorageError::io(path, e);
                self.poison(&error);
                return Err(error);
            }
            #[cfg(test)]
            self.sync_events.lock().push((*_id, *_len));
        }
        if !rolled.is_empty() {
            let done: BTreeSet<u64> = rolled.iter().map(|r| r.0).collect();
            self.active.lock().rolled.retain(|r| !done.contains(&r.id));
        }
        if let Err(e) = file.sync_data() {
            let error = StorageError::io(&path, e);
            self.poison(&error);
            return Err(error);
        }
        #[cfg(test)]
        self.sync_events.lock().push((_id, _len));
        self.sync_latency.record(started.elapsed() - got);
        if started.elapsed() > Duration::from_millis(10) {
            tracing::debug!(
                wait_active_us = got.as_micros() as u64,
                fsync_us = (started.elapsed() - got).as_micros() as u64,
                rolled = rolled.len(),
                "slow commit log sync (timing)"
            );
        }
        Ok(())
    }

    /// See [`CommitLog::prepare_next_segment`].
    fn prepare_next_segment(&self) -> Result<()> {
        let mut spare = self.spare.lock();
        // Rolls take the spare lock before moving `active_id`, so it is
        // stable while we hold it.
        let next = self.next_segment_id(self.active_id.load(Ordering::Acquire))?;
        match spare.take() {
            Some(s) if s.id == next => {
                *spare = Some(s);
                return Ok(());
            }
            Some(stale) => {
                let _ = fs::remove_file(&stale.path);
            }
            None => {}
        }
        self.check_failed(&self.queue.lock())?;
        let started = Instant::now();
        let (file, path) = create_segment(&self.dir, next)?;
        if let Err(error) = sync_dir(&self.dir) {
            let _ = fs::remove_file(&path);
            return Err(error);
        }
        tracing::debug!(
            segment = next,
            us = started.elapsed().as_micros() as u64,
            "commit log: next segment made ahead (timing)"
        );
        *spare = Some(Spare {
            id: next,
            path,
            file,
        });
        Ok(())
    }

    fn next_segment_ready(&self) -> bool {
        let spare = self.spare.lock();
        let next = self.next_segment_id(self.active_id.load(Ordering::Acquire));
        matches!((&*spare, next), (Some(s), Ok(next)) if s.id == next)
    }

    fn next_segment_id(&self, active: u64) -> Result<u64> {
        active.checked_add(1).ok_or_else(|| {
            StorageError::InvalidArgument("commit log segment id space exhausted".into())
        })
    }

    /// Switches to a new segment: the spare made ahead of time if there is
    /// one, else a file created (and its directory entry fsynced) here.
    /// The old segment joins the unsynced list: no fsync here, so appenders
    /// and syncers are held up only for the switch itself.
    fn roll_locked(&self, active: &mut Active) -> Result<SegmentId> {
        let started = Instant::now();
        let id = self.next_segment_id(active.id)?;
        let mut spare = self.spare.lock();
        let prepared = matches!(&*spare, Some(s) if s.id == id);
        let (file, path) = match spare.take() {
            Some(s) if s.id == id => (s.file, s.path),
            other => {
                if let Some(stale) = other {
                    let _ = fs::remove_file(&stale.path);
                }
                let (file, path) = create_segment(&self.dir, id)?;
                if let Err(error) = sync_dir(&self.dir) {
                    // Leave no half-created segment behind; the old one
                    // stays active.
                    let _ = fs::remove_file(&path);
                    return Err(error);
                }
                (file, path)
            }
        };
        self.segments.lock().insert(id);
        let old = std::mem::replace(
            active,
            Active {
                id,
                path,
                file: Arc::new(file),
                len: 0,
                writeback_from: 0,
                rolled: Vec::new(),
            },
        );
        active.rolled = old.rolled;
        if old.len > 0 {
            active.rolled.push(Rolled {
                id: old.id,
                path: old.path,
                file: old.file,
                len: old.len,
            });
        }
        self.active_id.store(id, Ordering::Release);
        drop(spare);
        tracing::debug!(
            prepared,
            us = started.elapsed().as_micros() as u64,
            "commit log roll (timing)"
        );
        Ok(SegmentId(id))
    }

    fn roll(&self) -> Result<SegmentId> {
        let mut q = self.queue.lock();
        loop {
            self.check_failed(&q)?;
            if !q.writer {
                break;
            }
            self.queue_cv.wait(&mut q);
        }
        q.writer = true;
        // Records already queued go to the old segment.
        let (batch, upto) = Self::take_round(&mut q);
        let (written, rolled) = MutexGuard::unlocked(&mut q, || {
            let mut active = self.active.lock();
            match self.write_locked(&mut active, &batch) {
                Ok(()) => (Ok(()), self.roll_locked(&mut active)),
                Err(e) => {
                    let msg = e.to_string();
                    (Err(e), Err(StorageError::Closed(msg)))
                }
            }
        });
        self.finish_round(&mut q, batch, upto, written.as_ref().err());
        written?;
        rolled
    }

    fn release_before(&self, segment: SegmentId) -> Result<()> {
        let active = self.active_id.load(Ordering::Acquire);
        let limit = segment.0.min(active);
        // A released segment's records are in a synced SSTable: take it off
        // the unsynced list too. Otherwise the next sync would fdatasync the
        // deleted file (its open handle keeps it alive) and write tens of
        // MiB back to the disk for nothing; closing the last handle drops
        // those pages instead. (Locked apart from `segments`: rolls take
        // `active` first.)
        let _released: Vec<Rolled> = {
            let mut active = self.active.lock();
            let (keep, released) = std::mem::take(&mut active.rolled)
                .into_iter()
                .partition(|r| r.id >= limit);
            active.rolled = keep;
            released
        };
        // Declared after `_released`, so dropped before it on every return:
        // the last handles of the deleted files close (and the OS frees
        // their pages) with no lock held that appenders or rolls wait for.
        let mut segments = self.segments.lock();
        let victims: Vec<u64> = segments.range(..limit).copied().collect();
        if victims.is_empty() {
            return Ok(());
        }
        for id in victims {
            remove_if_exists(&self.dir.join(segment_file_name(SegmentId(id))))?;
            segments.remove(&id);
        }
        sync_dir(&self.dir)
    }

    fn sync(&self) -> Result<()> {
        self.check_failed(&self.queue.lock())?;
        self.sync_written()
    }

    /// Starts the writeback of what the active segment received since the
    /// last call, once that is at least [`writeback::CHUNK`]; returns the
    /// bytes it asked for.
    fn nudge_writeback(&self) -> u64 {
        let (file, from, len) = {
            let mut active = self.active.lock();
            let len = active.len.saturating_sub(active.writeback_from);
            if len < writeback::CHUNK {
                return 0;
            }
            let from = active.writeback_from;
            active.writeback_from = active.len;
            (Arc::clone(&active.file), from, len)
        };
        writeback::start(&file, from, len);
        len
    }

    /// Body of the periodic-mode background thread: an fdatasync every
    /// `interval`, and in between, every tenth of it (0.1-1 s), the
    /// writeback of what was appended is started so the fdatasync finds
    /// little left to write.
    fn periodic_sync(&self, interval: Duration) {
        let mut synced_upto = 0u64;
        let mut stop = self.stop.lock();
        // Replicas started together (and receiving the same writes) would
        // sync in step, all writing at the same moment: the first sync
        // comes at a random point of the second half of the interval.
        let mut deadline = Instant::now() + interval.mul_f64(0.5 + 0.5 * rand::random::<f64>());
        let nudge_every = (interval / 10).clamp(Duration::from_millis(100), Duration::from_secs(1));
        loop {
            if *stop {
                return;
            }
            let wake = deadline.min(Instant::now() + nudge_every);
            if !self.stop_cv.wait_until(&mut stop, wake).timed_out() {
                continue; // woken early: re-check `stop`
            }
            if Instant::now() < deadline {
                MutexGuard::unlocked(&mut stop, || self.nudge_writeback());
                continue;
            }
            deadline = Instant::now() + interval;
            let written = self.bytes_written.load(Ordering::Relaxed);
            if written == synced_upto {
                continue;
            }
            let result = MutexGuard::unlocked(&mut stop, || self.sync());
            match result {
                Ok(()) => synced_upto = written,
                Err(error) => {
                    tracing::warn!(%error, "commit log: periodic sync failed; stopping it");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn opts() -> CommitLogOptions {
        CommitLogOptions::default()
    }

    /// Periodic mode whose own sync never comes during a test: the test
    /// syncs (or nudges) by hand.
    fn periodic_never_due() -> CommitLogOptions {
        CommitLogOptions {
            sync_mode: SyncMode::Periodic {
                interval: Duration::from_secs(3600),
            },
            ..opts()
        }
    }

    fn segment_path(dir: &Path, id: SegmentId) -> PathBuf {
        dir.join(segment_file_name(id))
    }

    fn payloads(replay: &Replay) -> Vec<Vec<u8>> {
        replay.records.iter().map(|(_, r)| r.clone()).collect()
    }

    #[test]
    fn commit_log_is_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<CommitLog>();
    }

    #[test]
    fn sync_latency_counts_each_sync_and_only_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = CommitLog::open(dir.path(), SegmentId(0), opts()).unwrap();
        assert_eq!(log.sync_latency().count, 0, "nothing synced at open");
        // One after another, each batch-mode append runs its own sync.
        for i in 0..5u8 {
            log.append(&[i; 100]).unwrap();
        }
        let s = log.sync_latency();
        assert_eq!(s.count, 5, "{s:?}");
        assert!(s.p50_us <= s.p99_us && s.p99_us <= s.max_us, "{s:?}");
        drop(log);

        // In periodic mode an append syncs nothing; a sync counts once.
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = CommitLog::open(dir.path(), SegmentId(0), periodic_never_due()).unwrap();
        for i in 0..5u8 {
            log.append(&[i; 100]).unwrap();
        }
        assert_eq!(log.sync_latency().count, 0);
        log.sync().unwrap();
        assert_eq!(log.sync_latency().count, 1);
    }

    #[test]
    fn segment_names_round_trip() {
        let name = segment_file_name(SegmentId(42));
        assert_eq!(name, "commitlog-00000000000000000042.log");
        assert_eq!(parse_segment_file_name(&name), Some(SegmentId(42)));
        assert_eq!(parse_segment_file_name("commitlog-42.log"), None);
        assert_eq!(
            parse_segment_file_name("commitlog-99999999999999999999.log"),
            None
        );
    }

    #[test]
    fn append_reopen_replay() {
        let dir = tempfile::tempdir().unwrap();
        let (log, replay) = CommitLog::open(dir.path(), SegmentId(0), opts()).unwrap();
        assert!(replay.records.is_empty() && replay.problems.is_empty());
        let first = log.active_segment();
        log.append(b"one").unwrap();
        log.append(b"").unwrap();
        log.append_batch(&[b"two", b"three"]).unwrap();
        log.append_batch(&[]).unwrap();
        let expected_bytes: u64 = [3usize, 0, 3, 5]
            .iter()
            .map(|&n| framing::encoded_len(n) as u64)
            .sum();
        assert_eq!(log.bytes_written(), expected_bytes);
        drop(log);

        let (log, replay) = CommitLog::open(dir.path(), SegmentId(0), opts()).unwrap();
        assert!(replay.problems.is_empty());
        assert_eq!(
            payloads(&replay),
            vec![b"one".to_vec(), vec![], b"two".to_vec(), b"three".to_vec()]
        );
        assert!(replay.records.iter().all(|(s, _)| *s == first));
        assert!(log.active_segment() > first);
        assert_eq!(log.bytes_written(), 0);
    }

    #[test]
    fn concurrent_batch_appends_all_replay() {
        let dir = tempfile::tempdir().unwrap();
        let opts = CommitLogOptions {
            segment_size: 16 << 10, // force automatic rolls too
            ..opts()
        };
        let (log, _) = CommitLog::open(dir.path(), SegmentId(0), opts.clone()).unwrap();
        let threads = 16;
        let per_thread = 200;
        std::thread::scope(|s| {
            for t in 0..threads {
                let log = &log;
                s.spawn(move || {
                    for i in 0..per_thread {
                        let rec = format!("t{t}-r{i}-{}", "x".repeat(i % 50));
                        if i % 7 == 0 {
                            let second = format!("{rec}-b");
                            log.append_batch(&[rec.as_bytes(), second.as_bytes()])
                                .unwrap();
                        } else {
                            log.append(rec.as_bytes()).unwrap();
                        }
                    }
                });
            }
        });
        assert!(
            log.active_segment() > SegmentId(1),
            "segment_size should roll"
        );
        drop(log);
        let (_log, replay) = CommitLog::open(dir.path(), SegmentId(0), opts).unwrap();
        assert!(replay.problems.is_empty());
        let got: Vec<String> = replay
            .records
            .iter()
            .map(|(_, r)| String::from_utf8(r.clone()).unwrap())
            .collect();
        let set: HashSet<&String> = got.iter().collect();
        assert_eq!(set.len(), got.len(), "no duplicates");
        let mut expected = 0;
        for t in 0..threads {
            // Each thread's records replay in its append order.
            let mine: Vec<&String> = got
                .iter()
                .filter(|r| r.starts_with(&format!("t{t}-")))
                .collect();
            let mut want = Vec::new();
            for i in 0..per_thread {
                let rec = format!("t{t}-r{i}-{}", "x".repeat(i % 50));
                if i % 7 == 0 {
                    want.push(rec.clone());
                    want.push(format!("{rec}-b"));
                } else {
                    want.push(rec);
                }
            }
            assert_eq!(mine, want.iter().collect::<Vec<_>>());
            expected += want.len();
        }
        assert_eq!(got.len(), expected);
        // Segments replay in id order.
        assert!(replay.records.windows(2).all(|w| w[0].0 <= w[1].0));
    }

    #[test]
    fn unsynced_appends_are_written_at_once_and_syncs_cover_earlier_tickets() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = CommitLog::open(dir.path(), SegmentId(0), opts()).unwrap();
        let active = segment_path(dir.path(), log.active_segment());
        let first = log.append_unsynced(b"first").unwrap();
        let second = log.append_unsynced(b"second").unwrap();
        assert!(first < second);
        // Both are in the file (handed to the OS) before any sync.
        let len = (framing::encoded_len(5) + framing::encoded_len(6)) as u64;
        assert_eq!(fs::metadata(&active).unwrap().len(), len);
        assert_eq!(log.bytes_written(), len);
        log.wait_synced(second).unwrap();
        // An earlier ticket is covered by the later sync.
        log.wait_synced(first).unwrap();

        // Many threads, write and sync split, rolls in between: every
        // record replays once.
        let small = CommitLogOptions {
            segment_size: 4 << 10,
            ..opts()
        };
        drop(log);
        let (log, _) = CommitLog::open(dir.path(), SegmentId(0), small.clone()).unwrap();
        std::thread::scope(|s| {
            for t in 0..8 {
                let log = &log;
                s.spawn(move || {
                    let mut pending = Vec::new();
                    for i in 0..100 {
                        let rec = format!("t{t}-{i}-{}", "y".repeat(i % 40));
                        pending.push(log.append_unsynced(rec.as_bytes()).unwrap());
                        if i % 3 == 0 {
                            for ticket in pending.drain(..) {
                                log.wait_synced(ticket).unwrap();
                            }
                        }
                    }
                    for ticket in pending {
                        log.wait_synced(ticket).unwrap();
                    }
                });
            }
        });
        drop(log);
        let (_log, replay) = CommitLog::open(dir.path(), SegmentId(0), small).unwrap();
        assert!(replay.problems.is_empty());
        let got: HashSet<Vec<u8>> = payloads(&replay).into_iter().collect();
        assert_eq!(replay.records.len(), 2 + 800);
        assert_eq!(got.len(), 2 + 800);
        assert!(got.contains(b"first".as_slice()) && got.contains(b"second".as_slice()));
        for t in 0..8 {
            for i in 0..100 {
                let rec = format!("t{t}-{i}-{}", "y".repeat(i % 40));
                assert!(got.contains(rec.as_bytes()), "{rec} lost");
            }
        }
    }

    #[test]
    fn periodic_mode_wait_synced_returns_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = CommitLog::open(dir.path(), SegmentId(0), periodic_never_due()).unwrap();
        let ticket = log.append_unsynced(b"x").unwrap();
        // The background sync runs once an hour: this returns without it.
        log.wait_synced(ticket).unwrap();
        assert_eq!(log.bytes_written(), framing::encoded_len(1) as u64);
    }

    #[test]
    fn roll_and_release_before() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = CommitLog::open(dir.path(), SegmentId(5), opts()).unwrap();
        assert_eq!(log.active_segment(), SegmentId(5));
        log.append(b"a").unwrap();
        let s6 = log.roll().unwrap();
        assert_eq!(s6, SegmentId(6));
        log.append(b"b").unwrap();
        let s7 = log.roll().unwrap();
        log.append(b"c").unwrap();
        let s8 = log.roll().unwrap();
        assert_eq!(s8, SegmentId(8));
        assert_eq!(log.active_segment(), s8);
        for id in 5..=8 {
            assert!(segment_path(dir.path(), SegmentId(id)).exists());
        }
        log.release_before(s7).unwrap();
        assert!(!segment_path(dir.path(), SegmentId(5)).exists());
        assert!(!segment_path(dir.path(), SegmentId(6)).exists());
        assert!(segment_path(dir.path(), s7).exists());
        assert!(segment_path(dir.path(), s8).exists());
        // Never deletes the active segment, even when asked to.
        log.release_before(SegmentId(100)).unwrap();
        assert!(!segment_path(dir.path(), s7).exists());
        assert!(segment_path(dir.path(), s8).exists());
        log.append(b"d").unwrap();
        drop(log);

        let (_log, replay) = CommitLog::open(dir.path(), SegmentId(8), opts()).unwrap();
        assert_eq!(replay.records, vec![(s8, b"d".to_vec())]);
    }

    #[test]
    fn roll_leaves_the_old_segments_tail_to_the_next_sync() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = CommitLog::open(dir.path(), SegmentId(0), opts()).unwrap();
        let old = log.active_segment();
        log.prepare_next_segment().unwrap();
        let spare = segment_path(dir.path(), SegmentId(old.0 + 1));
        assert!(spare.exists(), "the next segment is made ahead");
        let before = log.append_unsynced(b"before the roll").unwrap();
        let new = log.roll().unwrap();
        assert_eq!(new, SegmentId(old.0 + 1));
        // The roll itself synced nothing.
        assert!(log.shared.sync_events.lock().is_empty());
        let after = log.append_unsynced(b"after").unwrap();
        // Waiting for the record written before the roll syncs the old
        // segment, whole: without that the ack would be a lie.
        log.wait_synced(before).unwrap();
        let events = log.shared.sync_events.lock().clone();
        let old_len = framing::encoded_len(15) as u64;
        assert!(
            events.contains(&(old.0, old_len)),
            "old segment not synced: {events:?}"
        );
        log.wait_synced(after).unwrap();
        // Once synced, the old segment leaves the unsynced list.
        log.shared.sync_events.lock().clear();
        log.sync().unwrap();
        let events = log.shared.sync_events.lock().clone();
        assert!(events.iter().all(|&(id, _)| id == new.0), "{events:?}");
        drop(log);
        let (_log, replay) = CommitLog::open(dir.path(), SegmentId(0), opts()).unwrap();
        assert_eq!(
            replay.records,
            vec![(old, b"before the roll".to_vec()), (new, b"after".to_vec())]
        );
    }

    #[test]
    fn released_segments_are_not_synced_again() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = CommitLog::open(dir.path(), SegmentId(0), periodic_never_due()).unwrap();
        let first = log.active_segment();
        log.append(b"flushed elsewhere").unwrap();
        let second = log.roll().unwrap();
        log.append(b"still needed").unwrap();
        let third = log.roll().unwrap();
        log.append(b"active").unwrap();
        // The memtable holding the first segment's records was flushed:
        // the segment is released before any sync ran.
        log.release_before(second).unwrap();
        assert!(!segment_path(dir.path(), first).exists());
        log.sync().unwrap();
        let synced: Vec<u64> = log
            .shared
            .sync_events
            .lock()
            .iter()
            .map(|&(id, _)| id)
            .collect();
        assert_eq!(
            synced,
            vec![second.0, third.0],
            "the released segment is not synced"
        );
        drop(log);
        let (_log, replay) = CommitLog::open(dir.path(), SegmentId(0), opts()).unwrap();
        assert_eq!(
            replay.records,
            vec![
                (second, b"still needed".to_vec()),
                (third, b"active".to_vec())
            ]
        );
    }

    #[test]
    fn the_periodic_thread_starts_the_writeback_of_each_new_chunk_once() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = CommitLog::open(dir.path(), SegmentId(0), periodic_never_due()).unwrap();
        let record = vec![7u8; 64 * 1024];
        log.append(&record).unwrap();
        assert_eq!(log.shared.nudge_writeback(), 0, "less than a chunk waits");
        for _ in 0..20 {
            log.append(&record).unwrap();
        }
        let written = log.shared.active.lock().len;
        assert_eq!(
            log.shared.nudge_writeback(),
            written,
            "everything appended so far"
        );
        assert_eq!(log.shared.nudge_writeback(), 0, "nothing new since");
        for _ in 0..20 {
            log.append(&record).unwrap();
        }
        let more = log.shared.active.lock().len - written;
        assert_eq!(log.shared.nudge_writeback(), more, "only what came after");
        log.roll().unwrap();
        log.append(&record).unwrap();
        assert_eq!(
            log.shared.nudge_writeback(),
            0,
            "a new segment starts from zero"
        );
        drop(log);
        let (_log, replay) = CommitLog::open(dir.path(), SegmentId(0), opts()).unwrap();
        assert_eq!(replay.records.len(), 42);
    }

    #[test]
    fn an_unused_spare_segment_is_dropped_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = CommitLog::open(dir.path(), SegmentId(0), opts()).unwrap();
        log.append(b"a").unwrap();
        log.prepare_next_segment().unwrap();
        log.prepare_next_segment().unwrap(); // idempotent
        assert_eq!(list_segments(dir.path()).unwrap().len(), 2);
        drop(log);
        let (log, replay) = CommitLog::open(dir.path(), SegmentId(0), opts()).unwrap();
        assert_eq!(payloads(&replay), vec![b"a".to_vec()]);
        // The empty spare is gone; the new active segment is above it.
        assert_eq!(log.active_segment(), SegmentId(2));
        assert_eq!(list_segments(dir.path()).unwrap(), BTreeSet::from([0, 2]));
    }

    #[test]
    fn async_waiters_are_woken_by_syncs_that_cover_them() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(CommitLog::open(dir.path(), SegmentId(0), opts()).unwrap().0);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let acks: Vec<(Vec<u8>, usize)> = rt.block_on(async {
            let mut tasks = Vec::new();
            for t in 0..8 {
                let log = Arc::clone(&log);
                tasks.push(tokio::spawn(async move {
                    let mut acks = Vec::new();
                    for i in 0..50 {
                        let rec = format!("a{t}-{i}").into_bytes();
                        let ticket = log.append_unsynced(&rec).unwrap();
                        if i % 10 == 0 {
                            log.roll().unwrap();
                        }
                        // Blocking and async waiters share group commit.
                        if t == 0 {
                            let log = Arc::clone(&log);
                            tokio::task::spawn_blocking(move || log.wait_synced(ticket))
                                .await
                                .unwrap()
                                .unwrap();
                        } else {
                            log.wait_synced_async(ticket).await.unwrap();
                        }
                        acks.push((rec, log.shared.sync_events.lock().len()));
                    }
                    acks
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            all
        });
        let events = log.shared.sync_events.lock().clone();
        drop(log);
        let (_log, replay) = CommitLog::open(dir.path(), SegmentId(0), opts()).unwrap();
        let mut ends = std::collections::HashMap::new();
        let mut offset_in: std::collections::HashMap<SegmentId, u64> = Default::default();
        for (seg, rec) in &replay.records {
            let off = offset_in.entry(*seg).or_default();
            *off += framing::encoded_len(rec.len()) as u64;
            ends.insert(rec.clone(), (*seg, *off));
        }
        assert_eq!(acks.len(), 400);
        for (rec, seen) in acks {
            let (seg, end) = ends[&rec];
            assert!(
                events[..seen]
                    .iter()
                    .any(|&(id, len)| id == seg.0 && len >= end),
                "{} acknowledged before it was synced",
                String::from_utf8_lossy(&rec)
            );
        }
    }

    #[test]
    fn periodic_sync_covers_rolled_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = CommitLog::open(dir.path(), SegmentId(0), periodic_never_due()).unwrap();
        let old = log.active_segment();
        log.append(b"x").unwrap();
        log.roll().unwrap();
        log.sync().unwrap();
        let events = log.shared.sync_events.lock().clone();
        assert!(events.iter().any(|&(id, _)| id == old.0), "{events:?}");
    }

    /// Every acknowledged record must be covered by an fdatasync of its
    /// segment, at a length past its end, that finished before the ack:
    /// checked for records written just before rolls, with rolls (made
    /// ahead and not) racing the appenders and the syncers.
    #[test]
    fn every_ack_is_covered_by_a_sync_of_its_segment_across_rolls() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = CommitLog::open(dir.path(), SegmentId(0), opts()).unwrap();
        let done = std::sync::atomic::AtomicBool::new(false);
        let acks: Mutex<Vec<(Vec<u8>, usize)>> = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            let roller = s.spawn(|| {
                let mut n = 0u32;
                while !done.load(Ordering::Relaxed) {
                    if n.is_multiple_of(2) {
                        log.prepare_next_segment().unwrap();
                    }
                    log.roll().unwrap();
                    n += 1;
                    std::thread::sleep(Duration::from_micros(300));
                }
                n
            });
            let writers: Vec<_> = (0..6)
                .map(|t| {
                    let (log, acks) = (&log, &acks);
                    s.spawn(move || {
                        for i in 0..150 {
                            let rec = format!("t{t}-{i}").into_bytes();
                            let ticket = log.append_unsynced(&rec).unwrap();
                            if i % 5 == 0 {
                                std::thread::yield_now();
                            }
                            log.wait_synced(ticket).unwrap();
                            let seen = log.shared.sync_events.lock().len();
                            acks.lock().push((rec, seen));
                        }
                    })
                })
                .collect();
            for w in writers {
                w.join().unwrap();
            }
            done.store(true, Ordering::Relaxed);
            assert!(roller.join().unwrap() > 3, "rolls ran");
        });
        let events = log.shared.sync_events.lock().clone();
        drop(log);
        let (_log, replay) = CommitLog::open(dir.path(), SegmentId(0), opts()).unwrap();
        // End offset of every record in its segment.
        let mut ends = std::collections::HashMap::new();
        let mut offset_in: std::collections::HashMap<SegmentId, u64> = Default::default();
        for (seg, rec) in &replay.records {
            let off = offset_in.entry(*seg).or_default();
            *off += framing::encoded_len(rec.len()) as u64;
            ends.insert(rec.clone(), (*seg, *off));
        }
        let acks = acks.into_inner();
        assert_eq!(acks.len(), 6 * 150);
        for (rec, seen) in acks {
            let (seg, end) = ends[&rec];
            assert!(
                events[..seen]
                    .iter()
                    .any(|&(id, len)| id == seg.0 && len >= end),
                "{} acknowledged before its segment {} was synced past {end}",
                String::from_utf8_lossy(&rec),
                seg.0
            );
        }
    }

    #[test]
    fn open_deletes_segments_below_first_live() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = CommitLog::open(dir.path(), SegmentId(0), opts()).unwrap();
        log.append(b"old").unwrap();
        let s1 = log.roll().unwrap();
        log.append(b"new").unwrap();
        drop(log);
        let (log, replay) = CommitLog::open(dir.path(), s1, opts()).unwrap();
        assert_eq!(replay.records, vec![(s1, b"new".to_vec())]);
        assert!(!segment_path(dir.path(), SegmentId(0)).exists());
        assert_eq!(log.active_segment(), SegmentId(2));
    }

    #[test]
    fn torn_tail_truncated_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = CommitLog::open(dir.path(), SegmentId(0), opts()).unwrap();
        let seg = log.active_segment();
        for i in 0..10u8 {
            log.append(&[i; 100]).unwrap();
        }
        drop(log);
        let path = segment_path(dir.path(), seg);
        let full = fs::metadata(&path).unwrap().len();
        let rec = framing::encoded_len(100) as u64;
        // Cut the last record in the middle of its payload.
        let cut = full - 40;
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(cut)
            .unwrap();

        let (log, replay) = CommitLog::open(dir.path(), SegmentId(0), opts()).unwrap();
        assert_eq!(replay.records.len(), 9);
        assert_eq!(replay.problems.len(), 1);
        match &replay.problems[0] {
            StorageError::Corrupt {
                offset,
                reason,
                path: p,
            } => {
                assert_eq!(*offset, 9 * rec);
                assert!(reason.contains("torn tail"), "{reason}");
                assert_eq!(p, &path);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(fs::metadata(&path).unwrap().len(), 9 * rec);
        log.append(b"after").unwrap();
        drop(log);

        let (_log, replay) = CommitLog::open(dir.path(), SegmentId(0), opts()).unwrap();
        assert!(replay.problems.is_empty(), "{:?}", replay.problems);
        let got = payloads(&replay);
        assert_eq!(got.len(), 10);
        assert_eq!(got[8], vec![8u8; 100]);
        assert_eq!(got[9], b"after".to_vec());
    }

    #[test]
    fn flipped_byte_reported_and_later_records_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = CommitLog::open(dir.path(), SegmentId(0), opts()).unwrap();
        let seg = log.active_segment();
        for i in 0..10u8 {
            log.append(&[i; 64]).unwrap();
        }
        drop(log);
        let path = segment_path(dir.path(), seg);
        let mut data = fs::read(&path).unwrap();
        let rec = framing::encoded_len(64);
        data[4 * rec + HEADER_LEN + 10] ^= 0xff;
        fs::write(&path, &data).unwrap();

        let (_log, replay) = CommitLog::open(dir.path(), SegmentId(0), opts()).unwrap();
        let expected: Vec<Vec<u8>> = (0..10u8).filter(|&i| i != 4).map(|i| vec![i; 64]).collect();
        assert_eq!(payloads(&replay), expected);
        assert_eq!(replay.problems.len(), 1);
        assert!(
            matches!(&replay.problems[0], StorageError::Corrupt { offset, .. } if *offset == 4 * rec as u64)
        );
        // The damage is in the middle: the file is left as it was.
        assert_eq!(fs::read(&path).unwrap(), data);
    }

    #[test]
    fn corrupt_tail_of_last_segment_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = CommitLog::open(dir.path(), SegmentId(0), opts()).unwrap();
        let seg = log.active_segment();
        log.append(b"good").unwrap();
        drop(log);
        let path = segment_path(dir.path(), seg);
        let good_len = fs::metadata(&path).unwrap().len();
        // Zeros appended after the good record (as after a crash mid-append).
        let mut data = fs::read(&path).unwrap();
        data.extend_from_slice(&[0u8; 100]);
        fs::write(&path, &data).unwrap();
        let (_log, replay) = CommitLog::open(dir.path(), SegmentId(0), opts()).unwrap();
        assert_eq!(payloads(&replay), vec![b"good".to_vec()]);
        assert_eq!(replay.problems.len(), 1);
        assert_eq!(fs::metadata(&path).unwrap().len(), good_len);
    }

    #[test]
    fn periodic_mode_works_and_thread_stops_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let opts = CommitLogOptions {
            sync_mode: SyncMode::Periodic {
                interval: Duration::from_millis(10),
            },
            ..opts()
        };
        let (log, _) = CommitLog::open(dir.path(), SegmentId(0), opts.clone()).unwrap();
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let log = &log;
                s.spawn(move || {
                    for i in 0..100u8 {
                        log.append(&[t, i]).unwrap();
                    }
                });
            }
        });
        std::thread::sleep(Duration::from_millis(30));
        log.sync().unwrap();
        // The background thread holds a reference to the shared state; after
        // drop joins it, ours is the only one left.
        let weak = Arc::downgrade(&log.shared);
        assert_eq!(weak.strong_count(), 2);
        drop(log);
        assert_eq!(weak.strong_count(), 0, "sync thread still running");

        let (_log, replay) = CommitLog::open(dir.path(), SegmentId(0), opts).unwrap();
        assert_eq!(replay.records.len(), 400);
        assert!(replay.problems.is_empty());
    }

    #[test]
    fn invalid_options_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let zero_seg = CommitLogOptions {
            segment_size: 0,
            ..opts()
        };
        assert!(matches!(
            CommitLog::open(dir.path(), SegmentId(0), zero_seg),
            Err(StorageError::InvalidArgument(_))
        ));
        let zero_interval = CommitLogOptions {
            sync_mode: SyncMode::Periodic {
                interval: Duration::ZERO,
            },
            ..opts()
        };
        assert!(matches!(
            CommitLog::open(dir.path(), SegmentId(0), zero_interval),
            Err(StorageError::InvalidArgument(_))
        ));
    }

    #[test]
    fn reopen_without_writes_does_not_pile_up_segments() {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..5 {
            let _ = CommitLog::open(dir.path(), SegmentId(0), opts()).unwrap();
        }
        assert_eq!(list_segments(dir.path()).unwrap().len(), 1);
    }
}
