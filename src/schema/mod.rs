//! The schema: keyspaces and tables, merged across nodes, persisted,
//! described.
//!
//! A [`Schema`] is a mergeable value: every keyspace, table and column
//! with the HLC timestamp and id of the change that created it, the
//! settings `ALTER` changed (one last-writer-wins register each), and
//! tombstones for drops (see `state.rs` for the rules). It changes by
//! applying a [`SchemaChange`] made on this node ([`Schema::apply`]) or by
//! merging the schema of another node ([`Schema::merge`]); the merge is
//! commutative, associative and idempotent, so concurrent changes on
//! different nodes all survive and every node ends with the same schema.
//! Its [`Schema::digest`] is a hash of the contents: equal exactly when
//! the contents are. [`SchemaStore`] keeps the current schema of a node
//! and persists every new one to one file in the data directory, written
//! atomically.
//!
//! The schema implements [`cql_lite::analyze::Catalog`], so statements are
//! checked against it with positions and carets, and prints the CQL that
//! recreates a keyspace or a table ([`Schema::describe_keyspace`],
//! [`Schema::describe_table`]).
//!
//! [`Table::short_gc_grace`] tells when a table's `gc_grace_seconds` is
//! too short for a node's hint window (deleted data could come back).

mod describe;
mod grace;
mod legacy;
mod persist;
mod state;

pub use grace::{GraceWithinRepair, ShortGcGrace};
pub use persist::SchemaStore;
pub use state::SchemaConflict;

use state::{KeyspaceSettings, Lww, SchemaState, TableState, View};

use crate::model::Timestamp;
use crate::storage::compaction::CompactionStrategy as StorageCompaction;
use cql_lite::analyze::{Catalog, ColumnKind, ColumnSchema, TableSchema};
use cql_lite::ast::{
    self, AlterTableOp, CompactionStrategy, CreateTable, Literal, Order, Statement, TableOptions,
};
use cql_lite::DataType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Default `gc_grace_seconds` (ten days, as in Cassandra).
pub const DEFAULT_GC_GRACE_SECONDS: u32 = 864_000;

/// The longest name of a keyspace or table (as in Cassandra).
pub const MAX_OBJECT_NAME_LEN: usize = 48;

/// Checks a new keyspace's or table's name: 1 to [`MAX_OBJECT_NAME_LEN`]
/// ASCII letters, digits and underscores, quoted or not (Cassandra's rule).
/// The names become directory names under the data directory, so a name
/// like `"../x"` or `"a/b"` must never get that far. `kind` is
/// "Keyspace" or "Table".
pub fn check_object_name(kind: &str, name: &str) -> Result<(), SchemaError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_OBJECT_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(SchemaError::Invalid(format!(
            "{kind} name {name:?} is not valid: a name is 1 to {MAX_OBJECT_NAME_LEN} letters, \
             digits and underscores"
        )))
    }
}

/// Errors of schema changes and of the schema file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The keyspace does not exist.
    #[error("Keyspace {0} does not exist")]
    UnknownKeyspace(String),
    /// The table does not exist.
    #[error("Table {0}.{1} does not exist")]
    UnknownTable(String, String),
    /// The keyspace already exists.
    #[error("Keyspace {0} already exists")]
    KeyspaceExists(String),
    /// The table already exists.
    #[error("Table {0}.{1} already exists")]
    TableExists(String, String),
    /// A statement or change that does not make a valid schema.
    #[error("{0}")]
    Invalid(String),
    /// A compaction sub-option the storage engine cannot use (named, so
    /// the error can point at its value in the statement).
    #[error("{message}")]
    CompactionOption {
        /// The sub-option, as written (`min_threshold`).
        option: String,
        /// What is wrong.
        message: String,
    },
    /// A column an `ALTER TABLE` cannot add or drop (named, so the error
    /// can point at it in the statement).
    #[error("{message}")]
    Column {
        /// The column.
        column: String,
        /// What is wrong.
        message: String,
    },
    /// The schema file could not be read or written.
    #[error("schema file {path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        reason: String,
    },
    /// The schema file is damaged or not a schema file.
    #[error("schema file {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// How a keyspace's partitions are replicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Replication {
    /// `SimpleStrategy`: `rf` copies on consecutive ring nodes.
    Simple {
        /// Replication factor.
        rf: u32,
    },
    /// `NetworkTopologyStrategy`: copies per datacenter.
    NetworkTopology {
        /// Replication factor per datacenter.
        dcs: BTreeMap<String, u32>,
    },
}

impl Replication {
    fn from_ast(r: &ast::Replication) -> Replication {
        match r {
            ast::Replication::Simple { replication_factor } => Replication::Simple {
                rf: *replication_factor,
            },
            ast::Replication::NetworkTopology { datacenters } => Replication::NetworkTopology {
                dcs: datacenters.iter().cloned().collect(),
            },
        }
    }

    /// Total copies of each partition over all datacenters.
    pub fn total_replicas(&self) -> u32 {
        match self {
            Replication::Simple { rf } => *rf,
            Replication::NetworkTopology { dcs } => dcs.values().sum(),
        }
    }
}

/// A keyspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keyspace {
    /// Its name.
    pub name: String,
    /// Its replication strategy.
    pub replication: Replication,
    /// `durable_writes` (kept for DESCRIBE; ringdb always logs writes).
    pub durable_writes: bool,
    /// `sloppy_quorum` (default true): a write whose replica is down may go
    /// to the next healthy node with a hint and count toward W. Off: only
    /// the keyspace's own replicas count (strict quorums). The
    /// coordinator reads it for every write.
    pub sloppy_quorum: bool,
}

/// A table's compaction settings: the class and its other sub-options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Compaction {
    /// The strategy class.
    pub strategy: CompactionStrategy,
    /// Sub-options as written (`'compaction_window_unit': 'DAYS'`, ...).
    pub options: Vec<(String, Literal)>,
}

impl Default for Compaction {
    fn default() -> Self {
        Compaction {
            strategy: CompactionStrategy::SizeTiered,
            options: Vec::new(),
        }
    }
}

impl Compaction {
    /// The sub-option's name as written (option names match
    /// case-insensitively).
    fn written_name(&self, name: &str) -> String {
        self.options
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| name.to_string())
    }

    fn option(&self, name: &str) -> Option<&Literal> {
        self.options
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    fn int_option(&self, name: &str) -> Result<Option<u64>, SchemaError> {
        let bad = |v: &Literal| SchemaError::CompactionOption {
            option: self.written_name(name),
            message: format!(
                "Invalid value {v} for compaction option '{name}': expected a positive integer"
            ),
        };
        match self.option(name) {
            None => Ok(None),
            Some(v @ Literal::Integer(i)) => u64::try_from(*i)
                .ok()
                .filter(|n| *n > 0)
                .map(Some)
                .ok_or_else(|| bad(v)),
            Some(v @ Literal::String(s)) => s
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .map(Some)
                .ok_or_else(|| bad(v)),
            Some(v) => Err(bad(v)),
        }
    }

    /// The storage engine's strategy for these settings (validated).
    pub fn storage_strategy(&self) -> Result<StorageCompaction, SchemaError> {
        let min = self.int_option("min_threshold")?.unwrap_or(4) as usize;
        let max = self.int_option("max_threshold")?.unwrap_or(32) as usize;
        if min < 2 || max < min {
            // Point at the threshold that was written (min_threshold when
            // it is too small, or when both were written).
            let option = if min < 2 || self.option("max_threshold").is_none() {
                "min_threshold"
            } else {
                "max_threshold"
            };
            return Err(SchemaError::CompactionOption {
                option: self.written_name(option),
                message: format!(
                    "Invalid compaction thresholds: min_threshold {min} must be at least 2 and at most max_threshold {max}"
                ),
            });
        }
        match self.strategy {
            CompactionStrategy::SizeTiered => Ok(StorageCompaction::SizeTiered {
                min_threshold: min,
                max_threshold: max,
            }),
            CompactionStrategy::TimeWindow => {
                let unit = match self.option("compaction_window_unit") {
                    None => 86_400,
                    Some(Literal::String(u)) => match u.to_ascii_uppercase().as_str() {
                        "MINUTES" => 60,
                        "HOURS" => 3_600,
                        "DAYS" => 86_400,
                        _ => {
                            return Err(SchemaError::CompactionOption {
                                option: self.written_name("compaction_window_unit"),
                                message: format!(
                                    "{u} is not valid for compaction_window_unit: use MINUTES, HOURS or DAYS"
                                ),
                            })
                        }
                    },
                    Some(other) => {
                        return Err(SchemaError::CompactionOption {
                            option: self.written_name("compaction_window_unit"),
                            message: format!(
                                "{other} is not valid for compaction_window_unit: use MINUTES, HOURS or DAYS"
                            ),
                        })
                    }
                };
                let size = self.int_option("compaction_window_size")?.unwrap_or(1);
                let secs = size
                    .checked_mul(unit)
                    .ok_or_else(|| SchemaError::CompactionOption {
                        option: self.written_name("compaction_window_size"),
                        message: "compaction_window_size is too large".into(),
                    })?;
                Ok(StorageCompaction::TimeWindow {
                    window: Duration::from_secs(secs),
                    min_threshold: min,
                })
            }
        }
    }
}

/// A table: its id, columns, primary key and options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    /// A fresh id for every CREATE: a table dropped and created again
    /// under the same name never sees the old data.
    pub id: u128,
    /// Keyspace, name, columns (with types and kinds), partition key and
    /// clustering columns with their orders.
    pub def: TableSchema,
    /// `default_time_to_live` in seconds (0: none).
    pub default_time_to_live: u32,
    /// `gc_grace_seconds`.
    pub gc_grace_seconds: u32,
    /// The compaction strategy.
    pub compaction: Compaction,
    /// `comment`.
    pub comment: String,
    /// Columns dropped by `ALTER TABLE DROP`, with the HLC timestamp of the
    /// drop: cells written at or before it are never read again, even if a
    /// column of that name is added later (Cassandra's rule).
    pub dropped_columns: BTreeMap<String, Timestamp>,
}

impl Table {
    /// The keyspace name.
    pub fn keyspace(&self) -> &str {
        &self.def.keyspace
    }

    /// The table name.
    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// A column by name.
    pub fn column(&self, name: &str) -> Option<&ColumnSchema> {
        self.def.column(name)
    }

    /// Partition key columns with their types, in key order.
    pub fn partition_columns(&self) -> Vec<&ColumnSchema> {
        self.def
            .partition_key
            .iter()
            .filter_map(|n| self.def.column(n))
            .collect()
    }

    /// Clustering columns with their types, in key order.
    pub fn clustering_columns(&self) -> Vec<&ColumnSchema> {
        self.def
            .clustering
            .iter()
            .filter_map(|(n, _)| self.def.column(n))
            .collect()
    }

    /// Regular columns, sorted by name (Cassandra's `SELECT *` order).
    pub fn regular_columns(&self) -> Vec<&ColumnSchema> {
        let mut cols: Vec<&ColumnSchema> = self
            .def
            .columns
            .iter()
            .filter(|c| c.kind == ColumnKind::Regular)
            .collect();
        cols.sort_by(|a, b| a.name.cmp(&b.name));
        cols
    }

    /// Every column in `SELECT *` order: partition key, clustering, then
    /// regular columns by name.
    pub fn select_star_columns(&self) -> Vec<&ColumnSchema> {
        let mut out = Vec::with_capacity(self.def.columns.len());
        out.extend(
            self.def
                .partition_key
                .iter()
                .filter_map(|n| self.def.column(n)),
        );
        out.extend(
            self.def
                .clustering
                .iter()
                .filter_map(|(n, _)| self.def.column(n)),
        );
        let first_regular = out.len();
        out.extend(
            self.def
                .columns
                .iter()
                .filter(|c| c.kind == ColumnKind::Regular),
        );
        if let Some(regular) = out.get_mut(first_regular..) {
            regular.sort_by(|a, b| a.name.cmp(&b.name));
        }
        out
    }

    /// Types of the partition key columns.
    pub fn partition_types(&self) -> Vec<DataType> {
        self.partition_columns()
            .iter()
            .map(|c| c.data_type)
            .collect()
    }

    /// Types of the clustering columns.
    pub fn clustering_types(&self) -> Vec<DataType> {
        self.clustering_columns()
            .iter()
            .map(|c| c.data_type)
            .collect()
    }

    /// Orders of the clustering columns, in the key encoding's terms.
    pub fn clustering_orders(&self) -> Vec<crate::model::key::ClusteringOrder> {
        self.def
            .clustering
            .iter()
            .map(|(_, o)| match o {
                Order::Asc => crate::model::key::ClusteringOrder::Asc,
                Order::Desc => crate::model::key::ClusteringOrder::Desc,
            })
            .collect()
    }

    /// The storage engine's compaction strategy for this table.
    pub fn storage_compaction(&self) -> Result<StorageCompaction, SchemaError> {
        self.compaction.storage_strategy()
    }

    /// The grace period before tombstones may be purged.
    pub fn gc_grace(&self) -> Duration {
        Duration::from_secs(u64::from(self.gc_grace_seconds))
    }

    /// Builds a table from `CREATE TABLE` in `keyspace` with a fresh `id`.
    pub fn from_create(keyspace: &str, ct: &CreateTable, id: u128) -> Result<Table, SchemaError> {
        let mut table = Table {
            id,
            def: TableSchema::from_create(keyspace, ct),
            default_time_to_live: 0,
            gc_grace_seconds: DEFAULT_GC_GRACE_SECONDS,
            compaction: Compaction::default(),
            comment: String::new(),
            dropped_columns: BTreeMap::new(),
        };
        table.apply_options(&ct.options)?;
        table.validate()?;
        Ok(table)
    }

    fn apply_options(&mut self, o: &TableOptions) -> Result<(), SchemaError> {
        if let Some(ttl) = o.default_time_to_live {
            self.default_time_to_live = ttl;
        }
        if let Some(g) = o.gc_grace_seconds {
            self.gc_grace_seconds = g;
        }
        if let Some(c) = &o.compaction {
            let compaction = Compaction {
                strategy: c.strategy,
                options: c.options.clone(),
            };
            compaction.storage_strategy()?;
            self.compaction = compaction;
        }
        if let Some(c) = &o.comment {
            self.comment = c.clone();
        }
        Ok(())
    }

    /// Checks the table's invariants (every key column exists with the
    /// right kind, names are unique, options are valid).
    pub fn validate(&self) -> Result<(), SchemaError> {
        let bad = |m: String| Err(SchemaError::Invalid(m));
        if self.def.partition_key.is_empty() {
            return bad(format!("table {} has no partition key", self.def.name));
        }
        for (i, c) in self.def.columns.iter().enumerate() {
            if self.def.columns[..i].iter().any(|o| o.name == c.name) {
                return bad(format!(
                    "duplicate column {} in table {}",
                    c.name, self.def.name
                ));
            }
        }
        for k in &self.def.partition_key {
            match self.def.column(k) {
                Some(c) if c.kind == ColumnKind::PartitionKey => {}
                _ => return bad(format!("partition key column {k} is not a column")),
            }
        }
        for (k, _) in &self.def.clustering {
            match self.def.column(k) {
                Some(c) if c.kind == ColumnKind::Clustering => {}
                _ => return bad(format!("clustering column {k} is not a column")),
            }
        }
        let keys = self.def.partition_key.len() + self.def.clustering.len();
        let key_cols = self
            .def
            .columns
            .iter()
            .filter(|c| c.kind != ColumnKind::Regular)
            .count();
        if keys != key_cols {
            return bad(format!(
                "table {} has key columns outside its primary key",
                self.def.name
            ));
        }
        self.compaction.storage_strategy()?;
        Ok(())
    }
}

/// What `ALTER TABLE` does to one table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TableAlteration {
    /// `ADD`: new regular columns. `change` is the id of this change, which
    /// orders two additions made at the same instant.
    AddColumns {
        /// The columns with their types.
        columns: Vec<(String, DataType)>,
        /// The id of the change.
        change: u128,
    },
    /// `DROP`: regular columns removed (their cells written up to the drop
    /// are never read again, even if the name is added later).
    DropColumns(Vec<String>),
    /// `WITH`: options set (those not given keep their values).
    SetOptions(TableOptionChanges),
}

/// The options an `ALTER TABLE ... WITH` sets; `None` leaves one alone.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TableOptionChanges {
    /// `default_time_to_live`.
    pub default_time_to_live: Option<u32>,
    /// `gc_grace_seconds`.
    pub gc_grace_seconds: Option<u32>,
    /// `compaction` (validated).
    pub compaction: Option<Compaction>,
    /// `comment`.
    pub comment: Option<String>,
}

/// A change of the schema made by one DDL statement on one node, with the
/// HLC timestamp that orders it against concurrent changes elsewhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SchemaChange {
    /// A new keyspace.
    CreateKeyspace {
        /// The keyspace.
        keyspace: Keyspace,
        /// The id of this creation (orders creations at the same instant).
        id: u128,
        /// When.
        at: Timestamp,
    },
    /// New settings for an existing keyspace (`None`: unchanged).
    AlterKeyspace {
        /// The keyspace.
        name: String,
        /// New replication.
        replication: Option<Replication>,
        /// New `durable_writes`.
        durable_writes: Option<bool>,
        /// New `sloppy_quorum`.
        sloppy_quorum: Option<bool>,
        /// When.
        at: Timestamp,
    },
    /// Drops a keyspace and its tables.
    DropKeyspace {
        /// The keyspace.
        name: String,
        /// When.
        at: Timestamp,
    },
    /// A new table (with a fresh id).
    CreateTable {
        /// The table.
        table: Table,
        /// When.
        at: Timestamp,
    },
    /// Changes one table, named by its id.
    AlterTable {
        /// Its keyspace.
        keyspace: String,
        /// Its name.
        table: String,
        /// Its id: the change is for this table only, not one created
        /// again under the same name.
        id: u128,
        /// What changes.
        alteration: TableAlteration,
        /// When.
        at: Timestamp,
    },
    /// Drops a table.
    DropTable {
        /// Its keyspace.
        keyspace: String,
        /// Its name.
        table: String,
        /// When.
        at: Timestamp,
    },
}

impl SchemaChange {
    /// What the change did, as the result of a DDL statement says it
    /// (`CREATED TABLE ks.t`).
    pub fn description(&self) -> String {
        match self {
            SchemaChange::CreateKeyspace { keyspace, .. } => {
                format!("CREATED KEYSPACE {}", keyspace.name)
            }
            SchemaChange::AlterKeyspace { name, .. } => format!("UPDATED KEYSPACE {name}"),
            SchemaChange::DropKeyspace { name, .. } => format!("DROPPED KEYSPACE {name}"),
            SchemaChange::CreateTable { table, .. } => {
                format!("CREATED TABLE {}.{}", table.keyspace(), table.name())
            }
            SchemaChange::AlterTable {
                keyspace, table, ..
            } => {
                format!("UPDATED TABLE {keyspace}.{table}")
            }
            SchemaChange::DropTable {
                keyspace, table, ..
            } => {
                format!("DROPPED TABLE {keyspace}.{table}")
            }
        }
    }

    /// When the change was made.
    pub fn at(&self) -> Timestamp {
        match self {
            SchemaChange::CreateKeyspace { at, .. }
            | SchemaChange::AlterKeyspace { at, .. }
            | SchemaChange::DropKeyspace { at, .. }
            | SchemaChange::CreateTable { at, .. }
            | SchemaChange::AlterTable { at, .. }
            | SchemaChange::DropTable { at, .. } => *at,
        }
    }
}

/// Every keyspace and table with the history needed to merge it with the
/// schema of another node (see the module documentation).
///
/// Serialized as its mergeable state only; deserializing normalizes and
/// validates it, so a schema from a peer or a file is always sound.
#[derive(Debug, Clone)]
pub struct Schema {
    state: SchemaState,
    view: View,
    digest: u128,
    latest: Timestamp,
}

impl Default for Schema {
    fn default() -> Schema {
        let state = SchemaState::default();
        Schema {
            digest: digest_of(&encode_state(&state)),
            view: View::default(),
            latest: Timestamp::ZERO,
            state,
        }
    }
}

impl PartialEq for Schema {
    fn eq(&self, other: &Schema) -> bool {
        self.digest == other.digest && self.encoded_state() == other.encoded_state()
    }
}

impl Serialize for Schema {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.state.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Schema {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Schema, D::Error> {
        let state = SchemaState::deserialize(deserializer)?;
        Schema::from_state(state).map_err(serde::de::Error::custom)
    }
}

impl Catalog for Schema {
    fn has_keyspace(&self, keyspace: &str) -> bool {
        self.view.keyspaces.contains_key(keyspace)
    }

    fn table(&self, keyspace: &str, table: &str) -> Option<&TableSchema> {
        self.get_table(keyspace, table).map(|t| &t.def)
    }
}

impl Schema {
    /// The empty schema.
    pub fn new() -> Schema {
        Schema::default()
    }

    /// A schema over a state: normalized, validated, with its view and
    /// digest computed once.
    fn from_state(mut state: SchemaState) -> Result<Schema, SchemaError> {
        state.normalize();
        state.validate()?;
        let bytes = encode_state(&state);
        Ok(Schema {
            view: state.view(),
            digest: digest_of(&bytes),
            latest: state.latest,
            state,
        })
    }

    fn encoded_state(&self) -> Vec<u8> {
        encode_state(&self.state)
    }

    /// The schema's version: the HLC timestamp (as a number) of the latest
    /// change it holds. It only grows, by changes and by merges; two nodes
    /// with equal contents have equal versions.
    pub fn version(&self) -> u64 {
        self.latest.0
    }

    /// The HLC timestamp of the latest change the schema holds; a change
    /// made against this schema is stamped after it.
    pub fn latest(&self) -> Timestamp {
        self.latest
    }

    /// What gossip carries to compare schemas: the version and 64 bits of
    /// the digest. Two nodes agree when these are equal.
    pub fn fingerprint(&self) -> (u64, u64) {
        (self.version(), self.digest as u64)
    }

    /// A keyspace by name.
    pub fn keyspace(&self, name: &str) -> Option<&Keyspace> {
        self.view.keyspaces.get(name)
    }

    /// Every keyspace, by name.
    pub fn keyspaces(&self) -> impl Iterator<Item = &Keyspace> {
        self.view.keyspaces.values()
    }

    /// A table by keyspace and name.
    pub fn get_table(&self, keyspace: &str, table: &str) -> Option<&Table> {
        self.view.tables.get(keyspace).and_then(|t| t.get(table))
    }

    /// The tables of a keyspace, by name.
    pub fn tables(&self, keyspace: &str) -> impl Iterator<Item = &Table> {
        self.view
            .tables
            .get(keyspace)
            .into_iter()
            .flat_map(|t| t.values())
    }

    /// A 128-bit hash of the whole mergeable content (history included):
    /// two schemas have equal digests exactly when they are equal.
    pub fn digest(&self) -> u128 {
        self.digest
    }

    /// The conflicts between concurrent changes that the merge rules
    /// resolved (a table or column created twice, a keyspace created twice
    /// with different settings), among live objects.
    pub fn conflicts(&self) -> Vec<SchemaConflict> {
        self.state.conflicts()
    }

    /// The schema of this node and the schema of another, merged: the
    /// least schema that holds both. Commutative, associative and
    /// idempotent.
    pub fn merge(&self, other: &Schema) -> Result<Schema, SchemaError> {
        let mut state = self.state.clone();
        state.join_with(&other.state);
        Schema::from_state(state)
    }

    /// The schema after `change`, made on this node: refused with a typed
    /// error if it no longer fits (the keyspace or table it creates exists,
    /// the one it alters is gone or was created again). Drops are
    /// tombstones and are always recorded.
    pub fn apply(&self, change: &SchemaChange) -> Result<Schema, SchemaError> {
        self.check(change)?;
        self.record(change)
    }

    fn check(&self, change: &SchemaChange) -> Result<(), SchemaError> {
        match change {
            SchemaChange::CreateKeyspace { keyspace, .. } => {
                if self.keyspace(&keyspace.name).is_some() {
                    return Err(SchemaError::KeyspaceExists(keyspace.name.clone()));
                }
            }
            SchemaChange::AlterKeyspace { name, .. } => {
                if self.keyspace(name).is_none() {
                    return Err(SchemaError::UnknownKeyspace(name.clone()));
                }
            }
            SchemaChange::CreateTable { table, .. } => {
                table.validate()?;
                let ks = table.keyspace().to_string();
                if self.keyspace(&ks).is_none() {
                    return Err(SchemaError::UnknownKeyspace(ks));
                }
                if self.get_table(&ks, table.name()).is_some() {
                    return Err(SchemaError::TableExists(ks, table.name().to_string()));
                }
            }
            SchemaChange::AlterTable {
                keyspace,
                table,
                id,
                alteration,
                ..
            } => {
                let Some(current) = self.get_table(keyspace, table) else {
                    return Err(SchemaError::UnknownTable(keyspace.clone(), table.clone()));
                };
                if current.id != *id {
                    return Err(SchemaError::Invalid(format!(
                        "table {keyspace}.{table} was recreated; the change is for an older table"
                    )));
                }
                match alteration {
                    TableAlteration::AddColumns { columns, .. } => {
                        if let Some((c, _)) =
                            columns.iter().find(|(c, _)| current.column(c).is_some())
                        {
                            return Err(SchemaError::Invalid(format!(
                                "Invalid column name {c} because it conflicts with an existing column"
                            )));
                        }
                    }
                    TableAlteration::DropColumns(cols) => {
                        if let Some(c) = cols.iter().find(|c| {
                            current
                                .column(c)
                                .is_some_and(|col| col.kind != ColumnKind::Regular)
                        }) {
                            return Err(SchemaError::Invalid(format!(
                                "Cannot drop PRIMARY KEY part {c}"
                            )));
                        }
                    }
                    TableAlteration::SetOptions(o) => {
                        if let Some(c) = &o.compaction {
                            c.storage_strategy()?;
                        }
                    }
                }
            }
            SchemaChange::DropKeyspace { .. } | SchemaChange::DropTable { .. } => {}
        }
        Ok(())
    }

    /// The schema with `change` recorded as it is, unchecked: what a change
    /// made on another node amounts to once its schema is merged here. A
    /// change that does not fit (a second creation of a name, an `ALTER`
    /// of a table that lost or is gone) is kept by the rules of the merge
    /// but changes nothing visible.
    pub fn record(&self, change: &SchemaChange) -> Result<Schema, SchemaError> {
        let mut state = self.state.clone();
        state.latest = state.latest.max(change.at());
        match change {
            SchemaChange::CreateKeyspace { keyspace, id, at } => {
                let entry = state.keyspaces.entry(keyspace.name.clone()).or_default();
                entry.births.insert(
                    (*at, *id),
                    KeyspaceSettings {
                        replication: keyspace.replication.clone(),
                        durable_writes: keyspace.durable_writes,
                        sloppy_quorum: keyspace.sloppy_quorum,
                    },
                );
            }
            SchemaChange::AlterKeyspace {
                name,
                replication,
                durable_writes,
                sloppy_quorum,
                at,
            } => {
                use state::Join;
                let entry = state.keyspaces.entry(name.clone()).or_default();
                entry
                    .replication
                    .join(&replication.clone().map(|r| Lww::new(*at, r)));
                entry
                    .durable_writes
                    .join(&durable_writes.map(|d| Lww::new(*at, d)));
                entry
                    .sloppy_quorum
                    .join(&sloppy_quorum.map(|q| Lww::new(*at, q)));
            }
            SchemaChange::DropKeyspace { name, at } => {
                let entry = state.keyspaces.entry(name.clone()).or_default();
                entry.dropped = entry.dropped.max(Some(*at));
            }
            SchemaChange::CreateTable { table, at } => {
                table.validate()?;
                state
                    .keyspaces
                    .entry(table.keyspace().to_string())
                    .or_default()
                    .tables
                    .entry(table.name().to_string())
                    .or_default()
                    .births
                    .insert((*at, table.id), TableState::created(table, *at));
            }
            SchemaChange::AlterTable {
                keyspace,
                table,
                id,
                alteration,
                at,
            } => {
                use state::Join;
                for t in state.table_mut(keyspace, table, *id) {
                    match alteration {
                        TableAlteration::AddColumns { columns, change } => {
                            for (name, ty) in columns {
                                t.columns
                                    .entry(name.clone())
                                    .or_default()
                                    .births
                                    .insert((*at, *change), *ty);
                            }
                        }
                        TableAlteration::DropColumns(cols) => {
                            for name in cols {
                                let slot = t.columns.entry(name.clone()).or_default();
                                slot.dropped = slot.dropped.max(Some(*at));
                            }
                        }
                        TableAlteration::SetOptions(o) => {
                            if let Some(v) = o.default_time_to_live {
                                t.default_time_to_live.join(&Lww::new(*at, v));
                            }
                            if let Some(v) = o.gc_grace_seconds {
                                t.gc_grace_seconds.join(&Lww::new(*at, v));
                            }
                            if let Some(v) = &o.compaction {
                                t.compaction.join(&Lww::new(*at, v.clone()));
                            }
                            if let Some(v) = &o.comment {
                                t.comment.join(&Lww::new(*at, v.clone()));
                            }
                        }
                    }
                }
            }
            SchemaChange::DropTable {
                keyspace,
                table,
                at,
            } => {
                let slot = state
                    .keyspaces
                    .entry(keyspace.clone())
                    .or_default()
                    .tables
                    .entry(table.clone())
                    .or_default();
                slot.dropped = slot.dropped.max(Some(*at));
            }
        }
        Schema::from_state(state)
    }

    /// Checks every invariant of every table the schema holds (live or
    /// not). A `Schema` is validated when built; this checks again (the
    /// schema file's loader does).
    pub fn validate(&self) -> Result<(), SchemaError> {
        self.state.validate()
    }

    /// The schema from a format-2 schema file (before schemas merged):
    /// every object as if created at time zero, so nodes that agreed on the
    /// old schema agree on the converted one.
    pub(crate) fn from_legacy(
        keyspaces: Vec<Keyspace>,
        tables: Vec<Table>,
    ) -> Result<Schema, SchemaError> {
        let mut state = SchemaState::default();
        for k in keyspaces {
            state
                .keyspaces
                .entry(k.name.clone())
                .or_default()
                .births
                .insert(
                    (Timestamp::ZERO, 0),
                    KeyspaceSettings {
                        replication: k.replication,
                        durable_writes: k.durable_writes,
                        sloppy_quorum: k.sloppy_quorum,
                    },
                );
        }
        for t in tables {
            let mut ts = TableState::created(&t, Timestamp::ZERO);
            for (name, dropped) in &t.dropped_columns {
                let slot = ts.columns.entry(name.clone()).or_default();
                // A column dropped and added again: its addition came after
                // the drop.
                let births = std::mem::take(&mut slot.births);
                slot.births = births
                    .into_iter()
                    .map(|((_, id), ty)| ((Timestamp(dropped.0.saturating_add(1)), id), ty))
                    .collect();
                slot.dropped = Some(*dropped);
            }
            state
                .keyspaces
                .entry(t.keyspace().to_string())
                .or_default()
                .tables
                .entry(t.name().to_string())
                .or_default()
                .births
                .insert((Timestamp::ZERO, t.id), ts);
        }
        Schema::from_state(state)
    }
}

fn encode_state(state: &SchemaState) -> Vec<u8> {
    // Encoding plain data into a Vec cannot fail.
    bincode::serde::encode_to_vec(state, bincode::config::standard()).unwrap_or_default()
}

fn digest_of(bytes: &[u8]) -> u128 {
    use siphasher::sip128::{Hasher128, SipHasher13};
    use std::hash::Hasher;
    let mut h = SipHasher13::new_with_keys(0x7363_6865_6d61_2d64, 0x6967_6573_742d_7633);
    h.write(bytes);
    h.finish128().as_u128()
}
impl Schema {
    /// The change a DDL statement makes, or `None` when it does nothing
    /// (`IF NOT EXISTS` on something that exists, `IF EXISTS` on something
    /// that does not). `current` is the session's keyspace, `new_id` the
    /// id a created table or keyspace gets (and the tie-break of the
    /// change), `now` the time of the change: the change is stamped with
    /// `now` or, if this schema holds a later change (a node with a clock
    /// ahead), just after that one, so a change always orders after every
    /// change it was made against. The statement should have passed
    /// [`cql_lite::analyze::check_statement`].
    pub fn change_for(
        &self,
        stmt: &Statement,
        current: Option<&str>,
        new_id: u128,
        now: Timestamp,
    ) -> Result<Option<SchemaChange>, SchemaError> {
        let at = now.max(Timestamp(self.latest.0.saturating_add(1)));
        let ks_of = |name: &ast::QualifiedName| -> Result<String, SchemaError> {
            name.keyspace
                .as_ref()
                .map(|k| k.name.clone())
                .or_else(|| current.map(str::to_string))
                .ok_or_else(|| {
                    SchemaError::Invalid(
                        "No keyspace has been specified. USE a keyspace, or explicitly specify keyspace.tablename".into(),
                    )
                })
        };
        let existing_table = |name: &ast::QualifiedName| -> Result<&Table, SchemaError> {
            let ks = ks_of(name)?;
            if !self.view.keyspaces.contains_key(&ks) {
                return Err(SchemaError::UnknownKeyspace(ks));
            }
            self.get_table(&ks, &name.name.name)
                .ok_or_else(|| SchemaError::UnknownTable(ks.clone(), name.name.name.clone()))
        };
        let change = match stmt {
            Statement::CreateKeyspace(s) => {
                check_object_name("Keyspace", &s.name.name)?;
                if self.view.keyspaces.contains_key(&s.name.name) {
                    if s.if_not_exists {
                        return Ok(None);
                    }
                    return Err(SchemaError::KeyspaceExists(s.name.name.clone()));
                }
                SchemaChange::CreateKeyspace {
                    keyspace: Keyspace {
                        name: s.name.name.clone(),
                        replication: Replication::from_ast(&s.replication),
                        durable_writes: s.durable_writes.unwrap_or(true),
                        sloppy_quorum: s.sloppy_quorum.unwrap_or(true),
                    },
                    id: new_id,
                    at,
                }
            }
            Statement::AlterKeyspace(s) => {
                if !self.view.keyspaces.contains_key(&s.name.name) {
                    if s.if_exists {
                        return Ok(None);
                    }
                    return Err(SchemaError::UnknownKeyspace(s.name.name.clone()));
                };
                SchemaChange::AlterKeyspace {
                    name: s.name.name.clone(),
                    replication: s.replication.as_ref().map(Replication::from_ast),
                    durable_writes: s.durable_writes,
                    sloppy_quorum: s.sloppy_quorum,
                    at,
                }
            }
            Statement::DropKeyspace(s) => {
                if !self.view.keyspaces.contains_key(&s.name.name) {
                    if s.if_exists {
                        return Ok(None);
                    }
                    return Err(SchemaError::UnknownKeyspace(s.name.name.clone()));
                }
                SchemaChange::DropKeyspace {
                    name: s.name.name.clone(),
                    at,
                }
            }
            Statement::CreateTable(s) => {
                check_object_name("Table", &s.name.name.name)?;
                let ks = ks_of(&s.name)?;
                if !self.view.keyspaces.contains_key(&ks) {
                    return Err(SchemaError::UnknownKeyspace(ks));
                }
                if self.get_table(&ks, &s.name.name.name).is_some() {
                    if s.if_not_exists {
                        return Ok(None);
                    }
                    return Err(SchemaError::TableExists(ks, s.name.name.name.clone()));
                }
                SchemaChange::CreateTable {
                    table: Table::from_create(&ks, s, new_id)?,
                    at,
                }
            }
            Statement::AlterTable(s) => {
                let mut t = existing_table(&s.name)?.clone();
                let alteration = match &s.op {
                    AlterTableOp::Add(defs) => {
                        for d in defs {
                            if t.column(&d.name.name).is_some() {
                                return Err(SchemaError::Column {
                                    column: d.name.name.clone(),
                                    message: format!(
                                        "Invalid column name {} because it conflicts with an existing column",
                                        d.name
                                    ),
                                });
                            }
                            t.def.columns.push(ColumnSchema {
                                name: d.name.name.clone(),
                                data_type: d.data_type,
                                kind: ColumnKind::Regular,
                            });
                        }
                        TableAlteration::AddColumns {
                            columns: defs
                                .iter()
                                .map(|d| (d.name.name.clone(), d.data_type))
                                .collect(),
                            change: new_id,
                        }
                    }
                    AlterTableOp::Drop(cols) => {
                        for c in cols {
                            match t.column(&c.name) {
                                Some(col) if col.kind == ColumnKind::Regular => {}
                                Some(_) => {
                                    return Err(SchemaError::Column {
                                        column: c.name.clone(),
                                        message: format!("Cannot drop PRIMARY KEY part {c}"),
                                    })
                                }
                                None => {
                                    return Err(SchemaError::Column {
                                        column: c.name.clone(),
                                        message: format!(
                                            "Column {c} was not found in table {}",
                                            t.name()
                                        ),
                                    })
                                }
                            }
                            t.def.columns.retain(|col| col.name != c.name);
                        }
                        TableAlteration::DropColumns(cols.iter().map(|c| c.name.clone()).collect())
                    }
                    AlterTableOp::With(o) => {
                        t.apply_options(o)?;
                        TableAlteration::SetOptions(TableOptionChanges {
                            default_time_to_live: o.default_time_to_live,
                            gc_grace_seconds: o.gc_grace_seconds,
                            compaction: o.compaction.as_ref().map(|c| Compaction {
                                strategy: c.strategy,
                                options: c.options.clone(),
                            }),
                            comment: o.comment.clone(),
                        })
                    }
                };
                SchemaChange::AlterTable {
                    keyspace: t.keyspace().to_string(),
                    table: t.name().to_string(),
                    id: t.id,
                    alteration,
                    at,
                }
            }
            Statement::DropTable(s) => {
                let ks = ks_of(&s.name)?;
                if self.get_table(&ks, &s.name.name.name).is_none() {
                    if s.if_exists {
                        return Ok(None);
                    }
                    existing_table(&s.name)?;
                }
                SchemaChange::DropTable {
                    keyspace: ks,
                    table: s.name.name.name.clone(),
                    at,
                }
            }
            _ => {
                return Err(SchemaError::Invalid(
                    "not a schema-changing statement".into(),
                ))
            }
        };
        Ok(Some(change))
    }
}

#[cfg(test)]
mod tests;
