//! TLS: the HTTPS listener's certificate, reloadable on SIGHUP, and extra CAs for https backends.

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::Arc;

/// Reads a PEM certificate chain and key into a rustls `CertifiedKey`.
pub fn load_certified_key(cert_path: &str, key_path: &str) -> Result<CertifiedKey, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| format!("{cert_path}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{cert_path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{cert_path}: no certificate"));
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| format!("{key_path}: {e}"))?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("{key_path}: {e}"))?;
    Ok(CertifiedKey::new(certs, signing_key))
}

/// Serves the current certificate; [`CertStore::reload`] swaps it for new handshakes without touching
/// established connections.
#[derive(Debug)]
pub struct CertStore {
    cert_path: String,
    key_path: String,
    current: ArcSwap<CertifiedKey>,
}

impl CertStore {
    pub fn load(cert_path: &str, key_path: &str) -> Result<CertStore, String> {
        let key = load_certified_key(cert_path, key_path)?;
        Ok(CertStore {
            cert_path: cert_path.into(),
            key_path: key_path.into(),
            current: ArcSwap::from_pointee(key),
        })
    }

    /// Re-reads the files; on error the old certificate stays.
    pub fn reload(&self) -> Result<(), String> {
        let key = load_certified_key(&self.cert_path, &self.key_path)?;
        self.current.store(Arc::new(key));
        Ok(())
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The certificates of a PEM CA file (for https backends with a private CA).
pub fn load_ca_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{path}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path}: no certificate"));
    }
    Ok(certs)
}
