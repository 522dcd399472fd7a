//! The one S3 error type. Every refusal at any layer becomes an [`S3Error`]; this file is the only place
//! that decides which HTTP status goes with which S3 error code. Rendering to XML lives in `xml/`.

use std::fmt;

/// S3 error codes that s3p can answer with (names and statuses as documented by AWS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3ErrorCode {
    AccessDenied,
    AuthorizationHeaderMalformed,
    AuthorizationQueryParametersError,
    /// A checksum or Content-MD5 that does not match the body.
    BadDigest,
    /// A CORS preflight without an Origin.
    BadRequest,
    EntityTooLarge,
    EntityTooSmall,
    /// Fewer body bytes than announced.
    IncompleteBody,
    InternalError,
    InvalidAccessKeyId,
    InvalidArgument,
    /// A Content-MD5 that is not base64 of 16 bytes.
    InvalidDigest,
    /// An operation not valid for the object's state (an archived object).
    InvalidObjectState,
    InvalidPart,
    InvalidPartOrder,
    InvalidRange,
    InvalidRequest,
    InvalidURI,
    /// A key over S3's 1,024 bytes.
    KeyTooLongError,
    MalformedXML,
    MethodNotAllowed,
    MissingContentLength,
    NoSuchBucket,
    NoSuchKey,
    NoSuchUpload,
    NotImplemented,
    PreconditionFailed,
    RequestHeaderSectionTooLarge,
    RequestTimeout,
    RequestTimeTooSkewed,
    ServiceUnavailable,
    SignatureDoesNotMatch,
    SlowDown,
    /// A body whose SHA-256 is not the signed `x-amz-content-sha256`.
    XAmzContentSHA256Mismatch,
    /// An `x-amz-security-token` s3p did not issue, or not for this access key id.
    InvalidToken,
    /// A session token past its expiry.
    ExpiredToken,
    // The STS API's own codes (`/sts`, rendered by `sts::answer`).
    /// STS: an access key id it does not know.
    InvalidClientTokenId,
    /// STS: no credentials where they are needed.
    MissingAuthenticationToken,
    /// STS: an expired web identity token.
    ExpiredTokenException,
    /// STS: a web identity token that does not verify.
    InvalidIdentityToken,
    /// STS: the web identity provider's keys could not be had.
    IDPCommunicationError,
    /// STS: a session policy s3p cannot honour.
    MalformedPolicyDocument,
    /// STS: a parameter out of its bounds.
    ValidationError,
    /// STS: an action other than AssumeRole and AssumeRoleWithWebIdentity.
    InvalidAction,
    /// STS: a parameter s3p does not support (`PolicyArns`).
    InvalidParameterValue,
    /// STS: a session too large for its token.
    PackedPolicyTooLarge,
    /// STS: too many calls (S3's SlowDown, as STS says it).
    Throttling,
    /// STS: an Authorization header that is not a complete signature.
    IncompleteSignature,
}

impl S3ErrorCode {
    pub fn as_str(self) -> &'static str {
        use S3ErrorCode::*;
        match self {
            AccessDenied => "AccessDenied",
            AuthorizationHeaderMalformed => "AuthorizationHeaderMalformed",
            AuthorizationQueryParametersError => "AuthorizationQueryParametersError",
            BadDigest => "BadDigest",
            BadRequest => "BadRequest",
            EntityTooLarge => "EntityTooLarge",
            EntityTooSmall => "EntityTooSmall",
            IncompleteBody => "IncompleteBody",
            InternalError => "InternalError",
            InvalidAccessKeyId => "InvalidAccessKeyId",
            InvalidArgument => "InvalidArgument",
            InvalidDigest => "InvalidDigest",
            InvalidObjectState => "InvalidObjectState",
            InvalidPart => "InvalidPart",
            InvalidPartOrder => "InvalidPartOrder",
            InvalidRange => "InvalidRange",
            InvalidRequest => "InvalidRequest",
            InvalidURI => "InvalidURI",
            KeyTooLongError => "KeyTooLongError",
            MalformedXML => "MalformedXML",
            MethodNotAllowed => "MethodNotAllowed",
            MissingContentLength => "MissingContentLength",
            NoSuchBucket => "NoSuchBucket",
            NoSuchKey => "NoSuchKey",
            NoSuchUpload => "NoSuchUpload",
            NotImplemented => "NotImplemented",
            PreconditionFailed => "PreconditionFailed",
            RequestHeaderSectionTooLarge => "RequestHeaderSectionTooLarge",
            RequestTimeout => "RequestTimeout",
            RequestTimeTooSkewed => "RequestTimeTooSkewed",
            ServiceUnavailable => "ServiceUnavailable",
            SignatureDoesNotMatch => "SignatureDoesNotMatch",
            SlowDown => "SlowDown",
            XAmzContentSHA256Mismatch => "XAmzContentSHA256Mismatch",
            InvalidToken => "InvalidToken",
            ExpiredToken => "ExpiredToken",
            InvalidClientTokenId => "InvalidClientTokenId",
            MissingAuthenticationToken => "MissingAuthenticationToken",
            ExpiredTokenException => "ExpiredTokenException",
            InvalidIdentityToken => "InvalidIdentityToken",
            IDPCommunicationError => "IDPCommunicationError",
            MalformedPolicyDocument => "MalformedPolicyDocument",
            ValidationError => "ValidationError",
            InvalidAction => "InvalidAction",
            InvalidParameterValue => "InvalidParameterValue",
            PackedPolicyTooLarge => "PackedPolicyTooLarge",
            Throttling => "Throttling",
            IncompleteSignature => "IncompleteSignature",
        }
    }

    /// The HTTP status AWS uses for this code.
    pub fn status(self) -> u16 {
        use S3ErrorCode::*;
        match self {
            AuthorizationHeaderMalformed
            | AuthorizationQueryParametersError
            | BadDigest
            | BadRequest
            | EntityTooLarge
            | EntityTooSmall
            | IncompleteBody
            | InvalidArgument
            | InvalidDigest
            | InvalidPart
            | InvalidPartOrder
            | InvalidRequest
            | InvalidURI
            | KeyTooLongError
            | MalformedXML
            | RequestHeaderSectionTooLarge
            | RequestTimeout
            | XAmzContentSHA256Mismatch
            | InvalidToken
            | ExpiredToken
            | ExpiredTokenException
            | InvalidIdentityToken
            | IDPCommunicationError
            | MalformedPolicyDocument
            | ValidationError
            | InvalidAction
            | InvalidParameterValue
            | PackedPolicyTooLarge
            | Throttling
            | IncompleteSignature => 400,
            InvalidClientTokenId | MissingAuthenticationToken => 403,
            AccessDenied
            | InvalidAccessKeyId
            | InvalidObjectState
            | RequestTimeTooSkewed
            | SignatureDoesNotMatch => 403,
            NoSuchBucket | NoSuchKey | NoSuchUpload => 404,
            MethodNotAllowed => 405,
            MissingContentLength => 411,
            PreconditionFailed => 412,
            InvalidRange => 416,
            InternalError => 500,
            NotImplemented => 501,
            ServiceUnavailable | SlowDown => 503,
        }
    }

    fn default_message(self) -> &'static str {
        use S3ErrorCode::*;
        match self {
            AccessDenied => "Access Denied",
            AuthorizationHeaderMalformed => "The authorization header is malformed.",
            AuthorizationQueryParametersError => "Error parsing the query-string authentication parameters.",
            BadDigest => "The checksum you specified did not match the calculated checksum.",
            BadRequest => "Bad Request",
            EntityTooLarge => "Your proposed upload exceeds the maximum allowed size.",
            EntityTooSmall => "Your proposed upload is smaller than the minimum allowed object size.",
            IncompleteBody => "You did not provide the number of bytes specified by the Content-Length HTTP header.",
            InternalError => "We encountered an internal error. Please try again.",
            InvalidAccessKeyId => "The AWS Access Key Id you provided does not exist in our records.",
            InvalidArgument => "Invalid Argument",
            InvalidDigest => "The Content-MD5 you specified is not valid.",
            InvalidObjectState => "The operation is not valid for the object's storage class.",
            InvalidPart => "One or more of the specified parts could not be found.",
            InvalidPartOrder => "The list of parts was not in ascending order.",
            InvalidRange => "The requested range is not satisfiable",
            InvalidRequest => "Invalid Request",
            InvalidURI => "Couldn't parse the specified URI.",
            KeyTooLongError => "Your key is too long.",
            MalformedXML => "The XML you provided was not well-formed or did not validate against our published schema.",
            MethodNotAllowed => "The specified method is not allowed against this resource.",
            MissingContentLength => "You must provide the Content-Length HTTP header.",
            NoSuchBucket => "The specified bucket does not exist",
            NoSuchKey => "The specified key does not exist.",
            NoSuchUpload => "The specified multipart upload does not exist.",
            NotImplemented => "A header or query you provided implies functionality that is not implemented.",
            PreconditionFailed => "At least one of the pre-conditions you specified did not hold",
            RequestHeaderSectionTooLarge => "Your request header section exceeds the maximum allowed size.",
            RequestTimeout => "Your socket connection to the server was not read from or written to within the timeout period.",
            RequestTimeTooSkewed => "The difference between the request time and the current time is too large.",
            ServiceUnavailable => "Please reduce your request rate.",
            SignatureDoesNotMatch => "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
            SlowDown => "Please reduce your request rate.",
            XAmzContentSHA256Mismatch => "The provided 'x-amz-content-sha256' header does not match what was computed.",
            InvalidToken => "The provided token is malformed or otherwise invalid.",
            ExpiredToken => "The provided token has expired.",
            InvalidClientTokenId => "The security token included in the request is invalid.",
            MissingAuthenticationToken => "Request is missing Authentication Token",
            ExpiredTokenException => "Token expired.",
            InvalidIdentityToken => "The web identity token is not valid.",
            IDPCommunicationError => "The identity provider's keys could not be fetched; retry later.",
            MalformedPolicyDocument => "The session policy cannot be honoured.",
            ValidationError => "A parameter is not valid.",
            InvalidAction => "Could not find operation for this request.",
            InvalidParameterValue => "A parameter is not supported.",
            PackedPolicyTooLarge => "The session's grants are too large.",
            Throttling => "Rate exceeded",
            IncompleteSignature => "The request signature does not conform to AWS standards.",
        }
    }
}

/// One S3 error as it will be shown to the client. Everything in here must already speak the virtual
/// namespace: no backend bucket, prefix, host or credential may be put into any field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Error {
    pub code: S3ErrorCode,
    pub message: String,
    /// The virtual resource (`/immuta/<ds>/<key>`), when known.
    pub resource: Option<String>,
    /// Extra child elements AWS adds for some codes (`StringToSign`, `CanonicalRequest`, `ArgumentName`...).
    pub extra: Vec<(&'static str, String)>,
    /// Seconds a client should wait before retrying (`Retry-After`, on SlowDown).
    pub retry_after_s: Option<u64>,
    /// What failed behind s3p, for logs and metrics only: never rendered into the answer.
    pub cause: Option<Box<BackendFailure>>,
}

/// A backend's failure: which backend (its configured name) and what went wrong, as the
/// `s3p_backend_errors_total{backend,kind}` metric counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendFailure {
    pub backend: String,
    pub kind: FailureKind,
}

/// What went wrong with a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// It answered with this HTTP status (an error, or a redirect s3p never relays).
    Status(u16),
    /// No connection (refused, unreachable, TLS handshake failed).
    Connect,
    /// No answer within the read timeout.
    Timeout,
    /// The connection broke mid-exchange.
    Reset,
    /// It answered something s3p cannot read (not HTTP, an unparsable listing, a body over the limit).
    Unreadable,
}

impl FailureKind {
    /// The metric label: the status number, or the name of the failure.
    pub fn label(self) -> std::borrow::Cow<'static, str> {
        match self {
            FailureKind::Status(s) => s.to_string().into(),
            FailureKind::Connect => "connect".into(),
            FailureKind::Timeout => "timeout".into(),
            FailureKind::Reset => "reset".into(),
            FailureKind::Unreadable => "unreadable".into(),
        }
    }
}

impl S3Error {
    pub fn new(code: S3ErrorCode) -> Self {
        S3Error {
            code,
            message: code.default_message().to_string(),
            resource: None,
            extra: Vec::new(),
            retry_after_s: None,
            cause: None,
        }
    }

    pub fn with_message(code: S3ErrorCode, message: impl Into<String>) -> Self {
        S3Error {
            message: message.into(),
            ..S3Error::new(code)
        }
    }

    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(seconds);
        self
    }

    pub fn detail(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.extra.push((name, value.into()));
        self
    }

    /// Records which backend failed and how (logged and counted, never shown).
    pub fn caused_by(mut self, backend: &str, kind: FailureKind) -> Self {
        self.cause = Some(Box::new(BackendFailure {
            backend: backend.to_string(),
            kind,
        }));
        self
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }

    pub fn invalid_argument(message: impl Into<String>, name: &str, value: &str) -> Self {
        S3Error::with_message(S3ErrorCode::InvalidArgument, message)
            .detail("ArgumentName", name)
            .detail("ArgumentValue", value)
    }

    /// A backend could not be reached or did not answer: 503, saying nothing about which or where.
    pub fn storage_unavailable() -> Self {
        S3Error::with_message(
            S3ErrorCode::ServiceUnavailable,
            "The data source's storage is unavailable.",
        )
    }

    /// A backend took longer than the configured read timeout.
    pub fn storage_timeout() -> Self {
        S3Error::with_message(
            S3ErrorCode::ServiceUnavailable,
            "The data source's storage did not answer in time.",
        )
    }

    /// 503 SlowDown: a limit refused the request; the client may retry after `retry_after_s` seconds.
    pub fn slow_down(message: &str, retry_after_s: u64) -> Self {
        S3Error::with_message(S3ErrorCode::SlowDown, message).retry_after(retry_after_s)
    }

    /// Fewer body bytes than announced, or a body that broke off.
    pub fn incomplete_body() -> Self {
        S3Error::new(S3ErrorCode::IncompleteBody)
    }

    /// A body that did not arrive within its deadline or at the minimum rate.
    pub fn request_timeout() -> Self {
        S3Error::new(S3ErrorCode::RequestTimeout)
    }

    /// s3p itself failed.
    pub fn internal() -> Self {
        S3Error::new(S3ErrorCode::InternalError)
    }

    /// The server is shutting down (draining).
    pub fn shutting_down() -> Self {
        S3Error::with_message(
            S3ErrorCode::ServiceUnavailable,
            "The server is shutting down.",
        )
    }

    /// The request head is larger than `max_header_bytes`.
    pub fn header_too_large(max: usize) -> Self {
        S3Error::new(S3ErrorCode::RequestHeaderSectionTooLarge)
            .detail("MaxSizeAllowed", max.to_string())
    }

    pub fn not_implemented(what: impl Into<String>) -> Self {
        S3Error::with_message(S3ErrorCode::NotImplemented, what)
    }
}

/// What a backend's failure to answer as asked means for the client: the one table for every operation,
/// objects forwarded by pingora and s3p's own calls (listings, DeleteObjects, ListMultipartUploads)
/// alike.
///
/// - `status` is the backend's HTTP status; `body_code` the `<Code>` of its error body, once read (the
///   answer's head is written before its body arrives, so the head uses `None`);
/// - `not_found` is what a 404 means for this operation (NoSuchKey, NoSuchUpload), `None` when the
///   operation names no object (a 404 then means s3p's backend bucket is missing: s3p's failure).
///
/// A backend code passes when it is in [`PASSED_BACKEND_CODES`] and has the status the answer already
/// carries; only the code passes, never the backend's message, resource or ids (they name its bucket).
/// A 404 is always the operation's own "not found" (a backend's NoSuchBucket names s3p's misconfiguration,
/// not the client's object).
pub fn backend_answer(
    status: u16,
    body_code: Option<&str>,
    not_found: Option<S3ErrorCode>,
) -> S3Error {
    let by_status = status_code(status, not_found);
    let code = body_code
        .and_then(passed_backend_code)
        .filter(|c| c.status() == by_status.status() && status != 404)
        .unwrap_or(by_status);
    match code {
        S3ErrorCode::SlowDown => S3Error::slow_down("Please reduce your request rate.", 1),
        S3ErrorCode::ServiceUnavailable => S3Error::storage_unavailable(),
        c => S3Error::new(c),
    }
}

/// Whether the backend's error body can change the code [`backend_answer`] gives for this status (some
/// allow-listed code shares the status): the answer's length is known only once that body is read.
pub fn backend_body_may_decide(status: u16, not_found: Option<S3ErrorCode>) -> bool {
    let by_status = status_code(status, not_found);
    status != 404
        && PASSED_BACKEND_CODES
            .iter()
            .any(|c| *c != by_status && c.status() == by_status.status())
}

/// The code of a backend's error status, before its body is read.
fn status_code(status: u16, not_found: Option<S3ErrorCode>) -> S3ErrorCode {
    use S3ErrorCode::*;
    match status {
        400 => InvalidRequest,
        403 => AccessDenied,
        404 => not_found.unwrap_or(InternalError),
        405 => MethodNotAllowed,
        411 => MissingContentLength,
        412 => PreconditionFailed,
        416 => InvalidRange,
        501 => NotImplemented,
        503 => SlowDown,
        s if s >= 500 => ServiceUnavailable,
        // A redirect means the backend is misconfigured (wrong region or endpoint): never relay it.
        s if s < 400 => InternalError,
        _ => InvalidRequest,
    }
}

/// Error codes a backend may answer with that pass to the client (with s3p's own message): each names
/// something the client did, or can act on (retry, fix its parts list), and nothing of the backend.
pub const PASSED_BACKEND_CODES: [S3ErrorCode; 21] = [
    S3ErrorCode::BadDigest,
    S3ErrorCode::EntityTooLarge,
    S3ErrorCode::EntityTooSmall,
    S3ErrorCode::IncompleteBody,
    S3ErrorCode::InvalidArgument,
    S3ErrorCode::InvalidDigest,
    S3ErrorCode::InvalidObjectState,
    S3ErrorCode::InvalidPart,
    S3ErrorCode::InvalidPartOrder,
    S3ErrorCode::InvalidRange,
    S3ErrorCode::InvalidRequest,
    S3ErrorCode::KeyTooLongError,
    S3ErrorCode::MalformedXML,
    S3ErrorCode::MissingContentLength,
    S3ErrorCode::NoSuchKey,
    S3ErrorCode::NoSuchUpload,
    S3ErrorCode::NotImplemented,
    S3ErrorCode::PreconditionFailed,
    S3ErrorCode::RequestTimeout,
    S3ErrorCode::SlowDown,
    S3ErrorCode::XAmzContentSHA256Mismatch,
];

/// The code of one entry of a backend's multi-object answer (a DeleteObjects `<Error>`), which has no
/// status of its own: an allow-listed code, or AccessDenied; anything else is InternalError.
pub fn backend_entry_code(code: &str) -> S3ErrorCode {
    match code {
        "AccessDenied" => S3ErrorCode::AccessDenied,
        c => passed_backend_code(c).unwrap_or(S3ErrorCode::InternalError),
    }
}

/// The allow-listed code a backend's `<Code>` names, if any.
pub fn passed_backend_code(code: &str) -> Option<S3ErrorCode> {
    PASSED_BACKEND_CODES
        .iter()
        .find(|c| c.as_str() == code)
        .copied()
}

impl fmt::Display for S3Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code.as_str(),
            self.status(),
            self.message
        )
    }
}

impl std::error::Error for S3Error {}

impl From<S3ErrorCode> for S3Error {
    fn from(code: S3ErrorCode) -> Self {
        S3Error::new(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_aws() {
        let table = [
            (S3ErrorCode::AccessDenied, 403),
            (S3ErrorCode::InvalidAccessKeyId, 403),
            (S3ErrorCode::SignatureDoesNotMatch, 403),
            (S3ErrorCode::RequestTimeTooSkewed, 403),
            (S3ErrorCode::NoSuchKey, 404),
            (S3ErrorCode::NoSuchBucket, 404),
            (S3ErrorCode::InvalidArgument, 400),
            (S3ErrorCode::AuthorizationHeaderMalformed, 400),
            (S3ErrorCode::MethodNotAllowed, 405),
            (S3ErrorCode::NotImplemented, 501),
            (S3ErrorCode::ServiceUnavailable, 503),
            (S3ErrorCode::InvalidRange, 416),
        ];
        for (code, status) in table {
            assert_eq!(code.status(), status, "{}", code.as_str());
        }
    }

    #[test]
    fn backend_statuses_follow_one_table() {
        use S3ErrorCode::*;
        // (backend status, what a 404 means, client code): the same for every operation.
        let table = [
            (400, Some(NoSuchKey), InvalidRequest),
            (403, Some(NoSuchKey), AccessDenied),
            (404, Some(NoSuchKey), NoSuchKey),
            (404, Some(NoSuchUpload), NoSuchUpload),
            (404, None, InternalError),
            (405, None, MethodNotAllowed),
            (409, None, InvalidRequest),
            (411, None, MissingContentLength),
            (412, Some(NoSuchKey), PreconditionFailed),
            (416, Some(NoSuchKey), InvalidRange),
            (500, None, ServiceUnavailable),
            (501, None, NotImplemented),
            (502, None, ServiceUnavailable),
            (503, Some(NoSuchKey), SlowDown),
            (503, None, SlowDown),
            (504, None, ServiceUnavailable),
            (301, None, InternalError),
            (307, Some(NoSuchKey), InternalError),
        ];
        for (status, not_found, code) in table {
            let e = backend_answer(status, None, not_found);
            assert_eq!(e.code, code, "backend {status}");
        }
        // A backend's SlowDown is retryable for every operation.
        assert_eq!(backend_answer(503, None, None).retry_after_s, Some(1));
    }

    #[test]
    fn the_body_decides_only_where_another_code_shares_the_status() {
        let nf = Some(S3ErrorCode::NoSuchKey);
        for (status, may) in [
            (400, true),
            (403, true),
            (404, false),
            (411, false),
            (412, false),
            (416, false),
            // 5xx is ServiceUnavailable (503), which a SlowDown in the body replaces.
            (500, true),
            (501, false),
            (503, false),
        ] {
            assert_eq!(backend_body_may_decide(status, nf), may, "{status}");
        }
    }

    #[test]
    fn each_passed_backend_code_passes_with_its_own_status() {
        for code in PASSED_BACKEND_CODES
            .into_iter()
            .filter(|c| c.status() != 404)
        {
            let not_found = Some(S3ErrorCode::NoSuchKey);
            let e = backend_answer(code.status(), Some(code.as_str()), not_found);
            assert_eq!(e.code, code, "{} passes", code.as_str());
            // The backend's words never pass: s3p's own message.
            assert_eq!(e.message, S3Error::new(code).message, "{}", code.as_str());
        }
    }

    #[test]
    fn backend_codes_outside_the_list_or_status_do_not_pass() {
        use S3ErrorCode::*;
        let table = [
            // (status, backend code, not_found, client code)
            (400, "InvalidPart", None, InvalidPart),
            (400, "MalformedXML", None, MalformedXML),
            (400, "InvalidBucketName", None, InvalidRequest),
            (404, "NoSuchBucket", Some(NoSuchKey), NoSuchKey),
            (404, "NoSuchUpload", Some(NoSuchKey), NoSuchKey),
            (404, "NoSuchUpload", Some(NoSuchUpload), NoSuchUpload),
            // A 404 on a bucket-level call is s3p's misconfiguration, whatever the backend says.
            (404, "NoSuchKey", None, InternalError),
            // A code whose status differs from the answer's stays the status's code.
            (500, "InvalidPart", None, ServiceUnavailable),
            (403, "InvalidPart", None, AccessDenied),
            (403, "InvalidObjectState", None, InvalidObjectState),
            (400, "AccessDenied", None, InvalidRequest),
            (400, "<script>", None, InvalidRequest),
            (400, "", None, InvalidRequest),
            (503, "ServiceUnavailable", None, SlowDown),
        ];
        for (status, code, not_found, expected) in table {
            assert_eq!(
                backend_answer(status, Some(code), not_found).code,
                expected,
                "{status} {code}"
            );
        }
    }
}
