//! Command-line forms of protocol 2's key lifecycle: rate limits (`100/1s`), refills
//! (`1000/1d`), metadata (`plan=pro`), and how they are shown.

use super::exit::UsageError;
use authenta_client::proto::{Change, KeyInfo, Meta, RateLimit, Refill};
use clap::Args;

/// The limits `keys update` and `owners set` change, each set or cleared.
#[derive(Args)]
pub struct LimitArgs {
    /// Rate limit: requests per window, e.g. 100/1s (over it: 429 rate_limited).
    #[arg(long, value_parser = parse_ratelimit, value_name = "LIMIT/WINDOW", conflicts_with = "no_ratelimit")]
    ratelimit: Option<RateLimit>,
    /// Remove the rate limit.
    #[arg(long)]
    no_ratelimit: bool,
    /// Set the credit balance (starts a new balance; each verify spends its cost).
    #[arg(long, value_name = "N", conflicts_with = "no_remaining")]
    remaining: Option<u64>,
    /// Remove the balance: unlimited verifies.
    #[arg(long)]
    no_remaining: bool,
    /// Set the balance back to AMOUNT every INTERVAL, e.g. 1000/1d (from now on).
    #[arg(long, value_parser = parse_refill, value_name = "AMOUNT/INTERVAL", conflicts_with = "no_refill")]
    refill: Option<Refill>,
    /// Stop refilling.
    #[arg(long)]
    no_refill: bool,
}

impl LimitArgs {
    /// The changes asked for: (rate limit, remaining, refill).
    pub fn changes(self) -> (Change<RateLimit>, Change<u64>, Change<Refill>) {
        (
            change(self.ratelimit, self.no_ratelimit),
            change(self.remaining, self.no_remaining),
            change(self.refill, self.no_refill),
        )
    }
}

/// `Some(Some(v))` to set, `Some(None)` to clear, `None` to keep.
pub fn change<T>(value: Option<T>, clear: bool) -> Change<T> {
    match (value, clear) {
        (Some(v), _) => Some(Some(v)),
        (None, true) => Some(None),
        (None, false) => None,
    }
}

/// `LIMIT/WINDOW`, e.g. `100/1s` or `1000/1m`.
pub fn parse_ratelimit(text: &str) -> Result<RateLimit, String> {
    let (limit, window_ms) = count_per(text, "a rate limit", "100/1s")?;
    let limit = u32::try_from(limit)
        .map_err(|_| format!("a rate limit of {limit} per window is too many"))?;
    Ok(RateLimit { limit, window_ms })
}

/// `AMOUNT/INTERVAL`, e.g. `1000/1d`.
pub fn parse_refill(text: &str) -> Result<Refill, String> {
    let (amount, interval_ms) = count_per(text, "a refill", "1000/1d")?;
    Ok(Refill {
        amount,
        interval_ms,
    })
}

fn count_per(text: &str, what: &str, example: &str) -> Result<(u64, u64), String> {
    let bad = || format!("{what} is COUNT/DURATION, e.g. {example}");
    let (count, duration) = text.split_once('/').ok_or_else(bad)?;
    let count: u64 = count.trim().parse().map_err(|_| bad())?;
    let duration = crate::time::parse_duration(duration.trim())?;
    let ms = u64::try_from(duration.as_millis()).map_err(|_| bad())?;
    if count == 0 || ms == 0 {
        return Err(format!(
            "{what} needs a count and a duration above zero, e.g. {example}"
        ));
    }
    Ok((count, ms))
}

/// One `--meta KEY=VALUE`.
pub fn parse_meta(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err("metadata is KEY=VALUE, e.g. plan=pro".into()),
    }
}

/// Metadata from repeated `--meta KEY=VALUE` (a later one wins). Parsed here rather than
/// by clap, whose error would repeat the value given: metadata may be secret.
pub fn meta_of(texts: Vec<String>) -> Result<Meta, UsageError> {
    texts
        .iter()
        .enumerate()
        .map(|(n, text)| {
            parse_meta(text).map_err(|why| UsageError(format!("--meta number {}: {why}", n + 1)))
        })
        .collect()
}

pub fn ratelimit_text(r: &RateLimit) -> String {
    format!("{}/{}", r.limit, crate::time::format_millis(r.window_ms))
}

pub fn refill_text(r: &Refill) -> String {
    format!("{}/{}", r.amount, crate::time::format_millis(r.interval_ms))
}

/// The lifecycle lines of `keys show`, only those set.
pub fn key_lines(key: &KeyInfo) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(owner) = &key.owner_id {
        lines.push(format!("owner:        {owner}"));
    }
    if !key.meta.is_empty() {
        let shown = super::output::shown;
        let pairs: Vec<_> = key
            .meta
            .iter()
            .map(|(k, v)| format!("{}={}", shown(k), shown(v)))
            .collect();
        lines.push(format!("meta:         {}", pairs.join(" ")));
    }
    if let Some(r) = &key.ratelimit {
        lines.push(format!("rate limit:   {}", ratelimit_text(r)));
    }
    if let Some(left) = key.remaining {
        let refill = key
            .refill
            .as_ref()
            .map(|r| format!(" (refill {})", refill_text(r)))
            .unwrap_or_default();
        lines.push(format!("remaining:    {left}{refill}"));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_as_count_per_duration() {
        assert_eq!(
            parse_ratelimit("100/1s"),
            Ok(RateLimit {
                limit: 100,
                window_ms: 1000
            })
        );
        assert_eq!(
            parse_refill("1000/1d").map(|r| r.interval_ms),
            Ok(86_400_000)
        );
        assert!(parse_ratelimit("100").is_err());
        assert!(parse_ratelimit("0/1s").is_err());
        assert!(parse_ratelimit("5000000000/1s").is_err());
        assert_eq!(parse_meta("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_meta("=x").is_err());
    }
}
