//! An oxcd backend as etcd's bbolt database: what Maintenance.Snapshot streams, so that the
//! real `etcdctl snapshot status` reads it and `etcdctl snapshot restore` (3.4) /
//! `etcdutl snapshot restore` (3.5+) makes an etcd data dir of it. Written from one
//! [`ReadView`] with [`DbWriter`], bucket after bucket in etcd's byte order, page by page:
//! memory is bounded by one page per tree level, never the database.
//!
//! | bucket | from |
//! |---|---|
//! | `alarm` | the alarm rows: `AlarmMember` keys, empty values |
//! | `auth` | `authEnabled` (when the flag was ever set), `authRevision` (at least 1, as a new etcd's) |
//! | `authRoles`, `authUsers` | the role and user rows, by name (`authpb` as etcd stores them) |
//! | `cluster` | empty (etcd 3.4's) |
//! | `key` | every revision: 17-byte revision key (18 with `t` for a tombstone), `mvccpb.KeyValue` (a tombstone's holds only the key, as etcd writes it) |
//! | `lease` | lease ID (8 bytes BE) → `leasepb.Lease{ID, TTL}` |
//! | `members` | the member table: hex ID → etcd's member JSON |
//! | `members_removed` | empty |
//! | `meta` | `consistent_index` (the view's applied index), `finishedCompactRev` and `scheduledCompactRev` (when compacted) |
//!
//! The database is what etcd's `tx.WriteTo` streams; a snapshot stream adds its SHA-256
//! after it ([`EtcdSnapshotFile::chunks`]). The writer seeks back to write the metas, so a
//! stream is built in an unnamed temporary file first ([`EtcdSnapshotFile::create`]).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use oxcd_bbolt::etcd::{self, proto, Revision};
use oxcd_bbolt::{DbWriter, WriteError, WriteSummary};
use oxcd_storage::mvcc::{ReadView, RevisionRecord};
use oxcd_storage::MvccError;

use crate::members::Member;
use crate::rows::{self, AUX_ALARMS, AUX_AUTH, AUX_LEASES};

/// Writing the etcd database failed.
#[derive(Debug, thiserror::Error)]
pub enum ToEtcdError {
    #[error("{0}")]
    Write(#[from] WriteError),
    #[error("{0}")]
    Backend(#[from] MvccError),
    #[error("the backend's {table} row {key} is damaged")]
    Damaged { table: &'static str, key: String },
}

impl From<std::io::Error> for ToEtcdError {
    fn from(e: std::io::Error) -> Self {
        ToEtcdError::Write(WriteError::Io(e))
    }
}

/// Writes `view` as an etcd database into `out` (from its start); `members` is the member
/// table. Returns the output and what was written (no hash trailer).
pub fn write_etcd_db<W: Write + Seek>(
    view: &ReadView,
    members: &[Member],
    out: W,
) -> Result<(W, WriteSummary), ToEtcdError> {
    let mut w = DbWriter::new(out)?;
    write_alarms(view, &mut w)?;
    write_auth(view, &mut w)?;
    w.begin_bucket(etcd::CLUSTER_BUCKET)?;
    w.begin_bucket(etcd::KEY_BUCKET)?;
    view.for_each_revision(view.current_rev(), |r| put_revision(&mut w, &r))?;
    w.begin_bucket(etcd::LEASE_BUCKET)?;
    view.for_each_aux(AUX_LEASES, |key, value| {
        let (id, ttl, _) =
            rows::parse_lease_row(key, value).ok_or_else(|| damaged("lease", key))?;
        let lease = proto::Lease {
            id,
            ttl,
            remaining_ttl: 0,
        };
        w.put(&etcd::lease_key(id), &lease.encode())?;
        Ok::<_, ToEtcdError>(())
    })?;
    write_members(members, &mut w)?;
    w.begin_bucket(etcd::MEMBERS_REMOVED_BUCKET)?;
    w.begin_bucket(etcd::META_BUCKET)?;
    let (consistent_index, _) = view.consistent_index();
    w.put(etcd::CONSISTENT_INDEX_KEY, &consistent_index.to_be_bytes())?;
    if view.compact_rev() > 0 {
        let mark = Revision::new(view.compact_rev(), 0).to_bytes();
        w.put(etcd::FINISHED_COMPACT_KEY, &mark)?;
        w.put(etcd::SCHEDULED_COMPACT_KEY, &mark)?;
    }
    Ok(w.finish()?)
}

/// An etcd snapshot of a backend, built in a temporary file that is already unlinked (it
/// goes when the handle does, even if the process dies), ready to be streamed.
pub struct EtcdSnapshotFile {
    file: File,
    db_bytes: u64,
    revision: i64,
}

/// Numbers temporary files within one process.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl EtcdSnapshotFile {
    /// Writes `view` (with the member table `members`) into a new temporary file in `dir`.
    pub fn create(view: &ReadView, members: &[Member], dir: &Path) -> Result<Self, ToEtcdError> {
        let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".snapshot-{}-{seq}.tmp", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        // Unlinked at once: nothing to clean up after an error, a dropped stream or a crash.
        std::fs::remove_file(&path)?;
        let (file, summary) = write_etcd_db(view, members, file)?;
        Ok(EtcdSnapshotFile {
            file,
            db_bytes: summary.db_bytes,
            revision: view.current_rev(),
        })
    }

    /// Bytes of the database (the stream is 32 more: the SHA-256).
    pub fn db_bytes(&self) -> u64 {
        self.db_bytes
    }

    /// The store revision the snapshot holds.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The stream, as etcd sends it: the database in chunks of `chunk_bytes`, each with the
    /// database bytes still to come after it, then the SHA-256 of the database (0 to come).
    pub fn chunks(
        mut self,
        chunk_bytes: usize,
    ) -> impl Iterator<Item = std::io::Result<(Vec<u8>, u64)>> {
        let mut hasher = Some(Sha256::new());
        let mut sent = 0u64;
        let mut started = false;
        std::iter::from_fn(move || {
            if !started {
                started = true;
                if let Err(e) = self.file.seek(SeekFrom::Start(0)) {
                    hasher = None;
                    return Some(Err(e));
                }
            }
            let h = hasher.as_mut()?;
            if sent == self.db_bytes {
                let digest = hasher.take()?.finalize().to_vec();
                return Some(Ok((digest, 0)));
            }
            let want = (self.db_bytes - sent).min(chunk_bytes.max(1) as u64) as usize;
            let mut buf = vec![0u8; want];
            if let Err(e) = self.file.read_exact(&mut buf) {
                hasher = None;
                return Some(Err(e));
            }
            h.update(&buf);
            sent += want as u64;
            Some(Ok((buf, self.db_bytes - sent)))
        })
    }
}

fn damaged(table: &'static str, key: &[u8]) -> ToEtcdError {
    ToEtcdError::Damaged {
        table,
        key: key.escape_ascii().to_string(),
    }
}

/// One revision as etcd's `key` bucket holds it.
pub fn etcd_key_entry(r: &RevisionRecord<'_>) -> Result<(Vec<u8>, Vec<u8>), MvccError> {
    let rev = Revision::new(r.rev.main, r.rev.sub);
    if !r.tombstone {
        // oxcd stores the KeyValue prost-encoded: the bytes gogoproto gives etcd's.
        return Ok((rev.to_bytes().to_vec(), r.kv_bytes.to_vec()));
    }
    let kv = r.decode()?;
    let tomb = proto::KeyValue {
        key: kv.key,
        ..Default::default()
    };
    Ok((rev.to_tombstone_bytes().to_vec(), tomb.encode()))
}

/// etcd's HashKV of `view` at `rev` (at most the view's current revision): CRC-32C over
/// the bucket name `key` and the `key` bucket entries, exactly the bytes etcd's backend
/// would hold for the same history ([`etcd_key_entry`]), with etcd's rule for compacted
/// revisions (only those in `keep`, a compaction at `rev`'s, unless `keep` is empty; see
/// `oxcd_bbolt::etcd::hash`). `compact_rev` is etcd's: -1 when never compacted.
pub fn hash_kv(
    view: &ReadView,
    keep: &oxcd_storage::mvcc::KeepSet,
    compact_rev: i64,
    rev: i64,
) -> Result<u32, MvccError> {
    let keep = keep.iter().map(|r| Revision::new(r.main, r.sub)).collect();
    let mut hasher = oxcd_bbolt::etcd::hash::KvHasher::new(compact_rev, rev, keep);
    view.for_each_revision(rev, |r| {
        let (key, value) = etcd_key_entry(&r)?;
        hasher
            .write_key_value(&key, &value)
            .map_err(|e| MvccError::Corrupt {
                main: r.rev.main as u64,
                sub: r.rev.sub as u64,
                reason: e.to_string(),
            })
    })?;
    Ok(hasher.finish().hash)
}

fn put_revision<W: Write + Seek>(
    w: &mut DbWriter<W>,
    r: &RevisionRecord<'_>,
) -> Result<(), ToEtcdError> {
    let (key, value) = etcd_key_entry(r)?;
    w.put(&key, &value)?;
    Ok(())
}

fn write_alarms<W: Write + Seek>(view: &ReadView, w: &mut DbWriter<W>) -> Result<(), ToEtcdError> {
    let mut keys = Vec::new();
    view.for_each_aux(AUX_ALARMS, |key, _| {
        let (member_id, alarm) = rows::parse_alarm_key(key).ok_or_else(|| damaged("alarm", key))?;
        keys.push(proto::AlarmMember { member_id, alarm }.encode());
        Ok::<_, ToEtcdError>(())
    })?;
    keys.sort();
    keys.dedup();
    w.begin_bucket(etcd::ALARM_BUCKET)?;
    for k in keys {
        w.put(&k, &[])?;
    }
    Ok(())
}

/// `auth`, `authRoles`, `authUsers`: three passes over the auth rows (a small table), each
/// already in etcd's key order.
fn write_auth<W: Write + Seek>(view: &ReadView, w: &mut DbWriter<W>) -> Result<(), ToEtcdError> {
    let mut enabled = None;
    let mut revision = 0u64;
    view.for_each_aux(AUX_AUTH, |key, value| {
        if key == rows::AUTH_ENABLED_KEY {
            enabled = Some(value.first() == Some(&1));
        } else if key == rows::AUTH_REVISION_KEY {
            let b: [u8; 8] = value.try_into().map_err(|_| damaged("auth", key))?;
            revision = u64::from_be_bytes(b);
        }
        Ok::<_, ToEtcdError>(())
    })?;
    w.begin_bucket(etcd::AUTH_BUCKET)?;
    if let Some(on) = enabled {
        let flag = if on {
            etcd::AUTH_ENABLED
        } else {
            etcd::AUTH_DISABLED
        };
        w.put(etcd::AUTH_ENABLED_KEY, flag)?;
    }
    w.put(etcd::AUTH_REVISION_KEY, &revision.max(1).to_be_bytes())?;
    for (bucket, prefix) in [
        (etcd::AUTH_ROLES_BUCKET, rows::AUTH_ROLE_PREFIX),
        (etcd::AUTH_USERS_BUCKET, rows::AUTH_USER_PREFIX),
    ] {
        w.begin_bucket(bucket)?;
        view.for_each_aux(AUX_AUTH, |key, value| {
            if let Some(name) = key.strip_prefix(prefix.as_bytes()) {
                w.put(name, value)?;
            }
            Ok::<_, ToEtcdError>(())
        })?;
    }
    Ok(())
}

/// etcd's member JSON (`membership.Member`): `id`, `peerURLs`, `isLearner` when true,
/// `name` and `clientURLs` when set.
pub fn etcd_member_json(m: &Member) -> String {
    let mut s = format!("{{\"id\":{},\"peerURLs\":{}", m.id, json_list(&m.peer_urls));
    if m.is_learner {
        s.push_str(",\"isLearner\":true");
    }
    if !m.name.is_empty() {
        s.push_str(&format!(",\"name\":{}", json_string(&m.name)));
    }
    if !m.client_urls.is_empty() {
        s.push_str(&format!(",\"clientURLs\":{}", json_list(&m.client_urls)));
    }
    s.push('}');
    s
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn json_list(items: &[String]) -> String {
    let parts: Vec<String> = items.iter().map(|s| json_string(s)).collect();
    format!("[{}]", parts.join(","))
}

fn write_members<W: Write + Seek>(
    members: &[Member],
    w: &mut DbWriter<W>,
) -> Result<(), ToEtcdError> {
    let mut rows: Vec<(String, String)> = members
        .iter()
        .map(|m| (etcd::member_key(m.id), etcd_member_json(m)))
        .collect();
    rows.sort();
    rows.dedup_by(|a, b| a.0 == b.0);
    w.begin_bucket(etcd::MEMBERS_BUCKET)?;
    for (key, value) in rows {
        w.put(key.as_bytes(), value.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_json_is_etcds() {
        let mut m = Member {
            id: 10501334649042878790,
            name: String::new(),
            peer_urls: vec!["http://127.0.0.1:2380".into()],
            client_urls: vec![],
            is_learner: false,
        };
        assert_eq!(
            etcd_member_json(&m),
            r#"{"id":10501334649042878790,"peerURLs":["http://127.0.0.1:2380"]}"#
        );
        m.name = "infra0".into();
        m.client_urls = vec!["http://127.0.0.1:2379".into()];
        m.is_learner = true;
        assert_eq!(
            etcd_member_json(&m),
            r#"{"id":10501334649042878790,"peerURLs":["http://127.0.0.1:2380"],"isLearner":true,"name":"infra0","clientURLs":["http://127.0.0.1:2379"]}"#
        );
    }
}
