//! `/metrics`: the Prometheus exposition ([`crate::metrics`]) on the client URLs, and
//! [`router`] for a `--listen-metrics-urls` listener. The gauges of state owned elsewhere
//! are read here, at scrape time, from the server facade.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::response::IntoResponse;
use axum::Router;

use crate::api::server::Server;
use crate::metrics::{self, Sample};

/// etcd's cluster version at the API level oxcd implements.
const CLUSTER_VERSION: &str = "3.4";

/// A router serving only `/metrics`, for a listener of its own (`--listen-metrics-urls`).
pub fn router(server: Arc<Server>) -> Router {
    Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || serve(server.clone())),
        )
        .layer(axum::middleware::map_response(crate::api::gateway::cors))
}

/// Answers a scrape.
pub async fn serve(server: Arc<Server>) -> axum::response::Response {
    // Counting keys walks the key index: off the async workers.
    let body = tokio::task::spawn_blocking(move || metrics::get().render(&sample(&server)))
        .await
        .unwrap_or_default();
    ([(http::header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body).into_response()
}

/// The values the scrape reads from their owners.
pub fn sample(server: &Server) -> Sample {
    let s = &server.status;
    let (watch_streams, watchers, slow_watchers) = server.watch.stats();
    let size = server.db_size();
    let keys = server
        .store
        .range(
            b"\0",
            b"\0",
            oxcd_storage::RangeOptions {
                limit: 0,
                rev: 0,
                count_only: true,
            },
        )
        .map(|r| r.count as i64)
        .unwrap_or(0);
    let active_peers = server
        .tables
        .members
        .read()
        .map(|m| {
            m.list
                .iter()
                .map(|p| p.id)
                .filter(|&id| id != server.member_id && server.peer_activity.since(id).is_some())
                .collect()
        })
        .unwrap_or_default();
    Sample {
        member_id: server.member_id,
        leader: s.leader.load(Relaxed),
        is_learner: server.is_learner(),
        committed: s.commit.load(Relaxed),
        applied: s.applied.load(Relaxed),
        pending: server.waiters.lock().map(|w| w.len()).unwrap_or(0),
        quota_backend_bytes: server.cfg.quota_backend_bytes,
        server_version: crate::version::ETCD_VERSION,
        cluster_version: CLUSTER_VERSION,
        db_size_bytes: size,
        // As `endpoint status` reports it (redb gives free pages back only on defragment).
        db_size_in_use_bytes: size,
        keys,
        watchers,
        watch_streams,
        slow_watchers,
        current_revision: server.store.current_rev(),
        compact_revision: server.store.compact_rev(),
        active_peers,
    }
}
