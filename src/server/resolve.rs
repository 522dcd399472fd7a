//! Backend host names resolved again while s3p runs. Object requests go to an address fixed when the
//! backend was built (pingora's peers take addresses, and DNS has no place on the hot path), so an
//! endpoint whose addresses rotate, as AWS's do, would sooner or later be dialled at an address it left.
//! Every `limits.backend_resolve_interval_s`, each backend is resolved again; when the address a backend
//! uses is gone from its answer, the state is rebuilt at the new addresses (the same configuration, as a SIGHUP reload would
//! build it) and swapped in for new requests.

use crate::backend::{self, Addresses};
use crate::state::{SharedState, State};
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

/// How a backend's host name becomes addresses (DNS in s3p; fixed answers in tests).
pub type ResolveFn =
    dyn Fn(&crate::config::Backend) -> Result<Vec<std::net::SocketAddr>, String> + Send + Sync;

pub struct BackendResolver {
    pub state: SharedState,
    pub resolve: Arc<ResolveFn>,
}

/// What one round did.
#[derive(Debug, PartialEq, Eq)]
pub enum Round {
    Unchanged,
    /// Rebuilt at new addresses for these backends.
    Moved(Vec<String>),
    /// A reload swapped the state while this round resolved: the reload's state stays.
    Superseded,
    Failed,
}

impl BackendResolver {
    pub fn new(state: SharedState) -> BackendResolver {
        BackendResolver {
            state,
            resolve: Arc::new(backend::resolve),
        }
    }

    /// Resolves every backend once and swaps in a rebuilt state if any moved.
    pub async fn round(&self) -> Round {
        let current = self.state.load_full();
        let (resolve, base) = (self.resolve.clone(), current.clone());
        // DNS, and rebuilding backends (certificates are read from disk), block: off the runtime's threads.
        let rebuilt = tokio::task::spawn_blocking(move || {
            let mut fresh = Addresses::new();
            for (name, b) in &base.config.backends {
                match resolve(b) {
                    Ok(addrs) => {
                        fresh.insert(name.clone(), addrs);
                    }
                    // The backend keeps the addresses it has.
                    Err(e) => log::warn!("{e}; backend {name} keeps its addresses"),
                }
            }
            let mut addresses = base.backends.addresses();
            let moved = backend::moved_backends(&addresses, &fresh);
            if moved.is_empty() {
                return Ok(None);
            }
            addresses.extend(fresh);
            let state = State::at(base.config.clone(), &addresses)?;
            Ok(Some((state, moved, addresses)))
        })
        .await;
        let (state, moved, addresses) = match rebuilt {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) => return Round::Unchanged,
            Ok(Err::<_, String>(e)) => {
                log::error!("backends at their new addresses: {e}; the old ones stay");
                return Round::Failed;
            }
            Err(_) => return Round::Failed,
        };
        // Only over the state this round started from: a SIGHUP reload in between wins.
        let previous = self.state.compare_and_swap(&current, Arc::new(state));
        if !Arc::ptr_eq(&previous, &current) {
            return Round::Superseded;
        }
        for name in &moved {
            log::info!(
                "backend {name} now resolves to {:?}; new requests use it",
                addresses.get(name).map(Vec::as_slice).unwrap_or_default()
            );
        }
        Round::Moved(moved)
    }
}

#[async_trait]
impl BackgroundService for BackendResolver {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            // Read each time: a reload may change the interval.
            let interval = self.state.load().config.limits.backend_resolve_interval_s;
            let wait = Duration::from_secs(if interval == 0 { 60 } else { interval });
            tokio::select! {
                _ = tokio::time::sleep(wait) => {
                    if interval != 0 {
                        self.round().await;
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use arc_swap::ArcSwap;
    use std::net::SocketAddr;
    use std::sync::Mutex;

    const YAML: &str = r#"
listen: 127.0.0.1:0
token_secret: "0123456789abcdef0123456789abcdef"
backends:
  s3: { endpoint: "http://127.0.0.1:9000", region: us-east-1, access_key_id: a, secret_access_key: b }
data_sources:
  sales: { backend: s3, bucket: real }
api_keys:
  - { id: k, name: K, data_sources: all }
"#;

    /// A resolver answering whatever the test last set.
    fn resolver(answer: Arc<Mutex<Result<Vec<SocketAddr>, String>>>) -> Arc<ResolveFn> {
        Arc::new(move |_b| answer.lock().unwrap().clone())
    }

    fn addr(state: &SharedState) -> SocketAddr {
        state.load().backends.get("s3").unwrap().addr
    }

    #[test]
    fn a_backend_that_moved_is_rebuilt_at_its_new_address() {
        let config = Config::from_yaml_str(YAML, &|_| None).unwrap();
        let state: SharedState = Arc::new(ArcSwap::from_pointee(State::new(config).unwrap()));
        let start: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        assert_eq!(addr(&state), start);
        let answer = Arc::new(Mutex::new(Ok(vec![start])));
        let r = BackendResolver {
            state: state.clone(),
            resolve: resolver(answer.clone()),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();

        assert_eq!(rt.block_on(r.round()), Round::Unchanged);

        let moved: SocketAddr = "127.0.0.2:9000".parse().unwrap();
        *answer.lock().unwrap() = Ok(vec![moved]);
        let before = state.load_full();
        assert_eq!(rt.block_on(r.round()), Round::Moved(vec!["s3".into()]));
        assert_eq!(addr(&state), moved);
        assert!(!Arc::ptr_eq(&before, &state.load_full()), "a new state");

        // A failed resolution keeps the addresses.
        *answer.lock().unwrap() = Err("no such host".into());
        assert_eq!(rt.block_on(r.round()), Round::Unchanged);
        assert_eq!(addr(&state), moved);
    }

    #[test]
    fn a_reload_during_a_round_wins() {
        let config = Config::from_yaml_str(YAML, &|_| None).unwrap();
        let state: SharedState =
            Arc::new(ArcSwap::from_pointee(State::new(config.clone()).unwrap()));
        let reloaded = Arc::new(State::new(config).unwrap());
        // The "DNS answer" arrives while a SIGHUP reload swaps in its own state.
        let (during, by_reload) = (state.clone(), reloaded.clone());
        let r = BackendResolver {
            state: state.clone(),
            resolve: Arc::new(move |_b| {
                during.store(by_reload.clone());
                Ok(vec!["127.0.0.3:9000".parse().unwrap()])
            }),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(r.round()), Round::Superseded);
        assert!(Arc::ptr_eq(&state.load_full(), &reloaded));
    }
}
