//! `/v1/auth`: the forward-auth answer for nginx `auth_request`, Traefik ForwardAuth, Caddy
//! `forward_auth` and Envoy `ext_authz` (HTTP mode).
//!
//! The token comes from `Authorization: Bearer`, else `X-API-Key`. The permissions asked
//! for are those `X-Authenta-Permission` (a comma list) and the method of the request the
//! proxy is deciding on (`X-Forwarded-Method`, `X-Original-Method`) ask for together, else
//! this request's own method: GET, HEAD, OPTIONS read; POST, PUT, PATCH write; DELETE
//! delete. The answer's status is the verify code's (200, 401, 403); a denial's body says
//! which code and why.

use super::routes::{error, json_bytes, Answer};
use crate::daemon::Daemon;
use crate::index::verify::decide_run;
use crate::metrics::VerifyTally;
use crate::time;
use authenta_client::proto::{Permission, VerifyCode};
use authenta_client::verify_wire::{
    PermissionBits, VerifyAnswerRef, VerifyBodyRef, VerifyQuestion, VerifyRequestRef,
};
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{HeaderMap, Method, StatusCode};
use std::convert::Infallible;

const API_KEY: &str = "x-api-key";
const PERMISSION: &str = "x-authenta-permission";
const ENVIRONMENT: &str = "x-authenta-environment";
/// Where proxies put the method of the request they ask about: Traefik and Caddy, then
/// the header nginx is told to set (`proxy_set_header X-Original-Method $request_method`).
const ORIGINAL_METHOD: [&str; 2] = ["x-forwarded-method", "x-original-method"];

/// Answers one forward-auth request.
pub fn answer(daemon: &Daemon, method: &Method, headers: &HeaderMap) -> Answer {
    let token = match find_token(headers) {
        Found::Token(token) => token,
        Found::Unreadable => return denied(VerifyCode::Malformed),
        Found::Missing => return missing(),
    };
    let permissions = match permissions_asked(method, headers) {
        Ok(permissions) => permissions,
        Err(refusal) => return refusal,
    };
    let environment = match environment_asked(headers) {
        Ok(environment) => environment,
        Err(refusal) => return refusal,
    };
    verify(daemon, token, permissions, environment)
}

/// The environment the key must carry, if one is asked. Asked twice is refused: a proxy
/// that appends its header to one the client sent would otherwise let the client's, the
/// first, decide.
fn environment_asked(headers: &HeaderMap) -> Result<Option<&str>, Answer> {
    let mut values = headers.get_all(ENVIRONMENT).iter();
    let (first, second) = (values.next(), values.next());
    let refused = |message| error(StatusCode::BAD_REQUEST, "bad_request", message);
    match (first.map(HeaderValue::to_str), second) {
        (None, _) => Ok(None),
        (Some(_), Some(_)) => Err(refused(
            "X-Authenta-Environment is given more than once: send one",
        )),
        (Some(Ok(environment)), None) => Ok(Some(environment)),
        (Some(Err(_)), None) => Err(refused("X-Authenta-Environment must be visible ASCII")),
    }
}

/// Decides the verify with the socket's own decision, and counts it as the socket does.
fn verify(
    daemon: &Daemon,
    token: &str,
    permissions: PermissionBits,
    environment: Option<&str>,
) -> Answer {
    let request = VerifyRequestRef {
        id: 0,
        body: VerifyBodyRef::Verify(VerifyQuestion {
            token,
            permissions,
            environment,
            // Always 1 over HTTP: a cost taken from a header would let a client that slips
            // one past its proxy spend nothing.
            cost: None,
        }),
    };
    let mut tally = VerifyTally::default();
    let mut answered = None;
    let maps = daemon.index.read();
    let _ = decide_run::<Infallible>(&maps, &[Some(request)], time::now_ms(), |_, answer| {
        tally.count(answer.code);
        answered = Some(respond(answer));
        Ok(())
    });
    drop(maps);
    daemon.metrics.add_verifies(&tally);
    answered.unwrap_or_else(|| denied(VerifyCode::Malformed))
}

enum Found<'h> {
    Token(&'h str),
    /// A token header that is not visible ASCII: no token can be in it.
    Unreadable,
    Missing,
}

fn find_token(headers: &HeaderMap) -> Found<'_> {
    if let Some(value) = headers.get(AUTHORIZATION) {
        let Ok(value) = value.to_str() else {
            return Found::Unreadable;
        };
        if let Some((scheme, token)) = value.split_once(' ') {
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
                return Found::Token(token.trim());
            }
        }
    }
    match headers.get(API_KEY).map(HeaderValue::to_str) {
        Some(Ok(token)) if !token.trim().is_empty() => Found::Token(token.trim()),
        Some(Err(_)) => Found::Unreadable,
        _ => Found::Missing,
    }
}

/// The permissions asked for: every one that `X-Authenta-Permission` and the original
/// method headers ask for together; with none of those, this request's own method.
///
/// Together, not the first found: a proxy passes its client's headers on to `/v1/auth`
/// unless told to strip them, so a client could otherwise send `X-Authenta-Permission:
/// read` or `X-Forwarded-Method: GET` with a DELETE and have a read-only key let through.
/// A header a client adds can only ask for more, never for less.
fn permissions_asked(method: &Method, headers: &HeaderMap) -> Result<PermissionBits, Answer> {
    let mut bits = 0;
    let mut named = false;
    for list in headers.get_all(PERMISSION) {
        named = true;
        bits |= parse_permissions(list.to_str().unwrap_or("")).ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "X-Authenta-Permission must be a comma list of read, write, delete",
            )
        })?;
    }
    for name in ORIGINAL_METHOD {
        for original in headers.get_all(name) {
            named = true;
            bits |= method_permission(original.to_str().unwrap_or(""))?;
        }
    }
    if !named {
        bits = method_permission(method.as_str())?;
    }
    Ok(PermissionBits(bits))
}

/// The permission a method needs: GET, HEAD, OPTIONS read; POST, PUT, PATCH write; DELETE
/// delete; any other is refused.
fn method_permission(method: &str) -> Result<u8, Answer> {
    let permission = match method.trim().to_ascii_uppercase().as_str() {
        "GET" | "HEAD" | "OPTIONS" => Permission::Read,
        "POST" | "PUT" | "PATCH" => Permission::Write,
        "DELETE" => Permission::Delete,
        _ => {
            return Err(error(
                StatusCode::FORBIDDEN,
                "unmapped_method",
                "no permission maps to this method: send X-Authenta-Permission to say which",
            ))
        }
    };
    Ok(permission.bit())
}

fn parse_permissions(list: &str) -> Option<u8> {
    let mut bits = 0;
    for name in list.split(',') {
        bits |= name.parse::<Permission>().ok()?.bit();
    }
    Some(bits)
}

/// Every permission set as a comma list, by its bits (read 1, write 2, delete 4), so the
/// header needs no allocation.
const PERMISSION_LISTS: [&str; 8] = [
    "",
    "read",
    "write",
    "read,write",
    "delete",
    "read,delete",
    "write,delete",
    "read,write,delete",
];

/// The body of a 200, borrowing from the index.
#[derive(serde::Serialize)]
struct Valid<'a> {
    code: &'static str,
    key_id: Option<&'a str>,
    permissions: PermissionBits,
    environment: Option<&'a str>,
    rotate_by: Option<String>,
    rotation_due: bool,
    name: Option<&'a str>,
    owner_id: Option<&'a str>,
    meta: &'a authenta_client::proto::Meta,
    expires_at: Option<String>,
    ratelimit: Option<authenta_client::proto::RateLimitState>,
    remaining: Option<u64>,
}

/// The answer to a decided verify.
fn respond(answer: &VerifyAnswerRef<'_>) -> Answer {
    if answer.code.status() == 429 {
        return limited(answer);
    }
    if answer.code != VerifyCode::Valid {
        return denied(answer.code);
    }
    let rotate_by = answer.rotate_by.map(time::format_rfc3339);
    let due = rotate_by.clone().filter(|_| answer.rotation_due);
    let body = Valid {
        code: "valid",
        key_id: answer.key_id,
        permissions: answer.permissions,
        environment: answer.environment,
        rotate_by,
        rotation_due: answer.rotation_due,
        name: answer.name,
        owner_id: answer.owner_id,
        meta: answer.meta,
        expires_at: answer.expires_at.map(time::format_rfc3339),
        ratelimit: answer.ratelimit,
        remaining: answer.remaining,
    };
    let mut response = json_bytes(
        StatusCode::OK,
        serde_json::to_vec(&body).unwrap_or_default(),
    );
    let headers = response.headers_mut();
    set(headers, "x-authenta-key-id", answer.key_id);
    let list = PERMISSION_LISTS[usize::from(answer.permissions.0 & 7)];
    headers.insert("x-authenta-permissions", HeaderValue::from_static(list));
    // Every header on every 200, empty when it has no value: a proxy that copies only the
    // headers the daemon sends would otherwise let a client's own copy through to the app.
    let empty = || HeaderValue::from_static("");
    let environment = answer
        .environment
        .and_then(|e| HeaderValue::from_str(e).ok());
    headers.insert("x-authenta-environment", environment.unwrap_or_else(empty));
    let due = due.and_then(|at| HeaderValue::from_str(&at).ok());
    headers.insert("x-authenta-rotation-due", due.unwrap_or_else(empty));
    let owner = answer.owner_id.and_then(|o| HeaderValue::from_str(o).ok());
    headers.insert("x-authenta-owner-id", owner.unwrap_or_else(empty));
    response
}

/// 429 for a spent rate limit or balance, with `Retry-After` (whole seconds, at least 1)
/// when the rate limit says when the next verify may pass.
fn limited(answer: &VerifyAnswerRef<'_>) -> Answer {
    let mut response = error(
        StatusCode::TOO_MANY_REQUESTS,
        answer.code.as_str(),
        message(answer.code),
    );
    let retry = answer
        .ratelimit
        .filter(|_| answer.code == VerifyCode::RateLimited)
        .map(|r| {
            let wait_ms = (r.retry_at - time::now_ms()).max(0);
            (wait_ms + 999) / 1000
        });
    if let Some(secs) = retry {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    response
}

/// Sets a header when there is a value and it is a valid header value.
fn set(headers: &mut HeaderMap, name: &'static str, value: Option<&str>) {
    if let Some(value) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// 401 or 403 with the verify code, as RFC 6750 says for bearer tokens.
fn denied(code: VerifyCode) -> Answer {
    let (status, challenge) = if code == VerifyCode::InsufficientPermissions {
        (
            StatusCode::FORBIDDEN,
            "Bearer realm=\"authenta\", error=\"insufficient_scope\"",
        )
    } else {
        (
            StatusCode::UNAUTHORIZED,
            "Bearer realm=\"authenta\", error=\"invalid_token\"",
        )
    };
    let mut response = error(status, code.as_str(), message(code));
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    response
}

/// No token at all: a challenge without an error, as RFC 6750 asks.
fn missing() -> Answer {
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "missing",
        "no API key: send Authorization: Bearer <token> or X-API-Key: <token>",
    );
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"authenta\""),
    );
    response
}

fn message(code: VerifyCode) -> &'static str {
    match code {
        VerifyCode::Valid => "valid",
        VerifyCode::Malformed => "this is not an authenta token (prefix, length or checksum)",
        VerifyCode::Unknown => "no key has this token",
        VerifyCode::Revoked => "this key was revoked, or this token replaced by a new one",
        VerifyCode::Expired => "this key has expired",
        VerifyCode::WrongEnvironment => "this key belongs to another environment",
        VerifyCode::InsufficientPermissions => "this key lacks the permission this request needs",
        VerifyCode::RateLimited => "this key's rate limit (or its owner's) is spent: retry later",
        VerifyCode::UsageExceeded => "this key's credits (or its owner's) are spent",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).expect("header value"));
        }
        map
    }

    fn asked(method: Method, pairs: &[(&'static str, &str)]) -> Option<u8> {
        permissions_asked(&method, &headers(pairs))
            .ok()
            .map(|bits| bits.0)
    }

    #[test]
    fn the_original_method_decides_the_permission() {
        let (read, write, delete) = (
            Permission::Read.bit(),
            Permission::Write.bit(),
            Permission::Delete.bit(),
        );
        assert_eq!(asked(Method::GET, &[]), Some(read));
        assert_eq!(
            asked(Method::GET, &[("x-forwarded-method", "DELETE")]),
            Some(delete)
        );
        assert_eq!(
            asked(Method::GET, &[("x-original-method", "patch")]),
            Some(write)
        );
        assert_eq!(asked(Method::GET, &[("x-original-method", "TRACE")]), None);
        assert_eq!(
            asked(Method::GET, &[("x-authenta-permission", "read, delete")]),
            Some(read | delete)
        );
        assert_eq!(
            asked(Method::GET, &[("x-authenta-permission", "admin")]),
            None
        );
        assert_eq!(
            asked(Method::from_bytes(b"PROPFIND").expect("method"), &[]),
            None
        );
    }

    #[test]
    fn bearer_comes_before_the_api_key_header() {
        let both = headers(&[("authorization", "bearer abc"), ("x-api-key", "def")]);
        assert!(matches!(find_token(&both), Found::Token("abc")));
        let basic = headers(&[("authorization", "Basic Zm9v"), ("x-api-key", "def")]);
        assert!(matches!(find_token(&basic), Found::Token("def")));
        assert!(matches!(
            find_token(&headers(&[("authorization", "Bearer ")])),
            Found::Missing
        ));
        assert!(matches!(find_token(&HeaderMap::new()), Found::Missing));
    }
}
