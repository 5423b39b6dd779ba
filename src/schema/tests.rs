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
    assert_eq!(s.version, 3);
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
    assert_eq!(altered.version, 4);
    assert_ne!(altered.digest(), s.digest());
    let dropped = apply(&altered, "ALTER TABLE kv DROP extra", 0);
    let kv = dropped.get_table("ks", "kv").unwrap();
    assert!(kv.column("extra").is_none());
    assert_eq!(
        kv.dropped_columns.get("extra"),
        Some(&Timestamp::from_millis(5))
    );
    // Same content, different version: same digest.
    let mut same = s.clone();
    same.version = 99;
    assert_eq!(same.digest(), s.digest());
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
    assert_eq!(store.current().version, 0);
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
    store.replace_if_newer(s.clone()).unwrap();
    drop(store);
    let reopened = SchemaStore::open(dir.path()).unwrap();
    assert_eq!(*reopened.current(), s);

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
            bytes[..8].copy_from_slice(b"RNGSCHM2");
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
