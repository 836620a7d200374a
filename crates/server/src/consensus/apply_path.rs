//! The raft loop's apply path: committed entries into the state machine (one backend batch
//! per group), membership changes, snapshots from the leader, and the log compaction that
//! follows `--snapshot-count` applied entries. An `impl RaftLoop` of its own so that
//! `raft_loop.rs` reads as the raft-rs cycle.

use std::io::BufReader;
use std::sync::atomic::Ordering;
use std::time::Instant;

use protobuf::Message as PbMessage;
use raft::eraftpb::{Entry, EntryType, Snapshot};
use raft::Storage;

use crate::consensus::events::ApplyResult;
use crate::consensus::log_store::encode_snapshot_meta;
use crate::consensus::raft_loop::{LoopError, RaftLoop, BACKEND_SYNC_INTERVAL};
use crate::consensus::snapshot_files::{SnapshotFile, SnapshotFileError};
use crate::state::apply::{Applied, Outcome};

/// Entry data the in-memory raft log may hold for a connected follower that is behind,
/// beyond the catch-up entries; past it that follower is sent a snapshot instead.
pub const LOG_MEMORY_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Bytes read from a received snapshot file at a time while restoring it.
const RESTORE_BUFFER_BYTES: usize = 1024 * 1024;

impl RaftLoop {
    /// Applies committed entries in one backend batch, then answers proposers and watchers.
    pub(super) fn apply_committed(&mut self, entries: Vec<Entry>) -> Result<(), LoopError> {
        let Some(last) = entries.last() else {
            return Ok(());
        };
        let (last_index, last_term) = (last.index, last.term);
        #[cfg(feature = "failpoints")]
        fail::fail_point!("raft_before_apply");
        let apply_started = Instant::now();
        let mut outcomes: Vec<Outcome> = std::mem::take(&mut self.outcomes);
        outcomes.reserve(entries.len());
        let mut conf_replies: Vec<(u64, ApplyResult)> = Vec::new();
        {
            let store = self.applier.store.clone();
            let mut batch = store.batch()?;
            for e in &entries {
                match e.get_entry_type() {
                    EntryType::EntryNormal if e.data.is_empty() => self.maybe_promote_leases(e),
                    EntryType::EntryNormal => {
                        let started = Instant::now();
                        outcomes.push(self.applier.apply(&mut batch, e.index, &e.data));
                        self.warn_slow_apply(started.elapsed(), e.index);
                    }
                    EntryType::EntryConfChange => {
                        if let Some((id, res)) = self.apply_conf_change(&mut batch, e)? {
                            conf_replies.push((id, res));
                        }
                    }
                    EntryType::EntryConfChangeV2 => {
                        tracing::error!(
                            "skipping a ConfChangeV2 entry: oxcd proposes only ConfChange"
                        );
                    }
                }
            }
            batch.set_consistent_index(last_index, last_term)?;
            let durable = self.last_durable.elapsed() >= BACKEND_SYNC_INTERVAL
                || last_index - self.last_snapshot_index >= self.snapshot_count;
            crate::metrics::timed(&crate::metrics::get().backend_commit, || {
                batch.commit(durable)
            })?;
            #[cfg(feature = "failpoints")]
            fail::fail_point!("raft_after_apply");
            if durable {
                self.last_durable = Instant::now();
                self.durable_index = last_index;
            }
        }
        self.status.applied.store(last_index, Ordering::Relaxed);
        crate::metrics::get().applied_batch(apply_started.elapsed(), entries.len());
        for o in &outcomes {
            if let Ok(Applied::HashCheck(h)) = &o.result {
                self.compare_hash(h.clone());
            }
            if !o.events.is_empty() {
                self.watch.notify(o.rev, &o.events);
            }
        }
        self.reply_all(&mut outcomes);
        self.outcomes = outcomes;
        let rev = self.applier.store.current_rev();
        // A revision may have kept no event (a delete nobody watches): the hub is still at it.
        self.watch.advance_to(rev);
        for (id, res) in conf_replies {
            self.reply(id, res.map(|(a, _)| (a, rev)));
        }
        if let Ok(v2) = self.applier.tables.v2.lock() {
            self.v2_index.send_replace(v2.index);
        }
        self.release_reads(last_index);
        Ok(())
    }

    /// etcd's warning for an entry whose apply took longer than `--warning-apply-duration`.
    fn warn_slow_apply(&self, took: std::time::Duration, index: u64) {
        if took > self.warning_apply {
            tracing::warn!(
                took = ?took,
                "expected-duration" = ?self.warning_apply,
                index,
                "apply request took too long"
            );
        }
    }

    /// Applies a membership change: the member table, raft's configuration, the transport.
    fn apply_conf_change(
        &mut self,
        batch: &mut oxcd_storage::WriteBatch<'_>,
        e: &Entry,
    ) -> Result<Option<(u64, ApplyResult)>, LoopError> {
        let cc = raft::eraftpb::ConfChange::parse_from_bytes(&e.data)?;
        let change: Option<crate::state::apply::MemberChange> =
            serde_json::from_slice(&cc.context).ok();
        let res = change.as_ref().map(|c| {
            self.applier
                .apply_member_change(batch, c, cc.get_change_type())
        });
        let cs = self.node.apply_conf_change(&cc)?;
        self.node.mut_store().mem.wl().set_conf_state(cs.clone());
        self.conf_state = cs;
        if let Ok(m) = self.applier.tables.members.read() {
            self.transport.set_peers(&m.list);
        }
        tracing::info!(
            "membership change applied: {:?} {:x}; voters {:x?}, learners {:x?}",
            cc.get_change_type(),
            cc.node_id,
            self.conf_state.voters,
            self.conf_state.learners
        );
        if cc.get_change_type() == raft::eraftpb::ConfChangeType::RemoveNode
            && cc.node_id == self.member_id
        {
            self.removed = true;
        }
        Ok(match (change, res) {
            (Some(c), Some(res)) if c.req != 0 => Some((c.req, res.map(|a| (a, 0)))),
            _ => None,
        })
    }

    /// Replaces local state with a snapshot from the leader.
    pub(super) fn apply_snapshot(&mut self, snap: Snapshot) -> Result<(), LoopError> {
        let meta = snap.get_metadata();
        let (index, term) = (meta.index, meta.term);
        tracing::info!("applying snapshot at index {index} (term {term}) from the leader");
        let save_started = Instant::now();
        let path = SnapshotFile::decode(&snap.data)
            .filter(|f| (f.index, f.term) == (index, term))
            .map(|f| self.node.store().snapshots.received_path(&f))
            .ok_or(LoopError::SnapshotData(index, term))?;
        let file = std::fs::File::open(&path).map_err(|source| SnapshotFileError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut batch = self.applier.store.batch()?;
        batch.restore_from(&mut BufReader::with_capacity(RESTORE_BUFFER_BYTES, file))?;
        batch.set_consistent_index(index, term)?;
        batch.commit(true)?;
        // The backend holds it now (durably): the file is not needed again.
        let _ = std::fs::remove_file(&path);
        crate::metrics::get()
            .snap_db_save
            .observe(save_started.elapsed().as_secs_f64());
        crate::metrics::get().recount_keys(&self.applier.store);
        // The backend holds the snapshot; the WAL does not know yet.
        #[cfg(feature = "failpoints")]
        fail::fail_point!("raft_snapshot_mid_apply");
        self.applier.tables.reload(&self.applier.store)?;
        self.conf_state = meta.get_conf_state().clone();
        self.node
            .mut_store()
            .mem
            .wl()
            .apply_snapshot(snap.clone())?;
        // A restore, not a compaction marker: the entries the WAL holds after `index` were
        // dropped by raft with the rest of its log, and must not come back on a restart.
        self.wal
            .append_restore(index, &encode_snapshot_meta(term, &self.conf_state));
        self.last_snapshot_index = index;
        self.durable_index = index;
        self.status.applied.store(index, Ordering::Relaxed);
        if let Ok(v2) = self.applier.tables.v2.lock() {
            self.v2_index.send_replace(v2.index);
        }
        // The snapshot's revisions reach watchers from the store, not as live events.
        self.watch.resync_all(self.applier.store.current_rev());
        Ok(())
    }

    /// Entries kept in memory behind the applied index for slow followers
    /// (`--snapshot-count`, at most etcd's 5000 catch-up entries).
    fn catchup_keep(&self) -> u64 {
        self.snapshot_count.clamp(1, self.catchup_entries)
    }

    /// Every `--snapshot-count` applied entries: make the backend durable, write a snapshot
    /// marker to the WAL and delete the WAL segments behind it.
    pub(super) fn maybe_compact_log(&mut self) -> Result<(), LoopError> {
        let applied = self.node.raft.raft_log.applied;
        if applied < self.last_snapshot_index + self.snapshot_count || self.durable_index < applied
        {
            return Ok(());
        }
        self.last_snapshot_index = applied;
        // The marker goes where the in-memory log starts (trimmed this far, unless a
        // follower still needs the entries).
        let upto = self.trim_target(applied.saturating_sub(self.catchup_keep()), applied)?;
        self.trim_memory_log_to(upto)?;
        let first = self.node.store().first_index()?;
        let upto = first.saturating_sub(1);
        if upto == 0 {
            return Ok(());
        }
        let term = self.node.store().term(upto)?;
        self.wal
            .append_snapshot(upto, &encode_snapshot_meta(term, &self.conf_state));
        let wal_started = Instant::now();
        if self.wal.sync()? {
            crate::metrics::get().wal_synced(wal_started, 0);
        }
        self.wal.release_to(upto)?;
        tracing::info!("compacted the raft log up to index {upto} (applied {applied})");
        Ok(())
    }

    /// Bounds the raft log held in memory (the WAL keeps it until [`Self::maybe_compact_log`]).
    /// etcd keeps every entry since its last snapshot, up to `--snapshot-count` + 5000; oxcd
    /// keeps `catchup_keep` entries behind the applied index, more only while a connected
    /// follower still needs them, and never more than [`LOG_MEMORY_BYTES_MAX`] of entry
    /// data for it (that follower then gets a snapshot). Looked at once every
    /// `catchup_keep` applied entries, so the trim costs nothing per write.
    pub(super) fn trim_memory_log(&mut self) -> Result<(), LoopError> {
        let applied = self.node.raft.raft_log.applied;
        let keep = self.catchup_keep();
        if applied < self.trim_checked + keep {
            return Ok(());
        }
        self.trim_checked = applied;
        let upto = self.trim_target(applied.saturating_sub(keep), applied)?;
        self.trim_memory_log_to(upto)
    }

    /// Where to trim the in-memory log to: `upto`, unless a follower still needs entries
    /// before it (a connected one that is behind, or one waiting for the snapshot being
    /// built or sent to it, which continues from the snapshot's index), and then never
    /// more than [`LOG_MEMORY_BYTES_MAX`] of entry data kept for it.
    fn trim_target(&self, upto: u64, applied: u64) -> Result<u64, LoopError> {
        let held = [self.slowest_follower(), self.snapshot_in_flight()]
            .into_iter()
            .flatten()
            .min();
        match held.filter(|h| *h < upto) {
            Some(h) => Ok(h.max(self.bytes_cap_index(applied)?)),
            None => Ok(upto),
        }
    }

    /// On the leader: the lowest index of a snapshot being built or sent to a follower.
    fn snapshot_in_flight(&self) -> Option<u64> {
        if self.node.raft.state != raft::StateRole::Leader {
            return None;
        }
        let sending = self
            .node
            .raft
            .prs()
            .iter()
            .filter(|(_, p)| p.state == raft::ProgressState::Snapshot)
            .map(|(_, p)| p.pending_snapshot);
        sending
            .chain(self.node.store().snapshots.building_index())
            .min()
    }

    /// Drops the in-memory entries up to and including `upto` (at most the applied index).
    fn trim_memory_log_to(&mut self, upto: u64) -> Result<(), LoopError> {
        let upto = upto.min(self.node.raft.raft_log.applied);
        if upto < self.node.store().first_index()? {
            return Ok(());
        }
        let term = self.node.store().term(upto)?;
        self.node.mut_store().mem.wl().compact(upto + 1)?;
        self.node.mut_store().trimmed = (upto, term);
        Ok(())
    }

    /// On the leader: the lowest log index a connected follower that is not waiting for a
    /// snapshot has (its `matched`).
    fn slowest_follower(&self) -> Option<u64> {
        if self.node.raft.state != raft::StateRole::Leader {
            return None;
        }
        self.node
            .raft
            .prs()
            .iter()
            .filter(|(id, p)| {
                **id != self.member_id
                    && p.recent_active
                    && p.state != raft::ProgressState::Snapshot
            })
            .map(|(_, p)| p.matched)
            .min()
    }

    /// The index such that the entries after it, up to `applied`, hold at most
    /// [`LOG_MEMORY_BYTES_MAX`] bytes of data.
    fn bytes_cap_index(&self, applied: u64) -> Result<u64, LoopError> {
        let first = self.node.store().first_index()?;
        if applied < first {
            return Ok(applied);
        }
        let entries = self.node.store().entries(
            first,
            applied + 1,
            None,
            raft::GetEntriesContext::empty(false),
        )?;
        let mut bytes = 0u64;
        for e in entries.iter().rev() {
            bytes += (e.data.len() + e.context.len()) as u64;
            if bytes > LOG_MEMORY_BYTES_MAX {
                return Ok(e.index);
            }
        }
        Ok(first.saturating_sub(1))
    }
}
