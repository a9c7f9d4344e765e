//! Which answer a request gets: by path, after the peer's access check.

use super::{forward_auth, monitoring};
use crate::access::Peer;
use crate::daemon::Daemon;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

pub type Answer = Response<Full<Bytes>>;

/// Answers one request. The body is never read: no route takes one.
pub async fn answer(daemon: &Daemon, peer: Option<&Peer>, request: Request<Incoming>) -> Answer {
    // Over a Unix socket the access rules apply as on the main socket; over TCP there is no
    // peer to check (the docs say so).
    if let Some(peer) = peer {
        let access = daemon.access();
        if !access.may_verify(peer) && !access.may_admin(peer) {
            return error(
                StatusCode::FORBIDDEN,
                "permission_denied",
                "this uid may not verify: ask the operator to add your group to verify_gids",
            );
        }
    }
    let path = request.uri().path();
    // Envoy's ext_authz appends the original path to its `path_prefix`.
    if path == "/v1/auth" || path.starts_with("/v1/auth/") {
        return forward_auth::answer(daemon, request.method(), request.headers());
    }
    match path {
        "/metrics" if reads(request.method()) => monitoring::metrics(daemon),
        "/healthz" if reads(request.method()) => monitoring::alive(),
        "/readyz" if reads(request.method()) => monitoring::ready(daemon).await,
        "/metrics" | "/healthz" | "/readyz" => {
            let mut answer = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "use GET or HEAD",
            );
            answer
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            answer
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such path: the daemon answers /v1/auth, /metrics, /healthz and /readyz",
        ),
    }
}

fn reads(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// A JSON answer with `status`.
pub fn json(status: StatusCode, body: &serde_json::Value) -> Answer {
    json_bytes(status, body.to_string().into_bytes())
}

/// An answer with `status` and a body already encoded as JSON.
pub fn json_bytes(status: StatusCode, body: Vec<u8>) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from(body)));
    *answer.status_mut() = status;
    answer
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    answer
}

/// `{"error":{"code":...,"message":...}}` with `status`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Answer {
    json(
        status,
        &serde_json::json!({ "error": { "code": code, "message": message } }),
    )
}
