//! The backend's whole-store paths through its public API: a read view sees one state and
//! the revisions a compaction would keep; a restore fed record by record refuses records out
//! of order and writes nothing then; imported revisions keep the numbers, fields and sub
//! revisions they were given, refuse anything but the next revisions, and can lose the
//! history of keys deleted in a compacted gap.

use oxcd_api::mvccpb::KeyValue;
use oxcd_storage::mvcc::{ImportChange, RestoredMeta, Rev};
use oxcd_storage::{EventKind, MvccError, RangeOptions, Store};

fn store(dir: &tempfile::TempDir) -> Store {
    Store::open(&dir.path().join("oxcd.db")).expect("open")
}

fn put(key: &str, create: i64, rev: i64, version: i64, value: &str, lease: i64) -> ImportChange {
    ImportChange {
        sub: 0,
        tombstone: false,
        kv: KeyValue {
            key: key.into(),
            create_revision: create,
            mod_revision: rev,
            version,
            value: value.into(),
            lease,
        },
    }
}

fn del(key: &str, sub: i64) -> ImportChange {
    ImportChange {
        sub,
        tombstone: true,
        kv: KeyValue {
            key: key.into(),
            ..Default::default()
        },
    }
}

fn keys_at(s: &Store, rev: i64) -> Result<Vec<(String, i64, i64, i64)>, MvccError> {
    let r = s.range(
        &[0],
        &[0],
        RangeOptions {
            rev,
            ..Default::default()
        },
    )?;
    Ok(r.kvs
        .into_iter()
        .map(|kv| {
            let key = String::from_utf8_lossy(&kv.key).into_owned();
            (key, kv.create_revision, kv.mod_revision, kv.version)
        })
        .collect())
}

#[test]
fn imported_revisions_keep_their_numbers_and_only_the_next_ones_go_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(&dir);
    let mut b = s.batch().expect("batch");
    // Revision 10 as another store numbered it: sub revisions 0 and 3 (1 and 2 compacted).
    let mut second = put("b", 7, 10, 4, "b4", 99);
    second.sub = 3;
    let events = b
        .import_revision(10, &[put("a", 10, 10, 1, "a1", 0), second])
        .expect("import");
    assert_eq!(events.len(), 2);
    assert!(events
        .iter()
        .all(|e| e.kind == EventKind::Put && e.prev_kv.is_none()));
    let events = b
        .import_revision(12, &[del("a", 0), put("c", 12, 12, 1, "", 0).with_sub(1)])
        .expect("import");
    assert_eq!(events[0].kind, EventKind::Delete);
    assert_eq!(events[0].kv.mod_revision, 12);
    assert_eq!(
        events[0].prev_kv.as_ref().map(|p| p.value.clone()),
        Some(b"a1".to_vec())
    );
    // Not after the current revision, sub revisions not increasing, a put's revision wrong:
    // refused, nothing written.
    for (main, changes) in [
        (12, vec![put("d", 12, 12, 1, "", 0)]),
        (
            13,
            vec![put("d", 13, 13, 1, "", 0), put("e", 13, 13, 1, "", 0)],
        ),
        (13, vec![put("d", 13, 14, 1, "", 0)]),
        (13, vec![]),
    ] {
        assert!(matches!(
            b.import_revision(main, &changes),
            Err(MvccError::Import(_))
        ));
    }
    b.advance_rev(15);
    b.advance_rev(14);
    b.commit(true).expect("commit");
    assert_eq!(s.current_rev(), 15);
    assert_eq!(
        keys_at(&s, 11).expect("at 11"),
        vec![("a".into(), 10, 10, 1), ("b".into(), 7, 10, 4)]
    );
    assert_eq!(
        keys_at(&s, 0).expect("now"),
        vec![("b".into(), 7, 10, 4), ("c".into(), 12, 12, 1)]
    );
    let view = s.read_view().expect("view");
    let mut revs = Vec::new();
    view.for_each_revision(i64::MAX, |r| {
        revs.push((r.rev.main, r.rev.sub, r.tombstone));
        Ok::<_, MvccError>(())
    })
    .expect("revisions");
    assert_eq!(
        revs,
        vec![
            (10, 0, false),
            (10, 3, false),
            (12, 0, true),
            (12, 1, false)
        ]
    );

    // The history of "b" (deleted at a compacted revision the import never saw) goes.
    let mut b = s.batch().expect("batch");
    b.drop_history(14, &[b"b".to_vec()]).expect("drop");
    b.compact(14).expect("compact");
    b.commit(true).expect("commit");
    assert_eq!(
        keys_at(&s, 14).expect("at 14"),
        vec![("c".into(), 12, 12, 1)]
    );
    let (_, keep) = s.read_view_keeping(15).expect("view");
    assert_eq!(
        keep.into_iter().collect::<Vec<_>>(),
        vec![Rev { main: 12, sub: 1 }]
    );
}

trait WithSub {
    fn with_sub(self, sub: i64) -> Self;
}

impl WithSub for ImportChange {
    fn with_sub(mut self, sub: i64) -> Self {
        self.sub = sub;
        self
    }
}

#[test]
fn a_restore_out_of_order_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(&dir);
    {
        let mut b = s.batch().expect("batch");
        let mut t = b.txn();
        t.put(b"kept", b"1".to_vec(), 0).expect("put");
        t.end();
        b.commit(true).expect("commit");
    }
    let kv = |key: &str, rev: i64| KeyValue {
        key: key.into(),
        create_revision: rev,
        mod_revision: rev,
        version: 1,
        ..Default::default()
    };
    let mut b = s.batch().expect("batch");
    let res = b.restore_with(|sink| {
        sink.revision(Rev { main: 5, sub: 0 }, false, &kv("a", 5))?;
        sink.revision(Rev { main: 4, sub: 0 }, false, &kv("b", 4))?;
        Ok::<_, MvccError>(RestoredMeta::default())
    });
    assert!(matches!(res, Err(MvccError::Restore(_))), "{res:?}");
    drop(b);
    assert_eq!(keys_at(&s, 0).expect("now"), vec![("kept".into(), 2, 2, 1)]);
    let mut b = s.batch().expect("batch");
    let res = b.restore_with(|sink| {
        sink.revision(Rev { main: 5, sub: 0 }, false, &kv("a", 5))?;
        Ok::<_, MvccError>(RestoredMeta {
            current_rev: 3,
            compact_rev: 9,
            ..Default::default()
        })
    });
    assert!(
        matches!(res, Err(MvccError::Restore(_))),
        "compact above current: {res:?}"
    );
}

/// A raft snapshot's records, written from a view and read back one at a time, restore the
/// same backend; a truncated body is refused and writes nothing; a length a damaged body
/// claims is never allocated (it reads what is there and finds the body short).
#[test]
fn records_written_from_a_view_restore_the_same_backend() {
    let (from, to) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (src, dst) = (store(&from), store(&to));
    let mut b = src.batch().expect("batch");
    for n in 0..50 {
        let mut t = b.txn();
        t.put(format!("k{}", n % 7).as_bytes(), vec![b'v'; n], 0)
            .expect("put");
        t.end();
    }
    b.aux_put(3, b"row", b"value").expect("aux");
    b.set_consistent_index(9, 2).expect("index");
    b.commit(true).expect("commit");
    let mut body = Vec::new();
    src.read_view()
        .expect("view")
        .write_records(&mut body)
        .expect("records");
    assert_eq!(body, src.snapshot().expect("snapshot").0);
    for cut in [body.len() - 1, 3, 40] {
        let mut b = dst.batch().expect("batch");
        let e = b.restore_from(&mut &body[..cut]).expect_err("truncated");
        assert!(e.to_string().contains("truncated"), "{e}");
    }
    assert_eq!(dst.current_rev(), 1, "nothing restored");
    let mut claim = vec![0u8];
    claim.extend_from_slice(&u32::MAX.to_le_bytes());
    claim.extend_from_slice(b"short");
    let mut b = dst.batch().expect("batch");
    let e = b.restore_from(&mut &claim[..]).expect_err("short");
    assert!(e.to_string().contains("truncated"), "{e}");
    drop(b);
    let mut b = dst.batch().expect("batch");
    b.restore_from(&mut &body[..]).expect("restore");
    b.commit(true).expect("commit");
    assert_eq!(dst.consistent_index(), (9, 2));
    assert_eq!(dst.current_rev(), src.current_rev());
    let all = |s: &Store| {
        s.range(b"\0", b"\0", RangeOptions::default())
            .expect("range")
            .kvs
    };
    assert_eq!(all(&dst), all(&src));
    assert_eq!(dst.aux_load(3).expect("aux"), src.aux_load(3).expect("aux"));
}
