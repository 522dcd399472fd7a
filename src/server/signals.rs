//! Signals. SIGHUP reloads `proxy.yaml` (data sources, API keys, entitlements, backends), reopens the audit
//! file and reloads the TLS certificate; an invalid new configuration is refused with a log line and the
//! old one stays. SIGTERM and SIGINT both drain in-flight requests for the grace period, then exit 0
//! (pingora's own watcher treats SIGINT as an immediate stop). SIGQUIT keeps pingora's graceful upgrade.

use crate::config::{self, Config};
use crate::server::tls::CertStore;
use crate::server::Runtime;
use crate::state::{SharedState, State};
use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};

/// Turns SIGTERM and SIGINT into a drain a load balancer can follow: `/ready` answers 503 at once while
/// s3p goes on serving for the drain delay (each answer closing its connection); then new requests are
/// refused (503, connection closed) while the requests in flight finish, for at most the grace period;
/// then the server stops at once. Unlike pingora's own graceful terminate, which always sleeps the whole
/// grace period, s3p stops as soon as nothing is in flight after the delay.
pub struct GracefulSignals {
    pub runtime: Arc<Runtime>,
    pub drain_delay: std::time::Duration,
    pub grace: std::time::Duration,
}

#[async_trait]
impl ShutdownSignalWatch for GracefulSignals {
    async fn recv(&self) -> ShutdownSignal {
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let mut quit = signal(SignalKind::quit()).expect("SIGQUIT handler");
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = quit.recv() => { log::info!("SIGQUIT: graceful upgrade"); return ShutdownSignal::GracefulUpgrade }
        };
        self.runtime
            .unready
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if !self.drain_delay.is_zero() {
            log::info!(
                "{name}: not ready; serving for {:?} more while balancers take this replica out",
                self.drain_delay
            );
            tokio::time::sleep(self.drain_delay).await;
        }
        self.runtime
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let started = std::time::Instant::now();
        log::info!(
            "{name}: draining {} in-flight requests (at most {:?})",
            self.runtime.metrics.in_flight(),
            self.grace
        );
        while self.runtime.metrics.in_flight() > 0 && started.elapsed() < self.grace {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let left = self.runtime.metrics.in_flight();
        if left > 0 {
            log::warn!("grace period over with {left} requests in flight: stopping them");
        }
        ShutdownSignal::FastShutdown
    }
}

/// Reloads on SIGHUP.
#[derive(Clone)]
pub struct Reloader {
    pub config_path: String,
    pub state: SharedState,
    pub runtime: Arc<Runtime>,
    pub certs: Option<Arc<CertStore>>,
}

/// Settings that only take effect at start-up: a reload that changes them says so.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old.listen != new.listen {
        changed.push("listen");
    }
    if old.threads != new.threads {
        changed.push("threads");
    }
    if old.admin_listen != new.admin_listen {
        changed.push("admin_listen");
    }
    if old.audit_log != new.audit_log {
        changed.push("audit_log");
    }
    if old.tls.as_ref().map(|t| t.listen) != new.tls.as_ref().map(|t| t.listen) {
        changed.push("tls.listen");
    }
    if old.limits.grace_period_s != new.limits.grace_period_s
        || old.limits.drain_delay_s != new.limits.drain_delay_s
        || old.limits.auth_failures_per_minute != new.limits.auth_failures_per_minute
    {
        changed.push("limits.grace_period_s/drain_delay_s/auth_failures_per_minute");
    }
    if old.limits.client_read_buffer_bytes != new.limits.client_read_buffer_bytes {
        changed.push("limits.client_read_buffer_bytes");
    }
    changed
}

impl Reloader {
    pub fn reload(&self) {
        let new_config = match config::load(&self.config_path) {
            Ok(c) => c,
            Err(errors) => {
                let shown: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                log::error!(
                    "reload refused, the running configuration stays: {}: {}",
                    self.config_path,
                    shown.join("; ")
                );
                self.runtime.metrics.config_reload(false);
                return;
            }
        };
        let old = self.state.load_full();
        let ignored = restart_only_changes(&old.config, &new_config);
        match State::new(new_config) {
            Ok(state) => {
                self.state.store(Arc::new(state));
                self.runtime.metrics.config_reload(true);
                log::info!("reloaded {}", self.config_path);
                if !ignored.is_empty() {
                    log::warn!(
                        "changes to {} take effect only after a restart",
                        ignored.join(", ")
                    );
                }
            }
            Err(e) => {
                log::error!("reload refused, the running configuration stays: {e}");
                self.runtime.metrics.config_reload(false);
            }
        }
        if let Err(e) = self.runtime.audit.reopen() {
            log::error!("cannot reopen the audit log: {e}");
        }
        if let Some(certs) = &self.certs {
            // The files the configuration in use names now (new paths take effect on reload too).
            let (cert, key) = match &self.state.load().config.tls {
                Some(tls) => (tls.cert.clone(), tls.key.clone()),
                None => certs.paths(),
            };
            match certs.reload_from(&cert, &key) {
                Ok(()) => log::info!("reloaded the TLS certificate from {cert} and {key}"),
                Err(e) => log::error!("TLS certificate reload refused, the old one stays: {e}"),
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot watch SIGHUP, reloads are off: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                // Reloading reads files and resolves host names (blocking calls): off the async
                // workers, one reload at a time.
                _ = hup.recv() => {
                    let reloader = self.clone();
                    if let Err(e) = tokio::task::spawn_blocking(move || reloader.reload()).await {
                        log::error!("reload failed: {e}");
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
