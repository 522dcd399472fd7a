//! The audit log: one JSON line per request, to standard output or a file that is reopened on SIGHUP (so
//! logrotate can move it). Lines name the API key by its display name, never the key or a secret.

use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::mpsc;

/// What s3p decided about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Authenticated and entitled (the answer may still be an error from the backend, e.g. NoSuchKey).
    Allowed,
    /// Refused by authentication or entitlement.
    Denied,
    /// Not decided: a malformed request, or s3p could not serve it.
    Failed,
}

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
    pub decision: Decision,
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

impl Sink {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(bytes)?;
                out.flush()
            }
            Sink::File { file, .. } => file.write_all(bytes),
        }
    }
}

enum Message {
    Line(Vec<u8>),
    Reopen(mpsc::Sender<io::Result<()>>),
    Flush(mpsc::Sender<()>),
}

/// The audit log. Requests hand their line to a writer thread, which writes whatever has queued up in
/// one system call: under load that is one write per batch instead of one per request, and the
/// request path never waits on the disk. `flush` waits until every line handed over is written.
pub struct AuditLog {
    tx: mpsc::Sender<Message>,
}

/// A batch is written once it reaches this size, or when the queue runs empty.
const BATCH_BYTES: usize = 64 * 1024;

fn writer(mut sink: Sink, rx: mpsc::Receiver<Message>) {
    let mut buf = Vec::with_capacity(BATCH_BYTES);
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Message::Line(line) => {
                    buf.extend_from_slice(&line);
                    if buf.len() >= BATCH_BYTES {
                        flush_buf(&mut sink, &mut buf);
                    }
                }
                Message::Reopen(done) => {
                    flush_buf(&mut sink, &mut buf);
                    let result = match &mut sink {
                        Sink::File { path, file } => OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&*path)
                            .map(|f| *file = f),
                        Sink::Stdout => Ok(()),
                    };
                    let _ = done.send(result);
                }
                Message::Flush(done) => {
                    flush_buf(&mut sink, &mut buf);
                    let _ = done.send(());
                }
            }
            next = rx.try_recv().ok();
        }
        // The queue ran empty: write what has gathered.
        flush_buf(&mut sink, &mut buf);
    }
}

fn flush_buf(sink: &mut Sink, buf: &mut Vec<u8>) {
    if buf.is_empty() {
        return;
    }
    if let Err(e) = sink.write_all(buf) {
        log::error!("audit log write failed: {e}");
    }
    buf.clear();
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
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("s3p-audit".into())
            .spawn(move || writer(sink, rx))?;
        Ok(AuditLog { tx })
    }

    /// Reopens the file (after logrotate moved it), after writing every line queued before. Standard
    /// output needs nothing.
    pub fn reopen(&self) -> io::Result<()> {
        let (done, wait) = mpsc::channel();
        self.tx
            .send(Message::Reopen(done))
            .map_err(|_| io::Error::other("the audit writer stopped"))?;
        wait.recv()
            .map_err(|_| io::Error::other("the audit writer stopped"))?
    }

    /// Waits until every line handed over so far is written.
    pub fn flush(&self) {
        let (done, wait) = mpsc::channel();
        if self.tx.send(Message::Flush(done)).is_ok() {
            let _ = wait.recv();
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
        if self.tx.send(Message::Line(line)).is_err() {
            log::error!("audit log write failed: the writer stopped");
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
            decision: Decision::Allowed,
            reason: None,
            status: 200,
            bytes_sent: 3,
            duration_ms: 1.5,
            backend_ms: Some(1.0),
        };
        log.write(&rec);
        log.flush();
        std::fs::rename(&path, dir.join("audit.log.1")).unwrap();
        log.reopen().unwrap();
        log.write(&rec);
        log.flush();
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
