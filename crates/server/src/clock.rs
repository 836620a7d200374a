//! Wall-clock time as the log carries it: milliseconds since the Unix epoch. Lease and v2
//! TTL deadlines are computed from the proposer's clock, written into the entry, so every
//! member computes the same expiry from the same entry.

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
