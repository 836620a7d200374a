//! raft-rs's view of our log: entries and hard state in memory (raft-rs's `MemStorage`,
//! rebuilt from the WAL at start, trimmed behind the applied index by the loop), and
//! snapshots of the MVCC backend, built as files off the raft thread (`snapshot_files.rs`).

use std::sync::Arc;

use raft::eraftpb::{Entry, Snapshot};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

use oxcd_storage::Store;

use crate::consensus::snapshot_files::SnapshotFiles;

/// The WAL snapshot marker's codec: the data-dir layout's, shared with `snapshot restore`.
pub use oxcd_snapshot::layout::{decode_snapshot_meta, encode_snapshot_meta};

pub struct LogStore {
    pub mem: MemStorage,
    pub store: Arc<Store>,
    /// The last entry the loop dropped from `mem` (index, term), whose term raft still asks
    /// for (the entry before the first one it sends a follower); (0, 0) before any trim.
    pub trimmed: (u64, u64),
    /// The snapshot files this member builds and receives.
    pub snapshots: Arc<SnapshotFiles>,
}

impl Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.mem.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        match self.trimmed {
            (index, term) if index == idx && index > 0 => Ok(term),
            _ => self.mem.term(idx),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.mem.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.mem.last_index()
    }

    /// A snapshot is the whole backend as of an applied entry, as a file. The first call
    /// starts building it on a thread of its own and answers "temporarily unavailable"
    /// (raft-rs asks again at the follower's next heartbeat response); once built, the
    /// message carries only the file's description and the transport sends the file.
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        #[cfg(feature = "failpoints")]
        fail::fail_point!("raft_snapshot_send");
        // An older snapshot than where the log starts would leave the follower a gap.
        let min_index = request_index.max(self.mem.first_index()?.saturating_sub(1));
        let conf_state = self.mem.initial_state()?.conf_state;
        // The backend is busy when raft asks from inside an apply (its batch holds the
        // index); the backend and `conf_state` then disagree: ask again later.
        let ready =
            self.snapshots
                .ready_or_build(min_index, || self.store.try_read_view(), conf_state);
        let Some((file, conf_state)) = ready else {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        };
        let mut snap = Snapshot {
            data: file.encode().into(),
            ..Default::default()
        };
        let meta = snap.mut_metadata();
        meta.index = file.index;
        meta.term = file.term;
        meta.set_conf_state(conf_state);
        Ok(snap)
    }
}

/// Forwards raft-rs's slog records to `tracing`.
pub struct SlogToTracing;

impl slog::Drain for SlogToTracing {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record<'_>, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        let msg = record.msg().to_string();
        match record.level() {
            slog::Level::Critical | slog::Level::Error => tracing::error!(target: "raft", "{msg}"),
            slog::Level::Warning => tracing::warn!(target: "raft", "{msg}"),
            slog::Level::Info => tracing::debug!(target: "raft", "{msg}"),
            _ => tracing::trace!(target: "raft", "{msg}"),
        }
        Ok(())
    }
}

pub fn raft_logger() -> slog::Logger {
    slog::Logger::root(SlogToTracing, slog::o!())
}
