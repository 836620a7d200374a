//! `snapshot restore` through the crate's public API: the flags are checked with etcdctl's
//! texts before anything is written, a restore builds a data dir the server can open as a new
//! member (backend, no old members, a WAL starting at index 1 with every member a voter), and
//! a failed restore leaves nothing behind.

use std::path::Path;

use oxcd_snapshot::layout::{self, decode_snapshot_meta, WalMeta};
use oxcd_snapshot::members::{initial_members, Member, AUX_MEMBERS};
use oxcd_snapshot::{check_options, encode_snapshot, parse_initial_cluster, restore};
use oxcd_snapshot::{RestoreOptions, Restored};
use oxcd_storage::{RangeOptions, Store, Wal};

const CLUSTER: &str = "n1=http://127.0.0.1:2380,n2=http://127.0.0.2:2380";

/// A snapshot file holding key `a` = `1` and the member row of an old cluster.
fn snapshot_file(dir: &Path) -> Vec<u8> {
    let store = Store::open(&dir.join("src.db")).expect("store");
    let mut b = store.batch().expect("batch");
    {
        let mut t = b.txn();
        t.put(b"a", b"1".to_vec(), 0).expect("put");
        t.end();
    }
    let old = Member {
        id: 99,
        name: "old".into(),
        peer_urls: vec!["http://127.0.0.9:2380".into()],
        client_urls: vec![],
        is_learner: false,
    };
    b.aux_put(AUX_MEMBERS, &99u64.to_be_bytes(), &old.row())
        .expect("member row");
    b.commit(true).expect("commit");
    encode_snapshot(&store.snapshot().expect("snapshot").0)
}

fn options(dir: &Path, name: &str) -> RestoreOptions {
    RestoreOptions {
        snapshot: dir.join("snap.db"),
        data_dir: Some(dir.join(name)),
        name: name.into(),
        initial_cluster: CLUSTER.into(),
        initial_advertise_peer_urls: format!("http://127.0.0.{}:2380", &name[1..]),
        initial_cluster_token: "tok".into(),
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

#[test]
fn flags_are_checked_with_etcdctls_texts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = options(dir.path(), "n1");
    let cfg = check_options(&o).expect("good flags");
    assert_eq!(cfg.data_dir, dir.path().join("n1"));
    assert_eq!(cfg.wal_dir, None);
    assert_eq!(cfg.wal_path(), dir.path().join("n1/member/wal"));
    assert_eq!(cfg.initial_cluster.len(), 2);

    let default_dir = RestoreOptions {
        name: "n-unlikely".into(),
        initial_cluster: "n-unlikely=http://localhost:2380".into(),
        ..Default::default()
    };
    let cfg = check_options(&default_dir).expect("defaults");
    assert_eq!(cfg.data_dir, Path::new("n-unlikely.etcd"));

    let err = |o: RestoreOptions| check_options(&o).err().unwrap_or_default();
    std::fs::create_dir(dir.path().join("n1")).expect("mkdir");
    assert_eq!(
        err(o.clone()),
        format!(
            "data-dir {:?} exists",
            dir.path().join("n1").display().to_string()
        )
    );
    let o = options(dir.path(), "n2");
    let wal = dir.path().join("n1");
    assert_eq!(
        err(RestoreOptions {
            wal_dir: Some(wal.clone()),
            ..o.clone()
        }),
        format!("wal-dir {:?} exists", wal.display().to_string())
    );
    assert_eq!(
        err(RestoreOptions {
            name: "n3".into(),
            ..o.clone()
        }),
        "couldn't find local name \"n3\" in the initial cluster configuration"
    );
    assert_eq!(
        err(RestoreOptions {
            initial_advertise_peer_urls: "http://127.0.0.9:2380".into(),
            ..o.clone()
        }),
        "--initial-cluster has n2=http://127.0.0.2:2380 but missing from --initial-advertise-peer-urls=http://127.0.0.9:2380 (resolved urls: \"http://127.0.0.9:2380\" != \"http://127.0.0.2:2380\")"
    );
    assert_eq!(
        err(RestoreOptions {
            initial_cluster: "n2".into(),
            ..o.clone()
        }),
        "--initial-cluster: \"n2\" is not name=URL"
    );
    assert_eq!(
        err(RestoreOptions {
            initial_advertise_peer_urls: "127.0.0.2:2380".into(),
            ..o
        }),
        "--initial-advertise-peer-urls: \"127.0.0.2:2380\" is not a valid URL: expected scheme://host:port"
    );
}

#[test]
fn restore_builds_a_new_members_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("snap.db"), snapshot_file(dir.path())).expect("write");
    let o = RestoreOptions {
        wal_dir: Some(dir.path().join("n2-wal")),
        ..options(dir.path(), "n2")
    };
    let Restored {
        cluster_id,
        member_id,
        members,
        revision,
    } = restore(&o).expect("restore");

    let flags = parse_initial_cluster(CLUSTER).expect("cluster");
    let (mut want, want_cluster_id) = initial_members(&flags, "tok");
    want.sort_by_key(|m| m.id);
    assert_eq!(members, want, "every member, sorted by ID");
    assert_eq!(cluster_id, want_cluster_id);
    assert_eq!(
        Some(member_id),
        want.iter().find(|m| m.name == "n2").map(|m| m.id)
    );
    assert_eq!(revision, 2);

    let data_dir = dir.path().join("n2");
    {
        let store = Store::open(&layout::backend_path(&data_dir)).expect("restored backend");
        let got = store
            .range(b"a", b"", RangeOptions::default())
            .expect("range");
        assert_eq!(
            got.kvs.first().map(|kv| kv.value.clone()),
            Some(b"1".to_vec())
        );
        assert_eq!(store.consistent_index(), (1, 1));
        assert!(
            store.aux_load(AUX_MEMBERS).expect("aux").is_empty(),
            "old members dropped"
        );
    }
    assert!(!Wal::exists(&layout::member_dir(&data_dir).join("wal")));
    let (_, replay) = Wal::open(&dir.path().join("n2-wal")).expect("restored WAL");
    let meta: Option<WalMeta> = replay
        .meta
        .as_deref()
        .and_then(|m| serde_json::from_slice(m).ok());
    assert_eq!(
        meta,
        Some(WalMeta {
            member_id,
            cluster_id,
            name: "n2".into(),
        })
    );
    let (index, marker) = replay.snapshot.expect("snapshot record");
    let (term, cs) = decode_snapshot_meta(&marker).expect("marker");
    assert_eq!((index, term), (1, 1));
    assert_eq!(cs.voters, want.iter().map(|m| m.id).collect::<Vec<_>>());
    assert!(replay.entries.is_empty());
    assert_eq!(names_in(dir.path()), ["n2", "n2-wal", "snap.db", "src.db"]);
}

#[test]
fn a_failed_restore_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A well-formed file whose backend records are truncated: the restore fails after the
    // data dir has been started.
    std::fs::write(dir.path().join("snap.db"), encode_snapshot(b"\x00\x10\x00")).expect("write");
    let o = RestoreOptions {
        wal_dir: Some(dir.path().join("n1-wal")),
        ..options(dir.path(), "n1")
    };
    let e = restore(&o).err().unwrap_or_default();
    assert!(e.starts_with("cannot restore the backend: "), "{e}");
    assert_eq!(names_in(dir.path()), ["snap.db"]);
}

/// Maintenance.Hash reads the backend record by record: the hash is the one of the whole
/// body, and leaves the raft position out.
#[test]
fn the_streamed_backend_hash_is_the_bodys() {
    let dir = tempfile::tempdir().expect("tempdir");
    snapshot_file(dir.path());
    let store = Store::open(&dir.path().join("src.db")).expect("store");
    let (body, _, _) = store.snapshot().expect("snapshot");
    let view = store.read_view().expect("view");
    let streamed = oxcd_snapshot::backend_hash_of(&view).expect("hash");
    drop(view);
    assert_eq!(streamed, oxcd_snapshot::backend_hash(&body));
    let mut b = store.batch().expect("batch");
    b.set_consistent_index(7, 2).expect("consistent index");
    b.commit(true).expect("commit");
    let view = store.read_view().expect("view");
    assert_eq!(
        oxcd_snapshot::backend_hash_of(&view).expect("hash"),
        streamed
    );
}
