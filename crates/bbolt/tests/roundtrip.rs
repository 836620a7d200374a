//! The writer against the reader and against the real bbolt (through `etcdctl snapshot
//! status`, which opens the file with bbolt and runs its `tx.Check`): a model of sorted
//! buckets is written, read back, and must come out the same.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::process::Command;

use oxcd_bbolt::etcd::{snapshot_status, Revision};
use oxcd_bbolt::{snapshot, Db, DbWriter, WriteError};

type Model = BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>>;

/// xorshift64: deterministic data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Empty, inline, multi-level, overflow and long-key buckets, plus an etcd-like `key` bucket.
fn model() -> Model {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut m = Model::new();
    m.insert(b"alarm".to_vec(), BTreeMap::new());
    m.insert(
        b"auth".to_vec(),
        BTreeMap::from([(b"authEnabled".to_vec(), vec![1])]),
    );
    let mut many = BTreeMap::new();
    for i in 0..20_000u32 {
        let len = (rng.next() % 200) as usize;
        many.insert(format!("k{i:08}").into_bytes(), rng.bytes(len));
    }
    m.insert(b"many".to_vec(), many);
    let mut big = BTreeMap::new();
    for (i, len) in [5_000usize, 4_080, 70_000, 1, 300_000]
        .into_iter()
        .enumerate()
    {
        big.insert(vec![b'b', i as u8], rng.bytes(len));
    }
    m.insert(b"big".to_vec(), big);
    let mut long = BTreeMap::new();
    for i in 0..200u32 {
        let mut key = format!("{i:05}").into_bytes();
        key.extend(rng.bytes(1500 + (i as usize % 7) * 100));
        long.insert(key, rng.bytes(10));
    }
    m.insert(b"longkeys".to_vec(), long);
    let mut keys = BTreeMap::new();
    for main in 2..3000i64 {
        keys.insert(Revision::new(main, 0).to_bytes().to_vec(), rng.bytes(40));
    }
    m.insert(b"key".to_vec(), keys);
    m
}

fn write_model<W>(w: &mut DbWriter<W>, m: &Model) -> Result<(), WriteError>
where
    W: std::io::Write + std::io::Seek,
{
    for (name, kvs) in m {
        w.begin_bucket(name)?;
        for (k, v) in kvs {
            w.put(k, v)?;
        }
    }
    Ok(())
}

fn read_model(db: &Db) -> Model {
    let mut m = Model::new();
    for name in db.bucket_names().expect("bucket names") {
        let bucket = db.must_bucket(&name).expect("bucket");
        let kvs = bucket
            .cursor()
            .into_owned_iter()
            .map(|e| {
                let e = e.expect("entry");
                assert!(!e.is_bucket);
                (e.key, e.value)
            })
            .collect();
        m.insert(name, kvs);
    }
    m
}

fn create_rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .expect("create file")
}

#[test]
fn written_model_reads_back_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    let m = model();
    let mut w = DbWriter::new(create_rw(&path)).expect("writer");
    write_model(&mut w, &m).expect("write");
    let (_, summary) = w.finish().expect("finish");
    let keys: usize = m.values().map(|b| b.len()).sum();
    assert_eq!(summary.keys, keys as u64);
    assert_eq!(summary.buckets, m.len() as u64);
    assert_eq!(
        std::fs::metadata(&path).expect("stat").len(),
        summary.db_bytes
    );

    let db = Db::open(&path).expect("open");
    assert!(!db.has_hash_trailer());
    assert_eq!(db.size_bytes(), summary.db_bytes);
    assert_eq!(read_model(&db), m);
    // small buckets are inline, as bbolt makes them; big ones are trees
    assert!(db.must_bucket(b"alarm").expect("alarm").is_inline());
    assert!(db.must_bucket(b"auth").expect("auth").is_inline());
    assert!(!db.must_bucket(b"many").expect("many").is_inline());
    // point lookups descend branch pages
    let many = db.must_bucket(b"many").expect("many");
    for k in [&b"k00000000"[..], b"k00012345", b"k00019999"] {
        assert_eq!(many.get(k).expect("get"), m[&b"many"[..]].get(k).cloned());
    }
    assert_eq!(many.get(b"k0").expect("get"), None);
    assert_eq!(many.get(b"zzz").expect("get"), None);
    let big = db.must_bucket(b"big").expect("big");
    assert_eq!(
        big.get(&[b'b', 4]).expect("get").map(|v| v.len()),
        Some(300_000)
    );
}

#[test]
fn writer_refuses_unsorted_or_invalid_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = DbWriter::new(create_rw(&dir.path().join("db"))).expect("writer");
    assert!(matches!(w.put(b"k", b"v"), Err(WriteError::NoBucket)));
    w.begin_bucket(b"b").expect("bucket b");
    assert!(matches!(w.put(b"", b"v"), Err(WriteError::EmptyKey { .. })));
    w.put(b"k2", b"v").expect("put");
    assert!(matches!(
        w.put(b"k1", b"v"),
        Err(WriteError::KeyOrder { .. })
    ));
    assert!(matches!(
        w.put(b"k2", b"v"),
        Err(WriteError::KeyOrder { .. })
    ));
    assert!(matches!(
        w.put(&vec![b'x'; 32769], b"v"),
        Err(WriteError::KeyTooLarge { .. })
    ));
    assert!(matches!(
        w.begin_bucket(b"a"),
        Err(WriteError::BucketOrder { .. })
    ));
    assert!(matches!(
        w.begin_bucket(b""),
        Err(WriteError::EmptyBucketName)
    ));
    let other = create_rw(&dir.path().join("other"));
    assert!(matches!(
        DbWriter::with_page_size(other, 3000),
        Err(WriteError::PageSize(3000))
    ));
}

#[derive(Debug, serde::Deserialize)]
struct EtcdctlStatus {
    hash: u32,
    revision: i64,
    #[serde(rename = "totalKey")]
    total_key: u64,
    #[serde(rename = "totalSize")]
    total_size: u64,
}

fn etcdctl_status(path: &Path) -> EtcdctlStatus {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "-w", "json"])
        .arg(path)
        .output()
        .expect("run etcdctl (install etcd-client)");
    assert!(
        out.status.success(),
        "etcdctl snapshot status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("etcdctl json")
}

#[test]
fn real_bbolt_accepts_the_written_file_and_agrees_on_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snap.db");
    let m = model();
    let mut w = DbWriter::new(create_rw(&path)).expect("writer");
    write_model(&mut w, &m).expect("write");
    let (_, summary) = w.finish_snapshot().expect("finish");
    let sha = summary.sha256.expect("hash appended");
    assert_eq!(snapshot::require_hash(&path).expect("verify"), sha);

    let theirs = etcdctl_status(&path);
    let db = Db::open(&path).expect("open");
    assert!(db.has_hash_trailer());
    let ours = snapshot_status(&db).expect("status");
    assert_eq!(theirs.hash, ours.hash);
    assert_eq!(theirs.revision, 2999);
    assert_eq!(theirs.revision, ours.revision);
    assert_eq!(theirs.total_key, ours.total_key);
    assert_eq!(theirs.total_size, ours.total_size);
    assert_eq!(theirs.total_size, summary.db_bytes);
}
