//! The state wing: the deterministic state machine. Committed log entries are applied here,
//! in order, on the raft thread; the same entry applies the same way on every member.
//!
//! Rule: nothing in this wing imports `crate::consensus` or `crate::api`, and nothing here does
//! I/O of its own beyond the backend (`oxcd_storage`). Handlers read these tables; only the
//! applier writes them.

pub mod alarm;
pub mod apply;
pub mod auth;
pub mod kv;
pub mod lease;
pub mod members;
pub mod v2;
pub mod watch;
