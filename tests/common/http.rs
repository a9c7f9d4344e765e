//! A small HTTP/1.1 client for the daemon's HTTP side: one request per connection
//! (`Connection: close`), answer read to the end.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

/// An HTTP answer: status, headers (names lower-cased) and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The error code of a `{"error":{"code":...}}` body.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code: {}", self.body))
            .to_string()
    }
}

/// `METHOD path` with `headers` to a TCP address (`127.0.0.1:PORT`).
pub fn tcp(address: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let stream = std::net::TcpStream::connect(address).expect("connect to the HTTP port");
    exchange(stream, method, path, headers)
}

/// `METHOD path` with `headers` over a Unix socket.
pub fn unix(socket: &Path, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let stream = std::os::unix::net::UnixStream::connect(socket).expect("connect to http.sock");
    exchange(stream, method, path, headers)
}

/// `Authorization: Bearer token` as a header pair.
pub fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

fn exchange<S: Read + Write>(
    mut stream: S,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = format!("{method} {path} HTTP/1.1\r\nhost: keyd\r\nconnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("send request");
    read_reply(&mut stream)
}

/// Reads an answer to the end of the connection.
pub fn read_reply(stream: &mut impl Read) -> Reply {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read answer");
    parse(&String::from_utf8_lossy(&raw))
}

/// Parses one answer.
pub fn parse(raw: &str) -> Reply {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {raw:?}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Sets read and write timeouts, so a test fails rather than hangs.
pub fn with_timeouts(stream: &std::net::TcpStream) {
    let limit = Some(Duration::from_secs(30));
    stream.set_read_timeout(limit).expect("read timeout");
    stream.set_write_timeout(limit).expect("write timeout");
}
