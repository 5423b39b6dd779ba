//! ringdb: a Dynamo-style, leaderless, AP wide-column database.
//!
//! The node is built in layers (see `docs/architecture.md`): [`storage`] is
//! the LSM engine on one data directory and [`model`] defines keys, versions
//! and their merge. [`server`] serves the client protocol over QUIC,
//! [`client`] is the Rust client library and [`shell`] the interactive shell.

pub mod client;
pub mod model;
pub mod query;
pub mod server;
pub mod shell;
pub mod storage;
