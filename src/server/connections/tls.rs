//! TLS connections before their first request: admitted, and timed, from before their handshake
//! ([`TlsGuard`], [`Handshakes`]).

use super::caps::{admit, peer_ip, proxied_digest, ConnectionLimits, ConnectionSlot, Stage};
use crate::server::Runtime;
use crate::state::SharedState;
use async_trait::async_trait;
use pingora::protocols::GetSocketDigest;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// TLS connections between accept and their first request. pingora runs the TLS handshake before any
/// application sees the connection, with its own 60 s timeout and outside every count; so s3p hooks in
/// before the handshake (pingora's pre-TLS callback, [`TlsGuard`]): there it reads a PROXY header
/// (`proxy_protocol: required`, trusted proxies only), takes the connection's place in the connection
/// counts, and arms a deadline of `header_timeout_ms` from accept. [`super::GuardedApp`] takes the place and
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
    pub(super) fn take_over(
        &self,
        fd: std::os::fd::RawFd,
    ) -> Option<(ConnectionSlot, std::time::Instant)> {
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
        let peer = peer_ip(stream.get_socket_digest());
        // Refused, the connection is closed: no answer is possible before the handshake.
        let admitted = admit(
            stream,
            peer,
            Stage::BeforeTls,
            &state.config,
            &self.runtime.metrics,
            &self.connections,
        )
        .await
        .map_err(|not| refused(not.reason()))?;
        if let Some(addr) = admitted.proxied {
            // The connection as pingora (and s3p's limits and audit) will see it.
            let local = stream
                .get_socket_digest()
                .and_then(|d| d.local_addr().cloned());
            stream.set_socket_digest(proxied_digest(stream.as_raw_fd(), addr, local));
        }
        let slot = admitted.slot;
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
