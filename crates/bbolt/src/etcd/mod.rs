//! etcd's data inside its bbolt file (3.4, 3.5, 3.6), checked against etcd's
//! `server/storage/schema` (`mvcc/backend` and `mvcc/kvstore.go` in 3.4):
//!
//! | bucket | key | value |
//! |---|---|---|
//! | `key` | revision: 8-byte BE main, `_`, 8-byte BE sub (17 bytes), plus `t` for a tombstone ([`revision`]) | `mvccpb.KeyValue` ([`proto::KeyValue`]); a tombstone's holds only the key |
//! | `meta` | `consistent_index` | u64 BE: the last applied raft index |
//! | `meta` | `term` (3.5+) | u64 BE: its raft term |
//! | `meta` | `scheduledCompactRev`, `finishedCompactRev` | a 17-byte revision key with sub 0 |
//! | `meta` | `confState` (3.5+) | JSON of raftpb.ConfState |
//! | `meta` | `storageVersion` (3.6) | e.g. `3.6.0` |
//! | `lease` | lease ID, 8-byte BE | `leasepb.Lease` ([`proto::Lease`]) |
//! | `alarm` | `etcdserverpb.AlarmMember` ([`proto::AlarmMember`]) | empty |
//! | `auth` | `authEnabled` | one byte, 1 or 0 |
//! | `auth` | `authRevision` | u64 BE |
//! | `authUsers` | user name | `authpb.User` ([`proto::User`]; password is a bcrypt hash) |
//! | `authRoles` | role name | `authpb.Role` ([`proto::Role`]) |
//! | `members` | member ID in lower-case hex | JSON of the member: `{"id":<decimal>,"peerURLs":[..],"name":..,"clientURLs":[..]}` (`name` and `clientURLs` once published, `"isLearner":true` only for a learner) |
//! | `members_removed` | member ID in hex | `removed` |
//! | `cluster` | `clusterVersion` (3.5+) | e.g. `3.5.0`; `downgrade` (3.5+): JSON |
//!
//! etcd 3.4 creates `key`, `meta`, `lease`, `alarm`, `auth`, `authUsers`, `authRoles`,
//! `members`, `members_removed` and `cluster` (empty until 3.5 writes `clusterVersion`).

pub mod hash;
pub mod proto;
pub mod revision;

pub use hash::{hash_kv, hash_kv_at, snapshot_status, store_revisions, KeyValueHash};
pub use revision::{Revision, RevisionKey};

pub const KEY_BUCKET: &[u8] = b"key";
pub const META_BUCKET: &[u8] = b"meta";
pub const LEASE_BUCKET: &[u8] = b"lease";
pub const ALARM_BUCKET: &[u8] = b"alarm";
pub const CLUSTER_BUCKET: &[u8] = b"cluster";
pub const MEMBERS_BUCKET: &[u8] = b"members";
pub const MEMBERS_REMOVED_BUCKET: &[u8] = b"members_removed";
pub const AUTH_BUCKET: &[u8] = b"auth";
pub const AUTH_USERS_BUCKET: &[u8] = b"authUsers";
pub const AUTH_ROLES_BUCKET: &[u8] = b"authRoles";

/// Every bucket etcd 3.4 creates, in the byte order a bbolt file lists them.
pub const BUCKETS_3_4: [&[u8]; 10] = [
    ALARM_BUCKET,
    AUTH_BUCKET,
    AUTH_ROLES_BUCKET,
    AUTH_USERS_BUCKET,
    CLUSTER_BUCKET,
    KEY_BUCKET,
    LEASE_BUCKET,
    MEMBERS_BUCKET,
    MEMBERS_REMOVED_BUCKET,
    META_BUCKET,
];

pub const CONSISTENT_INDEX_KEY: &[u8] = b"consistent_index";
/// Since 3.5.
pub const TERM_KEY: &[u8] = b"term";
pub const SCHEDULED_COMPACT_KEY: &[u8] = b"scheduledCompactRev";
pub const FINISHED_COMPACT_KEY: &[u8] = b"finishedCompactRev";
/// Since 3.5.
pub const CONF_STATE_KEY: &[u8] = b"confState";
/// Since 3.6.
pub const STORAGE_VERSION_KEY: &[u8] = b"storageVersion";
pub const AUTH_ENABLED_KEY: &[u8] = b"authEnabled";
pub const AUTH_REVISION_KEY: &[u8] = b"authRevision";
/// Since 3.5, in the `cluster` bucket.
pub const CLUSTER_VERSION_KEY: &[u8] = b"clusterVersion";
pub const DOWNGRADE_KEY: &[u8] = b"downgrade";
/// The value `members_removed` holds for each removed member.
pub const MEMBER_REMOVED_VALUE: &[u8] = b"removed";
/// `authEnabled`'s two values.
pub const AUTH_ENABLED: &[u8] = &[1];
pub const AUTH_DISABLED: &[u8] = &[0];

/// A u64 stored big-endian (`consistent_index`, `term`, `authRevision`, lease IDs).
pub fn decode_u64_be(what: &'static str, b: &[u8]) -> Result<u64, crate::DecodeError> {
    let arr: [u8; 8] = b.try_into().map_err(|_| crate::DecodeError::Length {
        what,
        expected: 8,
        found: b.len(),
    })?;
    Ok(u64::from_be_bytes(arr))
}

/// A lease bucket key: the lease ID as 8 bytes big-endian.
pub fn lease_key(id: i64) -> [u8; 8] {
    (id as u64).to_be_bytes()
}

/// A member bucket key: the ID in lower-case hex without leading zeros (Go's `types.ID`).
pub fn member_key(id: u64) -> String {
    format!("{id:x}")
}
