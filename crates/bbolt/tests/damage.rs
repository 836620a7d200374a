//! Damaged, truncated and foreign files: each must give its own clear error, never a panic
//! or a loop. The files start as the writer's output and are broken byte by byte.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use oxcd_bbolt::format::{NodePage, PAGE_HEADER_BYTES};
use oxcd_bbolt::{snapshot, Db, DbWriter, Error};

const PAGE: usize = 4096;

/// A database with an inline bucket and a two-level bucket `many`; returns its path and the
/// root (branch) page of `many`.
fn pristine(dir: &Path, name: &str) -> (PathBuf, u64) {
    let path = dir.join(name);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("create");
    let mut w = DbWriter::new(file).expect("writer");
    w.begin_bucket(b"inline").expect("bucket");
    w.put(b"a", b"1").expect("put");
    w.begin_bucket(b"many").expect("bucket");
    for i in 0..2000u32 {
        w.put(format!("key{i:06}").as_bytes(), &[7u8; 50])
            .expect("put");
    }
    w.finish_snapshot().expect("finish");
    let db = Db::open(&path).expect("pristine opens");
    let root = db
        .must_bucket(b"many")
        .expect("many")
        .root_pgid()
        .expect("not inline");
    (path, root)
}

fn edit(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).expect("read");
    f(&mut bytes);
    std::fs::write(path, &bytes).expect("write");
}

/// Iterates every bucket to the end.
fn walk(path: &Path) -> Result<u64, Error> {
    let db = Db::open(path)?;
    let mut n = 0;
    for name in db.bucket_names()? {
        let bucket = db.must_bucket(&name)?;
        let mut cursor = bucket.cursor();
        while cursor.next_entry()?.is_some() {
            n += 1;
        }
    }
    Ok(n)
}

/// The first child of branch page `pgid`.
fn first_child(bytes: &[u8], pgid: u64) -> u64 {
    let at = pgid as usize * PAGE;
    let node = NodePage::parse(&bytes[at..at + PAGE]).expect("branch page");
    assert!(!node.is_leaf());
    node.branch(0).expect("element 0").child
}

#[test]
fn pristine_file_walks_completely() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = pristine(dir.path(), "ok.db");
    assert_eq!(walk(&path).expect("walk"), 2001);
}

#[test]
fn random_and_tiny_files_are_not_bbolt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("random");
    let mut x: u64 = 12345;
    let bytes: Vec<u8> = (0..4 * PAGE)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&path, &bytes).expect("write");
    let err = Db::open(&path).expect_err("random file");
    assert!(matches!(err, Error::NotBbolt { .. }), "{err}");
    assert!(err.to_string().contains("not a bbolt database file"));

    std::fs::write(&path, b"hello").expect("write");
    assert!(matches!(Db::open(&path), Err(Error::NotBbolt { .. })));
    std::fs::write(&path, b"").expect("write");
    assert!(matches!(Db::open(&path), Err(Error::NotBbolt { .. })));
    assert!(matches!(
        Db::open(dir.path().join("absent")),
        Err(Error::Io { .. })
    ));
}

#[test]
fn truncated_file_is_reported_with_both_lengths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = pristine(dir.path(), "t.db");
    edit(&path, |b| b.truncate(b.len() / 2 / PAGE * PAGE));
    let err = Db::open(&path).expect_err("truncated");
    match &err {
        Error::Truncated {
            len_bytes,
            needed_bytes,
            ..
        } => assert!(len_bytes < needed_bytes),
        other => panic!("expected Truncated, got {other}"),
    }
    assert!(err.to_string().contains("truncated"));
}

#[test]
fn one_bad_meta_is_survived_two_are_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = pristine(dir.path(), "m.db");
    // meta 0 (txid 2) broken: meta 1 (txid 1) names the same tree
    edit(&path, |b| b[PAGE_HEADER_BYTES + 40] ^= 0xff);
    let db = Db::open(&path).expect("meta 1 still valid");
    assert_eq!(db.meta().txid, 1);
    assert_eq!(walk(&path).expect("walk"), 2001);
    edit(&path, |b| b[PAGE + PAGE_HEADER_BYTES + 40] ^= 0xff);
    let err = Db::open(&path).expect_err("both metas bad");
    assert!(matches!(err, Error::BadMetaChecksum { .. }), "{err}");
}

#[test]
fn unsupported_version_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = pristine(dir.path(), "v.db");
    edit(&path, |b| {
        b[PAGE_HEADER_BYTES + 4] = 3;
        b[PAGE + PAGE_HEADER_BYTES + 4] = 3;
    });
    let err = Db::open(&path).expect_err("version 3");
    assert!(
        matches!(err, Error::UnsupportedVersion { version: 3, .. }),
        "{err}"
    );
}

#[test]
fn leaf_with_wrong_flags_is_a_damaged_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, root) = pristine(dir.path(), "f.db");
    let mut leaf = 0;
    edit(&path, |b| {
        leaf = first_child(b, root);
        b[leaf as usize * PAGE + 8] = 0x08;
    });
    let err = walk(&path).expect_err("bad flags");
    match &err {
        Error::DamagedPage { pgid, reason, .. } => {
            assert_eq!(*pgid, leaf);
            assert!(reason.contains("flags"), "{reason}");
        }
        other => panic!("expected DamagedPage, got {other}"),
    }
}

#[test]
fn count_overrunning_the_page_is_a_damaged_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, root) = pristine(dir.path(), "c.db");
    edit(&path, |b| {
        let leaf = first_child(b, root) as usize;
        b[leaf * PAGE + 10..leaf * PAGE + 12].copy_from_slice(&0xFFFFu16.to_le_bytes());
    });
    let err = walk(&path).expect_err("count overrun");
    assert!(
        matches!(&err, Error::DamagedPage { reason, .. } if reason.contains("overrun")),
        "{err}"
    );
}

#[test]
fn element_pointing_past_the_page_is_a_damaged_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, root) = pristine(dir.path(), "e.db");
    edit(&path, |b| {
        let leaf = first_child(b, root) as usize;
        // element 0's vsize: 16 (header) + 12
        let at = leaf * PAGE + PAGE_HEADER_BYTES + 12;
        b[at..at + 4].copy_from_slice(&1_000_000u32.to_le_bytes());
    });
    let err = walk(&path).expect_err("element overrun");
    assert!(
        matches!(&err, Error::DamagedPage { reason, .. } if reason.contains("past the page")),
        "{err}"
    );
}

#[test]
fn child_out_of_range_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, root) = pristine(dir.path(), "r.db");
    edit(&path, |b| {
        // branch element 0's pgid: 16 (header) + 8
        let at = root as usize * PAGE + PAGE_HEADER_BYTES + 8;
        b[at..at + 8].copy_from_slice(&1_000_000u64.to_le_bytes());
    });
    let err = walk(&path).expect_err("child out of range");
    assert!(
        matches!(
            err,
            Error::PageOutOfRange {
                pgid: 1_000_000,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_page_reached_twice_is_caught_by_key_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, root) = pristine(dir.path(), "o.db");
    edit(&path, |b| {
        // point branch element 1 at element 0's child: the same keys come twice
        let base = root as usize * PAGE + PAGE_HEADER_BYTES;
        let child0: [u8; 8] = b[base + 8..base + 16].try_into().expect("8 bytes");
        b[base + 16 + 8..base + 16 + 16].copy_from_slice(&child0);
    });
    let err = walk(&path).expect_err("repeated page");
    assert!(
        matches!(&err, Error::DamagedPage { reason, .. } if reason.contains("does not sort after")),
        "{err}"
    );
}

#[test]
fn branch_pointing_at_itself_does_not_loop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, root) = pristine(dir.path(), "loop.db");
    edit(&path, |b| {
        let at = root as usize * PAGE + PAGE_HEADER_BYTES + 8;
        b[at..at + 8].copy_from_slice(&root.to_le_bytes());
    });
    let err = walk(&path).expect_err("self loop");
    assert!(
        matches!(&err, Error::DamagedPage { reason, .. } if reason.contains("deeper")),
        "{err}"
    );
}

#[test]
fn snapshot_hash_mismatch_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, root) = pristine(dir.path(), "h.db");
    assert!(snapshot::require_hash(&path).is_ok());
    edit(&path, |b| b[root as usize * PAGE + 100] ^= 1);
    let err = snapshot::verify_hash(&path).expect_err("mismatch");
    assert!(matches!(err, Error::HashMismatch { .. }), "{err}");
    assert!(err.to_string().contains("hash mismatch"));
}

/// Decoders under random input (issue 16): bytes changed anywhere in a good file, a few at
/// a time, give a clear error or a walk that ends, never a panic.
mod props {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn changed_bytes_never_panic(
            changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            in_headers in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let (path, _) = pristine(dir.path(), "p.db");
            edit(&path, |b| {
                let pages = b.len() / PAGE;
                for (at, value) in &changes {
                    // Half the cases aim at page headers and metas, where a change steers
                    // the reader; the rest hit anywhere.
                    let i = if in_headers {
                        at.index(pages) * PAGE + at.index(PAGE_HEADER_BYTES + 64)
                    } else {
                        at.index(b.len())
                    };
                    b[i] = *value;
                }
            });
            let _ = walk(&path);
        }
    }
}
