//! Revisions and the keys of etcd's `key` bucket.
//!
//! A revision is `(main, sub)`: `main` counts write transactions, `sub` the changes within
//! one. Its key is 17 bytes: `main` as u64 big-endian, the byte `_`, `sub` as u64 big-endian,
//! so byte order is revision order. A deletion is stored as a *tombstone*: the same 17 bytes
//! plus the mark `t` (18 bytes), its value a `KeyValue` holding only the deleted key.
//! `scheduledCompactRev` and `finishedCompactRev` in `meta` are 17-byte keys with sub 0.

use crate::error::DecodeError;

pub const REV_BYTES: usize = 17;
pub const MARKED_REV_BYTES: usize = 18;
pub const TOMBSTONE_MARK: u8 = b't';
const SEPARATOR: u8 = b'_';

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    pub fn new(main: i64, sub: i64) -> Revision {
        Revision { main, sub }
    }

    /// The 17-byte key.
    pub fn to_bytes(&self) -> [u8; REV_BYTES] {
        let mut out = [0u8; REV_BYTES];
        out[0..8].copy_from_slice(&(self.main as u64).to_be_bytes());
        out[8] = SEPARATOR;
        out[9..17].copy_from_slice(&(self.sub as u64).to_be_bytes());
        out
    }

    /// The 18-byte tombstone key.
    pub fn to_tombstone_bytes(&self) -> [u8; MARKED_REV_BYTES] {
        let mut out = [0u8; MARKED_REV_BYTES];
        out[..REV_BYTES].copy_from_slice(&self.to_bytes());
        out[REV_BYTES] = TOMBSTONE_MARK;
        out
    }
}

/// A decoded key of the `key` bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RevisionKey {
    pub rev: Revision,
    pub tombstone: bool,
}

impl RevisionKey {
    /// Decodes a 17- or 18-byte key; anything else is an error (etcd would misread it).
    pub fn decode(b: &[u8]) -> Result<RevisionKey, DecodeError> {
        if b.len() != REV_BYTES && b.len() != MARKED_REV_BYTES {
            return Err(DecodeError::RevisionLength { len: b.len() });
        }
        if b[8] != SEPARATOR {
            return Err(DecodeError::RevisionSeparator { found: b[8] });
        }
        let tombstone = b.len() == MARKED_REV_BYTES;
        if tombstone && b[REV_BYTES] != TOMBSTONE_MARK {
            return Err(DecodeError::RevisionMark {
                found: b[REV_BYTES],
            });
        }
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[at..at + 8]);
            u64::from_be_bytes(w) as i64
        };
        Ok(RevisionKey {
            rev: Revision::new(word(0), word(9)),
            tombstone,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        if self.tombstone {
            self.rev.to_tombstone_bytes().to_vec()
        } else {
            self.rev.to_bytes().to_vec()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sort_as_revisions() {
        let a = Revision::new(5, 0);
        let b = Revision::new(5, 1);
        let c = Revision::new(256, 0);
        assert!(a.to_bytes() < b.to_bytes() && b.to_bytes() < c.to_bytes());
        assert_eq!(a.to_bytes(), *b"\0\0\0\0\0\0\0\x05_\0\0\0\0\0\0\0\0");
        let t = RevisionKey {
            rev: c,
            tombstone: true,
        };
        assert_eq!(RevisionKey::decode(&t.encode()), Ok(t));
        assert_eq!(
            RevisionKey::decode(&a.to_bytes()).map(|k| (k.rev, k.tombstone)),
            Ok((a, false))
        );
    }

    #[test]
    fn malformed_keys_are_errors() {
        assert_eq!(
            RevisionKey::decode(b"short"),
            Err(DecodeError::RevisionLength { len: 5 })
        );
        let mut k = Revision::new(1, 0).to_tombstone_bytes();
        k[17] = b'x';
        assert_eq!(
            RevisionKey::decode(&k),
            Err(DecodeError::RevisionMark { found: b'x' })
        );
        k[8] = b'-';
        assert!(matches!(
            RevisionKey::decode(&k),
            Err(DecodeError::RevisionSeparator { .. })
        ));
    }
}
