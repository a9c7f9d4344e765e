//! Fleet mode when things fail, on a real 3-server JetStream cluster: every NATS server
//! down, a node stopped while changes happen, a stream purged past a node's position, and
//! SIGKILL of the stream's leader and of a daemon in the middle of writes.

mod common;

use authenta_client::proto::RequestBody;
use authenta_client::VerifyCode;
use common::fleet::{
    change_many, create_many, fleet_status, wait_code, wait_converged, wait_joined, wait_until,
    Fleet,
};
use common::nats::{NatsCluster, Operator};
use std::time::Duration;

fn revoke(id: &str) -> RequestBody {
    RequestBody::Revoke {
        id: id.to_owned(),
        reason: None,
    }
}

fn regenerate(id: &str) -> RequestBody {
    RequestBody::Regenerate {
        id: id.to_owned(),
        grace_secs: Some(0),
        expires_in_secs: None,
    }
}

#[test]
fn verify_answers_with_every_nats_server_down_and_writes_resume_when_they_return() {
    let fleet = Fleet::start(3);
    let (id, token) = fleet.nodes[0].create("K", "read", &[]);
    for node in &fleet.nodes {
        wait_code(node, &token, VerifyCode::Valid);
    }
    fleet.nats.kill_all();
    for node in &fleet.nodes {
        wait_until("the node to notice", Duration::from_secs(10), || {
            fleet_status(node)["connected"] == false
        });
        assert_eq!(node.answer_code(&token), VerifyCode::Valid);
        let refused = node.cli(&["keys", "revoke", &id]);
        assert_eq!(
            refused.status.code(),
            Some(75),
            "a temporary failure, not 'daemon down'"
        );
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains("fleet"),
            "the error names the fleet: {stderr}"
        );
        assert!(fleet_status(node)["disconnected_since"].is_i64());
    }
    fleet.nats.start_all();
    for node in &fleet.nodes {
        wait_until("the node to reconnect", Duration::from_secs(30), || {
            fleet_status(node)["connected"] == true
        });
    }
    common::fleet::revoke_everywhere(&fleet, 1, &id, &token);
    wait_converged(&fleet.nodes);
}

#[test]
fn a_stopped_node_catches_up_and_resyncs_after_a_purge() {
    let mut fleet = Fleet::start(3);
    fleet.nodes[2].stop();
    // A thousand changes while node c is down: creates on a, revokes and regenerates on b.
    let keys = create_many(&fleet.nodes[0], "while-down", 500);
    let ids: Vec<String> = keys.iter().map(|(id, _)| id.clone()).collect();
    wait_until("b to see the keys", Duration::from_secs(30), || {
        fleet.nodes[1].key_count() == 500
    });
    change_many(&fleet.nodes[1], &ids[..250], revoke);
    change_many(&fleet.nodes[1], &ids[250..], regenerate);
    fleet.nodes[2].restart();
    wait_joined(&fleet.nodes[2]);
    let keys_now = wait_converged(&fleet.nodes);
    assert_eq!(keys_now.len(), 500);
    assert_eq!(fleet.nodes[2].answer_code(&keys[0].1), VerifyCode::Revoked);

    // Down again while keys change; then the stream keeps only each key's last change.
    fleet.nodes[2].stop();
    change_many(&fleet.nodes[0], &ids[250..400], revoke);
    change_many(&fleet.nodes[1], &ids[400..], regenerate);
    change_many(&fleet.nodes[0], &ids[400..], regenerate);
    let more = create_many(&fleet.nodes[1], "after-compaction", 20);
    Operator::connect(&fleet.nats, &fleet.name).compact();
    fleet.nodes[2].restart();
    wait_joined(&fleet.nodes[2]);
    let keys_now = wait_converged(&fleet.nodes);
    assert_eq!(keys_now.len(), 520);
    assert_eq!(fleet.nodes[2].answer_code(&more[0].1), VerifyCode::Valid);
    assert_eq!(
        fleet.nodes[2].answer_code(&keys[300].1),
        VerifyCode::Revoked
    );
    let status = fleet_status(&fleet.nodes[2]);
    assert!(
        status["resyncs"].as_u64() >= Some(1),
        "the node says it resynced: {status}"
    );
}

/// Creates on a and revokes on b, recording what was acknowledged, while `fault` runs.
fn writes_through(fleet: &Fleet, fault: impl FnOnce() + Send) -> (Vec<String>, Vec<String>) {
    std::thread::scope(|scope| {
        let creator = scope.spawn(|| {
            let mut created = Vec::new();
            let mut client = authenta_client::Client::new(&fleet.nodes[0].socket);
            for n in 0..150 {
                let request = authenta_client::proto::CreateKey {
                    name: format!("crash-{n}"),
                    permissions: vec![authenta_client::Permission::Read],
                    environment: None,
                    expires_in_secs: None,
                    ..Default::default()
                };
                if let Ok(new) = client.create_key(request) {
                    created.push(new.key.id);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            created
        });
        let seeded: Vec<String> = create_many(&fleet.nodes[1], "seed", 100)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let revoker = scope.spawn(move || {
            let mut revoked = Vec::new();
            let mut client = authenta_client::Client::new(&fleet.nodes[1].socket);
            for id in seeded {
                if client.revoke(&id, None).is_ok() {
                    revoked.push(id);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            revoked
        });
        std::thread::sleep(Duration::from_millis(300));
        fault();
        let created = creator.join().expect("creator");
        let revoked = revoker.join().expect("revoker");
        (created, revoked)
    })
}

fn check_acknowledged(fleet: &Fleet, created: &[String], revoked: &[String]) {
    let keys = wait_converged(&fleet.nodes);
    for id in created {
        assert!(
            keys.iter().any(|k| k["id"] == id.as_str()),
            "acknowledged create {id} lost"
        );
    }
    for id in revoked {
        let key = keys
            .iter()
            .find(|k| k["id"] == id.as_str())
            .expect("revoked key present");
        assert_eq!(key["state"], "revoked", "acknowledged revoke of {id} lost");
    }
}

#[test]
fn killing_the_stream_leader_mid_writes_loses_no_acknowledged_write() {
    let fleet = Fleet::start(3);
    let leader = Operator::connect(&fleet.nats, &fleet.name).leader();
    let index = (0..3)
        .find(|i| NatsCluster::name(*i) == leader)
        .expect("leader index");
    let (created, revoked) = writes_through(&fleet, || {
        fleet.nats.kill(index);
        std::thread::sleep(Duration::from_millis(1500));
        fleet.nats.start_server(index);
    });
    assert!(
        !created.is_empty() && !revoked.is_empty(),
        "writes went through around the fault"
    );
    check_acknowledged(&fleet, &created, &revoked);
}

#[test]
fn killing_a_daemon_mid_writes_loses_no_acknowledged_write() {
    let mut fleet = Fleet::start(3);
    let pid = fleet.nodes[2].pid();
    let (created, revoked) = writes_through(&fleet, || {
        common::signal_pid(pid, libc::SIGKILL);
    });
    fleet.nodes[2].reap();
    fleet.nodes[2].restart();
    wait_joined(&fleet.nodes[2]);
    check_acknowledged(&fleet, &created, &revoked);
}
