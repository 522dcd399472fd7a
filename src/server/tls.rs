//! TLS: the HTTPS listener's certificate, reloadable on SIGHUP.

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::Arc;

/// Why a certificate or key could not be loaded; names the file, never its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsError {
    /// The certificate file cannot be read or is not PEM.
    Certificate { path: String, reason: String },
    /// The certificate file holds no certificate.
    NoCertificate { path: String },
    /// The key file cannot be read, is not PEM, or holds a key rustls cannot sign with.
    Key { path: String, reason: String },
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsError::Certificate { path, reason } | TlsError::Key { path, reason } => {
                write!(f, "{path}: {reason}")
            }
            TlsError::NoCertificate { path } => write!(f, "{path}: no certificate"),
        }
    }
}

impl std::error::Error for TlsError {}

/// Reads a PEM certificate chain and key into a rustls `CertifiedKey`.
pub fn load_certified_key(cert_path: &str, key_path: &str) -> Result<CertifiedKey, TlsError> {
    let cert_error = |e: &dyn std::fmt::Display| TlsError::Certificate {
        path: cert_path.to_string(),
        reason: e.to_string(),
    };
    let key_error = |e: &dyn std::fmt::Display| TlsError::Key {
        path: key_path.to_string(),
        reason: e.to_string(),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| cert_error(&e))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_error(&e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_string(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| key_error(&e))?;
    let signing_key =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| key_error(&e))?;
    Ok(CertifiedKey::new(certs, signing_key))
}

/// Serves the current certificate; [`CertStore::reload_from`] swaps it for new handshakes without touching
/// established connections.
#[derive(Debug)]
pub struct CertStore {
    /// The files the certificate was last loaded from (a reload may name others).
    paths: std::sync::Mutex<(String, String)>,
    current: ArcSwap<CertifiedKey>,
}

impl CertStore {
    pub fn load(cert_path: &str, key_path: &str) -> Result<CertStore, TlsError> {
        let key = load_certified_key(cert_path, key_path)?;
        Ok(CertStore {
            paths: std::sync::Mutex::new((cert_path.into(), key_path.into())),
            current: ArcSwap::from_pointee(key),
        })
    }

    /// Reads the certificate and key from these files (the configuration's, which a reload may have
    /// changed); on error the old certificate and paths stay. A blocking call (file reads).
    pub fn reload_from(&self, cert_path: &str, key_path: &str) -> Result<(), TlsError> {
        let key = load_certified_key(cert_path, key_path)?;
        self.current.store(Arc::new(key));
        *self.paths.lock().unwrap() = (cert_path.into(), key_path.into());
        Ok(())
    }

    /// The files the certificate in use came from.
    pub fn paths(&self) -> (String, String) {
        self.paths.lock().unwrap().clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_and_what_is_wrong_with_it() {
        let dir = std::env::temp_dir().join(format!("s3p-tls-errors-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let empty = empty.to_str().unwrap();
        let missing = dir.join("missing.pem");
        let missing = missing.to_str().unwrap();
        assert_eq!(
            load_certified_key(empty, missing).err(),
            Some(TlsError::NoCertificate {
                path: empty.to_string()
            })
        );
        let e = load_certified_key(missing, empty).unwrap_err();
        assert!(
            matches!(&e, TlsError::Certificate { path, .. } if path == missing),
            "{e:?}"
        );
        assert!(e.to_string().starts_with(missing), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
