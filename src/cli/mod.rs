//! Subcommands of the `ringdb` binary (the CLI edge: errors are `anyhow`).

pub mod admin;
pub mod bench;
pub mod certs;
pub mod crash_writer;
pub mod dev;
pub mod local_cluster;
pub mod server;
pub mod ycsb;
