//! ringdb: a Dynamo-style, leaderless, AP wide-column database.
//!
//! The node is built in layers (see `docs/architecture.md`): [`storage`] is
//! the LSM engine on one data directory, [`model`] defines keys, versions
//! and their merge, and [`net`] carries messages between nodes (QUIC with
//! mutual TLS, or a deterministic simulation).

pub mod model;
pub mod net;
pub mod storage;
