//! The `s3p` command: `s3p --config proxy.yaml` runs the proxy, `s3p check --config proxy.yaml` validates.

use arc_swap::ArcSwap;
use clap::{Parser, Subcommand};
use pingora::apps::http_app::HttpServer;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::ListenerConfig;
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use s3p::config;
use s3p::proxy::S3Proxy;
use s3p::server::admin::AdminApp;
use s3p::server::audit::AuditLog;
use s3p::server::connections::{ConnectionLimits, GuardedApp, Handshakes, TlsGuard};
use s3p::server::metrics::Metrics;
use s3p::server::resolve::BackendResolver;
use s3p::server::signals::{GracefulSignals, Reloader};
use s3p::server::throttle::AuthThrottle;
use s3p::server::tls::CertStore;
use s3p::server::Runtime;
use s3p::state::{SharedState, State};
use std::process::ExitCode;

use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "s3p",
    version,
    about = "One virtual S3 bucket in front of many real ones"
)]
struct Cli {
    /// Path to proxy.yaml.
    #[arg(long, short, global = true, default_value = "proxy.yaml")]
    config: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration and exit (non-zero with one line per problem).
    Check {
        /// Away from the deployment: no DNS resolution of backends, and unset `${...}` variables are
        /// warnings (each named) checked with placeholder values instead of problems.
        #[arg(long)]
        offline: bool,
    },
}

/// Why s3p did not start, or why a check failed: the lines to print on stderr (exit status 2).
struct Refused(Vec<String>);

impl Refused {
    fn one(path: &str, problem: impl std::fmt::Display) -> Refused {
        Refused(vec![format!("{path}: {problem}")])
    }

    fn config(path: &str, errors: Vec<config::ConfigError>) -> Refused {
        let mut lines = vec![format!("{path}: {} problem(s):", errors.len())];
        lines.extend(errors.iter().map(|e| format!("  {e}")));
        Refused(lines)
    }
}

/// `s3p check --offline`: everything but the deployment's environment (variables, DNS).
fn check_offline(path: &str) -> Result<(), Refused> {
    let (cfg, warnings) = config::load_offline(path).map_err(|e| Refused::config(path, e))?;
    for w in &warnings {
        eprintln!("{path}: warning: {w}");
    }
    check_issuers(path, &cfg, false)?;
    println!(
        "{path}: OK offline ({} backends, {} data sources, {} API keys; {} unset variable(s); backend host names not resolved)",
        cfg.backends.len(),
        cfg.data_sources.len(),
        cfg.api_keys.len(),
        warnings.len()
    );
    Ok(())
}

/// The OIDC issuers' signing keys (`sts.web_identity`): read, and each holding a usable key.
fn check_issuers(path: &str, cfg: &config::Config, online: bool) -> Result<(), Refused> {
    match s3p::server::sts::check_issuers(cfg, online) {
        Ok(lines) => {
            for line in lines {
                println!("{path}: {line}");
            }
            Ok(())
        }
        Err(problems) => {
            let mut lines = vec![format!("{path}: {} problem(s):", problems.len())];
            lines.extend(problems.iter().map(|p| format!("  {p}")));
            Err(Refused(lines))
        }
    }
}

fn main() -> ExitCode {
    s3p::server::logging::init();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Refused(lines)) => {
            for line in lines {
                eprintln!("{line}");
            }
            ExitCode::from(2)
        }
    }
}

/// Checks the configuration, or runs the server until it stops.
fn run(cli: &Cli) -> Result<(), Refused> {
    let path = cli.config.as_str();
    if let Some(Command::Check { offline: true }) = cli.command {
        return check_offline(path);
    }
    let cfg = config::load(path).map_err(|e| Refused::config(path, e))?;
    if let Some(Command::Check { .. }) = cli.command {
        // Backends must also resolve, as they will at start-up.
        s3p::backend::Backends::new(&cfg)
            .map_err(|e| Refused(vec![format!("{path}: 1 problem(s):"), format!("  {e}")]))?;
        check_issuers(path, &cfg, true)?;
        println!(
            "{path}: OK ({} backends, {} data sources, {} API keys)",
            cfg.backends.len(),
            cfg.data_sources.len(),
            cfg.api_keys.len()
        );
        return Ok(());
    }

    let listen = cfg.listen.to_string();
    let conf = s3p::server::settings::server_conf(&cfg);
    let l4_buffer = s3p::server::settings::client_buffers(&cfg.limits);
    let audit = AuditLog::open(&cfg.audit_log)
        .map_err(|e| Refused::one(path, format!("audit_log `{}`: {e}", cfg.audit_log)))?;
    let runtime = Arc::new(Runtime {
        metrics: Metrics::default(),
        audit,
        throttle: AuthThrottle::new(cfg.limits.auth_failures_per_minute),
        concurrency: Default::default(),
        unready: Default::default(),
        draining: Default::default(),
        entitlements: Default::default(),
        sts: Default::default(),
    });
    let grace = std::time::Duration::from_secs(cfg.limits.grace_period_s);
    let drain_delay = std::time::Duration::from_secs(cfg.limits.drain_delay_s);
    let certs = match &cfg.tls {
        Some(t) => Some(Arc::new(
            CertStore::load(&t.cert, &t.key)
                .map_err(|e| Refused::one(path, format!("tls: {e}")))?,
        )),
        None => None,
    };
    let tls_listen = cfg.tls.as_ref().map(|t| t.listen.to_string());
    let admin_listen = cfg.admin_listen.map(|a| a.to_string());
    let state: SharedState = Arc::new(ArcSwap::from_pointee(
        State::new(cfg).map_err(|e| Refused::one(path, e))?,
    ));

    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    // pingora's HTTP proxy, behind s3p's connection limits (header deadline and cap, connection caps).
    let proxy = pingora::proxy::http_proxy(
        &server.configuration,
        S3Proxy {
            state: state.clone(),
            runtime: runtime.clone(),
        },
    );
    let connections: Arc<ConnectionLimits> = Default::default();
    let handshakes: Arc<Handshakes> = Default::default();
    let mut service = Service::new(
        "s3p".to_string(),
        GuardedApp {
            inner: Arc::new(proxy),
            state: state.clone(),
            runtime: runtime.clone(),
            connections: connections.clone(),
            handshakes: handshakes.clone(),
        },
    );
    service.add_listener(ListenerConfig::tcp(listen.clone()).l4_buffer(l4_buffer));
    if let (Some(addr), Some(certs)) = (&tls_listen, &certs) {
        // The paths given here are ignored: the resolver serves the certificate, reloadable on SIGHUP.
        let mut settings = TlsSettings::intermediate("", "")
            .map_err(|e| Refused::one(path, format!("tls: {e}")))?;
        settings.set_cert_resolver(certs.clone());
        // Before each handshake: the PROXY header, the connection counts and the head deadline, which
        // thus covers the handshake too (pingora runs pre-TLS callbacks on TLS endpoints only).
        service.endpoints().set_pre_tls_callback(Arc::new(TlsGuard {
            state: state.clone(),
            runtime: runtime.clone(),
            connections: connections.clone(),
            handshakes: handshakes.clone(),
        }));
        service.add_listener(
            ListenerConfig::tcp(addr.clone())
                .tls(settings)
                .l4_buffer(l4_buffer),
        );
        log::info!("s3p listening on https://{addr}");
    }
    server.add_service(service);
    if let Some(addr) = &admin_listen {
        let mut admin = Service::new(
            "s3p admin".to_string(),
            HttpServer::new_app(AdminApp {
                state: state.clone(),
                runtime: runtime.clone(),
            }),
        );
        admin.add_tcp(addr);
        server.add_service(admin);
        log::info!("s3p admin on http://{addr} (/health, /ready, /metrics)");
    }
    let drain_runtime = runtime.clone();
    let drain_audit = runtime.clone();
    server.add_service(background_service(
        "s3p backend resolution",
        BackendResolver::new(state.clone()),
    ));
    server.add_service(background_service(
        "s3p reload",
        Reloader {
            config_path: cli.config.clone(),
            state,
            runtime,
            certs,
        },
    ));
    log::info!("s3p listening on http://{listen}");
    server.run(RunArgs {
        shutdown_signal: Box::new(GracefulSignals {
            runtime: drain_runtime,
            drain_delay,
            grace,
        }),
    });
    drain_audit.audit.flush();
    log::info!("s3p stopped");
    Ok(())
}
