//! The exchange with a backend in pingora's terms: the signed request head a route sends, the headers
//! of a backend's answer that pass, and how a failed exchange is counted.

use crate::error::{FailureKind, S3Error};
use crate::gateway::ObjectRoute;
use crate::upload::multipart::VersionIds;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::ErrorType;
use std::time::SystemTime;

/// The backend request's head for a route: the route's headers only (the client's credentials and
/// anything else not allow-listed stay behind), its host and framing, signed with SigV4 with the
/// backend's credentials. A signing failure is s3p's S3 error (carried as the cause of the pingora
/// error, so that `fail_to_proxy` answers with it).
pub async fn signed_head(
    route: &ObjectRoute,
    method: &http::Method,
) -> pingora::Result<RequestHeader> {
    let mut head = RequestHeader::build(
        method.clone(),
        route.path_and_query.as_bytes(),
        Some(route.headers.len() + 5),
    )?;
    for (name, value) in &route.headers {
        head.insert_header(name.to_string(), value)?;
    }
    head.insert_header("host", &route.host)?;
    if let Some((name, value)) = route.framing_headers(method.as_str()) {
        head.insert_header(name, value)?;
    }
    let signed_headers: Vec<(&str, &str)> = route
        .headers
        .iter()
        .map(|(n, v)| (n.as_ref(), v.as_str()))
        .collect();
    let backend = &route.backend;
    let signed: Result<_, S3Error> = match backend.identity().await {
        Ok(identity) => backend.sign(
            &identity,
            &crate::backend::ToSign {
                method: method.as_str(),
                host: &route.host,
                path_and_query: &route.path_and_query,
                headers: &signed_headers,
                payload_hash: route.payload_hash(),
            },
            SystemTime::now(),
        ),
        Err(e) => Err(e),
    };
    let signature = signed.map_err(|e| {
        pingora::Error::because(ErrorType::InternalError, "cannot sign backend request", e)
    })?;
    for (name, value) in signature {
        head.insert_header(name, value)?;
    }
    Ok(head)
}

/// Removes every header of a backend's interim answer (100 Continue, 103 Early Hints): it passes, but
/// never with the backend's headers (Link, request ids, Server).
pub fn strip_headers(resp: &mut ResponseHeader) -> pingora::Result<()> {
    let names: Vec<http::HeaderName> = resp.headers.keys().cloned().collect();
    for name in names {
        resp.remove_header(&name);
    }
    Ok(())
}

/// Keeps the allow-listed headers of a backend's successful answer (backend request ids, server names,
/// redirects, bucket regions... stay behind), with its version id sealed for the route's object (the
/// backend's names its objects; on some backends it is an upload id).
pub fn pass_headers(
    resp: &mut ResponseHeader,
    route: &ObjectRoute,
    versions: &VersionIds,
) -> pingora::Result<()> {
    let names: Vec<http::HeaderName> = resp.headers.keys().cloned().collect();
    let mut has_version = false;
    for name in names {
        if !crate::gateway::forwarded_response_header(name.as_str()) {
            resp.remove_header(&name);
        } else if name.as_str() == "x-amz-version-id" {
            // (`as_str`: comparing a HeaderName with a `&str` parses the `&str` as a header name.)
            has_version = true;
        }
    }
    // Looked up only when the backend sent one (most answers carry none).
    let version = has_version
        .then(|| resp.headers.get("x-amz-version-id"))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(v) = version {
        match route.object.as_ref() {
            Some(o) => {
                let sealed = versions.seal(&o.data_source, &o.key, &v);
                resp.insert_header("x-amz-version-id", sealed)?;
            }
            None => {
                resp.remove_header("x-amz-version-id");
            }
        }
    }
    Ok(())
}

/// How a backend connection failed, from pingora's error type (`s3p_backend_errors_total{kind}`).
pub fn failure_kind(etype: &ErrorType) -> FailureKind {
    match etype {
        ErrorType::ConnectTimedout
        | ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::ConnectProxyFailure
        | ErrorType::TLSHandshakeFailure
        | ErrorType::TLSHandshakeTimedout
        | ErrorType::InvalidCert
        | ErrorType::HandshakeError => FailureKind::Connect,
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => FailureKind::Timeout,
        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError => {
            FailureKind::Reset
        }
        _ => FailureKind::Unreadable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pingora_errors_map_to_failure_kinds() {
        for (etype, kind) in [
            (ErrorType::ConnectRefused, FailureKind::Connect),
            (ErrorType::TLSHandshakeFailure, FailureKind::Connect),
            (ErrorType::ReadTimedout, FailureKind::Timeout),
            (ErrorType::ConnectionClosed, FailureKind::Reset),
            (ErrorType::InvalidHTTPHeader, FailureKind::Unreadable),
        ] {
            assert_eq!(failure_kind(&etype), kind, "{etype:?}");
        }
    }
}
