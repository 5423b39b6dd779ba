//! Counters of a transport.

use std::sync::atomic::{AtomicU64, Ordering};

/// Atomic counters of one transport, shared by its tasks.
#[derive(Debug, Default)]
pub struct NetStats {
    requests_out: AtomicU64,
    requests_in: AtomicU64,
    requests_failed: AtomicU64,
    malformed: AtomicU64,
    version_mismatches: AtomicU64,
    deadlines_exceeded: AtomicU64,
    datagrams_out: AtomicU64,
    datagrams_in: AtomicU64,
    datagrams_dropped: AtomicU64,
    handshakes_failed: AtomicU64,
}

/// A copy of the counters of [`NetStats`] at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NetStatsSnapshot {
    /// Requests this node sent.
    pub requests_out: u64,
    /// Well-formed requests this node received and passed to its handler.
    pub requests_in: u64,
    /// Requests this node sent that ended in an error (timeouts included).
    pub requests_failed: u64,
    /// Frames and datagrams received that did not decode (truncated,
    /// garbage, too large, wrong body), in either direction.
    pub malformed: u64,
    /// Messages received with another protocol version.
    pub version_mismatches: u64,
    /// Incoming requests whose deadline passed before the handler answered.
    pub deadlines_exceeded: u64,
    /// Datagrams this node sent.
    pub datagrams_out: u64,
    /// Well-formed datagrams received and passed to the handler.
    pub datagrams_in: u64,
    /// Datagrams not sent or not delivered (too large, no connection,
    /// malformed on arrival).
    pub datagrams_dropped: u64,
    /// Incoming connections whose handshake failed (no certificate, wrong
    /// CA, wrong ALPN).
    pub handshakes_failed: u64,
}

macro_rules! counters {
    ($($field:ident => $inc:ident),* $(,)?) => {
        impl NetStats {
            $(
                #[doc = concat!("Adds one to `", stringify!($field), "`.")]
                pub fn $inc(&self) {
                    self.$field.fetch_add(1, Ordering::Relaxed);
                }
            )*

            /// Reads all counters.
            pub fn snapshot(&self) -> NetStatsSnapshot {
                NetStatsSnapshot {
                    $($field: self.$field.load(Ordering::Relaxed),)*
                }
            }
        }
    };
}

counters! {
    requests_out => inc_requests_out,
    requests_in => inc_requests_in,
    requests_failed => inc_requests_failed,
    malformed => inc_malformed,
    version_mismatches => inc_version_mismatches,
    deadlines_exceeded => inc_deadlines_exceeded,
    datagrams_out => inc_datagrams_out,
    datagrams_in => inc_datagrams_in,
    datagrams_dropped => inc_datagrams_dropped,
    handshakes_failed => inc_handshakes_failed,
}
