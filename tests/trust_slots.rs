//! Connection slots no peer can hoard, attacked as `nobody` (uid 65534): a uid that may not
//! verify, and one that may but opens far more connections than its share. Tests run as
//! root so that they can act as other uids.

mod common;

use common::can_drop_privileges;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const ATTACKER: u32 = 65534;

/// As `nobody`, opens `count` connections to `socket`, sends each a Hello, and holds them
/// for `hold` seconds; prints how many were welcomed (HelloReply variant 0).
fn hoard_as_nobody(socket: &Path, count: usize, hold: u32) -> std::process::Child {
    use authenta_client::proto::{encode, Hello, PROTOCOL_VERSION};
    let hello = encode(&Hello {
        version: PROTOCOL_VERSION,
        agent: String::new(),
    })
    .expect("hello");
    let mut frame = (hello.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&hello);
    let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
    let script = r#"
import socket, sys, time
path, n, hello, hold = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3]), float(sys.argv[4])
held, welcomed = [], 0
for _ in range(n):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
        s.sendall(hello)
        held.append(s)
    except OSError:
        s.close()
for s in held:
    s.settimeout(2)
    try:
        reply = s.recv(64)
        if len(reply) > 4 and reply[4] == 0:
            welcomed += 1
    except OSError:
        pass
print(welcomed, flush=True)
time.sleep(hold)
"#;
    Command::new("python3")
        .args(["-c", script])
        .arg(socket)
        .arg(count.to_string())
        .arg(hex)
        .arg(hold.to_string())
        .uid(ATTACKER)
        .gid(ATTACKER)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3")
}

fn welcomed(child: &mut std::process::Child) -> usize {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("a line");
    line.trim().parse().expect("a count")
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A uid that may not verify (outside verify_gids) held every slot, so the real app got
/// `busy`; a flood past the cap logged a line per refusal and kept the memory.
#[test]
fn connection_slots_cannot_be_hoarded() {
    if !can_drop_privileges() {
        return;
    }
    // Root (the app here) may verify; nobody may not.
    let config = "socket_mode = \"0666\"\nverify_gids = [0]\nmax_connections = 64\nmax_connections_per_uid = 16\n";
    let daemon = common::Daemon::start_with_config(Some(config));
    let (_, token) = daemon.create("App", "read", &[]);
    let mut hoarder = hoard_as_nobody(&daemon.socket, 200, 3);
    assert_eq!(
        welcomed(&mut hoarder),
        0,
        "a uid that may not verify gets no slot at all"
    );
    assert_eq!(
        daemon.verify_code(&token, &[]),
        "valid",
        "the app is still served"
    );
    let _ = hoarder.wait();

    // A uid that may verify holds at most its share.
    let open = "socket_mode = \"0666\"\nmax_connections = 64\nmax_connections_per_uid = 16\n";
    let daemon = common::Daemon::start_with_config(Some(open));
    let (_, token) = daemon.create("App", "read", &[]);
    let idle = rss_kib(daemon.pid());
    let mut hoarder = hoard_as_nobody(&daemon.socket, 2000, 3);
    assert_eq!(welcomed(&mut hoarder), 16, "max_connections_per_uid");
    assert_eq!(
        daemon.verify_code(&token, &[]),
        "valid",
        "another uid is still served"
    );
    let _ = hoarder.wait();
    std::thread::sleep(Duration::from_millis(500));
    let refusals = daemon
        .log()
        .lines()
        .filter(|l| l.contains("connections refused"))
        .count();
    assert!(
        refusals <= 10,
        "refusals are logged at most once a second: {refusals} lines"
    );
    let after = rss_kib(daemon.pid());
    assert!(
        after < idle + 32 * 1024,
        "memory returns near idle: {idle} KiB -> {after} KiB"
    );
}
