//! Authentication and addressing end to end: virtual-hosted style, empty base path, presigned URLs
//! (SigV4 from aws-sdk-s3, SigV2 computed here), clock skew, clients that sign without the base path,
//! CORS, and SDK headers. Refused requests must never reach a backend (checked on s3p's log line).

mod common;

use base64::Engine;
use common::*;
use hmac::{Hmac, Mac};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A second s3p on the same Garage, with virtual hosts, CORS and the base-path tolerance switched on.
fn extended() -> &'static S3p {
    static S: OnceLock<S3p> = OnceLock::new();
    S.get_or_init(|| {
        let f = fixture();
        let yaml = standard_config(&f.garage).replace(
            "bucket: immuta\n",
            "bucket: immuta\nvirtual_host_suffixes: [s3p.localhost]\nsignature_base_path_tolerance: true\n\
             cors:\n  allowed_origins: [\"https://app.example.com\"]\n  max_age_s: 600\n",
        );
        S3p::start(&f.dir.join("s3p-extended"), &yaml)
    })
}

/// A third s3p serving the S3 API at the root (empty base path).
fn rooted() -> &'static S3p {
    static S: OnceLock<S3p> = OnceLock::new();
    S.get_or_init(|| {
        let f = fixture();
        let yaml = standard_config(&f.garage).replace(
            "base_path: /s3p\n",
            "base_path: \"\"\nvirtual_host_suffixes: [s3p.localhost]\n",
        );
        S3p::start(&f.dir.join("s3p-rooted"), &yaml)
    })
}

fn get(s: &S3p, target: &str, headers: &[(&str, &str)]) -> RawResponse {
    raw(s.addr(), "GET", target, headers)
}

fn signed(
    s: &S3p,
    host: &str,
    signed_path: &str,
    sent_path: &str,
    key: &str,
    secret: &str,
    t: SystemTime,
) -> RawResponse {
    let h = sigv4_headers("GET", host, signed_path, key, secret, t);
    let mut headers: Vec<(&str, &str)> = h.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    headers.push(("Host", host));
    get(s, sent_path, &headers)
}

fn assert_refused_before_backend(s: &S3p, r: &RawResponse, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert!(
        r.text().contains(&format!("<Code>{code}</Code>")),
        "{}",
        r.text()
    );
    let line = audit_line(s, r.header("x-amz-request-id").unwrap());
    assert!(
        line["backend_ms"].is_null(),
        "a refused request reached a backend: {line}"
    );
    assert_no_leak(code, &r.all_bytes());
}

#[test]
fn virtual_hosted_style_behaves_like_path_style() {
    let s = extended();
    let host = format!("immuta.s3p.localhost:{}", s.port);
    let r = get(
        s,
        "/s3p/sales/plain.txt",
        &[("Host", &host), ("Authorization", &legacy(ALICE))],
    );
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, b"body of plain.txt".as_slice()),
        "{}",
        r.text()
    );
    let r = get(
        s,
        "/s3p/?list-type=2&delimiter=%2F",
        &[("Host", &host), ("Authorization", &legacy(BOB))],
    );
    assert_eq!(r.status, 200);
    assert!(r.text().contains("<CommonPrefixes><Prefix>data/</Prefix></CommonPrefixes><CommonPrefixes><Prefix>sales/</Prefix></CommonPrefixes>"), "{}", r.text());
    // SigV4 signed over the virtual host.
    let r = signed(
        s,
        &host,
        "/s3p/sales/with%20space.txt",
        "/s3p/sales/with%20space.txt",
        ALICE,
        ALICE_SECRET,
        SystemTime::now(),
    );
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, b"body of with space.txt".as_slice()),
        "{}",
        r.text()
    );
    // Another bucket under the suffix does not exist.
    let r = get(
        s,
        "/s3p/sales/plain.txt",
        &[
            ("Host", &format!("other.s3p.localhost:{}", s.port)),
            ("Authorization", &legacy(ALICE)),
        ],
    );
    assert_eq!(r.status, 404);
    assert!(r.text().contains("<Code>NoSuchBucket</Code>"));
}

#[test]
fn empty_base_path_in_both_styles() {
    let s = rooted();
    let r = get(
        s,
        "/immuta/sales/plain.txt",
        &[("Authorization", &legacy(ALICE))],
    );
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, b"body of plain.txt".as_slice())
    );
    let host = format!("immuta.s3p.localhost:{}", s.port);
    let r = get(
        s,
        "/sales/plain.txt",
        &[("Host", &host), ("Authorization", &legacy(ALICE))],
    );
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, b"body of plain.txt".as_slice())
    );
    let r = get(s, "/", &[("Authorization", &legacy(ALICE))]);
    assert!(r.text().contains("<Name>immuta</Name>"), "{}", r.text());
    let r = signed(
        s,
        &host,
        "/sales/plain.txt",
        "/sales/plain.txt",
        BOB,
        BOB_SECRET,
        SystemTime::now(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn trailing_slash_and_sdk_query_parameters_are_accepted() {
    let s = &fixture().s3p;
    let r = get(
        s,
        "/s3p/immuta/?list-type=2&x-id=ListObjectsV2&prefix=sales%2Fdeep",
        &[("Authorization", &legacy(ALICE))],
    );
    assert_eq!(r.status, 200);
    assert!(r.text().contains("<Key>sales/deep/a/b/c/d/e/f.txt</Key>"));
    let r = get(
        s,
        "/s3p/immuta/sales/plain.txt?x-id=GetObject",
        &[
            ("Authorization", &legacy(ALICE)),
            ("x-amz-checksum-mode", "ENABLED"),
            (
                "amz-sdk-invocation-id",
                "0d4b5c0e-1111-2222-3333-444455556666",
            ),
            ("amz-sdk-request", "attempt=1; max=3"),
            ("x-amz-expected-bucket-owner", "immuta"),
        ],
    );
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, b"body of plain.txt".as_slice()),
        "{}",
        r.text()
    );
    let r = get(
        s,
        "/s3p/immuta/sales/plain.txt",
        &[
            ("Authorization", &legacy(ALICE)),
            ("x-amz-expected-bucket-owner", "123456789012"),
        ],
    );
    assert_refused_before_backend(s, &r, 403, "AccessDenied");
}

#[test]
fn presigned_sigv4_urls_from_the_sdk() {
    let s = &fixture().s3p;
    let client = sdk_client(
        &format!("{}/", s.endpoint()),
        ALICE,
        ALICE_SECRET,
        "us-east-1",
    );
    let rt = runtime();
    let presign = |start: SystemTime, expires: u64| {
        let cfg = aws_sdk_s3::presigning::PresigningConfig::builder()
            .start_time(start)
            .expires_in(Duration::from_secs(expires))
            .build()
            .unwrap();
        let req = rt
            .block_on(
                client
                    .get_object()
                    .bucket("immuta")
                    .key("sales/caf\u{e9}/\u{fc}ber \u{2603}.txt")
                    .presigned(cfg),
            )
            .unwrap();
        let url = url::Url::parse(req.uri()).unwrap();
        format!("{}?{}", url.path(), url.query().unwrap())
    };
    let target = presign(SystemTime::now(), 300);
    assert!(target.contains("X-Amz-Signature="));
    let r = get(s, &target, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.body,
        "body of caf\u{e9}/\u{fc}ber \u{2603}.txt".as_bytes()
    );
    // Tampered signature.
    let sig_at = target.find("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
    let mut tampered = target.clone().into_bytes();
    tampered[sig_at] = if tampered[sig_at] == b'0' { b'1' } else { b'0' };
    let r = get(s, &String::from_utf8(tampered).unwrap(), &[]);
    assert_refused_before_backend(s, &r, 403, "SignatureDoesNotMatch");
    assert!(
        r.text().contains("<CanonicalRequest>") && r.text().contains("<StringToSign>"),
        "{}",
        r.text()
    );
    // Expired.
    let r = get(
        s,
        &presign(SystemTime::now() - Duration::from_secs(3600), 60),
        &[],
    );
    assert_refused_before_backend(s, &r, 403, "AccessDenied");
    assert!(r.text().contains("Request has expired"), "{}", r.text());
    // Another object than the one signed.
    let other = target.replacen("/sales/", "/data/", 1);
    let r = get(s, &other, &[]);
    assert_refused_before_backend(s, &r, 403, "SignatureDoesNotMatch");
}

fn sigv2_signature(secret: &str, string_to_sign: &str) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[test]
fn sigv2_header_and_presigned_query() {
    let s = &fixture().s3p;
    let path = "/s3p/immuta/sales/plus%2Bsign.txt";
    // Header form, computed here from the SigV2 specification.
    // botocore signs the resource without the base path; other clients sign the path as sent.
    let date = httpdate::fmt_http_date(SystemTime::now());
    let sts = format!("GET\n\n\n{date}\n/immuta/sales/plus%2Bsign.txt");
    let auth = format!("AWS {ALICE}:{}", sigv2_signature(ALICE_SECRET, &sts));
    let r = get(s, path, &[("Date", &date), ("Authorization", &auth)]);
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, b"body of plus+sign.txt".as_slice()),
        "{}",
        r.text()
    );
    let sts = format!("GET\n\n\n{date}\n{path}");
    let auth = format!("AWS {ALICE}:{}", sigv2_signature(ALICE_SECRET, &sts));
    let r = get(s, path, &[("Date", &date), ("Authorization", &auth)]);
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, b"body of plus+sign.txt".as_slice()),
        "{}",
        r.text()
    );
    // Query form.
    let expires = (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300)
        .to_string();
    let sts = format!("GET\n\n\n{expires}\n{path}");
    let target = format!(
        "{path}?AWSAccessKeyId={ALICE}&Expires={expires}&Signature={}",
        enc(&sigv2_signature(ALICE_SECRET, &sts))
    );
    let r = get(s, &target, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    // Wrong secret, expired.
    let target = format!(
        "{path}?AWSAccessKeyId={ALICE}&Expires={expires}&Signature={}",
        enc(&sigv2_signature("wrong", &sts))
    );
    assert_refused_before_backend(s, &get(s, &target, &[]), 403, "SignatureDoesNotMatch");
    let past = (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 10)
        .to_string();
    let sts = format!("GET\n\n\n{past}\n{path}");
    let target = format!(
        "{path}?AWSAccessKeyId={ALICE}&Expires={past}&Signature={}",
        enc(&sigv2_signature(ALICE_SECRET, &sts))
    );
    assert_refused_before_backend(s, &get(s, &target, &[]), 403, "AccessDenied");
}

#[test]
fn skewed_unknown_and_double_authentication_are_refused() {
    let s = &fixture().s3p;
    let host = s.addr().to_string();
    let path = "/s3p/immuta/sales/plain.txt";
    let r = signed(
        s,
        &host,
        path,
        path,
        ALICE,
        ALICE_SECRET,
        SystemTime::now() - Duration::from_secs(20 * 60),
    );
    assert_refused_before_backend(s, &r, 403, "RequestTimeTooSkewed");
    let r = signed(
        s,
        &host,
        path,
        path,
        ALICE,
        ALICE_SECRET,
        SystemTime::now() + Duration::from_secs(20 * 60),
    );
    assert_refused_before_backend(s, &r, 403, "RequestTimeTooSkewed");
    let r = signed(s, &host, path, path, "no-such-key", "x", SystemTime::now());
    assert_refused_before_backend(s, &r, 403, "InvalidAccessKeyId");
    let r = signed(
        s,
        &host,
        path,
        path,
        ALICE,
        "wrong-secret",
        SystemTime::now(),
    );
    assert_refused_before_backend(s, &r, 403, "SignatureDoesNotMatch");
    let r = get(
        s,
        &format!("{path}?X-Amz-Algorithm=AWS4-HMAC-SHA256"),
        &[("Authorization", &legacy(ALICE))],
    );
    assert_refused_before_backend(s, &r, 400, "InvalidArgument");
    let r = get(
        s,
        path,
        &[("Authorization", "AWS4-HMAC-SHA256 Credential=garbage")],
    );
    assert_refused_before_backend(s, &r, 400, "AuthorizationHeaderMalformed");
}

#[test]
fn clients_that_sign_without_the_base_path_need_the_switch() {
    let host = |s: &S3p| s.addr().to_string();
    let now = SystemTime::now();
    // s3fs-fuse 1.90: the path signed without /s3p.
    let strict = &fixture().s3p;
    let r = signed(
        strict,
        &host(strict),
        "/immuta/sales/plain.txt",
        "/s3p/immuta/sales/plain.txt",
        ALICE,
        ALICE_SECRET,
        now,
    );
    assert_refused_before_backend(strict, &r, 403, "SignatureDoesNotMatch");
    let tolerant = extended();
    let r = signed(
        tolerant,
        &host(tolerant),
        "/immuta/sales/plain.txt",
        "/s3p/immuta/sales/plain.txt",
        ALICE,
        ALICE_SECRET,
        now,
    );
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, b"body of plain.txt".as_slice()),
        "{}",
        r.text()
    );
    // s3cmd: the base path signed as part of the host. The request carries the real host; the signature
    // covers `host:<addr>/s3p`.
    let h = sigv4_headers(
        "GET",
        &format!("{}/s3p", host(tolerant)),
        "/immuta/sales/plain.txt",
        ALICE,
        ALICE_SECRET,
        now,
    );
    let headers: Vec<(&str, &str)> = h.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let r = get(tolerant, "/s3p/immuta/sales/plain.txt", &headers);
    assert_eq!(r.status, 200, "{}", r.text());
    // Tolerance never accepts a wrong secret or another object.
    let r = signed(
        tolerant,
        &host(tolerant),
        "/immuta/sales/plain.txt",
        "/s3p/immuta/sales/plain.txt",
        ALICE,
        "wrong",
        now,
    );
    assert_refused_before_backend(tolerant, &r, 403, "SignatureDoesNotMatch");
    let r = signed(
        tolerant,
        &host(tolerant),
        "/immuta/sales/plain.txt",
        "/s3p/immuta/sales/with%20space.txt",
        ALICE,
        ALICE_SECRET,
        now,
    );
    assert_refused_before_backend(tolerant, &r, 403, "SignatureDoesNotMatch");
}

#[test]
fn cors_for_browsers_with_presigned_urls() {
    let s = extended();
    let pre = |origin: &str, method: &str| {
        raw(
            s.addr(),
            "OPTIONS",
            "/s3p/immuta/sales/plain.txt",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", method),
                ("Access-Control-Request-Headers", "range"),
            ],
        )
    };
    let r = pre("https://app.example.com", "GET");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, HEAD, PUT, POST, DELETE")
    );
    assert_eq!(r.header("access-control-allow-headers"), Some("range"));
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert_eq!(pre("https://evil.example.com", "GET").status, 403);
    // Uploads from a browser (presigned PUT) may be preflighted; methods S3 has no use for may not.
    assert_eq!(pre("https://app.example.com", "PUT").status, 200);
    assert_eq!(pre("https://app.example.com", "PATCH").status, 403);
    let r = get(
        s,
        "/s3p/immuta/sales/plain.txt",
        &[
            ("Origin", "https://app.example.com"),
            ("Authorization", &legacy(ALICE)),
        ],
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert!(r
        .header("access-control-expose-headers")
        .unwrap()
        .contains("ETag"));
    let r = get(
        s,
        "/s3p/immuta/sales/plain.txt",
        &[
            ("Origin", "https://evil.example.com"),
            ("Authorization", &legacy(ALICE)),
        ],
    );
    assert_eq!(r.header("access-control-allow-origin"), None);
    // CORS off in the standard configuration.
    let strict = &fixture().s3p;
    let r = raw(
        strict.addr(),
        "OPTIONS",
        "/s3p/immuta/sales/plain.txt",
        &[
            ("Origin", "https://app.example.com"),
            ("Access-Control-Request-Method", "GET"),
        ],
    );
    assert_eq!(r.status, 403);
}

#[test]
fn backend_credentials_from_the_standard_aws_chain() {
    let f = fixture();
    let inline =
        format!("    access_key_id: {GARAGE_KEY_ID}\n    secret_access_key: {GARAGE_SECRET}\n");
    let yaml = standard_config(&f.garage).replace(&inline, "    credentials: chain\n");
    assert_ne!(
        yaml,
        standard_config(&f.garage),
        "the inline credentials were replaced"
    );
    let empty_home = f.dir.join("empty-home");
    std::fs::create_dir_all(&empty_home).unwrap();
    let home = empty_home.to_str().unwrap();
    // Credentials from the environment provider of the chain.
    let s = S3p::start_with_env(
        &f.dir.join("s3p-chain"),
        &yaml,
        &[
            ("AWS_ACCESS_KEY_ID", GARAGE_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", GARAGE_SECRET),
            ("HOME", home),
        ],
    );
    let r = get(
        &s,
        "/s3p/immuta/sales/plain.txt",
        &[("Authorization", &legacy(ALICE))],
    );
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, b"body of plain.txt".as_slice()),
        "{}",
        r.text()
    );
    let r = get(
        &s,
        "/s3p/immuta?prefix=data/2024/",
        &[("Authorization", &legacy(ALICE))],
    );
    assert!(
        r.text().contains("<Key>data/2024/jan.csv</Key>"),
        "{}",
        r.text()
    );
    // No credentials anywhere (and no metadata service): 503, never a hang or a leak.
    let s = S3p::start_with_env(&f.dir.join("s3p-chain-empty"), &yaml, &[("HOME", home)]);
    let r = get(
        &s,
        "/s3p/immuta/sales/plain.txt",
        &[("Authorization", &legacy(ALICE))],
    );
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("<Code>ServiceUnavailable</Code>"));
}

#[test]
fn presigned_credentials_never_reach_the_log() {
    let s = &fixture().s3p;
    let client = sdk_client(
        &format!("{}/", s.endpoint()),
        ALICE,
        ALICE_SECRET,
        "us-east-1",
    );
    let cfg =
        aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(300)).unwrap();
    let req = runtime()
        .block_on(
            client
                .get_object()
                .bucket("immuta")
                .key("sales/no-such-object")
                .presigned(cfg),
        )
        .unwrap();
    let url = url::Url::parse(req.uri()).unwrap();
    let signature = url
        .query_pairs()
        .find(|(k, _)| k == "X-Amz-Signature")
        .unwrap()
        .1
        .to_string();
    let r = get(s, &format!("{}?{}", url.path(), url.query().unwrap()), &[]);
    assert_eq!(r.status, 404, "{}", r.text());
    let _ = audit_line(s, r.header("x-amz-request-id").unwrap());
    let log = s.log();
    assert!(
        !log.contains(&signature),
        "the presigned signature was logged"
    );
    assert!(
        !log.contains("X-Amz-Credential"),
        "a presigned query was logged"
    );
}

#[test]
fn sigv2_presigned_urls_cannot_be_extended_or_replayed() {
    let s = &fixture().s3p;
    let path = "/s3p/immuta/sales/plain.txt";
    let expires = (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300)
        .to_string();
    // botocore's form: the resource without the base path.
    let sts = format!("GET\n\n\n{expires}\n/immuta/sales/plain.txt");
    let sig = enc(&sigv2_signature(ALICE_SECRET, &sts));
    let good = format!("{path}?AWSAccessKeyId={ALICE}&Expires={expires}&Signature={sig}");
    assert_eq!(get(s, &good, &[]).status, 200);
    // Sub-resources the signature does not cover, spelled plainly or encoded, are refused.
    for extra in [
        "&response-content-type=text%2Fhtml",
        "&response%2Dcontent-type=text%2Fhtml",
        "&response%2Dcontent-disposition=attachment%3B%20filename%3Devil.html",
        "&version%49d=1",
    ] {
        let r = get(s, &format!("{good}{extra}"), &[]);
        assert_refused_before_backend(s, &r, 403, "SignatureDoesNotMatch");
        assert_eq!(r.header("content-type"), Some("application/xml"), "{extra}");
    }
    // No presigned URL lives longer than seven days.
    let far = (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 8 * 86_400)
        .to_string();
    let sts = format!("GET\n\n\n{far}\n/immuta/sales/plain.txt");
    let target = format!(
        "{path}?AWSAccessKeyId={ALICE}&Expires={far}&Signature={}",
        enc(&sigv2_signature(ALICE_SECRET, &sts))
    );
    assert_refused_before_backend(
        s,
        &get(s, &target, &[]),
        400,
        "AuthorizationQueryParametersError",
    );
}

#[test]
fn virtual_hosted_sigv2_cannot_replay_a_path_style_signature_for_another_key() {
    let s = extended();
    let host = format!("immuta.s3p.localhost:{}", s.port);
    let date = httpdate::fmt_http_date(SystemTime::now());
    // A signature botocore would make for the path-style key `s3p/sales/plain.txt`...
    let sts = format!("GET\n\n\n{date}\n/immuta/s3p/sales/plain.txt");
    let auth = format!("AWS {ALICE}:{}", sigv2_signature(ALICE_SECRET, &sts));
    // ...is not accepted for the virtual-hosted request of `sales/plain.txt`.
    let r = get(
        s,
        "/s3p/sales/plain.txt",
        &[("Host", &host), ("Date", &date), ("Authorization", &auth)],
    );
    assert_refused_before_backend(s, &r, 403, "SignatureDoesNotMatch");
    // The canonical virtual-hosted form works.
    let sts = format!("GET\n\n\n{date}\n/immuta/sales/plain.txt");
    let auth = format!("AWS {ALICE}:{}", sigv2_signature(ALICE_SECRET, &sts));
    let r = get(
        s,
        "/s3p/sales/plain.txt",
        &[("Host", &host), ("Date", &date), ("Authorization", &auth)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
}
