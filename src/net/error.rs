//! Errors of the transport layer.

use std::net::SocketAddr;
use std::time::Duration;

use super::frame::code;

/// Everything that can go wrong sending or receiving a message.
///
/// Errors that concern one peer name it, so a log line tells which node
/// misbehaved or was unreachable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    /// No response within the timeout: the peer is slow or down, a message
    /// was lost, or the peer gave up because the request's deadline passed.
    #[error("request to {peer} timed out after {timeout:?}")]
    Timeout {
        /// The peer the request went to.
        peer: SocketAddr,
        /// The timeout of the request.
        timeout: Duration,
    },
    /// The peer cannot be contacted at all (invalid address, no route).
    #[error("{peer} is unreachable: {reason}")]
    Unreachable {
        /// The peer.
        peer: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The connection to the peer broke while the message was in flight.
    #[error("connection to {peer} lost: {reason}")]
    ConnectionLost {
        /// The peer.
        peer: SocketAddr,
        /// Why, as the QUIC stack reported it.
        reason: String,
    },
    /// The TLS handshake failed: one side's certificate is missing or not
    /// issued by the cluster CA, or the peer does not speak this ALPN.
    #[error("TLS handshake with {peer} failed: {reason}")]
    Tls {
        /// The peer.
        peer: SocketAddr,
        /// The TLS alert or error.
        reason: String,
    },
    /// The peer broke the protocol: a response to another request, a stream
    /// it should not have opened, a rejection code we do not know.
    #[error("protocol error with {peer}: {reason}")]
    Protocol {
        /// The peer.
        peer: SocketAddr,
        /// What it did.
        reason: String,
    },
    /// The message carries another protocol version than ours.
    #[error("protocol version mismatch: ours is {ours}, the message's is {theirs}")]
    VersionMismatch {
        /// [`super::PROTOCOL_VERSION`].
        ours: u16,
        /// The version in the message.
        theirs: u16,
    },
    /// Bytes that do not decode as a message.
    #[error("malformed message: {reason}")]
    Malformed {
        /// What was wrong, with byte counts where they help.
        reason: String,
    },
    /// A message larger than the limit ([`super::MAX_FRAME_SIZE`] for
    /// frames, the path's maximum for datagrams).
    #[error("message of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Size of the message.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// This transport was shut down (or, in the simulation, its node is
    /// killed).
    #[error("transport is closed")]
    Closed,
    /// The listen address could not be bound.
    #[error("cannot bind {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The operating system's error.
        reason: String,
    },
    /// The transport's configuration is invalid (TLS material, options).
    #[error("invalid network configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
}

impl NetError {
    /// Classifies a quinn connection error for `peer`.
    ///
    /// Connections closed with a TLS alert (QUIC crypto error codes
    /// 0x100..=0x1ff, raised on either side) become [`NetError::Tls`].
    pub fn from_connection(peer: SocketAddr, err: &quinn::ConnectionError) -> NetError {
        use quinn::ConnectionError as E;
        let is_crypto =
            |code: quinn::TransportErrorCode| (0x100..=0x1ff).contains(&u64::from(code));
        match err {
            E::TransportError(e) if is_crypto(e.code) => NetError::Tls {
                peer,
                reason: e.to_string(),
            },
            E::ConnectionClosed(c) if is_crypto(c.error_code) => NetError::Tls {
                peer,
                reason: format!("rejected by peer: {c}"),
            },
            E::VersionMismatch => NetError::Protocol {
                peer,
                reason: "peer supports no QUIC version of ours".into(),
            },
            E::TimedOut => NetError::ConnectionLost {
                peer,
                reason: "connection timed out (peer silent)".into(),
            },
            E::LocallyClosed => NetError::Closed,
            other => NetError::ConnectionLost {
                peer,
                reason: other.to_string(),
            },
        }
    }

    /// The error a requester reports when the peer rejected its request
    /// stream with the stream error code `stream_code` (see
    /// [`super::frame::code`]).
    pub fn from_stream_code(peer: SocketAddr, stream_code: u64, timeout: Duration) -> NetError {
        match stream_code {
            code::DEADLINE_EXCEEDED => NetError::Timeout { peer, timeout },
            code::MALFORMED => NetError::Protocol {
                peer,
                reason: "peer rejected our request as malformed".into(),
            },
            code::TOO_LARGE => NetError::Protocol {
                peer,
                reason: "peer rejected our request or its response as too large".into(),
            },
            code::HANDLER_FAILED => NetError::Protocol {
                peer,
                reason: "peer's request handler failed".into(),
            },
            code::SHUTTING_DOWN => NetError::ConnectionLost {
                peer,
                reason: "peer is shutting down".into(),
            },
            other => NetError::Protocol {
                peer,
                reason: format!("peer reset the stream with unknown code {other}"),
            },
        }
    }
}
