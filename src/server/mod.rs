//! The running server: what an operator sees and controls, and the run-time state that outlives a
//! reload. Client connections (head deadline, caps, PROXY protocol), the throttle of failed
//! authentications and the in-flight limits, audit lines, Prometheus metrics, the admin listener
//! (/health, /ready, /metrics), the TLS certificate that reloads, the signals that reload configuration
//! and stop the server, the periodic resolution of backend host names, the log filter. I/O glue around
//! the pure core, like `proxy.rs`.

pub mod admin;
pub mod admission;
pub mod audit;
pub mod body;
pub mod connections;
pub mod ctx;
pub mod entitlements;
pub mod logging;
pub mod metrics;
pub mod own_calls;
pub mod pacing;
pub mod report;
pub mod resolve;
pub mod respond;
pub mod settings;
pub mod signals;
pub mod stamp;
pub mod sts;
pub mod throttle;
pub mod tls;
pub mod upstream;

use metrics::Metrics;
use std::sync::Arc;

/// What lives across reloads: metrics, the audit log, the authentication throttle.
pub struct Runtime {
    pub metrics: Metrics,
    pub audit: audit::AuditLog,
    pub throttle: throttle::AuthThrottle,
    /// Requests in flight per key and per client address.
    pub concurrency: Arc<throttle::ConcurrencyLimits>,
    /// Set on SIGTERM/SIGINT: `/ready` answers 503 and every answer closes its connection, while requests
    /// are still served for the drain delay.
    pub unready: std::sync::atomic::AtomicBool,
    /// Set once the drain delay is over: new requests are refused while in-flight ones finish.
    pub draining: std::sync::atomic::AtomicBool,
    /// Keys and grants from the governance service, cached across reloads (`source: http`).
    pub entitlements: entitlements::Entitlements,
    /// The OIDC issuers' signing keys (`sts.web_identity`), cached across reloads.
    pub sts: sts::IssuerKeys,
}

/// A request's place in the in-flight count.
pub struct InFlight(Arc<Runtime>);

impl InFlight {
    /// Counts a request in; returns the guard and the count including this request.
    pub fn enter(runtime: &Arc<Runtime>) -> (InFlight, i64) {
        let count = runtime.metrics.enter();
        (InFlight(runtime.clone()), count)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics.leave();
    }
}
