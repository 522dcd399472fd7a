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
