//! Go's `time.Duration` as text: `time.ParseDuration` and `Duration.String()`, byte for byte.
//!
//! A Go duration is a signed 64-bit count of nanoseconds written as a sequence of decimal
//! numbers, each with an optional fraction and a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`),
//! with an optional sign in front: `300ms`, `-1.5h`, `2h45m`. `0` alone needs no unit. Values
//! beyond ±2^63 ns (about 292 years) are invalid, as in Go.

use std::time::Duration;

/// Why a duration did not parse. The messages are Go's (`time: invalid duration "x"`), except
/// [`DurationError::Negative`], which Go has no need for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not a duration at all, or beyond what 64 bits of nanoseconds hold.
    #[error("time: invalid duration {}", quote(.0))]
    Invalid(String),
    /// A number without its unit, as `10`.
    #[error("time: missing unit in duration {}", quote(.0))]
    MissingUnit(String),
    /// A unit Go does not know, as `d` in `1d`.
    #[error("time: unknown unit {} in duration {}", quote(.unit), quote(.text))]
    UnknownUnit { unit: String, text: String },
    /// A valid negative duration where only a length of time makes sense.
    #[error("duration {} must not be negative", quote(.0))]
    Negative(String),
}

const NANOS_PER_MICROSECOND: u64 = 1_000;
const NANOS_PER_MILLISECOND: u64 = 1_000_000;
const NANOS_PER_SECOND: u64 = 1_000_000_000;
const NANOS_PER_MINUTE: u64 = 60 * NANOS_PER_SECOND;
const NANOS_PER_HOUR: u64 = 60 * NANOS_PER_MINUTE;

/// Go's `unitMap`: µ as U+00B5 (micro sign) and as U+03BC (Greek mu).
fn unit_nanos(unit: &str) -> Option<u64> {
    match unit {
        "ns" => Some(1),
        "us" | "\u{b5}s" | "\u{3bc}s" => Some(NANOS_PER_MICROSECOND),
        "ms" => Some(NANOS_PER_MILLISECOND),
        "s" => Some(NANOS_PER_SECOND),
        "m" => Some(NANOS_PER_MINUTE),
        "h" => Some(NANOS_PER_HOUR),
        _ => None,
    }
}

/// 2^63: the magnitude of the most negative duration, one more than the largest positive one.
const MAGNITUDE_MAX: u64 = 1 << 63;

/// `time.ParseDuration`: the duration in nanoseconds, negative ones included.
pub fn parse_nanos(text: &str) -> Result<i64, DurationError> {
    let invalid = || DurationError::Invalid(text.to_string());
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let (value, after) = term(rest, text)?;
        rest = after;
        total = total
            .checked_add(value)
            .filter(|t| *t <= MAGNITUDE_MAX)
            .ok_or_else(invalid)?;
    }
    if negative {
        // total <= 2^63, so its negation fits: -2^63 is i64::MIN.
        return Ok(0i64.wrapping_sub_unsigned(total));
    }
    i64::try_from(total).map_err(|_| invalid())
}

/// One `[0-9]*(\.[0-9]*)?unit` term at the start of `rest`: its nanoseconds and what follows.
fn term<'a>(rest: &'a str, text: &str) -> Result<(u64, &'a str), DurationError> {
    let invalid = || DurationError::Invalid(text.to_string());
    if !rest.starts_with(|c: char| c == '.' || c.is_ascii_digit()) {
        return Err(invalid());
    }
    let int_len = digits_len(rest);
    let whole = leading_int(&rest[..int_len]).ok_or_else(invalid)?;
    let mut rest = &rest[int_len..];
    let mut fraction = Fraction::NONE;
    let mut has_fraction_digits = false;
    if let Some(after_point) = rest.strip_prefix('.') {
        let len = digits_len(after_point);
        fraction = leading_fraction(&after_point[..len]);
        has_fraction_digits = len > 0;
        rest = &after_point[len..];
    }
    if int_len == 0 && !has_fraction_digits {
        return Err(invalid()); // no digits at all: ".s", "-."
    }
    let unit_len = rest
        .find(|c: char| c == '.' || c.is_ascii_digit())
        .unwrap_or(rest.len());
    if unit_len == 0 {
        return Err(DurationError::MissingUnit(text.to_string()));
    }
    let unit = &rest[..unit_len];
    let scale = unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit {
        unit: unit.to_string(),
        text: text.to_string(),
    })?;
    if whole > MAGNITUDE_MAX / scale {
        return Err(invalid());
    }
    let mut value = whole * scale;
    if fraction.digits > 0 {
        // As Go computes it: float64 keeps fractions of hours exact to the nanosecond.
        let part = (fraction.digits as f64 * (scale as f64 / fraction.scale)) as u64;
        value = value
            .checked_add(part)
            .filter(|v| *v <= MAGNITUDE_MAX)
            .ok_or_else(invalid)?;
    }
    Ok((value, &rest[unit_len..]))
}

fn digits_len(s: &str) -> usize {
    s.bytes().take_while(u8::is_ascii_digit).count()
}

/// Go's `leadingInt`: the value of a run of digits, `None` beyond 2^63.
fn leading_int(digits: &str) -> Option<u64> {
    digits.bytes().try_fold(0u64, |x, d| {
        if x > MAGNITUDE_MAX / 10 {
            return None;
        }
        Some(x * 10 + u64::from(d - b'0')).filter(|x| *x <= MAGNITUDE_MAX)
    })
}

/// The digits after a decimal point as `digits / scale`.
struct Fraction {
    digits: u64,
    scale: f64,
}

impl Fraction {
    const NONE: Fraction = Fraction {
        digits: 0,
        scale: 1.0,
    };
}

/// Go's `leadingFraction`: stops gaining precision, without failing, once 63 bits are full.
fn leading_fraction(digits: &str) -> Fraction {
    let mut f = Fraction::NONE;
    for d in digits.bytes() {
        if f.digits > (MAGNITUDE_MAX - 1) / 10 {
            break;
        }
        let next = f.digits * 10 + u64::from(d - b'0');
        if next > MAGNITUDE_MAX {
            break;
        }
        f.digits = next;
        f.scale *= 10.0;
    }
    f
}

/// `time.ParseDuration` for a length of time: a negative duration is an error (`-0` is zero).
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let nanos = parse_nanos(text)?;
    let nanos = u64::try_from(nanos).map_err(|_| DurationError::Negative(text.to_string()))?;
    Ok(Duration::from_nanos(nanos))
}

/// `time.Duration.String()`: `1m30s`, `1.5s`, `500ms`, `2.5µs`, `0s`, `1h0m0s`.
pub fn format(d: Duration) -> String {
    format_magnitude(d.as_nanos(), false)
}

/// `time.Duration.String()` of a signed count of nanoseconds: `-1.5s`.
pub fn format_nanos(nanos: i64) -> String {
    format_magnitude(u128::from(nanos.unsigned_abs()), nanos < 0)
}

fn format_magnitude(nanos: u128, negative: bool) -> String {
    let sign = if negative { "-" } else { "" };
    let body = if nanos == 0 {
        "0s".to_string()
    } else if nanos < u128::from(NANOS_PER_MICROSECOND) {
        format!("{nanos}ns")
    } else if nanos < u128::from(NANOS_PER_MILLISECOND) {
        format!("{}µs", decimal(nanos, 3))
    } else if nanos < u128::from(NANOS_PER_SECOND) {
        format!("{}ms", decimal(nanos, 6))
    } else {
        let seconds = decimal(nanos % u128::from(NANOS_PER_MINUTE), 9);
        let minutes = nanos / u128::from(NANOS_PER_MINUTE) % 60;
        let hours = nanos / u128::from(NANOS_PER_HOUR);
        if hours > 0 {
            format!("{hours}h{minutes}m{seconds}s")
        } else if minutes > 0 {
            format!("{minutes}m{seconds}s")
        } else {
            format!("{seconds}s")
        }
    };
    format!("{sign}{body}")
}

/// `value / 10^places` in decimal, trailing zeros of the fraction (and a bare point) dropped.
fn decimal(value: u128, places: usize) -> String {
    let unit = 10u128.pow(places as u32);
    let (int, frac) = (value / unit, value % unit);
    if frac == 0 {
        return int.to_string();
    }
    let frac = format!("{frac:0places$}");
    format!("{int}.{}", frac.trim_end_matches('0'))
}

/// The `time` package's own `quote`: like `%q`, but every byte of a non-ASCII or control
/// character is written as `\xNN`.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c.is_ascii() && c >= ' ' {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;
    const MS: i64 = 1_000_000;
    const US: i64 = 1_000;
    const M: i64 = 60 * S;
    const H: i64 = 60 * M;

    /// Go's `parseDurationTests` (src/time/time_test.go), plus the forms our tools document.
    #[test]
    fn parses_as_go() {
        let table: &[(&str, i64)] = &[
            ("0", 0),
            ("5s", 5 * S),
            ("30s", 30 * S),
            ("1478s", 1478 * S),
            ("-5s", -5 * S),
            ("+5s", 5 * S),
            ("-0", 0),
            ("+0", 0),
            ("5.0s", 5 * S),
            ("5.6s", 5 * S + 600 * MS),
            ("5.s", 5 * S),
            (".5s", 500 * MS),
            ("1.0s", S),
            ("1.00s", S),
            ("1.004s", S + 4 * MS),
            ("1.0040s", S + 4 * MS),
            ("100.00100s", 100 * S + MS),
            ("10ns", 10),
            ("11us", 11 * US),
            ("12µs", 12 * US),
            ("12μs", 12 * US),
            ("13ms", 13 * MS),
            ("14s", 14 * S),
            ("15m", 15 * M),
            ("16h", 16 * H),
            ("3h30m", 3 * H + 30 * M),
            ("10.5s4m", 4 * M + 10 * S + 500 * MS),
            ("-2m3.4s", -(2 * M + 3 * S + 400 * MS)),
            ("1h2m3s4ms5us6ns", H + 2 * M + 3 * S + 4 * MS + 5 * US + 6),
            ("39h9m14.425s", 39 * H + 9 * M + 14 * S + 425 * MS),
            ("52763797000ns", 52_763_797_000),
            ("0.3333333333333333333h", 20 * M),
            ("9007199254740993ns", (1 << 53) + 1),
            ("9223372036854775807ns", i64::MAX),
            ("9223372036854775.807us", i64::MAX),
            ("9223372036s854ms775us807ns", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
            ("-9223372036854775.808us", i64::MIN),
            ("-9223372036s854ms775us808ns", i64::MIN),
            ("-2562047h47m16.854775808s", i64::MIN),
            ("0.100000000000000000000h", 6 * M),
            ("0.830103483285477580700h", 49 * M + 48 * S + 372_539_827),
            // The forms our tools' help and docs use.
            ("1m30s", 90 * S),
            ("1.5h", 90 * M),
            ("300ms", 300 * MS),
            ("2h45m", 2 * H + 45 * M),
            ("-1.5h", -90 * M),
            ("43800h", 43_800 * H),
        ];
        for &(text, want) in table {
            assert_eq!(parse_nanos(text), Ok(want), "{text:?}");
        }
    }

    /// Go's `parseDurationErrorTests`, with Go's full messages.
    #[test]
    fn rejects_as_go() {
        let table: &[(&str, &str)] = &[
            ("", r#"time: invalid duration """#),
            ("3", r#"time: missing unit in duration "3""#),
            ("00", r#"time: missing unit in duration "00""#),
            ("-", r#"time: invalid duration "-""#),
            ("s", r#"time: invalid duration "s""#),
            (".", r#"time: invalid duration ".""#),
            ("-.", r#"time: invalid duration "-.""#),
            (".s", r#"time: invalid duration ".s""#),
            ("+.s", r#"time: invalid duration "+.s""#),
            ("1s2", r#"time: missing unit in duration "1s2""#),
            ("1d", r#"time: unknown unit "d" in duration "1d""#),
            ("1y", r#"time: unknown unit "y" in duration "1y""#),
            ("1 s", r#"time: unknown unit " s" in duration "1 s""#),
            ("\u{fffd}", r#"time: invalid duration "\xef\xbf\xbd""#),
            (
                "\u{fffd} hello \u{fffd} world",
                r#"time: invalid duration "\xef\xbf\xbd hello \xef\xbf\xbd world""#,
            ),
            (
                "9223372036854775810ns",
                r#"time: invalid duration "9223372036854775810ns""#,
            ),
            (
                "9223372036854775808ns",
                r#"time: invalid duration "9223372036854775808ns""#,
            ),
            (
                "-9223372036854775809ns",
                r#"time: invalid duration "-9223372036854775809ns""#,
            ),
            (
                "9223372036854776us",
                r#"time: invalid duration "9223372036854776us""#,
            ),
            ("3000000h", r#"time: invalid duration "3000000h""#),
            (
                "9223372036854775.808us",
                r#"time: invalid duration "9223372036854775.808us""#,
            ),
            (
                "9223372036854ms775us808ns",
                r#"time: invalid duration "9223372036854ms775us808ns""#,
            ),
            (
                "99999999999999999999s",
                r#"time: invalid duration "99999999999999999999s""#,
            ),
            ("1\"s", r#"time: unknown unit "\"s" in duration "1\"s""#),
        ];
        for &(text, want) in table {
            let err = parse_nanos(text).expect_err(text);
            assert_eq!(err.to_string(), want, "{text:?}");
        }
    }

    #[test]
    fn std_durations_are_not_negative() {
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("-0"), Ok(Duration::ZERO));
        assert_eq!(
            parse("9223372036854775807ns"),
            Ok(Duration::from_nanos(i64::MAX as u64))
        );
        let err = parse("-1s").expect_err("negative");
        assert_eq!(err, DurationError::Negative("-1s".into()));
        assert_eq!(err.to_string(), r#"duration "-1s" must not be negative"#);
        assert!(matches!(
            parse("1x"),
            Err(DurationError::UnknownUnit { .. })
        ));
    }

    /// Go's `durationTests` for `Duration.String()`.
    #[test]
    fn formats_as_go() {
        let table: &[(i64, &str)] = &[
            (0, "0s"),
            (1, "1ns"),
            (1_100, "1.1µs"),
            (2_200 * US, "2.2ms"),
            (3_300 * MS, "3.3s"),
            (4 * M + 5 * S, "4m5s"),
            (4 * M + 5_001 * MS, "4m5.001s"),
            (5 * H + 6 * M + 7_001 * MS, "5h6m7.001s"),
            (8 * M + 1, "8m0.000000001s"),
            (i64::MAX, "2562047h47m16.854775807s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
            (H, "1h0m0s"),
            (M, "1m0s"),
            (90 * S, "1m30s"),
            (1_500 * MS, "1.5s"),
            (500 * MS, "500ms"),
            (2_799_208, "2.799208ms"),
            (-1_500 * MS, "-1.5s"),
            (-999, "-999ns"),
        ];
        for &(nanos, want) in table {
            assert_eq!(format_nanos(nanos), want, "{nanos}");
            if let Ok(n) = u64::try_from(nanos) {
                assert_eq!(format(Duration::from_nanos(n)), want, "{nanos}");
            }
        }
    }

    #[test]
    fn format_and_parse_round_trip() {
        for nanos in [
            0,
            1,
            999,
            1_001,
            61 * S + 5,
            25 * H + 1,
            i64::MAX,
            i64::MIN,
            -42 * MS,
        ] {
            assert_eq!(parse_nanos(&format_nanos(nanos)), Ok(nanos), "{nanos}");
        }
    }
}
