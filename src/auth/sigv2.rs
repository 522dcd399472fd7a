//! AWS Signature Version 2 for S3 (HMAC-SHA1, base64): the `Authorization: AWS AKID:signature` header
//! form and the query form (`AWSAccessKeyId`, `Expires`, `Signature`), which boto3's and aws CLI v1's
//! presigned URLs still use by default. Pure: no I/O, the clock is a parameter.
//!
//! String to sign:
//! ```text
//! METHOD\nContent-MD5\nContent-Type\nDate-or-Expires\n<x-amz-* headers, one "name:value\n" each><resource>
//! ```
//! The resource is the path as the client sent it (still percent-encoded; for virtual-host style the
//! caller prepends `/bucket`), plus the S3 sub-resources found in the query. The rules follow the S3
//! SigV2 documentation and botocore's `HmacV1Auth`, the most used signer.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use percent_encoding::percent_decode_str;
use sha1::Sha1;
use subtle::{Choice, ConstantTimeEq};

use super::sigv4::{format_iso8601, spaced_hex, MAX_SKEW};
use super::{RequestView, SecretLookup};
use crate::error::{S3Error, S3ErrorCode};

/// Query parameters that are part of the signed resource. The S3 documentation's list plus those that
/// botocore's `HmacV1Auth` also signs (accelerate, analytics, ...): a client signs them when it sends
/// them, so leaving them out here would only reject such clients.
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
    raw_query.split('&').any(|piece| {
        let name = piece.split_once('=').map_or(piece, |(name, _)| name);
        name == "AWSAccessKeyId" || name == "Signature"
    })
}

/// CanonicalizedResource: `resource_path` (empty means `/`) and, after a `?`, the sub-resources of the raw
/// query sorted by name (stable, so repeated names keep their order), `name` or `name=value`. Names are
/// compared as sent; values are percent-decoded, as the documentation says ("you do not encode these
/// values") and botocore does; `+` stays `+`, as in botocore's `unquote`.
pub fn canonical_resource(resource_path: &str, raw_query: &str) -> String {
    let mut out = if resource_path.is_empty() {
        "/".to_string()
    } else {
        resource_path.to_string()
    };
    let mut subresources: Vec<(&str, Option<String>)> = raw_query
        .split('&')
        .filter_map(|piece| {
            let (name, value) = match piece.split_once('=') {
                Some((name, value)) => (
                    name,
                    Some(percent_decode_str(value).decode_utf8_lossy().into_owned()),
                ),
                None => (piece, None),
            };
            SUBRESOURCES.contains(&name).then_some((name, value))
        })
        .collect();
    subresources.sort_by(|a, b| a.0.cmp(b.0));
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

/// The SigV2 string to sign. `date_or_expires` goes verbatim into the date line: the `Date` header's value,
/// the empty string when the request has `x-amz-date` (that header is then signed among the `x-amz-*`
/// ones), or the `Expires` parameter in query auth. See [`canonical_resource`] for `resource_path`.
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
    for (name, value) in req.headers {
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

/// Verifies header auth (`Authorization: AWS access_key:signature_b64`, already split by the caller) and
/// returns the access key id. The request time is `x-amz-date` or else `Date` (RFC 1123; the `+0000` zone
/// that some clients write is accepted too) and must be within 15 minutes of `now`.
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
    let secrets = secrets_for(access_key, lookup)?;
    let skew = match now.duration_since(request_time) {
        Ok(behind) => behind,
        Err(ahead) => ahead.duration(),
    };
    if skew > MAX_SKEW {
        return Err(S3Error::new(S3ErrorCode::RequestTimeTooSkewed)
            .detail("RequestTime", sent_time)
            .detail("ServerTime", format_iso8601(now))
            .detail(
                "MaxAllowedSkewMilliseconds",
                MAX_SKEW.as_millis().to_string(),
            ));
    }
    let sts = string_to_sign(req, date_line, resource_path);
    check_signature(&secrets, access_key, &sts, signature_b64)?;
    Ok(access_key.to_string())
}

/// Verifies query auth (`AWSAccessKeyId`, `Expires` in Unix seconds, `Signature`) and returns the access
/// key id. Valid until `Expires` (inclusive); `Expires` is the date line of the string to sign.
pub fn verify_query(
    req: &RequestView,
    resource_path: &str,
    now: SystemTime,
    lookup: &dyn Fn(&str) -> SecretLookup,
) -> Result<String, S3Error> {
    let (mut access_key, mut expires, mut provided) = (None, None, None);
    for piece in req.raw_query.split('&') {
        let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
        let slot = match name {
            "AWSAccessKeyId" => &mut access_key,
            "Expires" => &mut expires,
            "Signature" => &mut provided,
            _ => continue,
        };
        // Percent-decoding only: a raw `+` in a base64 signature is a plus, never a space.
        let value = percent_decode_str(value).decode_utf8_lossy().into_owned();
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
            "Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters",
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
    let secrets = secrets_for(&access_key, lookup)?;
    if now > expiry {
        return Err(
            S3Error::with_message(S3ErrorCode::AccessDenied, "Request has expired")
                .detail("Expires", format_iso8601(expiry))
                .detail("ServerTime", format_iso8601(now)),
        );
    }
    let sts = string_to_sign(req, &expires, resource_path);
    check_signature(&secrets, &access_key, &sts, &provided)?;
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

fn secrets_for(
    access_key: &str,
    lookup: &dyn Fn(&str) -> SecretLookup,
) -> Result<Vec<String>, S3Error> {
    match lookup(access_key) {
        SecretLookup::Unknown => {
            Err(S3Error::new(S3ErrorCode::InvalidAccessKeyId).detail("AWSAccessKeyId", access_key))
        }
        SecretLookup::Secrets(secrets) => Ok(secrets),
    }
}

/// Accepts if any secret (two during a rotation) produces the provided signature; constant-time, all
/// secrets tried. The error shows what AWS shows, never a secret.
fn check_signature(
    secrets: &[String],
    access_key: &str,
    string_to_sign: &str,
    provided: &str,
) -> Result<(), S3Error> {
    let mut matched = Choice::from(0);
    for secret in secrets {
        matched |= signature(secret, string_to_sign)
            .as_bytes()
            .ct_eq(provided.as_bytes());
    }
    if bool::from(matched) {
        return Ok(());
    }
    Err(S3Error::new(S3ErrorCode::SignatureDoesNotMatch)
        .detail("AWSAccessKeyId", access_key)
        .detail("StringToSign", string_to_sign)
        .detail("SignatureProvided", provided)
        .detail("StringToSignBytes", spaced_hex(string_to_sign.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Signature computed here, independently of [`string_to_sign`], from a hand-written string to sign.
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

    /// The examples of the S3 SigV2 documentation ("Signing and authenticating REST requests"), with
    /// its example secret. Each expected signature is the documented one.
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
                headers: &[("Host", "awsexamplebucket1.us-west-1.s3.amazonaws.com"), ("Date", "Tue, 27 Mar 2007 19:36:42 +0000")],
                resource: "/awsexamplebucket1/photos/puppy.jpg",
                query: "",
                date_line: "Tue, 27 Mar 2007 19:36:42 +0000",
                string_to_sign: "GET\n\n\nTue, 27 Mar 2007 19:36:42 +0000\n/awsexamplebucket1/photos/puppy.jpg",
                signature: "qgk2+6Sv9/oM7G3qLEjTH1a1l1g=",
            },
            Doc {
                method: "GET",
                headers: &[("Host", "johnsmith.s3.amazonaws.com"), ("Date", "Tue, 27 Mar 2007 19:36:42 +0000")],
                resource: "/johnsmith/photos/puppy.jpg",
                query: "",
                date_line: "Tue, 27 Mar 2007 19:36:42 +0000",
                string_to_sign: "GET\n\n\nTue, 27 Mar 2007 19:36:42 +0000\n/johnsmith/photos/puppy.jpg",
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
                string_to_sign: "PUT\n\nimage/jpeg\nTue, 27 Mar 2007 21:15:45 +0000\n/johnsmith/photos/puppy.jpg",
                signature: "MyyxeRY7whkBe+bq8fHCL/2kKUg=",
            },
            Doc {
                method: "GET",
                headers: &[("Host", "johnsmith.s3.amazonaws.com"), ("Date", "Tue, 27 Mar 2007 19:42:41 +0000")],
                resource: "/johnsmith/",
                query: "prefix=photos&max-keys=50&marker=puppy",
                date_line: "Tue, 27 Mar 2007 19:42:41 +0000",
                string_to_sign: "GET\n\n\nTue, 27 Mar 2007 19:42:41 +0000\n/johnsmith/",
                signature: "htDYFYduRNen8P9ZfE/s9SuKy0U=",
            },
            Doc {
                method: "GET",
                headers: &[("Host", "johnsmith.s3.amazonaws.com"), ("Date", "Tue, 27 Mar 2007 19:44:46 +0000")],
                resource: "/johnsmith/",
                query: "acl",
                date_line: "Tue, 27 Mar 2007 19:44:46 +0000",
                string_to_sign: "GET\n\n\nTue, 27 Mar 2007 19:44:46 +0000\n/johnsmith/?acl",
                signature: "c2WLPFtWHVgbEmeEG93a4cG37dM=",
            },
            Doc {
                method: "GET",
                headers: &[("Host", "s3.us-west-1.amazonaws.com"), ("Date", "Wed, 28 Mar 2007 01:29:59 +0000")],
                resource: "/",
                query: "",
                date_line: "Wed, 28 Mar 2007 01:29:59 +0000",
                string_to_sign: "GET\n\n\nWed, 28 Mar 2007 01:29:59 +0000\n/",
                signature: "qGdzdERIC03wnaRNKh6OqZehG9s=",
            },
            Doc {
                method: "GET",
                headers: &[("Host", "s3.us-west-1.amazonaws.com"), ("Date", "Wed, 28 Mar 2007 01:49:49 +0000")],
                resource: "/dictionary/fran%C3%A7ais/pr%c3%a9f%c3%a8re",
                query: "",
                date_line: "Wed, 28 Mar 2007 01:49:49 +0000",
                string_to_sign: "GET\n\n\nWed, 28 Mar 2007 01:49:49 +0000\n/dictionary/fran%C3%A7ais/pr%c3%a9f%c3%a8re",
                signature: "DNEZGsoieTZ92F3bUfSPQcbGmlM=",
            },
        ];
        for doc in &docs {
            let h = headers(doc.headers);
            let view = RequestView {
                method: doc.method,
                raw_path: doc.resource,
                raw_query: doc.query,
                headers: &h,
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
}
