//! The SHA-256 trailer of etcd snapshot files.
//!
//! `etcdctl snapshot save` stores what the server's `Maintenance.Snapshot` stream sends: the
//! bbolt database, then the 32-byte SHA-256 of exactly those database bytes. A database is a
//! whole number of pages, so etcd recognises the trailer by length alone: a file of `n` bytes
//! has one when `n % 512 == 32`. `etcdctl snapshot restore` then checks the hash (unless
//! `--skip-hash-check`) and refuses a file without one ("snapshot missing hash"). A member's
//! own `member/snap/db` has no trailer.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::Error;

pub const SHA256_BYTES: usize = 32;
/// How much of the file is hashed per read.
const HASH_CHUNK_BYTES: usize = 1 << 20;

/// etcd's rule: `size % 512 == sha256.Size`.
pub fn has_hash_trailer(len_bytes: u64) -> bool {
    len_bytes % 512 == SHA256_BYTES as u64
}

/// What [`verify_hash`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trailer {
    /// The trailer is there and matches: the database is the first `db_bytes` bytes.
    Verified { db_bytes: u64, sha256: [u8; 32] },
    /// No trailer (a member's `db` file, or a snapshot saved without one).
    Absent { db_bytes: u64 },
}

/// Checks a snapshot file's trailer, reading the file once in bounded chunks.
pub fn verify_hash(path: impl AsRef<Path>) -> Result<Trailer, Error> {
    let path = path.as_ref();
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if !has_hash_trailer(len) {
        return Ok(Trailer::Absent { db_bytes: len });
    }
    let db_bytes = len - SHA256_BYTES as u64;
    let actual = sha256_prefix(&mut file, db_bytes).map_err(io)?;
    let mut expected = [0u8; SHA256_BYTES];
    file.read_exact(&mut expected).map_err(io)?;
    if actual != expected {
        return Err(Error::HashMismatch {
            path: path.to_path_buf(),
            expected: hex(&expected),
            actual: hex(&actual),
        });
    }
    Ok(Trailer::Verified {
        db_bytes,
        sha256: actual,
    })
}

/// Like [`verify_hash`], but a file without a trailer is an error, as for `snapshot restore`
/// without `--skip-hash-check`.
pub fn require_hash(path: impl AsRef<Path>) -> Result<[u8; 32], Error> {
    let path = path.as_ref();
    match verify_hash(path)? {
        Trailer::Verified { sha256, .. } => Ok(sha256),
        Trailer::Absent { db_bytes } => Err(Error::MissingHash {
            path: path.to_path_buf(),
            len_bytes: db_bytes,
        }),
    }
}

/// SHA-256 of the first `len_bytes` of `r`, read from its start; leaves `r` just past them.
pub fn sha256_prefix<R: Read + Seek>(r: &mut R, len_bytes: u64) -> io::Result<[u8; 32]> {
    r.seek(SeekFrom::Start(0))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; HASH_CHUNK_BYTES];
    let mut left = len_bytes;
    while left > 0 {
        let want = left.min(HASH_CHUNK_BYTES as u64) as usize;
        r.read_exact(&mut buf[..want])?;
        hasher.update(&buf[..want]);
        left -= want as u64;
    }
    Ok(hasher.finalize().into())
}

/// Appends the trailer to a database of `db_bytes` bytes held in `f`, making it a snapshot
/// file. Returns the hash.
pub fn append_hash<F: Read + Write + Seek>(f: &mut F, db_bytes: u64) -> io::Result<[u8; 32]> {
    let sum = sha256_prefix(f, db_bytes)?;
    f.seek(SeekFrom::Start(db_bytes))?;
    f.write_all(&sum)?;
    f.flush()?;
    Ok(sum)
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailer_rule_is_etcds() {
        assert!(has_hash_trailer(4096 * 6 + 32));
        assert!(!has_hash_trailer(4096 * 6));
        assert!(!has_hash_trailer(31));
    }

    #[test]
    fn append_then_verify_then_tamper() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("snap.db");
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("create");
        f.write_all(&vec![7u8; 8192]).expect("write");
        let sum = append_hash(&mut f, 8192).expect("append");
        drop(f);
        assert_eq!(
            verify_hash(&path).expect("verify"),
            Trailer::Verified {
                db_bytes: 8192,
                sha256: sum
            }
        );
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[100] ^= 0xff;
        std::fs::write(&path, &bytes).expect("write");
        assert!(matches!(
            verify_hash(&path),
            Err(Error::HashMismatch { .. })
        ));
        std::fs::write(&path, &bytes[..8192]).expect("write");
        assert!(matches!(
            require_hash(&path),
            Err(Error::MissingHash { .. })
        ));
    }
}
