//! Cluster metadata: what every node tells the others about itself, and how
//! it travels (foca custom broadcasts, plus a direct anti-entropy exchange).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use foca::{BroadcastHandler, Invalidates};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::identity::PeerId;
use crate::cluster::ring::NodeInfo;
use crate::model::key::Token;
use crate::model::NodeId;

/// Where a node is in its life in the ring (the `State` letter of
/// `nodetool status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum NodeStatus {
    /// Bootstrapping: taking its ranges, not yet serving them.
    Joining,
    /// Serving its ranges.
    Normal,
    /// Decommissioning: handing its ranges over.
    Leaving,
    /// Gone from the ring.
    Left,
}

impl NodeStatus {
    /// The one-letter code of `nodetool status`: J, N, L; X for left.
    pub fn letter(self) -> char {
        match self {
            NodeStatus::Joining => 'J',
            NodeStatus::Normal => 'N',
            NodeStatus::Leaving => 'L',
            NodeStatus::Left => 'X',
        }
    }
}

/// What a node tells the cluster about itself. Disseminated with foca's
/// custom broadcasts; every node keeps the newest version per node.
///
/// Versions are ordered by `(generation, version)`: `version` bumps on every
/// local change ([`super::Membership::update_local`]) and restarts from 0
/// with each new `generation` (process start).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeMetadata {
    /// The node's id.
    pub node: NodeId,
    /// The node's listen address.
    pub addr: SocketAddr,
    /// The node's rack, if racks are used.
    pub rack: Option<String>,
    /// The node's tokens on the ring.
    pub tokens: Vec<Token>,
    /// Where the node is in its life in the ring.
    pub status: NodeStatus,
    /// The version of the node's schema: the HLC timestamp (as a number)
    /// of the latest schema change it holds
    /// ([`crate::schema::Schema::version`]).
    pub schema_version: u64,
    /// 64 bits of the digest of that schema's whole content: nodes whose
    /// (version, digest) differ pull each other's schema and merge it.
    pub schema_digest: u64,
    /// Bytes of data the node stores (the `Load` of `nodetool status`).
    pub load_bytes: u64,
    /// The id the node stamps its writes' dots with (its node id until its
    /// OS restarts; see `query::stamp_actor`). Ids no member gossips are
    /// retired, and context pruning may forget them (`model::pruning`).
    pub stamp_id: NodeId,
    /// The generation (process start) this metadata was published under.
    pub generation: u64,
    /// Bumps on every local change within one generation.
    pub version: u64,
}

impl NodeMetadata {
    /// Metadata of a node that is joining, with no schema and no load yet.
    /// The generation is set by [`super::Membership::start`].
    pub fn new(node: NodeId, addr: SocketAddr, rack: Option<String>, tokens: Vec<Token>) -> Self {
        NodeMetadata {
            node,
            addr,
            rack,
            tokens,
            status: NodeStatus::Joining,
            schema_version: 0,
            schema_digest: 0,
            load_bytes: 0,
            stamp_id: node,
            generation: 0,
            version: 0,
        }
    }

    /// Metadata of the ring node `info` in `status`.
    pub fn from_node_info(info: &NodeInfo, status: NodeStatus) -> Self {
        NodeMetadata {
            status,
            ..NodeMetadata::new(info.id, info.addr, info.rack.clone(), info.tokens.clone())
        }
    }

    /// The ring's view of this node.
    pub fn to_node_info(&self) -> NodeInfo {
        NodeInfo::new(self.node, self.addr, self.rack.clone(), self.tokens.clone())
    }

    /// `(generation, version)`: larger is newer.
    pub fn freshness(&self) -> (u64, u64) {
        (self.generation, self.version)
    }

    /// Whether this version replaces `other` (same node, newer).
    pub fn is_newer_than(&self, other: &NodeMetadata) -> bool {
        self.node == other.node && self.freshness() > other.freshness()
    }

    pub(crate) fn key(&self) -> MetaKey {
        MetaKey {
            node: self.node,
            freshness: self.freshness(),
        }
    }
}

/// Largest encoded metadata accepted from the wire (a datagram is smaller).
const DECODE_LIMIT: usize = 16 * 1024;

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// Why a metadata item or anti-entropy message was rejected.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The bytes do not decode.
    #[error("cannot decode gossip metadata: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// The item decoded with bytes left over.
    #[error("{0} trailing bytes after gossip metadata")]
    Trailing(usize),
}

/// Encodes one metadata item (a custom broadcast, or the body of a push).
pub(crate) fn encode_metadata(meta: &NodeMetadata) -> Vec<u8> {
    // Encoding a plain struct into a Vec cannot fail; an empty item would be
    // rejected by foca and the receivers, never misread.
    bincode::serde::encode_to_vec(meta, bincode_config()).unwrap_or_default()
}

fn decode_exact<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, MetaError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, bincode_config())?;
    if used != bytes.len() {
        return Err(MetaError::Trailing(bytes.len() - used));
    }
    Ok(value)
}

/// Decodes one metadata item.
pub(crate) fn decode_metadata(bytes: &[u8]) -> Result<NodeMetadata, MetaError> {
    decode_exact(bytes)
}

/// The dissemination key of a metadata broadcast: a newer version of the
/// same node's metadata replaces an older one still being disseminated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MetaKey {
    node: NodeId,
    freshness: (u64, u64),
}

impl Invalidates for MetaKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.node == other.node && self.freshness >= other.freshness
    }
}

/// The newest metadata known of every node, shared by the membership task
/// and foca's broadcast handler.
#[derive(Debug)]
pub(crate) struct MetaStore {
    /// This node's id and generation: others cannot publish for it.
    local: PeerId,
    known: BTreeMap<NodeId, NodeMetadata>,
    /// Set by every merge that kept something, cleared by
    /// [`MetaStore::take_changed`].
    changed: bool,
}

impl MetaStore {
    pub(crate) fn new(local: PeerId) -> MetaStore {
        MetaStore {
            local,
            known: BTreeMap::new(),
            changed: false,
        }
    }

    /// Keeps `meta` if it is newer than what is known of its node; returns
    /// whether it was kept. Metadata of this node is only taken from this
    /// node's own generation (an older incarnation's leftovers are stale).
    pub(crate) fn merge(&mut self, meta: NodeMetadata) -> bool {
        if meta.node == self.local.node && meta.generation != self.local.generation {
            return false;
        }
        match self.known.get(&meta.node) {
            Some(old) if !meta.is_newer_than(old) => false,
            _ => {
                self.known.insert(meta.node, meta);
                self.changed = true;
                true
            }
        }
    }

    /// Whether anything was merged since the last call.
    pub(crate) fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    pub(crate) fn get(&self, node: NodeId) -> Option<&NodeMetadata> {
        self.known.get(&node)
    }

    pub(crate) fn all(&self) -> &BTreeMap<NodeId, NodeMetadata> {
        &self.known
    }

    pub(crate) fn digest(&self) -> Vec<DigestEntry> {
        self.known
            .values()
            .map(|m| DigestEntry {
                node: m.node,
                generation: m.generation,
                version: m.version,
            })
            .collect()
    }
}

/// foca's custom broadcast handler for metadata: keeps the newest version
/// per node and tells foca to disseminate only what is news.
pub(crate) struct MetaBroadcasts {
    pub(crate) store: Arc<Mutex<MetaStore>>,
}

impl BroadcastHandler<PeerId> for MetaBroadcasts {
    type Key = MetaKey;
    type Error = MetaError;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&PeerId>,
    ) -> Result<Option<MetaKey>, MetaError> {
        let meta = decode_metadata(data)?;
        let key = meta.key();
        Ok(self.store.lock().merge(meta).then_some(key))
    }
}

/// One line of an anti-entropy digest: which version of a node's metadata
/// the sender has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DigestEntry {
    pub(crate) node: NodeId,
    pub(crate) generation: u64,
    pub(crate) version: u64,
}

/// The anti-entropy exchange, one datagram: the versions the sender has,
/// the nodes whose metadata it wants, and whether the receiver should answer
/// with its own digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SyncMessage {
    pub(crate) have: Vec<DigestEntry>,
    pub(crate) want: Vec<NodeId>,
    pub(crate) reply: bool,
}

impl SyncMessage {
    pub(crate) fn encode(&self) -> Vec<u8> {
        bincode::serde::encode_to_vec(self, bincode_config()).unwrap_or_default()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<SyncMessage, MetaError> {
        decode_exact(bytes)
    }
}

/// Encoded size bound of one digest entry or wanted node (varint u64s).
pub(crate) const DIGEST_ENTRY_MAX: usize = 30;
