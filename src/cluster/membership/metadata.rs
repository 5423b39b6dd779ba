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
    /// Gone from the ring: it left by itself (`ringdb admin
    /// decommission`) and may come back as a new node with new tokens.
    Left,
    /// Taken out of the ring by another node while it was down (`ringdb
    /// admin removenode`). Final: published on the node's behalf, it
    /// outranks anything the node publishes later ([`NodeMetadata::freshness`]),
    /// so a removed node that restarts with its old data is never back in
    /// the ring; it learns it was removed and stops.
    Removed,
}

impl NodeStatus {
    /// The one-letter code of `nodetool status`: J, N, L; X for left, R
    /// for removed.
    pub fn letter(self) -> char {
        match self {
            NodeStatus::Joining => 'J',
            NodeStatus::Normal => 'N',
            NodeStatus::Leaving => 'L',
            NodeStatus::Left => 'X',
            NodeStatus::Removed => 'R',
        }
    }

    /// Whether the node is out of the cluster for good (left or removed):
    /// it stamps no more writes and no hint for it will ever be delivered.
    pub fn is_gone(self) -> bool {
        matches!(self, NodeStatus::Left | NodeStatus::Removed)
    }
}

/// What a node tells the cluster about itself. Disseminated with foca's
/// custom broadcasts; every node keeps the newest version per node.
///
/// Versions are ordered by `(generation, version)`: `version` bumps on every
/// local change ([`super::Membership::update_local`]) and restarts from 0
/// with each new `generation` (process start). A removal
/// ([`NodeStatus::Removed`]) outranks every version without it
/// ([`NodeMetadata::freshness`]).
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

    /// `(removed, generation, version)`: larger is newer. A removal
    /// comes first: it is published by another node on this one's behalf,
    /// under the generation it last saw, and must win over whatever this
    /// node publishes afterwards (a restart with a larger generation
    /// included), or a removed node would come back into the ring with its
    /// stale data.
    pub fn freshness(&self) -> (bool, u64, u64) {
        (
            self.status == NodeStatus::Removed,
            self.generation,
            self.version,
        )
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
    freshness: (bool, u64, u64),
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
    /// Set once another node told this one that it was removed from the
    /// cluster (`ringdb admin removenode` while it was down or cut off).
    removed: bool,
    /// Set by every merge that kept something, cleared by
    /// [`MetaStore::take_changed`].
    changed: bool,
}

impl MetaStore {
    pub(crate) fn new(local: PeerId) -> MetaStore {
        MetaStore {
            local,
            known: BTreeMap::new(),
            removed: false,
            changed: false,
        }
    }

    /// Keeps `meta` if it is newer than what is known of its node; returns
    /// whether it was kept. Metadata of this node is only taken from this
    /// node's own generation (an older incarnation's leftovers are stale),
    /// except a removal, which is not kept but noted
    /// ([`MetaStore::is_removed`]).
    pub(crate) fn merge(&mut self, meta: NodeMetadata) -> bool {
        if meta.node == self.local.node {
            if meta.status == NodeStatus::Removed {
                self.removed = true;
                return false;
            }
            if meta.generation != self.local.generation {
                return false;
            }
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

    /// Whether another node said this one was removed from the cluster.
    pub(crate) fn is_removed(&self) -> bool {
        self.removed
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
                removed: m.status == NodeStatus::Removed,
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
    /// Whether that version is a removal (it outranks any other).
    pub(crate) removed: bool,
    pub(crate) generation: u64,
    pub(crate) version: u64,
}

impl DigestEntry {
    /// Comparable with [`NodeMetadata::freshness`].
    pub(crate) fn freshness(&self) -> (bool, u64, u64) {
        (self.removed, self.generation, self.version)
    }
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

/// Encoded size bound of one digest entry or wanted node (varint u64s and
/// a bool).
pub(crate) const DIGEST_ENTRY_MAX: usize = 30;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, SocketAddrV4};

    fn meta(node: u64, status: NodeStatus, generation: u64, version: u64) -> NodeMetadata {
        let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7000));
        NodeMetadata {
            status,
            generation,
            version,
            ..NodeMetadata::new(NodeId(node), addr, None, vec![node << 32])
        }
    }

    fn status() -> impl Strategy<Value = NodeStatus> {
        prop_oneof![
            Just(NodeStatus::Joining),
            Just(NodeStatus::Normal),
            Just(NodeStatus::Leaving),
            Just(NodeStatus::Left),
            Just(NodeStatus::Removed),
        ]
    }

    proptest! {
        /// Whatever order versions of a node arrive in, a store keeps the
        /// freshest, the same on every node; once it holds a removal, no
        /// version without one replaces it, whatever its generation.
        #[test]
        fn stores_agree_on_the_freshest_version_and_a_removal_is_final(
            versions in proptest::collection::vec((status(), 0u64..4, 0u64..4), 1..12),
            order in any::<prop::sample::Index>(),
        ) {
            let local = PeerId::new("127.0.0.1:7001".parse().unwrap(), NodeId(1), 1);
            let items: Vec<NodeMetadata> =
                versions.iter().map(|&(s, g, v)| meta(7, s, g, v)).collect();
            let mut rotated = items.clone();
            rotated.rotate_left(order.index(items.len()));
            rotated.reverse();
            let mut a = MetaStore::new(local);
            let mut b = MetaStore::new(local);
            let mut removed_seen = false;
            for m in &items {
                a.merge(m.clone());
                removed_seen |= m.status == NodeStatus::Removed;
                if removed_seen {
                    prop_assert_eq!(a.get(NodeId(7)).map(|m| m.status), Some(NodeStatus::Removed));
                }
            }
            for m in rotated {
                b.merge(m);
            }
            let freshest = items.iter().map(NodeMetadata::freshness).max();
            prop_assert_eq!(a.get(NodeId(7)).map(NodeMetadata::freshness), freshest);
            // (Versions of equal freshness are the same version: a node
            // publishes each (generation, version) once.)
            prop_assert_eq!(
                a.get(NodeId(7)).map(NodeMetadata::freshness),
                b.get(NodeId(7)).map(NodeMetadata::freshness)
            );
            // A digest entry compares as the metadata it stands for.
            for entry in a.digest() {
                prop_assert_eq!(Some(entry.freshness()), freshest);
            }
        }
    }

    #[test]
    fn a_removal_of_this_node_is_noted_not_kept_and_others_cannot_speak_for_it() {
        let local = PeerId::new("127.0.0.1:7001".parse().unwrap(), NodeId(1), 5);
        let mut store = MetaStore::new(local);
        assert!(store.merge(meta(1, NodeStatus::Normal, 5, 0)));
        // Another node's version of this one, of an older generation.
        assert!(!store.merge(meta(1, NodeStatus::Leaving, 4, 9)));
        assert!(!store.is_removed());
        // A removal, published by another node under the generation it saw.
        assert!(!store.merge(meta(1, NodeStatus::Removed, 4, 10)));
        assert!(store.is_removed());
        assert_eq!(
            store.get(NodeId(1)).map(|m| m.status),
            Some(NodeStatus::Normal)
        );
    }

    #[test]
    fn removed_and_left_are_gone_and_shown_apart() {
        assert!(NodeStatus::Removed.is_gone() && NodeStatus::Left.is_gone());
        assert!(!NodeStatus::Normal.is_gone() && !NodeStatus::Leaving.is_gone());
        assert_eq!(NodeStatus::Removed.letter(), 'R');
        // A digest entry with a removal still fits its size bound.
        let entry = DigestEntry {
            node: NodeId(u64::MAX),
            removed: true,
            generation: u64::MAX,
            version: u64::MAX,
        };
        let msg = SyncMessage {
            have: vec![entry],
            want: Vec::new(),
            reply: false,
        };
        let empty = SyncMessage {
            have: Vec::new(),
            want: Vec::new(),
            reply: false,
        };
        assert!(msg.encode().len() - empty.encode().len() <= DIGEST_ENTRY_MAX);
    }
}
