//! The crash harness's checks after each restart: unanswered writes resolved from what the
//! daemon reports, then every key checked through the daemon and in the store file, with
//! the audit chain, the key counts, `audit --verify` and the daemon log.

use super::common::{self, Daemon};
use super::{verify_code, Key, Pending, Totals};
use authenta_client::proto::{ErrorCode, KeyState};
use authenta_client::{Client, Error, VerifyCode};
use authenta_keyd::key::KeyRecord;
use authenta_keyd::store::Store;
use authenta_keyd::token::{hash_token, start_of, TokenHash};
use std::collections::{HashMap, HashSet};
use zeroize::Zeroizing;

/// Opens the store file as the daemon does, with the test master key, from this process.
/// SQLite's WAL lets it read beside the running daemon; no worker writes meanwhile.
fn open_store(daemon: &Daemon) -> Store {
    let master: [u8; 32] = hex::decode(common::MASTER_HEX)
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    Store::open(&daemon.data_dir, &Zeroizing::new(master)).expect("the store opens cleanly")
}

/// The whole audit log from the store file, page by page, with the chain checked.
fn read_whole_audit(store: &authenta_keyd::store::Store) -> authenta_client::proto::AuditReport {
    let mut report = store.read_audit(true, 0).expect("read the audit log");
    while let Some(after) = report.next.take() {
        let page = store.read_audit(false, after).expect("read the audit log");
        report.entries.extend(page.entries);
        report.next = page.next;
    }
    report
}

/// Resolves unanswered writes from what the daemon reports, then checks every key, through
/// the daemon (what apps see) and in the store file (what the next start will see).
pub fn check_after_restart(
    daemon: &Daemon,
    keys: &mut Vec<Key>,
    unanswered_creates: u64,
    cycle: u32,
    totals: &mut Totals,
) {
    let mut client = Client::connect(&daemon.socket).expect("restarted daemon answers");
    let store = open_store(daemon);
    let disk = store.load().expect("load the store");
    let audit = read_whole_audit(&store);
    drop(store);
    if !disk.corrupt.is_empty() {
        totals
            .other
            .push(format!("corrupt rows in the store: {:?}", disk.corrupt));
    }
    match &audit.chain {
        Some(chain) if chain.ok => {}
        other => totals
            .other
            .push(format!("audit chain in the store not intact: {other:?}")),
    }
    let records: HashMap<&str, &KeyRecord> =
        disk.keys.iter().map(|(r, _)| (r.id.as_str(), r)).collect();
    let retired: HashSet<TokenHash> = disk.retired.iter().map(|(hash, _)| *hash).collect();
    let mut audit_count: HashMap<&str, u64> = HashMap::new();
    for entry in &audit.entries {
        if let Some(id) = &entry.key_id {
            *audit_count.entry(id.as_str()).or_default() += 1;
        }
    }

    for key in keys.iter_mut() {
        totals.writes_checked += key.acked_writes;
        let mut lost = Vec::new();
        let mut other = Vec::new();
        let info = match client.show_key(&key.id) {
            Ok(info) => info,
            Err(Error::Refused {
                code: ErrorCode::NotFound,
                ..
            }) => {
                totals
                    .lost
                    .push(format!("{}: acknowledged create is gone", key.id));
                continue;
            }
            Err(e) => panic!("show {}: {e}", key.id),
        };
        match key.pending.take() {
            None => {}
            Some(Pending::Revoke) => {
                totals.unanswered += 1;
                if info.state == KeyState::Revoked {
                    key.revoked = true;
                    key.audit_min += 1;
                    totals.unanswered_committed += 1;
                } else {
                    key.audit_max -= 1;
                }
            }
            Some(Pending::Regenerate) => {
                totals.unanswered += 1;
                if let Some(current) = &key.current {
                    if info.start == start_of(current) {
                        key.audit_max -= 1;
                    } else {
                        // Committed: the token nobody saw replaced the acknowledged one.
                        key.retired.extend(key.current.take());
                        key.audit_min += 1;
                        totals.unanswered_committed += 1;
                    }
                }
            }
        }

        let expected_state = if key.revoked {
            KeyState::Revoked
        } else {
            KeyState::Active
        };
        if info.state != expected_state {
            let problem = format!("state {:?}, expected {expected_state:?}", info.state);
            if key.revoked {
                lost.push(format!("{problem} (acknowledged revoke lost)"));
            } else {
                other.push(problem);
            }
        }
        let record = records.get(key.id.as_str());
        if record.is_none() {
            lost.push("no row in the store".into());
        }
        if let Some(record) = record {
            if record.revoked_at.is_some() != key.revoked {
                lost.push(format!("stored revoked_at is {:?}", record.revoked_at));
            }
        }
        let mut valid = 0;
        if let Some(current) = &key.current {
            let expected = if key.revoked {
                VerifyCode::Revoked
            } else {
                VerifyCode::Valid
            };
            let (code, _) = verify_code(&mut client, current).expect("verify");
            valid += usize::from(code == VerifyCode::Valid);
            if code != expected {
                lost.push(format!(
                    "newest acknowledged token answers {code:?}, expected {expected:?}"
                ));
            }
            if info.start != start_of(current) {
                lost.push("current token is not the newest acknowledged one".into());
            }
            if record.is_some_and(|r| r.token_hash != hash_token(current)) {
                lost.push("stored token hash is not the newest acknowledged token's".into());
            }
        }
        for old in &key.retired {
            let (code, _) = verify_code(&mut client, old).expect("verify");
            valid += usize::from(code == VerifyCode::Valid);
            if code != VerifyCode::Revoked {
                lost.push(format!("a replaced token answers {code:?}"));
            }
            if !retired.contains(&hash_token(old)) {
                lost.push("a replaced token is not recorded as retired".into());
            }
        }
        if valid > 1 {
            other.push(format!("{valid} known tokens verify"));
        }
        let entries = audit_count.get(key.id.as_str()).copied().unwrap_or(0);
        if entries < key.audit_min {
            lost.push(format!(
                "{entries} audit entries, at least {} acknowledged",
                key.audit_min
            ));
        } else if entries > key.audit_max {
            other.push(format!(
                "{entries} audit entries, at most {} writes were sent",
                key.audit_max
            ));
        }
        if !lost.is_empty() {
            totals.lost.push(format!("{}: {}", key.id, lost.join("; ")));
        }
        if !other.is_empty() {
            totals
                .other
                .push(format!("{}: {}", key.id, other.join("; ")));
        }
        if key.revoked {
            key.settled_checks += 1;
        }
    }

    let status = client.status().expect("status");
    if !status.corrupt_keys.is_empty() {
        totals.other.push(format!(
            "corrupt keys after restart: {:?}",
            status.corrupt_keys
        ));
    }
    let known = keys.len() as u64 + totals.forgotten;
    let strangers = status.keys.total.saturating_sub(known);
    if status.keys.total < known {
        totals.other.push(format!(
            "the daemon counts {} keys, fewer than the {known} acknowledged",
            status.keys.total
        ));
    }
    if strangers > unanswered_creates {
        totals.other.push(format!(
            "{strangers} keys nobody created, but only {unanswered_creates} creates went unanswered"
        ));
    }
    if status.keys.total != disk.keys.len() as u64 {
        totals.other.push(format!(
            "the daemon counts {} keys, the store holds {}",
            status.keys.total,
            disk.keys.len()
        ));
    }

    // The operator's check, through the daemon. Kept apart from the rest, so that the crash
    // checks above run to the end whatever it answers.
    let cli = daemon.cli(&["audit", "--verify"]);
    if !cli.status.success() {
        totals.audit_cli_failures.push(format!(
            "cycle {cycle}, {} entries: {}{}",
            audit.entries.len(),
            String::from_utf8_lossy(&cli.stdout)
                .lines()
                .last()
                .unwrap_or(""),
            String::from_utf8_lossy(&cli.stderr).trim()
        ));
    }
    if daemon.log().contains("panicked") {
        totals.other.push("the daemon log shows a panic".into());
    }

    // Revoked keys checked after two restarts are settled: stop tracking them.
    let before = keys.len();
    keys.retain(|k| k.settled_checks < 2);
    totals.forgotten += (before - keys.len()) as u64;
}
