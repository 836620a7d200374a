//! Go durations (`43800h`, `1h30m`, `90s`), the form cfssl uses for every expiry.

use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("invalid duration {0:?}: write hours like 8760h (units: h, m, s, ms, us, ns)")]
    Invalid(String),
    #[error("missing unit in duration {0:?}: write hours like 8760h")]
    MissingUnit(String),
    #[error("unknown unit {unit:?} in duration {text:?}: use h, m, s, ms, us or ns (no days or years; 1 year is 8760h)")]
    UnknownUnit { unit: String, text: String },
    #[error("duration {0:?} must not be negative")]
    Negative(String),
    #[error("duration {0:?} is too long")]
    Overflow(String),
}

const NANOS_PER_UNIT: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("\u{b5}s", 1_000),
    ("\u{3bc}s", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Parses a Go duration string; negative durations are rejected (an expiry is never negative).
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid(text.to_string());
    let mut rest = text;
    if let Some(r) = rest.strip_prefix('-') {
        if r != "0" {
            return Err(DurationError::Negative(text.to_string()));
        }
        rest = r;
    } else if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let number = &rest[..digits_end];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(invalid());
        }
        rest = &rest[digits_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        if unit.is_empty() {
            return Err(DurationError::MissingUnit(text.to_string()));
        }
        let Some(&(_, scale)) = NANOS_PER_UNIT.iter().find(|(u, _)| *u == unit) else {
            return Err(DurationError::UnknownUnit {
                unit: unit.to_string(),
                text: text.to_string(),
            });
        };
        nanos = nanos
            .checked_add(scaled(number, scale).ok_or_else(|| overflow(text))?)
            .ok_or_else(|| overflow(text))?;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| overflow(text))?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

fn overflow(text: &str) -> DurationError {
    DurationError::Overflow(text.to_string())
}

/// `number` (digits with at most one '.') times `scale` nanoseconds, truncating like Go.
fn scaled(number: &str, scale: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut total = whole.checked_mul(scale)?;
    let mut place = scale;
    for digit in fraction.bytes() {
        place /= 10;
        total = total.checked_add(u128::from(digit - b'0') * place)?;
    }
    Some(total)
}

/// Formats whole hours the way cfssl configs write them (`8760h`), else seconds.
pub fn format(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs % 3600 == 0 {
        format!("{}h", secs / 3600)
    } else if secs % 60 == 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_forms() {
        assert_eq!(parse("43800h"), Ok(Duration::from_secs(43800 * 3600)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("+2m"), Ok(Duration::from_secs(120)));
    }

    #[test]
    fn bad_forms() {
        assert!(matches!(
            parse("1y"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(parse("10"), Err(DurationError::MissingUnit(_))));
        assert!(matches!(parse(""), Err(DurationError::Invalid(_))));
        assert!(matches!(parse("h"), Err(DurationError::Invalid(_))));
        assert!(matches!(parse("-1h"), Err(DurationError::Negative(_))));
        assert!(matches!(parse("1..2h"), Err(DurationError::Invalid(_))));
    }

    #[test]
    fn formats() {
        assert_eq!(format(Duration::from_secs(8760 * 3600)), "8760h");
        assert_eq!(format(Duration::from_secs(90)), "90s");
    }
}
