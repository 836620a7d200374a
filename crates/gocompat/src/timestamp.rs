//! The timestamp layouts our tools print, as Go's `time.Format` prints them. Each function
//! is named after who prints the layout, and takes the time in the zone it should show.

use time::{OffsetDateTime, UtcOffset};

/// capnslog (etcd's older logger), layout `2006-01-02 15:04:05.000000`.
pub fn capnslog(t: OffsetDateTime) -> String {
    format!("{} {}.{:06}", date(t, '-'), clock(t), t.microsecond())
}

/// zap's ISO 8601 encoder (etcd 3.4's client logs), layout `2006-01-02T15:04:05.000Z0700`:
/// `Z` in UTC, else `+0700`.
pub fn zap_iso8601(t: OffsetDateTime) -> String {
    let zone = zone(t.offset(), "");
    format!("{}T{}.{:03}{zone}", date(t, '-'), clock(t), t.millisecond())
}

/// Go's `log` package with its standard flags (cfssl's log lines), layout
/// `2006/01/02 15:04:05`.
pub fn log_std(t: OffsetDateTime) -> String {
    format!("{} {}", date(t, '/'), clock(t))
}

/// `time.RFC3339`, layout `2006-01-02T15:04:05Z07:00`: no fraction, `Z` in UTC.
pub fn rfc3339(t: OffsetDateTime) -> String {
    format!("{}T{}{}", date(t, '-'), clock(t), zone(t.offset(), ":"))
}

/// `time.RFC3339Nano`, layout `2006-01-02T15:04:05.999999999Z07:00`: the fraction without
/// its trailing zeros, none at all on a whole second.
pub fn rfc3339_nano(t: OffsetDateTime) -> String {
    let fraction = format!(".{:09}", t.nanosecond());
    let fraction = fraction.trim_end_matches('0').trim_end_matches('.');
    format!(
        "{}T{}{fraction}{}",
        date(t, '-'),
        clock(t),
        zone(t.offset(), ":")
    )
}

fn date(t: OffsetDateTime, separator: char) -> String {
    format!(
        "{:04}{separator}{:02}{separator}{:02}",
        t.year(),
        u8::from(t.month()),
        t.day()
    )
}

fn clock(t: OffsetDateTime) -> String {
    format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
}

/// Go's `Z07:00` (separator `:`) and `Z0700` (no separator).
fn zone(offset: UtcOffset, separator: &str) -> String {
    if offset.is_utc() {
        return "Z".to_string();
    }
    let (h, m, _) = offset.as_hms();
    let sign = if offset.is_negative() { '-' } else { '+' };
    format!(
        "{sign}{:02}{separator}{:02}",
        h.unsigned_abs(),
        m.unsigned_abs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn layouts_as_go_prints_them() {
        let t = datetime!(2026-11-27 20:57:10.671_234_500 UTC);
        assert_eq!(capnslog(t), "2026-11-27 20:57:10.671234");
        assert_eq!(zap_iso8601(t), "2026-11-27T20:57:10.671Z");
        assert_eq!(log_std(t), "2026/11/27 20:57:10");
        assert_eq!(rfc3339(t), "2026-11-27T20:57:10Z");
        assert_eq!(rfc3339_nano(t), "2026-11-27T20:57:10.6712345Z");
    }

    #[test]
    fn zones() {
        let t = datetime!(2006-01-02 15:04:05 -07:00);
        assert_eq!(rfc3339(t), "2006-01-02T15:04:05-07:00");
        assert_eq!(rfc3339_nano(t), "2006-01-02T15:04:05-07:00");
        assert_eq!(zap_iso8601(t), "2006-01-02T15:04:05.000-0700");
        let t = datetime!(2006-01-02 15:04:05.1 +05:30);
        assert_eq!(rfc3339_nano(t), "2006-01-02T15:04:05.1+05:30");
        assert_eq!(capnslog(t), "2006-01-02 15:04:05.100000");
    }

    #[test]
    fn early_dates_keep_their_width() {
        let t = datetime!(0999-03-04 05:06:07.000_000_001 UTC);
        assert_eq!(rfc3339_nano(t), "0999-03-04T05:06:07.000000001Z");
        assert_eq!(log_std(t), "0999/03/04 05:06:07");
    }
}
