//! Request bodies as the HTTP handlers read them (v2 keys, v2 admin, unknown paths): bounded
//! while they arrive, and drained before an early answer so that the client sees it.

use std::time::Duration;

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
