//! Keys, versions and their merge: the data model every layer shares.
//!
//! - [`key`]: the order-preserving byte encoding of (token, partition key,
//!   clustering key) that the storage engine compares.
//! - [`hlc`]: injected wall clocks and the hybrid logical clock.
//! - [`dots`]: dots and exact dot sets (causal contexts).
//! - [`row`]: row versions, sibling sets, partition headers and the merge.
//! - [`digest`]: content digests replicas compare instead of data.
//! - [`pruning`]: what a replica may forget of a row's causal context.
//!
//! What the storage engine stores under a key is an [`Entry`]: a row's state
//! under a row key, a partition's header under a header key.

pub mod consistency;
pub mod digest;
pub mod dots;
pub mod hlc;
pub mod key;
pub mod pruning;
pub mod row;

pub use consistency::Consistency;
pub use dots::{Dot, DotSet, NodeId};
pub use hlc::{HybridClock, ManualClock, SystemClock, Timestamp, WallClock};
pub use row::{
    Cell, CellValue, KeyBound, PartitionHeader, RangeTombstone, ResolvedRow, RowState, RowVersion,
    RowWrite,
};

use serde::{Deserialize, Serialize};

/// The value stored under one key in the storage engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    /// A row's versions and causal context.
    Row(RowState),
    /// A partition's deletions.
    Header(PartitionHeader),
}

/// Errors decoding stored entries.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Bytes that are not a valid encoded entry.
    #[error("cannot decode entry: {0}")]
    Decode(String),
    /// A row and a header under the same key: the key encoding was broken.
    #[error("cannot merge a row with a partition header")]
    KindMismatch,
}

/// Largest encoded entry accepted on decode, so garbage cannot make a huge
/// allocation.
const MAX_ENTRY_BYTES: usize = 256 << 20;

fn codec_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_ENTRY_BYTES>()
}

impl Entry {
    /// The merge of two entries for the same key.
    pub fn join(&self, other: &Entry) -> Result<Entry, ModelError> {
        match (self, other) {
            (Entry::Row(a), Entry::Row(b)) => Ok(Entry::Row(a.join(b))),
            (Entry::Header(a), Entry::Header(b)) => Ok(Entry::Header(a.join(b))),
            _ => Err(ModelError::KindMismatch),
        }
    }

    /// Serializes the entry (bincode).
    pub fn encode(&self) -> Vec<u8> {
        // Encoding into a Vec cannot fail for these plain types.
        bincode::serde::encode_to_vec(self, codec_config()).unwrap_or_default()
    }

    /// Deserializes an entry, rejecting trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Entry, ModelError> {
        let (entry, used) = bincode::serde::decode_from_slice::<Entry, _>(bytes, codec_config())
            .map_err(|e| ModelError::Decode(e.to_string()))?;
        if used != bytes.len() {
            return Err(ModelError::Decode(format!(
                "{} trailing bytes after the entry",
                bytes.len() - used
            )));
        }
        Ok(entry)
    }

    /// Smallest and largest write timestamp in the entry.
    pub fn ts_bounds(&self) -> Option<(Timestamp, Timestamp)> {
        match self {
            Entry::Row(r) => r.ts_bounds(),
            Entry::Header(h) => h.ts_bounds(),
        }
    }
}

#[cfg(test)]
mod tests;
