//! Session tokens: what `AssumeRole` and `AssumeRoleWithWebIdentity` hand out, and what every later
//! request with `x-amz-security-token` gives back. Stateless, so that any replica sharing the
//! `token_secret` verifies a token another replica issued, with no shared store:
//!
//! - the token is a [`Session`] sealed (`crate::seal`, purpose `session token`): the grants, the expiry,
//!   the parent identity, the role and session names, and a random session id, encrypted and
//!   authenticated; a changed, truncated or foreign token does not open;
//! - the access key id (`ASIA` + 16 hex) and the secret access key are *derived* from the session id
//!   with keys of the same `token_secret` (HMAC-SHA256), never stored: the token names its access key
//!   id, and a request whose signature names another is refused;
//! - rotation: a token sealed with a secret now in `previous_token_secrets` still opens, and its
//!   credentials are derived with that secret, so sessions survive a rotation until they expire.
//!
//! Pure: the clock and the random session id are parameters.

use crate::config::{Entitlement, Secret};
use crate::seal::Sealer;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The longest token looked at (sessions with hundreds of named grants stay well below).
pub const MAX_TOKEN_CHARS: usize = 12 * 1024;
/// The prefix of every temporary access key id (as AWS's).
pub const ACCESS_KEY_PREFIX: &str = "ASIA";

/// What a session token carries (sealed: no client reads or changes it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// 16 random bytes, hex: the credentials are derived from it.
    #[serde(rename = "n")]
    pub id: String,
    #[serde(rename = "p")]
    pub parent: Parent,
    /// The grants the session was issued with (narrowed by role and policy): requests get these,
    /// intersected with the parent's current grants for a key parent.
    #[serde(rename = "g")]
    pub grants: Entitlement,
    /// Unix seconds.
    #[serde(rename = "i")]
    pub issued_at: u64,
    #[serde(rename = "e")]
    pub expires_at: u64,
    /// The role named by `RoleArn` (its last path segment).
    #[serde(rename = "r")]
    pub role: String,
    /// `RoleSessionName`.
    #[serde(rename = "s")]
    pub name: String,
}

/// Who asked for the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Parent {
    /// An API key (configured, or known to the governance service): `bearer` when it authenticated
    /// with the legacy header (the governance service is asked about it as such).
    #[serde(rename = "k")]
    Key { id: String, bearer: bool },
    /// A web identity: the issuer and subject of the OIDC token, and the name logs show.
    #[serde(rename = "w")]
    WebIdentity {
        issuer: String,
        subject: String,
        name: String,
    },
}

impl Session {
    /// The id per-key limits count the session's requests by.
    pub fn parent_id(&self) -> String {
        match &self.parent {
            Parent::Key { id, .. } => id.clone(),
            Parent::WebIdentity {
                issuer, subject, ..
            } => format!("web:{issuer}#{subject}"),
        }
    }

    /// `<role>/<session name>#<8 hex of the session id>`: names the session in audit lines.
    pub fn label(&self) -> String {
        let short = self.id.get(..8).unwrap_or(&self.id);
        format!("{}/{}#{short}", self.role, self.name)
    }
}

/// The credentials a client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: String,
    /// Unix seconds.
    pub expiration: u64,
}

/// A token that opened: its session, and the credentials derived for it.
#[derive(Debug, Clone)]
pub struct Opened {
    pub session: Session,
    pub access_key_id: String,
    pub secret_access_key: Secret,
}

/// Why a token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not one of ours: changed, truncated, foreign, sealed with a secret no longer configured.
    Invalid,
    /// Ours, but past its expiry.
    Expired,
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// The keys of one `token_secret`.
struct SecretKeys {
    sealer: Sealer,
    access_key_id: [u8; 32],
    secret_access_key: [u8; 32],
}

impl SecretKeys {
    fn new(secret: &str) -> SecretKeys {
        SecretKeys {
            sealer: Sealer::rotated("session token", secret, &[]),
            access_key_id: hmac(secret.as_bytes(), b"s3p session: access key id"),
            secret_access_key: hmac(secret.as_bytes(), b"s3p session: secret access key"),
        }
    }

    fn access_key_id(&self, session_id: &str) -> String {
        let mac = hmac(&self.access_key_id, session_id.as_bytes());
        format!("{ACCESS_KEY_PREFIX}{}", hex::encode_upper(&mac[..8]))
    }

    fn secret_access_key(&self, session_id: &str) -> Secret {
        let mac = hmac(&self.secret_access_key, session_id.as_bytes());
        Secret::new(STANDARD.encode(&mac[..30]))
    }
}

/// Issues and opens session tokens with the `token_secret` (and opens those of earlier secrets).
pub struct SessionSealer {
    /// The current secret's keys first.
    keys: Vec<SecretKeys>,
}

impl SessionSealer {
    pub fn new(current: &str, previous: &[&str]) -> SessionSealer {
        SessionSealer {
            keys: std::iter::once(current)
                .chain(previous.iter().copied())
                .map(SecretKeys::new)
                .collect(),
        }
    }

    /// The credentials of a new session (sealed with the current secret).
    pub fn issue(&self, session: &Session) -> Credentials {
        let keys = &self.keys[0];
        let plaintext = serde_json::to_vec(session).expect("a session serialises");
        Credentials {
            access_key_id: keys.access_key_id(&session.id),
            secret_access_key: keys.secret_access_key(&session.id),
            session_token: keys.sealer.seal(b"", &plaintext),
            expiration: session.expires_at,
        }
    }

    /// The session of `token`, if it is one of ours and has not expired at `now_s` (unix seconds).
    pub fn open(&self, token: &str, now_s: u64) -> Result<Opened, TokenError> {
        let (keys, plaintext) = self
            .keys
            .iter()
            .find_map(|k| Some((k, k.sealer.open(token, b"", MAX_TOKEN_CHARS)?)))
            .ok_or(TokenError::Invalid)?;
        let session: Session =
            serde_json::from_slice(&plaintext).map_err(|_| TokenError::Invalid)?;
        if now_s >= session.expires_at {
            return Err(TokenError::Expired);
        }
        Ok(Opened {
            access_key_id: keys.access_key_id(&session.id),
            secret_access_key: keys.secret_access_key(&session.id),
            session,
        })
    }
}

impl Opened {
    /// Whether `claimed` (the access key id a request's signature names) is this session's, compared in
    /// constant time.
    pub fn is_for(&self, claimed: &str) -> bool {
        bool::from(self.access_key_id.as_bytes().ct_eq(claimed.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Access;

    const SECRET: &str = "session-test-secret-0123456789";
    const T0: u64 = 1_800_000_000;

    fn session(parent: Parent) -> Session {
        let mut grants = Entitlement::default();
        grants.named.insert("sales".into(), Access::Read);
        Session {
            id: "00112233445566778899aabbccddeeff".into(),
            parent,
            grants,
            issued_at: T0,
            expires_at: T0 + 900,
            role: "analyst".into(),
            name: "job-42".into(),
        }
    }

    fn key_parent() -> Parent {
        Parent::Key {
            id: "alice-api-key".into(),
            bearer: false,
        }
    }

    #[test]
    fn a_token_opens_to_its_session_and_credentials_until_it_expires() {
        let sealer = SessionSealer::new(SECRET, &[]);
        let s = session(key_parent());
        let creds = sealer.issue(&s);
        assert!(creds.access_key_id.starts_with("ASIA") && creds.access_key_id.len() == 20);
        assert_eq!(creds.secret_access_key.expose().len(), 40);
        assert_eq!(creds.expiration, T0 + 900);
        // Sealed: neither the parent key nor the grants can be read from it.
        for secret in ["alice-api-key", "sales", "analyst", "job-42"] {
            assert!(!creds.session_token.contains(secret), "{secret}");
        }
        let opened = sealer.open(&creds.session_token, T0 + 10).unwrap();
        assert_eq!(opened.session, s);
        assert_eq!(opened.access_key_id, creds.access_key_id);
        assert_eq!(opened.secret_access_key, creds.secret_access_key);
        assert!(opened.is_for(&creds.access_key_id));
        assert!(!opened.is_for("AKIAOTHERKEY"));
        // Expiry: the last second it is valid, and the first it is not.
        assert!(sealer.open(&creds.session_token, T0 + 899).is_ok());
        assert_eq!(
            sealer.open(&creds.session_token, T0 + 900).unwrap_err(),
            TokenError::Expired
        );
        assert_eq!(s.label(), "analyst/job-42#00112233");
        assert_eq!(s.parent_id(), "alice-api-key");
    }

    #[test]
    fn tampered_truncated_swapped_and_foreign_tokens_are_invalid() {
        let sealer = SessionSealer::new(SECRET, &[]);
        let token = sealer.issue(&session(key_parent())).session_token;
        // Every single-character change.
        for i in 0..token.len() {
            let mut bytes = token.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(bytes).unwrap();
            assert_eq!(
                sealer.open(&changed, T0).unwrap_err(),
                TokenError::Invalid,
                "position {i}"
            );
        }
        // Truncated, extended, empty, too long.
        for bad in [
            &token[..token.len() - 1],
            &token[..token.len() / 2],
            &format!("{token}A"),
            "",
            &"A".repeat(MAX_TOKEN_CHARS + 1),
        ] {
            assert_eq!(sealer.open(bad, T0).unwrap_err(), TokenError::Invalid);
        }
        // Another deployment's secret.
        let foreign = SessionSealer::new("another-deployment-secret-000", &[]);
        assert_eq!(foreign.open(&token, T0).unwrap_err(), TokenError::Invalid);
        // Another purpose's sealed string (a continuation token) is no session.
        let listing = Sealer::rotated("continuation token", SECRET, &[]);
        let other = listing.seal(b"", &serde_json::to_vec(&session(key_parent())).unwrap());
        assert_eq!(sealer.open(&other, T0).unwrap_err(), TokenError::Invalid);
        // Two sessions: each token derives its own credentials; swapping tokens swaps the key id.
        let mut s2 = session(key_parent());
        s2.id = "ffeeddccbbaa99887766554433221100".into();
        let c2 = sealer.issue(&s2);
        let o1 = sealer.open(&token, T0).unwrap();
        assert!(!o1.is_for(&c2.access_key_id));
        assert_ne!(o1.secret_access_key, c2.secret_access_key);
    }

    #[test]
    fn a_rotation_keeps_sessions_and_their_credentials() {
        let old = SessionSealer::new(SECRET, &[]);
        let creds = old.issue(&session(key_parent()));
        let rotated = SessionSealer::new("the-next-session-secret-0000", &[SECRET]);
        let opened = rotated.open(&creds.session_token, T0).unwrap();
        assert_eq!(opened.access_key_id, creds.access_key_id);
        assert_eq!(opened.secret_access_key, creds.secret_access_key);
        // New sessions come from the new secret: other credentials for the same session id.
        let fresh = rotated.issue(&session(key_parent()));
        assert_ne!(fresh.access_key_id, creds.access_key_id);
        // Once the old secret is dropped, its sessions end.
        let dropped = SessionSealer::new("the-next-session-secret-0000", &[]);
        assert_eq!(
            dropped.open(&creds.session_token, T0).unwrap_err(),
            TokenError::Invalid
        );
    }

    #[test]
    fn a_web_identity_session_names_its_issuer_and_subject() {
        let s = session(Parent::WebIdentity {
            issuer: "https://idp.example".into(),
            subject: "user-1".into(),
            name: "alice@example.com".into(),
        });
        assert_eq!(s.parent_id(), "web:https://idp.example#user-1");
        let sealer = SessionSealer::new(SECRET, &[]);
        let opened = sealer.open(&sealer.issue(&s).session_token, T0).unwrap();
        assert_eq!(opened.session, s);
    }
}
