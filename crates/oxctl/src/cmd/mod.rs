//! One module per etcdctl command group.

pub mod auth;
pub mod check;
pub mod cluster;
pub mod concurrency;
pub mod datascale;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod mirror;
pub mod watch;

use std::io::Write as _;

use crate::ctx::{CtlError, CtlResult, EXIT_IO};

/// Writes printer output to stdout.
pub fn emit(bytes: &[u8]) -> CtlResult {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|_| out.flush())
        .map_err(|e| CtlError::new(EXIT_IO, e.to_string()))
}

/// The end of the range covering every key with this prefix (clientv3's `GetPrefixRangeEnd`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Parses a hexadecimal lease or member id as Go's `strconv.ParseInt(s, 16, 64)`.
pub fn parse_hex_id(s: &str) -> Result<i64, String> {
    i64::from_str_radix(s, 16).map_err(|e| {
        let why = match e.kind() {
            std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
                "value out of range"
            }
            _ => "invalid syntax",
        };
        format!(
            "strconv.ParseInt: parsing {}: {why}",
            crate::gofmt::quote(s.as_bytes())
        )
    })
}
