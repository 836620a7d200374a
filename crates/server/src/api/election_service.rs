//! etcd's Election service (`v3electionpb.Election`), as etcd's v3election serves it with
//! concurrency's Election recipe ([`crate::api::recipes`]): Campaign waits to become the
//! leader (the key under the name with the lowest create revision), Proclaim changes the
//! leader's value, Resign deletes the leader's key, Leader reads it, Observe streams it.

use oxcd_api::etcdserverpb::ResponseHeader;
use oxcd_api::mvccpb::{self, KeyValue};
use oxcd_api::v3electionpb::election_server::Election;
use oxcd_api::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::api::recipes::{
    as_unknown, created_at, delete_op, first_created, get_key, get_op, prefix, prefix_end, put_op,
    range_kvs, waiter_key, Caller, Change, KeyWatch, ReleaseGuard,
};
use crate::api::services::{GrpcResult, Services};
use crate::state::watch::WatchSpec;

/// etcd's errors (v3election's ErrMissingLeaderKey, concurrency's election errors).
pub const ERR_MISSING_LEADER_KEY: &str = "\"leader\" field must be provided";
pub const ERR_NOT_LEADER: &str = "election: not leader";
pub const ERR_NO_LEADER: &str = "election: no leader";

/// Leader changes queued towards one Observe stream.
const OBSERVE_QUEUE_MAX: usize = 16;

#[tonic::async_trait]
impl Election for Services {
    async fn campaign(&self, req: Request<CampaignRequest>) -> GrpcResult<CampaignResponse> {
        let (meta, _, r) = req.into_parts();
        let caller = Caller::new(self, &meta);
        let lease = caller.session_lease(r.lease).await.map_err(as_unknown)?;
        let (header, leader) = campaign(&caller, &r.name, lease, &r.value)
            .await
            .map_err(as_unknown)?;
        Ok(Response::new(CampaignResponse {
            header: Some(header),
            leader: Some(leader),
        }))
    }

    async fn proclaim(&self, req: Request<ProclaimRequest>) -> GrpcResult<ProclaimResponse> {
        let (meta, _, r) = req.into_parts();
        let leader = r
            .leader
            .ok_or_else(|| Status::unknown(ERR_MISSING_LEADER_KEY))?;
        let header = proclaim(&Caller::new(self, &meta), &leader, &r.value)
            .await
            .map_err(as_unknown)?;
        Ok(Response::new(ProclaimResponse {
            header: Some(header),
        }))
    }

    async fn leader(&self, req: Request<LeaderRequest>) -> GrpcResult<LeaderResponse> {
        let (meta, _, r) = req.into_parts();
        let resp = Caller::new(self, &meta)
            .get(first_created(&prefix(&r.name)))
            .await
            .map_err(as_unknown)?;
        let kv = resp.kvs.into_iter().next();
        if kv.is_none() {
            return Err(Status::unknown(ERR_NO_LEADER));
        }
        Ok(Response::new(LeaderResponse {
            header: resp.header,
            kv,
        }))
    }

    type ObserveStream = ReceiverStream<Result<LeaderResponse, Status>>;

    async fn observe(&self, req: Request<LeaderRequest>) -> GrpcResult<Self::ObserveStream> {
        let (meta, _, r) = req.into_parts();
        let caller = Caller::new(self, &meta);
        let (tx, rx) = mpsc::channel(OBSERVE_QUEUE_MAX);
        tokio::spawn(async move {
            if let Err(e) = observe(&caller, &r.name, &tx).await {
                let _ = tx.send(Err(as_unknown(e))).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn resign(&self, req: Request<ResignRequest>) -> GrpcResult<ResignResponse> {
        let (meta, _, r) = req.into_parts();
        let leader = r
            .leader
            .ok_or_else(|| Status::unknown(ERR_MISSING_LEADER_KEY))?;
        let resp = Caller::new(self, &meta)
            .txn(
                vec![created_at(&leader.key, leader.rev)],
                vec![delete_op(&leader.key)],
                vec![],
            )
            .await
            .map_err(as_unknown)?;
        Ok(Response::new(ResignResponse {
            header: resp.header,
        }))
    }
}

/// concurrency's `Election.Campaign`: put this lease's key with the value (or take over the
/// one already there, proclaiming the new value), then wait until every key created before
/// it is gone. A campaign that ends early (an error, the client canceling) resigns.
async fn campaign(
    caller: &Caller,
    name: &[u8],
    lease: i64,
    value: &[u8],
) -> Result<(ResponseHeader, LeaderKey), Status> {
    let key = waiter_key(name, lease);
    let resp = caller
        .txn(
            vec![created_at(&key, 0)],
            vec![put_op(&key, value, lease)],
            vec![get_op(get_key(&key))],
        )
        .await?;
    let header = resp.header.unwrap_or_default();
    let mut leader = LeaderKey {
        name: name.to_vec(),
        key: key.clone(),
        rev: header.revision,
        lease,
    };
    if !resp.succeeded {
        let kv = range_kvs(&resp, 0)
            .first()
            .ok_or_else(|| Status::unknown(ERR_NOT_LEADER))?;
        leader.rev = kv.create_revision;
        if kv.value != value {
            if let Err(e) = proclaim(caller, &leader, value).await {
                caller.release_later(key, Some(leader.rev));
                return Err(e);
            }
        }
    }
    let guard = ReleaseGuard::new(caller, &key, Some(leader.rev));
    caller.wait_deletes(&prefix(name), leader.rev - 1).await?;
    guard.disarm();
    Ok((header, leader))
}

/// concurrency's `Election.Proclaim`: a new value for the leader's key, if it still leads.
async fn proclaim(
    caller: &Caller,
    leader: &LeaderKey,
    value: &[u8],
) -> Result<ResponseHeader, Status> {
    let resp = caller
        .txn(
            vec![created_at(&leader.key, leader.rev)],
            vec![put_op(&leader.key, value, leader.lease)],
            vec![],
        )
        .await?;
    if !resp.succeeded {
        return Err(Status::unknown(ERR_NOT_LEADER));
    }
    Ok(resp.header.unwrap_or_default())
}

type ObserveTx = mpsc::Sender<Result<LeaderResponse, Status>>;

/// concurrency's `Election.Observe`: the leader now, then every new value and every new
/// leader, until the client goes away.
async fn observe(caller: &Caller, name: &[u8], tx: &ObserveTx) -> Result<(), Status> {
    let server = &caller.svc.server;
    let pfx = prefix(name);
    loop {
        let (header, kv) = match wait_leader(caller, &pfx, tx).await? {
            Some(found) => found,
            None => return Ok(()),
        };
        let mut sent_rev = kv.mod_revision;
        let key = kv.key.clone();
        if send(tx, header, kv).await.is_err() {
            return Ok(());
        }
        let spec = WatchSpec {
            key: key.clone(),
            ..Default::default()
        };
        let mut watch = KeyWatch::open(&server.watch, &server.store, spec)?;
        // What changed between the read and the watcher's start.
        let mut change = Change::Reread;
        loop {
            let deleted = match change {
                Change::Events(rev, events) => {
                    let mut deleted = false;
                    for e in events.iter() {
                        if e.r#type == mvccpb::event::EventType::Delete as i32 {
                            deleted = true;
                            break;
                        }
                        if let Some(kv) = e.kv.clone() {
                            sent_rev = kv.mod_revision;
                            if send(tx, server.header(rev), kv).await.is_err() {
                                return Ok(());
                            }
                        }
                    }
                    deleted
                }
                Change::Reread => match local_kv(caller, &key)? {
                    None => true,
                    Some(kv) if kv.mod_revision > sent_rev => {
                        sent_rev = kv.mod_revision;
                        let h = server.header(kv.mod_revision);
                        if send(tx, h, kv).await.is_err() {
                            return Ok(());
                        }
                        false
                    }
                    Some(_) => false,
                },
            };
            if deleted {
                break;
            }
            change = tokio::select! {
                c = watch.next(&server.store) => c?,
                _ = tx.closed() => return Ok(()),
            };
        }
    }
}

/// The current leader under `pfx`, waiting for one when there is none; None when the
/// client went away meanwhile.
async fn wait_leader(
    caller: &Caller,
    pfx: &[u8],
    tx: &ObserveTx,
) -> Result<Option<(ResponseHeader, KeyValue)>, Status> {
    let server = &caller.svc.server;
    let spec = WatchSpec {
        key: pfx.to_vec(),
        end: prefix_end(pfx),
        ..Default::default()
    };
    let mut watch: Option<KeyWatch> = None;
    loop {
        let resp = caller.get(first_created(pfx)).await?;
        if let Some(kv) = resp.kvs.into_iter().next() {
            let mut header = resp.header.unwrap_or_default();
            if watch.is_some() {
                // As etcd: a leader seen arriving is reported at its own revision.
                header.revision = kv.mod_revision;
            }
            return Ok(Some((header, kv)));
        }
        match &mut watch {
            // Open the watcher, then read again: a put is in that read or delivered.
            None => watch = Some(KeyWatch::open(&server.watch, &server.store, spec.clone())?),
            Some(w) => {
                tokio::select! {
                    c = w.next(&server.store) => { c?; }
                    _ = tx.closed() => return Ok(None),
                }
            }
        }
    }
}

/// `key` as this member's store has it now.
fn local_kv(caller: &Caller, key: &[u8]) -> Result<Option<KeyValue>, Status> {
    let found = caller
        .svc
        .server
        .store
        .range(key, &[], oxcd_storage::RangeOptions::default())
        .map_err(|e| crate::error::ServerError::from(e).status())?;
    Ok(found.kvs.into_iter().next())
}

async fn send(tx: &ObserveTx, header: ResponseHeader, kv: KeyValue) -> Result<(), ()> {
    let resp = LeaderResponse {
        header: Some(header),
        kv: Some(kv),
    };
    tx.send(Ok(resp)).await.map_err(drop)
}
