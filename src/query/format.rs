//! Plain-text rendering of results, for the shell and the golden tests.
//!
//! Rows print as an aligned table with the column names, a `(N rows)`
//! line, ` (conflict)` after a row that had siblings, and each sibling's
//! values below it with `WITH SIBLINGS`.

use super::api::{QueryError, QueryResult, Response, ResultSet};
use cql_lite::literal::{format_date, format_timestamp};
use cql_lite::types::format_uuid;
use cql_lite::Value;

/// A value as the shell shows it: text unquoted, `null` for no value.
pub fn format_value(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Int(i) => i.to_string(),
        Value::BigInt(i) => i.to_string(),
        Value::SmallInt(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Double(f) => f.to_string(),
        Value::Boolean(b) => b.to_string(),
        Value::Text(s) | Value::Ascii(s) => s.clone(),
        Value::Blob(b) => {
            let mut s = String::from("0x");
            for byte in b {
                s.push_str(&format!("{byte:02x}"));
            }
            s
        }
        Value::Timestamp(ms) => format_timestamp(*ms),
        Value::Date(d) => format_date(*d),
        Value::Uuid(u) | Value::TimeUuid(u) => format_uuid(*u),
        Value::List(items) => {
            let items: Vec<String> = items.iter().map(format_value).collect();
            format!("[{}]", items.join(", "))
        }
    }
}

fn line(cells: &[String], widths: &[usize]) -> String {
    let parts: Vec<String> = cells
        .iter()
        .zip(widths)
        .map(|(c, w)| format!("{c:<w$}"))
        .collect();
    parts.join(" | ").trim_end().to_string()
}

/// A result set as a table.
pub fn format_rows(rs: &ResultSet) -> String {
    let header: Vec<String> = rs.columns.iter().map(|c| c.name.clone()).collect();
    let rows: Vec<Vec<String>> = rs
        .rows
        .iter()
        .map(|r| r.values.iter().map(format_value).collect())
        .collect();
    let siblings: Vec<Vec<Vec<String>>> = rs
        .rows
        .iter()
        .map(|r| {
            r.siblings
                .iter()
                .map(|s| s.iter().map(format_value).collect())
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows.iter().chain(siblings.iter().flatten()) {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = vec![line(&header, &widths)];
    out.push(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-+-"),
    );
    for ((r, row), sibs) in rs.rows.iter().zip(&rows).zip(&siblings) {
        let mut l = line(row, &widths);
        if r.conflict {
            l.push_str(" (conflict)");
        }
        out.push(l);
        for s in sibs {
            out.push(format!("  sibling: {}", line(s, &widths)));
        }
    }
    out.push(format!("({} rows)", rs.rows.len()));
    if rs.paging_state.is_some() {
        out.push("(more pages)".into());
    }
    out.join("\n")
}

/// A response: its warnings, then its result.
pub fn format_response(r: &Response) -> String {
    let mut out: Vec<String> = r.warnings.iter().map(|w| format!("warning: {w}")).collect();
    out.push(match &r.result {
        QueryResult::Void => "ok".into(),
        QueryResult::SetKeyspace(k) => format!("using keyspace {k}"),
        QueryResult::SchemaChange { description } => description.clone(),
        QueryResult::Rows(rs) => format_rows(rs),
    });
    out.join("\n")
}

/// An error as the shell shows it.
pub fn format_error(e: &QueryError) -> String {
    let kind = match e {
        QueryError::Syntax { .. } => "syntax error",
        QueryError::Invalid { .. } => "invalid request",
        QueryError::Unavailable { .. } => "unavailable",
        QueryError::Timeout { .. } => "timeout",
        QueryError::Failure { .. } => "failure",
        QueryError::BatchLog { .. } => "unavailable",
        QueryError::UnknownPrepared(_) => "unprepared",
        QueryError::Server(_) => "server error",
    };
    match e {
        QueryError::Server(m) => format!("{kind}: {m}"),
        other => format!("{kind}: {other}"),
    }
}
