//! The pingora glue: a thin `ProxyHttp` that walks each request through the pure modules.
//!
//! request_filter:  view -> auth::authenticate -> request::route -> policy -> (answer here | object target)
//! upstream_peer / upstream_request_filter:  connect to the data source's backend, re-sign with SigV4
//! upstream_response_filter / body filter:  keep allow-listed headers; rewrite backend errors into the
//!                                          virtual namespace
//! logging:  one audit line and the metrics of the request

use crate::auth::{self, KeyStore, RequestView};
use crate::backend::{encode_query_value, Backends};
use crate::config::Config;
use crate::error::{S3Error, S3ErrorCode};
use crate::listing::merge::{list_page, CallBudget, ListQuery, Position};
use crate::listing::params::{ListParams, ListVersion};
use crate::listing::token::{TokenBinding, TokenSealer};
use crate::namespace;
use crate::ops::audit::{AuditLog, AuditRecord, Decision};
use crate::ops::guard::{AuthThrottle, ConcurrencyLimits, FailureSubject, Slot};
use crate::ops::metrics::Metrics;
use crate::policy;
use crate::request::{self, Mount, Operation, Query};
use crate::xml;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Everything a request needs, built once from a validated configuration.
pub struct State {
    pub config: Config,
    pub keys: KeyStore,
    pub backends: Backends,
    pub tokens: TokenSealer,
}

impl State {
    /// Resolves every backend's host name (DNS, a blocking call).
    pub fn new(config: Config) -> std::result::Result<State, String> {
        let backends = Backends::new(&config)?;
        Ok(State::with_backends(config, backends))
    }

    /// With backends at already resolved addresses (see `ops::resolve`).
    pub fn at(
        config: Config,
        addresses: &crate::backend::Addresses,
    ) -> std::result::Result<State, String> {
        let backends = Backends::at(&config, addresses)?;
        Ok(State::with_backends(config, backends))
    }

    fn with_backends(config: Config, backends: Backends) -> State {
        State {
            keys: KeyStore::new(&config),
            backends,
            tokens: TokenSealer::rotated(
                config.token_secret.expose(),
                &config
                    .previous_token_secrets
                    .iter()
                    .map(|s| s.expose())
                    .collect::<Vec<_>>(),
            ),
            config,
        }
    }
}

/// The configuration-derived state, swapped as a whole on reload. Each request keeps the state it started
/// with, so a reload never changes a request half-way.
pub type SharedState = Arc<ArcSwap<State>>;

/// What lives across reloads: metrics, the audit log, the authentication throttle.
pub struct Ops {
    pub metrics: Metrics,
    pub audit: AuditLog,
    pub throttle: AuthThrottle,
    /// Requests in flight per key and per client address.
    pub concurrency: Arc<ConcurrencyLimits>,
    /// Set on SIGTERM/SIGINT: `/ready` answers 503 and every answer closes its connection, while requests
    /// are still served for the drain delay.
    pub unready: std::sync::atomic::AtomicBool,
    /// Set once the drain delay is over: new requests are refused while in-flight ones finish.
    pub draining: std::sync::atomic::AtomicBool,
}

/// A request's place in the in-flight count.
pub struct InFlight(Arc<Ops>);

impl InFlight {
    /// Counts a request in; returns the guard and the count including this request.
    fn enter(ops: &Arc<Ops>) -> (InFlight, i64) {
        let count = ops.metrics.enter();
        (InFlight(ops.clone()), count)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics.leave();
    }
}

pub struct S3Proxy {
    pub state: SharedState,
    pub ops: Arc<Ops>,
}

/// Where an object request goes, decided in `request_filter`.
#[derive(Debug)]
pub struct ObjectRoute {
    backend: String,
    host: String,
    sni: String,
    path_and_query: String,
    resource: String,
}

/// Per-request state.
pub struct RequestCtx {
    state: Arc<State>,
    request_id: String,
    client: String,
    data_source: Option<String>,
    backend_name: Option<String>,
    decision: Decision,
    /// Holds this request's place in the in-flight count; dropping it (whatever way the request ends,
    /// a panic included) gives the place back.
    in_flight: Option<InFlight>,
    started: Instant,
    key_name: Option<String>,
    operation: &'static str,
    target: String,
    object: Option<ObjectRoute>,
    /// A backend error answer, replaced by s3p's own error in virtual terms.
    backend_error: Option<S3Error>,
    error_code: Option<&'static str>,
    upstream_started: Option<Instant>,
    /// The request's Origin, when CORS allows it (echoed in Access-Control-Allow-Origin).
    cors_origin: Option<String>,
    backend_latency: Option<Duration>,
    is_head: bool,
    /// The bucket named by the Host header (virtual-host addressing), read in request_filter.
    host_bucket: Option<String>,
    /// The client's address after `trusted_proxies` (see `client_addr`).
    client_ip: Option<std::net::IpAddr>,
    /// Places held in the per-client and per-key in-flight counts.
    client_slot: Option<Slot>,
    key_slot: Option<Slot>,
    /// Body bytes handed out so far, and the last point the minimum client rate was checked at.
    body_sent: u64,
    rate_mark: Option<(Instant, u64)>,
}

fn new_request_id() -> String {
    format!("{:016X}", rand::random::<u64>())
}

/// Response headers of an object that are passed to the client. Everything else (backend request ids,
/// server names, redirects, bucket regions...) stays behind.
fn forwarded_response_header(name: &str) -> bool {
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

/// Request headers of an object GET/HEAD that are passed to the backend (and signed).
fn forwarded_request_header(name: &str) -> bool {
    matches!(
        name,
        "range"
            | "if-match"
            | "if-none-match"
            | "if-modified-since"
            | "if-unmodified-since"
            | "x-amz-checksum-mode"
            | "x-amz-server-side-encryption-customer-algorithm"
            | "x-amz-server-side-encryption-customer-key"
            | "x-amz-server-side-encryption-customer-key-md5"
    )
}

/// The S3 error a backend error status becomes. The backend's body is never read: it names the backend's
/// bucket and keys, and its code would add nothing a client can act on beyond the status.
fn error_for_backend_status(status: u16) -> S3Error {
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

/// Answers a CORS preflight (unauthenticated, as S3 does): only GET and HEAD, from allowed origins.
fn cors_preflight(
    cors: &crate::config::Cors,
    origin: Option<&str>,
    req: &RequestHeader,
) -> std::result::Result<Vec<(&'static str, String)>, S3Error> {
    let denied = || {
        S3Error::with_message(
            S3ErrorCode::AccessDenied,
            "CORSResponse: This CORS request is not allowed.",
        )
    };
    let origin = origin.ok_or_else(denied)?;
    let method = req
        .headers
        .get("access-control-request-method")
        .and_then(|m| m.to_str().ok())
        .unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return Err(denied());
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
    if let Some(h) = req
        .headers
        .get("access-control-request-headers")
        .and_then(|h| h.to_str().ok())
    {
        headers.push(("access-control-allow-headers", h.to_string()));
    }
    Ok(headers)
}

/// Headers a browser needs to read a response from an allowed origin.
fn add_cors_headers(resp: &mut ResponseHeader, ctx: &RequestCtx) -> Result<()> {
    if let Some(origin) = &ctx.cors_origin {
        resp.insert_header("access-control-allow-origin", origin)?;
        resp.insert_header(
            "access-control-expose-headers",
            "ETag, Content-Length, Content-Range, Content-Type, Last-Modified, Accept-Ranges, x-amz-request-id, x-amz-version-id",
        )?;
        resp.insert_header("vary", "Origin")?;
    }
    Ok(())
}

/// Requests s3p refuses before anything else, for how they are framed:
/// - a GET or HEAD with a body (s3p forwards no body on reads, and will not pass one on unsigned);
/// - `Connection` tokens other than keep-alive, close and TE: pingora would strip the named headers as
///   hop-by-hop (`Connection: host` removes Host), so the request would no longer be the one signed.
fn malformed_framing(req: &RequestHeader) -> Option<S3Error> {
    let has_body = req.headers.contains_key("transfer-encoding")
        || req
            .headers
            .get("content-length")
            .is_some_and(|v| v.as_bytes() != b"0");
    if has_body && (req.method == http::Method::GET || req.method == http::Method::HEAD) {
        return Some(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "GET and HEAD requests must not carry a body.",
        ));
    }
    let mut tokens = 0;
    for value in req.headers.get_all("connection") {
        let Ok(value) = value.to_str() else {
            return Some(bad_connection());
        };
        for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            tokens += 1;
            let known = ["keep-alive", "close", "te"]
                .iter()
                .any(|k| token.eq_ignore_ascii_case(k));
            if !known || tokens > 3 {
                return Some(bad_connection());
            }
        }
    }
    None
}

fn bad_connection() -> S3Error {
    S3Error::invalid_argument(
        "The Connection header may only name keep-alive, close or TE.",
        "Connection",
        "",
    )
}

fn mount(st: &State) -> Mount<'_> {
    Mount {
        base_path: &st.config.base_path,
        bucket: &st.config.bucket,
    }
}

/// Errors that mean "you are not allowed" (as opposed to "your request is wrong" or "s3p failed").
fn is_denial(code: S3ErrorCode) -> bool {
    matches!(
        code,
        S3ErrorCode::AccessDenied
            | S3ErrorCode::InvalidAccessKeyId
            | S3ErrorCode::SignatureDoesNotMatch
            | S3ErrorCode::RequestTimeTooSkewed
            | S3ErrorCode::SlowDown
    )
}

impl S3Proxy {
    /// Decides what to do with a request. `Ok(None)` means the request goes to a backend (ctx.object set).
    async fn handle(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<Option<(u16, Vec<(&'static str, String)>, Bytes)>, S3Error> {
        let st = ctx.state.clone();
        let req = session.req_header();
        let raw = std::str::from_utf8(req.raw_path())
            .map_err(|_| S3Error::new(S3ErrorCode::InvalidURI))?;
        let (raw_path, raw_query) = raw.split_once('?').unwrap_or((raw, ""));
        let headers: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let method = req.method.as_str();
        let view = RequestView {
            method,
            raw_path,
            raw_query,
            headers: &headers,
        };
        // Read once, in request_filter.
        let host_bucket = ctx.host_bucket.take();

        let sigv2_resources =
            auth::sigv2_resources(raw_path, &st.config.base_path, host_bucket.as_deref());
        let options = auth::AuthOptions {
            base_path_tolerance: st
                .config
                .signature_base_path_tolerance
                .then_some(st.config.base_path.as_str()),
        };
        let key = match auth::authenticate(
            &st.keys,
            &view,
            &sigv2_resources,
            SystemTime::now(),
            &options,
        ) {
            // Verified credentials are never throttled, whatever others did from the same address.
            Ok(key) => key,
            Err(e) => {
                self.ops.metrics.auth_failure(e.code.as_str());
                // A failure counts against the key only when the key exists; otherwise (anonymous,
                // unknown key id) against the client address.
                let claimed = auth::claimed_key_id(&view).filter(|id| st.keys.knows(id));
                // The audit names the key a failed signature claimed, when s3p knows it.
                ctx.key_name = claimed
                    .and_then(|id| st.keys.name_of(id))
                    .map(str::to_string);
                let who = match claimed {
                    Some(id) => FailureSubject::ClientAndKey(ctx.client_ip, id),
                    None => FailureSubject::Client(ctx.client_ip),
                };
                let now = Instant::now();
                if let Some(wait) = self.ops.throttle.blocked_for(who, now) {
                    self.ops.metrics.limit_hit("auth_failures_per_minute");
                    return Err(S3Error::slow_down(
                        "Too many failed authentications; retry later.",
                        wait.as_secs().max(1),
                    ));
                }
                if is_denial(e.code) {
                    self.ops.throttle.record_failure(who, now);
                }
                return Err(e);
            }
        };
        ctx.key_name = Some(key.name.clone());
        // One key may hold at most its share of the concurrent requests.
        ctx.key_slot = ConcurrencyLimits::enter_key(&key, st.config.limits.per_key());
        if ctx.key_slot.is_none() {
            self.ops
                .metrics
                .limit_hit("max_concurrent_requests_per_key");
            return Err(S3Error::slow_down(
                "Too many requests of this API key at once; retry later.",
                1,
            ));
        }

        let query = Query::parse(raw_query)?;
        let op = request::route(
            &mount(&st),
            method,
            raw_path,
            &query,
            host_bucket.as_deref(),
        )?;
        ctx.operation = op.name();
        if !matches!(op, Operation::GetObject(_) | Operation::HeadObject(_)) {
            // Bucket-level operations need only a valid key; objects also need the entitlement (below).
            ctx.decision = Decision::Allowed;
        }
        // As S3: a request that names an expected bucket owner other than the real one is refused.
        if let Some(owner) = view.header("x-amz-expected-bucket-owner") {
            if owner != st.config.owner.id {
                return Err(S3Error::new(S3ErrorCode::AccessDenied));
            }
        }
        let xml_ok = |body: String| {
            Ok(Some((
                200,
                vec![("content-type", "application/xml".to_string())],
                Bytes::from(body),
            )))
        };
        match op {
            Operation::ListBuckets => {
                xml_ok(xml::list_buckets(&st.config.owner, &st.config.bucket))
            }
            Operation::GetBucketLocation => xml_ok(xml::location(&st.config.region)),
            Operation::HeadBucket => Ok(Some((
                200,
                vec![("x-amz-bucket-region", st.config.region.clone())],
                Bytes::new(),
            ))),
            // SigV2 signs no listing parameters (as in AWS): a presigned SigV2 listing URL could be
            // re-pointed at any prefix the key may list. Refused; SigV4 presigned URLs sign the query.
            Operation::ListObjects(_) if auth::is_sigv2_presigned(&view) => {
                Err(S3Error::with_message(
                    S3ErrorCode::AccessDenied,
                    "Presigned SigV2 URLs cannot list: SigV2 does not sign listing parameters. Presign with SigV4.",
                ))
            }
            Operation::ListObjects(params) => {
                ctx.decision = Decision::Allowed;
                // Audit the listed prefix; name its data source only when the key may read it.
                ctx.target = format!("/{}/{}", st.config.bucket, params.prefix);
                ctx.data_source = params
                    .prefix
                    .split_once('/')
                    .and_then(|(ds, _)| policy::readable_data_source(&st.config, &key, ds).ok())
                    .map(|ds| ds.name.clone());
                let body = self.list(&st, &key, &params).await?;
                xml_ok(body)
            }
            Operation::GetObject(vkey) | Operation::HeadObject(vkey) => {
                ctx.data_source = Some(vkey.data_source.clone());
                let ds = policy::readable_data_source(&st.config, &key, &vkey.data_source)?;
                ctx.decision = Decision::Allowed;
                ctx.backend_name = Some(ds.backend.clone());
                let obj = namespace::to_backend(ds, &vkey)?;
                let backend = st
                    .backends
                    .get(&obj.backend)
                    .ok_or_else(|| S3Error::new(S3ErrorCode::InternalError))?;
                // Forwarded headers are signed for the backend as text: refuse what is not, rather
                // than sign a lossy copy the backend would reject as a bad signature.
                if let Some((name, _)) = session
                    .req_header()
                    .headers
                    .iter()
                    .find(|(n, v)| forwarded_request_header(n.as_str()) && v.to_str().is_err())
                {
                    return Err(S3Error::invalid_argument(
                        "Header values must be visible ASCII.",
                        name.as_str(),
                        "",
                    ));
                }
                let target = backend.object_target(&obj.bucket, &obj.key);
                let forwarded: Vec<String> = query
                    .iter()
                    .filter(|(n, _)| request::forwarded_object_param(n))
                    .map(|(n, v)| format!("{n}={}", encode_query_value(v)))
                    .collect();
                let path_and_query = if forwarded.is_empty() {
                    target.path
                } else {
                    format!("{}?{}", target.path, forwarded.join("&"))
                };
                ctx.object = Some(ObjectRoute {
                    backend: obj.backend,
                    host: target.host,
                    sni: target.sni,
                    path_and_query,
                    resource: format!("/{}/{}", st.config.bucket, vkey.full()),
                });
                Ok(None)
            }
        }
    }

    /// ListObjects (v1) and ListObjectsV2 over the key's data sources.
    async fn list(
        &self,
        st: &State,
        key: &crate::config::ApiKey,
        params: &ListParams,
    ) -> std::result::Result<String, S3Error> {
        let binding = TokenBinding {
            api_key: key.id.expose(),
            prefix: &params.prefix,
            delimiter: params.delimiter.as_deref(),
        };
        let start = match params.version {
            ListVersion::V1 => Position::from_marker(
                params.marker.as_deref().unwrap_or(""),
                &params.prefix,
                params.delimiter.as_deref(),
            ),
            ListVersion::V2 => match &params.continuation_token {
                Some(t) => st.tokens.open(t, &binding)?,
                None => Position::from_marker(
                    params.start_after.as_deref().unwrap_or(""),
                    &params.prefix,
                    params.delimiter.as_deref(),
                ),
            },
        };
        let data_sources = policy::readable_data_sources(&st.config, key);
        let query = ListQuery {
            prefix: params.prefix.clone(),
            delimiter: params.delimiter.clone(),
            start,
            max_keys: params.max_keys,
            budget: CallBudget::new(st.config.limits.max_backend_calls_per_list),
        };
        // Errors of list_page come only from backend calls (the position was validated above).
        let page = list_page(&st.backends, &data_sources, &query)
            .await
            .inspect_err(|e| {
                self.ops.metrics.backend_error("listing", e.code.as_str());
            })?;
        self.ops.metrics.list_backend_calls(page.backend_calls);
        if page.cut_by_budget {
            self.ops.metrics.limit_hit("max_backend_calls_per_list");
        }
        let next_token = match (&page.next, params.version) {
            (Some(p), ListVersion::V2) => Some(st.tokens.seal(p, &binding)),
            _ => None,
        };
        // v1: NextMarker with a delimiter, as AWS does (clients use the last key otherwise), and on every
        // page the call budget ended: it may end elsewhere than at its last key, or hold no key at all.
        let next_marker = match (&page.next, params.version) {
            (Some(next), ListVersion::V1) if params.delimiter.is_some() || page.cut_by_budget => {
                Some(next.as_marker(&params.prefix, params.delimiter.as_deref()))
            }
            _ => None,
        };
        Ok(xml::list_objects(&xml::ListingView {
            bucket: &st.config.bucket,
            params,
            owner: &st.config.owner,
            entries: &page.entries,
            is_truncated: page.is_truncated,
            next_marker: next_marker.as_deref(),
            next_token: next_token.as_deref(),
        }))
    }

    async fn write_answer(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Bytes,
    ) -> Result<()> {
        let mut resp = ResponseHeader::build(status, Some(headers.len() + 3))?;
        for (n, v) in headers {
            resp.insert_header(n, v)?;
        }
        resp.insert_header("x-amz-request-id", &ctx.request_id)?;
        resp.insert_header("x-amz-id-2", &ctx.request_id)?;
        resp.insert_header("content-length", body.len().to_string())?;
        add_cors_headers(&mut resp, ctx)?;
        if ctx.is_head || body.is_empty() {
            session.write_response_header(Box::new(resp), true).await
        } else {
            session.write_response_header(Box::new(resp), false).await?;
            session.write_response_body(Some(body), true).await
        }
    }

    async fn write_error(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        mut e: S3Error,
    ) -> Result<()> {
        if e.resource.is_none() && !ctx.target.is_empty() {
            e.resource = Some(ctx.target.clone());
        }
        ctx.error_code = Some(e.code.as_str());
        ctx.decision = if is_denial(e.code) {
            Decision::Denied
        } else if ctx.decision == Decision::Allowed
            && matches!(
                e.code,
                S3ErrorCode::NoSuchKey
                    | S3ErrorCode::InvalidRange
                    | S3ErrorCode::PreconditionFailed
            )
        {
            // Allowed, and answered with an ordinary S3 negative.
            Decision::Allowed
        } else {
            Decision::Failed
        };
        // A refused request may still carry a body (an upload): do not drain it, close the connection.
        let req = session.req_header();
        if req.headers.contains_key("content-length")
            || req.headers.contains_key("transfer-encoding")
        {
            session.set_keepalive(None);
        }
        let body = Bytes::from(xml::error(&e, &ctx.request_id));
        let mut headers = vec![("content-type", "application/xml".to_string())];
        if let Some(s) = e.retry_after_s {
            headers.push(("retry-after", s.to_string()));
        }
        self.write_answer(session, ctx, e.status(), headers, body)
            .await
    }
}

#[async_trait]
impl ProxyHttp for S3Proxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            state: self.state.load_full(),
            request_id: new_request_id(),
            client: String::new(),
            data_source: None,
            backend_name: None,
            decision: Decision::Failed,
            in_flight: None,
            started: Instant::now(),
            key_name: None,
            operation: "Unknown",
            target: String::new(),
            object: None,
            backend_error: None,
            error_code: None,
            upstream_started: None,
            cors_origin: None,
            backend_latency: None,
            is_head: false,
            host_bucket: None,
            client_ip: None,
            client_slot: None,
            key_slot: None,
            body_sent: 0,
            rate_mark: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.is_head = session.req_header().method == http::Method::HEAD;
        let peer = session.client_addr().and_then(|a| a.as_inet()).copied();
        let trusted = &ctx.state.config.trusted_proxies;
        ctx.client_ip = peer.map(|p| {
            if trusted.is_empty() {
                return p.ip();
            }
            let forwarded = session.req_header().headers.get_all("x-forwarded-for");
            let values: Vec<&str> = forwarded.iter().filter_map(|v| v.to_str().ok()).collect();
            crate::client_addr::client_address(p.ip(), values.into_iter(), trusted)
        });
        // The audit names the client as limits see it: behind a trusted proxy, the forwarded address.
        ctx.client = match (peer, ctx.client_ip) {
            (Some(p), Some(ip)) if p.ip() == ip => p.to_string(),
            (_, Some(ip)) => ip.to_string(),
            _ => String::new(),
        };
        // The virtual resource, for every answer and audit line from here on (refusals included).
        if let Ok(raw) = std::str::from_utf8(session.req_header().raw_path()) {
            let st = &ctx.state;
            let path = raw.split_once('?').map_or(raw, |(p, _)| p);
            let host = session
                .req_header()
                .headers
                .get("host")
                .and_then(|h| h.to_str().ok());
            ctx.host_bucket = request::host_bucket(host, &st.config.virtual_host_suffixes);
            ctx.target = request::resource_of(&mount(st), path, ctx.host_bucket.as_deref());
        }
        let limits = &ctx.state.config.limits;
        // A stalled client cannot hold a connection longer than the client timeout per read or write.
        let client_timeout = Some(Duration::from_millis(limits.client_timeout_ms));
        session.set_read_timeout(client_timeout);
        session.set_write_timeout(client_timeout);
        session.set_keepalive(Some(limits.keepalive_timeout_s));
        let req = session.req_header();
        let header_bytes = req.raw_path().len()
            + req
                .headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len() + 4)
                .sum::<usize>();
        if header_bytes > limits.max_header_bytes {
            session.set_keepalive(None);
            let e = S3Error::new(S3ErrorCode::RequestHeaderSectionTooLarge)
                .detail("MaxSizeAllowed", limits.max_header_bytes.to_string());
            self.write_error(session, ctx, e).await?;
            return Ok(true);
        }
        if self.ops.unready.load(std::sync::atomic::Ordering::Relaxed) {
            // Leaving: the client's next request goes through the balancer, to another replica.
            session.set_keepalive(None);
        }
        if self.ops.draining.load(std::sync::atomic::Ordering::Relaxed) {
            session.set_keepalive(None);
            let e = S3Error::with_message(
                S3ErrorCode::ServiceUnavailable,
                "The server is shutting down.",
            );
            self.write_error(session, ctx, e).await?;
            return Ok(true);
        }
        if let Some(e) = malformed_framing(session.req_header()) {
            session.set_keepalive(None);
            self.write_error(session, ctx, e).await?;
            return Ok(true);
        }
        let (guard, count) = InFlight::enter(&self.ops);
        ctx.in_flight = Some(guard);
        if count > limits.max_concurrent_requests as i64 {
            self.ops.metrics.limit_hit("max_concurrent_requests");
            let e = S3Error::slow_down("Too many requests at once; retry later.", 1);
            self.write_error(session, ctx, e).await?;
            return Ok(true);
        }
        // One client address may hold at most its share too (a trusted proxy that forwarded no
        // address is many clients at once: exempt).
        if let Some(ip) = ctx.client_ip {
            if !crate::client_addr::is_trusted(&ctx.state.config.trusted_proxies, ip) {
                let limit = ctx.state.config.limits.per_client();
                ctx.client_slot = self.ops.concurrency.enter_client(ip, limit);
                if ctx.client_slot.is_none() {
                    self.ops
                        .metrics
                        .limit_hit("max_concurrent_requests_per_client");
                    let e = S3Error::slow_down(
                        "Too many requests from this client at once; retry later.",
                        1,
                    );
                    self.write_error(session, ctx, e).await?;
                    return Ok(true);
                }
            }
        }
        let state = ctx.state.clone();
        let cors = &state.config.cors;
        let origin = session
            .req_header()
            .headers
            .get("origin")
            .and_then(|o| o.to_str().ok())
            .map(str::to_string);
        ctx.cors_origin = origin.filter(|o| cors.allows(o));
        if session.req_header().method == http::Method::OPTIONS {
            ctx.operation = "CorsPreflight";
            let answer = cors_preflight(cors, ctx.cors_origin.as_deref(), session.req_header());
            match answer {
                Ok(headers) => {
                    self.write_answer(session, ctx, 200, headers, Bytes::new())
                        .await?
                }
                Err(e) => self.write_error(session, ctx, e).await?,
            }
            return Ok(true);
        }
        match self.handle(session, ctx).await {
            Ok(None) => Ok(false),
            Ok(Some((status, headers, body))) => {
                self.write_answer(session, ctx, status, headers, body)
                    .await?;
                Ok(true)
            }
            Err(e) => {
                self.write_error(session, ctx, e).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let route = ctx
            .object
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no object route"))?;
        let backend = ctx
            .state
            .backends
            .get(&route.backend)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "unknown backend"))?;
        let limits = &ctx.state.config.limits;
        let mut peer = HttpPeer::new(backend.addr, backend.config.tls, route.sni.clone());
        peer.options.connection_timeout = Some(Duration::from_millis(limits.connect_timeout_ms));
        peer.options.read_timeout = Some(Duration::from_millis(limits.read_timeout_ms));
        peer.options.write_timeout = Some(Duration::from_millis(limits.read_timeout_ms));
        peer.options.idle_timeout = Some(Duration::from_millis(limits.idle_timeout_ms));
        peer.options.ca = backend.ca.clone();
        ctx.upstream_started = Some(Instant::now());
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let route = ctx
            .object
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no object route"))?;
        let state = ctx.state.clone();
        let backend = state
            .backends
            .get(&route.backend)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "unknown backend"))?;
        // Keep only allow-listed headers: the client's credentials and anything else stay here.
        let names: Vec<http::HeaderName> = upstream.headers.keys().cloned().collect();
        for name in names {
            if !forwarded_request_header(name.as_str()) {
                upstream.remove_header(&name);
            }
        }
        let uri: http::Uri = route
            .path_and_query
            .parse()
            .map_err(|_| Error::explain(ErrorType::InternalError, "bad backend uri"))?;
        upstream.set_uri(uri);
        upstream.insert_header("host", &route.host)?;
        let signed_headers: Vec<(String, String)> = upstream
            .headers
            .iter()
            .filter(|(n, _)| n.as_str() != "host")
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let refs: Vec<(&str, &str)> = signed_headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let method = upstream.method.as_str().to_string();
        let signed = match backend.identity().await {
            Ok(identity) => backend.sign(
                &identity,
                &method,
                &route.host,
                &route.path_and_query,
                &refs,
                SystemTime::now(),
            ),
            Err(e) => Err(e),
        };
        let signature = match signed {
            Ok(s) => s,
            Err(e) => {
                // Answered by fail_to_proxy with this error.
                ctx.backend_error = Some(e);
                return Err(Error::explain(
                    ErrorType::InternalError,
                    "cannot sign backend request",
                ));
            }
        };
        for (name, value) in signature {
            upstream.insert_header(name, value)?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if resp.status.is_informational() {
            // 100 Continue and 103 Early Hints pass, but never with the backend's headers (Link,
            // request ids, Server).
            let names: Vec<http::HeaderName> = resp.headers.keys().cloned().collect();
            for name in names {
                resp.remove_header(&name);
            }
            return Ok(());
        }
        ctx.backend_latency = ctx.upstream_started.map(|t| t.elapsed());
        let status = resp.status.as_u16();
        if status >= 400 || (300..400).contains(&status) && status != 304 {
            // Stop here and answer with s3p's own error (see fail_to_proxy): the backend's body is never
            // relayed. This also covers error answers without a body, which no body filter would see.
            let mut e = error_for_backend_status(status);
            e.resource = ctx.object.as_ref().map(|o| o.resource.clone());
            log::debug!("request {}: backend answered {status}", ctx.request_id);
            ctx.backend_error = Some(e);
            return Err(Error::explain(
                ErrorType::HTTPStatus(status),
                "backend error answer",
            ));
        }
        let names: Vec<http::HeaderName> = resp.headers.keys().cloned().collect();
        for name in names {
            if !forwarded_response_header(name.as_str()) {
                resp.remove_header(&name);
            }
        }
        resp.insert_header("x-amz-request-id", &ctx.request_id)?;
        resp.insert_header("x-amz-id-2", &ctx.request_id)?;
        add_cors_headers(resp, ctx)?;
        Ok(())
    }

    /// A reader too slow for the minimum rate is cut. Each write already has the client timeout, but a
    /// stalled reader that reads a few bytes now and then renews it for ever; so, every
    /// `client_timeout_ms`, the bytes the client took since the last check must average
    /// `min_client_rate_bytes_per_s`. An honest slow link (even 10 KB/s) never meets this.
    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        let limits = &ctx.state.config.limits;
        let rate = limits.min_client_rate_bytes_per_s;
        let Some(chunk) = body.as_ref() else {
            return Ok(None);
        };
        if rate == 0 {
            return Ok(None);
        }
        let now = Instant::now();
        let (mark_time, mark_bytes) = *ctx.rate_mark.get_or_insert((now, 0));
        let window = Duration::from_millis(limits.client_timeout_ms);
        let elapsed = now.duration_since(mark_time);
        if elapsed >= window {
            // Bytes of earlier chunks: written, since pingora writes a chunk before it asks for the next.
            let taken = ctx.body_sent - mark_bytes;
            if (taken as f64) < rate as f64 * elapsed.as_secs_f64() {
                self.ops.metrics.limit_hit("min_client_rate_bytes_per_s");
                log::info!(
                    "request {}: the client took {taken} bytes in {:.1} s, less than {rate} bytes/s: response cut",
                    ctx.request_id,
                    elapsed.as_secs_f64()
                );
                return Err(Error::explain(
                    ErrorType::WriteTimedout,
                    "client below the minimum read rate",
                ));
            }
            ctx.rate_mark = Some((now, ctx.body_sent));
        }
        ctx.body_sent += chunk.len() as u64;
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let error = match e.esource() {
            _ if ctx.backend_error.is_some() => ctx.backend_error.take(),
            ErrorSource::Downstream => None,
            ErrorSource::Upstream => {
                // The error's own text names the peer, whose SNI holds the backend bucket with
                // virtual-host addressing: only its kind and the backend's name are logged.
                log::warn!(
                    "request {}: backend {} failed: {}",
                    ctx.request_id,
                    ctx.backend_name.as_deref().unwrap_or("-"),
                    e.etype().as_str()
                );
                Some(S3Error::storage_unavailable())
            }
            _ => {
                log::error!("request {}: {e}", ctx.request_id);
                Some(S3Error::new(S3ErrorCode::InternalError))
            }
        };
        let mut code = 0;
        if let Some(err) = error {
            code = err.status();
            if session.response_written().is_none() {
                if let Err(write_err) = self.write_error(session, ctx, err).await {
                    log::debug!(
                        "request {}: could not write error: {write_err}",
                        ctx.request_id
                    );
                }
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// What pingora's own error lines say about a request: the request id, method and virtual
    /// resource, never the query (presigned signatures) or headers (credentials).
    fn request_summary(&self, session: &Session, ctx: &RequestCtx) -> String {
        format!(
            "request_id={} {} {:?}",
            ctx.request_id,
            session.req_header().method,
            ctx.target
        )
    }

    /// A backend's 404/403/412/416 is an ordinary S3 answer (already in the audit line), not an error
    /// worth an ERROR line from pingora.
    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, _error: &Error) -> bool {
        ctx.backend_error.is_some() || ctx.error_code.is_some()
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        ctx.in_flight = None;
        ctx.client_slot = None;
        ctx.key_slot = None;
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let bytes = session.body_bytes_sent() as u64;
        let duration = ctx.started.elapsed();
        // Metric labels only ever hold configured names of allowed requests: a client cannot grow the
        // label set by asking for names that do not exist.
        let data_source = match (&ctx.data_source, ctx.decision) {
            (Some(ds), Decision::Allowed) if ctx.state.config.data_sources.contains_key(ds) => {
                ds.as_str()
            }
            _ => "",
        };
        self.ops
            .metrics
            .request(ctx.operation, data_source, status, bytes, duration);
        if let Some(d) = ctx.backend_latency {
            self.ops.metrics.backend_duration.observe(d);
        }
        // Object requests: a failed connection or a 5xx from the backend (listings count theirs in list()).
        if let Some(backend) = &ctx.backend_name {
            if e.is_some_and(|e| e.esource() == &ErrorSource::Upstream)
                || (status >= 500 && ctx.backend_latency.is_some())
            {
                self.ops.metrics.backend_error(backend, &status.to_string());
            }
        }
        let backend_ms = ctx.backend_latency.map(|d| d.as_secs_f64() * 1000.0);
        self.ops.audit.write(&AuditRecord {
            time: crate::ops::audit::now_rfc3339(),
            request_id: &ctx.request_id,
            api_key: ctx.key_name.as_deref(),
            client: &ctx.client,
            operation: ctx.operation,
            data_source: ctx.data_source.as_deref(),
            resource: &ctx.target,
            decision: ctx.decision,
            reason: ctx.error_code,
            status,
            bytes_sent: bytes,
            duration_ms: duration.as_secs_f64() * 1000.0,
            backend_ms,
        });
        // The audit line is the record of access; this one is for debugging (RUST_LOG=s3p=debug).
        log::debug!(
            "request_id={} client={} key={:?} op={} resource={:?} status={} error={} bytes={} duration_ms={:.3} backend_ms={}{}",
            ctx.request_id,
            ctx.client,
            ctx.key_name.as_deref().unwrap_or("-"),
            ctx.operation,
            ctx.target,
            status,
            ctx.error_code.unwrap_or("-"),
            bytes,
            duration.as_secs_f64() * 1000.0,
            backend_ms.map(|d| format!("{d:.3}")).unwrap_or_else(|| "-".into()),
            e.map(|e| format!(" failure={:?}", e.etype())).unwrap_or_default(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_errors_map_by_status() {
        let table = [
            (404, S3ErrorCode::NoSuchKey),
            (403, S3ErrorCode::AccessDenied),
            (412, S3ErrorCode::PreconditionFailed),
            (416, S3ErrorCode::InvalidRange),
            (400, S3ErrorCode::InvalidRequest),
            (409, S3ErrorCode::InvalidRequest),
            (301, S3ErrorCode::InternalError),
            (500, S3ErrorCode::ServiceUnavailable),
            (503, S3ErrorCode::SlowDown),
        ];
        for (status, code) in table {
            assert_eq!(error_for_backend_status(status).code, code, "{status}");
        }
    }

    #[test]
    fn header_allow_lists() {
        for h in [
            "content-type",
            "content-length",
            "content-range",
            "etag",
            "last-modified",
            "x-amz-meta-owner",
            "accept-ranges",
        ] {
            assert!(forwarded_response_header(h), "{h}");
        }
        for h in [
            "x-amz-request-id",
            "x-amz-id-2",
            "server",
            "location",
            "x-amz-bucket-region",
            "set-cookie",
        ] {
            assert!(!forwarded_response_header(h), "{h}");
        }
        for h in ["range", "if-none-match", "if-modified-since"] {
            assert!(forwarded_request_header(h), "{h}");
        }
        for h in [
            "authorization",
            "x-amz-date",
            "x-amz-content-sha256",
            "x-amz-security-token",
            "cookie",
            "host",
            "x-amz-expected-bucket-owner",
        ] {
            assert!(!forwarded_request_header(h), "{h}");
        }
    }
}
