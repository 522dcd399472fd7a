//! Limits on client connections, before any request is parsed: how many connections in all and per
//! client address, how long a request head may take to arrive, and how many bytes of it s3p buffers.
//!
//! pingora reads a request head with a per-read timeout (a byte every few seconds keeps a connection for
//! ever) and buffers up to 1 MiB of it before s3p sees anything. So s3p wraps pingora's HTTP application
//! ([`GuardedApp`]) and each client connection ([`GuardedStream`]):
//! - at the first request of a connection, the global and per-client connection counts are taken (a
//!   connection over either cap gets a 503 SlowDown and is closed);
//! - while a request head is being read, reads stop at `max_header_bytes` plus a small slack (never more
//!   is buffered) and the whole head must arrive within `header_timeout_ms`, counted from the connection's
//!   start for its first request and from the first byte for later ones; past either, s3p answers 400
//!   (`RequestHeaderSectionTooLarge` / `RequestTimeout`) itself and closes.
//!
//! A head ends at the first empty line; the next head starts once s3p has begun a final (non-1xx)
//! response. [`HeadScanner`] is that bookkeeping, pure and tested alone.

use crate::client_addr::{client_network, is_trusted};
use crate::error::{S3Error, S3ErrorCode};
use crate::proxy_protocol::{Parse, ProxyHeader};
use crate::server::Runtime;
use crate::state::SharedState;
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType,
};
use pingora::server::ShutdownWatch;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes read past `max_header_bytes` before a head is refused: s3p's own check then answers the
/// common case (a head a little too large) from within the request, with its request id and audit line.
const HEAD_SLACK: usize = 1024;

/// Where a connection stands in reading request heads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadState {
    /// Reading a head: bytes so far, and whether the bytes read end with `\n` or `\n\r` (an empty
    /// line may be split across reads).
    Head { bytes: usize, tail: Tail },
    /// The head is complete; what follows is a body or the next, pipelined request, until s3p starts
    /// a final response.
    Passthrough,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    Other,
    Newline,
    NewlineReturn,
}

/// What a read did to the head being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadEvent {
    /// Not in a head, or the head goes on within its cap.
    Ok,
    /// This read completed the head.
    Complete,
    /// The head grew past its cap without ending.
    TooLarge,
}

/// The pure bookkeeping of request heads on one connection.
#[derive(Debug, Clone)]
pub struct HeadScanner {
    pub cap: usize,
    pub state: HeadState,
}

impl HeadScanner {
    pub fn new(cap: usize) -> HeadScanner {
        HeadScanner {
            cap,
            state: HeadState::Head {
                bytes: 0,
                tail: Tail::Other,
            },
        }
    }

    /// How many bytes the next read may take: in a head, no more than the cap plus slack allows.
    pub fn allowance(&self) -> usize {
        match self.state {
            HeadState::Head { bytes, .. } => (self.cap + HEAD_SLACK).saturating_sub(bytes),
            HeadState::Passthrough => usize::MAX,
        }
    }

    pub fn in_head(&self) -> bool {
        matches!(self.state, HeadState::Head { .. })
    }

    /// Bytes of the current head read so far (0 outside a head).
    pub fn head_bytes(&self) -> usize {
        match self.state {
            HeadState::Head { bytes, .. } => bytes,
            HeadState::Passthrough => 0,
        }
    }

    /// Accounts for bytes read from the client.
    pub fn on_read(&mut self, data: &[u8]) -> HeadEvent {
        let HeadState::Head { bytes, mut tail } = self.state else {
            return HeadEvent::Ok;
        };
        // A head ends at an empty line: `\n\n` or `\n\r\n` (httparse accepts bare LF line ends too).
        // Only line ends need a look: each `\n` is checked against the one or two bytes before it
        // (from this read, or the tail of the previous one).
        let mut last_newline = None;
        for i in memchr::memchr_iter(b'\n', data) {
            let before = match i {
                0 => tail,
                1 if data[0] == b'\r' => match tail {
                    Tail::Newline => Tail::NewlineReturn,
                    _ => Tail::Other,
                },
                _ if data[i - 1] == b'\n' => Tail::Newline,
                _ if i >= 2 && data[i - 1] == b'\r' && data[i - 2] == b'\n' => Tail::NewlineReturn,
                _ => Tail::Other,
            };
            if before != Tail::Other {
                if bytes + i + 1 > self.cap + HEAD_SLACK {
                    return HeadEvent::TooLarge;
                }
                self.state = HeadState::Passthrough;
                return HeadEvent::Complete;
            }
            last_newline = Some(i);
        }
        tail = match (data.len(), last_newline) {
            (0, _) => tail,
            (n, Some(i)) if i == n - 1 => Tail::Newline,
            (n, Some(i)) if i + 2 == n && data[n - 1] == b'\r' => Tail::NewlineReturn,
            (1, None) if data[0] == b'\r' && tail == Tail::Newline => Tail::NewlineReturn,
            _ => Tail::Other,
        };
        let bytes = bytes + data.len();
        self.state = HeadState::Head { bytes, tail };
        if bytes > self.cap {
            HeadEvent::TooLarge
        } else {
            HeadEvent::Ok
        }
    }

    /// Accounts for bytes written to the client: the start of a final response means the next bytes
    /// read begin a new head. (Interim `100 Continue` answers come before a request body.) Returns
    /// whether `data` starts a final response.
    pub fn on_write(&mut self, data: &[u8]) -> bool {
        if self.state == HeadState::Passthrough
            && data.starts_with(b"HTTP/1.")
            && data.get(9).is_some_and(|c| *c != b'1')
        {
            self.state = HeadState::Head {
                bytes: 0,
                tail: Tail::Other,
            };
            return true;
        }
        false
    }
}

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

/// Open client connections, in all and per client network.
#[derive(Default)]
pub struct ConnectionLimits {
    total: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
}

/// A connection's place in the counts; dropped with the connection.
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    client: Option<IpAddr>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.limits.total.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.client {
            let mut map = self.limits.per_client.lock().unwrap();
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionRefusal {
    Total,
    PerClient,
}

impl ConnectionLimits {
    /// Takes a place for a connection from `client` (`None`: counted only in the total, as for a trusted
    /// proxy, which carries many clients).
    pub fn enter(
        self: &Arc<Self>,
        client: Option<IpAddr>,
        max_total: usize,
        max_per_client: usize,
    ) -> Result<ConnectionSlot, ConnectionRefusal> {
        if self.total.fetch_add(1, Ordering::Relaxed) >= max_total {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(ConnectionRefusal::Total);
        }
        let client = client.map(client_network);
        if let Some(ip) = client {
            let mut map = self.per_client.lock().unwrap();
            let n = map.entry(ip).or_default();
            if *n >= max_per_client {
                drop(map);
                self.total.fetch_sub(1, Ordering::Relaxed);
                return Err(ConnectionRefusal::PerClient);
            }
            *n += 1;
        }
        Ok(ConnectionSlot {
            limits: self.clone(),
            client,
        })
    }

    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

/// A complete HTTP/1.1 answer with S3 error XML that closes the connection, written by s3p below
/// pingora (no request exists yet).
fn raw_error(error: S3Error) -> Vec<u8> {
    let request_id = format!("{:016X}", rand::random::<u64>());
    let body = crate::xml::error(&error, &request_id);
    let reason = match error.status() {
        400 => "Bad Request",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let retry = error
        .retry_after_s
        .map(|s| format!("Retry-After: {s}\r\n"))
        .unwrap_or_default();
    format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nx-amz-request-id: {request_id}\r\n{retry}Connection: close\r\n\r\n{body}",
        error.status(),
        body.len()
    )
    .into_bytes()
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

/// TLS connections between accept and their first request. pingora runs the TLS handshake before any
/// application sees the connection, with its own 60 s timeout and outside every count; so s3p hooks in
/// before the handshake (pingora's pre-TLS callback, [`TlsGuard`]): there it reads a PROXY header
/// (`proxy_protocol: required`, trusted proxies only), takes the connection's place in the connection
/// counts, and arms a deadline of `header_timeout_ms` from accept. [`GuardedApp`] takes the place and
/// what is left of the deadline over once the handshake is done, so the handshake and the first request
/// head share one deadline. A connection still in its handshake at the deadline is shut down (through a
/// duplicate of its socket, so that a number reused by a later connection is never touched), and one
/// whose handshake failed holds its place until then at most.
#[derive(Default)]
pub struct Handshakes {
    pending: Mutex<HashMap<std::os::fd::RawFd, PendingHandshake>>,
    next_token: AtomicU64,
}

struct PendingHandshake {
    /// Tells this entry from a later one for the same socket number.
    token: u64,
    slot: ConnectionSlot,
    accepted: std::time::Instant,
    /// Tells the watchdog the connection was taken over.
    taken: tokio::sync::oneshot::Sender<()>,
}

impl Handshakes {
    /// The place and accept time of a connection whose handshake is done (`fd`: its socket).
    fn take_over(&self, fd: std::os::fd::RawFd) -> Option<(ConnectionSlot, std::time::Instant)> {
        let pending = self.pending.lock().unwrap().remove(&fd)?;
        let _ = pending.taken.send(());
        Some((pending.slot, pending.accepted))
    }
}

/// s3p's pre-TLS step of every TLS connection (see [`Handshakes`]).
pub struct TlsGuard {
    pub state: SharedState,
    pub runtime: Arc<Runtime>,
    pub connections: Arc<ConnectionLimits>,
    pub handshakes: Arc<Handshakes>,
}

#[async_trait]
impl pingora::listeners::PreTlsProcess for TlsGuard {
    async fn process(
        &self,
        stream: &mut pingora::protocols::l4::stream::Stream,
    ) -> pingora::Result<()> {
        use std::os::fd::AsRawFd;
        let refused =
            |why: &'static str| pingora::Error::explain(pingora::ErrorType::AcceptError, why);
        let accepted = std::time::Instant::now();
        let state = self.state.load_full();
        let limits = &state.config.limits;
        let deadline = Duration::from_millis(limits.header_timeout_ms);
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let mut client = peer;
        if state.config.proxy_protocol {
            let trusted = peer.is_some_and(|ip| is_trusted(&state.config.trusted_proxies, ip));
            let header = if trusted {
                tokio::time::timeout(deadline, read_proxy_header(stream)).await
            } else {
                Ok(Err(()))
            };
            match header {
                Ok(Ok(ProxyHeader::Client(addr))) => {
                    // The connection as pingora (and s3p's limits and audit) will see it.
                    let local = stream
                        .get_socket_digest()
                        .and_then(|d| d.local_addr().cloned());
                    stream.set_socket_digest(proxied_digest(stream.as_raw_fd(), addr, local));
                    client = Some(addr.ip());
                }
                Ok(Ok(ProxyHeader::Unknown)) => {}
                _ => {
                    self.runtime.metrics.limit_hit("proxy_protocol");
                    return Err(refused("no valid PROXY header"));
                }
            }
        }
        // A trusted proxy carries many clients: counted only in the total.
        let client = client.filter(|ip| !is_trusted(&state.config.trusted_proxies, *ip));
        let slot = match self.connections.enter(
            client,
            limits.max_connections,
            limits.max_connections_per_client,
        ) {
            Ok(slot) => slot,
            // No answer is possible before the handshake: the connection is closed.
            Err(ConnectionRefusal::Total) => {
                self.runtime.metrics.limit_hit("max_connections");
                return Err(refused("too many connections"));
            }
            Err(ConnectionRefusal::PerClient) => {
                self.runtime.metrics.limit_hit("max_connections_per_client");
                return Err(refused("too many connections from this client"));
            }
        };
        let fd = stream.as_raw_fd();
        // SAFETY: `fd` is the socket of `stream`, open for the duration of this call; the duplicate is a
        // new descriptor of the same socket, owned here.
        let socket = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
            .try_clone_to_owned()
            .map_err(|_| refused("cannot watch the handshake"))?;
        let token = self.handshakes.next_token.fetch_add(1, Ordering::Relaxed);
        let (taken, watch) = tokio::sync::oneshot::channel();
        self.handshakes.pending.lock().unwrap().insert(
            fd,
            PendingHandshake {
                token,
                slot,
                accepted,
                taken,
            },
        );
        let handshakes = self.handshakes.clone();
        let runtime = self.runtime.clone();
        tokio::spawn(async move {
            tokio::select! {
                // Taken over (or replaced by a later connection on the same socket number, after this
                // one's handshake failed and pingora closed it).
                _ = watch => {}
                _ = tokio::time::sleep(deadline.saturating_sub(accepted.elapsed())) => {
                    let expired = {
                        let mut pending = handshakes.pending.lock().unwrap();
                        match pending.get(&fd) {
                            Some(p) if p.token == token => pending.remove(&fd),
                            _ => None,
                        }
                    };
                    if expired.is_some() {
                        runtime.metrics.limit_hit("header_timeout_ms");
                        let _ = std::net::TcpStream::from(socket).shutdown(std::net::Shutdown::Both);
                    }
                }
            }
        });
        Ok(())
    }
}

/// pingora's HTTP application behind s3p's connection limits.
pub struct GuardedApp<A> {
    pub inner: Arc<A>,
    pub state: SharedState,
    pub runtime: Arc<Runtime>,
    pub connections: Arc<ConnectionLimits>,
    /// TLS connections counted (and timed) since before their handshake, by [`TlsGuard`].
    pub handshakes: Arc<Handshakes>,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for GuardedApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // Always a new connection: `serve` runs a connection's later requests itself and never hands
        // the stream back.
        let state = self.state.load_full();
        let limits = &state.config.limits;
        let mut stream = stream;
        let header_timeout = Duration::from_millis(limits.header_timeout_ms);
        // A TLS connection was counted, and its clock started, before its handshake (TlsGuard).
        if stream.get_ssl_digest().is_some() {
            if let Some((slot, accepted)) = self.handshakes.take_over(stream.id()) {
                let guarded = GuardedStream {
                    inner: stream,
                    scanner: HeadScanner::new(limits.max_header_bytes),
                    header_timeout,
                    deadline: Some(Box::pin(tokio::time::sleep(
                        header_timeout.saturating_sub(accepted.elapsed()),
                    ))),
                    refusing: None,
                    socket_digest: None,
                    runtime: self.runtime.clone(),
                    _slot: slot,
                };
                drop(state);
                self.serve(Box::new(guarded), shutdown).await;
                return None;
            }
        }
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        // On a PROXY protocol listener, the header names the client; only trusted proxies may send it.
        let mut proxied = None;
        if state.config.proxy_protocol && stream.get_ssl_digest().is_none() {
            let trusted = peer.is_some_and(|ip| is_trusted(&state.config.trusted_proxies, ip));
            let header = if trusted {
                let deadline = Duration::from_millis(limits.header_timeout_ms);
                tokio::time::timeout(deadline, read_proxy_header(&mut stream)).await
            } else {
                Ok(Err(()))
            };
            match header {
                Ok(Ok(ProxyHeader::Client(addr))) => proxied = Some(addr),
                Ok(Ok(ProxyHeader::Unknown)) => {}
                _ => {
                    self.runtime.metrics.limit_hit("proxy_protocol");
                    log::debug!("connection from {peer:?} without a valid PROXY header: closed");
                    return None;
                }
            }
        }
        // A trusted proxy carries many clients: counted only in the total.
        let client = proxied
            .map(|a| a.ip())
            .or(peer)
            .filter(|ip| !is_trusted(&state.config.trusted_proxies, *ip));
        let slot = match self.connections.enter(
            client,
            limits.max_connections,
            limits.max_connections_per_client,
        ) {
            Ok(slot) => slot,
            Err(refusal) => {
                let (limit, message) = match refusal {
                    ConnectionRefusal::Total => {
                        ("max_connections", "Too many connections; retry later.")
                    }
                    ConnectionRefusal::PerClient => (
                        "max_connections_per_client",
                        "Too many connections from this client; retry later.",
                    ),
                };
                self.runtime.metrics.limit_hit(limit);
                let answer = raw_error(S3Error::slow_down(message, 1));
                let mut stream = stream;
                use tokio::io::AsyncWriteExt;
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), stream.write_all(&answer)).await;
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.flush()).await;
                return None;
            }
        };
        let socket_digest = proxied.map(|addr| {
            let local = stream
                .get_socket_digest()
                .and_then(|d| d.local_addr().cloned());
            Arc::new(proxied_digest(-1, addr, local))
        });
        let guarded = GuardedStream {
            inner: stream,
            scanner: HeadScanner::new(limits.max_header_bytes),
            header_timeout,
            deadline: Some(Box::pin(tokio::time::sleep(header_timeout))),
            refusing: None,
            socket_digest,
            runtime: self.runtime.clone(),
            _slot: slot,
        };
        drop(state);
        self.serve(Box::new(guarded), shutdown).await;
        None
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

/// The socket as a PROXY header describes it: the client it names as the peer, the local address kept.
fn proxied_digest(
    fd: std::os::fd::RawFd,
    client: std::net::SocketAddr,
    local: Option<pingora::protocols::l4::socket::SocketAddr>,
) -> pingora::protocols::SocketDigest {
    let digest = pingora::protocols::SocketDigest::from_raw_fd(fd);
    let _ = digest
        .peer_addr
        .set(Some(pingora::protocols::l4::socket::SocketAddr::Inet(
            client,
        )));
    let _ = digest.local_addr.set(local);
    let _ = digest.original_dst.set(None);
    digest
}

/// Reads a PROXY protocol header, and not one byte more (what follows is the client's request, or its
/// TLS handshake): a v2 header by its length, a v1 header byte by byte up to its line end.
async fn read_proxy_header<S: AsyncRead + Unpin>(stream: &mut S) -> Result<ProxyHeader, ()> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::with_capacity(64);
    loop {
        let want = match crate::proxy_protocol::parse(&buf) {
            Parse::Done(header, n) if n == buf.len() => return Ok(header),
            Parse::Done(..) | Parse::Invalid => return Err(()),
            // v2 says how long it is; v1 is read a byte at a time.
            Parse::Need(n) if buf.first() == Some(&b'\r') => n - buf.len(),
            Parse::Need(_) => 1,
        };
        let start = buf.len();
        buf.resize(start + want, 0);
        stream.read_exact(&mut buf[start..]).await.map_err(|_| ())?;
    }
}

impl<A: ServerApp + Send + Sync + 'static> GuardedApp<A> {
    /// The connection's requests, one after the other, as pingora's own service loop would run them:
    /// looping here instead of handing the stream back keeps this wrapper's cost per connection, not
    /// per request.
    async fn serve(self: &Arc<Self>, mut stream: Stream, shutdown: &ShutdownWatch) {
        while let Some(reused) = self.inner.process_new(stream, shutdown).await {
            stream = reused;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_end_at_an_empty_line_split_anywhere() {
        let head = b"GET /s3p/immuta HTTP/1.1\r\nHost: x\r\n\r\n";
        for split in 0..head.len() {
            let mut s = HeadScanner::new(1000);
            let first = s.on_read(&head[..split]);
            let second = s.on_read(&head[split..]);
            let events = [first, second];
            assert_eq!(
                events.iter().filter(|e| **e == HeadEvent::Complete).count(),
                1,
                "split at {split}: {events:?}"
            );
            assert!(!s.in_head());
        }
        // Bare LF line ends, as httparse accepts them.
        let mut s = HeadScanner::new(1000);
        assert_eq!(
            s.on_read(b"GET / HTTP/1.1\nHost: x\n\nrest"),
            HeadEvent::Complete
        );
        // A lone CR LF in a header value is not an empty line.
        let mut s = HeadScanner::new(1000);
        assert_eq!(s.on_read(b"GET / HTTP/1.1\r\nA: b\r\n"), HeadEvent::Ok);
    }

    #[test]
    fn byte_by_byte_and_chunked_reads_find_the_same_end_as_a_plain_search() {
        let heads: [&[u8]; 4] = [
            b"GET / HTTP/1.1\r\nA: b\r\n\r\nBODY",
            b"GET / HTTP/1.1\nA: b\n\nBODY",
            b"GET / HTTP/1.1\r\nA: \r\r\n\r\nBODY",
            b"GET / HTTP/1.1\r\nA: b\n\r\nBODY",
        ];
        for head in heads {
            // Where a naive scan says the head ends: the first `\n\n` or `\n\r\n`.
            let end = (0..head.len())
                .find(|&i| {
                    head[i] == b'\n'
                        && ((i >= 1 && head[i - 1] == b'\n')
                            || (i >= 2 && head[i - 1] == b'\r' && head[i - 2] == b'\n'))
                })
                .unwrap()
                + 1;
            for chunk in 1..=head.len() {
                let mut s = HeadScanner::new(1000);
                let mut read = 0;
                let mut completed_in = None;
                for piece in head.chunks(chunk) {
                    if s.on_read(piece) == HeadEvent::Complete {
                        completed_in = Some(read..read + piece.len());
                        break;
                    }
                    read += piece.len();
                }
                let piece = completed_in.unwrap_or_else(|| panic!("{head:?} in chunks of {chunk}"));
                // The read that completed the head is the one holding its last byte.
                assert!(
                    piece.start < end && end <= piece.end,
                    "{head:?} chunk {chunk}: {piece:?}"
                );
            }
        }
    }

    #[test]
    fn a_head_past_its_cap_is_refused_and_reads_are_bounded() {
        let mut s = HeadScanner::new(100);
        assert_eq!(s.allowance(), 100 + HEAD_SLACK);
        assert_eq!(s.on_read(&[b'a'; 60]), HeadEvent::Ok);
        assert_eq!(s.allowance(), 40 + HEAD_SLACK);
        assert_eq!(s.on_read(&[b'a'; 41]), HeadEvent::TooLarge);
        // A head that ends within the slack is left to s3p's own check (which answers with an audit line).
        let mut s = HeadScanner::new(10);
        let mut head = vec![b'a'; 50];
        head.extend_from_slice(b"\r\n\r\n");
        assert_eq!(s.on_read(&head), HeadEvent::Complete);
    }

    #[test]
    fn a_final_response_starts_the_next_head_and_interim_ones_do_not() {
        let mut s = HeadScanner::new(100);
        s.on_read(b"PUT /x HTTP/1.1\r\nExpect: 100-continue\r\n\r\n");
        assert!(!s.in_head());
        assert!(!s.on_write(b"HTTP/1.1 100 Continue\r\n\r\n"));
        assert!(!s.in_head(), "the body follows a 100 Continue");
        assert_eq!(
            s.on_read(&[b'x'; 10_000]),
            HeadEvent::Ok,
            "body bytes are not a head"
        );
        s.on_write(b"body bytes that are not a status line");
        assert!(!s.in_head());
        s.on_write(b"HTTP/1.1 200 OK\r\n");
        assert!(s.in_head());
        assert_eq!(s.head_bytes(), 0);
    }

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
    }

    #[test]
    fn connection_counts_are_capped_and_given_back() {
        let limits = Arc::new(ConnectionLimits::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = limits.enter(Some(a), 3, 2).unwrap();
        let s2 = limits.enter(Some(a), 3, 2).unwrap();
        assert_eq!(
            limits.enter(Some(a), 3, 2).err(),
            Some(ConnectionRefusal::PerClient)
        );
        let s3 = limits.enter(Some(b), 3, 2).unwrap();
        assert_eq!(
            limits.enter(None, 3, 2).err(),
            Some(ConnectionRefusal::Total)
        );
        assert_eq!(limits.open(), 3);
        drop((s1, s2, s3));
        assert_eq!(limits.open(), 0);
        assert!(limits.enter(Some(a), 3, 2).is_ok());
    }
}
