//! The HTTP client for the backend calls s3p makes itself (listing pages, DeleteObjects batches):
//! connects to the backend's resolved addresses, trusts the system roots plus the backend's CA file, and
//! turns each failure into an error in virtual terms whose cause names the backend and the failure.

use super::{internal, Backend, Backends};
use crate::config::{Backend as BackendConfig, DataSource, Limits};
use crate::error::{FailureKind, S3Error, S3ErrorCode};
use crate::listing::merge::{BackendListRequest, BackendPage, PageSource};
use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

/// Resolves every name to the backend's own addresses: virtual-host requests name `<bucket>.<host>` in
/// `Host` and SNI but connect where the endpoint is, so no DNS entry per bucket is needed.
#[derive(Clone)]
pub(super) struct FixedResolver(Arc<Vec<SocketAddr>>);

impl tower_service::Service<Name> for FixedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Name) -> Self::Future {
        let addrs = self.0.as_ref().clone();
        Box::pin(async move { Ok(addrs.into_iter()) })
    }
}

pub(super) type BackendClient =
    Client<hyper_rustls::HttpsConnector<HttpConnector<FixedResolver>>, Full<Bytes>>;

/// The TLS settings of s3p's HTTPS clients (backends, the governance service): the system's trusted
/// roots plus `extra_ca` (a configured CA file); `field` names the setting in errors.
pub fn tls_client_config(
    extra_ca: &[rustls::pki_types::CertificateDer<'static>],
    field: &str,
) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    for cert in extra_ca {
        roots
            .add(cert.clone())
            .map_err(|e| format!("{field}.ca_file: {e}"))?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("{field}: TLS: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// Builds the client of one backend.
pub(super) fn build(
    config: &BackendConfig,
    limits: &Limits,
    addrs: Arc<Vec<SocketAddr>>,
    extra_ca: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<BackendClient, String> {
    let mut http = HttpConnector::new_with_resolver(FixedResolver(addrs));
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_millis(limits.connect_timeout_ms)));
    let tls_config = tls_client_config(extra_ca, &format!("backends.{}", config.name))?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_millis(limits.idle_timeout_ms))
        .build(https))
}

/// A request s3p makes to a backend itself.
pub struct Call<'a> {
    /// Names the call in logs.
    pub what: &'a str,
    pub method: &'a str,
    pub target: &'a super::ObjectTarget,
    /// Already encoded (SigV4 canonical form).
    pub query: &'a str,
    /// Headers to send and sign besides `host`.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: Bytes,
    /// The longest answer body read.
    pub max_body: usize,
}

/// A backend's answer to a call s3p made itself.
pub struct CallAnswer {
    pub status: u16,
    pub body: Bytes,
}

impl Backend {
    /// A successful answer read with `parse`. An error status is answered as the one table of backend
    /// answers says (`error::backend_answer`), logged with the backend's code and caused by this
    /// backend; an unreadable body is s3p's InternalError.
    fn read_answer<T>(
        &self,
        what: &str,
        answer: CallAnswer,
        parse: impl FnOnce(&[u8]) -> Result<T, String>,
    ) -> Result<T, S3Error> {
        if !(200..300).contains(&answer.status) {
            let code = crate::xml::parse_error_code(&answer.body).unwrap_or_default();
            log::warn!(
                "backend {} refused {what}: {} {code}",
                self.config.name,
                answer.status,
            );
            return Err(
                crate::error::backend_answer(answer.status, Some(&code), None)
                    .caused_by(&self.config.name, FailureKind::Status(answer.status)),
            );
        }
        parse(&answer.body).map_err(|e| {
            log::warn!(
                "backend {} sent an unreadable answer to {what}: {e}",
                self.config.name
            );
            S3Error::new(S3ErrorCode::InternalError)
                .caused_by(&self.config.name, FailureKind::Unreadable)
        })
    }
}

impl Backend {
    /// One signed request to the backend, answer read whole (at most `max_body` bytes). Failures to
    /// reach or read the backend are errors in virtual terms; an HTTP error status is an answer (the
    /// caller knows what it means).
    pub async fn call(&self, call: Call<'_>) -> Result<CallAnswer, S3Error> {
        let Call {
            what,
            method,
            target,
            query,
            headers,
            body,
            max_body,
        } = call;
        let path_and_query = match query {
            "" => target.path.clone(),
            q => format!("{}?{q}", target.path),
        };
        let payload_hash = if body.is_empty() {
            crate::auth::sigv4::UNSIGNED_PAYLOAD.to_string()
        } else {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&body))
        };
        let identity = self.identity().await?;
        let signed = self.sign(
            &identity,
            &super::ToSign {
                method,
                host: &target.host,
                path_and_query: &path_and_query,
                headers,
                payload_hash: &payload_hash,
            },
            SystemTime::now(),
        )?;
        let scheme = if self.config.tls { "https" } else { "http" };
        let mut builder = http::Request::builder()
            .method(method)
            .uri(format!("{scheme}://{}{path_and_query}", target.host))
            .header("host", &target.host);
        for (n, v) in headers {
            builder = builder.header(*n, *v);
        }
        for (n, v) in &signed {
            builder = builder.header(*n, v);
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| internal("backend request", &e))?;
        let timeout = Duration::from_millis(self.limits.read_timeout_ms);
        let started = std::time::Instant::now();
        let response = match tokio::time::timeout(timeout, self.client.request(request)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                log::warn!("backend {} unreachable for {what}: {e}", self.config.name);
                let kind = if e.is_connect() {
                    FailureKind::Connect
                } else {
                    FailureKind::Reset
                };
                return Err(S3Error::storage_unavailable().caused_by(&self.config.name, kind));
            }
            Err(_) => {
                log::warn!("backend {} timed out for {what}", self.config.name);
                return Err(
                    S3Error::storage_timeout().caused_by(&self.config.name, FailureKind::Timeout)
                );
            }
        };
        let status = response.status().as_u16();
        let limited = http_body_util::Limited::new(response.into_body(), max_body);
        let body = match tokio::time::timeout(timeout, limited.collect()).await {
            Ok(Ok(b)) => b.to_bytes(),
            // Over the limit, or the connection broke mid-body.
            Ok(Err(e)) => {
                log::warn!(
                    "backend {} sent an unreadable answer for {what}: {e}",
                    self.config.name
                );
                return Err(S3Error::storage_unavailable()
                    .caused_by(&self.config.name, FailureKind::Unreadable));
            }
            Err(_) => {
                log::warn!(
                    "backend {} timed out sending its answer for {what}",
                    self.config.name
                );
                return Err(
                    S3Error::storage_timeout().caused_by(&self.config.name, FailureKind::Timeout)
                );
            }
        };
        log::debug!(
            "backend {}: {what} in {:?}: {status}",
            self.config.name,
            started.elapsed()
        );
        Ok(CallAnswer { status, body })
    }

    /// One ListObjectsV2 call. Errors are logged with backend detail and returned in virtual terms.
    async fn list_objects(
        &self,
        ds: &DataSource,
        r: &BackendListRequest,
    ) -> Result<BackendPage, S3Error> {
        let target = self.object_target(&ds.bucket, "");
        let mut query = vec![
            ("list-type", "2".to_string()),
            ("encoding-type", "url".to_string()),
        ];
        query.push(("max-keys", r.max_keys.to_string()));
        query.push(("prefix", r.prefix.clone()));
        if let Some(d) = &r.delimiter {
            query.push(("delimiter", d.clone()));
        }
        if let Some(s) = &r.start_after {
            query.push(("start-after", s.clone()));
        }
        if let Some(c) = &r.continuation {
            query.push(("continuation-token", c.clone()));
        }
        let what = format!("listing data source {}", ds.name);
        // A listing page of 1,000 keys is well under 1 MiB; anything past 16 MiB is not a listing.
        let answer = self
            .call(Call {
                what: &what,
                method: "GET",
                target: &target,
                query: &super::encode_query(query),
                headers: &[],
                body: Bytes::new(),
                max_body: 16 << 20,
            })
            .await?;
        let (status, body) = (answer.status, answer.body);
        if !(200..300).contains(&status) {
            let code = crate::xml::parse_error_code(&body).unwrap_or_default();
            log::warn!(
                "backend {} refused a listing of data source {}: {status} {code}",
                self.config.name,
                ds.name,
            );
            let error = crate::error::backend_answer(status, Some(&code), None);
            return Err(error.caused_by(&self.config.name, FailureKind::Status(status)));
        }
        crate::listing::xml::parse_backend_listing(&body).map_err(|e| {
            log::warn!(
                "backend {} sent an unreadable listing for data source {}: {e}",
                self.config.name,
                ds.name
            );
            S3Error::with_message(
                S3ErrorCode::InternalError,
                "The data source's storage sent an unreadable listing.",
            )
            .caused_by(&self.config.name, FailureKind::Unreadable)
        })
    }
}

#[async_trait]
impl crate::upload::delete::DeleteSource for Backends {
    /// One backend DeleteObjects call for a group of keys of one bucket.
    async fn delete(
        &self,
        group: &crate::upload::delete::Group,
    ) -> Result<Vec<crate::upload::delete::Deleted>, S3Error> {
        use base64::Engine;
        use md5::Digest;
        let backend = self
            .get(&group.backend)
            .ok_or_else(|| S3Error::new(S3ErrorCode::InternalError))?;
        let body = crate::upload::delete::backend_request(&group.objects);
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&body));
        let target = backend.object_target(&group.bucket, "");
        let answer = backend
            .call(Call {
                what: "DeleteObjects",
                method: "POST",
                target: &target,
                query: "delete=",
                headers: &[("content-md5", &md5), ("content-type", "application/xml")],
                body: Bytes::from(body),
                max_body: 16 << 20,
            })
            .await?;
        backend.read_answer("DeleteObjects", answer, crate::upload::delete::parse_result)
    }
}

#[async_trait]
impl crate::upload::uploads_list::UploadsSource for Backends {
    /// One backend ListMultipartUploads call for a data source's bucket.
    async fn list_uploads(
        &self,
        ds: &DataSource,
        r: &crate::upload::uploads_list::BackendUploadsRequest,
    ) -> Result<crate::upload::uploads_list::BackendUploads, S3Error> {
        let backend = self
            .get(&ds.backend)
            .ok_or_else(|| S3Error::new(S3ErrorCode::InternalError))?;
        let mut query = vec![
            ("max-uploads", r.max_uploads.to_string()),
            ("prefix", r.prefix.clone()),
            ("uploads", String::new()),
        ];
        if let Some(m) = &r.key_marker {
            query.push(("key-marker", m.clone()));
        }
        if let Some(m) = &r.upload_id_marker {
            query.push(("upload-id-marker", m.clone()));
        }
        let what = format!("ListMultipartUploads of data source {}", ds.name);
        let answer = backend
            .call(Call {
                what: &what,
                method: "GET",
                target: &backend.object_target(&ds.bucket, ""),
                query: &super::encode_query(query),
                headers: &[],
                body: Bytes::new(),
                max_body: 16 << 20,
            })
            .await?;
        backend.read_answer(
            &what,
            answer,
            crate::upload::uploads_list::parse_backend_uploads,
        )
    }
}

#[async_trait]
impl PageSource for Backends {
    async fn list(
        &self,
        ds: &DataSource,
        request: BackendListRequest,
    ) -> Result<BackendPage, S3Error> {
        let backend = self
            .get(&ds.backend)
            .ok_or_else(|| S3Error::new(S3ErrorCode::InternalError))?;
        backend.list_objects(ds, &request).await
    }
}
