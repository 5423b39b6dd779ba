//! The stream throttle: one byte-rate limit shared by every range stream a
//! node runs (bootstrap, decommission, removenode, repair), so copying a
//! range does not take the disks and the network from the requests served
//! meanwhile (Cassandra's `stream_throughput_outbound`).
//!
//! It is a virtual-time token bucket: each page of a stream reserves the
//! time its bytes take at the limit, after the pages reserved before it,
//! and waits until its reservation starts. A stream that was idle may go
//! ahead by at most [`BURST`] of reserved time, so the rate over any
//! stretch longer than that stays at the limit.
//!
//! A replica hashing a span for a repair reads through the same limit
//! ([`StreamThrottle::pass_until`]), for as long as the coordinator's
//! timeout leaves room.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// How far ahead of the limit a stream that was idle may run.
pub const BURST: Duration = Duration::from_secs(1);

/// A byte-rate limit shared by concurrent streams. A limit of 0 means no
/// limit. The limit can change while streams run: the next page uses it.
#[derive(Debug)]
pub struct StreamThrottle {
    /// Bytes per second; 0 is unlimited.
    bytes_per_sec: AtomicU64,
    /// When the bytes reserved so far are all through at the limit.
    next_free: parking_lot::Mutex<Option<Instant>>,
}

impl StreamThrottle {
    /// A throttle letting through `bytes_per_sec` (0: no limit).
    pub fn new(bytes_per_sec: u64) -> StreamThrottle {
        StreamThrottle {
            bytes_per_sec: AtomicU64::new(bytes_per_sec),
            next_free: parking_lot::Mutex::new(None),
        }
    }

    /// The limit in bytes per second (0: none).
    pub fn bytes_per_sec(&self) -> u64 {
        self.bytes_per_sec.load(Ordering::Relaxed)
    }

    /// Changes the limit (0: none) for the pages that follow.
    pub fn set_bytes_per_sec(&self, bytes_per_sec: u64) {
        self.bytes_per_sec.store(bytes_per_sec, Ordering::Relaxed);
        if bytes_per_sec == 0 {
            *self.next_free.lock() = None;
        }
    }

    /// Waits until `bytes` more may go through at the limit; at once when
    /// there is none. Returns how long it waited.
    pub async fn pass(&self, bytes: usize) -> Duration {
        let start = match self.reserve(bytes, Instant::now()) {
            Some(start) => start,
            None => return Duration::ZERO,
        };
        let now = Instant::now();
        if start <= now {
            return Duration::ZERO;
        }
        tokio::time::sleep_until(start).await;
        start - now
    }

    /// [`StreamThrottle::pass`] for work that must end by a deadline: never
    /// waits past `until`, and once `until` has passed, lets `bytes` through
    /// at once without reserving them. Returns how long it waited.
    pub async fn pass_until(&self, bytes: usize, until: Instant) -> Duration {
        let now = Instant::now();
        if now >= until {
            return Duration::ZERO;
        }
        let start = match self.reserve(bytes, now) {
            Some(start) => start.min(until),
            None => return Duration::ZERO,
        };
        if start <= now {
            return Duration::ZERO;
        }
        tokio::time::sleep_until(start).await;
        start - now
    }

    /// Reserves `bytes` at the limit as of `now`: the instant the
    /// reservation starts (`None` without a limit).
    fn reserve(&self, bytes: usize, now: Instant) -> Option<Instant> {
        let rate = self.bytes_per_sec();
        if rate == 0 {
            return None;
        }
        let cost = Duration::from_secs_f64(bytes as f64 / rate as f64);
        let mut next_free = self.next_free.lock();
        let earliest = now.checked_sub(BURST).unwrap_or(now);
        let start = next_free.map_or(earliest, |n| n.max(earliest));
        *next_free = Some(start + cost);
        Some(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[tokio::test(start_paused = true)]
    async fn without_a_limit_nothing_waits() {
        let throttle = StreamThrottle::new(0);
        let began = Instant::now();
        for _ in 0..100 {
            assert_eq!(throttle.pass(1 << 30).await, Duration::ZERO);
        }
        assert_eq!(Instant::now(), began);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_streams_share_the_limit() {
        // 1 MB/s; four streams of 20 pages of 100 kB: 8 MB in all.
        let throttle = std::sync::Arc::new(StreamThrottle::new(1_000_000));
        let began = Instant::now();
        let mut streams = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let throttle = throttle.clone();
            streams.spawn(async move {
                for _ in 0..20 {
                    throttle.pass(100_000).await;
                }
            });
        }
        while streams.join_next().await.is_some() {}
        let took = Instant::now() - began;
        // The first second's worth may go at once (the burst); the other
        // seven take their time at the limit, and nothing more.
        assert!(took >= Duration::from_millis(6_900), "{took:?}");
        assert!(took <= Duration::from_millis(7_100), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn passing_until_a_deadline_never_waits_past_it() {
        // 1 MB/s, a stream already 10 s ahead: a page with a deadline 3 s
        // away waits 3 s, not 10, and once the deadline has passed pages go
        // at once without taking the stream's place.
        let throttle = StreamThrottle::new(1_000_000);
        throttle.pass(11_000_000).await;
        let began = Instant::now();
        let until = began + Duration::from_secs(3);
        assert_eq!(
            throttle.pass_until(100_000, until).await,
            Duration::from_secs(3)
        );
        assert_eq!(Instant::now(), until);
        assert_eq!(
            throttle.pass_until(100_000_000, until).await,
            Duration::ZERO
        );
        assert_eq!(Instant::now(), until);
        // Before the deadline, with the limit free, it waits as `pass` does.
        let throttle = StreamThrottle::new(1_000_000);
        let far = Instant::now() + Duration::from_secs(60);
        throttle.pass_until(1_000_000, far).await;
        throttle.pass_until(2_000_000, far).await;
        let began = Instant::now();
        assert_eq!(
            throttle.pass_until(1, far).await,
            Duration::from_secs(2),
            "the first second's worth went at once, the next two take their time"
        );
        assert_eq!(Instant::now() - began, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_limit_applies_to_the_next_pages() {
        let throttle = StreamThrottle::new(1_000_000);
        // Use up the burst.
        throttle.pass(1_000_000).await;
        throttle.pass(1_000_000).await;
        throttle.set_bytes_per_sec(0);
        let began = Instant::now();
        throttle.pass(50_000_000).await;
        assert_eq!(Instant::now(), began, "no limit: no wait");
        throttle.set_bytes_per_sec(10_000_000);
        // Four seconds' worth at the new limit, the first second of it
        // the burst again: the last page starts two seconds on.
        for _ in 0..4 {
            throttle.pass(10_000_000).await;
        }
        let took = Instant::now() - began;
        assert!(took >= Duration::from_millis(1_900), "{took:?}");
        assert!(took <= Duration::from_millis(2_100), "{took:?}");
    }

    proptest! {
        /// However pages of any sizes arrive, the bytes reserved to start
        /// by any instant never exceed what the limit lets through from
        /// the first page, plus the burst and one page.
        #[test]
        fn reservations_keep_to_the_rate(
            rate in 1_000u64..10_000_000,
            pages in prop::collection::vec((0usize..2_000_000, 0u64..3_000), 1..60),
        ) {
            let throttle = StreamThrottle::new(rate);
            let origin = Instant::now();
            let mut now = origin;
            let mut starts = Vec::new();
            for (bytes, gap_ms) in &pages {
                now += Duration::from_millis(*gap_ms);
                let start = throttle.reserve(*bytes, now).expect("limited");
                // Never before the page asked, minus the burst.
                prop_assert!(start + BURST >= now);
                starts.push((start, *bytes));
            }
            // Starts never go backwards.
            for pair in starts.windows(2) {
                prop_assert!(pair[0].0 <= pair[1].0);
            }
            // Between any two starts, what started before the later one
            // fits the limit over that time plus the burst.
            for (i, (first, _)) in starts.iter().enumerate() {
                let mut sent = 0u128;
                for (start, bytes) in &starts[i..] {
                    let allowed = (*start - *first).as_secs_f64() * rate as f64;
                    prop_assert!(
                        sent as f64 <= allowed + 1.0,
                        "{sent} bytes before {:?}, allowed {allowed}",
                        *start - *first
                    );
                    sent += *bytes as u128;
                }
            }
        }
    }
}
