use super::*;
use crate::auth::Headers;
use crate::wire::UNRESERVED;
use percent_encoding::percent_encode;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

// ---------------------------------------------------------------------------------------------
// Official AWS SigV4 test suite (shipped inside the aws-sigv4 crate's source), run against the
// service-independent core functions, in header and in query form.
// ---------------------------------------------------------------------------------------------

/// Cases that cannot apply to S3, and why. Everything else in the suite must run.
const SKIPPED: &[(&str, &str)] = &[
    // Path normalisation (`.`/`..` removal, `//` merging) is for generic AWS services; S3 keys
    // are literal, so S3 signs these paths as they are. Checked below: our canonical URI keeps
    // them.
    (
        "get-relative-normalized",
        "normalizes the path; S3 does not",
    ),
    (
        "get-relative-relative-normalized",
        "normalizes the path; S3 does not",
    ),
    (
        "get-slash-dot-slash-normalized",
        "normalizes the path; S3 does not",
    ),
    ("get-slash-normalized", "normalizes the path; S3 does not"),
    (
        "get-slash-pointless-dot-normalized",
        "normalizes the path; S3 does not",
    ),
    ("get-slashes-normalized", "normalizes the path; S3 does not"),
    // Double percent-encoding of the path (API Gateway, Lambda); S3 encodes once. These two
    // also ship no context.json, string to sign or signature.
    ("double-encode-path", "double-encodes the path; S3 does not"),
    ("double-url-encode", "double-encodes the path; S3 does not"),
];
/// Only the query form of this case is skipped: its signer adds X-Amz-Security-Token to the URL
/// after signing, so the token is in the URL but not in the canonical query. S3 requires a
/// presigned URL's token to be signed. (Its header form runs: the token header is simply not
/// signed.)
const SKIPPED_QUERY_FORM: &[&str] = &["post-sts-header-after"];

/// `$CARGO_HOME/registry/src/*/aws-sigv4-1.6.*/aws-signing-test-suite/v4`, the newest 1.6.x
/// found. Panics when absent: the vectors are part of this test, not optional.
fn suite_dir() -> PathBuf {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("neither CARGO_HOME nor HOME is set"))
                .join(".cargo")
        });
    let registry = cargo_home.join("registry").join("src");
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    for index in std::fs::read_dir(&registry).into_iter().flatten().flatten() {
        for krate in std::fs::read_dir(index.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = krate.file_name().to_string_lossy().into_owned();
            let Some(patch) = name
                .strip_prefix("aws-sigv4-1.6.")
                .and_then(|p| p.parse::<u64>().ok())
            else {
                continue;
            };
            let dir = krate.path().join("aws-signing-test-suite").join("v4");
            if dir.is_dir() {
                found.push((patch, dir));
            }
        }
    }
    found.sort();
    found.pop().map(|(_, dir)| dir).unwrap_or_else(|| {
        panic!(
            "aws-sigv4 1.6.x test suite not found under {}: run `cargo fetch`",
            registry.display()
        )
    })
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}/{file}: {e}", dir.display()))
}

/// A string field of the suite's flat context.json (no JSON library needed for these few
/// fields).
fn json_str(json: &str, key: &str) -> String {
    let at = json
        .find(&format!("\"{key}\""))
        .unwrap_or_else(|| panic!("no {key} in context.json"));
    let rest = &json[at + key.len() + 2..];
    let rest = &rest[rest.find('"').unwrap() + 1..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// A request as a client sends it (the gateway's decision table signs its requests here too).
pub(crate) struct HttpRequest {
    method: String,
    path: String,
    query: String,
    pub(crate) headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpRequest {
    pub(crate) fn view(&self) -> RequestView<'_> {
        RequestView {
            method: &self.method,
            raw_path: &self.path,
            raw_query: &self.query,
            headers: Headers::Pairs(&self.headers),
        }
    }
}

/// Parses the suite's HTTP/1.1 text. The request target may hold raw spaces (`GET /a b/
/// HTTP/1.1`), so it is what lies between the first and the last space. Folded header lines are
/// unfolded with one space.
fn parse_http(text: &str) -> HttpRequest {
    let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut lines = head.lines();
    let request_line = lines.next().unwrap();
    let (method, rest) = request_line.split_once(' ').unwrap();
    let (target, _version) = rest.rsplit_once(' ').unwrap();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            let last = headers.last_mut().unwrap();
            last.1.push(' ');
            last.1.push_str(line.trim_start());
        } else {
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.to_ascii_lowercase(), value.to_string()));
        }
    }
    HttpRequest {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body: body.as_bytes().to_vec(),
    }
}

#[test]
fn official_aws_sigv4_suite() {
    let root = suite_dir();
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for (skipped, _) in SKIPPED {
        assert!(
            names.iter().any(|n| n == skipped),
            "skip list names a missing case {skipped}"
        );
    }
    let (mut header_runs, mut query_runs) = (0, 0);
    for name in &names {
        let dir = root.join(name);
        if let Some((_, why)) = SKIPPED.iter().find(|(n, _)| n == name) {
            if why.starts_with("normalizes") {
                // Confirm the only difference is normalisation: we keep the path as sent.
                let req = parse_http(&read(&dir, "request.txt"));
                let expected = read(&dir, "header-canonical-request.txt");
                assert_ne!(
                    expected.lines().nth(1).unwrap(),
                    canonical_uri(&req.path),
                    "{name}"
                );
                assert_eq!(
                    canonical_uri(&req.path),
                    req.path,
                    "{name}: S3 signs the path as sent"
                );
            }
            continue;
        }
        let context = read(&dir, "context.json");
        let secret = json_str(&context, "secret_access_key");
        let (region, service) = (json_str(&context, "region"), json_str(&context, "service"));

        // Header form: verify the signed request as a server would.
        let req = parse_http(&read(&dir, "header-signed-request.txt"));
        let view = req.view();
        let auth = parse_authorization(view.header("authorization").unwrap()).unwrap();
        assert_eq!(
            auth.credential.access_key_id,
            json_str(&context, "access_key_id"),
            "{name}"
        );
        assert_eq!(
            (
                auth.credential.region.as_str(),
                auth.credential.service.as_str()
            ),
            (&*region, &*service)
        );
        let body_hash = hex::encode(Sha256::digest(&req.body));
        let payload = view.header("x-amz-content-sha256").unwrap_or(&body_hash);
        let creq = canonical_request(&view, &auth.signed_headers, payload, false);
        assert_eq!(
            creq,
            read(&dir, "header-canonical-request.txt"),
            "{name}: header canonical request"
        );
        let sts = string_to_sign(
            view.header("x-amz-date").unwrap(),
            &auth.credential.scope(),
            &creq,
        );
        assert_eq!(
            sts,
            read(&dir, "header-string-to-sign.txt"),
            "{name}: header string to sign"
        );
        let key = signing_key(&secret, &auth.credential.date, &region, &service).unwrap();
        let expected = read(&dir, "header-signature.txt");
        assert_eq!(
            signature(&key, &sts),
            expected.trim(),
            "{name}: header signature"
        );
        assert_eq!(
            auth.signature,
            expected.trim(),
            "{name}: signature in the signed request"
        );
        header_runs += 1;

        if SKIPPED_QUERY_FORM.contains(&name.as_str()) {
            continue;
        }
        // Query form (presigned URL).
        let req = parse_http(&read(&dir, "query-signed-request.txt"));
        let view = req.view();
        let params = parse_presigned(view.raw_query).unwrap();
        let creq = canonical_request(&view, &params.signed_headers, &body_hash, true);
        assert_eq!(
            creq,
            read(&dir, "query-canonical-request.txt"),
            "{name}: query canonical request"
        );
        let sts = string_to_sign(&params.amz_date, &params.credential.scope(), &creq);
        assert_eq!(
            sts,
            read(&dir, "query-string-to-sign.txt"),
            "{name}: query string to sign"
        );
        let key = signing_key(&secret, &params.credential.date, &region, &service).unwrap();
        let expected = read(&dir, "query-signature.txt");
        assert_eq!(
            signature(&key, &sts),
            expected.trim(),
            "{name}: query signature"
        );
        assert_eq!(
            params.signature,
            expected.trim(),
            "{name}: X-Amz-Signature in the signed request"
        );
        query_runs += 1;
    }
    // aws-sigv4 1.6.4 ships 40 cases: 31 run in both forms, 1 in header form only, 8 are
    // skipped.
    assert_eq!(
        names.len(),
        header_runs + SKIPPED.len(),
        "every case is run or listed as skipped"
    );
    assert_eq!(header_runs, query_runs + SKIPPED_QUERY_FORM.len());
    assert!(header_runs >= 32, "only {header_runs} cases ran");
}

// ---------------------------------------------------------------------------------------------
// S3 cases. Expected signatures come from aws-sigv4's own signer, configured as the AWS SDKs
// sign for S3 (single encoding, no path normalisation, x-amz-content-sha256), not from our
// code.
// ---------------------------------------------------------------------------------------------

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
    SignatureLocation, SigningSettings, UriPathNormalizationMode,
};

const HOST: &str = "127.0.0.1:8080";
use crate::auth::test_keys::*;
const ALL_SECRETS: &[&str] = &[SECRET, OLD_SECRET, NEW_SECRET];

#[derive(Clone, Copy)]
pub(crate) enum Body {
    Unsigned,
    Bytes(&'static [u8]),
    StreamingTrailer,
    /// A payload hash given as is (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`...).
    Precomputed(&'static str),
}

/// One signing by aws-sigv4: header form, or query form when `presign_expires` is set.
pub(crate) struct Signing {
    pub(crate) method: &'static str,
    /// Path and query as the SDK sends them (already percent-encoded).
    pub(crate) target: &'static str,
    pub(crate) headers: &'static [(&'static str, &'static str)],
    pub(crate) body: Body,
    pub(crate) akid: &'static str,
    pub(crate) secret: &'static str,
    pub(crate) region: &'static str,
    pub(crate) presign_expires: Option<u64>,
}

const fn get(target: &'static str) -> Signing {
    Signing {
        method: "GET",
        target,
        headers: &[],
        body: Body::Unsigned,
        akid: AKID,
        secret: SECRET,
        region: "us-east-1",
        presign_expires: None,
    }
}

/// The query encoding an SDK uses when it writes the presign parameters into the URL.
fn sdk_encode(s: &str) -> String {
    percent_encode(s.as_bytes(), UNRESERVED).to_string()
}

pub(crate) fn sign_with_aws_sigv4(s: &Signing) -> HttpRequest {
    let identity = Credentials::new(s.akid, s.secret, None, None, "test").into();
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    if let Some(expires) = s.presign_expires {
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(Duration::from_secs(expires));
    }
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(s.region)
        .name("s3")
        .time(t0())
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let body = match s.body {
        Body::Unsigned => SignableBody::UnsignedPayload,
        Body::Bytes(bytes) => SignableBody::Bytes(bytes),
        Body::StreamingTrailer => SignableBody::StreamingUnsignedPayloadTrailer,
        Body::Precomputed(hash) => SignableBody::Precomputed(hash.to_string()),
    };
    let url = format!("http://{HOST}{}", s.target);
    let signable = SignableRequest::new(s.method, url, s.headers.iter().copied(), body).unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let (path, mut query) = match s.target.split_once('?') {
        Some((path, query)) => (path.to_string(), query.to_string()),
        None => (s.target.to_string(), String::new()),
    };
    let mut headers = vec![("host".to_string(), HOST.to_string())];
    headers.extend(
        s.headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string())),
    );
    let (signing_headers, signing_params) = instructions.into_parts();
    headers.extend(
        signing_headers
            .iter()
            .map(|h| (h.name().to_string(), h.value().to_string())),
    );
    for (name, value) in signing_params {
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(&format!("{}={}", sdk_encode(name), sdk_encode(&value)));
    }
    HttpRequest {
        method: s.method.to_string(),
        path,
        query,
        headers,
        body: Vec::new(),
    }
}

fn verify(req: &HttpRequest, now: SystemTime) -> Result<String, S3Error> {
    let view = req.view();
    match view.header("authorization") {
        Some(authorization) => verify_header(&view, authorization, now, &lookup),
        None => verify_presigned(&view, now, &lookup),
    }
    .map(|verified| verified.access_key_id)
}

// Tampering helpers (plain fns so the table can hold them).
fn keep(_: &mut HttpRequest) {}
fn set_header(req: &mut HttpRequest, name: &str, value: &str) {
    req.headers.retain(|(n, _)| n != name);
    req.headers.push((name.to_string(), value.to_string()));
}
fn edit_authorization(req: &mut HttpRequest, from: &str, to: &str) {
    let value = req
        .view()
        .header("authorization")
        .unwrap()
        .replacen(from, to, 1);
    set_header(req, "authorization", &value);
}
fn flip_last_hex(s: &str) -> String {
    let (head, last) = s.split_at(s.len() - 1);
    format!("{head}{}", if last == "0" { "1" } else { "0" })
}
fn tamper_header_signature(req: &mut HttpRequest) {
    let value = flip_last_hex(req.view().header("authorization").unwrap());
    set_header(req, "authorization", &value);
}
fn tamper_query_signature(req: &mut HttpRequest) {
    // aws-sigv4 appends X-Amz-Signature last.
    assert!(req
        .query
        .rsplit('&')
        .next()
        .unwrap()
        .starts_with("X-Amz-Signature="));
    req.query = flip_last_hex(&req.query);
}

struct Case {
    name: &'static str,
    signing: Signing,
    /// Changes between the client and our verifier (transport, tampering).
    alter: fn(&mut HttpRequest),
    /// Verification time, seconds after signing.
    now: i64,
    expect: Result<&'static str, S3ErrorCode>,
}

fn check(cases: &[Case]) {
    for case in cases {
        let mut req = sign_with_aws_sigv4(&case.signing);
        (case.alter)(&mut req);
        let got = verify(&req, at(case.now));
        match (&got, case.expect) {
            (Ok(akid), Ok(expected)) => assert_eq!(akid, expected, "{}", case.name),
            (Err(e), Err(code)) => {
                assert_eq!(e.code, code, "{}: {e:?}", case.name);
                let shown = format!("{} {:?}", e.message, e.extra);
                for secret in ALL_SECRETS {
                    assert!(
                        !shown.contains(secret),
                        "{}: a secret leaked into the error",
                        case.name
                    );
                }
                if code == S3ErrorCode::SignatureDoesNotMatch {
                    let names: Vec<&str> = e.extra.iter().map(|(n, _)| *n).collect();
                    for name in [
                        "AWSAccessKeyId",
                        "StringToSign",
                        "SignatureProvided",
                        "CanonicalRequest",
                    ] {
                        assert!(
                            names.contains(&name),
                            "{}: no {name} in {names:?}",
                            case.name
                        );
                    }
                }
            }
            _ => panic!("{}: expected {:?}, got {got:?}", case.name, case.expect),
        }
    }
}

/// ListObjectsV2 as the aws CLI sends it, with an awkward prefix.
const LIST: &str = "/s3p/immuta?list-type=2&prefix=ds%2Fa%20b%2B&delimiter=%2F&encoding-type=url";
/// A presigned download with a response header override.
const OVERRIDES: &str =
    "/s3p/immuta/ds/f?response-content-disposition=attachment%3B%20filename%3D%22a%20b.csv%22";
/// A key with every kind of awkward character, encoded as botocore and the AWS SDKs send it
/// (each byte outside `A-Za-z0-9-._~` as %XX): space, `+`, `=`, `%`, `é`, `€`, `(`, `)`, `!`,
/// `*`, `'`, `&`, `,`.
const AWKWARD: &str =
    "/s3p/immuta/ds/dir/a%20b%2Bc%3Dd%25e%C3%A9%E2%82%AC%28x%29%21%2A%27%26%2C~.txt";

#[test]
fn s3_header_auth() {
    let ok = Ok(AKID);
    let cases = [
        Case {
            name: "GET with UNSIGNED-PAYLOAD",
            signing: get("/s3p/immuta/ds/file.csv"),
            alter: keep,
            now: 0,
            expect: ok,
        },
        Case {
            name: "awkward key",
            signing: get(AWKWARD),
            alter: keep,
            now: 0,
            expect: ok,
        },
        Case {
            name: "under-encoded key ( ) = ! * ' , and raw UTF-8, canonicalised as signed",
            signing: get("/s3p/immuta/ds/%28x%29%3Dy%21%2A%27%2C%C3%A9"),
            alter: |r| r.path = "/s3p/immuta/ds/(x)=y!*',é".to_string(),
            now: 0,
            expect: ok,
        },
        Case {
            name: "lowercase percent-encoding is canonicalised",
            signing: get("/s3p/immuta/ds/%C3%A9%2B"),
            alter: |r| r.path = "/s3p/immuta/ds/%c3%a9%2b".to_string(),
            now: 0,
            expect: ok,
        },
        Case {
            name: "literal dot segments and double slashes are not normalised",
            signing: get("/s3p/immuta/ds/./a/../b//c"),
            alter: keep,
            now: 0,
            expect: ok,
        },
        Case {
            name: "ListObjectsV2 with an encoded prefix and delimiter",
            signing: get(LIST),
            alter: keep,
            now: 0,
            expect: ok,
        },
        Case {
            name: "a query parameter without a value",
            signing: Signing {
                method: "POST",
                ..get("/s3p/immuta/ds/big.bin?uploads")
            },
            alter: keep,
            now: 0,
            expect: ok,
        },
        Case {
            name: "PUT with a signed body hash and user headers",
            signing: Signing {
                method: "PUT",
                headers: &[
                    ("content-type", "text/plain"),
                    ("x-amz-meta-note", "a   b  c "),
                ],
                body: Body::Bytes(b"hello world"),
                ..get("/s3p/immuta/ds/hello.txt")
            },
            alter: keep,
            now: 0,
            expect: ok,
        },
        Case {
            name: "empty body hash",
            signing: Signing {
                method: "PUT",
                body: Body::Bytes(b""),
                ..get("/s3p/immuta/ds/empty")
            },
            alter: keep,
            now: 0,
            expect: ok,
        },
        Case {
            name: "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            signing: Signing {
                method: "PUT",
                headers: &[
                    ("x-amz-trailer", "x-amz-checksum-crc32"),
                    ("content-encoding", "aws-chunked"),
                ],
                body: Body::StreamingTrailer,
                ..get("/s3p/immuta/ds/streamed")
            },
            alter: keep,
            now: 0,
            expect: ok,
        },
        Case {
            name: "any region",
            signing: Signing {
                region: "eu-central-1",
                ..get("/s3p/immuta/ds/file.csv")
            },
            alter: keep,
            now: 0,
            expect: ok,
        },
        Case {
            name: "rotation: old secret",
            signing: Signing {
                akid: ROTATING,
                secret: OLD_SECRET,
                ..get("/s3p/immuta/ds/f")
            },
            alter: keep,
            now: 0,
            expect: Ok(ROTATING),
        },
        Case {
            name: "rotation: new secret",
            signing: Signing {
                akid: ROTATING,
                secret: NEW_SECRET,
                ..get("/s3p/immuta/ds/f")
            },
            alter: keep,
            now: 0,
            expect: Ok(ROTATING),
        },
        Case {
            name: "clock 14 minutes ahead",
            signing: get("/s3p/immuta/ds/f"),
            alter: keep,
            now: 14 * 60,
            expect: ok,
        },
        Case {
            name: "clock 14 minutes behind",
            signing: get("/s3p/immuta/ds/f"),
            alter: keep,
            now: -14 * 60,
            expect: ok,
        },
        Case {
            name: "Date header instead of x-amz-date",
            signing: Signing {
                headers: &[("date", "Wed, 01 May 2024 12:00:00 GMT")],
                ..get("/s3p/immuta/ds/f")
            },
            alter: |r| r.headers.retain(|(n, _)| n != "x-amz-date"),
            now: 0,
            // aws-sigv4 always signs x-amz-date: without it the string to sign differs.
            expect: Err(S3ErrorCode::SignatureDoesNotMatch),
        },
        Case {
            name: "wrong secret",
            signing: Signing {
                secret: OLD_SECRET,
                ..get("/s3p/immuta/ds/f")
            },
            alter: keep,
            now: 0,
            expect: Err(S3ErrorCode::SignatureDoesNotMatch),
        },
        Case {
            name: "tampered signature",
            signing: get("/s3p/immuta/ds/f"),
            alter: tamper_header_signature,
            now: 0,
            expect: Err(S3ErrorCode::SignatureDoesNotMatch),
        },
        Case {
            name: "tampered path",
            signing: get("/s3p/immuta/ds/f"),
            alter: |r| r.path = "/s3p/immuta/ds/g".to_string(),
            now: 0,
            expect: Err(S3ErrorCode::SignatureDoesNotMatch),
        },
        Case {
            name: "signed with the /s3p prefix, verified without it",
            signing: get("/s3p/immuta/ds/f"),
            alter: |r| r.path = "/immuta/ds/f".to_string(),
            now: 0,
            expect: Err(S3ErrorCode::SignatureDoesNotMatch),
        },
        Case {
            name: "tampered query",
            signing: get("/s3p/immuta?list-type=2&prefix=a"),
            alter: |r| r.query = "list-type=2&prefix=b".to_string(),
            now: 0,
            expect: Err(S3ErrorCode::SignatureDoesNotMatch),
        },
        Case {
            name: "tampered signed header",
            signing: Signing {
                headers: &[("range", "bytes=0-9")],
                ..get("/s3p/immuta/ds/f")
            },
            alter: |r| set_header(r, "range", "bytes=0-99"),
            now: 0,
            expect: Err(S3ErrorCode::SignatureDoesNotMatch),
        },
        Case {
            name: "tampered payload hash",
            signing: Signing {
                method: "PUT",
                body: Body::Bytes(b"x"),
                ..get("/s3p/immuta/ds/f")
            },
            alter: |r| set_header(r, "x-amz-content-sha256", UNSIGNED_PAYLOAD),
            now: 0,
            expect: Err(S3ErrorCode::SignatureDoesNotMatch),
        },
        Case {
            name: "unknown key",
            signing: Signing {
                akid: "AKIDNOBODY",
                ..get("/s3p/immuta/ds/f")
            },
            alter: keep,
            now: 0,
            expect: Err(S3ErrorCode::InvalidAccessKeyId),
        },
        Case {
            name: "key without secrets",
            signing: Signing {
                akid: NO_SECRET,
                ..get("/s3p/immuta/ds/f")
            },
            alter: keep,
            now: 0,
            expect: Err(S3ErrorCode::SignatureDoesNotMatch),
        },
        Case {
            name: "clock 16 minutes ahead",
            signing: get("/s3p/immuta/ds/f"),
            alter: keep,
            now: 16 * 60,
            expect: Err(S3ErrorCode::RequestTimeTooSkewed),
        },
        Case {
            name: "clock 16 minutes behind",
            signing: get("/s3p/immuta/ds/f"),
            alter: keep,
            now: -16 * 60,
            expect: Err(S3ErrorCode::RequestTimeTooSkewed),
        },
        Case {
            name: "an x-amz-* header that is not signed",
            signing: get("/s3p/immuta/ds/f"),
            alter: |r| set_header(r, "x-amz-copy-source", "/other/key"),
            now: 0,
            expect: Err(S3ErrorCode::AccessDenied),
        },
        Case {
            name: "no x-amz-content-sha256",
            signing: get("/s3p/immuta/ds/f"),
            alter: |r| r.headers.retain(|(n, _)| n != "x-amz-content-sha256"),
            now: 0,
            expect: Err(S3ErrorCode::InvalidRequest),
        },
        Case {
            name: "invalid x-amz-content-sha256",
            signing: get("/s3p/immuta/ds/f"),
            alter: |r| set_header(r, "x-amz-content-sha256", "not-a-hash"),
            now: 0,
            expect: Err(S3ErrorCode::InvalidArgument),
        },
        Case {
            name: "no x-amz-date and no date",
            signing: get("/s3p/immuta/ds/f"),
            alter: |r| r.headers.retain(|(n, _)| n != "x-amz-date"),
            now: 0,
            expect: Err(S3ErrorCode::AccessDenied),
        },
        Case {
            name: "scope date is not the x-amz-date day",
            signing: get("/s3p/immuta/ds/f"),
            alter: |r| set_header(r, "x-amz-date", "20240502T120000Z"),
            now: 0,
            expect: Err(S3ErrorCode::AuthorizationHeaderMalformed),
        },
        Case {
            name: "service is not s3",
            signing: get("/s3p/immuta/ds/f"),
            alter: |r| edit_authorization(r, "/s3/aws4_request", "/ec2/aws4_request"),
            now: 0,
            expect: Err(S3ErrorCode::AuthorizationHeaderMalformed),
        },
        Case {
            name: "host not signed",
            signing: get("/s3p/immuta/ds/f"),
            alter: |r| edit_authorization(r, "SignedHeaders=host;", "SignedHeaders="),
            now: 0,
            expect: Err(S3ErrorCode::AuthorizationHeaderMalformed),
        },
        Case {
            name: "credential with four parts",
            signing: get("/s3p/immuta/ds/f"),
            alter: |r| edit_authorization(r, "/us-east-1/", "/"),
            now: 0,
            expect: Err(S3ErrorCode::AuthorizationHeaderMalformed),
        },
        Case {
            name: "no Signature component",
            signing: get("/s3p/immuta/ds/f"),
            alter: |r| edit_authorization(r, "Signature=", "Sig="),
            now: 0,
            expect: Err(S3ErrorCode::AuthorizationHeaderMalformed),
        },
    ];
    check(&cases);
}

#[test]
fn s3_presigned_urls() {
    const fn presigned(target: &'static str, expires: u64) -> Signing {
        Signing {
            presign_expires: Some(expires),
            ..get(target)
        }
    }
    let ok = Ok(AKID);
    let cases = [
        Case {
            name: "presigned GET",
            signing: presigned("/s3p/immuta/ds/file.csv", 3600),
            alter: keep,
            now: 60,
            expect: ok,
        },
        Case {
            name: "presigned awkward key",
            signing: presigned(AWKWARD, 3600),
            alter: keep,
            now: 60,
            expect: ok,
        },
        Case {
            name: "presigned GET with response overrides",
            signing: presigned(OVERRIDES, 600),
            alter: keep,
            now: 0,
            expect: ok,
        },
        Case {
            name: "last valid second",
            signing: presigned("/s3p/immuta/ds/f", 3600),
            alter: keep,
            now: 3600,
            expect: ok,
        },
        Case {
            name: "one week",
            signing: presigned("/s3p/immuta/ds/f", 604_800),
            alter: keep,
            now: 604_000,
            expect: ok,
        },
        Case {
            name: "signed 14 minutes in the future",
            signing: presigned("/s3p/immuta/ds/f", 60),
            alter: keep,
            now: -14 * 60,
            expect: ok,
        },
        Case {
            name: "rotation: old secret",
            signing: Signing {
                akid: ROTATING,
                secret: OLD_SECRET,
                ..presigned("/s3p/immuta/ds/f", 60)
            },
            alter: keep,
            now: 0,
            expect: Ok(ROTATING),
        },
        Case {
            name: "expired",
            signing: presigned("/s3p/immuta/ds/f", 3600),
            alter: keep,
            now: 3601,
            expect: Err(S3ErrorCode::AccessDenied),
        },
        Case {
            name: "signed 16 minutes in the future (not valid yet)",
            signing: presigned("/s3p/immuta/ds/f", 3600),
            alter: keep,
            now: -16 * 60,
            expect: Err(S3ErrorCode::AccessDenied),
        },
        Case {
            name: "X-Amz-Expires over a week",
            signing: presigned("/s3p/immuta/ds/f", 3600),
            alter: |r| {
                r.query = r
                    .query
                    .replace("X-Amz-Expires=3600", "X-Amz-Expires=604801")
            },
            now: 0,
            expect: Err(S3ErrorCode::AuthorizationQueryParametersError),
        },
        Case {
            name: "X-Amz-Expires zero",
            signing: presigned("/s3p/immuta/ds/f", 3600),
            alter: |r| r.query = r.query.replace("X-Amz-Expires=3600", "X-Amz-Expires=0"),
            now: 0,
            expect: Err(S3ErrorCode::AuthorizationQueryParametersError),
        },
        Case {
            name: "extended X-Amz-Expires",
            signing: presigned("/s3p/immuta/ds/f", 3600),
            alter: |r| r.query = r.query.replace("X-Amz-Expires=3600", "X-Amz-Expires=7200"),
            now: 0,
            expect: Err(S3ErrorCode::SignatureDoesNotMatch),
        },
        Case {
            name: "no X-Amz-SignedHeaders",
            signing: presigned("/s3p/immuta/ds/f", 3600),
            alter: |r| r.query = r.query.replace("X-Amz-SignedHeaders=", "X-Amz-Unsigned="),
            now: 0,
            expect: Err(S3ErrorCode::AuthorizationQueryParametersError),
        },
        Case {
            name: "wrong algorithm",
            signing: presigned("/s3p/immuta/ds/f", 3600),
            alter: |r| r.query = r.query.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512"),
            now: 0,
            expect: Err(S3ErrorCode::AuthorizationQueryParametersError),
        },
        Case {
            name: "tampered signature",
            signing: presigned("/s3p/immuta/ds/f", 3600),
            alter: tamper_query_signature,
            now: 0,
            expect: Err(S3ErrorCode::SignatureDoesNotMatch),
        },
        Case {
            name: "tampered path",
            signing: presigned("/s3p/immuta/ds/f", 3600),
            alter: |r| r.path.push('g'),
            now: 0,
            expect: Err(S3ErrorCode::SignatureDoesNotMatch),
        },
        Case {
            name: "an added query parameter",
            signing: presigned("/s3p/immuta/ds/f", 3600),
            alter: |r| r.query.push_str("&versionId=1"),
            now: 0,
            expect: Err(S3ErrorCode::SignatureDoesNotMatch),
        },
        Case {
            name: "an added unsigned x-amz-* header",
            signing: presigned("/s3p/immuta/ds/f", 3600),
            alter: |r| set_header(r, "x-amz-server-side-encryption", "AES256"),
            now: 0,
            expect: Err(S3ErrorCode::AccessDenied),
        },
        Case {
            name: "wrong secret",
            signing: Signing {
                secret: NEW_SECRET,
                ..presigned("/s3p/immuta/ds/f", 3600)
            },
            alter: keep,
            now: 0,
            expect: Err(S3ErrorCode::SignatureDoesNotMatch),
        },
        Case {
            name: "unknown key",
            signing: Signing {
                akid: "AKIDNOBODY",
                ..presigned("/s3p/immuta/ds/f", 3600)
            },
            alter: keep,
            now: 0,
            expect: Err(S3ErrorCode::InvalidAccessKeyId),
        },
    ];
    check(&cases);
}

#[test]
fn error_details_follow_aws() {
    let mut req = sign_with_aws_sigv4(&get("/s3p/immuta/ds/f"));
    tamper_header_signature(&mut req);
    let e = verify(&req, t0()).unwrap_err();
    let detail = |name: &str| {
        e.extra
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(e.status(), 403);
    assert_eq!(detail("AWSAccessKeyId"), AKID);
    assert!(detail("StringToSign")
        .starts_with("AWS4-HMAC-SHA256\n20240501T120000Z\n20240501/us-east-1/s3/aws4_request\n"));
    assert!(
        detail("CanonicalRequest").starts_with("GET\n/s3p/immuta/ds/f\n\nhost:127.0.0.1:8080\n")
    );
    assert!(detail("StringToSignBytes").starts_with("41 57 53 34 2d"));
    assert_eq!(detail("SignatureProvided").len(), 64);

    let req = sign_with_aws_sigv4(&Signing {
        presign_expires: Some(60),
        ..get("/s3p/immuta/ds/f")
    });
    let e = verify(&req, at(61)).unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (S3ErrorCode::AccessDenied, "Request has expired")
    );
    assert!(
        e.extra
            .contains(&("Expires", "2024-05-01T12:01:00Z".to_string())),
        "{:?}",
        e.extra
    );

    let req = sign_with_aws_sigv4(&get("/s3p/immuta/ds/f"));
    let e = verify(&req, at(3600)).unwrap_err();
    assert_eq!(e.code, S3ErrorCode::RequestTimeTooSkewed);
    assert!(
        e.extra
            .contains(&("ServerTime", "2024-05-01T13:00:00Z".to_string())),
        "{:?}",
        e.extra
    );
    assert!(
        e.extra
            .contains(&("RequestTime", "20240501T120000Z".to_string())),
        "{:?}",
        e.extra
    );

    let req = sign_with_aws_sigv4(&Signing {
        akid: "AKIDNOBODY",
        ..get("/s3p/immuta/ds/f")
    });
    let e = verify(&req, t0()).unwrap_err();
    assert_eq!(e.extra, vec![("AWSAccessKeyId", "AKIDNOBODY".to_string())]);
}

#[test]
fn canonical_pieces() {
    // (raw path as sent, canonical URI)
    for (raw, canonical) in [
        ("", "/"),
        ("/", "/"),
        ("/s3p/immuta/a%20b", "/s3p/immuta/a%20b"),
        ("/s3p/immuta/a b+c", "/s3p/immuta/a%20b%2Bc"),
        ("/s3p/immuta/a%2Fb/c", "/s3p/immuta/a%2Fb/c"),
        ("/s3p/immuta/%e2%82%ac", "/s3p/immuta/%E2%82%AC"),
        ("/s3p/immuta/€", "/s3p/immuta/%E2%82%AC"),
        ("/s3p/immuta/100%", "/s3p/immuta/100%25"),
        ("/s3p//./x/..", "/s3p//./x/.."),
        ("/s3p/-._~", "/s3p/-._~"),
    ] {
        assert_eq!(canonical_uri(raw), canonical, "{raw:?}");
    }
    // (raw query, canonical query)
    for (raw, canonical) in [
        ("", ""),
        ("a", "a="),
        ("b=2&a=1&a=0", "a=0&a=1&b=2"),
        ("prefix=a+b%2Bc", "prefix=a%20b%2Bc"),
        ("x=%7e&y=~&z=/", "x=~&y=~&z=%2F"),
        ("a=1&&b=", "a=1&b="),
        ("%E1%88%B4=1&Z=2", "%E1%88%B4=1&Z=2"),
        // Already canonical (borrowed as sent) or not: lowercase hex, an escaped unreserved byte, a
        // truncated escape, a plus, reserved bytes sent raw.
        ("k=%2F%3D", "k=%2F%3D"),
        ("k=%2f", "k=%2F"),
        ("k=%41%2D", "k=A-"),
        ("k=%2", "k=%252"),
        ("k=%", "k=%25"),
        ("k=a+b", "k=a%20b"),
        ("k=a/b:c", "k=a%2Fb%3Ac"),
        (
            "X-Amz-Credential=AK%2F20240101%2Fus-east-1%2Fs3%2Faws4_request",
            "X-Amz-Credential=AK%2F20240101%2Fus-east-1%2Fs3%2Faws4_request",
        ),
    ] {
        assert_eq!(canonical_query(raw, false), canonical, "{raw:?}");
    }
    // The signature parameter is left out however its name is spelled.
    assert_eq!(canonical_query("a=1&X%2DAmz-Signature=00", true), "a=1");
    assert_eq!(canonical_query("a=1&X-Amz-Signature=00", true), "a=1");
    assert_eq!(
        canonical_query("a=1&X-Amz-Signature=00", false),
        "X-Amz-Signature=00&a=1"
    );
    let headers = vec![
        ("host".to_string(), " h ".to_string()),
        ("X-Amz-Meta-A".to_string(), "  one   two ".to_string()),
        ("x-amz-meta-a".to_string(), "three".to_string()),
    ];
    let view = RequestView {
        method: "GET",
        raw_path: "/",
        raw_query: "",
        headers: Headers::Pairs(&headers),
    };
    assert_eq!(
        canonical_headers(&view, &["host", "x-amz-meta-a", "missing"]),
        "host:h\nx-amz-meta-a:one two,three\nmissing:\n"
    );
    assert!(is_presigned("a=1&X-Amz-Credential=x") && !is_presigned("a=1&Signature=x"));
}

#[test]
fn the_signing_key_cache_is_bounded_and_transparent() {
    // A client that varies its scope (one region per request) only makes keys derive again: the cache
    // of this thread never holds more than its bound, and every key is the one derived from scratch.
    let fresh =
        |region: &str| canonical::derive_signing_key(SECRET, "20240101", region, "s3").unwrap();
    for i in 0..200 {
        let region = format!("region-{i}");
        assert_eq!(
            signing_key(SECRET, "20240101", &region, "s3"),
            Some(fresh(&region))
        );
        assert!(
            canonical::cached_signing_keys() <= 32,
            "{}",
            canonical::cached_signing_keys()
        );
    }
    // A cached key and a keyed signer give the same signature as the key itself.
    let key = fresh("region-199");
    assert_eq!(
        signing_key(SECRET, "20240101", "region-199", "s3"),
        Some(key)
    );
    let signer = signer(SECRET, "20240101", "region-199", "s3").unwrap();
    assert_eq!(sign_with(signer, "to sign"), signature(&key, "to sign"));
}

#[test]
fn dates() {
    assert_eq!(parse_amz_date("20240501T120000Z"), Some(t0()));
    assert_eq!(format_amz_date(t0()), "20240501T120000Z");
    assert_eq!(format_iso8601(t0()), "2024-05-01T12:00:00Z");
    for bad in [
        "20240230T000000Z",
        "20241301T000000Z",
        "20240501T240000Z",
        "2024-05-01T12:00:00Z",
        "20240501T120000",
        "19690101T000000Z",
        "2024050aT120000Z",
        // Non-ASCII of the right byte length must not panic (a char boundary inside a field).
        "202\u{e9}101T000000Z",
        "20240\u{fffd}1T0000Z",
    ] {
        assert_eq!(parse_amz_date(bad), None, "{bad}");
    }
    // Every day of a leap year round-trips.
    for day in 0..366 {
        let t = UNIX_EPOCH + Duration::from_secs(1_704_067_200 + day * 86_400 + 3_661);
        assert_eq!(parse_amz_date(&format_amz_date(t)), Some(t));
    }
    assert_eq!(signing_key(SECRET, "20240230", "us-east-1", "s3"), None);
}
