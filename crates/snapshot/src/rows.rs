//! The backend rows the server's tables keep and that a snapshot carries in and out: the aux
//! table numbers and row layouts of leases, auth and alarms (members are in
//! [`crate::members`]). The server's lease table, auth store and alarm table read and write
//! these rows; `snapshot restore` and the etcd snapshot export translate them to and from
//! etcd's buckets.
//!
//! | aux table | key | value |
//! |---|---|---|
//! | [`AUX_LEASES`] 4 | lease ID, i64 big-endian | granted TTL (s), last renewal (ms), i64 big-endian each |
//! | [`AUX_AUTH`] 5 | `enabled` | one byte, 1 or 0 |
//! | [`AUX_AUTH`] 5 | `revision` | the auth revision, u64 big-endian |
//! | [`AUX_AUTH`] 5 | `user/<name>` | `authpb.User` (bcrypt hash, roles sorted, options) |
//! | [`AUX_AUTH`] 5 | `role/<name>` | `authpb.Role` (permissions sorted by key) |
//! | [`AUX_ALARMS`] 6 | member ID u64 BE, alarm type i32 BE | empty |

pub const AUX_LEASES: u8 = 4;
pub const AUX_AUTH: u8 = 5;
pub const AUX_ALARMS: u8 = 6;

pub const AUTH_ENABLED_KEY: &[u8] = b"enabled";
pub const AUTH_REVISION_KEY: &[u8] = b"revision";
pub const AUTH_USER_PREFIX: &str = "user/";
pub const AUTH_ROLE_PREFIX: &str = "role/";

/// A lease row's value.
pub fn lease_row(ttl_secs: i64, renewed_ms: i64) -> Vec<u8> {
    let mut v = ttl_secs.to_be_bytes().to_vec();
    v.extend_from_slice(&renewed_ms.to_be_bytes());
    v
}

/// A lease row: (ID, TTL in seconds, last renewal in ms); `None` when damaged.
pub fn parse_lease_row(key: &[u8], value: &[u8]) -> Option<(i64, i64, i64)> {
    let id = i64::from_be_bytes(key.try_into().ok()?);
    let ttl = i64::from_be_bytes(value.get(..8)?.try_into().ok()?);
    let renewed = i64::from_be_bytes(value.get(8..16)?.try_into().ok()?);
    Some((id, ttl, renewed))
}

/// An auth row's key for the user or role `name` (`prefix` is one of the two prefixes).
pub fn auth_row_key(prefix: &str, name: &[u8]) -> Vec<u8> {
    let mut k = prefix.as_bytes().to_vec();
    k.extend_from_slice(name);
    k
}

/// An alarm row's key.
pub fn alarm_key(member_id: u64, alarm: i32) -> Vec<u8> {
    let mut k = member_id.to_be_bytes().to_vec();
    k.extend_from_slice(&alarm.to_be_bytes());
    k
}

/// An alarm row's key read back: (member ID, alarm type); `None` when damaged.
pub fn parse_alarm_key(key: &[u8]) -> Option<(u64, i32)> {
    let id = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    let alarm = i32::from_be_bytes(key.get(8..12)?.try_into().ok()?);
    Some((id, alarm))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_damage_is_none() {
        let row = lease_row(60, 1_700_000_000_000);
        assert_eq!(
            parse_lease_row(&7i64.to_be_bytes(), &row),
            Some((7, 60, 1_700_000_000_000))
        );
        assert_eq!(parse_lease_row(b"short", &row), None);
        assert_eq!(parse_lease_row(&7i64.to_be_bytes(), &row[..9]), None);
        assert_eq!(parse_alarm_key(&alarm_key(3, 1)), Some((3, 1)));
        assert_eq!(parse_alarm_key(b"x"), None);
        assert_eq!(auth_row_key(AUTH_USER_PREFIX, b"u1"), b"user/u1".to_vec());
    }
}
