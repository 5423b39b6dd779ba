//! Who a member is on the wire: [`PeerId`], and the codec foca encodes its
//! packets with.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut};
use foca::{Codec, Header, Identity, Member};
use serde::{Deserialize, Serialize};

use crate::model::NodeId;

/// A member's identity in SWIM (foca's `Identity`): its listen address,
/// its node id and its generation.
///
/// The generation tells incarnations of the same node apart: a restarted
/// node must come back with a larger generation than any it used before
/// (take [`generation_now`] or a counter persisted in the data directory),
/// and foca bumps it itself ([`Identity::renew`]) when the cluster declared
/// this node down while it was alive (a partition), so it can rejoin at once
/// under a new identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PeerId {
    /// The node's listen address (where gossip is sent).
    pub addr: SocketAddr,
    /// The node's id.
    pub node: NodeId,
    /// The incarnation of the node's process: larger is newer.
    pub generation: u64,
}

impl PeerId {
    /// A new identity.
    pub fn new(addr: SocketAddr, node: NodeId, generation: u64) -> PeerId {
        PeerId {
            addr,
            node,
            generation,
        }
    }

    /// Whether `other` is the same node at the same address, whatever the
    /// generations (an older or newer incarnation of this member).
    pub fn has_same_prefix(&self, other: &PeerId) -> bool {
        self.addr == other.addr && self.node == other.node
    }

    /// A placeholder identity for a seed known only by its address: foca
    /// accepts an announce addressed to any identity with the receiver's
    /// address, so joining needs no more than the seed's address.
    pub(crate) fn seed(addr: SocketAddr) -> PeerId {
        PeerId {
            addr,
            node: NodeId(0),
            generation: 0,
        }
    }
}

impl Identity for PeerId {
    /// foca keeps one identity per address. Seeds are known only by their
    /// address, and only one process can listen on an address, so the
    /// address is the "prefix" foca compares; a different node taking over
    /// the address of a dead one replaces it when its generation is larger.
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        let generation = self.generation.checked_add(1)?;
        Some(PeerId {
            generation,
            ..*self
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.generation, self.node) > (adversary.generation, adversary.node)
    }
}

/// A generation from the wall clock (microseconds since the Unix epoch):
/// larger than the one of any earlier start of the node, as long as the
/// clock does not go back. Simulations pass their own generations instead.
pub fn generation_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(1)
}

/// Why a foca packet did not encode or decode.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The item does not fit the space left in the packet.
    #[error("no room for the item in the packet")]
    NoRoom,
    /// Encoding failed.
    #[error("cannot encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// The bytes are not a valid item.
    #[error("cannot decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
}

/// Largest single item the codec decodes; packets are far smaller, so this
/// only stops a garbage length prefix from asking for a huge allocation.
const DECODE_LIMIT: usize = 64 * 1024;

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// foca's codec over bincode (the crate's one serialization format): each
/// header and member is one bincode value. Never panics on garbage input.
#[derive(Debug, Default, Clone, Copy)]
pub struct BincodeCodec;

impl BincodeCodec {
    fn encode<T: Serialize>(value: &T, mut buf: impl BufMut) -> Result<(), CodecError> {
        let bytes = bincode::serde::encode_to_vec(value, bincode_config())?;
        if buf.remaining_mut() < bytes.len() {
            return Err(CodecError::NoRoom);
        }
        buf.put_slice(&bytes);
        Ok(())
    }

    fn decode<T: serde::de::DeserializeOwned>(mut buf: impl Buf) -> Result<T, CodecError> {
        let (value, used) = bincode::serde::decode_from_slice(buf.chunk(), bincode_config())?;
        buf.advance(used);
        Ok(value)
    }
}

impl Codec<PeerId> for BincodeCodec {
    type Error = CodecError;

    fn encode_header(
        &mut self,
        header: &Header<PeerId>,
        buf: impl BufMut,
    ) -> Result<(), CodecError> {
        Self::encode(header, buf)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<Header<PeerId>, CodecError> {
        Self::decode(buf)
    }

    fn encode_member(
        &mut self,
        member: &Member<PeerId>,
        buf: impl BufMut,
    ) -> Result<(), CodecError> {
        Self::encode(member, buf)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<Member<PeerId>, CodecError> {
        Self::decode(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(port: u16, generation: u64) -> PeerId {
        PeerId::new(
            SocketAddr::from(([10, 0, 0, 1], port)),
            NodeId(7),
            generation,
        )
    }

    #[test]
    fn renew_wins_the_address_conflict() {
        let a = id(1, 5);
        let b = a.renew().expect("renewable");
        assert_eq!(b.generation, 6);
        assert!(b.has_same_prefix(&a));
        assert!(b.win_addr_conflict(&a));
        assert!(!a.win_addr_conflict(&b));
        assert_eq!(id(1, u64::MAX).renew(), None);
        assert!(!a.has_same_prefix(&id(2, 5)));
    }

    #[test]
    fn codec_round_trip_and_garbage() {
        let mut codec = BincodeCodec;
        let member = Member::alive(id(1, 3));
        let mut buf = Vec::new();
        codec.encode_member(&member, &mut buf).expect("encode");
        let mut slice = &buf[..];
        assert_eq!(codec.decode_member(&mut slice).expect("decode"), member);
        assert!(slice.is_empty());
        for garbage in [&[][..], &[0xff; 3][..], &[1, 2, 3, 4, 5, 6, 7][..]] {
            let mut slice = garbage;
            assert!(codec.decode_header(&mut slice).is_err());
        }
        // No room: nothing written.
        let mut small = bytes::BytesMut::new().limit(3);
        assert!(codec.encode_member(&member, &mut small).is_err());
        assert!(small.get_ref().is_empty());
    }
}
