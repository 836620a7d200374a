//! `snapshot restore`: turns a snapshot file (what Maintenance.Snapshot streams, see
//! [`crate::api::grpc`]) into the data dir of one member of a NEW cluster, as etcd's
//! `etcdctl snapshot restore` does: the keys, revisions, leases, auth and v2 keys of the
//! snapshot, a membership taken from the flags (the old one is dropped), and a WAL that starts
//! like a fresh cluster's (snapshot record at index 1, term 1, all members voters). Every
//! member of the new cluster is restored from the same file with its own `--name`, then
//! started with the same `--initial-cluster*` flags and `--initial-cluster-state new`.
//!
//! Nothing is half-written: the data dir is built under a temporary name beside it, made
//! durable, then renamed into place. Snapshot file format: magic `OXCDSNP1`, body length
//! (u64 LE), the backend records ([`oxcd_storage::Store::snapshot`]), zero padding to a
//! multiple of 512 bytes, SHA-256 of everything before it.

use std::fs;
use std::path::{Path, PathBuf};

use raft::eraftpb::ConfState;
use sha2::Digest as _;

use oxcd_storage::Store;

use crate::config::{self, Config, Parsed};
use crate::consensus::bootstrap::{self, WalMeta};
use crate::state::members::{Member, AUX_MEMBERS};

/// First bytes of a snapshot file.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"OXCDSNP1";
/// Snapshot files are padded to a multiple of this (etcd's bbolt page multiple), so that
/// `len % 512 == 32` tells a file with a hash trailer from one without, as etcdctl does.
pub const SNAPSHOT_ALIGN: usize = 512;
const HASH_LEN: usize = 32;
/// bbolt's meta magic (little endian, after the 16-byte page header): an etcd snapshot.
/// First bytes of a redb file: an oxcd backend (`member/oxcd.db`).
const REDB_MAGIC: &[u8] = b"redb";
const BBOLT_MAGIC: [u8; 4] = 0xED0C_DAEDu32.to_le_bytes();

/// The file a snapshot stream writes: header, body, padding, SHA-256.
pub fn encode_snapshot(body: &[u8]) -> Vec<u8> {
    let mut data = SNAPSHOT_MAGIC.to_vec();
    data.extend_from_slice(&(body.len() as u64).to_le_bytes());
    data.extend_from_slice(body);
    data.resize(data.len().div_ceil(SNAPSHOT_ALIGN) * SNAPSHOT_ALIGN, 0);
    let sum = sha2::Sha256::digest(&data);
    data.extend_from_slice(&sum);
    data
}

/// Why a snapshot file cannot be used. The texts are etcdctl's where it has one.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("snapshot missing hash but --skip-hash-check=false")]
    MissingHash,
    #[error("expected sha256 {expected}, got {got}")]
    HashMismatch { expected: String, got: String },
    #[error("{0} is an etcd (bbolt) snapshot; oxcd restores the snapshots oxcd members stream (restore this one with etcdctl into an etcd data dir)")]
    Etcd(String),
    #[error("{path} is not an oxcd snapshot: {why}")]
    NotSnapshot { path: String, why: String },
}

/// Go's `%v` of a byte slice: `[1 2 3]`.
fn go_bytes(b: &[u8]) -> String {
    let parts: Vec<String> = b.iter().map(|x| x.to_string()).collect();
    format!("[{}]", parts.join(" "))
}

/// Checks a snapshot file and returns its backend body. `path` only names it in errors.
pub fn snapshot_body<'a>(
    path: &str,
    data: &'a [u8],
    skip_hash_check: bool,
) -> Result<&'a [u8], SnapshotFileError> {
    if data.len() >= 24 && data[16..20] == BBOLT_MAGIC {
        return Err(SnapshotFileError::Etcd(path.to_string()));
    }
    let has_hash = data.len() % SNAPSHOT_ALIGN == HASH_LEN;
    if !has_hash && !skip_hash_check {
        return Err(SnapshotFileError::MissingHash);
    }
    let not = |why: &str| SnapshotFileError::NotSnapshot {
        path: path.to_string(),
        why: why.to_string(),
    };
    if has_hash && !skip_hash_check {
        let (content, sum) = data.split_at(data.len() - HASH_LEN);
        let got = sha2::Sha256::digest(content);
        if got.as_slice() != sum {
            return Err(SnapshotFileError::HashMismatch {
                expected: go_bytes(sum),
                got: go_bytes(&got),
            });
        }
    }
    if data.len() < 16 || &data[..8] != SNAPSHOT_MAGIC {
        return Err(not("it does not start with OXCDSNP1"));
    }
    let len = u64::from_le_bytes(data[8..16].try_into().map_err(|_| not("short header"))?);
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| l.checked_add(16))
        .filter(|&e| e <= data.len())
        .ok_or_else(|| not("it is shorter than its header says (truncated?)"))?;
    Ok(&data[16..end])
}

/// What `snapshot status` reports for an oxcd snapshot.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SnapshotStatus {
    /// CRC-32 (IEEE) of the backend body.
    pub hash: u32,
    pub revision: i64,
    /// Records in the backend: every key revision, meta and aux row (etcd counts every key
    /// of every bucket).
    pub total_key: u64,
    pub total_size: u64,
}

/// Reads the status of a snapshot file's body without opening a database.
pub fn snapshot_status(path: &str, data: &[u8]) -> Result<SnapshotStatus, SnapshotFileError> {
    let body = snapshot_body(path, data, false)?;
    let not = |why: &str| SnapshotFileError::NotSnapshot {
        path: path.to_string(),
        why: why.to_string(),
    };
    let mut st = SnapshotStatus {
        hash: crc32fast::hash(body),
        total_size: data.len() as u64,
        revision: 1,
        ..Default::default()
    };
    for r in records(body) {
        let (t, key, value) = r.ok_or_else(|| not("a backend record is truncated"))?;
        st.total_key += 1;
        if t == 1 && key == b"current_rev" && value.len() == 8 {
            st.revision = i64::from_le_bytes(value.try_into().map_err(|_| not("meta"))?);
        }
    }
    Ok(st)
}

/// The records of a backend body (see [`oxcd_storage::Store::snapshot`]) as
/// (table, key, value); `None` where a record is truncated.
fn records(body: &[u8]) -> impl Iterator<Item = Option<(u8, &[u8], &[u8])>> {
    let mut rest = body;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut take = |n: usize| -> Option<&[u8]> {
            if rest.len() < n {
                rest = &[];
                return None;
            }
            let (a, b) = rest.split_at(n);
            rest = b;
            Some(a)
        };
        let len = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        Some((|| {
            let t = take(1)?[0];
            let klen = len(take(4)?);
            let key = take(klen)?;
            let vlen = len(take(4)?);
            let value = take(vlen)?;
            Some((t, key, value))
        })())
    })
}

/// Maintenance.Hash: CRC-32 of the whole backend (keys, history, leases, auth, members, v2,
/// alarms), leaving out only the raft position (`consistent_index`/`consistent_term`),
/// which differs between members that applied the same data through different log entries.
pub fn backend_hash(body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for (t, key, value) in records(body).map_while(|r| r) {
        if t == 1 && key.starts_with(b"consistent_") {
            continue;
        }
        h.update(&[t]);
        h.update(&(key.len() as u32).to_le_bytes());
        h.update(key);
        h.update(&(value.len() as u32).to_le_bytes());
        h.update(value);
    }
    h.finalize()
}

/// `snapshot restore`'s flags (etcdctl's names and defaults).
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub snapshot: PathBuf,
    pub data_dir: Option<PathBuf>,
    pub wal_dir: Option<PathBuf>,
    pub name: String,
    pub initial_cluster: String,
    pub initial_cluster_token: String,
    pub initial_advertise_peer_urls: String,
    pub skip_hash_check: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            snapshot: PathBuf::new(),
            data_dir: None,
            wal_dir: None,
            name: "default".into(),
            initial_cluster: "default=http://localhost:2380".into(),
            initial_cluster_token: "etcd-cluster".into(),
            initial_advertise_peer_urls: "http://localhost:2380".into(),
            skip_hash_check: false,
        }
    }
}

impl RestoreOptions {
    /// `--data-dir`, else etcd's `${name}.etcd` (before the flags are checked; after, the
    /// checked [`Config`]'s `data_dir` is the same).
    fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.etcd", self.name)))
    }
}

/// The new cluster a restore created this member of.
#[derive(Debug)]
pub struct Restored {
    pub cluster_id: u64,
    pub member_id: u64,
    /// Every member, sorted by ID (the order etcd logs them in).
    pub members: Vec<Member>,
    pub revision: i64,
}

/// Checks the flags, as etcdctl does before it touches anything.
pub fn check_options(o: &RestoreOptions) -> Result<Config, String> {
    let data_dir = o.data_dir();
    if data_dir.exists() {
        return Err(format!(
            "data-dir {:?} exists",
            data_dir.display().to_string()
        ));
    }
    if let Some(w) = &o.wal_dir {
        if w.exists() {
            return Err(format!("wal-dir {:?} exists", w.display().to_string()));
        }
    }
    let cluster = config::parse_initial_cluster(&o.initial_cluster).map_err(|e| e.0)?;
    let Some((_, urls)) = cluster.iter().find(|(n, _)| *n == o.name) else {
        return Err(format!(
            "couldn't find local name {:?} in the initial cluster configuration",
            o.name
        ));
    };
    let adv = config::parse_urls(
        "initial-advertise-peer-urls",
        &o.initial_advertise_peer_urls,
    )
    .map_err(|e| e.0)?;
    let mut mine: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
    let mut theirs: Vec<String> = adv.iter().map(|u| u.to_string()).collect();
    mine.sort();
    theirs.sort();
    if mine != theirs {
        return Err(format!(
            "--initial-cluster has {}={} but missing from --initial-advertise-peer-urls={} (resolved urls: {:?} != {:?})",
            o.name,
            mine.join(","),
            theirs.join(","),
            theirs.join(","),
            mine.join(",")
        ));
    }
    // The server's own parser builds the member list exactly as `oxcd` will at start.
    let mut args = vec![
        format!("--name={}", o.name),
        format!("--data-dir={}", data_dir.display()),
        format!("--initial-cluster={}", o.initial_cluster),
        format!("--initial-cluster-token={}", o.initial_cluster_token),
        format!(
            "--initial-advertise-peer-urls={}",
            o.initial_advertise_peer_urls
        ),
        "--listen-client-urls=http://127.0.0.1:2379".into(),
        "--listen-peer-urls=http://127.0.0.1:2380".into(),
    ];
    if let Some(w) = &o.wal_dir {
        args.push(format!("--wal-dir={}", w.display()));
    }
    match config::parse(&args, &Default::default()).map_err(|e| e.0)? {
        Parsed::Run(cfg) => Ok(*cfg),
        _ => Err("unexpected flags".into()),
    }
}

/// Restores `o.snapshot` into a new data dir. Errors are etcdctl's texts where it has one.
pub fn restore(o: &RestoreOptions) -> Result<Restored, String> {
    restore_checked(o, &check_options(o)?)
}

/// [`restore`] with the flags already checked (`cfg` from [`check_options`]).
pub fn restore_checked(o: &RestoreOptions, cfg: &Config) -> Result<Restored, String> {
    let path = o.snapshot.display().to_string();
    let data = fs::read(&o.snapshot).map_err(|e| format!("open {path}: {}", go_io_error(&e)))?;
    let copied_backend;
    let body = if o.skip_hash_check && data.starts_with(REDB_MAGIC) {
        // A backend file copied out of a data dir (etcd allows its db file here too).
        copied_backend = backend_file_body(&data)?;
        &copied_backend[..]
    } else {
        snapshot_body(&path, &data, o.skip_hash_check).map_err(|e| e.to_string())?
    };

    let data_dir = cfg.data_dir.clone();
    let parent = data_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let base = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "data".into());
    let tmp = parent.join(format!(".{base}.restoring-{}", std::process::id()));
    let tmp_wal = cfg
        .wal_dir
        .as_ref()
        .map(|w| w.with_file_name(format!(".wal.restoring-{}", std::process::id())));
    let result = build(cfg, body, &tmp, tmp_wal.as_deref());
    let result = result.and_then(|r| {
        if let (Some(t), Some(w)) = (&tmp_wal, &cfg.wal_dir) {
            fs::rename(t, w)
                .map_err(|e| format!("cannot move the WAL into {}: {e}", w.display()))?;
            sync_dir(w.parent().unwrap_or(Path::new(".")));
        }
        fs::rename(&tmp, &data_dir)
            .map_err(|e| format!("cannot move the data dir into {}: {e}", data_dir.display()))?;
        sync_dir(&parent);
        Ok(r)
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
        if let Some(t) = &tmp_wal {
            let _ = fs::remove_dir_all(t);
        }
    }
    result
}

/// The snapshot body of a backend file (`member/oxcd.db`) copied out of a data dir: opened
/// from a private temporary copy, so the original is never written.
fn backend_file_body(data: &[u8]) -> Result<Vec<u8>, String> {
    let dir = std::env::temp_dir().join(format!("oxcd-restore-{}", std::process::id()));
    let copy = dir.join("oxcd.db");
    let result = (|| {
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        fs::write(&copy, data).map_err(|e| format!("cannot write {}: {e}", copy.display()))?;
        let store = Store::open(&copy).map_err(|e| format!("not a usable oxcd backend: {e}"))?;
        let (body, _, _) = store
            .snapshot()
            .map_err(|e| format!("cannot read the backend: {e}"))?;
        Ok(body)
    })();
    let _ = fs::remove_dir_all(&dir);
    result
}

fn build(cfg: &Config, body: &[u8], dir: &Path, wal: Option<&Path>) -> Result<Restored, String> {
    let mdir = bootstrap::member_dir(dir);
    fs::create_dir_all(&mdir).map_err(|e| format!("cannot create {}: {e}", mdir.display()))?;
    let (mut members, cluster_id) = bootstrap::initial_members(cfg);
    members.sort_by_key(|m| m.id);
    let member_id = members
        .iter()
        .find(|m| m.name == cfg.name)
        .map(|m| m.id)
        .ok_or("local member missing from --initial-cluster")?;

    let db = mdir.join("oxcd.db");
    let revision = {
        let store = Store::open(&db).map_err(|e| format!("cannot create {}: {e}", db.display()))?;
        let bad = |e: oxcd_storage::MvccError| format!("cannot restore the backend: {e}");
        let old_members = {
            let mut b = store.batch().map_err(bad)?;
            b.restore(body).map_err(bad)?;
            // Made durable by the commit below.
            b.commit(false).map_err(bad)?;
            store.aux_load(AUX_MEMBERS).map_err(bad)?
        };
        let mut b = store.batch().map_err(bad)?;
        // The old cluster's membership goes; the flags define the new one.
        for (key, _) in old_members {
            b.aux_delete(AUX_MEMBERS, &key).map_err(bad)?;
        }
        b.set_consistent_index(1, 1).map_err(bad)?;
        b.commit(true).map_err(bad)?;
        store.current_rev()
    };
    let meta = WalMeta {
        member_id,
        cluster_id,
        name: cfg.name.clone(),
    };
    let cs = ConfState {
        voters: members.iter().map(|m| m.id).collect(),
        ..Default::default()
    };
    let wal_dir = wal
        .map(Path::to_path_buf)
        .unwrap_or_else(|| mdir.join("wal"));
    bootstrap::create_wal(&wal_dir, &meta, 1, 1, &cs).map_err(|e| format!("{e:#}"))?;
    sync_dir(&mdir);
    sync_dir(dir);
    Ok(Restored {
        cluster_id,
        member_id,
        members,
        revision,
    })
}

/// fsyncs a directory so a rename or a new entry in it is durable; best effort (a
/// filesystem that refuses to open directories has nothing to sync).
fn sync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Go's text for the common I/O errors (`no such file or directory`), else Rust's.
pub fn go_io_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::IsADirectory => "is a directory".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_round_trips_and_damage_is_refused() {
        let body =
            b"\x01\x0b\x00\x00\x00current_rev\x08\x00\x00\x00\x07\x00\x00\x00\x00\x00\x00\x00";
        let file = encode_snapshot(body);
        assert_eq!(file.len() % SNAPSHOT_ALIGN, HASH_LEN);
        assert_eq!(snapshot_body("s", &file, false).ok(), Some(&body[..]));
        let st = snapshot_status("s", &file).ok();
        assert_eq!(st.map(|s| (s.revision, s.total_key)), Some((7, 1)));
        let mut bad = file.clone();
        bad[20] ^= 1;
        let e = snapshot_body("s", &bad, false).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.starts_with("expected sha256 [")));
        assert!(snapshot_body("s", &bad, true).is_ok());
        let e = snapshot_body("s", &file[..100], false)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("snapshot missing hash but --skip-hash-check=false")
        );
    }

    #[test]
    fn etcd_snapshots_are_named() {
        let mut f = vec![0u8; 4096 + 32];
        f[16..20].copy_from_slice(&BBOLT_MAGIC);
        let e = snapshot_body("e.db", &f, false)
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("etcd (bbolt) snapshot")));
    }
}
