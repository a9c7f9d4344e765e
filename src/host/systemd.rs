//! systemd integration: readiness and status notifications (`Type=notify`), the watchdog,
//! and the listening socket handed over by socket activation (`LISTEN_FDS`).
//!
//! Every notification is a no-op when `NOTIFY_SOCKET` is unset, so the daemon behaves the
//! same outside systemd.

use sd_notify::NotifyState;
use std::time::Duration;

fn send(states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// READY=1 with a status line: the store is open and the socket listens.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// RELOADING=1 (with the monotonic timestamp `Type=notify-reload` asks for).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// STOPPING=1.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// How often to ping the watchdog: half of `WatchdogSec=`, when it is set for this process.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|period| period / 2)
}

/// WATCHDOG=1.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// The sockets systemd passed (socket activation).
#[derive(Default)]
pub struct Activated {
    /// The main socket: the one not named `http`.
    pub main: Option<std::os::unix::net::UnixListener>,
    /// The HTTP side's sockets (`FileDescriptorName=http`), TCP or Unix. Taken from systemd,
    /// a loopback port needs neither the host's network nor `AF_INET` in the service.
    pub http: Vec<ActivatedHttp>,
}

/// An HTTP socket systemd passed.
pub enum ActivatedHttp {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

/// The file descriptor name that marks an HTTP-side socket.
const HTTP_NAME: &str = "http";

/// The sockets systemd passed (socket activation), if any and if they are meant for this
/// process: `LISTEN_PID` must name us, as the protocol requires. Sockets named `http`
/// (`LISTEN_FDNAMES`) serve the HTTP side; exactly one other is the main socket. Call
/// before any thread starts: it clears the `LISTEN_*` variables so children do not inherit
/// them.
pub fn take_activated() -> anyhow::Result<Activated> {
    let Some(count) = std::env::var_os("LISTEN_FDS") else {
        return Ok(Activated::default());
    };
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|pid| pid.parse::<u32>().ok())
        == Some(std::process::id());
    if !for_us {
        tracing::warn!(
            listen_fds = ?count,
            "LISTEN_FDS is set but LISTEN_PID does not name this process; binding the socket instead"
        );
        return Ok(Activated::default());
    }
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    // Children must not inherit it (listenfd clears the others).
    std::env::remove_var("LISTEN_FDNAMES");
    let names: Vec<&str> = names.split(':').collect();
    let mut fds = listenfd::ListenFd::from_env();
    let mut activated = Activated::default();
    for index in 0..fds.len() {
        if names.get(index) == Some(&HTTP_NAME) {
            activated.http.push(take_http(&mut fds, index)?);
        } else if activated.main.is_some() {
            anyhow::bail!(
                "socket activation passed more than one socket not named '{HTTP_NAME}': the \
                 main .socket unit must have exactly one ListenStream=, and HTTP sockets \
                 FileDescriptorName={HTTP_NAME}"
            );
        } else {
            let main = fds.take_unix_listener(index).map_err(|e| {
                anyhow::anyhow!("the socket passed by systemd is not a Unix stream listener: {e}")
            })?;
            activated.main = main;
        }
    }
    Ok(activated)
}

fn take_http(fds: &mut listenfd::ListenFd, index: usize) -> anyhow::Result<ActivatedHttp> {
    if let Ok(Some(listener)) = fds.take_tcp_listener(index) {
        return Ok(ActivatedHttp::Tcp(listener));
    }
    match fds.take_unix_listener(index) {
        Ok(Some(listener)) => Ok(ActivatedHttp::Unix(listener)),
        _ => anyhow::bail!("the socket systemd passed as '{HTTP_NAME}' is neither a TCP nor a Unix stream listener"),
    }
}
