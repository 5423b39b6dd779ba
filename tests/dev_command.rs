//! `ringdb dev` end to end: a real server process, the shell on it, a clean
//! stop, and the data still there when the node starts again.

use std::process::Command;

fn free_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

fn dev(dir: &std::path::Path, port: u16, statements: &str) -> (i32, String, String) {
    let peer_port = free_udp_port();
    let out = Command::new(env!("CARGO_BIN_EXE_ringdb"))
        .args(["dev", "--nodes", "1", "--dir"])
        .arg(dir)
        .args(["--port", &port.to_string(), "-e", statements])
        .args(["--peer-port", &peer_port.to_string()])
        .env("NO_COLOR", "1")
        .output()
        .expect("run ringdb dev");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn dev_runs_statements_stops_cleanly_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let (code, out, err) = dev(
        dir.path(),
        port,
        "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}; \
         CREATE TABLE ks.t (p int, c int, v text, PRIMARY KEY (p, c)); \
         INSERT INTO ks.t (p, c, v) VALUES (1, 1, 'first'); \
         INSERT INTO ks.t (p, c, v) VALUES (1, 2, 'second');",
    );
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let log = std::fs::read_to_string(dir.path().join("node1.log")).unwrap();
    assert!(
        log.contains("shutting down"),
        "the server stopped cleanly: {log}"
    );

    // A second run starts the node again on the same data.
    let (code, out, err) = dev(
        dir.path(),
        port,
        "SELECT c, v FROM ks.t WHERE p = 1 ORDER BY c DESC;",
    );
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let second = out.find("second").expect("row 2 survived the restart");
    let first = out.find("first").expect("row 1 survived the restart");
    assert!(second < first, "descending order: {out}");

    // An error gives a non-zero exit code and the caret.
    let (code, _out, err) = dev(dir.path(), port, "SELECT * FROM ks.nope;");
    assert_eq!(code, 1);
    assert!(err.contains('^'), "caret under the error: {err}");
}
