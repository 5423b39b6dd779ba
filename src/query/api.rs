//! The seams of the query layer.
//!
//! Upward, [`QueryExecutor`] is what the server (and tests) call: text or a
//! prepared statement in, a [`QueryResult`] out. Downward, [`DataStore`] is
//! the narrow interface the query layer writes and reads data through: a
//! single node implements it over its local storage engines, and the
//! cluster's coordinator implements it over replicas, without the query
//! layer changing.

use crate::model::dots::MAX_COUNTER;
use crate::model::{
    Consistency, DotSet, PartitionHeader, RangeTombstone, RowState, RowWrite, Timestamp,
};
use crate::storage::StorageError;
use cql_lite::{DataType, MarkerType, Value};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::ops::Bound;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed, sendable future (the trait methods return these so the traits
/// stay object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Per-request options a client sends with a statement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryOptions {
    /// Consistency level of the request.
    pub consistency: Consistency,
    /// Rows per page (`None`: the server's default page size).
    pub page_size: Option<u32>,
    /// Where the previous page stopped.
    pub paging_state: Option<PagingState>,
    /// The causal context a read returned, sent back with a write so that
    /// it supersedes exactly the versions the client saw.
    pub causal_context: Option<DotSet>,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions {
            consistency: Consistency::One,
            page_size: None,
            paging_state: None,
            causal_context: None,
        }
    }
}

/// An opaque position in a result, returned with a page and sent back for
/// the next one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PagingState(pub Vec<u8>);

/// The name and type of one result column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSpec {
    /// Column name or alias, as the client sees it.
    pub name: String,
    /// Its type.
    pub data_type: DataType,
}

/// One result row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// One value per column of the result set (`Value::Null` for none).
    pub values: Vec<Value>,
    /// Whether the row had concurrent versions (siblings) that were
    /// resolved by timestamp.
    pub conflict: bool,
    /// With `WITH SIBLINGS`: each sibling's values, in the same column
    /// layout. Empty otherwise.
    pub siblings: Vec<Vec<Value>>,
}

/// Rows returned by a SELECT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultSet {
    /// The columns, in order (shared: a prepared SELECT's results all
    /// carry the same list).
    pub columns: Arc<[ColumnSpec]>,
    /// The rows of this page.
    pub rows: Vec<Row>,
    /// Set when more rows follow: send it back for the next page.
    pub paging_state: Option<PagingState>,
    /// The causal context of what was read (for read-modify-write).
    pub causal_context: Option<DotSet>,
}

/// What a statement returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum QueryResult {
    /// A write or DDL statement succeeded.
    Void,
    /// `USE ks` succeeded; the session's keyspace is now `ks`.
    SetKeyspace(String),
    /// The schema changed; `description` says what (e.g. "CREATED TABLE ks.t").
    SchemaChange {
        /// What changed.
        description: String,
    },
    /// Rows.
    Rows(ResultSet),
}

/// A non-fatal remark attached to a result (Cassandra's warnings).
pub type Warning = String;

/// Errors a statement can end with. Each is typed so the client and the
/// shell can show it clearly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum QueryError {
    /// The text does not parse; `rendered` has the caret line.
    #[error("{rendered}")]
    Syntax {
        /// Message with position.
        message: String,
        /// Position, message, source line and caret.
        rendered: String,
    },
    /// The statement does not fit the schema; `rendered` has the caret line.
    #[error("{rendered}")]
    Invalid {
        /// Message with position.
        message: String,
        /// Position, message, source line and caret.
        rendered: String,
    },
    /// Too few replicas are alive to even try.
    #[error("cannot achieve consistency level {consistency}: {required} replicas required but only {alive} alive")]
    Unavailable {
        /// The requested level.
        consistency: Consistency,
        /// Replicas the level needs.
        required: usize,
        /// Replicas known alive.
        alive: usize,
    },
    /// Replicas did not answer in time.
    #[error("operation timed out at consistency {consistency}: {received} of {required} replicas answered")]
    Timeout {
        /// The requested level.
        consistency: Consistency,
        /// Replicas the level needs.
        required: usize,
        /// Replicas that answered in time.
        received: usize,
        /// Whether it was a write (its outcome is then unknown).
        write: bool,
    },
    /// A logged batch could not be written to its batch log on enough
    /// nodes: none of the batch was applied (see the coordinator's
    /// documentation for the one exception, a node that stored the entry
    /// and could not be told to drop it).
    #[error("logged batch not applied: its batch log needs {required} node(s) to acknowledge, {alive} alive, {received} acknowledged")]
    BatchLog {
        /// Batch-log acknowledgements the batch needs (1 or 2).
        required: usize,
        /// Nodes that could hold the batch log, known alive.
        alive: usize,
        /// Nodes that acknowledged the batch log in time.
        received: usize,
    },
    /// A prepared statement id the server does not know (re-prepare it).
    #[error("unknown prepared statement {0}")]
    UnknownPrepared(String),
    /// The storage or another server-side part failed.
    #[error("server error: {0}")]
    Server(String),
    /// Replicas answered with an error, or could not be reached, so that
    /// the level could not be met; every replica asked had answered or
    /// failed before the deadline (Cassandra's WriteFailure / ReadFailure).
    /// A failed write may still have been applied on the replicas that
    /// answered, like a timed-out one. Sent only to clients of protocol
    /// version 2 and later; older ones get it as a [`QueryError::Timeout`]
    /// (see `crate::client::protocol`). Added last so that the variants
    /// before it keep their numbers on the wire.
    #[error(
        "operation failed at consistency {consistency}: {received} of {required} replicas answered, {} failed ({})",
        .failures.len(),
        .failures.join("; ")
    )]
    Failure {
        /// The requested level.
        consistency: Consistency,
        /// Replicas the level needs.
        required: usize,
        /// Replicas that answered.
        received: usize,
        /// Each replica that failed, and why (`ADDRESS: reason`).
        failures: Vec<String>,
        /// Whether it was a write (its outcome is then unknown).
        write: bool,
    },
}

impl QueryError {
    /// This error as a client of protocol version 1 knows it: a
    /// [`QueryError::Failure`] becomes the [`QueryError::Timeout`] that
    /// version reported for it; everything else is unchanged.
    pub fn for_version_1(self) -> QueryError {
        match self {
            QueryError::Failure {
                consistency,
                required,
                received,
                write,
                ..
            } => QueryError::Timeout {
                consistency,
                required,
                received,
                write,
            },
            other => other,
        }
    }
}

impl From<StorageError> for QueryError {
    fn from(e: StorageError) -> Self {
        QueryError::Server(e.to_string())
    }
}

/// A successful statement: its result and any warnings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The result.
    pub result: QueryResult,
    /// Warnings (e.g. a large batch across partitions).
    pub warnings: Vec<Warning>,
}

/// The name and type of one bind marker (one variable) of a statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkerSpec {
    /// `name` for `:name`; for `?` the column it binds to (`in(k)` for
    /// `k IN ?`, as Cassandra names it) or the parameter (`[ttl]`).
    pub name: String,
    /// One value of a type, or a list of them for `IN ?`.
    pub marker_type: MarkerType,
}

/// A statement parsed and checked once, executed many times with values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prepared {
    /// The id the client sends back.
    pub id: Vec<u8>,
    /// The variables the statement takes, in order.
    pub bind_markers: Vec<MarkerSpec>,
    /// Columns of the result, for a SELECT.
    pub result_columns: Vec<ColumnSpec>,
}

/// Per-connection state: the keyspace in use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    /// Set by `USE ks`.
    pub keyspace: Option<String>,
}

/// What the server calls to run statements.
pub trait QueryExecutor: Send + Sync + 'static {
    /// Parses and runs one statement (or a script of them; the last
    /// result is returned).
    fn execute<'a>(
        &'a self,
        session: &'a mut SessionState,
        text: &'a str,
        values: Vec<Value>,
        options: QueryOptions,
    ) -> BoxFuture<'a, Result<Response, QueryError>>;

    /// Parses and checks a statement for repeated execution.
    fn prepare<'a>(
        &'a self,
        session: &'a SessionState,
        text: &'a str,
    ) -> BoxFuture<'a, Result<Prepared, QueryError>>;

    /// Runs a prepared statement with bound values.
    fn execute_prepared<'a>(
        &'a self,
        session: &'a mut SessionState,
        id: &'a [u8],
        values: Vec<Value>,
        options: QueryOptions,
    ) -> BoxFuture<'a, Result<Response, QueryError>>;
}

/// Names a table's data: its keyspace, name and schema id (a table dropped
/// and created again under the same name gets a new id, so old data is
/// never read as new).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableRef {
    /// Keyspace name.
    pub keyspace: String,
    /// Table name.
    pub table: String,
    /// Schema id of the table.
    pub id: u128,
}

/// Refuses mutations whose causal context (sent by a client, or by a
/// coordinator on a client's behalf) has a counter no real write has
/// (above [`MAX_COUNTER`]): stamping after it would overflow the counter.
/// Checked by the coordinator before it asks a replica to stamp, and by
/// the replica that stamps.
pub fn check_causal_contexts(mutations: &[Mutation]) -> Result<(), QueryError> {
    for m in mutations {
        let Mutation::Row {
            context: Some(context),
            ..
        } = m
        else {
            continue;
        };
        let largest = context.largest_counter();
        if largest > MAX_COUNTER {
            let message = format!(
                "causal context has a dot counter of {largest}, above the largest a write \
                 can have ({MAX_COUNTER}); send back the context a read returned"
            );
            return Err(QueryError::Invalid {
                rendered: message.clone(),
                message,
            });
        }
    }
    Ok(())
}

/// One change to one partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Mutation {
    /// A write to one row, stamped by a replica: the row is named by its
    /// encoded clustering key; `context` is the client's causal context.
    Row {
        /// Encoded clustering key.
        clustering: Vec<u8>,
        /// The cells, marker and deletion written.
        write: RowWrite,
        /// What the client read, if it sent a context.
        context: Option<DotSet>,
    },
    /// A deletion of a range of clustering keys.
    Range(RangeTombstone),
    /// A deletion of the whole partition.
    Partition(Timestamp),
}

/// The mutations of one partition, as one part of a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionWrite {
    /// The table.
    pub table: TableRef,
    /// Serialized partition key.
    pub partition_key: Vec<u8>,
    /// The mutations, in statement order.
    pub mutations: Vec<Mutation>,
}

fn batch_codec() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ 64 << 20 }>()
}

/// Encodes the partitions of a batch (what a batch log stores).
pub fn encode_partition_writes(parts: &[PartitionWrite]) -> Result<Vec<u8>, String> {
    bincode::serde::encode_to_vec(parts, batch_codec()).map_err(|e| e.to_string())
}

/// Decodes what [`encode_partition_writes`] made (bytes from disk: a typed
/// error, never a panic).
pub fn decode_partition_writes(bytes: &[u8]) -> Result<Vec<PartitionWrite>, String> {
    let (parts, used) =
        bincode::serde::decode_from_slice::<Vec<PartitionWrite>, _>(bytes, batch_codec())
            .map_err(|e| e.to_string())?;
    if used != bytes.len() {
        return Err(format!("{} trailing bytes", bytes.len() - used));
    }
    Ok(parts)
}

/// What a read of one partition asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceRequest {
    /// Lower bound on the encoded clustering key (a prefix bound).
    pub lower: Bound<Vec<u8>>,
    /// Upper bound on the encoded clustering key (a prefix bound).
    pub upper: Bound<Vec<u8>>,
    /// Descending clustering order.
    pub reverse: bool,
    /// Most live rows to return.
    pub limit: Option<usize>,
}

/// One row as the store returns it: all versions, so the query layer can
/// resolve, show siblings and hand out causal contexts.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    /// Encoded clustering key.
    pub clustering: Vec<u8>,
    /// The merged state of the row.
    pub state: RowState,
}

/// One partition's rows from a read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoredPartition {
    /// The partition's deletions.
    pub header: PartitionHeader,
    /// Live rows in the requested order.
    pub rows: Vec<StoredRow>,
}

/// A partition from a scan: its prefix (token and key) and its rows.
pub type ScannedPartition = (Vec<u8>, StoredPartition);

/// The data below the query layer: local engines on a single node, the
/// coordinator in a cluster.
pub trait DataStore: Send + Sync + 'static {
    /// Applies mutations to one partition (named by its serialized
    /// partition key) at a consistency level.
    fn write<'a>(
        &'a self,
        table: &'a TableRef,
        partition_key: &'a [u8],
        mutations: Vec<Mutation>,
        consistency: Consistency,
    ) -> BoxFuture<'a, Result<(), QueryError>>;

    /// Reads a slice of one partition.
    fn read<'a>(
        &'a self,
        table: &'a TableRef,
        partition_key: &'a [u8],
        slice: SliceRequest,
        consistency: Consistency,
    ) -> BoxFuture<'a, Result<StoredPartition, QueryError>>;

    /// Reads partitions in token order starting after `after` (a partition
    /// prefix: token and key), at most `max_partitions` of them, each with
    /// at most `rows_per_partition` live rows. Used by full scans (ALLOW
    /// FILTERING, DISTINCT, queries without a partition key) and paging.
    fn scan<'a>(
        &'a self,
        table: &'a TableRef,
        after: Option<Vec<u8>>,
        max_partitions: usize,
        rows_per_partition: Option<usize>,
        consistency: Consistency,
    ) -> BoxFuture<'a, Result<Vec<ScannedPartition>, QueryError>>;

    /// Removes all data of a table (TRUNCATE, DROP TABLE).
    fn truncate<'a>(&'a self, table: &'a TableRef) -> BoxFuture<'a, Result<(), QueryError>>;

    /// Applies a logged batch that spans several partitions: once this
    /// returns anything but a batch-log failure
    /// ([`QueryError::BatchLog`], or an error before the log was written),
    /// every partition is applied eventually, even if this node dies half
    /// way (Cassandra's logged batch: atomic, not isolated).
    ///
    /// The default applies the partitions one after the other with no log,
    /// which is not atomic: the stores of a node override it (the local
    /// store with its own batch log, the cluster with batch-log replicas).
    fn write_logged_batch<'a>(
        &'a self,
        partitions: Vec<PartitionWrite>,
        consistency: Consistency,
    ) -> BoxFuture<'a, Result<(), QueryError>> {
        Box::pin(async move {
            for p in partitions {
                self.write(&p.table, &p.partition_key, p.mutations, consistency)
                    .await?;
            }
            Ok(())
        })
    }
}
