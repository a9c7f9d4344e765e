//! Time as the daemon keeps it: wall-clock timestamps in unix milliseconds, and durations
//! as people write them (`90d`, `12h`, `30m`, `1h30m`, `0s`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the unix epoch (0 for a clock set before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The last millisecond RFC 3339 can write (9999-12-31T23:59:59Z): humantime fails past it,
/// and a policy's very long `max_age` can put a time there.
const LAST_RFC3339_MS: i64 = 253_402_300_799_000;

/// RFC 3339 UTC, to the second; times past the year 9999 are shown as its last second.
pub fn format_rfc3339(unix_ms: i64) -> String {
    let ms = unix_ms.clamp(0, LAST_RFC3339_MS);
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Adds seconds to a timestamp without overflow.
pub fn add_secs(at_ms: i64, secs: u64) -> i64 {
    at_ms.saturating_add(i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000))
}

/// The units a duration may be written in, largest first, with their length in
/// microseconds. No months or years: their length depends on the calendar.
const UNITS: [(&str, u64); 6] = [
    ("d", 86_400_000_000),
    ("h", 3_600_000_000),
    ("m", 60_000_000),
    ("s", 1_000_000),
    ("ms", 1_000),
    ("us", 1),
];

/// What the errors say is accepted.
const ACCEPTED: &str = "write it like 90d, 12h, 30m, 45s or 1h30m (units: d, h, m, s, ms, us)";

/// Parses a duration written as numbers with units (`90d`, `1h30m`, `75us`, or `0`); the
/// error says what is accepted.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err(format!("an empty duration: {ACCEPTED}"));
    }
    if text.starts_with('-') {
        return Err(format!("'{text}': durations must be positive; {ACCEPTED}"));
    }
    let mut micros: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_len = rest[digits..]
            .find(|c: char| c.is_ascii_digit() || c.is_whitespace())
            .unwrap_or(rest.len() - digits);
        let (number, unit) = (&rest[..digits], &rest[digits..digits + unit_len]);
        let value: u64 = number
            .parse()
            .map_err(|_| format!("'{text}' is not a duration: {ACCEPTED}"))?;
        let Some(&(_, size)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(format!(
                "'{text}' is not a duration: unknown unit '{unit}'; {ACCEPTED}"
            ));
        };
        micros = value
            .checked_mul(size)
            .and_then(|part| micros.checked_add(part))
            .ok_or_else(|| format!("'{text}' is too long a duration"))?;
        rest = rest[digits + unit_len..].trim_start();
    }
    Ok(Duration::from_micros(micros))
}

/// Formats whole seconds the way durations are written: `365d`, `1h30m`, `45s`, `0s`.
pub fn format_secs(secs: u64) -> String {
    format_duration(Duration::from_secs(secs))
}

/// Formats milliseconds as a duration (`1m`, `250ms`).
pub fn format_millis(ms: u64) -> String {
    format_duration(Duration::from_millis(ms))
}

/// Formats a duration the way they are written (`90d12h`, `75us`): the largest units first,
/// none longer than a day.
pub fn format_duration(duration: Duration) -> String {
    let mut micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
    if micros == 0 {
        return "0s".into();
    }
    let mut text = String::new();
    for (name, size) in UNITS {
        if micros >= size {
            text.push_str(&format!("{}{name}", micros / size));
            micros %= size;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3_600)));
        assert_eq!(
            parse_duration("365d"),
            Ok(Duration::from_secs(365 * 86_400))
        );
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn printed_as_written_and_read_back() {
        for (secs, text) in [
            (365 * 86_400, "365d"),
            (5_400, "1h30m"),
            (3_600, "1h"),
            (0, "0s"),
            (90 * 86_400 + 43_200, "90d12h"),
        ] {
            assert_eq!(format_secs(secs), text);
            assert_eq!(parse_duration(text), Ok(Duration::from_secs(secs)));
        }
        assert_eq!(format_duration(Duration::from_micros(75)), "75us");
        assert_eq!(format_rfc3339(i64::MAX), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn only_documented_units_and_positive_durations() {
        for bad in ["1y", "2months", "1w", "5", "d", "1h30", "1.5h", "", "   "] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        let e = parse_duration("-5d").expect_err("negative");
        assert!(e.contains("must be positive"), "{e}");
        assert!(parse_duration("99999999999999d").is_err());
    }

    #[test]
    fn rejects_other_text_with_advice() {
        let e = parse_duration("soon").expect_err("not a duration");
        assert!(e.contains("90d"), "{e}");
        assert!(parse_duration("12").is_err());
    }
}
