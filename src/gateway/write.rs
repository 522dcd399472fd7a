//! Write routing: what a write (PutObject, CopyObject, the multipart operations, DeleteObject,
//! DeleteObjects) sends to its backend, once the key may write the data source; and the writes refused
//! because s3p cannot honour them end to end. Pure.

use super::allow::{allowed_headers, forwarded_copy_header, forwarded_write_header};
use super::route::{
    expects_continue, route_to, BodyHold, ObjectRoute, MAX_VERIFIED_FIRST_BODY, SMALL_SIGNED_BODY,
};
use crate::auth::Authenticated;
use crate::backend::encode_query_value;
use crate::config::ApiKey;
use crate::error::{S3Error, S3ErrorCode};
use crate::namespace;
use crate::policy;
use crate::request::Operation;
use crate::state::State;
use crate::upload::answers::Rewrite;
use crate::upload::{self, BodyChecks, Payload};
use crate::wire::{Query, RequestView};
use std::borrow::Cow;

/// The largest CompleteMultipartUpload body accepted: what S3's 10,000 parts need, at 256 bytes a part
/// (a part with an ETag and the longest checksum, SHA-256, takes about 170; SDKs add no indentation),
/// plus the envelope. Backends read these bodies whole: they also count in the process-wide budget.
pub const MAX_COMPLETE_BODY: u64 = 10_000 * 256 + 4096;

/// S3's longest key, in UTF-8 bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// The backend request for a write, once the key that `signed` verified may write the data source.
pub(super) fn write_route(
    st: &State,
    signed: &Authenticated,
    op: &Operation,
    view: &RequestView,
    query: &Query,
    scheme: &str,
) -> Result<ObjectRoute, S3Error> {
    let config = &st.config;
    let key = &signed.key;
    let vkey = op
        .written_object()
        .ok_or_else(|| S3Error::new(S3ErrorCode::MethodNotAllowed))?;
    let ds = policy::writable_data_source(config, key, &vkey.data_source)?;
    if vkey.key.is_empty() {
        return Err(S3Error::with_message(
            S3ErrorCode::AccessDenied,
            "The root of a data source cannot be written.",
        ));
    }
    // S3's limit on keys, for the key readers will see (`<dataSource>/<key>`): a longer one would be
    // stored by some backends and then outgrow what listings carry.
    if matches!(
        op,
        Operation::PutObject(_) | Operation::CopyObject(_) | Operation::CreateMultipartUpload(_)
    ) && vkey.data_source.len() + 1 + vkey.key.len() > MAX_KEY_BYTES
    {
        return Err(S3Error::new(S3ErrorCode::KeyTooLongError)
            .detail("MaxSizeAllowed", MAX_KEY_BYTES.to_string()));
    }
    refuse_unsupported_write_headers(view, query)?;
    // As S3 for the copy source's owner: the one owner of the virtual bucket, or refused.
    if view
        .header("x-amz-source-expected-bucket-owner")
        .is_some_and(|owner| owner != config.owner.id)
    {
        return Err(S3Error::new(S3ErrorCode::AccessDenied));
    }
    let obj = namespace::to_backend(ds, vkey)?;
    let copy_source = view.header("x-amz-copy-source");
    let mut headers = allowed_headers(view, forwarded_write_header)?;
    // aws-chunked is how this request's body is framed, not how the object is encoded.
    headers.retain_mut(|(name, value)| {
        if name != "content-encoding" {
            return true;
        }
        *value = value
            .split(',')
            .map(str::trim)
            .filter(|t| !t.eq_ignore_ascii_case("aws-chunked") && !t.is_empty())
            .collect::<Vec<_>>()
            .join(",");
        !value.is_empty()
    });
    let open_upload = |id: &str| st.uploads.open(&vkey.data_source, &vkey.key, id);
    let mut params: Vec<(&str, String)> = Vec::new();
    let mut payload = None;
    let mut rewrite = Rewrite::None;
    let mut copy = false;
    let mut body_hold = BodyHold::None;
    match op {
        Operation::CopyObject(_) | Operation::UploadPartCopy(..) => {
            if let Operation::UploadPartCopy(_, part) = op {
                params.push(("partNumber", part.number.to_string()));
                params.push(("uploadId", open_upload(&part.upload_id)?));
            }
            refuse_body(view)?;
            rewrite = Rewrite::Copy {
                part: matches!(op, Operation::UploadPartCopy(..)),
            };
            let source = copy_source.unwrap_or_default();
            copy = true;
            headers.push((
                Cow::Borrowed("x-amz-copy-source"),
                copy_source_route(st, key, &obj, source)?,
            ));
            headers.extend(allowed_headers(view, forwarded_copy_header)?);
        }
        Operation::PutObject(_) => payload = Some(upload::payload_of(view, signed)?),
        Operation::UploadPart(_, part) => {
            params.push(("partNumber", part.number.to_string()));
            params.push(("uploadId", open_upload(&part.upload_id)?));
            payload = Some(upload::payload_of(view, signed)?);
        }
        Operation::CreateMultipartUpload(_) => {
            refuse_body(view)?;
            params.push(("uploads", String::new()));
            rewrite = Rewrite::Initiate {
                data_source: vkey.data_source.clone(),
                key: vkey.key.clone(),
            };
        }
        Operation::CompleteMultipartUpload(_, id) => {
            params.push(("uploadId", open_upload(id)?));
            let body = upload::payload_of(view, signed)?;
            if body.backend_length().is_none_or(|l| l > MAX_COMPLETE_BODY) {
                return Err(S3Error::new(S3ErrorCode::EntityTooLarge)
                    .detail("MaxSizeAllowed", MAX_COMPLETE_BODY.to_string()));
            }
            // A short body (every empty parts list is one) is read and checked before the backend
            // sees it; a long one streams, counted.
            let length = body.backend_length().unwrap_or(MAX_COMPLETE_BODY);
            body_hold = if length <= MAX_VERIFIED_FIRST_BODY && !body.is_chunked_for_backend() {
                BodyHold::VerifiedFirst(length)
            } else {
                BodyHold::Counted(length)
            };
            payload = Some(body);
            let host = view.header("host").unwrap_or("");
            rewrite = Rewrite::Complete {
                location: format!(
                    "{scheme}://{host}{}/{}/{}",
                    config.base_path,
                    config.bucket,
                    namespace::encode_path(&vkey.full())
                ),
                key: vkey.full(),
            };
        }
        Operation::AbortMultipartUpload(_, id) => {
            refuse_body(view)?;
            params.push(("uploadId", open_upload(id)?));
        }
        Operation::ListParts(_, id) => {
            refuse_body(view)?;
            for name in ["max-parts", "part-number-marker"] {
                if let Some(v) = query.get(name) {
                    let Ok(n) = v.parse::<u32>() else {
                        return Err(S3Error::invalid_argument(
                            "The value must be a non-negative integer.",
                            name,
                            v,
                        ));
                    };
                    // At most 1,000 parts a page, as S3: the rewritten answer stays small.
                    let n = if name == "max-parts" { n.min(1000) } else { n };
                    params.push((name, n.to_string()));
                }
            }
            params.push(("uploadId", open_upload(id)?));
            rewrite = Rewrite::ListParts {
                key: vkey.full(),
                upload_id: id.clone(),
            };
        }
        Operation::DeleteObject(_) => {
            refuse_body(view)?;
            if let Some(v) = query.get("versionId") {
                params.push((
                    "versionId",
                    st.versions.open(&vkey.data_source, &vkey.key, v)?,
                ));
            }
        }
        _ => return Err(S3Error::new(S3ErrorCode::MethodNotAllowed)),
    }
    if let Some(p) = &payload {
        if matches!(p, Payload::AwsChunked(_)) && !p.is_chunked_for_backend() {
            // Decoded here: the backend gets no trailer, so it must not be told to expect a checksum.
            headers.retain(|(n, _)| n != "x-amz-sdk-checksum-algorithm");
        }
        if p.is_chunked_for_backend() {
            // Passed on as framed: the backend decodes it (and checks and stores its checksum).
            match headers.iter_mut().find(|(n, _)| n == "content-encoding") {
                Some((_, v)) => *v = format!("aws-chunked,{v}"),
                None => headers.push((Cow::Borrowed("content-encoding"), "aws-chunked".into())),
            }
        }
        headers.extend(
            p.backend_framing_headers()
                .into_iter()
                .map(|(n, v)| (Cow::Borrowed(n), v)),
        );
    }
    if let Some(Payload::AwsChunked(plan)) = &payload {
        if plan.signing.is_some() && body_hold == BodyHold::None {
            body_hold = verified_first(plan)?;
        }
    }
    let mut route = route_to(st, &obj, &params, headers)?;
    route.copy = copy;
    route.body_hold = body_hold;
    route.object = Some(vkey.clone());
    route.expect_continue = payload.is_some() && expects_continue(view);
    route.payload = payload;
    route.rewrite = rewrite;
    if matches!(
        op,
        Operation::UploadPart(..)
            | Operation::CompleteMultipartUpload(..)
            | Operation::AbortMultipartUpload(..)
            | Operation::ListParts(..)
    ) {
        route.not_found = S3ErrorCode::NoSuchUpload;
    }
    Ok(route)
}

/// Whether a signed-chunk body is read and verified whole before the backend request starts.
pub(super) fn verified_first(plan: &upload::chunked::ChunkedPlan) -> Result<BodyHold, S3Error> {
    let fits = plan
        .encoded_length
        .is_none_or(|l| l <= MAX_VERIFIED_FIRST_BODY);
    if plan.decoded_length <= SMALL_SIGNED_BODY && fits {
        return Ok(BodyHold::VerifiedFirst(
            plan.encoded_length.unwrap_or(MAX_VERIFIED_FIRST_BODY),
        ));
    }
    if plan.decoded_length == 0 {
        // No byte to keep back, and no reason for a long encoding of nothing.
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "An aws-chunked body of decoded length 0 must be short.",
        ));
    }
    Ok(BodyHold::None)
}

/// What a DeleteObjects body must satisfy: a length within S3's limit, and an integrity header.
pub(super) fn delete_body_checks(
    view: &RequestView,
    signed: &Authenticated,
) -> Result<BodyChecks, S3Error> {
    let (length, sha256) = match upload::payload_of(view, signed)? {
        Payload::Plain { length, sha256 } => (length, sha256),
        Payload::AwsChunked(_) => {
            return Err(S3Error::not_implemented(
                "DeleteObjects bodies cannot be aws-chunked in s3p.",
            ))
        }
    };
    if length > upload::delete::MAX_BODY as u64 {
        return Err(S3Error::new(S3ErrorCode::MalformedXML));
    }
    let checksum = view.headers.iter().find_map(|(n, v)| {
        upload::checksum::ChecksumAlgorithm::from_header(n).map(|a| (a, v.trim().to_string()))
    });
    let content_md5 = view.header("content-md5").map(|v| v.trim().to_string());
    if checksum.is_none() && content_md5.is_none() {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "Missing required header for this request: Content-MD5",
        ));
    }
    Ok(BodyChecks {
        length,
        content_md5,
        checksum,
        sha256,
    })
}

/// A request that sends no body must not carry one (it would not be passed on).
fn refuse_body(view: &RequestView) -> Result<(), S3Error> {
    let has_body = view.header("transfer-encoding").is_some()
        || view
            .header_values("content-length")
            .any(|v| v.trim() != "0");
    if has_body {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "This request does not take a body.",
        ));
    }
    Ok(())
}

/// `x-amz-copy-source` for the backend: the source must be an object of the virtual bucket that the
/// key may read, on the same backend as the destination (a backend cannot copy from another).
fn copy_source_route(
    st: &State,
    key: &ApiKey,
    destination: &namespace::BackendObject,
    source: &str,
) -> Result<String, S3Error> {
    let invalid = || {
        S3Error::invalid_argument(
            "Copy Source must mention the source bucket and key: /bucket/key.",
            "x-amz-copy-source",
            "",
        )
    };
    let (path, version) = match source.split_once('?') {
        Some((p, q)) => {
            let q = Query::parse(q)?;
            let version = q.get("versionId").map(str::to_string);
            if version.is_none() || q.iter().count() != 1 {
                return Err(invalid());
            }
            (p, version)
        }
        None => (source, None),
    };
    let decoded = namespace::decode_once(path.trim())?;
    let decoded = decoded.strip_prefix('/').unwrap_or(&decoded);
    let (bucket, rest) = decoded.split_once('/').ok_or_else(invalid)?;
    if bucket != st.config.bucket {
        return Err(S3Error::new(S3ErrorCode::AccessDenied));
    }
    let vkey = namespace::parse_virtual_key(rest)?;
    let ds = policy::readable_data_source(&st.config, key, &vkey.data_source)?;
    let obj = namespace::to_backend(ds, &vkey)?;
    if obj.backend != destination.backend {
        return Err(S3Error::not_implemented(
            "s3p copies only between data sources on the same backend; copy across backends by \
             reading the object and writing it again.",
        ));
    }
    let mut value = format!("/{}/{}", obj.bucket, namespace::encode_path(&obj.key));
    if let Some(v) = version {
        // The client's version id is s3p's sealed form of the backend's.
        let backend_version = st.versions.open(&vkey.data_source, &vkey.key, &v)?;
        value.push_str("?versionId=");
        value.push_str(&encode_query_value(&backend_version));
    }
    Ok(value)
}

/// `x-amz-*` headers of a write that s3p reads itself or that change nothing: not forwarded, not refused.
const WRITE_HEADERS_READ_BY_S3P: [&str; 12] = [
    "x-amz-date",
    "x-amz-content-sha256",
    "x-amz-decoded-content-length",
    "x-amz-trailer",
    "x-amz-copy-source",
    "x-amz-acl",
    "x-amz-expected-bucket-owner",
    "x-amz-source-expected-bucket-owner",
    "x-amz-user-agent",
    // SDK metadata (the AWS C++ SDK under pyarrow sends its API version).
    "x-amz-api-version",
    "x-amz-request-payer",
    // A session's token: checked by authentication (`auth::security_token`), never forwarded.
    "x-amz-security-token",
];

/// Query parameters a write may carry (besides the authentication ones): anything else names an S3
/// feature s3p does not serve (`?renameObject`, `?retention`...), refused rather than ignored.
fn write_query_param(name: &str) -> bool {
    matches!(
        name,
        "x-id"
            | "uploads"
            | "uploadId"
            | "partNumber"
            | "versionId"
            | "max-parts"
            | "part-number-marker"
    ) || crate::auth::is_auth_query_param(name)
}

/// Write headers s3p cannot honour end to end are refused, rather than dropped: the client would
/// believe the object protected, shared, locked, appended or conditionally written. Deny by default:
/// an `x-amz-*` header neither forwarded nor read by s3p is refused.
fn refuse_unsupported_write_headers(view: &RequestView, query: &Query) -> Result<(), S3Error> {
    if let Some((name, _)) = query.iter().find(|(n, _)| !write_query_param(n)) {
        return Err(S3Error::not_implemented(format!(
            "The query parameter `{name}` is not supported by s3p on writes."
        )));
    }
    for (name, value) in view.headers.iter() {
        let name = name.to_ascii_lowercase();
        let unknown_amz = name.starts_with("x-amz-")
            && forwarded_write_header(&name).is_none()
            && forwarded_copy_header(&name).is_none()
            && !WRITE_HEADERS_READ_BY_S3P.contains(&name.as_str());
        let refused = unknown_amz
            || match name.as_str() {
                // Accepted as no-ops: with one owner, these are what every object already is.
                "x-amz-acl" => !matches!(value.trim(), "private" | "bucket-owner-full-control"),
                n if n.starts_with("x-amz-grant-") => true,
                n if n.starts_with("x-amz-server-side-encryption-customer-")
                    || n.starts_with("x-amz-copy-source-server-side-encryption-customer-") =>
                {
                    true
                }
                "x-amz-server-side-encryption" => value.trim() != "AES256",
                n if n.starts_with("x-amz-server-side-encryption-") => true,
                n if n.starts_with("x-amz-object-lock-") => true,
                "x-amz-website-redirect-location" => true,
                _ => false,
            };
        if refused {
            return Err(S3Error::not_implemented(format!(
                "The header `{name}` is not supported by s3p on writes."
            )));
        }
    }
    Ok(())
}
