//! A node's tables read through one block cache: its memory is the size
//! the node was given, however many tables there are.

use cql_lite::Value;
use ringdb::model::{HybridClock, ManualClock};
use ringdb::query::api::{QueryExecutor, QueryOptions, QueryResult, SessionState, TableRef};
use ringdb::query::{Executor, ExecutorConfig, LocalStore};
use ringdb::schema::SchemaStore;
use ringdb::storage::commitlog::SyncMode;
use ringdb::storage::engine::EngineOptions;
use std::sync::Arc;
use std::time::Duration;

const CACHE_BYTES: usize = 1 << 20;
const TABLES: usize = 4;
const ROWS: i32 = 300;

#[test]
fn every_table_reads_through_the_one_block_cache_of_its_node() {
    let dir = tempfile::tempdir().unwrap();
    let hlc = Arc::new(HybridClock::new(ManualClock::new(1_700_000_000_000)));
    let schema = Arc::new(SchemaStore::open(dir.path()).unwrap());
    let opts = EngineOptions {
        sync_mode: SyncMode::Periodic {
            interval: Duration::from_millis(200),
        },
        background: false,
        block_cache_bytes: CACHE_BYTES,
        ..EngineOptions::default()
    };
    let store = Arc::new(LocalStore::open(dir.path(), hlc.clone(), schema.clone(), opts).unwrap());
    let exec = Executor::new(
        store.clone(),
        schema.clone(),
        hlc,
        ExecutorConfig::default(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut session = SessionState::default();
    let mut run = |text: &str| {
        rt.block_on(exec.execute(&mut session, text, vec![], QueryOptions::default()))
            .unwrap_or_else(|e| panic!("{text}: {e}"))
    };
    run("CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}");
    let filler = "x".repeat(1000);
    for t in 0..TABLES {
        run(&format!("CREATE TABLE ks.t{t} (k int PRIMARY KEY, v text)"));
        for k in 0..ROWS {
            run(&format!(
                "INSERT INTO ks.t{t} (k, v) VALUES ({k}, '{filler}')"
            ));
        }
    }
    store.flush_all().unwrap();
    // Read every row of every table from its SSTable: together they are
    // more than the cache holds (4 tables x 300 rows x ~1 KB).
    for t in 0..TABLES {
        for k in 0..ROWS {
            match run(&format!("SELECT v FROM ks.t{t} WHERE k = {k}")).result {
                QueryResult::Rows(rs) => {
                    assert_eq!(rs.rows.len(), 1, "t{t} k={k}");
                    assert_eq!(rs.rows[0].values, vec![Value::Text(filler.clone())]);
                }
                other => panic!("rows expected, got {other:?}"),
            }
        }
    }
    let current = schema.current();
    let engines: Vec<_> = (0..TABLES)
        .map(|t| {
            let table = current.get_table("ks", &format!("t{t}")).unwrap();
            store
                .engine(&TableRef {
                    keyspace: "ks".into(),
                    table: format!("t{t}"),
                    id: table.id,
                })
                .unwrap()
        })
        .collect();
    let cache = engines[0].block_cache().clone();
    for e in &engines {
        assert!(
            Arc::ptr_eq(e.block_cache(), &cache),
            "each table has its own block cache"
        );
        assert!(e.stats().sstables >= 1, "the rows were not flushed");
    }
    assert_eq!(cache.capacity(), CACHE_BYTES);
    assert!(
        cache.usage() > CACHE_BYTES / 2,
        "the reads did not go through the cache"
    );
    assert!(
        cache.usage() <= CACHE_BYTES,
        "{} over the node's {CACHE_BYTES}",
        cache.usage()
    );
}
