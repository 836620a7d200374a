//! The server facade request handlers talk to: propose a write and wait for it to be applied,
//! wait for a linearizable read point, fill response headers. It owns no state of its own
//! beyond handles: the raft loop owns the log and the stores' writes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oxcd_api::etcdserverpb::ResponseHeader;
use oxcd_storage::Store;
use prost::Message;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::consensus::events::{RaftEvent, RaftStatus, Waiters};
use crate::error::ServerError;
use crate::request::{LogRequest, Op};
use crate::state::apply::Applied;
use crate::state::watch::WatchHub;
use crate::state::Tables;

pub struct Server {
    pub cfg: Config,
    pub member_id: u64,
    pub cluster_id: u64,
    pub store: Arc<Store>,
    /// The tables beside the MVCC store (v2, members, leases, auth, alarms).
    pub tables: Tables,
    pub v2_index: tokio::sync::watch::Receiver<u64>,
    pub status: Arc<RaftStatus>,
    pub watch: Arc<WatchHub>,
    pub raft_tx: SyncSender<RaftEvent>,
    pub waiters: Waiters,
    pub next_id: AtomicU64,
    pub request_timeout: Duration,
    pub started: Instant,
    pub db_path: std::path::PathBuf,
    /// Which peers this member is connected to, and since when.
    pub peer_activity: Arc<crate::consensus::peer::PeerActivity>,
    /// The backend size the space quota last saw (see [`Server::db_size_recent`]).
    pub quota_size: RecentSize,
}

/// How old the backend size the quota check uses may be: a stat per write cost ~2 % of a
/// member's CPU under a put load. The quota is a soft bound either way (etcd checks the
/// size before the write is applied, so a burst of writes passes it together).
pub const QUOTA_SIZE_MAX_AGE: Duration = Duration::from_millis(100);

/// A backend size and when it was read (milliseconds since the member started, plus one:
/// 0 means never).
#[derive(Default)]
pub struct RecentSize {
    bytes: AtomicU64,
    read_at_ms: AtomicU64,
}

impl Server {
    /// True while this member is a learner (etcd's IsLearner).
    pub fn is_learner(&self) -> bool {
        self.tables
            .members
            .read()
            .map(|m| {
                m.list
                    .iter()
                    .any(|x| x.id == self.member_id && x.is_learner)
            })
            .unwrap_or(false)
    }

    /// A response header: IDs, the given revision, the current term.
    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.status.term.load(Ordering::Relaxed),
        }
    }

    fn send(&self, ev: RaftEvent) -> Result<(), ServerError> {
        self.raft_tx.try_send(ev).map_err(|e| match e {
            TrySendError::Full(_) => ServerError::TooManyRequests,
            TrySendError::Disconnected(_) => ServerError::Stopped,
        })
    }

    /// Proposes a write and waits until it is applied here. Acknowledged only then: the
    /// entry is durable on a majority (committed) and applied to this member's stores.
    pub async fn propose(&self, op: Op) -> Result<(Applied, i64), ServerError> {
        if crate::state::alarm::grows_data(&op) {
            // etcd's space quota: writes that add data fail, deletes and compaction still work.
            let raised = self
                .tables
                .alarms
                .read()
                .map(|a| crate::state::alarm::has(&a, crate::state::alarm::NOSPACE))
                .unwrap_or(false);
            if raised {
                return Err(ServerError::NoSpace);
            }
            let size = self.db_size_recent();
            if size > self.cfg.quota_backend_bytes {
                // Raise NOSPACE for this member through the log; nobody waits for it.
                tracing::warn!(
                    "backend is {size} bytes, over --quota-backend-bytes={}: raising NOSPACE",
                    self.cfg.quota_backend_bytes
                );
                self.propose_internal(Op::Alarm(crate::request::AlarmOp {
                    activate: true,
                    member_id: self.member_id,
                    alarm: crate::state::alarm::NOSPACE,
                }));
                return Err(ServerError::NoSpace);
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let data = LogRequest { id, op: Some(op) }.encode_to_vec();
        if data.len() > self.cfg.request_bytes_max {
            return Err(ServerError::RequestTooLarge);
        }
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .expect("waiters lock poisoned")
            .insert(id, tx);
        if let Err(e) = self.send(RaftEvent::Propose { id, data }) {
            self.forget(id);
            crate::metrics::get().proposal_failed();
            return Err(e);
        }
        match tokio::time::timeout(self.request_timeout, rx).await {
            Ok(Ok(res)) => res,
            Ok(Err(_)) => {
                crate::metrics::get().proposal_failed();
                Err(ServerError::Stopped)
            }
            Err(_) => {
                self.forget(id);
                crate::metrics::get().proposal_failed();
                Err(ServerError::Timeout)
            }
        }
    }

    /// Proposes a request nobody waits for. A full queue drops it: the callers' effects
    /// are retried or only lose a follower's view (a renewal, an alarm raised again).
    pub fn propose_internal(&self, op: Op) {
        let _ = self.send(RaftEvent::Propose {
            id: 0,
            data: LogRequest::internal(op),
        });
    }

    /// Proposes a membership change and waits until it is applied here.
    pub async fn propose_member_change(
        &self,
        kind: raft::eraftpb::ConfChangeType,
        member: crate::state::members::Member,
    ) -> Result<Applied, ServerError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut cc = raft::eraftpb::ConfChange::default();
        cc.set_change_type(kind);
        cc.node_id = member.id;
        cc.context = serde_json::to_vec(&crate::state::apply::MemberChange { req: id, member })
            .map_err(|e| ServerError::Internal(e.to_string()))?
            .into();
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .expect("waiters lock poisoned")
            .insert(id, tx);
        if let Err(e) = self.send(RaftEvent::ProposeConfChange { id, cc }) {
            self.forget(id);
            return Err(e);
        }
        match tokio::time::timeout(self.request_timeout, rx).await {
            Ok(Ok(res)) => res.map(|(a, _)| a),
            Ok(Err(_)) => Err(ServerError::Stopped),
            Err(_) => {
                self.forget(id);
                Err(ServerError::Timeout)
            }
        }
    }

    fn forget(&self, id: u64) {
        self.waiters
            .lock()
            .expect("waiters lock poisoned")
            .remove(&id);
    }

    /// Waits until this member has applied everything committed when the call started
    /// (raft ReadIndex), so that a local read is linearizable.
    pub async fn read_index(&self) -> Result<(), ServerError> {
        let started = Instant::now();
        let (tx, rx) = oneshot::channel();
        self.send(RaftEvent::ReadIndex(tx))?;
        let res = match tokio::time::timeout(self.request_timeout, rx).await {
            Ok(Ok(res)) => res,
            Ok(Err(_)) => Err(ServerError::Stopped),
            Err(_) => Err(ServerError::Timeout),
        };
        crate::metrics::get().read_index_done(started, res.is_ok());
        res
    }

    /// Asks raft to hand leadership to `target` and waits until it has.
    pub async fn transfer_leader(&self, target: u64) -> Result<(), ServerError> {
        self.send(RaftEvent::TransferLeader(target))?;
        let deadline = Instant::now() + self.request_timeout;
        while Instant::now() < deadline {
            if self.leader() == target {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(ServerError::Timeout)
    }

    pub fn leader(&self) -> u64 {
        self.status.leader.load(Ordering::Relaxed)
    }

    /// A fresh ID for a lease or similar: unique across members and restarts, positive.
    pub fn new_lease_id(&self) -> i64 {
        (self.next_id.fetch_add(1, Ordering::Relaxed) & (i64::MAX as u64)) as i64
    }

    /// After a defragmentation: clears this member's own NOSPACE alarm once its backend file
    /// is under `--quota-backend-bytes` again (etcd needs a manual `alarm disarm`, etcd issue
    /// 16779). The clearing goes through the log like `alarm disarm`, so every member applies
    /// it at the same point; a full queue drops it, and the next defragmentation retries.
    pub fn clear_own_nospace_if_under_quota(&self) {
        let own = (self.member_id, crate::state::alarm::NOSPACE);
        let raised = self
            .tables
            .alarms
            .read()
            .map(|a| a.contains(&own))
            .unwrap_or(false);
        let size = self.db_size() as u64;
        if raised && size <= self.cfg.quota_backend_bytes {
            tracing::warn!(
                "backend is {size} bytes, under --quota-backend-bytes={} again: clearing NOSPACE",
                self.cfg.quota_backend_bytes
            );
            self.propose_internal(Op::Alarm(crate::request::AlarmOp {
                activate: false,
                member_id: self.member_id,
                alarm: crate::state::alarm::NOSPACE,
            }));
        }
    }

    /// Size of the backend file in bytes, read at most [`QUOTA_SIZE_MAX_AGE`] ago.
    fn db_size_recent(&self) -> u64 {
        let now_ms = self.started.elapsed().as_millis() as u64 + 1;
        let read_at = self.quota_size.read_at_ms.load(Ordering::Relaxed);
        if read_at != 0 && now_ms.saturating_sub(read_at) < QUOTA_SIZE_MAX_AGE.as_millis() as u64 {
            return self.quota_size.bytes.load(Ordering::Relaxed);
        }
        let size = self.db_size() as u64;
        self.quota_size.bytes.store(size, Ordering::Relaxed);
        self.quota_size.read_at_ms.store(now_ms, Ordering::Relaxed);
        size
    }

    /// Size of the backend file in bytes.
    pub fn db_size(&self) -> i64 {
        std::fs::metadata(&self.db_path)
            .map(|m| m.len() as i64)
            .unwrap_or(0)
    }
}
