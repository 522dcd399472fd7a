//! AWS Signature Version 4 verification for S3 requests: the `Authorization: AWS4-HMAC-SHA256 ...`
//! header form and the presigned-URL (`X-Amz-Signature=...`) form. Pure: no I/O, the clock is a
//! parameter.
//!
//! The canonical request, the string to sign, the key derivation and the HMAC are built here by hand,
//! so that S3's rules are explicit and under our control (`aws_sigv4` is the oracle in tests). The
//! core steps ([`canonical_request`], [`string_to_sign`], [`signing_key`], [`signature`]) are
//! public and take the service as data, so the official AWS test vectors (written for a generic
//! service) can run against them; [`verify_header`] and [`verify_presigned`] add S3's rules on top.
//!
//! S3 specifics, and why:
//! - The path is never normalised (no `.`/`..` removal, no `//` merging): S3 keys are literal
//!   strings.
//! - The path is not double-encoded. Each segment of the raw path is percent-decoded and re-encoded
//!   with the RFC 3986 unreserved set: the canonical form S3 expects. botocore and the AWS SDKs
//!   send keys encoded with exactly that set and sign the path they send, so for them this is the
//!   identity; a client that sends `(` or raw UTF-8 but signs the canonical form is accepted too.
//! - The query is decoded with `+` as a space (form encoding, as S3 and aws-sigv4 read it).
//! - `x-amz-content-sha256` is mandatory in header auth and is used verbatim as the payload hash,
//!   so a body never has to be read to verify a signature (the backend, or the caller, checks the
//!   body).
//!
//! A verified signature says what it covered ([`Verified`]): the payload hash, and for the header form
//! the seed of an aws-chunked body's chunk signatures ([`ChunkSeed`]), so that nothing after the
//! verifier parses the credentials or derives a key again.

use std::time::{Duration, SystemTime};

use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use super::{RequestView, SecretLookup};
use crate::error::{S3Error, S3ErrorCode};

/// The only SigV4 algorithm name (SigV4a, ECDSA, is not supported).
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The service name S3 clients put into their credential scope.
pub const S3_SERVICE: &str = "s3";
/// The last element of every credential scope.
pub const SCOPE_TERMINATOR: &str = "aws4_request";
/// Maximum difference between the client's clock and ours, as AWS allows.
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);
/// Longest validity of a presigned URL (one week), as AWS allows.
pub const MAX_PRESIGN_EXPIRES: u64 = 604_800;
/// Payload hash of a request whose body is not signed.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Non-digest values S3 accepts in `x-amz-content-sha256`.
const SPECIAL_PAYLOAD_HASHES: &[&str] = &[
    UNSIGNED_PAYLOAD,
    "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
    "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD",
    "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER",
];

/// The names of the presigned-URL parameters (case-sensitive, as AWS treats them).
pub mod param {
    pub const ALGORITHM: &str = "X-Amz-Algorithm";
    pub const CREDENTIAL: &str = "X-Amz-Credential";
    pub const DATE: &str = "X-Amz-Date";
    pub const EXPIRES: &str = "X-Amz-Expires";
    pub const SIGNED_HEADERS: &str = "X-Amz-SignedHeaders";
    pub const SIGNATURE: &str = "X-Amz-Signature";
    pub const CONTENT_SHA256: &str = "X-Amz-Content-Sha256";
}

// -------------------------------------------------------------------------------------------------
// Parsed authorization data
// -------------------------------------------------------------------------------------------------

mod canonical;
mod parse;
pub use canonical::*;
pub use parse::*;

/// What a verified signature establishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub access_key_id: String,
    /// The payload hash the canonical request carried, as the client declared it (`x-amz-content-sha256`,
    /// or a presigned URL's `X-Amz-Content-Sha256` parameter first); `None` for a presigned URL that
    /// declares none (signed as [`UNSIGNED_PAYLOAD`]).
    pub payload_hash: Option<String>,
    /// The header form dated by `x-amz-date`: where an aws-chunked body's chunk signatures start.
    pub chunk_seed: Option<ChunkSeed>,
}

/// Where the chunk signatures of an aws-chunked body start (AWS "Transferring Payload in Multiple
/// Chunks"): each chunk's string to sign names the request's date and scope and the previous signature,
/// the first time the request's own, and is signed with the signing key of the request's signature.
#[derive(Clone, PartialEq, Eq)]
pub struct ChunkSeed {
    /// The derived signing key of the one secret that verified the request (of two while rotating).
    pub signing_key: [u8; 32],
    /// The request's `x-amz-date`, trimmed.
    pub amz_date: String,
    /// The credential scope (`20130524/us-east-1/s3/aws4_request`).
    pub scope: String,
    /// The request's own signature (lowercase hex, as it matched): the chain's first link.
    pub signature: String,
}

/// Never the signing key.
impl std::fmt::Debug for ChunkSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkSeed")
            .field("signing_key", &"***")
            .field("amz_date", &self.amz_date)
            .field("scope", &self.scope)
            .field("signature", &self.signature)
            .finish()
    }
}

/// Verifies `Authorization: AWS4-HMAC-SHA256 ...` (`authorization` is that header's value) and
/// returns what the signature established. See the module documentation for the S3 rules applied.
pub fn verify_header(
    req: &RequestView,
    authorization: &str,
    now: SystemTime,
    lookup: &dyn Fn(&str) -> SecretLookup,
) -> Result<Verified, S3Error> {
    verify_header_of(req, authorization, now, lookup, &Signed::S3)
}

/// What a header signature is checked as.
pub enum Signed<'a> {
    /// An S3 request: service `s3`, the payload hash the request declares (`x-amz-content-sha256`).
    S3,
    /// A call to another service s3p answers (`sts`): its scope's service, and the SHA-256 (hex) of
    /// the body s3p read whole, which the signature must cover (such clients send no
    /// `x-amz-content-sha256`; one that does must declare this hash).
    Body { service: &'a str, sha256: &'a str },
}

/// [`verify_header`], for an S3 request or a call to another service ([`Signed`]).
pub fn verify_header_of(
    req: &RequestView,
    authorization: &str,
    now: SystemTime,
    lookup: &dyn Fn(&str) -> SecretLookup,
    signed: &Signed,
) -> Result<Verified, S3Error> {
    let auth = parse_authorization(authorization)?;
    let service = match signed {
        Signed::S3 => S3_SERVICE,
        Signed::Body { service, .. } => service,
    };
    check_scope(
        &auth.credential,
        &auth.signed_headers,
        Form::Header,
        service,
    )?;

    // The request time: x-amz-date (ISO 8601 basic) or else Date (RFC 1123), which the string to
    // sign then carries in ISO 8601 basic form.
    let dated_by_amz_date = req.header("x-amz-date").is_some();
    let (amz_date, request_time) = match req.header("x-amz-date") {
        Some(value) => (value.trim().to_string(), parse_amz_date(value.trim())),
        None => match req
            .header("date")
            .and_then(|d| httpdate::parse_http_date(d.trim()).ok())
        {
            Some(time) => (format_amz_date(time), Some(time)),
            None => (String::new(), None),
        },
    };
    let Some(request_time) = request_time else {
        return Err(S3Error::with_message(
            S3ErrorCode::AccessDenied,
            "AWS authentication requires a valid Date or x-amz-date header",
        ));
    };
    if !amz_date.starts_with(&auth.credential.date) || auth.credential.date.len() != 8 {
        return Err(
            Form::Header.malformed("Invalid credential date. Date is not the same as X-Amz-Date.")
        );
    }

    let declared = req.header("x-amz-content-sha256").map(str::trim);
    let payload_hash = match (signed, declared) {
        (Signed::S3, Some(declared)) => declared,
        (Signed::S3, None) => {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidRequest,
                "Missing required header for this request: x-amz-content-sha256",
            ))
        }
        (Signed::Body { sha256, .. }, None) => sha256,
        (Signed::Body { sha256, .. }, Some(declared)) if declared == *sha256 => sha256,
        (Signed::Body { .. }, Some(_)) => {
            return Err(S3Error::new(S3ErrorCode::XAmzContentSHA256Mismatch))
        }
    };
    check_payload_hash(payload_hash)?;
    check_amz_headers_signed(req, &auth.signed_headers)?;

    let secrets =
        lookup(&auth.credential.access_key_id).into_secrets(&auth.credential.access_key_id)?;
    check_skew(&amz_date, request_time, now)?;

    let creq = canonical_request(req, &auth.signed_headers, payload_hash, false);
    let scope = auth.credential.scope();
    let sts = string_to_sign(&amz_date, &scope, &creq);
    let signing_key = check_signature(&secrets, &auth.credential, &sts, &creq, &auth.signature)?;
    // Signed chunks are dated by x-amz-date (a request dated by `Date` cannot send them).
    let chunk_seed = dated_by_amz_date.then_some(ChunkSeed {
        signing_key,
        amz_date,
        scope,
        signature: auth.signature,
    });
    Ok(Verified {
        access_key_id: auth.credential.access_key_id,
        payload_hash: Some(payload_hash.to_string()),
        chunk_seed,
    })
}

/// Verifies a presigned URL (`X-Amz-Algorithm`, `-Credential`, `-Date`, `-Expires`,
/// `-SignedHeaders`, `-Signature` in the query) and returns what the signature established (no chunk
/// seed: s3p takes signed chunks only under the header form).
pub fn verify_presigned(
    req: &RequestView,
    now: SystemTime,
    lookup: &dyn Fn(&str) -> SecretLookup,
) -> Result<Verified, S3Error> {
    let params = parse_presigned(req.raw_query)?;
    check_scope(
        &params.credential,
        &params.signed_headers,
        Form::Query,
        S3_SERVICE,
    )?;
    let request_time = parse_amz_date(&params.amz_date).ok_or_else(|| {
        Form::query_error("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    })?;
    if !params.amz_date.starts_with(&params.credential.date) || params.credential.date.len() != 8 {
        return Err(
            Form::Query.malformed("Invalid credential date. Date is not the same as X-Amz-Date.")
        );
    }
    // A presigned URL does not sign the body unless the client said otherwise.
    let declared = params.content_sha256.clone().or_else(|| {
        req.header("x-amz-content-sha256")
            .map(|v| v.trim().to_string())
    });
    let payload_hash = declared.as_deref().unwrap_or(UNSIGNED_PAYLOAD);
    check_payload_hash(payload_hash)?;
    check_amz_headers_signed(req, &params.signed_headers)?;

    let secrets =
        lookup(&params.credential.access_key_id).into_secrets(&params.credential.access_key_id)?;
    // Valid from X-Amz-Date (with the usual skew allowance) until X-Amz-Date + X-Amz-Expires.
    if request_time > now + MAX_SKEW {
        // As S3: a presigned URL dated in the future is not valid yet (header auth says "skewed").
        return Err(
            S3Error::with_message(S3ErrorCode::AccessDenied, "Request is not valid yet")
                .detail("X-Amz-Date", params.amz_date.clone())
                .detail("ServerTime", format_iso8601(now)),
        );
    }
    let expiry = request_time + Duration::from_secs(params.expires);
    if now > expiry {
        return Err(
            S3Error::with_message(S3ErrorCode::AccessDenied, "Request has expired")
                .detail("X-Amz-Expires", params.expires.to_string())
                .detail("Expires", format_iso8601(expiry))
                .detail("ServerTime", format_iso8601(now)),
        );
    }

    let creq = canonical_request(req, &params.signed_headers, payload_hash, true);
    let sts = string_to_sign(&params.amz_date, &params.credential.scope(), &creq);
    check_signature(&secrets, &params.credential, &sts, &creq, &params.signature)?;
    Ok(Verified {
        access_key_id: params.credential.access_key_id,
        payload_hash: declared,
        chunk_seed: None,
    })
}

/// Rules on the scope: the service is the endpoint's (`s3`, or `sts` at the STS path); `host` is
/// signed. Any region is accepted, because s3p is one endpoint for all regions; the client's region
/// still goes into the string to sign via the scope.
fn check_scope(
    credential: &Credential,
    signed_headers: &[String],
    form: Form,
    service: &str,
) -> Result<(), S3Error> {
    if credential.service != service {
        return Err(form.malformed(&format!(
            "incorrect service \"{}\". This endpoint belongs to \"{service}\".",
            credential.service
        )));
    }
    if !signed_headers
        .iter()
        .any(|h| h.eq_ignore_ascii_case("host"))
    {
        return Err(match form {
            Form::Header => form.malformed("the SignedHeaders must include host."),
            Form::Query => Form::query_error(
                "Error parsing the X-Amz-SignedHeaders parameter; it must include host.",
            ),
        });
    }
    Ok(())
}

/// `x-amz-content-sha256` must be one of S3's special values or a 64-digit hex digest.
fn check_payload_hash(value: &str) -> Result<(), S3Error> {
    let is_digest = value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit());
    if is_digest || SPECIAL_PAYLOAD_HASHES.contains(&value) {
        return Ok(());
    }
    Err(S3Error::invalid_argument(
        "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, \
         STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER, \
         STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD, \
         STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER or a valid sha256 value.",
        "x-amz-content-sha256",
        value,
    ))
}

/// Like S3, refuse any `x-amz-*` header that the signature does not cover: otherwise a captured
/// request could be replayed with headers that change its meaning (copy source, ACL, checksum,
/// ...).
fn check_amz_headers_signed(req: &RequestView, signed_headers: &[String]) -> Result<(), S3Error> {
    let mut unsigned: Vec<String> = req
        .headers
        .iter()
        .map(|(name, _)| name.to_ascii_lowercase())
        .filter(|name| {
            name.starts_with("x-amz-")
                && !signed_headers.iter().any(|s| s.eq_ignore_ascii_case(name))
        })
        .collect();
    if unsigned.is_empty() {
        return Ok(());
    }
    unsigned.sort();
    unsigned.dedup();
    Err(S3Error::with_message(
        S3ErrorCode::AccessDenied,
        "There were headers present in the request which were not signed",
    )
    .detail("HeadersNotSigned", unsigned.join(", ")))
}

/// Header auth: the request time must be within [`MAX_SKEW`] of ours, either way.
pub(super) fn check_skew(
    amz_date: &str,
    request_time: SystemTime,
    now: SystemTime,
) -> Result<(), S3Error> {
    let skew = match now.duration_since(request_time) {
        Ok(behind) => behind,
        Err(ahead) => ahead.duration(),
    };
    if skew > MAX_SKEW {
        return Err(too_skewed(amz_date, now));
    }
    Ok(())
}

fn too_skewed(request_time: &str, now: SystemTime) -> S3Error {
    S3Error::new(S3ErrorCode::RequestTimeTooSkewed)
        .detail("RequestTime", request_time)
        .detail("ServerTime", format_iso8601(now))
        .detail(
            "MaxAllowedSkewMilliseconds",
            MAX_SKEW.as_millis().to_string(),
        )
}

/// Accepts if the provided signature matches the one computed with any of the secrets (one, or two
/// during a rotation), and returns the signing key of the secret that matched. Comparisons and the
/// choice of key are constant-time and all secrets are tried, so timing tells nothing. On mismatch
/// the error carries what AWS shows to help a client debug: never a secret or a derived key.
fn check_signature(
    secrets: &[String],
    credential: &Credential,
    string_to_sign: &str,
    canonical_request: &str,
    provided: &str,
) -> Result<[u8; 32], S3Error> {
    let mut matched = Choice::from(0);
    let mut matched_key = [0u8; 32];
    for secret in secrets {
        if let Some((signer, key)) = signer_and_key(
            secret,
            &credential.date,
            &credential.region,
            &credential.service,
        ) {
            let this = sign_with(signer, string_to_sign)
                .as_bytes()
                .ct_eq(provided.as_bytes());
            for (kept, byte) in matched_key.iter_mut().zip(key) {
                kept.conditional_assign(&byte, this);
            }
            matched |= this;
        }
    }
    if bool::from(matched) {
        return Ok(matched_key);
    }
    Err(S3Error::new(S3ErrorCode::SignatureDoesNotMatch)
        .detail("AWSAccessKeyId", credential.access_key_id.as_str())
        .detail("StringToSign", string_to_sign)
        .detail("SignatureProvided", provided)
        .detail("StringToSignBytes", spaced_hex(string_to_sign.as_bytes()))
        .detail("CanonicalRequest", canonical_request)
        .detail(
            "CanonicalRequestBytes",
            spaced_hex(canonical_request.as_bytes()),
        ))
}

/// `41 57 53` — the form AWS uses for `StringToSignBytes` and `CanonicalRequestBytes`.
pub fn spaced_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

pub use crate::timefmt::{format_amz_date, format_iso8601, parse_amz_date};

#[cfg(test)]
pub(crate) mod tests;
