//! The allow-lists of headers, as data: which request headers are passed to the backend (and signed)
//! for reads, writes and copies, and which response headers reach the client. Everything not listed stays
//! behind. Pure.

use crate::auth::RequestView;
use crate::error::S3Error;
use std::borrow::Cow;

/// The client's headers that `allow` names (by their lowercase name), checked to be signable.
pub(super) fn allowed_headers(
    view: &RequestView,
    allow: fn(&str) -> Option<&'static str>,
) -> Result<Vec<(Cow<'static, str>, String)>, S3Error> {
    let mut headers = Vec::new();
    for (sent_name, value) in view.headers.iter() {
        let Some(name) = allow(sent_name) else {
            continue;
        };
        let name: Cow<'static, str> = match name {
            USER_METADATA => Cow::Owned(sent_name.to_ascii_lowercase()),
            constant => Cow::Borrowed(constant),
        };
        // Forwarded headers are signed for the backend as text: refuse what is not visible ASCII,
        // rather than sign a copy the backend would reject as a bad signature.
        if !value
            .bytes()
            .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
        {
            return Err(S3Error::invalid_argument(
                "Header values must be visible ASCII.",
                &name,
                "",
            ));
        }
        headers.push((name, value.to_string()));
    }
    Ok(headers)
}

/// What an allow-list answers for a user-metadata header (`x-amz-meta-*`): forwarded under its own name.
pub(super) const USER_METADATA: &str = "x-amz-meta-";

/// Request headers of an object GET/HEAD that are passed to the backend (and signed), by their
/// lowercase name.
pub fn forwarded_request_header(name: &str) -> Option<&'static str> {
    const FORWARDED: [&str; 12] = [
        "range",
        "x-amz-object-attributes",
        "x-amz-max-parts",
        "x-amz-part-number-marker",
        "if-match",
        "if-none-match",
        "if-modified-since",
        "if-unmodified-since",
        "x-amz-checksum-mode",
        "x-amz-server-side-encryption-customer-algorithm",
        "x-amz-server-side-encryption-customer-key",
        "x-amz-server-side-encryption-customer-key-md5",
    ];
    FORWARDED
        .iter()
        .find(|f| f.eq_ignore_ascii_case(name))
        .copied()
}

/// Request headers of a write (PutObject, UploadPart, CreateMultipartUpload, CompleteMultipartUpload)
/// that are passed to the backend (and signed), by their lowercase name.
pub fn forwarded_write_header(name: &str) -> Option<&'static str> {
    const FORWARDED: [&str; 23] = [
        "cache-control",
        "content-disposition",
        "content-encoding",
        "content-language",
        "content-md5",
        "content-type",
        "expires",
        "if-match",
        "if-none-match",
        "x-amz-checksum-algorithm",
        "x-amz-checksum-crc32",
        "x-amz-checksum-crc32c",
        "x-amz-checksum-crc64nvme",
        "x-amz-checksum-sha1",
        "x-amz-checksum-sha256",
        "x-amz-checksum-type",
        "x-amz-mp-object-size",
        // Names the trailing checksum's algorithm (backends that check parts against their upload's
        // algorithm look for it).
        "x-amz-sdk-checksum-algorithm",
        "x-amz-server-side-encryption",
        "x-amz-storage-class",
        "x-amz-tagging",
        "x-amz-metadata-directive",
        "x-amz-tagging-directive",
    ];
    if let Some(f) = FORWARDED.iter().find(|f| f.eq_ignore_ascii_case(name)) {
        return Some(f);
    }
    // User metadata: the name is the client's own (lowercased as every header name here is).
    (name.len() > USER_METADATA.len()
        && name.as_bytes()[..USER_METADATA.len()].eq_ignore_ascii_case(USER_METADATA.as_bytes()))
    .then_some(USER_METADATA)
}

/// Conditions of a copy on its source, passed to the backend.
pub(super) fn forwarded_copy_header(name: &str) -> Option<&'static str> {
    const FORWARDED: [&str; 5] = [
        "x-amz-copy-source-if-match",
        "x-amz-copy-source-if-none-match",
        "x-amz-copy-source-if-modified-since",
        "x-amz-copy-source-if-unmodified-since",
        "x-amz-copy-source-range",
    ];
    FORWARDED
        .iter()
        .find(|f| f.eq_ignore_ascii_case(name))
        .copied()
}

/// Response headers of an object that are passed to the client. Everything else (backend request ids,
/// server names, redirects, bucket regions...) stays behind.
pub fn forwarded_response_header(name: &str) -> bool {
    matches!(
        name,
        "content-type"
            | "content-length"
            | "content-range"
            | "content-encoding"
            | "content-disposition"
            | "content-language"
            | "cache-control"
            | "expires"
            | "etag"
            | "last-modified"
            | "accept-ranges"
            | "x-amz-version-id"
            | "x-amz-delete-marker"
            | "x-amz-storage-class"
            | "x-amz-mp-parts-count"
            | "x-amz-tagging-count"
            | "x-amz-server-side-encryption"
            | "x-amz-server-side-encryption-customer-algorithm"
            | "x-amz-server-side-encryption-customer-key-md5"
    ) || name.starts_with("x-amz-meta-")
        || name.starts_with("x-amz-checksum-")
}
