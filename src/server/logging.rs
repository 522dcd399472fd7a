//! s3p's process log: env_logger (`RUST_LOG`), except for one kind of line. pingora writes an ERROR line
//! for every client connection that breaks off, times out or is refused ("Fail to proxy: Downstream
//! ...", "Downstream handshake error"): a client that opens thousands of such connections would fill
//! the log and hide everything else. Those lines are counted instead, and summed up in one WARN line at
//! most every ten seconds; the count is also in `/metrics` (`s3p_client_connection_errors_total`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// Client connection errors seen since start (for `/metrics`).
pub static CLIENT_CONNECTION_ERRORS: AtomicU64 = AtomicU64::new(0);

struct QuietLogger {
    inner: env_logger::Logger,
    /// (when the last summary was written, errors counted since)
    summary: Mutex<(Option<Instant>, u64)>,
}

/// pingora's line about one broken or refused client connection, if `record` is one: its text.
fn client_connection_error(record: &log::Record) -> Option<String> {
    if record.level() != log::Level::Error || !record.target().starts_with("pingora") {
        return None;
    }
    let text = record.args().to_string();
    (text.starts_with("Fail to proxy: Downstream")
        || text.starts_with("Downstream handshake")
        || text.starts_with("failed to send error response to downstream"))
    .then_some(text)
}

/// The kind of failure only: pingora's text goes on to name the upstream peer, whose SNI holds the
/// backend bucket with virtual-host addressing.
fn failure_kind(text: &str) -> &str {
    text.split(" context:").next().unwrap_or("")
}

impl log::Log for QuietLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        let Some(text) = client_connection_error(record) else {
            self.inner.log(record);
            return;
        };
        CLIENT_CONNECTION_ERRORS.fetch_add(1, Ordering::Relaxed);
        let mut summary = self.summary.lock().unwrap();
        summary.1 += 1;
        let now = Instant::now();
        if summary
            .0
            .is_none_or(|t| now.duration_since(t) >= SUMMARY_EVERY)
        {
            let count = summary.1;
            *summary = (Some(now), 0);
            drop(summary);
            let kind = failure_kind(&text);
            self.inner.log(
                &log::Record::builder()
                    .level(log::Level::Warn)
                    .target("s3p::connections")
                    .args(format_args!(
                        "{count} client connection(s) broke off, timed out or were refused \
                         (latest: {kind}); counted in s3p_client_connection_errors_total"
                    ))
                    .build(),
            );
        }
    }

    fn flush(&self) {
        self.inner.flush()
    }
}

/// Installs the logger (once, at start-up). Filter as env_logger's: `RUST_LOG`, default `info`.
pub fn init() {
    let inner =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    let level = inner.filter();
    if log::set_boxed_logger(Box::new(QuietLogger {
        inner,
        summary: Mutex::new((None, 0)),
    }))
    .is_ok()
    {
        log::set_max_level(level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_the_failure_not_the_backend() {
        let text = "Fail to proxy: Downstream WriteTimedout context: Peer: addr: 10.0.0.9:443, scheme: HTTPS, \
                    sni: real-bucket.s3.example.com cause:  context: writing body, timeout: 1s";
        assert_eq!(
            failure_kind(text),
            "Fail to proxy: Downstream WriteTimedout"
        );
        assert_eq!(
            failure_kind("Downstream handshake timeout"),
            "Downstream handshake timeout"
        );
    }
}
