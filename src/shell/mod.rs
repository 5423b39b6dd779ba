//! The interactive shell, `ringdb shell`.
//!
//! It reads statements (multi-line, ending at `;`; see [`split`]), sends
//! them through the [`crate::client`] library and prints results as aligned
//! tables with row counts and timing ([`render`]). Shell commands take one
//! line: `EXPAND`, `PAGING`, `CONSISTENCY`, `SOURCE`, `DESCRIBE`, `HELP`,
//! `EXIT`. With a terminal it uses rustyline (history in `$RINGDB_HISTORY`
//! or `~/.ringdb_history`, completion from [`complete`]); with `-e`, `-f`
//! or piped input it runs the statements and exits non-zero if any failed.

pub mod complete;
pub mod render;
pub mod split;

use crate::client::protocol::SchemaSnapshot;
use crate::client::{Client, ClientError, ClientTlsConfig};
use crate::model::Consistency;
use crate::query::api::{QueryOptions, QueryResult, ResultSet, Row};
use complete::{CompletionState, ShellHelper};
use parking_lot::Mutex;
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{CompletionType, Config, Editor};
use split::{Accumulator, Input};
use std::io::{IsTerminal, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Default port of the client listener.
pub const DEFAULT_PORT: u16 = 9042;

/// Default rows per page.
pub const DEFAULT_PAGE_SIZE: u32 = 100;

/// How deep `SOURCE` may nest.
const MAX_SOURCE_DEPTH: usize = 16;

/// Arguments of `ringdb shell`.
#[derive(clap::Args, Debug, Clone)]
pub struct ShellArgs {
    /// The node to connect to, `host:port` (port 9042 when omitted).
    #[arg(long, default_value = "127.0.0.1:9042")]
    pub host: String,
    /// Keyspace to use from the start.
    #[arg(short = 'k', long)]
    pub keyspace: Option<String>,
    /// Runs these statements and exits (non-zero if one failed).
    #[arg(short = 'e', long = "execute", conflicts_with = "file")]
    pub execute: Option<String>,
    /// Runs the statements of this file and exits (non-zero if one failed).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// The CA certificate (PEM) to trust; `$RINGDB_CA_CERT` when omitted.
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// The name in the server's certificate.
    #[arg(long, default_value = "ringdb-node")]
    pub server_name: String,
    /// Never use colors (also when `$NO_COLOR` is set or output is not a terminal).
    #[arg(long)]
    pub no_color: bool,
}

/// Exit code when a statement or command failed.
pub const EXIT_ERROR: i32 = 1;
/// Exit code when the shell could not start (bad flags, no connection).
pub const EXIT_SETUP: i32 = 2;

/// Runs the shell; returns the process exit code.
pub fn run(args: ShellArgs) -> i32 {
    let color =
        !args.no_color && std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal();
    match Shell::start(&args, color) {
        Ok(mut shell) => {
            let code = shell.main(&args);
            shell.close();
            code
        }
        Err(message) => {
            eprintln!("{}", render::red(&message, color));
            EXIT_SETUP
        }
    }
}

/// Paging of SELECT results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Paging {
    On(u32),
    Off,
}

/// What running a piece of input asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Exit,
}

struct Shell {
    runtime: tokio::runtime::Runtime,
    client: Client,
    color: bool,
    /// True when reading from a terminal: paging prompts, history.
    interactive: bool,
    expand: bool,
    paging: Paging,
    consistency: Consistency,
    editor: Option<Editor<ShellHelper, DefaultHistory>>,
    completion: Arc<Mutex<CompletionState>>,
    history_path: Option<PathBuf>,
    errors: usize,
}

fn resolve(host: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = host.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, DEFAULT_PORT));
    }
    let with_port = match host.rsplit_once(':') {
        Some((_, port)) if port.parse::<u16>().is_ok() => host.to_string(),
        _ => format!("{host}:{DEFAULT_PORT}"),
    };
    with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} resolves to no address"))
}

fn history_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("RINGDB_HISTORY") {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".ringdb_history"))
}

/// Writes to stdout, ignoring a closed pipe (`ringdb shell ... | head`).
fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}");
    let _ = stdout.flush();
}

impl Shell {
    fn start(args: &ShellArgs, color: bool) -> Result<Shell, String> {
        let ca_path = args
            .ca_cert
            .clone()
            .or_else(|| std::env::var_os("RINGDB_CA_CERT").map(PathBuf::from))
            .ok_or("no CA certificate to trust: pass --ca-cert FILE or set RINGDB_CA_CERT")?;
        let ca_pem = std::fs::read_to_string(&ca_path)
            .map_err(|e| format!("cannot read the CA certificate {}: {e}", ca_path.display()))?;
        let addr = resolve(&args.host)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the runtime: {e}"))?;
        let tls = ClientTlsConfig::new(ca_pem, args.server_name.clone());
        let client = runtime
            .block_on(Client::connect_with_keyspace(
                addr,
                tls,
                args.keyspace.clone(),
            ))
            .map_err(|e| match e {
                ClientError::Query(_) => render::error_text(&e),
                other => format!("cannot connect to {addr}: {other}"),
            })?;
        let interactive =
            args.execute.is_none() && args.file.is_none() && std::io::stdin().is_terminal();
        let mut shell = Shell {
            runtime,
            client,
            color,
            interactive,
            expand: false,
            paging: Paging::On(DEFAULT_PAGE_SIZE),
            consistency: Consistency::One,
            editor: None,
            completion: Arc::new(Mutex::new(CompletionState::default())),
            history_path: None,
            errors: 0,
        };
        if interactive {
            shell.refresh_schema();
        }
        Ok(shell)
    }

    fn main(&mut self, args: &ShellArgs) -> i32 {
        if let Some(text) = &args.execute {
            self.run_text(text, 0);
        } else if let Some(file) = &args.file {
            self.run_file(file, 0);
        } else if !self.interactive {
            let mut text = String::new();
            match std::io::stdin().read_to_string(&mut text) {
                Ok(_) => {
                    self.run_text(&text, 0);
                }
                Err(e) => self.error(&format!("cannot read standard input: {e}")),
            }
        } else {
            return self.interactive_loop();
        }
        if self.errors > 0 {
            EXIT_ERROR
        } else {
            0
        }
    }

    fn close(self) {
        let Shell {
            runtime, client, ..
        } = self;
        runtime.block_on(async {
            let _ = tokio::time::timeout(Duration::from_secs(2), client.close()).await;
        });
    }

    fn error(&mut self, message: &str) {
        self.errors += 1;
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "{}", render::red(message, self.color));
        let _ = stderr.flush();
    }

    fn prompt(&self) -> String {
        match self.client.keyspace() {
            Some(ks) => format!("ringdb:{ks}> "),
            None => "ringdb> ".to_string(),
        }
    }

    fn interactive_loop(&mut self) -> i32 {
        let config = Config::builder()
            .completion_type(CompletionType::List)
            .auto_add_history(false)
            .build();
        let mut editor = match Editor::<ShellHelper, DefaultHistory>::with_config(config) {
            Ok(e) => e,
            Err(e) => {
                self.error(&format!("cannot start the line editor: {e}"));
                return EXIT_SETUP;
            }
        };
        editor.set_helper(Some(ShellHelper {
            state: self.completion.clone(),
        }));
        self.history_path = history_path();
        if let Some(path) = &self.history_path {
            // A missing history file is normal the first time.
            let _ = editor.load_history(path);
        }
        self.editor = Some(editor);
        out("Connected to ringdb. Type HELP for help; statements end with ';'.");
        let mut acc = Accumulator::new();
        loop {
            let prompt = if acc.is_empty() {
                self.prompt()
            } else {
                "   ...> ".to_string()
            };
            self.completion.lock().pending = acc.pending().to_string();
            let Some(editor) = self.editor.as_mut() else {
                break;
            };
            match editor.readline(&prompt) {
                Ok(line) => {
                    let mut flow = Flow::Continue;
                    for input in acc.push_line(&line) {
                        self.remember(&input);
                        flow = self.run_input(&input, 0);
                        if flow == Flow::Exit {
                            break;
                        }
                    }
                    if flow == Flow::Exit {
                        break;
                    }
                }
                Err(ReadlineError::Interrupted) => acc.clear(),
                Err(ReadlineError::Eof) => break,
                Err(e) => {
                    self.error(&format!("cannot read input: {e}"));
                    break;
                }
            }
        }
        if let (Some(editor), Some(path)) = (self.editor.as_mut(), &self.history_path) {
            let _ = editor.save_history(path);
        }
        0
    }

    fn remember(&mut self, input: &Input) {
        let text = match input {
            Input::Statement(s) | Input::Command(s) => {
                s.split_whitespace().collect::<Vec<_>>().join(" ")
            }
        };
        if let Some(editor) = self.editor.as_mut() {
            let _ = editor.add_history_entry(text);
            if let Some(path) = &self.history_path {
                let _ = editor.save_history(path);
            }
        }
    }

    /// Runs a script's text; returns whether it asked to exit.
    fn run_text(&mut self, text: &str, depth: usize) -> Flow {
        let mut acc = Accumulator::new();
        for line in text.lines() {
            for input in acc.push_line(line) {
                if self.run_input(&input, depth) == Flow::Exit {
                    return Flow::Exit;
                }
            }
        }
        match acc.finish() {
            Some(input) => self.run_input(&input, depth),
            None => Flow::Continue,
        }
    }

    fn run_file(&mut self, path: &Path, depth: usize) -> Flow {
        match std::fs::read_to_string(path) {
            Ok(text) => self.run_text(&text, depth),
            Err(e) => {
                self.error(&format!("cannot read {}: {e}", path.display()));
                Flow::Continue
            }
        }
    }

    fn run_input(&mut self, input: &Input, depth: usize) -> Flow {
        match input {
            Input::Statement(text) => {
                self.run_statement(text);
                Flow::Continue
            }
            Input::Command(line) => self.run_command(line, depth),
        }
    }

    fn options(&self) -> QueryOptions {
        QueryOptions {
            consistency: self.consistency,
            page_size: match self.paging {
                Paging::On(n) => Some(n),
                Paging::Off => None,
            },
            ..QueryOptions::default()
        }
    }

    fn run_statement(&mut self, text: &str) {
        let options = self.options();
        let started = Instant::now();
        let reconnects = self.client.reconnects();
        let result =
            self.runtime
                .block_on(self.client.execute_with(text, Vec::new(), options.clone()));
        let mut elapsed = started.elapsed();
        if self.client.reconnects() > reconnects {
            eprintln!(
                "{}",
                render::yellow(
                    &format!(
                        "(the connection to {} was lost: connected again)",
                        self.client.remote_address()
                    ),
                    self.color
                )
            );
        }
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                self.error(&render::error_text(&e));
                return;
            }
        };
        for warning in &response.warnings {
            eprintln!(
                "{}",
                render::yellow(&format!("Warning: {warning}"), self.color)
            );
        }
        match response.result {
            QueryResult::Rows(rows) => self.show_rows(text, options, rows, &mut elapsed),
            QueryResult::SetKeyspace(_) => self.refresh_schema(),
            QueryResult::SchemaChange { description } => {
                out(&description);
                self.refresh_schema();
            }
            QueryResult::Void => {}
        }
    }

    /// Prints a result, page by page. With a terminal and paging on, asks
    /// before each further page; otherwise fetches them all first.
    fn show_rows(
        &mut self,
        text: &str,
        mut options: QueryOptions,
        first: ResultSet,
        elapsed: &mut Duration,
    ) {
        let prompt_pages = self.interactive && matches!(self.paging, Paging::On(_));
        let columns = first.columns.clone();
        let mut page = first;
        let mut shown = 0usize;
        let mut all_rows: Vec<Row> = Vec::new();
        loop {
            let more = page.paging_state.clone();
            if prompt_pages {
                self.print_rows(&columns, &page.rows, shown + 1);
                shown += page.rows.len();
            } else {
                all_rows.append(&mut page.rows);
            }
            let Some(state) = more else { break };
            if prompt_pages && !self.ask_more() {
                break;
            }
            options.paging_state = Some(state);
            let started = Instant::now();
            let next =
                self.runtime
                    .block_on(self.client.execute_with(text, Vec::new(), options.clone()));
            *elapsed += started.elapsed();
            match next {
                Ok(response) => match response.result {
                    QueryResult::Rows(rows) => page = rows,
                    _ => break,
                },
                Err(e) => {
                    self.error(&render::error_text(&e));
                    break;
                }
            }
        }
        if !prompt_pages {
            self.print_rows(&columns, &all_rows, 1);
            shown = all_rows.len();
        }
        out(&render::summary(shown, *elapsed));
    }

    fn print_rows(&self, columns: &[crate::query::api::ColumnSpec], rows: &[Row], first: usize) {
        if rows.is_empty() {
            return;
        }
        if self.expand {
            out(render::rows_expanded(columns, rows, first).trim_end());
        } else {
            out(&render::rows_table(columns, rows));
        }
        if let Some(note) = render::conflict_note(rows) {
            out(&note);
        }
    }

    /// The "--- more ---" prompt: Enter for the next page, q to stop.
    fn ask_more(&mut self) -> bool {
        let Some(editor) = self.editor.as_mut() else {
            return true;
        };
        match editor.readline("--- more --- (Enter: next page, q: stop) ") {
            Ok(answer) => !answer.trim().eq_ignore_ascii_case("q"),
            Err(_) => false,
        }
    }

    fn refresh_schema(&mut self) {
        let schema = self.runtime.block_on(self.client.describe_schema());
        let mut state = self.completion.lock();
        if let Ok(schema) = schema {
            state.schema = schema;
        }
        state.keyspace = self.client.keyspace();
    }

    fn schema(&mut self) -> Option<SchemaSnapshot> {
        match self.runtime.block_on(self.client.describe_schema()) {
            Ok(schema) => {
                self.completion.lock().schema = schema.clone();
                Some(schema)
            }
            Err(e) => {
                self.error(&render::error_text(&e));
                None
            }
        }
    }

    fn run_command(&mut self, line: &str, depth: usize) -> Flow {
        let mut parts = line.splitn(2, char::is_whitespace);
        let command = parts.next().unwrap_or("").to_ascii_uppercase();
        let rest = parts.next().unwrap_or("").trim();
        match command.as_str() {
            "EXIT" | "QUIT" => return Flow::Exit,
            "HELP" => out(HELP),
            "EXPAND" => match rest.to_ascii_uppercase().as_str() {
                "" => out(&format!(
                    "Expanded output is currently {}.",
                    if self.expand { "enabled" } else { "disabled" }
                )),
                "ON" => {
                    self.expand = true;
                    out("Now printing expanded output.");
                }
                "OFF" => {
                    self.expand = false;
                    out("Disabled expanded output.");
                }
                _ => self.error("Improper EXPAND command: use EXPAND ON or EXPAND OFF."),
            },
            "PAGING" => match rest.to_ascii_uppercase().as_str() {
                "" => match self.paging {
                    Paging::On(n) => out(&format!(
                        "Query paging is currently enabled. Page size: {n}."
                    )),
                    Paging::Off => out("Query paging is currently disabled."),
                },
                "ON" => {
                    self.paging = Paging::On(DEFAULT_PAGE_SIZE);
                    out(&format!(
                        "Now query paging is enabled. Page size: {DEFAULT_PAGE_SIZE}."
                    ));
                }
                "OFF" => {
                    self.paging = Paging::Off;
                    out("Disabled query paging.");
                }
                n => match n.parse::<u32>() {
                    Ok(n) if n > 0 => {
                        self.paging = Paging::On(n);
                        out(&format!("Page size: {n}."));
                    }
                    _ => self.error(
                        "Improper PAGING command: use PAGING ON, PAGING OFF or PAGING <page size>.",
                    ),
                },
            },
            "CONSISTENCY" => {
                if rest.is_empty() {
                    out(&format!(
                        "Current consistency level is {}.",
                        self.consistency
                    ));
                } else {
                    match Consistency::parse(rest) {
                        Some(level) => {
                            self.consistency = level;
                            self.client.set_consistency(level);
                            out(&format!("Consistency level set to {level}."));
                        }
                        None => self.error(&format!(
                            "Improper CONSISTENCY command: '{rest}' is not one of ANY, ONE, TWO, THREE, QUORUM, ALL or a number of replicas (1 to 255)."
                        )),
                    }
                }
            }
            "SOURCE" => {
                let path = rest.trim_matches(|c| c == '\'' || c == '"');
                if path.is_empty() {
                    self.error("Improper SOURCE command: use SOURCE 'file'.");
                } else if depth >= MAX_SOURCE_DEPTH {
                    self.error(&format!(
                        "SOURCE nested more than {MAX_SOURCE_DEPTH} deep: stopped."
                    ));
                } else {
                    return self.run_file(Path::new(path), depth + 1);
                }
            }
            "DESCRIBE" | "DESC" => self.describe(rest),
            _ => self.error(&format!("Unknown command {command}")),
        }
        Flow::Continue
    }

    fn describe(&mut self, rest: &str) {
        let Some(schema) = self.schema() else { return };
        let current = self.client.keyspace();
        match describe::describe(&schema, current.as_deref(), rest) {
            Ok(text) => out(&text),
            Err(message) => self.error(&message),
        }
    }
}

mod describe {
    //! `DESCRIBE`: the CQL that recreates keyspaces and tables.

    use crate::client::protocol::{KeyspaceDescription, SchemaSnapshot};

    /// A name as written: `"Quoted"` kept exactly, otherwise lowercased.
    fn normalize(name: &str) -> String {
        if name.len() >= 2 && name.starts_with('"') && name.ends_with('"') {
            name[1..name.len() - 1].replace("\"\"", "\"")
        } else {
            name.to_ascii_lowercase()
        }
    }

    fn keyspace<'a>(
        schema: &'a SchemaSnapshot,
        name: &str,
    ) -> Result<&'a KeyspaceDescription, String> {
        schema
            .keyspace(&normalize(name))
            .ok_or_else(|| format!("Keyspace '{}' not found", normalize(name)))
    }

    fn whole_keyspace(ks: &KeyspaceDescription) -> String {
        let mut out = ks.create_statement.clone();
        for t in &ks.tables {
            out.push_str("\n\n");
            out.push_str(&t.create_statement);
        }
        out
    }

    fn table(schema: &SchemaSnapshot, current: Option<&str>, name: &str) -> Result<String, String> {
        let (ks, table) = match name.split_once('.') {
            Some((ks, t)) => (normalize(ks), normalize(t)),
            None => (
                current
                    .map(str::to_string)
                    .ok_or("No keyspace in use: name the table as keyspace.table")?,
                normalize(name),
            ),
        };
        let ks = keyspace(schema, &format!("\"{}\"", ks.replace('"', "\"\"")))?;
        ks.table(&table)
            .map(|t| t.create_statement.clone())
            .ok_or_else(|| format!("Table '{}.{}' not found", ks.name, table))
    }

    /// The text of `DESCRIBE <rest>`.
    pub fn describe(
        schema: &SchemaSnapshot,
        current: Option<&str>,
        rest: &str,
    ) -> Result<String, String> {
        let words: Vec<&str> = rest.split_whitespace().collect();
        let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
        match upper.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            ["KEYSPACES"] => Ok(schema
                .keyspaces
                .iter()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>()
                .join("  ")),
            ["TABLES"] => {
                let in_one = current.and_then(|c| schema.keyspace(c));
                let list = |ks: &KeyspaceDescription| {
                    ks.tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join("  ")
                };
                Ok(match in_one {
                    Some(ks) => list(ks),
                    None => schema
                        .keyspaces
                        .iter()
                        .map(|ks| format!("Keyspace {}\n{}\n{}", ks.name, "-".repeat(9 + ks.name.len()), list(ks)))
                        .collect::<Vec<_>>()
                        .join("\n\n"),
                })
            }
            ["SCHEMA"] | ["FULL", "SCHEMA"] => Ok(schema
                .keyspaces
                .iter()
                .map(whole_keyspace)
                .collect::<Vec<_>>()
                .join("\n\n")),
            ["KEYSPACE"] => {
                let name = current.ok_or("No keyspace in use: DESCRIBE KEYSPACE name")?;
                Ok(whole_keyspace(keyspace(schema, &format!("\"{name}\""))?))
            }
            ["KEYSPACE", _] => Ok(whole_keyspace(keyspace(schema, words[1])?)),
            ["TABLE", _] | ["COLUMNFAMILY", _] => table(schema, current, words[1]),
            [_] => {
                // A bare name: a table of the keyspace in use, or a keyspace.
                table(schema, current, words[0])
                    .or_else(|_| keyspace(schema, words[0]).map(whole_keyspace))
                    .map_err(|_| format!("'{}' is neither a keyspace nor a table", words[0]))
            }
            _ => Err("Improper DESCRIBE command: DESCRIBE KEYSPACES | KEYSPACE [k] | TABLES | TABLE t | SCHEMA".into()),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::client::protocol::TableDescription;

        fn schema() -> SchemaSnapshot {
            SchemaSnapshot {
                keyspaces: vec![KeyspaceDescription {
                    name: "demo".into(),
                    create_statement: "CREATE KEYSPACE demo;".into(),
                    tables: vec![TableDescription {
                        name: "users".into(),
                        columns: vec![],
                        create_statement: "CREATE TABLE demo.users (id int PRIMARY KEY);".into(),
                    }],
                }],
            }
        }

        #[test]
        fn describe_forms() {
            let s = schema();
            assert_eq!(describe(&s, None, "KEYSPACES").unwrap(), "demo");
            assert_eq!(describe(&s, Some("demo"), "tables").unwrap(), "users");
            assert!(describe(&s, None, "TABLES")
                .unwrap()
                .contains("Keyspace demo"));
            assert_eq!(
                describe(&s, None, "TABLE demo.users").unwrap(),
                "CREATE TABLE demo.users (id int PRIMARY KEY);"
            );
            assert!(describe(&s, Some("demo"), "TABLE Users").is_ok());
            assert!(describe(&s, None, "TABLE users").is_err());
            let ks = describe(&s, None, "KEYSPACE demo").unwrap();
            assert!(
                ks.starts_with("CREATE KEYSPACE demo;\n\nCREATE TABLE"),
                "{ks}"
            );
            assert!(describe(&s, None, "KEYSPACE nope").is_err());
            assert!(describe(&s, Some("demo"), "users").is_ok());
            assert!(describe(&s, None, "").is_err());
        }
    }
}

const HELP: &str = "\
Statements (end with ';', may span lines):
  SELECT, INSERT, UPDATE, DELETE, BEGIN BATCH ... APPLY BATCH, USE,
  CREATE/ALTER/DROP KEYSPACE and TABLE, TRUNCATE
  SELECT ... WITH SIBLINGS shows every concurrent version of a conflicted
  row; conflicted rows are marked with '*'.

Shell commands (one line, no ';' needed):
  CONSISTENCY [ANY|ONE|TWO|THREE|QUORUM|ALL|n]
                                              show or set the consistency level;
                                              n replicas: an explicit W or R
  PAGING [ON|OFF|n]                           show or set paging (page size n)
  EXPAND [ON|OFF]                             one column per line
  DESCRIBE KEYSPACES | KEYSPACE [k] | TABLES | TABLE t | SCHEMA
                                              names, or the CQL that recreates them
  SOURCE 'file'                               run the statements of a file
  HELP                                        this text
  EXIT, QUIT                                  leave (Ctrl-D too)

Tab completes keywords, keyspaces, tables and columns. Ctrl-C cancels the
statement being typed.";
