//! Who may hold a client connection, and for how long before it proves to be a client.
//!
//! A connection goes through two stages, each with its own bounds, so that sockets that
//! never send a request cannot lock out the clients that do:
//!
//! 1. **Handshake**: from `accept` until the first bytes of a request arrive (after the TLS
//!    handshake on https ports). At most [`HANDSHAKES_MAX`] connections per listener are in
//!    this stage, at most [`HANDSHAKES_PER_IP_MAX`] from one IP address, each for at most
//!    [`HANDSHAKE_TIMEOUT`]; past any of these the connection is closed.
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

/// The bounds of one listener's established connections.
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

/// Why a connection was closed by the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    HandshakesFull,
    HandshakesPerIp,
    ConnectionsFull,
    ConnectionsPerIp,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::HandshakesFull => "too many connections in their handshake",
            Refusal::HandshakesPerIp => "too many connections in their handshake from this address",
            Refusal::ConnectionsFull => "--max-connections reached",
            Refusal::ConnectionsPerIp => "too many connections from this address",
        })
    }
}

/// A connection in its handshake stage; [`Handshake::establish`] moves it on.
#[derive(Debug)]
pub struct Handshake {
    _slot: OwnedSemaphorePermit,
    _ip: IpSlot,
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
    handshakes: Arc<Semaphore>,
    handshakes_per_ip: Arc<PerIp>,
    connections: Arc<Semaphore>,
    connections_per_ip: Arc<PerIp>,
}

/// Connection IDs are unique across listeners.
static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

impl Gate {
    pub fn new(limits: ConnLimits) -> Arc<Gate> {
        Arc::new(Gate {
            handshakes: Arc::new(Semaphore::new(HANDSHAKES_MAX)),
            handshakes_per_ip: PerIp::new(HANDSHAKES_PER_IP_MAX),
            connections: Arc::new(Semaphore::new(limits.connections_max)),
            connections_per_ip: PerIp::new(limits.connections_per_ip_max),
        })
    }

    /// A just-accepted connection from `peer` enters its handshake stage, if there is room.
    pub fn handshake(self: &Arc<Gate>, peer: SocketAddr) -> Result<Handshake, Refusal> {
        let ip = self
            .handshakes_per_ip
            .take(peer.ip())
            .ok_or(Refusal::HandshakesPerIp)?;
        let slot = self
            .handshakes
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::HandshakesFull)?;
        Ok(Handshake {
            _slot: slot,
            _ip: ip,
            gate: self.clone(),
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

    #[test]
    fn one_address_cannot_take_every_slot() {
        let gate = Gate::new(ConnLimits::new(8));
        let mut held = Vec::new();
        for port in 0..HANDSHAKES_PER_IP_MAX as u16 {
            held.push(gate.handshake(addr("10.0.0.1", port)).expect("room"));
        }
        assert_eq!(
            gate.handshake(addr("10.0.0.1", 99)).err(),
            Some(Refusal::HandshakesPerIp)
        );
        let other = gate
            .handshake(addr("10.0.0.2", 1))
            .expect("another address");
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
        let again = gate.handshake(addr("10.0.0.1", 7)).expect("room again");
        assert!(again.establish().is_ok());
    }

    #[test]
    fn the_listener_bound_holds_across_addresses() {
        let gate = Gate::new(ConnLimits::new(2));
        let e1 = gate
            .handshake(addr("10.0.0.1", 1))
            .and_then(Handshake::establish);
        let e2 = gate
            .handshake(addr("10.0.0.2", 1))
            .and_then(Handshake::establish);
        assert!(e1.is_ok() && e2.is_ok());
        let third = gate
            .handshake(addr("10.0.0.3", 1))
            .expect("handshakes have room");
        assert_eq!(third.establish().err(), Some(Refusal::ConnectionsFull));
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
