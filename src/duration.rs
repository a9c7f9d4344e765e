//! Durations as people write them: `90d`, `12h`, `30m`, `365d`, `1h30m`, `0s`.

use std::time::Duration;

/// Parses a duration; the error says what is accepted.
pub fn parse(text: &str) -> Result<Duration, String> {
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
        assert_eq!(parse("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse("12h"), Ok(Duration::from_secs(12 * 3_600)));
        assert_eq!(parse("365d"), Ok(Duration::from_secs(365 * 86_400)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_other_text_with_advice() {
        let e = parse("soon").expect_err("not a duration");
        assert!(e.contains("90d"), "{e}");
        assert!(parse("12").is_err());
    }
}
