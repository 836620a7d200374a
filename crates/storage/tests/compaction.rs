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

/// A put takes its creation revision and version from the index, not from the previous
/// record: they stay right after a compaction removed the revision that created the key,
/// after a reopen (the index rebuilt from the backend), and after a delete (a new
/// generation). Without `with_prev` neither the put nor its event carries a previous value.
#[test]
fn a_put_numbers_its_generation_from_the_index_across_compaction_and_reopen() {
    use oxcd_storage::RangeOptions;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    let put = |s: &Store, value: &[u8], with_prev: bool| {
        let mut b = s.batch().expect("batch");
        let mut t = b.txn();
        let put = t.put_with(b"k", value.to_vec(), 0, with_prev).expect("put");
        let events = t.end();
        b.commit(true).expect("commit");
        (put, events)
    };
    let newest = |s: &Store| {
        let got = s.range(b"k", b"", RangeOptions::default()).expect("range");
        let kv = got.kvs.into_iter().next().expect("k exists");
        (kv.create_revision, kv.mod_revision, kv.version)
    };
    {
        let s = Store::open(&path).expect("open");
        let (first, _) = put(&s, b"v1", false); // revision 2 creates k
        assert!(!first.existed && first.prev.is_none());
        put(&s, b"v2", false); // 3
        let mut b = s.batch().expect("batch");
        b.compact(3).expect("compact");
        b.commit(true).expect("commit");
        let (third, events) = put(&s, b"v3", false); // 4: revision 2 is gone
        assert!(third.existed);
        assert!(third.prev.is_none(), "no previous value unless asked");
        assert!(events.iter().all(|e| e.prev_kv.is_none()));
        assert_eq!(newest(&s), (2, 4, 3));
    }
    let s = Store::open(&path).expect("reopen");
    let (fourth, events) = put(&s, b"v4", true); // 5, with the index rebuilt
    assert_eq!(
        fourth.prev.as_ref().map(|p| p.value.as_slice()),
        Some(&b"v3"[..])
    );
    assert_eq!(events[0].prev_kv.as_ref().map(|p| p.version), Some(3));
    assert_eq!(newest(&s), (2, 5, 4));
    let mut b = s.batch().expect("batch");
    let mut t = b.txn();
    t.delete_range(b"k", b"", false).expect("delete"); // 6
    t.end();
    b.commit(true).expect("commit");
    let (fifth, _) = put(&s, b"v5", true); // 7: a new generation
    assert!(!fifth.existed && fifth.prev.is_none());
    assert_eq!(newest(&s), (7, 7, 1));
}
