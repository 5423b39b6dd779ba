//! SELECT: planning and execution.
//!
//! A plan reads either known partitions (every partition key column by `=`
//! or `IN`), each through the same clustering intervals (from `=`, `IN` and
//! ranges, sorted in clustering order), or scans the table in token order.
//! Rows then flow through one pipeline: filters (`ALLOW FILTERING`),
//! `DISTINCT`, `PER PARTITION LIMIT`, grouping and aggregates, `LIMIT` and
//! the page size. A page ends at a position (partition, clustering key or
//! group prefix) that the paging state names, with the counts `LIMIT` and
//! `PER PARTITION LIMIT` need to go on from there.

use super::api::{
    ColumnSpec, DataStore, PagingState, QueryError, QueryOptions, ResultSet, Row, SliceRequest,
    StoredRow, TableRef,
};
use super::eval::{hlc_to_micros, invalid, EvalContext};
use super::write::{combinations, range_interval, table_ref, Interval};
use crate::model::key;
use crate::model::{Cell, CellValue, DotSet, PartitionHeader, RowState, Timestamp};
use crate::schema::Table;
use cql_lite::analyze::{ColumnKind, SelectRestrictions};
use cql_lite::ast::{Aggregate, InValues, Operator, Order, Relation, Select, Selection, Selector};
use cql_lite::{DataType, Value};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

/// How much one request to the [`DataStore`] reads: a SELECT holds at
/// most one such batch in memory at a time (plus the page it builds), so
/// aggregates and filters over a whole table run in bounded memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadBatch {
    /// Rows read per request within a partition (and at most per
    /// partition of a scan request) when the need is unknown.
    pub rows: usize,
    /// Partitions read per scan request.
    pub partitions: usize,
}

impl Default for ReadBatch {
    fn default() -> Self {
        ReadBatch {
            rows: 1000,
            partitions: 64,
        }
    }
}

/// Where a column's value comes from in a row.
#[derive(Debug, Clone, PartialEq)]
enum Source<'t> {
    /// The n-th primary key value (partition key, then clustering).
    Key(usize),
    /// A regular column's cell (the name borrowed from the schema).
    Cell(&'t str),
}

#[derive(Debug, Clone)]
enum Output<'t> {
    Value(Source<'t>),
    WriteTime(String),
    Ttl(String),
    CountStar,
    Agg(Aggregate, Source<'t>, DataType),
}

impl Output<'_> {
    /// Whether the output reads the cell of column `name`.
    fn reads_cell(&self, name: &str) -> bool {
        match self {
            Output::Value(Source::Cell(c)) | Output::Agg(_, Source::Cell(c), _) => *c == name,
            Output::WriteTime(c) | Output::Ttl(c) => c == name,
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
enum Filter<'t> {
    Compare(Source<'t>, Operator, Value),
    In(Source<'t>, Vec<Value>),
}

/// A planned SELECT, borrowing the table's schema from the schema
/// snapshot it was planned against.
#[derive(Debug, Clone)]
pub struct SelectPlan<'t> {
    table: &'t Table,
    tref: TableRef,
    /// Known partitions (values and serialized key), or `None` to scan.
    partitions: Option<Vec<(Vec<Value>, Vec<u8>)>>,
    intervals: Vec<Interval>,
    reverse: bool,
    filters: Vec<Filter<'t>>,
    outputs: Vec<Output<'t>>,
    /// The table's regular columns, sorted by name (see
    /// [`readable_in_place`]).
    regular: Vec<&'t str>,
    /// The result columns.
    pub columns: Arc<[ColumnSpec]>,
    aggregate: bool,
    group_len: usize,
    distinct: bool,
    per_partition_limit: Option<usize>,
    limit: Option<usize>,
    with_siblings: bool,
    order_merge: bool,
    single_row: bool,
    fingerprint: Fingerprint<'t>,
}

/// The hash that ties a paging state to the query it came from (the
/// table and the bound statement), computed only when a paging state is
/// read or made: most queries fit one page, and rendering the statement
/// to hash it cost more than planning a single-row read.
#[derive(Clone)]
pub struct Fingerprint<'t> {
    compute: &'t (dyn Fn() -> u64 + Sync),
    value: std::sync::OnceLock<u64>,
}

impl<'t> Fingerprint<'t> {
    /// A fingerprint `compute` gives when first asked for.
    pub fn new(compute: &'t (dyn Fn() -> u64 + Sync)) -> Fingerprint<'t> {
        Fingerprint {
            compute,
            value: std::sync::OnceLock::new(),
        }
    }

    fn get(&self) -> u64 {
        *self.value.get_or_init(self.compute)
    }
}

impl std::fmt::Debug for Fingerprint<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Fingerprint")
            .field(&self.value.get())
            .finish()
    }
}

fn source_of<'t>(table: &'t Table, name: &str) -> Result<(Source<'t>, DataType), QueryError> {
    let col = table
        .column(name)
        .ok_or_else(|| invalid(format!("Undefined column name {name}")))?;
    let npk = table.def.partition_key.len();
    let src = match col.kind {
        ColumnKind::PartitionKey => Source::Key(
            table
                .def
                .partition_key
                .iter()
                .position(|k| k == name)
                .unwrap_or(0),
        ),
        ColumnKind::Clustering => Source::Key(
            npk + table
                .def
                .clustering
                .iter()
                .position(|(k, _)| k == name)
                .unwrap_or(0),
        ),
        ColumnKind::Regular => Source::Cell(col.name.as_str()),
    };
    Ok((src, col.data_type))
}

fn positive(
    ctx: &EvalContext<'_>,
    term: &cql_lite::ast::Term,
    what: &str,
) -> Result<usize, QueryError> {
    match ctx.eval_int(term, what)? {
        Some(n) if n > 0 => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        Some(n) => Err(invalid(format!(
            "{what} must be strictly positive, got {n}"
        ))),
        None => Err(invalid(format!("Invalid null value of {what}"))),
    }
}

/// The result columns of a SELECT, without running it.
pub fn result_columns(table: &Table, s: &cql_lite::ast::Select) -> Vec<ColumnSpec> {
    match &s.selection {
        Selection::All => table
            .select_star_columns()
            .iter()
            .map(|c| ColumnSpec {
                name: c.name.clone(),
                data_type: c.data_type,
            })
            .collect(),
        Selection::Items(items) => items
            .iter()
            .map(|i| {
                let ty_of = |c: &str| {
                    table
                        .column(c)
                        .map(|c| c.data_type)
                        .unwrap_or(DataType::Blob)
                };
                let (name, ty) = match &i.selector {
                    Selector::Column(c) => (c.name.clone(), ty_of(&c.name)),
                    Selector::CountStar => ("count".into(), DataType::BigInt),
                    Selector::Aggregate { function, column } => (
                        format!("system.{}({})", function.name(), column.name),
                        if *function == Aggregate::Count {
                            DataType::BigInt
                        } else {
                            ty_of(&column.name)
                        },
                    ),
                    Selector::WriteTime(c) => (format!("writetime({})", c.name), DataType::BigInt),
                    Selector::Ttl(c) => (format!("ttl({})", c.name), DataType::Int),
                };
                ColumnSpec {
                    name: i.alias.as_ref().map(|a| a.name.clone()).unwrap_or(name),
                    data_type: ty,
                }
            })
            .collect(),
    }
}

/// Plans a SELECT that passed [`cql_lite::analyze::check_select`].
/// `columns` are its [`result_columns`] (worked out once for a prepared
/// statement).
pub fn plan_select<'t>(
    table: &'t Table,
    sel: &Select,
    restrictions: &SelectRestrictions,
    columns: Arc<[ColumnSpec]>,
    ctx: &EvalContext<'_>,
    fingerprint: Fingerprint<'t>,
) -> Result<SelectPlan<'t>, QueryError> {
    let npk = table.def.partition_key.len();
    let nck = table.def.clustering.len();
    // Key restrictions.
    let mut partitions = None;
    let mut intervals = vec![Interval { lo: None, hi: None }];
    let mut single_row = false;
    if restrictions.partition_key_restricted {
        let key_rel: Vec<Relation> = restrictions
            .key_relations
            .iter()
            .filter_map(|&i| sel.where_clause.get(i).cloned())
            .collect();
        let value_lists = |name: &str, ty: DataType| -> Result<Option<Vec<Value>>, QueryError> {
            let mut out = None;
            for r in key_rel.iter().filter(|r| r.column().name == name) {
                let vals = match r {
                    Relation::Compare {
                        op: Operator::Eq,
                        value,
                        ..
                    } => vec![ctx.eval(value, ty, name)?],
                    Relation::In {
                        values: InValues::List(ts),
                        ..
                    } => ts
                        .iter()
                        .map(|t| ctx.eval(t, ty, name))
                        .collect::<Result<Vec<_>, _>>()?,
                    Relation::In { .. } => {
                        return Err(invalid(format!(
                            "No value was bound for the bind marker of in({name})"
                        )))
                    }
                    Relation::Compare { .. } => continue,
                };
                if vals.iter().any(Value::is_null) {
                    return Err(invalid(format!(
                        "Invalid null value in condition for column {name}"
                    )));
                }
                let mut vals = vals;
                vals.sort();
                vals.dedup();
                out = Some(vals);
            }
            Ok(out)
        };
        let mut pk_lists = Vec::new();
        for c in table.partition_columns() {
            pk_lists.push(value_lists(&c.name, c.data_type)?.ok_or_else(|| {
                invalid(format!("Some partition key parts are missing: {}", c.name))
            })?);
        }
        let types = table.partition_types();
        let mut parts = Vec::new();
        for combo in combinations(&pk_lists) {
            let bytes =
                key::serialize_partition_key(&combo, &types).map_err(|e| invalid(e.to_string()))?;
            parts.push((combo, bytes));
        }
        // Clustering: an equality/IN prefix, then maybe a range.
        let mut ck_lists = Vec::new();
        let mut ranges = Vec::new();
        for c in table.clustering_columns() {
            if ck_lists.len() >= restrictions.clustering_prefix {
                break;
            }
            if let Some(v) = value_lists(&c.name, c.data_type)? {
                ck_lists.push(v);
                continue;
            }
            for r in key_rel.iter().filter(|r| r.column().name == c.name) {
                if let Relation::Compare { op, value, .. } = r {
                    let v = ctx.eval(value, c.data_type, &c.name)?;
                    if v.is_null() {
                        return Err(invalid(format!(
                            "Invalid null value in condition for column {}",
                            c.name
                        )));
                    }
                    ranges.push((*op, v));
                }
            }
            break;
        }
        let types = table.clustering_types();
        let orders = table.clustering_orders();
        let mut ivs = Vec::new();
        for combo in combinations(&ck_lists) {
            let n = combo.len();
            let prefix = key::encode_clustering(&combo, &types[..n], &orders[..n])
                .map_err(|e| invalid(e.to_string()))?;
            let iv = if ranges.is_empty() {
                Interval::prefix(&prefix)
            } else {
                range_interval(&prefix, &ranges, types[n], orders[n])?
            };
            if !iv.is_empty() {
                ivs.push(iv);
            }
        }
        ivs.sort_by(|a, b| a.lo.cmp(&b.lo));
        ivs.dedup();
        single_row = parts.len() == 1
            && ck_lists.len() == nck
            && ck_lists.iter().all(|l| l.len() == 1)
            && ranges.is_empty();
        intervals = ivs;
        partitions = Some(parts);
    }
    // Filters.
    let mut filters = Vec::new();
    for &i in &restrictions.filter_relations {
        let Some(r) = sel.where_clause.get(i) else {
            continue;
        };
        let (src, ty) = source_of(table, &r.column().name)?;
        let name = &r.column().name;
        match r {
            Relation::Compare { op, value, .. } => {
                filters.push(Filter::Compare(src, *op, ctx.eval(value, ty, name)?))
            }
            Relation::In {
                values: InValues::List(ts),
                ..
            } => filters.push(Filter::In(
                src,
                ts.iter()
                    .map(|t| ctx.eval(t, ty, name))
                    .collect::<Result<_, _>>()?,
            )),
            Relation::In { .. } => {
                return Err(invalid(format!(
                    "No value was bound for the bind marker of in({name})"
                )))
            }
        }
    }
    // Selection.
    let width = match &sel.selection {
        Selection::All => table.def.columns.len(),
        Selection::Items(items) => items.len(),
    };
    let mut outputs = Vec::with_capacity(width);
    let mut aggregate = !sel.group_by.is_empty();
    let mut regular = Vec::new();
    match &sel.selection {
        Selection::All => {
            let star = table.select_star_columns();
            // Its regular columns come last, sorted by name.
            regular.extend(
                star.iter()
                    .filter(|c| c.kind == ColumnKind::Regular)
                    .map(|c| c.name.as_str()),
            );
            // `SELECT *` lists the key columns first, in key order, so the
            // i-th of them is key value i (unless the table lacks one).
            let keys = star
                .iter()
                .take_while(|c| c.kind != ColumnKind::Regular)
                .count();
            let keys_in_order = keys == npk + nck;
            for (i, c) in star.into_iter().enumerate() {
                let src = match c.kind {
                    ColumnKind::Regular => Source::Cell(c.name.as_str()),
                    _ if keys_in_order => Source::Key(i),
                    _ => source_of(table, &c.name)?.0,
                };
                outputs.push(Output::Value(src));
            }
        }
        Selection::Items(items) => {
            for item in items {
                let out = match &item.selector {
                    Selector::Column(c) => Output::Value(source_of(table, &c.name)?.0),
                    Selector::WriteTime(c) => Output::WriteTime(c.name.clone()),
                    Selector::Ttl(c) => Output::Ttl(c.name.clone()),
                    Selector::CountStar => {
                        aggregate = true;
                        Output::CountStar
                    }
                    Selector::Aggregate { function, column } => {
                        aggregate = true;
                        let (src, ty) = source_of(table, &column.name)?;
                        Output::Agg(*function, src, ty)
                    }
                };
                outputs.push(out);
            }
        }
    }
    if regular.is_empty() {
        regular.extend(table.regular_columns().iter().map(|c| c.name.as_str()));
    }
    if columns.len() != outputs.len() {
        return Err(QueryError::Server(format!(
            "the plan of a SELECT has {} outputs for {} result columns",
            outputs.len(),
            columns.len()
        )));
    }
    let reverse = match sel.order_by.first() {
        Some(o) => table
            .def
            .clustering
            .iter()
            .find(|(c, _)| *c == o.column.name)
            .is_some_and(|(_, declared)| *declared != o.order),
        None => false,
    };
    let order_merge = !sel.order_by.is_empty() && partitions.as_ref().is_some_and(|p| p.len() > 1);
    let per_partition_limit = sel
        .per_partition_limit
        .as_ref()
        .map(|t| positive(ctx, t, "PER PARTITION LIMIT"))
        .transpose()?;
    let limit = sel
        .limit
        .as_ref()
        .map(|t| positive(ctx, t, "LIMIT"))
        .transpose()?;
    let _ = Order::Asc;
    Ok(SelectPlan {
        tref: table_ref(table),
        table,
        partitions,
        intervals,
        reverse,
        filters,
        outputs,
        regular,
        columns,
        aggregate,
        group_len: restrictions.group_prefix.min(npk + nck),
        distinct: sel.distinct,
        per_partition_limit,
        limit,
        with_siblings: sel.with_siblings,
        order_merge,
        single_row: single_row && !aggregate && !sel.distinct,
        fingerprint,
    })
}

/// A row read from the store, resolved.
struct ReadRow {
    partition: Vec<u8>,
    key: Vec<Value>,
    clustering: Vec<u8>,
    cells: RowCells,
    state: RowState,
    shadow: Option<Timestamp>,
}

/// The live, visible cells of a row read.
enum RowCells {
    /// The row has one version and every cell of it is live and visible
    /// (the usual case): the cells are read in place from
    /// [`ReadRow::state`], without copying the version.
    InPlace,
    /// The cells resolved from several versions, or the live and visible
    /// ones of a version that also holds others.
    Owned(BTreeMap<String, Cell>),
}

impl ReadRow {
    /// The live, visible cell of column `name`.
    fn cell(&self, name: &str) -> Option<&Cell> {
        match &self.cells {
            RowCells::InPlace => self.state.versions().first()?.cells.get(name),
            RowCells::Owned(cells) => cells.get(name),
        }
    }

    fn value(&self, src: &Source) -> Value {
        match src {
            Source::Key(i) => self.key.get(*i).cloned().unwrap_or(Value::Null),
            Source::Cell(name) => match self.cell(name) {
                Some(Cell {
                    value: CellValue::Live(v),
                    ..
                }) => v.clone(),
                _ => Value::Null,
            },
        }
    }
}

fn matches(filter: &Filter, row: &ReadRow) -> bool {
    match filter {
        Filter::Compare(src, op, v) => {
            let have = row.value(src);
            if have.is_null() || v.is_null() {
                return false;
            }
            match op {
                Operator::Eq => have == *v,
                Operator::Lt => have < *v,
                Operator::Le => have <= *v,
                Operator::Gt => have > *v,
                Operator::Ge => have >= *v,
            }
        }
        Filter::In(src, vs) => {
            let have = row.value(src);
            !have.is_null() && vs.contains(&have)
        }
    }
}

/// Whether an INSERT row marker keeps the row alive.
fn marker_live(state: &RowState, shadow: Option<Timestamp>, now_ms: u64) -> bool {
    let deleted = state
        .versions()
        .iter()
        .filter_map(|v| v.deleted_at)
        .max()
        .max(shadow);
    state
        .versions()
        .iter()
        .filter_map(|v| v.marker)
        .any(|m| deleted.is_none_or(|d| m.ts > d) && m.expires_at.is_none_or(|e| now_ms < e))
}

/// Whether a cell of column `name` is visible in `table`: the column is a
/// regular column and the cell was not written before the column was
/// dropped.
fn visible(table: &Table, name: &str, cell: &Cell) -> bool {
    table
        .column(name)
        .is_some_and(|c| c.kind == ColumnKind::Regular)
        && table
            .dropped_columns
            .get(name)
            .is_none_or(|dropped| cell.ts > *dropped)
}

/// Live cells of a resolved row, without dropped columns.
fn visible_cells(table: &Table, cells: BTreeMap<String, Cell>) -> BTreeMap<String, Cell> {
    let visible = |name: &String, cell: &Cell| visible(table, name, cell);
    // Usually every cell is: keep the map instead of building another.
    if cells.iter().all(|(name, cell)| visible(name, cell)) {
        return cells;
    }
    cells
        .into_iter()
        .filter(|(name, cell)| visible(name, cell))
        .collect()
}

/// Whether a row's cells can be read in place ([`RowCells::InPlace`]):
/// it has one version, with at least one cell, and every cell is live at
/// `now_ms`, newer than the row's deletion and `shadow`, and visible. Then
/// resolving it would copy the version whole, and [`visible_cells`] would
/// keep every cell, so reading in place gives the same row.
///
/// `regular` is the table's regular columns sorted by name: the cells are
/// sorted by name too, so checking that each is a regular column is one
/// walk over both lists.
fn readable_in_place(
    table: &Table,
    regular: &[&str],
    state: &RowState,
    shadow: Option<Timestamp>,
    now_ms: u64,
) -> bool {
    let [version] = state.versions() else {
        return false;
    };
    let deleted = version.deleted_at.max(shadow);
    let mut columns = regular.iter();
    !version.cells.is_empty()
        && version.cells.iter().all(|(name, cell)| {
            cell.is_live(now_ms)
                && deleted.is_none_or(|d| cell.ts > d)
                && columns.any(|c| *c == name.as_str())
                && table
                    .dropped_columns
                    .get(name)
                    .is_none_or(|dropped| cell.ts > *dropped)
        })
}

fn materialize(
    table: &Table,
    regular: &[&str],
    partition: &[u8],
    pk: &[Value],
    stored: StoredRow,
    header: &PartitionHeader,
    now_ms: u64,
) -> Result<Option<ReadRow>, QueryError> {
    let shadow = header.shadow_for(&stored.clustering);
    let cells = if readable_in_place(table, regular, &stored.state, shadow, now_ms) {
        RowCells::InPlace
    } else {
        let Some(resolved) = stored.state.resolve(shadow, now_ms) else {
            return Ok(None);
        };
        let had_cells = !resolved.cells.is_empty();
        let cells = visible_cells(table, resolved.cells);
        if cells.is_empty() && had_cells && !marker_live(&stored.state, shadow, now_ms) {
            return Ok(None);
        }
        RowCells::Owned(cells)
    };
    let ck = key::decode_clustering(
        &stored.clustering,
        &table.clustering_types(),
        &table.clustering_orders(),
    )
    .map_err(|e| QueryError::Server(format!("stored clustering key: {e}")))?;
    let mut key = pk.to_vec();
    key.extend(ck);
    Ok(Some(ReadRow {
        partition: partition.to_vec(),
        key,
        clustering: stored.clustering,
        cells,
        state: stored.state,
        shadow,
    }))
}

/// Where a page stopped, and the counts to go on with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PageState {
    fingerprint: u64,
    partition: Vec<u8>,
    /// `None`: the partition is done. Otherwise resume after this key or
    /// group prefix (all keys starting with it are done).
    clustering: Option<Vec<u8>>,
    total: u64,
    in_partition: u64,
}

fn codec() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ 1 << 20 }>()
}

impl PageState {
    fn encode(&self) -> PagingState {
        PagingState(bincode::serde::encode_to_vec(self, codec()).unwrap_or_default())
    }

    fn decode(p: &PagingState, fingerprint: u64) -> Result<PageState, QueryError> {
        let bad = || invalid("Invalid value for the paging state");
        let (s, used) =
            bincode::serde::decode_from_slice::<PageState, _>(&p.0, codec()).map_err(|_| bad())?;
        if used != p.0.len() || s.fingerprint != fingerprint {
            return Err(bad());
        }
        Ok(s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    SkipPartition,
    Stop,
}

#[derive(Debug, Clone)]
enum Acc<'t> {
    First(Option<Value>),
    WriteTime(Option<Value>),
    Ttl(Option<Value>),
    Count(i64),
    CountCol(i64, Source<'t>),
    MinMax(Option<Value>, Source<'t>, bool),
    Sum(Source<'t>, DataType, i128, f64, i64, bool),
}

struct Group<'t> {
    key: Vec<Value>,
    accs: Vec<Acc<'t>>,
    partition: Vec<u8>,
    prefix: Option<Vec<u8>>,
    in_partition: u64,
}

struct Position {
    partition: Vec<u8>,
    clustering: Option<Vec<u8>>,
    in_partition: u64,
}

struct Collector<'p> {
    plan: &'p SelectPlan<'p>,
    page_size: usize,
    now_ms: u64,
    rows: Vec<Row>,
    total: u64,
    in_partition: u64,
    last: Option<Position>,
    more: bool,
    group: Option<Group<'p>>,
    context: Option<DotSet>,
    apply_ppl: bool,
}

fn numeric(v: &Value) -> Option<(i128, f64)> {
    match v {
        Value::Int(i) => Some((i128::from(*i), f64::from(*i))),
        Value::BigInt(i) => Some((i128::from(*i), *i as f64)),
        Value::SmallInt(i) => Some((i128::from(*i), f64::from(*i))),
        Value::Float(f) => Some((0, f64::from(*f))),
        Value::Double(f) => Some((0, *f)),
        _ => None,
    }
}

impl<'p> Collector<'p> {
    fn new(plan: &'p SelectPlan<'p>, page_size: usize, now_ms: u64) -> Collector<'p> {
        Collector {
            plan,
            page_size: page_size.max(1),
            now_ms,
            rows: Vec::new(),
            total: 0,
            in_partition: 0,
            last: None,
            more: false,
            group: None,
            context: None,
            apply_ppl: true,
        }
    }

    fn begin_partition(&mut self, in_partition: u64) {
        self.in_partition = in_partition;
    }

    fn grouped(&self) -> bool {
        self.plan.aggregate && self.plan.group_len > 0
    }

    fn output_values(&self, row: &ReadRow) -> Vec<Value> {
        self.plan
            .outputs
            .iter()
            .map(|o| self.output_value(o, row))
            .collect()
    }

    /// [`Collector::output_values`] of a row that is done with: a cell's
    /// value is moved out at its last use instead of copied (a 1 KB row
    /// is ten 100-byte strings).
    fn take_output_values(&self, row: &mut ReadRow) -> Vec<Value> {
        let outputs = &self.plan.outputs;
        outputs
            .iter()
            .enumerate()
            .map(|(i, o)| match o {
                Output::Value(Source::Cell(name))
                    if !outputs[i + 1..].iter().any(|later| later.reads_cell(name)) =>
                {
                    match &mut row.cells {
                        RowCells::Owned(cells) => match cells.get_mut(*name) {
                            Some(cell) => {
                                match std::mem::replace(&mut cell.value, CellValue::Deleted) {
                                    CellValue::Live(v) => v,
                                    CellValue::Deleted => Value::Null,
                                }
                            }
                            None => Value::Null,
                        },
                        // Shared with the storage (memtable, row cache):
                        // copied, not moved.
                        RowCells::InPlace => self.output_value(o, row),
                    }
                }
                _ => self.output_value(o, row),
            })
            .collect()
    }

    fn output_value(&self, o: &Output, row: &ReadRow) -> Value {
        match o {
            Output::Value(src) => row.value(src),
            Output::WriteTime(c) => row
                .cell(c)
                .map(|cell| Value::BigInt(hlc_to_micros(cell.ts)))
                .unwrap_or(Value::Null),
            Output::Ttl(c) => row
                .cell(c)
                .and_then(|cell| cell.expires_at)
                .map(|e| {
                    let left = e.saturating_sub(self.now_ms).div_ceil(1000);
                    Value::Int(i32::try_from(left).unwrap_or(i32::MAX))
                })
                .unwrap_or(Value::Null),
            Output::CountStar | Output::Agg(..) => Value::Null,
        }
    }

    fn siblings(&self, row: &ReadRow) -> Vec<Vec<Value>> {
        if !self.plan.with_siblings || row.state.versions().len() < 2 {
            return Vec::new();
        }
        row.state
            .versions()
            .iter()
            .map(|v| {
                let single = RowState::from_parts(vec![v.clone()], DotSet::new());
                let cells = single
                    .resolve(row.shadow, self.now_ms)
                    .map(|r| visible_cells(self.plan.table, r.cells))
                    .unwrap_or_default();
                let cells = RowCells::Owned(cells);
                let sib = ReadRow {
                    partition: Vec::new(),
                    key: row.key.clone(),
                    clustering: Vec::new(),
                    cells,
                    state: RowState::default(),
                    shadow: None,
                };
                self.output_values(&sib)
            })
            .collect()
    }

    fn push(&mut self, row: ReadRow) -> Flow {
        if !self.plan.filters.iter().all(|f| matches(f, &row)) {
            return Flow::Continue;
        }
        if self.plan.distinct && self.in_partition >= 1 && !self.grouped() {
            return Flow::SkipPartition;
        }
        if self.grouped() {
            return self.push_grouped(row);
        }
        if self.apply_ppl
            && self
                .plan
                .per_partition_limit
                .is_some_and(|n| self.in_partition >= n as u64)
        {
            return Flow::SkipPartition;
        }
        if self.plan.aggregate {
            self.in_partition += 1;
            let key = Vec::new();
            if self.group.is_none() {
                self.group = Some(self.new_group(key, &row));
            }
            self.accumulate(&row);
            return if self.plan.distinct {
                Flow::SkipPartition
            } else {
                Flow::Continue
            };
        }
        if self.plan.limit.is_some_and(|l| self.total >= l as u64) {
            return Flow::Stop;
        }
        if self.rows.len() >= self.page_size {
            self.more = true;
            return Flow::Stop;
        }
        let mut row = row;
        let values = self.take_output_values(&mut row);
        let siblings = self.siblings(&row);
        if self.rows.is_empty() {
            self.context = Some(row.state.context().clone());
        }
        self.rows.push(Row {
            values,
            conflict: row.state.versions().len() > 1,
            siblings,
        });
        self.total += 1;
        self.in_partition += 1;
        self.last = Some(Position {
            partition: row.partition.clone(),
            clustering: (!self.plan.distinct).then(|| row.clustering.clone()),
            in_partition: self.in_partition,
        });
        if self.plan.limit.is_some_and(|l| self.total >= l as u64) {
            return Flow::Stop;
        }
        if self.plan.distinct {
            Flow::SkipPartition
        } else {
            Flow::Continue
        }
    }

    fn new_group(&self, key: Vec<Value>, row: &ReadRow) -> Group<'p> {
        let npk = self.plan.table.def.partition_key.len();
        let prefix = if self.plan.group_len > npk {
            let n = self.plan.group_len - npk;
            let types = self.plan.table.clustering_types();
            let orders = self.plan.table.clustering_orders();
            key::encode_clustering(&row.key[npk..npk + n], &types[..n], &orders[..n]).ok()
        } else {
            None
        };
        let accs = self
            .plan
            .outputs
            .iter()
            .map(|o| match o {
                Output::Value(_) => Acc::First(None),
                Output::WriteTime(_) => Acc::WriteTime(None),
                Output::Ttl(_) => Acc::Ttl(None),
                Output::CountStar => Acc::Count(0),
                Output::Agg(Aggregate::Count, src, _) => Acc::CountCol(0, src.clone()),
                Output::Agg(Aggregate::Min, src, _) => Acc::MinMax(None, src.clone(), false),
                Output::Agg(Aggregate::Max, src, _) => Acc::MinMax(None, src.clone(), true),
                Output::Agg(Aggregate::Sum, src, ty) => {
                    Acc::Sum(src.clone(), *ty, 0, 0.0, 0, false)
                }
                Output::Agg(Aggregate::Avg, src, ty) => Acc::Sum(src.clone(), *ty, 0, 0.0, 0, true),
            })
            .collect();
        Group {
            key,
            accs,
            partition: row.partition.clone(),
            prefix,
            in_partition: self.in_partition,
        }
    }

    fn accumulate(&mut self, row: &ReadRow) {
        let firsts = self.output_values(row);
        let Some(g) = self.group.as_mut() else {
            return;
        };
        g.partition = row.partition.clone();
        for (acc, first) in g.accs.iter_mut().zip(firsts) {
            match acc {
                Acc::First(v @ None) | Acc::WriteTime(v @ None) | Acc::Ttl(v @ None) => {
                    *v = Some(first)
                }
                Acc::First(_) | Acc::WriteTime(_) | Acc::Ttl(_) => {}
                Acc::Count(n) => *n += 1,
                Acc::CountCol(n, src) => {
                    if !row.value(src).is_null() {
                        *n += 1
                    }
                }
                Acc::MinMax(best, src, max) => {
                    let v = row.value(src);
                    if !v.is_null() {
                        let better = match best {
                            None => true,
                            Some(b) => {
                                if *max {
                                    v > *b
                                } else {
                                    v < *b
                                }
                            }
                        };
                        if better {
                            *best = Some(v);
                        }
                    }
                }
                Acc::Sum(src, _, int_sum, float_sum, count, _) => {
                    if let Some((i, f)) = numeric(&row.value(src)) {
                        *int_sum = int_sum.wrapping_add(i);
                        *float_sum += f;
                        *count += 1;
                    }
                }
            }
        }
    }

    fn group_values(g: &Group) -> Vec<Value> {
        g.accs
            .iter()
            .map(|acc| match acc {
                Acc::First(v) | Acc::WriteTime(v) | Acc::Ttl(v) => v.clone().unwrap_or(Value::Null),
                Acc::Count(n) | Acc::CountCol(n, _) => Value::BigInt(*n),
                Acc::MinMax(v, _, _) => v.clone().unwrap_or(Value::Null),
                Acc::Sum(_, ty, i, f, count, avg) => {
                    let n = (*count).max(1);
                    match ty {
                        DataType::Int => {
                            let v = if *avg { i / i128::from(n) } else { *i };
                            Value::Int(v as i32)
                        }
                        DataType::BigInt => {
                            let v = if *avg { i / i128::from(n) } else { *i };
                            Value::BigInt(v as i64)
                        }
                        DataType::SmallInt => {
                            let v = if *avg { i / i128::from(n) } else { *i };
                            Value::SmallInt(v as i16)
                        }
                        DataType::Float => {
                            let v = if *avg { f / n as f64 } else { *f };
                            Value::Float(v as f32)
                        }
                        _ => Value::Double(if *avg { f / n as f64 } else { *f }),
                    }
                }
            })
            .collect()
    }

    fn emit_group(&mut self, g: Group) -> Flow {
        if self.plan.limit.is_some_and(|l| self.total >= l as u64) {
            return Flow::Stop;
        }
        if self.rows.len() >= self.page_size {
            self.more = true;
            return Flow::Stop;
        }
        self.rows.push(Row {
            values: Self::group_values(&g),
            conflict: false,
            siblings: Vec::new(),
        });
        self.total += 1;
        self.last = Some(Position {
            partition: g.partition.clone(),
            clustering: g.prefix.clone(),
            in_partition: g.in_partition,
        });
        if self.plan.limit.is_some_and(|l| self.total >= l as u64) {
            return Flow::Stop;
        }
        Flow::Continue
    }

    fn push_grouped(&mut self, row: ReadRow) -> Flow {
        let key: Vec<Value> = row.key[..self.plan.group_len.min(row.key.len())].to_vec();
        if let Some(g) = &self.group {
            if g.key == key {
                self.accumulate(&row);
                return Flow::Continue;
            }
        }
        if let Some(g) = self.group.take() {
            if self.emit_group(g) == Flow::Stop {
                return Flow::Stop;
            }
        }
        if self.apply_ppl
            && self
                .plan
                .per_partition_limit
                .is_some_and(|n| self.in_partition >= n as u64)
        {
            return Flow::SkipPartition;
        }
        if self.plan.limit.is_some_and(|l| self.total >= l as u64) {
            return Flow::Stop;
        }
        self.in_partition += 1;
        self.group = Some(self.new_group(key, &row));
        self.accumulate(&row);
        Flow::Continue
    }

    /// Ends the input: emits the last group, or the one row of an
    /// aggregate without GROUP BY.
    fn finish(&mut self, stopped: bool) {
        if self.grouped() {
            if !stopped {
                if let Some(g) = self.group.take() {
                    self.emit_group(g);
                }
            }
        } else if self.plan.aggregate {
            let g = match self.group.take() {
                Some(g) => g,
                None => Group {
                    key: Vec::new(),
                    accs: Vec::new(),
                    partition: Vec::new(),
                    prefix: None,
                    in_partition: 0,
                },
            };
            let values = if g.accs.is_empty() {
                let empty = Group {
                    accs: self
                        .plan
                        .outputs
                        .iter()
                        .map(|o| match o {
                            Output::CountStar => Acc::Count(0),
                            Output::Agg(Aggregate::Count, s, _) => Acc::CountCol(0, s.clone()),
                            Output::Agg(Aggregate::Sum, s, ty) => {
                                Acc::Sum(s.clone(), *ty, 0, 0.0, 0, false)
                            }
                            Output::Agg(Aggregate::Avg, s, ty) => {
                                Acc::Sum(s.clone(), *ty, 0, 0.0, 0, true)
                            }
                            _ => Acc::First(None),
                        })
                        .collect(),
                    ..g
                };
                Self::group_values(&empty)
            } else {
                Self::group_values(&g)
            };
            if self.total == 0 {
                self.rows.push(Row {
                    values,
                    conflict: false,
                    siblings: Vec::new(),
                });
            }
        }
    }
}

fn to_bound_lo(lo: &Option<Vec<u8>>) -> Bound<Vec<u8>> {
    match lo {
        Some(l) => Bound::Included(l.clone()),
        None => Bound::Unbounded,
    }
}

fn to_bound_hi(hi: &Option<Vec<u8>>) -> Bound<Vec<u8>> {
    match hi {
        Some(h) => Bound::Excluded(h.clone()),
        None => Bound::Unbounded,
    }
}

/// Narrows an interval to what comes after `resume` in the read direction.
fn clamp(iv: &Interval, resume: Option<&[u8]>, reverse: bool) -> Option<Interval> {
    let mut iv = iv.clone();
    if let Some(r) = resume {
        if reverse {
            if iv.hi.as_ref().is_none_or(|h| r < h.as_slice()) {
                iv.hi = Some(r.to_vec());
            }
        } else {
            let after = key::prefix_successor(r)?;
            if iv.lo.as_ref().is_none_or(|l| after > *l) {
                iv.lo = Some(after);
            }
        }
    }
    (!iv.is_empty()).then_some(iv)
}

struct Reader<'a> {
    store: &'a dyn DataStore,
    options: &'a QueryOptions,
    now_ms: u64,
    chunk: usize,
}

impl Reader<'_> {
    /// Reads one partition's intervals into the collector, in order.
    async fn partition(
        &self,
        plan: &SelectPlan<'_>,
        pk_values: &[Value],
        pk: &[u8],
        resume: Option<&[u8]>,
        sink: &mut (dyn FnMut(ReadRow) -> Flow + Send),
    ) -> Result<Flow, QueryError> {
        let order: Vec<&Interval> = if plan.reverse {
            plan.intervals.iter().rev().collect()
        } else {
            plan.intervals.iter().collect()
        };
        for iv in order {
            let Some(mut iv) = clamp(iv, resume, plan.reverse) else {
                continue;
            };
            loop {
                let slice = SliceRequest {
                    lower: to_bound_lo(&iv.lo),
                    upper: to_bound_hi(&iv.hi),
                    reverse: plan.reverse,
                    limit: Some(self.chunk),
                };
                let got = self
                    .store
                    .read(&plan.tref, pk, slice, self.options.consistency)
                    .await?;
                let n = got.rows.len();
                let mut last = None;
                for stored in got.rows {
                    last = Some(stored.clustering.clone());
                    if let Some(row) = materialize(
                        plan.table,
                        &plan.regular,
                        pk,
                        pk_values,
                        stored,
                        &got.header,
                        self.now_ms,
                    )? {
                        match sink(row) {
                            Flow::Continue => {}
                            other => return Ok(other),
                        }
                    }
                }
                if n < self.chunk {
                    break;
                }
                let Some(last) = last else { break };
                match clamp(&iv, Some(&last), plan.reverse) {
                    Some(next) => iv = next,
                    None => break,
                }
            }
        }
        Ok(Flow::Continue)
    }
}

/// One partition of an ORDER BY merge: the rows read ahead (at most a
/// batch) and where to read on.
struct MergeCursor {
    values: Vec<Value>,
    pk: Vec<u8>,
    buffer: std::collections::VecDeque<ReadRow>,
    /// The last row read (filtered out or not): the next read starts after it.
    resume: Option<Vec<u8>>,
    /// Rows taken, for `PER PARTITION LIMIT`.
    taken: usize,
    done: bool,
}

impl MergeCursor {
    /// Reads up to `rows` more rows that pass the filters, in the plan's
    /// order; marks the cursor done at the end of the partition or of its
    /// `PER PARTITION LIMIT`.
    async fn refill(
        &mut self,
        reader: &Reader<'_>,
        plan: &SelectPlan<'_>,
        ppl: usize,
        rows: usize,
    ) -> Result<(), QueryError> {
        let from = self.resume.clone();
        let (buffer, resume, taken) = (&mut self.buffer, &mut self.resume, &mut self.taken);
        let mut sink = |row: ReadRow| {
            *resume = Some(row.clustering.clone());
            if !plan.filters.iter().all(|f| matches(f, &row)) {
                return Flow::Continue;
            }
            if *taken >= ppl {
                return Flow::SkipPartition;
            }
            *taken += 1;
            buffer.push_back(row);
            if buffer.len() >= rows {
                Flow::Stop
            } else {
                Flow::Continue
            }
        };
        let flow = reader
            .partition(plan, &self.values, &self.pk, from.as_deref(), &mut sink)
            .await?;
        self.done = flow != Flow::Stop;
        Ok(())
    }
}

/// Runs a planned SELECT: one page of its result, reading through `store`
/// in batches of at most `batch`.
pub async fn execute_select(
    plan: &SelectPlan<'_>,
    store: &dyn DataStore,
    options: &QueryOptions,
    page_size: usize,
    now_ms: u64,
    batch: ReadBatch,
) -> Result<ResultSet, QueryError> {
    let batch = ReadBatch {
        rows: batch.rows.max(1),
        partitions: batch.partitions.max(1),
    };
    let state = options
        .paging_state
        .as_ref()
        .map(|p| PageState::decode(p, plan.fingerprint.get()))
        .transpose()?;
    let paged = !(plan.order_merge || (plan.aggregate && plan.group_len == 0));
    let mut c = Collector::new(plan, if paged { page_size } else { usize::MAX }, now_ms);
    if let Some(s) = &state {
        c.total = s.total;
    }
    let plain_unfiltered = plan.filters.is_empty() && !plan.aggregate;
    let chunk = if plain_unfiltered {
        let need = page_size
            .min(plan.limit.unwrap_or(usize::MAX))
            .min(plan.per_partition_limit.unwrap_or(usize::MAX))
            .min(if plan.distinct { 1 } else { usize::MAX });
        need.saturating_add(1).clamp(2, batch.rows.max(2))
    } else {
        batch.rows
    };
    let reader = Reader {
        store,
        options,
        now_ms,
        chunk,
    };
    let pk_types = plan.table.partition_types();
    let mut stopped = false;
    if plan.order_merge {
        // IN on the partition key with ORDER BY: merge the partitions'
        // rows in clustering order (no paging, as in Cassandra), holding
        // at most a batch of rows per partition.
        let ppl = plan.per_partition_limit.unwrap_or(usize::MAX);
        let mut cursors: Vec<MergeCursor> = plan
            .partitions
            .iter()
            .flatten()
            .map(|(values, pk)| MergeCursor {
                values: values.clone(),
                pk: pk.clone(),
                buffer: std::collections::VecDeque::new(),
                resume: None,
                taken: 0,
                done: false,
            })
            .collect();
        let mut without_filters = plan.clone();
        without_filters.filters.clear();
        let mut merged = Collector::new(&without_filters, usize::MAX, now_ms);
        merged.apply_ppl = false;
        loop {
            for cursor in cursors.iter_mut() {
                if cursor.buffer.is_empty() && !cursor.done {
                    cursor.refill(&reader, plan, ppl, batch.rows).await?;
                }
            }
            let next = cursors
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.buffer.front().map(|row| (i, &row.clustering)))
                .reduce(|best, other| {
                    let o = other.1.cmp(best.1);
                    let better = if plan.reverse { o.is_gt() } else { o.is_lt() };
                    if better {
                        other
                    } else {
                        best
                    }
                })
                .map(|(i, _)| i);
            let Some(row) = next.and_then(|i| cursors.get_mut(i)?.buffer.pop_front()) else {
                break;
            };
            if merged.push(row) == Flow::Stop {
                stopped = true;
                break;
            }
            if !plan.aggregate && merged.rows.len() > page_size {
                return Err(invalid("Cannot page queries with both ORDER BY and a IN restriction on the partition key; you must either remove the ORDER BY or the IN and sort client side, or disable paging for this query"));
            }
        }
        merged.finish(stopped);
        return Ok(ResultSet {
            columns: plan.columns.clone(),
            rows: merged.rows,
            paging_state: None,
            causal_context: None,
        });
    }
    match &plan.partitions {
        Some(parts) => {
            let mut start = 0;
            let mut resume: Option<Vec<u8>> = None;
            if let Some(s) = &state {
                let idx = parts
                    .iter()
                    .position(|(_, pk)| *pk == s.partition)
                    .ok_or_else(|| invalid("Invalid value for the paging state"))?;
                match &s.clustering {
                    Some(ck) => {
                        start = idx;
                        resume = Some(ck.clone());
                        c.begin_partition(s.in_partition);
                    }
                    None => start = idx + 1,
                }
            }
            for (i, (values, pk)) in parts.iter().enumerate().skip(start) {
                let resuming = i == start && resume.is_some();
                if !resuming {
                    c.begin_partition(0);
                }
                let r = resume.take();
                let flow = reader
                    .partition(plan, values, pk, r.as_deref(), &mut |row| c.push(row))
                    .await?;
                if flow == Flow::Stop {
                    stopped = true;
                    break;
                }
            }
        }
        None => {
            let rows_per_partition = if plan.distinct && !plan.aggregate {
                Some(1)
            } else if plan.filters.is_empty() && !plan.aggregate {
                plan.per_partition_limit
            } else {
                None
            };
            let mut after: Option<Vec<u8>> = None;
            if let Some(s) = &state {
                after = Some(key::partition_prefix(&s.partition));
                if let Some(ck) = &s.clustering {
                    let prefix = key::partition_prefix(&s.partition);
                    let values = key::decode_partition_key(&prefix, &pk_types)
                        .map_err(|_| invalid("Invalid value for the paging state"))?;
                    c.begin_partition(s.in_partition);
                    let mut whole = plan.clone();
                    whole.intervals = vec![Interval { lo: None, hi: None }];
                    let flow = reader
                        .partition(&whole, &values, &s.partition, Some(ck), &mut |row| {
                            c.push(row)
                        })
                        .await?;
                    stopped = flow == Flow::Stop;
                }
            }
            // Each scan request takes at most `per_request` rows of a
            // partition; a partition that filled them is read on in
            // batches of `reader.chunk`, so no request holds more than a
            // batch of one partition, however large it is.
            let wanted = rows_per_partition.unwrap_or(usize::MAX);
            let per_request = wanted.min(chunk);
            while !stopped {
                let scanned = store
                    .scan(
                        &plan.tref,
                        after.clone(),
                        batch.partitions,
                        Some(per_request),
                        options.consistency,
                    )
                    .await?;
                let n = scanned.len();
                for (prefix, part) in scanned {
                    after = Some(prefix.clone());
                    let pk = prefix.get(10..).unwrap_or_default().to_vec();
                    let values = key::decode_partition_key(&prefix, &pk_types)
                        .map_err(|e| QueryError::Server(format!("stored partition key: {e}")))?;
                    c.begin_partition(0);
                    let mut flow = Flow::Continue;
                    let cut = part.rows.len() >= per_request && wanted > per_request;
                    let mut last = None;
                    for stored in part.rows {
                        last = Some(stored.clustering.clone());
                        if let Some(row) = materialize(
                            plan.table,
                            &plan.regular,
                            &pk,
                            &values,
                            stored,
                            &part.header,
                            now_ms,
                        )? {
                            flow = c.push(row);
                            if flow != Flow::Continue {
                                break;
                            }
                        }
                    }
                    if flow == Flow::Continue && cut {
                        if let Some(last) = &last {
                            flow = reader
                                .partition(plan, &values, &pk, Some(last), &mut |row| c.push(row))
                                .await?;
                        }
                    }
                    if flow == Flow::Stop {
                        stopped = true;
                        break;
                    }
                }
                if n < batch.partitions {
                    break;
                }
            }
        }
    }
    c.finish(stopped);
    let paging_state = if c.more {
        c.last.as_ref().map(|p| {
            PageState {
                fingerprint: plan.fingerprint.get(),
                partition: p.partition.clone(),
                clustering: p.clustering.clone(),
                total: c.total,
                in_partition: p.in_partition,
            }
            .encode()
        })
    } else {
        None
    };
    let causal_context = if plan.single_row {
        Some(c.context.take().unwrap_or_default())
    } else {
        None
    };
    Ok(ResultSet {
        columns: plan.columns.clone(),
        rows: c.rows,
        paging_state,
        causal_context,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::row::{Liveness, RowVersion};
    use crate::model::{Dot, NodeId};
    use crate::schema::Schema;
    use proptest::prelude::*;

    /// A table with regular columns `c0`, `c1` and `c2`, the last dropped
    /// at timestamp 3 and added again (so only its cells written after 3
    /// are visible), and no column `c3`.
    fn table() -> Table {
        let mut schema = Schema::new();
        for (i, text) in [
            "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
            "CREATE TABLE ks.t (k int PRIMARY KEY, c0 bigint, c1 bigint, c2 bigint)",
            "ALTER TABLE ks.t DROP c2",
            "ALTER TABLE ks.t ADD c2 bigint",
        ]
        .into_iter()
        .enumerate()
        {
            let stmt = cql_lite::parse_statement(text).unwrap();
            let change = schema
                .change_for(&stmt, None, i as u128, Timestamp(i as u64 + 1))
                .unwrap()
                .unwrap();
            schema = schema.apply(&change).unwrap();
        }
        schema.get_table("ks", "t").unwrap().clone()
    }

    fn cell() -> impl Strategy<Value = Cell> {
        (
            0u64..8,
            any::<bool>(),
            proptest::option::of(0u64..8),
            0i64..3,
        )
            .prop_map(|(ts, live, expires_at, v)| Cell {
                ts: Timestamp(ts),
                value: if live {
                    CellValue::Live(Value::BigInt(v))
                } else {
                    CellValue::Deleted
                },
                expires_at,
            })
    }

    fn version() -> impl Strategy<Value = RowVersion> {
        (
            1u64..4,
            proptest::collection::btree_map(
                prop_oneof![Just("c0"), Just("c1"), Just("c2"), Just("c3")]
                    .prop_map(str::to_string),
                cell(),
                0..4,
            ),
            proptest::option::of((0u64..8, proptest::option::of(0u64..8))),
            proptest::option::of(0u64..8),
        )
            .prop_map(|(counter, cells, marker, deleted_at)| RowVersion {
                dot: Dot {
                    node: NodeId(1),
                    counter,
                },
                marker: marker.map(|(ts, expires_at)| Liveness {
                    ts: Timestamp(ts),
                    expires_at,
                }),
                deleted_at: deleted_at.map(Timestamp),
                cells,
            })
    }

    proptest! {
        /// Reading a row in place gives exactly the row that resolving it
        /// gives: whenever `readable_in_place` says yes, resolving keeps
        /// every cell of the version, all of them visible.
        #[test]
        fn reading_in_place_is_resolving(
            versions in proptest::collection::vec(version(), 1..3),
            shadow in proptest::option::of(0u64..8),
            now_ms in 0u64..8,
        ) {
            let table = table();
            let state = RowState::from_parts(versions, DotSet::new());
            let shadow = shadow.map(Timestamp);
            let regular: Vec<&str> = table.regular_columns().iter().map(|c| c.name.as_str()).collect();
            if readable_in_place(&table, &regular, &state, shadow, now_ms) {
                let resolved = state.resolve(shadow, now_ms);
                prop_assert!(resolved.is_some());
                let cells = visible_cells(&table, resolved.map(|r| r.cells).unwrap_or_default());
                prop_assert_eq!(&cells, &state.versions()[0].cells);
            }
        }

        /// A row read through `materialize` shows, column by column, the
        /// cells resolving and dropping invisible columns gives, whichever
        /// way it was read.
        #[test]
        fn materialized_cells_are_the_resolved_visible_cells(
            versions in proptest::collection::vec(version(), 1..3),
            now_ms in 0u64..8,
        ) {
            let table = table();
            let state = RowState::from_parts(versions, DotSet::new());
            let expected = state
                .resolve(None, now_ms)
                .map(|r| visible_cells(&table, r.cells));
            let stored = StoredRow {
                clustering: Vec::new(),
                state: state.clone(),
            };
            let regular: Vec<&str> = table.regular_columns().iter().map(|c| c.name.as_str()).collect();
            let row = materialize(&table, &regular, b"pk", &[Value::Int(1)], stored, &PartitionHeader::default(), now_ms).unwrap();
            match (row, expected) {
                (Some(row), Some(expected)) => {
                    for name in ["c0", "c1", "c2", "c3"] {
                        prop_assert_eq!(row.cell(name), expected.get(name), "column {}", name);
                    }
                }
                (None, None) => {}
                (None, Some(cells)) => {
                    // Only dropped columns' cells left, and no live marker.
                    prop_assert!(visible_cells(&table, cells).is_empty());
                }
                (Some(_), None) => prop_assert!(false, "a row that resolves to nothing was read"),
            }
        }
    }
}
