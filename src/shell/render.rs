//! How results and errors look in the shell.

use crate::client::ClientError;
use crate::query::api::{ColumnSpec, QueryError, Row};
use comfy_table::{presets, Cell, CellAlignment, Table};
use cql_lite::literal::{format_date, format_timestamp};
use cql_lite::types::format_uuid;
use cql_lite::{DataType, Value};
use std::fmt::Write;
use std::time::Duration;

/// The marker of a conflicted row.
pub const CONFLICT_MARKER: &str = "*";

/// A value as the shell shows it.
pub fn format_value(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Int(v) => v.to_string(),
        Value::BigInt(v) => v.to_string(),
        Value::SmallInt(v) => v.to_string(),
        Value::Float(v) => v.to_string(),
        Value::Double(v) => v.to_string(),
        Value::Boolean(v) => v.to_string(),
        Value::Text(v) | Value::Ascii(v) => v.clone(),
        Value::Blob(bytes) => {
            let mut out = String::with_capacity(2 + 2 * bytes.len());
            out.push_str("0x");
            for b in bytes {
                let _ = write!(out, "{b:02x}");
            }
            out
        }
        Value::Timestamp(ms) => format_timestamp(*ms),
        Value::Date(days) => format_date(*days),
        Value::Uuid(u) | Value::TimeUuid(u) => format_uuid(*u),
        Value::List(items) => {
            let items: Vec<String> = items.iter().map(format_value).collect();
            format!("[{}]", items.join(", "))
        }
    }
}

fn is_numeric(data_type: DataType) -> bool {
    matches!(
        data_type,
        DataType::Int | DataType::BigInt | DataType::SmallInt | DataType::Float | DataType::Double
    )
}

fn cell(values: &[Value], i: usize) -> String {
    values.get(i).map(format_value).unwrap_or_default()
}

/// Rows as an aligned table. A conflicted row is marked with
/// [`CONFLICT_MARKER`] in a first column; its siblings (`WITH SIBLINGS`)
/// follow it, each on its own line labelled `sibling n`.
pub fn rows_table(columns: &[ColumnSpec], rows: &[Row]) -> String {
    let marked = rows.iter().any(|r| r.conflict || !r.siblings.is_empty());
    let mut table = Table::new();
    table.load_preset(presets::ASCII_FULL_CONDENSED);
    let mut header: Vec<Cell> = Vec::new();
    if marked {
        header.push(Cell::new(""));
    }
    header.extend(columns.iter().map(|c| Cell::new(&c.name)));
    table.set_header(header);
    for row in rows {
        let mut line = Vec::new();
        if marked {
            line.push(Cell::new(if row.conflict { CONFLICT_MARKER } else { "" }));
        }
        line.extend((0..columns.len()).map(|i| Cell::new(cell(&row.values, i))));
        table.add_row(line);
        for (n, sibling) in row.siblings.iter().enumerate() {
            let mut line = vec![Cell::new(format!("sibling {}", n + 1))];
            line.extend((0..columns.len()).map(|i| Cell::new(cell(sibling, i))));
            table.add_row(line);
        }
    }
    let offset = usize::from(marked);
    for (i, c) in columns.iter().enumerate() {
        if is_numeric(c.data_type) {
            if let Some(column) = table.column_mut(i + offset) {
                column.set_cell_alignment(CellAlignment::Right);
            }
        }
    }
    table.to_string()
}

/// Rows one column per line (`EXPAND ON`), numbered from `first`.
pub fn rows_expanded(columns: &[ColumnSpec], rows: &[Row], first: usize) -> String {
    let width = columns
        .iter()
        .map(|c| c.name.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    let block = |out: &mut String, title: &str, values: &[Value]| {
        let _ = writeln!(out, "@ {title}");
        let _ = writeln!(out, "{}", "-".repeat(width + 2) + "+" + &"-".repeat(20));
        for (i, c) in columns.iter().enumerate() {
            let _ = writeln!(out, " {:<width$} | {}", c.name, cell(values, i));
        }
        out.push('\n');
    };
    for (n, row) in rows.iter().enumerate() {
        let number = first + n;
        let title = if row.conflict {
            format!("Row {number} {CONFLICT_MARKER} (conflict)")
        } else {
            format!("Row {number}")
        };
        block(&mut out, &title, &row.values);
        for (s, sibling) in row.siblings.iter().enumerate() {
            block(
                &mut out,
                &format!("Row {number}, sibling {}", s + 1),
                sibling,
            );
        }
    }
    out
}

/// The note under a result that has conflicted rows.
pub fn conflict_note(rows: &[Row]) -> Option<String> {
    let conflicted = rows.iter().filter(|r| r.conflict).count();
    if conflicted == 0 {
        return None;
    }
    let with_siblings = rows.iter().any(|r| !r.siblings.is_empty());
    Some(if with_siblings {
        format!("{CONFLICT_MARKER} {conflicted} conflicted row(s): concurrent versions, each shown as a sibling.")
    } else {
        format!(
            "{CONFLICT_MARKER} {conflicted} conflicted row(s): concurrent versions were resolved by timestamp \
             (SELECT ... WITH SIBLINGS shows each)."
        )
    })
}

/// `(3 rows, 1.2 ms)`.
pub fn summary(rows: usize, elapsed: Duration) -> String {
    let noun = if rows == 1 { "row" } else { "rows" };
    format!("({rows} {noun}, {})", format_duration(elapsed))
}

/// A duration for people: ms below a second, s above.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

/// An error as the shell prints it (the caret lines included).
pub fn error_text(error: &ClientError) -> String {
    match error {
        ClientError::Query(q) => match q {
            QueryError::Syntax { rendered, .. } => format!("Syntax error: {rendered}"),
            QueryError::Invalid { rendered, .. } => format!("Invalid request: {rendered}"),
            QueryError::Unavailable { .. } => format!("Unavailable: {q}"),
            QueryError::Timeout { .. } => format!("Timeout: {q}"),
            QueryError::Failure { .. } => format!("Failure: {q}"),
            QueryError::BatchLog { .. } => format!("Unavailable: {q}"),
            QueryError::UnknownPrepared(_) => format!("Error: {q}"),
            QueryError::Server(_) => format!("Server error: {q}"),
        },
        ClientError::Refused(e) => format!("Protocol error: {e}"),
        ClientError::Connection(_) => format!(
            "Error: {error} (the statement may or may not have run; the next one connects again)"
        ),
        other => format!("Error: {other}"),
    }
}

/// Wraps `text` in red when `color` is set.
pub fn red(text: &str, color: bool) -> String {
    if color {
        format!("\x1b[31m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// Wraps `text` in yellow when `color` is set.
pub fn yellow(text: &str, color: bool) -> String {
    if color {
        format!("\x1b[33m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn availability_errors_name_the_level_and_the_counts() {
        use crate::model::Consistency;
        let shown = |e: QueryError| error_text(&ClientError::Query(e));
        assert_eq!(
            shown(QueryError::Unavailable {
                consistency: Consistency::Quorum,
                required: 2,
                alive: 1,
            }),
            "Unavailable: cannot achieve consistency level QUORUM: 2 replicas required but only 1 alive"
        );
        assert_eq!(
            shown(QueryError::Timeout {
                consistency: Consistency::All,
                required: 3,
                received: 2,
                write: true,
            }),
            "Timeout: operation timed out at consistency ALL: 2 of 3 replicas answered"
        );
        assert_eq!(
            shown(QueryError::Failure {
                consistency: Consistency::Quorum,
                required: 2,
                received: 1,
                failures: vec![
                    "127.0.0.1:7001: storage error on the replica: disk full".into(),
                    "127.0.0.1:7002: unknown table: ks.t".into()
                ],
                write: true,
            }),
            "Failure: operation failed at consistency QUORUM: 1 of 2 replicas answered, 2 failed \
             (127.0.0.1:7001: storage error on the replica: disk full; 127.0.0.1:7002: unknown table: ks.t)"
        );
        let forbidden = ClientError::Refused(crate::client::protocol::ProtocolError::new(
            crate::client::protocol::ProtocolErrorCode::Forbidden,
            "from 192.0.2.7:1",
        ));
        assert_eq!(
            error_text(&forbidden),
            "Protocol error: not allowed from this client: from 192.0.2.7:1"
        );
        // A lost connection says what became of the statement.
        let lost = error_text(&ClientError::Connection("reset by peer".into()));
        assert!(
            lost.contains("reset by peer") && lost.contains("the next one connects again"),
            "{lost}"
        );
    }

    fn spec(name: &str, data_type: DataType) -> ColumnSpec {
        ColumnSpec {
            name: name.into(),
            data_type,
        }
    }

    #[test]
    fn tables_mark_conflicts_and_show_siblings() {
        let columns = vec![spec("id", DataType::Int), spec("v", DataType::Text)];
        let rows = vec![
            Row {
                values: vec![Value::Int(1), Value::Text("left".into())],
                conflict: true,
                siblings: vec![
                    vec![Value::Int(1), Value::Text("left".into())],
                    vec![Value::Int(1), Value::Text("right".into())],
                ],
            },
            Row {
                values: vec![Value::Int(2), Value::Null],
                conflict: false,
                siblings: vec![],
            },
        ];
        let text = rows_table(&columns, &rows);
        assert!(text.contains("| *         |  1 | left  |"), "{text}");
        assert!(text.contains("| sibling 2 |  1 | right |"), "{text}");
        assert!(text.contains("|           |  2 | null  |"), "{text}");
        let expanded = rows_expanded(&columns, &rows, 1);
        assert!(expanded.contains("@ Row 1 * (conflict)"), "{expanded}");
        assert!(expanded.contains("@ Row 1, sibling 2"), "{expanded}");
        assert!(expanded.contains(" v  | right"), "{expanded}");
        assert!(conflict_note(&rows).is_some());
    }

    #[test]
    fn values_print_as_cql_shows_them() {
        assert_eq!(format_value(&Value::Blob(vec![0xCA, 0xFE])), "0xcafe");
        assert_eq!(
            format_value(&Value::Timestamp(0)),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(format_value(&Value::Date(0)), "1970-01-01");
        assert_eq!(summary(1, Duration::from_millis(2)), "(1 row, 2.0 ms)");
    }
}
