//! The schema file: one file in the data directory, replaced atomically.
//!
//! ```text
//! <data>/schema.bin:  magic "RNGSCHM3" | payload length u64 LE | crc32c u32 LE | payload (bincode of the mergeable state)
//! ```
//!
//! The payload is bincode of the structs, which is positional: a field
//! added to any of them changes the format (`#[serde(default)]` cannot
//! help), so the magic's digit is the format version. Format 3 holds the
//! mergeable schema (every object with the timestamps of its changes and
//! the tombstones of drops). Format 2 (one schema with a counter version,
//! before schemas merged) still loads: it becomes a mergeable schema with
//! every object created at time zero, and is written as format 3 with the
//! next change. Format 1 (before keyspaces had `sloppy_quorum`) is refused
//! with its own message; no such file was ever released.
//!
//! A new schema is written to `schema.bin.tmp`, fsynced, renamed over
//! `schema.bin`, and the directory is fsynced: after a crash the file holds
//! either the old or the new schema, whole; a merged schema is durable
//! before it becomes current, so nothing a node has acknowledged or
//! gossiped is lost by a crash. Loading checks the magic, the length, the
//! checksum and every invariant of the schema, and reports a typed error
//! for each; it never panics.

use super::legacy::SchemaV2;
use super::{Schema, SchemaChange, SchemaConflict, SchemaError};
use parking_lot::{Mutex, RwLock};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"RNGSCHM3";
/// Format 2: one schema with a counter version (loaded and converted).
const MAGIC_V2: &[u8; 8] = b"RNGSCHM2";
/// Format 1: keyspaces without `sloppy_quorum`.
const MAGIC_V1: &[u8; 8] = b"RNGSCHM1";
const FILE_NAME: &str = "schema.bin";
const MAX_SCHEMA_BYTES: usize = 64 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_SCHEMA_BYTES>()
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> SchemaError {
    SchemaError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Encodes a schema as the file's bytes.
pub fn encode(schema: &Schema) -> Vec<u8> {
    let payload = bincode::serde::encode_to_vec(schema, config()).unwrap_or_default();
    let mut out = Vec::with_capacity(payload.len() + 20);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Decodes and validates the file's bytes.
pub fn decode(bytes: &[u8], path: &Path) -> Result<Schema, SchemaError> {
    let corrupt = |reason: String| SchemaError::Corrupt {
        path: path.display().to_string(),
        reason,
    };
    if bytes.len() >= 8 && &bytes[..8] == MAGIC_V1 {
        return Err(corrupt(
            "schema file format 1 (from before keyspaces had sloppy_quorum) is not supported; \
             this version reads formats 2 and 3: recreate the schema (the CQL of DESCRIBE \
             on the old version) on an empty data directory"
                .into(),
        ));
    }
    let legacy = bytes.len() >= 8 && &bytes[..8] == MAGIC_V2;
    if bytes.len() < 20 || (&bytes[..8] != MAGIC && !legacy) {
        return Err(corrupt("not a ringdb schema file (bad magic)".into()));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[8..16]);
    let len = u64::from_le_bytes(len);
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[16..20]);
    let crc = u32::from_le_bytes(crc);
    let payload = &bytes[20..];
    if payload.len() as u64 != len {
        return Err(corrupt(format!(
            "payload is {} bytes, the header says {len}",
            payload.len()
        )));
    }
    if crc32c::crc32c(payload) != crc {
        return Err(corrupt("checksum mismatch".into()));
    }
    let schema = if legacy {
        let (old, used) = bincode::serde::decode_from_slice::<SchemaV2, _>(payload, config())
            .map_err(|e| corrupt(format!("cannot decode (format 2): {e}")))?;
        if used != payload.len() {
            return Err(corrupt("trailing bytes after the schema".into()));
        }
        old.into_schema()
            .map_err(|e| corrupt(format!("invalid schema (format 2): {e}")))?
    } else {
        // Decoding normalizes and validates the state (an invalid one fails
        // to decode, with the reason).
        let (schema, used) = bincode::serde::decode_from_slice::<Schema, _>(payload, config())
            .map_err(|e| corrupt(format!("cannot decode: {e}")))?;
        if used != payload.len() {
            return Err(corrupt("trailing bytes after the schema".into()));
        }
        schema
    };
    schema
        .validate()
        .map_err(|e| corrupt(format!("invalid schema: {e}")))?;
    Ok(schema)
}

/// A node's current schema, persisted in its data directory (or kept in
/// memory only, for tests).
#[derive(Debug)]
pub struct SchemaStore {
    path: Option<PathBuf>,
    current: RwLock<Arc<Schema>>,
    write: Mutex<()>,
}

impl SchemaStore {
    /// Opens the schema of the data directory `dir` (creating the
    /// directory; an absent file is the empty schema).
    pub fn open(dir: &Path) -> Result<SchemaStore, SchemaError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let path = dir.join(FILE_NAME);
        let schema = match std::fs::read(&path) {
            Ok(bytes) => decode(&bytes, &path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Schema::new(),
            Err(e) => return Err(io_err(&path, e)),
        };
        Ok(SchemaStore {
            path: Some(path),
            current: RwLock::new(Arc::new(schema)),
            write: Mutex::new(()),
        })
    }

    /// A schema kept in memory only.
    pub fn in_memory() -> SchemaStore {
        SchemaStore {
            path: None,
            current: RwLock::new(Arc::new(Schema::new())),
            write: Mutex::new(()),
        }
    }

    /// The current schema.
    pub fn current(&self) -> Arc<Schema> {
        self.current.read().clone()
    }

    /// Applies a change made on this node (checked against the current
    /// schema, see [`Schema::apply`]): the new schema is durable before it
    /// becomes current. Changes and merges are serialized.
    pub fn apply(&self, change: &SchemaChange) -> Result<Arc<Schema>, SchemaError> {
        let _guard = self.write.lock();
        let next = Arc::new(self.current().apply(change)?);
        if let Some(path) = &self.path {
            write_atomically(path, &encode(&next))?;
        }
        *self.current.write() = next.clone();
        Ok(next)
    }

    /// Merges the schema of another node (gossip) into this one: the
    /// merged schema is durable before it becomes current. Nothing is
    /// written when the other schema adds nothing. A conflict the merge
    /// resolved (see [`SchemaConflict`]) that was not there before is
    /// logged as a warning.
    pub fn merge(&self, theirs: &Schema) -> Result<Arc<Schema>, SchemaError> {
        let _guard = self.write.lock();
        let current = self.current();
        let next = current.merge(theirs)?;
        if next.digest() == current.digest() {
            return Ok(current);
        }
        let before = current.conflicts();
        for conflict in next.conflicts() {
            if !before.contains(&conflict) {
                log_conflict(&conflict);
            }
        }
        let next = Arc::new(next);
        if let Some(path) = &self.path {
            write_atomically(path, &encode(&next))?;
        }
        *self.current.write() = next.clone();
        Ok(next)
    }
}

fn log_conflict(conflict: &SchemaConflict) {
    tracing::warn!(%conflict, "concurrent schema changes conflicted");
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SchemaError> {
    let tmp = path.with_extension("bin.tmp");
    let mut file = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    file.write_all(bytes).map_err(|e| io_err(&tmp, e))?;
    file.sync_all().map_err(|e| io_err(&tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err(dir, e))?;
    }
    Ok(())
}
