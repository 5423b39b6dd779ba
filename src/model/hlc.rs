//! Time: an injected wall clock and the hybrid logical clock built on it.
//!
//! Nothing in ringdb reads the system time directly; it asks a [`WallClock`],
//! so tests can run a node on a [`ManualClock`] and skew it at will.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A hybrid-logical-clock timestamp: milliseconds since the Unix epoch in
/// the high 48 bits and a logical counter in the low 16.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The smallest timestamp.
    pub const ZERO: Timestamp = Timestamp(0);

    /// A timestamp at `millis` with logical counter zero.
    pub fn from_millis(millis: u64) -> Timestamp {
        Timestamp(millis << 16)
    }

    /// The wall-clock part, in milliseconds since the epoch.
    pub fn millis(self) -> u64 {
        self.0 >> 16
    }

    /// The logical counter.
    pub fn logical(self) -> u16 {
        (self.0 & 0xFFFF) as u16
    }
}

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait WallClock: Send + Sync + std::fmt::Debug {
    /// The current time in milliseconds.
    fn now_millis(&self) -> u64;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now_millis(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to (tests, simulation).
#[derive(Debug, Default)]
pub struct ManualClock {
    millis: AtomicU64,
}

impl ManualClock {
    /// A clock showing `millis`.
    pub fn new(millis: u64) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            millis: AtomicU64::new(millis),
        })
    }

    /// Moves the clock forward by `millis`.
    pub fn advance(&self, millis: u64) {
        self.millis.fetch_add(millis, Ordering::SeqCst);
    }

    /// Sets the clock (it may go backwards: a skewed node).
    pub fn set(&self, millis: u64) {
        self.millis.store(millis, Ordering::SeqCst);
    }
}

impl WallClock for ManualClock {
    fn now_millis(&self) -> u64 {
        self.millis.load(Ordering::SeqCst)
    }
}

/// A hybrid logical clock: never goes backwards, stays close to the wall
/// clock, and moves past every timestamp it observes from other nodes.
#[derive(Debug)]
pub struct HybridClock {
    wall: Arc<dyn WallClock>,
    last: AtomicU64,
}

impl HybridClock {
    /// A clock over the given wall clock.
    pub fn new(wall: Arc<dyn WallClock>) -> HybridClock {
        HybridClock {
            wall,
            last: AtomicU64::new(0),
        }
    }

    /// The wall clock underneath (for TTL expiry, which is wall-clock time).
    pub fn wall(&self) -> &Arc<dyn WallClock> {
        &self.wall
    }

    /// A fresh timestamp, greater than every one issued or observed before.
    pub fn now(&self) -> Timestamp {
        let physical = Timestamp::from_millis(self.wall.now_millis()).0;
        let mut prev = self.last.load(Ordering::SeqCst);
        loop {
            let next = physical.max(prev + 1);
            match self
                .last
                .compare_exchange(prev, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return Timestamp(next),
                Err(actual) => prev = actual,
            }
        }
    }

    /// Moves the clock past a timestamp seen from elsewhere.
    pub fn observe(&self, seen: Timestamp) {
        self.last.fetch_max(seen.0, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hlc_is_monotonic_even_when_the_wall_clock_goes_back() {
        let wall = ManualClock::new(1_000);
        let hlc = HybridClock::new(wall.clone());
        let a = hlc.now();
        wall.set(500);
        let b = hlc.now();
        assert!(b > a);
        assert_eq!(b.millis(), 1_000);
        wall.set(2_000);
        let c = hlc.now();
        assert_eq!(c, Timestamp::from_millis(2_000));
        hlc.observe(Timestamp::from_millis(5_000));
        assert!(hlc.now() > Timestamp::from_millis(5_000));
    }
}
