//! A careless operator and a bad disk (issue 16 defects 6 and 8): a second oxcd on a data
//! dir in use, a byte flipped in the backend, a bad checksum in a complete WAL record. Each
//! is refused at start with exit status 1 and a message that says what to do.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use oxcd_testkit::process::bin;
use oxcd_testkit::{addr, run, Cluster};

/// A value found once in the backend file, a byte of which gets flipped.
const MARK: &str = "a value whose bytes a bad disk changes";
/// The root user's credentials (auth is on by now).
const ROOT: &str = "root:rootpw";

/// Issue 16: a second oxcd on the same data dir said "is not an oxcd database: Database
/// already open", after it had read (and could have repaired) the live WAL.
pub fn a_second_oxcd_on_the_data_dir_is_refused(c: &Cluster) {
    let at = addr::alloc();
    let mut args: Vec<String> = c
        .args(0)
        .into_iter()
        .filter(|a| !a.starts_with("--listen-") && !a.starts_with("--advertise-client-urls"))
        .collect();
    let client = format!("http://{}", at.client());
    args.push(format!("--listen-client-urls={client}"));
    args.push(format!("--advertise-client-urls={client}"));
    args.push(format!("--listen-peer-urls=http://{}", at.peer()));
    let out = run(Command::new(bin("oxcd")).args(&args), b"");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("in use by another process"),
        "{}",
        out.stderr
    );
}

/// Flips one bit of the byte at `at` of `path`.
fn flip(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[at] ^= 0x20;
    std::fs::write(path, bytes).expect("write");
}

/// Starts member 0 and expects it to exit with status 1, its log naming every `words`.
fn refused_at_start(c: &Cluster, words: &[&str]) {
    c.spawn(0);
    let code = c.wait_exit(0, Duration::from_secs(30));
    let log = c.log(0);
    assert_eq!(code, 1, "{log}");
    for w in words {
        assert!(log.contains(w), "the log must say {w:?}:\n{log}");
    }
}

fn backend(c: &Cluster) -> PathBuf {
    c.data_dir(0).join("member").join("oxcd.db")
}

/// Issue 16: a byte flipped inside the backend file was found only by the periodic
/// corruption check, after the member had served it. The pages' checksums are checked on
/// open.
pub fn a_flipped_byte_in_the_backend_is_found_on_open(c: &Cluster) {
    c.etcdctl(0, &["--user", ROOT, "put", "marker", MARK], b"")
        .ok();
    assert_eq!(c.stop(0, Duration::from_secs(20)), 0);
    let bytes = std::fs::read(backend(c)).expect("read the backend");
    let at = bytes
        .windows(MARK.len())
        .position(|w| w == MARK.as_bytes())
        .expect("the value is in the backend file");
    flip(&backend(c), at + 5);
    refused_at_start(c, &["is damaged", "etcdctl member remove"]);
    flip(&backend(c), at + 5);
    c.start(0);
}

/// Issue 16 defect 6: a bad CRC in the last complete WAL record was taken for a torn write
/// and truncated. A complete record failing its CRC is corruption: refused, with the
/// remedy (the check of the last record's tail itself is in the storage crate's tests).
pub fn a_bad_crc_in_a_complete_wal_record_is_refused(c: &Cluster) {
    assert_eq!(c.stop(0, Duration::from_secs(20)), 0);
    let wal = c.data_dir(0).join("member").join("wal");
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&wal)
        .expect("the WAL dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segments.sort();
    // The first record's payload: after the magic (8) and its header (4 + 4 + 1 + 8).
    flip(&segments[0], 8 + 17 + 2);
    refused_at_start(c, &["crc mismatch", "etcdctl member remove"]);
}
