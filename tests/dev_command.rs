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

/// A port such that it and the `n - 1` after it are free (UDP, as QUIC
/// binds), found by trying random bases.
fn free_consecutive_ports(n: u16) -> u16 {
    for _ in 0..200 {
        let base = free_udp_port();
        if base > u16::MAX - n {
            continue;
        }
        let all_free =
            (base..base + n).all(|p| std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no {n} consecutive free ports found");
}

/// README's first command as a person uses it: `ringdb dev` starts three
/// nodes and opens the interactive shell in a terminal; statements at
/// QUORUM work across the nodes; Ctrl-D leaves the shell and stops every
/// node cleanly.
#[test]
fn dev_opens_a_shell_on_three_nodes_and_ctrl_d_stops_them() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_consecutive_ports(3);
    let peer_port = free_consecutive_ports(3);
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringdb"));
    command
        .args(["dev", "--nodes", "3", "--dir"])
        .arg(dir.path())
        .args(["--port", &port.to_string()])
        .args(["--peer-port", &peer_port.to_string()])
        .env("NO_COLOR", "1");
    let mut shell =
        rexpect::session::spawn_command(command, Some(120_000)).expect("spawn ringdb dev");
    shell
        .exp_string("3 node(s) up")
        .expect("the three nodes came up");
    shell.exp_string("ringdb> ").expect("the shell's prompt");
    let run = |shell: &mut rexpect::session::PtySession, line: &str| {
        shell.send(line).expect("type");
        shell.send("\r").expect("enter");
        shell.flush().expect("flush");
    };
    run(
        &mut shell,
        "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 3};",
    );
    shell
        .exp_string("ringdb> ")
        .expect("prompt after CREATE KEYSPACE");
    run(&mut shell, "CREATE TABLE ks.t (k int PRIMARY KEY, v text);");
    shell
        .exp_string("ringdb> ")
        .expect("prompt after CREATE TABLE");
    run(&mut shell, "CONSISTENCY QUORUM");
    shell
        .exp_string("ringdb> ")
        .expect("prompt after CONSISTENCY");
    run(
        &mut shell,
        "INSERT INTO ks.t (k, v) VALUES (7, 'across three');",
    );
    shell.exp_string("ringdb> ").expect("prompt after INSERT");
    run(&mut shell, "SELECT v FROM ks.t WHERE k = 7;");
    shell.exp_string("across three").expect("the row read back");
    shell.exp_string("ringdb> ").expect("prompt after SELECT");
    // Ctrl-D on an empty line leaves the shell; dev then stops the nodes.
    shell.send_control('d').expect("Ctrl-D");
    shell.exp_eof().expect("ringdb dev exits after the shell");
    for i in 1..=3 {
        let log = std::fs::read_to_string(dir.path().join(format!("node{i}.log")))
            .unwrap_or_else(|e| panic!("node{i}.log: {e}"));
        assert!(
            log.contains("shutting down"),
            "node {i} stopped cleanly: {log}"
        );
    }
    // Every node's ports are free again: no server was left running.
    for p in (port..port + 3).chain(peer_port..peer_port + 3) {
        assert!(
            std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok(),
            "port {p} still taken"
        );
    }
}
