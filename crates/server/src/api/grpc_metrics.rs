//! go-grpc-prometheus's server metrics for every gRPC call, in the one client layer (`http.rs`):
//! `grpc_server_started_total` when a call comes in, `grpc_server_msg_received_total` and
//! `grpc_server_msg_sent_total` per length-prefixed message on the request and response
//! bodies, `grpc_server_handled_total` with the call's `grpc-status` (in the headers of a
//! trailers-only answer, else in the trailers; a body dropped before its trailers is a call
//! the client canceled), and with `--metrics=extensive` the handling time. Message payload
//! bytes feed etcd's `etcd_network_client_grpc_{received,sent}_bytes_total`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use bytes::Buf;
use http_body::Frame;

use crate::metrics::{self, GrpcType, MethodMetrics};

/// gRPC code 1: the client went away before the call ended.
const CANCELED: usize = 1;

/// Runs `call` on the request, counting it if its path is a gRPC method this member serves.
/// Part of the one client layer (`http.rs`), not a layer of its own.
pub async fn observed<F, Fut>(req: axum::extract::Request, call: F) -> axum::response::Response
where
    F: FnOnce(axum::extract::Request) -> Fut,
    Fut: std::future::Future<Output = axum::response::Response>,
{
    let Some(m) = metrics::get().grpc.method(req.uri().path()) else {
        return call(req).await;
    };
    m.started().inc();
    let version = req
        .headers()
        .get("client-api-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown");
    let kind = if m.grpc_type == GrpcType::Unary {
        "unary"
    } else {
        "stream"
    };
    metrics::get()
        .client_requests
        .with_label_values(&[kind, version])
        .inc();
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let body = Body::new(Counted::new(body, Side::Received, m, started));
    let resp = call(axum::extract::Request::from_parts(parts, body)).await;
    let (parts, body) = resp.into_parts();
    let mut counted = Counted::new(body, Side::Sent, m, started);
    if let Some(code) = status_of(&parts.headers) {
        counted.finish(code);
    }
    axum::response::Response::from_parts(parts, Body::new(counted))
}

fn status_of(h: &http::HeaderMap) -> Option<usize> {
    h.get("grpc-status")?.to_str().ok()?.parse().ok()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Received,
    Sent,
}

/// A body whose gRPC messages are counted as they pass.
struct Counted {
    inner: Body,
    side: Side,
    m: &'static MethodMetrics,
    started: Instant,
    frames: Frames,
    /// True once `grpc_server_handled_total` was counted (or this is the request side).
    done: bool,
}

impl Counted {
    fn new(inner: Body, side: Side, m: &'static MethodMetrics, started: Instant) -> Counted {
        Counted {
            inner,
            side,
            m,
            started,
            frames: Frames::default(),
            done: side == Side::Received,
        }
    }

    fn finish(&mut self, code: usize) {
        if !self.done {
            self.done = true;
            self.m.handled(code, self.started.elapsed());
        }
    }

    fn count(&mut self, data: &[u8]) {
        let (messages, bytes) = self.frames.feed(data);
        let g = metrics::get();
        match self.side {
            Side::Received => {
                self.m.msg_received().inc_by(messages);
                g.grpc_received_bytes.inc_by(bytes);
            }
            Side::Sent => {
                self.m.msg_sent().inc_by(messages);
                g.grpc_sent_bytes.inc_by(bytes);
            }
        }
    }
}

impl http_body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.count(data.chunk());
                } else if let Some(code) = frame.trailers_ref().and_then(status_of) {
                    self.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish(CANCELED),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.finish(CANCELED);
    }
}

/// gRPC's length-prefixed messages (1 byte compressed flag, 4 bytes big-endian length,
/// payload) across arbitrary chunk boundaries.
#[derive(Default)]
struct Frames {
    /// Prefix bytes of the next message seen so far.
    prefix: [u8; 5],
    prefix_len: usize,
    /// Payload bytes of the current message still to come.
    payload_left: usize,
}

impl Frames {
    /// Feeds a chunk; returns the messages begun in it and the payload bytes it announced.
    fn feed(&mut self, mut data: &[u8]) -> (u64, u64) {
        let (mut messages, mut bytes) = (0u64, 0u64);
        while !data.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(data.len());
                self.payload_left -= n;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&data[..n]);
            self.prefix_len += n;
            data = &data[n..];
            if self.prefix_len == 5 {
                let len = u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]) as usize;
                self.prefix_len = 0;
                self.payload_left = len;
                messages += 1;
                bytes += len as u64;
            }
        }
        (messages, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::Frames;

    fn message(payload: &[u8]) -> Vec<u8> {
        let mut m = vec![0];
        m.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        m.extend_from_slice(payload);
        m
    }

    #[test]
    fn messages_are_counted_across_chunk_boundaries() {
        let mut wire = message(b"hello");
        wire.extend(message(b""));
        wire.extend(message(&[7; 300]));
        for split in 0..wire.len() {
            let mut f = Frames::default();
            let (a, ab) = f.feed(&wire[..split]);
            let (b, bb) = f.feed(&wire[split..]);
            assert_eq!((a + b, ab + bb), (3, 305), "split at {split}");
        }
    }
}
