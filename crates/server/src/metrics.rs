//! The member's Prometheus metrics, with etcd 3.4's names, types, help texts, label names and
//! buckets, so that etcd's dashboards and alert rules work unchanged; plus a few `oxcd_*`
//! families for what etcd lacks. One process-wide registry, as etcd has (the `prometheus`
//! crate's text format 0.0.4 encoder writes the exposition).
//!
//! Two kinds of values:
//! - counted where they happen: one-line calls at the point where the value is true (the
//!   WAL fsync in the raft loop, the backend commit in the apply path, bytes on the peer
//!   streams, every gRPC call in the API wing's layer);
//! - read when scraped: gauges of state that has one owner elsewhere (leader, indexes,
//!   sizes, revisions, watchers, peers) are set from a [`Sample`] right before encoding, so
//!   they cost nothing between scrapes and are never stale.
//!
//! Part of the base: every wing may import it; it imports no wing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};

use prometheus::{
    exponential_buckets, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec,
    IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The content type of the exposition (Prometheus text format 0.0.4, as etcd serves).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A heartbeat not answered within this long is forgotten (it or its answer was lost), so
/// that a lost one does not turn the next answer into a huge round trip.
const HEARTBEAT_ANSWER_MAX: Duration = Duration::from_secs(5);

/// etcd's warnApplyDuration: an apply slower than this counts as a slow apply.
pub const SLOW_APPLY: Duration = Duration::from_millis(100);
/// etcd's readIndexRetryTime: a ReadIndex slower than this counts as a slow read index.
pub const SLOW_READ_INDEX: Duration = Duration::from_millis(500);

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Runs `f` and observes how long it took in seconds.
pub fn timed<T>(h: &Histogram, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = f();
    h.observe(t.elapsed().as_secs_f64());
    out
}

/// Every family this member exports (beside the gRPC ones in [`GrpcMetrics`]).
pub struct Metrics {
    registry: Registry,
    extensive: AtomicBool,
    // etcd_server_*
    pub has_leader: IntGauge,
    pub is_leader: IntGauge,
    pub is_learner: IntGauge,
    pub leader_changes: IntCounter,
    pub proposals_committed: IntGauge,
    pub proposals_applied: IntGauge,
    pub proposals_pending: IntGauge,
    pub proposals_failed: IntCounter,
    pub heartbeat_send_failures: IntCounter,
    pub slow_apply: IntCounter,
    pub slow_read_indexes: IntCounter,
    pub read_indexes_failed: IntCounter,
    pub quota_backend_bytes: Gauge,
    pub server_version: IntGaugeVec,
    pub server_id: IntGaugeVec,
    pub cluster_version: IntGaugeVec,
    pub client_requests: IntCounterVec,
    pub lease_expired: IntCounter,
    pub lease_granted: IntCounter,
    pub lease_revoked: IntCounter,
    pub lease_renewed: IntCounter,
    pub lease_ttl: Histogram,
    pub total_put_size: IntGauge,
    // etcd_mvcc_* and etcd_debugging_mvcc_*
    pub db_total_size: IntGauge,
    pub db_total_size_in_use: IntGauge,
    pub db_total_size_debugging: IntGauge,
    pub put: [IntCounter; 2],
    pub delete: [IntCounter; 2],
    pub range: [IntCounter; 2],
    pub txn: [IntCounter; 2],
    pub keys_total: IntGauge,
    pub watcher_total: IntGauge,
    pub watch_stream_total: IntGauge,
    pub slow_watcher_total: IntGauge,
    pub current_revision: IntGauge,
    pub compact_revision: IntGauge,
    // etcd_disk_*, etcd_snap_*
    pub wal_fsync: Histogram,
    pub backend_commit: Histogram,
    pub backend_snapshot: Histogram,
    pub backend_defrag: Histogram,
    pub defrag_inflight: IntGauge,
    pub snap_db_save: Histogram,
    // etcd_network_*
    pub peer_rtt: HistogramVec,
    pub peer_sent_bytes: IntCounterVec,
    pub peer_received_bytes: IntCounterVec,
    pub peer_sent_failures: IntCounterVec,
    pub peer_received_failures: IntCounterVec,
    pub active_peers: IntGaugeVec,
    pub disconnected_peers: IntCounterVec,
    pub grpc_sent_bytes: IntCounter,
    pub grpc_received_bytes: IntCounter,
    // oxcd_*
    pub cert_expiry: GaugeVec,
    pub group_commit_entries: Histogram,
    pub read_index_wait: Histogram,
    pub build_info: IntGaugeVec,
    pub grpc: GrpcMetrics,
    heartbeats: Mutex<HashMap<u64, Instant>>,
}

/// A counter, gauge or histogram registered under its etcd name.
fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    // Names are constants and unique: a clash is a bug in this file.
    r.register(Box::new(c.clone()))
        .expect("metric registered twice");
    c
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    reg(
        r,
        IntCounter::with_opts(Opts::new(name, help)).expect("valid metric"),
    )
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    reg(
        r,
        IntGauge::with_opts(Opts::new(name, help)).expect("valid metric"),
    )
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    reg(
        r,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    reg(
        r,
        IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

/// etcd's buckets are `prometheus.ExponentialBuckets(start, factor, count)`.
fn buckets(start: f64, factor: f64, count: usize) -> Vec<f64> {
    exponential_buckets(start, factor, count).expect("valid buckets")
}

fn histogram(r: &Registry, name: &str, help: &str, b: Vec<f64>) -> Histogram {
    reg(
        r,
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(b)).expect("valid metric"),
    )
}

/// A counter under etcd's name and its `etcd_debugging_` twin (etcd 3.4 exports both).
fn counter_pair(r: &Registry, what: &str, help: &str) -> [IntCounter; 2] {
    [
        counter(r, &format!("etcd_mvcc_{what}_total"), help),
        counter(r, &format!("etcd_debugging_mvcc_{what}_total"), help),
    ]
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        let _ = r.register(Box::new(ProcessMetrics(
            prometheus::process_collector::ProcessCollector::for_self(),
        )));
        let fsync_buckets = || buckets(0.001, 2.0, 14);
        Metrics {
            extensive: AtomicBool::new(false),
            has_leader: gauge(&r, "etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not."),
            is_leader: gauge(&r, "etcd_server_is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise."),
            is_learner: gauge(&r, "etcd_server_is_learner", "Whether or not this member is a learner. 1 if is, 0 otherwise."),
            leader_changes: counter(&r, "etcd_server_leader_changes_seen_total", "The number of leader changes seen."),
            proposals_committed: gauge(&r, "etcd_server_proposals_committed_total", "The total number of consensus proposals committed."),
            proposals_applied: gauge(&r, "etcd_server_proposals_applied_total", "The total number of consensus proposals applied."),
            proposals_pending: gauge(&r, "etcd_server_proposals_pending", "The current number of pending proposals to commit."),
            proposals_failed: counter(&r, "etcd_server_proposals_failed_total", "The total number of failed proposals seen."),
            heartbeat_send_failures: counter(&r, "etcd_server_heartbeat_send_failures_total", "The total number of leader heartbeat send failures (likely overloaded from slow disk)."),
            slow_apply: counter(&r, "etcd_server_slow_apply_total", "The total number of slow apply requests (likely overloaded from slow disk)."),
            slow_read_indexes: counter(&r, "etcd_server_slow_read_indexes_total", "The total number of pending read indexes not in sync with leader's or timed out read index requests."),
            read_indexes_failed: counter(&r, "etcd_server_read_indexes_failed_total", "The total number of failed read indexes seen."),
            quota_backend_bytes: reg(&r, Gauge::with_opts(Opts::new("etcd_server_quota_backend_bytes", "Current backend storage quota size in bytes.")).expect("valid metric")),
            server_version: gauge_vec(&r, "etcd_server_version", "Which version is running. 1 for 'server_version' label with current version.", &["server_version"]),
            server_id: gauge_vec(&r, "etcd_server_id", "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.", &["server_id"]),
            cluster_version: gauge_vec(&r, "etcd_cluster_version", "Which version is running. 1 for 'cluster_version' label with current cluster version", &["cluster_version"]),
            client_requests: counter_vec(&r, "etcd_server_client_requests_total", "The total number of client requests per client version.", &["type", "client_api_version"]),
            lease_expired: counter(&r, "etcd_debugging_server_lease_expired_total", "The total number of expired leases."),
            lease_granted: counter(&r, "etcd_debugging_lease_granted_total", "The total number of granted leases."),
            lease_revoked: counter(&r, "etcd_debugging_lease_revoked_total", "The total number of revoked leases."),
            lease_renewed: counter(&r, "etcd_debugging_lease_renewed_total", "The number of renewed leases seen by the leader."),
            lease_ttl: histogram(&r, "etcd_debugging_lease_ttl_total", "Bucketed histogram of lease TTLs.", buckets(1.0, 2.0, 14)),
            total_put_size: gauge(&r, "etcd_debugging_mvcc_total_put_size_in_bytes", "The total size of put kv pairs seen by this member."),
            db_total_size: gauge(&r, "etcd_mvcc_db_total_size_in_bytes", "Total size of the underlying database physically allocated in bytes."),
            db_total_size_in_use: gauge(&r, "etcd_mvcc_db_total_size_in_use_in_bytes", "Total size of the underlying database logically in use in bytes."),
            db_total_size_debugging: gauge(&r, "etcd_debugging_mvcc_db_total_size_in_bytes", "Total size of the underlying database physically allocated in bytes."),
            put: counter_pair(&r, "put", "Total number of puts seen by this member."),
            delete: counter_pair(&r, "delete", "Total number of deletes seen by this member."),
            range: counter_pair(&r, "range", "Total number of ranges seen by this member."),
            txn: counter_pair(&r, "txn", "Total number of txns seen by this member."),
            keys_total: gauge(&r, "etcd_debugging_mvcc_keys_total", "Total number of keys."),
            watcher_total: gauge(&r, "etcd_debugging_mvcc_watcher_total", "Total number of watchers."),
            watch_stream_total: gauge(&r, "etcd_debugging_mvcc_watch_stream_total", "Total number of watch streams."),
            slow_watcher_total: gauge(&r, "etcd_debugging_mvcc_slow_watcher_total", "Total number of unsynced slow watchers."),
            current_revision: gauge(&r, "etcd_debugging_mvcc_current_revision", "The current revision of store."),
            compact_revision: gauge(&r, "etcd_debugging_mvcc_compact_revision", "The revision of the last compaction in store."),
            wal_fsync: histogram(&r, "etcd_disk_wal_fsync_duration_seconds", "The latency distributions of fsync called by WAL.", fsync_buckets()),
            backend_commit: histogram(&r, "etcd_disk_backend_commit_duration_seconds", "The latency distributions of commit called by backend.", fsync_buckets()),
            backend_snapshot: histogram(&r, "etcd_disk_backend_snapshot_duration_seconds", "The latency distribution of backend snapshots.", buckets(0.01, 2.0, 17)),
            backend_defrag: histogram(&r, "etcd_disk_backend_defrag_duration_seconds", "The latency distribution of backend defragmentation.", buckets(0.1, 2.0, 13)),
            defrag_inflight: gauge(&r, "etcd_disk_defrag_inflight", "Whether or not defrag is active on the member. 1 means active, 0 means not."),
            snap_db_save: histogram(&r, "etcd_snap_db_save_total_duration_seconds", "The total latency distributions of v3 snapshot save", buckets(0.1, 2.0, 10)),
            peer_rtt: reg(&r, HistogramVec::new(HistogramOpts::new("etcd_network_peer_round_trip_time_seconds", "Round-Trip-Time histogram between peers").buckets(buckets(0.0001, 2.0, 16)), &["To"]).expect("valid metric")),
            peer_sent_bytes: counter_vec(&r, "etcd_network_peer_sent_bytes_total", "The total number of bytes sent to peers.", &["To"]),
            peer_received_bytes: counter_vec(&r, "etcd_network_peer_received_bytes_total", "The total number of bytes received from peers.", &["From"]),
            peer_sent_failures: counter_vec(&r, "etcd_network_peer_sent_failures_total", "The total number of send failures from peers.", &["To"]),
            peer_received_failures: counter_vec(&r, "etcd_network_peer_received_failures_total", "The total number of receive failures from peers.", &["From"]),
            active_peers: gauge_vec(&r, "etcd_network_active_peers", "The current number of active peer connections.", &["Local", "Remote"]),
            disconnected_peers: counter_vec(&r, "etcd_network_disconnected_peers_total", "The total number of disconnected peers.", &["Local", "Remote"]),
            grpc_sent_bytes: counter(&r, "etcd_network_client_grpc_sent_bytes_total", "The total number of bytes sent to grpc clients."),
            grpc_received_bytes: counter(&r, "etcd_network_client_grpc_received_bytes_total", "The total number of bytes received from grpc clients."),
            cert_expiry: reg(&r, GaugeVec::new(Opts::new("oxcd_tls_certificate_expiry_timestamp_seconds", "When each certificate this member serves or presents expires (its notAfter), in seconds since the Unix epoch, by file and role (client, peer)."), &["file", "role"]).expect("valid metric")),
            group_commit_entries: histogram(&r, "oxcd_raft_group_commit_entries", "Raft entries written to the WAL per fsync (the group commit's batch size).", buckets(1.0, 2.0, 14)),
            read_index_wait: histogram(&r, "oxcd_server_read_index_wait_seconds", "How long a linearizable read waited for its read index (ReadIndex answered and applied here).", buckets(0.0001, 2.0, 18)),
            build_info: gauge_vec(&r, "oxcd_build_info", "The oxcd build serving this member: 1 for the 'version' label (etcd_server_version is the etcd API level it implements).", &["version"]),
            grpc: GrpcMetrics::new(&r),
            heartbeats: Mutex::new(HashMap::new()),
            registry: r,
        }
    }

    /// Applies the configuration: `--metrics=extensive` (gRPC handling-time histograms too,
    /// as etcd adds them) and the expiry of every certificate file the member uses.
    pub fn configure(&self, cfg: &crate::config::Config) {
        self.extensive
            .store(cfg.metrics_extensive, Ordering::Relaxed);
        if cfg.metrics_extensive {
            self.grpc.init_handling();
        }
        let groups = [("client", &cfg.client_tls), ("peer", &cfg.peer_tls)];
        for (role, files) in groups {
            let Some(f) = files else { continue };
            let ca_role = format!("{role}-ca");
            let ca = f.trusted_ca_file.as_ref().map(|p| (p, ca_role.as_str()));
            for (path, role) in std::iter::once((&f.cert_file, role)).chain(ca) {
                match earliest_not_after(path) {
                    Some(t) => self.set_cert_expiry(&path.display().to_string(), role, t),
                    None => tracing::warn!(
                        "cannot read the expiry of {} for the metrics",
                        path.display()
                    ),
                }
            }
        }
    }

    pub fn extensive(&self) -> bool {
        self.extensive.load(Ordering::Relaxed)
    }

    /// The exposition, after setting the scraped gauges from `s`.
    pub fn render(&self, s: &Sample) -> Vec<u8> {
        self.refresh(s);
        let mut out = Vec::with_capacity(64 * 1024);
        // Encoding into a Vec fails only on an invalid family, which `new` cannot build.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }

    fn refresh(&self, s: &Sample) {
        self.has_leader.set((s.leader != 0) as i64);
        self.is_leader
            .set((s.leader != 0 && s.leader == s.member_id) as i64);
        self.is_learner.set(s.is_learner as i64);
        self.proposals_committed.set(s.committed as i64);
        self.proposals_applied.set(s.applied as i64);
        self.proposals_pending.set(s.pending as i64);
        self.quota_backend_bytes.set(s.quota_backend_bytes as f64);
        set_only(&self.server_version, s.server_version);
        set_only(&self.server_id, &format!("{:x}", s.member_id));
        set_only(&self.cluster_version, s.cluster_version);
        set_only(&self.build_info, env!("CARGO_PKG_VERSION"));
        self.db_total_size.set(s.db_size_bytes);
        self.db_total_size_debugging.set(s.db_size_bytes);
        self.db_total_size_in_use.set(s.db_size_in_use_bytes);
        self.watcher_total.set(s.watchers as i64);
        self.watch_stream_total.set(s.watch_streams as i64);
        self.slow_watcher_total.set(s.slow_watchers as i64);
        self.current_revision.set(s.current_revision);
        self.compact_revision.set(s.compact_revision);
        let local = format!("{:x}", s.member_id);
        self.active_peers.reset();
        for peer in &s.active_peers {
            self.active_peers
                .with_label_values(&[local.as_str(), &format!("{peer:x}")])
                .set(1);
        }
    }

    /// A leader's heartbeat to `to` is on its way (the round trip is measured from the
    /// first heartbeat not yet answered).
    pub fn heartbeat_sent(&self, to: u64) {
        if let Ok(mut h) = self.heartbeats.lock() {
            let now = Instant::now();
            let since = h.entry(to).or_insert(now);
            if now.duration_since(*since) > HEARTBEAT_ANSWER_MAX {
                *since = now;
            }
        }
    }

    /// `from` answered a heartbeat: one round trip observed.
    pub fn heartbeat_answered(&self, from: u64) {
        let sent = self
            .heartbeats
            .lock()
            .ok()
            .and_then(|mut h| h.remove(&from));
        if let Some(t) = sent {
            let rtt = t.elapsed();
            self.peer_rtt
                .with_label_values(&[&format!("{from:x}")])
                .observe(rtt.as_secs_f64());
            crate::peer_stats::get().round_trip(from, rtt);
        }
    }

    /// A raft message to `to` was handed to its peer queue.
    pub fn message_queued(&self, to: u64, heartbeat: bool) {
        if heartbeat {
            self.heartbeat_sent(to);
        }
    }

    /// A raft message to `to` was dropped: its peer queue was full or closed.
    pub fn message_dropped(&self, to: u64, heartbeat: bool) {
        self.peer_send_failed(to);
        if heartbeat {
            self.heartbeat_send_failures.inc();
        } else {
            crate::peer_stats::get().send_failed(to);
        }
    }

    /// A raft message of `bytes` on the wire came in from a peer; `from` keeps the sender's
    /// counter between messages of one stream (a label lookup per message cost ~1 % of a
    /// follower's CPU under a put load).
    pub fn peer_message_received(
        &self,
        m: &raft::eraftpb::Message,
        bytes: usize,
        from: &mut ReceivedFrom,
    ) {
        match &from.0 {
            Some((id, counter)) if *id == m.from => counter.inc_by(bytes as u64),
            _ => {
                let counter = self
                    .peer_received_bytes
                    .with_label_values(&[&format!("{:x}", m.from)]);
                counter.inc_by(bytes as u64);
                from.0 = Some((m.from, counter));
            }
        }
        match m.get_msg_type() {
            raft::eraftpb::MessageType::MsgHeartbeatResponse => self.heartbeat_answered(m.from),
            raft::eraftpb::MessageType::MsgAppend => {
                crate::peer_stats::get().append_received(bytes)
            }
            _ => {}
        }
    }

    pub fn peer_sent(&self, to: u64, bytes: usize) {
        self.peer_sent_bytes
            .with_label_values(&[&format!("{to:x}")])
            .inc_by(bytes as u64);
    }

    pub fn peer_send_failed(&self, to: u64) {
        self.peer_sent_failures
            .with_label_values(&[&format!("{to:x}")])
            .inc();
    }

    pub fn peer_receive_failed(&self, from: u64) {
        self.peer_received_failures
            .with_label_values(&[&format!("{from:x}")])
            .inc();
    }

    /// The stream to `remote` went down.
    pub fn peer_disconnected(&self, local: u64, remote: u64) {
        self.disconnected_peers
            .with_label_values(&[&format!("{local:x}"), &format!("{remote:x}")])
            .inc();
    }

    /// A WAL sync wrote and fdatasynced (a sync with nothing that must be durable does no
    /// I/O and is not observed). The time covers the buffered write and the fdatasync;
    /// `entries` is the group commit's size.
    pub fn wal_synced(&self, started: Instant, entries: usize) {
        self.wal_fsync.observe(started.elapsed().as_secs_f64());
        if entries > 0 {
            self.group_commit_entries.observe(entries as f64);
        }
    }

    /// An applied batch of `entries` took `took`; etcd counts each slow apply.
    pub fn applied_batch(&self, took: Duration, entries: usize) {
        if took > SLOW_APPLY && entries > 0 {
            self.slow_apply.inc();
        }
    }

    /// A linearizable read's ReadIndex ended (successfully or not) after waiting since `started`.
    pub fn read_index_done(&self, started: Instant, ok: bool) {
        let waited = started.elapsed();
        self.read_index_wait.observe(waited.as_secs_f64());
        if waited > SLOW_READ_INDEX {
            self.slow_read_indexes.inc();
        }
        if !ok {
            self.read_indexes_failed.inc();
        }
    }

    /// Runs a defragmentation: inflight while it runs, its duration observed.
    pub fn defragmenting<T>(&self, f: impl FnOnce() -> T) -> T {
        self.defrag_inflight.set(1);
        let out = timed(&self.backend_defrag, f);
        self.defrag_inflight.set(0);
        out
    }

    /// A lease granted with `ttl` seconds (applied: every member counts it, as etcd).
    pub fn lease_granted(&self, ttl: i64) {
        self.lease_granted.inc();
        self.lease_ttl.observe(ttl as f64);
    }

    /// A put of `bytes` of key and value applied on this member; `created` when the key
    /// did not exist.
    pub fn put_applied(&self, bytes: usize, created: bool) {
        count(&self.put);
        self.total_put_size.add(bytes as i64);
        if created {
            self.keys_total.inc();
        }
    }

    /// A delete of `keys` keys applied on this member.
    pub fn deleted(&self, keys: usize) {
        count(&self.delete);
        self.keys_total.sub(keys as i64);
    }

    /// Counts the keys of the store once (at start, after a snapshot is installed): from then
    /// on puts and deletes keep `etcd_debugging_mvcc_keys_total` as etcd's keysGauge, so a
    /// scrape never walks the key index. Call only where no write is applied meanwhile.
    pub fn recount_keys(&self, store: &oxcd_storage::Store) {
        let all = oxcd_storage::RangeOptions {
            limit: 0,
            rev: 0,
            count_only: true,
            ..Default::default()
        };
        let keys = store.range(b"\0", b"\0", all).map(|r| r.count).unwrap_or(0);
        self.keys_total.set(keys as i64);
    }

    /// A proposal that failed (timed out, lost its leader, the member stopped).
    pub fn proposal_failed(&self) {
        self.proposals_failed.inc();
    }

    /// The expiry of a certificate file this member uses in `role` (client or peer).
    pub fn set_cert_expiry(&self, file: &str, role: &str, not_after_secs: i64) {
        self.cert_expiry
            .with_label_values(&[file, role])
            .set(not_after_secs as f64);
    }
}

/// The earliest notAfter (seconds since the epoch) of the certificates in a PEM file.
fn earliest_not_after(path: &std::path::Path) -> Option<i64> {
    let data = std::fs::read(path).ok()?;
    x509_parser::pem::Pem::iter_from_buffer(&data)
        .filter_map(|pem| pem.ok())
        .filter(|pem| pem.label == "CERTIFICATE")
        .filter_map(|pem| {
            let (_, cert) = x509_parser::parse_x509_certificate(&pem.contents).ok()?;
            Some(cert.validity().not_after.timestamp())
        })
        .min()
}

/// The `prometheus` crate's process collector, with `process_cpu_seconds_total` to the
/// clock tick as Go's collector reports it (the crate rounds it down to whole seconds, too
/// coarse for `rate()` over a scrape interval or two).
#[cfg(target_os = "linux")]
struct ProcessMetrics(prometheus::process_collector::ProcessCollector);

#[cfg(target_os = "linux")]
impl prometheus::core::Collector for ProcessMetrics {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let mut families = self.0.collect();
        let Some(cpu_secs) = process_cpu_secs() else {
            return families;
        };
        for f in &mut families {
            if f.name() == "process_cpu_seconds_total" {
                for m in f.mut_metric() {
                    let mut c = prometheus::proto::Counter::default();
                    c.set_value(cpu_secs);
                    m.set_counter(c);
                }
            }
        }
        families
    }
}

/// User and system CPU time of this process in seconds, from `/proc/self/stat` (utime and
/// stime, in USER_HZ = 100 ticks per second, a constant of Linux's ABI).
#[cfg(target_os = "linux")]
pub fn process_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// Sets the one series of an info gauge (`{label="value"} 1`).
fn set_only(v: &IntGaugeVec, value: &str) {
    v.with_label_values(&[value]).set(1);
}

/// Counts a put, delete, range or txn in both twins.
pub fn count(pair: &[IntCounter; 2]) {
    pair[0].inc();
    pair[1].inc();
}

/// The values read at scrape time, from their owners.
#[derive(Debug, Default, Clone)]
pub struct Sample {
    pub member_id: u64,
    /// The leader's ID, 0 when none is known.
    pub leader: u64,
    pub is_learner: bool,
    pub committed: u64,
    pub applied: u64,
    /// Proposals of this member waiting to be applied.
    pub pending: usize,
    pub quota_backend_bytes: u64,
    pub server_version: &'static str,
    pub cluster_version: &'static str,
    pub db_size_bytes: i64,
    pub db_size_in_use_bytes: i64,
    pub watchers: usize,
    pub watch_streams: usize,
    pub slow_watchers: usize,
    pub current_revision: i64,
    pub compact_revision: i64,
    /// Peers this member has a live stream to.
    pub active_peers: Vec<u64>,
}

/// The gRPC codes by number, with go-grpc-prometheus's names.
pub const GRPC_CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// How a gRPC method streams (go-grpc-prometheus's `grpc_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcType {
    Unary,
    ServerStream,
    BidiStream,
}

impl GrpcType {
    pub fn label(self) -> &'static str {
        match self {
            GrpcType::Unary => "unary",
            GrpcType::ServerStream => "server_stream",
            GrpcType::BidiStream => "bidi_stream",
        }
    }
}

/// Every gRPC method served: (service, method, type). etcd initialises the counters of its
/// `etcdserverpb` methods at start (go-grpc-prometheus's InitializeMetrics); Lock and
/// Election series appear when first used, as with etcd.
pub const GRPC_METHODS: &[(&str, &str, GrpcType)] = {
    use GrpcType::*;
    &[
        ("etcdserverpb.KV", "Range", Unary),
        ("etcdserverpb.KV", "Put", Unary),
        ("etcdserverpb.KV", "DeleteRange", Unary),
        ("etcdserverpb.KV", "Txn", Unary),
        ("etcdserverpb.KV", "Compact", Unary),
        ("etcdserverpb.Watch", "Watch", BidiStream),
        ("etcdserverpb.Lease", "LeaseGrant", Unary),
        ("etcdserverpb.Lease", "LeaseRevoke", Unary),
        ("etcdserverpb.Lease", "LeaseKeepAlive", BidiStream),
        ("etcdserverpb.Lease", "LeaseTimeToLive", Unary),
        ("etcdserverpb.Lease", "LeaseLeases", Unary),
        ("etcdserverpb.Cluster", "MemberAdd", Unary),
        ("etcdserverpb.Cluster", "MemberRemove", Unary),
        ("etcdserverpb.Cluster", "MemberUpdate", Unary),
        ("etcdserverpb.Cluster", "MemberList", Unary),
        ("etcdserverpb.Cluster", "MemberPromote", Unary),
        ("etcdserverpb.Maintenance", "Alarm", Unary),
        ("etcdserverpb.Maintenance", "Status", Unary),
        ("etcdserverpb.Maintenance", "Defragment", Unary),
        ("etcdserverpb.Maintenance", "Hash", Unary),
        ("etcdserverpb.Maintenance", "HashKV", Unary),
        ("etcdserverpb.Maintenance", "Snapshot", ServerStream),
        ("etcdserverpb.Maintenance", "MoveLeader", Unary),
        ("etcdserverpb.Auth", "AuthEnable", Unary),
        ("etcdserverpb.Auth", "AuthDisable", Unary),
        ("etcdserverpb.Auth", "Authenticate", Unary),
        ("etcdserverpb.Auth", "UserAdd", Unary),
        ("etcdserverpb.Auth", "UserGet", Unary),
        ("etcdserverpb.Auth", "UserList", Unary),
        ("etcdserverpb.Auth", "UserDelete", Unary),
        ("etcdserverpb.Auth", "UserChangePassword", Unary),
        ("etcdserverpb.Auth", "UserGrantRole", Unary),
        ("etcdserverpb.Auth", "UserRevokeRole", Unary),
        ("etcdserverpb.Auth", "RoleAdd", Unary),
        ("etcdserverpb.Auth", "RoleGet", Unary),
        ("etcdserverpb.Auth", "RoleList", Unary),
        ("etcdserverpb.Auth", "RoleDelete", Unary),
        ("etcdserverpb.Auth", "RoleGrantPermission", Unary),
        ("etcdserverpb.Auth", "RoleRevokePermission", Unary),
        ("v3lockpb.Lock", "Lock", Unary),
        ("v3lockpb.Lock", "Unlock", Unary),
        ("v3electionpb.Election", "Campaign", Unary),
        ("v3electionpb.Election", "Proclaim", Unary),
        ("v3electionpb.Election", "Leader", Unary),
        ("v3electionpb.Election", "Observe", ServerStream),
        ("v3electionpb.Election", "Resign", Unary),
    ]
};

/// go-grpc-prometheus's server metrics, resolved per method once so that a call costs a
/// map lookup and atomic adds.
pub struct GrpcMetrics {
    handling: HistogramVec,
    by_path: HashMap<String, MethodMetrics>,
}

/// The series of one gRPC method.
pub struct MethodMetrics {
    pub grpc_type: GrpcType,
    labels: [&'static str; 3],
    /// started, msg_received, msg_sent: created at start for `etcdserverpb` methods, at
    /// first use for the others (so that they are not exported before, as with etcd).
    counters: OnceLock<[IntCounter; 3]>,
    vecs: [IntCounterVec; 3],
    handled: IntCounterVec,
    handling: HistogramVec,
}

impl MethodMetrics {
    fn counters(&self) -> &[IntCounter; 3] {
        self.counters.get_or_init(|| {
            let [a, b, c] = &self.vecs;
            [a, b, c].map(|v| v.with_label_values(&self.labels))
        })
    }

    /// `grpc_server_started_total`.
    pub fn started(&self) -> &IntCounter {
        &self.counters()[0]
    }

    /// `grpc_server_msg_received_total`.
    pub fn msg_received(&self) -> &IntCounter {
        &self.counters()[1]
    }

    /// `grpc_server_msg_sent_total`.
    pub fn msg_sent(&self) -> &IntCounter {
        &self.counters()[2]
    }

    /// The call ended with gRPC code `code` after `took`.
    pub fn handled(&self, code: usize, took: Duration) {
        let [t, s, m] = self.labels;
        let name = GRPC_CODES.get(code).copied().unwrap_or("Unknown");
        self.handled.with_label_values(&[t, s, m, name]).inc();
        if get().extensive() {
            self.handling
                .with_label_values(&[t, s, m])
                .observe(took.as_secs_f64());
        }
    }
}

impl GrpcMetrics {
    fn new(r: &Registry) -> GrpcMetrics {
        let l3 = &["grpc_type", "grpc_service", "grpc_method"];
        let l4 = &["grpc_type", "grpc_service", "grpc_method", "grpc_code"];
        let started = counter_vec(
            r,
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            l3,
        );
        let handled = counter_vec(
            r,
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            l4,
        );
        let msg_received = counter_vec(
            r,
            "grpc_server_msg_received_total",
            "Total number of RPC stream messages received on the server.",
            l3,
        );
        let msg_sent = counter_vec(
            r,
            "grpc_server_msg_sent_total",
            "Total number of gRPC stream messages sent by the server.",
            l3,
        );
        let handling = reg(r, HistogramVec::new(
            HistogramOpts::new("grpc_server_handling_seconds", "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            l3,
        ).expect("valid metric"));
        let mut by_path = HashMap::new();
        for &(service, method, grpc_type) in GRPC_METHODS {
            let labels = [grpc_type.label(), service, method];
            let m = MethodMetrics {
                grpc_type,
                labels,
                counters: OnceLock::new(),
                vecs: [started.clone(), msg_received.clone(), msg_sent.clone()],
                handled: handled.clone(),
                handling: handling.clone(),
            };
            if service.starts_with("etcdserverpb.") {
                m.counters();
                for code in GRPC_CODES {
                    handled.with_label_values(&[labels[0], service, method, code]);
                }
            }
            by_path.insert(format!("/{service}/{method}"), m);
        }
        GrpcMetrics { handling, by_path }
    }

    /// The series of the method at this gRPC path, None for an unknown one.
    pub fn method(&self, path: &str) -> Option<&MethodMetrics> {
        self.by_path.get(path)
    }

    /// Creates the handling-time series of every `etcdserverpb` method (`--metrics=extensive`).
    pub fn init_handling(&self) {
        for &(service, method, t) in GRPC_METHODS {
            if service.starts_with("etcdserverpb.") {
                self.handling
                    .with_label_values(&[t.label(), service, method]);
            }
        }
    }
}

/// The received-bytes counter of the peer a stream last heard from (see
/// [`Metrics::peer_message_received`]).
#[derive(Default)]
pub struct ReceivedFrom(Option<(u64, prometheus::IntCounter)>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_etcds_names_types_and_buckets() {
        let m = get();
        m.wal_fsync.observe(0.0015);
        let text = String::from_utf8(m.render(&Sample {
            member_id: 0xabc,
            leader: 0xabc,
            server_version: "3.4.23",
            cluster_version: "3.4",
            ..Default::default()
        }))
        .expect("utf-8");
        for line in [
            "# TYPE etcd_server_proposals_committed_total gauge",
            "# TYPE etcd_server_leader_changes_seen_total counter",
            "# TYPE etcd_disk_wal_fsync_duration_seconds histogram",
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.002\"} 1",
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"8.192\"} 1",
            "etcd_server_is_leader 1",
            "etcd_server_id{server_id=\"abc\"} 1",
            "grpc_server_handled_total{grpc_code=\"Unavailable\",grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("v3lockpb"), "Lock series before first use");
        let lock = m
            .grpc
            .method("/v3lockpb.Lock/Lock")
            .expect("Lock is served");
        lock.started().inc();
        let text = String::from_utf8(m.render(&Sample::default())).expect("utf-8");
        let started = "grpc_server_started_total{grpc_method=\"Lock\",grpc_service=\"v3lockpb.Lock\",grpc_type=\"unary\"} 1";
        assert!(text.contains(started), "{text}");
    }

    #[test]
    fn a_heartbeat_answer_is_one_round_trip() {
        let m = get();
        m.heartbeat_sent(7);
        m.heartbeat_sent(7);
        m.heartbeat_answered(7);
        m.heartbeat_answered(7);
        assert_eq!(m.peer_rtt.with_label_values(&["7"]).get_sample_count(), 1);
    }
}
