//! `ringdb certs`: the files it writes, its refusals, and that two nodes
//! with certificates it issued talk over QUIC with mutual TLS.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ringdb::net::tls::{CertError, ClusterCa, NodeCert, NodeTls};
use ringdb::net::{BoxFuture, Handler, QuicConfig, QuicTransport, Transport};

fn ringdb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringdb"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run ringdb")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

#[test]
fn certs_init_and_node_write_files_and_refuse_to_overwrite() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("ca");

    let out = ringdb(&["certs", "init", "--dir", path(&dir)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.join("ca.pem").is_file() && dir.join("ca.key").is_file());

    // A second init refuses, and says why; the CA is unchanged.
    let before = std::fs::read(dir.join("ca.key")).expect("read");
    let out = ringdb(&["certs", "init", "--dir", path(&dir)]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already exists") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(dir.join("ca.key")).expect("read"), before);

    let out = ringdb(&[
        "certs",
        "node",
        "n1",
        "--dir",
        path(&dir),
        "--ip",
        "127.0.0.1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ringdb(&[
        "certs",
        "node",
        "n2",
        "--dir",
        path(&dir),
        "--dns",
        "n2.example",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for node in ["n1", "n2"] {
        for file in ["ca.pem", "node.pem", "node.key"] {
            assert!(dir.join(node).join(file).is_file(), "{node}/{file}");
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in [dir.join("ca.key"), dir.join("n1/node.key")] {
            let mode = std::fs::metadata(&key).expect("stat").permissions().mode();
            assert_eq!(mode & 0o077, 0, "{} is readable by others", key.display());
        }
    }

    // Issuing n1 again refuses; --force overwrites.
    let out = ringdb(&["certs", "node", "n1", "--dir", path(&dir)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let out = ringdb(&["certs", "node", "n1", "--dir", path(&dir), "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Bad input: clear errors, no files.
    let out = ringdb(&["certs", "node", "bad name", "--dir", path(&dir)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a DNS name"));
    assert!(!dir.join("bad name").exists());
    let missing = tmp.path().join("missing");
    let out = ringdb(&["certs", "node", "n3", "--dir", path(&missing)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("certs init"));

    // A CA key that is not the key of ca.pem is caught when issuing.
    let other = tmp.path().join("other");
    assert!(ringdb(&["certs", "init", "--dir", path(&other)])
        .status
        .success());
    std::fs::copy(other.join("ca.key"), dir.join("ca.key")).expect("copy");
    let mismatched = ClusterCa::load(&dir).expect("loads");
    assert!(matches!(
        NodeCert::issue(&mismatched, "n4", &[], &[]),
        Err(CertError::Generate { .. })
    ));
}

struct Echo;

impl Handler<String, String> for Echo {
    fn on_request(&self, from: SocketAddr, req: String) -> BoxFuture<'static, String> {
        Box::pin(async move { format!("{req} (from {from})") })
    }

    fn on_datagram(&self, _from: SocketAddr, _payload: Bytes) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_cli_issued_certificates_talk() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("ca");
    assert!(ringdb(&["certs", "init", "--dir", path(&dir)])
        .status
        .success());
    for node in ["n1", "n2"] {
        let out = ringdb(&[
            "certs",
            "node",
            node,
            "--dir",
            path(&dir),
            "--ip",
            "127.0.0.1",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let localhost = SocketAddr::from(([127, 0, 0, 1], 0));
    let bind = |node: &str| -> QuicTransport<String, String> {
        let tls = NodeTls::load(&dir.join(node)).expect("load node certs");
        QuicTransport::bind(QuicConfig::new(localhost, tls), Arc::new(Echo)).expect("bind")
    };
    let (n1, n2) = (bind("n1"), bind("n2"));
    let resp = n1
        .request(
            n2.local_addr(),
            "hello".to_string(),
            Duration::from_secs(10),
        )
        .await
        .expect("request");
    assert_eq!(resp, format!("hello (from {})", n1.local_addr()));
}
