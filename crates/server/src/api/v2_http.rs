//! HTTP handlers: etcd 2's `/v2/keys` API (what the tutorial's curl calls use), `/version`
//! and `/health`. Writes go through the log like every other write.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;

use crate::api::conn_gate::{ConnInfo, PerKey};
use crate::api::server::Server;
use crate::clock::now_ms;
use crate::request::{Op, V2Request};
use crate::state::apply::Applied;
use crate::state::v2::{V2Error, V2Event, TTL_MAX_S};
use crate::state::watch::WATCHERS_PER_CONNECTION_SHARE;
use crate::version::{ETCD_CLUSTER_VERSION, ETCD_VERSION};

/// Longest a `wait=true` request is held before it is answered with nothing (etcd clients
/// reconnect). Bounded so a forgotten client does not hold a connection forever.
pub const WAIT_MAX: Duration = Duration::from_secs(300);

/// The `wait=true` requests held at once: as many as `--max-watchers` (they are watchers
/// of the v2 store), half of them on one connection (as gRPC watchers), past which a wait
/// is refused at once.
#[derive(Clone)]
struct Waits {
    all: Arc<tokio::sync::Semaphore>,
    per_conn: Arc<PerKey<u64>>,
}

impl Waits {
    fn new(watchers_max: usize) -> Waits {
        Waits {
            all: Arc::new(tokio::sync::Semaphore::new(watchers_max)),
            per_conn: PerKey::new((watchers_max / WATCHERS_PER_CONNECTION_SHARE).max(1)),
        }
    }
}

pub fn router(server: Arc<Server>) -> Router {
    let mut r = Router::new().route("/version", get(version));
    // With --enable-v2=false etcd answers the keys API with Go's plain 404.
    let handler = if server.cfg.enable_v2 {
        any(keys)
    } else {
        any(not_found)
    };
    r = r
        .route("/v2/keys", handler.clone())
        .route("/v2/keys/", handler.clone())
        .route("/v2/keys/{*path}", handler);
    let waits = Waits::new(server.cfg.watchers_max);
    let server_for_cors = server.clone();
    let mut r = r
        .with_state(server.clone())
        .merge(crate::api::health::router(server.clone()));
    if server.cfg.enable_v2 {
        r = r.merge(crate::api::v2_admin::router(server));
    }
    r.layer(axum::middleware::from_fn_with_state(server_for_cors, cors))
        .layer(axum::Extension(waits))
}

/// etcd wraps its HTTP API in a CORS handler: with `--cors=*` (the default) every response
/// allows every origin; with a list, only a listed `Origin` gets the headers (naming it).
/// OPTIONS answers 200 with no body.
async fn cors(
    State(server): State<Arc<Server>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let allowed = &server.cfg.http.cors;
    let allow_origin = if allowed.is_empty() {
        Some(HeaderValue::from_static("*"))
    } else {
        req.headers()
            .get("origin")
            .filter(|o| o.to_str().is_ok_and(|o| allowed.iter().any(|a| a == o)))
            .cloned()
    };
    let mut resp = if req.method() == Method::OPTIONS {
        StatusCode::OK.into_response()
    } else {
        next.run(req).await
    };
    let Some(origin) = allow_origin else {
        return resp;
    };
    let h = resp.headers_mut();
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
    );
    h.insert("access-control-allow-origin", origin);
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("accept, content-type, authorization"),
    );
    resp
}

async fn version() -> Response {
    json_response(
        StatusCode::OK,
        HeaderMap::new(),
        format!(r#"{{"etcdserver":"{ETCD_VERSION}","etcdcluster":"{ETCD_CLUSTER_VERSION}"}}"#),
    )
}

/// Go's `http.NotFound`.
async fn not_found() -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    (StatusCode::NOT_FOUND, headers, "404 page not found\n").into_response()
}

/// Go's `http.Error` with status 405, as etcd's `allowMethod` writes it.
fn method_not_allowed(allow: &'static str) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert("allow", HeaderValue::from_static(allow));
    headers.insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    (
        StatusCode::METHOD_NOT_ALLOWED,
        headers,
        "Method Not Allowed\n",
    )
        .into_response()
}

fn json_response(status: StatusCode, mut headers: HeaderMap, body: String) -> Response {
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    (status, headers, body).into_response()
}

/// Form values as Go's `Request.ParseForm` collects them: the body (PUT and POST with a
/// form content type) first, then the query string; a name's first value wins.
fn parse_form(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> HashMap<String, String> {
    let mut form = HashMap::new();
    let is_form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if (method == Method::PUT || method == Method::POST) && is_form {
        add_form_pairs(&String::from_utf8_lossy(body), &mut form);
    }
    if let Some(q) = uri.query() {
        add_form_pairs(q, &mut form);
    }
    form
}

fn add_form_pairs(s: &str, into: &mut HashMap<String, String>) {
    for pair in s.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        into.entry(unescape(k, true))
            .or_insert_with(|| unescape(v, true));
    }
}

/// Percent-decoding; `plus_is_space` for form values (not for paths, as Go's `url.PathUnescape`).
fn unescape(s: &str, plus_is_space: bool) -> String {
    fn hex(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Ctx {
    server: Arc<Server>,
    waits: Waits,
    /// The client connection (0: unknown).
    conn: u64,
}

impl Ctx {
    /// Headers of an error: etcd's `Error.WriteTo` sets only the store index.
    fn error_headers(&self, etcd_index: u64) -> HeaderMap {
        let mut h = HeaderMap::new();
        let put = |h: &mut HeaderMap, k: &'static str, v: String| {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(k, v);
            }
        };
        put(
            &mut h,
            "x-etcd-cluster-id",
            format!("{:x}", self.server.cluster_id),
        );
        put(&mut h, "x-etcd-index", etcd_index.to_string());
        h
    }

    /// Headers of an event: the store index and raft's commit index and term.
    fn headers(&self, etcd_index: u64) -> HeaderMap {
        let mut h = self.error_headers(etcd_index);
        let s = &self.server;
        for (k, v) in [
            ("x-raft-index", s.status.commit.load(Ordering::Relaxed)),
            ("x-raft-term", s.status.term.load(Ordering::Relaxed)),
        ] {
            if let Ok(v) = HeaderValue::from_str(&v.to_string()) {
                h.insert(k, v);
            }
        }
        h
    }

    fn error(&self, e: V2Error) -> Response {
        let status =
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_string(&e).unwrap_or_default() + "\n";
        json_response(status, self.error_headers(e.index), body)
    }

    fn event(&self, ev: &V2Event, status: StatusCode, etcd_index: u64) -> Response {
        let body = serde_json::to_string(ev).unwrap_or_default() + "\n";
        json_response(status, self.headers(etcd_index), body)
    }

    fn current_index(&self) -> u64 {
        self.server.tables.v2.lock().map(|v| v.index).unwrap_or(0)
    }
}

/// A `/v2/keys` request, checked as etcd's `parseKeyRequest` checks it (same order, same
/// errors: these carry index 0 because they never reach the store).
struct KeyRequest {
    path: String,
    value: Option<String>,
    dir: bool,
    recursive: bool,
    sorted: bool,
    wait: bool,
    wait_index: u64,
    quorum: bool,
    prev_value: Option<String>,
    prev_index: u64,
    prev_exist: Option<bool>,
    ttl: Option<u64>,
    refresh: bool,
}

/// Go's `strconv.ParseUint(v, 10, 64)`: digits only.
fn go_uint(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

fn request_error(code: u32, cause: &str) -> V2Error {
    V2Error::new(code, cause, 0)
}

fn parse_key_request(
    method: &Method,
    path: String,
    f: &HashMap<String, String>,
) -> Result<KeyRequest, V2Error> {
    let uint = |name: &str| -> Result<u64, V2Error> {
        match f.get(name) {
            None => Ok(0),
            Some(v) => go_uint(v)
                .ok_or_else(|| request_error(203, &format!("invalid value for \"{name}\""))),
        }
    };
    let flag = |name: &str| -> Result<bool, V2Error> {
        match f.get(name) {
            None => Ok(false),
            Some(v) => oxcd_gocompat::flag::parse_bool(v)
                .ok_or_else(|| request_error(209, &format!("invalid value for \"{name}\""))),
        }
    };
    let prev_index = uint("prevIndex")?;
    let wait_index = uint("waitIndex")?;
    let recursive = flag("recursive")?;
    let sorted = flag("sorted")?;
    let wait = flag("wait")?;
    let dir = flag("dir")?;
    let quorum = flag("quorum")?;
    flag("stream")?;
    if wait && method != Method::GET {
        return Err(request_error(
            209,
            "\"wait\" can only be used with GET requests",
        ));
    }
    let prev_value = f.get("prevValue").cloned();
    if prev_value.as_deref() == Some("") {
        return Err(request_error(201, "\"prevValue\" cannot be empty"));
    }
    flag("noValueOnSuccess")?;
    let ttl = match f.get("ttl").map(String::as_str) {
        None | Some("") => None,
        // Past TTL_MAX_S the expiration time would overflow (etcd's own overflows too).
        Some(v) => Some(
            go_uint(v)
                .filter(|t| *t <= TTL_MAX_S as u64)
                .ok_or_else(|| request_error(202, "invalid value for \"ttl\""))?,
        ),
    };
    let prev_exist = match f.get("prevExist") {
        None => None,
        Some(v) => Some(
            oxcd_gocompat::flag::parse_bool(v)
                .ok_or_else(|| request_error(209, "invalid value for prevExist"))?,
        ),
    };
    let refresh = match f.get("refresh") {
        None => false,
        Some(v) => oxcd_gocompat::flag::parse_bool(v)
            .ok_or_else(|| request_error(209, "invalid value for refresh"))?,
    };
    let value = f.get("value").cloned();
    if refresh {
        if value.as_deref().is_some_and(|v| !v.is_empty()) {
            return Err(request_error(211, "A value was provided on a refresh"));
        }
        if ttl.is_none() {
            return Err(request_error(212, "No TTL value set"));
        }
    }
    Ok(KeyRequest {
        path,
        value,
        dir,
        recursive,
        sorted,
        wait,
        wait_index,
        quorum,
        prev_value,
        prev_index,
        prev_exist,
        ttl,
        refresh,
    })
}

async fn keys(
    State(server): State<Arc<Server>>,
    axum::Extension(waits): axum::Extension<Waits>,
    conn: Option<axum::Extension<ConnInfo>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    // The same limit as every other request; read as it arrives, never all at once.
    let body = match crate::api::body::read_body(body, server.cfg.request_bytes_max).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let conn = conn.map_or(0, |c| c.0.id);
    let ctx = Ctx {
        server,
        waits,
        conn,
    };
    if ![
        Method::HEAD,
        Method::GET,
        Method::PUT,
        Method::POST,
        Method::DELETE,
    ]
    .contains(&method)
    {
        return method_not_allowed("HEAD,GET,PUT,POST,DELETE");
    }
    let path = uri
        .path()
        .strip_prefix("/v2/keys")
        .map(|p| unescape(p, false))
        .unwrap_or_default();
    let form = parse_form(&method, &uri, &headers, &body);
    let res = match parse_key_request(&method, path, &form) {
        Err(e) => Err(e),
        Ok(req) => {
            let op = crate::api::v2_admin::store_op(
                method.as_str(),
                req.prev_exist,
                req.prev_value.is_some() || req.prev_index != 0,
            );
            let wait = req.wait;
            let res = if method == Method::GET || method == Method::HEAD {
                get_keys(&ctx, &req).await
            } else {
                write_keys(&ctx, method.as_str(), req).await
            };
            if !wait {
                crate::api::v2_admin::STORE_STATS.record(op, res.is_ok());
            }
            res
        }
    };
    match res {
        Ok(r) => r,
        Err(e) => ctx.error(e),
    }
}

async fn get_keys(ctx: &Ctx, req: &KeyRequest) -> Result<Response, V2Error> {
    if req.wait {
        return wait(ctx, req).await;
    }
    if req.quorum {
        ctx.server
            .read_index()
            .await
            .map_err(|e| V2Error::new(300, e.to_string(), 0))?;
    }
    let v2 = ctx
        .server
        .tables
        .v2
        .lock()
        .map_err(|_| V2Error::new(300, "v2 store lock", 0))?;
    let ev = v2.get(&req.path, req.recursive, req.sorted, now_ms())?;
    Ok(ctx.event(&ev, StatusCode::OK, v2.index))
}

/// A long poll. As etcd, the response's `X-Etcd-Index` is the store index when the watch
/// started, whatever event answers it. When no event is there yet, the status and headers
/// go out at once and only the body waits (a client with a read timeout sees an idle
/// watch, not a dead server).
async fn wait(ctx: &Ctx, req: &KeyRequest) -> Result<Response, V2Error> {
    let start_index = ctx.current_index();
    let held = (
        ctx.waits.all.clone().try_acquire_owned().ok(),
        ctx.waits.per_conn.take(ctx.conn),
    );
    let (Some(all), Some(mine)) = held else {
        return Err(V2Error::new(
            300,
            "too many waits held (--max-watchers, half of it per connection)",
            start_index,
        ));
    };
    let since = match req.wait_index {
        0 => start_index + 1,
        n => n,
    };
    if let Some(ev) = event_since(&ctx.server, &req.path, req.recursive, since)? {
        return Ok(ctx.event(&ev, StatusCode::OK, start_index));
    }
    let server = ctx.server.clone();
    let (path, recursive) = (req.path.clone(), req.recursive);
    let body = futures::stream::once(async move {
        // Held for as long as the body waits.
        let _held = (all, mine);
        let _watching = crate::api::v2_admin::WatcherCount::default();
        let text = wait_for_event(&server, &path, recursive, since).await;
        Ok::<_, std::convert::Infallible>(bytes::Bytes::from(text))
    });
    let mut headers = ctx.headers(start_index);
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    Ok((StatusCode::OK, headers, axum::body::Body::from_stream(body)).into_response())
}

/// The first event at or after `since` under `path`, if the store has it.
fn event_since(
    server: &Server,
    path: &str,
    recursive: bool,
    since: u64,
) -> Result<Option<V2Event>, V2Error> {
    let v2 = server
        .tables
        .v2
        .lock()
        .map_err(|_| V2Error::new(300, "v2 store lock", 0))?;
    v2.event_since(path, recursive, since)
}

/// Waits (at most [`WAIT_MAX`]) for an event and returns the body to send: the event's
/// JSON, an error's JSON, or nothing when the wait ends without one.
async fn wait_for_event(server: &Server, path: &str, recursive: bool, since: u64) -> String {
    let mut rx = server.v2_index.clone();
    let deadline = tokio::time::Instant::now() + WAIT_MAX;
    loop {
        match event_since(server, path, recursive, since) {
            Ok(Some(ev)) => return serde_json::to_string(&ev).unwrap_or_default() + "\n",
            Ok(None) => {}
            Err(e) => return serde_json::to_string(&e).unwrap_or_default() + "\n",
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            _ => return String::new(),
        }
    }
}

async fn write_keys(ctx: &Ctx, method: &str, req: KeyRequest) -> Result<Response, V2Error> {
    let req = V2Request {
        method: method.into(),
        path: req.path,
        value: req.value,
        dir: req.dir,
        // An explicit empty `ttl=` clears a TTL on update; etcd treats it as "no TTL" too.
        ttl: req.ttl.map(|t| t.min(TTL_MAX_S as u64) as i64),
        prev_exist: req.prev_exist,
        prev_value: req.prev_value,
        // etcd's prevIndex=0 means "do not compare the index".
        prev_index: (req.prev_index != 0).then_some(req.prev_index),
        recursive: req.recursive,
        now_ms: now_ms(),
        refresh: req.refresh,
    };
    match ctx.server.propose(Op::V2(req)).await {
        Ok((Applied::V2(Ok(ev)), _)) => {
            let status = if ev.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(ctx.event(&ev, status, ev.index))
        }
        Ok((Applied::V2(Err(e)), _)) => Err(e),
        Ok(_) => Err(V2Error::new(300, "unexpected apply result", 0)),
        Err(e) => Err(V2Error::new(300, e.to_string(), 0)),
    }
}

#[cfg(test)]
mod tests {
    use proptest::arbitrary::any;
    use proptest::prelude::*;

    use super::*;

    fn method() -> impl Strategy<Value = Method> {
        prop_oneof![
            Just(Method::GET),
            Just(Method::PUT),
            Just(Method::POST),
            Just(Method::DELETE),
            Just(Method::HEAD),
        ]
    }

    /// Form text made of the fields etcd reads, with random values (percent escapes, `+`,
    /// huge numbers, empty values included).
    fn form() -> impl Strategy<Value = String> {
        let name = prop_oneof![
            Just("value"),
            Just("ttl"),
            Just("prevIndex"),
            Just("waitIndex"),
            Just("prevExist"),
            Just("prevValue"),
            Just("refresh"),
            Just("wait"),
            Just("dir"),
            Just("recursive"),
            Just("%zz"),
        ];
        let value = "[a-z0-9%+=&._-]{0,24}";
        proptest::collection::vec((name, value), 0..6).prop_map(|pairs| {
            pairs
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join("&")
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Decoders under random input (issue 16): any body and query give a request or one
        /// of etcd's errors, never a panic.
        #[test]
        fn forms_and_queries_never_panic(
            m in method(),
            body in proptest::collection::vec(any::<u8>(), 0..200),
            fields in form(),
            query in form(),
            path in "[a-z/%.]{0,20}",
        ) {
            let mut headers = HeaderMap::new();
            headers.insert(
                "content-type",
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
            let Ok(uri) = format!("/v2/keys/{path}?{query}").parse::<Uri>() else {
                return Ok(());
            };
            for b in [&body[..], fields.as_bytes()] {
                let f = parse_form(&m, &uri, &headers, b);
                let _ = parse_key_request(&m, unescape(&path, false), &f);
            }
        }

        /// A TTL is a number of seconds up to `TTL_MAX_S`; anything else is errorCode 202.
        #[test]
        fn ttls_are_bounded(ttl in any::<u64>()) {
            let mut f = HashMap::new();
            f.insert("ttl".to_string(), ttl.to_string());
            let r = parse_key_request(&Method::PUT, "/k".into(), &f);
            match r {
                Ok(req) => prop_assert!(req.ttl.is_some_and(|t| t <= TTL_MAX_S as u64)),
                Err(e) => {
                    prop_assert_eq!(e.code, 202);
                    prop_assert!(ttl > TTL_MAX_S as u64);
                }
            }
        }
    }
}
