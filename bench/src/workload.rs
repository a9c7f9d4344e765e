//! The verify mix, encoded once before any run: every request frame, and the exact answer
//! frame the daemon must send back for it.
//!
//! Keeping the expected answers lets the driver check every answer with one comparison
//! (a wrong answer is counted, not silently timed), and lets the echo server send back the
//! very bytes the daemon would, so both sides of the comparison move the same bytes.

use crate::packed::Packed;
use crate::seed::SeededKey;
use crate::wire::push_frame;
use anyhow::{Context, Result};
use authenta_client::proto::{
    self, Permission, Request, RequestBody, Response, ResponseBody, VerifyAnswer, VerifyCode,
    VerifyRequest,
};
use serde::Serialize;

/// One in this many keys is also asked for a permission it lacks, and one well-formed but
/// unknown token is added per this many keys: 8 gives 80% valid, 10% / 10% denied.
const DENIED_EVERY: usize = 8;

/// What the mix holds, for the report.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Mix {
    pub keys: usize,
    pub requests: usize,
    pub valid: usize,
    pub insufficient_permissions: usize,
    pub unknown: usize,
}

impl Mix {
    /// One line for people, e.g. "80% valid, 10% insufficient_permissions (403), ...".
    pub fn describe(&self) -> String {
        let pct = |n: usize| 100.0 * n as f64 / self.requests.max(1) as f64;
        format!(
            "{} requests over {} keys: {:.0}% valid (asks read), {:.0}% insufficient_permissions \
             (asks delete, 403), {:.0}% unknown well-formed token (401)",
            self.requests,
            self.keys,
            pct(self.valid),
            pct(self.insufficient_permissions),
            pct(self.unknown)
        )
    }
}

/// Pre-encoded requests and their expected answers. Request `i` carries id `i + 1`.
pub struct Workload {
    /// Every request frame (length prefix included).
    requests: Packed,
    /// Every expected answer payload (no length prefix).
    answers: Packed,
    /// Which of the seeded keys each request asks about ([`NO_KEY`] for an unknown token):
    /// lets another server be asked the same questions in the same order. Never read while
    /// the daemon is driven.
    asked: Vec<u32>,
    pub mix: Mix,
}

/// `asked` of a request whose token is not one of the seeded keys.
const NO_KEY: u32 = u32::MAX;

enum Ask {
    Valid(usize),
    Insufficient(usize),
    Unknown(String),
}

impl Workload {
    /// The mix over `keys`, shuffled with a fixed seed so that runs are comparable.
    pub fn build(keys: &[SeededKey]) -> Result<Workload> {
        Workload::build_at_least(keys, 0)
    }

    /// The mix over `keys`, asked over and over (with new unknown tokens each time) until it
    /// holds at least `requests` requests, shuffled together: as long as the mix over more
    /// keys, so that comparing the two changes only the number of keys, not how much
    /// pre-encoded mix the client streams through its caches.
    pub fn build_at_least(keys: &[SeededKey], requests: usize) -> Result<Workload> {
        let rng = ring::rand::SystemRandom::new();
        let mut asks: Vec<Ask> = Vec::new();
        loop {
            asks.extend((0..keys.len()).map(Ask::Valid));
            asks.extend((0..keys.len()).step_by(DENIED_EVERY).map(Ask::Insufficient));
            for _ in 0..keys.len().div_ceil(DENIED_EVERY) {
                let token = authenta_keyd::token::generate_token(&rng)
                    .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
                asks.push(Ask::Unknown(token.to_string()));
            }
            if asks.len() >= requests || keys.is_empty() {
                break;
            }
        }
        shuffle(&mut asks, 0x5eed_1234_abcd_ef01);

        let mut workload = Workload {
            requests: Packed::with_capacity(asks.len(), 80),
            answers: Packed::with_capacity(asks.len(), 48),
            asked: Vec::with_capacity(asks.len()),
            mix: Mix {
                keys: keys.len(),
                requests: asks.len(),
                valid: 0,
                insufficient_permissions: 0,
                unknown: 0,
            },
        };
        for (i, ask) in asks.into_iter().enumerate() {
            let id = i as u64 + 1;
            workload.asked.push(match &ask {
                Ask::Valid(k) | Ask::Insufficient(k) => u32::try_from(*k).unwrap_or(NO_KEY),
                Ask::Unknown(_) => NO_KEY,
            });
            let (token, wanted, answer) = match ask {
                Ask::Valid(k) => {
                    workload.mix.valid += 1;
                    let key = &keys[k];
                    (
                        key.token.clone(),
                        Permission::Read,
                        key.answer(VerifyCode::Valid),
                    )
                }
                Ask::Insufficient(k) => {
                    workload.mix.insufficient_permissions += 1;
                    let key = &keys[k];
                    (
                        key.token.clone(),
                        Permission::Delete,
                        key.answer(VerifyCode::InsufficientPermissions),
                    )
                }
                Ask::Unknown(token) => {
                    workload.mix.unknown += 1;
                    let answer = VerifyAnswer {
                        code: VerifyCode::Unknown,
                        key_id: None,
                        permissions: Vec::new(),
                        environment: None,
                        rotate_by: None,
                        rotation_due: false,
                        name: None,
                        owner_id: None,
                        meta: Default::default(),
                        expires_at: None,
                        ratelimit: None,
                        remaining: None,
                    };
                    (token, Permission::Read, answer)
                }
            };
            let request = Request {
                id,
                body: RequestBody::Verify(VerifyRequest {
                    token,
                    permissions: vec![wanted],
                    environment: None,
                    cost: None,
                }),
            };
            let response = Response {
                id,
                body: ResponseBody::Verify(answer),
            };
            push_frame(
                workload.requests.buf(),
                &proto::encode(&request).context("encoding a verify request")?,
            );
            workload.requests.end_item();
            proto::encode_into(&response, workload.answers.buf())
                .context("encoding an expected answer")?;
            workload.answers.end_item();
        }
        Ok(workload)
    }

    /// Number of requests in the mix.
    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// Request `i` as a whole frame, length prefix included.
    pub fn request(&self, i: usize) -> &[u8] {
        self.requests.get(i)
    }

    /// The payload the daemon must answer request `i` with.
    pub fn answer(&self, i: usize) -> &[u8] {
        self.answers.get(i)
    }

    /// Which of the seeded keys (an index into the keys the mix was built over) request `i`
    /// asks about; `None` for a well-formed token that is not a key.
    pub fn key_asked(&self, i: usize) -> Option<usize> {
        let k = *self.asked.get(i)?;
        (k != NO_KEY).then_some(k as usize)
    }

    /// The payload answering the request with this id, if the id is one of the mix's.
    pub fn answer_for_id(&self, id: u64) -> Option<&[u8]> {
        let i = usize::try_from(id).ok()?.checked_sub(1)?;
        (i < self.len()).then(|| self.answer(i))
    }

    /// Mean sizes of a request frame and of an answer frame, in bytes.
    pub fn mean_frame_sizes(&self) -> (f64, f64) {
        let n = self.len().max(1) as f64;
        (
            self.requests.total_bytes() as f64 / n,
            (self.answers.total_bytes() + 4 * self.len()) as f64 / n,
        )
    }
}

/// Fisher-Yates with xorshift64*: deterministic, and no dependency for one shuffle.
pub fn shuffle<T>(items: &mut [T], mut state: u64) {
    for i in (1..items.len()).rev() {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
        items.swap(i, (r % (i as u64 + 1)) as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_keeps_every_item() {
        let mut items: Vec<u32> = (0..1000).collect();
        shuffle(&mut items, 7);
        assert_ne!(items, (0..1000).collect::<Vec<_>>());
        items.sort_unstable();
        assert_eq!(items, (0..1000).collect::<Vec<_>>());
    }
}
