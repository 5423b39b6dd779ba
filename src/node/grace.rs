//! The node's log warning for tables whose `gc_grace_seconds` is at or
//! below its hint window (see [`crate::schema::ShortGcGrace`] for why it
//! matters).
//!
//! A DDL statement run on this node warns its client already; the log
//! covers what a client never sees: tables of the schema the node starts
//! with, and tables created or altered on other nodes that reach it
//! through gossip. Each table is logged once per value of its
//! `gc_grace_seconds`, not at every check: again only if the value
//! changes to another that is still too short, or rises above the window
//! and comes back.

use crate::schema::{Schema, SchemaStore, ShortGcGrace};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How often the node looks whether its schema changed.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Remembers which tables were logged with which `gc_grace_seconds`.
#[derive(Debug)]
pub(crate) struct GraceWatch {
    hint_window: Duration,
    /// Table id to the `gc_grace_seconds` it was logged with; only tables
    /// whose grace period is at or below the window now.
    warned: Mutex<HashMap<u128, u32>>,
}

impl GraceWatch {
    /// A watch for a node whose hint window is `hint_window`.
    pub(crate) fn new(hint_window: Duration) -> GraceWatch {
        GraceWatch {
            hint_window,
            warned: Mutex::new(HashMap::new()),
        }
    }

    /// Logs a warning for each table of `schema` whose grace period is at
    /// or below the hint window and was not logged with that value
    /// already; returns those tables.
    pub(crate) fn check(&self, schema: &Schema) -> Vec<ShortGcGrace> {
        let short = schema.short_gc_grace(self.hint_window);
        let mut warned = self.warned.lock();
        // Forget tables dropped or raised above the window: coming back
        // below it is news again.
        warned.retain(|id, _| short.iter().any(|s| s.table_id == *id));
        let new: Vec<ShortGcGrace> = short
            .into_iter()
            .filter(|s| warned.insert(s.table_id, s.gc_grace_seconds) != Some(s.gc_grace_seconds))
            .collect();
        drop(warned);
        for s in &new {
            tracing::warn!(
                keyspace = %s.keyspace,
                table = %s.table,
                gc_grace_seconds = s.gc_grace_seconds,
                hint_window_secs = s.hint_window.as_secs(),
                "{s}"
            );
        }
        new
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

    fn names(found: &[ShortGcGrace]) -> Vec<(&str, u32)> {
        found
            .iter()
            .map(|s| (s.table.as_str(), s.gc_grace_seconds))
            .collect()
    }

    #[test]
    fn tables_at_or_below_the_window_are_logged_once_per_value() {
        let window = Duration::from_secs(10_800);
        let watch = GraceWatch::new(window);
        let s = schema(10_800);
        // At start: the table at the window and the one below it.
        assert_eq!(names(&watch.check(&s)), vec![("a", 10_800), ("b", 10_799)]);
        // Not again while nothing changes.
        assert!(watch.check(&s).is_empty());
        // A new short value is news; an unrelated change is not.
        let s = apply(&s, "ALTER TABLE a WITH gc_grace_seconds = 60", 0);
        let s = apply(&s, "ALTER TABLE b WITH comment = 'x'", 0);
        assert_eq!(names(&watch.check(&s)), vec![("a", 60)]);
        // Raised above the window, then back to a value already logged.
        let s = apply(&s, "ALTER TABLE b WITH gc_grace_seconds = 864000", 0);
        assert!(watch.check(&s).is_empty());
        let s = apply(&s, "ALTER TABLE b WITH gc_grace_seconds = 10799", 0);
        assert_eq!(names(&watch.check(&s)), vec![("b", 10_799)]);
        // Dropped and created again under the same name: a new table.
        let s = apply(&s, "DROP TABLE a", 0);
        assert!(watch.check(&s).is_empty());
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
        let watch = GraceWatch::new(Duration::from_secs(864_000));
        let found = watch.check(&schema(3600));
        assert_eq!(
            names(&found),
            vec![("a", 3600), ("b", 3599), ("c", 3601), ("d", 864_000)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_watch_task_checks_schemas_learned_later() {
        let store = Arc::new(SchemaStore::in_memory());
        let watch = Arc::new(GraceWatch::new(Duration::from_secs(3600)));
        let task = tokio::spawn(watch_gc_grace(store.clone(), watch.clone(), CHECK_INTERVAL));
        tokio::time::sleep(CHECK_INTERVAL * 2).await;
        // A schema from another node, as gossip merges it.
        let theirs = schema(3600);
        store.merge(&theirs).unwrap();
        tokio::time::sleep(CHECK_INTERVAL * 2).await;
        // The task logged its two short tables already.
        assert_eq!(watch.warned.lock().len(), 2);
        assert!(watch.check(&store.current()).is_empty());
        task.abort();
    }
}
