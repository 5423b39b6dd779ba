//! The replica side of the coordinator: the local store's replica
//! operations (stamp, apply, reads with dead rows, scans), the handler's
//! typed rejections, and a small cluster over real QUIC.

mod sim_cluster;

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use cql_lite::{DataType, Value};
use ringdb::cluster::anti_entropy::{differing_slices, SlicedSpan, MAX_DEPTH};
use ringdb::cluster::hints::{HintOptions, HintStore};
use ringdb::cluster::{NodeInfo, Ring};
use ringdb::coordinator::messages::{HintPayload, WireSlice};
use ringdb::coordinator::{
    ClusterStore, CoordinatorConfig, ManualLiveness, PeerError, PeerRequest, PeerResponse,
    ReplicaHandler,
};
use ringdb::model::key::serialize_partition_key;
use ringdb::model::{CellValue, Consistency, Entry, HybridClock, RowWrite, SystemClock};
use ringdb::net::tls::{ClusterCa, NodeTls};
use ringdb::net::{QuicConfig, QuicTransport, Transport};
use ringdb::query::api::{
    Mutation, QueryExecutor, QueryOptions, QueryResult, SessionState, SliceRequest, TableRef,
};
use ringdb::query::{Executor, ExecutorConfig, LocalStore};
use ringdb::schema::SchemaStore;
use sim_cluster::engine_options;

struct One {
    local: Arc<LocalStore>,
    handler: ReplicaHandler,
    table: TableRef,
}

async fn one_node(dir: &Path) -> One {
    let hlc = Arc::new(HybridClock::new(Arc::new(SystemClock)));
    let schema = Arc::new(SchemaStore::open(dir).expect("schema"));
    let local = Arc::new(
        LocalStore::open(dir, hlc.clone(), schema.clone(), engine_options()).expect("store"),
    );
    local.set_inline_io(true);
    let exec = Executor::new(
        local.clone(),
        schema.clone(),
        hlc,
        ExecutorConfig::default(),
    );
    let mut s = SessionState::default();
    exec.execute(
        &mut s,
        "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}; CREATE TABLE ks.t (k int, c int, v int, PRIMARY KEY (k, c))",
        vec![],
        QueryOptions::default(),
    )
    .await
    .expect("ddl");
    let t = schema
        .current()
        .get_table("ks", "t")
        .expect("table")
        .clone();
    let hints =
        Arc::new(HintStore::open(&dir.join("hints"), HintOptions::default()).expect("hints"));
    One {
        handler: ReplicaHandler::new(local.clone(), hints),
        table: TableRef {
            keyspace: "ks".into(),
            table: "t".into(),
            id: t.id,
        },
        local,
    }
}

fn pk(k: i32) -> Vec<u8> {
    serialize_partition_key(&[Value::Int(k)], &[DataType::Int]).expect("pk")
}

fn ck(c: i32) -> Vec<u8> {
    ringdb::model::key::encode_clustering(
        &[Value::Int(c)],
        &[DataType::Int],
        &[ringdb::model::key::ClusteringOrder::Asc],
    )
    .expect("ck")
}

fn row_write(c: i32, v: i32, delete: bool, ts: u64) -> Mutation {
    Mutation::Row {
        clustering: ck(c),
        write: RowWrite {
            ts: ringdb::model::Timestamp(ts),
            insert_marker: (!delete).then_some(None),
            delete_row: delete,
            cells: if delete {
                vec![]
            } else {
                vec![("v".into(), CellValue::Live(Value::Int(v)), None)]
            },
        },
        context: None,
    }
}

fn all() -> SliceRequest {
    SliceRequest {
        lower: Bound::Unbounded,
        upper: Bound::Unbounded,
        reverse: false,
        limit: None,
    }
}

#[tokio::test]
async fn replica_reads_return_dead_rows_and_say_where_they_stopped() {
    let dir = tempfile::tempdir().expect("tmp");
    let n = one_node(dir.path()).await;
    let deltas = n
        .local
        .stamp(
            &n.table,
            &pk(1),
            vec![
                row_write(1, 10, false, 1 << 20),
                row_write(2, 20, false, 1 << 20),
                row_write(3, 30, false, 1 << 20),
            ],
        )
        .await
        .expect("stamp");
    assert_eq!(deltas.len(), 3);
    n.local
        .stamp(&n.table, &pk(1), vec![row_write(2, 0, true, 2 << 20)])
        .await
        .expect("delete");
    let got = n
        .local
        .read_states(&n.table, &pk(1), all())
        .await
        .expect("read");
    let flags: Vec<bool> = got.rows.iter().map(|r| r.live).collect();
    assert_eq!(
        flags,
        vec![true, false, true],
        "the deleted row is returned, flagged dead"
    );
    assert!(!got.cut);
    // The limit counts live rows; the dead row in between does not count.
    let limited = SliceRequest {
        limit: Some(1),
        ..all()
    };
    let got = n
        .local
        .read_states(&n.table, &pk(1), limited)
        .await
        .expect("read");
    assert_eq!(got.rows.len(), 1);
    assert!(got.cut);
    let two = SliceRequest {
        limit: Some(2),
        ..all()
    };
    let got = n
        .local
        .read_states(&n.table, &pk(1), two)
        .await
        .expect("read");
    assert_eq!(got.rows.len(), 3);
    assert!(!got.cut, "stopped at the end, not at the limit");
    // Applying the same deltas again changes nothing (idempotent).
    n.local.apply(&n.table, deltas).await.expect("apply");
    let again = n
        .local
        .read_states(&n.table, &pk(1), all())
        .await
        .expect("read");
    assert_eq!(again.rows.len(), 3);
    // Scans: partitions in key order, a limit on partitions, dead rows kept.
    n.local
        .stamp(&n.table, &pk(2), vec![row_write(1, 1, false, 3 << 20)])
        .await
        .expect("stamp");
    let (parts, cut) = n
        .local
        .scan_states(&n.table, Bound::Unbounded, Bound::Unbounded, 10, Some(1))
        .await
        .expect("scan");
    assert!(!cut);
    assert_eq!(parts.len(), 2);
    let p1 = parts
        .iter()
        .find(|(p, _)| p.ends_with(&pk(1)))
        .expect("partition 1");
    assert!(p1.1.cut, "one live row per partition asked");
    let (parts, cut) = n
        .local
        .scan_states(&n.table, Bound::Unbounded, Bound::Unbounded, 1, None)
        .await
        .expect("scan");
    assert_eq!(parts.len(), 1);
    assert!(cut);
}

#[tokio::test]
async fn the_handler_rejects_bad_requests_with_typed_errors() {
    let dir = tempfile::tempdir().expect("tmp");
    let n = one_node(dir.path()).await;
    let bad_key = n
        .handler
        .serve(PeerRequest::Apply {
            table: n.table.clone(),
            entries: vec![(vec![1, 2, 3], Entry::Row(Default::default()))],
        })
        .await;
    assert!(
        matches!(bad_key, PeerResponse::Error(PeerError::Invalid(_))),
        "{bad_key:?}"
    );
    let unknown = n
        .handler
        .serve(PeerRequest::Read {
            table: TableRef {
                id: n.table.id + 1,
                ..n.table.clone()
            },
            pk: pk(1),
            slice: WireSlice::from(&all()),
        })
        .await;
    assert!(
        matches!(unknown, PeerResponse::Error(PeerError::UnknownTable(_))),
        "{unknown:?}"
    );
    let stored = n
        .handler
        .serve(PeerRequest::StoreHint {
            target: ringdb::model::NodeId(9),
            table: n.table.clone(),
            entries: vec![],
        })
        .await;
    assert_eq!(stored, PeerResponse::HintStored);
    assert!(HintPayload::decode(&[0xFF; 7]).is_err());
    assert!(HintPayload::decode(&[]).is_err());
    // A span hash request whose span came off the wire malformed (bounds
    // the wrong way round, too many slices) is refused, not served.
    for (lo, hi, depth) in [(5u64, 4u64, 1u8), (0, u64::MAX, MAX_DEPTH + 1)] {
        let encoded = bincode::serde::encode_to_vec((lo, hi, depth), bincode::config::standard())
            .expect("encode");
        let (span, _): (SlicedSpan, usize) =
            bincode::serde::decode_from_slice(&encoded, bincode::config::standard())
                .expect("a span decodes from any three numbers");
        let answer = n
            .handler
            .serve(PeerRequest::HashSpan {
                table: n.table.clone(),
                span,
            })
            .await;
        assert!(
            matches!(&answer, PeerResponse::Error(PeerError::Invalid(m)) if m.contains("span")),
            "{answer:?}"
        );
    }
}

#[tokio::test]
async fn span_hashes_count_partitions_in_their_slices_and_change_with_the_data() {
    let dir = tempfile::tempdir().expect("tmp");
    let n = one_node(dir.path()).await;
    let span = SlicedSpan::new(0, u64::MAX, 4).expect("span");
    let hash = |n: &One| {
        let req = PeerRequest::HashSpan {
            table: n.table.clone(),
            span,
        };
        let handler = n.handler.clone();
        async move {
            match handler.serve(req).await {
                PeerResponse::SpanHashes(h) => h,
                other => panic!("{other:?}"),
            }
        }
    };
    let empty = hash(&n).await;
    assert!(empty.hashes.iter().all(|h| *h == 0));
    for k in 0..100 {
        n.local
            .stamp(&n.table, &pk(k), vec![row_write(1, k, false, 10)])
            .await
            .expect("write");
    }
    let full = hash(&n).await;
    assert_eq!(full.partitions.iter().sum::<u64>(), 100);
    for (i, count) in full.partitions.iter().enumerate() {
        let expected = (0..100)
            .filter(|k| span.slice_of(ringdb::model::key::token_of(&pk(*k))) == Some(i))
            .count() as u64;
        assert_eq!(*count, expected, "slice {i}");
    }
    // The same data read from an SSTable hashes the same.
    n.local.flush_tables().await.expect("flush");
    assert_eq!(hash(&n).await, full);
    // One changed row changes exactly its slice.
    n.local
        .stamp(&n.table, &pk(42), vec![row_write(1, 0, false, 20)])
        .await
        .expect("write");
    let changed = hash(&n).await;
    let slice = span
        .slice_of(ringdb::model::key::token_of(&pk(42)))
        .expect("inside");
    assert_eq!(
        differing_slices(&span, &[&full, &changed]).expect("same shape"),
        vec![slice]
    );
}

/// Three nodes over real QUIC on localhost, same messages as the
/// simulation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_quic() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = ClusterCa::generate().expect("CA");
    let mut parts = Vec::new();
    for i in 0..3 {
        let dir = tmp.path().join(format!("n{i}"));
        let hlc = Arc::new(HybridClock::new(Arc::new(SystemClock)));
        let schema = Arc::new(SchemaStore::open(&dir).expect("schema"));
        let local = Arc::new(
            LocalStore::open(&dir, hlc.clone(), schema.clone(), engine_options()).expect("store"),
        );
        let hints =
            Arc::new(HintStore::open(&dir.join("hints"), HintOptions::default()).expect("hints"));
        let handler = Arc::new(ReplicaHandler::new(local.clone(), hints.clone()));
        let tls = NodeTls::throwaway(&ca, &format!("n{i}")).expect("cert");
        let transport = QuicTransport::<PeerRequest, PeerResponse>::bind(
            QuicConfig::new(std::net::SocketAddr::from(([127, 0, 0, 1], 0)), tls),
            handler,
        )
        .expect("bind");
        parts.push((hlc, schema, local, hints, transport));
    }
    let ring = Ring::new(parts.iter().enumerate().map(|(i, p)| {
        NodeInfo::new(
            p.2.node_id(),
            p.4.local_addr(),
            None,
            (0..8u64)
                .map(|j| (j * 3 + i as u64) * (u64::MAX / 24))
                .collect(),
        )
    }))
    .expect("ring");
    let live = Arc::new(ManualLiveness::new());
    let mut execs = Vec::new();
    for (hlc, schema, local, hints, transport) in parts {
        let transport: Arc<dyn Transport<PeerRequest, PeerResponse>> = Arc::new(transport);
        let store = ClusterStore::new(
            local,
            hints,
            schema.clone(),
            transport,
            ring.clone(),
            live.clone(),
            CoordinatorConfig::default(),
        );
        execs.push((
            Executor::new(
                Arc::new(store),
                schema.clone(),
                hlc,
                ExecutorConfig::default(),
            ),
            schema,
        ));
    }
    let mut s = SessionState::default();
    execs[0]
        .0
        .execute(
            &mut s,
            "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 3}; CREATE TABLE ks.kv (k int PRIMARY KEY, v int)",
            vec![],
            QueryOptions::default(),
        )
        .await
        .expect("ddl");
    let schema = (*execs[0].1.current()).clone();
    for (_, sch) in &execs[1..] {
        sch.merge(&schema).expect("schema");
    }
    let opts = |cl| QueryOptions {
        consistency: cl,
        ..QueryOptions::default()
    };
    for k in 0..10 {
        execs[k % 3]
            .0
            .execute(
                &mut s,
                &format!("INSERT INTO ks.kv (k, v) VALUES ({k}, {k})"),
                vec![],
                opts(Consistency::Quorum),
            )
            .await
            .expect("write");
    }
    for k in 0..10 {
        let r = execs[(k + 1) % 3]
            .0
            .execute(
                &mut s,
                &format!("SELECT v FROM ks.kv WHERE k = {k}"),
                vec![],
                opts(Consistency::All),
            )
            .await
            .expect("read");
        match r.result {
            QueryResult::Rows(rs) => assert_eq!(rs.rows[0].values, vec![Value::Int(k as i32)]),
            other => panic!("{other:?}"),
        }
    }
    let r = execs[2]
        .0
        .execute(
            &mut s,
            "SELECT * FROM ks.kv",
            vec![],
            opts(Consistency::Quorum),
        )
        .await
        .expect("scan");
    match r.result {
        QueryResult::Rows(rs) => assert_eq!(rs.rows.len(), 10),
        other => panic!("{other:?}"),
    }
}
