//! The oxcd server: etcd's v3 gRPC API and v2 keys HTTP API over a raft-replicated,
//! durable MVCC store. [`run`] wires the pieces; see ARCHITECTURE.md for the map.
//!
//! Three wings over a base: `state` (the deterministic state machine), `consensus` (the raft
//! loop and what feeds it), `api` (what clients reach). The base (`config`, `error`, `ids`,
//! `request`, `clock`, `version`, `logging`) imports no wing.

pub mod api;
pub mod clock;
pub mod config;
pub mod consensus;
pub mod error;
pub mod ids;
pub mod logging;
pub mod metrics;
pub mod peer_stats;
pub mod request;
pub mod state;
pub mod version;

use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use raft::RawNode;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch as tokio_watch};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::api::http;
use crate::api::server::Server;
use crate::config::{Config, Url};
use crate::consensus::bootstrap::{self, Boot};
use crate::consensus::duties::DutySettings;
use crate::consensus::events::{RaftEvent, RaftStatus, Stop, StopSender, EVENT_QUEUE_MAX};
use crate::consensus::log_store::{raft_logger, LogStore};
use crate::consensus::peer;
use crate::consensus::raft_loop::{LoopExit, LoopParts, RaftLoop};
use crate::consensus::snapshot_files::SnapshotFiles;
use crate::request::MemberAttrs;
use crate::state::apply::Applier;
use crate::state::watch::WatchHub;
use crate::state::Tables;

/// Requests from the member's parts to stop it, at most this many queued.
const STOP_QUEUE_MAX: usize = 4;

/// Runs a member until `shutdown` resolves, or until it stops on its own: removed from the
/// cluster (Ok), or a failure it cannot go on after (Err, saying what to do). Listeners
/// are bound before the data dir is touched, so a port in use fails without side effects.
pub async fn run(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut shutdown = std::pin::pin!(shutdown);
    let listeners = Listeners::bind(&cfg).await?;
    prepare_auto_tls(&cfg)?;
    let tls = TlsSetup::load(&cfg)?;
    metrics::get().configure(&cfg);
    let join = learn_membership(&cfg, tls.peer_dial.as_ref()).await?;
    let boot = bootstrap::open(&cfg, join)?;
    if cfg.initial_corrupt_check && !boot.fresh {
        let ids = (boot.member_id, boot.cluster_id);
        let (tls_dial, ip) = (tls.peer_dial.as_ref(), local_peer_ip(&cfg));
        peer::initial_corrupt_check(boot.store.clone(), &boot.members.list, ids, tls_dial, ip)
            .await
            .map_err(anyhow::Error::msg)?;
    }
    tracing::info!(
        "starting member {:x} ({}) in cluster {:x}; data dir {}",
        boot.member_id,
        cfg.name,
        boot.cluster_id,
        cfg.data_dir.display()
    );
    let tables = Tables::load(&boot.store, boot.members.list.clone())?;
    let (stop_tx, mut stop_rx) = mpsc::channel(STOP_QUEUE_MAX);
    let (shutdown_tx, shutdown_rx) = tokio_watch::channel(false);
    let member = start_member(
        &cfg,
        boot,
        tables,
        &tls,
        listeners.peer,
        stop_tx,
        &shutdown_rx,
    )?;
    let server = member.server.clone();
    // Probes answer from the start (livez passes, readyz fails until the member serves).
    serve_http(
        &server,
        listeners.metrics,
        tls.client.clone(),
        http::metrics_router(server.clone()).into(),
        "metrics and health",
        &shutdown_rx,
    )?;
    let mut published = member.published.clone();
    // As etcd: serve clients once this member's attributes are published through the log.
    let stopped = tokio::select! {
        _ = published.wait_for(|p| *p) => None,
        stop = stop_rx.recv() => Some(stop),
        _ = &mut shutdown => Some(None),
    };
    let stopped = match stopped {
        Some(stop) => stop,
        None => {
            serve_clients(
                &server,
                listeners.client,
                listeners.client_http,
                tls.client,
                &shutdown_rx,
            )?;
            tokio::select! {
                stop = stop_rx.recv() => stop,
                _ = &mut shutdown => None,
            }
        }
    };
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    member.stop().await;
    match stopped {
        None | Some(Stop::Removed) => Ok(()),
        Some(Stop::Fatal(why)) => {
            tracing::error!("{why}");
            Err(anyhow::anyhow!(why))
        }
    }
}

/// The listeners, bound first so that a port in use fails before anything else.
struct Listeners {
    client: Vec<(Url, TcpListener)>,
    /// `--listen-client-http-urls`.
    client_http: Vec<(Url, TcpListener)>,
    /// `--listen-metrics-urls`.
    metrics: Vec<(Url, TcpListener)>,
    peer: Vec<(Url, TcpListener)>,
}

impl Listeners {
    async fn bind(cfg: &Config) -> anyhow::Result<Listeners> {
        Ok(Listeners {
            client: http::bind(&cfg.listen_client_urls, &cfg.http).await?,
            client_http: http::bind(&cfg.listen_client_http_urls, &cfg.http).await?,
            metrics: http::bind(&cfg.listen_metrics_urls, &cfg.http).await?,
            peer: http::bind(&cfg.listen_peer_urls, &cfg.http).await?,
        })
    }
}

/// `--auto-tls` / `--peer-auto-tls`: writes the self-signed certificates the configuration
/// points at (under the data dir), unless they exist.
fn prepare_auto_tls(cfg: &Config) -> anyhow::Result<()> {
    let sides = [
        (
            cfg.auto_tls.client,
            &cfg.client_tls,
            &cfg.listen_client_urls,
        ),
        (cfg.auto_tls.peer, &cfg.peer_tls, &cfg.listen_peer_urls),
    ];
    for (on, files, urls) in sides {
        let (true, Some(files)) = (on, files) else {
            continue;
        };
        let Some(dir) = files.cert_file.parent() else {
            continue;
        };
        let hosts: Vec<String> = urls.iter().map(|u| u.host.clone()).collect();
        if oxcd_tls::auto::ensure_self_signed(dir, &hosts, cfg.auto_tls.validity_years)? {
            tracing::info!(dir = %dir.display(), "generated a self-signed certificate (auto TLS)");
        }
    }
    Ok(())
}

/// TLS configurations loaded from the certificate files.
struct TlsSetup {
    client: Option<TlsAcceptor>,
    peer: Option<TlsAcceptor>,
    peer_dial: Option<TlsConnector>,
}

impl TlsSetup {
    fn load(cfg: &Config) -> anyhow::Result<TlsSetup> {
        let acceptor = |f: &oxcd_tls::ServerTlsFiles| -> anyhow::Result<TlsAcceptor> {
            Ok(TlsAcceptor::from(oxcd_tls::server_config(f)?))
        };
        let peer_dial = match &cfg.peer_tls {
            Some(f) => {
                let (cert_file, key_file) = cfg
                    .peer_client_cert
                    .clone()
                    .unwrap_or_else(|| (f.cert_file.clone(), f.key_file.clone()));
                Some(TlsConnector::from(oxcd_tls::peer_dial_config(
                    &oxcd_tls::PeerDialFiles {
                        cert_file,
                        key_file,
                        trusted_ca_file: f.trusted_ca_file.clone(),
                        skip_verify: cfg.auto_tls.peer && f.trusted_ca_file.is_none(),
                        policy: f.policy.clone(),
                    },
                )?))
            }
            None => None,
        };
        Ok(TlsSetup {
            client: cfg.client_tls.as_ref().map(acceptor).transpose()?,
            peer: cfg.peer_tls.as_ref().map(acceptor).transpose()?,
            peer_dial,
        })
    }
}

/// The IP this member's peer connections come from: its first listen-peer address, or, when
/// that is a wildcard, its first advertised one (the others check the address a member
/// dials from against its peer URLs).
fn local_peer_ip(cfg: &Config) -> Option<IpAddr> {
    let ip = |urls: &[Url]| urls.first().and_then(|u| u.bind_addr()).map(|a| a.ip());
    ip(&cfg.listen_peer_urls)
        .filter(|ip| !ip.is_unspecified())
        .or_else(|| ip(&cfg.initial_advertise_peer_urls))
}

/// `--initial-cluster-state existing` with a new data dir: asks the running members for the
/// cluster's membership. None otherwise.
async fn learn_membership(
    cfg: &Config,
    tls: Option<&TlsConnector>,
) -> anyhow::Result<Option<peer::Membership>> {
    if cfg.initial_cluster_new || !bootstrap::is_fresh(cfg) {
        return Ok(None);
    }
    let mine: Vec<String> = cfg
        .initial_advertise_peer_urls
        .iter()
        .map(|u| u.to_string())
        .collect();
    let others: Vec<String> = cfg
        .initial_cluster
        .iter()
        .flat_map(|(_, urls)| urls.iter().map(|u| u.to_string()))
        .filter(|u| !mine.contains(u))
        .collect();
    let m = peer::fetch_membership(&others, tls, local_peer_ip(cfg))
        .await
        .map_err(|e| anyhow::anyhow!(
            "--initial-cluster-state existing: cannot learn the cluster's membership from the other members ({e}); are they running?"
        ))?;
    Ok(Some(m))
}

/// A running member: the raft thread and the facade handlers use.
struct Member {
    server: Arc<Server>,
    published: tokio_watch::Receiver<bool>,
    raft_tx: std::sync::mpsc::SyncSender<RaftEvent>,
    raft_thread: std::thread::JoinHandle<()>,
}

impl Member {
    /// Stops the raft loop and waits for it (it makes the backend durable on the way out).
    async fn stop(self) {
        let _ = self.raft_tx.send(RaftEvent::Shutdown);
        let thread = self.raft_thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

/// Starts the peer transport, the raft thread and the facade over an opened data dir.
fn start_member(
    cfg: &Config,
    boot: Boot,
    tables: Tables,
    tls: &TlsSetup,
    peer_listeners: Vec<(Url, TcpListener)>,
    stop: StopSender,
    shutdown: &tokio_watch::Receiver<bool>,
) -> anyhow::Result<Member> {
    let (raft_tx, raft_rx) = std::sync::mpsc::sync_channel(EVENT_QUEUE_MAX);
    let status = Arc::new(RaftStatus::default());
    let watch = Arc::new(WatchHub::new(cfg.watchers_max));
    let (v2_index_tx, v2_index_rx) = tokio_watch::channel(0u64);
    let waiters = Default::default();
    let snapshots = SnapshotFiles::open(&bootstrap::member_dir(&cfg.data_dir))?;
    let peer_ctx = peer_context(
        cfg,
        &boot,
        &tables,
        &status,
        raft_tx.clone(),
        stop.clone(),
        snapshots.clone(),
    );
    let transport = Arc::new(peer::start_dialers(
        &peer_ctx,
        &boot.members.list,
        tls.peer_dial.clone(),
        shutdown.clone(),
    ));
    for (u, l) in peer_listeners {
        tracing::info!("listening for peers on {u}");
        let acceptor = if u.tls { tls.peer.clone() } else { None };
        tokio::spawn(peer::serve(l, acceptor, peer_ctx.clone(), shutdown.clone()));
    }
    let peer_up = tick_advance(cfg, &boot, &peer_ctx.activity);
    let raft_loop = RaftLoop::new(LoopParts {
        node: raft_node(cfg, &boot, snapshots)?,
        wal: boot.wal,
        applier: Applier {
            store: boot.store.clone(),
            tables: tables.clone(),
            interest: watch.interest(),
        },
        rx: raft_rx,
        self_tx: raft_tx.clone(),
        transport,
        waiters: Arc::clone(&waiters),
        status: status.clone(),
        watch: watch.clone(),
        v2_index: v2_index_tx,
        member_id: boot.member_id,
        conf_state: boot.conf_state,
        last_snapshot_index: boot.last_snapshot_index,
        tick: Duration::from_millis(cfg.heartbeat_ms),
        snapshot_count: cfg.snapshot_count,
        catchup_entries: cfg.snapshot_catchup_entries,
        warning_apply: cfg.warning_apply_duration,
        election_ms: cfg.election_ms,
        peer_up,
        duties: duty_settings(cfg, boot.member_id),
    });
    let published = raft_loop.published();
    let raft_thread = spawn_raft_thread(raft_loop, stop)?;
    let server = Arc::new(Server {
        request_timeout: Duration::from_millis(5000 + 2 * cfg.election_ms),
        db_path: bootstrap::member_dir(&cfg.data_dir).join("oxcd.db"),
        cfg: cfg.clone(),
        member_id: boot.member_id,
        cluster_id: boot.cluster_id,
        store: boot.store,
        tables,
        v2_index: v2_index_rx,
        status,
        watch,
        raft_tx: raft_tx.clone(),
        waiters,
        next_id: AtomicU64::new(first_request_id(boot.member_id)),
        started: Instant::now(),
        peer_activity: peer_ctx.activity,
        quota_size: Default::default(),
    });
    Ok(Member {
        server,
        published,
        raft_tx,
        raft_thread,
    })
}

/// The leader's periodic duties as the flags set them.
fn duty_settings(cfg: &Config, member_id: u64) -> DutySettings {
    DutySettings {
        compactor: cfg
            .auto_compaction
            .map(consensus::compactor::Compactor::new),
        corrupt_check_every: cfg.corrupt_check,
        attrs: MemberAttrs {
            id: member_id,
            name: cfg.name.clone(),
            client_urls: cfg
                .advertise_client_urls
                .iter()
                .map(|u| u.to_string())
                .collect(),
        },
    }
}

/// The first request ID this member hands out: its member ID's low 16 bits, then the start
/// time, so that IDs differ across members and restarts (etcd's idutil).
fn first_request_id(member_id: u64) -> u64 {
    let id_prefix = (member_id & 0xffff) << 48;
    let start = ((clock::now_ms() as u64) & 0xff_ffff_ffff) << 8;
    id_prefix | (start & ((1 << 48) - 1))
}

/// What the peer transport needs to know, in both directions.
fn peer_context(
    cfg: &Config,
    boot: &Boot,
    tables: &Tables,
    status: &Arc<RaftStatus>,
    raft_tx: std::sync::mpsc::SyncSender<RaftEvent>,
    stop: StopSender,
    snapshots: Arc<SnapshotFiles>,
) -> peer::PeerContext {
    peer::PeerContext {
        activity: Arc::new(peer::PeerActivity::default()),
        member_id: boot.member_id,
        cluster_id: boot.cluster_id,
        raft_tx,
        // The check that a peer's certificate covers its address, unless
        // --experimental-peer-skip-client-san-verification.
        client_cert_auth: !cfg.peer_skip_client_san
            && cfg
                .peer_tls
                .as_ref()
                .is_some_and(|t| t.trusted_ca_file.is_some()),
        table: tables.members.clone(),
        local_ip: local_peer_ip(cfg),
        fresh: {
            let status = status.clone();
            let fresh = boot.fresh;
            Arc::new(move || {
                fresh && status.applied.load(std::sync::atomic::Ordering::Relaxed) == 0
            })
        },
        stop,
        limits: peer::FrameLimits::new(cfg.request_bytes_max, cfg.quota_backend_bytes),
        inbound: Default::default(),
        store: boot.store.clone(),
        hashing: Arc::new(tokio::sync::Semaphore::new(1)),
        snapshots,
    }
}

/// `--initial-election-tick-advance` for the raft loop: whether a peer's stream is up, or
/// None when the flag is off (logged as etcd does for a member of several).
fn tick_advance(
    cfg: &Config,
    boot: &Boot,
    activity: &Arc<peer::PeerActivity>,
) -> Option<Arc<dyn Fn(u64) -> bool + Send + Sync>> {
    let several = boot.conf_state.voters.len() + boot.conf_state.learners.len() > 1;
    let election_ticks = cfg.election_ms / cfg.heartbeat_ms.max(1);
    if !cfg.initial_election_tick_advance {
        if several {
            tracing::info!(
                "election-ticks" = election_ticks,
                "skipping initial election tick advance"
            );
        }
        return None;
    }
    if several {
        tracing::info!(
            "election-ticks" = election_ticks,
            "starting initial election tick advance"
        );
    }
    let activity = activity.clone();
    Some(Arc::new(move |id| activity.since(id).is_some()))
}

/// Runs the raft loop on a thread of its own; when it ends on its own (removed, or a
/// failure), `run` hears of it through `stop`.
fn spawn_raft_thread(
    raft_loop: RaftLoop,
    stop: StopSender,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("raft".into())
        .spawn(move || {
            let stopped = match raft_loop.run() {
                Ok(LoopExit::Shutdown) => return,
                Ok(LoopExit::Removed) => Stop::Removed,
                Err(e) => Stop::Fatal(format!("fatal storage error in the raft loop: {e}")),
            };
            let _ = stop.blocking_send(stopped);
        })
        .context("cannot start the raft thread")
}

/// raft-rs's node over the log bootstrap rebuilt from the WAL. A one-member cluster
/// campaigns at once.
fn raft_node(
    cfg: &Config,
    boot: &Boot,
    snapshots: Arc<SnapshotFiles>,
) -> anyhow::Result<RawNode<LogStore>> {
    let raft_cfg = raft::Config {
        id: boot.member_id,
        election_tick: (cfg.election_ms / cfg.heartbeat_ms) as usize,
        heartbeat_tick: 1,
        applied: boot.applied,
        max_size_per_msg: peer::APPEND_BYTES_MAX as u64,
        max_inflight_msgs: 256,
        check_quorum: true,
        pre_vote: cfg.pre_vote,
        max_uncommitted_size: 256 * 1024 * 1024,
        ..Default::default()
    };
    raft_cfg.validate().context("raft configuration")?;
    let store = LogStore {
        mem: boot.mem.clone(),
        store: boot.store.clone(),
        trimmed: (0, 0),
        snapshots,
    };
    let mut node = RawNode::new(&raft_cfg, store, &raft_logger()).context("cannot start raft")?;
    if boot.conf_state.voters == [boot.member_id] {
        let _ = node.campaign();
    }
    Ok(node)
}

/// Opens the client listeners: gRPC and HTTP on each `--listen-client-urls` port, or gRPC
/// there and HTTP on `--listen-client-http-urls` when those are given (etcd 3.5).
fn serve_clients(
    server: &Arc<Server>,
    listeners: Vec<(Url, TcpListener)>,
    http_listeners: Vec<(Url, TcpListener)>,
    tls: Option<TlsAcceptor>,
    shutdown: &tokio_watch::Receiver<bool>,
) -> anyhow::Result<()> {
    if http_listeners.is_empty() {
        let app = http::router(server.clone());
        serve_http(server, listeners, tls, app, "client requests", shutdown)?;
    } else {
        let grpc = http::grpc_router(server.clone());
        serve_http(
            server,
            listeners,
            tls.clone(),
            grpc,
            "client gRPC requests",
            shutdown,
        )?;
        let app = http::http_router(server.clone());
        serve_http(
            server,
            http_listeners,
            tls,
            app,
            "client HTTP requests",
            shutdown,
        )?;
    }
    if let Some(ca) = server
        .cfg
        .client_tls
        .as_ref()
        .and_then(|f| f.trusted_ca_file.as_ref())
    {
        tracing::info!(
            "client certificates are required: clients must present a certificate signed by {} (--trusted-ca-file)",
            ca.display()
        );
    }
    tracing::info!("ready to serve client requests");
    Ok(())
}

/// Serves `app` on each listener (TLS for https URLs).
fn serve_http(
    server: &Arc<Server>,
    listeners: Vec<(Url, TcpListener)>,
    tls: Option<TlsAcceptor>,
    app: http::ClientApp,
    what: &str,
    shutdown: &tokio_watch::Receiver<bool>,
) -> anyhow::Result<()> {
    for (u, l) in listeners {
        tracing::info!(address = %u, "serving {what} on {u}");
        let acceptor = if u.tls { tls.clone() } else { None };
        if u.tls && acceptor.is_none() {
            anyhow::bail!("{u} is https but no client TLS configuration was loaded (--cert-file, --key-file or --auto-tls)");
        }
        tokio::spawn(http::serve(
            l,
            acceptor,
            app.clone(),
            http::ConnLimits::new(server.cfg.connections_max),
            shutdown.clone(),
            server.cfg.http.clone(),
        ));
    }
    Ok(())
}
