//! `ringdb bench`: benchmarks, as a group of subcommands.
//!
//! `ringdb bench storage` measures the storage engine alone beside its
//! peers (the fjall crate and RocksDB's `db_bench`); cluster workloads are
//! to join it as further subcommands.

pub mod db_bench;
pub mod fjall_peer;
pub mod report;
pub mod ringdb_peer;
pub mod storage;
pub mod ui;
pub mod workload;

/// Arguments of `ringdb bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Which benchmark.
    #[command(subcommand)]
    pub command: BenchCommand,
}

/// The benchmarks.
#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// The storage engine beside fjall and RocksDB's db_bench: key-value
    /// fills and reads, durable writes, wide-row slices, write amplification.
    Storage(storage::StorageArgs),
}

/// Runs the chosen benchmark.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::Storage(a) => storage::run(a),
    }
}
