//! Model-based test of the query layer: random INSERT, UPDATE, DELETE (row,
//! range, partition) and flushes through the real executor and local
//! store, checked after every step against a `BTreeMap` of the table, with
//! reads by partition, by slice in both directions with limits, and by
//! paged scans. Aggregates and GROUP BY are compared with a direct
//! computation over the model, with the executor reading the store in
//! tiny batches and paging by tiny pages, so that partitions, groups and
//! pages straddle every boundary.

use cql_lite::Value;
use proptest::prelude::*;
use ringdb::model::Consistency;
use ringdb::model::{HybridClock, ManualClock};
use ringdb::query::api::{
    BoxFuture, DataStore, Mutation, QueryError, QueryExecutor, QueryOptions, QueryResult,
    ScannedPartition, SessionState, SliceRequest, StoredPartition, TableRef,
};
use ringdb::query::select::ReadBatch;
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

/// The local store, checking that the executor never asks for more than
/// its read batch: every read and scan names a row limit, and no limit is
/// above the batch (two rows at least: a plain page reads one row more
/// than it needs to know whether another page follows).
struct BoundedReads {
    inner: Arc<LocalStore>,
    batch: ReadBatch,
}

impl BoundedReads {
    fn check_rows(&self, limit: Option<usize>, what: &str) {
        let most = self.batch.rows.max(2);
        assert!(
            limit.is_some_and(|l| l <= most),
            "{what} asked for {limit:?} rows, more than the batch of {most}"
        );
    }
}

impl DataStore for BoundedReads {
    fn write<'a>(
        &'a self,
        table: &'a TableRef,
        partition_key: &'a [u8],
        mutations: Vec<Mutation>,
        consistency: Consistency,
    ) -> BoxFuture<'a, Result<(), QueryError>> {
        self.inner
            .write(table, partition_key, mutations, consistency)
    }

    fn read<'a>(
        &'a self,
        table: &'a TableRef,
        partition_key: &'a [u8],
        slice: SliceRequest,
        consistency: Consistency,
    ) -> BoxFuture<'a, Result<StoredPartition, QueryError>> {
        self.check_rows(slice.limit, "a read");
        self.inner.read(table, partition_key, slice, consistency)
    }

    fn scan<'a>(
        &'a self,
        table: &'a TableRef,
        after: Option<Vec<u8>>,
        max_partitions: usize,
        rows_per_partition: Option<usize>,
        consistency: Consistency,
    ) -> BoxFuture<'a, Result<Vec<ScannedPartition>, QueryError>> {
        self.check_rows(rows_per_partition, "a scan");
        assert!(
            max_partitions <= self.batch.partitions,
            "a scan asked for {max_partitions} partitions"
        );
        self.inner.scan(
            table,
            after,
            max_partitions,
            rows_per_partition,
            consistency,
        )
    }

    fn truncate<'a>(&'a self, table: &'a TableRef) -> BoxFuture<'a, Result<(), QueryError>> {
        self.inner.truncate(table)
    }
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
        let mut n = Node::with_config(ExecutorConfig::default());
        n.run("CREATE TABLE t (p int, c int, v int, PRIMARY KEY (p, c)) WITH CLUSTERING ORDER BY (c DESC)");
        n
    }

    /// A node with keyspace `ks` in use and no table.
    fn with_config(config: ExecutorConfig) -> Node {
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
        let bounded = Arc::new(BoundedReads {
            inner: store.clone(),
            batch: config.read_batch,
        });
        let exec = Executor::new(bounded, schema, hlc, config);
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

    /// Every row of a SELECT, fetching every page of `page_size` rows.
    fn values(&mut self, text: &str, page_size: Option<u32>) -> Vec<Vec<Value>> {
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
            out.extend(rs.rows.into_iter().map(|r| r.values));
            match rs.paging_state {
                Some(s) => options.paging_state = Some(s),
                None => return out,
            }
        }
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

/// The aggregates of a set of rows as the executor computes them:
/// count(*), count(v), sum(v), min(v), max(v), avg(v) (integer: truncated;
/// 0 for sum and avg of no values, null for min and max).
fn aggregates<'a>(vs: impl Iterator<Item = &'a Option<i32>>) -> Vec<Value> {
    let vs: Vec<Option<i32>> = vs.copied().collect();
    let present: Vec<i64> = vs.iter().flatten().map(|v| i64::from(*v)).collect();
    let sum: i64 = present.iter().sum();
    let n = present.len() as i64;
    vec![
        Value::BigInt(vs.len() as i64),
        Value::BigInt(n),
        Value::Int(sum as i32),
        present
            .iter()
            .min()
            .map_or(Value::Null, |v| Value::Int(*v as i32)),
        present
            .iter()
            .max()
            .map_or(Value::Null, |v| Value::Int(*v as i32)),
        Value::Int((sum / n.max(1)) as i32),
    ]
}

const AGGREGATES: &str = "count(*), count(v), sum(v), min(v), max(v), avg(v)";

/// Rows of `g (p, k, c, v)`, primary key `(p, k, c)`: inserted, deleted or
/// flushed to an SSTable (so reads merge memtable and tables).
#[derive(Debug, Clone)]
enum GroupOp {
    Insert(i32, i32, i32, Option<i32>),
    Delete(i32, i32, i32),
    Flush,
}

fn group_op() -> impl Strategy<Value = GroupOp> {
    prop_oneof![
        8 => (0..4i32, 0..3i32, 0..5i32, proptest::option::weighted(0.8, -1000..1000i32))
            .prop_map(|(p, k, c, v)| GroupOp::Insert(p, k, c, v)),
        2 => (0..4i32, 0..3i32, 0..5i32).prop_map(|(p, k, c)| GroupOp::Delete(p, k, c)),
        1 => Just(GroupOp::Flush),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// Aggregates over a whole table, a partition, a filter and an IN list
    /// with ORDER BY, and GROUP BY by partition and by clustering prefix,
    /// equal a direct computation over the model, whatever the read batch
    /// and page sizes.
    #[test]
    fn aggregates_and_groups_match_a_direct_computation(
        ops in proptest::collection::vec(group_op(), 1..60),
        rows in 1..4usize, partitions in 1..3usize, page in 1..4u32,
        threshold in -1000..1000i32,
    ) {
        let mut node = Node::with_config(ExecutorConfig {
            read_batch: ReadBatch { rows, partitions },
            ..ExecutorConfig::default()
        });
        node.run("CREATE TABLE g (p int, k int, c int, v int, PRIMARY KEY (p, k, c)) WITH CLUSTERING ORDER BY (k ASC, c DESC)");
        let mut model: BTreeMap<(i32, i32, i32), Option<i32>> = BTreeMap::new();
        for op in &ops {
            match op {
                GroupOp::Insert(p, k, c, v) => {
                    node.run(&format!("INSERT INTO g (p, k, c, v) VALUES ({p}, {k}, {c}, {})", lit(*v)));
                    model.insert((*p, *k, *c), *v);
                }
                GroupOp::Delete(p, k, c) => {
                    node.run(&format!("DELETE FROM g WHERE p = {p} AND k = {k} AND c = {c}"));
                    model.remove(&(*p, *k, *c));
                }
                GroupOp::Flush => node.store.flush_all().unwrap(),
            }
        }
        // The whole table, one row, whatever the page size.
        let got = node.values(&format!("SELECT {AGGREGATES} FROM g"), Some(page));
        prop_assert_eq!(got, vec![aggregates(model.values())], "whole table");
        // With a filter.
        let got = node.values(&format!("SELECT {AGGREGATES} FROM g WHERE v > {threshold} ALLOW FILTERING"), Some(page));
        let want = aggregates(model.values().filter(|v| v.is_some_and(|v| v > threshold)));
        prop_assert_eq!(got, vec![want], "filtered");
        // Each partition.
        for p in 0..4 {
            let got = node.values(&format!("SELECT {AGGREGATES} FROM g WHERE p = {p}"), Some(page));
            let want = aggregates(model.range((p, i32::MIN, i32::MIN)..=(p, i32::MAX, i32::MAX)).map(|(_, v)| v));
            prop_assert_eq!(got, vec![want], "partition {}", p);
        }
        // IN with ORDER BY: the partitions are merged.
        let got = node.values(&format!("SELECT {AGGREGATES} FROM g WHERE p IN (2, 0, 1) ORDER BY k DESC"), Some(page));
        let want = aggregates(model.iter().filter(|((p, _, _), _)| *p <= 2).map(|(_, v)| v));
        prop_assert_eq!(got, vec![want], "IN with ORDER BY");
        // Groups by partition, in token order: compare sorted.
        let mut got = node.values(&format!("SELECT p, {AGGREGATES} FROM g GROUP BY p"), Some(page));
        got.sort();
        let mut want = Vec::new();
        for p in 0..4 {
            let part: Vec<&Option<i32>> = model.range((p, i32::MIN, i32::MIN)..=(p, i32::MAX, i32::MAX)).map(|(_, v)| v).collect();
            if !part.is_empty() {
                let mut row = vec![Value::Int(p)];
                row.extend(aggregates(part.into_iter()));
                want.push(row);
            }
        }
        prop_assert_eq!(got, want, "GROUP BY p");
        // Groups by clustering prefix, over the scan and within each partition.
        let group_rows = |model: &BTreeMap<(i32, i32, i32), Option<i32>>, only: Option<i32>| {
            let mut groups: BTreeMap<(i32, i32), Vec<Option<i32>>> = BTreeMap::new();
            for ((p, k, _), v) in model {
                if only.is_none_or(|o| o == *p) {
                    groups.entry((*p, *k)).or_default().push(*v);
                }
            }
            groups.into_iter().map(|((p, k), vs)| {
                let mut row = vec![Value::Int(p), Value::Int(k)];
                row.extend(aggregates(vs.iter()));
                row
            }).collect::<Vec<_>>()
        };
        let mut got = node.values(&format!("SELECT p, k, {AGGREGATES} FROM g GROUP BY p, k"), Some(page));
        got.sort();
        prop_assert_eq!(got, group_rows(&model, None), "GROUP BY p, k");
        for p in 0..4 {
            let got = node.values(&format!("SELECT p, k, {AGGREGATES} FROM g WHERE p = {p} GROUP BY k"), Some(page));
            prop_assert_eq!(got, group_rows(&model, Some(p)), "partition {} GROUP BY k", p);
        }
    }
}
