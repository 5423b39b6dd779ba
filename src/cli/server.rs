//! `ringdb server`: runs a node that serves clients.
//!
//! Today a node is a single-node database: the query layer over the storage
//! engines in `--data-dir`. The cluster layer (gossip, ring, coordinator)
//! plugs in underneath the same executor.

use anyhow::Context;
use ringdb::model::{HybridClock, SystemClock};
use ringdb::net::tls::{ClusterCa, NodeCert};
use ringdb::query::LocalStore;
use ringdb::query::{Executor, ExecutorConfig};
use ringdb::schema::SchemaStore;
use ringdb::server::{CatalogSource, ServerConfig};
use ringdb::storage::commitlog::SyncMode;
use ringdb::storage::engine::EngineOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Arguments of `ringdb server`.
#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// Address of the client listener (QUIC, ALPN `ringdb-cql/1`).
    #[arg(long, default_value = "127.0.0.1:9042")]
    pub listen: SocketAddr,
    /// Data directory of the node.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Directory of the node's certificates (`ca.pem`, `node.pem`,
    /// `node.key`, as `ringdb certs` writes them). Default: `<data-dir>/certs`,
    /// where a throw-away CA and node certificate are created on first
    /// start.
    #[arg(long)]
    pub certs_dir: Option<PathBuf>,
    /// Commit-log durability: `batch` (acknowledge after fsync) or
    /// `periodic:<ms>` (fsync every so many milliseconds).
    #[arg(long, default_value = "batch", value_parser = parse_sync_mode)]
    pub commitlog_sync: SyncMode,
}

fn parse_sync_mode(text: &str) -> Result<SyncMode, String> {
    match text.split_once(':') {
        None if text == "batch" => Ok(SyncMode::Batch),
        Some(("periodic", ms)) => match ms.parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(SyncMode::Periodic {
                interval: Duration::from_millis(ms),
            }),
            _ => Err(format!("'{ms}' is not a positive number of milliseconds")),
        },
        _ => Err(format!("'{text}' is neither 'batch' nor 'periodic:<ms>'")),
    }
}

/// Loads the node's client-facing TLS identity, creating a throw-away CA
/// and node certificate when the directory has none.
pub fn server_tls(certs_dir: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let node_pem = certs_dir.join("node.pem");
    if !node_pem.exists() {
        let ca = ClusterCa::generate().context("generating a CA")?;
        ca.save(certs_dir, false)
            .with_context(|| format!("saving the CA in {}", certs_dir.display()))?;
        let ips = ["127.0.0.1".parse()?, "::1".parse()?];
        NodeCert::issue(&ca, "node", &ips, &[])
            .context("issuing the node certificate")?
            // The node's files include ca.pem again (same content).
            .save(certs_dir, true)
            .with_context(|| format!("saving the node certificate in {}", certs_dir.display()))?;
        eprintln!(
            "ringdb: created a throw-away CA and node certificate in {} (clients trust {})",
            certs_dir.display(),
            certs_dir.join("ca.pem").display()
        );
    }
    let read = |name: &str| {
        let path = certs_dir.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    Ok(ringdb::server::tls_config_from_pem(
        &read("node.pem")?,
        &read("node.key")?,
    )?)
}

/// Runs the server until SIGINT or SIGTERM.
pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    let certs_dir = args
        .certs_dir
        .clone()
        .unwrap_or_else(|| args.data_dir.join("certs"));
    let tls = server_tls(&certs_dir)?;
    let schema = Arc::new(
        SchemaStore::open(&args.data_dir.join("schema"))
            .with_context(|| format!("opening the schema in {}", args.data_dir.display()))?,
    );
    let clock = Arc::new(HybridClock::new(Arc::new(SystemClock)));
    let template = EngineOptions {
        sync_mode: args.commitlog_sync,
        ..EngineOptions::default()
    };
    let store = Arc::new(
        LocalStore::open(
            &args.data_dir.join("data"),
            clock.clone(),
            schema.clone(),
            template,
        )
        .with_context(|| format!("opening the data in {}", args.data_dir.display()))?,
    );
    let executor = Arc::new(Executor::new(
        store,
        schema.clone(),
        clock,
        ExecutorConfig::default(),
    ));
    let config = ServerConfig {
        listen: args.listen,
        tls,
        limits: Default::default(),
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(ringdb::server::run_server(
        config,
        executor,
        Arc::new(CatalogSource(schema)),
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_modes_parse_and_nonsense_is_refused() {
        assert_eq!(parse_sync_mode("batch"), Ok(SyncMode::Batch));
        assert_eq!(
            parse_sync_mode("periodic:10"),
            Ok(SyncMode::Periodic {
                interval: Duration::from_millis(10)
            })
        );
        assert!(parse_sync_mode("periodic:0").is_err());
        assert!(parse_sync_mode("sometimes").is_err());
    }
}
