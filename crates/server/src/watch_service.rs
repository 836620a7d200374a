//! The Watch gRPC service: one task per stream reads create/cancel/progress requests and
//! forwards the hub's events. History (a start revision in the past) is read from the store
//! up to the revision at which the watcher joined the hub; later events come from the hub.

use std::sync::Arc;

use oxcd_api::etcdserverpb::{
    watch_create_request::FilterType, watch_request::RequestUnion, watch_server::Watch,
    WatchCreateRequest, WatchRequest, WatchResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Need;
use crate::grpc::Services;
use crate::server::Server;
use crate::watch::{to_pb, HubMsg, WatchSpec, STREAM_QUEUE_MAX};

/// Events per response when replaying history.
const HISTORY_CHUNK_EVENTS: usize = 1000;

type Out = mpsc::Sender<Result<WatchResponse, Status>>;

#[tonic::async_trait]
impl Watch for Services {
    type WatchStream = ReceiverStream<Result<WatchResponse, Status>>;

    async fn watch(
        &self,
        req: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // As etcd, the stream's token is checked at every watch it creates.
        let token = crate::auth::token_of(req.metadata()).map(str::to_string);
        let inbound = req.into_inner();
        let (out_tx, out_rx) = mpsc::channel(STREAM_QUEUE_MAX);
        let server = self.server.clone();
        tokio::spawn(async move {
            let stream = server.watch.new_stream_id();
            run_stream(&server, stream, token, inbound, out_tx).await;
            server.watch.cancel_stream(stream);
        });
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }
}

async fn run_stream(
    server: &Arc<Server>,
    stream: u64,
    token: Option<String>,
    mut inbound: Streaming<WatchRequest>,
    out: Out,
) {
    let (hub_tx, mut hub_rx) = mpsc::channel::<HubMsg>(STREAM_QUEUE_MAX);
    let mut next_id: i64 = 0;
    loop {
        tokio::select! {
            msg = inbound.message() => {
                let Ok(Some(req)) = msg else { return };
                match req.request_union {
                    Some(RequestUnion::CreateRequest(c)) => {
                        let need = Need::Watch(&c);
                        let denied = server.auth_check_token(token.as_deref(), need).await.err();
                        let alive = match denied {
                            Some(e) => refuse(server, &c, e, &out).await,
                            None => create(server, stream, c, &mut next_id, &hub_tx, &out).await,
                        };
                        if !alive { return; }
                    }
                    Some(RequestUnion::CancelRequest(c)) if server.watch.cancel(stream, c.watch_id) => {
                        let resp = WatchResponse {
                            header: Some(server.header(server.store.current_rev())),
                            watch_id: c.watch_id,
                            canceled: true,
                            ..Default::default()
                        };
                        if out.send(Ok(resp)).await.is_err() { return; }
                    }
                    Some(RequestUnion::CancelRequest(_)) => {}
                    Some(RequestUnion::ProgressRequest(_)) => {
                        let resp = WatchResponse {
                            header: Some(server.header(server.store.current_rev())),
                            watch_id: -1,
                            ..Default::default()
                        };
                        if out.send(Ok(resp)).await.is_err() { return; }
                    }
                    None => {}
                }
            }
            Some(msg) = hub_rx.recv() => {
                let resp = match msg {
                    HubMsg::Replay { watch_id, from, upto, request } => {
                        if !replay(server, &request, watch_id, from, upto, &out).await {
                            return;
                        }
                        continue;
                    }
                    HubMsg::Events { watch_id, rev, events } => WatchResponse {
                        header: Some(server.header(rev)),
                        watch_id,
                        events,
                        ..Default::default()
                    },
                    HubMsg::Overflow { watch_id } => WatchResponse {
                        header: Some(server.header(server.store.current_rev())),
                        watch_id,
                        canceled: true,
                        cancel_reason: "etcdserver: watcher canceled: the client did not read events fast enough".into(),
                        ..Default::default()
                    },
                };
                if out.send(Ok(resp)).await.is_err() { return; }
            }
        }
    }
}

/// Answers a create request the caller may not make: created and canceled at once, with
/// the reason (etcd's error string). Returns false when the client went away.
async fn refuse(
    server: &Arc<Server>,
    c: &WatchCreateRequest,
    reason: crate::error::ServerError,
    out: &Out,
) -> bool {
    let resp = WatchResponse {
        header: Some(server.header(server.store.current_rev())),
        watch_id: c.watch_id,
        created: true,
        canceled: true,
        cancel_reason: reason.status_string(),
        ..Default::default()
    };
    out.send(Ok(resp)).await.is_ok()
}

/// Creates one watcher: answers `created`, replays history, then the hub takes over.
/// Returns false when the client went away.
async fn create(
    server: &Arc<Server>,
    stream: u64,
    c: WatchCreateRequest,
    next_id: &mut i64,
    hub_tx: &mpsc::Sender<HubMsg>,
    out: &Out,
) -> bool {
    let watch_id = if c.watch_id != 0 {
        c.watch_id
    } else {
        *next_id
    };
    *next_id = (*next_id).max(watch_id + 1);
    let store = &server.store;
    let compact = store.compact_rev();
    let spec = WatchSpec {
        stream,
        watch_id,
        key: c.key.clone(),
        end: c.range_end.clone(),
        prev_kv: c.prev_kv,
        no_put: c.filters.contains(&(FilterType::Noput as i32)),
        no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
    };
    let start = c.start_revision;
    let joined = server
        .watch
        .register(spec, hub_tx.clone(), || store.current_rev().max(start - 1));
    let joined = match joined {
        Ok(rev) => rev,
        Err(reason) => {
            let resp = WatchResponse {
                header: Some(server.header(store.current_rev())),
                watch_id,
                created: true,
                canceled: true,
                cancel_reason: reason.into(),
                ..Default::default()
            };
            return out.send(Ok(resp)).await.is_ok();
        }
    };
    let created = WatchResponse {
        header: Some(server.header(store.current_rev())),
        watch_id,
        created: true,
        ..Default::default()
    };
    if out.send(Ok(created)).await.is_err() {
        return false;
    }
    if start > 0 && start < compact {
        server.watch.cancel(stream, watch_id);
        let resp = WatchResponse {
            header: Some(server.header(store.current_rev())),
            watch_id,
            canceled: true,
            compact_revision: compact,
            cancel_reason: "etcdserver: mvcc: required revision has been compacted".into(),
            ..Default::default()
        };
        return out.send(Ok(resp)).await.is_ok();
    }
    if start > 0 && start <= joined {
        return replay(server, &c, watch_id, start, joined, out).await;
    }
    true
}

async fn replay(
    server: &Arc<Server>,
    c: &WatchCreateRequest,
    watch_id: i64,
    start: i64,
    upto: i64,
    out: &Out,
) -> bool {
    let mut from = start;
    while from <= upto {
        let events = match server
            .store
            .history(from, upto, HISTORY_CHUNK_EVENTS, c.prev_kv)
        {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!("watch history read failed: {e}");
                return false;
            }
        };
        let Some(last) = events.last() else { break };
        let last_rev = last.kv.mod_revision;
        let no_put = c.filters.contains(&(FilterType::Noput as i32));
        let no_delete = c.filters.contains(&(FilterType::Nodelete as i32));
        let matching: Vec<_> = events
            .iter()
            .filter(|e| covers(&c.key, &c.range_end, &e.kv.key))
            .filter(|e| match e.kind {
                oxcd_storage::EventKind::Put => !no_put,
                oxcd_storage::EventKind::Delete => !no_delete,
            })
            .map(|e| to_pb(e, c.prev_kv))
            .collect();
        if !matching.is_empty() {
            let resp = WatchResponse {
                header: Some(server.header(server.store.current_rev())),
                watch_id,
                events: matching,
                ..Default::default()
            };
            if out.send(Ok(resp)).await.is_err() {
                return false;
            }
        }
        // Chunks end on a revision boundary.
        from = last_rev + 1;
    }
    true
}

fn covers(key: &[u8], end: &[u8], k: &[u8]) -> bool {
    if end.is_empty() {
        k == key
    } else if end == [0] {
        k >= key
    } else {
        k >= key && k < end
    }
}
