//! When each operation of a phase may start.
//!
//! Unpaced, every operation starts as soon as a task is free. Paced at a
//! rate, operation `i` is due at `start + i / rate` (a token bucket of depth
//! one), and a late operation starts at once, with its wait counted in its
//! latency (no coordinated omission).
//!
//! Only an operation due in the future sleeps. Tokio's timer works in
//! one-millisecond ticks and rounds a deadline up to the next one, so even a
//! sleep until an instant already past waits for the next tick: before this
//! module, every unpaced operation (and every late paced one) was held back
//! by up to a millisecond in the load generator, which understated the
//! closed-loop throughput by about a fifth on a 1-node cluster.
//!
//! Paced operations due in the future still sleep on tokio's timer, so they
//! leave on millisecond ticks, those due within one tick together. They
//! sleep until one tick before they are due, so the tick that releases
//! them comes before their due time rather than after it: measured from
//! the due time, the timer's rounding up alone added 0.5-1 ms to every
//! paced operation's response time (the runner counts an operation sent
//! early from when it was sent). A release thread with a finer clock was
//! tried twice and not kept: its wake-ups cost the load generator more CPU
//! than the bursts cost the servers, on a machine they share
//! (docs/performance.md).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The granularity of tokio's timer: a sleep ends at the first tick at or
/// after its deadline. A paced operation leaves at the last tick before it
/// is due, so at most this early, never late because of the timer.
pub const TIMER_TICK: Duration = Duration::from_millis(1);

/// Hands out operation numbers and, when paced, the time each is due.
pub struct Pacer {
    next: AtomicU64,
    total: u64,
    start: Instant,
    /// Seconds between operations (`None`: not paced).
    interval: Option<f64>,
}

impl Pacer {
    /// A pacer for `total` operations starting now, at `rate` operations a
    /// second (`None` or not positive: unpaced).
    pub fn new(total: u64, rate: Option<f64>) -> Pacer {
        Pacer {
            next: AtomicU64::new(0),
            total,
            start: Instant::now(),
            interval: rate.filter(|r| *r > 0.0).map(|r| 1.0 / r),
        }
    }

    /// When the phase started.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// The next operation's number and the time it is due, once it may
    /// start (at most [`TIMER_TICK`] before it is due), or `None` when all
    /// were handed out.
    pub async fn next(&self) -> Option<(u64, Instant)> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if i >= self.total {
            return None;
        }
        let Some(interval) = self.interval else {
            return Some((i, Instant::now()));
        };
        let due = self.start + Duration::from_secs_f64(i as f64 * interval);
        // Sleep until one tick before it is due: the timer wakes at the
        // first tick at or after that, which is before `due`.
        let release = due.checked_sub(TIMER_TICK).unwrap_or(due);
        if release > Instant::now() {
            tokio::time::sleep_until(release.into()).await;
        }
        Some((i, due))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_paced_phase_hands_out_every_operation_once_and_at_most_a_tick_early() {
        let pacer = Arc::new(Pacer::new(200, Some(20_000.0)));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let pacer = pacer.clone();
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some((i, due)) = pacer.next().await {
                    assert!(
                        Instant::now() + TIMER_TICK >= due,
                        "operation {i} started more than a tick early"
                    );
                    got.push(i);
                }
                got
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all.sort_unstable();
        assert_eq!(all, (0..200).collect::<Vec<_>>());
        assert!(pacer.start().elapsed() + TIMER_TICK >= Duration::from_secs_f64(199.0 / 20_000.0));
    }

    /// Unpaced operations never wait on tokio's timer: even a sleep until
    /// an instant already past waits for the timer's next tick, which held
    /// every operation back by up to a millisecond. On a paused clock such
    /// a sleep moves the clock forward.
    #[tokio::test(start_paused = true)]
    async fn an_unpaced_phase_starts_at_once_without_the_timer() {
        let pacer = Pacer::new(3, None);
        let clock_before = tokio::time::Instant::now();
        let mut got = Vec::new();
        while let Some((i, _)) = pacer.next().await {
            got.push(i);
        }
        assert_eq!(got, vec![0, 1, 2]);
        assert_eq!(tokio::time::Instant::now(), clock_before);
    }

    /// Paced operations already due (the load generator fell behind) start
    /// at once too.
    #[tokio::test(start_paused = true)]
    async fn late_paced_operations_start_without_the_timer() {
        let pacer = Pacer::new(5, Some(1_000.0));
        // Real time passes (the pacer's schedule is in real time) while the
        // paused tokio clock stands still: all five become due.
        std::thread::sleep(Duration::from_millis(6));
        let clock_before = tokio::time::Instant::now();
        let mut got = Vec::new();
        while let Some((i, due)) = pacer.next().await {
            assert!(due <= Instant::now());
            got.push(i);
        }
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        assert_eq!(tokio::time::Instant::now(), clock_before);
    }
}
