//! One client connection: handshake, then requests answered in order.
//!
//! Frames are `u32` big-endian length + payload, at most 64 KiB, decoded by tokio-util's
//! `LengthDelimitedCodec`. Answers to pipelined requests are buffered and written together
//! once no further complete request is waiting, so a pipelining client costs one write per
//! batch rather than one per answer. Anything malformed gets an error answer (id 0) and the
//! connection is closed; other connections are not affected.

use crate::access::Peer;
use crate::daemon::Daemon;
use crate::index::RUN_MAX;
use crate::server::admin::dispatch;
use crate::server::busy_poll;
use crate::server::input::{Filled, Input, READ_CHUNK};
use crate::server::pipelined_changes;
use crate::server::slots::Refusal;
use crate::server::socket::Socket;
use crate::server::verify_batch::VerifyBatch;
use authenta_client::proto::{
    self, ErrorAnswer, ErrorCode, Hello, HelloReply, Request, Response, ResponseBody,
    MAX_FRAME_LEN, PROTOCOL_VERSION,
};
use authenta_client::verify_wire::VerifyRequestRef;
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::net::UnixStream;
use tokio::sync::watch;
use tokio_util::bytes::Bytes;
use tokio_util::codec::{Framed, FramedParts, LengthDelimitedCodec};

/// How long a new connection has to say hello.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Once a frame's first byte has arrived, the rest must follow within this long, so a client
/// dribbling bytes cannot hold a connection slot forever. Idle connections between frames
/// are fine: apps keep pooled connections open.
const FRAME_DEADLINE: Duration = Duration::from_secs(5);
/// Answers must drain to the client within this long; one that stops reading is closed.
const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// Answers gathered before writing, when a client pipelines a great many requests.
const WRITE_AT: usize = 4 * READ_CHUNK;
/// Request bytes a connection answers before it lets the other connections on its thread
/// (and the thread's I/O driver) run: about 4,000 verifies.
const YIELD_AFTER: u64 = 256 * 1024;

type Transport = Framed<UnixStream, LengthDelimitedCodec>;

/// The codec both ends agree on: 4-byte big-endian length, 64 KiB at most.
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(MAX_FRAME_LEN)
        .new_codec()
}

/// Serves one connection until the client leaves, misbehaves, or the daemon shuts down.
pub async fn serve(
    stream: UnixStream,
    peer: Peer,
    daemon: &Daemon,
    mut shutdown: watch::Receiver<bool>,
) {
    daemon.connections.fetch_add(1, Ordering::Relaxed);
    let mut transport = Framed::new(stream, codec());
    if handshake(&mut transport, &peer).await {
        // Requests sent straight after the hello may already be in the codec's buffer.
        let FramedParts { io, read_buf, .. } = transport.into_parts();
        match Socket::new(io) {
            Ok(mut socket) => {
                tokio::select! {
                    () = requests(&mut socket, Input::new(&read_buf), &peer, daemon) => {}
                    _ = shutdown.changed() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot register a connection with epoll; closing it")
            }
        }
    }
    daemon.connections.fetch_sub(1, Ordering::Relaxed);
}

/// Reads the client's hello and answers it; false when the connection should end.
async fn handshake(transport: &mut Transport, peer: &Peer) -> bool {
    let frame = match tokio::time::timeout(HANDSHAKE_TIMEOUT, transport.next()).await {
        Ok(Some(Ok(frame))) => frame,
        Ok(Some(Err(e))) => {
            tracing::debug!(uid = peer.uid, error = %e, "bad frame before hello");
            refuse_hello(transport, "expected a Hello frame of at most 64 KiB").await;
            return false;
        }
        Ok(None) => return false,
        Err(_) => {
            tracing::debug!(uid = peer.uid, "no hello in time");
            return false;
        }
    };
    let hello: Hello = match proto::decode(&frame) {
        Ok(hello) => hello,
        Err(e) => {
            tracing::debug!(uid = peer.uid, error = %e, "undecodable hello");
            refuse_hello(transport, "the first frame must be a Hello message").await;
            return false;
        }
    };
    if hello.version != PROTOCOL_VERSION {
        let reply = HelloReply::Refused {
            supported: PROTOCOL_VERSION,
            message: format!(
                "this daemon speaks protocol version {PROTOCOL_VERSION}, not {}: use a matching authenta-client",
                hello.version
            ),
        };
        send(transport, &reply).await;
        return false;
    }
    let reply = HelloReply::Welcome {
        version: PROTOCOL_VERSION,
        server: env!("CARGO_PKG_VERSION").into(),
    };
    send(transport, &reply).await
}

/// Answers requests in order until the client leaves or sends something malformed.
///
/// Requests are cut from one input buffer and answers gathered in one output buffer, with
/// no per-frame allocation: every whole request already here is answered, then the answers
/// go out in one write. Runs of verifies are answered under one read of the index.
async fn requests(stream: &mut Socket, mut input: Input, peer: &Peer, daemon: &Daemon) {
    let mut output = Vec::with_capacity(WRITE_AT);
    // When the partial frame at the front of `input` began to arrive.
    let mut frame_started: Option<Instant> = None;
    // Request bytes answered since this connection last gave its thread away.
    let mut since_yield = 0;
    loop {
        // A client that keeps its socket full never makes a read come up short or a write
        // wait, so without this the loop would never yield, and every other connection and
        // timer on this core's thread would starve. Costs a counter bump; yields once the
        // task's cooperative budget is spent.
        tokio::task::consume_budget().await;
        let consumed_before = input.consumed();
        loop {
            match answer_verifies(daemon, peer, &mut input, &mut output) {
                Next::NeedMore => break,
                Next::Other(request) => {
                    // Answers already made go out first: an admin request may wait on a
                    // commit, and verifies pipelined before it should not.
                    if !output.is_empty() {
                        if !write_answers(stream, &output, peer).await {
                            return;
                        }
                        output.clear();
                    }
                    let responses = if pipelined_changes::apply_to(daemon, peer, &request.body) {
                        pipelined_changes::answer(daemon, peer, *request, &mut input).await
                    } else {
                        vec![Response {
                            id: request.id,
                            body: dispatch(daemon, peer, request.body).await,
                        }]
                    };
                    for response in &responses {
                        if proto::push_frame(response, &mut output).is_err() {
                            tracing::error!("answer does not encode");
                            // Those before it answer changes made: their tokens go out.
                            let _ = write_answers(stream, &output, peer).await;
                            reject(stream, "the answer is too large to send").await;
                            return;
                        }
                    }
                }
                Next::Bad(problem) => {
                    tracing::debug!(uid = peer.uid, problem, "bad request; closing");
                    let _ = write_answers(stream, &output, peer).await;
                    reject(stream, problem).await;
                    return;
                }
            }
            if output.len() >= WRITE_AT {
                if !write_answers(stream, &output, peer).await {
                    return;
                }
                output.clear();
            }
        }
        if !output.is_empty() {
            if !write_answers(stream, &output, peer).await {
                return;
            }
            output.clear();
        }
        // A flooding client's reads each bring up to READ_CHUNK of requests, so the task's
        // cooperative budget alone (128 reads) would let it answer some 30,000 verifies
        // before the others on its thread are looked at.
        since_yield += input.consumed() - consumed_before;
        if since_yield >= YIELD_AFTER {
            since_yield = 0;
            tokio::task::yield_now().await;
        }
        // The deadline runs from the first byte of the partial frame now at the front: a
        // client streaming whole frames, each split across writes, is never cut off.
        let progressed = input.consumed() != consumed_before;
        frame_started = match (input.is_empty(), frame_started) {
            (true, _) => None,
            (false, Some(started)) if !progressed => Some(started),
            (false, _) => Some(Instant::now()),
        };
        if !read_more(stream, &mut input, frame_started, peer).await {
            return;
        }
    }
}

/// What stopped a run of verifies.
enum Next {
    /// The rest of the input is a partial frame (or nothing).
    NeedMore,
    /// A request other than a verify, decoded, for the async path (boxed: an update is
    /// large, and the verify path moves this type around).
    Other(Box<Request>),
    /// A frame over the limit or a request that does not decode: what to tell the client.
    Bad(&'static str),
}

/// Answers the verifies at the front of `input`, under one read of the index and one
/// clock reading, in runs of up to [`RUN_MAX`] looked up together, and consumes them; stops
/// at anything else.
fn answer_verifies(daemon: &Daemon, peer: &Peer, input: &mut Input, out: &mut Vec<u8>) -> Next {
    let mut batch: Option<VerifyBatch<'_>> = None;
    loop {
        // Cut a run of verifies from the front, then answer it, then consume it.
        let bytes = input.bytes();
        // On the stack: a run is cut per wake-up of a connection.
        let mut run: [Option<VerifyRequestRef<'_>>; RUN_MAX] = [const { None }; RUN_MAX];
        let mut cut = 0;
        let mut used = 0;
        let stop = loop {
            if cut == RUN_MAX {
                break None;
            }
            let rest = &bytes[used..];
            let Some(frame_len) = whole_frame(rest) else {
                break Some(Next::NeedMore);
            };
            let Ok(frame_len) = frame_len else {
                break Some(Next::Bad("frame is over 64 KiB; closing"));
            };
            let payload = &rest[4..4 + frame_len];
            match proto::decode_borrowed::<VerifyRequestRef<'_>>(payload) {
                Ok(request) => {
                    run[cut] = Some(request);
                    cut += 1;
                    used += 4 + frame_len;
                }
                Err(_) => break Some(other_request(payload, peer)),
            }
        };
        if cut > 0 {
            let batch = batch.get_or_insert_with(|| VerifyBatch::new(daemon, peer));
            if batch.answer_run(&run[..cut], out).is_err() {
                return Next::Bad("the answer is too large to send");
            }
        }
        input.consume(used);
        match stop {
            None => {}
            Some(Next::Other(request)) => {
                if let Some(Ok(frame_len)) = whole_frame(input.bytes()) {
                    input.consume(4 + frame_len);
                }
                return Next::Other(request);
            }
            Some(next) => return next,
        }
    }
}

/// A request that is not a verify, decoded for the async path, or what to tell a client
/// whose request does not decode.
fn other_request(payload: &[u8], peer: &Peer) -> Next {
    match proto::decode::<Request>(payload) {
        Ok(request) => Next::Other(Box::new(request)),
        Err(e) => {
            tracing::debug!(uid = peer.uid, error = %e, "undecodable request");
            Next::Bad("request does not decode; closing")
        }
    }
}

/// The length of the whole frame at the front of `input`: `None` until it has all arrived,
/// an error when its prefix is over the limit.
pub(super) fn whole_frame(input: &[u8]) -> Option<Result<usize, ()>> {
    let prefix: [u8; 4] = input.get(..4)?.try_into().ok()?;
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME_LEN {
        return Some(Err(()));
    }
    (input.len() >= 4 + len).then_some(Ok(len))
}

/// Writes gathered answers, and tells this thread's poller; false when the client does not
/// take them within [`WRITE_DEADLINE`] or has gone.
async fn write_answers(stream: &mut Socket, answers: &[u8], peer: &Peer) -> bool {
    match tokio::time::timeout(WRITE_DEADLINE, stream.write_all(answers)).await {
        Ok(Ok(())) => {
            busy_poll::answered();
            true
        }
        Ok(Err(_)) => false,
        Err(_) => {
            tracing::debug!(uid = peer.uid, "client does not read its answers; closing");
            false
        }
    }
}

/// Waits for more bytes: as long as the connection is idle, but once a frame has begun to
/// arrive (`frame_started`), the whole frame must within [`FRAME_DEADLINE`]. False ends the
/// connection.
async fn read_more(
    stream: &mut Socket,
    input: &mut Input,
    frame_started: Option<Instant>,
    peer: &Peer,
) -> bool {
    loop {
        match input.fill(stream) {
            Ok(Filled::Bytes) => return true,
            Ok(Filled::End) => {
                if !input.is_empty() {
                    tracing::debug!(uid = peer.uid, "connection ended mid-frame");
                    reject(stream, "the stream ended in the middle of a frame; closing").await;
                }
                return false;
            }
            Ok(Filled::Nothing) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
        let ready = match frame_started {
            None => stream.readable().await,
            Some(started) => {
                match tokio::time::timeout_at((started + FRAME_DEADLINE).into(), stream.readable())
                    .await
                {
                    Ok(ready) => ready,
                    Err(_) => {
                        tracing::debug!(uid = peer.uid, "frame not completed in time; closing");
                        reject(stream, "a frame did not arrive whole within 5 s; closing").await;
                        return false;
                    }
                }
            }
        };
        if ready.is_err() {
            return false;
        }
    }
}

/// Refuses a connection whose first frame is not a Hello: the answer is a [`HelloReply`],
/// which is what the client is waiting for.
async fn refuse_hello(transport: &mut Transport, message: &str) {
    let reply = HelloReply::Refused {
        supported: PROTOCOL_VERSION,
        message: message.into(),
    };
    send(transport, &reply).await;
}

/// Sends a bad-frame error (request id 0) before the connection is closed.
async fn reject(stream: &mut Socket, message: &str) {
    let response = Response {
        id: 0,
        body: ResponseBody::Error(ErrorAnswer {
            code: ErrorCode::BadFrame,
            message: message.into(),
        }),
    };
    let mut out = Vec::new();
    if proto::push_frame(&response, &mut out).is_ok() {
        let _ = tokio::time::timeout(WRITE_DEADLINE, stream.write_all(&out)).await;
    }
}

/// Sends one message; false when it could not be sent within [`WRITE_DEADLINE`].
async fn send<T: serde::Serialize>(transport: &mut Transport, message: &T) -> bool {
    match proto::encode(message) {
        Ok(bytes) => matches!(
            tokio::time::timeout(WRITE_DEADLINE, transport.send(Bytes::from(bytes))).await,
            Ok(Ok(()))
        ),
        Err(_) => false,
    }
}

/// Tells a connection over the cap that the daemon is busy, then closes it. The client's
/// hello is read first (briefly), so the client is not cut off while still writing it.
/// Refuses a connection without serving it: waits briefly for the client's Hello, answers
/// why, and closes.
pub async fn refuse(stream: UnixStream, refusal: Refusal) {
    let mut transport = Framed::new(stream, codec());
    let _ = tokio::time::timeout(Duration::from_millis(500), transport.next()).await;
    let reply = match refusal {
        Refusal::Cap => HelloReply::Busy {
            message: "authenta-keyd is at its connection cap (max_connections); try again".into(),
        },
        Refusal::PerUid => HelloReply::Busy {
            message: "this uid has as many connections open as it may \
                      (max_connections_per_uid); close some or try again"
                .into(),
        },
        Refusal::NotAllowed => HelloReply::Refused {
            supported: PROTOCOL_VERSION,
            message: "this uid may not verify (nor make admin requests): ask the operator to \
                      add your group to verify_gids"
                .into(),
        },
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), send(&mut transport, &reply)).await;
}
