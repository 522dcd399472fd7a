//! A client connection as pingora reads it ([`GuardedStream`]): reads stop at the head cap, the head
//! deadline is armed while a head is read, a refused head is answered and the connection closed, and the
//! refusals pingora writes itself are counted.

use super::answer::raw_error;
use super::caps::ConnectionSlot;
use super::head::{HeadEvent, HeadScanner};
use crate::config::Limits;
use crate::error::{S3Error, S3ErrorCode};
use crate::server::Runtime;
use async_trait::async_trait;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType,
};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Requests pingora answered itself, before s3p saw them (a head it cannot parse: a NUL in a header,
/// two Content-Length headers, more than 256 headers, HTTP/0.9...): `/metrics`
/// `s3p_requests_rejected_by_pingora_total`. No audit line exists for them.
pub static REJECTED_BY_PINGORA: AtomicU64 = AtomicU64::new(0);

/// Whether a final response head is a refusal pingora wrote itself (only 4xx/5xx heads are looked at).
fn rejected_by_pingora(head: &[u8]) -> bool {
    matches!(head.get(9), Some(b'4' | b'5')) && !written_by_s3p(head)
}

/// Whether a response head was written by s3p: every answer of s3p's (its own, a backend's, an error)
/// carries `x-amz-request-id`; pingora's own refusals do not.
fn written_by_s3p(head: &[u8]) -> bool {
    let end = memchr::memmem::find(head, b"\r\n\r\n").unwrap_or(head.len());
    head[..end]
        .split(|b| *b == b'\n')
        .any(|line| line.len() > 17 && line[..17].eq_ignore_ascii_case(b"x-amz-request-id:"))
}

/// A client connection with its head limits and its place in the connection counts.
pub struct GuardedStream {
    inner: Stream,
    scanner: HeadScanner,
    header_timeout: Duration,
    /// Armed while a head is being read.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// An answer being written before the connection is closed.
    refusing: Option<(Vec<u8>, usize)>,
    /// The connection as pingora should see it when a PROXY header named the client.
    socket_digest: Option<Arc<pingora::protocols::SocketDigest>>,
    runtime: Arc<Runtime>,
    _slot: ConnectionSlot,
}

impl std::fmt::Debug for GuardedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedStream")
            .field("inner", &self.inner)
            .field("scanner", &self.scanner)
            .finish()
    }
}

impl GuardedStream {
    /// Wraps an admitted connection; its first head must arrive within `first_head_within` (the whole
    /// `header_timeout_ms`, or what a TLS handshake left of it).
    pub(super) fn new(
        inner: Stream,
        limits: &Limits,
        first_head_within: Duration,
        socket_digest: Option<Arc<pingora::protocols::SocketDigest>>,
        runtime: Arc<Runtime>,
        slot: ConnectionSlot,
    ) -> GuardedStream {
        GuardedStream {
            inner,
            scanner: HeadScanner::new(limits.max_header_bytes),
            header_timeout: Duration::from_millis(limits.header_timeout_ms),
            deadline: Some(Box::pin(tokio::time::sleep(first_head_within))),
            refusing: None,
            socket_digest,
            runtime,
            _slot: slot,
        }
    }

    fn refuse(&mut self, error: S3Error, limit: &'static str) {
        self.runtime.metrics.limit_hit(limit);
        self.refusing = Some((raw_error(error), 0));
    }

    /// Writes the pending refusal; ready with the error the read then fails with.
    fn poll_refusal(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Some((answer, written)) = self.refusing.as_mut() else {
            return Poll::Ready(io::Error::other("refused"));
        };
        while *written < answer.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &answer[*written..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => break,
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Pending => return Poll::Pending,
            }
        }
        let _ = Pin::new(&mut self.inner).poll_flush(cx);
        *written = answer.len();
        Poll::Ready(io::Error::new(
            io::ErrorKind::InvalidData,
            "request head refused by s3p",
        ))
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.refusing.is_some() {
            return this.poll_refusal(cx).map(Err);
        }
        if !this.scanner.in_head() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        // A later head's clock starts with its first byte; the first head's at the connection's start.
        let allowance = this.scanner.allowance().min(buf.remaining());
        let mut limited = buf.take(allowance);
        match Pin::new(&mut this.inner).poll_read(cx, &mut limited) {
            Poll::Ready(Ok(())) => {
                let n = limited.filled().len();
                let event = this.scanner.on_read(limited.filled());
                // SAFETY: `take` handed out the unfilled part of `buf`, and the inner read initialised
                // and filled its first `n` bytes.
                unsafe { buf.assume_init(n) };
                buf.advance(n);
                if n > 0 && this.deadline.is_none() && this.scanner.in_head() {
                    this.deadline = Some(Box::pin(tokio::time::sleep(this.header_timeout)));
                }
                match event {
                    HeadEvent::Complete => this.deadline = None,
                    HeadEvent::TooLarge => {
                        let e = S3Error::new(S3ErrorCode::RequestHeaderSectionTooLarge)
                            .detail("MaxSizeAllowed", this.scanner.cap.to_string());
                        this.refuse(e, "max_header_bytes");
                        return this.poll_refusal(cx).map(Err);
                    }
                    HeadEvent::Ok => {}
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if let Some(deadline) = this.deadline.as_mut() {
                    if deadline.as_mut().poll(cx).is_ready() {
                        if this.scanner.head_bytes() == 0 {
                            // Nothing of a request came: close without an answer.
                            this.runtime.metrics.limit_hit("header_timeout_ms");
                            return Poll::Ready(Err(io::Error::new(
                                io::ErrorKind::TimedOut,
                                "no request head in time",
                            )));
                        }
                        let e = S3Error::with_message(
                            S3ErrorCode::RequestTimeout,
                            "Your socket connection to the server was not read from or written to within the timeout period.",
                        );
                        this.refuse(e, "header_timeout_ms");
                        return this.poll_refusal(cx).map(Err);
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = poll {
            if n > 0 && this.scanner.on_write(&data[..n]) && rejected_by_pingora(&data[..n]) {
                REJECTED_BY_PINGORA.fetch_add(1, Ordering::Relaxed);
            }
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let (Poll::Ready(Ok(n)), Some(first)) = (&poll, bufs.first()) {
            let written = &first[..(*n).min(first.len())];
            if *n > 0 && this.scanner.on_write(written) && rejected_by_pingora(written) {
                REJECTED_BY_PINGORA.fetch_add(1, Ordering::Relaxed);
            }
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for GuardedStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for GuardedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for GuardedStream {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<pingora::protocols::ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for GuardedStream {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for GuardedStream {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for GuardedStream {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.socket_digest
            .clone()
            .or_else(|| self.inner.get_socket_digest())
    }
    fn set_socket_digest(&mut self, digest: pingora::protocols::SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for GuardedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_without_s3p_request_id_are_pingoras_own() {
        assert!(written_by_s3p(
            b"HTTP/1.1 200 OK\r\nx-amz-request-id: 0A\r\n\r\n"
        ));
        assert!(written_by_s3p(
            b"HTTP/1.1 400 Bad Request\r\nX-Amz-Request-Id: 0A\r\n\r\nbody"
        ));
        assert!(!written_by_s3p(
            b"HTTP/1.1 400 Bad Request\r\nServer: x\r\nContent-Length: 0\r\n\r\n"
        ));
        // A body that mentions the header does not count.
        assert!(!written_by_s3p(
            b"HTTP/1.1 400 Bad\r\n\r\nx-amz-request-id: 1\r\n"
        ));
        // s3p's own answers below pingora are s3p's.
        assert!(written_by_s3p(&raw_error(S3Error::slow_down(
            "Too many.",
            1
        ))));
        assert!(!rejected_by_pingora(&raw_error(S3Error::new(
            S3ErrorCode::RequestTimeout
        ))));
    }
}
