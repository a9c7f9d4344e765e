//! Reading a policy file: TOML, validated whole. Any problem — syntax, an unknown field, a
//! bad duration, glob or hash, an unknown user, a rule that cannot work — rejects the whole
//! file with its line number, so a half-understood policy is never put in force.

use super::{Defaults, Policy, Revocations, RotationRule, Sink};
use crate::token::{is_key_id, TokenHash};
use serde::{Deserialize, Deserializer};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    rotation: Vec<toml::Spanned<RawRule>>,
    #[serde(default)]
    revocations: RawRevocations,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    #[serde(default, deserialize_with = "duration")]
    max_age: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    warn_before: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    regenerate_grace: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default, deserialize_with = "key_id")]
    id: Option<String>,
    #[serde(default, deserialize_with = "pattern")]
    name: Option<glob::Pattern>,
    environment: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    max_age: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    warn_before: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    every: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    overlap: Option<Duration>,
    sink: Option<PathBuf>,
    #[serde(default, deserialize_with = "user")]
    sink_owner: Option<u32>,
    #[serde(default, deserialize_with = "mode")]
    sink_mode: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRevocations {
    #[serde(default, deserialize_with = "key_ids")]
    ids: Vec<String>,
    #[serde(default, deserialize_with = "hashes")]
    token_sha256: Vec<TokenHash>,
}

/// Parses and validates a policy. The error names the line and what to fix.
pub fn parse(text: &str) -> Result<Policy, String> {
    let raw: RawPolicy = toml::from_str(text).map_err(|e| one_line(&e.to_string()))?;
    let mut rotation = Vec::with_capacity(raw.rotation.len());
    for spanned in raw.rotation {
        let line = line_of(text, spanned.span().start);
        let rule = spanned.into_inner();
        rotation.push(rule_from(rule).map_err(|e| format!("line {line}: [[rotation]]: {e}"))?);
    }
    Ok(Policy {
        defaults: Defaults {
            max_age: raw.defaults.max_age,
            warn_before: raw.defaults.warn_before,
            regenerate_grace: raw.defaults.regenerate_grace,
        },
        rotation,
        revocations: Revocations {
            ids: raw.revocations.ids,
            token_sha256: raw.revocations.token_sha256,
        },
    })
}

fn rule_from(raw: RawRule) -> Result<RotationRule, String> {
    if raw.id.is_none() && raw.name.is_none() && raw.environment.is_none() {
        return Err("a rule needs at least one of id, name or environment to match keys".into());
    }
    if raw.every.is_some() != raw.sink.is_some() {
        return Err(
            "`every` and `sink` go together: a scheduled rotation must write the new \
                    token somewhere the service reads it"
                .into(),
        );
    }
    if raw.every.is_some_and(|d| d < Duration::from_secs(1)) {
        return Err("`every` must be at least 1s".into());
    }
    if let (Some(every), Some(overlap)) = (raw.every, raw.overlap) {
        if overlap >= every {
            return Err("`overlap` must be shorter than `every`".into());
        }
    }
    if raw.sink.is_none() && (raw.sink_owner.is_some() || raw.sink_mode.is_some()) {
        return Err("`sink_owner` and `sink_mode` need a `sink`".into());
    }
    // The path quoted with escapes: one line in logs and `policy status`, whatever it holds.
    let sink = match raw.sink {
        Some(path) if !path.is_absolute() => {
            return Err(format!("sink {path:?} must be an absolute path"))
        }
        Some(path) if path.file_name().is_none() => {
            return Err(format!("sink {path:?} must name a file"))
        }
        Some(path) => Some(Sink {
            path,
            owner: raw.sink_owner,
            mode: raw.sink_mode.unwrap_or(0o400),
        }),
        None => None,
    };
    Ok(RotationRule {
        id: raw.id,
        name: raw.name,
        environment: raw.environment,
        max_age: raw.max_age,
        warn_before: raw.warn_before,
        every: raw.every,
        overlap: raw.overlap.unwrap_or(Duration::ZERO),
        sink,
    })
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(1, |before| before.matches('\n').count() + 1)
}

/// toml's messages span several lines and quote the offending source line with a caret
/// drawing; logs want one line, and no quoted source (it may hold a key name pattern).
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains('|'))
        .filter(|l| !l.chars().all(|c| c == '^' || c == ' '))
        .collect::<Vec<_>>()
        .join(" ")
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    crate::time::parse_duration(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn key_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let id = String::deserialize(d)?;
    check_key_id(&id)
        .map(|()| Some(id))
        .map_err(serde::de::Error::custom)
}

fn key_ids<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let ids = Vec::<String>::deserialize(d)?;
    for id in &ids {
        check_key_id(id).map_err(serde::de::Error::custom)?;
    }
    Ok(ids)
}

fn check_key_id(id: &str) -> Result<(), String> {
    if is_key_id(id) {
        Ok(())
    } else {
        Err("not a key id (they look like key_ and 16 letters or digits)".into())
    }
}

fn hashes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<TokenHash>, D::Error> {
    let texts = Vec::<String>::deserialize(d)?;
    texts
        .iter()
        .map(|text| {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(text.trim(), &mut hash).map_err(|_| {
                serde::de::Error::custom(
                    "token_sha256 entries are 64 hex digits (SHA-256 of the leaked token)",
                )
            })?;
            Ok(hash)
        })
        .collect()
}

fn pattern<'de, D: Deserializer<'de>>(d: D) -> Result<Option<glob::Pattern>, D::Error> {
    let text = String::deserialize(d)?;
    glob::Pattern::new(&text)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("name is not a valid glob: {e}")))
}

fn user<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NameOrUid {
        Uid(u32),
        Name(String),
    }
    match NameOrUid::deserialize(d)? {
        NameOrUid::Uid(uid) => Ok(Some(uid)),
        NameOrUid::Name(name) => {
            if let Ok(uid) = name.parse::<u32>() {
                return Ok(Some(uid));
            }
            match nix::unistd::User::from_name(&name) {
                Ok(Some(user)) => Ok(Some(user.uid.as_raw())),
                _ => Err(serde::de::Error::custom(format!(
                    "sink_owner: no user named '{name}' on this host"
                ))),
            }
        }
    }
}

fn mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let text = String::deserialize(d)?;
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom("sink_mode is an octal mode like \"0400\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../systemd/policy.example.toml");

    #[test]
    fn the_shipped_example_parses() {
        let policy = parse(EXAMPLE).expect("example parses");
        assert!(policy.defaults.max_age.is_some());
        assert!(!policy.rotation.is_empty());
    }

    #[test]
    fn a_full_policy_parses() {
        let policy = parse(
            r#"
            [defaults]
            max_age = "365d"
            warn_before = "30d"
            regenerate_grace = "1h"

            [[rotation]]
            name = "Backend-*"
            environment = "production"
            max_age = "90d"
            every = "30d"
            overlap = "1h"
            sink = "/run/app/token"
            sink_owner = 0
            sink_mode = "0440"

            [revocations]
            ids = ["key_0123456789abcdef"]
            token_sha256 = ["0000000000000000000000000000000000000000000000000000000000000000"]
            "#,
        )
        .expect("parses");
        assert_eq!(
            policy.defaults.max_age,
            Some(Duration::from_secs(365 * 86_400))
        );
        let rule = &policy.rotation[0];
        assert_eq!(rule.every, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(rule.sink.as_ref().map(|s| s.mode), Some(0o440));
        assert_eq!(policy.revocations.ids.len(), 1);
        assert_eq!(policy.revocations.token_sha256, vec![[0u8; 32]]);
        assert_eq!(parse("").expect("empty is fine"), Policy::default());
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let cases = [
            ("[defaults]\nmax_age = \"soon\"\n", "line 2", "duration"),
            ("[defaults]\nmax_agee = \"1d\"\n", "line 2", "unknown field"),
            ("[defaults\n", "line 1", ""),
            ("\n\n[[rotation]]\nmax_age = \"1d\"\n", "line 3", "at least one of id, name"),
            ("[[rotation]]\nname = \"x\"\nevery = \"1d\"\n", "line 1", "`every` and `sink`"),
            (
                "[[rotation]]\nname = \"x\"\nevery = \"1d\"\nsink = \"/t\"\nsink_owner = \"no-such-user-here\"\n",
                "line 5",
                "no user named",
            ),
            ("[revocations]\ntoken_sha256 = [\"abc\"]\n", "line 2", "64 hex digits"),
            ("[revocations]\nids = [\"api_x\"]\n", "line 2", "not a key id"),
            ("[[rotation]]\nname = \"[\"\n", "line 2", "glob"),
            (
                "[[rotation]]\nname = \"x\"\nevery = \"1h\"\noverlap = \"2h\"\nsink = \"/t\"\n",
                "line 1",
                "shorter than",
            ),
            ("[[rotation]]\nname = \"x\"\nevery = \"1h\"\nsink = \"rel/t\"\n", "line 1", "absolute"),
            // Found by the fuzzer: a path with a line break in it.
            (
                "[[rotation]]\nname = \"B*\"\nevery = \"30d\"\noverlap = \"2h\"\nsink = \"%ru\\n/x/t\"\n",
                "line 1",
                "absolute",
            ),
        ];
        for (text, line, words) in cases {
            let error = parse(text).expect_err(text);
            assert!(error.contains(line), "{text:?}: {error}");
            assert!(error.contains(words), "{text:?}: {error}");
            assert!(!error.contains('\n'), "one line: {error}");
            assert!(!error.contains('|'), "no quoted source: {error}");
        }
    }
}
