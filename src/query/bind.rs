//! Bind markers: their names and types, and binding values to them.
//!
//! Markers are visited in text order (the order of
//! [`cql_lite::Statement::bind_markers`]). Every `?` is one variable; a
//! `:name` is one variable per distinct name (its first occurrence fixes
//! its position), so a name used twice takes one value.
//!
//! A marker standing for a whole `IN` list (`k IN ?`, `k IN :ids`) takes a
//! [`Value::List`]; binding turns it into the literal list `IN (a, b, c)`,
//! so everything after binding (checks, planning, execution) treats it
//! exactly as the literal list. A list bound anywhere else is refused here,
//! and this is the only way a list enters a statement: a list can never
//! reach a cell.

use super::api::{MarkerSpec, QueryError};
use super::eval::{coerce, invalid, literal_of};
use crate::schema::Schema;
use cql_lite::analyze::ColumnKind;
use cql_lite::ast::{
    BatchStatement, Delete, Function, InValues, Insert, QualifiedName, Relation, Select, Statement,
    Term, Update, Using, UsingParam,
};
use cql_lite::{DataType, MarkerType, Value};

/// The most key combinations the IN lists of one statement may select:
/// the product of the IN list lengths over the partition key columns, and
/// separately over the clustering columns. Planning makes one key per
/// combination, so without a bound two long lists on a composite key
/// (bound or literal) would make the node allocate without limit.
pub const MAX_IN_COMBINATIONS: u128 = 100_000;

/// One marker occurrence: its variable's name and type.
struct Slot {
    name: Option<String>,
    spec: MarkerSpec,
}

/// Where a marker stands: a term, or the whole list of an `IN`.
enum Place<'a> {
    Term(&'a mut Term),
    InList(&'a mut InValues),
}

/// What the visitor calls on every place that may hold a marker, with the
/// name a `?` there takes and the column type.
type Visitor<'f> = dyn FnMut(Place<'_>, &str, DataType) -> Result<(), QueryError> + 'f;

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

/// Calls `f` on every place that may hold a marker, in text order.
fn visit(
    stmt: &mut Statement,
    schema: &Schema,
    keyspace: Option<&str>,
    f: &mut Visitor<'_>,
) -> Result<(), QueryError> {
    fn col_type(t: Option<&crate::schema::Table>, col: &str) -> DataType {
        t.and_then(|t| t.column(col))
            .map(|c| c.data_type)
            .unwrap_or(DataType::Blob)
    }
    fn term(t: &mut Term, name: &str, ty: DataType, f: &mut Visitor<'_>) -> Result<(), QueryError> {
        match t {
            Term::Literal(_) => Ok(()),
            Term::BindMarker(_) => f(Place::Term(t), name, ty),
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
    fn using(u: &mut Using, f: &mut Visitor<'_>) -> Result<(), QueryError> {
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
        f: &mut Visitor<'_>,
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
                Relation::In { column, values } => {
                    let ty = col_type(t, &column.name);
                    f(Place::InList(values), &format!("in({})", column.name), ty)?;
                }
            }
        }
        Ok(())
    }
    fn insert(
        i: &mut Insert,
        schema: &Schema,
        ks: Option<&str>,
        f: &mut Visitor<'_>,
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
        f: &mut Visitor<'_>,
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
        f: &mut Visitor<'_>,
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
        f: &mut Visitor<'_>,
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
    visit(&mut copy, schema, keyspace, &mut |place, name, ty| {
        let (marker, marker_type) = match place {
            Place::Term(Term::BindMarker(m)) => (m.clone(), MarkerType::Single(ty)),
            Place::InList(InValues::Marker(m)) => (m.clone(), MarkerType::List(ty)),
            _ => return Ok(()),
        };
        out.push(Slot {
            spec: MarkerSpec {
                name: marker.clone().unwrap_or_else(|| name.to_string()),
                marker_type,
            },
            name: marker,
        });
        Ok(())
    })?;
    Ok(out)
}

/// Maps each marker occurrence to its variable; returns the variables'
/// specs and, per occurrence, the variable index. A name used for both a
/// single value and a whole `IN` list is an error: one value cannot be both.
fn variables(slots: &[Slot]) -> Result<(Vec<MarkerSpec>, Vec<usize>), QueryError> {
    let mut vars: Vec<MarkerSpec> = Vec::new();
    let mut names: Vec<Option<String>> = Vec::new();
    let mut index = Vec::with_capacity(slots.len());
    for s in slots {
        let existing = s
            .name
            .as_ref()
            .and_then(|n| names.iter().position(|m| m.as_deref() == Some(n.as_str())));
        match existing {
            Some(i) => {
                let first = vars.get(i).map(|v| v.marker_type);
                let kind = |t: Option<MarkerType>| matches!(t, Some(MarkerType::List(_)));
                if kind(first) != kind(Some(s.spec.marker_type)) {
                    return Err(invalid(format!(
                        "The bind marker :{} stands for a whole IN list in one place and for a single value in another",
                        s.spec.name
                    )));
                }
                index.push(i)
            }
            None => {
                index.push(vars.len());
                vars.push(s.spec.clone());
                names.push(s.name.clone());
            }
        }
    }
    Ok((vars, index))
}

/// The variables a statement takes, in order, with names and types.
pub fn bind_specs(
    stmt: &Statement,
    schema: &Schema,
    keyspace: Option<&str>,
) -> Result<Vec<MarkerSpec>, QueryError> {
    Ok(variables(&slots(stmt, schema, keyspace)?)?.0)
}

/// A bound value, typed for its marker.
enum Bound {
    Single(cql_lite::ast::Literal),
    List(Vec<cql_lite::ast::Literal>),
}

/// Types the value of variable `position` (1-based, for messages).
fn typed(position: usize, spec: &MarkerSpec, value: Value) -> Result<Bound, QueryError> {
    let wrong = |got: String| {
        invalid(format!(
            "Invalid value for bind marker {position} ({}): expected {}, got {got}",
            spec.name, spec.marker_type
        ))
    };
    let single = |v: Value, ty: DataType| coerce(v, ty).and_then(|v| literal_of(&v));
    match (spec.marker_type, value) {
        (MarkerType::Single(_), v @ Value::List(_)) => Err(wrong(v.type_name())),
        (MarkerType::Single(ty), v) => {
            let got = v.type_name();
            single(v, ty).map(Bound::Single).ok_or_else(|| wrong(got))
        }
        (MarkerType::List(_), Value::Null) => Err(invalid(format!(
            "Invalid null value for IN restriction (bind marker {position}, {})",
            spec.name
        ))),
        (MarkerType::List(ty), Value::List(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let got = item.type_name();
                let lit = single(item, ty).ok_or_else(|| {
                    invalid(format!(
                        "Invalid value for bind marker {position} ({}): expected {}, got {got} at position {} of the list",
                        spec.name,
                        spec.marker_type,
                        i + 1
                    ))
                })?;
                out.push(lit);
            }
            Ok(Bound::List(out))
        }
        (MarkerType::List(_), v) => Err(wrong(v.type_name())),
    }
}

/// Refuses a statement whose IN lists select more than
/// [`MAX_IN_COMBINATIONS`] partition keys or clustering prefixes.
fn check_in_combinations(
    stmt: &Statement,
    schema: &Schema,
    keyspace: Option<&str>,
) -> Result<(), QueryError> {
    let check = |table: &QualifiedName, relations: &[Relation]| {
        let t = table_types(schema, table, keyspace);
        let (mut partitions, mut clustering) = (1u128, 1u128);
        for r in relations {
            let Relation::In {
                column,
                values: InValues::List(ts),
            } = r
            else {
                continue;
            };
            let n = ts.len() as u128;
            match t.and_then(|t| t.column(&column.name)).map(|c| c.kind) {
                Some(ColumnKind::PartitionKey) => partitions = partitions.saturating_mul(n),
                Some(ColumnKind::Clustering) => clustering = clustering.saturating_mul(n),
                _ => {}
            }
        }
        for (n, what) in [
            (partitions, "partition keys"),
            (clustering, "clustering prefixes"),
        ] {
            if n > MAX_IN_COMBINATIONS {
                return Err(invalid(format!(
                    "The IN restrictions select {n} {what} (the product of the IN list sizes), more than the limit of {MAX_IN_COMBINATIONS}"
                )));
            }
        }
        Ok(())
    };
    match stmt {
        Statement::Select(s) => check(&s.table, &s.where_clause),
        Statement::Update(u) => check(&u.table, &u.where_clause),
        Statement::Delete(d) => check(&d.table, &d.where_clause),
        Statement::Batch(b) => b.statements.iter().try_for_each(|s| match s {
            BatchStatement::Update(u) => check(&u.table, &u.where_clause),
            BatchStatement::Delete(d) => check(&d.table, &d.where_clause),
            BatchStatement::Insert(_) => Ok(()),
        }),
        _ => Ok(()),
    }
}

/// The part of binding that does not depend on the values: which variable
/// each marker occurrence takes and the variables' names and types. A
/// prepared statement works it out once per schema; binding values then
/// only types them and substitutes them.
#[derive(Debug, Clone)]
pub struct Binder {
    /// The variables, in order.
    vars: Vec<MarkerSpec>,
    /// Per marker occurrence (text order), the index of its variable.
    index: Vec<usize>,
}

impl Binder {
    /// The binder of `stmt` against `schema` (the types come from it).
    pub fn new(
        stmt: &Statement,
        schema: &Schema,
        keyspace: Option<&str>,
    ) -> Result<Binder, QueryError> {
        let (vars, index) = variables(&slots(stmt, schema, keyspace)?)?;
        Ok(Binder { vars, index })
    }

    /// The variables the statement takes, in order, with names and types.
    pub fn specs(&self) -> &[MarkerSpec] {
        &self.vars
    }

    /// Replaces every marker of `stmt` (the statement this binder was made
    /// for, against the same schema) by the literal of its bound value (a
    /// whole-list marker by the literal list), after checking the count and
    /// the types; then checks that the IN lists stay within
    /// [`MAX_IN_COMBINATIONS`].
    pub fn bind(
        &self,
        stmt: &Statement,
        schema: &Schema,
        keyspace: Option<&str>,
        values: Vec<Value>,
    ) -> Result<Statement, QueryError> {
        let Binder { vars, index } = self;
        if vars.len() != values.len() {
            return Err(invalid(format!(
                "There were {} markers(?) in CQL but {} bound variables",
                vars.len(),
                values.len()
            )));
        }
        if vars.is_empty() {
            check_in_combinations(stmt, schema, keyspace)?;
            return Ok(stmt.clone());
        }
        let mut bound = Vec::with_capacity(values.len());
        for (i, (spec, v)) in vars.iter().zip(values).enumerate() {
            bound.push(typed(i + 1, spec, v)?);
        }
        let mut out = stmt.clone();
        let mut next = 0usize;
        visit(&mut out, schema, keyspace, &mut |place, _, _| {
            let var = match &place {
                Place::Term(Term::BindMarker(_)) | Place::InList(InValues::Marker(_)) => {
                    let var = index.get(next).copied().unwrap_or(0);
                    next += 1;
                    var
                }
                _ => return Ok(()),
            };
            match (place, bound.get(var)) {
                (Place::Term(t), Some(Bound::Single(lit))) => *t = Term::Literal(lit.clone()),
                (Place::InList(values), Some(Bound::List(lits))) => {
                    *values = InValues::List(lits.iter().cloned().map(Term::Literal).collect())
                }
                _ => return Err(invalid("bind markers changed between checking and binding")),
            }
            Ok(())
        })?;
        check_in_combinations(&out, schema, keyspace)?;
        Ok(out)
    }
}

/// Binds `values` to the markers of `stmt`: [`Binder::new`] then
/// [`Binder::bind`].
pub fn bind(
    stmt: &Statement,
    schema: &Schema,
    keyspace: Option<&str>,
    values: Vec<Value>,
) -> Result<Statement, QueryError> {
    Binder::new(stmt, schema, keyspace)?.bind(stmt, schema, keyspace, values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Timestamp;
    use proptest::prelude::*;

    fn schema() -> Schema {
        let mut schema = Schema::new();
        for text in [
            "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
            "CREATE TABLE ks.t (k int, c bigint, v text, PRIMARY KEY (k, c))",
        ] {
            let stmt = cql_lite::parse_statement(text).unwrap();
            let change = schema
                .change_for(&stmt, None, 7, Timestamp(1))
                .unwrap()
                .unwrap();
            schema = schema.apply(&change).unwrap();
        }
        schema
    }

    fn statement(text: &str) -> Statement {
        cql_lite::parse_statement(text).unwrap()
    }

    #[test]
    fn whole_list_markers_are_lists_of_the_column_type() {
        let s = schema();
        let specs = bind_specs(
            &statement("SELECT * FROM t WHERE k IN ? AND c IN :cs LIMIT ?"),
            &s,
            Some("ks"),
        )
        .unwrap();
        assert_eq!(
            specs,
            vec![
                MarkerSpec {
                    name: "in(k)".into(),
                    marker_type: MarkerType::List(DataType::Int)
                },
                MarkerSpec {
                    name: "cs".into(),
                    marker_type: MarkerType::List(DataType::BigInt)
                },
                MarkerSpec {
                    name: "[limit]".into(),
                    marker_type: MarkerType::Single(DataType::Int)
                },
            ]
        );
    }

    #[test]
    fn a_name_cannot_be_a_list_and_a_value() {
        let s = schema();
        let e = bind_specs(
            &statement("SELECT * FROM t WHERE k IN :x AND c = :x"),
            &s,
            Some("ks"),
        )
        .unwrap_err();
        assert!(e.to_string().contains(":x"), "{e}");
    }

    #[test]
    fn lists_are_refused_outside_in() {
        let s = schema();
        let insert = statement("INSERT INTO t (k, c, v) VALUES (?, ?, ?)");
        let e = bind(
            &insert,
            &s,
            Some("ks"),
            vec![
                Value::Int(1),
                Value::BigInt(2),
                Value::List(vec![Value::Text("a".into())]),
            ],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Invalid value for bind marker 3 (v): expected text, got list<text>"
        );
    }

    #[test]
    fn in_lists_are_bounded() {
        let mut s = schema();
        let stmt = cql_lite::parse_statement(
            "CREATE TABLE ks.c (a int, b int, x int, y int, v int, PRIMARY KEY ((a, b), x, y))",
        )
        .unwrap();
        let change = s.change_for(&stmt, None, 8, Timestamp(2)).unwrap().unwrap();
        s = s.apply(&change).unwrap();
        let list = |n: i32| Value::List((0..n).map(Value::Int).collect());
        let keys = statement("SELECT * FROM c WHERE a IN ? AND b IN ?");
        assert!(bind(&keys, &s, Some("ks"), vec![list(400), list(250)]).is_ok());
        let e = bind(&keys, &s, Some("ks"), vec![list(400), list(251)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "The IN restrictions select 100400 partition keys (the product of the IN list sizes), more than the limit of 100000"
        );
        let rows = statement("DELETE FROM c WHERE a = 1 AND b = 1 AND x IN ? AND y IN ?");
        let e = bind(&rows, &s, Some("ks"), vec![list(1000), list(1000)]).unwrap_err();
        assert!(e.to_string().contains("1000000 clustering prefixes"), "{e}");
        // Literal lists are held to the same bound.
        let literal: Vec<String> = (0..317).map(|i| i.to_string()).collect();
        let literal = literal.join(", ");
        let text = format!("SELECT * FROM c WHERE a IN ({literal}) AND b IN ({literal})");
        assert!(bind(&statement(&text), &s, Some("ks"), vec![]).is_err());
        // A long IN list on a regular column is a filter, not keys.
        let filter = statement("SELECT * FROM c WHERE a = 1 AND b = 1 AND v IN ? ALLOW FILTERING");
        assert!(bind(&filter, &s, Some("ks"), vec![list(200_000)]).is_ok());
    }

    proptest! {
        /// Binding a list to `IN ?` gives the statement with the literal
        /// list, element for element.
        #[test]
        fn a_bound_list_is_the_literal_list(ks in proptest::collection::vec(any::<i32>(), 0..6)) {
            let s = schema();
            let marker = statement("SELECT * FROM t WHERE k IN ?");
            let values = vec![Value::List(ks.iter().copied().map(Value::Int).collect())];
            let bound = bind(&marker, &s, Some("ks"), values).unwrap();
            let list: Vec<String> = ks.iter().map(|k| k.to_string()).collect();
            let literal = statement(&format!("SELECT * FROM t WHERE k IN ({})", list.join(", ")));
            prop_assert_eq!(bound, literal);
        }

        /// A list whose element does not fit the column is refused, naming
        /// the marker and the element.
        #[test]
        fn a_mistyped_element_names_the_marker(n in 0usize..4, bad in ".{0,5}") {
            let s = schema();
            let marker = statement("SELECT * FROM t WHERE k = 1 AND c IN :cs");
            let mut items: Vec<Value> = (0..n).map(|i| Value::BigInt(i as i64)).collect();
            items.push(Value::Text(bad));
            let e = bind(&marker, &s, Some("ks"), vec![Value::List(items)]).unwrap_err();
            prop_assert_eq!(
                e.to_string(),
                format!("Invalid value for bind marker 1 (cs): expected list<bigint>, got text at position {} of the list", n + 1)
            );
        }
    }
}
