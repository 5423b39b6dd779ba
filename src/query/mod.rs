//! CQL-lite execution: statements to plans, run through a [`api::DataStore`].
//!
//! [`api`] holds the seams: [`api::QueryExecutor`] upward (the server) and
//! [`api::DataStore`] downward (local engines now, the coordinator later).
//! [`Executor`] implements the first over any implementation of the second;
//! [`local::LocalStore`] is the single-node store over storage engines.
//!
//! The executor is async only at its seams: parsing, checking and planning
//! are plain functions, and every await is a call into the `DataStore`. The
//! local store runs the blocking engine calls in `spawn_blocking`, so a
//! coordinator that awaits network replies can replace it unchanged.
//!
//! Decisions worth knowing:
//!
//! - Results of `pk IN (...)` come partition by partition in the order of
//!   the key values (deduplicated), rows in clustering order; with `ORDER
//!   BY` they are merged in clustering order and, as in Cassandra, such a
//!   query cannot be paged. Scans return partitions in token order.
//! - `causal_context` of a result is the row's context when the query names
//!   exactly one row (full primary key by `=`; an empty context when the
//!   row does not exist), and `None` otherwise: dots are counted per row,
//!   so a join over several rows would name dots of other rows and could
//!   make a write supersede versions it never saw. A write with a context
//!   must write exactly one row.
//! - `WITH SIBLINGS` lists each version of a row that has more than one.
//! - `k IN ?` binds a whole list ([`cql_lite::Value::List`]); binding
//!   rewrites it to the literal `IN (...)`, so the rest of the layer never
//!   sees a list, and a list bound anywhere else is refused.
//! - A SELECT reads through the `DataStore` in batches
//!   ([`select::ReadBatch`]), never a whole partition or table at once:
//!   aggregates and groups are folded as rows stream by.
//! - Timestamps: `USING TIMESTAMP` microseconds become HLC values with the
//!   milliseconds in the high bits and the remaining microseconds in the
//!   logical counter (order-preserving); `WRITETIME` converts back.
//! - A logged batch is not atomic across partitions yet (there is no batch
//!   log on a single node); its statements share one timestamp.
//!
//! Inside: [`bind`] (markers and values), [`eval`] (terms, functions,
//! timestamps), [`write`] (INSERT/UPDATE/DELETE/BATCH to mutations),
//! [`select`] (plans, paging, aggregates), [`format`] (text output) and
//! [`schema_errors`] (schema errors pointed at their statement).

pub mod api;
pub mod bind;
pub mod eval;
mod executor;
pub mod format;
pub mod local;
pub mod schema_errors;
pub mod select;
pub mod stamp_actor;
pub mod stamp_ids;
pub mod write;

pub use executor::{Executor, ExecutorConfig};
pub use local::{CompactSummary, FlushSummary, LocalStore, StorageStats};
