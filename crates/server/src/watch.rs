//! The watch hub: who watches which keys, and delivery of applied changes to them. The raft
//! loop calls [`WatchHub::notify`] after each applied batch; it never blocks: each watch
//! stream has a bounded queue, and a stream that does not keep up has its watchers
//! canceled with a reason (never a silent gap).

use std::collections::HashMap;
use std::sync::Mutex;

use oxcd_api::mvccpb;
use oxcd_storage::{Event, EventKind};
use tokio::sync::mpsc;

/// Messages a watch stream task receives from the hub.
#[derive(Debug)]
pub enum HubMsg {
    Events {
        watch_id: i64,
        rev: i64,
        events: Vec<mvccpb::Event>,
    },
    /// The watcher was dropped because its stream fell too far behind.
    Overflow { watch_id: i64 },
    /// The member installed a snapshot: the revisions `from..=upto` were never notified and
    /// the stream sends them from the store before any later event.
    Replay {
        watch_id: i64,
        from: i64,
        upto: i64,
        request: oxcd_api::etcdserverpb::WatchCreateRequest,
    },
}

/// Per-stream queue length; a stream this far behind loses its watchers.
pub const STREAM_QUEUE_MAX: usize = 4096;

struct Watcher {
    stream: u64,
    watch_id: i64,
    key: Vec<u8>,
    end: Vec<u8>,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    /// Events at or below this revision were already sent from history.
    after_rev: i64,
    tx: mpsc::Sender<HubMsg>,
}

impl Watcher {
    fn covers(&self, key: &[u8]) -> bool {
        if self.end.is_empty() {
            key == self.key.as_slice()
        } else if self.end == [0] {
            key >= self.key.as_slice()
        } else {
            key >= self.key.as_slice() && key < self.end.as_slice()
        }
    }
}

/// What a new watcher asks for.
pub struct WatchSpec {
    pub stream: u64,
    pub watch_id: i64,
    pub key: Vec<u8>,
    pub end: Vec<u8>,
    pub prev_kv: bool,
    pub no_put: bool,
    pub no_delete: bool,
}

pub struct WatchHub {
    watchers: Mutex<HashMap<(u64, i64), Watcher>>,
    next_stream: std::sync::atomic::AtomicU64,
    pub watchers_max: usize,
    /// The runtime that delivers overflow notices (the hub is called from the raft thread).
    runtime: Option<tokio::runtime::Handle>,
}

/// Converts a store event to etcd's wire event.
pub fn to_pb(e: &Event, with_prev: bool) -> mvccpb::Event {
    mvccpb::Event {
        r#type: match e.kind {
            EventKind::Put => mvccpb::event::EventType::Put as i32,
            EventKind::Delete => mvccpb::event::EventType::Delete as i32,
        },
        kv: Some(e.kv.clone()),
        prev_kv: if with_prev { e.prev_kv.clone() } else { None },
    }
}

impl WatchHub {
    pub fn new(watchers_max: usize) -> WatchHub {
        WatchHub {
            watchers: Mutex::new(HashMap::new()),
            next_stream: Default::default(),
            watchers_max,
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    pub fn new_stream_id(&self) -> u64 {
        self.next_stream
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(u64, i64), Watcher>> {
        self.watchers.lock().expect("watch hub lock poisoned")
    }

    /// Registers a watcher. `current_rev` is read under the hub lock so that no applied
    /// batch falls between the history the caller sends and the live events: the caller
    /// sends history up to the returned revision, the hub everything after it.
    pub fn register(
        &self,
        spec: WatchSpec,
        tx: mpsc::Sender<HubMsg>,
        current_rev: impl FnOnce() -> i64,
    ) -> Result<i64, &'static str> {
        let mut w = self.lock();
        if w.len() >= self.watchers_max {
            return Err("etcdserver: too many watchers (--max-watchers)");
        }
        let rev = current_rev();
        w.insert(
            (spec.stream, spec.watch_id),
            Watcher {
                stream: spec.stream,
                watch_id: spec.watch_id,
                key: spec.key,
                end: spec.end,
                prev_kv: spec.prev_kv,
                no_put: spec.no_put,
                no_delete: spec.no_delete,
                after_rev: rev,
                tx,
            },
        );
        Ok(rev)
    }

    pub fn cancel(&self, stream: u64, watch_id: i64) -> bool {
        self.lock().remove(&(stream, watch_id)).is_some()
    }

    pub fn cancel_stream(&self, stream: u64) {
        self.lock().retain(|_, w| w.stream != stream);
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// After a snapshot moved the store from `old_rev` to `new_rev` without events: asks
    /// every watcher's stream to send the skipped revisions from the store, in order.
    pub fn resync(&self, old_rev: i64, new_rev: i64) {
        let mut w = self.lock();
        let mut overflowed = Vec::new();
        for watcher in w.values() {
            let from = old_rev.max(watcher.after_rev) + 1;
            if from > new_rev {
                continue;
            }
            let mut filters = Vec::new();
            if watcher.no_put {
                filters
                    .push(oxcd_api::etcdserverpb::watch_create_request::FilterType::Noput as i32);
            }
            if watcher.no_delete {
                filters.push(
                    oxcd_api::etcdserverpb::watch_create_request::FilterType::Nodelete as i32,
                );
            }
            let msg = HubMsg::Replay {
                watch_id: watcher.watch_id,
                from,
                upto: new_rev,
                request: oxcd_api::etcdserverpb::WatchCreateRequest {
                    key: watcher.key.clone(),
                    range_end: watcher.end.clone(),
                    prev_kv: watcher.prev_kv,
                    filters,
                    ..Default::default()
                },
            };
            if watcher.tx.try_send(msg).is_err() {
                overflowed.push((watcher.stream, watcher.watch_id));
            }
        }
        self.drop_overflowed(&mut w, overflowed);
    }

    /// Delivers the events of one revision to every watcher whose range they touch.
    pub fn notify(&self, rev: i64, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let mut w = self.lock();
        let mut overflowed = Vec::new();
        for watcher in w.values() {
            if rev <= watcher.after_rev {
                continue;
            }
            let mine: Vec<mvccpb::Event> = events
                .iter()
                .filter(|e| watcher.covers(&e.kv.key))
                .filter(|e| match e.kind {
                    EventKind::Put => !watcher.no_put,
                    EventKind::Delete => !watcher.no_delete,
                })
                .map(|e| to_pb(e, watcher.prev_kv))
                .collect();
            if mine.is_empty() {
                continue;
            }
            let msg = HubMsg::Events {
                watch_id: watcher.watch_id,
                rev,
                events: mine,
            };
            if watcher.tx.try_send(msg).is_err() {
                overflowed.push((watcher.stream, watcher.watch_id));
            }
        }
        self.drop_overflowed(&mut w, overflowed);
    }

    fn drop_overflowed(&self, w: &mut HashMap<(u64, i64), Watcher>, overflowed: Vec<(u64, i64)>) {
        for key in overflowed {
            if let Some(watcher) = w.remove(&key) {
                tracing::warn!(
                    "canceling watch {} of stream {}: its client is not reading fast enough",
                    watcher.watch_id,
                    watcher.stream
                );
                let tx = watcher.tx.clone();
                let watch_id = watcher.watch_id;
                // The queue is full; deliver the notice as soon as there is room.
                if let Some(rt) = &self.runtime {
                    rt.spawn(async move {
                        let _ = tx.send(HubMsg::Overflow { watch_id }).await;
                    });
                }
            }
        }
    }
}
