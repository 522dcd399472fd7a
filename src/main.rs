//! The `s3p` command: `s3p --config proxy.yaml` runs the proxy, `s3p check --config proxy.yaml` validates.

use arc_swap::ArcSwap;
use clap::{Parser, Subcommand};
use pingora::apps::http_app::HttpServer;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::{L4BufferSettings, DEFAULT_L4_WRITE_BUFFER_SIZE};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use s3p::config;
use s3p::proxy::S3Proxy;
use s3p::server::admin::AdminApp;
use s3p::server::audit::AuditLog;
use s3p::server::connections::GuardedApp;
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

fn load_or_report(path: &str) -> Option<config::Config> {
    match config::load(path) {
        Ok(c) => Some(c),
        Err(errors) => {
            eprintln!("{path}: {} problem(s):", errors.len());
            for e in errors {
                eprintln!("  {e}");
            }
            None
        }
    }
}

/// `s3p check --offline`: everything but the deployment's environment (variables, DNS).
fn check_offline(path: &str) -> ExitCode {
    match config::load_offline(path) {
        Ok((cfg, warnings)) => {
            for w in &warnings {
                eprintln!("{path}: warning: {w}");
            }
            println!(
                "{path}: OK offline ({} backends, {} data sources, {} API keys; {} unset variable(s); backend host names not resolved)",
                cfg.backends.len(),
                cfg.data_sources.len(),
                cfg.api_keys.len(),
                warnings.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{path}: {} problem(s):", errors.len());
            for e in errors {
                eprintln!("  {e}");
            }
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    s3p::server::logging::init();
    let cli = Cli::parse();
    if let Some(Command::Check { offline: true }) = cli.command {
        return check_offline(&cli.config);
    }
    let Some(cfg) = load_or_report(&cli.config) else {
        return ExitCode::from(2);
    };
    if let Some(Command::Check { .. }) = cli.command {
        // Backends must also resolve, as they will at start-up.
        return match s3p::backend::Backends::new(&cfg) {
            Ok(_) => {
                println!(
                    "{}: OK ({} backends, {} data sources, {} API keys)",
                    cli.config,
                    cfg.backends.len(),
                    cfg.data_sources.len(),
                    cfg.api_keys.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: 1 problem(s):\n  {e}", cli.config);
                ExitCode::from(2)
            }
        };
    }

    let listen = cfg.listen.to_string();
    let client_read_buffer = cfg.limits.client_read_buffer_bytes;
    let conf = ServerConf {
        threads: cfg.threads,
        // pingora's default grace period is 300 s; a proxy of short reads should stop in seconds.
        grace_period_seconds: Some(cfg.limits.grace_period_s),
        graceful_shutdown_timeout_seconds: Some(cfg.limits.grace_period_s),
        ..ServerConf::default()
    };
    let audit = match AuditLog::open(&cfg.audit_log) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{}: audit_log `{}`: {e}", cli.config, cfg.audit_log);
            return ExitCode::from(2);
        }
    };
    let runtime = Arc::new(Runtime {
        metrics: Metrics::default(),
        audit,
        throttle: AuthThrottle::new(cfg.limits.auth_failures_per_minute),
        concurrency: Default::default(),
        unready: Default::default(),
        draining: Default::default(),
    });
    let grace = std::time::Duration::from_secs(cfg.limits.grace_period_s);
    let drain_delay = std::time::Duration::from_secs(cfg.limits.drain_delay_s);
    let certs = match &cfg.tls {
        Some(t) => match CertStore::load(&t.cert, &t.key) {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                eprintln!("{}: tls: {e}", cli.config);
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let tls_listen = cfg.tls.as_ref().map(|t| t.listen.to_string());
    let admin_listen = cfg.admin_listen.map(|a| a.to_string());
    let state: SharedState = match State::new(cfg) {
        Ok(s) => Arc::new(ArcSwap::from_pointee(s)),
        Err(e) => {
            eprintln!("{}: {e}", cli.config);
            return ExitCode::from(2);
        }
    };

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
    let mut service = Service::new(
        "s3p".to_string(),
        GuardedApp {
            inner: Arc::new(proxy),
            state: state.clone(),
            runtime: runtime.clone(),
            connections: Default::default(),
        },
    );
    // pingora reads each client connection through a 64 KiB buffer by default; s3p only reads request
    // heads (it serves no uploads), so a small one keeps idle keep-alive connections cheap.
    // The write side keeps pingora's default (one MSS): a bigger buffer would let a response head and a
    // small body leave in one send, but costs its size on every idle keep-alive connection (measured:
    // 16 KiB took 1,000 idle connections over 64 MiB).
    let l4_buffer = L4BufferSettings::new(client_read_buffer, DEFAULT_L4_WRITE_BUFFER_SIZE);
    service.add_listener(ListenerConfig::tcp(listen.clone()).l4_buffer(l4_buffer));
    if let (Some(addr), Some(certs)) = (&tls_listen, &certs) {
        // The paths given here are ignored: the resolver serves the certificate, reloadable on SIGHUP.
        let mut settings = match TlsSettings::intermediate("", "") {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{}: tls: {e}", cli.config);
                return ExitCode::from(2);
            }
        };
        settings.set_cert_resolver(certs.clone());
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
    ExitCode::SUCCESS
}
