//! The answers s3p writes below pingora, before any request exists: a refused connection (over a cap) or
//! a refused request head (too large, too slow). They carry the headers every answer of s3p's carries
//! ([`crate::server::stamp`]), so that a client, a log or [`super::stream`]'s count of pingora's own
//! refusals tells them from pingora's.

use crate::error::S3Error;
use crate::server::stamp::{new_request_id, stamped_headers};

/// A complete HTTP/1.1 answer with S3 error XML that closes the connection, written by s3p below
/// pingora (no request exists yet, so no CORS origin is known).
pub(super) fn raw_error(error: S3Error) -> Vec<u8> {
    let request_id = new_request_id();
    let body = crate::xml::error(&error, &request_id);
    let reason = match error.status() {
        400 => "Bad Request",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let stamped: String = stamped_headers(&request_id, None)
        .into_iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let retry = error
        .retry_after_s
        .map(|s| format!("Retry-After: {s}\r\n"))
        .unwrap_or_default();
    format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n{stamped}{retry}Connection: close\r\n\r\n{body}",
        error.status(),
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::S3ErrorCode;

    #[test]
    fn an_answer_below_pingora_carries_the_stamped_headers_and_closes() {
        let answer = String::from_utf8(raw_error(S3Error::slow_down("Too many.", 1))).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        let mut lines = head.split("\r\n");
        assert_eq!(lines.next(), Some("HTTP/1.1 503 Service Unavailable"));
        let headers: Vec<(&str, &str)> = lines.map(|l| l.split_once(": ").unwrap()).collect();
        let header = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        let id = header("x-amz-request-id").unwrap();
        assert_eq!(id.len(), 16);
        assert_eq!(header("x-amz-id-2"), Some(id));
        assert_eq!(header("Retry-After"), Some("1"));
        assert_eq!(header("Connection"), Some("close"));
        assert_eq!(
            header("Content-Length"),
            Some(body.len().to_string().as_str())
        );
        assert!(body.contains("<Code>SlowDown</Code>") && body.contains(id));
        // No CORS origin is known before a request: none is allowed.
        assert_eq!(header("access-control-allow-origin"), None);

        let answer = raw_error(S3Error::new(S3ErrorCode::RequestHeaderSectionTooLarge));
        assert!(answer.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
        assert!(!String::from_utf8(answer).unwrap().contains("Retry-After"));
    }
}
