//! The run-time limits a request must pass, with the places it then holds: before the decision, its
//! place in the in-flight counts (in all, per client address) and room in the audit log; after it, the
//! throttle of failed authentications, its key's share of the in-flight requests, a copy's place in the
//! copy limits, and the bytes of a body held whole (or read whole by the backend) in the body budget.
//! Each refusal is counted in `s3p_limit_hits_total` and answered 503 SlowDown. The decision itself is
//! pure (`gateway`); these counts are shared run-time state.

use super::ctx::RequestCtx;
use super::throttle::{CopyRefusal, FailureSubject, Slot};
use super::{InFlight, Runtime};
use crate::config::{ApiKey, AuditOverflow, Config};
use crate::error::S3Error;
use crate::gateway::{AuthFailure, BodyHold, Decision, Outcome};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Places a request holds; dropping them (however the request ends, a panic included) gives them back.
#[derive(Default)]
pub struct Held {
    pub in_flight: Option<InFlight>,
    pub client: Option<Slot>,
    pub key: Option<Slot>,
    /// A copy's place in the copy limits.
    pub copy: Option<Slot>,
    /// Body bytes held in the process-wide budget.
    pub body: Option<Slot>,
}

/// A limit refused a request: counted, and answered 503 SlowDown.
fn limited(runtime: &Runtime, limit: &'static str, message: &str, retry_s: u64) -> S3Error {
    runtime.metrics.limit_hit(limit);
    S3Error::slow_down(message, retry_s)
}

/// Before the decision: the in-flight counts (in all, and per client address, trusted proxies that
/// forwarded no address exempt), and room in the audit log when it must lose no line.
pub fn admit(
    runtime: &Arc<Runtime>,
    config: &Config,
    client: Option<IpAddr>,
    held: &mut Held,
) -> Result<(), S3Error> {
    let limits = &config.limits;
    let (guard, count) = InFlight::enter(runtime);
    held.in_flight = Some(guard);
    if count > limits.max_concurrent_requests as i64 {
        let message = "Too many requests at once; retry later.";
        return Err(limited(runtime, "max_concurrent_requests", message, 1));
    }
    if let Some(ip) =
        client.filter(|ip| !crate::client_addr::is_trusted(&config.trusted_proxies, *ip))
    {
        held.client = runtime.concurrency.enter_client(ip, limits.per_client());
        if held.client.is_none() {
            let message = "Too many requests from this client at once; retry later.";
            return Err(limited(
                runtime,
                "max_concurrent_requests_per_client",
                message,
                1,
            ));
        }
    }
    if config.audit_overflow == AuditOverflow::Backpressure && runtime.audit.is_full() {
        // Nowhere to record the access: refused until the audit log's consumer catches up.
        let message = "The audit log is not keeping up; retry later.";
        return Err(limited(runtime, "audit_buffer", message, 1));
    }
    Ok(())
}

/// A failed authentication: counted against its subject; once the subject is over its limit, the
/// SlowDown to answer instead of the real error. Verified credentials are never throttled, whatever
/// others did from the same address.
pub fn throttle(
    runtime: &Runtime,
    failure: &AuthFailure,
    code: &str,
    client: Option<IpAddr>,
) -> Option<S3Error> {
    runtime.metrics.auth_failure(code);
    let who = match &failure.known_key_id {
        Some(id) => FailureSubject::ClientAndKey(client, id),
        None => FailureSubject::Client(client),
    };
    let now = Instant::now();
    if let Some(wait) = runtime.throttle.blocked_for(who, now) {
        let message = "Too many failed authentications; retry later.";
        return Some(limited(
            runtime,
            "auth_failures_per_minute",
            message,
            wait.as_secs().max(1),
        ));
    }
    if failure.is_denial {
        runtime.throttle.record_failure(who, now);
    }
    None
}

/// What the decision leaves to shared run-time state: the throttle of failed authentications, the
/// places a verified key's request holds, and the body an STS call sends (no key yet: it
/// authenticates with its body). A limit that refuses replaces the decision's outcome.
pub fn apply(runtime: &Arc<Runtime>, d: &mut Decision, ctx: &mut RequestCtx) {
    let config = &ctx.state.config;
    let held = match (&d.auth_failure, &d.outcome, &d.key) {
        (Some(failure), Outcome::Refuse(e), _) => {
            throttle(runtime, failure, e.code.as_str(), ctx.client.ip).map(Err)
        }
        (None, Outcome::NeedsBody(n), None) => {
            Some(hold_body(runtime, n.limit, &mut ctx.held, config))
        }
        (None, Outcome::Refuse(_), _) | (_, _, None) => None,
        (_, outcome, Some(key)) => Some(hold(runtime, config, key, outcome, &mut ctx.held)),
    };
    match held {
        Some(Err(e)) => d.outcome = Outcome::Refuse(e),
        Some(Ok(deadline)) => ctx.upload.deadline = deadline,
        None => {}
    }
}

/// After the decision, for a verified key: its share of the in-flight requests, a copy's place, and the
/// body bytes held in the budget. Returns the body's deadline when a body is held.
pub fn hold(
    runtime: &Arc<Runtime>,
    config: &Config,
    key: &ApiKey,
    outcome: &Outcome,
    held: &mut Held,
) -> Result<Option<Instant>, S3Error> {
    let limits = &config.limits;
    let concurrency = &runtime.concurrency;
    // One key may hold at most its share of the concurrent requests.
    held.key = concurrency.enter_key(key, limits.per_key());
    if held.key.is_none() {
        let message = "Too many requests of this API key at once; retry later.";
        return Err(limited(
            runtime,
            "max_concurrent_requests_per_key",
            message,
            1,
        ));
    }
    let body = match outcome {
        Outcome::Forward(route) if route.copy => {
            let (per_key, per_replica) = (
                limits.max_concurrent_copies_per_key,
                limits.max_concurrent_copies,
            );
            held.copy = Some(concurrency.enter_copy(key, per_key, per_replica).map_err(
                |refusal| match refusal {
                    CopyRefusal::PerKey => {
                        let message = "Too many copies of this API key at once; retry later.";
                        limited(runtime, "max_concurrent_copies_per_key", message, 1)
                    }
                    CopyRefusal::PerReplica => {
                        let message = "Too many copies at once; retry later.";
                        limited(runtime, "max_concurrent_copies", message, 1)
                    }
                },
            )?);
            return Ok(None);
        }
        Outcome::Forward(route) => match route.body_hold {
            BodyHold::Counted(n) => n,
            _ => return Ok(None),
        },
        Outcome::NeedsBody(needs) => needs.limit,
        _ => return Ok(None),
    };
    hold_body(runtime, body, held, config)
}

/// Reserves `body` bytes in the process-wide body budget; returns the body's deadline.
pub fn hold_body(
    runtime: &Arc<Runtime>,
    body: u64,
    held: &mut Held,
    config: &Config,
) -> Result<Option<Instant>, S3Error> {
    let (limits, concurrency) = (&config.limits, &runtime.concurrency);
    held.body = usize::try_from(body)
        .ok()
        .and_then(|n| concurrency.reserve_body(n, limits.max_buffered_body_bytes));
    if held.body.is_none() {
        let message = "Too many request bodies held in memory at once; retry later.";
        return Err(limited(runtime, "max_buffered_body_bytes", message, 1));
    }
    Ok(Some(
        Instant::now() + Duration::from_millis(limits.body_timeout_ms),
    ))
}
