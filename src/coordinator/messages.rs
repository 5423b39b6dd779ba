//! The messages coordinators and replicas exchange (serde, bincode on the
//! wire through [`crate::net`]).
//!
//! Every request names its table by [`TableRef`] (keyspace, name and schema
//! id), so a replica never applies data to a table that was dropped and
//! created again. Failures a replica reports are typed ([`PeerError`]);
//! a request the replica cannot decode (another protocol version, garbage)
//! is rejected by the transport with a typed `NetError` instead.

use crate::cluster::anti_entropy::{SlicedSpan, SpanHashes};
use crate::model::digest::{self, DigestWriter};
use crate::model::{Consistency, Entry, KeyBound, NodeId, PartitionHeader, RowState};
use crate::query::api::{Mutation, PartitionWrite, QueryError, SliceRequest, TableRef};
use crate::storage::engine::StateSlice;
use serde::{Deserialize, Serialize};
use std::ops::Bound;

/// Stamped deltas: `(encoded key, entry)` pairs, merged by the receiver.
pub type Deltas = Vec<(Vec<u8>, Entry)>;

/// A request from a coordinator to a replica (or to a sloppy-quorum
/// fallback node).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Stamp these mutations as a replica of the partition, apply them
    /// locally and answer with the deltas ([`PeerResponse::Stamped`]).
    Stamp {
        /// The table.
        table: TableRef,
        /// Serialized partition key.
        pk: Vec<u8>,
        /// The unstamped mutations.
        mutations: Vec<Mutation>,
    },
    /// Merge stamped deltas (a write's copy, a read repair, a hint replay).
    Apply {
        /// The table.
        table: TableRef,
        /// The deltas.
        entries: Deltas,
    },
    /// Read a slice of one partition, dead rows included.
    Read {
        /// The table.
        table: TableRef,
        /// Serialized partition key.
        pk: Vec<u8>,
        /// What to read.
        slice: WireSlice,
    },
    /// Read a slice of one partition like [`PeerRequest::Read`], but answer
    /// only its digest ([`PeerResponse::Digest`]): the coordinator compares
    /// it with the one full answer it asked for, and fetches full data only
    /// when they differ.
    ReadDigest {
        /// The table.
        table: TableRef,
        /// Serialized partition key.
        pk: Vec<u8>,
        /// What to read.
        slice: WireSlice,
    },
    /// Read partitions in key order within `[lower, upper)`.
    Scan {
        /// The table.
        table: TableRef,
        /// Lower key bound.
        lower: KeyBound,
        /// Upper key bound.
        upper: KeyBound,
        /// Most partitions to return.
        max_partitions: u32,
        /// Most live rows per partition.
        rows_per_partition: Option<u32>,
    },
    /// Hold these deltas for `target` (down) as a durable hint; the
    /// receiver replays them when `target` is back.
    StoreHint {
        /// The replica the deltas are for.
        target: NodeId,
        /// The table.
        table: TableRef,
        /// The deltas.
        entries: Deltas,
    },
    /// Remove all data of the table (TRUNCATE, DROP).
    Truncate {
        /// The table.
        table: TableRef,
    },
    /// Send your schema (a node that saw a newer schema version in gossip
    /// pulls it).
    GetSchema,
    /// Hold this logged batch durably in your batch log
    /// ([`PeerResponse::BatchStored`] once it is fsynced).
    StoreBatch {
        /// The batch id (must match the payload's).
        id: u128,
        /// A [`LoggedBatch`], encoded.
        payload: Vec<u8>,
    },
    /// The logged batch was applied: drop it from your batch log.
    RemoveBatch {
        /// The batch id.
        id: u128,
    },
    /// Which nodes your coordinator treats as joining and as leaving (a
    /// node changing the ring waits until every node does, so no write
    /// misses it): [`PeerResponse::RingChanges`].
    RingChanges,
    /// Hash what you hold of `table` in the span's slices (anti-entropy
    /// repair compares the answers): [`PeerResponse::SpanHashes`].
    HashSpan {
        /// The table.
        table: TableRef,
        /// The tokens and how finely to cut them.
        span: SlicedSpan,
    },
}

/// A replica's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PeerResponse {
    /// The deltas the replica stamped and applied.
    Stamped(Deltas),
    /// Deltas applied (or data truncated).
    Applied,
    /// The hint is stored durably.
    HintStored,
    /// A partition slice.
    Partition(ReplicaPartition),
    /// The digest of a partition slice ([`ReplicaPartition::digest`]).
    Digest(u128),
    /// Partitions of a scan; `cut` when the replica stopped at the limit.
    Partitions {
        /// Partition prefix and slice, in key order.
        partitions: Vec<(Vec<u8>, ReplicaPartition)>,
        /// More partitions may follow the last one.
        cut: bool,
    },
    /// The node's schema, for [`PeerRequest::GetSchema`].
    Schema(Box<crate::schema::Schema>),
    /// The logged batch is in the node's batch log, durably.
    BatchStored,
    /// The logged batch is no longer in the node's batch log.
    BatchRemoved,
    /// The request failed on the replica.
    Error(PeerError),
    /// The nodes the answering node's coordinator copies writes to as
    /// joining, and those it treats as leaving ([`PeerRequest::RingChanges`]).
    RingChanges {
        /// Nodes in its pending ring and not in its ring.
        joining: Vec<crate::model::NodeId>,
        /// Nodes in its ring and not in its pending ring.
        leaving: Vec<crate::model::NodeId>,
    },
    /// The hashes of a span's slices ([`PeerRequest::HashSpan`]).
    SpanHashes(SpanHashes),
}

/// Why a replica could not serve a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum PeerError {
    /// The replica does not know the table (schema not there yet, or the
    /// table was dropped or recreated).
    #[error("unknown table: {0}")]
    UnknownTable(String),
    /// The request is not valid (bad keys, bad bounds).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Storage failed on the replica.
    #[error("storage error on the replica: {0}")]
    Storage(String),
    /// The node does not serve this request (e.g. it keeps no hints).
    #[error("unsupported request: {0}")]
    Unsupported(String),
}

impl From<QueryError> for PeerError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::Invalid { rendered, .. } => PeerError::UnknownTable(rendered),
            QueryError::Syntax { message, .. } => PeerError::Invalid(message),
            other => PeerError::Storage(other.to_string()),
        }
    }
}

/// A [`SliceRequest`] as it travels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireSlice {
    /// Lower clustering prefix bound.
    pub lower: KeyBound,
    /// Upper clustering prefix bound.
    pub upper: KeyBound,
    /// Descending order.
    pub reverse: bool,
    /// Most live rows.
    pub limit: Option<u32>,
}

/// `std::ops::Bound` to the serializable [`KeyBound`].
pub fn to_key_bound(b: &Bound<Vec<u8>>) -> KeyBound {
    match b {
        Bound::Included(v) => KeyBound::Included(v.clone()),
        Bound::Excluded(v) => KeyBound::Excluded(v.clone()),
        Bound::Unbounded => KeyBound::Unbounded,
    }
}

/// [`KeyBound`] back to `std::ops::Bound`.
pub fn from_key_bound(b: KeyBound) -> Bound<Vec<u8>> {
    match b {
        KeyBound::Included(v) => Bound::Included(v),
        KeyBound::Excluded(v) => Bound::Excluded(v),
        KeyBound::Unbounded => Bound::Unbounded,
    }
}

fn limit_u32(limit: Option<usize>) -> Option<u32> {
    limit.map(|l| u32::try_from(l).unwrap_or(u32::MAX))
}

impl From<&SliceRequest> for WireSlice {
    fn from(s: &SliceRequest) -> Self {
        WireSlice {
            lower: to_key_bound(&s.lower),
            upper: to_key_bound(&s.upper),
            reverse: s.reverse,
            limit: limit_u32(s.limit),
        }
    }
}

impl From<WireSlice> for SliceRequest {
    fn from(s: WireSlice) -> Self {
        SliceRequest {
            lower: from_key_bound(s.lower),
            upper: from_key_bound(s.upper),
            reverse: s.reverse,
            limit: s.limit.map(|l| l as usize),
        }
    }
}

/// One replica's view of a partition slice: every row state in the range
/// (dead ones included) in the requested order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicaPartition {
    /// The partition's deletions.
    pub header: PartitionHeader,
    /// Encoded clustering key and row state.
    pub rows: Vec<(Vec<u8>, RowState)>,
    /// The replica stopped at the limit of live rows: it did not read past
    /// its last row.
    pub cut: bool,
}

impl ReplicaPartition {
    /// A 128-bit digest of the slice's exact content: replicas holding
    /// the same states give the same digest, and any difference in the
    /// header, a row's key or state, or `cut` changes it.
    ///
    /// It is the digest ([`crate::model::digest`]) of the header's
    /// encoding, `cut`, the number of rows, and each row's clustering key
    /// followed by its state's own digest ([`RowState::digest`]) rather
    /// than the state's encoding: a state's digest is computed once and
    /// kept with it, so a replica answering from a memtable or its row
    /// cache hashes a few bytes per row instead of re-encoding every cell.
    pub fn digest(&self) -> u128 {
        let mut writer = DigestWriter::new();
        let streamed = (|| {
            digest::encode_into(&mut writer, &self.header)?;
            digest::encode_into(&mut writer, &self.cut)?;
            digest::encode_into(&mut writer, &(self.rows.len() as u64))?;
            for (clustering, state) in &self.rows {
                digest::encode_into(&mut writer, clustering)?;
                bincode::enc::write::Writer::write(&mut writer, &state.digest().to_le_bytes())?;
            }
            Ok::<(), bincode::error::EncodeError>(())
        })();
        if streamed.is_err() {
            // Not reachable for these types, which always encode.
            return DigestWriter::new().finish();
        }
        writer.finish()
    }
}

impl From<StateSlice> for ReplicaPartition {
    fn from(s: StateSlice) -> Self {
        ReplicaPartition {
            header: s.header,
            rows: s
                .rows
                .into_iter()
                .map(|r| (r.clustering, r.state))
                .collect(),
            cut: s.cut,
        }
    }
}

/// What a stored hint holds (the payload of a `cluster::hints::Hint`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HintPayload {
    /// The table.
    pub table: TableRef,
    /// The deltas to apply on the target.
    pub entries: Deltas,
}

fn codec() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ 256 << 20 }>()
}

impl HintPayload {
    /// Encodes the payload.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        bincode::serde::encode_to_vec(self, codec()).map_err(|e| e.to_string())
    }

    /// Decodes a payload (bytes from disk: errors, never panics).
    pub fn decode(bytes: &[u8]) -> Result<HintPayload, String> {
        let (p, used) = bincode::serde::decode_from_slice::<HintPayload, _>(bytes, codec())
            .map_err(|e| e.to_string())?;
        if used != bytes.len() {
            return Err(format!("{} trailing bytes", bytes.len() - used));
        }
        Ok(p)
    }
}

/// A logged batch as the batch log holds it (the payload of a
/// `cluster::batchlog::BatchEntry`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedBatch {
    /// The batch id, a timeuuid made by the coordinator.
    pub id: u128,
    /// Wall-clock millisecond at which the coordinator made it.
    pub created_ms: u64,
    /// The consistency level the client asked for.
    pub consistency: Consistency,
    /// The nodes holding the batch log entry, in the order in which they
    /// take over its replay.
    pub holders: Vec<NodeId>,
    /// The mutations, per (table, partition key), not stamped: a replay
    /// stamps them again, with the batch's own timestamps.
    pub partitions: Vec<PartitionWrite>,
}

impl LoggedBatch {
    /// Encodes the batch.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        bincode::serde::encode_to_vec(self, codec()).map_err(|e| e.to_string())
    }

    /// Decodes a batch (bytes from a peer or from disk: errors, never
    /// panics).
    pub fn decode(bytes: &[u8]) -> Result<LoggedBatch, String> {
        let (b, used) = bincode::serde::decode_from_slice::<LoggedBatch, _>(bytes, codec())
            .map_err(|e| e.to_string())?;
        if used != bytes.len() {
            return Err(format!("{} trailing bytes", bytes.len() - used));
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CellValue, RangeTombstone, RowWrite, Timestamp};
    use cql_lite::Value;
    use proptest::prelude::*;

    /// A row state built by stamping writes (cells, deletions, TTLs) from
    /// a few nodes, so it has siblings and a causal context.
    fn state(writes: &[(u64, u64, u8, Option<u64>)]) -> RowState {
        writes
            .iter()
            .fold(RowState::default(), |acc, &(node, ts, kind, ttl)| {
                let write = RowWrite {
                    ts: Timestamp(ts),
                    insert_marker: (kind == 0).then_some(ttl),
                    delete_row: kind == 1,
                    cells: vec![(
                        format!("c{}", ts % 3),
                        if kind == 2 {
                            CellValue::Deleted
                        } else {
                            CellValue::Live(Value::Text("x".repeat(ts as usize % 700)))
                        },
                        ttl,
                    )],
                };
                // Every other write is concurrent with what came before.
                let delta = if ts % 2 == 0 {
                    acc.stamp(NodeId(node), None, &write)
                } else {
                    RowState::default().stamp(NodeId(node), None, &write)
                };
                acc.join(&delta)
            })
    }

    fn partition() -> impl Strategy<Value = ReplicaPartition> {
        let write = (1u64..4, 0u64..1000, 0u8..4, proptest::option::of(0u64..100));
        let row = (
            proptest::collection::vec(any::<u8>(), 0..6),
            proptest::collection::vec(write, 0..5),
        );
        (
            proptest::option::of(0u64..1000),
            proptest::collection::vec((0u8..4, 0u8..4, 0u64..1000), 0..3),
            proptest::collection::vec(row, 0..6),
            any::<bool>(),
        )
            .prop_map(|(deleted_at, ranges, rows, cut)| ReplicaPartition {
                header: PartitionHeader {
                    deleted_at: deleted_at.map(Timestamp),
                    ranges: ranges
                        .into_iter()
                        .map(|(s, e, ts)| RangeTombstone {
                            start: KeyBound::Included(vec![s]),
                            end: KeyBound::Excluded(vec![e]),
                            ts: Timestamp(ts),
                        })
                        .collect(),
                },
                rows: rows.into_iter().map(|(ck, w)| (ck, state(&w))).collect(),
                cut,
            })
    }

    proptest! {
        #[test]
        fn the_digest_sees_every_part_and_only_the_content(p in partition(), flip in any::<prop::sample::Index>()) {
            // Equal content, equal digest, whether a state's digest was
            // already computed (shared) or not (decoded afresh).
            let bytes = bincode::serde::encode_to_vec(&p, bincode::config::standard())
                .expect("encodes");
            let (decoded, _): (ReplicaPartition, usize) =
                bincode::serde::decode_from_slice(&bytes, bincode::config::standard())
                    .expect("decodes");
            prop_assert_eq!(p.digest(), decoded.digest());
            prop_assert_eq!(p.clone().digest(), p.digest());
            // Every field counts.
            let mut other = p.clone();
            other.cut = !other.cut;
            prop_assert_ne!(other.digest(), p.digest());
            let mut other = p.clone();
            other.header.deleted_at = Some(Timestamp(other.header.deleted_at.map_or(1, |t| t.0 + 1)));
            prop_assert_ne!(other.digest(), p.digest());
            if !p.rows.is_empty() {
                let i = flip.index(p.rows.len());
                let mut other = p.clone();
                other.rows[i].0.push(0);
                prop_assert_ne!(other.digest(), p.digest());
                let mut other = p.clone();
                let changed = other.rows[i].1.join(&state(&[(9, 2000, 0, None)]));
                prop_assume!(changed != other.rows[i].1);
                other.rows[i].1 = changed;
                prop_assert_ne!(other.digest(), p.digest());
                let mut other = p.clone();
                other.rows.remove(i);
                prop_assert_ne!(other.digest(), p.digest());
            }
        }

        /// A state's digest is the digest of its encoding, as if computed
        /// afresh each time.
        #[test]
        fn a_row_digest_is_the_digest_of_its_encoding(p in partition()) {
            for (_, state) in &p.rows {
                let bytes = bincode::serde::encode_to_vec(state, bincode::config::standard())
                    .expect("encodes");
                let mut h = digest::digest_hasher();
                std::hash::Hasher::write(&mut h, &bytes);
                let whole = siphasher::sip128::Hasher128::finish128(&h).as_u128();
                prop_assert_eq!(state.digest(), whole);
                prop_assert_eq!(state.digest(), whole, "memoized");
            }
        }
    }
}
