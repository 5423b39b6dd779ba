//! `ALTER TABLE ... WITH` reaches a table whose engine is already open:
//! the next compaction uses the new grace period and strategy, without a
//! restart.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cql_lite::{DataType, Value};
use ringdb::model::key::serialize_partition_key;
use ringdb::model::{HybridClock, ManualClock};
use ringdb::query::api::{QueryExecutor, QueryOptions, SessionState, SliceRequest, TableRef};
use ringdb::query::{Executor, ExecutorConfig, LocalStore};
use ringdb::schema::SchemaStore;
use ringdb::storage::commitlog::SyncMode;
use ringdb::storage::compaction::CompactionStrategy;
use ringdb::storage::engine::EngineOptions;

struct Node {
    clock: Arc<ManualClock>,
    store: Arc<LocalStore>,
    schema: Arc<SchemaStore>,
    exec: Executor,
    session: SessionState,
}

impl Node {
    fn open(dir: &Path) -> Node {
        let clock = ManualClock::new(1_709_251_200_000);
        let hlc = Arc::new(HybridClock::new(clock.clone()));
        let schema = Arc::new(SchemaStore::open(dir).expect("schema"));
        let opts = EngineOptions {
            sync_mode: SyncMode::Periodic {
                interval: Duration::from_millis(200),
            },
            background: false,
            block_cache_bytes: 1 << 20,
            ..EngineOptions::default()
        };
        let store =
            Arc::new(LocalStore::open(dir, hlc.clone(), schema.clone(), opts).expect("store"));
        store.set_inline_io(true);
        let exec = Executor::new(
            store.clone(),
            schema.clone(),
            hlc,
            ExecutorConfig::default(),
        );
        Node {
            clock,
            store,
            schema,
            exec,
            session: SessionState::default(),
        }
    }

    async fn run(&mut self, cql: &str) {
        self.exec
            .execute(&mut self.session, cql, vec![], QueryOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{cql}: {e}"));
    }

    fn table(&self) -> TableRef {
        let t = self
            .schema
            .current()
            .get_table("ks", "t")
            .expect("t")
            .clone();
        TableRef {
            keyspace: "ks".into(),
            table: "t".into(),
            id: t.id,
        }
    }

    /// Rows of partition 1 the replica holds, dead ones included.
    async fn stored_rows(&self) -> usize {
        let pk = serialize_partition_key(&[Value::Int(1)], &[DataType::Int]).expect("pk");
        let slice = SliceRequest {
            lower: std::ops::Bound::Unbounded,
            upper: std::ops::Bound::Unbounded,
            reverse: false,
            limit: None,
        };
        let states = self
            .store
            .read_states(&self.table(), &pk, slice)
            .await
            .expect("read");
        states.rows.len()
    }
}

#[tokio::test]
async fn a_new_grace_period_applies_to_the_next_compaction_of_an_open_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Node::open(dir.path());
    node.run("CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}").await;
    node.run("CREATE TABLE ks.t (k int, c int, v int, PRIMARY KEY (k, c)) WITH gc_grace_seconds = 864000").await;
    node.run("INSERT INTO ks.t (k, c, v) VALUES (1, 1, 10)")
        .await;
    node.store.flush_all().expect("flush");
    node.clock.advance(1_000);
    node.run("DELETE FROM ks.t WHERE k = 1 AND c = 1").await;
    node.store.flush_all().expect("flush");
    node.clock.advance(60_000);

    node.store.compact_all().expect("compact");
    assert_eq!(
        node.stored_rows().await,
        1,
        "inside the ten-day grace period the deletion is kept"
    );

    node.run("ALTER TABLE ks.t WITH gc_grace_seconds = 0").await;
    node.run("INSERT INTO ks.t (k, c, v) VALUES (2, 1, 20)")
        .await;
    node.store.flush_all().expect("flush");
    node.clock.advance(1_000);
    node.store.compact_all().expect("compact");
    assert_eq!(
        node.stored_rows().await,
        0,
        "with no grace period the compaction purges the dead row"
    );
    let engine = node.store.engine(&node.table()).expect("engine");
    assert_eq!(engine.policy().gc_grace, Duration::ZERO);

    node.run("ALTER TABLE ks.t WITH compaction = {'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': 'HOURS', 'compaction_window_size': 2}").await;
    node.store.engine(&node.table()).expect("engine");
    assert!(
        matches!(
            engine.policy().compaction,
            CompactionStrategy::TimeWindow { .. }
        ),
        "{:?}",
        engine.policy().compaction
    );
}
