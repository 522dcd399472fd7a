//! Who is calling: credentials found in a request -> a verified API key, or an S3 error. Pure: no I/O.
//!
//! The signature schemes live in their own modules (`sigv4`, `sigv2`); this module decides which scheme a
//! request uses, refuses requests that carry two, and resolves the key's entitlements. What it learned is
//! handed on ([`Authenticated`]): the readers after it (the listing refusals by scheme, the framing of an
//! upload's body, the chunk signatures of aws-chunked bodies) never read the credentials again.

pub mod sigv2;
pub mod sigv4;

/// The request as sent lives in `wire` (every reader's view of the wire); named here too, where the
/// signature code has always found it.
pub use crate::wire::{HeaderIter, Headers, RequestView};
pub use sigv4::ChunkSeed;

/// What the key store knows about an access key id, as the signature verifiers need it.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretLookup {
    /// No usable key with this id (unknown, disabled or expired): answer InvalidAccessKeyId.
    Unknown,
    /// The key's secrets: one, or two while a secret is being rotated (any of them may have signed);
    /// none for a key that cannot sign (its signatures never match).
    Secrets(Vec<String>),
}

/// Never the secrets themselves, only how many there are.
impl std::fmt::Debug for SecretLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretLookup::Unknown => f.write_str("Unknown"),
            SecretLookup::Secrets(s) => write!(f, "Secrets([{} redacted])", s.len()),
        }
    }
}

impl SecretLookup {
    /// The secrets, or InvalidAccessKeyId (naming the id, as AWS does) for an unknown key.
    pub fn into_secrets(self, access_key_id: &str) -> Result<Vec<String>, crate::error::S3Error> {
        match self {
            SecretLookup::Unknown => Err(crate::error::S3Error::new(
                crate::error::S3ErrorCode::InvalidAccessKeyId,
            )
            .detail("AWSAccessKeyId", access_key_id)),
            SecretLookup::Secrets(secrets) => Ok(secrets),
        }
    }
}

use crate::config::{ApiKey, Config, Secret, SessionOf};
use crate::error::{S3Error, S3ErrorCode};
use crate::sts::session::{Parent, SessionSealer, TokenError};
use crate::wire::{RawQuery, RequestPath};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;

/// The literal that follows the colon in Immuta's legacy header `Authorization: AWS <API KEY>:immuta`.
pub const LEGACY_MARKER: &str = "immuta";

/// The API keys of a configuration, by id; and the sealer of session tokens when `sts` is on.
pub struct KeyStore {
    keys: HashMap<String, Arc<ApiKey>>,
    legacy_auth: bool,
    sessions: Option<SessionSealer>,
    /// Sessions opened recently (emptied with the store on every reload).
    opened: OpenedSessions,
    /// The OIDC issuers trusted now: a web identity session of another ends.
    issuers: std::collections::HashSet<String>,
    /// The roles' current caps (`None`: no roles configured, any role name, no cap).
    roles: Option<std::collections::BTreeMap<String, crate::config::Entitlement>>,
}

/// The most sessions [`OpenedSessions`] keeps, and the most bytes of tokens (tokens are issued at
/// most 6 KiB: about 8 MiB with their keys at the bound, far less for usual tokens of a few hundred
/// bytes).
const MAX_OPENED_SESSIONS: usize = 4096;
const MAX_OPENED_SESSION_BYTES: usize = 4 << 20;

/// Sessions whose tokens opened, by token, until they expire (bounded: past the bound, expired ones go,
/// then all). Only tokens that opened are kept, so made-up tokens cannot fill it; a lookup hashes the
/// token with a per-process seed and compares it whole, and a hit still needs the session's secret to
/// sign the request.
#[derive(Default)]
struct OpenedSessions {
    map: std::sync::Mutex<Opened>,
}

#[derive(Default)]
struct Opened {
    by_token: HashMap<String, OpenedSession, foldhash::fast::RandomState>,
    /// The bytes of the tokens kept.
    bytes: usize,
}

#[derive(Clone)]
struct OpenedSession {
    /// The key requests of the session use.
    key: Arc<ApiKey>,
    /// A key parent's id, whether it authenticated with the legacy header, and the key its grants
    /// were taken from (`None`: a web identity).
    parent: Option<(String, bool, Arc<ApiKey>)>,
    expires_at: u64,
}

impl OpenedSessions {
    fn get(&self, token: &str) -> Option<OpenedSession> {
        self.map.lock().unwrap().by_token.get(token).cloned()
    }

    /// Keeps a session; past either bound, the expired ones go, then all (a key holder minting
    /// sessions to fill it only makes sessions be opened again, a cost, never a wrong key).
    fn put(&self, token: &str, session: OpenedSession, now_s: u64) {
        let mut opened = self.map.lock().unwrap();
        let full = |o: &Opened| {
            o.by_token.len() >= MAX_OPENED_SESSIONS
                || o.bytes + token.len() > MAX_OPENED_SESSION_BYTES
        };
        if full(&opened) {
            opened.by_token.retain(|_, s| s.expires_at > now_s);
            opened.bytes = opened.by_token.keys().map(String::len).sum();
            if full(&opened) {
                opened.by_token.clear();
                opened.bytes = 0;
            }
        }
        if opened.by_token.insert(token.to_string(), session).is_none() {
            opened.bytes += token.len();
        }
    }
}

impl KeyStore {
    pub fn new(config: &Config) -> Self {
        let keys = config
            .api_keys
            .iter()
            .map(|k| (k.id.expose().to_string(), Arc::new(k.clone())))
            .collect();
        let previous: Vec<&str> = config
            .previous_token_secrets
            .iter()
            .map(|s| s.expose())
            .collect();
        KeyStore {
            keys,
            legacy_auth: config.legacy_auth,
            sessions: config
                .sts
                .as_ref()
                .map(|_| SessionSealer::new(config.token_secret.expose(), &previous)),
            opened: OpenedSessions::default(),
            issuers: config
                .sts
                .iter()
                .flat_map(|sts| sts.issuers.iter().map(|i| i.issuer.clone()))
                .collect(),
            roles: config
                .sts
                .as_ref()
                .filter(|sts| !sts.roles.is_empty())
                .map(|sts| sts.roles.clone()),
        }
    }

    /// The configured keys, with `resolved`, a key the governance service vouched for (looked up by the
    /// glue before the decision, `server::entitlements`), beside them.
    pub fn with<'a>(&'a self, resolved: Option<&'a Arc<ApiKey>>) -> Keys<'a> {
        Keys {
            store: self,
            resolved,
            session: None,
        }
    }

    /// The sealer of session tokens (`None`: `sts` is off, and no token is accepted).
    pub fn sessions(&self) -> Option<&SessionSealer> {
        self.sessions.as_ref()
    }

    /// The parent key of the session a request's `x-amz-security-token` names, when that token opens
    /// (or opened before): the glue asks the governance service about it (as it would about the key
    /// itself), and `bearer` says how.
    pub fn session_parent(&self, view: &RequestView, now: SystemTime) -> Option<(String, bool)> {
        let token = security_token(view)?;
        if let Some(hit) = self.opened.get(token) {
            return hit.parent.map(|(id, bearer, _)| (id, bearer));
        }
        let opened = self
            .sessions
            .as_ref()?
            .open(token, unix_seconds(now))
            .ok()?;
        match opened.session.parent {
            Parent::Key { id, bearer } => Some((id, bearer)),
            Parent::WebIdentity { .. } => None,
        }
    }

    /// Whether `id` is a configured key id (usable or not).
    pub fn knows(&self, id: &str) -> bool {
        self.keys.contains_key(id)
    }
}

/// The keys a request is authenticated against: the configured ones, and at most one the governance
/// service knows (a configured key of the same id wins: the file is the operator's word). A request
/// with a session token is authenticated against that session's key alone.
#[derive(Clone, Copy)]
pub struct Keys<'a> {
    store: &'a KeyStore,
    resolved: Option<&'a Arc<ApiKey>>,
    session: Option<&'a Arc<ApiKey>>,
}

impl<'a> From<&'a KeyStore> for Keys<'a> {
    fn from(store: &'a KeyStore) -> Keys<'a> {
        store.with(None)
    }
}

impl<'a> Keys<'a> {
    fn get(&self, id: &str) -> Option<&'a Arc<ApiKey>> {
        if let Some(session) = self.session {
            return bool::from(session.id.expose().as_bytes().ct_eq(id.as_bytes()))
                .then_some(session);
        }
        self.store.keys.get(id).or_else(|| {
            self.resolved
                .filter(|k| bool::from(k.id.expose().as_bytes().ct_eq(id.as_bytes())))
        })
    }

    /// Whether `id` is a known key id (usable or not): failures of a known key are counted per key.
    pub fn knows(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    /// The display name of a known key (for the audit line of a request that claimed it).
    pub fn name_of(&self, id: &str) -> Option<&'a str> {
        self.get(id).map(|k| k.name.as_str())
    }

    /// A key that may be used now: known, enabled and not expired.
    pub fn usable(&self, id: &str, now: SystemTime) -> Option<&'a Arc<ApiKey>> {
        let key = self.get(id)?;
        let now_s = unix_seconds(now);
        (key.enabled && key.expires_at.is_none_or(|t| now_s < t)).then_some(key)
    }

    /// The key of the session `token` names: the session's grants under its parent's current ones (a
    /// key parent; a web identity keeps the grants it was issued). Refused: a token s3p did not issue
    /// (InvalidToken), an expired one (ExpiredToken), a parent no longer usable (InvalidToken). Whether
    /// the request is signed with this session's access key id is the signature check's (the session's
    /// key is then the only one known).
    ///
    /// A session's later requests find it in [`OpenedSessions`]: no opening again, and no new key
    /// while its parent's key is the same `Arc` (the configured one until a reload, or the governance
    /// service's cache entry until it is refreshed).
    fn session_key(&self, token: &str, now: SystemTime) -> Result<Arc<ApiKey>, S3Error> {
        let invalid = || S3Error::new(S3ErrorCode::InvalidToken);
        let now_s = unix_seconds(now);
        let opened_sessions = &self.store.opened;
        if let Some(hit) = opened_sessions.get(token) {
            if now_s >= hit.expires_at {
                return Err(S3Error::new(S3ErrorCode::ExpiredToken));
            }
            let parent_now = hit.parent.as_ref().map(|(id, ..)| self.usable(id, now));
            match (parent_now, &hit.parent) {
                (None, _) => return Ok(hit.key),
                (Some(Some(now_key)), Some((.., then_key))) if Arc::ptr_eq(now_key, then_key) => {
                    return Ok(hit.key)
                }
                // The parent changed (or went): the session's key is made again below.
                _ => {}
            }
        }
        let sealer = self.store.sessions.as_ref().ok_or_else(invalid)?;
        let opened = sealer.open(token, now_s).map_err(|e| match e {
            TokenError::Invalid => invalid(),
            TokenError::Expired => S3Error::new(S3ErrorCode::ExpiredToken),
        })?;
        let session = &opened.session;
        let (name, grants, parent) = match &session.parent {
            Parent::Key { id, bearer } => {
                let parent = self.usable(id, now).ok_or_else(|| {
                    S3Error::with_message(
                        S3ErrorCode::InvalidToken,
                        "The session's parent key is no longer valid.",
                    )
                })?;
                let grants = session.grants.intersect(&parent.data_sources);
                (
                    parent.name.clone(),
                    grants,
                    Some((id.clone(), *bearer, parent.clone())),
                )
            }
            Parent::WebIdentity { name, issuer, .. } => {
                // An issuer no longer trusted ends its sessions.
                if !self.store.issuers.contains(issuer) {
                    return Err(S3Error::with_message(
                        S3ErrorCode::InvalidToken,
                        "The session's identity provider is no longer trusted.",
                    ));
                }
                (name.clone(), session.grants.clone(), None)
            }
        };
        // The role's current cap (a role narrowed or removed narrows or ends its sessions).
        let grants = match &self.store.roles {
            None => grants,
            Some(roles) => match roles.get(&session.role) {
                Some(cap) => grants.intersect(cap),
                None => {
                    return Err(S3Error::with_message(
                        S3ErrorCode::InvalidToken,
                        "The session's role no longer exists.",
                    ))
                }
            },
        };
        let key = Arc::new(ApiKey {
            id: Secret::new(opened.access_key_id.as_str()),
            secrets: vec![opened.secret_access_key.clone()],
            name,
            legacy_header: false,
            enabled: true,
            expires_at: Some(session.expires_at),
            data_sources: grants,
            session: Some(Arc::new(SessionOf {
                parent_id: Secret::new(session.parent_id()),
                label: session.label(),
                role: session.role.clone(),
                name: session.name.clone(),
                id8: session.id.get(..8).unwrap_or_default().to_string(),
            })),
        });
        opened_sessions.put(
            token,
            OpenedSession {
                key: key.clone(),
                parent,
                expires_at: session.expires_at,
            },
            now_s,
        );
        Ok(key)
    }

    fn secrets(&self, id: &str, now: SystemTime) -> SecretLookup {
        match self.usable(id, now) {
            None => SecretLookup::Unknown,
            Some(k) => {
                SecretLookup::Secrets(k.secrets.iter().map(|s| s.expose().to_string()).collect())
            }
        }
    }
}

/// How a request was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Immuta's `Authorization: AWS <key>:immuta`: names the key, signs nothing.
    Legacy,
    /// `Authorization: AWS4-HMAC-SHA256 ...`.
    SigV4Header,
    /// A SigV4 presigned URL (`X-Amz-Signature` in the query).
    SigV4Presigned,
    /// `Authorization: AWS <key>:<signature>`.
    SigV2Header,
    /// A SigV2 presigned URL (`Signature` in the query).
    SigV2Presigned,
}

impl Scheme {
    /// SigV2, in either form: it signs none of a listing's parameters.
    pub fn is_sigv2(self) -> bool {
        matches!(self, Scheme::SigV2Header | Scheme::SigV2Presigned)
    }
}

/// What [`authenticate`] learned about a request, for the readers after it.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The key whose signature (or legacy header) verified.
    pub key: Arc<ApiKey>,
    pub scheme: Scheme,
    /// The payload hash the request declares: a SigV4 presigned URL's `X-Amz-Content-Sha256`
    /// parameter, else the `x-amz-content-sha256` header (trimmed); `None` when it declares none (a
    /// presigned URL is then signed as `UNSIGNED-PAYLOAD`). For SigV4 it is the hash the verified
    /// signature covers, as the verifier read it; SigV2 signs the header among its `x-amz-*` ones; the
    /// legacy header signs nothing, but the header still says how the body is framed: for it this is
    /// `None`, and [`Authenticated::payload_hash`] reads the header when a write needs it (most legacy
    /// requests are reads, which never do).
    pub signed_payload: Option<String>,
    /// The seed of an aws-chunked body's chunk-signature chain: only for the SigV4 header form dated by
    /// `x-amz-date` (the only requests that may send signed chunks), from the one secret that verified.
    pub chunk_seed: Option<ChunkSeed>,
}

impl Authenticated {
    /// The payload hash the request declares (see `signed_payload`), read from the header for the legacy
    /// header.
    pub fn payload_hash(&self, view: &RequestView) -> Option<String> {
        match self.scheme {
            Scheme::Legacy => declared_payload_hash(view),
            _ => self.signed_payload.clone(),
        }
    }
}

/// How a request presents its credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presented<'a> {
    Nothing,
    /// `AWS <key>:immuta`.
    Legacy(&'a str),
    /// `AWS <key>:<base64 signature>`.
    SigV2Header(&'a str, &'a str),
    SigV4Header(&'a str),
    SigV4Query,
    SigV2Query,
}

fn presented<'a>(view: &RequestView<'a>) -> Result<Presented<'a>, S3Error> {
    let header = view.header("authorization");
    let v4_query = sigv4::is_presigned(view.raw_query);
    let v2_query = sigv2::is_presigned(view.raw_query);
    if [header.is_some(), v4_query, v2_query]
        .iter()
        .filter(|b| **b)
        .count()
        > 1
    {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string \
             parameter or the Authorization header should be specified",
        )
        .detail("ArgumentName", "Authorization"));
    }
    if v4_query {
        return Ok(Presented::SigV4Query);
    }
    if v2_query {
        return Ok(Presented::SigV2Query);
    }
    let Some(value) = header else {
        return Ok(Presented::Nothing);
    };
    if value.starts_with("AWS4-HMAC-SHA256 ") || value == "AWS4-HMAC-SHA256" {
        return Ok(Presented::SigV4Header(value));
    }
    if value.starts_with("AWS ") {
        return match sigv2::parse_authorization(value) {
            Some((key, LEGACY_MARKER)) => Ok(Presented::Legacy(key)),
            Some((key, sig)) => Ok(Presented::SigV2Header(key, sig)),
            None => Err(S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                "AWS authorization header is invalid.  Expected AwsAccessKeyId:signature",
            )
            .detail("ArgumentName", "Authorization")),
        };
    }
    Err(S3Error::with_message(
        S3ErrorCode::InvalidArgument,
        "Unsupported Authorization Type",
    )
    .detail("ArgumentName", "Authorization"))
}

/// Query parameters that carry a request's authentication (SigV4 and SigV2 presigned URLs).
pub fn is_auth_query_param(name: &str) -> bool {
    matches!(
        name,
        sigv4::param::ALGORITHM
            | sigv4::param::CREDENTIAL
            | sigv4::param::DATE
            | sigv4::param::EXPIRES
            | sigv4::param::SIGNED_HEADERS
            | sigv4::param::SIGNATURE
            | sigv4::param::CONTENT_SHA256
            | "X-Amz-Security-Token"
            | "AWSAccessKeyId"
            | "Signature"
            | "Expires"
    )
}

/// The credential a request claims, before any verification: its key id, and whether it comes in
/// Immuta's legacy header (the key itself is then the credential, not an access key id).
pub fn claimed_credential<'a>(view: &RequestView<'a>) -> Option<(&'a str, bool)> {
    match presented(view).ok()? {
        Presented::Nothing => None,
        Presented::Legacy(id) => Some((id, true)),
        _ => claimed_key_id(view).map(|id| (id, false)),
    }
}

/// The access key id a request claims, before any verification (for throttling repeated failures).
pub fn claimed_key_id<'a>(view: &RequestView<'a>) -> Option<&'a str> {
    let from_query = |name: &str| RawQuery(view.raw_query).get_raw(name);
    if let Some(cred) = from_query("X-Amz-Credential") {
        return cred.split(['/', '%']).next();
    }
    if let Some(id) = from_query("AWSAccessKeyId") {
        return Some(id);
    }
    let value = view.header("authorization")?;
    if let Some(rest) = value.strip_prefix("AWS4-HMAC-SHA256 ") {
        let cred = rest.split("Credential=").nth(1)?;
        return cred.split('/').next();
    }
    sigv2::parse_authorization(value).map(|(id, _)| id)
}

/// Options of the verifier that come from configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthOptions<'a> {
    /// When set (the request's path read against the base path, e.g. `/s3p`), a signature that does not
    /// match the request as sent is also checked against the request as some clients sign it: without
    /// the base path in the path (s3fs-fuse 1.90), and with it moved into the host (s3cmd). Each variant
    /// is still an HMAC by the key's secret over the method, the key path, the query and the signed
    /// headers, so nothing unsigned is accepted; only the location of the fixed base path in the signed
    /// text differs.
    pub base_path_tolerance: Option<RequestPath<'a>>,
}

/// Verifies the request's credentials. `sigv2_resources` gives the resources a SigV2 signature may cover, in
/// order of preference: botocore signs `/<bucket>/<key>` without the base path whatever the addressing
/// style, other SigV2 clients sign the path as sent (`/s3p/immuta/<key>`, or `/<bucket>/s3p/<key>` for
/// virtual-hosted requests). The base path is a fixed constant, so accepting both weakens nothing. (A
/// function: only SigV2 requests, a few, pay for building them.)
pub fn authenticate<'k>(
    keys: impl Into<Keys<'k>>,
    view: &RequestView,
    sigv2_resources: &dyn Fn() -> Vec<String>,
    now: SystemTime,
    options: &AuthOptions,
) -> Result<Authenticated, S3Error> {
    let store: Keys = keys.into();
    let presented = presented(view)?;
    // A session's temporary credentials: the token says whose; the signature is then checked against
    // that session's key alone.
    let session_key;
    let store = match security_token(view) {
        None => store,
        Some(_) if matches!(presented, Presented::Nothing | Presented::Legacy(_)) => {
            return Err(S3Error::new(S3ErrorCode::InvalidToken))
        }
        Some(token) => {
            session_key = store.session_key(token, now)?;
            Keys {
                session: Some(&session_key),
                ..store
            }
        }
    };
    let scheme = match presented {
        Presented::Nothing => return Err(S3Error::new(S3ErrorCode::AccessDenied)),
        Presented::Legacy(id) => {
            let key = store.usable(id, now).ok_or_else(|| {
                S3Error::new(S3ErrorCode::InvalidAccessKeyId).detail("AWSAccessKeyId", id)
            })?;
            if !store.store.legacy_auth || !key.legacy_header {
                return Err(S3Error::with_message(
                    S3ErrorCode::AccessDenied,
                    "The legacy `AWS <key>:immuta` header is not allowed for this key; sign the request (SigV4).",
                ));
            }
            return Ok(Authenticated {
                key: key.clone(),
                scheme: Scheme::Legacy,
                signed_payload: None,
                chunk_seed: None,
            });
        }
        Presented::SigV2Header(..) => Scheme::SigV2Header,
        Presented::SigV2Query => Scheme::SigV2Presigned,
        Presented::SigV4Header(_) => Scheme::SigV4Header,
        Presented::SigV4Query => Scheme::SigV4Presigned,
    };
    let lookup = |id: &str| store.secrets(id, now);
    let sigv2 = |check: &dyn Fn(&str) -> Result<String, S3Error>| -> Result<String, S3Error> {
        let mut first_error = None;
        for resource in &sigv2_resources() {
            match check(resource) {
                Ok(id) => return Ok(id),
                Err(e) if e.code == S3ErrorCode::SignatureDoesNotMatch => {
                    first_error.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(first_error.unwrap_or_else(|| S3Error::new(S3ErrorCode::SignatureDoesNotMatch)))
    };
    // SigV2 establishes the key only; the payload hash is the header it signed.
    let sigv2_verified = |view: &RequestView, id: String| sigv4::Verified {
        access_key_id: id,
        payload_hash: declared_payload_hash(view),
        chunk_seed: None,
    };
    // The credentials were read once (`presented`); the views checked differ only in path and Host.
    let verify = |view: &RequestView| -> Result<sigv4::Verified, S3Error> {
        match presented {
            Presented::SigV2Header(id, sig) => Ok(sigv2_verified(
                view,
                sigv2(&|r| sigv2::verify_header(view, id, sig, r, now, &lookup))?,
            )),
            Presented::SigV2Query => Ok(sigv2_verified(
                view,
                sigv2(&|r| sigv2::verify_query(view, r, now, &lookup))?,
            )),
            Presented::SigV4Header(value) => sigv4::verify_header(view, value, now, &lookup),
            Presented::SigV4Query => sigv4::verify_presigned(view, now, &lookup),
            Presented::Nothing | Presented::Legacy(_) => {
                Err(S3Error::new(S3ErrorCode::AccessDenied))
            }
        }
    };
    let verified = match verify(view) {
        Ok(verified) => verified,
        // Signed under another access key id than the token's: the token was not issued to it.
        Err(e) if e.code == S3ErrorCode::InvalidAccessKeyId && store.session.is_some() => {
            return Err(S3Error::new(S3ErrorCode::InvalidToken))
        }
        Err(e) if e.code == S3ErrorCode::SignatureDoesNotMatch => {
            match options
                .base_path_tolerance
                .and_then(|path| sigv4_without_base_path(view, &path, &verify))
            {
                Some(verified) => verified,
                None => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    verified_key(store, verified, scheme, now)
}

/// What a verified signature established, with its key (the verifiers only succeed for ids the lookup
/// knew, so this finds it).
fn verified_key(
    store: Keys,
    verified: sigv4::Verified,
    scheme: Scheme,
    now: SystemTime,
) -> Result<Authenticated, S3Error> {
    let key = store
        .usable(&verified.access_key_id, now)
        .cloned()
        .ok_or_else(|| S3Error::new(S3ErrorCode::InvalidAccessKeyId))?;
    Ok(Authenticated {
        key,
        scheme,
        signed_payload: verified.payload_hash,
        chunk_seed: verified.chunk_seed,
    })
}

/// The session token a request carries: the `x-amz-security-token` header, or a SigV4 presigned URL's
/// `X-Amz-Security-Token` parameter (which the signature covers, as the header when signed).
pub fn security_token<'a>(view: &RequestView<'a>) -> Option<&'a str> {
    view.header("x-amz-security-token")
        .map(str::trim)
        .or_else(|| RawQuery(view.raw_query).get_raw("X-Amz-Security-Token"))
}

fn unix_seconds(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Authenticates a call to the STS API: the legacy header (a key s3p may only know through the
/// governance service mints SigV4 credentials this way), or SigV4 with the service `sts` over the body
/// s3p read (`body_sha256`, hex). Temporary credentials are accepted only where `sessions_may_call`
/// (GetCallerIdentity); AssumeRole refuses them (no role chaining: a session never outgrows or outlives
/// the key that made it).
pub fn authenticate_sts_caller<'k>(
    keys: impl Into<Keys<'k>>,
    view: &RequestView,
    body_sha256: &str,
    now: SystemTime,
    sessions_may_call: bool,
) -> Result<Authenticated, S3Error> {
    let store: Keys = keys.into();
    let presented = presented(view)?;
    let session_key;
    let store = match security_token(view) {
        None => store,
        Some(_) if !sessions_may_call => {
            return Err(S3Error::with_message(
                S3ErrorCode::AccessDenied,
                "Temporary credentials cannot assume a role: call AssumeRole with an API key.",
            ))
        }
        Some(_) if !matches!(presented, Presented::SigV4Header(_)) => {
            return Err(S3Error::new(S3ErrorCode::InvalidToken))
        }
        Some(token) => {
            session_key = store.session_key(token, now)?;
            Keys {
                session: Some(&session_key),
                ..store
            }
        }
    };
    match presented {
        Presented::Nothing => Err(S3Error::new(S3ErrorCode::MissingAuthenticationToken)),
        Presented::Legacy(_) => authenticate(store, view, &Vec::new, now, &AuthOptions::default()),
        Presented::SigV4Header(value) => {
            let lookup = |id: &str| store.secrets(id, now);
            let signed = sigv4::Signed::Body {
                service: "sts",
                sha256: body_sha256,
            };
            match sigv4::verify_header_of(view, value, now, &lookup, &signed) {
                Ok(verified) => verified_key(store, verified, Scheme::SigV4Header, now),
                Err(e) if e.code == S3ErrorCode::InvalidAccessKeyId && store.session.is_some() => {
                    Err(S3Error::new(S3ErrorCode::InvalidToken))
                }
                Err(e) => Err(e),
            }
        }
        _ => Err(S3Error::with_message(
            S3ErrorCode::AccessDenied,
            "STS calls are signed with SigV4 in the Authorization header, or carry the legacy header.",
        )),
    }
}

/// The `x-amz-content-sha256` header, trimmed: the payload hash of a request not signed with SigV4.
fn declared_payload_hash(view: &RequestView) -> Option<String> {
    view.header("x-amz-content-sha256")
        .map(|h| h.trim().to_string())
}

type Verifier<'a> = dyn Fn(&RequestView) -> Result<sigv4::Verified, S3Error> + 'a;

/// Tries a signature against the request with the base path taken out of the path (s3fs-fuse 1.90), then
/// also appended to the signed host (s3cmd). Returns what the first variant that matches verified.
fn sigv4_without_base_path(
    view: &RequestView,
    path: &RequestPath,
    verify: &Verifier,
) -> Option<sigv4::Verified> {
    if path.base.is_empty() {
        return None;
    }
    let stripped = match path.below_base? {
        "" => "/",
        rest => rest,
    };
    let plain = RequestView {
        raw_path: stripped,
        ..*view
    };
    if let Ok(verified) = verify(&plain) {
        return Some(verified);
    }
    let host_with_base: Vec<(String, String)> = view
        .headers
        .iter()
        .map(|(n, v)| {
            if n.eq_ignore_ascii_case("host") {
                (n.to_string(), format!("{v}{}", path.base))
            } else {
                (n.to_string(), v.to_string())
            }
        })
        .collect();
    let moved = RequestView {
        raw_path: stripped,
        headers: Headers::Pairs(&host_with_base),
        ..*view
    };
    verify(&moved).ok()
}

/// The SigV2 resources of a request, in the order [`authenticate`] tries them: `/<bucket>/<key>` without
/// the base path first (botocore), then with the path as sent.
pub fn sigv2_resources(path: &RequestPath, host_bucket: Option<&str>) -> Vec<String> {
    let (raw_path, without_base) = (path.raw, path.below_base_or_raw());
    let (canonical, as_sent) = match host_bucket {
        Some(b) => (format!("/{b}{without_base}"), format!("/{b}{raw_path}")),
        None => (without_base.to_string(), raw_path.to_string()),
    };
    let canonical = if canonical.is_empty() {
        "/".to_string()
    } else {
        canonical
    };
    // Virtual-hosted: only the canonical form. `/<bucket>/s3p/<key>` as sent would equal botocore's
    // path-style signature for the different key `s3p/<key>`, and SigV2 does not sign the Host.
    if canonical == as_sent || host_bucket.is_some() {
        vec![canonical]
    } else {
        vec![canonical, as_sent]
    }
}

/// Keys, secrets and times shared by the signature tests of both versions.
#[cfg(test)]
pub(crate) mod test_keys {
    use super::SecretLookup;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    pub const AKID: &str = "AKIDS3PEXAMPLE";
    pub const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    pub const ROTATING: &str = "AKIDROTATING";
    pub const OLD_SECRET: &str = "old/Secret+Key0000000000000000000000000";
    pub const NEW_SECRET: &str = "new/Secret+Key1111111111111111111111111";
    pub const NO_SECRET: &str = "AKIDNOSECRET";

    pub fn lookup(akid: &str) -> SecretLookup {
        match akid {
            AKID => SecretLookup::Secrets(vec![SECRET.to_string()]),
            ROTATING => SecretLookup::Secrets(vec![OLD_SECRET.to_string(), NEW_SECRET.to_string()]),
            NO_SECRET => SecretLookup::Secrets(vec![]),
            _ => SecretLookup::Unknown,
        }
    }

    /// 2024-05-01T12:00:00Z, when the test requests are signed.
    pub fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_714_564_800)
    }

    /// `t0` moved by a number of seconds, either way.
    pub fn at(offset_secs: i64) -> SystemTime {
        if offset_secs >= 0 {
            t0() + Duration::from_secs(offset_secs as u64)
        } else {
            t0() - Duration::from_secs(offset_secs.unsigned_abs())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(headers: &'a [(String, String)], query: &'a str) -> RequestView<'a> {
        RequestView {
            method: "GET",
            raw_path: "/s3p/immuta",
            raw_query: query,
            headers: Headers::Pairs(headers),
        }
    }

    fn store(yaml_keys: &str) -> KeyStore {
        let yaml = format!(
            "token_secret: 0123456789abcdef\nbackends: {{}}\ndata_sources: {{}}\napi_keys:\n{yaml_keys}"
        );
        KeyStore::new(&Config::from_yaml_str(&yaml, &|_| None).unwrap())
    }

    fn auth(s: &KeyStore, value: &str) -> Result<Arc<ApiKey>, S3Error> {
        let headers = vec![("authorization".to_string(), value.to_string())];
        authenticate(
            s,
            &view(&headers, ""),
            &|| vec!["/s3p/immuta".to_string()],
            SystemTime::now(),
            &AuthOptions::default(),
        )
        .map(|signed| signed.key)
    }

    /// A GET signed with SigV4 in the header by `akid`/`secret`, carrying `token`, at `now`.
    fn signed_with_token(
        akid: &str,
        secret: &str,
        token: &str,
        now: SystemTime,
    ) -> Vec<(String, String)> {
        let amz_date = sigv4::format_amz_date(now);
        let date = &amz_date[..8];
        let mut headers = vec![
            ("host".to_string(), "s3p.test".to_string()),
            (
                "x-amz-content-sha256".to_string(),
                sigv4::UNSIGNED_PAYLOAD.to_string(),
            ),
            ("x-amz-date".to_string(), amz_date.clone()),
            ("x-amz-security-token".to_string(), token.to_string()),
        ];
        let signed = [
            "host",
            "x-amz-content-sha256",
            "x-amz-date",
            "x-amz-security-token",
        ];
        let creq =
            sigv4::canonical_request(&view(&headers, ""), &signed, sigv4::UNSIGNED_PAYLOAD, false);
        let scope = format!("{date}/us-east-1/s3/aws4_request");
        let sts = sigv4::string_to_sign(&amz_date, &scope, &creq);
        let key = sigv4::signing_key(secret, date, "us-east-1", "s3").unwrap();
        headers.push((
            "authorization".to_string(),
            format!(
                "AWS4-HMAC-SHA256 Credential={akid}/{scope}, SignedHeaders={}, Signature={}",
                signed.join(";"),
                sigv4::signature(&key, &sts)
            ),
        ));
        headers
    }

    fn session_store(grants: &str) -> KeyStore {
        let yaml = format!(
            "token_secret: 0123456789abcdef\nbackends:\n  b: {{ endpoint: \"http://127.0.0.1:1\", access_key_id: a, secret_access_key: s }}\n\
             data_sources:\n  sales: {{ backend: b, bucket: bucket-x }}\n  hr: {{ backend: b, bucket: bucket-y }}\n\
             sts: {{}}\napi_keys:\n  - {{ id: parent, secret: parent-secret-0000, name: Parent, data_sources: {grants} }}\n"
        );
        KeyStore::new(&Config::from_yaml_str(&yaml, &|_| None).unwrap())
    }

    #[test]
    fn session_tokens_name_their_key_and_their_grants_follow_the_parent() {
        use crate::config::{Access, Entitlement};
        use crate::sts::session::{Parent, Session};
        let now = SystemTime::now();
        let now_s = unix_seconds(now);
        let parent_store = session_store("[sales, hr]");
        let store = &parent_store;
        let mut grants = Entitlement::default();
        grants.named.insert("sales".into(), Access::Read);
        grants.named.insert("hr".into(), Access::Read);
        let session = |id: &str, expires_at: u64| Session {
            id: id.into(),
            parent: Parent::Key {
                id: "parent".into(),
                bearer: false,
            },
            grants: grants.clone(),
            issued_at: now_s,
            expires_at,
            role: "r".into(),
            name: "s".into(),
        };
        let creds = store
            .sessions()
            .unwrap()
            .issue(&session("00112233445566778899aabbccddeeff", now_s + 60));
        let other = store
            .sessions()
            .unwrap()
            .issue(&session("ffeeddccbbaa99887766554433221100", now_s + 60));
        let expired = store
            .sessions()
            .unwrap()
            .issue(&session("0123456789abcdef0123456789abcdef", now_s));
        let go = |store: &KeyStore, akid: &str, secret: &str, token: &str| {
            let headers = signed_with_token(akid, secret, token, now);
            authenticate(
                store,
                &view(&headers, ""),
                &Vec::new,
                now,
                &AuthOptions::default(),
            )
        };
        let secret = creds.secret_access_key.expose();
        // The session's key: its parent's name, the session named, the grants, counted as the parent.
        let key = go(store, &creds.access_key_id, secret, &creds.session_token)
            .unwrap()
            .key;
        assert_eq!((key.name.as_str(), key.limit_id()), ("Parent", "parent"));
        assert!(key
            .session
            .as_ref()
            .unwrap()
            .label
            .starts_with("r/s#00112233"));
        assert!(key.data_sources.allows("hr") && key.data_sources.allows("sales"));
        // Its next request reuses the key opened (the same Arc).
        let again = go(store, &creds.access_key_id, secret, &creds.session_token)
            .unwrap()
            .key;
        assert!(Arc::ptr_eq(&key, &again));
        // Refusals, by code.
        let mut tampered = creds.session_token.clone().into_bytes();
        tampered[30] = if tampered[30] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        let code = |r: Result<Authenticated, S3Error>| r.map(|_| ()).unwrap_err().code;
        assert_eq!(
            code(go(store, &creds.access_key_id, secret, &tampered)),
            S3ErrorCode::InvalidToken
        );
        assert_eq!(
            code(go(
                store,
                &other.access_key_id,
                other.secret_access_key.expose(),
                &creds.session_token
            )),
            S3ErrorCode::InvalidToken
        );
        assert_eq!(
            code(go(
                store,
                "parent",
                "parent-secret-0000",
                &creds.session_token
            )),
            S3ErrorCode::InvalidToken
        );
        assert_eq!(
            code(go(
                store,
                &creds.access_key_id,
                "wrong-secret-000000000000000000000000000",
                &creds.session_token
            )),
            S3ErrorCode::SignatureDoesNotMatch
        );
        assert_eq!(
            code(go(
                store,
                &expired.access_key_id,
                expired.secret_access_key.expose(),
                &expired.session_token
            )),
            S3ErrorCode::ExpiredToken
        );
        // The parent narrowed (a new configuration, the same secret): the session narrows with it.
        let narrowed = session_store("[sales]");
        let key = go(
            &narrowed,
            &creds.access_key_id,
            secret,
            &creds.session_token,
        )
        .unwrap()
        .key;
        assert!(key.data_sources.allows("sales") && !key.data_sources.allows("hr"));
        // Gone: the session ends.
        let yaml = "token_secret: 0123456789abcdef\nbackends: {}\ndata_sources: {}\nsts: {}\n";
        let gone = KeyStore::new(&Config::from_yaml_str(yaml, &|_| None).unwrap());
        assert_eq!(
            code(go(
                &gone,
                &creds.access_key_id,
                secret,
                &creds.session_token
            )),
            S3ErrorCode::InvalidToken
        );
        // Without `sts`, no token is accepted at all.
        let off = self::store(
            "  - { id: parent, secret: parent-secret-0000, name: Parent, data_sources: all }\n",
        );
        assert_eq!(
            code(go(&off, &creds.access_key_id, secret, &creds.session_token)),
            S3ErrorCode::InvalidToken
        );
    }

    #[test]
    fn opened_sessions_are_bounded() {
        let cache = OpenedSessions::default();
        let key = Arc::new(ApiKey {
            id: Secret::new("ASIA0000000000000000"),
            secrets: vec![],
            name: "n".into(),
            legacy_header: false,
            enabled: true,
            expires_at: None,
            data_sources: Default::default(),
            session: None,
        });
        let entry = |expires_at| OpenedSession {
            key: key.clone(),
            parent: None,
            expires_at,
        };
        for i in 0..MAX_OPENED_SESSIONS {
            // Half of them expired at 100.
            cache.put(
                &format!("t{i}"),
                entry(if i % 2 == 0 { 50 } else { 500 }),
                10,
            );
        }
        assert_eq!(
            cache.map.lock().unwrap().by_token.len(),
            MAX_OPENED_SESSIONS
        );
        // Full: the expired ones go first.
        cache.put("new", entry(500), 100);
        assert_eq!(
            cache.map.lock().unwrap().by_token.len(),
            MAX_OPENED_SESSIONS / 2 + 1
        );
        assert!(
            cache.get("new").is_some() && cache.get("t1").is_some() && cache.get("t0").is_none()
        );
        // Full of live ones: all go.
        for i in 0..MAX_OPENED_SESSIONS {
            cache.put(&format!("u{i}"), entry(500), 100);
        }
        assert!(cache.map.lock().unwrap().by_token.len() <= MAX_OPENED_SESSIONS);
        cache.put("last", entry(500), 100);
        assert!(cache.map.lock().unwrap().by_token.len() <= MAX_OPENED_SESSIONS);
        assert!(cache.get("last").is_some());
    }

    #[test]
    fn legacy_header() {
        let s = store(
            "  - {id: k1, name: One, data_sources: all}\n\
             \x20 - {id: k2, name: Two, legacy_header: false, data_sources: all}\n\
             \x20 - {id: k3, name: Three, enabled: false, data_sources: all}\n\
             \x20 - {id: k4, name: Four, expires_at: 1000, data_sources: all}\n",
        );
        assert_eq!(auth(&s, "AWS k1:immuta").unwrap().name, "One");
        assert_eq!(
            auth(&s, "AWS k2:immuta").unwrap_err().code,
            S3ErrorCode::AccessDenied
        );
        assert_eq!(
            auth(&s, "AWS nobody:immuta").unwrap_err().code,
            S3ErrorCode::InvalidAccessKeyId
        );
        assert_eq!(
            auth(&s, "AWS k3:immuta").unwrap_err().code,
            S3ErrorCode::InvalidAccessKeyId,
            "disabled"
        );
        assert_eq!(
            auth(&s, "AWS k4:immuta").unwrap_err().code,
            S3ErrorCode::InvalidAccessKeyId,
            "expired"
        );
        assert_eq!(
            auth(&s, "AWS :immuta").unwrap_err().code,
            S3ErrorCode::InvalidArgument
        );
        assert_eq!(
            auth(&s, "Bearer x").unwrap_err().code,
            S3ErrorCode::InvalidArgument
        );
    }

    #[test]
    fn legacy_header_can_be_switched_off_globally() {
        let yaml = "token_secret: 0123456789abcdef\nlegacy_auth: false\napi_keys:\n  - {id: k1, name: One, data_sources: all}\n";
        let s = KeyStore::new(&Config::from_yaml_str(yaml, &|_| None).unwrap());
        assert_eq!(
            auth(&s, "AWS k1:immuta").unwrap_err().code,
            S3ErrorCode::AccessDenied
        );
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn claimed_key_ids() {
        let h = |v: &str| vec![("authorization".to_string(), v.to_string())];
        let none: Vec<(String, String)> = vec![];
        let cases: Vec<(Vec<(String, String)>, &str, Option<&str>)> = vec![
            (h("AWS k1:immuta"), "", Some("k1")),
            (h("AWS k2:c2lnbmF0dXJl"), "", Some("k2")),
            (h("AWS4-HMAC-SHA256 Credential=k3/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00"), "", Some("k3")),
            (none.clone(), "X-Amz-Credential=k4%2F20240101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=0", Some("k4")),
            (none.clone(), "AWSAccessKeyId=k5&Signature=x&Expires=1", Some("k5")),
            (none, "", None),
        ];
        for (headers, query, want) in &cases {
            assert_eq!(
                claimed_key_id(&view(headers, query)),
                *want,
                "{headers:?} {query}"
            );
        }
    }

    #[test]
    fn sigv2_resources_prefer_the_botocore_form() {
        let sigv2_resources = |raw, base, host| sigv2_resources(&RequestPath::new(base, raw), host);
        assert_eq!(
            sigv2_resources("/s3p/immuta/k", "/s3p", None),
            vec!["/immuta/k", "/s3p/immuta/k"]
        );
        assert_eq!(sigv2_resources("/immuta/k", "", None), vec!["/immuta/k"]);
        assert_eq!(
            sigv2_resources("/s3p/k", "/s3p", Some("immuta")),
            vec!["/immuta/k"]
        );
        assert_eq!(sigv2_resources("/s3p", "/s3p", None), vec!["/", "/s3p"]);
    }

    #[test]
    fn no_credentials_and_two_methods() {
        let s = store("  - {id: k1, name: One, data_sources: all}\n");
        let none: Vec<(String, String)> = vec![];
        assert_eq!(
            authenticate(
                &s,
                &view(&none, ""),
                &|| vec!["/".to_string()],
                SystemTime::now(),
                &AuthOptions::default()
            )
            .unwrap_err()
            .code,
            S3ErrorCode::AccessDenied
        );
        let h = vec![("authorization".to_string(), "AWS k1:immuta".to_string())];
        let e = authenticate(
            &s,
            &view(&h, "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=00"),
            &|| vec!["/".to_string()],
            SystemTime::now(),
            &AuthOptions::default(),
        )
        .unwrap_err();
        assert_eq!((e.code, e.status()), (S3ErrorCode::InvalidArgument, 400));
        let e = authenticate(
            &s,
            &view(&none, "AWSAccessKeyId=k1&Signature=x&X-Amz-Credential=y"),
            &|| vec!["/".to_string()],
            SystemTime::now(),
            &AuthOptions::default(),
        )
        .unwrap_err();
        assert_eq!(e.code, S3ErrorCode::InvalidArgument);
    }

    /// The keys of the scheme tests: one that signs, one rotating its secret, one with the legacy header.
    pub(crate) fn signing_store() -> KeyStore {
        use test_keys::*;
        store(&format!(
            "  - {{id: {AKID}, secret: \"{SECRET}\", name: Signer, data_sources: all}}\n\
             \x20 - {{id: {ROTATING}, secrets: [\"{OLD_SECRET}\", \"{NEW_SECRET}\"], name: Rotating, data_sources: all}}\n\
             \x20 - {{id: LEG, name: Legacy, data_sources: all}}\n"
        ))
    }

    /// A SigV2 request signed as botocore signs it (the resource without the base path), in the header
    /// (`Date`) or presigned (`Expires`) form.
    pub(crate) fn sigv2_signed(
        path: &str,
        headers: &[(&str, &str)],
        presigned: bool,
    ) -> (String, Vec<(String, String)>) {
        use test_keys::*;
        let mut h: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let resource = path.strip_prefix("/s3p").unwrap_or(path);
        let expires = "1714565100";
        let date = "Wed, 01 May 2024 12:00:00 GMT";
        if !presigned {
            h.push(("date".into(), date.into()));
        }
        let sts = {
            let view = RequestView {
                method: "GET",
                raw_path: path,
                raw_query: "",
                headers: Headers::Pairs(&h),
            };
            sigv2::string_to_sign(&view, if presigned { expires } else { date }, resource)
        };
        let sig = sigv2::signature(SECRET, &sts);
        if presigned {
            let sig = percent_encoding::utf8_percent_encode(&sig, crate::wire::UNRESERVED);
            (
                format!("AWSAccessKeyId={AKID}&Expires={expires}&Signature={sig}"),
                h,
            )
        } else {
            h.push(("authorization".into(), format!("AWS {AKID}:{sig}")));
            (String::new(), h)
        }
    }

    /// What `upload::signed_payload_hash` read from a request before authentication reported it: a SigV4
    /// presigned URL's `X-Amz-Content-Sha256` parameter (by its raw name), else the header.
    fn payload_hash_as_read_before(view: &RequestView) -> Option<String> {
        let from_query = sigv4::is_presigned(view.raw_query)
            .then(|| RawQuery(view.raw_query).get_raw(sigv4::param::CONTENT_SHA256))
            .flatten()
            .map(|v| {
                String::from_utf8_lossy(&crate::wire::decode_form(v))
                    .trim()
                    .to_string()
            });
        from_query.or_else(|| {
            view.header("x-amz-content-sha256")
                .map(|h| h.trim().to_string())
        })
    }

    /// Every form reports its scheme, the payload hash the request declares (for SigV4, the one the
    /// signature covers) and, for the SigV4 header form only, the seed of chunk signatures. The payload
    /// hash is the one `upload` read from the request itself before, but for a presigned URL whose
    /// parameter name is percent-encoded: the signature covers that hash, which was not read before.
    #[test]
    #[allow(clippy::type_complexity)]
    fn the_scheme_and_payload_reported_for_each_form() {
        use sigv4::tests::{sign_with_aws_sigv4, Body, Signing};
        use test_keys::*;
        const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let b64 = "b".repeat(64);
        let v4 = |target: &'static str,
                  headers: &'static [(&'static str, &'static str)],
                  body,
                  presign_expires| {
            let req = sign_with_aws_sigv4(&Signing {
                method: "GET",
                target,
                headers,
                body,
                akid: AKID,
                secret: SECRET,
                region: "us-east-1",
                presign_expires,
            });
            (req.view().raw_query.to_string(), req.headers.clone())
        };
        let own = |query: &str, headers: &[(&str, &str)]| {
            (
                query.to_string(),
                headers
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect::<Vec<_>>(),
            )
        };
        // name, (query, headers), scheme, payload hash, chunk seed, read the same before
        let cases: Vec<(&str, (String, Vec<(String, String)>), Scheme, Option<String>, bool, bool)> = vec![
            (
                "legacy",
                own("", &[("authorization", "AWS LEG:immuta"), ("x-amz-content-sha256", &format!(" {b64} "))]),
                Scheme::Legacy, Some(b64.clone()), false, true,
            ),
            (
                "legacy: a query parameter of that name is nobody's hash",
                own("X-Amz-Content-Sha256=cc", &[("authorization", "AWS LEG:immuta")]),
                Scheme::Legacy, None, false, true,
            ),
            (
                "SigV4 header",
                v4("/s3p/immuta/ds/f", &[], Body::Bytes(b"abc"), None),
                Scheme::SigV4Header, Some(ABC_SHA256.to_string()), true, true,
            ),
            (
                "SigV4 header, signed chunks",
                v4("/s3p/immuta/ds/f", &[], Body::Precomputed("STREAMING-AWS4-HMAC-SHA256-PAYLOAD"), None),
                Scheme::SigV4Header, Some("STREAMING-AWS4-HMAC-SHA256-PAYLOAD".into()), true, true,
            ),
            (
                "SigV4 presigned, no payload hash (signed as UNSIGNED-PAYLOAD)",
                v4("/s3p/immuta/ds/f", &[], Body::Unsigned, Some(300)),
                Scheme::SigV4Presigned, None, false, true,
            ),
            (
                "SigV4 presigned, its hash pinned in the query",
                v4(
                    "/s3p/immuta/ds/f?X-Amz-Content-Sha256=ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                    &[],
                    Body::Bytes(b"abc"),
                    Some(300),
                ),
                Scheme::SigV4Presigned, Some(ABC_SHA256.to_string()), false, true,
            ),
            (
                "SigV4 presigned: the query parameter wins over the header",
                v4(
                    "/s3p/immuta/ds/f?X-Amz-Content-Sha256=ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                    &[("x-amz-content-sha256", "UNSIGNED-PAYLOAD")],
                    Body::Bytes(b"abc"),
                    Some(300),
                ),
                Scheme::SigV4Presigned, Some(ABC_SHA256.to_string()), false, true,
            ),
            (
                "SigV4 presigned, the parameter's name percent-encoded: signed, and now reported",
                v4(
                    "/s3p/immuta/ds/f?X-Amz-Content%2DSha256=ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                    &[],
                    Body::Bytes(b"abc"),
                    Some(300),
                ),
                Scheme::SigV4Presigned, Some(ABC_SHA256.to_string()), false, false,
            ),
            (
                "SigV2 header",
                {
                    let (q, h) = sigv2_signed("/s3p/immuta/ds/f", &[("x-amz-content-sha256", &b64)], false);
                    (q, h)
                },
                Scheme::SigV2Header, Some(b64.clone()), false, true,
            ),
            (
                "SigV2 presigned",
                sigv2_signed("/s3p/immuta/ds/f", &[], true),
                Scheme::SigV2Presigned, None, false, true,
            ),
        ];
        let s = signing_store();
        for (name, (query, headers), scheme, payload, seeded, as_before) in &cases {
            let view = RequestView {
                method: "GET",
                raw_path: "/s3p/immuta/ds/f",
                raw_query: query,
                headers: Headers::Pairs(headers),
            };
            let signed = authenticate(
                &s,
                &view,
                &|| vec!["/immuta/ds/f".to_string()],
                t0(),
                &AuthOptions::default(),
            )
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert_eq!(signed.scheme, *scheme, "{name}");
            assert_eq!(
                signed.scheme.is_sigv2(),
                matches!(scheme, Scheme::SigV2Header | Scheme::SigV2Presigned),
                "{name}"
            );
            assert_eq!(signed.payload_hash(&view), *payload, "{name}");
            assert_eq!(signed.chunk_seed.is_some(), *seeded, "{name}");
            assert_eq!(
                payload_hash_as_read_before(&view) == signed.payload_hash(&view),
                *as_before,
                "{name}: {:?}",
                payload_hash_as_read_before(&view)
            );
        }
    }
}
