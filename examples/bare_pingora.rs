//! Bare pingora, the `bare` target of `bench/run`: the limit for s3p's design. A `ProxyHttp` that does
//! nothing but pick the upstream peer: no authentication, no path rewriting, no signing, no audit. It reads s3p's own
//! `proxy.yaml` and takes pingora's settings from the same functions as s3p (`s3p::server::settings`:
//! threads, grace periods, client buffers, client timeouts and keep-alive, peer timeouts), so that the
//! benchmark's ratios measure what s3p does per request, not a difference of settings.
//!
//!     cargo build --release --example bare_pingora
//!     bare_pingora --config proxy.yaml [--backend NAME]
//!
//! It listens on the configuration's `listen` address and forwards every request unchanged (path, query,
//! headers) to one backend: `--backend`, or the backend of the first data source by name.

use async_trait::async_trait;
use pingora::listeners::ListenerConfig;
use pingora::prelude::*;
use pingora::server::Server;
use pingora::services::listening::Service;
use s3p::backend::{Backend, Backends};
use s3p::config::{self, Limits};
use s3p::server::settings;
use std::sync::Arc;

struct Bare {
    backend: Arc<Backend>,
    sni: String,
    limits: Limits,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        // The same per-session timeouts and keep-alive as s3p sets.
        settings::client_session(session, &self.limits);
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(settings::backend_peer(
            &self.backend,
            self.sni.clone(),
            &self.limits,
        )))
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args: Vec<String> = std::env::args().collect();
    let path = arg(&args, "--config").unwrap_or_else(|| "proxy.yaml".to_string());
    let cfg = config::load(&path).unwrap_or_else(|e| panic!("{path}: {e:?}"));
    let name = arg(&args, "--backend").unwrap_or_else(|| {
        let mut sources: Vec<_> = cfg.data_sources.values().collect();
        sources.sort_by(|a, b| a.name.cmp(&b.name));
        sources.first().expect("no data source").backend.clone()
    });
    let backends = Backends::new(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let backend = backends.get(&name).expect("no such backend").clone();
    let sni = backend.config.host.clone();

    let mut server = Server::new_with_opt_and_conf(None, settings::server_conf(&cfg));
    server.bootstrap();
    let proxy = pingora::proxy::http_proxy(
        &server.configuration,
        Bare {
            backend,
            sni,
            limits: cfg.limits.clone(),
        },
    );
    let mut service = Service::new("bare pingora".to_string(), proxy);
    service.add_listener(
        ListenerConfig::tcp(cfg.listen.to_string())
            .l4_buffer(settings::client_buffers(&cfg.limits)),
    );
    server.add_service(service);
    eprintln!("bare pingora listening on http://{}", cfg.listen);
    server.run_forever();
}
