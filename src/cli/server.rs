//! `ringdb server`: runs a node that serves clients.
//!
//! The flags are parsed here; serving is [`ringdb::server::run_server`].
//! INTEGRATION POINT: [`run`] must build the node's query executor (over the
//! storage engines in `--data-dir`), its schema source and the TLS identity
//! in `--certs-dir` (`net::tls`), then call `run_server`. Until the query
//! and net layers are merged it says so and exits with an error: there is no
//! stand-in executor in the binary.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Arguments of `ringdb server`.
#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// Address of the client listener (QUIC, ALPN `ringdb-cql/1`).
    #[arg(long, default_value = "127.0.0.1:9042")]
    pub listen: SocketAddr,
    /// Data directory of the node.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Directory of the node's certificates (`ca.pem`, `node.pem`, `node.key`).
    #[arg(long)]
    pub certs_dir: PathBuf,
}

/// Runs the server (see the module documentation for what is missing).
pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    // INTEGRATION POINT: build `executor: Arc<dyn QueryExecutor>` and
    // `schema: Arc<dyn SchemaSource>` for `args.data_dir`, the TLS config
    // from `args.certs_dir`, then:
    //   let config = ringdb::server::ServerConfig { listen: args.listen, tls, limits: Default::default() };
    //   tokio::runtime::Runtime::new()?.block_on(ringdb::server::run_server(config, executor, schema))?;
    anyhow::bail!(
        "ringdb server (listen {}, data dir {}, certs dir {}): the query executor is not wired in yet",
        args.listen,
        args.data_dir.display(),
        args.certs_dir.display()
    )
}
