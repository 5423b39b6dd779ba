//! Cluster harness for ringdb: recorded histories of client operations and
//! the checkers that judge them.
//!
//! - [`history`]: a history of operations as clients saw them (invoked,
//!   then ok, failed, or indeterminate), recorded from any number of
//!   concurrent clients.
//! - [`checkers`]: judgements over a history; for now the lost-writes
//!   checker (invariant 2 of DESIGN.md: an acknowledged write is never
//!   silently discarded). Linearizability, convergence and session checks
//!   join it with the cluster work.

pub mod checkers;
pub mod history;
