//! The mergeable schema, tested over random DDL histories.
//!
//! - Merge laws: over schemas of nodes that made random concurrent DDL
//!   and exchanged some of it, `merge` is commutative, associative and
//!   idempotent, and survives the schema file's encoding.
//! - Model: random DDL on N simulated nodes (each a `SchemaStore`, with a
//!   skewed clock) with random exchanges converges, once every node has
//!   pulled from every other, to one schema: the one a single store gets by
//!   recording every change in timestamp order, whose keyspaces and tables
//!   are those of a plain sequential model of the rules (changes in
//!   timestamp order; a CREATE or ADD of a name that exists does nothing;
//!   an ALTER of something gone does nothing; a DROP always takes effect).

use cql_lite::analyze::ColumnKind;
use cql_lite::{parse_statement, DataType};
use proptest::prelude::*;
use ringdb::model::Timestamp;
use ringdb::schema::{Keyspace, Schema, SchemaChange, SchemaStore, Table, TableAlteration};
use std::collections::{BTreeMap, BTreeSet};

const TYPES: [&str; 4] = ["int", "text", "bigint", "boolean"];

/// One DDL statement, by indexes into small pools of names so that
/// statements collide often.
#[derive(Debug, Clone)]
enum Ddl {
    CreateKeyspace {
        ks: u8,
        rf: u8,
    },
    AlterKeyspace {
        ks: u8,
        rf: Option<u8>,
        sloppy: Option<bool>,
    },
    DropKeyspace {
        ks: u8,
    },
    CreateTable {
        ks: u8,
        t: u8,
        cols: Vec<(u8, u8)>,
        clustered: bool,
    },
    AddColumns {
        ks: u8,
        t: u8,
        cols: Vec<(u8, u8)>,
    },
    DropColumns {
        ks: u8,
        t: u8,
        cols: Vec<u8>,
    },
    SetOptions {
        ks: u8,
        t: u8,
        ttl: Option<u16>,
        comment: Option<u8>,
    },
    DropTable {
        ks: u8,
        t: u8,
    },
}

impl Ddl {
    fn text(&self) -> String {
        let col = |(c, ty): &(u8, u8)| format!("c{c} {}", TYPES[*ty as usize % TYPES.len()]);
        match self {
            Ddl::CreateKeyspace { ks, rf } => format!(
                "CREATE KEYSPACE k{ks} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': {rf}}}"
            ),
            Ddl::AlterKeyspace { ks, rf, sloppy } => {
                let mut parts = Vec::new();
                if let Some(rf) = rf {
                    parts.push(format!(
                        "replication = {{'class': 'SimpleStrategy', 'replication_factor': {rf}}}"
                    ));
                }
                if let Some(s) = sloppy {
                    parts.push(format!("sloppy_quorum = {s}"));
                }
                if parts.is_empty() {
                    parts.push("durable_writes = true".into());
                }
                format!("ALTER KEYSPACE k{ks} WITH {}", parts.join(" AND "))
            }
            Ddl::DropKeyspace { ks } => format!("DROP KEYSPACE k{ks}"),
            Ddl::CreateTable {
                ks,
                t,
                cols,
                clustered,
            } => {
                let mut defs = vec!["pk int".to_string()];
                if *clustered {
                    defs.push("ck text".into());
                }
                let mut seen = BTreeSet::new();
                defs.extend(cols.iter().filter(|(c, _)| seen.insert(*c)).map(col));
                let key = if *clustered { "pk, ck" } else { "pk" };
                format!(
                    "CREATE TABLE k{ks}.t{t} ({}, PRIMARY KEY ({key}))",
                    defs.join(", ")
                )
            }
            Ddl::AddColumns { ks, t, cols } => {
                let mut seen = BTreeSet::new();
                let defs: Vec<String> = cols.iter().filter(|(c, _)| seen.insert(*c)).map(col).collect();
                format!("ALTER TABLE k{ks}.t{t} ADD ({})", defs.join(", "))
            }
            Ddl::DropColumns { ks, t, cols } => {
                let names: BTreeSet<String> = cols.iter().map(|c| format!("c{c}")).collect();
                let names: Vec<String> = names.into_iter().collect();
                format!("ALTER TABLE k{ks}.t{t} DROP ({})", names.join(", "))
            }
            Ddl::SetOptions {
                ks,
                t,
                ttl,
                comment,
            } => {
                let mut parts = Vec::new();
                if let Some(ttl) = ttl {
                    parts.push(format!("default_time_to_live = {ttl}"));
                }
                if let Some(c) = comment {
                    parts.push(format!("comment = 'note {c}'"));
                }
                if parts.is_empty() {
                    parts.push("gc_grace_seconds = 60".into());
                }
                format!("ALTER TABLE k{ks}.t{t} WITH {}", parts.join(" AND "))
            }
            Ddl::DropTable { ks, t } => format!("DROP TABLE k{ks}.t{t}"),
        }
    }
}

fn ddl() -> impl Strategy<Value = Ddl> {
    let ks = 0u8..2;
    let t = 0u8..3;
    let col = (0u8..4, 0u8..4);
    prop_oneof![
        3 => (ks.clone(), 1u8..4).prop_map(|(ks, rf)| Ddl::CreateKeyspace { ks, rf }),
        1 => (ks.clone(), proptest::option::of(1u8..4), proptest::option::of(any::<bool>()))
            .prop_map(|(ks, rf, sloppy)| Ddl::AlterKeyspace { ks, rf, sloppy }),
        1 => ks.clone().prop_map(|ks| Ddl::DropKeyspace { ks }),
        4 => (ks.clone(), t.clone(), proptest::collection::vec(col.clone(), 0..3), any::<bool>())
            .prop_map(|(ks, t, cols, clustered)| Ddl::CreateTable { ks, t, cols, clustered }),
        4 => (ks.clone(), t.clone(), proptest::collection::vec(col, 1..3))
            .prop_map(|(ks, t, cols)| Ddl::AddColumns { ks, t, cols }),
        3 => (ks.clone(), t.clone(), proptest::collection::vec(0u8..4, 1..3))
            .prop_map(|(ks, t, cols)| Ddl::DropColumns { ks, t, cols }),
        2 => (ks.clone(), t.clone(), proptest::option::of(0u16..100), proptest::option::of(0u8..3))
            .prop_map(|(ks, t, ttl, comment)| Ddl::SetOptions { ks, t, ttl, comment }),
        1 => (ks, t).prop_map(|(ks, t)| Ddl::DropTable { ks, t }),
    ]
}

/// One step of a history: node `node` runs a statement, or pulls the
/// schema of node `from` and merges it.
#[derive(Debug, Clone)]
enum Step {
    Run { node: usize, ddl: Ddl },
    Pull { node: usize, from: usize },
}

const NODES: usize = 3;

fn history() -> impl Strategy<Value = (Vec<u64>, Vec<Step>, Vec<(usize, usize)>)> {
    let step = prop_oneof![
        3 => (0..NODES, ddl()).prop_map(|(node, ddl)| Step::Run { node, ddl }),
        1 => (0..NODES, 0..NODES).prop_map(|(node, from)| Step::Pull { node, from }),
    ];
    (
        // Clock offsets in milliseconds: nodes' clocks disagree.
        proptest::collection::vec(0u64..40, NODES),
        proptest::collection::vec(step, 1..80),
        // A random exchange order before the final full exchange.
        proptest::collection::vec((0..NODES, 0..NODES), 0..6),
    )
}

/// Runs a shared prologue, then the steps; returns every change made, each
/// stamped with a timestamp no other change has.
fn run(skews: &[u64], steps: &[Step], stores: &[SchemaStore]) -> Vec<SchemaChange> {
    let mut used = BTreeSet::new();
    let mut changes = Vec::new();
    // A shared start, so that later statements on different nodes often
    // meet on the same objects: two keyspaces and two tables made on node
    // 0, which every node then pulls.
    let mut prologue: Vec<Step> = [
        Ddl::CreateKeyspace { ks: 0, rf: 1 },
        Ddl::CreateKeyspace { ks: 1, rf: 2 },
        Ddl::CreateTable {
            ks: 0,
            t: 0,
            cols: vec![(0, 0)],
            clustered: false,
        },
        Ddl::CreateTable {
            ks: 1,
            t: 1,
            cols: vec![(1, 1)],
            clustered: true,
        },
    ]
    .into_iter()
    .map(|ddl| Step::Run { node: 0, ddl })
    .collect();
    prologue.extend((1..NODES).map(|node| Step::Pull { node, from: 0 }));
    for (i, step) in prologue.iter().chain(steps).enumerate() {
        match step {
            Step::Pull { node, from } => {
                let theirs = stores[*from].current();
                stores[*node].merge(&theirs).expect("merge");
            }
            Step::Run { node, ddl } => {
                let stmt =
                    parse_statement(&ddl.text()).unwrap_or_else(|e| panic!("{}: {e}", ddl.text()));
                let schema = stores[*node].current();
                let mut now = Timestamp(
                    Timestamp::from_millis(1_000 + i as u64 * 10 + skews[*node]).0 + *node as u64,
                );
                let id = (i as u128) << 8 | *node as u128;
                let change = loop {
                    match schema.change_for(&stmt, None, id, now) {
                        Ok(Some(c)) if used.contains(&c.at()) => now = Timestamp(c.at().0 + 1),
                        Ok(c) => break c,
                        // A statement that does not fit this node's schema
                        // fails, as it would for a client.
                        Err(_) => break None,
                    }
                };
                if let Some(change) = change {
                    assert!(change.at() > schema.latest(), "stamped after what it saw");
                    used.insert(change.at());
                    stores[*node]
                        .apply(&change)
                        .expect("a change made here applies");
                    changes.push(change);
                }
            }
        }
    }
    changes
}

fn stores() -> Vec<SchemaStore> {
    (0..NODES).map(|_| SchemaStore::in_memory()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn merge_is_commutative_associative_and_idempotent((skews, steps, _) in history()) {
        let nodes = stores();
        run(&skews, &steps, &nodes);
        let [a, b, c] = [0, 1, 2].map(|i| (*nodes[i].current()).clone());
        let m = |x: &Schema, y: &Schema| x.merge(y).expect("merge");
        prop_assert_eq!(m(&a, &b), m(&b, &a));
        prop_assert_eq!(m(&m(&a, &b), &c), m(&a, &m(&b, &c)));
        prop_assert_eq!(m(&a, &a), a.clone());
        let abc = m(&m(&a, &b), &c);
        prop_assert_eq!(m(&abc, &b), abc.clone(), "a merge holds what it merged");
        prop_assert!(abc.version() >= a.version().max(b.version()).max(c.version()));
        // Equal contents, equal fingerprints; the encoding keeps them.
        prop_assert_eq!(m(&a, &b).fingerprint(), m(&b, &a).fingerprint());
        let back: Schema = decode(&encode(&abc));
        prop_assert_eq!(back.digest(), abc.digest());
        prop_assert_eq!(&back, &abc);
    }

    #[test]
    fn concurrent_ddl_converges_to_the_sequential_model((skews, steps, order) in history()) {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = stores();
        nodes[0] = SchemaStore::open(dir.path()).unwrap();
        let mut changes = run(&skews, &steps, &nodes);
        for (node, from) in order {
            nodes[node].merge(&nodes[from].current()).unwrap();
        }
        // Every node pulls from every other, twice round.
        for _ in 0..2 {
            for node in 0..NODES {
                for from in 0..NODES {
                    nodes[node].merge(&nodes[from].current()).unwrap();
                }
            }
        }
        let converged = nodes[0].current();
        for n in &nodes[1..] {
            prop_assert_eq!(&*n.current(), &*converged);
        }
        prop_assert_eq!(&*SchemaStore::open(dir.path()).unwrap().current(), &*converged);

        // One store recording every change in timestamp order.
        changes.sort_by_key(|c| c.at());
        let mut one = Schema::new();
        for c in &changes {
            one = one.record(c).unwrap();
        }
        prop_assert_eq!(one.digest(), converged.digest());

        // The plain sequential model of the rules.
        let mut model = Model::default();
        for c in &changes {
            model.apply(c);
        }
        prop_assert_eq!(model.keyspaces(), keyspaces_of(&converged));
        prop_assert_eq!(model.tables(), tables_of(&converged));
        // Only the winners are visible; the state may hold losers, which
        // the conflicts name.
        for conflict in converged.conflicts() {
            prop_assert!(!conflict.to_string().is_empty());
        }
    }
}

fn encode(s: &Schema) -> Vec<u8> {
    bincode::serde::encode_to_vec(s, bincode::config::standard()).unwrap()
}

fn decode(bytes: &[u8]) -> Schema {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .unwrap()
        .0
}

/// A table as compared: id, columns in `SELECT *` order with types and
/// kinds, options, dropped columns.
type TableFacts = (
    u128,
    Vec<(String, String, bool)>,
    (u32, u32, String),
    BTreeMap<String, Timestamp>,
);

fn facts_of(t: &Table) -> TableFacts {
    (
        t.id,
        t.select_star_columns()
            .into_iter()
            .map(|c| {
                (
                    c.name.clone(),
                    c.data_type.to_string(),
                    c.kind == ColumnKind::Regular,
                )
            })
            .collect(),
        (
            t.default_time_to_live,
            t.gc_grace_seconds,
            t.comment.clone(),
        ),
        t.dropped_columns.clone(),
    )
}

fn keyspaces_of(s: &Schema) -> Vec<Keyspace> {
    s.keyspaces().cloned().collect()
}

fn tables_of(s: &Schema) -> BTreeMap<(String, String), TableFacts> {
    s.keyspaces()
        .flat_map(|k| s.tables(&k.name))
        .map(|t| {
            (
                (t.keyspace().to_string(), t.name().to_string()),
                facts_of(t),
            )
        })
        .collect()
}

/// The rules, applied one change at a time in timestamp order.
#[derive(Default)]
struct Model {
    keyspaces: BTreeMap<String, (Keyspace, BTreeMap<String, ModelTable>)>,
}

struct ModelTable {
    created: Table,
    columns: BTreeMap<String, DataType>,
    dropped: BTreeMap<String, Timestamp>,
}

impl Model {
    fn apply(&mut self, change: &SchemaChange) {
        match change {
            SchemaChange::CreateKeyspace { keyspace, .. } => {
                self.keyspaces
                    .entry(keyspace.name.clone())
                    .or_insert_with(|| (keyspace.clone(), BTreeMap::new()));
            }
            SchemaChange::AlterKeyspace {
                name,
                replication,
                durable_writes,
                sloppy_quorum,
                ..
            } => {
                if let Some((k, _)) = self.keyspaces.get_mut(name) {
                    if let Some(r) = replication {
                        k.replication = r.clone();
                    }
                    if let Some(d) = durable_writes {
                        k.durable_writes = *d;
                    }
                    if let Some(s) = sloppy_quorum {
                        k.sloppy_quorum = *s;
                    }
                }
            }
            SchemaChange::DropKeyspace { name, .. } => {
                self.keyspaces.remove(name);
            }
            SchemaChange::CreateTable { table, .. } => {
                if let Some((_, tables)) = self.keyspaces.get_mut(table.keyspace()) {
                    tables
                        .entry(table.name().to_string())
                        .or_insert_with(|| ModelTable {
                            created: table.clone(),
                            columns: table
                                .def
                                .columns
                                .iter()
                                .filter(|c| c.kind == ColumnKind::Regular)
                                .map(|c| (c.name.clone(), c.data_type))
                                .collect(),
                            dropped: BTreeMap::new(),
                        });
                }
            }
            SchemaChange::AlterTable {
                keyspace,
                table,
                id,
                alteration,
                at,
            } => {
                let Some(t) = self
                    .keyspaces
                    .get_mut(keyspace)
                    .and_then(|(_, ts)| ts.get_mut(table))
                    .filter(|t| t.created.id == *id)
                else {
                    return;
                };
                match alteration {
                    TableAlteration::AddColumns { columns, .. } => {
                        for (c, ty) in columns {
                            t.columns.entry(c.clone()).or_insert(*ty);
                        }
                    }
                    TableAlteration::DropColumns(cols) => {
                        for c in cols {
                            t.columns.remove(c);
                            let d = t.dropped.entry(c.clone()).or_insert(*at);
                            *d = (*d).max(*at);
                        }
                    }
                    TableAlteration::SetOptions(o) => {
                        let c = &mut t.created;
                        if let Some(v) = o.default_time_to_live {
                            c.default_time_to_live = v;
                        }
                        if let Some(v) = o.gc_grace_seconds {
                            c.gc_grace_seconds = v;
                        }
                        if let Some(v) = &o.comment {
                            c.comment = v.clone();
                        }
                        if let Some(v) = &o.compaction {
                            c.compaction = v.clone();
                        }
                    }
                }
            }
            SchemaChange::DropTable {
                keyspace, table, ..
            } => {
                if let Some((_, tables)) = self.keyspaces.get_mut(keyspace) {
                    tables.remove(table);
                }
            }
        }
    }

    fn keyspaces(&self) -> Vec<Keyspace> {
        self.keyspaces.values().map(|(k, _)| k.clone()).collect()
    }

    fn tables(&self) -> BTreeMap<(String, String), TableFacts> {
        let mut out = BTreeMap::new();
        for (ks, (_, tables)) in &self.keyspaces {
            for (name, t) in tables {
                let mut table = t.created.clone();
                table.def.columns.retain(|c| c.kind != ColumnKind::Regular);
                for (c, ty) in &t.columns {
                    table.def.columns.push(cql_lite::analyze::ColumnSchema {
                        name: c.clone(),
                        data_type: *ty,
                        kind: ColumnKind::Regular,
                    });
                }
                table.dropped_columns = t.dropped.clone();
                out.insert((ks.clone(), name.clone()), facts_of(&table));
            }
        }
        out
    }
}
