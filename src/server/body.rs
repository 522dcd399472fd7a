//! Request bodies s3p reads whole (a DeleteObjects batch, a small body verified before the backend sees
//! it): never more than the limit, whole by the deadline, and at the minimum client rate.

use super::metrics::Metrics;
use super::pacing::Pacing;
use crate::config::Limits;
use crate::error::S3Error;
use bytes::BytesMut;
use pingora::proxy::Session;
use std::time::Instant;

/// How one body is read.
pub struct Reading<'a> {
    pub limit: u64,
    pub deadline: Instant,
    pub limits: &'a Limits,
    pub metrics: &'a Metrics,
    pub request_id: &'a str,
}

/// Reads the request body whole; `received` counts the bytes read, `pacing` the rate.
pub async fn read_whole(
    session: &mut Session,
    r: &Reading<'_>,
    pacing: &mut Pacing,
    received: &mut u64,
) -> Result<BytesMut, S3Error> {
    let deadline = tokio::time::Instant::from_std(r.deadline);
    // Grown as the body arrives (never reserved ahead from the announced length).
    let mut body = BytesMut::new();
    loop {
        let chunk = match tokio::time::timeout_at(deadline, session.read_request_body()).await {
            Err(_) => {
                r.metrics.limit_hit("body_timeout_ms");
                log::info!("request {}: body not whole in time", r.request_id);
                return Err(S3Error::request_timeout());
            }
            Ok(Err(e)) => {
                log::info!("request {}: body not read: {e}", r.request_id);
                return Err(S3Error::incomplete_body());
            }
            Ok(Ok(None)) => return Ok(body),
            Ok(Ok(Some(chunk))) => chunk,
        };
        *received += chunk.len() as u64;
        if (body.len() + chunk.len()) as u64 > r.limit {
            return Err(S3Error::incomplete_body());
        }
        if pacing.below_min_rate(chunk.len(), r.limits).is_some() {
            r.metrics.limit_hit("min_client_rate_bytes_per_s");
            return Err(S3Error::request_timeout());
        }
        body.extend_from_slice(&chunk);
    }
}
