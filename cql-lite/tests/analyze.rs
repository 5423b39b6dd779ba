//! Schema checks: unknown names, type mismatches, primary key and
//! clustering restrictions, ALLOW FILTERING.

use cql_lite::analyze::*;
use cql_lite::ast::*;
use cql_lite::{parse, parse_statement};
use proptest::prelude::*;

struct Schema {
    keyspaces: Vec<String>,
    tables: Vec<TableSchema>,
}

impl Catalog for Schema {
    fn has_keyspace(&self, keyspace: &str) -> bool {
        self.keyspaces.iter().any(|k| k == keyspace)
    }

    fn table(&self, keyspace: &str, table: &str) -> Option<&TableSchema> {
        self.tables
            .iter()
            .find(|t| t.keyspace == keyspace && t.name == table)
    }
}

fn schema() -> Schema {
    let script = "
        CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1};
        CREATE TABLE ks.t (k int, k2 text, c1 int, c2 timestamp, v text, n double, a ascii,
            PRIMARY KEY ((k, k2), c1, c2)) WITH CLUSTERING ORDER BY (c1 DESC);
        CREATE TABLE ks.s (k int PRIMARY KEY, v int, u uuid, tu timeuuid, b blob, d date);
    ";
    let mut s = Schema {
        keyspaces: vec![],
        tables: vec![],
    };
    for stmt in parse(script).unwrap() {
        match stmt {
            Statement::CreateKeyspace(ks) => s.keyspaces.push(ks.name.name),
            Statement::CreateTable(ct) => s.tables.push(TableSchema::from_create("ks", &ct)),
            _ => unreachable!(),
        }
    }
    s
}

fn check(src: &str) -> Result<(), SemanticError> {
    let stmt = parse_statement(src).unwrap_or_else(|e| panic!("{}", e.render(src)));
    check_statement(&stmt, Some("ks"), &schema())
}

fn select(src: &str) -> Result<SelectRestrictions, SemanticError> {
    let Statement::Select(s) = parse_statement(src).unwrap() else {
        panic!()
    };
    check_select(&s, Some("ks"), &schema())
}

#[track_caller]
fn fails(src: &str, kind: SemanticErrorKind, message: &str, token: &str) {
    match check(src) {
        Ok(()) => panic!("{src} passed"),
        Err(e) => {
            assert_eq!(e.kind, kind, "{src}: {}", e.message);
            assert!(
                e.message.contains(message),
                "{src}: {:?} lacks {message:?}",
                e.message
            );
            assert_eq!(e.token, token, "{src}");
            // The caret is under the token.
            let span = e.span.expect("position");
            assert_eq!(
                src.get(span.offset..span.offset + span.len)
                    .map(|t| t.trim_matches('"').to_lowercase()),
                Some(token.to_lowercase())
            );
        }
    }
}

#[test]
fn valid_statements_pass() {
    for src in [
        "USE ks",
        "CREATE TABLE ks.new (k int PRIMARY KEY)",
        "CREATE TABLE IF NOT EXISTS t (k int PRIMARY KEY)",
        "CREATE KEYSPACE IF NOT EXISTS ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
        "ALTER TABLE t ADD w int",
        "ALTER TABLE t DROP v",
        "DROP TABLE IF EXISTS nope",
        "TRUNCATE ks.t",
        "INSERT INTO t (k, k2, c1, c2, v, n) VALUES (1, 'a', 2, '2024-01-01 00:00:00Z', 'x', 3)",
        "INSERT INTO t (k, k2, c1, c2) VALUES (?, ?, ?, toTimestamp(now())) USING TTL 10",
        "INSERT INTO s (k, u, tu, b, d) VALUES (1, now(), now(), 0x00, '2024-02-29')",
        "UPDATE t SET v = 'y', n = NaN WHERE k = 1 AND k2 = 'a' AND c1 = 2 AND c2 = 0",
        "UPDATE t SET v = NULL WHERE k IN (1, 2) AND k2 = 'a' AND c1 IN ? AND c2 = 0",
        "DELETE FROM t WHERE k = 1 AND k2 = 'a'",
        "DELETE FROM t WHERE k = 1 AND k2 = 'a' AND c1 = 1 AND c2 > 0",
        "DELETE FROM t WHERE k = 1 AND k2 = 'a' AND c1 >= 1",
        "DELETE v FROM t WHERE k = 1 AND k2 = 'a' AND c1 = 1 AND c2 = 0",
        "BEGIN BATCH INSERT INTO s (k, v) VALUES (1, 2); DELETE FROM s WHERE k = 3; APPLY BATCH",
        "SELECT * FROM t",
        "SELECT * FROM t WHERE k = 1 AND k2 = 'a'",
        "SELECT k, COUNT(*), max(c1), sum(n), WRITETIME(v) AS w FROM t WHERE k = 1 AND k2 = 'a' AND c1 = 2 AND c2 > 5 AND c2 <= 10 GROUP BY k, k2, c1 ORDER BY c1 ASC PER PARTITION LIMIT 2 LIMIT 5 WITH SIBLINGS",
        "SELECT * FROM t WHERE k IN (1, 2) AND k2 = 'a' AND c1 IN (1, 2) ORDER BY c1 DESC, c2 ASC",
        "SELECT DISTINCT k, k2 FROM t",
        "SELECT * FROM t WHERE v = 'x' ALLOW FILTERING",
        "SELECT * FROM t WHERE k = 1 AND k2 = 'a' AND c2 = 0 ALLOW FILTERING",
    ] {
        if let Err(e) = check(src) {
            panic!("{}", e.render(src));
        }
    }
}

#[test]
fn unknown_names() {
    fails(
        "SELECT * FROM nope.t",
        SemanticErrorKind::UnknownKeyspace,
        "Keyspace nope does not exist",
        "nope",
    );
    fails(
        "SELECT * FROM ks.nope",
        SemanticErrorKind::UnknownTable,
        "unconfigured table nope",
        "nope",
    );
    fails(
        "SELECT x FROM t",
        SemanticErrorKind::UnknownColumn,
        "Undefined column name x",
        "x",
    );
    fails(
        "SELECT * FROM t WHERE k = 1 AND \"K2\" = 'a'",
        SemanticErrorKind::UnknownColumn,
        "Undefined column name \"K2\"",
        "K2",
    );
    fails(
        "INSERT INTO t (k, k2, c1, c2, zz) VALUES (1, 'a', 1, 1, 1)",
        SemanticErrorKind::UnknownColumn,
        "Undefined column name zz",
        "zz",
    );
    fails(
        "USE other",
        SemanticErrorKind::UnknownKeyspace,
        "Keyspace 'other' does not exist",
        "other",
    );
    fails(
        "CREATE TABLE t (k int PRIMARY KEY)",
        SemanticErrorKind::AlreadyExists,
        "Table ks.t already exists",
        "t",
    );
    fails(
        "ALTER TABLE t ADD v int",
        SemanticErrorKind::AlreadyExists,
        "conflicts with an existing column",
        "v",
    );
    fails(
        "ALTER TABLE t DROP c1",
        SemanticErrorKind::Invalid,
        "Cannot drop PRIMARY KEY part c1",
        "c1",
    );
    let stmt = parse_statement("SELECT * FROM t").unwrap();
    let e = check_statement(&stmt, None, &schema()).unwrap_err();
    assert_eq!(e.kind, SemanticErrorKind::NoKeyspace);
}

#[test]
fn type_mismatches() {
    fails(
        "INSERT INTO t (k, k2, c1, c2) VALUES ('one', 'a', 1, 1)",
        SemanticErrorKind::TypeMismatch,
        "Invalid STRING constant (one) for \"k\" of type int",
        "k",
    );
    fails(
        "INSERT INTO t (k, k2, c1, c2) VALUES (3000000000, 'a', 1, 1)",
        SemanticErrorKind::TypeMismatch,
        "out of range",
        "k",
    );
    fails(
        "UPDATE t SET a = 'é' WHERE k = 1 AND k2 = 'a' AND c1 = 1 AND c2 = 1",
        SemanticErrorKind::TypeMismatch,
        "invalid ASCII character",
        "a",
    );
    fails(
        "SELECT * FROM t WHERE k = 1 AND k2 = 'a' AND c2 = '2024-13-01'",
        SemanticErrorKind::TypeMismatch,
        "month 13",
        "c2",
    );
    fails(
        "INSERT INTO s (k, v) VALUES (1, now())",
        SemanticErrorKind::TypeMismatch,
        "cannot assign result of function now (type timeuuid) to v (type int)",
        "v",
    );
    fails(
        "INSERT INTO s (k, b) VALUES (1, 'abc')",
        SemanticErrorKind::TypeMismatch,
        "Invalid STRING constant (abc) for \"b\" of type blob",
        "b",
    );
    fails(
        "SELECT sum(v) FROM t",
        SemanticErrorKind::TypeMismatch,
        "Invalid call to function sum",
        "v",
    );
}

#[test]
fn primary_key_rules_for_writes() {
    fails(
        "INSERT INTO t (k, c1, c2) VALUES (1, 1, 1)",
        SemanticErrorKind::MissingPrimaryKey,
        "Some partition key parts are missing: k2",
        "t",
    );
    fails(
        "INSERT INTO t (k, k2, c1) VALUES (1, 'a', 1)",
        SemanticErrorKind::MissingPrimaryKey,
        "Some clustering keys are missing: c2",
        "t",
    );
    fails(
        "INSERT INTO t (k, k2, c1, c2) VALUES (NULL, 'a', 1, 1)",
        SemanticErrorKind::Invalid,
        "Invalid null value in condition for column k",
        "k",
    );
    fails(
        "UPDATE t SET v = 'x' WHERE k = 1 AND k2 = 'a' AND c1 = 1",
        SemanticErrorKind::MissingPrimaryKey,
        "Some clustering keys are missing: c2",
        "t",
    );
    fails(
        "UPDATE t SET c1 = 1 WHERE k = 1 AND k2 = 'a' AND c1 = 1 AND c2 = 1",
        SemanticErrorKind::Invalid,
        "PRIMARY KEY part c1 found in SET part",
        "c1",
    );
    fails(
        "UPDATE t SET v = 'x' WHERE k = 1 AND k2 = 'a' AND c1 = 1 AND c2 > 1",
        SemanticErrorKind::InvalidRestriction,
        "Invalid operator for PRIMARY KEY part c2",
        "c2",
    );
    fails(
        "UPDATE t SET v = 'x' WHERE k = 1 AND k2 = 'a' AND c1 = 1 AND c2 = 1 AND n = 2",
        SemanticErrorKind::InvalidRestriction,
        "Non PRIMARY KEY columns found in where clause: n",
        "n",
    );
    fails(
        "DELETE FROM t WHERE k = 1",
        SemanticErrorKind::MissingPrimaryKey,
        "Some partition key parts are missing: k2",
        "t",
    );
    fails(
        "DELETE FROM t WHERE k = 1 AND k2 = 'a' AND c2 = 1",
        SemanticErrorKind::InvalidRestriction,
        "PRIMARY KEY column \"c2\" cannot be restricted as preceding column \"c1\" is not restricted",
        "c2",
    );
    fails(
        "DELETE FROM t WHERE k = 1 AND k2 = 'a' AND c1 > 1 AND c2 = 1",
        SemanticErrorKind::InvalidRestriction,
        "Clustering column \"c2\" cannot be restricted (preceding column \"c1\" is restricted by a non-EQ relation)",
        "c2",
    );
    fails(
        "DELETE k FROM t WHERE k = 1 AND k2 = 'a' AND c1 = 1 AND c2 = 1",
        SemanticErrorKind::Invalid,
        "Invalid identifier k for deletion",
        "k",
    );
    fails(
        "DELETE v FROM t WHERE k = 1 AND k2 = 'a' AND c1 = 1 AND c2 > 1",
        SemanticErrorKind::InvalidRestriction,
        "Range deletions are not supported for specific columns",
        "t",
    );
    fails(
        "BEGIN BATCH INSERT INTO s (k, v) VALUES (1, 2); DELETE FROM s WHERE v = 3; APPLY BATCH",
        SemanticErrorKind::InvalidRestriction,
        "Non PRIMARY KEY columns found in where clause: v",
        "v",
    );
}

#[test]
fn select_restrictions() {
    fails(
        "SELECT * FROM t WHERE v = 'x'",
        SemanticErrorKind::FilteringRequired,
        "Cannot execute this query as it might involve data filtering and thus may have unpredictable performance. If you want to execute this query despite the performance unpredictability, use ALLOW FILTERING",
        "v",
    );
    fails(
        "SELECT * FROM t WHERE k = 1",
        SemanticErrorKind::FilteringRequired,
        "use ALLOW FILTERING",
        "k",
    );
    fails(
        "SELECT * FROM t WHERE c1 = 1",
        SemanticErrorKind::FilteringRequired,
        "use ALLOW FILTERING",
        "c1",
    );
    fails(
        "SELECT * FROM t WHERE k = 1 AND k2 = 'a' AND c2 = 1",
        SemanticErrorKind::InvalidRestriction,
        "PRIMARY KEY column \"c2\" cannot be restricted as preceding column \"c1\" is not restricted",
        "c2",
    );
    fails(
        "SELECT * FROM t WHERE k = 1 AND k2 = 'a' AND c1 IN (1, 2) AND c2 = 1",
        SemanticErrorKind::InvalidRestriction,
        "Clustering column \"c2\" cannot be restricted (preceding column \"c1\" is restricted by a non-EQ relation)",
        "c2",
    );
    fails(
        "SELECT * FROM t WHERE k = 1 AND k = 2 AND k2 = 'a'",
        SemanticErrorKind::InvalidRestriction,
        "k cannot be restricted by more than one relation if it includes an Equal",
        "k",
    );
    fails(
        "SELECT * FROM t WHERE k = 1 AND k2 = 'a' AND c1 > 1 AND c1 >= 2",
        SemanticErrorKind::InvalidRestriction,
        "More than one restriction was found for the start bound on c1",
        "c1",
    );
    fails(
        "SELECT * FROM t WHERE k = 1 AND k2 = 'a' ORDER BY c2 ASC",
        SemanticErrorKind::InvalidRestriction,
        "following their declared order",
        "c2",
    );
    fails(
        "SELECT * FROM t WHERE k = 1 AND k2 = 'a' ORDER BY c1 ASC, c2 ASC",
        SemanticErrorKind::InvalidRestriction,
        "Unsupported order by relation",
        "c2",
    );
    fails(
        "SELECT * FROM t ORDER BY c1 DESC",
        SemanticErrorKind::InvalidRestriction,
        "ORDER BY is only supported when the partition key is restricted by an EQ or an IN.",
        "c1",
    );
    fails(
        "SELECT * FROM t WHERE k = 1 AND k2 = 'a' ORDER BY v DESC",
        SemanticErrorKind::InvalidRestriction,
        "only supported on the clustered columns",
        "v",
    );
    fails(
        "SELECT * FROM t GROUP BY k2",
        SemanticErrorKind::InvalidRestriction,
        "Group by currently only support groups of columns following their declared order",
        "k2",
    );
    fails(
        "SELECT DISTINCT k FROM t",
        SemanticErrorKind::Invalid,
        "must request all the partition key columns (missing k2)",
        "t",
    );
    fails(
        "SELECT DISTINCT k, k2, c1 FROM t",
        SemanticErrorKind::Invalid,
        "must only request partition key columns",
        "c1",
    );
    fails(
        "SELECT TTL(k) FROM t",
        SemanticErrorKind::Invalid,
        "Cannot use selection function ttl on PRIMARY KEY part k",
        "k",
    );
    fails(
        "SELECT * FROM t WHERE k = NULL AND k2 = 'a'",
        SemanticErrorKind::Invalid,
        "Invalid null value in condition for column k",
        "k",
    );

    let r = select("SELECT * FROM t WHERE k = 1 AND k2 = 'a' AND c1 = 1 AND c2 > 3").unwrap();
    assert!(r.partition_key_restricted);
    assert_eq!(r.clustering_prefix, 2);
    assert_eq!(r.key_relations, vec![0, 1, 2, 3]);
    assert!(r.filter_relations.is_empty());

    let r =
        select("SELECT * FROM t WHERE k = 1 AND k2 = 'a' AND c2 = 3 AND v = 'x' ALLOW FILTERING")
            .unwrap();
    assert_eq!(r.clustering_prefix, 0);
    assert_eq!(r.key_relations, vec![0, 1]);
    assert_eq!(r.filter_relations, vec![2, 3]);

    let r = select("SELECT * FROM t WHERE k = 1 AND c1 = 3 ALLOW FILTERING").unwrap();
    assert!(!r.partition_key_restricted);
    assert_eq!(r.filter_relations, vec![0, 1]);

    let r = select("SELECT * FROM t").unwrap();
    assert_eq!(r, SelectRestrictions::default());
}

#[test]
fn group_by_rules() {
    // t's primary key is ((k, k2), c1, c2).
    fails(
        "SELECT k, count(*) FROM t GROUP BY k",
        SemanticErrorKind::InvalidRestriction,
        "Group by is not supported on only a part of the partition key",
        "k",
    );
    fails(
        "SELECT k, count(*) FROM t WHERE k2 = 'a' GROUP BY k ALLOW FILTERING",
        SemanticErrorKind::InvalidRestriction,
        "Group by is not supported on only a part of the partition key",
        "k",
    );
    fails(
        "SELECT count(*) FROM t WHERE k = 1 AND k2 = 'a' GROUP BY c2",
        SemanticErrorKind::InvalidRestriction,
        "following their declared order",
        "c2",
    );
    fails(
        "SELECT count(*) FROM t GROUP BY k, k2, k",
        SemanticErrorKind::InvalidRestriction,
        "following their declared order",
        "k",
    );
    fails(
        "SELECT DISTINCT k, k2, count(*) FROM t GROUP BY k, k2, c1",
        SemanticErrorKind::InvalidRestriction,
        "Grouping on clustering columns is not allowed for SELECT DISTINCT queries",
        "c1",
    );
    let prefix = |src: &str| select(src).unwrap().group_prefix;
    assert_eq!(prefix("SELECT count(*) FROM t"), 0);
    assert_eq!(prefix("SELECT count(*) FROM t GROUP BY k, k2"), 2);
    assert_eq!(prefix("SELECT count(*) FROM t GROUP BY k, k2, c1, c2"), 4);
    // Columns restricted by = may be left out of GROUP BY, as in Cassandra.
    assert_eq!(
        prefix("SELECT count(*) FROM t WHERE k = 1 AND k2 = 'a' GROUP BY c1"),
        3
    );
    assert_eq!(
        prefix("SELECT count(*) FROM t WHERE k = 1 AND k2 = 'a' AND c1 = 2 GROUP BY c2"),
        4
    );
    assert_eq!(
        prefix("SELECT count(*) FROM t WHERE k = 1 GROUP BY k2 ALLOW FILTERING"),
        2
    );
    assert_eq!(
        prefix("SELECT DISTINCT k, k2, count(*) FROM t GROUP BY k, k2"),
        2
    );
}

#[test]
fn rendering_points_at_the_identifier() {
    let src = "SELECT *\nFROM ks.t\nWHERE k = 1 AND k2 = 'a' AND c2 = 1";
    let e = check(src).unwrap_err();
    assert_eq!(
        e.render(src),
        "line 3, column 30: PRIMARY KEY column \"c2\" cannot be restricted as preceding column \"c1\" is not restricted\nWHERE k = 1 AND k2 = 'a' AND c2 = 1\n                             ^^"
    );
    assert!(e.to_string().starts_with("line 3:30 "));
}

fn column() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["k", "k2", "c1", "c2", "v", "n", "a", "zz"])
}

fn rel() -> impl Strategy<Value = String> {
    (
        column(),
        prop::sample::select(vec!["=", "<", "<=", ">", ">=", "IN"]),
        prop::sample::select(vec!["1", "'a'", "?", "NULL", "2.5", "now()"]),
    )
        .prop_map(|(c, op, v)| {
            if op == "IN" {
                format!("{c} IN ({v}, {v})")
            } else {
                format!("{c} {op} {v}")
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any combination of restrictions is either accepted (and then, without
    /// ALLOW FILTERING, has no filters) or refused with a positioned error.
    #[test]
    fn restrictions_never_panic(
        rels in prop::collection::vec(rel(), 0..5),
        order in prop::option::of((column(), any::<bool>())),
        filtering in any::<bool>(),
    ) {
        let mut src = String::from("SELECT * FROM t");
        if !rels.is_empty() {
            src.push_str(" WHERE ");
            src.push_str(&rels.join(" AND "));
        }
        if let Some((c, desc)) = order {
            src.push_str(&format!(" ORDER BY {c} {}", if desc { "DESC" } else { "ASC" }));
        }
        if filtering {
            src.push_str(" ALLOW FILTERING");
        }
        let Statement::Select(s) = parse_statement(&src).unwrap() else { unreachable!() };
        match check_select(&s, Some("ks"), &schema()) {
            Ok(r) => {
                if !filtering {
                    prop_assert!(r.filter_relations.is_empty());
                }
                let mut all: Vec<usize> = r.key_relations.iter().chain(&r.filter_relations).copied().collect();
                all.sort_unstable();
                prop_assert_eq!(all, (0..s.where_clause.len()).collect::<Vec<_>>());
            }
            Err(e) => {
                prop_assert!(e.span.is_some(), "{}", e.message);
                let _ = e.render(&src);
            }
        }
    }
}
