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

/// Whether a record is pingora's line about one broken or refused client connection.
fn is_client_connection_error(record: &log::Record) -> bool {
    if record.level() != log::Level::Error || !record.target().starts_with("pingora") {
        return false;
    }
    let text = record.args().to_string();
    text.starts_with("Fail to proxy: Downstream")
        || text.starts_with("Downstream handshake")
        || text.starts_with("failed to send error response to downstream")
}

impl log::Log for QuietLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        if !is_client_connection_error(record) {
            self.inner.log(record);
            return;
        }
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
            self.inner.log(
                &log::Record::builder()
                    .level(log::Level::Warn)
                    .target("s3p::connections")
                    .args(format_args!(
                        "{count} client connection(s) broke off, timed out or were refused \
                         (latest: {}); counted in s3p_client_connection_errors_total",
                        record.args()
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
