//! A wall clock for the simulation: tokio's (paused) time plus an epoch.

use crate::model::WallClock;
use tokio::time::Instant;

/// Wall-clock milliseconds as `epoch_ms` plus the tokio time elapsed since
/// the clock was made. On a paused tokio runtime this is virtual time, so
/// a simulated cluster's timestamps, TTLs and hint windows are
/// deterministic and advance with the simulation.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start: Instant,
    epoch_ms: u64,
}

impl TokioClock {
    /// A clock showing `epoch_ms` now. Call inside the runtime whose time
    /// it follows.
    pub fn new(epoch_ms: u64) -> TokioClock {
        TokioClock {
            start: Instant::now(),
            epoch_ms,
        }
    }
}

impl WallClock for TokioClock {
    fn now_millis(&self) -> u64 {
        let elapsed = Instant::now().saturating_duration_since(self.start);
        self.epoch_ms
            .saturating_add(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
    }
}
