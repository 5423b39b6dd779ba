//! The schema as a mergeable state: a join-semilattice of keyspaces,
//! tables and columns, each with the HLC timestamps of the changes that
//! made it, and tombstones for drops.
//!
//! Every node holds one [`SchemaState`]; nodes exchange whole states and
//! [`SchemaState::join`] them. The join is commutative, associative and
//! idempotent, so any order of exchanges gives every node the same state.
//! What the rest of ringdb sees (keyspaces and tables, [`View`]) is a
//! function of the state, with these rules (the order of events is the
//! HLC timestamp of the change; creations made at the same instant are
//! ordered by their ids):
//!
//! - A creation (keyspace, table, column) whose name already exists at
//!   that moment loses: the **earliest** creation wins, as if the later
//!   `CREATE` had found the name taken. Losing tables keep their state
//!   (their id names their data directory) but are never visible.
//! - A drop is a tombstone: it kills every creation of that name at or
//!   before its timestamp, and is remembered (the latest one). Dropping a
//!   keyspace kills its tables too; a table can only be live if it was
//!   created while its keyspace was.
//! - An `ALTER` changes one setting of one object (a keyspace, or a table
//!   by id) and is a last-writer-wins register per setting: concurrent
//!   changes of different settings both stay. An `ALTER` of a table id
//!   that lost or was dropped changes nothing visible: a drop always wins
//!   over a concurrent `ALTER`.
//!
//! The state is kept normalized: what a tombstone killed is pruned, so
//! the encoding of a state is canonical and its digest is equal exactly
//! when the contents are.

use super::{Compaction, Keyspace, Replication, SchemaError, Table};
use crate::model::Timestamp;
use cql_lite::analyze::{ColumnKind, ColumnSchema, TableSchema};
use cql_lite::ast::Order;
use cql_lite::DataType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// When something was created (HLC timestamp) and the id of that creation,
/// which orders creations made at the same instant.
pub(crate) type BirthKey = (Timestamp, u128);

/// Canonical bytes of a value: the tie-break between two values written at
/// the same instant.
fn bytes<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding plain data into a Vec cannot fail; if it ever did, every node
    // would get the same empty bytes, which still orders deterministically.
    bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap_or_default()
}

/// The lattice operation: `self` becomes the least upper bound of itself
/// and `other`.
pub(crate) trait Join {
    /// Joins `other` into `self`.
    fn join(&mut self, other: &Self);
}

/// A last-writer-wins register: the value with the greatest timestamp, and
/// at equal timestamps the greatest canonical bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Lww<T> {
    /// When the value was written.
    pub(crate) at: Timestamp,
    /// The value.
    pub(crate) value: T,
}

impl<T> Lww<T> {
    pub(crate) fn new(at: Timestamp, value: T) -> Lww<T> {
        Lww { at, value }
    }
}

impl<T: Serialize + Clone> Join for Lww<T> {
    fn join(&mut self, other: &Self) {
        let wins = match other.at.cmp(&self.at) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => bytes(&other.value) > bytes(&self.value),
        };
        if wins {
            *self = other.clone();
        }
    }
}

impl<T: Join + Clone> Join for Option<T> {
    fn join(&mut self, other: &Self) {
        match (self.as_mut(), other) {
            (_, None) => {}
            (None, Some(o)) => *self = Some(o.clone()),
            (Some(s), Some(o)) => s.join(o),
        }
    }
}

impl Join for Timestamp {
    fn join(&mut self, other: &Self) {
        *self = (*self).max(*other);
    }
}

impl Join for DataType {
    fn join(&mut self, other: &Self) {
        // Two types under one creation id only come from a damaged peer;
        // keep the result deterministic anyway.
        if bytes(other) > bytes(self) {
            *self = *other;
        }
    }
}

fn join_map<K: Ord + Clone, V: Join + Clone>(ours: &mut BTreeMap<K, V>, theirs: &BTreeMap<K, V>) {
    for (k, v) in theirs {
        match ours.get_mut(k) {
            Some(mine) => mine.join(v),
            None => {
                ours.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Whether `at` survives a tombstone at `dropped`.
fn after(at: Timestamp, dropped: Option<Timestamp>) -> bool {
    dropped.is_none_or(|d| at > d)
}

/// A keyspace's settings as one `CREATE KEYSPACE` wrote them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KeyspaceSettings {
    pub(crate) replication: Replication,
    pub(crate) durable_writes: bool,
    pub(crate) sloppy_quorum: bool,
}

impl Join for KeyspaceSettings {
    fn join(&mut self, other: &Self) {
        if bytes(other) > bytes(self) {
            *self = other.clone();
        }
    }
}

/// Every keyspace ever created, by name, with its tombstone.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct SchemaState {
    pub(crate) keyspaces: BTreeMap<String, KeyspaceState>,
    /// The greatest timestamp of any change ever recorded or merged (a
    /// max register: pruning never lowers it, so versions only grow).
    pub(crate) latest: Timestamp,
}

/// One keyspace name: its creations after the last drop, the settings
/// changed by `ALTER KEYSPACE`, and its tables.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct KeyspaceState {
    /// Creations not killed by a drop, with the settings each wrote.
    pub(crate) births: BTreeMap<BirthKey, KeyspaceSettings>,
    /// The latest `DROP KEYSPACE`.
    pub(crate) dropped: Option<Timestamp>,
    /// The latest `ALTER KEYSPACE` of each setting.
    pub(crate) replication: Option<Lww<Replication>>,
    /// See `replication`.
    pub(crate) durable_writes: Option<Lww<bool>>,
    /// See `replication`.
    pub(crate) sloppy_quorum: Option<Lww<bool>>,
    /// Its tables, by name.
    pub(crate) tables: BTreeMap<String, TableSlot>,
}

/// One table name: its creations (each a table with its own id) after the
/// last drop of the name or of the keyspace.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct TableSlot {
    /// Creations by (timestamp, table id).
    pub(crate) births: BTreeMap<BirthKey, TableState>,
    /// The latest `DROP TABLE` of this name.
    pub(crate) dropped: Option<Timestamp>,
}

/// One table (one id): its key, columns and options.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TableState {
    /// What `CREATE TABLE` fixed for good.
    pub(crate) shape: Lww<TableShape>,
    /// Regular columns by name.
    pub(crate) columns: BTreeMap<String, ColumnSlot>,
    /// `default_time_to_live`.
    pub(crate) default_time_to_live: Lww<u32>,
    /// `gc_grace_seconds`.
    pub(crate) gc_grace_seconds: Lww<u32>,
    /// `compaction`.
    pub(crate) compaction: Lww<Compaction>,
    /// `comment`.
    pub(crate) comment: Lww<String>,
}

/// The part of a table that never changes: key columns and the column
/// order of `CREATE TABLE`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TableShape {
    /// Partition key and clustering columns with their types and kinds.
    pub(crate) key_columns: Vec<ColumnSchema>,
    /// Partition key column names, in key order.
    pub(crate) partition_key: Vec<String>,
    /// Clustering column names with their orders.
    pub(crate) clustering: Vec<(String, Order)>,
    /// Every column name in the order `CREATE TABLE` listed them.
    pub(crate) order: Vec<String>,
}

/// One regular column name of a table: its additions after its last drop.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ColumnSlot {
    /// Additions by (timestamp, id of the change), with the type each gave.
    pub(crate) births: BTreeMap<BirthKey, DataType>,
    /// The latest `ALTER TABLE DROP` of this column.
    pub(crate) dropped: Option<Timestamp>,
}

impl Join for ColumnSlot {
    fn join(&mut self, other: &Self) {
        join_map(&mut self.births, &other.births);
        self.dropped.join(&other.dropped);
    }
}

impl Join for TableState {
    fn join(&mut self, other: &Self) {
        self.shape.join(&other.shape);
        join_map(&mut self.columns, &other.columns);
        self.default_time_to_live.join(&other.default_time_to_live);
        self.gc_grace_seconds.join(&other.gc_grace_seconds);
        self.compaction.join(&other.compaction);
        self.comment.join(&other.comment);
    }
}

impl Join for TableSlot {
    fn join(&mut self, other: &Self) {
        join_map(&mut self.births, &other.births);
        self.dropped.join(&other.dropped);
    }
}

impl Join for KeyspaceState {
    fn join(&mut self, other: &Self) {
        join_map(&mut self.births, &other.births);
        self.dropped.join(&other.dropped);
        self.replication.join(&other.replication);
        self.durable_writes.join(&other.durable_writes);
        self.sloppy_quorum.join(&other.sloppy_quorum);
        join_map(&mut self.tables, &other.tables);
    }
}

impl TableState {
    /// The state of a table as `CREATE TABLE` made it at `at`.
    pub(crate) fn created(table: &Table, at: Timestamp) -> TableState {
        let key = (at, table.id);
        let columns = table
            .def
            .columns
            .iter()
            .filter(|c| c.kind == ColumnKind::Regular)
            .map(|c| {
                let slot = ColumnSlot {
                    births: BTreeMap::from([(key, c.data_type)]),
                    dropped: None,
                };
                (c.name.clone(), slot)
            })
            .collect();
        TableState {
            shape: Lww::new(
                at,
                TableShape {
                    key_columns: table
                        .def
                        .columns
                        .iter()
                        .filter(|c| c.kind != ColumnKind::Regular)
                        .cloned()
                        .collect(),
                    partition_key: table.def.partition_key.clone(),
                    clustering: table.def.clustering.clone(),
                    order: table.def.columns.iter().map(|c| c.name.clone()).collect(),
                },
            ),
            columns,
            default_time_to_live: Lww::new(at, table.default_time_to_live),
            gc_grace_seconds: Lww::new(at, table.gc_grace_seconds),
            compaction: Lww::new(at, table.compaction.clone()),
            comment: Lww::new(at, table.comment.clone()),
        }
    }

    /// The table this state describes, as keyspace `keyspace`, name `name`
    /// and id `id` (every column addition that survived, the earliest of
    /// each name winning).
    pub(crate) fn table(&self, keyspace: &str, name: &str, id: u128) -> Table {
        let shape = &self.shape.value;
        let mut regular: Vec<(usize, Timestamp, &str, DataType)> = self
            .columns
            .iter()
            .filter_map(|(col, slot)| {
                let (&(born, _), &ty) = slot.births.iter().next()?;
                let pos = shape
                    .order
                    .iter()
                    .position(|o| o == col)
                    .unwrap_or(usize::MAX);
                Some((pos, born, col.as_str(), ty))
            })
            .collect();
        // CREATE order first, then additions in the order they were made.
        regular.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
        let mut columns: Vec<(usize, ColumnSchema)> = shape
            .key_columns
            .iter()
            .map(|c| {
                let pos = shape
                    .order
                    .iter()
                    .position(|o| *o == c.name)
                    .unwrap_or(usize::MAX);
                (pos, c.clone())
            })
            .collect();
        columns.extend(regular.into_iter().map(|(pos, _, col, ty)| {
            (
                pos,
                ColumnSchema {
                    name: col.to_string(),
                    data_type: ty,
                    kind: ColumnKind::Regular,
                },
            )
        }));
        // Stable: key columns missing from the order keep their place
        // before added columns.
        columns.sort_by_key(|(pos, _)| *pos);
        Table {
            id,
            def: TableSchema {
                keyspace: keyspace.to_string(),
                name: name.to_string(),
                columns: columns.into_iter().map(|(_, c)| c).collect(),
                partition_key: shape.partition_key.clone(),
                clustering: shape.clustering.clone(),
            },
            default_time_to_live: self.default_time_to_live.value,
            gc_grace_seconds: self.gc_grace_seconds.value,
            compaction: self.compaction.value.clone(),
            comment: self.comment.value.clone(),
            dropped_columns: self
                .columns
                .iter()
                .filter_map(|(c, slot)| slot.dropped.map(|d| (c.clone(), d)))
                .collect(),
        }
    }

    fn latest(&self) -> Timestamp {
        let mut t = self
            .shape
            .at
            .max(self.default_time_to_live.at)
            .max(self.gc_grace_seconds.at)
            .max(self.compaction.at)
            .max(self.comment.at);
        for slot in self.columns.values() {
            t = t.max(slot.dropped.unwrap_or(Timestamp::ZERO));
            if let Some((&(born, _), _)) = slot.births.iter().next_back() {
                t = t.max(born);
            }
        }
        t
    }
}

/// What two concurrent changes left behind, resolved by the rules above
/// (logged as a warning when a merge first produces it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaConflict {
    /// The same keyspace was created more than once concurrently with
    /// different settings: the earliest creation's settings are used.
    KeyspaceCreatedConcurrently {
        /// The keyspace.
        keyspace: String,
    },
    /// The same table name was created more than once concurrently: the
    /// earliest creation (`winner`) is the table; the others never become
    /// visible, and what was written to them stays in their own data
    /// directories (`<data>/data/<keyspace>/<table>-<id>`), unread.
    TableCreatedConcurrently {
        /// The keyspace.
        keyspace: String,
        /// The table name.
        table: String,
        /// The id of the table that is used.
        winner: u128,
        /// The ids of the tables that are not.
        losers: Vec<u128>,
    },
    /// The same column was added more than once concurrently with different
    /// types: the earliest addition's type is used.
    ColumnTypeConflict {
        /// The keyspace.
        keyspace: String,
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// The type that is used.
        winner: DataType,
        /// The types that are not.
        losers: Vec<DataType>,
    },
}

impl std::fmt::Display for SchemaConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SchemaConflict::KeyspaceCreatedConcurrently { keyspace } => write!(
                f,
                "keyspace {keyspace} was created concurrently with different settings; \
                 the earliest creation's settings are used"
            ),
            SchemaConflict::TableCreatedConcurrently {
                keyspace,
                table,
                winner,
                losers,
            } => {
                let losers: Vec<String> = losers.iter().map(|l| format!("{l:032x}")).collect();
                write!(
                    f,
                    "table {keyspace}.{table} was created concurrently; table id {winner:032x} \
                     (the earliest) is used, data written to id {} is not read (its files stay \
                     under data/{keyspace}/{table}-<id>)",
                    losers.join(", ")
                )
            }
            SchemaConflict::ColumnTypeConflict {
                keyspace,
                table,
                column,
                winner,
                losers,
            } => {
                let losers: Vec<String> = losers.iter().map(|l| l.to_string()).collect();
                write!(
                    f,
                    "column {column} of {keyspace}.{table} was added concurrently as {winner} \
                     (the earliest, used) and as {}",
                    losers.join(", ")
                )
            }
        }
    }
}

/// What ringdb reads: the live keyspaces and tables.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct View {
    pub(crate) keyspaces: BTreeMap<String, Keyspace>,
    pub(crate) tables: BTreeMap<String, BTreeMap<String, Table>>,
}

impl KeyspaceState {
    /// The earliest live creation: from then on the keyspace exists.
    fn winner(&self) -> Option<(&BirthKey, &KeyspaceSettings)> {
        self.births.iter().next()
    }

    /// The keyspace as it is now, if it exists.
    fn keyspace(&self, name: &str) -> Option<Keyspace> {
        let (&(born, _), settings) = self.winner()?;
        let pick = |reg: &Option<Lww<bool>>, base: bool| {
            reg.as_ref()
                .filter(|r| r.at > born)
                .map_or(base, |r| r.value)
        };
        Some(Keyspace {
            name: name.to_string(),
            replication: self
                .replication
                .as_ref()
                .filter(|r| r.at > born)
                .map_or_else(|| settings.replication.clone(), |r| r.value.clone()),
            durable_writes: pick(&self.durable_writes, settings.durable_writes),
            sloppy_quorum: pick(&self.sloppy_quorum, settings.sloppy_quorum),
        })
    }

    /// The live creations of a table slot: after every tombstone and not
    /// before the keyspace existed.
    fn live_tables<'a>(
        &self,
        slot: &'a TableSlot,
    ) -> impl Iterator<Item = (&'a BirthKey, &'a TableState)> {
        let since = self.winner().map(|(&(born, _), _)| born);
        slot.births
            .iter()
            .filter(move |((at, _), _)| since.is_some_and(|s| *at >= s))
    }
}

impl SchemaState {
    /// Joins `other` into `self` and normalizes.
    pub(crate) fn join_with(&mut self, other: &SchemaState) {
        join_map(&mut self.keyspaces, &other.keyspaces);
        self.latest = self.latest.max(other.latest);
        self.normalize();
    }

    /// Prunes what tombstones killed and drops empty entries, so equal
    /// contents have equal encodings. Idempotent; thresholds only grow
    /// under [`Join`], so pruning early never changes a later join.
    pub(crate) fn normalize(&mut self) {
        for ks in self.keyspaces.values_mut() {
            let ks_dropped = ks.dropped;
            ks.births.retain(|(at, _), _| after(*at, ks_dropped));
            if ks
                .replication
                .as_ref()
                .is_some_and(|r| !after(r.at, ks_dropped))
            {
                ks.replication = None;
            }
            if ks
                .durable_writes
                .as_ref()
                .is_some_and(|r| !after(r.at, ks_dropped))
            {
                ks.durable_writes = None;
            }
            if ks
                .sloppy_quorum
                .as_ref()
                .is_some_and(|r| !after(r.at, ks_dropped))
            {
                ks.sloppy_quorum = None;
            }
            for slot in ks.tables.values_mut() {
                let floor = slot.dropped.max(ks_dropped);
                slot.births.retain(|(at, _), _| after(*at, floor));
                for table in slot.births.values_mut() {
                    for col in table.columns.values_mut() {
                        let dropped = col.dropped;
                        col.births.retain(|(at, _), _| after(*at, dropped));
                    }
                    table
                        .columns
                        .retain(|_, c| !c.births.is_empty() || c.dropped.is_some());
                }
            }
            ks.tables
                .retain(|_, s| !s.births.is_empty() || s.dropped.is_some());
        }
        self.keyspaces.retain(|_, k| {
            !k.births.is_empty()
                || k.dropped.is_some()
                || !k.tables.is_empty()
                || k.replication.is_some()
                || k.durable_writes.is_some()
                || k.sloppy_quorum.is_some()
        });
        self.latest = self.latest.max(self.latest_held());
    }

    /// The live keyspaces and tables.
    pub(crate) fn view(&self) -> View {
        let mut view = View::default();
        for (name, ks) in &self.keyspaces {
            let Some(keyspace) = ks.keyspace(name) else {
                continue;
            };
            view.keyspaces.insert(name.clone(), keyspace);
            let mut tables = BTreeMap::new();
            for (tname, slot) in &ks.tables {
                if let Some((&(_, id), state)) = ks.live_tables(slot).next() {
                    tables.insert(tname.clone(), state.table(name, tname, id));
                }
            }
            if !tables.is_empty() {
                view.tables.insert(name.clone(), tables);
            }
        }
        view
    }

    /// Every conflict the rules resolved, among live objects.
    pub(crate) fn conflicts(&self) -> Vec<SchemaConflict> {
        let mut out = Vec::new();
        for (name, ks) in &self.keyspaces {
            let Some((_, first)) = ks.winner() else {
                continue;
            };
            if ks.births.values().any(|s| bytes(s) != bytes(first)) {
                out.push(SchemaConflict::KeyspaceCreatedConcurrently {
                    keyspace: name.clone(),
                });
            }
            for (tname, slot) in &ks.tables {
                let mut live = ks.live_tables(slot);
                let Some((&(_, winner), state)) = live.next() else {
                    continue;
                };
                let losers: Vec<u128> = live.map(|((_, id), _)| *id).collect();
                if !losers.is_empty() {
                    out.push(SchemaConflict::TableCreatedConcurrently {
                        keyspace: name.clone(),
                        table: tname.clone(),
                        winner,
                        losers,
                    });
                }
                for (col, cslot) in &state.columns {
                    let mut types = cslot.births.values();
                    let Some(&first) = types.next() else {
                        continue;
                    };
                    let mut losers: Vec<DataType> = Vec::new();
                    for &t in types {
                        if t != first && !losers.contains(&t) {
                            losers.push(t);
                        }
                    }
                    if !losers.is_empty() {
                        out.push(SchemaConflict::ColumnTypeConflict {
                            keyspace: name.clone(),
                            table: tname.clone(),
                            column: col.clone(),
                            winner: first,
                            losers,
                        });
                    }
                }
            }
        }
        out
    }

    /// The greatest timestamp of any change the state holds now.
    fn latest_held(&self) -> Timestamp {
        let mut t = Timestamp::ZERO;
        for ks in self.keyspaces.values() {
            t = t.max(ks.dropped.unwrap_or(Timestamp::ZERO));
            if let Some((&(born, _), _)) = ks.births.iter().next_back() {
                t = t.max(born);
            }
            for reg in [&ks.durable_writes, &ks.sloppy_quorum]
                .into_iter()
                .flatten()
            {
                t = t.max(reg.at);
            }
            if let Some(r) = &ks.replication {
                t = t.max(r.at);
            }
            for slot in ks.tables.values() {
                t = t.max(slot.dropped.unwrap_or(Timestamp::ZERO));
                for ((born, _), table) in &slot.births {
                    t = t.max(*born).max(table.latest());
                }
            }
        }
        t
    }

    /// Checks every table the state holds (live or not): a state from a
    /// peer or a file must describe only valid tables.
    pub(crate) fn validate(&self) -> Result<(), SchemaError> {
        for (name, ks) in &self.keyspaces {
            for (tname, slot) in &ks.tables {
                for (&(_, id), state) in &slot.births {
                    let table = state.table(name, tname, id);
                    if let Some(c) = state
                        .columns
                        .keys()
                        .find(|c| state.shape.value.key_columns.iter().any(|k| &k.name == *c))
                    {
                        return Err(SchemaError::Invalid(format!(
                            "table {name}.{tname} has a regular column {c} named like a key column"
                        )));
                    }
                    table.validate()?;
                }
            }
        }
        Ok(())
    }

    /// The table state of `keyspace.table` with id `id`, wherever it lies.
    pub(crate) fn table_mut(
        &mut self,
        keyspace: &str,
        table: &str,
        id: u128,
    ) -> impl Iterator<Item = &mut TableState> {
        self.keyspaces
            .get_mut(keyspace)
            .and_then(|k| k.tables.get_mut(table))
            .into_iter()
            .flat_map(move |slot| {
                slot.births
                    .iter_mut()
                    .filter(move |((_, i), _)| *i == id)
                    .map(|(_, s)| s)
            })
    }
}
