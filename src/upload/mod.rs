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

use crate::auth::{sigv4, Authenticated};
use crate::error::{S3Error, S3ErrorCode};
use crate::wire::RequestView;
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

/// The payload of an upload (PutObject, UploadPart) as the request frames it. `signed` is what
/// authentication learned: the payload hash the request declares (which a SigV4 signature covers), and
/// the seed of aws-chunked signatures; neither is read from the request again.
pub fn payload_of(view: &RequestView, signed: &Authenticated) -> Result<Payload, S3Error> {
    let content_sha256 = signed.payload_hash(view);
    let content_sha256 = content_sha256.as_deref();
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
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" => Some(chunk_signing(signed, false)?),
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" => Some(chunk_signing(signed, true)?),
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

fn too_large() -> S3Error {
    S3Error::new(S3ErrorCode::EntityTooLarge).detail("MaxSizeAllowed", MAX_PUT_BYTES.to_string())
}

/// What checks the chunks of a signed aws-chunked body: the seed that authentication kept (the request's
/// verified signature, date and scope, and the signing key of the secret that verified it).
fn chunk_signing(signed: &Authenticated, signed_trailer: bool) -> Result<ChunkSigning, S3Error> {
    signed
        .chunk_seed
        .as_ref()
        .map(|seed| ChunkSigning::from_seed(seed, signed_trailer))
        .ok_or_else(|| {
            S3Error::with_message(
                S3ErrorCode::AccessDenied,
                "Signed chunks need a request signed with SigV4 in the Authorization header.",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(signed_payload: Option<&str>) -> Authenticated {
        Authenticated {
            key: std::sync::Arc::new(crate::config::ApiKey {
                id: crate::config::Secret::new("k"),
                secrets: Vec::new(),
                name: "K".into(),
                legacy_header: true,
                enabled: true,
                expires_at: None,
                data_sources: crate::config::Entitlement::default(),
                session: None,
            }),
            scheme: crate::auth::Scheme::SigV4Presigned,
            signed_payload: signed_payload.map(str::to_string),
            chunk_seed: None,
        }
    }

    /// The payload hash authentication reports (a presigned URL's pinned `X-Amz-Content-Sha256` wins over
    /// the header: `auth`'s tests) is the one forwarded, so the backend refuses any other body; the
    /// request's own header is not read again here.
    #[test]
    fn the_hash_authentication_reports_is_the_one_forwarded() {
        let headers = vec![
            ("content-length".to_string(), "3".to_string()),
            ("x-amz-content-sha256".to_string(), "b".repeat(64)),
        ];
        let view = RequestView {
            method: "PUT",
            raw_path: "/s3p/immuta/sandbox/x",
            raw_query: "",
            headers: crate::wire::Headers::Pairs(&headers),
        };
        let (lower, upper) = ("a".repeat(64), "A".repeat(64));
        let table = [
            (Some(lower.as_str()), Some(lower.clone())),
            (Some(upper.as_str()), Some(lower.clone())),
            (Some(sigv4::UNSIGNED_PAYLOAD), None),
            (None, None),
        ];
        for (reported, want) in table {
            match payload_of(&view, &signed(reported)).unwrap() {
                Payload::Plain { sha256, .. } => assert_eq!(sha256, want, "{reported:?}"),
                Payload::AwsChunked(_) => panic!("not chunked"),
            }
        }
        // Signed chunks need the seed authentication kept: without one (legacy, SigV2, presigned URLs,
        // a request dated by `Date`) they are refused, as before.
        let chunked = [
            ("content-length".to_string(), "100".to_string()),
            ("x-amz-decoded-content-length".to_string(), "3".to_string()),
        ];
        let view = RequestView {
            headers: crate::wire::Headers::Pairs(&chunked),
            ..view
        };
        let e = payload_of(&view, &signed(Some("STREAMING-AWS4-HMAC-SHA256-PAYLOAD")))
            .err()
            .expect("refused");
        assert_eq!(e.code, S3ErrorCode::AccessDenied);
    }

    /// What `chunk_signing` built before authentication kept the seed: the Authorization header parsed
    /// again, a signing key derived for every secret of the key.
    fn chunk_signing_as_before(
        view: &RequestView,
        key: &crate::config::ApiKey,
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

    /// A SigV4 header request dated by `Date` instead of `x-amz-date`, signed with s3p's own steps
    /// (aws-sigv4 always writes x-amz-date).
    fn signed_with_a_date_header(headers: &mut Vec<(String, String)>, path: &str) {
        use crate::auth::test_keys::{t0, AKID, SECRET};
        headers.push(("date".into(), "Wed, 01 May 2024 12:00:00 GMT".into()));
        let names: Vec<String> = headers.iter().map(|(n, _)| n.clone()).collect();
        let view = RequestView {
            method: "PUT",
            raw_path: path,
            raw_query: "",
            headers: crate::wire::Headers::Pairs(headers),
        };
        let creq =
            sigv4::canonical_request(&view, &names, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", false);
        let scope = "20240501/us-east-1/s3/aws4_request";
        let sts = sigv4::string_to_sign(&sigv4::format_amz_date(t0()), scope, &creq);
        let key = sigv4::signing_key(SECRET, "20240501", "us-east-1", "s3").unwrap();
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={AKID}/{scope}, SignedHeaders={}, Signature={}",
            names.join(";"),
            sigv4::signature(&key, &sts)
        );
        headers.push(("authorization".into(), authorization));
    }

    /// The chunk signing of an aws-chunked upload, built from the seed authentication kept, is what the
    /// re-parse of the Authorization header built before; but for a key rotating its secret, whose
    /// chunks are now checked with the one secret that verified the request, not both.
    #[test]
    #[allow(clippy::type_complexity)]
    fn the_chunk_seed_is_what_the_header_gave_before() {
        use crate::auth::sigv4::tests::{sign_with_aws_sigv4, Body, Signing};
        use crate::auth::test_keys::*;
        let yaml = format!(
            "token_secret: 0123456789abcdef\nbackends: {{}}\ndata_sources: {{}}\napi_keys:\n\
             \x20 - {{id: {AKID}, secret: \"{SECRET}\", name: Signer, data_sources: all}}\n\
             \x20 - {{id: {ROTATING}, secrets: [\"{OLD_SECRET}\", \"{NEW_SECRET}\"], name: Rotating, data_sources: all}}\n\
             \x20 - {{id: LEG, name: Legacy, data_sources: all}}\n"
        );
        let store = crate::auth::KeyStore::new(
            &crate::config::Config::from_yaml_str(&yaml, &|_| None).unwrap(),
        );
        const STREAMING: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
        const STREAMING_TRAILER: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";
        const FRAMING: &[(&str, &str)] = &[
            ("content-length", "300"),
            ("x-amz-decoded-content-length", "3"),
        ];
        // A presigned URL declares its payload form in a (signed) header.
        const PRESIGNED_FRAMING: &[(&str, &str)] = &[
            ("content-length", "300"),
            ("x-amz-decoded-content-length", "3"),
            ("x-amz-content-sha256", STREAMING),
        ];
        let v4 = |target: &'static str,
                  form: &'static str,
                  akid: &'static str,
                  secret: &'static str,
                  region: &'static str,
                  presign: Option<u64>| {
            let req = sign_with_aws_sigv4(&Signing {
                method: "PUT",
                target,
                headers: if presign.is_some() {
                    PRESIGNED_FRAMING
                } else {
                    FRAMING
                },
                body: Body::Precomputed(form),
                akid,
                secret,
                region,
                presign_expires: presign,
            });
            (req.view().raw_query.to_string(), req.headers.clone())
        };
        let mut dated = vec![
            ("host".to_string(), "127.0.0.1:8080".to_string()),
            ("content-length".to_string(), "300".to_string()),
            ("x-amz-content-sha256".to_string(), STREAMING.to_string()),
            ("x-amz-decoded-content-length".to_string(), "3".to_string()),
        ];
        signed_with_a_date_header(&mut dated, "/s3p/immuta/ds/f");
        let legacy = vec![
            ("authorization".to_string(), "AWS LEG:immuta".to_string()),
            ("content-length".to_string(), "300".to_string()),
            ("x-amz-content-sha256".to_string(), STREAMING.to_string()),
            ("x-amz-decoded-content-length".to_string(), "3".to_string()),
        ];
        // name, signed path, (query, headers), form, the secret that signed (None: refused both ways)
        let cases: Vec<(&str, (String, Vec<(String, String)>), &str, Option<&str>)> = vec![
            (
                "one secret",
                v4(
                    "/s3p/immuta/ds/f",
                    STREAMING,
                    AKID,
                    SECRET,
                    "us-east-1",
                    None,
                ),
                STREAMING,
                Some(SECRET),
            ),
            (
                "a signed trailer",
                v4(
                    "/s3p/immuta/ds/f",
                    STREAMING_TRAILER,
                    AKID,
                    SECRET,
                    "us-east-1",
                    None,
                ),
                STREAMING_TRAILER,
                Some(SECRET),
            ),
            (
                "another region",
                v4(
                    "/s3p/immuta/ds/f",
                    STREAMING,
                    AKID,
                    SECRET,
                    "eu-west-3",
                    None,
                ),
                STREAMING,
                Some(SECRET),
            ),
            (
                "rotating, the old secret",
                v4(
                    "/s3p/immuta/ds/f",
                    STREAMING,
                    ROTATING,
                    OLD_SECRET,
                    "us-east-1",
                    None,
                ),
                STREAMING,
                Some(OLD_SECRET),
            ),
            (
                "rotating, the new secret",
                v4(
                    "/s3p/immuta/ds/f",
                    STREAMING,
                    ROTATING,
                    NEW_SECRET,
                    "us-east-1",
                    None,
                ),
                STREAMING,
                Some(NEW_SECRET),
            ),
            // Signed without the base path (s3fs-fuse 1.90), accepted by the base-path tolerance.
            (
                "signed without the base path",
                v4("/immuta/ds/f", STREAMING, AKID, SECRET, "us-east-1", None),
                STREAMING,
                Some(SECRET),
            ),
            ("dated by Date", (String::new(), dated), STREAMING, None),
            (
                "presigned",
                v4(
                    "/s3p/immuta/ds/f",
                    STREAMING,
                    AKID,
                    SECRET,
                    "us-east-1",
                    Some(300),
                ),
                STREAMING,
                None,
            ),
            ("legacy", (String::new(), legacy), STREAMING, None),
        ];
        let base = crate::wire::RequestPath::new("/s3p", "/s3p/immuta/ds/f");
        for (name, (query, headers), form, signer) in &cases {
            let view = RequestView {
                method: "PUT",
                raw_path: "/s3p/immuta/ds/f",
                raw_query: query,
                headers: crate::wire::Headers::Pairs(headers),
            };
            let options = crate::auth::AuthOptions {
                base_path_tolerance: Some(base),
            };
            let signed = crate::auth::authenticate(
                &store,
                &view,
                &|| vec!["/immuta/ds/f".to_string()],
                t0(),
                &options,
            )
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert_eq!(signed.payload_hash(&view).as_deref(), Some(*form), "{name}");
            let trailer = *form == STREAMING_TRAILER;
            let before = chunk_signing_as_before(&view, &signed.key, trailer);
            let now = match payload_of(&view, &signed) {
                Ok(Payload::AwsChunked(plan)) => Ok(plan.signing.expect("signed chunks")),
                Ok(Payload::Plain { .. }) => panic!("{name}: not chunked"),
                Err(e) => Err(e),
            };
            match (before, now, signer) {
                (Ok(before), Ok(now), Some(secret)) => {
                    // The secret's place among the key's secrets picks its key of those derived before.
                    let i = signed
                        .key
                        .secrets
                        .iter()
                        .position(|s| s.expose() == *secret)
                        .unwrap();
                    assert_eq!(now.keys, vec![before.keys[i]], "{name}");
                    assert_eq!(before.keys.len(), signed.key.secrets.len(), "{name}");
                    assert_eq!(
                        (
                            &now.amz_date,
                            &now.scope,
                            &now.seed_signature,
                            now.signed_trailer
                        ),
                        (
                            &before.amz_date,
                            &before.scope,
                            &before.seed_signature,
                            before.signed_trailer
                        ),
                        "{name}"
                    );
                }
                (Err(before), Err(now), None) => {
                    assert_eq!(
                        (before.code, before.message),
                        (now.code, now.message),
                        "{name}"
                    );
                }
                (before, now, _) => panic!(
                    "{name}: before {:?}, now {:?}",
                    before.map(|_| ()),
                    now.map(|_| ())
                ),
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
