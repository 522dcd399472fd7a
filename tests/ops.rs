//! Operations end to end, each for real: the audit file, a Prometheus parse of /metrics, /health and
//! /ready, a real TLS handshake (and a certificate reloaded by a real SIGHUP), s3p in front of s3p over
//! HTTPS with a private CA, configuration reload under continuous load, SIGTERM draining a slow download,
//! and the limits.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

const BIG_KEY: &str = "ops/big-20MiB.bin";
const BIG_LEN: usize = 20 << 20;

/// The fixture plus one big object for slow downloads.
fn setup() -> &'static Fixture {
    static DONE: OnceLock<()> = OnceLock::new();
    let f = fixture();
    DONE.get_or_init(|| {
        let body: Vec<u8> = (0..BIG_LEN).map(|i| (i % 253) as u8).collect();
        runtime().block_on(async {
            f.garage
                .client()
                .put_object()
                .bucket(ALPHA_BUCKET)
                .key(BIG_KEY)
                .body(ByteStream::from(body))
                .send()
                .await
                .unwrap();
        });
    });
    f
}

/// A config derived from the standard one, with extra top-level lines and limits.
fn config_with(f: &Fixture, top: &str, limits: &str) -> String {
    let mut yaml =
        standard_config(&f.garage).replace("bucket: immuta\n", &format!("bucket: immuta\n{top}"));
    if !limits.is_empty() {
        yaml.push_str(&format!("limits:\n{limits}"));
    }
    yaml
}

fn dir(name: &str) -> PathBuf {
    setup().dir.join(name)
}

fn http_get(port: u16, path: &str) -> RawResponse {
    raw(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        "GET",
        path,
        &[],
    )
}

#[test]
#[allow(clippy::type_complexity)]
fn audit_log_has_one_line_per_request_and_no_secret() {
    let f = setup();
    let audit = dir("audit").join("audit.log");
    std::fs::create_dir_all(audit.parent().unwrap()).unwrap();
    let s = S3p::start(
        &dir("s3p-audit"),
        &config_with(f, &format!("audit_log: {}\n", audit.display()), ""),
    );
    let a = legacy(ALICE);
    let b = legacy(BOB);
    let cases: Vec<(
        &str,
        String,
        Option<&str>,
        &str,
        &str,
        u16,
        Option<&str>,
        Option<&str>,
    )> = vec![
        // method, target, auth, operation, decision, status, reason, data source
        (
            "GET",
            "/s3p".into(),
            Some(&a),
            "ListBuckets",
            "allowed",
            200,
            None,
            None,
        ),
        (
            "GET",
            "/s3p/immuta?list-type=2&prefix=sales/".into(),
            Some(&a),
            "ListObjectsV2",
            "allowed",
            200,
            None,
            Some("sales"),
        ),
        (
            "GET",
            "/s3p/immuta?prefix=data/".into(),
            Some(&b),
            "ListObjects",
            "allowed",
            200,
            None,
            Some("data"),
        ),
        (
            "GET",
            "/s3p/immuta/sales/plain.txt".into(),
            Some(&a),
            "GetObject",
            "allowed",
            200,
            None,
            Some("sales"),
        ),
        (
            "HEAD",
            "/s3p/immuta/sales/plain.txt".into(),
            Some(&a),
            "HeadObject",
            "allowed",
            200,
            None,
            Some("sales"),
        ),
        (
            "GET",
            "/s3p/immuta/sales/missing".into(),
            Some(&a),
            "GetObject",
            "allowed",
            404,
            Some("NoSuchKey"),
            Some("sales"),
        ),
        (
            "GET",
            "/s3p/immuta/data-private/salaries.csv".into(),
            Some(&b),
            "GetObject",
            "denied",
            403,
            Some("AccessDenied"),
            Some("data-private"),
        ),
        (
            "GET",
            "/s3p/immuta/sales/plain.txt".into(),
            None,
            "Unknown",
            "denied",
            403,
            Some("AccessDenied"),
            None,
        ),
        (
            "GET",
            "/s3p/immuta/sales/plain.txt".into(),
            Some("AWS nobody:immuta"),
            "Unknown",
            "denied",
            403,
            Some("InvalidAccessKeyId"),
            None,
        ),
        (
            "GET",
            "/s3p/immuta?acl".into(),
            Some(&a),
            "Unknown",
            "failed",
            501,
            Some("NotImplemented"),
            None,
        ),
    ];
    let mut ids = Vec::new();
    for (method, target, auth, ..) in &cases {
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
        let r = raw(s.addr(), method, target, &headers);
        ids.push(r.header("x-amz-request-id").unwrap().to_string());
    }
    // Lines are written after each response: wait for the last one.
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        if text.contains(ids.last().unwrap().as_str()) || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect(l))
        .collect();
    assert_eq!(lines.len(), cases.len(), "{text}");
    for ((method, target, _, op, decision, status, reason, ds), id) in cases.iter().zip(&ids) {
        let matching: Vec<&serde_json::Value> = lines
            .iter()
            .filter(|l| l["request_id"] == id.as_str())
            .collect();
        assert_eq!(matching.len(), 1, "{method} {target}");
        let l = matching[0];
        let ctx = format!("{method} {target}: {l}");
        assert_eq!(l["operation"], *op, "{ctx}");
        assert_eq!(l["decision"], *decision, "{ctx}");
        assert_eq!(l["status"], *status, "{ctx}");
        assert_eq!(l["reason"].as_str(), *reason, "{ctx}");
        assert_eq!(l["data_source"].as_str(), *ds, "{ctx}");
        assert!(l["time"].as_str().unwrap().ends_with('Z'), "{ctx}");
        assert!(
            l["client"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{ctx}"
        );
        assert!(l["duration_ms"].as_f64().unwrap() >= 0.0);
    }
    let get = lines
        .iter()
        .find(|l| l["request_id"] == ids[3].as_str())
        .unwrap();
    assert_eq!(get["api_key"], "Alice");
    assert_eq!(get["bytes_sent"], 17);
    assert!(get["backend_ms"].as_f64().is_some());
    assert_eq!(
        lines
            .iter()
            .find(|l| l["request_id"] == ids[7].as_str())
            .unwrap()["api_key"],
        serde_json::Value::Null
    );
    // Neither the audit file nor the process log holds a key, a secret or a backend credential.
    let log = s.log();
    for secret in [
        ALICE,
        ALICE_SECRET,
        BOB,
        BOB_SECRET,
        GARAGE_KEY_ID,
        GARAGE_SECRET,
        "test-token-secret-0123456789",
    ] {
        assert!(!text.contains(secret), "audit leaked {secret}");
        assert!(!log.contains(secret), "log leaked {secret}");
    }
}

/// Parses the Prometheus text format strictly enough to catch malformed output.
/// (metric name, labels, value)
type Sample = (String, Vec<(String, String)>, f64);

fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") || line.is_empty() {
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment: {line}");
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                let labels = body
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p
                            .split_once("=\"")
                            .unwrap_or_else(|| panic!("bad label: {line}"));
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (n.to_string(), labels)
            }
            None => (series.to_string(), vec![]),
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad name: {line}"
        );
        samples.push((name, labels, value));
    }
    samples
}

fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

#[test]
fn metrics_health_and_ready_on_the_admin_listener() {
    let f = setup();
    let admin = free_port();
    let s = S3p::start(
        &dir("s3p-metrics"),
        &config_with(f, &format!("admin_listen: 127.0.0.1:{admin}\n"), ""),
    );
    for _ in 0..3 {
        assert_eq!(
            raw(
                s.addr(),
                "GET",
                "/s3p/immuta/sales/plain.txt",
                &[("Authorization", &legacy(ALICE))]
            )
            .status,
            200
        );
    }
    assert_eq!(
        raw(
            s.addr(),
            "GET",
            "/s3p/immuta/sales/plain.txt",
            &[("Authorization", "AWS nobody:immuta")]
        )
        .status,
        403
    );
    assert_eq!(
        raw(
            s.addr(),
            "GET",
            "/s3p/immuta?list-type=2",
            &[("Authorization", &legacy(ALICE))]
        )
        .status,
        200
    );
    std::thread::sleep(Duration::from_millis(100));
    let m = http_get(admin, "/metrics");
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let samples = parse_prometheus(&m.text());
    let get_ok = [
        ("operation", "GetObject"),
        ("data_source", "sales"),
        ("status", "200"),
    ];
    assert_eq!(
        sample(&samples, "s3p_requests_total", &get_ok),
        3.0,
        "{}",
        m.text()
    );
    assert_eq!(
        sample(
            &samples,
            "s3p_response_bytes_total",
            &[("operation", "GetObject"), ("data_source", "sales")]
        ),
        51.0
    );
    assert_eq!(
        sample(
            &samples,
            "s3p_requests_total",
            &[("operation", "ListObjectsV2"), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &samples,
            "s3p_auth_failures_total",
            &[("reason", "InvalidAccessKeyId")]
        ),
        1.0
    );
    assert_eq!(
        sample(&samples, "s3p_request_duration_seconds_count", &[]),
        5.0
    );
    assert_eq!(
        sample(
            &samples,
            "s3p_request_duration_seconds_bucket",
            &[("le", "+Inf")]
        ),
        5.0
    );
    assert_eq!(
        sample(&samples, "s3p_backend_duration_seconds_count", &[]),
        3.0
    );
    assert!(samples
        .iter()
        .any(|(n, _, _)| n == "s3p_requests_in_flight"));
    assert_eq!(sample(&samples, "s3p_audit_lines_dropped_total", &[]), 0.0);
    assert_eq!(http_get(admin, "/health").status, 200);
    let ready = http_get(admin, "/ready");
    assert_eq!(ready.status, 200, "{}", ready.text());
    let samples = parse_prometheus(&http_get(admin, "/metrics").text());
    assert_eq!(
        sample(&samples, "s3p_backend_up", &[("backend", "garage")]),
        1.0
    );
    // A backend that does not answer is reported in /metrics, but does not make the replica unready:
    // backends are shared by every replica, so one down must not take them all out of a balancer.
    let dead = free_port();
    let admin2 = free_port();
    let yaml = config_with(f, &format!("admin_listen: 127.0.0.1:{admin2}\n"), "")
        .replace(&f.garage.endpoint(), &format!("http://127.0.0.1:{dead}"));
    let s2 = S3p::start(&dir("s3p-notready"), &yaml);
    let ready = http_get(admin2, "/ready");
    assert_eq!(ready.status, 200, "{}", ready.text());
    let samples = parse_prometheus(&http_get(admin2, "/metrics").text());
    assert_eq!(
        sample(&samples, "s3p_backend_up", &[("backend", "garage")]),
        0.0
    );
    assert_eq!(http_get(admin2, "/health").status, 200);

    // s3p_backend_errors_total has one meaning: the backend's name, and what went wrong (its HTTP
    // status, or connect/timeout/reset/unreadable), for object requests and listings alike.
    for target in ["/s3p/immuta/sales/plain.txt", "/s3p/immuta?prefix=sales/"] {
        let r = raw(
            s2.addr(),
            "GET",
            target,
            &[("Authorization", &legacy(ALICE))],
        );
        assert_eq!(r.status, 503, "{}", r.text());
    }
    let samples = parse_prometheus(&http_get(admin2, "/metrics").text());
    let errors = |samples: &[Sample], kind: &str| {
        sample(
            samples,
            "s3p_backend_errors_total",
            &[("backend", "garage"), ("kind", kind)],
        )
    };
    assert_eq!(errors(&samples, "connect"), 2.0);
    // Credentials the backend refuses: its 403, counted as such; a missing key is not a failure.
    let admin3 = free_port();
    let yaml = config_with(f, &format!("admin_listen: 127.0.0.1:{admin3}\n"), "")
        .replace(GARAGE_SECRET, &"f".repeat(GARAGE_SECRET.len()));
    let s3 = S3p::start(&dir("s3p-refused-credentials"), &yaml);
    for target in [
        "/s3p/immuta/sales/plain.txt",
        "/s3p/immuta?prefix=sales/",
        "/s3p/immuta/sales/plain.txt",
    ] {
        let r = raw(
            s3.addr(),
            "GET",
            target,
            &[("Authorization", &legacy(ALICE))],
        );
        assert!(r.status >= 400, "{}", r.text());
    }
    let samples = parse_prometheus(&http_get(admin3, "/metrics").text());
    assert_eq!(errors(&samples, "403"), 3.0);
    let ok = parse_prometheus(&http_get(admin, "/metrics").text());
    assert!(
        !ok.iter().any(|(n, _, _)| n == "s3p_backend_errors_total"),
        "no backend failure on the healthy instance"
    );
}

fn curl_https(port: u16, ca: &Path, path: &str) -> (bool, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["-H", &format!("Authorization: {}", legacy(ALICE))])
        .arg(format!("https://localhost:{port}{path}"))
        .output()
        .expect("curl is required for the TLS tests");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn tls_listener_with_certificate_reload_on_sighup() {
    let f = setup();
    let certs = dir("tls-certs");
    let (ca1, cert1, key1) = make_ca_and_cert(&certs, "one");
    let (ca2, cert2, key2) = make_ca_and_cert(&certs, "two");
    let live_cert = certs.join("live-cert.pem");
    let live_key = certs.join("live-key.pem");
    std::fs::copy(&cert1, &live_cert).unwrap();
    std::fs::copy(&key1, &live_key).unwrap();
    let tls_port = free_port();
    let top = format!(
        "tls:\n  listen: 127.0.0.1:{tls_port}\n  cert: {}\n  key: {}\n",
        live_cert.display(),
        live_key.display()
    );
    let s = S3p::start(&dir("s3p-tls"), &config_with(f, &top, ""));
    let (ok, out) = curl_https(tls_port, &ca1, "/s3p/immuta/sales/plain.txt");
    assert!(ok && out == "body of plain.txt", "{out}");
    assert!(
        !curl_https(tls_port, &ca2, "/s3p").0,
        "the second CA is not trusted yet"
    );
    // Plain HTTP still works beside HTTPS.
    assert_eq!(
        raw(
            s.addr(),
            "GET",
            "/s3p/immuta/sales/plain.txt",
            &[("Authorization", &legacy(ALICE))]
        )
        .status,
        200
    );
    // Rotate the certificate and send SIGHUP.
    std::fs::copy(&cert2, &live_cert).unwrap();
    std::fs::copy(&key2, &live_key).unwrap();
    s.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s.log().contains("reloaded the TLS certificate") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, out) = curl_https(tls_port, &ca2, "/s3p/immuta/sales/plain.txt");
    assert!(ok && out == "body of plain.txt", "after reload: {out}");
    assert!(
        !curl_https(tls_port, &ca1, "/s3p").0,
        "the old certificate is gone"
    );
    // New paths in the configuration are read on reload (before: the old files were read again and
    // "reloaded" logged).
    let (ca3, cert3, key3) = make_ca_and_cert(&certs, "three");
    let yaml = std::fs::read_to_string(&s.config_path).unwrap();
    let yaml = yaml
        .replace(
            &live_cert.display().to_string(),
            &cert3.display().to_string(),
        )
        .replace(&live_key.display().to_string(), &key3.display().to_string());
    std::fs::write(&s.config_path, yaml).unwrap();
    s.signal("HUP");
    let want = format!("reloaded the TLS certificate from {}", cert3.display());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s.log().contains(&want) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, out) = curl_https(tls_port, &ca3, "/s3p/immuta/sales/plain.txt");
    assert!(
        ok && out == "body of plain.txt",
        "after a path change: {out}"
    );
    assert!(
        !curl_https(tls_port, &ca2, "/s3p").0,
        "the second certificate is gone"
    );
}

#[test]
fn s3p_in_front_of_s3p_over_https_with_a_private_ca() {
    let f = setup();
    let (ca, cert, key) = make_ca_and_cert(&dir("chain-certs"), "inner");
    // The inner s3p serves the S3 API at the root over TLS; the outer one uses it as an https backend,
    // signing with alice's API key (so the inner s3p verifies s3p's own SigV4).
    let tls_port = free_port();
    let inner_yaml = standard_config(&f.garage).replace("base_path: /s3p\n", "base_path: \"\"\n")
        + &format!(
            "tls:\n  listen: 127.0.0.1:{tls_port}\n  cert: {}\n  key: {}\n",
            cert.display(),
            key.display()
        );
    let _inner = S3p::start(&dir("s3p-inner"), &inner_yaml);
    // `start` waits for the plain listener; under load the TLS one may come a moment later.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the inner s3p's TLS listener did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let outer_yaml = format!(
        r#"listen: 127.0.0.1:{{PORT}}
token_secret: outer-token-secret-0123456789
backends:
  inner:
    endpoint: https://localhost:{tls_port}
    region: us-east-1
    access_key_id: {ALICE}
    secret_access_key: {ALICE_SECRET}
    ca_file: {ca}
data_sources:
  relayed: {{ backend: inner, bucket: immuta, prefix: sales/ }}
api_keys:
  - {{ id: outer-key, name: Outer, data_sources: all }}
"#,
        ca = ca.display()
    );
    let outer = S3p::start(&dir("s3p-outer"), &outer_yaml);
    let auth = legacy("outer-key");
    let r = raw(
        outer.addr(),
        "GET",
        "/s3p/immuta/relayed/with%20space.txt",
        &[("Authorization", &auth)],
    );
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, b"body of with space.txt".as_slice()),
        "{}",
        r.text()
    );
    let r = raw(
        outer.addr(),
        "GET",
        "/s3p/immuta?list-type=2&prefix=relayed/deep/",
        &[("Authorization", &auth)],
    );
    assert!(
        r.text().contains("<Key>relayed/deep/a/b/c/d/e/f.txt</Key>"),
        "{}",
        r.text()
    );
    // Without the CA the backend's certificate is refused: 503, never plaintext fallback.
    let untrusting = outer_yaml.replace(&format!("    ca_file: {}\n", ca.display()), "");
    let o2 = S3p::start(&dir("s3p-outer-noca"), &untrusting);
    let r = raw(
        o2.addr(),
        "GET",
        "/s3p/immuta/relayed/plain.txt",
        &[("Authorization", &auth)],
    );
    assert_eq!(r.status, 503, "{}", r.text());
}

#[test]
fn reload_under_load_changes_entitlements_without_failing_a_request() {
    let f = setup();
    let mut s = S3p::start(&dir("s3p-reload"), &standard_config(&f.garage));
    let addr = s.addr();
    assert_eq!(
        raw(
            addr,
            "GET",
            "/s3p/immuta/data-private/salaries.csv",
            &[("Authorization", &legacy(BOB))]
        )
        .status,
        403
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(20) {
                    let r = raw(
                        addr,
                        "GET",
                        "/s3p/immuta/sales/plain.txt",
                        &[("Authorization", &legacy(ALICE))],
                    );
                    if r.status == 200 && r.body == b"body of plain.txt" {
                        &ok
                    } else {
                        &failed
                    }
                    .fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // Bob gains data-private.
    let yaml = std::fs::read_to_string(&s.config_path).unwrap();
    std::fs::write(
        &s.config_path,
        yaml.replace(
            "data_sources: [sales, data]",
            "data_sources: [sales, data, data-private]",
        ),
    )
    .unwrap();
    s.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while raw(
        addr,
        "GET",
        "/s3p/immuta/data-private/salaries.csv",
        &[("Authorization", &legacy(BOB))],
    )
    .status
        != 200
    {
        assert!(Instant::now() < deadline, "the reload did not take effect");
        std::thread::sleep(Duration::from_millis(50));
    }
    // An invalid configuration is refused and the running one stays.
    std::fs::write(&s.config_path, "this: is: not: valid").unwrap();
    s.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s.log().contains("reload refused") {
        assert!(
            Instant::now() < deadline,
            "no log line for the refused reload"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
    assert!(
        ok.load(Ordering::Relaxed) > 20,
        "too little load: {}",
        ok.load(Ordering::Relaxed)
    );
    assert_eq!(
        raw(
            addr,
            "GET",
            "/s3p/immuta/data-private/salaries.csv",
            &[("Authorization", &legacy(BOB))]
        )
        .status,
        200
    );
    assert!(
        s.wait_exit(Duration::from_millis(10)).is_none(),
        "still running"
    );
}

/// Starts a GET of the big object; returns the stream once the response began, with the number of body
/// bytes already read.
fn slow_download(addr: std::net::SocketAddr) -> (TcpStream, usize) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(stream, "GET /s3p/immuta/sales/{BIG_KEY} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nConnection: close\r\n\r\n", legacy(ALICE)).unwrap();
    let mut first = [0u8; 1024];
    let n = stream.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    let header_end = first[..n]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers in the first read")
        + 4;
    (stream, n - header_end)
}

/// Reads the rest at about 8 MiB/s; returns how many bytes came.
fn drain_slowly(mut stream: TcpStream) -> usize {
    let mut total = 0;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) => panic!("download cut: {e} after {total} bytes"),
        }
        std::thread::sleep(Duration::from_millis(30));
    }
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let f = setup();
    for signal in ["TERM", "INT"] {
        let mut s = S3p::start(
            &dir(&format!("s3p-drain-{signal}")),
            &config_with(f, "", "  grace_period_s: 8\n  drain_delay_s: 0\n"),
        );
        let (stream, already) = slow_download(s.addr());
        let reader = std::thread::spawn(move || already + drain_slowly(stream));
        std::thread::sleep(Duration::from_millis(200));
        s.signal(signal);
        // While draining, a new request is refused rather than started.
        std::thread::sleep(Duration::from_millis(100));
        let r = raw(
            s.addr(),
            "GET",
            "/s3p/immuta/sales/plain.txt",
            &[("Authorization", &legacy(ALICE))],
        );
        assert_eq!(r.status, 503, "{signal}: {}", r.text());
        assert!(r.text().contains("shutting down"));
        let received = reader.join().unwrap();
        assert_eq!(received, BIG_LEN, "{signal}: the download was cut");
        let status = s
            .wait_exit(Duration::from_secs(15))
            .unwrap_or_else(|| panic!("{signal}: s3p did not exit"));
        assert!(status.success(), "{signal}: exit status {status}");
        assert!(
            TcpStream::connect(s.addr()).is_err(),
            "{signal}: still accepting"
        );
    }
    // An idle s3p does not sit out its grace period.
    let mut s = S3p::start(
        &dir("s3p-drain-idle"),
        &config_with(f, "", "  grace_period_s: 30\n  drain_delay_s: 0\n"),
    );
    let started = Instant::now();
    s.signal("TERM");
    let status = s
        .wait_exit(Duration::from_secs(10))
        .expect("an idle s3p exits at once");
    assert!(status.success());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn concurrency_limit_answers_slow_down() {
    let f = setup();
    let s = S3p::start(
        &dir("s3p-concurrency"),
        &config_with(f, "", "  max_concurrent_requests: 1\n"),
    );
    let (stream, already) = slow_download(s.addr());
    let r = raw(
        s.addr(),
        "GET",
        "/s3p/immuta/sales/plain.txt",
        &[("Authorization", &legacy(ALICE))],
    );
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("<Code>SlowDown</Code>"));
    assert_eq!(already + drain_slowly(stream), BIG_LEN);
    let r = raw(
        s.addr(),
        "GET",
        "/s3p/immuta/sales/plain.txt",
        &[("Authorization", &legacy(ALICE))],
    );
    assert_eq!(r.status, 200, "the slot is free again");
}

#[test]
fn malformed_dates_neither_crash_nor_leak_in_flight_places() {
    let f = setup();
    let admin = free_port();
    let s = S3p::start(
        &dir("s3p-baddate"),
        &config_with(
            f,
            &format!("admin_listen: 127.0.0.1:{admin}\n"),
            "  max_concurrent_requests: 3\n",
        ),
    );
    let presigned = "/s3p/immuta/sales/plain.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=nobody%2F20240101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=202%C3%A9101T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature=00";
    for _ in 0..5 {
        let r = raw(s.addr(), "GET", presigned, &[]);
        assert_eq!(r.status, 400, "{}", r.text());
        let auth = format!("AWS4-HMAC-SHA256 Credential={ALICE}/20240101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=00");
        let r = raw(
            s.addr(),
            "GET",
            "/s3p/immuta/sales/plain.txt",
            &[
                ("Authorization", &auth),
                ("x-amz-date", "2024\u{e9}101T0000Z"),
            ],
        );
        assert!(r.status == 400 || r.status == 403, "{}", r.text());
    }
    let r = raw(
        s.addr(),
        "GET",
        "/s3p/immuta/sales/plain.txt",
        &[("Authorization", &legacy(ALICE))],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    std::thread::sleep(Duration::from_millis(100));
    let samples = parse_prometheus(&http_get(admin, "/metrics").text());
    assert_eq!(sample(&samples, "s3p_requests_in_flight", &[]), 0.0);
}

#[test]
fn oversized_headers_are_refused_with_s3_xml() {
    let f = setup();
    let s = S3p::start(
        &dir("s3p-headers"),
        &config_with(f, "", "  max_header_bytes: 4096\n"),
    );
    let big = "a".repeat(5000);
    let r = raw(
        s.addr(),
        "GET",
        "/s3p/immuta/sales/plain.txt",
        &[("Authorization", &legacy(ALICE)), ("x-amz-meta-big", &big)],
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text()
            .contains("<Code>RequestHeaderSectionTooLarge</Code>"),
        "{}",
        r.text()
    );
    let r = raw(
        s.addr(),
        "GET",
        "/s3p/immuta/sales/plain.txt",
        &[("Authorization", &legacy(ALICE)), ("x-small", "b")],
    );
    assert_eq!(r.status, 200);
}

#[test]
fn repeated_authentication_failures_are_throttled() {
    let f = setup();
    let s = S3p::start(
        &dir("s3p-throttle"),
        &config_with(f, "", "  auth_failures_per_minute: 3\n"),
    );
    for _ in 0..3 {
        let r = raw(
            s.addr(),
            "GET",
            "/s3p/immuta/sales/plain.txt",
            &[("Authorization", "AWS nobody:immuta")],
        );
        assert_eq!(r.status, 403);
    }
    // Now the guesser waits; its next guess is answered SlowDown whatever it is...
    let r = raw(
        s.addr(),
        "GET",
        "/s3p/immuta/sales/plain.txt",
        &[("Authorization", "AWS nobody-else:immuta")],
    );
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("<Code>SlowDown</Code>"));
    assert!(r.header("retry-after").is_some());
    // ...but a valid key from the same address (a NAT, a balancer) is never held up by others' failures.
    let r = raw(
        s.addr(),
        "GET",
        "/s3p/immuta/sales/plain.txt",
        &[("Authorization", &legacy(ALICE))],
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn stalled_and_idle_clients_are_disconnected() {
    let f = setup();
    let s = S3p::start(
        &dir("s3p-stall"),
        &config_with(
            f,
            "",
            "  client_timeout_ms: 500\n  keepalive_timeout_s: 1\n",
        ),
    );
    // A client that stops reading a download is cut once a write has waited the client timeout.
    let (mut stream, already) = slow_download(s.addr());
    std::thread::sleep(Duration::from_secs(3));
    let mut rest = Vec::new();
    // Cut means closed (EOF) or reset; a read that times out means s3p still holds the connection open.
    let end = stream.read_to_end(&mut rest);
    assert!(
        !matches!(&end, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "the stalled download was never cut: {end:?}"
    );
    assert!(
        already + rest.len() < BIG_LEN,
        "a stalled reader kept its download for 3 s"
    );
    // An idle keep-alive connection is closed after the keep-alive timeout.
    let mut conn = TcpStream::connect(s.addr()).unwrap();
    write!(
        conn,
        "GET /s3p/immuta/sales/plain.txt HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n",
        legacy(ALICE)
    )
    .unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut all = Vec::new();
    let _ = conn.read_to_end(&mut all);
    assert!(String::from_utf8_lossy(&all).contains("body of plain.txt"));
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "idle keep-alive connection kept {waited:?}"
    );
}

#[test]
fn response_overrides_and_metadata_pass_through() {
    let f = setup();
    runtime().block_on(async {
        f.garage
            .client()
            .put_object()
            .bucket(ALPHA_BUCKET)
            .key("meta/tagged.csv")
            .content_type("text/csv")
            .metadata("owner", "finance")
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"a,b\n"))
            .send()
            .await
            .unwrap();
    });
    let auth = legacy(ALICE);
    let r = raw(
        f.s3p.addr(),
        "GET",
        "/s3p/immuta/sales/meta/tagged.csv",
        &[("Authorization", &auth)],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/csv"));
    assert_eq!(r.header("x-amz-meta-owner"), Some("finance"));
    let r = raw(
        f.s3p.addr(),
        "GET",
        "/s3p/immuta/sales/meta/tagged.csv?response-content-type=application%2Foctet-stream&response-content-disposition=attachment%3B%20filename%3Dx.csv",
        &[("Authorization", &auth)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=x.csv")
    );
    assert_eq!(r.body, b"a,b\n");
    assert_no_leak("overrides", &r.all_bytes());
}

#[test]
fn continuation_tokens_survive_a_token_secret_rotation_across_replicas() {
    let f = setup();
    let old = S3p::start(&dir("s3p-rotate-old"), &config_with(f, "", ""));
    let new_yaml = |previous: &str| {
        config_with(f, previous, "").replace(
            "token_secret: test-token-secret-0123456789",
            "token_secret: the-new-token-secret-0123456789",
        )
    };
    let rotating = S3p::start(
        &dir("s3p-rotate-new"),
        &new_yaml("previous_token_secrets: [test-token-secret-0123456789]\n"),
    );
    let rotated = S3p::start(&dir("s3p-rotate-done"), &new_yaml(""));
    let auth = [("Authorization", legacy(ALICE))];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let first = raw(
        old.addr(),
        "GET",
        "/s3p/immuta?list-type=2&prefix=data%2F&max-keys=1",
        &auth,
    );
    assert_eq!(first.status, 200, "{}", first.text());
    let text = first.text();
    let token = text
        .split("<NextContinuationToken>")
        .nth(1)
        .and_then(|t| t.split('<').next())
        .expect("a truncated page has a token")
        .to_string();
    let next = format!(
        "/s3p/immuta?list-type=2&prefix=data%2F&max-keys=1&continuation-token={}",
        token.replace('-', "%2D")
    );
    // The replica with the new secret and the old one as previous resumes the old replica's token.
    let r = raw(rotating.addr(), "GET", &next, &auth);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("<Key>data/"), "{}", r.text());
    // Once the old secret is gone, its tokens are refused like any bad token.
    let r = raw(rotated.addr(), "GET", &next, &auth);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("<Code>InvalidArgument</Code>"),
        "{}",
        r.text()
    );
}

#[test]
fn sigterm_first_turns_unready_and_keeps_serving_for_the_drain_delay() {
    let f = setup();
    let admin = free_port();
    let mut s = S3p::start(
        &dir("s3p-drain-delay"),
        &config_with(
            f,
            &format!("admin_listen: 127.0.0.1:{admin}\n"),
            "  drain_delay_s: 2\n  grace_period_s: 5\n",
        ),
    );
    assert_eq!(http_get(admin, "/ready").status, 200);
    let started = Instant::now();
    s.signal("TERM");
    std::thread::sleep(Duration::from_millis(200));
    // Unready at once, so that a balancer's health check takes the replica out...
    let ready = http_get(admin, "/ready");
    assert_eq!(ready.status, 503, "{}", ready.text());
    // ...while requests are still served (each answer closing its connection) until the delay is over.
    let r = raw(
        s.addr(),
        "GET",
        "/s3p/immuta/sales/plain.txt",
        &[
            ("Authorization", &legacy(ALICE)),
            ("Connection", "keep-alive"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("connection"), Some("close"));
    assert!(started.elapsed() < Duration::from_secs(2));
    // After the delay: refused, then the process ends (nothing in flight).
    std::thread::sleep(Duration::from_millis(2200).saturating_sub(started.elapsed()));
    if let Ok(mut c) = TcpStream::connect(s.addr()) {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = write!(
            c,
            "GET /s3p/immuta/sales/plain.txt HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n",
            legacy(ALICE)
        );
        let mut answer = Vec::new();
        let _ = c.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 503"),
            "after the drain delay: {text}"
        );
    }
    let status = s
        .wait_exit(Duration::from_secs(10))
        .expect("s3p exits after the drain");
    assert!(status.success());
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "left before the drain delay"
    );
}
