//! One module per etcdctl command group.

pub mod auth;
pub mod check;
pub mod check_keys;
pub mod cluster;
pub mod concurrency;
pub mod datascale;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod migrate;
pub mod mirror;
pub mod watch;

use oxcd_gocompat::quote::quote;
use std::io::Write as _;

use crate::error::{CtlError, CtlResult, EXIT_IO};

/// Writes printer output to stdout.
pub fn emit(bytes: &[u8]) -> CtlResult {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|_| out.flush())
        .map_err(|e| CtlError::new(EXIT_IO, e.to_string()))
}

/// Opens a watch stream with one create request. The request side stays open as long as the
/// returned sender lives (the server ends the stream when it closes).
pub async fn open_watch(
    client: &oxcd_client::Client,
    create: oxcd_api::etcdserverpb::WatchCreateRequest,
) -> CtlResult<(
    tokio::sync::mpsc::Sender<oxcd_api::etcdserverpb::WatchRequest>,
    tonic::Streaming<oxcd_api::etcdserverpb::WatchResponse>,
)> {
    use oxcd_api::etcdserverpb::{watch_request::RequestUnion, WatchRequest};
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let _ = tx
        .send(WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(create)),
        })
        .await;
    let stream = client
        .watch()
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| CtlError::new(crate::error::EXIT_ERROR, crate::error::status_message(&s)))?
        .into_inner();
    Ok((tx, stream))
}

/// Opens a keep-alive stream for lease `id`, its first request already queued: etcd sends
/// the response headers only with the first response. The stream stays open as long as the
/// returned sender lives.
pub async fn open_keep_alive(
    client: &oxcd_client::Client,
    id: i64,
) -> Result<
    (
        tokio::sync::mpsc::Sender<oxcd_api::etcdserverpb::LeaseKeepAliveRequest>,
        tonic::Streaming<oxcd_api::etcdserverpb::LeaseKeepAliveResponse>,
    ),
    tonic::Status,
> {
    use oxcd_api::etcdserverpb::LeaseKeepAliveRequest;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let _ = tx.send(LeaseKeepAliveRequest { id }).await;
    let stream = client
        .lease()
        .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((tx, stream))
}

/// The end of the range covering every key with this prefix (clientv3's `GetPrefixRangeEnd`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Parses a hexadecimal lease or member id as Go's `strconv.ParseInt(s, 16, 64)`.
pub fn parse_hex_id(s: &str) -> Result<i64, String> {
    i64::from_str_radix(s, 16).map_err(|e| {
        let why = match e.kind() {
            std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
                "value out of range"
            }
            _ => "invalid syntax",
        };
        format!("strconv.ParseInt: parsing {}: {why}", quote(s.as_bytes()))
    })
}
