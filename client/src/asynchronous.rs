//! The tokio-based [`AsyncClient`].

use crate::error::Error;
use crate::frame::{decode_answer, encode_requests, frame_len, push_frame};
use crate::outcome::{self, Denied, Verified};
use crate::proto::{
    self, AuditReport, CreateKey, Hello, HelloReply, KeyInfo, NewToken, Permission, RequestBody,
    ResponseBody, StatusInfo, VerifyAnswer, VerifyRequest, PROTOCOL_VERSION,
};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// An async connection to authenta-keyd, for tokio apps. Like [`crate::Client`], it connects
/// on first use and again after a failure. Calls take `&mut self`: give each task its own
/// client, or put one behind a `tokio::sync::Mutex`.
pub struct AsyncClient {
    path: PathBuf,
    stream: Option<UnixStream>,
    timeout: Duration,
    next_id: u64,
    out: Vec<u8>,
    payload: Vec<u8>,
    frame: Vec<u8>,
}

impl AsyncClient {
    /// A client for the socket at `path`; nothing is connected until the first call.
    pub fn new(path: impl AsRef<Path>) -> Self {
        AsyncClient {
            path: path.as_ref().to_path_buf(),
            stream: None,
            timeout: Duration::from_secs(5),
            next_id: 1,
            out: Vec::with_capacity(256),
            payload: Vec::with_capacity(256),
            frame: Vec::with_capacity(256),
        }
    }

    /// Connects and handshakes now.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self, Error> {
        let mut client = AsyncClient::new(path);
        client.ensure_connected().await?;
        Ok(client)
    }

    /// Time limit of each call (default 5 s).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    async fn ensure_connected(&mut self) -> Result<(), Error> {
        if self.stream.is_some() {
            return Ok(());
        }
        let mut stream =
            UnixStream::connect(&self.path)
                .await
                .map_err(|source| Error::Connect {
                    path: self.path.clone(),
                    source,
                })?;
        let hello = proto::encode(&Hello {
            version: PROTOCOL_VERSION,
            agent: crate::AGENT.into(),
        })?;
        self.out.clear();
        push_frame(&mut self.out, &hello);
        stream.write_all(&self.out).await?;
        read_frame(&mut stream, &mut self.frame).await?;
        match proto::decode::<HelloReply>(&self.frame)? {
            HelloReply::Welcome { .. } => {
                self.stream = Some(stream);
                Ok(())
            }
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
    pub async fn call_many(
        &mut self,
        bodies: Vec<RequestBody>,
    ) -> Result<Vec<ResponseBody>, Error> {
        let limit = self.timeout;
        let result = match tokio::time::timeout(limit, self.call_many_once(bodies)).await {
            Ok(result) => result,
            Err(_) => Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {limit:?}"),
            ))),
        };
        if let Err(e) = &result {
            if e.breaks_connection() {
                self.stream = None;
            }
        }
        result
    }

    async fn call_many_once(
        &mut self,
        bodies: Vec<RequestBody>,
    ) -> Result<Vec<ResponseBody>, Error> {
        self.ensure_connected().await?;
        let ids = encode_requests(bodies, &mut self.next_id, &mut self.payload, &mut self.out)?;
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| Error::Unexpected("no connection".into()))?;
        stream.write_all(&self.out).await?;
        let mut answers = Vec::with_capacity(ids.clone().count());
        for id in ids {
            read_frame(stream, &mut self.frame).await?;
            answers.push(decode_answer(&self.frame, id)?);
        }
        Ok(answers)
    }

    /// Sends one request and waits for its answer.
    pub async fn call(&mut self, body: RequestBody) -> Result<ResponseBody, Error> {
        let mut answers = self.call_many(vec![body]).await?;
        answers
            .pop()
            .ok_or_else(|| Error::Unexpected("no answer".into()))
    }

    /// Is `token` valid and does it hold every one of `permissions`?
    pub async fn verify(
        &mut self,
        token: &str,
        permissions: &[Permission],
    ) -> Result<Verified, Denied> {
        self.verify_in(token, permissions, None).await
    }

    /// Like [`AsyncClient::verify`], and the key must also carry the `environment` label.
    pub async fn verify_in(
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
        let answer = self
            .verify_answer(request)
            .await
            .map_err(Denied::Unavailable)?;
        outcome::verify_outcome(answer)
    }

    /// The daemon's full answer to a verify, retried once on a broken connection.
    pub async fn verify_answer(&mut self, request: VerifyRequest) -> Result<VerifyAnswer, Error> {
        let had_connection = self.stream.is_some();
        match self.call(RequestBody::Verify(request.clone())).await {
            Err(Error::Io(_)) if had_connection => {
                outcome::expect_verify(self.call(RequestBody::Verify(request)).await?)
            }
            other => outcome::expect_verify(other?),
        }
    }

    /// Creates a key; the answer holds its token, shown this once.
    pub async fn create_key(&mut self, request: CreateKey) -> Result<NewToken, Error> {
        outcome::expect_created(self.call(RequestBody::CreateKey(request)).await?)
    }

    /// All keys, fetched page by page.
    pub async fn list_keys(&mut self) -> Result<Vec<KeyInfo>, Error> {
        self.list_keys_of(None).await
    }

    /// All keys of one owner (all keys when `None`), fetched page by page.
    pub async fn list_keys_of(&mut self, owner_id: Option<&str>) -> Result<Vec<KeyInfo>, Error> {
        let mut keys = Vec::new();
        let mut after = None;
        loop {
            let page = outcome::expect_keys(
                self.call(RequestBody::ListKeys {
                    after: after.take(),
                    owner_id: owner_id.map(str::to_owned),
                })
                .await?,
            )?;
            keys.extend(page.keys);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(keys),
            }
        }
    }

    /// One key by id.
    pub async fn show_key(&mut self, id: &str) -> Result<KeyInfo, Error> {
        outcome::expect_key(self.call(RequestBody::ShowKey { id: id.into() }).await?)
    }

    /// A new token for the key; the old one dies at once unless `grace_secs` keeps it.
    pub async fn regenerate(
        &mut self,
        id: &str,
        grace_secs: Option<u64>,
    ) -> Result<NewToken, Error> {
        let body = RequestBody::Regenerate {
            id: id.into(),
            grace_secs,
            expires_in_secs: None,
        };
        outcome::expect_created(self.call(body).await?)
    }

    /// Revokes the key for good.
    pub async fn revoke(&mut self, id: &str, reason: Option<String>) -> Result<KeyInfo, Error> {
        let body = RequestBody::Revoke {
            id: id.into(),
            reason,
        };
        outcome::expect_key(self.call(body).await?)
    }

    /// Changes a key in place; its token stays the same.
    pub async fn update_key(&mut self, update: proto::UpdateKey) -> Result<KeyInfo, Error> {
        outcome::expect_key(self.call(RequestBody::UpdateKey(update)).await?)
    }

    /// Creates or changes an owner's shared limits.
    pub async fn set_owner(
        &mut self,
        update: proto::OwnerUpdate,
    ) -> Result<proto::OwnerInfo, Error> {
        outcome::expect_owner(self.call(RequestBody::SetOwner(update)).await?)
    }

    /// One owner's limits and where they stand.
    pub async fn show_owner(&mut self, id: &str) -> Result<proto::OwnerInfo, Error> {
        outcome::expect_owner(self.call(RequestBody::ShowOwner { id: id.into() }).await?)
    }

    /// Daemon health and counts.
    pub async fn status(&mut self) -> Result<StatusInfo, Error> {
        outcome::expect_status(self.call(RequestBody::Status).await?)
    }

    /// The whole audit log, fetched page by page; with `verify`, its hash chain is checked.
    pub async fn audit(&mut self, verify: bool) -> Result<AuditReport, Error> {
        let mut report =
            outcome::expect_audit(self.call(RequestBody::Audit { verify, after: 0 }).await?)?;
        while let Some(after) = report.next.take() {
            let page = outcome::expect_audit(
                self.call(RequestBody::Audit {
                    verify: false,
                    after,
                })
                .await?,
            )?;
            report.entries.extend(page.entries);
            report.next = page.next;
        }
        Ok(report)
    }

    /// Whether the daemon is ready (any peer that may connect may ask).
    pub async fn health(&mut self) -> Result<proto::HealthReport, Error> {
        outcome::expect_health(self.call(RequestBody::Health).await?)
    }

    /// The policy file's state and the coming rotations.
    pub async fn policy_status(&mut self) -> Result<proto::PolicyReport, Error> {
        outcome::expect_policy(self.call(RequestBody::PolicyStatus).await?)
    }

    /// Re-wraps the store's data key under `new_master_key` (32 bytes).
    pub async fn rekey(&mut self, new_master_key: Vec<u8>) -> Result<String, Error> {
        let body = RequestBody::Rekey {
            new_master_key: proto::SecretBytes(new_master_key),
        };
        outcome::expect_done(self.call(body).await?)
    }
}

async fn read_frame(stream: &mut UnixStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).await?;
    buf.resize(frame_len(prefix)?, 0);
    stream.read_exact(buf).await?;
    Ok(())
}
