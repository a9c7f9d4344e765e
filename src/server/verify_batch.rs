//! Answering verifies: runs of pipelined verifies from one peer, decided by
//! [`decide_run`] under one read of the index, their answers encoded without allocating.

use crate::access::Peer;
use crate::daemon::Daemon;
use crate::index::verify::decide_run;
use crate::index::Maps;
use crate::metrics::VerifyTally;
use crate::time;
use authenta_client::answer_frame::push_verify_answer;
use authenta_client::proto::{self, ErrorAnswer, ErrorCode, Response, ResponseBody};
use authenta_client::verify_wire::VerifyRequestRef;
use std::sync::RwLockReadGuard;

/// A run of pipelined verifies from one peer, answered under one read of the index, one
/// look at the access rules and one clock reading: each of those touches memory shared by
/// every connection thread, which a verify should not pay for one by one.
pub(crate) struct VerifyBatch<'d> {
    daemon: &'d Daemon,
    peer: &'d Peer,
    may_verify: bool,
    maps: RwLockReadGuard<'d, Maps>,
    now: i64,
    tally: VerifyTally,
}

impl<'d> VerifyBatch<'d> {
    pub fn new(daemon: &'d Daemon, peer: &'d Peer) -> Self {
        VerifyBatch {
            daemon,
            peer,
            may_verify: daemon.access().may_verify(peer),
            maps: daemon.index.read(),
            now: time::now_ms(),
            tally: VerifyTally::default(),
        }
    }

    /// Answers a run of pipelined verifies (at most [`crate::index::RUN_MAX`]), appending
    /// their answer frames to `out` in order (see [`decide_run`]).
    pub fn answer_run(
        &mut self,
        run: &[Option<VerifyRequestRef<'_>>],
        out: &mut Vec<u8>,
    ) -> Result<(), proto::ProtoError> {
        if !self.may_verify {
            // Once per run: a refused peer pipelining verifies must not flood the log.
            tracing::warn!(uid = self.peer.uid, pid = ?self.peer.pid, requests = run.len(), "verify refused: peer is not in verify_gids");
            for request in run.iter().flatten() {
                let refused = Response {
                    id: request.id,
                    body: verify_refused(),
                };
                proto::push_frame(&refused, out)?;
            }
            return Ok(());
        }
        let tally = &mut self.tally;
        decide_run(&self.maps, run, self.now, |id, answer| {
            tally.count(answer.code);
            push_verify_answer(id, answer, out)
        })
    }
}

impl Drop for VerifyBatch<'_> {
    fn drop(&mut self) {
        self.daemon.metrics.add_verifies(&self.tally);
    }
}

fn verify_refused() -> ResponseBody {
    ResponseBody::Error(ErrorAnswer {
        code: ErrorCode::PermissionDenied,
        message: "this uid may not verify: ask the operator to add your group to verify_gids"
            .into(),
    })
}
