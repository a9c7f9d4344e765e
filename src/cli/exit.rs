//! Exit codes, the same for every command (listed in `--help` and docs/operations.md),
//! from sysexits(3) where one fits; and how an error is printed (`--json`: as JSON on
//! stdout, so a script reads one stream).

use authenta_client::proto::ErrorCode;
use serde_json::json;
use std::process::ExitCode;

/// Something else failed.
pub const FAILURE: u8 = 1;
/// `verify`: the key is not valid (401).
pub const INVALID_KEY: u8 = 41;
/// `verify`: the key lacks a permission asked for (403).
pub const MISSING_PERMISSION: u8 = 43;
/// `verify`: the key's rate limit or credits are spent (429).
pub const LIMITED: u8 = 49;
/// The command line, or an argument the daemon refused as invalid.
pub const USAGE: u8 = 64;
/// Data that is not as it must be: a broken audit chain.
pub const DATA_ERROR: u8 = 65;
/// No key with that id.
pub const NOT_FOUND: u8 = 66;
/// The daemon cannot be reached, or is shutting down.
pub const UNAVAILABLE: u8 = 69;
/// Fleet mode: try again (another node changed the key first, or NATS is unreachable).
pub const TEMPORARY: u8 = 75;
/// This user may not do that (admin requests).
pub const NO_PERMISSION: u8 = 77;

/// The table `--help` shows.
pub const TABLE: &str = "Exit codes:\n  \
    0   success (verify: the key is valid)\n  \
    1   another failure\n  \
    41  verify: the key is not valid (401)\n  \
    43  verify: the key lacks a permission (403)\n  \
    49  verify: the key's rate limit or credits are spent (429)\n  \
    64  usage: a bad command line, or an argument the daemon refused\n  \
    65  data error: the audit chain is broken\n  \
    66  no key with that id\n  \
    69  the daemon cannot be reached\n  \
    75  fleet mode: try again (conflict, or NATS unreachable)\n  \
    77  this user may not do that (admin requests)";

/// What an error means for the exit code, with the word `--json` names it by.
pub fn classify(error: &anyhow::Error) -> (u8, &'static str) {
    for cause in error.chain() {
        if let Some(client) = cause.downcast_ref::<authenta_client::Error>() {
            return match client {
                authenta_client::Error::Connect { .. } | authenta_client::Error::Io(_) => {
                    (UNAVAILABLE, "unavailable")
                }
                authenta_client::Error::Refused { code, .. } => refused(*code),
                _ => (FAILURE, "protocol"),
            };
        }
        if cause.downcast_ref::<UsageError>().is_some() {
            return (USAGE, "usage");
        }
    }
    (FAILURE, "error")
}

fn refused(code: ErrorCode) -> (u8, &'static str) {
    match code {
        ErrorCode::BadRequest => (USAGE, "bad_request"),
        ErrorCode::NotFound => (NOT_FOUND, "not_found"),
        ErrorCode::PermissionDenied => (NO_PERMISSION, "permission_denied"),
        ErrorCode::Busy => (UNAVAILABLE, "busy"),
        ErrorCode::Conflict => (TEMPORARY, "conflict"),
        ErrorCode::FleetUnavailable => (TEMPORARY, "fleet_unavailable"),
        ErrorCode::Storage => (FAILURE, "storage"),
        ErrorCode::BadFrame | ErrorCode::Internal => (FAILURE, "internal"),
    }
}

/// An argument this side refuses before asking the daemon.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Prints `message` as the error of a command (plain on stderr; with `json`, as
/// `{"error":{"code":...,"message":...}}` on stdout) and returns its exit code.
pub fn report(code: u8, word: &str, message: &str, json: bool) -> ExitCode {
    if json {
        super::output::print_json(&json!({ "error": { "code": word, "message": message } }));
    } else {
        eprintln!("error: {message}");
    }
    ExitCode::from(code)
}
