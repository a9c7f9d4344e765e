//! Busy polling: a connection thread that has just answered keeps checking its sockets for
//! a short while before it goes to sleep, when its requests have been arriving close
//! together.
//!
//! Why: a thread that sleeps lets its core halt, and on a virtual machine waking a halted
//! core costs tens of microseconds (an exit to the hypervisor and an interrupt between
//! cores), a hundred times what a verify costs. A client with one request in flight pays
//! that twice per request: once to wake the daemon, once to wake itself for the answer.
//! Guest kernels poll before halting for this reason (the cpuidle `haltpoll` governor), but
//! many hypervisors leave that off. Polling here takes the daemon's wake-up out of the
//! round trip.
//!
//! How long a thread polls adapts the way `haltpoll` does: the limit starts at zero, grows
//! when the thread's idle spells end within the configured maximum (polling longer would
//! have caught the next request), and halves when a spell runs past it (polling is wasted
//! on this traffic). A daemon that is asked a few times a second therefore never polls;
//! one answering a client back to back polls during the gaps. The other cost is a core
//! kept busy, and one the kernel no longer hands to a thread that wakes; such a thread
//! then queues behind a busy one, for up to a time slice unless that one gives way. So a
//! thread polls only while at most half the cores have a connection thread busy now or a
//! moment ago (so never on one core), only while its own wake-ups each write a few batches
//! of answers, and a polling thread gives its core to any thread queued on it on every
//! turn (`sched_yield`).

use std::cell::Cell;
use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// A thread that writes more batches of answers than this per wake-up does not poll: it is
/// shared by enough busy clients (or one pipelining client) that each wake-up's cost is
/// spread over many answers, while a polling core is one the kernel no longer hands to a
/// waking thread, which then queues behind a busy one (`sync-50`'s p99 suffers most).
const CROWD: u64 = 4;

/// The smallest limit a growing one starts from, as a fraction of the maximum.
const GROW_START_DIVISOR: u32 = 4;

thread_local! {
    /// This thread's answers, watched by its poller.
    static ANSWERS: Answers = const { Answers { count: Cell::new(0), sleeper: Cell::new(None) } };
}

/// What a thread's connections tell its poller.
struct Answers {
    /// Batches of answers written on this thread.
    count: Cell<u64>,
    /// The poller, while it sleeps until the next answer.
    sleeper: Cell<Option<Waker>>,
}

/// Tells this thread's poller (if it has one) that answers were just written.
///
/// Costs a counter bump; once per sleep of the poller, also a wake of a task on this
/// thread (no system call).
pub fn answered() {
    ANSWERS.with(|answers| {
        answers.count.set(answers.count.get().wrapping_add(1));
        if let Some(poller) = answers.sleeper.take() {
            poller.wake();
        }
    });
}

fn answers_so_far() -> u64 {
    ANSWERS.with(|answers| answers.count.get())
}

/// Sleeps until an answer is written on this thread after `seen` answers.
async fn next_answer(seen: u64) {
    poll_fn(|cx| {
        ANSWERS.with(|answers| {
            if answers.count.get() != seen {
                Poll::Ready(())
            } else {
                answers.sleeper.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
    })
    .await
}

/// Busy polling as configured: how long at most, and when there is a core to spare.
#[derive(Clone, Debug)]
pub struct BusyPoll {
    max: Duration,
    /// Per connection thread: [`AWAKE`] while it is, else when it last went to sleep
    /// (microseconds since `epoch`).
    threads: Arc<[AtomicU64]>,
    epoch: Instant,
    /// Threads poll only while at most this many have been busy recently: half the cores
    /// (none on one core: there polling only takes the core from the apps).
    most_busy: usize,
}

/// A thread's state while it is awake.
const AWAKE: u64 = u64::MAX;

/// A thread that went to sleep this recently still counts as busy: it is likely to wake
/// again soon, and a polling core is one the kernel will not hand it then.
const RECENT: Duration = Duration::from_millis(1);

impl BusyPoll {
    /// Polls up to `max` after an answer (zero: never) on `threads` connection threads,
    /// while at most half of `cores` of them have been busy recently. On one core (or a
    /// container's quota of one) it never polls: no other core halts for it to spare.
    pub fn new(max: Duration, cores: usize, threads: usize) -> BusyPoll {
        BusyPoll {
            max,
            threads: (0..threads).map(|_| AtomicU64::new(AWAKE)).collect(),
            epoch: Instant::now(),
            most_busy: cores / 2,
        }
    }

    /// Whether threads ever poll. When not (`busy_poll = "0"`, or one core), the
    /// connection threads' runtimes skip the park and unpark hooks too: nothing reads what
    /// they record.
    pub fn enabled(&self) -> bool {
        !self.max.is_zero() && self.most_busy > 0
    }

    /// For connection thread `thread`'s runtime, whenever it wakes (`on_thread_unpark`).
    pub fn thread_woke(&self, thread: usize) {
        if let Some(state) = self.threads.get(thread) {
            state.store(AWAKE, Ordering::Relaxed);
        }
    }

    /// For connection thread `thread`'s runtime, before it sleeps (`on_thread_park`).
    pub fn thread_sleeps(&self, thread: usize) {
        if let Some(state) = self.threads.get(thread) {
            state.store(self.micros_now(), Ordering::Relaxed);
        }
    }

    fn micros_now(&self) -> u64 {
        // Wraps after half a million years; AWAKE is never reached.
        self.epoch.elapsed().as_micros() as u64
    }

    /// Whether few enough connection threads are awake or were a moment ago for one to
    /// keep a core busy polling.
    fn core_to_spare(&self) -> bool {
        self.core_to_spare_at(self.micros_now())
    }

    /// [`core_to_spare`](Self::core_to_spare) at `now` (microseconds since `epoch`).
    fn core_to_spare_at(&self, now: u64) -> bool {
        let recent = RECENT.as_micros() as u64;
        let busy = self
            .threads
            .iter()
            .map(|state| state.load(Ordering::Relaxed))
            .filter(|&slept_at| slept_at == AWAKE || now.saturating_sub(slept_at) < recent)
            .count();
        busy <= self.most_busy
    }

    /// The poller of the calling connection thread; runs for the thread's life.
    pub async fn run(self) {
        if !self.enabled() {
            return;
        }
        let mut limit = Duration::ZERO;
        loop {
            // The thread has just answered; it is idle until the next answer.
            let seen = answers_so_far();
            let idle_from = Instant::now();
            if !self.poll_for(limit, seen).await {
                next_answer(seen).await;
            }
            let idle = idle_from.elapsed();
            // This task runs after the connections the same wake-up made ready, so the
            // count now is what that wake-up served.
            limit = if answers_so_far().wrapping_sub(seen) > CROWD {
                Duration::ZERO
            } else {
                next_limit(limit, idle, self.max)
            };
        }
    }

    /// Keeps the thread polling its sockets for up to `limit` or until an answer is
    /// written; true when one was. Stops (false) as soon as other connection threads are
    /// busy: they need the cores more than this one needs to skip a wake-up.
    async fn poll_for(&self, limit: Duration, seen: u64) -> bool {
        if limit.is_zero() {
            return false;
        }
        // `limit` is at most the configured maximum, which the config bounds.
        let deadline = Instant::now() + limit;
        while self.core_to_spare() {
            // Back of this thread's queue: its runtime checks every socket (epoll with no
            // wait) and runs what became ready, then comes back here.
            tokio::task::yield_now().await;
            if answers_so_far() != seen {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            // A thread waiting for this core (an app, the daemon's store thread) runs now
            // rather than after this one's time slice.
            std::thread::yield_now();
        }
        false
    }
}

/// The next poll limit after an idle spell of `idle`, as `haltpoll` adjusts it: grown
/// (doubled, from at least a quarter of `max`) when the spell outlasted the limit but not
/// `max`, halved when it outlasted `max`, kept otherwise.
fn next_limit(limit: Duration, idle: Duration, max: Duration) -> Duration {
    if idle > max {
        let halved = limit / 2;
        if halved <= max / (2 * GROW_START_DIVISOR) {
            Duration::ZERO
        } else {
            halved
        }
    } else if idle > limit {
        limit
            .saturating_mul(2)
            .max(max / GROW_START_DIVISOR)
            .min(max)
    } else {
        limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_micros(100);

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn requests_close_together_grow_the_limit_up_to_the_maximum() {
        let mut limit = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..5 {
            limit = next_limit(limit, us(90), MAX);
            seen.push(limit);
        }
        assert_eq!(seen, [us(25), us(50), us(100), us(100), us(100)]);
    }

    #[test]
    fn spells_the_limit_already_covers_keep_it() {
        assert_eq!(next_limit(us(50), us(30), MAX), us(50));
        assert_eq!(next_limit(us(50), us(50), MAX), us(50));
    }

    #[test]
    fn requests_far_apart_shrink_the_limit_to_nothing() {
        let mut limit = MAX;
        let mut seen = Vec::new();
        for _ in 0..4 {
            limit = next_limit(limit, Duration::from_millis(10), MAX);
            seen.push(limit);
        }
        assert_eq!(seen, [us(50), us(25), us(0), us(0)]);
    }

    #[test]
    fn threads_poll_only_while_at_most_half_the_cores_are_busy() {
        let recent = RECENT.as_micros() as u64;
        let poll = BusyPoll::new(MAX, 4, 3);
        let state =
            |thread: usize, value: u64| poll.threads[thread].store(value, Ordering::Relaxed);
        let t0 = 10 * recent;
        assert!(
            !poll.core_to_spare_at(t0),
            "three threads awake as they start"
        );
        state(2, t0);
        assert!(
            !poll.core_to_spare_at(t0 + recent - 1),
            "one just went to sleep: still busy"
        );
        assert!(poll.core_to_spare_at(t0 + recent), "two of four cores");
        state(1, t0);
        state(2, AWAKE);
        assert!(poll.core_to_spare_at(t0 + recent));
        state(1, AWAKE);
        assert!(!poll.core_to_spare_at(t0 + recent), "three of four cores");
        // The hooks set these states, and ignore a thread number out of range.
        poll.thread_sleeps(0);
        assert_ne!(poll.threads[0].load(Ordering::Relaxed), AWAKE);
        poll.thread_woke(0);
        assert_eq!(poll.threads[0].load(Ordering::Relaxed), AWAKE);
        poll.thread_woke(7);
        poll.thread_sleeps(7);
    }

    #[test]
    fn one_core_never_polls() {
        // The thread deciding whether to poll is awake itself.
        let one_core = BusyPoll::new(MAX, 1, 1);
        one_core.thread_woke(0);
        assert!(!one_core.core_to_spare_at(u64::MAX / 2), "nothing to spare");
        assert!(!one_core.enabled(), "so its runtime needs no park hooks");
    }

    #[test]
    fn polling_is_enabled_only_with_a_limit_and_a_core_to_spare() {
        assert!(BusyPoll::new(MAX, 2, 2).enabled());
        assert!(
            !BusyPoll::new(Duration::ZERO, 2, 2).enabled(),
            "busy_poll = \"0\""
        );
        assert!(!BusyPoll::new(MAX, 1, 1).enabled(), "one core");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn polling_stops_when_another_thread_wakes() {
        let poll = BusyPoll::new(Duration::from_secs(10), 2, 2);
        poll.thread_sleeps(1);
        tokio::time::sleep(RECENT * 2).await;
        let other = poll.clone();
        let waker = tokio::spawn(async move {
            tokio::task::yield_now().await;
            other.thread_woke(1);
        });
        let started = Instant::now();
        assert!(
            !poll
                .poll_for(Duration::from_secs(10), answers_so_far())
                .await
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        waker.await.expect("other thread woke");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_answer_on_the_thread_ends_its_polling_early() {
        let poll = BusyPoll::new(Duration::from_secs(10), 2, 1);
        let seen = answers_so_far();
        let answerer = tokio::spawn(async {
            tokio::task::yield_now().await;
            answered();
        });
        let started = Instant::now();
        assert!(poll.poll_for(Duration::from_secs(10), seen).await);
        assert!(started.elapsed() < Duration::from_secs(5));
        answerer.await.expect("answerer ran");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn polling_without_answers_stops_at_the_limit() {
        let poll = BusyPoll::new(MAX, 2, 1);
        let started = Instant::now();
        assert!(!poll.poll_for(us(200), answers_so_far()).await);
        assert!(started.elapsed() >= us(200));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_sleeping_poller_wakes_on_the_next_answer() {
        let seen = answers_so_far();
        let sleeper = tokio::spawn(next_answer(seen));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        answered();
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("woken")
            .expect("ran");
    }
}
