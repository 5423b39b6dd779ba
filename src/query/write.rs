//! INSERT, UPDATE, DELETE and BATCH to mutations.

use super::api::{Mutation, QueryError, TableRef};
use super::eval::{invalid, micros_to_hlc, EvalContext};
use crate::model::key::{self, ClusteringOrder};
use crate::model::{CellValue, KeyBound, RangeTombstone, RowWrite, Timestamp};
use crate::schema::Table;
use cql_lite::analyze::ColumnKind;
use cql_lite::ast::{Delete, InValues, Insert, Operator, Relation, Term, Update, Using};
use cql_lite::{DataType, Value};

/// The mutations of one statement, per partition, in statement order.
pub struct Planned {
    /// The table written.
    pub table: TableRef,
    /// Serialized partition key and the mutations for it.
    pub writes: Vec<(Vec<u8>, Mutation)>,
}

/// Settings shared by the statements of one request (a batch shares its
/// timestamp).
pub struct WriteContext<'a> {
    /// Term evaluation.
    pub eval: EvalContext<'a>,
    /// The request's timestamp (HLC, or the batch's `USING TIMESTAMP`).
    pub ts: Timestamp,
    /// Wall-clock milliseconds, for TTL expiry.
    pub now_ms: u64,
}

pub(crate) fn table_ref(t: &Table) -> TableRef {
    TableRef {
        keyspace: t.keyspace().to_string(),
        table: t.name().to_string(),
        id: t.id,
    }
}

fn key_error(e: key::KeyError) -> QueryError {
    invalid(e.to_string())
}

/// The values each key column is restricted to by `=` or `IN`, and the
/// range on the last clustering column, if any.
struct KeyRestrictions {
    /// Per partition key column, its values.
    partition: Vec<Vec<Value>>,
    /// Per restricted clustering column (a prefix), its values by `=`/`IN`.
    clustering: Vec<Vec<Value>>,
    /// Range restrictions on the clustering column after the prefix.
    range: Vec<(Operator, Value)>,
}

fn key_restrictions(
    table: &Table,
    relations: &[Relation],
    ctx: &EvalContext<'_>,
) -> Result<KeyRestrictions, QueryError> {
    let values_of =
        |col: &str, ty: DataType, kind: &str| -> Result<Option<Vec<Value>>, QueryError> {
            let mut out: Option<Vec<Value>> = None;
            for r in relations.iter().filter(|r| r.column().name == col) {
                let vals = match r {
                    Relation::Compare {
                        op: Operator::Eq,
                        value,
                        ..
                    } => vec![ctx.eval(value, ty, col)?],
                    Relation::In {
                        values: InValues::List(ts),
                        ..
                    } => ts
                        .iter()
                        .map(|t| ctx.eval(t, ty, col))
                        .collect::<Result<_, _>>()?,
                    Relation::In { .. } => {
                        return Err(invalid(format!("IN ? on {col} is not supported")))
                    }
                    Relation::Compare { .. } => continue,
                };
                if vals.iter().any(Value::is_null) {
                    return Err(invalid(format!("Invalid null value for {kind} part {col}")));
                }
                out = Some(vals);
            }
            Ok(out)
        };
    let mut partition = Vec::new();
    for c in table.partition_columns() {
        match values_of(&c.name, c.data_type, "partition key")? {
            Some(v) => partition.push(v),
            None => {
                return Err(invalid(format!(
                    "Some partition key parts are missing: {}",
                    c.name
                )))
            }
        }
    }
    let mut clustering = Vec::new();
    let mut range = Vec::new();
    for c in table.clustering_columns() {
        if let Some(v) = values_of(&c.name, c.data_type, "clustering key")? {
            clustering.push(v);
            continue;
        }
        for r in relations.iter().filter(|r| r.column().name == c.name) {
            if let Relation::Compare { op, value, .. } = r {
                let v = ctx.eval(value, c.data_type, &c.name)?;
                if v.is_null() {
                    return Err(invalid(format!(
                        "Invalid null value for clustering key part {}",
                        c.name
                    )));
                }
                range.push((*op, v));
            }
        }
        break;
    }
    Ok(KeyRestrictions {
        partition,
        clustering,
        range,
    })
}

/// Every combination of one value per column (the cartesian product).
pub(crate) fn combinations(lists: &[Vec<Value>]) -> Vec<Vec<Value>> {
    let mut out: Vec<Vec<Value>> = vec![Vec::new()];
    for list in lists {
        let mut next = Vec::with_capacity(out.len() * list.len());
        for prefix in &out {
            for v in list {
                let mut p = prefix.clone();
                p.push(v.clone());
                next.push(p);
            }
        }
        out = next;
    }
    out
}

fn partition_keys(table: &Table, lists: &[Vec<Value>]) -> Result<Vec<Vec<u8>>, QueryError> {
    let types = table.partition_types();
    let mut keys = Vec::new();
    for combo in combinations(lists) {
        let k = key::serialize_partition_key(&combo, &types).map_err(key_error)?;
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    Ok(keys)
}

fn clustering_prefixes(table: &Table, lists: &[Vec<Value>]) -> Result<Vec<Vec<u8>>, QueryError> {
    let types = table.clustering_types();
    let orders = table.clustering_orders();
    let mut out = Vec::new();
    for combo in combinations(lists) {
        let n = combo.len();
        let k = key::encode_clustering(&combo, &types[..n], &orders[..n]).map_err(key_error)?;
        if !out.contains(&k) {
            out.push(k);
        }
    }
    Ok(out)
}

/// Exact-key bounds of a clustering slice: keys `k` with `lo <= k < hi`
/// (`None`: unbounded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    /// Inclusive lower bound on the encoded clustering key.
    pub lo: Option<Vec<u8>>,
    /// Exclusive upper bound.
    pub hi: Option<Vec<u8>>,
}

impl Interval {
    /// Every key starting with `prefix`.
    pub fn prefix(prefix: &[u8]) -> Interval {
        if prefix.is_empty() {
            return Interval { lo: None, hi: None };
        }
        Interval {
            lo: Some(prefix.to_vec()),
            hi: key::prefix_successor(prefix),
        }
    }

    /// True when no key can lie in it.
    pub fn is_empty(&self) -> bool {
        matches!((&self.lo, &self.hi), (Some(l), Some(h)) if l >= h)
    }
}

/// The interval of keys starting with `prefix` whose next component,
/// `value` of type `ty` in `order`, satisfies the range restrictions.
pub(crate) fn range_interval(
    prefix: &[u8],
    ranges: &[(Operator, Value)],
    ty: DataType,
    order: ClusteringOrder,
) -> Result<Interval, QueryError> {
    let mut iv = Interval::prefix(prefix);
    for (op, v) in ranges {
        let mut enc = prefix.to_vec();
        let comp =
            key::encode_clustering(std::slice::from_ref(v), &[ty], &[order]).map_err(key_error)?;
        enc.extend_from_slice(&comp);
        let desc = order == ClusteringOrder::Desc;
        // In byte order, a DESC column's `>` is a `<`.
        let op = match (op, desc) {
            (o, false) => *o,
            (Operator::Gt, true) => Operator::Lt,
            (Operator::Ge, true) => Operator::Le,
            (Operator::Lt, true) => Operator::Gt,
            (Operator::Le, true) => Operator::Ge,
            (Operator::Eq, true) => Operator::Eq,
        };
        let (lo, hi) = match op {
            Operator::Gt => (key::prefix_successor(&enc), None),
            Operator::Ge => (Some(enc.clone()), None),
            Operator::Lt => (None, Some(enc.clone())),
            Operator::Le => (None, key::prefix_successor(&enc)),
            Operator::Eq => (Some(enc.clone()), key::prefix_successor(&enc)),
        };
        if op == Operator::Gt && lo.is_none() {
            // Nothing sorts after an all-0xFF key: the range is empty.
            iv.lo = Some(enc.clone());
            iv.hi = Some(enc);
            continue;
        }
        if let Some(lo) = lo {
            if iv.lo.as_ref().is_none_or(|l| &lo > l) {
                iv.lo = Some(lo);
            }
        }
        if let Some(hi) = hi {
            if iv.hi.as_ref().is_none_or(|h| &hi < h) {
                iv.hi = Some(hi);
            }
        }
    }
    Ok(iv)
}

fn ttl_expiry(
    table: &Table,
    using: Option<&Using>,
    ctx: &WriteContext<'_>,
) -> Result<Option<u64>, QueryError> {
    let ttl = match using.and_then(Using::ttl) {
        Some(t) => ctx.eval.eval_int(t, "[ttl]")?.unwrap_or(0),
        None => i64::from(table.default_time_to_live),
    };
    if !(0..=cql_lite::parser::MAX_TTL as i64).contains(&ttl) {
        return Err(invalid(format!(
            "ttl is out of range: {ttl} (it must be between 0 and {})",
            cql_lite::parser::MAX_TTL
        )));
    }
    Ok((ttl > 0).then(|| ctx.now_ms.saturating_add(ttl as u64 * 1000)))
}

fn timestamp_of(term: Option<&Term>, ctx: &WriteContext<'_>) -> Result<Timestamp, QueryError> {
    match term {
        Some(t) => match ctx.eval.eval_int(t, "[timestamp]")? {
            Some(micros) => micros_to_hlc(micros),
            None => Err(invalid("Invalid null value of timestamp")),
        },
        None => Ok(ctx.ts),
    }
}

/// An INSERT: the row marker and the given cells, with TTL.
pub fn plan_insert(
    table: &Table,
    ins: &Insert,
    ctx: &WriteContext<'_>,
) -> Result<Planned, QueryError> {
    let ts = timestamp_of(ins.using.timestamp(), ctx)?;
    let expires = ttl_expiry(table, Some(&ins.using), ctx)?;
    let mut values = std::collections::HashMap::new();
    for (c, t) in ins.columns.iter().zip(&ins.values) {
        let col = table
            .column(&c.name)
            .ok_or_else(|| invalid(format!("Undefined column name {c}")))?;
        values.insert(
            c.name.clone(),
            (col, ctx.eval.eval(t, col.data_type, &c.name)?),
        );
    }
    let key_part = |name: &str, kind: &str| -> Result<Value, QueryError> {
        match values.get(name) {
            Some((_, v)) if !v.is_null() => Ok(v.clone()),
            Some(_) => Err(invalid(format!(
                "Invalid null value for {kind} part {name}"
            ))),
            None => Err(invalid(format!("Some {kind} parts are missing: {name}"))),
        }
    };
    let pk: Vec<Value> = table
        .def
        .partition_key
        .iter()
        .map(|n| key_part(n, "partition key"))
        .collect::<Result<_, _>>()?;
    let ck: Vec<Value> = table
        .def
        .clustering
        .iter()
        .map(|(n, _)| key_part(n, "clustering key"))
        .collect::<Result<_, _>>()?;
    let pk = key::serialize_partition_key(&pk, &table.partition_types()).map_err(key_error)?;
    let clustering =
        key::encode_clustering(&ck, &table.clustering_types(), &table.clustering_orders())
            .map_err(key_error)?;
    let mut cells = Vec::new();
    for c in &ins.columns {
        if let Some((col, v)) = values.get(&c.name) {
            if col.kind == ColumnKind::Regular {
                cells.push(cell(&c.name, v.clone(), expires));
            }
        }
    }
    let write = RowWrite {
        ts,
        insert_marker: Some(expires),
        delete_row: false,
        cells,
    };
    Ok(Planned {
        table: table_ref(table),
        writes: vec![(
            pk,
            Mutation::Row {
                clustering,
                write,
                context: None,
            },
        )],
    })
}

fn cell(name: &str, v: Value, expires: Option<u64>) -> (String, CellValue, Option<u64>) {
    match v {
        Value::Null => (name.to_string(), CellValue::Deleted, None),
        v => (name.to_string(), CellValue::Live(v), expires),
    }
}

/// A row named by its serialized partition key and encoded clustering key.
type RowKey = (Vec<u8>, Vec<u8>);

fn full_rows(table: &Table, keys: &KeyRestrictions) -> Result<Vec<RowKey>, QueryError> {
    let n = table.def.clustering.len();
    if keys.clustering.len() != n || !keys.range.is_empty() {
        let missing: Vec<&str> = table.def.clustering[keys.clustering.len()..]
            .iter()
            .map(|(c, _)| c.as_str())
            .collect();
        return Err(invalid(format!(
            "Some clustering keys are missing: {}",
            missing.join(", ")
        )));
    }
    let pks = partition_keys(table, &keys.partition)?;
    let cks = clustering_prefixes(table, &keys.clustering)?;
    let mut out = Vec::new();
    for pk in &pks {
        for ck in &cks {
            out.push((pk.clone(), ck.clone()));
        }
    }
    Ok(out)
}

/// An UPDATE: the assigned cells (`null` deletes), no row marker.
pub fn plan_update(
    table: &Table,
    up: &Update,
    ctx: &WriteContext<'_>,
) -> Result<Planned, QueryError> {
    let ts = timestamp_of(up.using.timestamp(), ctx)?;
    let expires = ttl_expiry(table, Some(&up.using), ctx)?;
    let keys = key_restrictions(table, &up.where_clause, &ctx.eval)?;
    let mut cells = Vec::new();
    for a in &up.assignments {
        let col = table
            .column(&a.column.name)
            .ok_or_else(|| invalid(format!("Undefined column name {}", a.column)))?;
        let v = ctx.eval.eval(&a.value, col.data_type, &a.column.name)?;
        cells.push(cell(&a.column.name, v, expires));
    }
    let writes = full_rows(table, &keys)?
        .into_iter()
        .map(|(pk, clustering)| {
            let write = RowWrite {
                ts,
                insert_marker: None,
                delete_row: false,
                cells: cells.clone(),
            };
            (
                pk,
                Mutation::Row {
                    clustering,
                    write,
                    context: None,
                },
            )
        })
        .collect();
    Ok(Planned {
        table: table_ref(table),
        writes,
    })
}

/// A DELETE: cells (columns listed), a row (full key), a range of rows
/// (clustering prefix and/or range) or the partition (partition key only).
pub fn plan_delete(
    table: &Table,
    del: &Delete,
    ctx: &WriteContext<'_>,
) -> Result<Planned, QueryError> {
    let ts = timestamp_of(del.timestamp.as_ref(), ctx)?;
    let keys = key_restrictions(table, &del.where_clause, &ctx.eval)?;
    let n = table.def.clustering.len();
    let full = keys.clustering.len() == n && keys.range.is_empty();
    let mut writes = Vec::new();
    if !del.columns.is_empty() || full {
        let cells: Vec<(String, CellValue, Option<u64>)> = del
            .columns
            .iter()
            .map(|c| (c.name.clone(), CellValue::Deleted, None))
            .collect();
        for (pk, clustering) in full_rows(table, &keys)? {
            let write = RowWrite {
                ts,
                insert_marker: None,
                delete_row: cells.is_empty(),
                cells: cells.clone(),
            };
            writes.push((
                pk,
                Mutation::Row {
                    clustering,
                    write,
                    context: None,
                },
            ));
        }
    } else if keys.clustering.is_empty() && keys.range.is_empty() {
        for pk in partition_keys(table, &keys.partition)? {
            writes.push((pk, Mutation::Partition(ts)));
        }
    } else {
        let prefixes = clustering_prefixes(table, &keys.clustering)?;
        let idx = keys.clustering.len();
        let mut intervals = Vec::new();
        for p in &prefixes {
            let iv = if keys.range.is_empty() {
                Interval::prefix(p)
            } else {
                let col = table.clustering_columns()[idx].data_type;
                let order = table.clustering_orders()[idx];
                range_interval(p, &keys.range, col, order)?
            };
            if !iv.is_empty() {
                intervals.push(iv);
            }
        }
        for pk in partition_keys(table, &keys.partition)? {
            for iv in &intervals {
                let rt = RangeTombstone {
                    start: iv
                        .lo
                        .clone()
                        .map_or(KeyBound::Unbounded, KeyBound::Included),
                    end: iv
                        .hi
                        .clone()
                        .map_or(KeyBound::Unbounded, KeyBound::Excluded),
                    ts,
                };
                writes.push((pk.clone(), Mutation::Range(rt)));
            }
        }
    }
    Ok(Planned {
        table: table_ref(table),
        writes,
    })
}
