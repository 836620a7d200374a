//! etcd's concurrency recipes (clientv3/concurrency: Mutex, Election), run inside the
//! server for the Lock and Election services as etcd's v3lock and v3election do. Every
//! step is a KV request through the same service code a gRPC client reaches (with the
//! caller's metadata, so auth applies to the caller), and waiting for a key to go is a
//! watcher on the watch hub.
//!
//! The ordering rule of both recipes: a waiter's key is `<name>/<lease in hex>`, put with
//! its lease; the owner is the key under `<name>/` with the lowest create revision; a waiter
//! waits until every key created before its own is gone.

use std::sync::Arc;

use oxcd_api::etcdserverpb::kv_server::Kv;
use oxcd_api::etcdserverpb::lease_server::Lease;
use oxcd_api::etcdserverpb::{self as pb, compare, range_request, request_op, response_op};
use oxcd_api::mvccpb::KeyValue;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

use crate::api::services::Services;
use crate::state::watch::{StreamHandle, WatchHub, WatchSpec};

/// The TTL of the lease a Lock or Campaign without one gets (concurrency's session default).
pub const SESSION_TTL_SECS: i64 = 60;
/// Linearizable reads of a recipe tried this many times while there is no leader.
const READ_TRIES_MAX: u32 = 3;
const READ_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

/// The key one lease holds under `name` (`<name>/<lease hex>`).
pub fn waiter_key(name: &[u8], lease: i64) -> Vec<u8> {
    let mut k = prefix(name);
    k.extend_from_slice(format!("{lease:x}").as_bytes());
    k
}

/// `<name>/`.
pub fn prefix(name: &[u8]) -> Vec<u8> {
    let mut k = name.to_vec();
    k.push(b'/');
    k
}

/// etcd's GetPrefixRangeEnd: the first key after every key that starts with `p`.
pub fn prefix_end(p: &[u8]) -> Vec<u8> {
    let mut end = p.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// `create_revision(key) == rev`.
pub fn created_at(key: &[u8], rev: i64) -> pb::Compare {
    pb::Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Create as i32,
        key: key.to_vec(),
        target_union: Some(compare::TargetUnion::CreateRevision(rev)),
        ..Default::default()
    }
}

pub fn put_op(key: &[u8], value: &[u8], lease: i64) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestPut(pb::PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            ..Default::default()
        })),
    }
}

pub fn get_op(r: pb::RangeRequest) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestRange(r)),
    }
}

pub fn delete_op(key: &[u8]) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            pb::DeleteRangeRequest {
                key: key.to_vec(),
                ..Default::default()
            },
        )),
    }
}

pub fn get_key(key: &[u8]) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    }
}

/// The first key created under `pfx` (concurrency's WithFirstCreate).
pub fn first_created(pfx: &[u8]) -> pb::RangeRequest {
    pb::RangeRequest {
        key: pfx.to_vec(),
        range_end: prefix_end(pfx),
        limit: 1,
        sort_order: range_request::SortOrder::Ascend as i32,
        sort_target: range_request::SortTarget::Create as i32,
        ..Default::default()
    }
}

/// The last key created under `pfx` at or before `max_create_rev` (WithLastCreate and
/// WithMaxCreateRev).
pub fn last_created_before(pfx: &[u8], max_create_rev: i64) -> pb::RangeRequest {
    pb::RangeRequest {
        key: pfx.to_vec(),
        range_end: prefix_end(pfx),
        limit: 1,
        sort_order: range_request::SortOrder::Descend as i32,
        sort_target: range_request::SortTarget::Create as i32,
        max_create_revision: max_create_rev,
        ..Default::default()
    }
}

/// The key-values of the `i`th response of a txn, if it is a range.
pub fn range_kvs(resp: &pb::TxnResponse, i: usize) -> &[KeyValue] {
    match resp.responses.get(i).and_then(|r| r.response.as_ref()) {
        Some(response_op::Response::ResponseRange(r)) => &r.kvs,
        _ => &[],
    }
}

/// etcd's Lock and Election servers reach the KV through an in-process client, which
/// hands its errors back as plain errors: the caller sees their text with code Unknown.
pub fn as_unknown(s: Status) -> Status {
    Status::unknown(s.message())
}

/// A request carrying the caller's metadata (its auth token).
fn with_meta<T>(meta: &MetadataMap, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    *r.metadata_mut() = meta.clone();
    r
}

/// The caller's side of the recipes: KV and lease requests as the caller.
#[derive(Clone)]
pub struct Caller {
    pub svc: Services,
    pub meta: MetadataMap,
}

impl Caller {
    pub fn new(svc: &Services, meta: &MetadataMap) -> Caller {
        Caller {
            svc: svc.clone(),
            meta: meta.clone(),
        }
    }

    pub async fn txn(
        &self,
        compare: Vec<pb::Compare>,
        success: Vec<pb::RequestOp>,
        failure: Vec<pb::RequestOp>,
    ) -> Result<pb::TxnResponse, Status> {
        let t = pb::TxnRequest {
            compare,
            success,
            failure,
        };
        Ok(Kv::txn(&self.svc, with_meta(&self.meta, t))
            .await?
            .into_inner())
    }

    /// A linearizable read, tried again while the cluster is between leaders (etcd's server
    /// retries its ReadIndex for the same reason).
    pub async fn get(&self, r: pb::RangeRequest) -> Result<pb::RangeResponse, Status> {
        let mut tries = 1;
        loop {
            match Kv::range(&self.svc, with_meta(&self.meta, r.clone())).await {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(e) if e.code() == tonic::Code::Unavailable && tries < READ_TRIES_MAX => {
                    tries += 1;
                    tokio::time::sleep(READ_RETRY_PAUSE).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A read of this member's own state (serializable): enough where the caller's own key is
    /// applied here already, as every key created before it is.
    pub async fn get_local(&self, mut r: pb::RangeRequest) -> Result<pb::RangeResponse, Status> {
        r.serializable = true;
        Ok(Kv::range(&self.svc, with_meta(&self.meta, r))
            .await?
            .into_inner())
    }

    pub async fn delete(&self, key: &[u8]) -> Result<pb::DeleteRangeResponse, Status> {
        let d = pb::DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        };
        Ok(Kv::delete_range(&self.svc, with_meta(&self.meta, d))
            .await?
            .into_inner())
    }

    /// The caller's lease, or a new one of [`SESSION_TTL_SECS`] when it gave none (as
    /// concurrency.NewSession grants one; nobody keeps it alive, so it expires).
    pub async fn session_lease(&self, lease: i64) -> Result<i64, Status> {
        if lease != 0 {
            return Ok(lease);
        }
        let g = pb::LeaseGrantRequest {
            ttl: SESSION_TTL_SECS,
            id: 0,
        };
        Ok(Lease::lease_grant(&self.svc, with_meta(&self.meta, g))
            .await?
            .into_inner()
            .id)
    }

    /// Waits until every key under `pfx` created at or before `max_create_rev` is gone
    /// (concurrency's waitDeletes); returns the header of the read that found none. The
    /// caller's key, created at `max_create_rev + 1`, is applied here, so this member's own
    /// state holds every key created before it: a stale read can only show a key that is
    /// gone elsewhere, which makes the wait longer, never shorter. The caller confirms what
    /// it then holds with a linearizable read.
    pub async fn wait_deletes(
        &self,
        pfx: &[u8],
        max_create_rev: i64,
    ) -> Result<pb::ResponseHeader, Status> {
        loop {
            let resp = self
                .get_local(last_created_before(pfx, max_create_rev))
                .await?;
            let Some(kv) = resp.kvs.first() else {
                return Ok(resp.header.unwrap_or_default());
            };
            self.wait_gone(&kv.key, kv.create_revision).await?;
        }
    }

    /// Waits until `key`, created at `create_rev`, is deleted (or replaced).
    pub async fn wait_gone(&self, key: &[u8], create_rev: i64) -> Result<(), Status> {
        let server = &self.svc.server;
        let spec = WatchSpec {
            key: key.to_vec(),
            ..Default::default()
        };
        let mut watch = KeyWatch::open(&server.watch, &server.store, spec)?;
        loop {
            // Read after the watcher is registered: a delete is either in this read or
            // delivered to the watcher.
            let kvs = server
                .store
                .range(key, &[], oxcd_storage::RangeOptions::default())
                .map_err(|e| crate::error::ServerError::from(e).status())?
                .kvs;
            if kvs
                .first()
                .is_none_or(|kv| kv.create_revision != create_rev)
            {
                return Ok(());
            }
            watch.next(&server.store).await?;
        }
    }

    /// Deletes `key` (if it was created at `created`, when given) on a task of its own: for
    /// a waiter that gives up, however it ends.
    pub fn release_later(&self, key: Vec<u8>, created: Option<i64>) {
        let caller = self.clone();
        tokio::spawn(async move {
            let res = match created {
                Some(rev) => caller
                    .txn(vec![created_at(&key, rev)], vec![delete_op(&key)], vec![])
                    .await
                    .map(drop),
                None => caller.delete(&key).await.map(drop),
            };
            if let Err(e) = res {
                tracing::warn!(
                    "cannot release {:?}: {}",
                    String::from_utf8_lossy(&key),
                    e.message()
                );
            }
        });
    }
}

/// Releases a waiter's key if the waiter ends before it is disarmed (an error, or the
/// client canceling the call, which drops the handler), as concurrency's recipes release
/// their key when a wait fails.
pub struct ReleaseGuard {
    caller: Caller,
    key: Vec<u8>,
    created: Option<i64>,
    armed: bool,
}

impl ReleaseGuard {
    pub fn new(caller: &Caller, key: &[u8], created: Option<i64>) -> ReleaseGuard {
        ReleaseGuard {
            caller: caller.clone(),
            key: key.to_vec(),
            created,
            armed: true,
        }
    }

    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for ReleaseGuard {
    fn drop(&mut self) {
        if self.armed {
            self.caller
                .release_later(std::mem::take(&mut self.key), self.created);
        }
    }
}

/// What a [`KeyWatch`] saw.
pub enum Change {
    /// The events of one revision, in order.
    Events(i64, Arc<Vec<oxcd_api::mvccpb::Event>>),
    /// The watcher fell behind and rejoined: read the store to see what changed.
    Reread,
}

/// One watcher on the hub, synced from the revision it was opened at; it only says that
/// something may have changed, the caller reads the store to see what.
pub struct KeyWatch {
    hub: Arc<WatchHub>,
    handle: StreamHandle,
}

/// The watcher's ID in its own stream.
const WATCH_ID: i64 = 0;

impl KeyWatch {
    pub fn open(
        hub: &Arc<WatchHub>,
        store: &oxcd_storage::Store,
        spec: WatchSpec,
    ) -> Result<KeyWatch, Status> {
        // A server-side recipe, not a client connection: no per-connection bound (0).
        let handle = hub.open_stream(0);
        let watch = KeyWatch {
            hub: hub.clone(),
            handle,
        };
        let rev = store.current_rev();
        watch
            .hub
            .register(watch.handle.id, WATCH_ID, spec, rev, || store.current_rev())
            .map_err(|e| Status::resource_exhausted(e.to_string()))?;
        Ok(watch)
    }

    /// Waits for the next revision's events, or for the hub to say the watcher fell behind
    /// (it then rejoins at the current revision and the caller rereads the store).
    pub async fn next(&mut self, store: &oxcd_storage::Store) -> Result<Change, Status> {
        tokio::select! {
            msg = self.handle.rx.recv() => match msg {
                Some(m) => {
                    self.handle.taken(&m);
                    Ok(Change::Events(m.rev, m.events))
                }
                None => Err(Status::unavailable("watch stream closed")),
            },
            _ = self.handle.wake.notified() => {
                let rev = store.current_rev();
                self.hub.resync(self.handle.id, WATCH_ID, rev, || store.current_rev());
                Ok(Change::Reread)
            }
        }
    }
}

impl Drop for KeyWatch {
    fn drop(&mut self) {
        self.hub.close_stream(self.handle.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_etcds() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(waiter_key(b"lk", 0x694d), b"lk/694d");
    }
}
