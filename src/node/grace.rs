//! The node's log warnings for tables whose `gc_grace_seconds` is at or
//! below its hint window, or its automatic repair interval (see
//! [`crate::schema::ShortGcGrace`] and [`crate::schema::GraceWithinRepair`]
//! for why it matters).
//!
//! A DDL statement run on this node warns its client already; the log
//! covers what a client never sees: tables of the schema the node starts
//! with, and tables created or altered on other nodes that reach it
//! through gossip. Each table is logged once per value of its
//! `gc_grace_seconds`, not at every check: again only if the value
//! changes to another that is still too short, or rises above the limit
//! and comes back.

use crate::schema::{GraceWithinRepair, Schema, SchemaStore, ShortGcGrace};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How often the node looks whether its schema changed.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A table found too short by one check.
trait Finding: std::fmt::Display {
    fn table_id(&self) -> u128;
    fn gc_grace_seconds(&self) -> u32;
}

impl Finding for ShortGcGrace {
    fn table_id(&self) -> u128 {
        self.table_id
    }
    fn gc_grace_seconds(&self) -> u32 {
        self.gc_grace_seconds
    }
}

impl Finding for GraceWithinRepair {
    fn table_id(&self) -> u128 {
        self.table_id
    }
    fn gc_grace_seconds(&self) -> u32 {
        self.gc_grace_seconds
    }
}

/// Table ids to the `gc_grace_seconds` they were logged with, for one
/// check; only tables found too short now.
#[derive(Debug, Default)]
struct Warned(Mutex<HashMap<u128, u32>>);

impl Warned {
    /// Of `found` (every table too short now), the ones not logged with
    /// their value already; remembers them, and forgets tables no longer
    /// found (dropped or raised above the limit: coming back is news).
    fn news<T: Finding>(&self, found: Vec<T>) -> Vec<T> {
        let mut warned = self.0.lock();
        warned.retain(|id, _| found.iter().any(|s| s.table_id() == *id));
        found
            .into_iter()
            .filter(|s| {
                warned.insert(s.table_id(), s.gc_grace_seconds()) != Some(s.gc_grace_seconds())
            })
            .collect()
    }
}

/// What one look at the schema found that was not logged before.
#[derive(Debug, Default)]
pub(crate) struct GraceNews {
    /// Tables whose grace period is at or below the hint window.
    pub(crate) hint_window: Vec<ShortGcGrace>,
    /// Tables whose grace period is at or below the repair interval.
    pub(crate) repair_interval: Vec<GraceWithinRepair>,
}

/// Remembers which tables were logged with which `gc_grace_seconds`.
#[derive(Debug)]
pub(crate) struct GraceWatch {
    hint_window: Duration,
    /// `None` when automatic repair is off.
    repair_interval: Option<Duration>,
    warned_hints: Warned,
    warned_repair: Warned,
}

impl GraceWatch {
    /// A watch for a node whose hint window is `hint_window` and whose
    /// automatic repair runs every `repair_interval` (`None`: off).
    pub(crate) fn new(hint_window: Duration, repair_interval: Option<Duration>) -> GraceWatch {
        GraceWatch {
            hint_window,
            repair_interval,
            warned_hints: Warned::default(),
            warned_repair: Warned::default(),
        }
    }

    /// Logs a warning for each table of `schema` whose grace period is at
    /// or below the hint window or the repair interval and was not logged
    /// with that value already; returns those tables.
    pub(crate) fn check(&self, schema: &Schema) -> GraceNews {
        let news = GraceNews {
            hint_window: self
                .warned_hints
                .news(schema.short_gc_grace(self.hint_window)),
            repair_interval: match self.repair_interval {
                Some(interval) => self
                    .warned_repair
                    .news(schema.gc_grace_within_repair(interval)),
                None => Vec::new(),
            },
        };
        // The warning names the table, both values and the fix.
        for s in &news.hint_window {
            tracing::warn!(table_id = s.table_id, "{s}");
        }
        for s in &news.repair_interval {
            tracing::warn!(table_id = s.table_id, "{s}");
        }
        news
    }
}

/// Checks the node's schema with `watch` every `every`, whenever it
/// changed (a DDL statement here, a schema merged from gossip).
pub(crate) async fn watch_gc_grace(
    schema: Arc<SchemaStore>,
    watch: Arc<GraceWatch>,
    every: Duration,
) {
    let mut last: Option<Arc<Schema>> = None;
    loop {
        let now = schema.current();
        if !last.as_ref().is_some_and(|l| Arc::ptr_eq(l, &now)) {
            watch.check(&now);
            last = Some(now);
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Timestamp;

    fn apply(schema: &Schema, text: &str, id: u128) -> Schema {
        let stmt = cql_lite::parse_statement(text).unwrap();
        let change = schema
            .change_for(&stmt, Some("ks"), id, Timestamp::from_millis(5))
            .unwrap()
            .unwrap();
        schema.apply(&change).unwrap()
    }

    /// Keyspace `ks` with tables `a` (grace = the window), `b` (below),
    /// `c` (one second above) and `d` (the default, ten days).
    fn schema(window_secs: u32) -> Schema {
        let mut s = apply(
            &Schema::new(),
            "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 3}",
            1,
        );
        for (id, (name, grace)) in [
            ("a", Some(window_secs)),
            ("b", Some(window_secs - 1)),
            ("c", Some(window_secs + 1)),
            ("d", None),
        ]
        .into_iter()
        .enumerate()
        {
            let with = grace.map_or(String::new(), |g| format!(" WITH gc_grace_seconds = {g}"));
            s = apply(
                &s,
                &format!("CREATE TABLE {name} (k int PRIMARY KEY, v int){with}"),
                10 + id as u128,
            );
        }
        s
    }

    fn names(news: &GraceNews) -> Vec<(&str, u32)> {
        assert!(news.repair_interval.is_empty(), "no repair interval set");
        news.hint_window
            .iter()
            .map(|s| (s.table.as_str(), s.gc_grace_seconds))
            .collect()
    }

    #[test]
    fn tables_at_or_below_the_window_are_logged_once_per_value() {
        let window = Duration::from_secs(10_800);
        let watch = GraceWatch::new(window, None);
        let s = schema(10_800);
        // At start: the table at the window and the one below it.
        assert_eq!(names(&watch.check(&s)), vec![("a", 10_800), ("b", 10_799)]);
        // Not again while nothing changes.
        assert!(names(&watch.check(&s)).is_empty());
        // A new short value is news; an unrelated change is not.
        let s = apply(&s, "ALTER TABLE a WITH gc_grace_seconds = 60", 0);
        let s = apply(&s, "ALTER TABLE b WITH comment = 'x'", 0);
        assert_eq!(names(&watch.check(&s)), vec![("a", 60)]);
        // Raised above the window, then back to a value already logged.
        let s = apply(&s, "ALTER TABLE b WITH gc_grace_seconds = 864000", 0);
        assert!(names(&watch.check(&s)).is_empty());
        let s = apply(&s, "ALTER TABLE b WITH gc_grace_seconds = 10799", 0);
        assert_eq!(names(&watch.check(&s)), vec![("b", 10_799)]);
        // Dropped and created again under the same name: a new table.
        let s = apply(&s, "DROP TABLE a", 0);
        assert!(names(&watch.check(&s)).is_empty());
        let s = apply(
            &s,
            "CREATE TABLE a (k int PRIMARY KEY, v int) WITH gc_grace_seconds = 60",
            99,
        );
        assert_eq!(names(&watch.check(&s)), vec![("a", 60)]);
    }

    #[test]
    fn a_window_longer_than_the_default_grace_flags_default_tables() {
        // --hint-window-hours 240: ten days, the default grace period.
        let watch = GraceWatch::new(Duration::from_secs(864_000), None);
        let found = watch.check(&schema(3600));
        assert_eq!(
            names(&found),
            vec![("a", 3600), ("b", 3599), ("c", 3601), ("d", 864_000)]
        );
    }

    #[test]
    fn tables_at_or_below_the_repair_interval_are_logged_once_per_value_too() {
        // Hint window one hour, repair every 3 hours (10800 s).
        let watch = GraceWatch::new(Duration::from_secs(3600), Some(Duration::from_secs(10_800)));
        let news = watch.check(&schema(10_800));
        let repair: Vec<(&str, u32)> = news
            .repair_interval
            .iter()
            .map(|s| (s.table.as_str(), s.gc_grace_seconds))
            .collect();
        assert_eq!(repair, vec![("a", 10_800), ("b", 10_799)]);
        assert!(news.hint_window.is_empty(), "all above one hour");
        assert!(news.repair_interval[0]
            .to_string()
            .contains("automatic repair interval of 10800 s (3 h)"));
        let again = watch.check(&schema(10_800));
        assert!(again.repair_interval.is_empty() && again.hint_window.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_watch_task_checks_schemas_learned_later() {
        let store = Arc::new(SchemaStore::in_memory());
        let watch = Arc::new(GraceWatch::new(Duration::from_secs(3600), None));
        let task = tokio::spawn(watch_gc_grace(store.clone(), watch.clone(), CHECK_INTERVAL));
        tokio::time::sleep(CHECK_INTERVAL * 2).await;
        // A schema from another node, as gossip merges it.
        let theirs = schema(3600);
        store.merge(&theirs).unwrap();
        tokio::time::sleep(CHECK_INTERVAL * 2).await;
        // The task logged its two short tables already.
        assert_eq!(watch.warned_hints.0.lock().len(), 2);
        assert!(names(&watch.check(&store.current())).is_empty());
        task.abort();
    }
}
