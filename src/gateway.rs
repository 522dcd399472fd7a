//! The decision: what s3p does with one request, worked out from the request, the configuration and the
//! clock alone (no I/O). `decide` authenticates, routes into the virtual namespace and checks the key's
//! entitlement; its [`Decision`] names the outcome and the audit facts, once. The pingora glue
//! (`proxy.rs`) carries the decision out: it answers, lists, or forwards to a backend.
//!
//! What stays in the glue is what needs shared run-time state: the throttle of failed authentications,
//! the in-flight limits, draining.

use crate::auth::{self, RequestView};
use crate::backend::{encode_query_value, Backend};
use crate::config::{ApiKey, Cors};
use crate::error::{S3Error, S3ErrorCode};
use crate::listing::params::ListParams;
use crate::namespace;
use crate::policy;
use crate::request::{self, Mount, Operation};
use crate::state::State;
use crate::wire::Query;
use bytes::Bytes;
use serde::Serialize;
use std::sync::Arc;
use std::time::SystemTime;

/// What s3p knows of a request when it decides.
pub struct Incoming<'a> {
    pub view: &'a RequestView<'a>,
    /// The bucket named by the Host header (virtual-host addressing).
    pub host_bucket: Option<&'a str>,
    pub now: SystemTime,
}

/// What to do with a request, and what the audit line says about it.
pub struct Decision {
    pub outcome: Outcome,
    pub audit: AuditFacts,
    /// The key whose signature (or legacy header) verified.
    pub key: Option<Arc<ApiKey>>,
    /// Set when authentication failed: the throttle counts the failure.
    pub auth_failure: Option<AuthFailure>,
    /// The request is malformed in a way that leaves the connection unusable: close it after the answer.
    pub close: bool,
}

pub enum Outcome {
    /// s3p answers itself.
    Answer(Answer),
    /// A page of the virtual bucket (`listing::serve`, which calls the backends).
    List(ListParams),
    /// Sent on to a backend. A request with a body (writes) will say here how its body is framed.
    Forward(ObjectRoute),
    /// Refused, with this error.
    Refuse(S3Error),
}

/// An answer s3p writes itself.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

/// Where an object request goes: everything the backend request needs, checked.
pub struct ObjectRoute {
    pub backend: Arc<Backend>,
    /// Host header and TLS server name for the backend.
    pub host: String,
    pub sni: String,
    /// Backend path (bucket and key with virtual-host addressing folded in) and forwarded query.
    pub path_and_query: String,
    /// The client's allow-listed headers, the only ones sent (and signed) on.
    pub headers: Vec<(&'static str, String)>,
}

/// What s3p decided about a request, in the audit line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Authenticated and entitled (the answer may still be an error from the backend, e.g. NoSuchKey).
    Allowed,
    /// Refused by authentication or entitlement.
    Denied,
    /// Not decided: a malformed request, or s3p could not serve it.
    Failed,
}

/// The audit facts of a request, computed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditFacts {
    pub operation: &'static str,
    /// The display name of the key that verified, or that a failed signature claimed (when known).
    pub key_name: Option<String>,
    pub data_source: Option<String>,
    /// The virtual resource (`/immuta/<ds>/<key>`, or the listed prefix).
    pub resource: String,
    pub verdict: Verdict,
    /// The S3 error code of an error answer.
    pub reason: Option<&'static str>,
}

impl AuditFacts {
    pub fn new(resource: String) -> AuditFacts {
        AuditFacts {
            operation: "Unknown",
            key_name: None,
            data_source: None,
            resource,
            verdict: Verdict::Failed,
            reason: None,
        }
    }

    /// Records that the answer is this error: refusals are denied; an allowed request answered with an
    /// ordinary S3 negative (NoSuchKey, a failed precondition...) stays allowed; anything else failed.
    pub fn answered_with(&mut self, code: S3ErrorCode) {
        self.reason = Some(code.as_str());
        self.verdict = if is_denial(code) {
            Verdict::Denied
        } else if self.verdict == Verdict::Allowed
            && matches!(
                code,
                S3ErrorCode::NoSuchKey
                    | S3ErrorCode::InvalidRange
                    | S3ErrorCode::PreconditionFailed
            )
        {
            Verdict::Allowed
        } else {
            Verdict::Failed
        };
    }
}

/// A failed authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFailure {
    /// The key id the request claimed, when s3p knows it (the failure then counts against that key
    /// from this client; otherwise against the client alone).
    pub known_key_id: Option<String>,
    /// A refusal (bad signature, expired URL, unknown key), as opposed to a malformed request: only
    /// refusals count towards the throttle.
    pub is_denial: bool,
}

/// Errors that mean "you are not allowed" (as opposed to "your request is wrong" or "s3p failed").
pub fn is_denial(code: S3ErrorCode) -> bool {
    matches!(
        code,
        S3ErrorCode::AccessDenied
            | S3ErrorCode::InvalidAccessKeyId
            | S3ErrorCode::SignatureDoesNotMatch
            | S3ErrorCode::RequestTimeTooSkewed
            | S3ErrorCode::SlowDown
    )
}

/// The decision for one request.
pub fn decide(st: &State, req: &Incoming) -> Decision {
    let config = &st.config;
    let view = req.view;
    let mount = Mount {
        base_path: &config.base_path,
        bucket: &config.bucket,
    };
    let mut d = Deciding {
        audit: AuditFacts::new(request::resource_of(&mount, view.raw_path, req.host_bucket)),
        key: None,
        auth_failure: None,
        close: false,
    };
    // Header values are read as text (signatures, routing, framing): a value that is not UTF-8 is
    // refused before any reader, rather than seen by one and skipped by the next.
    if let Some(name) = view.headers.first_not_utf8() {
        return d.refuse(S3Error::invalid_argument(
            "Header values must be UTF-8.",
            name,
            "",
        ));
    }
    if let Some(e) = malformed_framing(view) {
        d.close = true;
        return d.refuse(e);
    }
    if view.method == "OPTIONS" {
        d.audit.operation = "CorsPreflight";
        return match cors_preflight(&config.cors, view) {
            Ok(answer) => d.answer(answer),
            Err(e) => d.refuse(e),
        };
    }

    let sigv2_resources = auth::sigv2_resources(view.raw_path, &config.base_path, req.host_bucket);
    let options = auth::AuthOptions {
        base_path_tolerance: config
            .signature_base_path_tolerance
            .then_some(config.base_path.as_str()),
    };
    let key = match auth::authenticate(&st.keys, view, &sigv2_resources, req.now, &options) {
        Ok(key) => key,
        Err(e) => {
            let known = auth::claimed_key_id(view).filter(|id| st.keys.knows(id));
            d.audit.key_name = known.and_then(|id| st.keys.name_of(id)).map(str::to_string);
            d.auth_failure = Some(AuthFailure {
                known_key_id: known.map(str::to_string),
                is_denial: is_denial(e.code),
            });
            return d.refuse(e);
        }
    };
    d.audit.key_name = Some(key.name.clone());
    d.key = Some(key.clone());

    let query = match Query::parse(view.raw_query) {
        Ok(q) => q,
        Err(e) => return d.refuse(e),
    };
    let op = match request::route(&mount, view.method, view.raw_path, &query, req.host_bucket) {
        Ok(op) => op,
        Err(e) => return d.refuse(e),
    };
    d.audit.operation = op.name();
    if !matches!(op, Operation::GetObject(_) | Operation::HeadObject(_)) {
        // Bucket-level operations need only a valid key; objects also need the entitlement (below).
        d.audit.verdict = Verdict::Allowed;
    }
    // As S3: a request that names an expected bucket owner other than the real one is refused.
    if view
        .header("x-amz-expected-bucket-owner")
        .is_some_and(|owner| owner != config.owner.id)
    {
        return d.refuse(S3Error::new(S3ErrorCode::AccessDenied));
    }
    let xml = |body: String| Answer {
        status: 200,
        headers: vec![("content-type", "application/xml".to_string())],
        body: Bytes::from(body),
    };
    match op {
        Operation::ListBuckets => d.answer(xml(crate::xml::list_buckets(
            &config.owner,
            &config.bucket,
        ))),
        Operation::GetBucketLocation => d.answer(xml(crate::xml::location(&config.region))),
        Operation::HeadBucket => d.answer(Answer {
            status: 200,
            headers: vec![("x-amz-bucket-region", config.region.clone())],
            body: Bytes::new(),
        }),
        // SigV2 signs no listing parameters (as in AWS): a presigned SigV2 listing URL could be
        // re-pointed at any prefix the key may list. Refused; SigV4 presigned URLs sign the query.
        Operation::ListObjects(_) if auth::is_sigv2_presigned(view) => d.refuse(S3Error::with_message(
            S3ErrorCode::AccessDenied,
            "Presigned SigV2 URLs cannot list: SigV2 does not sign listing parameters. Presign with SigV4.",
        )),
        Operation::ListObjects(params) => {
            // Audit the listed prefix; name its data source only when the key may read it.
            d.audit.resource = format!("/{}/{}", config.bucket, params.prefix);
            d.audit.data_source = params
                .prefix
                .split_once('/')
                .and_then(|(ds, _)| policy::readable_data_source(config, &key, ds).ok())
                .map(|ds| ds.name.clone());
            d.finish(Outcome::List(params))
        }
        Operation::GetObject(vkey) | Operation::HeadObject(vkey) => {
            d.audit.data_source = Some(vkey.data_source.clone());
            match object_route(st, &key, &vkey, view, &query) {
                Ok(route) => {
                    d.audit.verdict = Verdict::Allowed;
                    d.finish(Outcome::Forward(route))
                }
                Err(e) => d.refuse(e),
            }
        }
    }
}

impl Decision {
    /// A refusal decided before anything about the request is known.
    pub fn refused(e: S3Error) -> Decision {
        Decision {
            outcome: Outcome::Refuse(e),
            audit: AuditFacts::new(String::new()),
            key: None,
            auth_failure: None,
            close: false,
        }
    }
}

/// A decision being made: everything but its outcome.
struct Deciding {
    audit: AuditFacts,
    key: Option<Arc<ApiKey>>,
    auth_failure: Option<AuthFailure>,
    close: bool,
}

impl Deciding {
    fn finish(self, outcome: Outcome) -> Decision {
        Decision {
            outcome,
            audit: self.audit,
            key: self.key,
            auth_failure: self.auth_failure,
            close: self.close,
        }
    }

    fn answer(self, answer: Answer) -> Decision {
        self.finish(Outcome::Answer(answer))
    }

    fn refuse(self, e: S3Error) -> Decision {
        self.finish(Outcome::Refuse(e))
    }
}

/// The backend request for a GET or HEAD of `vkey`, once the key may read its data source.
fn object_route(
    st: &State,
    key: &ApiKey,
    vkey: &namespace::VirtualKey,
    view: &RequestView,
    query: &Query,
) -> Result<ObjectRoute, S3Error> {
    let ds = policy::readable_data_source(&st.config, key, &vkey.data_source)?;
    let obj = namespace::to_backend(ds, vkey)?;
    let backend = st
        .backends
        .get(&obj.backend)
        .ok_or_else(|| S3Error::new(S3ErrorCode::InternalError))?;
    let mut headers = Vec::new();
    for (name, value) in view.headers.iter() {
        let Some(name) = forwarded_request_header(name) else {
            continue;
        };
        // Forwarded headers are signed for the backend as text: refuse what is not visible ASCII,
        // rather than sign a copy the backend would reject as a bad signature.
        if !value
            .bytes()
            .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
        {
            return Err(S3Error::invalid_argument(
                "Header values must be visible ASCII.",
                name,
                "",
            ));
        }
        headers.push((name, value.to_string()));
    }
    let target = backend.object_target(&obj.bucket, &obj.key);
    let mut path_and_query = target.path;
    let mut sep = '?';
    for (n, v) in query
        .iter()
        .filter(|(n, _)| request::forwarded_object_param(n))
    {
        path_and_query.push(sep);
        path_and_query.push_str(n);
        path_and_query.push('=');
        path_and_query.push_str(&encode_query_value(v));
        sep = '&';
    }
    Ok(ObjectRoute {
        backend: backend.clone(),
        host: target.host,
        sni: target.sni,
        path_and_query,
        headers,
    })
}

/// Request headers of an object GET/HEAD that are passed to the backend (and signed), by their
/// lowercase name.
pub fn forwarded_request_header(name: &str) -> Option<&'static str> {
    const FORWARDED: [&str; 9] = [
        "range",
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

/// The S3 error a backend error status becomes. The backend's body is never read: it names the backend's
/// bucket and keys, and its code would add nothing a client can act on beyond the status.
pub fn error_for_backend_status(status: u16) -> S3Error {
    let code = match status {
        400 => S3ErrorCode::InvalidRequest,
        403 => S3ErrorCode::AccessDenied,
        404 => S3ErrorCode::NoSuchKey,
        405 => S3ErrorCode::MethodNotAllowed,
        412 => S3ErrorCode::PreconditionFailed,
        416 => S3ErrorCode::InvalidRange,
        501 => S3ErrorCode::NotImplemented,
        503 => S3ErrorCode::SlowDown,
        s if s >= 500 => S3ErrorCode::ServiceUnavailable,
        // A redirect means the backend is misconfigured (wrong region or endpoint): never relay it.
        s if s < 400 => S3ErrorCode::InternalError,
        _ => S3ErrorCode::InvalidRequest,
    };
    S3Error::new(code)
}

/// Answers a CORS preflight (unauthenticated, as S3 does): only GET and HEAD, from allowed origins. A
/// preflight without an Origin is a bad request (400), as in S3.
fn cors_preflight(cors: &Cors, view: &RequestView) -> Result<Answer, S3Error> {
    let Some(origin) = view.header("origin") else {
        return Err(S3Error::with_message(
            S3ErrorCode::BadRequest,
            "Insufficient information. Origin request header needed.",
        ));
    };
    let method = view.header("access-control-request-method").unwrap_or("");
    if !cors.allows(origin) || (method != "GET" && method != "HEAD") {
        return Err(S3Error::with_message(
            S3ErrorCode::AccessDenied,
            "CORSResponse: This CORS request is not allowed.",
        ));
    }
    let mut headers = vec![
        ("access-control-allow-origin", origin.to_string()),
        ("access-control-allow-methods", "GET, HEAD".to_string()),
        ("access-control-max-age", cors.max_age_s.to_string()),
        (
            "vary",
            "Origin, Access-Control-Request-Headers, Access-Control-Request-Method".to_string(),
        ),
    ];
    if let Some(h) = view.header("access-control-request-headers") {
        headers.push(("access-control-allow-headers", h.to_string()));
    }
    Ok(Answer {
        status: 200,
        headers,
        body: Bytes::new(),
    })
}

/// Requests s3p refuses before anything else, for how they are framed:
/// - a GET or HEAD with a body (s3p forwards no body on reads, and will not pass one on unsigned);
/// - `Connection` tokens other than keep-alive, close and TE: pingora would strip the named headers as
///   hop-by-hop (`Connection: host` removes Host), so the request would no longer be the one signed.
fn malformed_framing(view: &RequestView) -> Option<S3Error> {
    let has_body = view.header("transfer-encoding").is_some()
        || view.header_values("content-length").any(|v| v != "0");
    if has_body && (view.method == "GET" || view.method == "HEAD") {
        return Some(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "GET and HEAD requests must not carry a body.",
        ));
    }
    let mut tokens = 0;
    for value in view.header_values("connection") {
        for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            tokens += 1;
            let known = ["keep-alive", "close", "te"]
                .iter()
                .any(|k| token.eq_ignore_ascii_case(k));
            if !known || tokens > 3 {
                return Some(S3Error::invalid_argument(
                    "The Connection header may only name keep-alive, close or TE.",
                    "Connection",
                    "",
                ));
            }
        }
    }
    None
}

#[cfg(test)]
#[path = "gateway_tests.rs"]
mod tests;
