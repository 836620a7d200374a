//! Compaction in bounded steps: the compaction's batch drops the revisions from the index and
//! removes at most `COMPACT_STEP_ROWS` rows; the rest go in later steps, are skipped by the
//! walks of the backend meanwhile, and are found again after a reopen.

use oxcd_storage::mvcc::COMPACT_STEP_ROWS;
use oxcd_storage::{EventKind, Store};

const KEYS: usize = 1500;

/// Every key written twice (revisions 2..=3001), then `k0000` deleted (3002).
fn filled(path: &std::path::Path) -> Store {
    let s = Store::open(path).expect("open");
    let mut b = s.batch().expect("batch");
    for round in 0..2 {
        for k in 0..KEYS {
            let mut t = b.txn();
            t.put(format!("k{k:04}").as_bytes(), vec![round; 100], 0)
                .expect("put");
            t.end();
        }
    }
    let mut t = b.txn();
    t.delete_range(b"k0000", b"", false).expect("delete");
    t.end();
    b.commit(true).expect("commit");
    s
}

#[test]
fn a_large_compaction_leaves_its_rows_in_bounded_steps_hidden_until_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    let at = 2 * KEYS as i64 + 2; // the delete's revision: k0000 has only its tombstone then
    {
        let s = filled(&path);
        let mut b = s.batch().expect("batch");
        b.compact(at).expect("compact");
        b.commit(true).expect("commit");
        // 1500 first versions + k0000's second version and tombstone were dropped.
        let dropped = KEYS + 2;
        assert_eq!(s.compaction_pending(), dropped - COMPACT_STEP_ROWS);
        // The stale tombstone at the compact revision is not history any more.
        let events = s.history(at, at, 10).expect("history");
        assert!(events.is_empty(), "{events:?}");
        let view = s.read_view().expect("view");
        let mut seen = 0;
        view.for_each_revision(i64::MAX, |r| {
            assert!(
                r.rev.main > KEYS as i64 + 1,
                "stale revision {:?} walked",
                r.rev
            );
            seen += 1;
            Ok::<_, oxcd_storage::MvccError>(())
        })
        .expect("walk");
        assert_eq!(seen, KEYS - 1);
    }
    // Nothing about the queue is stored: a reopen finds the rows left and removes them.
    let s = Store::open(&path).expect("reopen");
    assert_eq!(s.compaction_pending(), KEYS + 2 - COMPACT_STEP_ROWS);
    s.finish_compaction().expect("finish");
    assert_eq!(s.compaction_pending(), 0);
    let mut b = s.batch().expect("batch");
    let mut t = b.txn();
    t.put(b"k0001", vec![9], 0).expect("put");
    assert_eq!(t.end().len(), 1);
    b.commit(true).expect("commit");
    let events = s.history(at + 1, at + 1, 10).expect("history");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::Put);
    assert_eq!(events[0].kv.version, 3);
}

/// The index pass of a compaction over more keys than one step takes goes on in later
/// batches; meanwhile reads at and above the compact revision are exactly those of a
/// finished compaction, reads below it are refused, and the end state (index and rows) is
/// the one a whole pass gives, also after a reopen.
#[test]
fn a_compaction_over_many_keys_passes_the_index_in_steps() {
    use oxcd_storage::mvcc::COMPACT_STEP_KEYS;
    use oxcd_storage::{MvccError, RangeOptions};
    let keys = COMPACT_STEP_KEYS * 2 + 100;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    let s = Store::open(&path).expect("open");
    let mut b = s.batch().expect("batch");
    for round in 0..2u8 {
        for k in 0..keys {
            let mut t = b.txn();
            t.put(format!("k{k:06}").as_bytes(), vec![round], 0)
                .expect("put");
            t.end();
        }
    }
    // The last key deleted: at the compact revision it has only its tombstone.
    let mut t = b.txn();
    t.delete_range(format!("k{:06}", keys - 1).as_bytes(), b"", false)
        .expect("delete");
    t.end();
    b.commit(true).expect("commit");
    let at = s.current_rev();
    let all = |rev: i64| {
        s.range(
            b"k",
            b"l",
            RangeOptions {
                rev,
                ..Default::default()
            },
        )
    };
    let before = all(at).expect("range").kvs;
    let mut b = s.batch().expect("batch");
    b.compact(at).expect("compact");
    // A put in the same batch, to a key the pass has not reached.
    let mut t = b.txn();
    t.put(format!("k{:06}", keys - 2).as_bytes(), vec![7], 0)
        .expect("put");
    t.end();
    b.commit(true).expect("commit");
    // The pass is not over: counted as pending, no row removed yet.
    assert!(s.compaction_pending() > 0);
    assert_eq!(all(at).expect("range at the compact revision").kvs, before);
    assert!(matches!(all(at - 1), Err(MvccError::Compacted)));
    let newest = all(0).expect("range").kvs;
    assert_eq!(newest.len(), keys - 1);
    assert_eq!(newest[keys - 2].value, vec![7]);
    s.finish_compaction().expect("finish");
    assert_eq!(s.compaction_pending(), 0);
    assert_eq!(all(at).expect("range").kvs, before);
    // Every first version and the tombstone went: one row per key is left, plus the put.
    let rows = |s: &Store| {
        let mut n = 0;
        s.read_view()
            .expect("view")
            .for_each_record(|t, _, _| {
                n += usize::from(t == 0);
                Ok::<(), MvccError>(())
            })
            .expect("walk");
        n
    };
    assert_eq!(rows(&s), keys - 1 + 1, "rows left");
    drop(s);
    let s = Store::open(&path).expect("reopen");
    assert_eq!(s.compaction_pending(), 0);
    assert_eq!(rows(&s), keys);
}
