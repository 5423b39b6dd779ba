//! Property tests: arbitrary trees print to text that parses back to the
//! same tree; the parser never panics, whatever the input.

use cql_lite::ast::*;
use cql_lite::parser::MAX_TTL;
use cql_lite::{parse, parse_statement, DataType};
use proptest::collection::{hash_set, vec};
use proptest::option;
use proptest::prelude::*;

// ----- generators -----

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-z][a-z0-9_]{0,8}",
        1 => "[A-Za-z0-9 _\"'.;-]{1,8}",
        1 => prop::sample::select(vec![
            "select", "from", "key", "ttl", "timestamp", "count", "distinct", "true",
            "nan", "infinity", "null", "as", "siblings", "filtering", "writetime",
        ])
        .prop_map(String::from),
        1 => "\\PC{1,5}",
    ]
}

fn ident() -> impl Strategy<Value = Ident> {
    name().prop_map(Ident::new)
}

fn idents(min: usize, max: usize) -> impl Strategy<Value = Vec<Ident>> {
    hash_set(name(), min..=max).prop_map(|s| s.into_iter().map(Ident::new).collect())
}

fn qname() -> impl Strategy<Value = QualifiedName> {
    (option::of(ident()), ident()).prop_map(|(keyspace, name)| QualifiedName { keyspace, name })
}

fn literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        any::<i128>().prop_map(Literal::Integer),
        (-1000i128..1000).prop_map(Literal::Integer),
        any::<f64>().prop_map(Literal::Float),
        prop::sample::select(vec![
            0.0,
            -0.0,
            1.5,
            1e300,
            -2.5e-7,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN
        ])
        .prop_map(Literal::Float),
        any::<String>().prop_map(Literal::String),
        "[a-z' ]{0,6}".prop_map(Literal::String),
        vec(any::<u8>(), 0..6).prop_map(Literal::Blob),
        any::<u128>().prop_map(Literal::Uuid),
        any::<bool>().prop_map(Literal::Bool),
        Just(Literal::Null),
    ]
}

fn marker() -> impl Strategy<Value = Option<String>> {
    option::of(name())
}

fn term() -> impl Strategy<Value = Term> {
    let leaf = prop_oneof![
        4 => literal().prop_map(Term::Literal),
        1 => marker().prop_map(Term::BindMarker),
        1 => prop::sample::select(vec!["now", "uuid", "currenttimestamp"]).prop_map(|f| Term::FunctionCall {
            name: Ident::new(f),
            args: vec![]
        }),
    ];
    leaf.prop_recursive(2, 4, 1, |inner| {
        inner.prop_map(|t| Term::FunctionCall {
            name: Ident::new("totimestamp"),
            args: vec![t],
        })
    })
}

fn int_or_marker(lo: i128, hi: i128) -> impl Strategy<Value = Term> {
    prop_oneof![
        3 => (lo..=hi).prop_map(|i| Term::Literal(Literal::Integer(i))),
        1 => marker().prop_map(Term::BindMarker),
    ]
}

fn ttl() -> impl Strategy<Value = Term> {
    int_or_marker(0, MAX_TTL)
}

fn timestamp() -> impl Strategy<Value = Term> {
    int_or_marker(i128::from(i64::MIN), i128::from(i64::MAX))
}

fn limit() -> impl Strategy<Value = Term> {
    int_or_marker(1, i128::from(i32::MAX))
}

fn using() -> impl Strategy<Value = Using> {
    prop_oneof![
        Just(Using::default()),
        ttl().prop_map(|t| Using(vec![UsingParam::Ttl(t)])),
        timestamp().prop_map(|t| Using(vec![UsingParam::Timestamp(t)])),
        (ttl(), timestamp(), any::<bool>()).prop_map(|(a, b, swap)| {
            let (a, b) = (UsingParam::Ttl(a), UsingParam::Timestamp(b));
            Using(if swap { vec![b, a] } else { vec![a, b] })
        }),
    ]
}

fn operator() -> impl Strategy<Value = Operator> {
    prop::sample::select(vec![
        Operator::Eq,
        Operator::Lt,
        Operator::Le,
        Operator::Gt,
        Operator::Ge,
    ])
}

fn relation() -> impl Strategy<Value = Relation> {
    prop_oneof![
        3 => (ident(), operator(), term()).prop_map(|(column, op, value)| Relation::Compare { column, op, value }),
        1 => (ident(), vec(term(), 0..3)).prop_map(|(column, ts)| Relation::In { column, values: InValues::List(ts) }),
        1 => (ident(), marker()).prop_map(|(column, m)| Relation::In { column, values: InValues::Marker(m) }),
    ]
}

fn data_type() -> impl Strategy<Value = DataType> {
    prop::sample::select(DataType::ALL.to_vec())
}

fn order() -> impl Strategy<Value = Order> {
    prop_oneof![Just(Order::Asc), Just(Order::Desc)]
}

fn column_defs(min: usize, max: usize) -> impl Strategy<Value = Vec<ColumnDef>> {
    (idents(min, max), vec(data_type(), max)).prop_map(|(names, types)| {
        names
            .into_iter()
            .zip(types)
            .map(|(name, data_type)| ColumnDef { name, data_type })
            .collect()
    })
}

fn option_key() -> impl Strategy<Value = String> {
    "[a-z_]{1,10}".prop_filter("reserved option keys", |k| {
        k != "class" && k != "replication_factor"
    })
}

fn compaction() -> impl Strategy<Value = Compaction> {
    (
        prop_oneof![
            Just(CompactionStrategy::SizeTiered),
            Just(CompactionStrategy::TimeWindow)
        ],
        hash_set(option_key(), 0..3),
        vec(literal(), 3),
    )
        .prop_map(|(strategy, keys, values)| Compaction {
            strategy,
            options: keys.into_iter().zip(values).collect(),
            positions: Positions::default(),
        })
}

fn table_options(clustering: Vec<Ident>) -> impl Strategy<Value = TableOptions> {
    let n = clustering.len();
    (
        0..=n,
        vec(order(), n),
        option::of(0..=MAX_TTL as u32),
        option::of(0..=i32::MAX as u32),
        option::of(compaction()),
        option::of(any::<String>()),
    )
        .prop_map(
            move |(prefix, orders, ttl, gc, compaction, comment)| TableOptions {
                clustering_order: clustering
                    .iter()
                    .cloned()
                    .zip(orders)
                    .take(prefix)
                    .collect(),
                default_time_to_live: ttl,
                gc_grace_seconds: gc,
                compaction,
                comment,
                positions: Positions::default(),
            },
        )
}

fn create_table() -> impl Strategy<Value = CreateTable> {
    (
        any::<bool>(),
        qname(),
        column_defs(1, 6),
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
    )
        .prop_flat_map(|(if_not_exists, name, columns, p, c)| {
            let n = columns.len();
            let parts = 1 + p.index(n);
            let clust = c.index(n - parts + 1);
            let partition: Vec<Ident> = columns[..parts].iter().map(|c| c.name.clone()).collect();
            let clustering: Vec<Ident> = columns[parts..parts + clust]
                .iter()
                .map(|c| c.name.clone())
                .collect();
            table_options(clustering.clone()).prop_map(move |options| CreateTable {
                if_not_exists,
                name: name.clone(),
                columns: columns.clone(),
                primary_key: PrimaryKey {
                    partition: partition.clone(),
                    clustering: clustering.clone(),
                },
                options,
            })
        })
}

fn replication() -> impl Strategy<Value = Replication> {
    prop_oneof![
        any::<u32>().prop_map(|replication_factor| Replication::Simple { replication_factor }),
        (
            hash_set(
                prop_oneof!["[a-z0-9]{1,6}", "\\PC{1,4}"]
                    .prop_filter("reserved", |k| k != "class" && k != "replication_factor"),
                1..4
            ),
            vec(any::<u32>(), 4)
        )
            .prop_map(|(dcs, rfs)| Replication::NetworkTopology {
                datacenters: dcs.into_iter().zip(rfs).collect()
            }),
    ]
}

fn insert() -> impl Strategy<Value = Insert> {
    (qname(), idents(1, 4), vec(term(), 4), using()).prop_map(
        |(table, columns, mut values, using)| {
            values.truncate(columns.len());
            Insert {
                table,
                columns,
                values,
                using,
            }
        },
    )
}

fn update() -> impl Strategy<Value = Update> {
    (
        qname(),
        using(),
        idents(1, 3),
        vec(term(), 3),
        vec(relation(), 1..4),
    )
        .prop_map(|(table, using, cols, values, where_clause)| Update {
            table,
            using,
            assignments: cols
                .into_iter()
                .zip(values)
                .map(|(column, value)| Assignment { column, value })
                .collect(),
            where_clause,
        })
}

fn delete() -> impl Strategy<Value = Delete> {
    (
        idents(0, 3),
        qname(),
        option::of(timestamp()),
        vec(relation(), 1..4),
    )
        .prop_map(|(columns, table, timestamp, where_clause)| Delete {
            columns,
            table,
            timestamp,
            where_clause,
        })
}

fn strip_timestamp(s: BatchStatement) -> BatchStatement {
    let strip = |u: Using| {
        Using(
            u.0.into_iter()
                .filter(|p| matches!(p, UsingParam::Ttl(_)))
                .collect(),
        )
    };
    match s {
        BatchStatement::Insert(mut i) => {
            i.using = strip(i.using);
            BatchStatement::Insert(i)
        }
        BatchStatement::Update(mut u) => {
            u.using = strip(u.using);
            BatchStatement::Update(u)
        }
        BatchStatement::Delete(mut d) => {
            d.timestamp = None;
            BatchStatement::Delete(d)
        }
    }
}

fn batch() -> impl Strategy<Value = Batch> {
    let inner = prop_oneof![
        insert().prop_map(BatchStatement::Insert),
        update().prop_map(BatchStatement::Update),
        delete().prop_map(BatchStatement::Delete),
    ];
    (
        prop_oneof![Just(BatchKind::Logged), Just(BatchKind::Unlogged)],
        option::of(timestamp()),
        vec(inner, 0..4),
    )
        .prop_map(|(kind, timestamp, statements)| {
            let statements = if timestamp.is_some() {
                statements.into_iter().map(strip_timestamp).collect()
            } else {
                statements
            };
            Batch {
                kind,
                timestamp,
                statements,
            }
        })
}

fn selector() -> impl Strategy<Value = Selector> {
    prop_oneof![
        4 => ident().prop_map(Selector::Column),
        1 => Just(Selector::CountStar),
        1 => (prop::sample::select(Aggregate::ALL.to_vec()), ident()).prop_map(|(function, column)| Selector::Aggregate { function, column }),
        1 => ident().prop_map(Selector::WriteTime),
        1 => ident().prop_map(Selector::Ttl),
    ]
}

fn select() -> impl Strategy<Value = Select> {
    let selection = prop_oneof![
        Just(Selection::All),
        vec(
            (selector(), option::of(ident()))
                .prop_map(|(selector, alias)| SelectItem { selector, alias }),
            1..4
        )
        .prop_map(Selection::Items),
    ];
    (
        (any::<bool>(), selection, qname(), vec(relation(), 0..4)),
        (
            vec(ident(), 0..3),
            vec(
                (ident(), order()).prop_map(|(column, order)| Ordering { column, order }),
                0..3,
            ),
            option::of(limit()),
            option::of(limit()),
            any::<bool>(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (distinct, selection, table, where_clause),
                (group_by, order_by, per_partition_limit, limit, allow_filtering, with_siblings),
            )| Select {
                distinct,
                selection,
                table,
                where_clause,
                group_by,
                order_by,
                per_partition_limit,
                limit,
                allow_filtering,
                with_siblings,
            },
        )
}

fn alter_table() -> impl Strategy<Value = AlterTable> {
    let with = table_options(vec![]).prop_filter("at least one option", |o| !o.is_empty());
    (
        qname(),
        prop_oneof![
            column_defs(1, 3).prop_map(AlterTableOp::Add),
            idents(1, 3).prop_map(AlterTableOp::Drop),
            with.prop_map(AlterTableOp::With),
        ],
    )
        .prop_map(|(name, op)| AlterTable { name, op })
}

fn statement() -> impl Strategy<Value = Statement> {
    prop_oneof![
        (
            any::<bool>(),
            ident(),
            replication(),
            option::of(any::<bool>()),
            option::of(any::<bool>())
        )
            .prop_map(
                |(if_not_exists, name, replication, durable_writes, sloppy_quorum)| {
                    Statement::CreateKeyspace(CreateKeyspace {
                        if_not_exists,
                        name,
                        replication,
                        durable_writes,
                        sloppy_quorum,
                    })
                }
            ),
        (
            any::<bool>(),
            ident(),
            option::of(replication()),
            option::of(any::<bool>()),
            option::of(any::<bool>())
        )
            .prop_filter("at least one option", |(_, _, r, d, s)| r.is_some()
                || d.is_some()
                || s.is_some())
            .prop_map(
                |(if_exists, name, replication, durable_writes, sloppy_quorum)| {
                    Statement::AlterKeyspace(AlterKeyspace {
                        if_exists,
                        name,
                        replication,
                        durable_writes,
                        sloppy_quorum,
                    })
                }
            ),
        (any::<bool>(), ident()).prop_map(|(if_exists, name)| Statement::DropKeyspace(
            DropKeyspace { if_exists, name }
        )),
        ident().prop_map(Statement::Use),
        create_table().prop_map(Statement::CreateTable),
        alter_table().prop_map(Statement::AlterTable),
        (any::<bool>(), qname())
            .prop_map(|(if_exists, name)| Statement::DropTable(DropTable { if_exists, name })),
        qname().prop_map(|name| Statement::Truncate(Truncate { name })),
        insert().prop_map(Statement::Insert),
        update().prop_map(Statement::Update),
        delete().prop_map(Statement::Delete),
        batch().prop_map(Statement::Batch),
        select().prop_map(Statement::Select),
    ]
}

/// Words and symbols to make token soups from.
fn soup_token() -> impl Strategy<Value = String> {
    let words = vec![
        "SELECT",
        "FROM",
        "WHERE",
        "AND",
        "INSERT",
        "INTO",
        "VALUES",
        "UPDATE",
        "SET",
        "DELETE",
        "BEGIN",
        "UNLOGGED",
        "BATCH",
        "APPLY",
        "CREATE",
        "ALTER",
        "DROP",
        "KEYSPACE",
        "TABLE",
        "IF",
        "NOT",
        "EXISTS",
        "WITH",
        "USING",
        "TTL",
        "TIMESTAMP",
        "PRIMARY",
        "KEY",
        "CLUSTERING",
        "ORDER",
        "BY",
        "ASC",
        "DESC",
        "GROUP",
        "PER",
        "PARTITION",
        "LIMIT",
        "ALLOW",
        "FILTERING",
        "SIBLINGS",
        "DISTINCT",
        "COUNT",
        "AS",
        "IN",
        "USE",
        "TRUNCATE",
        "ADD",
        "int",
        "text",
        "replication",
        "durable_writes",
        "sloppy_quorum",
        "default_time_to_live",
        "compaction",
        "now",
        "toTimestamp",
        "k",
        "v",
        "t",
        "ks",
        "NaN",
        "Infinity",
        "true",
        "NULL",
        "(",
        ")",
        "{",
        "}",
        ",",
        ";",
        ".",
        "*",
        "=",
        "<",
        "<=",
        ">",
        ">=",
        "!=",
        "?",
        ":",
        ":x",
        "-",
        "+",
        "'class'",
        "'SimpleStrategy'",
        "'replication_factor'",
        "1",
        "-7",
        "2.5",
        "1e3",
        "0xff",
        "'s'",
        "\"Q\"",
        "123e4567-e89b-12d3-a456-426614174000",
        "--",
        "/*",
        "*/",
        "'",
        "\"",
        "$$",
    ];
    prop::sample::select(words).prop_map(String::from)
}

fn check_reprint(src: &str) {
    if let Ok(stmts) = parse(src) {
        let printed = cql_lite::printer::print_script(&stmts);
        let again = parse(&printed)
            .unwrap_or_else(|e| panic!("{src:?} -> {printed:?}: {}", e.render(&printed)));
        assert_eq!(stmts, again, "{src:?} -> {printed:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn print_then_parse_is_identity(stmt in statement()) {
        let text = stmt.to_string();
        let parsed = parse_statement(&text).map_err(|e| TestCaseError::fail(format!("{text}\n{}", e.render(&text))))?;
        prop_assert_eq!(&parsed, &stmt, "printed as {}", text);
        // Printing is canonical: the reparsed tree prints the same text.
        prop_assert_eq!(parsed.to_string(), text);
    }

    #[test]
    fn scripts_round_trip(stmts in vec(statement(), 0..4)) {
        let text = cql_lite::printer::print_script(&stmts);
        let parsed = parse(&text).map_err(|e| TestCaseError::fail(e.render(&text)))?;
        prop_assert_eq!(parsed, stmts);
    }

    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..200)) {
        let src = String::from_utf8_lossy(&bytes);
        match parse(&src) {
            Ok(_) => check_reprint(&src),
            Err(e) => { let _ = e.render(&src); }
        }
        if let Err(e) = parse_statement(&src) {
            let _ = e.render(&src);
        }
    }

    #[test]
    fn random_text_never_panics(src in "\\PC{0,80}") {
        if let Err(e) = parse(&src) {
            let _ = e.render(&src);
        }
    }

    #[test]
    fn token_soups_never_panic(tokens in vec(soup_token(), 0..30), sep in prop_oneof![Just(" "), Just("\n"), Just("")]) {
        let src = tokens.join(sep);
        match parse(&src) {
            Ok(_) => check_reprint(&src),
            Err(e) => {
                let rendered = e.render(&src);
                prop_assert!(rendered.contains('^'));
                prop_assert!(e.span.offset <= src.len());
            }
        }
    }

    /// Mutations of valid statements (a token dropped, duplicated or
    /// swapped) reach deep into the grammar; none may panic.
    #[test]
    fn mutated_statements_never_panic(stmt in statement(), cut in any::<prop::sample::Index>(), how in 0..3u8) {
        let text = stmt.to_string();
        let words: Vec<&str> = text.split(' ').collect();
        let i = cut.index(words.len());
        let mut w: Vec<&str> = words.clone();
        match how {
            0 => { w.remove(i); }
            1 => { w.insert(i, words[i]); }
            _ => { let j = (i + 1) % words.len(); w.swap(i, j); }
        }
        let src = w.join(" ");
        match parse(&src) {
            Ok(_) => check_reprint(&src),
            Err(e) => { let _ = e.render(&src); }
        }
    }
}
