//! The audit facts of a decision: what the audit line will say about a request (operation, key, data
//! source, resource, verdict, reason), settled once by the decision and by the answer. Pure.

use crate::error::S3ErrorCode;
use serde::Serialize;

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
    /// The display name of the key that verified, or that a failed signature claimed (when known);
    /// for temporary credentials, their parent's.
    pub key_name: Option<String>,
    /// The session of temporary credentials (`<role>/<name>#<id>`), or the one an STS call issued.
    pub session: Option<String>,
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
            session: None,
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

impl AuditFacts {
    /// The facts of one object of a multi-object request (a DeleteObjects entry): allowed when it went,
    /// else as its error says (`entitled`: the key may write the object's data source, so a failure
    /// there is the backend's, not a denial).
    pub fn of_batch_object(error: Option<S3ErrorCode>, entitled: bool) -> AuditFacts {
        let mut facts = AuditFacts::new(String::new());
        facts.verdict = Verdict::Allowed;
        match error {
            Some(code) if entitled && is_backend_failure(code) => facts.backend_answered(code),
            Some(code) => facts.answered_with(code),
            None => {}
        }
        facts
    }
}

/// Backend answers that say the backend failed s3p rather than that the client asked something wrong.
pub fn is_backend_failure(code: S3ErrorCode) -> bool {
    code == S3ErrorCode::AccessDenied || code == S3ErrorCode::InternalError || code.status() >= 500
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
            | S3ErrorCode::InvalidToken
            | S3ErrorCode::ExpiredToken
            | S3ErrorCode::InvalidClientTokenId
            | S3ErrorCode::MissingAuthenticationToken
            | S3ErrorCode::InvalidIdentityToken
            | S3ErrorCode::ExpiredTokenException
    )
}
