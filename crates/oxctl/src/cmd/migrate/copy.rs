//! The snapshot copy: etcd's snapshot (Maintenance.Snapshot, saved to a temporary file and
//! checked against its SHA-256, as `etcdctl snapshot save` would) is read page by page and
//! sent to oxcd in batches: the leases, then every revision above oxcd's current one (a
//! resumed copy skips what oxcd has), then the auth store, the snapshot's revision and its
//! compaction. The auth store goes last: once it enables auth, oxcd wants a token.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use oxcd_api::etcdserverpb as pb;
use oxcd_api::oxcdimportpb as ipb;
use oxcd_bbolt::etcd::{self, proto, store_revisions};
use oxcd_bbolt::Db;
use oxcd_snapshot::from_etcd::{key_record, role_from_etcd, user_from_etcd, CompactMarks};
use prost::Message;
use tokio::io::AsyncWriteExt as _;
use tokio_stream::StreamExt as _;

use super::{ctl_err, Migrator, APPLY_BATCH_BYTES};
use crate::cmd::emit;
use crate::error::{status_message, CtlResult};

/// Leases per batch of a snapshot copy.
const LEASES_PER_BATCH: usize = 10_000;
/// Keys per batch of history dropped after etcd compacted past oxcd's revision.
const DROP_KEYS_PER_BATCH: usize = 5_000;
/// Keys per range request when listing oxcd's keys.
const LIST_KEYS_PER_RANGE: i64 = 10_000;
/// The revision of an empty store.
const INITIAL_REV: i64 = 1;

/// Removes the downloaded snapshot when the copy ends, however it ends.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What a snapshot copy sent.
#[derive(Default)]
struct Copied {
    revisions: u64,
    leases: u64,
}

impl Migrator {
    /// Copies etcd's current snapshot into oxcd; returns the snapshot's revision, from which
    /// etcd's watch stream goes on.
    pub(super) async fn copy_snapshot(&mut self) -> CtlResult<i64> {
        let started = Instant::now();
        let path = std::env::temp_dir().join(format!("oxctl-migrate-{}.db", std::process::id()));
        let _remove = TempFile(path.clone());
        self.download_snapshot(&path).await?;
        let db = Db::open(&path).map_err(|e| ctl_err(e.to_string()))?;
        let revs = store_revisions(&db).map_err(|e| ctl_err(e.to_string()))?;
        let marks = CompactMarks::read(&db).map_err(|e| ctl_err(e.to_string()))?;
        let mut copied = Copied::default();
        let before = self.revision;
        let compacted_at = marks.finished.max(marks.scheduled);
        self.copy_leases(&db, &mut copied).await?;
        self.copy_revisions(&db, &mut copied).await?;
        if compacted_at > before && before > INITIAL_REV {
            // etcd compacted past what oxcd has: keys it deleted in between left no
            // tombstone to copy, so their history goes as etcd's did.
            let drop = self.keys_gone(&db, before, compacted_at).await?;
            for keys in drop.chunks(DROP_KEYS_PER_BATCH) {
                self.apply(ipb::ImportApplyRequest {
                    drop_keys: keys.to_vec(),
                    advance_revision: revs.current,
                    compact_revision: compacted_at,
                    ..Default::default()
                })
                .await?;
            }
        }
        let auth = read_auth(&db)?;
        let (users, roles) = (auth.users.len(), auth.roles.len());
        let auth_enabled = auth.enabled;
        self.apply(ipb::ImportApplyRequest {
            auth: Some(auth),
            advance_revision: revs.current,
            compact_revision: compacted_at,
            snapshot_revision: revs.current,
            ..Default::default()
        })
        .await?;
        if auth_enabled {
            self.reconnect_target().await?;
        }
        emit(
            format!(
                "snapshot: etcd's snapshot at revision {} copied ({} revisions, {} leases, {users} users, {roles} roles; compacted at {}) in {:.1}s\n",
                revs.current,
                copied.revisions,
                copied.leases,
                compacted_at,
                started.elapsed().as_secs_f64()
            )
            .as_bytes(),
        )?;
        Ok(revs.current)
    }

    /// `--copy-auth`: replaces oxcd's auth store (users with their password hashes, roles,
    /// the enabled flag, the auth revision) with the one of a new etcd snapshot; nothing
    /// else is taken from it. etcd's watch stream does not carry auth changes.
    pub(super) async fn copy_auth(&mut self) -> CtlResult {
        let path =
            std::env::temp_dir().join(format!("oxctl-migrate-auth-{}.db", std::process::id()));
        let _remove = TempFile(path.clone());
        self.download_snapshot(&path).await?;
        let db = Db::open(&path).map_err(|e| ctl_err(e.to_string()))?;
        let auth = read_auth(&db)?;
        let (users, roles, enabled) = (auth.users.len(), auth.roles.len(), auth.enabled);
        self.apply(ipb::ImportApplyRequest {
            auth: Some(auth),
            advance_revision: self.revision,
            ..Default::default()
        })
        .await?;
        if enabled {
            self.reconnect_target().await?;
        }
        emit(
            format!("auth: etcd's users and roles copied again ({users} users, {roles} roles)\n")
                .as_bytes(),
        )
    }

    /// Saves etcd's snapshot stream to `path` and checks its SHA-256 trailer.
    async fn download_snapshot(&self, path: &Path) -> CtlResult {
        let io = |e: std::io::Error| ctl_err(format!("{}: {e}", path.display()));
        let mut file = tokio::fs::File::create(path).await.map_err(io)?;
        let mut stream = self
            .src
            .maintenance()
            .snapshot(pb::SnapshotRequest {})
            .await
            .map_err(|s| ctl_err(format!("etcd's snapshot: {}", status_message(&s))))?
            .into_inner();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|s| ctl_err(format!("etcd's snapshot: {}", status_message(&s))))?;
            file.write_all(&chunk.blob).await.map_err(io)?;
        }
        file.sync_all().await.map_err(io)?;
        drop(file);
        oxcd_bbolt::snapshot::require_hash(path).map_err(|e| ctl_err(e.to_string()))?;
        Ok(())
    }

    /// Grants oxcd the snapshot's leases and removes the ones oxcd has that etcd has not.
    async fn copy_leases(&mut self, db: &Db, copied: &mut Copied) -> CtlResult {
        let mut batch = Vec::new();
        let mut seen = HashSet::new();
        if let Some(bucket) = db
            .bucket(etcd::LEASE_BUCKET)
            .map_err(|e| ctl_err(e.to_string()))?
        {
            let mut cursor = bucket.cursor();
            while let Some(e) = cursor.next_entry().map_err(|e| ctl_err(e.to_string()))? {
                let l = proto::Lease::decode(e.value)
                    .map_err(|err| ctl_err(format!("etcd's snapshot: lease: {err}")))?;
                seen.insert(l.id);
                batch.push(ipb::ImportLease {
                    id: l.id,
                    ttl: l.ttl,
                });
                if batch.len() >= LEASES_PER_BATCH {
                    copied.leases += batch.len() as u64;
                    self.send_leases(std::mem::take(&mut batch), Vec::new())
                        .await?;
                }
            }
        }
        let removed: Vec<i64> = self.leases.difference(&seen).copied().collect();
        copied.leases += batch.len() as u64;
        self.send_leases(batch, removed).await
    }

    async fn send_leases(&mut self, leases: Vec<ipb::ImportLease>, removed: Vec<i64>) -> CtlResult {
        if leases.is_empty() && removed.is_empty() {
            return Ok(());
        }
        for l in &leases {
            self.leases.insert(l.id);
        }
        for id in &removed {
            self.leases.remove(id);
        }
        self.apply(ipb::ImportApplyRequest {
            leases,
            removed_leases: removed,
            ..Default::default()
        })
        .await
    }

    /// Sends every revision of the `key` bucket above oxcd's revision, whole revisions in
    /// batches of about [`APPLY_BATCH_BYTES`].
    async fn copy_revisions(&mut self, db: &Db, copied: &mut Copied) -> CtlResult {
        let bucket = db
            .must_bucket(etcd::KEY_BUCKET)
            .map_err(|e| ctl_err(e.to_string()))?;
        let mut cursor = bucket.cursor();
        let mut pending = Batch::default();
        let mut current: Option<ipb::ImportRevision> = None;
        while let Some(e) = cursor.next_entry().map_err(|e| ctl_err(e.to_string()))? {
            let (rev, tombstone, kv) = key_record(e.key, e.value)
                .map_err(|err| ctl_err(format!("etcd's snapshot: key bucket: {err}")))?;
            if rev.main <= self.revision {
                continue;
            }
            copied.revisions += 1;
            if current.as_ref().is_some_and(|r| r.revision != rev.main) {
                if let Some(done) = current.take() {
                    if let Some(full) = pending.push(done) {
                        self.apply(full).await?;
                    }
                }
            }
            let r = current.get_or_insert_with(|| ipb::ImportRevision {
                revision: rev.main,
                changes: Vec::new(),
            });
            r.changes.push(ipb::ImportChange {
                sub: rev.sub,
                tombstone,
                kv: Some(kv),
            });
        }
        if let Some(done) = current.take() {
            if let Some(full) = pending.push(done) {
                self.apply(full).await?;
            }
        }
        if let Some(rest) = pending.take() {
            self.apply(rest).await?;
        }
        Ok(())
    }
}

impl Migrator {
    /// Keys live in oxcd at `at` that etcd's snapshot has no live revision of at
    /// `compacted_at` (deleted in between, their tombstones compacted away).
    async fn keys_gone(&self, db: &Db, at: i64, compacted_at: i64) -> CtlResult<Vec<Vec<u8>>> {
        let mut latest: HashMap<Vec<u8>, bool> = HashMap::new();
        let bucket = db
            .must_bucket(etcd::KEY_BUCKET)
            .map_err(|e| ctl_err(e.to_string()))?;
        let mut cursor = bucket.cursor();
        while let Some(e) = cursor.next_entry().map_err(|e| ctl_err(e.to_string()))? {
            let (rev, tombstone, kv) = key_record(e.key, e.value)
                .map_err(|err| ctl_err(format!("etcd's snapshot: key bucket: {err}")))?;
            if rev.main > compacted_at {
                break;
            }
            latest.insert(kv.key, tombstone);
        }
        let mut gone = Vec::new();
        let mut from = vec![0u8];
        loop {
            let req = pb::RangeRequest {
                key: from.clone(),
                range_end: vec![0],
                revision: at,
                keys_only: true,
                limit: LIST_KEYS_PER_RANGE,
                ..Default::default()
            };
            let r = self.dst_ctx.call(self.dst.kv().range(req)).await?;
            for kv in &r.kvs {
                if latest.get(&kv.key) != Some(&false) {
                    gone.push(kv.key.clone());
                }
            }
            match (r.more, r.kvs.last()) {
                (true, Some(last)) => {
                    from = last.key.clone();
                    from.push(0);
                }
                _ => return Ok(gone),
            }
        }
    }
}

/// Revisions gathered into batches of about [`APPLY_BATCH_BYTES`].
#[derive(Default)]
pub(super) struct Batch {
    revisions: Vec<ipb::ImportRevision>,
    bytes: usize,
}

impl Batch {
    /// Adds a revision; returns the batch to send first when it would grow too big.
    pub(super) fn push(&mut self, r: ipb::ImportRevision) -> Option<ipb::ImportApplyRequest> {
        let size = r.encoded_len();
        let full = (!self.revisions.is_empty() && self.bytes + size > APPLY_BATCH_BYTES)
            .then(|| self.take())
            .flatten();
        self.bytes += size;
        self.revisions.push(r);
        full
    }

    /// What is gathered, as one batch (`None` when empty).
    pub(super) fn take(&mut self) -> Option<ipb::ImportApplyRequest> {
        if self.revisions.is_empty() {
            return None;
        }
        self.bytes = 0;
        Some(ipb::ImportApplyRequest {
            revisions: std::mem::take(&mut self.revisions),
            ..Default::default()
        })
    }
}

/// The snapshot's auth store.
fn read_auth(db: &Db) -> CtlResult<ipb::ImportAuth> {
    let err = |e: oxcd_bbolt::Error| ctl_err(e.to_string());
    let mut auth = ipb::ImportAuth::default();
    if let Some(b) = db.bucket(etcd::AUTH_BUCKET).map_err(err)? {
        auth.enabled =
            b.get(etcd::AUTH_ENABLED_KEY).map_err(err)?.as_deref() == Some(etcd::AUTH_ENABLED);
        if let Some(v) = b.get(etcd::AUTH_REVISION_KEY).map_err(err)? {
            auth.revision = etcd::decode_u64_be("authRevision", &v)
                .map_err(|e| ctl_err(format!("etcd's snapshot: {e}")))?;
        }
    }
    for (bucket, is_user) in [
        (etcd::AUTH_USERS_BUCKET, true),
        (etcd::AUTH_ROLES_BUCKET, false),
    ] {
        let Some(b) = db.bucket(bucket).map_err(err)? else {
            continue;
        };
        let mut cursor = b.cursor();
        while let Some(e) = cursor.next_entry().map_err(err)? {
            let bad = |x: oxcd_bbolt::DecodeError| ctl_err(format!("etcd's snapshot: auth: {x}"));
            if is_user {
                auth.users.push(user_from_etcd(e.value).map_err(bad)?);
            } else {
                auth.roles.push(role_from_etcd(e.value).map_err(bad)?);
            }
        }
    }
    Ok(auth)
}
