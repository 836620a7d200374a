//! The KV service's unary calls (Range, Put, DeleteRange, Txn) without tonic's generic
//! machinery, for the common case only: a request body that holds exactly one uncompressed
//! message, under the size limit, that decodes. Every other request (compressed, too large,
//! empty, two messages, trailers, a body that fails, a message that does not decode) goes on
//! to tonic with the same bytes, so whatever tonic answers stays the answer.
//!
//! The handlers are the same (`kv_service.rs`), called with the request tonic would have
//! built (its metadata from the headers, its extensions); the answer is what tonic sends
//! for a unary call: headers with `content-type: application/grpc`, one length-prefixed
//! message, trailers `grpc-status: 0`; an error is tonic's trailers-only answer
//! (`Status::into_http`). Under a put load tonic's routing, decoding stream and encoding body
//! were about a tenth of a member's CPU (docs/BENCHMARKS.md).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::Frame;
use http_body_util::BodyExt;
use oxcd_api::etcdserverpb::kv_server::Kv;
use prost::Message;

use crate::api::services::{GrpcResult, Services};

/// A request this path does not take: it goes on to tonic, whole.
pub type Pass = axum::extract::Request;

/// The gRPC message prefix: compression flag and length.
const PREFIX_BYTES: usize = 5;

/// The calls [`serve`] may take (it hands back any other).
pub fn takes(path: &str) -> bool {
    matches!(
        path,
        "/etcdserverpb.KV/Put"
            | "/etcdserverpb.KV/Range"
            | "/etcdserverpb.KV/DeleteRange"
            | "/etcdserverpb.KV/Txn"
    )
}

/// Serves `req` if it is a KV unary call in the common form; else hands it back.
pub async fn serve(
    services: &Services,
    limit: usize,
    req: axum::extract::Request,
) -> Result<axum::response::Response, Pass> {
    match req.uri().path() {
        "/etcdserverpb.KV/Put" => call(req, limit, |r| Kv::put(services, r)).await,
        "/etcdserverpb.KV/Range" => call(req, limit, |r| Kv::range(services, r)).await,
        "/etcdserverpb.KV/DeleteRange" => call(req, limit, |r| Kv::delete_range(services, r)).await,
        "/etcdserverpb.KV/Txn" => call(req, limit, |r| Kv::txn(services, r)).await,
        _ => Err(req),
    }
}

async fn call<Req, Resp, F, Fut>(
    req: axum::extract::Request,
    limit: usize,
    handler: F,
) -> Result<axum::response::Response, Pass>
where
    Req: Message + Default,
    Resp: Message,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: std::future::Future<Output = GrpcResult<Resp>>,
{
    if !identity_encoding(req.headers()) {
        return Err(req);
    }
    let (parts, body) = req.into_parts();
    let (bytes, rest) = read_message(body, limit).await;
    let decoded = match rest {
        Rest::Ended => one_message(&bytes, limit).and_then(|m| Req::decode(m).ok()),
        Rest::More(_) => None,
    };
    let Some(msg) = decoded else {
        let rest = match rest {
            Rest::Ended => Body::empty(),
            Rest::More(body) => body,
        };
        let body = Body::new(Prefixed {
            prefix: Some(bytes),
            rest,
        });
        return Err(axum::extract::Request::from_parts(parts, body));
    };
    let request = tonic::Request::from_http(http::Request::from_parts(parts, msg));
    Ok(match handler(request).await {
        Ok(resp) => answer(resp),
        Err(status) => status.into_http::<Body>(),
    })
}

/// No `grpc-encoding`, or `identity`: the only request encoding this path reads.
fn identity_encoding(h: &http::HeaderMap) -> bool {
    h.get("grpc-encoding").is_none_or(|v| v == "identity")
}

/// What is left of a body after [`read_message`].
enum Rest {
    /// It ended after the bytes read, without trailers or an error.
    Ended,
    /// It did not (too long, trailers, an error): the rest, trailers and error included.
    More(Body),
}

/// Reads the body's data until it ends, or until it is past one message of `limit` bytes,
/// or until a frame that is not data.
async fn read_message(mut body: Body, limit: usize) -> (Bytes, Rest) {
    let cap = limit.saturating_add(PREFIX_BYTES);
    let mut first: Option<Bytes> = None;
    let mut more: Option<BytesMut> = None;
    loop {
        let held = first.as_ref().map_or(0, Bytes::len) + more.as_ref().map_or(0, BytesMut::len);
        if held > cap {
            return (collect(first, more), Rest::More(body));
        }
        match body.frame().await {
            None => return (collect(first, more), Rest::Ended),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => match (&mut more, first.take()) {
                    (Some(b), _) => b.put_slice(&data),
                    (None, None) => first = Some(data),
                    (None, Some(f)) => {
                        let mut b = BytesMut::with_capacity(f.len() + data.len());
                        b.put_slice(&f);
                        b.put_slice(&data);
                        more = Some(b);
                    }
                },
                Err(frame) => {
                    // Trailers: tonic merges them into the request's metadata.
                    let rest = Body::new(Prefixed {
                        prefix: None,
                        rest: Body::new(Frames(VecDeque::from([frame]))),
                    });
                    return (collect(first, more), Rest::More(rest));
                }
            },
            Some(Err(e)) => {
                let rest = Body::new(Failed(Some(e)));
                return (collect(first, more), Rest::More(rest));
            }
        }
    }
}

fn collect(first: Option<Bytes>, more: Option<BytesMut>) -> Bytes {
    match (first, more) {
        (_, Some(b)) => b.freeze(),
        (Some(f), None) => f,
        (None, None) => Bytes::new(),
    }
}

/// The message if `bytes` is exactly one uncompressed gRPC message of at most `limit` bytes.
fn one_message(bytes: &Bytes, limit: usize) -> Option<Bytes> {
    if bytes.len() < PREFIX_BYTES || bytes[0] != 0 {
        return None;
    }
    let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    (len <= limit && bytes.len() == PREFIX_BYTES + len).then(|| bytes.slice(PREFIX_BYTES..))
}

/// tonic's unary answer: content type, the handler's metadata (less gRPC's reserved
/// headers), one message, `grpc-status: 0`.
fn answer<Resp: Message>(resp: tonic::Response<Resp>) -> axum::response::Response {
    let (metadata, msg, extensions) = resp.into_parts();
    let mut headers = metadata.into_headers();
    if !headers.is_empty() {
        for reserved in RESERVED_HEADERS {
            headers.remove(reserved);
        }
    }
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    let len = msg.encoded_len();
    let mut buf = BytesMut::with_capacity(PREFIX_BYTES + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    msg.encode_raw(&mut buf);
    let mut trailers = http::HeaderMap::with_capacity(1);
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let frames = [Frame::data(buf.freeze()), Frame::trailers(trailers)];
    let mut resp = http::Response::new(Body::new(Frames(VecDeque::from(frames))));
    *resp.headers_mut() = headers;
    *resp.extensions_mut() = extensions;
    resp
}

/// The headers tonic drops from a handler's metadata (`MetadataMap::GRPC_RESERVED_HEADERS`).
const RESERVED_HEADERS: [&str; 5] = [
    "te",
    "content-type",
    "grpc-message",
    "grpc-message-type",
    "grpc-status",
];

/// A body of frames known in advance: an answer's message and trailers, or the trailers
/// read past.
struct Frames(VecDeque<Frame<Bytes>>);

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

/// The bytes already read, then the rest of the body as it was.
struct Prefixed {
    prefix: Option<Bytes>,
    rest: Body,
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Some(prefix) = self.prefix.take().filter(|p| p.has_remaining()) {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }
}

/// A body whose next frame is the error read past.
struct Failed(Option<axum::Error>);

impl http_body::Body for Failed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Poll::Ready(self.0.take().map(Err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(flag: u8, msg: &[u8]) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(flag);
        b.put_u32(msg.len() as u32);
        b.put_slice(msg);
        b.freeze()
    }

    #[test]
    fn only_one_whole_uncompressed_message_within_the_limit_is_taken() {
        let msg = b"\x0a\x03abc";
        assert_eq!(one_message(&framed(0, msg), 100).as_deref(), Some(&msg[..]));
        // compressed
        assert_eq!(one_message(&framed(1, msg), 100), None);
        // over the limit
        assert_eq!(one_message(&framed(0, msg), 4), None);
        // a second message after the first
        let mut two = BytesMut::from(&framed(0, msg)[..]);
        two.put_slice(&framed(0, msg));
        assert_eq!(one_message(&two.freeze(), 100), None);
        // cut short, and shorter than a prefix
        let whole = framed(0, msg);
        assert_eq!(one_message(&whole.slice(..whole.len() - 1), 100), None);
        assert_eq!(one_message(&Bytes::from_static(b"\0\0"), 100), None);
        // empty message
        assert_eq!(one_message(&framed(0, b""), 100).as_deref(), Some(&b""[..]));
    }

    #[tokio::test]
    async fn a_message_in_many_frames_is_read_in_order() {
        let chunks: Vec<Result<Frame<Bytes>, Infallible>> = ["\0\0\0", "\0\x06ab", "cd", "ef"]
            .into_iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        let body = Body::new(http_body_util::StreamBody::new(futures::stream::iter(
            chunks,
        )));
        let (bytes, rest) = read_message(body, 100).await;
        assert!(matches!(rest, Rest::Ended));
        assert_eq!(&bytes[..], b"\0\0\0\0\x06abcdef");
        assert_eq!(one_message(&bytes, 100).as_deref(), Some(&b"abcdef"[..]));
    }

    #[tokio::test]
    async fn a_body_read_past_its_message_goes_on_whole() {
        let chunks: Vec<Result<Frame<Bytes>, Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(b"\0\0\0"))),
            Ok(Frame::data(Bytes::from_static(b"\0\x09abcdefghi"))),
            Ok(Frame::data(Bytes::from_static(b"tail"))),
        ];
        let body = Body::new(http_body_util::StreamBody::new(futures::stream::iter(
            chunks,
        )));
        // A limit of 4 bytes: reading stops once past 9 bytes held.
        let (prefix, rest) = read_message(body, 4).await;
        assert_eq!(&prefix[..], b"\0\0\0\0\x09abcdefghi");
        let Rest::More(rest) = rest else {
            panic!("the body has more")
        };
        let whole = Prefixed {
            prefix: Some(prefix),
            rest,
        }
        .collect()
        .await
        .map(|c| c.to_bytes());
        assert_eq!(
            whole.ok().as_deref(),
            Some(&b"\0\0\0\0\x09abcdefghitail"[..])
        );
    }

    #[tokio::test]
    async fn an_answer_is_one_message_then_status_zero() {
        let resp = answer(tonic::Response::new(
            oxcd_api::etcdserverpb::PutResponse::default(),
        ));
        assert_eq!(resp.headers()["content-type"], "application/grpc");
        let collected = match resp.into_body().collect().await {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let trailers = collected.trailers().cloned();
        assert_eq!(&collected.to_bytes()[..], b"\0\0\0\0\0");
        assert_eq!(
            trailers.as_ref().and_then(|t| t.get("grpc-status")),
            Some(&http::HeaderValue::from_static("0"))
        );
    }
}
