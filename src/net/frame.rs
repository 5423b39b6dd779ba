//! The wire format of node-to-node messages, shared by QUIC and the
//! simulation.
//!
//! A request or a response is one frame, on a request lane
//! ([`super::mux`]) or on a stream of its own:
//!
//! ```text
//! frame:    length u32 BE | version u16 BE | bincode(request_id, deadline_ms, from, body)
//! datagram: version u16 BE | bincode(from) | payload bytes
//! ```
//!
//! `length` counts the bytes after itself and is at most [`MAX_FRAME_SIZE`].
//! The protocol version sits at a fixed place in plain bytes, outside
//! bincode, so any future version can still read it and answer "wrong
//! version" instead of "garbage". Bodies are decoded with a bincode limit,
//! so a length inside the body cannot make the decoder allocate more than
//! the frame could hold.
//!
//! A node that receives a request frame of another version answers with a
//! *version-only* frame (length 2, its own version); the requester then
//! reports [`NetError::VersionMismatch`].

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::NetError;

/// The version of the node-to-node protocol. Raise it on any change of the
/// frame layout or of the message types' encoding.
pub const PROTOCOL_VERSION: u16 = 1;

/// Largest frame (after the length prefix), 16 MiB. Larger messages are
/// refused on both sides with [`NetError::TooLarge`].
pub const MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;

/// Bytes of the length prefix of a frame.
pub const LENGTH_PREFIX: usize = 4;

const VERSION_LEN: usize = 2;

/// Stream error codes: what a node sends when it resets a request stream,
/// or in a lane's rejection chunk, instead of answering a request. The requester maps them back with
/// [`NetError::from_stream_code`].
pub mod code {
    /// The request frame did not decode.
    pub const MALFORMED: u64 = 1;
    /// The request (or the response to it) exceeds [`super::MAX_FRAME_SIZE`].
    pub const TOO_LARGE: u64 = 2;
    /// The request's deadline passed before the handler answered.
    pub const DEADLINE_EXCEEDED: u64 = 3;
    /// The handler failed (panicked) while answering.
    pub const HANDLER_FAILED: u64 = 4;
    /// The node is shutting down (also its connection close code).
    pub const SHUTTING_DOWN: u64 = 5;
    /// A connection or stream the protocol does not allow (wrong ALPN).
    pub const PROTOCOL: u64 = 6;
}

/// One message with its header, as it travels on a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<T> {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub protocol_version: u16,
    /// Chosen by the requester, unique per requester; the response carries
    /// the same id.
    pub request_id: u64,
    /// Milliseconds the requester still waits for the response (0 in
    /// responses).
    pub deadline_ms: u32,
    /// The sender's listen address.
    pub from: SocketAddr,
    /// The message.
    pub body: T,
}

impl<T> Envelope<T> {
    /// An envelope of the current protocol version.
    pub fn new(request_id: u64, deadline_ms: u32, from: SocketAddr, body: T) -> Self {
        Envelope {
            protocol_version: PROTOCOL_VERSION,
            request_id,
            deadline_ms,
            from,
            body,
        }
    }
}

#[derive(Serialize)]
struct WireRef<'a, T> {
    request_id: u64,
    deadline_ms: u32,
    from: SocketAddr,
    body: &'a T,
}

#[derive(Deserialize)]
struct Wire<T> {
    request_id: u64,
    deadline_ms: u32,
    from: SocketAddr,
    body: T,
}

fn codec() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME_SIZE>()
}

/// The deadline to put in an envelope for a request that waits `timeout`:
/// whole milliseconds rounded up, at least 1, at most `u32::MAX`.
pub fn deadline_ms(timeout: Duration) -> u32 {
    let ms = timeout.as_nanos().div_ceil(1_000_000).max(1);
    u32::try_from(ms).unwrap_or(u32::MAX)
}

/// Encodes `envelope` as a frame (length prefix included).
///
/// Fails with [`NetError::TooLarge`] when the frame would exceed
/// [`MAX_FRAME_SIZE`], or [`NetError::Malformed`] when the body cannot be
/// serialized.
pub fn encode_frame<T: Serialize>(envelope: &Envelope<T>) -> Result<Vec<u8>, NetError> {
    // Room for a message carrying one YCSB-sized row: growing from a
    // small buffer reallocated and copied it five times.
    let mut buf = Vec::with_capacity(1536);
    buf.extend_from_slice(&[0; LENGTH_PREFIX]);
    buf.extend_from_slice(&envelope.protocol_version.to_be_bytes());
    let wire = WireRef {
        request_id: envelope.request_id,
        deadline_ms: envelope.deadline_ms,
        from: envelope.from,
        body: &envelope.body,
    };
    bincode::serde::encode_into_std_write(&wire, &mut buf, codec()).map_err(|e| {
        NetError::Malformed {
            reason: format!("cannot encode message: {e}"),
        }
    })?;
    let len = buf.len() - LENGTH_PREFIX;
    if len > MAX_FRAME_SIZE {
        return Err(NetError::TooLarge {
            size: len,
            max: MAX_FRAME_SIZE,
        });
    }
    let prefix = u32::try_from(len).map_err(|_| NetError::TooLarge {
        size: len,
        max: MAX_FRAME_SIZE,
    })?;
    buf[..LENGTH_PREFIX].copy_from_slice(&prefix.to_be_bytes());
    Ok(buf)
}

/// The frame a node sends in answer to a request of another protocol
/// version: only its own version.
pub fn version_only_frame() -> Vec<u8> {
    let mut buf = Vec::with_capacity(LENGTH_PREFIX + VERSION_LEN);
    buf.extend_from_slice(&(VERSION_LEN as u32).to_be_bytes());
    buf.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    buf
}

/// Checks the length prefix and reads the protocol version of a complete
/// frame; returns the bytes after the version.
fn frame_payload(frame: &[u8]) -> Result<(u16, &[u8]), NetError> {
    let Some((prefix, rest)) = frame.split_first_chunk::<LENGTH_PREFIX>() else {
        return Err(NetError::Malformed {
            reason: format!(
                "truncated frame: {} bytes, shorter than the {LENGTH_PREFIX}-byte length prefix",
                frame.len()
            ),
        });
    };
    let len = u32::from_be_bytes(*prefix) as usize;
    if len > MAX_FRAME_SIZE {
        return Err(NetError::TooLarge {
            size: len,
            max: MAX_FRAME_SIZE,
        });
    }
    if rest.len() != len {
        return Err(NetError::Malformed {
            reason: format!(
                "length prefix says {len} bytes but the frame has {} after it",
                rest.len()
            ),
        });
    }
    let Some((version, payload)) = rest.split_first_chunk::<VERSION_LEN>() else {
        return Err(NetError::Malformed {
            reason: format!("frame of {len} bytes has no protocol version"),
        });
    };
    Ok((u16::from_be_bytes(*version), payload))
}

/// The protocol version of a complete frame, if its length prefix is right.
pub fn frame_version(frame: &[u8]) -> Result<u16, NetError> {
    frame_payload(frame).map(|(v, _)| v)
}

/// Decodes a complete frame (length prefix included) whose body is a `T`.
///
/// Errors: [`NetError::TooLarge`] for a length prefix over
/// [`MAX_FRAME_SIZE`], [`NetError::VersionMismatch`] for another protocol
/// version (the body is then not looked at), [`NetError::Malformed`] for
/// everything else (truncated, trailing bytes, a body that is not a `T`).
/// Never panics, whatever the bytes.
pub fn decode_frame<T: DeserializeOwned>(frame: &[u8]) -> Result<Envelope<T>, NetError> {
    let (version, payload) = frame_payload(frame)?;
    if version != PROTOCOL_VERSION {
        return Err(NetError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: version,
        });
    }
    let (wire, used): (Wire<T>, usize) = bincode::serde::decode_from_slice(payload, codec())
        .map_err(|e| NetError::Malformed {
            reason: format!("body of {} bytes does not decode: {e}", payload.len()),
        })?;
    if used != payload.len() {
        return Err(NetError::Malformed {
            reason: format!(
                "{} trailing bytes after a body of {used} bytes",
                payload.len() - used
            ),
        });
    }
    Ok(Envelope {
        protocol_version: version,
        request_id: wire.request_id,
        deadline_ms: wire.deadline_ms,
        from: wire.from,
        body: wire.body,
    })
}

/// Bytes a datagram's header takes for a sender whose listen address is
/// `from`; the payload may use the rest of the path's datagram size.
pub fn datagram_header_len(from: SocketAddr) -> usize {
    VERSION_LEN
        + bincode::serde::encode_to_vec(from, codec())
            .map(|v| v.len())
            .unwrap_or(32)
}

/// Encodes a datagram from `from` carrying `payload`.
pub fn encode_datagram(from: SocketAddr, payload: &[u8]) -> Result<Bytes, NetError> {
    let header = bincode::serde::encode_to_vec(from, codec()).map_err(|e| NetError::Malformed {
        reason: format!("cannot encode datagram header: {e}"),
    })?;
    let mut buf = BytesMut::with_capacity(VERSION_LEN + header.len() + payload.len());
    buf.put_u16(PROTOCOL_VERSION);
    buf.put_slice(&header);
    buf.put_slice(payload);
    Ok(buf.freeze())
}

/// Decodes a datagram: the sender's listen address and the payload (a
/// zero-copy slice of `datagram`). Never panics, whatever the bytes.
pub fn decode_datagram(datagram: &Bytes) -> Result<(SocketAddr, Bytes), NetError> {
    let Some((version, rest)) = datagram.split_first_chunk::<VERSION_LEN>() else {
        return Err(NetError::Malformed {
            reason: format!(
                "datagram of {} bytes has no protocol version",
                datagram.len()
            ),
        });
    };
    let version = u16::from_be_bytes(*version);
    if version != PROTOCOL_VERSION {
        return Err(NetError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: version,
        });
    }
    let (from, used): (SocketAddr, usize) = bincode::serde::decode_from_slice(rest, codec())
        .map_err(|e| NetError::Malformed {
            reason: format!("datagram header does not decode: {e}"),
        })?;
    Ok((from, datagram.slice(VERSION_LEN + used..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 7000))
    }

    #[test]
    fn frame_round_trip() {
        let env = Envelope::new(42, 1500, addr(), vec!["a".to_string(), "b".to_string()]);
        let frame = encode_frame(&env).expect("encode");
        assert_eq!(frame_version(&frame), Ok(PROTOCOL_VERSION));
        assert_eq!(decode_frame::<Vec<String>>(&frame), Ok(env));
    }

    #[test]
    fn truncated_and_wrong_frames_are_typed_errors() {
        let frame = encode_frame(&Envelope::new(1, 1, addr(), 7u64)).expect("encode");
        for cut in 0..frame.len() {
            assert!(matches!(
                decode_frame::<u64>(&frame[..cut]),
                Err(NetError::Malformed { .. })
            ));
        }
        let mut huge = frame.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decode_frame::<u64>(&huge),
            Err(NetError::TooLarge { .. })
        ));
        let mut other = frame.clone();
        other[4..6].copy_from_slice(&(PROTOCOL_VERSION + 1).to_be_bytes());
        assert_eq!(
            decode_frame::<u64>(&other),
            Err(NetError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: PROTOCOL_VERSION + 1
            })
        );
        assert!(matches!(
            decode_frame::<u64>(&version_only_frame()),
            Err(NetError::Malformed { .. })
        ));
    }

    #[test]
    fn datagram_round_trip() {
        let d = encode_datagram(addr(), b"gossip").expect("encode");
        assert_eq!(d.len(), datagram_header_len(addr()) + 6);
        let (from, payload) = decode_datagram(&d).expect("decode");
        assert_eq!(from, addr());
        assert_eq!(&payload[..], b"gossip");
    }

    #[test]
    fn deadline_rounds_up() {
        assert_eq!(deadline_ms(Duration::from_micros(1)), 1);
        assert_eq!(deadline_ms(Duration::from_millis(250)), 250);
        assert_eq!(deadline_ms(Duration::from_secs(u64::MAX)), u32::MAX);
    }
}
