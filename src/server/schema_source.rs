//! The node's schema as the client protocol describes it.

use super::SchemaSource;
use crate::client::protocol::{KeyspaceDescription, SchemaSnapshot, TableDescription};
use crate::query::api::ColumnSpec;
use crate::schema::SchemaStore;
use std::sync::Arc;

/// Describes the current schema of a [`SchemaStore`] (for `DESCRIBE` and
/// completion in the shell).
pub struct CatalogSource(pub Arc<SchemaStore>);

impl SchemaSource for CatalogSource {
    fn snapshot(&self) -> SchemaSnapshot {
        let schema = self.0.current();
        let keyspaces = schema
            .keyspaces()
            .map(|k| KeyspaceDescription {
                name: k.name.clone(),
                create_statement: k.describe(),
                tables: schema
                    .tables(&k.name)
                    .map(|t| TableDescription {
                        name: t.def.name.clone(),
                        columns: t
                            .def
                            .columns
                            .iter()
                            .map(|c| ColumnSpec {
                                name: c.name.clone(),
                                data_type: c.data_type,
                            })
                            .collect(),
                        create_statement: t.describe(),
                    })
                    .collect(),
            })
            .collect();
        SchemaSnapshot { keyspaces }
    }
}
