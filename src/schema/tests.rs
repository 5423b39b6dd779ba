use super::*;
use cql_lite::parse_statement;

fn apply(schema: &Schema, text: &str, id: u128) -> Schema {
    let stmt = parse_statement(text).unwrap();
    let change = schema
        .change_for(&stmt, Some("ks"), id, Timestamp::from_millis(5))
        .unwrap()
        .unwrap();
    schema.apply(&change).unwrap()
}

fn sample() -> Schema {
    let s = Schema::new();
    let s = apply(
        &s,
        "CREATE KEYSPACE ks WITH replication = {'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 2}",
        0,
    );
    let s = apply(
        &s,
        "CREATE TABLE ks.readings (sensor text, day date, ts timestamp, value double, \"Note\" text, \
         PRIMARY KEY ((sensor, day), ts)) WITH CLUSTERING ORDER BY (ts DESC) \
         AND default_time_to_live = 60 AND comment = 'it''s' \
         AND compaction = {'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': 'HOURS', 'compaction_window_size': 2}",
        7,
    );
    apply(&s, "CREATE TABLE ks.kv (k int PRIMARY KEY, v text)", 8)
}

#[test]
fn changes_bump_the_version_and_digest() {
    let s = sample();
    assert!(s.version() > Schema::new().version());
    let t = s.get_table("ks", "readings").unwrap();
    assert_eq!(t.id, 7);
    assert_eq!(t.default_time_to_live, 60);
    assert_eq!(
        t.storage_compaction().unwrap(),
        StorageCompaction::TimeWindow {
            window: Duration::from_secs(7200),
            min_threshold: 4
        }
    );
    let altered = apply(&s, "ALTER TABLE kv ADD extra int", 0);
    assert!(altered.version() > s.version());
    assert_ne!(altered.digest(), s.digest());
    let dropped = apply(&altered, "ALTER TABLE kv DROP extra", 0);
    let kv = dropped.get_table("ks", "kv").unwrap();
    assert!(kv.column("extra").is_none());
    // Every change here was made at the same wall-clock instant: each is
    // stamped just after the latest change it was made against.
    assert_eq!(kv.dropped_columns.get("extra"), Some(&dropped.latest()));
    assert!(dropped.latest() > altered.latest());
    // Added again: present, and the drop is still remembered.
    let again = apply(&dropped, "ALTER TABLE kv ADD extra text", 0);
    let kv = again.get_table("ks", "kv").unwrap();
    assert_eq!(
        kv.column("extra").map(|c| c.data_type),
        Some(DataType::Text)
    );
    assert!(kv.dropped_columns.contains_key("extra"));
    // Equal content, equal digest; the digest survives a round trip.
    let bytes = persist::encode(&again);
    let back = persist::decode(&bytes, std::path::Path::new("x")).unwrap();
    assert_eq!(back.digest(), again.digest());
    assert_eq!(back, again);
}

#[test]
fn if_exists_variants_are_no_ops() {
    let s = sample();
    for text in [
        "CREATE KEYSPACE IF NOT EXISTS ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
        "CREATE TABLE IF NOT EXISTS kv (k int PRIMARY KEY)",
        "DROP TABLE IF EXISTS nope",
        "DROP KEYSPACE IF EXISTS nope",
    ] {
        let stmt = parse_statement(text).unwrap();
        assert_eq!(
            s.change_for(&stmt, Some("ks"), 1, Timestamp::ZERO).unwrap(),
            None,
            "{text}"
        );
    }
    let stmt = parse_statement("CREATE TABLE kv (k int PRIMARY KEY)").unwrap();
    assert_eq!(
        s.change_for(&stmt, Some("ks"), 1, Timestamp::ZERO),
        Err(SchemaError::TableExists("ks".into(), "kv".into()))
    );
}

#[test]
fn keyspace_and_table_names_are_letters_digits_and_underscores() {
    let s = sample();
    let long = "x".repeat(MAX_OBJECT_NAME_LEN);
    let too_long = "x".repeat(MAX_OBJECT_NAME_LEN + 1);
    let ks = |name: &str| {
        format!(
            "CREATE KEYSPACE {name} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
        )
    };
    let table = |name: &str| format!("CREATE TABLE {name} (k int PRIMARY KEY)");
    for good in [ks("\"MyKs\""), ks(&long), table("\"T_1\""), table(&long)] {
        let stmt = parse_statement(&good).unwrap();
        assert!(
            matches!(
                s.change_for(&stmt, Some("ks"), 1, Timestamp::ZERO),
                Ok(Some(_))
            ),
            "{good}"
        );
    }
    for bad in [
        ks("\"../x\""),
        ks("\"a/b\""),
        ks("\"..\""),
        ks("\"my ks\""),
        ks(&format!("\"{too_long}\"")),
        table("\"../../etc\""),
        table("\"/tmp/t\""),
        table("\"é\""),
        table(&too_long),
    ] {
        let stmt = parse_statement(&bad).unwrap();
        let e = s
            .change_for(&stmt, Some("ks"), 1, Timestamp::ZERO)
            .unwrap_err();
        assert!(
            matches!(&e, SchemaError::Invalid(m) if m.contains("is not valid")),
            "{bad}: {e}"
        );
    }
}

#[test]
fn bad_compaction_options_are_refused() {
    let s = sample();
    let stmt = parse_statement(
        "CREATE TABLE t (k int PRIMARY KEY) WITH compaction = {'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': 'WEEKS'}",
    )
    .unwrap();
    let e = s
        .change_for(&stmt, Some("ks"), 1, Timestamp::ZERO)
        .unwrap_err();
    assert!(e.to_string().contains("compaction_window_unit"), "{e}");
}

#[test]
fn describe_recreates_the_table() {
    let s = sample();
    for name in ["readings", "kv"] {
        let t = s.get_table("ks", name).unwrap();
        let text = s.describe_table("ks", name).unwrap();
        let stmt = parse_statement(&text).unwrap_or_else(|e| panic!("{}", e.render(&text)));
        let Statement::CreateTable(ct) = stmt else {
            panic!("not a CREATE TABLE: {text}")
        };
        let again = Table::from_create("ks", &ct, t.id).unwrap();
        assert_eq!(again.default_time_to_live, t.default_time_to_live);
        assert_eq!(again.compaction, t.compaction);
        assert_eq!(again.comment, t.comment);
        assert_eq!(again.def.partition_key, t.def.partition_key);
        assert_eq!(again.def.clustering, t.def.clustering);
        assert_eq!(again.select_star_columns(), t.select_star_columns());
    }
    let ks = s.describe_keyspace("ks").unwrap();
    assert!(ks.starts_with("CREATE KEYSPACE ks WITH replication = {'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 2}"), "{ks}");
    for stmt in cql_lite::parse(&ks).unwrap() {
        assert!(matches!(
            stmt,
            Statement::CreateKeyspace(_) | Statement::CreateTable(_)
        ));
    }
}

#[test]
fn the_file_round_trips_and_damage_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = SchemaStore::open(dir.path()).unwrap();
    assert_eq!(store.current().version(), 0);
    let s = sample();
    let stmt = parse_statement(
        "CREATE KEYSPACE other WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
    )
    .unwrap();
    let change = store
        .current()
        .change_for(&stmt, None, 0, Timestamp::ZERO)
        .unwrap()
        .unwrap();
    store.apply(&change).unwrap();
    let merged = store.merge(&s).unwrap();
    assert!(merged.keyspace("other").is_some() && merged.get_table("ks", "kv").is_some());
    drop(store);
    let reopened = SchemaStore::open(dir.path()).unwrap();
    assert_eq!(*reopened.current(), *merged);

    let path = dir.path().join("schema.bin");
    let good = std::fs::read(&path).unwrap();
    for cut in [0, 5, 19, good.len() - 1] {
        std::fs::write(&path, &good[..cut]).unwrap();
        assert!(matches!(
            SchemaStore::open(dir.path()),
            Err(SchemaError::Corrupt { .. })
        ));
    }
    for i in [3, 10, 17, 25, good.len() - 2] {
        let mut bad = good.clone();
        bad[i] ^= 0x40;
        std::fs::write(&path, &bad).unwrap();
        assert!(matches!(
            SchemaStore::open(dir.path()),
            Err(SchemaError::Corrupt { .. })
        ));
    }
}

#[test]
fn garbage_never_panics_the_loader() {
    let path = std::path::Path::new("x");
    let mut seed = 0x1234_5678_u64;
    for len in 0..300 {
        let mut bytes = Vec::with_capacity(len);
        for _ in 0..len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            bytes.push(seed as u8);
        }
        if len > 20 {
            bytes[..8].copy_from_slice(if len % 2 == 0 {
                b"RNGSCHM2"
            } else {
                b"RNGSCHM3"
            });
            let payload_len = (len - 20) as u64;
            bytes[8..16].copy_from_slice(&payload_len.to_le_bytes());
            let crc = crc32c::crc32c(&bytes[20..]);
            bytes[16..20].copy_from_slice(&crc.to_le_bytes());
        }
        let _ = persist::decode(&bytes, path);
    }
}

#[test]
fn sloppy_quorum_is_a_keyspace_property() {
    let s = sample();
    assert!(s.keyspace("ks").unwrap().sloppy_quorum, "on by default");
    let s = apply(
        &s,
        "CREATE KEYSPACE strict WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 3} AND sloppy_quorum = false",
        0,
    );
    assert!(!s.keyspace("strict").unwrap().sloppy_quorum);
    // ALTER without the property keeps it; with it, sets it.
    let kept = apply(
        &s,
        "ALTER KEYSPACE strict WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 2}",
        0,
    );
    assert!(!kept.keyspace("strict").unwrap().sloppy_quorum);
    let on = apply(&kept, "ALTER KEYSPACE strict WITH sloppy_quorum = true", 0);
    let ks = on.keyspace("strict").unwrap();
    assert!(ks.sloppy_quorum);
    assert_eq!(ks.replication, Replication::Simple { rf: 2 });
    assert_ne!(on.digest(), kept.digest(), "nodes must see the change");
    // DESCRIBE shows it, and its output recreates the same keyspace.
    let text = kept.describe_keyspace("strict").unwrap();
    assert!(
        text.starts_with("CREATE KEYSPACE strict WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 2} AND durable_writes = true AND sloppy_quorum = false;"),
        "{text}"
    );
    let again = apply(&Schema::new(), &text, 0);
    assert_eq!(again.keyspace("strict"), kept.keyspace("strict"));
}

#[test]
fn a_format_1_schema_file_is_refused_with_its_own_message() {
    let mut bytes = persist::encode(&sample());
    bytes[..8].copy_from_slice(b"RNGSCHM1");
    let e = persist::decode(&bytes, std::path::Path::new("schema.bin")).unwrap_err();
    assert!(
        matches!(&e, SchemaError::Corrupt { reason, .. } if reason.contains("format 1")),
        "{e}"
    );
}

/// `tests/fixtures/schema-format2.bin` was written by the version before
/// schemas merged (format 2), with `.expected` holding what it described.
#[test]
fn a_format_2_schema_file_still_loads() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    std::fs::copy(
        fixtures.join("schema-format2.bin"),
        dir.path().join("schema.bin"),
    )
    .unwrap();
    let expected = std::fs::read_to_string(fixtures.join("schema-format2.expected")).unwrap();
    let store = SchemaStore::open(dir.path()).unwrap();
    let s = store.current();
    let mut text = String::new();
    for ks in ["ks", "strict"] {
        text.push_str(&s.describe_keyspace(ks).unwrap());
        text.push('\n');
    }
    for (ks, t) in [("ks", "kv"), ("ks", "readings"), ("strict", "events")] {
        let t = s.get_table(ks, t).unwrap();
        text.push_str(&format!(
            "{ks}.{} id={} dropped={:?}\n",
            t.name(),
            t.id,
            t.dropped_columns
        ));
    }
    assert_eq!(text, expected);
    assert_eq!(s.keyspaces().count(), 2);
    assert!(s.conflicts().is_empty());
    // Changes go on from there, and the file is rewritten as format 3.
    let stmt = parse_statement("ALTER TABLE ks.kv DROP extra").unwrap();
    let change = s
        .change_for(&stmt, None, 1, Timestamp::ZERO)
        .unwrap()
        .unwrap();
    let next = store.apply(&change).unwrap();
    assert!(next
        .get_table("ks", "kv")
        .unwrap()
        .column("extra")
        .is_none());
    drop(store);
    let bytes = std::fs::read(dir.path().join("schema.bin")).unwrap();
    assert_eq!(&bytes[..8], b"RNGSCHM3");
    assert_eq!(*SchemaStore::open(dir.path()).unwrap().current(), *next);
}

/// Two nodes that each create a different table at the same time: after
/// merging, both tables exist on both.
#[test]
fn concurrent_creates_of_different_tables_both_survive() {
    let base = apply(
        &Schema::new(),
        "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
        1,
    );
    let a = apply(&base, "CREATE TABLE a (k int PRIMARY KEY)", 2);
    let b = apply(&base, "CREATE TABLE b (k int PRIMARY KEY)", 3);
    assert_eq!(a.latest(), b.latest(), "made at the same instant");
    let ab = a.merge(&b).unwrap();
    assert_eq!(ab, b.merge(&a).unwrap());
    assert_eq!(ab.get_table("ks", "a").map(|t| t.id), Some(2));
    assert_eq!(ab.get_table("ks", "b").map(|t| t.id), Some(3));
    assert!(ab.conflicts().is_empty());
}

#[test]
fn the_same_table_created_twice_keeps_the_earliest_and_reports_it() {
    let base = apply(
        &Schema::new(),
        "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
        1,
    );
    let at = |ms| {
        move |s: &Schema, text: &str, id| {
            let stmt = parse_statement(text).unwrap();
            let change = s
                .change_for(&stmt, Some("ks"), id, Timestamp::from_millis(ms))
                .unwrap()
                .unwrap();
            s.apply(&change).unwrap()
        }
    };
    let late = at(900)(&base, "CREATE TABLE t (k int PRIMARY KEY, v int)", 10);
    let early = at(800)(&base, "CREATE TABLE t (k int PRIMARY KEY, w text)", 20);
    let merged = late.merge(&early).unwrap();
    let t = merged.get_table("ks", "t").unwrap();
    assert_eq!(t.id, 20, "the earliest creation wins");
    assert!(t.column("w").is_some() && t.column("v").is_none());
    assert_eq!(
        merged.conflicts(),
        vec![SchemaConflict::TableCreatedConcurrently {
            keyspace: "ks".into(),
            table: "t".into(),
            winner: 20,
            losers: vec![10],
        }]
    );
    // An ALTER made on the losing table changes nothing visible.
    let altered = at(950)(&late, "ALTER TABLE t ADD x int", 30);
    let merged2 = altered.merge(&early).unwrap();
    assert!(merged2.get_table("ks", "t").unwrap().column("x").is_none());
    // And a change against the loser is refused once the merge is known.
    let stmt = parse_statement("ALTER TABLE t ADD y int").unwrap();
    let stale = late
        .change_for(&stmt, Some("ks"), 40, Timestamp::from_millis(960))
        .unwrap()
        .unwrap();
    assert!(matches!(merged.apply(&stale), Err(SchemaError::Invalid(_))));
}

#[test]
fn a_column_added_twice_with_different_types_keeps_the_earliest() {
    let base = sample();
    let add = |ms, text: &str, id| {
        let stmt = parse_statement(text).unwrap();
        let change = base
            .change_for(&stmt, Some("ks"), id, Timestamp::from_millis(ms))
            .unwrap()
            .unwrap();
        base.apply(&change).unwrap()
    };
    let int = add(1_000, "ALTER TABLE kv ADD c int", 1);
    let text = add(999, "ALTER TABLE kv ADD c text", 2);
    let merged = int.merge(&text).unwrap();
    let col = merged.get_table("ks", "kv").unwrap().column("c").unwrap();
    assert_eq!(col.data_type, DataType::Text);
    assert_eq!(
        merged.conflicts(),
        vec![SchemaConflict::ColumnTypeConflict {
            keyspace: "ks".into(),
            table: "kv".into(),
            column: "c".into(),
            winner: DataType::Text,
            losers: vec![DataType::Int],
        }]
    );
}

#[test]
fn a_drop_wins_over_a_concurrent_alter() {
    let base = sample();
    let run = |s: &Schema, ms, text: &str| {
        let stmt = parse_statement(text).unwrap();
        let change = s
            .change_for(&stmt, Some("ks"), 9, Timestamp::from_millis(ms))
            .unwrap()
            .unwrap();
        s.apply(&change).unwrap()
    };
    // The ALTER is later than the DROP, and still the table stays dropped.
    let dropped = run(&base, 1_000, "DROP TABLE kv");
    let altered = run(&base, 2_000, "ALTER TABLE kv ADD later int");
    for merged in [
        dropped.merge(&altered).unwrap(),
        altered.merge(&dropped).unwrap(),
    ] {
        assert!(merged.get_table("ks", "kv").is_none());
        assert!(merged.get_table("ks", "readings").is_some());
    }
    // Dropping a keyspace drops its tables, even those created
    // concurrently before the drop.
    let ks_dropped = run(&base, 3_000, "DROP KEYSPACE ks");
    let created = run(&base, 2_500, "CREATE TABLE fresh (k int PRIMARY KEY)");
    let merged = ks_dropped.merge(&created).unwrap();
    assert!(merged.keyspace("ks").is_none());
    assert_eq!(merged.tables("ks").count(), 0);
    // Created again later: empty, the old tables do not come back.
    let again = run(
        &merged,
        4_000,
        "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
    );
    assert!(again.keyspace("ks").is_some());
    assert_eq!(again.tables("ks").count(), 0);
}

#[test]
fn concurrent_alters_of_different_options_both_stay() {
    let base = sample();
    let run = |ms, text: &str| {
        let stmt = parse_statement(text).unwrap();
        let change = base
            .change_for(&stmt, Some("ks"), 9, Timestamp::from_millis(ms))
            .unwrap()
            .unwrap();
        base.apply(&change).unwrap()
    };
    let ttl = run(1_000, "ALTER TABLE kv WITH default_time_to_live = 30");
    let comment = run(1_001, "ALTER TABLE kv WITH comment = 'hi'");
    let rf = run(
        999,
        "ALTER KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 2}",
    );
    let merged = ttl.merge(&comment).unwrap().merge(&rf).unwrap();
    let kv = merged.get_table("ks", "kv").unwrap();
    assert_eq!((kv.default_time_to_live, kv.comment.as_str()), (30, "hi"));
    let ks = merged.keyspace("ks").unwrap();
    assert_eq!(ks.replication, Replication::Simple { rf: 2 });
    assert!(ks.sloppy_quorum, "settings not altered keep their values");
}

#[test]
fn a_grace_period_at_or_below_the_hint_window_is_short() {
    let s = apply(&sample(), "ALTER TABLE kv WITH gc_grace_seconds = 7200", 0);
    let kv = s.get_table("ks", "kv").unwrap();
    let hours = |h: u64| Duration::from_secs(h * 3600);
    assert!(kv.short_gc_grace(hours(1)).is_none());
    let at = kv.short_gc_grace(hours(2)).expect("equal to the window");
    assert_eq!((at.gc_grace_seconds, at.hint_window), (7200, hours(2)));
    assert_eq!(at.hint_window_hours_below_grace(), Some(1));
    let text = at.to_string();
    assert!(
        text.starts_with("Table ks.kv has gc_grace_seconds = 7200, at or below this node's hint window of 7200 s (2 h)"),
        "{text}"
    );
    assert!(text.contains("Raise gc_grace_seconds above 7200"), "{text}");
    assert!(text.contains("to at most 1 h on every node."), "{text}");
    // A window with a fraction of a second: whole seconds above it.
    let odd = kv
        .short_gc_grace(Duration::from_millis(7_200_500))
        .expect("below the window");
    assert!(odd.to_string().contains("window of 7200.500 s:"), "{odd}");
    assert!(odd.to_string().contains("above 7200,"), "{odd}");
    // One hour or less: no hint window is below it.
    let s = apply(&s, "ALTER TABLE kv WITH gc_grace_seconds = 3600", 0);
    let short = s
        .get_table("ks", "kv")
        .unwrap()
        .short_gc_grace(hours(3))
        .unwrap();
    assert_eq!(short.hint_window_hours_below_grace(), None);
    assert!(short.to_string().contains("cannot be below 1 h"), "{short}");
    // Every short table of the schema; `readings` keeps the default.
    assert_eq!(s.short_gc_grace(hours(3)), vec![short]);
    assert_eq!(s.short_gc_grace(hours(240)).len(), 2);
}

#[test]
fn a_grace_period_at_or_below_the_repair_interval_is_warned_about() {
    let s = apply(&sample(), "ALTER TABLE kv WITH gc_grace_seconds = 86400", 0);
    let kv = s.get_table("ks", "kv").unwrap();
    let hours = |h: u64| Duration::from_secs(h * 3600);
    assert!(kv.gc_grace_within_repair(hours(23)).is_none());
    let at = kv
        .gc_grace_within_repair(hours(24))
        .expect("equal to the interval");
    assert_eq!(
        (at.gc_grace_seconds, at.repair_interval),
        (86_400, hours(24))
    );
    let text = at.to_string();
    assert!(
        text.starts_with(
            "Table ks.kv has gc_grace_seconds = 86400, at or below this node's automatic repair \
             interval of 86400 s (24 h)"
        ),
        "{text}"
    );
    assert!(
        text.contains("Raise gc_grace_seconds well above 86400"),
        "{text}"
    );
    assert!(text.contains("--auto-repair-interval-secs"), "{text}");
    // The other table keeps the default of ten days.
    assert_eq!(s.gc_grace_within_repair(hours(24)), vec![at]);
    assert_eq!(s.gc_grace_within_repair(hours(240)).len(), 2);
}
