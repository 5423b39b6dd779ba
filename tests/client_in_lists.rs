//! `IN ?` through the whole stack: the client library binds a list, the
//! frame carries it over QUIC, the real executor (on a local store)
//! expands it as the literal list would; the prepared metadata says the
//! marker takes a list; nulls, lists where a value belongs and lists of
//! lists get typed errors, and the connection carries on.

#[path = "protocol_support.rs"]
mod support;

use cql_lite::{DataType, MarkerType, Value};
use ringdb::client::protocol::{ClientFrame, ProtocolErrorCode, ServerFrame, WireError};
use ringdb::client::{Client, ClientError};
use ringdb::model::{HybridClock, SystemClock};
use ringdb::query::api::{QueryError, QueryResult, Row};
use ringdb::query::{Executor, ExecutorConfig, LocalStore};
use ringdb::schema::SchemaStore;
use ringdb::server::schema_source::CatalogSource;
use ringdb::server::ClientServer;
use ringdb::storage::engine::EngineOptions;
use std::sync::Arc;
use support::{client_tls, server_tls, test_certs};

fn values(rows: &[Row]) -> Vec<Vec<Value>> {
    rows.iter().map(|r| r.values.clone()).collect()
}

fn rows(result: Result<ringdb::query::api::Response, ClientError>) -> Vec<Vec<Value>> {
    match result.expect("rows").result {
        QueryResult::Rows(rs) => values(&rs.rows),
        other => panic!("rows expected, got {other:?}"),
    }
}

fn invalid(result: Result<ringdb::query::api::Response, ClientError>) -> String {
    match result {
        Err(ClientError::Query(QueryError::Invalid { message, .. })) => message,
        other => panic!("an invalid request expected, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_list_reads_as_the_literal_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hlc = Arc::new(HybridClock::new(Arc::new(SystemClock)));
    let schema = Arc::new(SchemaStore::open(dir.path()).expect("schema"));
    let store = Arc::new(
        LocalStore::open(
            dir.path(),
            hlc.clone(),
            schema.clone(),
            EngineOptions::default(),
        )
        .expect("store"),
    );
    let executor = Arc::new(Executor::new(
        store,
        schema.clone(),
        hlc,
        ExecutorConfig::default(),
    ));
    let certs = test_certs();
    let server = ClientServer::bind(
        "127.0.0.1:0".parse().expect("address"),
        server_tls(&certs),
        executor,
        Arc::new(CatalogSource(schema)),
    )
    .expect("server binds");
    let client = Client::connect(server.local_addr(), client_tls(&certs))
        .await
        .expect("connects");
    for text in [
        "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
        "USE ks",
        "CREATE TABLE t (k int, c int, v text, PRIMARY KEY (k, c))",
        "INSERT INTO t (k, c, v) VALUES (1, 1, 'a')",
        "INSERT INTO t (k, c, v) VALUES (1, 2, 'b')",
        "INSERT INTO t (k, c, v) VALUES (2, 1, 'c')",
        "INSERT INTO t (k, c, v) VALUES (3, 1, 'd')",
    ] {
        client.execute(text, vec![]).await.expect(text);
    }

    let select = client
        .prepare("SELECT k, c, v FROM t WHERE k IN ? AND c IN :cs")
        .await
        .expect("prepare");
    let types: Vec<(String, MarkerType)> = select
        .prepared
        .bind_markers
        .iter()
        .map(|m| (m.name.clone(), m.marker_type))
        .collect();
    assert_eq!(
        types,
        vec![
            ("in(k)".to_string(), MarkerType::List(DataType::Int)),
            ("cs".to_string(), MarkerType::List(DataType::Int)),
        ]
    );
    let list = |ks: &[i32]| Value::List(ks.iter().copied().map(Value::Int).collect());
    let bound = rows(
        client
            .execute_prepared(&select, vec![list(&[3, 1, 3, 9]), list(&[2, 1])])
            .await,
    );
    let literal = rows(
        client
            .execute(
                "SELECT k, c, v FROM t WHERE k IN (3, 1, 3, 9) AND c IN (2, 1)",
                vec![],
            )
            .await,
    );
    assert_eq!(bound, literal);
    assert_eq!(bound.len(), 3, "{bound:?}");
    assert!(rows(
        client
            .execute_prepared(&select, vec![list(&[]), list(&[1])])
            .await
    )
    .is_empty());
    // Unprepared text takes a list too.
    assert_eq!(
        rows(
            client
                .execute(
                    "SELECT v FROM t WHERE k IN ? AND c = 1",
                    vec![list(&[2, 3])]
                )
                .await
        ),
        vec![vec![Value::Text("c".into())], vec![Value::Text("d".into())]]
    );

    // Typed errors that name the marker.
    assert!(invalid(
        client
            .execute_prepared(&select, vec![Value::Null, list(&[1])])
            .await
    )
    .contains("Invalid null value for IN restriction"));
    assert!(invalid(
        client
            .execute_prepared(&select, vec![Value::Int(1), list(&[1])])
            .await
    )
    .contains("bind marker 1 (in(k)): expected list<int>, got int"));
    assert!(invalid(
        client
            .execute_prepared(
                &select,
                vec![list(&[1]), Value::List(vec![Value::Text("1".into())])]
            )
            .await
    )
    .contains("bind marker 2 (cs): expected list<int>, got text at position 1"));
    let insert = client
        .prepare("INSERT INTO t (k, c, v) VALUES (?, ?, ?)")
        .await
        .expect("prepare");
    let stored = client
        .execute_prepared(
            &insert,
            vec![
                Value::Int(4),
                Value::Int(1),
                Value::List(vec![Value::Text("x".into())]),
            ],
        )
        .await;
    assert!(invalid(stored).contains("bind marker 3 (v): expected text, got list<text>"));
    assert!(rows(client.execute("SELECT * FROM t WHERE k = 4", vec![]).await).is_empty());

    // A list of lists does not even decode: the request is refused as
    // malformed, and the connection carries on.
    let nested = client
        .request(ClientFrame::Execute {
            id: select.prepared.id.clone(),
            values: vec![Value::List(vec![list(&[1])]), list(&[1])],
            options: client.default_options(),
        })
        .await;
    match nested {
        Ok(ServerFrame::Error(WireError::Protocol(e))) => {
            assert_eq!(e.code, ProtocolErrorCode::Malformed, "{e}")
        }
        Err(ClientError::Refused(e)) => assert_eq!(e.code, ProtocolErrorCode::Malformed, "{e}"),
        other => panic!("a malformed frame error expected, got {other:?}"),
    }
    assert_eq!(
        rows(
            client
                .execute_prepared(&select, vec![list(&[2]), list(&[1])])
                .await
        ),
        vec![vec![Value::Int(2), Value::Int(1), Value::Text("c".into())]]
    );
    client.close().await;
    server.shutdown().await;
}
