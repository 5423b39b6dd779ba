//! The shell as a person and as a script use it: the `ringdb shell` binary
//! driven through a real pseudo-terminal (rexpect), and with `-e`, `-f`
//! and piped standard input, against a real server with the in-test
//! executor.

#[path = "protocol_support.rs"]
mod support;

use ringdb::server::ClientServer;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use support::{server_tls, test_certs, TestExecutor};

/// A server in its own runtime, and the CA file the shell trusts.
struct Fixture {
    runtime: tokio::runtime::Runtime,
    server: Option<ClientServer>,
    dir: tempfile::TempDir,
    ca_path: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let certs = test_certs();
        let executor = TestExecutor::new();
        let server = {
            let _entered = runtime.enter();
            ClientServer::bind(
                "127.0.0.1:0".parse().expect("address"),
                server_tls(&certs),
                executor.clone(),
                executor,
            )
            .expect("server binds")
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, &certs.ca_pem).expect("write CA");
        Fixture {
            runtime,
            server: Some(server),
            dir,
            ca_path,
        }
    }

    fn host(&self) -> String {
        self.server
            .as_ref()
            .expect("server")
            .local_addr()
            .to_string()
    }

    fn history(&self) -> PathBuf {
        self.dir.path().join("history")
    }

    /// `ringdb shell` with the connection flags and a clean environment.
    fn command(&self, extra: &[&str]) -> Command {
        self.command_with_ca(&self.ca_path, extra)
    }

    fn command_with_ca(&self, ca: &Path, extra: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ringdb"));
        command
            .arg("shell")
            .arg("--host")
            .arg(self.host())
            .arg("--ca-cert")
            .arg(ca)
            .args(extra)
            .env("RINGDB_HISTORY", self.history())
            .env("HOME", self.dir.path())
            .env("TERM", "xterm")
            .env_remove("NO_COLOR")
            .env_remove("RINGDB_CA_CERT");
        command
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write file");
        path
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.runtime.block_on(server.shutdown());
        }
    }
}

/// Types `text` into the terminal (rexpect's writer flushes only at '\n').
fn keys(shell: &mut rexpect::session::PtySession, text: &str) {
    shell.send(text).expect("type into the terminal");
    shell.flush().expect("flush the terminal input");
}

/// Generous: only a safety net so a broken shell fails instead of hanging.
const EXPECT_TIMEOUT_MS: u64 = 60_000;

#[test]
fn interactive_shell_in_a_pseudo_terminal() {
    let fixture = Fixture::new();
    let command = fixture.command(&["-k", "demo"]);
    let mut shell =
        rexpect::session::spawn_command(command, Some(EXPECT_TIMEOUT_MS)).expect("spawn the shell");
    shell
        .exp_string("ringdb:demo> ")
        .expect("prompt with the keyspace");

    // Paging with a small page, so the 25 users take three pages.
    keys(&mut shell, "PAGING 10\r");
    shell.exp_string("Page size: 10.").expect("paging set");
    shell.exp_string("ringdb:demo> ").expect("prompt");

    // Tab completes a keyword, then a table name.
    keys(&mut shell, "SEL\t");
    shell.exp_string("SELECT ").expect("keyword completed");
    keys(&mut shell, "* FROM us\t");
    shell
        .exp_string("SELECT * FROM users")
        .expect("table completed");
    keys(&mut shell, ";\r");
    shell.exp_string("user10").expect("first page");
    shell.exp_string("--- more ---").expect("paging prompt");
    keys(&mut shell, "\r");
    shell.exp_string("user20").expect("second page");
    shell
        .exp_string("--- more ---")
        .expect("paging prompt again");
    keys(&mut shell, "q\r");
    shell
        .exp_string("(20 rows, ")
        .expect("row count of what was shown");
    shell.exp_string("ringdb:demo> ").expect("prompt");

    // A statement over three lines, with the continuation prompt.
    keys(&mut shell, "SELECT name, age\r");
    shell.exp_string("...> ").expect("continuation prompt");
    keys(&mut shell, "FROM users -- a comment; not the end\r");
    shell.exp_string("...> ").expect("continuation prompt");
    keys(&mut shell, "WHERE id = 3;\r");
    shell.exp_string("user3").expect("the row");
    shell.exp_string("(1 row, ").expect("row count");
    shell.exp_string("ringdb:demo> ").expect("prompt");

    // A syntax error: in red, with the caret under the bad token.
    keys(&mut shell, "SELEC * FROM users;\r");
    shell
        .exp_string("\x1b[31mSyntax error: line 1, column 1")
        .expect("red error");
    shell
        .exp_regex(r"SELEC \* FROM users;\r?\n\^\^\^\^\^")
        .expect("source line and caret");
    shell.exp_string("ringdb:demo> ").expect("prompt");

    // Conflicted rows are marked; WITH SIBLINGS shows each sibling.
    keys(&mut shell, "SELECT * FROM conflicts WITH SIBLINGS;\r");
    shell.exp_string("sibling 2").expect("second sibling");
    shell.exp_string("right").expect("its value");
    shell
        .exp_string("conflicted row(s)")
        .expect("the conflict note");
    shell.exp_string("ringdb:demo> ").expect("prompt");

    // DESCRIBE prints the CQL that recreates the table.
    keys(&mut shell, "DESCRIBE TABLE users\r");
    shell
        .exp_string("CREATE TABLE demo.users (")
        .expect("table CQL");
    shell.exp_string("ringdb:demo> ").expect("prompt");

    // The consistency level travels with the statements.
    keys(&mut shell, "CONSISTENCY ALL\r");
    shell
        .exp_string("Consistency level set to ALL.")
        .expect("level set");
    keys(&mut shell, "SELECT * FROM users;\r");
    shell.exp_string("Unavailable").expect("unavailable at ALL");
    shell.exp_string("ringdb:demo> ").expect("prompt");
    // Replicas too slow: the shell names the level and who answered.
    keys(&mut shell, "CONSISTENCY TWO\r");
    shell
        .exp_string("Consistency level set to TWO.")
        .expect("level set");
    keys(&mut shell, "SELECT * FROM users;\r");
    shell
        .exp_string("Timeout: operation timed out at consistency TWO: 1 of 2 replicas answered")
        .expect("timeout at TWO");
    shell.exp_string("ringdb:demo> ").expect("prompt");
    // An explicit number of replicas travels the same way.
    keys(&mut shell, "CONSISTENCY 2\r");
    shell
        .exp_string("Consistency level set to 2.")
        .expect("count set");
    keys(&mut shell, "SELECT * FROM users;\r");
    shell
        .exp_string("cannot achieve consistency level 2: 2 replicas required but only 1 alive")
        .expect("unavailable at 2");
    shell.exp_string("ringdb:demo> ").expect("prompt");
    keys(&mut shell, "CONSISTENCY 1\r");
    shell
        .exp_string("Consistency level set to 1.")
        .expect("count set");
    keys(&mut shell, "SELECT name FROM users WHERE id = 7;\r");
    shell.exp_string("user7").expect("one replica is enough");
    shell.exp_string("(1 row, ").expect("row count");
    shell.exp_string("ringdb:demo> ").expect("prompt");
    keys(&mut shell, "CONSISTENCY 0\r");
    shell
        .exp_string("'0' is not one of ANY, ONE, TWO, THREE, QUORUM, ALL or a number of replicas")
        .expect("no level of zero");
    keys(&mut shell, "CONSISTENCY\r");
    shell
        .exp_string("Current consistency level is 1.")
        .expect("the level stays");
    shell.exp_string("ringdb:demo> ").expect("prompt");

    keys(&mut shell, "EXIT\r");
    shell.exp_eof().expect("the shell exits");
    let history = std::fs::read_to_string(fixture.history()).expect("history file");
    assert!(history.contains("SELECT * FROM users;"), "{history}");
    assert!(history.contains("SELECT name, age FROM users"), "{history}");
}

fn run(mut command: Command, stdin: Option<&str>) -> (i32, String, String) {
    command.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn the shell");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    let output = child.wait_with_output().expect("the shell ends");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn execute_flag_exit_codes() {
    let fixture = Fixture::new();
    let (code, out, err) = run(
        fixture.command(&[
            "-k",
            "demo",
            "-e",
            "SELECT id, name FROM users WHERE id = 7",
        ]),
        None,
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("user7"), "{out}");
    assert!(out.contains("(1 row, "), "{out}");

    let (code, out, err) = run(
        fixture.command(&["-e", "SELECT * FROM demo.users WHERE"]),
        None,
    );
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("Syntax error"), "{err}");
    assert!(err.contains('^'), "{err}");
    assert!(
        !err.contains('\x1b'),
        "no colors without a terminal: {err:?}"
    );

    // A connection that cannot be made is a setup failure.
    let missing = fixture.dir.path().join("missing.pem");
    let (code, _, err) = run(fixture.command_with_ca(&missing, &["-e", "SELECT 1"]), None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot read the CA certificate"), "{err}");
}

#[test]
fn file_flag_and_source() {
    let fixture = Fixture::new();
    let inner = fixture.write(
        "inner.cql",
        "INSERT INTO users (id, name) VALUES (500, 'from-source');\n",
    );
    let script = format!(
        "USE demo;\n\
         -- a comment line; with a semicolon\n\
         PAGING 5\n\
         SELECT id\n  FROM users;\n\
         SOURCE '{}'\n\
         SELECT name FROM users WHERE id = 500;\n\
         DESCRIBE KEYSPACES\n\
         EXPAND ON\n\
         SELECT * FROM conflicts WHERE id = 1\n",
        inner.display()
    );
    let path = fixture.write("script.cql", &script);
    let (code, out, err) = run(
        fixture.command(&["-f", path.to_str().expect("utf-8 path")]),
        None,
    );
    assert_eq!(code, 0, "{out}\n{err}");
    // Without a terminal every page is fetched, with no prompt.
    assert!(out.contains("(25 rows, "), "{out}");
    assert!(!out.contains("--- more ---"), "{out}");
    assert!(out.contains("from-source"), "{out}");
    assert!(out.contains("demo"), "{out}");
    assert!(out.contains("@ Row 1 * (conflict)"), "{out}");

    let failing = fixture.write(
        "failing.cql",
        "USE demo;\nSELECT * FROM nowhere;\nSELECT id FROM users WHERE id = 1;\n",
    );
    let (code, out, err) = run(
        fixture.command(&["-f", failing.to_str().expect("utf-8 path")]),
        None,
    );
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("table 'nowhere' does not exist"), "{err}");
    // The statements after the error still ran.
    assert!(out.contains("(1 row, "), "{out}");
}

#[test]
fn piped_standard_input() {
    let fixture = Fixture::new();
    let (code, out, err) = run(
        fixture.command(&["-k", "demo"]),
        Some("SELECT name FROM users\n WHERE id = 2;\nSELECT count\n"),
    );
    // The last statement has no ';': it runs at the end of the input, and fails.
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("user2"), "{out}");
    assert!(err.contains("Syntax error"), "{err}");

    let (code, out, err) = run(
        fixture.command(&[]),
        Some("USE demo;\nSELECT * FROM users LIMIT 3;\n"),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("(3 rows, "), "{out}");
}
