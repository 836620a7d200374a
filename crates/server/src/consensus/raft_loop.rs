//! The raft loop: the only code that drives raft and does raft I/O. One OS thread owns the
//! `RawNode`, the WAL and the apply path; everything else talks to it through a bounded
//! channel of [`RaftEvent`]s.
//!
//! Each turn: take every waiting event (up to [`EVENTS_PER_TURN_MAX`]), tick if due, issue
//! one ReadIndex for all new linearizable reads, then handle `Ready` in raft-rs's order:
//! send messages (the leader sends appends before its own fsync), apply a received snapshot,
//! apply committed entries (one backend batch), append new entries and hard state to the WAL
//! with one fsync for the whole group, send messages that had to wait for that fsync,
//! advance. This is the group commit: every proposal that arrived during a turn shares one
//! WAL write and one fsync.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use protobuf::Message as PbMessage;
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Message, Snapshot};
use raft::{RawNode, StateRole, Storage};
use tokio::sync::oneshot;

use crate::clock::now_ms;
use crate::consensus::log_store::{encode_snapshot_meta, LogStore};
use crate::error::ServerError;
use crate::request::{LogRequest, MemberAttrs, Op, V2Expire};
use crate::state::apply::{Applied, Applier, Outcome};
use crate::state::lease::REVOKES_PER_SEC_MAX;
use crate::state::watch::WatchHub;

/// Events handled per loop turn before `Ready` is processed (bounds latency of a turn).
pub const EVENTS_PER_TURN_MAX: usize = 4096;
/// Capacity of the channel into the loop; a full channel answers "too many requests".
pub const EVENT_QUEUE_MAX: usize = 16384;
/// Entries kept behind a raft snapshot for slow followers (etcd: 5000), capped by
/// `--snapshot-count`.
pub const CATCHUP_ENTRIES_MAX: u64 = 5000;
/// etcd's readyPercent: a learner may be promoted once its log matches this share of the
/// leader's.
pub const LEARNER_READY_SHARE: f64 = 0.9;
/// Membership changes a leader holds while an earlier one is being applied.
pub const HELD_CONF_CHANGES_MAX: usize = 64;
/// The backend is made durable at least this often (bounds replay after a crash).
pub const BACKEND_SYNC_INTERVAL: Duration = Duration::from_millis(500);

/// How often the leader looks for expired leases and v2 TTLs.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(500);

pub type ApplyResult = Result<(Applied, i64), ServerError>;

pub enum RaftEvent {
    Propose {
        id: u64,
        data: Vec<u8>,
    },
    ReadIndex(oneshot::Sender<Result<(), ServerError>>),
    Step(Box<Message>),
    Unreachable(u64),
    SnapshotFailed(u64),
    TransferLeader(u64),
    ProposeConfChange {
        id: u64,
        cc: raft::eraftpb::ConfChange,
    },
    Shutdown,
}

/// Where outgoing raft messages go (the peer transport).
pub trait Transport: Send + Sync {
    fn send(&self, msgs: Vec<Message>);
    /// Starts dialers for new members and stops those of removed ones.
    fn set_peers(&self, members: &[crate::state::members::Member]);
}

/// Numbers the loop publishes for status requests and response headers.
#[derive(Default)]
pub struct RaftStatus {
    pub term: AtomicU64,
    pub leader: AtomicU64,
    pub commit: AtomicU64,
    pub applied: AtomicU64,
    pub last_index: AtomicU64,
    /// When this member, as leader, took over the leases (ms since the epoch); 0 when it is
    /// not the leader. Read by TimeToLive to report what this leader will enforce.
    pub lease_promoted_ms: std::sync::atomic::AtomicI64,
}

/// A linearizable read waiting for its read index to be applied.
type ReadWaiter = oneshot::Sender<Result<(), ServerError>>;

/// Proposers waiting for their entries to be applied, by request ID.
pub type Waiters = Arc<std::sync::Mutex<HashMap<u64, oneshot::Sender<ApplyResult>>>>;

pub struct RaftLoop {
    pub node: RawNode<LogStore>,
    pub wal: oxcd_storage::Wal,
    pub applier: Applier,
    pub rx: Receiver<RaftEvent>,
    pub transport: Arc<dyn Transport>,
    pub waiters: Waiters,
    pub status: Arc<RaftStatus>,
    pub watch: Arc<WatchHub>,
    pub v2_index: tokio::sync::watch::Sender<u64>,
    pub tick: Duration,
    pub snapshot_count: u64,
    pub member_id: u64,
    pub attrs: MemberAttrs,
    pub conf_state: ConfState,
    pub last_snapshot_index: u64,
    reads_new: Vec<ReadWaiter>,
    reads_by_ctx: HashMap<Vec<u8>, Vec<ReadWaiter>>,
    reads_ready: Vec<(u64, Vec<ReadWaiter>)>,
    read_ctx: u64,
    last_durable: Instant,
    durable_index: u64,
    leader: u64,
    last_housekeeping: Instant,
    compactor: Option<crate::consensus::compactor::Compactor>,
    /// For work done off the loop that ends in a proposal (the corruption check).
    self_tx: std::sync::mpsc::SyncSender<RaftEvent>,
    corrupt_check: Option<Duration>,
    last_corrupt_check: Instant,
    /// True while a corruption-check hash is being computed (one at a time).
    hashing: Arc<std::sync::atomic::AtomicBool>,
    /// Proposals that arrived while no leader was known.
    held: Vec<(u64, Vec<u8>)>,
    /// Membership changes that reached this leader while an earlier one was not applied yet
    /// (raft-rs would turn them into empty entries and the proposer would only time out);
    /// proposed one at a time as the earlier ones apply.
    held_conf: std::collections::VecDeque<(u64, raft::eraftpb::ConfChange)>,
    /// Set once this member, as leader, has applied every entry of earlier terms: only
    /// then does it expire leases (etcd's `lessor.Promote`).
    lease_promotion: Option<crate::state::lease::Promotion>,
    election_ms: i64,
    /// Lease revokes proposed, and when.
    revoking: HashMap<i64, i64>,
    /// Set when a membership change removed this member.
    removed: bool,
    /// Flipped once this member's attributes are in the member table (etcd's "published"):
    /// client listeners open only then.
    pub published: tokio::sync::watch::Sender<bool>,
}

impl RaftLoop {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node: RawNode<LogStore>,
        wal: oxcd_storage::Wal,
        applier: Applier,
        rx: Receiver<RaftEvent>,
        transport: Arc<dyn Transport>,
        waiters: Waiters,
        status: Arc<RaftStatus>,
        watch: Arc<WatchHub>,
        v2_index: tokio::sync::watch::Sender<u64>,
        cfg: &crate::config::Config,
        member_id: u64,
        attrs: MemberAttrs,
        conf_state: ConfState,
        last_snapshot_index: u64,
        self_tx: std::sync::mpsc::SyncSender<RaftEvent>,
    ) -> RaftLoop {
        let durable_index = applier.store.consistent_index().0;
        watch.start_at(applier.store.current_rev());
        RaftLoop {
            node,
            wal,
            applier,
            rx,
            transport,
            waiters,
            status,
            watch,
            v2_index,
            tick: Duration::from_millis(cfg.heartbeat_ms),
            snapshot_count: cfg.snapshot_count,
            member_id,
            attrs,
            conf_state,
            last_snapshot_index,
            reads_new: Vec::new(),
            reads_by_ctx: HashMap::new(),
            reads_ready: Vec::new(),
            read_ctx: 0,
            last_durable: Instant::now(),
            durable_index,
            leader: 0,
            last_housekeeping: Instant::now(),
            compactor: cfg
                .auto_compaction
                .map(crate::consensus::compactor::Compactor::new),
            self_tx,
            corrupt_check: cfg.corrupt_check,
            last_corrupt_check: Instant::now(),
            hashing: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            held: Vec::new(),
            held_conf: std::collections::VecDeque::new(),
            lease_promotion: None,
            election_ms: cfg.election_ms as i64,
            revoking: HashMap::new(),
            removed: false,
            published: tokio::sync::watch::channel(false).0,
        }
    }

    /// Runs until shutdown. An I/O failure of the WAL or backend is fatal: the member cannot
    /// go on without breaking its promises, so it stops (exit status 1).
    pub fn run(mut self) {
        let mut last_tick = Instant::now();
        loop {
            let wait = self.tick.saturating_sub(last_tick.elapsed());
            match self.rx.recv_timeout(wait) {
                Ok(RaftEvent::Shutdown) => break,
                Ok(ev) => self.handle(ev),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let mut n = 0;
            while n < EVENTS_PER_TURN_MAX {
                match self.rx.try_recv() {
                    Ok(RaftEvent::Shutdown) => return self.shutdown(),
                    Ok(ev) => self.handle(ev),
                    Err(_) => break,
                }
                n += 1;
            }
            if last_tick.elapsed() >= self.tick {
                last_tick = Instant::now();
                self.node.tick();
                self.housekeeping();
            }
            if !self.reads_new.is_empty() {
                self.read_ctx += 1;
                // The leader keys pending reads by ctx: make it unique across members.
                let mut ctx = self.member_id.to_be_bytes().to_vec();
                ctx.extend_from_slice(&self.read_ctx.to_be_bytes());
                self.node.read_index(ctx.clone());
                self.reads_by_ctx
                    .insert(ctx, std::mem::take(&mut self.reads_new));
            }
            if let Err(e) = self.on_ready() {
                tracing::error!("fatal storage error in the raft loop: {e}");
                std::process::exit(1);
            }
        }
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // Make the backend durable so the next start replays little.
        if let Ok(b) = self.applier.store.batch() {
            let _ = b.commit(true);
        }
    }

    fn handle(&mut self, ev: RaftEvent) {
        match ev {
            RaftEvent::Propose { id, data } => {
                if self.leader == 0 {
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
            RaftEvent::ReadIndex(tx) => self.reads_new.push(tx),
            RaftEvent::Step(mut m) => {
                if m.get_msg_type() == raft::eraftpb::MessageType::MsgPropose
                    && self.node.raft.state == StateRole::Leader
                {
                    self.refuse_unready_promotions(&mut m.entries);
                }
                if let Err(e) = self.node.step(*m) {
                    tracing::debug!("dropped a raft message: {e}");
                }
            }
            RaftEvent::Unreachable(id) => self.node.report_unreachable(id),
            RaftEvent::TransferLeader(id) => self.node.transfer_leader(id),
            RaftEvent::ProposeConfChange { id, cc } => {
                let leader = self.node.raft.state == StateRole::Leader;
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
            RaftEvent::SnapshotFailed(id) => {
                self.node.report_snapshot(id, raft::SnapshotStatus::Failure)
            }
            RaftEvent::Shutdown => {}
        }
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

    fn reply(&self, id: u64, res: ApplyResult) {
        let tx = self
            .waiters
            .lock()
            .expect("waiters lock poisoned")
            .remove(&id);
        if let Some(tx) = tx {
            let _ = tx.send(res);
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
                    let req = LogRequest {
                        id: 0,
                        op: Some(op),
                    };
                    let data = prost::Message::encode_to_vec(&req);
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
        let Some(every) = self.corrupt_check else {
            return;
        };
        if self.node.raft.state != StateRole::Leader || self.last_corrupt_check.elapsed() < every {
            return;
        }
        self.last_corrupt_check = Instant::now();
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
    fn compare_hash(&self, h: crate::request::HashCheck) {
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

    /// Proposes the compaction the auto-compactor asks for (leader only).
    fn auto_compact(&mut self) {
        let leader = self.node.raft.state == StateRole::Leader;
        let store = &self.applier.store;
        let (current, compacted) = (store.current_rev(), store.compact_rev());
        let Some(c) = self.compactor.as_mut() else {
            return;
        };
        let Some(rev) = c.tick(Instant::now(), current, compacted, leader) else {
            return;
        };
        tracing::info!("starting auto compaction at revision {rev} ({:?})", c.mode);
        let req = LogRequest {
            id: 0,
            op: Some(Op::Compaction(oxcd_api::etcdserverpb::CompactionRequest {
                revision: rev,
                physical: false,
            })),
        };
        let _ = self
            .node
            .propose(vec![], prost::Message::encode_to_vec(&req));
    }

    /// Leader duties on each tick: expire v2 TTLs; every member: publish its attributes.
    fn housekeeping(&mut self) {
        if self.last_housekeeping.elapsed() < HOUSEKEEPING_INTERVAL {
            return;
        }
        self.last_housekeeping = Instant::now();
        self.auto_compact();
        self.start_corrupt_check();
        let now_ms = now_ms();
        if self.node.raft.state == StateRole::Leader {
            self.revoke_expired_leases(now_ms);
            let expired = self
                .applier
                .v2
                .lock()
                .map(|v2| v2.has_expired(now_ms))
                .unwrap_or(false);
            if expired {
                let req = LogRequest {
                    id: 0,
                    op: Some(Op::V2Expire(V2Expire { now_ms })),
                };
                let _ = self
                    .node
                    .propose(vec![], prost::Message::encode_to_vec(&req));
            }
        }
        if self.leader != 0 {
            let published = self
                .applier
                .members
                .read()
                .map(|m| {
                    m.get(self.member_id)
                        .map(|me| {
                            me.client_urls == self.attrs.client_urls && me.name == self.attrs.name
                        })
                        .unwrap_or(true)
                })
                .unwrap_or(true);
            if published {
                self.published.send_replace(true);
            } else {
                let req = LogRequest {
                    id: 0,
                    op: Some(Op::MemberAttrs(self.attrs.clone())),
                };
                let _ = self
                    .node
                    .propose(vec![], prost::Message::encode_to_vec(&req));
            }
        }
    }

    /// Leader only: propose a revoke for each lease whose time is up (once per lease every
    /// few seconds, in case a proposal is lost), at most [`REVOKES_PER_SEC_MAX`] a second
    /// (this runs every [`HOUSEKEEPING_INTERVAL`]).
    fn revoke_expired_leases(&mut self, now_ms: i64) {
        let Some(promotion) = self.lease_promotion else {
            return;
        };
        let per_round = REVOKES_PER_SEC_MAX * HOUSEKEEPING_INTERVAL.as_millis() as usize / 1000;
        let Ok(table) = self.applier.leases.lock() else {
            return;
        };
        // Revokes still in flight (proposed less than 3 s ago, not applied yet) count
        // against this round; one that got lost is proposed again after that.
        self.revoking
            .retain(|id, at| table.contains(*id) && now_ms - *at < 3000);
        let room = per_round.saturating_sub(self.revoking.len());
        let expired = table.expired(now_ms, promotion, room + self.revoking.len());
        drop(table);
        let mut proposed = 0;
        for id in expired {
            if proposed >= room || self.revoking.contains_key(&id) {
                continue;
            }
            proposed += 1;
            self.revoking.insert(id, now_ms);
            let req = LogRequest {
                id: 0,
                op: Some(Op::LeaseRevoke(crate::request::LeaseOp {
                    id,
                    ttl: 0,
                    now_ms,
                })),
            };
            let _ = self
                .node
                .propose(vec![], prost::Message::encode_to_vec(&req));
        }
    }

    fn on_ready(&mut self) -> Result<(), String> {
        if !self.node.has_ready() {
            return Ok(());
        }
        let mut rd = self.node.ready();
        if let Some(ss) = rd.ss() {
            self.on_soft_state(ss.leader_id, ss.raft_state);
        }
        if !rd.messages().is_empty() {
            self.transport.send(rd.take_messages());
        }
        if !rd.snapshot().is_empty() {
            self.apply_snapshot(rd.snapshot().clone())?;
        }
        for rs in rd.take_read_states() {
            if let Some(ws) = self.reads_by_ctx.remove(&rs.request_ctx) {
                self.reads_ready.push((rs.index, ws));
            }
        }
        self.apply_committed(rd.take_committed_entries())?;
        #[cfg(feature = "failpoints")]
        if !rd.entries().is_empty() {
            fail::fail_point!("raft_before_save");
        }
        if !rd.entries().is_empty() {
            for e in rd.entries() {
                let bytes = e.write_to_bytes().map_err(|e| e.to_string())?;
                self.wal.append_entry(e.index, &bytes);
            }
            self.node
                .mut_store()
                .mem
                .wl()
                .append(rd.entries())
                .map_err(|e| e.to_string())?;
        }
        if let Some(hs) = rd.hs() {
            self.persist_hard_state(hs.clone())?;
        }
        self.wal.sync().map_err(|e| e.to_string())?;
        #[cfg(feature = "failpoints")]
        if !rd.entries().is_empty() {
            fail::fail_point!("raft_after_save");
        }
        if !rd.persisted_messages().is_empty() {
            self.transport.send(rd.take_persisted_messages());
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
        self.transport.send(light.take_messages());
        self.apply_committed(light.take_committed_entries())?;
        self.node.advance_apply();
        self.release_reads(self.node.raft.raft_log.applied);
        self.propose_held();
        let last = self.node.raft.raft_log.last_index();
        self.wal.maybe_rotate(last + 1).map_err(|e| e.to_string())?;
        self.publish_status();
        self.maybe_compact()?;
        Ok(())
    }

    /// Proposes what was held while there was no leader. Only after `advance`: a proposal
    /// between `ready()` and `advance()` on a new leader appends entries that the Ready
    /// being advanced does not hold, and raft-rs panics (found by the chaos suite,
    /// kill-majority).
    fn propose_held(&mut self) {
        if self.leader == 0 {
            return;
        }
        let leader = self.node.raft.state == StateRole::Leader;
        if !self.held_conf.is_empty() && (!leader || !self.conf_change_pending()) {
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

    fn persist_hard_state(&mut self, hs: HardState) -> Result<(), String> {
        let bytes = hs.write_to_bytes().map_err(|e| e.to_string())?;
        self.wal.append_state(&bytes);
        self.node.mut_store().mem.wl().set_hardstate(hs);
        Ok(())
    }

    fn on_soft_state(&mut self, leader: u64, role: StateRole) {
        if leader != self.leader {
            if leader == 0 {
                tracing::warn!(
                    "raft.node: {:x} lost leader {:x} at term {}",
                    self.member_id,
                    self.leader,
                    self.node.raft.term
                );
            } else {
                tracing::info!(
                    "raft.node: {:x} elected leader {:x} at term {} (this member is {:?})",
                    self.member_id,
                    leader,
                    self.node.raft.term,
                    role
                );
            }
            // Reads waiting on the old leader's ReadIndex will not be answered.
            for (_, ws) in self.reads_by_ctx.drain() {
                for w in ws {
                    let _ = w.send(Err(ServerError::LeaderChanged));
                }
            }
            self.leader = leader;
            if leader != self.member_id {
                self.demote_leases();
            }
            if leader != 0 {
                // Publish attributes on the next tick rather than after the usual pause.
                self.last_housekeeping = Instant::now() - Duration::from_secs(1);
            }
        }
    }

    /// etcd promotes its lessor when the leader applies the empty entry of its own term
    /// (everything from earlier terms is applied by then): from now on this member expires
    /// leases, and every lease gets its full TTL plus an election timeout from now.
    fn maybe_promote_leases(&mut self, e: &Entry) {
        if self.node.raft.state != StateRole::Leader || e.term != self.node.raft.term {
            return;
        }
        let p = crate::state::lease::Promotion {
            at_ms: now_ms(),
            extend_ms: self.election_ms,
        };
        tracing::info!(
            "leader at term {}: leases extended by their TTL plus {} ms",
            e.term,
            p.extend_ms
        );
        self.lease_promotion = Some(p);
        self.revoking.clear();
        self.status
            .lease_promoted_ms
            .store(p.at_ms, Ordering::Relaxed);
    }

    fn demote_leases(&mut self) {
        self.lease_promotion = None;
        self.revoking.clear();
        self.status.lease_promoted_ms.store(0, Ordering::Relaxed);
    }

    fn publish_status(&self) {
        let s = &self.status;
        s.term.store(self.node.raft.term, Ordering::Relaxed);
        s.leader.store(self.leader, Ordering::Relaxed);
        s.commit
            .store(self.node.raft.raft_log.committed, Ordering::Relaxed);
        s.last_index
            .store(self.node.raft.raft_log.last_index(), Ordering::Relaxed);
    }

    /// Applies committed entries in one backend batch, then answers proposers and watchers.
    fn apply_committed(&mut self, entries: Vec<Entry>) -> Result<(), String> {
        let Some(last) = entries.last() else {
            return Ok(());
        };
        let (last_index, last_term) = (last.index, last.term);
        #[cfg(feature = "failpoints")]
        fail::fail_point!("raft_before_apply");
        let mut outcomes: Vec<Outcome> = Vec::with_capacity(entries.len());
        let mut conf_replies: Vec<(u64, ApplyResult)> = Vec::new();
        {
            let store = self.applier.store.clone();
            let mut batch = store.batch().map_err(|e| e.to_string())?;
            for e in &entries {
                match e.get_entry_type() {
                    EntryType::EntryNormal if e.data.is_empty() => self.maybe_promote_leases(e),
                    EntryType::EntryNormal => {
                        outcomes.push(self.applier.apply(&mut batch, e.index, &e.data))
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
            batch
                .set_consistent_index(last_index, last_term)
                .map_err(|e| e.to_string())?;
            let durable = self.last_durable.elapsed() >= BACKEND_SYNC_INTERVAL
                || last_index - self.last_snapshot_index >= self.snapshot_count;
            batch.commit(durable).map_err(|e| e.to_string())?;
            #[cfg(feature = "failpoints")]
            fail::fail_point!("raft_after_apply");
            if durable {
                self.last_durable = Instant::now();
                self.durable_index = last_index;
            }
        }
        self.status.applied.store(last_index, Ordering::Relaxed);
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
        if let Ok(v2) = self.applier.v2.lock() {
            self.v2_index.send_replace(v2.index);
        }
        self.release_reads(last_index);
        if self.removed {
            tracing::error!(
                "this member ({:x}) has been permanently removed from the cluster; exiting",
                self.member_id
            );
            self.shutdown();
            std::process::exit(0);
        }
        Ok(())
    }

    fn release_reads(&mut self, applied: u64) {
        let mut i = 0;
        while i < self.reads_ready.len() {
            if self.reads_ready[i].0 <= applied {
                let (_, ws) = self.reads_ready.swap_remove(i);
                for w in ws {
                    let _ = w.send(Ok(()));
                }
            } else {
                i += 1;
            }
        }
    }

    /// Applies a membership change: the member table, raft's configuration, the transport.
    fn apply_conf_change(
        &mut self,
        batch: &mut oxcd_storage::WriteBatch<'_>,
        e: &Entry,
    ) -> Result<Option<(u64, ApplyResult)>, String> {
        let cc = raft::eraftpb::ConfChange::parse_from_bytes(&e.data).map_err(|e| e.to_string())?;
        let change: Option<crate::state::apply::MemberChange> =
            serde_json::from_slice(&cc.context).ok();
        let res = change.as_ref().map(|c| {
            self.applier
                .apply_member_change(batch, c, cc.get_change_type())
        });
        let cs = self
            .node
            .apply_conf_change(&cc)
            .map_err(|e| e.to_string())?;
        self.node.mut_store().mem.wl().set_conf_state(cs.clone());
        self.conf_state = cs;
        if let Ok(m) = self.applier.members.read() {
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
    fn apply_snapshot(&mut self, snap: Snapshot) -> Result<(), String> {
        let meta = snap.get_metadata();
        let (index, term) = (meta.index, meta.term);
        tracing::info!("applying snapshot at index {index} (term {term}) from the leader");
        let mut batch = self.applier.store.batch().map_err(|e| e.to_string())?;
        batch.restore(&snap.data).map_err(|e| e.to_string())?;
        batch
            .set_consistent_index(index, term)
            .map_err(|e| e.to_string())?;
        batch.commit(true).map_err(|e| e.to_string())?;
        // The backend holds the snapshot; the WAL does not know yet.
        #[cfg(feature = "failpoints")]
        fail::fail_point!("raft_snapshot_mid_apply");
        self.applier.reload()?;
        self.conf_state = meta.get_conf_state().clone();
        self.node
            .mut_store()
            .mem
            .wl()
            .apply_snapshot(snap.clone())
            .map_err(|e| e.to_string())?;
        self.wal
            .append_snapshot(index, &encode_snapshot_meta(term, &self.conf_state));
        self.last_snapshot_index = index;
        self.durable_index = index;
        self.status.applied.store(index, Ordering::Relaxed);
        if let Ok(v2) = self.applier.v2.lock() {
            self.v2_index.send_replace(v2.index);
        }
        // The snapshot's revisions reach watchers from the store, not as live events.
        self.watch.resync_all(self.applier.store.current_rev());
        Ok(())
    }

    /// Every `--snapshot-count` applied entries: make the backend durable, drop the log
    /// behind it (keeping some for slow followers) and the WAL segments that held it.
    fn maybe_compact(&mut self) -> Result<(), String> {
        let applied = self.node.raft.raft_log.applied;
        if applied < self.last_snapshot_index + self.snapshot_count || self.durable_index < applied
        {
            return Ok(());
        }
        let keep = self.snapshot_count.clamp(1, CATCHUP_ENTRIES_MAX);
        let upto = applied.saturating_sub(keep);
        self.last_snapshot_index = applied;
        if upto <= self.node.store().first_index().map_err(|e| e.to_string())? {
            return Ok(());
        }
        let term = self.node.store().term(upto).map_err(|e| e.to_string())?;
        self.node
            .mut_store()
            .mem
            .wl()
            .compact(upto + 1)
            .map_err(|e| e.to_string())?;
        self.wal
            .append_snapshot(upto, &encode_snapshot_meta(term, &self.conf_state));
        self.wal.sync().map_err(|e| e.to_string())?;
        self.wal.release_to(upto).map_err(|e| e.to_string())?;
        tracing::info!("compacted the raft log up to index {upto} (applied {applied})");
        Ok(())
    }
}
