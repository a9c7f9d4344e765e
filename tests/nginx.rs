//! The real nginx in front of an app, asking the daemon's `/v1/auth` with `auth_request`
//! over the HTTP side's Unix socket: the configuration docs/integrations.md shows, driven
//! with the real curl. Without nginx (or curl) the test fails and says what to install.

mod common;

use common::{free_port, Daemon};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The part of the configuration docs/integrations.md shows, word for word but for the
/// `@...@` placeholders: the daemon's socket, nginx's address, the app's address.
const SITE: &str = r#"
    upstream authenta {
        server unix:@SOCKET@;
        keepalive 8;
    }

    server {
        listen @LISTEN@;

        location / {
            auth_request /authenta-auth;
            auth_request_set $authenta_key_id $upstream_http_x_authenta_key_id;
            proxy_set_header X-Authenta-Key-Id $authenta_key_id;
            proxy_pass http://@APP@;
        }

        location = /authenta-auth {
            internal;
            proxy_pass http://authenta/v1/auth;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-Method $request_method;
            # The permission comes from the method alone, never from the client's headers.
            proxy_set_header X-Forwarded-Method "";
            proxy_set_header X-Authenta-Permission "";
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
"#;

#[test]
fn nginx_auth_request_lets_through_exactly_the_keys_the_daemon_accepts() {
    let nginx_binary = nginx_path();
    let curl_binary = curl_path();
    let daemon = Daemon::start_http(None, None);
    let (full_id, full) = daemon.create("full", "read,write,delete", &[]);
    let (reader_id, reader) = daemon.create("reader", "read", &[]);
    let (revoked_id, revoked) = daemon.create("gone", "read,write,delete", &[]);
    let out = daemon.cli(&["keys", "revoke", &revoked_id]);
    assert!(out.status.success(), "revoke: {out:?}");

    let app = App::start();
    let nginx = Nginx::start(&nginx_binary, &daemon.http_socket(), app.port);
    let curl = Curl {
        binary: curl_binary,
        port: nginx.port,
        dir: nginx.dir.path().to_path_buf(),
    };
    let bearer = |token: &str| format!("Authorization: Bearer {token}");
    let api_key = |token: &str| format!("X-API-Key: {token}");

    let get = curl.send("GET", &[bearer(&full)]);
    assert_eq!(get.status, 200, "a full key may GET: {get:?}");
    assert_eq!(
        get.body, full_id,
        "the key id reaches the app through auth_request_set"
    );
    let delete = curl.send("DELETE", &[bearer(&full)]);
    assert_eq!(delete.status, 200, "a full key may DELETE: {delete:?}");
    let read = curl.send("GET", &[api_key(&reader)]);
    assert_eq!(read.status, 200, "a read-only key may GET: {read:?}");
    assert_eq!(read.body, reader_id, "X-API-Key works as well as Bearer");
    let forged = curl.send("GET", &[bearer(&full), "X-Authenta-Key-Id: admin".into()]);
    assert_eq!(
        forged.body, full_id,
        "the app sees the daemon's key id, never the client's"
    );
    let allowed = app.hits();
    assert_eq!(allowed, 4, "each allowed request reached the app once");

    let read_only = curl.send("DELETE", &[api_key(&reader)]);
    assert_eq!(
        read_only.status, 403,
        "a read-only key may not DELETE: {read_only:?}"
    );
    let asks_less = curl.send(
        "DELETE",
        &[
            api_key(&reader),
            "X-Authenta-Permission: read".into(),
            "X-Forwarded-Method: GET".into(),
        ],
    );
    assert_eq!(
        asks_less.status, 403,
        "a client cannot pick the permission its request is judged by: {asks_less:?}"
    );
    let gone = curl.send("GET", &[bearer(&revoked)]);
    assert_eq!(gone.status, 401, "a revoked key: {gone:?}");
    let none = curl.send("GET", &[]);
    assert_eq!(none.status, 401, "no key at all: {none:?}");
    assert_eq!(
        none.header("www-authenticate"),
        Some("Bearer realm=\"authenta\""),
        "nginx passes the daemon's challenge on: {none:?}"
    );
    assert_eq!(app.hits(), allowed, "no refused request reached the app");
}

/// The nginx binary: `$NGINX`, else Debian's `/usr/sbin/nginx`, else `nginx` on the PATH.
fn nginx_path() -> PathBuf {
    let candidates: Vec<PathBuf> = match std::env::var_os("NGINX") {
        Some(path) => vec![path.into()],
        None => vec!["/usr/sbin/nginx".into(), "nginx".into()],
    };
    for path in candidates {
        // `nginx -V` prints its build options on stderr.
        let Ok(out) = Command::new(&path).arg("-V").output() else {
            continue;
        };
        let built = String::from_utf8_lossy(&out.stderr);
        assert!(
            built.contains("http_auth_request_module"),
            "{} is built without auth_request, which this test needs: install Debian's \
             nginx (apt-get install nginx)",
            path.display()
        );
        return path;
    }
    panic!(
        "this test runs the real nginx, which is not installed: apt-get install nginx, or \
         set NGINX=/path/to/nginx"
    );
}

fn curl_path() -> PathBuf {
    let path = PathBuf::from("curl");
    let found = Command::new(&path)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    assert!(
        found,
        "this test drives nginx with curl: apt-get install curl"
    );
    path
}

/// The app behind nginx: answers every request 200 with the `X-Authenta-Key-Id` header it
/// got (every copy, comma-joined) as its body, and counts the requests that reach it.
struct App {
    port: u16,
    hits: Arc<AtomicUsize>,
}

impl App {
    fn start() -> App {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the app's port");
        let port = listener.local_addr().expect("the app's address").port();
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        // Lives as long as the test process: it only ever waits in accept.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                counted.fetch_add(1, Ordering::SeqCst);
                let _ = App::answer(stream);
            }
        });
        App { port, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn answer(mut stream: TcpStream) -> std::io::Result<()> {
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut key_ids = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.trim().eq_ignore_ascii_case("x-authenta-key-id") {
                    key_ids.push(value.trim().to_owned());
                }
            }
        }
        let body = key_ids.join(",");
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )?;
        stream.flush()
    }
}

/// nginx in the foreground on its own prefix, config and temp paths; stopped on drop, so
/// that a failed assert leaves no nginx behind.
struct Nginx {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl Nginx {
    fn start(binary: &Path, socket: &Path, app_port: u16) -> Nginx {
        let dir = tempfile::tempdir().expect("nginx's temp dir");
        let prefix = dir.path();
        let port = free_port();
        let at = |name: &str| prefix.join(name).display().to_string();
        // Started as root, nginx would run its worker as `nobody`, who cannot open the
        // daemon's socket (0660 in a 0755 directory; nginx answers 500): keep it root.
        // Started as another user, the worker runs as that user, the daemon's own.
        let user = if nix::unistd::geteuid().is_root() {
            "user root;\n"
        } else {
            ""
        };
        let site = SITE
            .replace("@SOCKET@", &socket.display().to_string())
            .replace("@LISTEN@", &format!("127.0.0.1:{port}"))
            .replace("@APP@", &format!("127.0.0.1:{app_port}"));
        let config = format!(
            "{user}daemon off;\nmaster_process on;\nworker_processes 1;\n\
             pid {pid};\nlock_file {lock};\nerror_log {error} info;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n    access_log {access};\n    client_body_temp_path {body};\n    \
             proxy_temp_path {proxy};\n    fastcgi_temp_path {fastcgi};\n    \
             uwsgi_temp_path {uwsgi};\n    scgi_temp_path {scgi};\n{site}}}\n",
            pid = at("nginx.pid"),
            lock = at("nginx.lock"),
            error = at("error.log"),
            access = at("access.log"),
            body = at("client_body"),
            proxy = at("proxy"),
            fastcgi = at("fastcgi"),
            uwsgi = at("uwsgi"),
            scgi = at("scgi"),
        );
        let config_path = prefix.join("nginx.conf");
        std::fs::write(&config_path, &config).expect("write nginx.conf");
        let stderr = std::fs::File::create(prefix.join("stderr.log")).expect("stderr.log");
        let child = Command::new(binary)
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(&config_path)
            .arg("-e")
            .arg(prefix.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start nginx");
        let mut nginx = Nginx { dir, port, child };
        nginx.wait_listening();
        nginx
    }

    /// Polls nginx's port until it accepts; fails with nginx's logs if it exits first.
    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("nginx exited with {status}:\n{}", self.logs());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("nginx did not listen within 10 s:\n{}", self.logs());
    }

    fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name));
        format!(
            "stderr: {}\nerror.log: {}",
            read("stderr.log").unwrap_or_default(),
            read("error.log").unwrap_or_default()
        )
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its worker, then itself; SIGKILL if it lingers.
        if let Ok(None) = self.child.try_wait() {
            common::signal(&self.child, libc::SIGTERM);
            common::wait_timeout(&mut self.child, Duration::from_secs(5));
        }
        let _ = self.child.wait();
    }
}

/// The real curl, against nginx's port.
struct Curl {
    binary: PathBuf,
    port: u16,
    dir: PathBuf,
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: String,
    body: String,
}

impl Reply {
    /// The value of the header `name` (case-insensitive), if any.
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

impl Curl {
    /// `curl -X METHOD -H ...` on `/orders/7`: the status, headers and body.
    fn send(&self, method: &str, headers: &[String]) -> Reply {
        let body_file = self.dir.join("curl-body");
        let head_file = self.dir.join("curl-head");
        // curl writes no file for an empty body: never read the last request's.
        let _ = std::fs::remove_file(&body_file);
        let _ = std::fs::remove_file(&head_file);
        let mut command = Command::new(&self.binary);
        command
            .args(["-s", "--noproxy", "*", "--max-time", "10", "-o"])
            .arg(&body_file)
            .arg("-D")
            .arg(&head_file)
            .args(["-w", "%{http_code}", "-X", method]);
        for header in headers {
            command.arg("-H").arg(header);
        }
        let out = command
            .arg(format!("http://127.0.0.1:{}/orders/7", self.port))
            .output()
            .expect("run curl");
        let status = String::from_utf8_lossy(&out.stdout);
        Reply {
            status: status.trim().parse().unwrap_or_else(|_| {
                panic!(
                    "curl printed no status ({}): {status} {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                )
            }),
            headers: std::fs::read_to_string(&head_file).unwrap_or_default(),
            body: std::fs::read_to_string(&body_file).unwrap_or_default(),
        }
    }
}
