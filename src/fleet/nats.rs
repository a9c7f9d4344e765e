//! The fleet's engine on NATS JetStream: one stream per fleet (file storage, replicated to
//! `replicas` servers), publishes that expect the subject's last sequence, and ordered
//! consumers to read it. Only the stream API is used, which Debian's nats-server 2.9 and
//! current servers share.

use crate::config::FleetConfig;
use crate::fleet::engine::{Bounds, Delivered, Engine, EngineError, Expect, Log, Messages};
use crate::fleet::subjects::Subjects;
use anyhow::{Context, Result};
use async_nats::connection::State;
use async_nats::jetstream::{self, consumer, context, stream};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use std::time::Duration;

/// How long a JetStream request (publish ack, stream info) may take before it counts as
/// the fleet being unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a publish keeps trying while connected but not accepted (a stream leader
/// being elected); past it the write is refused.
const PUBLISH_PATIENCE: Duration = Duration::from_secs(10);
/// How long one pull of a reader waits on the server; heartbeats come at half of it.
const READ_EXPIRES: Duration = Duration::from_secs(4);

pub struct Nats {
    client: async_nats::Client,
    js: jetstream::Context,
    subjects: Subjects,
    replicas: usize,
}

impl Nats {
    /// Starts connecting (in the background: a node serves its replica while NATS is down).
    pub async fn connect(config: &FleetConfig, node: &str, subjects: Subjects) -> Result<Nats> {
        let options = options(config, node).await?;
        let client = options
            .connect(config.servers.as_slice())
            .await
            .context("cannot set up the NATS connection (check [fleet] servers)")?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(REQUEST_TIMEOUT);
        Ok(Nats {
            client,
            js,
            subjects,
            replicas: config.replicas,
        })
    }

    async fn stream(&self, log: Log) -> Result<stream::Stream<()>, EngineError> {
        let name = match log {
            Log::Changes => self.subjects.stream(),
            Log::Usage => self.subjects.usage_stream(),
        };
        self.js.get_stream_no_info(name).await.map_err(unavailable)
    }
}

async fn options(config: &FleetConfig, node: &str) -> Result<async_nats::ConnectOptions> {
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("authenta-keyd {node}"))
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        .max_reconnects(None);
    if let Some(path) = &config.credentials {
        options = options
            .credentials_file(path)
            .await
            .with_context(|| format!("cannot read NATS credentials {}", path.display()))?;
    }
    if let Some(path) = &config.nkey_seed_file {
        options = options.nkey(read_secret(path)?);
    }
    if let Some(user) = &config.user {
        let password = match &config.password_file {
            Some(path) => read_secret(path)?,
            None => String::new(),
        };
        options = options.user_and_password(user.clone(), password);
    }
    if let Some(path) = &config.token_file {
        options = options.token(read_secret(path)?);
    }
    if let Some(ca) = &config.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        options = options
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    Ok(options)
}

/// The message id JetStream deduplicates by. A change that expects a subject's sequence gets
/// `subject@sequence`: two changes made from the same state share it, so at most one is
/// stored even when they reach the stream's leader together (nats-server 2.9 checks the
/// expected sequence against what is already stored, not against changes in flight; the
/// id of a change in flight is staged at once). After the stream lost the subject's last
/// messages it is `subject@sequence<read`, `read` being the last one the node had read,
/// so that it is not taken for the message once published at that sequence. Otherwise the
/// payload's digest, so that a retry is not stored twice.
fn message_id(subject: &str, payload: &[u8], expected: Option<Expect>) -> String {
    match expected {
        Some(Expect { last, read }) if read == last => format!("{subject}@{last}"),
        Some(Expect { last, read }) => format!("{subject}@{last}<{read}"),
        None => {
            let digest = ring::digest::digest(&ring::digest::SHA256, payload);
            hex::encode(&digest.as_ref()[..16])
        }
    }
}

impl Nats {
    /// A publish answered as a duplicate: our own earlier try (its ack was lost) if the
    /// stored message is ours, else another node's change made from the same state.
    async fn ours_or_conflict(&self, seq: u64, payload: &[u8]) -> Result<u64, EngineError> {
        let stream = self.stream(Log::Changes).await?;
        let stored = stream.get_raw_message(seq).await.map_err(unavailable)?;
        if stored.payload.as_ref() == payload {
            Ok(seq)
        } else {
            Err(EngineError::Conflict)
        }
    }
}

fn read_secret(path: &std::path::Path) -> Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text.trim().to_owned())
}

fn unavailable(e: impl std::fmt::Display) -> EngineError {
    EngineError::Unavailable(format!("the fleet's NATS servers did not answer: {e}"))
}

impl Engine for Nats {
    fn connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    async fn prepare(&self) -> Result<(), EngineError> {
        let changes = stream::Config {
            name: self.subjects.stream().to_owned(),
            subjects: self.subjects.changes(),
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            ..stream::Config::default()
        };
        // Usage: only each node's last counts of each key matter.
        let usage = stream::Config {
            name: self.subjects.usage_stream().to_owned(),
            subjects: vec![self.subjects.all_usage()],
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            max_messages_per_subject: 1,
            ..stream::Config::default()
        };
        for config in [changes, usage] {
            let wanted = config.subjects.clone();
            let stream = self
                .js
                .get_or_create_stream(config)
                .await
                .map_err(unavailable)?;
            // A stream made by an older version may lack a subject added since.
            let mut current = stream.cached_info().config.clone();
            let missing: Vec<String> = wanted
                .into_iter()
                .filter(|s| !current.subjects.contains(s))
                .collect();
            if !missing.is_empty() {
                current.subjects.extend(missing);
                self.js.update_stream(current).await.map_err(unavailable)?;
            }
        }
        Ok(())
    }

    async fn publish(
        &self,
        subject: String,
        payload: Vec<u8>,
        expected: Option<Expect>,
    ) -> Result<u64, EngineError> {
        let id = message_id(&subject, &payload, expected);
        let payload = bytes::Bytes::from(payload);
        let deadline = tokio::time::Instant::now() + PUBLISH_PATIENCE;
        loop {
            if !self.connected() {
                return Err(EngineError::Unavailable(
                    "the fleet's NATS servers cannot be reached".into(),
                ));
            }
            let mut message = jetstream::message::PublishMessage::build()
                .payload(payload.clone())
                .message_id(&id);
            if let Some(expected) = expected {
                message = message.expected_last_subject_sequence(expected.last);
            }
            let acked = match self.js.send_publish(subject.clone(), message).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match acked {
                Ok(ack) if ack.duplicate => {
                    return self.ours_or_conflict(ack.sequence, &payload).await
                }
                Ok(ack) => return Ok(ack.sequence),
                Err(e) if e.kind() == context::PublishErrorKind::WrongLastSequence => {
                    return Err(EngineError::Conflict)
                }
                // Connected but JetStream not answering yet (a leader being elected after
                // a restart): worth a few more tries.
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "publish not accepted yet; trying again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
    }

    async fn last_on(&self, subject: String) -> Result<Option<(u64, Vec<u8>)>, EngineError> {
        let stream = self.stream(Log::Changes).await?;
        match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => Ok(Some((message.sequence, message.payload.to_vec()))),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn messages_on(&self, subject: String, from: u64) -> Result<Messages, EngineError> {
        let stream = self.stream(Log::Changes).await?;
        // Each step asks for the subject's first message from a sequence on; None once the
        // walk is over (the end, or an error already given).
        let walk = futures_util::stream::unfold(Some(from.max(1)), move |from| {
            let (stream, subject) = (stream.clone(), subject.clone());
            async move {
                let found = stream
                    .raw_message_builder()
                    .sequence(from?)
                    .next_by_subject(subject)
                    .send()
                    .await;
                match found {
                    Ok(message) => {
                        let next = message.sequence + 1;
                        Some((Ok((message.sequence, message.payload.to_vec())), Some(next)))
                    }
                    Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => None,
                    Err(e) => Some((Err(unavailable(e)), None)),
                }
            }
        });
        Ok(walk.boxed())
    }

    async fn erase(&self, seq: u64) -> Result<(), EngineError> {
        // The server's default for a message delete overwrites it on disk (no_erase false).
        let stream = self.stream(Log::Changes).await?;
        stream
            .delete_message(seq)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn bounds(&self) -> Result<Bounds, EngineError> {
        let stream = self.stream(Log::Changes).await?;
        let info = stream.get_info().await.map_err(unavailable)?;
        Ok(Bounds {
            messages: info.state.messages,
        })
    }

    async fn read(
        &self,
        log: Log,
        from: u64,
    ) -> Result<BoxStream<'static, Result<Delivered, EngineError>>, EngineError> {
        let config = consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from.max(1),
            },
            // Pulls expire (and idle heartbeats come) every few seconds, so that a reader
            // whose server died notices in seconds, not the client's default half minute.
            max_expires: READ_EXPIRES,
            ..Default::default()
        };
        let stream = self.stream(log).await?;
        let consumer = stream.create_consumer(config).await.map_err(unavailable)?;
        let messages = consumer.messages().await.map_err(unavailable)?;
        Ok(messages
            .map(|message| {
                let message = message.map_err(unavailable)?;
                let info = message.info().map_err(unavailable)?;
                Ok(Delivered {
                    seq: info.stream_sequence,
                    pending: info.pending,
                    subject: message.subject.to_string(),
                    payload: message.payload.to_vec(),
                })
            })
            .boxed())
    }
}
