//! One client connection: handshake, then requests answered in order.
//!
//! Frames are `u32` big-endian length + payload, at most 64 KiB, decoded by tokio-util's
//! `LengthDelimitedCodec`. Answers to pipelined requests are buffered and written together
//! once no further complete request is waiting, so a pipelining client costs one write per
//! batch rather than one per answer. Anything malformed gets an error answer (id 0) and the
//! connection is closed; other connections are not affected.

use crate::daemon::Daemon;
use crate::dispatch::dispatch;
use crate::peer::Peer;
use authenta_client::proto::{
    self, ErrorAnswer, ErrorCode, Hello, HelloReply, Request, Response, ResponseBody,
    MAX_FRAME_LEN, PROTOCOL_VERSION,
};
use futures_util::{FutureExt, SinkExt, StreamExt};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::UnixStream;
use tokio::sync::watch;
use tokio_util::bytes::Bytes;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// How long a new connection has to say hello.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Once a frame's first byte has arrived, the rest must follow within this long, so a client
/// dribbling bytes cannot hold a connection slot forever. Idle connections between frames
/// are fine: apps keep pooled connections open.
const FRAME_DEADLINE: Duration = Duration::from_secs(5);
/// Answers must drain to the client within this long; one that stops reading is closed.
const WRITE_DEADLINE: Duration = Duration::from_secs(10);

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
        tokio::select! {
            () = requests(&mut transport, &peer, daemon) => {}
            _ = shutdown.changed() => {}
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
async fn requests(transport: &mut Transport, peer: &Peer, daemon: &Daemon) {
    let mut payload = Vec::with_capacity(256);
    loop {
        let Some(frame) = next_frame(transport, peer).await else {
            return;
        };
        let mut frame = Some(frame);
        // Answer this request and every complete one already buffered, then write once.
        while let Some(next) = frame.take() {
            let request = match next {
                Ok(bytes) => proto::decode::<Request>(&bytes),
                Err(e) => {
                    tracing::debug!(uid = peer.uid, error = %e, "bad frame");
                    reject(transport, "frame is over 64 KiB or cut short; closing").await;
                    return;
                }
            };
            let request = match request {
                Ok(request) => request,
                Err(e) => {
                    tracing::debug!(uid = peer.uid, error = %e, "undecodable request");
                    reject(transport, "request does not decode; closing").await;
                    return;
                }
            };
            let body = dispatch(daemon, peer, request.body).await;
            let response = Response {
                id: request.id,
                body,
            };
            payload.clear();
            if let Err(e) = proto::encode_into(&response, &mut payload) {
                tracing::error!(error = %e, "answer does not encode");
                reject(transport, "the answer is too large to send").await;
                return;
            }
            match tokio::time::timeout(WRITE_DEADLINE, transport.feed(payload.as_slice())).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    tracing::debug!(uid = peer.uid, "client does not read its answers; closing");
                    return;
                }
            }
            frame = transport.next().now_or_never().flatten();
        }
        match tokio::time::timeout(WRITE_DEADLINE, SinkExt::<&[u8]>::flush(transport)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::debug!(uid = peer.uid, "client does not read its answers; closing");
                return;
            }
        }
    }
}

/// The next frame: waits as long as the connection is idle, but once bytes of a frame have
/// arrived, the whole frame must within [`FRAME_DEADLINE`]. `None` ends the connection.
async fn next_frame(
    transport: &mut Transport,
    peer: &Peer,
) -> Option<Result<tokio_util::bytes::BytesMut, std::io::Error>> {
    if transport.read_buffer().is_empty() && transport.get_ref().readable().await.is_err() {
        return None;
    }
    // Usually the whole frame is already here: no timer needed for it.
    if let Some(frame) = transport.next().now_or_never() {
        return frame;
    }
    match tokio::time::timeout(FRAME_DEADLINE, transport.next()).await {
        Ok(frame) => frame,
        Err(_) => {
            tracing::debug!(uid = peer.uid, "frame not completed in time; closing");
            reject(
                transport,
                "a frame did not arrive whole within 5 s; closing",
            )
            .await;
            None
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
async fn reject(transport: &mut Transport, message: &str) {
    let response = Response {
        id: 0,
        body: ResponseBody::Error(ErrorAnswer {
            code: ErrorCode::BadFrame,
            message: message.into(),
        }),
    };
    send(transport, &response).await;
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
pub async fn refuse_busy(stream: UnixStream) {
    let mut transport = Framed::new(stream, codec());
    let _ = tokio::time::timeout(Duration::from_millis(500), transport.next()).await;
    let reply = HelloReply::Busy {
        message: "authenta-keyd is at its connection cap (max_connections); try again".into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), send(&mut transport, &reply)).await;
}
