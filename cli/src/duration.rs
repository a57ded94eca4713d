//! Durations on the command line: `500ms`, `10s`, `30m`, `1h`, `7d`; a bare number is seconds.

use std::time::Duration;

/// Parses one duration (clap value parser).
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || format!("{text:?} is not a duration (examples: 500ms, 10s, 30m, 1h, 7d)");
    let value: u64 = number.parse().map_err(|_| bad())?;
    let per_unit_ms: u64 = match unit.trim() {
        "ms" => 1,
        "" | "s" | "sec" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    value
        .checked_mul(per_unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// Short human text of a duration (`10s`, `1500ms`).
pub fn show(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn units_parse() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse("42").unwrap(), Duration::from_secs(42));
        assert_eq!(parse("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("7d").unwrap(), Duration::from_secs(604_800));
    }

    #[test]
    fn nonsense_is_refused_with_examples() {
        for bad in ["", "h", "1w", "-1s", "1.5h", "99999999999999999999d"] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(bad) || e.contains("too long"), "{e}");
        }
        assert!(parse("1w").unwrap_err().contains("examples"));
    }

    #[test]
    fn show_is_short() {
        assert_eq!(show(Duration::from_secs(10)), "10s");
        assert_eq!(show(Duration::from_millis(1500)), "1500ms");
    }
}
