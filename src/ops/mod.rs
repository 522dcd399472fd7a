//! Operations: what an operator sees and controls. Audit lines, Prometheus metrics, the admin listener
//! (/health, /ready, /metrics), TLS certificates that reload, and the signals that reload configuration
//! and stop the server, and the periodic resolution of backend host names. These are I/O glue around the pure core, like `proxy.rs`.

pub mod admin;
pub mod audit;
pub mod connections;
pub mod guard;
pub mod logging;
pub mod metrics;
pub mod resolve;
pub mod signals;
pub mod tls;

use metrics::Metrics;
use std::sync::Arc;

/// What lives across reloads: metrics, the audit log, the authentication throttle.
pub struct Ops {
    pub metrics: Metrics,
    pub audit: audit::AuditLog,
    pub throttle: guard::AuthThrottle,
    /// Requests in flight per key and per client address.
    pub concurrency: Arc<guard::ConcurrencyLimits>,
    /// Set on SIGTERM/SIGINT: `/ready` answers 503 and every answer closes its connection, while requests
    /// are still served for the drain delay.
    pub unready: std::sync::atomic::AtomicBool,
    /// Set once the drain delay is over: new requests are refused while in-flight ones finish.
    pub draining: std::sync::atomic::AtomicBool,
}

/// A request's place in the in-flight count.
pub struct InFlight(Arc<Ops>);

impl InFlight {
    /// Counts a request in; returns the guard and the count including this request.
    pub fn enter(ops: &Arc<Ops>) -> (InFlight, i64) {
        let count = ops.metrics.enter();
        (InFlight(ops.clone()), count)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics.leave();
    }
}
