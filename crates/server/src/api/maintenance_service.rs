//! etcd's Maintenance service: alarms, status, defragment, hashes, snapshots, leadership
//! transfer.

use oxcd_api::etcdserverpb as pb;
use oxcd_api::etcdserverpb::maintenance_server::Maintenance;
use oxcd_snapshot::to_etcd::EtcdSnapshotFile;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::api::services::{BoxStream, GrpcResult, Services};
use crate::error::ServerError;
use crate::request::Op;
use crate::state::apply::Applied;
use crate::state::auth::Need;
use crate::version::ETCD_VERSION;

/// Bytes per message of a snapshot stream (etcd sends 32 KiB).
const SNAPSHOT_CHUNK_BYTES: usize = 32 * 1024;
/// Messages of a snapshot stream read ahead of the client.
const SNAPSHOT_QUEUE_CHUNKS: usize = 16;

#[tonic::async_trait]
impl Maintenance for Services {
    /// GET lists the active alarms; ACTIVATE and DEACTIVATE go through the log (see
    /// [`crate::state::alarm`]) and answer with the alarm raised or cleared.
    async fn alarm(&self, req: Request<pb::AlarmRequest>) -> GrpcResult<pb::AlarmResponse> {
        use pb::alarm_request::AlarmAction;
        let r = req.into_inner();
        let action = AlarmAction::try_from(r.action).unwrap_or(AlarmAction::Get);
        let alarms = match action {
            // etcd sends every Alarm request, a GET too, through raft: the list is never
            // older than a change the cluster acknowledged. A ReadIndex gives the same.
            AlarmAction::Get => self.server.read_index().await.and_then(|()| {
                self.server
                    .tables
                    .alarms
                    .read()
                    .map(|a| crate::state::alarm::to_pb(&a))
                    .map_err(|_| ServerError::Internal("alarms lock".into()))
            })?,
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
        // system, so that the backend file shrinks below the quota again. Writes go on while
        // the backend is copied; they wait only for the last rows and the swap.
        let store = self.server.store.clone();
        let stats = tokio::task::spawn_blocking(move || {
            crate::metrics::get().defragmenting(|| store.defragment())
        })
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))?
        .map_err(ServerError::from)?;
        tracing::info!(
            "defragmented the backend: compacted rows removed first in {:?}, {} rows copied while writes went on, {} with writes held for {:?}",
            stats.removing,
            stats.rows_online,
            stats.rows_held,
            stats.held
        );
        self.server.clear_own_nospace_if_under_quota();
        Ok(Response::new(pb::DefragmentResponse {
            header: Some(self.server.header(self.server.store.current_rev())),
        }))
    }

    async fn hash(&self, req: Request<pb::HashRequest>) -> GrpcResult<pb::HashResponse> {
        self.server
            .auth_check(req.metadata(), Need::Maintenance)
            .await?;
        let store = self.server.store.clone();
        let (hash, rev) = tokio::task::spawn_blocking(move || {
            let view = store.read_view()?;
            oxcd_snapshot::backend_hash_of(&view).map(|hash| (hash, view.current_rev()))
        })
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))?
        .map_err(ServerError::from)?;
        Ok(Response::new(pb::HashResponse {
            header: Some(self.server.header(rev)),
            hash,
        }))
    }

    async fn hash_kv(&self, req: Request<pb::HashKvRequest>) -> GrpcResult<pb::HashKvResponse> {
        self.server
            .auth_check(req.metadata(), Need::Maintenance)
            .await?;
        let rev = req.into_inner().revision;
        let store = self.server.store.clone();
        let h = tokio::task::spawn_blocking(move || crate::state::kv::hash_kv_at(&store, rev))
            .await
            .map_err(|e| ServerError::Internal(e.to_string()))??;
        Ok(Response::new(pb::HashKvResponse {
            header: Some(self.server.header(h.current_revision)),
            hash: h.hash,
            compact_revision: h.compact_revision,
            ..Default::default()
        }))
    }

    type SnapshotStream = BoxStream<pb::SnapshotResponse>;

    /// Streams the backend as etcd's snapshot does: a bbolt database with etcd's buckets,
    /// then its SHA-256 (`oxcd_snapshot::to_etcd`). The database is built off the runtime
    /// in an unlinked temporary file beside the backend, from one consistent view, then
    /// sent in 32 KiB chunks through a bounded queue: memory stays bounded whatever the size.
    async fn snapshot(
        &self,
        req: Request<pb::SnapshotRequest>,
    ) -> GrpcResult<Self::SnapshotStream> {
        self.server
            .auth_check(req.metadata(), Need::Maintenance)
            .await?;
        let store = self.server.store.clone();
        let members = self
            .server
            .tables
            .members
            .read()
            .map(|m| m.list.clone())
            .map_err(|_| ServerError::Internal("members lock".into()))?;
        let dir = self
            .server
            .db_path
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .to_path_buf();
        let snap = tokio::task::spawn_blocking(move || {
            let view = store.read_view()?;
            EtcdSnapshotFile::create(&view, &members, &dir)
                .map_err(|e| ServerError::Internal(format!("snapshot: {e}")))
        })
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))??;
        let header = self.server.header(snap.revision());
        let (tx, rx) = tokio::sync::mpsc::channel(SNAPSHOT_QUEUE_CHUNKS);
        tokio::task::spawn_blocking(move || {
            for chunk in snap.chunks(SNAPSHOT_CHUNK_BYTES) {
                let msg = chunk
                    .map(|(blob, remaining_bytes)| pb::SnapshotResponse {
                        header: Some(header),
                        remaining_bytes,
                        blob,
                        ..Default::default()
                    })
                    .map_err(|e| Status::internal(format!("snapshot: {e}")));
                let failed = msg.is_err();
                // The client went away: stop reading (the file goes with `snap`).
                if tx.blocking_send(msg).is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
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
