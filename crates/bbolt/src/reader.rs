//! Reading a bbolt file page by page: [`Db::open`] checks the two metas and the file's
//! length; [`Bucket`] and [`Cursor`] walk the B+tree with one `pread` per page, holding at
//! most one page per tree level. Every length read from the file is checked against the
//! file before anything is allocated for it; a damaged file is an [`Error`], never a panic.
//! The freelist is not read: what a reader sees is exactly what the root bucket reaches.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::format::{
    BucketHeader, Meta, MetaProblem, NodePage, PageHeader, BUCKET_HEADER_BYTES, META_BYTES,
    PAGE_HEADER_BYTES, PGID_NO_FREELIST,
};
use crate::snapshot::{has_hash_trailer, SHA256_BYTES};

/// Trees deeper than this are loops in a damaged file (a real one is a handful of levels).
const TREE_DEPTH_MAX: usize = 64;
/// Page sizes bbolt probes for meta page 1 when meta page 0 is unreadable (1 KiB..16 MiB).
const PAGE_SIZE_PROBES: u32 = 15;

/// An open bbolt file. Reads go to the file on demand; nothing is cached.
#[derive(Debug)]
pub struct Db {
    file: File,
    path: PathBuf,
    db_len_bytes: u64,
    hash_trailer: bool,
    meta: Meta,
}

/// One element of a bucket: a key with its value, or a sub-bucket (`value` = its header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub is_bucket: bool,
}

impl Db {
    /// Opens `path`. A file whose length is 32 past a multiple of 512 is taken as a snapshot
    /// with a SHA-256 trailer, as etcd does; the trailer is not part of the database (check it
    /// with [`crate::snapshot::verify_hash`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Db, Error> {
        let path = path.as_ref().to_path_buf();
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let hash_trailer = has_hash_trailer(len);
        let db_len_bytes = if hash_trailer {
            len - SHA256_BYTES as u64
        } else {
            len
        };
        let meta = read_meta(&file, &path, db_len_bytes)?;
        let needed_bytes = meta.pgid.saturating_mul(u64::from(meta.page_size));
        if db_len_bytes < needed_bytes {
            return Err(Error::Truncated {
                path,
                len_bytes: db_len_bytes,
                needed_bytes,
            });
        }
        Ok(Db {
            file,
            path,
            db_len_bytes,
            hash_trailer,
            meta,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The meta in use (the valid one with the higher txid).
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    pub fn page_size(&self) -> u32 {
        self.meta.page_size
    }

    /// `pgid * page_size`: what bbolt's `tx.Size()` and `etcdctl snapshot status` report.
    pub fn size_bytes(&self) -> u64 {
        self.meta.pgid * u64::from(self.meta.page_size)
    }

    /// Bytes of the file that belong to the database (the file less any hash trailer).
    pub fn file_db_bytes(&self) -> u64 {
        self.db_len_bytes
    }

    /// Whether the file ends in a snapshot's SHA-256 trailer (by its length, as etcd decides).
    pub fn has_hash_trailer(&self) -> bool {
        self.hash_trailer
    }

    /// Whether the freelist is stored (`false` for files etcd writes with `NoFreelistSync`).
    pub fn has_freelist(&self) -> bool {
        self.meta.freelist != PGID_NO_FREELIST
    }

    /// The root bucket, whose elements are the top-level buckets.
    pub fn root(&self) -> Bucket<'_> {
        Bucket {
            db: self,
            name: Vec::new(),
            root: BucketRoot::Page(self.meta.root.root),
            sequence: self.meta.root.sequence,
        }
    }

    /// The top-level bucket `name`, if there is one.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket<'_>>, Error> {
        self.root().bucket(name)
    }

    /// Like [`Db::bucket`], but a missing bucket is an error.
    pub fn must_bucket(&self, name: &[u8]) -> Result<Bucket<'_>, Error> {
        self.bucket(name)?.ok_or_else(|| Error::BucketNotFound {
            path: self.path.clone(),
            name: String::from_utf8_lossy(name).into_owned(),
        })
    }

    /// Names of the top-level buckets, in order.
    pub fn bucket_names(&self) -> Result<Vec<Vec<u8>>, Error> {
        let mut names = Vec::new();
        let mut cursor = self.root().cursor();
        while let Some(e) = cursor.next_entry()? {
            if e.is_bucket {
                names.push(e.key.to_vec());
            }
        }
        Ok(names)
    }

    pub(crate) fn damaged(&self, pgid: u64, reason: impl Into<String>) -> Error {
        Error::DamagedPage {
            path: self.path.clone(),
            pgid,
            reason: reason.into(),
        }
    }

    /// Reads page `pgid` with its overflow pages. Checks the id is below the high-water mark,
    /// the overflow stays below it, and the page names itself.
    pub(crate) fn read_page(&self, pgid: u64) -> Result<Vec<u8>, Error> {
        let page_count = self.meta.pgid;
        if pgid < 2 {
            return Err(self.damaged(pgid, "a tree points at a meta page"));
        }
        if pgid >= page_count {
            return Err(Error::PageOutOfRange {
                path: self.path.clone(),
                pgid,
                page_count,
            });
        }
        let page_size = u64::from(self.meta.page_size);
        let offset = pgid * page_size;
        let mut head = [0u8; PAGE_HEADER_BYTES];
        self.read_at(&mut head, offset)?;
        let header = PageHeader::parse(&head).ok_or_else(|| self.damaged(pgid, "no header"))?;
        if header.id != pgid {
            return Err(self.damaged(pgid, format!("its header says page {}", header.id)));
        }
        let span = u64::from(header.overflow) + 1;
        if pgid + span > page_count {
            return Err(self.damaged(
                pgid,
                format!(
                    "{} overflow pages run past the end ({page_count} pages)",
                    header.overflow
                ),
            ));
        }
        // Bounded: pgid + span <= meta.pgid and meta.pgid * page_size <= the file's length.
        let mut page = vec![0u8; (span * page_size) as usize];
        self.read_at(&mut page, offset)?;
        Ok(page)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), Error> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|source| Error::Io {
                path: self.path.clone(),
                source,
            })
    }
}

/// Reads and picks the meta as bbolt does: meta 0 gives the page size; if it is unusable,
/// meta 1 is probed at every page size from 1 KiB. Of the valid ones the higher txid wins.
fn read_meta(file: &File, path: &Path, db_len_bytes: u64) -> Result<Meta, Error> {
    let meta_at = |offset: u64| -> Option<Meta> {
        let mut buf = [0u8; PAGE_HEADER_BYTES + META_BYTES];
        if offset + buf.len() as u64 > db_len_bytes {
            return None;
        }
        file.read_exact_at(&mut buf, offset).ok()?;
        Meta::parse(&buf[PAGE_HEADER_BYTES..])
    };
    let Some(meta0) = meta_at(0) else {
        return Err(Error::NotBbolt {
            path: path.to_path_buf(),
            reason: format!("{db_len_bytes} bytes is too short for a meta page"),
        });
    };
    let mut candidates = vec![meta0];
    if meta0.validate().is_ok() && page_size_ok(meta0.page_size) {
        candidates.extend(meta_at(u64::from(meta0.page_size)));
    } else {
        for i in 0..PAGE_SIZE_PROBES {
            let probe = 1024u64 << i;
            if let Some(m) = meta_at(probe).filter(|m| m.validate().is_ok()) {
                candidates.push(m);
                break;
            }
        }
    }
    let best = candidates
        .iter()
        .filter(|m| m.validate().is_ok() && page_size_ok(m.page_size))
        .max_by_key(|m| m.txid);
    match best {
        Some(meta) => check_meta_fields(meta, path).map(|()| *meta),
        None => Err(meta_error(&candidates, path)),
    }
}

/// bbolt accepts any page size its meta names; we accept powers of two up to 16 MiB so a
/// valid-looking meta cannot make us allocate absurd buffers.
fn page_size_ok(page_size: u32) -> bool {
    page_size.is_power_of_two() && (512..=(16 << 20)).contains(&page_size)
}

fn check_meta_fields(meta: &Meta, path: &Path) -> Result<(), Error> {
    let bad = |reason: String| Error::DamagedPage {
        path: path.to_path_buf(),
        pgid: meta.txid % 2,
        reason,
    };
    if meta.pgid < 3 {
        return Err(bad(format!("high-water mark {} below 3", meta.pgid)));
    }
    if meta.root.root < 2 || meta.root.root >= meta.pgid {
        return Err(bad(format!(
            "root bucket page {} outside 2..{}",
            meta.root.root, meta.pgid
        )));
    }
    if meta.freelist != PGID_NO_FREELIST && (meta.freelist < 2 || meta.freelist >= meta.pgid) {
        return Err(bad(format!(
            "freelist page {} outside 2..{}",
            meta.freelist, meta.pgid
        )));
    }
    Ok(())
}

/// The error for a file with no usable meta: the most specific problem either meta shows.
fn meta_error(candidates: &[Meta], path: &Path) -> Error {
    let problems: Vec<Result<(), MetaProblem>> = candidates.iter().map(|m| m.validate()).collect();
    let path = path.to_path_buf();
    if problems.contains(&Err(MetaProblem::Checksum)) {
        return Error::BadMetaChecksum { path };
    }
    if let Some(Err(MetaProblem::Version(version))) = problems
        .iter()
        .find(|p| matches!(p, Err(MetaProblem::Version(_))))
    {
        return Error::UnsupportedVersion {
            path,
            version: *version,
        };
    }
    if problems.iter().any(|p| p.is_ok()) {
        return Error::NotBbolt {
            path,
            reason: "the meta names an unsupported page size".to_string(),
        };
    }
    Error::NotBbolt {
        path,
        reason: "no meta page carries the magic 0xED0CDAED".to_string(),
    }
}

#[derive(Debug, Clone)]
enum BucketRoot {
    Page(u64),
    /// An inline bucket's leaf page, copied out of its parent's value.
    Inline(Vec<u8>),
}

/// A bucket of a [`Db`]: iterate it with [`Bucket::cursor`], look keys up with [`Bucket::get`].
#[derive(Debug, Clone)]
pub struct Bucket<'db> {
    db: &'db Db,
    name: Vec<u8>,
    root: BucketRoot,
    sequence: u64,
}

impl<'db> Bucket<'db> {
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// The bucket's `NextSequence` counter.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Whether the bucket is stored inline in its parent's leaf.
    pub fn is_inline(&self) -> bool {
        matches!(self.root, BucketRoot::Inline(_))
    }

    /// The bucket's root page (`None` for an inline bucket).
    pub fn root_pgid(&self) -> Option<u64> {
        match self.root {
            BucketRoot::Page(pgid) => Some(pgid),
            BucketRoot::Inline(_) => None,
        }
    }

    /// A cursor at the first element.
    pub fn cursor(&self) -> Cursor<'db> {
        Cursor {
            db: self.db,
            root: self.root.clone(),
            stack: Vec::new(),
            started: false,
            prev_key: None,
        }
    }

    /// The value stored under `key` (a sub-bucket's entry is not a value: `None`).
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self
            .find(key)?
            .and_then(|(value, is_bucket)| (!is_bucket).then_some(value)))
    }

    /// The sub-bucket `name`, if there is one.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket<'db>>, Error> {
        match self.find(name)? {
            Some((value, true)) => self.open_child(name, &value).map(Some),
            _ => Ok(None),
        }
    }

    fn open_child(&self, name: &[u8], value: &[u8]) -> Result<Bucket<'db>, Error> {
        let pgid = self.page_id_for_errors();
        let header = BucketHeader::parse(value).ok_or_else(|| {
            self.db.damaged(
                pgid,
                format!("bucket {:?} has a {}-byte header", lossy(name), value.len()),
            )
        })?;
        let root = if header.root == 0 {
            let page = value[BUCKET_HEADER_BYTES..].to_vec();
            NodePage::parse(&page).map_err(|r| {
                self.db
                    .damaged(pgid, format!("inline bucket {:?}: {r}", lossy(name)))
            })?;
            BucketRoot::Inline(page)
        } else {
            BucketRoot::Page(header.root)
        };
        Ok(Bucket {
            db: self.db,
            name: name.to_vec(),
            root,
            sequence: header.sequence,
        })
    }

    fn page_id_for_errors(&self) -> u64 {
        match self.root {
            BucketRoot::Page(pgid) => pgid,
            BucketRoot::Inline(_) => 0,
        }
    }

    /// Descends from the root to the leaf that would hold `key`.
    fn find(&self, key: &[u8]) -> Result<Option<(Vec<u8>, bool)>, Error> {
        let (mut page, mut pgid) = match &self.root {
            BucketRoot::Inline(bytes) => (bytes.clone(), 0),
            BucketRoot::Page(pgid) => (self.db.read_page(*pgid)?, *pgid),
        };
        for _ in 0..TREE_DEPTH_MAX {
            let node = NodePage::parse(&page).map_err(|r| self.db.damaged(pgid, r))?;
            if node.is_leaf() {
                for i in 0..node.count() {
                    let e = node.leaf(i).map_err(|r| self.db.damaged(pgid, r))?;
                    if e.key == key {
                        return Ok(Some((e.value.to_vec(), e.is_bucket())));
                    }
                }
                return Ok(None);
            }
            // The last element whose key is <= `key` (or the first, as bbolt does).
            let mut child = node.branch(0).map_err(|r| self.db.damaged(pgid, r))?.child;
            for i in 1..node.count() {
                let e = node.branch(i).map_err(|r| self.db.damaged(pgid, r))?;
                if e.key > key {
                    break;
                }
                child = e.child;
            }
            page = self.db.read_page(child)?;
            pgid = child;
        }
        Err(self.db.damaged(pgid, "tree deeper than 64 levels"))
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

struct Frame {
    pgid: u64,
    page: Vec<u8>,
    index: usize,
}

/// Walks a bucket's elements in key order. Checks as it goes that keys strictly increase,
/// so a page reached twice or out of place is reported, not looped over.
pub struct Cursor<'db> {
    db: &'db Db,
    root: BucketRoot,
    stack: Vec<Frame>,
    started: bool,
    prev_key: Option<Vec<u8>>,
}

impl<'db> Cursor<'db> {
    /// The next element, borrowed from the cursor until the next call.
    pub fn next_entry(&mut self) -> Result<Option<Entry<'_>>, Error> {
        if !self.started {
            self.started = true;
            let frame = match &self.root {
                BucketRoot::Inline(bytes) => Frame {
                    pgid: 0,
                    page: bytes.clone(),
                    index: 0,
                },
                BucketRoot::Page(pgid) => self.frame(*pgid)?,
            };
            self.stack.push(frame);
        }
        loop {
            let Some(top) = self.stack.last_mut() else {
                return Ok(None);
            };
            let pgid = top.pgid;
            let node = NodePage::parse(&top.page).map_err(|r| self.db.damaged(pgid, r))?;
            if top.index >= node.count() {
                self.stack.pop();
                continue;
            }
            let index = top.index;
            top.index += 1;
            if node.is_leaf() {
                return self.leaf_entry(index);
            }
            let child = node
                .branch(index)
                .map_err(|r| self.db.damaged(pgid, r))?
                .child;
            if self.stack.len() >= TREE_DEPTH_MAX {
                return Err(self.db.damaged(pgid, "tree deeper than 64 levels"));
            }
            let frame = self.frame(child)?;
            self.stack.push(frame);
        }
    }

    fn frame(&self, pgid: u64) -> Result<Frame, Error> {
        let page = self.db.read_page(pgid)?;
        NodePage::parse(&page).map_err(|r| self.db.damaged(pgid, r))?;
        Ok(Frame {
            pgid,
            page,
            index: 0,
        })
    }

    /// Element `index` of the leaf on top of the stack, after the order check.
    fn leaf_entry(&mut self, index: usize) -> Result<Option<Entry<'_>>, Error> {
        let Some(top) = self.stack.last() else {
            return Ok(None);
        };
        let pgid = top.pgid;
        let node = NodePage::parse(&top.page).map_err(|r| self.db.damaged(pgid, r))?;
        let e = node.leaf(index).map_err(|r| self.db.damaged(pgid, r))?;
        if let Some(prev) = &self.prev_key {
            if e.key <= prev.as_slice() {
                return Err(self.db.damaged(
                    pgid,
                    format!(
                        "key {:?} does not sort after the previous key {:?}",
                        lossy(e.key),
                        lossy(prev)
                    ),
                ));
            }
        }
        match &mut self.prev_key {
            Some(prev) => {
                prev.clear();
                prev.extend_from_slice(e.key);
            }
            None => self.prev_key = Some(e.key.to_vec()),
        }
        Ok(Some(Entry {
            key: e.key,
            value: e.value,
            is_bucket: e.is_bucket(),
        }))
    }

    /// The remaining elements as owned `(key, value, is_bucket)` triples, in order.
    pub fn into_owned_iter(self) -> OwnedIter<'db> {
        OwnedIter { cursor: self }
    }
}

/// An [`Iterator`] over a bucket's elements that copies each one out.
pub struct OwnedIter<'db> {
    cursor: Cursor<'db>,
}

/// A bucket element copied out of its page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedEntry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub is_bucket: bool,
}

impl Iterator for OwnedIter<'_> {
    type Item = Result<OwnedEntry, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.cursor.next_entry() {
            Ok(Some(e)) => Some(Ok(OwnedEntry {
                key: e.key.to_vec(),
                value: e.value.to_vec(),
                is_bucket: e.is_bucket,
            })),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}
