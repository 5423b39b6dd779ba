//! Bind markers: their names and types, and binding values to them.
//!
//! Markers are visited in text order (the order of
//! [`cql_lite::Statement::bind_markers`]). Every `?` is one variable; a
//! `:name` is one variable per distinct name (its first occurrence fixes
//! its position), so a name used twice takes one value.

use super::api::{ColumnSpec, QueryError};
use super::eval::{coerce, invalid, literal_of};
use crate::schema::Schema;
use cql_lite::ast::{
    BatchStatement, Delete, Function, InValues, Insert, QualifiedName, Relation, Select, Statement,
    Term, Update, Using, UsingParam,
};
use cql_lite::{DataType, Value};

/// One marker occurrence: its variable's name and type.
struct Slot {
    name: Option<String>,
    spec: ColumnSpec,
}

fn table_types<'s>(
    schema: &'s Schema,
    name: &QualifiedName,
    keyspace: Option<&str>,
) -> Option<&'s crate::schema::Table> {
    let ks = name
        .keyspace
        .as_ref()
        .map(|k| k.name.as_str())
        .or(keyspace)?;
    schema.get_table(ks, &name.name.name)
}

/// Calls `f` on every term that may hold a marker, in text order, with the
/// name and type a marker there takes.
fn visit(
    stmt: &mut Statement,
    schema: &Schema,
    keyspace: Option<&str>,
    f: &mut dyn FnMut(&mut Term, &str, DataType) -> Result<(), QueryError>,
) -> Result<(), QueryError> {
    fn col_type(t: Option<&crate::schema::Table>, col: &str) -> DataType {
        t.and_then(|t| t.column(col))
            .map(|c| c.data_type)
            .unwrap_or(DataType::Blob)
    }
    fn term(
        t: &mut Term,
        name: &str,
        ty: DataType,
        f: &mut dyn FnMut(&mut Term, &str, DataType) -> Result<(), QueryError>,
    ) -> Result<(), QueryError> {
        match t {
            Term::Literal(_) => Ok(()),
            Term::BindMarker(_) => f(t, name, ty),
            Term::FunctionCall { name: fname, args } => {
                let arg_ty = match Function::from_name(&fname.name) {
                    Some(Function::ToTimestamp) => DataType::TimeUuid,
                    _ => DataType::Blob,
                };
                let arg_name = format!("{}(arg)", fname.name);
                for a in args {
                    term(a, &arg_name, arg_ty, f)?;
                }
                Ok(())
            }
        }
    }
    fn using(
        u: &mut Using,
        f: &mut dyn FnMut(&mut Term, &str, DataType) -> Result<(), QueryError>,
    ) -> Result<(), QueryError> {
        for p in &mut u.0 {
            match p {
                UsingParam::Ttl(t) => term(t, "[ttl]", DataType::Int, f)?,
                UsingParam::Timestamp(t) => term(t, "[timestamp]", DataType::BigInt, f)?,
            }
        }
        Ok(())
    }
    fn relations(
        rs: &mut [Relation],
        t: Option<&crate::schema::Table>,
        f: &mut dyn FnMut(&mut Term, &str, DataType) -> Result<(), QueryError>,
    ) -> Result<(), QueryError> {
        for r in rs {
            match r {
                Relation::Compare { column, value, .. } => {
                    let ty = col_type(t, &column.name);
                    term(value, &column.name, ty, f)?
                }
                Relation::In {
                    column,
                    values: InValues::List(ts),
                } => {
                    let ty = col_type(t, &column.name);
                    for v in ts {
                        term(v, &column.name, ty, f)?;
                    }
                }
                Relation::In {
                    column,
                    values: InValues::Marker(_),
                } => {
                    return Err(invalid(format!(
                        "A bind marker for a whole IN list ({column} IN ?) is not supported: bind each value (IN (?, ?, ...))"
                    )))
                }
            }
        }
        Ok(())
    }
    fn insert(
        i: &mut Insert,
        schema: &Schema,
        ks: Option<&str>,
        f: &mut dyn FnMut(&mut Term, &str, DataType) -> Result<(), QueryError>,
    ) -> Result<(), QueryError> {
        let t = table_types(schema, &i.table, ks);
        for (c, v) in i.columns.iter().zip(i.values.iter_mut()) {
            term(v, &c.name, col_type(t, &c.name), f)?;
        }
        using(&mut i.using, f)
    }
    fn update(
        u: &mut Update,
        schema: &Schema,
        ks: Option<&str>,
        f: &mut dyn FnMut(&mut Term, &str, DataType) -> Result<(), QueryError>,
    ) -> Result<(), QueryError> {
        let t = table_types(schema, &u.table, ks);
        using(&mut u.using, f)?;
        for a in &mut u.assignments {
            term(&mut a.value, &a.column.name, col_type(t, &a.column.name), f)?;
        }
        relations(&mut u.where_clause, t, f)
    }
    fn delete(
        d: &mut Delete,
        schema: &Schema,
        ks: Option<&str>,
        f: &mut dyn FnMut(&mut Term, &str, DataType) -> Result<(), QueryError>,
    ) -> Result<(), QueryError> {
        let t = table_types(schema, &d.table, ks);
        if let Some(ts) = &mut d.timestamp {
            term(ts, "[timestamp]", DataType::BigInt, f)?;
        }
        relations(&mut d.where_clause, t, f)
    }
    fn select(
        s: &mut Select,
        schema: &Schema,
        ks: Option<&str>,
        f: &mut dyn FnMut(&mut Term, &str, DataType) -> Result<(), QueryError>,
    ) -> Result<(), QueryError> {
        let t = table_types(schema, &s.table, ks);
        relations(&mut s.where_clause, t, f)?;
        if let Some(p) = &mut s.per_partition_limit {
            term(p, "[per_partition_limit]", DataType::Int, f)?;
        }
        if let Some(l) = &mut s.limit {
            term(l, "[limit]", DataType::Int, f)?;
        }
        Ok(())
    }
    match stmt {
        Statement::Insert(i) => insert(i, schema, keyspace, f),
        Statement::Update(u) => update(u, schema, keyspace, f),
        Statement::Delete(d) => delete(d, schema, keyspace, f),
        Statement::Batch(b) => {
            if let Some(ts) = &mut b.timestamp {
                term(ts, "[timestamp]", DataType::BigInt, f)?;
            }
            for s in &mut b.statements {
                match s {
                    BatchStatement::Insert(i) => insert(i, schema, keyspace, f)?,
                    BatchStatement::Update(u) => update(u, schema, keyspace, f)?,
                    BatchStatement::Delete(d) => delete(d, schema, keyspace, f)?,
                }
            }
            Ok(())
        }
        Statement::Select(s) => select(s, schema, keyspace, f),
        _ => Ok(()),
    }
}

fn slots(
    stmt: &Statement,
    schema: &Schema,
    keyspace: Option<&str>,
) -> Result<Vec<Slot>, QueryError> {
    let mut copy = stmt.clone();
    let mut out = Vec::new();
    visit(&mut copy, schema, keyspace, &mut |t, name, ty| {
        if let Term::BindMarker(m) = t {
            out.push(Slot {
                name: m.clone(),
                spec: ColumnSpec {
                    name: m.clone().unwrap_or_else(|| name.to_string()),
                    data_type: ty,
                },
            });
        }
        Ok(())
    })?;
    Ok(out)
}

/// Maps each marker occurrence to its variable; returns the variables'
/// specs and, per occurrence, the variable index.
fn variables(slots: &[Slot]) -> (Vec<ColumnSpec>, Vec<usize>) {
    let mut vars: Vec<ColumnSpec> = Vec::new();
    let mut names: Vec<Option<String>> = Vec::new();
    let mut index = Vec::with_capacity(slots.len());
    for s in slots {
        let existing = s
            .name
            .as_ref()
            .and_then(|n| names.iter().position(|m| m.as_deref() == Some(n.as_str())));
        match existing {
            Some(i) => index.push(i),
            None => {
                index.push(vars.len());
                vars.push(s.spec.clone());
                names.push(s.name.clone());
            }
        }
    }
    (vars, index)
}

/// The variables a statement takes, in order, with names and types.
pub fn bind_specs(
    stmt: &Statement,
    schema: &Schema,
    keyspace: Option<&str>,
) -> Result<Vec<ColumnSpec>, QueryError> {
    Ok(variables(&slots(stmt, schema, keyspace)?).0)
}

/// Replaces every marker by the literal of its bound value, after checking
/// the count and the types.
pub fn bind(
    stmt: &Statement,
    schema: &Schema,
    keyspace: Option<&str>,
    values: Vec<Value>,
) -> Result<Statement, QueryError> {
    let slots = slots(stmt, schema, keyspace)?;
    let (vars, index) = variables(&slots);
    if vars.len() != values.len() {
        return Err(invalid(format!(
            "There were {} markers(?) in CQL but {} bound variables",
            vars.len(),
            values.len()
        )));
    }
    if vars.is_empty() {
        return Ok(stmt.clone());
    }
    let mut typed = Vec::with_capacity(values.len());
    for (i, (spec, v)) in vars.iter().zip(values).enumerate() {
        let got = v
            .data_type()
            .map(|t| t.name())
            .unwrap_or("null")
            .to_string();
        let value = coerce(v, spec.data_type).ok_or_else(|| {
            invalid(format!(
                "Invalid value for bind marker {} ({}): expected {}, got {got}",
                i + 1,
                spec.name,
                spec.data_type
            ))
        })?;
        typed.push(value);
    }
    let mut out = stmt.clone();
    let mut next = 0usize;
    visit(&mut out, schema, keyspace, &mut |t, _, _| {
        if let Term::BindMarker(_) = t {
            let var = index.get(next).copied().unwrap_or(0);
            next += 1;
            if let Some(v) = typed.get(var) {
                *t = Term::Literal(literal_of(v));
            }
        }
        Ok(())
    })?;
    Ok(out)
}
