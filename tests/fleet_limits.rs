//! Credits across a fleet: each node enforces a balance against its own spending plus what
//! the other nodes last published, so a fleet can overshoot a balance by at most what the
//! other nodes spend between two publishes. Three daemons on a real 3-server JetStream
//! cluster, each driven at a steady rate until the balance is gone everywhere.

mod common;

use authenta_client::proto::VerifyRequest;
use authenta_client::{Client, VerifyCode};
use common::fleet::{wait_until, Fleet};
use std::time::{Duration, Instant};

/// The balance spent by the whole fleet.
const BALANCE: u64 = 300;
/// Each node's pace: one verify per this.
const PACE: Duration = Duration::from_millis(10);
/// How stale one node's view of another's spending may be: the usage flush interval of
/// the fleet's config (250 ms), a flush that waits behind the previous one, and delivery.
const STALENESS: Duration = Duration::from_millis(1_000);

/// Verifies `token` on one node at a steady pace until the node refuses it 20 times in a
/// row (or 20 s pass); returns (allowed, verifies per second).
fn spend(socket: std::path::PathBuf, token: String) -> (u64, f64) {
    let mut client = Client::new(&socket);
    let started = Instant::now();
    let (mut allowed, mut asked, mut refused_in_a_row) = (0u64, 0u64, 0);
    while refused_in_a_row < 20 && started.elapsed() < Duration::from_secs(20) {
        let answer = client
            .verify_answer(VerifyRequest {
                token: token.clone(),
                permissions: vec![],
                environment: None,
                cost: None,
            })
            .expect("the node answers");
        asked += 1;
        match answer.code {
            VerifyCode::Valid => {
                allowed += 1;
                refused_in_a_row = 0;
            }
            VerifyCode::UsageExceeded => refused_in_a_row += 1,
            other => panic!("unexpected {other:?}"),
        }
        std::thread::sleep(PACE);
    }
    (allowed, asked as f64 / started.elapsed().as_secs_f64())
}

#[test]
fn a_fleet_overshoots_a_balance_by_at_most_what_the_others_spend_between_publishes() {
    let fleet = Fleet::start(3);
    let balance = BALANCE.to_string();
    let (id, token) = fleet.nodes[0].create("Shared", "read", &["--remaining", &balance]);
    for node in &fleet.nodes {
        wait_until("the key on every node", Duration::from_secs(10), || {
            node.cli(&["keys", "show", &id]).status.success()
        });
    }
    let spenders: Vec<_> = fleet
        .nodes
        .iter()
        .map(|node| {
            let (socket, token) = (node.socket.clone(), token.clone());
            std::thread::spawn(move || spend(socket, token))
        })
        .collect();
    let results: Vec<(u64, f64)> = spenders
        .into_iter()
        .map(|s| s.join().expect("spender"))
        .collect();
    let total: u64 = results.iter().map(|r| r.0).sum();
    let fastest = results.iter().map(|r| r.1).fold(0.0, f64::max);
    // The others' spending a node may not have seen yet when it allows its last verify.
    let others = (fleet.nodes.len() - 1) as f64;
    let bound = BALANCE + (others * fastest * STALENESS.as_secs_f64()).ceil() as u64;
    eprintln!("allowed per node {results:?}, total {total}, bound {bound}");
    assert!(
        total >= BALANCE,
        "the fleet must serve the whole balance: {total}"
    );
    assert!(
        total <= bound,
        "overshoot past the bound: {total} allowed of {BALANCE} (bound {bound})"
    );
    // Without the others' counts each node would have served the whole balance itself.
    assert!(total < 2 * BALANCE, "{total}");
    // And every node comes to see the balance spent.
    for node in &fleet.nodes {
        wait_until(
            "the spending of every node seen",
            Duration::from_secs(10),
            || node.show(&id)["remaining"] == 0,
        );
    }
}

#[test]
fn an_owners_limits_set_on_one_node_hold_on_every_node() {
    let fleet = Fleet::start(3);
    let [a, b, c] = [&fleet.nodes[0], &fleet.nodes[1], &fleet.nodes[2]];
    a.cli_json(&["owners", "set", "acme", "--ratelimit", "2/1h", "--json"]);
    let (id, token) = b.create("Tenant-Key", "read", &["--owner", "acme"]);
    wait_until(
        "the key and its owner on every node",
        Duration::from_secs(10),
        || {
            c.cli(&["keys", "show", &id]).status.success()
                && c.cli_json(&["owners", "show", "acme", "--json"])["ratelimit"] == "2/1h"
        },
    );
    assert_eq!(c.answer_code(&token), VerifyCode::Valid);
    assert_eq!(c.answer_code(&token), VerifyCode::Valid);
    assert_eq!(c.answer_code(&token), VerifyCode::RateLimited);
}
