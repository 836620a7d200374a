//! The MVCC store against a model: seeded random sequences of puts, range deletes, multi-op
//! transactions, compactions, aborted batches, snapshot restores and reopens (clean, and
//! after a crash in a child process), run through `Store`'s public API and compared after
//! every step with a model that keeps every revision of every key (etcd's semantics).
//!
//! What the store promises about durability (`mvcc.rs`, `docs/design.md`): a batch is one
//! redb transaction, so a reopen finds the store exactly as some whole batch left it, and
//! never before the last `commit(true)`; after a crash it is back at that last durable batch
//! (the raft log replays the rest from `consistent_index` + 1); a defragment is a durable
//! point too. Every batch here records a new consistent index, which names the batch the
//! store came back at.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use oxcd_api::mvccpb::KeyValue;
use oxcd_storage::{Event, EventKind, MvccError, RangeOptions, Store};

/// SplitMix64: a seeded, dependency-free generator; the same seed gives the same run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// A value in `lo..=hi` (`lo` when the interval is empty).
    fn between(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    fn key(&mut self) -> Vec<u8> {
        KEYS[self.below(KEYS.len() as u64) as usize].to_vec()
    }

    /// A range end, etcd's way: one key, from the key on, up to another key (which may be at
    /// or before the start: an empty range), or the key's prefix end.
    fn range_end(&mut self, key: &[u8]) -> Vec<u8> {
        match self.below(4) {
            0 => Vec::new(),
            1 => vec![0],
            2 => self.key(),
            _ => {
                let mut end = key.to_vec();
                if let Some(last) = end.last_mut() {
                    *last += 1;
                }
                end
            }
        }
    }
}

/// Few keys, with prefixes of each other, so that ranges and deletes overlap often.
const KEYS: &[&[u8]] = &[b"a", b"a/1", b"a/2", b"b", b"c", b"c/x", b"d", b"z"];

fn in_range(k: &[u8], key: &[u8], end: &[u8]) -> bool {
    match end {
        [] => k == key,
        [0] => k >= key,
        _ => k >= key && k < end,
    }
}

/// One record the store wrote: a put or a tombstone at (main, sub).
#[derive(Clone, Debug)]
struct Record {
    main: i64,
    sub: i64,
    tomb: bool,
    kv: KeyValue,
}

/// Every revision of every key, never forgotten: reads at any revision at or after the
/// compact revision must not change when compaction drops history.
#[derive(Clone, Debug)]
struct Model {
    records: Vec<Record>,
    /// The records compaction removed (they leave `history`, not `records`).
    compacted: BTreeSet<(i64, i64)>,
    current_rev: i64,
    compact_rev: i64,
    consistent_index: (u64, u64),
    /// The auxiliary tables: (table, key) -> value.
    aux: BTreeMap<(u8, Vec<u8>), Vec<u8>>,
}

impl Model {
    fn new() -> Model {
        Model {
            records: Vec::new(),
            compacted: BTreeSet::new(),
            current_rev: 1,
            compact_rev: 0,
            consistent_index: (0, 0),
            aux: BTreeMap::new(),
        }
    }

    /// The key's value as of revision `at`, if it exists then.
    fn visible(&self, key: &[u8], at: i64) -> Option<&KeyValue> {
        let last = self
            .records
            .iter()
            .rev()
            .find(|r| r.kv.key == key && r.main <= at)?;
        (!last.tomb).then_some(&last.kv)
    }

    /// The live keys in a range as of `at`, in key order.
    fn range(&self, key: &[u8], end: &[u8], at: i64) -> Vec<KeyValue> {
        let keys: BTreeSet<&[u8]> = self
            .records
            .iter()
            .map(|r| r.kv.key.as_slice())
            .filter(|k| in_range(k, key, end))
            .collect();
        keys.into_iter()
            .filter_map(|k| self.visible(k, at).cloned())
            .collect()
    }

    /// The error a read at `rev` (0 = newest) should get, given the newest readable revision.
    fn read_error(&self, rev: i64, newest: i64) -> Option<&'static str> {
        let at = if rev <= 0 { newest } else { rev };
        if at > newest {
            Some("future")
        } else if at < self.compact_rev {
            Some("compacted")
        } else {
            None
        }
    }

    /// etcd's compaction: for each key, keep the latest revision at or below `rev` unless it
    /// is a tombstone, and everything after `rev`.
    fn compact(&mut self, rev: i64) {
        let keys: BTreeSet<Vec<u8>> = self.records.iter().map(|r| r.kv.key.clone()).collect();
        for key in keys {
            let old: Vec<&Record> = self
                .records
                .iter()
                .filter(|r| r.kv.key == key && r.main <= rev)
                .collect();
            if let Some((latest, rest)) = old.split_last() {
                self.compacted.extend(rest.iter().map(|r| (r.main, r.sub)));
                if latest.tomb {
                    self.compacted.insert((latest.main, latest.sub));
                }
            }
        }
        self.compact_rev = rev;
    }

    /// The records still in the backend with main revision in `from..=to`, in order.
    fn history(&self, from: i64, to: i64) -> Vec<&Record> {
        self.records
            .iter()
            .filter(|r| r.main >= from && r.main <= to)
            .filter(|r| !self.compacted.contains(&(r.main, r.sub)))
            .collect()
    }
}

fn error_name(e: &MvccError) -> &'static str {
    match e {
        MvccError::Compacted => "compacted",
        MvccError::FutureRev => "future",
        _ => "other",
    }
}

/// Checks a range result (or error) against the model.
fn check_range(
    got: Result<oxcd_storage::RangeResult, MvccError>,
    model: &Model,
    (key, end, opts): (&[u8], &[u8], RangeOptions),
    newest: i64,
    what: &str,
) {
    let expect_err = model.read_error(opts.rev, newest);
    let got = match (got, expect_err) {
        (Err(e), Some(name)) => {
            assert_eq!(error_name(&e), name, "{what}: wrong error {e}");
            return;
        }
        (Err(e), None) => panic!("{what}: unexpected error {e}"),
        (Ok(r), Some(name)) => panic!("{what}: expected {name}, got {} keys", r.count),
        (Ok(r), None) => r,
    };
    let at = if opts.rev <= 0 { newest } else { opts.rev };
    let want = model.range(key, end, at);
    assert_eq!(got.rev, newest, "{what}: header revision");
    assert_eq!(got.count, want.len(), "{what}: count");
    if opts.count_only {
        assert!(got.kvs.is_empty(), "{what}: count_only returned values");
        return;
    }
    let shown = if opts.limit > 0 {
        want.len().min(opts.limit)
    } else {
        want.len()
    };
    assert_eq!(got.kvs, want[..shown], "{what}: kvs at {at}");
}

/// Checks `history(from, to, limit)`: a prefix of the kept records, whole revisions only,
/// the shortest such prefix holding at least `limit` events.
fn check_history(store: &Store, model: &Model, from: i64, to: i64, limit: usize) {
    let got = store.history(from, to, limit);
    if from < model.compact_rev {
        assert!(
            matches!(got, Err(MvccError::Compacted)),
            "history from {from} below compact rev {}: {got:?}",
            model.compact_rev
        );
        return;
    }
    let got = got.expect("history");
    let want = model.history(from, to);
    assert!(got.len() <= want.len(), "history returned too much");
    for (e, r) in got.iter().zip(&want) {
        let kind = if r.tomb {
            EventKind::Delete
        } else {
            EventKind::Put
        };
        assert_eq!((e.kind, &e.kv), (kind, &r.kv), "history event");
        assert!(e.prev_kv.is_none(), "history fills no prev_kv");
    }
    if got.len() < want.len() {
        let last = want[got.len() - 1].main;
        assert_ne!(want[got.len()].main, last, "history split revision {last}");
        let before_last = got.iter().filter(|e| e.kv.mod_revision != last).count();
        assert!(
            got.len() >= limit && before_last < limit,
            "history stopped at {} events for limit {limit}",
            got.len()
        );
    }
}

/// The checks run after every step: revisions, ranges at several revisions (and the errors
/// just outside what can be read), a random range with options, and history.
fn check_store(store: &Store, model: &Model, rng: &mut Rng, sweep: bool) {
    assert_eq!(store.current_rev(), model.current_rev, "current rev");
    assert_eq!(store.compact_rev(), model.compact_rev, "compact rev");
    assert_eq!(
        store.consistent_index(),
        model.consistent_index,
        "consistent index"
    );
    let (cur, comp) = (model.current_rev, model.compact_rev);
    let mut revs = vec![0, cur, comp, comp - 1, cur + 1, rng.between(comp, cur)];
    if sweep {
        revs.extend(comp..=cur);
    }
    for rev in revs {
        let opts = RangeOptions {
            rev,
            ..Default::default()
        };
        let what = format!("range all at {rev}");
        let got = store.range(b"", &[0], opts);
        check_range(got, model, (b"", &[0], opts), cur, &what);
    }
    let key = rng.key();
    let end = rng.range_end(&key);
    let opts = RangeOptions {
        limit: rng.below(4) as usize,
        rev: rng.between(comp - 1, cur + 1),
        count_only: rng.chance(20),
        ..Default::default()
    };
    let got = store.range(&key, &end, opts);
    check_range(got, model, (&key, &end, opts), cur, "random range");
    let from = rng.between(comp - 1, cur + 1).max(0);
    let to = rng.between(from, cur + 1);
    check_history(store, model, from, to, 1 + rng.below(6) as usize);
    for table in AUX_TABLES {
        let want: Vec<(Vec<u8>, Vec<u8>)> = model
            .aux
            .range((table, Vec::new())..(table + 1, Vec::new()))
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(
            store.aux_load(table).expect("aux"),
            want,
            "aux table {table}"
        );
    }
}

/// Neighbouring table numbers, so that a scan running past its table would show.
const AUX_TABLES: [u8; 3] = [1, 2, 3];

/// The store under test, where it lives, and the model states a reopen may come back at.
struct Harness {
    dir: PathBuf,
    generation: u32,
    store: Option<Store>,
    model: Model,
    /// The model as of the last durable commit, then after each later non-durable one.
    since_durable: Vec<Model>,
    next_index: u64,
}

impl Harness {
    fn new(dir: &Path) -> Harness {
        let store = Store::open(&dir.join("db-0")).expect("open");
        Harness {
            dir: dir.to_path_buf(),
            generation: 0,
            store: Some(store),
            model: Model::new(),
            since_durable: vec![Model::new()],
            next_index: 1,
        }
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("store is open")
    }

    fn db_path(&self) -> PathBuf {
        self.dir.join(format!("db-{}", self.generation))
    }

    /// Checks a put's result and event against the model and records it there.
    fn model_put(
        &mut self,
        main: i64,
        sub: &mut i64,
        key: &[u8],
        value: &[u8],
        lease: i64,
    ) -> Event {
        let prev = self.model.visible(key, main).cloned();
        let (create_revision, version) = match &prev {
            Some(p) => (p.create_revision, p.version + 1),
            None => (main, 1),
        };
        let kv = KeyValue {
            key: key.to_vec(),
            create_revision,
            mod_revision: main,
            version,
            value: value.to_vec(),
            lease,
        };
        self.model.records.push(Record {
            main,
            sub: *sub,
            tomb: false,
            kv: kv.clone(),
        });
        *sub += 1;
        Event {
            kind: EventKind::Put,
            kv,
            prev_kv: prev,
        }
    }

    fn model_delete(&mut self, main: i64, sub: &mut i64, key: &[u8], end: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        for prev in self.model.range(key, end, main) {
            let kv = KeyValue {
                key: prev.key.clone(),
                mod_revision: main,
                ..Default::default()
            };
            self.model.records.push(Record {
                main,
                sub: *sub,
                tomb: true,
                kv: kv.clone(),
            });
            *sub += 1;
            events.push(Event {
                kind: EventKind::Delete,
                kv,
                prev_kv: Some(prev),
            });
        }
        events
    }

    /// One batch: a few transactions and compactions, a consistent index, then a durable or
    /// non-durable commit, or an abort (the batch dropped uncommitted).
    fn step_batch(&mut self, rng: &mut Rng) {
        let before = self.model.clone();
        let store = self.store.take().expect("store is open");
        {
            let mut batch = store.batch().expect("batch");
            for _ in 0..1 + rng.below(3) {
                match rng.below(100) {
                    0..=11 => self.batch_compact(&mut batch, rng),
                    12..=21 => self.batch_aux(&mut batch, rng),
                    _ => self.batch_txn(&mut batch, rng),
                }
            }
            if rng.chance(10) {
                let key = rng.key();
                let end = rng.range_end(&key);
                let opts = RangeOptions::default();
                let got = batch.range(&key, &end, opts);
                let cur = self.model.current_rev;
                check_range(got, &self.model, (&key, &end, opts), cur, "batch range");
            }
            let index = self.next_index;
            self.next_index += 1;
            let term = 1 + index / 16;
            batch.set_consistent_index(index, term).expect("index");
            self.model.consistent_index = (index, term);
            match rng.below(100) {
                0..=5 => {
                    drop(batch);
                    self.model = before;
                }
                6..=17 => {
                    batch.commit(true).expect("durable commit");
                    self.since_durable = vec![self.model.clone()];
                }
                _ => {
                    batch.commit(false).expect("commit");
                    self.since_durable.push(self.model.clone());
                }
            }
        }
        self.store = Some(store);
    }

    fn batch_aux(&mut self, batch: &mut oxcd_storage::WriteBatch<'_>, rng: &mut Rng) {
        let table = AUX_TABLES[rng.below(3) as usize];
        let key = rng.key();
        if rng.chance(30) {
            batch.aux_delete(table, &key).expect("aux delete");
            self.model.aux.remove(&(table, key));
        } else {
            let value = format!("aux{}", rng.below(100)).into_bytes();
            batch.aux_put(table, &key, &value).expect("aux put");
            self.model.aux.insert((table, key), value);
        }
    }

    fn batch_compact(&mut self, batch: &mut oxcd_storage::WriteBatch<'_>, rng: &mut Rng) {
        let rev = rng.between(self.model.compact_rev - 1, self.model.current_rev + 1);
        let got = batch.compact(rev);
        if rev <= self.model.compact_rev {
            assert!(
                matches!(got, Err(MvccError::Compacted)),
                "compact {rev}: {got:?}"
            );
        } else if rev > self.model.current_rev {
            assert!(
                matches!(got, Err(MvccError::FutureRev)),
                "compact {rev}: {got:?}"
            );
        } else {
            got.expect("compact");
            self.model.compact(rev);
        }
        assert_eq!(batch.compact_rev(), self.model.compact_rev);
    }

    /// One write transaction of 1 to 3 operations (puts, range deletes, reads that must
    /// see the transaction's own writes).
    fn batch_txn(&mut self, batch: &mut oxcd_storage::WriteBatch<'_>, rng: &mut Rng) {
        let main = self.model.current_rev + 1;
        let mut sub = 0;
        let mut want: Vec<Event> = Vec::new();
        let mut txn = batch.txn();
        assert_eq!(txn.rev(), main);
        for _ in 0..1 + rng.below(3) {
            let key = rng.key();
            match rng.below(10) {
                0..=5 => {
                    let value = format!("v{}", rng.below(1000)).into_bytes();
                    let lease = if rng.chance(20) { 7 } else { 0 };
                    let event = self.model_put(main, &mut sub, &key, &value, lease);
                    let prev = txn.put(&key, value, lease).expect("put");
                    assert_eq!(prev, event.prev_kv, "put {key:?}: previous value");
                    want.push(event);
                }
                6..=7 => {
                    let end = rng.range_end(&key);
                    let mut events = self.model_delete(main, &mut sub, &key, &end);
                    // Without prev the delete reads no value: its events carry none.
                    let with_prev = rng.chance(50);
                    let deleted = txn.delete_range(&key, &end, with_prev).expect("delete");
                    let prevs: Vec<KeyValue> =
                        events.iter().filter_map(|e| e.prev_kv.clone()).collect();
                    assert_eq!(deleted.count, prevs.len(), "delete {key:?}..{end:?}: count");
                    if with_prev {
                        assert_eq!(deleted.prev, prevs, "delete {key:?}..{end:?}");
                    } else {
                        assert!(deleted.prev.is_empty(), "prev without asking");
                        for e in &mut events {
                            e.prev_kv = None;
                        }
                    }
                    want.extend(events);
                }
                _ => {
                    let end = rng.range_end(&key);
                    let newest = if want.is_empty() { main - 1 } else { main };
                    assert_eq!(txn.read_rev(), newest, "txn read revision");
                    let opts = RangeOptions {
                        rev: rng.between(self.model.compact_rev - 1, newest + 1),
                        ..Default::default()
                    };
                    let got = txn.range(&key, &end, opts);
                    check_range(got, &self.model, (&key, &end, opts), newest, "txn range");
                }
            }
        }
        let got = txn.end();
        assert_eq!(got.len(), want.len(), "txn events");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(
                (g.kind, &g.kv, &g.prev_kv),
                (w.kind, &w.kv, &w.prev_kv),
                "txn event"
            );
        }
        if !want.is_empty() {
            self.model.current_rev = main;
        }
        assert_eq!(batch.current_rev(), self.model.current_rev);
    }

    /// Reopens the store; it must come back exactly as one whole batch left it, at or after
    /// the last durable one.
    fn reopen(&mut self) {
        drop(self.store.take());
        let store = Store::open(&self.db_path()).expect("reopen");
        self.adopt_reopened(store, false);
    }

    /// Takes a store opened after a reopen or a crash and moves the model to the batch it
    /// came back at. `crashed`: only the last durable batch is allowed.
    fn adopt_reopened(&mut self, store: Store, crashed: bool) {
        let index = store.consistent_index();
        let allowed = if crashed {
            &self.since_durable[..1]
        } else {
            &self.since_durable[..]
        };
        let Some(at) = allowed.iter().find(|m| m.consistent_index == index) else {
            let indexes: Vec<_> = allowed.iter().map(|m| m.consistent_index).collect();
            panic!("reopened at consistent index {index:?}, expected one of {indexes:?}");
        };
        self.model = at.clone();
        self.since_durable = vec![self.model.clone()];
        self.store = Some(store);
    }

    /// Defragments the store: same contents, and a durability point (redb's compaction
    /// starts with a durable commit, which makes every commit before it durable too; found
    /// by the crash test).
    fn defragment(&mut self) {
        self.store().defragment().expect("defragment");
        self.since_durable = vec![self.model.clone()];
    }

    /// A follower's catch-up: snapshot this store, restore it into a new one, go on there.
    fn restore_into_new_store(&mut self) {
        let (data, index, term) = self.store().snapshot().expect("snapshot");
        assert_eq!((index, term), self.model.consistent_index, "snapshot index");
        self.generation += 1;
        let fresh = Store::open(&self.db_path()).expect("open fresh");
        {
            let mut batch = fresh.batch().expect("batch");
            batch.restore(&data).expect("restore");
            batch.set_consistent_index(index, term).expect("index");
            batch.commit(true).expect("commit");
        }
        self.store = Some(fresh);
        self.since_durable = vec![self.model.clone()];
    }
}

/// Runs `steps` random steps (batches; now and then a reopen, a restore into a new store, a
/// defragment), checking the store after each (every revision it can read
/// every 16 steps). `crashless`: no reopen or restore steps (the crash test's child keeps
/// its one store open to the end).
fn run(h: &mut Harness, rng: &mut Rng, steps: u32, crashless: bool) {
    for step in 0..steps {
        match rng.below(100) {
            0..=4 if !crashless => h.reopen(),
            5..=6 if !crashless => h.restore_into_new_store(),
            7 => h.defragment(),
            _ => h.step_batch(rng),
        }
        let sweep = step % 16 == 15;
        check_store(h.store(), &h.model, rng, sweep);
    }
}

/// A temporary directory, in memory where there is one: fsync on tmpfs costs nothing, and
/// these tests check the store's logic, not the disk (the crash test kills a process, which
/// loses what redb did not commit whatever the file system).
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).expect("tempdir in /dev/shm")
    } else {
        tempfile::tempdir().expect("tempdir")
    }
}

const SEEDS: u64 = 16;
const STEPS: u32 = 100;

/// Seeds 0 to n-1, n = `default`, or `OXCD_MODEL_SEEDS` for a longer soak (both tests).
fn seeds(default: u64) -> u64 {
    std::env::var("OXCD_MODEL_SEEDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

#[test]
fn store_matches_model() {
    for seed in 0..seeds(SEEDS) {
        let dir = scratch_dir();
        let mut h = Harness::new(dir.path());
        run(&mut h, &mut Rng(seed), STEPS, false);
        assert!(h.model.current_rev > 1, "seed {seed} wrote nothing");
    }
}

const CRASH_SEEDS: u64 = 6;
const CRASH_STEPS: u32 = 60;
/// Set in the child process of the crash test: `<seed>:<dir>`.
const CRASH_CHILD_ENV: &str = "OXCD_MVCC_CRASH_CHILD";

/// A crash: a child process runs a seed's steps and exits without closing the store, so
/// redb never makes its non-durable commits durable. The parent runs the same steps on a
/// store of its own for the model, then reopens the child's store: it must be exactly at
/// the last durable batch, and go on matching the model through more steps and reopens.
#[test]
fn crash_recovery_matches_model() {
    if let Ok(arg) = std::env::var(CRASH_CHILD_ENV) {
        let (seed, dir) = arg.split_once(':').expect("seed:dir");
        let mut h = Harness::new(Path::new(dir));
        run(
            &mut h,
            &mut Rng(seed.parse().expect("seed")),
            CRASH_STEPS,
            true,
        );
        // No destructors: the store is not closed, as in a crash.
        std::process::exit(0);
    }
    let exe = std::env::current_exe().expect("test binary");
    let mut lost_batches = 0;
    for seed in 0..seeds(CRASH_SEEDS) {
        let crashed = scratch_dir();
        let status = Command::new(&exe)
            .args([
                "--exact",
                "crash_recovery_matches_model",
                "--test-threads=1",
            ])
            .env(
                CRASH_CHILD_ENV,
                format!("{seed}:{}", crashed.path().display()),
            )
            .stdout(Stdio::null())
            .status()
            .expect("run the child");
        assert!(status.success(), "seed {seed}: the child failed: {status}");
        let replica = scratch_dir();
        let mut h = Harness::new(replica.path());
        let mut rng = Rng(seed);
        run(&mut h, &mut rng, CRASH_STEPS, true);
        lost_batches += h.since_durable.len() - 1;
        drop(h.store.take());
        h.dir = crashed.path().to_path_buf();
        let store = Store::open(&h.db_path()).expect("open after the crash");
        h.adopt_reopened(store, true);
        check_store(h.store(), &h.model, &mut rng, true);
        run(&mut h, &mut rng, CRASH_STEPS / 2, false);
    }
    // Else the test proved nothing about non-durable commits.
    assert!(lost_batches > 0, "no seed ended with a non-durable batch");
}

/// Regression (found by `store_matches_model`): a batch dropped without committing left its
/// writes in the key index, so the revision counter had moved on and reads of those keys
/// failed with "indexed revision missing from the backend".
#[test]
fn aborted_batch_leaves_no_trace() {
    let dir = scratch_dir();
    let store = Store::open(&dir.path().join("db")).expect("open");
    {
        let mut batch = store.batch().expect("batch");
        let mut txn = batch.txn();
        txn.put(b"k", b"v".to_vec(), 0).expect("put");
        txn.end();
        batch.set_consistent_index(5, 1).expect("index");
        batch.compact(2).expect("compact");
    }
    assert_eq!(store.current_rev(), 1);
    assert_eq!(store.compact_rev(), 0);
    assert_eq!(store.consistent_index(), (0, 0));
    let got = store
        .range(b"k", b"", RangeOptions::default())
        .expect("range");
    assert_eq!(got.count, 0);
    let mut batch = store.batch().expect("batch");
    let mut txn = batch.txn();
    assert_eq!(
        txn.rev(),
        2,
        "the aborted batch's revision is given out again"
    );
    txn.put(b"k", b"w".to_vec(), 0).expect("put");
    txn.end();
    batch.commit(false).expect("commit");
    let got = store
        .range(b"k", b"", RangeOptions::default())
        .expect("range");
    assert_eq!(got.kvs[0].version, 1);
}

#[test]
#[should_panic(expected = "consistent index going back from 7 to 6")]
fn consistent_index_never_goes_back() {
    let dir = scratch_dir();
    let store = Store::open(&dir.path().join("db")).expect("open");
    let mut batch = store.batch().expect("batch");
    batch.set_consistent_index(7, 1).expect("index");
    batch.commit(false).expect("commit");
    let mut batch = store.batch().expect("batch");
    let _ = batch.set_consistent_index(6, 1);
}

/// `snapshot restore` restores a backend, then starts the new cluster's log at index 1: the
/// first consistent index after a restore names the restored state and may be lower.
#[test]
fn first_consistent_index_after_restore_may_be_lower() {
    let dir = scratch_dir();
    let source = Store::open(&dir.path().join("source")).expect("open");
    let mut batch = source.batch().expect("batch");
    let mut txn = batch.txn();
    txn.put(b"k", b"v".to_vec(), 0).expect("put");
    txn.end();
    batch.set_consistent_index(1000, 4).expect("index");
    batch.commit(false).expect("commit");
    let (data, index, term) = source.snapshot().expect("snapshot");
    assert_eq!((index, term), (1000, 4));
    let restored = Store::open(&dir.path().join("restored")).expect("open");
    let mut batch = restored.batch().expect("batch");
    batch.restore(&data).expect("restore");
    batch.commit(false).expect("commit");
    assert_eq!(restored.consistent_index(), (1000, 4));
    let mut batch = restored.batch().expect("batch");
    batch.set_consistent_index(1, 1).expect("index");
    batch.commit(true).expect("commit");
    assert_eq!(restored.consistent_index(), (1, 1));
    assert_eq!(restored.current_rev(), 2);
}

/// A range delete larger than the chunk the index is read in (1024 keys) deletes every key
/// of its range once, in key order, with the previous values asked for; it keeps an event
/// only for the keys the filter accepts, and a one-key delete still works.
#[test]
fn a_large_range_delete_goes_in_chunks_and_keeps_the_events_asked_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Store::open(&dir.path().join("db")).expect("open");
    let n = 2500;
    let mut b = s.batch().expect("batch");
    for k in 0..n {
        let mut t = b.txn();
        t.put(format!("p/{k:05}").as_bytes(), vec![b'v'; 10], 0)
            .expect("put");
        t.end();
    }
    for k in ["o", "q"] {
        let mut t = b.txn();
        t.put(k.as_bytes(), b"outside".to_vec(), 0).expect("put");
        t.end();
    }
    let mut t = b.txn();
    let wanted = |k: &[u8]| k.ends_with(b"7");
    let deleted = t
        .delete_range_where(b"p/", b"p0", true, &wanted)
        .expect("delete");
    let events = t.end();
    assert_eq!(deleted.count, n);
    let keys: Vec<Vec<u8>> = deleted.prev.iter().map(|kv| kv.key.clone()).collect();
    let want: Vec<Vec<u8>> = (0..n).map(|k| format!("p/{k:05}").into_bytes()).collect();
    assert_eq!(
        keys, want,
        "every key once, in order, with its previous value"
    );
    assert_eq!(events.len(), n / 10, "events only for the keys ending in 7");
    assert!(events.iter().all(|e| e.kind == EventKind::Delete
        && e.kv.key.ends_with(b"7")
        && e.prev_kv.as_ref().is_some_and(|p| p.key == e.kv.key)));
    // One key, then a key that is gone: the chunked walk ends on both. A delete that keeps
    // no event still takes its revision.
    let before = b.current_rev();
    let mut t = b.txn();
    let none = |_: &[u8]| false;
    let one = t
        .delete_range_where(b"o", b"", false, &none)
        .expect("delete");
    assert_eq!(one.count, 1);
    assert_eq!(t.delete_range(b"o", b"", false).expect("delete").count, 0);
    assert!(t.end().is_empty());
    assert_eq!(b.current_rev(), before + 1);
    b.commit(true).expect("commit");
    let left = s
        .range(b"\0", &[0], RangeOptions::default())
        .expect("range");
    let left: Vec<&[u8]> = left.kvs.iter().map(|kv| kv.key.as_slice()).collect();
    assert_eq!(left, vec![b"q".as_slice()]);
}
