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
    InvalidPart,
    InvalidPartOrder,
    InvalidRange,
    InvalidRequest,
    InvalidURI,
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
            InvalidPart => "InvalidPart",
            InvalidPartOrder => "InvalidPartOrder",
            InvalidRange => "InvalidRange",
            InvalidRequest => "InvalidRequest",
            InvalidURI => "InvalidURI",
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
            | InvalidPart
            | InvalidPartOrder
            | InvalidRequest
            | InvalidURI
            | MalformedXML
            | RequestHeaderSectionTooLarge
            | RequestTimeout => 400,
            AccessDenied | InvalidAccessKeyId | RequestTimeTooSkewed | SignatureDoesNotMatch => 403,
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
            InvalidPart => "One or more of the specified parts could not be found.",
            InvalidPartOrder => "The list of parts was not in ascending order.",
            InvalidRange => "The requested range is not satisfiable",
            InvalidRequest => "Invalid Request",
            InvalidURI => "Couldn't parse the specified URI.",
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

    pub fn not_implemented(what: impl Into<String>) -> Self {
        S3Error::with_message(S3ErrorCode::NotImplemented, what)
    }
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
}
