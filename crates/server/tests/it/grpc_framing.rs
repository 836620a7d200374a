//! KV calls in every form a gRPC request body can take, sent as raw HTTP/2 (hyper's client):
//! the common form (one plain message) is answered by oxcd's own unary path
//! (`api/kv_unary.rs`), every other form by tonic with the same bytes. The answers are
//! tonic's: a compressed flag without `grpc-encoding`, an encoding nobody offered, an empty
//! body, a message that does not decode or is cut short get INTERNAL or UNIMPLEMENTED and
//! write nothing; a message split over many DATA frames, or followed by a second one, is
//! the request.

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use oxcd_api::etcdserverpb::{PutRequest, RangeRequest, RangeResponse};
use oxcd_testkit::{Cluster, Impl};
use prost::Message;

/// The gRPC status and message of an answer (from its headers if trailers-only, else from
/// its trailers), and the response message bytes.
struct Answer {
    status: String,
    message: String,
    body: Bytes,
}

fn framed(flag: u8, msg: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_u8(flag);
    b.put_u32(msg.len() as u32);
    b.put_slice(msg);
    b.to_vec()
}

fn put(key: &str, value: &[u8]) -> Vec<u8> {
    PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.to_vec(),
        ..Default::default()
    }
    .encode_to_vec()
}

type Frames = Vec<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>>;
type ReqBody = http_body_util::StreamBody<
    futures::stream::Iter<
        std::vec::IntoIter<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>>,
    >,
>;
/// A refused form: what it is, its grpc-encoding, its DATA frames, the status and message.
type Refused<'a> = (&'a str, Option<&'a str>, Vec<Vec<u8>>, &'a str, &'a str);

async fn call(
    sender: &mut hyper::client::conn::http2::SendRequest<ReqBody>,
    path: &str,
    encoding: Option<&str>,
    chunks: Vec<Vec<u8>>,
) -> Answer {
    let frames: Frames = chunks
        .into_iter()
        .map(|c| Ok(hyper::body::Frame::data(Bytes::from(c))))
        .collect();
    let mut req = http::Request::post(format!("http://oxcd{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(e) = encoding {
        req = req.header("grpc-encoding", e);
    }
    let req = req
        .body(http_body_util::StreamBody::new(futures::stream::iter(
            frames,
        )))
        .expect("request");
    let resp = sender.send_request(req).await.expect("an answer");
    let headers = resp.headers().clone();
    let collected = resp.into_body().collect().await.expect("the body");
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let body = collected.to_bytes();
    let get = |name: &str| {
        headers
            .get(name)
            .or(trailers.get(name))
            .map(|v| v.to_str().unwrap_or("?").to_string())
            .unwrap_or_default()
    };
    Answer {
        status: get("grpc-status"),
        message: get("grpc-message"),
        body,
    }
}

#[test]
fn kv_calls_in_every_body_form_get_tonics_answers() {
    let c = Cluster::builder(Impl::Oxcd).start();
    let addr = c.client_addr(0);
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        let put_path = "/etcdserverpb.KV/Put";

        // The common form.
        let a = call(&mut sender, put_path, None, vec![framed(0, &put("k", b"v1"))]).await;
        assert_eq!((a.status.as_str(), a.message.as_str()), ("0", ""));
        assert_eq!(&a.body[..5], &[0, 0, 0, 0, (a.body.len() - 5) as u8]);

        // One message over many DATA frames, and `identity` named.
        let whole = framed(0, &put("k", &[b'x'; 40_000]));
        let chunks: Vec<Vec<u8>> = whole.chunks(7_000).map(<[u8]>::to_vec).collect();
        let a = call(&mut sender, put_path, Some("identity"), chunks).await;
        assert_eq!(a.status, "0", "{}", a.message);

        // Two messages: tonic takes the first.
        let two = [framed(0, &put("two", b"first")), framed(0, &put("two", b"second"))].concat();
        let a = call(&mut sender, put_path, None, vec![two]).await;
        assert_eq!(a.status, "0", "{}", a.message);

        // Forms that write nothing.
        let refused: Vec<Refused> = vec![
            (
                "compressed flag, no grpc-encoding",
                None,
                vec![framed(1, &put("bad", b"v"))],
                "13",
                "protocol error: received message with compressed-flag but no grpc-encoding was specified",
            ),
            (
                "an encoding nobody offered",
                Some("gzip"),
                vec![framed(0, &put("bad", b"v"))],
                "12",
                "Content is compressed with `gzip` which isn't supported",
            ),
            ("empty body", None, vec![], "13", "Missing request message."),
            (
                "cut short",
                None,
                vec![framed(0, &put("bad", b"value"))[..9].to_vec()],
                "13",
                "Unexpected EOF decoding stream.",
            ),
            (
                "does not decode",
                None,
                vec![framed(0, &[0x0a, 0xff, 0xff, 0xff])],
                "13",
                "failed to decode Protobuf message: PutRequest.key: invalid varint",
            ),
        ];
        for (what, encoding, chunks, status, message) in refused {
            let a = call(&mut sender, put_path, encoding, chunks).await;
            let message_got = percent_decode(&a.message);
            assert_eq!(
                (a.status.as_str(), message_got.as_str()),
                (status, message),
                "{what}"
            );
        }

        // What was written: k (the 40 000-byte value), two = "first", nothing else.
        let range = |key: &str, end: &str| {
            framed(
                0,
                &RangeRequest {
                    key: key.as_bytes().to_vec(),
                    range_end: end.as_bytes().to_vec(),
                    ..Default::default()
                }
                .encode_to_vec(),
            )
        };
        let a = call(&mut sender, "/etcdserverpb.KV/Range", None, vec![range("\0", "\0")]).await;
        assert_eq!(a.status, "0", "{}", a.message);
        let got = RangeResponse::decode(&a.body[5..]).expect("a RangeResponse");
        let kvs: Vec<(String, usize)> = got
            .kvs
            .iter()
            .map(|kv| (String::from_utf8_lossy(&kv.key).into_owned(), kv.value.len()))
            .collect();
        assert_eq!(kvs, vec![("k".to_string(), 40_000), ("two".to_string(), 5)]);
        assert_eq!(got.header.map(|h| h.revision), Some(4));
    });

    // Each Put counted once, with the code its client got, whichever path answered it
    // (`KvDirect` counts before it hands a form it does not take to tonic).
    let metrics = http_get(addr, "/metrics");
    let count = |name: &str, code: Option<&str>| -> u64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name) && l.contains("grpc_method=\"Put\""))
            .filter(|l| code.is_none_or(|c| l.contains(&format!("grpc_code=\"{c}\""))))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(count("grpc_server_started_total", None), 8, "{metrics}");
    assert_eq!(count("grpc_server_handled_total", Some("OK")), 3);
    assert_eq!(count("grpc_server_handled_total", Some("Internal")), 4);
    assert_eq!(count("grpc_server_handled_total", Some("Unimplemented")), 1);
    assert_eq!(count("grpc_server_handled_total", None), 8);
}

/// The body of a plain HTTP/1.0 GET.
fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// grpc-message is percent-encoded (gRPC's rule for non-ASCII and '%').
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
