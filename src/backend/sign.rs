//! SigV4 for the requests s3p sends to a backend, built directly: a backend request always has the same
//! shape (method, an already encoded path, a query s3p wrote or allow-listed, a few allow-listed
//! headers, a payload hash), so the canonical request is written into one buffer and the signing key
//! comes from the per-thread cache of [`crate::auth::sigv4::signer`]. Pure: the time is a
//! parameter. Every output is checked against `aws_sigv4` (the AWS SDK's signer) in the tests below.

use crate::auth::sigv4::{
    canonical_query, sign_with, signer, ALGORITHM, S3_SERVICE, SCOPE_TERMINATOR,
};
use crate::timefmt::format_amz_date;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::time::SystemTime;

/// A backend request as it is signed.
#[derive(Clone, Copy)]
pub struct ToSign<'a> {
    pub method: &'a str,
    pub host: &'a str,
    /// The path as sent (percent-encoded, never normalised: it is the canonical URI as it is) and the
    /// query, if any, after `?`.
    pub path_and_query: &'a str,
    /// Headers to sign besides `host`, by lowercase name: every `x-amz-*` header that will be sent
    /// must be among them.
    pub headers: &'a [(&'a str, &'a str)],
    /// `x-amz-content-sha256`: a hex SHA-256 of the body, or `UNSIGNED-PAYLOAD`.
    pub payload_hash: &'a str,
}

/// The backend's credentials at the time of signing.
pub struct SigningCredentials<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    /// A temporary credential's session token: sent and signed as `x-amz-security-token`.
    pub session_token: Option<&'a str>,
}

/// Headers the SDKs never sign (proxies change them, or the signature itself is in one); the same set
/// as `aws_sigv4`'s default, so that both sign the same request the same way.
const NEVER_SIGNED: &[&str] = &[
    "authorization",
    "user-agent",
    "x-amzn-trace-id",
    "transfer-encoding",
];

/// The headers to add to the request: `x-amz-date`, `x-amz-content-sha256`, `x-amz-security-token`
/// (temporary credentials only) and `authorization`.
pub fn sign(
    credentials: &SigningCredentials,
    region: &str,
    req: &ToSign,
    now: SystemTime,
) -> Vec<(&'static str, String)> {
    let amz_date = format_amz_date(now);
    let day = &amz_date[..8];
    let (path, query) = match req.path_and_query.split_once('?') {
        Some((path, query)) => (path, query),
        None => (req.path_and_query, ""),
    };

    // Every signed header, sorted by name (stable: repeated names keep their order and are joined).
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(req.headers.len() + 4);
    headers.push(("host", req.host));
    headers.extend(
        req.headers
            .iter()
            .filter(|(name, _)| !NEVER_SIGNED.contains(name)),
    );
    headers.push(("x-amz-content-sha256", req.payload_hash));
    headers.push(("x-amz-date", &amz_date));
    if let Some(token) = credentials.session_token {
        headers.push(("x-amz-security-token", token));
    }
    headers.sort_by(|a, b| a.0.cmp(b.0));

    let mut canonical = String::with_capacity(256 + req.path_and_query.len());
    canonical.push_str(req.method);
    canonical.push('\n');
    canonical.push_str(if path.is_empty() { "/" } else { path });
    canonical.push('\n');
    if !query.is_empty() {
        canonical.push_str(&canonical_query(query, false));
    }
    canonical.push('\n');
    let mut signed_headers = String::with_capacity(128);
    let mut previous: Option<&str> = None;
    for (name, value) in &headers {
        if previous == Some(*name) {
            canonical.push(',');
        } else {
            if previous.is_some() {
                canonical.push('\n');
                signed_headers.push(';');
            }
            canonical.push_str(name);
            canonical.push(':');
            signed_headers.push_str(name);
        }
        canonical.push_str(&trim_spaces(value));
        previous = Some(name);
    }
    canonical.push_str("\n\n");
    canonical.push_str(&signed_headers);
    canonical.push('\n');
    canonical.push_str(req.payload_hash);

    // The rest by appending, not `format!`: this runs for every request.
    let mut scope = String::with_capacity(day.len() + region.len() + 20);
    for (i, part) in [day, region, S3_SERVICE, SCOPE_TERMINATOR]
        .iter()
        .enumerate()
    {
        if i > 0 {
            scope.push('/');
        }
        scope.push_str(part);
    }
    let mut string_to_sign =
        String::with_capacity(ALGORITHM.len() + amz_date.len() + scope.len() + 67);
    for part in [ALGORITHM, "\n", &amz_date, "\n", &scope, "\n"] {
        string_to_sign.push_str(part);
    }
    string_to_sign.push_str(&hex::encode(Sha256::digest(canonical.as_bytes())));
    // `day` comes from our own clock, formatted as yyyymmdd: always a valid date.
    let signer = signer(credentials.secret_access_key, day, region, S3_SERVICE)
        .expect("the clock's day is a valid date");
    let signature = sign_with(signer, &string_to_sign);
    let mut authorization = String::with_capacity(
        ALGORITHM.len()
            + credentials.access_key_id.len()
            + scope.len()
            + signed_headers.len()
            + 110,
    );
    for part in [
        ALGORITHM,
        " Credential=",
        credentials.access_key_id,
        "/",
        &scope,
        ", SignedHeaders=",
        &signed_headers,
        ", Signature=",
        &signature,
    ] {
        authorization.push_str(part);
    }

    let mut out = Vec::with_capacity(4);
    out.push(("x-amz-date", amz_date.clone()));
    out.push(("x-amz-content-sha256", req.payload_hash.to_string()));
    if let Some(token) = credentials.session_token {
        out.push(("x-amz-security-token", token.to_string()));
    }
    out.push(("authorization", authorization));
    out
}

/// A header value as SigV4 signs it: without leading or trailing spaces, each inner run of spaces made
/// one (spaces only, as S3 and `aws_sigv4` do; a tab is kept).
fn trim_spaces(value: &str) -> Cow<'_, str> {
    let value = value.trim_matches(' ');
    if !value.contains("  ") {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len());
    let mut last_space = false;
    for c in value.chars() {
        if c == ' ' && last_space {
            continue;
        }
        last_space = c == ' ';
        out.push(c);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::Credentials;
    use aws_sigv4::http_request::{
        PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
        UriPathNormalizationMode,
    };
    use aws_sigv4::sign::v4;
    use aws_smithy_runtime_api::client::identity::Identity;
    use std::time::{Duration, UNIX_EPOCH};

    /// The AWS SDK's signer, configured as s3p signed backend requests before this module: the oracle.
    fn aws_sigv4_sign(
        credentials: &SigningCredentials,
        region: &str,
        req: &ToSign,
        now: SystemTime,
    ) -> Vec<(String, String)> {
        let identity: Identity = Credentials::new(
            credentials.access_key_id,
            credentials.secret_access_key,
            credentials.session_token.map(str::to_string),
            None,
            "test",
        )
        .into();
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name("s3")
            .time(now)
            .settings(settings)
            .build()
            .unwrap()
            .into();
        let all_headers = std::iter::once(("host", req.host)).chain(req.headers.iter().copied());
        let body = match req.payload_hash {
            "UNSIGNED-PAYLOAD" => SignableBody::UnsignedPayload,
            hash => SignableBody::Precomputed(hash.to_string()),
        };
        let signable =
            SignableRequest::new(req.method, req.path_and_query, all_headers, body).unwrap();
        let (instructions, _) = aws_sigv4::http_request::sign(signable, &params)
            .unwrap()
            .into_parts();
        let (headers, _) = instructions.into_parts();
        let mut out: Vec<(String, String)> = headers
            .into_iter()
            .map(|h| (h.name().to_string(), h.value().to_string()))
            .collect();
        out.sort();
        out
    }

    fn ours(
        credentials: &SigningCredentials,
        region: &str,
        req: &ToSign,
        now: SystemTime,
    ) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = sign(credentials, region, req, now)
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect();
        out.sort();
        out
    }

    /// Method, path and query, headers besides `host`, payload hash.
    type Case = (
        &'static str,
        &'static str,
        &'static [(&'static str, &'static str)],
        &'static str,
    );

    const HASH: &str = "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072";

    #[test]
    fn same_headers_as_aws_sigv4() {
        // The shapes s3p sends: object reads and writes, s3p's own listing and batch calls, multipart
        // steps, user metadata, repeated and oddly spaced values, keys that needed encoding.
        let cases: &[Case] = &[
            ("GET", "/bucket/data/small.bin", &[], "UNSIGNED-PAYLOAD"),
            ("HEAD", "/bucket/a%20b/%E2%82%AC%2Fx", &[], "UNSIGNED-PAYLOAD"),
            ("GET", "/bucket/k", &[("range", "bytes=0-99"), ("if-none-match", "\"abc\"")], "UNSIGNED-PAYLOAD"),
            ("GET", "/bucket/k?response-content-type=text%2Fplain&partNumber=2", &[], "UNSIGNED-PAYLOAD"),
            ("GET", "/bucket?continuation-token=a%2Bb%3D&encoding-type=url&list-type=2&max-keys=1000&prefix=p%2F", &[], "UNSIGNED-PAYLOAD"),
            ("GET", "/bucket?list-type=2&prefix=a+b", &[], "UNSIGNED-PAYLOAD"),
            ("GET", "/bucket?uploads&prefix=x", &[], "UNSIGNED-PAYLOAD"),
            ("GET", "/", &[], "UNSIGNED-PAYLOAD"),
            ("PUT", "/bucket/k", &[("content-type", "text/plain"), ("content-length", "11"), ("x-amz-meta-owner", "  two  spaces  here ")], HASH),
            ("PUT", "/bucket/k?partNumber=3&uploadId=abc%2Fdef", &[("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg==")], "UNSIGNED-PAYLOAD"),
            ("PUT", "/bucket/k", &[("x-amz-copy-source", "/bucket/src%20key"), ("x-amz-metadata-directive", "COPY")], "UNSIGNED-PAYLOAD"),
            ("PUT", "/bucket/k", &[("content-encoding", "aws-chunked"), ("x-amz-decoded-content-length", "66560"), ("x-amz-trailer", "x-amz-checksum-crc32")], "STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
            ("POST", "/bucket?delete", &[("content-md5", "abc=="), ("content-type", "application/xml")], HASH),
            ("POST", "/bucket/k?uploads", &[], "UNSIGNED-PAYLOAD"),
            ("DELETE", "/bucket/k?uploadId=u", &[], "UNSIGNED-PAYLOAD"),
            ("GET", "/bucket/k", &[("x-amz-meta-a", "1"), ("x-amz-meta-a", "2"), ("accept", "*/*")], "UNSIGNED-PAYLOAD"),
            ("GET", "/bucket/k", &[("x-amz-meta-tab", "a\tb"), ("user-agent", "never signed")], "UNSIGNED-PAYLOAD"),
        ];
        let static_key = SigningCredentials {
            access_key_id: "GK0123456789abcdef01234567",
            secret_access_key: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            session_token: None,
        };
        let temporary = SigningCredentials {
            access_key_id: "ASIAEXAMPLE",
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            session_token: Some("FwoGZXIvYXdzEXAMPLEtoken+/="),
        };
        let times = [
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            // Just before and after midnight: the scope's day and the key change.
            UNIX_EPOCH + Duration::from_secs(1_700_006_399),
            UNIX_EPOCH + Duration::from_secs(1_700_006_400),
        ];
        let mut checked = 0;
        for (method, path_and_query, headers, payload_hash) in cases {
            for credentials in [&static_key, &temporary] {
                for region in ["us-east-1", "garage"] {
                    for now in times {
                        let req = ToSign {
                            method,
                            host: "127.0.0.1:3900",
                            path_and_query,
                            headers,
                            payload_hash,
                        };
                        assert_eq!(
                            ours(credentials, region, &req, now),
                            aws_sigv4_sign(credentials, region, &req, now),
                            "{method} {path_and_query} {headers:?} in {region}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, cases.len() * 12);
    }

    #[test]
    fn spaces_trimmed_and_collapsed_tabs_kept() {
        assert_eq!(trim_spaces("  a  b   c "), "a b c");
        assert_eq!(trim_spaces("a b"), "a b");
        assert_eq!(trim_spaces("a\t\tb"), "a\t\tb");
        assert_eq!(trim_spaces("   "), "");
        assert_eq!(trim_spaces(""), "");
    }
}
