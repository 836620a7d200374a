//! A snapshot saved from a running oxcd cluster (with the real etcdctl) restores into the
//! data dirs of a NEW 3-member cluster (`oxctl snapshot restore`'s code), which starts and
//! serves the same keys, revisions, leases, compaction point and HashKV, and takes writes.
//! Bad snapshot files are refused without leaving anything behind.

use std::path::Path;
use std::time::{Duration, Instant};

use oxcd_snapshot::{restore, RestoreOptions};
use oxcd_testkit::text::mask_json_number;
use oxcd_testkit::{require, Cluster, Impl, Output};

/// The real etcdctl against member `i`.
fn ctl(c: &Cluster, i: usize, args: &[&str]) -> Output {
    c.etcdctl(i, args, b"")
}

/// `etcdctl get "" --from-key -w json` with the per-member header fields masked.
fn all_keys_json(c: &Cluster, i: usize) -> String {
    let out = ctl(c, i, &["get", "", "--from-key", "-w", "json"])
        .ok()
        .stdout;
    let out = mask_json_number(&out, "cluster_id");
    let out = mask_json_number(&out, "member_id");
    mask_json_number(&out, "raft_term")
}

/// The HashKV each member reports, in member order.
fn hashes(c: &Cluster) -> Vec<String> {
    (0..c.len())
        .map(|i| {
            let out = ctl(c, i, &["endpoint", "hashkv"]).ok().stdout;
            out.trim()
                .rsplit(", ")
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

fn options(c: &Cluster, i: usize, snapshot: &Path) -> RestoreOptions {
    RestoreOptions {
        snapshot: snapshot.to_path_buf(),
        data_dir: Some(c.data_dir(i).to_path_buf()),
        name: c.name(i).to_string(),
        initial_cluster: c.initial_cluster(),
        initial_cluster_token: c.token().to_string(),
        initial_advertise_peer_urls: c.peer_url(i),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_restores_into_a_new_cluster_with_the_same_data() {
    require("etcdctl");
    let old = Cluster::builder(Impl::Oxcd)
        .members(3)
        .flags(["--snapshot-count=100"])
        .start();
    old.wait_writable(0, Duration::from_secs(20)).await;
    old.write_keys("k/", 250).await;
    ctl(&old, 0, &["del", "k/000010"]).ok();
    let grant = ctl(&old, 0, &["lease", "grant", "3600"]).ok().stdout;
    let lease = grant
        .split_whitespace()
        .nth(1)
        .expect("lease id in grant output")
        .to_string();
    ctl(
        &old,
        0,
        &["put", "leased", "v", &format!("--lease={lease}")],
    )
    .ok();
    let rev = old.wait_same_revision();
    ctl(&old, 0, &["compaction", &(rev - 100).to_string()]).ok();
    ctl(&old, 1, &["put", "last", "write"]).ok();
    old.wait_same_revision();
    let want_keys = all_keys_json(&old, 0);
    let want_hash = hashes(&old);
    assert!(
        want_hash
            .iter()
            .all(|h| *h == want_hash[0] && !h.is_empty()),
        "old cluster members disagree: {want_hash:?}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let snap = dir.path().join("snap.db");
    let snap_s = snap.display().to_string();
    ctl(&old, 2, &["snapshot", "save", &snap_s]).ok();
    // The new cluster's addresses are reserved while the old ones still are: they differ.
    let new = Cluster::builder(Impl::Oxcd).members(3).build();
    let old_ip = format!("{}:", old.ip(0));
    drop(old);

    for i in 0..3 {
        let r = restore(&options(&new, i, &snap)).expect("restore");
        assert_eq!(r.members.len(), 3);
        assert!(r.members.windows(2).all(|w| w[0].id < w[1].id));
    }
    new.spawn_all();
    let deadline = Instant::now() + Duration::from_secs(20);
    while new.leader().await.is_none() {
        assert!(
            Instant::now() < deadline,
            "restored cluster elected no leader"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    new.wait_same_revision();
    for i in 0..3 {
        assert_eq!(all_keys_json(&new, i), want_keys, "member {i} differs");
    }
    assert_eq!(hashes(&new), want_hash);
    let ttl = ctl(&new, 0, &["lease", "timetolive", &lease, "--keys"])
        .ok()
        .stdout;
    assert!(ttl.contains("attached keys([leased])"), "{ttl}");
    let compacted = ctl(&new, 0, &["get", "k/", "--rev", &(rev - 101).to_string()]);
    assert!(
        compacted
            .stderr
            .contains("required revision has been compacted"),
        "{compacted:?}"
    );
    let members = ctl(&new, 0, &["member", "list"]).ok().stdout;
    assert_eq!(members.lines().count(), 3, "{members}");
    assert!(
        members.contains(&format!("{}:2380", new.ip(0))) && !members.contains(&old_ip),
        "{members}"
    );
    ctl(&new, 1, &["put", "after", "restore"]).ok();
    let got = ctl(&new, 2, &["get", "after", "--print-value-only"]).ok();
    assert_eq!(got.stdout, "restore\n");

    // The same file again into an existing data dir: refused, as etcdctl does.
    let e = restore(&options(&new, 0, &snap)).err();
    assert_eq!(
        e,
        Some(format!(
            "data-dir {:?} exists",
            new.data_dir(0).display().to_string()
        ))
    );
}

#[test]
fn damaged_or_foreign_snapshots_are_refused_and_leave_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store_dir = dir.path().join("src");
    std::fs::create_dir_all(&store_dir).expect("mkdir");
    let body = {
        let store = oxcd_storage::Store::open(&store_dir.join("oxcd.db")).expect("store");
        let mut b = store.batch().expect("batch");
        {
            let mut t = b.txn();
            t.put(b"a", b"1".to_vec(), 0).expect("put");
            t.end();
        }
        b.commit(true).expect("commit");
        store.snapshot().expect("snapshot").0
    };
    let file = oxcd_snapshot::encode_snapshot(&body);
    let opts = |name: &str, snapshot: &Path, skip: bool| RestoreOptions {
        snapshot: snapshot.to_path_buf(),
        data_dir: Some(dir.path().join(name)),
        skip_hash_check: skip,
        ..Default::default()
    };
    let leftovers = || -> Vec<String> {
        std::fs::read_dir(dir.path())
            .expect("ls")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "src" && !n.ends_with(".db") && !n.starts_with("ok"))
            .collect()
    };

    let mut damaged = file.clone();
    damaged[40] ^= 0xff;
    let path = dir.path().join("damaged.db");
    std::fs::write(&path, &damaged).expect("write");
    let e = restore(&opts("d1", &path, false)).err().unwrap_or_default();
    assert!(e.starts_with("expected sha256 ["), "{e}");
    assert_eq!(leftovers(), Vec::<String>::new());

    let path = dir.path().join("short.db");
    std::fs::write(&path, &file[..file.len() - 40]).expect("write");
    let e = restore(&opts("d2", &path, false)).err().unwrap_or_default();
    assert_eq!(e, "snapshot missing hash but --skip-hash-check=false");
    let path = dir.path().join("truncated.db");
    std::fs::write(&path, &file[..24]).expect("write");
    let e = restore(&opts("d2", &path, true)).err().unwrap_or_default();
    assert!(e.contains("shorter than its header says"), "{e}");
    assert_eq!(leftovers(), Vec::<String>::new());

    let e = restore(&opts("d3", &dir.path().join("missing.db"), false))
        .err()
        .unwrap_or_default();
    assert!(e.ends_with("missing.db: no such file or directory"), "{e}");

    // The backend file itself, copied out of a data dir, with --skip-hash-check (as etcd
    // allows for its db file); without it, the missing hash is named.
    let db = store_dir.join("oxcd.db");
    let e = restore(&opts("d4", &db, false)).err().unwrap_or_default();
    assert_eq!(e, "snapshot missing hash but --skip-hash-check=false");
    let r = restore(&opts("ok-from-db", &db, true)).expect("restore from backend file");
    assert_eq!(r.revision, 2);
    let good = dir.path().join("good.db");
    std::fs::write(&good, &file).expect("write");
    let r = restore(&opts("ok-from-snapshot", &good, false)).expect("restore");
    assert_eq!(r.revision, 2);
    assert_eq!(leftovers(), Vec::<String>::new());
}
