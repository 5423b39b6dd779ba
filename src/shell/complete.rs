//! Tab completion: keywords (the cql-lite lexer's reserved words and a few
//! more), shell commands, and the names of keyspaces, tables and columns
//! from the server's schema.

use super::split::SHELL_COMMANDS;
use crate::client::protocol::{KeyspaceDescription, SchemaSnapshot};
use cql_lite::lexer::RESERVED_KEYWORDS;
use cql_lite::DataType;
use parking_lot::Mutex;
use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};
use std::sync::Arc;

/// Words of CQL-lite that are not reserved but worth completing.
const MORE_KEYWORDS: &[&str] = &[
    "ALL",
    "AS",
    "CLUSTERING",
    "COMPACT",
    "COUNT",
    "DISTINCT",
    "EXISTS",
    "FILTERING",
    "GROUP",
    "KEY",
    "KEYSPACES",
    "PER",
    "PARTITION",
    "REPLICATION",
    "SIBLINGS",
    "STORAGE",
    "TABLES",
    "TIMESTAMP",
    "TTL",
    "TYPE",
    "VALUES",
    "WRITETIME",
];

/// Consistency levels for `CONSISTENCY`.
const LEVELS: &[&str] = &["ANY", "ONE", "TWO", "THREE", "QUORUM", "ALL"];

/// What completion knows: the schema, the keyspace in use and the lines of
/// the statement typed so far.
#[derive(Debug, Default)]
pub struct CompletionState {
    /// The schema as last fetched.
    pub schema: SchemaSnapshot,
    /// The keyspace in use.
    pub keyspace: Option<String>,
    /// Earlier lines of the statement under way.
    pub pending: String,
}

/// The rustyline helper of the shell.
pub struct ShellHelper {
    /// Shared with the shell, which updates it.
    pub state: Arc<Mutex<CompletionState>>,
}

impl Helper for ShellHelper {}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {}

impl Validator for ShellHelper {}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let state = self.state.lock();
        Ok(complete(&state, line, pos))
    }
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Identifier-like words of `text`, outside strings and comments when the
/// lexer can read it.
fn words(text: &str) -> Vec<String> {
    match cql_lite::lexer::tokenize(text) {
        Ok(tokens) => tokens
            .into_iter()
            .filter_map(|t| match t.kind {
                cql_lite::lexer::TokenKind::Word(w) => Some(w),
                cql_lite::lexer::TokenKind::QuotedIdent(w) => Some(w),
                cql_lite::lexer::TokenKind::Dot => Some(".".to_string()),
                _ => None,
            })
            .collect(),
        Err(_) => text
            .split(|c: char| !is_word_char(c) && c != '.')
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect(),
    }
}

fn keyword_case(word: &str, prefix: &str) -> String {
    let lower = !prefix.is_empty() && prefix.chars().all(|c| !c.is_ascii_uppercase());
    if lower {
        word.to_ascii_lowercase()
    } else {
        word.to_ascii_uppercase()
    }
}

fn keyspace<'a>(state: &'a CompletionState, name: &str) -> Option<&'a KeyspaceDescription> {
    state.schema.keyspace(name)
}

/// Tables named in `words` after FROM, INTO, UPDATE, TABLE or TRUNCATE.
fn referenced_tables(state: &CompletionState, words: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, w) in words.iter().enumerate() {
        let upper = w.to_ascii_uppercase();
        if !matches!(
            upper.as_str(),
            "FROM" | "INTO" | "UPDATE" | "TABLE" | "TRUNCATE"
        ) {
            continue;
        }
        let (ks, table) = match (words.get(i + 1), words.get(i + 2), words.get(i + 3)) {
            (Some(ks), Some(dot), Some(t)) if dot == "." => (Some(ks.clone()), t.clone()),
            (Some(t), _, _) => (state.keyspace.clone(), t.clone()),
            _ => continue,
        };
        if let Some(ks) = ks {
            out.push((ks, table));
        }
    }
    out
}

/// The completions of the word before `pos`: where it starts and the
/// candidates.
pub fn complete(state: &CompletionState, line: &str, pos: usize) -> (usize, Vec<Pair>) {
    let pos = pos.min(line.len());
    let Some(before) = line.get(..pos) else {
        return (pos, Vec::new());
    };
    let start = before
        .char_indices()
        .rev()
        .take_while(|&(_, c)| is_word_char(c))
        .last()
        .map(|(i, _)| i)
        .unwrap_or(pos);
    let prefix = &before[start..];
    let context = format!("{}{}", state.pending, &before[..start]);
    let context_words = words(&context);
    let all_words = words(&format!("{}{}", state.pending, line));

    let mut names: Vec<String> = Vec::new();
    let mut keywords: Vec<String> = Vec::new();
    let last = context_words.last().map(|w| w.to_ascii_uppercase());
    if context.trim_end().ends_with('.') && context.ends_with('.') {
        // `ks.` then a table of ks; `t.` is not CQL-lite, so nothing else.
        if let Some(ks) = context_words
            .iter()
            .rev()
            .nth(1)
            .and_then(|k| keyspace(state, k))
        {
            names.extend(ks.tables.iter().map(|t| t.name.clone()));
        }
    } else {
        match last.as_deref() {
            None => {
                keywords.extend(
                    [
                        "SELECT", "INSERT", "UPDATE", "DELETE", "BEGIN", "CREATE", "ALTER", "DROP",
                        "TRUNCATE", "USE",
                    ]
                    .iter()
                    .map(|s| s.to_string()),
                );
                keywords.extend(SHELL_COMMANDS.iter().map(|s| s.to_string()));
            }
            Some("FROM" | "INTO" | "UPDATE" | "TABLE" | "TRUNCATE") => {
                if let Some(ks) = state.keyspace.as_deref().and_then(|k| keyspace(state, k)) {
                    names.extend(ks.tables.iter().map(|t| t.name.clone()));
                }
                names.extend(
                    state
                        .schema
                        .keyspaces
                        .iter()
                        .map(|k| format!("{}.", k.name)),
                );
            }
            Some("USE" | "KEYSPACE") => {
                names.extend(state.schema.keyspaces.iter().map(|k| k.name.clone()));
            }
            Some("CONSISTENCY") => keywords.extend(LEVELS.iter().map(|s| s.to_string())),
            Some("EXPAND" | "PAGING") if context_words.len() == 1 => {
                keywords.extend(["ON", "OFF"].iter().map(|s| s.to_string()));
            }
            Some("DESCRIBE" | "DESC") if context_words.len() == 1 => {
                keywords.extend(
                    ["KEYSPACES", "KEYSPACE", "TABLES", "TABLE", "SCHEMA"]
                        .iter()
                        .map(|s| s.to_string()),
                );
                if let Some(ks) = state.keyspace.as_deref().and_then(|k| keyspace(state, k)) {
                    names.extend(ks.tables.iter().map(|t| t.name.clone()));
                }
                names.extend(state.schema.keyspaces.iter().map(|k| k.name.clone()));
            }
            Some(_) => {
                for (ks, table) in referenced_tables(state, &all_words) {
                    if let Some(t) = keyspace(state, &ks).and_then(|k| k.table(&table)) {
                        names.extend(t.columns.iter().map(|c| c.name.clone()));
                    }
                }
                keywords.extend(RESERVED_KEYWORDS.iter().map(|s| s.to_string()));
                keywords.extend(MORE_KEYWORDS.iter().map(|s| s.to_string()));
                keywords.extend(DataType::ALL.iter().map(|t| t.name().to_string()));
            }
        }
    }

    let matches = |candidate: &str| {
        candidate.len() >= prefix.len()
            && candidate
                .get(..prefix.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
    };
    let mut pairs: Vec<Pair> = Vec::new();
    for name in names.into_iter().filter(|n| matches(n)) {
        pairs.push(Pair {
            display: name.clone(),
            replacement: name,
        });
    }
    for keyword in keywords.into_iter().filter(|k| matches(k)) {
        let word = keyword_case(&keyword, prefix);
        pairs.push(Pair {
            display: word.clone(),
            replacement: format!("{word} "),
        });
    }
    pairs.sort_by(|a, b| a.display.cmp(&b.display));
    pairs.dedup_by(|a, b| a.display == b.display);
    (start, pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::protocol::TableDescription;
    use crate::query::api::ColumnSpec;

    fn state() -> CompletionState {
        CompletionState {
            schema: SchemaSnapshot {
                keyspaces: vec![KeyspaceDescription {
                    name: "demo".into(),
                    create_statement: String::new(),
                    tables: vec![TableDescription {
                        name: "users".into(),
                        columns: vec![
                            ColumnSpec {
                                name: "id".into(),
                                data_type: DataType::Int,
                            },
                            ColumnSpec {
                                name: "name".into(),
                                data_type: DataType::Text,
                            },
                        ],
                        create_statement: String::new(),
                    }],
                }],
            },
            keyspace: Some("demo".into()),
            pending: String::new(),
        }
    }

    fn replacements(state: &CompletionState, line: &str) -> Vec<String> {
        complete(state, line, line.len())
            .1
            .into_iter()
            .map(|p| p.replacement)
            .collect()
    }

    #[test]
    fn keywords_tables_keyspaces_and_columns() {
        let s = state();
        assert_eq!(replacements(&s, "SEL"), vec!["SELECT "]);
        assert_eq!(replacements(&s, "sel"), vec!["select "]);
        assert_eq!(replacements(&s, "SELECT * FROM us"), vec!["users"]);
        assert_eq!(replacements(&s, "SELECT * FROM de"), vec!["demo."]);
        assert_eq!(replacements(&s, "SELECT * FROM demo.u"), vec!["users"]);
        assert_eq!(replacements(&s, "USE d"), vec!["demo"]);
        assert_eq!(
            replacements(&s, "SELECT * FROM users WHERE nam"),
            vec!["name"]
        );
        assert_eq!(replacements(&s, "CONSISTENCY QU"), vec!["QUORUM "]);
        assert!(replacements(&s, "EXP").contains(&"EXPAND ".to_string()));
        let (start, _) = complete(&s, "SELECT * FROM us", 16);
        assert_eq!(start, 14);
    }

    #[test]
    fn earlier_lines_of_the_statement_count() {
        let mut s = state();
        s.pending = "SELECT id\nFROM users\n".into();
        let got = replacements(&s, "WHERE i");
        assert_eq!(got.first().map(String::as_str), Some("id"), "{got:?}");
        assert!(got.contains(&"in ".to_string()), "{got:?}");
    }
}
