//! The storage engine: an LSM tree on one data directory.
//!
//! Layers, bottom up: the commit log ([`commitlog`]) makes writes durable;
//! the memtable ([`memtable`]) holds recent writes in order; SSTables
//! ([`sstable`]) are immutable sorted files; the manifest ([`manifest`]) names
//! the live files; the engine ([`engine`]) ties them together, merges versions
//! on reads and compacts in the background.

pub mod cached_read;
pub mod commitlog;
pub mod compaction;
pub mod engine;
pub mod error;
pub mod framing;
pub mod isolation;
pub mod iter;
pub mod latency;
pub mod manifest;
pub mod memtable;
pub mod row_cache;
pub mod sieve;
pub mod sstable;
pub mod writeback;

pub use error::{Result, StorageError};
