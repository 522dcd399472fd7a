//! What every answer s3p writes carries, whoever writes it (the proxy's phases, or the connection guard
//! below pingora before any request exists): a request id, and the CORS headers when the request's
//! origin is allowed. One generator, one list, so that no answer goes out without them.

/// A new request id: 16 upper-case hex digits, as in `x-amz-request-id`, error XML and the audit line.
pub fn new_request_id() -> String {
    format!("{:016X}", rand::random::<u64>())
}

/// The response headers S3 clients and browsers expose to their callers.
const CORS_EXPOSED: &str = "ETag, Content-Length, Content-Range, Content-Type, Last-Modified, Accept-Ranges, x-amz-request-id, x-amz-version-id";

/// The headers every answer carries: the request id (twice, as S3 does), and, for an allowed origin,
/// what a browser needs to read the answer.
pub fn stamped_headers(request_id: &str, cors_origin: Option<&str>) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("x-amz-request-id", request_id.to_string()),
        ("x-amz-id-2", request_id.to_string()),
    ];
    if let Some(origin) = cors_origin {
        headers.push(("access-control-allow-origin", origin.to_string()));
        headers.push(("access-control-expose-headers", CORS_EXPOSED.to_string()));
        headers.push(("vary", "Origin".to_string()));
    }
    headers
}

/// Stamps a pingora response head with [`stamped_headers`].
pub fn stamp(
    resp: &mut pingora::http::ResponseHeader,
    request_id: &str,
    cors_origin: Option<&str>,
) -> pingora::Result<()> {
    // The same headers as `stamped_headers`, inserted without building them first (every response
    // passes here).
    resp.insert_header("x-amz-request-id", request_id)?;
    resp.insert_header("x-amz-id-2", request_id)?;
    if let Some(origin) = cors_origin {
        resp.insert_header("access-control-allow-origin", origin)?;
        resp.insert_header("access-control-expose-headers", CORS_EXPOSED)?;
        resp.insert_header("vary", "Origin")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_answer_carries_its_request_id_and_cors_only_for_an_allowed_origin() {
        let id = new_request_id();
        assert_eq!(id.len(), 16);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase()));
        assert_ne!(id, new_request_id());
        let plain = stamped_headers(&id, None);
        assert_eq!(
            plain,
            vec![("x-amz-request-id", id.clone()), ("x-amz-id-2", id.clone())]
        );
        let cors = stamped_headers(&id, Some("https://app.example"));
        assert!(cors.contains(&("access-control-allow-origin", "https://app.example".into())));
        assert!(cors.iter().any(|(n, v)| *n == "vary" && v == "Origin"));
        let mut resp = pingora::http::ResponseHeader::build(200, None).unwrap();
        stamp(&mut resp, &id, Some("https://app.example")).unwrap();
        assert_eq!(resp.headers["x-amz-request-id"], id.as_str());
        assert_eq!(
            resp.headers["access-control-allow-origin"],
            "https://app.example"
        );
    }
}
