//! The peer transport: raft messages between members over (mutual) TLS on the peer URLs.
//!
//! Wire format (our own; etcd's peer protocol is not spoken): the dialer sends the 8-byte
//! magic `OXCDPEER`, its member ID and the cluster ID (u64 big-endian each) and a flags byte
//! (1 = my data dir is new, 2 = my member table says you have been in the cluster before);
//! the listener answers one byte, 0 = accepted, 1 = refused, or 2 = refused because the
//! dialer's data dir was wiped, 1 and 2 followed by a u16-length reason; then it closes. Then
//! frames `[len u32 BE][raft Message protobuf]` flow from dialer to listener only: each member
//! dials every other member once, for its own outgoing messages.
//!
//! Limits: each peer has a queue of [`PEER_QUEUE_MAX`] messages; when it is full (a slow or
//! dead peer) messages are dropped (raft retransmits), so a bad peer never blocks the raft
//! loop or grows memory. A frame larger than [`FRAME_BYTES_MAX`] closes the connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::mpsc::SyncSender;
use std::time::Duration;

use protobuf::Message as PbMessage;
use raft::eraftpb::{Message, MessageType};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use std::sync::{Arc, RwLock};

use crate::consensus::events::{RaftEvent, Stop, StopSender, Transport};
use crate::state::members::{Member, Members};

pub const MAGIC: &[u8; 8] = b"OXCDPEER";
/// A joining member's request for the membership (then 17 zero bytes).
pub const JOIN_MAGIC: &[u8; 8] = b"OXCDJOIN";
pub const PEER_QUEUE_MAX: usize = 4096;
pub const FRAME_BYTES_MAX: usize = 1 << 30;
const DIAL_TIMEOUT: Duration = Duration::from_secs(3);
const RETRY_MAX: Duration = Duration::from_secs(1);

type PeerQueue = (Vec<String>, mpsc::Sender<Message>);

/// Why a peer connection could not be made or was refused. The texts are what the log
/// says about the connection.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("bad peer URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("dial {addr} timed out")]
    DialTimeout { addr: String },
    #[error("dial {addr}: {source}")]
    Dial {
        addr: String,
        source: std::io::Error,
    },
    #[error("peer URL is https but no --peer-cert-file/--peer-key-file are set")]
    NoTlsConfig,
    #[error("TLS handshake timed out")]
    TlsTimeout,
    #[error("TLS handshake{with} failed: {reason}")]
    Tls { with: String, reason: String },
    #[error("peer closed the connection during the handshake: {0}")]
    ClosedInHandshake(String),
    #[error("no client certificate")]
    NoClientCert,
    #[error("peer certificate does not cover the address it connects from: {0}")]
    CertAddress(String),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{0}")]
    Handshake(&'static str),
    /// The other side refused this member (its reason).
    #[error("peer refused us: {0}")]
    RefusedBy(String),
    /// This side refused the other (the reason it was told).
    #[error("{0}")]
    Refused(String),
    /// This member's data dir was wiped; the member stops.
    #[error("{0}")]
    Wiped(String),
    #[error("membership answer of {0} bytes is too large")]
    AnswerTooLarge(usize),
    #[error("membership answer: {0}")]
    Json(#[from] serde_json::Error),
}

/// Maps an I/O error to [`PeerError::Io`] saying what was being done.
fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> PeerError {
    move |source| PeerError::Io { what, source }
}

/// Sends raft messages to peers through one queue per peer; dialers come and go with
/// membership changes.
pub struct PeerTransport {
    /// Per peer: the URLs its dialer uses, and its queue.
    queues: RwLock<HashMap<u64, PeerQueue>>,
    ctx: PeerContext,
    tls: Option<TlsConnector>,
    shutdown: watch::Receiver<bool>,
    runtime: tokio::runtime::Handle,
}

impl Transport for PeerTransport {
    fn send(&self, msgs: Vec<Message>) {
        let Ok(queues) = self.queues.read() else {
            return;
        };
        for m in msgs {
            if let Some((_, q)) = queues.get(&m.to) {
                if q.try_send(m).is_err() {
                    tracing::debug!("peer queue full or closed; dropping a raft message");
                }
            }
        }
    }

    fn set_peers(&self, members: &[Member]) {
        let Ok(mut queues) = self.queues.write() else {
            return;
        };
        queues.retain(|id, (urls, _)| members.iter().any(|m| m.id == *id && m.peer_urls == *urls));
        for p in members.iter().filter(|p| p.id != self.ctx.member_id) {
            if queues.contains_key(&p.id) {
                continue;
            }
            let (tx, rx) = mpsc::channel(PEER_QUEUE_MAX);
            queues.insert(p.id, (p.peer_urls.clone(), tx));
            self.runtime.spawn(dial_loop(
                self.ctx.clone(),
                p.clone(),
                self.tls.clone(),
                rx,
                self.shutdown.clone(),
            ));
        }
    }
}

/// When each peer's stream came up (etcd's transport `ActiveSince`); absent while it is
/// down. The strict reconfiguration checks read it.
#[derive(Debug, Default)]
pub struct PeerActivity {
    since: std::sync::Mutex<HashMap<u64, std::time::Instant>>,
}

impl PeerActivity {
    fn up(&self, id: u64) {
        if let Ok(mut m) = self.since.lock() {
            m.entry(id).or_insert_with(std::time::Instant::now);
        }
    }

    fn down(&self, id: u64) {
        if let Ok(mut m) = self.since.lock() {
            m.remove(&id);
        }
    }

    /// Since when the stream to `id` has been up, if it is.
    pub fn since(&self, id: u64) -> Option<std::time::Instant> {
        self.since.lock().ok().and_then(|m| m.get(&id).copied())
    }
}

/// What both directions need to know.
#[derive(Clone)]
pub struct PeerContext {
    /// Which peers this member is connected to, and since when.
    pub activity: Arc<PeerActivity>,
    pub member_id: u64,
    pub cluster_id: u64,
    pub raft_tx: SyncSender<RaftEvent>,
    pub client_cert_auth: bool,
    /// The member table, to tell whether a peer has been part of the cluster before.
    pub table: Arc<RwLock<Members>>,
    /// True while this member's data dir is new and nothing has been applied to it.
    pub fresh: Arc<dyn Fn() -> bool + Send + Sync>,
    /// The IP peer connections are made from (this member's listen-peer address).
    pub local_ip: Option<std::net::IpAddr>,
    /// Asks the member to stop (a wiped data dir found during a handshake).
    pub stop: StopSender,
}

const FLAG_FRESH: u8 = 1;
const FLAG_YOU_PUBLISHED: u8 = 2;

impl PeerContext {
    /// A member whose data dir was wiped must not rejoin under its old identity: raft would
    /// find its log gone (etcd refuses the same way). Asks the member to stop, saying what
    /// to do; returns the reason for the connection's error.
    fn wiped(&self) -> PeerError {
        let id = self.member_id;
        let why = format!(
            "this member ({id:x}) was part of the cluster before, but its data dir is empty: it was wiped or replaced. \
             Remove it from the cluster (etcdctl member remove {id:x}), add it again (etcdctl member add), \
             and start it with an empty data dir and --initial-cluster-state existing"
        );
        let _ = self.stop.try_send(Stop::Fatal(why.clone()));
        PeerError::Wiped(why)
    }

    /// True when `id` has published its attributes: it has applied this cluster's log
    /// before, so a fresh data dir under that ID means the old one was wiped.
    fn has_published(&self, id: u64) -> bool {
        self.table
            .read()
            .map(|t| t.get(id).is_some_and(|m| !m.client_urls.is_empty()))
            .unwrap_or(false)
    }
}

/// Starts one dialer per other member; returns the transport the raft loop sends through.
/// Must be called inside the tokio runtime.
pub fn start_dialers(
    ctx: &PeerContext,
    peers: &[Member],
    tls: Option<TlsConnector>,
    shutdown: watch::Receiver<bool>,
) -> PeerTransport {
    let t = PeerTransport {
        queues: RwLock::new(HashMap::new()),
        ctx: ctx.clone(),
        tls,
        shutdown,
        runtime: tokio::runtime::Handle::current(),
    };
    t.set_peers(peers);
    t
}

async fn dial_loop(
    ctx: PeerContext,
    peer: Member,
    tls: Option<TlsConnector>,
    mut rx: mpsc::Receiver<Message>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut was_up = false;
    loop {
        // A closed queue means the member was removed (or its URLs changed).
        if *shutdown.borrow() || rx.is_closed() {
            return;
        }
        match connect(&ctx, &peer, tls.as_ref()).await {
            Ok(conn) => {
                backoff = Duration::from_millis(100);
                tracing::info!(
                    "local-member-id" = %format!("{:x}", ctx.member_id),
                    "remote-peer-id" = %format!("{:x}", peer.id),
                    "stream-type" = "stream writer",
                    "established a TCP streaming connection with peer {:x} (stream writer)",
                    peer.id
                );
                was_up = true;
                ctx.activity.up(peer.id);
                let err = tokio::select! {
                    e = pump(conn, &mut rx, &ctx) => e,
                    _ = shutdown.changed() => return,
                };
                ctx.activity.down(peer.id);
                tracing::warn!(
                    "lost TCP streaming connection with peer {:x}: {err}",
                    peer.id
                );
                let _ = ctx.raft_tx.try_send(RaftEvent::Unreachable(peer.id));
                // A snapshot written before the loss may never have been applied (the peer
                // crashed while applying it): without this report the leader waits for it
                // forever, sending only heartbeats (etcd reports a failed snapshot send).
                let _ = ctx.raft_tx.try_send(RaftEvent::SnapshotFailed(peer.id));
            }
            Err(e) => {
                if was_up {
                    tracing::warn!("failed to reach peer {:x}: {e}", peer.id);
                    was_up = false;
                } else {
                    tracing::debug!("failed to reach peer {:x}: {e}", peer.id);
                }
                let _ = ctx.raft_tx.try_send(RaftEvent::Unreachable(peer.id));
            }
        }
        // Drop what queued up while the peer was away; raft will resend what matters.
        while rx.try_recv().is_ok() {}
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(RETRY_MAX);
    }
}

/// Connects from this member's own peer address when it has one, so that the other side
/// sees (and checks the certificate against) the address this member is known by.
async fn dial(addr: &str, local_ip: Option<std::net::IpAddr>) -> std::io::Result<TcpStream> {
    let target: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(_) => return TcpStream::connect(addr).await,
    };
    let Some(ip) = local_ip.filter(|ip| !ip.is_unspecified() && ip.is_ipv4() == target.is_ipv4())
    else {
        return TcpStream::connect(target).await;
    };
    let sock = if target.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    sock.bind(SocketAddr::new(ip, 0))?;
    sock.connect(target).await
}

trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

/// Opens a connection (TCP, then TLS for https) to a peer URL.
async fn open(
    url: &str,
    tls: Option<&TlsConnector>,
    local_ip: Option<std::net::IpAddr>,
) -> Result<Box<dyn Conn>, PeerError> {
    let bad_url = |reason: String| PeerError::Url {
        url: url.to_string(),
        reason,
    };
    let parsed = crate::config::parse_urls("initial-cluster", url).map_err(|e| bad_url(e.0))?;
    let u = parsed
        .first()
        .ok_or_else(|| bad_url("no URL".to_string()))?;
    let addr = format!(
        "{}:{}",
        u.host.trim_matches(|c| c == '[' || c == ']'),
        u.port
    );
    let tcp = tokio::time::timeout(DIAL_TIMEOUT, dial(&addr, local_ip))
        .await
        .map_err(|_| PeerError::DialTimeout { addr: addr.clone() })?
        .map_err(|source| PeerError::Dial {
            addr: addr.clone(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    if !u.tls {
        return Ok(Box::new(tcp));
    }
    let tls = tls.ok_or(PeerError::NoTlsConfig)?;
    let name =
        oxcd_tls::server_name(&u.host).ok_or_else(|| bad_url("bad peer host".to_string()))?;
    let s = tokio::time::timeout(DIAL_TIMEOUT, tls.connect(name, tcp))
        .await
        .map_err(|_| PeerError::TlsTimeout)?
        .map_err(|e| PeerError::Tls {
            with: format!(" with {addr}"),
            reason: oxcd_tls::explain(&e),
        })?;
    Ok(Box::new(s))
}

/// Asks the members at `urls` for the cluster's ID and member table (what a member started
/// with `--initial-cluster-state existing` and an empty data dir needs to know who it is).
pub async fn fetch_membership(
    urls: &[String],
    tls: Option<&TlsConnector>,
    local_ip: Option<std::net::IpAddr>,
) -> Result<Membership, String> {
    let mut last = String::from("no peer URLs to ask");
    for url in urls {
        let res = async {
            let mut conn = open(url, tls, local_ip).await?;
            let mut hello = JOIN_MAGIC.to_vec();
            hello.resize(25, 0);
            conn.write_all(&hello)
                .await
                .map_err(io("send the join request"))?;
            conn.flush().await.map_err(io("send the join request"))?;
            let mut len = [0u8; 4];
            conn.read_exact(&mut len)
                .await
                .map_err(io("read the answer"))?;
            let len = u32::from_be_bytes(len) as usize;
            if len > FRAME_BYTES_MAX {
                return Err(PeerError::AnswerTooLarge(len));
            }
            let mut buf = vec![0u8; len];
            conn.read_exact(&mut buf)
                .await
                .map_err(io("read the answer"))?;
            Ok::<_, PeerError>(serde_json::from_slice::<Membership>(&buf)?)
        };
        match tokio::time::timeout(DIAL_TIMEOUT * 2, res).await {
            Ok(Ok(m)) => return Ok(m),
            Ok(Err(e)) => last = format!("{url}: {e}"),
            Err(_) => last = format!("{url}: timed out"),
        }
    }
    Err(last)
}

/// A cluster's identity and members, as a running member describes it to a joining one.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Membership {
    pub cluster_id: u64,
    pub members: Vec<Member>,
}

async fn connect(
    ctx: &PeerContext,
    peer: &Member,
    tls: Option<&TlsConnector>,
) -> Result<Box<dyn Conn>, PeerError> {
    let url = peer.peer_urls.first().ok_or(PeerError::Url {
        url: String::new(),
        reason: format!("member {:x} has no peer URL", peer.id),
    })?;
    let mut conn = open(url, tls, ctx.local_ip).await?;
    let mut hello = MAGIC.to_vec();
    hello.extend_from_slice(&ctx.member_id.to_be_bytes());
    hello.extend_from_slice(&ctx.cluster_id.to_be_bytes());
    let mut flags = 0u8;
    if (ctx.fresh)() {
        flags |= FLAG_FRESH;
    }
    if ctx.has_published(peer.id) {
        flags |= FLAG_YOU_PUBLISHED;
    }
    hello.push(flags);
    conn.write_all(&hello)
        .await
        .map_err(io("send the handshake"))?;
    conn.flush().await.map_err(io("send the handshake"))?;
    let mut ok = [0u8; 1];
    tokio::time::timeout(DIAL_TIMEOUT, conn.read_exact(&mut ok))
        .await
        .map_err(|_| PeerError::Handshake("peer did not answer the handshake"))?
        .map_err(|e| PeerError::ClosedInHandshake(oxcd_tls::explain(&e)))?;
    if ok[0] == 2 {
        return Err(ctx.wiped());
    }
    if ok[0] != 0 {
        let mut len = [0u8; 2];
        let _ = conn.read_exact(&mut len).await;
        let mut why = vec![0u8; u16::from_be_bytes(len) as usize];
        let _ = conn.read_exact(&mut why).await;
        return Err(PeerError::RefusedBy(
            String::from_utf8_lossy(&why).into_owned(),
        ));
    }
    Ok(conn)
}

/// Writes queued messages until the connection fails. Batches what is waiting into one write.
async fn pump(conn: Box<dyn Conn>, rx: &mut mpsc::Receiver<Message>, ctx: &PeerContext) -> String {
    // The other side never writes after the handshake: a read that ends means it went away
    // (so a dead peer is noticed even when there is nothing to send it).
    let (mut r, w) = tokio::io::split(conn);
    let mut w = BufWriter::with_capacity(256 * 1024, w);
    let mut probe = [0u8; 1];
    loop {
        let first = tokio::select! {
            m = rx.recv() => match m {
                Some(m) => m,
                None => return "transport closed".into(),
            },
            n = r.read(&mut probe) => return match n {
                Ok(0) => "the peer closed the connection".into(),
                Ok(_) => "unexpected data from the peer".into(),
                Err(e) => e.to_string(),
            },
        };
        let mut batch = vec![first];
        while batch.len() < 1024 {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        for m in &batch {
            let Ok(bytes) = m.write_to_bytes() else {
                continue;
            };
            let res = async {
                w.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
                w.write_all(&bytes).await
            }
            .await;
            if let Err(e) = res {
                report_snapshot_failures(&batch, ctx);
                return e.to_string();
            }
        }
        if let Err(e) = w.flush().await {
            report_snapshot_failures(&batch, ctx);
            return e.to_string();
        }
    }
}

fn report_snapshot_failures(batch: &[Message], ctx: &PeerContext) {
    for m in batch {
        if m.get_msg_type() == MessageType::MsgSnapshot {
            let _ = ctx.raft_tx.try_send(RaftEvent::SnapshotFailed(m.to));
        }
    }
}

/// Accepts peer connections on one listener.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    ctx: PeerContext,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue; }
            },
            _ = shutdown.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            if let Err(e) = accept(stream, addr, tls, ctx).await {
                tracing::warn!("rejected peer connection from {addr}: {e}");
            }
        });
    }
}

async fn accept(
    stream: TcpStream,
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    ctx: PeerContext,
) -> Result<(), PeerError> {
    let mut conn = accept_tls(stream, addr, tls, &ctx).await?;
    let mut hello = [0u8; 25];
    tokio::time::timeout(DIAL_TIMEOUT, conn.read_exact(&mut hello))
        .await
        .map_err(|_| PeerError::Handshake("no handshake"))?
        .map_err(io("handshake"))?;
    if &hello[..8] == JOIN_MAGIC {
        return answer_join(conn, addr, &ctx).await;
    }
    let from = u64::from_be_bytes(hello[8..16].try_into().unwrap_or_default());
    if let Err((code, why)) = admit(&hello, &ctx) {
        if code == 0 {
            return Err(ctx.wiped());
        }
        let mut out = vec![code];
        out.extend_from_slice(&(why.len() as u16).to_be_bytes());
        out.extend_from_slice(why.as_bytes());
        let _ = conn.write_all(&out).await;
        return Err(PeerError::Refused(why));
    }
    conn.write_all(&[0])
        .await
        .map_err(io("accept the handshake"))?;
    conn.flush().await.map_err(io("accept the handshake"))?;
    tracing::info!(
        "local-member-id" = %format!("{:x}", ctx.member_id),
        "remote-peer-id" = %format!("{from:x}"),
        "stream-type" = "stream reader",
        "established a TCP streaming connection with peer {from:x} (stream reader)"
    );
    let err = read_frames(&mut conn, &ctx).await;
    tracing::warn!("lost TCP streaming connection with peer {from:x}: {err}");
    Ok(())
}

/// The TLS handshake of an incoming peer connection, and with client certificate auth, the
/// check that the peer's certificate covers the address it connects from.
async fn accept_tls(
    stream: TcpStream,
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    ctx: &PeerContext,
) -> Result<Box<dyn Conn>, PeerError> {
    let Some(acc) = tls else {
        return Ok(Box::new(stream));
    };
    let s = tokio::time::timeout(DIAL_TIMEOUT, acc.accept(stream))
        .await
        .map_err(|_| PeerError::TlsTimeout)?
        .map_err(|e| PeerError::Tls {
            with: String::new(),
            reason: oxcd_tls::explain(&e),
        })?;
    if ctx.client_cert_auth {
        let cert = s
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or(PeerError::NoClientCert)?;
        oxcd_tls::cert_covers_ip(cert, addr.ip())
            .map_err(|e| PeerError::CertAddress(e.to_string()))?;
    }
    Ok(Box::new(s))
}

/// Tells a joining member the cluster's ID and members.
async fn answer_join(
    mut conn: Box<dyn Conn>,
    addr: SocketAddr,
    ctx: &PeerContext,
) -> Result<(), PeerError> {
    let list = ctx.table.read().map(|t| t.list.clone()).unwrap_or_default();
    let answer = serde_json::to_vec(&Membership {
        cluster_id: ctx.cluster_id,
        members: list,
    })?;
    let mut out = (answer.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&answer);
    conn.write_all(&out)
        .await
        .map_err(io("answer a joining member"))?;
    conn.flush().await.map_err(io("answer a joining member"))?;
    tracing::info!("told a joining member at {addr} the cluster's membership");
    Ok(())
}

/// Decides on a dialer's handshake: Ok to accept it, or the refusal code (1: refused,
/// 2: the dialer's data dir was wiped) and the reason to tell it. Code 0 means this
/// member's own data dir was wiped: it must stop.
fn admit(hello: &[u8; 25], ctx: &PeerContext) -> Result<(), (u8, String)> {
    let from = u64::from_be_bytes(hello[8..16].try_into().unwrap_or_default());
    let cluster = u64::from_be_bytes(hello[16..24].try_into().unwrap_or_default());
    let flags = hello[24];
    if &hello[..8] != MAGIC {
        return Err((1, "not an oxcd peer (bad magic)".to_string()));
    }
    if cluster != ctx.cluster_id {
        return Err((
            1,
            format!(
                "cluster ID mismatch: this member is in cluster {:x}, the peer says {:x}",
                ctx.cluster_id, cluster
            ),
        ));
    }
    let known = ctx
        .table
        .read()
        .map(|t| t.get(from).is_some())
        .unwrap_or(false);
    if !known {
        return Err((1, format!("member {from:x} is not in this cluster")));
    }
    if flags & FLAG_YOU_PUBLISHED != 0 && (ctx.fresh)() {
        return Err((0, String::new()));
    }
    if flags & FLAG_FRESH != 0 && ctx.has_published(from) {
        return Err((
            2,
            format!(
                "member {from:x} comes back with an empty data dir; it must be removed and added again"
            ),
        ));
    }
    Ok(())
}

async fn read_frames(conn: &mut Box<dyn Conn>, ctx: &PeerContext) -> String {
    let mut buf = Vec::new();
    loop {
        let mut len = [0u8; 4];
        if let Err(e) = conn.read_exact(&mut len).await {
            return e.to_string();
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > FRAME_BYTES_MAX {
            return format!("frame of {len} bytes exceeds the limit");
        }
        buf.resize(len, 0);
        if let Err(e) = conn.read_exact(&mut buf).await {
            return e.to_string();
        }
        match Message::parse_from_bytes(&buf) {
            Ok(m) => {
                if ctx.raft_tx.try_send(RaftEvent::Step(Box::new(m))).is_err() {
                    tracing::debug!("raft loop busy; dropping a peer message");
                }
            }
            Err(e) => return format!("bad frame: {e}"),
        }
    }
}
