//! Request handling shared by the QUIC and the simulated transport: what a
//! node does with a request frame it received, and how a requester reads the
//! response frame. Keeping it in one place means the simulation exercises the
//! same codec and the same rejection paths as production.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;

use super::frame::{self, code, Envelope};
use super::{Handler, Message, NetError, NetStats};

/// Answers one request frame: `Ok(response frame)` or `Err(stream code)`
/// when the request is rejected (the QUIC transport then resets the stream
/// with that code).
///
/// `peer` is the transport-level address the frame came from (for logs).
pub(crate) async fn serve_request<Req: Message, Resp: Message>(
    handler: Arc<dyn Handler<Req, Resp>>,
    stats: Arc<NetStats>,
    local: SocketAddr,
    peer: SocketAddr,
    frame: Bytes,
) -> Result<Vec<u8>, u64> {
    let envelope: Envelope<Req> = match frame::decode_frame(&frame) {
        Ok(envelope) => envelope,
        Err(NetError::VersionMismatch { ours, theirs }) => {
            stats.inc_version_mismatches();
            tracing::warn!(%peer, ours, theirs, "request of another protocol version; answering with ours");
            return Ok(frame::version_only_frame());
        }
        Err(err) => {
            stats.inc_malformed();
            tracing::warn!(%peer, %err, "rejecting malformed request frame");
            return Err(match err {
                NetError::TooLarge { .. } => code::TOO_LARGE,
                _ => code::MALFORMED,
            });
        }
    };
    stats.inc_requests_in();
    let deadline = Duration::from_millis(u64::from(envelope.deadline_ms));
    // A panic in the handler is contained and reported to the requester
    // instead of unwinding through the task serving the request.
    let handling = match catch_unwind(AssertUnwindSafe(|| {
        handler.on_request(envelope.from, envelope.body)
    })) {
        Ok(future) => Contained(future),
        Err(_) => {
            tracing::error!(%peer, request_id = envelope.request_id, "request handler panicked");
            return Err(code::HANDLER_FAILED);
        }
    };
    let response = match tokio::time::timeout(deadline, handling).await {
        Ok(Ok(response)) => response,
        Ok(Err(_)) => {
            tracing::error!(%peer, request_id = envelope.request_id, "request handler panicked");
            return Err(code::HANDLER_FAILED);
        }
        Err(_) => {
            stats.inc_deadlines_exceeded();
            tracing::debug!(%peer, request_id = envelope.request_id, "request deadline passed in the handler");
            return Err(code::DEADLINE_EXCEEDED);
        }
    };
    match frame::encode_frame(&Envelope::new(envelope.request_id, 0, local, response)) {
        Ok(frame) => Ok(frame),
        Err(err) => {
            tracing::error!(%peer, request_id = envelope.request_id, %err, "cannot encode response");
            Err(match err {
                NetError::TooLarge { .. } => code::TOO_LARGE,
                _ => code::HANDLER_FAILED,
            })
        }
    }
}

/// A future whose panics are caught: it resolves to `Err` (and must not be
/// polled again) when polling the inner future panics. Contains a failing
/// request without the cost of a task of its own.
pub(crate) struct Contained<F>(pub(crate) F);

impl<F: Future + Unpin> Future for Contained<F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match catch_unwind(AssertUnwindSafe(|| Pin::new(&mut self.0).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// Decodes the response frame to request `request_id` sent to `peer`,
/// counting what is wrong with it.
pub(crate) fn read_response<Resp: Message>(
    stats: &NetStats,
    peer: SocketAddr,
    request_id: u64,
    frame: &[u8],
) -> Result<Resp, NetError> {
    match frame::decode_frame::<Resp>(frame) {
        Ok(envelope) if envelope.request_id == request_id => Ok(envelope.body),
        Ok(envelope) => {
            stats.inc_malformed();
            Err(NetError::Protocol {
                peer,
                reason: format!(
                    "response carries request id {} but answers request {request_id}",
                    envelope.request_id
                ),
            })
        }
        Err(err @ NetError::VersionMismatch { .. }) => {
            stats.inc_version_mismatches();
            Err(err)
        }
        Err(err) => {
            stats.inc_malformed();
            tracing::warn!(%peer, request_id, %err, "malformed response");
            Err(err)
        }
    }
}

/// Delivers one datagram to the handler, or counts why not.
pub(crate) fn deliver_datagram<Req: Message, Resp: Message>(
    handler: &dyn Handler<Req, Resp>,
    stats: &NetStats,
    peer: SocketAddr,
    datagram: Bytes,
) {
    match frame::decode_datagram(&datagram) {
        Ok((from, payload)) => {
            stats.inc_datagrams_in();
            handler.on_datagram(from, payload);
        }
        Err(err) => {
            if matches!(err, NetError::VersionMismatch { .. }) {
                stats.inc_version_mismatches();
            } else {
                stats.inc_malformed();
            }
            stats.inc_datagrams_dropped();
            tracing::debug!(%peer, %err, "dropping bad datagram");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{BoxFuture, PROTOCOL_VERSION};

    struct Double;

    impl Handler<u64, u64> for Double {
        fn on_request(&self, _from: SocketAddr, req: u64) -> BoxFuture<'static, u64> {
            Box::pin(async move {
                if req == 0 {
                    panic!("the handler fails on 0");
                }
                req * 2
            })
        }

        fn on_datagram(&self, _from: SocketAddr, _payload: Bytes) {}
    }

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 7000))
    }

    fn with_version(mut frame: Vec<u8>, version: u16) -> Vec<u8> {
        frame[4..6].copy_from_slice(&version.to_be_bytes());
        frame
    }

    #[tokio::test]
    async fn versions_ids_and_failures_are_typed() {
        let stats = Arc::new(NetStats::default());
        let handler: Arc<dyn Handler<u64, u64>> = Arc::new(Double);
        let serve = |frame: Vec<u8>| {
            serve_request(handler.clone(), stats.clone(), addr(), addr(), frame.into())
        };

        let request = frame::encode_frame(&Envelope::new(5, 1000, addr(), 21u64)).expect("encode");
        let response = serve(request.clone()).await.expect("answered");
        assert_eq!(read_response::<u64>(&stats, addr(), 5, &response), Ok(42));
        // A response to another request is a protocol error.
        assert!(matches!(
            read_response::<u64>(&stats, addr(), 6, &response),
            Err(NetError::Protocol { .. })
        ));

        // A request of a future version is answered with our version only;
        // a requester of that future version reads it as a mismatch.
        let answer = serve(with_version(request.clone(), PROTOCOL_VERSION + 1)).await;
        assert_eq!(answer, Ok(frame::version_only_frame()));
        let theirs = with_version(response, PROTOCOL_VERSION + 1);
        assert_eq!(
            read_response::<u64>(&stats, addr(), 5, &theirs),
            Err(NetError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: PROTOCOL_VERSION + 1
            })
        );

        // A panicking handler is contained and reported.
        let failing = frame::encode_frame(&Envelope::new(7, 1000, addr(), 0u64)).expect("encode");
        assert_eq!(serve(failing).await, Err(code::HANDLER_FAILED));
        assert_eq!(
            NetError::from_stream_code(addr(), code::HANDLER_FAILED, Duration::ZERO),
            NetError::Protocol {
                peer: addr(),
                reason: "peer's request handler failed".into()
            }
        );

        let s = stats.snapshot();
        assert_eq!(
            (s.requests_in, s.version_mismatches, s.malformed),
            (2, 2, 1)
        );
    }
}
