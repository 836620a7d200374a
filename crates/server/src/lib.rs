//! The oxcd server: etcd's v3 gRPC API and v2 keys HTTP API over a raft-replicated,
//! durable MVCC store. [`run`] wires the pieces; see ARCHITECTURE.md for the map.

pub mod api;
pub mod clock;
pub mod config;
pub mod consensus;
pub mod error;
pub mod ids;
pub mod request;
pub mod restore;
pub mod state;
pub mod version;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use raft::RawNode;
use tokio::sync::watch as tokio_watch;

use crate::api::http;
use crate::api::server::Server;
use crate::config::Config;
use crate::consensus::log_store::{raft_logger, LogStore};
use crate::consensus::raft_loop::{RaftEvent, RaftLoop, RaftStatus, EVENT_QUEUE_MAX};
use crate::consensus::{bootstrap, peer, raft_loop};
use crate::request::MemberAttrs;
use crate::state::{alarm, apply, members, watch};

/// Runs a member until `shutdown` resolves. Listeners are bound before the data dir is
/// touched, so a port in use fails without side effects.
pub async fn run(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut shutdown = std::pin::pin!(shutdown);
    let client_listeners = http::bind(&cfg.listen_client_urls).await?;
    let peer_listeners = http::bind(&cfg.listen_peer_urls).await?;
    let client_tls = match &cfg.client_tls {
        Some(f) => Some(tokio_rustls::TlsAcceptor::from(oxcd_tls::server_config(f)?)),
        None => None,
    };
    let peer_tls = match &cfg.peer_tls {
        Some(f) => Some(tokio_rustls::TlsAcceptor::from(oxcd_tls::server_config(f)?)),
        None => None,
    };
    let peer_dial_tls = match &cfg.peer_tls {
        Some(f) => Some(tokio_rustls::TlsConnector::from(oxcd_tls::client_config(
            &oxcd_tls::ClientTlsFiles {
                cert_file: Some(f.cert_file.clone()),
                key_file: Some(f.key_file.clone()),
                trusted_ca_file: f.trusted_ca_file.clone(),
                skip_verify: false,
            },
        )?)),
        None => None,
    };

    let join = if !cfg.initial_cluster_new && bootstrap::is_fresh(&cfg) {
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
        let local_ip = cfg
            .listen_peer_urls
            .first()
            .and_then(|u| u.bind_addr())
            .map(|a| a.ip());
        let m = peer::fetch_membership(&others, peer_dial_tls.as_ref(), local_ip)
            .await
            .map_err(|e| anyhow::anyhow!(
                "--initial-cluster-state existing: cannot learn the cluster's membership from the other members ({e}); are they running?"
            ))?;
        Some(m)
    } else {
        None
    };
    let boot = bootstrap::open(&cfg, join)?;
    tracing::info!(
        "starting member {:x} ({}) in cluster {:x}; data dir {}",
        boot.member_id,
        cfg.name,
        boot.cluster_id,
        cfg.data_dir.display()
    );
    let (raft_tx, raft_rx) = std::sync::mpsc::sync_channel(EVENT_QUEUE_MAX);
    let (shutdown_tx, shutdown_rx) = tokio_watch::channel(false);
    let status = Arc::new(RaftStatus::default());
    let watch = Arc::new(watch::WatchHub::new(cfg.watchers_max));
    let v2 = Arc::new(Mutex::new(
        apply::load_v2(&boot.store)
            .map_err(|e| anyhow::anyhow!("cannot load the v2 store: {e}"))?,
    ));
    let (v2_index_tx, v2_index_rx) = tokio_watch::channel(0u64);
    let members = Arc::new(RwLock::new(members::Members::new(
        boot.members.list.clone(),
    )));
    let waiters: raft_loop::Waiters = Default::default();

    let peer_activity = Arc::new(peer::PeerActivity::default());
    let peer_ctx = peer::PeerContext {
        activity: peer_activity.clone(),
        member_id: boot.member_id,
        cluster_id: boot.cluster_id,
        raft_tx: raft_tx.clone(),
        client_cert_auth: cfg
            .peer_tls
            .as_ref()
            .is_some_and(|t| t.trusted_ca_file.is_some()),
        table: members.clone(),
        local_ip: cfg
            .listen_peer_urls
            .first()
            .and_then(|u| u.bind_addr())
            .map(|a| a.ip()),
        fresh: {
            let status = status.clone();
            let fresh = boot.fresh;
            Arc::new(move || {
                fresh && status.applied.load(std::sync::atomic::Ordering::Relaxed) == 0
            })
        },
    };
    let transport = Arc::new(peer::start_dialers(
        &peer_ctx,
        &boot.members.list,
        peer_dial_tls,
        shutdown_rx.clone(),
    ));
    for (u, l) in peer_listeners {
        tracing::info!("listening for peers on {u}");
        tokio::spawn(peer::serve(
            l,
            if u.tls { peer_tls.clone() } else { None },
            peer_ctx.clone(),
            shutdown_rx.clone(),
        ));
    }

    let raft_cfg = raft::Config {
        id: boot.member_id,
        election_tick: (cfg.election_ms / cfg.heartbeat_ms) as usize,
        heartbeat_tick: 1,
        applied: boot.applied,
        max_size_per_msg: 1024 * 1024,
        max_inflight_msgs: 256,
        check_quorum: true,
        pre_vote: cfg.pre_vote,
        max_uncommitted_size: 256 * 1024 * 1024,
        ..Default::default()
    };
    raft_cfg.validate().context("raft configuration")?;
    let mut node = RawNode::new(
        &raft_cfg,
        LogStore {
            mem: boot.mem,
            store: boot.store.clone(),
        },
        &raft_logger(),
    )
    .context("cannot start raft")?;
    if boot.conf_state.voters == [boot.member_id] {
        let _ = node.campaign();
    }
    let leases = Arc::new(Mutex::new(
        apply::load_leases(&boot.store).map_err(|e| anyhow::anyhow!("cannot load leases: {e}"))?,
    ));
    let auth = apply::load_auth(&boot.store)
        .map_err(|e| anyhow::anyhow!("cannot load the auth store: {e}"))?;
    let auth = Arc::new(Mutex::new(auth));
    let alarms = Arc::new(RwLock::new(
        alarm::load(&boot.store).map_err(|e| anyhow::anyhow!("cannot load alarms: {e}"))?,
    ));
    let applier = apply::Applier {
        store: boot.store.clone(),
        v2: v2.clone(),
        members: members.clone(),
        leases: leases.clone(),
        auth: auth.clone(),
        alarms: alarms.clone(),
    };
    let attrs = MemberAttrs {
        id: boot.member_id,
        name: cfg.name.clone(),
        client_urls: cfg
            .advertise_client_urls
            .iter()
            .map(|u| u.to_string())
            .collect(),
    };
    let raft_loop = RaftLoop::new(
        node,
        boot.wal,
        applier,
        raft_rx,
        transport,
        waiters.clone(),
        status.clone(),
        watch.clone(),
        v2_index_tx,
        &cfg,
        boot.member_id,
        attrs,
        boot.conf_state,
        boot.last_snapshot_index,
        raft_tx.clone(),
    );
    let mut published = raft_loop.published.subscribe();
    let raft_thread = std::thread::Builder::new()
        .name("raft".into())
        .spawn(move || raft_loop.run())
        .context("cannot start the raft thread")?;

    let id_prefix = (boot.member_id & 0xffff) << 48;
    let start = ((clock::now_ms() as u64) & 0xff_ffff_ffff) << 8;
    let server = Arc::new(Server {
        request_timeout: Duration::from_millis(5000 + 2 * cfg.election_ms),
        db_path: bootstrap::member_dir(&cfg.data_dir).join("oxcd.db"),
        cfg,
        member_id: boot.member_id,
        cluster_id: boot.cluster_id,
        store: boot.store,
        v2,
        v2_index: v2_index_rx,
        members,
        leases,
        auth,
        status,
        watch,
        raft_tx: raft_tx.clone(),
        waiters,
        next_id: AtomicU64::new(id_prefix | (start & ((1 << 48) - 1))),
        started: Instant::now(),
        peer_activity,
        alarms,
    });
    let app = http::router(server.clone());
    // As etcd: serve clients once this member's attributes are published through the log.
    tokio::select! {
        _ = published.wait_for(|p| *p) => {}
        _ = &mut shutdown => {
            let _ = raft_tx.send(RaftEvent::Shutdown);
            let _ = tokio::task::spawn_blocking(move || raft_thread.join()).await;
            return Ok(());
        }
    }
    for (u, l) in client_listeners {
        tracing::info!("serving client requests on {u}");
        let tls = if u.tls { client_tls.clone() } else { None };
        if u.tls && tls.is_none() {
            anyhow::bail!("{u} is https but no client TLS configuration was loaded");
        }
        tokio::spawn(http::serve(
            l,
            tls,
            app.clone(),
            server.cfg.connections_max,
            shutdown_rx.clone(),
        ));
    }
    if let Some(files) = &server.cfg.client_tls {
        if files.trusted_ca_file.is_some() {
            tracing::info!(
                "client certificates are required: clients must present a certificate signed by {} (--trusted-ca-file)",
                files.trusted_ca_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
            );
        }
    }
    tracing::info!("ready to serve client requests");
    shutdown.as_mut().await;
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    let _ = raft_tx.send(RaftEvent::Shutdown);
    let _ = tokio::task::spawn_blocking(move || raft_thread.join()).await;
    Ok(())
}
