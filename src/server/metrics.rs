//! Prometheus metrics, kept in memory and rendered in the text exposition format. Names follow Prometheus
//! conventions: `s3p_` prefix, `_total` counters, base units (seconds, bytes).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Latency buckets in seconds: sub-millisecond for listings served from memory up to slow backends.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds (kept integral so it can be atomic).
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: Default::default(),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                self.counts[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Label values are escaped as the exposition format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Requests and bytes of one (operation, data source).
#[derive(Default)]
struct RequestSeries {
    by_status: BTreeMap<u16, u64>,
    bytes: u64,
}

#[derive(Default)]
pub struct Metrics {
    /// operation -> data source -> series. Nested so that counting an existing series allocates nothing
    /// (the lookups borrow `&str`).
    requests: Mutex<BTreeMap<&'static str, BTreeMap<String, RequestSeries>>>,
    auth_failures: Mutex<BTreeMap<String, u64>>,
    /// (backend, kind) -> count
    backend_errors: Mutex<BTreeMap<(String, String), u64>>,
    pub request_duration: Histogram,
    pub backend_duration: Histogram,
    in_flight: AtomicI64,
    config_reloads: Mutex<BTreeMap<&'static str, u64>>,
    /// limit -> requests or connections it refused, cut or closed (README "Limits and abuse").
    limits: Mutex<BTreeMap<&'static str, u64>>,
    list_backend_calls: AtomicU64,
    /// Lookups at the governance service, by result (`found`, `denied`, `error`).
    entitlement_lookups: Mutex<BTreeMap<&'static str, u64>>,
    /// Decisions about service keys answered from the cache, and those that needed a lookup.
    entitlement_hits: AtomicU64,
    entitlement_misses: AtomicU64,
    pub entitlement_duration: Histogram,
    /// Keys the entitlement cache holds now (set after each lookup).
    entitlement_entries: AtomicU64,
    /// STS calls by (action, result): `issued` or `refused`.
    sts_calls: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl Metrics {
    pub fn request(
        &self,
        operation: &'static str,
        data_source: &str,
        status: u16,
        bytes: u64,
        duration: Duration,
    ) {
        {
            let mut requests = self.requests.lock().unwrap();
            let by_ds = requests.entry(operation).or_default();
            let series = match by_ds.get_mut(data_source) {
                Some(s) => s,
                None => by_ds.entry(data_source.to_string()).or_default(),
            };
            *series.by_status.entry(status).or_default() += 1;
            series.bytes += bytes;
        }
        self.request_duration.observe(duration);
    }

    pub fn auth_failure(&self, reason: &str) {
        *self
            .auth_failures
            .lock()
            .unwrap()
            .entry(reason.into())
            .or_default() += 1;
    }

    pub fn backend_error(&self, backend: &str, kind: &str) {
        *self
            .backend_errors
            .lock()
            .unwrap()
            .entry((backend.into(), kind.into()))
            .or_default() += 1;
    }

    pub fn config_reload(&self, ok: bool) {
        *self
            .config_reloads
            .lock()
            .unwrap()
            .entry(if ok { "success" } else { "failure" })
            .or_default() += 1;
    }

    /// A limit refused a request or connection, or cut a response short.
    /// An STS call ended: a session `issued`, or `refused`.
    pub fn sts_call(&self, action: &'static str, result: &'static str) {
        *self
            .sts_calls
            .lock()
            .unwrap()
            .entry((action, result))
            .or_default() += 1;
    }

    pub fn limit_hit(&self, limit: &'static str) {
        *self.limits.lock().unwrap().entry(limit).or_default() += 1;
    }

    /// A lookup at the governance service ended: `found`, `denied` or `error`.
    pub fn entitlement_lookup(&self, result: &'static str, took: Duration, entries: usize) {
        *self
            .entitlement_lookups
            .lock()
            .unwrap()
            .entry(result)
            .or_default() += 1;
        self.entitlement_duration.observe(took);
        self.entitlement_entries
            .store(entries as u64, Ordering::Relaxed);
    }

    /// A decision about a service key: from the cache, or not.
    pub fn entitlement_cache(&self, hit: bool) {
        let counter = if hit {
            &self.entitlement_hits
        } else {
            &self.entitlement_misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Backend listing calls one client listing page cost.
    pub fn list_backend_calls(&self, calls: usize) {
        self.list_backend_calls
            .fetch_add(calls as u64, Ordering::Relaxed);
    }

    pub fn enter(&self) -> i64 {
        self.in_flight.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition (version 0.0.4).
    /// The entitlement source's series (all zero with `source: file`).
    fn render_entitlements(&self, out: &mut String) {
        out.push_str("# HELP s3p_entitlement_lookups_total Lookups at the governance service, by result.\n# TYPE s3p_entitlement_lookups_total counter\n");
        let lookups = self.entitlement_lookups.lock().unwrap();
        for result in ["found", "denied", "error"] {
            let n = lookups.get(result).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "s3p_entitlement_lookups_total{{result=\"{result}\"}} {n}"
            );
        }
        drop(lookups);
        out.push_str("# HELP s3p_entitlement_cache_total Decisions about keys the governance service knows, from the cache (hit) or needing a lookup (miss).\n# TYPE s3p_entitlement_cache_total counter\n");
        let _ = writeln!(
            out,
            "s3p_entitlement_cache_total{{result=\"hit\"}} {}\ns3p_entitlement_cache_total{{result=\"miss\"}} {}",
            self.entitlement_hits.load(Ordering::Relaxed),
            self.entitlement_misses.load(Ordering::Relaxed)
        );
        out.push_str("# HELP s3p_entitlement_cache_entries Keys the entitlement cache holds (after the last lookup).\n# TYPE s3p_entitlement_cache_entries gauge\n");
        let _ = writeln!(
            out,
            "s3p_entitlement_cache_entries {}",
            self.entitlement_entries.load(Ordering::Relaxed)
        );
        out.push_str("# HELP s3p_entitlement_lookup_duration_seconds Time of one lookup at the governance service.\n# TYPE s3p_entitlement_lookup_duration_seconds histogram\n");
        self.entitlement_duration
            .render(out, "s3p_entitlement_lookup_duration_seconds");
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_entitlements(&mut out);
        out.push_str("# HELP s3p_requests_total Requests answered, by S3 operation, data source and HTTP status.\n");
        out.push_str("# TYPE s3p_requests_total counter\n");
        let requests = self.requests.lock().unwrap();
        for (op, by_ds) in requests.iter() {
            for (ds, series) in by_ds {
                for (status, n) in &series.by_status {
                    let _ = writeln!(
                        out,
                        "s3p_requests_total{{operation=\"{}\",data_source=\"{}\",status=\"{status}\"}} {n}",
                        label(op),
                        label(ds)
                    );
                }
            }
        }
        out.push_str("# HELP s3p_response_bytes_total Body bytes sent to clients.\n# TYPE s3p_response_bytes_total counter\n");
        for (op, by_ds) in requests.iter() {
            for (ds, series) in by_ds {
                let _ = writeln!(
                    out,
                    "s3p_response_bytes_total{{operation=\"{}\",data_source=\"{}\"}} {}",
                    label(op),
                    label(ds),
                    series.bytes
                );
            }
        }
        drop(requests);
        out.push_str(
            "# HELP s3p_request_duration_seconds Time from request to the end of the response.\n",
        );
        out.push_str("# TYPE s3p_request_duration_seconds histogram\n");
        self.request_duration
            .render(&mut out, "s3p_request_duration_seconds");
        out.push_str("# HELP s3p_backend_duration_seconds Time from sending a request to a backend to its response header.\n");
        out.push_str("# TYPE s3p_backend_duration_seconds histogram\n");
        self.backend_duration
            .render(&mut out, "s3p_backend_duration_seconds");
        out.push_str("# HELP s3p_auth_failures_total Refused authentications, by S3 error code.\n# TYPE s3p_auth_failures_total counter\n");
        for (reason, n) in self.auth_failures.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "s3p_auth_failures_total{{reason=\"{}\"}} {n}",
                label(reason)
            );
        }
        out.push_str("# HELP s3p_sts_calls_total STS calls (AssumeRole, AssumeRoleWithWebIdentity), by result: a session issued, or refused. Requests refused for an invalid or expired session token count in s3p_auth_failures_total (InvalidToken, ExpiredToken).\n# TYPE s3p_sts_calls_total counter\n");
        for ((action, result), n) in self.sts_calls.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "s3p_sts_calls_total{{action=\"{action}\",result=\"{result}\"}} {n}"
            );
        }
        out.push_str("# HELP s3p_backend_errors_total Backend failures and error answers, by backend and kind.\n# TYPE s3p_backend_errors_total counter\n");
        for ((backend, kind), n) in self.backend_errors.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "s3p_backend_errors_total{{backend=\"{}\",kind=\"{}\"}} {n}",
                label(backend),
                label(kind)
            );
        }
        out.push_str("# HELP s3p_requests_in_flight Requests being handled now.\n# TYPE s3p_requests_in_flight gauge\n");
        let _ = writeln!(out, "s3p_requests_in_flight {}", self.in_flight());
        out.push_str("# HELP s3p_limit_hits_total Requests and connections refused, cut or closed by a limit, by limit.\n# TYPE s3p_limit_hits_total counter\n");
        for (limit, n) in self.limits.lock().unwrap().iter() {
            let _ = writeln!(out, "s3p_limit_hits_total{{limit=\"{limit}\"}} {n}");
        }
        out.push_str("# HELP s3p_client_connection_errors_total Client connections that broke off, timed out or were refused (pingora's downstream errors).\n# TYPE s3p_client_connection_errors_total counter\n");
        let _ = writeln!(
            out,
            "s3p_client_connection_errors_total {}",
            crate::server::logging::CLIENT_CONNECTION_ERRORS.load(Ordering::Relaxed)
        );
        out.push_str("# HELP s3p_requests_rejected_by_pingora_total Requests pingora answered itself before s3p saw them (unparsable heads); no audit line exists for them.\n# TYPE s3p_requests_rejected_by_pingora_total counter\n");
        let _ = writeln!(
            out,
            "s3p_requests_rejected_by_pingora_total {}",
            crate::server::connections::REJECTED_BY_PINGORA.load(Ordering::Relaxed)
        );
        out.push_str("# HELP s3p_list_backend_calls_total Backend listing calls made for client listings.\n# TYPE s3p_list_backend_calls_total counter\n");
        let _ = writeln!(
            out,
            "s3p_list_backend_calls_total {}",
            self.list_backend_calls.load(Ordering::Relaxed)
        );
        out.push_str("# HELP s3p_config_reloads_total Configuration reloads, by result.\n# TYPE s3p_config_reloads_total counter\n");
        for (result, n) in self.config_reloads.lock().unwrap().iter() {
            let _ = writeln!(out, "s3p_config_reloads_total{{result=\"{result}\"}} {n}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_escaped_labels() {
        let m = Metrics::default();
        m.request("GetObject", "sales", 200, 10, Duration::from_millis(3));
        m.request("GetObject", "sales", 200, 5, Duration::from_millis(30));
        m.request("ListObjectsV2", "", 403, 0, Duration::from_micros(200));
        m.auth_failure("SignatureDoesNotMatch");
        m.backend_error("gar\"age", "connect");
        m.limit_hit("list_backend_calls");
        m.list_backend_calls(3);
        let text = m.render();
        assert!(text.contains("s3p_limit_hits_total{limit=\"list_backend_calls\"} 1\n"));
        assert!(text.contains("s3p_list_backend_calls_total 3\n"));
        assert!(text.contains(
            "s3p_requests_total{operation=\"GetObject\",data_source=\"sales\",status=\"200\"} 2\n"
        ));
        assert!(text.contains(
            "s3p_response_bytes_total{operation=\"GetObject\",data_source=\"sales\"} 15\n"
        ));
        assert!(
            text.contains("s3p_request_duration_seconds_bucket{le=\"0.005\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("s3p_request_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("s3p_request_duration_seconds_count 3\n"));
        assert!(text.contains("s3p_auth_failures_total{reason=\"SignatureDoesNotMatch\"} 1\n"));
        assert!(
            text.contains("s3p_backend_errors_total{backend=\"gar\\\"age\",kind=\"connect\"} 1\n")
        );
        // Every sample line belongs to a declared family.
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(
                families.iter().any(|f| name == *f
                    || name
                        .strip_prefix(f)
                        .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s))),
                "{line}"
            );
        }
    }
}
