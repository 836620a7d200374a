//! The raft loop: the only code that drives raft and does raft I/O. One OS thread owns the
//! `RawNode`, the WAL and the apply path; everything else talks to it through a bounded
//! channel of [`RaftEvent`]s.
//!
//! Each turn: take every waiting event (up to [`EVENTS_PER_TURN_MAX`]), tick if due (and
//! carry out the [`Duties`] that are due), issue one ReadIndex for all new linearizable
//! reads, then handle `Ready` in raft-rs's order: send messages (the leader sends appends
//! before its own fsync), apply a received snapshot, apply committed entries (one backend
//! batch, `apply_path.rs`), append new entries and hard state to the WAL with one fsync for
//! the whole group, send messages that had to wait for that fsync, advance. This is the
//! group commit: every proposal that arrived during a turn shares one WAL write and one
//! fsync.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use protobuf::Message as PbMessage;
use raft::eraftpb::{ConfState, Entry, EntryType, HardState};
use raft::{RawNode, StateRole};

use crate::clock::now_ms;
use crate::consensus::append_merge::merge_appends;
use crate::consensus::duties::{Duties, Duty, DutySettings, View};
use crate::consensus::events::EVENT_QUEUE_MAX;
use crate::consensus::events::{ApplyResult, RaftEvent, RaftStatus, Transport, Waiters};
use crate::consensus::log_store::LogStore;
use crate::consensus::read_index::ReadIndexQueue;
use crate::error::ServerError;
use crate::request::{LogRequest, MemberAttrs, Op};
use crate::state::apply::Applier;
use crate::state::lease::Promotion;
use crate::state::watch::WatchHub;

/// etcd's `warnSyncDuration`: a WAL sync slower than this is logged.
pub const FDATASYNC_WARN: Duration = Duration::from_secs(1);

/// etcd's "slow fdatasync" warning.
fn warn_slow_fdatasync(took: Duration) {
    if took > FDATASYNC_WARN {
        tracing::warn!(took = ?took, "expected-duration" = ?FDATASYNC_WARN, "slow fdatasync");
    }
}

/// Events handled per loop turn before `Ready` is processed (bounds latency of a turn).
pub const EVENTS_PER_TURN_MAX: usize = 4096;
/// etcd's readyPercent: a learner may be promoted once its log matches this share of the
/// leader's.
pub const LEARNER_READY_SHARE: f64 = 0.9;
/// Membership changes a leader holds while an earlier one is being applied.
pub const HELD_CONF_CHANGES_MAX: usize = 64;
/// The backend is made durable at least this often (bounds replay after a crash).
pub const BACKEND_SYNC_INTERVAL: Duration = Duration::from_millis(500);

/// A failure that stops the loop: the member cannot go on without breaking its promises.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("WAL: {0}")]
    Wal(#[from] oxcd_storage::WalError),
    #[error("backend: {0}")]
    Backend(#[from] oxcd_storage::MvccError),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("encoding a raft record: {0}")]
    Encode(#[from] protobuf::ProtobufError),
    #[error("after installing a snapshot: {0}")]
    Tables(#[from] crate::state::TableError),
    #[error("{0}")]
    SnapshotFile(#[from] crate::consensus::snapshot_files::SnapshotFileError),
    #[error("the snapshot at index {0} (term {1}) does not name a received snapshot file")]
    SnapshotData(u64, u64),
}

/// How the loop ended without an error.
#[derive(Debug, PartialEq, Eq)]
pub enum LoopExit {
    /// Asked to stop.
    Shutdown,
    /// A membership change removed this member.
    Removed,
}

/// What the loop is made of; see [`RaftLoop::new`].
pub struct LoopParts {
    pub node: RawNode<LogStore>,
    pub wal: oxcd_storage::Wal,
    pub applier: Applier,
    /// Events in; `self_tx` is a sender of the same channel, for work done off the loop
    /// that ends in a proposal (the corruption check's hash).
    pub rx: Receiver<RaftEvent>,
    pub self_tx: SyncSender<RaftEvent>,
    pub transport: Arc<dyn Transport>,
    pub waiters: Waiters,
    pub status: Arc<RaftStatus>,
    pub watch: Arc<WatchHub>,
    /// The v2 store's index after each apply (v2 watches wait on it).
    pub v2_index: tokio::sync::watch::Sender<u64>,
    pub member_id: u64,
    pub conf_state: ConfState,
    pub last_snapshot_index: u64,
    pub tick: Duration,
    pub snapshot_count: u64,
    /// Entries kept behind a log compaction for slow followers (`--snapshot-catchup-entries`).
    pub catchup_entries: u64,
    /// Applying one entry slower than this is logged (`--warning-apply-duration`).
    pub warning_apply: Duration,
    pub election_ms: u64,
    pub duties: DutySettings,
    /// `--initial-election-tick-advance`: whether a remote member's stream is up, or None
    /// when the flag is off (see [`TickAdvance`]).
    pub peer_up: Option<Arc<dyn Fn(u64) -> bool + Send + Sync>>,
}

/// How long a starting member of several waits for its peers' streams before it gives up
/// advancing its election ticks (etcd's `rafthttp.ConnReadTimeout`).
pub const TICK_ADVANCE_WAIT: Duration = Duration::from_secs(5);

/// etcd's `adjustTicks` with `--initial-election-tick-advance` for a member of several:
/// once the streams to more than one remote member are up (within [`TICK_ADVANCE_WAIT`]),
/// the election ticks are fast-forwarded to two short of the election timeout, so that the
/// member campaigns soon when there is no leader and still hears from a leader there is
/// before it would campaign. (A one-member cluster campaigns at once, flag or not.)
struct TickAdvance {
    peer_up: Arc<dyn Fn(u64) -> bool + Send + Sync>,
    until: Instant,
}

pub struct RaftLoop {
    pub(super) node: RawNode<LogStore>,
    pub(super) wal: oxcd_storage::Wal,
    pub(super) applier: Applier,
    rx: Receiver<RaftEvent>,
    self_tx: SyncSender<RaftEvent>,
    pub(super) transport: Arc<dyn Transport>,
    waiters: Waiters,
    pub(super) status: Arc<RaftStatus>,
    pub(super) watch: Arc<WatchHub>,
    pub(super) v2_index: tokio::sync::watch::Sender<u64>,
    pub(super) member_id: u64,
    pub(super) conf_state: ConfState,
    pub(super) last_snapshot_index: u64,
    tick: Duration,
    pub(super) snapshot_count: u64,
    pub(super) catchup_entries: u64,
    pub(super) warning_apply: Duration,
    election_ms: i64,
    reads: ReadIndexQueue,
    duties: Duties,
    pub(super) last_durable: Instant,
    pub(super) durable_index: u64,
    /// The applied index when the in-memory log was last looked at for trimming.
    pub(super) trim_checked: u64,
    /// The leader's member ID, 0 when none is known.
    leader_id: u64,
    /// True while a corruption-check hash is being computed (one at a time).
    hashing: Arc<AtomicBool>,
    /// Proposals that arrived while no leader was known.
    held: Vec<(u64, Vec<u8>)>,
    /// The applied batch's outcomes, kept between batches: a fresh vector of a large batch's
    /// outcomes (a few hundred bytes each) faulted in new pages at every batch.
    pub(super) outcomes: Vec<crate::state::apply::Outcome>,
    /// The waiting proposers of the applied batch with their results, kept between batches
    /// for the same reason.
    answers: Vec<(tokio::sync::oneshot::Sender<ApplyResult>, ApplyResult)>,
    /// Membership changes that reached this leader while an earlier one was not applied yet
    /// (raft-rs would turn them into empty entries and the proposer would only time out);
    /// proposed one at a time as the earlier ones apply.
    held_conf: std::collections::VecDeque<(u64, raft::eraftpb::ConfChange)>,
    /// Set when a membership change removed this member.
    pub(super) removed: bool,
    /// Flipped once this member's attributes are in the member table (etcd's "published"):
    /// client listeners open only then.
    published: tokio::sync::watch::Sender<bool>,
    /// Pending until the election ticks are advanced or the wait ends.
    tick_advance: Option<TickAdvance>,
}

impl RaftLoop {
    pub fn new(p: LoopParts) -> RaftLoop {
        let durable_index = p.applier.store.consistent_index().0;
        p.watch.advance_to(p.applier.store.current_rev());
        crate::metrics::get().recount_keys(&p.applier.store);
        // Status requests see the backend's index until the first entry is applied.
        p.status.applied.store(durable_index, Ordering::Relaxed);
        RaftLoop {
            node: p.node,
            wal: p.wal,
            applier: p.applier,
            rx: p.rx,
            self_tx: p.self_tx,
            transport: p.transport,
            waiters: p.waiters,
            status: p.status,
            watch: p.watch,
            v2_index: p.v2_index,
            member_id: p.member_id,
            conf_state: p.conf_state,
            last_snapshot_index: p.last_snapshot_index,
            tick: p.tick,
            snapshot_count: p.snapshot_count,
            catchup_entries: p.catchup_entries,
            warning_apply: p.warning_apply,
            election_ms: p.election_ms as i64,
            reads: ReadIndexQueue::new(p.member_id),
            duties: Duties::new(p.duties, Instant::now()),
            last_durable: Instant::now(),
            durable_index,
            trim_checked: 0,
            leader_id: 0,
            hashing: Arc::new(AtomicBool::new(false)),
            held: Vec::new(),
            outcomes: Vec::new(),
            answers: Vec::new(),
            held_conf: std::collections::VecDeque::new(),
            removed: false,
            published: tokio::sync::watch::channel(false).0,
            tick_advance: p.peer_up.map(|peer_up| TickAdvance {
                peer_up,
                until: Instant::now() + TICK_ADVANCE_WAIT,
            }),
        }
    }

    /// Fast-forwards the election ticks once more than one remote member is connected (see
    /// [`TickAdvance`]); called once per tick until done or given up.
    fn maybe_advance_ticks(&mut self) {
        let Some(adv) = &self.tick_advance else {
            return;
        };
        let cs = &self.conf_state;
        let remotes: Vec<u64> = cs.voters.iter().chain(&cs.learners).copied().collect();
        if remotes.len() <= 1 {
            // One member: it campaigned at start.
            self.tick_advance = None;
            return;
        }
        let me = self.member_id;
        let up = remotes
            .iter()
            .filter(|&&id| id != me && (adv.peer_up)(id))
            .count();
        if up > 1 {
            let election_ticks = self.node.raft.election_timeout();
            let ticks = election_ticks.saturating_sub(2);
            tracing::info!(
                "local-member-id" = %format!("{me:x}"),
                "forward-ticks" = ticks,
                "election-ticks" = election_ticks,
                "active-remote-members" = up,
                "initialized peer connections; fast-forwarding election ticks"
            );
            for _ in 0..ticks {
                self.node.tick();
            }
            self.tick_advance = None;
        } else if Instant::now() >= adv.until {
            self.tick_advance = None;
        }
    }

    /// True once this member's attributes are in the member table.
    pub fn published(&self) -> tokio::sync::watch::Receiver<bool> {
        self.published.subscribe()
    }

    /// Runs until shutdown or removal. An I/O failure of the WAL or backend is returned:
    /// the member cannot go on without breaking its promises.
    pub fn run(mut self) -> Result<LoopExit, LoopError> {
        let mut last_tick = Instant::now();
        loop {
            let wait = self.tick.saturating_sub(last_tick.elapsed());
            match self.rx.recv_timeout(wait) {
                Ok(RaftEvent::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(ev) => self.handle(ev),
                Err(RecvTimeoutError::Timeout) => {}
            }
            if !self.drain_events() {
                break;
            }
            if last_tick.elapsed() >= self.tick {
                self.warn_late_heartbeat(last_tick.elapsed());
                last_tick = Instant::now();
                self.node.tick();
                self.maybe_advance_ticks();
                self.run_duties();
                // A compaction's rows leave the backend in bounded steps (also when idle).
                if let Err(e) = self.applier.store.compact_step() {
                    tracing::warn!("removing compacted revisions: {e}");
                }
            }
            if let Some(ctx) = self.reads.next_request() {
                self.node.read_index(ctx);
            }
            self.on_ready()?;
            if self.removed {
                tracing::error!(
                    "this member ({:x}) has been permanently removed from the cluster; exiting",
                    self.member_id
                );
                self.flush_backend();
                return Ok(LoopExit::Removed);
            }
        }
        self.flush_backend();
        Ok(LoopExit::Shutdown)
    }

    /// Handles the events waiting, up to [`EVENTS_PER_TURN_MAX`]; false on shutdown.
    fn drain_events(&mut self) -> bool {
        for _ in 0..EVENTS_PER_TURN_MAX {
            match self.rx.try_recv() {
                Ok(RaftEvent::Shutdown) => return false,
                Ok(ev) => self.handle(ev),
                Err(_) => break,
            }
        }
        true
    }

    /// Makes the backend durable so the next start replays little.
    fn flush_backend(&mut self) {
        if let Ok(b) = self.applier.store.batch() {
            let _ = b.commit(true);
        }
    }

    fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    fn handle(&mut self, ev: RaftEvent) {
        match ev {
            RaftEvent::Propose { id, data } => {
                if self.leader_id == 0 {
                    // No leader to forward to: hold the proposal until one is elected
                    // (the proposer's own timeout bounds the wait), as etcd does.
                    if self.held.len() >= EVENT_QUEUE_MAX {
                        self.reply(id, Err(ServerError::NoLeader));
                    } else {
                        self.held.push((id, data));
                    }
                } else if self.node.propose(vec![], data).is_err() {
                    self.reply(id, Err(ServerError::NoLeader));
                }
            }
            RaftEvent::ReadIndex(tx) => self.reads.push(tx),
            RaftEvent::Step(mut m) => {
                if m.get_msg_type() == raft::eraftpb::MessageType::MsgPropose && self.is_leader() {
                    self.refuse_unready_promotions(&mut m.entries);
                }
                if let Err(e) = self.node.step(*m) {
                    tracing::debug!("dropped a raft message: {e}");
                }
            }
            RaftEvent::Unreachable(id) => self.node.report_unreachable(id),
            RaftEvent::TransferLeader(id) => self.node.transfer_leader(id),
            RaftEvent::ProposeConfChange { id, cc } => self.propose_conf_change(id, cc),
            RaftEvent::SnapshotFailed(id) => {
                self.node.report_snapshot(id, raft::SnapshotStatus::Failure)
            }
            RaftEvent::Shutdown => {}
        }
    }

    fn propose_conf_change(&mut self, id: u64, cc: raft::eraftpb::ConfChange) {
        let leader = self.is_leader();
        if leader && self.learner_not_ready(&cc) {
            self.reply(id, Err(ServerError::LearnerNotReady));
        } else if leader && self.conf_change_pending() {
            if self.held_conf.len() >= HELD_CONF_CHANGES_MAX {
                self.reply(id, Err(ServerError::TooManyRequests));
            } else {
                self.held_conf.push_back((id, cc));
            }
        } else if self.node.propose_conf_change(vec![], cc).is_err() {
            self.reply(id, Err(ServerError::NoLeader));
        }
    }

    /// Proposes a request of this member's own, which nobody waits for. A proposal that
    /// fails (no leader) is dropped: each duty proposes again when it is still due.
    fn propose_internal(&mut self, op: Op) {
        let _ = self.node.propose(vec![], LogRequest::internal(op));
    }

    /// True for a promotion (AddNode of a current learner) while the learner's log is behind
    /// the leader's (etcd's isLearnerReady). Meaningful on the leader only.
    fn learner_not_ready(&self, cc: &raft::eraftpb::ConfChange) -> bool {
        if cc.get_change_type() != raft::eraftpb::ConfChangeType::AddNode
            || !self.conf_state.learners.contains(&cc.node_id)
        {
            return false;
        }
        let prs = self.node.raft.prs();
        let Some(learner) = prs.get(cc.node_id) else {
            return false;
        };
        let leader = prs.get(self.member_id).map(|p| p.matched).unwrap_or(0);
        (learner.matched as f64) < (leader as f64) * LEARNER_READY_SHARE
    }

    /// A follower forwarded proposals: a promotion of a learner that is behind becomes an
    /// [`Op::Refused`] entry, which fails the proposer's request when applied.
    fn refuse_unready_promotions(&self, entries: &mut [Entry]) {
        for e in entries.iter_mut() {
            if e.get_entry_type() != EntryType::EntryConfChange {
                continue;
            }
            let Ok(cc) = raft::eraftpb::ConfChange::parse_from_bytes(&e.data) else {
                continue;
            };
            if !self.learner_not_ready(&cc) {
                continue;
            }
            let req = serde_json::from_slice::<crate::state::apply::MemberChange>(&cc.context)
                .map(|c| c.req)
                .unwrap_or(0);
            let refused = LogRequest {
                id: req,
                op: Some(Op::Refused(crate::request::Refused {
                    reason: crate::request::REFUSED_LEARNER_NOT_READY,
                })),
            };
            e.set_entry_type(EntryType::EntryNormal);
            e.data = prost::Message::encode_to_vec(&refused).into();
        }
    }

    pub(super) fn reply(&self, id: u64, res: ApplyResult) {
        let tx = self
            .waiters
            .lock()
            .expect("waiters lock poisoned")
            .remove(&id);
        if let Some(tx) = tx {
            let _ = tx.send(res);
        }
    }

    /// [`Self::reply`] for a batch's outcomes, taking the waiters' lock once. Only the
    /// proposers waiting on this member are answered: the results of other members'
    /// requests (all of them, on a follower) are dropped where they lie. Leaves `outcomes`
    /// empty.
    pub(super) fn reply_all(&mut self, outcomes: &mut Vec<crate::state::apply::Outcome>) {
        let mut answers = std::mem::take(&mut self.answers);
        {
            let mut waiters = self.waiters.lock().expect("waiters lock poisoned");
            if !waiters.is_empty() {
                for o in outcomes.drain(..) {
                    if o.id == 0 {
                        continue;
                    }
                    if let Some(tx) = waiters.remove(&o.id) {
                        answers.push((tx, o.result.map(|a| (a, o.rev))));
                    }
                }
            }
        }
        outcomes.clear();
        for (tx, res) in answers.drain(..) {
            let _ = tx.send(res);
        }
        self.answers = answers;
    }

    /// Carries out what [`Duties::due`] says is due now.
    fn run_duties(&mut self) {
        let view = LoopView {
            is_leader: self.is_leader(),
            has_leader: self.leader_id != 0,
            member_id: self.member_id,
            applier: &self.applier,
        };
        for duty in self.duties.due(Instant::now(), now_ms(), &view) {
            match duty {
                Duty::Propose(op) => self.propose_internal(op),
                Duty::CorruptCheck => self.start_corrupt_check(),
                Duty::Published => {
                    self.published.send_replace(true);
                }
            }
        }
    }

    /// Runs `work` on a thread of its own unless a hash is already being computed; what it
    /// returns is proposed.
    fn hash_off_loop(
        &self,
        work: impl FnOnce(&oxcd_storage::Store) -> Option<Op> + Send + 'static,
    ) {
        let tx = self.self_tx.clone();
        if self.hashing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (store, hashing) = (self.applier.store.clone(), self.hashing.clone());
        let spawned = std::thread::Builder::new()
            .name("corrupt-check".into())
            .spawn(move || {
                if let Some(op) = work(&store) {
                    let data = LogRequest::internal(op);
                    let _ = tx.try_send(RaftEvent::Propose { id: 0, data });
                }
                hashing.store(false, Ordering::Release);
            });
        if spawned.is_err() {
            self.hashing.store(false, Ordering::Release);
        }
    }

    /// `--experimental-corrupt-check-time`: the leader hashes its keys at the current
    /// revision and proposes the result; every member compares (see [`Self::compare_hash`]).
    fn start_corrupt_check(&mut self) {
        let leader = self.member_id;
        self.hash_off_loop(move |store| {
            let revision = store.current_rev();
            let (hash, compact_revision) = crate::state::kv::hash_kv(store, revision).ok()?;
            Some(Op::HashCheck(crate::request::HashCheck {
                leader,
                revision,
                compact_revision,
                hash,
            }))
        });
    }

    /// A member whose HashKV at the leader's revision differs from the leader's raises the
    /// CORRUPT alarm for itself (through the log, so every member refuses writes).
    pub(super) fn compare_hash(&self, h: crate::request::HashCheck) {
        if h.leader == self.member_id {
            return;
        }
        let me = self.member_id;
        self.hash_off_loop(move |store| {
            let (mine, compacted) = crate::state::kv::hash_kv(store, h.revision).ok()?;
            if compacted != h.compact_revision || mine == h.hash {
                return None;
            }
            tracing::error!(
                "found data inconsistency with the leader {:x} at revision {}: local hash {mine}, leader's {} (compacted at {compacted}); raising CORRUPT",
                h.leader,
                h.revision,
                h.hash
            );
            Some(Op::Alarm(crate::request::AlarmOp {
                activate: true,
                member_id: me,
                alarm: crate::state::alarm::CORRUPT,
            }))
        });
    }

    fn on_ready(&mut self) -> Result<(), LoopError> {
        if !self.node.has_ready() {
            return Ok(());
        }
        let mut rd = self.node.ready();
        if let Some(ss) = rd.ss() {
            self.on_soft_state(ss.leader_id, ss.raft_state);
        }
        if !rd.messages().is_empty() {
            self.send(rd.take_messages());
        }
        if !rd.snapshot().is_empty() {
            self.apply_snapshot(rd.snapshot().clone())?;
        }
        for rs in rd.take_read_states() {
            self.reads.answered(&rs.request_ctx, rs.index);
        }
        self.apply_committed(rd.take_committed_entries())?;
        #[cfg(feature = "failpoints")]
        if !rd.entries().is_empty() {
            fail::fail_point!("raft_before_save");
        }
        if !rd.entries().is_empty() {
            for e in rd.entries() {
                self.wal.append_entry(e.index, &e.write_to_bytes()?);
            }
            self.node.mut_store().mem.wl().append(rd.entries())?;
        }
        if let Some(hs) = rd.hs() {
            self.persist_hard_state(hs.clone())?;
        }
        // Chaos builds: an fdatasync that fails with EIO (nothing of the batch is durable).
        #[cfg(feature = "failpoints")]
        fail::fail_point!("raft_wal_sync_eio", |_| Err(LoopError::Wal(
            oxcd_storage::WalError::Io {
                path: "wal (failpoint raft_wal_sync_eio)".into(),
                source: std::io::Error::from_raw_os_error(5)
            }
        )));
        let sync_started = Instant::now();
        if self.wal.sync()? {
            warn_slow_fdatasync(sync_started.elapsed());
            crate::metrics::get().wal_synced(sync_started, rd.entries().len());
        }
        #[cfg(feature = "failpoints")]
        if !rd.entries().is_empty() {
            fail::fail_point!("raft_after_save");
        }
        if !rd.persisted_messages().is_empty() {
            self.send(rd.take_persisted_messages());
        }
        let mut light = self.node.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.node
                .mut_store()
                .mem
                .wl()
                .mut_hard_state()
                .set_commit(commit);
        }
        self.send(light.take_messages());
        self.apply_committed(light.take_committed_entries())?;
        self.node.advance_apply();
        self.reads.release(self.node.raft.raft_log.applied);
        self.propose_held();
        let last = self.node.raft.raft_log.last_index();
        self.wal.maybe_rotate(last + 1)?;
        self.publish_status();
        self.maybe_compact_log()?;
        self.trim_memory_log()?;
        Ok(())
    }

    /// Hands messages to the transport, counting the append requests (v2 stats).
    /// A turn's appends to each follower are joined first ([`merge_appends`]).
    fn send(&self, msgs: Vec<raft::eraftpb::Message>) {
        if msgs.is_empty() {
            return;
        }
        let msgs = merge_appends(msgs, crate::consensus::peer::APPEND_BYTES_MAX);
        for m in &msgs {
            if m.get_msg_type() == raft::eraftpb::MessageType::MsgAppend {
                crate::peer_stats::get().append_sent(m.to, m.compute_size() as usize);
            }
        }
        self.transport.send(msgs);
    }

    /// Proposes what was held while there was no leader. Only after `advance`: a proposal
    /// between `ready()` and `advance()` on a new leader appends entries that the Ready
    /// being advanced does not hold, and raft-rs panics (found by the chaos suite,
    /// kill-majority).
    fn propose_held(&mut self) {
        if self.leader_id == 0 {
            return;
        }
        if !self.held_conf.is_empty() && (!self.is_leader() || !self.conf_change_pending()) {
            if let Some((id, cc)) = self.held_conf.pop_front() {
                if self.node.propose_conf_change(vec![], cc).is_err() {
                    self.reply(id, Err(ServerError::NoLeader));
                }
            }
        }
        for (id, data) in std::mem::take(&mut self.held) {
            if self.node.propose(vec![], data).is_err() {
                self.reply(id, Err(ServerError::NoLeader));
            }
        }
    }

    /// True while a membership change this leader proposed (or inherited) is not applied.
    fn conf_change_pending(&self) -> bool {
        self.node.raft.pending_conf_index > self.node.raft.raft_log.applied
    }

    /// etcd's warning when a leader's heartbeats go out late (a loop turn took more than two
    /// heartbeat intervals: a slow disk, most likely).
    fn warn_late_heartbeat(&self, since_last: Duration) {
        let expected = 2 * self.tick;
        if self.is_leader() && since_last > expected {
            tracing::warn!(
                "heartbeat-interval" = ?self.tick,
                "expected-duration" = ?expected,
                "exceeded-duration" = ?(since_last - expected),
                "leader failed to send out heartbeat on time; took too long, leader is overloaded likely from slow disk"
            );
        }
    }

    /// Buffers the hard state for this turn's sync. Only a new term or vote must be durable
    /// before the turn's messages go out (etcd's `raft.MustSync`); a state that only moved
    /// the commit index rides along with the next sync that must happen, so a leader does not
    /// pay an fdatasync for each commit it learns.
    fn persist_hard_state(&mut self, hs: HardState) -> Result<(), LoopError> {
        let commit_only = {
            let store = self.node.store().mem.rl();
            let prev = store.hard_state();
            prev.term == hs.term && prev.vote == hs.vote
        };
        let bytes = hs.write_to_bytes()?;
        if commit_only {
            self.wal.append_commit_state(&bytes);
        } else {
            self.wal.append_state(&bytes);
        }
        self.node.mut_store().mem.wl().set_hardstate(hs);
        Ok(())
    }

    fn on_soft_state(&mut self, leader_id: u64, role: StateRole) {
        if leader_id == self.leader_id {
            return;
        }
        // etcd's raft messages, word for word, so that log alerts on them match. etcd counts a
        // leader change whenever a leader other than the last one known appears.
        let (me, term) = (self.member_id, self.node.raft.term);
        let (old, new) = (format!("{:x}", self.leader_id), format!("{leader_id:x}"));
        if leader_id == 0 {
            tracing::warn!(
                "local-member-id" = %format!("{me:x}"), "lost-leader-id" = %old, term,
                "raft.node: {me:x} lost leader {old} at term {term}"
            );
        } else if self.leader_id == 0 {
            crate::metrics::get().leader_changes.inc();
            tracing::info!(
                "local-member-id" = %format!("{me:x}"), "leader-id" = %new, term, role = ?role,
                "raft.node: {me:x} elected leader {new} at term {term}"
            );
        } else {
            tracing::info!(
                "local-member-id" = %format!("{me:x}"), "old-leader-id" = %old, "leader-id" = %new, term,
                "raft.node: {me:x} changed leader from {old} to {new} at term {term}"
            );
        }
        if leader_id != 0 {
            // etcd counts every new leader seen, after a loss as well as a direct change.
            crate::metrics::get().leader_changes.inc();
        }
        // Reads waiting on the old leader's ReadIndex will not be answered.
        self.reads.fail_asked();
        self.leader_id = leader_id;
        self.status
            .leader_changed_ms
            .store(now_ms(), Ordering::Relaxed);
        if leader_id != self.member_id {
            self.duties.demote_leases();
            self.status.lease_promoted_ms.store(0, Ordering::Relaxed);
        }
        if leader_id != 0 {
            // Publish attributes on the next tick rather than after the usual pause.
            self.duties.run_soon();
        }
    }

    /// etcd promotes its lessor when the leader applies the empty entry of its own term
    /// (everything from earlier terms is applied by then): from now on this member expires
    /// leases, and every lease gets its full TTL plus an election timeout from now.
    pub(super) fn maybe_promote_leases(&mut self, e: &Entry) {
        if !self.is_leader() || e.term != self.node.raft.term {
            return;
        }
        let p = Promotion {
            at_ms: now_ms(),
            extend_ms: self.election_ms,
        };
        tracing::info!(
            "leader at term {}: leases extended by their TTL plus {} ms",
            e.term,
            p.extend_ms
        );
        self.duties.promote_leases(p);
        self.status
            .lease_promoted_ms
            .store(p.at_ms, Ordering::Relaxed);
    }

    fn publish_status(&self) {
        let s = &self.status;
        s.term.store(self.node.raft.term, Ordering::Relaxed);
        s.leader.store(self.leader_id, Ordering::Relaxed);
        s.commit
            .store(self.node.raft.raft_log.committed, Ordering::Relaxed);
        s.last_index
            .store(self.node.raft.raft_log.last_index(), Ordering::Relaxed);
    }

    /// Releases the linearizable reads whose index is applied.
    pub(super) fn release_reads(&mut self, applied: u64) {
        self.reads.release(applied);
    }
}

/// The member as the duties see it, read from the loop's state.
struct LoopView<'a> {
    is_leader: bool,
    has_leader: bool,
    member_id: u64,
    applier: &'a Applier,
}

impl View for LoopView<'_> {
    fn is_leader(&self) -> bool {
        self.is_leader
    }

    fn has_leader(&self) -> bool {
        self.has_leader
    }

    fn revisions(&self) -> (i64, i64) {
        let store = &self.applier.store;
        (store.current_rev(), store.compact_rev())
    }

    fn expired_leases(&self, now_ms: i64, promotion: Promotion, limit: usize) -> Vec<i64> {
        // Importing (oxctl migrate): leases live on the source until the cut-over.
        if self.applier.tables.import.read().is_ok_and(|i| i.is_some()) {
            return Vec::new();
        }
        self.applier
            .tables
            .leases
            .lock()
            .map(|t| t.expired(now_ms, promotion, limit))
            .unwrap_or_default()
    }

    fn lease_exists(&self, id: i64) -> bool {
        self.applier
            .tables
            .leases
            .lock()
            .map(|t| t.contains(id))
            .unwrap_or(false)
    }

    fn v2_expired(&self, now_ms: i64) -> bool {
        self.applier
            .tables
            .v2
            .lock()
            .map(|v2| v2.has_expired(now_ms))
            .unwrap_or(false)
    }

    fn attrs_published(&self, attrs: &MemberAttrs) -> bool {
        self.applier
            .tables
            .members
            .read()
            .map(|m| {
                m.get(self.member_id)
                    .map(|me| me.client_urls == attrs.client_urls && me.name == attrs.name)
                    .unwrap_or(true)
            })
            .unwrap_or(true)
    }
}
