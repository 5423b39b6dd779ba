//! Splitting input into statements: a statement ends at a `;` that is not
//! inside a string, a quoted identifier or a comment, as the cql-lite lexer
//! tells. Shell commands (`HELP`, `EXPAND ON`, ...) take one line and need
//! no `;`.

use cql_lite::lexer::{tokenize, TokenKind};
use cql_lite::ErrorKind;

/// Words that start a shell command (not sent to the server).
pub const SHELL_COMMANDS: &[&str] = &[
    "CONSISTENCY",
    "DESC",
    "DESCRIBE",
    "EXIT",
    "EXPAND",
    "HELP",
    "PAGING",
    "QUIT",
    "SOURCE",
];

/// One thing to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A CQL-lite statement, with its `;` if it had one.
    Statement(String),
    /// A shell command line, without a trailing `;`.
    Command(String),
}

/// Collects lines until they make whole statements.
#[derive(Debug, Default)]
pub struct Accumulator {
    buffer: String,
}

impl Accumulator {
    /// An empty accumulator.
    pub fn new() -> Accumulator {
        Accumulator::default()
    }

    /// Adds one line; returns what it completed.
    pub fn push_line(&mut self, line: &str) -> Vec<Input> {
        if self.is_empty() {
            // A line that starts with a shell command is that command,
            // unless statements follow it after a `;` (`-e "CONSISTENCY
            // ALL; SELECT ..."`): those lines are split below.
            let (parts, rest) = split_statements(line);
            let alone = parts.is_empty() || (parts.len() == 1 && is_blank(&rest));
            if let (Some(command), true) = (shell_command(line), alone) {
                self.buffer.clear();
                return vec![Input::Command(command)];
            }
        }
        self.buffer.push_str(line);
        self.buffer.push('\n');
        let (statements, rest) = split_statements(&self.buffer);
        self.buffer = rest;
        // A shell command ended by `;` after other statements on the same
        // line (as in `-e "USE ks; CONSISTENCY QUORUM; SELECT ..."`).
        statements
            .into_iter()
            .map(|s| match shell_command(&s) {
                Some(command) => Input::Command(command),
                None => Input::Statement(s),
            })
            .collect()
    }

    /// At the end of the input: what is left, if it holds anything but
    /// whitespace and comments, as a last statement.
    pub fn finish(&mut self) -> Option<Input> {
        let rest = std::mem::take(&mut self.buffer);
        if is_blank(&rest) {
            None
        } else {
            Some(Input::Statement(rest.trim().to_string()))
        }
    }

    /// True when no statement is under way (only whitespace or comments).
    pub fn is_empty(&self) -> bool {
        is_blank(&self.buffer)
    }

    /// The text of the statement under way.
    pub fn pending(&self) -> &str {
        &self.buffer
    }

    /// Forgets the statement under way.
    pub fn clear(&mut self) {
        self.buffer.clear();
    }
}

/// The shell command on `line`, if its first word names one.
pub fn shell_command(line: &str) -> Option<String> {
    let trimmed = line.trim();
    let first = trimmed
        .split(|c: char| c.is_whitespace() || c == ';')
        .next()?;
    if SHELL_COMMANDS.iter().any(|c| c.eq_ignore_ascii_case(first)) {
        Some(
            trimmed
                .trim_end_matches(|c: char| c == ';' || c.is_whitespace())
                .to_string(),
        )
    } else {
        None
    }
}

/// True if `text` holds no token (whitespace and complete comments only).
pub fn is_blank(text: &str) -> bool {
    if text.trim().is_empty() {
        return true;
    }
    matches!(tokenize(text), Ok(tokens) if tokens.len() == 1)
}

fn is_unterminated(kind: ErrorKind, message: &str) -> bool {
    kind == ErrorKind::Lexical && message.starts_with("unterminated")
}

/// Splits `text` into complete statements (each ending with its `;`) and
/// the rest. A character the lexer cannot read does not stop the split:
/// the statement holding it is still cut at its `;` and sent, so the
/// server reports the error with its caret.
pub fn split_statements(text: &str) -> (Vec<String>, String) {
    // `scan` is `text` with unreadable characters blanked out (same byte
    // offsets), so the lexer can go on past them.
    let mut scan = text.to_string();
    let mut statements = Vec::new();
    let mut start = 0;
    // Each round either ends or blanks at least one character.
    for _ in 0..=text.len() {
        let Some(slice) = scan.get(start..) else {
            break;
        };
        match tokenize(slice) {
            Ok(tokens) => {
                let semicolons = statement_ends(&tokens, start);
                cut(text, &scan, &mut start, &semicolons, &mut statements);
                break;
            }
            Err(e) if is_unterminated(e.kind, &e.message) => {
                // Statements that end before the unterminated part are whole.
                let end = start + e.span.offset;
                if let Some(Ok(tokens)) = scan.get(start..end).map(tokenize) {
                    let semicolons = statement_ends(&tokens, start);
                    cut(text, &scan, &mut start, &semicolons, &mut statements);
                }
                break;
            }
            Err(e) => {
                let at = start + e.span.offset;
                let width = scan
                    .get(at..)
                    .and_then(|s| s.chars().next())
                    .map(char::len_utf8)
                    .unwrap_or(1);
                let len = e.span.len.max(width);
                if !blank(&mut scan, at, len) {
                    break;
                }
            }
        }
    }
    let rest = text.get(start..).unwrap_or("").trim_start().to_string();
    (statements, rest)
}

/// Replaces `scan[at..at + len]` (widened to character boundaries) with
/// spaces. False if nothing could be blanked.
fn blank(scan: &mut String, at: usize, len: usize) -> bool {
    let mut from = at.min(scan.len());
    while !scan.is_char_boundary(from) {
        from -= 1;
    }
    let mut to = (at + len).min(scan.len());
    while !scan.is_char_boundary(to) {
        to += 1;
    }
    if from >= to || scan[from..to].chars().all(|c| c == ' ') {
        return false;
    }
    let spaces = " ".repeat(to - from);
    scan.replace_range(from..to, &spaces);
    true
}

/// The offsets (from `base`) just past the `;` that end statements among
/// `tokens`. Inside `BEGIN ... BATCH` the statements of the batch end with
/// `;` too, as in cqlsh: only the `;` after `APPLY BATCH` ends the batch.
fn statement_ends(tokens: &[cql_lite::lexer::Token], base: usize) -> Vec<usize> {
    let word = |t: &cql_lite::lexer::Token, w: &str| matches!(&t.kind, TokenKind::Word(x) if x.eq_ignore_ascii_case(w));
    let mut ends = Vec::new();
    let (mut at_start, mut in_batch, mut applied) = (true, false, false);
    for (i, t) in tokens.iter().enumerate() {
        if t.kind == TokenKind::Semicolon {
            if !in_batch || applied {
                ends.push(base + t.span.offset + t.span.len);
                (at_start, in_batch, applied) = (true, false, false);
            }
            continue;
        }
        if at_start && word(t, "BEGIN") {
            in_batch = true;
        }
        if in_batch && word(t, "APPLY") && tokens.get(i + 1).is_some_and(|n| word(n, "BATCH")) {
            applied = true;
        }
        at_start = false;
    }
    ends
}

fn cut(text: &str, scan: &str, start: &mut usize, ends: &[usize], statements: &mut Vec<String>) {
    for &end in ends {
        let piece = text.get(*start..end).unwrap_or("");
        let scanned = scan.get(*start..end).unwrap_or("");
        *start = end;
        // A lone `;` (after whitespace or comments) is no statement.
        let empty = matches!(tokenize(scanned), Ok(tokens) if tokens.len() <= 2);
        if !empty {
            statements.push(piece.trim().to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(lines: &[&str]) -> (Vec<Input>, Accumulator) {
        let mut acc = Accumulator::new();
        let mut out = Vec::new();
        for line in lines {
            out.extend(acc.push_line(line));
        }
        (out, acc)
    }

    fn stmt(s: &str) -> Input {
        Input::Statement(s.to_string())
    }

    #[test]
    fn a_batch_ends_at_the_semicolon_after_apply_batch_not_at_its_statements() {
        let (out, acc) = run(&[
            "begin unlogged batch",
            "  INSERT INTO t (k) VALUES (1);",
            "  UPDATE t SET v = 'apply batch;' WHERE k = 2;",
        ]);
        assert!(out.is_empty(), "{out:?}");
        assert!(!acc.is_empty());
        let (out, acc) = run(&[
            "BEGIN BATCH",
            "  INSERT INTO t (k) VALUES (1);",
            "  DELETE FROM t WHERE k = 2;",
            "APPLY BATCH; SELECT * FROM t;",
        ]);
        assert_eq!(
            out,
            vec![
                stmt("BEGIN BATCH\n  INSERT INTO t (k) VALUES (1);\n  DELETE FROM t WHERE k = 2;\nAPPLY BATCH;"),
                stmt("SELECT * FROM t;")
            ]
        );
        assert!(acc.is_empty());
        // Inner statements without `;` still work, and a batch is not
        // needed for `;` to end a statement.
        let (out, _) = run(&[
            "BEGIN BATCH INSERT INTO t (k) VALUES (1) APPLY BATCH;",
            "SELECT 1;",
        ]);
        assert_eq!(
            out,
            vec![
                stmt("BEGIN BATCH INSERT INTO t (k) VALUES (1) APPLY BATCH;"),
                stmt("SELECT 1;")
            ]
        );
    }

    #[test]
    fn statements_end_at_semicolons_outside_strings_and_comments() {
        let (out, acc) = run(&["SELECT * FROM t", "WHERE k = 'a;b' -- c;d", "/* ; */ ;"]);
        assert_eq!(
            out,
            vec![stmt("SELECT * FROM t\nWHERE k = 'a;b' -- c;d\n/* ; */ ;")]
        );
        assert!(acc.is_empty());
        let (out, acc) = run(&[
            "INSERT INTO t (k) VALUES ('it''s",
            "still; open');  SELECT 1;",
            "SELECT",
        ]);
        assert_eq!(
            out,
            vec![
                stmt("INSERT INTO t (k) VALUES ('it''s\nstill; open');"),
                stmt("SELECT 1;")
            ]
        );
        assert!(!acc.is_empty());
        assert_eq!(acc.pending(), "SELECT\n");
    }

    #[test]
    fn unterminated_comment_or_string_keeps_reading() {
        let (out, acc) = run(&["SELECT /* ;", "; */ x FROM t;"]);
        assert_eq!(out, vec![stmt("SELECT /* ;\n; */ x FROM t;")]);
        assert!(acc.is_empty());
        let (out, acc) = run(&["SELECT 1; SELECT 'abc"]);
        assert_eq!(out, vec![stmt("SELECT 1;")]);
        assert!(!acc.is_empty());
    }

    #[test]
    fn unreadable_characters_do_not_stop_the_split() {
        let (out, acc) = run(&["SELECT @ FROM t; SELECT é;", "x"]);
        assert_eq!(out, vec![stmt("SELECT @ FROM t;"), stmt("SELECT é;")]);
        assert_eq!(acc.pending(), "x\n");
    }

    #[test]
    fn shell_commands_between_statements_on_one_line() {
        let mut acc = Accumulator::new();
        let got = acc.push_line("USE ks; CONSISTENCY QUORUM; SELECT * FROM t;");
        assert_eq!(
            got,
            vec![
                Input::Statement("USE ks;".into()),
                Input::Command("CONSISTENCY QUORUM".into()),
                Input::Statement("SELECT * FROM t;".into()),
            ]
        );
    }

    #[test]
    fn a_shell_command_first_on_a_line_with_statements_after_it() {
        let mut acc = Accumulator::new();
        let got = acc.push_line("CONSISTENCY ALL; SELECT count(*) FROM t;");
        assert_eq!(
            got,
            vec![
                Input::Command("CONSISTENCY ALL".into()),
                Input::Statement("SELECT count(*) FROM t;".into()),
            ]
        );
        // Without the last `;`, the statement is ended by the input's end.
        let mut acc = Accumulator::new();
        let got = acc.push_line("CONSISTENCY ONE; SELECT 1 FROM t");
        assert_eq!(got, vec![Input::Command("CONSISTENCY ONE".into())]);
        assert_eq!(
            acc.finish(),
            Some(Input::Statement("SELECT 1 FROM t".into()))
        );
    }

    #[test]
    fn shell_commands_take_one_line_at_statement_start() {
        let (out, _) = run(&["expand on;", "HELP", "SELECT", "help;"]);
        assert_eq!(
            out,
            vec![
                Input::Command("expand on".into()),
                Input::Command("HELP".into()),
                stmt("SELECT\nhelp;")
            ]
        );
    }

    #[test]
    fn empty_statements_and_comments_are_skipped() {
        let (out, acc) = run(&[";", "-- nothing", ";;"]);
        assert!(out.is_empty());
        assert!(acc.is_empty());
        let mut acc = Accumulator::new();
        acc.push_line("SELECT 1");
        assert_eq!(acc.finish(), Some(stmt("SELECT 1")));
        assert_eq!(acc.finish(), None);
    }
}
