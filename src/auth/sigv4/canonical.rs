//! The canonical request, the string to sign, the signing key and the signature: SigV4's core steps,
//! S3's rules made explicit (no path normalisation, no double encoding, form-decoded query).

use super::*;
use crate::auth::RequestView;
use crate::wire::{decode_form, decode_percent, is_unreserved, push_unreserved, RawQuery};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::borrow::Cow;

/// Canonical URI: each `/`-separated segment of the raw path is percent-decoded, then re-encoded
/// with the unreserved set. A correctly encoded path comes out unchanged; an under-encoded one
/// (`(`, `+`, a space, raw UTF-8) gets the encoding the client's signer used; `%2F` inside a
/// segment stays `%2F`; lowercase hex becomes uppercase. No dot-segment removal, no slash merging,
/// no double encoding (S3 semantics).
pub fn canonical_uri(raw_path: &str) -> String {
    if raw_path.is_empty() {
        return "/".to_string();
    }
    let mut out = String::with_capacity(raw_path.len() + 8);
    for (i, segment) in raw_path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        push_unreserved(&mut out, &decode_percent(segment));
    }
    out
}

/// The `name=value` pairs of a raw query, percent-decoded to bytes. A `+` is a space (form
/// encoding, which S3 and the AWS SDKs follow); an empty piece (`a&&b`) is skipped; `a` without `=`
/// has an empty value.
pub(super) fn query_pairs(
    raw_query: &str,
) -> impl Iterator<Item = (std::borrow::Cow<'_, [u8]>, std::borrow::Cow<'_, [u8]>)> + '_ {
    RawQuery(raw_query)
        .pairs()
        .map(|(name, value)| (decode_form(name), decode_form(value.unwrap_or(""))))
}

/// Canonical query string: names and values decoded then re-encoded with the unreserved set, sorted
/// by encoded name then encoded value, joined as `name=value` with `&`. In the presigned form the
/// `X-Amz-Signature` parameter is left out (`presigned = true`).
pub fn canonical_query(raw_query: &str, presigned: bool) -> String {
    let mut pairs: Vec<(Cow<'_, str>, Cow<'_, str>)> = RawQuery(raw_query)
        .pairs()
        .map(|(name, value)| {
            (
                canonical_query_part(name),
                canonical_query_part(value.unwrap_or("")),
            )
        })
        .filter(|(name, _)| !(presigned && name == param::SIGNATURE))
        .collect();
    pairs.sort();
    let mut out = String::with_capacity(raw_query.len() + 16);
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// One name or value of a raw query in canonical form: form-decoded, then encoded with the unreserved
/// set. Borrowed when the raw text is that form already (what SDKs send: unreserved bytes, and `%XX`
/// in uppercase for the others), so that most queries are canonicalised without a copy.
fn canonical_query_part(raw: &str) -> Cow<'_, str> {
    let bytes = raw.as_bytes();
    let upper_hex = |b: u8| b.is_ascii_digit() || (b'A'..=b'F').contains(&b);
    let mut i = 0;
    let mut canonical = true;
    while i < bytes.len() {
        let b = bytes[i];
        if is_unreserved(b) {
            i += 1;
        } else if b == b'%'
            && bytes.get(i + 1).copied().is_some_and(upper_hex)
            && bytes.get(i + 2).copied().is_some_and(upper_hex)
            && !is_unreserved(
                (bytes[i + 1] as char).to_digit(16).unwrap() as u8 * 16
                    + (bytes[i + 2] as char).to_digit(16).unwrap() as u8,
            )
        {
            i += 3;
        } else {
            canonical = false;
            break;
        }
    }
    if canonical {
        return Cow::Borrowed(raw);
    }
    let decoded = decode_form(raw);
    let mut out = String::with_capacity(decoded.len() + 8);
    push_unreserved(&mut out, &decoded);
    Cow::Owned(out)
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
    // Most values (dates, hashes, tokens) have no blank at all.
    if memchr::memchr2(b' ', b'\t', value.as_bytes()).is_none() {
        out.push_str(value);
        return;
    }
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
    let uri = canonical_uri(req.raw_path);
    let query = canonical_query(req.raw_query, presigned);
    let headers = canonical_headers(req, signed_headers);
    let mut out = String::with_capacity(
        req.method.len() + uri.len() + query.len() + headers.len() + 2 * payload_hash.len() + 128,
    );
    for part in [req.method, "\n", &uri, "\n", &query, "\n", &headers, "\n"] {
        out.push_str(part);
    }
    for (i, name) in signed_headers.iter().enumerate() {
        if i > 0 {
            out.push(';');
        }
        out.push_str(name.as_ref());
    }
    out.push('\n');
    out.push_str(payload_hash);
    out
}

/// `AWS4-HMAC-SHA256\n<amz_date>\n<scope>\n<hex sha256 of the canonical request>`.
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    let digest = hex::encode(Sha256::digest(canonical_request.as_bytes()));
    let mut out = String::with_capacity(ALGORITHM.len() + amz_date.len() + scope.len() + 67);
    for part in [ALGORITHM, "\n", amz_date, "\n", scope, "\n", &digest] {
        out.push_str(part);
    }
    out
}

/// The derived signing key for one secret, scope day (`yyyymmdd`), region and service:
/// `HMAC(HMAC(HMAC(HMAC("AWS4" + secret, day), region), service), "aws4_request")`. `None` if `date`
/// is not a valid `yyyymmdd`.
///
/// The key changes only daily, and deriving it is four HMACs, more than the rest of a signature: each
/// thread remembers the last few it derived (s3p derives one per request on each side, the client's
/// to verify and the backend's to re-sign). The cache is transparent (the same inputs give the same
/// key), bounded (an attacker who varies the scope's day or region only makes it derive again), and
/// holds only what this process already has: its configured secrets and keys derived from them.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Option<[u8; 32]> {
    with_derived_key(secret, date, region, service, |k| k.key)
}

/// The HMAC of a signature under the derived key, keyed already: [`signature`] without hashing the key
/// again (two of the few SHA-256 blocks a signature costs). Same cache as [`signing_key`].
pub fn signer(secret: &str, date: &str, region: &str, service: &str) -> Option<Hmac<Sha256>> {
    with_derived_key(secret, date, region, service, |k| k.mac.clone())
}

/// [`signer`] and [`signing_key`] from one lookup of the cache: the verifier keeps the key of the secret
/// that matched, the seed of an aws-chunked body's chunk signatures.
pub(super) fn signer_and_key(
    secret: &str,
    date: &str,
    region: &str,
    service: &str,
) -> Option<(Hmac<Sha256>, [u8; 32])> {
    with_derived_key(secret, date, region, service, |k| (k.mac.clone(), k.key))
}

/// Hex HMAC-SHA256 of the string to sign, with a keyed [`signer`].
pub fn sign_with(signer: Hmac<Sha256>, string_to_sign: &str) -> String {
    let mut mac = signer;
    mac.update(string_to_sign.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn with_derived_key<T>(
    secret: &str,
    date: &str,
    region: &str,
    service: &str,
    read: impl Fn(&DerivedKey) -> T,
) -> Option<T> {
    let cached = DERIVED_KEYS.with_borrow(|keys| {
        keys.iter()
            .find(|k| {
                k.date == date && k.region == region && k.service == service && k.secret == secret
            })
            .map(&read)
    });
    if cached.is_some() {
        return cached;
    }
    let key = derive_signing_key(secret, date, region, service)?;
    let derived = DerivedKey {
        secret: secret.to_string(),
        date: date.to_string(),
        region: region.to_string(),
        service: service.to_string(),
        key,
        mac: Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length"),
    };
    let out = read(&derived);
    DERIVED_KEYS.with_borrow_mut(|keys| {
        if keys.len() >= SIGNING_KEYS_PER_THREAD {
            keys.clear();
        }
        keys.push(derived);
    });
    Some(out)
}

#[cfg(test)]
pub(super) fn cached_signing_keys() -> usize {
    DERIVED_KEYS.with_borrow(Vec::len)
}

/// How many derived keys each thread remembers: enough for every backend and the API keys in use on
/// one day, small enough that a lookup is a short scan.
const SIGNING_KEYS_PER_THREAD: usize = 32;

thread_local! {
    static DERIVED_KEYS: std::cell::RefCell<Vec<DerivedKey>> = const { std::cell::RefCell::new(Vec::new()) };
}

struct DerivedKey {
    secret: String,
    date: String,
    region: String,
    service: String,
    key: [u8; 32],
    /// HMAC keyed with `key`, ready to clone.
    mac: Hmac<Sha256>,
}

pub(super) fn derive_signing_key(
    secret: &str,
    date: &str,
    region: &str,
    service: &str,
) -> Option<[u8; 32]> {
    parse_amz_date(&format!("{date}T000000Z"))?;
    let mut key = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    for part in [region, service, SCOPE_TERMINATOR] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    Some(key)
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Hex HMAC-SHA256 of the string to sign under a signing key.
pub fn signature(signing_key: &[u8], string_to_sign: &str) -> String {
    hex::encode(hmac_sha256(signing_key, string_to_sign.as_bytes()))
}

// -------------------------------------------------------------------------------------------------
// S3 verification
// -------------------------------------------------------------------------------------------------
