//! `ringdb bench`: benchmarks, as a group of subcommands.
//!
//! `ringdb bench storage` measures the storage engine alone beside its
//! peers (the fjall crate and RocksDB's `db_bench`); `ringdb bench ycsb`
//! runs YCSB's core workloads against a 3-node RF=3 and a 1-node cluster
//! (or an existing one).

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
    /// YCSB core workloads (A, B, C, F) against a 3-node RF=3 QUORUM and a
    /// 1-node local cluster, or an existing one: throughput and p50, p99,
    /// p999 latency per operation type, and the cost of replication.
    Ycsb(super::ycsb::YcsbArgs),
}

/// Runs the chosen benchmark.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::Storage(a) => storage::run(a),
        BenchCommand::Ycsb(a) => super::ycsb::run(a),
    }
}
