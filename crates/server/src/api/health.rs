//! Health endpoints as etcd serves them, on the client URLs and on `--listen-metrics-urls`:
//!
//! - `/health` (etcd 3.4/3.5): `{"health":"true"}`, 503 with `"false"` and a reason when
//!   there is no leader, an alarm is active or a read fails. `?exclude=NOSPACE` ignores
//!   that alarm (repeatable), `?serializable=true` reads locally instead of through raft
//!   (kubeadm's 3.5-era probes use both).
//! - `/livez`, `/readyz` (etcd 3.6): `ok`; with `?verbose` one `[+]check ok` line per
//!   check; a failed check answers 503 listing it; `?exclude=check` skips one; `/livez/<check>`
//!   runs one. livez checks `serializable_read`; readyz adds `data_corruption` and
//!   `linearizable_read`.
//! - `grpc.health.v1.Health`: SERVING while this member knows a leader.
//!
//! No check waits on the raft loop longer than [`CHECK_TIMEOUT`]: a liveness probe of a
//! stuck member must answer (failing), not hang.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;

use crate::api::server::Server;
use crate::state::alarm;

/// Longest a health check waits for a read (local or through raft).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the gRPC health status follows the leader.
const GRPC_HEALTH_POLL: Duration = Duration::from_millis(200);

/// `/health`, `/livez`, `/readyz` (and their per-check paths).
pub fn router(server: Arc<Server>) -> Router {
    Router::new()
        .route("/health", any(health))
        .route("/livez", any(livez))
        .route("/readyz", any(readyz))
        .route("/livez/{check}", any(livez_one))
        .route("/readyz/{check}", any(readyz_one))
        .with_state(server)
}

/// The query string's `name=value` pairs (percent-decoding is not needed for these).
fn query_pairs(q: &Option<String>) -> Vec<(String, String)> {
    q.as_deref()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// A read of the local store (no raft), bounded by [`CHECK_TIMEOUT`].
async fn serializable_read(server: &Arc<Server>) -> Result<(), String> {
    let store = server.store.clone();
    let read = tokio::task::spawn_blocking(move || {
        store.range(
            b"health",
            &[],
            oxcd_storage::RangeOptions {
                limit: 1,
                count_only: true,
                ..Default::default()
            },
        )
    });
    match tokio::time::timeout(CHECK_TIMEOUT, read).await {
        Ok(Ok(Ok(_))) => Ok(()),
        Ok(Ok(Err(e))) => Err(format!("local read failed: {e}")),
        Ok(Err(e)) => Err(format!("local read failed: {e}")),
        Err(_) => Err("local read timed out".into()),
    }
}

/// A linearizable read point through raft, bounded by [`CHECK_TIMEOUT`].
async fn linearizable_read(server: &Arc<Server>) -> Result<(), String> {
    if server.leader() == 0 {
        return Err("no leader".into());
    }
    match tokio::time::timeout(CHECK_TIMEOUT, server.read_index()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// etcd 3.4/3.5's `/health`.
async fn health(
    State(server): State<Arc<Server>>,
    method: Method,
    RawQuery(q): RawQuery,
) -> Response {
    if method != Method::GET {
        return method_not_allowed();
    }
    let pairs = query_pairs(&q);
    let excluded: BTreeSet<String> = pairs
        .iter()
        .filter(|(k, _)| k == "exclude")
        .map(|(_, v)| v.clone())
        .collect();
    let serializable = pairs
        .iter()
        .any(|(k, v)| k == "serializable" && v == "true");
    let reason = health_reason(&server, &excluded, serializable).await;
    let (status, body) = match reason {
        // etcd 3.4's body; a failure adds 3.5's reason.
        None => (StatusCode::OK, r#"{"health":"true"}"#.to_string()),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"health": "false", "reason": why}).to_string(),
        ),
    };
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Why this member is unhealthy, in etcd's words; None when it is healthy.
async fn health_reason(
    server: &Arc<Server>,
    excluded: &BTreeSet<String>,
    serializable: bool,
) -> Option<String> {
    let active: Vec<String> = server
        .tables
        .alarms
        .read()
        .map(|a| {
            a.iter()
                .map(|(_, kind)| alarm_name(*kind).to_string())
                .filter(|name| !excluded.contains(name))
                .collect()
        })
        .unwrap_or_default();
    if let Some(name) = active.first() {
        return Some(format!("ALARM {name}"));
    }
    if server.leader() == 0 {
        return Some("RAFT NO LEADER".into());
    }
    let read = if serializable {
        serializable_read(server).await
    } else {
        linearizable_read(server).await
    };
    read.err().map(|e| format!("QGET ERROR:{e}"))
}

fn alarm_name(kind: i32) -> &'static str {
    match kind {
        alarm::NOSPACE => "NOSPACE",
        alarm::CORRUPT => "CORRUPT",
        _ => "NONE",
    }
}

/// The checks of one endpoint, in etcd 3.6's order.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Probe {
    Live,
    Ready,
}

impl Probe {
    fn checks(self) -> &'static [&'static str] {
        match self {
            Probe::Live => &["serializable_read"],
            Probe::Ready => &["data_corruption", "serializable_read", "linearizable_read"],
        }
    }

    fn path(self) -> &'static str {
        match self {
            Probe::Live => "livez",
            Probe::Ready => "readyz",
        }
    }
}

async fn run_check(server: &Arc<Server>, name: &str) -> Result<(), String> {
    match name {
        "serializable_read" => serializable_read(server).await,
        "linearizable_read" => linearizable_read(server).await,
        "data_corruption" => {
            let corrupt = server
                .tables
                .alarms
                .read()
                .map(|a| alarm::has(&a, alarm::CORRUPT))
                .unwrap_or(false);
            if corrupt {
                Err("the CORRUPT alarm is active".into())
            } else {
                Ok(())
            }
        }
        other => Err(format!("no such check {other:?}")),
    }
}

/// Runs the checks of `probe` (or the one `only`) and answers as etcd 3.6 does.
async fn probe_response(
    server: Arc<Server>,
    probe: Probe,
    only: Option<String>,
    method: Method,
    q: Option<String>,
) -> Response {
    if method != Method::GET {
        return method_not_allowed();
    }
    let pairs = query_pairs(&q);
    let verbose = pairs.iter().any(|(k, _)| k == "verbose");
    let excluded: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == "exclude")
        .map(|(_, v)| v.as_str())
        .collect();
    let checks: Vec<&str> = match &only {
        Some(one) if probe.checks().contains(&one.as_str()) => vec![one.as_str()],
        Some(_) => return (StatusCode::NOT_FOUND, "404 page not found\n").into_response(),
        None => probe.checks().to_vec(),
    };
    let mut out = String::new();
    let mut failed = false;
    for name in checks {
        if excluded.contains(&name) {
            out.push_str(&format!("[+]{name} excluded: ok\n"));
            continue;
        }
        match run_check(&server, name).await {
            Ok(()) => out.push_str(&format!("[+]{name} ok\n")),
            Err(why) => {
                failed = true;
                out.push_str(&format!("[-]{name} failed: {why}\n"));
            }
        }
    }
    let (status, body) = if failed {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{out}{} check failed\n", probe.path()),
        )
    } else if verbose {
        (
            StatusCode::OK,
            format!("{out}{} check passed\n", probe.path()),
        )
    } else {
        (StatusCode::OK, "ok".to_string())
    };
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

async fn livez(State(s): State<Arc<Server>>, m: Method, RawQuery(q): RawQuery) -> Response {
    probe_response(s, Probe::Live, None, m, q).await
}

async fn readyz(State(s): State<Arc<Server>>, m: Method, RawQuery(q): RawQuery) -> Response {
    probe_response(s, Probe::Ready, None, m, q).await
}

async fn livez_one(
    State(s): State<Arc<Server>>,
    Path(check): Path<String>,
    m: Method,
    RawQuery(q): RawQuery,
) -> Response {
    probe_response(s, Probe::Live, Some(check), m, q).await
}

async fn readyz_one(
    State(s): State<Arc<Server>>,
    Path(check): Path<String>,
    m: Method,
    RawQuery(q): RawQuery,
) -> Response {
    probe_response(s, Probe::Ready, Some(check), m, q).await
}

fn method_not_allowed() -> Response {
    let mut resp = (StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n").into_response();
    let h = resp.headers_mut();
    h.insert("allow", HeaderValue::from_static("GET"));
    h.insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// `grpc.health.v1.Health`, SERVING while this member knows a leader. The task that follows
/// the leader ends when the member's facade is dropped (at shutdown).
pub fn grpc_health(
    server: &Arc<Server>,
) -> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
    let (reporter, service) = tonic_health::server::health_reporter();
    let weak = Arc::downgrade(server);
    tokio::spawn(async move {
        let mut last = None;
        while let Some(server) = weak.upgrade() {
            let serving = server.leader() != 0;
            drop(server);
            if last != Some(serving) {
                let status = if serving {
                    tonic_health::ServingStatus::Serving
                } else {
                    tonic_health::ServingStatus::NotServing
                };
                reporter.set_service_status("", status).await;
                last = Some(serving);
            }
            tokio::time::sleep(GRPC_HEALTH_POLL).await;
        }
    });
    service
}
