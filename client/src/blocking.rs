//! The blocking [`Client`].

use crate::error::Error;
use crate::frame::{decode_answer, encode_requests, push_frame, read_frame, write_all};
use crate::outcome::{self, Denied, Verified};
use crate::proto::{
    self, AuditReport, CreateKey, Hello, HelloReply, KeyInfo, NewToken, Permission, RequestBody,
    ResponseBody, StatusInfo, VerifyAnswer, VerifyRequest, PROTOCOL_VERSION,
};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Changes written together by [`Client::revoke_many`]: the most the daemon hands its
/// store thread from one connection at a time.
const CHANGES_TOGETHER: usize = 256;

/// A blocking connection to authenta-keyd. Connects on first use and again after a failure,
/// so a daemon restart costs the app one refused call at most (a verify is retried once).
pub struct Client {
    path: PathBuf,
    stream: Option<UnixStream>,
    timeout: Option<Duration>,
    next_id: u64,
    out: Vec<u8>,
    payload: Vec<u8>,
    frame: Vec<u8>,
}

impl Client {
    /// A client for the socket at `path`; nothing is connected until the first call.
    pub fn new(path: impl AsRef<Path>) -> Self {
        Client {
            path: path.as_ref().to_path_buf(),
            stream: None,
            timeout: Some(Duration::from_secs(5)),
            next_id: 1,
            out: Vec::with_capacity(256),
            payload: Vec::with_capacity(256),
            frame: Vec::with_capacity(256),
        }
    }

    /// Connects and handshakes now, so a wrong path or version shows at once.
    pub fn connect(path: impl AsRef<Path>) -> Result<Self, Error> {
        let mut client = Client::new(path);
        client.stream()?;
        Ok(client)
    }

    /// Read and write timeout of each call (default 5 s; `None` waits forever).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
        if let Some(stream) = &self.stream {
            let _ = stream.set_read_timeout(timeout);
            let _ = stream.set_write_timeout(timeout);
        }
    }

    fn stream(&mut self) -> Result<&mut UnixStream, Error> {
        if self.stream.is_none() {
            let stream = UnixStream::connect(&self.path).map_err(|source| Error::Connect {
                path: self.path.clone(),
                source,
            })?;
            stream.set_read_timeout(self.timeout)?;
            stream.set_write_timeout(self.timeout)?;
            self.stream = Some(stream);
            if let Err(e) = self.handshake() {
                self.stream = None;
                return Err(e);
            }
        }
        self.stream
            .as_mut()
            .ok_or_else(|| Error::Unexpected("no connection".into()))
    }

    fn handshake(&mut self) -> Result<(), Error> {
        let hello = Hello {
            version: PROTOCOL_VERSION,
            agent: crate::AGENT.into(),
        };
        let payload = proto::encode(&hello)?;
        self.out.clear();
        push_frame(&mut self.out, &payload);
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| Error::Unexpected("no connection".into()))?;
        write_all(stream, &self.out)?;
        read_frame(stream, &mut self.frame)?;
        match proto::decode::<HelloReply>(&self.frame)? {
            HelloReply::Welcome { .. } => Ok(()),
            // Refused although the versions match: the daemon did not understand the hello.
            HelloReply::Refused { supported, message } if supported == PROTOCOL_VERSION => {
                Err(Error::Refused {
                    code: proto::ErrorCode::BadFrame,
                    message,
                })
            }
            HelloReply::Refused { supported, message } => Err(Error::VersionMismatch {
                supported,
                ours: PROTOCOL_VERSION,
                message,
            }),
            HelloReply::Busy { message } => Err(Error::Refused {
                code: proto::ErrorCode::Busy,
                message,
            }),
        }
    }

    /// Sends requests in one write and reads their answers in order (pipelining).
    pub fn call_many(&mut self, bodies: Vec<RequestBody>) -> Result<Vec<ResponseBody>, Error> {
        let result = self.call_many_once(bodies);
        if let Err(e) = &result {
            if e.breaks_connection() {
                self.stream = None;
            }
        }
        result
    }

    fn call_many_once(&mut self, bodies: Vec<RequestBody>) -> Result<Vec<ResponseBody>, Error> {
        self.stream()?;
        let ids = encode_requests(bodies, &mut self.next_id, &mut self.payload, &mut self.out)?;
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| Error::Unexpected("no connection".into()))?;
        write_all(stream, &self.out)?;
        let mut answers = Vec::with_capacity(ids.clone().count());
        for id in ids {
            read_frame(stream, &mut self.frame)?;
            answers.push(decode_answer(&self.frame, id)?);
        }
        Ok(answers)
    }

    /// Sends one request and waits for its answer.
    pub fn call(&mut self, body: RequestBody) -> Result<ResponseBody, Error> {
        let mut answers = self.call_many(vec![body])?;
        answers
            .pop()
            .ok_or_else(|| Error::Unexpected("no answer".into()))
    }

    /// Is `token` valid and does it hold every one of `permissions`?
    pub fn verify(&mut self, token: &str, permissions: &[Permission]) -> Result<Verified, Denied> {
        self.verify_in(token, permissions, None)
    }

    /// Like [`Client::verify`], and the key must also carry the `environment` label.
    pub fn verify_in(
        &mut self,
        token: &str,
        permissions: &[Permission],
        environment: Option<&str>,
    ) -> Result<Verified, Denied> {
        let request = VerifyRequest {
            token: token.to_owned(),
            permissions: permissions.to_vec(),
            environment: environment.map(str::to_owned),
            cost: None,
        };
        let answer = self.verify_answer(request).map_err(Denied::Unavailable)?;
        outcome::verify_outcome(answer)
    }

    /// The daemon's full answer to a verify, retried once on a broken connection (verify
    /// changes nothing but usage counters, so a retry is safe).
    pub fn verify_answer(&mut self, request: VerifyRequest) -> Result<VerifyAnswer, Error> {
        let had_connection = self.stream.is_some();
        match self.call(RequestBody::Verify(request.clone())) {
            Err(Error::Io(_)) if had_connection => {
                outcome::expect_verify(self.call(RequestBody::Verify(request))?)
            }
            other => outcome::expect_verify(other?),
        }
    }

    /// Creates a key; the answer holds its token, shown this once.
    pub fn create_key(&mut self, request: CreateKey) -> Result<NewToken, Error> {
        outcome::expect_created(self.call(RequestBody::CreateKey(request))?)
    }

    /// All keys, fetched page by page.
    pub fn list_keys(&mut self) -> Result<Vec<KeyInfo>, Error> {
        self.list_keys_of(None)
    }

    /// All keys of one owner (all keys when `None`), fetched page by page.
    pub fn list_keys_of(&mut self, owner_id: Option<&str>) -> Result<Vec<KeyInfo>, Error> {
        let mut keys = Vec::new();
        let mut after = None;
        loop {
            let page = outcome::expect_keys(self.call(RequestBody::ListKeys {
                after: after.take(),
                owner_id: owner_id.map(str::to_owned),
            })?)?;
            keys.extend(page.keys);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(keys),
            }
        }
    }

    /// One key by id.
    pub fn show_key(&mut self, id: &str) -> Result<KeyInfo, Error> {
        outcome::expect_key(self.call(RequestBody::ShowKey { id: id.into() })?)
    }

    /// A new token for the key; the old one dies at once unless `grace_secs` keeps it.
    pub fn regenerate(&mut self, id: &str, grace_secs: Option<u64>) -> Result<NewToken, Error> {
        self.regenerate_with_expiry(id, grace_secs, None)
    }

    /// [`Client::regenerate`], also giving the key a new expiry `expires_in_secs` from now.
    pub fn regenerate_with_expiry(
        &mut self,
        id: &str,
        grace_secs: Option<u64>,
        expires_in_secs: Option<u64>,
    ) -> Result<NewToken, Error> {
        outcome::expect_created(self.call(RequestBody::Regenerate {
            id: id.into(),
            grace_secs,
            expires_in_secs,
        })?)
    }

    /// Revokes the key for good.
    pub fn revoke(&mut self, id: &str, reason: Option<String>) -> Result<KeyInfo, Error> {
        outcome::expect_key(self.call(RequestBody::Revoke {
            id: id.into(),
            reason,
        })?)
    }

    /// Revokes several keys in one exchange, pipelined, so that the daemon makes them in
    /// shared commits: each key's result, in the order of `ids`. `Err` only when the daemon
    /// could not be asked; then some of the keys may be revoked, and asking again is safe
    /// (revoking a revoked key changes nothing).
    pub fn revoke_many(
        &mut self,
        ids: &[String],
        reason: Option<String>,
    ) -> Result<Vec<Result<KeyInfo, Error>>, Error> {
        let mut results = Vec::with_capacity(ids.len());
        for run in ids.chunks(CHANGES_TOGETHER) {
            let bodies = run
                .iter()
                .map(|id| RequestBody::Revoke {
                    id: id.clone(),
                    reason: reason.clone(),
                })
                .collect();
            let answers = self.call_many(bodies)?;
            results.extend(answers.into_iter().map(outcome::expect_key));
        }
        Ok(results)
    }

    /// Changes a key in place; its token stays the same.
    pub fn update_key(&mut self, update: proto::UpdateKey) -> Result<KeyInfo, Error> {
        outcome::expect_key(self.call(RequestBody::UpdateKey(update))?)
    }

    /// Creates or changes an owner's shared limits.
    pub fn set_owner(&mut self, update: proto::OwnerUpdate) -> Result<proto::OwnerInfo, Error> {
        outcome::expect_owner(self.call(RequestBody::SetOwner(update))?)
    }

    /// One owner's limits and where they stand.
    pub fn show_owner(&mut self, id: &str) -> Result<proto::OwnerInfo, Error> {
        outcome::expect_owner(self.call(RequestBody::ShowOwner { id: id.into() })?)
    }

    /// Daemon health and counts.
    pub fn status(&mut self) -> Result<StatusInfo, Error> {
        outcome::expect_status(self.call(RequestBody::Status)?)
    }

    /// The whole audit log, fetched page by page; with `verify`, its hash chain is checked.
    pub fn audit(&mut self, verify: bool) -> Result<AuditReport, Error> {
        let mut report =
            outcome::expect_audit(self.call(RequestBody::Audit { verify, after: 0 })?)?;
        while let Some(after) = report.next.take() {
            let page = outcome::expect_audit(self.call(RequestBody::Audit {
                verify: false,
                after,
            })?)?;
            report.entries.extend(page.entries);
            report.next = page.next;
        }
        Ok(report)
    }

    /// Whether the daemon is ready (any peer that may connect may ask).
    pub fn health(&mut self) -> Result<proto::HealthReport, Error> {
        outcome::expect_health(self.call(RequestBody::Health)?)
    }

    /// The policy file's state and the coming rotations.
    pub fn policy_status(&mut self) -> Result<proto::PolicyReport, Error> {
        outcome::expect_policy(self.call(RequestBody::PolicyStatus)?)
    }

    /// Re-wraps the store's data key under `new_master_key` (32 bytes).
    pub fn rekey(&mut self, new_master_key: Vec<u8>) -> Result<String, Error> {
        let body = RequestBody::Rekey {
            new_master_key: proto::SecretBytes(new_master_key),
        };
        outcome::expect_done(self.call(body)?)
    }
}
