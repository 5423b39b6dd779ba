//! Logged batches on a single node's `LocalStore`: the store's own batch
//! log makes a batch across partitions (and tables, which have separate
//! commit logs) all-or-nothing across a crash.

use cql_lite::Value;
use ringdb::cluster::batchlog::{BatchEntry, BatchLog, BatchLogOptions};
use ringdb::model::{Consistency, HybridClock, ManualClock};
use ringdb::query::api::{
    encode_partition_writes, BoxFuture, DataStore, Mutation, PartitionWrite, QueryError,
    QueryExecutor, QueryOptions, QueryResult, ScannedPartition, SessionState, SliceRequest,
    StoredPartition, TableRef,
};
use ringdb::query::{Executor, ExecutorConfig, LocalStore};
use ringdb::schema::SchemaStore;
use ringdb::storage::engine::EngineOptions;
use std::path::Path;
use std::sync::{Arc, Mutex};

const BATCH: &str = "BEGIN BATCH
    INSERT INTO ks.a (k, v) VALUES (1, 10);
    INSERT INTO ks.a (k, v) VALUES (2, 20);
    INSERT INTO ks.b (k, v) VALUES (3, 30);
    INSERT INTO ks.b (k, v) VALUES (4, 40);
    APPLY BATCH";

fn open(dir: &Path) -> (Arc<LocalStore>, Arc<SchemaStore>, Arc<HybridClock>) {
    let clock = Arc::new(HybridClock::new(ManualClock::new(1_700_000_000_000)));
    let schema = Arc::new(SchemaStore::open(&dir.join("schema")).unwrap());
    let store = Arc::new(
        LocalStore::open(
            &dir.join("data"),
            clock.clone(),
            schema.clone(),
            EngineOptions::default(),
        )
        .unwrap(),
    );
    (store, schema, clock)
}

async fn run(exec: &Executor, text: &str) -> Result<QueryResult, QueryError> {
    let mut session = SessionState::default();
    exec.execute(&mut session, text, vec![], QueryOptions::default())
        .await
        .map(|r| r.result)
}

async fn setup(exec: &Executor) {
    for stmt in [
        "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
        "CREATE TABLE ks.a (k int PRIMARY KEY, v int)",
        "CREATE TABLE ks.b (k int PRIMARY KEY, v int)",
    ] {
        run(exec, stmt).await.unwrap();
    }
}

/// `v` of every key 1..=4 (from table a for 1 and 2, b for 3 and 4).
async fn values(exec: &Executor) -> Vec<Option<Value>> {
    let mut out = Vec::new();
    for (table, k) in [("a", 1), ("a", 2), ("b", 3), ("b", 4)] {
        match run(exec, &format!("SELECT v FROM ks.{table} WHERE k = {k}"))
            .await
            .unwrap()
        {
            QueryResult::Rows(rs) => out.push(rs.rows.first().map(|r| r.values[0].clone())),
            other => panic!("expected rows, got {other:?}"),
        }
    }
    out
}

fn all_written() -> Vec<Option<Value>> {
    [10, 20, 30, 40].map(|v| Some(Value::Int(v))).to_vec()
}

/// A store that records the logged batch it is given instead of writing
/// it (it isolates the executor: what would be logged, exactly), and
/// passes everything else to the local store.
struct Recorder {
    local: Arc<LocalStore>,
    logged: Mutex<Vec<PartitionWrite>>,
}

impl DataStore for Recorder {
    fn write<'a>(
        &'a self,
        table: &'a TableRef,
        partition_key: &'a [u8],
        mutations: Vec<Mutation>,
        consistency: Consistency,
    ) -> BoxFuture<'a, Result<(), QueryError>> {
        self.local
            .write(table, partition_key, mutations, consistency)
    }

    fn read<'a>(
        &'a self,
        table: &'a TableRef,
        partition_key: &'a [u8],
        slice: SliceRequest,
        consistency: Consistency,
    ) -> BoxFuture<'a, Result<StoredPartition, QueryError>> {
        self.local.read(table, partition_key, slice, consistency)
    }

    fn scan<'a>(
        &'a self,
        table: &'a TableRef,
        after: Option<Vec<u8>>,
        max_partitions: usize,
        rows_per_partition: Option<usize>,
        consistency: Consistency,
    ) -> BoxFuture<'a, Result<Vec<ScannedPartition>, QueryError>> {
        self.local.scan(
            table,
            after,
            max_partitions,
            rows_per_partition,
            consistency,
        )
    }

    fn truncate<'a>(&'a self, table: &'a TableRef) -> BoxFuture<'a, Result<(), QueryError>> {
        self.local.truncate(table)
    }

    fn write_logged_batch<'a>(
        &'a self,
        partitions: Vec<PartitionWrite>,
        _consistency: Consistency,
    ) -> BoxFuture<'a, Result<(), QueryError>> {
        self.logged.lock().unwrap().extend(partitions);
        Box::pin(async { Ok(()) })
    }
}

/// The partitions the executor logs for [`BATCH`], written nowhere.
async fn planned_batch(
    local: &Arc<LocalStore>,
    schema: &Arc<SchemaStore>,
    clock: &Arc<HybridClock>,
) -> Vec<PartitionWrite> {
    let recorder = Arc::new(Recorder {
        local: local.clone(),
        logged: Mutex::new(Vec::new()),
    });
    let exec = Executor::new(
        recorder.clone(),
        schema.clone(),
        clock.clone(),
        ExecutorConfig::default(),
    );
    run(&exec, BATCH).await.unwrap();
    let parts = recorder.logged.lock().unwrap().clone();
    assert_eq!(parts.len(), 4, "one entry per partition");
    parts
}

/// Writes a batch-log entry as the store would have before applying.
fn leave_entry(dir: &Path, parts: &[PartitionWrite]) {
    let log = BatchLog::open(
        &dir.join("data").join("local-batchlog"),
        BatchLogOptions::default(),
    )
    .unwrap();
    log.store(&BatchEntry {
        id: 7,
        written_ms: 1_700_000_000_000,
        payload: encode_partition_writes(parts).unwrap(),
    })
    .unwrap();
}

fn local_log_is_empty(dir: &Path) -> bool {
    BatchLog::open(
        &dir.join("data").join("local-batchlog"),
        BatchLogOptions::default(),
    )
    .unwrap()
    .is_empty()
}

#[tokio::test]
async fn a_logged_batch_is_applied_and_leaves_nothing_in_the_local_batch_log() {
    let dir = tempfile::tempdir().unwrap();
    let (store, schema, clock) = open(dir.path());
    let exec = Executor::new(store.clone(), schema, clock, ExecutorConfig::default());
    setup(&exec).await;
    run(&exec, BATCH).await.unwrap();
    assert_eq!(values(&exec).await, all_written());
    drop(exec);
    drop(store);
    assert!(dir.path().join("data").join("local-batchlog").exists());
    assert!(local_log_is_empty(dir.path()));
}

/// The process died after the batch log entry was durable and one
/// partition was applied: reopening the store applies the rest before
/// anything else runs, and empties the log.
#[tokio::test]
async fn a_batch_cut_short_by_a_crash_is_completed_when_the_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, schema, clock) = open(dir.path());
        let exec = Executor::new(
            store.clone(),
            schema.clone(),
            clock.clone(),
            ExecutorConfig::default(),
        );
        setup(&exec).await;
        let parts = planned_batch(&store, &schema, &clock).await;
        leave_entry(dir.path(), &parts);
        let first = parts[0].clone();
        store
            .write(
                &first.table,
                &first.partition_key,
                first.mutations,
                Consistency::One,
            )
            .await
            .unwrap();
        assert_eq!(
            values(&exec).await,
            vec![Some(Value::Int(10)), None, None, None],
            "half applied when the process dies"
        );
    }
    let (store, schema, clock) = open(dir.path());
    let exec = Executor::new(store.clone(), schema, clock, ExecutorConfig::default());
    assert_eq!(values(&exec).await, all_written());
    drop(exec);
    drop(store);
    assert!(local_log_is_empty(dir.path()));
}

/// A leftover batch for a table dropped since: that table's part is
/// discarded, the rest applied, and the store opens.
#[tokio::test]
async fn a_leftover_batch_for_a_dropped_table_is_discarded_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, schema, clock) = open(dir.path());
        let exec = Executor::new(
            store.clone(),
            schema.clone(),
            clock.clone(),
            ExecutorConfig::default(),
        );
        setup(&exec).await;
        let parts = planned_batch(&store, &schema, &clock).await;
        run(&exec, "DROP TABLE ks.a").await.unwrap();
        leave_entry(dir.path(), &parts);
    }
    let (store, schema, clock) = open(dir.path());
    let exec = Executor::new(store.clone(), schema, clock, ExecutorConfig::default());
    for k in [3, 4] {
        match run(&exec, &format!("SELECT v FROM ks.b WHERE k = {k}"))
            .await
            .unwrap()
        {
            QueryResult::Rows(rs) => assert_eq!(rs.rows[0].values, vec![Value::Int(k * 10)]),
            other => panic!("expected rows, got {other:?}"),
        }
    }
    drop(exec);
    drop(store);
    assert!(local_log_is_empty(dir.path()));
}
