//! Key changes pipelined on one connection, handed to the store thread together.
//!
//! A connection answers its requests in order, and an admin request waits for its commit
//! before the next one is read. A bulk import pipelines creates by the thousand, a script
//! revoking or updating many keys pipelines those, and one at a time each waited for a
//! commit of its own, paying for a WAL write and an `fsync`.
//!
//! So a run of key changes (create, regenerate, revoke, update) at the front of a
//! connection's input is checked and handed to the store thread at once, in order, and
//! their answers are sent in that order once each is committed. They share commits, and
//! nothing else changes: each change is checked, refused or made on its own as before, and
//! a request after the run (another admin request, or a verify that may name a key just
//! changed) is read only once the whole run is answered. A change naming a key that one
//! earlier in the run names ends the run, so that each answer shows its key as that change
//! left it, as it would one request at a time.
//!
//! Only for peers that may administer: anyone else's admin request is refused one at a
//! time, as before, and nothing of theirs is decoded ahead. And only on one host: a fleet
//! node publishes each change it proposes on its own task, so a run would reach the stream
//! in any order, each waiting for the fleet to apply it.

use crate::access::Peer;
use crate::daemon::Daemon;
use crate::server::admin::{kind, write_error};
use crate::server::connection::whole_frame;
use crate::server::input::Input;
use crate::server::key_change::{names, KeyChange, Names};
use crate::store::writer::WriterHandle;
use crate::time;
use authenta_client::proto::{self, Actor, Request, RequestBody, Response, ResponseBody};
use std::collections::HashSet;

/// Most changes handed over together from one connection (the store thread's batch holds
/// 512): enough to share a commit with the other connections' changes.
const MOST_TOGETHER: usize = 256;

/// Whether `body` from `peer` starts a run: a key change, on one host, from a peer that
/// may administer.
pub(super) fn apply_to(daemon: &Daemon, peer: &Peer, body: &RequestBody) -> bool {
    names(body).is_some() && daemon.fleet.is_none() && daemon.access().may_admin(peer)
}

/// Answers `first` (a key change: see [`apply_to`]) and the key changes right behind it
/// in `input`, which it consumes. `peer` must be one that may administer.
pub(super) async fn answer(
    daemon: &Daemon,
    peer: &Peer,
    first: Request,
    input: &mut Input,
) -> Vec<Response> {
    debug_assert!(daemon.access().may_admin(peer));
    let run = take_run(first, input);
    let actor = Actor::Peer {
        uid: peer.uid,
        pid: peer.pid,
    };
    // All handed over before the first answer is awaited, so that they share commits.
    let handed: Vec<_> = run
        .into_iter()
        .map(|Request { id, body }| {
            let kind = kind(&body);
            let sent = KeyChange::of(daemon, body, actor.clone()).and_then(|change| {
                let waiting = daemon.writer.send(change.command).map_err(write_error)?;
                Ok((waiting, change.answer_with))
            });
            (id, kind, sent)
        })
        .collect();
    let mut responses = Vec::with_capacity(handed.len());
    for (id, kind, sent) in handed {
        let made = match sent {
            // Each answer as of its own commit, not the run's start.
            Ok((waiting, answer_with)) => WriterHandle::wait(waiting)
                .await
                .map_err(write_error)
                .and_then(|outcome| answer_with.answer(daemon, outcome, time::now_ms())),
            Err(refused) => Err(refused),
        };
        let body = made.unwrap_or_else(ResponseBody::Error);
        daemon
            .metrics
            .admin(kind, !matches!(body, ResponseBody::Error(_)));
        responses.push(Response { id, body });
    }
    responses
}

/// `first` and the key changes at the front of `input` after it, up to [`MOST_TOGETHER`],
/// taken out of `input`. Stops at anything else (a partial frame, another request, a frame
/// that does not decode, a change to a key already named in the run), which is left for
/// the connection's own path.
fn take_run(first: Request, input: &mut Input) -> Vec<Request> {
    let mut named = HashSet::new();
    let mut note = |body: &RequestBody| match names(body) {
        Some(Names::Key(key)) => named.insert(key.to_owned()),
        Some(Names::NewKey) => true,
        None => false,
    };
    note(&first.body);
    let mut run = vec![first];
    while run.len() < MOST_TOGETHER {
        let Some(Ok(len)) = whole_frame(input.bytes()) else {
            break;
        };
        let payload = &input.bytes()[4..4 + len];
        let Ok(request) = proto::decode::<Request>(payload) else {
            break;
        };
        if !note(&request.body) {
            break;
        }
        input.consume(4 + len);
        run.push(request);
    }
    run
}
