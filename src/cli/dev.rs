//! `ringdb dev`: a local ringdb in one command.
//!
//! Starts a real `ringdb server` process with its data (and a throw-away
//! CA) under one directory, waits until it answers, opens the shell on it,
//! and stops the server cleanly when the shell exits.

use anyhow::Context;
use ringdb::client::{Client, ClientTlsConfig};
use ringdb::shell::ShellArgs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Arguments of `ringdb dev`.
#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Directory holding the node's data, certificates and log (kept
    /// between runs; delete it to start afresh).
    #[arg(long, default_value = "ringdb-dev")]
    pub dir: PathBuf,
    /// Client port of the node.
    #[arg(long, default_value_t = 9042)]
    pub port: u16,
    /// Run these statements instead of an interactive shell.
    #[arg(short = 'e', long = "execute")]
    pub execute: Option<String>,
    /// Keyspace to use from the start.
    #[arg(short = 'k', long)]
    pub keyspace: Option<String>,
}

/// A server child process, stopped (SIGTERM, then SIGKILL) when dropped.
struct ServerProcess {
    child: Child,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) with a pid we spawned and a valid signal.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(dir: &Path, port: u16) -> anyhow::Result<ServerProcess> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let log_path = dir.join("node1.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let exe = std::env::current_exe().context("finding the ringdb binary")?;
    let child = Command::new(exe)
        .arg("server")
        .arg("--data-dir")
        .arg(dir.join("node1"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting ringdb server")?;
    Ok(ServerProcess { child })
}

/// Waits until the server accepts a client connection.
fn wait_until_up(
    server: &mut ServerProcess,
    port: u16,
    ca: &Path,
    log: &Path,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = server.child.try_wait()? {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            anyhow::bail!("ringdb server exited ({status}) before it was up; its log:\n{tail}");
        }
        if let Ok(ca_pem) = std::fs::read_to_string(ca) {
            let addr = format!("127.0.0.1:{port}").parse()?;
            let tls = ClientTlsConfig::new(ca_pem, "ringdb-node");
            let connected = runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(2), Client::connect(addr, tls)).await
            });
            if let Ok(Ok(client)) = connected {
                runtime.block_on(client.close());
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "ringdb server did not answer on port {port} within 60 s; see {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `ringdb dev`; returns the shell's exit code.
pub fn run(args: DevArgs) -> anyhow::Result<i32> {
    let mut server = start_server(&args.dir, args.port)?;
    let ca = args.dir.join("node1").join("certs").join("ca.pem");
    wait_until_up(&mut server, args.port, &ca, &args.dir.join("node1.log"))?;
    eprintln!(
        "ringdb dev: node up on 127.0.0.1:{} (data in {}); leave the shell to stop it",
        args.port,
        args.dir.display()
    );
    let shell = ShellArgs {
        host: format!("127.0.0.1:{}", args.port),
        keyspace: args.keyspace,
        execute: args.execute,
        file: None,
        ca_cert: Some(ca),
        server_name: "ringdb-node".into(),
        no_color: false,
    };
    let code = ringdb::shell::run(shell);
    drop(server);
    Ok(code)
}
