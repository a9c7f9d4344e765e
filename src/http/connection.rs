//! One HTTP connection, served by hyper's HTTP/1 server with bounds on everything a client
//! controls: header bytes and count, the time to send a request's headers (which also ends
//! an idle keep-alive connection), and the connection's place under the cap.

use super::admission::Place;
use super::routes;
use crate::access::Peer;
use crate::daemon::Daemon;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

/// A request's headers must all arrive within this long of the connection opening or of the
/// previous answer; a keep-alive connection idle this long is closed too.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of a request's head (request line and headers); past it, 431.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header lines in a request; past it, 431.
const MAX_HEADERS: usize = 64;
/// How long a connection asked to close at shutdown may take to finish its request.
const CLOSE_PATIENCE: Duration = Duration::from_secs(5);
/// How long a connection pushed out by a newer one may take: a request it is serving takes
/// microseconds, and one still arriving must not keep its descriptor for long, or opening
/// connections in a loop would hold far more than the cap.
const PUSHED_OUT_PATIENCE: Duration = Duration::from_millis(100);

/// Counts a connection open for as long as it lives, unwinding included.
struct OpenGauge(prometheus_client::metrics::gauge::Gauge);

impl OpenGauge {
    fn new(gauge: prometheus_client::metrics::gauge::Gauge) -> OpenGauge {
        gauge.inc();
        OpenGauge(gauge)
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// An accepted connection, not yet registered with any thread's reactor.
pub enum Accepted {
    /// With the peer's credentials, which the access rules apply to.
    Unix(std::os::unix::net::UnixStream, Peer),
    Tcp(std::net::TcpStream),
}

/// Serves one connection until the client leaves, it is pushed out, or the daemon stops.
pub async fn serve(
    accepted: Accepted,
    daemon: Arc<Daemon>,
    place: Place,
    shutdown: watch::Receiver<bool>,
) {
    let _open = OpenGauge::new(daemon.metrics.open("http"));
    let served = match accepted {
        Accepted::Unix(stream, peer) => match tokio::net::UnixStream::from_std(stream) {
            Ok(stream) => run(stream, Some(peer), daemon, place, shutdown).await,
            Err(e) => Err(e.into()),
        },
        Accepted::Tcp(stream) => match tokio::net::TcpStream::from_std(stream) {
            Ok(stream) => run(stream, None, daemon, place, shutdown).await,
            Err(e) => Err(e.into()),
        },
    };
    if let Err(e) = served {
        // A client that went away or sent garbage: hyper has answered what it could.
        tracing::debug!(error = %e, "HTTP connection ended");
    }
}

async fn run<S>(
    stream: S,
    peer: Option<Peer>,
    daemon: Arc<Daemon>,
    place: Place,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service_daemon = daemon.clone();
    // Shared, not copied, by each request's future (a peer's group list is a Vec).
    let peer = peer.map(Arc::new);
    let service = service_fn(move |request: Request<Incoming>| {
        let (daemon, peer) = (service_daemon.clone(), peer.clone());
        async move {
            let answer = routes::answer(&daemon, peer.as_deref(), request).await;
            Ok::<_, Infallible>(answer)
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let patience = tokio::select! {
        served = connection.as_mut() => return served.map_err(Into::into),
        () = place.cancelled() => PUSHED_OUT_PATIENCE,
        _ = shutdown.changed() => CLOSE_PATIENCE,
    };
    connection.as_mut().graceful_shutdown();
    match tokio::time::timeout(patience, connection).await {
        Ok(served) => served.map_err(Into::into),
        Err(_) => Ok(()),
    }
}
