//! The `ringdb` command line: one binary, one subcommand per tool.

use clap::{Parser, Subcommand};

mod cli;

/// Every allocation of the process goes through jemalloc: with glibc's
/// malloc, allocation and free took about 36 % of the servers' CPU under
/// YCSB workload A (many short-lived buffers per request, freed on other
/// threads); with jemalloc 7 % (mimalloc: 18 %). docs/performance.md has
/// the measurement.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// ringdb: a Dynamo-style, leaderless wide-column database.
#[derive(Parser, Debug)]
#[command(name = "ringdb", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Operations on a running node (`status`).
    Admin(cli::admin::AdminArgs),
    /// Creates the cluster CA and issues node certificates (mutual TLS
    /// between nodes).
    Certs(cli::certs::CertsArgs),
    /// A local ringdb in one command: starts a cluster of server processes
    /// on 127.0.0.1 (3 nodes by default) and opens the shell on node 1;
    /// leaving the shell stops the nodes.
    Dev(cli::dev::DevArgs),
    /// Benchmarks: `ringdb bench storage` (the storage engine beside fjall
    /// and RocksDB's db_bench) and `ringdb bench ycsb` (YCSB workloads on
    /// local clusters).
    Bench(cli::bench::BenchArgs),
    /// Writes to a storage engine and reports each acknowledged write on
    /// stdout until killed (used by the crash-recovery test).
    #[command(hide = true)]
    CrashWriter(cli::crash_writer::CrashWriterArgs),
    /// Runs a node serving clients.
    Server(cli::server::ServerArgs),
    /// The interactive CQL-lite shell.
    Shell(ringdb::shell::ShellArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Admin(args) => cli::admin::run(args),
        Command::Certs(args) => cli::certs::run(args),
        Command::Bench(args) => cli::bench::run(args),
        Command::CrashWriter(args) => cli::crash_writer::run(args),
        Command::Dev(args) => std::process::exit(cli::dev::run(args)?),
        Command::Server(args) => cli::server::run(args),
        Command::Shell(args) => std::process::exit(ringdb::shell::run(args)),
    }
}
