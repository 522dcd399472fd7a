//! The pingora glue: a thin `ProxyHttp` that carries out what `gateway::decide` decided.
//!
//! request_filter:  operational guards (head size, draining, in-flight limits) -> gateway::decide ->
//!                  throttle and per-key limit -> answer | listing::serve | forward
//! upstream_peer / upstream_request_filter:  the decided route's backend; its headers, re-signed (SigV4)
//! upstream_response_filter / body filter:  keep allow-listed headers; rewrite backend errors into the
//!                                          virtual namespace; cut readers below the minimum rate
//! logging:  one audit line and the metrics of the request

use crate::auth::{Headers, RequestView};
use crate::error::{FailureKind, S3Error, S3ErrorCode};
use crate::gateway::{
    AuditFacts, BodyHold, Decision, Incoming, ObjectRoute, Outcome, Rewrite, Verdict,
};
use crate::listing;
use crate::request::{self, Mount};
use crate::server::audit::AuditRecord;
use crate::server::throttle::{ConcurrencyLimits, CopyRefusal, FailureSubject, Slot};
use crate::server::{InFlight, Runtime};
use crate::state::{SharedState, State};
use crate::upload::chunked::ChunkedDecoder;
use crate::upload::{multipart, Payload};
use crate::xml;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

pub struct S3Proxy {
    pub state: SharedState,
    pub runtime: Arc<Runtime>,
}

/// Per-request state, grouped by what it is for.
pub struct RequestCtx {
    state: Arc<State>,
    request_id: String,
    client: Client,
    /// What the audit line will say; settled by `decide` and by the answer.
    audit: AuditFacts,
    /// Set when the decision is to forward to a backend.
    route: Option<Box<ObjectRoute>>,
    /// s3p's error body, sent in place of the backend's error answer (see upstream_response_filter):
    /// whole when the head decided it, empty while the backend's body may still decide its code.
    error_body: Option<Bytes>,
    /// The start of the backend's error answer (its status and first bytes): its code is logged, and
    /// passes to the client when allow-listed (`error::backend_answer`).
    backend_error: Option<(u16, BytesMut)>,
    /// How the backend failed, for `s3p_backend_errors_total`.
    backend_failure: Option<FailureKind>,
    /// The request's Origin, when CORS allows it (echoed in Access-Control-Allow-Origin).
    cors_origin: Option<String>,
    is_head: bool,
    timing: Timing,
    held: Held,
    pacing: Pacing,
    upload: Upload,
    /// The outcome of each object of a DeleteObjects request: one audit line each.
    batch: Vec<crate::upload::delete::ObjectOutcome>,
}

/// The request body of a write, as it passes through.
#[derive(Default)]
struct Upload {
    /// Decodes (and checks) an aws-chunked body. Boxed: every request's context is moved with pingora's
    /// request future, and few requests are signed-chunk uploads.
    decoder: Option<Box<ChunkedDecoder>>,
    /// Body bytes read from the client.
    received: u64,
    pacing: Pacing,
    /// A backend answer being collected to be rewritten (multipart answers, a few KiB).
    answer: Option<BytesMut>,
    /// A body that must arrive whole by then (`limits.body_timeout_ms`; bodies the backend reads whole).
    deadline: Option<Instant>,
}

/// The longest a request waits for room in a full audit buffer (`audit_overflow: backpressure`) before
/// its line is dropped after all (counted), so that no request hangs for ever behind a dead consumer.
const AUDIT_MAX_WAIT: Duration = Duration::from_secs(30);

/// The largest backend answer s3p collects to rewrite (multipart answers are a few hundred bytes).
const MAX_REWRITTEN_ANSWER: usize = 1 << 20;

/// Who is calling, as limits and the audit see it (after `trusted_proxies`, see `client_addr`).
#[derive(Default)]
struct Client {
    /// `ip:port` of a direct client; the forwarded address behind a trusted proxy.
    text: String,
    ip: Option<IpAddr>,
}

struct Timing {
    started: Instant,
    upstream_started: Option<Instant>,
    backend_latency: Option<Duration>,
}

/// Places this request holds in the in-flight counts; dropping them (however the request ends, a panic
/// included) gives them back.
#[derive(Default)]
struct Held {
    in_flight: Option<InFlight>,
    client: Option<Slot>,
    key: Option<Slot>,
    /// A copy's place in the copy limits.
    copy: Option<Slot>,
    /// Body bytes held in the process-wide budget.
    body: Option<Slot>,
}

/// Body bytes moved so far, and the last point the minimum client rate was checked at.
#[derive(Default)]
struct Pacing {
    body_sent: u64,
    rate_mark: Option<(Instant, u64)>,
}

impl Pacing {
    /// Counts a chunk of `len` bytes about to move. Every `client_timeout_ms`, the bytes moved since the
    /// last check must average `min_client_rate_bytes_per_s`; returns the bytes and seconds of a
    /// window that fell short.
    fn below_min_rate(&mut self, len: usize, limits: &crate::config::Limits) -> Option<(u64, f64)> {
        let rate = limits.min_client_rate_bytes_per_s;
        if rate == 0 {
            return None;
        }
        let now = Instant::now();
        let (mark_time, mark_bytes) = *self.rate_mark.get_or_insert((now, 0));
        let window = Duration::from_millis(limits.client_timeout_ms);
        let elapsed = now.duration_since(mark_time);
        if elapsed >= window {
            // Bytes of earlier chunks only: they have moved (pingora moves a chunk before the next).
            let taken = self.body_sent - mark_bytes;
            if (taken as f64) < rate as f64 * elapsed.as_secs_f64() {
                return Some((taken, elapsed.as_secs_f64()));
            }
            self.rate_mark = Some((now, self.body_sent));
        }
        self.body_sent += len as u64;
        None
    }
}

fn new_request_id() -> String {
    format!("{:016X}", rand::random::<u64>())
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

fn mount(st: &State) -> Mount<'_> {
    Mount {
        base_path: &st.config.base_path,
        bucket: &st.config.bucket,
    }
}

/// How a backend connection failed, from pingora's error type.
fn failure_kind(etype: &ErrorType) -> FailureKind {
    match etype {
        ErrorType::ConnectTimedout
        | ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::ConnectProxyFailure
        | ErrorType::TLSHandshakeFailure
        | ErrorType::TLSHandshakeTimedout
        | ErrorType::InvalidCert
        | ErrorType::HandshakeError => FailureKind::Connect,
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => FailureKind::Timeout,
        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError => {
            FailureKind::Reset
        }
        _ => FailureKind::Unreadable,
    }
}

/// The request's path and query as sent, and the bucket its Host header names (virtual-host
/// addressing); `None` when the path is not UTF-8.
fn target_of<'r>(req: &'r RequestHeader, st: &State) -> Option<(&'r str, &'r str, Option<String>)> {
    let raw = std::str::from_utf8(req.raw_path()).ok()?;
    let (path, query) = raw.split_once('?').unwrap_or((raw, ""));
    let host = req.headers.get("host").and_then(|h| h.to_str().ok());
    let bucket = request::host_bucket(host, &st.config.virtual_host_suffixes);
    Some((path, query, bucket))
}

/// The S3 error a pingora error carries as its root cause, if any.
fn s3_cause(e: &Error) -> Option<&S3Error> {
    e.root_cause().downcast_ref::<S3Error>()
}

fn internal(what: &'static str) -> Box<Error> {
    Error::explain(ErrorType::InternalError, what)
}

/// How the client reached s3p: over TLS, or as a trusted proxy says with `X-Forwarded-Proto` (from
/// anyone else, the header is not believed).
fn scheme_of(session: &Session, ctx: &RequestCtx) -> &'static str {
    let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    let peer = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    let from_trusted_proxy = peer
        .is_some_and(|ip| crate::client_addr::is_trusted(&ctx.state.config.trusted_proxies, ip));
    let forwarded_https = from_trusted_proxy
        && session
            .req_header()
            .headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    if tls || forwarded_https {
        "https"
    } else {
        "http"
    }
}

impl S3Proxy {
    /// The decision for this request (see `gateway`), with the request's headers and path read once.
    fn decide(&self, session: &Session, ctx: &RequestCtx) -> Decision {
        let st = &ctx.state;
        let req = session.req_header();
        let Some((raw_path, raw_query, host_bucket)) = target_of(req, st) else {
            return Decision::refused(S3Error::new(S3ErrorCode::InvalidURI));
        };
        let view = RequestView {
            method: req.method.as_str(),
            raw_path,
            raw_query,
            headers: Headers::Map(&req.headers),
        };
        crate::gateway::decide(
            st,
            &Incoming {
                view: &view,
                host_bucket: host_bucket.as_deref(),
                scheme: scheme_of(session, ctx),
                now: SystemTime::now(),
            },
        )
    }

    /// What the decision leaves to shared run-time state: a failed authentication counts towards the
    /// throttle (and is answered SlowDown once over it), and a verified key takes a place in its
    /// in-flight count.
    fn apply_limits(&self, d: &mut Decision, ctx: &mut RequestCtx) {
        if let (Some(failure), Outcome::Refuse(e)) = (&d.auth_failure, &d.outcome) {
            self.runtime.metrics.auth_failure(e.code.as_str());
            // Verified credentials are never throttled, whatever others did from the same address.
            let who = match &failure.known_key_id {
                Some(id) => FailureSubject::ClientAndKey(ctx.client.ip, id),
                None => FailureSubject::Client(ctx.client.ip),
            };
            let now = Instant::now();
            if let Some(wait) = self.runtime.throttle.blocked_for(who, now) {
                self.runtime.metrics.limit_hit("auth_failures_per_minute");
                d.outcome = Outcome::Refuse(S3Error::slow_down(
                    "Too many failed authentications; retry later.",
                    wait.as_secs().max(1),
                ));
            } else if failure.is_denial {
                self.runtime.throttle.record_failure(who, now);
            }
            return;
        }
        if let (Some(key), false) = (&d.key, matches!(d.outcome, Outcome::Refuse(_))) {
            // One key may hold at most its share of the concurrent requests.
            ctx.held.key = ConcurrencyLimits::enter_key(key, ctx.state.config.limits.per_key());
            if ctx.held.key.is_none() {
                self.runtime
                    .metrics
                    .limit_hit("max_concurrent_requests_per_key");
                d.outcome = Outcome::Refuse(S3Error::slow_down(
                    "Too many requests of this API key at once; retry later.",
                    1,
                ));
                return;
            }
            if let Outcome::Forward(route) = &d.outcome {
                if let Err(e) = self.hold_for(route, key, ctx) {
                    d.outcome = Outcome::Refuse(e);
                }
            }
        }
    }

    /// The places a forwarded request holds besides its in-flight counts: a copy's place in the copy
    /// limits, and the body bytes the backend or s3p will hold in the process-wide budget.
    fn hold_for(
        &self,
        route: &ObjectRoute,
        key: &crate::config::ApiKey,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<(), S3Error> {
        let limits = &ctx.state.config.limits;
        if route.copy {
            let entered = self.runtime.concurrency.enter_copy(
                &key.name,
                limits.max_concurrent_copies_per_key,
                limits.max_concurrent_copies,
            );
            match entered {
                Ok(slot) => ctx.held.copy = Some(slot),
                Err(refusal) => {
                    let (limit, message) = match refusal {
                        CopyRefusal::PerKey => (
                            "max_concurrent_copies_per_key",
                            "Too many copies of this API key at once; retry later.",
                        ),
                        CopyRefusal::PerReplica => (
                            "max_concurrent_copies",
                            "Too many copies at once; retry later.",
                        ),
                    };
                    self.runtime.metrics.limit_hit(limit);
                    return Err(S3Error::slow_down(message, 1));
                }
            }
        }
        let held = match route.body_hold {
            BodyHold::None => return Ok(()),
            BodyHold::Counted(n) | BodyHold::VerifiedFirst(n) => n,
        };
        ctx.held.body = Some(self.reserve_body(held, ctx)?);
        ctx.upload.deadline = Some(Instant::now() + Duration::from_millis(limits.body_timeout_ms));
        Ok(())
    }

    /// `bytes` of the process-wide budget for request bodies held in memory, or 503 SlowDown.
    fn reserve_body(&self, bytes: u64, ctx: &RequestCtx) -> std::result::Result<Slot, S3Error> {
        let budget = ctx.state.config.limits.max_buffered_body_bytes;
        usize::try_from(bytes)
            .ok()
            .and_then(|n| self.runtime.concurrency.reserve_body(n, budget))
            .ok_or_else(|| {
                self.runtime.metrics.limit_hit("max_buffered_body_bytes");
                S3Error::slow_down(
                    "Too many request bodies held in memory at once; retry later.",
                    1,
                )
            })
    }

    /// Carries out a decision. `Ok(false)`: the request goes on to its backend.
    async fn carry_out(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        mut d: Decision,
    ) -> Result<bool> {
        self.apply_limits(&mut d, ctx);
        ctx.audit = d.audit;
        if d.close {
            session.set_keepalive(None);
        }
        match d.outcome {
            Outcome::Answer(a) => {
                self.write_answer(session, ctx, a.status, a.headers, a.body)
                    .await?
            }
            Outcome::Refuse(e) => self.write_error(session, ctx, e).await?,
            Outcome::List(params) => {
                let st = ctx.state.clone();
                let key = d
                    .key
                    .as_ref()
                    .ok_or_else(|| internal("listing without a key"))?;
                let served = listing::serve(&st.backends, &st.config, &st.tokens, key, &params)
                    .await
                    .map(|served| {
                        self.runtime
                            .metrics
                            .list_backend_calls(served.backend_calls);
                        if served.cut_by_budget {
                            self.runtime.metrics.limit_hit("max_backend_calls_per_list");
                        }
                        served.body
                    });
                self.write_xml_or_error(session, ctx, served).await?
            }
            Outcome::ListUploads(params) => {
                let st = ctx.state.clone();
                let key = d
                    .key
                    .as_ref()
                    .ok_or_else(|| internal("ListMultipartUploads without a key"))?;
                let answer = crate::upload::uploads_list::serve(
                    &st.backends,
                    &st.config,
                    &st.uploads,
                    key,
                    &params,
                )
                .await;
                self.write_xml_or_error(session, ctx, answer).await?
            }
            Outcome::DeleteObjects(checks) => {
                let key = d
                    .key
                    .as_ref()
                    .ok_or_else(|| internal("DeleteObjects without a key"))?;
                match self.delete_request(session, ctx, &checks).await {
                    Ok(request) => {
                        let st = ctx.state.clone();
                        let served = crate::upload::delete::serve(
                            &st.backends,
                            &st.config,
                            &st.versions,
                            key,
                            &request,
                        )
                        .await;
                        ctx.held.body = None;
                        ctx.batch = served.outcomes;
                        let headers = vec![("content-type", "application/xml".to_string())];
                        self.write_answer(session, ctx, 200, headers, Bytes::from(served.body))
                            .await?
                    }
                    Err(e) => self.write_error(session, ctx, e).await?,
                }
            }
            Outcome::Forward(route) => {
                if let Some(Payload::AwsChunked(plan)) = &route.payload {
                    ctx.upload.decoder = Some(Box::new(ChunkedDecoder::new(plan.clone())));
                }
                if route.expect_continue {
                    // Authenticated and authorised: the client may send its body now.
                    session.write_continue_response().await?;
                }
                if let BodyHold::VerifiedFirst(limit) = route.body_hold {
                    if let Err(e) = self.verify_first(session, ctx, &route, limit).await {
                        self.write_error(session, ctx, e).await?;
                        return Ok(true);
                    }
                }
                ctx.route = Some(route);
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Refuses a request before it is decided (operational guards): the audit names its resource.
    async fn refuse_early(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        e: S3Error,
    ) -> Result<bool> {
        let st = &ctx.state;
        if let Some((path, _, host_bucket)) = target_of(session.req_header(), st) {
            ctx.audit.resource = request::resource_of(&mount(st), path, host_bucket.as_deref());
        }
        self.write_error(session, ctx, e).await?;
        Ok(true)
    }

    /// An XML answer s3p made from backend calls, or the error of one (counted for its backend).
    async fn write_xml_or_error(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        answer: std::result::Result<String, S3Error>,
    ) -> Result<()> {
        match answer {
            Ok(body) => {
                let headers = vec![("content-type", "application/xml".to_string())];
                self.write_answer(session, ctx, 200, headers, Bytes::from(body))
                    .await
            }
            Err(e) => {
                if let Some(failure) = &e.cause {
                    self.runtime
                        .metrics
                        .backend_error(&failure.backend, &failure.kind.label());
                    ctx.audit.backend_answered(e.code);
                }
                self.write_error(session, ctx, e).await
            }
        }
    }

    /// Reads a request body whole, at most `limit` bytes, by the request's body deadline, held to the
    /// minimum client rate; the caller holds its bytes in the process-wide budget.
    async fn read_whole_body(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        limit: usize,
    ) -> std::result::Result<BytesMut, S3Error> {
        let limits = ctx.state.config.limits.clone();
        let deadline = tokio::time::Instant::from_std(
            ctx.upload
                .deadline
                .unwrap_or_else(|| Instant::now() + Duration::from_millis(limits.body_timeout_ms)),
        );
        // Grown as the body arrives (never reserved ahead from the announced length).
        let mut body = BytesMut::new();
        loop {
            let chunk = match tokio::time::timeout_at(deadline, session.read_request_body()).await {
                Err(_) => {
                    self.runtime.metrics.limit_hit("body_timeout_ms");
                    log::info!(
                        "request {}: body not whole within {} ms",
                        ctx.request_id,
                        limits.body_timeout_ms
                    );
                    return Err(S3Error::new(S3ErrorCode::RequestTimeout));
                }
                Ok(Err(e)) => {
                    log::info!("request {}: body not read: {e}", ctx.request_id);
                    return Err(S3Error::new(S3ErrorCode::IncompleteBody));
                }
                Ok(Ok(None)) => return Ok(body),
                Ok(Ok(Some(chunk))) => chunk,
            };
            ctx.upload.received += chunk.len() as u64;
            if body.len() + chunk.len() > limit {
                return Err(S3Error::new(S3ErrorCode::IncompleteBody));
            }
            if ctx
                .upload
                .pacing
                .below_min_rate(chunk.len(), &limits)
                .is_some()
            {
                self.runtime
                    .metrics
                    .limit_hit("min_client_rate_bytes_per_s");
                return Err(S3Error::new(S3ErrorCode::RequestTimeout));
            }
            body.extend_from_slice(&chunk);
        }
    }

    /// A DeleteObjects body: its length reserved in the budget, read whole and checked.
    async fn delete_request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        checks: &crate::upload::BodyChecks,
    ) -> std::result::Result<crate::upload::delete::DeleteRequest, S3Error> {
        ctx.held.body = Some(self.reserve_body(checks.length, ctx)?);
        let timeout = Duration::from_millis(ctx.state.config.limits.body_timeout_ms);
        ctx.upload.deadline = Some(Instant::now() + timeout);
        if crate::auth::Headers::Map(&session.req_header().headers)
            .iter()
            .any(|(n, v)| {
                n.eq_ignore_ascii_case("expect") && v.trim().eq_ignore_ascii_case("100-continue")
            })
        {
            session
                .write_continue_response()
                .await
                .map_err(|_| S3Error::new(S3ErrorCode::IncompleteBody))?;
        }
        let body = self
            .read_whole_body(session, ctx, checks.length as usize)
            .await?;
        checks.verify(&body)?;
        crate::upload::delete::parse_request(&body)
    }

    /// A small body read whole and verified before the backend request starts (see `BodyHold`); pingora
    /// then sends what it read (its retry buffer) through `request_body_filter`, decoded again.
    async fn verify_first(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        route: &ObjectRoute,
        limit: u64,
    ) -> std::result::Result<(), S3Error> {
        session.as_mut().enable_retry_buffering();
        let body = self
            .read_whole_body(session, ctx, limit as usize)
            .await?
            .freeze();
        let body = match &route.payload {
            Some(Payload::AwsChunked(plan)) => {
                let mut decoder = ChunkedDecoder::new(plan.clone());
                let decoded = decoder.feed(&body)?;
                decoder.end_of_body()?;
                decoded
            }
            _ => body,
        };
        if matches!(route.rewrite, Rewrite::Complete { .. }) {
            multipart::check_complete_body(&body)?;
        }
        Ok(())
    }

    /// A collected backend answer, rewritten into virtual terms (see `gateway::Rewrite`).
    fn rewritten_answer(&self, ctx: &mut RequestCtx) -> String {
        let answer = ctx.upload.answer.take().unwrap_or_default();
        let st = &ctx.state;
        let rewrite = ctx.route.as_ref().map(|r| &r.rewrite);
        let failed = |ctx: &mut RequestCtx, code: S3ErrorCode| {
            let mut e = S3Error::new(code);
            e.resource = Some(ctx.audit.resource.clone());
            ctx.audit.answered_with(code);
            xml::error(&e, &ctx.request_id)
        };
        if xml::root_name(&answer).as_deref() == Some("Error") {
            // S3 may answer a CompleteMultipartUpload 200 and put the error in the body.
            let code = xml::parse_error_code(&answer).unwrap_or_default();
            let code = crate::error::backend_entry_code(&code);
            ctx.audit.backend_answered(code);
            return failed(ctx, code);
        }
        match rewrite {
            Some(Rewrite::Initiate { data_source, key }) => {
                match xml::first_text(&answer, "UploadId").filter(|id| !id.is_empty()) {
                    Some(id) => multipart::initiate_result(
                        &st.config.bucket,
                        &format!("{data_source}/{key}"),
                        &st.uploads.seal(data_source, key, &id),
                    ),
                    None => failed(ctx, S3ErrorCode::InternalError),
                }
            }
            Some(Rewrite::ListParts { key, upload_id }) => {
                match multipart::list_parts_result(
                    &answer,
                    &st.config.bucket,
                    key,
                    upload_id,
                    &st.config.owner,
                ) {
                    Ok(x) => x,
                    Err(e) => {
                        log::warn!(
                            "request {}: unreadable ListParts answer: {e}",
                            ctx.request_id
                        );
                        failed(ctx, S3ErrorCode::InternalError)
                    }
                }
            }
            Some(Rewrite::Copy { part }) => {
                let root = if *part {
                    "CopyPartResult"
                } else {
                    "CopyObjectResult"
                };
                match xml::first_text(&answer, "ETag") {
                    Some(etag) => {
                        let modified = xml::first_text(&answer, "LastModified").unwrap_or_default();
                        let checksums: Vec<(String, String)> = multipart::CHECKSUM_ELEMENTS
                            .iter()
                            .filter_map(|n| xml::first_text(&answer, n).map(|v| (n.to_string(), v)))
                            .collect();
                        multipart::copy_result(root, &etag, &modified, &checksums)
                    }
                    None => failed(ctx, S3ErrorCode::InternalError),
                }
            }
            Some(Rewrite::Complete { location, key }) => {
                let etag = xml::first_text(&answer, "ETag").unwrap_or_default();
                let checksums: Vec<(String, String)> = multipart::CHECKSUM_ELEMENTS
                    .iter()
                    .filter_map(|n| xml::first_text(&answer, n).map(|v| (n.to_string(), v)))
                    .collect();
                multipart::complete_result(location, &st.config.bucket, key, &etag, &checksums)
            }
            _ => failed(ctx, S3ErrorCode::InternalError),
        }
    }

    /// Writes one audit line as `audit_overflow` says: dropped when the buffer is full, or waited for.
    async fn audit(&self, st: &State, line: &AuditRecord<'_>) {
        match st.config.audit_overflow {
            crate::config::AuditOverflow::Drop => self.runtime.audit.write(line),
            crate::config::AuditOverflow::Backpressure => {
                self.runtime.audit.write_waiting(line, AUDIT_MAX_WAIT).await
            }
        }
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
        if e.resource.is_none() && !ctx.audit.resource.is_empty() {
            e.resource = Some(ctx.audit.resource.clone());
        }
        ctx.audit.answered_with(e.code);
        // A refused request may still carry a body (an upload): do not drain it, close the connection.
        // A body of length 0 leaves nothing to drain: the connection goes on.
        let req = session.req_header();
        let body_left = req.headers.contains_key("transfer-encoding")
            || req
                .headers
                .get_all("content-length")
                .iter()
                .any(|v| v.as_bytes().trim_ascii() != b"0");
        if body_left && !session.is_body_done() {
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
            client: Client::default(),
            audit: AuditFacts::new(String::new()),
            route: None,
            error_body: None,
            backend_error: None,
            backend_failure: None,
            cors_origin: None,
            is_head: false,
            timing: Timing {
                started: Instant::now(),
                upstream_started: None,
                backend_latency: None,
            },
            held: Held::default(),
            pacing: Pacing::default(),
            upload: Upload::default(),
            batch: Vec::new(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.is_head = session.req_header().method == http::Method::HEAD;
        let peer = session.client_addr().and_then(|a| a.as_inet()).copied();
        let trusted = &ctx.state.config.trusted_proxies;
        ctx.client.ip = peer.map(|p| {
            if trusted.is_empty() {
                return p.ip();
            }
            let forwarded = session.req_header().headers.get_all("x-forwarded-for");
            let values: Vec<&str> = forwarded.iter().filter_map(|v| v.to_str().ok()).collect();
            crate::client_addr::client_address(p.ip(), values.into_iter(), trusted)
        });
        // The audit names the client as limits see it: behind a trusted proxy, the forwarded address.
        ctx.client.text = match (peer, ctx.client.ip) {
            (Some(p), Some(ip)) if p.ip() == ip => p.to_string(),
            (_, Some(ip)) => ip.to_string(),
            _ => String::new(),
        };
        let limits = &ctx.state.config.limits;
        crate::server::settings::client_session(session, limits);
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
            return self.refuse_early(session, ctx, e).await;
        }
        if self
            .runtime
            .unready
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            // Leaving: the client's next request goes through the balancer, to another replica.
            session.set_keepalive(None);
        }
        if self
            .runtime
            .draining
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            session.set_keepalive(None);
            let e = S3Error::with_message(
                S3ErrorCode::ServiceUnavailable,
                "The server is shutting down.",
            );
            return self.refuse_early(session, ctx, e).await;
        }
        let (guard, count) = InFlight::enter(&self.runtime);
        ctx.held.in_flight = Some(guard);
        if count > limits.max_concurrent_requests as i64 {
            self.runtime.metrics.limit_hit("max_concurrent_requests");
            let e = S3Error::slow_down("Too many requests at once; retry later.", 1);
            return self.refuse_early(session, ctx, e).await;
        }
        // One client address may hold at most its share too (a trusted proxy that forwarded no
        // address is many clients at once: exempt).
        if let Some(ip) = ctx.client.ip {
            if !crate::client_addr::is_trusted(&ctx.state.config.trusted_proxies, ip) {
                let limit = ctx.state.config.limits.per_client();
                ctx.held.client = self.runtime.concurrency.enter_client(ip, limit);
                if ctx.held.client.is_none() {
                    self.runtime
                        .metrics
                        .limit_hit("max_concurrent_requests_per_client");
                    let e = S3Error::slow_down(
                        "Too many requests from this client at once; retry later.",
                        1,
                    );
                    return self.refuse_early(session, ctx, e).await;
                }
            }
        }
        if ctx.state.config.audit_overflow == crate::config::AuditOverflow::Backpressure
            && self.runtime.audit.is_full()
        {
            // Nowhere to record the access: refused until the audit log's consumer catches up.
            self.runtime.metrics.limit_hit("audit_buffer");
            let e = S3Error::slow_down("The audit log is not keeping up; retry later.", 1);
            return self.refuse_early(session, ctx, e).await;
        }
        ctx.cors_origin = session
            .req_header()
            .headers
            .get("origin")
            .and_then(|o| o.to_str().ok())
            .filter(|o| ctx.state.config.cors.allows(o))
            .map(str::to_string);
        let decision = self.decide(session, ctx);
        self.carry_out(session, ctx, decision).await
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let route = ctx
            .route
            .as_ref()
            .ok_or_else(|| internal("no object route"))?;
        // Every attempt reads the body from its start (pingora replays what it kept of it when it retries
        // on a stale pooled connection): the decoder and the counts start again too.
        if let Some(Payload::AwsChunked(plan)) = &route.payload {
            ctx.upload.decoder = Some(Box::new(ChunkedDecoder::new(plan.clone())));
        }
        ctx.upload.received = 0;
        ctx.upload.pacing = Pacing::default();
        let backend = &route.backend;
        let limits = &ctx.state.config.limits;
        let peer = crate::server::settings::backend_peer(backend, route.sni.clone(), limits);
        ctx.timing.upstream_started = Some(Instant::now());
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let route = ctx
            .route
            .as_ref()
            .ok_or_else(|| internal("no object route"))?;
        // A new head with the route's headers only: the client's credentials and anything else not
        // allow-listed stay here.
        let mut head = RequestHeader::build(
            upstream.method.clone(),
            route.path_and_query.as_bytes(),
            Some(route.headers.len() + 5),
        )?;
        for (name, value) in &route.headers {
            head.insert_header(name.to_string(), value)?;
        }
        head.insert_header("host", &route.host)?;
        // The body's length as the backend receives it (decoded, for signed aws-chunked), or chunked
        // when the client sent none; no body: neither.
        match route.payload.as_ref().map(Payload::backend_length) {
            Some(Some(length)) => head.insert_header("content-length", length.to_string())?,
            Some(None) => head.insert_header("transfer-encoding", "chunked")?,
            // A PUT or POST without a body (a copy, a new multipart upload) still says so: S3 wants a
            // length on both.
            None if matches!(head.method, http::Method::PUT | http::Method::POST) => {
                head.insert_header("content-length", "0")?
            }
            None => {}
        }
        let signed_headers: Vec<(&str, &str)> = route
            .headers
            .iter()
            .map(|(n, v)| (n.as_ref(), v.as_str()))
            .collect();
        let backend = &route.backend;
        let payload_hash = route.payload.as_ref().map_or(
            crate::auth::sigv4::UNSIGNED_PAYLOAD,
            Payload::backend_payload_hash,
        );
        let signed = match backend.identity().await {
            Ok(identity) => backend.sign(
                &identity,
                &crate::backend::ToSign {
                    method: head.method.as_str(),
                    host: &route.host,
                    path_and_query: &route.path_and_query,
                    headers: &signed_headers,
                    payload_hash,
                },
                SystemTime::now(),
            ),
            Err(e) => Err(e),
        };
        // A failure carries its S3 error as the cause: fail_to_proxy answers with it.
        let signature = signed.map_err(|e| {
            Error::because(ErrorType::InternalError, "cannot sign backend request", e)
        })?;
        for (name, value) in signature {
            head.insert_header(name, value)?;
        }
        *upstream = head;
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
        ctx.timing.backend_latency = ctx.timing.upstream_started.map(|t| t.elapsed());
        let status = resp.status.as_u16();
        if status >= 400 || (300..400).contains(&status) && status != 304 {
            // The backend's error answer becomes s3p's own, in virtual terms: its headers and body are
            // never relayed (they name the backend's bucket and keys).
            log::debug!("request {}: backend answered {status}", ctx.request_id);
            let not_found = ctx.route.as_ref().map(|r| r.not_found);
            let e = crate::error::backend_answer(status, None, not_found);
            ctx.audit.backend_answered(e.code);
            if crate::gateway::is_backend_failure(e.code) {
                // Not an answer to the client's question (a missing key, a bad parts list) but a
                // backend failing or refusing s3p itself.
                ctx.backend_failure = Some(FailureKind::Status(status));
            }
            let no_body = resp
                .headers
                .get("content-length")
                .is_some_and(|v| v.as_bytes() == b"0");
            if no_body && !ctx.is_head {
                // No body will come, so the body filter cannot put the error in its place: answer
                // through fail_to_proxy (this connection is then not reused).
                return Err(Error::because(
                    ErrorType::HTTPStatus(status),
                    "backend error answer",
                    e,
                ));
            }
            // Rewritten here and in the body filter, so that pingora reads the backend's body to its
            // end and both connections stay open (clients probe missing keys with HEAD all the time).
            // The body is written at the end of the backend's, whose code may pass (chunked: its
            // length is known only then).
            let mut head = ResponseHeader::build(e.status(), Some(6))?;
            head.insert_header("content-type", "application/xml")?;
            if ctx.is_head || !crate::error::backend_body_may_decide(status, not_found) {
                // The answer is known now (a HEAD sends no body; most statuses have one code): its
                // length too, as for every answer s3p writes.
                let mut e = e.clone();
                e.resource = Some(ctx.audit.resource.clone());
                let body = xml::error(&e, &ctx.request_id);
                head.insert_header("content-length", body.len().to_string())?;
                ctx.error_body = Some(Bytes::from(body));
            } else {
                ctx.error_body = Some(Bytes::new());
            }
            if let Some(s) = e.retry_after_s {
                head.insert_header("retry-after", s.to_string())?;
            }
            head.insert_header("x-amz-request-id", &ctx.request_id)?;
            head.insert_header("x-amz-id-2", &ctx.request_id)?;
            add_cors_headers(&mut head, ctx)?;
            *resp = head;
            ctx.backend_error = Some((status, BytesMut::new()));
            return Ok(());
        }
        let names: Vec<http::HeaderName> = resp.headers.keys().cloned().collect();
        for name in names {
            if !crate::gateway::forwarded_response_header(name.as_str()) {
                resp.remove_header(&name);
            }
        }
        // The backend's version id names its objects (on some backends it is an upload id): sealed.
        let version = resp
            .headers
            .get("x-amz-version-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if let Some(v) = version {
            match ctx.route.as_ref().and_then(|r| r.object.as_ref()) {
                Some(o) => {
                    let sealed = ctx.state.versions.seal(&o.data_source, &o.key, &v);
                    resp.insert_header("x-amz-version-id", sealed)?;
                }
                None => {
                    resp.remove_header("x-amz-version-id");
                }
            }
        }
        let rewrites = ctx
            .route
            .as_ref()
            .is_some_and(|r| r.rewrite != Rewrite::None);
        if rewrites && status == 200 {
            // The body is collected and rewritten (response_body_filter): its length changes.
            resp.remove_header("content-length");
            resp.insert_header("content-type", "application/xml")?;
            ctx.upload.answer = Some(BytesMut::new());
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
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if ctx.error_body.is_some() {
            // The backend's error body is read and dropped; s3p's own goes out in its place, whole, at
            // the end. The backend's code is logged, for operators, and passes when allow-listed.
            if let (Some((_, seen)), Some(chunk)) = (&mut ctx.backend_error, body.as_ref()) {
                let room = 4096usize.saturating_sub(seen.len());
                seen.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            *body = None;
            if end_of_stream {
                let (status, seen) = ctx.backend_error.take().unwrap_or_default();
                let code = xml::parse_error_code(&seen).unwrap_or_default();
                if let Some(route) = &ctx.route {
                    log::info!(
                        "request {}: backend {} answered {status} {code}",
                        ctx.request_id,
                        route.backend.config.name,
                    );
                }
                let written = ctx.error_body.take().unwrap_or_default();
                if !written.is_empty() {
                    // Decided with the head (its length is in it).
                    *body = Some(written);
                    return Ok(None);
                }
                let not_found = ctx.route.as_ref().map(|r| r.not_found);
                let mut e = crate::error::backend_answer(status, Some(&code), not_found);
                e.resource = Some(ctx.audit.resource.clone());
                ctx.audit.backend_answered(e.code);
                *body = Some(Bytes::from(xml::error(&e, &ctx.request_id)));
            }
            return Ok(None);
        }
        if let Some(answer) = &mut ctx.upload.answer {
            if let Some(chunk) = body.take() {
                if answer.len() + chunk.len() > MAX_REWRITTEN_ANSWER {
                    return Err(Error::explain(
                        ErrorType::InternalError,
                        "backend answer too long to rewrite",
                    ));
                }
                answer.extend_from_slice(&chunk);
            }
            *body = if end_of_stream {
                Some(Bytes::from(self.rewritten_answer(ctx)))
            } else {
                Some(Bytes::new())
            };
            return Ok(None);
        }
        let Some(chunk) = body.as_ref() else {
            return Ok(None);
        };
        let limits = &ctx.state.config.limits;
        if let Some((taken, secs)) = ctx.pacing.below_min_rate(chunk.len(), limits) {
            self.runtime
                .metrics
                .limit_hit("min_client_rate_bytes_per_s");
            log::info!(
                "request {}: the client took {taken} bytes in {secs:.1} s, less than {} bytes/s: response cut",
                ctx.request_id,
                limits.min_client_rate_bytes_per_s
            );
            return Err(Error::explain(
                ErrorType::WriteTimedout,
                "client below the minimum read rate",
            ));
        }
        Ok(None)
    }

    /// The body of an upload, on its way to the backend: counted, held to the minimum rate, and
    /// decoded (with its signatures and checksum checked) when it is aws-chunked.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let len = body.as_ref().map_or(0, Bytes::len);
        ctx.upload.received += len as u64;
        let limits = &ctx.state.config.limits;
        if ctx.upload.deadline.is_some_and(|d| Instant::now() > d) {
            // A body the backend reads whole (CompleteMultipartUpload) holds memory there and here.
            self.runtime.metrics.limit_hit("body_timeout_ms");
            return Err(Error::because(
                ErrorType::ReadTimedout,
                "body not whole within body_timeout_ms",
                S3Error::new(S3ErrorCode::RequestTimeout),
            ));
        }
        if let Some((taken, secs)) = ctx.upload.pacing.below_min_rate(len, limits) {
            self.runtime
                .metrics
                .limit_hit("min_client_rate_bytes_per_s");
            log::info!(
                "request {}: the client sent {taken} bytes in {secs:.1} s, less than {} bytes/s: upload cut",
                ctx.request_id,
                limits.min_client_rate_bytes_per_s
            );
            return Err(Error::because(
                ErrorType::ReadTimedout,
                "client below the minimum send rate",
                S3Error::new(S3ErrorCode::RequestTimeout),
            ));
        }
        let Some(decoder) = &mut ctx.upload.decoder else {
            return Ok(());
        };
        let refused = |e: S3Error| {
            Error::because(ErrorType::InvalidHTTPHeader, "aws-chunked body refused", e)
        };
        if let Some(chunk) = body.as_ref() {
            // Empty means "nothing to pass on yet"; `None` would end the backend's body.
            *body = Some(decoder.feed(chunk).map_err(refused)?);
        }
        if end_of_stream {
            decoder.end_of_body().map_err(refused)?;
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let error = match e.esource() {
            // s3p's own error, carried as the cause (a backend error answer, a signing failure).
            _ if s3_cause(e).is_some() => s3_cause(e).cloned(),
            ErrorSource::Downstream => None,
            ErrorSource::Upstream => {
                ctx.backend_failure = Some(failure_kind(e.etype()));
                // The error's own text names the peer, whose SNI holds the backend bucket with
                // virtual-host addressing: only its kind and the backend's name are logged.
                log::warn!(
                    "request {}: backend {} failed: {}",
                    ctx.request_id,
                    ctx.route
                        .as_ref()
                        .map_or("-", |r| r.backend.config.name.as_str()),
                    e.etype().as_str()
                );
                ctx.audit.backend_answered(S3ErrorCode::ServiceUnavailable);
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
                // This connection is not reused (can_reuse_downstream below): say so.
                session.set_keepalive(None);
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
            ctx.audit.resource
        )
    }

    /// A backend's 404/403/412/416 is an ordinary S3 answer (already in the audit line), not an error
    /// worth an ERROR line from pingora.
    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, error: &Error) -> bool {
        s3_cause(error).is_some() || ctx.audit.reason.is_some()
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        // The request keeps its places in the limits until its audit lines are written: with
        // back-pressure, a stalled audit log then holds new requests off through those limits too.
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let bytes = session.body_bytes_sent() as u64;
        let duration = ctx.timing.started.elapsed();
        let audit = &ctx.audit;
        // Metric labels only ever hold configured names of allowed requests: a client cannot grow the
        // label set by asking for names that do not exist.
        let data_source = match (&audit.data_source, audit.verdict) {
            (Some(ds), Verdict::Allowed) if ctx.state.config.data_sources.contains_key(ds) => {
                ds.as_str()
            }
            _ => "",
        };
        self.runtime
            .metrics
            .request(audit.operation, data_source, status, bytes, duration);
        if let Some(d) = ctx.timing.backend_latency {
            self.runtime.metrics.backend_duration.observe(d);
        }
        // Object requests (listings count theirs in carry_out).
        if let (Some(route), Some(kind)) = (&ctx.route, ctx.backend_failure) {
            self.runtime
                .metrics
                .backend_error(&route.backend.config.name, &kind.label());
        }
        let backend_ms = ctx.timing.backend_latency.map(|d| d.as_secs_f64() * 1000.0);
        let request_line = AuditRecord {
            version: crate::server::audit::SCHEMA_VERSION,
            time: crate::server::audit::now_rfc3339(),
            request_id: &ctx.request_id,
            api_key: audit.key_name.as_deref(),
            client: &ctx.client.text,
            operation: audit.operation,
            data_source: audit.data_source.as_deref(),
            resource: &audit.resource,
            decision: audit.verdict,
            reason: audit.reason,
            status,
            bytes_sent: bytes,
            bytes_received: ctx.upload.received,
            duration_ms: duration.as_secs_f64() * 1000.0,
            backend_ms,
            batch: None,
        };
        self.audit(&ctx.state, &request_line).await;
        // One line per object of a DeleteObjects request: which object went, which did not and why.
        for o in &ctx.batch {
            let resource = format!("/{}/{}", ctx.state.config.bucket, o.key);
            let mut facts = AuditFacts::new(String::new());
            facts.verdict = Verdict::Allowed;
            if let Some(code) = o.error {
                if crate::gateway::is_backend_failure(code) && o.data_source.is_some() {
                    facts.backend_answered(code);
                } else {
                    facts.answered_with(code);
                }
            }
            let line = AuditRecord {
                operation: "DeleteObject",
                data_source: o.data_source.as_deref(),
                resource: &resource,
                decision: facts.verdict,
                reason: facts.reason,
                bytes_sent: 0,
                bytes_received: 0,
                backend_ms: None,
                batch: Some(audit.operation),
                time: request_line.time.clone(),
                ..request_line
            };
            self.audit(&ctx.state, &line).await;
        }
        ctx.held = Held::default();
        // The audit line is the record of access; this one is for debugging (RUST_LOG=s3p=debug).
        log::debug!(
            "request_id={} client={} key={:?} op={} resource={:?} status={} error={} bytes={} duration_ms={:.3} backend_ms={}{}",
            ctx.request_id,
            ctx.client.text,
            audit.key_name.as_deref().unwrap_or("-"),
            audit.operation,
            audit.resource,
            status,
            audit.reason.unwrap_or("-"),
            bytes,
            duration.as_secs_f64() * 1000.0,
            backend_ms.map(|d| format!("{d:.3}")).unwrap_or_else(|| "-".into()),
            e.map(|e| format!(" failure={:?}", e.etype())).unwrap_or_default(),
        );
    }
}
