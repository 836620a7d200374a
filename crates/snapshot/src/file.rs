//! The snapshot file: what Maintenance.Snapshot streams and `snapshot save` writes, what
//! `snapshot status` reads and `snapshot restore` starts from. Layout: magic `OXCDSNP1`,
//! body length (u64 LE), the backend records ([`oxcd_storage::Store::snapshot`]), zero
//! padding to a multiple of 512 bytes, SHA-256 of everything before it. etcdctl checks that
//! shape (etcd's bbolt file is a multiple of 512 bytes with its SHA-256 appended).
//!
//! A backend record is: table (u8), key length (u32 LE), key, value length (u32 LE), value.

use sha2::Digest as _;

/// First bytes of a snapshot file.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"OXCDSNP1";
/// Snapshot files are padded to a multiple of this (etcd's bbolt page multiple), so that
/// `len % 512 == 32` tells a file with a hash trailer from one without, as etcdctl does.
pub const SNAPSHOT_ALIGN: usize = 512;
const HASH_LEN: usize = 32;
/// bbolt's meta magic (little endian, after the 16-byte page header): an etcd snapshot.
pub(crate) const BBOLT_MAGIC: [u8; 4] = 0xED0C_DAEDu32.to_le_bytes();

/// The file a snapshot stream writes: header, body, padding, SHA-256.
pub fn encode_snapshot(body: &[u8]) -> Vec<u8> {
    let mut data = SNAPSHOT_MAGIC.to_vec();
    data.extend_from_slice(&(body.len() as u64).to_le_bytes());
    data.extend_from_slice(body);
    data.resize(data.len().div_ceil(SNAPSHOT_ALIGN) * SNAPSHOT_ALIGN, 0);
    let sum = sha2::Sha256::digest(&data);
    data.extend_from_slice(&sum);
    data
}

/// Why a snapshot file cannot be used. The texts are etcdctl's where it has one.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("snapshot missing hash but --skip-hash-check=false")]
    MissingHash,
    #[error("expected sha256 {expected}, got {got}")]
    HashMismatch { expected: String, got: String },
    #[error("{0} is an etcd (bbolt) snapshot; oxcd restores the snapshots oxcd members stream (restore this one with etcdctl into an etcd data dir)")]
    Etcd(String),
    #[error("{path} is not an oxcd snapshot: {why}")]
    NotSnapshot { path: String, why: String },
}

/// Go's `%v` of a byte slice: `[1 2 3]`.
pub(crate) fn go_bytes(b: &[u8]) -> String {
    let parts: Vec<String> = b.iter().map(|x| x.to_string()).collect();
    format!("[{}]", parts.join(" "))
}

/// Checks a snapshot file and returns its backend body. `path` only names it in errors.
pub fn snapshot_body<'a>(
    path: &str,
    data: &'a [u8],
    skip_hash_check: bool,
) -> Result<&'a [u8], SnapshotFileError> {
    if data.len() >= 24 && data[16..20] == BBOLT_MAGIC {
        return Err(SnapshotFileError::Etcd(path.to_string()));
    }
    let has_hash = data.len() % SNAPSHOT_ALIGN == HASH_LEN;
    if !has_hash && !skip_hash_check {
        return Err(SnapshotFileError::MissingHash);
    }
    let not = |why: &str| SnapshotFileError::NotSnapshot {
        path: path.to_string(),
        why: why.to_string(),
    };
    if has_hash && !skip_hash_check {
        let (content, sum) = data.split_at(data.len() - HASH_LEN);
        let got = sha2::Sha256::digest(content);
        if got.as_slice() != sum {
            return Err(SnapshotFileError::HashMismatch {
                expected: go_bytes(sum),
                got: go_bytes(&got),
            });
        }
    }
    if data.len() < 16 || &data[..8] != SNAPSHOT_MAGIC {
        return Err(not("it does not start with OXCDSNP1"));
    }
    let len = u64::from_le_bytes(data[8..16].try_into().map_err(|_| not("short header"))?);
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| l.checked_add(16))
        .filter(|&e| e <= data.len())
        .ok_or_else(|| not("it is shorter than its header says (truncated?)"))?;
    Ok(&data[16..end])
}

/// What `snapshot status` reports for an oxcd snapshot.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SnapshotStatus {
    /// CRC-32 (IEEE) of the backend body.
    pub hash: u32,
    pub revision: i64,
    /// Records in the backend: every key revision, meta and aux row (etcd counts every key
    /// of every bucket).
    pub total_key: u64,
    pub total_size: u64,
}

/// Reads the status of a snapshot file's body without opening a database.
pub fn snapshot_status(path: &str, data: &[u8]) -> Result<SnapshotStatus, SnapshotFileError> {
    let body = snapshot_body(path, data, false)?;
    let not = |why: &str| SnapshotFileError::NotSnapshot {
        path: path.to_string(),
        why: why.to_string(),
    };
    let mut st = SnapshotStatus {
        hash: crc32fast::hash(body),
        total_size: data.len() as u64,
        revision: 1,
        ..Default::default()
    };
    for r in records(body) {
        let (t, key, value) = r.ok_or_else(|| not("a backend record is truncated"))?;
        st.total_key += 1;
        if t == 1 && key == b"current_rev" && value.len() == 8 {
            st.revision = i64::from_le_bytes(value.try_into().map_err(|_| not("meta"))?);
        }
    }
    Ok(st)
}

/// The records of a backend body (see [`oxcd_storage::Store::snapshot`]) as
/// (table, key, value); `None` where a record is truncated.
fn records(body: &[u8]) -> impl Iterator<Item = Option<(u8, &[u8], &[u8])>> {
    let mut rest = body;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut take = |n: usize| -> Option<&[u8]> {
            if rest.len() < n {
                rest = &[];
                return None;
            }
            let (a, b) = rest.split_at(n);
            rest = b;
            Some(a)
        };
        let len = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        Some((|| {
            let t = take(1)?[0];
            let klen = len(take(4)?);
            let key = take(klen)?;
            let vlen = len(take(4)?);
            let value = take(vlen)?;
            Some((t, key, value))
        })())
    })
}

/// Maintenance.Hash: CRC-32 of the whole backend (keys, history, leases, auth, members, v2,
/// alarms), leaving out only the raft position (`consistent_index`/`consistent_term`),
/// which differs between members that applied the same data through different log entries.
pub fn backend_hash(body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for (t, key, value) in records(body).map_while(|r| r) {
        if t == 1 && key.starts_with(b"consistent_") {
            continue;
        }
        h.update(&[t]);
        h.update(&(key.len() as u32).to_le_bytes());
        h.update(key);
        h.update(&(value.len() as u32).to_le_bytes());
        h.update(value);
    }
    h.finalize()
}

/// [`backend_hash`] of the backend as of `view`, read record by record (the same hash as
/// of the body [`oxcd_storage::Store::snapshot`] would build, without building it).
pub fn backend_hash_of(
    view: &oxcd_storage::mvcc::ReadView,
) -> Result<u32, oxcd_storage::MvccError> {
    let mut h = crc32fast::Hasher::new();
    view.for_each_record(|t, key, value| {
        if t == 1 && key.first().is_some_and(|k| k.starts_with(b"consistent_")) {
            return Ok(());
        }
        let klen: usize = key.iter().map(|p| p.len()).sum();
        h.update(&[t]);
        h.update(&(klen as u32).to_le_bytes());
        for part in key {
            h.update(part);
        }
        h.update(&(value.len() as u32).to_le_bytes());
        h.update(value);
        Ok(())
    })?;
    Ok(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_round_trips_and_damage_is_refused() {
        let body =
            b"\x01\x0b\x00\x00\x00current_rev\x08\x00\x00\x00\x07\x00\x00\x00\x00\x00\x00\x00";
        let file = encode_snapshot(body);
        assert_eq!(file.len() % SNAPSHOT_ALIGN, HASH_LEN);
        assert_eq!(snapshot_body("s", &file, false).ok(), Some(&body[..]));
        let st = snapshot_status("s", &file).ok();
        assert_eq!(st.map(|s| (s.revision, s.total_key)), Some((7, 1)));
        let mut bad = file.clone();
        bad[20] ^= 1;
        let e = snapshot_body("s", &bad, false).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.starts_with("expected sha256 [")));
        assert!(snapshot_body("s", &bad, true).is_ok());
        let e = snapshot_body("s", &file[..100], false)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("snapshot missing hash but --skip-hash-check=false")
        );
    }

    #[test]
    fn etcd_snapshots_are_named() {
        let mut f = vec![0u8; 4096 + 32];
        f[16..20].copy_from_slice(&BBOLT_MAGIC);
        let e = snapshot_body("e.db", &f, false)
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("etcd (bbolt) snapshot")));
    }

    /// Decoders under random input (issue 16): any file is a body or a clear error, never a
    /// panic; a file with a good hash gives back exactly its body.
    mod props {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]

            #[test]
            fn random_files_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
                let _ = snapshot_body("s", &data, false);
                let _ = snapshot_body("s", &data, true);
                let _ = snapshot_status("s", &data);
                let _ = backend_hash(&data);
            }

            #[test]
            fn a_sealed_file_gives_its_body_back(
                body in proptest::collection::vec(any::<u8>(), 0..1500),
                at in any::<prop::sample::Index>(),
                xor in 1u8..=255,
            ) {
                let file = encode_snapshot(&body);
                prop_assert_eq!(snapshot_body("s", &file, false).ok(), Some(&body[..]));
                let _ = snapshot_status("s", &file);
                let mut bad = file.clone();
                let i = at.index(bad.len());
                bad[i] ^= xor;
                prop_assert!(snapshot_body("s", &bad, false).is_err(), "a changed byte at {i}");
                let _ = snapshot_body("s", &bad, true);
            }
        }
    }
}
