//! The rest of etcd 3.4's v2 HTTP API, which python-etcd and node-etcd call: `/v2/members`
//! (GET, POST, PUT, DELETE, `/v2/members/leader`), `/v2/machines` and `/v2/stats/self`,
//! `/v2/stats/store`, `/v2/stats/leader`, with etcd's JSON shapes. Membership changes go
//! through the same checks as the v3 Cluster service (they call it).
//!
//! The append request counts and rates of `/v2/stats/self` and the per-follower counts
//! and latencies of `/v2/stats/leader` come from [`crate::peer_stats`] (what they count is
//! said there). `/v2/stats/store` counts the v2 operations this member served.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use oxcd_api::etcdserverpb as pb;
use oxcd_api::etcdserverpb::cluster_server::Cluster;
use serde::{Deserialize, Serialize};

use crate::api::server::Server;
use crate::api::services::Services;

pub fn router(server: Arc<Server>) -> Router {
    Router::new()
        .route("/v2/members", any(members))
        .route("/v2/members/", any(members))
        .route("/v2/members/{id}", any(member))
        .route("/v2/machines", any(machines))
        .route("/v2/stats/self", any(stats_self))
        .route("/v2/stats/store", any(stats_store))
        .route("/v2/stats/leader", any(stats_leader))
        .with_state(server)
}

/// etcd's v2 member JSON.
#[derive(Serialize)]
struct V2Member {
    id: String,
    name: String,
    #[serde(rename = "peerURLs")]
    peer_urls: Vec<String>,
    #[serde(rename = "clientURLs")]
    client_urls: Vec<String>,
}

impl From<&crate::state::members::Member> for V2Member {
    fn from(m: &crate::state::members::Member) -> Self {
        V2Member {
            id: format!("{:x}", m.id),
            name: m.name.clone(),
            peer_urls: m.peer_urls.clone(),
            client_urls: m.client_urls.clone(),
        }
    }
}

/// The body of POST and PUT.
#[derive(Deserialize)]
struct PeerUrls {
    #[serde(rename = "peerURLs", default)]
    peer_urls: Vec<String>,
}

fn json(status: StatusCode, server: &Server, body: String) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(&format!("{:x}", server.cluster_id)) {
        h.insert("x-etcd-cluster-id", v);
    }
    resp
}

/// etcd's `httptypes.HTTPError`: `{"message": ...}`.
fn http_error(status: StatusCode, server: &Server, message: &str) -> Response {
    let body = serde_json::json!({ "message": message }).to_string();
    json(status, server, body)
}

fn not_allowed(allow: &'static str) -> Response {
    let mut resp = (StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n").into_response();
    resp.headers_mut()
        .insert("allow", HeaderValue::from_static(allow));
    resp
}

fn member_list(server: &Server) -> Vec<crate::state::members::Member> {
    server
        .tables
        .members
        .read()
        .map(|m| m.list.clone())
        .unwrap_or_default()
}

/// The status of a Cluster call in v2's words (etcd's membership errors).
fn cluster_error(server: &Server, s: &tonic::Status) -> Response {
    let msg = s.message();
    let status = if msg.contains("already exists") || msg.contains("exists") {
        StatusCode::CONFLICT
    } else if msg.contains("member not found") {
        StatusCode::NOT_FOUND
    } else if msg.contains("removed") {
        StatusCode::GONE
    } else if s.code() == tonic::Code::InvalidArgument {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    http_error(status, server, msg)
}

/// The peer URLs of a POST or PUT: JSON only, as etcd.
fn peer_urls_of(
    server: &Server,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<String>, Box<Response>> {
    let json_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().map(str::trim) == Some("application/json"));
    if !json_type {
        let given = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        return Err(Box::new(http_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            server,
            &format!("Bad Content-Type {given}, accept application/json"),
        )));
    }
    serde_json::from_slice::<PeerUrls>(body)
        .map(|p| p.peer_urls)
        .map_err(|e| Box::new(http_error(StatusCode::BAD_REQUEST, server, &e.to_string())))
}

/// A gRPC request carrying this HTTP request's credentials (auth is checked by the call).
fn grpc_request<T>(headers: &HeaderMap, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(v) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
    {
        r.metadata_mut().insert("authorization", v);
    }
    r
}

async fn members(
    State(server): State<Arc<Server>>,
    method: Method,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    // The same limit as every other request, read as it arrives.
    let body = match crate::api::body::read_body(body, server.cfg.request_bytes_max).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    match method {
        Method::GET | Method::HEAD => {
            #[derive(Serialize)]
            struct List {
                members: Vec<V2Member>,
            }
            let members = member_list(&server).iter().map(V2Member::from).collect();
            let body = serde_json::to_string(&List { members }).unwrap_or_default() + "\n";
            json(StatusCode::OK, &server, body)
        }
        Method::POST => {
            let urls = match peer_urls_of(&server, &headers, &body) {
                Ok(u) => u,
                Err(resp) => return *resp,
            };
            let svc = Services {
                server: server.clone(),
            };
            let req = pb::MemberAddRequest {
                peer_ur_ls: urls,
                is_learner: false,
            };
            match svc.member_add(grpc_request(&headers, req)).await {
                Ok(r) => {
                    let m = r.into_inner().member.unwrap_or_default();
                    let body = serde_json::to_string(&V2Member {
                        id: format!("{:x}", m.id),
                        name: m.name,
                        peer_urls: m.peer_ur_ls,
                        client_urls: m.client_ur_ls,
                    })
                    .unwrap_or_default()
                        + "\n";
                    json(StatusCode::CREATED, &server, body)
                }
                Err(s) => cluster_error(&server, &s),
            }
        }
        _ => not_allowed("GET, HEAD, POST"),
    }
}

async fn member(
    State(server): State<Arc<Server>>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let body = match crate::api::body::read_body(body, server.cfg.request_bytes_max).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if id == "leader" && method == Method::GET {
        let leader = server.leader();
        return match member_list(&server).iter().find(|m| m.id == leader) {
            Some(m) => json(
                StatusCode::OK,
                &server,
                serde_json::to_string(&V2Member::from(m)).unwrap_or_default() + "\n",
            ),
            None => http_error(StatusCode::SERVICE_UNAVAILABLE, &server, "During election"),
        };
    }
    let Ok(id_num) = u64::from_str_radix(&id, 16) else {
        return http_error(
            StatusCode::NOT_FOUND,
            &server,
            &format!("No such member: {id}"),
        );
    };
    let svc = Services {
        server: server.clone(),
    };
    let res = match method {
        Method::DELETE => {
            let req = pb::MemberRemoveRequest { id: id_num };
            svc.member_remove(grpc_request(&headers, req))
                .await
                .map(|_| ())
        }
        Method::PUT => {
            let urls = match peer_urls_of(&server, &headers, &body) {
                Ok(u) => u,
                Err(resp) => return *resp,
            };
            let req = pb::MemberUpdateRequest {
                id: id_num,
                peer_ur_ls: urls,
            };
            svc.member_update(grpc_request(&headers, req))
                .await
                .map(|_| ())
        }
        _ => return not_allowed("GET, HEAD, POST, PUT, DELETE"),
    };
    match res {
        Ok(()) => {
            let mut resp = StatusCode::NO_CONTENT.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("{:x}", server.cluster_id)) {
                resp.headers_mut().insert("x-etcd-cluster-id", v);
            }
            resp
        }
        Err(s) if s.message().contains("member not found") => http_error(
            StatusCode::NOT_FOUND,
            &server,
            &format!("No such member: {id}"),
        ),
        Err(s) => cluster_error(&server, &s),
    }
}

/// The client URLs of every member, comma and space separated, as plain text.
async fn machines(State(server): State<Arc<Server>>, method: Method) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return not_allowed("GET, HEAD");
    }
    let urls: Vec<String> = member_list(&server)
        .into_iter()
        .flat_map(|m| m.client_urls)
        .collect();
    let mut resp = urls.join(", ").into_response();
    resp.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Wall-clock time of an instant in the past, in RFC 3339 with nanoseconds.
fn wall_time_of(at: std::time::Instant) -> String {
    let t = time::OffsetDateTime::now_utc() - at.elapsed();
    oxcd_gocompat::timestamp::rfc3339_nano(t)
}

async fn stats_self(State(server): State<Arc<Server>>, method: Method) -> Response {
    if method != Method::GET {
        return not_allowed("GET");
    }
    let leader = server.leader();
    let state = if leader == server.member_id {
        "StateLeader"
    } else if leader == 0 {
        "StateCandidate"
    } else {
        "StateFollower"
    };
    // How long the current leader has led, as this member saw it change (etcd's
    // `leaderInfo.uptime` and `startTime`).
    let changed_ms = server.status.leader_changed_ms.load(Ordering::Relaxed);
    let led = std::time::Duration::from_millis(
        u64::try_from(crate::clock::now_ms().saturating_sub(changed_ms)).unwrap_or(0),
    );
    let traffic = crate::peer_stats::get().self_traffic();
    let body = SelfStats {
        name: server.cfg.name.clone(),
        id: format!("{:x}", server.member_id),
        state,
        start_time: wall_time_of(server.started),
        leader_info: LeaderInfo {
            leader: format!("{:x}", leader),
            uptime: oxcd_gocompat::duration::format(led),
            start_time: oxcd_gocompat::timestamp::rfc3339_nano(
                time::OffsetDateTime::now_utc() - led,
            ),
        },
        recv_append_request_cnt: traffic.recv_append_requests,
        recv_pkg_rate: traffic.recv_pkg_rate,
        recv_bandwidth_rate: traffic.recv_bandwidth_rate,
        send_append_request_cnt: traffic.send_append_requests,
        send_pkg_rate: traffic.send_pkg_rate,
        send_bandwidth_rate: traffic.send_bandwidth_rate,
    };
    json(
        StatusCode::OK,
        &server,
        serde_json::to_string(&body).unwrap_or_default(),
    )
}

/// etcd's `stats.ServerStats` as JSON (its field order; the rates are `omitempty`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SelfStats {
    name: String,
    id: String,
    state: &'static str,
    start_time: String,
    leader_info: LeaderInfo,
    recv_append_request_cnt: u64,
    #[serde(skip_serializing_if = "is_zero")]
    recv_pkg_rate: f64,
    #[serde(skip_serializing_if = "is_zero")]
    recv_bandwidth_rate: f64,
    send_append_request_cnt: u64,
    #[serde(skip_serializing_if = "is_zero")]
    send_pkg_rate: f64,
    #[serde(skip_serializing_if = "is_zero")]
    send_bandwidth_rate: f64,
}

/// Go's `omitempty` for a float.
fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LeaderInfo {
    leader: String,
    uptime: String,
    start_time: String,
}

async fn stats_leader(State(server): State<Arc<Server>>, method: Method) -> Response {
    if method != Method::GET {
        return not_allowed("GET");
    }
    if server.leader() != server.member_id {
        return http_error(StatusCode::FORBIDDEN, &server, "not current leader");
    }
    let mut followers = serde_json::Map::new();
    for m in member_list(&server)
        .iter()
        .filter(|m| m.id != server.member_id)
    {
        let f = crate::peer_stats::get().follower(m.id);
        followers.insert(
            format!("{:x}", m.id),
            serde_json::json!({
                "latency": {
                    "current": f.current_ms,
                    "average": f.average_ms,
                    "standardDeviation": f.standard_deviation_ms,
                    "minimum": f.minimum_ms,
                    "maximum": f.maximum_ms,
                },
                "counts": {"fail": f.fail, "success": f.success},
            }),
        );
    }
    // etcd's field order: leader, then followers.
    let body = format!(
        "{{\"leader\":\"{:x}\",\"followers\":{}}}",
        server.member_id,
        serde_json::Value::Object(followers)
    );
    json(StatusCode::OK, &server, body)
}

async fn stats_store(State(server): State<Arc<Server>>, method: Method) -> Response {
    if method != Method::GET {
        return not_allowed("GET");
    }
    json(StatusCode::OK, &server, STORE_STATS.to_json())
}

/// The v2 operations this member served, by outcome (etcd's store stats).
#[derive(Default)]
pub struct StoreStats {
    counts: [AtomicU64; STORE_STAT_NAMES.len()],
    /// v2 watches (`wait=true`) open now.
    pub watchers: AtomicU64,
}

const STORE_STAT_NAMES: [&str; 14] = [
    "getsSuccess",
    "getsFail",
    "setsSuccess",
    "setsFail",
    "deleteSuccess",
    "deleteFail",
    "updateSuccess",
    "updateFail",
    "createSuccess",
    "createFail",
    "compareAndSwapSuccess",
    "compareAndSwapFail",
    "compareAndDeleteSuccess",
    "compareAndDeleteFail",
];

/// Which store operation a v2 request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    Get,
    Set,
    Delete,
    Update,
    Create,
    CompareAndSwap,
    CompareAndDelete,
}

impl StoreStats {
    const fn new() -> StoreStats {
        StoreStats {
            counts: [const { AtomicU64::new(0) }; STORE_STAT_NAMES.len()],
            watchers: AtomicU64::new(0),
        }
    }

    /// Counts one operation.
    pub fn record(&self, op: StoreOp, ok: bool) {
        let i = op as usize * 2 + usize::from(!ok);
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// etcd's JSON, in its field order.
    fn to_json(&self) -> String {
        let mut fields: Vec<String> = STORE_STAT_NAMES
            .iter()
            .zip(&self.counts)
            .map(|(name, c)| format!("\"{name}\":{}", c.load(Ordering::Relaxed)))
            .collect();
        fields.push("\"expireCount\":0".into());
        fields.push(format!(
            "\"watchers\":{}",
            self.watchers.load(Ordering::Relaxed)
        ));
        format!("{{{}}}", fields.join(","))
    }
}

/// Counts an open v2 watch for as long as it lives.
pub struct WatcherCount(());

impl Default for WatcherCount {
    fn default() -> WatcherCount {
        STORE_STATS.watchers.fetch_add(1, Ordering::Relaxed);
        WatcherCount(())
    }
}

impl Drop for WatcherCount {
    fn drop(&mut self) {
        STORE_STATS.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// This member's store statistics.
pub static STORE_STATS: StoreStats = StoreStats::new();

/// The store operation of a v2 keys request, from its method and conditions (etcd's
/// mapping of a request to `Get`, `Set`, `Create`, `Update`, `CompareAndSwap`, ...).
pub fn store_op(method: &str, prev_exist: Option<bool>, conditional: bool) -> StoreOp {
    match (method, prev_exist, conditional) {
        ("GET" | "HEAD", _, _) => StoreOp::Get,
        ("POST", _, _) | ("PUT", Some(false), _) => StoreOp::Create,
        ("PUT", _, true) => StoreOp::CompareAndSwap,
        ("PUT", Some(true), false) => StoreOp::Update,
        ("DELETE", _, true) => StoreOp::CompareAndDelete,
        ("DELETE", _, false) => StoreOp::Delete,
        _ => StoreOp::Set,
    }
}
