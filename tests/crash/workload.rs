//! The crash harness's workload: worker threads that create, regenerate, revoke and verify
//! their own keys, checking every answer while the daemon is up, and the choice of the
//! moment to kill it.

use super::{
    verify_code, Key, Pending, Rng, WorkerReport, LIVE_KEYS_PER_WORKER, MAX_KILL_DELAY_MS,
    MAX_WRITES_PER_WORKER, WORKERS,
};
use authenta_client::proto::{CreateKey, KeyState};
use authenta_client::{Client, Error, Permission, VerifyCode};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// Runs random operations on the worker's own keys until the daemon dies or `stop` is set.
pub fn worker(
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
                ..Default::default()
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

/// Waits for a random moment to kill. Writes commit in a few milliseconds on a fast disk, so a
/// delay by the clock alone mostly lands after the workers' writes; three kills in four are
/// instead timed by progress — after a random number of acknowledged writes, plus up to 2 ms —
/// so they land while writes are in flight. The rest use the clock, up to
/// [`MAX_KILL_DELAY_MS`], and also hit quiet moments and the start of a cycle.
pub fn kill_moment(rng: &mut Rng, acked: &AtomicU64) {
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
