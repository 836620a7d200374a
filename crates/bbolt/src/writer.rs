//! Writing a bbolt file in one pass from sorted input: [`DbWriter`].
//!
//! The caller begins top-level buckets in increasing name order and puts keys in increasing
//! order into each. Pages go out as they fill, so memory holds one unfinished page per tree
//! level (plus the value being put), whatever the size of the data.
//!
//! Layout of the file written: page 0 and 1 the metas, page 2 an empty freelist, then, in
//! the order they fill, each bucket's leaves and branch pages (children before parents, a
//! tree's root last) interleaved with the root bucket's pages; the root bucket's root page
//! comes last of all. A bucket whose single leaf is at most `page_size / 4` bytes is stored
//! inline in the root bucket's leaf, as bbolt does. Leaves and branch pages are filled to the
//! page size (bbolt splits a full page on its next write); a value bigger than a page gets a
//! leaf of its own with overflow pages. Meta pages are written last, by seeking back to the
//! start: meta 0 with txid 2 and meta 1 with txid 1, both naming the same tree, as bbolt's
//! `tx.WriteTo` does. Every page below the high-water mark is reachable, so bbolt's
//! `tx.Check` passes. Nested buckets are not written (etcd has none).
//!
//! Durability is the caller's: sync the file after [`DbWriter::finish`].

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::mem;

use crate::error::WriteError;
use crate::format::{
    encode_branch, encode_leaf, BucketHeader, Meta, PageHeader, BUCKET_HEADER_BYTES,
    BUCKET_LEAF_FLAG, DEFAULT_PAGE_SIZE, ELEMENT_BYTES, FREELIST_PAGE_FLAG, KEY_BYTES_MAX, MAGIC,
    META_PAGE_FLAG, PAGE_HEADER_BYTES, VALUE_BYTES_MAX, VERSION,
};
use crate::snapshot;

/// Output is gathered into writes of about this size.
const WRITE_BUFFER_BYTES: usize = 256 * 1024;
/// The freelist's page, right after the two metas.
const FREELIST_PGID: u64 = 2;
/// txid of meta 0; meta 1 gets one less, as in bbolt's `tx.WriteTo`.
const META_TXID: u64 = 2;
/// A page's `count` is a u16.
const ELEMENTS_PER_PAGE_MAX: usize = u16::MAX as usize - 1;

/// What [`DbWriter::finish`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteSummary {
    pub page_size: u32,
    /// The high-water mark: the database is `page_count * page_size` bytes.
    pub page_count: u64,
    pub db_bytes: u64,
    pub buckets: u64,
    pub keys: u64,
    /// The trailer appended by [`DbWriter::finish_snapshot`].
    pub sha256: Option<[u8; 32]>,
}

/// Pages on their way to the output, numbered as they are allocated.
struct PageOut<W> {
    out: W,
    page_size: usize,
    next_pgid: u64,
    pending: Vec<u8>,
}

impl<W: Write> PageOut<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= WRITE_BUFFER_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.write_all(&self.pending)?;
        self.pending.clear();
        Ok(())
    }

    /// Pages needed for a node of `bytes` bytes.
    fn span(&self, bytes: usize) -> usize {
        bytes.div_ceil(self.page_size).max(1)
    }

    /// Encodes a node with `encode(buffer, pgid, overflow)` into freshly allocated pages.
    fn emit(&mut self, bytes: usize, encode: impl FnOnce(&mut [u8], u64, u32)) -> io::Result<u64> {
        let span = self.span(bytes);
        let pgid = self.next_pgid;
        self.next_pgid += span as u64;
        let mut page = vec![0u8; span * self.page_size];
        encode(&mut page, pgid, (span - 1) as u32);
        self.write(&page)?;
        Ok(pgid)
    }
}

struct LeafItem {
    flags: u32,
    key: Vec<u8>,
    value: Vec<u8>,
}

struct BranchItem {
    key: Vec<u8>,
    child: u64,
}

/// One level of a tree being built: the elements of its unfinished page.
struct Level<T> {
    items: Vec<T>,
    /// Header plus elements plus keys (and values) so far.
    bytes: usize,
    pages_written: u64,
}

impl<T> Level<T> {
    fn new() -> Level<T> {
        Level {
            items: Vec::new(),
            bytes: PAGE_HEADER_BYTES,
            pages_written: 0,
        }
    }

    /// Whether an element of `size` bytes must start a new page.
    fn full_for(&self, size: usize, page_size: usize) -> bool {
        !self.items.is_empty()
            && (self.bytes + size > page_size || self.items.len() >= ELEMENTS_PER_PAGE_MAX)
    }
}

/// A B+tree bulk-loaded bottom-up: a full page is written and its first key passed up.
struct TreeBuilder {
    leaf: Level<LeafItem>,
    branches: Vec<Level<BranchItem>>,
}

impl TreeBuilder {
    fn new() -> TreeBuilder {
        TreeBuilder {
            leaf: Level::new(),
            branches: Vec::new(),
        }
    }

    fn add<W: Write>(&mut self, out: &mut PageOut<W>, item: LeafItem) -> io::Result<()> {
        let size = ELEMENT_BYTES + item.key.len() + item.value.len();
        if self.leaf.full_for(size, out.page_size) {
            self.flush_leaf(out)?;
        }
        self.leaf.bytes += size;
        self.leaf.items.push(item);
        Ok(())
    }

    fn flush_leaf<W: Write>(&mut self, out: &mut PageOut<W>) -> io::Result<()> {
        let items = mem::take(&mut self.leaf.items);
        let bytes = mem::replace(&mut self.leaf.bytes, PAGE_HEADER_BYTES);
        let pgid = write_leaf(out, &items, bytes)?;
        self.leaf.pages_written += 1;
        let first = items.into_iter().next().map(|i| i.key).unwrap_or_default();
        self.push_branch(out, 0, first, pgid)
    }

    fn push_branch<W: Write>(
        &mut self,
        out: &mut PageOut<W>,
        level: usize,
        key: Vec<u8>,
        child: u64,
    ) -> io::Result<()> {
        if self.branches.len() == level {
            self.branches.push(Level::new());
        }
        let size = ELEMENT_BYTES + key.len();
        if self.branches[level].full_for(size, out.page_size) {
            self.flush_branch(out, level)?;
        }
        let lvl = &mut self.branches[level];
        lvl.bytes += size;
        lvl.items.push(BranchItem { key, child });
        Ok(())
    }

    fn flush_branch<W: Write>(&mut self, out: &mut PageOut<W>, level: usize) -> io::Result<()> {
        let lvl = &mut self.branches[level];
        let items = mem::take(&mut lvl.items);
        let bytes = mem::replace(&mut lvl.bytes, PAGE_HEADER_BYTES);
        lvl.pages_written += 1;
        let pgid = write_branch(out, &items, bytes)?;
        let first = items.into_iter().next().map(|i| i.key).unwrap_or_default();
        self.push_branch(out, level + 1, first, pgid)
    }

    /// Whether everything fits one leaf of at most `bytes_max` bytes that is still unwritten.
    fn single_leaf_within(&self, bytes_max: usize) -> bool {
        self.branches.is_empty() && self.leaf.pages_written == 0 && self.leaf.bytes <= bytes_max
    }

    /// Writes what is left, bottom level first, and returns the root's pgid.
    fn finish<W: Write>(mut self, out: &mut PageOut<W>) -> io::Result<u64> {
        if self.branches.is_empty() {
            return write_leaf(out, &self.leaf.items, self.leaf.bytes);
        }
        if !self.leaf.items.is_empty() {
            self.flush_leaf(out)?;
        }
        let mut level = 0;
        while level < self.branches.len() {
            let is_top = level + 1 == self.branches.len();
            let lvl = &self.branches[level];
            if is_top && lvl.pages_written == 0 {
                return write_branch(out, &lvl.items, lvl.bytes);
            }
            if !lvl.items.is_empty() {
                self.flush_branch(out, level)?;
            }
            level += 1;
        }
        Err(io::Error::other("bbolt writer: tree has no root level"))
    }
}

fn write_leaf<W: Write>(out: &mut PageOut<W>, items: &[LeafItem], bytes: usize) -> io::Result<u64> {
    out.emit(bytes, |buf, pgid, overflow| {
        let elems = items
            .iter()
            .map(|i| (i.flags, i.key.as_slice(), i.value.as_slice()));
        encode_leaf(buf, pgid, overflow, elems);
    })
}

fn write_branch<W: Write>(
    out: &mut PageOut<W>,
    items: &[BranchItem],
    bytes: usize,
) -> io::Result<u64> {
    out.emit(bytes, |buf, pgid, overflow| {
        let elems = items.iter().map(|i| (i.key.as_slice(), i.child));
        encode_branch(buf, pgid, overflow, elems);
    })
}

/// The bucket being filled.
struct OpenBucket {
    name: Vec<u8>,
    tree: TreeBuilder,
    prev_key: Option<Vec<u8>>,
}

/// Writes a bbolt file from sorted buckets of sorted keys, streaming pages to `W`.
///
/// ```no_run
/// # fn main() -> Result<(), oxcd_bbolt::WriteError> {
/// let file = std::fs::File::create("db")?;
/// let mut w = oxcd_bbolt::DbWriter::new(file)?;
/// w.begin_bucket(b"key")?;
/// w.put(b"k1", b"v1")?;
/// w.begin_bucket(b"meta")?;
/// let (file, _summary) = w.finish()?;
/// file.sync_all()?;
/// # Ok(()) }
/// ```
pub struct DbWriter<W: Write + Seek> {
    pages: PageOut<W>,
    root: TreeBuilder,
    current: Option<OpenBucket>,
    prev_bucket: Option<Vec<u8>>,
    buckets: u64,
    keys: u64,
}

impl<W: Write + Seek> DbWriter<W> {
    /// A writer with bbolt's default page size (4096), writing from the start of `out`.
    pub fn new(out: W) -> Result<DbWriter<W>, WriteError> {
        DbWriter::with_page_size(out, DEFAULT_PAGE_SIZE)
    }

    /// A writer with another page size (a power of two from 1024 to 65536).
    pub fn with_page_size(mut out: W, page_size: u32) -> Result<DbWriter<W>, WriteError> {
        if !page_size.is_power_of_two() || !(1024..=65536).contains(&page_size) {
            return Err(WriteError::PageSize(page_size));
        }
        out.seek(SeekFrom::Start(0))?;
        let mut pages = PageOut {
            out,
            page_size: page_size as usize,
            next_pgid: FREELIST_PGID + 1,
            pending: Vec::with_capacity(WRITE_BUFFER_BYTES + page_size as usize),
        };
        // Two placeholder metas, filled in by `finish`, then the empty freelist.
        let mut head = vec![0u8; 3 * page_size as usize];
        let freelist = PageHeader {
            id: FREELIST_PGID,
            flags: FREELIST_PAGE_FLAG,
            count: 0,
            overflow: 0,
        };
        let at = 2 * page_size as usize;
        head[at..at + PAGE_HEADER_BYTES].copy_from_slice(&freelist.encode());
        pages.write(&head)?;
        Ok(DbWriter {
            pages,
            root: TreeBuilder::new(),
            current: None,
            prev_bucket: None,
            buckets: 0,
            keys: 0,
        })
    }

    /// Ends the current bucket, if any, and begins the top-level bucket `name`, which must
    /// sort after every bucket begun before.
    pub fn begin_bucket(&mut self, name: &[u8]) -> Result<(), WriteError> {
        self.end_bucket()?;
        if name.is_empty() {
            return Err(WriteError::EmptyBucketName);
        }
        if name.len() > KEY_BYTES_MAX {
            return Err(WriteError::KeyTooLarge {
                bucket: String::new(),
                len_bytes: name.len(),
                max_bytes: KEY_BYTES_MAX,
            });
        }
        if let Some(prev) = &self.prev_bucket {
            if name <= prev.as_slice() {
                return Err(WriteError::BucketOrder {
                    prev: lossy(prev),
                    name: lossy(name),
                });
            }
        }
        self.prev_bucket = Some(name.to_vec());
        self.current = Some(OpenBucket {
            name: name.to_vec(),
            tree: TreeBuilder::new(),
            prev_key: None,
        });
        Ok(())
    }

    /// Puts `key` = `value` into the current bucket; `key` must sort after the previous one.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), WriteError> {
        let Some(bucket) = self.current.as_mut() else {
            return Err(WriteError::NoBucket);
        };
        check_put(bucket, key, value)?;
        bucket.prev_key = Some(key.to_vec());
        let item = LeafItem {
            flags: 0,
            key: key.to_vec(),
            value: value.to_vec(),
        };
        bucket.tree.add(&mut self.pages, item)?;
        self.keys += 1;
        Ok(())
    }

    /// Ends the current bucket (also done by `begin_bucket` and `finish`).
    pub fn end_bucket(&mut self) -> Result<(), WriteError> {
        let Some(bucket) = self.current.take() else {
            return Ok(());
        };
        let inline_bytes_max = self.pages.page_size / 4;
        let value = if bucket.tree.single_leaf_within(inline_bytes_max) {
            inline_bucket_value(&bucket.tree.leaf)
        } else {
            let root = bucket.tree.finish(&mut self.pages)?;
            BucketHeader { root, sequence: 0 }.encode().to_vec()
        };
        let item = LeafItem {
            flags: BUCKET_LEAF_FLAG,
            key: bucket.name,
            value,
        };
        self.root.add(&mut self.pages, item)?;
        self.buckets += 1;
        Ok(())
    }

    /// Writes the remaining pages and the metas; the output holds a complete database.
    pub fn finish(mut self) -> Result<(W, WriteSummary), WriteError> {
        self.end_bucket()?;
        let root = self.root.finish(&mut self.pages)?;
        let mut pages = self.pages;
        pages.flush()?;
        let page_size = pages.page_size as u32;
        let page_count = pages.next_pgid;
        let mut out = pages.out;
        out.seek(SeekFrom::Start(0))?;
        for (pgid, txid) in [(0, META_TXID), (1, META_TXID - 1)] {
            out.write_all(&meta_page(page_size, root, page_count, pgid, txid))?;
        }
        let db_bytes = page_count * u64::from(page_size);
        out.seek(SeekFrom::Start(db_bytes))?;
        out.flush()?;
        let summary = WriteSummary {
            page_size,
            page_count,
            db_bytes,
            buckets: self.buckets,
            keys: self.keys,
            sha256: None,
        };
        Ok((out, summary))
    }
}

impl<W: Read + Write + Seek> DbWriter<W> {
    /// Like [`DbWriter::finish`], then reads the database back once and appends its SHA-256,
    /// making a snapshot file that `etcdctl snapshot restore` accepts.
    pub fn finish_snapshot(self) -> Result<(W, WriteSummary), WriteError> {
        let (mut out, mut summary) = self.finish()?;
        summary.sha256 = Some(snapshot::append_hash(&mut out, summary.db_bytes)?);
        Ok((out, summary))
    }
}

fn check_put(bucket: &OpenBucket, key: &[u8], value: &[u8]) -> Result<(), WriteError> {
    let name = || lossy(&bucket.name);
    if key.is_empty() {
        return Err(WriteError::EmptyKey { bucket: name() });
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(WriteError::KeyTooLarge {
            bucket: name(),
            len_bytes: key.len(),
            max_bytes: KEY_BYTES_MAX,
        });
    }
    if value.len() > VALUE_BYTES_MAX {
        return Err(WriteError::ValueTooLarge {
            bucket: name(),
            len_bytes: value.len(),
            max_bytes: VALUE_BYTES_MAX,
        });
    }
    if let Some(prev) = &bucket.prev_key {
        if key <= prev.as_slice() {
            return Err(WriteError::KeyOrder {
                bucket: name(),
                prev: lossy(prev),
                key: lossy(key),
            });
        }
    }
    Ok(())
}

/// An inline bucket's value: a header with root 0, then its leaf page (id 0) exactly as long
/// as its contents.
fn inline_bucket_value(leaf: &Level<LeafItem>) -> Vec<u8> {
    let mut value = vec![0u8; BUCKET_HEADER_BYTES + leaf.bytes];
    let header = BucketHeader {
        root: 0,
        sequence: 0,
    };
    value[..BUCKET_HEADER_BYTES].copy_from_slice(&header.encode());
    let elems = leaf
        .items
        .iter()
        .map(|i| (i.flags, i.key.as_slice(), i.value.as_slice()));
    encode_leaf(&mut value[BUCKET_HEADER_BYTES..], 0, 0, elems);
    value
}

fn meta_page(page_size: u32, root: u64, page_count: u64, pgid: u64, txid: u64) -> Vec<u8> {
    let mut page = vec![0u8; page_size as usize];
    let header = PageHeader {
        id: pgid,
        flags: META_PAGE_FLAG,
        count: 0,
        overflow: 0,
    };
    page[..PAGE_HEADER_BYTES].copy_from_slice(&header.encode());
    let meta = Meta {
        magic: MAGIC,
        version: VERSION,
        page_size,
        flags: 0,
        root: BucketHeader { root, sequence: 0 },
        freelist: FREELIST_PGID,
        pgid: page_count,
        txid,
        checksum: 0,
    };
    let encoded = meta.encode();
    page[PAGE_HEADER_BYTES..PAGE_HEADER_BYTES + encoded.len()].copy_from_slice(&encoded);
    page
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
