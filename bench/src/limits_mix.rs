//! `--limits`' keys and verifies: groups of keys that differ only in their limits (none, a
//! rate limit, a credit balance, both, both plus an owner's), seeded alike, and each group's
//! verifies encoded beforehand, with a check of every answer that lets the limits' live
//! state vary while holding everything else to the expected bytes.
//!
//! The limits are set so that no verify of a run reaches them: every verify of a limited key
//! goes through its bucket and spends its credit, and must still answer `valid`. A refusal
//! (`rate_limited`, `usage_exceeded`) is counted as a wrong answer: the limits were set wrong.

use crate::event_loop::Protocol;
use crate::packed::Packed;
use crate::seed::{self, SeededKey};
use crate::wire::{self, push_frame, split_varint, LengthPrefixed, Reader};
use crate::workload::shuffle;
use anyhow::{ensure, Context, Result};
use authenta_client::proto::{
    self, OwnerUpdate, Permission, RateLimit, Request, RequestBody, Response, ResponseBody,
    VerifyCode, VerifyRequest,
};
use authenta_client::Client;
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

/// The rate limit of every limited key and of the owner. The daemon's bucket counts in
/// whole microseconds, so no limit passes more than one verify per microsecond of its
/// window (a limit of 10^9 per second acts as 10^6); this one is that rate, 10^6 per second,
/// with a burst of 10^9, so that a daemon faster than this VM's is not refused either.
pub const RATELIMIT: RateLimit = RateLimit {
    limit: 1_000_000_000,
    window_ms: 1_000_000,
};

/// The credit balance of every key with credits and of the owner: no run spends it.
pub const CREDITS: u64 = 1_000_000_000_000_000;

/// The owner every key of the last group names.
pub const OWNER: &str = "authenta-bench-owner";

/// One group of keys: what its keys carry besides what every key has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Group {
    pub name: &'static str,
    pub ratelimit: bool,
    pub credits: bool,
    /// Every key names [`OWNER`], which has a rate limit and credits of its own: each verify
    /// also takes from buckets that every key of the group shares.
    pub owner: bool,
}

/// The groups, plain first: it is the baseline of every ratio.
pub const GROUPS: [Group; 5] = [
    Group {
        name: "plain",
        ratelimit: false,
        credits: false,
        owner: false,
    },
    Group {
        name: "ratelimit",
        ratelimit: true,
        credits: false,
        owner: false,
    },
    Group {
        name: "credits",
        ratelimit: false,
        credits: true,
        owner: false,
    },
    Group {
        name: "both",
        ratelimit: true,
        credits: true,
        owner: false,
    },
    Group {
        name: "both+owner",
        ratelimit: true,
        credits: true,
        owner: true,
    },
];

impl Group {
    /// Key `n` of this group: the bench's plain key, with this group's limits.
    fn create(&self, n: usize) -> proto::CreateKey {
        let mut key = seed::plain_key(n);
        key.name = format!("bench-{}-{n}", self.name);
        key.ratelimit = self.ratelimit.then_some(RATELIMIT);
        key.remaining = self.credits.then_some(CREDITS);
        key.owner_id = self.owner.then(|| OWNER.to_owned());
        key
    }

    /// What a verify of this group's keys goes through, for the report.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.ratelimit {
            parts.push("the key's rate limit");
        }
        if self.credits {
            parts.push("the key's credits");
        }
        if self.owner {
            parts.push("the shared owner's rate limit and credits");
        }
        if parts.is_empty() {
            return "no limits".into();
        }
        parts.join(", ")
    }
}

/// Gives [`OWNER`] its rate limit and credits, before any key names it.
pub fn set_owner(socket: &Path) -> Result<()> {
    let mut client = Client::connect(socket).context("connecting to set the owner")?;
    client
        .set_owner(OwnerUpdate {
            id: OWNER.into(),
            ratelimit: Some(Some(RATELIMIT)),
            remaining: Some(Some(CREDITS)),
            refill: None,
        })
        .context("setting the owner's limits")?;
    Ok(())
}

/// One group's verifies, encoded beforehand: each of its keys once, asking `read`, in a
/// fixed shuffled order. Request `i` carries id `i + 1`.
pub struct GroupMix {
    pub group: Group,
    requests: Packed,
    /// Each expected answer with no limit state (its last two fields `None`).
    answers: Packed,
}

/// How `None, None` (no rate limit state, no balance) ends an encoded answer.
const NO_LIMITS: [u8; 2] = [0, 0];

/// `RateLimitState`'s fields, each one varint: limit, remaining, reset_at, retry_at.
const RATE_STATE_FIELDS: usize = 4;

/// Steps over an `Option` of `fields` varints at the front of `rest`: whether it was
/// `Some`, or `None` when the bytes are not one.
fn skip_option(rest: &mut &[u8], fields: usize) -> Option<bool> {
    let (&tag, after) = rest.split_first()?;
    *rest = after;
    match tag {
        0 => Some(false),
        1 => {
            for _ in 0..fields {
                (_, *rest) = split_varint(rest)?;
            }
            Some(true)
        }
        _ => None,
    }
}

impl GroupMix {
    /// Seeds `keys` keys of `group` and encodes their verifies.
    pub fn seed(socket: &Path, group: Group, keys: usize) -> Result<GroupMix> {
        let seeded = seed::seed_with(socket, keys, 4, false, &|n| group.create(n))?;
        GroupMix::build(group, &seeded.keys)
    }

    fn build(group: Group, keys: &[SeededKey]) -> Result<GroupMix> {
        let mut order: Vec<&SeededKey> = keys.iter().collect();
        shuffle(&mut order, 0x1153_7e57_ba5e_d0d0);
        let mut mix = GroupMix {
            group,
            requests: Packed::with_capacity(keys.len(), 80),
            answers: Packed::with_capacity(keys.len(), 80),
        };
        for (i, key) in order.into_iter().enumerate() {
            let id = i as u64 + 1;
            let request = Request {
                id,
                body: RequestBody::Verify(VerifyRequest {
                    token: key.token.clone(),
                    permissions: vec![Permission::Read],
                    environment: None,
                    cost: None,
                }),
            };
            push_frame(mix.requests.buf(), &proto::encode(&request)?);
            mix.requests.end_item();
            let mut answer = key.answer(VerifyCode::Valid);
            answer.owner_id = group.owner.then(|| OWNER.to_owned());
            let answer = Response {
                id,
                body: ResponseBody::Verify(answer),
            };
            proto::encode_into(&answer, mix.answers.buf())?;
            ensure!(
                mix.answers.buf().ends_with(&NO_LIMITS),
                "the verify answer's layout changed: it no longer ends with its limit state"
            );
            mix.answers.end_item();
        }
        Ok(mix)
    }

    /// Whether the live part of an answer (its rate limit state and balance) is there when
    /// the group's keys have them, and only then, and is nothing else. Stepped over by hand
    /// rather than decoded through serde: the load thread shares the cores with the daemon,
    /// and a decode per answer cost a rate-limited group's client more than plain keys'
    /// byte comparison, so the client, not the daemon, made the limited group slower.
    fn live_state_fits(&self, live: &[u8]) -> bool {
        let mut rest = live;
        let rate = skip_option(&mut rest, RATE_STATE_FIELDS);
        let credits = skip_option(&mut rest, 1);
        rest.is_empty() && rate == Some(self.group.ratelimit) && credits == Some(self.group.credits)
    }

    /// Mean bytes of a request frame and of an answer frame (both with their length
    /// prefixes), the answers measured on the daemon's, which carry the limit state.
    pub fn mean_sizes(&self, live_bytes: f64) -> (f64, f64) {
        let n = self.len().max(1) as f64;
        let expected = (self.answers.total_bytes() + 4 * self.len()) as f64 / n;
        (
            self.requests.total_bytes() as f64 / n,
            expected - NO_LIMITS.len() as f64 + live_bytes,
        )
    }

    /// Bytes the live state of one of this group's answers takes: asks the daemon once.
    pub fn live_bytes(&self, socket: &Path) -> Result<f64> {
        let (mut stream, mut reader) = wire::connect(socket)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        std::io::Write::write_all(&mut stream, self.request(0))?;
        let got = reader.next(&mut stream)?;
        ensure!(
            self.accepts(0, got),
            "{}: {}",
            self.group.name,
            self.describe_wrong(got, self.answer(0))
        );
        Ok((got.len() + NO_LIMITS.len() - self.answer(0).len()) as f64)
    }
}

impl Protocol for GroupMix {
    type Framing = LengthPrefixed;

    fn connect(
        &self,
        socket: &Path,
    ) -> Result<(std::os::unix::net::UnixStream, Reader<LengthPrefixed>)> {
        wire::connect(socket)
    }

    #[inline]
    fn len(&self) -> usize {
        self.requests.len()
    }

    #[inline]
    fn request(&self, i: usize) -> &[u8] {
        self.requests.get(i)
    }

    #[inline]
    fn answer(&self, i: usize) -> &[u8] {
        self.answers.get(i)
    }

    /// Everything up to the limit state must be the expected bytes (so the code is `valid`
    /// and the key the one asked about); the limit state must be there as the group has it.
    #[inline]
    fn accepts(&self, i: usize, got: &[u8]) -> bool {
        let expected = self.answer(i);
        let fixed = &expected[..expected.len() - NO_LIMITS.len()];
        got.strip_prefix(fixed)
            .is_some_and(|live| self.live_state_fits(live))
    }

    fn describe_wrong(&self, got: &[u8], expected: &[u8]) -> String {
        crate::load::describe_wrong(got, expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use authenta_client::proto::{RateLimitState, VerifyAnswer};

    fn key(n: usize) -> SeededKey {
        SeededKey {
            id: format!("key_{n:016}"),
            token: format!("api_token{n}"),
            permissions: vec![Permission::Read, Permission::Write],
            environment: Some("production".into()),
            name: format!("bench-{n}"),
        }
    }

    /// The answer the daemon would send to request `i` with this limit state.
    fn answer(mix: &GroupMix, i: usize, live: (Option<RateLimitState>, Option<u64>)) -> Vec<u8> {
        let response: Response = proto::decode(mix.answer(i)).expect("decodes");
        let ResponseBody::Verify(answer) = response.body else {
            panic!("not a verify answer");
        };
        let answer = VerifyAnswer {
            ratelimit: live.0,
            remaining: live.1,
            ..answer
        };
        proto::encode(&Response {
            id: response.id,
            body: ResponseBody::Verify(answer),
        })
        .expect("encodes")
    }

    #[test]
    fn answers_pass_with_the_limit_state_their_group_has_and_only_valid() {
        let keys: Vec<SeededKey> = (0..5).map(key).collect();
        let state = RateLimitState {
            limit: 7,
            remaining: 6,
            reset_at: 1_700_000_000_001,
            retry_at: 1_700_000_000_000,
        };
        let plain = GroupMix::build(GROUPS[0], &keys).expect("builds");
        let both = GroupMix::build(GROUPS[4], &keys).expect("builds");
        assert_eq!(plain.len(), 5);
        assert!(plain.accepts(2, plain.answer(2)));
        assert!(!plain.accepts(2, plain.answer(3)), "another key's answer");
        assert!(!plain.accepts(2, &answer(&plain, 2, (Some(state), None))));
        assert!(both.accepts(2, &answer(&both, 2, (Some(state), Some(41)))));
        assert!(!both.accepts(2, &answer(&both, 2, (None, Some(41)))));
        assert!(!both.accepts(2, both.answer(2)));

        let mut refused: Response =
            proto::decode(&answer(&both, 2, (Some(state), Some(0)))).expect("decodes");
        if let ResponseBody::Verify(a) = &mut refused.body {
            a.code = VerifyCode::UsageExceeded;
        }
        let refused = proto::encode(&refused).expect("encodes");
        assert!(!both.accepts(2, &refused));
        assert!(both
            .describe_wrong(&refused, both.answer(2))
            .contains("UsageExceeded"));
    }
}
