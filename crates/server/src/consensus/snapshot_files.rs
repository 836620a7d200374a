//! Raft snapshots as files: the leader builds one off the raft thread from one consistent
//! read view of the backend, the peer transport streams it in chunks after the snapshot
//! message, and the follower receives it into a file and restores from that file record by
//! record. Memory on either side is a chunk or a record, whatever the backend's size.
//!
//! A raft `Snapshot`'s `data` holds only a [`SnapshotFile`]: magic `OXSNAPF1`, then index,
//! term, size in bytes (u64 BE each) and the CRC-32 (IEEE) of the file (u32 BE). The file
//! holds the backend's records as `ReadView::write_records` writes them.
//!
//! Files, in `member/snap/`: `<term>-<index>.oxsnap` (16 hex digits each, as etcd names its
//! `.snap` files) built here, `<term>-<index>.oxsnap.recv` received from a leader, each with
//! `.tmp` (a receive: `.<n>.tmp`) appended while it is written. At most one build runs at a time; a finished build
//! replaces the previous one, a finished receive the previous received file, and an applied
//! one is removed. No file is read after a restart (all are removed at start), so none is
//! fsynced: the durability point is the backend commit of the restore (docs/design.md).

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use raft::eraftpb::ConfState;
use tokio::io::AsyncWriteExt;

use oxcd_storage::mvcc::ReadView;
use oxcd_storage::MvccError;

/// The largest chunk of a snapshot file in one peer frame.
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 1024 * 1024;
/// Bytes the builder buffers before writing to its file.
const BUILD_BUFFER_BYTES: usize = 1024 * 1024;
const DATA_MAGIC: &[u8; 8] = b"OXSNAPF1";
const DATA_BYTES: usize = 8 + 8 + 8 + 8 + 4;
const BUILT: &str = ".oxsnap";
const RECEIVED: &str = ".oxsnap.recv";
const TEMPORARY: &str = ".tmp";

/// What a raft snapshot message carries: which file, how long, its checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotFile {
    pub index: u64,
    pub term: u64,
    pub size_bytes: u64,
    pub crc32: u32,
}

impl SnapshotFile {
    /// The bytes for a raft `Snapshot`'s `data`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(DATA_BYTES);
        out.extend_from_slice(DATA_MAGIC);
        out.extend_from_slice(&self.index.to_be_bytes());
        out.extend_from_slice(&self.term.to_be_bytes());
        out.extend_from_slice(&self.size_bytes.to_be_bytes());
        out.extend_from_slice(&self.crc32.to_be_bytes());
        out
    }

    /// Reads a raft `Snapshot`'s `data`; `None` when it is not one of ours.
    pub fn decode(data: &[u8]) -> Option<SnapshotFile> {
        if data.len() != DATA_BYTES || !data.starts_with(DATA_MAGIC) {
            return None;
        }
        let word = |at: usize| data[at..at + 8].try_into().ok().map(u64::from_be_bytes);
        Some(SnapshotFile {
            index: word(8)?,
            term: word(16)?,
            size_bytes: word(24)?,
            crc32: u32::from_be_bytes(data[32..36].try_into().ok()?),
        })
    }

    fn name(&self, suffix: &str) -> String {
        format!("{:016x}-{:016x}{suffix}", self.term, self.index)
    }
}

/// Why a snapshot file could not be built, received or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("snapshot file {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("building a snapshot: {0}")]
    Build(#[from] MvccError),
    #[error("snapshot file {path}: {got} bytes arrived, {want} announced")]
    Size { path: String, got: u64, want: u64 },
    #[error("snapshot file {path} is damaged: CRC-32 {got:08x}, the leader's {want:08x}")]
    Checksum { path: String, got: u32, want: u32 },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> SnapshotFileError + '_ {
    move |source| SnapshotFileError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The leader's build, at most one at a time.
enum Build {
    Idle,
    /// A builder thread writes the snapshot at this index.
    Building(u64),
    /// The last snapshot built, and raft's configuration at its index.
    Ready(SnapshotFile, ConfState),
}

/// A member's snapshot files (see the module doc).
pub struct SnapshotFiles {
    dir: PathBuf,
    build: Mutex<Build>,
}

impl SnapshotFiles {
    /// Opens `member_dir/snap`, removing every snapshot file a previous run left.
    pub fn open(member_dir: &Path) -> Result<Arc<SnapshotFiles>, SnapshotFileError> {
        let dir = member_dir.join("snap");
        fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        for entry in fs::read_dir(&dir).map_err(io_at(&dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.contains(BUILT) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(Arc::new(SnapshotFiles {
            dir,
            build: Mutex::new(Build::Idle),
        }))
    }

    /// The file a leader built for `f`.
    pub fn built_path(&self, f: &SnapshotFile) -> PathBuf {
        self.dir.join(f.name(BUILT))
    }

    /// The file a follower received for `f`.
    pub fn received_path(&self, f: &SnapshotFile) -> PathBuf {
        self.dir.join(f.name(RECEIVED))
    }

    /// On the raft thread: the last snapshot built, when it is at `min_index` or later and
    /// has raft's current configuration `conf_state` (a member added since is not in an
    /// older one, and raft-rs on that member refuses a snapshot that does not list it).
    /// Otherwise starts a build from the view `view` gives (unless one runs, or `view` gives
    /// none: the backend is busy) with `conf_state`, raft's configuration as of the view,
    /// and returns `None` (raft-rs's `SnapshotTemporarilyUnavailable`: it asks again).
    pub fn ready_or_build(
        self: &Arc<Self>,
        min_index: u64,
        view: impl FnOnce() -> Option<Result<ReadView, MvccError>>,
        conf_state: ConfState,
    ) -> Option<(SnapshotFile, ConfState)> {
        let mut build = self.build.lock().ok()?;
        match &*build {
            Build::Ready(f, cs) if f.index >= min_index && *cs == conf_state => {
                return Some((*f, cs.clone()))
            }
            Build::Building(_) => return None,
            _ => {}
        }
        let view = match view()? {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("cannot read the backend for a raft snapshot: {e}");
                return None;
            }
        };
        let index = view.consistent_index().0;
        let previous = std::mem::replace(&mut *build, Build::Building(index));
        let files = self.clone();
        let spawned = std::thread::Builder::new()
            .name("raft-snapshot".into())
            .spawn(move || files.run_build(view, conf_state));
        if let Err(e) = spawned {
            tracing::warn!("cannot start a thread to build a raft snapshot: {e}");
            *build = previous;
        }
        None
    }

    /// The index of the snapshot being built, if one is: the leader keeps the log entries
    /// after it, which the follower that waits for it will need.
    pub fn building_index(&self) -> Option<u64> {
        match &*self.build.lock().ok()? {
            Build::Building(index) => Some(*index),
            _ => None,
        }
    }

    /// The builder thread: writes the file, then makes it the ready one.
    fn run_build(&self, view: ReadView, conf_state: ConfState) {
        let started = std::time::Instant::now();
        let built = self.write_file(view);
        crate::metrics::get()
            .backend_snapshot
            .observe(started.elapsed().as_secs_f64());
        let Ok(mut build) = self.build.lock() else {
            return;
        };
        let previous = std::mem::replace(&mut *build, Build::Idle);
        match built {
            Ok(f) => {
                tracing::info!(
                    "built a raft snapshot at index {} (term {}): {} bytes in {:?}",
                    f.index,
                    f.term,
                    f.size_bytes,
                    started.elapsed()
                );
                *build = Build::Ready(f, conf_state);
                // A sender still reading the old file keeps it open: removing it is safe.
                if let Build::Ready(old, _) = previous {
                    if old != f {
                        let _ = fs::remove_file(self.built_path(&old));
                    }
                }
            }
            Err(e) => tracing::warn!("cannot build a raft snapshot: {e}"),
        }
    }

    /// Writes the view's records to a new file; returns what describes it.
    fn write_file(&self, view: ReadView) -> Result<SnapshotFile, SnapshotFileError> {
        let (index, term) = view.consistent_index();
        let mut f = SnapshotFile {
            index,
            term,
            size_bytes: 0,
            crc32: 0,
        };
        let path = self.built_path(&f);
        let tmp = self.dir.join(f.name(&format!("{BUILT}{TEMPORARY}")));
        let file = fs::File::create(&tmp).map_err(io_at(&tmp))?;
        let mut out = Summing::new(BufWriter::with_capacity(BUILD_BUFFER_BYTES, file));
        let written = view
            .write_records(&mut out)
            .map_err(SnapshotFileError::from)
            .and_then(|()| out.inner.flush().map_err(io_at(&tmp)));
        // The read transaction ends here, before the rename.
        drop(view);
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        (f.size_bytes, f.crc32) = (out.bytes, out.crc.finalize());
        fs::rename(&tmp, &path).map_err(io_at(&path))?;
        Ok(f)
    }

    /// Starts receiving `f` from a leader into a temporary file of its own (a stream that
    /// replaces another may receive the same snapshot while the old one is dropped).
    pub async fn receive(&self, f: SnapshotFile) -> Result<Incoming, SnapshotFileError> {
        static RECEIVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = RECEIVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self.dir.join(f.name(&format!("{RECEIVED}.{n}{TEMPORARY}")));
        let out = tokio::fs::File::create(&tmp).await.map_err(io_at(&tmp))?;
        Ok(Incoming {
            file: f,
            out,
            crc: crc32fast::Hasher::new(),
            got: 0,
            tmp,
            done: self.received_path(&f),
            dir: self.dir.clone(),
            kept: false,
        })
    }
}

/// A writer that counts and checksums what goes through it.
struct Summing<W> {
    inner: W,
    bytes: u64,
    crc: crc32fast::Hasher,
}

impl<W> Summing<W> {
    fn new(inner: W) -> Self {
        Summing {
            inner,
            bytes: 0,
            crc: crc32fast::Hasher::new(),
        }
    }
}

impl<W: Write> Write for Summing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A snapshot file arriving from a leader, chunk by chunk. Dropped before it is complete,
/// its temporary file is removed.
pub struct Incoming {
    file: SnapshotFile,
    out: tokio::fs::File,
    crc: crc32fast::Hasher,
    got: u64,
    tmp: PathBuf,
    done: PathBuf,
    dir: PathBuf,
    /// Set once the file has its final name (it stays).
    kept: bool,
}

impl Incoming {
    /// True once every announced byte arrived.
    pub fn complete(&self) -> bool {
        self.got == self.file.size_bytes
    }

    /// Appends a chunk; more bytes than announced is an error.
    pub async fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), SnapshotFileError> {
        let got = self.got + chunk.len() as u64;
        if got > self.file.size_bytes {
            return Err(SnapshotFileError::Size {
                path: self.tmp.display().to_string(),
                got,
                want: self.file.size_bytes,
            });
        }
        self.out.write_all(chunk).await.map_err(io_at(&self.tmp))?;
        self.crc.update(chunk);
        self.got = got;
        Ok(())
    }

    /// Checks the checksum of the complete file and gives it its final name (replacing
    /// the previous received file); a damaged file is removed.
    pub async fn finish(mut self) -> Result<(), SnapshotFileError> {
        self.out.flush().await.map_err(io_at(&self.tmp))?;
        let got = std::mem::replace(&mut self.crc, crc32fast::Hasher::new()).finalize();
        if got != self.file.crc32 {
            return Err(SnapshotFileError::Checksum {
                path: self.tmp.display().to_string(),
                got,
                want: self.file.crc32,
            });
        }
        if let Ok(mut entries) = tokio::fs::read_dir(&self.dir).await {
            while let Ok(Some(entry)) = entries.next_entry().await {
                if entry.file_name().to_string_lossy().ends_with(RECEIVED) {
                    let _ = tokio::fs::remove_file(entry.path()).await;
                }
            }
        }
        tokio::fs::rename(&self.tmp, &self.done)
            .await
            .map_err(io_at(&self.done))?;
        self.kept = true;
        Ok(())
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if !self.kept {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_data_round_trips_and_refuses_anything_else() {
        let f = SnapshotFile {
            index: 7,
            term: 3,
            size_bytes: 1 << 33,
            crc32: 0xdead_beef,
        };
        assert_eq!(SnapshotFile::decode(&f.encode()), Some(f));
        let mut bad = f.encode();
        bad[0] = b'X';
        assert_eq!(SnapshotFile::decode(&bad), None);
        assert_eq!(SnapshotFile::decode(&f.encode()[..20]), None);
        assert_eq!(SnapshotFile::decode(b""), None);
    }
}
