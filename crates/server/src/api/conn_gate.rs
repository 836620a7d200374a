//! Who may hold a client connection, and for how long before it proves to be a client.
//!
//! A connection goes through two stages, each with its own bounds, so that sockets that
//! never send a request cannot lock out the clients that do:
//!
//! 1. **Handshake**: from `accept` until the first bytes of a request arrive (after the TLS
//!    handshake on https ports), at most [`HANDSHAKE_TIMEOUT`]. At most [`HANDSHAKES_MAX`]
//!    connections per listener are in their handshake at a time, at most
//!    [`HANDSHAKES_PER_IP_MAX`] from one IP address; the others wait for a turn (in order,
//!    within the same timeout) rather than being closed, as a client that opens hundreds of
//!    connections at once (`etcdctl check perf --load=l`) would otherwise be refused and
//!    back off for seconds. Waiting is bounded too: at most [`ConnLimits::admitted_max`]
//!    connections per listener and [`ConnLimits::admitted_per_ip_max`] per address are
//!    waiting or in their handshake; past these the connection is closed.
//! 2. **Established**: at most `--max-connections` per listener (etcd's flag) and at most
//!    [`ConnLimits::connections_per_ip_max`] from one IP address. A connection that gets
//!    no slot is closed; the established ones are served as before, whatever arrives.
//!
//! Each established connection carries a [`ConnInfo`] into its requests, so that services
//! can bound what one connection holds (watchers).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections per listener in their handshake stage, at most.
pub const HANDSHAKES_MAX: usize = 256;
/// Connections from one IP address in their handshake stage, at most.
/// (64: a client starting many connections at once, as `etcdctl check perf --load=l`'s 500
/// clients do, gets most of them through its first try; with 16 it was refused for minutes.)
pub const HANDSHAKES_PER_IP_MAX: usize = 64;
/// Time from `accept` to the first bytes of a request (TLS handshake included), at most.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Established connections from one IP address, at most, as a share of `--max-connections`
/// (a half: one host cannot take every slot, and a proxy or `etcdctl check perf --load=l`,
/// 500 connections from one address, still gets its connections under the default 1024).
pub const CONNECTIONS_PER_IP_SHARE: usize = 2;

/// An established connection, as its requests see it (an extension of each request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    /// Unique per connection in this process.
    pub id: u64,
    pub peer: SocketAddr,
}

/// The bounds of one listener's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    pub connections_max: usize,
    pub connections_per_ip_max: usize,
}

impl ConnLimits {
    /// From `--max-connections`.
    pub fn new(connections_max: usize) -> ConnLimits {
        ConnLimits {
            connections_max: connections_max.max(1),
            connections_per_ip_max: (connections_max / CONNECTIONS_PER_IP_SHARE).max(1),
        }
    }

    /// Connections waiting for their handshake or in it, at most: as many as may be
    /// established, or [`HANDSHAKES_MAX`] if that is more.
    pub fn admitted_max(&self) -> usize {
        self.connections_max.max(HANDSHAKES_MAX)
    }

    /// The same from one IP address.
    pub fn admitted_per_ip_max(&self) -> usize {
        self.connections_per_ip_max.max(HANDSHAKES_PER_IP_MAX)
    }
}

/// Counts per key (an IP address, a connection), up to a maximum each.
#[derive(Debug)]
pub struct PerKey<K> {
    max: usize,
    counts: Mutex<HashMap<K, usize>>,
}

impl<K: std::hash::Hash + Eq + Copy> PerKey<K> {
    pub fn new(max: usize) -> Arc<PerKey<K>> {
        Arc::new(PerKey {
            max,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// One more for `key`, if it has fewer than the maximum; given back when dropped.
    pub fn take(self: &Arc<PerKey<K>>, key: K) -> Option<KeySlot<K>> {
        let mut counts = self.counts.lock().ok()?;
        let n = counts.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(KeySlot {
            of: self.clone(),
            key,
        })
    }
}

/// One place in a [`PerKey`] count, given back when dropped.
#[derive(Debug)]
pub struct KeySlot<K: std::hash::Hash + Eq + Copy> {
    of: Arc<PerKey<K>>,
    key: K,
}

impl<K: std::hash::Hash + Eq + Copy> Drop for KeySlot<K> {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.of.counts.lock() {
            if let Some(n) = counts.get_mut(&self.key) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&self.key);
                }
            }
        }
    }
}

type PerIp = PerKey<IpAddr>;
type IpSlot = KeySlot<IpAddr>;

/// One semaphore per IP address, made when an address first needs one and dropped once
/// nobody holds or waits for its permits.
#[derive(Debug)]
struct IpSemaphores {
    permits: usize,
    map: Mutex<IpSemaphoreMap>,
}

#[derive(Debug, Default)]
struct IpSemaphoreMap {
    by_ip: HashMap<IpAddr, Arc<Semaphore>>,
    /// The map is swept of idle semaphores when it reaches this many entries.
    sweep_at: usize,
}

/// Entries below which the per-address semaphores are never swept.
const IP_SEMAPHORES_SWEEP_MIN: usize = 64;

impl IpSemaphores {
    fn new(permits: usize) -> IpSemaphores {
        IpSemaphores {
            permits,
            map: Mutex::new(IpSemaphoreMap {
                by_ip: HashMap::new(),
                sweep_at: IP_SEMAPHORES_SWEEP_MIN,
            }),
        }
    }

    fn of(&self, ip: IpAddr) -> Option<Arc<Semaphore>> {
        let mut map = self.map.lock().ok()?;
        if map.by_ip.len() >= map.sweep_at {
            // An entry only the map holds has no permit out and no waiter (both hold a
            // clone). The entries are bounded by the admitted connections' addresses.
            map.by_ip.retain(|_, s| Arc::strong_count(s) > 1);
            map.sweep_at = (map.by_ip.len() * 2).max(IP_SEMAPHORES_SWEEP_MIN);
        }
        let permits = self.permits;
        Some(
            map.by_ip
                .entry(ip)
                .or_insert_with(|| Arc::new(Semaphore::new(permits)))
                .clone(),
        )
    }
}

/// Why a connection was closed by the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// More than [`ConnLimits::admitted_max`] waiting for their handshake or in it.
    HandshakesFull,
    /// More than [`ConnLimits::admitted_per_ip_max`] of them from this address.
    HandshakesPerIp,
    ConnectionsFull,
    ConnectionsPerIp,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::HandshakesFull => "too many connections waiting for their handshake",
            Refusal::HandshakesPerIp => {
                "too many connections waiting for their handshake from this address"
            }
            Refusal::ConnectionsFull => "--max-connections reached",
            Refusal::ConnectionsPerIp => "too many connections from this address",
        })
    }
}

/// A connection let in, waiting for its turn to handshake ([`Admitted::handshake`]).
#[derive(Debug)]
pub struct Admitted {
    _slot: OwnedSemaphorePermit,
    _ip: IpSlot,
    gate: Arc<Gate>,
    peer: SocketAddr,
}

/// A connection in its handshake stage; [`Handshake::establish`] moves it on.
#[derive(Debug)]
pub struct Handshake {
    _admitted: Admitted,
    _turn: OwnedSemaphorePermit,
    _ip_turn: OwnedSemaphorePermit,
    gate: Arc<Gate>,
    peer: SocketAddr,
}

/// An established connection's slots, given back when dropped.
#[derive(Debug)]
pub struct Established {
    _slot: OwnedSemaphorePermit,
    _ip: IpSlot,
    pub info: ConnInfo,
}

/// The two stages' bounds of one listener.
#[derive(Debug)]
pub struct Gate {
    admitted: Arc<Semaphore>,
    admitted_per_ip: Arc<PerIp>,
    handshakes: Arc<Semaphore>,
    handshakes_per_ip: IpSemaphores,
    connections: Arc<Semaphore>,
    connections_per_ip: Arc<PerIp>,
}

/// Connection IDs are unique across listeners.
static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

impl Gate {
    pub fn new(limits: ConnLimits) -> Arc<Gate> {
        Arc::new(Gate {
            admitted: Arc::new(Semaphore::new(limits.admitted_max())),
            admitted_per_ip: PerIp::new(limits.admitted_per_ip_max()),
            handshakes: Arc::new(Semaphore::new(HANDSHAKES_MAX)),
            handshakes_per_ip: IpSemaphores::new(HANDSHAKES_PER_IP_MAX),
            connections: Arc::new(Semaphore::new(limits.connections_max)),
            connections_per_ip: PerIp::new(limits.connections_per_ip_max),
        })
    }

    /// A just-accepted connection from `peer` is let in to wait for its handshake, if
    /// there is room.
    pub fn admit(self: &Arc<Gate>, peer: SocketAddr) -> Result<Admitted, Refusal> {
        let ip = self
            .admitted_per_ip
            .take(peer.ip())
            .ok_or(Refusal::HandshakesPerIp)?;
        let slot = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::HandshakesFull)?;
        Ok(Admitted {
            _slot: slot,
            _ip: ip,
            gate: self.clone(),
            peer,
        })
    }
}

impl Admitted {
    /// Waits for a turn to handshake: a place among its address's and the listener's
    /// connections in their handshake, in the order they asked. None if the gate is gone.
    pub async fn handshake(self) -> Option<Handshake> {
        let gate = self.gate.clone();
        let ip_turn = gate
            .handshakes_per_ip
            .of(self.peer.ip())?
            .acquire_owned()
            .await
            .ok()?;
        let turn = gate.handshakes.clone().acquire_owned().await.ok()?;
        let peer = self.peer;
        Some(Handshake {
            _admitted: self,
            _turn: turn,
            _ip_turn: ip_turn,
            gate,
            peer,
        })
    }
}

impl Handshake {
    /// The first bytes of a request arrived: take an established slot (and give back the
    /// handshake's), if there is room.
    pub fn establish(self) -> Result<Established, Refusal> {
        let gate = &self.gate;
        let ip = gate
            .connections_per_ip
            .take(self.peer.ip())
            .ok_or(Refusal::ConnectionsPerIp)?;
        let slot = gate
            .connections
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::ConnectionsFull)?;
        Ok(Established {
            _slot: slot,
            _ip: ip,
            info: ConnInfo {
                id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
                peer: self.peer,
            },
        })
    }
}

/// A stream whose first bytes were read already (to see that a request began): they are
/// read again first.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Prefixed<S> {
        Prefixed {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(ip: &str, port: u16) -> SocketAddr {
        SocketAddr::new(ip.parse().expect("ip"), port)
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    /// A turn to handshake, or None if it does not come within 50 ms.
    async fn turn(admitted: Admitted) -> Option<Handshake> {
        tokio::time::timeout(Duration::from_millis(50), admitted.handshake())
            .await
            .ok()
            .flatten()
    }

    #[test]
    fn one_address_cannot_take_every_slot() {
        block_on(async {
            let gate = Gate::new(ConnLimits::new(8));
            let mut held = Vec::new();
            for port in 0..HANDSHAKES_PER_IP_MAX as u16 {
                let a = gate.admit(addr("10.0.0.1", port)).expect("room");
                held.push(turn(a).await.expect("a turn"));
            }
            // Past the bound an address waits (8 / 2 established < 64: 64 admitted at most).
            assert_eq!(
                gate.admit(addr("10.0.0.1", 99)).err(),
                Some(Refusal::HandshakesPerIp)
            );
            let other = gate.admit(addr("10.0.0.2", 1)).expect("another address");
            let other = turn(other).await.expect("another address gets a turn");
            // Established: half of --max-connections per address.
            let a = held.pop().expect("one").establish().expect("room");
            let b = held.pop().expect("one").establish().expect("room");
            let more: Vec<Established> = (0..2)
                .map(|_| held.pop().expect("one").establish().expect("room"))
                .collect();
            assert_eq!(
                held.pop().expect("one").establish().err(),
                Some(Refusal::ConnectionsPerIp)
            );
            assert_ne!(a.info.id, b.info.id);
            let c = other.establish().expect("another address still gets in");
            drop((a, b, c, more));
            // Slots come back when connections end.
            let again = gate.admit(addr("10.0.0.1", 7)).expect("room again");
            let again = turn(again).await.expect("a turn again");
            assert!(again.establish().is_ok());
        });
    }

    /// A burst from one address over the handshake bound waits for turns, in order, instead
    /// of being closed: each turn given back lets the next waiter in.
    #[test]
    fn a_burst_from_one_address_waits_for_turns() {
        block_on(async {
            let gate = Gate::new(ConnLimits::new(1024));
            let mut turns = Vec::new();
            for port in 0..HANDSHAKES_PER_IP_MAX as u16 {
                let a = gate.admit(addr("10.0.0.1", port)).expect("room");
                turns.push(turn(a).await.expect("a turn"));
            }
            let waiting: Vec<Admitted> = (0..100)
                .map(|i| {
                    gate.admit(addr("10.0.0.1", 1000 + i))
                        .expect("admitted to wait")
                })
                .collect();
            let mut waiters = tokio::task::JoinSet::new();
            for (i, a) in waiting.into_iter().enumerate() {
                waiters.spawn(async move { (i, a.handshake().await) });
                tokio::task::yield_now().await; // queued in this order
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(
                waiters.try_join_next().is_none(),
                "no turn while 64 are taken"
            );
            let mut order = Vec::new();
            for _ in 0..100 {
                turns.pop(); // a handshake ends: one waiter goes on
                let (i, h) = waiters
                    .join_next()
                    .await
                    .expect("a waiter")
                    .expect("joined");
                turns.insert(0, h.expect("a turn"));
                order.push(i);
            }
            assert_eq!(
                order,
                (0..100).collect::<Vec<_>>(),
                "turns in arrival order"
            );
            // The waiting room is bounded: 512 (half of 1024) per address, waiting or not.
            let more: Vec<Admitted> = (0..512 - 64)
                .map(|i| {
                    gate.admit(addr("10.0.0.1", 5000 + i))
                        .expect("room to wait")
                })
                .collect();
            assert_eq!(
                gate.admit(addr("10.0.0.1", 9999)).err(),
                Some(Refusal::HandshakesPerIp)
            );
            drop(more);
        });
    }

    #[test]
    fn the_listener_bound_holds_across_addresses() {
        block_on(async {
            let gate = Gate::new(ConnLimits::new(2));
            let mut est = Vec::new();
            for ip in ["10.0.0.1", "10.0.0.2"] {
                let a = gate.admit(addr(ip, 1)).expect("room");
                est.push(turn(a).await.expect("a turn").establish());
            }
            assert!(est.iter().all(|e| e.is_ok()));
            let third = gate
                .admit(addr("10.0.0.3", 1))
                .expect("handshakes have room");
            let third = turn(third).await.expect("a turn");
            assert_eq!(third.establish().err(), Some(Refusal::ConnectionsFull));
        });
    }

    #[test]
    fn prefixed_reads_its_prefix_first() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            use tokio::io::AsyncReadExt;
            let mut s = Prefixed::new(b"GE".to_vec(), &b"T / HTTP/1.1"[..]);
            let mut out = String::new();
            s.read_to_string(&mut out).await.expect("read");
            assert_eq!(out, "GET / HTTP/1.1");
        });
    }
}
