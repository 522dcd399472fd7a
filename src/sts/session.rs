//! Session tokens: what `AssumeRole` and `AssumeRoleWithWebIdentity` hand out, and what every later
//! request with `x-amz-security-token` gives back. Stateless, so that any replica sharing the
//! `token_secret` verifies a token another replica issued, with no shared store:
//!
//! - the token is a random session id (16 bytes, in clear but authenticated) and a [`Session`] sealed
//!   with ChaCha20-Poly1305 (`ring`) under a key derived from the `token_secret` (the id's first 12
//!   bytes are the nonce): the grants, the expiry, the parent identity, the role and session names,
//!   encrypted and authenticated; a changed, truncated or foreign token does not open. (Not
//!   `crate::seal`'s HMAC construction: a token is opened on every request, and an AEAD costs a small
//!   fraction of an HMAC keystream there);
//! - the access key id is `ASIA` + the id's first 8 bytes in hex, and the secret access key is
//!   *derived* from the id with a key of the same `token_secret` (HMAC-SHA256), never stored: a
//!   request whose signature names another access key id than its token's is refused;
//! - rotation: a token sealed with a secret now in `previous_token_secrets` still opens, and its
//!   credentials are derived with that secret, so sessions survive a rotation until they expire.
//!
//! Pure: the clock and the random session id are parameters.

use crate::config::{Entitlement, Secret};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use ring::aead;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The longest token looked at (sessions with hundreds of named grants stay well below).
pub const MAX_TOKEN_CHARS: usize = 12 * 1024;
/// The prefix of every temporary access key id (as AWS's).
pub const ACCESS_KEY_PREFIX: &str = "ASIA";

/// What a session token carries (sealed: no client reads or changes it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// 16 random bytes, hex: the credentials are derived from it. Carried (authenticated) in the
    /// token's clear header, not in the sealed part.
    #[serde(skip)]
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
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Parent {
    /// An API key (configured, or known to the governance service): `bearer` when it authenticated
    /// with the legacy header (the governance service is asked about it as such).
    #[serde(rename = "k")]
    Key {
        #[serde(rename = "i")]
        id: String,
        #[serde(rename = "b")]
        bearer: bool,
    },
    /// A web identity: the issuer and subject of the OIDC token, and the name logs show.
    #[serde(rename = "w")]
    WebIdentity {
        #[serde(rename = "i")]
        issuer: String,
        #[serde(rename = "s")]
        subject: String,
        #[serde(rename = "n")]
        name: String,
    },
}

/// Never a key parent's id: for a legacy key it is the bearer credential itself.
impl std::fmt::Debug for Parent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Parent::Key { bearer, .. } => f
                .debug_struct("Key")
                .field("id", &"***")
                .field("bearer", bearer)
                .finish(),
            Parent::WebIdentity {
                issuer,
                subject,
                name,
            } => f
                .debug_struct("WebIdentity")
                .field("issuer", issuer)
                .field("subject", subject)
                .field("name", name)
                .finish(),
        }
    }
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

/// The token's format version (the first byte).
const VERSION: u8 = 1;
/// Session ids are 16 random bytes; the first 12 are the AEAD nonce.
const ID_LEN: usize = 16;

/// The keys of one `token_secret` (derived once, when the configuration is loaded).
struct SecretKeys {
    /// Seals the session (ChaCha20-Poly1305).
    seal: aead::LessSafeKey,
    /// Derives the secret access key from the session id (HMAC-SHA256, its key schedule precomputed).
    secret_access_key: ring::hmac::Key,
}

impl SecretKeys {
    fn new(secret: &str) -> SecretKeys {
        let seal_key = hmac(secret.as_bytes(), b"s3p session: seal");
        let unbound = aead::UnboundKey::new(&aead::CHACHA20_POLY1305, &seal_key)
            .expect("a 32-byte ChaCha20-Poly1305 key");
        let secret_key = hmac(secret.as_bytes(), b"s3p session: secret access key");
        SecretKeys {
            seal: aead::LessSafeKey::new(unbound),
            secret_access_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret_key),
        }
    }

    fn secret_access_key(&self, id: &[u8; ID_LEN]) -> Secret {
        let mac = ring::hmac::sign(&self.secret_access_key, id);
        Secret::new(STANDARD.encode(&mac.as_ref()[..30]))
    }

    fn nonce(id: &[u8; ID_LEN]) -> aead::Nonce {
        let mut nonce = [0u8; aead::NONCE_LEN];
        nonce.copy_from_slice(&id[..aead::NONCE_LEN]);
        aead::Nonce::assume_unique_for_key(nonce)
    }

    /// `VERSION || id` (authenticated, not encrypted) `|| ChaCha20-Poly1305(session) || tag`, base64url.
    fn seal(&self, id: &[u8; ID_LEN], plaintext: &[u8]) -> String {
        let mut out = Vec::with_capacity(1 + ID_LEN + plaintext.len() + aead::MAX_TAG_LEN);
        out.push(VERSION);
        out.extend_from_slice(id);
        let mut body = plaintext.to_vec();
        self.seal
            .seal_in_place_append_tag(
                Self::nonce(id),
                aead::Aad::from(&out[..1 + ID_LEN]),
                &mut body,
            )
            .expect("sessions are far below ChaCha20-Poly1305's limit");
        out.extend_from_slice(&body);
        URL_SAFE_NO_PAD.encode(out)
    }

    fn open(&self, raw: &[u8]) -> Option<Vec<u8>> {
        let id: &[u8; ID_LEN] = raw.get(1..1 + ID_LEN)?.try_into().ok()?;
        let mut body = raw[1 + ID_LEN..].to_vec();
        let plain = self
            .seal
            .open_in_place(
                Self::nonce(id),
                aead::Aad::from(&raw[..1 + ID_LEN]),
                &mut body,
            )
            .ok()?;
        Some(plain.to_vec())
    }
}

/// The access key id of a session: `ASIA` and the first 8 bytes of its id in hex. The id is random and
/// not secret (the secret is derived from it with a key); the token authenticates it, so a request
/// signed under another access key id than its token's is refused.
fn access_key_id(id: &[u8; ID_LEN]) -> String {
    format!("{ACCESS_KEY_PREFIX}{}", hex::encode_upper(&id[..8]))
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

    /// The credentials of a new session (sealed with the current secret). `session.id` is its 16
    /// random bytes in hex.
    pub fn issue(&self, session: &Session) -> Credentials {
        let keys = &self.keys[0];
        let mut id = [0u8; ID_LEN];
        hex::decode_to_slice(&session.id, &mut id).expect("a session id is 16 bytes in hex");
        let plaintext = serde_json::to_vec(session).expect("a session serialises");
        Credentials {
            access_key_id: access_key_id(&id),
            secret_access_key: keys.secret_access_key(&id),
            session_token: keys.seal(&id, &plaintext),
            expiration: session.expires_at,
        }
    }

    /// The session of `token`, if it is one of ours and has not expired at `now_s` (unix seconds).
    pub fn open(&self, token: &str, now_s: u64) -> Result<Opened, TokenError> {
        if token.len() > MAX_TOKEN_CHARS {
            return Err(TokenError::Invalid);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| TokenError::Invalid)?;
        if raw.len() < 1 + ID_LEN + aead::MAX_TAG_LEN || raw[0] != VERSION {
            return Err(TokenError::Invalid);
        }
        let (keys, plaintext) = self
            .keys
            .iter()
            .find_map(|k| Some((k, k.open(&raw)?)))
            .ok_or(TokenError::Invalid)?;
        let id: [u8; ID_LEN] = raw[1..1 + ID_LEN].try_into().expect("checked above");
        let mut session: Session =
            serde_json::from_slice(&plaintext).map_err(|_| TokenError::Invalid)?;
        session.id = hex::encode(id);
        if now_s >= session.expires_at {
            return Err(TokenError::Expired);
        }
        Ok(Opened {
            access_key_id: access_key_id(&id),
            secret_access_key: keys.secret_access_key(&id),
            session,
        })
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
        let listing = crate::seal::Sealer::rotated("continuation token", SECRET, &[]);
        let other = listing.seal(b"", &serde_json::to_vec(&session(key_parent())).unwrap());
        assert_eq!(sealer.open(&other, T0).unwrap_err(), TokenError::Invalid);
        // The clear id swapped for another: the tag no longer matches.
        let mut raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        raw[3] ^= 1;
        assert_eq!(
            sealer.open(&URL_SAFE_NO_PAD.encode(&raw), T0).unwrap_err(),
            TokenError::Invalid
        );
        // Two sessions: each token derives its own credentials; swapping tokens swaps the key id.
        let mut s2 = session(key_parent());
        s2.id = "ffeeddccbbaa99887766554433221100".into();
        let c2 = sealer.issue(&s2);
        let o1 = sealer.open(&token, T0).unwrap();
        assert_ne!(o1.access_key_id, c2.access_key_id);
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
        // New sessions come from the new secret: another secret for the same session id.
        let fresh = rotated.issue(&session(key_parent()));
        assert_ne!(fresh.secret_access_key, creds.secret_access_key);
        assert_ne!(fresh.session_token, creds.session_token);
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
