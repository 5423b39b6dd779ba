//! Checks of a parsed statement against a schema: unknown keyspaces, tables
//! and columns, type mismatches, primary key restrictions, clustering
//! restriction order, and queries that would need `ALLOW FILTERING`.
//!
//! The crate knows no schema store; the node describes its schema through
//! the [`Catalog`] trait. Errors point at the offending identifier (its
//! [`Ident::span`]) and read like Cassandra's.

use crate::ast::*;
use crate::error::render_at;
use crate::lexer::Span;
use crate::types::DataType;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What kind of semantic error it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SemanticErrorKind {
    /// No keyspace was given and none is in use.
    NoKeyspace,
    /// The keyspace does not exist.
    UnknownKeyspace,
    /// The table does not exist.
    UnknownTable,
    /// The column does not exist in the table.
    UnknownColumn,
    /// The keyspace, table or column already exists.
    AlreadyExists,
    /// A value does not fit the column's type.
    TypeMismatch,
    /// The partition key (or, for writes, the clustering key) is not fully given.
    MissingPrimaryKey,
    /// A restriction that the primary key order does not allow.
    InvalidRestriction,
    /// The query would scan and filter; it needs `ALLOW FILTERING`.
    FilteringRequired,
    /// Any other invalid request.
    Invalid,
}

/// An error found by checking a statement against the schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct SemanticError {
    /// What kind of error.
    pub kind: SemanticErrorKind,
    /// Where the offending identifier is, when the statement came from text.
    pub span: Option<Span>,
    /// The message, Cassandra-style.
    pub message: String,
    /// The offending identifier or token.
    pub token: String,
}

impl fmt::Display for SemanticError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.span {
            Some(s) => write!(f, "line {}:{} {}", s.line, s.column, self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl SemanticError {
    /// Renders like [`crate::ParseError::render`]: position, message, the
    /// source line and a caret; only the message when there is no position.
    pub fn render(&self, source: &str) -> String {
        match self.span {
            Some(span) => render_at(source, span, &self.message),
            None => self.message.clone(),
        }
    }
}

fn err(kind: SemanticErrorKind, at: &Ident, message: impl Into<String>) -> SemanticError {
    SemanticError {
        kind,
        span: at.span,
        message: message.into(),
        token: at.name.clone(),
    }
}

/// The role of a column in its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ColumnKind {
    /// Part of the partition key.
    PartitionKey,
    /// A clustering column.
    Clustering,
    /// A regular column.
    Regular,
}

/// A column of a [`TableSchema`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnSchema {
    /// Its name.
    pub name: String,
    /// Its type.
    pub data_type: DataType,
    /// Its role.
    pub kind: ColumnKind,
}

/// What the checks need to know about a table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableSchema {
    /// The keyspace.
    pub keyspace: String,
    /// The table.
    pub name: String,
    /// Every column.
    pub columns: Vec<ColumnSchema>,
    /// The partition key columns, in order.
    pub partition_key: Vec<String>,
    /// The clustering columns with their order.
    pub clustering: Vec<(String, Order)>,
}

impl TableSchema {
    /// The schema a `CREATE TABLE` describes, in `keyspace`.
    pub fn from_create(keyspace: &str, ct: &CreateTable) -> TableSchema {
        let kind = |n: &Ident| {
            if ct.primary_key.partition.contains(n) {
                ColumnKind::PartitionKey
            } else if ct.primary_key.clustering.contains(n) {
                ColumnKind::Clustering
            } else {
                ColumnKind::Regular
            }
        };
        TableSchema {
            keyspace: keyspace.to_string(),
            name: ct.name.name.name.clone(),
            columns: ct
                .columns
                .iter()
                .map(|c| ColumnSchema {
                    name: c.name.name.clone(),
                    data_type: c.data_type,
                    kind: kind(&c.name),
                })
                .collect(),
            partition_key: ct
                .primary_key
                .partition
                .iter()
                .map(|i| i.name.clone())
                .collect(),
            clustering: ct
                .primary_key
                .clustering
                .iter()
                .map(|c| {
                    let order = ct
                        .options
                        .clustering_order
                        .iter()
                        .find(|(n, _)| n == c)
                        .map(|(_, o)| *o)
                        .unwrap_or(Order::Asc);
                    (c.name.clone(), order)
                })
                .collect(),
        }
    }

    /// A column by name.
    pub fn column(&self, name: &str) -> Option<&ColumnSchema> {
        self.columns.iter().find(|c| c.name == name)
    }

    fn column_or_err(&self, ident: &Ident) -> Result<&ColumnSchema, SemanticError> {
        self.column(&ident.name).ok_or_else(|| {
            err(
                SemanticErrorKind::UnknownColumn,
                ident,
                format!("Undefined column name {ident}"),
            )
        })
    }
}

/// The schema as the checks see it; the node implements it over its schema.
pub trait Catalog {
    /// True if the keyspace exists.
    fn has_keyspace(&self, keyspace: &str) -> bool;
    /// The table, if it exists.
    fn table(&self, keyspace: &str, table: &str) -> Option<&TableSchema>;
}

/// How a SELECT's WHERE clause splits, once checked.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SelectRestrictions {
    /// Every partition key column is restricted by `=` or `IN`: the query
    /// reads known partitions. Otherwise it scans.
    pub partition_key_restricted: bool,
    /// How many leading clustering columns the key restrictions cover.
    pub clustering_prefix: usize,
    /// Indexes (into the WHERE clause) of the relations used to locate rows.
    pub key_relations: Vec<usize>,
    /// Indexes of the relations applied by filtering (needs `ALLOW FILTERING`).
    pub filter_relations: Vec<usize>,
    /// How many primary key columns (partition key, then clustering) make
    /// the key of a `GROUP BY` group; 0 without `GROUP BY`. Columns left
    /// out of `GROUP BY` because `=` restricts them are counted.
    pub group_prefix: usize,
}

fn keyspace_of<'a>(
    name: &'a QualifiedName,
    current: Option<&'a str>,
) -> Result<&'a str, SemanticError> {
    match (&name.keyspace, current) {
        (Some(ks), _) => Ok(&ks.name),
        (None, Some(ks)) => Ok(ks),
        (None, None) => Err(err(
            SemanticErrorKind::NoKeyspace,
            &name.name,
            "No keyspace has been specified. USE a keyspace, or explicitly specify keyspace.tablename",
        )),
    }
}

fn resolve_table<'c>(
    name: &QualifiedName,
    current: Option<&str>,
    catalog: &'c dyn Catalog,
) -> Result<&'c TableSchema, SemanticError> {
    let ks = keyspace_of(name, current)?;
    if !catalog.has_keyspace(ks) {
        let at = name.keyspace.as_ref().unwrap_or(&name.name);
        return Err(err(
            SemanticErrorKind::UnknownKeyspace,
            at,
            format!("Keyspace {ks} does not exist"),
        ));
    }
    catalog.table(ks, &name.name.name).ok_or_else(|| {
        err(
            SemanticErrorKind::UnknownTable,
            &name.name,
            format!("unconfigured table {}", name.name),
        )
    })
}

/// Checks a statement against the schema. `current_keyspace` is the one
/// chosen by `USE`. For a SELECT, see also [`check_select`].
pub fn check_statement(
    stmt: &Statement,
    current_keyspace: Option<&str>,
    catalog: &dyn Catalog,
) -> Result<(), SemanticError> {
    let ks_missing = |name: &Ident| {
        err(
            SemanticErrorKind::UnknownKeyspace,
            name,
            format!("Keyspace '{}' doesn't exist", name.name),
        )
    };
    match stmt {
        Statement::CreateKeyspace(s) => {
            if !s.if_not_exists && catalog.has_keyspace(&s.name.name) {
                return Err(err(
                    SemanticErrorKind::AlreadyExists,
                    &s.name,
                    format!("Keyspace {} already exists", s.name),
                ));
            }
        }
        Statement::AlterKeyspace(s) => {
            if !s.if_exists && !catalog.has_keyspace(&s.name.name) {
                return Err(ks_missing(&s.name));
            }
        }
        Statement::DropKeyspace(s) => {
            if !s.if_exists && !catalog.has_keyspace(&s.name.name) {
                return Err(ks_missing(&s.name));
            }
        }
        Statement::Use(ks) => {
            if !catalog.has_keyspace(&ks.name) {
                return Err(err(
                    SemanticErrorKind::UnknownKeyspace,
                    ks,
                    format!("Keyspace '{}' does not exist", ks.name),
                ));
            }
        }
        Statement::CreateTable(s) => {
            let ks = keyspace_of(&s.name, current_keyspace)?;
            if !catalog.has_keyspace(ks) {
                let at = s.name.keyspace.as_ref().unwrap_or(&s.name.name);
                return Err(err(
                    SemanticErrorKind::UnknownKeyspace,
                    at,
                    format!("Keyspace {ks} does not exist"),
                ));
            }
            if !s.if_not_exists && catalog.table(ks, &s.name.name.name).is_some() {
                return Err(err(
                    SemanticErrorKind::AlreadyExists,
                    &s.name.name,
                    format!("Table {ks}.{} already exists", s.name.name),
                ));
            }
        }
        Statement::AlterTable(s) => {
            let table = resolve_table(&s.name, current_keyspace, catalog)?;
            match &s.op {
                AlterTableOp::Add(defs) => {
                    for d in defs {
                        if table.column(&d.name.name).is_some() {
                            return Err(err(
                                SemanticErrorKind::AlreadyExists,
                                &d.name,
                                format!(
                                    "Invalid column name {} because it conflicts with an existing column",
                                    d.name
                                ),
                            ));
                        }
                    }
                }
                AlterTableOp::Drop(cols) => {
                    for c in cols {
                        let col = table.column(&c.name).ok_or_else(|| {
                            err(
                                SemanticErrorKind::UnknownColumn,
                                c,
                                format!("Column {c} was not found in table {}", table.name),
                            )
                        })?;
                        if col.kind != ColumnKind::Regular {
                            return Err(err(
                                SemanticErrorKind::Invalid,
                                c,
                                format!("Cannot drop PRIMARY KEY part {c}"),
                            ));
                        }
                    }
                }
                AlterTableOp::With(_) => {}
            }
        }
        Statement::DropTable(s) => {
            if !s.if_exists {
                resolve_table(&s.name, current_keyspace, catalog)?;
            }
        }
        Statement::Truncate(s) => {
            resolve_table(&s.name, current_keyspace, catalog)?;
        }
        Statement::Insert(s) => check_insert(s, current_keyspace, catalog)?,
        Statement::Update(s) => check_update(s, current_keyspace, catalog)?,
        Statement::Delete(s) => check_delete(s, current_keyspace, catalog)?,
        Statement::Batch(b) => {
            for s in &b.statements {
                match s {
                    BatchStatement::Insert(s) => check_insert(s, current_keyspace, catalog)?,
                    BatchStatement::Update(s) => check_update(s, current_keyspace, catalog)?,
                    BatchStatement::Delete(s) => check_delete(s, current_keyspace, catalog)?,
                }
            }
        }
        Statement::Select(s) => {
            check_select(s, current_keyspace, catalog)?;
        }
    }
    Ok(())
}

/// Checks that `term` can be a value of `column`'s type.
pub fn check_term(term: &Term, column: &Ident, ty: DataType) -> Result<(), SemanticError> {
    match term {
        Term::BindMarker(_) => Ok(()),
        Term::Literal(lit) => literal_to_value(lit, ty).map(|_| ()).map_err(|e| {
            err(
                SemanticErrorKind::TypeMismatch,
                column,
                e.for_column(&column.name),
            )
        }),
        Term::FunctionCall { name, args } => {
            let Some(function) = Function::from_name(&name.name) else {
                return Err(err(
                    SemanticErrorKind::Invalid,
                    name,
                    format!("Unknown function '{name}'"),
                ));
            };
            if function == Function::ToTimestamp {
                let ok = match args.first() {
                    Some(Term::BindMarker(_)) => true,
                    Some(Term::Literal(Literal::Uuid(u))) => crate::literal::uuid_version(*u) == 1,
                    Some(Term::FunctionCall { name, .. }) => {
                        Function::from_name(&name.name) == Some(Function::Now)
                    }
                    _ => false,
                };
                if !ok {
                    return Err(err(
                        SemanticErrorKind::TypeMismatch,
                        name,
                        "Invalid argument for function toTimestamp: expecting a timeuuid (such as now())",
                    ));
                }
            }
            let ret = function.return_type();
            let compatible = ret == ty || (ret == DataType::TimeUuid && ty == DataType::Uuid);
            if compatible {
                Ok(())
            } else {
                Err(err(
                    SemanticErrorKind::TypeMismatch,
                    column,
                    format!(
                        "Type error: cannot assign result of function {} (type {ret}) to {column} (type {ty})",
                        function.name()
                    ),
                ))
            }
        }
    }
}

fn check_key_not_null(term: &Term, col: &ColumnSchema, at: &Ident) -> Result<(), SemanticError> {
    if col.kind != ColumnKind::Regular && matches!(term, Term::Literal(Literal::Null)) {
        return Err(err(
            SemanticErrorKind::Invalid,
            at,
            format!("Invalid null value in condition for column {at}"),
        ));
    }
    Ok(())
}

fn check_relation_values(r: &Relation, col: &ColumnSchema) -> Result<(), SemanticError> {
    match r {
        Relation::Compare { column, value, .. } => {
            check_key_not_null(value, col, column)?;
            check_term(value, column, col.data_type)
        }
        Relation::In {
            column,
            values: InValues::List(values),
        } => values.iter().try_for_each(|v| {
            check_key_not_null(v, col, column)?;
            check_term(v, column, col.data_type)
        }),
        Relation::In { .. } => Ok(()),
    }
}

fn missing_parts(
    table: &TableSchema,
    restricted: &[&str],
    at: &Ident,
    clustering_too: bool,
) -> Result<(), SemanticError> {
    let missing: Vec<&str> = table
        .partition_key
        .iter()
        .map(String::as_str)
        .filter(|k| !restricted.contains(k))
        .collect();
    if !missing.is_empty() {
        return Err(err(
            SemanticErrorKind::MissingPrimaryKey,
            at,
            format!(
                "Some partition key parts are missing: {}",
                missing.join(", ")
            ),
        ));
    }
    if clustering_too {
        let missing: Vec<&str> = table
            .clustering
            .iter()
            .map(|(c, _)| c.as_str())
            .filter(|k| !restricted.contains(k))
            .collect();
        if !missing.is_empty() {
            return Err(err(
                SemanticErrorKind::MissingPrimaryKey,
                at,
                format!("Some clustering keys are missing: {}", missing.join(", ")),
            ));
        }
    }
    Ok(())
}

fn check_insert(
    s: &Insert,
    current: Option<&str>,
    catalog: &dyn Catalog,
) -> Result<(), SemanticError> {
    let table = resolve_table(&s.table, current, catalog)?;
    let mut given = Vec::new();
    for (c, v) in s.columns.iter().zip(&s.values) {
        let col = table.column_or_err(c)?;
        check_key_not_null(v, col, c)?;
        check_term(v, c, col.data_type)?;
        given.push(c.name.as_str());
    }
    missing_parts(table, &given, &s.table.name, true)
}

/// Checks a write's WHERE clause: the partition key by `=`/`IN`, then, for
/// `full`, every clustering column by `=`/`IN`; otherwise a clustering
/// prefix by `=` optionally ended by one range. Returns the columns named.
fn check_write_where<'a>(
    table: &TableSchema,
    relations: &'a [Relation],
    at: &Ident,
    full: bool,
) -> Result<Vec<&'a str>, SemanticError> {
    let mut named: Vec<&str> = Vec::new();
    let mut non_key = Vec::new();
    for r in relations {
        let c = r.column();
        let col = table.column_or_err(c)?;
        check_relation_values(r, col)?;
        if col.kind == ColumnKind::Regular {
            non_key.push(c.name.clone());
            continue;
        }
        let is_slice = matches!(r, Relation::Compare { op, .. } if op.is_slice());
        if is_slice && (col.kind == ColumnKind::PartitionKey || full) {
            return Err(err(
                SemanticErrorKind::InvalidRestriction,
                c,
                format!(
                    "Invalid operator for PRIMARY KEY part {c}: only = and IN are supported here"
                ),
            ));
        }
        if named.contains(&c.name.as_str()) && !is_slice {
            return Err(err(
                SemanticErrorKind::InvalidRestriction,
                c,
                format!(
                    "{c} cannot be restricted by more than one relation if it includes an Equal"
                ),
            ));
        }
        named.push(&c.name);
    }
    if !non_key.is_empty() {
        let first = relations
            .iter()
            .map(Relation::column)
            .find(|c| non_key.contains(&c.name))
            .unwrap_or(at);
        return Err(err(
            SemanticErrorKind::InvalidRestriction,
            first,
            format!(
                "Non PRIMARY KEY columns found in where clause: {}",
                non_key.join(", ")
            ),
        ));
    }
    missing_parts(table, &named, at, full)?;
    if !full {
        // Clustering: an equality prefix, the last one possibly a range.
        let mut stop: Option<(&str, bool)> = None; // (column, by a non-EQ relation)
        for (cname, _) in &table.clustering {
            let rs: Vec<&Relation> = relations
                .iter()
                .filter(|r| &r.column().name == cname)
                .collect();
            let Some(first) = rs.first() else {
                stop = stop.or(Some((cname, false)));
                continue;
            };
            match stop {
                Some((prev, false)) => {
                    return Err(err(
                        SemanticErrorKind::InvalidRestriction,
                        first.column(),
                        format!("PRIMARY KEY column \"{cname}\" cannot be restricted as preceding column \"{prev}\" is not restricted"),
                    ))
                }
                Some((prev, true)) => {
                    return Err(err(
                        SemanticErrorKind::InvalidRestriction,
                        first.column(),
                        format!("Clustering column \"{cname}\" cannot be restricted (preceding column \"{prev}\" is restricted by a non-EQ relation)"),
                    ))
                }
                None => {}
            }
            if rs.iter().any(|r| {
                !matches!(
                    r,
                    Relation::Compare {
                        op: Operator::Eq,
                        ..
                    }
                )
            }) {
                stop = Some((cname, true));
            }
        }
    }
    Ok(named)
}

fn check_update(
    s: &Update,
    current: Option<&str>,
    catalog: &dyn Catalog,
) -> Result<(), SemanticError> {
    let table = resolve_table(&s.table, current, catalog)?;
    for a in &s.assignments {
        let col = table.column_or_err(&a.column)?;
        if col.kind != ColumnKind::Regular {
            return Err(err(
                SemanticErrorKind::Invalid,
                &a.column,
                format!("PRIMARY KEY part {} found in SET part", a.column),
            ));
        }
        check_term(&a.value, &a.column, col.data_type)?;
    }
    check_write_where(table, &s.where_clause, &s.table.name, true)?;
    Ok(())
}

fn check_delete(
    s: &Delete,
    current: Option<&str>,
    catalog: &dyn Catalog,
) -> Result<(), SemanticError> {
    let table = resolve_table(&s.table, current, catalog)?;
    for c in &s.columns {
        let col = table.column_or_err(c)?;
        if col.kind != ColumnKind::Regular {
            return Err(err(
                SemanticErrorKind::Invalid,
                c,
                format!("Invalid identifier {c} for deletion (should not be a PRIMARY KEY part)"),
            ));
        }
    }
    let full = !s.columns.is_empty();
    if full {
        let has_range = s
            .where_clause
            .iter()
            .any(|r| matches!(r, Relation::Compare { op, .. } if op.is_slice()));
        if has_range {
            return Err(err(
                SemanticErrorKind::InvalidRestriction,
                &s.table.name,
                "Range deletions are not supported for specific columns",
            ));
        }
    }
    check_write_where(table, &s.where_clause, &s.table.name, full)?;
    Ok(())
}

const FILTERING_MESSAGE: &str = "Cannot execute this query as it might involve data filtering and thus may have unpredictable performance. If you want to execute this query despite the performance unpredictability, use ALLOW FILTERING";

/// Checks a SELECT and splits its WHERE clause into key restrictions and
/// filters. Without `ALLOW FILTERING`, a query that would filter is refused.
pub fn check_select(
    s: &Select,
    current: Option<&str>,
    catalog: &dyn Catalog,
) -> Result<SelectRestrictions, SemanticError> {
    let table = resolve_table(&s.table, current, catalog)?;
    check_selection(s, table)?;
    let filtering_error =
        |at: &Ident| err(SemanticErrorKind::FilteringRequired, at, FILTERING_MESSAGE);

    // Per-column checks: existence, values, combinations on one column.
    for (i, r) in s.where_clause.iter().enumerate() {
        let c = r.column();
        let col = table.column_or_err(c)?;
        check_relation_values(r, col)?;
        for earlier in &s.where_clause[..i] {
            if earlier.column() != c {
                continue;
            }
            let eq = |r: &Relation| {
                matches!(
                    r,
                    Relation::Compare {
                        op: Operator::Eq,
                        ..
                    }
                )
            };
            let is_in = |r: &Relation| matches!(r, Relation::In { .. });
            if eq(r) || eq(earlier) {
                return Err(err(
                    SemanticErrorKind::InvalidRestriction,
                    c,
                    format!("{c} cannot be restricted by more than one relation if it includes an Equal"),
                ));
            }
            if is_in(r) || is_in(earlier) {
                return Err(err(
                    SemanticErrorKind::InvalidRestriction,
                    c,
                    format!(
                        "{c} cannot be restricted by more than one relation if it includes a IN"
                    ),
                ));
            }
            let bound = |r: &Relation| match r {
                Relation::Compare { op, .. } => matches!(op, Operator::Gt | Operator::Ge),
                Relation::In { .. } => false,
            };
            if bound(r) == bound(earlier) {
                let which = if bound(r) { "start" } else { "end" };
                return Err(err(
                    SemanticErrorKind::InvalidRestriction,
                    c,
                    format!("More than one restriction was found for the {which} bound on {c}"),
                ));
            }
        }
    }

    let mut out = SelectRestrictions::default();
    let kind_of = |r: &Relation| {
        table
            .column(&r.column().name)
            .map(|c| c.kind)
            .unwrap_or(ColumnKind::Regular)
    };

    // Partition key: every part by = or IN, or else the partition relations
    // are filters.
    let pk_relations: Vec<usize> = (0..s.where_clause.len())
        .filter(|&i| kind_of(&s.where_clause[i]) == ColumnKind::PartitionKey)
        .collect();
    let pk_by_key = table.partition_key.iter().all(|k| {
        pk_relations.iter().any(|&i| {
            let r = &s.where_clause[i];
            &r.column().name == k && !matches!(r, Relation::Compare { op, .. } if op.is_slice())
        })
    });
    if pk_by_key {
        out.partition_key_restricted = true;
        out.key_relations.extend(&pk_relations);
    } else {
        out.filter_relations.extend(&pk_relations);
    }

    // Clustering: an equality prefix, with the last restricted column
    // allowed a range or IN; anything after that is a filter.
    let mut open = true;
    let mut stop: Option<(String, bool)> = None; // (column, restricted by non-EQ)
    for (cname, _) in &table.clustering {
        let idx: Vec<usize> = (0..s.where_clause.len())
            .filter(|&i| &s.where_clause[i].column().name == cname)
            .collect();
        if idx.is_empty() {
            if open {
                stop = Some((cname.clone(), false));
            }
            open = false;
            continue;
        }
        if !open {
            if !s.allow_filtering {
                let at = s.where_clause[idx[0]].column();
                let message = match &stop {
                    Some((prev, true)) => format!(
                        "Clustering column \"{cname}\" cannot be restricted (preceding column \"{prev}\" is restricted by a non-EQ relation)"
                    ),
                    Some((prev, false)) => format!(
                        "PRIMARY KEY column \"{cname}\" cannot be restricted as preceding column \"{prev}\" is not restricted"
                    ),
                    None => FILTERING_MESSAGE.to_string(),
                };
                return Err(err(SemanticErrorKind::InvalidRestriction, at, message));
            }
            out.filter_relations.extend(&idx);
            continue;
        }
        if out.partition_key_restricted {
            out.key_relations.extend(&idx);
            out.clustering_prefix += 1;
        } else {
            out.filter_relations.extend(&idx);
        }
        let eq_only = idx.iter().all(|&i| {
            matches!(
                s.where_clause[i],
                Relation::Compare {
                    op: Operator::Eq,
                    ..
                }
            )
        });
        if !eq_only {
            open = false;
            stop = Some((cname.clone(), true));
        }
    }

    // Regular columns are always filters.
    for (i, r) in s.where_clause.iter().enumerate() {
        if kind_of(r) == ColumnKind::Regular {
            out.filter_relations.push(i);
        }
    }
    out.key_relations.sort_unstable();
    out.filter_relations.sort_unstable();
    if !out.filter_relations.is_empty() && !s.allow_filtering {
        let at = s.where_clause[out.filter_relations[0]].column();
        return Err(filtering_error(at));
    }

    check_group_and_order(s, table, &mut out)?;
    Ok(out)
}

/// Checks the values in a SELECT's WHERE clause (their types, and no null
/// for a key column): the part of [`check_select`] that depends on the
/// values bound to its markers, for a statement whose unbound form already
/// passed [`check_select`] against the same catalog.
pub fn check_select_values(
    s: &Select,
    current: Option<&str>,
    catalog: &dyn Catalog,
) -> Result<(), SemanticError> {
    let table = resolve_table(&s.table, current, catalog)?;
    for r in &s.where_clause {
        check_relation_values(r, table.column_or_err(r.column())?)?;
    }
    Ok(())
}

fn check_selection(s: &Select, table: &TableSchema) -> Result<(), SemanticError> {
    let Selection::Items(items) = &s.selection else {
        if s.distinct {
            return Err(SemanticError {
                kind: SemanticErrorKind::Invalid,
                span: s.table.name.span,
                message:
                    "SELECT DISTINCT queries must request all the partition key columns (not *)"
                        .into(),
                token: "*".into(),
            });
        }
        return Ok(());
    };
    for item in items {
        match &item.selector {
            Selector::CountStar => {}
            Selector::Column(c) => {
                let col = table.column_or_err(c)?;
                if s.distinct && col.kind != ColumnKind::PartitionKey {
                    return Err(err(
                        SemanticErrorKind::Invalid,
                        c,
                        format!("SELECT DISTINCT queries must only request partition key columns and/or static columns (not {c})"),
                    ));
                }
            }
            Selector::Aggregate { function, column } => {
                let col = table.column_or_err(column)?;
                let numeric = matches!(
                    col.data_type,
                    DataType::Int
                        | DataType::BigInt
                        | DataType::SmallInt
                        | DataType::Float
                        | DataType::Double
                );
                if matches!(function, Aggregate::Sum | Aggregate::Avg) && !numeric {
                    return Err(err(
                        SemanticErrorKind::TypeMismatch,
                        column,
                        format!(
                            "Invalid call to function {}: {column} is of type {}, not a number",
                            function.name(),
                            col.data_type
                        ),
                    ));
                }
            }
            Selector::WriteTime(c) | Selector::Ttl(c) => {
                let col = table.column_or_err(c)?;
                if col.kind != ColumnKind::Regular {
                    let f = if matches!(item.selector, Selector::Ttl(_)) {
                        "ttl"
                    } else {
                        "writeTime"
                    };
                    return Err(err(
                        SemanticErrorKind::Invalid,
                        c,
                        format!("Cannot use selection function {f} on PRIMARY KEY part {c}"),
                    ));
                }
            }
        }
    }
    if s.distinct {
        let requested: Vec<&str> = items
            .iter()
            .filter_map(|i| match &i.selector {
                Selector::Column(c) => Some(c.name.as_str()),
                _ => None,
            })
            .collect();
        if let Some(missing) = table
            .partition_key
            .iter()
            .find(|k| !requested.contains(&k.as_str()))
        {
            return Err(SemanticError {
                kind: SemanticErrorKind::Invalid,
                span: s.table.name.span,
                message: format!(
                    "SELECT DISTINCT queries must request all the partition key columns (missing {missing})"
                ),
                token: s.table.name.name.clone(),
            });
        }
    }
    Ok(())
}

fn check_group_and_order(
    s: &Select,
    table: &TableSchema,
    restrictions: &mut SelectRestrictions,
) -> Result<(), SemanticError> {
    restrictions.group_prefix = group_prefix(s, table)?;
    check_order(s, table, restrictions)
}

/// Checks `GROUP BY` with Cassandra's rules and returns how many primary
/// key columns (partition key, then clustering) make a group's key.
///
/// The columns follow the primary key order; a column restricted by `=`
/// may be left out (it has one value). The whole partition key must be in
/// the group: rows come in token order, so rows with equal values of only
/// part of the partition key are scattered over the scan, and grouping
/// them would mean holding every group until the scan ends. Cassandra
/// refuses it for the same reason, with the same message.
fn group_prefix(s: &Select, table: &TableSchema) -> Result<usize, SemanticError> {
    let pk_order: Vec<(&str, ColumnKind)> = table
        .partition_key
        .iter()
        .map(|c| (c.as_str(), ColumnKind::PartitionKey))
        .chain(
            table
                .clustering
                .iter()
                .map(|(c, _)| (c.as_str(), ColumnKind::Clustering)),
        )
        .collect();
    let restricted_by_eq = |column: &str| {
        s.where_clause.iter().any(|r| {
            matches!(r, Relation::Compare { column: c, op: Operator::Eq, .. } if c.name == column)
        })
    };
    let out_of_order = |g: &Ident| {
        err(
            SemanticErrorKind::InvalidRestriction,
            g,
            "Group by currently only support groups of columns following their declared order in the PRIMARY KEY",
        )
    };
    let mut used = 0usize;
    for g in &s.group_by {
        let col = table.column_or_err(g)?;
        if col.kind == ColumnKind::Regular {
            return Err(err(
                SemanticErrorKind::InvalidRestriction,
                g,
                format!("Group by is currently only supported on the columns of the PRIMARY KEY, got {g}"),
            ));
        }
        loop {
            let Some((name, _)) = pk_order.get(used) else {
                return Err(out_of_order(g));
            };
            used += 1;
            if *name == g.name {
                break;
            }
            if !restricted_by_eq(name) {
                return Err(out_of_order(g));
            }
        }
    }
    let Some(last) = s.group_by.last() else {
        return Ok(0);
    };
    if pk_order
        .get(used)
        .is_some_and(|(_, kind)| *kind == ColumnKind::PartitionKey)
    {
        return Err(err(
            SemanticErrorKind::InvalidRestriction,
            last,
            "Group by is not supported on only a part of the partition key",
        ));
    }
    if s.distinct && used > table.partition_key.len() {
        return Err(err(
            SemanticErrorKind::InvalidRestriction,
            last,
            "Grouping on clustering columns is not allowed for SELECT DISTINCT queries",
        ));
    }
    Ok(used)
}

fn check_order(
    s: &Select,
    table: &TableSchema,
    restrictions: &SelectRestrictions,
) -> Result<(), SemanticError> {
    if s.order_by.is_empty() {
        return Ok(());
    }
    let mut reversed: Option<bool> = None;
    for (i, o) in s.order_by.iter().enumerate() {
        let col = table.column_or_err(&o.column)?;
        if col.kind != ColumnKind::Clustering {
            return Err(err(
                SemanticErrorKind::InvalidRestriction,
                &o.column,
                format!(
                    "Order by is currently only supported on the clustered columns of the PRIMARY KEY, got {}",
                    o.column
                ),
            ));
        }
        let Some((_, declared)) = table.clustering.get(i).filter(|(n, _)| n == &o.column.name)
        else {
            return Err(err(
                SemanticErrorKind::InvalidRestriction,
                &o.column,
                "Order by currently only supports the ordering of columns following their declared order in the PRIMARY KEY",
            ));
        };
        let rev = o.order != *declared;
        if reversed.is_some_and(|r| r != rev) {
            return Err(err(
                SemanticErrorKind::InvalidRestriction,
                &o.column,
                "Unsupported order by relation",
            ));
        }
        reversed = Some(rev);
    }
    if !restrictions.partition_key_restricted {
        return Err(err(
            SemanticErrorKind::InvalidRestriction,
            &s.order_by[0].column,
            "ORDER BY is only supported when the partition key is restricted by an EQ or an IN.",
        ));
    }
    Ok(())
}
