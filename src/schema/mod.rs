//! The schema: keyspaces and tables, versioned, persisted, described.
//!
//! A [`Schema`] is a value: keyspaces, their tables, a monotonically
//! increasing `version` and a content [`Schema::digest`]. It changes only by
//! applying a [`SchemaChange`] (itself a value, so the cluster can gossip
//! changes and compare digests), which gives a new schema one version
//! higher. [`SchemaStore`] keeps the current schema of a node and persists
//! every new version to one file in the data directory, written atomically.
//!
//! The schema implements [`cql_lite::analyze::Catalog`], so statements are
//! checked against it with positions and carets, and prints the CQL that
//! recreates a keyspace or a table ([`Schema::describe_keyspace`],
//! [`Schema::describe_table`]).

mod describe;
mod persist;

pub use persist::SchemaStore;

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
        let mut out = self.partition_columns();
        out.extend(self.clustering_columns());
        out.extend(self.regular_columns());
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

/// A change of the schema, as a value (the cluster gossips these).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SchemaChange {
    /// A new keyspace.
    CreateKeyspace(Keyspace),
    /// New settings for an existing keyspace.
    AlterKeyspace(Keyspace),
    /// Drops a keyspace and its tables.
    DropKeyspace(String),
    /// A new table.
    CreateTable(Table),
    /// The new definition of an existing table (same id).
    AlterTable(Table),
    /// Drops a table.
    DropTable {
        /// Its keyspace.
        keyspace: String,
        /// Its name.
        table: String,
    },
}

impl SchemaChange {
    /// What the change did, as the result of a DDL statement says it
    /// (`CREATED TABLE ks.t`).
    pub fn description(&self) -> String {
        match self {
            SchemaChange::CreateKeyspace(k) => format!("CREATED KEYSPACE {}", k.name),
            SchemaChange::AlterKeyspace(k) => format!("UPDATED KEYSPACE {}", k.name),
            SchemaChange::DropKeyspace(k) => format!("DROPPED KEYSPACE {k}"),
            SchemaChange::CreateTable(t) => {
                format!("CREATED TABLE {}.{}", t.keyspace(), t.name())
            }
            SchemaChange::AlterTable(t) => {
                format!("UPDATED TABLE {}.{}", t.keyspace(), t.name())
            }
            SchemaChange::DropTable { keyspace, table } => {
                format!("DROPPED TABLE {keyspace}.{table}")
            }
        }
    }
}

/// Keyspaces and tables at one version.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Schema {
    /// Increases by one with every change.
    pub version: u64,
    keyspaces: BTreeMap<String, Keyspace>,
    tables: BTreeMap<String, BTreeMap<String, Table>>,
}

impl Catalog for Schema {
    fn has_keyspace(&self, keyspace: &str) -> bool {
        self.keyspaces.contains_key(keyspace)
    }

    fn table(&self, keyspace: &str, table: &str) -> Option<&TableSchema> {
        self.get_table(keyspace, table).map(|t| &t.def)
    }
}

impl Schema {
    /// The order in which schemas replace each other across nodes: version,
    /// then 64 bits of the digest (what gossip carries).
    pub fn precedence(&self) -> (u64, u64) {
        (self.version, self.digest() as u64)
    }

    /// The empty schema at version 0.
    pub fn new() -> Schema {
        Schema::default()
    }

    /// A keyspace by name.
    pub fn keyspace(&self, name: &str) -> Option<&Keyspace> {
        self.keyspaces.get(name)
    }

    /// Every keyspace, by name.
    pub fn keyspaces(&self) -> impl Iterator<Item = &Keyspace> {
        self.keyspaces.values()
    }

    /// A table by keyspace and name.
    pub fn get_table(&self, keyspace: &str, table: &str) -> Option<&Table> {
        self.tables.get(keyspace).and_then(|t| t.get(table))
    }

    /// The tables of a keyspace, by name.
    pub fn tables(&self, keyspace: &str) -> impl Iterator<Item = &Table> {
        self.tables
            .get(keyspace)
            .into_iter()
            .flat_map(|t| t.values())
    }

    /// A digest of the content (not the version): two nodes with equal
    /// digests have the same keyspaces and tables.
    pub fn digest(&self) -> u128 {
        use siphasher::sip128::{Hasher128, SipHasher13};
        use std::hash::Hasher;
        let content = (&self.keyspaces, &self.tables);
        let bytes =
            bincode::serde::encode_to_vec(content, bincode::config::standard()).unwrap_or_default();
        let mut h = SipHasher13::new_with_keys(0x7363_6865_6d61_2d64, 0x6967_6573_742d_7631);
        h.write(&bytes);
        h.finish128().as_u128()
    }

    /// The schema after `change`, one version higher.
    pub fn apply(&self, change: &SchemaChange) -> Result<Schema, SchemaError> {
        let mut next = self.clone();
        match change {
            SchemaChange::CreateKeyspace(k) => {
                if next.keyspaces.contains_key(&k.name) {
                    return Err(SchemaError::KeyspaceExists(k.name.clone()));
                }
                next.keyspaces.insert(k.name.clone(), k.clone());
            }
            SchemaChange::AlterKeyspace(k) => {
                let Some(slot) = next.keyspaces.get_mut(&k.name) else {
                    return Err(SchemaError::UnknownKeyspace(k.name.clone()));
                };
                *slot = k.clone();
            }
            SchemaChange::DropKeyspace(name) => {
                if next.keyspaces.remove(name).is_none() {
                    return Err(SchemaError::UnknownKeyspace(name.clone()));
                }
                next.tables.remove(name);
            }
            SchemaChange::CreateTable(t) => {
                t.validate()?;
                let ks = t.keyspace().to_string();
                if !next.keyspaces.contains_key(&ks) {
                    return Err(SchemaError::UnknownKeyspace(ks));
                }
                let tables = next.tables.entry(ks.clone()).or_default();
                if tables.contains_key(t.name()) {
                    return Err(SchemaError::TableExists(ks, t.name().to_string()));
                }
                tables.insert(t.name().to_string(), t.clone());
            }
            SchemaChange::AlterTable(t) => {
                t.validate()?;
                let (ks, name) = (t.keyspace().to_string(), t.name().to_string());
                let Some(slot) = next.tables.get_mut(&ks).and_then(|m| m.get_mut(&name)) else {
                    return Err(SchemaError::UnknownTable(ks, name));
                };
                if slot.id != t.id {
                    return Err(SchemaError::Invalid(format!(
                        "table {ks}.{name} was recreated; the change is for an older table"
                    )));
                }
                *slot = t.clone();
            }
            SchemaChange::DropTable { keyspace, table } => {
                let removed = next.tables.get_mut(keyspace).and_then(|m| m.remove(table));
                if removed.is_none() {
                    return Err(SchemaError::UnknownTable(keyspace.clone(), table.clone()));
                }
            }
        }
        next.version = self.version + 1;
        Ok(next)
    }

    /// Checks every invariant (used when loading the schema file).
    pub fn validate(&self) -> Result<(), SchemaError> {
        for (name, k) in &self.keyspaces {
            if name != &k.name {
                return Err(SchemaError::Invalid(format!(
                    "keyspace {} stored under the name {name}",
                    k.name
                )));
            }
        }
        for (ks, tables) in &self.tables {
            if !self.keyspaces.contains_key(ks) {
                return Err(SchemaError::Invalid(format!(
                    "tables of keyspace {ks}, which does not exist"
                )));
            }
            for (name, t) in tables {
                if t.keyspace() != ks || t.name() != name {
                    return Err(SchemaError::Invalid(format!(
                        "table {}.{} stored under the name {ks}.{name}",
                        t.keyspace(),
                        t.name()
                    )));
                }
                t.validate()?;
            }
        }
        Ok(())
    }

    /// The change a DDL statement makes, or `None` when it does nothing
    /// (`IF NOT EXISTS` on something that exists, `IF EXISTS` on something
    /// that does not). `current` is the session's keyspace, `new_id` the
    /// id a created table gets, `now` the time of the change (for dropped
    /// columns). The statement should have passed
    /// [`cql_lite::analyze::check_statement`].
    pub fn change_for(
        &self,
        stmt: &Statement,
        current: Option<&str>,
        new_id: u128,
        now: Timestamp,
    ) -> Result<Option<SchemaChange>, SchemaError> {
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
            if !self.keyspaces.contains_key(&ks) {
                return Err(SchemaError::UnknownKeyspace(ks));
            }
            self.get_table(&ks, &name.name.name)
                .ok_or_else(|| SchemaError::UnknownTable(ks.clone(), name.name.name.clone()))
        };
        let change = match stmt {
            Statement::CreateKeyspace(s) => {
                if self.keyspaces.contains_key(&s.name.name) {
                    if s.if_not_exists {
                        return Ok(None);
                    }
                    return Err(SchemaError::KeyspaceExists(s.name.name.clone()));
                }
                SchemaChange::CreateKeyspace(Keyspace {
                    name: s.name.name.clone(),
                    replication: Replication::from_ast(&s.replication),
                    durable_writes: s.durable_writes.unwrap_or(true),
                    sloppy_quorum: s.sloppy_quorum.unwrap_or(true),
                })
            }
            Statement::AlterKeyspace(s) => {
                let Some(k) = self.keyspaces.get(&s.name.name) else {
                    if s.if_exists {
                        return Ok(None);
                    }
                    return Err(SchemaError::UnknownKeyspace(s.name.name.clone()));
                };
                let mut k = k.clone();
                if let Some(r) = &s.replication {
                    k.replication = Replication::from_ast(r);
                }
                if let Some(d) = s.durable_writes {
                    k.durable_writes = d;
                }
                if let Some(q) = s.sloppy_quorum {
                    k.sloppy_quorum = q;
                }
                SchemaChange::AlterKeyspace(k)
            }
            Statement::DropKeyspace(s) => {
                if !self.keyspaces.contains_key(&s.name.name) {
                    if s.if_exists {
                        return Ok(None);
                    }
                    return Err(SchemaError::UnknownKeyspace(s.name.name.clone()));
                }
                SchemaChange::DropKeyspace(s.name.name.clone())
            }
            Statement::CreateTable(s) => {
                let ks = ks_of(&s.name)?;
                if !self.keyspaces.contains_key(&ks) {
                    return Err(SchemaError::UnknownKeyspace(ks));
                }
                if self.get_table(&ks, &s.name.name.name).is_some() {
                    if s.if_not_exists {
                        return Ok(None);
                    }
                    return Err(SchemaError::TableExists(ks, s.name.name.name.clone()));
                }
                SchemaChange::CreateTable(Table::from_create(&ks, s, new_id)?)
            }
            Statement::AlterTable(s) => {
                let mut t = existing_table(&s.name)?.clone();
                match &s.op {
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
                            t.dropped_columns.insert(c.name.clone(), now);
                        }
                    }
                    AlterTableOp::With(o) => t.apply_options(o)?,
                }
                SchemaChange::AlterTable(t)
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
