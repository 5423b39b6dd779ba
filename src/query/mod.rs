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
//! Inside: [`bind`] (markers and values), [`eval`] (terms, functions,
//! timestamps), [`write`] (INSERT/UPDATE/DELETE/BATCH to mutations),
//! [`select`] (plans, paging, aggregates) and [`format`] (text output).

pub mod api;
pub mod bind;
pub mod eval;
mod executor;
pub mod format;
pub mod local;
pub mod select;
pub mod write;

pub use executor::{Executor, ExecutorConfig};
pub use local::LocalStore;
