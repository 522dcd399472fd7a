//! The canonical request, the string to sign, the signing key and the signature: SigV4's core steps,
//! S3's rules made explicit (no path normalisation, no double encoding, form-decoded query).

use super::*;
use crate::auth::RequestView;
use crate::wire::{decode_form, RawQuery, UNRESERVED};
use percent_encoding::{percent_decode, percent_encode};
use sha2::{Digest, Sha256};

/// Canonical URI: each `/`-separated segment of the raw path is percent-decoded, then re-encoded
/// with the unreserved set. A correctly encoded path comes out unchanged; an under-encoded one
/// (`(`, `+`, a space, raw UTF-8) gets the encoding the client's signer used; `%2F` inside a
/// segment stays `%2F`; lowercase hex becomes uppercase. No dot-segment removal, no slash merging,
/// no double encoding (S3 semantics).
pub fn canonical_uri(raw_path: &str) -> String {
    if raw_path.is_empty() {
        return "/".to_string();
    }
    raw_path
        .split('/')
        .map(|segment| {
            percent_encode(
                &percent_decode(segment.as_bytes()).collect::<Vec<u8>>(),
                UNRESERVED,
            )
            .to_string()
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The `name=value` pairs of a raw query, percent-decoded to bytes. A `+` is a space (form
/// encoding, which S3 and the AWS SDKs follow); an empty piece (`a&&b`) is skipped; `a` without `=`
/// has an empty value.
pub(super) fn query_pairs(raw_query: &str) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> + '_ {
    RawQuery(raw_query)
        .pairs()
        .map(|(name, value)| (decode_form(name), decode_form(value.unwrap_or(""))))
}

/// Canonical query string: names and values decoded then re-encoded with the unreserved set, sorted
/// by encoded name then encoded value, joined as `name=value` with `&`. In the presigned form the
/// `X-Amz-Signature` parameter is left out (`presigned = true`).
pub fn canonical_query(raw_query: &str, presigned: bool) -> String {
    let mut pairs: Vec<(String, String)> = query_pairs(raw_query)
        .filter(|(name, _)| !(presigned && name.as_slice() == param::SIGNATURE.as_bytes()))
        .map(|(name, value)| {
            (
                percent_encode(&name, UNRESERVED).to_string(),
                percent_encode(&value, UNRESERVED).to_string(),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Canonical headers block: one `name:value\n` line per signed header, in the given order. All
/// values of a header (any case of its name) are trimmed, their inner runs of blanks (spaces, tabs:
/// botocore collapses both) made one space, and joined with `,`. A signed header absent from the
/// request gets an empty value (the client signed it that way).
pub fn canonical_headers<S: AsRef<str>>(req: &RequestView, signed_headers: &[S]) -> String {
    let mut out = String::new();
    for name in signed_headers {
        let name = name.as_ref();
        out.push_str(name);
        out.push(':');
        for (i, value) in req.header_values(name).enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_trimmed_collapsed(&mut out, value);
        }
        out.push('\n');
    }
    out
}

/// Appends `value` without leading/trailing blanks and with each inner run of blanks as a single
/// space.
pub(super) fn push_trimmed_collapsed(out: &mut String, value: &str) {
    let mut words = value.split([' ', '\t']).filter(|w| !w.is_empty());
    if let Some(first) = words.next() {
        out.push_str(first);
        for word in words {
            out.push(' ');
            out.push_str(word);
        }
    }
}

/// The full canonical request:
/// `METHOD\nURI\nQUERY\nHEADERS\nSIGNED;HEADERS\nPAYLOAD_HASH` (HEADERS ends with its own `\n`).
pub fn canonical_request<S: AsRef<str>>(
    req: &RequestView,
    signed_headers: &[S],
    payload_hash: &str,
    presigned: bool,
) -> String {
    let signed: Vec<&str> = signed_headers.iter().map(AsRef::as_ref).collect();
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        canonical_uri(req.raw_path),
        canonical_query(req.raw_query, presigned),
        canonical_headers(req, &signed),
        signed.join(";"),
        payload_hash
    )
}

/// `AWS4-HMAC-SHA256\n<amz_date>\n<scope>\n<hex sha256 of the canonical request>`.
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    let digest = hex::encode(Sha256::digest(canonical_request.as_bytes()));
    format!("{ALGORITHM}\n{amz_date}\n{scope}\n{digest}")
}

/// The derived signing key for one secret, scope day (`yyyymmdd`), region and service. It changes
/// only daily, so a caller may cache it (keyed by access key id, secret version, day, region); this
/// module caches nothing. `None` if `date` is not a valid `yyyymmdd`.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Option<[u8; 32]> {
    let day = parse_amz_date(&format!("{date}T000000Z"))?;
    let key = generate_signing_key(secret, day, region, service);
    key.as_ref().try_into().ok()
}

/// Hex HMAC-SHA256 of the string to sign under a signing key.
pub fn signature(signing_key: &[u8], string_to_sign: &str) -> String {
    calculate_signature(signing_key, string_to_sign.as_bytes())
}

// -------------------------------------------------------------------------------------------------
// S3 verification
// -------------------------------------------------------------------------------------------------
