//! Duration flags (`--startup-timeout 60s`, `--refresh-interval 500ms`,
//! `--max-event-age 31days`): humantime's syntax, one message style for every flag.
//!
//! Each flag gives its own examples, which end the message of a value that does not
//! parse, and its own lower bound: a zero timeout or interval is a typo, never a
//! wish.

use std::time::Duration;

/// Parses `text` as a humantime duration; when it is not one, the message ends with
/// `(try EXAMPLES)`.
pub fn parse_duration(text: &str, examples: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (try {examples})"))
}

/// Like [`parse_duration`], refusing zero ("must be more than 0").
pub fn parse_positive_duration(text: &str, examples: &str) -> Result<Duration, String> {
    let duration = parse_duration(text, examples)?;
    if duration.is_zero() {
        return Err("must be more than 0".into());
    }
    Ok(duration)
}

/// Like [`parse_duration`], refusing anything shorter than `min` ("must be at least
/// 100ms").
pub fn parse_duration_at_least(
    text: &str,
    min: Duration,
    examples: &str,
) -> Result<Duration, String> {
    let duration = parse_duration(text, examples)?;
    if duration < min {
        return Err(format!(
            "must be at least {}",
            humantime::format_duration(min)
        ));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humantime_units_parse() {
        for (text, expected) in [
            ("60s", Duration::from_secs(60)),
            ("500ms", Duration::from_millis(500)),
            ("2m", Duration::from_secs(120)),
            ("1h 30m", Duration::from_secs(5400)),
            ("31days", Duration::from_secs(31 * 86_400)),
            ("0s", Duration::ZERO),
        ] {
            assert_eq!(parse_duration(text, "60s"), Ok(expected), "{text}");
        }
    }

    #[test]
    fn a_bad_value_names_the_examples() {
        for text in ["soon", "", "60", "-1s", "1 fortnight"] {
            let message = parse_duration(text, "60s, 1s or 5m").expect_err(text);
            assert!(
                message.ends_with("(try 60s, 1s or 5m)"),
                "{text}: {message}"
            );
        }
    }

    #[test]
    fn bounds_are_enforced() {
        assert_eq!(
            parse_positive_duration("0ms", "1s"),
            Err("must be more than 0".into())
        );
        assert_eq!(
            parse_positive_duration("1ms", "1s"),
            Ok(Duration::from_millis(1))
        );
        let min = Duration::from_millis(100);
        assert_eq!(
            parse_duration_at_least("99ms", min, "1s"),
            Err("must be at least 100ms".into())
        );
        assert_eq!(parse_duration_at_least("100ms", min, "1s"), Ok(min));
        assert!(
            parse_duration_at_least("later", min, "1s")
                .expect_err("not a duration")
                .ends_with("(try 1s)")
        );
    }
}
