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

/// Adds seconds to a timestamp without overflow.
pub fn add_secs(at_ms: i64, secs: u64) -> i64 {
    at_ms.saturating_add(i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000))
}

/// Parses a duration; the error says what is accepted.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text).map_err(|e| {
        format!("'{text}' is not a duration ({e}): write it like 90d, 12h, 30m or 45s")
    })
}

/// Formats whole seconds compactly (e.g. `1d 2h`).
pub fn format_secs(secs: u64) -> String {
    humantime::format_duration(Duration::from_secs(secs)).to_string()
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
    fn rejects_other_text_with_advice() {
        let e = parse_duration("soon").expect_err("not a duration");
        assert!(e.contains("90d"), "{e}");
        assert!(parse_duration("12").is_err());
    }
}
