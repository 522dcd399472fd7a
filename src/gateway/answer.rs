//! The answer side of a decision, pure like the decision itself: what the glue does with the backend's
//! answer head and its error body, and with a request body it read whole for a decision that needed it.

use super::route::ObjectRoute;
use super::AfterBody;
use crate::error::{backend_answer, backend_body_may_decide, S3Error};
use crate::upload::answers::Rewrite;
use crate::upload::delete::{self, DeleteRequest};
use crate::upload::{chunked::ChunkedDecoder, multipart, Payload};
use bytes::Bytes;

/// What the glue does with a backend's answer head.
#[derive(Debug, PartialEq, Eq)]
pub enum BackendHead {
    /// An interim answer (100 Continue, 103 Early Hints): passed, without any of the backend's headers
    /// (Link, request ids, Server).
    Interim,
    /// An error, or a redirect (never relayed: it names the backend's endpoint): s3p's own error answer
    /// replaces it, head and body. The backend's body is read to its end (so that both connections stay
    /// open) and dropped.
    Error {
        /// The error as the status says; the body may still decide another code (`body_decides`).
        error: S3Error,
        /// The backend's error body can change the code: the answer's length is known only after it.
        body_decides: bool,
        /// The backend failed or refused s3p itself (counted in `s3p_backend_errors_total`), as opposed
        /// to answering the client's question (a missing key, a bad parts list).
        backend_failed: bool,
    },
    /// Passed on, allow-listed headers only. `collect`: the body is rewritten (`Rewrite`), so its length
    /// changes and it is collected first.
    Pass { collect: bool },
}

/// The backend answered `status` to the route's request.
pub fn backend_head(status: u16, route: &ObjectRoute) -> BackendHead {
    if (100..200).contains(&status) {
        return BackendHead::Interim;
    }
    // 304 Not Modified answers a conditional GET: it passes like a success.
    if status >= 300 && status != 304 {
        let error = backend_answer(status, None, Some(route.not_found));
        return BackendHead::Error {
            backend_failed: super::audit::is_backend_failure(error.code),
            body_decides: backend_body_may_decide(status, Some(route.not_found)),
            error,
        };
    }
    BackendHead::Pass {
        collect: status == 200 && route.rewrite != Rewrite::None,
    }
}

/// The error s3p answers once the backend's error body (its first bytes) has been read.
pub fn backend_error_body(status: u16, body_start: &[u8], route: &ObjectRoute) -> S3Error {
    let code = crate::xml::parse_error_code(body_start);
    backend_answer(status, code.as_deref(), Some(route.not_found))
}

/// What to do once a body the decision needed has arrived whole.
pub enum WithBody {
    /// Send each backend its batch of the DeleteObjects request.
    DeleteObjects(DeleteRequest),
    /// Forward: the body was verified (pingora then sends what it read).
    Forward(Box<ObjectRoute>),
    /// An STS call's form body, for `decide_sts`.
    Sts(Option<std::sync::Arc<crate::config::ApiKey>>, Bytes),
}

/// Checks a body read whole: a DeleteObjects body against its integrity headers, then parsed; a
/// verified-first body's chunk signatures and checksums, and a CompleteMultipartUpload's parts list.
pub fn body_arrived(then: AfterBody, body: Bytes) -> Result<WithBody, S3Error> {
    match then {
        AfterBody::DeleteObjects(checks) => {
            checks.verify(&body)?;
            Ok(WithBody::DeleteObjects(delete::parse_request(&body)?))
        }
        AfterBody::Forward(route) => {
            let body = match &route.payload {
                Some(Payload::AwsChunked(plan)) => {
                    let mut decoder = ChunkedDecoder::new(plan.clone());
                    let decoded = decoder.feed(&body)?;
                    decoder.end_of_body()?;
                    decoded
                }
                _ => body,
            };
            if matches!(route.rewrite, Rewrite::Complete { .. }) {
                multipart::check_complete_body(&body)?;
            }
            Ok(WithBody::Forward(route))
        }
        AfterBody::Sts(resolved) => Ok(WithBody::Sts(resolved, body)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::S3ErrorCode;
    use crate::gateway::tests_support::route_for;

    #[test]
    fn backend_heads_are_decided_by_status() {
        let object = route_for(Rewrite::None, S3ErrorCode::NoSuchKey);
        let part = route_for(Rewrite::None, S3ErrorCode::NoSuchUpload);
        let complete = route_for(
            Rewrite::Complete {
                location: "l".into(),
                key: "k".into(),
            },
            S3ErrorCode::NoSuchUpload,
        );
        let error = |code, body_decides, backend_failed| BackendHead::Error {
            error: S3Error::new(code),
            body_decides,
            backend_failed,
        };
        use S3ErrorCode::*;
        #[rustfmt::skip]
        let table = [
            (100, &object, BackendHead::Interim),
            (103, &object, BackendHead::Interim),
            (200, &object, BackendHead::Pass { collect: false }),
            (206, &object, BackendHead::Pass { collect: false }),
            (304, &object, BackendHead::Pass { collect: false }),
            (200, &complete, BackendHead::Pass { collect: true }),
            // Only a 200 is rewritten: a 204 or 206 has nothing to rewrite.
            (204, &complete, BackendHead::Pass { collect: false }),
            (404, &object, error(NoSuchKey, false, false)),
            (404, &part, error(NoSuchUpload, false, false)),
            (412, &object, error(PreconditionFailed, false, false)),
            (416, &object, error(InvalidRange, false, false)),
            // 400: the body may say InvalidPart, MalformedXML...
            (400, &complete, error(InvalidRequest, true, false)),
            // The backend refused s3p's own credentials: the backend failed, not the client.
            (403, &object, error(AccessDenied, true, true)),
            (301, &object, error(InternalError, false, true)),
            (500, &object, error(ServiceUnavailable, true, true)),
        ];
        for (status, route, want) in table {
            let got = backend_head(status, route);
            match (&got, &want) {
                (
                    BackendHead::Error {
                        error: g,
                        body_decides: gb,
                        backend_failed: gf,
                    },
                    BackendHead::Error {
                        error: w,
                        body_decides: wb,
                        backend_failed: wf,
                    },
                ) => assert_eq!((g.code, gb, gf), (w.code, wb, wf), "{status}"),
                _ => assert_eq!(got, want, "{status}"),
            }
        }
        // A 503 is a retryable SlowDown.
        let BackendHead::Error { error, .. } = backend_head(503, &object) else {
            panic!("503 is an error");
        };
        assert_eq!((error.code, error.retry_after_s), (SlowDown, Some(1)));
    }

    #[test]
    fn the_backend_error_body_decides_allow_listed_codes() {
        let complete = route_for(
            Rewrite::Complete {
                location: "l".into(),
                key: "k".into(),
            },
            S3ErrorCode::NoSuchUpload,
        );
        let body = |code: &str| {
            format!("<Error><Code>{code}</Code><Message>real-bucket</Message><Resource>/real-bucket/k</Resource></Error>")
        };
        #[rustfmt::skip]
        let table = [
            (400, body("InvalidPart"), S3ErrorCode::InvalidPart),
            (400, body("MalformedXML"), S3ErrorCode::MalformedXML),
            (400, body("InvalidBucketName"), S3ErrorCode::InvalidRequest),
            (404, body("NoSuchBucket"), S3ErrorCode::NoSuchUpload),
            (400, "not xml".to_string(), S3ErrorCode::InvalidRequest),
        ];
        for (status, body, code) in table {
            let e = backend_error_body(status, body.as_bytes(), &complete);
            assert_eq!(e.code, code, "{status} {body}");
            assert!(!e.message.contains("real-bucket"));
        }
    }

    #[test]
    fn bodies_read_whole_are_checked_before_anything_goes_on() {
        use crate::upload::BodyChecks;
        use base64::Engine;
        use md5::Digest;
        let delete = b"<Delete><Object><Key>sandbox/a</Key></Object></Delete>";
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(delete));
        let checks = |md5: &str| BodyChecks {
            length: delete.len() as u64,
            content_md5: Some(md5.to_string()),
            checksum: None,
            sha256: None,
        };
        match body_arrived(
            AfterBody::DeleteObjects(checks(&md5)),
            Bytes::from_static(delete),
        ) {
            Ok(WithBody::DeleteObjects(r)) => assert_eq!(r.objects[0].key, "sandbox/a"),
            _ => panic!("a good DeleteObjects body"),
        }
        let wrong = "1B2M2Y8AsgTpgAmY7PhCfg==";
        let e = body_arrived(
            AfterBody::DeleteObjects(checks(wrong)),
            Bytes::from_static(delete),
        );
        assert_eq!(e.err().map(|e| e.code), Some(S3ErrorCode::BadDigest));
        // A Complete read first must name a part.
        let complete = || {
            AfterBody::Forward(Box::new(route_for(
                Rewrite::Complete {
                    location: "l".into(),
                    key: "k".into(),
                },
                S3ErrorCode::NoSuchUpload,
            )))
        };
        let empty = Bytes::from_static(b"<CompleteMultipartUpload></CompleteMultipartUpload>");
        let e = body_arrived(complete(), empty).err().map(|e| e.code);
        assert_eq!(e, Some(S3ErrorCode::MalformedXML));
        let parts = Bytes::from_static(
            b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"e\"</ETag></Part></CompleteMultipartUpload>",
        );
        assert!(matches!(
            body_arrived(complete(), parts),
            Ok(WithBody::Forward(_))
        ));
    }
}
