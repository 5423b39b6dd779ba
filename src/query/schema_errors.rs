//! Errors of the schema layer, pointed at the statement that caused them.
//!
//! The schema checks what only it knows (compaction sub-options the
//! storage engine must understand) and, when another change raced this
//! one, what the analyzer checked a moment before (the keyspace or table
//! exists, a column does not). Its errors name what is wrong; here they
//! get the position of that thing in the statement, so they read like
//! every other error: line, column, the offending token and a caret.

use super::api::QueryError;
use crate::schema::SchemaError;
use cql_lite::analyze::{SemanticError, SemanticErrorKind};
use cql_lite::ast::{AlterTableOp, Compaction, Ident, QualifiedName, Statement, TableOptions};
use cql_lite::Span;

/// The table options a DDL statement sets.
fn table_options(stmt: &Statement) -> Option<&TableOptions> {
    match stmt {
        Statement::CreateTable(s) => Some(&s.options),
        Statement::AlterTable(s) => match &s.op {
            AlterTableOp::With(o) => Some(o),
            _ => None,
        },
        _ => None,
    }
}

/// The keyspace and table a statement names (the keyspace identifier is
/// `None` when the session's keyspace is meant).
fn names(stmt: &Statement) -> (Option<&Ident>, Option<&Ident>) {
    fn qualified(q: &QualifiedName) -> (Option<&Ident>, Option<&Ident>) {
        (q.keyspace.as_ref(), Some(&q.name))
    }
    match stmt {
        Statement::CreateKeyspace(s) => (Some(&s.name), None),
        Statement::AlterKeyspace(s) => (Some(&s.name), None),
        Statement::DropKeyspace(s) => (Some(&s.name), None),
        Statement::Use(k) => (Some(k), None),
        other => other.table().map(qualified).unwrap_or((None, None)),
    }
}

/// Where in the statement the error's subject was written.
fn locate(e: &SchemaError, stmt: &Statement) -> Option<Span> {
    let (keyspace, table) = names(stmt);
    let subject = table.or(keyspace);
    match e {
        SchemaError::CompactionOption { option, .. } => {
            let options = table_options(stmt)?;
            options
                .compaction
                .as_ref()
                .and_then(|c: &Compaction| c.positions.get(option))
                .or_else(|| options.positions.get("compaction"))
                .or_else(|| subject.and_then(|i| i.span))
        }
        SchemaError::Column { column, .. } => {
            let found = match stmt {
                Statement::AlterTable(s) => match &s.op {
                    AlterTableOp::Add(defs) => defs
                        .iter()
                        .find(|d| &d.name.name == column)
                        .and_then(|d| d.name.span),
                    AlterTableOp::Drop(cols) => {
                        cols.iter().find(|c| &c.name == column).and_then(|c| c.span)
                    }
                    AlterTableOp::With(_) => None,
                },
                _ => None,
            };
            found.or_else(|| subject.and_then(|i| i.span))
        }
        SchemaError::UnknownKeyspace(_) | SchemaError::KeyspaceExists(_) => {
            keyspace.or(subject).and_then(|i| i.span)
        }
        _ => subject.and_then(|i| i.span),
    }
}

/// The error as the client sees it: positioned (line, column, token and
/// caret in `text`) when the statement names its subject; storage errors
/// of the schema file are server errors.
pub fn schema_error_at(e: SchemaError, stmt: &Statement, text: &str) -> QueryError {
    let kind = match &e {
        SchemaError::Io { .. } | SchemaError::Corrupt { .. } => {
            return QueryError::Server(e.to_string())
        }
        SchemaError::UnknownKeyspace(_) => SemanticErrorKind::UnknownKeyspace,
        SchemaError::UnknownTable(..) => SemanticErrorKind::UnknownTable,
        SchemaError::KeyspaceExists(_) | SchemaError::TableExists(..) => {
            SemanticErrorKind::AlreadyExists
        }
        SchemaError::Column { .. } | SchemaError::CompactionOption { .. } => {
            SemanticErrorKind::Invalid
        }
        SchemaError::Invalid(_) => SemanticErrorKind::Invalid,
    };
    let span = locate(&e, stmt);
    let token = span
        .and_then(|s| text.get(s.offset..s.offset.saturating_add(s.len)))
        .unwrap_or_default()
        .to_string();
    let error = SemanticError {
        kind,
        span,
        message: e.to_string(),
        token,
    };
    QueryError::Invalid {
        message: error.to_string(),
        rendered: error.render(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(e: QueryError) -> String {
        match e {
            QueryError::Invalid { rendered, .. } => rendered,
            other => panic!("not invalid: {other:?}"),
        }
    }

    #[test]
    fn compaction_options_point_at_their_value() {
        let text = "CREATE TABLE t (k int PRIMARY KEY)\n  WITH compaction = {'class': 'SizeTieredCompactionStrategy', 'min_threshold': 'x'}";
        let stmt = cql_lite::parse_statement(text).unwrap();
        let e = SchemaError::CompactionOption {
            option: "min_threshold".into(),
            message: "bad".into(),
        };
        assert_eq!(
            rendered(schema_error_at(e, &stmt, text)),
            format!(
                "line 2, column 80: bad\n{}\n{}^^^",
                text.lines().nth(1).unwrap(),
                " ".repeat(79)
            )
        );
    }

    #[test]
    fn races_point_at_the_name() {
        let text = "DROP TABLE ks.gone";
        let stmt = cql_lite::parse_statement(text).unwrap();
        let table = schema_error_at(
            SchemaError::UnknownTable("ks".into(), "gone".into()),
            &stmt,
            text,
        );
        assert!(rendered(table).ends_with("\n              ^^^^"));
        let keyspace = schema_error_at(SchemaError::UnknownKeyspace("ks".into()), &stmt, text);
        assert!(rendered(keyspace).ends_with("\n           ^^"));
    }

    #[test]
    fn file_errors_are_server_errors() {
        let stmt = cql_lite::parse_statement("DROP TABLE t").unwrap();
        let e = SchemaError::Io {
            path: "p".into(),
            reason: "r".into(),
        };
        assert!(matches!(
            schema_error_at(e, &stmt, "DROP TABLE t"),
            QueryError::Server(_)
        ));
    }
}
