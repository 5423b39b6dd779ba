//! Many requests on one long-lived stream: the framing of a *request
//! lane*.
//!
//! Opening a QUIC stream per request costs stream state on both ends, a
//! task to serve it and flow-control bookkeeping for every request. A lane
//! is one bidirectional stream a requester opens once per connection and
//! keeps: requests go one way and responses come back the other, each
//! tagged with its request id, so many requests are in flight on the lane
//! at once and answered in any order. Both the node-to-node transport
//! ([`super::quic`]) and the client protocol use lanes; on YCSB they cut
//! the servers' CPU per operation by about a tenth (docs/performance.md,
//! "Request lanes").
//!
//! A lane starts with [`LANE_MAGIC`] (four bytes that can never be the
//! length prefix of a request frame, so the server tells a lane from a
//! one-request stream by its first bytes). After it, each direction is a
//! sequence of chunks:
//!
//! ```text
//! chunk: request_id u64 BE | kind u8 | length u32 BE | length bytes
//! kind:  0 = a part of a message, more parts follow
//!        1 = the last (often the only) part of a message
//!        2 = a rejection: 8 bytes, a stream error code (frame::code)
//! ```
//!
//! A message is the same frame a one-request stream carries
//! ([`super::frame`]). Messages longer than [`MAX_CHUNK`] are cut into
//! parts, and the writer sends the parts of all waiting messages in turn,
//! so a large response does not hold back the small ones queued behind it.
//! The reader joins the parts again, within limits; anything that breaks
//! the framing (an unknown kind, a chunk or a message over its limit, a
//! rejection where none may be) is a [`LaneError`] that ends the lane:
//! with request ids in the stream, nothing after a framing error can be
//! trusted.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{Buf, Bytes};

use super::budget::{ByteBudget, Charge};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// The first bytes of a lane. As a frame length prefix it would announce
/// 1.3 GB, far over [`super::MAX_FRAME_SIZE`], so no request frame starts
/// with it.
pub const LANE_MAGIC: [u8; 4] = *b"RLN1";

/// Largest chunk payload: messages longer than this are sent in parts.
pub const MAX_CHUNK: usize = 64 * 1024;

/// Bytes of unfinished requests a server holds for one lane (requests on
/// a lane are at most `quic::LANE_MAX_REQUEST`, so this is hundreds of
/// them arriving in parts at once).
pub const MAX_BUFFERED_REQUESTS: usize = 64 * 1024 * 1024;

/// Bytes of unfinished answers a requester holds for one lane.
pub const MAX_BUFFERED_ANSWERS: usize = 256 * 1024 * 1024;

/// Bytes of a chunk header: request id, kind, length.
pub const CHUNK_HEADER: usize = 13;

/// How many bytes the writer gathers before handing them to the stream.
const WRITE_BATCH: usize = 128 * 1024;

const KIND_PART: u8 = 0;
const KIND_LAST: u8 = 1;
const KIND_REJECT: u8 = 2;

/// What a lane carries for one request id: a whole message (a frame), or a
/// rejection code instead of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaneMessage {
    /// A request or response frame.
    Frame(Bytes),
    /// The request was refused with this [`super::frame::code`].
    Reject(u64),
}

/// Why a lane stopped making sense. Each ends the lane.
#[derive(Debug, thiserror::Error)]
pub enum LaneError {
    /// The stream failed or ended in the middle of a chunk.
    #[error("lane stream failed: {0}")]
    Io(#[from] io::Error),
    /// A chunk header named a kind this version does not know.
    #[error("chunk of unknown kind {kind} for request {request_id}")]
    UnknownKind {
        /// The request id in the header.
        request_id: u64,
        /// The kind byte.
        kind: u8,
    },
    /// A chunk longer than [`MAX_CHUNK`].
    #[error("chunk of {len} bytes for request {request_id}; at most {MAX_CHUNK}")]
    ChunkTooLarge {
        /// The request id in the header.
        request_id: u64,
        /// The announced length.
        len: usize,
    },
    /// A message whose parts add up to more than the reader accepts.
    #[error("message for request {request_id} grew to {len} bytes; at most {max}")]
    MessageTooLarge {
        /// The request id of the message.
        request_id: u64,
        /// Its length so far.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Unfinished messages held more bytes than the reader accepts.
    #[error("unfinished messages hold {len} bytes; at most {max}")]
    TooMuchBuffered {
        /// Bytes held.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Unfinished messages would take the server past its budget of
    /// request bytes across all connections ([`super::budget`]).
    #[error(
        "unfinished messages would take the server past its {limit} bytes of requests in flight"
    )]
    Overloaded {
        /// The budget's limit.
        limit: usize,
    },
    /// A part of a message with no bytes (writers never send one; it could
    /// only make the reader keep state for nothing).
    #[error("empty part of a message for request {request_id}")]
    EmptyPart {
        /// The request id in the header.
        request_id: u64,
    },
    /// A rejection chunk where rejections may not be sent (a requester
    /// cannot reject), or one that is not 8 bytes long.
    #[error("unexpected rejection chunk for request {request_id}")]
    BadReject {
        /// The request id in the header.
        request_id: u64,
    },
}

impl LaneError {
    /// The stream error code to reset the lane with.
    pub fn stream_code(&self) -> u64 {
        use super::frame::code;
        match self {
            LaneError::MessageTooLarge { .. }
            | LaneError::TooMuchBuffered { .. }
            | LaneError::Overloaded { .. } => code::TOO_LARGE,
            _ => code::MALFORMED,
        }
    }
}

/// One message for the writer to send.
#[derive(Debug)]
pub struct Outgoing {
    /// The request id the message belongs to.
    pub request_id: u64,
    /// The message.
    pub message: LaneMessage,
}

/// Sends the messages arriving on `queue` over `out`, in chunks, the parts
/// of long messages in turn with the others, until every sender of `queue`
/// is dropped; then shuts `out` down. `preamble` is written first (the
/// requester's [`LANE_MAGIC`]).
pub async fn write_lane<W: AsyncWrite + Unpin>(
    mut out: W,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
    preamble: &[u8],
) -> io::Result<()> {
    let mut waiting: VecDeque<(u64, u8, Bytes)> = VecDeque::new();
    let mut batch: Vec<u8> = Vec::with_capacity(WRITE_BATCH + CHUNK_HEADER + MAX_CHUNK);
    batch.extend_from_slice(preamble);
    let enqueue = |waiting: &mut VecDeque<(u64, u8, Bytes)>, outgoing: Outgoing| {
        let (kind, bytes) = match outgoing.message {
            LaneMessage::Frame(bytes) => (KIND_LAST, bytes),
            LaneMessage::Reject(code) => (KIND_REJECT, Bytes::copy_from_slice(&code.to_be_bytes())),
        };
        waiting.push_back((outgoing.request_id, kind, bytes));
    };
    loop {
        if waiting.is_empty() {
            if !batch.is_empty() {
                out.write_all(&batch).await?;
                batch.clear();
            }
            match queue.recv().await {
                Some(outgoing) => enqueue(&mut waiting, outgoing),
                None => return out.shutdown().await,
            }
        }
        while let Ok(outgoing) = queue.try_recv() {
            enqueue(&mut waiting, outgoing);
        }
        // One round: a chunk of each waiting message, until the batch is full.
        let mut turns = waiting.len();
        while turns > 0 && batch.len() < WRITE_BATCH {
            turns -= 1;
            let Some((request_id, last_kind, mut rest)) = waiting.pop_front() else {
                break;
            };
            let take = rest.len().min(MAX_CHUNK);
            let kind = if take == rest.len() {
                last_kind
            } else {
                KIND_PART
            };
            batch.extend_from_slice(&request_id.to_be_bytes());
            batch.push(kind);
            batch.extend_from_slice(&(take as u32).to_be_bytes());
            batch.extend_from_slice(&rest[..take]);
            rest.advance(take);
            if kind == KIND_PART {
                waiting.push_back((request_id, last_kind, rest));
            }
        }
        if batch.len() >= WRITE_BATCH || waiting.is_empty() {
            out.write_all(&batch).await?;
            batch.clear();
        }
    }
}

/// Reads the chunks of one direction of a lane and joins them into
/// messages.
pub struct LaneReader<R> {
    input: R,
    /// Parts received of unfinished messages, by request id.
    partial: HashMap<u64, Vec<u8>>,
    partial_bytes: usize,
    max_message: usize,
    max_buffered: usize,
    rejects_allowed: bool,
    /// The server-wide budget the unfinished messages are charged to, if
    /// any (`partial_bytes` of it).
    charge: Option<Charge>,
}

impl<R: AsyncRead + Unpin> LaneReader<R> {
    /// A reader of `input` (after the [`LANE_MAGIC`], which the caller has
    /// read) accepting messages up to `max_message` bytes, at most
    /// `max_buffered` bytes of unfinished ones at a time, and rejection
    /// chunks only if `rejects_allowed` (on the requester's side).
    pub fn new(input: R, max_message: usize, max_buffered: usize, rejects_allowed: bool) -> Self {
        LaneReader {
            input,
            partial: HashMap::new(),
            partial_bytes: 0,
            max_message,
            max_buffered,
            rejects_allowed,
            charge: None,
        }
    }

    /// Charges the bytes of unfinished messages to `budget` as well: a part
    /// that would take it past its limit ends the lane
    /// ([`LaneError::Overloaded`]).
    pub fn with_budget(mut self, budget: &Arc<ByteBudget>) -> Self {
        self.charge = Some(budget.empty_charge());
        self
    }

    /// The stream this reader reads.
    pub fn into_inner(self) -> R {
        self.input
    }

    /// The next whole message, or `None` when the stream ended cleanly
    /// between chunks.
    pub async fn next(&mut self) -> Result<Option<(u64, LaneMessage)>, LaneError> {
        loop {
            let mut header = [0u8; CHUNK_HEADER];
            // A clean end is an end before the first byte of a header.
            match self.input.read(&mut header[..1]).await? {
                0 => return Ok(None),
                _ => self.input.read_exact(&mut header[1..]).await?,
            };
            let request_id = u64::from_be_bytes(header[0..8].try_into().unwrap_or([0; 8]));
            let kind = header[8];
            let len = u32::from_be_bytes(header[9..13].try_into().unwrap_or([0; 4])) as usize;
            if len > MAX_CHUNK {
                return Err(LaneError::ChunkTooLarge { request_id, len });
            }
            match kind {
                KIND_REJECT => {
                    if !self.rejects_allowed || len != 8 || self.partial.contains_key(&request_id) {
                        return Err(LaneError::BadReject { request_id });
                    }
                    let mut code = [0u8; 8];
                    self.input.read_exact(&mut code).await?;
                    return Ok(Some((
                        request_id,
                        LaneMessage::Reject(u64::from_be_bytes(code)),
                    )));
                }
                KIND_PART if len == 0 => return Err(LaneError::EmptyPart { request_id }),
                KIND_PART | KIND_LAST => {}
                kind => return Err(LaneError::UnknownKind { request_id, kind }),
            }
            let earlier = self.partial.get(&request_id).map_or(0, Vec::len);
            if earlier + len > self.max_message {
                return Err(LaneError::MessageTooLarge {
                    request_id,
                    len: earlier + len,
                    max: self.max_message,
                });
            }
            if kind == KIND_LAST && earlier == 0 {
                // The common case: a message in one chunk, read in place.
                self.partial.remove(&request_id);
                let mut body = vec![0u8; len];
                self.input.read_exact(&mut body).await?;
                return Ok(Some((request_id, LaneMessage::Frame(Bytes::from(body)))));
            }
            if kind == KIND_PART && self.partial_bytes + len > self.max_buffered {
                return Err(LaneError::TooMuchBuffered {
                    len: self.partial_bytes + len,
                    max: self.max_buffered,
                });
            }
            if let Some(charge) = &mut self.charge {
                if !charge.try_grow(len) {
                    return Err(LaneError::Overloaded {
                        limit: charge.limit(),
                    });
                }
            }
            let buffer = self.partial.entry(request_id).or_default();
            buffer.resize(earlier + len, 0);
            self.input.read_exact(&mut buffer[earlier..]).await?;
            self.partial_bytes += len;
            if kind == KIND_LAST {
                let body = self.partial.remove(&request_id).unwrap_or_default();
                self.partial_bytes -= body.len();
                if let Some(charge) = &mut self.charge {
                    charge.shrink(body.len());
                }
                return Ok(Some((request_id, LaneMessage::Frame(Bytes::from(body)))));
            }
        }
    }
}

/// What a server holds to one lane.
#[derive(Debug, Clone, Copy)]
pub struct LaneLimits {
    /// Requests served at once; reading waits for one to finish.
    pub max_in_flight: usize,
    /// Largest request, in bytes.
    pub max_request: usize,
    /// Bytes of unfinished requests held at a time.
    pub max_buffered: usize,
}

/// Serves the requests of one lane (after its [`LANE_MAGIC`], which the
/// caller has read): each request whole is given to `serve` with its id,
/// and what that resolves to is sent back under the same id as soon as it
/// is ready, at most `limits.max_in_flight` at a time. Returns when the
/// requester finishes its side or the stream fails (`Ok`, the error if it
/// was the stream's), or when the lane's chunks stop parsing (`Err` with
/// the stream, for the caller to stop it with [`LaneError::stream_code`]).
/// The answers owed are still sent after it returns. With a `budget`, the
/// unfinished requests are charged to it ([`LaneReader::with_budget`]).
pub async fn serve_lane<R, W, F, Fut>(
    recv: R,
    send: W,
    limits: LaneLimits,
    budget: Option<&Arc<ByteBudget>>,
    serve: F,
) -> Result<Option<io::Error>, (LaneError, R)>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
    F: Fn(u64, Bytes) -> Fut,
    Fut: std::future::Future<Output = LaneMessage> + Send + 'static,
{
    let (answers, queue) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        if let Err(e) = write_lane(send, queue, &[]).await {
            tracing::debug!(error = %e, "cannot send answers on a lane");
        }
    });
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_in_flight.max(1)));
    let mut reader = LaneReader::new(
        tokio::io::BufReader::with_capacity(READ_BUFFER, recv),
        limits.max_request,
        limits.max_buffered,
        false,
    );
    if let Some(budget) = budget {
        reader = reader.with_budget(budget);
    }
    loop {
        match reader.next().await {
            Ok(Some((request_id, LaneMessage::Frame(request)))) => {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return Ok(None);
                };
                let answering = serve(request_id, request);
                let answers = answers.clone();
                tokio::spawn(async move {
                    let message = answering.await;
                    let _ = answers.send(Outgoing {
                        request_id,
                        message,
                    });
                    drop(permit);
                });
            }
            // The reader takes no rejections here (`BadReject` instead).
            Ok(Some((_, LaneMessage::Reject(_)))) | Ok(None) => return Ok(None),
            Err(LaneError::Io(e)) => return Ok(Some(e)),
            Err(e) => return Err((e, reader.into_inner().into_inner())),
        }
    }
}

/// Why a lane ended, as its requester saw it.
#[derive(Debug)]
pub enum LaneEnd {
    /// The server finished its side: it will answer nothing more.
    Finished,
    /// Reading the lane failed (the stream or its framing).
    Failed(LaneError),
}

/// What a call on a lane got instead of an answer.
#[derive(Debug, Clone)]
pub enum CallError {
    /// The lane ended before the answer came (shared by every caller that
    /// was waiting).
    Ended(Arc<LaneEnd>),
    /// The lane had already ended when the call was made.
    Closed,
}

/// Where the answer to one request goes.
type Caller = oneshot::Sender<Result<LaneMessage, CallError>>;

/// The requester's end of a lane: a queue to the task writing it, and the
/// callers waiting for answers, which a task reading it hands out.
///
/// Dropping it ends the lane: the writer finishes the stream, the server
/// answers what it was sent and finishes its side, and the reading task
/// ends (it holds only the waiting callers, not the queue, so it does not
/// keep the lane, or its connection, alive).
pub struct LaneClient {
    outgoing: mpsc::UnboundedSender<Outgoing>,
    callers: Arc<Callers>,
}

/// The callers waiting on a lane, shared with the task reading it.
struct Callers {
    /// Waiting callers by request id; `None` once the lane has ended.
    waiting: Mutex<Option<HashMap<u64, Caller>>>,
    answered: AtomicBool,
}

impl LaneClient {
    /// Starts a lane on a stream already open: spawns the task writing
    /// `send` (first [`LANE_MAGIC`], then the requests) and the task
    /// reading `recv` (answers up to `max_message` bytes, at most
    /// `max_buffered` of unfinished ones). When the lane ends, every waiting
    /// caller gets the reason and `on_end` is called with it and whether
    /// any answer came before. Must be called inside a tokio runtime.
    pub fn start<R, W>(
        recv: R,
        send: W,
        max_message: usize,
        max_buffered: usize,
        on_end: impl FnOnce(&LaneEnd, bool) + Send + 'static,
    ) -> Arc<LaneClient>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (outgoing, queue) = mpsc::unbounded_channel();
        let callers = Arc::new(Callers {
            waiting: Mutex::new(Some(HashMap::new())),
            answered: AtomicBool::new(false),
        });
        let lane = Arc::new(LaneClient {
            outgoing,
            callers: callers.clone(),
        });
        tokio::spawn(async move {
            if let Err(e) = write_lane(send, queue, &LANE_MAGIC).await {
                tracing::debug!(error = %e, "request lane stopped sending");
            }
        });
        let reading = callers;
        tokio::spawn(async move {
            let input = tokio::io::BufReader::with_capacity(READ_BUFFER, recv);
            let mut reader = LaneReader::new(input, max_message, max_buffered, true);
            let end = loop {
                match reader.next().await {
                    Ok(Some((request_id, message))) => {
                        reading.answered.store(true, Ordering::Relaxed);
                        let caller = reading
                            .waiting
                            .lock()
                            .as_mut()
                            .and_then(|waiting| waiting.remove(&request_id));
                        // No caller: it gave up before the answer came.
                        if let Some(caller) = caller {
                            let _ = caller.send(Ok(message));
                        }
                    }
                    Ok(None) => break LaneEnd::Finished,
                    Err(e) => break LaneEnd::Failed(e),
                }
            };
            let end = Arc::new(end);
            let waiting = reading.waiting.lock().take();
            // Before the callers hear of it, so that what `on_end` decides
            // (say, to stop opening lanes) holds for their next request.
            on_end(&end, reading.answered.load(Ordering::Relaxed));
            for (_, caller) in waiting.into_iter().flatten() {
                let _ = caller.send(Err(CallError::Ended(end.clone())));
            }
        });
        lane
    }

    /// Whether the lane still takes requests: its writer and its reader
    /// both run.
    pub fn is_open(&self) -> bool {
        !self.outgoing.is_closed() && self.callers.waiting.lock().is_some()
    }

    /// Sends one request (a whole frame) tagged `request_id`, unique among
    /// this lane's requests in flight, and waits for its answer. A caller
    /// that stops waiting (its timeout) leaves nothing behind; an answer
    /// that comes later is dropped.
    pub async fn call(&self, request_id: u64, frame: Bytes) -> Result<LaneMessage, CallError> {
        let (tx, rx) = oneshot::channel();
        match self.callers.waiting.lock().as_mut() {
            Some(waiting) => {
                waiting.insert(request_id, tx);
            }
            None => return Err(CallError::Closed),
        }
        let _forget = ForgetOnDrop {
            lane: self,
            request_id,
        };
        let outgoing = Outgoing {
            request_id,
            message: LaneMessage::Frame(frame),
        };
        if self.outgoing.send(outgoing).is_err() {
            return Err(CallError::Closed);
        }
        rx.await.unwrap_or(Err(CallError::Closed))
    }
}

struct ForgetOnDrop<'a> {
    lane: &'a LaneClient,
    request_id: u64,
}

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(waiting) = self.lane.callers.waiting.lock().as_mut() {
            waiting.remove(&self.request_id);
        }
    }
}

/// Read buffer of a lane: one read from the stream takes many chunks.
pub const READ_BUFFER: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    }

    /// Writes `messages` through a lane into a pipe and reads them back.
    async fn round_trip(
        messages: Vec<(u64, LaneMessage)>,
        max_message: usize,
    ) -> Result<Vec<(u64, LaneMessage)>, LaneError> {
        let (a, b) = tokio::io::duplex(16 * 1024);
        let (tx, rx) = mpsc::unbounded_channel();
        for (request_id, message) in messages {
            tx.send(Outgoing {
                request_id,
                message,
            })
            .expect("queue");
        }
        drop(tx);
        let writer = tokio::spawn(write_lane(a, rx, &LANE_MAGIC));
        let mut b = b;
        let mut magic = [0u8; 4];
        b.read_exact(&mut magic).await?;
        assert_eq!(magic, LANE_MAGIC);
        let mut reader = LaneReader::new(b, max_message, 32 * max_message, true);
        let mut got = Vec::new();
        while let Some(message) = reader.next().await? {
            got.push(message);
        }
        writer.await.expect("writer task")?;
        Ok(got)
    }

    fn message(id: u64, len: usize) -> (u64, LaneMessage) {
        let body: Vec<u8> = (0..len).map(|i| (i as u64 ^ id) as u8).collect();
        (id, LaneMessage::Frame(Bytes::from(body)))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Every message arrives whole; messages of one chunk keep their
        /// order, and long ones arrive no earlier than the short ones sent
        /// after them would allow.
        #[test]
        fn messages_arrive_whole(
            lens in proptest::collection::vec(
                prop_oneof![0usize..200, 1000usize..3000, (MAX_CHUNK - 2)..(3 * MAX_CHUNK + 5)],
                0..24,
            ),
            reject_at in proptest::option::of(0usize..24),
        ) {
            let mut sent: Vec<(u64, LaneMessage)> = lens
                .iter()
                .enumerate()
                .map(|(i, &len)| message(i as u64 * 7 + 1, len))
                .collect();
            if let Some(i) = reject_at.filter(|&i| i < sent.len()) {
                sent[i].1 = LaneMessage::Reject(3);
            }
            let got = runtime()
                .block_on(round_trip(sent.clone(), 4 * MAX_CHUNK))
                .expect("round trip");
            let mut by_id: HashMap<u64, LaneMessage> = sent.iter().cloned().collect();
            prop_assert_eq!(got.len(), sent.len());
            for (id, message) in &got {
                prop_assert_eq!(by_id.remove(id), Some(message.clone()));
            }
            // Single-chunk messages keep the order they were sent in.
            let small = |list: &[(u64, LaneMessage)]| -> Vec<u64> {
                list.iter()
                    .filter(|(_, m)| !matches!(m, LaneMessage::Frame(b) if b.len() > MAX_CHUNK))
                    .map(|(id, _)| *id)
                    .collect()
            };
            prop_assert_eq!(small(&got), small(&sent));
        }

        /// Random bytes after the magic are a typed error or clean
        /// messages, never a panic, and never more than the limits allow.
        #[test]
        fn garbage_is_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let result: Result<Vec<(u64, LaneMessage)>, LaneError> = runtime().block_on(async {
                let mut reader = LaneReader::new(&bytes[..], 100, 150, false);
                let mut got = Vec::new();
                while let Some(message) = reader.next().await? {
                    got.push(message);
                }
                Ok(got)
            });
            if let Ok(got) = result {
                for (_, message) in got {
                    match message {
                        LaneMessage::Frame(body) => prop_assert!(body.len() <= 100),
                        LaneMessage::Reject(_) => prop_assert!(false, "a server reader took a rejection"),
                    }
                }
            }
        }
    }

    /// Chunk bytes as a writer sends them: header then payload.
    fn chunk(request_id: u64, kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = request_id.to_be_bytes().to_vec();
        out.push(kind);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn unfinished_messages_are_charged_to_the_budget_and_refused_past_it() {
        let part = vec![7u8; 1000];
        // Two messages in two parts each, interleaved: at most 2,000 bytes
        // unfinished at once (the second parts complete them).
        let mut bytes = chunk(1, KIND_PART, &part);
        bytes.extend(chunk(2, KIND_PART, &part));
        bytes.extend(chunk(1, KIND_LAST, &part));
        bytes.extend(chunk(2, KIND_LAST, &part));
        let read_all = |budget: &Arc<ByteBudget>| {
            runtime().block_on(async {
                let mut reader =
                    LaneReader::new(&bytes[..], 10_000, 10_000, false).with_budget(budget);
                let mut got = Vec::new();
                while let Some((id, _)) = reader.next().await? {
                    got.push((id, budget.used()));
                }
                Ok::<_, LaneError>(got)
            })
        };
        // Room for both unfinished first parts (and a completing part on
        // top): both arrive, and what a finished message held comes back.
        let roomy = ByteBudget::new(3000);
        assert_eq!(
            read_all(&roomy).expect("within budget"),
            vec![(1, 1000), (2, 0)]
        );
        assert_eq!(roomy.used(), 0);
        // Room for one unfinished part only: the second is refused.
        let tight = ByteBudget::new(1500);
        assert!(matches!(
            read_all(&tight),
            Err(LaneError::Overloaded { limit: 1500 })
        ));
        assert_eq!(tight.used(), 0, "the reader's charge went with it");
        assert_eq!(tight.refusals(), 1);
    }

    #[test]
    fn a_long_message_does_not_hold_back_short_ones() {
        let sent = vec![message(1, 5 * MAX_CHUNK), message(2, 10), message(3, 10)];
        let got = runtime()
            .block_on(round_trip(sent, 8 * MAX_CHUNK))
            .expect("round trip");
        let order: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
        assert_eq!(order, vec![2, 3, 1]);
    }

    #[test]
    fn limits_are_typed_errors() {
        let rt = runtime();
        let chunk = |id: u64, kind: u8, len: u32| {
            let mut bytes = id.to_be_bytes().to_vec();
            bytes.push(kind);
            bytes.extend_from_slice(&len.to_be_bytes());
            bytes.resize(bytes.len() + len.min(1 << 20) as usize, 0);
            bytes
        };
        let read_all = |bytes: Vec<u8>, rejects: bool| {
            rt.block_on(async move {
                let mut reader = LaneReader::new(&bytes[..], 100, 150, rejects);
                let mut got = Vec::new();
                while let Some(message) = reader.next().await? {
                    got.push(message);
                }
                Ok::<_, LaneError>(got)
            })
        };
        assert!(matches!(
            read_all(chunk(1, 9, 0), true),
            Err(LaneError::UnknownKind {
                request_id: 1,
                kind: 9
            })
        ));
        assert!(matches!(
            read_all(chunk(1, KIND_LAST, MAX_CHUNK as u32 + 1), true),
            Err(LaneError::ChunkTooLarge { .. })
        ));
        assert!(matches!(
            read_all(
                [chunk(1, KIND_PART, 60), chunk(1, KIND_LAST, 60)].concat(),
                true
            ),
            Err(LaneError::MessageTooLarge {
                request_id: 1,
                len: 120,
                max: 100
            })
        ));
        assert!(matches!(
            read_all(
                [chunk(1, KIND_PART, 90), chunk(2, KIND_PART, 90)].concat(),
                true
            ),
            Err(LaneError::TooMuchBuffered { len: 180, max: 150 })
        ));
        assert!(matches!(
            read_all(chunk(3, KIND_PART, 0), true),
            Err(LaneError::EmptyPart { request_id: 3 })
        ));
        assert!(matches!(
            read_all(chunk(4, KIND_REJECT, 8), false),
            Err(LaneError::BadReject { request_id: 4 })
        ));
        // A stream cut inside a chunk is an error; one cut between chunks
        // is a clean end.
        let mut cut = chunk(5, KIND_LAST, 20);
        cut.truncate(20);
        assert!(matches!(read_all(cut, true), Err(LaneError::Io(_))));
        let whole = read_all(
            [chunk(5, KIND_LAST, 20), chunk(6, KIND_REJECT, 8)].concat(),
            true,
        )
        .expect("two messages");
        assert_eq!(
            whole,
            vec![
                (5, LaneMessage::Frame(Bytes::from(vec![0u8; 20]))),
                (6, LaneMessage::Reject(0))
            ]
        );
    }
}
