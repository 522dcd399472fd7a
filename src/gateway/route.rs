//! Where an object request goes: the backend request a forward carries out (backend, host, path,
//! headers, body and its framing), checked by the decision. Pure.

use crate::auth::RequestView;
use crate::backend::{encode_query_value, Backend};
use crate::error::{S3Error, S3ErrorCode};
use crate::namespace;
use crate::state::State;
use crate::upload::answers::Rewrite;
use crate::upload::Payload;
use std::borrow::Cow;
use std::sync::Arc;

/// Where an object request goes: everything the backend request needs, checked.
pub struct ObjectRoute {
    pub backend: Arc<Backend>,
    /// Host header and TLS server name for the backend.
    pub host: String,
    pub sni: String,
    /// Backend path (bucket and key with virtual-host addressing folded in) and forwarded query.
    pub path_and_query: String,
    /// The client's allow-listed headers, the only ones sent (and signed) on, by lowercase name (a
    /// user-metadata name is the client's own, the others are s3p's constants).
    pub headers: Vec<(Cow<'static, str>, String)>,
    /// The request body sent on, and how it is framed; `None`: no body.
    pub payload: Option<Payload>,
    /// The client asked for `100 Continue` before it sends the body.
    pub expect_continue: bool,
    /// The backend's answer body is rewritten into virtual terms (multipart answers name the backend's
    /// bucket, key and upload id).
    pub rewrite: Rewrite,
    /// What a backend 404 means: no such key, or (for the parts of an upload) no such upload.
    pub not_found: S3ErrorCode,
    /// What s3p holds of the request body (counted in `limits.max_buffered_body_bytes`).
    pub body_hold: BodyHold,
    /// A CopyObject or UploadPartCopy: the backend copies up to 5 GiB for a few hundred bytes, so
    /// copies are limited per key and per replica.
    pub copy: bool,
    /// The virtual object the request is about: the backend's version ids in the answer are sealed
    /// for it.
    pub object: Option<namespace::VirtualKey>,
}

impl ObjectRoute {
    /// The backend request's framing headers: the body's length as the backend receives it (decoded,
    /// for signed aws-chunked), or chunked when the client sent none; no body: none, except that a PUT
    /// or POST without one (a copy, a new multipart upload) still says `Content-Length: 0`, as S3 wants.
    pub fn framing_headers(&self, method: &str) -> Option<(&'static str, String)> {
        match self.payload.as_ref().map(Payload::backend_length) {
            Some(Some(length)) => Some(("content-length", length.to_string())),
            Some(None) => Some(("transfer-encoding", "chunked".to_string())),
            None if method == "PUT" || method == "POST" => Some(("content-length", "0".into())),
            None => None,
        }
    }

    /// The backend request's `x-amz-content-sha256`.
    pub fn payload_hash(&self) -> &str {
        self.payload.as_ref().map_or(
            crate::auth::sigv4::UNSIGNED_PAYLOAD,
            Payload::backend_payload_hash,
        )
    }
}

/// What s3p holds of a request body, before or while it passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyHold {
    /// Streams through; nothing held.
    None,
    /// Streams through, but the backend reads it whole before it answers (CompleteMultipartUpload):
    /// this announced length is reserved while it passes, and it must arrive within the body deadline.
    Counted(u64),
    /// Read whole (at most this many bytes) and verified before the backend request starts: a small
    /// signed-chunk body, whose last byte could not otherwise be kept back (a zero-length body has none,
    /// so its backend request would complete before its chunk signature is checked), or a short
    /// CompleteMultipartUpload body (which must name a part).
    VerifiedFirst(u64),
}

/// Signed-chunk bodies up to this decoded length are verified whole before the backend sees a byte.
pub const SMALL_SIGNED_BODY: u64 = 32 << 10;

/// ... and at most this encoded length (pingora replays a body it read up to 64 KiB).
pub const MAX_VERIFIED_FIRST_BODY: u64 = 64 << 10;

/// The client asked for `100 Continue` before it sends its body.
pub fn expects_continue(view: &RequestView) -> bool {
    view.header("expect")
        .is_some_and(|e| e.trim().eq_ignore_ascii_case("100-continue"))
}

/// The route to a backend object: its backend, host, and path with `params` as the query.
pub fn route_to(
    st: &State,
    obj: &namespace::BackendObject,
    params: &[(&str, String)],
    headers: Vec<(Cow<'static, str>, String)>,
) -> Result<ObjectRoute, S3Error> {
    let backend = st
        .backends
        .get(&obj.backend)
        .ok_or_else(|| S3Error::new(S3ErrorCode::InternalError))?;
    let target = backend.object_target(&obj.bucket, &obj.key);
    let mut path_and_query = target.path;
    let mut sep = '?';
    for (n, v) in params {
        path_and_query.push(sep);
        path_and_query.push_str(n);
        path_and_query.push('=');
        path_and_query.push_str(&encode_query_value(v));
        sep = '&';
    }
    Ok(ObjectRoute {
        backend: backend.clone(),
        host: target.host,
        sni: target.sni,
        path_and_query,
        headers,
        payload: None,
        expect_continue: false,
        rewrite: Rewrite::None,
        not_found: S3ErrorCode::NoSuchKey,
        body_hold: BodyHold::None,
        copy: false,
        object: None,
    })
}
