//! Writes: how an upload's body is framed and checked, and the multipart upload ids clients see. Pure.
//!
//! Payload forms (from `x-amz-content-sha256`), and what the backend gets:
//! - a hex SHA-256 signed by the client: the body as is, and the same hash, re-signed, so the backend
//!   checks the body against what the client signed;
//! - `UNSIGNED-PAYLOAD`, no header (legacy header, SigV2, presigned URLs): the body as is, unsigned;
//! - aws-chunked (`STREAMING-...`): decoded by s3p, which checks chunk signatures and the trailing
//!   checksum itself (see [`chunked`]); the backend gets the plain body with its decoded length.

pub mod answers;
pub mod checksum;
pub mod chunked;
pub mod delete;
pub mod multipart;
pub mod uploads_list;

use crate::auth::{sigv4, RequestView};
use crate::config::ApiKey;
use crate::error::{S3Error, S3ErrorCode};
use checksum::ChecksumAlgorithm;
use chunked::{ChunkSigning, ChunkedPlan};

/// How a request body that s3p reads itself is checked before it is believed: its integrity header
/// (S3 requires Content-MD5 or a checksum) and the payload hash a SigV4 signature covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyChecks {
    pub length: u64,
    /// Base64 MD5 (`Content-MD5`).
    pub content_md5: Option<String>,
    /// An `x-amz-checksum-*` header and its value.
    pub checksum: Option<(ChecksumAlgorithm, String)>,
    /// The hex SHA-256 the client signed (`x-amz-content-sha256`).
    pub sha256: Option<String>,
}

impl BodyChecks {
    /// Checks a body read whole.
    pub fn verify(&self, body: &[u8]) -> Result<(), S3Error> {
        use base64::Engine;
        use subtle::ConstantTimeEq;
        let same = |a: &str, b: &str| bool::from(a.as_bytes().ct_eq(b.as_bytes()));
        if body.len() as u64 != self.length {
            return Err(S3Error::new(S3ErrorCode::IncompleteBody));
        }
        if let Some(want) = &self.sha256 {
            use sha2::Digest;
            if !same(&hex::encode(sha2::Sha256::digest(body)), want) {
                return Err(S3Error::with_message(
                    S3ErrorCode::BadDigest,
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                ));
            }
        }
        if let Some(want) = &self.content_md5 {
            use md5::Digest;
            let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body));
            if !same(&md5, want) {
                return Err(S3Error::with_message(
                    S3ErrorCode::BadDigest,
                    "The Content-MD5 you specified did not match what we received.",
                ));
            }
        }
        if let Some((alg, want)) = &self.checksum {
            let mut h = alg.hasher();
            h.update(body);
            if !same(&h.finish(), want) {
                return Err(S3Error::with_message(
                    S3ErrorCode::BadDigest,
                    format!(
                        "The {} you specified did not match the calculated checksum.",
                        alg.name()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The payload form of an unsigned aws-chunked body with a trailing checksum.
pub const UNSIGNED_TRAILER: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";

/// The largest single PUT S3 accepts (5 GiB); larger objects are uploaded in parts.
pub const MAX_PUT_BYTES: u64 = 5 << 30;

/// How a request's body is framed, and how it reaches the backend.
#[derive(Clone)]
pub enum Payload {
    /// Sent on as is: `length` bytes; `sha256` is the payload hash the client signed (hex), which the
    /// backend request carries so that the backend checks the body.
    Plain { length: u64, sha256: Option<String> },
    /// aws-chunked: decoded (and checked) by s3p.
    AwsChunked(ChunkedPlan),
}

impl Payload {
    /// The body length the backend is sent; `None`: sent chunked (a passed-on aws-chunked body whose
    /// client sent no length).
    pub fn backend_length(&self) -> Option<u64> {
        match self {
            Payload::Plain { length, .. } => Some(*length),
            Payload::AwsChunked(plan) if plan.pass_through => plan.encoded_length,
            Payload::AwsChunked(plan) => Some(plan.decoded_length),
        }
    }

    /// The backend request's `x-amz-content-sha256`.
    pub fn backend_payload_hash(&self) -> &str {
        match self {
            Payload::Plain {
                sha256: Some(h), ..
            } => h,
            Payload::AwsChunked(ChunkedPlan {
                pass_through: true, ..
            }) => UNSIGNED_TRAILER,
            _ => sigv4::UNSIGNED_PAYLOAD,
        }
    }

    /// Headers the backend needs to read the body as it is sent (a passed-on aws-chunked body).
    pub fn backend_framing_headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Payload::AwsChunked(plan) if plan.pass_through => {
                let mut h = vec![(
                    "x-amz-decoded-content-length",
                    plan.decoded_length.to_string(),
                )];
                if let Some(alg) = plan.trailer {
                    h.push(("x-amz-trailer", alg.header().to_string()));
                }
                h
            }
            _ => Vec::new(),
        }
    }

    /// The body reaches the backend aws-chunked (its Content-Encoding keeps `aws-chunked`).
    pub fn is_chunked_for_backend(&self) -> bool {
        matches!(self, Payload::AwsChunked(plan) if plan.pass_through)
    }
}

/// The payload of an upload (PutObject, UploadPart) as the request frames it. `key` is the key that
/// verified (its secrets check aws-chunked signatures).
pub fn payload_of(view: &RequestView, key: &ApiKey) -> Result<Payload, S3Error> {
    let signed_hash = signed_payload_hash(view);
    let content_sha256 = signed_hash.as_deref();
    let chunked_transfer = view.header("transfer-encoding").is_some();
    let length = match view.header("content-length") {
        Some(v) => Some(v.trim().parse::<u64>().map_err(|_| {
            S3Error::invalid_argument("Content-Length is not a number.", "Content-Length", v)
        })?),
        None => None,
    };
    let streaming = content_sha256.filter(|h| h.starts_with("STREAMING-"));
    let Some(form) = streaming else {
        // A plain body: S3 needs its length up front.
        let length = match (length, chunked_transfer) {
            (Some(l), false) => l,
            _ => return Err(S3Error::new(S3ErrorCode::MissingContentLength)),
        };
        if length > MAX_PUT_BYTES {
            return Err(too_large());
        }
        let sha256 = match content_sha256 {
            None | Some(sigv4::UNSIGNED_PAYLOAD) => None,
            Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Some(h.to_ascii_lowercase())
            }
            Some(_) => return Err(S3Error::invalid_argument(
                "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-... or a SHA-256 hash.",
                "x-amz-content-sha256",
                "",
            )),
        };
        return Ok(Payload::Plain { length, sha256 });
    };
    let decoded_length = view
        .header("x-amz-decoded-content-length")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| S3Error::new(S3ErrorCode::MissingContentLength))?;
    if decoded_length > MAX_PUT_BYTES {
        return Err(too_large());
    }
    let trailer = match view.header("x-amz-trailer") {
        None => None,
        Some(name) => Some(ChecksumAlgorithm::from_header(name).ok_or_else(|| {
            S3Error::invalid_argument(
                "x-amz-trailer must name one x-amz-checksum-* header.",
                "x-amz-trailer",
                name,
            )
        })?),
    };
    let signing = match form {
        UNSIGNED_TRAILER => None,
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" => Some(chunk_signing(view, key, false)?),
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" => Some(chunk_signing(view, key, true)?),
        _ => {
            return Err(S3Error::not_implemented(format!(
                "The payload form {form} is not supported by s3p."
            )))
        }
    };
    if trailer.is_some() && !form.ends_with("-TRAILER") {
        return Err(S3Error::invalid_argument(
            "x-amz-trailer needs a payload form with a trailer.",
            "x-amz-trailer",
            "",
        ));
    }
    // The unsigned form goes on as framed (the backend then checks and stores the checksum too);
    // signed chunks are decoded (their signatures are the client's).
    Ok(Payload::AwsChunked(ChunkedPlan {
        decoded_length,
        pass_through: signing.is_none(),
        signing,
        trailer,
        encoded_length: length.filter(|_| !chunked_transfer),
    }))
}

/// The payload hash the request's signature covers: a presigned URL's `X-Amz-Content-Sha256` query
/// parameter (SigV4 signs it), else the `x-amz-content-sha256` header. A presigned URL that pins its body
/// must get that body, so the query parameter wins.
pub fn signed_payload_hash(view: &RequestView) -> Option<String> {
    let from_query = sigv4::is_presigned(view.raw_query)
        .then(|| crate::wire::RawQuery(view.raw_query).get_raw(sigv4::param::CONTENT_SHA256))
        .flatten()
        .map(|v| {
            String::from_utf8_lossy(&crate::wire::decode_form(v))
                .trim()
                .to_string()
        });
    from_query.or_else(|| {
        view.header("x-amz-content-sha256")
            .map(|h| h.trim().to_string())
    })
}

fn too_large() -> S3Error {
    S3Error::new(S3ErrorCode::EntityTooLarge).detail("MaxSizeAllowed", MAX_PUT_BYTES.to_string())
}

/// What checks the chunks of a signed aws-chunked body: the request's (already verified) signature is
/// the seed, and the key's secrets give the signing keys.
fn chunk_signing(
    view: &RequestView,
    key: &ApiKey,
    signed_trailer: bool,
) -> Result<ChunkSigning, S3Error> {
    let refused = || {
        S3Error::with_message(
            S3ErrorCode::AccessDenied,
            "Signed chunks need a request signed with SigV4 in the Authorization header.",
        )
    };
    let auth = view
        .header("authorization")
        .filter(|a| a.trim_start().starts_with(sigv4::ALGORITHM))
        .ok_or_else(refused)?;
    let auth = sigv4::parse_authorization(auth)?;
    let amz_date = view.header("x-amz-date").ok_or_else(refused)?.trim();
    let c = &auth.credential;
    let keys: Vec<[u8; 32]> = key
        .secrets
        .iter()
        .filter_map(|s| sigv4::signing_key(s.expose(), &c.date, &c.region, &c.service))
        .collect();
    if keys.is_empty() {
        return Err(refused());
    }
    Ok(ChunkSigning {
        keys,
        amz_date: amz_date.to_string(),
        scope: c.scope(),
        seed_signature: auth.signature.to_ascii_lowercase(),
        signed_trailer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A presigned URL that pins its body's hash (`X-Amz-Content-Sha256` in the signed query) gets that
    /// hash forwarded, so the backend refuses any other body; the header form and unsigned URLs as before.
    #[test]
    fn the_hash_a_presigned_url_signs_is_the_one_enforced() {
        let key = crate::config::ApiKey {
            id: crate::config::Secret::new("k"),
            secrets: Vec::new(),
            name: "K".into(),
            legacy_header: true,
            enabled: true,
            expires_at: None,
            data_sources: crate::config::Entitlement::default(),
        };
        let hash = "a".repeat(64);
        let headers = vec![("content-length".to_string(), "3".to_string())];
        let with_header = {
            let mut h = headers.clone();
            h.push(("x-amz-content-sha256".into(), "b".repeat(64)));
            h
        };
        let presigned_query = format!(
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=k%2F20261202%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Content-Sha256={hash}&X-Amz-Signature=00"
        );
        type Case<'a> = (&'a str, &'a Vec<(String, String)>, Option<String>);
        let table: [Case; 4] = [
            (presigned_query.as_str(), &headers, Some(hash.clone())),
            // The query parameter wins over an (unsigned) header.
            (presigned_query.as_str(), &with_header, Some(hash.clone())),
            ("", &with_header, Some("b".repeat(64))),
            // Outside a presigned URL, a query parameter of that name is nobody's hash.
            ("X-Amz-Content-Sha256=cc", &headers, None),
        ];
        for (query, headers, want) in table {
            let view = RequestView {
                method: "PUT",
                raw_path: "/s3p/immuta/sandbox/x",
                raw_query: query,
                headers: crate::auth::Headers::Pairs(headers),
            };
            match payload_of(&view, &key).unwrap() {
                Payload::Plain { sha256, .. } => assert_eq!(sha256, want, "{query}"),
                Payload::AwsChunked(_) => panic!("not chunked"),
            }
        }
    }

    #[test]
    fn bodies_read_whole_are_checked_against_every_header_sent() {
        let body = b"<Delete><Object><Key>k</Key></Object></Delete>";
        let md5 = {
            use base64::Engine;
            use md5::Digest;
            base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body))
        };
        let sha = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(body))
        };
        let mut crc = ChecksumAlgorithm::Crc32.hasher();
        crc.update(body);
        let crc = crc.finish();
        let ok = BodyChecks {
            length: body.len() as u64,
            content_md5: Some(md5.clone()),
            checksum: Some((ChecksumAlgorithm::Crc32, crc.clone())),
            sha256: Some(sha.clone()),
        };
        assert!(ok.verify(body).is_ok());
        let mut tampered = body.to_vec();
        tampered[12] = b'X';
        assert_eq!(
            ok.verify(&tampered).unwrap_err().code,
            S3ErrorCode::BadDigest
        );
        assert_eq!(
            ok.verify(&body[1..]).unwrap_err().code,
            S3ErrorCode::IncompleteBody
        );
        for one in [
            BodyChecks {
                content_md5: Some(md5),
                checksum: None,
                sha256: None,
                ..ok.clone()
            },
            BodyChecks {
                content_md5: None,
                checksum: Some((ChecksumAlgorithm::Crc32, crc)),
                sha256: None,
                ..ok.clone()
            },
            BodyChecks {
                content_md5: None,
                checksum: None,
                sha256: Some(sha),
                ..ok.clone()
            },
        ] {
            assert!(one.verify(body).is_ok());
            assert_eq!(
                one.verify(&tampered).unwrap_err().code,
                S3ErrorCode::BadDigest
            );
        }
    }
}
