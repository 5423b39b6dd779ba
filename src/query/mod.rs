//! CQL-lite execution: statements to plans, run through a [`api::DataStore`].
//!
//! [`api`] holds the seams: [`api::QueryExecutor`] upward (the server) and
//! [`api::DataStore`] downward (local engines now, the coordinator later).

pub mod api;
