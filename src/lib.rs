//! ringdb: a Dynamo-style, leaderless, AP wide-column database.
//!
//! The node is built in layers (see `docs/architecture.md`), bottom up:
//! [`model`] defines keys, versions and their merge; [`storage`] is the LSM
//! engine on one data directory; [`net`] carries messages between nodes
//! (QUIC with mutual TLS, or a deterministic simulation); [`cluster`] holds
//! the ring and hints; [`schema`] the catalog; [`query`] runs CQL-lite
//! statements through a data store; [`server`] serves the client protocol
//! over QUIC, [`client`] is the Rust client library and [`shell`] the
//! interactive shell.

pub mod client;
pub mod cluster;
pub mod coordinator;
pub mod model;
pub mod net;
pub mod node;
pub mod query;
pub mod schema;
pub mod server;
pub mod shell;
pub mod storage;
