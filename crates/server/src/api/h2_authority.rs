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
//! socket and hyper. Server-to-client bytes go from hyper to the socket untouched. No task
//! and no pipe: the rewriter runs inside hyper's own reads ([`ClientReader`]), so it reads
//! the socket only when hyper asks for bytes, and a client is held back by hyper's pace
//! exactly as without the shim. Frame payloads that are not header blocks (DATA, SETTINGS,
//! WINDOW_UPDATE, ...) go to hyper straight from the read buffer or the socket.
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
//!   an `:authority` of the form `scheme://host:port[/...]` becomes `host:port`.
//!   Every block is decoded, so the mirror table always follows the client's. Blocks pass
//!   verbatim (hyper's own table follows the client's too) until the first block whose
//!   `:authority` needs the repair. From that block on, every block is encoded again as
//!   literals without indexing: hyper's table then stops changing and can never disagree
//!   with the indexes the client refers to, which name entries hyper never saw. A
//!   re-encoded block leaves as one HEADERS frame (END_STREAM and the priority fields kept,
//!   padding dropped) plus CONTINUATION frames, none over 16384 bytes (the default
//!   SETTINGS_MAX_FRAME_SIZE, which our hyper server does not raise). Clients that send a
//!   good authority (Go's over TLS never come here; etcdctl 3.5+, grpcio, Node's grpc-js)
//!   cost one decode per block and nothing else.
//!
//! A header block over [`HEADER_BLOCK_BYTES_MAX`] (encoded or decoded) or whose frames take
//! over `RAW_BLOCK_BYTES_MAX` (a flood of empty CONTINUATIONs), a frame that breaks the
//! framing rules above, or a block that does not decode closes the connection; the reason
//! is logged at debug level. Memory per connection: a 32 KiB read buffer, grown only while
//! one header block is assembled, and the output of one step.

use std::io::{self, Cursor};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

mod hpack;

use hpack::{Decoder, HpackError};
use tokio::io::{AsyncRead, AsyncReadExt, Chain, Join, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

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
/// Largest header block as sent (its frames, headers, padding and priority fields
/// included): a block of empty CONTINUATION frames is as much work as a large one.
const RAW_BLOCK_BYTES_MAX: usize = 2 * HEADER_BLOCK_BYTES_MAX;
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
/// came unless it starts with the HTTP/2 preface, in which case hyper reads the client's
/// frames through a [`Rewriter`], as hyper asks for them.
pub async fn wrap(mut stream: TcpStream) -> io::Result<Conn> {
    let seen = read_preface(&mut stream).await?;
    let peer = stream.peer_addr().ok();
    let (read, write) = stream.into_split();
    if seen != PREFACE {
        let verbatim = Inner::Verbatim(Cursor::new(seen).chain(read));
        return Ok(tokio::io::join(ClientReader(verbatim), write));
    }
    let frames = Frames {
        socket: read,
        peer,
        input: vec![0; READ_BUFFER_BYTES],
        start: 0,
        end: 0,
        need: 0,
        out: PREFACE.to_vec(),
        out_pos: 0,
        rewriter: Rewriter::new(),
        ended: false,
    };
    Ok(tokio::io::join(
        ClientReader(Inner::Rewritten(Box::new(frames))),
        write,
    ))
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
    /// HTTP/2: the client's frames, through the rewriter.
    Rewritten(Box<Frames>),
}

impl AsyncRead for ClientReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Inner::Verbatim(r) => Pin::new(r).poll_read(cx, buf),
            Inner::Rewritten(frames) => frames.poll_read(cx, buf),
        }
    }
}

/// The read side of an HTTP/2 plaintext connection: socket bytes in, the rewriter's
/// output to hyper. It reads the socket only when hyper asks for bytes and the rewriter
/// needs more, so the client is held back by hyper's pace, as without the shim.
struct Frames {
    socket: OwnedReadHalf,
    /// For the debug log line when the connection is closed for a framing error.
    peer: Option<std::net::SocketAddr>,
    /// Read from the socket: `input[start..end]` is not yet consumed by the rewriter.
    /// [`READ_BUFFER_BYTES`] long, longer only while a large header block is assembled.
    input: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes the rewriter said it needs in `input[start..end]` before its next step.
    need: usize,
    /// Rewriter output not yet read by hyper: `out[out_pos..]`. Starts with the preface.
    out: Vec<u8>,
    out_pos: usize,
    rewriter: Rewriter,
    /// The client closed its side, or sent what closes the connection: hyper reads the
    /// rest of `out`, then end-of-stream, and ends the connection.
    ended: bool,
}

impl Frames {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.out_pos < self.out.len() {
                let n = buf.remaining().min(self.out.len() - self.out_pos);
                buf.put_slice(&self.out[self.out_pos..self.out_pos + n]);
                self.out_pos += n;
                if self.out_pos == self.out.len() {
                    self.out.clear();
                    self.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if self.ended || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            // A frame's payload (not a header block) goes to hyper without a stop in `out`:
            // from what was read already, else straight from the socket.
            let passthrough = self.rewriter.passthrough;
            if passthrough > 0 {
                let buffered = self.end - self.start;
                let n = if buffered > 0 {
                    let n = passthrough.min(buffered).min(buf.remaining());
                    buf.put_slice(&self.input[self.start..self.start + n]);
                    self.start += n;
                    n
                } else {
                    let limit = passthrough.min(buf.remaining());
                    let mut direct = ReadBuf::new(buf.initialize_unfilled_to(limit));
                    if let Err(e) = ready!(Pin::new(&mut self.socket).poll_read(cx, &mut direct)) {
                        self.fail(&RewriteError::Io(e));
                        continue;
                    }
                    let n = direct.filled().len();
                    if n == 0 {
                        self.fail(&RewriteError::Io(io::ErrorKind::UnexpectedEof.into()));
                        continue;
                    }
                    buf.advance(n);
                    n
                };
                self.rewriter.passthrough -= n;
                return Poll::Ready(Ok(()));
            }
            if self.end - self.start >= self.need {
                match self
                    .rewriter
                    .step(&self.input[self.start..self.end], &mut self.out)
                {
                    Ok(Step::Consumed(n)) => {
                        self.start += n;
                        self.need = 0;
                        continue;
                    }
                    Ok(Step::NeedMore(need)) => self.need = need,
                    Err(e) => {
                        self.fail(&e);
                        continue;
                    }
                }
            }
            self.make_room();
            let mut spare = ReadBuf::new(&mut self.input[self.end..]);
            if let Err(e) = ready!(Pin::new(&mut self.socket).poll_read(cx, &mut spare)) {
                self.fail(&RewriteError::Io(e));
                continue;
            }
            let n = spare.filled().len();
            if n == 0 {
                if self.start == self.end && self.rewriter.between_frames() {
                    self.ended = true;
                } else {
                    self.fail(&RewriteError::Io(io::ErrorKind::UnexpectedEof.into()));
                }
                continue;
            }
            self.end += n;
        }
    }

    /// Moves the unconsumed bytes to the front and sizes `input` for the rewriter's next
    /// step (at most a frame of a header block, so bounded by [`RAW_BLOCK_BYTES_MAX`]).
    fn make_room(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.input.len() > READ_BUFFER_BYTES {
                self.input.truncate(READ_BUFFER_BYTES);
                self.input.shrink_to_fit();
            }
        }
        if self.end == self.input.len() || self.start + self.need > self.input.len() {
            self.input.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.need > self.input.len() {
            self.input.resize(self.need, 0);
        }
    }

    fn fail(&mut self, e: &RewriteError) {
        match self.peer {
            Some(peer) => tracing::debug!("closing HTTP/2 connection from {peer}: {e}"),
            None => tracing::debug!("closing HTTP/2 connection: {e}"),
        }
        self.ended = true;
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

/// A header block whose CONTINUATION frames are still to come.
struct PendingBlock {
    block: HeaderBlock,
    /// Its frames as they came, kept while blocks still pass unchanged.
    raw: Vec<u8>,
    /// How many bytes its frames took, kept or not.
    raw_bytes: usize,
}

/// What [`Rewriter::step`] did with the bytes it was given.
#[derive(Debug, PartialEq)]
enum Step {
    /// Consumed this many bytes (at least one), and appended any output.
    Consumed(usize),
    /// Needs at least this many bytes before it can go on.
    NeedMore(usize),
}

/// The frame rewriter, without I/O (see the module doc): fed the client's bytes, it
/// consumes whole frame headers and whole header-block frames, and appends to `out` what
/// hyper must read.
struct Rewriter {
    /// Mirrors the client's HPACK dynamic table.
    decoder: Decoder,
    /// Payload bytes of the current frame (not part of a header block) still to pass on
    /// as they are.
    passthrough: usize,
    pending: Option<PendingBlock>,
    /// Set by the first block that needed a change; from then on every block is
    /// re-encoded, since hyper's HPACK table no longer follows the client's.
    rewrite_all: bool,
    encoded: Vec<u8>,
}

impl Rewriter {
    fn new() -> Rewriter {
        Rewriter {
            decoder: Decoder::new(HEADER_TABLE_BYTES_MAX),
            passthrough: 0,
            pending: None,
            rewrite_all: false,
            encoded: Vec::new(),
        }
    }

    /// Whether the stream may end here: no frame or header block is half received.
    fn between_frames(&self) -> bool {
        self.passthrough == 0 && self.pending.is_none()
    }

    fn step(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Step, RewriteError> {
        if self.passthrough > 0 {
            let n = self.passthrough.min(input.len());
            if n == 0 {
                return Ok(Step::NeedMore(1));
            }
            out.extend_from_slice(&input[..n]);
            self.passthrough -= n;
            return Ok(Step::Consumed(n));
        }
        let Some(raw_head) = input.first_chunk::<FRAME_HEADER_BYTES>() else {
            return Ok(Step::NeedMore(FRAME_HEADER_BYTES));
        };
        let head = FrameHeader::parse(raw_head);
        let Some(pending) = &mut self.pending else {
            if head.frame_type != TYPE_HEADERS {
                out.extend_from_slice(raw_head);
                self.passthrough = head.length;
                return Ok(Step::Consumed(FRAME_HEADER_BYTES));
            }
            let stream_id = head.stream_id;
            if head.length > HEADER_BLOCK_BYTES_MAX {
                return Err(RewriteError::HeaderBlockTooLarge { stream_id });
            }
            let frame_bytes = FRAME_HEADER_BYTES + head.length;
            let Some(frame) = input.get(..frame_bytes) else {
                return Ok(Step::NeedMore(frame_bytes));
            };
            let (priority, fragment) =
                split_headers_payload(&frame[FRAME_HEADER_BYTES..], head.flags)
                    .ok_or(RewriteError::HeadersTooShort { stream_id })?;
            let pending = PendingBlock {
                block: HeaderBlock {
                    stream_id,
                    end_stream: head.flags & FLAG_END_STREAM != 0,
                    priority,
                    fragment: fragment.to_vec(),
                },
                raw: if self.rewrite_all {
                    Vec::new()
                } else {
                    frame.to_vec()
                },
                raw_bytes: frame_bytes,
            };
            if head.flags & FLAG_END_HEADERS != 0 {
                self.finish(pending, out)?;
            } else {
                self.pending = Some(pending);
            }
            return Ok(Step::Consumed(frame_bytes));
        };
        let stream_id = pending.block.stream_id;
        if head.frame_type != TYPE_CONTINUATION || head.stream_id != stream_id {
            return Err(RewriteError::MissingContinuation {
                stream_id,
                frame_type: head.frame_type,
                got_stream_id: head.stream_id,
            });
        }
        let frame_bytes = FRAME_HEADER_BYTES + head.length;
        if pending.block.fragment.len() + head.length > HEADER_BLOCK_BYTES_MAX
            || pending.raw_bytes + frame_bytes > RAW_BLOCK_BYTES_MAX
        {
            return Err(RewriteError::HeaderBlockTooLarge { stream_id });
        }
        let Some(frame) = input.get(..frame_bytes) else {
            return Ok(Step::NeedMore(frame_bytes));
        };
        pending
            .block
            .fragment
            .extend_from_slice(&frame[FRAME_HEADER_BYTES..]);
        pending.raw_bytes += frame_bytes;
        if !self.rewrite_all {
            pending.raw.extend_from_slice(frame);
        }
        if head.flags & FLAG_END_HEADERS != 0 {
            if let Some(pending) = self.pending.take() {
                self.finish(pending, out)?;
            }
        }
        Ok(Step::Consumed(frame_bytes))
    }

    /// Decodes a whole block (which keeps the decoder's table in step with the client's)
    /// and passes it on: as it came while no block has needed a change, re-encoded from
    /// the first one that does.
    fn finish(&mut self, pending: PendingBlock, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        self.encoded.clear();
        let changed = reencode(&mut self.decoder, &pending.block, &mut self.encoded)?;
        if changed || self.rewrite_all {
            self.rewrite_all = true;
            push_header_frames(&pending.block, &self.encoded, out);
        } else {
            out.extend_from_slice(&pending.raw);
        }
        Ok(())
    }
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
/// without indexing (RFC 7541 §6.2.2), with the `:authority` repaired. True if the
/// `:authority` needed the repair.
fn reencode(
    decoder: &mut Decoder,
    block: &HeaderBlock,
    out: &mut Vec<u8>,
) -> Result<bool, RewriteError> {
    let stream_id = block.stream_id;
    let mut list_bytes = 0usize;
    let mut changed = false;
    decoder
        .decode(&block.fragment, HEADER_BLOCK_BYTES_MAX, |name, value| {
            // RFC 7541 §4.1: the size of a field is its name and value plus 32.
            list_bytes += name.len() + value.len() + 32;
            if list_bytes > HEADER_BLOCK_BYTES_MAX {
                return;
            }
            let value = match name {
                b":authority" => {
                    let repaired = authority_without_scheme(value);
                    changed |= repaired.len() != value.len();
                    repaired
                }
                _ => value,
            };
            push_literal(name, value, out);
        })
        .map_err(|source| RewriteError::Hpack { stream_id, source })?;
    if list_bytes > HEADER_BLOCK_BYTES_MAX {
        return Err(RewriteError::HeaderBlockTooLarge { stream_id });
    }
    Ok(changed)
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
    use tokio::io::AsyncWriteExt as _;

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

    /// Runs the rewriter over the whole of `input`, as the client's whole stream.
    fn rewrite(input: &[u8]) -> Result<Vec<u8>, RewriteError> {
        let mut rewriter = Rewriter::new();
        let mut out = Vec::new();
        let mut at = 0;
        while at < input.len() {
            match rewriter.step(&input[at..], &mut out)? {
                Step::Consumed(n) => at += n,
                Step::NeedMore(_) => break,
            }
        }
        if at < input.len() || !rewriter.between_frames() {
            return Err(RewriteError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(out)
    }

    #[tokio::test]
    async fn bad_authority_is_rewritten() {
        // `:authority` as a literal with incremental indexing, name from static index 1.
        let mut block = PSEUDO.to_vec();
        block.push(0x41);
        block.extend(plain_literal(BAD));
        let input = frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &block);

        let out = frames(&rewrite(&input).unwrap());
        let want = literals(&expected_fields(GOOD));
        assert_eq!(out, vec![(TYPE_HEADERS, FLAG_END_HEADERS, 1, want)]);
    }

    #[test]
    fn good_blocks_and_other_frames_pass_as_they_came() {
        // A good `:authority` added to the client's table, then referred to by its index:
        // hyper's table follows the client's, so both blocks go as they came.
        let mut first = PSEUDO.to_vec();
        first.push(0x41);
        first.extend(plain_literal(GOOD));
        let second = [0x83, 0x86, 0x84, 0x80 | 62];
        let settings = frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]);
        let data = frame(0x0, FLAG_END_STREAM, 1, b"grpc message");
        let mut input = settings;
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &first));
        input.extend(&data);
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 3, &second));

        assert_eq!(rewrite(&input).unwrap(), input);
    }

    #[test]
    fn after_the_first_bad_block_every_block_is_rewritten() {
        // Good (indexed by the client as 62), bad (indexed as 62, the good one moves to
        // 63), then a block that refers to the good one by index: hyper never saw the bad
        // one enter its table, so that index must not reach it.
        let mut good = PSEUDO.to_vec();
        good.push(0x41);
        good.extend(plain_literal(GOOD));
        let mut bad = PSEUDO.to_vec();
        bad.push(0x41);
        bad.extend(plain_literal(BAD));
        let by_index = [0x83, 0x86, 0x84, 0x80 | 63];
        let good_frame = frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &good);
        let mut input = good_frame.clone();
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 3, &bad));
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 5, &by_index));

        let out = rewrite(&input).unwrap();
        let (first, rest) = out.split_at(good_frame.len());
        assert_eq!(first, good_frame);
        let want = literals(&expected_fields(GOOD));
        assert_eq!(
            frames(rest),
            vec![
                (TYPE_HEADERS, FLAG_END_HEADERS, 3, want.clone()),
                (TYPE_HEADERS, FLAG_END_HEADERS, 5, want),
            ]
        );
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

        let out = frames(&rewrite(&input).unwrap());
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
        for sent in [
            &b"http://127.0.0.31:2379/"[..],
            b"https://127.0.0.31:2379/a/b",
        ] {
            let mut block = PSEUDO.to_vec();
            block.push(0x41);
            block.extend(plain_literal(sent));
            let input = frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &block);
            let out = frames(&rewrite(&input).unwrap());
            assert_eq!(out[0].3, literals(&expected_fields(GOOD)));
        }
        // A good one needs no repair: the block goes as it came.
        let mut block = PSEUDO.to_vec();
        block.push(0x41);
        block.extend(plain_literal(GOOD));
        let input = frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &block);
        assert_eq!(rewrite(&input).unwrap(), input);
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

        let out = frames(&rewrite(&input).unwrap());
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
        let err = rewrite(&input).unwrap_err();
        assert!(matches!(
            err,
            RewriteError::HeaderBlockTooLarge { stream_id: 1 }
        ));

        // Frames: empty CONTINUATIONs, each costing only its 9-byte header.
        let mut input = frame(TYPE_HEADERS, 0, 1, &PSEUDO);
        for _ in 0..=RAW_BLOCK_BYTES_MAX / FRAME_HEADER_BYTES {
            input.extend(frame(TYPE_CONTINUATION, 0, 1, &[]));
        }
        let err = rewrite(&input).unwrap_err();
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
        let err = rewrite(&input).unwrap_err();
        assert!(matches!(
            err,
            RewriteError::HeaderBlockTooLarge { stream_id: 1 }
        ));
    }

    #[tokio::test]
    async fn broken_framing_closes_the_connection() {
        let mut input = frame(TYPE_HEADERS, 0, 1, &PSEUDO);
        input.extend(frame(0x0, 0, 1, b"data"));
        let err = rewrite(&input).unwrap_err();
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
        let err = rewrite(&input).unwrap_err();
        assert!(matches!(
            err,
            RewriteError::HeadersTooShort { stream_id: 1 }
        ));

        // An index past both tables.
        let input = frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0x80 | 70]);
        let err = rewrite(&input).unwrap_err();
        assert!(matches!(err, RewriteError::Hpack { stream_id: 1, .. }));

        // Truncated integers and strings.
        for block in [&[0x3f][..], &[0x7f, 0x80], &[0x41, 0x7f], &[0x41, 5, b'a']] {
            let input = frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, block);
            let err = rewrite(&input).unwrap_err();
            assert!(
                matches!(err, RewriteError::Hpack { stream_id: 1, .. }),
                "{block:?}"
            );
        }

        // The client stops in the middle of a frame.
        let input = frame(0x0, 0, 1, b"data");
        let err = rewrite(&input[..input.len() - 1]).unwrap_err();
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
    async fn frames_split_anywhere_come_out_whole() {
        // A bad block in CONTINUATIONs, a DATA frame larger than the read buffer, a good
        // block: written a few bytes at a time, read by hyper a few bytes at a time.
        let mut block = PSEUDO.to_vec();
        block.push(0x41);
        block.extend(plain_literal(BAD));
        let (a, b) = block.split_at(2);
        let mut sent = PREFACE.to_vec();
        sent.extend(frame(TYPE_HEADERS, 0, 1, a));
        sent.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, b));
        let payload: Vec<u8> = (0..READ_BUFFER_BYTES * 3 + 7).map(|i| i as u8).collect();
        let data = frame(0x0, FLAG_END_STREAM, 1, &payload);
        sent.extend(&data);
        // `wrap` returns once it has the preface; the frames after it come in pieces.
        let first = PREFACE.len() + 5;
        let (mut client, mut conn) = connect(&sent[..first]).await;
        let writer = tokio::spawn(async move {
            for chunk in sent[first..].chunks(1000) {
                client.write_all(chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
            client
        });
        let mut want = PREFACE.to_vec();
        want.extend(frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS,
            1,
            &literals(&expected_fields(GOOD)),
        ));
        want.extend(&data);
        let mut got = Vec::new();
        let mut small = [0u8; 777];
        while got.len() < want.len() {
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), conn.read(&mut small))
                .await
                .expect("timed out")
                .unwrap();
            assert!(n > 0, "ended after {} bytes", got.len());
            got.extend_from_slice(&small[..n]);
        }
        assert_eq!(got, want);
        writer.await.unwrap();
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
            rewrite(input)
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
