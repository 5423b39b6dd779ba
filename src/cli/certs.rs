//! `ringdb certs`: the cluster CA and node certificates for mutual TLS.
//!
//! ```text
//! ringdb certs init --dir certs              # certs/ca.pem, certs/ca.key
//! ringdb certs node n1 --dir certs --ip 10.0.0.1
//!                                            # certs/n1/{ca.pem,node.pem,node.key}
//! ```
//!
//! Ship a node its own directory (never `ca.key`). Existing files are not
//! overwritten unless `--force` is given.

use anyhow::Context;
use ringdb::net::tls::{ClusterCa, NodeCert};
use std::net::IpAddr;
use std::path::PathBuf;

/// Arguments of `ringdb certs`.
#[derive(clap::Args, Debug)]
pub struct CertsArgs {
    #[command(subcommand)]
    command: CertsCommand,
}

#[derive(clap::Subcommand, Debug)]
enum CertsCommand {
    /// Creates the cluster certificate authority: DIR/ca.pem and DIR/ca.key.
    Init {
        /// Directory of the CA (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// Overwrite an existing CA. Every node certificate issued by the
        /// old CA stops working.
        #[arg(long)]
        force: bool,
    },
    /// Issues a certificate for node NAME, signed by the CA in DIR, into
    /// DIR/NAME (or --out): ca.pem, node.pem, node.key.
    Node {
        /// Node name (a DNS name: letters, digits, '-', '.').
        name: String,
        /// Directory of the CA (from `ringdb certs init`).
        #[arg(long)]
        dir: PathBuf,
        /// IP address of the node to put in the certificate (repeatable).
        #[arg(long = "ip")]
        ips: Vec<IpAddr>,
        /// Extra DNS name of the node to put in the certificate (repeatable).
        #[arg(long = "dns")]
        dns_names: Vec<String>,
        /// Output directory (default: DIR/NAME).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Overwrite existing files in the output directory.
        #[arg(long)]
        force: bool,
    },
}

/// Runs `ringdb certs`.
pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    match args.command {
        CertsCommand::Init { dir, force } => {
            let ca = ClusterCa::generate().context("generating the cluster CA")?;
            let written = ca
                .save(&dir, force)
                .with_context(|| format!("saving the cluster CA in {}", dir.display()))?;
            for path in written {
                println!("wrote {}", path.display());
            }
            Ok(())
        }
        CertsCommand::Node {
            name,
            dir,
            ips,
            dns_names,
            out,
            force,
        } => {
            let ca = ClusterCa::load(&dir).with_context(|| {
                format!(
                    "loading the cluster CA from {} (create it with `ringdb certs init --dir {}`)",
                    dir.display(),
                    dir.display()
                )
            })?;
            let cert = NodeCert::issue(&ca, &name, &ips, &dns_names)
                .with_context(|| format!("issuing a certificate for node {name:?}"))?;
            let out = out.unwrap_or_else(|| dir.join(&name));
            let written = cert.save(&out, force).with_context(|| {
                format!(
                    "saving the certificate of node {name:?} in {}",
                    out.display()
                )
            })?;
            for path in written {
                println!("wrote {}", path.display());
            }
            Ok(())
        }
    }
}
