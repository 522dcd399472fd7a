//! AWS Signature Version 2 for S3 (HMAC-SHA1, base64): the `Authorization: AWS AKID:signature`
//! header form and the query form (`AWSAccessKeyId`, `Expires`, `Signature`), which boto3's and aws
//! CLI v1's presigned URLs still use by default. Pure: no I/O, the clock is a parameter.
//!
//! String to sign:
//! ```text
//! METHOD\nContent-MD5\nContent-Type\nDate-or-Expires\n
//! <x-amz-* headers, one "name:value\n" each><resource>
//! ```
//! The resource is the path as the client sent it (still percent-encoded; for virtual-host style
//! the caller prepends `/bucket`), plus the S3 sub-resources found in the query. The rules follow
//! the S3 SigV2 documentation and botocore's `HmacV1Auth`, the most used signer.
//!
//! Behind a path prefix (`http://host/s3p`), botocore signs SigV2 over `/bucket/key` **without**
//! the prefix (its `auth_path` ignores the endpoint's path), unlike SigV4 where it signs the path
//! it sends. So the caller passes `resource_path` with the prefix removed. A bucket-only resource
//! (`/bucket`) is accepted signed as `/bucket/` (botocore) or `/bucket` (the documentation's
//! literal reading).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::wire::{decode_form, decode_percent, RawQuery};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::{Choice, ConstantTimeEq};

use super::sigv4::{check_skew, format_iso8601, spaced_hex};
use super::{RequestView, SecretLookup};
use crate::error::{S3Error, S3ErrorCode};

/// Query parameters that are part of the signed resource. The S3 documentation's list plus those
/// that botocore's `HmacV1Auth` also signs (accelerate, analytics, ...): a client signs them when
/// it sends them, so leaving them out here would only reject such clients.
pub const SUBRESOURCES: &[&str] = &[
    "accelerate",
    "acl",
    "analytics",
    "cors",
    "defaultObjectAcl",
    "delete",
    "inventory",
    "lifecycle",
    "location",
    "logging",
    "metrics",
    "notification",
    "object-lock",
    "partNumber",
    "policy",
    "replication",
    "requestPayment",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
    "restore",
    "select",
    "select-type",
    "storageClass",
    "tagging",
    "torrent",
    "uploadId",
    "uploads",
    "versionId",
    "versioning",
    "versions",
    "website",
];

/// Splits the value of an `Authorization: AWS AKID:signature` header into `(AKID, signature)`.
pub fn parse_authorization(value: &str) -> Option<(&str, &str)> {
    let (access_key, signature) = value.strip_prefix("AWS ")?.trim().rsplit_once(':')?;
    (!access_key.is_empty() && !signature.is_empty()).then_some((access_key, signature))
}

/// True when the query carries SigV2 query-auth parameters (`AWSAccessKeyId` or `Signature`).
pub fn is_presigned(raw_query: &str) -> bool {
    RawQuery(raw_query)
        .pairs()
        .any(|(name, _)| name == "AWSAccessKeyId" || name == "Signature")
}

/// CanonicalizedResource: `resource_path` (empty means `/`) and, after a `?`, the sub-resources of
/// the raw query sorted by name (stable, so repeated names keep their order), `name` or
/// `name=value`. Names are decoded exactly as s3p decodes them when it acts on the query (so a
/// sub-resource spelled `response%2Dcontent-type` is signed as the `response-content-type` it will
/// become, and cannot be smuggled past the signature); values are percent-decoded, as the documentation
/// says ("you do not encode these values") and botocore does; `+` stays `+`, as in botocore's `unquote`.
pub fn canonical_resource(resource_path: &str, raw_query: &str) -> String {
    let mut out = if resource_path.is_empty() {
        "/".to_string()
    } else {
        resource_path.to_string()
    };
    let mut subresources: Vec<(String, Option<String>)> = RawQuery(raw_query)
        .pairs()
        .filter_map(|(raw_name, raw_value)| {
            let name = String::from_utf8_lossy(&decode_form(raw_name)).into_owned();
            let value = raw_value.map(|v| String::from_utf8_lossy(&decode_percent(v)).into_owned());
            SUBRESOURCES
                .contains(&name.as_str())
                .then_some((name, value))
        })
        .collect();
    subresources.sort_by(|a, b| a.0.cmp(&b.0));
    for (i, (name, value)) in subresources.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(name);
        if let Some(value) = value {
            out.push('=');
            out.push_str(value);
        }
    }
    out
}

/// The SigV2 string to sign. `date_or_expires` goes verbatim into the date line: the `Date`
/// header's value, the empty string when the request has `x-amz-date` (that header is then signed
/// among the `x-amz-*` ones), or the `Expires` parameter in query auth. See [`canonical_resource`]
/// for `resource_path`.
pub fn string_to_sign(req: &RequestView, date_or_expires: &str, resource_path: &str) -> String {
    let first = |name: &str| req.header(name).map(str::trim).unwrap_or("");
    let mut out = format!(
        "{}\n{}\n{}\n{}\n",
        req.method,
        first("content-md5"),
        first("content-type"),
        date_or_expires
    );
    // x-amz-* headers: lowercase names, sorted; the trimmed values of one name joined with `,`.
    let mut amz: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (name, value) in req.headers.iter() {
        let name = name.to_ascii_lowercase();
        if name.starts_with("x-amz-") {
            amz.entry(name).or_default().push(value.trim());
        }
    }
    for (name, values) in amz {
        out.push_str(&name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push_str(&canonical_resource(resource_path, req.raw_query));
    out
}

/// Base64 HMAC-SHA1 of the string to sign under a secret.
pub fn signature(secret: &str, string_to_sign: &str) -> String {
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any size");
    mac.update(string_to_sign.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// Verifies header auth (`Authorization: AWS access_key:signature_b64`, already split by the
/// caller) and returns the access key id. `resource_path`: see the module documentation. The
/// request time is `x-amz-date` or else `Date` (RFC 1123; the `+0000` zone that some clients write
/// is accepted too) and must be within 15 minutes of `now`.
pub fn verify_header(
    req: &RequestView,
    access_key: &str,
    signature_b64: &str,
    resource_path: &str,
    now: SystemTime,
    lookup: &dyn Fn(&str) -> SecretLookup,
) -> Result<String, S3Error> {
    // With x-amz-date, the Date line is empty and x-amz-date is signed as an x-amz-* header.
    let (date_line, sent_time) = match req.header("x-amz-date") {
        Some(amz_date) => ("", amz_date.trim()),
        None => {
            let date = req.header("date").map(str::trim).unwrap_or("");
            (date, date)
        }
    };
    let Some(request_time) = parse_date(sent_time) else {
        return Err(S3Error::with_message(
            S3ErrorCode::AccessDenied,
            "AWS authentication requires a valid Date or x-amz-date header",
        ));
    };
    let secrets = lookup(access_key).into_secrets(access_key)?;
    check_skew(sent_time, request_time, now)?;
    let candidates = signed_resources(resource_path).map(|r| string_to_sign(req, date_line, &r));
    check_signature(&secrets, access_key, candidates, signature_b64)?;
    Ok(access_key.to_string())
}

/// Verifies query auth (`AWSAccessKeyId`, `Expires` in Unix seconds, `Signature`) and returns the
/// access key id. Valid until `Expires` (inclusive); `Expires` is the date line of the string to
/// sign.
pub fn verify_query(
    req: &RequestView,
    resource_path: &str,
    now: SystemTime,
    lookup: &dyn Fn(&str) -> SecretLookup,
) -> Result<String, S3Error> {
    let (mut access_key, mut expires, mut provided) = (None, None, None);
    for (name, value) in RawQuery(req.raw_query).pairs() {
        let slot = match name {
            "AWSAccessKeyId" => &mut access_key,
            "Expires" => &mut expires,
            "Signature" => &mut provided,
            _ => continue,
        };
        // Percent-decoding only: a raw `+` in a base64 signature is a plus, never a space.
        let value = String::from_utf8_lossy(&decode_percent(value.unwrap_or(""))).into_owned();
        if slot.replace(value).is_some() {
            return Err(S3Error::with_message(
                S3ErrorCode::AuthorizationQueryParametersError,
                format!("The {name} parameter appears more than once."),
            ));
        }
    }
    let (Some(access_key), Some(expires), Some(provided)) = (access_key, expires, provided) else {
        return Err(S3Error::with_message(
            S3ErrorCode::AccessDenied,
            "Query-string authentication requires the Signature, Expires and AWSAccessKeyId \
             parameters",
        ));
    };
    let expiry = expires
        .parse::<u64>()
        .ok()
        .and_then(|secs| UNIX_EPOCH.checked_add(Duration::from_secs(secs)));
    let Some(expiry) = expiry else {
        return Err(S3Error::with_message(
            S3ErrorCode::AccessDenied,
            format!("Invalid date (should be seconds since epoch): {expires}"),
        ));
    };
    let secrets = lookup(&access_key).into_secrets(&access_key)?;
    // SigV2 itself sets no limit; s3p holds presigned URLs of both versions to SigV4's seven days, so a
    // leaked URL cannot be valid for years.
    if expiry > now + Duration::from_secs(super::sigv4::MAX_PRESIGN_EXPIRES) {
        return Err(S3Error::with_message(
            S3ErrorCode::AuthorizationQueryParametersError,
            "Expires must be at most 604800 seconds (7 days) in the future",
        ));
    }
    if now > expiry {
        return Err(
            S3Error::with_message(S3ErrorCode::AccessDenied, "Request has expired")
                .detail("Expires", format_iso8601(expiry))
                .detail("ServerTime", format_iso8601(now)),
        );
    }
    let candidates = signed_resources(resource_path).map(|r| string_to_sign(req, &expires, &r));
    check_signature(&secrets, &access_key, candidates, &provided)?;
    Ok(access_key)
}

/// An HTTP date (RFC 1123, RFC 850 or asctime), also with `+0000` in place of `GMT`.
fn parse_date(value: &str) -> Option<SystemTime> {
    let value = value.trim();
    if let Ok(time) = httpdate::parse_http_date(value) {
        return Some(time);
    }
    let gmt = format!("{} GMT", value.strip_suffix("+0000")?.trim_end());
    httpdate::parse_http_date(&gmt).ok()
}

/// Accepts if any secret (two during a rotation) produces the provided signature; constant-time,
/// all secrets tried. The error shows what AWS shows, never a secret.
fn check_signature(
    secrets: &[String],
    access_key: &str,
    strings_to_sign: impl IntoIterator<Item = String>,
    provided: &str,
) -> Result<(), S3Error> {
    let mut matched = Choice::from(0);
    let mut first = None;
    for string_to_sign in strings_to_sign {
        for secret in secrets {
            matched |= signature(secret, &string_to_sign)
                .as_bytes()
                .ct_eq(provided.as_bytes());
        }
        first.get_or_insert(string_to_sign);
    }
    if bool::from(matched) {
        return Ok(());
    }
    let string_to_sign = first.unwrap_or_default();
    let bytes = spaced_hex(string_to_sign.as_bytes());
    Err(S3Error::new(S3ErrorCode::SignatureDoesNotMatch)
        .detail("AWSAccessKeyId", access_key)
        .detail("StringToSign", string_to_sign)
        .detail("SignatureProvided", provided)
        .detail("StringToSignBytes", bytes))
}

/// The resource paths a client may have signed for `resource_path`. A bucket-only path (`/bucket`)
/// is signed as `/bucket/` by botocore (its handlers say the server requires that) and as `/bucket`
/// by a signer that follows the documentation literally: both name the same resource, so both are
/// accepted, `/bucket/` first (the one shown in errors).
fn signed_resources(resource_path: &str) -> impl Iterator<Item = String> {
    let path = if resource_path.is_empty() {
        "/"
    } else {
        resource_path
    };
    let bucket_only = path.len() > 1 && path.starts_with('/') && !path[1..].contains('/');
    let with_slash = bucket_only.then(|| format!("{path}/"));
    with_slash
        .into_iter()
        .chain(std::iter::once(path.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Headers;

    /// Signature computed here, independently of [`string_to_sign`], from a hand-written string to
    /// sign.
    fn hmac_sha1_b64(secret: &str, string_to_sign: &str) -> String {
        let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(string_to_sign.as_bytes());
        BASE64.encode(mac.finalize().into_bytes())
    }

    fn headers(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
            .collect()
    }

    /// The examples of the S3 SigV2 documentation ("Signing and authenticating REST requests"),
    /// with its example secret. Each expected signature is the documented one.
    #[test]
    fn aws_documentation_examples() {
        const DOC_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        struct Doc {
            method: &'static str,
            headers: &'static [(&'static str, &'static str)],
            resource: &'static str,
            query: &'static str,
            date_line: &'static str,
            string_to_sign: &'static str,
            signature: &'static str,
        }
        let docs = [
            Doc {
                method: "GET",
                headers: &[
                    ("Host", "awsexamplebucket1.us-west-1.s3.amazonaws.com"),
                    ("Date", "Tue, 27 Mar 2007 19:36:42 +0000"),
                ],
                resource: "/awsexamplebucket1/photos/puppy.jpg",
                query: "",
                date_line: "Tue, 27 Mar 2007 19:36:42 +0000",
                string_to_sign: "GET\n\n\nTue, 27 Mar 2007 19:36:42 +0000\n\
                    /awsexamplebucket1/photos/puppy.jpg",
                signature: "qgk2+6Sv9/oM7G3qLEjTH1a1l1g=",
            },
            Doc {
                method: "GET",
                headers: &[
                    ("Host", "johnsmith.s3.amazonaws.com"),
                    ("Date", "Tue, 27 Mar 2007 19:36:42 +0000"),
                ],
                resource: "/johnsmith/photos/puppy.jpg",
                query: "",
                date_line: "Tue, 27 Mar 2007 19:36:42 +0000",
                string_to_sign: "GET\n\n\nTue, 27 Mar 2007 19:36:42 +0000\n\
                    /johnsmith/photos/puppy.jpg",
                signature: "bWq2s1WEIj+Ydj0vQ697zp+IXMU=",
            },
            Doc {
                method: "PUT",
                headers: &[
                    ("Content-Type", "image/jpeg"),
                    ("Content-Length", "94328"),
                    ("Host", "johnsmith.s3.amazonaws.com"),
                    ("Date", "Tue, 27 Mar 2007 21:15:45 +0000"),
                ],
                resource: "/johnsmith/photos/puppy.jpg",
                query: "",
                date_line: "Tue, 27 Mar 2007 21:15:45 +0000",
                string_to_sign: "PUT\n\nimage/jpeg\nTue, 27 Mar 2007 21:15:45 +0000\n\
                    /johnsmith/photos/puppy.jpg",
                signature: "MyyxeRY7whkBe+bq8fHCL/2kKUg=",
            },
            Doc {
                method: "GET",
                headers: &[
                    ("Host", "johnsmith.s3.amazonaws.com"),
                    ("Date", "Tue, 27 Mar 2007 19:42:41 +0000"),
                ],
                resource: "/johnsmith/",
                query: "prefix=photos&max-keys=50&marker=puppy",
                date_line: "Tue, 27 Mar 2007 19:42:41 +0000",
                string_to_sign: "GET\n\n\nTue, 27 Mar 2007 19:42:41 +0000\n/johnsmith/",
                signature: "htDYFYduRNen8P9ZfE/s9SuKy0U=",
            },
            Doc {
                method: "GET",
                headers: &[
                    ("Host", "johnsmith.s3.amazonaws.com"),
                    ("Date", "Tue, 27 Mar 2007 19:44:46 +0000"),
                ],
                resource: "/johnsmith/",
                query: "acl",
                date_line: "Tue, 27 Mar 2007 19:44:46 +0000",
                string_to_sign: "GET\n\n\nTue, 27 Mar 2007 19:44:46 +0000\n/johnsmith/?acl",
                signature: "c2WLPFtWHVgbEmeEG93a4cG37dM=",
            },
            Doc {
                method: "GET",
                headers: &[
                    ("Host", "s3.us-west-1.amazonaws.com"),
                    ("Date", "Wed, 28 Mar 2007 01:29:59 +0000"),
                ],
                resource: "/",
                query: "",
                date_line: "Wed, 28 Mar 2007 01:29:59 +0000",
                string_to_sign: "GET\n\n\nWed, 28 Mar 2007 01:29:59 +0000\n/",
                signature: "qGdzdERIC03wnaRNKh6OqZehG9s=",
            },
            Doc {
                method: "GET",
                headers: &[
                    ("Host", "s3.us-west-1.amazonaws.com"),
                    ("Date", "Wed, 28 Mar 2007 01:49:49 +0000"),
                ],
                resource: "/dictionary/fran%C3%A7ais/pr%c3%a9f%c3%a8re",
                query: "",
                date_line: "Wed, 28 Mar 2007 01:49:49 +0000",
                string_to_sign: "GET\n\n\nWed, 28 Mar 2007 01:49:49 +0000\n\
                    /dictionary/fran%C3%A7ais/pr%c3%a9f%c3%a8re",
                signature: "DNEZGsoieTZ92F3bUfSPQcbGmlM=",
            },
        ];
        for doc in &docs {
            let h = headers(doc.headers);
            let view = RequestView {
                method: doc.method,
                raw_path: doc.resource,
                raw_query: doc.query,
                headers: Headers::Pairs(&h),
            };
            let sts = string_to_sign(&view, doc.date_line, doc.resource);
            assert_eq!(sts, doc.string_to_sign);
            assert_eq!(
                signature(DOC_SECRET, &sts),
                doc.signature,
                "{}",
                doc.string_to_sign
            );
        }
    }

    use crate::auth::test_keys::*;
    /// t0 as an HTTP date.
    const DATE: &str = "Wed, 01 May 2024 12:00:00 GMT";

    struct StsCase {
        name: &'static str,
        method: &'static str,
        path: &'static str,
        query: &'static str,
        headers: &'static [(&'static str, &'static str)],
        /// What the caller passes as the resource (the raw path, or `/bucket` + path for virtual
        /// host).
        resource: &'static str,
        /// The string to sign, written out by hand.
        expected: &'static str,
    }

    #[test]
    fn header_auth_string_to_sign_table() {
        let cases = [
            StsCase {
                name: "plain GET under /s3p",
                method: "GET",
                path: "/s3p/immuta/ds/file.csv",
                query: "",
                headers: &[("Host", "127.0.0.1:8080"), ("Date", DATE)],
                resource: "/s3p/immuta/ds/file.csv",
                expected: "GET\n\n\nWed, 01 May 2024 12:00:00 GMT\n/s3p/immuta/ds/file.csv",
            },
            StsCase {
                name: "awkward key: the resource is the path as sent",
                method: "GET",
                path: "/s3p/immuta/ds/a%20b%2Bc%3Dd%25e%C3%A9%28x%29",
                query: "",
                headers: &[("Date", DATE)],
                resource: "/s3p/immuta/ds/a%20b%2Bc%3Dd%25e%C3%A9%28x%29",
                expected: "GET\n\n\nWed, 01 May 2024 12:00:00 GMT\n\
                    /s3p/immuta/ds/a%20b%2Bc%3Dd%25e%C3%A9%28x%29",
            },
            StsCase {
                name: "x-amz-date empties the Date line and is signed as a header",
                method: "DELETE",
                path: "/s3p/immuta/ds/f",
                query: "",
                headers: &[
                    ("Date", "Thu, 01 Jan 1970 00:00:00 GMT"),
                    ("X-Amz-Date", DATE),
                ],
                resource: "/s3p/immuta/ds/f",
                expected: "DELETE\n\n\n\nx-amz-date:Wed, 01 May 2024 12:00:00 GMT\n\
                    /s3p/immuta/ds/f",
            },
            StsCase {
                name: "Content-MD5, Content-Type, x-amz-* sorted, trimmed, repeated ones joined",
                method: "PUT",
                path: "/s3p/immuta/ds/f",
                query: "",
                headers: &[
                    ("Content-Type", " text/plain "),
                    ("Content-MD5", "XrY7u+Ae7tCTyyK7j1rNww=="),
                    ("X-Amz-Meta-B", "  two  words "),
                    ("x-amz-meta-a", "1"),
                    ("X-AMZ-META-A", "2"),
                    ("Date", DATE),
                    ("x-amzn-trace-id", "not an x-amz- header"),
                ],
                resource: "/s3p/immuta/ds/f",
                expected: "PUT\nXrY7u+Ae7tCTyyK7j1rNww==\ntext/plain\n\
                           Wed, 01 May 2024 12:00:00 GMT\n\
                           x-amz-meta-a:1,2\nx-amz-meta-b:two  words\n/s3p/immuta/ds/f",
            },
            StsCase {
                name: "sub-resources: only those, sorted, values decoded",
                method: "GET",
                path: "/s3p/immuta/ds/f",
                query: "versionId=3%2F4&list-type=2&acl\
                        &response-content-disposition=attachment%3B%20filename%3D%22a.csv%22\
                        &uploadId=xyz&partNumber=2&prefix=a&response-content-type=text%2Fplain",
                headers: &[("Date", DATE)],
                resource: "/s3p/immuta/ds/f",
                expected:
                    "GET\n\n\nWed, 01 May 2024 12:00:00 GMT\n/s3p/immuta/ds/f?acl&partNumber=2\
                           &response-content-disposition=attachment; filename=\"a.csv\"\
                           &response-content-type=text/plain&uploadId=xyz&versionId=3/4",
            },
            StsCase {
                name: "uploads without a value",
                method: "POST",
                path: "/s3p/immuta/ds/big.bin",
                query: "uploads",
                headers: &[("Date", DATE), ("Content-Type", "application/octet-stream")],
                resource: "/s3p/immuta/ds/big.bin",
                expected: "POST\n\napplication/octet-stream\nWed, 01 May 2024 12:00:00 GMT\n\
                    /s3p/immuta/ds/big.bin?uploads",
            },
            StsCase {
                name: "listing: prefix and delimiter are not sub-resources",
                method: "GET",
                path: "/s3p/immuta/",
                query: "prefix=ds%2F&delimiter=%2F&encoding-type=url",
                headers: &[("Date", DATE)],
                resource: "/s3p/immuta/",
                expected: "GET\n\n\nWed, 01 May 2024 12:00:00 GMT\n/s3p/immuta/",
            },
            StsCase {
                name: "virtual host: the caller passes /bucket + path",
                method: "GET",
                path: "/ds/file.csv",
                query: "",
                headers: &[
                    ("Host", "immuta.s3p.example"),
                    ("Date", "Wed, 01 May 2024 12:00:00 +0000"),
                ],
                resource: "/immuta/ds/file.csv",
                expected: "GET\n\n\nWed, 01 May 2024 12:00:00 +0000\n/immuta/ds/file.csv",
            },
        ];
        for case in &cases {
            let h = headers(case.headers);
            let view = RequestView {
                method: case.method,
                raw_path: case.path,
                raw_query: case.query,
                headers: Headers::Pairs(&h),
            };
            let date_line = if view.header("x-amz-date").is_some() {
                ""
            } else {
                view.header("date").unwrap().trim()
            };
            assert_eq!(
                string_to_sign(&view, date_line, case.resource),
                case.expected,
                "{}",
                case.name
            );
            let sig = hmac_sha1_b64(SECRET, case.expected);
            assert_eq!(
                verify_header(&view, AKID, &sig, case.resource, t0(), &lookup),
                Ok(AKID.to_string()),
                "{}",
                case.name
            );
        }
    }

    fn no_secret_shown(e: &S3Error) {
        let shown = format!("{} {:?}", e.message, e.extra);
        for secret in [SECRET, OLD_SECRET, NEW_SECRET] {
            assert!(!shown.contains(secret), "a secret leaked: {shown}");
        }
    }

    #[test]
    fn header_auth_verification() {
        let path = "/s3p/immuta/ds/f";
        let sts = format!("GET\n\n\n{DATE}\n{path}");
        let h = headers(&[("Host", "127.0.0.1:8080"), ("Date", DATE)]);
        let view = RequestView {
            method: "GET",
            raw_path: path,
            raw_query: "",
            headers: Headers::Pairs(&h),
        };
        let verify = |akid: &str, sig: &str, now: SystemTime| {
            verify_header(&view, akid, sig, path, now, &lookup)
        };
        let good = hmac_sha1_b64(SECRET, &sts);

        assert_eq!(verify(AKID, &good, t0()), Ok(AKID.to_string()));
        assert_eq!(verify(AKID, &good, at(14 * 60)), Ok(AKID.to_string()));
        assert_eq!(verify(AKID, &good, at(-14 * 60)), Ok(AKID.to_string()));
        assert_eq!(
            verify(ROTATING, &hmac_sha1_b64(OLD_SECRET, &sts), t0()),
            Ok(ROTATING.to_string())
        );
        assert_eq!(
            verify(ROTATING, &hmac_sha1_b64(NEW_SECRET, &sts), t0()),
            Ok(ROTATING.to_string())
        );

        let e = verify(AKID, &hmac_sha1_b64(NEW_SECRET, &sts), t0()).unwrap_err();
        assert_eq!(e.code, S3ErrorCode::SignatureDoesNotMatch);
        assert_eq!(e.extra[0], ("AWSAccessKeyId", AKID.to_string()));
        assert_eq!(e.extra[1], ("StringToSign", sts.clone()));
        assert_eq!(
            e.extra[2],
            ("SignatureProvided", hmac_sha1_b64(NEW_SECRET, &sts))
        );
        assert_eq!(e.extra[3].0, "StringToSignBytes");
        assert!(
            e.extra[3].1.starts_with("47 45 54 0a 0a 0a 57 65 64"),
            "{}",
            e.extra[3].1
        );
        no_secret_shown(&e);

        let tampered = format!("{}A=", &good[..good.len() - 2]);
        assert_eq!(
            verify(AKID, &tampered, t0()).unwrap_err().code,
            S3ErrorCode::SignatureDoesNotMatch
        );
        let e = verify(NO_SECRET, &good, t0()).unwrap_err();
        assert_eq!(e.code, S3ErrorCode::SignatureDoesNotMatch);
        let e = verify("AKIDNOBODY", &good, t0()).unwrap_err();
        assert_eq!(
            (e.code, e.extra.clone()),
            (
                S3ErrorCode::InvalidAccessKeyId,
                vec![("AWSAccessKeyId", "AKIDNOBODY".to_string())]
            )
        );
        for now in [at(16 * 60), at(-16 * 60)] {
            let e = verify(AKID, &good, now).unwrap_err();
            assert_eq!(e.code, S3ErrorCode::RequestTimeTooSkewed);
            assert!(e.extra.contains(&("RequestTime", DATE.to_string())));
        }
        // Verified without /s3p, a request signed with it fails (see clients.md for clients doing
        // that).
        let e = verify_header(&view, AKID, &good, "/immuta/ds/f", t0(), &lookup).unwrap_err();
        assert_eq!(e.code, S3ErrorCode::SignatureDoesNotMatch);

        // Bucket-only resources: `/bucket/` (botocore) and `/bucket` (documentation) both verify.
        let h = headers(&[("Date", DATE)]);
        let bucket = RequestView {
            method: "GET",
            raw_path: "/immuta",
            raw_query: "list-type=2",
            headers: Headers::Pairs(&h),
        };
        for signed in ["/immuta/", "/immuta"] {
            let sig = hmac_sha1_b64(SECRET, &format!("GET\n\n\n{DATE}\n{signed}"));
            let result = verify_header(&bucket, AKID, &sig, "/immuta", t0(), &lookup);
            assert_eq!(result, Ok(AKID.to_string()), "{signed}");
        }
        let e = verify_header(&bucket, AKID, "bad", "/immuta", t0(), &lookup).unwrap_err();
        assert!(e
            .extra
            .contains(&("StringToSign", format!("GET\n\n\n{DATE}\n/immuta/"))));
        let root = RequestView {
            method: "GET",
            raw_path: "/",
            raw_query: "",
            headers: Headers::Pairs(&h),
        };
        let sig = hmac_sha1_b64(SECRET, &format!("GET\n\n\n{DATE}\n/"));
        assert_eq!(
            verify_header(&root, AKID, &sig, "", t0(), &lookup),
            Ok(AKID.to_string())
        );

        for bad_dates in [
            vec![],
            vec![("Date", "yesterday")],
            vec![("Date", DATE), ("x-amz-date", "nope")],
        ] {
            let h = headers(&bad_dates);
            let view = RequestView {
                method: "GET",
                raw_path: path,
                raw_query: "",
                headers: Headers::Pairs(&h),
            };
            let e = verify_header(&view, AKID, &good, path, t0(), &lookup).unwrap_err();
            assert_eq!(e.code, S3ErrorCode::AccessDenied);
            assert_eq!(
                e.message,
                "AWS authentication requires a valid Date or x-amz-date header"
            );
        }
        assert_eq!(
            parse_authorization("AWS AKID:abc+/="),
            Some(("AKID", "abc+/="))
        );
        assert_eq!(parse_authorization("AWS AKID"), None);
        assert_eq!(parse_authorization("AWS4-HMAC-SHA256 Credential=x"), None);
    }

    #[test]
    fn query_auth() {
        let path = "/s3p/immuta/ds/a%20b.csv";
        // t0 + 1 hour
        let expires = "1714568400";
        // `extra_query` is sent before the auth parameters; `signed` is how its sub-resources are
        // signed.
        let sign_url_with = |secret: &str, extra_query: &str, signed: &str, akid: &str| {
            let sts = format!("GET\n\n\n{expires}\n{path}{signed}");
            let sig = hmac_sha1_b64(secret, &sts);
            let sig =
                percent_encoding::utf8_percent_encode(&sig, percent_encoding::NON_ALPHANUMERIC)
                    .to_string();
            let sep = if extra_query.is_empty() { "" } else { "&" };
            format!("{extra_query}{sep}AWSAccessKeyId={akid}&Expires={expires}&Signature={sig}")
        };
        let sign_url = |secret: &str, akid: &str| sign_url_with(secret, "", "", akid);
        let h = headers(&[("Host", "127.0.0.1:8080")]);
        let check = |query: &str, now: SystemTime| {
            let view = RequestView {
                method: "GET",
                raw_path: path,
                raw_query: query,
                headers: Headers::Pairs(&h),
            };
            verify_query(&view, path, now, &lookup)
        };
        let ok = Ok(AKID.to_string());
        assert_eq!(check(&sign_url(SECRET, AKID), t0()), ok);
        assert_eq!(
            check(&sign_url(SECRET, AKID), at(3600)),
            ok,
            "valid until Expires inclusive"
        );
        let with_override = sign_url_with(
            SECRET,
            "response-content-type=text%2Fcsv",
            "?response-content-type=text/csv",
            AKID,
        );
        assert_eq!(check(&with_override, t0()), ok);
        assert_eq!(
            check(&sign_url(NEW_SECRET, ROTATING), t0()),
            Ok(ROTATING.to_string())
        );
        assert!(is_presigned(&sign_url(SECRET, AKID)) && !is_presigned("prefix=a"));

        // A raw `+` in the signature (a client that did not encode it) is a plus.
        let sts = format!("GET\n\n\n{expires}\n{path}");
        let mut secret_with_plus = None;
        for i in 0..200 {
            let secret = format!("secret{i}");
            if hmac_sha1_b64(&secret, &sts).contains('+') {
                secret_with_plus = Some(secret);
                break;
            }
        }
        let secret = secret_with_plus.unwrap();
        let raw = format!(
            "AWSAccessKeyId=PLUS&Expires={expires}&Signature={}",
            hmac_sha1_b64(&secret, &sts)
        );
        let view = RequestView {
            method: "GET",
            raw_path: path,
            raw_query: &raw,
            headers: Headers::Pairs(&h),
        };
        let plus_lookup = |_: &str| SecretLookup::Secrets(vec![secret.clone()]);
        assert_eq!(
            verify_query(&view, path, t0(), &plus_lookup),
            Ok("PLUS".to_string())
        );

        let e = check(&sign_url(SECRET, AKID), at(3601)).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (S3ErrorCode::AccessDenied, "Request has expired")
        );
        assert!(
            e.extra
                .contains(&("Expires", "2024-05-01T13:00:00Z".to_string())),
            "{:?}",
            e.extra
        );
        let e = check(&sign_url(OLD_SECRET, AKID), t0()).unwrap_err();
        assert_eq!(e.code, S3ErrorCode::SignatureDoesNotMatch);
        assert!(e.extra.contains(&("StringToSign", sts.clone())));
        no_secret_shown(&e);
        let e = check(&sign_url(SECRET, "AKIDNOBODY"), t0()).unwrap_err();
        assert_eq!(e.code, S3ErrorCode::InvalidAccessKeyId);
        let tampered = sign_url(SECRET, AKID).replace("Expires=1714568400", "Expires=1714572000");
        assert_eq!(
            check(&tampered, t0()).unwrap_err().code,
            S3ErrorCode::SignatureDoesNotMatch
        );
        let added = format!("versionId=7&{}", sign_url(SECRET, AKID));
        assert_eq!(
            check(&added, t0()).unwrap_err().code,
            S3ErrorCode::SignatureDoesNotMatch
        );
        let e = check(&format!("AWSAccessKeyId={AKID}&Signature=x"), t0()).unwrap_err();
        assert_eq!(e.code, S3ErrorCode::AccessDenied);
        let e = check(
            &format!("AWSAccessKeyId={AKID}&Expires=soon&Signature=x"),
            t0(),
        )
        .unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                S3ErrorCode::AccessDenied,
                "Invalid date (should be seconds since epoch): soon"
            )
        );
        let e = check(&format!("{}&Expires=1", sign_url(SECRET, AKID)), t0()).unwrap_err();
        assert_eq!(e.code, S3ErrorCode::AuthorizationQueryParametersError);
    }
}
