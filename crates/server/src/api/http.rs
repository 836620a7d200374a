//! Client listeners: one port per client URL serving gRPC (HTTP/2) and HTTP/1.1 (v2 keys,
//! `/version`, `/health`) side by side, as etcd does, over TLS when the URL is https.
//! Connections per listener are capped (`--max-connections`); every refused TLS handshake
//! is logged once with the peer address and the reason in plain words.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use oxcd_api::etcdserverpb::{
    auth_server::AuthServer, cluster_server::ClusterServer, kv_server::KvServer,
    lease_server::LeaseServer, maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use oxcd_api::oxcdimportpb::import_server::ImportServer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::api::server::Server;
use crate::api::services::Services;

/// A TLS handshake that has not finished in this long is dropped.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes allowed on top of `--max-request-bytes` for gRPC framing (etcd allows the same).
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Builds the router that serves every client request.
pub fn router(server: Arc<Server>) -> Router {
    let svc = Services {
        server: server.clone(),
    };
    let limit = server.cfg.request_bytes_max + GRPC_OVERHEAD_BYTES;
    let grpc =
        tonic::service::Routes::new(KvServer::new(svc.clone()).max_decoding_message_size(limit))
            .add_service(WatchServer::new(svc.clone()).max_decoding_message_size(limit))
            .add_service(LeaseServer::new(svc.clone()).max_decoding_message_size(limit))
            .add_service(ClusterServer::new(svc.clone()).max_decoding_message_size(limit))
            .add_service(AuthServer::new(svc.clone()).max_decoding_message_size(limit))
            .add_service(MaintenanceServer::new(svc.clone()).max_decoding_message_size(limit))
            .add_service(ImportServer::new(svc).max_decoding_message_size(limit))
            .into_axum_router();
    let gate = server.clone();
    grpc.merge(crate::api::v2_http::router(server))
        .fallback(not_found)
        .layer(axum::middleware::map_response(etcd_size_error))
        .layer(axum::middleware::from_fn(move |req, next| {
            learner_gate(gate.clone(), req, next)
        }))
}

/// The gRPC calls a learner serves, as etcd 3.4: Status, and Range (whose handler refuses
/// all but serializable reads). Everything else gets "rpc not supported for learner".
const LEARNER_RPCS: &[&str] = &["/etcdserverpb.Maintenance/Status", "/etcdserverpb.KV/Range"];

async fn learner_gate(
    server: Arc<Server>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = req.uri().path();
    if path.starts_with("/etcdserverpb.") && !LEARNER_RPCS.contains(&path) && server.is_learner() {
        return crate::error::ServerError::NotSupportedForLearner
            .status()
            .into_http::<axum::body::Body>();
    }
    next.run(req).await
}

/// Unknown paths: gRPC's Unimplemented for gRPC requests, else Go's "404 page not found",
/// as etcd answers.
async fn not_found(req: axum::extract::Request) -> axum::response::Response {
    use axum::response::IntoResponse;
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        return tonic::Status::unimplemented("unknown service").into_http::<axum::body::Body>();
    }
    (
        http::StatusCode::NOT_FOUND,
        [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "404 page not found\n",
    )
        .into_response()
}

/// tonic reports a request over the decoding limit as OUT_OF_RANGE "Error, decoded message
/// length too large: found N bytes, the limit is: M bytes"; etcd (grpc-go) answers
/// RESOURCE_EXHAUSTED "grpc: received message larger than max (N vs. M)", and clients match
/// on that code. Rewrite it once, here.
async fn etcd_size_error(mut resp: axum::response::Response) -> axum::response::Response {
    let h = resp.headers();
    if h.get("grpc-status").and_then(|v| v.to_str().ok()) != Some("11") {
        return resp;
    }
    let Some(msg) = h.get("grpc-message").and_then(|v| v.to_str().ok()) else {
        return resp;
    };
    let msg = msg
        .replace("%20", " ")
        .replace("%3A", ":")
        .replace("%2C", ",");
    let Some(rest) = msg.strip_prefix("Error, decoded message length too large: found ") else {
        return resp;
    };
    let nums: Vec<&str> = rest
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .collect();
    if let [found, limit, ..] = nums.as_slice() {
        let text = format!("grpc: received message larger than max ({found} vs. {limit})");
        let encoded: String = text
            .bytes()
            .map(|b| match b {
                b' '..=b'~' if b != b'%' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let headers = resp.headers_mut();
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
        if let Ok(v) = http::HeaderValue::from_str(&encoded) {
            headers.insert("grpc-message", v);
        }
    }
    resp
}

/// Binds every client URL (before anything else starts, so a bad address fails early).
pub async fn bind(
    urls: &[crate::config::Url],
) -> anyhow::Result<Vec<(crate::config::Url, TcpListener)>> {
    let mut out = Vec::new();
    for u in urls {
        let addr = u
            .bind_addr()
            .ok_or_else(|| anyhow::anyhow!("cannot bind {u}: not an IP address"))?;
        let l = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {u}: {e}"))?;
        out.push((u.clone(), l));
    }
    Ok(out)
}

/// Serves one listener until `shutdown` flips.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    connections_max: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(connections_max));
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                "refusing connection from {peer}: --max-connections ({connections_max}) reached"
            );
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            serve_conn(stream, peer, tls, app).await;
            drop(permit);
        });
    }
}

async fn serve_conn(stream: TcpStream, peer: SocketAddr, tls: Option<TlsAcceptor>, app: Router) {
    let svc = TowerToHyperService::new(app);
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let res = match tls {
        None => {
            // etcdctl 3.4 sends `:authority: http://host:port` over plaintext HTTP/2.
            let conn = match crate::api::h2_authority::wrap(stream).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!("connection from {peer} ended before its first request: {e}");
                    return;
                }
            };
            builder
                .serve_connection_with_upgrades(TokioIo::new(conn), svc)
                .await
        }
        Some(acceptor) => {
            let tls_stream =
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::warn!(
                            "rejected connection from {peer}: TLS handshake failed: {}",
                            oxcd_tls::explain(&e)
                        );
                        return;
                    }
                    Err(_) => {
                        tracing::warn!("rejected connection from {peer}: TLS handshake timed out");
                        return;
                    }
                };
            builder
                .serve_connection_with_upgrades(TokioIo::new(tls_stream), svc)
                .await
        }
    };
    if let Err(e) = res {
        tracing::debug!("connection from {peer} ended: {e}");
    }
}
