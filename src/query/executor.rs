//! The executor: CQL-lite text to results, through a [`DataStore`].

use super::api::{
    BoxFuture, ColumnSpec, DataStore, Mutation, PartitionWrite, Prepared, QueryError,
    QueryExecutor, QueryOptions, QueryResult, Response, SessionState, TableRef,
};
use super::bind::Binder;
use super::eval::{invalid, micros_to_hlc, EvalContext, TimeUuids};
use super::schema_errors::schema_error_at;
use super::select::{execute_select, plan_select, result_columns, Fingerprint, ReadBatch};
use super::write::{plan_delete, plan_insert, plan_update, table_ref, Planned, WriteContext};
use crate::cluster::hints::DEFAULT_HINT_WINDOW;
use crate::model::HybridClock;
use crate::schema::{Schema, SchemaChange, SchemaStore, Table, TableAlteration};
use cql_lite::analyze::{
    check_select, check_select_values, check_statement, SelectRestrictions, SemanticError,
};
use cql_lite::ast::{BatchKind, BatchStatement, QualifiedName, Statement};
use cql_lite::{ErrorKind, ParseError, Value};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::Hasher;
use std::sync::Arc;
use std::time::Duration;

/// Settings of an [`Executor`].
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// Rows per page when the request does not say.
    pub default_page_size: u32,
    /// A batch touching more partitions than this gets a warning.
    pub batch_partitions_warn: usize,
    /// How much a SELECT reads per request to the store (its memory bound).
    pub read_batch: ReadBatch,
    /// The hint window of the node the executor runs on: a `CREATE TABLE`
    /// or `ALTER TABLE ... WITH gc_grace_seconds` that leaves the table's
    /// `gc_grace_seconds` at or below it gets a warning (see
    /// [`crate::schema::ShortGcGrace`]). `None`: no hints, no warning.
    pub hint_window: Option<Duration>,
    /// The automatic repair interval of the node the executor runs on: a
    /// table's `gc_grace_seconds` at or below it gets a warning too (see
    /// [`crate::schema::GraceWithinRepair`]). `None`: no automatic repair,
    /// no warning.
    pub auto_repair_interval: Option<Duration>,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            default_page_size: 5000,
            batch_partitions_warn: 10,
            read_batch: ReadBatch::default(),
            hint_window: Some(DEFAULT_HINT_WINDOW),
            auto_repair_interval: None,
        }
    }
}

/// A prepared statement, as the executor keeps it.
struct PreparedEntry {
    stmt: Statement,
    text: String,
    keyspace: Option<String>,
    /// The statement checked against the schema of its latest execution.
    checked: Mutex<Option<Arc<Checked>>>,
}

/// What executions of a statement share: the statement checked against
/// one schema, and what follows from it without the bound values. A
/// prepared statement keeps it while the schema stays the same; a schema
/// change (any, as the schema is replaced whole) makes the next execution
/// check again, so an ALTER or DROP is never missed.
struct Checked {
    /// The schema this was worked out against.
    schema: Arc<Schema>,
    /// Which variable each marker takes, and their types.
    binder: Binder,
    /// For a SELECT: its restrictions and result columns.
    select: Option<SelectShape>,
}

/// The value-independent half of a SELECT's planning.
struct SelectShape {
    restrictions: SelectRestrictions,
    columns: Arc<[ColumnSpec]>,
}

/// Runs CQL-lite statements: parse, check against the schema, plan,
/// execute through a [`DataStore`].
pub struct Executor {
    store: Arc<dyn DataStore>,
    schema: Arc<SchemaStore>,
    clock: Arc<HybridClock>,
    uuids: TimeUuids,
    config: ExecutorConfig,
    prepared: Mutex<HashMap<Vec<u8>, Arc<PreparedEntry>>>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("config", &self.config)
            .finish()
    }
}

fn parse_error(e: &ParseError, text: &str) -> QueryError {
    match e.kind {
        ErrorKind::Lexical | ErrorKind::Syntax => QueryError::Syntax {
            message: e.to_string(),
            rendered: e.render(text),
        },
        ErrorKind::Unsupported | ErrorKind::Invalid => QueryError::Invalid {
            message: e.to_string(),
            rendered: e.render(text),
        },
    }
}

fn semantic_error(e: &SemanticError, text: &str) -> QueryError {
    QueryError::Invalid {
        message: e.to_string(),
        rendered: e.render(text),
    }
}

fn hash64(parts: &[&[u8]]) -> u64 {
    let mut h =
        siphasher::sip::SipHasher13::new_with_keys(0x7175_6572_792d_6964, 0x7072_6570_6172_6564);
    for p in parts {
        h.write(&(p.len() as u64).to_le_bytes());
        h.write(p);
    }
    h.finish()
}

fn keyspace_of(name: &QualifiedName, session: Option<&str>) -> Option<String> {
    name.keyspace
        .as_ref()
        .map(|k| k.name.clone())
        .or_else(|| session.map(str::to_string))
}

impl Executor {
    /// An executor over `store`, with the node's schema and clock.
    pub fn new(
        store: Arc<dyn DataStore>,
        schema: Arc<SchemaStore>,
        clock: Arc<HybridClock>,
        config: ExecutorConfig,
    ) -> Executor {
        Executor {
            store,
            schema,
            clock,
            uuids: TimeUuids::new(),
            config,
            prepared: Mutex::new(HashMap::new()),
        }
    }

    /// The schema store.
    pub fn schema(&self) -> &Arc<SchemaStore> {
        &self.schema
    }

    fn eval_ctx(&self) -> EvalContext<'_> {
        EvalContext {
            clock: &self.clock,
            uuids: &self.uuids,
        }
    }

    fn table<'s>(
        &self,
        schema: &'s Schema,
        name: &QualifiedName,
        session: Option<&str>,
    ) -> Result<&'s Table, QueryError> {
        let ks = keyspace_of(name, session).ok_or_else(|| invalid("No keyspace has been specified. USE a keyspace, or explicitly specify keyspace.tablename"))?;
        schema
            .get_table(&ks, &name.name.name)
            .ok_or_else(|| invalid(format!("unconfigured table {}", name.name)))
    }

    async fn run_script(
        &self,
        session: &mut SessionState,
        text: &str,
        values: Vec<Value>,
        options: QueryOptions,
    ) -> Result<Response, QueryError> {
        let statements = cql_lite::parse(text).map_err(|e| parse_error(&e, text))?;
        if statements.is_empty() {
            return Err(invalid("no statement to execute"));
        }
        if statements.len() > 1 && !values.is_empty() {
            return Err(invalid(
                "bound values need a single statement, not a script",
            ));
        }
        let mut last: Option<Response> = None;
        let mut values = Some(values);
        // The result is the last statement's; the warnings are every
        // statement's (a script's CREATE TABLE warns even if an INSERT
        // follows it).
        let mut warnings = Vec::new();
        for stmt in statements {
            let v = values.take().unwrap_or_default();
            if let Some(previous) = last.take() {
                warnings.extend(previous.warnings);
            }
            last = Some(
                self.run(session, &stmt, text, v, options.clone(), None)
                    .await?,
            );
        }
        let mut last = last.ok_or_else(|| invalid("no statement to execute"))?;
        warnings.append(&mut last.warnings);
        last.warnings = warnings;
        Ok(last)
    }

    /// Checks `stmt` against `schema` and works out what does not depend
    /// on bound values.
    fn check(
        &self,
        stmt: &Statement,
        text: &str,
        schema: &Arc<Schema>,
        ks: Option<&str>,
    ) -> Result<Checked, QueryError> {
        let select = match stmt {
            // For a SELECT, `check_statement` is `check_select`.
            Statement::Select(s) => {
                let restrictions =
                    check_select(s, ks, &**schema).map_err(|e| semantic_error(&e, text))?;
                let table = self.table(schema, &s.table, ks)?;
                Some(SelectShape {
                    restrictions,
                    columns: result_columns(table, s).into(),
                })
            }
            _ => {
                check_statement(stmt, ks, &**schema).map_err(|e| semantic_error(&e, text))?;
                None
            }
        };
        Ok(Checked {
            schema: schema.clone(),
            binder: Binder::new(stmt, schema, ks)?,
            select,
        })
    }

    /// The checked form of a prepared statement for the current schema:
    /// kept from an earlier execution if the schema is the same.
    fn checked_prepared(
        &self,
        entry: &PreparedEntry,
        schema: &Arc<Schema>,
    ) -> Result<Arc<Checked>, QueryError> {
        if let Some(c) = entry.checked.lock().as_ref() {
            if Arc::ptr_eq(&c.schema, schema) {
                return Ok(c.clone());
            }
        }
        let checked =
            Arc::new(self.check(&entry.stmt, &entry.text, schema, entry.keyspace.as_deref())?);
        *entry.checked.lock() = Some(checked.clone());
        Ok(checked)
    }

    /// Runs one statement: `prepared` is its entry when it is a prepared
    /// statement (the session then holds the entry's keyspace).
    async fn run(
        &self,
        session: &mut SessionState,
        stmt: &Statement,
        text: &str,
        values: Vec<Value>,
        options: QueryOptions,
        prepared: Option<&PreparedEntry>,
    ) -> Result<Response, QueryError> {
        let schema = self.schema.current();
        let ks = session.keyspace.clone();
        let checked = match prepared {
            Some(entry) => self.checked_prepared(entry, &schema)?,
            None => Arc::new(self.check(stmt, text, &schema, ks.as_deref())?),
        };
        let bound = checked.binder.bind(stmt, &schema, ks.as_deref(), values)?;
        let ok = |result| Response {
            result,
            warnings: Vec::new(),
        };
        match &bound {
            Statement::Use(k) => {
                session.keyspace = Some(k.name.clone());
                Ok(ok(QueryResult::SetKeyspace(k.name.clone())))
            }
            s if s.is_schema_change() => self.schema_change(s, text, ks.as_deref()).await,
            Statement::Truncate(t) => {
                let table = self.table(&schema, &t.name, ks.as_deref())?;
                self.store.truncate(&table_ref(table)).await?;
                Ok(ok(QueryResult::Void))
            }
            Statement::Select(s) => {
                let table = self.table(&schema, &s.table, ks.as_deref())?;
                let shape = checked.select.as_ref().ok_or_else(|| {
                    QueryError::Server("a SELECT was checked as another statement".into())
                })?;
                check_select_values(s, ks.as_deref(), &*schema)
                    .map_err(|e| semantic_error(&e, text))?;
                let fingerprint =
                    || hash64(&[&table.id.to_le_bytes(), bound.to_string().as_bytes()]);
                let plan = plan_select(
                    table,
                    s,
                    &shape.restrictions,
                    shape.columns.clone(),
                    &self.eval_ctx(),
                    Fingerprint::new(&fingerprint),
                )?;
                let page_size = options
                    .page_size
                    .filter(|p| *p > 0)
                    .unwrap_or(self.config.default_page_size)
                    .max(1) as usize;
                let now = self.clock.wall().now_millis();
                let rs = execute_select(
                    &plan,
                    &*self.store,
                    &options,
                    page_size,
                    now,
                    self.config.read_batch,
                )
                .await?;
                Ok(ok(QueryResult::Rows(rs)))
            }
            Statement::Insert(_)
            | Statement::Update(_)
            | Statement::Delete(_)
            | Statement::Batch(_) => self.write(&schema, &bound, ks.as_deref(), &options).await,
            _ => Err(invalid("unsupported statement")),
        }
    }

    async fn schema_change(
        &self,
        stmt: &Statement,
        text: &str,
        session: Option<&str>,
    ) -> Result<Response, QueryError> {
        let schema_error = |e| schema_error_at(e, stmt, text);
        let schema = self.schema.current();
        let id = rand::random::<u128>();
        let Some(change) = schema
            .change_for(stmt, session, id, self.clock.now())
            .map_err(schema_error)?
        else {
            return Ok(Response {
                result: QueryResult::Void,
                warnings: Vec::new(),
            });
        };
        // Tables whose data goes with the change.
        let dropped: Vec<TableRef> = match &change {
            SchemaChange::DropKeyspace { name, .. } => schema.tables(name).map(table_ref).collect(),
            SchemaChange::DropTable {
                keyspace, table, ..
            } => schema
                .get_table(keyspace, table)
                .map(table_ref)
                .into_iter()
                .collect(),
            _ => Vec::new(),
        };
        let applied = self.schema.apply(&change).map_err(schema_error)?;
        for t in &dropped {
            self.store.truncate(t).await?;
        }
        Ok(Response {
            result: QueryResult::SchemaChange {
                description: change.description(),
            },
            warnings: self.short_gc_grace(&change, &applied),
        })
    }

    /// The warnings for a `CREATE TABLE`, or an `ALTER TABLE` that sets
    /// `gc_grace_seconds`, that leaves the table's grace period at or below
    /// this node's hint window or automatic repair interval; `applied` is
    /// the schema with the change.
    fn short_gc_grace(&self, change: &SchemaChange, applied: &Schema) -> Vec<String> {
        let Some(table) = self.changed_grace(change, applied) else {
            return Vec::new();
        };
        let hints = self
            .config
            .hint_window
            .and_then(|w| table.short_gc_grace(w))
            .map(|w| w.to_string());
        let repair = self
            .config
            .auto_repair_interval
            .and_then(|i| table.gc_grace_within_repair(i))
            .map(|w| w.to_string());
        hints.into_iter().chain(repair).collect()
    }

    /// The table whose grace period `change` set (a `CREATE TABLE`, or an
    /// `ALTER TABLE ... WITH gc_grace_seconds`), as `applied` has it.
    fn changed_grace<'s>(
        &self,
        change: &'s SchemaChange,
        applied: &'s Schema,
    ) -> Option<&'s Table> {
        let table = match change {
            SchemaChange::CreateTable { table, .. } => table,
            SchemaChange::AlterTable {
                keyspace,
                table,
                id,
                alteration: TableAlteration::SetOptions(options),
                ..
            } if options.gc_grace_seconds.is_some() => {
                applied.get_table(keyspace, table).filter(|t| t.id == *id)?
            }
            _ => return None,
        };
        Some(table)
    }

    async fn write(
        &self,
        schema: &Schema,
        stmt: &Statement,
        session: Option<&str>,
        options: &QueryOptions,
    ) -> Result<Response, QueryError> {
        let now_ms = self.clock.wall().now_millis();
        let eval = self.eval_ctx();
        let batch_ts = match stmt {
            Statement::Batch(b) => match &b.timestamp {
                Some(t) => match eval.eval_int(t, "[timestamp]")? {
                    Some(m) => Some(micros_to_hlc(m)?),
                    None => return Err(invalid("Invalid null value of timestamp")),
                },
                None => None,
            },
            _ => None,
        };
        let ctx = WriteContext {
            eval,
            ts: batch_ts.unwrap_or_else(|| self.clock.now()),
            now_ms,
        };
        let mut planned: Vec<Planned> = Vec::new();
        let plan_one = |s: &BatchStatement| -> Result<Planned, QueryError> {
            match s {
                BatchStatement::Insert(i) => {
                    plan_insert(self.table(schema, &i.table, session)?, i, &ctx)
                }
                BatchStatement::Update(u) => {
                    plan_update(self.table(schema, &u.table, session)?, u, &ctx)
                }
                BatchStatement::Delete(d) => {
                    plan_delete(self.table(schema, &d.table, session)?, d, &ctx)
                }
            }
        };
        let mut batch_kind = None;
        match stmt {
            Statement::Insert(i) => planned.push(plan_one(&BatchStatement::Insert(i.clone()))?),
            Statement::Update(u) => planned.push(plan_one(&BatchStatement::Update(u.clone()))?),
            Statement::Delete(d) => planned.push(plan_one(&BatchStatement::Delete(d.clone()))?),
            Statement::Batch(b) => {
                batch_kind = Some(b.kind);
                for s in &b.statements {
                    planned.push(plan_one(s)?);
                }
            }
            _ => return Err(invalid("not a write")),
        }
        // Group per (table, partition), keeping statement order.
        let mut groups: Vec<(TableRef, Vec<u8>, Vec<Mutation>)> = Vec::new();
        for p in planned {
            for (pk, m) in p.writes {
                match groups
                    .iter_mut()
                    .find(|(t, k, _)| *t == p.table && *k == pk)
                {
                    Some((_, _, ms)) => ms.push(m),
                    None => groups.push((p.table.clone(), pk, vec![m])),
                }
            }
        }
        // A causal context names one row's versions: it applies only to a
        // write of exactly one row.
        if let Some(ctx_set) = &options.causal_context {
            let rows: usize = groups
                .iter()
                .map(|(_, _, ms)| {
                    ms.iter()
                        .filter(|m| matches!(m, Mutation::Row { .. }))
                        .count()
                })
                .sum();
            if rows != 1 || groups.len() != 1 {
                return Err(invalid(
                    "A causal context applies to a write of exactly one row",
                ));
            }
            for (_, _, ms) in &mut groups {
                for m in ms {
                    if let Mutation::Row { context, .. } = m {
                        *context = Some(ctx_set.clone());
                    }
                }
            }
        }
        let mut warnings = Vec::new();
        if let Some(kind) = batch_kind {
            let n = groups.len();
            if n > self.config.batch_partitions_warn {
                let tables: Vec<String> = {
                    let mut t: Vec<String> = groups
                        .iter()
                        .map(|(t, _, _)| format!("{}.{}", t.keyspace, t.table))
                        .collect();
                    t.sort();
                    t.dedup();
                    t
                };
                let what = match kind {
                    BatchKind::Unlogged => "Unlogged batch",
                    BatchKind::Logged => "Batch",
                };
                warnings.push(format!(
                    "{what} covering {n} partitions detected against table{} [{}]. You should use a logged batch for atomicity, or asynchronous writes for performance.",
                    if tables.len() > 1 { "s" } else { "" },
                    tables.join(", ")
                ));
            }
        }
        if batch_kind == Some(BatchKind::Logged) && groups.len() > 1 {
            // A logged batch across partitions: all of it eventually, through
            // the store's batch log. Unlogged batches and single-partition
            // batches skip the log, as in Cassandra.
            let partitions = groups
                .into_iter()
                .map(|(table, partition_key, mutations)| PartitionWrite {
                    table,
                    partition_key,
                    mutations,
                })
                .collect();
            self.store
                .write_logged_batch(partitions, options.consistency)
                .await?;
        } else {
            for (table, pk, mutations) in groups {
                self.store
                    .write(&table, &pk, mutations, options.consistency)
                    .await?;
            }
        }
        Ok(Response {
            result: QueryResult::Void,
            warnings,
        })
    }

    fn prepared_id(text: &str, keyspace: Option<&str>) -> Vec<u8> {
        let a = hash64(&[text.as_bytes(), keyspace.unwrap_or("").as_bytes()]);
        let b = hash64(&[keyspace.unwrap_or("").as_bytes(), text.as_bytes()]);
        let mut id = a.to_be_bytes().to_vec();
        id.extend_from_slice(&b.to_be_bytes());
        id
    }

    fn prepare_now(&self, session: &SessionState, text: &str) -> Result<Prepared, QueryError> {
        let stmt = cql_lite::parse_statement(text).map_err(|e| parse_error(&e, text))?;
        let schema = self.schema.current();
        let ks = session.keyspace.as_deref();
        let checked = self.check(&stmt, text, &schema, ks)?;
        let bind_markers = checked.binder.specs().to_vec();
        let result_columns = checked
            .select
            .as_ref()
            .map(|s| s.columns.to_vec())
            .unwrap_or_default();
        let id = Self::prepared_id(text, ks);
        self.prepared.lock().insert(
            id.clone(),
            Arc::new(PreparedEntry {
                stmt,
                text: text.to_string(),
                keyspace: session.keyspace.clone(),
                checked: Mutex::new(Some(Arc::new(checked))),
            }),
        );
        Ok(Prepared {
            id,
            bind_markers,
            result_columns,
        })
    }
}

impl QueryExecutor for Executor {
    fn execute<'a>(
        &'a self,
        session: &'a mut SessionState,
        text: &'a str,
        values: Vec<Value>,
        options: QueryOptions,
    ) -> BoxFuture<'a, Result<Response, QueryError>> {
        Box::pin(self.run_script(session, text, values, options))
    }

    fn prepare<'a>(
        &'a self,
        session: &'a SessionState,
        text: &'a str,
    ) -> BoxFuture<'a, Result<Prepared, QueryError>> {
        Box::pin(async move { self.prepare_now(session, text) })
    }

    fn execute_prepared<'a>(
        &'a self,
        session: &'a mut SessionState,
        id: &'a [u8],
        values: Vec<Value>,
        options: QueryOptions,
    ) -> BoxFuture<'a, Result<Response, QueryError>> {
        Box::pin(async move {
            let entry = self.prepared.lock().get(id).cloned().ok_or_else(|| {
                QueryError::UnknownPrepared(id.iter().map(|b| format!("{b:02x}")).collect())
            })?;
            // A prepared statement runs in the keyspace it was prepared in.
            let mut scoped = SessionState {
                keyspace: entry.keyspace.clone(),
            };
            let r = self
                .run(
                    &mut scoped,
                    &entry.stmt,
                    &entry.text,
                    values,
                    options,
                    Some(&entry),
                )
                .await?;
            if let QueryResult::SetKeyspace(k) = &r.result {
                session.keyspace = Some(k.clone());
            }
            Ok(r)
        })
    }
}
