//! Connection threads: one single-threaded tokio runtime per thread, each serving for its
//! whole life every connection handed to it.
//!
//! Why not tokio's work-stealing runtime: a verify costs well under a microsecond, so what a
//! request costs is its wake-ups. With work stealing, a socket that becomes readable on one
//! worker routinely wakes another (a futex and an inter-processor interrupt), and tasks hop
//! between cores. Pinning a connection to one thread, as Redis, nginx and Envoy do, keeps
//! every request of that connection on the thread whose epoll saw it. The price is that a
//! connection never moves to an idle thread; connections are handed out in turn, and apps
//! that matter open several. Each thread also runs a poller ([`crate::server::busy_poll`]) that
//! keeps it from sleeping between requests that arrive close together.

use crate::access::Peer;
use crate::daemon::Daemon;
use crate::server::busy_poll::BusyPoll;
use crate::server::connection;
use crate::server::slots::Slot;
use anyhow::{Context, Result};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_util::task::TaskTracker;

/// Work on its way to a connection thread.
enum Handoff {
    /// An accepted client connection, with its slot under the connection cap.
    Client {
        stream: std::os::unix::net::UnixStream,
        peer: Peer,
        slot: Slot,
    },
    /// Another part's connection (the HTTP side's), started on the thread that serves it.
    Task(Task),
}

/// Makes, on the connection thread, the future that serves a connection to its end.
pub type Task = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The connection threads. Dropping it closes their queues: each thread then exits once its
/// connections have ended (they end at shutdown).
pub struct Workers {
    queues: Vec<mpsc::UnboundedSender<Handoff>>,
    next: AtomicUsize,
    /// Counts every connection on every thread, so shutdown can wait for them.
    tracker: TaskTracker,
}

impl Workers {
    /// Starts `count` threads (at least one) serving for `daemon` until `shutdown`, each
    /// busy polling as `busy_poll` says.
    pub fn start(
        count: usize,
        busy_poll: &BusyPoll,
        daemon: &Arc<Daemon>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Workers> {
        let tracker = TaskTracker::new();
        let mut queues = Vec::with_capacity(count);
        for n in 0..count.max(1) {
            let (queue, handoffs) = mpsc::unbounded_channel();
            let mut builder = tokio::runtime::Builder::new_current_thread();
            builder.enable_all();
            if busy_poll.enabled() {
                let (sleeps, wakes) = (busy_poll.clone(), busy_poll.clone());
                builder
                    .on_thread_park(move || sleeps.thread_sleeps(n))
                    .on_thread_unpark(move || wakes.thread_woke(n));
            }
            let runtime = builder
                .build()
                .context("cannot start a connection thread's runtime")?;
            let (daemon, tracker, shutdown) = (daemon.clone(), tracker.clone(), shutdown.clone());
            let busy_poll = busy_poll.clone();
            std::thread::Builder::new()
                .name(format!("authenta-conn-{n}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        // Ends with the runtime, once `serve` has returned.
                        tokio::spawn(busy_poll.run());
                        serve(handoffs, daemon, tracker, shutdown).await
                    })
                })
                .context("cannot start a connection thread")?;
            queues.push(queue);
        }
        Ok(Workers {
            queues,
            next: AtomicUsize::new(0),
            tracker,
        })
    }

    /// The tracker of every connection served (tasks spawned on it are counted too).
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Hands an accepted connection to the next thread in turn.
    pub fn hand_off(&self, stream: tokio::net::UnixStream, peer: Peer, slot: Slot) {
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "cannot move a connection to its thread; closing");
                return;
            }
        };
        self.send(Handoff::Client { stream, peer, slot });
    }

    /// Runs `task` on the next thread in turn, counted by [`Workers::tracker`].
    pub fn run(&self, task: Task) {
        self.send(Handoff::Task(task));
    }

    fn send(&self, handoff: Handoff) {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.queues.len();
        // A thread only goes away after its queue is closed, when `self` is dropped.
        let _ = self.queues[turn].send(handoff);
    }
}

/// One thread's loop: serve each connection handed over, until the queue closes and the
/// connections already here have ended.
async fn serve(
    mut handoffs: mpsc::UnboundedReceiver<Handoff>,
    daemon: Arc<Daemon>,
    tracker: TaskTracker,
    shutdown: watch::Receiver<bool>,
) {
    let local = TaskTracker::new();
    while let Some(handoff) = handoffs.recv().await {
        let (stream, peer, slot) = match handoff {
            Handoff::Client { stream, peer, slot } => (stream, peer, slot),
            Handoff::Task(task) => {
                local.spawn(tracker.track_future(task()));
                continue;
            }
        };
        let stream = match tokio::net::UnixStream::from_std(stream) {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "cannot register a connection; closing");
                continue;
            }
        };
        let (daemon, shutdown) = (daemon.clone(), shutdown.clone());
        local.spawn(tracker.track_future(async move {
            connection::serve(stream, peer, &daemon, shutdown).await;
            drop(slot);
        }));
    }
    local.close();
    local.wait().await;
}
