//! Who is calling: credentials found in a request -> a verified API key, or an S3 error. Pure: no I/O.
//!
//! The signature schemes live in their own modules (`sigv4`, `sigv2`); this module decides which scheme a
//! request uses, refuses requests that carry two, and resolves the key's entitlements.

pub mod sigv2;
pub mod sigv4;

/// The parts of an HTTP request that signatures cover, exactly as the client sent them.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// `GET`, `HEAD`, ...
    pub method: &'a str,
    /// The request path as sent on the wire, still percent-encoded, without the query (`/s3p/immuta/a%20b`).
    pub raw_path: &'a str,
    /// The raw query string without the leading `?` (empty when absent).
    pub raw_query: &'a str,
    pub headers: Headers<'a>,
}

/// The request's headers, borrowed as they are: the request's own header map (no copy per request), or
/// pairs (tests, and the rare view that rewrites a header). Names are lowercase; a name may appear more
/// than once. Values that are not UTF-8 are invisible here: `gateway::decide` refuses such requests first.
#[derive(Debug, Clone, Copy)]
pub enum Headers<'a> {
    Map(&'a http::HeaderMap),
    Pairs(&'a [(String, String)]),
}

impl<'a> Headers<'a> {
    /// The name of the first header whose value is not UTF-8 (such values are invisible to `iter`).
    pub fn first_not_utf8(self) -> Option<&'a str> {
        match self {
            Headers::Map(map) => map
                .iter()
                .find(|(_, v)| std::str::from_utf8(v.as_bytes()).is_err())
                .map(|(n, _)| n.as_str()),
            Headers::Pairs(_) => None,
        }
    }

    pub fn iter(self) -> HeaderIter<'a> {
        match self {
            Headers::Map(map) => HeaderIter::Map(map.iter()),
            Headers::Pairs(pairs) => HeaderIter::Pairs(pairs.iter()),
        }
    }
}

/// Iterates `(name, value)` of [`Headers`] without allocating.
pub enum HeaderIter<'a> {
    Map(http::header::Iter<'a, http::HeaderValue>),
    Pairs(std::slice::Iter<'a, (String, String)>),
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            HeaderIter::Map(it) => loop {
                let (name, value) = it.next()?;
                if let Ok(value) = std::str::from_utf8(value.as_bytes()) {
                    return Some((name.as_str(), value));
                }
            },
            HeaderIter::Pairs(it) => it.next().map(|(n, v)| (n.as_str(), v.as_str())),
        }
    }
}

impl<'a> RequestView<'a> {
    /// All values of a header (names compared case-insensitively).
    pub fn header_values<'n>(&self, name: &'n str) -> impl Iterator<Item = &'a str> + 'n
    where
        'a: 'n,
    {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        match self.headers {
            // The map's own lookup (a hash), instead of a scan.
            Headers::Map(map) => map
                .get(name)
                .and_then(|v| std::str::from_utf8(v.as_bytes()).ok()),
            Headers::Pairs(_) => self
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v),
        }
    }
}

/// What the key store knows about an access key id, as the signature verifiers need it.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretLookup {
    /// No usable key with this id (unknown, disabled or expired): answer InvalidAccessKeyId.
    Unknown,
    /// The key's secrets: one, or two while a secret is being rotated (any of them may have signed);
    /// none for a key that cannot sign (its signatures never match).
    Secrets(Vec<String>),
}

/// Never the secrets themselves, only how many there are.
impl std::fmt::Debug for SecretLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretLookup::Unknown => f.write_str("Unknown"),
            SecretLookup::Secrets(s) => write!(f, "Secrets([{} redacted])", s.len()),
        }
    }
}

impl SecretLookup {
    /// The secrets, or InvalidAccessKeyId (naming the id, as AWS does) for an unknown key.
    pub fn into_secrets(self, access_key_id: &str) -> Result<Vec<String>, crate::error::S3Error> {
        match self {
            SecretLookup::Unknown => Err(crate::error::S3Error::new(
                crate::error::S3ErrorCode::InvalidAccessKeyId,
            )
            .detail("AWSAccessKeyId", access_key_id)),
            SecretLookup::Secrets(secrets) => Ok(secrets),
        }
    }
}

use crate::config::{ApiKey, Config};
use crate::error::{S3Error, S3ErrorCode};
use crate::wire::{strip_base_path, RawQuery};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The literal that follows the colon in Immuta's legacy header `Authorization: AWS <API KEY>:immuta`.
pub const LEGACY_MARKER: &str = "immuta";

/// The API keys of a configuration, by id.
pub struct KeyStore {
    keys: HashMap<String, Arc<ApiKey>>,
    legacy_auth: bool,
}

impl KeyStore {
    pub fn new(config: &Config) -> Self {
        let keys = config
            .api_keys
            .iter()
            .map(|k| (k.id.expose().to_string(), Arc::new(k.clone())))
            .collect();
        KeyStore {
            keys,
            legacy_auth: config.legacy_auth,
        }
    }

    /// Whether `id` is a configured key id (usable or not): failures of a known key are counted per key.
    pub fn knows(&self, id: &str) -> bool {
        self.keys.contains_key(id)
    }

    /// The display name of a configured key (for the audit line of a request that claimed it).
    pub fn name_of(&self, id: &str) -> Option<&str> {
        self.keys.get(id).map(|k| k.name.as_str())
    }

    /// A key that may be used now: known, enabled and not expired.
    fn usable(&self, id: &str, now: SystemTime) -> Option<&Arc<ApiKey>> {
        let key = self.keys.get(id)?;
        let now_s = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        (key.enabled && key.expires_at.is_none_or(|t| now_s < t)).then_some(key)
    }

    fn secrets(&self, id: &str, now: SystemTime) -> SecretLookup {
        match self.usable(id, now) {
            None => SecretLookup::Unknown,
            Some(k) => {
                SecretLookup::Secrets(k.secrets.iter().map(|s| s.expose().to_string()).collect())
            }
        }
    }
}

/// How a request presents its credentials.
#[derive(Debug, PartialEq, Eq)]
enum Presented<'a> {
    Nothing,
    /// `AWS <key>:immuta`.
    Legacy(&'a str),
    /// `AWS <key>:<base64 signature>`.
    SigV2Header(&'a str, &'a str),
    SigV4Header(&'a str),
    SigV4Query,
    SigV2Query,
}

fn presented<'a>(view: &RequestView<'a>) -> Result<Presented<'a>, S3Error> {
    let header = view.header("authorization");
    let v4_query = sigv4::is_presigned(view.raw_query);
    let v2_query = sigv2::is_presigned(view.raw_query);
    if [header.is_some(), v4_query, v2_query]
        .iter()
        .filter(|b| **b)
        .count()
        > 1
    {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string \
             parameter or the Authorization header should be specified",
        )
        .detail("ArgumentName", "Authorization"));
    }
    if v4_query {
        return Ok(Presented::SigV4Query);
    }
    if v2_query {
        return Ok(Presented::SigV2Query);
    }
    let Some(value) = header else {
        return Ok(Presented::Nothing);
    };
    if value.starts_with("AWS4-HMAC-SHA256 ") || value == "AWS4-HMAC-SHA256" {
        return Ok(Presented::SigV4Header(value));
    }
    if value.starts_with("AWS ") {
        return match sigv2::parse_authorization(value) {
            Some((key, LEGACY_MARKER)) => Ok(Presented::Legacy(key)),
            Some((key, sig)) => Ok(Presented::SigV2Header(key, sig)),
            None => Err(S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                "AWS authorization header is invalid.  Expected AwsAccessKeyId:signature",
            )
            .detail("ArgumentName", "Authorization")),
        };
    }
    Err(S3Error::with_message(
        S3ErrorCode::InvalidArgument,
        "Unsupported Authorization Type",
    )
    .detail("ArgumentName", "Authorization"))
}

/// Whether the request is authenticated by a SigV2 presigned URL (`Signature` in the query).
/// Query parameters that carry a request's authentication (SigV4 and SigV2 presigned URLs).
pub fn is_auth_query_param(name: &str) -> bool {
    matches!(
        name,
        sigv4::param::ALGORITHM
            | sigv4::param::CREDENTIAL
            | sigv4::param::DATE
            | sigv4::param::EXPIRES
            | sigv4::param::SIGNED_HEADERS
            | sigv4::param::SIGNATURE
            | sigv4::param::CONTENT_SHA256
            | "X-Amz-Security-Token"
            | "AWSAccessKeyId"
            | "Signature"
            | "Expires"
    )
}

/// The request is signed with SigV2, in its header or presigned form.
pub fn is_sigv2(view: &RequestView) -> bool {
    matches!(
        presented(view),
        Ok(Presented::SigV2Header(..) | Presented::SigV2Query)
    )
}

pub fn is_sigv2_presigned(view: &RequestView) -> bool {
    sigv2::is_presigned(view.raw_query) && !sigv4::is_presigned(view.raw_query)
}

/// The access key id a request claims, before any verification (for throttling repeated failures).
pub fn claimed_key_id<'a>(view: &RequestView<'a>) -> Option<&'a str> {
    let from_query = |name: &str| RawQuery(view.raw_query).get_raw(name);
    if let Some(cred) = from_query("X-Amz-Credential") {
        return cred.split(['/', '%']).next();
    }
    if let Some(id) = from_query("AWSAccessKeyId") {
        return Some(id);
    }
    let value = view.header("authorization")?;
    if let Some(rest) = value.strip_prefix("AWS4-HMAC-SHA256 ") {
        let cred = rest.split("Credential=").nth(1)?;
        return cred.split('/').next();
    }
    sigv2::parse_authorization(value).map(|(id, _)| id)
}

/// Options of the verifier that come from configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthOptions<'a> {
    /// When set (the base path, e.g. `/s3p`), a signature that does not match the request as sent is
    /// also checked against the request as some clients sign it: without the base path in the path
    /// (s3fs-fuse 1.90), and with it moved into the host (s3cmd). Each variant is still an HMAC by the
    /// key's secret over the method, the key path, the query and the signed headers, so nothing unsigned
    /// is accepted; only the location of the fixed base path in the signed text differs.
    pub base_path_tolerance: Option<&'a str>,
}

/// Verifies the request's credentials. `sigv2_resources` are the resources a SigV2 signature may cover, in
/// order of preference: botocore signs `/<bucket>/<key>` without the base path whatever the addressing
/// style, other SigV2 clients sign the path as sent (`/s3p/immuta/<key>`, or `/<bucket>/s3p/<key>` for
/// virtual-hosted requests). The base path is a fixed constant, so accepting both weakens nothing.
pub fn authenticate(
    store: &KeyStore,
    view: &RequestView,
    sigv2_resources: &[String],
    now: SystemTime,
    options: &AuthOptions,
) -> Result<Arc<ApiKey>, S3Error> {
    let lookup = |id: &str| store.secrets(id, now);
    let sigv2 = |check: &dyn Fn(&str) -> Result<String, S3Error>| -> Result<String, S3Error> {
        let mut first_error = None;
        for resource in sigv2_resources {
            match check(resource) {
                Ok(id) => return Ok(id),
                Err(e) if e.code == S3ErrorCode::SignatureDoesNotMatch => {
                    first_error.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(first_error.unwrap_or_else(|| S3Error::new(S3ErrorCode::SignatureDoesNotMatch)))
    };
    let verify = |view: &RequestView| -> Result<Option<String>, S3Error> {
        Ok(Some(match presented(view)? {
            Presented::Nothing | Presented::Legacy(_) => return Ok(None),
            Presented::SigV2Header(id, sig) => {
                sigv2(&|r| sigv2::verify_header(view, id, sig, r, now, &lookup))?
            }
            Presented::SigV2Query => sigv2(&|r| sigv2::verify_query(view, r, now, &lookup))?,
            Presented::SigV4Header(value) => sigv4::verify_header(view, value, now, &lookup)?,
            Presented::SigV4Query => sigv4::verify_presigned(view, now, &lookup)?,
        }))
    };
    let id = match presented(view)? {
        Presented::Nothing => return Err(S3Error::new(S3ErrorCode::AccessDenied)),
        Presented::Legacy(id) => {
            let key = store.usable(id, now).ok_or_else(|| {
                S3Error::new(S3ErrorCode::InvalidAccessKeyId).detail("AWSAccessKeyId", id)
            })?;
            if !store.legacy_auth || !key.legacy_header {
                return Err(S3Error::with_message(
                    S3ErrorCode::AccessDenied,
                    "The legacy `AWS <key>:immuta` header is not allowed for this key; sign the request (SigV4).",
                ));
            }
            return Ok(key.clone());
        }
        _ => match verify(view) {
            Ok(id) => id,
            Err(e) if e.code == S3ErrorCode::SignatureDoesNotMatch => {
                match options
                    .base_path_tolerance
                    .and_then(|base| sigv4_without_base_path(view, base, &verify))
                {
                    Some(id) => Some(id),
                    None => return Err(e),
                }
            }
            Err(e) => return Err(e),
        },
    };
    // The verifiers only succeed for ids the lookup knew, so this finds the key.
    let id = id.ok_or_else(|| S3Error::new(S3ErrorCode::AccessDenied))?;
    store
        .usable(&id, now)
        .cloned()
        .ok_or_else(|| S3Error::new(S3ErrorCode::InvalidAccessKeyId))
}

type Verifier<'a> = dyn Fn(&RequestView) -> Result<Option<String>, S3Error> + 'a;

/// Tries a signature against the request with the base path taken out of the path (s3fs-fuse 1.90), then
/// also appended to the signed host (s3cmd). Returns the verified key id of the first variant that matches.
fn sigv4_without_base_path(view: &RequestView, base: &str, verify: &Verifier) -> Option<String> {
    if base.is_empty() {
        return None;
    }
    let stripped = match strip_base_path(base, view.raw_path)? {
        "" => "/",
        rest => rest,
    };
    let plain = RequestView {
        raw_path: stripped,
        ..*view
    };
    if let Ok(Some(id)) = verify(&plain) {
        return Some(id);
    }
    let host_with_base: Vec<(String, String)> = view
        .headers
        .iter()
        .map(|(n, v)| {
            if n.eq_ignore_ascii_case("host") {
                (n.to_string(), format!("{v}{base}"))
            } else {
                (n.to_string(), v.to_string())
            }
        })
        .collect();
    let moved = RequestView {
        raw_path: stripped,
        headers: Headers::Pairs(&host_with_base),
        ..*view
    };
    verify(&moved).ok().flatten()
}

/// The SigV2 resources of a request, in the order [`authenticate`] tries them: `/<bucket>/<key>` without
/// the base path first (botocore), then with the path as sent.
pub fn sigv2_resources(raw_path: &str, base_path: &str, host_bucket: Option<&str>) -> Vec<String> {
    let without_base = strip_base_path(base_path, raw_path).unwrap_or(raw_path);
    let (canonical, as_sent) = match host_bucket {
        Some(b) => (format!("/{b}{without_base}"), format!("/{b}{raw_path}")),
        None => (without_base.to_string(), raw_path.to_string()),
    };
    let canonical = if canonical.is_empty() {
        "/".to_string()
    } else {
        canonical
    };
    // Virtual-hosted: only the canonical form. `/<bucket>/s3p/<key>` as sent would equal botocore's
    // path-style signature for the different key `s3p/<key>`, and SigV2 does not sign the Host.
    if canonical == as_sent || host_bucket.is_some() {
        vec![canonical]
    } else {
        vec![canonical, as_sent]
    }
}

/// Keys, secrets and times shared by the signature tests of both versions.
#[cfg(test)]
pub(crate) mod test_keys {
    use super::SecretLookup;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    pub const AKID: &str = "AKIDS3PEXAMPLE";
    pub const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    pub const ROTATING: &str = "AKIDROTATING";
    pub const OLD_SECRET: &str = "old/Secret+Key0000000000000000000000000";
    pub const NEW_SECRET: &str = "new/Secret+Key1111111111111111111111111";
    pub const NO_SECRET: &str = "AKIDNOSECRET";

    pub fn lookup(akid: &str) -> SecretLookup {
        match akid {
            AKID => SecretLookup::Secrets(vec![SECRET.to_string()]),
            ROTATING => SecretLookup::Secrets(vec![OLD_SECRET.to_string(), NEW_SECRET.to_string()]),
            NO_SECRET => SecretLookup::Secrets(vec![]),
            _ => SecretLookup::Unknown,
        }
    }

    /// 2024-05-01T12:00:00Z, when the test requests are signed.
    pub fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_714_564_800)
    }

    /// `t0` moved by a number of seconds, either way.
    pub fn at(offset_secs: i64) -> SystemTime {
        if offset_secs >= 0 {
            t0() + Duration::from_secs(offset_secs as u64)
        } else {
            t0() - Duration::from_secs(offset_secs.unsigned_abs())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(headers: &'a [(String, String)], query: &'a str) -> RequestView<'a> {
        RequestView {
            method: "GET",
            raw_path: "/s3p/immuta",
            raw_query: query,
            headers: Headers::Pairs(headers),
        }
    }

    fn store(yaml_keys: &str) -> KeyStore {
        let yaml = format!(
            "token_secret: 0123456789abcdef\nbackends: {{}}\ndata_sources: {{}}\napi_keys:\n{yaml_keys}"
        );
        KeyStore::new(&Config::from_yaml_str(&yaml, &|_| None).unwrap())
    }

    fn auth(s: &KeyStore, value: &str) -> Result<Arc<ApiKey>, S3Error> {
        let headers = vec![("authorization".to_string(), value.to_string())];
        authenticate(
            s,
            &view(&headers, ""),
            &["/s3p/immuta".to_string()],
            SystemTime::now(),
            &AuthOptions::default(),
        )
    }

    #[test]
    fn legacy_header() {
        let s = store(
            "  - {id: k1, name: One, data_sources: all}\n\
             \x20 - {id: k2, name: Two, legacy_header: false, data_sources: all}\n\
             \x20 - {id: k3, name: Three, enabled: false, data_sources: all}\n\
             \x20 - {id: k4, name: Four, expires_at: 1000, data_sources: all}\n",
        );
        assert_eq!(auth(&s, "AWS k1:immuta").unwrap().name, "One");
        assert_eq!(
            auth(&s, "AWS k2:immuta").unwrap_err().code,
            S3ErrorCode::AccessDenied
        );
        assert_eq!(
            auth(&s, "AWS nobody:immuta").unwrap_err().code,
            S3ErrorCode::InvalidAccessKeyId
        );
        assert_eq!(
            auth(&s, "AWS k3:immuta").unwrap_err().code,
            S3ErrorCode::InvalidAccessKeyId,
            "disabled"
        );
        assert_eq!(
            auth(&s, "AWS k4:immuta").unwrap_err().code,
            S3ErrorCode::InvalidAccessKeyId,
            "expired"
        );
        assert_eq!(
            auth(&s, "AWS :immuta").unwrap_err().code,
            S3ErrorCode::InvalidArgument
        );
        assert_eq!(
            auth(&s, "Bearer x").unwrap_err().code,
            S3ErrorCode::InvalidArgument
        );
    }

    #[test]
    fn legacy_header_can_be_switched_off_globally() {
        let yaml = "token_secret: 0123456789abcdef\nlegacy_auth: false\napi_keys:\n  - {id: k1, name: One, data_sources: all}\n";
        let s = KeyStore::new(&Config::from_yaml_str(yaml, &|_| None).unwrap());
        assert_eq!(
            auth(&s, "AWS k1:immuta").unwrap_err().code,
            S3ErrorCode::AccessDenied
        );
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn claimed_key_ids() {
        let h = |v: &str| vec![("authorization".to_string(), v.to_string())];
        let none: Vec<(String, String)> = vec![];
        let cases: Vec<(Vec<(String, String)>, &str, Option<&str>)> = vec![
            (h("AWS k1:immuta"), "", Some("k1")),
            (h("AWS k2:c2lnbmF0dXJl"), "", Some("k2")),
            (h("AWS4-HMAC-SHA256 Credential=k3/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00"), "", Some("k3")),
            (none.clone(), "X-Amz-Credential=k4%2F20240101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=0", Some("k4")),
            (none.clone(), "AWSAccessKeyId=k5&Signature=x&Expires=1", Some("k5")),
            (none, "", None),
        ];
        for (headers, query, want) in &cases {
            assert_eq!(
                claimed_key_id(&view(headers, query)),
                *want,
                "{headers:?} {query}"
            );
        }
    }

    #[test]
    fn sigv2_resources_prefer_the_botocore_form() {
        assert_eq!(
            sigv2_resources("/s3p/immuta/k", "/s3p", None),
            vec!["/immuta/k", "/s3p/immuta/k"]
        );
        assert_eq!(sigv2_resources("/immuta/k", "", None), vec!["/immuta/k"]);
        assert_eq!(
            sigv2_resources("/s3p/k", "/s3p", Some("immuta")),
            vec!["/immuta/k"]
        );
        assert_eq!(sigv2_resources("/s3p", "/s3p", None), vec!["/", "/s3p"]);
    }

    #[test]
    fn no_credentials_and_two_methods() {
        let s = store("  - {id: k1, name: One, data_sources: all}\n");
        let none: Vec<(String, String)> = vec![];
        assert_eq!(
            authenticate(
                &s,
                &view(&none, ""),
                &["/".to_string()],
                SystemTime::now(),
                &AuthOptions::default()
            )
            .unwrap_err()
            .code,
            S3ErrorCode::AccessDenied
        );
        let h = vec![("authorization".to_string(), "AWS k1:immuta".to_string())];
        let e = authenticate(
            &s,
            &view(&h, "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=00"),
            &["/".to_string()],
            SystemTime::now(),
            &AuthOptions::default(),
        )
        .unwrap_err();
        assert_eq!((e.code, e.status()), (S3ErrorCode::InvalidArgument, 400));
        let e = authenticate(
            &s,
            &view(&none, "AWSAccessKeyId=k1&Signature=x&X-Amz-Credential=y"),
            &["/".to_string()],
            SystemTime::now(),
            &AuthOptions::default(),
        )
        .unwrap_err();
        assert_eq!(e.code, S3ErrorCode::InvalidArgument);
    }
}
