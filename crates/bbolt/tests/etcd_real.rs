//! Against the real etcd 3.4 (`/usr/bin/etcd`, `etcdctl`): a member on 127.0.0.211 gets a
//! history (puts, overwrites, deletes, a multi-key txn, a lease with keys, a big value, a
//! compaction, users and roles, auth enabled last); its `etcdctl snapshot save` file is read
//! with [`Db`] and must agree with what etcd answers (`get --rev`, `endpoint hashkv`,
//! `snapshot status`). Then every bucket is copied through [`DbWriter`] into a new snapshot
//! file, which `etcdctl snapshot restore` takes and a second etcd on 127.0.0.212 serves: it
//! must answer as the first one did. Every etcd started is killed by a drop guard.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use oxcd_bbolt::etcd::proto::{KeyValue, Lease, Role, User, PERM_READWRITE};
use oxcd_bbolt::etcd::{self, hash_kv_at, snapshot_status, store_revisions, RevisionKey};
use oxcd_bbolt::{snapshot, Db, DbWriter};
use serde_json::Value;

const CLIENT_PORT: u16 = 23790;
const PEER_PORT: u16 = 23800;
const ROOT: &str = "root:rootpw";
const HEALTH_WAIT_MAX: Duration = Duration::from_secs(30);
const COMMAND_WAIT_MAX: Duration = Duration::from_secs(60);

/// A running etcd, killed when dropped.
struct Etcd {
    child: Child,
    ip: &'static str,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Etcd {
    /// Starts etcd and waits until `endpoint health` (as `user`, once auth is on) passes.
    fn start(name: &str, ip: &'static str, dirs: (&Path, &Path), user: Option<&str>) -> Etcd {
        let (data_dir, log) = dirs;
        let client = format!("http://{ip}:{CLIENT_PORT}");
        let peer = format!("http://{ip}:{PEER_PORT}");
        let log_path = log.to_path_buf();
        let log = std::fs::File::create(log).expect("etcd log file");
        let child = Command::new("etcd")
            .args(["--name", name, "--data-dir"])
            .arg(data_dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("{name}={peer}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd (install etcd-server)");
        let etcd = Etcd { child, ip };
        let deadline = Instant::now() + HEALTH_WAIT_MAX;
        let user = user.map(|u| format!("--user={u}"));
        let health = [
            Some("endpoint"),
            Some("health"),
            Some("--command-timeout=1s"),
            user.as_deref(),
        ];
        let health: Vec<&str> = health.into_iter().flatten().collect();
        while !etcd.run(&health).status.success() {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail = &log[log.len().saturating_sub(3000)..];
                panic!("etcd on {ip} did not become healthy; its log ends:\n{tail}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        etcd
    }

    fn endpoint(&self) -> String {
        format!("--endpoints=http://{}:{CLIENT_PORT}", self.ip)
    }

    fn run(&self, args: &[&str]) -> Output {
        etcdctl(&[&[self.endpoint().as_str()], args].concat(), None)
    }

    /// `etcdctl` with the endpoint (and root's credentials when `auth`), which must succeed.
    fn ok(&self, args: &[&str]) -> String {
        ok_output(self.run(args), args)
    }

    fn ok_root(&self, args: &[&str]) -> String {
        let user = format!("--user={ROOT}");
        self.ok(&[&[user.as_str()], args].concat())
    }

    fn json_root(&self, args: &[&str]) -> Value {
        let out = self.ok_root(&[args, &["-w", "json"]].concat());
        serde_json::from_str(&out).expect("etcdctl json")
    }
}

/// Runs etcdctl (v3 API) with an optional stdin, bounded in time by its own timeouts.
fn etcdctl(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3").args(args);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run etcdctl (install etcd-client)");
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use std::io::Write as _;
        pipe.write_all(text.as_bytes()).expect("etcdctl stdin");
    }
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait etcdctl").is_some() {
            return child.wait_with_output().expect("etcdctl output");
        }
        if started.elapsed() > COMMAND_WAIT_MAX {
            let _ = child.kill();
            panic!("etcdctl {args:?} did not finish");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn ok_output(out: Output, args: &[&str]) -> String {
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// The history; returns the compaction revision and the lease ID.
fn write_history(e: &Etcd) -> (i64, i64) {
    for i in 0..40 {
        e.ok(&["put", &format!("k{i:02}"), &format!("v{i}")]);
    }
    for i in 0..10 {
        e.ok(&["put", &format!("k{i:02}"), &format!("again{i}")]);
    }
    e.ok(&["del", "k10"]);
    e.ok(&["del", "k2", "--prefix"]);
    let txn = "\nput t1 x\nput t2 y\ndel k30\n\n\n";
    let out = etcdctl(&[e.endpoint().as_str(), "txn"], Some(txn));
    ok_output(out, &["txn"]);
    let granted = e.ok(&["lease", "grant", "3600"]);
    let id_hex = granted.split_whitespace().nth(1).expect("lease id");
    let lease = i64::from_str_radix(id_hex, 16).expect("hex lease id");
    e.ok(&["put", "--lease", id_hex, "leased1", "a"]);
    e.ok(&["put", "--lease", id_hex, "leased2", "b"]);
    e.ok(&["put", "big", &"x".repeat(20_000)]);
    for batch in 0..3 {
        let ops: String = (0..100)
            .map(|i| format!("put bulk/{batch}/{i:03} value-{batch}-{i}\n"))
            .collect();
        let out = etcdctl(
            &[e.endpoint().as_str(), "txn"],
            Some(&format!("\n{ops}\n\n")),
        );
        ok_output(out, &["txn bulk"]);
    }
    let header = e.ok(&["get", "k00", "-w", "json"]);
    let compact_rev = serde_json::from_str::<Value>(&header).expect("json")["header"]["revision"]
        .as_i64()
        .expect("revision")
        - 3;
    e.ok(&["compact", &compact_rev.to_string()]);
    e.ok(&["put", "k31", "after-compaction"]);
    e.ok(&["put", "late", "1"]);
    e.ok(&["del", "k05"]);
    e.ok(&["user", "add", ROOT, "--interactive=false"]);
    e.ok(&["user", "grant-role", "root", "root"]);
    e.ok(&["role", "add", "r1"]);
    e.ok(&[
        "role",
        "grant-permission",
        "r1",
        "readwrite",
        "k",
        "--prefix=true",
    ]);
    e.ok(&["user", "add", "u1:u1pw", "--interactive=false"]);
    e.ok(&["user", "grant-role", "u1", "r1"]);
    e.ok(&["auth", "enable"]);
    (compact_rev, lease)
}

/// One key as `etcdctl get -w json` prints it (zero fields left out, bytes in base64).
fn kv_json(kv: &KeyValue) -> Value {
    let b64 = |b: &[u8]| Value::from(base64::engine::general_purpose::STANDARD.encode(b));
    let mut m = serde_json::Map::new();
    m.insert("key".into(), b64(&kv.key));
    for (name, v) in [
        ("create_revision", kv.create_revision),
        ("mod_revision", kv.mod_revision),
        ("version", kv.version),
    ] {
        m.insert(name.into(), Value::from(v));
    }
    if !kv.value.is_empty() {
        m.insert("value".into(), b64(&kv.value));
    }
    if kv.lease != 0 {
        m.insert("lease".into(), Value::from(kv.lease));
    }
    Value::Object(m)
}

/// Every live key at `rev`, rebuilt from the `key` bucket, as etcd's JSON.
fn state_at(db: &Db, rev: i64) -> Vec<Value> {
    let mut live: BTreeMap<Vec<u8>, Option<KeyValue>> = BTreeMap::new();
    let bucket = db.must_bucket(etcd::KEY_BUCKET).expect("key bucket");
    let mut cursor = bucket.cursor();
    while let Some(e) = cursor.next_entry().expect("entry") {
        let rk = RevisionKey::decode(e.key).expect("revision key");
        if rk.rev.main > rev {
            break;
        }
        let kv = KeyValue::decode(e.value).expect("KeyValue");
        let key = kv.key.clone();
        live.insert(key, (!rk.tombstone).then_some(kv));
    }
    live.values().flatten().map(kv_json).collect()
}

fn etcd_state_at(e: &Etcd, rev: i64) -> Vec<Value> {
    let answer = e.json_root(&["get", "", "--prefix", &format!("--rev={rev}")]);
    answer["kvs"].as_array().cloned().unwrap_or_default()
}

/// etcd's hashkv at `rev` (0: the current revision): (hash, compact revision).
fn etcd_hashkv(e: &Etcd, rev: i64) -> (u32, i64) {
    let answer = e.json_root(&["endpoint", "hashkv", &format!("--rev={rev}")]);
    let h = &answer[0]["HashKV"];
    let hash = h["hash"].as_u64().expect("hash") as u32;
    (hash, h["compact_revision"].as_i64().unwrap_or(0))
}

fn etcdctl_status(path: &Path) -> Value {
    let out = etcdctl(
        &["snapshot", "status", "-w", "json", &path.to_string_lossy()],
        None,
    );
    serde_json::from_str(&ok_output(out, &["snapshot status"])).expect("status json")
}

fn check_auth_and_leases(db: &Db, lease: i64) {
    let auth = db.must_bucket(etcd::AUTH_BUCKET).expect("auth");
    assert_eq!(
        auth.get(etcd::AUTH_ENABLED_KEY).expect("get"),
        Some(etcd::AUTH_ENABLED.to_vec())
    );
    let users = db.must_bucket(etcd::AUTH_USERS_BUCKET).expect("authUsers");
    let u1 = users.get(b"u1").expect("get").expect("user u1 stored");
    let u1 = User::decode(&u1).expect("authpb.User");
    assert_eq!(u1.roles, vec!["r1".to_string()]);
    assert!(u1.password.starts_with(b"$2a$"), "bcrypt hash");
    assert_eq!(User::decode(&u1.encode()), Ok(u1.clone()));
    let root = users.get(b"root").expect("get").expect("user root stored");
    let root_user = User::decode(&root).expect("authpb.User");
    assert_eq!(root_user.roles, vec!["root".to_string()]);
    assert_eq!(root_user.encode(), root, "re-encoding gives etcd's bytes");
    let roles = db.must_bucket(etcd::AUTH_ROLES_BUCKET).expect("authRoles");
    let r1_bytes = roles.get(b"r1").expect("get").expect("role r1 stored");
    let r1 = Role::decode(&r1_bytes).expect("authpb.Role");
    assert_eq!(r1.key_permission.len(), 1);
    assert_eq!(r1.key_permission[0].perm_type, PERM_READWRITE);
    assert_eq!(r1.key_permission[0].key, b"k".to_vec());
    assert_eq!(r1.key_permission[0].range_end, b"l".to_vec());
    assert_eq!(r1.encode(), r1_bytes);
    let leases = db.must_bucket(etcd::LEASE_BUCKET).expect("lease");
    let stored = leases
        .get(&etcd::lease_key(lease))
        .expect("get")
        .expect("lease stored");
    let l = Lease::decode(&stored).expect("leasepb.Lease");
    assert_eq!((l.id, l.ttl), (lease, 3600));
    assert_eq!(l.encode(), stored);
}

/// Copies every bucket of `db` through the writer into a new snapshot file.
fn rewrite(db: &Db, path: &Path) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .expect("create rewrite");
    let mut w = DbWriter::new(file).expect("writer");
    for name in db.bucket_names().expect("names") {
        w.begin_bucket(&name).expect("begin");
        let bucket = db.must_bucket(&name).expect("bucket");
        let mut cursor = bucket.cursor();
        while let Some(e) = cursor.next_entry().expect("entry") {
            w.put(e.key, e.value).expect("put");
        }
    }
    let (file, _) = w.finish_snapshot().expect("finish");
    file.sync_all().expect("sync");
}

fn restore(snapshot: &Path, data_dir: &Path, ip: &str) {
    let peer = format!("http://{ip}:{PEER_PORT}");
    let args = [
        "snapshot",
        "restore",
        &snapshot.to_string_lossy(),
        "--data-dir",
        &data_dir.to_string_lossy(),
        "--name",
        "b",
        "--initial-cluster",
        &format!("b={peer}"),
        "--initial-advertise-peer-urls",
        &peer,
    ]
    .map(String::from);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok_output(etcdctl(&args, None), &args);
}

#[test]
fn etcd_snapshot_reads_hashes_and_round_trips_through_restore() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a_dir, a_log) = (dir.path().join("a"), dir.path().join("a.log"));
    let a = Etcd::start("a", "127.0.0.211", (&a_dir, &a_log), None);
    let (compact_rev, lease) = write_history(&a);
    let current = a.json_root(&["get", "k00"])["header"]["revision"]
        .as_i64()
        .expect("revision");
    let revs = [compact_rev + 1, compact_rev + 2, current - 2, current];
    let expected: Vec<Vec<Value>> = revs.iter().map(|&r| etcd_state_at(&a, r)).collect();
    let (hash, hash_compact) = etcd_hashkv(&a, 0);
    let (older_hash, _) = etcd_hashkv(&a, current - 2);
    let snap: PathBuf = dir.path().join("etcd.snap");
    a.ok_root(&["snapshot", "save", &snap.to_string_lossy()]);

    // etcd's own snapshot, through our reader
    assert!(matches!(
        snapshot::verify_hash(&snap).expect("verify"),
        snapshot::Trailer::Verified { .. }
    ));
    let db = Db::open(&snap).expect("open etcd snapshot");
    assert!(db.has_hash_trailer());
    for (rev, want) in revs.iter().zip(&expected) {
        assert_eq!(&state_at(&db, *rev), want, "state at revision {rev}");
    }
    let ours = hash_kv_at(&db, 0).expect("hash_kv");
    assert_eq!((ours.hash, ours.compact_revision), (hash, hash_compact));
    assert_eq!(hash_compact, compact_rev);
    assert_eq!(
        hash_kv_at(&db, current - 2).expect("hash_kv").hash,
        older_hash
    );
    assert_ne!(older_hash, hash, "an older revision hashes differently");
    let stored = store_revisions(&db).expect("revisions");
    assert_eq!(
        (stored.current, stored.finished_compact),
        (current, compact_rev)
    );
    check_auth_and_leases(&db, lease);
    let theirs = etcdctl_status(&snap);
    let status = snapshot_status(&db).expect("status");
    assert_eq!(theirs["hash"].as_u64(), Some(u64::from(status.hash)));
    assert_eq!(theirs["revision"].as_i64(), Some(status.revision));
    assert_eq!(theirs["totalKey"].as_u64(), Some(status.total_key));
    assert_eq!(theirs["totalSize"].as_u64(), Some(status.total_size));

    // through our writer, then etcdctl snapshot restore, then a real etcd serving it
    let copy = dir.path().join("rewritten.snap");
    rewrite(&db, &copy);
    let copied = etcdctl_status(&copy);
    for field in ["hash", "revision", "totalKey"] {
        assert_eq!(copied[field], theirs[field], "snapshot status {field}");
    }
    let restored = dir.path().join("b");
    restore(&copy, &restored, "127.0.0.212");
    let b_log = dir.path().join("b.log");
    let b = Etcd::start("b", "127.0.0.212", (&restored, &b_log), Some(ROOT));
    for (rev, want) in revs.iter().zip(&expected) {
        assert_eq!(&etcd_state_at(&b, *rev), want, "restored state at {rev}");
    }
    assert_eq!(etcd_hashkv(&b, 0), (hash, hash_compact));
    assert_eq!(b.ok_root(&["user", "list"]), a.ok_root(&["user", "list"]));
    assert_eq!(
        b.ok_root(&["role", "get", "r1"]),
        a.ok_root(&["role", "get", "r1"])
    );
    let leases = b.json_root(&["lease", "list"]);
    assert_eq!(leases["leases"][0]["id"].as_i64(), Some(lease));
    let denied = b.run(&["get", "k00"]);
    assert!(!denied.status.success(), "auth stays enabled after restore");
    b.ok_root(&["put", "after-restore", "ok"]);
    assert_eq!(
        b.ok_root(&["get", "after-restore", "--print-value-only"]),
        "ok\n"
    );
}
