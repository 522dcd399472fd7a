//! The admin listener: `/health` (the process answers), `/ready` (configuration loaded and every backend
//! reachable), `/metrics` (Prometheus text). Kept off the S3 listener so it can stay private.

use crate::proxy::{Ops, SharedState};
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;
use std::time::Duration;

pub struct AdminApp {
    pub state: SharedState,
    pub ops: Arc<Ops>,
}

fn text(status: u16, content_type: &str, body: String) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .body(body.into_bytes())
        .expect("static response parts")
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let state = self.state.load_full();
        match path.as_str() {
            "/health" => text(200, "text/plain", "ok\n".into()),
            "/ready" => {
                // Reachable means a TCP connection opens within a second; each backend is tried at once.
                let targets: Vec<(String, std::net::SocketAddr)> = state
                    .backends
                    .all()
                    .map(|(n, b)| (n.to_string(), b.addr))
                    .collect();
                let checks = targets.into_iter().map(|(name, addr)| async move {
                    let ok = tokio::time::timeout(
                        Duration::from_secs(1),
                        tokio::net::TcpStream::connect(addr),
                    )
                    .await
                    .is_ok_and(|c| c.is_ok());
                    (name, ok)
                });
                let results = futures_join_all(checks).await;
                let down: Vec<&str> = results
                    .iter()
                    .filter(|(_, ok)| !ok)
                    .map(|(n, _)| n.as_str())
                    .collect();
                if down.is_empty() {
                    text(
                        200,
                        "text/plain",
                        format!("ready: {} backends reachable\n", results.len()),
                    )
                } else {
                    text(
                        503,
                        "text/plain",
                        format!("not ready: unreachable backends: {}\n", down.join(", ")),
                    )
                }
            }
            "/metrics" => text(200, "text/plain; version=0.0.4", self.ops.metrics.render()),
            _ => text(404, "text/plain", "not found\n".into()),
        }
    }
}

/// Awaits all futures concurrently (a few backends; no need for a dependency).
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}
