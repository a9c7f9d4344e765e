//! Where the HTTP side listens, and the accept loop that hands each connection to a
//! connection thread.

use super::admission::Admission;
use super::connection;
use crate::access::Peer;
use crate::config::HttpAddress;
use crate::daemon::Daemon;
use crate::host::systemd::ActivatedHttp;
use crate::server::workers::Workers;
use anyhow::{bail, Context, Result};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, UnixListener};
use tokio::sync::watch;

/// A bound HTTP listener, with the address it was bound to here (none: systemd's).
pub enum HttpListener {
    Unix(UnixListener, Option<HttpAddress>),
    Tcp(TcpListener, Option<HttpAddress>),
}

/// Binds every address. A Unix socket is made like the main one (mode, group, a stale
/// socket replaced, a symlink refused).
pub fn bind_all(
    addresses: &[HttpAddress],
    mode: u32,
    group: Option<u32>,
) -> Result<Vec<HttpListener>> {
    addresses
        .iter()
        .map(|address| match address {
            HttpAddress::Unix(path) => crate::server::bind(path, mode, group)
                .map(|listener| HttpListener::Unix(listener, Some(address.clone()))),
            HttpAddress::Tcp(socket_address) => bind_tcp(*socket_address)
                .with_context(|| format!("cannot listen on {address}"))
                .map(|listener| HttpListener::Tcp(listener, Some(address.clone()))),
        })
        .collect()
}

/// Most connections the kernel queues before the daemon accepts them (std's 128 makes a
/// burst of new connections wait a second for SYN retransmits; nginx takes 511).
const BACKLOG: u32 = 1024;

fn bind_tcp(address: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(BACKLOG)
}

impl std::fmt::Display for HttpListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpListener::Tcp(listener, _) => match listener.local_addr() {
                Ok(address) => write!(f, "http://{address}"),
                Err(_) => f.write_str("a TCP socket"),
            },
            HttpListener::Unix(listener, _) => match listener.local_addr() {
                Ok(address) => match address.as_pathname() {
                    Some(path) => write!(f, "unix:{}", path.display()),
                    None => f.write_str("an unnamed Unix socket"),
                },
                Err(_) => f.write_str("a Unix socket"),
            },
        }
    }
}

impl HttpListener {
    /// A socket systemd passed (socket activation). A TCP port other hosts can reach is
    /// refused unless `allow_remote`, as it is in `http_listen`: `ListenStream=9180` binds
    /// every address.
    pub fn activated(socket: ActivatedHttp, allow_remote: bool) -> Result<HttpListener> {
        Ok(match socket {
            ActivatedHttp::Tcp(listener) => {
                let address = listener.local_addr()?;
                if !address.ip().is_loopback() && !allow_remote {
                    bail!(
                        "systemd passed an HTTP socket on {address}, which other hosts can \
                         reach, where anyone who reaches it may verify tokens: listen on \
                         127.0.0.1 (ListenStream=127.0.0.1:PORT), or set http_allow_remote = true"
                    );
                }
                listener.set_nonblocking(true)?;
                HttpListener::Tcp(TcpListener::from_std(listener)?, None)
            }
            ActivatedHttp::Unix(listener) => {
                listener.set_nonblocking(true)?;
                HttpListener::Unix(UnixListener::from_std(listener)?, None)
            }
        })
    }

    /// The address this daemon bound, if it bound it (not systemd).
    pub fn bound_here(&self) -> Option<&HttpAddress> {
        match self {
            HttpListener::Unix(_, address) | HttpListener::Tcp(_, address) => address.as_ref(),
        }
    }

    /// Accepts until `shutdown`; each connection is served on a connection thread, under
    /// `admission`'s cap.
    pub async fn serve(
        self,
        daemon: Arc<Daemon>,
        workers: Arc<Workers>,
        admission: Arc<Admission>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let accepted = tokio::select! {
                accepted = self.accept(&daemon) => accepted,
                _ = shutdown.changed() => return,
            };
            let Some(accepted) = accepted else {
                // Out of file descriptors and the like: pause briefly rather than spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let (place, pushed_out) = admission.admit();
            if pushed_out > 0 {
                daemon.metrics.refused("http_oldest_closed");
            }
            let (daemon, shutdown) = (daemon.clone(), shutdown.clone());
            workers.run(Box::new(move || {
                Box::pin(connection::serve(accepted, daemon, place, shutdown))
            }));
        }
    }

    async fn accept(&self, daemon: &Daemon) -> Option<connection::Accepted> {
        let accepted = match self {
            HttpListener::Unix(listener, _) => listener.accept().await.and_then(|(stream, _)| {
                let cred = stream.peer_cred()?;
                let peer = Peer::new(
                    cred.uid(),
                    cred.gid(),
                    cred.pid(),
                    daemon.access().needs_groups(),
                );
                Ok(connection::Accepted::Unix(stream.into_std()?, peer))
            }),
            HttpListener::Tcp(listener, _) => listener.accept().await.and_then(|(stream, _)| {
                stream.set_nodelay(true)?;
                Ok(connection::Accepted::Tcp(stream.into_std()?))
            }),
        };
        match accepted {
            Ok(accepted) => Some(accepted),
            Err(e) => {
                tracing::warn!(error = %e, "HTTP accept failed");
                None
            }
        }
    }
}
