//! Repairs the `:authority` of HTTP/2 requests on plaintext client connections, so that
//! etcdctl 3.4 can dial a member over `http://`.
//!
//! Why: Go's gRPC client (etcdctl 3.4, clientv3) sends the whole endpoint URL as the
//! authority when it dials a member directly without TLS (`:authority: http://10.0.0.1:2379`).
//! Go's HTTP/2 server accepts that; the `h2` crate under hyper rejects it as a malformed
//! authority and resets the stream with PROTOCOL_ERROR. Over TLS the client sends the server
//! name instead, so only plaintext connections pass through here.
//!
//! What it owns: the client-to-server byte stream of one plaintext connection, between the
//! socket and hyper. Server-to-client bytes go from hyper to the socket untouched.
//!
//! - The first bytes are compared with the HTTP/2 prior-knowledge preface
//!   (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`, 24 bytes). Anything else (HTTP/1.1 for curl and the
//!   v2 keys API) is handed to hyper as it came, including the bytes already read.
//! - After the preface the stream is a sequence of frames (RFC 9113 §4.1):
//!
//!   ```text
//!   +-----------------------------------------------+
//!   |                 Length (24)                   |
//!   +---------------+---------------+---------------+
//!   |   Type (8)    |   Flags (8)   |
//!   +-+-------------+---------------+-------------------------------+
//!   |R|                 Stream Identifier (31)                      |
//!   +=+=============================================================+
//!   |                   Frame Payload (Length bytes)               ...
//!   +---------------------------------------------------------------+
//!   ```
//!
//!   Every frame is copied verbatim except HEADERS (type 0x1; payload: `[pad length (8)]` if
//!   PADDED 0x8, `[E + stream dependency (32), weight (8)]` if PRIORITY 0x20, the header block
//!   fragment, then the padding) and the CONTINUATION frames (type 0x9) that complete its
//!   header block up to END_HEADERS (0x4).
//! - A header block is decoded with an HPACK decoder that mirrors the client's dynamic table
//!   (`hpack.rs`, ours: one that allocates nothing per field and decodes Huffman strings
//!   from constant tables),
//!   an `:authority` of the form `scheme://host:port[/...]` becomes `host:port`, and the whole
//!   header list is encoded again as literals without indexing. Every block is rewritten, not
//!   only the bad ones: the server's HPACK table then stays empty and can never disagree with
//!   the indexes the client refers to. The block leaves as one HEADERS frame (END_STREAM and
//!   the priority fields kept, padding dropped) plus CONTINUATION frames, none over 16384
//!   bytes (the default SETTINGS_MAX_FRAME_SIZE, which our hyper server does not raise).
//!
//! A header block over [`HEADER_BLOCK_BYTES_MAX`] (encoded or decoded), a frame that breaks
//! the framing rules above, or a block that does not decode closes the connection; the
//! reason is logged at debug level.

use std::io::{self, Cursor};
use std::pin::Pin;
use std::task::{Context, Poll};

mod hpack;

use hpack::{Decoder, HpackError};
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
    Chain, Join, ReadBuf, ReadHalf, SimplexStream,
};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_BYTES: usize = 9;
/// Largest frame payload we send to hyper: the default SETTINGS_MAX_FRAME_SIZE.
const FRAME_PAYLOAD_BYTES_MAX: usize = 16_384;
/// Largest header block accepted from a client, both as received (all its fragments) and
/// decoded (HPACK size: name + value + 32 per field). hyper refuses header lists over
/// 16 KiB on its own, with a proper HTTP/2 error; this bound only stops a block that
/// would make us buffer without end.
pub const HEADER_BLOCK_BYTES_MAX: usize = 1 << 20;
/// The HPACK dynamic table size the client may use: the default SETTINGS_HEADER_TABLE_SIZE,
/// which our hyper server does not change.
const HEADER_TABLE_BYTES_MAX: usize = 4096;
/// Rewritten bytes buffered between the rewriting task and hyper.
const PIPE_BYTES_MAX: usize = 64 * 1024;
/// Bytes read from the socket at a time.
const READ_BUFFER_BYTES: usize = 32 * 1024;

const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
const PRIORITY_BYTES: usize = 5;

/// What a plaintext connection is served as: the (possibly rewritten) client bytes to read,
/// the socket to write.
pub type Conn = Join<ClientReader, OwnedWriteHalf>;

/// Reads the first bytes of `stream` and returns the connection to hand to hyper: as it
/// came unless it starts with the HTTP/2 preface, in which case the client's header blocks
/// are rewritten by a task that lives as long as the returned connection.
pub async fn wrap(mut stream: TcpStream) -> io::Result<Conn> {
    let seen = read_preface(&mut stream).await?;
    let (read, write) = stream.into_split();
    if seen != PREFACE {
        let verbatim = Inner::Verbatim(Cursor::new(seen).chain(read));
        return Ok(tokio::io::join(ClientReader(verbatim), write));
    }
    let (pipe, mut to_hyper) = tokio::io::simplex(PIPE_BYTES_MAX);
    let peer = read
        .peer_addr()
        .map_or_else(|_| "an unknown address".to_string(), |a| a.to_string());
    let task = tokio::spawn(async move {
        let mut from_client = BufReader::with_capacity(READ_BUFFER_BYTES, read);
        let res = async {
            to_hyper.write_all(PREFACE).await?;
            rewrite_frames(&mut from_client, &mut to_hyper).await
        }
        .await;
        if let Err(e) = res {
            tracing::debug!("closing HTTP/2 connection from {peer}: {e}");
        }
        // hyper reads end-of-stream and ends the connection, which closes the socket.
        let _ = to_hyper.shutdown().await;
    });
    let rewritten = Inner::Rewritten {
        pipe,
        _rewriter: AbortOnDrop(task),
    };
    Ok(tokio::io::join(ClientReader(rewritten), write))
}

/// Reads until the bytes seen stop matching the preface, or all 24 have matched. Never
/// reads past the preface, and returns early for an HTTP/1.1 request shorter than it.
async fn read_preface(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut seen = Vec::with_capacity(PREFACE.len());
    let mut buf = [0u8; PREFACE.len()];
    while seen.len() < PREFACE.len() && PREFACE.starts_with(&seen) {
        let n = stream.read(&mut buf[..PREFACE.len() - seen.len()]).await?;
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    Ok(seen)
}

/// The client's side of a wrapped connection, as hyper reads it.
pub struct ClientReader(Inner);

enum Inner {
    /// Not HTTP/2: the bytes read while looking for the preface, then the socket.
    Verbatim(Chain<Cursor<Vec<u8>>, OwnedReadHalf>),
    /// HTTP/2: the rewritten stream, written by a task that ends when this is dropped.
    Rewritten {
        pipe: ReadHalf<SimplexStream>,
        _rewriter: AbortOnDrop,
    },
}

impl AsyncRead for ClientReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Inner::Verbatim(r) => Pin::new(r).poll_read(cx, buf),
            Inner::Rewritten { pipe, .. } => Pin::new(pipe).poll_read(cx, buf),
        }
    }
}

/// Ends the rewriting task (and so releases the socket's read half) when hyper is done
/// with the connection, even if the client never closes its side.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Debug, thiserror::Error)]
enum RewriteError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("header block of stream {stream_id} is over {HEADER_BLOCK_BYTES_MAX} bytes")]
    HeaderBlockTooLarge { stream_id: u32 },
    #[error("HEADERS frame of stream {stream_id} is shorter than its padding and priority fields")]
    HeadersTooShort { stream_id: u32 },
    #[error(
        "header block of stream {stream_id} is followed by a frame of type {frame_type:#x} on \
         stream {got_stream_id} instead of its CONTINUATION"
    )]
    MissingContinuation {
        stream_id: u32,
        frame_type: u8,
        got_stream_id: u32,
    },
    #[error("cannot decode the header block of stream {stream_id}: {source}")]
    Hpack { stream_id: u32, source: HpackError },
}

struct FrameHeader {
    length: usize,
    frame_type: u8,
    flags: u8,
    stream_id: u32,
}

impl FrameHeader {
    fn parse(b: &[u8; FRAME_HEADER_BYTES]) -> FrameHeader {
        FrameHeader {
            length: u32::from_be_bytes([0, b[0], b[1], b[2]]) as usize,
            frame_type: b[3],
            flags: b[4],
            stream_id: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }
}

fn push_frame_header(out: &mut Vec<u8>, length: usize, frame_type: u8, flags: u8, stream_id: u32) {
    debug_assert!(length <= FRAME_PAYLOAD_BYTES_MAX);
    out.extend_from_slice(&(length as u32).to_be_bytes()[1..]);
    out.push(frame_type);
    out.push(flags);
    out.extend_from_slice(&stream_id.to_be_bytes());
}

/// One header block as the client sent it, with its fragments joined.
struct HeaderBlock {
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; PRIORITY_BYTES]>,
    fragment: Vec<u8>,
}

/// Copies frames from `from` to `to` until `from` ends at a frame boundary, rewriting
/// every header block (see the module doc).
async fn rewrite_frames<R, W>(from: &mut R, to: &mut W) -> Result<(), RewriteError>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut decoder = Decoder::new(HEADER_TABLE_BYTES_MAX);
    let mut encoded = Vec::new();
    let mut out = Vec::new();
    while let Some(raw) = read_frame_header(from).await? {
        let head = FrameHeader::parse(&raw);
        if head.frame_type != TYPE_HEADERS {
            to.write_all(&raw).await?;
            copy_exact(from, to, head.length).await?;
            continue;
        }
        let block = read_header_block(from, head).await?;
        encoded.clear();
        reencode(&mut decoder, &block, &mut encoded)?;
        out.clear();
        push_header_frames(&block, &encoded, &mut out);
        to.write_all(&out).await?;
    }
    Ok(())
}

/// The next frame header, or `None` if the client closed cleanly between frames.
async fn read_frame_header<R: AsyncBufRead + Unpin>(
    from: &mut R,
) -> io::Result<Option<[u8; FRAME_HEADER_BYTES]>> {
    if from.fill_buf().await?.is_empty() {
        return Ok(None);
    }
    let mut raw = [0u8; FRAME_HEADER_BYTES];
    from.read_exact(&mut raw).await?;
    Ok(Some(raw))
}

async fn copy_exact<R, W>(from: &mut R, to: &mut W, mut length: usize) -> io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    while length > 0 {
        let buf = from.fill_buf().await?;
        if buf.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let n = buf.len().min(length);
        to.write_all(&buf[..n]).await?;
        from.consume(n);
        length -= n;
    }
    Ok(())
}

/// Reads the rest of the HEADERS frame `head` and its CONTINUATION frames.
async fn read_header_block<R: AsyncBufRead + Unpin>(
    from: &mut R,
    head: FrameHeader,
) -> Result<HeaderBlock, RewriteError> {
    let stream_id = head.stream_id;
    let too_large = RewriteError::HeaderBlockTooLarge { stream_id };
    if head.length > HEADER_BLOCK_BYTES_MAX {
        return Err(too_large);
    }
    let mut payload = vec![0u8; head.length];
    from.read_exact(&mut payload).await?;
    let (priority, fragment) = split_headers_payload(&payload, head.flags)
        .ok_or(RewriteError::HeadersTooShort { stream_id })?;
    let mut block = HeaderBlock {
        stream_id,
        end_stream: head.flags & FLAG_END_STREAM != 0,
        priority,
        fragment: fragment.to_vec(),
    };
    let mut end_headers = head.flags & FLAG_END_HEADERS != 0;
    while !end_headers {
        let raw = read_frame_header(from)
            .await?
            .ok_or(io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let next = FrameHeader::parse(&raw);
        if next.frame_type != TYPE_CONTINUATION || next.stream_id != stream_id {
            return Err(RewriteError::MissingContinuation {
                stream_id,
                frame_type: next.frame_type,
                got_stream_id: next.stream_id,
            });
        }
        if block.fragment.len() + next.length > HEADER_BLOCK_BYTES_MAX {
            return Err(too_large);
        }
        let start = block.fragment.len();
        block.fragment.resize(start + next.length, 0);
        from.read_exact(&mut block.fragment[start..]).await?;
        end_headers = next.flags & FLAG_END_HEADERS != 0;
    }
    Ok(block)
}

/// Splits a HEADERS payload into its priority fields and header block fragment, dropping
/// the padding. `None` if the payload is shorter than its flags say.
fn split_headers_payload(
    payload: &[u8],
    flags: u8,
) -> Option<(Option<[u8; PRIORITY_BYTES]>, &[u8])> {
    let mut rest = payload;
    let mut pad_bytes = 0;
    if flags & FLAG_PADDED != 0 {
        let (&pad, tail) = rest.split_first()?;
        pad_bytes = usize::from(pad);
        rest = tail;
    }
    let mut priority = None;
    if flags & FLAG_PRIORITY != 0 {
        let (fields, tail) = rest.split_first_chunk::<PRIORITY_BYTES>()?;
        priority = Some(*fields);
        rest = tail;
    }
    let fragment_bytes = rest.len().checked_sub(pad_bytes)?;
    Some((priority, &rest[..fragment_bytes]))
}

/// Decodes `block` against the client's table and appends its fields to `out` as literals
/// without indexing (RFC 7541 §6.2.2), with the `:authority` repaired.
fn reencode(
    decoder: &mut Decoder,
    block: &HeaderBlock,
    out: &mut Vec<u8>,
) -> Result<(), RewriteError> {
    let stream_id = block.stream_id;
    let mut list_bytes = 0usize;
    decoder
        .decode(&block.fragment, HEADER_BLOCK_BYTES_MAX, |name, value| {
            // RFC 7541 §4.1: the size of a field is its name and value plus 32.
            list_bytes += name.len() + value.len() + 32;
            if list_bytes > HEADER_BLOCK_BYTES_MAX {
                return;
            }
            let value = match name {
                b":authority" => authority_without_scheme(value),
                _ => value,
            };
            push_literal(name, value, out);
        })
        .map_err(|source| RewriteError::Hpack { stream_id, source })?;
    if list_bytes > HEADER_BLOCK_BYTES_MAX {
        return Err(RewriteError::HeaderBlockTooLarge { stream_id });
    }
    Ok(())
}

/// `host:port` out of `scheme://host:port[/path]`; any other value as it is.
fn authority_without_scheme(value: &[u8]) -> &[u8] {
    let Some(at) = value.windows(3).position(|w| w == b"://") else {
        return value;
    };
    let rest = &value[at + 3..];
    let end = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
    &rest[..end]
}

/// A literal header field without indexing, new name, neither string Huffman-coded.
fn push_literal(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0x00);
    for s in [name, value] {
        push_integer(s.len(), out);
        out.extend_from_slice(s);
    }
}

/// An HPACK integer with a 7-bit prefix and the prefix's high bit (Huffman flag) clear
/// (RFC 7541 §5.1).
fn push_integer(mut n: usize, out: &mut Vec<u8>) {
    const PREFIX_MAX: usize = 0x7f;
    if n < PREFIX_MAX {
        out.push(n as u8);
        return;
    }
    out.push(PREFIX_MAX as u8);
    n -= PREFIX_MAX;
    while n >= 0x80 {
        out.push((n & 0x7f) as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Frames `fields` (an encoded header block) as one HEADERS frame and as many
/// CONTINUATION frames as needed, each payload at most [`FRAME_PAYLOAD_BYTES_MAX`].
fn push_header_frames(block: &HeaderBlock, fields: &[u8], out: &mut Vec<u8>) {
    let priority: &[u8] = block.priority.as_ref().map_or(&[], |p| &p[..]);
    let first_bytes = fields.len().min(FRAME_PAYLOAD_BYTES_MAX - priority.len());
    let (first, mut rest) = fields.split_at(first_bytes);
    let mut flags = 0;
    if block.end_stream {
        flags |= FLAG_END_STREAM;
    }
    if block.priority.is_some() {
        flags |= FLAG_PRIORITY;
    }
    if rest.is_empty() {
        flags |= FLAG_END_HEADERS;
    }
    let length = priority.len() + first.len();
    push_frame_header(out, length, TYPE_HEADERS, flags, block.stream_id);
    out.extend_from_slice(priority);
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(FRAME_PAYLOAD_BYTES_MAX));
        rest = tail;
        let flags = if rest.is_empty() { FLAG_END_HEADERS } else { 0 };
        push_frame_header(out, chunk.len(), TYPE_CONTINUATION, flags, block.stream_id);
        out.extend_from_slice(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BAD: &[u8] = b"http://127.0.0.31:2379";
    const GOOD: &[u8] = b"127.0.0.31:2379";

    /// `:method: POST`, `:scheme: http`, `:path: /`, as Go sends them (static indexes).
    const PSEUDO: [u8; 3] = [0x83, 0x86, 0x84];

    fn frame(frame_type: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&[frame_type, flags]);
        out.extend_from_slice(&stream_id.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// Splits a byte stream into (type, flags, stream id, payload) frames.
    fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let head = FrameHeader::parse(bytes[..FRAME_HEADER_BYTES].try_into().unwrap());
            let end = FRAME_HEADER_BYTES + head.length;
            let payload = bytes[FRAME_HEADER_BYTES..end].to_vec();
            out.push((head.frame_type, head.flags, head.stream_id, payload));
            bytes = &bytes[end..];
        }
        out
    }

    /// The block we must produce for `fields`: literals without indexing only.
    fn literals(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in fields {
            push_literal(name, value, &mut out);
        }
        out
    }

    fn expected_fields(authority: &[u8]) -> Vec<(&[u8], &[u8])> {
        vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/"),
            (b":authority", authority),
        ]
    }

    /// A string literal, Huffman-coded with the codes (RFC 7541 Appendix B) of the few
    /// characters these tests use, and checked against the decoder.
    fn huffman_literal(s: &[u8]) -> Vec<u8> {
        let code = |c: u8| -> (u32, u32) {
            match c {
                b'.' => (0x17, 6),
                b'/' => (0x18, 6),
                b'0' => (0x0, 5),
                b'1' => (0x1, 5),
                b'2' => (0x2, 5),
                b'3' => (0x19, 6),
                b'7' => (0x1d, 6),
                b'9' => (0x1f, 6),
                b':' => (0x5c, 7),
                b'h' => (0x27, 6),
                b'p' => (0x2b, 6),
                b't' => (0x9, 5),
                _ => panic!("no test code for {c}"),
            }
        };
        let (mut acc, mut acc_bits, mut coded) = (0u64, 0u32, Vec::new());
        for &c in s {
            let (bits, len) = code(c);
            acc = (acc << len) | u64::from(bits);
            acc_bits += len;
            while acc_bits >= 8 {
                acc_bits -= 8;
                coded.push((acc >> acc_bits) as u8);
            }
        }
        if acc_bits > 0 {
            // Pad with the most significant bits of EOS (all ones).
            let pad = 8 - acc_bits;
            coded.push(((acc << pad) as u8) | ((1u8 << pad) - 1));
        }
        let decoded = loona_hpack::huffman::HuffmanDecoder::new()
            .decode(&coded)
            .unwrap();
        assert_eq!(decoded, s, "the test's Huffman codes are wrong");
        let mut out = Vec::new();
        push_integer(coded.len(), &mut out);
        out[0] |= 0x80;
        out.extend_from_slice(&coded);
        out
    }

    fn plain_literal(s: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        push_integer(s.len(), &mut out);
        out.extend_from_slice(s);
        out
    }

    async fn rewrite(input: &[u8]) -> Result<Vec<u8>, RewriteError> {
        let mut from = input;
        let mut to = Vec::new();
        rewrite_frames(&mut from, &mut to).await?;
        Ok(to)
    }

    #[tokio::test]
    async fn bad_authority_is_rewritten() {
        // `:authority` as a literal with incremental indexing, name from static index 1.
        let mut block = PSEUDO.to_vec();
        block.push(0x41);
        block.extend(plain_literal(BAD));
        let input = frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &block);

        let out = frames(&rewrite(&input).await.unwrap());
        let want = literals(&expected_fields(GOOD));
        assert_eq!(out, vec![(TYPE_HEADERS, FLAG_END_HEADERS, 1, want)]);
    }

    #[tokio::test]
    async fn good_authority_and_other_frames_are_kept() {
        let mut block = PSEUDO.to_vec();
        block.push(0x01); // literal without indexing, name from static index 1
        block.extend(plain_literal(GOOD));
        let settings = frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]);
        let data = frame(0x0, FLAG_END_STREAM, 1, b"grpc message");
        let mut input = settings.clone();
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &block));
        input.extend(&data);

        let out = rewrite(&input).await.unwrap();
        let mut want = settings;
        want.extend(frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS,
            1,
            &literals(&expected_fields(GOOD)),
        ));
        want.extend(data);
        assert_eq!(out, want);
    }

    #[tokio::test]
    async fn huffman_and_indexed_authority_across_requests() {
        // Request 1: Huffman-coded value, added to the client's dynamic table (index 62).
        // Request 2: the whole field by its dynamic index, as Go's encoder sends it.
        let mut first = PSEUDO.to_vec();
        first.push(0x41);
        first.extend(huffman_literal(BAD));
        let mut second = PSEUDO.to_vec();
        second.push(0x80 | 62);
        let mut input = frame(TYPE_HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 1, &first);
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 3, &second));

        let out = frames(&rewrite(&input).await.unwrap());
        let want = literals(&expected_fields(GOOD));
        let flags = FLAG_END_HEADERS | FLAG_END_STREAM;
        assert_eq!(
            out,
            vec![
                (TYPE_HEADERS, flags, 1, want.clone()),
                (TYPE_HEADERS, FLAG_END_HEADERS, 3, want),
            ]
        );
    }

    #[tokio::test]
    async fn authority_with_a_path_keeps_host_and_port() {
        for (sent, kept) in [
            (&b"http://127.0.0.31:2379/"[..], GOOD),
            (b"https://127.0.0.31:2379/a/b", GOOD),
            (b"127.0.0.31:2379", GOOD),
        ] {
            let mut block = PSEUDO.to_vec();
            block.push(0x41);
            block.extend(plain_literal(sent));
            let input = frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &block);
            let out = frames(&rewrite(&input).await.unwrap());
            assert_eq!(out[0].3, literals(&expected_fields(kept)));
        }
    }

    #[tokio::test]
    async fn large_block_is_split_into_continuations() {
        let big = vec![b'v'; 40_000];
        let mut block = PSEUDO.to_vec();
        block.push(0x41);
        block.extend(plain_literal(BAD));
        block.push(0x00);
        block.extend(plain_literal(b"x-big"));
        block.extend(plain_literal(&big));
        // Sent as PADDED + PRIORITY HEADERS, then two CONTINUATIONs, then DATA.
        let priority = [0x80, 0, 0, 0, 7, 200];
        let (a, rest) = block.split_at(1000);
        let (b, c) = rest.split_at(20_000);
        let mut payload = vec![3u8]; // pad length
        payload.extend_from_slice(&priority[1..]);
        payload.extend_from_slice(a);
        payload.extend_from_slice(&[0, 0, 0]);
        let flags = FLAG_PADDED | FLAG_PRIORITY | FLAG_END_STREAM;
        let mut input = frame(TYPE_HEADERS, flags, 5, &payload);
        input.extend(frame(TYPE_CONTINUATION, 0, 5, b));
        input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 5, c));
        let data = frame(0x0, 0, 5, b"after");
        input.extend(&data);

        let out = frames(&rewrite(&input).await.unwrap());
        let mut fields = expected_fields(GOOD);
        fields.push((b"x-big", &big));
        let want = literals(&fields);
        assert_eq!(out.len(), 4, "HEADERS, 2 x CONTINUATION, DATA");
        let (t, f, id, p) = &out[0];
        assert_eq!(
            (*t, *f, *id),
            (TYPE_HEADERS, FLAG_PRIORITY | FLAG_END_STREAM, 5)
        );
        assert_eq!(p.len(), FRAME_PAYLOAD_BYTES_MAX);
        assert_eq!(p[..PRIORITY_BYTES], priority[1..]);
        let mut got = p[PRIORITY_BYTES..].to_vec();
        for (i, (t, f, id, p)) in out[1..3].iter().enumerate() {
            let last = i == 1;
            assert_eq!((*t, *id), (TYPE_CONTINUATION, 5));
            assert_eq!(*f, if last { FLAG_END_HEADERS } else { 0 });
            assert!(p.len() <= FRAME_PAYLOAD_BYTES_MAX);
            if !last {
                assert_eq!(p.len(), FRAME_PAYLOAD_BYTES_MAX);
            }
            got.extend_from_slice(p);
        }
        assert_eq!(got, want);
        assert_eq!(out[3], frames(&data)[0]);
    }

    #[tokio::test]
    async fn oversized_blocks_close_the_connection() {
        // Encoded: CONTINUATIONs past the limit.
        let chunk = vec![0u8; FRAME_PAYLOAD_BYTES_MAX];
        let mut input = frame(TYPE_HEADERS, 0, 1, &PSEUDO);
        for _ in 0..=HEADER_BLOCK_BYTES_MAX / FRAME_PAYLOAD_BYTES_MAX {
            input.extend(frame(TYPE_CONTINUATION, 0, 1, &chunk));
        }
        let err = rewrite(&input).await.unwrap_err();
        assert!(matches!(
            err,
            RewriteError::HeaderBlockTooLarge { stream_id: 1 }
        ));

        // Decoded: a small block that refers many times to a 4000-byte table entry.
        let mut block = vec![0x40];
        block.extend(plain_literal(b"x-big"));
        block.extend(plain_literal(&[b'v'; 4000]));
        block.extend(std::iter::repeat_n(0x80 | 62, 300));
        let input = frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &block);
        let err = rewrite(&input).await.unwrap_err();
        assert!(matches!(
            err,
            RewriteError::HeaderBlockTooLarge { stream_id: 1 }
        ));
    }

    #[tokio::test]
    async fn broken_framing_closes_the_connection() {
        let mut input = frame(TYPE_HEADERS, 0, 1, &PSEUDO);
        input.extend(frame(0x0, 0, 1, b"data"));
        let err = rewrite(&input).await.unwrap_err();
        assert!(matches!(
            err,
            RewriteError::MissingContinuation {
                stream_id: 1,
                frame_type: 0,
                got_stream_id: 1
            }
        ));

        // Padding longer than the payload.
        let input = frame(TYPE_HEADERS, FLAG_END_HEADERS | FLAG_PADDED, 1, &[9, 0x82]);
        let err = rewrite(&input).await.unwrap_err();
        assert!(matches!(
            err,
            RewriteError::HeadersTooShort { stream_id: 1 }
        ));

        // An index past both tables.
        let input = frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0x80 | 70]);
        let err = rewrite(&input).await.unwrap_err();
        assert!(matches!(err, RewriteError::Hpack { stream_id: 1, .. }));

        // Truncated integers and strings.
        for block in [&[0x3f][..], &[0x7f, 0x80], &[0x41, 0x7f], &[0x41, 5, b'a']] {
            let input = frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, block);
            let err = rewrite(&input).await.unwrap_err();
            assert!(
                matches!(err, RewriteError::Hpack { stream_id: 1, .. }),
                "{block:?}"
            );
        }

        // The client stops in the middle of a frame.
        let input = frame(0x0, 0, 1, b"data");
        let err = rewrite(&input[..input.len() - 1]).await.unwrap_err();
        assert!(matches!(err, RewriteError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof));
    }

    /// A connected pair after the client sent `first`: the client's socket and what hyper
    /// would be handed.
    async fn connect(first: &[u8]) -> (TcpStream, Conn) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        client.write_all(first).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, wrap(server).await.unwrap())
    }

    async fn read_n(r: &mut (impl AsyncRead + Unpin), n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        tokio::time::timeout(std::time::Duration::from_secs(5), r.read_exact(&mut buf))
            .await
            .expect("timed out")
            .unwrap();
        buf
    }

    #[tokio::test]
    async fn http1_passes_through_untouched() {
        // Shorter than the preface, and the client keeps the connection open.
        let request = b"GET / HTTP/1.1\r\n\r\n";
        let (mut client, mut conn) = connect(request).await;
        assert_eq!(read_n(&mut conn, request.len()).await, request);

        client.write_all(b"more").await.unwrap();
        assert_eq!(read_n(&mut conn, 4).await, b"more");
        conn.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        assert_eq!(read_n(&mut client, 17).await, b"HTTP/1.1 200 OK\r\n");
    }

    #[tokio::test]
    async fn http2_is_rewritten_and_responses_pass_through() {
        let mut block = PSEUDO.to_vec();
        block.push(0x41);
        block.extend(plain_literal(BAD));
        let settings = frame(0x4, 0, 0, &[]);
        let headers = frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &block);
        let mut sent = PREFACE.to_vec();
        sent.extend(&settings);
        sent.extend(&headers);

        let (mut client, mut conn) = {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut client = TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            // The preface arrives in two pieces.
            client.write_all(&sent[..10]).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            let conn = tokio::spawn(wrap(server));
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            client.write_all(&sent[10..]).await.unwrap();
            (client, conn.await.unwrap().unwrap())
        };
        let rewritten = frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS,
            1,
            &literals(&expected_fields(GOOD)),
        );
        let mut want = PREFACE.to_vec();
        want.extend(settings);
        want.extend(&rewritten);
        assert_eq!(read_n(&mut conn, want.len()).await, want);

        conn.write_all(b"server bytes").await.unwrap();
        assert_eq!(read_n(&mut client, 12).await, b"server bytes");

        // The client closing its side ends the rewritten stream cleanly.
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn frames_are_forwarded_as_they_arrive() {
        // An h2 client that sends the preface and then waits must not stall on buffering.
        let (mut client, mut conn) = connect(PREFACE).await;
        assert_eq!(read_n(&mut conn, PREFACE.len()).await, PREFACE);
        let ping = frame(0x6, 0, 0, &[0; 8]);
        client.write_all(&ping).await.unwrap();
        assert_eq!(read_n(&mut conn, ping.len()).await, ping);
    }

    /// Decoders under random input (issue 16): any frames, any header blocks, are rewritten
    /// or refused with an error; never a panic, and never more output than the bounds allow.
    mod props {
        use proptest::prelude::*;

        use super::*;

        fn run(input: &[u8]) -> Result<Vec<u8>, RewriteError> {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime")
                .block_on(rewrite(input))
        }

        fn any_frame() -> impl Strategy<Value = Vec<u8>> {
            (
                prop_oneof![Just(TYPE_HEADERS), Just(TYPE_CONTINUATION), 0u8..=10],
                any::<u8>(),
                0u32..4,
                proptest::collection::vec(any::<u8>(), 0..300),
            )
                .prop_map(|(t, flags, id, payload)| frame(t, flags, id, &payload))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn random_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..1024)) {
                let _ = run(&input);
            }

            #[test]
            fn random_frames_never_panic(frames in proptest::collection::vec(any_frame(), 0..8)) {
                let input = frames.concat();
                if let Ok(out) = run(&input) {
                    // Rewritten blocks are literals: larger, but bounded by the block limit.
                    prop_assert!(out.len() <= input.len() * 4 + 8 * HEADER_BLOCK_BYTES_MAX);
                }
            }

            #[test]
            fn random_header_blocks_never_panic(
                block in proptest::collection::vec(any::<u8>(), 0..400),
                flags in any::<u8>(),
            ) {
                let mut b = PSEUDO.to_vec();
                b.extend_from_slice(&block);
                let _ = run(&frame(TYPE_HEADERS, flags | FLAG_END_HEADERS, 1, &b));
            }
        }
    }
}
