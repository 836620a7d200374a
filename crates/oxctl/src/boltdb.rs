//! Read-only walk of an etcd backend snapshot (a bbolt file) for `snapshot status`: the hash,
//! revision, key count and size that etcdctl reports.
//!
//! bbolt layout used here: pages of `page_size` bytes; each starts with a 16-byte header
//! (id u64, flags u16, count u16, overflow u32, little endian). Pages 0 and 1 are metas
//! (magic 0xED0CDAED, version, page_size, flags, root bucket {root pgid, sequence},
//! freelist pgid, high-water pgid, txid, FNV-64a checksum); the valid one with the higher txid
//! wins. Branch elements are {pos u32, ksize u32, pgid u64}, leaf elements
//! {flags u32, pos u32, ksize u32, vsize u32}, positions relative to the element. A leaf
//! element with flag 1 is a bucket whose value is {root pgid u64, sequence u64}, followed by
//! an inline page when root is 0.

const MAGIC: u32 = 0xED0C_DAED;
const PAGE_HEADER: usize = 16;
const ELEMENT: usize = 16;
const BRANCH: u16 = 0x01;
const LEAF: u16 = 0x02;
const BUCKET_LEAF: u32 = 0x01;
/// Nesting limit for bucket trees: a corrupt file must not recurse forever.
const DEPTH_MAX: usize = 64;

/// What etcdctl's `snapshot status` prints.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Status {
    pub hash: u32,
    pub revision: i64,
    pub total_key: u64,
    pub total_size: u64,
}

struct Db<'a> {
    data: &'a [u8],
    page_size: usize,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// One (key, value, is_bucket) entry of a B+tree, in key order.
type Entry<'a> = (&'a [u8], &'a [u8], bool);

impl<'a> Db<'a> {
    fn page(&self, id: u64) -> Option<&'a [u8]> {
        let start = usize::try_from(id).ok()?.checked_mul(self.page_size)?;
        let overflow = u32_at(self.data, start + 12)? as usize;
        self.data
            .get(start..start + (overflow + 1) * self.page_size)
    }

    /// Collects the entries of the tree rooted at `page` (a page slice, possibly inline).
    fn entries(&self, page: &'a [u8], out: &mut Vec<Entry<'a>>, depth: usize) -> Option<()> {
        if depth > DEPTH_MAX {
            return None;
        }
        let (flags, count) = (u16_at(page, 8)?, u16_at(page, 10)? as usize);
        for i in 0..count {
            let e = PAGE_HEADER + i * ELEMENT;
            if flags & BRANCH != 0 {
                let child = self.page(u64_at(page, e + 8)?)?;
                self.entries(child, out, depth + 1)?;
            } else if flags & LEAF != 0 {
                let (eflags, pos, ksize, vsize) = (
                    u32_at(page, e)?,
                    u32_at(page, e + 4)? as usize,
                    u32_at(page, e + 8)? as usize,
                    u32_at(page, e + 12)? as usize,
                );
                let k = page.get(e + pos..e + pos + ksize)?;
                let v = page.get(e + pos + ksize..e + pos + ksize + vsize)?;
                out.push((k, v, eflags & BUCKET_LEAF != 0));
            } else {
                return None;
            }
        }
        Some(())
    }

    /// The root page of a bucket from its value: a page id, or the inline page after it.
    fn bucket_root(&self, value: &'a [u8]) -> Option<&'a [u8]> {
        match u64_at(value, 0)? {
            0 => value.get(16..),
            id => self.page(id),
        }
    }
}

fn meta(data: &[u8], at: usize) -> Option<(u32, u64, u64, u64)> {
    let m = at + PAGE_HEADER;
    if u32_at(data, m)? != MAGIC {
        return None;
    }
    let sum = fnv64a(data.get(m..m + 56)?);
    if sum != u64_at(data, m + 56)? {
        return None;
    }
    // page_size, root pgid, high-water pgid, txid
    Some((
        u32_at(data, m + 8)?,
        u64_at(data, m + 16)?,
        u64_at(data, m + 40)?,
        u64_at(data, m + 48)?,
    ))
}

fn fnv64a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Reads the status of a bbolt snapshot, or says why it cannot.
pub fn status(data: &[u8]) -> Result<Status, String> {
    let bad = || "snapshot file integrity check failed: not a valid bbolt database".to_string();
    let first = meta(data, 0);
    let page_size = match first {
        Some((ps, ..)) => ps as usize,
        None => 4096,
    };
    let second = meta(data, page_size);
    let (ps, root, pgid, _) = match (first, second) {
        (Some(a), Some(b)) => {
            if a.3 >= b.3 {
                a
            } else {
                b
            }
        }
        (Some(a), None) | (None, Some(a)) => a,
        // bbolt's own words when no meta page is valid.
        (None, None) => return Err("invalid database".to_string()),
    };
    let db = Db {
        data,
        page_size: ps as usize,
    };
    let mut buckets = Vec::new();
    db.entries(db.page(root).ok_or_else(bad)?, &mut buckets, 0)
        .ok_or_else(bad)?;
    let mut crc = Crc32c::new();
    let mut st = Status {
        total_size: pgid * u64::from(ps),
        ..Status::default()
    };
    for (name, value, is_bucket) in buckets {
        if !is_bucket {
            return Err(format!(
                "cannot get hash of bucket {}",
                String::from_utf8_lossy(name)
            ));
        }
        crc.update(name);
        let mut items = Vec::new();
        db.entries(db.bucket_root(value).ok_or_else(bad)?, &mut items, 0)
            .ok_or_else(bad)?;
        for (k, v, nested) in items {
            crc.update(k);
            if !nested {
                crc.update(v);
            }
            if name == b"key" {
                st.revision = u64_at_be(k).unwrap_or(0) as i64;
            }
            st.total_key += 1;
        }
    }
    st.hash = crc.finish();
    Ok(st)
}

fn u64_at_be(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))
}

/// CRC-32C (Castagnoli), as Go's `crc32.MakeTable(crc32.Castagnoli)`.
struct Crc32c {
    table: [u32; 256],
    crc: u32,
}

impl Crc32c {
    fn new() -> Crc32c {
        let mut table = [0u32; 256];
        for (i, slot) in table.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0x82F6_3B78 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        Crc32c { table, crc: !0 }
    }
    fn update(&mut self, b: &[u8]) {
        for &x in b {
            self.crc = self.table[((self.crc ^ u32::from(x)) & 0xff) as usize] ^ (self.crc >> 8);
        }
    }
    fn finish(&self) -> u32 {
        !self.crc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        let mut c = Crc32c::new();
        c.update(b"123456789");
        assert_eq!(c.finish(), 0xE306_9283);
    }

    #[test]
    fn garbage_is_refused() {
        assert!(status(&[0u8; 8192]).is_err());
        assert!(status(b"short").is_err());
    }
}
