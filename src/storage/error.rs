//! Errors of the storage engine.

use std::path::PathBuf;

/// Everything that can go wrong in the storage engine.
///
/// Corruption is always reported with the file and byte offset where it was
/// found, so an operator can tell which file is damaged; the rest of the data
/// stays readable.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An operating-system I/O error on a named file or directory.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Bytes on disk that fail validation (checksum, framing, magic, version).
    #[error("corruption in {path} at offset {offset}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damaged record or block.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// A value that could not be encoded or decoded (bincode).
    #[error("codec error: {0}")]
    Codec(String),
    /// A key that does not follow the key encoding.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The engine was closed, or a background task failed and closed it.
    #[error("storage engine is closed: {0}")]
    Closed(String),
    /// An invalid option or argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl StorageError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StorageError::Io {
            path: path.into(),
            source,
        }
    }

    /// A corruption error at `offset` in `path`.
    pub fn corrupt(path: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Self {
        StorageError::Corrupt {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }
}

/// Result type of the storage engine.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
