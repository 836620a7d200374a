//! The consensus wing: the one loop that drives raft-rs, the WAL and the apply path, and
//! what feeds it: the log store raft-rs reads, the peer transport, the data dir at start-up,
//! the member's periodic duties, the linearizable-read queue, the raft snapshot files.
//!
//! Rule: this wing may import `crate::state` (it applies entries) but never `crate::api`.
//! Only [`raft_loop::RaftLoop`] calls `RawNode`; everything else sends it a
//! [`events::RaftEvent`].

mod append_merge;
mod apply_path;
pub mod bootstrap;
pub mod compactor;
pub mod duties;
pub mod events;
pub mod log_store;
pub mod peer;
pub mod raft_loop;
pub mod read_index;
pub mod snapshot_files;
