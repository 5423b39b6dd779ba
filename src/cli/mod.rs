//! Subcommands of the `ringdb` binary (the CLI edge: errors are `anyhow`).

pub mod admin;
pub mod bench;
pub mod certs;
pub mod crash_writer;
pub mod dev;
pub mod local_cluster;
pub mod server;
pub mod ycsb;

/// A tokio runtime builder for `threads` async threads (`None`: one per
/// CPU). One thread gets the single-threaded runtime: the same behaviour as
/// a pool of one (nothing here blocks an async thread), without the pool's
/// cross-thread queue and wake-ups, and a woken task queues behind the
/// ready ones instead of running next, so quinn sends a batch of requests
/// in fewer packets (docs/performance.md: 13-44 % more operations per
/// server CPU-second).
pub fn runtime_builder(threads: Option<usize>) -> tokio::runtime::Builder {
    match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    }
}
