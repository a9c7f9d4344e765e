//! How fast a script that pipelines admin changes gets them made: creates `KEYS` keys,
//! then renames, regenerates and revokes every one of them, each step pipelined over
//! `CONNECTIONS` connections in runs of 512 requests (`Client::call_many`), every answer
//! checked. Prints each step's changes a second.
//!
//! ```sh
//! cargo run --release -p authenta-bench --example bulk_changes -- SOCKET [KEYS] [CONNECTIONS]
//! ```
//!
//! The socket's daemon must let this user administer, and gets `KEYS` more keys (revoked
//! at the end).

use anyhow::{bail, Context, Result};
use authenta_client::proto::{CreateKey, Permission, RequestBody, ResponseBody, UpdateKey};
use authenta_client::Client;
use std::path::Path;
use std::time::Instant;

/// Requests written together by one connection.
const RUN: usize = 512;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let socket = args
        .next()
        .context("usage: bulk_changes SOCKET [KEYS] [CONNECTIONS]")?;
    let keys: usize = args.next().map_or(Ok(20_000), |n| n.parse())?;
    let connections: usize = args.next().map_or(Ok(4), |n| n.parse())?;
    let socket = Path::new(&socket);

    let creates = (0..keys)
        .map(|i| {
            RequestBody::CreateKey(CreateKey {
                name: format!("bulk-{i}"),
                permissions: vec![Permission::Read],
                ..Default::default()
            })
        })
        .collect();
    let ids: Vec<String> = step(socket, connections, "create", creates)?
        .into_iter()
        .map(|answer| match answer {
            ResponseBody::Created(made) => Ok(made.key.id),
            other => bail!("a create answered {other:?}"),
        })
        .collect::<Result<_>>()?;
    // Each step: what it is, the request for one key, what its answer must be.
    type Step = (
        &'static str,
        fn(&str) -> RequestBody,
        fn(&ResponseBody) -> bool,
    );
    let steps: [Step; 3] = [
        (
            "update",
            |id| {
                RequestBody::UpdateKey(UpdateKey {
                    id: id.to_owned(),
                    name: Some(format!("renamed-{id}")),
                    ..Default::default()
                })
            },
            |answer| matches!(answer, ResponseBody::Key(_)),
        ),
        (
            "regenerate",
            |id| RequestBody::Regenerate {
                id: id.to_owned(),
                grace_secs: Some(0),
                expires_in_secs: None,
            },
            |answer| matches!(answer, ResponseBody::Created(_)),
        ),
        (
            "revoke",
            |id| RequestBody::Revoke {
                id: id.to_owned(),
                reason: None,
            },
            |answer| matches!(answer, ResponseBody::Key(k) if k.revoked_at.is_some()),
        ),
    ];
    for (what, request, ok) in steps {
        let bodies = ids.iter().map(|id| request(id)).collect();
        let answers = step(socket, connections, what, bodies)?;
        if let Some(wrong) = answers.iter().find(|a| !ok(a)) {
            bail!("a {what} answered {wrong:?}");
        }
    }
    Ok(())
}

/// Sends `bodies` split over `connections`, each pipelining runs of [`RUN`]; returns the
/// answers in the order of `bodies` and prints the rate.
fn step(
    socket: &Path,
    connections: usize,
    what: &str,
    bodies: Vec<RequestBody>,
) -> Result<Vec<ResponseBody>> {
    let total = bodies.len();
    let share = total.div_ceil(connections.max(1)).max(1);
    let mut shares: Vec<Vec<RequestBody>> = Vec::new();
    let mut bodies = bodies.into_iter().peekable();
    while bodies.peek().is_some() {
        shares.push(bodies.by_ref().take(share).collect());
    }
    let started = Instant::now();
    let answers = std::thread::scope(|scope| {
        let threads: Vec<_> = shares
            .into_iter()
            .map(|share| {
                scope.spawn(move || -> Result<Vec<ResponseBody>> {
                    let mut client = Client::connect(socket).context("connecting")?;
                    let mut answers = Vec::with_capacity(share.len());
                    let mut share = share.into_iter().peekable();
                    while share.peek().is_some() {
                        let run: Vec<RequestBody> = share.by_ref().take(RUN).collect();
                        answers.extend(client.call_many(run).context("a run of changes")?);
                    }
                    Ok(answers)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| bail!("a connection panicked")))
            .collect::<Result<Vec<_>>>()
    })?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{what}: {total} in {secs:.2} s, {:.0} a second",
        total as f64 / secs
    );
    Ok(answers.into_iter().flatten().collect())
}
