//! `snapshot restore`: turns a snapshot file into the data dir of one member of a NEW
//! cluster, as etcd's `etcdctl snapshot restore` does: the keys, revisions, leases and auth
//! of the snapshot (and v2 keys of an oxcd one), a membership taken from the flags (the old
//! one is dropped), and a WAL that starts like a fresh cluster's (snapshot record at index
//! 1, term 1, all members voters). The file is an etcd (bbolt) snapshot, which is what
//! etcd 3.4-3.6 and oxcd stream ([`crate::from_etcd`]), or an `OXCDSNP1` snapshot of older
//! oxcd releases ([`crate::file`]). Every member of the new cluster is restored from the same
//! file with its own `--name`, then started with the same `--initial-cluster*` flags and
//! `--initial-cluster-state new`.
//!
//! Nothing is half-written: the data dir is built under a temporary name beside it, made
//! durable, then renamed into place. Errors are one line each, etcdctl's text where it has
//! one (oxctl prints them after `Error: `).

use std::fs;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use oxcd_bbolt::Db;
use raft::eraftpb::ConfState;

use oxcd_storage::Store;

use crate::file::{go_bytes, SnapshotFileError, BBOLT_MAGIC, SNAPSHOT_MAGIC};
use crate::from_etcd::restore_etcd_db;
use crate::layout::{self, WalMeta};
use crate::members::{initial_members, Member, AUX_MEMBERS};
use crate::urls::{parse_initial_cluster, parse_urls, Url};

/// First bytes of a redb file: an oxcd backend (`member/oxcd.db`).
const REDB_MAGIC: &[u8] = b"redb";
/// Enough of a file to tell the formats apart: bbolt's magic is at bytes 16..20.
const HEAD_BYTES: usize = 24;

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

/// `snapshot restore`'s flags, checked ([`check_options`]): what building the data dir
/// needs, as the member will see the same flags when it starts.
#[derive(Debug, Clone)]
pub struct RestoreConfig {
    pub name: String,
    /// `--data-dir`, else etcd's `${name}.etcd`.
    pub data_dir: PathBuf,
    /// `--wal-dir`; `None` keeps the log in `<data-dir>/member/wal`.
    pub wal_dir: Option<PathBuf>,
    /// name -> peer URLs, in flag order.
    pub initial_cluster: Vec<(String, Vec<Url>)>,
    pub initial_cluster_token: String,
}

impl RestoreConfig {
    /// Where the WAL goes: `--wal-dir`, else `<data-dir>/member/wal`.
    pub fn wal_path(&self) -> PathBuf {
        layout::wal_dir(&self.data_dir, self.wal_dir.as_deref())
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

/// A path flag: empty means not given (as etcd's flags treat it).
fn given(p: &Option<PathBuf>) -> Option<PathBuf> {
    p.clone().filter(|p| !p.as_os_str().is_empty())
}

/// Checks the flags, as etcdctl does before it touches anything.
pub fn check_options(o: &RestoreOptions) -> Result<RestoreConfig, String> {
    let data_dir = given(&o.data_dir).unwrap_or_else(|| PathBuf::from(format!("{}.etcd", o.name)));
    if data_dir.exists() {
        return Err(format!(
            "data-dir {:?} exists",
            data_dir.display().to_string()
        ));
    }
    let wal_dir = given(&o.wal_dir);
    if let Some(w) = &wal_dir {
        if w.exists() {
            return Err(format!("wal-dir {:?} exists", w.display().to_string()));
        }
    }
    let initial_cluster = parse_initial_cluster(&o.initial_cluster).map_err(|e| e.to_string())?;
    let Some((_, urls)) = initial_cluster.iter().find(|(n, _)| *n == o.name) else {
        return Err(format!(
            "couldn't find local name {:?} in the initial cluster configuration",
            o.name
        ));
    };
    let adv = parse_urls(
        "initial-advertise-peer-urls",
        &o.initial_advertise_peer_urls,
    )
    .map_err(|e| e.to_string())?;
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
    Ok(RestoreConfig {
        name: o.name.clone(),
        data_dir,
        wal_dir,
        initial_cluster,
        initial_cluster_token: o.initial_cluster_token.clone(),
    })
}

/// Restores `o.snapshot` into a new data dir. Errors are etcdctl's texts where it has one.
pub fn restore(o: &RestoreOptions) -> Result<Restored, String> {
    restore_checked(o, &check_options(o)?)
}

/// [`restore`] with the flags already checked (`cfg` from [`check_options`]).
pub fn restore_checked(o: &RestoreOptions, cfg: &RestoreConfig) -> Result<Restored, String> {
    let source = open_source(o)?;
    let data_dir = &cfg.data_dir;
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
    let result = build(cfg, &source, &tmp, tmp_wal.as_deref()).and_then(|r| {
        if let (Some(t), Some(w)) = (&tmp_wal, &cfg.wal_dir) {
            fs::rename(t, w)
                .map_err(|e| format!("cannot move the WAL into {}: {e}", w.display()))?;
            sync_dir(w.parent().unwrap_or(Path::new(".")));
        }
        fs::rename(&tmp, data_dir)
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

/// What a snapshot file holds, checked and ready to restore.
enum Source {
    /// The backend records of an oxcd snapshot (`OXCDSNP1`) or backend file.
    Oxcd(OxcdBody),
    /// An etcd (bbolt) database, read page by page.
    Etcd(Db),
}

/// Backend records (`WriteBatch::restore_from`'s format): `len` bytes at `offset` in
/// `path`, read as they are restored.
struct OxcdBody {
    path: PathBuf,
    offset: u64,
    len: u64,
    /// A directory of scratch files the body lives in, removed with it.
    _scratch: Option<Scratch>,
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Opens the snapshot `o` names: an oxcd snapshot's SHA-256 trailer (unless
/// `--skip-hash-check`) and header are checked, an etcd one is checked against its SHA-256
/// trailer (unless `--skip-hash-check`) and opened for reading page by page. Both are read
/// as they are restored, never whole into memory.
fn open_source(o: &RestoreOptions) -> Result<Source, String> {
    let path = o.snapshot.display().to_string();
    let open_err = |e: std::io::Error| format!("open {path}: {}", go_io_error(&e));
    let head = read_head(&o.snapshot).map_err(open_err)?;
    let len = fs::metadata(&o.snapshot).map_err(open_err)?.len();
    if o.skip_hash_check && head.starts_with(REDB_MAGIC) {
        // A backend file copied out of a data dir (etcd allows its db file here too).
        return backend_file_body(&o.snapshot).map(Source::Oxcd);
    }
    if head.starts_with(SNAPSHOT_MAGIC) {
        return oxcd_snapshot_body(o, &head, len).map(Source::Oxcd);
    }
    let looks_bbolt = head.get(16..20) == Some(&BBOLT_MAGIC[..]);
    if !o.skip_hash_check {
        if head.starts_with(REDB_MAGIC) {
            // A backend file copied out of a data dir: taken with --skip-hash-check only.
            return Err(SnapshotFileError::MissingHash.to_string());
        }
        if !looks_bbolt && !oxcd_bbolt::snapshot::has_hash_trailer(len) {
            return Err(format!(
                "{path} is not a snapshot: neither an etcd (bbolt) database nor an oxcd snapshot"
            ));
        }
        check_etcd_hash(&o.snapshot, len)?;
    }
    Db::open(&o.snapshot)
        .map(Source::Etcd)
        .map_err(|e| e.to_string())
}

/// The body of an `OXCDSNP1` file of `len` bytes starting with `head`: its trailer is
/// checked as etcd's is (the same shape: padded to 512 bytes, SHA-256 appended), then its
/// header's body length against the file's.
fn oxcd_snapshot_body(o: &RestoreOptions, head: &[u8], len: u64) -> Result<OxcdBody, String> {
    let not = |why: &str| {
        SnapshotFileError::NotSnapshot {
            path: o.snapshot.display().to_string(),
            why: why.to_string(),
        }
        .to_string()
    };
    let has_hash = oxcd_bbolt::snapshot::has_hash_trailer(len);
    if !has_hash && !o.skip_hash_check {
        return Err(SnapshotFileError::MissingHash.to_string());
    }
    if has_hash && !o.skip_hash_check {
        check_etcd_hash(&o.snapshot, len)?;
    }
    let body_len = head
        .get(8..16)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| not("short header"))?;
    if body_len.checked_add(16).is_none_or(|end| end > len) {
        return Err(not("it is shorter than its header says (truncated?)"));
    }
    Ok(OxcdBody {
        path: o.snapshot.clone(),
        offset: 16,
        len: body_len,
        _scratch: None,
    })
}

/// The first bytes of a file (fewer if it is shorter).
fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(HEAD_BYTES);
    fs::File::open(path)?
        .take(HEAD_BYTES as u64)
        .read_to_end(&mut head)?;
    Ok(head)
}

/// etcdctl's check of a snapshot's trailer, with its texts.
fn check_etcd_hash(path: &Path, len: u64) -> Result<(), String> {
    use oxcd_bbolt::snapshot::{has_hash_trailer, sha256_prefix, SHA256_BYTES};
    if !has_hash_trailer(len) {
        return Err(SnapshotFileError::MissingHash.to_string());
    }
    let io = |e: std::io::Error| format!("read {}: {e}", path.display());
    let mut f = fs::File::open(path).map_err(io)?;
    let db_bytes = len - SHA256_BYTES as u64;
    let got = sha256_prefix(&mut f, db_bytes).map_err(io)?;
    let mut want = [0u8; SHA256_BYTES];
    f.read_exact(&mut want).map_err(io)?;
    if got != want {
        return Err(SnapshotFileError::HashMismatch {
            expected: go_bytes(&want),
            got: go_bytes(&got),
        }
        .to_string());
    }
    Ok(())
}

/// The records of a backend file (`member/oxcd.db`) copied out of a data dir: the file is
/// copied to a private scratch directory (so the original is never written), opened there,
/// and its records written to a scratch file beside it.
fn backend_file_body(path: &Path) -> Result<OxcdBody, String> {
    let dir = std::env::temp_dir().join(format!("oxcd-restore-{}", std::process::id()));
    let scratch = Scratch(dir.clone());
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let copy = dir.join("oxcd.db");
    fs::copy(path, &copy).map_err(|e| format!("cannot write {}: {e}", copy.display()))?;
    let body = dir.join("records");
    let len = {
        let store = Store::open(&copy).map_err(|e| format!("not a usable oxcd backend: {e}"))?;
        let view = store
            .read_view()
            .map_err(|e| format!("cannot read the backend: {e}"))?;
        let file =
            fs::File::create(&body).map_err(|e| format!("cannot write {}: {e}", body.display()))?;
        let mut out = std::io::BufWriter::new(file);
        view.write_records(&mut out)
            .map_err(|e| format!("cannot read the backend: {e}"))?;
        out.into_inner()
            .map_err(|e| format!("cannot write {}: {e}", body.display()))?
            .metadata()
            .map_err(|e| format!("cannot write {}: {e}", body.display()))?
            .len()
    };
    Ok(OxcdBody {
        path: body,
        offset: 0,
        len,
        _scratch: Some(scratch),
    })
}

/// Builds the data dir in `dir` (and the WAL in `wal`, else in `dir`), durable on return.
fn build(
    cfg: &RestoreConfig,
    source: &Source,
    dir: &Path,
    wal: Option<&Path>,
) -> Result<Restored, String> {
    let mdir = layout::member_dir(dir);
    fs::create_dir_all(&mdir).map_err(|e| format!("cannot create {}: {e}", mdir.display()))?;
    let (mut members, cluster_id) =
        initial_members(&cfg.initial_cluster, &cfg.initial_cluster_token);
    members.sort_by_key(|m| m.id);
    let member_id = members
        .iter()
        .find(|m| m.name == cfg.name)
        .map(|m| m.id)
        .ok_or("local member missing from --initial-cluster")?;
    let revision = restore_backend(&layout::backend_path(dir), source)?;
    let meta = WalMeta {
        member_id,
        cluster_id,
        name: cfg.name.clone(),
    };
    let cs = ConfState {
        voters: members.iter().map(|m| m.id).collect(),
        ..Default::default()
    };
    let wal_dir = layout::wal_dir(dir, wal);
    layout::create_wal(&wal_dir, &meta, 1, 1, &cs).map_err(|e| e.to_string())?;
    sync_dir(&mdir);
    sync_dir(dir);
    Ok(Restored {
        cluster_id,
        member_id,
        members,
        revision,
    })
}

/// Writes `source` into a new backend at `db`, drops the old cluster's member rows and sets
/// the consistent index to the new WAL's start (1, 1); durable on return. Returns the
/// restored revision.
fn restore_backend(db: &Path, source: &Source) -> Result<i64, String> {
    let store = Store::open(db).map_err(|e| format!("cannot create {}: {e}", db.display()))?;
    let bad = |e: oxcd_storage::MvccError| format!("cannot restore the backend: {e}");
    let old_members = {
        let mut b = store.batch().map_err(bad)?;
        match source {
            Source::Oxcd(body) => {
                let io = |e: std::io::Error| format!("read {}: {e}", body.path.display());
                let mut file = fs::File::open(&body.path).map_err(io)?;
                file.seek(std::io::SeekFrom::Start(body.offset))
                    .map_err(io)?;
                let mut records = std::io::BufReader::new(file).take(body.len);
                b.restore_from(&mut records).map_err(bad)?;
            }
            Source::Etcd(etcd_db) => {
                restore_etcd_db(&mut b, etcd_db, now_ms()).map_err(|e| e.to_string())?;
            }
        }
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
    Ok(store.current_rev())
}

/// The wall clock in milliseconds: when restored leases count as renewed.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// fsyncs a directory so a rename or a new entry in it is durable; best effort (a
/// filesystem that refuses to open directories has nothing to sync).
fn sync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Go's text for the common I/O errors (`no such file or directory`), else Rust's.
fn go_io_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::IsADirectory => "is a directory".into(),
        _ => e.to_string(),
    }
}
