//! Each statement form parses to the expected tree, prints back to canonical
//! text, and errors carry the right position, message and caret.

use cql_lite::ast::*;
use cql_lite::{parse, parse_statement, DataType, ErrorKind, ParseError};

fn ok(src: &str) -> Statement {
    let stmt = parse_statement(src).unwrap_or_else(|e| panic!("{}", e.render(src)));
    let printed = stmt.to_string();
    let again = parse_statement(&printed).unwrap_or_else(|e| panic!("{}", e.render(&printed)));
    assert_eq!(stmt, again, "reprint of {src:?} is {printed:?}");
    stmt
}

fn canon(src: &str) -> String {
    ok(src).to_string()
}

fn fail(src: &str) -> ParseError {
    match parse_statement(src) {
        Ok(s) => panic!("{src:?} parsed as {s:?}"),
        Err(e) => e,
    }
}

fn id(s: &str) -> Ident {
    Ident::new(s)
}

fn int(i: i128) -> Term {
    Term::Literal(Literal::Integer(i))
}

#[test]
fn create_keyspace() {
    let s = ok("create keyspace IF NOT EXISTS Demo with REPLICATION = {'class': 'SimpleStrategy', 'replication_factor': '2'}");
    assert_eq!(
        s,
        Statement::CreateKeyspace(CreateKeyspace {
            if_not_exists: true,
            name: id("demo"),
            replication: Replication::Simple {
                replication_factor: 2
            },
            durable_writes: None,
            sloppy_quorum: None,
        })
    );
    assert_eq!(
        canon("CREATE SCHEMA k WITH replication = {'class': 'org.apache.cassandra.locator.NetworkTopologyStrategy', 'dc1': 3, 'DC2': 1} AND durable_writes = false"),
        "CREATE KEYSPACE k WITH replication = {'class': 'NetworkTopologyStrategy', 'dc1': 3, 'DC2': 1} AND durable_writes = false"
    );
    let Statement::CreateKeyspace(ks) = ok(
        "CREATE KEYSPACE k WITH SLOPPY_QUORUM = false AND replication = {'class': 'SimpleStrategy', 'replication_factor': 3}",
    ) else {
        panic!("not a CREATE KEYSPACE")
    };
    assert_eq!((ks.durable_writes, ks.sloppy_quorum), (None, Some(false)));
    // Options print in a fixed order, whatever order they were written in.
    assert_eq!(
        canon("CREATE KEYSPACE k WITH sloppy_quorum = 'TRUE' AND durable_writes = false AND replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"),
        "CREATE KEYSPACE k WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1} AND durable_writes = false AND sloppy_quorum = true"
    );
}

#[test]
fn keyspace_option_errors() {
    let cases = [
        ("CREATE KEYSPACE k WITH durable_writes = true", "Missing mandatory option 'replication'"),
        ("CREATE KEYSPACE k WITH replication = {'replication_factor': 1}", "Missing mandatory replication strategy class"),
        ("CREATE KEYSPACE k WITH replication = {'class': 'SimpleStrategy'}", "SimpleStrategy requires a replication_factor strategy option."),
        ("CREATE KEYSPACE k WITH replication = {'class': 'SimpleStrategy', 'replication_factor': -1}", "Replication factor must be non-negative; found -1"),
        ("CREATE KEYSPACE k WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 'x'}", "Replication factor must be numeric"),
        ("CREATE KEYSPACE k WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1, 'dc1': 2}", "Unrecognized strategy option {dc1} passed to SimpleStrategy for keyspace k"),
        ("CREATE KEYSPACE k WITH replication = {'class': 'FooStrategy'}", "Unable to find replication strategy class 'FooStrategy'"),
        ("CREATE KEYSPACE k WITH replication = {'class': 'NetworkTopologyStrategy'}", "at least one datacenter"),
        ("CREATE KEYSPACE k WITH replication = 3", "Invalid value for property 'replication'"),
        ("CREATE KEYSPACE k WITH foo = 3", "Unknown property 'foo'"),
        ("CREATE KEYSPACE k WITH durable_writes = true AND durable_writes = false", "Multiple definition for property durable_writes"),
        ("CREATE KEYSPACE k WITH sloppy_quorum = false AND sloppy_quorum = false", "Multiple definition for property sloppy_quorum"),
        ("CREATE KEYSPACE k WITH sloppy_quorum = true", "Missing mandatory option 'replication'"),
        ("CREATE KEYSPACE k WITH replication = {'class': 'SimpleStrategy', 'class': 'SimpleStrategy'}", "Multiple definition for key 'class'"),
    ];
    for (src, msg) in cases {
        let e = fail(src);
        assert!(e.message.contains(msg), "{src}: got {:?}", e.message);
    }
    let e = fail("CREATE KEYSPACE k WITH foo = 3");
    assert_eq!((e.span.column, e.token.as_str()), (24, "foo"));
    // Bad replication settings are refused at the offending key or value;
    // what is missing, at the map's brace.
    for (src, token) in [
        ("CREATE KEYSPACE k WITH replication = {'class': 'FooStrategy'}", "'FooStrategy'"),
        ("CREATE KEYSPACE k WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 'x'}", "'x'"),
        ("CREATE KEYSPACE k WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1, 'dc1': 2}", "'dc1'"),
        ("CREATE KEYSPACE k WITH replication = {'class': 'NetworkTopologyStrategy', 'dc1': 99999999999}", "99999999999"),
        ("CREATE KEYSPACE k WITH replication = {'class': 'NetworkTopologyStrategy', 'replication_factor': 3}", "'replication_factor'"),
        ("CREATE KEYSPACE k WITH replication = {'class': 'SimpleStrategy'}", "{"),
        ("CREATE KEYSPACE k WITH replication = {'class': 3}", "3"),
    ] {
        let e = fail(src);
        assert_eq!(e.token, token, "{src}: {}", e.render(src));
        let at = src.find(token).expect("token in source") + 1;
        assert_eq!(e.span.column as usize, at, "{src}");
    }
    // A non-boolean is refused at its own token, for either property.
    for (src, prop, column, token) in [
        ("CREATE KEYSPACE k WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1} AND sloppy_quorum = 1", "sloppy_quorum", 111, "1"),
        ("ALTER KEYSPACE k WITH sloppy_quorum = 'maybe'", "sloppy_quorum", 39, "'maybe'"),
        ("ALTER KEYSPACE k WITH sloppy_quorum = {}", "sloppy_quorum", 39, "{"),
        ("ALTER KEYSPACE k WITH durable_writes = 0", "durable_writes", 40, "0"),
    ] {
        let e = fail(src);
        assert_eq!(
            e.message,
            format!("Invalid boolean value for property '{prop}'"),
            "{src}"
        );
        assert_eq!((e.span.column, e.token.as_str()), (column, token), "{src}");
        let caret = format!("\n{}{}", " ".repeat(column as usize - 1), "^".repeat(token.len()));
        assert!(e.render(src).ends_with(&caret), "{src}");
    }
}

#[test]
fn alter_and_drop_keyspace() {
    assert_eq!(
        ok("ALTER KEYSPACE IF EXISTS k WITH durable_writes = 'true'"),
        Statement::AlterKeyspace(AlterKeyspace {
            if_exists: true,
            name: id("k"),
            replication: None,
            durable_writes: Some(true),
            sloppy_quorum: None,
        })
    );
    assert_eq!(
        ok("ALTER KEYSPACE k WITH sloppy_quorum = false"),
        Statement::AlterKeyspace(AlterKeyspace {
            if_exists: false,
            name: id("k"),
            replication: None,
            durable_writes: None,
            sloppy_quorum: Some(false),
        })
    );
    assert_eq!(
        canon("alter keyspace k with sloppy_quorum = 'false' and durable_writes = true"),
        "ALTER KEYSPACE k WITH durable_writes = true AND sloppy_quorum = false"
    );
    assert_eq!(
        canon("drop keyspace if exists k"),
        "DROP KEYSPACE IF EXISTS k"
    );
    assert_eq!(canon("DROP SCHEMA k"), "DROP KEYSPACE k");
    assert_eq!(canon("use \"MyKs\""), "USE \"MyKs\"");
    assert_eq!(ok("USE MyKs"), Statement::Use(id("myks")));
}

#[test]
fn create_table_forms() {
    let s = ok("CREATE TABLE IF NOT EXISTS ks.t (k int PRIMARY KEY, v text, \"Big\" blob,)");
    let Statement::CreateTable(ct) = s else {
        panic!()
    };
    assert!(ct.if_not_exists);
    assert_eq!(ct.name, QualifiedName::qualified("ks", "t"));
    assert_eq!(ct.primary_key.partition, vec![id("k")]);
    assert_eq!(ct.columns[2].name, id("Big"));
    assert_eq!(ct.columns[2].data_type, DataType::Blob);
    assert_eq!(ct.column_type("v"), Some(DataType::Text));

    assert_eq!(
        canon("create columnfamily t (a varchar, b bigint, c timestamp, d timeuuid, primary key ((a, b), c, d)) with clustering order by (c desc) and default_time_to_live = 3600 and compaction = {'class': 'SizeTieredCompactionStrategy', 'min_threshold': 4} and comment = 'it''s' and gc_grace_seconds = 0"),
        "CREATE TABLE t (a text, b bigint, c timestamp, d timeuuid, PRIMARY KEY ((a, b), c, d)) WITH CLUSTERING ORDER BY (c DESC) AND default_time_to_live = 3600 AND gc_grace_seconds = 0 AND compaction = {'class': 'SizeTieredCompactionStrategy', 'min_threshold': 4} AND comment = 'it''s'"
    );
    // Every type name.
    for t in DataType::ALL {
        let src = format!("CREATE TABLE t (k {} PRIMARY KEY)", t.name().to_uppercase());
        let Statement::CreateTable(ct) = ok(&src) else {
            panic!()
        };
        assert_eq!(ct.columns[0].data_type, t);
    }
}

#[test]
fn create_table_errors() {
    let cases = [
        ("CREATE TABLE t (k int, v int)", "No PRIMARY KEY specified for table 't'", 16),
        ("CREATE TABLE t (k int PRIMARY KEY, v int, PRIMARY KEY (v))", "Multiple PRIMARY KEYs specified", 43),
        ("CREATE TABLE t (k int, PRIMARY KEY (x))", "Unknown definition x referenced in PRIMARY KEY", 37),
        ("CREATE TABLE t (k int, k text, PRIMARY KEY (k))", "Multiple definition of identifier k", 24),
        ("CREATE TABLE t (k int, PRIMARY KEY (k, k))", "Duplicate column k in PRIMARY KEY", 40),
        ("CREATE TABLE t (k int PRIMARY KEY, v strng)", "Unknown type strng", 38),
        ("CREATE TABLE t (k int PRIMARY KEY, v list<int>)", "collection and tuple types are not supported by ringdb", 38),
        ("CREATE TABLE t (k int PRIMARY KEY, v counter)", "the type counter is not supported", 38),
        ("CREATE TABLE t (k int, c int, v int, PRIMARY KEY (k, c)) WITH CLUSTERING ORDER BY (v ASC)", "Only clustering key columns can be defined in CLUSTERING ORDER directive", 84),
        ("CREATE TABLE t (k int, c int, d int, PRIMARY KEY (k, c, d)) WITH CLUSTERING ORDER BY (d ASC, c ASC)", "(c must appear before d)", 87),
        ("CREATE TABLE t (k int, c int, PRIMARY KEY (k, c)) WITH CLUSTERING ORDER BY (c ASC, c DESC)", "Multiple definition of c in CLUSTERING ORDER", 84),
        ("CREATE TABLE t (k int PRIMARY KEY) WITH default_time_to_live = -1", "default_time_to_live must be greater than or equal to 0 (got -1)", 64),
        ("CREATE TABLE t (k int PRIMARY KEY) WITH default_time_to_live = 630720001", "default_time_to_live must be less than or equal to 630720000", 64),
        ("CREATE TABLE t (k int PRIMARY KEY) WITH compaction = {'min_threshold': 2}", "Missing sub-option 'class' for the 'compaction' option.", 54),
        ("CREATE TABLE t (k int PRIMARY KEY) WITH compaction = {'class': 'LeveledCompactionStrategy'}", "is not supported by ringdb", 64),
        ("CREATE TABLE t (k int PRIMARY KEY) WITH compaction = {'class': 'Nope'}", "Unable to find compaction strategy class 'Nope'", 64),
        ("CREATE TABLE t (k int PRIMARY KEY) WITH compaction = {'class': 'TimeWindowCompactionStrategy', 3: 'x'}", "option keys are strings", 96),
        ("CREATE TABLE t (k int PRIMARY KEY) WITH caching = 'x'", "Unknown property 'caching'", 41),
        ("CREATE TABLE t (k int PRIMARY KEY) WITH COMPACT STORAGE", "COMPACT STORAGE is not supported", 41),
        ("CREATE INDEX ON t (v)", "CREATE INDEX is not supported by ringdb", 8),
    ];
    for (src, msg, col) in cases {
        let e = fail(src);
        assert!(e.message.contains(msg), "{src}: got {:?}", e.message);
        assert_eq!(e.span.column, col, "{src}: {}", e.render(src));
    }
}

#[test]
fn alter_drop_truncate_table() {
    assert_eq!(
        ok("ALTER TABLE ks.t ADD v int"),
        Statement::AlterTable(AlterTable {
            name: QualifiedName::qualified("ks", "t"),
            op: AlterTableOp::Add(vec![ColumnDef {
                name: id("v"),
                data_type: DataType::Int
            }]),
        })
    );
    assert_eq!(
        canon("alter table t add (a int, b text)"),
        "ALTER TABLE t ADD (a int, b text)"
    );
    assert_eq!(
        canon("alter table t drop (a, b)"),
        "ALTER TABLE t DROP (a, b)"
    );
    assert_eq!(canon("alter table t drop a"), "ALTER TABLE t DROP a");
    assert_eq!(
        canon("alter table t with default_time_to_live = 10"),
        "ALTER TABLE t WITH default_time_to_live = 10"
    );
    assert!(fail("ALTER TABLE t WITH CLUSTERING ORDER BY (c DESC)")
        .message
        .contains("cannot be changed"));
    assert!(
        fail("ALTER TABLE t WITH comment = 'x' AND CLUSTERING ORDER BY (c DESC)")
            .message
            .contains("cannot be changed")
    );
    assert!(fail("ALTER TABLE t ADD (a int, a text)")
        .message
        .contains("Multiple definition of identifier a"));
    assert_eq!(
        canon("drop table if exists ks.t"),
        "DROP TABLE IF EXISTS ks.t"
    );
    assert_eq!(canon("DROP COLUMNFAMILY t"), "DROP TABLE t");
    assert_eq!(canon("truncate table ks.t"), "TRUNCATE ks.t");
    assert_eq!(canon("TRUNCATE t"), "TRUNCATE t");
}

#[test]
fn insert_forms() {
    let s = ok("INSERT INTO ks.t (k, c, v) VALUES (1, 'x''y', 2.5) USING TIMESTAMP 10 AND TTL 60");
    let Statement::Insert(ins) = &s else { panic!() };
    assert_eq!(ins.columns, vec![id("k"), id("c"), id("v")]);
    assert_eq!(
        ins.values,
        vec![
            int(1),
            Term::Literal(Literal::String("x'y".into())),
            Term::Literal(Literal::Float(2.5))
        ]
    );
    assert_eq!(ins.using.ttl(), Some(&int(60)));
    assert_eq!(ins.using.timestamp(), Some(&int(10)));
    assert_eq!(
        s.to_string(),
        "INSERT INTO ks.t (k, c, v) VALUES (1, 'x''y', 2.5) USING TIMESTAMP 10 AND TTL 60"
    );
    assert_eq!(
        canon("insert into t (a, b, c, d, e, f, g) values (true, NULL, 0xCAFE, -NaN, Infinity, 123e4567-e89b-12d3-a456-426614174000, now())"),
        "INSERT INTO t (a, b, c, d, e, f, g) VALUES (true, NULL, 0xcafe, NaN, Infinity, 123e4567-e89b-12d3-a456-426614174000, now())"
    );
    assert_eq!(
        canon("INSERT INTO t (k, ts) VALUES (?, toTimestamp(now())) USING TTL :ttl"),
        "INSERT INTO t (k, ts) VALUES (?, toTimestamp(now())) USING TTL :ttl"
    );
}

#[test]
fn insert_errors() {
    let src = "INSERT INTO t (k) VALUES (1) IF NOT EXISTS";
    let e = fail(src);
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert_eq!(
        e.message,
        "lightweight transactions (IF NOT EXISTS) are not supported by ringdb"
    );
    assert_eq!(
        (e.span.line, e.span.column, e.token.as_str()),
        (1, 30, "IF")
    );
    assert_eq!(
        e.render(src),
        "line 1, column 30: lightweight transactions (IF NOT EXISTS) are not supported by ringdb\n\
         INSERT INTO t (k) VALUES (1) IF NOT EXISTS\n\
         \x20                            ^^"
    );
    let e = fail("INSERT INTO t (k) VALUES (1) USING TTL 5 IF NOT EXISTS");
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert!(fail("INSERT INTO t (k, v) VALUES (1)")
        .message
        .contains("Unmatched column names/values"));
    assert!(fail("INSERT INTO t (k, k) VALUES (1, 2)")
        .message
        .contains("duplicates"));
    assert!(fail("INSERT INTO t (k) VALUES (1) USING TTL -1")
        .message
        .contains("A TTL must be greater or equal to 0, but was -1"));
    assert!(fail("INSERT INTO t (k) VALUES (1) USING TTL 630720001")
        .message
        .contains("ttl is too large"));
    assert!(fail("INSERT INTO t (k) VALUES (1) USING TTL 1 AND TTL 2")
        .message
        .contains("TTL is given more than once"));
    assert!(fail("INSERT INTO t JSON '{}'")
        .message
        .contains("INSERT JSON is not supported"));
    let e = fail("INSERT INTO t (k) VALUES (foo(1))");
    assert_eq!(e.message, "Unknown function 'foo'");
    let e = fail("INSERT INTO t (k) VALUES (toTimestamp())");
    assert!(
        e.message.contains("1 required but 0 provided"),
        "{}",
        e.message
    );
}

#[test]
fn update_forms() {
    let s = ok("UPDATE t USING TTL 5 SET v = 1, w = :w WHERE k = ? AND c = 2");
    let Statement::Update(u) = &s else { panic!() };
    assert_eq!(u.assignments.len(), 2);
    assert_eq!(u.where_clause.len(), 2);
    assert_eq!(
        s.bind_markers(),
        vec![Some("w".to_string()), None],
        "markers in text order"
    );
    assert_eq!(
        s.to_string(),
        "UPDATE t USING TTL 5 SET v = 1, w = :w WHERE k = ? AND c = 2"
    );
    let e = fail("UPDATE t SET v = 1 WHERE k = 1 IF v = 2");
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert_eq!(e.span.column, 32);
    assert!(fail("UPDATE t SET v = v + 1 WHERE k = 1")
        .message
        .contains("no viable alternative at input 'v'"));
    assert!(fail("UPDATE t SET v = 1, v = 2 WHERE k = 1")
        .message
        .contains("Multiple assignments to column v"));
}

#[test]
fn delete_forms() {
    assert_eq!(
        ok("DELETE FROM t WHERE k = 1 AND c >= 2 AND c < 5"),
        Statement::Delete(Delete {
            columns: vec![],
            table: QualifiedName::new("t"),
            timestamp: None,
            where_clause: vec![
                Relation::Compare {
                    column: id("k"),
                    op: Operator::Eq,
                    value: int(1)
                },
                Relation::Compare {
                    column: id("c"),
                    op: Operator::Ge,
                    value: int(2)
                },
                Relation::Compare {
                    column: id("c"),
                    op: Operator::Lt,
                    value: int(5)
                },
            ],
        })
    );
    assert_eq!(
        canon("delete a, b from ks.t using timestamp 99 where k in (1, 2)"),
        "DELETE a, b FROM ks.t USING TIMESTAMP 99 WHERE k IN (1, 2)"
    );
    assert!(fail("DELETE FROM t USING TTL 5 WHERE k = 1")
        .message
        .contains("mismatched input 'TTL' expecting TIMESTAMP"));
    assert_eq!(
        fail("DELETE FROM t WHERE k = 1 IF EXISTS").kind,
        ErrorKind::Unsupported
    );
}

#[test]
fn batch_forms() {
    let s = ok("BEGIN UNLOGGED BATCH USING TIMESTAMP 5 INSERT INTO t (k) VALUES (1); UPDATE t SET v = 2 WHERE k = 1 DELETE FROM t WHERE k = 3; APPLY BATCH");
    let Statement::Batch(b) = &s else { panic!() };
    assert_eq!(b.kind, BatchKind::Unlogged);
    assert_eq!(b.timestamp, Some(int(5)));
    assert_eq!(b.statements.len(), 3);
    assert_eq!(canon("begin batch apply batch"), "BEGIN BATCH APPLY BATCH");
    assert!(
        fail("BEGIN BATCH USING TTL 5 INSERT INTO t (k) VALUES (1) APPLY BATCH")
            .message
            .contains("Global TTL on the BATCH statement is not supported.")
    );
    assert!(fail(
        "BEGIN BATCH USING TIMESTAMP 1 INSERT INTO t (k) VALUES (1) USING TIMESTAMP 2 APPLY BATCH"
    )
    .message
    .contains("Timestamp must be set either on BATCH or individual statements"));
    assert!(fail("BEGIN BATCH SELECT * FROM t APPLY BATCH")
        .message
        .contains("mismatched input 'SELECT' expecting one of"));
    assert_eq!(
        fail("BEGIN COUNTER BATCH APPLY BATCH").kind,
        ErrorKind::Unsupported
    );
}

#[test]
fn select_forms() {
    let s = ok("SELECT * FROM t");
    assert_eq!(
        s,
        Statement::Select(Select {
            distinct: false,
            selection: Selection::All,
            table: QualifiedName::new("t"),
            where_clause: vec![],
            group_by: vec![],
            order_by: vec![],
            per_partition_limit: None,
            limit: None,
            allow_filtering: false,
            with_siblings: false,
        })
    );
    assert_eq!(
        canon("select distinct k from t"),
        "SELECT DISTINCT k FROM t"
    );
    assert_eq!(
        canon("select distinct from t"),
        "SELECT \"distinct\" FROM t"
    );
    assert_eq!(
        canon("select distinct as from t"),
        "SELECT DISTINCT as FROM t"
    );
    assert_eq!(
        canon("select distinct as x from t"),
        "SELECT \"distinct\" AS x FROM t"
    );
    assert_eq!(
        canon("select count(1), Count(*) as n, MIN(v), max(v) AS m, sum(v), avg(v), count(v), writetime(v), ttl(v), count, ttl from t"),
        "SELECT COUNT(*), COUNT(*) AS n, min(v), max(v) AS m, sum(v), avg(v), count(v), WRITETIME(v), TTL(v), count, ttl FROM t"
    );
    assert_eq!(
        canon("SELECT a FROM ks.t WHERE k IN (1, 2) AND c > 1 AND c <= 5 AND d IN ? GROUP BY k, c ORDER BY c DESC, d ASC PER PARTITION LIMIT 3 LIMIT ? ALLOW FILTERING WITH SIBLINGS"),
        "SELECT a FROM ks.t WHERE k IN (1, 2) AND c > 1 AND c <= 5 AND d IN ? GROUP BY k, c ORDER BY c DESC, d ASC PER PARTITION LIMIT 3 LIMIT ? ALLOW FILTERING WITH SIBLINGS"
    );
    assert_eq!(
        canon("SELECT a FROM t WHERE k IN ()"),
        "SELECT a FROM t WHERE k IN ()"
    );
    assert_eq!(
        canon("SELECT \"select\", \"A\"\"b\" FROM \"T\" WHERE \"k\" = 1"),
        "SELECT \"select\", \"A\"\"b\" FROM \"T\" WHERE k = 1"
    );
}

#[test]
fn select_errors() {
    let cases: &[(&str, &str, u32)] = &[
        (
            "SELECT * FORM t",
            "mismatched input 'FORM' expecting FROM",
            10,
        ),
        (
            "SELECT a FORM t",
            "mismatched input 'FORM' expecting one of AS, ',', FROM",
            10,
        ),
        (
            "SELECT * FROM t WHER k = 1",
            "mismatched input 'WHER' expecting one of",
            17,
        ),
        (
            "SELECT * FROM t LIMIT 0",
            "LIMIT must be strictly positive",
            23,
        ),
        (
            "SELECT * FROM t PER PARTITION LIMIT -1",
            "PER PARTITION LIMIT must be strictly positive",
            37,
        ),
        (
            "SELECT * FROM t LIMIT 'a'",
            "mismatched input ''a'' expecting one of integer, bind marker",
            23,
        ),
        (
            "SELECT * FROM t WHERE k != 1",
            "Unsupported \"!=\" relation",
            25,
        ),
        (
            "SELECT * FROM t WHERE (a, b) > (1, 2)",
            "multi-column relations are not supported",
            23,
        ),
        (
            "SELECT * FROM t WHERE token(k) > 1",
            "token() restrictions are not supported",
            23,
        ),
        (
            "SELECT * FROM t WHERE k CONTAINS 1",
            "CONTAINS restrictions are not supported",
            25,
        ),
        (
            "SELECT now() FROM t",
            "scalar functions in a selection are not supported",
            8,
        ),
        ("SELECT foo(v) FROM t", "Unknown function 'foo'", 8),
        (
            "SELECT * FROM select",
            "no viable alternative at input 'select'",
            15,
        ),
        (
            "SELECT * FROM t WHERE k = ",
            "mismatched input '<EOF>' expecting a value",
            27,
        ),
        (
            "SELECT * FROM t;;x",
            "mismatched input 'x' expecting one of ';', <EOF>",
            18,
        ),
    ];
    for &(src, msg, col) in cases {
        let e = fail(src);
        assert!(e.message.contains(msg), "{src}: got {:?}", e.message);
        assert_eq!(e.span.column, col, "{}", e.render(src));
    }
}

#[test]
fn error_rendering() {
    let src = "SELECT *\n\tFROM t\n\tWHERE k = 'abc";
    let e = fail(src);
    assert_eq!(e.kind, ErrorKind::Lexical);
    assert_eq!((e.span.line, e.span.column), (3, 12));
    assert_eq!(
        e.render(src),
        "line 3, column 12: unterminated string literal: missing closing quote (')\n\tWHERE k = 'abc\n\t          ^^^^"
    );
    assert_eq!(
        e.to_string(),
        "line 3:12 unterminated string literal: missing closing quote (')"
    );
    let src = "SELECT * FROM t WHERE";
    let e = fail(src);
    assert_eq!(e.token, "<EOF>");
    assert_eq!(
        e.render(src),
        "line 1, column 22: mismatched input '<EOF>' expecting identifier\nSELECT * FROM t WHERE\n                     ^"
    );
    let src = "/* a\n comment */ SELECT * FROM t /* open";
    let e = fail(src);
    assert_eq!((e.span.line, e.span.column), (2, 29));
    assert!(e
        .render(src)
        .ends_with("\n comment */ SELECT * FROM t /* open\n                            ^^^^^^^"));
}

#[test]
fn nesting_is_bounded() {
    let deep = format!(
        "INSERT INTO t (k) VALUES ({}now(){})",
        "toTimestamp(".repeat(100_000),
        ")".repeat(100_000)
    );
    let e = fail(&deep);
    assert!(
        e.message.contains("nested more than 32 deep"),
        "{}",
        e.message
    );
    let ok_depth = format!(
        "INSERT INTO t (k) VALUES ({}now(){})",
        "toTimestamp(".repeat(31),
        ")".repeat(31)
    );
    ok(&ok_depth);
}

#[test]
fn scripts_and_comments() {
    let script = "-- a comment\nUSE ks; // another\n/* block */ SELECT * FROM t;;\nTRUNCATE t";
    let stmts = parse(script).unwrap();
    assert_eq!(stmts.len(), 3);
    assert_eq!(
        cql_lite::printer::print_script(&stmts),
        "USE ks;\nSELECT * FROM t;\nTRUNCATE t;\n"
    );
    assert_eq!(parse("").unwrap(), vec![]);
    assert_eq!(parse(" ; -- nothing").unwrap(), vec![]);
    let e = parse("USE ks SELECT").unwrap_err();
    assert_eq!(
        e.message,
        "mismatched input 'SELECT' expecting one of ';', <EOF>"
    );
    assert!(parse_statement("USE a; USE b").is_err());
    assert!(parse_statement("").is_err());
}

#[test]
fn case_insensitive_keywords_and_identifiers() {
    assert_eq!(
        ok("sElEcT V fRoM Ks.T wHeRe K = 1"),
        ok("SELECT v FROM ks.t WHERE k = 1")
    );
    assert_ne!(ok("SELECT \"V\" FROM t"), ok("SELECT v FROM t"));
    // Unreserved keywords are fine as names.
    ok("CREATE TABLE ttl (timestamp timestamp, key int, count int, date date, text text, PRIMARY KEY (key, timestamp))");
    ok("SELECT timestamp, key, count FROM ttl WHERE key = 1");
}

#[test]
fn bind_markers_in_order() {
    let s = ok("SELECT * FROM t WHERE k = ? AND c IN :cs AND d IN (?, :x) PER PARTITION LIMIT ? LIMIT :lim");
    assert_eq!(
        s.bind_markers(),
        vec![
            None,
            Some("cs".into()),
            None,
            Some("x".into()),
            None,
            Some("lim".into())
        ]
    );
    let s = ok("INSERT INTO t (k, v) VALUES (:\"K\", ?) USING TIMESTAMP ? AND TTL ?");
    assert_eq!(s.bind_markers(), vec![Some("K".into()), None, None, None]);
    assert_eq!(
        s.to_string(),
        "INSERT INTO t (k, v) VALUES (:\"K\", ?) USING TIMESTAMP ? AND TTL ?"
    );
}

/// Prepared statements travel between nodes: the tree must be serde-able.
#[test]
fn statements_are_serde() {
    fn assert_serde<T: serde::Serialize + serde::de::DeserializeOwned>() {}
    assert_serde::<Statement>();
    assert_serde::<cql_lite::ParseError>();
    assert_serde::<cql_lite::SemanticError>();
}
