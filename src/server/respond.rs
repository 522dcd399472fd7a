//! Answers s3p writes itself to a client session: its own answers, its S3 errors, and the head of an
//! error answer that replaces a backend's. Every one is stamped (`stamp`) and says its length.

use crate::error::S3Error;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

/// What every answer to one request needs.
pub struct Answering<'a> {
    pub request_id: &'a str,
    /// The request's Origin, when CORS allows it.
    pub cors_origin: Option<&'a str>,
    /// A HEAD: the head says the length, no body goes out.
    pub is_head: bool,
}

/// Writes a whole answer.
pub async fn write_answer(
    session: &mut Session,
    a: &Answering<'_>,
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(headers.len() + 5))?;
    for (n, v) in headers {
        resp.insert_header(n, v)?;
    }
    resp.insert_header("content-length", body.len().to_string())?;
    super::stamp::stamp(&mut resp, a.request_id, a.cors_origin)?;
    if a.is_head || body.is_empty() {
        session.write_response_header(Box::new(resp), true).await
    } else {
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(body), true).await
    }
}

/// Writes a successful XML answer s3p assembled (a listing, a DeleteObjects result).
pub async fn write_xml(session: &mut Session, a: &Answering<'_>, body: String) -> Result<()> {
    let headers = vec![("content-type", "application/xml".to_string())];
    write_answer(session, a, 200, headers, Bytes::from(body)).await
}

/// Writes an S3 error answer. A refused request may still carry a body (an upload): it is not drained,
/// the connection is closed; a body of length 0 leaves nothing to drain and the connection goes on.
pub async fn write_error(session: &mut Session, a: &Answering<'_>, e: &S3Error) -> Result<()> {
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
    let body = Bytes::from(crate::xml::error(e, a.request_id));
    write_answer(session, a, e.status(), error_headers(e), body).await
}

fn error_headers(e: &S3Error) -> Vec<(&'static str, String)> {
    let mut headers = vec![("content-type", "application/xml".to_string())];
    if let Some(s) = e.retry_after_s {
        headers.push(("retry-after", s.to_string()));
    }
    headers
}

/// The head of s3p's error answer in place of a backend's, and its body when it is known now
/// (`decided_now`; otherwise its length is unknown until the backend's body is read: chunked).
pub fn error_head(
    a: &Answering<'_>,
    e: &S3Error,
    decided_now: bool,
) -> Result<(ResponseHeader, Option<Bytes>)> {
    let mut head = ResponseHeader::build(e.status(), Some(6))?;
    for (n, v) in error_headers(e) {
        head.insert_header(n, v)?;
    }
    let mut body = None;
    if a.is_head || decided_now {
        let decided = Bytes::from(crate::xml::error(e, a.request_id));
        head.insert_header("content-length", decided.len().to_string())?;
        body = Some(decided);
    }
    super::stamp::stamp(&mut head, a.request_id, a.cors_origin)?;
    Ok((head, body))
}
