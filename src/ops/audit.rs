//! The audit log: one JSON line per request, to standard output or a file that is reopened on SIGHUP (so
//! logrotate can move it). Lines name the API key by its display name, never the key or a secret.

use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::Mutex;

pub use crate::gateway::Verdict;

#[derive(Debug, Serialize)]
pub struct AuditRecord<'a> {
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
    pub duration_ms: f64,
    pub backend_ms: Option<f64>,
}

enum Sink {
    Stdout,
    File { path: String, file: File },
}

pub struct AuditLog {
    sink: Mutex<Sink>,
}

impl AuditLog {
    /// `-` is standard output; anything else a file opened for appending.
    pub fn open(target: &str) -> io::Result<AuditLog> {
        let sink = if target == "-" {
            Sink::Stdout
        } else {
            Sink::File {
                path: target.to_string(),
                file: OpenOptions::new().create(true).append(true).open(target)?,
            }
        };
        Ok(AuditLog {
            sink: Mutex::new(sink),
        })
    }

    /// Reopens the file (after logrotate moved it). Standard output needs nothing.
    pub fn reopen(&self) -> io::Result<()> {
        let mut sink = self.sink.lock().unwrap();
        if let Sink::File { path, file } = &mut *sink {
            *file = OpenOptions::new().create(true).append(true).open(&*path)?;
        }
        Ok(())
    }

    /// Lines are written as they come (one write each); nothing is held back to flush.
    pub fn flush(&self) {
        if let Sink::File { file, .. } = &mut *self.sink.lock().unwrap() {
            let _ = file.flush();
        }
    }

    pub fn write(&self, record: &AuditRecord) {
        let mut line = match serde_json::to_vec(record) {
            Ok(l) => l,
            Err(e) => {
                log::error!("audit record not serialisable: {e}");
                return;
            }
        };
        line.push(b'\n');
        // One write per line, so concurrent lines never interleave.
        let result = match &mut *self.sink.lock().unwrap() {
            Sink::Stdout => io::stdout().lock().write_all(&line),
            Sink::File { file, .. } => file.write_all(&line),
        };
        if let Err(e) = result {
            log::error!("audit log write failed: {e}");
        }
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
            duration_ms: 1.5,
            backend_ms: Some(1.0),
        };
        log.write(&rec);
        std::fs::rename(&path, dir.join("audit.log.1")).unwrap();
        log.reopen().unwrap();
        log.write(&rec);
        let old = std::fs::read_to_string(dir.join("audit.log.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!(old.lines().count(), 1);
        assert_eq!(new.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(new.trim()).unwrap();
        assert_eq!(v["decision"], "allowed");
        assert_eq!(v["resource"], "/immuta/sales/a\"b");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
