//! The audit log: one JSON line per request, to standard output or a file that is reopened on SIGHUP (so
//! logrotate can move it). Lines name the API key by its display name, never the key or a secret.

use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use crate::gateway::Verdict;

/// The version of the audit line's schema (the `v` field). Fields are only ever added within a
/// version; a removed or re-typed field makes a new one. README "Audit log" documents every field.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord<'a> {
    /// [`SCHEMA_VERSION`].
    #[serde(rename = "v")]
    pub version: u32,
    pub time: String,
    pub request_id: &'a str,
    pub api_key: Option<&'a str>,
    pub client: &'a str,
    pub operation: &'a str,
    pub data_source: Option<&'a str>,
    /// The virtual key or listing prefix (`/immuta/<ds>/<key>`).
    pub resource: &'a str,
    pub decision: Verdict,
    /// The S3 error code when the answer is an error.
    pub reason: Option<&'a str>,
    pub status: u16,
    pub bytes_sent: u64,
    /// Request body bytes read from the client (uploads).
    pub bytes_received: u64,
    pub duration_ms: f64,
    pub backend_ms: Option<f64>,
    /// On a line about one object of a multi-object request: that request's operation
    /// (`DeleteObjects`); the request has its own line too, with the same `request_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<&'a str>,
    /// For a key the governance service knows: `service` (looked up for this request) or
    /// `service-cache` (from the decision cache). Absent for configured keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_source: Option<&'a str>,
    /// For temporary credentials (`api_key` names their parent), and for an STS call that issued
    /// one: the session, `<role>/<session name>#<8 hex of its id>` (never a secret or token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<&'a str>,
}

enum Sink {
    Stdout,
    File { path: String, file: File },
}

impl Sink {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stdout => io::stdout().lock().write_all(bytes),
            Sink::File { file, .. } => file.write_all(bytes),
        }
    }
}

/// Lines waiting for the writer. Requests only append here (a memory copy under a short lock): a slow
/// consumer of the log (a blocked pipe, a full disk) can never stall request handling.
struct Pending {
    lines: Vec<u8>,
}

struct Shared {
    pending: Mutex<Pending>,
    /// The pending bytes, readable without the lock (`is_full` is asked on every request).
    pending_len: std::sync::atomic::AtomicUsize,
    /// Held by whoever writes to the sink (the writer thread, a flush, a reopen).
    sink: Mutex<Sink>,
    /// Lines dropped because the buffer was full (`s3p_audit_lines_dropped_total`).
    dropped: AtomicU64,
    /// When a line was last dropped: milliseconds since `opened`, plus one (0: never).
    last_drop_ms: AtomicU64,
    opened: std::time::Instant,
    limit: usize,
}

/// The audit log. Lines are buffered in memory and written by one thread every
/// [`FLUSH_INTERVAL`] in one write each time, so a request costs no syscall and wakes no thread. The
/// buffer is bounded ([`BUFFER_LIMIT`]); what happens past it is the operator's choice
/// (`audit_overflow`): lines wait for room while new requests are refused (back-pressure), or lines
/// are dropped and counted (the proxy keeps serving, `/ready` says lines are lost).
pub struct AuditLog {
    shared: Arc<Shared>,
}

/// How often buffered lines are written out (the most an audit line lags its request).
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// The most buffered audit data: about 40,000 lines.
pub const BUFFER_LIMIT: usize = 16 << 20;

impl AuditLog {
    /// `-` is standard output; anything else a file opened for appending. Starts the writer thread.
    pub fn open(target: &str) -> io::Result<AuditLog> {
        AuditLog::with_limit(target, BUFFER_LIMIT)
    }

    fn with_limit(target: &str, limit: usize) -> io::Result<AuditLog> {
        let sink = if target == "-" {
            Sink::Stdout
        } else {
            Sink::File {
                path: target.to_string(),
                file: OpenOptions::new().create(true).append(true).open(target)?,
            }
        };
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending { lines: Vec::new() }),
            pending_len: std::sync::atomic::AtomicUsize::new(0),
            sink: Mutex::new(sink),
            dropped: AtomicU64::new(0),
            last_drop_ms: AtomicU64::new(0),
            opened: std::time::Instant::now(),
            limit,
        });
        // The thread holds only a weak reference: it ends with the log.
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("s3p-audit".into())
            .spawn(move || {
                let mut spare = Vec::new();
                loop {
                    std::thread::sleep(FLUSH_INTERVAL);
                    let Some(shared) = weak.upgrade() else { return };
                    spare = shared.write_out(spare);
                }
            })?;
        Ok(AuditLog { shared })
    }

    /// Reopens the file (after logrotate moved it). Standard output needs nothing.
    pub fn reopen(&self) -> io::Result<()> {
        let mut sink = self.shared.sink.lock().unwrap();
        if let Sink::File { path, file } = &mut *sink {
            *file = OpenOptions::new().create(true).append(true).open(&*path)?;
        }
        Ok(())
    }

    /// Writes every buffered line now (at exit).
    pub fn flush(&self) {
        self.shared.write_out(Vec::new());
        if let Sink::File { file, .. } = &mut *self.shared.sink.lock().unwrap() {
            let _ = file.flush();
        }
    }

    /// Lines dropped so far because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Writes a line, or drops and counts it when the buffer is full (`audit_overflow: drop`).
    pub fn write(&self, record: &AuditRecord) {
        if let Some(line) = line_of(record) {
            if !self.try_append(&line) {
                self.count_dropped();
            }
        }
    }

    /// Writes a line, waiting for room while the buffer is full (`audit_overflow: backpressure`). A
    /// consumer stalled past `max_wait` loses the line after all (counted), so that a request never
    /// hangs for ever.
    pub async fn write_waiting(&self, record: &AuditRecord<'_>, max_wait: Duration) {
        let Some(line) = line_of(record) else { return };
        let deadline = std::time::Instant::now() + max_wait;
        while !self.try_append(&line) {
            if std::time::Instant::now() >= deadline {
                self.count_dropped();
                return;
            }
            tokio::time::sleep(FLUSH_INTERVAL / 5).await;
        }
    }

    /// The buffer is full (or within a few lines of it): new requests would have nowhere to be audited.
    pub fn is_full(&self) -> bool {
        self.shared.pending_len.load(Ordering::Relaxed) + 64 * 1024 > self.shared.limit
    }

    /// Lines were dropped within the last `window`: the audit log is losing lines now.
    pub fn losing_lines(&self, window: Duration) -> bool {
        let last = self.shared.last_drop_ms.load(Ordering::Relaxed);
        last != 0
            && self.shared.opened.elapsed().as_millis() as u64 + 1
                < last + window.as_millis() as u64
    }

    fn try_append(&self, line: &[u8]) -> bool {
        let mut pending = self.shared.pending.lock().unwrap();
        if pending.lines.len() + line.len() > self.shared.limit {
            return false;
        }
        pending.lines.extend_from_slice(line);
        self.shared
            .pending_len
            .store(pending.lines.len(), Ordering::Relaxed);
        true
    }

    fn count_dropped(&self) {
        let now = self.shared.opened.elapsed().as_millis() as u64 + 1;
        self.shared.last_drop_ms.store(now, Ordering::Relaxed);
        if self.shared.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
            log::error!(
                "the audit log is not keeping up: lines are being dropped (s3p_audit_lines_dropped_total)"
            );
        }
    }
}

/// One record as a JSON line.
fn line_of(record: &AuditRecord) -> Option<Vec<u8>> {
    let mut line = Vec::with_capacity(384);
    if let Err(e) = serde_json::to_writer(&mut line, record) {
        log::error!("audit record not serialisable: {e}");
        return None;
    }
    line.push(b'\n');
    Some(line)
}

impl Shared {
    /// Writes out what is pending; returns an empty buffer to reuse.
    fn write_out(&self, mut spare: Vec<u8>) -> Vec<u8> {
        spare.clear();
        {
            let mut pending = self.pending.lock().unwrap();
            if pending.lines.is_empty() {
                return spare;
            }
            std::mem::swap(&mut pending.lines, &mut spare);
            self.pending_len.store(0, Ordering::Relaxed);
        }
        // Whole lines in one write: concurrent writers never interleave, and the file sees only whole
        // lines (a write that fails part-way loses the batch, logged).
        if let Err(e) = self.sink.lock().unwrap().write_all(&spare) {
            log::error!("audit log write failed: {e}");
        }
        // Keep a buffer of ordinary size for the next round, not one a burst grew.
        if spare.capacity() > 1 << 20 {
            spare = Vec::new();
        }
        spare
    }
}

/// RFC 3339 UTC time with milliseconds.
pub fn now_rfc3339() -> String {
    crate::timefmt::format_rfc3339_millis(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_one_json_line_per_record_and_reopens() {
        let dir = std::env::temp_dir().join(format!("s3p-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.log");
        let log = AuditLog::open(path.to_str().unwrap()).unwrap();
        let rec = AuditRecord {
            version: SCHEMA_VERSION,
            time: now_rfc3339(),
            request_id: "R1",
            api_key: Some("Alice"),
            client: "127.0.0.1:1",
            operation: "GetObject",
            data_source: Some("sales"),
            resource: "/immuta/sales/a\"b",
            decision: Verdict::Allowed,
            reason: None,
            status: 200,
            bytes_sent: 3,
            bytes_received: 0,
            duration_ms: 1.5,
            backend_ms: Some(1.0),
            batch: None,
            key_source: None,
            session: None,
        };
        log.write(&rec);
        log.flush();
        std::fs::rename(&path, dir.join("audit.log.1")).unwrap();
        log.reopen().unwrap();
        log.write(&rec);
        // Written by the writer thread within its interval, without a flush.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(&path)
            .unwrap_or_default()
            .is_empty()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let old = std::fs::read_to_string(dir.join("audit.log.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!(old.lines().count(), 1);
        assert_eq!(new.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(new.trim()).unwrap();
        assert_eq!(v["decision"], "allowed");
        assert_eq!(v["v"], SCHEMA_VERSION);
        assert_eq!(v["resource"], "/immuta/sales/a\"b");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_stalled_consumer_drops_and_counts_lines_instead_of_blocking() {
        let dir = std::env::temp_dir().join(format!("s3p-audit-full-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.log");
        // Room for about two lines.
        let log = AuditLog::with_limit(path.to_str().unwrap(), 600).unwrap();
        let rec = AuditRecord {
            version: SCHEMA_VERSION,
            time: now_rfc3339(),
            request_id: "R2",
            api_key: None,
            client: "127.0.0.1:1",
            operation: "GetObject",
            data_source: None,
            resource: "/immuta/sales/k",
            decision: Verdict::Denied,
            reason: Some("AccessDenied"),
            status: 403,
            bytes_sent: 0,
            bytes_received: 0,
            duration_ms: 0.1,
            backend_ms: None,
            batch: None,
            key_source: None,
            session: None,
        };
        // The sink is held (a consumer that does not read): writes return at once.
        let held = log.shared.sink.lock().unwrap();
        let started = std::time::Instant::now();
        for _ in 0..1000 {
            log.write(&rec);
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        drop(held);
        let dropped = log.dropped();
        assert!((990..=999).contains(&dropped), "{dropped}");
        assert!(log.losing_lines(Duration::from_secs(10)));
        log.flush();
        // The writer thread may still be writing the batch it took while the sink was held.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut lines = 0;
        while std::time::Instant::now() < deadline {
            lines = std::fs::read_to_string(&path).unwrap().lines().count() as u64;
            if lines == 1000 - dropped {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(lines, 1000 - dropped);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn back_pressure_waits_for_room_and_loses_nothing() {
        let dir = std::env::temp_dir().join(format!("s3p-audit-wait-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.log");
        let log = AuditLog::with_limit(path.to_str().unwrap(), 600).unwrap();
        let rec = AuditRecord {
            version: SCHEMA_VERSION,
            time: now_rfc3339(),
            request_id: "R3",
            api_key: None,
            client: "127.0.0.1:1",
            operation: "DeleteObject",
            data_source: Some("sandbox"),
            resource: "/immuta/sandbox/k",
            decision: Verdict::Allowed,
            reason: None,
            status: 200,
            bytes_sent: 0,
            bytes_received: 0,
            duration_ms: 0.1,
            backend_ms: None,
            batch: Some("DeleteObjects"),
            key_source: None,
            session: None,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        // The consumer stalls for 300 ms: writers wait, none is dropped.
        let held = log.shared.sink.lock().unwrap();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                rt.block_on(async {
                    for _ in 0..20 {
                        log.write_waiting(&rec, Duration::from_secs(10)).await;
                    }
                })
            });
            std::thread::sleep(Duration::from_millis(300));
            assert!(log.is_full());
            drop(held);
        });
        log.flush();
        assert_eq!(log.dropped(), 0);
        assert!(!log.losing_lines(Duration::from_secs(10)));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 20);
        let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(v["batch"], "DeleteObjects");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
