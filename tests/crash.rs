//! Crash safety: SIGKILL the real daemon at random moments under concurrent admin writes and
//! verifies, restart it, and check that nothing it acknowledged was lost.
//!
//! The README promises that an admin write is acknowledged only after its commit (WAL,
//! `synchronous=FULL`) and after the index reflects it. So after any kill -9:
//! - every key whose create was acknowledged exists and its token verifies (unless revoked);
//! - every acknowledged revoke holds: state `revoked`, its token answers `revoked`;
//! - every token an acknowledged regenerate replaced answers `revoked`, and the newest
//!   acknowledged token is the key's current one;
//! - the audit hash chain is intact and holds an entry for every acknowledged write;
//! - the store opens cleanly (no corrupt rows) and the daemon logged no panic.
//!
//! Keys are checked through the restarted daemon (what apps see) and in the store file
//! itself, opened from this process with the library's `Store` (what the next start will
//! load: rows, retired token hashes, the audit chain). The operator's `audit --verify` is run
//! through the CLI too; it is reported apart, because it currently also fails for a reason
//! unrelated to crashes once the log outgrows one answer frame (tests/large_answers.rs).
//!
//! A write that was sent but not answered before the kill may or may not have committed.
//! That ambiguity is resolved from what the restarted daemon reports, never assumed: a
//! pending revoke shows in the key's state; a pending regenerate shows in the key's `start`
//! (the first 8 characters after `api_` of its current token), which either is still the
//! last acknowledged token's or belongs to a token nobody saw — in which case the last
//! acknowledged one must answer `revoked`. Either way at most one known token per key may
//! verify. An unanswered create may leave one key nobody knows; their count is bounded.
//!
//! Each worker thread owns its keys, so no two threads race on one key and every answer
//! while the daemon is up is predictable too (checked as it runs).
//!
//! `--cycles N` or `CRASH_CYCLES=N` (default 20) sets the number of kill/restart cycles (e.g.
//! `cargo test --test crash -- --cycles 200`); `--seed S` or `CRASH_SEED=S`
//! replays a run's choices of operations and kill points (the seed is printed; where a kill
//! lands still depends on timing). The summary line goes straight to stderr, so it
//! shows even when the test harness captures output.

mod common;

use authenta_client::proto::{CreateKey, ErrorCode, KeyState, VerifyRequest};
use authenta_client::{Client, Error, Permission, VerifyCode};
use authenta_keyd::key::KeyRecord;
use authenta_keyd::store::Store;
use authenta_keyd::token::{hash_token, start_of, TokenHash};
use common::Daemon;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

const DEFAULT_CYCLES: u32 = 20;
const WORKERS: usize = 4;
/// Longest the workload runs before a kill timed by the clock. Short enough for 20 cycles in
/// well under a minute, long enough for tens of commits per cycle.
const MAX_KILL_DELAY_MS: u64 = 400;
/// Past this many live keys a worker leans towards revoking, so the model stays small and
/// the checks after each restart stay fast.
const LIVE_KEYS_PER_WORKER: usize = 25;
/// Writes a worker sends per cycle at most; after that it only verifies until the kill. The
/// store thus grows by a bounded amount per cycle, and some kills land between writes.
const MAX_WRITES_PER_WORKER: u64 = 40;

/// xorshift64*: a few lines, seedable, and good enough to pick operations and delays.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A write sent but not answered before the kill: it may or may not have committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Regenerate,
    Revoke,
}

/// What the test knows about one key, from acknowledged answers only.
#[derive(Debug)]
struct Key {
    id: String,
    /// The newest acknowledged token. `None` once an unanswered regenerate turned out to
    /// have committed: the key's current token is then one nobody saw.
    current: Option<String>,
    /// Tokens replaced by acknowledged (or proven committed) regenerates: `revoked` forever.
    retired: Vec<String>,
    /// An acknowledged (or proven committed) revoke.
    revoked: bool,
    pending: Option<Pending>,
    /// Acknowledged writes on this key: its create, regenerates and revoke.
    acked_writes: u64,
    /// Bounds on this key's audit entries: acknowledged writes, plus unanswered ones that
    /// may have committed.
    audit_min: u64,
    audit_max: u64,
    /// Restarts this key has been checked after while revoked: it can change no more.
    settled_checks: u32,
}

impl Key {
    fn created(id: String, token: String) -> Self {
        Key {
            id,
            current: Some(token),
            retired: Vec::new(),
            revoked: false,
            pending: None,
            acked_writes: 1,
            audit_min: 1,
            audit_max: 1,
            settled_checks: 0,
        }
    }

    fn live(&self) -> bool {
        !self.revoked
    }
}

/// What one worker did in one cycle.
struct WorkerReport {
    keys: Vec<Key>,
    /// Creates sent but not answered: each may have left a key nobody knows.
    unanswered_creates: u64,
    acked_writes: u64,
    /// Answers that contradict the model while the daemon was up.
    violations: Vec<String>,
}

/// How a call that did not answer ended: never sent, or sent with the outcome unknown.
enum Failure {
    /// The daemon said no: nothing was changed (documented for every error answer).
    Refused(String),
    /// The socket could not even be reached: nothing was sent.
    NotSent,
    /// The request may have reached the daemon before it died.
    Unknown,
}

fn classify(error: Error) -> Failure {
    match error {
        Error::Refused { code, message } => Failure::Refused(format!("{code:?}: {message}")),
        Error::Connect { .. } => Failure::NotSent,
        _ => Failure::Unknown,
    }
}

fn verify_code(client: &mut Client, token: &str) -> Result<(VerifyCode, Option<String>), Error> {
    let answer = client.verify_answer(VerifyRequest {
        token: token.to_owned(),
        permissions: vec![Permission::Read],
        environment: None,
    })?;
    Ok((answer.code, answer.key_id))
}

/// Runs random operations on the worker's own keys until the daemon dies or `stop` is set.
fn worker(
    socket: std::path::PathBuf,
    mut keys: Vec<Key>,
    seed: u64,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> WorkerReport {
    let mut rng = Rng::new(seed);
    let mut client = Client::new(&socket);
    let mut report = WorkerReport {
        keys: Vec::new(),
        unanswered_creates: 0,
        acked_writes: 0,
        violations: Vec::new(),
    };
    let mut created = 0u64;
    let mut writes = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let live: Vec<usize> = (0..keys.len()).filter(|&i| keys[i].live()).collect();
        let (create, regenerate, revoke) = if live.len() < 3 {
            (60, 20, 5)
        } else if live.len() > LIVE_KEYS_PER_WORKER {
            (10, 25, 35)
        } else {
            (30, 30, 10)
        };
        let roll = if writes < MAX_WRITES_PER_WORKER {
            rng.below(100)
        } else {
            99 // verifies only
        };
        if (roll < create || keys.is_empty()) && writes < MAX_WRITES_PER_WORKER {
            writes += 1;
            created += 1;
            let request = CreateKey {
                name: format!("crash-{seed:x}-{created}"),
                permissions: vec![Permission::Read],
                environment: None,
                expires_in_secs: None,
            };
            match client.create_key(request) {
                Ok(new) => {
                    report.acked_writes += 1;
                    acked.fetch_add(1, Ordering::Relaxed);
                    keys.push(Key::created(new.key.id, new.token));
                }
                Err(e) => match classify(e) {
                    Failure::Refused(why) => {
                        report.violations.push(format!("create refused: {why}"))
                    }
                    Failure::NotSent => break,
                    Failure::Unknown => {
                        report.unanswered_creates += 1;
                        break;
                    }
                },
            }
        } else if roll < create + regenerate + revoke && !live.is_empty() {
            writes += 1;
            let key = &mut keys[live[rng.below(live.len() as u64) as usize]];
            let regenerating = roll < create + regenerate;
            let result = if regenerating {
                client
                    .regenerate(&key.id, Some(0))
                    .map(|new| (new.key.id.clone(), new.key.state, Some(new.token)))
            } else {
                client
                    .revoke(&key.id, Some("crash test".into()))
                    .map(|info| (info.id, info.state, None))
            };
            match result {
                Ok((id, state, token)) => {
                    report.acked_writes += 1;
                    acked.fetch_add(1, Ordering::Relaxed);
                    key.acked_writes += 1;
                    key.audit_min += 1;
                    key.audit_max += 1;
                    if id != key.id {
                        report
                            .violations
                            .push(format!("a write on {} answered for {id}", key.id));
                    }
                    match token {
                        Some(token) => {
                            key.retired.extend(key.current.take());
                            key.current = Some(token);
                            if state != KeyState::Active {
                                report.violations.push(format!(
                                    "regenerated {} answered state {state:?}",
                                    key.id
                                ));
                            }
                        }
                        None => {
                            key.revoked = true;
                            if state != KeyState::Revoked {
                                report
                                    .violations
                                    .push(format!("revoked {} answered state {state:?}", key.id));
                            }
                        }
                    }
                }
                Err(e) => match classify(e) {
                    Failure::Refused(why) => report
                        .violations
                        .push(format!("write on {} refused: {why}", key.id)),
                    Failure::NotSent => break,
                    Failure::Unknown => {
                        key.pending = Some(if regenerating {
                            Pending::Regenerate
                        } else {
                            Pending::Revoke
                        });
                        key.audit_max += 1;
                        break;
                    }
                },
            }
        } else {
            // A verify, checked against the model: this thread alone changes these keys.
            if keys.is_empty() {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            let key = &keys[rng.below(keys.len() as u64) as usize];
            let (token, expected) = if !key.retired.is_empty() && rng.below(3) == 0 {
                let i = rng.below(key.retired.len() as u64) as usize;
                (key.retired[i].clone(), VerifyCode::Revoked)
            } else if let Some(current) = &key.current {
                let expected = if key.revoked {
                    VerifyCode::Revoked
                } else {
                    VerifyCode::Valid
                };
                (current.clone(), expected)
            } else {
                continue;
            };
            match verify_code(&mut client, &token) {
                Ok((code, key_id)) => {
                    if code != expected || key_id.as_deref() != Some(key.id.as_str()) {
                        report.violations.push(format!(
                            "while up, a token of {} answered {code:?} for {key_id:?}, expected {expected:?}",
                            key.id
                        ));
                    }
                }
                Err(_) => break,
            }
        }
    }
    report.keys = keys;
    report
}

/// Everything checked after restarts, for the summary.
#[derive(Default)]
struct Totals {
    cycles: u32,
    acked_writes: u64,
    /// Acknowledged writes re-checked, summed over restarts.
    writes_checked: u64,
    unanswered: u64,
    unanswered_committed: u64,
    /// Revoked keys checked often enough to stop tracking (keeps long runs fast).
    forgotten: u64,
    /// Keys with an acknowledged write whose effect was missing after a restart.
    lost: Vec<String>,
    /// Anything else wrong: wrong answers while up, a broken chain, corrupt rows, panics.
    other: Vec<String>,
    /// Restarts after which `audit --verify` (through the daemon) did not succeed.
    audit_cli_failures: Vec<String>,
}

/// Opens the store file as the daemon does, with the test master key, from this process.
/// SQLite's WAL lets it read beside the running daemon; no worker writes meanwhile.
fn open_store(daemon: &Daemon) -> Store {
    let master: [u8; 32] = hex::decode(common::MASTER_HEX)
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    Store::open(&daemon.data_dir, &Zeroizing::new(master)).expect("the store opens cleanly")
}

/// Resolves unanswered writes from what the daemon reports, then checks every key, through
/// the daemon (what apps see) and in the store file (what the next start will see).
/// The whole audit log from the store file, page by page, with the chain checked.
fn read_whole_audit(store: &authenta_keyd::store::Store) -> authenta_client::proto::AuditReport {
    let mut report = store.read_audit(true, 0).expect("read the audit log");
    while let Some(after) = report.next.take() {
        let page = store.read_audit(false, after).expect("read the audit log");
        report.entries.extend(page.entries);
        report.next = page.next;
    }
    report
}

fn check_after_restart(
    daemon: &Daemon,
    keys: &mut Vec<Key>,
    unanswered_creates: u64,
    cycle: u32,
    totals: &mut Totals,
) {
    let mut client = Client::connect(&daemon.socket).expect("restarted daemon answers");
    let store = open_store(daemon);
    let disk = store.load().expect("load the store");
    let audit = read_whole_audit(&store);
    drop(store);
    if !disk.corrupt.is_empty() {
        totals
            .other
            .push(format!("corrupt rows in the store: {:?}", disk.corrupt));
    }
    match &audit.chain {
        Some(chain) if chain.ok => {}
        other => totals
            .other
            .push(format!("audit chain in the store not intact: {other:?}")),
    }
    let records: HashMap<&str, &KeyRecord> =
        disk.keys.iter().map(|(r, _)| (r.id.as_str(), r)).collect();
    let retired: HashSet<TokenHash> = disk.retired.iter().map(|(hash, _)| *hash).collect();
    let mut audit_count: HashMap<&str, u64> = HashMap::new();
    for entry in &audit.entries {
        if let Some(id) = &entry.key_id {
            *audit_count.entry(id.as_str()).or_default() += 1;
        }
    }

    for key in keys.iter_mut() {
        totals.writes_checked += key.acked_writes;
        let mut lost = Vec::new();
        let mut other = Vec::new();
        let info = match client.show_key(&key.id) {
            Ok(info) => info,
            Err(Error::Refused {
                code: ErrorCode::NotFound,
                ..
            }) => {
                totals
                    .lost
                    .push(format!("{}: acknowledged create is gone", key.id));
                continue;
            }
            Err(e) => panic!("show {}: {e}", key.id),
        };
        match key.pending.take() {
            None => {}
            Some(Pending::Revoke) => {
                totals.unanswered += 1;
                if info.state == KeyState::Revoked {
                    key.revoked = true;
                    key.audit_min += 1;
                    totals.unanswered_committed += 1;
                } else {
                    key.audit_max -= 1;
                }
            }
            Some(Pending::Regenerate) => {
                totals.unanswered += 1;
                if let Some(current) = &key.current {
                    if info.start == start_of(current) {
                        key.audit_max -= 1;
                    } else {
                        // Committed: the token nobody saw replaced the acknowledged one.
                        key.retired.extend(key.current.take());
                        key.audit_min += 1;
                        totals.unanswered_committed += 1;
                    }
                }
            }
        }

        let expected_state = if key.revoked {
            KeyState::Revoked
        } else {
            KeyState::Active
        };
        if info.state != expected_state {
            let problem = format!("state {:?}, expected {expected_state:?}", info.state);
            if key.revoked {
                lost.push(format!("{problem} (acknowledged revoke lost)"));
            } else {
                other.push(problem);
            }
        }
        let record = records.get(key.id.as_str());
        if record.is_none() {
            lost.push("no row in the store".into());
        }
        if let Some(record) = record {
            if record.revoked_at.is_some() != key.revoked {
                lost.push(format!("stored revoked_at is {:?}", record.revoked_at));
            }
        }
        let mut valid = 0;
        if let Some(current) = &key.current {
            let expected = if key.revoked {
                VerifyCode::Revoked
            } else {
                VerifyCode::Valid
            };
            let (code, _) = verify_code(&mut client, current).expect("verify");
            valid += usize::from(code == VerifyCode::Valid);
            if code != expected {
                lost.push(format!(
                    "newest acknowledged token answers {code:?}, expected {expected:?}"
                ));
            }
            if info.start != start_of(current) {
                lost.push("current token is not the newest acknowledged one".into());
            }
            if record.is_some_and(|r| r.token_hash != hash_token(current)) {
                lost.push("stored token hash is not the newest acknowledged token's".into());
            }
        }
        for old in &key.retired {
            let (code, _) = verify_code(&mut client, old).expect("verify");
            valid += usize::from(code == VerifyCode::Valid);
            if code != VerifyCode::Revoked {
                lost.push(format!("a replaced token answers {code:?}"));
            }
            if !retired.contains(&hash_token(old)) {
                lost.push("a replaced token is not recorded as retired".into());
            }
        }
        if valid > 1 {
            other.push(format!("{valid} known tokens verify"));
        }
        let entries = audit_count.get(key.id.as_str()).copied().unwrap_or(0);
        if entries < key.audit_min {
            lost.push(format!(
                "{entries} audit entries, at least {} acknowledged",
                key.audit_min
            ));
        } else if entries > key.audit_max {
            other.push(format!(
                "{entries} audit entries, at most {} writes were sent",
                key.audit_max
            ));
        }
        if !lost.is_empty() {
            totals.lost.push(format!("{}: {}", key.id, lost.join("; ")));
        }
        if !other.is_empty() {
            totals
                .other
                .push(format!("{}: {}", key.id, other.join("; ")));
        }
        if key.revoked {
            key.settled_checks += 1;
        }
    }

    let status = client.status().expect("status");
    if !status.corrupt_keys.is_empty() {
        totals.other.push(format!(
            "corrupt keys after restart: {:?}",
            status.corrupt_keys
        ));
    }
    let known = keys.len() as u64 + totals.forgotten;
    let strangers = status.keys.total.saturating_sub(known);
    if status.keys.total < known {
        totals.other.push(format!(
            "the daemon counts {} keys, fewer than the {known} acknowledged",
            status.keys.total
        ));
    }
    if strangers > unanswered_creates {
        totals.other.push(format!(
            "{strangers} keys nobody created, but only {unanswered_creates} creates went unanswered"
        ));
    }
    if status.keys.total != disk.keys.len() as u64 {
        totals.other.push(format!(
            "the daemon counts {} keys, the store holds {}",
            status.keys.total,
            disk.keys.len()
        ));
    }

    // The operator's check, through the daemon. Kept apart from the rest: it also fails,
    // for a reason unrelated to crashes, once the log outgrows one answer frame (see
    // tests/large_answers.rs), and the crash checks above must still run to the end.
    let cli = daemon.cli(&["audit", "--verify"]);
    if !cli.status.success() {
        totals.audit_cli_failures.push(format!(
            "cycle {cycle}, {} entries: {}{}",
            audit.entries.len(),
            String::from_utf8_lossy(&cli.stdout)
                .lines()
                .last()
                .unwrap_or(""),
            String::from_utf8_lossy(&cli.stderr).trim()
        ));
    }
    if daemon.log().contains("panicked") {
        totals.other.push("the daemon log shows a panic".into());
    }

    // Revoked keys checked after two restarts are settled: stop tracking them.
    let before = keys.len();
    keys.retain(|k| k.settled_checks < 2);
    totals.forgotten += (before - keys.len()) as u64;
}

/// Waits for a random moment to kill. Writes commit in a few milliseconds on a fast disk, so a
/// delay by the clock alone mostly lands after the workers' writes; three kills in four are
/// instead timed by progress — after a random number of acknowledged writes, plus up to 2 ms —
/// so they land while writes are in flight. The rest use the clock, up to
/// [`MAX_KILL_DELAY_MS`], and also hit quiet moments and the start of a cycle.
fn kill_moment(rng: &mut Rng, acked: &AtomicU64) {
    if rng.below(4) == 0 {
        std::thread::sleep(Duration::from_millis(rng.below(MAX_KILL_DELAY_MS + 1)));
        return;
    }
    let target = rng.below(WORKERS as u64 * MAX_WRITES_PER_WORKER);
    let deadline = Instant::now() + Duration::from_millis(MAX_KILL_DELAY_MS);
    while acked.load(Ordering::Relaxed) < target && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(200));
    }
    std::thread::sleep(Duration::from_micros(rng.below(2000)));
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Runs without the libtest harness, so it takes its own options:
/// `cargo test --test crash -- --cycles 200 [--seed S]` (or `CRASH_CYCLES`, `CRASH_SEED`).
/// Other arguments (test name filters passed to every test binary) are ignored.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let option = |name: &str| {
        args.windows(2)
            .find(|pair| pair[0] == name)
            .and_then(|pair| pair[1].trim().parse::<u64>().ok())
    };
    let cycles = option("--cycles").or_else(|| env_u64("CRASH_CYCLES"));
    let seed = option("--seed").or_else(|| env_u64("CRASH_SEED"));
    acknowledged_writes_survive_sigkill_at_random_moments(cycles, seed);
    println!("crash safety: 1 passed, 0 failed");
}

fn acknowledged_writes_survive_sigkill_at_random_moments(cycles: Option<u64>, seed: Option<u64>) {
    let cycles = cycles.map_or(DEFAULT_CYCLES, |n| n as u32);
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let mut daemon = Daemon::start();
    let mut keys: Vec<Key> = Vec::new();
    let mut totals = Totals::default();
    let mut unanswered_creates = 0u64;

    for cycle in 0..cycles {
        // Deal the keys out: each worker alone writes and predicts its own.
        let mut hands: Vec<Vec<Key>> = (0..WORKERS).map(|_| Vec::new()).collect();
        for (i, key) in keys.drain(..).enumerate() {
            hands[i % WORKERS].push(key);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let workers: Vec<_> = hands
            .into_iter()
            .map(|hand| {
                let socket = daemon.socket.clone();
                let stop = stop.clone();
                let acked = acked.clone();
                let seed = rng.next();
                std::thread::spawn(move || worker(socket, hand, seed, stop, acked))
            })
            .collect();
        kill_moment(&mut rng, &acked);
        daemon.kill9();
        stop.store(true, Ordering::Relaxed);
        for handle in workers {
            let report = handle.join().expect("worker thread");
            keys.extend(report.keys);
            unanswered_creates += report.unanswered_creates;
            totals.unanswered += report.unanswered_creates;
            totals.acked_writes += report.acked_writes;
            totals.other.extend(
                report
                    .violations
                    .into_iter()
                    .map(|v| format!("cycle {cycle}: {v}")),
            );
        }
        daemon.restart();
        check_after_restart(&daemon, &mut keys, unanswered_creates, cycle, &mut totals);
        totals.cycles = cycle + 1;
        if !totals.lost.is_empty() || !totals.other.is_empty() {
            break;
        }
    }

    let summary = format!(
        "crash safety (seed {seed}): {} cycles in {:.1} s, {} keys, {} acknowledged writes \
         ({} re-checked across restarts), {} unanswered at a kill ({} of them had committed \
         as far as could be told), keys with lost writes: {}, other problems: {}, `audit --verify` failures: {}\n",
        totals.cycles,
        started.elapsed().as_secs_f64(),
        keys.len() as u64 + totals.forgotten,
        totals.acked_writes,
        totals.writes_checked,
        totals.unanswered,
        totals.unanswered_committed,
        totals.lost.len(),
        totals.other.len(),
        totals.audit_cli_failures.len(),
    );
    // Straight to the file descriptor: the harness captures print!, not this.
    let _ = std::io::stderr().write_all(summary.as_bytes());
    assert!(
        totals.acked_writes > 0,
        "no write was acknowledged: the harness tested nothing"
    );
    assert!(
        totals.lost.is_empty(),
        "acknowledged writes lost (seed {seed}):\n{}",
        totals.lost.join("\n")
    );
    assert!(
        totals.other.is_empty(),
        "inconsistencies (seed {seed}):\n{}",
        totals.other.join("\n")
    );
    assert_eq!(totals.cycles, cycles, "stopped early");
    assert!(
        totals.audit_cli_failures.is_empty(),
        "`audit --verify` failed after {} of {} restarts although the store's chain is intact \
         (the answer outgrows a frame: see tests/large_answers.rs); first: {}",
        totals.audit_cli_failures.len(),
        totals.cycles,
        totals.audit_cli_failures[0]
    );
}
