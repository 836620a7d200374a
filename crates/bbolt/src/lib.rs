//! bbolt database files exactly as etcd 3.4, 3.5 and 3.6 keep them (`member/snap/db`, and the
//! files `etcdctl snapshot save` writes), plus etcd's data model inside them and its HashKV.
//!
//! - [`Db`] reads a file page by page with `pread` (never the whole file), checks both meta
//!   pages, walks buckets (inline ones too), branch, leaf and overflow pages.
//! - [`DbWriter`] writes a file from sorted buckets of sorted keys as they come, to any
//!   `Write + Seek`; memory is bounded by one page per tree level.
//! - [`snapshot`]: the SHA-256 trailer of snapshot files; [`etcd`]: bucket and key names,
//!   revision keys, the protobuf records, `hash_kv` and `snapshot status`.
//!
//! # The file format (bbolt version 2)
//!
//! All integers are little-endian (the byte order of the machines bbolt runs on; etcd's
//! files are amd64/arm64), except what etcd itself stores in keys and values (big-endian).
//! The file is an array of pages of `page_size` bytes (4096 on Linux amd64; the writer always
//! uses 4096). A page is named by its id (`pgid`, u64): it starts at byte `pgid * page_size`.
//!
//! **Page header** (16 bytes, at the start of every page):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | `id`: the page's own pgid |
//! | 8 | 2 | `flags`: 0x01 branch, 0x02 leaf, 0x04 meta, 0x10 freelist (exactly one) |
//! | 10 | 2 | `count`: number of elements (leaf/branch) or free ids (freelist) |
//! | 12 | 4 | `overflow`: how many pages follow this one as part of it |
//!
//! A page with `overflow = n` occupies pages `id ..= id + n` (a leaf holding a value bigger
//! than a page, or a long freelist).
//!
//! **Meta pages** 0 and 1: the header (flags 0x04) then 64 bytes:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 16 | 4 | `magic` = 0xED0CDAED |
//! | 20 | 4 | `version` = 2 |
//! | 24 | 4 | `page_size` |
//! | 28 | 4 | `flags` (0) |
//! | 32 | 16 | root bucket header (see below): `root` pgid, `sequence` |
//! | 48 | 8 | `freelist` pgid, or `u64::MAX` when the freelist is not stored (etcd sets bbolt's `NoFreelistSync`; bbolt then rebuilds it by walking the tree) |
//! | 56 | 8 | `pgid`: the high-water mark, the number of pages in use; the database is `pgid * page_size` bytes |
//! | 64 | 8 | `txid`: the transaction that wrote this meta |
//! | 72 | 8 | `checksum`: FNV-1a 64 of the 56 bytes at offsets 16..72 |
//!
//! A meta is valid when magic, version and checksum match. bbolt uses the valid meta with the
//! higher `txid` (a commit writes meta page `txid % 2`, so one of the two is always whole).
//! `tx.WriteTo` (how etcd streams a snapshot) writes the same meta to both, page 1 with
//! `txid - 1`.
//!
//! **Freelist page** (flags 0x10): `count` u64 pgids of free pages follow the header; when
//! there are 0xFFFF or more, `count` is 0xFFFF and the first u64 holds the real count.
//! Every page below the high-water mark is reachable from the root, the freelist page itself,
//! or listed as free (bbolt's `tx.Check`, which `etcdctl snapshot status` runs, insists).
//!
//! **Leaf page** (flags 0x02): `count` leaf elements of 16 bytes right after the header, then
//! the keys and values:
//!
//! | offset in element | size | field |
//! |---|---|---|
//! | 0 | 4 | `flags`: 0x01 when the value is a bucket |
//! | 4 | 4 | `pos`: distance from *this element's own first byte* to its key |
//! | 8 | 4 | `ksize` |
//! | 12 | 4 | `vsize`: the value follows the key directly |
//!
//! **Branch page** (flags 0x01): `count` branch elements of 16 bytes, then the keys:
//!
//! | offset in element | size | field |
//! |---|---|---|
//! | 0 | 4 | `pos`: distance from this element to its key |
//! | 4 | 4 | `ksize` |
//! | 8 | 8 | `pgid` of the child page |
//!
//! The key of a branch element is the smallest key of its child subtree (or smaller, after
//! deletes); keys are sorted bytewise and unique within a bucket.
//!
//! **Buckets**: a leaf element with flag 0x01 names a bucket; its value starts with the
//! 16-byte bucket header `root` pgid (u64), `sequence` (u64). When `root` is 0 the bucket is
//! *inline*: the rest of the value is a complete leaf page (header with id 0, then elements
//! and data) holding the bucket's keys; bbolt inlines a bucket whose leaf is at most
//! `page_size / 4` bytes and holds no sub-bucket. The top-level buckets (etcd's `key`,
//! `meta`, `lease`, ...) are the elements of the root bucket named by the meta.
//!
//! # What etcd stores
//!
//! See [`etcd`]: bucket names, the revision keys of the `key` bucket and the protobuf
//! records. A snapshot file from `etcdctl snapshot save` is the database followed by the
//! 32-byte SHA-256 of the database bytes ([`snapshot`]).

pub mod error;
pub mod etcd;
pub mod format;
pub mod reader;
pub mod snapshot;
pub mod writer;

pub use error::{DecodeError, Error, WriteError};
pub use reader::{Bucket, Cursor, Db, Entry};
pub use writer::{DbWriter, WriteSummary};
