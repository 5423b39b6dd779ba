//! The printer: statements back to canonical CQL text.
//!
//! `Display` on [`Statement`] and its parts gives text that parses back to an
//! equal tree. Keywords are uppercase, identifiers are quoted only when
//! needed (not `[a-z][a-z0-9_]*`, or a reserved keyword), floats are printed
//! in their shortest exact form.

use crate::ast::*;
use crate::lexer::is_reserved_keyword;
use std::fmt::{self, Display, Formatter, Write};

/// True if `name` must be written in double quotes to read back as itself.
pub fn needs_quoting(name: &str) -> bool {
    let mut chars = name.chars();
    let simple = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    !simple || is_reserved_keyword(name)
}

/// Writes an identifier, quoting it (`"Like""This"`) when needed.
pub fn write_ident(f: &mut impl Write, name: &str) -> fmt::Result {
    if needs_quoting(name) {
        write!(f, "\"{}\"", name.replace('"', "\"\""))
    } else {
        f.write_str(name)
    }
}

/// Writes a string literal with `'` doubled.
pub fn write_string(f: &mut impl Write, s: &str) -> fmt::Result {
    write!(f, "'{}'", s.replace('\'', "''"))
}

/// Prints a script: each statement followed by `;` on its own line.
pub fn print_script(statements: &[Statement]) -> String {
    let mut out = String::new();
    for s in statements {
        out.push_str(&s.to_string());
        out.push_str(";\n");
    }
    out
}

/// Writes `items` separated by `, `.
fn list<T: Display>(f: &mut Formatter<'_>, items: &[T]) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

impl Display for Ident {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write_ident(f, &self.name)
    }
}

impl Display for QualifiedName {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if let Some(ks) = &self.keyspace {
            write!(f, "{ks}.")?;
        }
        write!(f, "{}", self.name)
    }
}

impl Display for Literal {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Integer(i) => write!(f, "{i}"),
            Literal::Float(x) if x.is_nan() => f.write_str("NaN"),
            Literal::Float(x) if x.is_infinite() => {
                f.write_str(if *x > 0.0 { "Infinity" } else { "-Infinity" })
            }
            // Debug prints the shortest text that reads back exactly, and
            // always with a '.' or an exponent.
            Literal::Float(x) => write!(f, "{x:?}"),
            Literal::String(s) => write_string(f, s),
            Literal::Blob(b) => {
                f.write_str("0x")?;
                b.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
            }
            Literal::Uuid(u) => f.write_str(&crate::types::format_uuid(*u)),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Null => f.write_str("NULL"),
        }
    }
}

impl Display for Term {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Term::Literal(l) => write!(f, "{l}"),
            Term::BindMarker(None) => f.write_str("?"),
            Term::BindMarker(Some(name)) => {
                f.write_str(":")?;
                write_ident(f, name)
            }
            Term::FunctionCall { name, args } => {
                match Function::from_name(&name.name) {
                    Some(func) if func.name().to_ascii_lowercase() == name.name => {
                        f.write_str(func.name())?
                    }
                    _ => write!(f, "{name}")?,
                }
                f.write_str("(")?;
                list(f, args)?;
                f.write_str(")")
            }
        }
    }
}

impl Display for Order {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Order::Asc => "ASC",
            Order::Desc => "DESC",
        })
    }
}

impl Display for Replication {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Replication::Simple { replication_factor } => write!(
                f,
                "{{'class': 'SimpleStrategy', 'replication_factor': {replication_factor}}}"
            ),
            Replication::NetworkTopology { datacenters } => {
                f.write_str("{'class': 'NetworkTopologyStrategy'")?;
                for (dc, rf) in datacenters {
                    f.write_str(", ")?;
                    write_string(f, dc)?;
                    write!(f, ": {rf}")?;
                }
                f.write_str("}")
            }
        }
    }
}

impl Display for Compaction {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{{'class': '{}'", self.strategy.class_name())?;
        for (k, v) in &self.options {
            f.write_str(", ")?;
            write_string(f, k)?;
            write!(f, ": {v}")?;
        }
        f.write_str("}")
    }
}

impl Display for TableOptions {
    /// The options joined by ` AND ` (without the leading `WITH`).
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if !self.clustering_order.is_empty() {
            let cols: Vec<String> = self
                .clustering_order
                .iter()
                .map(|(c, o)| format!("{c} {o}"))
                .collect();
            parts.push(format!("CLUSTERING ORDER BY ({})", cols.join(", ")));
        }
        if let Some(ttl) = self.default_time_to_live {
            parts.push(format!("default_time_to_live = {ttl}"));
        }
        if let Some(g) = self.gc_grace_seconds {
            parts.push(format!("gc_grace_seconds = {g}"));
        }
        if let Some(c) = &self.compaction {
            parts.push(format!("compaction = {c}"));
        }
        if let Some(c) = &self.comment {
            let mut s = String::from("comment = ");
            write_string(&mut s, c)?;
            parts.push(s);
        }
        f.write_str(&parts.join(" AND "))
    }
}

impl Display for ColumnDef {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.data_type)
    }
}

impl Display for PrimaryKey {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("PRIMARY KEY (")?;
        if self.partition.len() == 1 {
            list(f, &self.partition)?;
        } else {
            f.write_str("(")?;
            list(f, &self.partition)?;
            f.write_str(")")?;
        }
        for c in &self.clustering {
            write!(f, ", {c}")?;
        }
        f.write_str(")")
    }
}

impl Display for Using {
    /// ` USING TTL n AND TIMESTAMP t`, or nothing.
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            f.write_str(if i == 0 { " USING " } else { " AND " })?;
            match p {
                UsingParam::Ttl(t) => write!(f, "TTL {t}")?,
                UsingParam::Timestamp(t) => write!(f, "TIMESTAMP {t}")?,
            }
        }
        Ok(())
    }
}

impl Display for Relation {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Relation::Compare { column, op, value } => {
                write!(f, "{column} {} {value}", op.symbol())
            }
            Relation::In {
                column,
                values: InValues::List(values),
            } => {
                write!(f, "{column} IN (")?;
                list(f, values)?;
                f.write_str(")")
            }
            Relation::In {
                column,
                values: InValues::Marker(m),
            } => write!(f, "{column} IN {}", Term::BindMarker(m.clone())),
        }
    }
}

fn where_clause(f: &mut Formatter<'_>, relations: &[Relation]) -> fmt::Result {
    for (i, r) in relations.iter().enumerate() {
        f.write_str(if i == 0 { " WHERE " } else { " AND " })?;
        write!(f, "{r}")?;
    }
    Ok(())
}

impl Display for Selector {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Column(c) => write!(f, "{c}"),
            Selector::CountStar => f.write_str("COUNT(*)"),
            Selector::Aggregate { function, column } => {
                write!(f, "{}({column})", function.name())
            }
            Selector::WriteTime(c) => write!(f, "WRITETIME({c})"),
            Selector::Ttl(c) => write!(f, "TTL({c})"),
        }
    }
}

impl Display for SelectItem {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.selector)?;
        if let Some(a) = &self.alias {
            write!(f, " AS {a}")?;
        }
        Ok(())
    }
}

impl Display for Ordering {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.column, self.order)
    }
}

impl Display for CreateKeyspace {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("CREATE KEYSPACE ")?;
        if self.if_not_exists {
            f.write_str("IF NOT EXISTS ")?;
        }
        write!(f, "{} WITH replication = {}", self.name, self.replication)?;
        if let Some(d) = self.durable_writes {
            write!(f, " AND durable_writes = {d}")?;
        }
        if let Some(s) = self.sloppy_quorum {
            write!(f, " AND sloppy_quorum = {s}")?;
        }
        Ok(())
    }
}

impl Display for AlterKeyspace {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("ALTER KEYSPACE ")?;
        if self.if_exists {
            f.write_str("IF EXISTS ")?;
        }
        write!(f, "{} WITH ", self.name)?;
        let mut parts = Vec::new();
        if let Some(r) = &self.replication {
            parts.push(format!("replication = {r}"));
        }
        if let Some(d) = self.durable_writes {
            parts.push(format!("durable_writes = {d}"));
        }
        if let Some(s) = self.sloppy_quorum {
            parts.push(format!("sloppy_quorum = {s}"));
        }
        f.write_str(&parts.join(" AND "))
    }
}

impl Display for CreateTable {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("CREATE TABLE ")?;
        if self.if_not_exists {
            f.write_str("IF NOT EXISTS ")?;
        }
        write!(f, "{} (", self.name)?;
        for c in &self.columns {
            write!(f, "{c}, ")?;
        }
        write!(f, "{})", self.primary_key)?;
        if !self.options.is_empty() {
            write!(f, " WITH {}", self.options)?;
        }
        Ok(())
    }
}

impl Display for AlterTable {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "ALTER TABLE {} ", self.name)?;
        match &self.op {
            AlterTableOp::Add(defs) if defs.len() == 1 => write!(f, "ADD {}", defs[0]),
            AlterTableOp::Add(defs) => {
                f.write_str("ADD (")?;
                list(f, defs)?;
                f.write_str(")")
            }
            AlterTableOp::Drop(cols) if cols.len() == 1 => write!(f, "DROP {}", cols[0]),
            AlterTableOp::Drop(cols) => {
                f.write_str("DROP (")?;
                list(f, cols)?;
                f.write_str(")")
            }
            AlterTableOp::With(opts) => write!(f, "WITH {opts}"),
        }
    }
}

impl Display for Insert {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "INSERT INTO {} (", self.table)?;
        list(f, &self.columns)?;
        f.write_str(") VALUES (")?;
        list(f, &self.values)?;
        write!(f, "){}", self.using)
    }
}

impl Display for Assignment {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {}", self.column, self.value)
    }
}

impl Display for Update {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "UPDATE {}{} SET ", self.table, self.using)?;
        list(f, &self.assignments)?;
        where_clause(f, &self.where_clause)
    }
}

impl Display for Delete {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("DELETE ")?;
        if !self.columns.is_empty() {
            list(f, &self.columns)?;
            f.write_str(" ")?;
        }
        write!(f, "FROM {}", self.table)?;
        if let Some(t) = &self.timestamp {
            write!(f, " USING TIMESTAMP {t}")?;
        }
        where_clause(f, &self.where_clause)
    }
}

impl Display for BatchStatement {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            BatchStatement::Insert(s) => write!(f, "{s}"),
            BatchStatement::Update(s) => write!(f, "{s}"),
            BatchStatement::Delete(s) => write!(f, "{s}"),
        }
    }
}

impl Display for Batch {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("BEGIN ")?;
        if self.kind == BatchKind::Unlogged {
            f.write_str("UNLOGGED ")?;
        }
        f.write_str("BATCH")?;
        if let Some(t) = &self.timestamp {
            write!(f, " USING TIMESTAMP {t}")?;
        }
        for s in &self.statements {
            write!(f, " {s};")?;
        }
        f.write_str(" APPLY BATCH")
    }
}

fn is_distinct_column(item: &SelectItem) -> bool {
    matches!(&item.selector, Selector::Column(c) if c.name == "distinct")
}

impl Display for Select {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("SELECT ")?;
        if self.distinct {
            f.write_str("DISTINCT ")?;
        }
        match &self.selection {
            Selection::All => f.write_str("*")?,
            Selection::Items(items) => match items.split_first() {
                // A first column named `distinct` is quoted so that it
                // cannot read as the DISTINCT keyword.
                Some((first, rest)) if !self.distinct && is_distinct_column(first) => {
                    f.write_str("\"distinct\"")?;
                    if let Some(a) = &first.alias {
                        write!(f, " AS {a}")?;
                    }
                    for item in rest {
                        write!(f, ", {item}")?;
                    }
                }
                _ => list(f, items)?,
            },
        }
        write!(f, " FROM {}", self.table)?;
        where_clause(f, &self.where_clause)?;
        if !self.group_by.is_empty() {
            f.write_str(" GROUP BY ")?;
            list(f, &self.group_by)?;
        }
        if !self.order_by.is_empty() {
            f.write_str(" ORDER BY ")?;
            list(f, &self.order_by)?;
        }
        if let Some(n) = &self.per_partition_limit {
            write!(f, " PER PARTITION LIMIT {n}")?;
        }
        if let Some(n) = &self.limit {
            write!(f, " LIMIT {n}")?;
        }
        if self.allow_filtering {
            f.write_str(" ALLOW FILTERING")?;
        }
        if self.with_siblings {
            f.write_str(" WITH SIBLINGS")?;
        }
        Ok(())
    }
}

impl Display for Statement {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Statement::CreateKeyspace(s) => write!(f, "{s}"),
            Statement::AlterKeyspace(s) => write!(f, "{s}"),
            Statement::DropKeyspace(s) => {
                f.write_str("DROP KEYSPACE ")?;
                if s.if_exists {
                    f.write_str("IF EXISTS ")?;
                }
                write!(f, "{}", s.name)
            }
            Statement::Use(ks) => write!(f, "USE {ks}"),
            Statement::CreateTable(s) => write!(f, "{s}"),
            Statement::AlterTable(s) => write!(f, "{s}"),
            Statement::DropTable(s) => {
                f.write_str("DROP TABLE ")?;
                if s.if_exists {
                    f.write_str("IF EXISTS ")?;
                }
                write!(f, "{}", s.name)
            }
            Statement::Truncate(s) => write!(f, "TRUNCATE {}", s.name),
            Statement::Insert(s) => write!(f, "{s}"),
            Statement::Update(s) => write!(f, "{s}"),
            Statement::Delete(s) => write!(f, "{s}"),
            Statement::Batch(s) => write!(f, "{s}"),
            Statement::Select(s) => write!(f, "{s}"),
        }
    }
}
