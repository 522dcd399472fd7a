//! The `s3p` command: `s3p --config proxy.yaml` runs the proxy, `s3p check --config proxy.yaml` validates.

use clap::{Parser, Subcommand};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use s3p::config;
use s3p::proxy::{S3Proxy, State};
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
    Check,
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

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let Some(cfg) = load_or_report(&cli.config) else {
        return ExitCode::from(2);
    };
    if let Some(Command::Check) = cli.command {
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
    let conf = ServerConf {
        threads: cfg.threads,
        // pingora's default grace period is 300 s; a proxy of short reads should stop in seconds.
        grace_period_seconds: Some(cfg.limits.grace_period_s),
        graceful_shutdown_timeout_seconds: Some(cfg.limits.grace_period_s),
        ..ServerConf::default()
    };
    let state = match State::new(cfg) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("{}: {e}", cli.config);
            return ExitCode::from(2);
        }
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = pingora::proxy::http_proxy_service(&server.configuration, S3Proxy { state });
    service.add_tcp(&listen);
    server.add_service(service);
    log::info!("s3p listening on http://{listen}");
    server.run_forever()
}
