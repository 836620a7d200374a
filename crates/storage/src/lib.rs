//! oxcd's durable state. `wal` owns the raft write-ahead log (segment files of CRC-checked
//! records); `mvcc` owns the multi-version key-value store on redb (the "backend"), its
//! in-memory key index, and the other tables applied from the log (v2 keys, leases, meta).
//!
//! Architecture invariant: nothing here knows about raft's types, gRPC or the network. The
//! server hands this crate opaque log records and key-value operations; on-disk formats are
//! described in `docs/design.md` and in each module's doc.

pub mod mvcc;
pub mod wal;

pub use mvcc::{
    Deleted, Event, EventKind, MvccError, Put, RangeOptions, RangeResult, Store, WriteBatch,
};
pub use wal::{Wal, WalError, WalRecord};
