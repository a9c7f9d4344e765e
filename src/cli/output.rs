//! How keys, times and answers look on the terminal and in JSON.

use authenta_client::proto::{KeyInfo, Permission};
use serde_json::{json, Value};
use std::io::Write;

/// `println!` for command output: a reader that went away (`keys list | head -1`) ends the
/// command quietly, with the status of a process killed by SIGPIPE (141, what shells and
/// `pipefail` expect), rather than a panic. Not 0: `health` or `verify` must not report
/// success for an answer nobody read.
macro_rules! say {
    () => { $crate::cli::output::line(format_args!("")) };
    ($($arg:tt)*) => { $crate::cli::output::line(format_args!($($arg)*)) };
}
pub(crate) use say;

/// Writes one line on stdout (see [`say`]).
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| out.write_all(b"\n"));
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(BROKEN_PIPE);
        }
        eprintln!("error: cannot write the output: {e}");
        std::process::exit(i32::from(super::exit::FAILURE));
    }
}

/// The exit status of a command whose reader went away: 128 + SIGPIPE.
pub const BROKEN_PIPE: i32 = 141;

/// How long ago (or from now) `ms` is, for people: `3 min ago`, `in 12 d`.
pub fn relative(ms: i64, now: i64) -> String {
    let (secs, future) = (ms.abs_diff(now) / 1000, ms > now);
    let amount = match secs {
        0..=4 => return "just now".into(),
        5..=119 => format!("{secs} s"),
        120..=7_199 => format!("{} min", secs / 60),
        7_200..=172_799 => format!("{} h", secs / 3_600),
        _ => format!("{} d", secs / 86_400),
    };
    if future {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// RFC 3339 with how long ago it is, for tables; `none` when absent.
pub fn time_ago(ms: Option<i64>, none: &str, now: i64) -> String {
    ms.map_or_else(
        || none.to_owned(),
        |ms| format!("{} ({})", time(ms), relative(ms, now)),
    )
}

/// The form a token's first characters are shown in, everywhere: `api_q6vhydVB`.
/// Text from the store as a terminal may show it: control characters escaped (`\u{1b}`),
/// so that a name or metadata written by an older build, or by another node of a fleet,
/// can neither run an escape sequence nor forge a line of the output.
pub fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

pub fn start(key: &KeyInfo) -> String {
    format!("{}{}", crate::token::TOKEN_PREFIX, key.start)
}

/// RFC 3339 UTC, to the second.
pub fn time(ms: i64) -> String {
    crate::time::format_rfc3339(ms)
}

/// RFC 3339 or JSON null.
pub fn time_or_null(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |ms| Value::String(time(ms)))
}

/// RFC 3339 or a word for people.
pub fn time_or(ms: Option<i64>, none: &str) -> String {
    ms.map_or_else(|| none.to_owned(), time)
}

/// Permission names, for JSON.
pub fn permission_names(permissions: &[Permission]) -> Value {
    Value::Array(
        permissions
            .iter()
            .map(|p| Value::String(p.as_str().into()))
            .collect(),
    )
}

/// Permission names joined with commas, for people.
pub fn permission_list(permissions: &[Permission]) -> String {
    permissions
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// A key as `keys list --json` and `keys show --json` print it. Never a token.
pub fn key_json(key: &KeyInfo) -> Value {
    json!({
        "id": key.id,
        "name": key.name,
        "start": start(key),
        "permissions": permission_names(&key.permissions),
        "environment": key.environment,
        "state": key.state.as_str(),
        "created_at": time(key.created_at),
        "rotated_at": time_or_null(key.rotated_at),
        "last_used_at": time_or_null(key.last_used_at),
        "expires_at": time_or_null(key.expires_at),
        "rotate_by": time_or_null(key.rotate_by),
        "rotation_due": key.rotation_due,
        "revoked_at": time_or_null(key.revoked_at),
        "grace_until": time_or_null(key.grace_until),
        "usage": {
            "verifications": key.usage.verifications,
            "allowed": key.usage.allowed,
            "denied": key.usage.denied,
        },
        "owner_id": key.owner_id,
        "meta": key.meta,
        "ratelimit": key.ratelimit.as_ref().map(super::limits::ratelimit_text),
        "remaining": key.remaining,
        "refill": key.refill.as_ref().map(super::limits::refill_text),
    })
}

/// Prints JSON on stdout.
pub fn print_json(value: &Value) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => say!("{text}"),
        Err(e) => eprintln!("error: cannot print JSON: {e}"),
    }
}

/// Prints rows as aligned columns under a header.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        say!("{}", text.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(shown("plain name"), "plain name");
        assert_eq!(
            shown("a\u{1b}]0;x\u{7}\nstate: revoked"),
            "a\\u{1b}]0;x\\u{7}\\nstate: revoked"
        );
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(time(0), "1970-01-01T00:00:00Z");
        assert_eq!(time(1_795_828_078_123), "2026-11-28T01:07:58Z");
    }

    #[test]
    fn relative_times_read_like_people_say_them() {
        let now = 1_000_000_000_000;
        assert_eq!(relative(now - 180_000, now), "3 min ago");
        assert_eq!(relative(now - 2_000, now), "just now");
        assert_eq!(relative(now + 12 * 86_400_000, now), "in 12 d");
        assert_eq!(relative(now - 5 * 3_600_000, now), "5 h ago");
    }
}
