//! An OS crash must not make a replica reuse a dot it stamped and sent on.
//!
//! Replica A stamps a write and sends the deltas to replica B; then A's
//! OS crashes before A's commit log synced the write (standing in for it:
//! A's directory goes back to a copy taken before the write). Restarted,
//! A stamps a second write of the same row. Under a new boot A takes a new
//! stamping id, so B keeps both writes; the control run reopens A under
//! the same boot id (the old behaviour): the second write gets the first
//! one's dot and B keeps only one of the two acknowledged writes.

use std::path::Path;
use std::sync::Arc;

use cql_lite::{DataType, Value};
use ringdb::model::key::{encode_clustering, serialize_partition_key, ClusteringOrder};
use ringdb::model::{CellValue, HybridClock, RowWrite, SystemClock, Timestamp};
use ringdb::query::api::{Mutation, QueryExecutor, QueryOptions, SessionState, SliceRequest};
use ringdb::query::api::{StoredRow, TableRef};
use ringdb::query::{Executor, ExecutorConfig, LocalStore};
use ringdb::schema::SchemaStore;
use ringdb::storage::commitlog::SyncMode;
use ringdb::storage::engine::EngineOptions;

fn engine_options() -> EngineOptions {
    EngineOptions {
        sync_mode: SyncMode::Batch,
        background: false,
        block_cache_bytes: 1 << 20,
        ..EngineOptions::default()
    }
}

struct Stores {
    hlc: Arc<HybridClock>,
    schema: Arc<SchemaStore>,
}

impl Stores {
    fn open(&self, dir: &Path, boot: &str) -> Arc<LocalStore> {
        let store = LocalStore::open_under_boot(
            dir,
            self.hlc.clone(),
            self.schema.clone(),
            engine_options(),
            Some(boot),
        )
        .expect("store");
        store.set_inline_io(true);
        Arc::new(store)
    }
}

fn write_v(v: i32, ts: u64) -> Mutation {
    Mutation::Row {
        clustering: encode_clustering(&[Value::Int(1)], &[DataType::Int], &[ClusteringOrder::Asc])
            .expect("ck"),
        write: RowWrite {
            ts: Timestamp(ts),
            insert_marker: None,
            delete_row: false,
            cells: vec![("v".into(), CellValue::Live(Value::Int(v)), None)],
        },
        context: None,
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Runs the scenario; A reopens after the crash under `boot_after`.
/// Returns B's copy of the row, and A's node id and stamping id after
/// the restart.
async fn lost_write_then_restamp(
    boot_after: &str,
) -> (StoredRow, ringdb::model::NodeId, ringdb::model::NodeId) {
    let root = tempfile::tempdir().expect("tempdir");
    let (a_dir, b_dir, before) = (
        root.path().join("a"),
        root.path().join("b"),
        root.path().join("a-before"),
    );
    let stores = Stores {
        hlc: Arc::new(HybridClock::new(Arc::new(SystemClock))),
        schema: Arc::new(SchemaStore::open(&root.path().join("schema")).expect("schema")),
    };
    let a = stores.open(&a_dir, "boot-1");
    let b = stores.open(&b_dir, "boot-1");
    {
        let exec = Executor::new(
            a.clone(),
            stores.schema.clone(),
            stores.hlc.clone(),
            ExecutorConfig::default(),
        );
        exec.execute(
            &mut SessionState::default(),
            "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 2}; CREATE TABLE ks.t (k int, c int, v int, PRIMARY KEY (k, c))",
            vec![],
            QueryOptions::default(),
        )
        .await
        .expect("ddl");
    }
    let t = stores
        .schema
        .current()
        .get_table("ks", "t")
        .expect("table")
        .clone();
    let table = TableRef {
        keyspace: "ks".into(),
        table: "t".into(),
        id: t.id,
    };
    let pk = serialize_partition_key(&[Value::Int(1)], &[DataType::Int]).expect("pk");
    // A touches the table once so its files exist, then closes: this copy
    // is what A's disk holds before the first write.
    a.engine(&table).expect("engine");
    drop(a);
    copy_dir(&a_dir, &before);

    let a = stores.open(&a_dir, "boot-1");
    let first = a
        .stamp(&table, &pk, vec![write_v(1, 1_000)])
        .await
        .expect("stamp 1");
    b.apply(&table, first).await.expect("apply 1");
    drop(a);

    // A's OS crashes before the first write reached its disk.
    std::fs::remove_dir_all(&a_dir).expect("rm");
    copy_dir(&before, &a_dir);
    let a = stores.open(&a_dir, boot_after);
    let second = a
        .stamp(&table, &pk, vec![write_v(2, 2_000)])
        .await
        .expect("stamp 2");
    b.apply(&table, second).await.expect("apply 2");

    let slice = b
        .read_states(
            &table,
            &pk,
            SliceRequest {
                lower: std::ops::Bound::Unbounded,
                upper: std::ops::Bound::Unbounded,
                reverse: false,
                limit: None,
            },
        )
        .await
        .expect("read");
    assert_eq!(slice.rows.len(), 1, "one row");
    let row = slice.rows.into_iter().next().expect("row");
    (
        StoredRow {
            clustering: row.clustering,
            state: row.state,
        },
        a.node_id(),
        a.stamp_actor(),
    )
}

fn values(row: &StoredRow) -> Vec<String> {
    let mut out: Vec<String> = row
        .state
        .versions()
        .iter()
        .map(|v| format!("{:?}", v.cells.get("v").map(|c| &c.value)))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn after_an_os_restart_a_replica_stamps_with_a_new_id_and_no_write_is_lost() {
    let (row, node, actor) = lost_write_then_restamp("boot-2").await;
    assert_ne!(actor, node, "a new stamping id after the OS restart");
    assert_eq!(
        row.state.versions().len(),
        2,
        "B keeps both writes as siblings: {:?}",
        values(&row)
    );
    let dots: Vec<_> = row.state.versions().iter().map(|v| v.dot).collect();
    assert!(dots.iter().any(|d| d.node == actor) && dots.iter().any(|d| d.node == node));
}

#[tokio::test]
async fn control_the_same_id_after_the_lost_write_would_reuse_its_dot() {
    let (row, node, actor) = lost_write_then_restamp("boot-1").await;
    assert_eq!(actor, node);
    assert_eq!(
        row.state.versions().len(),
        1,
        "with the old id the second write reuses the first one's dot, and one is lost: {:?}",
        values(&row)
    );
}

#[test]
fn a_used_store_without_its_stamp_actor_file_takes_a_fresh_id() {
    // Written by an older ringdb, or restored from a copy and the file
    // deleted as docs/operations.md says.
    let root = tempfile::tempdir().expect("tempdir");
    let stores = Stores {
        hlc: Arc::new(HybridClock::new(Arc::new(SystemClock))),
        schema: Arc::new(SchemaStore::open(&root.path().join("schema")).expect("schema")),
    };
    let dir = root.path().join("a");
    let first = stores.open(&dir, "boot-1");
    let node = first.node_id();
    assert_eq!(
        first.stamp_actor(),
        node,
        "a new store stamps with its node id"
    );
    drop(first);
    std::fs::create_dir_all(dir.join("ks")).expect("a keyspace directory");
    std::fs::remove_file(dir.join("stamp_actor")).expect("rm");
    let reopened = stores.open(&dir, "boot-1");
    assert_eq!(reopened.node_id(), node);
    assert_ne!(reopened.stamp_actor(), node);
}
