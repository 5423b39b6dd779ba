//! The RocksDB peer: Debian's `db_bench` (package `rocksdb-tools`) run as a
//! subprocess, its result lines parsed.
//!
//! A result line looks like
//!
//! ```text
//! readrandom   :       3.489 micros/op 286571 ops/sec 0.698 seconds 200000 operations;   27.4 MB/s (173050 of 200000 found)
//! ```
//!
//! Every invocation gets the shared settings of [`common_args`]: 16-byte
//! keys, 100-byte values, no compression, 10 bloom bits per key, a 64 MiB
//! block cache and memtable (as ringdb's defaults), a fixed seed.

use super::ui::Ui;
use super::workload::{process_write_bytes, KEY_BYTES, VALUE_BYTES};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian installs db_bench.
pub const DEFAULT_PATH: &str = "/usr/bin/db_bench";

/// One parsed result line.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// Benchmark name (`fillseq`, `readrandom`, ...).
    pub name: String,
    /// Mean microseconds per operation, per thread.
    pub micros_per_op: f64,
    /// Operations per second over all threads.
    pub ops_per_sec: f64,
    /// Operations done, when the line says.
    pub operations: Option<u64>,
    /// `(found, of)` for reads, when the line says.
    pub found: Option<(u64, u64)>,
}

/// A result line that does not parse.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    /// A field was missing where the format has one.
    #[error("db_bench line {line:?}: expected {expected}")]
    Missing {
        /// The line.
        line: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A number did not parse.
    #[error("db_bench line {line:?}: {field} {value:?} is not a number")]
    BadNumber {
        /// The line.
        line: String,
        /// Which field.
        field: &'static str,
        /// Its text.
        value: String,
    },
}

/// Parses one line: `None` if it is not a result line, an error if it looks
/// like one but does not parse.
pub fn parse_line(line: &str) -> Option<Result<Figure, ParseError>> {
    if !line.contains("micros/op") {
        return None;
    }
    let (name, rest) = line.split_once(':')?;
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return None;
    }
    Some(parse_fields(line, name, rest))
}

fn parse_fields(line: &str, name: &str, rest: &str) -> Result<Figure, ParseError> {
    let missing = |expected| ParseError::Missing {
        line: line.to_string(),
        expected,
    };
    let number = |field: &'static str, value: &str| -> Result<f64, ParseError> {
        value
            .replace(',', "")
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| ParseError::BadNumber {
                line: line.to_string(),
                field,
                value: value.to_string(),
            })
    };
    let tokens: Vec<&str> = rest.split_whitespace().collect();
    let at = |word: &str| tokens.iter().position(|t| t.trim_end_matches(';') == word);
    let micros_at = at("micros/op").ok_or_else(|| missing("'micros/op'"))?;
    let micros = tokens
        .get(micros_at.wrapping_sub(1))
        .ok_or_else(|| missing("a number before 'micros/op'"))?;
    let micros_per_op = number("micros/op", micros)?;
    let ops_at = at("ops/sec").ok_or_else(|| missing("'ops/sec'"))?;
    let ops = tokens
        .get(ops_at.wrapping_sub(1))
        .ok_or_else(|| missing("a number before 'ops/sec'"))?;
    let ops_per_sec = number("ops/sec", ops)?;
    let operations = match at("operations") {
        Some(i) => {
            let v = tokens
                .get(i.wrapping_sub(1))
                .ok_or_else(|| missing("a number before 'operations'"))?;
            Some(number("operations", v)? as u64)
        }
        None => None,
    };
    let found = match (rest.rfind('('), rest.rfind(" found)")) {
        (Some(open), Some(close)) if open < close => {
            let inner = &rest[open + 1..close];
            let (a, b) = inner
                .split_once(" of ")
                .ok_or_else(|| missing("'(N of M found)'"))?;
            Some((
                number("found", a.trim())? as u64,
                number("of", b.trim())? as u64,
            ))
        }
        _ => None,
    };
    Ok(Figure {
        name: name.to_string(),
        micros_per_op,
        ops_per_sec,
        operations,
        found,
    })
}

/// Every result line of an output, in order.
pub fn parse_output(out: &str) -> Result<Vec<Figure>, ParseError> {
    out.lines().filter_map(parse_line).collect()
}

/// The RocksDB version db_bench prints (`RocksDB:    version 7.8.3`).
pub fn parse_version(out: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.strip_prefix("RocksDB:"))
        .map(|v| v.trim().trim_start_matches("version").trim().to_string())
}

/// The db_bench binary: `explicit`, else [`DEFAULT_PATH`], else `db_bench`
/// on `PATH`. The error says why it is missing.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(format!("{} does not exist", p.display()))
        };
    }
    let default = Path::new(DEFAULT_PATH);
    if default.is_file() {
        return Ok(default.to_path_buf());
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("db_bench");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(format!(
        "db_bench not found at {DEFAULT_PATH} or on PATH (install Debian's rocksdb-tools; scripts/bench-storage.sh does)"
    ))
}

/// The settings every invocation shares.
pub fn common_args(db: &Path, num: u64, seed: u64) -> Vec<String> {
    vec![
        format!("--db={}", db.display()),
        format!("--num={num}"),
        format!("--key_size={KEY_BYTES}"),
        format!("--value_size={VALUE_BYTES}"),
        "--compression_type=none".into(),
        "--bloom_bits=10".into(),
        format!("--cache_size={}", 64u64 << 20),
        format!("--write_buffer_size={}", 64u64 << 20),
        format!("--seed={}", seed.max(1)),
        "--histogram=0".into(),
    ]
}

/// What one invocation produced.
#[derive(Debug, Clone)]
pub struct Run {
    /// Result lines.
    pub figures: Vec<Figure>,
    /// Bytes the child wrote (`write_bytes` of this process around the
    /// child's life: a reaped child's I/O is added to its parent's).
    pub write_bytes: Option<u64>,
    /// RocksDB version from the banner.
    pub version: Option<String>,
    /// The command line, for the report.
    pub command: String,
}

impl Run {
    /// The figure of benchmark `name`, or an error naming what was there.
    pub fn figure(&self, name: &str) -> anyhow::Result<&Figure> {
        self.figures
            .iter()
            .find(|f| f.name == name)
            .with_context(|| {
                let seen: Vec<&str> = self.figures.iter().map(|f| f.name.as_str()).collect();
                format!(
                    "db_bench printed no {name} result (saw {seen:?}); command: {}",
                    self.command
                )
            })
    }
}

/// Runs `bin` with `args` and parses its output.
pub fn run(ui: &Ui, bin: &Path, label: &str, args: &[String]) -> anyhow::Result<Run> {
    let command = format!("{} {}", bin.display(), args.join(" "));
    let spinner = ui.spinner(&format!("db_bench: {label}"));
    let before = process_write_bytes().ok();
    let output = Command::new(bin)
        .args(args)
        .output()
        .with_context(|| format!("running {command}"))?;
    let after = process_write_bytes().ok();
    spinner.finish_and_clear();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(10).collect();
        bail!(
            "db_bench exited with {}; command: {command}; last stderr lines: {:?}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>()
        );
    }
    let mut figures =
        parse_output(&stdout).with_context(|| format!("parsing the output of {command}"))?;
    // Some builds print results on stderr; take them from there too.
    figures
        .extend(parse_output(&stderr).with_context(|| format!("parsing the stderr of {command}"))?);
    Ok(Run {
        figures,
        write_bytes: before.zip(after).map(|(b, a)| a.saturating_sub(b)),
        version: parse_version(&stdout).or_else(|| parse_version(&stderr)),
        command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_result_lines_of_rocksdb_7() {
        let line = "fillseq      :       1.681 micros/op 594961 ops/sec 0.336 seconds 200000 operations;   65.8 MB/s";
        let f = parse_line(line).unwrap().unwrap();
        assert_eq!(f.name, "fillseq");
        assert_eq!(f.micros_per_op, 1.681);
        assert_eq!(f.ops_per_sec, 594961.0);
        assert_eq!(f.operations, Some(200000));
        assert_eq!(f.found, None);
        let read = "readrandom   :       3.489 micros/op 286571 ops/sec 0.698 seconds 200000 operations;   27.4 MB/s (173050 of 200000 found)";
        let f = parse_line(read).unwrap().unwrap();
        assert_eq!(f.found, Some((173050, 200000)));
        let missing = "readmissing  :       3.059 micros/op 326938 ops/sec 0.612 seconds 200000 operations; (0 of 200000 found)";
        assert_eq!(
            parse_line(missing).unwrap().unwrap().found,
            Some((0, 200000))
        );
        // Older format without seconds and operations.
        let old = "fillrandom   :       3.170 micros/op 315450 ops/sec;   34.9 MB/s";
        let f = parse_line(old).unwrap().unwrap();
        assert_eq!(f.ops_per_sec, 315450.0);
        assert_eq!(f.operations, None);
    }

    #[test]
    fn ignores_other_lines_and_rejects_broken_results() {
        assert!(parse_line("DB path: [/tmp/x]").is_none());
        assert!(parse_line("Keys:       16 bytes each").is_none());
        assert!(parse_line("... finished 100 ops").is_none());
        let broken = parse_line("fillseq : abc micros/op 12 ops/sec").unwrap();
        assert!(matches!(
            broken,
            Err(ParseError::BadNumber {
                field: "micros/op",
                ..
            })
        ));
        let no_ops = parse_line("fillseq : 1.0 micros/op").unwrap();
        assert!(matches!(no_ops, Err(ParseError::Missing { .. })));
        let nan = parse_line("fillseq : 1.0 micros/op NaN ops/sec").unwrap();
        assert!(nan.is_err());
        let out = "RocksDB:    version 7.8.3\nDate: x\nfillseq : 1.0 micros/op 10 ops/sec\nstuff\noverwrite : 2.0 micros/op 5 ops/sec\n";
        let figs = parse_output(out).unwrap();
        assert_eq!(figs.len(), 2);
        assert_eq!(parse_version(out).as_deref(), Some("7.8.3"));
        assert!(parse_output("fillseq : x micros/op 1 ops/sec\n").is_err());
    }

    #[test]
    fn missing_binary_is_reported() {
        let err = locate(Some(Path::new("/nonexistent/db_bench"))).unwrap_err();
        assert!(err.contains("does not exist"));
    }
}
