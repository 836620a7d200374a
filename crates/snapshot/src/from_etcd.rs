//! etcd's bbolt database into an oxcd backend: what `snapshot restore` does with a snapshot
//! that `etcdctl snapshot save` wrote (or a member's `member/snap/db`), from etcd 3.4, 3.5 or
//! 3.6. Read page by page ([`oxcd_bbolt::Db`]) and written record by record
//! ([`oxcd_storage::WriteBatch::restore_with`]): the file is never in memory.
//!
//! What comes over, bucket by bucket ([`oxcd_bbolt::etcd`] has etcd's layout):
//! - `key`: every revision of every key, at the same main and sub revision, with its create
//!   and mod revision, version, value and lease; a tombstone stays a tombstone;
//! - `meta`: `finishedCompactRev` is the compact revision; a later `scheduledCompactRev`
//!   (a compaction etcd had not finished) is carried out, as etcd does when it opens the
//!   file; the current revision is the newest revision, or the compaction's if later;
//! - `lease`: every lease with its granted TTL (it counts down from the restore; a new
//!   leader gives every lease its full TTL again, as etcd's does);
//! - `auth`, `authUsers`, `authRoles`: the enabled flag, the auth revision, users with
//!   their bcrypt hashes and roles, roles with their permissions.
//!
//! Left behind: `members` and `members_removed` (the new membership comes from the flags,
//! as in etcd's restore), `alarm` (alarms name the old cluster's members), `cluster`
//! (versions) and `meta`'s raft position (`consistent_index`, `term`, `confState`).

use oxcd_api::authpb;
use oxcd_api::mvccpb::KeyValue;
use oxcd_bbolt::etcd::{self, proto, RevisionKey};
use oxcd_bbolt::{Bucket, Db, DecodeError};
use oxcd_storage::mvcc::{RestoreSink, RestoredMeta, Rev};
use oxcd_storage::{MvccError, WriteBatch};
use prost::Message;

use crate::rows::{self, AUX_AUTH, AUX_LEASES};

/// Restoring an etcd database failed.
#[derive(Debug, thiserror::Error)]
pub enum FromEtcdError {
    #[error(transparent)]
    Read(#[from] oxcd_bbolt::Error),
    #[error("{path}: bucket {bucket:?}, key {key}: {source}")]
    Decode {
        path: String,
        bucket: String,
        key: String,
        source: DecodeError,
    },
    #[error("{path}: bucket {bucket:?}, key {key}: {why}")]
    Bad {
        path: String,
        bucket: String,
        key: String,
        why: String,
    },
    #[error("{0}")]
    Backend(#[from] MvccError),
}

/// What a restore brought over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EtcdRestored {
    pub current_rev: i64,
    /// 0 when etcd never compacted.
    pub compact_rev: i64,
    /// Records of the `key` bucket (revisions, tombstones included).
    pub revisions: u64,
    pub leases: u64,
    pub users: u64,
    pub roles: u64,
}

/// Replaces everything in `batch`'s backend with `db`'s keys, revisions, leases and auth.
/// `now_ms` is when the leases were last renewed. Nothing is written unless the batch is
/// committed; an error leaves the batch to be dropped.
pub fn restore_etcd_db(
    batch: &mut WriteBatch<'_>,
    db: &Db,
    now_ms: i64,
) -> Result<EtcdRestored, FromEtcdError> {
    let marks = CompactMarks::read(db)?;
    let mut out = EtcdRestored::default();
    batch.restore_with(|sink| {
        let last_rev = copy_revisions(db, sink, &mut out)?;
        copy_leases(db, sink, now_ms, &mut out)?;
        copy_auth(db, sink, &mut out)?;
        Ok::<_, FromEtcdError>(RestoredMeta {
            current_rev: last_rev.max(marks.finished).max(marks.scheduled),
            compact_rev: marks.finished,
            consistent_index: 0,
            consistent_term: 0,
        })
    })?;
    if marks.scheduled > marks.finished {
        batch.compact(marks.scheduled)?;
    }
    out.current_rev = batch.current_rev();
    out.compact_rev = batch.compact_rev();
    Ok(out)
}

/// `meta`'s compaction marks (0 when absent).
#[derive(Debug, Clone, Copy, Default)]
pub struct CompactMarks {
    pub finished: i64,
    pub scheduled: i64,
}

impl CompactMarks {
    pub fn read(db: &Db) -> Result<CompactMarks, FromEtcdError> {
        let Some(meta) = db.bucket(etcd::META_BUCKET)? else {
            return Ok(CompactMarks::default());
        };
        let mark = |key: &[u8]| -> Result<i64, FromEtcdError> {
            match meta.get(key)? {
                None => Ok(0),
                Some(v) => RevisionKey::decode(&v)
                    .map(|k| k.rev.main.max(0))
                    .map_err(|e| decode_err(db, etcd::META_BUCKET, key, e)),
            }
        };
        Ok(CompactMarks {
            finished: mark(etcd::FINISHED_COMPACT_KEY)?,
            scheduled: mark(etcd::SCHEDULED_COMPACT_KEY)?,
        })
    }
}

fn show_key(key: &[u8]) -> String {
    key.escape_ascii().to_string()
}

fn decode_err(db: &Db, bucket: &[u8], key: &[u8], source: DecodeError) -> FromEtcdError {
    FromEtcdError::Decode {
        path: db.path().display().to_string(),
        bucket: String::from_utf8_lossy(bucket).into_owned(),
        key: show_key(key),
        source,
    }
}

fn bad(db: &Db, bucket: &[u8], key: &[u8], why: impl Into<String>) -> FromEtcdError {
    FromEtcdError::Bad {
        path: db.path().display().to_string(),
        bucket: String::from_utf8_lossy(bucket).into_owned(),
        key: show_key(key),
        why: why.into(),
    }
}

/// One record of etcd's `key` bucket as oxcd stores it: a put's KeyValue as etcd wrote it,
/// a tombstone's with the key and the deleting revision.
pub fn key_record(key: &[u8], value: &[u8]) -> Result<(Rev, bool, KeyValue), DecodeError> {
    let rk = RevisionKey::decode(key)?;
    let kv = proto::KeyValue::decode(value)?;
    let rev = Rev {
        main: rk.rev.main,
        sub: rk.rev.sub,
    };
    let kv = if rk.tombstone {
        KeyValue {
            key: kv.key,
            mod_revision: rk.rev.main,
            ..Default::default()
        }
    } else {
        KeyValue {
            key: kv.key,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            value: kv.value,
            lease: kv.lease,
        }
    };
    Ok((rev, rk.tombstone, kv))
}

/// Copies the `key` bucket; returns the newest main revision (1 for an empty bucket).
fn copy_revisions(
    db: &Db,
    sink: &mut RestoreSink<'_>,
    out: &mut EtcdRestored,
) -> Result<i64, FromEtcdError> {
    let bucket = db.must_bucket(etcd::KEY_BUCKET)?;
    let mut cursor = bucket.cursor();
    let mut last = 1;
    while let Some(e) = cursor.next_entry()? {
        if e.is_bucket {
            return Err(bad(
                db,
                etcd::KEY_BUCKET,
                e.key,
                "a bucket where a revision belongs",
            ));
        }
        let (rev, tombstone, kv) = key_record(e.key, e.value)
            .map_err(|err| decode_err(db, etcd::KEY_BUCKET, e.key, err))?;
        if kv.key.is_empty() {
            return Err(bad(
                db,
                etcd::KEY_BUCKET,
                e.key,
                "the revision names no key",
            ));
        }
        sink.revision(rev, tombstone, &kv)?;
        last = rev.main;
        out.revisions += 1;
    }
    Ok(last)
}

fn copy_leases(
    db: &Db,
    sink: &mut RestoreSink<'_>,
    now_ms: i64,
    out: &mut EtcdRestored,
) -> Result<(), FromEtcdError> {
    let Some(bucket) = db.bucket(etcd::LEASE_BUCKET)? else {
        return Ok(());
    };
    for_each_value(db, &bucket, etcd::LEASE_BUCKET, |key, value| {
        let lease = proto::Lease::decode(value)
            .map_err(|err| decode_err(db, etcd::LEASE_BUCKET, key, err))?;
        if key.len() != 8 {
            return Err(bad(db, etcd::LEASE_BUCKET, key, "a lease ID is 8 bytes"));
        }
        sink.aux_put(AUX_LEASES, key, &rows::lease_row(lease.ttl, now_ms))?;
        out.leases += 1;
        Ok(())
    })
}

fn copy_auth(
    db: &Db,
    sink: &mut RestoreSink<'_>,
    out: &mut EtcdRestored,
) -> Result<(), FromEtcdError> {
    if let Some(auth) = db.bucket(etcd::AUTH_BUCKET)? {
        if let Some(v) = auth.get(etcd::AUTH_ENABLED_KEY)? {
            let enabled = v.first().copied().unwrap_or(0);
            sink.aux_put(AUX_AUTH, rows::AUTH_ENABLED_KEY, &[u8::from(enabled == 1)])?;
        }
        if let Some(v) = auth.get(etcd::AUTH_REVISION_KEY)? {
            if v.len() != 8 {
                return Err(bad(
                    db,
                    etcd::AUTH_BUCKET,
                    etcd::AUTH_REVISION_KEY,
                    "not 8 bytes",
                ));
            }
            sink.aux_put(AUX_AUTH, rows::AUTH_REVISION_KEY, &v)?;
        }
    }
    if let Some(users) = db.bucket(etcd::AUTH_USERS_BUCKET)? {
        for_each_value(db, &users, etcd::AUTH_USERS_BUCKET, |key, value| {
            let user = user_from_etcd(value)
                .map_err(|err| decode_err(db, etcd::AUTH_USERS_BUCKET, key, err))?;
            let row_key = rows::auth_row_key(rows::AUTH_USER_PREFIX, key);
            sink.aux_put(AUX_AUTH, &row_key, &user.encode_to_vec())?;
            out.users += 1;
            Ok(())
        })?;
    }
    if let Some(roles) = db.bucket(etcd::AUTH_ROLES_BUCKET)? {
        for_each_value(db, &roles, etcd::AUTH_ROLES_BUCKET, |key, value| {
            let role = role_from_etcd(value)
                .map_err(|err| decode_err(db, etcd::AUTH_ROLES_BUCKET, key, err))?;
            let row_key = rows::auth_row_key(rows::AUTH_ROLE_PREFIX, key);
            sink.aux_put(AUX_AUTH, &row_key, &role.encode_to_vec())?;
            out.roles += 1;
            Ok(())
        })?;
    }
    Ok(())
}

/// Calls `f` with each key and value of `bucket` (sub-buckets are an error: etcd has none).
fn for_each_value(
    db: &Db,
    bucket: &Bucket<'_>,
    name: &[u8],
    mut f: impl FnMut(&[u8], &[u8]) -> Result<(), FromEtcdError>,
) -> Result<(), FromEtcdError> {
    let mut cursor = bucket.cursor();
    while let Some(e) = cursor.next_entry()? {
        if e.is_bucket {
            return Err(bad(db, name, e.key, "a bucket where a value belongs"));
        }
        f(e.key, e.value)?;
    }
    Ok(())
}

/// An `authpb.User` as etcd stores it, as oxcd's auth store keeps it.
pub fn user_from_etcd(value: &[u8]) -> Result<authpb::User, DecodeError> {
    let u = proto::User::decode(value)?;
    Ok(authpb::User {
        name: u.name,
        password: u.password,
        roles: u.roles,
        options: u.options.map(|o| authpb::UserAddOptions {
            no_password: o.no_password,
        }),
    })
}

/// An `authpb.Role` as etcd stores it, as oxcd's auth store keeps it.
pub fn role_from_etcd(value: &[u8]) -> Result<authpb::Role, DecodeError> {
    let r = proto::Role::decode(value)?;
    Ok(authpb::Role {
        name: r.name,
        key_permission: r
            .key_permission
            .into_iter()
            .map(|p| authpb::Permission {
                perm_type: p.perm_type,
                key: p.key,
                range_end: p.range_end,
            })
            .collect(),
    })
}
