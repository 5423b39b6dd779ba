//! How long the disk under the benchmark's data takes to make an append
//! durable: a `batch`-mode write cannot be acknowledged sooner than one
//! `fdatasync`, so this bounds what its latency can be.

use super::timeline::quantile;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// `fdatasync` latency of small appends, in µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncLatency {
    /// Syncs timed.
    pub samples: usize,
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Slowest.
    pub max_us: u64,
}

/// Appends 4 KiB and `fdatasync`s it `samples` times in a scratch file
/// under `dir` (removed afterwards), timing each sync.
pub fn sync_latency(dir: &Path, samples: usize) -> std::io::Result<SyncLatency> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("fdatasync-probe");
    let result = (|| {
        let mut file = std::fs::File::create(&path)?;
        let block = [0x5au8; 4096];
        let mut times = Vec::with_capacity(samples);
        for _ in 0..samples.max(1) {
            file.write_all(&block)?;
            let started = Instant::now();
            file.sync_data()?;
            times.push(started.elapsed().as_micros() as u64);
        }
        Ok(summarise(times))
    })();
    let _ = std::fs::remove_file(&path);
    result
}

fn summarise(mut times: Vec<u64>) -> SyncLatency {
    times.sort_unstable();
    SyncLatency {
        samples: times.len(),
        p50_us: quantile(&times, 0.5),
        p99_us: quantile(&times, 0.99),
        max_us: times.last().copied().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_quantiles_by_nearest_rank() {
        let s = summarise((1..=100).rev().collect());
        assert_eq!(
            s,
            SyncLatency {
                samples: 100,
                p50_us: 50,
                p99_us: 99,
                max_us: 100
            }
        );
    }

    #[test]
    fn the_probe_times_real_syncs_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = sync_latency(dir.path(), 5).unwrap();
        assert_eq!(s.samples, 5);
        assert!(s.p50_us <= s.p99_us && s.p99_us <= s.max_us);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
