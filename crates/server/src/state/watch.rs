//! The watch hub: who watches which keys, and live delivery of applied changes to them.
//!
//! The raft loop calls [`WatchHub::notify`] after each applied revision; it never blocks and
//! never allocates per watcher beyond a reference-counted slice of events. Watchers are
//! either **synced** (they have every event up to the store's revision, and the hub hands
//! them each new revision) or **unsynced** (behind: their stream task catches them up from
//! the store, in bounded chunks, then asks to rejoin). This is etcd's synced/unsynced split;
//! etcd's "victims" (a synced watcher whose channel is full) become unsynced here at once,
//! so they too catch up from storage and the hub keeps nothing for them.
//!
//! Each watch stream has one bounded queue from the hub ([`STREAM_QUEUE_MAX`] messages and
//! [`STREAM_QUEUE_BYTES_MAX`] bytes of events). When a revision does not fit, the watchers
//! it was for become unsynced and the stream is woken to catch them up later: a client
//! that stops reading costs the server one full queue, never more, and stalls nobody else.
//!
//! The applier asks [`Interest`] which keys of a range delete any watcher covers, and keeps
//! an event only for those (and for keys with a lease): deleting a million keys nobody
//! watches holds no event per key. A watcher's range joins the interest before its stream
//! reads the store's revision, which waits for a batch being applied; so a range delete
//! that did not see the watcher is at or below the revision the watcher starts after.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use oxcd_api::mvccpb;
use oxcd_storage::{Event, EventKind};
use tokio::sync::{mpsc, Notify};

/// Messages queued per stream from the hub.
pub const STREAM_QUEUE_MAX: usize = 1024;
/// One client connection (all its streams) holds at most this share of `--max-watchers`
/// (a half): a client at its bound leaves the other half to the rest.
pub const WATCHERS_PER_CONNECTION_SHARE: usize = 2;
/// Bytes of keys and values queued per stream from the hub (over all its messages).
pub const STREAM_QUEUE_BYTES_MAX: usize = 8 * 1024 * 1024;

/// One revision's events for one watcher.
#[derive(Debug)]
pub struct HubMsg {
    pub watch_id: i64,
    /// Which registration of `watch_id` this is for (IDs can be reused after a cancel).
    pub serial: u64,
    pub rev: i64,
    pub events: Arc<Vec<mvccpb::Event>>,
    /// What this message counts against [`STREAM_QUEUE_BYTES_MAX`].
    pub bytes: usize,
}

/// What a watcher asks for.
#[derive(Debug, Clone, Default)]
pub struct WatchSpec {
    pub key: Vec<u8>,
    /// etcd's range end: empty = one key, `[0]` = every key from `key`.
    pub end: Vec<u8>,
    pub prev_kv: bool,
    pub no_put: bool,
    pub no_delete: bool,
}

impl WatchSpec {
    pub fn covers(&self, key: &[u8]) -> bool {
        if self.end.is_empty() {
            key == self.key.as_slice()
        } else if self.end == [0] {
            key >= self.key.as_slice()
        } else {
            key >= self.key.as_slice() && key < self.end.as_slice()
        }
    }

    /// The range's keys: from `key` (inclusive) to an upper bound (`None`: no bound), and
    /// whether that bound is inclusive (a one-key range).
    fn bounds(&self) -> (&[u8], Option<(&[u8], bool)>) {
        if self.end.is_empty() {
            (&self.key, Some((&self.key, true)))
        } else if self.end == [0] {
            (&self.key, None)
        } else {
            (&self.key, Some((&self.end, false)))
        }
    }

    /// Whether some key is in both ranges (an empty range meets nothing).
    pub fn meets(&self, other: &WatchSpec) -> bool {
        // Each range starts below where the other ends.
        let below = |start: &[u8], upper: Option<(&[u8], bool)>| match upper {
            None => true,
            Some((end, true)) => start <= end,
            Some((end, false)) => start < end,
        };
        let (a, a_end) = self.bounds();
        let (b, b_end) = other.bounds();
        below(a, a_end) && below(b, b_end) && below(a, b_end) && below(b, a_end)
    }

    pub fn wants(&self, e: &Event) -> bool {
        self.covers(&e.kv.key)
            && match e.kind {
                EventKind::Put => !self.no_put,
                EventKind::Delete => !self.no_delete,
            }
    }
}

/// The key ranges of every registered watcher, by serial: read by the applier while it
/// holds the store's index (so nothing here may wait for the index).
#[derive(Debug, Default)]
pub struct Interest {
    ranges: RwLock<HashMap<u64, WatchSpec>>,
}

impl Interest {
    fn add(&self, serial: u64, spec: &WatchSpec) {
        let range = WatchSpec {
            key: spec.key.clone(),
            end: spec.end.clone(),
            ..WatchSpec::default()
        };
        self.write().insert(serial, range);
    }

    fn remove(&self, serials: impl IntoIterator<Item = u64>) {
        let mut ranges = self.write();
        for s in serials {
            ranges.remove(&s);
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u64, WatchSpec>> {
        self.ranges.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The watched ranges that share a key with etcd's range `key`..`end`.
    pub fn meeting(&self, key: &[u8], end: &[u8]) -> Vec<WatchSpec> {
        let probe = WatchSpec {
            key: key.to_vec(),
            end: end.to_vec(),
            ..WatchSpec::default()
        };
        let ranges = self.ranges.read().unwrap_or_else(|e| e.into_inner());
        ranges
            .values()
            .filter(|r| r.meets(&probe))
            .cloned()
            .collect()
    }
}

struct Watcher {
    spec: WatchSpec,
    serial: u64,
    /// Synced: the hub delivers revisions after this one. Unsynced: `None`.
    synced_after: Option<i64>,
}

/// The hub's side of one watch stream.
struct StreamEntry {
    /// The client connection the stream is on (0: unknown).
    conn: u64,
    tx: mpsc::Sender<HubMsg>,
    queued_bytes: Arc<AtomicUsize>,
    wake: Arc<Notify>,
    watchers: HashMap<i64, Watcher>,
}

/// The stream task's side: its queue from the hub and what wakes it to catch up.
pub struct StreamHandle {
    pub id: u64,
    pub rx: mpsc::Receiver<HubMsg>,
    pub queued_bytes: Arc<AtomicUsize>,
    pub wake: Arc<Notify>,
}

impl StreamHandle {
    /// Takes a message off the queue and releases its bytes.
    pub fn taken(&self, msg: &HubMsg) {
        self.queued_bytes.fetch_sub(msg.bytes, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Inner {
    streams: HashMap<u64, StreamEntry>,
    watchers: usize,
    /// Watchers per client connection.
    per_conn: HashMap<u64, usize>,
    /// The last revision handed to the hub: every event up to it is queued or unsynced.
    notified_rev: i64,
}

impl Inner {
    fn forget_conn_watchers(&mut self, conn: u64, n: usize) {
        if let Some(c) = self.per_conn.get_mut(&conn) {
            *c = c.saturating_sub(n);
            if *c == 0 {
                self.per_conn.remove(&conn);
            }
        }
    }
}

/// Why a watcher could not be created.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("etcdserver: too many watchers (--max-watchers)")]
    TooMany,
    #[error("etcdserver: too many watchers on this connection (half of --max-watchers)")]
    TooManyOnConnection,
    #[error("watch stream closed")]
    StreamGone,
}

pub struct WatchHub {
    inner: Mutex<Inner>,
    interest: Arc<Interest>,
    next_stream: AtomicU64,
    next_serial: AtomicU64,
    pub watchers_max: usize,
    /// Watchers one client connection may hold.
    pub watchers_per_conn_max: usize,
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

fn event_bytes(e: &mvccpb::Event) -> usize {
    let kv = |kv: &Option<mvccpb::KeyValue>| {
        kv.as_ref()
            .map(|kv| kv.key.len() + kv.value.len() + 48)
            .unwrap_or(0)
    };
    kv(&e.kv) + kv(&e.prev_kv)
}

/// One revision's events on the wire, built at most once per form per revision.
struct Forms<'e> {
    events: &'e [Event],
    plain: Option<(Arc<Vec<mvccpb::Event>>, usize)>,
    with_prev: Option<(Arc<Vec<mvccpb::Event>>, usize)>,
}

impl Forms<'_> {
    fn get(&mut self, spec: &WatchSpec) -> Option<(Arc<Vec<mvccpb::Event>>, usize)> {
        let all = self.events.iter().all(|e| spec.wants(e));
        if !all {
            let mine: Vec<mvccpb::Event> = self
                .events
                .iter()
                .filter(|e| spec.wants(e))
                .map(|e| to_pb(e, spec.prev_kv))
                .collect();
            if mine.is_empty() {
                return None;
            }
            let bytes = mine.iter().map(event_bytes).sum();
            return Some((Arc::new(mine), bytes));
        }
        let events = self.events;
        let slot = if spec.prev_kv {
            &mut self.with_prev
        } else {
            &mut self.plain
        };
        let (v, bytes) = slot.get_or_insert_with(|| {
            let v: Vec<mvccpb::Event> = events.iter().map(|e| to_pb(e, spec.prev_kv)).collect();
            let bytes = v.iter().map(event_bytes).sum();
            (Arc::new(v), bytes)
        });
        Some((v.clone(), *bytes))
    }
}

impl WatchHub {
    pub fn new(watchers_max: usize) -> WatchHub {
        WatchHub {
            inner: Mutex::new(Inner::default()),
            interest: Arc::default(),
            next_stream: AtomicU64::new(1),
            next_serial: AtomicU64::new(1),
            watchers_max,
            watchers_per_conn_max: (watchers_max / WATCHERS_PER_CONNECTION_SHARE).max(1),
        }
    }

    /// The watched ranges, for the applier.
    pub fn interest(&self) -> Arc<Interest> {
        self.interest.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("watch hub lock poisoned")
    }

    /// Sets the revision the hub starts from (the store's, when the member starts), or has
    /// reached (after a batch, whose last revisions may have kept no events).
    pub fn advance_to(&self, rev: i64) {
        let mut inner = self.lock();
        inner.notified_rev = inner.notified_rev.max(rev);
    }

    /// Opens a stream on client connection `conn` (0: unknown): its bounded queue from the
    /// hub.
    pub fn open_stream(&self, conn: u64) -> StreamHandle {
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(STREAM_QUEUE_MAX);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let wake = Arc::new(Notify::new());
        self.lock().streams.insert(
            id,
            StreamEntry {
                conn,
                tx,
                queued_bytes: queued_bytes.clone(),
                wake: wake.clone(),
                watchers: HashMap::new(),
            },
        );
        StreamHandle {
            id,
            rx,
            queued_bytes,
            wake,
        }
    }

    pub fn close_stream(&self, stream: u64) {
        let mut inner = self.lock();
        if let Some(s) = inner.streams.remove(&stream) {
            self.interest.remove(s.watchers.values().map(|w| w.serial));
            inner.watchers -= s.watchers.len();
            inner.forget_conn_watchers(s.conn, s.watchers.len());
        }
    }

    /// Registers a watcher that wants every event after `after_rev`, and returns its serial
    /// and the revision it was registered at. `current_rev` is read under the hub lock, so
    /// no revision falls between what the stream reads from the store and what the hub
    /// delivers: a watcher whose `after_rev` is below it starts unsynced (the stream catches
    /// it up from the store); otherwise it is synced from `after_rev` on.
    pub fn register(
        &self,
        stream: u64,
        watch_id: i64,
        spec: WatchSpec,
        after_rev: i64,
        current_rev: impl FnOnce() -> i64,
    ) -> Result<(u64, i64), RegisterError> {
        let mut inner = self.lock();
        if inner.watchers >= self.watchers_max {
            return Err(RegisterError::TooMany);
        }
        let conn = inner
            .streams
            .get(&stream)
            .ok_or(RegisterError::StreamGone)?
            .conn;
        if conn != 0
            && inner.per_conn.get(&conn).copied().unwrap_or(0) >= self.watchers_per_conn_max
        {
            return Err(RegisterError::TooManyOnConnection);
        }
        let serial = self.next_serial.fetch_add(1, Ordering::Relaxed);
        // Before the revision is read: see the module docs.
        self.interest.add(serial, &spec);
        let rev = current_rev();
        let Some(s) = inner.streams.get_mut(&stream) else {
            self.interest.remove([serial]);
            return Err(RegisterError::StreamGone);
        };
        let synced = after_rev >= rev;
        let w = Watcher {
            spec,
            serial,
            synced_after: synced.then_some(after_rev),
        };
        if let Some(old) = s.watchers.insert(watch_id, w) {
            // The stream task checks IDs first; replacing would be a bug there.
            self.interest.remove([old.serial]);
            debug_assert!(false, "watch {watch_id} registered twice ({})", old.serial);
        } else {
            inner.watchers += 1;
            if conn != 0 {
                *inner.per_conn.entry(conn).or_insert(0) += 1;
            }
        }
        if !synced {
            if let Some(s) = inner.streams.get(&stream) {
                s.wake.notify_one();
            }
        }
        Ok((serial, rev))
    }

    pub fn cancel(&self, stream: u64, watch_id: i64) -> bool {
        let mut inner = self.lock();
        let removed = inner
            .streams
            .get_mut(&stream)
            .and_then(|s| s.watchers.remove(&watch_id).map(|w| (s.conn, w.serial)));
        if let Some((conn, serial)) = removed {
            self.interest.remove([serial]);
            inner.watchers -= 1;
            inner.forget_conn_watchers(conn, 1);
        }
        removed.is_some()
    }

    pub fn count(&self) -> usize {
        self.lock().watchers
    }

    /// (streams, watchers, unsynced watchers), for the metrics.
    pub fn stats(&self) -> (usize, usize, usize) {
        let inner = self.lock();
        let unsynced = inner.streams.values().map(|s| {
            s.watchers
                .values()
                .filter(|w| w.synced_after.is_none())
                .count()
        });
        (inner.streams.len(), inner.watchers, unsynced.sum())
    }

    /// The unsynced watchers of a stream.
    pub fn unsynced(&self, stream: u64) -> Vec<i64> {
        let inner = self.lock();
        let Some(s) = inner.streams.get(&stream) else {
            return Vec::new();
        };
        let mut ids: Vec<i64> = s
            .watchers
            .iter()
            .filter(|(_, w)| w.synced_after.is_none())
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// A watcher that has every event up to `sent_rev` rejoins the live feed. Returns the
    /// revision from which the hub delivers again (events in `(sent_rev, returned]` are the
    /// caller's to send from the store), or `None` if the watcher is gone.
    pub fn resync(
        &self,
        stream: u64,
        watch_id: i64,
        sent_rev: i64,
        current_rev: impl FnOnce() -> i64,
    ) -> Option<i64> {
        let mut inner = self.lock();
        let rev = current_rev().max(sent_rev);
        let w = inner
            .streams
            .get_mut(&stream)?
            .watchers
            .get_mut(&watch_id)?;
        w.synced_after = Some(rev);
        Some(rev)
    }

    /// The revision up to which every event has been handed to the streams' queues (or
    /// left to catch-up): a progress notification may name it once the queue is drained.
    pub fn notified_rev(&self) -> i64 {
        self.lock().notified_rev
    }

    /// After a snapshot replaced the store: every watcher catches up from the store.
    pub fn resync_all(&self, rev: i64) {
        let mut inner = self.lock();
        inner.notified_rev = inner.notified_rev.max(rev);
        for s in inner.streams.values_mut() {
            for w in s.watchers.values_mut() {
                w.synced_after = None;
            }
            s.wake.notify_one();
        }
    }

    /// Delivers the events of one revision to every synced watcher whose range they touch.
    pub fn notify(&self, rev: i64, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let mut forms = Forms {
            events,
            plain: None,
            with_prev: None,
        };
        let mut inner = self.lock();
        inner.notified_rev = inner.notified_rev.max(rev);
        for s in inner.streams.values_mut() {
            let mut fell_behind = false;
            for (id, w) in s.watchers.iter_mut() {
                match w.synced_after {
                    Some(after) if rev > after => {}
                    _ => continue,
                }
                let Some((events, bytes)) = forms.get(&w.spec) else {
                    continue;
                };
                let queued = s.queued_bytes.load(Ordering::Relaxed);
                let fits = queued + bytes <= STREAM_QUEUE_BYTES_MAX || queued == 0;
                let msg = HubMsg {
                    watch_id: *id,
                    serial: w.serial,
                    rev,
                    events,
                    bytes,
                };
                if fits && s.tx.try_send(msg).is_ok() {
                    s.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
                } else {
                    // Behind: catch up from the store later; the hub keeps nothing for it.
                    w.synced_after = None;
                    fell_behind = true;
                }
            }
            if fell_behind {
                tracing::debug!(
                    "a watch stream fell behind at revision {rev}; catching up from the store"
                );
                s.wake.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, rev: i64) -> Event {
        Event {
            kind: EventKind::Put,
            kv: mvccpb::KeyValue {
                key: key.as_bytes().to_vec(),
                value: vec![b'v'; 100],
                mod_revision: rev,
                ..Default::default()
            },
            prev_kv: None,
        }
    }

    fn range(key: &str, end: &[u8]) -> WatchSpec {
        WatchSpec {
            key: key.as_bytes().to_vec(),
            end: end.to_vec(),
            ..Default::default()
        }
    }

    /// `meets` against a brute force over every short key: one key, half-open ranges,
    /// "from key", and empty ranges.
    #[test]
    fn ranges_meet_when_they_share_a_key() {
        let specs = [
            range("b", b""),
            range("a", b"c"),
            range("b", b"c"),
            range("c", b"d"),
            range("c", b"b"),
            range("bb", &[0]),
            range("", &[0]),
            range("d", &[0]),
            prefix("b"),
        ];
        let keys: Vec<Vec<u8>> = std::iter::once(Vec::new())
            .chain((b'a'..=b'e').map(|a| vec![a]))
            .chain((b'a'..=b'e').flat_map(|a| (b'a'..=b'e').map(move |b| vec![a, b])))
            .collect();
        for x in &specs {
            for y in &specs {
                let shared = keys.iter().any(|k| x.covers(k) && y.covers(k));
                assert_eq!(x.meets(y), shared, "{x:?} and {y:?}");
            }
        }
        let hub = WatchHub::new(10);
        let s = hub.open_stream(0);
        hub.register(s.id, 1, prefix("b"), 0, || 0)
            .expect("register");
        assert_eq!(hub.interest().meeting(b"a", b"z").len(), 1);
        assert!(hub.interest().meeting(b"c", b"z").is_empty());
        hub.close_stream(s.id);
        assert!(
            hub.interest().meeting(b"a", b"z").is_empty(),
            "gone with its stream"
        );
    }

    fn prefix(p: &str) -> WatchSpec {
        let mut end = p.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        WatchSpec {
            key: p.as_bytes().to_vec(),
            end,
            ..Default::default()
        }
    }

    #[test]
    fn a_full_queue_makes_watchers_unsynced_and_bounds_memory() {
        let hub = WatchHub::new(100);
        let mut slow = hub.open_stream(0);
        let fast = hub.open_stream(0);
        hub.register(slow.id, 0, prefix("a"), 1, || 1)
            .expect("register");
        hub.register(fast.id, 0, prefix("a"), 1, || 1)
            .expect("register");
        for rev in 2..(STREAM_QUEUE_MAX as i64 + 10) {
            hub.notify(rev, &[put("a1", rev)]);
        }
        // The slow stream holds at most its queue and then is unsynced; nothing else grows.
        assert_eq!(hub.unsynced(slow.id), vec![0]);
        assert!(slow.rx.len() <= STREAM_QUEUE_MAX);
        assert_eq!(hub.unsynced(fast.id), vec![0], "fast never read either");
        // Rejoining: the hub delivers only after the revision it names.
        let next = STREAM_QUEUE_MAX as i64 + 10;
        let from = hub.resync(slow.id, 0, next - 1, || next - 1);
        assert_eq!(from, Some(next - 1));
        while let Ok(m) = slow.rx.try_recv() {
            slow.taken(&m);
        }
        hub.notify(next, &[put("a2", next)]);
        let m = slow.rx.try_recv().expect("live again");
        assert_eq!((m.rev, m.events.len()), (next, 1));
        assert!(hub.unsynced(slow.id).is_empty());
    }

    #[test]
    fn byte_budget_is_enforced() {
        let hub = WatchHub::new(10);
        let s = hub.open_stream(0);
        hub.register(s.id, 0, prefix("a"), 0, || 0)
            .expect("register");
        let big = Event {
            kv: mvccpb::KeyValue {
                key: b"a".to_vec(),
                value: vec![0; STREAM_QUEUE_BYTES_MAX / 2],
                ..Default::default()
            },
            ..put("a", 1)
        };
        hub.notify(1, std::slice::from_ref(&big));
        hub.notify(2, std::slice::from_ref(&big));
        hub.notify(3, std::slice::from_ref(&big));
        assert!(s.rx.len() <= 2);
        assert_eq!(hub.unsynced(s.id), vec![0]);
    }

    #[test]
    fn registration_below_the_current_revision_starts_unsynced() {
        let hub = WatchHub::new(2);
        let s = hub.open_stream(0);
        let (_, rev) = hub.register(s.id, 5, prefix("a"), 3, || 9).expect("r");
        assert_eq!(rev, 9);
        assert_eq!(hub.unsynced(s.id), vec![5]);
        hub.register(s.id, 6, prefix("a"), 9, || 9).expect("r");
        assert!(matches!(
            hub.register(s.id, 7, prefix("a"), 9, || 9),
            Err(RegisterError::TooMany)
        ));
        hub.close_stream(s.id);
        assert_eq!(hub.count(), 0);
    }

    /// Issue 16 defect 5: `--max-watchers` was per member only, so one client holding all of
    /// them had every other client's watches refused. A connection holds at most half.
    #[test]
    fn one_connection_cannot_take_every_watcher() {
        let hub = WatchHub::new(10);
        let greedy = [hub.open_stream(7), hub.open_stream(7)];
        let mut id = 0;
        let err = loop {
            let s = &greedy[id as usize % 2];
            match hub.register(s.id, id, prefix("a"), 0, || 0) {
                Ok(_) => id += 1,
                Err(e) => break e,
            }
        };
        assert!(matches!(err, RegisterError::TooManyOnConnection), "{err}");
        assert_eq!(id, 5, "half of --max-watchers, over both of its streams");
        let other = hub.open_stream(8);
        for id in 0..5 {
            hub.register(other.id, id, prefix("a"), 0, || 0)
                .expect("another connection gets the other half");
        }
        assert!(matches!(
            hub.register(other.id, 9, prefix("a"), 0, || 0),
            Err(RegisterError::TooMany)
        ));
        // Canceling or closing gives the connection's share back.
        assert!(hub.cancel(greedy[0].id, 0));
        hub.register(greedy[1].id, 100, prefix("a"), 0, || 0)
            .expect("room after a cancel");
        hub.close_stream(greedy[0].id);
        hub.close_stream(greedy[1].id);
        for id in 200..205 {
            hub.register(hub.open_stream(7).id, id, prefix("a"), 0, || 0)
                .expect("room after the streams closed");
        }
    }
}
