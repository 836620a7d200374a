//! A client connection's write side that sends a burst of responses in one write.
//!
//! hyper's HTTP/2 connection flushes after it writes the frames of each response it finds
//! ready. When the raft loop answers a batch of proposals, their request tasks wake one
//! after another, and the connection task (woken by the first) ran between them: one
//! `writev`, and over TLS one record, per response, about a fifth of a single member's CPU
//! under a put load (`perf`, docs/BENCHMARKS.md). [`Coalesce`] keeps what is written in a
//! buffer of at most [`COALESCE_BYTES_MAX`] and answers the first flush of a burst by
//! yielding once: the other ready tasks run, their responses join the buffer, and the next
//! flush writes them all. The delay is one turn of the scheduler, and only when there is
//! something to send.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes held before they are written without waiting for a flush.
pub const COALESCE_BYTES_MAX: usize = 64 * 1024;

#[derive(Debug)]
pub struct Coalesce<S> {
    inner: S,
    buf: Vec<u8>,
    /// Bytes of `buf` already written to `inner`.
    written: usize,
    /// True after the flush that yielded, until the buffer is written.
    yielded: bool,
}

impl<S> Coalesce<S> {
    pub fn new(inner: S) -> Coalesce<S> {
        Coalesce {
            inner,
            buf: Vec::new(),
            written: 0,
            yielded: false,
        }
    }
}

impl<S: AsyncWrite + Unpin> Coalesce<S> {
    /// Writes the whole buffer to `inner`.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.buf.clear();
        self.written = 0;
        // A buffer grown for one large burst does not stay that large.
        if self.buf.capacity() > COALESCE_BYTES_MAX {
            self.buf.shrink_to(COALESCE_BYTES_MAX);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesce<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if !this.buf.is_empty() && this.buf.len() + data.len() > COALESCE_BYTES_MAX {
            ready!(this.poll_drain(cx))?;
        }
        if data.len() >= COALESCE_BYTES_MAX {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if !this.buf.is_empty() && this.buf.len() + len > COALESCE_BYTES_MAX {
            ready!(this.poll_drain(cx))?;
        }
        if len >= COALESCE_BYTES_MAX {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            this.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.buf.len() > this.written && !this.yielded {
            // Let the other ready tasks add their responses first (a self-wake puts this
            // task behind them in the run queue).
            this.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(this.poll_drain(cx))?;
        this.yielded = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    /// Writes wait for a flush, the flush writes them together and in order, large writes
    /// pass through, and nothing is lost at shutdown.
    #[test]
    fn writes_are_held_until_a_flush_and_sent_together() {
        block_on(async {
            let (a, mut b) = tokio::io::duplex(1 << 20);
            let mut w = Coalesce::new(a);
            w.write_all(b"one ").await.expect("write");
            w.write_all(b"two ").await.expect("write");
            let mut got = [0u8; 8];
            let early =
                tokio::time::timeout(std::time::Duration::from_millis(20), b.read_exact(&mut got))
                    .await;
            assert!(early.is_err(), "nothing is sent before a flush");
            w.flush().await.expect("flush");
            b.read_exact(&mut got).await.expect("read");
            assert_eq!(&got, b"one two ");

            let big = vec![7u8; COALESCE_BYTES_MAX + 10];
            w.write_all(b"x").await.expect("write");
            w.write_all(&big).await.expect("write");
            w.write_all(b"y").await.expect("write");
            w.shutdown().await.expect("shutdown");
            let mut rest = Vec::new();
            b.read_to_end(&mut rest).await.expect("read");
            assert_eq!(rest.len(), big.len() + 2);
            assert_eq!((rest[0], rest[rest.len() - 1]), (b'x', b'y'));
            assert!(rest[1..rest.len() - 1].iter().all(|c| *c == 7));
        });
    }
}
