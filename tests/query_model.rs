//! Model-based test of the query layer: random INSERT, UPDATE, DELETE (row,
//! range, partition) and flushes through the real executor and local
//! store, checked after every step against a `BTreeMap` of the table, with
//! reads by partition, by slice in both directions with limits, and by
//! paged scans.

use cql_lite::Value;
use proptest::prelude::*;
use ringdb::model::{HybridClock, ManualClock};
use ringdb::query::api::{QueryExecutor, QueryOptions, QueryResult, SessionState};
use ringdb::query::{Executor, ExecutorConfig, LocalStore};
use ringdb::schema::SchemaStore;
use ringdb::storage::commitlog::SyncMode;
use ringdb::storage::engine::EngineOptions;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
enum Op {
    Insert(i32, i32, Option<i32>),
    Update(i32, i32, Option<i32>),
    DeleteRow(i32, i32),
    DeleteRange(i32, i32, i32),
    DeletePartition(i32),
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0..3i32;
    let c = 0..6i32;
    let v = proptest::option::weighted(0.8, 0..100i32);
    prop_oneof![
        4 => (p.clone(), c.clone(), v.clone()).prop_map(|(p, c, v)| Op::Insert(p, c, v)),
        2 => (p.clone(), c.clone(), v).prop_map(|(p, c, v)| Op::Update(p, c, v)),
        2 => (p.clone(), c.clone()).prop_map(|(p, c)| Op::DeleteRow(p, c)),
        1 => (p.clone(), c.clone(), c).prop_map(|(p, a, b)| Op::DeleteRange(p, a, b)),
        1 => p.prop_map(Op::DeletePartition),
        1 => Just(Op::Flush),
    ]
}

/// The model: (p, c) -> (v, whether an INSERT's row marker is live).
type Model = BTreeMap<(i32, i32), (Option<i32>, bool)>;

/// The rows that exist: a live marker or a value (an UPDATE writes no
/// marker, so nulling its only cell removes the row, as in Cassandra).
fn visible(model: &Model) -> BTreeMap<(i32, i32), Option<i32>> {
    model
        .iter()
        .filter(|(_, (v, marker))| *marker || v.is_some())
        .map(|(k, (v, _))| (*k, *v))
        .collect()
}

fn lit(v: Option<i32>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "null".into())
}

struct Node {
    store: Arc<LocalStore>,
    exec: Executor,
    session: SessionState,
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_709_251_200_000);
        let hlc = Arc::new(HybridClock::new(clock));
        let schema = Arc::new(SchemaStore::open(dir.path()).unwrap());
        let opts = EngineOptions {
            sync_mode: SyncMode::Periodic {
                interval: Duration::from_millis(500),
            },
            background: false,
            block_cache_bytes: 1 << 20,
            ..EngineOptions::default()
        };
        let store =
            Arc::new(LocalStore::open(dir.path(), hlc.clone(), schema.clone(), opts).unwrap());
        let exec = Executor::new(store.clone(), schema, hlc, ExecutorConfig::default());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut n = Node {
            store,
            exec,
            session: SessionState::default(),
            rt,
            _dir: dir,
        };
        n.run("CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}");
        n.run("USE ks");
        n.run("CREATE TABLE t (p int, c int, v int, PRIMARY KEY (p, c)) WITH CLUSTERING ORDER BY (c DESC)");
        n
    }

    fn run_with(&mut self, text: &str, options: QueryOptions) -> QueryResult {
        let r = self.rt.block_on(
            self.exec
                .execute(&mut self.session, text, Vec::new(), options),
        );
        match r {
            Ok(resp) => resp.result,
            Err(e) => panic!("{text}: {e}"),
        }
    }

    fn run(&mut self, text: &str) -> QueryResult {
        self.run_with(text, QueryOptions::default())
    }

    /// Rows as (p, c, v) of a SELECT p, c, v, fetching every page.
    fn rows(&mut self, text: &str, page_size: Option<u32>) -> Vec<(i32, i32, Option<i32>)> {
        let mut out = Vec::new();
        let mut options = QueryOptions {
            page_size,
            ..QueryOptions::default()
        };
        loop {
            let QueryResult::Rows(rs) = self.run_with(text, options.clone()) else {
                panic!("{text}: not rows")
            };
            if let Some(n) = page_size {
                assert!(rs.rows.len() <= n as usize, "{text}: page too long");
            }
            for r in &rs.rows {
                let int = |v: &Value| match v {
                    Value::Int(i) => Some(*i),
                    _ => None,
                };
                out.push((
                    int(&r.values[0]).unwrap(),
                    int(&r.values[1]).unwrap(),
                    int(&r.values[2]),
                ));
            }
            match rs.paging_state {
                Some(s) => options.paging_state = Some(s),
                None => return out,
            }
        }
    }
}

fn apply(node: &mut Node, model: &mut Model, op: &Op) {
    match op {
        Op::Insert(p, c, v) => {
            node.run(&format!(
                "INSERT INTO t (p, c, v) VALUES ({p}, {c}, {})",
                lit(*v)
            ));
            model.insert((*p, *c), (*v, true));
        }
        Op::Update(p, c, v) => {
            node.run(&format!(
                "UPDATE t SET v = {} WHERE p = {p} AND c = {c}",
                lit(*v)
            ));
            model.entry((*p, *c)).or_insert((None, false)).0 = *v;
        }
        Op::DeleteRow(p, c) => {
            node.run(&format!("DELETE FROM t WHERE p = {p} AND c = {c}"));
            model.remove(&(*p, *c));
        }
        Op::DeleteRange(p, a, b) => {
            node.run(&format!(
                "DELETE FROM t WHERE p = {p} AND c >= {a} AND c < {b}"
            ));
            model.retain(|(mp, mc), _| !(*mp == *p && *mc >= *a && *mc < *b));
        }
        Op::DeletePartition(p) => {
            node.run(&format!("DELETE FROM t WHERE p = {p}"));
            model.retain(|(mp, _), _| *mp != *p);
        }
        Op::Flush => node.store.flush_all().unwrap(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn executor_matches_a_model(ops in proptest::collection::vec(op(), 1..30),
                                lo in 0..6i32, hi in 0..7i32, limit in 1..4u32, page in 1..4u32) {
        let mut node = Node::new();
        let mut model = Model::new();
        for op in &ops {
            apply(&mut node, &mut model, op);
            let rows = visible(&model);
            for p in 0..3 {
                // The partition, in clustering order (c DESC).
                let want: Vec<_> = rows.iter().rev()
                    .filter(|((mp, _), _)| *mp == p)
                    .map(|((mp, c), v)| (*mp, *c, *v)).collect();
                let got = node.rows(&format!("SELECT p, c, v FROM t WHERE p = {p}"), None);
                prop_assert_eq!(&got, &want, "partition {} after {:?}", p, op);
                // A slice, ascending, with a limit.
                let mut slice: Vec<_> = want.iter().filter(|(_, c, _)| *c >= lo && *c < hi).cloned().collect();
                slice.reverse();
                slice.truncate(limit as usize);
                let got = node.rows(&format!(
                    "SELECT p, c, v FROM t WHERE p = {p} AND c >= {lo} AND c < {hi} ORDER BY c ASC LIMIT {limit}"), Some(page));
                prop_assert_eq!(got, slice, "slice of {} after {:?}", p, op);
            }
            // The whole table, paged, in token order: compare as sets.
            let mut got = node.rows("SELECT p, c, v FROM t", Some(page));
            got.sort();
            let want: Vec<_> = rows.iter().map(|((p, c), v)| (*p, *c, *v)).collect();
            prop_assert_eq!(got, want, "scan after {:?}", op);
            // And a count.
            let QueryResult::Rows(rs) = node.run("SELECT count(*) FROM t") else { panic!() };
            prop_assert_eq!(&rs.rows[0].values[0], &Value::BigInt(rows.len() as i64));
        }
    }
}

/// Statements glued from fragments: whatever they say, the executor
/// answers with a result or a typed error, never a panic.
fn fragments() -> impl Strategy<Value = String> {
    let words = prop::sample::select(vec![
        "SELECT",
        "*",
        "FROM",
        "t",
        "WHERE",
        "p",
        "c",
        "v",
        "=",
        "<",
        ">=",
        "IN",
        "(",
        ")",
        ",",
        "1",
        "-1",
        "'x'",
        "null",
        "?",
        "AND",
        "ORDER BY",
        "DESC",
        "LIMIT",
        "0",
        "2",
        "GROUP BY",
        "count(*)",
        "max(v)",
        "DISTINCT",
        "ALLOW FILTERING",
        "WITH SIBLINGS",
        "INSERT INTO",
        "VALUES",
        "UPDATE",
        "SET",
        "DELETE",
        "USING TTL",
        "USING TIMESTAMP",
        "BEGIN BATCH",
        "APPLY BATCH",
        ";",
        "PER PARTITION LIMIT",
        "now()",
        "toTimestamp(now())",
        "2147483648",
        "99999999999999999999",
        "1.5",
        "0xff",
        "TRUNCATE",
        "DROP TABLE",
    ]);
    proptest::collection::vec(words, 1..16).prop_map(|w| w.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn no_statement_panics(texts in proptest::collection::vec(fragments(), 1..8), values in proptest::collection::vec(0..3i32, 0..3)) {
        let mut node = Node::new();
        node.run("INSERT INTO t (p, c, v) VALUES (1, 1, 1)");
        for text in &texts {
            let vals: Vec<Value> = values.iter().map(|v| match v { 0 => Value::Null, 1 => Value::Int(1), _ => Value::Text("x".into()) }).collect();
            let _ = node.rt.block_on(node.exec.execute(&mut node.session, text, vals, QueryOptions { page_size: Some(1), ..QueryOptions::default() }));
            let _ = node.rt.block_on(node.exec.prepare(&node.session, text));
        }
    }
}
