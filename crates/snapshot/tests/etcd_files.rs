//! etcd's snapshot files through the crate's public API, without a server: a bbolt file laid
//! out as etcd 3.4 writes it (revisions, a compaction etcd had not finished, leases, auth,
//! old members) restores into a backend holding the same revisions, leases and auth; a
//! backend written back out as an etcd file reads back record for record (and `snapshot
//! status` sees it); damaged, truncated and random files fail with one clear line and leave
//! nothing behind. The real etcd's side of both directions is tested in the server's tests.

use std::fs::{File, OpenOptions};
use std::path::Path;

use oxcd_api::mvccpb::KeyValue;
use oxcd_bbolt::etcd::proto::{self, Permission, Role, User, UserOptions};
use oxcd_bbolt::etcd::{self as bucket, Revision};
use oxcd_bbolt::{Db, DbWriter};
use oxcd_snapshot::layout;
use oxcd_snapshot::members::{Member, AUX_MEMBERS};
use oxcd_snapshot::rows::{self, AUX_AUTH, AUX_LEASES};
use oxcd_snapshot::to_etcd::write_etcd_db;
use oxcd_snapshot::{restore, snapshot_status, RestoreOptions};
use oxcd_storage::mvcc::RevisionRecord;
use oxcd_storage::{MvccError, RangeOptions, Store};

const CLUSTER: &str = "n1=http://127.0.0.1:2380";

fn kv(key: &str, create: i64, rev: i64, version: i64, value: &str, lease: i64) -> proto::KeyValue {
    proto::KeyValue {
        key: key.into(),
        create_revision: create,
        mod_revision: rev,
        version,
        value: value.into(),
        lease,
    }
}

/// The history: a@2, b@3 (lease 7), a@4, b deleted @5, c@6 and d@6.1; compaction finished
/// at 3, scheduled at 4 (etcd stopped mid-compaction); a@2 is still in the file.
fn etcd_entries() -> Vec<(Revision, bool, proto::KeyValue)> {
    let r = Revision::new;
    vec![
        (r(2, 0), false, kv("a", 2, 2, 1, "a1", 0)),
        (r(3, 0), false, kv("b", 3, 3, 1, "b1", 7)),
        (r(4, 0), false, kv("a", 2, 4, 2, "a2", 0)),
        (r(5, 0), true, kv("b", 0, 0, 0, "", 0)),
        (r(6, 0), false, kv("c", 6, 6, 1, "c1", 0)),
        (r(6, 1), false, kv("d", 6, 6, 1, "", 0)),
    ]
}

fn create_rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .expect("create")
}

/// Writes the etcd 3.4 file of [`etcd_entries`] to `path`, with its SHA-256 trailer.
fn write_etcd_file(path: &Path) {
    let mut w = DbWriter::new(create_rw(path)).expect("writer");
    w.begin_bucket(bucket::ALARM_BUCKET).expect("bucket");
    w.begin_bucket(bucket::AUTH_BUCKET).expect("bucket");
    w.put(bucket::AUTH_ENABLED_KEY, &[1]).expect("put");
    w.put(bucket::AUTH_REVISION_KEY, &5u64.to_be_bytes())
        .expect("put");
    w.begin_bucket(bucket::AUTH_ROLES_BUCKET).expect("bucket");
    let role = Role {
        name: b"r1".to_vec(),
        key_permission: vec![Permission {
            perm_type: proto::PERM_READWRITE,
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
        }],
    };
    w.put(b"r1", &role.encode()).expect("put");
    w.begin_bucket(bucket::AUTH_USERS_BUCKET).expect("bucket");
    for (name, roles) in [
        ("root", vec!["root".to_string()]),
        ("u1", vec!["r1".into()]),
    ] {
        let user = User {
            name: name.into(),
            password: format!("$2a$10$hash-of-{name}").into_bytes(),
            roles,
            options: Some(UserOptions { no_password: false }),
        };
        w.put(name.as_bytes(), &user.encode()).expect("put");
    }
    w.begin_bucket(bucket::CLUSTER_BUCKET).expect("bucket");
    w.begin_bucket(bucket::KEY_BUCKET).expect("bucket");
    for (rev, tombstone, kv) in etcd_entries() {
        let key = if tombstone {
            rev.to_tombstone_bytes().to_vec()
        } else {
            rev.to_bytes().to_vec()
        };
        w.put(&key, &kv.encode()).expect("put");
    }
    w.begin_bucket(bucket::LEASE_BUCKET).expect("bucket");
    let lease = proto::Lease {
        id: 7,
        ttl: 60,
        remaining_ttl: 0,
    };
    w.put(&bucket::lease_key(7), &lease.encode()).expect("put");
    w.begin_bucket(bucket::MEMBERS_BUCKET).expect("bucket");
    w.put(b"63", br#"{"id":99,"peerURLs":["http://127.0.0.9:2380"]}"#)
        .expect("put");
    w.begin_bucket(bucket::MEMBERS_REMOVED_BUCKET)
        .expect("bucket");
    w.begin_bucket(bucket::META_BUCKET).expect("bucket");
    w.put(bucket::CONSISTENT_INDEX_KEY, &42u64.to_be_bytes())
        .expect("put");
    w.put(
        bucket::FINISHED_COMPACT_KEY,
        &Revision::new(3, 0).to_bytes(),
    )
    .expect("put");
    w.put(
        bucket::SCHEDULED_COMPACT_KEY,
        &Revision::new(4, 0).to_bytes(),
    )
    .expect("put");
    w.finish_snapshot().expect("finish");
}

fn options(dir: &Path, data_dir: &str) -> RestoreOptions {
    RestoreOptions {
        snapshot: dir.join("snap.db"),
        data_dir: Some(dir.join(data_dir)),
        name: "n1".into(),
        initial_cluster: CLUSTER.into(),
        initial_advertise_peer_urls: "http://127.0.0.1:2380".into(),
        ..Default::default()
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("ls")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// key, create revision, mod revision, version, value, lease.
type Row = (String, i64, i64, i64, String, i64);

fn get(store: &Store, rev: i64) -> Result<Vec<Row>, MvccError> {
    let r = store.range(
        &[0],
        &[0],
        RangeOptions {
            rev,
            ..Default::default()
        },
    )?;
    Ok(r.kvs
        .into_iter()
        .map(|kv: KeyValue| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                kv.create_revision,
                kv.mod_revision,
                kv.version,
                String::from_utf8_lossy(&kv.value).into_owned(),
                kv.lease,
            )
        })
        .collect())
}

#[test]
fn an_etcd_snapshot_restores_every_revision_lease_and_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_etcd_file(&dir.path().join("snap.db"));
    let restored = restore(&options(dir.path(), "n1")).expect("restore");
    assert_eq!(restored.revision, 6);
    let store = Store::open(&layout::backend_path(&dir.path().join("n1"))).expect("backend");
    // The unfinished compaction at 4 was carried out: a@2 is gone, b@3 is kept.
    assert_eq!(store.compact_rev(), 4);
    assert_eq!(store.current_rev(), 6);
    let s = |v: &str| v.to_string();
    assert_eq!(
        get(&store, 4).expect("at 4"),
        vec![(s("a"), 2, 4, 2, s("a2"), 0), (s("b"), 3, 3, 1, s("b1"), 7)]
    );
    assert_eq!(
        get(&store, 0).expect("current"),
        vec![
            (s("a"), 2, 4, 2, s("a2"), 0),
            (s("c"), 6, 6, 1, s("c1"), 0),
            (s("d"), 6, 6, 1, s(""), 0)
        ]
    );
    assert!(matches!(get(&store, 3), Err(MvccError::Compacted)));
    // The delete at 5 is a tombstone at 5.0, as in etcd.
    let view = store.read_view().expect("view");
    let mut revs = Vec::new();
    view.for_each_revision(i64::MAX, |r: RevisionRecord<'_>| {
        revs.push((r.rev.main, r.rev.sub, r.tombstone));
        Ok::<_, MvccError>(())
    })
    .expect("revisions");
    assert_eq!(
        revs,
        vec![
            (3, 0, false),
            (4, 0, false),
            (5, 0, true),
            (6, 0, false),
            (6, 1, false)
        ]
    );
    let leases = store.aux_load(AUX_LEASES).expect("leases");
    assert_eq!(leases.len(), 1);
    let (id, ttl, _) = rows::parse_lease_row(&leases[0].0, &leases[0].1).expect("lease row");
    assert_eq!((id, ttl), (7, 60));
    let auth: Vec<String> = store
        .aux_load(AUX_AUTH)
        .expect("auth")
        .into_iter()
        .map(|(k, v)| format!("{}={}", k.escape_ascii(), v.len()))
        .collect();
    assert_eq!(
        auth[..2],
        ["enabled=1".to_string(), "revision=8".to_string()]
    );
    assert_eq!(auth.len(), 5, "{auth:?}");
    let root = store
        .aux_load(AUX_AUTH)
        .expect("auth")
        .into_iter()
        .find(|(k, _)| k == b"user/root")
        .map(|(_, v)| v);
    let root = root.and_then(|v| <oxcd_api::authpb::User as prost::Message>::decode(&*v).ok());
    assert_eq!(
        root.map(|u| (u.password, u.roles)),
        Some((b"$2a$10$hash-of-root".to_vec(), vec!["root".to_string()]))
    );
    assert!(store.aux_load(AUX_MEMBERS).expect("members").is_empty());
    assert_eq!(store.consistent_index(), (1, 1));
}

#[test]
fn a_backend_written_as_an_etcd_file_reads_back_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_etcd_file(&dir.path().join("snap.db"));
    restore(&options(dir.path(), "n1")).expect("restore");
    let store = Store::open(&layout::backend_path(&dir.path().join("n1"))).expect("backend");
    let members = vec![Member {
        id: 0x63,
        name: "n1".into(),
        peer_urls: vec!["http://127.0.0.1:2380".into()],
        client_urls: vec!["http://127.0.0.1:2379".into()],
        is_learner: false,
    }];
    let out = dir.path().join("out.db");
    let view = store.read_view().expect("view");
    let (_, summary) = write_etcd_db(&view, &members, create_rw(&out)).expect("export");
    assert_eq!(
        summary.db_bytes,
        std::fs::metadata(&out).expect("stat").len()
    );
    let db = Db::open(&out).expect("bbolt");
    let names: Vec<String> = db
        .bucket_names()
        .expect("buckets")
        .iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "alarm",
            "auth",
            "authRoles",
            "authUsers",
            "cluster",
            "key",
            "lease",
            "members",
            "members_removed",
            "meta"
        ]
    );
    // Every revision as etcd stores it: the file's key bucket minus what the compaction
    // at 4 removed (a@2); the tombstone's value holds only the key.
    let want: Vec<(Vec<u8>, Vec<u8>)> = etcd_entries()
        .into_iter()
        .skip(1)
        .map(|(rev, tombstone, kv)| {
            if tombstone {
                (rev.to_tombstone_bytes().to_vec(), kv.encode())
            } else {
                (rev.to_bytes().to_vec(), kv.encode())
            }
        })
        .collect();
    let mut got = Vec::new();
    let key_bucket = db.must_bucket(bucket::KEY_BUCKET).expect("key");
    let mut cursor = key_bucket.cursor();
    while let Some(e) = cursor.next_entry().expect("entry") {
        got.push((e.key.to_vec(), e.value.to_vec()));
    }
    assert_eq!(got, want);
    let meta = db.must_bucket(bucket::META_BUCKET).expect("meta");
    assert_eq!(
        meta.get(bucket::FINISHED_COMPACT_KEY).expect("get"),
        Some(Revision::new(4, 0).to_bytes().to_vec())
    );
    let members = db.must_bucket(bucket::MEMBERS_BUCKET).expect("members");
    assert_eq!(
        members.get(b"63").expect("get"),
        Some(br#"{"id":99,"peerURLs":["http://127.0.0.1:2380"],"name":"n1","clientURLs":["http://127.0.0.1:2379"]}"#.to_vec())
    );
    let lease = db.must_bucket(bucket::LEASE_BUCKET).expect("lease");
    let lease = lease
        .get(&bucket::lease_key(7))
        .expect("get")
        .expect("lease 7");
    assert_eq!(
        proto::Lease::decode(&lease).map(|l| (l.id, l.ttl)),
        Ok((7, 60))
    );
    let status = snapshot_status(&out).expect("status");
    assert_eq!((status.revision, status.total_size), (6, summary.db_bytes));
    // Restored again, the file gives the same revisions.
    std::fs::rename(&out, dir.path().join("snap.db")).expect("rename");
    let again = RestoreOptions {
        skip_hash_check: true,
        ..options(dir.path(), "n1b")
    };
    assert_eq!(restore(&again).expect("restore again").revision, 6);
}

#[test]
fn damaged_truncated_and_random_files_fail_clearly_and_leave_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = dir.path().join("snap.db");
    write_etcd_file(&snap);
    let good = std::fs::read(&snap).expect("read");
    let fail = |bytes: &[u8], skip_hash_check: bool| -> String {
        std::fs::write(&snap, bytes).expect("write");
        let o = RestoreOptions {
            skip_hash_check,
            ..options(dir.path(), "n1")
        };
        let e = restore(&o).err().unwrap_or_default();
        assert_eq!(names_in(dir.path()), ["snap.db"], "after: {e}");
        e
    };
    // A damaged page: the trailer catches it; without the check, the page does.
    let mut damaged = good.clone();
    let page = 4096 * 3;
    damaged[page..page + 16].copy_from_slice(&[0xAB; 16]);
    let e = fail(&damaged, false);
    assert!(e.starts_with("expected sha256 ["), "{e}");
    let e = fail(&damaged, true);
    assert!(
        e.contains("is damaged") || e.contains("out of range"),
        "{e}"
    );
    // Truncated: no trailer any more; without the check, the meta says how long it was.
    let cut = &good[..good.len() / 2 + 7];
    let e = fail(cut, false);
    assert_eq!(e, "snapshot missing hash but --skip-hash-check=false");
    let e = fail(cut, true);
    assert!(e.contains("the file is truncated"), "{e}");
    // Random bytes, with and without a length that looks like a trailer.
    let random: Vec<u8> = (0..4096u32 * 3)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let e = fail(&random, false);
    assert!(e.contains("is not a snapshot"), "{e}");
    let e = fail(&random[..4096 * 2 + 32], false);
    assert!(e.starts_with("expected sha256 ["), "{e}");
    let e = fail(&random, true);
    assert!(e.contains("not a bbolt database file"), "{e}");
    let e = snapshot_status(&snap).err().unwrap_or_default();
    assert!(e.contains("not a bbolt database file"), "{e}");
}
