//! etcd's v3 JSON gateway (grpc-gateway in etcd 3.4): `POST /v3/<service>/<method>` (and
//! the same under `/v3beta/`) on the client URLs, a JSON body in, JSON out, answered by the
//! same service code the gRPC server runs.
//!
//! JSON is proto3's mapping as grpc-gateway's jsonpb writes it for etcd (`OrigName`): the
//! proto field names (`create_revision`, `ID`, `dbSize`), bytes in base64, 64-bit integers
//! as strings, enums by name, fields at their default left out; unknown request fields are
//! ignored. Messages are mapped by their descriptors (`oxcd_api::FILE_DESCRIPTOR_SET`).
//!
//! Errors are `{"error","message","code"}` with grpc-gateway's HTTP status for the gRPC
//! code. Streams (`/v3/watch`, `/v3/lease/keepalive`, snapshot, observe) answer one
//! `{"result": ...}` object per line; a stream that fails ends with `{"error": {...}}`. A
//! bidirectional stream reads its request body as a sequence of JSON objects. The token goes
//! in the `Authorization` header (and `Grpc-Metadata-*` headers become metadata), as with
//! grpc-gateway.

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, LazyLock};

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use oxcd_api::etcdserverpb::{
    auth_server::Auth, cluster_server::Cluster, kv_server::Kv, lease_server::Lease,
    maintenance_server::Maintenance, watch_server::Watch,
};
use oxcd_api::v3electionpb::election_server::Election;
use oxcd_api::v3lockpb::lock_server::Lock;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, SerializeOptions};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::Status;

use crate::api::server::Server;
use crate::api::services::Services;

/// Bytes of request body a bidirectional stream buffers while an object is incomplete.
const STREAM_OBJECT_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Requests queued from a streaming body towards its gRPC stream.
const STREAM_REQUESTS_MAX: usize = 16;

static POOL: LazyLock<Result<DescriptorPool, String>> = LazyLock::new(|| {
    DescriptorPool::decode(oxcd_api::FILE_DESCRIPTOR_SET).map_err(|e| e.to_string())
});

/// grpc-gateway's marshaler options for etcd (`OrigName`, no defaults emitted).
const SERIALIZE: SerializeOptions = SerializeOptions::new()
    .use_proto_field_name(true)
    .skip_default_fields(true);

fn deserialize_options() -> DeserializeOptions {
    DeserializeOptions::new().deny_unknown_fields(false)
}

fn descriptor(name: &str) -> Result<prost_reflect::MessageDescriptor, Status> {
    let pool = POOL.as_ref().map_err(|e| Status::internal(e.clone()))?;
    pool.get_message_by_name(name)
        .ok_or_else(|| Status::internal(format!("no descriptor for {name}")))
}

/// A JSON value as the message `name` names.
fn from_json_value<T: prost::Message + Default>(
    name: &str,
    value: serde_json::Value,
) -> Result<T, Status> {
    let dm =
        DynamicMessage::deserialize_with_options(descriptor(name)?, value, &deserialize_options())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
    T::decode(prost::Message::encode_to_vec(&dm).as_slice())
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

/// A request body (an empty one is the empty message, as grpc-gateway takes it).
fn from_json<T: prost::Message + Default>(name: &str, body: &[u8]) -> Result<T, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| Status::invalid_argument(e.to_string()))?;
    from_json_value(name, value)
}

/// A message as grpc-gateway writes it.
fn to_json<T: prost::Message>(name: &str, msg: &T) -> Result<Vec<u8>, Status> {
    let dm = DynamicMessage::decode(descriptor(name)?, msg.encode_to_vec().as_slice())
        .map_err(|e| Status::internal(e.to_string()))?;
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::new(&mut out);
    dm.serialize_with_options(&mut ser, &SERIALIZE)
        .map_err(|e| Status::internal(e.to_string()))?;
    Ok(out)
}

/// grpc-gateway's HTTPStatusFromCode.
fn http_status(code: tonic::Code) -> StatusCode {
    use tonic::Code::*;
    match code {
        Ok => StatusCode::OK,
        Cancelled => StatusCode::REQUEST_TIMEOUT,
        InvalidArgument | OutOfRange => StatusCode::BAD_REQUEST,
        DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        NotFound => StatusCode::NOT_FOUND,
        AlreadyExists | Aborted => StatusCode::CONFLICT,
        PermissionDenied => StatusCode::FORBIDDEN,
        Unauthenticated => StatusCode::UNAUTHORIZED,
        ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Unknown | Internal | DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[derive(serde::Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
    code: i32,
}

#[derive(serde::Serialize)]
struct StreamError<'a> {
    grpc_code: i32,
    http_code: u16,
    message: &'a str,
    http_status: &'a str,
}

fn json_response(status: StatusCode, body: Vec<u8>, grpc: bool) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if grpc {
        h.insert(
            "grpc-metadata-content-type",
            HeaderValue::from_static("application/grpc"),
        );
    }
    resp
}

fn error_response(s: &Status) -> Response {
    let body = ErrorBody {
        error: s.message(),
        message: s.message(),
        code: s.code() as i32,
    };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    json_response(http_status(s.code()), json, false)
}

/// One line of a stream: `{"result": <msg>}` or `{"error": {...}}`.
fn stream_line<T: prost::Message>(name: &str, item: Result<T, Status>) -> Bytes {
    let msg = item.and_then(|m| to_json(name, &m));
    let mut line = match msg {
        Ok(json) => [b"{\"result\":".as_slice(), &json, b"}"].concat(),
        Err(s) => {
            let status = http_status(s.code());
            let e = StreamError {
                grpc_code: s.code() as i32,
                http_code: status.as_u16(),
                message: s.message(),
                http_status: status.canonical_reason().unwrap_or(""),
            };
            let json = serde_json::to_vec(&e).unwrap_or_default();
            [b"{\"error\":".as_slice(), &json, b"}"].concat()
        }
    };
    line.push(b'\n');
    Bytes::from(line)
}

/// The metadata grpc-gateway passes on: `Authorization` and `Grpc-Metadata-*` headers.
fn metadata(headers: &HeaderMap) -> MetadataMap {
    let mut meta = MetadataMap::new();
    for (name, value) in headers {
        let key = match name.as_str() {
            "authorization" => "authorization",
            n => match n.strip_prefix("grpc-metadata-") {
                Some(k) => k,
                None => continue,
            },
        };
        if let (Ok(k), Ok(Ok(v))) = (
            MetadataKey::from_bytes(key.as_bytes()),
            value.to_str().map(MetadataValue::try_from),
        ) {
            meta.insert(k, v);
        }
    }
    meta
}

fn request<T>(headers: &HeaderMap, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    *r.metadata_mut() = metadata(headers);
    r
}

/// Answers a unary call: `Req` named `req_name` in, `Resp` named `resp_name` out.
async fn unary<Req, Resp, Fut>(
    headers: HeaderMap,
    body: Bytes,
    grpc_path: &str,
    [req_name, resp_name]: [&str; 2],
    call: impl FnOnce(tonic::Request<Req>) -> Fut,
) -> Response
where
    Req: prost::Message + Default,
    Resp: prost::Message,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let req = match from_json::<Req>(req_name, &body) {
        Ok(r) => r,
        Err(s) => return error_response(&s),
    };
    let counted = crate::metrics::get().grpc.method(grpc_path);
    let started = std::time::Instant::now();
    if let Some(m) = counted {
        m.started().inc();
        m.msg_received().inc();
    }
    let resp = call(request(&headers, req)).await;
    if let Some(m) = counted {
        // Counted as etcd counts its gateway's calls, which reach its own gRPC port.
        let code = resp.as_ref().err().map_or(0, |s| s.code() as usize);
        if code == 0 {
            m.msg_sent().inc();
        }
        m.handled(code, started.elapsed());
    }
    match resp.and_then(|r| to_json(resp_name, r.get_ref())) {
        Ok(json) => json_response(StatusCode::OK, json, true),
        Err(s) => error_response(&s),
    }
}

/// Answers a call whose response is a stream of `resp_name` messages.
fn streaming<T, S>(resp_name: &'static str, stream: S) -> Response
where
    T: prost::Message + 'static,
    S: Stream<Item = Result<T, Status>> + Send + 'static,
{
    let lines = stream.map(move |item| Ok::<_, Infallible>(stream_line(resp_name, item)));
    let mut resp = Response::new(Body::from_stream(lines));
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        "grpc-metadata-content-type",
        HeaderValue::from_static("application/grpc"),
    );
    resp
}

/// Reads JSON objects off a request body as they complete: each becomes a gRPC-framed
/// message on the returned body, which feeds a `tonic::Streaming` like a client's stream.
fn json_objects_to_grpc<T: prost::Message + Default + 'static>(
    name: &'static str,
    first: T,
    rest: Vec<u8>,
    body: Body,
) -> tonic::Streaming<T> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(STREAM_REQUESTS_MAX);
    tokio::spawn(async move {
        if tx.send(grpc_frame(&first)).await.is_err() {
            return;
        }
        let mut buf = rest;
        let mut body = body.into_data_stream();
        loop {
            let (values, used) = complete_values(&buf);
            buf.drain(..used);
            for v in values {
                let Ok(msg) = from_json_value::<T>(name, v) else {
                    return;
                };
                if tx.send(grpc_frame(&msg)).await.is_err() {
                    return;
                }
            }
            match body.next().await {
                Some(Ok(chunk)) if buf.len() + chunk.len() <= STREAM_OBJECT_BYTES_MAX => {
                    buf.extend_from_slice(&chunk)
                }
                _ => break,
            }
        }
        // The client closed its side: the gRPC stream sees the end of its requests, and the
        // call goes on (a watch keeps streaming), as with grpc-gateway.
        tx.closed().await;
    });
    let frames = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|b| Ok::<_, Infallible>(http_body::Frame::data(b)));
    tonic::Streaming::new_request(
        tonic_prost::ProstDecoder::<T>::default(),
        http_body_util::StreamBody::new(frames),
        None,
        None,
    )
}

/// The JSON values complete at the start of `buf`, and how many bytes they took.
fn complete_values(buf: &[u8]) -> (Vec<serde_json::Value>, usize) {
    let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<serde_json::Value>();
    let mut out = Vec::new();
    let mut used = 0;
    while let Some(Ok(v)) = it.next() {
        out.push(v);
        used = it.byte_offset();
    }
    (out, used)
}

fn grpc_frame<T: prost::Message>(msg: &T) -> Bytes {
    let payload = msg.encode_to_vec();
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(0);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    Bytes::from(out)
}

/// Reads the first JSON object of a streaming request body (the rest stays to be read).
/// grpc-gateway answers a first object that does not parse with code Unknown.
async fn first_object<T: prost::Message + Default>(
    name: &str,
    body: &mut Body,
) -> Result<(T, Vec<u8>), Status> {
    let mut buf = Vec::new();
    loop {
        let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<serde_json::Value>();
        let ended = match it.next() {
            Some(Ok(v)) => {
                let rest = buf[it.byte_offset()..].to_vec();
                let msg =
                    from_json_value::<T>(name, v).map_err(|s| Status::unknown(s.message()))?;
                return Ok((msg, rest));
            }
            Some(Err(e)) if !e.is_eof() => return Err(Status::unknown(e.to_string())),
            _ => match http_body_util::BodyExt::frame(body).await {
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        buf.extend_from_slice(&d);
                    }
                    false
                }
                Some(Err(e)) => return Err(Status::unknown(e.to_string())),
                None => true,
            },
        };
        if buf.len() > STREAM_OBJECT_BYTES_MAX {
            return Err(Status::unknown("request object too large"));
        }
        if ended {
            if buf.iter().all(u8::is_ascii_whitespace) {
                return Ok((T::default(), Vec::new()));
            }
            let err = serde_json::from_slice::<serde_json::Value>(&buf).err();
            return Err(Status::unknown(
                err.map(|e| e.to_string()).unwrap_or_default(),
            ));
        }
    }
}

/// Answers a bidirectional stream (watch, lease keep-alive).
async fn bidi<Req, Resp, S, Fut>(
    headers: HeaderMap,
    mut body: Body,
    [req_name, resp_name]: [&'static str; 2],
    call: impl FnOnce(tonic::Request<tonic::Streaming<Req>>) -> Fut,
) -> Response
where
    Req: prost::Message + Default + 'static,
    Resp: prost::Message + 'static,
    S: Stream<Item = Result<Resp, Status>> + Send + 'static,
    Fut: Future<Output = Result<tonic::Response<S>, Status>>,
{
    let (first, rest) = match first_object::<Req>(req_name, &mut body).await {
        Ok(x) => x,
        Err(s) => return error_response(&s),
    };
    let inbound = json_objects_to_grpc(req_name, first, rest, body);
    match call(request(&headers, inbound)).await {
        Ok(r) => streaming(resp_name, r.into_inner()),
        Err(s) => error_response(&s),
    }
}

/// A server-streaming call (snapshot, observe).
async fn server_stream<Req, Resp, S, Fut>(
    headers: HeaderMap,
    body: Bytes,
    [req_name, resp_name]: [&'static str; 2],
    call: impl FnOnce(tonic::Request<Req>) -> Fut,
) -> Response
where
    Req: prost::Message + Default,
    Resp: prost::Message + 'static,
    S: Stream<Item = Result<Resp, Status>> + Send + 'static,
    Fut: Future<Output = Result<tonic::Response<S>, Status>>,
{
    let req = match from_json::<Req>(req_name, &body) {
        Ok(r) => r,
        Err(s) => return error_response(&s),
    };
    match call(request(&headers, req)).await {
        Ok(r) => streaming(resp_name, r.into_inner()),
        Err(s) => error_response(&s),
    }
}

/// `etcdserverpb.<Name>` and friends.
macro_rules! names {
    ($pkg:literal, $req:literal, $resp:literal) => {
        [concat!($pkg, ".", $req), concat!($pkg, ".", $resp)]
    };
}

/// A route for a unary method of a service trait implemented on [`Services`].
macro_rules! unary {
    ($r:ident, $svc:ident, $path:literal, $grpc:literal, $trait:ident :: $method:ident, $pkg:literal, $req:literal, $resp:literal) => {{
        let svc = $svc.clone();
        $r = $r.route(
            $path,
            axum::routing::any(
                move |method: Method, headers: HeaderMap, body: Bytes| async move {
                    if method != Method::POST {
                        return method_not_allowed();
                    }
                    unary(
                        headers,
                        body,
                        $grpc,
                        names!($pkg, $req, $resp),
                        |req| async move { $trait::$method(&svc, req).await },
                    )
                    .await
                },
            ),
        );
    }};
}

/// Routes for a table of unary methods: gateway path => gRPC path, the service trait's
/// method, the proto package, request and response message names.
macro_rules! unary_routes {
    ($r:ident, $svc:ident; $($path:literal => $grpc:literal, $trait:ident :: $method:ident, $pkg:literal, $req:literal, $resp:literal;)*) => {
        $( unary!($r, $svc, $path, $grpc, $trait::$method, $pkg, $req, $resp); )*
    };
}

/// etcd's gateway paths below `/v3` (grpc-gateway's table from etcd 3.4's protos). etcd 3.4
/// binds both Hash and HashKV to `/maintenance/hash`; grpc-gateway's router takes Hash.
fn v3_routes(svc: &Services) -> Router {
    let mut r = Router::new();
    unary_routes! { r, svc;
        "/kv/range" => "/etcdserverpb.KV/Range", Kv::range, "etcdserverpb", "RangeRequest", "RangeResponse";
        "/kv/put" => "/etcdserverpb.KV/Put", Kv::put, "etcdserverpb", "PutRequest", "PutResponse";
        "/kv/deleterange" => "/etcdserverpb.KV/DeleteRange", Kv::delete_range, "etcdserverpb", "DeleteRangeRequest", "DeleteRangeResponse";
        "/kv/txn" => "/etcdserverpb.KV/Txn", Kv::txn, "etcdserverpb", "TxnRequest", "TxnResponse";
        "/kv/compaction" => "/etcdserverpb.KV/Compact", Kv::compact, "etcdserverpb", "CompactionRequest", "CompactionResponse";
        "/lease/grant" => "/etcdserverpb.Lease/LeaseGrant", Lease::lease_grant, "etcdserverpb", "LeaseGrantRequest", "LeaseGrantResponse";
        "/lease/revoke" => "/etcdserverpb.Lease/LeaseRevoke", Lease::lease_revoke, "etcdserverpb", "LeaseRevokeRequest", "LeaseRevokeResponse";
        "/kv/lease/revoke" => "/etcdserverpb.Lease/LeaseRevoke", Lease::lease_revoke, "etcdserverpb", "LeaseRevokeRequest", "LeaseRevokeResponse";
        "/lease/timetolive" => "/etcdserverpb.Lease/LeaseTimeToLive", Lease::lease_time_to_live, "etcdserverpb", "LeaseTimeToLiveRequest", "LeaseTimeToLiveResponse";
        "/kv/lease/timetolive" => "/etcdserverpb.Lease/LeaseTimeToLive", Lease::lease_time_to_live, "etcdserverpb", "LeaseTimeToLiveRequest", "LeaseTimeToLiveResponse";
        "/lease/leases" => "/etcdserverpb.Lease/LeaseLeases", Lease::lease_leases, "etcdserverpb", "LeaseLeasesRequest", "LeaseLeasesResponse";
        "/kv/lease/leases" => "/etcdserverpb.Lease/LeaseLeases", Lease::lease_leases, "etcdserverpb", "LeaseLeasesRequest", "LeaseLeasesResponse";
        "/cluster/member/add" => "/etcdserverpb.Cluster/MemberAdd", Cluster::member_add, "etcdserverpb", "MemberAddRequest", "MemberAddResponse";
        "/cluster/member/remove" => "/etcdserverpb.Cluster/MemberRemove", Cluster::member_remove, "etcdserverpb", "MemberRemoveRequest", "MemberRemoveResponse";
        "/cluster/member/update" => "/etcdserverpb.Cluster/MemberUpdate", Cluster::member_update, "etcdserverpb", "MemberUpdateRequest", "MemberUpdateResponse";
        "/cluster/member/list" => "/etcdserverpb.Cluster/MemberList", Cluster::member_list, "etcdserverpb", "MemberListRequest", "MemberListResponse";
        "/cluster/member/promote" => "/etcdserverpb.Cluster/MemberPromote", Cluster::member_promote, "etcdserverpb", "MemberPromoteRequest", "MemberPromoteResponse";
        "/maintenance/alarm" => "/etcdserverpb.Maintenance/Alarm", Maintenance::alarm, "etcdserverpb", "AlarmRequest", "AlarmResponse";
        "/maintenance/status" => "/etcdserverpb.Maintenance/Status", Maintenance::status, "etcdserverpb", "StatusRequest", "StatusResponse";
        "/maintenance/defragment" => "/etcdserverpb.Maintenance/Defragment", Maintenance::defragment, "etcdserverpb", "DefragmentRequest", "DefragmentResponse";
        "/maintenance/hash" => "/etcdserverpb.Maintenance/Hash", Maintenance::hash, "etcdserverpb", "HashRequest", "HashResponse";
        "/maintenance/transfer-leadership" => "/etcdserverpb.Maintenance/MoveLeader", Maintenance::move_leader, "etcdserverpb", "MoveLeaderRequest", "MoveLeaderResponse";
        "/auth/enable" => "/etcdserverpb.Auth/AuthEnable", Auth::auth_enable, "etcdserverpb", "AuthEnableRequest", "AuthEnableResponse";
        "/auth/disable" => "/etcdserverpb.Auth/AuthDisable", Auth::auth_disable, "etcdserverpb", "AuthDisableRequest", "AuthDisableResponse";
        "/auth/authenticate" => "/etcdserverpb.Auth/Authenticate", Auth::authenticate, "etcdserverpb", "AuthenticateRequest", "AuthenticateResponse";
        "/auth/user/add" => "/etcdserverpb.Auth/UserAdd", Auth::user_add, "etcdserverpb", "AuthUserAddRequest", "AuthUserAddResponse";
        "/auth/user/get" => "/etcdserverpb.Auth/UserGet", Auth::user_get, "etcdserverpb", "AuthUserGetRequest", "AuthUserGetResponse";
        "/auth/user/list" => "/etcdserverpb.Auth/UserList", Auth::user_list, "etcdserverpb", "AuthUserListRequest", "AuthUserListResponse";
        "/auth/user/delete" => "/etcdserverpb.Auth/UserDelete", Auth::user_delete, "etcdserverpb", "AuthUserDeleteRequest", "AuthUserDeleteResponse";
        "/auth/user/changepw" => "/etcdserverpb.Auth/UserChangePassword", Auth::user_change_password, "etcdserverpb", "AuthUserChangePasswordRequest", "AuthUserChangePasswordResponse";
        "/auth/user/grant" => "/etcdserverpb.Auth/UserGrantRole", Auth::user_grant_role, "etcdserverpb", "AuthUserGrantRoleRequest", "AuthUserGrantRoleResponse";
        "/auth/user/revoke" => "/etcdserverpb.Auth/UserRevokeRole", Auth::user_revoke_role, "etcdserverpb", "AuthUserRevokeRoleRequest", "AuthUserRevokeRoleResponse";
        "/auth/role/add" => "/etcdserverpb.Auth/RoleAdd", Auth::role_add, "etcdserverpb", "AuthRoleAddRequest", "AuthRoleAddResponse";
        "/auth/role/get" => "/etcdserverpb.Auth/RoleGet", Auth::role_get, "etcdserverpb", "AuthRoleGetRequest", "AuthRoleGetResponse";
        "/auth/role/list" => "/etcdserverpb.Auth/RoleList", Auth::role_list, "etcdserverpb", "AuthRoleListRequest", "AuthRoleListResponse";
        "/auth/role/delete" => "/etcdserverpb.Auth/RoleDelete", Auth::role_delete, "etcdserverpb", "AuthRoleDeleteRequest", "AuthRoleDeleteResponse";
        "/auth/role/grant" => "/etcdserverpb.Auth/RoleGrantPermission", Auth::role_grant_permission, "etcdserverpb", "AuthRoleGrantPermissionRequest", "AuthRoleGrantPermissionResponse";
        "/auth/role/revoke" => "/etcdserverpb.Auth/RoleRevokePermission", Auth::role_revoke_permission, "etcdserverpb", "AuthRoleRevokePermissionRequest", "AuthRoleRevokePermissionResponse";
        "/lock/lock" => "/v3lockpb.Lock/Lock", Lock::lock, "v3lockpb", "LockRequest", "LockResponse";
        "/lock/unlock" => "/v3lockpb.Lock/Unlock", Lock::unlock, "v3lockpb", "UnlockRequest", "UnlockResponse";
        "/election/campaign" => "/v3electionpb.Election/Campaign", Election::campaign, "v3electionpb", "CampaignRequest", "CampaignResponse";
        "/election/proclaim" => "/v3electionpb.Election/Proclaim", Election::proclaim, "v3electionpb", "ProclaimRequest", "ProclaimResponse";
        "/election/leader" => "/v3electionpb.Election/Leader", Election::leader, "v3electionpb", "LeaderRequest", "LeaderResponse";
        "/election/resign" => "/v3electionpb.Election/Resign", Election::resign, "v3electionpb", "ResignRequest", "ResignResponse";
    }
    stream_routes(r, svc)
}

/// The streaming methods: watch and keep-alive (bidirectional), snapshot and observe.
fn stream_routes(r: Router, svc: &Services) -> Router {
    let (watch, keepalive, snapshot, observe) =
        (svc.clone(), svc.clone(), svc.clone(), svc.clone());
    let post_only = |m: &Method| *m == Method::POST;
    r.route(
        "/watch",
        axum::routing::any(
            move |m: Method, headers: HeaderMap, body: Body| async move {
                if !post_only(&m) {
                    return method_not_allowed();
                }
                let names = names!("etcdserverpb", "WatchRequest", "WatchResponse");
                bidi(headers, body, names, |req| async move {
                    Watch::watch(&watch, req).await
                })
                .await
            },
        ),
    )
    .route(
        "/lease/keepalive",
        axum::routing::any(
            move |m: Method, headers: HeaderMap, body: Body| async move {
                if !post_only(&m) {
                    return method_not_allowed();
                }
                let names = names!(
                    "etcdserverpb",
                    "LeaseKeepAliveRequest",
                    "LeaseKeepAliveResponse"
                );
                bidi(headers, body, names, |req| async move {
                    Lease::lease_keep_alive(&keepalive, req).await
                })
                .await
            },
        ),
    )
    .route(
        "/maintenance/snapshot",
        axum::routing::any(
            move |m: Method, headers: HeaderMap, body: Bytes| async move {
                if !post_only(&m) {
                    return method_not_allowed();
                }
                let names = names!("etcdserverpb", "SnapshotRequest", "SnapshotResponse");
                server_stream(headers, body, names, |req| async move {
                    Maintenance::snapshot(&snapshot, req).await
                })
                .await
            },
        ),
    )
    .route(
        "/election/observe",
        axum::routing::any(
            move |m: Method, headers: HeaderMap, body: Bytes| async move {
                if !post_only(&m) {
                    return method_not_allowed();
                }
                let names = names!("v3electionpb", "LeaderRequest", "LeaderResponse");
                server_stream(headers, body, names, |req| async move {
                    Election::observe(&observe, req).await
                })
                .await
            },
        ),
    )
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut resp = (status, text).into_response();
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

fn method_not_allowed() -> Response {
    plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n")
}

/// etcd's CORS headers (`--cors` defaults to `*`), on every answer of the gateway, of
/// `/metrics` and of unknown paths.
pub async fn cors(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("accept, content-type, authorization"),
    );
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
    );
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    resp
}

/// The gateway under `/v3` and `/v3beta` (etcd 3.4 answers both).
pub fn router(server: Arc<Server>) -> Router {
    let svc = Services { server };
    let v3 = v3_routes(&svc).fallback(|| async { plain(StatusCode::NOT_FOUND, "Not Found\n") });
    Router::new()
        .nest("/v3", v3.clone())
        .nest("/v3beta", v3)
        .layer(axum::middleware::map_response(cors))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxcd_api::etcdserverpb as pb;

    #[test]
    fn json_is_grpc_gateways() {
        let resp = pb::RangeResponse {
            header: Some(pb::ResponseHeader {
                cluster_id: 1,
                member_id: 2,
                revision: 3,
                raft_term: 0,
            }),
            kvs: vec![oxcd_api::mvccpb::KeyValue {
                key: b"foo".to_vec(),
                create_revision: 6,
                ..Default::default()
            }],
            more: false,
            count: 1,
        };
        let json = to_json("etcdserverpb.RangeResponse", &resp).expect("json");
        assert_eq!(
            String::from_utf8(json).expect("utf-8"),
            r#"{"header":{"cluster_id":"1","member_id":"2","revision":"3"},"kvs":[{"key":"Zm9v","create_revision":"6"}],"count":"1"}"#
        );
        let req: pb::LeaseGrantRequest = from_json(
            "etcdserverpb.LeaseGrantRequest",
            br#"{"TTL": 30, "ID": "7", "x": 1}"#,
        )
        .expect("request");
        assert_eq!((req.ttl, req.id), (30, 7));
    }

    #[test]
    fn stream_bodies_split_into_objects() {
        let (values, used) = complete_values(br#"{"a":1} {"b":2}{"c""#);
        assert_eq!(values.len(), 2);
        assert_eq!(used, 15);
    }
}
