//! The write-ahead log through its public API: torn tails repaired at every cut point, a bad
//! checksum in a complete record refused, a failing writer, segment rollover and release,
//! replay of entries, snapshot and hard state records across segments, and the asserted
//! invariants on entry indexes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use oxcd_storage::wal::Replay;
use oxcd_storage::{Wal, WalError};

/// A temporary directory, in memory where there is one (fsync there costs nothing; these
/// tests check the log's logic, not the disk).
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).expect("tempdir in /dev/shm")
    } else {
        tempfile::tempdir().expect("tempdir")
    }
}

/// The segment files, oldest first.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    out.sort();
    out
}

fn payload(index: u64, len: usize) -> Vec<u8> {
    let mut p = format!("entry {index} ").into_bytes();
    p.resize(len, b'x');
    p
}

fn indexes(replay: &Replay) -> Vec<u64> {
    replay.entries.iter().map(|(i, _)| *i).collect()
}

/// Bytes one record takes on disk: length, CRC, kind, index, payload.
fn record_bytes(payload_len: usize) -> u64 {
    (4 + 4 + 1 + 8 + payload_len) as u64
}

const BIG: usize = 1300;

/// The segment size of the tests' logs (the default, 64 MiB, would be preallocated in memory
/// for each log in /dev/shm).
const SEGMENT: u64 = 16 * 1024;

/// A log of one segment: meta, snapshot at 1, entries 2..=6 and a state record, synced in
/// three batches; then one more batch (entry 7 of `BIG` bytes, spanning sectors, and a new
/// state). Returns the segment's record bytes (without the preallocated zeros after them) and
/// where the last batch's two records start.
fn write_log(dir: &Path) -> (Vec<u8>, u64, u64) {
    let mut wal = Wal::create(dir, b"me").expect("create");
    wal.set_segment_bytes_max(SEGMENT);
    wal.append_snapshot(1, b"snap1");
    wal.sync().expect("sync");
    for i in 2..=4 {
        wal.append_entry(i, &payload(i, 40));
    }
    wal.append_state(b"hs-old");
    wal.sync().expect("sync");
    for i in 5..=6 {
        wal.append_entry(i, &payload(i, 700));
    }
    wal.sync().expect("sync");
    let seg = &segments(dir)[0];
    let before = wal.segment_bytes();
    wal.append_entry(7, &payload(7, BIG));
    wal.append_state(b"hs-new");
    wal.sync().expect("sync");
    let mut data = fs::read(seg).expect("read");
    assert_eq!(data.len() as u64, SEGMENT, "the segment is preallocated");
    let state_at = before + record_bytes(BIG);
    assert_eq!(wal.segment_bytes(), state_at + record_bytes(6));
    let records = data.split_off(wal.segment_bytes() as usize);
    assert!(records.iter().all(|b| *b == 0), "zeros after the records");
    (data, before, state_at)
}

/// Writes `bytes` as the only segment of a fresh dir and opens it.
fn open_bytes(bytes: &[u8]) -> (tempfile::TempDir, Result<(Wal, Replay), WalError>) {
    let dir = scratch_dir();
    let name = dir.path().join("0000000000000000-0000000000000001.wal");
    fs::write(&name, bytes).expect("write");
    let opened = Wal::open(dir.path());
    (dir, opened)
}

/// What the log must hold after a tear that leaves the records before `kept_to` whole.
fn check_repaired(dir: &Path, replay: &Replay, kept_to: u64, entry7_at: u64, state_at: u64) {
    assert_eq!(replay.meta.as_deref(), Some(&b"me"[..]));
    assert_eq!(replay.snapshot, Some((1, b"snap1".to_vec())));
    if kept_to >= state_at {
        assert_eq!(indexes(replay), (2..=7).collect::<Vec<_>>());
        assert_eq!(replay.entries[5].1, payload(7, BIG));
    } else {
        assert_eq!(indexes(replay), (2..=6).collect::<Vec<_>>());
    }
    assert_eq!(replay.state.as_deref(), Some(&b"hs-old"[..]));
    let expect_len = if kept_to >= state_at {
        state_at
    } else {
        entry7_at
    };
    let data = fs::read(&segments(dir)[0]).expect("read");
    assert!(data.len() as u64 >= expect_len, "{} bytes", data.len());
    assert!(
        data[expect_len as usize..].iter().all(|b| *b == 0),
        "repaired to the last whole record: only zeros after it"
    );
}

/// The log goes on after a repair: a new batch lands after the kept records.
fn check_appendable(dir: &Path, mut wal: Wal, next: u64) {
    wal.set_segment_bytes_max(SEGMENT);
    wal.append_entry(next, b"after repair");
    wal.append_state(b"hs-after");
    wal.sync().expect("sync after repair");
    drop(wal);
    let (_, replay) = Wal::open(dir).expect("reopen after repair");
    assert_eq!(replay.entries.last().map(|(i, _)| *i), Some(next));
    assert_eq!(replay.state.as_deref(), Some(&b"hs-after"[..]));
}

/// The zeros after the records of a preallocated segment are its free space, not damage: a
/// reopen keeps the file as it is and writes on where the records end.
#[test]
fn preallocated_space_is_kept_and_written_on() {
    let dir = scratch_dir();
    let (full, _, _) = write_log(dir.path());
    let seg = &segments(dir.path())[0];
    let (wal, replay) = Wal::open(dir.path()).expect("open");
    assert_eq!(indexes(&replay), (2..=7).collect::<Vec<_>>());
    assert_eq!(wal.segment_bytes(), full.len() as u64);
    assert_eq!(
        fs::read(seg).expect("read").len() as u64,
        SEGMENT,
        "not cut"
    );
    check_appendable(dir.path(), wal, 8);
    let data = fs::read(seg).expect("read");
    assert_eq!(data.len() as u64, SEGMENT);
    assert_eq!(&data[..full.len()], &full[..], "earlier records untouched");
}

#[test]
fn torn_tail_is_repaired_at_every_cut() {
    let src = scratch_dir();
    let (full, entry7_at, state_at) = write_log(src.path());
    for cut in entry7_at + 1..full.len() as u64 {
        let (dir, opened) = open_bytes(&full[..cut as usize]);
        let (wal, replay) = opened.unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        check_repaired(dir.path(), &replay, cut, entry7_at, state_at);
        let next = if cut >= state_at { 8 } else { 7 };
        check_appendable(dir.path(), wal, next);
    }
}

/// A crash can leave the file longer than what reached the disk, reading as zeros from a
/// sector on (the size was updated, the data was not); sectors can also reach the disk out
/// of order, leaving a sector of zeros inside the last batch.
#[test]
fn sectors_never_written_are_a_torn_tail() {
    let src = scratch_dir();
    let (full, entry7_at, state_at) = write_log(src.path());
    let end = full.len() as u64;
    let first_sector = entry7_at.div_ceil(512) * 512;
    let mut cases = 0;
    for sector in (first_sector..end).step_by(512) {
        // Zeros from this sector to the end.
        let mut bytes = full.clone();
        bytes[sector as usize..].fill(0);
        let (dir, opened) = open_bytes(&bytes);
        let (wal, replay) = opened.unwrap_or_else(|e| panic!("zeros from {sector}: {e}"));
        check_repaired(dir.path(), &replay, sector, entry7_at, state_at);
        check_appendable(dir.path(), wal, 7);
        // Only this sector zero: entry 7 is torn, the state record after it goes too.
        let mut bytes = full.clone();
        let sector_end = (sector + 512).min(state_at) as usize;
        bytes[sector as usize..sector_end].fill(0);
        let (dir, opened) = open_bytes(&bytes);
        let (_, replay) = opened.unwrap_or_else(|e| panic!("zero sector {sector}: {e}"));
        check_repaired(dir.path(), &replay, entry7_at, entry7_at, state_at);
        cases += 1;
    }
    assert!(cases >= 2, "entry 7 spans {cases} sectors");
}

#[test]
fn bad_crc_in_the_last_complete_record_is_corruption() {
    let src = scratch_dir();
    let (full, entry7_at, state_at) = write_log(src.path());
    let last = full.len() - 1;
    // The last byte of the last record (the state), a payload byte of entry 7 (followed by
    // the state record), and a byte of an early synced entry.
    for (offset, record_at) in [
        (last, state_at),
        (entry7_at as usize + 100, entry7_at),
        (60, 8 + record_bytes(2) + record_bytes(5)),
    ] {
        let mut bytes = full.clone();
        bytes[offset] ^= 0x01;
        let (dir, opened) = open_bytes(&bytes);
        match opened {
            Err(WalError::CrcMismatch { offset: at, .. }) => assert_eq!(at, record_at),
            Err(e) => panic!("flip at {offset}: wrong error {e}"),
            Ok((_, replay)) => panic!("flip at {offset}: opened {:?}", indexes(&replay)),
        }
        let on_disk = fs::read(&segments(dir.path())[0]).expect("read");
        assert_eq!(on_disk, bytes, "a damaged log is left as it is");
    }
    let mut bytes = full.clone();
    bytes[last] ^= 0x01;
    let message = open_bytes(&bytes).1.err().expect("refused").to_string();
    assert!(
        message.contains("crc mismatch") && message.contains("replace this member's data"),
        "{message}"
    );
}

#[test]
fn damage_before_more_data_is_corruption() {
    let src = scratch_dir();
    let (full, entry7_at, _) = write_log(src.path());
    // A length field that is neither a record nor zeros, with data after it.
    let mut bytes = full.clone();
    let at = entry7_at as usize;
    bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        open_bytes(&bytes).1,
        Err(WalError::Corrupt { offset, .. }) if offset == entry7_at
    ));
}

/// A whole, checksummed record of a kind this version does not know is not replayed as a
/// raft entry: opening fails.
#[test]
fn unknown_record_kind_is_refused() {
    let mut bytes = b"OXCDWAL1".to_vec();
    let body = [&[9u8][..], &5u64.to_le_bytes(), b"future"].concat();
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    bytes.extend_from_slice(&body);
    let (_, opened) = open_bytes(&bytes);
    match opened {
        Err(WalError::Corrupt { offset, reason, .. }) => {
            assert_eq!(offset, 8);
            assert!(reason.contains("unknown record kind 9"), "{reason}");
        }
        other => panic!(
            "opened a record of kind 9: {:?}",
            other.map(|(_, r)| r.entries)
        ),
    }
}

#[test]
fn damage_in_an_earlier_segment_is_corruption() {
    let dir = scratch_dir();
    let mut wal = Wal::create(dir.path(), b"me").expect("create");
    wal.set_segment_bytes_max(1024);
    for i in 1..=12 {
        wal.append_entry(i, &payload(i, 200));
        wal.sync().expect("sync");
        wal.maybe_rotate(i + 1).expect("rotate");
    }
    drop(wal);
    let segs = segments(dir.path());
    assert!(segs.len() >= 3, "{} segments", segs.len());
    // Cut the first segment short: a torn tail anywhere but the last segment is damage.
    let first = fs::read(&segs[0]).expect("read");
    fs::write(&segs[0], &first[..first.len() - 3]).expect("write");
    assert!(matches!(
        Wal::open(dir.path()),
        Err(WalError::Corrupt { path, .. }) if path == segs[0]
    ));
}

#[test]
fn rollover_replay_and_release_across_segments() {
    let dir = scratch_dir();
    let mut wal = Wal::create(dir.path(), b"me").expect("create");
    wal.set_segment_bytes_max(2048);
    wal.append_snapshot(0, b"snap0");
    let mut last_state = Vec::new();
    for i in 1..=40 {
        wal.append_entry(i, &payload(i, 150));
        if i % 3 == 0 {
            last_state = format!("hs{i}").into_bytes();
            wal.append_state(&last_state);
        }
        wal.sync().expect("sync");
        wal.maybe_rotate(i + 1).expect("rotate");
    }
    let count = wal.segment_count();
    assert!(count >= 4, "{count} segments");
    assert_eq!(segments(dir.path()).len(), count);
    // Each segment is named after the first entry it may hold.
    for seg in segments(dir.path()).iter().skip(1) {
        let name = seg
            .file_stem()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let first = u64::from_str_radix(&name[17..], 16).expect("first index");
        let replay = open_alone(seg);
        assert_eq!(replay.entries.first().map(|(i, _)| *i), Some(first));
        // Every segment starts with the meta, snapshot and state records.
        assert_eq!(replay.meta.as_deref(), Some(&b"me"[..]));
        assert_eq!(replay.snapshot, Some((0, b"snap0".to_vec())));
        assert!(replay.state.is_some());
    }
    drop(wal);
    let (mut wal, replay) = Wal::open(dir.path()).expect("open");
    assert_eq!(indexes(&replay), (1..=40).collect::<Vec<_>>());
    assert_eq!(replay.entries[39].1, payload(40, 150));
    assert_eq!(replay.state, Some(last_state.clone()));
    // A snapshot at 25: whole segments at or below it go, the open one stays.
    wal.set_segment_bytes_max(2048);
    wal.append_snapshot(25, b"snap25");
    wal.sync().expect("sync");
    wal.release_to(25).expect("release");
    let left = wal.segment_count();
    assert!(left < count, "released nothing ({left} of {count})");
    assert_eq!(segments(dir.path()).len(), left);
    drop(wal);
    let (mut wal, replay) = Wal::open(dir.path()).expect("open after release");
    assert_eq!(replay.snapshot, Some((25, b"snap25".to_vec())));
    assert_eq!(indexes(&replay), (26..=40).collect::<Vec<_>>());
    assert_eq!(replay.state, Some(last_state.clone()));
    assert_eq!(replay.meta.as_deref(), Some(&b"me"[..]));
    // A snapshot past every entry releases all but the open segment.
    wal.append_snapshot(40, b"snap40");
    wal.sync().expect("sync");
    wal.release_to(40).expect("release");
    assert_eq!(wal.segment_count(), 1);
    assert_eq!(segments(dir.path()).len(), 1);
    drop(wal);
    let (_, replay) = Wal::open(dir.path()).expect("open after release");
    assert_eq!(replay.snapshot, Some((40, b"snap40".to_vec())));
    assert!(replay.entries.is_empty());
    assert_eq!(replay.state, Some(last_state));
}

#[test]
#[should_panic(expected = "past the durable snapshot marker 5")]
fn release_past_the_durable_snapshot_crashes() {
    let dir = scratch_dir();
    let mut wal = Wal::create(dir.path(), b"me").expect("create");
    for i in 1..=9 {
        wal.append_entry(i, b"e");
    }
    wal.append_snapshot(5, b"snap5");
    wal.sync().expect("sync");
    // Not synced: a crash now would leave entries 6..=8 in no file.
    wal.append_snapshot(8, b"snap8");
    let _ = wal.release_to(8);
}

/// Replays a copy of one segment on its own.
fn open_alone(seg: &Path) -> Replay {
    let dir = scratch_dir();
    fs::copy(seg, dir.path().join(seg.file_name().expect("name"))).expect("copy");
    Wal::open(dir.path()).expect("open one segment").1
}

/// Raft replaces a conflicting suffix (a new leader's entries), here starting in an older
/// segment; a snapshot from the leader past every entry moves the log on after it.
#[test]
fn overwritten_suffix_and_leader_snapshot_replay() {
    let dir = scratch_dir();
    let mut wal = Wal::create(dir.path(), b"me").expect("create");
    wal.set_segment_bytes_max(1024);
    wal.append_snapshot(0, b"snap0");
    for i in 1..=20 {
        wal.append_entry(i, &payload(i, 100));
        wal.sync().expect("sync");
        wal.maybe_rotate(i + 1).expect("rotate");
    }
    assert!(wal.segment_count() >= 3);
    wal.append_entry(5, b"new leader 5");
    wal.append_entry(6, b"new leader 6");
    wal.append_state(b"term 2");
    wal.sync().expect("sync");
    drop(wal);
    let (mut wal, replay) = Wal::open(dir.path()).expect("open");
    assert_eq!(indexes(&replay), (1..=6).collect::<Vec<_>>());
    assert_eq!(replay.entries[4].1, b"new leader 5");
    assert_eq!(replay.entries[3].1, payload(4, 100));
    assert_eq!(replay.state.as_deref(), Some(&b"term 2"[..]));
    // A snapshot at 50 from the leader, then the entries after it.
    wal.append_snapshot(50, b"snap50");
    wal.append_entry(51, b"e51");
    wal.append_state(b"term 3");
    wal.sync().expect("sync");
    drop(wal);
    let (_, replay) = Wal::open(dir.path()).expect("open");
    assert_eq!(replay.snapshot, Some((50, b"snap50".to_vec())));
    assert_eq!(indexes(&replay), vec![51]);
    assert_eq!(replay.state.as_deref(), Some(&b"term 3"[..]));
}

/// A snapshot from the leader at 5 while the log still holds entries 6..=9 of an old term
/// that conflict with the leader's: raft drops them when it installs the snapshot, and so
/// must replay, even before the next entry at 6 overwrites them (a restart in that window
/// put them back after a snapshot they do not belong to). A compaction marker, by contrast,
/// keeps the entries after it.
#[test]
fn restore_drops_the_entries_written_before_it() {
    let dir = scratch_dir();
    let mut wal = Wal::create(dir.path(), b"me").expect("create");
    wal.set_segment_bytes_max(512);
    wal.append_snapshot(0, b"snap0");
    for i in 1..=9 {
        wal.append_entry(i, &payload(i, 100));
        wal.sync().expect("sync");
        wal.maybe_rotate(i + 1).expect("rotate");
    }
    assert!(
        wal.segment_count() >= 2,
        "the conflicting entries span segments"
    );
    wal.append_snapshot(3, b"compacted to 3");
    wal.sync().expect("sync");
    drop(wal);
    let (mut wal, replay) = Wal::open(dir.path()).expect("open");
    assert_eq!(indexes(&replay), (4..=9).collect::<Vec<_>>());
    wal.append_restore(5, b"leader snap5");
    wal.sync().expect("sync");
    drop(wal);
    let (mut wal, replay) = Wal::open(dir.path()).expect("open");
    assert_eq!(replay.snapshot, Some((5, b"leader snap5".to_vec())));
    assert_eq!(
        indexes(&replay),
        Vec::<u64>::new(),
        "entries after the restore point were kept"
    );
    // The log goes on at 6; a rotation copies the marker into the new segment.
    wal.append_entry(6, b"leader 6");
    wal.sync().expect("sync");
    wal.maybe_rotate(7).expect("rotate");
    wal.append_entry(7, b"leader 7");
    wal.sync().expect("sync");
    drop(wal);
    let (_, replay) = Wal::open(dir.path()).expect("open");
    assert_eq!(indexes(&replay), vec![6, 7]);
    assert_eq!(replay.entries[0].1, b"leader 6");
}

#[test]
#[should_panic(expected = "the log would skip an index")]
fn entry_past_the_next_index_crashes() {
    let dir = scratch_dir();
    let mut wal = Wal::create(dir.path(), b"me").expect("create");
    wal.append_entry(1, b"e1");
    wal.append_entry(3, b"e3");
}

#[test]
#[should_panic(expected = "the log would skip an index")]
fn entry_gap_after_reopen_crashes() {
    let dir = scratch_dir();
    let mut wal = Wal::create(dir.path(), b"me").expect("create");
    wal.append_snapshot(1, b"snap1");
    wal.append_entry(2, b"e2");
    wal.sync().expect("sync");
    drop(wal);
    let (mut wal, _) = Wal::open(dir.path()).expect("open");
    wal.append_entry(4, b"e4");
}

#[test]
#[should_panic(expected = "at or below the snapshot marker 10")]
fn entry_under_the_snapshot_crashes() {
    let dir = scratch_dir();
    let mut wal = Wal::create(dir.path(), b"me").expect("create");
    for i in 1..=12 {
        wal.append_entry(i, b"e");
    }
    wal.append_snapshot(10, b"snap10");
    wal.append_entry(10, b"rewrites a compacted entry");
}

#[test]
#[should_panic(expected = "markers never go back")]
fn snapshot_going_back_crashes() {
    let dir = scratch_dir();
    let mut wal = Wal::create(dir.path(), b"me").expect("create");
    wal.append_snapshot(10, b"snap10");
    wal.append_snapshot(9, b"snap9");
}

/// A segment that cannot be created (its temp path is taken by a directory) fails the
/// rotation; the log then refuses to write, and what was synced before is intact.
#[test]
fn failed_rotation_stops_the_log() {
    let dir = scratch_dir();
    let mut wal = Wal::create(dir.path(), b"me").expect("create");
    wal.set_segment_bytes_max(256);
    wal.append_entry(1, &payload(1, 300));
    wal.sync().expect("sync");
    let tmp = dir.path().join("0000000000000001-0000000000000002.wal.tmp");
    fs::create_dir(&tmp).expect("block the temp path");
    assert!(matches!(wal.maybe_rotate(2), Err(WalError::Io { .. })));
    wal.append_entry(2, b"e2");
    assert!(matches!(wal.sync(), Err(WalError::Failed { .. })));
    drop(wal);
    fs::remove_dir(&tmp).expect("unblock");
    let (_, replay) = Wal::open(dir.path()).expect("open");
    assert_eq!(indexes(&replay), vec![1]);
}

/// Set in the child of `failed_write_stops_the_log`: the log's dir.
const WRITE_CHILD_ENV: &str = "OXCD_WAL_WRITE_CHILD";

/// A write that fails halfway (the child runs with a file size limit, RLIMIT_FSIZE, and
/// SIGXFSZ ignored, so the write gets EFBIG after part of the batch is on disk): `sync`
/// fails, every later `sync` refuses to write, and a reopen repairs the partial record and
/// finds every record synced before.
#[test]
fn failed_write_stops_the_log() {
    if let Ok(dir) = std::env::var(WRITE_CHILD_ENV) {
        let (mut wal, replay) = Wal::open(Path::new(&dir)).expect("child: open");
        assert_eq!(indexes(&replay), vec![1, 2]);
        wal.append_entry(3, &payload(3, 2000));
        let first = wal.sync();
        assert!(matches!(first, Err(WalError::Io { .. })), "{first:?}");
        let second = wal.sync();
        assert!(matches!(second, Err(WalError::Failed { .. })), "{second:?}");
        wal.append_entry(3, b"retry");
        assert!(matches!(wal.sync(), Err(WalError::Failed { .. })));
        std::process::exit(0);
    }
    let dir = scratch_dir();
    let mut wal = Wal::create(dir.path(), b"me").expect("create");
    wal.set_segment_bytes_max(4096);
    wal.append_entry(1, b"e1");
    wal.append_entry(2, b"e2");
    wal.append_state(b"hs");
    wal.sync().expect("sync");
    let synced = wal.segment_bytes();
    drop(wal);
    let seg = segments(dir.path()).remove(0);
    assert_eq!(
        fs::metadata(&seg).expect("stat").len(),
        4096,
        "preallocated"
    );
    // The child's batch goes into the preallocated space, and stops at the limit.
    let limit = synced + 100;
    let exe = std::env::current_exe().expect("test binary");
    let status = Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; exec prlimit --fsize=\"$0\" -- \"$@\"")
        .arg(limit.to_string())
        .arg(&exe)
        .args(["--exact", "failed_write_stops_the_log", "--test-threads=1"])
        .env(WRITE_CHILD_ENV, dir.path())
        .stdout(Stdio::null())
        .status()
        .expect("run the child (needs sh and prlimit)");
    assert!(status.success(), "the child failed: {status}");
    let on_disk = fs::read(&seg).expect("read");
    assert!(
        on_disk[synced as usize..limit as usize]
            .iter()
            .any(|b| *b != 0)
            && on_disk[limit as usize..].iter().all(|b| *b == 0),
        "part of the failed batch is on disk, nothing after it"
    );
    let (wal, replay) = Wal::open(dir.path()).expect("open after the failed write");
    assert_eq!(indexes(&replay), vec![1, 2]);
    assert_eq!(replay.state.as_deref(), Some(&b"hs"[..]));
    assert_eq!(fs::metadata(&seg).expect("stat").len(), synced);
    check_appendable(dir.path(), wal, 3);
}

/// Decoders under random input (issue 16): whatever a segment holds, opening it gives the
/// entries that were written (a prefix of them when the tail is cut) or a clear error,
/// never a panic, never a changed entry.
mod props {
    use proptest::prelude::*;

    use super::*;

    /// Writes `payloads` as entries 1.., synced in batches of `batch`; the segment's record
    /// bytes (without the preallocated zeros after them).
    fn written(dir: &Path, payloads: &[Vec<u8>], batch: usize) -> Vec<u8> {
        let mut wal = Wal::create(dir, b"me").expect("create");
        wal.set_segment_bytes_max(4096);
        wal.append_snapshot(0, b"snap0");
        for (i, p) in payloads.iter().enumerate() {
            wal.append_entry(i as u64 + 1, p);
            if (i + 1) % batch == 0 {
                wal.sync().expect("sync");
            }
        }
        wal.sync().expect("sync");
        let used = wal.segment_bytes() as usize;
        drop(wal);
        let mut bytes = fs::read(&segments(dir)[0]).expect("read");
        bytes.truncate(used);
        bytes
    }

    /// Opening `bytes` as the only segment: Ok with a prefix of `payloads`, or an error.
    fn replays_a_prefix(bytes: &[u8], payloads: &[Vec<u8>]) -> Result<(), TestCaseError> {
        let (_dir, opened) = open_bytes(bytes);
        if let Ok((_, replay)) = opened {
            prop_assert!(replay.entries.len() <= payloads.len());
            for (n, (index, p)) in replay.entries.iter().enumerate() {
                prop_assert_eq!(*index, n as u64 + 1);
                prop_assert_eq!(p, &payloads[n]);
            }
        }
        Ok(())
    }

    fn payloads() -> impl Strategy<Value = Vec<Vec<u8>>> {
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..700), 1..12)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn random_segments_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut bytes = b"OXCDWAL1".to_vec();
            bytes.extend_from_slice(&tail);
            let _ = open_bytes(&bytes);
            let _ = open_bytes(&tail);
        }

        #[test]
        fn a_cut_log_replays_a_prefix(p in payloads(), batch in 1usize..4, cut in any::<prop::sample::Index>()) {
            let dir = scratch_dir();
            let bytes = written(dir.path(), &p, batch);
            let at = 8 + cut.index(bytes.len() - 8);
            replays_a_prefix(&bytes[..at], &p)?;
            let (_dir, opened) = open_bytes(&bytes[..at]);
            prop_assert!(opened.is_ok(), "a cut tail is repaired: {:?}", opened.err());
        }

        #[test]
        fn a_changed_byte_never_replays_a_changed_entry(
            p in payloads(),
            at in any::<prop::sample::Index>(),
            xor in 1u8..=255,
        ) {
            let dir = scratch_dir();
            let mut bytes = written(dir.path(), &p, 1);
            let i = 8 + at.index(bytes.len() - 8);
            bytes[i] ^= xor;
            replays_a_prefix(&bytes, &p)?;
        }
    }
}

/// A hard state that only moves the commit index is not synced on its own (etcd's
/// `MustSync`): it is lost if nothing follows it, written with the next entry otherwise, and
/// written anyway once such states fill `LAZY_BUFFER_BYTES_MAX`.
#[test]
fn commit_only_states_wait_for_the_next_sync_that_must_happen() {
    let dir = scratch_dir();
    let mut wal = Wal::create(dir.path(), b"me").expect("create");
    wal.append_entry(1, &payload(1, 20));
    wal.append_state(b"term 2 vote 1 commit 0");
    assert!(
        wal.sync().expect("sync"),
        "an entry and a new term are synced"
    );
    wal.append_commit_state(b"term 2 vote 1 commit 1");
    assert!(
        !wal.sync().expect("sync"),
        "a commit-only state alone is not"
    );
    drop(wal); // a crash: the commit-only state was never written
    let (mut wal, replay) = Wal::open(dir.path()).expect("reopen");
    assert_eq!(
        replay.state.as_deref(),
        Some(&b"term 2 vote 1 commit 0"[..])
    );
    assert_eq!(indexes(&replay), vec![1]);

    wal.append_commit_state(b"term 2 vote 1 commit 1");
    wal.append_entry(2, &payload(2, 20));
    assert!(
        wal.sync().expect("sync"),
        "an entry makes the buffer durable"
    );
    drop(wal);
    let (mut wal, replay) = Wal::open(dir.path()).expect("reopen");
    assert_eq!(
        replay.state.as_deref(),
        Some(&b"term 2 vote 1 commit 1"[..])
    );
    assert_eq!(indexes(&replay), vec![1, 2]);

    // Commit-only states alone are written once they fill the lazy buffer.
    let state = vec![b's'; 1000];
    let fill = oxcd_storage::wal::LAZY_BUFFER_BYTES_MAX.div_ceil(record_bytes(1000) as usize);
    for _ in 1..fill {
        wal.append_commit_state(&state);
        assert!(!wal.sync().expect("sync"), "under the bound: kept buffered");
    }
    wal.append_commit_state(&state);
    assert!(
        wal.sync().expect("sync"),
        "at the bound: written and synced"
    );
    drop(wal);
    let (_wal, replay) = Wal::open(dir.path()).expect("reopen");
    assert_eq!(replay.state.as_deref(), Some(&state[..]));
}
