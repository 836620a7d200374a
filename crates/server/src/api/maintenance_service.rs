//! etcd's Maintenance service: alarms, status, defragment, hashes, snapshots, leadership
//! transfer.

use oxcd_api::etcdserverpb as pb;
use oxcd_api::etcdserverpb::maintenance_server::Maintenance;
use tonic::{Request, Response, Status};

use crate::api::services::{BoxStream, GrpcResult, Services};
use crate::error::ServerError;
use crate::request::Op;
use crate::state::apply::Applied;
use crate::state::auth::Need;
use crate::version::ETCD_VERSION;

/// Bytes per message of a snapshot stream (etcd sends 32 KiB).
const SNAPSHOT_CHUNK_BYTES: usize = 32 * 1024;

#[tonic::async_trait]
impl Maintenance for Services {
    /// GET lists the active alarms; ACTIVATE and DEACTIVATE go through the log (see
    /// [`crate::state::alarm`]) and answer with the alarm raised or cleared.
    async fn alarm(&self, req: Request<pb::AlarmRequest>) -> GrpcResult<pb::AlarmResponse> {
        use pb::alarm_request::AlarmAction;
        let r = req.into_inner();
        let action = AlarmAction::try_from(r.action).unwrap_or(AlarmAction::Get);
        let alarms = match action {
            AlarmAction::Get => self
                .server
                .tables
                .alarms
                .read()
                .map(|a| crate::state::alarm::to_pb(&a))
                .map_err(|_| ServerError::Internal("alarms lock".into()))?,
            AlarmAction::Activate | AlarmAction::Deactivate => {
                if r.alarm == pb::AlarmType::None as i32 {
                    // etcd ignores a change of alarm NONE.
                    Vec::new()
                } else {
                    let op = Op::Alarm(crate::request::AlarmOp {
                        activate: action == AlarmAction::Activate,
                        member_id: r.member_id,
                        alarm: r.alarm,
                    });
                    match self.server.propose(op).await? {
                        (Applied::Alarms(a), _) => a,
                        _ => return Err(self.unexpected()),
                    }
                }
            }
        };
        Ok(Response::new(pb::AlarmResponse {
            header: Some(self.server.header(self.server.store.current_rev())),
            alarms,
        }))
    }

    async fn status(&self, _req: Request<pb::StatusRequest>) -> GrpcResult<pb::StatusResponse> {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.server.status;
        let size = self.server.db_size();
        Ok(Response::new(pb::StatusResponse {
            header: Some(self.server.header(self.server.store.current_rev())),
            version: ETCD_VERSION.into(),
            db_size: size,
            leader: s.leader.load(Relaxed),
            raft_index: s.commit.load(Relaxed),
            raft_term: s.term.load(Relaxed),
            raft_applied_index: s.applied.load(Relaxed),
            errors: self
                .server
                .tables
                .alarms
                .read()
                .map(|a| {
                    a.iter()
                        .map(|&(m, t)| crate::state::alarm::describe(m, t))
                        .collect()
                })
                .unwrap_or_default(),
            db_size_in_use: size,
            is_learner: self.server.is_learner(),
            ..Default::default()
        }))
    }

    async fn defragment(
        &self,
        req: Request<pb::DefragmentRequest>,
    ) -> GrpcResult<pb::DefragmentResponse> {
        self.server
            .auth_check(req.metadata(), Need::Maintenance)
            .await?;
        // redb reuses freed pages itself; defragmenting gives the free ones back to the file
        // system, so that the backend file shrinks below the quota again.
        let store = self.server.store.clone();
        tokio::task::spawn_blocking(move || {
            crate::metrics::get().defragmenting(|| store.defragment())
        })
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))?
        .map_err(ServerError::from)?;
        Ok(Response::new(pb::DefragmentResponse {
            header: Some(self.server.header(self.server.store.current_rev())),
        }))
    }

    async fn hash(&self, req: Request<pb::HashRequest>) -> GrpcResult<pb::HashResponse> {
        self.server
            .auth_check(req.metadata(), Need::Maintenance)
            .await?;
        let store = self.server.store.clone();
        let (body, rev) = tokio::task::spawn_blocking(move || {
            let rev = store.current_rev();
            store.snapshot().map(|(body, _, _)| (body, rev))
        })
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))?
        .map_err(ServerError::from)?;
        Ok(Response::new(pb::HashResponse {
            header: Some(self.server.header(rev)),
            hash: oxcd_snapshot::backend_hash(&body),
        }))
    }

    async fn hash_kv(&self, req: Request<pb::HashKvRequest>) -> GrpcResult<pb::HashKvResponse> {
        self.server
            .auth_check(req.metadata(), Need::Maintenance)
            .await?;
        let r = req.into_inner();
        let store = &self.server.store;
        let rev = if r.revision > 0 {
            r.revision
        } else {
            store.current_rev()
        };
        let (hash, compact_revision) = crate::state::kv::hash_kv(store, rev)?;
        Ok(Response::new(pb::HashKvResponse {
            header: Some(self.server.header(store.current_rev())),
            hash,
            compact_revision,
            ..Default::default()
        }))
    }

    type SnapshotStream = BoxStream<pb::SnapshotResponse>;

    /// Streams the whole backend as a snapshot file: magic `OXCDSNP1`, body length (u64 LE),
    /// the backend records (`docs/design.md`), zero padding to a multiple of 512 bytes, then
    /// the SHA-256 of everything before it. etcdctl checks that shape (etcd's bbolt file is a
    /// multiple of 512 bytes with its SHA-256 appended).
    async fn snapshot(
        &self,
        req: Request<pb::SnapshotRequest>,
    ) -> GrpcResult<Self::SnapshotStream> {
        self.server
            .auth_check(req.metadata(), Need::Maintenance)
            .await?;
        let (body, _, _) = self.server.store.snapshot().map_err(ServerError::from)?;
        let data = oxcd_snapshot::encode_snapshot(&body);
        let header = self.server.header(self.server.store.current_rev());
        let total = data.len();
        let chunks: Vec<Result<pb::SnapshotResponse, Status>> = data
            .chunks(SNAPSHOT_CHUNK_BYTES)
            .scan(0usize, |sent, chunk| {
                *sent += chunk.len();
                Some(Ok(pb::SnapshotResponse {
                    header: Some(header),
                    remaining_bytes: (total - *sent) as u64,
                    blob: chunk.to_vec(),
                    ..Default::default()
                }))
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    /// Transfers leadership to `target_id` and waits (bounded) until it has happened.
    async fn move_leader(
        &self,
        req: Request<pb::MoveLeaderRequest>,
    ) -> GrpcResult<pb::MoveLeaderResponse> {
        let target = req.into_inner().target_id;
        let known = self
            .server
            .tables
            .members
            .read()
            .map(|m| m.get(target).is_some())
            .unwrap_or(false);
        if !known {
            return Err(ServerError::MemberNotFound.status());
        }
        if self.server.leader() != self.server.member_id {
            return Err(Status::failed_precondition("etcdserver: not leader"));
        }
        self.server.transfer_leader(target).await?;
        Ok(Response::new(pb::MoveLeaderResponse {
            header: Some(self.server.header(self.server.store.current_rev())),
        }))
    }

    async fn downgrade(
        &self,
        _req: Request<pb::DowngradeRequest>,
    ) -> GrpcResult<pb::DowngradeResponse> {
        Err(ServerError::NotCapable.status())
    }
}
