//! The raft loop's apply path: committed entries into the state machine (one backend batch
//! per group), membership changes, snapshots from the leader, and the log compaction that
//! follows `--snapshot-count` applied entries. An `impl RaftLoop` of its own so that
//! `raft_loop.rs` reads as the raft-rs cycle.

use std::sync::atomic::Ordering;
use std::time::Instant;

use protobuf::Message as PbMessage;
use raft::eraftpb::{Entry, EntryType, Snapshot};
use raft::Storage;

use crate::consensus::events::ApplyResult;
use crate::consensus::log_store::encode_snapshot_meta;
use crate::consensus::raft_loop::{LoopError, RaftLoop, BACKEND_SYNC_INTERVAL};
use crate::state::apply::{Applied, Outcome};

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
        let mut outcomes: Vec<Outcome> = Vec::with_capacity(entries.len());
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
        for o in outcomes {
            if let Ok(Applied::HashCheck(h)) = &o.result {
                self.compare_hash(h.clone());
            }
            if !o.events.is_empty() {
                self.watch.notify(o.rev, &o.events);
            }
            if o.id != 0 {
                self.reply(o.id, o.result.map(|a| (a, o.rev)));
            }
        }
        let rev = self.applier.store.current_rev();
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
        let mut batch = self.applier.store.batch()?;
        batch.restore(&snap.data)?;
        batch.set_consistent_index(index, term)?;
        batch.commit(true)?;
        crate::metrics::get()
            .snap_db_save
            .observe(save_started.elapsed().as_secs_f64());
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

    /// Every `--snapshot-count` applied entries: make the backend durable, drop the log
    /// behind it (keeping some for slow followers) and the WAL segments that held it.
    pub(super) fn maybe_compact_log(&mut self) -> Result<(), LoopError> {
        let applied = self.node.raft.raft_log.applied;
        if applied < self.last_snapshot_index + self.snapshot_count || self.durable_index < applied
        {
            return Ok(());
        }
        let keep = self.snapshot_count.clamp(1, self.catchup_entries);
        let upto = applied.saturating_sub(keep);
        self.last_snapshot_index = applied;
        if upto <= self.node.store().first_index()? {
            return Ok(());
        }
        let term = self.node.store().term(upto)?;
        self.node.mut_store().mem.wl().compact(upto + 1)?;
        self.wal
            .append_snapshot(upto, &encode_snapshot_meta(term, &self.conf_state));
        let wal_started = Instant::now();
        self.wal.sync()?;
        crate::metrics::get().wal_synced(wal_started, 0, true);
        self.wal.release_to(upto)?;
        tracing::info!("compacted the raft log up to index {upto} (applied {applied})");
        Ok(())
    }
}
