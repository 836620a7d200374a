//! etcd's snapshots both ways, against the real etcd 3.4 and etcdctl (issue 14):
//!
//! 1. A history on etcd (puts, overwrites, deletes, multi-key txns, a lease with keys, a
//!    compaction, users and roles, auth on) is saved with `etcdctl snapshot save`;
//!    `oxctl snapshot status` reads the file as `etcdctl snapshot status` does; damaged,
//!    truncated and random files are refused by `oxctl snapshot restore` with one clear
//!    line, leaving nothing; the file restored with `oxctl snapshot restore` into a new
//!    3-member oxcd cluster serves every key as etcd does (`get -w json`, every field) at
//!    the current revision and at a past one after the compaction, the lease with its TTL
//!    and keys, the users' passwords, and `endpoint hashkv` equal to etcd's.
//! 2. Back: oxcd's `Maintenance.Snapshot` (saved with the real etcdctl, after writes made
//!    on oxcd) gives the same `snapshot status` with etcdctl and oxctl; the real `etcdctl
//!    snapshot restore` makes a data dir the real etcd starts from and serves the same.
//!
//! 3. The same history written live on etcd and on oxcd gives the same HashKV at every
//!    revision, across compactions, and the same keys.
//!
//! 1 and 2 share one etcd, one oxcd cluster and one etcd made from oxcd's snapshot.

use std::path::Path;

use oxcd_testkit::text::mask_json_number;
use oxcd_testkit::{etcdctl, require, run, Cluster, Impl, Output};
use serde_json::Value;

const ROOT: &str = "--user=root:rootpw";

/// `ctl` (etcdctl or oxctl) with root's credentials against member `i`.
fn root(c: &Cluster, i: usize, args: &[&str]) -> Output {
    c.etcdctl(i, &[&[ROOT], args].concat(), b"")
}

/// etcd's history; returns (compact revision, a revision after it with history, lease ID).
fn write_history(e: &Cluster) -> (i64, i64, String) {
    let ctl = |args: &[&str]| e.etcdctl(0, args, b"").ok();
    for i in 0..30 {
        ctl(&["put", &format!("k{i:02}"), &format!("v{i}")]);
    }
    for i in 0..8 {
        ctl(&["put", &format!("k{i:02}"), &format!("again{i}")]);
    }
    ctl(&["del", "k10"]);
    ctl(&["del", "k2", "--prefix"]);
    e.etcdctl(0, &["txn"], b"\nput t1 x\nput t2 y\ndel k03\n\n\n")
        .ok();
    let grant = ctl(&["lease", "grant", "3600"]).stdout;
    let lease = grant
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    ctl(&["put", "--lease", &lease, "leased1", "a"]);
    ctl(&["put", "--lease", &lease, "leased2", "b"]);
    let ops: String = (0..50)
        .map(|i| format!("put bulk/{i:03} value-{i}\n"))
        .collect();
    e.etcdctl(0, &["txn"], format!("\n{ops}\n\n").as_bytes())
        .ok();
    let compact_rev = revision(e, 0, &[]) - 5;
    ctl(&["compact", &compact_rev.to_string()]);
    ctl(&["put", "k01", "after-compaction"]);
    ctl(&["del", "k05"]);
    let past = revision(e, 0, &[]);
    ctl(&["put", "k06", "latest"]);
    ctl(&["user", "add", "root:rootpw", "--interactive=false"]);
    ctl(&["user", "grant-role", "root", "root"]);
    ctl(&["role", "add", "r1"]);
    ctl(&[
        "role",
        "grant-permission",
        "r1",
        "readwrite",
        "k",
        "--prefix=true",
    ]);
    ctl(&["user", "add", "u1:u1pw", "--interactive=false"]);
    ctl(&["user", "grant-role", "u1", "r1"]);
    ctl(&["auth", "enable"]);
    (compact_rev, past, lease)
}

/// Member `i`'s current revision (`auth`: extra flags such as the user).
fn revision(c: &Cluster, i: usize, auth: &[&str]) -> i64 {
    let out = c
        .etcdctl(i, &[auth, &["get", "x", "-w", "json"]].concat(), b"")
        .ok();
    let v: Value = serde_json::from_str(&out.stdout).expect("json");
    v["header"]["revision"].as_i64().expect("revision")
}

/// Every key at `rev` (0: current) as `get -w json` prints it, the member's IDs masked.
fn keys_json(c: &Cluster, i: usize, rev: i64) -> String {
    let rev = format!("--rev={rev}");
    let out = root(c, i, &["get", "", "--from-key", &rev, "-w", "json"]).ok();
    let out = mask_json_number(&out.stdout, "cluster_id");
    let out = mask_json_number(&out, "member_id");
    mask_json_number(&out, "raft_term")
}

/// `endpoint hashkv`: (hash, compact revision, revision).
fn hashkv(c: &Cluster, i: usize) -> (u64, i64, i64) {
    let out = root(c, i, &["endpoint", "hashkv", "-w", "json"]).ok();
    let v: Value = serde_json::from_str(&out.stdout).expect("json");
    let h = &v[0]["HashKV"];
    (
        h["hash"].as_u64().expect("hash"),
        h["compact_revision"].as_i64().unwrap_or(0),
        h["header"]["revision"].as_i64().expect("revision"),
    )
}

/// `lease timetolive --keys` with the remaining seconds masked; checks they are at most
/// the granted TTL.
fn lease_json(c: &Cluster, i: usize, lease: &str) -> String {
    let out = root(
        c,
        i,
        &["lease", "timetolive", lease, "--keys", "-w", "json"],
    )
    .ok();
    let v: Value = serde_json::from_str(&out.stdout).expect("json");
    let (ttl, granted) = (v["ttl"].as_i64(), v["granted-ttl"].as_i64());
    assert!(
        ttl.is_some_and(|t| t > 0 && Some(t) <= granted),
        "lease {lease}: {v}"
    );
    // etcd lists a lease's keys from a Go map, in no fixed order.
    let mut keys: Vec<String> = v["keys"]
        .as_array()
        .map(|a| a.iter().map(|k| k.to_string()).collect())
        .unwrap_or_default();
    keys.sort();
    format!("granted {granted:?} keys {keys:?}")
}

/// Everything a client sees, for comparing two servers holding the same history.
fn served(c: &Cluster, i: usize, past: i64, lease: &str) -> Vec<String> {
    let u1 = c.etcdctl(
        i,
        &["--user=u1:u1pw", "get", "k", "--prefix", "--keys-only"],
        b"",
    );
    let wrong = c.etcdctl(i, &["--user=u1:nope", "get", "k01"], b"");
    let (hash, compact, rev) = hashkv(c, i);
    vec![
        keys_json(c, i, 0),
        keys_json(c, i, past),
        lease_json(c, i, lease),
        u1.ok().stdout,
        wrong.failed().last_stderr_line().to_string(),
        format!("hashkv {hash} compacted at {compact}, revision {rev}"),
    ]
}

/// Each part of what `served` returned, compared on its own so that a failure names it.
fn same_as(got: &[String], want: &[String], who: &str) {
    const PARTS: [&str; 6] = [
        "keys now",
        "keys at the past revision",
        "lease",
        "u1's keys",
        "a wrong password's error",
        "hashkv",
    ];
    assert_eq!(got.len(), want.len());
    for ((part, g), w) in PARTS.iter().zip(got).zip(want) {
        assert_eq!(g, w, "{who}: {part} differs from etcd's");
    }
}

/// `snapshot status -w json` of `file` by `tool` (etcdctl or oxctl).
fn status(tool: &Path, file: &Path) -> String {
    let mut cmd = std::process::Command::new(tool);
    cmd.env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "-w", "json"])
        .arg(file);
    run(&mut cmd, b"").ok().stdout
}

fn oxctl_restore(file: &Path, args: &[String]) -> Output {
    let mut cmd = std::process::Command::new(oxcd_testkit::process::bin("oxctl"));
    cmd.args(["snapshot", "restore"]).arg(file).args(args);
    run(&mut cmd, b"")
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

/// Damaged, truncated and random files: one `Error:` line, nothing left behind.
fn bad_files_are_refused(good: &Path, dir: &Path) {
    let bytes = std::fs::read(good).expect("read");
    let bad = dir.join("bad");
    std::fs::create_dir_all(&bad).expect("mkdir");
    // Every page's header past the two meta pages: whichever pages this history's file
    // uses (the layout varies from run to run, and a free page may hold nothing), the
    // restore meets a damaged one.
    let mut damaged = bytes.clone();
    let data_bytes = bytes.len() - 32; // less the trailing SHA-256
    for page in (2 * 4096..data_bytes).step_by(4096) {
        damaged[page..page + 16].fill(0x5a);
    }
    let random: Vec<u8> = (0..40_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let cases: Vec<(&str, Vec<u8>, bool, &str)> = vec![
        (
            "damaged.db",
            damaged.clone(),
            false,
            "Error: expected sha256 [",
        ),
        ("damaged.db", damaged, true, "is damaged"),
        (
            "cut.db",
            bytes[..bytes.len() / 2 + 100].to_vec(),
            false,
            "Error: snapshot missing hash",
        ),
        (
            "cut.db",
            bytes[..bytes.len() / 2 + 100].to_vec(),
            true,
            "the file is truncated",
        ),
        ("random.db", random, false, "is not a snapshot"),
    ];
    for (name, content, skip, want) in cases {
        let file = bad.join(name);
        std::fs::write(&file, content).expect("write");
        let mut args = vec![format!("--data-dir={}", bad.join("restored").display())];
        if skip {
            args.push("--skip-hash-check".into());
        }
        let out = oxctl_restore(&file, &args).failed();
        assert!(
            out.last_stderr_line().starts_with("Error: ") && out.stderr.contains(want),
            "{name} (skip-hash-check {skip}): {}",
            out.stderr
        );
        assert_eq!(names_in(&bad), [name], "{name} left something behind");
        std::fs::remove_file(&file).expect("rm");
    }
}

/// Restores `file` into every member of the (not started) oxcd cluster `c` with oxctl.
fn restore_into_oxcd(c: &Cluster, file: &Path) {
    for i in 0..c.len() {
        let args = vec![
            format!("--name={}", c.name(i)),
            format!("--data-dir={}", c.data_dir(i).display()),
            format!("--initial-cluster={}", c.initial_cluster()),
            format!("--initial-cluster-token={}", c.token()),
            format!("--initial-advertise-peer-urls={}", c.peer_url(i)),
        ];
        oxctl_restore(file, &args).ok();
    }
}

/// Restores `file` into the (not started) one-member etcd cluster `c` with the real etcdctl.
fn restore_into_etcd(c: &Cluster, file: &Path) {
    let file = file.display().to_string();
    let args = [
        "snapshot".to_string(),
        "restore".into(),
        file,
        format!("--name={}", c.name(0)),
        format!("--data-dir={}", c.data_dir(0).display()),
        format!("--initial-cluster={}", c.initial_cluster()),
        format!("--initial-cluster-token={}", c.token()),
        format!("--initial-advertise-peer-urls={}", c.peer_url(0)),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    etcdctl("127.0.0.1:1", None, &args, b"").ok();
}

#[test]
fn etcd_snapshots_restore_into_oxcd_and_oxcd_snapshots_into_etcd() {
    let etcdctl_bin = require("etcdctl");
    let oxctl_bin = oxcd_testkit::process::bin("oxctl");
    let etcd = Cluster::builder(Impl::Etcd).start();
    let (compact_rev, past, lease) = write_history(&etcd);
    assert!(past > compact_rev);
    let dir = tempfile::tempdir().expect("tempdir");
    let from_etcd = dir.path().join("from-etcd.db");
    root(
        &etcd,
        0,
        &["snapshot", "save", &from_etcd.display().to_string()],
    )
    .ok();
    assert_eq!(
        status(&oxctl_bin, &from_etcd),
        status(&etcdctl_bin, &from_etcd)
    );
    bad_files_are_refused(&from_etcd, dir.path());

    let ox = Cluster::builder(Impl::Oxcd).members(3).build();
    restore_into_oxcd(&ox, &from_etcd);
    ox.start_all();
    ox.wait_same_revision_as(ROOT);
    let want = served(&etcd, 0, past, &lease);
    for i in 0..3 {
        same_as(
            &served(&ox, i, past, &lease),
            &want,
            &format!("oxcd member {i}"),
        );
    }
    let (_, compacted, _) = hashkv(&ox, 0);
    assert_eq!(compacted, compact_rev);

    // Back: writes made on oxcd, oxcd's snapshot into a real etcd.
    root(&ox, 1, &["put", "k07", "written-on-oxcd"]).ok();
    root(&ox, 2, &["del", "t1"]).ok();
    let ox_rev = ox.wait_same_revision_as(ROOT);
    let from_oxcd = dir.path().join("from-oxcd.db");
    root(
        &ox,
        0,
        &["snapshot", "save", &from_oxcd.display().to_string()],
    )
    .ok();
    let st = status(&etcdctl_bin, &from_oxcd);
    assert_eq!(status(&oxctl_bin, &from_oxcd), st);
    let st: Value = serde_json::from_str(&st).expect("status json");
    assert_eq!(st["revision"].as_i64(), Some(ox_rev), "{st}");
    let etcd2 = Cluster::builder(Impl::Etcd)
        .names(&["back"])
        .token("back-from-oxcd")
        .build();
    restore_into_etcd(&etcd2, &from_oxcd);
    etcd2.start_all();
    same_as(
        &served(&etcd2, 0, past, &lease),
        &served(&ox, 0, past, &lease),
        "etcd restored from oxcd's snapshot",
    );
}

/// Waits until every member is at the same revision (read as root); returns it.
trait SameRevision {
    fn wait_same_revision_as(&self, user: &str) -> i64;
}

impl SameRevision for Cluster {
    fn wait_same_revision_as(&self, user: &str) -> i64 {
        let mut revs = Vec::new();
        oxcd_testkit::wait_until(
            "the members to agree on a revision",
            std::time::Duration::from_secs(20),
            || {
                revs = (0..self.len())
                    .map(|i| revision(self, i, &[user, "--consistency=s"]))
                    .collect();
                revs.iter().all(|r| *r == revs[0])
            },
        );
        revs[0]
    }
}

/// The same history written live on etcd and on oxcd (the lease granted with the same ID)
/// leaves the same `key` bucket bytes: HashKV is equal at every revision asked, before and
/// after compactions (one at a deleted key's tombstone), and every key's fields too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_written_live_hashes_as_etcds() {
    use oxcd_api::etcdserverpb::LeaseGrantRequest;
    let etcd = Cluster::builder(Impl::Etcd).start();
    let ox = Cluster::builder(Impl::Oxcd).start();
    let mut revs = Vec::new();
    for c in [&etcd, &ox] {
        let client = c.client(0).await.expect("client");
        let grant = LeaseGrantRequest {
            ttl: 600,
            id: 0x7e57,
        };
        client
            .lease()
            .lease_grant(grant)
            .await
            .expect("lease grant");
        let ctl = |args: &[&str]| c.etcdctl(0, args, b"").ok();
        for i in 0..20 {
            ctl(&["put", &format!("k{i}"), &format!("v{i}")]);
        }
        ctl(&["put", "k3", "again", "--lease=7e57"]);
        ctl(&["del", "k4"]);
        let tomb = revision(c, 0, &[]);
        ctl(&["del", "k1", "--prefix"]);
        c.etcdctl(
            0,
            &["txn"],
            b"\nput t1 x\nput t2 y\ndel k5\n\nput nope 1\n\n",
        )
        .ok();
        ctl(&["put", "k10", "back"]);
        ctl(&["compact", &tomb.to_string()]);
        ctl(&["put", "k6", "after"]);
        ctl(&["del", "k7"]);
        ctl(&["put", "k7", "again"]);
        let mid = revision(c, 0, &[]);
        ctl(&["compact", &(mid - 1).to_string()]);
        ctl(&["put", "zz", "last"]);
        revs.push(mid);
    }
    assert_eq!(revs[0], revs[1], "the histories differ in length");
    let mid = revs[0];
    let seen = |c: &Cluster| {
        let mut out = vec![keys_json_plain(c, 0), keys_json_plain(c, mid)];
        for rev in [0, mid, mid + 1] {
            let args = ["endpoint", "hashkv", "-w", "json", &format!("--rev={rev}")];
            let v: Value =
                serde_json::from_str(&c.etcdctl(0, &args, b"").ok().stdout).expect("json");
            out.push(format!(
                "{} {}",
                v[0]["HashKV"]["hash"], v[0]["HashKV"]["compact_revision"]
            ));
        }
        let compacted = c.etcdctl(
            0,
            &["endpoint", "hashkv", &format!("--rev={}", mid - 1)],
            b"",
        );
        out.push(compacted.failed().last_stderr_line().to_string());
        out
    };
    assert_eq!(seen(&ox), seen(&etcd));
}

/// Every key at `rev` (0: current) without auth, the member's IDs masked.
fn keys_json_plain(c: &Cluster, rev: i64) -> String {
    let rev = format!("--rev={rev}");
    let out = c
        .etcdctl(0, &["get", "", "--from-key", &rev, "-w", "json"], b"")
        .ok();
    let out = mask_json_number(&out.stdout, "cluster_id");
    let out = mask_json_number(&out, "member_id");
    mask_json_number(&out, "raft_term")
}
