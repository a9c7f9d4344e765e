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

/// The Unix listener systemd passed (socket activation), if any and if it is meant for this
/// process: `LISTEN_PID` must name us, as the protocol requires. Call before any thread
/// starts: it clears the `LISTEN_*` variables so children do not inherit them.
pub fn take_activated_listener() -> anyhow::Result<Option<std::os::unix::net::UnixListener>> {
    let Some(count) = std::env::var_os("LISTEN_FDS") else {
        return Ok(None);
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
        return Ok(None);
    }
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() != 1 {
        anyhow::bail!(
            "socket activation passed {} sockets; the .socket unit must have exactly one ListenStream=",
            fds.len()
        );
    }
    fds.take_unix_listener(0).map_err(|e| {
        anyhow::anyhow!("the socket passed by systemd is not a Unix stream listener: {e}")
    })
}
