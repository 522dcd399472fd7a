//! Keys and grants from a governance service (issue 22): the pure core. What the service says about one
//! API key becomes an [`Identity`], and an `Identity` becomes the same [`ApiKey`] that `proxy.yaml`'s
//! `api_keys` give, so that authentication, the decision and the audit line need not know where a key
//! came from. No I/O here: the requests are sent, and the clocks read, by the caller.
//!
//! - this file: [`Identity`] and its [`ApiKey`];
//! - `cache.rs`: the decision cache (allow and deny TTLs, the grants' expiration as a bound,
//!   `stale_if_error`, bounded size) keyed by a hash of the credential, and the bookkeeping of
//!   single-flight lookups ([`cache::Flights`]);
//! - `immuta.rs`: the wire format of an Immuta-shaped service (request builders, answer parsers, the
//!   mapping of its data-source names to s3p's). Another provider is another such file: the cache and
//!   the `Identity` do not change.
//!
//! How the pieces fit (the caller's I/O, in order): hash the credential ([`KeyHash`]); ask the cache
//! (`Fresh` → use it, `Denied` → refuse, `Stale`/`Missing` → look up, single-flight); look up through the
//! provider module (for Immuta: authenticate, subscriptions page by page, [`immuta::map_grants`]); build an
//! [`Identity`]; cache [`Identity::to_api_key`] until [`Identity::expires_at`] at the latest, or cache the
//! deny; on a service error use the `Stale` entry if there was one, else refuse with 503 SlowDown.

pub mod cache;
pub mod immuta;

pub use cache::KeyHash;

use crate::config::{ApiKey, Entitlement, Secret};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Longest display name taken from the service: it goes into every audit line.
const MAX_NAME_CHARS: usize = 128;

/// What the governance service says about one credential: who it is (for logs), what it may read and
/// write, how it signs, and until when that holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Shown in logs and audit lines instead of the key (see [`display_name`]).
    pub name: String,
    /// Grants on s3p's data sources, in s3p's names (the provider module maps the service's names).
    pub grants: Entitlement,
    /// Secrets that verify SigV4/SigV2 signatures; empty for a bearer credential (the legacy header).
    pub secrets: Vec<Secret>,
    /// The earliest expiration (unix seconds) of the grants above, if any expires: the cache keeps the
    /// identity no longer than this, so that an expired subscription stops at its expiration.
    pub expires_at: Option<u64>,
}

impl Identity {
    /// The key the rest of s3p uses, for the credential `id` as clients send it (the API key in the legacy
    /// header, or the access key id of signatures).
    ///
    /// - `legacy_header` is true only without secrets: as `validate.rs` refuses for `api_keys`, a key
    ///   that signs must not also be a bearer credential (its id is public in every signature and
    ///   presigned URL, so accepting it as a bearer would make a shared URL permanent access).
    /// - `expires_at` stays `None`: the earliest grant expiration ends the *cache entry* (the identity is
    ///   looked up again, without the expired grant), not the key; as `ApiKey::expires_at` it would refuse
    ///   every other grant of the key too, as an expired key.
    pub fn to_api_key(&self, id: &str) -> Arc<ApiKey> {
        Arc::new(ApiKey {
            id: Secret::new(id),
            secrets: self.secrets.clone(),
            name: self.name.clone(),
            legacy_header: self.secrets.is_empty(),
            enabled: true,
            expires_at: None,
            data_sources: self.grants.clone(),
            session: None,
        })
    }
}

/// The name logs show for a credential: the one the service gave, cleaned (control characters dropped,
/// at most 128 characters), or `<provider>:` and the first 12 hex digits of the credential's SHA-256,
/// which tells keys apart in logs and names no secret (48 bits of a hash of a high-entropy key).
pub fn display_name(provider: &str, credential: &str, given: Option<&str>) -> String {
    if let Some(given) = given {
        let cleaned: String = given
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_NAME_CHARS)
            .collect();
        let cleaned = cleaned.trim();
        if !cleaned.is_empty() {
            return cleaned.to_string();
        }
    }
    let digest = Sha256::digest(credential.as_bytes());
    format!("{provider}:{}", hex::encode(&digest[..6]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Access;

    #[test]
    fn a_derived_name_names_no_secret() {
        let key = "f3a1c2d4e5b6a7980123456789abcdef";
        let name = display_name("immuta", key, None);
        let full = hex::encode(Sha256::digest(key.as_bytes()));
        assert_eq!(name, format!("immuta:{}", &full[..12]));
        assert!(!name.contains(key));
        // The same key, the same name; another key, another name.
        assert_eq!(name, display_name("immuta", key, None));
        assert_ne!(name, display_name("immuta", "another-key", None));
    }

    #[test]
    fn a_given_name_is_cleaned_and_bounded() {
        for (given, expected) in [
            (Some("Alice Analyst"), "Alice Analyst"),
            (Some("  bob\n\r\u{1b}[31m "), "bob[31m"),
            (Some(""), "immuta:"),
            (Some(" \t "), "immuta:"),
            (None, "immuta:"),
        ] {
            let name = display_name("immuta", "k", given);
            assert!(name.starts_with(expected), "{given:?} -> {name}");
            assert!(!name.chars().any(char::is_control));
        }
        let long = "x".repeat(1000);
        assert_eq!(
            display_name("immuta", "k", Some(&long)).len(),
            MAX_NAME_CHARS
        );
    }

    fn identity(secrets: Vec<Secret>) -> Identity {
        let mut grants = Entitlement::default();
        grants.named.insert("sales".into(), Access::Read);
        grants.named.insert("sandbox".into(), Access::Write);
        Identity {
            name: "immuta:0123456789ab".into(),
            grants,
            secrets,
            expires_at: Some(2_000_000_000),
        }
    }

    #[test]
    fn an_identity_becomes_the_api_key_the_rest_of_s3p_uses() {
        let bearer = identity(vec![]).to_api_key("the-api-key");
        assert_eq!(bearer.id.expose(), "the-api-key");
        assert!(bearer.legacy_header && bearer.enabled);
        assert_eq!(bearer.expires_at, None);
        assert!(bearer.secrets.is_empty());
        assert_eq!(bearer.name, "immuta:0123456789ab");
        assert!(bearer.data_sources.allows("sales"));
        assert!(bearer.data_sources.grants_write("sandbox"));
        assert!(!bearer.data_sources.allows("hr"));

        // A signing identity is never a bearer credential (as `api_keys` validation requires).
        let signing = identity(vec![Secret::new("s3cr3t")]).to_api_key("AKIDEXAMPLE");
        assert!(!signing.legacy_header);
        assert_eq!(signing.secrets.len(), 1);
        assert!(!format!("{signing:?}").contains("s3cr3t"));
    }
}
