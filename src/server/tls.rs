//! TLS: the HTTPS listener's certificate, reloadable on SIGHUP.

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
    /// The files the certificate was last loaded from (a reload may name others).
    paths: std::sync::Mutex<(String, String)>,
    current: ArcSwap<CertifiedKey>,
}

impl CertStore {
    pub fn load(cert_path: &str, key_path: &str) -> Result<CertStore, String> {
        let key = load_certified_key(cert_path, key_path)?;
        Ok(CertStore {
            paths: std::sync::Mutex::new((cert_path.into(), key_path.into())),
            current: ArcSwap::from_pointee(key),
        })
    }

    /// Reads the certificate and key from these files (the configuration's, which a reload may have
    /// changed); on error the old certificate and paths stay. A blocking call (file reads).
    pub fn reload_from(&self, cert_path: &str, key_path: &str) -> Result<(), String> {
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
