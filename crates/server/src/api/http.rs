//! Client listeners: one port per client URL serving gRPC (HTTP/2) and HTTP/1.1 (v2 keys,
//! `/version`, `/health`) side by side, as etcd does, over TLS when the URL is https.
//! Connections pass a [`Gate`] (`conn_gate.rs`): a bounded, timed handshake stage, then at
//! most `--max-connections` established ones per listener, a quarter of them per client
//! address; every refused TLS handshake is logged once with the peer address and the reason
//! in plain words.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use oxcd_api::etcdserverpb::{
    auth_server::AuthServer, cluster_server::ClusterServer, kv_server::KvServer,
    lease_server::LeaseServer, maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use oxcd_api::oxcdimportpb::import_server::ImportServer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

pub use crate::api::conn_gate::ConnLimits;
use crate::api::conn_gate::{ConnInfo, Gate, Prefixed, Refusal, HANDSHAKE_TIMEOUT};
use crate::api::server::Server;
use crate::api::services::Services;

/// An HTTP/1.1 connection waiting this long for a request's headers (the first, or the
/// next on a kept-alive connection) is closed.
pub const H1_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Concurrent HTTP/2 streams (requests, watch and keep-alive streams) per connection.
pub const H2_STREAMS_PER_CONNECTION_MAX: u32 = 1024;
/// Response bytes queued per HTTP/2 stream for a client that does not read (hyper's
/// default, named here); past it the stream waits for the client's window.
pub const H2_SEND_BUFFER_BYTES_MAX: usize = 400 * 1024;
/// etcd's `--grpc-keepalive-interval` and `--grpc-keepalive-timeout` defaults: an HTTP/2
/// connection silent this long is pinged, and closed when the ping is not answered.
pub const GRPC_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2 * 60 * 60);
pub const GRPC_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
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

/// Bytes of a request body read and thrown away before an early answer (a refusal, a 404),
/// at most, and for at most [`BODY_DRAIN_TIME_MAX`]. A server that answers while the client
/// is still sending and then closes makes the kernel reset the connection, and the client
/// never sees the answer (HTTP/1.1); over HTTP/2 it sees RST_STREAM instead of a status.
pub const BODY_DRAIN_BYTES_MAX: usize = 64 * 1024 * 1024;
pub const BODY_DRAIN_TIME_MAX: Duration = Duration::from_secs(5);

/// Reads a request body of at most `bytes_max` bytes as it arrives. A larger one is drained
/// (within [`BODY_DRAIN_BYTES_MAX`]) and answered 413, as Go's `MaxBytesReader` words it.
pub async fn read_body(
    body: axum::body::Body,
    bytes_max: usize,
) -> Result<bytes::Bytes, axum::response::Response> {
    use axum::response::IntoResponse;
    use http_body_util::BodyExt;
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(http::StatusCode::BAD_REQUEST.into_response());
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > bytes_max {
            let complete = drain(body).await;
            let mut resp = (
                http::StatusCode::PAYLOAD_TOO_LARGE,
                [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "http: request body too large\n",
            )
                .into_response();
            if !complete {
                resp.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            return Err(resp);
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

/// Reads what is left of a request body and throws it away, within [`BODY_DRAIN_BYTES_MAX`]
/// and [`BODY_DRAIN_TIME_MAX`]. True when the body ended.
pub async fn drain(body: axum::body::Body) -> bool {
    use http_body_util::BodyExt;
    let mut body = body;
    let work = async {
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            if let Some(data) = frame.data_ref() {
                seen += data.len();
                if seen > BODY_DRAIN_BYTES_MAX {
                    return false;
                }
            }
        }
        true
    };
    tokio::time::timeout(BODY_DRAIN_TIME_MAX, work)
        .await
        .unwrap_or(false)
}

/// Unknown paths: gRPC's Unimplemented for gRPC requests (a gRPC client ends its stream on
/// the trailers), else Go's "404 page not found", as etcd answers, after the body is
/// drained so that the answer arrives.
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
    drain(req.into_body()).await;
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

/// Serves one listener until `shutdown` flips. Every connection passes the [`Gate`]: a
/// bounded handshake stage, then a bounded number of established connections.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: ConnLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let gate = Gate::new(limits);
    let mut refusals = RefusalLog::default();
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
        let handshake = match gate.handshake(peer) {
            Ok(h) => h,
            Err(why) => {
                refusals.note(peer, why);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let Some(io) = first_request(stream, peer, tls).await else {
                return;
            };
            let established = match handshake.establish() {
                Ok(e) => e,
                Err(why) => {
                    tracing::warn!("refusing connection from {peer}: {why}");
                    return;
                }
            };
            serve_conn(io, established.info, app).await;
            drop(established);
        });
    }
}

/// Logs refused connections at most once a second (an attack would flood the log).
#[derive(Default)]
struct RefusalLog {
    last: Option<std::time::Instant>,
    since: u64,
}

impl RefusalLog {
    fn note(&mut self, peer: SocketAddr, why: Refusal) {
        self.since += 1;
        if self
            .last
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        tracing::warn!(
            "refusing connection from {peer}: {why} ({} refused since the last report)",
            self.since
        );
        self.last = Some(std::time::Instant::now());
        self.since = 0;
    }
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// The handshake stage: TLS when the port is https, then the first bytes of a request, all
/// within [`HANDSHAKE_TIMEOUT`]. None when the connection ends or times out first.
async fn first_request(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
) -> Option<Box<dyn Io>> {
    let work = async {
        match tls {
            // etcdctl 3.4 sends `:authority: http://host:port` over plaintext HTTP/2; the
            // shim reads the first bytes to tell HTTP/2 from HTTP/1.1.
            None => crate::api::h2_authority::wrap(stream)
                .await
                .map(|c| Box::new(c) as Box<dyn Io>)
                .map_err(|e| format!("it ended before its first request: {e}")),
            Some(acceptor) => {
                let mut s = acceptor
                    .accept(stream)
                    .await
                    .map_err(|e| format!("TLS handshake failed: {}", oxcd_tls::explain(&e)))?;
                let mut first = vec![0u8; 1];
                let n = tokio::io::AsyncReadExt::read(&mut s, &mut first)
                    .await
                    .map_err(|e| format!("it ended before its first request: {e}"))?;
                if n == 0 {
                    return Err("it ended before its first request".to_string());
                }
                Ok(Box::new(Prefixed::new(first, s)) as Box<dyn Io>)
            }
        }
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, work).await {
        Ok(Ok(io)) => Some(io),
        Ok(Err(why)) => {
            tracing::warn!("rejected connection from {peer}: {why}");
            None
        }
        Err(_) => {
            tracing::debug!(
                "closed connection from {peer}: no request within {HANDSHAKE_TIMEOUT:?}"
            );
            None
        }
    }
}

/// Serves HTTP/1.1 and HTTP/2 on an established connection; its requests carry `info`.
async fn serve_conn(io: Box<dyn Io>, info: ConnInfo, app: Router) {
    use tower::ServiceExt;
    let app = app.map_request(move |mut req: http::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(info);
        req
    });
    let svc = TowerToHyperService::new(app);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(H1_IDLE_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_STREAMS_PER_CONNECTION_MAX)
        .max_send_buf_size(H2_SEND_BUFFER_BYTES_MAX)
        .keep_alive_interval(GRPC_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(GRPC_KEEPALIVE_TIMEOUT);
    let res = builder
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .await;
    if let Err(e) = res {
        tracing::debug!("connection from {} ended: {e}", info.peer);
    }
}
