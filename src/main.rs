//! The `ringdb` command line: one binary, one subcommand per tool.

use clap::{Parser, Subcommand};

mod cli;

/// ringdb: a Dynamo-style, leaderless wide-column database.
#[derive(Parser, Debug)]
#[command(name = "ringdb", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Benchmarks (`ringdb bench storage`: the storage engine beside fjall
    /// and RocksDB's db_bench).
    Bench(cli::bench::BenchArgs),
    /// Writes to a storage engine and reports each acknowledged write on
    /// stdout until killed (used by the crash-recovery test).
    #[command(hide = true)]
    CrashWriter(cli::crash_writer::CrashWriterArgs),
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
        Command::Bench(args) => cli::bench::run(args),
        Command::CrashWriter(args) => cli::crash_writer::run(args),
    }
}
