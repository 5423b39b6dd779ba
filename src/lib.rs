//! ringdb: a Dynamo-style, leaderless, AP wide-column database.
//!
//! The node is built in layers (see `docs/architecture.md`): [`storage`] is
//! the LSM engine on one data directory and [`model`] defines keys, versions
//! and their merge.

pub mod model;
pub mod query;
pub mod schema;
pub mod storage;
