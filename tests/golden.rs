//! Data-driven golden tests of the query layer (in the manner of toydb's
//! goldenscript).
//!
//! Every `tests/golden/*.cql` file is a script of blocks. A block is input
//! lines, a `---` line, and the expected output up to the next blank line.
//! Lines starting with `#` between blocks are comments. The input is CQL
//! (run as one script, the last statement's result shown) or a directive:
//!
//! - `-- @page_size N`: later SELECTs are fetched page by page (0: off).
//! - `-- @advance 5s`: moves the manual clock (ms, s, m, h, d).
//! - `-- @context empty` / `-- @context last`: the next write sends an empty
//!   causal context (it races with every existing version: siblings) or
//!   the context the last SELECT returned.
//! - `-- @prepare <cql>`, `-- @execute v1, v2`: prepare, then run the last
//!   prepared statement with values (CQL literals: integers are `int` or
//!   `bigint` by size, strings `text`, floats `double`; `[v1, v2]` is a
//!   list, for `IN ?`).
//! - `-- @query <cql> -- v1, v2`: run the text unprepared with those values.
//! - `-- @flush`, `-- @compact`: flush or compact every table.
//! - `-- @restart`: reopen the node from its data directory.
//! - `-- @describe ks` / `-- @describe ks.t`: the CQL that recreates it.
//!
//! Every node starts on a manual clock at 2024-03-01T00:00:00Z, with the
//! default hint window of a node (3 h, for the `gc_grace_seconds`
//! warning).
//!
//! `UPDATE_GOLDEN=1 cargo test --test golden` rewrites the expected outputs
//! (check them by hand before committing). The `cql` examples of
//! docs/cql-lite.md run the same way; their outputs are in
//! `tests/golden/docs.out`.

use cql_lite::ast::{InValues, Literal, Relation, Statement, Term};
use cql_lite::Value;
use ringdb::model::{DotSet, HybridClock, ManualClock};
use ringdb::query::api::{QueryExecutor, QueryOptions, QueryResult, SessionState};
use ringdb::query::format::{format_error, format_response, format_rows};
use ringdb::query::{Executor, ExecutorConfig, LocalStore};
use ringdb::schema::SchemaStore;
use ringdb::storage::commitlog::SyncMode;
use ringdb::storage::engine::EngineOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const START_MS: u64 = 1_709_251_200_000;

struct Node {
    dir: PathBuf,
    clock: Arc<ManualClock>,
    store: Arc<LocalStore>,
    exec: Executor,
}

fn open_node(dir: &Path, clock: Arc<ManualClock>) -> Node {
    let hlc = Arc::new(HybridClock::new(clock.clone()));
    let schema = Arc::new(SchemaStore::open(dir).expect("schema"));
    let opts = EngineOptions {
        sync_mode: SyncMode::Periodic {
            interval: Duration::from_millis(200),
        },
        background: false,
        block_cache_bytes: 1 << 20,
        ..EngineOptions::default()
    };
    let store = Arc::new(LocalStore::open(dir, hlc.clone(), schema.clone(), opts).expect("store"));
    let exec = Executor::new(store.clone(), schema, hlc, ExecutorConfig::default());
    Node {
        dir: dir.to_path_buf(),
        clock,
        store,
        exec,
    }
}

enum Item {
    Text(String),
    Block { input: String, expected: String },
}

fn parse_file(text: &str) -> Vec<Item> {
    let mut items = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() || line.starts_with('#') {
            items.push(Item::Text(line.to_string()));
            continue;
        }
        let mut input = vec![line.to_string()];
        for l in lines.by_ref() {
            if l == "---" {
                break;
            }
            input.push(l.to_string());
        }
        let mut expected = Vec::new();
        while let Some(l) = lines.peek() {
            if l.trim().is_empty() {
                break;
            }
            expected.push(l.to_string());
            lines.next();
        }
        items.push(Item::Block {
            input: input.join("\n"),
            expected: expected.join("\n"),
        });
    }
    items
}

struct Runner {
    node: Option<Node>,
    session: SessionState,
    page_size: Option<u32>,
    next_context: Option<DotSet>,
    last_context: Option<DotSet>,
    prepared: Option<Vec<u8>>,
    rt: tokio::runtime::Runtime,
}

fn literal_value(lit: &Literal) -> Value {
    match lit {
        Literal::Integer(i) => match i32::try_from(*i) {
            Ok(v) => Value::Int(v),
            Err(_) => Value::BigInt(i64::try_from(*i).unwrap_or(i64::MAX)),
        },
        Literal::Float(f) => Value::Double(*f),
        Literal::String(s) => Value::Text(s.clone()),
        Literal::Blob(b) => Value::Blob(b.clone()),
        Literal::Uuid(u) => Value::Uuid(*u),
        Literal::Bool(b) => Value::Boolean(*b),
        Literal::Null => Value::Null,
    }
}

/// Values written as CQL literals, through the parser (as an IN list).
fn parse_literals(text: &str) -> Result<Vec<Value>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let stmt = cql_lite::parse_statement(&format!("SELECT * FROM x WHERE k IN ({text})"))
        .map_err(|e| e.to_string())?;
    let Statement::Select(s) = stmt else {
        return Err("bad values".into());
    };
    let Some(Relation::In {
        values: InValues::List(terms),
        ..
    }) = s.where_clause.first()
    else {
        return Err("bad values".into());
    };
    terms
        .iter()
        .map(|t| match t {
            Term::Literal(l) => Ok(literal_value(l)),
            other => Err(format!("not a literal: {other}")),
        })
        .collect()
}

/// The values of `@execute`: CQL literals, and `[a, b, ...]` for a list
/// (bound to `IN ?`).
fn parse_values(text: &str) -> Result<Vec<Value>, String> {
    let mut items = Vec::new();
    let (mut depth, mut quoted, mut start) = (0usize, false, 0usize);
    for (i, ch) in text.char_indices() {
        match ch {
            '\'' => quoted = !quoted,
            '[' if !quoted => depth += 1,
            ']' if !quoted => depth = depth.checked_sub(1).ok_or("unbalanced ]")?,
            ',' if !quoted && depth == 0 => {
                items.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&text[start..]);
    let mut out = Vec::new();
    for item in items.iter().map(|i| i.trim()) {
        match item.strip_prefix('[').and_then(|i| i.strip_suffix(']')) {
            Some(inner) => out.push(Value::List(parse_literals(inner)?)),
            None if item.is_empty() && items.len() == 1 => {}
            None => out.extend(parse_literals(item)?),
        }
    }
    Ok(out)
}

fn parse_duration_ms(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    Some(n * mult)
}

impl Runner {
    fn new(dir: &Path) -> Runner {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Runner {
            node: Some(open_node(dir, ManualClock::new(START_MS))),
            session: SessionState::default(),
            page_size: None,
            next_context: None,
            last_context: None,
            prepared: None,
            rt,
        }
    }

    fn node(&self) -> &Node {
        self.node.as_ref().expect("node")
    }

    fn run_block(&mut self, input: &str) -> String {
        let out = if let Some(d) = input.strip_prefix("-- @") {
            self.directive(d.trim())
        } else {
            self.cql(input)
        };
        // Blank lines would end the block: mark them.
        out.lines()
            .map(|l| if l.trim().is_empty() { "(blank)" } else { l })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn options(&mut self) -> QueryOptions {
        QueryOptions {
            page_size: self.page_size,
            causal_context: self.next_context.take(),
            ..QueryOptions::default()
        }
    }

    fn cql(&mut self, text: &str) -> String {
        let mut options = self.options();
        let node = self.node.as_ref().expect("node");
        let mut session = self.session.clone();
        let mut pages = Vec::new();
        let mut page = 1;
        let out = loop {
            let r = self.rt.block_on(node.exec.execute(
                &mut session,
                text,
                Vec::new(),
                options.clone(),
            ));
            match r {
                Ok(resp) => {
                    if let QueryResult::Rows(rs) = &resp.result {
                        self.last_context = rs.causal_context.clone();
                        if self.page_size.is_some() {
                            pages.push(format!("page {page}:\n{}", format_rows(rs)));
                            page += 1;
                            if let Some(state) = &rs.paging_state {
                                if page > 100 {
                                    break "too many pages".to_string();
                                }
                                options.paging_state = Some(state.clone());
                                continue;
                            }
                            break pages.join("\n");
                        }
                    }
                    break format_response(&resp);
                }
                Err(e) => {
                    pages.push(format_error(&e));
                    break pages.join("\n");
                }
            }
        };
        self.session = session;
        out
    }

    fn directive(&mut self, d: &str) -> String {
        let (name, arg) = d.split_once(' ').unwrap_or((d, ""));
        let arg = arg.trim();
        match name {
            "page_size" => {
                self.page_size = match arg.parse::<u32>() {
                    Ok(0) => None,
                    Ok(n) => Some(n),
                    Err(_) => return format!("bad page size {arg}"),
                };
                "ok".into()
            }
            "advance" => match parse_duration_ms(arg) {
                Some(ms) => {
                    self.node().clock.advance(ms);
                    "ok".into()
                }
                None => format!("bad duration {arg}"),
            },
            "context" => {
                self.next_context = match arg {
                    "empty" => Some(DotSet::new()),
                    "last" => self.last_context.clone(),
                    _ => return format!("bad context {arg}"),
                };
                match &self.next_context {
                    Some(_) => "context set".into(),
                    None => "no context".into(),
                }
            }
            "prepare" => {
                let node = self.node.as_ref().expect("node");
                match self.rt.block_on(node.exec.prepare(&self.session, arg)) {
                    Ok(p) => {
                        self.prepared = Some(p.id.clone());
                        let markers: Vec<String> = p
                            .bind_markers
                            .iter()
                            .map(|m| format!("{} {}", m.name, m.marker_type))
                            .collect();
                        let columns: Vec<String> = p
                            .result_columns
                            .iter()
                            .map(|c| format!("{} {}", c.name, c.data_type))
                            .collect();
                        format!(
                            "prepared: bind [{}] result [{}]",
                            markers.join(", "),
                            columns.join(", ")
                        )
                    }
                    Err(e) => format_error(&e),
                }
            }
            "execute" => {
                let values = match parse_values(arg) {
                    Ok(v) => v,
                    Err(e) => return format!("bad values: {e}"),
                };
                let id = self.prepared.clone().unwrap_or_default();
                let options = self.options();
                let node = self.node.as_ref().expect("node");
                let mut session = self.session.clone();
                let r = self.rt.block_on(node.exec.execute_prepared(
                    &mut session,
                    &id,
                    values,
                    options,
                ));
                self.session = session;
                match r {
                    Ok(resp) => {
                        if let QueryResult::Rows(rs) = &resp.result {
                            self.last_context = rs.causal_context.clone();
                        }
                        format_response(&resp)
                    }
                    Err(e) => format_error(&e),
                }
            }
            "query" => {
                let (text, values) = arg.rsplit_once(" -- ").unwrap_or((arg, ""));
                let values = match parse_values(values) {
                    Ok(v) => v,
                    Err(e) => return format!("bad values: {e}"),
                };
                let options = self.options();
                let node = self.node.as_ref().expect("node");
                let mut session = self.session.clone();
                let r = self
                    .rt
                    .block_on(node.exec.execute(&mut session, text, values, options));
                self.session = session;
                match r {
                    Ok(resp) => format_response(&resp),
                    Err(e) => format_error(&e),
                }
            }
            "flush" => match self.node().store.flush_all() {
                Ok(()) => "ok".into(),
                Err(e) => format_error(&e),
            },
            "compact" => match self.node().store.compact_all() {
                Ok(()) => "ok".into(),
                Err(e) => format_error(&e),
            },
            "restart" => {
                let old = self.node.take().expect("node");
                let (dir, clock) = (old.dir.clone(), old.clock.clone());
                drop(old);
                self.node = Some(open_node(&dir, clock));
                self.prepared = None;
                "ok".into()
            }
            "describe" => {
                let schema = self.node().exec.schema().current();
                let r = match arg.split_once('.') {
                    Some((ks, t)) => schema.describe_table(ks, t),
                    None => schema.describe_keyspace(arg),
                };
                r.unwrap_or_else(|e| format!("error: {e}"))
            }
            other => format!("unknown directive {other}"),
        }
    }
}

fn update_mode() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v != "0")
}

/// Runs one golden file; returns the mismatches and writes the file anew
/// in update mode.
fn run_file(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("read golden file");
    let items = parse_file(&text);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut runner = Runner::new(dir.path());
    let mut failures = Vec::new();
    let mut rewritten = Vec::new();
    for item in &items {
        match item {
            Item::Text(t) => rewritten.push(t.clone()),
            Item::Block { input, expected } => {
                let actual = runner.run_block(input);
                if &actual != expected {
                    failures.push(format!(
                        "{}:\n> {}\n--- expected\n{}\n--- actual\n{}\n",
                        path.display(),
                        input.replace('\n', "\n> "),
                        expected,
                        actual
                    ));
                }
                rewritten.push(format!("{input}\n---\n{actual}"));
            }
        }
    }
    if update_mode() {
        let mut out = rewritten.join("\n");
        out.push('\n');
        std::fs::write(path, out).expect("write golden file");
    }
    failures
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

#[test]
fn golden_scripts() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .expect("tests/golden")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "cql"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no golden files");
    let mut failures = Vec::new();
    for f in &files {
        failures.extend(run_file(f));
    }
    if !update_mode() {
        assert!(
            failures.is_empty(),
            "{} golden mismatches (UPDATE_GOLDEN=1 rewrites them):\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}

/// The `cql` blocks of docs/cql-lite.md, statement by statement, with
/// their outputs in tests/golden/docs.out. A statement with bind markers
/// is prepared (its values are not in the doc).
#[test]
fn doc_examples_run() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cql-lite.md"))
            .expect("docs/cql-lite.md");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match &mut current {
            None if line.trim() == "```cql" => current = Some(String::new()),
            None => {}
            Some(_) if line.trim() == "```" => blocks.extend(current.take()),
            Some(text) => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut runner = Runner::new(dir.path());
    let mut out = String::new();
    let mut errors = Vec::new();
    for block in &blocks {
        let statements = cql_lite::parse(block).expect("doc examples parse");
        for stmt in statements {
            let text = stmt.to_string();
            let result = if stmt.bind_markers().is_empty() {
                runner.run_block(&text)
            } else {
                runner.run_block(&format!("-- @prepare {text}"))
            };
            if result.contains("error") || result.contains("invalid request") {
                errors.push(format!("{text}\n{result}"));
            }
            out.push_str(&format!("{text}\n---\n{result}\n\n"));
        }
    }
    assert!(
        errors.is_empty(),
        "doc examples failed:\n{}",
        errors.join("\n\n")
    );
    let path = golden_dir().join("docs.out");
    if update_mode() {
        std::fs::write(&path, &out).expect("write docs.out");
    } else {
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            expected == out,
            "doc example outputs differ from tests/golden/docs.out (UPDATE_GOLDEN=1 rewrites it):\n{out}"
        );
    }
}

/// A paging state continues only the query it came from: the same
/// statement with other values, or another statement, refuses it.
#[test]
fn a_paging_state_belongs_to_its_query() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut runner = Runner::new(dir.path());
    for text in [
        "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
        "USE ks",
        "CREATE TABLE t (p int, c int, v int, PRIMARY KEY (p, c))",
        "BEGIN BATCH INSERT INTO t (p, c, v) VALUES (1, 1, 1); INSERT INTO t (p, c, v) VALUES (1, 2, 2); INSERT INTO t (p, c, v) VALUES (1, 3, 3); INSERT INTO t (p, c, v) VALUES (2, 1, 1); INSERT INTO t (p, c, v) VALUES (2, 2, 2); APPLY BATCH",
    ] {
        runner.cql(text);
    }
    let node = runner.node.as_ref().expect("node");
    let mut session = runner.session.clone();
    let mut run = |text: &str, paging_state| {
        let options = QueryOptions {
            page_size: Some(2),
            paging_state,
            ..QueryOptions::default()
        };
        runner
            .rt
            .block_on(node.exec.execute(&mut session, text, Vec::new(), options))
    };
    let first = run("SELECT * FROM t WHERE p = 1", None).expect("first page");
    let QueryResult::Rows(rs) = first.result else {
        panic!("rows expected")
    };
    let state = rs.paging_state.expect("more than one page");
    let next = run("SELECT * FROM t WHERE p = 1", Some(state.clone())).expect("second page");
    let QueryResult::Rows(rs) = next.result else {
        panic!("rows expected")
    };
    assert_eq!(rs.rows.len(), 1, "the rest of partition 1");
    for other in ["SELECT * FROM t WHERE p = 2", "SELECT v FROM t WHERE p = 1"] {
        match run(other, Some(state.clone())) {
            Err(e) => assert!(
                format_error(&e).contains("paging state"),
                "{other}: {}",
                format_error(&e)
            ),
            Ok(r) => panic!("{other}: a foreign paging state was accepted: {r:?}"),
        }
    }
}
