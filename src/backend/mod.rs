//! The real backends: where each one is, its credentials, SigV4 re-signing of outgoing requests, and the
//! HTTP client for the calls s3p makes itself (`client.rs`: listing pages, the page source the merge
//! reads from, and DeleteObjects batches), credentials (`credentials.rs`).
//!
//! Object bytes do not pass through here: object reads and writes go through pingora's streaming proxy
//! path, and only borrow [`Backend::sign`] and [`Backend::object_target`] from this module.

use crate::config::{AddressingStyle, Backend as BackendConfig, Config, Limits};
use crate::error::{S3Error, S3ErrorCode};
use crate::namespace::encode_path;
use aws_smithy_runtime_api::client::identity::Identity;
use percent_encoding::utf8_percent_encode;
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::SystemTime;

/// Query values are encoded with the strictest set (RFC 3986 unreserved only), so that the query we send
/// is already in SigV4 canonical form and no backend can read it differently.
pub fn encode_query_value(v: &str) -> String {
    utf8_percent_encode(v, crate::wire::UNRESERVED).to_string()
}

/// A query string for a call s3p makes itself: parameters sorted by name (the SigV4 canonical order),
/// values encoded by [`encode_query_value`].
pub fn encode_query(mut pairs: Vec<(&str, String)>) -> String {
    pairs.sort();
    pairs
        .iter()
        .map(|(n, v)| format!("{n}={}", encode_query_value(v)))
        .collect::<Vec<_>>()
        .join("&")
}

mod client;
pub use client::tls_client_config;
mod credentials;
pub mod sign;

pub use sign::ToSign;

use client::BackendClient;
use credentials::CredentialSource;

/// One backend, ready to use.
pub struct Backend {
    pub config: BackendConfig,
    /// Resolved when the backend is built: at start-up, on SIGHUP, and when a periodic resolution finds
    /// new addresses (pingora's peers take addresses, and resolving per request would put DNS on the hot
    /// path).
    pub addr: SocketAddr,
    /// Every address the host name had (the backend client tries them in turn).
    addrs: Arc<Vec<SocketAddr>>,
    credentials: CredentialSource,
    client: BackendClient,
    /// Extra CA certificates for pingora's connections to an https backend.
    pub ca: Option<Arc<[pingora::utils::tls::WrappedX509]>>,
    limits: Limits,
    /// The `Host` header of path-style requests, written once rather than per request.
    path_style_host: String,
}

/// Where an object request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectTarget {
    /// `Host` header value (and SNI host for TLS).
    pub host: String,
    pub sni: String,
    /// Path, percent-encoded for the wire (also the SigV4 canonical URI).
    pub path: String,
}

impl Backend {
    /// A backend at the given addresses (see [`resolve`]); the first one is used for object requests.
    fn new(
        config: &BackendConfig,
        limits: &Limits,
        addrs: Vec<SocketAddr>,
    ) -> Result<Backend, String> {
        let addr = *addrs
            .first()
            .ok_or_else(|| format!("backends.{}: {} has no address", config.name, config.host))?;
        let addrs = Arc::new(addrs);
        let extra_ca = match &config.ca_file {
            Some(path) => {
                load_ca_certs(path).map_err(|e| format!("backends.{}.ca_file: {e}", config.name))?
            }
            None => Vec::new(),
        };
        let client = client::build(config, limits, addrs.clone(), &extra_ca)?;
        // pingora's object path takes the same CA in its own certificate type.
        let ca = (!extra_ca.is_empty()).then(|| {
            let certs: Vec<pingora::utils::tls::WrappedX509> = extra_ca
                .iter()
                .map(|c| {
                    pingora::utils::tls::WrappedX509::new(
                        c.to_vec(),
                        pingora::utils::tls::parse_x509,
                    )
                })
                .collect();
            Arc::<[pingora::utils::tls::WrappedX509]>::from(certs.into_boxed_slice())
        });
        let credentials = CredentialSource::from_config(config);
        let path_style_host = host_with_port(config, &config.host);
        Ok(Backend {
            path_style_host,
            config: config.clone(),
            addr,
            addrs,
            credentials,
            client,
            ca,
            limits: limits.clone(),
        })
    }

    /// Host header, SNI and path for a key (or `""` for the bucket itself) in a backend bucket.
    pub fn object_target(&self, bucket: &str, key: &str) -> ObjectTarget {
        match self.config.addressing {
            AddressingStyle::Path => ObjectTarget {
                host: self.path_style_host.clone(),
                sni: self.config.host.clone(),
                path: format!("/{bucket}/{}", encode_path(key)),
            },
            AddressingStyle::VirtualHost => {
                let host = format!("{bucket}.{}", self.config.host);
                ObjectTarget {
                    host: host_with_port(&self.config, &host),
                    sni: host,
                    path: format!("/{}", encode_path(key)),
                }
            }
        }
    }

    /// Signs a request with SigV4 and the backend's credentials; returns the headers to add
    /// (`authorization`, `x-amz-date`, `x-amz-content-sha256`, and `x-amz-security-token` for temporary
    /// credentials). `req.headers` are the headers to sign besides `host`: every `x-amz-*` header that
    /// will be sent must be among them.
    pub fn sign(
        &self,
        identity: &Identity,
        req: &ToSign,
        now: SystemTime,
    ) -> Result<Vec<(&'static str, String)>, S3Error> {
        let credentials = identity
            .data::<aws_credential_types::Credentials>()
            .ok_or_else(|| internal("signing", &"the backend identity is not an access key"))?;
        Ok(sign::sign(
            &sign::SigningCredentials {
                access_key_id: credentials.access_key_id(),
                secret_access_key: credentials.secret_access_key(),
                session_token: credentials.session_token(),
            },
            &self.config.region,
            req,
            now,
        ))
    }
}

/// A `Host` header value: the host (an IPv6 address in brackets), and the port unless the scheme's default.
fn host_with_port(config: &BackendConfig, host: &str) -> String {
    let default = if config.tls { 443 } else { 80 };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if config.port == default {
        host
    } else {
        format!("{host}:{}", config.port)
    }
}

/// The certificates of a PEM CA file (for https backends with a private CA).
pub fn load_ca_certs(
    path: &str,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    let certs: Vec<rustls::pki_types::CertificateDer<'static>> =
        <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_file_iter(
            path,
        )
        .map_err(|e| format!("{path}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path}: no certificate"));
    }
    Ok(certs)
}

fn internal(what: &str, e: &dyn std::fmt::Display) -> S3Error {
    log::error!("{what}: {e}");
    S3Error::new(S3ErrorCode::InternalError)
}

/// All backends of a configuration.
pub struct Backends {
    /// Shared so that a request's route holds its backend without looking it up again.
    by_name: HashMap<String, Arc<Backend>>,
}

/// The addresses of every backend, by name.
pub type Addresses = HashMap<String, Vec<SocketAddr>>;

/// Resolves a backend's host name (a blocking call: DNS).
pub fn resolve(config: &BackendConfig) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = (config.host.as_str(), config.port)
        .to_socket_addrs()
        .map_err(|e| {
            format!(
                "backends.{}: cannot resolve {}: {e}",
                config.name, config.host
            )
        })?
        .collect();
    if addrs.is_empty() {
        return Err(format!(
            "backends.{}: {} has no address",
            config.name, config.host
        ));
    }
    Ok(addrs)
}

/// The backends that must move: the address each one uses (its first) is no longer among its fresh
/// addresses. DNS answers that merely reorder or rotate a pool (AWS answers a different subset on almost
/// every query) move nothing while the address in use stays valid. A backend missing from `new`, whose
/// resolution failed, keeps its addresses and is not reported.
pub fn moved_backends(old: &Addresses, new: &Addresses) -> Vec<String> {
    let mut moved: Vec<String> = new
        .iter()
        .filter(|(name, fresh)| {
            old.get(*name)
                .and_then(|was| was.first())
                .is_none_or(|in_use| !fresh.contains(in_use))
        })
        .map(|(name, _)| name.clone())
        .collect();
    moved.sort();
    moved
}

impl Backends {
    /// Resolves and prepares every backend. Needs a Tokio runtime only when used, not when built.
    pub fn new(config: &Config) -> Result<Backends, String> {
        let mut addresses = Addresses::new();
        for (name, b) in &config.backends {
            addresses.insert(name.clone(), resolve(b)?);
        }
        Backends::at(config, &addresses)
    }

    /// Prepares every backend at already resolved addresses (each backend must have some).
    pub fn at(config: &Config, addresses: &Addresses) -> Result<Backends, String> {
        let mut by_name = HashMap::new();
        for (name, b) in &config.backends {
            let addrs = addresses
                .get(name)
                .cloned()
                .ok_or_else(|| format!("backends.{name}: not resolved"))?;
            by_name.insert(
                name.clone(),
                Arc::new(Backend::new(b, &config.limits, addrs)?),
            );
        }
        Ok(Backends { by_name })
    }

    /// The addresses every backend is using.
    pub fn addresses(&self) -> Addresses {
        self.by_name
            .iter()
            .map(|(name, b)| (name.clone(), b.addrs.as_ref().clone()))
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Backend>> {
        self.by_name.get(name)
    }

    pub fn all(&self) -> impl Iterator<Item = (&str, &Backend)> {
        self.by_name.iter().map(|(n, b)| (n.as_str(), b.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendCredentials, Secret};
    use std::time::Duration;

    fn backend(addressing: AddressingStyle, endpoint: &str) -> Backend {
        let url = url::Url::parse(endpoint).unwrap();
        let cfg = BackendConfig {
            name: "b".into(),
            tls: url.scheme() == "https",
            host: url.host_str().unwrap().to_string(),
            port: url.port_or_known_default().unwrap(),
            endpoint: url,
            region: "garage".into(),
            addressing,
            ca_file: None,
            credentials: BackendCredentials::Static {
                access_key_id: Secret::new("GKTEST"),
                secret_access_key: Secret::new("secret"),
            },
        };
        let addrs = resolve(&cfg).unwrap();
        Backend::new(&cfg, &Limits::default(), addrs).unwrap()
    }

    #[test]
    fn a_backend_moves_when_its_address_in_use_is_gone() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let old: Addresses = [
            ("s3".to_string(), vec![a("10.0.0.1:443"), a("10.0.0.2:443")]),
            ("minio".to_string(), vec![a("127.0.0.1:9000")]),
        ]
        .into();
        // Same set in another order: not moved. A failed resolution (absent): not moved. Another subset
        // that still holds the address in use: not moved.
        let same: Addresses =
            [("s3".to_string(), vec![a("10.0.0.2:443"), a("10.0.0.1:443")])].into();
        assert!(moved_backends(&old, &same).is_empty());
        let subset: Addresses =
            [("s3".to_string(), vec![a("10.0.0.9:443"), a("10.0.0.1:443")])].into();
        assert!(moved_backends(&old, &subset).is_empty());
        let rotated: Addresses = [
            ("s3".to_string(), vec![a("10.0.0.3:443")]),
            ("minio".to_string(), vec![a("127.0.0.1:9000")]),
        ]
        .into();
        assert_eq!(moved_backends(&old, &rotated), vec!["s3".to_string()]);
    }

    #[test]
    fn targets_by_addressing_style() {
        let p = backend(AddressingStyle::Path, "http://127.0.0.1:3900");
        assert_eq!(
            p.object_target("real", "data/a b+c"),
            ObjectTarget {
                host: "127.0.0.1:3900".into(),
                sni: "127.0.0.1".into(),
                path: "/real/data/a%20b%2Bc".into()
            }
        );
        let v = backend(AddressingStyle::VirtualHost, "https://localhost");
        assert_eq!(
            v.object_target("real", "k"),
            ObjectTarget {
                host: "real.localhost".into(),
                sni: "real.localhost".into(),
                path: "/k".into()
            }
        );
        assert_eq!(v.addr.port(), 443);
    }

    #[test]
    fn signing_produces_sigv4_headers_for_the_backend() {
        let b = backend(AddressingStyle::Path, "http://127.0.0.1:3900");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let identity = match &b.credentials {
            CredentialSource::Static(i) => i.clone(),
            _ => unreachable!(),
        };
        let h = b
            .sign(
                &identity,
                &ToSign {
                    method: "GET",
                    host: "127.0.0.1:3900",
                    path_and_query: "/real/a%20b",
                    headers: &[("range", "bytes=0-1")],
                    payload_hash: crate::auth::sigv4::UNSIGNED_PAYLOAD,
                },
                t,
            )
            .unwrap();
        let get = |n: &str| {
            h.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(get("x-amz-content-sha256"), "UNSIGNED-PAYLOAD");
        assert_eq!(get("x-amz-date"), "20231114T221320Z");
        let auth = get("authorization");
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=GKTEST/20231114/garage/s3/aws4_request"),
            "{auth}"
        );
        assert!(
            auth.contains("SignedHeaders=host;range;x-amz-content-sha256;x-amz-date"),
            "{auth}"
        );
    }
}
