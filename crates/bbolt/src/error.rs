//! The crate's errors: [`Error`] for reading a file, [`WriteError`] for writing one,
//! [`DecodeError`] for etcd records that do not parse.

use std::io;
use std::path::PathBuf;

/// Reading a database or snapshot file failed. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not a bbolt database file: {reason}")]
    NotBbolt { path: PathBuf, reason: String },
    #[error("{path}: bbolt file format version {version} is not supported (only version 2)")]
    UnsupportedVersion { path: PathBuf, version: u32 },
    #[error("{path}: both meta pages fail their checksum: the file is damaged")]
    BadMetaChecksum { path: PathBuf },
    #[error("{path}: the file is truncated: it has {len_bytes} bytes of database, the meta page says {needed_bytes}")]
    Truncated {
        path: PathBuf,
        len_bytes: u64,
        needed_bytes: u64,
    },
    #[error("{path}: page {pgid} is out of range: the database has {page_count} pages")]
    PageOutOfRange {
        path: PathBuf,
        pgid: u64,
        page_count: u64,
    },
    #[error("{path}: page {pgid} is damaged: {reason}")]
    DamagedPage {
        path: PathBuf,
        pgid: u64,
        reason: String,
    },
    #[error("{path}: snapshot hash mismatch: the trailer says {expected}, the content hashes to {actual}")]
    HashMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{path}: snapshot missing hash: {len_bytes} bytes is not 32 past a multiple of 512 (etcdctl: --skip-hash-check)")]
    MissingHash { path: PathBuf, len_bytes: u64 },
    #[error("{path}: bucket {name:?} not found")]
    BucketNotFound { path: PathBuf, name: String },
    #[error("{path}: bucket {bucket:?}: {source}")]
    Decode {
        path: PathBuf,
        bucket: String,
        #[source]
        source: DecodeError,
    },
    #[error(
        "mvcc: required revision has been compacted (revision {rev}, compacted at {compact_rev})"
    )]
    Compacted { rev: i64, compact_rev: i64 },
    #[error(
        "mvcc: required revision is a future revision (revision {rev}, current {current_rev})"
    )]
    FutureRev { rev: i64, current_rev: i64 },
}

/// Writing a database file failed: bad input from the caller, or the output.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("writing the database: {0}")]
    Io(#[from] io::Error),
    #[error("bucket {name:?} does not sort after bucket {prev:?}: buckets must come in strictly increasing byte order")]
    BucketOrder { prev: String, name: String },
    #[error("bucket {bucket:?}: key {key:?} does not sort after {prev:?}: keys must come in strictly increasing byte order")]
    KeyOrder {
        bucket: String,
        prev: String,
        key: String,
    },
    #[error("a bucket name must not be empty")]
    EmptyBucketName,
    #[error("bucket {bucket:?}: a key must not be empty")]
    EmptyKey { bucket: String },
    #[error(
        "bucket {bucket:?}: key of {len_bytes} bytes is longer than bbolt's limit of {max_bytes}"
    )]
    KeyTooLarge {
        bucket: String,
        len_bytes: usize,
        max_bytes: usize,
    },
    #[error(
        "bucket {bucket:?}: value of {len_bytes} bytes is longer than bbolt's limit of {max_bytes}"
    )]
    ValueTooLarge {
        bucket: String,
        len_bytes: usize,
        max_bytes: usize,
    },
    #[error("put before any bucket was begun")]
    NoBucket,
    #[error("page size {0} is not supported: use a power of two from 1024 to 65536")]
    PageSize(u32),
}

/// An etcd record (revision key or protobuf message) that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("revision key of {len} bytes: expected 17 (main '_' sub) or 18 (with the tombstone mark 't')")]
    RevisionLength { len: usize },
    #[error("revision key has {found:#04x} where the '_' separator belongs")]
    RevisionSeparator { found: u8 },
    #[error("revision key has mark {found:#04x}: only 't' (tombstone) is known")]
    RevisionMark { found: u8 },
    #[error("{message}: protobuf cut short at byte {offset}")]
    Truncated {
        message: &'static str,
        offset: usize,
    },
    #[error("{message}: varint longer than 10 bytes at byte {offset}")]
    VarintOverflow {
        message: &'static str,
        offset: usize,
    },
    #[error("{message}: field {field} has unsupported wire type {wire_type}")]
    WireType {
        message: &'static str,
        field: u64,
        wire_type: u8,
    },
    #[error("{message}: field {field} has the wrong wire type for its declared type")]
    FieldType { message: &'static str, field: u64 },
    #[error("{message}: field {field} is not valid UTF-8")]
    Utf8 { message: &'static str, field: u64 },
    #[error("{what}: expected {expected} bytes, found {found}")]
    Length {
        what: &'static str,
        expected: usize,
        found: usize,
    },
}
