//! pingora's HTTP application behind s3p's connection limits ([`GuardedApp`]): each new connection
//! admitted (or taken over from [`super::TlsGuard`] after its handshake), then served through a
//! [`GuardedStream`].

use super::caps::{admit, peer_ip, proxied_digest, ConnectionLimits, NotAdmitted, Stage};
use super::stream::GuardedStream;
use super::tls::Handshakes;
use crate::server::Runtime;
use crate::state::SharedState;
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use std::sync::Arc;
use std::time::Duration;

/// pingora's HTTP application behind s3p's connection limits.
pub struct GuardedApp<A> {
    pub inner: Arc<A>,
    pub state: SharedState,
    pub runtime: Arc<Runtime>,
    pub connections: Arc<ConnectionLimits>,
    /// TLS connections counted (and timed) since before their handshake, by [`super::TlsGuard`].
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
        let tls = stream.get_ssl_digest().is_some();
        if tls {
            if let Some((slot, accepted)) = self.handshakes.take_over(stream.id()) {
                let within = header_timeout.saturating_sub(accepted.elapsed());
                let guarded =
                    GuardedStream::new(stream, limits, within, None, self.runtime.clone(), slot);
                drop(state);
                self.serve(Box::new(guarded), shutdown).await;
                return None;
            }
        }
        let peer = peer_ip(stream.get_socket_digest());
        let stage = if tls { Stage::AfterTls } else { Stage::Plain };
        let admitted = match admit(
            &mut stream,
            peer,
            stage,
            &state.config,
            &self.runtime.metrics,
            &self.connections,
        )
        .await
        {
            Ok(admitted) => admitted,
            Err(NotAdmitted::ProxyHeader) => {
                log::debug!("connection from {peer:?} without a valid PROXY header: closed");
                return None;
            }
            // Answered 503 SlowDown; closed.
            Err(NotAdmitted::Cap(_)) => return None,
        };
        let socket_digest = admitted.proxied.map(|addr| {
            let local = stream
                .get_socket_digest()
                .and_then(|d| d.local_addr().cloned());
            Arc::new(proxied_digest(-1, addr, local))
        });
        let guarded = GuardedStream::new(
            stream,
            limits,
            header_timeout,
            socket_digest,
            self.runtime.clone(),
            admitted.slot,
        );
        drop(state);
        self.serve(Box::new(guarded), shutdown).await;
        None
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
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
