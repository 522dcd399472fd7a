//! The decision: what s3p does with one request, worked out from the request, the configuration and the
//! clock alone (no I/O). `decide` authenticates, routes into the virtual namespace and checks the key's
//! entitlement; its [`Decision`] names the outcome and the audit facts, once. The pingora glue
//! (`proxy.rs`) carries the decision out: it answers, lists, or forwards to a backend.
//!
//! What stays in the glue is what needs shared run-time state: the throttle of failed authentications,
//! the in-flight limits, draining.

mod allow;
mod answer;
mod audit;
mod route;
mod sts;
mod write;

pub use crate::upload::answers::Rewrite;
pub use allow::{forwarded_request_header, forwarded_response_header, forwarded_write_header};
pub use answer::{backend_error_body, backend_head, body_arrived, BackendHead, WithBody};
pub use audit::{is_backend_failure, is_denial, AuditFacts, Verdict};
pub use route::{
    expects_continue, route_to, BodyHold, ObjectRoute, MAX_VERIFIED_FIRST_BODY, SMALL_SIGNED_BODY,
};
pub use sts::{decide_sts, render_error as sts_error, web_identity_issuer, StsCall, StsDecision};
pub use write::{MAX_COMPLETE_BODY, MAX_KEY_BYTES};

use crate::auth;

use crate::config::{ApiKey, Cors};
use crate::error::{S3Error, S3ErrorCode};
use crate::listing::params::ListParams;
use crate::namespace;
use crate::policy;
use crate::request::{self, Mount, Operation};
use crate::state::State;
use crate::upload::BodyChecks;
use crate::wire::{Query, RequestView};
use allow::allowed_headers;
use bytes::Bytes;

use std::sync::Arc;
use std::time::SystemTime;
use write::{delete_body_checks, write_route};

/// What s3p knows of a request when it decides.
pub struct Incoming<'a> {
    pub view: &'a RequestView<'a>,
    /// The bucket named by the Host header (virtual-host addressing).
    pub host_bucket: Option<&'a str>,
    /// `https` or `http`, as the client reached s3p: the TLS listener, or `X-Forwarded-Proto` from a
    /// trusted proxy (the glue decides; a header from anyone else is not believed).
    pub scheme: &'a str,
    /// A key the governance service vouched for, for the credential the request claims (looked up by
    /// the glue before the decision: `server::entitlements`).
    pub resolved: Option<Arc<ApiKey>>,
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
    /// Sent on to a backend (with the request's body, when the route has a payload). Boxed: a route is
    /// several times larger than any other outcome.
    Forward(Box<ObjectRoute>),
    /// ListMultipartUploads: s3p asks the backends of the data sources the key may write
    /// (`upload::uploads_list::serve`).
    ListUploads(crate::upload::uploads_list::UploadsParams),
    /// s3p reads the request's body whole first (at most `limit` bytes, held in the body budget), then
    /// hands it to [`body_arrived`], which says what to do with it: a DeleteObjects batch
    /// (`upload::delete::serve`), or a forward whose small body was verified before the backend sees it.
    NeedsBody(NeedsBody),
    /// Refused, with this error.
    Refuse(S3Error),
}

/// A body s3p reads whole before it goes on.
pub struct NeedsBody {
    /// The most bytes read (also what is reserved in the body budget).
    pub limit: u64,
    /// The client asked for `100 Continue` before it sends the body.
    pub expect_continue: bool,
    pub then: AfterBody,
}

/// What a body read whole is for.
pub enum AfterBody {
    /// A DeleteObjects request, whose body must satisfy these checks.
    DeleteObjects(BodyChecks),
    /// A forward whose body is verified first (`BodyHold::VerifiedFirst`).
    Forward(Box<ObjectRoute>),
    /// An STS call (its form body), with the key the governance service vouched for, if any.
    Sts(Option<Arc<ApiKey>>),
}

/// An answer s3p writes itself.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
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

/// The decision for one request.
pub fn decide(st: &State, req: &Incoming) -> Decision {
    let config = &st.config;
    let view = req.view;
    let mount = Mount {
        base_path: &config.base_path,
        bucket: &config.bucket,
    };
    // The path read against the base path once, for every reader below (SigV4 signs it as sent).
    let path = mount.path(view.raw_path);
    let mut d = Deciding {
        audit: AuditFacts::new(request::resource_at(&path, req.host_bucket)),
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
    // The STS API, outside the S3 API: decided once its form body is read (`decide_sts`).
    if sts::is_sts_path(config, view.raw_path) {
        d.audit.operation = "STS";
        if !matches!(view.method, "GET" | "POST") {
            return d.refuse(S3Error::new(S3ErrorCode::MethodNotAllowed));
        }
        return match sts::body_limit(view) {
            Ok(limit) => d.finish(Outcome::NeedsBody(NeedsBody {
                limit,
                expect_continue: expects_continue(view),
                then: AfterBody::Sts(req.resolved.clone()),
            })),
            Err(e) => d.refuse(e),
        };
    }
    if view.method == "OPTIONS" {
        d.audit.operation = "CorsPreflight";
        return match cors_preflight(&config.cors, view) {
            Ok(answer) => d.answer(answer),
            Err(e) => d.refuse(e),
        };
    }

    let sigv2_resources = || auth::sigv2_resources(&path, req.host_bucket);
    let options = auth::AuthOptions {
        base_path_tolerance: config.signature_base_path_tolerance.then_some(path),
    };
    let keys = st.keys.with(req.resolved.as_ref());
    let signed = match auth::authenticate(keys, view, &sigv2_resources, req.now, &options) {
        Ok(signed) => signed,
        Err(e) => {
            let known = auth::claimed_key_id(view).filter(|id| keys.knows(id));
            d.audit.key_name = known.and_then(|id| keys.name_of(id)).map(str::to_string);
            d.auth_failure = Some(AuthFailure {
                known_key_id: known.map(str::to_string),
                is_denial: is_denial(e.code),
            });
            return d.refuse(e);
        }
    };
    let key = &signed.key;
    d.audit.key_name = Some(key.name.clone());
    d.audit.session = key.session.as_ref().map(|s| s.label.clone());
    d.key = Some(key.clone());

    let query = match Query::parse(view.raw_query) {
        Ok(q) => q,
        Err(e) => return d.refuse(e),
    };
    let op = match request::route(&mount, view.method, &path, &query, req.host_bucket) {
        Ok(op) => op,
        Err(e) => return d.refuse(e),
    };
    // A copy source makes a PUT a copy; on anything else it is refused, audited as what was asked.
    // (Only writes look the header up: reads never forward it.)
    let op = match op {
        op if op.written_object().is_none() || view.header("x-amz-copy-source").is_none() => op,
        op => match op.with_copy_source() {
            Ok(copy) => copy,
            Err(op) => {
                d.audit.operation = op.name();
                if let Some(vkey) = op.written_object().or(op.read_object()) {
                    d.audit.data_source = Some(vkey.data_source.clone());
                }
                return d.refuse(S3Error::invalid_argument(
                    "x-amz-copy-source is only for CopyObject and UploadPartCopy.",
                    "x-amz-copy-source",
                    "",
                ));
            }
        },
    };
    d.audit.operation = op.name();
    if op.read_object().is_none() && op.written_object().is_none() {
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
        Operation::ListBuckets => {
            d.answer(xml(crate::xml::list_buckets(&config.owner, &config.bucket)))
        }
        Operation::GetBucketLocation => d.answer(xml(crate::xml::location(&config.region))),
        Operation::HeadBucket => d.answer(Answer {
            status: 200,
            headers: vec![("x-amz-bucket-region", config.region.clone())],
            body: Bytes::new(),
        }),
        // SigV2 signs no listing parameters (as in AWS): a SigV2 listing, presigned or in a header,
        // could be re-pointed at any prefix the key may list by whoever holds the URL or saw the
        // request. Refused in both forms alike; SigV4 signs the query.
        Operation::ListObjects(_) if signed.scheme.is_sigv2() => d.refuse(sigv2_cannot_list()),
        Operation::ListObjects(params) => {
            // Audit the listed prefix; name its data source only when the key may read it.
            d.audit.resource = format!("/{}/{}", config.bucket, params.prefix);
            d.audit.data_source = params
                .prefix
                .split_once('/')
                .and_then(|(ds, _)| policy::readable_data_source(config, key, ds).ok())
                .map(|ds| ds.name.clone());
            d.finish(Outcome::List(params))
        }
        // As for object listings: SigV2 signs none of the listing's parameters.
        Operation::ListMultipartUploads(_) if signed.scheme.is_sigv2() => {
            d.refuse(sigv2_cannot_list())
        }
        Operation::ListMultipartUploads(params) => d.finish(Outcome::ListUploads(params)),
        // Each key is authorised on its own when the body is read, but a key that may write nothing
        // is refused before: its body would only hold memory.
        Operation::DeleteObjects if policy::writable_data_sources(config, key).is_empty() => {
            d.refuse(S3Error::new(S3ErrorCode::AccessDenied))
        }
        Operation::DeleteObjects => match delete_body_checks(view, &signed) {
            Ok(checks) => d.finish(Outcome::NeedsBody(NeedsBody {
                limit: checks.length,
                expect_continue: expects_continue(view),
                then: AfterBody::DeleteObjects(checks),
            })),
            Err(e) => d.refuse(e),
        },
        Operation::GetObjectAcl(vkey) => {
            d.audit.data_source = Some(vkey.data_source.clone());
            match policy::readable_data_source(config, key, &vkey.data_source)
                .and_then(|ds| namespace::to_backend(ds, &vkey))
            {
                Ok(_) => {
                    d.audit.verdict = Verdict::Allowed;
                    d.answer(xml(crate::xml::object_acl(&config.owner)))
                }
                Err(e) => d.refuse(e),
            }
        }
        Operation::GetObject(vkey)
        | Operation::HeadObject(vkey)
        | Operation::GetObjectTagging(vkey)
        | Operation::GetObjectAttributes(vkey) => {
            d.audit.data_source = Some(vkey.data_source.clone());
            match object_route(st, key, vkey, view, &query) {
                Ok(route) => {
                    d.audit.verdict = Verdict::Allowed;
                    d.finish(Outcome::Forward(Box::new(route)))
                }
                Err(e) => d.refuse(e),
            }
        }
        write => {
            let Some(vkey) = write.written_object() else {
                return d.refuse(S3Error::new(S3ErrorCode::MethodNotAllowed));
            };
            d.audit.data_source = Some(vkey.data_source.clone());
            match write_route(st, &signed, &write, view, &query, req.scheme) {
                Ok(route) => {
                    d.audit.verdict = Verdict::Allowed;
                    match route.body_hold {
                        BodyHold::VerifiedFirst(limit) => d.finish(Outcome::NeedsBody(NeedsBody {
                            limit,
                            expect_continue: route.expect_continue,
                            then: AfterBody::Forward(Box::new(route)),
                        })),
                        _ => d.finish(Outcome::Forward(Box::new(route))),
                    }
                }
                Err(e) => d.refuse(e),
            }
        }
    }
}

fn sigv2_cannot_list() -> S3Error {
    S3Error::with_message(
        S3ErrorCode::AccessDenied,
        "SigV2 cannot list: it does not sign listing parameters. Sign listings with SigV4.",
    )
}

impl Decision {
    /// A request whose path is not UTF-8: nothing else about it is read.
    pub fn invalid_uri() -> Decision {
        Decision::refused(S3Error::new(S3ErrorCode::InvalidURI))
    }

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
    vkey: namespace::VirtualKey,
    view: &RequestView,
    query: &Query,
) -> Result<ObjectRoute, S3Error> {
    let ds = policy::readable_data_source(&st.config, key, &vkey.data_source)?;
    let obj = namespace::to_backend(ds, &vkey)?;
    let headers = allowed_headers(view, forwarded_request_header)?;
    let mut params: Vec<(&str, String)> = Vec::new();
    for (n, v) in query
        .iter()
        .filter(|(n, _)| request::forwarded_object_param(n))
    {
        let v = match n {
            "versionId" => st.versions.open(&vkey.data_source, &vkey.key, v)?,
            _ => v.to_string(),
        };
        params.push((n, v));
    }
    let mut route = route_to(st, &obj, &params, headers)?;
    // Moved, not cloned: every GET passes here.
    route.object = Some(vkey);
    Ok(route)
}

/// The methods a browser may use from an allowed origin.
const CORS_METHODS: [&str; 5] = ["GET", "HEAD", "PUT", "POST", "DELETE"];

/// Answers a CORS preflight (unauthenticated, as S3 does): the methods s3p serves (uploads and deletes
/// from browsers with presigned URLs included; each request is still authorised), from allowed origins. A
/// preflight without an Origin is a bad request (400), as in S3.
fn cors_preflight(cors: &Cors, view: &RequestView) -> Result<Answer, S3Error> {
    let Some(origin) = view.header("origin") else {
        return Err(S3Error::with_message(
            S3ErrorCode::BadRequest,
            "Insufficient information. Origin request header needed.",
        ));
    };
    let method = view.header("access-control-request-method").unwrap_or("");
    if !cors.allows(origin) || !CORS_METHODS.contains(&method) {
        return Err(S3Error::with_message(
            S3ErrorCode::AccessDenied,
            "CORSResponse: This CORS request is not allowed.",
        ));
    }
    let mut headers = vec![
        ("access-control-allow-origin", origin.to_string()),
        ("access-control-allow-methods", CORS_METHODS.join(", ")),
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
mod tests;

/// Routes for the answer side's tests, to a backend that is never called.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub fn route_for(rewrite: Rewrite, not_found: S3ErrorCode) -> ObjectRoute {
        let yaml = r#"
token_secret: 0123456789abcdef0123456789abcdef
backends:
  b: { endpoint: "http://127.0.0.1:1", access_key_id: a, secret_access_key: s }
data_sources:
  sandbox: { backend: b, bucket: bucket-c, writable: true }
"#;
        let config = crate::config::Config::from_yaml_str(yaml, &|_| None).expect("test config");
        let st = State::new(config).expect("state");
        let obj = namespace::BackendObject {
            backend: "b".into(),
            bucket: "bucket-c".into(),
            key: "k".into(),
        };
        let mut route = route_to(&st, &obj, &[], Vec::new()).expect("route");
        route.rewrite = rewrite;
        route.not_found = not_found;
        route
    }
}
