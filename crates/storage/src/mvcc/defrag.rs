//! Online defragmentation: the backend is copied into a fresh file while writes go on; only
//! the rows written during the copy's last round are copied with writes held, and then the
//! new file takes the old one's name (etcd's defragment holds every write for the whole
//! copy: etcd issue 9222).
//!
//! Why a copy is consistent: the key-value table's rows are keyed by revision and written in
//! revision order, so the rows a copy round has not seen are exactly those above the last
//! one it copied, as long as no row is removed meanwhile. Two things remove rows: removing
//! a compaction's rows, which waits while a defragmentation runs (its rows stay in both
//! files and are removed from the new one afterwards), and replacing the backend (a raft
//! snapshot applied, an import's dropped history), which makes the defragmentation give up
//! at its held phase. The small tables (meta, aux) are copied whole in the held phase.

use std::ops::Bound;
use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable};

use super::{MvccError, Store, AUX, KV, META};

/// Rows a catch-up round may leave to the held phase, at most: the held phase copies them
/// with writes stopped, so this bounds the pause (about 10 MB of rows of 1 KiB).
pub const DEFRAG_HELD_ROWS_MAX: usize = 10_000;
/// Catch-up rounds before the held phase takes whatever is left (a load that writes faster
/// than the copy catches up would otherwise keep it going).
const DEFRAG_ROUNDS_MAX: usize = 8;
/// Bytes of rows per write transaction of the copy; each commits durably, so that the pages
/// its B-tree splits free are reused by the next one, and each fsync is short (a 64 MiB one
/// held the members' WAL fsyncs behind it: puts took 269 ms during a 0.5 GiB defrag).
const DEFRAG_CHUNK_BYTES: usize = 4 << 20;

/// The pause between two steps of removing compacted rows before the copy.
const COMPACT_STEP_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

/// Where a defragmentation builds the new file: next to the backend, removed at open if a
/// crash left it.
pub fn defrag_path(backend: &Path) -> PathBuf {
    let mut name = backend.as_os_str().to_owned();
    name.push(".defrag");
    PathBuf::from(name)
}

/// What a defragmentation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefragStats {
    /// Rows copied while writes went on.
    pub rows_online: usize,
    /// Rows copied in the held phase, with writes stopped.
    pub rows_held: usize,
    /// How long writes were held.
    pub held: std::time::Duration,
    /// How long removing the rows compaction had left took, before the copy.
    pub removing: std::time::Duration,
}

impl Store {
    /// Gives free pages back to the file system (etcd's defragment) by copying the backend
    /// into a new file while writes go on; writes wait only while the last rows are copied
    /// and the files swapped. One at a time.
    pub fn defragment(&self) -> Result<DefragStats, MvccError> {
        self.defragment_with(|| {})
    }

    /// [`Store::defragment`], calling `before_held` between the copy and the held phase
    /// (tests change the backend there).
    fn defragment_with(&self, before_held: impl FnOnce()) -> Result<DefragStats, MvccError> {
        let _one = self
            .defrag_lock
            .try_lock()
            .map_err(|_| MvccError::Defrag("a defragmentation is already running".into()))?;
        // The rows of the last compaction go first, or their pages would be copied. Paced:
        // each step holds the index, and back to back they kept the apply loop from it
        // (puts took 267 ms during a 0.5 GiB defrag with 120,000 rows left to remove).
        let removing = std::time::Instant::now();
        while self.compact_step()? > 0 {
            std::thread::sleep(COMPACT_STEP_PAUSE);
        }
        let removing = removing.elapsed();
        let tmp = defrag_path(&self.path);
        let result = self
            .defragment_into(&tmp, before_held)
            .map(|stats| DefragStats { removing, ..stats });
        if result.is_err() {
            self.index_mut().defragging = false;
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    fn defragment_into(
        &self,
        tmp: &Path,
        before_held: impl FnOnce(),
    ) -> Result<DefragStats, MvccError> {
        let io = |what: &str, e: &dyn std::fmt::Display| {
            MvccError::Defrag(format!("{what} {}: {e}", tmp.display()))
        };
        match std::fs::remove_file(tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io("removing", &e)),
            _ => {}
        }
        let rewrites = {
            let mut idx = self.index_mut();
            idx.defragging = true;
            idx.rewrites
        };
        let new = redb::Builder::new()
            .set_cache_size(self.cache_bytes)
            .create(tmp)
            .map_err(|e| io("creating", &e))?;
        let mut stats = DefragStats::default();
        let mut after = None;
        for _ in 0..DEFRAG_ROUNDS_MAX {
            let db = self.db();
            let txn = db.begin_read()?;
            let copied = copy_kv(&txn, &new, &mut after)?;
            stats.rows_online += copied;
            if copied <= DEFRAG_HELD_ROWS_MAX {
                break;
            }
        }
        before_held();
        // Held: no write batch runs while the index is held for writing.
        let mut idx = self.index_mut();
        let held = std::time::Instant::now();
        if idx.rewrites != rewrites {
            return Err(MvccError::Defrag(
                "the backend was replaced (a snapshot applied) while it was copied; run it again"
                    .into(),
            ));
        }
        let old = self.db();
        let txn = old.begin_read()?;
        stats.rows_held = copy_kv(&txn, &new, &mut after)?;
        copy_whole(&txn, &new)?;
        drop(txn);
        std::fs::rename(tmp, &self.path).map_err(|e| io("renaming", &e))?;
        // From the rename on, the new file is the backend: writes go there whatever follows
        // (the old file has no name left to be found by).
        // Views begun on the old file keep reading it; redb closes it after the last.
        let replaced = std::mem::replace(
            &mut *self.db.write().expect("backend lock poisoned"),
            std::sync::Arc::new(new),
        );
        idx.defragging = false;
        stats.held = held.elapsed();
        drop(idx);
        // Closing a redb file writes its allocator state and syncs: outside the locks (done
        // under them, it held every put for 270 ms at 0.5 GiB).
        drop(replaced);
        drop(old);
        // Until the directory is synced, a crash can bring the old name back: the old file
        // then holds every write up to the swap (and the WAL the ones after, replayed from
        // the consistent index it records), as after any crash.
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("syncing the directory of", &e))?;
        }
        Ok(stats)
    }
}

/// Copies the key-value rows above `after` from `from` into `to`, in durable chunks; moves
/// `after` to the last row copied and returns how many.
fn copy_kv(
    from: &ReadTransaction,
    to: &Database,
    after: &mut Option<(u64, u64)>,
) -> Result<usize, MvccError> {
    let table = from.open_table(KV)?;
    let start = match *after {
        Some(k) => Bound::Excluded(k),
        None => Bound::Unbounded,
    };
    let mut rows = table.range::<(u64, u64)>((start, Bound::Unbounded))?;
    let mut copied = 0;
    loop {
        let mut w = to.begin_write()?;
        w.set_durability(Durability::Immediate)?;
        let mut bytes = 0;
        let mut more = false;
        {
            let mut out = w.open_table(KV)?;
            for item in rows.by_ref() {
                let (k, v) = item?;
                let key = k.value();
                out.insert(key, v.value())?;
                *after = Some(key);
                copied += 1;
                bytes += v.value().len() + 16;
                if bytes >= DEFRAG_CHUNK_BYTES {
                    more = true;
                    break;
                }
            }
        }
        w.commit()?;
        if !more {
            return Ok(copied);
        }
    }
}

/// Replaces the meta and aux tables of `to` with those of `from`, durably.
fn copy_whole(from: &ReadTransaction, to: &Database) -> Result<(), MvccError> {
    let mut w = to.begin_write()?;
    w.set_durability(Durability::Immediate)?;
    w.delete_table(META)?;
    w.delete_table(AUX)?;
    {
        let mut out = w.open_table(META)?;
        for item in from.open_table(META)?.iter()? {
            let (k, v) = item?;
            out.insert(k.value(), v.value())?;
        }
    }
    {
        let mut out = w.open_table(AUX)?;
        for item in from.open_table(AUX)?.iter()? {
            let (k, v) = item?;
            out.insert(k.value(), v.value())?;
        }
    }
    w.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::RangeOptions;

    fn filled(path: &Path) -> Store {
        let s = Store::open(path).expect("open");
        let mut b = s.batch().expect("batch");
        for k in 0..500 {
            let mut t = b.txn();
            t.put(format!("k{k:04}").as_bytes(), vec![1; 100], 0)
                .expect("put");
            t.end();
        }
        b.commit(true).expect("commit");
        s
    }

    fn count(s: &Store) -> i64 {
        s.range(b"k", b"l", RangeOptions::default())
            .expect("range")
            .count as i64
    }

    #[test]
    fn writes_between_the_copy_and_the_held_phase_are_copied_held() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = filled(&dir.path().join("db"));
        let stats = s
            .defragment_with(|| {
                let mut b = s.batch().expect("batch");
                for k in 500..600 {
                    let mut t = b.txn();
                    t.put(format!("k{k:04}").as_bytes(), vec![2; 100], 0)
                        .expect("put");
                    t.end();
                }
                b.commit(false).expect("commit");
            })
            .expect("defragment");
        assert_eq!((stats.rows_online, stats.rows_held), (500, 100));
        assert_eq!(count(&s), 600);
    }

    #[test]
    fn a_backend_replaced_during_the_copy_makes_it_give_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let s = filled(&path);
        let (snap, index, term) = s.snapshot().expect("snapshot");
        let err = s
            .defragment_with(|| {
                let mut b = s.batch().expect("batch");
                b.restore(&snap).expect("restore");
                b.set_consistent_index(index, term).expect("index");
                b.commit(false).expect("commit");
            })
            .expect_err("gives up");
        assert!(err.to_string().contains("run it again"), "{err}");
        assert!(!defrag_path(&path).exists());
        // Whole, and removals of compacted rows go on again.
        assert_eq!(count(&s), 500);
        let at = s.current_rev();
        let mut b = s.batch().expect("batch");
        b.compact(at).expect("compact");
        b.commit(false).expect("commit");
        assert!(!s.read_index().defragging);
        s.defragment().expect("defragment alone");
        assert_eq!(count(&s), 500);
    }
}
