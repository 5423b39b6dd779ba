//! Errors with positions, and their rendering with a caret under the
//! offending token.

use crate::lexer::Span;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What went wrong, broadly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The text does not split into tokens (unterminated string, stray character...).
    Lexical,
    /// The tokens do not form a statement.
    Syntax,
    /// Valid CQL that ringdb does not support (lightweight transactions, indexes...).
    Unsupported,
    /// A well-formed statement that is invalid in itself (duplicate column,
    /// unknown property, bad replication options...).
    Invalid,
}

/// A lexical, syntax or statement-level error, with the offending token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct ParseError {
    /// The broad class of error.
    pub kind: ErrorKind,
    /// Where the offending token is.
    pub span: Span,
    /// The message, Cassandra-style (without the position).
    pub message: String,
    /// The offending token's text (`<EOF>` at the end of input).
    pub token: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}:{} {}",
            self.span.line, self.span.column, self.message
        )
    }
}

impl ParseError {
    /// Renders the error for a person: `line L, column C: message`, then the
    /// source line, then a caret `^` under the offending token.
    pub fn render(&self, source: &str) -> String {
        render_at(source, self.span, &self.message)
    }
}

/// Renders `message` at `span` of `source`: the position, the source line
/// and carets under the span (at least one, at most to the end of the line).
pub fn render_at(source: &str, span: Span, message: &str) -> String {
    let mut out = format!("line {}, column {}: {}", span.line, span.column, message);
    let line_index = span.line.saturating_sub(1) as usize;
    let line_text = source.split('\n').nth(line_index).unwrap_or("");
    let line_text = line_text.strip_suffix('\r').unwrap_or(line_text);
    out.push('\n');
    out.push_str(line_text);
    out.push('\n');
    let col = span.column.saturating_sub(1) as usize;
    for c in line_text.chars().take(col) {
        out.push(if c == '\t' { '\t' } else { ' ' });
    }
    let line_chars = line_text.chars().count();
    let token_chars = source
        .get(span.offset..span.offset.saturating_add(span.len))
        .map(|t| t.chars().count())
        .unwrap_or(1);
    let room = line_chars.saturating_sub(col);
    let width = token_chars.min(room).max(1);
    out.push_str(&"^".repeat(width));
    out
}
