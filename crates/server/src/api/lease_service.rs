//! The Lease gRPC service. Grants, keep-alives and revokes are proposed through the log (so
//! every member agrees on each lease's expiry); time-to-live and listing read the local table.

use std::time::Duration;

use futures::StreamExt;
use oxcd_api::etcdserverpb as pb;
use oxcd_api::etcdserverpb::lease_server::Lease;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::api::services::{BoxStream, Services};
use crate::api::watch_service::RequireLeader;
use crate::clock::now_ms;
use crate::error::ServerError;
use crate::request::{LeaseOp, Op};
use crate::state::apply::Applied;
use crate::state::auth::Need;

/// Keep-alive responses queued per stream before the stream is closed as too slow.
const KEEPALIVE_QUEUE_MAX: usize = 64;

type GrpcResult<T> = Result<Response<T>, Status>;

impl Services {
    /// etcd's minimum TTL (`lease::ttl_min_secs`): shorter TTLs are raised to it.
    fn lease_ttl_min(&self) -> i64 {
        crate::state::lease::ttl_min_secs(self.server.cfg.election_ms, self.server.cfg.heartbeat_ms)
    }

    /// A keep-alive on the leader, answered from memory as etcd's leader does: the leader
    /// alone decides expiry, by its own clock, and a renewal needs no durability (a new
    /// leader gives every lease a full TTL anyway). A lease whose time is up is as good as
    /// revoked: "not found" (TTL 0), it is not brought back. The renewal is then proposed,
    /// without waiting, so that the other members' TimeToLive follows.
    fn renew_on_leader(
        &self,
        id: i64,
        p: crate::state::lease::Promotion,
    ) -> Result<i64, ServerError> {
        let now = now_ms();
        let ttl = self
            .server
            .tables
            .leases
            .lock()
            .map_err(|_| ServerError::Internal("lease table lock".into()))?
            .renew_on_leader(id, now, p)
            .ok_or(ServerError::LeaseNotFound)?;
        crate::metrics::get().lease_renewed.inc();
        // A full queue loses only the followers' view of this renewal.
        self.server.propose_internal(Op::LeaseRenew(LeaseOp {
            id,
            ttl: 0,
            now_ms: now,
        }));
        Ok(ttl)
    }

    /// This member's lease promotion, when it is the leader that expires leases.
    fn lease_promotion(&self) -> Option<crate::state::lease::Promotion> {
        use std::sync::atomic::Ordering;
        let at_ms = self.server.status.lease_promoted_ms.load(Ordering::Relaxed);
        (at_ms != 0).then(|| crate::state::lease::Promotion {
            at_ms,
            // The loop extends by one election timeout (etcd's Promote).
            extend_ms: self.server.cfg.election_ms as i64,
        })
    }

    async fn renew(&self, id: i64) -> Result<i64, ServerError> {
        if let Some(p) = self.lease_promotion() {
            return self.renew_on_leader(id, p);
        }
        let op = Op::LeaseRenew(LeaseOp {
            id,
            ttl: 0,
            now_ms: now_ms(),
        });
        match self.server.propose(op).await {
            Ok((Applied::LeaseRenewed { ttl }, _)) => Ok(ttl),
            Ok(_) => Err(ServerError::unexpected_apply()),
            Err(e) => Err(e),
        }
    }
}

#[tonic::async_trait]
impl Lease for Services {
    async fn lease_grant(
        &self,
        r: Request<pb::LeaseGrantRequest>,
    ) -> GrpcResult<pb::LeaseGrantResponse> {
        self.server.auth_check(r.metadata(), Need::Token).await?;
        let r = r.into_inner();
        let id = if r.id != 0 {
            r.id
        } else {
            self.server.new_lease_id()
        };
        let op = Op::LeaseGrant(LeaseOp {
            id,
            ttl: r.ttl.max(self.lease_ttl_min()),
            now_ms: now_ms(),
        });
        match self.server.propose(op).await? {
            (Applied::LeaseGrant { id, ttl }, rev) => Ok(Response::new(pb::LeaseGrantResponse {
                header: Some(self.server.header(rev)),
                id,
                ttl,
                error: String::new(),
            })),
            _ => Err(ServerError::unexpected_apply().status()),
        }
    }

    async fn lease_revoke(
        &self,
        r: Request<pb::LeaseRevokeRequest>,
    ) -> GrpcResult<pb::LeaseRevokeResponse> {
        self.server
            .auth_check(r.metadata(), Need::LeaseRevoke(r.get_ref().id))
            .await?;
        let id = r.into_inner().id;
        let op = Op::LeaseRevoke(LeaseOp {
            id,
            ttl: 0,
            now_ms: now_ms(),
        });
        let (_, rev) = self.server.propose(op).await?;
        Ok(Response::new(pb::LeaseRevokeResponse {
            header: Some(self.server.header(rev)),
        }))
    }

    type LeaseKeepAliveStream = BoxStream<pb::LeaseKeepAliveResponse>;

    async fn lease_keep_alive(
        &self,
        r: Request<tonic::Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> GrpcResult<Self::LeaseKeepAliveStream> {
        let mut require_leader = RequireLeader::check(&self.server, r.metadata())?;
        let mut inbound = r.into_inner();
        let (tx, rx) = mpsc::channel(KEEPALIVE_QUEUE_MAX);
        let svc = self.clone();
        tokio::spawn(async move {
            loop {
                let req = tokio::select! {
                    req = inbound.next() => match req {
                        Some(Ok(req)) => req,
                        _ => return,
                    },
                    _ = RequireLeader::lost_if_required(&mut require_leader) => {
                        let _ = tx.send(Err(ServerError::NoLeader.status())).await;
                        return;
                    }
                };
                let resp = match svc.renew(req.id).await {
                    Ok(ttl) => pb::LeaseKeepAliveResponse {
                        header: Some(svc.server.header(svc.server.store.current_rev())),
                        id: req.id,
                        ttl,
                    },
                    // etcd answers a keep-alive for an unknown lease with TTL 0.
                    Err(ServerError::LeaseNotFound) => pb::LeaseKeepAliveResponse {
                        header: Some(svc.server.header(svc.server.store.current_rev())),
                        id: req.id,
                        ttl: 0,
                    },
                    Err(e) => {
                        let _ = tx.send(Err(e.status())).await;
                        return;
                    }
                };
                let sent = tokio::time::timeout(Duration::from_secs(10), tx.send(Ok(resp))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        r: Request<pb::LeaseTimeToLiveRequest>,
    ) -> GrpcResult<pb::LeaseTimeToLiveResponse> {
        self.server
            .auth_check(r.metadata(), Need::LeaseTimeToLive(r.get_ref().id))
            .await?;
        let r = r.into_inner();
        self.server.read_index().await?;
        let table = self
            .server
            .tables
            .leases
            .lock()
            .map_err(|_| ServerError::Internal("lease table lock".into()))?;
        let header = Some(self.server.header(self.server.store.current_rev()));
        let Some(lease) = table.leases.get(&r.id) else {
            // etcd reports an unknown (expired) lease as TTL -1.
            return Ok(Response::new(pb::LeaseTimeToLiveResponse {
                header,
                id: r.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            }));
        };
        Ok(Response::new(pb::LeaseTimeToLiveResponse {
            header,
            id: r.id,
            ttl: table
                .remaining_secs(r.id, now_ms(), self.lease_promotion())
                .unwrap_or(0),
            granted_ttl: lease.ttl,
            keys: if r.keys {
                lease.keys.iter().cloned().collect()
            } else {
                Vec::new()
            },
        }))
    }

    async fn lease_leases(
        &self,
        _r: Request<pb::LeaseLeasesRequest>,
    ) -> GrpcResult<pb::LeaseLeasesResponse> {
        self.server.read_index().await?;
        let table = self
            .server
            .tables
            .leases
            .lock()
            .map_err(|_| ServerError::Internal("lease table lock".into()))?;
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: Some(self.server.header(self.server.store.current_rev())),
            leases: table
                .leases
                .keys()
                .map(|id| pb::LeaseStatus { id: *id })
                .collect(),
        }))
    }
}
