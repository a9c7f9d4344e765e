//! Creates pipelined on one connection, handed to the store thread together.
//!
//! A connection answers its requests in order, and an admin request waits for its commit
//! before the next one is read. A bulk import pipelines creates by the thousand, and one
//! at a time each waited for a commit of its own: a few connections seeding in parallel
//! got batches of two or three creates, each paying for a WAL write and an `fsync`.
//!
//! So a run of creates at the front of a connection's input is checked and handed to the
//! store thread at once, in order, and their answers are sent in that order once each is
//! committed. They share commits, and nothing else changes: each create is checked,
//! refused or made on its own as before, and a request after the run (another admin
//! request, or a verify that may name a key just made) is read only once the whole run is
//! answered.
//!
//! Only for peers that may administer: anyone else's admin request is refused one at a
//! time, as before, and nothing of theirs is decoded ahead. And only on one host: a fleet
//! node publishes each change it proposes on its own task, so a run would reach the stream
//! in any order, each waiting for the fleet to apply it.

use crate::access::Peer;
use crate::daemon::Daemon;
use crate::server::admin::{check_create, issued, write_error};
use crate::server::connection::whole_frame;
use crate::server::input::Input;
use crate::store::writer::{Command, WriterHandle};
use crate::time;
use authenta_client::proto::{
    self, Actor, CreateKey, Request, RequestBody, Response, ResponseBody,
};

/// Most creates handed over together from one connection (the store thread's batch holds
/// 512): enough to share a commit with the other connections' creates.
const MOST_TOGETHER: usize = 256;

/// Whether a create from `peer` starts a run: on one host, from a peer that may administer.
pub(super) fn apply_to(daemon: &Daemon, peer: &Peer) -> bool {
    daemon.fleet.is_none() && daemon.access().may_admin(peer)
}

/// Answers the create `first` (request `id`) and the creates right behind it in `input`,
/// which it consumes. `peer` must be one that may administer.
pub(super) async fn answer(
    daemon: &Daemon,
    peer: &Peer,
    id: u64,
    first: CreateKey,
    input: &mut Input,
) -> Vec<Response> {
    let now = time::now_ms();
    let mut creates = vec![(id, first)];
    take_creates(input, &mut creates);
    // All handed over before the first answer is awaited, so that they share commits.
    let handed: Vec<_> = creates
        .into_iter()
        .map(|(id, params)| {
            let actor = Actor::Peer {
                uid: peer.uid,
                pid: peer.pid,
            };
            let sent = check_create(&params).and_then(|()| {
                let command = Command::Create { params, actor };
                daemon.writer.send(command).map_err(write_error)
            });
            (id, sent)
        })
        .collect();
    let mut responses = Vec::with_capacity(handed.len());
    for (id, sent) in handed {
        let made = match sent {
            Ok(answer) => WriterHandle::wait(answer)
                .await
                .map_err(write_error)
                .and_then(|outcome| issued(daemon, outcome, now)),
            Err(refused) => Err(refused),
        };
        let body = made.unwrap_or_else(ResponseBody::Error);
        daemon
            .metrics
            .admin("create", !matches!(body, ResponseBody::Error(_)));
        responses.push(Response { id, body });
    }
    responses
}

/// Moves the creates at the front of `input` into `creates`, up to [`MOST_TOGETHER`];
/// stops at anything else (a partial frame, another request, a frame that does not
/// decode), which is left for the connection's own path.
fn take_creates(input: &mut Input, creates: &mut Vec<(u64, CreateKey)>) {
    while creates.len() < MOST_TOGETHER {
        let Some(Ok(len)) = whole_frame(input.bytes()) else {
            return;
        };
        let payload = &input.bytes()[4..4 + len];
        let Ok(Request {
            id,
            body: RequestBody::CreateKey(params),
        }) = proto::decode::<Request>(payload)
        else {
            return;
        };
        input.consume(4 + len);
        creates.push((id, params));
    }
}
