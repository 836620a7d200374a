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
use oxcd_api::etcdserverpb::{
    auth_server::AuthServer, cluster_server::ClusterServer, kv_server::KvServer,
    lease_server::LeaseServer, maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use oxcd_api::oxcdimportpb::import_server::ImportServer;
use oxcd_api::v3electionpb::election_server::ElectionServer;
use oxcd_api::v3lockpb::lock_server::LockServer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::api::coalesce::Coalesce;
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
/// Bytes allowed on top of `--max-request-bytes` for gRPC framing (etcd allows the same).
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// What a client listener serves: its router and, on a listener that serves gRPC, KV's
/// unary calls taken before the router ([`KvDirect`]).
#[derive(Clone)]
pub struct ClientApp {
    router: Router,
    kv: Option<KvDirect>,
}

impl From<Router> for ClientApp {
    fn from(router: Router) -> ClientApp {
        ClientApp { router, kv: None }
    }
}

/// KV's unary calls (Range, Put, DeleteRange, Txn) without the router: the same steps as
/// [`client_layer`] takes for a gRPC request (the learner gate, the call counted, timed and
/// its size error rewritten), without a router lookup, boxed layer futures and a router clone
/// per call. A call `kv_unary` does not take goes on to tonic's routes, past the layer.
#[derive(Clone)]
struct KvDirect {
    server: Arc<Server>,
    /// The gRPC routes without [`client_layer`] (it has run already).
    grpc: Router,
}

impl KvDirect {
    fn new(server: Arc<Server>) -> KvDirect {
        KvDirect {
            grpc: grpc_routes(server.clone()),
            server,
        }
    }

    async fn serve(self, req: axum::extract::Request) -> axum::response::Response {
        if let Some(refused) = learner_refusal(&self.server, req.uri().path()) {
            return refused;
        }
        let KvDirect { server, grpc } = self;
        crate::api::grpc_metrics::observed(req, |req| async move {
            let to_tonic = |req| async move {
                use tower::ServiceExt;
                // Boxed: the rare way, kept out of the common call's state machine.
                match Box::pin(grpc.oneshot(req)).await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                }
            };
            etcd_size_error(timed_grpc(&server, req, to_tonic).await)
        })
        .await
    }
}

impl ClientApp {
    async fn call(self, req: axum::extract::Request) -> axum::response::Response {
        if let Some(kv) = self.kv {
            if crate::api::kv_unary::takes(req.uri().path()) && is_grpc(&req) {
                // Boxed: the call's state machine is kilobytes, and hyper moves the future
                // of every request into a task of its own; this way only a pointer moves.
                return Box::pin(kv.serve(req)).await;
            }
        }
        use tower::ServiceExt;
        match self.router.oneshot(req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }
}

/// Builds what serves every client request: gRPC and HTTP on one port.
pub fn router(server: Arc<Server>) -> ClientApp {
    ClientApp {
        router: with_client_layers(
            server.clone(),
            grpc_routes(server.clone()).merge(http_routes(server.clone())),
        ),
        kv: Some(KvDirect::new(server)),
    }
}

/// `--listen-client-urls` when `--listen-client-http-urls` is set: gRPC only, as etcd 3.5.
pub fn grpc_router(server: Arc<Server>) -> ClientApp {
    ClientApp {
        router: with_client_layers(server.clone(), grpc_routes(server.clone())),
        kv: Some(KvDirect::new(server)),
    }
}

/// `--listen-client-http-urls`: the HTTP services only (v2, /version, /health...).
pub fn http_router(server: Arc<Server>) -> ClientApp {
    with_client_layers(server.clone(), http_routes(server)).into()
}

/// `--listen-metrics-urls`: `/metrics`, health and probes.
pub fn metrics_router(server: Arc<Server>) -> Router {
    crate::api::health::router(server.clone())
        .merge(crate::api::metrics_http::router(server))
        .fallback(not_found)
}

fn grpc_routes(server: Arc<Server>) -> Router {
    let svc = Services {
        server: server.clone(),
    };
    let limit = server.cfg.request_bytes_max + GRPC_OVERHEAD_BYTES;
    tonic::service::Routes::new(KvServer::new(svc.clone()).max_decoding_message_size(limit))
        .add_service(WatchServer::new(svc.clone()).max_decoding_message_size(limit))
        .add_service(LeaseServer::new(svc.clone()).max_decoding_message_size(limit))
        .add_service(ClusterServer::new(svc.clone()).max_decoding_message_size(limit))
        .add_service(AuthServer::new(svc.clone()).max_decoding_message_size(limit))
        .add_service(MaintenanceServer::new(svc.clone()).max_decoding_message_size(limit))
        .add_service(LockServer::new(svc.clone()).max_decoding_message_size(limit))
        .add_service(ElectionServer::new(svc.clone()).max_decoding_message_size(limit))
        .add_service(ImportServer::new(svc).max_decoding_message_size(limit))
        .add_service(crate::api::health::grpc_health(&server))
        .into_axum_router()
}

/// The HTTP services: v2 keys, `/metrics`, the v3 JSON gateway (unless
/// `--enable-grpc-gateway=false`).
fn http_routes(server: Arc<Server>) -> Router {
    let routes = crate::api::v2_http::router(server.clone())
        .merge(crate::api::metrics_http::router(server.clone()));
    if server.cfg.enable_grpc_gateway {
        routes.merge(crate::api::gateway::router(server))
    } else {
        routes
    }
}

fn with_client_layers(server: Arc<Server>, routes: Router) -> Router {
    routes
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(server, client_layer))
}

/// What every client request passes through (KV's unary calls on a gRPC listener take the
/// same steps in [`KvDirect`], before the router), in one layer (each layer boxes a future and
/// clones the router per request: three of them were about 4 % of a member's CPU under a put
/// load), in this order: etcd's access controller (`--host-whitelist` for HTTP requests on
/// plain connections), the learner gate, go-grpc-prometheus's counts (`grpc_metrics.rs`), the
/// gRPC call (timed against `--warning-unary-request-duration`), and grpc-go's error for a
/// request over the size limit.
async fn client_layer(
    axum::extract::State(server): axum::extract::State<Arc<Server>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let grpc = is_grpc(&req);
    if !grpc {
        if let Some(refused) = host_refusal(&server, &req) {
            return refused;
        }
    }
    if let Some(refused) = learner_refusal(&server, req.uri().path()) {
        return refused;
    }
    if grpc {
        // Counted with the status the client gets (after the size error's rewrite).
        return crate::api::grpc_metrics::observed(req, |req| async {
            etcd_size_error(timed_grpc(&server, req, |req| next.run(req)).await)
        })
        .await;
    }
    etcd_size_error(next.run(req).await)
}

/// Whether a request came over TLS (set per connection by [`with_client_cn`]).
#[derive(Debug, Clone, Copy)]
pub struct OverTls(pub bool);

fn is_grpc(req: &axum::extract::Request) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// etcd's access controller: `--host-whitelist` for HTTP requests on plain connections
/// (CVE-2018-5702, DNS rebinding). The answer to a request it refuses.
fn host_refusal(server: &Server, req: &axum::extract::Request) -> Option<axum::response::Response> {
    use axum::response::IntoResponse;
    let over_tls = req.extensions().get::<OverTls>().is_some_and(|t| t.0);
    let whitelist = &server.cfg.http.host_whitelist;
    if over_tls || whitelist.is_empty() {
        return None;
    }
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or(req.uri().host())
        .unwrap_or_default();
    let name = host
        .rsplit_once(':')
        .map_or(host, |(h, _)| h)
        .trim_matches(['[', ']']);
    if !whitelist.iter().any(|w| w == name) {
        tracing::warn!(
            host = name,
            "rejecting HTTP request to prevent DNS rebinding attacks"
        );
        let body = format!(
            "\netcd received your request, but the Host header was unrecognized.\n\nTo fix this, choose one of the following options:\n- Enable TLS, then any HTTP request will be allowed.\n- Add the hostname you want to use to the whitelist in settings.\n  - e.g. etcd --host-whitelist {name:?}\n\nThis requirement has been added to help prevent \"DNS Rebinding\" attacks (CVE-2018-5702).\n\n"
        );
        return Some(
            (
                http::StatusCode::MISDIRECTED_REQUEST,
                [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                body,
            )
                .into_response(),
        );
    }
    None
}

/// gRPC streams whose length says nothing about the server's speed.
const STREAMING_RPCS: &[&str] = &[
    "/etcdserverpb.Watch/Watch",
    "/etcdserverpb.Lease/LeaseKeepAlive",
    "/etcdserverpb.Maintenance/Snapshot",
];

/// A unary gRPC call slower than `--warning-unary-request-duration` is logged (etcd's
/// "request stats" warning).
async fn timed_grpc<F, Fut>(
    server: &Arc<Server>,
    req: axum::extract::Request,
    next: F,
) -> axum::response::Response
where
    F: FnOnce(axum::extract::Request) -> Fut,
    Fut: std::future::Future<Output = axum::response::Response>,
{
    let uri = req.uri().clone(); // shares the request's bytes: no copy per call
    let path = uri.path();
    let started = std::time::Instant::now();
    let services = Services {
        server: server.clone(),
    };
    let limit = server.cfg.request_bytes_max + GRPC_OVERHEAD_BYTES;
    let resp = match crate::api::kv_unary::serve(&services, limit, req).await {
        Ok(resp) => resp,
        Err(req) => next(req).await,
    };
    let took = started.elapsed();
    let limit = server.cfg.warning_unary_request_duration;
    if took > limit && !STREAMING_RPCS.contains(&path) {
        tracing::warn!(
            "time spent" = ?took,
            "expected-duration" = ?limit,
            "request path" = %path,
            "request stats"
        );
    }
    resp
}

/// The gRPC calls a learner serves, as etcd 3.4: Status, and Range (whose handler refuses
/// all but serializable reads). Everything else gets "rpc not supported for learner".
const LEARNER_RPCS: &[&str] = &["/etcdserverpb.Maintenance/Status", "/etcdserverpb.KV/Range"];

fn learner_refusal(server: &Server, path: &str) -> Option<axum::response::Response> {
    let grpc = ["/etcdserverpb.", "/v3lockpb.", "/v3electionpb."];
    if grpc.iter().any(|p| path.starts_with(p))
        && !LEARNER_RPCS.contains(&path)
        && server.is_learner()
    {
        return Some(
            crate::error::ServerError::NotSupportedForLearner
                .status()
                .into_http::<axum::body::Body>(),
        );
    }
    None
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
    crate::api::body::drain(req.into_body()).await;
    let resp = (
        http::StatusCode::NOT_FOUND,
        [
            (http::header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        "404 page not found\n",
    )
        .into_response();
    crate::api::gateway::cors(resp).await
}

/// tonic reports a request over the decoding limit as OUT_OF_RANGE "Error, decoded message
/// length too large: found N bytes, the limit is: M bytes"; etcd (grpc-go) answers
/// RESOURCE_EXHAUSTED "grpc: received message larger than max (N vs. M)", and clients match
/// on that code. Rewrite it once, here.
fn etcd_size_error(mut resp: axum::response::Response) -> axum::response::Response {
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

/// Binds every URL (before anything else starts, so a bad address fails early), with
/// `--socket-reuse-address` / `--socket-reuse-port`.
pub async fn bind(
    urls: &[crate::config::Url],
    opts: &crate::config::HttpOptions,
) -> anyhow::Result<Vec<(crate::config::Url, TcpListener)>> {
    let mut out = Vec::new();
    for u in urls {
        let addr = u
            .bind_addr()
            .ok_or_else(|| anyhow::anyhow!("cannot bind {u}: not an IP address"))?;
        let l = bind_one(addr, opts).map_err(|e| anyhow::anyhow!("cannot listen on {u}: {e}"))?;
        out.push((u.clone(), l));
    }
    Ok(out)
}

/// Listen backlog, as Go's default on Linux (somaxconn).
const LISTEN_BACKLOG: u32 = 4096;

fn bind_one(addr: SocketAddr, opts: &crate::config::HttpOptions) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // Go (etcd) and tokio set SO_REUSEADDR on every listener: a port whose last
    // connections are in TIME_WAIT binds again at once. --socket-reuse-address asks the same.
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(opts.socket_reuse_port)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves one listener until `shutdown` flips. Every connection passes the [`Gate`]: a
/// bounded handshake stage, then a bounded number of established connections.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: ClientApp,
    limits: ConnLimits,
    mut shutdown: watch::Receiver<bool>,
    opts: crate::config::HttpOptions,
) {
    let opts = Arc::new(opts);
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
        let admitted = match gate.admit(peer) {
            Ok(a) => a,
            Err(why) => {
                refusals.note(peer, why);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let opts = opts.clone();
        tokio::spawn(async move {
            // The wait for a turn and the handshake share one timeout from `accept`.
            let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
            let Ok(Some(handshake)) = tokio::time::timeout_at(deadline, admitted.handshake()).await
            else {
                tracing::debug!(
                    "closed connection from {peer}: no turn to handshake within {HANDSHAKE_TIMEOUT:?}"
                );
                return;
            };
            let Some(first) = first_request(stream, peer, tls, deadline).await else {
                return;
            };
            let established = match handshake.establish() {
                Ok(e) => e,
                Err(why) => {
                    tracing::warn!("refusing connection from {peer}: {why}");
                    return;
                }
            };
            serve_conn(first, established.info, app, &opts).await;
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

/// A connection past its handshake stage: the stream, whether it is TLS, and the CN of the
/// client's verified certificate.
struct FirstRequest {
    io: Box<dyn Io>,
    over_tls: bool,
    cn: Option<String>,
}

/// The handshake stage: TLS when the port is https, then the first bytes of a request, all
/// by `deadline` ([`HANDSHAKE_TIMEOUT`] after `accept`). None when the connection ends or
/// times out first.
async fn first_request(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    deadline: tokio::time::Instant,
) -> Option<FirstRequest> {
    let work = async {
        match tls {
            // etcdctl 3.4 sends `:authority: http://host:port` over plaintext HTTP/2; the
            // shim reads the first bytes to tell HTTP/2 from HTTP/1.1.
            None => crate::api::h2_authority::wrap(stream)
                .await
                .map(|c| FirstRequest {
                    io: Box::new(c),
                    over_tls: false,
                    cn: None,
                })
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
                let cn = s
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(oxcd_tls::cert_common_name);
                Ok(FirstRequest {
                    io: Box::new(Prefixed::new(first, s)),
                    over_tls: true,
                    cn,
                })
            }
        }
    };
    match tokio::time::timeout_at(deadline, work).await {
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

/// The header that carries, inside the server only, the common name of a TLS client's
/// verified certificate (etcd authenticates such a client as that user when it sends no
/// token). Whatever a client sends under this name is removed first.
pub const CLIENT_CN_HEADER: &str = "x-oxcd-client-cn";

/// Serves HTTP/1.1 and HTTP/2 on an established connection; its requests carry `info` and
/// [`OverTls`], and [`CLIENT_CN_HEADER`] only when the client presented a verified
/// certificate with a CN. HTTP/2 takes `--max-concurrent-streams` (within
/// [`H2_STREAMS_PER_CONNECTION_MAX`]) and the `--grpc-keepalive-*` pings.
async fn serve_conn(
    first: FirstRequest,
    info: ConnInfo,
    app: ClientApp,
    opts: &crate::config::HttpOptions,
) {
    let FirstRequest { io, over_tls, cn } = first;
    let cn = cn.and_then(|c| http::HeaderValue::from_str(&c).ok());
    let svc = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(info);
        req.extensions_mut().insert(OverTls(over_tls));
        let h = req.headers_mut();
        h.remove(CLIENT_CN_HEADER);
        if let Some(cn) = &cn {
            h.insert(CLIENT_CN_HEADER, cn.clone());
        }
        let app = app.clone();
        async move { Ok::<_, std::convert::Infallible>(app.call(req.map(axum::body::Body::new)).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(H1_IDLE_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(
            opts.max_concurrent_streams
                .min(H2_STREAMS_PER_CONNECTION_MAX),
        )
        .max_send_buf_size(H2_SEND_BUFFER_BYTES_MAX)
        .keep_alive_interval(opts.keepalive_interval)
        .keep_alive_timeout(opts.keepalive_timeout);
    let res = builder
        .serve_connection_with_upgrades(TokioIo::new(Coalesce::new(io)), svc)
        .await;
    if let Err(e) = res {
        tracing::debug!("connection from {} ended: {e}", info.peer);
    }
}
