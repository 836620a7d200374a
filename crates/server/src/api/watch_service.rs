//! The Watch gRPC service: one task per stream reads create/cancel/progress requests,
//! forwards the hub's live events, and catches unsynced watchers (a start revision in the
//! past, or a client that fell behind) up from the store in bounded chunks before they
//! rejoin the hub (`watch.rs`). Request handling follows etcd 3.4's `v3rpc/watch.go`:
//! watch IDs, their errors, progress, fragments.
//!
//! What the stream task keeps per watcher is `sent_rev`: every event up to it was sent.
//! Anything older that still arrives from the hub is dropped, so a watcher that rejoins
//! never sees a revision twice, and catch-up always starts right after it, so none is
//! skipped.

use std::collections::HashMap;
use std::sync::Arc;

use oxcd_api::etcdserverpb::{
    watch_create_request::FilterType, watch_request::RequestUnion, watch_server::Watch,
    WatchCreateRequest, WatchRequest, WatchResponse,
};
use oxcd_api::mvccpb;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::api::server::Server;
use crate::api::services::Services;
use crate::state::auth::Need;
use crate::state::watch::{to_pb, HubMsg, RegisterError, StreamHandle, WatchSpec};

/// Store events read per catch-up step, at most and at first (a step never splits a
/// revision). The step size doubles while steps stay under [`CATCHUP_CHUNK_BYTES_MAX`] of
/// keys and values and halves when one goes over, so large values make small steps.
const CATCHUP_CHUNK_EVENTS_MAX: usize = 1000;
const CATCHUP_CHUNK_EVENTS_FIRST: usize = 64;
const CATCHUP_CHUNK_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Responses queued per stream towards the client (then HTTP/2 flow control).
const OUT_QUEUE_MAX: usize = 16;

/// etcd's allowance for gRPC framing on top of `--max-request-bytes`: responses larger
/// than both are split into fragments for watchers that asked for them.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// etcd's errors from `mvcc.watchStream.Watch`.
const ERR_EMPTY_RANGE: &str = "mvcc: watcher range is empty";
const ERR_DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";

type Out = mpsc::Sender<Result<WatchResponse, Status>>;

/// Election timeouts in a row without a leader after which a stream that requires one
/// ends (etcd's `maxNoLeaderCnt`).
const NO_LEADER_TIMEOUTS_MAX: u32 = 3;

/// etcd's `WithRequireLeader`: a stream opened with the metadata `hasleader: true` is
/// refused when this member knows no leader, and ends with "etcdserver: no leader" once it
/// has had none for [`NO_LEADER_TIMEOUTS_MAX`] election timeouts, so that the client moves
/// to a member that is part of a working cluster instead of waiting on a cut-off one.
pub(crate) struct RequireLeader {
    server: Arc<Server>,
    tick: tokio::time::Interval,
    without_leader: u32,
}

impl RequireLeader {
    /// `Ok(None)` when the client did not ask; `Err` when it did and there is no leader.
    pub(crate) fn check(
        server: &Arc<Server>,
        meta: &tonic::metadata::MetadataMap,
    ) -> Result<Option<RequireLeader>, Status> {
        let asked = meta.get("hasleader").and_then(|v| v.to_str().ok()) == Some("true");
        if !asked {
            return Ok(None);
        }
        if server
            .status
            .leader
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0
        {
            return Err(crate::error::ServerError::NoLeader.status());
        }
        let every = std::time::Duration::from_millis(server.cfg.election_ms.max(1));
        Ok(Some(RequireLeader {
            server: server.clone(),
            tick: tokio::time::interval_at(tokio::time::Instant::now() + every, every),
            without_leader: 0,
        }))
    }

    /// Resolves once the member has been without a leader for too long (cancel-safe).
    async fn lost(&mut self) {
        loop {
            self.tick.tick().await;
            let leader = self
                .server
                .status
                .leader
                .load(std::sync::atomic::Ordering::Relaxed);
            self.without_leader = if leader == 0 {
                self.without_leader + 1
            } else {
                0
            };
            if self.without_leader >= NO_LEADER_TIMEOUTS_MAX {
                return;
            }
        }
    }

    /// Resolves when a required leader is lost; never when none was required.
    pub(crate) async fn lost_if_required(monitor: &mut Option<RequireLeader>) {
        match monitor {
            Some(m) => m.lost().await,
            None => std::future::pending().await,
        }
    }
}

#[tonic::async_trait]
impl Watch for Services {
    type WatchStream = ReceiverStream<Result<WatchResponse, Status>>;

    async fn watch(
        &self,
        req: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let require_leader = RequireLeader::check(&self.server, req.metadata())?;
        // As etcd, the stream's token is checked at every watch it creates.
        let token = crate::api::auth_check::token_of(req.metadata()).map(str::to_string);
        let conn = req
            .extensions()
            .get::<crate::api::conn_gate::ConnInfo>()
            .map_or(0, |c| c.id);
        let inbound = req.into_inner();
        let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE_MAX);
        let server = self.server.clone();
        tokio::spawn(async move {
            let handle = server.watch.open_stream(conn);
            let id = handle.id;
            let mut stream = WatchStreamTask {
                server: server.clone(),
                token,
                out: out_tx,
                hub: handle,
                watchers: HashMap::new(),
                next_id: 0,
                progress_pending: false,
                catchup_events: CATCHUP_CHUNK_EVENTS_FIRST,
                fragment_bytes: server.cfg.request_bytes_max + GRPC_OVERHEAD_BYTES,
            };
            stream.run(inbound, require_leader).await;
            server.watch.close_stream(id);
        });
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }
}

/// One watcher as its stream task sees it.
struct Local {
    spec: WatchSpec,
    serial: u64,
    /// Every event up to this revision has been sent.
    sent_rev: i64,
    fragment: bool,
    progress_notify: bool,
    /// Events went out since the last progress tick (etcd elides the next notification).
    sent_since_tick: bool,
}

struct WatchStreamTask {
    server: Arc<Server>,
    token: Option<String>,
    out: Out,
    hub: StreamHandle,
    watchers: HashMap<i64, Local>,
    next_id: i64,
    /// A progress request waits until no watcher of the stream is catching up.
    progress_pending: bool,
    /// Store events per catch-up step (see [`CATCHUP_CHUNK_EVENTS_MAX`]).
    catchup_events: usize,
    fragment_bytes: usize,
}

/// The client went away: stop the stream.
struct Gone;

/// What the stream task does next.
enum Next {
    Request(WatchRequest),
    Hub(HubMsg),
    CatchUp,
    Tick,
}

type Step = Result<(), Gone>;

impl WatchStreamTask {
    async fn run(
        &mut self,
        mut inbound: Streaming<WatchRequest>,
        mut require_leader: Option<RequireLeader>,
    ) {
        let interval = self.server.cfg.watch_progress_notify_interval;
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        let mut catching_up = false;
        loop {
            let next = tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(req)) => Next::Request(req),
                    _ => return,
                },
                Some(msg) = self.hub.rx.recv() => Next::Hub(msg),
                _ = self.hub.wake.notified() => Next::CatchUp,
                _ = ticker.tick() => Next::Tick,
                _ = std::future::ready(()), if catching_up => Next::CatchUp,
                _ = RequireLeader::lost_if_required(&mut require_leader) => {
                    let no_leader = crate::error::ServerError::NoLeader.status();
                    let _ = self.out.send(Err(no_leader)).await;
                    return;
                }
            };
            let step = match next {
                Next::Request(req) => self.request(req).await,
                Next::Hub(msg) => self.forward(msg).await,
                Next::Tick => self.progress_tick().await,
                Next::CatchUp => self.catch_up_step().await.map(|more| catching_up = more),
            };
            if step.is_err() {
                return;
            }
            if self.progress_pending && self.server.watch.unsynced(self.hub.id).is_empty() {
                if let Err(Gone) = self.progress_response().await {
                    return;
                }
            }
        }
    }

    async fn send(&self, resp: WatchResponse) -> Step {
        self.out.send(Ok(resp)).await.map_err(|_| Gone)
    }

    fn header(&self, rev: i64) -> Option<oxcd_api::etcdserverpb::ResponseHeader> {
        Some(self.server.header(rev))
    }

    async fn request(&mut self, req: WatchRequest) -> Step {
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => {
                let denied = self
                    .server
                    .auth_check_token(self.token.as_deref(), Need::Watch(&c))
                    .await
                    .err();
                match denied {
                    Some(e) => {
                        let reason = e.status_string();
                        self.refuse(c.watch_id, reason).await
                    }
                    None => self.create(c).await,
                }
            }
            Some(RequestUnion::CancelRequest(c)) => {
                // etcd answers only the cancel of a watcher that exists.
                if self.watchers.remove(&c.watch_id).is_none() {
                    return Ok(());
                }
                self.server.watch.cancel(self.hub.id, c.watch_id);
                let resp = WatchResponse {
                    header: self.header(self.server.store.current_rev()),
                    watch_id: c.watch_id,
                    canceled: true,
                    ..Default::default()
                };
                self.send(resp).await
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                // Answered by the loop once no watcher of the stream is catching up.
                self.progress_pending = true;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// etcd 3.4's answer to a progress request: watch ID -1 and the revision up to which
    /// this stream has been sent every event. The hub's queue is drained first, so nothing
    /// at or below that revision can follow it.
    async fn progress_response(&mut self) -> Step {
        self.progress_pending = false;
        let rev = self.drain().await?;
        let resp = WatchResponse {
            header: self.header(rev),
            watch_id: -1,
            ..Default::default()
        };
        self.send(resp).await
    }

    /// Forwards everything queued by the hub; returns the revision the hub had reached.
    async fn drain(&mut self) -> Result<i64, Gone> {
        let rev = self.server.watch.notified_rev();
        while let Ok(msg) = self.hub.rx.try_recv() {
            self.forward(msg).await?;
        }
        Ok(rev)
    }

    /// etcd's periodic progress notification (`--experimental-watch-progress-notify-interval`)
    /// for synced watchers that asked for it and got no events since the last tick.
    async fn progress_tick(&mut self) -> Step {
        if !self.watchers.values().any(|w| w.progress_notify) {
            return Ok(());
        }
        let rev = self.drain().await?;
        let unsynced = self.server.watch.unsynced(self.hub.id);
        let mut due: Vec<i64> = Vec::new();
        for (id, w) in self.watchers.iter_mut() {
            if w.progress_notify && !w.sent_since_tick && !unsynced.contains(id) {
                due.push(*id);
            }
            w.sent_since_tick = false;
        }
        due.sort_unstable();
        for id in due {
            let resp = WatchResponse {
                header: self.header(rev),
                watch_id: id,
                ..Default::default()
            };
            self.send(resp).await?;
        }
        Ok(())
    }

    /// Created and canceled at once, with etcd's reason.
    async fn refuse(&self, watch_id: i64, reason: String) -> Step {
        let resp = WatchResponse {
            header: self.header(self.server.store.current_rev()),
            watch_id,
            created: true,
            canceled: true,
            cancel_reason: reason,
            ..Default::default()
        };
        self.send(resp).await
    }

    async fn create(&mut self, c: WatchCreateRequest) -> Step {
        let store = self.server.store.clone();
        // As etcd: an empty key is "\0"; a range end of "\0" means every key from `key`.
        let key = if c.key.is_empty() { vec![0] } else { c.key };
        if !c.range_end.is_empty() && c.range_end != [0] && key >= c.range_end {
            return self.refuse(-1, ERR_EMPTY_RANGE.into()).await;
        }
        let watch_id = if c.watch_id != 0 {
            if self.watchers.contains_key(&c.watch_id) {
                return self.refuse(-1, ERR_DUPLICATE_ID.into()).await;
            }
            c.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        };
        let spec = WatchSpec {
            key,
            end: c.range_end,
            prev_kv: c.prev_kv,
            no_put: c.filters.contains(&(FilterType::Noput as i32)),
            no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
        };
        let start = c.start_revision;
        let registered = {
            let current = store.current_rev();
            // A start revision of 0 (or in the future): from the next revision on.
            let after = if start <= 0 || start > current {
                current.max(start - 1)
            } else {
                start - 1
            };
            self.server
                .watch
                .register(self.hub.id, watch_id, spec.clone(), after, || {
                    store.current_rev()
                })
                .map(|(serial, rev)| (serial, rev, after))
        };
        let (serial, rev, after) = match registered {
            Ok(r) => r,
            Err(RegisterError::StreamGone) => return Err(Gone),
            Err(e) => return self.refuse(-1, e.to_string()).await,
        };
        self.watchers.insert(
            watch_id,
            Local {
                spec,
                serial,
                sent_rev: after,
                fragment: c.fragment,
                progress_notify: c.progress_notify,
                sent_since_tick: false,
            },
        );
        let created = WatchResponse {
            header: self.header(rev),
            watch_id,
            created: true,
            ..Default::default()
        };
        self.send(created).await
    }

    /// Sends one revision from the hub, unless it was already sent or its watcher is gone.
    async fn forward(&mut self, msg: HubMsg) -> Step {
        self.hub.taken(&msg);
        let Some(w) = self.watchers.get_mut(&msg.watch_id) else {
            return Ok(());
        };
        if w.serial != msg.serial || msg.rev <= w.sent_rev {
            return Ok(());
        }
        w.sent_rev = msg.rev;
        w.sent_since_tick = true;
        let fragment = w.fragment;
        let mut events = Arc::unwrap_or_clone(msg.events);
        if w.spec.prev_kv {
            // A delete's event carries no previous value (the apply does not read the values
            // it deletes): read it here, for the watchers that ask, as etcd's stream does.
            let store = &self.server.store;
            for pb in events.iter_mut().filter(|pb| pb.prev_kv.is_none()) {
                read_prev(store, pb);
            }
        }
        let resp = WatchResponse {
            header: self.header(msg.rev),
            watch_id: msg.watch_id,
            events,
            ..Default::default()
        };
        self.send_events(resp, fragment).await
    }

    /// Sends events, split into fragments when the watcher asked for them and the response
    /// is larger than `--max-request-bytes` (etcd's `sendFragments`).
    async fn send_events(&self, resp: WatchResponse, fragment: bool) -> Step {
        if !fragment || resp.events.len() < 2 || resp.encoded_len() < self.fragment_bytes {
            return self.send(resp).await;
        }
        let mut events = resp.events.into_iter().peekable();
        let base = WatchResponse {
            events: Vec::new(),
            fragment: true,
            ..resp
        };
        while events.peek().is_some() {
            let mut cur = base.clone();
            let mut size = cur.encoded_len();
            while let Some(e) = events.peek() {
                // Field 11, length-delimited: one tag byte, the length, the event.
                let len = e.encoded_len();
                let grown = size + 1 + prost::encoding::encoded_len_varint(len as u64) + len;
                if !cur.events.is_empty() && grown >= self.fragment_bytes {
                    break;
                }
                size = grown;
                cur.events.extend(events.next());
            }
            cur.fragment = events.peek().is_some();
            self.send(cur).await?;
        }
        Ok(())
    }

    /// Catches up one unsynced watcher by one chunk, or lets it rejoin the hub. Returns
    /// whether more catching up is left.
    async fn catch_up_step(&mut self) -> Result<bool, Gone> {
        let unsynced = self.server.watch.unsynced(self.hub.id);
        let Some(&id) = unsynced.iter().find(|id| self.watchers.contains_key(id)) else {
            return Ok(false);
        };
        let store = self.server.store.clone();
        let Some(w) = self.watchers.get(&id) else {
            return Ok(true);
        };
        let from = w.sent_rev + 1;
        let current = store.current_rev();
        if from <= current {
            self.send_history(id, from, current).await?;
            return Ok(true);
        }
        // Up to date: rejoin the hub, then send what was applied meanwhile.
        let Some(upto) = self
            .server
            .watch
            .resync(self.hub.id, id, from - 1, || store.current_rev())
        else {
            return Ok(true);
        };
        while self.watchers.get(&id).is_some_and(|w| w.sent_rev < upto) {
            let from = self.watchers.get(&id).map_or(upto, |w| w.sent_rev + 1);
            self.send_history(id, from, upto).await?;
        }
        Ok(unsynced.len() > 1)
    }

    /// Sends watcher `id` its events in `[from, to]` from the store, one step's worth
    /// (`catchup_events` store events), and advances its `sent_rev`. A compacted `from`
    /// cancels the watcher with the compact revision, as etcd does.
    async fn send_history(&mut self, id: i64, from: i64, to: i64) -> Step {
        let chunk = self.catchup_events;
        let store = self.server.store.clone();
        let compact = store.compact_rev();
        let read = if from < compact {
            Err(oxcd_storage::MvccError::Compacted)
        } else {
            store.history(from, to, chunk)
        };
        let events = match read {
            Ok(ev) => ev,
            Err(oxcd_storage::MvccError::Compacted) => return self.compacted(id).await,
            Err(e) => {
                tracing::warn!("watch history read failed: {e}");
                let status = crate::error::ServerError::from(e).status();
                let _ = self.out.send(Err(status)).await;
                return Err(Gone);
            }
        };
        let bytes: usize = events
            .iter()
            .map(|e| e.kv.key.len() + e.kv.value.len())
            .sum();
        self.catchup_events = if bytes > CATCHUP_CHUNK_BYTES_MAX {
            (chunk / 2).max(1)
        } else if bytes < CATCHUP_CHUNK_BYTES_MAX / 2 {
            (chunk * 2).min(CATCHUP_CHUNK_EVENTS_MAX)
        } else {
            chunk
        };
        let Some(w) = self.watchers.get_mut(&id) else {
            return Ok(());
        };
        let last = if events.len() >= chunk {
            events.last().map_or(to, |e| e.kv.mod_revision)
        } else {
            to
        };
        let mut matching: Vec<mvccpb::Event> = Vec::new();
        for e in events.iter().filter(|e| w.spec.wants(e)) {
            let mut pb = to_pb(e, false);
            if w.spec.prev_kv {
                read_prev(&store, &mut pb);
            }
            matching.push(pb);
        }
        w.sent_rev = last;
        if matching.is_empty() {
            return Ok(());
        }
        w.sent_since_tick = true;
        let fragment = w.fragment;
        let resp = WatchResponse {
            header: self.header(store.current_rev()),
            watch_id: id,
            events: matching,
            ..Default::default()
        };
        self.send_events(resp, fragment).await
    }

    /// etcd's answer to a watcher whose next revision was compacted away.
    async fn compacted(&mut self, id: i64) -> Step {
        self.watchers.remove(&id);
        self.server.watch.cancel(self.hub.id, id);
        let resp = WatchResponse {
            header: self.header(0),
            watch_id: id,
            canceled: true,
            compact_revision: self.server.store.compact_rev(),
            ..Default::default()
        };
        self.send(resp).await
    }
}

/// Sets an event's previous key-value, read at the revision before it, as etcd does; not for
/// a creation, which has none. A revision compacted meanwhile leaves it unset (etcd too).
fn read_prev(store: &oxcd_storage::Store, pb: &mut mvccpb::Event) {
    let Some(kv) = pb.kv.as_ref() else {
        return;
    };
    if kv.version == 1 {
        return;
    }
    pb.prev_kv = store
        .range(
            &kv.key,
            &[],
            oxcd_storage::RangeOptions {
                rev: kv.mod_revision - 1,
                ..Default::default()
            },
        )
        .ok()
        .and_then(|r| r.kvs.into_iter().next());
}
