//! What a verify means for the app: [`Verified`] or [`Denied`], and the mapping from
//! answers to call results shared by both clients.

use crate::proto::{
    AuditReport, HealthReport, KeyInfo, KeyPage, Meta, NewToken, Permission, PolicyReport,
    RateLimitState, ResponseBody, StatusInfo, VerifyAnswer, VerifyCode,
};
use crate::Error;
use std::fmt;

/// A key that may do what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub key_id: String,
    /// Everything the key may do (at least what was asked).
    pub permissions: Vec<Permission>,
    pub environment: Option<String>,
    /// When the key is due for rotation (unix milliseconds), if a policy says so.
    pub rotate_by: Option<i64>,
    /// The key is within its policy's warning window: rotate it soon.
    pub rotation_due: bool,
    pub name: Option<String>,
    /// The tenant the key belongs to.
    pub owner_id: Option<String>,
    pub meta: Meta,
    pub expires_at: Option<i64>,
    /// The rate limit after this verify, when the key (or its owner) has one.
    pub ratelimit: Option<RateLimitState>,
    /// Credits left, when the key (or its owner) has a balance.
    pub remaining: Option<u64>,
}

/// A refused verify. Every variant is a refusal, so `Err(_)` always means "do not serve".
#[derive(Debug)]
pub enum Denied {
    /// The daemon refused the key: 401 (`malformed`, `unknown`, `revoked`, `expired`,
    /// `wrong_environment`), 403 (`insufficient_permissions`) or 429 (`rate_limited`,
    /// `usage_exceeded`).
    Rejected {
        code: VerifyCode,
        /// The key the token belongs to, when one matched.
        key_id: Option<String>,
        /// For `rate_limited`: when to try again (`retry_at`).
        ratelimit: Option<RateLimitState>,
    },
    /// The daemon could not be asked (503): the app must fail closed.
    Unavailable(Error),
}

impl Denied {
    /// The HTTP-style status to answer with: 401, 403, or 503 when the daemon is unreachable.
    pub fn status(&self) -> u16 {
        match self {
            Denied::Rejected { code, .. } => code.status(),
            Denied::Unavailable(_) => 503,
        }
    }

    /// The verify code, when the daemon answered.
    pub fn code(&self) -> Option<VerifyCode> {
        match self {
            Denied::Rejected { code, .. } => Some(*code),
            Denied::Unavailable(_) => None,
        }
    }
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denied::Rejected { code, .. } => write!(f, "{} {code}", code.status()),
            Denied::Unavailable(error) => write!(f, "503 unavailable: {error}"),
        }
    }
}

impl std::error::Error for Denied {}

/// Turns a verify answer into the app's view of it.
pub(crate) fn verify_outcome(answer: VerifyAnswer) -> Result<Verified, Denied> {
    match (answer.code, answer.key_id) {
        (VerifyCode::Valid, Some(key_id)) => Ok(Verified {
            key_id,
            permissions: answer.permissions,
            environment: answer.environment,
            rotate_by: answer.rotate_by,
            rotation_due: answer.rotation_due,
            name: answer.name,
            owner_id: answer.owner_id,
            meta: answer.meta,
            expires_at: answer.expires_at,
            ratelimit: answer.ratelimit,
            remaining: answer.remaining,
        }),
        (VerifyCode::Valid, None) => Err(Denied::Unavailable(Error::Unexpected(
            "a valid answer without a key id".into(),
        ))),
        (code, key_id) => Err(Denied::Rejected {
            code,
            key_id,
            ratelimit: answer.ratelimit,
        }),
    }
}

/// Turns an error answer into [`Error::Refused`], any other into `Ok`.
pub(crate) fn refuse_errors(body: ResponseBody) -> Result<ResponseBody, Error> {
    match body {
        ResponseBody::Error(e) => Err(Error::Refused {
            code: e.code,
            message: e.message,
        }),
        other => Ok(other),
    }
}

fn unexpected(body: &ResponseBody) -> Error {
    Error::Unexpected(format!("{body:?}").chars().take(200).collect())
}

pub(crate) fn expect_verify(body: ResponseBody) -> Result<VerifyAnswer, Error> {
    match refuse_errors(body)? {
        ResponseBody::Verify(answer) => Ok(answer),
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn expect_created(body: ResponseBody) -> Result<NewToken, Error> {
    match refuse_errors(body)? {
        ResponseBody::Created(created) => Ok(created),
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn expect_key(body: ResponseBody) -> Result<KeyInfo, Error> {
    match refuse_errors(body)? {
        ResponseBody::Key(key) => Ok(key),
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn expect_keys(body: ResponseBody) -> Result<KeyPage, Error> {
    match refuse_errors(body)? {
        ResponseBody::Keys(page) => Ok(page),
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn expect_status(body: ResponseBody) -> Result<StatusInfo, Error> {
    match refuse_errors(body)? {
        ResponseBody::Status(status) => Ok(status),
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn expect_owner(body: ResponseBody) -> Result<crate::proto::OwnerInfo, Error> {
    match refuse_errors(body)? {
        ResponseBody::Owner(owner) => Ok(owner),
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn expect_done(body: ResponseBody) -> Result<String, Error> {
    match refuse_errors(body)? {
        ResponseBody::Done(message) => Ok(message),
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn expect_policy(body: ResponseBody) -> Result<PolicyReport, Error> {
    match refuse_errors(body)? {
        ResponseBody::Policy(report) => Ok(report),
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn expect_health(body: ResponseBody) -> Result<HealthReport, Error> {
    match refuse_errors(body)? {
        ResponseBody::Health(report) => Ok(report),
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn expect_audit(body: ResponseBody) -> Result<AuditReport, Error> {
    match refuse_errors(body)? {
        ResponseBody::Audit(report) => Ok(report),
        other => Err(unexpected(&other)),
    }
}
