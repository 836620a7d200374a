//! The peer proxy: in runs with `delay-peers` or `lossy-peers`, every member advertises its
//! peer URL on [`PROXY_PORT`] of its own address, where this proxy listens and forwards to
//! the member's real peer listener on [`PEER_PORT`]. Its outgoing connection is bound to
//! the address the incoming one came from, so the member on the far side sees (and checks
//! the certificate against) the dialer's own address, and the firewall's partitions, which
//! match on the source address and port 2380, still cut the same pairs.
//!
//! The proxy only moves bytes (TLS stays end to end). When asked it delays each chunk by a
//! random time in a range (each chunk leaves no earlier than the one before it: TCP keeps
//! a connection's order, and oxcd has one ordered stream per direction and pair, so raft
//! messages between two members are never reordered; messages on different connections
//! are), and it cuts connections after a random lifetime, which loses the raft messages in
//! flight and queued, as a network failure would.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rand::Rng as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::Instant;

use crate::cluster::member_ip;
use crate::netns::PEER_PORT;

/// Where the proxy of each member listens (on the member's own address).
pub const PROXY_PORT: u16 = 2381;
/// Bytes read at once; one chunk is delayed as a whole.
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks in flight per direction of a connection (back-pressure beyond that).
const CHUNKS_IN_FLIGHT_MAX: usize = 256;
/// How long a connection lives while cuts are on.
const CUT_AFTER_MS: std::ops::Range<u64> = 300..2_500;

/// What the faults set while the proxy runs.
#[derive(Debug, Default)]
pub struct ProxyCtl {
    /// Each chunk waits a random time in `[delay_min_ms, delay_max_ms]` (0: none).
    pub delay_min_ms: AtomicU64,
    pub delay_max_ms: AtomicU64,
    /// While set, every connection is cut after a random lifetime.
    pub cuts: AtomicBool,
    /// Connections cut so far, and chunks delayed.
    pub cut_count: AtomicU64,
    pub delayed_chunks: AtomicU64,
}

impl ProxyCtl {
    pub fn set_delay(&self, min_ms: u64, max_ms: u64) {
        self.delay_min_ms.store(min_ms, Ordering::Relaxed);
        self.delay_max_ms.store(max_ms, Ordering::Relaxed);
    }

    pub fn heal(&self) {
        self.set_delay(0, 0);
        self.cuts.store(false, Ordering::Relaxed);
    }

    fn delay(&self) -> Duration {
        let (lo, hi) = (
            self.delay_min_ms.load(Ordering::Relaxed),
            self.delay_max_ms.load(Ordering::Relaxed),
        );
        if hi == 0 {
            return Duration::ZERO;
        }
        self.delayed_chunks.fetch_add(1, Ordering::Relaxed);
        Duration::from_millis(rand::thread_rng().gen_range(lo.min(hi)..=hi))
    }
}

/// Starts one proxy per member (all that may ever run); they live as long as the runtime.
pub async fn start(members: usize, ctl: Arc<ProxyCtl>) -> anyhow::Result<()> {
    for idx in 0..members {
        let ip: IpAddr = member_ip(idx).parse()?;
        let l = TcpListener::bind(SocketAddr::new(ip, PROXY_PORT))
            .await
            .with_context(|| format!("proxy listen on {ip}:{PROXY_PORT}"))?;
        let ctl = ctl.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, from)) = l.accept().await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                tokio::spawn(forward(
                    s,
                    from.ip(),
                    SocketAddr::new(ip, PEER_PORT),
                    ctl.clone(),
                ));
            }
        });
    }
    Ok(())
}

/// Forwards one connection until either side closes it or a cut ends it.
async fn forward(inbound: TcpStream, from: IpAddr, to: SocketAddr, ctl: Arc<ProxyCtl>) {
    let Ok(sock) = TcpSocket::new_v4() else {
        return;
    };
    if sock.bind(SocketAddr::new(from, 0)).is_err() {
        return;
    }
    let Ok(Ok(outbound)) = tokio::time::timeout(Duration::from_secs(3), sock.connect(to)).await
    else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (ir, iw) = inbound.into_split();
    let (or, ow) = outbound.into_split();
    tokio::select! {
        _ = pipe(ir, ow, &ctl) => {}
        _ = pipe(or, iw, &ctl) => {}
        _ = cut_timer(&ctl) => {
            ctl.cut_count.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Returns once cuts are on and this connection's random lifetime is over.
async fn cut_timer(ctl: &ProxyCtl) {
    let lifetime = Duration::from_millis(rand::thread_rng().gen_range(CUT_AFTER_MS));
    let mut since: Option<Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if !ctl.cuts.load(Ordering::Relaxed) {
            since = None;
            continue;
        }
        let t = *since.get_or_insert_with(Instant::now);
        if t.elapsed() >= lifetime {
            return;
        }
    }
}

/// Copies one direction, each chunk released after its delay and never before the one
/// read before it.
async fn pipe(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    ctl: &ProxyCtl,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Instant, Vec<u8>)>(CHUNKS_IN_FLIGHT_MAX);
    let reader = async move {
        let mut last = Instant::now();
        loop {
            let mut buf = vec![0u8; CHUNK_BYTES];
            let n = match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.truncate(n);
            last = last.max(Instant::now() + ctl.delay());
            if tx.send((last, buf)).await.is_err() {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((at, buf)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if w.write_all(&buf).await.is_err() {
                return;
            }
        }
        let _ = w.shutdown().await;
    };
    tokio::join!(reader, writer);
}
