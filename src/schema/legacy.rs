//! Format 2 of the schema file (before schemas merged): one schema with a
//! counter version, keyspaces and tables as plain values. The types are
//! frozen copies of what that format encoded (bincode is positional, so
//! they must not change); a loaded file becomes a mergeable [`Schema`]
//! with every object created at time zero.

use super::{Compaction, Keyspace, Replication, Schema, SchemaError, Table};
use crate::model::Timestamp;
use cql_lite::analyze::{ColumnKind, ColumnSchema, TableSchema};
use cql_lite::ast::{CompactionStrategy, Literal, Order};
use cql_lite::DataType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The schema as format 2 stored it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SchemaV2 {
    version: u64,
    keyspaces: BTreeMap<String, KeyspaceV2>,
    tables: BTreeMap<String, BTreeMap<String, TableV2>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyspaceV2 {
    name: String,
    replication: ReplicationV2,
    durable_writes: bool,
    sloppy_quorum: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum ReplicationV2 {
    Simple { rf: u32 },
    NetworkTopology { dcs: BTreeMap<String, u32> },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TableV2 {
    id: u128,
    def: TableSchemaV2,
    default_time_to_live: u32,
    gc_grace_seconds: u32,
    compaction: CompactionV2,
    comment: String,
    dropped_columns: BTreeMap<String, Timestamp>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TableSchemaV2 {
    keyspace: String,
    name: String,
    columns: Vec<ColumnV2>,
    partition_key: Vec<String>,
    clustering: Vec<(String, Order)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ColumnV2 {
    name: String,
    data_type: DataType,
    kind: ColumnKind,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CompactionV2 {
    strategy: CompactionStrategy,
    options: Vec<(String, Literal)>,
}

impl SchemaV2 {
    /// The mergeable schema holding the same keyspaces and tables. The
    /// format-2 invariants are checked first, with the same messages as
    /// that version gave.
    pub(crate) fn into_schema(self) -> Result<Schema, SchemaError> {
        let invalid = |m: String| Err(SchemaError::Invalid(m));
        for (name, k) in &self.keyspaces {
            if name != &k.name {
                return invalid(format!("keyspace {} stored under the name {name}", k.name));
            }
        }
        let mut tables = Vec::new();
        for (ks, by_name) in self.tables {
            if !self.keyspaces.contains_key(&ks) {
                return invalid(format!("tables of keyspace {ks}, which does not exist"));
            }
            for (name, t) in by_name {
                if t.def.keyspace != ks || t.def.name != name {
                    return invalid(format!(
                        "table {}.{} stored under the name {ks}.{name}",
                        t.def.keyspace, t.def.name
                    ));
                }
                tables.push(t.into_table());
            }
        }
        let keyspaces = self
            .keyspaces
            .into_values()
            .map(|k| Keyspace {
                name: k.name,
                replication: match k.replication {
                    ReplicationV2::Simple { rf } => Replication::Simple { rf },
                    ReplicationV2::NetworkTopology { dcs } => Replication::NetworkTopology { dcs },
                },
                durable_writes: k.durable_writes,
                sloppy_quorum: k.sloppy_quorum,
            })
            .collect();
        Schema::from_legacy(keyspaces, tables)
    }
}

impl TableV2 {
    fn into_table(self) -> Table {
        Table {
            id: self.id,
            def: TableSchema {
                keyspace: self.def.keyspace,
                name: self.def.name,
                columns: self
                    .def
                    .columns
                    .into_iter()
                    .map(|c| ColumnSchema {
                        name: c.name,
                        data_type: c.data_type,
                        kind: c.kind,
                    })
                    .collect(),
                partition_key: self.def.partition_key,
                clustering: self.def.clustering,
            },
            default_time_to_live: self.default_time_to_live,
            gc_grace_seconds: self.gc_grace_seconds,
            compaction: Compaction {
                strategy: self.compaction.strategy,
                options: self.compaction.options,
            },
            comment: self.comment,
            dropped_columns: self.dropped_columns,
        }
    }
}
