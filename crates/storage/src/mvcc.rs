//! The MVCC store: every version of every key, by revision, in one redb file, plus an
//! in-memory index from key to its revisions (etcd's `treeIndex`), rebuilt on open.
//!
//! On disk (`member/oxcd.db`, a redb database):
//! - `kv`: `(main_rev u64, sub_rev u64)` -> `[flag u8][mvccpb.KeyValue protobuf]`, flag 0 = put,
//!   1 = tombstone (the KeyValue then carries only key and mod_revision).
//! - `meta`: `&str` -> `u64`: `format` (= [`FORMAT_VERSION`]), `consistent_index` and
//!   `consistent_term` (the last raft entry applied), `current_rev`, `compact_rev`.
//! - `aux`: `(table u8, key bytes)` -> bytes: state other modules apply from the log (v2 keys,
//!   leases, members) under a table number of their own.
//!
//! Durability: a [`WriteBatch`] is one redb write transaction. The server commits most batches
//! with `Durability::None` and every so often with `Durability::Immediate`; after a crash the
//! backend is back at its last durable batch and the raft log is replayed from
//! `consistent_index` + 1 (the log is never compacted past that point).
//!
//! Concurrency: one writer (the apply loop) holds the index write lock for the whole batch;
//! readers hold the read lock while they resolve revisions and open their redb snapshot. A
//! batch that ends without committing (dropped, or its commit failed) wrote nothing, so the
//! index it changed is rebuilt from the backend before anyone else uses it.
//!
//! Invariants asserted (a broken one would corrupt the backend, so it crashes): a revision is
//! written once, above the compact revision and after every earlier revision of its key;
//! a transaction's revision is the store's current one plus one; the consistent index never
//! goes back, except for the first one set after a [`WriteBatch::restore`], which names the
//! restored state.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use oxcd_api::mvccpb::{event::EventType, KeyValue};
use prost::Message;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};

mod bulk;
mod compaction;
mod defrag;

pub use bulk::{
    check_import_changes, ImportChange, KeepSet, ReadView, RestoreSink, RestoredMeta,
    RevisionRecord,
};
pub use compaction::{StaleFilter, COMPACT_STEP_KEYS, COMPACT_STEP_ROWS};
pub use defrag::{defrag_path, DefragStats, DEFRAG_HELD_ROWS_MAX};

const KV: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("kv");
type KvTable<'t> = redb::Table<'t, (u64, u64), &'static [u8]>;

self_cell::self_cell!(
    /// A batch's redb transaction and its KV table, which stays open from the first request
    /// that uses it to the commit. Opening a table is a lookup in redb's table tree and
    /// closing it writes its root back there: per request, that cost more than the
    /// request's own row.
    struct BatchTxn {
        owner: redb::WriteTransaction,
        #[covariant]
        dependent: KvSlot,
    }
);

/// The KV table of a [`BatchTxn`], once opened.
type KvSlot<'t> = Option<KvTable<'t>>;

impl BatchTxn {
    fn begin(txn: redb::WriteTransaction) -> BatchTxn {
        BatchTxn::new(txn, |_| None)
    }

    /// Runs `f` on the KV table, opening it first if it is not open.
    fn with_kv<R>(
        &mut self,
        f: impl FnOnce(&mut KvTable<'_>) -> Result<R, MvccError>,
    ) -> Result<R, MvccError> {
        self.with_dependent_mut(|txn, slot| f(open_kv(slot, txn)?))
    }

    /// Reads through the KV table: the open one, or one opened for this read.
    fn read_kv<R>(
        &self,
        f: impl FnOnce(&KvTable<'_>) -> Result<R, MvccError>,
    ) -> Result<R, MvccError> {
        match self.borrow_dependent() {
            Some(t) => f(t),
            None => f(&self.borrow_owner().open_table(KV)?),
        }
    }

    /// Closes the KV table (its root goes back to the transaction), for code that opens or
    /// deletes it by itself.
    fn close_kv(&mut self) {
        self.with_dependent_mut(|_, slot| *slot = None);
    }

    fn txn(&self) -> &redb::WriteTransaction {
        self.borrow_owner()
    }
}

/// The KV table of `slot`, opened in `txn` if it is not yet.
fn open_kv<'s, 't>(
    slot: &'s mut Option<KvTable<'t>>,
    txn: &'t redb::WriteTransaction,
) -> Result<&'s mut KvTable<'t>, MvccError> {
    let table = match slot.take() {
        Some(t) => t,
        None => txn.open_table(KV)?,
    };
    Ok(slot.insert(table))
}
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const AUX: TableDefinition<(u8, &[u8]), &[u8]> = TableDefinition::new("aux");

/// Bumped when the layout above changes; a database with another value is refused.
pub const FORMAT_VERSION: u64 = 1;
const FLAG_PUT: u8 = 0;
const FLAG_TOMBSTONE: u8 = 1;

/// Errors of the MVCC layer. The `Compacted` and `FutureRev` messages are etcd's, since
/// clients match on them.
#[derive(Debug, thiserror::Error)]
pub enum MvccError {
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    #[error("mvcc: required revision is a future revision")]
    FutureRev,
    #[error("backend: {0}")]
    Backend(String),
    #[error("backend {path} is not an oxcd database: {reason}")]
    NotOurs { path: String, reason: String },
    #[error(
        "backend {path} is in use by another process: is another oxcd running with this data dir? \
         stop it first, or give this one another --data-dir"
    )]
    InUse { path: String },
    #[error(
        "backend {path} is damaged: {reason}; replace this member's data from the cluster \
         (etcdctl member remove, empty the data dir, etcdctl member add, start with \
         --initial-cluster-state existing) or restore a snapshot into a new cluster"
    )]
    Damaged { path: String, reason: String },
    #[error("backend record at revision {main}.{sub} is damaged: {reason}")]
    Corrupt { main: u64, sub: u64, reason: String },
    #[error("defragment: {0}")]
    Defrag(String),
    #[error("restore: {0}")]
    Restore(String),
    #[error("import: {0}")]
    Import(String),
    #[error("snapshot records: {0}")]
    SnapshotIo(std::io::Error),
    /// A range read more than its [`RangeOptions::bytes_max`]: `bytes` when it stopped.
    #[error("range response of at least {bytes} bytes exceeds {max}")]
    ResponseTooLarge { bytes: usize, max: usize },
}

/// redb's page cache when the server does not say (`--backend-cache-bytes`). redb keeps the
/// pages it reads and the pages of commits not yet written back in anonymous memory, up to
/// this size (redb's own default is 1 GiB); the kernel's page cache, which it can reclaim,
/// holds the rest of the file. See docs/design.md, Memory.
pub const CACHE_BYTES_DEFAULT: usize = 64 * 1024 * 1024;

impl From<redb::Error> for MvccError {
    fn from(e: redb::Error) -> Self {
        MvccError::Backend(e.to_string())
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for MvccError {
            fn from(e: $t) -> Self { MvccError::Backend(e.to_string()) }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::DatabaseError,
    redb::SetDurabilityError
);

/// A revision: `main` is the store-wide write counter, `sub` the position inside one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rev {
    pub main: i64,
    pub sub: i64,
}

/// The revisions of one key, oldest first; `true` marks a tombstone.
#[derive(Debug, Default, Clone)]
struct KeyHistory {
    revs: Vec<(Rev, bool)>,
    /// `create_revision` and `version` of the newest record, `None` if it is a tombstone
    /// (or there is none). A put takes its own from here without reading the previous value
    /// from the backend, as etcd takes them from its key index's generations; a compaction
    /// may drop the revision that created the key, never this.
    live: Option<(i64, i64)>,
}

impl KeyHistory {
    /// The revision holding the key's value as of `at`, or `None` if absent at `at`.
    fn visible_at(&self, at: i64) -> Option<Rev> {
        let pos = self.revs.partition_point(|(r, _)| r.main <= at);
        if pos == 0 {
            return None;
        }
        let (rev, tomb) = self.revs[pos - 1];
        (!tomb).then_some(rev)
    }

    /// Drops revisions not needed to read at `at` or later; returns the dropped ones.
    fn compact(&mut self, at: i64) -> Vec<Rev> {
        let pos = self.revs.partition_point(|(r, _)| r.main <= at);
        if pos == 0 {
            return Vec::new();
        }
        // Keep the latest revision <= at unless it is a tombstone.
        let keep_from = if self.revs[pos - 1].1 { pos } else { pos - 1 };
        self.revs.drain(..keep_from).map(|(r, _)| r).collect()
    }
}

#[derive(Debug)]
struct Index {
    keys: BTreeMap<Vec<u8>, KeyHistory>,
    current_rev: i64,
    compact_rev: i64,
    consistent_index: u64,
    consistent_term: u64,
    /// Set by a restore until the next consistent index is set: that one names the restored
    /// state and may be lower (`snapshot restore` starts a new cluster's log at 1).
    restored: bool,
    /// Rows of compacted revisions not yet removed from the backend.
    pending: compaction::Pending,
    /// The index pass of a compaction still going (module `compaction`).
    pass: Option<compaction::IndexPass>,
    /// A defragmentation is copying the backend: no row may be removed (see `defrag`).
    defragging: bool,
    /// Counts replacements of the backend's rows other than compaction (a restore, an
    /// import's dropped history), which a defragmentation cannot follow.
    rewrites: u64,
}

/// The revision of an empty store. etcd starts at 1, so the first write gets revision 2;
/// clients see (and tests compare) the same numbers.
pub const INITIAL_REV: i64 = 1;

impl Default for Index {
    fn default() -> Self {
        Index {
            keys: BTreeMap::new(),
            current_rev: INITIAL_REV,
            compact_rev: 0,
            consistent_index: 0,
            consistent_term: 0,
            restored: false,
            pending: compaction::Pending::default(),
            pass: None,
            defragging: false,
            rewrites: 0,
        }
    }
}

impl Index {
    /// Adds a record read back from the backend, which lists them in revision order.
    fn push_loaded(&mut self, key: Vec<u8>, rev: Rev, tombstone: bool, created: i64, version: i64) {
        self.current_rev = self.current_rev.max(rev.main);
        let hist = self.keys.entry(key).or_default();
        hist.revs.push((rev, tombstone));
        hist.live = (!tombstone).then_some((created, version));
    }

    /// Drops from the index what a compaction at `at` drops, and queues the rows, at once
    /// (at open, after a restore).
    fn compact(&mut self, at: i64) {
        self.start_compaction(at);
        self.compact_keys(usize::MAX);
    }

    /// Starts the index pass of a compaction at `at` and makes its first step (see
    /// `compaction`): the rest goes [`compaction::COMPACT_STEP_KEYS`] keys per batch. A pass
    /// not finished starts over at the new revision, keeping what it dropped.
    fn start_compaction(&mut self, at: i64) {
        let dropped = self.pass.take().map(|p| p.dropped).unwrap_or_default();
        self.pass = Some(compaction::IndexPass {
            at,
            next: None,
            dropped,
        });
        self.compact_keys(compaction::COMPACT_STEP_KEYS);
    }

    /// The next `max` keys of the index pass; at its end, its rows join the pending ones.
    fn compact_keys(&mut self, max: usize) {
        let Some(pass) = self.pass.as_mut() else {
            return;
        };
        let start = match &pass.next {
            Some(k) => Bound::Included(k.as_slice()),
            None => Bound::Unbounded,
        };
        let mut emptied = Vec::new();
        let mut stopped_at = None;
        for (n, (key, hist)) in self
            .keys
            .range_mut::<[u8], _>((start, Bound::Unbounded))
            .enumerate()
        {
            if n == max {
                stopped_at = Some(key.clone());
                break;
            }
            pass.dropped.extend(hist.compact(pass.at));
            if hist.revs.is_empty() {
                emptied.push(key.clone());
            }
        }
        for key in &emptied {
            self.keys.remove(key);
        }
        match stopped_at {
            // The key stopped at is not processed yet: the next step starts there.
            Some(key) => pass.next = Some(key),
            None => {
                if let Some(done) = self.pass.take() {
                    self.pending.add(done.dropped);
                }
            }
        }
    }
}

/// Reads the index from the backend's committed state.
fn load_index(db: &Database) -> Result<Index, MvccError> {
    let mut index = Index::default();
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    let get = |name: &str| -> Result<u64, MvccError> {
        Ok(meta.get(name)?.map(|v| v.value()).unwrap_or(0))
    };
    index.current_rev = (get("current_rev")? as i64).max(INITIAL_REV);
    index.compact_rev = get("compact_rev")? as i64;
    index.consistent_index = get("consistent_index")?;
    index.consistent_term = get("consistent_term")?;
    for item in txn.open_table(KV)?.iter()? {
        let (k, v) = item?;
        let (main, sub) = k.value();
        let (tomb, record) = decode_record(main, sub, v.value())?;
        let rev = Rev {
            main: main as i64,
            sub: sub as i64,
        };
        index.push_loaded(
            record.key,
            rev,
            tomb,
            record.create_revision,
            record.version,
        );
    }
    // Rows a compaction had not removed yet (see `compaction`) are found again.
    if index.compact_rev > 0 {
        index.compact(index.compact_rev);
    }
    Ok(index)
}

/// Which keys a range covers, etcd's way: empty end = one key, `\0` end = from key onwards.
fn key_bounds<'a>(key: &'a [u8], end: &'a [u8]) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    if end.is_empty() {
        (Bound::Included(key), Bound::Included(key))
    } else if end == [0] {
        (Bound::Included(key), Bound::Unbounded)
    } else {
        (Bound::Included(key), Bound::Excluded(end))
    }
}

/// A row of an auxiliary table: key, value.
pub type AuxRow = (Vec<u8>, Vec<u8>);

/// What to read.
#[derive(Debug, Clone, Copy, Default)]
pub struct RangeOptions {
    /// Maximum number of keys returned; 0 = no limit.
    pub limit: usize,
    /// Revision to read at; 0 = current.
    pub rev: i64,
    /// Only count, fetch no values.
    pub count_only: bool,
    /// Return keys without their values.
    pub keys_only: bool,
    /// The bytes the returned KeyValues may take encoded, at most; 0 = no bound. Past it the
    /// range stops reading and fails with [`MvccError::ResponseTooLarge`].
    pub bytes_max: usize,
}

/// What a range read found. `count` is the number of keys in the range, whatever the limit.
#[derive(Debug, Default, Clone)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    pub count: usize,
    pub rev: i64,
}

/// What [`TxnWrite::put_with`] did.
#[derive(Debug, Clone, Default)]
pub struct Put {
    /// The key existed before (the put did not create it).
    pub existed: bool,
    /// Its previous key-value, when asked for.
    pub prev: Option<KeyValue>,
}

/// A change made by a write, for watchers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    pub prev_kv: Option<KeyValue>,
}

impl Event {
    pub fn event_type(&self) -> EventType {
        match self.kind {
            EventKind::Put => EventType::Put,
            EventKind::Delete => EventType::Delete,
        }
    }
}

/// The MVCC store. Cheap to share behind an `Arc`.
pub struct Store {
    /// Behind a lock only so that [`Store::defragment`] can have it alone; transactions do
    /// not borrow it, so every other use holds the read side for an instant.
    /// In an `Arc` so that a read transaction's user can keep the file it reads open after
    /// a defragmentation replaced it (redb fails read transactions of a closed database).
    db: RwLock<Arc<Database>>,
    index: RwLock<Index>,
    /// The backend file (a defragmentation replaces it) and its page cache bound.
    path: PathBuf,
    cache_bytes: usize,
    /// Held by the one defragmentation that may run.
    defrag_lock: Mutex<()>,
}

fn decode_record(main: u64, sub: u64, bytes: &[u8]) -> Result<(bool, KeyValue), MvccError> {
    let corrupt = |reason: String| MvccError::Corrupt { main, sub, reason };
    let (flag, body) = bytes
        .split_first()
        .ok_or_else(|| corrupt("empty record".into()))?;
    let kv = KeyValue::decode(body).map_err(|e| corrupt(e.to_string()))?;
    match *flag {
        FLAG_PUT => Ok((false, kv)),
        FLAG_TOMBSTONE => Ok((true, kv)),
        other => Err(corrupt(format!("unknown flag {other}"))),
    }
}

fn encode_record(tombstone: bool, kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + kv.encoded_len());
    out.push(if tombstone { FLAG_TOMBSTONE } else { FLAG_PUT });
    kv.encode(&mut out).expect("Vec<u8> grows as needed");
    out
}

/// The record at `rev`, which the index says exists.
fn fetch_in(
    table: &impl ReadableTable<(u64, u64), &'static [u8]>,
    rev: Rev,
) -> Result<KeyValue, MvccError> {
    let (main, sub) = rev_key(rev);
    let v = table.get((main, sub))?.ok_or_else(|| MvccError::Corrupt {
        main,
        sub,
        reason: "indexed revision missing from the backend".into(),
    })?;
    Ok(decode_record(main, sub, v.value())?.1)
}

/// Writes one record at (`main`, next sub revision) and indexes it.
fn record_in(
    table: &mut redb::Table<(u64, u64), &'static [u8]>,
    index: &mut Index,
    sub: &mut i64,
    main: i64,
    tombstone: bool,
    kv: &KeyValue,
) -> Result<Rev, MvccError> {
    let rev = Rev { main, sub: *sub };
    *sub += 1;
    // A key already indexed is found without copying it (the common case: an update).
    let compact_rev = index.compact_rev;
    let hist = match index.keys.get_mut(kv.key.as_slice()) {
        Some(hist) => hist,
        None => index.keys.entry(kv.key.clone()).or_default(),
    };
    let last = hist.revs.last().map(|(r, _)| *r);
    write_row(table, compact_rev, last, rev, tombstone, kv)?;
    hist.revs.push((rev, tombstone));
    hist.live = (!tombstone).then_some((kv.create_revision, kv.version));
    Ok(rev)
}

/// Writes one revision's row, after the checks every write makes: above the compact
/// revision, after the key's `last` revision, never over an existing row.
fn write_row(
    table: &mut redb::Table<(u64, u64), &'static [u8]>,
    compact_rev: i64,
    last: Option<Rev>,
    rev: Rev,
    tombstone: bool,
    kv: &KeyValue,
) -> Result<(), MvccError> {
    assert!(
        rev.main > compact_rev,
        "mvcc: writing revision {} at or below the compact revision {compact_rev}",
        rev.main
    );
    if let Some(last) = last {
        assert!(
            last < rev,
            "mvcc: writing {rev:?} after {last:?} of the same key: revisions go back"
        );
    }
    let replaced = table
        .insert(rev_key(rev), encode_record(tombstone, kv).as_slice())?
        .is_some();
    assert!(!replaced, "mvcc: revision {rev:?} written twice");
    Ok(())
}

fn rev_key(rev: Rev) -> (u64, u64) {
    (rev.main as u64, rev.sub as u64)
}

impl Store {
    /// Opens (or creates) the backend at `path` with [`CACHE_BYTES_DEFAULT`] of page cache
    /// and rebuilds the key index from it.
    pub fn open(path: &Path) -> Result<Store, MvccError> {
        Store::open_with_cache(path, CACHE_BYTES_DEFAULT)
    }

    /// Opens (or creates) the backend at `path`, with at most `cache_bytes` of redb page cache,
    /// and rebuilds the key index from it.
    ///
    /// The checksum of every page is verified first (redb's integrity check, which reads
    /// the whole file): a byte changed on disk is found now, not by the periodic corruption
    /// check after the member served it. A file another process has open is refused.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Store, MvccError> {
        let shown = path.display().to_string();
        let not_ours = |reason: String| MvccError::NotOurs {
            path: shown.clone(),
            reason,
        };
        let existed = path.exists();
        // A defragmentation a crash interrupted: the backend is still the old file.
        let _ = std::fs::remove_file(defrag_path(path));
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .set_check_integrity_on_open(true)
            .create(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => MvccError::InUse {
                    path: shown.clone(),
                },
                redb::DatabaseError::Storage(redb::StorageError::Corrupted(reason)) => {
                    MvccError::Damaged {
                        path: shown.clone(),
                        reason,
                    }
                }
                e => not_ours(e.to_string()),
            })?;
        {
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            {
                let mut meta = txn.open_table(META)?;
                let format = meta.get("format")?.map(|v| v.value());
                match format {
                    Some(FORMAT_VERSION) => {}
                    Some(other) => {
                        return Err(not_ours(format!(
                            "format version {other}, this oxcd reads version {FORMAT_VERSION}"
                        )))
                    }
                    None if existed && meta.len()? > 0 => {
                        return Err(not_ours("no format version recorded".into()))
                    }
                    None => {
                        meta.insert("format", FORMAT_VERSION)?;
                    }
                }
            }
            txn.open_table(KV)?;
            txn.open_table(AUX)?;
            txn.commit()?;
        }
        let index = load_index(&db)?;
        Ok(Store {
            db: RwLock::new(Arc::new(db)),
            index: RwLock::new(index),
            path: path.to_path_buf(),
            cache_bytes,
            defrag_lock: Mutex::new(()),
        })
    }

    /// The backend; hold it as long as a transaction begun on it.
    fn db(&self) -> Arc<Database> {
        self.db.read().expect("backend lock poisoned").clone()
    }

    fn index_mut(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().expect("mvcc index lock poisoned")
    }

    fn read_index(&self) -> RwLockReadGuard<'_, Index> {
        // A poisoned lock means the apply loop panicked mid-batch: an invariant broke.
        self.index.read().expect("mvcc index lock poisoned")
    }

    /// The latest revision.
    pub fn current_rev(&self) -> i64 {
        self.read_index().current_rev
    }

    /// The revision up to which history has been compacted.
    pub fn compact_rev(&self) -> i64 {
        self.read_index().compact_rev
    }

    /// The last raft entry applied to this backend (index, term).
    pub fn consistent_index(&self) -> (u64, u64) {
        let idx = self.read_index();
        (idx.consistent_index, idx.consistent_term)
    }

    /// Reads keys in `[key, end)` (etcd's range rules) at a revision.
    pub fn range(
        &self,
        key: &[u8],
        end: &[u8],
        opts: RangeOptions,
    ) -> Result<RangeResult, MvccError> {
        let idx = self.read_index();
        let db = self.db();
        let txn = db.begin_read()?;
        let table = txn.open_table(KV)?;
        range_in(&idx, key, end, opts, idx.current_rev, |rev| {
            fetch_in(&table, rev)
        })
    }

    /// The changes made at revisions `from..=to`, oldest first, about `limit` of them, whole
    /// revisions only (for watchers that start in the past or fell behind). `prev_kv` is
    /// left empty: a watcher that wants it looks up the revision before.
    pub fn history(&self, from: i64, to: i64, limit: usize) -> Result<Vec<Event>, MvccError> {
        let idx = self.read_index();
        if from < idx.compact_rev {
            return Err(MvccError::Compacted);
        }
        let db = self.db();
        let txn = db.begin_read()?;
        let mut stale = idx.pending.filter();
        drop(idx);
        let table = txn.open_table(KV)?;
        let mut out = Vec::new();
        let start = (from.max(0) as u64, 0u64);
        let end = (to.max(0) as u64 + 1, 0u64);
        for item in table.range(start..end)? {
            let (k, v) = item?;
            let (main, sub) = k.value();
            // Stop at the limit, but only between revisions: a chunk never splits one.
            if out.len() >= limit
                && out
                    .last()
                    .is_some_and(|e: &Event| e.kv.mod_revision != main as i64)
            {
                break;
            }
            let rev = Rev {
                main: main as i64,
                sub: sub as i64,
            };
            if stale.is_stale(rev) {
                continue;
            }
            let (tomb, kv) = decode_record(main, sub, v.value())?;
            out.push(Event {
                kind: if tomb {
                    EventKind::Delete
                } else {
                    EventKind::Put
                },
                kv,
                prev_kv: None,
            });
        }
        Ok(out)
    }

    /// Reads every row of an auxiliary table (v2 keys, leases, members) at open.
    pub fn aux_load(&self, table: u8) -> Result<Vec<AuxRow>, MvccError> {
        let db = self.db();
        let txn = db.begin_read()?;
        let aux = txn.open_table(AUX)?;
        let mut out = Vec::new();
        let start: (u8, &[u8]) = (table, &[]);
        for item in aux.range(start..)? {
            let (k, v) = item?;
            let (t, key) = k.value();
            if t != table {
                break;
            }
            out.push((key.to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// How many rows of compacted revisions are still to be removed from the backend.
    /// An index pass not finished counts as one.
    pub fn compaction_pending(&self) -> usize {
        let idx = self.read_index();
        idx.pending.len() + usize::from(idx.pass.is_some())
    }

    /// Removes the next [`COMPACT_STEP_ROWS`] rows of compacted revisions in a batch of their
    /// own (every batch removes as many; this is for when no writes come). Returns how many
    /// are left.
    /// Returns 0 while a defragmentation runs: no row can be removed until it ends.
    pub fn compact_step(&self) -> Result<usize, MvccError> {
        if self.compaction_pending() == 0 || self.read_index().defragging {
            return Ok(0);
        }
        self.batch()?.commit(false)?;
        Ok(self.compaction_pending())
    }

    /// Removes every row of compacted revisions, one bounded batch at a time.
    pub fn finish_compaction(&self) -> Result<(), MvccError> {
        while self.compact_step()? > 0 {}
        Ok(())
    }

    /// Starts the batch of writes the apply loop makes for a group of log entries.
    pub fn batch(&self) -> Result<WriteBatch<'_>, MvccError> {
        let index = self.index.write().expect("mvcc index lock poisoned");
        let txn = self.db().begin_write()?;
        Ok(WriteBatch {
            index: IndexWrite {
                index,
                db: &self.db,
                committed: false,
            },
            tx: BatchTxn::begin(txn),
        })
    }

    /// Serialises the whole backend in memory, consistent with one applied index, in the
    /// format of [`ReadView::write_records`]; returns it with that index and its term. For
    /// small backends and tests: a raft snapshot is written to a file from a view instead.
    pub fn snapshot(&self) -> Result<(Vec<u8>, u64, u64), MvccError> {
        let view = self.read_view()?;
        let mut out = Vec::new();
        view.write_records(&mut out)?;
        let (ci, ct) = view.consistent_index();
        Ok((out, ci, ct))
    }
}

/// Resolves a range against the index, fetching values through `fetch`.
/// `newest` is the highest readable revision: the current one, or inside a write
/// transaction that has changed something, the transaction's own.
fn range_in(
    idx: &Index,
    key: &[u8],
    end: &[u8],
    opts: RangeOptions,
    newest: i64,
    mut fetch: impl FnMut(Rev) -> Result<KeyValue, MvccError>,
) -> Result<RangeResult, MvccError> {
    let at = if opts.rev <= 0 { newest } else { opts.rev };
    if at > newest {
        return Err(MvccError::FutureRev);
    }
    if at < idx.compact_rev {
        return Err(MvccError::Compacted);
    }
    let mut result = RangeResult {
        rev: newest,
        ..Default::default()
    };
    if !end.is_empty() && end != [0] && key >= end {
        return Ok(result);
    }
    let mut bytes = 0usize;
    for (_, hist) in idx.keys.range::<[u8], _>(key_bounds(key, end)) {
        let Some(rev) = hist.visible_at(at) else {
            continue;
        };
        result.count += 1;
        if opts.count_only || (opts.limit > 0 && result.kvs.len() >= opts.limit) {
            continue;
        }
        let mut kv = fetch(rev)?;
        if opts.keys_only {
            kv.value = Vec::new();
        }
        bytes += response_bytes(&kv);
        if opts.bytes_max > 0 && bytes > opts.bytes_max {
            return Err(MvccError::ResponseTooLarge {
                bytes,
                max: opts.bytes_max,
            });
        }
        result.kvs.push(kv);
    }
    Ok(result)
}

/// The keys live in a range at revision `at`, with the revision that holds each one's value.
fn live_keys(
    idx: &Index,
    key: &[u8],
    end: &[u8],
    at: i64,
    after: Option<&[u8]>,
    max: usize,
) -> Result<Vec<(Vec<u8>, Rev)>, MvccError> {
    if at < idx.compact_rev {
        return Err(MvccError::Compacted);
    }
    if !end.is_empty() && end != [0] && key >= end {
        return Ok(Vec::new());
    }
    let (mut lo, hi) = key_bounds(key, end);
    if let Some(a) = after {
        lo = Bound::Excluded(a);
    }
    Ok(idx
        .keys
        .range::<[u8], _>((lo, hi))
        .filter_map(|(k, hist)| hist.visible_at(at).map(|rev| (k.clone(), rev)))
        .take(max)
        .collect())
}

/// Keys a range delete takes from the index at a time: its memory for keys is this many
/// (plus the events it keeps), not the whole range's.
const DELETE_CHUNK_KEYS: usize = 1024;

/// What [`TxnWrite::delete_range`] removed.
#[derive(Debug, Default)]
pub struct Deleted {
    pub count: usize,
    /// The previous key-values, when asked for (in key order).
    pub prev: Vec<KeyValue>,
}

/// The bytes a KeyValue takes in a response: its encoding, its field tag and length.
pub fn response_bytes(kv: &KeyValue) -> usize {
    let len = kv.encoded_len();
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

/// One batch of writes: a redb write transaction plus exclusive use of the index.
pub struct WriteBatch<'a> {
    index: IndexWrite<'a>,
    tx: BatchTxn,
}

/// A batch's hold on the index. The batch changes the index as it writes; if it ends without
/// committing, the backend holds none of those writes, so the index is read back from the
/// backend before the lock is released (an aborted batch is rare: an I/O error or a bug).
struct IndexWrite<'a> {
    index: RwLockWriteGuard<'a, Index>,
    db: &'a RwLock<Arc<Database>>,
    committed: bool,
}

impl std::ops::Deref for IndexWrite<'_> {
    type Target = Index;
    fn deref(&self) -> &Index {
        &self.index
    }
}

impl std::ops::DerefMut for IndexWrite<'_> {
    fn deref_mut(&mut self) -> &mut Index {
        &mut self.index
    }
}

impl Drop for IndexWrite<'_> {
    fn drop(&mut self) {
        // While unwinding, the lock is poisoned and nobody reads the index again.
        if self.committed || std::thread::panicking() {
            return;
        }
        let loaded = load_index(&self.db.read().expect("backend lock poisoned"));
        match loaded {
            Ok(index) => {
                // A defragmentation running goes on refusing removals, and gives up: it
                // cannot tell what the aborted batch left.
                let (defragging, rewrites) = (self.index.defragging, self.index.rewrites);
                *self.index = index;
                self.index.defragging = defragging;
                self.index.rewrites = rewrites + 1;
            }
            // The index would list writes the backend does not hold: stop here (the panic
            // poisons the lock, so every later use fails too).
            Err(e) => panic!("mvcc: cannot rebuild the key index after an aborted batch: {e}"),
        }
    }
}

/// One write transaction of etcd's (one request): all its changes share a main revision.
pub struct TxnWrite<'b, 'a> {
    index: &'b mut IndexWrite<'a>,
    /// The batch's transaction, whose KV table stays open across requests.
    tx: &'b mut BatchTxn,
    main: i64,
    sub: i64,
    events: Vec<Event>,
}

impl<'a> WriteBatch<'a> {
    /// Starts one request's write transaction.
    pub fn txn(&mut self) -> TxnWrite<'_, 'a> {
        let main = self.index.current_rev + 1;
        TxnWrite {
            index: &mut self.index,
            tx: &mut self.tx,
            main,
            sub: 0,
            events: Vec::new(),
        }
    }

    pub fn current_rev(&self) -> i64 {
        self.index.current_rev
    }

    pub fn compact_rev(&self) -> i64 {
        self.index.compact_rev
    }

    fn fetch(&self, rev: Rev) -> Result<KeyValue, MvccError> {
        self.tx.read_kv(|t| fetch_in(t, rev))
    }

    /// Reads inside the batch, seeing its own writes.
    pub fn range(
        &self,
        key: &[u8],
        end: &[u8],
        opts: RangeOptions,
    ) -> Result<RangeResult, MvccError> {
        range_in(&self.index, key, end, opts, self.index.current_rev, |rev| {
            self.fetch(rev)
        })
    }

    /// Drops history below `rev` (etcd's compaction). Errors as etcd's.
    pub fn compact(&mut self, rev: i64) -> Result<(), MvccError> {
        if rev <= self.index.compact_rev {
            return Err(MvccError::Compacted);
        }
        if rev > self.index.current_rev {
            return Err(MvccError::FutureRev);
        }
        // The index drops the revisions in bounded steps from now on (reads below `rev` are
        // refused at once), their rows leave the backend after it in bounded steps too.
        self.index.start_compaction(rev);
        self.index.compact_rev = rev;
        self.tx
            .txn()
            .open_table(META)?
            .insert("compact_rev", rev as u64)?;
        Ok(())
    }

    /// Removes up to `max` rows of compacted revisions (module `compaction`).
    fn remove_compacted(&mut self, max: usize) -> Result<(), MvccError> {
        if self.index.pending.len() == 0 || self.index.defragging {
            return Ok(());
        }
        let (revs, range) = self.index.pending.take(max);
        self.tx.with_kv(|table| {
            for r in &revs[range] {
                table.remove(rev_key(*r))?;
            }
            Ok(())
        })
    }

    /// Records the last applied raft entry; written in the same transaction as its effects.
    pub fn set_consistent_index(&mut self, index: u64, term: u64) -> Result<(), MvccError> {
        // Going back would apply entries twice; only a restored backend starts anew.
        assert!(
            self.index.restored || index >= self.index.consistent_index,
            "mvcc: consistent index going back from {} to {index}",
            self.index.consistent_index
        );
        self.index.restored = false;
        self.index.consistent_index = index;
        self.index.consistent_term = term;
        let mut meta = self.tx.txn().open_table(META)?;
        meta.insert("consistent_index", index)?;
        meta.insert("consistent_term", term)?;
        Ok(())
    }

    /// Writes a row of an auxiliary table.
    pub fn aux_put(&mut self, table: u8, key: &[u8], value: &[u8]) -> Result<(), MvccError> {
        self.tx.txn().open_table(AUX)?.insert((table, key), value)?;
        Ok(())
    }

    /// Removes a row of an auxiliary table.
    pub fn aux_delete(&mut self, table: u8, key: &[u8]) -> Result<(), MvccError> {
        self.tx.txn().open_table(AUX)?.remove((table, key))?;
        Ok(())
    }

    /// Replaces the whole backend with a snapshot made by [`Store::snapshot`].
    pub fn restore(&mut self, mut data: &[u8]) -> Result<(), MvccError> {
        self.restore_from(&mut data)
    }

    /// Replaces the whole backend with the records [`ReadView::write_records`] wrote, read
    /// one at a time from `r` (memory: one record, not the snapshot).
    pub fn restore_from(&mut self, r: &mut impl std::io::Read) -> Result<(), MvccError> {
        self.restore_with(|sink| {
            let mut meta = RestoredMeta::default();
            let (mut k, mut v) = (Vec::new(), Vec::new());
            while let Some(t) = next_record(r, &mut k, &mut v)? {
                match t {
                    0 if k.len() == 16 => {
                        let word = |b: &[u8]| b.try_into().map(u64::from_be_bytes);
                        let (main, sub) = match (word(&k[..8]), word(&k[8..])) {
                            (Ok(m), Ok(s)) => (m, s),
                            _ => return Err(snapshot_damaged("revision key")),
                        };
                        let rev = Rev {
                            main: main as i64,
                            sub: sub as i64,
                        };
                        sink.raw_revision(rev, &v)?;
                    }
                    1 => {
                        let name =
                            std::str::from_utf8(&k).map_err(|_| snapshot_damaged("meta name"))?;
                        let val = <[u8; 8]>::try_from(v.as_slice())
                            .map(u64::from_le_bytes)
                            .map_err(|_| snapshot_damaged("meta value"))?;
                        match name {
                            "current_rev" => meta.current_rev = val as i64,
                            "compact_rev" => meta.compact_rev = val as i64,
                            "consistent_index" => meta.consistent_index = val,
                            "consistent_term" => meta.consistent_term = val,
                            _ => {}
                        }
                    }
                    2 if !k.is_empty() => sink.aux_put(k[0], &k[1..], &v)?,
                    _ => return Err(snapshot_damaged("unknown record")),
                }
            }
            Ok(meta)
        })
    }

    /// Commits the batch; `durable` waits for fsync (redb `Durability::Immediate`).
    pub fn commit(mut self, durable: bool) -> Result<(), MvccError> {
        assert!(
            self.index.compact_rev <= self.index.current_rev,
            "mvcc: compact revision {} above the current revision {}",
            self.index.compact_rev,
            self.index.current_rev
        );
        self.index.compact_keys(compaction::COMPACT_STEP_KEYS);
        self.remove_compacted(COMPACT_STEP_ROWS)?;
        let rev = self.index.current_rev as u64;
        let mut txn = self.tx.into_owner();
        txn.open_table(META)?.insert("current_rev", rev)?;
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        txn.commit()?;
        self.index.committed = true;
        Ok(())
    }
}

/// A damaged [`Store::snapshot`] body.
fn snapshot_damaged(reason: &str) -> MvccError {
    MvccError::Corrupt {
        main: 0,
        sub: 0,
        reason: format!("snapshot: {reason}"),
    }
}

/// Reads the next record of a snapshot body into `key` and `value`: its table, or `None` at
/// the end. A field is read as its bytes come, never allocated from the length it claims.
fn next_record(
    r: &mut impl std::io::Read,
    key: &mut Vec<u8>,
    value: &mut Vec<u8>,
) -> Result<Option<u8>, MvccError> {
    let mut table = [0u8; 1];
    loop {
        match r.read(&mut table) {
            Ok(0) => return Ok(None),
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(MvccError::SnapshotIo(e)),
        }
    }
    read_field(r, key)?;
    read_field(r, value)?;
    Ok(Some(table[0]))
}

/// One `[len u32 LE][bytes]` field of a snapshot record.
fn read_field(r: &mut impl std::io::Read, buf: &mut Vec<u8>) -> Result<(), MvccError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).map_err(truncated_or_io)?;
    let len = u32::from_le_bytes(len) as u64;
    buf.clear();
    let got = std::io::Read::read_to_end(&mut std::io::Read::take(&mut *r, len), buf)
        .map_err(MvccError::SnapshotIo)?;
    if got as u64 != len {
        return Err(snapshot_damaged("truncated"));
    }
    Ok(())
}

fn truncated_or_io(e: std::io::Error) -> MvccError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        snapshot_damaged("truncated")
    } else {
        MvccError::SnapshotIo(e)
    }
}

impl TxnWrite<'_, '_> {
    /// The revision this transaction's writes get.
    pub fn rev(&self) -> i64 {
        self.main
    }

    /// Whether this transaction wrote a row (every write takes a sub-revision; a range
    /// delete may keep no event for what it wrote, so the events cannot tell).
    fn changed(&self) -> bool {
        self.sub > 0
    }

    /// The revision a read sees at this point of the transaction: its own once it has
    /// changed something, the store's before (etcd's `storeTxnWrite.Range`).
    pub fn read_rev(&self) -> i64 {
        if !self.changed() {
            self.index.current_rev
        } else {
            self.main
        }
    }

    /// Reads as of this transaction, seeing its own earlier writes (as etcd does).
    pub fn range(
        &self,
        key: &[u8],
        end: &[u8],
        opts: RangeOptions,
    ) -> Result<RangeResult, MvccError> {
        let at = self.read_rev();
        self.tx
            .read_kv(|t| range_in(self.index, key, end, opts, at, |rev| fetch_in(t, rev)))
    }

    fn latest(&mut self, key: &[u8]) -> Result<Option<KeyValue>, MvccError> {
        let at = self.main;
        let Some(rev) = self.index.keys.get(key).and_then(|h| h.visible_at(at)) else {
            return Ok(None);
        };
        Ok(Some(self.tx.with_kv(|t| fetch_in(t, rev))?))
    }

    /// Puts a key; returns the previous value if the key existed.
    pub fn put(
        &mut self,
        key: &[u8],
        value: Vec<u8>,
        lease: i64,
    ) -> Result<Option<KeyValue>, MvccError> {
        Ok(self.put_with(key, value, lease, true)?.prev)
    }

    /// Puts a key. The previous value is read from the backend only when `with_prev` asks
    /// for it: the key's creation revision and version come from the index. Without it, the
    /// event carries no previous value either; a watcher that wants one reads it at the
    /// revision before, as etcd's watch stream does (and as for deletes).
    pub fn put_with(
        &mut self,
        key: &[u8],
        value: Vec<u8>,
        lease: i64,
        with_prev: bool,
    ) -> Result<Put, MvccError> {
        #[cfg(debug_assertions)]
        {
            let live = self.index.keys.get(key).and_then(|h| h.live);
            let read = self.latest(key)?.map(|p| (p.create_revision, p.version));
            debug_assert_eq!(read, live, "mvcc: the index's newest record of {key:?}");
        }
        let prev = if with_prev && self.index.keys.get(key).is_some_and(|h| h.live.is_some()) {
            self.latest(key)?
        } else {
            None
        };
        // The key index is searched once for an update (it was twice: for the key's numbers,
        // then to record the revision); a new key is searched again to insert it.
        let main = self.main;
        let index = &mut **self.index;
        let compact_rev = index.compact_rev;
        let mut found = index.keys.get_mut(key);
        let live = found.as_ref().and_then(|h| h.live);
        let (create_revision, version) = match live {
            Some((created, version)) => (created, version + 1),
            None => (main, 1),
        };
        let kv = KeyValue {
            key: key.to_vec(),
            create_revision,
            mod_revision: main,
            version,
            value,
            lease,
        };
        let rev = Rev {
            main,
            sub: self.sub,
        };
        let last = found.as_ref().and_then(|h| h.revs.last().map(|(r, _)| *r));
        self.tx
            .with_kv(|table| write_row(table, compact_rev, last, rev, false, &kv))?;
        self.sub += 1;
        let hist = match found.take() {
            Some(hist) => hist,
            None => index.keys.entry(kv.key.clone()).or_default(),
        };
        hist.revs.push((rev, false));
        hist.live = Some((kv.create_revision, kv.version));
        self.events.push(Event {
            kind: EventKind::Put,
            kv,
            prev_kv: prev.clone(),
        });
        Ok(Put {
            existed: live.is_some(),
            prev,
        })
    }

    /// Deletes the keys in a range; returns how many, and their previous values when
    /// `with_prev` asks for them. Without it no value is read: the index knows which keys
    /// are live, and the events carry no previous value (a watcher that wants one reads
    /// it at the revision before, as etcd's watch stream does).
    pub fn delete_range(
        &mut self,
        key: &[u8],
        end: &[u8],
        with_prev: bool,
    ) -> Result<Deleted, MvccError> {
        self.delete_range_where(key, end, with_prev, &|_| true)
    }

    /// [`Self::delete_range`], keeping an event only for the deleted keys `wants_event`
    /// accepts (those a watcher or a lease needs). Deleting a large range with nobody
    /// watching then holds no event per key: the keys are taken from the index
    /// [`DELETE_CHUNK_KEYS`] at a time and dropped once their tombstones are written.
    pub fn delete_range_where(
        &mut self,
        key: &[u8],
        end: &[u8],
        with_prev: bool,
        wants_event: &dyn Fn(&[u8]) -> bool,
    ) -> Result<Deleted, MvccError> {
        let newest = self.main;
        let (index, sub, events) = (&mut *self.index, &mut self.sub, &mut self.events);
        // One table handle for the whole range: deleting a large prefix must not pay a table
        // lookup per key.
        self.tx.with_kv(|table| {
            let mut deleted = Deleted::default();
            let mut last: Option<Vec<u8>> = None;
            loop {
                let live = live_keys(index, key, end, newest, last.as_deref(), DELETE_CHUNK_KEYS)?;
                let Some((next, _)) = live.last() else {
                    break;
                };
                last = Some(next.clone());
                deleted.count += live.len();
                for (k, rev) in live {
                    let prev = if with_prev {
                        Some(fetch_in(table, rev)?)
                    } else {
                        None
                    };
                    let tomb = KeyValue {
                        key: k,
                        mod_revision: newest,
                        ..Default::default()
                    };
                    record_in(table, index, sub, newest, true, &tomb)?;
                    if wants_event(&tomb.key) {
                        events.push(Event {
                            kind: EventKind::Delete,
                            kv: tomb,
                            prev_kv: prev.clone(),
                        });
                    }
                    deleted.prev.extend(prev);
                }
            }
            Ok(deleted)
        })
    }

    /// Ends the transaction; the store's revision moves on only if something changed.
    pub fn end(mut self) -> Vec<Event> {
        if self.changed() {
            let index = &mut self.index;
            assert_eq!(
                self.main,
                index.current_rev + 1,
                "mvcc: a transaction's revision is the next one"
            );
            index.current_rev = self.main;
        }
        self.events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARK: &[u8] = b"a value a byte of which will be flipped on disk";

    fn store_with_keys(path: &Path) {
        let store = Store::open(path).expect("open");
        let mut batch = store.batch().expect("batch");
        for i in 0..200u32 {
            let mut txn = batch.txn();
            txn.put(format!("k{i:04}").as_bytes(), MARK.to_vec(), 0)
                .expect("put");
            txn.end();
        }
        batch.commit(true).expect("commit");
    }

    /// Issue 16: a second oxcd on the same data dir said "is not an oxcd database:
    /// Database already open".
    #[test]
    fn a_backend_in_use_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let _first = Store::open(&path).expect("open");
        match Store::open(&path) {
            Err(e @ MvccError::InUse { .. }) => {
                assert!(e.to_string().contains("another process"), "{e}")
            }
            other => panic!("second open: {:?}", other.err()),
        }
    }

    /// Issue 16: a byte flipped inside the backend file was found only by the periodic
    /// corruption check, after the member had served it; the pages' checksums find it on
    /// open.
    #[test]
    fn a_byte_flipped_on_disk_is_found_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        store_with_keys(&path);
        let mut bytes = std::fs::read(&path).expect("read");
        let at = bytes
            .windows(MARK.len())
            .position(|w| w == MARK)
            .expect("the value is in the file");
        bytes[at + 3] ^= 0x20;
        std::fs::write(&path, &bytes).expect("write");
        match Store::open(&path) {
            Err(e @ MvccError::Damaged { .. }) => {
                assert!(e.to_string().contains("member remove"), "{e}")
            }
            other => panic!("opened a damaged file: {:?}", other.err()),
        }
    }
}
