//! Tables whose `gc_grace_seconds` is too short for the hint window.
//!
//! Compaction purges a tombstone, and forgets a retired stamping id from
//! rows' causal contexts, once it is older than the table's
//! `gc_grace_seconds`. A hint for a replica that was down is replayed up
//! to the node's hint window after its write. When the grace period is at
//! or below the hint window, a hint can carry a write older than a delete
//! (or a later write) whose tombstone (or context entry) the replicas have
//! already purged: the replay brings the deleted data back, or the
//! superseded version back as a sibling. Cassandra warns in the same case;
//! [`Table::short_gc_grace`] is the check, and [`ShortGcGrace`] says what
//! is wrong and what to do, for the warning of a DDL statement and for the
//! node's log.
//!
//! Repair is the other way a replica gets a tombstone it missed (its hint
//! lost, expired, or never stored). With automatic repair every interval
//! (`crate::node::auto_repair`), a grace period at or below that interval
//! lets the other replicas purge a tombstone before the repair that would
//! bring it to the replica that missed it: the deleted data comes back
//! from that replica. [`Table::gc_grace_within_repair`] is that check and
//! [`GraceWithinRepair`] its warning (Cassandra's rule: repair every node
//! at least once per `gc_grace_seconds`).

use super::{Schema, Table};
use std::fmt;
use std::time::Duration;

/// A table whose `gc_grace_seconds` is at or below a node's hint window.
/// Its `Display` is the warning an operator reads: the table, both values,
/// what can happen, and what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShortGcGrace {
    /// The table's keyspace.
    pub keyspace: String,
    /// The table.
    pub table: String,
    /// The table's id (a table created again under the same name has
    /// another).
    pub table_id: u128,
    /// The table's `gc_grace_seconds`.
    pub gc_grace_seconds: u32,
    /// The node's hint window.
    pub hint_window: Duration,
}

/// A duration in seconds, as the warning shows it (`10800 s (3 h)`), with
/// milliseconds only when it has them.
fn show_seconds(d: Duration) -> String {
    let secs = d.as_secs();
    let whole = if d.subsec_millis() == 0 {
        format!("{secs} s")
    } else {
        format!("{secs}.{:03} s", d.subsec_millis())
    };
    if secs > 0 && secs.is_multiple_of(3600) && d.subsec_nanos() == 0 {
        format!("{whole} ({} h)", secs / 3600)
    } else {
        whole
    }
}

impl ShortGcGrace {
    /// The largest whole number of hours of hint window that is below the
    /// table's grace period (`--hint-window-hours` counts hours and is at
    /// least 1), or `None` when no such window exists.
    pub fn hint_window_hours_below_grace(&self) -> Option<u64> {
        let hours = u64::from(self.gc_grace_seconds).saturating_sub(1) / 3600;
        (hours >= 1).then_some(hours)
    }
}

impl fmt::Display for ShortGcGrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `gc_grace_seconds` counts whole seconds: above the window's
        // whole seconds is above the window.
        write!(
            f,
            "Table {}.{} has gc_grace_seconds = {}, at or below this node's hint window of {}: \
             a hint can be replayed up to the hint window after its write, when compaction may \
             already have purged the tombstone of a later delete (or a causal-context entry of \
             a later write), and bring the deleted data back (or the superseded version back \
             as a sibling). Raise gc_grace_seconds above {}",
            self.keyspace,
            self.table,
            self.gc_grace_seconds,
            show_seconds(self.hint_window),
            self.hint_window.as_secs(),
        )?;
        match self.hint_window_hours_below_grace() {
            Some(hours) => write!(
                f,
                ", or lower the hint window (--hint-window-hours / hint_window_hours) to at most \
                 {hours} h on every node."
            ),
            None => f.write_str(
                " (the hint window, --hint-window-hours / hint_window_hours, cannot be below 1 h).",
            ),
        }
    }
}

impl Table {
    /// The warning for this table when its `gc_grace_seconds` is at or
    /// below `hint_window` (see the module documentation); `None` when the
    /// grace period is longer than the window.
    pub fn short_gc_grace(&self, hint_window: Duration) -> Option<ShortGcGrace> {
        (self.gc_grace() <= hint_window).then(|| ShortGcGrace {
            keyspace: self.keyspace().to_string(),
            table: self.name().to_string(),
            table_id: self.id,
            gc_grace_seconds: self.gc_grace_seconds,
            hint_window,
        })
    }
}

impl Schema {
    /// The warnings of every table of the schema whose `gc_grace_seconds`
    /// is at or below `hint_window`, in keyspace and table order.
    pub fn short_gc_grace(&self, hint_window: Duration) -> Vec<ShortGcGrace> {
        self.keyspaces()
            .flat_map(|ks| self.tables(&ks.name))
            .filter_map(|t| t.short_gc_grace(hint_window))
            .collect()
    }
}

/// A table whose `gc_grace_seconds` is at or below a node's automatic
/// repair interval. Its `Display` is the warning an operator reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraceWithinRepair {
    /// The table's keyspace.
    pub keyspace: String,
    /// The table.
    pub table: String,
    /// The table's id.
    pub table_id: u128,
    /// The table's `gc_grace_seconds`.
    pub gc_grace_seconds: u32,
    /// The node's automatic repair interval.
    pub repair_interval: Duration,
}

impl fmt::Display for GraceWithinRepair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Table {}.{} has gc_grace_seconds = {}, at or below this node's automatic repair \
             interval of {}: a replica that missed a delete (its hint lost or expired) gets the \
             tombstone only from repair, and the other replicas may purge it before the next \
             repair, bringing the deleted data back. Raise gc_grace_seconds well above {}, or \
             lower the interval (--auto-repair-interval-secs / auto_repair_interval_secs) well \
             below {} on every node.",
            self.keyspace,
            self.table,
            self.gc_grace_seconds,
            show_seconds(self.repair_interval),
            self.repair_interval.as_secs(),
            self.gc_grace_seconds,
        )
    }
}

impl Table {
    /// The warning for this table when its `gc_grace_seconds` is at or
    /// below `repair_interval` (see the module documentation).
    pub fn gc_grace_within_repair(&self, repair_interval: Duration) -> Option<GraceWithinRepair> {
        (self.gc_grace() <= repair_interval).then(|| GraceWithinRepair {
            keyspace: self.keyspace().to_string(),
            table: self.name().to_string(),
            table_id: self.id,
            gc_grace_seconds: self.gc_grace_seconds,
            repair_interval,
        })
    }
}

impl Schema {
    /// The warnings of every table whose `gc_grace_seconds` is at or below
    /// `repair_interval`, in keyspace and table order.
    pub fn gc_grace_within_repair(&self, repair_interval: Duration) -> Vec<GraceWithinRepair> {
        self.keyspaces()
            .flat_map(|ks| self.tables(&ks.name))
            .filter_map(|t| t.gc_grace_within_repair(repair_interval))
            .collect()
    }
}
