//! bbolt's on-disk structures as pure functions over bytes: the page header, the meta, the
//! bucket header, leaf and branch elements (layouts in the crate doc). Every accessor checks
//! its bounds and reports a problem as a string the caller wraps with the file and page; no
//! I/O here.

pub const MAGIC: u32 = 0xED0C_DAED;
pub const VERSION: u32 = 2;
pub const DEFAULT_PAGE_SIZE: u32 = 4096;
pub const PAGE_HEADER_BYTES: usize = 16;
/// Leaf and branch elements are both 16 bytes.
pub const ELEMENT_BYTES: usize = 16;
pub const BUCKET_HEADER_BYTES: usize = 16;
pub const META_BYTES: usize = 64;
/// The checksum covers the meta up to (not including) its own field.
const META_CHECKSUMMED_BYTES: usize = 56;

pub const BRANCH_PAGE_FLAG: u16 = 0x01;
pub const LEAF_PAGE_FLAG: u16 = 0x02;
pub const META_PAGE_FLAG: u16 = 0x04;
pub const FREELIST_PAGE_FLAG: u16 = 0x10;
/// Leaf element flag: the value is a bucket.
pub const BUCKET_LEAF_FLAG: u32 = 0x01;
/// `meta.freelist` when the freelist is not stored in the file.
pub const PGID_NO_FREELIST: u64 = u64::MAX;
/// bbolt's `MaxKeySize` and `MaxValueSize`.
pub const KEY_BYTES_MAX: usize = 32768;
pub const VALUE_BYTES_MAX: usize = (1 << 31) - 2;
/// A freelist page's `count` at this value means "the real count is the first u64".
pub const FREELIST_COUNT_OVERFLOW: u16 = 0xFFFF;

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

pub(crate) fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// FNV-1a, 64 bits: the meta checksum (Go's `hash/fnv` `New64a`).
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageHeader {
    pub id: u64,
    pub flags: u16,
    pub count: u16,
    pub overflow: u32,
}

impl PageHeader {
    pub fn parse(b: &[u8]) -> Option<PageHeader> {
        Some(PageHeader {
            id: u64_at(b, 0)?,
            flags: u16_at(b, 8)?,
            count: u16_at(b, 10)?,
            overflow: u32_at(b, 12)?,
        })
    }

    pub fn encode(&self) -> [u8; PAGE_HEADER_BYTES] {
        let mut out = [0u8; PAGE_HEADER_BYTES];
        out[0..8].copy_from_slice(&self.id.to_le_bytes());
        out[8..10].copy_from_slice(&self.flags.to_le_bytes());
        out[10..12].copy_from_slice(&self.count.to_le_bytes());
        out[12..16].copy_from_slice(&self.overflow.to_le_bytes());
        out
    }
}

/// A bucket's header: its root page (0 for an inline bucket) and its `NextSequence` counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketHeader {
    pub root: u64,
    pub sequence: u64,
}

impl BucketHeader {
    pub fn parse(b: &[u8]) -> Option<BucketHeader> {
        Some(BucketHeader {
            root: u64_at(b, 0)?,
            sequence: u64_at(b, 8)?,
        })
    }

    pub fn encode(&self) -> [u8; BUCKET_HEADER_BYTES] {
        let mut out = [0u8; BUCKET_HEADER_BYTES];
        out[0..8].copy_from_slice(&self.root.to_le_bytes());
        out[8..16].copy_from_slice(&self.sequence.to_le_bytes());
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub magic: u32,
    pub version: u32,
    pub page_size: u32,
    pub flags: u32,
    pub root: BucketHeader,
    pub freelist: u64,
    /// High-water mark: pages `0..pgid` are in use.
    pub pgid: u64,
    pub txid: u64,
    pub checksum: u64,
}

/// Why a meta is not usable, in bbolt's order of checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaProblem {
    Magic,
    Version(u32),
    Checksum,
}

impl Meta {
    /// Parses the 64 meta bytes that follow a meta page's header.
    pub fn parse(b: &[u8]) -> Option<Meta> {
        Some(Meta {
            magic: u32_at(b, 0)?,
            version: u32_at(b, 4)?,
            page_size: u32_at(b, 8)?,
            flags: u32_at(b, 12)?,
            root: BucketHeader::parse(b.get(16..32)?)?,
            freelist: u64_at(b, 32)?,
            pgid: u64_at(b, 40)?,
            txid: u64_at(b, 48)?,
            checksum: u64_at(b, 56)?,
        })
    }

    /// The 64 bytes with `checksum` computed over the rest.
    pub fn encode(&self) -> [u8; META_BYTES] {
        let mut out = [0u8; META_BYTES];
        out[0..4].copy_from_slice(&self.magic.to_le_bytes());
        out[4..8].copy_from_slice(&self.version.to_le_bytes());
        out[8..12].copy_from_slice(&self.page_size.to_le_bytes());
        out[12..16].copy_from_slice(&self.flags.to_le_bytes());
        out[16..32].copy_from_slice(&self.root.encode());
        out[32..40].copy_from_slice(&self.freelist.to_le_bytes());
        out[40..48].copy_from_slice(&self.pgid.to_le_bytes());
        out[48..56].copy_from_slice(&self.txid.to_le_bytes());
        let sum = fnv1a64(&out[..META_CHECKSUMMED_BYTES]);
        out[56..64].copy_from_slice(&sum.to_le_bytes());
        out
    }

    /// bbolt's `meta.validate`: magic, then version, then checksum.
    pub fn validate(&self) -> Result<(), MetaProblem> {
        if self.magic != MAGIC {
            return Err(MetaProblem::Magic);
        }
        if self.version != VERSION {
            return Err(MetaProblem::Version(self.version));
        }
        let mut copy = *self;
        copy.checksum = 0;
        let encoded = copy.encode();
        if u64_at(&encoded, 56) != Some(self.checksum) {
            return Err(MetaProblem::Checksum);
        }
        Ok(())
    }
}

/// A leaf element: the key, the value, and whether the value is a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafElem<'a> {
    pub flags: u32,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

impl LeafElem<'_> {
    pub fn is_bucket(&self) -> bool {
        self.flags & BUCKET_LEAF_FLAG != 0
    }
}

/// A branch element: the smallest key of the child and the child's page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BranchElem<'a> {
    pub key: &'a [u8],
    pub child: u64,
}

/// A leaf or branch page (or an inline bucket's page) whose header and element array fit.
#[derive(Debug, Clone, Copy)]
pub struct NodePage<'a> {
    bytes: &'a [u8],
    header: PageHeader,
}

impl<'a> NodePage<'a> {
    /// Checks the flags (exactly leaf or branch) and that the element array fits the bytes.
    pub fn parse(bytes: &'a [u8]) -> Result<NodePage<'a>, String> {
        let header = PageHeader::parse(bytes).ok_or("shorter than a page header")?;
        if header.flags != LEAF_PAGE_FLAG && header.flags != BRANCH_PAGE_FLAG {
            return Err(format!(
                "flags {:#06x} where a leaf (0x0002) or branch (0x0001) page belongs",
                header.flags
            ));
        }
        let elems_end = PAGE_HEADER_BYTES + usize::from(header.count) * ELEMENT_BYTES;
        if elems_end > bytes.len() {
            return Err(format!(
                "{} elements overrun the page's {} bytes",
                header.count,
                bytes.len()
            ));
        }
        if header.flags == BRANCH_PAGE_FLAG && header.count == 0 {
            return Err("branch page with no elements".to_string());
        }
        Ok(NodePage { bytes, header })
    }

    pub fn header(&self) -> PageHeader {
        self.header
    }

    pub fn is_leaf(&self) -> bool {
        self.header.flags == LEAF_PAGE_FLAG
    }

    pub fn count(&self) -> usize {
        usize::from(self.header.count)
    }

    /// The bytes `len` long at `pos` past element `index`'s own first byte.
    fn span(&self, index: usize, pos: u32, len: u64) -> Result<(usize, usize), String> {
        let elem_off = PAGE_HEADER_BYTES + index * ELEMENT_BYTES;
        let start = (elem_off as u64) + u64::from(pos);
        let end = start + len;
        if end > self.bytes.len() as u64 {
            return Err(format!(
                "element {index} points at bytes {start}..{end} past the page's {} bytes",
                self.bytes.len()
            ));
        }
        Ok((start as usize, end as usize))
    }

    pub fn leaf(&self, index: usize) -> Result<LeafElem<'a>, String> {
        if !self.is_leaf() || index >= self.count() {
            return Err(format!("no leaf element {index}"));
        }
        let off = PAGE_HEADER_BYTES + index * ELEMENT_BYTES;
        let e = &self.bytes[off..off + ELEMENT_BYTES];
        let field = |at: usize| u32_at(e, at).unwrap_or(0);
        let (flags, pos, ksize, vsize) = (field(0), field(4), field(8), field(12));
        let (start, end) = self.span(index, pos, u64::from(ksize) + u64::from(vsize))?;
        let split = start + ksize as usize;
        Ok(LeafElem {
            flags,
            key: &self.bytes[start..split],
            value: &self.bytes[split..end],
        })
    }

    pub fn branch(&self, index: usize) -> Result<BranchElem<'a>, String> {
        if self.is_leaf() || index >= self.count() {
            return Err(format!("no branch element {index}"));
        }
        let off = PAGE_HEADER_BYTES + index * ELEMENT_BYTES;
        let e = &self.bytes[off..off + ELEMENT_BYTES];
        let pos = u32_at(e, 0).unwrap_or(0);
        let ksize = u32_at(e, 4).unwrap_or(0);
        let child = u64_at(e, 8).unwrap_or(0);
        let (start, end) = self.span(index, pos, u64::from(ksize))?;
        Ok(BranchElem {
            key: &self.bytes[start..end],
            child,
        })
    }
}

/// Encodes a leaf page holding `elems` (flags, key, value) into `out` (already sized to whole
/// pages and zeroed), with page id `id` and `overflow` extra pages.
pub fn encode_leaf<'e>(
    out: &mut [u8],
    id: u64,
    overflow: u32,
    elems: impl ExactSizeIterator<Item = (u32, &'e [u8], &'e [u8])>,
) {
    let count = elems.len();
    let header = PageHeader {
        id,
        flags: LEAF_PAGE_FLAG,
        count: count as u16,
        overflow,
    };
    out[..PAGE_HEADER_BYTES].copy_from_slice(&header.encode());
    let mut data = PAGE_HEADER_BYTES + count * ELEMENT_BYTES;
    for (i, (flags, key, value)) in elems.enumerate() {
        let elem = PAGE_HEADER_BYTES + i * ELEMENT_BYTES;
        let e = &mut out[elem..elem + ELEMENT_BYTES];
        e[0..4].copy_from_slice(&flags.to_le_bytes());
        e[4..8].copy_from_slice(&((data - elem) as u32).to_le_bytes());
        e[8..12].copy_from_slice(&(key.len() as u32).to_le_bytes());
        e[12..16].copy_from_slice(&(value.len() as u32).to_le_bytes());
        out[data..data + key.len()].copy_from_slice(key);
        data += key.len();
        out[data..data + value.len()].copy_from_slice(value);
        data += value.len();
    }
}

/// Encodes a branch page of (key, child pgid) elements into `out` (sized and zeroed).
pub fn encode_branch<'e>(
    out: &mut [u8],
    id: u64,
    overflow: u32,
    elems: impl ExactSizeIterator<Item = (&'e [u8], u64)>,
) {
    let count = elems.len();
    let header = PageHeader {
        id,
        flags: BRANCH_PAGE_FLAG,
        count: count as u16,
        overflow,
    };
    out[..PAGE_HEADER_BYTES].copy_from_slice(&header.encode());
    let mut data = PAGE_HEADER_BYTES + count * ELEMENT_BYTES;
    for (i, (key, child)) in elems.enumerate() {
        let elem = PAGE_HEADER_BYTES + i * ELEMENT_BYTES;
        let e = &mut out[elem..elem + ELEMENT_BYTES];
        e[0..4].copy_from_slice(&((data - elem) as u32).to_le_bytes());
        e[4..8].copy_from_slice(&(key.len() as u32).to_le_bytes());
        e[8..16].copy_from_slice(&child.to_le_bytes());
        out[data..data + key.len()].copy_from_slice(key);
        data += key.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_go_hash_fnv() {
        // Reference values of Go's fnv.New64a().
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn meta_round_trips_and_detects_each_problem() {
        let meta = Meta {
            magic: MAGIC,
            version: VERSION,
            page_size: 4096,
            flags: 0,
            root: BucketHeader {
                root: 3,
                sequence: 0,
            },
            freelist: 2,
            pgid: 4,
            txid: 7,
            checksum: 0,
        };
        let bytes = meta.encode();
        let parsed = Meta::parse(&bytes).expect("64 bytes parse");
        assert_eq!(parsed.validate(), Ok(()));
        let mut bad = bytes;
        bad[40] ^= 1;
        assert_eq!(
            Meta::parse(&bad).map(|m| m.validate()),
            Some(Err(MetaProblem::Checksum))
        );
        let mut bad = bytes;
        bad[4] = 1;
        assert_eq!(
            Meta::parse(&bad).map(|m| m.validate()),
            Some(Err(MetaProblem::Version(1)))
        );
        let mut bad = bytes;
        bad[0] = 0;
        assert_eq!(
            Meta::parse(&bad).map(|m| m.validate()),
            Some(Err(MetaProblem::Magic))
        );
    }

    #[test]
    fn leaf_elements_round_trip_and_overruns_are_refused() {
        let mut page = vec![0u8; 4096];
        let elems: Vec<(u32, &[u8], &[u8])> = vec![(0, b"a", b"1"), (1, b"bb", b"")];
        encode_leaf(&mut page, 9, 0, elems.into_iter());
        let node = NodePage::parse(&page).expect("valid leaf");
        assert_eq!(node.header().id, 9);
        assert_eq!(node.count(), 2);
        let e = node.leaf(1).expect("element 1");
        assert_eq!(
            (e.key, e.value, e.is_bucket()),
            (&b"bb"[..], &b""[..], true)
        );
        // ksize pointing past the page
        page[16 + 8..16 + 12].copy_from_slice(&5000u32.to_le_bytes());
        let node = NodePage::parse(&page).expect("header still fine");
        assert!(node.leaf(0).is_err());
        // count overrunning the page
        page[10..12].copy_from_slice(&300u16.to_le_bytes());
        assert!(NodePage::parse(&page).is_err());
    }
}
