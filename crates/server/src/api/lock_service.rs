//! etcd's Lock service (`v3lockpb.Lock`), as etcd's v3lock serves it: Lock runs
//! concurrency's Mutex recipe ([`crate::api::recipes`]) with the caller's lease and answers
//! with the key that holds the lock; Unlock deletes that key. A lock is lost with its lease.

use oxcd_api::etcdserverpb::ResponseHeader;
use oxcd_api::v3lockpb::lock_server::Lock;
use oxcd_api::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use tonic::{Request, Response, Status};

use crate::api::recipes::{
    as_unknown, created_at, first_created, get_key, get_op, prefix, put_op, range_kvs, waiter_key,
    Caller, ReleaseGuard,
};
use crate::api::services::{GrpcResult, Services};

/// concurrency's ErrSessionExpired: the waiter's key (its lease) went while it waited.
pub const ERR_SESSION_EXPIRED: &str = "session expired";

#[tonic::async_trait]
impl Lock for Services {
    async fn lock(&self, req: Request<LockRequest>) -> GrpcResult<LockResponse> {
        let (meta, _, r) = req.into_parts();
        let caller = Caller::new(self, &meta);
        let lease = caller.session_lease(r.lease).await.map_err(as_unknown)?;
        let (header, key) = acquire(&caller, &r.name, lease).await.map_err(as_unknown)?;
        Ok(Response::new(LockResponse {
            header: Some(header),
            key,
        }))
    }

    async fn unlock(&self, req: Request<UnlockRequest>) -> GrpcResult<UnlockResponse> {
        let (meta, _, r) = req.into_parts();
        let resp = Caller::new(self, &meta)
            .delete(&r.key)
            .await
            .map_err(as_unknown)?;
        Ok(Response::new(UnlockResponse {
            header: resp.header,
        }))
    }
}

/// concurrency's `Mutex.Lock`: put this lease's key under the name unless it is there,
/// then wait until every key created before it is gone, then make sure it is still there
/// (its lease may have expired meanwhile: then the lock is not granted).
async fn acquire(
    caller: &Caller,
    name: &[u8],
    lease: i64,
) -> Result<(ResponseHeader, Vec<u8>), Status> {
    let pfx = prefix(name);
    let my_key = waiter_key(name, lease);
    let resp = caller
        .txn(
            vec![created_at(&my_key, 0)],
            vec![put_op(&my_key, b"", lease), get_op(first_created(&pfx))],
            vec![get_op(get_key(&my_key)), get_op(first_created(&pfx))],
        )
        .await?;
    let header = resp.header.unwrap_or_default();
    let my_rev = if resp.succeeded {
        header.revision
    } else {
        range_kvs(&resp, 0)
            .first()
            .map(|kv| kv.create_revision)
            .ok_or_else(|| Status::unknown(ERR_SESSION_EXPIRED))?
    };
    let owner = range_kvs(&resp, 1).first();
    if owner.is_none_or(|kv| kv.create_revision == my_rev) {
        return Ok((header, my_key));
    }
    let guard = ReleaseGuard::new(caller, &my_key, None);
    caller.wait_deletes(&pfx, my_rev - 1).await?;
    let mine = caller.get(get_key(&my_key)).await?;
    guard.disarm();
    if mine.kvs.is_empty() {
        return Err(Status::unknown(ERR_SESSION_EXPIRED));
    }
    Ok((mine.header.unwrap_or_default(), my_key))
}
