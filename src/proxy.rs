//! The pingora glue: a thin `ProxyHttp` that carries out what `gateway` decided. Every decision is made
//! by pure functions (`gateway::decide` for the request, `gateway::backend_head` and
//! `gateway::backend_error_body` for the backend's answer, `gateway::body_arrived` for a body read
//! whole, `upload::answers::rewrite_answer` for answers rewritten); this file holds the I/O and the
//! run-time state (limits, budgets, the audit log).
//!
//! request_filter:  operational guards (head size, draining, audit buffer, in-flight limits) ->
//!                  gateway::decide -> throttle and per-key limits -> answer | list | read a body | forward
//! upstream_peer / upstream_request_filter:  the decided route's backend; its headers, re-signed (SigV4)
//! upstream_response_filter / body filters:  what gateway::backend_head says; answers rewritten; readers
//!                                          and uploaders below the minimum rate cut
//! logging:  the audit lines and the metrics of the request

use crate::auth::{Headers, RequestView};
use crate::error::{FailureKind, S3Error};
use crate::gateway::{AfterBody, BackendHead, Decision, Incoming, NeedsBody, Outcome, WithBody};
use crate::request::{self, Mount};
use crate::server::admission::{self, Held};
use crate::server::ctx::{BackendError, RequestCtx, MAX_REWRITTEN_ANSWER};
use crate::server::pacing::Pacing;
use crate::server::respond;
use crate::server::{own_calls, stamp, Runtime};
use crate::state::{SharedState, State};
use crate::upload::chunked::ChunkedDecoder;
use crate::upload::Payload;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

pub struct S3Proxy {
    pub state: SharedState,
    pub runtime: Arc<Runtime>,
}

fn mount(st: &State) -> Mount<'_> {
    Mount {
        base_path: &st.config.base_path,
        bucket: &st.config.bucket,
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

/// A pingora error carrying s3p's answer to give (`fail_to_proxy` writes it).
fn refusal(etype: ErrorType, what: &'static str, e: S3Error) -> Box<Error> {
    Error::because(etype, what, e)
}

/// The header's values as text (values that are not UTF-8 are left out).
fn header_values<'r>(
    req: &'r RequestHeader,
    name: &str,
) -> impl DoubleEndedIterator<Item = &'r str> {
    req.headers
        .get_all(name)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
}

impl S3Proxy {
    /// The decision for this request (see `gateway`), with the request's headers and path read once. A
    /// key only the governance service knows is looked up first (`server::entitlements`: cached, fail
    /// closed: `Err` is the refusal).
    async fn decide(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<Decision, S3Error> {
        let st = ctx.state.clone();
        let req = session.req_header();
        let Some((raw_path, raw_query, host_bucket)) = target_of(req, &st) else {
            return Ok(Decision::invalid_uri());
        };
        let view = RequestView {
            method: req.method.as_str(),
            raw_path,
            raw_query,
            headers: Headers::Map(&req.headers),
        };
        let (rt, config) = (&self.runtime, &st.config);
        let (resolved, source) = crate::server::entitlements::resolve_request(
            &rt.entitlements,
            &rt.metrics,
            config,
            &st.keys,
            &view,
        )
        .await?;
        ctx.key_source = source;
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let proto = || header_values(req, "x-forwarded-proto").next();
        let scheme = crate::client_addr::scheme(tls, peer, proto, &config.trusted_proxies);
        let (host_bucket, now) = (host_bucket.as_deref(), SystemTime::now());
        let incoming = Incoming {
            view: &view,
            host_bucket,
            scheme,
            resolved,
            now,
        };
        Ok(crate::gateway::decide(&st, &incoming))
    }

    /// Carries out a decision. `Ok(false)`: the request goes on to its backend.
    async fn carry_out(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        mut d: Decision,
    ) -> Result<bool> {
        admission::apply(&self.runtime, &mut d, ctx);
        ctx.audit = d.audit;
        if d.close {
            session.set_keepalive(None);
        }
        let key = d.key.as_ref();
        let route = match d.outcome {
            Outcome::Answer(a) => {
                respond::write_answer(session, &ctx.answering(), a.status, a.headers, a.body)
                    .await?;
                return Ok(true);
            }
            Outcome::Refuse(e) => {
                self.write_error(session, ctx, e).await?;
                return Ok(true);
            }
            Outcome::List(_) | Outcome::ListUploads(_) => {
                let key = key.ok_or_else(|| internal("listing without a key"))?;
                let st = ctx.state.clone();
                let answer = own_calls::serve_listing(&self.runtime, &st, key, d.outcome).await;
                self.write_xml_or_error(session, ctx, answer).await?;
                return Ok(true);
            }
            Outcome::NeedsBody(needs) => match self.read_body_for(session, ctx, needs).await {
                Err(e) => {
                    self.write_error(session, ctx, e).await?;
                    return Ok(true);
                }
                Ok(WithBody::DeleteObjects(request)) => {
                    let key = key.ok_or_else(|| internal("DeleteObjects without a key"))?;
                    let st = &ctx.state;
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
                    let body = Ok(served.body);
                    self.write_xml_or_error(session, ctx, body).await?;
                    return Ok(true);
                }
                Ok(WithBody::Sts(resolved, body)) => {
                    crate::server::sts::answer(&self.runtime, session, ctx, resolved, body).await?;
                    return Ok(true);
                }
                // Verified: pingora sends what it read (its retry buffer) through
                // `request_body_filter`, decoded again.
                Ok(WithBody::Forward(route)) => route,
            },
            Outcome::Forward(route) => {
                if route.expect_continue {
                    // Authenticated and authorised: the client may send its body now.
                    session.write_continue_response().await?;
                }
                route
            }
        };
        ctx.route = Some(route);
        Ok(false)
    }

    /// Reads a body the decision needs whole: the client told to go on when it asked, read by the
    /// body deadline and at the minimum rate, at most `limit` bytes, then handed to the decision.
    async fn read_body_for(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        needs: NeedsBody,
    ) -> std::result::Result<WithBody, S3Error> {
        if needs.expect_continue {
            session
                .write_continue_response()
                .await
                .map_err(|_| S3Error::incomplete_body())?;
        }
        if matches!(needs.then, AfterBody::Forward(_)) {
            // Kept by pingora to send to the backend once verified (bodies up to 64 KiB).
            session.as_mut().enable_retry_buffering();
        }
        let limits = &ctx.state.config.limits;
        let reading = crate::server::body::Reading {
            limit: needs.limit,
            deadline: ctx
                .upload
                .deadline
                .unwrap_or_else(|| Instant::now() + Duration::from_millis(limits.body_timeout_ms)),
            limits,
            metrics: &self.runtime.metrics,
            request_id: &ctx.request_id,
        };
        let (pacing, received) = (&mut ctx.upload.pacing, &mut ctx.upload.received);
        let body = crate::server::body::read_whole(session, &reading, pacing, received).await?;
        crate::gateway::body_arrived(needs.then, body.freeze())
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
            Ok(body) => respond::write_xml(session, &ctx.answering(), body).await,
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
        respond::write_error(session, &ctx.answering(), &e).await
    }
}

#[async_trait]
impl ProxyHttp for S3Proxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(self.state.load_full())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.is_head = session.req_header().method == http::Method::HEAD;
        let peer = session.client_addr().and_then(|a| a.as_inet()).copied();
        let trusted = &ctx.state.config.trusted_proxies;
        let forwarded = || header_values(session.req_header(), "x-forwarded-for");
        // The audit names the client as limits see it: behind a trusted proxy, the forwarded address.
        ctx.client = crate::client_addr::client_of(peer, forwarded, trusted);
        let limits = &ctx.state.config.limits;
        crate::server::settings::client_session(session, limits);
        if crate::server::settings::head_bytes(session.req_header()) > limits.max_header_bytes {
            session.set_keepalive(None);
            let e = S3Error::header_too_large(limits.max_header_bytes);
            return self.refuse_early(session, ctx, e).await;
        }
        let flag = |f: &std::sync::atomic::AtomicBool| f.load(std::sync::atomic::Ordering::Relaxed);
        if flag(&self.runtime.unready) {
            // Leaving: the client's next request goes through the balancer, to another replica.
            session.set_keepalive(None);
        }
        if flag(&self.runtime.draining) {
            session.set_keepalive(None);
            return self
                .refuse_early(session, ctx, S3Error::shutting_down())
                .await;
        }
        let client = ctx.client.ip;
        if let Err(e) = admission::admit(&self.runtime, &ctx.state.config, client, &mut ctx.held) {
            return self.refuse_early(session, ctx, e).await;
        }
        ctx.cors_origin = header_values(session.req_header(), "origin")
            .next()
            .filter(|o| ctx.state.config.cors.allows(o))
            .map(str::to_string);
        match self.decide(session, ctx).await {
            Ok(decision) => self.carry_out(session, ctx, decision).await,
            Err(e) => self.refuse_early(session, ctx, e).await,
        }
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
        // on a stale pooled connection, or sends a body verified first): the decoder and the counts
        // start again too.
        if let Some(Payload::AwsChunked(plan)) = &route.payload {
            ctx.upload.decoder = Some(Box::new(ChunkedDecoder::new(plan.clone())));
        }
        ctx.upload.received = 0;
        ctx.upload.pacing = Pacing::default();
        let limits = &ctx.state.config.limits;
        let peer = crate::server::settings::backend_peer(&route.backend, route.sni.clone(), limits);
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
        let head = crate::server::upstream::signed_head(route, &upstream.method).await?;
        *upstream = head;
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = resp.status.as_u16();
        let route = ctx
            .route
            .as_ref()
            .ok_or_else(|| internal("no object route"))?;
        let collect = match crate::gateway::backend_head(status, route) {
            BackendHead::Interim => return crate::server::upstream::strip_headers(resp),
            BackendHead::Error {
                error,
                body_decides,
                backend_failed,
            } => {
                ctx.timing.backend_latency = ctx.timing.upstream_started.map(|t| t.elapsed());
                log::debug!("request {}: backend answered {status}", ctx.request_id);
                ctx.audit.backend_answered(error.code);
                if backend_failed {
                    ctx.backend_failure = Some(FailureKind::Status(status));
                }
                let no_body = resp
                    .headers
                    .get("content-length")
                    .is_some_and(|v| v.as_bytes() == b"0");
                if no_body && !ctx.is_head {
                    // No body will come, so the body filter cannot put the error in its place: answer
                    // through fail_to_proxy (this connection is then not reused).
                    return Err(refusal(
                        ErrorType::HTTPStatus(status),
                        "backend error answer",
                        error,
                    ));
                }
                // Replaced here and in the body filter, so that pingora reads the backend's body to its
                // end and both connections stay open (clients probe missing keys with HEAD all the
                // time).
                let error = error.resource(ctx.audit.resource.clone());
                let (head, decided) = respond::error_head(&ctx.answering(), &error, !body_decides)?;
                *resp = head;
                let seen = BytesMut::new();
                ctx.backend_error = Some(BackendError {
                    status,
                    seen,
                    decided,
                });
                return Ok(());
            }
            BackendHead::Pass { collect } => collect,
        };
        ctx.timing.backend_latency = ctx.timing.upstream_started.map(|t| t.elapsed());
        crate::server::upstream::pass_headers(resp, route, &ctx.state.versions)?;
        if collect {
            // The body is collected and rewritten (response_body_filter): its length changes.
            resp.remove_header("content-length");
            resp.insert_header("content-type", "application/xml")?;
            ctx.upload.answer = Some(BytesMut::new());
        }
        stamp::stamp(resp, &ctx.request_id, ctx.cors_origin.as_deref())?;
        Ok(())
    }

    /// A reader too slow for the minimum rate is cut (see `server::pacing`).
    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if ctx.backend_error.is_some() {
            // The backend's error body is read and dropped; s3p's own goes out in its place.
            *body = ctx.replace_backend_error_body(body.take(), end_of_stream);
            return Ok(None);
        }
        if let Some(answer) = &mut ctx.upload.answer {
            if let Some(chunk) = body.take() {
                if answer.len() + chunk.len() > MAX_REWRITTEN_ANSWER {
                    return Err(internal("backend answer too long to rewrite"));
                }
                answer.extend_from_slice(&chunk);
            }
            *body = Some(if end_of_stream {
                ctx.rewritten_answer()
            } else {
                Bytes::new()
            });
            return Ok(None);
        }
        let Some(chunk) = body.as_ref() else {
            return Ok(None);
        };
        let limits = &ctx.state.config.limits;
        if !ctx.pacing.keeps_up(
            chunk.len(),
            limits,
            &self.runtime.metrics,
            &ctx.request_id,
            "response",
        ) {
            return Err(Error::explain(
                ErrorType::WriteTimedout,
                "client below the minimum read rate",
            ));
        }
        Ok(None)
    }

    /// The body of an upload, on its way to the backend: counted, held to the minimum rate and the body
    /// deadline, and decoded (with its signatures and checksum checked) when it is aws-chunked.
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
            let e = S3Error::request_timeout();
            return Err(refusal(
                ErrorType::ReadTimedout,
                "body not whole in time",
                e,
            ));
        }
        let metrics = &self.runtime.metrics;
        if !ctx
            .upload
            .pacing
            .keeps_up(len, limits, metrics, &ctx.request_id, "upload")
        {
            let e = S3Error::request_timeout();
            return Err(refusal(
                ErrorType::ReadTimedout,
                "client below the minimum send rate",
                e,
            ));
        }
        let Some(decoder) = &mut ctx.upload.decoder else {
            return Ok(());
        };
        let refused = |e| refusal(ErrorType::InvalidHTTPHeader, "aws-chunked body refused", e);
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
                ctx.backend_failure = Some(crate::server::upstream::failure_kind(e.etype()));
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
                let unavailable = S3Error::storage_unavailable();
                ctx.audit.backend_answered(unavailable.code);
                Some(unavailable)
            }
            _ => {
                log::error!("request {}: {e}", ctx.request_id);
                Some(S3Error::internal())
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
        let finished = crate::server::report::Finished {
            request_id: &ctx.request_id,
            client: &ctx.client.text,
            audit: &ctx.audit,
            status: session.response_written().map_or(0, |r| r.status.as_u16()),
            bytes_sent: session.body_bytes_sent() as u64,
            bytes_received: ctx.upload.received,
            duration: ctx.timing.started.elapsed(),
            backend_latency: ctx.timing.backend_latency,
            // Object requests (listings count theirs in carry_out).
            backend_failure: ctx
                .route
                .as_ref()
                .zip(ctx.backend_failure)
                .map(|(r, kind)| (r.backend.config.name.as_str(), kind)),
            batch: &ctx.batch,
            key_source: ctx.key_source,
            failure: e.map(|e| format!("{:?}", e.etype())),
        };
        crate::server::report::report(&self.runtime, &ctx.state.config, &finished).await;
        // The request kept its places in the limits until its audit lines were written: with
        // back-pressure, a stalled audit log holds new requests off through those limits too.
        ctx.held = Held::default();
    }
}
