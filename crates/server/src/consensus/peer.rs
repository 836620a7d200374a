//! The peer transport: raft messages between members over (mutual) TLS on the peer URLs.
//!
//! Wire format (our own; etcd's peer protocol is not spoken): the dialer sends the 8-byte
//! magic `OXCDPR03`, its member ID and the cluster ID (u64 big-endian each) and a flags byte
//! (1 = my data dir is new, 2 = my member table says you have been in the cluster before);
//! the listener answers one byte, 0 = accepted, 1 = refused, or 2 = refused because the
//! dialer's data dir was wiped, 1 and 2 followed by a u16-length reason; then it closes. Then
//! frames `[kind u8][len u32 BE][payload]` flow from dialer to listener only: kind 1, a raft
//! Message protobuf (any message but a snapshot); kind 2, a snapshot message (its data
//! only describes the snapshot file: `snapshot_files.rs`); kind 3, a chunk of the snapshot
//! file announced by the last kind 2 frame, whose chunks follow it in order, interleaved
//! with kind 1 frames (heartbeats keep flowing during a transfer), until the announced size
//! has arrived; only then, its checksum checked, is the snapshot message given to raft.
//! Each member dials every other member once, for its own outgoing messages.
//!
//! Limits: each peer has a queue of [`PEER_QUEUE_MAX`] messages; when it is full (a slow or
//! dead peer) messages are dropped (raft retransmits), so a bad peer never blocks the raft
//! loop or grows memory. A frame is read as its bytes arrive, never allocated from the
//! length it claims; a message or snapshot message frame larger than
//! [`FrameLimits::message_bytes_max`] (`--max-request-bytes` or raft's append size,
//! whichever is larger, plus [`FRAME_OVERHEAD_BYTES`]), a chunk larger than
//! [`SNAPSHOT_CHUNK_BYTES_MAX`], or a snapshot file announced larger than
//! [`FrameLimits::snapshot_bytes_max`] (twice `--quota-backend-bytes`: it goes to disk, not
//! memory) closes the connection. One snapshot file is received at a time per stream. At most [`PEER_HANDSHAKES_MAX`] connections are in their handshake at a time,
//! each for at most [`DIAL_TIMEOUT`] per step; a connection is admitted only for a member of
//! the cluster, from one of that member's peer addresses (when they are IP addresses), and
//! only one stream per member is kept: a new one replaces the old.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
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
use crate::consensus::snapshot_files::{
    Incoming, SnapshotFile, SnapshotFileError, SnapshotFiles, SNAPSHOT_CHUNK_BYTES_MAX,
};
use crate::state::members::{Member, Members};

/// The handshake's magic; version 3 streams snapshot files in chunks (versions 1 and 2,
/// `OXCDPEER` and `OXCDPR02`, are refused).
pub const MAGIC: &[u8; 8] = b"OXCDPR03";
/// A joining member's request for the membership (then 17 zero bytes).
pub const JOIN_MAGIC: &[u8; 8] = b"OXCDJOIN";
/// A starting member's request for another's HashKV (the initial corruption check): then,
/// as in a dialer's hello, its member ID, the cluster ID and a flags byte, then the
/// revision (i64 BE). The answer: 0, the hash (u32 BE) and the compact revision (i64 BE);
/// or 1 and 12 zero bytes when the member cannot tell (compacted past the revision, busy).
pub const HASH_MAGIC: &[u8; 8] = b"OXCDHASH";
const HASH_ANSWER_BYTES: usize = 13;
pub const PEER_QUEUE_MAX: usize = 4096;
/// Bytes of entries raft puts in one append, at most (raft-rs's `max_size_per_msg`; one
/// entry larger than this still goes alone).
pub const APPEND_BYTES_MAX: usize = 1024 * 1024;
/// What a message frame may hold beyond its entries: the message's own fields, the entries'
/// and the log requests' framing.
pub const FRAME_OVERHEAD_BYTES: usize = 1024 * 1024;
/// Connections on a peer listener that have not finished their handshake, at most; more
/// are closed at once.
pub const PEER_HANDSHAKES_MAX: usize = 32;
/// The membership a running member tells a joining one, at most (JSON).
pub const MEMBERSHIP_BYTES_MAX: usize = 1024 * 1024;
/// A frame is read in steps of at most this many bytes: memory follows what arrived.
const READ_STEP_BYTES: usize = 64 * 1024;
const FRAME_MESSAGE: u8 = 1;
const FRAME_SNAPSHOT: u8 = 2;
const FRAME_CHUNK: u8 = 3;
/// Snapshot messages a sender holds while it streams another's file to the same peer;
/// more are reported failed (raft sends them again).
const SNAPSHOTS_WAITING_MAX: usize = 1;
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(3);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// The largest frames this member reads from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    pub message_bytes_max: usize,
    /// The largest snapshot file a peer may announce (received into a file, not memory).
    pub snapshot_bytes_max: u64,
}

impl FrameLimits {
    /// From the flags: a message carries at most one append's entries or one request (each
    /// at most `--max-request-bytes`); a snapshot the whole backend, which grows past the
    /// quota only until the NOSPACE alarm stops it.
    pub fn new(request_bytes_max: usize, quota_backend_bytes: u64) -> FrameLimits {
        FrameLimits {
            message_bytes_max: request_bytes_max.max(APPEND_BYTES_MAX) + FRAME_OVERHEAD_BYTES,
            snapshot_bytes_max: quota_backend_bytes
                .saturating_mul(2)
                .saturating_add(FRAME_OVERHEAD_BYTES as u64),
        }
    }
}

/// Why a frame from a peer was refused.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("unknown frame kind {0}")]
    Kind(u8),
    #[error("a frame of {len} bytes exceeds the limit of {max} bytes for its kind")]
    TooLarge { len: usize, max: usize },
    #[error("bad frame: {0}")]
    Decode(#[from] protobuf::ProtobufError),
    #[error("a {0:?} in a frame of the wrong kind")]
    WrongKind(MessageType),
    #[error("a snapshot chunk without a snapshot message before it")]
    StrayChunk,
    #[error("a snapshot message while the previous snapshot's file was still arriving")]
    SnapshotOverlap,
    #[error("a snapshot message that does not describe a snapshot file")]
    SnapshotData,
    #[error("a snapshot file of {len} bytes exceeds the limit of {max} bytes")]
    SnapshotTooLarge { len: u64, max: u64 },
    #[error("{0}")]
    SnapshotFile(#[from] SnapshotFileError),
}

/// Reads one frame: its kind and payload, the payload read in steps as it arrives.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    limits: &FrameLimits,
) -> Result<(u8, Vec<u8>), FrameError> {
    let mut header = [0u8; 5];
    r.read_exact(&mut header).await?;
    let kind = header[0];
    let max = match kind {
        FRAME_MESSAGE | FRAME_SNAPSHOT => limits.message_bytes_max,
        FRAME_CHUNK => SNAPSHOT_CHUNK_BYTES_MAX,
        other => return Err(FrameError::Kind(other)),
    };
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok((kind, read_bounded(r, len).await?))
}

/// Reads exactly `len` bytes, growing the buffer only as they arrive.
async fn read_bounded<R: AsyncRead + Unpin>(r: &mut R, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(len.min(READ_STEP_BYTES));
    while buf.len() < len {
        let step = (len - buf.len()).min(READ_STEP_BYTES);
        let start = buf.len();
        buf.resize(start + step, 0);
        r.read_exact(&mut buf[start..]).await?;
    }
    Ok(buf)
}

/// Decodes a frame's raft message; a snapshot must come in a snapshot frame and only there.
pub fn decode_frame(kind: u8, payload: &[u8]) -> Result<Message, FrameError> {
    if kind == FRAME_CHUNK {
        return Err(FrameError::StrayChunk);
    }
    let m = Message::parse_from_bytes(payload)?;
    let snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
    if snapshot != (kind == FRAME_SNAPSHOT) {
        return Err(FrameError::WrongKind(m.get_msg_type()));
    }
    Ok(m)
}

/// A raft message as a frame.
pub fn encode_frame(m: &Message) -> Result<Vec<u8>, protobuf::ProtobufError> {
    let body = m.write_to_bytes()?;
    let kind = if m.get_msg_type() == MessageType::MsgSnapshot {
        FRAME_SNAPSHOT
    } else {
        FRAME_MESSAGE
    };
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(kind);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

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
                let (to, heartbeat) = (m.to, m.get_msg_type() == MessageType::MsgHeartbeat);
                crate::metrics::get().message_queued(to, heartbeat);
                if q.try_send(m).is_err() {
                    crate::metrics::get().message_dropped(to, heartbeat);
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
    /// The IP peer connections are made from (this member's peer address).
    pub local_ip: Option<std::net::IpAddr>,
    /// Asks the member to stop (a wiped data dir found during a handshake).
    pub stop: StopSender,
    /// The largest frames read from peers.
    pub limits: FrameLimits,
    /// The backend, for the HashKV a starting member asks for.
    pub store: Arc<oxcd_storage::Store>,
    /// One such hash at a time.
    pub hashing: Arc<tokio::sync::Semaphore>,
    /// The one inbound stream kept per member.
    pub inbound: Arc<InboundStreams>,
    /// Where snapshot files are sent from and received into.
    pub snapshots: Arc<SnapshotFiles>,
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
                crate::metrics::get().peer_disconnected(ctx.member_id, peer.id);
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
    if let Err(e) = sock.bind(SocketAddr::new(ip, 0)) {
        // The advertised address is not this host's (behind NAT): dial from any.
        tracing::debug!("cannot dial from {ip} ({e}); dialing from any address");
        return TcpStream::connect(target).await;
    }
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
            if len > MEMBERSHIP_BYTES_MAX {
                return Err(PeerError::AnswerTooLarge(len));
            }
            let buf = read_bounded(&mut conn, len)
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

/// Writes queued messages until the connection fails. Batches what is waiting into one
/// write; while a snapshot file is being sent, one chunk of it goes after each batch.
async fn pump(conn: Box<dyn Conn>, rx: &mut mpsc::Receiver<Message>, ctx: &PeerContext) -> String {
    // The other side never writes after the handshake: a read that ends means it went away
    // (so a dead peer is noticed even when there is nothing to send it).
    let (mut r, w) = tokio::io::split(conn);
    let mut w = BufWriter::with_capacity(256 * 1024, w);
    let mut probe = [0u8; 1];
    let mut sending = Snapshots::default();
    // Kept between batches (cleared, not reallocated): growing a fresh one to a large
    // batch faulted in new pages each time.
    let mut batch = Vec::new();
    loop {
        batch.clear();
        if sending.current.is_none() {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => batch.push(m),
                    None => return "transport closed".into(),
                },
                n = r.read(&mut probe) => return match n {
                    Ok(0) => "the peer closed the connection".into(),
                    Ok(_) => "unexpected data from the peer".into(),
                    Err(e) => e.to_string(),
                },
            }
        }
        while batch.len() < 1024 {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let sent = async {
            write_batch(&mut w, &batch, &mut sending, ctx).await?;
            sending.next_chunk(&mut w, ctx).await?;
            w.flush().await
        };
        if let Err(e) = sent.await {
            report_snapshot_failures(&batch, ctx);
            if let Some(out) = sending.current.take() {
                let _ = ctx.raft_tx.try_send(RaftEvent::SnapshotFailed(out.to));
            }
            return e.to_string();
        }
    }
}

/// Writes a batch's frames; a snapshot message starts (or waits for) its file's transfer.
async fn write_batch<W: AsyncWrite + Unpin>(
    w: &mut W,
    batch: &[Message],
    sending: &mut Snapshots,
    ctx: &PeerContext,
) -> std::io::Result<()> {
    // Counted once per batch (one peer's): the metric's label lookup is not per message.
    let mut sent: Option<(u64, usize)> = None;
    for m in batch {
        if m.get_msg_type() == MessageType::MsgSnapshot {
            sending.push(m.clone(), ctx);
            continue;
        }
        let Ok(frame) = encode_frame(m) else {
            continue;
        };
        if let Err(e) = w.write_all(&frame).await {
            crate::metrics::get().peer_send_failed(m.to);
            if let Some((to, bytes)) = sent {
                crate::metrics::get().peer_sent(to, bytes);
            }
            return Err(e);
        }
        match &mut sent {
            Some((to, bytes)) if *to == m.to => *bytes += frame.len(),
            _ => {
                if let Some((to, bytes)) = sent {
                    crate::metrics::get().peer_sent(to, bytes);
                }
                sent = Some((m.to, frame.len()));
            }
        }
    }
    if let Some((to, bytes)) = sent {
        crate::metrics::get().peer_sent(to, bytes);
    }
    Ok(())
}

/// The snapshot files a sender streams to its peer: the one being sent, and those waiting.
#[derive(Default)]
struct Snapshots {
    current: Option<Outgoing>,
    waiting: std::collections::VecDeque<Message>,
}

/// A snapshot file being sent.
struct Outgoing {
    to: u64,
    file: tokio::fs::File,
    left: u64,
}

impl Snapshots {
    fn push(&mut self, m: Message, ctx: &PeerContext) {
        if self.waiting.len() >= SNAPSHOTS_WAITING_MAX {
            let _ = ctx.raft_tx.try_send(RaftEvent::SnapshotFailed(m.to));
            return;
        }
        self.waiting.push_back(m);
    }

    /// Sends the next chunk of the current file, starting the next waiting one first when
    /// none is being sent.
    async fn next_chunk<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
        ctx: &PeerContext,
    ) -> std::io::Result<()> {
        while self.current.is_none() {
            let Some(m) = self.waiting.pop_front() else {
                return Ok(());
            };
            self.current = start_snapshot(w, m, ctx).await?;
        }
        let Some(out) = self.current.as_mut() else {
            return Ok(());
        };
        let want = out.left.min(SNAPSHOT_CHUNK_BYTES_MAX as u64) as usize;
        let mut chunk = vec![0u8; 5 + want];
        out.file.read_exact(&mut chunk[5..]).await?;
        chunk[0] = FRAME_CHUNK;
        chunk[1..5].copy_from_slice(&(want as u32).to_be_bytes());
        w.write_all(&chunk).await?;
        crate::metrics::get().peer_sent(out.to, chunk.len());
        out.left -= want as u64;
        if out.left == 0 {
            self.current = None;
        }
        Ok(())
    }
}

/// Writes a snapshot message's frame and opens its file; a file that cannot be opened is
/// reported failed (raft asks for a new snapshot) and nothing is written.
async fn start_snapshot<W: AsyncWrite + Unpin>(
    w: &mut W,
    m: Message,
    ctx: &PeerContext,
) -> std::io::Result<Option<Outgoing>> {
    let opened = match SnapshotFile::decode(&m.get_snapshot().data) {
        Some(f) => {
            let path = ctx.snapshots.built_path(&f);
            tokio::fs::File::open(&path)
                .await
                .map(|file| (f, file))
                .map_err(|e| format!("{}: {e}", path.display()))
        }
        None => Err("the message does not describe a snapshot file".to_string()),
    };
    let (f, file) = match opened {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!("cannot send a snapshot to {:x}: {e}", m.to);
            let _ = ctx.raft_tx.try_send(RaftEvent::SnapshotFailed(m.to));
            return Ok(None);
        }
    };
    let frame = encode_frame(&m).map_err(std::io::Error::other)?;
    w.write_all(&frame).await?;
    crate::metrics::get().peer_sent(m.to, frame.len());
    tracing::info!(
        "sending a snapshot at index {} ({} bytes) to {:x}",
        f.index,
        f.size_bytes,
        m.to
    );
    Ok(Some(Outgoing {
        to: m.to,
        file,
        left: f.size_bytes,
    }))
}

fn report_snapshot_failures(batch: &[Message], ctx: &PeerContext) {
    for m in batch {
        if m.get_msg_type() == MessageType::MsgSnapshot {
            let _ = ctx.raft_tx.try_send(RaftEvent::SnapshotFailed(m.to));
        }
    }
}

/// Accepts peer connections on one listener, at most [`PEER_HANDSHAKES_MAX`] in their
/// handshake at a time.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    ctx: PeerContext,
    mut shutdown: watch::Receiver<bool>,
) {
    let handshakes = Arc::new(tokio::sync::Semaphore::new(PEER_HANDSHAKES_MAX));
    loop {
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue; }
            },
            _ = shutdown.changed() => return,
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            tracing::warn!(
                "refusing peer connection from {addr}: {PEER_HANDSHAKES_MAX} handshakes in progress"
            );
            continue;
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            if let Err(e) = accept(stream, addr, tls, ctx, permit).await {
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
    handshake: tokio::sync::OwnedSemaphorePermit,
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
    if &hello[..8] == HASH_MAGIC {
        return answer_hash(conn, hello, addr, &ctx).await;
    }
    let from = u64::from_be_bytes(hello[8..16].try_into().unwrap_or_default());
    if let Err((code, why)) = admit(&hello, addr.ip(), &ctx) {
        if code == 0 {
            return Err(ctx.wiped());
        }
        let mut out = vec![code];
        out.extend_from_slice(&(why.len() as u16).to_be_bytes());
        out.extend_from_slice(why.as_bytes());
        let _ = tokio::time::timeout(DIAL_TIMEOUT, conn.write_all(&out)).await;
        return Err(PeerError::Refused(why));
    }
    let answer = async {
        conn.write_all(&[0]).await?;
        conn.flush().await
    };
    tokio::time::timeout(DIAL_TIMEOUT, answer)
        .await
        .map_err(|_| PeerError::Handshake("the peer does not read"))?
        .map_err(io("accept the handshake"))?;
    drop(handshake);
    let (serial, replaced) = ctx.inbound.register(from);
    tracing::info!(
        "local-member-id" = %format!("{:x}", ctx.member_id),
        "remote-peer-id" = %format!("{from:x}"),
        "stream-type" = "stream reader",
        "established a TCP streaming connection with peer {from:x} (stream reader)"
    );
    let err = tokio::select! {
        e = read_frames(&mut conn, &ctx) => e,
        _ = replaced.notified() => "a newer stream from the same member replaced it".to_string(),
    };
    ctx.inbound.unregister(from, serial);
    tracing::warn!("lost TCP streaming connection with peer {from:x}: {err}");
    Ok(())
}

/// The one inbound stream kept per member: a new one (the member reconnected) replaces
/// the old, so a member holds at most one reader here however often it dials.
#[derive(Debug, Default)]
pub struct InboundStreams {
    next: std::sync::atomic::AtomicU64,
    by_member: std::sync::Mutex<HashMap<u64, (u64, Arc<tokio::sync::Notify>)>>,
}

impl InboundStreams {
    /// Registers a stream from `member`; returns its serial and what tells it to stop.
    fn register(&self, member: u64) -> (u64, Arc<tokio::sync::Notify>) {
        let serial = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stop = Arc::new(tokio::sync::Notify::new());
        if let Ok(mut m) = self.by_member.lock() {
            if let Some((_, old)) = m.insert(member, (serial, stop.clone())) {
                old.notify_one();
            }
        }
        (serial, stop)
    }

    fn unregister(&self, member: u64, serial: u64) {
        if let Ok(mut m) = self.by_member.lock() {
            if m.get(&member).is_some_and(|(s, _)| *s == serial) {
                m.remove(&member);
            }
        }
    }

    /// Streams kept now (tests and status).
    pub fn count(&self) -> usize {
        self.by_member.lock().map(|m| m.len()).unwrap_or(0)
    }
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

/// Tells a starting member of the cluster (checked as a dialer is) this member's HashKV at
/// the revision it asks for. One hash at a time: it reads every key revision.
async fn answer_hash(
    mut conn: Box<dyn Conn>,
    mut hello: [u8; 25],
    addr: SocketAddr,
    ctx: &PeerContext,
) -> Result<(), PeerError> {
    hello[..8].copy_from_slice(MAGIC);
    admit(&hello, addr.ip(), ctx).map_err(|(_, why)| PeerError::Refused(why))?;
    let mut rev = [0u8; 8];
    tokio::time::timeout(DIAL_TIMEOUT, conn.read_exact(&mut rev))
        .await
        .map_err(|_| PeerError::Handshake("no revision"))?
        .map_err(io("read the revision"))?;
    let rev = i64::from_be_bytes(rev);
    let mut answer = [0u8; HASH_ANSWER_BYTES];
    answer[0] = 1;
    if let Ok(_one) = ctx.hashing.clone().try_acquire_owned() {
        let store = ctx.store.clone();
        let hashed =
            tokio::task::spawn_blocking(move || crate::state::kv::hash_kv(&store, rev)).await;
        if let Ok(Ok((hash, compacted))) = hashed {
            answer[0] = 0;
            answer[1..5].copy_from_slice(&hash.to_be_bytes());
            answer[5..].copy_from_slice(&compacted.to_be_bytes());
        }
    }
    conn.write_all(&answer)
        .await
        .map_err(io("answer a hash request"))?;
    conn.flush().await.map_err(io("answer a hash request"))
}

/// Asks the member at `url` for its HashKV at `rev`, as member `me` of `cluster`: the hash
/// and its compact revision, or None when that member cannot tell.
pub async fn fetch_hash(
    url: &str,
    tls: Option<&TlsConnector>,
    local_ip: Option<IpAddr>,
    (me, cluster): (u64, u64),
    rev: i64,
) -> Result<Option<(u32, i64)>, PeerError> {
    let mut conn = open(url, tls, local_ip).await?;
    let mut hello = HASH_MAGIC.to_vec();
    hello.extend_from_slice(&me.to_be_bytes());
    hello.extend_from_slice(&cluster.to_be_bytes());
    hello.push(0);
    hello.extend_from_slice(&rev.to_be_bytes());
    conn.write_all(&hello)
        .await
        .map_err(io("send the hash request"))?;
    conn.flush().await.map_err(io("send the hash request"))?;
    let mut answer = [0u8; HASH_ANSWER_BYTES];
    conn.read_exact(&mut answer)
        .await
        .map_err(io("read the hash"))?;
    if answer[0] != 0 {
        return Ok(None);
    }
    let hash = u32::from_be_bytes([answer[1], answer[2], answer[3], answer[4]]);
    let mut compacted = [0u8; 8];
    compacted.copy_from_slice(&answer[5..]);
    Ok(Some((hash, i64::from_be_bytes(compacted))))
}

/// How long the initial corruption check waits for each peer's hash.
pub const INITIAL_CHECK_WAIT: Duration = Duration::from_secs(5);

/// etcd's initial corruption check (`--experimental-initial-corrupt-check`): before this
/// member serves anything, its HashKV at its current revision is compared with every other
/// member's. A peer compacted at the same revision with another hash means this member's
/// data differs: it must not serve. Peers that do not answer in time, cannot tell, or
/// compacted elsewhere are skipped, as etcd skips them.
pub async fn initial_corrupt_check(
    store: Arc<oxcd_storage::Store>,
    peers: &[Member],
    (me, cluster): (u64, u64),
    tls: Option<&TlsConnector>,
    local_ip: Option<IpAddr>,
) -> Result<(), String> {
    let rev = store.current_rev();
    let hashed = tokio::task::spawn_blocking(move || crate::state::kv::hash_kv(&store, rev))
        .await
        .map_err(|e| format!("initial corruption check: {e}"))?;
    let (mine, compacted) = hashed.map_err(|e| format!("initial corruption check: {e}"))?;
    let asks = peers
        .iter()
        .filter(|p| p.id != me)
        .filter_map(|p| p.peer_urls.first().map(|u| (p.id, u.clone())));
    let answers = futures::future::join_all(asks.map(|(id, url)| async move {
        let asked = fetch_hash(&url, tls, local_ip, (me, cluster), rev);
        (id, tokio::time::timeout(INITIAL_CHECK_WAIT, asked).await)
    }))
    .await;
    for (id, answer) in answers {
        match answer {
            Ok(Ok(Some((hash, c)))) if c == compacted && hash != mine => {
                return Err(format!(
                    "found data inconsistency with peer {id:x}: at revision {rev} (compacted at {c}) this member's hash is {mine}, the peer's {hash}; \
                     this member's data differs from the cluster's: remove it (etcdctl member remove), empty its data dir and add it again"
                ));
            }
            Ok(Ok(Some((_, c)))) if c != compacted => tracing::info!(
                "initial corruption check: peer {id:x} is compacted at {c}, this member at {compacted}; skipped"
            ),
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => tracing::info!(
                "initial corruption check: peer {id:x} cannot hash revision {rev}; skipped"
            ),
            Ok(Err(e)) => tracing::warn!("initial corruption check: peer {id:x}: {e}; skipped"),
            Err(_) => tracing::warn!("initial corruption check: peer {id:x} did not answer; skipped"),
        }
    }
    tracing::info!("initial corruption check passed at revision {rev} (hash {mine})");
    Ok(())
}

/// Decides on a dialer's handshake from `ip`: Ok to accept it, or the refusal code (1:
/// refused, 2: the dialer's data dir was wiped) and the reason to tell it. Code 0 means this
/// member's own data dir was wiped: it must stop.
fn admit(hello: &[u8; 25], ip: IpAddr, ctx: &PeerContext) -> Result<(), (u8, String)> {
    let from = u64::from_be_bytes(hello[8..16].try_into().unwrap_or_default());
    let cluster = u64::from_be_bytes(hello[16..24].try_into().unwrap_or_default());
    let flags = hello[24];
    if &hello[..8] != MAGIC {
        return Err((
            1,
            "not an oxcd peer of this version (bad magic); run the same oxcd on every member"
                .to_string(),
        ));
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
    if from == ctx.member_id {
        return Err((
            1,
            format!("member {from:x} is this member; it never dials itself"),
        ));
    }
    let member = ctx.table.read().ok().and_then(|t| t.get(from).cloned());
    let Some(member) = member else {
        return Err((1, format!("member {from:x} is not in this cluster")));
    };
    if !from_its_address(&member, ip) {
        return Err((
            1,
            format!(
                "member {from:x} has peer URLs {:?}, but this connection comes from {ip}",
                member.peer_urls
            ),
        ));
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

/// True when a connection from `ip` may be `member`'s: its peer URLs name IP addresses and
/// `ip` is one of them (members dial from their own peer address), or one of them names a
/// host that cannot be checked here (a DNS name, an unspecified address).
fn from_its_address(member: &Member, ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    let mut checkable = true;
    for url in &member.peer_urls {
        let host = crate::config::parse_urls("peer-urls", url)
            .ok()
            .and_then(|u| u.into_iter().next())
            .map(|u| u.host);
        let parsed = host
            .as_deref()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .and_then(|h| h.parse::<IpAddr>().ok());
        match parsed {
            Some(h) if h.is_unspecified() => checkable = false,
            Some(h) if h.to_canonical() == ip => return true,
            Some(_) => {}
            None => checkable = false,
        }
    }
    !checkable
}

/// Steps the raft loop with every frame until the stream fails; returns why it ended. A
/// snapshot message is held until its file has arrived whole and checked.
async fn read_frames(conn: &mut Box<dyn Conn>, ctx: &PeerContext) -> String {
    let mut incoming: Option<(Message, Incoming)> = None;
    let mut counted = crate::metrics::ReceivedFrom::default();
    loop {
        let read = read_frame(conn, &ctx.limits).await;
        let step = match read {
            Ok((FRAME_CHUNK, chunk)) => receive_chunk(&mut incoming, &chunk).await,
            Ok((kind, payload)) => match decode_frame(kind, &payload) {
                Ok(m) => {
                    crate::metrics::get().peer_message_received(
                        &m,
                        payload.len() + 5,
                        &mut counted,
                    );
                    receive_message(&mut incoming, m, ctx).await
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match step {
            Ok(Some(m)) => {
                if ctx.raft_tx.try_send(RaftEvent::Step(Box::new(m))).is_err() {
                    tracing::debug!("raft loop busy; dropping a peer message");
                }
            }
            Ok(None) => {}
            Err(e) => return e.to_string(),
        }
    }
}

/// A message for raft now, or none yet: a snapshot message starts receiving its file.
async fn receive_message(
    incoming: &mut Option<(Message, Incoming)>,
    m: Message,
    ctx: &PeerContext,
) -> Result<Option<Message>, FrameError> {
    if m.get_msg_type() != MessageType::MsgSnapshot {
        return Ok(Some(m));
    }
    if incoming.is_some() {
        return Err(FrameError::SnapshotOverlap);
    }
    let snap = m.get_snapshot();
    let f = SnapshotFile::decode(&snap.data)
        .filter(|f| (f.index, f.term) == (snap.get_metadata().index, snap.get_metadata().term))
        .ok_or(FrameError::SnapshotData)?;
    if f.size_bytes > ctx.limits.snapshot_bytes_max {
        return Err(FrameError::SnapshotTooLarge {
            len: f.size_bytes,
            max: ctx.limits.snapshot_bytes_max,
        });
    }
    tracing::info!(
        "receiving a snapshot at index {} ({} bytes) from {:x}",
        f.index,
        f.size_bytes,
        m.from
    );
    let file = ctx.snapshots.receive(f).await?;
    *incoming = Some((m, file));
    // An empty file is complete at once.
    receive_chunk(incoming, &[]).await
}

/// Appends a chunk to the file being received; once complete and checked, its message is
/// for raft.
async fn receive_chunk(
    incoming: &mut Option<(Message, Incoming)>,
    chunk: &[u8],
) -> Result<Option<Message>, FrameError> {
    let (_, file) = incoming.as_mut().ok_or(FrameError::StrayChunk)?;
    file.write_chunk(chunk).await?;
    if !file.complete() {
        return Ok(None);
    }
    let Some((m, file)) = incoming.take() else {
        return Ok(None);
    };
    file.finish().await?;
    Ok(Some(m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: FrameLimits = FrameLimits {
        message_bytes_max: 3 << 20,
        snapshot_bytes_max: u32::MAX as u64,
    };

    fn member(urls: &[&str]) -> Member {
        Member {
            id: 7,
            name: "m".into(),
            peer_urls: urls.iter().map(|u| u.to_string()).collect(),
            client_urls: Vec::new(),
            is_learner: false,
        }
    }

    fn read(bytes: &[u8]) -> Result<Message, FrameError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut r = bytes;
            let (kind, payload) = read_frame(&mut r, &LIMITS).await?;
            decode_frame(kind, &payload)
        })
    }

    /// Resident memory of this process, bytes.
    fn rss_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        pages * 4096
    }

    #[test]
    fn frames_round_trip_by_kind() {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.to = 2;
        let back = read(&encode_frame(&m).expect("encode")).expect("read");
        assert_eq!(back, m);
        let mut s = Message::default();
        s.set_msg_type(MessageType::MsgSnapshot);
        s.mut_snapshot().data = vec![7u8; 100_000].into();
        assert_eq!(read(&encode_frame(&s).expect("encode")).expect("read"), s);
        // A snapshot in a message frame (or the reverse) is refused: its limit is another.
        let mut wrong = encode_frame(&s).expect("encode");
        wrong[0] = FRAME_MESSAGE;
        assert!(matches!(read(&wrong), Err(FrameError::WrongKind(_))));
        let mut unknown = encode_frame(&m).expect("encode");
        unknown[0] = 9;
        assert!(matches!(read(&unknown), Err(FrameError::Kind(9))));
    }

    #[test]
    fn a_message_frame_over_its_limit_is_refused_before_it_is_read() {
        let mut frame = vec![FRAME_MESSAGE];
        frame.extend_from_slice(&((3u32 << 20) + 1).to_be_bytes());
        assert!(matches!(
            read(&frame),
            Err(FrameError::TooLarge { max, .. }) if max == 3 << 20
        ));
        let l = FrameLimits::new(1_572_864, 2 << 30);
        assert_eq!(l.message_bytes_max, 1_572_864 + FRAME_OVERHEAD_BYTES);
        assert_eq!(
            l.snapshot_bytes_max,
            (4 << 30) + FRAME_OVERHEAD_BYTES as u64
        );
        let small = FrameLimits::new(1000, 100 << 20);
        assert_eq!(
            small.message_bytes_max,
            APPEND_BYTES_MAX + FRAME_OVERHEAD_BYTES
        );
        assert_eq!(
            small.snapshot_bytes_max,
            (200 << 20) + FRAME_OVERHEAD_BYTES as u64
        );
    }

    /// Issue 16 defect 4: a frame claiming 1 GiB made the member allocate it at once. Memory
    /// follows the bytes that arrive.
    #[test]
    fn a_claimed_length_is_not_allocated() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let before = rss_bytes();
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let grown = rt.block_on(async {
            let mut frame = vec![FRAME_MESSAGE];
            frame.extend_from_slice(&(1u32 << 30).to_be_bytes());
            frame.extend_from_slice(&[0u8; 1000]);
            client.write_all(&frame).await.expect("write");
            // The peer sends nothing more and keeps the connection open: measure while the
            // read waits for the rest.
            let large = FrameLimits {
                message_bytes_max: 2 << 30,
                ..LIMITS
            };
            let read = read_frame(&mut server, &large);
            tokio::pin!(read);
            tokio::select! {
                r = &mut read => panic!("a frame of 1000 bytes ended: {:?}", r.err()),
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    rss_bytes().saturating_sub(before)
                }
            }
        });
        // Other tests run in this process meanwhile: only the claimed gigabyte is told apart.
        assert!(grown < 512 << 20, "resident memory grew by {grown} bytes");
    }

    #[test]
    fn a_member_is_admitted_from_its_own_address_only() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let m = member(&["http://10.0.0.1:2380", "https://[fd00::2]:2380"]);
        assert!(from_its_address(&m, ip("10.0.0.1")));
        assert!(from_its_address(&m, ip("::ffff:10.0.0.1")));
        assert!(from_its_address(&m, ip("fd00::2")));
        assert!(!from_its_address(&m, ip("10.0.0.9")));
        // A name or a wildcard cannot be checked here.
        assert!(from_its_address(
            &member(&["http://node1:2380"]),
            ip("10.0.0.9")
        ));
        assert!(from_its_address(
            &member(&["http://0.0.0.0:2380"]),
            ip("10.0.0.9")
        ));
    }

    #[test]
    fn one_inbound_stream_per_member() {
        let streams = InboundStreams::default();
        let (first, stop_first) = streams.register(5);
        let (second, _stop_second) = streams.register(5);
        assert_eq!(streams.count(), 1);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let told = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), stop_first.notified()).await
        });
        assert!(told.is_ok(), "the older stream is told to stop");
        streams.unregister(5, first);
        assert_eq!(streams.count(), 1, "the old one's exit keeps the new one");
        streams.unregister(5, second);
        assert_eq!(streams.count(), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any bytes from a peer: a message, or a clear error; never a panic.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = read(&bytes);
        }

        /// A valid frame header and random payload: decoded or refused, never a panic.
        #[test]
        fn random_payloads_never_panic(
            kind in 1u8..=2,
            payload in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let mut frame = vec![kind];
            frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            frame.extend_from_slice(&payload);
            let _ = read(&frame);
        }
    }
}
