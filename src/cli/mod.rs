//! Subcommands of the `ringdb` binary (the CLI edge: errors are `anyhow`).

pub mod bench;
pub mod crash_writer;
