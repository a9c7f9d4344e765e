//! `--spin`: keeps every core busy with a lowest-priority thread during the runs.
//!
//! On a virtual machine an idle vCPU halts, and waking it goes through the hypervisor: on the
//! machine of the figures in docs/performance.md that costs about 50 µs, which then is most of a `sync-1`
//! round trip, for the daemon, the echo server and Redis alike. A thread at nice 19 keeps
//! its core from halting and gets about 1.5% of the core while anything else wants it, so
//! what is left is the cost of the servers themselves, as on a host that is busy anyway.
//! (`SCHED_IDLE` would take even less, but the scheduler then counts the core as idle and
//! wakes threads onto it with an inter-processor interrupt, which on this VM costs ~35 µs.)

use anyhow::{bail, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The spinning threads; they stop when this is dropped.
pub struct Spinners {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Spinners {
    /// One nice-19 busy thread per core. Fails rather than spin at normal priority, which
    /// would take time from the servers being measured.
    pub fn start() -> Result<Spinners> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::with_capacity(cores);
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..cores {
            let (stop, tx) = (stop.clone(), tx.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("spin".into())
                    .spawn(move || {
                        let idle = lowest_priority();
                        let ok = idle.is_ok();
                        let _ = tx.send(idle);
                        while ok && !stop.load(Ordering::Relaxed) {
                            std::hint::spin_loop();
                        }
                    })?,
            );
        }
        let spinners = Spinners { stop, threads };
        for _ in 0..cores {
            match rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => bail!("--spin: cannot lower a thread to nice 19: {e}"),
                Err(_) => bail!("--spin: a spinning thread ended at start"),
            }
        }
        Ok(spinners)
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Lowers the calling thread to nice 19 (on Linux, nice is per thread).
fn lowest_priority() -> std::io::Result<()> {
    // SAFETY: gettid and setpriority take plain integers and touch no memory of ours; the
    // call changes only the priority of this thread.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
