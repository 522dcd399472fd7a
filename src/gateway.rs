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
use crate::upload::{self, BodyChecks, Payload};
use crate::wire::Query;
use bytes::Bytes;
use serde::Serialize;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

/// What s3p knows of a request when it decides.
pub struct Incoming<'a> {
    pub view: &'a RequestView<'a>,
    /// The bucket named by the Host header (virtual-host addressing).
    pub host_bucket: Option<&'a str>,
    /// `https` or `http`, as the client reached s3p: the TLS listener, or `X-Forwarded-Proto` from a
    /// trusted proxy (the glue decides; a header from anyone else is not believed).
    pub scheme: &'a str,
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
    /// DeleteObjects: s3p reads the body (checked as described) and sends each backend its batch
    /// (`upload::delete::serve`).
    DeleteObjects(BodyChecks),
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
    /// The client's allow-listed headers, the only ones sent (and signed) on, by lowercase name (a
    /// user-metadata name is the client's own, the others are s3p's constants).
    pub headers: Vec<(Cow<'static, str>, String)>,
    /// The request body sent on, and how it is framed; `None`: no body.
    pub payload: Option<Payload>,
    /// The client asked for `100 Continue` before it sends the body.
    pub expect_continue: bool,
    /// The backend's answer body is rewritten into virtual terms (multipart answers name the backend's
    /// bucket, key and upload id).
    pub rewrite: Rewrite,
    /// What a backend 404 means: no such key, or (for the parts of an upload) no such upload.
    pub not_found: S3ErrorCode,
    /// What s3p holds of the request body (counted in `limits.max_buffered_body_bytes`).
    pub body_hold: BodyHold,
    /// A CopyObject or UploadPartCopy: the backend copies up to 5 GiB for a few hundred bytes, so
    /// copies are limited per key and per replica.
    pub copy: bool,
    /// The virtual object the request is about: the backend's version ids in the answer are sealed
    /// for it.
    pub object: Option<namespace::VirtualKey>,
}

/// What s3p holds of a request body, before or while it passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyHold {
    /// Streams through; nothing held.
    None,
    /// Streams through, but the backend reads it whole before it answers (CompleteMultipartUpload):
    /// this announced length is reserved while it passes, and it must arrive within the body deadline.
    Counted(u64),
    /// Read whole (at most this many bytes) and verified before the backend request starts: a small
    /// signed-chunk body, whose last byte could not otherwise be kept back (a zero-length body has none,
    /// so its backend request would complete before its chunk signature is checked), or a short
    /// CompleteMultipartUpload body (which must name a part).
    VerifiedFirst(u64),
}

/// Signed-chunk bodies up to this decoded length are verified whole before the backend sees a byte.
pub const SMALL_SIGNED_BODY: u64 = 32 << 10;
/// ... and at most this encoded length (pingora replays a body it read up to 64 KiB).
pub const MAX_VERIFIED_FIRST_BODY: u64 = 64 << 10;

/// How a backend's successful answer body is rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// Passed on as it is (objects, copy results: they name no backend bucket or key).
    None,
    /// CreateMultipartUpload: the backend's upload id is sealed for this object.
    Initiate { data_source: String, key: String },
    /// CompleteMultipartUpload: the virtual location, bucket and key replace the backend's.
    Complete { location: String, key: String },
    /// ListParts: the virtual key, the client's upload id and s3p's owner replace the backend's.
    ListParts { key: String, upload_id: String },
    /// CopyObject / UploadPartCopy: s3p writes the result from the backend's ETag and date (a backend
    /// may answer 200 with an `<Error>` naming its bucket and key inside).
    Copy { part: bool },
}

/// The largest CompleteMultipartUpload body accepted: what S3's 10,000 parts need, at 256 bytes a part
/// (a part with an ETag and the longest checksum, SHA-256, takes about 170; SDKs add no indentation),
/// plus the envelope. Backends read these bodies whole: they also count in the process-wide budget.
pub const MAX_COMPLETE_BODY: u64 = 10_000 * 256 + 4096;

/// S3's longest key, in UTF-8 bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// What s3p decided about a request, in the audit line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Authenticated and entitled (the answer may still be an error from the backend, e.g. NoSuchKey).
    Allowed,
    /// Refused by authentication or entitlement.
    Denied,
    /// Not decided: a malformed request, or s3p could not serve it.
    Failed,
    /// Allowed, but the backend failed s3p: it refused s3p's own credentials, failed (5xx), could not
    /// be reached, or answered what s3p cannot read. Not the client's doing: never audited as denied.
    BackendFailed,
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
    /// The answer is the backend's (see `backend_answered`).
    pub backend_answered: bool,
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
            backend_answered: false,
        }
    }

    /// Records that the answer is this error: refusals are denied; an allowed request answered with an
    /// ordinary S3 negative (NoSuchKey, a failed precondition...) stays allowed; anything else failed.
    pub fn answered_with(&mut self, code: S3ErrorCode) {
        self.reason = Some(code.as_str());
        if self.backend_answered {
            // The verdict on the backend's answer stands, whatever s3p then writes for it.
            return;
        }
        self.verdict = if is_denial(code) {
            Verdict::Denied
        } else if self.verdict == Verdict::Allowed
            && matches!(
                code,
                S3ErrorCode::NoSuchKey
                    | S3ErrorCode::NoSuchUpload
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

impl AuditFacts {
    /// Records the answer a backend gave an allowed request (`code` from `error::backend_answer`): an
    /// S3 negative about the client's request (NoSuchKey, InvalidPart, a failed precondition...) keeps
    /// the request allowed; the backend refusing or failing s3p itself is a backend failure.
    pub fn backend_answered(&mut self, code: S3ErrorCode) {
        self.reason = Some(code.as_str());
        self.backend_answered = true;
        if self.verdict == Verdict::Allowed && is_backend_failure(code) {
            self.verdict = Verdict::BackendFailed;
        }
    }
}

/// Backend answers that say the backend failed s3p rather than that the client asked something wrong.
pub fn is_backend_failure(code: S3ErrorCode) -> bool {
    code == S3ErrorCode::AccessDenied || code == S3ErrorCode::InternalError || code.status() >= 500
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
        Operation::ListObjects(_) if auth::is_sigv2(view) => d.refuse(sigv2_cannot_list()),
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
        // As for object listings: SigV2 signs none of the listing's parameters.
        Operation::ListMultipartUploads(_) if auth::is_sigv2(view) => d.refuse(sigv2_cannot_list()),
        Operation::ListMultipartUploads(params) => d.finish(Outcome::ListUploads(params)),
        // Each key is authorised on its own when the body is read, but a key that may write nothing
        // is refused before: its body would only hold memory.
        Operation::DeleteObjects if policy::writable_data_sources(config, &key).is_empty() => {
            d.refuse(S3Error::new(S3ErrorCode::AccessDenied))
        }
        Operation::DeleteObjects => match delete_body_checks(view, &key) {
            Ok(checks) => d.finish(Outcome::DeleteObjects(checks)),
            Err(e) => d.refuse(e),
        },
        Operation::GetObjectAcl(vkey) => {
            d.audit.data_source = Some(vkey.data_source.clone());
            match policy::readable_data_source(config, &key, &vkey.data_source)
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
            match object_route(st, &key, &vkey, view, &query) {
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
            if view.header("x-amz-copy-source").is_some() {
                // Audited as the operation carried out: only PutObject and UploadPart copy.
                match write {
                    Operation::UploadPart(..) => d.audit.operation = "UploadPartCopy",
                    Operation::PutObject(_) => d.audit.operation = "CopyObject",
                    _ => {
                        return d.refuse(S3Error::invalid_argument(
                            "x-amz-copy-source is only for CopyObject and UploadPartCopy.",
                            "x-amz-copy-source",
                            "",
                        ))
                    }
                }
            }
            match write_route(st, &key, &write, view, &query, req.scheme) {
                Ok(route) => {
                    d.audit.verdict = Verdict::Allowed;
                    d.finish(Outcome::Forward(Box::new(route)))
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
    route.object = Some(vkey.clone());
    Ok(route)
}

/// The route to a backend object: its backend, host, and path with `params` as the query.
fn route_to(
    st: &State,
    obj: &namespace::BackendObject,
    params: &[(&str, String)],
    headers: Vec<(Cow<'static, str>, String)>,
) -> Result<ObjectRoute, S3Error> {
    let backend = st
        .backends
        .get(&obj.backend)
        .ok_or_else(|| S3Error::new(S3ErrorCode::InternalError))?;
    let target = backend.object_target(&obj.bucket, &obj.key);
    let mut path_and_query = target.path;
    let mut sep = '?';
    for (n, v) in params {
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
        payload: None,
        expect_continue: false,
        rewrite: Rewrite::None,
        not_found: S3ErrorCode::NoSuchKey,
        body_hold: BodyHold::None,
        copy: false,
        object: None,
    })
}

/// The client's headers that `allow` names (by their lowercase name), checked to be signable.
fn allowed_headers(
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
const USER_METADATA: &str = "x-amz-meta-";

/// The backend request for a write, once the key may write the data source.
fn write_route(
    st: &State,
    key: &ApiKey,
    op: &Operation,
    view: &RequestView,
    query: &Query,
    scheme: &str,
) -> Result<ObjectRoute, S3Error> {
    let config = &st.config;
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
        Operation::PutObject(_) | Operation::CreateMultipartUpload(_)
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
        Operation::PutObject(_) | Operation::UploadPart(..) if copy_source.is_some() => {
            if let Operation::UploadPart(_, part) = op {
                params.push(("partNumber", part.number.to_string()));
                params.push(("uploadId", open_upload(&part.upload_id)?));
            }
            refuse_body(view)?;
            rewrite = Rewrite::Copy {
                part: matches!(op, Operation::UploadPart(..)),
            };
            let source = copy_source.unwrap_or_default();
            copy = true;
            headers.push((
                Cow::Borrowed("x-amz-copy-source"),
                copy_source_route(st, key, &obj, source)?,
            ));
            headers.extend(allowed_headers(view, forwarded_copy_header)?);
        }
        Operation::PutObject(_) => payload = Some(upload::payload_of(view, key)?),
        Operation::UploadPart(_, part) => {
            params.push(("partNumber", part.number.to_string()));
            params.push(("uploadId", open_upload(&part.upload_id)?));
            payload = Some(upload::payload_of(view, key)?);
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
            let body = upload::payload_of(view, key)?;
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
    route.expect_continue = payload.is_some()
        && view
            .header("expect")
            .is_some_and(|e| e.trim().eq_ignore_ascii_case("100-continue"));
    route.payload = payload;
    route.rewrite = rewrite;
    if matches!(
        op,
        Operation::UploadPart(..)
            | Operation::CompleteMultipartUpload(..)
            | Operation::AbortMultipartUpload(..)
            | Operation::ListParts(..)
    ) && copy_source.is_none()
    {
        route.not_found = S3ErrorCode::NoSuchUpload;
    }
    Ok(route)
}

/// Whether a signed-chunk body is read and verified whole before the backend request starts.
fn verified_first(plan: &upload::chunked::ChunkedPlan) -> Result<BodyHold, S3Error> {
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
fn delete_body_checks(view: &RequestView, key: &ApiKey) -> Result<BodyChecks, S3Error> {
    let (length, sha256) = match upload::payload_of(view, key)? {
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
    // s3p's keys have no session tokens: a token a client sends anyway is not a credential here.
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
fn forwarded_copy_header(name: &str) -> Option<&'static str> {
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
#[path = "gateway_tests.rs"]
mod tests;
