//! Durations as the API writes them: `90d`, `12h`, `1h30m`, `45s` (days are 24 hours).

use std::time::Duration;

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {why} (use forms such as 90d, 12h, 1h30m, 45s)")]
pub struct DurationError {
    pub input: String,
    pub why: &'static str,
}

/// Parses a sequence of `<digits><unit>` with units d, h, m, s.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let err = |why| DurationError {
        input: input.to_string(),
        why,
    };
    if input.is_empty() {
        return Err(err("empty"));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in input.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return Err(err("unknown unit")),
        };
        if digits.is_empty() {
            return Err(err("a unit without a number"));
        }
        let n: u64 = digits.parse().map_err(|_| err("number too large"))?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| err("too long"))?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(err("a number without a unit"));
    }
    Ok(Duration::from_secs(total))
}

/// Formats whole seconds the way the API writes durations: `90d`, `1d12h`, `1h30m`, `45s`, `0s`.
pub fn format(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)] {
        let n = secs / size;
        if n > 0 {
            out.push_str(&n.to_string());
            out.push(unit);
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_what_it_parses() {
        for text in ["90d", "1d12h", "1h30m", "45s", "0s", "1d1h1m1s"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }

    #[test]
    fn parses_and_refuses() {
        assert_eq!(parse("90d").unwrap(), Duration::from_secs(90 * 86_400));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5_400));
        assert_eq!(parse("45s").unwrap(), Duration::from_secs(45));
        for bad in ["", "h", "10", "10x", "1.5h", "99999999999999999999d"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
