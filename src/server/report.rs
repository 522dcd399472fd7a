//! What a finished request leaves behind: its metrics, its audit lines (one per request, and one per
//! object of a DeleteObjects batch) written as `audit_overflow` says, and a debug line.

use super::audit::{now_rfc3339, AuditRecord, SCHEMA_VERSION};
use super::Runtime;
use crate::config::{AuditOverflow, Config};
use crate::error::FailureKind;
use crate::gateway::{AuditFacts, Verdict};
use crate::upload::delete::ObjectOutcome;
use std::time::Duration;

/// The longest a request waits for room in a full audit buffer (`audit_overflow: backpressure`) before
/// its line is dropped after all (counted), so that no request hangs for ever behind a dead consumer.
const AUDIT_MAX_WAIT: Duration = Duration::from_secs(30);

/// A finished request, as reported.
pub struct Finished<'a> {
    pub request_id: &'a str,
    pub client: &'a str,
    pub audit: &'a AuditFacts,
    /// The HTTP status sent (0 if none could be).
    pub status: u16,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub duration: Duration,
    pub backend_latency: Option<Duration>,
    /// The backend (by configured name) that failed this object request, and how.
    pub backend_failure: Option<(&'a str, FailureKind)>,
    /// The objects of a DeleteObjects request.
    pub batch: &'a [ObjectOutcome],
    /// How pingora saw the request fail, if it did (debug line only).
    pub failure: Option<String>,
    /// Where a service key's decision came from (`service`, `service-cache`).
    pub key_source: Option<&'a str>,
}

/// Records a finished request.
pub async fn report(runtime: &Runtime, config: &Config, f: &Finished<'_>) {
    let audit = f.audit;
    // Metric labels only ever hold configured names of allowed requests: a client cannot grow the
    // label set by asking for names that do not exist.
    let data_source = match (&audit.data_source, audit.verdict) {
        (Some(ds), Verdict::Allowed) if config.data_sources.contains_key(ds) => ds.as_str(),
        _ => "",
    };
    let metrics = &runtime.metrics;
    metrics.request(
        audit.operation,
        data_source,
        f.status,
        f.bytes_sent,
        f.duration,
    );
    if let Some(d) = f.backend_latency {
        metrics.backend_duration.observe(d);
    }
    if let Some((backend, kind)) = f.backend_failure {
        metrics.backend_error(backend, &kind.label());
    }
    let backend_ms = f.backend_latency.map(|d| d.as_secs_f64() * 1000.0);
    let request_line = AuditRecord {
        version: SCHEMA_VERSION,
        time: now_rfc3339(),
        request_id: f.request_id,
        api_key: audit.key_name.as_deref(),
        client: f.client,
        operation: audit.operation,
        data_source: audit.data_source.as_deref(),
        resource: &audit.resource,
        decision: audit.verdict,
        reason: audit.reason,
        status: f.status,
        bytes_sent: f.bytes_sent,
        bytes_received: f.bytes_received,
        duration_ms: f.duration.as_secs_f64() * 1000.0,
        backend_ms,
        batch: None,
        key_source: f.key_source,
        session: audit.session.as_deref(),
    };
    write(runtime, config, &request_line).await;
    // One line per object of a DeleteObjects request: which object went, which did not and why.
    for o in f.batch {
        let resource = format!("/{}/{}", config.bucket, o.key);
        let facts = AuditFacts::of_batch_object(o.error, o.data_source.is_some());
        let line = AuditRecord {
            operation: "DeleteObject",
            data_source: o.data_source.as_deref(),
            resource: &resource,
            decision: facts.verdict,
            reason: facts.reason,
            bytes_sent: 0,
            bytes_received: 0,
            backend_ms: None,
            batch: Some(audit.operation),
            time: request_line.time.clone(),
            ..request_line
        };
        write(runtime, config, &line).await;
    }
    // The audit line is the record of access; this one is for debugging (RUST_LOG=s3p=debug).
    log::debug!(
        "request_id={} client={} key={:?} op={} resource={:?} status={} error={} bytes={} duration_ms={:.3} backend_ms={}{}",
        f.request_id,
        f.client,
        audit.key_name.as_deref().unwrap_or("-"),
        audit.operation,
        audit.resource,
        f.status,
        audit.reason.unwrap_or("-"),
        f.bytes_sent,
        f.duration.as_secs_f64() * 1000.0,
        backend_ms.map(|d| format!("{d:.3}")).unwrap_or_else(|| "-".into()),
        f.failure.as_deref().map(|e| format!(" failure={e}")).unwrap_or_default(),
    );
}

/// Writes one audit line as `audit_overflow` says: dropped when the buffer is full, or waited for.
async fn write(runtime: &Runtime, config: &Config, line: &AuditRecord<'_>) {
    match config.audit_overflow {
        AuditOverflow::Drop => runtime.audit.write(line),
        AuditOverflow::Backpressure => runtime.audit.write_waiting(line, AUDIT_MAX_WAIT).await,
    }
}
