//! Automatic repair: every `auto_repair_interval`, the node repairs the
//! ranges it is the first replica of, in every table, so that with every
//! node doing the same each range is repaired once per interval without an
//! operator (as Riak's active anti-entropy does; Cassandra needs
//! `nodetool repair` run from cron, or its automatic repair since 5.0).
//!
//! - **When.** `interval` after the last *complete* automatic repair. That
//!   time is kept in the data directory ([`STATE_FILE`]), so a restart
//!   neither postpones the next repair nor repeats one just done. A node
//!   that never completed one waits `interval` from its start. Each wait
//!   gets a random extra of up to a tenth of the interval (at most ten
//!   minutes), so nodes started together do not repair together.
//! - **Incomplete.** A repair with a replica down or a span that failed
//!   does not count (for `gc_grace_seconds` neither). One that was
//!   incomplete only because replicas were down is run again once every
//!   node is up (checked every few seconds: a repair cannot complete
//!   before, and running it again meanwhile would read all the data again
//!   for nothing). One where spans failed is tried again after an eighth
//!   of the interval (between one second and one hour); so is one that
//!   could not start because another repair ran.
//! - **Cost.** It is the repair `ringdb admin repair --primary-range` runs:
//!   slices compared by hashes, only differing slices streamed, under the
//!   node's stream limit. `admin status` shows when the last one completed
//!   and when the next is due.
//! - **What it does not cover.** The primary ranges of a node that is down
//!   are repaired by nobody until it is back (the others repair their own
//!   ranges, which overlap its replicas, but not the ranges it leads).

use super::{all_tables, write_durably};
use crate::coordinator::ClusterStore;
use crate::schema::SchemaStore;
use parking_lot::Mutex;
use rand::RngExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The file of the data directory that keeps when the last automatic
/// repair completed: one line, `last_complete_ms <milliseconds since the
/// Unix epoch>`.
pub const STATE_FILE: &str = "auto-repair";

/// The default interval: a day, well inside the default
/// `gc_grace_seconds` of ten days.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// The longest extra wait added to spread nodes out.
const MAX_JITTER: Duration = Duration::from_secs(600);

/// How often a repair that found replicas down looks whether every node
/// is up again.
const UP_CHECK: Duration = Duration::from_secs(5);

/// Why a repair did not complete, which decides when it runs again.
#[derive(Debug)]
enum Shortfall {
    /// Only because replicas were down: again once every node is up.
    ReplicasDown(String),
    /// Spans failed, or the repair could not run: again after a while.
    Failed(String),
}

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateFileError {
    /// It exists but could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Its text is not one `last_complete_ms <milliseconds>` line.
    #[error("{path}: expected one line `last_complete_ms <milliseconds>`, found {found:?}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What it holds (at most 80 characters).
        found: String,
    },
}

/// What the automatic repair of a node did and will do, for `admin
/// status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AutoRepairState {
    /// Wall-clock milliseconds when the last complete one ended.
    pub last_complete_ms: Option<u64>,
    /// Wall-clock milliseconds when the next one is due (`None` while one
    /// runs, or when it is off).
    pub next_due_ms: Option<u64>,
    /// Why the last attempt did not complete, when it did not.
    pub last_problem: Option<String>,
    /// The last attempt found replicas down, and the next waits until
    /// every node is up.
    pub waiting_for_nodes: bool,
}

/// The automatic repair of one node; [`AutoRepair::run`] is its task.
pub struct AutoRepair {
    cluster: ClusterStore,
    schema: Arc<SchemaStore>,
    interval: Duration,
    path: PathBuf,
    state: Mutex<AutoRepairState>,
}

impl AutoRepair {
    /// The automatic repair of the node with `data_dir`, every `interval`
    /// (zero: off). A state file that cannot be used is logged and
    /// treated as absent: the next repair is then an interval away.
    pub fn new(
        cluster: ClusterStore,
        schema: Arc<SchemaStore>,
        interval: Duration,
        data_dir: &Path,
    ) -> Arc<AutoRepair> {
        let path = data_dir.join(STATE_FILE);
        let last_complete_ms = match read_state(&path) {
            Ok(last) => last,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring the automatic repair's state file");
                None
            }
        };
        Arc::new(AutoRepair {
            cluster,
            schema,
            interval,
            path,
            state: Mutex::new(AutoRepairState {
                last_complete_ms,
                ..AutoRepairState::default()
            }),
        })
    }

    /// What it did and will do.
    pub fn state(&self) -> AutoRepairState {
        self.state.lock().clone()
    }

    /// Repairs every interval, forever; returns at once when it is off.
    pub async fn run(self: Arc<Self>) {
        if self.interval.is_zero() {
            return;
        }
        let last = self.state.lock().last_complete_ms;
        let mut wait = first_wait(self.interval, last, wall_ms(), jitter(self.interval));
        loop {
            self.state.lock().next_due_ms = Some(wall_ms().saturating_add(millis(wait)));
            tokio::time::sleep(wait).await;
            self.state.lock().next_due_ms = None;
            wait = match self.repair_once().await {
                Ok(()) => self.interval + jitter(self.interval),
                Err(Shortfall::ReplicasDown(problem)) => {
                    tracing::warn!(%problem, "automatic repair incomplete: a replica was down; running it again once every node is up");
                    {
                        let mut state = self.state.lock();
                        state.last_problem = Some(problem);
                        state.waiting_for_nodes = true;
                    }
                    while !self.cluster.all_nodes_up() {
                        tokio::time::sleep(UP_CHECK.min(retry_wait(self.interval))).await;
                    }
                    self.state.lock().waiting_for_nodes = false;
                    // The nodes that came back are repairing too.
                    jitter(self.interval)
                }
                Err(Shortfall::Failed(problem)) => {
                    tracing::warn!(%problem, "automatic repair did not complete; trying again later");
                    self.state.lock().last_problem = Some(problem);
                    retry_wait(self.interval)
                }
            };
        }
    }

    /// One repair of this node's primary ranges in every table; `Err`
    /// says why it did not complete.
    async fn repair_once(&self) -> Result<(), Shortfall> {
        let tables = all_tables(&self.schema);
        let started = std::time::Instant::now();
        let report = self
            .cluster
            .repair(&tables, true)
            .await
            .map_err(|e| Shortfall::Failed(e.to_string()))?;
        if !report.is_complete() {
            let problem = format!("incomplete: {report}");
            return Err(if report.failures.is_empty() {
                Shortfall::ReplicasDown(problem)
            } else {
                Shortfall::Failed(problem)
            });
        }
        let done = wall_ms();
        if let Err(e) = write_durably(&self.path, &format_state(done)) {
            // The repair still counts for this run of the node; after a
            // restart it is done again sooner than needed.
            tracing::warn!(path = %self.path.display(), error = %e, "cannot record the automatic repair");
        }
        tracing::info!(
            %report,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "automatic repair complete"
        );
        let mut state = self.state.lock();
        state.last_complete_ms = Some(done);
        state.last_problem = None;
        Ok(())
    }

    /// The `Auto repair:` line of `admin status`, as of now.
    pub fn status_line(&self) -> String {
        status_line(self.interval, self.state(), wall_ms())
    }
}

/// The `Auto repair:` line of `admin status` for a repair every `interval`
/// in `state`, as of `now_ms`.
fn status_line(interval: Duration, state: AutoRepairState, now_ms: u64) -> String {
    if interval.is_zero() {
        return "Auto repair: off".to_string();
    }
    let mut line = format!("Auto repair: every {} (primary ranges), ", approx(interval));
    match state.last_complete_ms {
        Some(ms) => line.push_str(&format!(
            "last complete {} ago",
            approx(Duration::from_millis(now_ms.saturating_sub(ms)))
        )),
        None => line.push_str("none complete yet"),
    }
    match state.next_due_ms {
        Some(ms) => line.push_str(&format!(
            ", next in {}",
            approx(Duration::from_millis(ms.saturating_sub(now_ms)))
        )),
        None if state.waiting_for_nodes => line.push_str(", next once every node is up"),
        None => line.push_str(", running now"),
    }
    if let Some(problem) = state.last_problem {
        let first = problem.lines().next().unwrap_or_default();
        line.push_str(&format!("; last attempt {first}"));
    }
    line
}

/// How long to wait, at `now_ms`, for the first repair: until `interval`
/// after the last complete one (none if that is past), or `interval` when
/// none completed; plus `jitter`.
fn first_wait(
    interval: Duration,
    last_complete_ms: Option<u64>,
    now_ms: u64,
    jitter: Duration,
) -> Duration {
    let until_due = match last_complete_ms {
        Some(last) => {
            let due = last.saturating_add(millis(interval));
            Duration::from_millis(due.saturating_sub(now_ms))
        }
        None => interval,
    };
    until_due + jitter
}

/// How long to wait after an attempt that did not complete.
fn retry_wait(interval: Duration) -> Duration {
    (interval / 8).clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

/// A random extra wait of up to a tenth of `interval` (at most
/// [`MAX_JITTER`]).
fn jitter(interval: Duration) -> Duration {
    let most = millis((interval / 10).min(MAX_JITTER));
    Duration::from_millis(rand::rng().random_range(0..=most))
}

/// The state file's text for a repair completed at `ms`.
fn format_state(ms: u64) -> String {
    format!("last_complete_ms {ms}\n")
}

/// When the last automatic repair completed, from the state file at
/// `path`; `None` when there is no file.
fn read_state(path: &Path) -> Result<Option<u64>, StateFileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(StateFileError::Read {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        }
    };
    let malformed = || StateFileError::Malformed {
        path: path.to_path_buf(),
        found: text.chars().take(80).collect(),
    };
    let mut lines = text.lines();
    let (Some(line), None) = (lines.next(), lines.next()) else {
        return Err(malformed());
    };
    match line.split_whitespace().collect::<Vec<_>>()[..] {
        ["last_complete_ms", ms] => ms.parse().map(Some).map_err(|_| malformed()),
        _ => Err(malformed()),
    }
}

/// Milliseconds since the Unix epoch (0 for a clock set before it).
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

/// `d` in whole milliseconds, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A duration for people, to the second: `45s`, `3m20s`, `20h48m`.
fn approx(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m, s) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn the_first_repair_is_an_interval_after_the_last_complete_one() {
        let none = Duration::ZERO;
        let day = 24 * HOUR;
        let now = 10 * millis(day);
        // Never completed: a whole interval from now.
        assert_eq!(first_wait(day, None, now, none), day);
        // Completed an hour ago: 23 hours left.
        let an_hour_ago = now - millis(HOUR);
        assert_eq!(first_wait(day, Some(an_hour_ago), now, none), 23 * HOUR);
        // Overdue (the node was down): at once, plus the jitter.
        let long_ago = now - 3 * millis(day);
        assert_eq!(first_wait(day, Some(long_ago), now, none), none);
        assert_eq!(
            first_wait(day, Some(long_ago), now, Duration::from_secs(7)),
            Duration::from_secs(7)
        );
        // A clock that went back (the last one is in the future): at most
        // an interval from that time, never an overflow.
        assert_eq!(
            first_wait(day, Some(now + 1000), now, none),
            day + Duration::from_secs(1)
        );
        assert!(first_wait(day, Some(u64::MAX), now, none) > day);
    }

    #[test]
    fn retries_and_jitter_stay_in_their_bounds() {
        assert_eq!(retry_wait(Duration::from_secs(3)), Duration::from_secs(1));
        assert_eq!(retry_wait(8 * HOUR), HOUR);
        assert_eq!(retry_wait(24 * HOUR), HOUR);
        assert_eq!(retry_wait(Duration::from_secs(80)), Duration::from_secs(10));
        for _ in 0..200 {
            assert!(jitter(Duration::from_secs(10)) <= Duration::from_secs(1));
            assert!(jitter(24 * HOUR) <= MAX_JITTER);
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn the_state_file_round_trips_and_bad_ones_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        assert_eq!(read_state(&path), Ok(None));
        write_durably(&path, &format_state(1_700_000_000_123)).unwrap();
        assert_eq!(read_state(&path), Ok(Some(1_700_000_000_123)));
        for bad in [
            "",
            "last_complete_ms\n",
            "last_complete_ms soon\n",
            "last_complete_ms -5\n",
            "last_complete_ms 5 6\n",
            "last_complete_ms 5\nmore\n",
            "\u{0}\u{1}garbage",
        ] {
            std::fs::write(&path, bad).unwrap();
            match read_state(&path) {
                Err(StateFileError::Malformed { path: p, found }) => {
                    assert_eq!(p, path);
                    assert_eq!(found, bad.chars().take(80).collect::<String>());
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        // A directory where the file should be: a read error, not a panic.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(matches!(
            read_state(&path),
            Err(StateFileError::Read { .. })
        ));
    }

    #[test]
    fn the_status_line_says_when_it_last_completed_and_what_is_next() {
        let now = 1_000_000_000;
        let s = |secs: u64| secs * 1000;
        assert_eq!(
            status_line(Duration::ZERO, AutoRepairState::default(), now),
            "Auto repair: off"
        );
        let waiting = AutoRepairState {
            last_complete_ms: None,
            next_due_ms: Some(now + s(90)),
            ..AutoRepairState::default()
        };
        assert_eq!(
            status_line(24 * HOUR, waiting, now),
            "Auto repair: every 24h (primary ranges), none complete yet, next in 1m30s"
        );
        let retrying = AutoRepairState {
            last_complete_ms: Some(now - s(3 * 3600 + 12 * 60)),
            next_due_ms: None,
            last_problem: Some("incomplete: repaired 1 table(s)\n  failed: x".into()),
            waiting_for_nodes: false,
        };
        assert_eq!(
            status_line(24 * HOUR, retrying.clone(), now),
            "Auto repair: every 24h (primary ranges), last complete 3h12m ago, running now; \
             last attempt incomplete: repaired 1 table(s)"
        );
        let waiting_for_nodes = AutoRepairState {
            waiting_for_nodes: true,
            ..retrying
        };
        assert_eq!(
            status_line(24 * HOUR, waiting_for_nodes, now),
            "Auto repair: every 24h (primary ranges), last complete 3h12m ago, next once every \
             node is up; last attempt incomplete: repaired 1 table(s)"
        );
    }

    #[test]
    fn durations_read_as_people_write_them() {
        let s = Duration::from_secs;
        assert_eq!(approx(s(0)), "0s");
        assert_eq!(approx(s(45)), "45s");
        assert_eq!(approx(s(120)), "2m");
        assert_eq!(approx(s(200)), "3m20s");
        assert_eq!(approx(s(24 * 3600)), "24h");
        assert_eq!(approx(s(20 * 3600 + 48 * 60 + 5)), "20h48m");
    }
}
