//! pingora's settings for s3p, in one place: the server (threads, grace periods), the client listener's
//! buffers, each client session (timeouts, keep-alive) and each backend peer (timeouts, CA). `bench/`'s
//! bare pingora proxy uses the same functions, so that the benchmark compares s3p's work, not settings.

use crate::backend::Backend;
use crate::config::{Config, Limits};
use pingora::protocols::l4::stream::{L4BufferSettings, DEFAULT_L4_WRITE_BUFFER_SIZE};
use pingora::proxy::Session;
use pingora::server::configuration::ServerConf;
use pingora::upstreams::peer::HttpPeer;
use std::time::Duration;

/// The server: worker threads, and grace periods in seconds (pingora's default is 300 s; a proxy of
/// short reads should stop in seconds).
pub fn server_conf(cfg: &Config) -> ServerConf {
    ServerConf {
        threads: cfg.threads,
        grace_period_seconds: Some(cfg.limits.grace_period_s),
        graceful_shutdown_timeout_seconds: Some(cfg.limits.grace_period_s),
        ..ServerConf::default()
    }
}

/// Client connection buffers. pingora reads each client connection through a 64 KiB buffer by default;
/// most requests are heads only, so a small one keeps idle keep-alive connections cheap (uploads
/// measured no faster with 64 KiB: README). The write side keeps pingora's default (one MSS): a bigger
/// buffer would let a response head and a small body leave in one send, but costs its size on every idle
/// keep-alive connection (measured: 16 KiB took 1,000 idle connections over 64 MiB).
pub fn client_buffers(limits: &Limits) -> L4BufferSettings {
    L4BufferSettings::new(
        limits.client_read_buffer_bytes,
        DEFAULT_L4_WRITE_BUFFER_SIZE,
    )
}

/// Each client request: a stalled client cannot hold a connection longer than the client timeout per
/// read or write; an idle keep-alive connection closes after `keepalive_timeout_s`.
pub fn client_session(session: &mut Session, limits: &Limits) {
    let client_timeout = Some(Duration::from_millis(limits.client_timeout_ms));
    session.set_read_timeout(client_timeout);
    session.set_write_timeout(client_timeout);
    session.set_keepalive(Some(limits.keepalive_timeout_s));
}

/// The peer for one request to a backend (pingora pools connections per peer: same address, TLS, SNI
/// and CA reuse one pool).
pub fn backend_peer(backend: &Backend, sni: String, limits: &Limits) -> HttpPeer {
    let mut peer = HttpPeer::new(backend.addr, backend.config.tls, sni);
    peer.options.connection_timeout = Some(Duration::from_millis(limits.connect_timeout_ms));
    peer.options.read_timeout = Some(Duration::from_millis(limits.read_timeout_ms));
    peer.options.write_timeout = Some(Duration::from_millis(limits.read_timeout_ms));
    peer.options.idle_timeout = Some(Duration::from_millis(limits.idle_timeout_ms));
    peer.options.ca = backend.ca.clone();
    peer
}

/// The size of a request's head as s3p counts it against `limits.max_header_bytes`: the target and
/// every header line.
pub fn head_bytes(req: &pingora::http::RequestHeader) -> usize {
    req.raw_path().len()
        + req
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>()
}
