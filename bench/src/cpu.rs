//! CPU time a server process spends, so that figures bought with a busy core (the daemon's
//! busy polling) are shown with their price.

use std::time::Duration;

/// CPU time process `pid` has used so far, over all its threads: the first field of each
/// `/proc/PID/task/TID/schedstat`, in nanoseconds (finer than `stat`'s clock ticks).
/// `None` when the process is gone or `/proc` does not say.
pub fn used(pid: u32) -> Option<Duration> {
    let mut total = Duration::ZERO;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        // A thread may end between the listing and the read; its time is then not counted.
        let Ok(text) = std::fs::read_to_string(task.ok()?.path().join("schedstat")) else {
            continue;
        };
        let nanos: u64 = text.split_whitespace().next()?.parse().ok()?;
        total += Duration::from_nanos(nanos);
    }
    Some(total)
}

/// The id of the calling thread, for [`threads_used`]: `/proc/thread-self` links to
/// `PID/task/TID`.
pub fn this_thread() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// CPU time the threads `tids` of this process have used so far: the load client's own
/// price, without the in-process echo server's. `None` when a thread's `/proc` entry does
/// not say.
pub fn threads_used(tids: &[u32]) -> Option<Duration> {
    let mut total = Duration::ZERO;
    for tid in tids {
        let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
        total += Duration::from_nanos(text.split_whitespace().next()?.parse().ok()?);
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_this_process_working() {
        let pid = std::process::id();
        let before = used(pid).expect("own schedstat");
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let spent = used(pid).expect("own schedstat") - before;
        assert!(spent >= Duration::from_millis(25), "{spent:?}");
        assert!(used(u32::MAX).is_none(), "no such process");
        let me = this_thread().expect("own thread id");
        assert!(threads_used(&[me]).expect("own thread") >= spent / 2);
    }
}
