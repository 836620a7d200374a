//! Online defragmentation: writes, compactions and open read views go on while the backend
//! is copied; nothing written before or during it is lost, and the file shrinks. (The
//! held phase and a backend replaced meanwhile are unit tests of `mvcc::defrag`.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use oxcd_storage::{RangeOptions, Store};

const KEYS: usize = 4000;
const VALUE: usize = 1024;

fn put_round(s: &Store, round: u8, keys: std::ops::Range<usize>) {
    let mut b = s.batch().expect("batch");
    for k in keys {
        let mut t = b.txn();
        t.put(format!("k{k:05}").as_bytes(), vec![round; VALUE], 0)
            .expect("put");
        t.end();
    }
    b.commit(false).expect("commit");
}

fn value_of(s: &Store, key: &str) -> Option<Vec<u8>> {
    s.range(key.as_bytes(), &[], RangeOptions::default())
        .expect("range")
        .kvs
        .pop()
        .map(|kv| kv.value)
}

#[test]
fn writes_during_a_defragmentation_are_kept_and_the_file_shrinks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    let s = Arc::new(Store::open(&path).expect("open"));
    for round in 0..4 {
        put_round(&s, round, 0..KEYS);
    }
    // Three of four rows become garbage.
    let at = s.current_rev();
    let mut b = s.batch().expect("batch");
    b.compact(at).expect("compact");
    b.commit(true).expect("commit");
    s.finish_compaction().expect("finish");
    let before = std::fs::metadata(&path).expect("size").len();
    let view = s.read_view().expect("view");
    let view_rev = view.current_rev();

    // A writer goes on through the whole defragmentation (bounded: it stops after
    // 2000 batches if the defragmentation outlasts them).
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (s, done) = (s.clone(), done.clone());
        std::thread::spawn(move || {
            let mut written = 0usize;
            while !done.load(Ordering::Relaxed) && written < 2000 {
                let key = written % KEYS;
                put_round(&s, 9, key..key + 1);
                // Now and then a compaction too, whose rows must wait for the copy.
                if written % 500 == 499 {
                    let at = s.current_rev() - 10;
                    let mut b = s.batch().expect("batch");
                    b.compact(at).expect("compact");
                    b.commit(false).expect("commit");
                    assert_eq!(s.compact_step().expect("step"), 0, "no removal meanwhile");
                }
                written += 1;
            }
            written
        })
    };
    let stats = s.defragment().expect("defragment");
    done.store(true, Ordering::Relaxed);
    let written = writer.join().expect("writer");
    eprintln!("{stats:?}; {written} batches written meanwhile");
    assert!(stats.rows_online >= KEYS, "{stats:?}");

    // Every key holds its newest value: 9 for those the writer reached, 3 for the rest.
    let rewritten = written.min(KEYS);
    for k in [0, rewritten.saturating_sub(1), rewritten, KEYS - 1] {
        let want = if k < rewritten { 9 } else { 3 };
        assert_eq!(
            value_of(&s, &format!("k{k:05}")),
            Some(vec![want; VALUE]),
            "k{k:05} after {written} writes"
        );
    }
    // The view taken before reads the old file to its end.
    let mut records = 0;
    view.for_each_record(|_, _, _| {
        records += 1;
        Ok::<(), oxcd_storage::MvccError>(())
    })
    .expect("old view");
    assert!(records >= KEYS, "{records} records at {view_rev}");
    drop(view);

    // Compaction rows held back during the copy are removed from the new file.
    s.finish_compaction().expect("finish");
    assert_eq!(s.compaction_pending(), 0);
    let after = std::fs::metadata(&path).expect("size").len();
    assert!(
        after < before * 3 / 4,
        "the file shrank: {before} -> {after} bytes"
    );
    assert!(!oxcd_storage::mvcc::defrag_path(&path).exists());

    // And it is all durable in the new file.
    let rev = s.current_rev();
    drop(s);
    let s = Store::open(&path).expect("reopen");
    assert_eq!(s.current_rev(), rev);
    assert_eq!(
        s.range(b"k", b"l", RangeOptions::default())
            .expect("range")
            .count,
        KEYS
    );
}
