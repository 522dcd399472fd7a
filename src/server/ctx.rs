//! The state of one request as pingora's phases carry it out (`proxy.rs`), grouped by what it is for.

use super::admission::Held;
use super::pacing::Pacing;
use super::respond::Answering;
use crate::client_addr::Client;
use crate::error::FailureKind;
use crate::gateway::{AuditFacts, ObjectRoute};
use crate::state::State;
use crate::upload::answers::{rewrite_answer, Virtual};
use crate::upload::chunked::ChunkedDecoder;
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Per-request state, grouped by what it is for.
pub struct RequestCtx {
    pub state: Arc<State>,
    pub request_id: String,
    pub client: Client,
    /// What the audit line will say; settled by `decide` and by the answer.
    pub audit: AuditFacts,
    /// Set when the decision is to forward to a backend.
    pub route: Option<Box<ObjectRoute>>,
    /// The backend's error answer being replaced (see `BackendHead::Error`).
    pub backend_error: Option<BackendError>,
    /// How the backend failed, for `s3p_backend_errors_total`.
    pub backend_failure: Option<FailureKind>,
    /// The request's Origin, when CORS allows it (echoed in Access-Control-Allow-Origin).
    pub cors_origin: Option<String>,
    pub is_head: bool,
    pub timing: Timing,
    pub held: Held,
    pub pacing: Pacing,
    pub upload: Upload,
    /// The outcome of each object of a DeleteObjects request: one audit line each.
    pub batch: Vec<crate::upload::delete::ObjectOutcome>,
    /// Where the key's decision came from when the governance service knows it (`service`,
    /// `service-cache`); `None` for configured keys.
    pub key_source: Option<&'static str>,
}

/// A backend error answer that s3p replaces with its own.
pub struct BackendError {
    pub status: u16,
    /// The start of the backend's body: its code is logged, and passes when allow-listed.
    pub seen: BytesMut,
    /// s3p's body, when the head already decided it (its length is in the head).
    pub decided: Option<Bytes>,
}

/// The request body of a write, as it passes through.
#[derive(Default)]
pub struct Upload {
    /// Decodes (and checks) an aws-chunked body. Boxed: every request's context is moved with pingora's
    /// request future, and few requests are signed-chunk uploads.
    pub decoder: Option<Box<ChunkedDecoder>>,
    /// Body bytes read from the client.
    pub received: u64,
    pub pacing: Pacing,
    /// A backend answer being collected to be rewritten (multipart answers, a few KiB).
    pub answer: Option<BytesMut>,
    /// A body that must arrive whole by then (`limits.body_timeout_ms`).
    pub deadline: Option<Instant>,
}

/// The largest backend answer s3p collects to rewrite (multipart answers are a few hundred bytes).
pub const MAX_REWRITTEN_ANSWER: usize = 1 << 20;

pub struct Timing {
    pub started: Instant,
    pub upstream_started: Option<Instant>,
    pub backend_latency: Option<Duration>,
}

impl RequestCtx {
    /// A request just arrived, under the state loaded now (kept to its end, whatever reloads).
    pub fn new(state: Arc<State>) -> RequestCtx {
        RequestCtx {
            state,
            request_id: super::stamp::new_request_id(),
            client: Client::default(),
            audit: AuditFacts::new(String::new()),
            route: None,
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
            key_source: None,
        }
    }

    /// What every answer to this request needs.
    pub fn answering(&self) -> Answering<'_> {
        Answering {
            request_id: &self.request_id,
            cors_origin: self.cors_origin.as_deref(),
            is_head: self.is_head,
        }
    }

    /// A chunk of a backend's error answer that s3p replaces (see `gateway::BackendHead::Error`): its
    /// start is kept (its code is logged for operators, and passes when allow-listed), nothing is passed
    /// on; at its end, s3p's own error body goes out whole.
    pub fn replace_backend_error_body(&mut self, chunk: Option<Bytes>, end: bool) -> Option<Bytes> {
        let replaced = self.backend_error.as_mut()?;
        if let Some(chunk) = chunk {
            let room = 4096usize.saturating_sub(replaced.seen.len());
            replaced
                .seen
                .extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        if !end {
            return None;
        }
        let replaced = self.backend_error.take()?;
        let route = self.route.as_ref()?;
        log::info!(
            "request {}: backend {} answered {} {}",
            self.request_id,
            route.backend.config.name,
            replaced.status,
            crate::xml::parse_error_code(&replaced.seen).unwrap_or_default()
        );
        if let Some(decided) = replaced.decided {
            return Some(decided);
        }
        let mut e = crate::gateway::backend_error_body(replaced.status, &replaced.seen, route);
        e.resource = Some(self.audit.resource.clone());
        self.audit.backend_answered(e.code);
        Some(Bytes::from(crate::xml::error(&e, &self.request_id)))
    }

    /// The collected backend answer, rewritten into virtual terms (`upload::answers`).
    pub fn rewritten_answer(&mut self) -> Bytes {
        let answer = self.upload.answer.take().unwrap_or_default();
        let st = &self.state;
        let Some(route) = self.route.as_ref() else {
            return Bytes::new();
        };
        let v = Virtual {
            bucket: &st.config.bucket,
            owner: &st.config.owner,
            uploads: &st.uploads,
        };
        match rewrite_answer(&route.rewrite, &answer, &v) {
            Ok(body) => Bytes::from(body),
            Err(failed) => {
                log::warn!("request {}: {}", self.request_id, failed.why);
                if failed.from_backend {
                    self.audit.backend_answered(failed.code);
                }
                let mut e = crate::error::S3Error::from(failed.code);
                e.resource = Some(self.audit.resource.clone());
                self.audit.answered_with(failed.code);
                Bytes::from(crate::xml::error(&e, &self.request_id))
            }
        }
    }
}
