//! The decision table: every operation s3p serves, under every authentication outcome, with and without
//! the entitlement. No sockets: the state is built from YAML (backends at loopback literals, never
//! called), requests are signed with aws-sigv4 by the signature tests' own signer.

use super::write::verified_first;
use super::*;
use crate::auth::sigv4::tests::{sign_with_aws_sigv4, Body, Signing};
use crate::auth::test_keys::t0;
use crate::config::Config;
use crate::upload::Payload;
use std::borrow::Cow;

const YAML: &str = r#"
token_secret: 0123456789abcdef0123456789abcdef
owner: { id: owner-id, display_name: owner }
backends:
  b: { endpoint: "http://127.0.0.1:9", access_key_id: a, secret_access_key: s }
  elsewhere: { endpoint: "http://127.0.0.1:10", access_key_id: a, secret_access_key: s }
data_sources:
  sales: { backend: b, bucket: bucket-a, prefix: sales-data }
  hr: { backend: b, bucket: bucket-b }
  sandbox: { backend: b, bucket: bucket-c, prefix: box, writable: true }
  scratch: { backend: b, bucket: bucket-d, writable: true }
  other-store: { backend: elsewhere, bucket: bucket-e, writable: true }
cors: { allowed_origins: ["https://app.example"] }
api_keys:
  - { id: LEGACYKEY, name: Legacy, data_sources: { sales: read, sandbox: write, scratch: read, other-store: write } }
  - { id: AKIDSIGNER, secret: signer-secret-0000000000, name: Signer, legacy_header: false, data_sources: { sales: read, sandbox: write, scratch: read, other-store: write } }
  - { id: READONLYKEY, name: Reader, data_sources: [sales, sandbox] }
"#;

const HOST: &str = "s3p.test";

fn state() -> State {
    let config = Config::from_yaml_str(YAML, &|_| None).expect("test config");
    State::new(config).expect("state")
}

#[derive(Clone, Copy, Debug)]
enum Auth {
    Anonymous,
    Legacy(&'static str),
    /// SigV4 header auth with this key id and secret.
    SigV4(&'static str, &'static str),
}

/// The request's headers as a client sends them, authenticated as asked.
fn headers_for(auth: Auth, method: &'static str, target: &'static str) -> Vec<(String, String)> {
    let mut headers = vec![("host".to_string(), HOST.to_string())];
    match auth {
        Auth::Anonymous => {}
        Auth::Legacy(id) => headers.push(("authorization".into(), format!("AWS {id}:immuta"))),
        Auth::SigV4(akid, secret) => {
            // Signed by aws-sigv4, as the signature tests sign (at their fixed time, `t0`).
            return sign_with_aws_sigv4(&Signing {
                method,
                target,
                headers: &[],
                body: Body::Unsigned,
                akid,
                secret,
                region: "us-east-1",
                presign_expires: None,
            })
            .headers;
        }
    }
    headers
}

fn decide_with(st: &State, method: &str, target: &str, headers: &[(String, String)]) -> Decision {
    let (raw_path, raw_query) = target.split_once('?').unwrap_or((target, ""));
    let view = RequestView {
        method,
        raw_path,
        raw_query,
        headers: crate::auth::Headers::Pairs(headers),
    };
    decide(
        st,
        &Incoming {
            view: &view,
            host_bucket: None,
            scheme: "http",
            resolved: None,
            now: t0(),
        },
    )
}

fn decide_as(st: &State, auth: Auth, method: &'static str, target: &'static str) -> Decision {
    decide_with(st, method, target, &headers_for(auth, method, target))
}

/// What a decision comes to, in a form a table can hold.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    Answer(u16),
    List(String),
    /// The backend path and query.
    Forward(String),
    Refuse(&'static str),
    /// An STS call (decided once its body is read).
    Sts,
}

fn got(d: &Decision) -> Got {
    match &d.outcome {
        Outcome::Answer(a) => Got::Answer(a.status),
        Outcome::List(p) => Got::List(p.prefix.clone()),
        Outcome::Forward(r) => Got::Forward(r.path_and_query.clone()),
        Outcome::Refuse(e) => Got::Refuse(e.code.as_str()),
        Outcome::NeedsBody(NeedsBody {
            then: AfterBody::DeleteObjects(_),
            ..
        }) => Got::Answer(200),
        Outcome::NeedsBody(NeedsBody {
            then: AfterBody::Forward(r),
            ..
        }) => Got::Forward(r.path_and_query.clone()),
        Outcome::ListUploads(_) => Got::List("uploads".into()),
        Outcome::NeedsBody(NeedsBody {
            then: AfterBody::Sts(_),
            ..
        }) => Got::Sts,
    }
}

/// The verdict the audit line will carry once the outcome is answered.
fn final_verdict(d: &Decision) -> Verdict {
    let mut audit = d.audit.clone();
    if let Outcome::Refuse(e) = &d.outcome {
        audit.answered_with(e.code);
    }
    audit.verdict
}

const LEGACY: Auth = Auth::Legacy("LEGACYKEY");
const SIGNER: Auth = Auth::SigV4("AKIDSIGNER", "signer-secret-0000000000");

#[test]
fn every_operation_for_a_verified_key() {
    let st = state();
    let forward = |p: &str| Got::Forward(p.to_string());
    #[rustfmt::skip]
    let table: &[(&str, &str, Got, &str, Option<&str>)] = &[
        // method, target, outcome, operation, audited data source
        ("GET", "/s3p", Got::Answer(200), "ListBuckets", None),
        ("HEAD", "/s3p/immuta", Got::Answer(200), "HeadBucket", None),
        ("GET", "/s3p/immuta?location", Got::Answer(200), "GetBucketLocation", None),
        ("GET", "/s3p/immuta?list-type=2&prefix=sales/", Got::List("sales/".into()), "ListObjectsV2", Some("sales")),
        // A listed prefix the key may not read: listed (empty), but its data source is not named.
        ("GET", "/s3p/immuta?list-type=2&prefix=hr/", Got::List("hr/".into()), "ListObjectsV2", None),
        ("GET", "/s3p/immuta?prefix=", Got::List("".into()), "ListObjects", None),
        ("GET", "/s3p/immuta/sales/a%20b.csv", forward("/bucket-a/sales-data/a%20b.csv"), "GetObject", Some("sales")),
        ("HEAD", "/s3p/immuta/sales/a.csv", forward("/bucket-a/sales-data/a.csv"), "HeadObject", Some("sales")),
        ("GET", "/s3p/immuta/sales/a.csv?response-content-type=text%2Fplain&x-id=GetObject",
            forward("/bucket-a/sales-data/a.csv?response-content-type=text%2Fplain"), "GetObject", Some("sales")),
        // Not entitled, and not there at all, look the same.
        ("GET", "/s3p/immuta/hr/salaries.csv", Got::Refuse("AccessDenied"), "GetObject", Some("hr")),
        ("HEAD", "/s3p/immuta/nope/x", Got::Refuse("AccessDenied"), "HeadObject", Some("nope")),
        // Routing refusals, after authentication.
        ("GET", "/s3p/other/k", Got::Refuse("NoSuchBucket"), "Unknown", None),
        ("GET", "/s3px/immuta/sales/a.csv", Got::Refuse("NoSuchBucket"), "Unknown", None),
        ("PUT", "/s3p/immuta", Got::Refuse("MethodNotAllowed"), "Unknown", None),
        ("DELETE", "/s3p/immuta", Got::Refuse("MethodNotAllowed"), "Unknown", None),
        ("POST", "/s3p/immuta?uploads", Got::Refuse("MethodNotAllowed"), "Unknown", None),
        ("GET", "/s3p/immuta?uploads", Got::List("uploads".into()), "ListMultipartUploads", None),
        // DeleteObjects authorises each key once its body is read; a body is needed.
        ("POST", "/s3p/immuta?delete", Got::Refuse("MissingContentLength"), "DeleteObjects", None),
        // Writes: only where the data source is writable and the key granted write.
        ("DELETE", "/s3p/immuta/sales/a.csv", Got::Refuse("AccessDenied"), "DeleteObject", Some("sales")),
        ("DELETE", "/s3p/immuta/scratch/a.csv", Got::Refuse("AccessDenied"), "DeleteObject", Some("scratch")),
        ("DELETE", "/s3p/immuta/hr/a.csv", Got::Refuse("AccessDenied"), "DeleteObject", Some("hr")),
        ("PUT", "/s3p/immuta/hr/a.csv", Got::Refuse("AccessDenied"), "PutObject", Some("hr")),
        ("POST", "/s3p/immuta/sales/a.csv?uploads", Got::Refuse("AccessDenied"), "CreateMultipartUpload", Some("sales")),
        ("DELETE", "/s3p/immuta/sandbox/a%20b.csv", forward("/bucket-c/box/a%20b.csv"), "DeleteObject", Some("sandbox")),
        // Version ids are s3p's sealed ones (`version_ids_are_sealed_both_ways`): a backend's own is refused.
        ("DELETE", "/s3p/immuta/sandbox/a.csv?versionId=v1", Got::Refuse("InvalidArgument"), "DeleteObject", Some("sandbox")),
        // The data source's root is not an object anyone may write.
        ("DELETE", "/s3p/immuta/sandbox/", Got::Refuse("AccessDenied"), "DeleteObject", Some("sandbox")),
        ("POST", "/s3p/immuta/sandbox/big?uploads", forward("/bucket-c/box/big?uploads="), "CreateMultipartUpload", Some("sandbox")),
        // Upload ids are s3p's sealed ones: anything else is no upload.
        ("DELETE", "/s3p/immuta/sandbox/big?uploadId=backend-id", Got::Refuse("NoSuchUpload"), "AbortMultipartUpload", Some("sandbox")),
        // Deny by default: a write query parameter or x-amz-* header s3p does not serve is refused.
        ("PUT", "/s3p/immuta/sandbox/a.csv?renameObject", Got::Refuse("NotImplemented"), "PutObject", Some("sandbox")),
        ("DELETE", "/s3p/immuta/sandbox/a.csv?someday", Got::Refuse("NotImplemented"), "DeleteObject", Some("sandbox")),
        // A body is needed, with its length.
        ("PUT", "/s3p/immuta/sandbox/new.csv", Got::Refuse("MissingContentLength"), "PutObject", Some("sandbox")),
        ("GET", "/s3p/immuta/sales/a.csv?retention", Got::Refuse("NotImplemented"), "Unknown", None),
        // Object sub-resources that readers call: the ACL answered by s3p, tagging and attributes forwarded.
        ("GET", "/s3p/immuta/sales/a.csv?acl", Got::Answer(200), "GetObjectAcl", Some("sales")),
        ("GET", "/s3p/immuta/hr/a.csv?acl", Got::Refuse("AccessDenied"), "GetObjectAcl", Some("hr")),
        ("GET", "/s3p/immuta/sales/a.csv?tagging", forward("/bucket-a/sales-data/a.csv?tagging="), "GetObjectTagging", Some("sales")),
        ("GET", "/s3p/immuta/sales/a.csv?attributes", forward("/bucket-a/sales-data/a.csv?attributes="), "GetObjectAttributes", Some("sales")),
        ("GET", "/s3p/immuta/sales/../hr/x", Got::Refuse("InvalidArgument"), "Unknown", None),
    ];
    for auth in [LEGACY, SIGNER] {
        for (method, target, want, operation, data_source) in table {
            let d = decide_as(&st, auth, method, target);
            let case = format!("{auth:?} {method} {target}");
            assert_eq!(&got(&d), want, "{case}");
            assert_eq!(d.audit.operation, *operation, "{case}");
            assert_eq!(d.audit.data_source.as_deref(), *data_source, "{case}");
            let name = if matches!(auth, Auth::Legacy(_)) {
                "Legacy"
            } else {
                "Signer"
            };
            assert_eq!(d.audit.key_name.as_deref(), Some(name), "{case}");
            assert!(d.key.is_some() && d.auth_failure.is_none(), "{case}");
            let verdict = match want {
                Got::Refuse("AccessDenied") => Verdict::Denied,
                Got::Refuse(_) => Verdict::Failed,
                _ => Verdict::Allowed,
            };
            assert_eq!(final_verdict(&d), verdict, "{case}");
        }
    }
}

#[test]
fn authentication_failures_are_refused_before_routing() {
    let st = state();
    #[rustfmt::skip]
    let table: &[(Auth, &str, Option<&str>, Option<&str>)] = &[
        // auth, code, audited key name, throttled against this known key id
        (Auth::Anonymous, "AccessDenied", None, None),
        (Auth::Legacy("NOSUCHKEY"), "InvalidAccessKeyId", None, None),
        // A key that must sign may not use the legacy header.
        (Auth::Legacy("AKIDSIGNER"), "AccessDenied", Some("Signer"), Some("AKIDSIGNER")),
        (Auth::SigV4("AKIDSIGNER", "wrong-secret-000000000000"), "SignatureDoesNotMatch", Some("Signer"), Some("AKIDSIGNER")),
        (Auth::SigV4("AKIDUNKNOWN", "signer-secret-0000000000"), "InvalidAccessKeyId", None, None),
    ];
    let targets = [
        ("GET", "/s3p"),
        ("HEAD", "/s3p/immuta"),
        ("GET", "/s3p/immuta?list-type=2"),
        ("GET", "/s3p/immuta/sales/a.csv"),
        ("GET", "/s3p/immuta/hr/x"),
        ("GET", "/s3p/other/k"),
    ];
    for (auth, code, key_name, known) in table {
        for (method, target) in targets {
            let d = decide_as(&st, *auth, method, target);
            let case = format!("{auth:?} {method} {target}");
            assert_eq!(got(&d), Got::Refuse(code), "{case}");
            assert_eq!(d.audit.key_name.as_deref(), *key_name, "{case}");
            assert_eq!(d.audit.operation, "Unknown", "{case}");
            assert_eq!(d.audit.data_source, None, "{case}");
            assert!(d.key.is_none(), "{case}");
            let failure = d.auth_failure.as_ref().expect("an auth failure");
            assert_eq!(failure.known_key_id.as_deref(), *known, "{case}");
            assert!(failure.is_denial, "{case}");
            assert_eq!(final_verdict(&d), Verdict::Denied, "{case}");
        }
    }
}

#[test]
fn forwarded_headers_are_the_allow_listed_ones_only() {
    let st = state();
    let target = "/s3p/immuta/sales/a.csv";
    let mut headers = headers_for(LEGACY, "GET", target);
    headers.extend(
        [
            ("range", "bytes=0-9"),
            ("if-none-match", "\"abc\""),
            ("cookie", "session=1"),
            ("x-forwarded-for", "10.0.0.1"),
        ]
        .map(|(n, v)| (n.to_string(), v.to_string())),
    );
    let d = decide_with(&st, "GET", target, &headers);
    let Outcome::Forward(route) = &d.outcome else {
        panic!("not forwarded: {:?}", got(&d));
    };
    assert_eq!(
        route.headers,
        vec![
            ("range".into(), "bytes=0-9".to_string()),
            ("if-none-match".into(), "\"abc\"".to_string())
        ]
    );
    assert_eq!(route.host, "127.0.0.1:9");
    assert_eq!(d.audit.resource, "/immuta/sales/a.csv");
    assert_eq!(route.backend.config.name, "b");

    // A session token the key was not issued is refused (as S3 does), never forwarded or ignored.
    let mut with_token = headers.clone();
    with_token.push(("x-amz-security-token".into(), "t".into()));
    let d = decide_with(&st, "GET", target, &with_token);
    assert_eq!(got(&d), Got::Refuse("InvalidToken"));

    // A forwarded header that is not visible ASCII is refused, not signed lossily.
    headers.push(("if-match".into(), "caf\u{e9}".into()));
    let d = decide_with(&st, "GET", target, &headers);
    assert_eq!(got(&d), Got::Refuse("InvalidArgument"));
}

#[test]
fn malformed_framing_is_refused_and_closes() {
    let st = state();
    let target = "/s3p/immuta/sales/a.csv";
    #[rustfmt::skip]
    let table: &[(&str, &str, &str, Option<&str>)] = &[
        ("GET", "content-length", "5", Some("InvalidRequest")),
        ("HEAD", "transfer-encoding", "chunked", Some("InvalidRequest")),
        ("GET", "content-length", "0", None),
        ("GET", "connection", "host", Some("InvalidArgument")),
        ("GET", "connection", "keep-alive, x-secret", Some("InvalidArgument")),
        ("GET", "connection", "Keep-Alive", None),
        ("GET", "connection", "close", None),
    ];
    for (method, name, value, refused) in table {
        let mut headers = headers_for(LEGACY, method, target);
        headers.push((name.to_string(), value.to_string()));
        let d = decide_with(&st, method, target, &headers);
        let case = format!("{method} {name}: {value}");
        match refused {
            Some(code) => {
                assert_eq!(got(&d), Got::Refuse(code), "{case}");
                assert!(d.close, "{case}");
                assert!(d.key.is_none(), "refused before authentication: {case}");
            }
            None => {
                assert!(matches!(got(&d), Got::Forward(_)), "{case}");
                assert!(!d.close, "{case}");
            }
        }
    }
}

#[test]
fn cors_preflight() {
    let st = state();
    let preflight = |origin: Option<&str>, method: &str| {
        let mut headers = vec![("host".to_string(), HOST.to_string())];
        if let Some(o) = origin {
            headers.push(("origin".into(), o.into()));
        }
        headers.push(("access-control-request-method".into(), method.into()));
        decide_with(&st, "OPTIONS", "/s3p/immuta/sales/a.csv", &headers)
    };
    let d = preflight(Some("https://app.example"), "GET");
    assert_eq!(got(&d), Got::Answer(200));
    assert_eq!(d.audit.operation, "CorsPreflight");
    let Outcome::Answer(a) = &d.outcome else {
        unreachable!()
    };
    assert!(a
        .headers
        .contains(&("access-control-allow-origin", "https://app.example".into())));
    // No Origin: not a preflight at all (400, as S3); a foreign origin or a method S3 has no use for:
    // refused. Uploads and deletes may be preflighted (each request is still authorised).
    assert_eq!(got(&preflight(None, "GET")), Got::Refuse("BadRequest"));
    assert_eq!(
        got(&preflight(Some("https://evil.example"), "GET")),
        Got::Refuse("AccessDenied")
    );
    for method in ["PUT", "POST", "DELETE"] {
        assert_eq!(
            got(&preflight(Some("https://app.example"), method)),
            Got::Answer(200)
        );
    }
    assert_eq!(
        got(&preflight(Some("https://app.example"), "PATCH")),
        Got::Refuse("AccessDenied")
    );
}

#[test]
fn expected_bucket_owner_must_match() {
    let st = state();
    let target = "/s3p/immuta/sales/a.csv";
    for (owner, want_forward) in [("owner-id", true), ("someone-else", false)] {
        let mut headers = headers_for(LEGACY, "GET", target);
        headers.push(("x-amz-expected-bucket-owner".into(), owner.into()));
        let d = decide_with(&st, "GET", target, &headers);
        assert_eq!(
            matches!(d.outcome, Outcome::Forward(_)),
            want_forward,
            "{owner}"
        );
    }
}

#[test]
fn audit_verdicts_after_the_answer() {
    let mut allowed = AuditFacts::new("/immuta/sales/k".into());
    allowed.verdict = Verdict::Allowed;
    #[rustfmt::skip]
    let table = [
        (Verdict::Allowed, S3ErrorCode::NoSuchKey, Verdict::Allowed),
        (Verdict::Allowed, S3ErrorCode::PreconditionFailed, Verdict::Allowed),
        (Verdict::Allowed, S3ErrorCode::InvalidRange, Verdict::Allowed),
        (Verdict::Allowed, S3ErrorCode::AccessDenied, Verdict::Denied),
        (Verdict::Allowed, S3ErrorCode::SlowDown, Verdict::Denied),
        (Verdict::Allowed, S3ErrorCode::ServiceUnavailable, Verdict::Failed),
        (Verdict::Failed, S3ErrorCode::NoSuchKey, Verdict::Failed),
        (Verdict::Failed, S3ErrorCode::SignatureDoesNotMatch, Verdict::Denied),
    ];
    for (before, code, after) in table {
        let mut facts = allowed.clone();
        facts.verdict = before;
        facts.answered_with(code);
        assert_eq!(facts.verdict, after, "{before:?} {code:?}");
        assert_eq!(facts.reason, Some(code.as_str()));
    }
}

#[test]
fn header_allow_lists() {
    for h in [
        "content-type",
        "content-length",
        "content-range",
        "etag",
        "last-modified",
        "x-amz-meta-owner",
        "accept-ranges",
    ] {
        assert!(forwarded_response_header(h), "{h}");
    }
    for h in [
        "x-amz-request-id",
        "x-amz-id-2",
        "server",
        "location",
        "x-amz-bucket-region",
        "set-cookie",
    ] {
        assert!(!forwarded_response_header(h), "{h}");
    }
    for h in ["range", "if-none-match", "If-Modified-Since"] {
        assert!(forwarded_request_header(h).is_some(), "{h}");
    }
    for h in [
        "authorization",
        "x-amz-date",
        "x-amz-content-sha256",
        "x-amz-security-token",
        "cookie",
        "host",
        "x-amz-expected-bucket-owner",
    ] {
        assert!(forwarded_request_header(h).is_none(), "{h}");
    }
}

/// A GET of `sales/a.csv` read from a header map, as the proxy hands requests over.
fn decide_map(st: &State, map: &http::HeaderMap) -> Decision {
    let view = RequestView {
        method: "GET",
        raw_path: "/s3p/immuta/sales/a.csv",
        raw_query: "",
        headers: crate::auth::Headers::Map(map),
    };
    decide(
        st,
        &Incoming {
            view: &view,
            host_bucket: None,
            scheme: "http",
            resolved: None,
            now: t0(),
        },
    )
}

#[test]
fn header_values_that_are_not_utf8_are_refused_before_any_reader() {
    let st = state();
    let mut map = http::HeaderMap::new();
    map.insert("host", http::HeaderValue::from_static(HOST));
    map.insert(
        "authorization",
        http::HeaderValue::from_static("AWS LEGACYKEY:immuta"),
    );
    // Read from the request's own header map: forwarded as decided.
    assert!(matches!(got(&decide_map(&st, &map)), Got::Forward(_)));
    map.insert(
        "range",
        http::HeaderValue::from_bytes(b"bytes=\xff-1").unwrap(),
    );
    let d = decide_map(&st, &map);
    assert_eq!(got(&d), Got::Refuse("InvalidArgument"));
    assert!(d.key.is_none(), "refused before authentication");
    assert_eq!(d.audit.resource, "/immuta/sales/a.csv");
    let Outcome::Refuse(e) = &d.outcome else {
        unreachable!()
    };
    assert!(e.extra.contains(&("ArgumentName", "range".to_string())));
}

/// A legacy-authenticated request with these extra headers.
fn legacy_with(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut h = vec![
        ("host".to_string(), HOST.to_string()),
        (
            "authorization".to_string(),
            "AWS LEGACYKEY:immuta".to_string(),
        ),
    ];
    h.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    h
}

/// The route of a forward, whether its body is verified first or not.
fn forwarded(d: &Decision) -> &ObjectRoute {
    match &d.outcome {
        Outcome::Forward(r) => r,
        Outcome::NeedsBody(NeedsBody {
            then: AfterBody::Forward(r),
            ..
        }) => r,
        _ => panic!("not forwarded: {:?}", got(d)),
    }
}

#[test]
fn writes_carry_their_body_and_only_allow_listed_headers() {
    let st = state();
    let put = |extra: &[(&str, &str)]| {
        decide_with(
            &st,
            "PUT",
            "/s3p/immuta/sandbox/d/new.csv",
            &legacy_with(extra),
        )
    };
    let d = put(&[
        ("content-length", "11"),
        ("content-type", "text/csv"),
        ("x-amz-meta-Owner", "ana"),
        ("content-md5", "XrY7u+Ae7tCTyyK7j1rNww=="),
        ("expect", "100-continue"),
        ("x-amz-acl", "bucket-owner-full-control"),
    ]);
    let route = forwarded(&d);
    assert_eq!(route.path_and_query, "/bucket-c/box/d/new.csv");
    assert_eq!(d.audit.operation, "PutObject");
    assert_eq!(final_verdict(&d), Verdict::Allowed);
    let names: Vec<&str> = route.headers.iter().map(|(n, _)| n.as_ref()).collect();
    assert_eq!(names, ["content-type", "x-amz-meta-owner", "content-md5"]);
    assert!(route.expect_continue);
    match &route.payload {
        Some(Payload::Plain {
            length: 11,
            sha256: None,
        }) => {}
        _ => panic!("plain 11-byte payload expected"),
    }
    // aws-chunked, unsigned with a length: passed on as framed (the backend checks and keeps the
    // checksum too).
    let chunked = |length: (&'static str, &'static str)| {
        put(&[
            length,
            ("content-encoding", "aws-chunked, gzip"),
            ("x-amz-content-sha256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
            ("x-amz-decoded-content-length", "11"),
            ("x-amz-trailer", "x-amz-checksum-crc32"),
        ])
    };
    let d = chunked(("content-length", "80"));
    let route = forwarded(&d);
    let want: Vec<(Cow<str>, String)> = vec![
        ("content-encoding".into(), "aws-chunked,gzip".into()),
        ("x-amz-decoded-content-length".into(), "11".into()),
        ("x-amz-trailer".into(), "x-amz-checksum-crc32".into()),
    ];
    assert_eq!(route.headers, want);
    let payload = route.payload.as_ref().unwrap();
    assert_eq!(payload.backend_length(), Some(80));
    assert_eq!(
        payload.backend_payload_hash(),
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    );
    assert!(!route.expect_continue);
    // Without a length (Transfer-Encoding: chunked, as botocore sends parts): passed on chunked.
    let d = chunked(("transfer-encoding", "chunked"));
    let route = forwarded(&d);
    assert_eq!(route.headers, want);
    let payload = route.payload.as_ref().unwrap();
    assert_eq!(payload.backend_length(), None);
    assert_eq!(
        payload.backend_payload_hash(),
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    );
    // Refused: what s3p cannot honour, and what S3 refuses.
    #[rustfmt::skip]
    let refused: &[(&[(&str, &str)], &str)] = &[
        (&[("content-length", "1"), ("x-amz-acl", "public-read")], "NotImplemented"),
        (&[("content-length", "1"), ("x-amz-grant-read", "id=x")], "NotImplemented"),
        (&[("content-length", "1"), ("x-amz-server-side-encryption-customer-algorithm", "AES256")], "NotImplemented"),
        (&[("content-length", "1"), ("x-amz-object-lock-mode", "GOVERNANCE")], "NotImplemented"),
        (&[("content-length", "1"), ("x-amz-server-side-encryption", "aws:kms")], "NotImplemented"),
        // Deny by default: an x-amz-* header s3p neither forwards nor reads (an append, a condition).
        (&[("content-length", "1"), ("x-amz-write-offset-bytes", "0")], "NotImplemented"),
        (&[("content-length", "1"), ("x-amz-website-redirect-location-typo", "x")], "NotImplemented"),
        (&[("transfer-encoding", "chunked")], "MissingContentLength"),
        (&[("content-length", "5368709121")], "EntityTooLarge"),
        (&[("content-length", "1"), ("x-amz-content-sha256", "nothex")], "InvalidArgument"),
        // Signed chunks need a SigV4 signature to chain from.
        (&[("content-length", "90"), ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
           ("x-amz-decoded-content-length", "1")], "AccessDenied"),
        (&[("content-length", "90"), ("x-amz-content-sha256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER")], "MissingContentLength"),
        (&[("content-length", "90"), ("x-amz-content-sha256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
           ("x-amz-decoded-content-length", "1"), ("x-amz-trailer", "x-amz-checksum-md5")], "InvalidArgument"),
    ];
    for (extra, code) in refused {
        assert_eq!(got(&put(extra)), Got::Refuse(code), "{extra:?}");
    }
}

#[test]
fn multipart_upload_ids_are_sealed_for_their_object() {
    let st = state();
    let id = st.uploads.seal("sandbox", "big", "backend upload/1");
    let target = |q: &str| format!("/s3p/immuta/sandbox/big?{q}");
    let enc = crate::backend::encode_query_value(&id);
    let run = |method: &str, q: &str, extra: &[(&str, &str)]| {
        decide_with(&st, method, &target(q), &legacy_with(extra))
    };
    let d = run(
        "PUT",
        &format!("partNumber=3&uploadId={enc}"),
        &[("content-length", "5")],
    );
    assert_eq!(
        forwarded(&d).path_and_query,
        "/bucket-c/box/big?partNumber=3&uploadId=backend%20upload%2F1"
    );
    assert_eq!(d.audit.operation, "UploadPart");
    let d = run(
        "POST",
        &format!("uploadId={enc}"),
        &[("content-length", "100")],
    );
    let route = forwarded(&d);
    assert_eq!(
        route.path_and_query,
        "/bucket-c/box/big?uploadId=backend%20upload%2F1"
    );
    assert_eq!(
        route.rewrite,
        Rewrite::Complete {
            location: format!("http://{HOST}/s3p/immuta/sandbox/big"),
            key: "sandbox/big".into()
        }
    );
    let d = run("DELETE", &format!("uploadId={enc}"), &[]);
    assert_eq!(
        forwarded(&d).path_and_query,
        "/bucket-c/box/big?uploadId=backend%20upload%2F1"
    );
    // The same id against another object, or too long a completion, is refused.
    let other = format!("/s3p/immuta/sandbox/other?uploadId={enc}");
    let d = decide_with(&st, "DELETE", &other, &legacy_with(&[]));
    assert_eq!(got(&d), Got::Refuse("NoSuchUpload"));
    let d = run(
        "POST",
        &format!("uploadId={enc}"),
        &[("content-length", "99999999")],
    );
    assert_eq!(got(&d), Got::Refuse("EntityTooLarge"));
    // Create: the answer's upload id will be sealed for this object.
    let d = run(
        "POST",
        "uploads",
        &[("content-type", "application/x-parquet")],
    );
    assert_eq!(
        forwarded(&d).rewrite,
        Rewrite::Initiate {
            data_source: "sandbox".into(),
            key: "big".into()
        }
    );
    assert!(forwarded(&d).payload.is_none());
}

#[test]
fn version_ids_are_sealed_both_ways() {
    let st = state();
    let sealed = st.versions.seal("sandbox", "a.csv", "backend-v1");
    for (method, target, want) in [
        (
            "DELETE",
            format!("/s3p/immuta/sandbox/a.csv?versionId={sealed}"),
            Some("/bucket-c/box/a.csv?versionId=backend-v1"),
        ),
        (
            "GET",
            format!("/s3p/immuta/sandbox/a.csv?versionId={sealed}"),
            Some("/bucket-c/box/a.csv?versionId=backend-v1"),
        ),
        (
            "GET",
            "/s3p/immuta/sandbox/a.csv?versionId=null".to_string(),
            Some("/bucket-c/box/a.csv?versionId=null"),
        ),
        // Sealed for another object, or the backend's own: refused.
        (
            "DELETE",
            format!("/s3p/immuta/sandbox/b.csv?versionId={sealed}"),
            None,
        ),
        (
            "GET",
            "/s3p/immuta/sandbox/a.csv?versionId=backend-v1".to_string(),
            None,
        ),
    ] {
        let d = decide_with(&st, method, &target, &legacy_with(&[]));
        match want {
            Some(path) => {
                let route = forwarded(&d);
                assert_eq!(route.path_and_query, path, "{method} {target}");
                assert_eq!(
                    route.object.as_ref().unwrap().full(),
                    target[12..].split('?').next().unwrap()
                );
            }
            None => assert_eq!(got(&d), Got::Refuse("InvalidArgument"), "{method} {target}"),
        }
    }
}

#[test]
fn copies_need_read_on_the_source_and_one_backend() {
    let st = state();
    let copy = |dest: &str, source: &str| {
        decide_with(
            &st,
            "PUT",
            dest,
            &legacy_with(&[("x-amz-copy-source", source)]),
        )
    };
    let d = copy("/s3p/immuta/sandbox/c.csv", "/immuta/sales/a%20b.csv");
    let route = forwarded(&d);
    assert_eq!(d.audit.operation, "CopyObject");
    assert_eq!(route.path_and_query, "/bucket-c/box/c.csv");
    assert_eq!(
        route.headers,
        vec![(
            "x-amz-copy-source".into(),
            "/bucket-a/sales-data/a%20b.csv".to_string()
        )]
    );
    assert!(route.payload.is_none());
    let sealed = st.versions.seal("sales", "a.csv", "v+1");
    let d = copy(
        "/s3p/immuta/sandbox/c.csv",
        &format!("immuta/sales/a.csv?versionId={sealed}"),
    );
    assert_eq!(
        forwarded(&d).headers[0].1,
        "/bucket-a/sales-data/a.csv?versionId=v%2B1"
    );
    // A version id sealed for another object names nothing.
    let other = st.versions.seal("sales", "b.csv", "v+1");
    let d = copy(
        "/s3p/immuta/sandbox/c.csv",
        &format!("immuta/sales/a.csv?versionId={other}"),
    );
    assert_eq!(got(&d), Got::Refuse("InvalidArgument"));
    #[rustfmt::skip]
    let refused = [
        ("/s3p/immuta/sandbox/c.csv", "/immuta/hr/x.csv", "AccessDenied"),
        ("/s3p/immuta/sandbox/c.csv", "/other/sales/a.csv", "AccessDenied"),
        ("/s3p/immuta/sandbox/c.csv", "/immuta/sales/../hr/x", "InvalidArgument"),
        ("/s3p/immuta/sandbox/c.csv", "/immuta/sales/", "NoSuchKey"),
        ("/s3p/immuta/sandbox/c.csv", "/immuta/other-store/x", "NotImplemented"),
        ("/s3p/immuta/sales/c.csv", "/immuta/sandbox/x", "AccessDenied"),
        ("/s3p/immuta/sandbox/c.csv", "/immuta/sales/a.csv?acl", "InvalidArgument"),
    ];
    for (dest, source, code) in refused {
        assert_eq!(
            got(&copy(dest, source)),
            Got::Refuse(code),
            "{dest} <- {source}"
        );
    }
}

#[test]
fn delete_objects_bodies_are_bounded_and_need_an_integrity_header() {
    let st = state();
    let post = |extra: &[(&str, &str)]| {
        decide_with(&st, "POST", "/s3p/immuta?delete", &legacy_with(extra))
    };
    let md5 = ("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg==");
    assert!(matches!(
        post(&[("content-length", "2000"), md5]).outcome,
        Outcome::NeedsBody(NeedsBody {
            then: AfterBody::DeleteObjects(_),
            limit: 2000,
            ..
        })
    ));
    // More than 2 MiB is not a DeleteObjects body: refused before a byte of it is read.
    assert_eq!(
        got(&post(&[("content-length", "2097153"), md5])),
        Got::Refuse("MalformedXML")
    );
    assert_eq!(
        got(&post(&[("content-length", "2000")])),
        Got::Refuse("InvalidRequest")
    );
}

#[test]
fn delete_objects_of_a_key_that_may_write_nothing_is_refused_before_its_body() {
    let st = state();
    let headers = |id: &str| {
        let mut h = vec![
            ("host".to_string(), HOST.to_string()),
            ("authorization".to_string(), format!("AWS {id}:immuta")),
        ];
        h.push(("content-length".into(), "2000000".into()));
        h.push(("content-md5".into(), "1B2M2Y8AsgTpgAmY7PhCfg==".into()));
        h
    };
    let d = decide_with(&st, "POST", "/s3p/immuta?delete", &headers("READONLYKEY"));
    assert_eq!(got(&d), Got::Refuse("AccessDenied"));
    assert_eq!(final_verdict(&d), Verdict::Denied);
    // A key that may write somewhere has its body read (each key then authorised on its own).
    let d = decide_with(&st, "POST", "/s3p/immuta?delete", &headers("LEGACYKEY"));
    assert!(matches!(
        d.outcome,
        Outcome::NeedsBody(NeedsBody { limit: 2_000_000, then: AfterBody::DeleteObjects(ref c), .. })
            if c.length == 2_000_000
    ));
}

#[test]
fn written_virtual_keys_are_at_most_1024_bytes() {
    let st = state();
    // `sandbox/` is 8 bytes: the key inside may take 1,016.
    for (inside, multibyte, want_ok) in [
        (1016, false, true),
        (1017, false, false),
        // 'é' is two bytes in UTF-8: 508 of them make 1,016 bytes.
        (508, true, true),
        (509, true, false),
    ] {
        let key: String = if multibyte {
            "é".repeat(inside)
        } else {
            "k".repeat(inside)
        };
        let path = format!(
            "/s3p/immuta/sandbox/{}",
            crate::namespace::encode_path(&key)
        );
        for (method, query, extra) in [
            ("PUT", "", vec![("content-length", "1")]),
            ("POST", "?uploads", vec![]),
            (
                "PUT",
                "",
                vec![("x-amz-copy-source", "/immuta/sales/a.csv")],
            ),
        ] {
            let d = decide_with(&st, method, &format!("{path}{query}"), &legacy_with(&extra));
            if want_ok {
                forwarded(&d);
            } else {
                assert_eq!(
                    got(&d),
                    Got::Refuse("KeyTooLongError"),
                    "{inside} {method}{query}"
                );
            }
        }
    }
    // Deleting a key that is already too long stays possible (it may be on the backend already).
    let long = "k".repeat(2000);
    let d = decide_with(
        &st,
        "DELETE",
        &format!("/s3p/immuta/sandbox/{long}"),
        &legacy_with(&[]),
    );
    forwarded(&d);
}

#[test]
fn copy_source_only_where_a_copy_is_carried_out() {
    let st = state();
    let source = [("x-amz-copy-source", "/immuta/sales/a.csv")];
    for (method, target, operation) in [
        ("DELETE", "/s3p/immuta/sandbox/a.csv", "DeleteObject"),
        (
            "POST",
            "/s3p/immuta/sandbox/a.csv?uploads",
            "CreateMultipartUpload",
        ),
    ] {
        let d = decide_with(&st, method, target, &legacy_with(&source));
        assert_eq!(got(&d), Got::Refuse("InvalidArgument"), "{method} {target}");
        // Audited as the operation asked, never as a copy.
        assert_eq!(d.audit.operation, operation);
    }
    let d = decide_with(
        &st,
        "PUT",
        "/s3p/immuta/sandbox/a.csv",
        &legacy_with(&source),
    );
    assert_eq!(d.audit.operation, "CopyObject");
    assert!(forwarded(&d).copy);
    let id = st.uploads.seal("sandbox", "a.csv", "u1");
    let target = format!(
        "/s3p/immuta/sandbox/a.csv?partNumber=1&uploadId={}",
        crate::backend::encode_query_value(&id)
    );
    let d = decide_with(&st, "PUT", &target, &legacy_with(&source));
    assert_eq!(d.audit.operation, "UploadPartCopy");
    assert!(forwarded(&d).copy);
    // Not a copy: not limited as one.
    let d = decide_with(
        &st,
        "PUT",
        "/s3p/immuta/sandbox/a.csv",
        &legacy_with(&[("content-length", "1")]),
    );
    assert!(!forwarded(&d).copy);
}

#[test]
fn complete_bodies_are_capped_and_counted_and_locations_use_the_decided_scheme() {
    let st = state();
    let id = st.uploads.seal("sandbox", "big", "u1");
    let target = format!(
        "/s3p/immuta/sandbox/big?uploadId={}",
        crate::backend::encode_query_value(&id)
    );
    let complete = |length: u64, scheme: &'static str| {
        let length = length.to_string();
        let headers = legacy_with(&[("content-length", &length), ("x-forwarded-proto", "https")]);
        let (raw_path, raw_query) = target.split_once('?').unwrap();
        let view = RequestView {
            method: "POST",
            raw_path,
            raw_query,
            headers: crate::auth::Headers::Pairs(&headers),
        };
        decide(
            &st,
            &Incoming {
                view: &view,
                host_bucket: None,
                scheme,
                resolved: None,
                now: t0(),
            },
        )
    };
    let d = complete(MAX_COMPLETE_BODY, "http");
    let route = forwarded(&d);
    assert_eq!(route.body_hold, BodyHold::Counted(MAX_COMPLETE_BODY));
    // X-Forwarded-Proto is the glue's to believe (from trusted proxies only): the decision uses the
    // scheme it is handed.
    let location = |d: &Decision| match &forwarded(d).rewrite {
        Rewrite::Complete { location, .. } => location.clone(),
        r => panic!("{r:?}"),
    };
    assert!(location(&d).starts_with("http://"));
    assert!(location(&complete(10, "https")).starts_with("https://"));
    // A short body (an empty parts list is one) is read and checked before the backend sees it.
    assert_eq!(
        forwarded(&complete(10, "http")).body_hold,
        BodyHold::VerifiedFirst(10)
    );
    assert_eq!(
        forwarded(&complete(MAX_VERIFIED_FIRST_BODY + 1, "http")).body_hold,
        BodyHold::Counted(MAX_VERIFIED_FIRST_BODY + 1)
    );
    assert_eq!(
        got(&complete(MAX_COMPLETE_BODY + 1, "http")),
        Got::Refuse("EntityTooLarge")
    );
    // 10,000 parts at 256 bytes each fit.
    const { assert!(MAX_COMPLETE_BODY >= 10_000 * 256) };
}

#[test]
fn small_signed_chunk_bodies_are_verified_before_the_backend_sees_them() {
    let plan = |decoded: u64, encoded: Option<u64>| crate::upload::chunked::ChunkedPlan {
        decoded_length: decoded,
        signing: None,
        trailer: None,
        pass_through: false,
        encoded_length: encoded,
    };
    #[rustfmt::skip]
    let table = [
        (0, Some(86), Ok(BodyHold::VerifiedFirst(86))),
        (0, None, Ok(BodyHold::VerifiedFirst(MAX_VERIFIED_FIRST_BODY))),
        (0, Some(MAX_VERIFIED_FIRST_BODY + 1), Err("InvalidRequest")),
        (10 << 10, Some((10 << 10) + 200), Ok(BodyHold::VerifiedFirst((10 << 10) + 200))),
        (SMALL_SIGNED_BODY, Some(SMALL_SIGNED_BODY + 500), Ok(BodyHold::VerifiedFirst(SMALL_SIGNED_BODY + 500))),
        // Larger bodies stream; their last byte is kept back until the whole body verified.
        (SMALL_SIGNED_BODY + 1, Some(SMALL_SIGNED_BODY + 500), Ok(BodyHold::None)),
        (1 << 20, None, Ok(BodyHold::None)),
    ];
    for (decoded, encoded, want) in table {
        let got = verified_first(&plan(decoded, encoded)).map_err(|e| e.code.as_str());
        assert_eq!(got, want, "{decoded} {encoded:?}");
    }
}

/// A request signed with SigV2 by the Signer key, as botocore signs it (the resource without the base
/// path): in the `Authorization` header, or presigned.
fn sigv2_signed(target: &str, presigned: bool) -> (String, Vec<(String, String)>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let resource = path.strip_prefix("/s3p").unwrap_or(path);
    let (date, expires) = ("Wed, 01 May 2024 12:00:00 GMT", "1714565100");
    let mut headers = vec![("host".to_string(), HOST.to_string())];
    if !presigned {
        headers.push(("date".into(), date.into()));
    }
    let view = RequestView {
        method: "GET",
        raw_path: path,
        raw_query: query,
        headers: crate::auth::Headers::Pairs(&headers),
    };
    let sts =
        crate::auth::sigv2::string_to_sign(&view, if presigned { expires } else { date }, resource);
    let signature = crate::auth::sigv2::signature("signer-secret-0000000000", &sts);
    if presigned {
        let signature = crate::backend::encode_query_value(&signature);
        let auth = format!("AWSAccessKeyId=AKIDSIGNER&Expires={expires}&Signature={signature}");
        let query = if query.is_empty() {
            auth
        } else {
            format!("{query}&{auth}")
        };
        (format!("{path}?{query}"), headers)
    } else {
        headers.push((
            "authorization".into(),
            format!("AWS AKIDSIGNER:{signature}"),
        ));
        (target.to_string(), headers)
    }
}

#[test]
fn sigv2_listings_are_refused_in_both_forms() {
    // The scheme that verified decides (`Authenticated::scheme`): SigV2, in either form, signs none of a
    // listing's parameters. Its object reads pass; listings signed otherwise pass.
    let st = state();
    for presigned in [false, true] {
        for (target, listing) in [
            ("/s3p/immuta?prefix=sales%2F", true),
            ("/s3p/immuta?list-type=2&prefix=sales%2F", true),
            ("/s3p/immuta?uploads", true),
            ("/s3p/immuta/sales/a.csv", false),
        ] {
            let (target, headers) = sigv2_signed(target, presigned);
            let d = decide_with(&st, "GET", &target, &headers);
            let case = format!("{target} presigned: {presigned}");
            assert_eq!(d.audit.key_name.as_deref(), Some("Signer"), "{case}");
            assert!(d.auth_failure.is_none(), "{case}");
            match (&d.outcome, listing) {
                (Outcome::Refuse(e), true) => {
                    assert_eq!(e.code, S3ErrorCode::AccessDenied, "{case}");
                    assert!(e.message.contains("SigV2 cannot list"), "{case}: {e:?}");
                }
                (Outcome::Forward(_), false) => {}
                _ => panic!("{case}: {:?}", got(&d)),
            }
        }
    }
    let legacy = legacy_with(&[]);
    let d = decide_with(&st, "GET", "/s3p/immuta?prefix=sales%2F", &legacy);
    assert_eq!(got(&d), Got::List("sales/".into()));
    let d = decide_as(&st, SIGNER, "GET", "/s3p/immuta?prefix=sales%2F");
    assert_eq!(got(&d), Got::List("sales/".into()));
}
