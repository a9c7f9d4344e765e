//! The socket protocol against the real daemon: raw bytes from hostile or broken clients,
//! pipelining, slow readers and writers, the connection cap, and the client libraries
//! (reconnects, the async client). Who may verify or administer is in `tests/access.rs`.

mod common;

use authenta_client::proto::{
    self, ErrorCode, Hello, HelloReply, Request, RequestBody, Response, ResponseBody,
    VerifyRequest, PROTOCOL_VERSION,
};
use authenta_client::{AsyncClient, Client, Denied, Permission, VerifyCode};
use common::Daemon;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

fn read_frame(stream: &mut UnixStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut payload).ok()?;
    Some(payload)
}

/// A raw connection that has done the handshake.
fn raw(daemon: &Daemon) -> UnixStream {
    let mut stream = UnixStream::connect(&daemon.socket).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let hello = proto::encode(&Hello {
        version: PROTOCOL_VERSION,
        agent: "raw-test".into(),
    })
    .expect("encode");
    stream.write_all(&frame(&hello)).expect("write");
    let reply: HelloReply =
        proto::decode(&read_frame(&mut stream).expect("reply")).expect("decode");
    assert!(matches!(reply, HelloReply::Welcome { .. }));
    stream
}

/// Reads the error answer a misbehaving connection gets, then expects the close.
fn expect_bad_frame_then_close(stream: &mut UnixStream) {
    let answer: Response =
        proto::decode(&read_frame(stream).expect("an error answer")).expect("decode");
    match answer.body {
        ResponseBody::Error(e) => assert_eq!(e.code, ErrorCode::BadFrame, "{}", e.message),
        other => panic!("expected an error, got {other:?}"),
    }
    let mut rest = [0u8; 1];
    // Closed: end of stream, or a reset when the daemon left our bytes unread.
    match stream.read(&mut rest) {
        Ok(n) => assert_eq!(n, 0, "connection closed"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}

fn assert_still_serving(client: &mut Client, token: &str) {
    let verified = client.verify(token, &[Permission::Read]).expect("valid");
    assert!(verified.key_id.starts_with("key_"));
}

#[test]
fn bad_frames_get_an_error_and_a_closed_connection_while_others_are_served() {
    let daemon = Daemon::start();
    let (_, token) = daemon.create("Backend-Server-Key", "read", &[]);
    let mut good = Client::connect(&daemon.socket).expect("connect");
    assert_still_serving(&mut good, &token);

    // Garbage inside a well-sized frame.
    let mut stream = raw(&daemon);
    stream.write_all(&frame(&[0xff; 100])).expect("write");
    expect_bad_frame_then_close(&mut stream);
    assert_still_serving(&mut good, &token);

    // A frame longer than 64 KiB.
    let mut stream = raw(&daemon);
    stream
        .write_all(&(1u32 << 20).to_be_bytes())
        .expect("write");
    // The daemon may refuse (and close) on the length alone, before this part arrives.
    let _ = stream.write_all(&[0u8; 1024]);
    expect_bad_frame_then_close(&mut stream);
    assert_still_serving(&mut good, &token);

    // A 4 GiB length prefix.
    let mut stream = raw(&daemon);
    stream.write_all(&u32::MAX.to_be_bytes()).expect("write");
    expect_bad_frame_then_close(&mut stream);

    // A frame cut short: the client goes away mid-frame.
    let mut stream = raw(&daemon);
    stream.write_all(&100u32.to_be_bytes()).expect("write");
    stream.write_all(&[1u8; 10]).expect("write");
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    expect_bad_frame_then_close(&mut stream);

    // A valid request with trailing bytes.
    let mut stream = raw(&daemon);
    let mut payload = proto::encode(&Request {
        id: 1,
        body: RequestBody::Status,
    })
    .expect("encode");
    payload.extend_from_slice(b"junk");
    stream.write_all(&frame(&payload)).expect("write");
    expect_bad_frame_then_close(&mut stream);

    // Garbage instead of a hello.
    let mut stream = UnixStream::connect(&daemon.socket).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut all = Vec::new();
    let _ = stream.read_to_end(&mut all);
    assert!(all.len() < 1024, "answered briefly, then closed");

    assert_still_serving(&mut good, &token);
    assert_still_serving(
        &mut Client::connect(&daemon.socket).expect("new client"),
        &token,
    );
}

#[test]
fn a_wrong_protocol_version_is_refused_with_a_reason() {
    let daemon = Daemon::start();
    let mut stream = UnixStream::connect(&daemon.socket).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let hello = proto::encode(&Hello {
        version: 999,
        agent: "future".into(),
    })
    .expect("encode");
    stream.write_all(&frame(&hello)).expect("write");
    match proto::decode::<HelloReply>(&read_frame(&mut stream).expect("reply")).expect("decode") {
        HelloReply::Refused { supported, message } => {
            assert_eq!(supported, PROTOCOL_VERSION);
            assert!(message.contains("999"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn pipelined_requests_are_answered_in_order_and_each_verify_is_counted() {
    let daemon = Daemon::start();
    let (id, token) = daemon.create("Backend-Server-Key", "read", &[]);
    let mut stream = raw(&daemon);
    let mut bytes = Vec::new();
    for id in 1..=200u64 {
        let token = if id % 2 == 0 {
            token.clone()
        } else {
            "api_bad".to_owned()
        };
        let request = Request {
            id,
            body: RequestBody::Verify(VerifyRequest {
                token,
                permissions: vec![Permission::Read],
                environment: None,
                cost: None,
            }),
        };
        bytes.extend_from_slice(&frame(&proto::encode(&request).expect("encode")));
    }
    stream.write_all(&bytes).expect("write all at once");
    for id in 1..=200u64 {
        let response: Response =
            proto::decode(&read_frame(&mut stream).expect("answer")).expect("decode");
        assert_eq!(response.id, id);
        let ResponseBody::Verify(answer) = response.body else {
            panic!("verify answer")
        };
        let expected = if id % 2 == 0 {
            VerifyCode::Valid
        } else {
            VerifyCode::Malformed
        };
        assert_eq!(answer.code, expected);
    }
    // A run of pipelined verifies is counted after it is decided (one fence per run): every
    // one of them.
    let shown = daemon.cli_json(&["keys", "show", &id, "--json"]);
    assert_eq!(
        shown["usage"],
        serde_json::json!({"verifications": 100, "allowed": 100, "denied": 0})
    );
    let mut client = Client::connect(&daemon.socket).expect("connect");
    let answers = client
        .call_many((0..50).map(|_| RequestBody::Status).collect())
        .expect("pipelined");
    assert_eq!(answers.len(), 50);
}

#[test]
fn a_client_that_reads_its_answers_late_still_gets_every_one_in_order() {
    // More answers than the socket buffers hold: the daemon's writes block until the client
    // reads, and must then resume where they stopped (writability is asked of epoll only
    // while a write is blocked).
    const REQUESTS: u64 = 20_000;
    let daemon = Daemon::start();
    let (_, token) = daemon.create("Backend-Server-Key", "read", &[]);
    let mut stream = raw(&daemon);
    let mut writer = stream.try_clone().expect("clone");
    let sending = std::thread::spawn(move || {
        let bytes = common::verify_frames(&token, 1..=REQUESTS);
        writer.write_all(&bytes).expect("write all requests");
        bytes.len()
    });
    std::thread::sleep(Duration::from_millis(500));
    for id in 1..=REQUESTS {
        let response: Response =
            proto::decode(&read_frame(&mut stream).expect("answer")).expect("decode");
        assert_eq!(response.id, id);
        let ResponseBody::Verify(answer) = response.body else {
            panic!("verify answer")
        };
        assert_eq!(answer.code, VerifyCode::Valid);
    }
    let sent = sending.join().expect("writer");
    assert!(
        sent > 1_000_000,
        "the requests must overflow the socket buffers: {sent}"
    );
    // The connection still serves afterwards.
    let mut client = Client::connect(&daemon.socket).expect("connect");
    assert_eq!(
        client
            .call_many((0..5).map(|_| RequestBody::Status).collect())
            .expect("status")
            .len(),
        5
    );
}

#[test]
fn a_client_that_keeps_its_socket_full_does_not_starve_others_on_its_thread() {
    // One connection thread, so both clients share it. The flood never lets a read come up
    // short (its writer keeps the socket full) nor a write wait (its reader keeps up).
    let daemon = Daemon::start_with_config(Some("worker_threads = 1\n"));
    let (_, token) = daemon.create("Backend-Server-Key", "read", &[]);
    let mut flood = raw(&daemon);
    let mut flood_writer = flood.try_clone().expect("clone");
    let batch = common::verify_frames(&token, 1..=2_000);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writing = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if flood_writer.write_all(&batch).is_err() {
                    break;
                }
            }
        })
    };
    let reading = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sink = vec![0u8; 1 << 16];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if matches!(flood.read(&mut sink), Ok(0) | Err(_)) {
                    break;
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let (done, answered) = std::sync::mpsc::channel();
    let socket = daemon.socket.clone();
    let other = std::thread::spawn(move || {
        let served = Client::connect(&socket).is_ok_and(|mut client| {
            (0..20).all(|_| client.verify(&token, &[Permission::Read]).is_ok())
        });
        let _ = done.send(served);
    });
    let served = answered.recv_timeout(Duration::from_secs(10));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(daemon);
    let _ = (writing.join(), reading.join(), other.join());
    assert_eq!(
        served,
        Ok(true),
        "a second client on the flooded thread was not served within 10 s"
    );
}

#[test]
fn the_client_library_reconnects_after_a_restart() {
    let mut daemon = Daemon::start();
    let (_, token) = daemon.create("Backend-Server-Key", "read", &[]);
    let mut client = Client::new(&daemon.socket);
    assert_still_serving(&mut client, &token);
    assert!(daemon.stop().success());
    match client.verify(&token, &[Permission::Read]) {
        Err(denied @ Denied::Unavailable(_)) => assert_eq!(denied.status(), 503),
        other => panic!("a stopped daemon must refuse: {other:?}"),
    }
    daemon.restart();
    assert_still_serving(&mut client, &token);
}

#[test]
fn the_async_client_verifies_and_administers() {
    let daemon = Daemon::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    runtime.block_on(async {
        let mut client = AsyncClient::connect(&daemon.socket).await.expect("connect");
        let created = client
            .create_key(proto::CreateKey {
                name: "Async-Key".into(),
                permissions: vec![Permission::Read, Permission::Write],
                environment: None,
                expires_in_secs: None,
                ..Default::default()
            })
            .await
            .expect("create");
        let verified = client
            .verify(&created.token, &[Permission::Write])
            .await
            .expect("valid");
        assert_eq!(verified.key_id, created.key.id);
        match client.verify(&created.token, &[Permission::Delete]).await {
            Err(denied) => {
                assert_eq!(denied.status(), 403);
                assert_eq!(denied.code(), Some(VerifyCode::InsufficientPermissions));
            }
            Ok(_) => panic!("delete was not granted"),
        }
        client.revoke(&created.key.id, None).await.expect("revoke");
        let denied = client
            .verify(&created.token, &[])
            .await
            .expect_err("revoked");
        assert_eq!(
            (denied.status(), denied.code()),
            (401, Some(VerifyCode::Revoked))
        );
        assert_eq!(client.list_keys().await.expect("list").len(), 1);
    });
}

#[test]
fn connections_over_the_cap_are_told_busy() {
    // The global cap, from one uid (tests/trust.rs holds the per-uid share).
    let daemon =
        Daemon::start_with_config(Some("max_connections = 4\nmax_connections_per_uid = 4\n"));
    let (_, token) = daemon.create("K", "read", &[]);
    // Connections just closed (the readiness probe, the CLI) free their slots a moment
    // later: wait until this status connection is the only one.
    let mut probe = Client::connect(&daemon.socket).expect("connect");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while probe.status().expect("status").connections > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut held: Vec<Client> = vec![probe];
    held.extend((0..3).map(|_| Client::connect(&daemon.socket).expect("connect")));
    match Client::connect(&daemon.socket) {
        Err(authenta_client::Error::Refused { code, message }) => {
            assert_eq!(code, ErrorCode::Busy);
            assert!(message.contains("max_connections"));
        }
        Err(other) => panic!("expected busy, got {other}"),
        Ok(_) => panic!("expected busy, got a connection"),
    }
    assert_still_serving(&mut held[0], &token);
    held.pop();
    std::thread::sleep(Duration::from_millis(100));
    assert_still_serving(
        &mut Client::connect(&daemon.socket).expect("a slot is free again"),
        &token,
    );
}

/// The 5 s frame deadline is per frame: a client that keeps streaming verifies, each frame
/// split across two writes so that a partial frame is almost always waiting, is served for
/// longer than 5 s.
#[test]
fn a_client_streaming_split_frames_is_not_cut_off_by_the_frame_deadline() {
    let daemon = Daemon::start();
    let (_, token) = daemon.create("Streaming-Key", "read", &[]);
    let mut stream = raw(&daemon);
    let started = std::time::Instant::now();
    let mut id = 1;
    // The first half of each frame goes out with the second half of the one before.
    let mut pending: Vec<u8> = Vec::new();
    while started.elapsed() < Duration::from_secs(6) {
        let request = proto::encode(&Request {
            id,
            body: RequestBody::Verify(VerifyRequest {
                token: token.clone(),
                permissions: vec![Permission::Read],
                environment: None,
                cost: None,
            }),
        })
        .expect("encode");
        let bytes = frame(&request);
        let (first, second) = bytes.split_at(bytes.len() / 2);
        pending.extend_from_slice(first);
        stream
            .write_all(&pending)
            .expect("the daemon keeps the connection");
        pending = second.to_vec();
        if id > 1 {
            let answer: Response =
                proto::decode(&read_frame(&mut stream).expect("an answer")).expect("decode");
            assert_eq!(answer.id, id - 1);
            assert!(
                matches!(answer.body, ResponseBody::Verify(ref v) if v.code == VerifyCode::Valid)
            );
        }
        id += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(id > 60, "only {id} requests in 6 s");
}

/// The store's commits so far, from `/metrics`.
fn commits(daemon: &Daemon) -> u64 {
    let reply = common::http::tcp(&daemon.http_address(), "GET", "/metrics", &[]);
    assert_eq!(reply.status, 200);
    reply
        .body
        .lines()
        .find_map(|line| line.strip_prefix("authenta_store_commit_seconds_count "))
        .and_then(|n| n.trim().parse().ok())
        .expect("a commit count in /metrics")
}

/// `changes` pipelined changes, made since the commit count was `before`, took at most a
/// quarter as many commits.
fn assert_shared_commits(daemon: &Daemon, before: u64, changes: usize, what: &str) {
    let made_in = commits(daemon) - before;
    assert!(
        made_in * 4 <= changes as u64,
        "{changes} pipelined {what} took {made_in} commits"
    );
}

#[test]
fn creates_pipelined_on_one_connection_share_commits_and_keep_their_order() {
    const CREATES: usize = 200;
    let daemon = Daemon::start_http(None, None);
    let before = commits(&daemon);
    // One write: every create, one refused among them, then a list that must see them all.
    let mut bodies: Vec<RequestBody> = (0..CREATES)
        .map(|i| {
            RequestBody::CreateKey(proto::CreateKey {
                name: format!("Pipelined-{i}"),
                permissions: if i == 7 {
                    vec![]
                } else {
                    vec![Permission::Read]
                },
                ..Default::default()
            })
        })
        .collect();
    bodies.push(RequestBody::ListKeys {
        after: None,
        owner_id: None,
    });
    let mut client = Client::connect(&daemon.socket).expect("connect");
    let mut answers = client.call_many(bodies).expect("answered in order");
    let Some(ResponseBody::Keys(page)) = answers.pop() else {
        panic!("the list after the creates was not answered with keys")
    };
    let mut tokens = Vec::new();
    for (i, answer) in answers.into_iter().enumerate() {
        match answer {
            ResponseBody::Error(e) if i == 7 => assert_eq!(e.code, ErrorCode::BadRequest),
            ResponseBody::Created(made) => {
                assert_eq!(made.key.name, format!("Pipelined-{i}"));
                tokens.push(made.token);
            }
            other => panic!("create {i} answered {other:?}"),
        }
    }
    assert_eq!(tokens.len(), CREATES - 1);
    assert!(page.next.is_none(), "the keys fill more than one page");
    assert_eq!(
        page.keys.len(),
        CREATES - 1,
        "the list ran before the creates"
    );
    for token in tokens.iter().step_by(37) {
        assert_eq!(daemon.answer_code(token), VerifyCode::Valid);
    }
    // One at a time, each create had a commit of its own.
    assert_shared_commits(&daemon, before, CREATES, "creates");
}

#[test]
fn revokes_updates_and_regenerates_pipelined_share_commits_and_each_answer_is_its_own() {
    const KEYS: usize = 120;
    const TWICE: usize = 100;
    let daemon = Daemon::start_http(None, None);
    let mut client = Client::connect(&daemon.socket).expect("connect");
    let creates = (0..KEYS)
        .map(|i| {
            RequestBody::CreateKey(proto::CreateKey {
                name: format!("Changed-{i}"),
                permissions: vec![Permission::Read],
                ..Default::default()
            })
        })
        .collect();
    let made: Vec<proto::NewToken> = client
        .call_many(creates)
        .expect("created")
        .into_iter()
        .map(|answer| match answer {
            ResponseBody::Created(made) => made,
            other => panic!("a create answered {other:?}"),
        })
        .collect();
    let rename = |id: &str, name: &str| {
        RequestBody::UpdateKey(proto::UpdateKey {
            id: id.to_owned(),
            name: Some(name.to_owned()),
            ..Default::default()
        })
    };
    // Key i is revoked, renamed or regenerated by i % 3; key 100 is renamed twice in a row
    // (which ends a run there: late in the write, so that both would share a batch); a key
    // that does not exist is revoked in the middle.
    let mut bodies = Vec::new();
    for (i, key) in made.iter().enumerate() {
        let id = key.key.id.clone();
        bodies.push(match i % 3 {
            0 => RequestBody::Revoke { id, reason: None },
            1 => rename(&id, &format!("Renamed-{i}")),
            _ => RequestBody::Regenerate {
                id,
                grace_secs: Some(0),
                expires_in_secs: None,
            },
        });
        if i == TWICE {
            bodies.push(rename(&key.key.id, "Twice"));
        }
        if i == KEYS / 2 {
            bodies.push(RequestBody::Revoke {
                id: "key_0000000000000000".into(),
                reason: None,
            });
            bodies.push(RequestBody::Revoke {
                id: key.key.id.clone(),
                reason: Some("x".repeat(501)),
            });
        }
    }
    // After the run, on the same connection: it must see every change.
    bodies.push(RequestBody::ListKeys {
        after: None,
        owner_id: None,
    });
    let before = commits(&daemon);
    let mut answers = client
        .call_many(bodies)
        .expect("answered in order")
        .into_iter();
    for (i, key) in made.iter().enumerate() {
        let answer = answers.next().expect("an answer for each change");
        match (i % 3, answer) {
            (0, ResponseBody::Key(info)) => {
                assert_eq!(info.id, key.key.id, "change {i}'s answer names its key");
                assert!(info.revoked_at.is_some(), "key {i} not revoked");
                assert_eq!(daemon.answer_code(&key.token), VerifyCode::Revoked);
            }
            (1, ResponseBody::Key(info)) => {
                assert_eq!(info.id, key.key.id, "change {i}'s answer names its key");
                assert_eq!(info.name, format!("Renamed-{i}"), "key {i}'s answer");
                assert_eq!(daemon.answer_code(&key.token), VerifyCode::Valid);
            }
            (2, ResponseBody::Created(new)) => {
                assert_eq!(new.key.id, key.key.id);
                // `start`: the 8 characters after `api_`.
                let start = new.token.get(4..12);
                assert_eq!(start, Some(new.key.start.as_str()), "a stale answer");
                assert_eq!(daemon.answer_code(&new.token), VerifyCode::Valid);
                assert_eq!(daemon.answer_code(&key.token), VerifyCode::Revoked);
            }
            (_, other) => panic!("change {i} answered {other:?}"),
        }
        if i == TWICE {
            let Some(ResponseBody::Key(info)) = answers.next() else {
                panic!("the second rename was not answered with the key")
            };
            assert_eq!(info.name, "Twice");
        }
        if i == KEYS / 2 {
            let Some(ResponseBody::Error(e)) = answers.next() else {
                panic!("revoking a key that does not exist was not refused")
            };
            assert_eq!(e.code, ErrorCode::NotFound);
            let Some(ResponseBody::Error(e)) = answers.next() else {
                panic!("a reason over 500 bytes was not refused")
            };
            assert_eq!(e.code, ErrorCode::BadRequest);
        }
    }
    let Some(ResponseBody::Keys(page)) = answers.next() else {
        panic!("the list after the run was not answered with keys")
    };
    let revoked = page.keys.iter().filter(|k| k.revoked_at.is_some()).count();
    assert_eq!(revoked, KEYS.div_ceil(3), "the list ran before the revokes");
    assert!(answers.next().is_none());
    // One at a time, each change had a commit of its own.
    assert_shared_commits(&daemon, before, KEYS, "changes");
}

#[test]
fn a_bad_frame_inside_a_run_of_creates_ends_it_after_the_creates_before_it_are_answered() {
    let daemon = Daemon::start();
    let create = |id: u64| {
        let request = Request {
            id,
            body: RequestBody::CreateKey(proto::CreateKey {
                name: format!("Run-{id}"),
                permissions: vec![Permission::Read],
                ..Default::default()
            }),
        };
        frame(&proto::encode(&request).expect("encode"))
    };
    let mut stream = raw(&daemon);
    let mut bytes = [create(1), create(2)].concat();
    bytes.extend(frame(b"\xff\xff\xff not a request"));
    bytes.extend(create(3));
    stream.write_all(&bytes).expect("write");
    for id in [1, 2] {
        let answer: Response =
            proto::decode(&read_frame(&mut stream).expect("an answer")).expect("decode");
        assert_eq!(answer.id, id);
        let ResponseBody::Created(made) = answer.body else {
            panic!("create {id} answered {:?}", answer.body)
        };
        assert_eq!(daemon.answer_code(&made.token), VerifyCode::Valid);
    }
    expect_bad_frame_then_close(&mut stream);
    // Nothing after the bad frame was read.
    let listed = daemon.cli_json(&["keys", "list", "--json"]);
    let mut names: Vec<&str> = listed
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["Run-1", "Run-2"]);
}
