//! The admin listener: `/health` (the process answers), `/ready` (configuration loaded and not shutting
//! down), `/metrics` (Prometheus text, with each backend's reachability). Kept off the S3 listener so it
//! can stay private.

use crate::server::Runtime;
use crate::state::SharedState;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;
use std::time::Duration;

pub struct AdminApp {
    pub state: SharedState,
    pub runtime: Arc<Runtime>,
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
            // Ready while the configuration is loaded and s3p is not leaving. Backends are not asked:
            // they are shared by every replica, so one backend down must not take every replica out of
            // the balancer; their reachability is in /metrics (s3p_backend_up).
            "/ready" => {
                if self
                    .runtime
                    .unready
                    .load(std::sync::atomic::Ordering::Relaxed)
                {
                    text(503, "text/plain", "not ready: shutting down\n".into())
                } else if self.runtime.audit.losing_lines(AUDIT_LOSS_WINDOW) {
                    // Serving without a record of access is not ready (`audit_overflow: drop`): the
                    // balancer sends the traffic elsewhere, and the operator is alarmed.
                    text(
                        503,
                        "text/plain",
                        "not ready: audit lines are being dropped\n".into(),
                    )
                } else if self.runtime.audit.is_full() {
                    // `audit_overflow: backpressure` refuses new requests while the buffer is full.
                    text(
                        503,
                        "text/plain",
                        "not ready: the audit log is not keeping up\n".into(),
                    )
                } else {
                    text(
                        200,
                        "text/plain",
                        format!("ready: {} data sources\n", state.config.data_sources.len()),
                    )
                }
            }
            "/metrics" => {
                let mut body = self.runtime.metrics.render();
                body.push_str(&format!(
                    "# HELP s3p_audit_lines_dropped_total Audit lines dropped because the audit log's consumer did not keep up.\n# TYPE s3p_audit_lines_dropped_total counter\ns3p_audit_lines_dropped_total {}\n",
                    self.runtime.audit.dropped()
                ));
                body.push_str(&format!(
                    "# HELP s3p_buffered_body_bytes Request body bytes held in memory now (limits.max_buffered_body_bytes).\n# TYPE s3p_buffered_body_bytes gauge\ns3p_buffered_body_bytes {}\n",
                    self.runtime.concurrency.buffered_body_bytes()
                ));
                body.push_str(&format!(
                    "# HELP s3p_audit_buffer_full 1 while the audit log's buffer is full (requests are refused or lines dropped, see audit_overflow).\n# TYPE s3p_audit_buffer_full gauge\ns3p_audit_buffer_full {}\n",
                    u8::from(self.runtime.audit.is_full())
                ));
                body.push_str(&backend_reachability(&state).await);
                text(200, "text/plain; version=0.0.4", body)
            }
            _ => text(404, "text/plain", "not found\n".into()),
        }
    }
}

/// How long after the last dropped audit line `/ready` still answers 503.
const AUDIT_LOSS_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// `s3p_backend_up{backend}`: 1 when a TCP connection to the backend opens within a second, probed at
/// each scrape, every backend at once.
async fn backend_reachability(state: &crate::state::State) -> String {
    let targets: Vec<(String, std::net::SocketAddr)> = state
        .backends
        .all()
        .map(|(n, b)| (n.to_string(), b.addr))
        .collect();
    let checks = targets.into_iter().map(|(name, addr)| async move {
        let ok = tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
            .await
            .is_ok_and(|c| c.is_ok());
        (name, ok)
    });
    let mut out = String::from(
        "# HELP s3p_backend_up Whether a TCP connection to the backend opens within a second (probed at each scrape).\n# TYPE s3p_backend_up gauge\n",
    );
    for (name, ok) in futures_join_all(checks).await {
        out.push_str(&format!(
            "s3p_backend_up{{backend=\"{}\"}} {}\n",
            name.replace('\\', "\\\\").replace('"', "\\\""),
            u8::from(ok)
        ));
    }
    out
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
