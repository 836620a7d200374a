//! etcd's v2 statistics of the raft traffic (`etcdserver/api/v2stats`), served by
//! `/v2/stats/self` and `/v2/stats/leader`: the append requests this member sent and
//! received with their recent rates, and per follower the sends that succeeded or failed
//! and the round-trip latencies.
//!
//! Counted where they happen: appends sent by the raft loop as it hands them to the peer
//! transport (etcd counts them in `Transport.Send`), appends received as their frames
//! arrive (etcd: `EtcdServer.Process`), drops by the transport's hooks in `metrics`.
//! Latency: etcd times the write of each append to its stream, a figure of the local
//! buffer more than of the follower; oxcd reports the heartbeat round trips it measures
//! for `etcd_network_peer_round_trip_time_seconds`, in milliseconds as etcd's fields.
//!
//! Part of the base: every wing may import it; it imports no wing.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// etcd's `queueCapacity`: the rates are taken over the last this many requests.
pub const RATE_SAMPLES_MAX: usize = 200;
/// etcd: a rate whose last request is older than this is zero.
pub const RATE_STALE_AFTER: Duration = Duration::from_secs(1);

/// The last requests of one direction, for etcd's `statsQueue.Rate`.
#[derive(Default)]
struct RateQueue {
    samples: VecDeque<(Instant, usize)>,
    bytes: usize,
}

impl RateQueue {
    fn insert(&mut self, at: Instant, bytes: usize) {
        if self.samples.len() >= RATE_SAMPLES_MAX {
            if let Some((_, old)) = self.samples.pop_front() {
                self.bytes -= old;
            }
        }
        self.samples.push_back((at, bytes));
        self.bytes += bytes;
    }

    /// Requests per second and bytes per second over the samples; zero when the last one
    /// is stale (then the queue is cleared, as etcd does) or there is no span to divide by.
    fn rate(&mut self, now: Instant) -> (f64, f64) {
        let (Some(&(first, _)), Some(&(last, _))) = (self.samples.front(), self.samples.back())
        else {
            return (0.0, 0.0);
        };
        if now.saturating_duration_since(last) > RATE_STALE_AFTER {
            self.samples.clear();
            self.bytes = 0;
            return (0.0, 0.0);
        }
        let span_secs = last.duration_since(first).as_secs_f64();
        if span_secs <= 0.0 {
            return (0.0, 0.0);
        }
        (
            self.samples.len() as f64 / span_secs,
            self.bytes as f64 / span_secs,
        )
    }
}

/// One follower as the leader sees it (etcd's `FollowerStats`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Follower {
    pub success: u64,
    pub fail: u64,
    /// Latencies in milliseconds, over `samples` round trips.
    pub current_ms: f64,
    pub average_ms: f64,
    pub standard_deviation_ms: f64,
    pub minimum_ms: f64,
    pub maximum_ms: f64,
    samples: u64,
    average_square_ms: f64,
}

impl Follower {
    /// etcd's `FollowerStats.Succ` for the latency part: running mean and deviation.
    fn observe(&mut self, rtt: Duration) {
        let ms = rtt.as_secs_f64() * 1000.0;
        let n = self.samples as f64;
        self.samples += 1;
        self.current_ms = ms;
        if self.samples == 1 || ms < self.minimum_ms {
            self.minimum_ms = ms;
        }
        self.maximum_ms = self.maximum_ms.max(ms);
        self.average_ms = (self.average_ms * n + ms) / (n + 1.0);
        self.average_square_ms = (self.average_square_ms * n + ms * ms) / (n + 1.0);
        let variance = self.average_square_ms - self.average_ms * self.average_ms;
        self.standard_deviation_ms = variance.max(0.0).sqrt();
    }
}

/// What `/v2/stats/self` shows of the traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SelfTraffic {
    pub recv_append_requests: u64,
    pub recv_pkg_rate: f64,
    pub recv_bandwidth_rate: f64,
    pub send_append_requests: u64,
    pub send_pkg_rate: f64,
    pub send_bandwidth_rate: f64,
}

#[derive(Default)]
struct Inner {
    recv: u64,
    sent: u64,
    recv_rate: RateQueue,
    send_rate: RateQueue,
    followers: BTreeMap<u64, Follower>,
}

/// The member's counters (one per process: [`get`]).
pub struct PeerStats(Mutex<Option<Inner>>);

impl PeerStats {
    pub const fn new() -> PeerStats {
        PeerStats(Mutex::new(None))
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> Option<T> {
        let mut g = self.0.lock().ok()?;
        Some(f(g.get_or_insert_with(Inner::default)))
    }

    /// An append request of `bytes` to `to` was handed to the transport.
    pub fn append_sent(&self, to: u64, bytes: usize) {
        self.with(|s| {
            s.sent += 1;
            s.send_rate.insert(Instant::now(), bytes);
            s.followers.entry(to).or_default().success += 1;
        });
    }

    /// A message to `to` other than a heartbeat could not be sent.
    pub fn send_failed(&self, to: u64) {
        self.with(|s| s.followers.entry(to).or_default().fail += 1);
    }

    /// An append request of `bytes` arrived.
    pub fn append_received(&self, bytes: usize) {
        self.with(|s| {
            s.recv += 1;
            s.recv_rate.insert(Instant::now(), bytes);
        });
    }

    /// A heartbeat to `from` came back after `rtt`.
    pub fn round_trip(&self, from: u64, rtt: Duration) {
        self.with(|s| s.followers.entry(from).or_default().observe(rtt));
    }

    pub fn self_traffic(&self) -> SelfTraffic {
        let now = Instant::now();
        self.with(|s| {
            let (recv_pkg_rate, recv_bandwidth_rate) = s.recv_rate.rate(now);
            let (send_pkg_rate, send_bandwidth_rate) = s.send_rate.rate(now);
            SelfTraffic {
                recv_append_requests: s.recv,
                recv_pkg_rate,
                recv_bandwidth_rate,
                send_append_requests: s.sent,
                send_pkg_rate,
                send_bandwidth_rate,
            }
        })
        .unwrap_or_default()
    }

    /// The statistics of follower `id` (zeros when nothing was sent to it yet).
    pub fn follower(&self, id: u64) -> Follower {
        self.with(|s| s.followers.get(&id).copied().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Default for PeerStats {
    fn default() -> PeerStats {
        PeerStats::new()
    }
}

static STATS: PeerStats = PeerStats::new();

/// This member's statistics.
pub fn get() -> &'static PeerStats {
    &STATS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_etcds_running_mean_and_deviation() {
        let mut f = Follower::default();
        for ms in [2, 4, 4, 4, 5, 5, 7, 9] {
            f.observe(Duration::from_millis(ms));
        }
        assert_eq!(f.current_ms, 9.0);
        assert_eq!((f.minimum_ms, f.maximum_ms), (2.0, 9.0));
        assert!((f.average_ms - 5.0).abs() < 1e-9, "{f:?}");
        assert!((f.standard_deviation_ms - 2.0).abs() < 1e-9, "{f:?}");
    }

    #[test]
    fn counts_and_rates() {
        let s = PeerStats::new();
        assert_eq!(s.self_traffic(), SelfTraffic::default());
        s.append_sent(7, 100);
        std::thread::sleep(Duration::from_millis(20));
        s.append_sent(7, 300);
        s.append_received(50);
        s.send_failed(7);
        let t = s.self_traffic();
        assert_eq!((t.send_append_requests, t.recv_append_requests), (2, 1));
        assert!(t.send_pkg_rate > 0.0 && t.send_bandwidth_rate > t.send_pkg_rate);
        // One sample has no span: no rate, as no division by zero.
        assert_eq!(t.recv_pkg_rate, 0.0);
        let f = s.follower(7);
        assert_eq!((f.success, f.fail), (2, 1));
        assert_eq!(s.follower(8), Follower::default());
    }

    #[test]
    fn a_stale_rate_is_zero() {
        let mut q = RateQueue::default();
        let then = Instant::now();
        q.insert(then, 10);
        q.insert(then + Duration::from_millis(10), 10);
        assert!(q.rate(then + Duration::from_millis(20)).0 > 0.0);
        assert_eq!(q.rate(then + Duration::from_secs(3)), (0.0, 0.0));
        assert!(q.samples.is_empty());
        for _ in 0..RATE_SAMPLES_MAX + 5 {
            q.insert(then, 1);
        }
        assert_eq!(
            (q.samples.len(), q.bytes),
            (RATE_SAMPLES_MAX, RATE_SAMPLES_MAX)
        );
    }
}
