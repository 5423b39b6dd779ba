//! Workload generation and the timed operation loop shared by every engine
//! in `ringdb bench storage`.
//!
//! Keys follow db_bench: a key is the operation's id as 8 big-endian bytes
//! padded with zeros to [`KEY_BYTES`]; values are [`VALUE_BYTES`] taken from
//! a buffer of random bytes at an offset that moves with every operation.

use super::ui::Ui;
use anyhow::Context;
use rand::rngs::SmallRng;
use rand::{Rng, RngExt, SeedableRng};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Length of a key-value-shape key (db_bench's `--key_size`).
pub const KEY_BYTES: usize = 16;
/// Length of a value (db_bench's `--value_size`).
pub const VALUE_BYTES: usize = 100;
/// Operations a thread does between progress-bar updates and deadline checks.
const TICK: u64 = 256;

/// A 16-byte key: `id` big-endian, then zeros.
pub fn raw_key(id: u64) -> [u8; KEY_BYTES] {
    let mut k = [0u8; KEY_BYTES];
    k[..8].copy_from_slice(&id.to_be_bytes());
    k
}

/// A pool of random bytes that values are cut from.
pub struct Values {
    pool: Vec<u8>,
}

impl Values {
    /// One MiB of random bytes from `seed`.
    pub fn new(seed: u64) -> Values {
        let mut pool = vec![0u8; 1 << 20];
        SmallRng::seed_from_u64(seed).fill_bytes(&mut pool);
        Values { pool }
    }

    /// The value of operation `i`.
    pub fn get(&self, i: u64) -> &[u8] {
        let span = (self.pool.len() - VALUE_BYTES) as u64;
        let start = (i.wrapping_mul(7919) % span) as usize;
        &self.pool[start..start + VALUE_BYTES]
    }
}

/// Which keys a phase touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrder {
    /// Ids `0..ops` in order (split into contiguous runs per thread).
    Sequential,
    /// Ids drawn uniformly from `0..key_space`, with repeats (as db_bench).
    Random,
    /// Ids drawn from `key_space..2 * key_space`: never written.
    Missing,
}

/// One timed phase: how many operations, by how many threads, on which keys.
#[derive(Debug, Clone)]
pub struct PhaseSpec {
    /// Label of the progress bar.
    pub label: String,
    /// Concurrent threads.
    pub threads: usize,
    /// Operations in total (over all threads).
    pub ops: u64,
    /// Key choice.
    pub order: KeyOrder,
    /// Number of distinct keys written by fills (db_bench's `--num`).
    pub key_space: u64,
    /// Seed of the key choice (each thread derives its own).
    pub seed: u64,
    /// Stop early once this much time has passed (the figure then covers
    /// the operations done).
    pub time_limit: Option<Duration>,
}

/// What a phase measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhaseResult {
    /// Operations completed.
    pub ops: u64,
    /// Wall-clock seconds from the first operation to the last.
    pub secs: f64,
    /// Reads that found their key (for read phases).
    pub found: Option<u64>,
}

impl PhaseResult {
    /// Throughput.
    pub fn ops_per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.ops as f64 / self.secs
        } else {
            0.0
        }
    }
}

/// The id of a thread's `i`-th operation.
fn key_id(spec: &PhaseSpec, rng: &mut SmallRng, thread_start: u64, i: u64) -> u64 {
    match spec.order {
        KeyOrder::Sequential => thread_start + i,
        KeyOrder::Random => rng.random_range(0..spec.key_space.max(1)),
        KeyOrder::Missing => spec.key_space + rng.random_range(0..spec.key_space.max(1)),
    }
}

/// Runs `op(key_id, op_index)` `spec.ops` times over `spec.threads` threads
/// and times it. `op` returns whether a read found its key (ignored for
/// writes unless `count_found`).
pub fn run_phase<F>(
    ui: &Ui,
    spec: &PhaseSpec,
    count_found: bool,
    op: F,
) -> anyhow::Result<PhaseResult>
where
    F: Fn(u64, u64) -> anyhow::Result<bool> + Sync,
{
    let threads = spec.threads.max(1);
    let bar = ui.phase_bar(&spec.label, spec.ops);
    let done = AtomicU64::new(0);
    let found = AtomicU64::new(0);
    let barrier = Barrier::new(threads + 1);
    let per_thread = spec.ops / threads as u64;
    let extra = spec.ops % threads as u64;
    let (secs, results) = std::thread::scope(|s| {
        let mut handles = Vec::with_capacity(threads);
        let mut start_id = 0u64;
        for t in 0..threads {
            let n = per_thread + u64::from((t as u64) < extra);
            let thread_start = start_id;
            start_id += n;
            let (op, bar, done, found, barrier) = (&op, &bar, &done, &found, &barrier);
            let seed = spec.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (t as u64 + 1);
            handles.push(s.spawn(move || -> anyhow::Result<()> {
                let mut rng = SmallRng::seed_from_u64(seed);
                barrier.wait();
                let started = Instant::now();
                let mut local_found = 0u64;
                let mut i = 0u64;
                while i < n {
                    let id = key_id(spec, &mut rng, thread_start, i);
                    if op(id, thread_start + i)
                        .with_context(|| format!("{}: key id {id}", spec.label))?
                    {
                        local_found += 1;
                    }
                    i += 1;
                    if i.is_multiple_of(TICK) {
                        bar.inc(TICK);
                        done.fetch_add(TICK, Ordering::Relaxed);
                    }
                    // Checked after every operation: a slow (fsyncing)
                    // thread may take seconds per TICK.
                    if spec
                        .time_limit
                        .is_some_and(|limit| started.elapsed() >= limit)
                    {
                        break;
                    }
                }
                bar.inc(i % TICK);
                done.fetch_add(i % TICK, Ordering::Relaxed);
                found.fetch_add(local_found, Ordering::Relaxed);
                Ok(())
            }));
        }
        barrier.wait();
        let started = Instant::now();
        let results: Vec<anyhow::Result<()>> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("benchmark thread panicked")))
            })
            .collect();
        (started.elapsed().as_secs_f64(), results)
    });
    bar.finish_and_clear();
    for r in results {
        r?;
    }
    Ok(PhaseResult {
        ops: done.load(Ordering::Relaxed),
        secs,
        found: count_found.then(|| found.load(Ordering::Relaxed)),
    })
}

/// Bytes this process (with its reaped children) has caused to be written
/// to storage: `write_bytes` of `/proc/self/io`. The kernel counts a page
/// when it is dirtied, so deleting a file before write-back does not undo
/// the count (that shows in `cancelled_write_bytes`, which is not used).
pub fn process_write_bytes() -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/self/io").context("reading /proc/self/io")?;
    parse_write_bytes(&text).context("no write_bytes line in /proc/self/io")
}

/// Measures how much of the machine's CPU time went to other processes
/// while a section ran: benchmark figures from a busy machine are suspect,
/// so the report says how busy it was.
pub struct CpuShare {
    start: Option<(u64, u64, u64)>,
}

impl CpuShare {
    /// Starts measuring.
    pub fn start() -> CpuShare {
        CpuShare { start: cpu_ticks() }
    }

    /// Share (0..=1) of all CPU time since [`CpuShare::start`] that other
    /// processes were busy, or `None` off Linux.
    pub fn others(&self) -> Option<f64> {
        let (busy0, total0, own0) = self.start?;
        let (busy1, total1, own1) = cpu_ticks()?;
        let total = total1.saturating_sub(total0);
        let others = busy1
            .saturating_sub(busy0)
            .saturating_sub(own1.saturating_sub(own0));
        (total > 0).then(|| (others as f64 / total as f64).min(1.0))
    }
}

/// (busy, total) ticks of all CPUs from /proc/stat and this process's own
/// ticks (with reaped children) from /proc/self/stat.
fn cpu_ticks() -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let own = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (busy, total) = parse_proc_stat(&stat)?;
    Some((busy, total, parse_own_ticks(&own)?))
}

/// (busy, total) ticks of all CPUs from the `cpu` line of `/proc/stat`
/// (shared with the YCSB benchmark's CPU accounting).
pub(crate) fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal ...
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    Some((busy, busy + get(3) + get(4)))
}

fn parse_own_ticks(text: &str) -> Option<u64> {
    // Fields after the command name (which may hold spaces) in parentheses:
    // utime, stime, cutime, cstime are fields 14..=17 of the line.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    (11..=14).map(|i| f.get(i)?.parse::<u64>().ok()).sum()
}

fn parse_write_bytes(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_like_ids_and_values_have_the_right_size() {
        assert!(raw_key(1) < raw_key(2));
        assert!(raw_key(255) < raw_key(256));
        let v = Values::new(1);
        assert_eq!(v.get(0).len(), VALUE_BYTES);
        assert_eq!(v.get(u64::MAX).len(), VALUE_BYTES);
        assert_ne!(v.get(0), v.get(1));
    }

    #[test]
    fn parses_cpu_ticks() {
        let stat = "cpu  100 5 20 1000 7 1 2 3 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(parse_proc_stat(stat), Some((131, 1138)));
        let own = "42 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16";
        assert_eq!(parse_own_ticks(own), Some(11 + 12 + 13 + 14));
        assert_eq!(parse_own_ticks("garbage"), None);
        assert!(CpuShare::start()
            .others()
            .is_none_or(|s| (0.0..=1.0).contains(&s)));
    }

    #[test]
    fn parses_proc_io() {
        let text =
            "rchar: 1\nwchar: 2\nread_bytes: 3\nwrite_bytes: 4096\ncancelled_write_bytes: 5\n";
        assert_eq!(parse_write_bytes(text), Some(4096));
        assert_eq!(parse_write_bytes("rchar: 1\n"), None);
    }

    #[test]
    fn phase_runs_every_operation_once() {
        let ui = Ui::hidden();
        let seen = parking_lot::Mutex::new(Vec::new());
        let spec = PhaseSpec {
            label: "t".into(),
            threads: 3,
            ops: 1000,
            order: KeyOrder::Sequential,
            key_space: 1000,
            seed: 1,
            time_limit: None,
        };
        let r = run_phase(&ui, &spec, true, |id, _| {
            seen.lock().push(id);
            Ok(id % 2 == 0)
        })
        .unwrap();
        assert_eq!(r.ops, 1000);
        assert_eq!(r.found, Some(500));
        let mut ids = seen.into_inner();
        ids.sort_unstable();
        assert_eq!(ids, (0..1000).collect::<Vec<_>>());
        let missing = PhaseSpec {
            order: KeyOrder::Missing,
            ..spec
        };
        let r = run_phase(&ui, &missing, true, |id, _| Ok(id < 1000)).unwrap();
        assert_eq!(r.found, Some(0));
    }
}
