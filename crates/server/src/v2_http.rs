//! HTTP handlers: etcd 2's `/v2/keys` API (what the tutorial's curl calls use), `/version`
//! and `/health`. Writes go through the log like every other write.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;

use crate::apply::Applied;
use crate::raft_node::now_ms;
use crate::request::{Op, V2Request};
use crate::server::{Server, ETCD_CLUSTER_VERSION, ETCD_VERSION};
use crate::v2::{V2Error, V2Event};

/// Longest a `wait=true` request is held before it is answered with nothing (etcd clients
/// reconnect). Bounded so a forgotten client does not hold a connection forever.
pub const WAIT_MAX: Duration = Duration::from_secs(300);

pub fn router(server: Arc<Server>) -> Router {
    let mut r = Router::new()
        .route("/version", get(version))
        .route("/health", get(health));
    if server.cfg.enable_v2 {
        r = r
            .route("/v2/keys", any(keys))
            .route("/v2/keys/", any(keys))
            .route("/v2/keys/{*path}", any(keys));
    }
    r.with_state(server)
}

async fn version() -> Response {
    json_response(
        StatusCode::OK,
        HeaderMap::new(),
        format!(r#"{{"etcdserver":"{ETCD_VERSION}","etcdcluster":"{ETCD_CLUSTER_VERSION}"}}"#),
    )
}

async fn health(State(server): State<Arc<Server>>) -> Response {
    let ok = server.leader() != 0 && server.read_index().await.is_ok();
    let (status, body) = if ok {
        (StatusCode::OK, r#"{"health":"true"}"#)
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, r#"{"health":"false"}"#)
    };
    json_response(status, HeaderMap::new(), body.to_string())
}

fn json_response(status: StatusCode, mut headers: HeaderMap, body: String) -> Response {
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    (status, headers, body).into_response()
}

/// Decodes `application/x-www-form-urlencoded` (also used for query strings).
fn parse_form(s: &str, into: &mut HashMap<String, String>) {
    for pair in s.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        into.entry(unescape(k)).or_insert_with(|| unescape(v));
    }
}

fn unescape(s: &str) -> String {
    fn hex(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
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
}

impl Ctx {
    fn headers(&self, etcd_index: u64) -> HeaderMap {
        let mut h = HeaderMap::new();
        let s = &self.server;
        let put = |h: &mut HeaderMap, k: &'static str, v: String| {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(k, v);
            }
        };
        put(&mut h, "x-etcd-cluster-id", format!("{:x}", s.cluster_id));
        put(&mut h, "x-etcd-index", etcd_index.to_string());
        put(
            &mut h,
            "x-raft-index",
            s.status.applied.load(Ordering::Relaxed).to_string(),
        );
        put(
            &mut h,
            "x-raft-term",
            s.status.term.load(Ordering::Relaxed).to_string(),
        );
        h
    }

    fn error(&self, e: V2Error) -> Response {
        let status =
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_string(&e).unwrap_or_default() + "\n";
        json_response(status, self.headers(e.index), body)
    }

    fn event(&self, ev: &V2Event, status: StatusCode, etcd_index: u64) -> Response {
        let body = serde_json::to_string(ev).unwrap_or_default() + "\n";
        json_response(status, self.headers(etcd_index), body)
    }

    fn current_index(&self) -> u64 {
        self.server.v2.lock().map(|v| v.index).unwrap_or(0)
    }
}

fn bool_param(
    p: &HashMap<String, String>,
    name: &str,
    index: u64,
) -> Result<Option<bool>, V2Error> {
    match p.get(name).map(String::as_str) {
        None | Some("") => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(V2Error::new(
            209,
            format!("invalid value for \"{name}\""),
            index,
        )),
    }
}

async fn keys(
    State(server): State<Arc<Server>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let ctx = Ctx { server };
    let path = uri
        .path()
        .strip_prefix("/v2/keys")
        .map(unescape)
        .unwrap_or_default();
    let mut params = HashMap::new();
    if let Some(q) = uri.query() {
        parse_form(q, &mut params);
    }
    if method == Method::PUT || method == Method::POST || method == Method::DELETE {
        parse_form(&String::from_utf8_lossy(&body), &mut params);
    }
    let res = match method {
        Method::GET | Method::HEAD => get_keys(&ctx, &path, &params).await,
        Method::PUT | Method::POST | Method::DELETE => {
            write_keys(&ctx, method.as_str(), &path, &params).await
        }
        _ => return (StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed").into_response(),
    };
    match res {
        Ok(r) => r,
        Err(e) => ctx.error(e),
    }
}

async fn get_keys(ctx: &Ctx, path: &str, p: &HashMap<String, String>) -> Result<Response, V2Error> {
    let index = ctx.current_index();
    let recursive = bool_param(p, "recursive", index)?.unwrap_or(false);
    let sorted = bool_param(p, "sorted", index)?.unwrap_or(false);
    if bool_param(p, "wait", index)?.unwrap_or(false) {
        return wait(ctx, path, p, recursive).await;
    }
    if bool_param(p, "quorum", index)?.unwrap_or(false) {
        ctx.server
            .read_index()
            .await
            .map_err(|e| V2Error::new(300, e.to_string(), index))?;
    }
    let v2 = ctx
        .server
        .v2
        .lock()
        .map_err(|_| V2Error::new(300, "v2 store lock", index))?;
    let ev = v2.get(path, recursive, sorted, now_ms())?;
    Ok(ctx.event(&ev, StatusCode::OK, v2.index))
}

async fn wait(
    ctx: &Ctx,
    path: &str,
    p: &HashMap<String, String>,
    recursive: bool,
) -> Result<Response, V2Error> {
    let index = ctx.current_index();
    let since = match p.get("waitIndex").map(String::as_str) {
        None | Some("") => index + 1,
        Some(s) => s
            .parse::<u64>()
            .map_err(|_| V2Error::new(203, "invalid value for \"waitIndex\"", index))?,
    };
    let mut rx = ctx.server.v2_index.clone();
    let deadline = tokio::time::Instant::now() + WAIT_MAX;
    loop {
        {
            let v2 = ctx
                .server
                .v2
                .lock()
                .map_err(|_| V2Error::new(300, "v2 store lock", index))?;
            if let Some(ev) = v2.event_since(path, recursive, since)? {
                return Ok(ctx.event(&ev, StatusCode::OK, ev.index));
            }
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            _ => {
                return Ok(json_response(
                    StatusCode::OK,
                    ctx.headers(ctx.current_index()),
                    String::new(),
                ))
            }
        }
    }
}

async fn write_keys(
    ctx: &Ctx,
    method: &str,
    path: &str,
    p: &HashMap<String, String>,
) -> Result<Response, V2Error> {
    let index = ctx.current_index();
    let ttl = match p.get("ttl").map(String::as_str) {
        None => None,
        Some("") => Some(0),
        Some(s) => Some(
            s.parse::<i64>()
                .ok()
                .filter(|t| *t >= 0)
                .ok_or_else(|| V2Error::new(202, "", index))?,
        ),
    };
    let prev_index = match p.get("prevIndex").map(String::as_str) {
        None | Some("") => None,
        Some(s) => Some(s.parse::<u64>().map_err(|_| V2Error::new(203, "", index))?),
    };
    let prev_value = p.get("prevValue").cloned();
    if prev_value.as_deref() == Some("") && method == "PUT" {
        return Err(V2Error::new(201, "", index));
    }
    let req = V2Request {
        method: method.into(),
        path: path.into(),
        value: p.get("value").cloned(),
        dir: bool_param(p, "dir", index)?.unwrap_or(false),
        ttl,
        prev_exist: bool_param(p, "prevExist", index)?,
        prev_value,
        prev_index,
        recursive: bool_param(p, "recursive", index)?.unwrap_or(false),
        now_ms: now_ms(),
        refresh: bool_param(p, "refresh", index)?.unwrap_or(false),
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
        Ok(_) => Err(V2Error::new(300, "unexpected apply result", index)),
        Err(e) => Err(V2Error::new(300, e.to_string(), index)),
    }
}
