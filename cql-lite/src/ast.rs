//! The abstract syntax tree of CQL-lite statements.
//!
//! The tree is normalized: unquoted identifiers are lowercased, inline
//! `PRIMARY KEY`s are folded into [`PrimaryKey`], table and keyspace options
//! are typed. Printing a tree (see [`crate::printer`]) and parsing the text
//! gives an equal tree. Identifiers remember where they were written
//! ([`Ident::span`]) so that later checks can point at them; equality ignores
//! those positions.

use crate::lexer::Span;
use crate::types::DataType;
use serde::{Deserialize, Serialize};
use std::hash::{Hash, Hasher};

pub use crate::literal::{literal_to_value, value_to_literal, Literal, TypeError};

/// An identifier: a keyspace, table, column, alias or bind-marker name.
///
/// `name` is normalized (unquoted names are lowercased, quoted names kept as
/// written). Equality, ordering and hashing use `name` only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ident {
    /// The normalized name.
    pub name: String,
    /// Where it was written, if it came from text.
    #[serde(default)]
    pub span: Option<Span>,
}

impl Ident {
    /// An identifier with this exact (already normalized) name and no position.
    pub fn new(name: impl Into<String>) -> Ident {
        Ident {
            name: name.into(),
            span: None,
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.name
    }
}

impl PartialEq for Ident {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Ident {}

impl Hash for Ident {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl PartialOrd for Ident {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ident {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.name.cmp(&other.name)
    }
}

/// Where option values were written, by option name: kept so that checks
/// made after parsing (the schema's) can point at the offending value.
/// Like [`Ident::span`] it is not part of the statement: every two
/// `Positions` are equal, and printing leaves them out.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Positions(pub Vec<(String, Span)>);

impl Positions {
    /// Where the value of `name` was written.
    pub fn get(&self, name: &str) -> Option<Span> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, s)| *s)
    }

    /// Records where the value of `name` was written.
    pub fn insert(&mut self, name: impl Into<String>, span: Span) {
        self.0.push((name.into(), span));
    }
}

impl PartialEq for Positions {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// A table name, optionally qualified by its keyspace (`ks.t`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QualifiedName {
    /// The keyspace, when written.
    pub keyspace: Option<Ident>,
    /// The table.
    pub name: Ident,
}

impl QualifiedName {
    /// An unqualified name.
    pub fn new(name: impl Into<String>) -> QualifiedName {
        QualifiedName {
            keyspace: None,
            name: Ident::new(name),
        }
    }

    /// A name qualified by a keyspace.
    pub fn qualified(keyspace: impl Into<String>, name: impl Into<String>) -> QualifiedName {
        QualifiedName {
            keyspace: Some(Ident::new(keyspace)),
            name: Ident::new(name),
        }
    }
}

/// A value in a statement: a constant, a bind marker or a function call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Term {
    /// A constant.
    Literal(Literal),
    /// `?` (None) or `:name` (Some(name)).
    BindMarker(Option<String>),
    /// A call of one of the [`Function`]s, e.g. `toTimestamp(now())`.
    FunctionCall {
        /// The function name (normalized, e.g. `totimestamp`).
        name: Ident,
        /// The arguments.
        args: Vec<Term>,
    },
}

/// The scalar functions CQL-lite knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Function {
    /// `now()`: a new timeuuid for the current time.
    Now,
    /// `uuid()`: a new random (version 4) uuid.
    Uuid,
    /// `toTimestamp(x)`: the timestamp of a timeuuid or date.
    ToTimestamp,
    /// `currentTimestamp()`: the current time as a timestamp.
    CurrentTimestamp,
}

impl Function {
    /// Every function.
    pub const ALL: [Function; 4] = [
        Function::Now,
        Function::Uuid,
        Function::ToTimestamp,
        Function::CurrentTimestamp,
    ];

    /// Looks a function up by name, case-insensitively.
    pub fn from_name(name: &str) -> Option<Function> {
        Function::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
    }

    /// The canonical spelling (`toTimestamp`).
    pub fn name(self) -> &'static str {
        match self {
            Function::Now => "now",
            Function::Uuid => "uuid",
            Function::ToTimestamp => "toTimestamp",
            Function::CurrentTimestamp => "currentTimestamp",
        }
    }

    /// How many arguments it takes.
    pub fn arity(self) -> usize {
        match self {
            Function::ToTimestamp => 1,
            _ => 0,
        }
    }

    /// The type of its result.
    pub fn return_type(self) -> DataType {
        match self {
            Function::Now => DataType::TimeUuid,
            Function::Uuid => DataType::Uuid,
            Function::ToTimestamp | Function::CurrentTimestamp => DataType::Timestamp,
        }
    }
}

/// Sort direction of a clustering column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Order {
    /// Ascending (the default).
    Asc,
    /// Descending.
    Desc,
}

/// A keyspace's replication, from `WITH replication = {...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Replication {
    /// `{'class': 'SimpleStrategy', 'replication_factor': n}`.
    Simple {
        /// Copies of each partition.
        replication_factor: u32,
    },
    /// `{'class': 'NetworkTopologyStrategy', 'dc1': n, ...}`.
    NetworkTopology {
        /// Copies per datacenter, in the order written.
        datacenters: Vec<(String, u32)>,
    },
}

/// `CREATE KEYSPACE [IF NOT EXISTS] ks WITH replication = {...} [AND durable_writes = b]
/// [AND sloppy_quorum = b]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateKeyspace {
    /// `IF NOT EXISTS` was given.
    pub if_not_exists: bool,
    /// The keyspace.
    pub name: Ident,
    /// The replication strategy (mandatory).
    pub replication: Replication,
    /// `durable_writes`, when given.
    pub durable_writes: Option<bool>,
    /// `sloppy_quorum`, when given: whether writes may count hinted
    /// fallback nodes toward W (off: strict quorums).
    pub sloppy_quorum: Option<bool>,
}

/// `ALTER KEYSPACE [IF EXISTS] ks WITH ...`: at least one option is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlterKeyspace {
    /// `IF EXISTS` was given.
    pub if_exists: bool,
    /// The keyspace.
    pub name: Ident,
    /// New replication, when given.
    pub replication: Option<Replication>,
    /// New `durable_writes`, when given.
    pub durable_writes: Option<bool>,
    /// New `sloppy_quorum`, when given.
    pub sloppy_quorum: Option<bool>,
}

/// `DROP KEYSPACE [IF EXISTS] ks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DropKeyspace {
    /// `IF EXISTS` was given.
    pub if_exists: bool,
    /// The keyspace.
    pub name: Ident,
}

/// A column definition in `CREATE TABLE` or `ALTER TABLE ADD`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDef {
    /// The column.
    pub name: Ident,
    /// Its type.
    pub data_type: DataType,
}

/// A table's primary key: partition key columns, then clustering columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrimaryKey {
    /// The partition key (at least one column).
    pub partition: Vec<Ident>,
    /// The clustering columns, in order.
    pub clustering: Vec<Ident>,
}

/// The compaction strategies ringdb's storage implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CompactionStrategy {
    /// `SizeTieredCompactionStrategy` (the default).
    SizeTiered,
    /// `TimeWindowCompactionStrategy`, for time series.
    TimeWindow,
}

impl CompactionStrategy {
    /// The class name as written in CQL.
    pub fn class_name(self) -> &'static str {
        match self {
            CompactionStrategy::SizeTiered => "SizeTieredCompactionStrategy",
            CompactionStrategy::TimeWindow => "TimeWindowCompactionStrategy",
        }
    }

    /// Looks a class up by its short or fully qualified name.
    pub fn from_class(class: &str) -> Option<CompactionStrategy> {
        let short = class
            .strip_prefix("org.apache.cassandra.db.compaction.")
            .unwrap_or(class);
        [
            CompactionStrategy::SizeTiered,
            CompactionStrategy::TimeWindow,
        ]
        .into_iter()
        .find(|s| s.class_name().eq_ignore_ascii_case(short))
    }
}

/// `compaction = {'class': ..., other sub-options}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Compaction {
    /// The `class`.
    pub strategy: CompactionStrategy,
    /// The other sub-options, in the order written (interpreted by the schema layer).
    pub options: Vec<(String, Literal)>,
    /// Where each sub-option's value (and `class`'s) was written.
    #[serde(default)]
    pub positions: Positions,
}

/// Table options from `WITH ...` in `CREATE TABLE` / `ALTER TABLE`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TableOptions {
    /// `CLUSTERING ORDER BY (c ASC, ...)`: a prefix of the clustering columns,
    /// in their order; unnamed ones are ascending. Empty in `ALTER TABLE`.
    pub clustering_order: Vec<(Ident, Order)>,
    /// `default_time_to_live` in seconds.
    pub default_time_to_live: Option<u32>,
    /// `gc_grace_seconds`.
    pub gc_grace_seconds: Option<u32>,
    /// `compaction`.
    pub compaction: Option<Compaction>,
    /// `comment`.
    pub comment: Option<String>,
    /// Where each option's value was written (`compaction`: its `{`).
    #[serde(default)]
    pub positions: Positions,
}

impl TableOptions {
    /// True when no option is set.
    pub fn is_empty(&self) -> bool {
        self == &TableOptions::default()
    }
}

/// `CREATE TABLE [IF NOT EXISTS] t (columns, PRIMARY KEY (...)) [WITH ...]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateTable {
    /// `IF NOT EXISTS` was given.
    pub if_not_exists: bool,
    /// The table.
    pub name: QualifiedName,
    /// Every column, in the order written.
    pub columns: Vec<ColumnDef>,
    /// The primary key; its columns are among `columns`.
    pub primary_key: PrimaryKey,
    /// The options.
    pub options: TableOptions,
}

impl CreateTable {
    /// The type of a column, by name.
    pub fn column_type(&self, name: &str) -> Option<DataType> {
        self.columns
            .iter()
            .find(|c| c.name.name == name)
            .map(|c| c.data_type)
    }
}

/// What an `ALTER TABLE` does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AlterTableOp {
    /// `ADD c type` or `ADD (c type, ...)`.
    Add(Vec<ColumnDef>),
    /// `DROP c` or `DROP (c, ...)`.
    Drop(Vec<Ident>),
    /// `WITH option = value AND ...` (no clustering order).
    With(TableOptions),
}

/// `ALTER TABLE t ...`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlterTable {
    /// The table.
    pub name: QualifiedName,
    /// The change.
    pub op: AlterTableOp,
}

/// `DROP TABLE [IF EXISTS] t`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DropTable {
    /// `IF EXISTS` was given.
    pub if_exists: bool,
    /// The table.
    pub name: QualifiedName,
}

/// `TRUNCATE [TABLE] t`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Truncate {
    /// The table.
    pub name: QualifiedName,
}

/// One parameter of a `USING` clause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UsingParam {
    /// `TTL n`: seconds to live (an integer or a bind marker).
    Ttl(Term),
    /// `TIMESTAMP t`: the write time in microseconds (an integer or a bind marker).
    Timestamp(Term),
}

/// A `USING TTL n AND TIMESTAMP t` clause, in the order written (so bind
/// markers keep their positions); each parameter appears at most once.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Using(pub Vec<UsingParam>);

impl Using {
    /// The TTL, if given.
    pub fn ttl(&self) -> Option<&Term> {
        self.0.iter().find_map(|p| match p {
            UsingParam::Ttl(t) => Some(t),
            UsingParam::Timestamp(_) => None,
        })
    }

    /// The timestamp, if given.
    pub fn timestamp(&self) -> Option<&Term> {
        self.0.iter().find_map(|p| match p {
            UsingParam::Timestamp(t) => Some(t),
            UsingParam::Ttl(_) => None,
        })
    }

    /// True when there is no `USING` clause.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `INSERT INTO t (cols) VALUES (terms) [USING ...]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Insert {
    /// The table.
    pub table: QualifiedName,
    /// The columns, as many as `values`, without duplicates.
    pub columns: Vec<Ident>,
    /// The values.
    pub values: Vec<Term>,
    /// `USING TTL` / `TIMESTAMP`.
    pub using: Using,
}

/// `column = term` in an `UPDATE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// The column set.
    pub column: Ident,
    /// Its new value.
    pub value: Term,
}

/// `UPDATE t [USING ...] SET assignments WHERE relations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Update {
    /// The table.
    pub table: QualifiedName,
    /// `USING TTL` / `TIMESTAMP`.
    pub using: Using,
    /// The assignments (at least one, each column once).
    pub assignments: Vec<Assignment>,
    /// The WHERE clause (the full primary key, checked against the schema later).
    pub where_clause: Vec<Relation>,
}

/// `DELETE [cols] FROM t [USING TIMESTAMP t] WHERE relations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delete {
    /// Columns to delete; empty deletes whole rows.
    pub columns: Vec<Ident>,
    /// The table.
    pub table: QualifiedName,
    /// `USING TIMESTAMP`, if given.
    pub timestamp: Option<Term>,
    /// The WHERE clause.
    pub where_clause: Vec<Relation>,
}

/// `BEGIN BATCH` (logged) or `BEGIN UNLOGGED BATCH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BatchKind {
    /// A logged batch (the default).
    Logged,
    /// `UNLOGGED`.
    Unlogged,
}

/// A statement allowed inside a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BatchStatement {
    /// An INSERT.
    Insert(Insert),
    /// An UPDATE.
    Update(Update),
    /// A DELETE.
    Delete(Delete),
}

/// `BEGIN [UNLOGGED] BATCH [USING TIMESTAMP t] statements APPLY BATCH`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Logged or not.
    pub kind: BatchKind,
    /// `USING TIMESTAMP`, if given.
    pub timestamp: Option<Term>,
    /// The statements, in order.
    pub statements: Vec<BatchStatement>,
}

/// A comparison operator in a WHERE clause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Operator {
    /// `=`
    Eq,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Operator {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            Operator::Eq => "=",
            Operator::Lt => "<",
            Operator::Le => "<=",
            Operator::Gt => ">",
            Operator::Ge => ">=",
        }
    }

    /// True for `<`, `<=`, `>`, `>=`.
    pub fn is_slice(self) -> bool {
        !matches!(self, Operator::Eq)
    }
}

/// The right-hand side of `IN`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InValues {
    /// `IN (t1, t2, ...)` (possibly empty).
    List(Vec<Term>),
    /// `IN ?` or `IN :name`: the whole list is bound.
    Marker(Option<String>),
}

/// One restriction of a WHERE clause; restrictions are joined by AND.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Relation {
    /// `column op term`.
    Compare {
        /// The column.
        column: Ident,
        /// The operator.
        op: Operator,
        /// The value.
        value: Term,
    },
    /// `column IN (...)`.
    In {
        /// The column.
        column: Ident,
        /// The values.
        values: InValues,
    },
}

impl Relation {
    /// The restricted column.
    pub fn column(&self) -> &Ident {
        match self {
            Relation::Compare { column, .. } | Relation::In { column, .. } => column,
        }
    }
}

/// An aggregate function of a selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Aggregate {
    /// `count(col)`: non-null values.
    Count,
    /// `min(col)`
    Min,
    /// `max(col)`
    Max,
    /// `sum(col)`
    Sum,
    /// `avg(col)`
    Avg,
}

impl Aggregate {
    /// Every aggregate.
    pub const ALL: [Aggregate; 5] = [
        Aggregate::Count,
        Aggregate::Min,
        Aggregate::Max,
        Aggregate::Sum,
        Aggregate::Avg,
    ];

    /// The function name (lowercase).
    pub fn name(self) -> &'static str {
        match self {
            Aggregate::Count => "count",
            Aggregate::Min => "min",
            Aggregate::Max => "max",
            Aggregate::Sum => "sum",
            Aggregate::Avg => "avg",
        }
    }

    /// Looks an aggregate up by name, case-insensitively.
    pub fn from_name(name: &str) -> Option<Aggregate> {
        Aggregate::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }
}

/// What a SELECT item computes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Selector {
    /// A column's value.
    Column(Ident),
    /// `COUNT(*)` (also written `COUNT(1)`).
    CountStar,
    /// `min/max/sum/avg/count(col)`.
    Aggregate {
        /// The function.
        function: Aggregate,
        /// Its column.
        column: Ident,
    },
    /// `WRITETIME(col)`: the write timestamp of a regular column.
    WriteTime(Ident),
    /// `TTL(col)`: the remaining time to live of a regular column.
    Ttl(Ident),
}

/// A selector with an optional `AS alias`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectItem {
    /// What is computed.
    pub selector: Selector,
    /// `AS alias`, if given.
    pub alias: Option<Ident>,
}

/// The selection of a SELECT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Selection {
    /// `*`
    All,
    /// A list of items (at least one).
    Items(Vec<SelectItem>),
}

/// `column ASC|DESC` in ORDER BY.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ordering {
    /// A clustering column.
    pub column: Ident,
    /// The direction (ASC when not written).
    pub order: Order,
}

/// `SELECT ...`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Select {
    /// `DISTINCT` (partition keys only).
    pub distinct: bool,
    /// What to return.
    pub selection: Selection,
    /// The table.
    pub table: QualifiedName,
    /// The WHERE clause (may be empty).
    pub where_clause: Vec<Relation>,
    /// `GROUP BY` columns (a primary key prefix).
    pub group_by: Vec<Ident>,
    /// `ORDER BY` clustering columns.
    pub order_by: Vec<Ordering>,
    /// `PER PARTITION LIMIT n`.
    pub per_partition_limit: Option<Term>,
    /// `LIMIT n`.
    pub limit: Option<Term>,
    /// `ALLOW FILTERING`.
    pub allow_filtering: bool,
    /// `WITH SIBLINGS`: ringdb's extension returning every conflicting version.
    pub with_siblings: bool,
}

/// A CQL-lite statement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Statement {
    /// CREATE KEYSPACE
    CreateKeyspace(CreateKeyspace),
    /// ALTER KEYSPACE
    AlterKeyspace(AlterKeyspace),
    /// DROP KEYSPACE
    DropKeyspace(DropKeyspace),
    /// USE ks
    Use(Ident),
    /// CREATE TABLE
    CreateTable(CreateTable),
    /// ALTER TABLE
    AlterTable(AlterTable),
    /// DROP TABLE
    DropTable(DropTable),
    /// TRUNCATE
    Truncate(Truncate),
    /// INSERT
    Insert(Insert),
    /// UPDATE
    Update(Update),
    /// DELETE
    Delete(Delete),
    /// BEGIN ... APPLY BATCH
    Batch(Batch),
    /// SELECT
    Select(Select),
}

impl Statement {
    /// The bind markers in the order they appear in the text: `None` for
    /// `?`, `Some(name)` for `:name`. Its length is the number of values
    /// a prepared statement takes.
    pub fn bind_markers(&self) -> Vec<Option<String>> {
        let mut out = Vec::new();
        match self {
            Statement::Insert(i) => markers_insert(i, &mut out),
            Statement::Update(u) => markers_update(u, &mut out),
            Statement::Delete(d) => markers_delete(d, &mut out),
            Statement::Batch(b) => {
                if let Some(t) = &b.timestamp {
                    markers_term(t, &mut out);
                }
                for s in &b.statements {
                    match s {
                        BatchStatement::Insert(i) => markers_insert(i, &mut out),
                        BatchStatement::Update(u) => markers_update(u, &mut out),
                        BatchStatement::Delete(d) => markers_delete(d, &mut out),
                    }
                }
            }
            Statement::Select(s) => {
                markers_relations(&s.where_clause, &mut out);
                for t in s.per_partition_limit.iter().chain(s.limit.iter()) {
                    markers_term(t, &mut out);
                }
            }
            _ => {}
        }
        out
    }

    /// True for statements that change the schema (DDL).
    pub fn is_schema_change(&self) -> bool {
        matches!(
            self,
            Statement::CreateKeyspace(_)
                | Statement::AlterKeyspace(_)
                | Statement::DropKeyspace(_)
                | Statement::CreateTable(_)
                | Statement::AlterTable(_)
                | Statement::DropTable(_)
        )
    }

    /// The table the statement works on, if it works on exactly one.
    pub fn table(&self) -> Option<&QualifiedName> {
        match self {
            Statement::CreateTable(s) => Some(&s.name),
            Statement::AlterTable(s) => Some(&s.name),
            Statement::DropTable(s) => Some(&s.name),
            Statement::Truncate(s) => Some(&s.name),
            Statement::Insert(s) => Some(&s.table),
            Statement::Update(s) => Some(&s.table),
            Statement::Delete(s) => Some(&s.table),
            Statement::Select(s) => Some(&s.table),
            _ => None,
        }
    }
}

fn markers_term(t: &Term, out: &mut Vec<Option<String>>) {
    match t {
        Term::Literal(_) => {}
        Term::BindMarker(m) => out.push(m.clone()),
        Term::FunctionCall { args, .. } => args.iter().for_each(|a| markers_term(a, out)),
    }
}

fn markers_using(u: &Using, out: &mut Vec<Option<String>>) {
    for p in &u.0 {
        match p {
            UsingParam::Ttl(t) | UsingParam::Timestamp(t) => markers_term(t, out),
        }
    }
}

fn markers_relations(rs: &[Relation], out: &mut Vec<Option<String>>) {
    for r in rs {
        match r {
            Relation::Compare { value, .. } => markers_term(value, out),
            Relation::In {
                values: InValues::List(ts),
                ..
            } => ts.iter().for_each(|t| markers_term(t, out)),
            Relation::In {
                values: InValues::Marker(m),
                ..
            } => out.push(m.clone()),
        }
    }
}

fn markers_insert(i: &Insert, out: &mut Vec<Option<String>>) {
    i.values.iter().for_each(|t| markers_term(t, out));
    markers_using(&i.using, out);
}

fn markers_update(u: &Update, out: &mut Vec<Option<String>>) {
    markers_using(&u.using, out);
    u.assignments
        .iter()
        .for_each(|a| markers_term(&a.value, out));
    markers_relations(&u.where_clause, out);
}

fn markers_delete(d: &Delete, out: &mut Vec<Option<String>>) {
    if let Some(t) = &d.timestamp {
        markers_term(t, out);
    }
    markers_relations(&d.where_clause, out);
}
