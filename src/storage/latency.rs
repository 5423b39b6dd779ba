//! [`LatencyHistogram`]: how long a repeated operation took, since start.
//!
//! The commit log records each group-commit fdatasync in one, so that
//! `ringdb admin status` (and the benchmarks, which print it) can show how
//! long writes waited on the disk. Recording is one relaxed atomic
//! increment per bucket hit plus a maximum, cheap enough for every sync.
//!
//! Buckets are one microsecond wide up to 16 us, then spaced by a quarter
//! power of two (each about 19 % wider than the one below it) up to about
//! an hour. A percentile is reported as the upper bound of its bucket:
//! never below the true value, and at most ~19 % (plus a microsecond)
//! above it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// Buckets per power of two.
const STEPS_PER_DOUBLING: u32 = 4;
/// Number of buckets: up to 2^31.75 us (about an hour).
const BUCKETS: usize = 32 * STEPS_PER_DOUBLING as usize;

/// Counts of durations in log-spaced buckets, plus the largest seen.
/// `Sync`: record from any thread.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; BUCKETS],
    max_us: AtomicU64,
}

/// A summary of a [`LatencyHistogram`]: how many were recorded and their
/// median, 99th percentile and maximum, in microseconds (0 when none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySummary {
    /// Durations recorded.
    pub count: u64,
    /// Median (upper bound of its bucket).
    pub p50_us: u64,
    /// 99th percentile (upper bound of its bucket).
    pub p99_us: u64,
    /// Largest recorded, exactly.
    pub max_us: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            max_us: AtomicU64::new(0),
        }
    }
}

/// The largest duration (microseconds) each bucket holds: 1, 2, ... 16
/// (one per microsecond while a quarter power of two is less than one
/// apart), then the floor of each quarter power of two.
fn upper_bounds() -> &'static [u64; BUCKETS] {
    static BOUNDS: OnceLock<[u64; BUCKETS]> = OnceLock::new();
    BOUNDS.get_or_init(|| {
        let mut bounds = [0u64; BUCKETS];
        let mut previous = 0;
        for (i, bound) in bounds.iter_mut().enumerate() {
            let power = 2f64.powf(i as f64 / f64::from(STEPS_PER_DOUBLING)).floor() as u64;
            *bound = power.max(previous + 1);
            previous = *bound;
        }
        bounds
    })
}

/// The first bucket whose bound covers `us` (the last for anything
/// longer).
fn bucket_of(us: u64) -> usize {
    upper_bounds()
        .partition_point(|&bound| bound < us)
        .min(BUCKETS - 1)
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one duration.
    pub fn record(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// Count, median, 99th percentile and maximum of everything recorded
    /// so far. Recordings made while it runs may or may not be included.
    pub fn summary(&self) -> LatencySummary {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let count: u64 = counts.iter().sum();
        if count == 0 {
            return LatencySummary::default();
        }
        let max_us = self.max_us.load(Ordering::Relaxed);
        // The bucket holding the value of rank ceil(q * count), capped by
        // the exact maximum (the top bucket's bound can exceed it).
        let percentile = |q: f64| -> u64 {
            let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
            let mut seen = 0;
            for (i, &c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return upper_bounds()[i].min(max_us);
                }
            }
            max_us
        };
        LatencySummary {
            count,
            p50_us: percentile(0.50),
            p99_us: percentile(0.99),
            max_us,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_empty_histogram_summarises_to_zeros() {
        assert_eq!(LatencyHistogram::new().summary(), LatencySummary::default());
    }

    #[test]
    fn bucket_bounds_increase_and_cover_their_values() {
        let bounds = upper_bounds();
        for i in 1..BUCKETS {
            assert!(bounds[i] > bounds[i - 1], "bucket {i}");
        }
        assert!(
            bounds[BUCKETS - 1] > 3_600_000_000,
            "the top bucket starts past an hour"
        );
        for us in 0..100_000u64 {
            let i = bucket_of(us);
            assert!(us <= bounds[i], "{us} us above bucket {i}");
            assert!(
                i == 0 || us > bounds[i - 1],
                "{us} us not in the first bucket covering it"
            );
            assert!(
                bounds[i] as f64 <= us as f64 * 1.19 + 1.0,
                "bucket {i} too wide for {us} us"
            );
        }
    }

    proptest! {
        /// Each reported percentile is at least the exact one and at most
        /// about a fifth above it (one microsecond at the bottom); the
        /// count and maximum are exact.
        #[test]
        fn percentiles_bound_the_exact_ones(
            mut samples in proptest::collection::vec(0u64..5_000_000, 1..400)
        ) {
            let h = LatencyHistogram::new();
            for &us in &samples {
                h.record(Duration::from_micros(us));
            }
            let s = h.summary();
            samples.sort_unstable();
            let exact = |q: f64| {
                let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
                samples[rank - 1]
            };
            prop_assert_eq!(s.count, samples.len() as u64);
            prop_assert_eq!(s.max_us, *samples.last().unwrap());
            for (got, want) in [(s.p50_us, exact(0.5)), (s.p99_us, exact(0.99))] {
                prop_assert!(got >= want, "{} reported for {}", got, want);
                prop_assert!(got as f64 <= want as f64 * 1.19 + 1.0, "{} reported for {}", got, want);
            }
        }
    }
}
