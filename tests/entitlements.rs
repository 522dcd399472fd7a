//! Keys and grants from the governance service (`entitlements: { source: http }`), end to end: a real
//! Garage behind s3p, the Immuta-shaped fake service (tests/common/immuta.rs), real clients. Each test
//! starts its own s3p (and service), so that caches and call counts are its own.

mod common;

use common::immuta::{Immuta, AUTHENTICATE, DATA_SOURCE, SIGNING_SECRET};
use common::*;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// s3p on the suite's Garage, its keys and grants from `immuta` (plus the standard file keys).
fn s3p_with(immuta: &Immuta, name: &str, cache: &str, extra_http: &str) -> S3p {
    let f = fixture();
    let yaml = standard_config(&f.garage).replace(
        "data_sources:\n",
        &format!(
            "entitlements:\n  source: http\n  http: {{ endpoint: \"{}\", timeout_ms: 1000, service_token: \"{}\"{extra_http} }}\n  cache: {{ {cache} }}\ndata_sources:\n",
            immuta.endpoint(),
            immuta.service_token()
        ),
    )
    // The service knows `sales` by another name.
    .replace(
        &format!("sales: {{ backend: garage, bucket: {ALPHA_BUCKET} }}"),
        &format!("sales: {{ backend: garage, bucket: {ALPHA_BUCKET}, immuta_name: \"Sales Data\" }}"),
    );
    assert!(yaml.contains("immuta_name"));
    S3p::start(
        &f.dir.join(format!("s3p-ent-{name}-{}", free_port())),
        &yaml,
    )
}

fn get(s3p: &S3p, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    raw(s3p.addr(), "GET", path, headers)
}

const OBJECT: &str = "/s3p/immuta/sales/plain.txt";
const PRIVATE: &str = "/s3p/immuta/data-private/salaries.csv";

#[test]
fn a_key_only_the_service_knows_reads_what_it_is_subscribed_to() {
    let immuta = Immuta::start();
    immuta.add_key("svc-key-1", "Carol");
    immuta.subscribe("svc-key-1", "Sales Data", Some("READ"), None);
    immuta.subscribe("svc-key-1", "data", None, Some("2099-01-01T00:00:00.000Z"));
    // A subscription that expired grants nothing.
    immuta.subscribe(
        "svc-key-1",
        "data-private",
        Some("READ"),
        Some("2001-01-01T00:00:00Z"),
    );
    let s3p = s3p_with(&immuta, "read", "allow_ttl_s: 60", "");
    let auth = legacy("svc-key-1");
    let r = get(&s3p, OBJECT, &[("Authorization", &auth)]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, body_of("sales/plain.txt"));
    let r = get(&s3p, "/s3p/immuta/data/q1.csv", &[("Authorization", &auth)]);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get(&s3p, PRIVATE, &[("Authorization", &auth)]);
    assert_eq!(r.status, 403, "{}", r.text());
    // The listing of the root shows exactly the subscribed data sources.
    let r = get(&s3p, "/s3p/immuta?delimiter=/", &[("Authorization", &auth)]);
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(text.contains("<Prefix>sales/</Prefix>") && text.contains("<Prefix>data/</Prefix>"));
    assert!(!text.contains("data-private"), "{text}");
    // One lookup for all of it: the rest came from the cache.
    assert_eq!(immuta.calls(AUTHENTICATE), 1);
    // The audit line names the key by a name that is not the key, and where the decision came from.
    let id = r.header("x-amz-request-id").unwrap().to_string();
    let line = audit_line(&s3p, &id);
    assert_eq!(line["key_source"], "service-cache");
    let name = line["api_key"].as_str().unwrap();
    assert!(
        name.starts_with("immuta:") && !name.contains("svc-key-1"),
        "{name}"
    );
    assert!(!s3p.log().contains("svc-key-1"), "the key is never logged");
    // curl with the legacy header, as a person would paste it.
    let out = std::process::Command::new("curl")
        .args(["-sS", "-H", &format!("Authorization: {auth}")])
        .arg(format!("{}/immuta/sales/plain.txt", s3p.endpoint()))
        .output()
        .expect("curl is required");
    assert_eq!(out.stdout, body_of("sales/plain.txt"));
    // Configured keys are not asked of the service.
    immuta.reset_calls();
    let r = get(&s3p, OBJECT, &[("Authorization", &legacy(ALICE_LEGACY))]);
    assert_eq!(r.status, 200);
    assert_eq!(immuta.total_calls(), 0);
}

#[test]
fn the_body_form_and_array_answers_of_older_versions() {
    let immuta = Immuta::start();
    immuta.set_array_answers(true);
    immuta.add_key("svc-key-old", "Old");
    immuta.subscribe("svc-key-old", "Sales Data", None, None);
    let s3p = s3p_with(&immuta, "old", "allow_ttl_s: 60", ", auth: body");
    let r = get(&s3p, OBJECT, &[("Authorization", &legacy("svc-key-old"))]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(immuta.calls(AUTHENTICATE), 1);
    assert!(immuta.calls(DATA_SOURCE) >= 1);
}

#[test]
fn unknown_keys_are_refused_and_remembered() {
    let immuta = Immuta::start();
    let s3p = s3p_with(&immuta, "unknown", "allow_ttl_s: 60, deny_ttl_s: 30", "");
    for _ in 0..10 {
        let r = get(
            &s3p,
            OBJECT,
            &[("Authorization", &legacy("nobody-knows-me"))],
        );
        assert_eq!(r.status, 403, "{}", r.text());
        assert!(r.text().contains("InvalidAccessKeyId"), "{}", r.text());
    }
    // Negative caching: one lookup for ten refusals.
    assert_eq!(immuta.calls(AUTHENTICATE), 1);
}

#[test]
fn one_lookup_for_many_concurrent_requests_of_an_uncached_key() {
    let immuta = Immuta::start();
    immuta.add_key("svc-key-burst", "Burst");
    immuta.subscribe("svc-key-burst", "Sales Data", Some("READ"), None);
    immuta.set_latency(Duration::from_millis(300));
    let s3p = Arc::new(s3p_with(&immuta, "burst", "allow_ttl_s: 60", ""));
    let n = 40;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (s3p, barrier) = (s3p.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                get(&s3p, OBJECT, &[("Authorization", &legacy("svc-key-burst"))]).status
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(immuta.calls(AUTHENTICATE), 1, "single-flight");
    assert_eq!(immuta.max_concurrent(), 1);
}

#[test]
fn revocation_and_unsubscription_take_effect_within_the_ttl() {
    let immuta = Immuta::start();
    immuta.add_key("svc-key-rev", "Rev");
    immuta.subscribe("svc-key-rev", "Sales Data", Some("READ"), None);
    immuta.subscribe("svc-key-rev", "data", Some("READ"), None);
    let s3p = s3p_with(&immuta, "revoke", "allow_ttl_s: 2, deny_ttl_s: 1", "");
    let auth = legacy("svc-key-rev");
    assert_eq!(get(&s3p, OBJECT, &[("Authorization", &auth)]).status, 200);
    immuta.unsubscribe("svc-key-rev", "Sales Data");
    // Within the allow TTL the cached grant still holds; past it, the unsubscription is in force.
    let unsubscribed = Instant::now();
    let mut refused_after = None;
    while unsubscribed.elapsed() < Duration::from_secs(6) {
        if get(&s3p, OBJECT, &[("Authorization", &auth)]).status == 403 {
            refused_after = Some(unsubscribed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = refused_after.expect("the unsubscription took effect");
    assert!(after <= Duration::from_millis(2600), "{after:?}");
    assert_eq!(
        get(&s3p, "/s3p/immuta/data/q1.csv", &[("Authorization", &auth)]).status,
        200
    );
    // A revoked key is refused within the TTL too.
    immuta.revoke_key("svc-key-rev");
    std::thread::sleep(Duration::from_millis(2300));
    let r = get(&s3p, "/s3p/immuta/data/q1.csv", &[("Authorization", &auth)]);
    assert_eq!(r.status, 403, "{}", r.text());
}

#[test]
fn a_service_that_is_down_or_slow_fails_closed() {
    let immuta = Immuta::start();
    immuta.add_key("svc-key-down", "Down");
    immuta.subscribe("svc-key-down", "Sales Data", Some("READ"), None);
    immuta.add_key("svc-key-never", "Never");
    let s3p = s3p_with(&immuta, "down", "allow_ttl_s: 2", "");
    let auth = legacy("svc-key-down");
    assert_eq!(get(&s3p, OBJECT, &[("Authorization", &auth)]).status, 200);
    immuta.stop();
    // Cached: still served within the TTL.
    assert_eq!(get(&s3p, OBJECT, &[("Authorization", &auth)]).status, 200);
    // Not cached: refused with a retryable 503, never allowed.
    let r = get(&s3p, OBJECT, &[("Authorization", &legacy("svc-key-never"))]);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("SlowDown") && r.header("retry-after").is_some());
    // Past the TTL the cached allow is not used either (no stale_if_error).
    std::thread::sleep(Duration::from_millis(2200));
    let r = get(&s3p, OBJECT, &[("Authorization", &auth)]);
    assert_eq!(r.status, 503, "{}", r.text());
    // Back up: served again.
    immuta.restart();
    assert_eq!(get(&s3p, OBJECT, &[("Authorization", &auth)]).status, 200);
    // Slow (2 s, past the 1 s deadline): bounded latency, a 503, no pile-up of lookups.
    immuta.set_latency(Duration::from_secs(2));
    immuta.reset_calls();
    let started = Instant::now();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let addr = s3p.addr();
            std::thread::spawn(move || {
                raw(
                    addr,
                    "GET",
                    OBJECT,
                    &[("Authorization", &legacy("svc-key-never"))],
                )
                .status
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| *s == 503), "{statuses:?}");
    assert!(
        started.elapsed() < Duration::from_millis(3500),
        "{:?}",
        started.elapsed()
    );
    assert!(
        immuta.calls(AUTHENTICATE) <= 2,
        "{}",
        immuta.calls(AUTHENTICATE)
    );
    let metrics = s3p.log();
    assert!(!metrics.contains("svc-key-never"));
}

#[test]
fn stale_if_error_serves_a_recent_allow_only() {
    let immuta = Immuta::start();
    immuta.add_key("svc-key-stale", "Stale");
    immuta.subscribe("svc-key-stale", "Sales Data", Some("READ"), None);
    let s3p = s3p_with(&immuta, "stale", "allow_ttl_s: 1, stale_if_error_s: 30", "");
    let auth = legacy("svc-key-stale");
    assert_eq!(get(&s3p, OBJECT, &[("Authorization", &auth)]).status, 200);
    assert_eq!(
        get(&s3p, OBJECT, &[("Authorization", &legacy("svc-key-nope"))]).status,
        403
    );
    immuta.set_failure(Some(500));
    std::thread::sleep(Duration::from_millis(1200));
    // The allow expired, the service fails: the recent allow is served.
    assert_eq!(get(&s3p, OBJECT, &[("Authorization", &auth)]).status, 200);
    // A deny is never turned into an allow, and an unknown key is refused (503: no answer).
    std::thread::sleep(Duration::from_millis(10));
    let r = get(&s3p, OBJECT, &[("Authorization", &legacy("svc-key-other"))]);
    assert_eq!(r.status, 503, "{}", r.text());
}

#[test]
fn sigv4_clients_use_a_key_the_service_gives_a_signing_secret() {
    let immuta = Immuta::start();
    immuta.add_key("svc-key-signer", "Signer");
    immuta.subscribe("svc-key-signer", "Sales Data", Some("READ"), None);
    immuta.set_signing_secret(
        "SVCAKID0001",
        "svc-signing-secret-0123456789",
        "svc-key-signer",
    );
    let s3p = s3p_with(&immuta, "sigv4", "allow_ttl_s: 60", "");
    // The SDK joins the bucket to the endpoint's path: end it with `/`.
    let endpoint = format!("{}/", s3p.endpoint());
    // The AWS SDK (SigV4 header signatures).
    let sdk = sdk_client(
        &endpoint,
        "SVCAKID0001",
        "svc-signing-secret-0123456789",
        "us-east-1",
    );
    runtime().block_on(async {
        let got = sdk
            .get_object()
            .bucket("immuta")
            .key("sales/plain.txt")
            .send()
            .await
            .expect("GET with a service key");
        let body = got.body.collect().await.unwrap().into_bytes();
        assert_eq!(body.as_ref(), body_of("sales/plain.txt").as_slice());
        let denied = sdk
            .get_object()
            .bucket("immuta")
            .key("data-private/salaries.csv")
            .send()
            .await;
        assert!(denied.is_err());
        // A wrong secret is refused.
        let wrong = sdk_client(
            &endpoint,
            "SVCAKID0001",
            "not-the-secret-000000",
            "us-east-1",
        );
        assert!(wrong
            .get_object()
            .bucket("immuta")
            .key("sales/plain.txt")
            .send()
            .await
            .is_err());
    });
    assert_eq!(immuta.calls(SIGNING_SECRET), 1);
    // The aws CLI, unchanged.
    let cli = std::env::var("S3P_AWS_CLI").unwrap_or_else(|_| "aws".into());
    let dir = fixture().dir.join(format!("ent-awscli-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config");
    std::fs::write(&config, "[default]\ns3 =\n    addressing_style = path\n").unwrap();
    let out = std::process::Command::new(&cli)
        .args([
            "s3",
            "ls",
            "s3://immuta/sales/",
            "--endpoint-url",
            &endpoint,
        ])
        .env("AWS_ACCESS_KEY_ID", "SVCAKID0001")
        .env("AWS_SECRET_ACCESS_KEY", "svc-signing-secret-0123456789")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", &config)
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("none"))
        .output()
        .unwrap_or_else(|e| panic!("the aws CLI is required ({cli}): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("plain.txt"), "{stdout}");
    // boto3, unchanged.
    let python = std::env::var("S3P_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = format!(
        "import boto3\nfrom botocore.config import Config\n\
         c = boto3.client('s3', endpoint_url='{}', aws_access_key_id='SVCAKID0001',\n\
             aws_secret_access_key='svc-signing-secret-0123456789', region_name='us-east-1',\n\
             config=Config(s3={{'addressing_style': 'path'}}))\n\
         print(c.get_object(Bucket='immuta', Key='sales/plain.txt')['Body'].read().decode())\n",
        s3p.endpoint()
    );
    let out = std::process::Command::new(&python)
        .args(["-c", &script])
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", &config)
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("none"))
        .output()
        .unwrap_or_else(|e| panic!("python with boto3 is required ({python}): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.trim_end().as_bytes(),
        body_of("sales/plain.txt").as_slice()
    );
    // An access key id the service does not know is refused as unknown.
    let unknown = sdk_client(
        &endpoint,
        "SVCAKIDNOPE",
        "whatever-secret-00000",
        "us-east-1",
    );
    runtime().block_on(async {
        let e = unknown
            .get_object()
            .bucket("immuta")
            .key("sales/plain.txt")
            .send()
            .await
            .unwrap_err();
        assert!(format!("{e:?}").contains("InvalidAccessKeyId"), "{e:?}");
    });
}

#[test]
fn a_flood_of_random_keys_meets_the_lookup_limit() {
    // 80 keys never seen, at once, against a service that takes 600 ms a call: s3p looks up at most 64
    // different keys at once per replica; the others are refused (503 SlowDown) without a call.
    let immuta = Immuta::start();
    immuta.set_latency(Duration::from_millis(600));
    let s3p = Arc::new(s3p_with(&immuta, "flood", "allow_ttl_s: 60", ""));
    let n = 80;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (s3p, barrier) = (s3p.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                get(
                    &s3p,
                    OBJECT,
                    &[("Authorization", &legacy(&format!("random-key-{i}")))],
                )
                .status
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let refused = statuses.iter().filter(|s| **s == 503).count();
    let unknown = statuses.iter().filter(|s| **s == 403).count();
    assert_eq!(refused + unknown, n, "{statuses:?}");
    assert!(refused >= n - 64, "{refused} refused: {statuses:?}");
    assert!(immuta.max_concurrent() <= 64, "{}", immuta.max_concurrent());
    assert!(immuta.calls(AUTHENTICATE) <= 64);
}
