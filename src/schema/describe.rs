//! CQL that recreates keyspaces and tables (the shell's `DESCRIBE`).

use super::{Keyspace, Replication, Schema, SchemaError, Table};
use cql_lite::ast::{self, Order};
use cql_lite::printer::{write_ident, write_string};
use std::fmt::Write;

fn ident(name: &str) -> String {
    let mut s = String::new();
    let _ = write_ident(&mut s, name);
    s
}

fn string(text: &str) -> String {
    let mut s = String::new();
    let _ = write_string(&mut s, text);
    s
}

impl Keyspace {
    /// `CREATE KEYSPACE ...;` for this keyspace.
    pub fn describe(&self) -> String {
        let replication = match &self.replication {
            Replication::Simple { rf } => ast::Replication::Simple {
                replication_factor: *rf,
            },
            Replication::NetworkTopology { dcs } => ast::Replication::NetworkTopology {
                datacenters: dcs.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            },
        };
        format!(
            "CREATE KEYSPACE {} WITH replication = {replication} AND durable_writes = {} \
             AND sloppy_quorum = {};",
            ident(&self.name),
            self.durable_writes,
            self.sloppy_quorum
        )
    }
}

impl Table {
    /// `CREATE TABLE ks.t (...) WITH ...;` for this table: columns in
    /// `SELECT *` order, the primary key, then every option.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "CREATE TABLE {}.{} (\n",
            ident(self.keyspace()),
            ident(self.name())
        );
        for c in self.select_star_columns() {
            let _ = writeln!(out, "    {} {},", ident(&c.name), c.data_type);
        }
        let pk: Vec<String> = self.def.partition_key.iter().map(|k| ident(k)).collect();
        let pk = if pk.len() == 1 {
            pk[0].clone()
        } else {
            format!("({})", pk.join(", "))
        };
        let mut key = vec![pk];
        key.extend(self.def.clustering.iter().map(|(c, _)| ident(c)));
        let _ = writeln!(out, "    PRIMARY KEY ({})", key.join(", "));
        out.push_str(") WITH ");
        if !self.def.clustering.is_empty() {
            let order: Vec<String> = self
                .def
                .clustering
                .iter()
                .map(|(c, o)| {
                    let dir = match o {
                        Order::Asc => "ASC",
                        Order::Desc => "DESC",
                    };
                    format!("{} {dir}", ident(c))
                })
                .collect();
            let _ = write!(out, "CLUSTERING ORDER BY ({})\n    AND ", order.join(", "));
        }
        let _ = write!(out, "comment = {}", string(&self.comment));
        let mut compaction = format!("{{'class': '{}'", self.compaction.strategy.class_name());
        for (k, v) in &self.compaction.options {
            let _ = write!(compaction, ", {}: {v}", string(k));
        }
        compaction.push('}');
        let _ = write!(out, "\n    AND compaction = {compaction}");
        let _ = write!(
            out,
            "\n    AND default_time_to_live = {}",
            self.default_time_to_live
        );
        let _ = write!(
            out,
            "\n    AND gc_grace_seconds = {};",
            self.gc_grace_seconds
        );
        out
    }
}

impl Schema {
    /// The CQL that recreates a keyspace and all its tables.
    pub fn describe_keyspace(&self, keyspace: &str) -> Result<String, SchemaError> {
        let k = self
            .keyspace(keyspace)
            .ok_or_else(|| SchemaError::UnknownKeyspace(keyspace.to_string()))?;
        let mut out = k.describe();
        for t in self.tables(keyspace) {
            out.push_str("\n\n");
            out.push_str(&t.describe());
        }
        Ok(out)
    }

    /// The CQL that recreates a table.
    pub fn describe_table(&self, keyspace: &str, table: &str) -> Result<String, SchemaError> {
        if self.keyspace(keyspace).is_none() {
            return Err(SchemaError::UnknownKeyspace(keyspace.to_string()));
        }
        self.get_table(keyspace, table)
            .map(Table::describe)
            .ok_or_else(|| SchemaError::UnknownTable(keyspace.to_string(), table.to_string()))
    }
}
