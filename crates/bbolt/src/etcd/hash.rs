//! etcd's hashes over its bbolt file: `HashKV` (what `etcdctl endpoint hashkv` asks a member
//! for, and what members compare to find corruption) and the hash `etcdctl snapshot status`
//! prints.
//!
//! **HashKV** (etcd 3.4 `mvcc/kvstore.go` `HashByRev`; 3.5/3.6 `kvHasher` in
//! `storage/mvcc/hash.go`, the same computation): CRC-32 Castagnoli, starting from 0, fed the
//! bucket name `key`, then the key and value bytes of each entry of the `key` bucket, in bucket
//! order, whose revision `r` satisfies `r.main <= rev` and, when `r.main <= compact_rev`, is in
//! `Keep(rev)` (unless `Keep(rev)` is empty: then nothing is skipped). `Keep(rev)` is the
//! revision a compaction at `rev` would keep for each key: the key's latest revision at or
//! below `rev`, unless that is a tombstone. `compact_rev` is the store's compaction
//! revision: the scheduled one (etcd resumes an unfinished compaction when it opens the
//! file), or -1 when there was none. etcd 3.4 computes `Keep` from its in-memory index; here
//! it comes from a first pass over the bucket (memory: one entry per distinct key, as etcd's
//! index).
//!
//! Differences between versions: 3.4 refuses `rev <= compact_rev` ("required revision has
//! been compacted"), 3.5.5+ and 3.6 only `rev < compact_rev`; 3.5+ also report the hashed
//! revision (`hash_revision`), and 3.6 hashes during compaction and answers a request for a
//! recent compaction's revision from that stored hash. The hash itself is computed the same.
//!
//! **Snapshot status** (`etcdctl snapshot status`, `clientv3/snapshot` `Status`): CRC-32
//! Castagnoli over, for each top-level bucket in order, its name then each key and value
//! (every bucket, `meta`'s `consistent_index` included); `revision` is the main revision of
//! the last `key` bucket entry, `totalKey` counts every entry of every bucket, `totalSize`
//! is the database size (`pgid * page_size`).

use std::collections::{HashMap, HashSet};

use crate::error::{DecodeError, Error};
use crate::etcd::proto::KeyValue;
use crate::etcd::revision::{Revision, RevisionKey};
use crate::etcd::{FINISHED_COMPACT_KEY, KEY_BUCKET, META_BUCKET, SCHEDULED_COMPACT_KEY};
use crate::reader::Db;

/// etcd's `KeyValueHash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyValueHash {
    pub hash: u32,
    pub compact_revision: i64,
    pub revision: i64,
}

/// The store's revisions as etcd computes them when it opens the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreRevisions {
    /// The main revision of the last `key` entry, at least `compact` and at least 1.
    pub current: i64,
    /// `scheduledCompactRev` or `finishedCompactRev`, the later one; -1 when neither is set.
    pub compact: i64,
    /// `finishedCompactRev` alone (0 when unset).
    pub finished_compact: i64,
}

/// What `etcdctl snapshot status` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotStatus {
    pub hash: u32,
    pub revision: i64,
    pub total_key: u64,
    pub total_size: u64,
}

/// Finds `Keep(rev)` from the `key` bucket's entries fed in bucket (revision) order.
#[derive(Debug, Default)]
pub struct KeepTracker {
    at_rev: i64,
    latest: HashMap<Vec<u8>, (Revision, bool)>,
}

impl KeepTracker {
    pub fn new(at_rev: i64) -> KeepTracker {
        KeepTracker {
            at_rev,
            latest: HashMap::new(),
        }
    }

    /// Notes one `key` bucket entry.
    pub fn observe(&mut self, key: &[u8], value: &[u8]) -> Result<(), DecodeError> {
        let rk = RevisionKey::decode(key)?;
        if rk.rev.main > self.at_rev {
            return Ok(());
        }
        let kv = KeyValue::decode(value)?;
        self.latest.insert(kv.key, (rk.rev, rk.tombstone));
        Ok(())
    }

    /// The revisions a compaction at `at_rev` keeps: each key's latest, unless a tombstone.
    pub fn keep(self) -> HashSet<Revision> {
        self.latest
            .into_values()
            .filter(|(_, tombstone)| !tombstone)
            .map(|(rev, _)| rev)
            .collect()
    }
}

/// etcd's `kvHasher`: feed it every `key` bucket entry in order.
#[derive(Debug)]
pub struct KvHasher {
    crc: u32,
    compact_revision: i64,
    revision: i64,
    keep: HashSet<Revision>,
}

impl KvHasher {
    pub fn new(compact_revision: i64, revision: i64, keep: HashSet<Revision>) -> KvHasher {
        KvHasher {
            crc: crc32c::crc32c(KEY_BUCKET),
            compact_revision,
            revision,
            keep,
        }
    }

    pub fn write_key_value(&mut self, key: &[u8], value: &[u8]) -> Result<(), DecodeError> {
        let rev = RevisionKey::decode(key)?.rev;
        // upper = {main: revision + 1}; skip unless upper > rev
        if rev.main > self.revision {
            return Ok(());
        }
        // lower = {main: compact_revision + 1}; lower > rev means rev.main <= compact_revision
        if rev.main <= self.compact_revision && !self.keep.is_empty() && !self.keep.contains(&rev) {
            return Ok(());
        }
        self.crc = crc32c::crc32c_append(self.crc, key);
        self.crc = crc32c::crc32c_append(self.crc, value);
        Ok(())
    }

    pub fn finish(self) -> KeyValueHash {
        KeyValueHash {
            hash: self.crc,
            compact_revision: self.compact_revision,
            revision: self.revision,
        }
    }
}

fn decode_err<'a>(db: &'a Db, bucket: &[u8]) -> impl Fn(DecodeError) -> Error + 'a {
    let bucket = String::from_utf8_lossy(bucket).into_owned();
    move |source| Error::Decode {
        path: db.path().to_path_buf(),
        bucket: bucket.clone(),
        source,
    }
}

/// HashKV of the `key` bucket for `compact_rev` and `rev`, exactly as etcd computes it (no
/// range checks: see [`hash_kv_at`]). Two passes over the bucket.
pub fn hash_kv(db: &Db, compact_rev: i64, rev: i64) -> Result<KeyValueHash, Error> {
    let bucket = db.must_bucket(KEY_BUCKET)?;
    let err = decode_err(db, KEY_BUCKET);
    let mut tracker = KeepTracker::new(rev);
    let mut cursor = bucket.cursor();
    while let Some(e) = cursor.next_entry()? {
        tracker.observe(e.key, e.value).map_err(&err)?;
    }
    let mut hasher = KvHasher::new(compact_rev, rev, tracker.keep());
    let mut cursor = bucket.cursor();
    while let Some(e) = cursor.next_entry()? {
        hasher.write_key_value(e.key, e.value).map_err(&err)?;
    }
    Ok(hasher.finish())
}

/// HashKV as etcd 3.4 answers a request for `rev` (0 = the current revision) on a member
/// whose backend is this file: compacted and future revisions are refused.
pub fn hash_kv_at(db: &Db, rev: i64) -> Result<KeyValueHash, Error> {
    let revs = store_revisions(db)?;
    if rev > 0 && rev <= revs.compact {
        return Err(Error::Compacted {
            rev,
            compact_rev: revs.compact,
        });
    }
    if rev > revs.current {
        return Err(Error::FutureRev {
            rev,
            current_rev: revs.current,
        });
    }
    let rev = if rev == 0 { revs.current } else { rev };
    hash_kv(db, revs.compact, rev)
}

/// Reads the compaction marks from `meta` and the last revision from `key`.
pub fn store_revisions(db: &Db) -> Result<StoreRevisions, Error> {
    let compact_mark = |key: &[u8]| -> Result<Option<i64>, Error> {
        let Some(meta) = db.bucket(META_BUCKET)? else {
            return Ok(None);
        };
        match meta.get(key)? {
            Some(v) => RevisionKey::decode(&v)
                .map(|k| Some(k.rev.main))
                .map_err(decode_err(db, META_BUCKET)),
            None => Ok(None),
        }
    };
    let finished = compact_mark(FINISHED_COMPACT_KEY)?;
    let scheduled = compact_mark(SCHEDULED_COMPACT_KEY)?;
    let compact = match (finished, scheduled) {
        (Some(f), Some(s)) => f.max(s),
        (Some(f), None) => f,
        (None, Some(s)) => s,
        (None, None) => -1,
    };
    let mut last = 1;
    if let Some(bucket) = db.bucket(KEY_BUCKET)? {
        let err = decode_err(db, KEY_BUCKET);
        let mut cursor = bucket.cursor();
        while let Some(e) = cursor.next_entry()? {
            last = RevisionKey::decode(e.key).map_err(&err)?.rev.main;
        }
    }
    Ok(StoreRevisions {
        current: last.max(compact),
        compact,
        finished_compact: finished.unwrap_or(0),
    })
}

/// What `etcdctl snapshot status` reports for this file.
pub fn snapshot_status(db: &Db) -> Result<SnapshotStatus, Error> {
    let mut crc = 0u32;
    let mut status = SnapshotStatus {
        hash: 0,
        revision: 0,
        total_key: 0,
        total_size: db.size_bytes(),
    };
    for name in db.bucket_names()? {
        crc = crc32c::crc32c_append(crc, &name);
        let is_key = name == KEY_BUCKET;
        let err = decode_err(db, &name);
        let bucket = db.must_bucket(&name)?;
        let mut cursor = bucket.cursor();
        while let Some(e) = cursor.next_entry()? {
            crc = crc32c::crc32c_append(crc, e.key);
            // a nested bucket's value is nil to bbolt's ForEach
            if !e.is_bucket {
                crc = crc32c::crc32c_append(crc, e.value);
            }
            if is_key {
                status.revision = RevisionKey::decode(e.key).map_err(&err)?.rev.main;
            }
            status.total_key += 1;
        }
    }
    status.hash = crc;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(main: i64, tombstone: bool, key: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let rk = RevisionKey {
            rev: Revision::new(main, 0),
            tombstone,
        };
        let kv = KeyValue {
            key: key.to_vec(),
            mod_revision: main,
            ..KeyValue::default()
        };
        (rk.encode(), kv.encode())
    }

    fn hash(entries: &[(Vec<u8>, Vec<u8>)], compact: i64, rev: i64) -> u32 {
        let mut tracker = KeepTracker::new(rev);
        for (k, v) in entries {
            tracker.observe(k, v).expect("valid");
        }
        let mut h = KvHasher::new(compact, rev, tracker.keep());
        for (k, v) in entries {
            h.write_key_value(k, v).expect("valid");
        }
        h.finish().hash
    }

    #[test]
    fn crc32c_is_castagnoli() {
        // The standard check value of CRC-32C.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn empty_store_hashes_the_bucket_name_only() {
        assert_eq!(hash(&[], -1, 1), crc32c::crc32c(b"key"));
    }

    #[test]
    fn compacted_revisions_count_only_when_kept() {
        // a@2, a@4, b@3 deleted at 5; compacted at 4 (a@4 kept; b@3 kept too, as its
        // tombstone is after the compaction).
        let e = vec![
            entry(2, false, b"a"),
            entry(3, false, b"b"),
            entry(4, false, b"a"),
            entry(5, true, b"b"),
        ];
        // at rev 5, Keep = {a@4}: b@3 (<= compact, not kept) is skipped, a@2 too
        let expect = {
            let mut c = crc32c::crc32c(b"key");
            for (k, v) in [&e[2], &e[3]] {
                c = crc32c::crc32c_append(c, k);
                c = crc32c::crc32c_append(c, v);
            }
            c
        };
        assert_eq!(hash(&e, 4, 5), expect);
        // revisions above rev are never hashed
        assert_ne!(hash(&e, 4, 5), hash(&e, 4, 4));
        // without a compaction everything up to rev is hashed
        let mut all = crc32c::crc32c(b"key");
        for (k, v) in &e {
            all = crc32c::crc32c_append(all, k);
            all = crc32c::crc32c_append(all, v);
        }
        assert_eq!(hash(&e, -1, 5), all);
    }

    #[test]
    fn empty_keep_hashes_compacted_revisions_too() {
        // only key deleted: Keep(rev) is empty, so etcd skips nothing
        let e = vec![entry(2, false, b"a"), entry(3, true, b"a")];
        let mut all = crc32c::crc32c(b"key");
        for (k, v) in &e {
            all = crc32c::crc32c_append(all, k);
            all = crc32c::crc32c_append(all, v);
        }
        assert_eq!(hash(&e, 2, 3), all);
    }
}
