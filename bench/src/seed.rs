//! Filling a daemon with keys fast: pipelined creates on several connections, so that the
//! daemon's store thread commits hundreds of them per transaction (group commit).

use anyhow::{bail, Context, Result};
use authenta_client::proto::{
    CreateKey, Permission, RequestBody, ResponseBody, VerifyAnswer, VerifyCode,
};
use authenta_client::Client;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Creates sent in one write: the store thread commits up to 512 jobs at once.
const BATCH: usize = 256;
/// Every seeded key may read and write, in this environment; verifies asking `delete` are
/// the mix's 403s.
const PERMISSIONS: [Permission; 2] = [Permission::Read, Permission::Write];
const ENVIRONMENT: &str = "production";

/// A key the bench created, with the token shown at creation.
#[derive(Clone)]
pub struct SeededKey {
    pub id: String,
    pub token: String,
    pub permissions: Vec<Permission>,
    pub environment: Option<String>,
    pub name: String,
}

impl SeededKey {
    /// What the daemon answers for this key's token with `code`.
    pub fn answer(&self, code: VerifyCode) -> VerifyAnswer {
        VerifyAnswer {
            code,
            key_id: Some(self.id.clone()),
            permissions: self.permissions.clone(),
            environment: self.environment.clone(),
            rotate_by: None,
            rotation_due: false,
            // Every answer about a live key names it (protocol 2).
            name: Some(self.name.clone()),
            owner_id: None,
            meta: Default::default(),
            expires_at: None,
            ratelimit: None,
            remaining: None,
        }
    }
}

/// The keys made, and how long it took.
pub struct Seeded {
    pub keys: Vec<SeededKey>,
    pub elapsed: Duration,
}

/// Creates `count` keys over `connections` connections; `progress` prints a line to stderr
/// every so many keys (for the million-key seeding, which takes minutes).
pub fn seed(socket: &Path, count: usize, connections: usize, progress: bool) -> Result<Seeded> {
    seed_with(socket, count, connections, progress, &plain_key)
}

/// As [`seed`], key `n` created as `create(n)` says (`--limits` seeds keys with limits).
pub fn seed_with(
    socket: &Path,
    count: usize,
    connections: usize,
    progress: bool,
    create: &(dyn Fn(usize) -> CreateKey + Sync),
) -> Result<Seeded> {
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let per_thread: Vec<Result<Vec<SeededKey>>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..connections.max(1))
            .map(|_| scope.spawn(|| seed_some(socket, count, create, &next, &done, progress)))
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a seeding thread panicked")))
            })
            .collect()
    });
    let mut keys = Vec::with_capacity(count);
    for part in per_thread {
        keys.extend(part?);
    }
    Ok(Seeded {
        keys,
        elapsed: started.elapsed(),
    })
}

/// The bench's plain key `n`: it may read and write, in production, with no limits.
pub fn plain_key(n: usize) -> CreateKey {
    CreateKey {
        name: format!("bench-{n}"),
        permissions: PERMISSIONS.to_vec(),
        environment: Some(ENVIRONMENT.into()),
        expires_in_secs: None,
        ..Default::default()
    }
}

/// One seeding connection: takes the next batch of key numbers (`next`) until `count`,
/// counting what is made (`done`) for the progress lines.
fn seed_some(
    socket: &Path,
    count: usize,
    create: &(dyn Fn(usize) -> CreateKey + Sync),
    next: &AtomicUsize,
    done: &AtomicUsize,
    progress: bool,
) -> Result<Vec<SeededKey>> {
    let mut client = Client::connect(socket).context("connecting to seed keys")?;
    // A batch waits for a durable commit behind other connections' batches.
    client.set_timeout(Some(Duration::from_secs(120)));
    let mut keys = Vec::new();
    loop {
        let first = next.fetch_add(BATCH, Ordering::Relaxed);
        if first >= count {
            return Ok(keys);
        }
        let last = (first + BATCH).min(count);
        let bodies = (first..last)
            .map(|n| RequestBody::CreateKey(create(n)))
            .collect();
        for answer in client.call_many(bodies).context("seeding keys")? {
            match answer {
                ResponseBody::Created(created) => keys.push(SeededKey {
                    id: created.key.id,
                    token: created.token,
                    permissions: created.key.permissions,
                    environment: created.key.environment,
                    name: created.key.name,
                }),
                ResponseBody::Error(e) => bail!(
                    "the daemon refused a create ({:?}): {} (is the bench allowed admin requests?)",
                    e.code,
                    e.message
                ),
                other => bail!("unexpected answer to a create: {other:?}"),
            }
        }
        let total = done.fetch_add(last - first, Ordering::Relaxed) + (last - first);
        if progress && total / 100_000 != (total - (last - first)) / 100_000 {
            eprintln!("  seeded {total} of {count} keys");
        }
    }
}
