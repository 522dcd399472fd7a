//! The wire format of an Immuta-shaped governance service, and nothing else: builders of the requests
//! (the caller sends them, relative to the service's base URL) and parsers of the answers, plus the
//! mapping of the service's data-source names to s3p's. Another provider (a generic "who is this key"
//! endpoint, OPA's data API) is another file like this one; the cache and the identity do not change.
//!
//! The calls, as Immuta's public API documents them (versions differ, so the first one has three forms,
//! chosen in configuration, [`AuthForm`]):
//!
//! 1. `POST /bim/apikey/authenticate` with the API key, as the header `Authorization: <key>` (`header`)
//!    or the JSON body `{"apikey": "<key>"}` (`body`, older versions) → 200 `{"token": "..."}` (or
//!    `access_token`); 401/403: the key is unknown or revoked (a deny); anything else is a service error
//!    (not a deny). Or (`direct`) no such call: the key itself is the `Authorization` of the next one.
//! 2. `GET /dataSource?subscription=subscribed&size=<page>&offset=<n>` with `Authorization: Bearer
//!    <token>` (or the key in the `direct` form) → 200 with the caller's data sources, either an array or
//!    `{"count": n, "hits": [...]}`; each has `name`, `id`, `subscriptionStatus` (only `subscribed`
//!    counts), `accessGrant` (`READ`/`WRITE`; absent means READ) and `expiration` (RFC 3339 or null).
//!    Read page by page ([`Pager`]), at most [`MAX_PAGES`].
//! 3. s3p's extension, for SigV4/SigV2 clients (a signature needs a secret s3p can check, which Immuta's
//!    API does not give): `GET /s3p/v1/signing-secret?accessKeyId=<id>` with s3p's own service token
//!    (`Authorization: Bearer <service token>`) → 200 `{"secret": "...", "apikey": "...", "name": ...}`:
//!    the signing secret of that access key id and the Immuta API key whose subscriptions govern it
//!    (`name`, optional, is shown in logs); 404: no such access key id (a deny); anything else, 401 and
//!    403 included (s3p's own token refused: a misconfiguration, not the client's fault), a service
//!    error. The service that serves it (Immuta behind a small companion, or the test service) keeps the
//!    pairs; s3p then reads the API key's subscriptions with calls 1 and 2 and checks the signature with
//!    the secret.
//!
//! Answers are parsed strictly (every field this module reads has one JSON type; another is a service
//! error) but tolerantly (other fields are ignored), after a size check ([`MAX_ANSWER_BYTES`]; the caller
//! bounds its read too). No error names a key, a token or a secret: messages name the call, the field and
//! the JSON type found, never a value, and serde_json's own messages (which may quote input) are not used.

use crate::config::{Access, Entitlement, Secret};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const AUTHENTICATE_PATH: &str = "/bim/apikey/authenticate";
pub const DATA_SOURCES_PATH: &str = "/dataSource";
pub const SIGNING_SECRET_PATH: &str = "/s3p/v1/signing-secret";

/// An answer body larger than this is a service error, unparsed (a page of data sources is far smaller;
/// the caller stops reading past it too).
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;
/// Pages of data sources read for one key at most, to bound the work of one lookup.
pub const MAX_PAGES: u32 = 20;
pub const DEFAULT_PAGE_SIZE: u32 = 200;
pub const MAX_PAGE_SIZE: u32 = 1000;
/// Longest credential (API key, access key id, token) s3p sends or accepts.
pub const MAX_CREDENTIAL_BYTES: usize = 4096;

/// How the API key reaches the service (configuration: `header`, `body`, `direct`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthForm {
    /// `POST /bim/apikey/authenticate` with `Authorization: <key>`.
    Header,
    /// `POST /bim/apikey/authenticate` with `{"apikey": "<key>"}` (older versions).
    Body,
    /// No authenticate call: the key is the `Authorization` of the data-source call.
    Direct,
}

impl AuthForm {
    pub fn parse(s: &str) -> Option<AuthForm> {
        match s {
            "header" => Some(AuthForm::Header),
            "body" => Some(AuthForm::Body),
            "direct" => Some(AuthForm::Direct),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AuthForm::Header => "header",
            AuthForm::Body => "body",
            AuthForm::Direct => "direct",
        }
    }
}

/// A request for the caller to send: method, path and query relative to the service's base URL, and the
/// credential-bearing parts, as [`Secret`]s so that `{:?}` shows neither. With a body, the caller sends
/// `Content-Type: application/json`; it sends `Accept: application/json` on every call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRequest {
    pub method: http::Method,
    pub path_and_query: String,
    /// The whole `Authorization` header value, if any.
    pub authorization: Option<Secret>,
    /// A JSON body, if any.
    pub json_body: Option<Secret>,
}

/// An `Authorization` header value for the service, built only from a credential that is safe in a
/// header (visible ASCII, bounded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization(Secret);

impl Authorization {
    /// `Bearer <token>`: the token of call 1, or s3p's own service token for call 3.
    pub fn bearer(token: &str) -> Option<Authorization> {
        plausible_credential(token).then(|| Authorization(Secret::new(format!("Bearer {token}"))))
    }

    /// The credential as it is (the API key in the `direct` form).
    pub fn raw(credential: &str) -> Option<Authorization> {
        plausible_credential(credential).then(|| Authorization(Secret::new(credential)))
    }

    pub fn header_value(&self) -> &str {
        self.0.expose()
    }
}

/// Whether `s` can be a credential: 1 to [`MAX_CREDENTIAL_BYTES`] bytes of visible ASCII. Anything else is
/// refused without asking the service (nothing to send safely in a header, and nothing the service could
/// know); the caller caches it as a deny like any unknown key.
pub fn plausible_credential(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_CREDENTIAL_BYTES
        && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// Something the service said that is not an answer: a status that is neither success nor a deny, or a
/// body that does not parse. Not a deny: the caller serves a stale allow if it may, else refuses with 503.
/// Never holds a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    /// `authenticate`, `subscriptions` or `signing secret`.
    pub call: &'static str,
    pub problem: String,
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.call, self.problem)
    }
}

impl std::error::Error for ServiceError {}

/// What the service answered about a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<T> {
    Found(T),
    /// The service does not know the credential, or refused it: cache a deny.
    Denied,
}

/// The first step of a lookup by API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// Send this (call 1), then [`parse_authenticate`] its answer.
    Authenticate(ServiceRequest),
    /// `direct`: go on to the data sources with this `Authorization`.
    Direct(Authorization),
    /// Not a credential ([`plausible_credential`]): deny without a call.
    Denied,
}

pub fn begin(form: AuthForm, api_key: &str) -> Begin {
    if !plausible_credential(api_key) {
        return Begin::Denied;
    }
    let request = |authorization, json_body| {
        Begin::Authenticate(ServiceRequest {
            method: http::Method::POST,
            path_and_query: AUTHENTICATE_PATH.to_string(),
            authorization,
            json_body,
        })
    };
    match form {
        AuthForm::Header => request(Some(Secret::new(api_key)), None),
        AuthForm::Body => {
            // serde_json writes the string escaped, whatever it holds.
            let body = serde_json::json!({ "apikey": api_key }).to_string();
            request(None, Some(Secret::new(body)))
        }
        AuthForm::Direct => match Authorization::raw(api_key) {
            Some(a) => Begin::Direct(a),
            None => Begin::Denied,
        },
    }
}

/// The answer of call 1: the bearer token for call 2 (`token`, or `access_token`).
pub fn parse_authenticate(status: u16, body: &[u8]) -> Result<Lookup<Authorization>, ServiceError> {
    const CALL: &str = "authenticate";
    if answer_kind(CALL, status, &[401, 403])? == Kind::Denied {
        return Ok(Lookup::Denied);
    }
    let value = parse_json(CALL, body)?;
    let object = as_object(CALL, "the answer", &value)?;
    let token = match optional_str(CALL, object, "token")? {
        Some(t) => t,
        None => optional_str(CALL, object, "access_token")?
            .ok_or_else(|| error(CALL, "no `token` (or `access_token`) in the answer".into()))?,
    };
    Authorization::bearer(token)
        .map(Lookup::Found)
        .ok_or_else(|| {
            error(
                CALL,
                "the token is empty, too long or not visible ASCII".into(),
            )
        })
}

/// One data source of the caller's, as the service lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The service's name of the data source.
    pub name: String,
    /// The service's id (a number or a string there), for logs.
    pub id: Option<String>,
    /// `subscriptionStatus` is `subscribed` (only those grant anything).
    pub subscribed: bool,
    /// `accessGrant`: `READ` (or absent) → read, `WRITE` → write; another value → `None`, which grants
    /// nothing (an access level s3p does not know is not guessed at).
    pub access: Option<Access>,
    /// `expiration`, unix seconds (rounded down: never later than the service said).
    pub expires_at: Option<u64>,
}

/// Reads the data sources page by page (call 2): follows `offset` while there may be more, at most
/// [`MAX_PAGES`] pages.
///
/// There may be more when the answer has a `count` and fewer items than that were read (and the page was
/// not empty), or, without a `count` (the array form), when the page was full. With a `count`, a page
/// shorter than asked does not end the reading: a service that caps the page size below `size` is
/// still read whole.
#[derive(Debug, Clone)]
pub struct Pager {
    page_size: u32,
    offset: u64,
    pages: u32,
    read: Vec<Subscription>,
}

/// What to do after a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Paging {
    /// Send [`Pager::request`] again (for the next page).
    More,
    Done(Subscriptions),
    /// 401/403: the credential was refused (the key in the `direct` form; a fresh token otherwise).
    Denied,
}

/// Every data source read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriptions {
    pub items: Vec<Subscription>,
    /// [`MAX_PAGES`] pages were read and the service said there were more: `items` holds what was read
    /// (fewer grants, never more), and the caller should log it.
    pub truncated: bool,
}

impl Pager {
    /// `page_size` is kept within 1..=[`MAX_PAGE_SIZE`].
    pub fn new(page_size: u32) -> Pager {
        Pager {
            page_size: page_size.clamp(1, MAX_PAGE_SIZE),
            offset: 0,
            pages: 0,
            read: Vec::new(),
        }
    }

    /// The request for the next page.
    pub fn request(&self, authorization: &Authorization) -> ServiceRequest {
        ServiceRequest {
            method: http::Method::GET,
            path_and_query: format!(
                "{DATA_SOURCES_PATH}?subscription=subscribed&size={}&offset={}",
                self.page_size, self.offset
            ),
            authorization: Some(authorization.0.clone()),
            json_body: None,
        }
    }

    /// Takes the answer to [`Pager::request`].
    pub fn take(&mut self, status: u16, body: &[u8]) -> Result<Paging, ServiceError> {
        let Page { items, count } = match parse_subscriptions_page(status, body)? {
            Lookup::Denied => return Ok(Paging::Denied),
            Lookup::Found(page) => page,
        };
        let got = items.len();
        self.pages += 1;
        self.offset += got as u64;
        self.read.extend(items);
        let more = match count {
            Some(count) => got > 0 && self.offset < count,
            None => got >= self.page_size as usize,
        };
        if more && self.pages < MAX_PAGES {
            return Ok(Paging::More);
        }
        Ok(Paging::Done(Subscriptions {
            items: std::mem::take(&mut self.read),
            truncated: more,
        }))
    }
}

/// One page of call 2: its data sources, and `count` (the object form's total, if given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<Subscription>,
    pub count: Option<u64>,
}

/// One answer of call 2: a page, or the service's deny.
pub fn parse_subscriptions_page(status: u16, body: &[u8]) -> Result<Lookup<Page>, ServiceError> {
    const CALL: &str = "subscriptions";
    if answer_kind(CALL, status, &[401, 403])? == Kind::Denied {
        return Ok(Lookup::Denied);
    }
    let value = parse_json(CALL, body)?;
    let (hits, count) = match &value {
        Value::Array(items) => (items, None),
        Value::Object(object) => {
            let hits = match object.get("hits") {
                Some(Value::Array(items)) => items,
                Some(other) => return Err(wrong_type(CALL, "hits", "an array", other)),
                None => return Err(error(CALL, "an object without `hits`".into())),
            };
            let count =
                match object.get("count") {
                    None | Some(Value::Null) => None,
                    Some(Value::Number(n)) => Some(n.as_u64().ok_or_else(|| {
                        error(CALL, "`count` is not a non-negative integer".into())
                    })?),
                    Some(other) => return Err(wrong_type(CALL, "count", "a number", other)),
                };
            (hits, count)
        }
        other => {
            return Err(wrong_type(
                CALL,
                "the answer",
                "an array or an object",
                other,
            ))
        }
    };
    let mut items = Vec::with_capacity(hits.len());
    for (i, hit) in hits.iter().enumerate() {
        items.push(subscription(CALL, i, hit)?);
    }
    Ok(Lookup::Found(Page { items, count }))
}

fn subscription(call: &'static str, i: usize, hit: &Value) -> Result<Subscription, ServiceError> {
    let at = |field: &str| format!("hits[{i}].{field}");
    let object = as_object(call, &format!("hits[{i}]"), hit)?;
    let name = match object.get("name") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(wrong_type(call, &at("name"), "a string", other)),
        None => return Err(error(call, format!("{} is missing", at("name")))),
    };
    let id = match object.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => return Err(wrong_type(call, &at("id"), "a number or a string", other)),
    };
    let status = field_str(
        call,
        object,
        "subscriptionStatus",
        &at("subscriptionStatus"),
    )?;
    // Absent means not subscribed: a grant is never assumed.
    let subscribed = status.is_some_and(|s| s.eq_ignore_ascii_case("subscribed"));
    let access = match field_str(call, object, "accessGrant", &at("accessGrant"))? {
        None => Some(Access::Read),
        Some(g) if g.eq_ignore_ascii_case("READ") => Some(Access::Read),
        Some(g) if g.eq_ignore_ascii_case("WRITE") => Some(Access::Write),
        Some(_) => None,
    };
    let expires_at = match field_str(call, object, "expiration", &at("expiration"))? {
        None => None,
        Some(s) => Some(parse_rfc3339(s).ok_or_else(|| {
            error(
                call,
                format!("{} is not an RFC 3339 date", at("expiration")),
            )
        })?),
    };
    Ok(Subscription {
        name,
        id,
        subscribed,
        access,
        expires_at,
    })
}

/// The grants the data sources give, in s3p's names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MappedGrants {
    pub grants: Entitlement,
    /// The earliest expiration of the grants kept (unix seconds): the identity's `expires_at`.
    pub expires_at: Option<u64>,
    /// Data sources that granted nothing: not subscribed, expired, an unknown access level, or a name s3p
    /// does not map (for logs at debug level; many are normal, s3p serves a subset of the catalogue).
    pub ignored: usize,
}

/// Maps the service's data sources to s3p's grants. `names` maps each s3p data-source name to the
/// service's name (`data_sources.<ds>.immuta_name`, the s3p name by default); a service name may serve
/// several s3p data sources. Kept: subscribed, not expired at `now`, a known access level, a mapped
/// name; `WRITE` is write (the data source must still be `writable` for a write, as for file keys),
/// anything else read; the strongest grant of a name applies. Nothing grants every data source.
pub fn map_grants(
    subscriptions: &[Subscription],
    names: &BTreeMap<String, String>,
    now: SystemTime,
) -> MappedGrants {
    let mut by_service_name: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (s3p, service) in names {
        by_service_name
            .entry(service.as_str())
            .or_default()
            .push(s3p.as_str());
    }
    let mut mapped = MappedGrants::default();
    for sub in subscriptions {
        let expired = sub
            .expires_at
            .is_some_and(|at| UNIX_EPOCH + Duration::from_secs(at) <= now);
        let targets = by_service_name.get(sub.name.as_str());
        let (Some(access), Some(targets), true, false) =
            (sub.access, targets, sub.subscribed, expired)
        else {
            mapped.ignored += 1;
            continue;
        };
        for s3p in targets {
            let grant = mapped.grants.named.entry(s3p.to_string()).or_insert(access);
            *grant = (*grant).max(access);
        }
        if let Some(at) = sub.expires_at {
            mapped.expires_at = Some(mapped.expires_at.map_or(at, |e| e.min(at)));
        }
    }
    mapped
}

/// Call 3: the signing secret of `access_key_id`, asked with s3p's own `service` authorization
/// ([`Authorization::bearer`] of the service token). `None`: not a credential ([`plausible_credential`]):
/// deny without a call.
pub fn signing_secret_request(
    access_key_id: &str,
    service: &Authorization,
) -> Option<ServiceRequest> {
    if !plausible_credential(access_key_id) {
        return None;
    }
    let mut path_and_query = format!("{SIGNING_SECRET_PATH}?accessKeyId=");
    crate::wire::push_unreserved(&mut path_and_query, access_key_id.as_bytes());
    Some(ServiceRequest {
        method: http::Method::GET,
        path_and_query,
        authorization: Some(service.0.clone()),
        json_body: None,
    })
}

/// The answer of call 3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningSecret {
    /// Verifies the access key id's signatures.
    pub secret: Secret,
    /// The API key whose subscriptions govern the access key id (look it up with calls 1 and 2).
    pub api_key: Secret,
    /// Shown in logs, if the service gave one.
    pub name: Option<String>,
}

pub fn parse_signing_secret(
    status: u16,
    body: &[u8],
) -> Result<Lookup<SigningSecret>, ServiceError> {
    const CALL: &str = "signing secret";
    if answer_kind(CALL, status, &[404])? == Kind::Denied {
        return Ok(Lookup::Denied);
    }
    let value = parse_json(CALL, body)?;
    let object = as_object(CALL, "the answer", &value)?;
    let secret = optional_str(CALL, object, "secret")?
        .ok_or_else(|| error(CALL, "no `secret` in the answer".into()))?;
    if secret.is_empty() {
        return Err(error(CALL, "`secret` is empty".into()));
    }
    let api_key = optional_str(CALL, object, "apikey")?
        .ok_or_else(|| error(CALL, "no `apikey` in the answer".into()))?;
    if !plausible_credential(api_key) {
        return Err(error(
            CALL,
            "`apikey` is empty, too long or not visible ASCII".into(),
        ));
    }
    let name = optional_str(CALL, object, "name")?.map(str::to_string);
    Ok(Lookup::Found(SigningSecret {
        secret: Secret::new(secret),
        api_key: Secret::new(api_key),
        name,
    }))
}

/// `yyyy-mm-ddThh:mm:ss[.fraction](Z|±hh:mm)` (RFC 3339; `t`, `z` and a space for `T` accepted) as unix
/// seconds, the fraction dropped (an expiration read early, never late). A leap second counts as :59.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if !s.is_ascii()
        || b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &fraction[digits..];
    }
    let offset_s: i64 = match rest {
        "Z" | "z" => 0,
        _ => {
            let o = rest.as_bytes();
            let two = |i: usize| -> Option<i64> {
                let d = &o[i..i + 2];
                d.iter()
                    .all(u8::is_ascii_digit)
                    .then(|| i64::from(d[0] - b'0') * 10 + i64::from(d[1] - b'0'))
            };
            if o.len() != 6 || o[3] != b':' {
                return None;
            }
            let (hours, minutes) = (two(1)?, two(4)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let magnitude = hours * 3600 + minutes * 60;
            match o[0] {
                b'+' => magnitude,
                b'-' => -magnitude,
                _ => return None,
            }
        }
    };
    let second = if &s[17..19] == "60" { "59" } else { &s[17..19] };
    // The civil date and time checks (digits, real dates, ranges) are timefmt's, through its compact form.
    let compact = format!(
        "{}{}{}T{}{}{}Z",
        &s[0..4],
        &s[5..7],
        &s[8..10],
        &s[11..13],
        &s[14..16],
        second
    );
    let local = crate::timefmt::parse_amz_date(&compact)?;
    let local_s = i64::try_from(local.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()?;
    u64::try_from(local_s - offset_s).ok()
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Answer,
    Denied,
}

/// A 2xx status is an answer, one of `deny` a deny, any other a service error.
fn answer_kind(call: &'static str, status: u16, deny: &[u16]) -> Result<Kind, ServiceError> {
    if (200..300).contains(&status) {
        Ok(Kind::Answer)
    } else if deny.contains(&status) {
        Ok(Kind::Denied)
    } else {
        Err(error(call, format!("status {status}")))
    }
}

fn error(call: &'static str, problem: String) -> ServiceError {
    ServiceError { call, problem }
}

fn parse_json(call: &'static str, body: &[u8]) -> Result<Value, ServiceError> {
    if body.len() > MAX_ANSWER_BYTES {
        return Err(error(
            call,
            format!(
                "an answer of {} bytes (at most {MAX_ANSWER_BYTES})",
                body.len()
            ),
        ));
    }
    // Only where the parser stopped, not its message: serde_json quotes input in some messages.
    serde_json::from_slice(body).map_err(|e| {
        error(
            call,
            format!(
                "the answer is not JSON ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ),
        )
    })
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(call: &'static str, field: &str, expected: &str, found: &Value) -> ServiceError {
    error(
        call,
        format!("{field}: expected {expected}, found {}", json_type(found)),
    )
}

fn as_object<'v>(
    call: &'static str,
    what: &str,
    v: &'v Value,
) -> Result<&'v Map<String, Value>, ServiceError> {
    v.as_object()
        .ok_or_else(|| wrong_type(call, what, "an object", v))
}

/// A field that is a string, null or absent (`None` for both).
fn field_str<'v>(
    call: &'static str,
    object: &'v Map<String, Value>,
    field: &str,
    shown: &str,
) -> Result<Option<&'v str>, ServiceError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(wrong_type(call, shown, "a string or null", other)),
    }
}

fn optional_str<'v>(
    call: &'static str,
    object: &'v Map<String, Value>,
    field: &str,
) -> Result<Option<&'v str>, ServiceError> {
    field_str(call, object, field, &format!("`{field}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "5f2a9c0e7d3b4a18b6c1e2f3a4b5c6d7";
    const TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";

    /// 2026-01-01T00:00:00Z.
    const NEW_YEAR: u64 = 1_767_225_600;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NEW_YEAR)
    }

    fn no_secret_in(e: &ServiceError) {
        let shown = format!("{e} {e:?}");
        for secret in [KEY, TOKEN, "s3cr3t", "hunter2"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn auth_forms_and_their_first_request() {
        for form in [AuthForm::Header, AuthForm::Body, AuthForm::Direct] {
            assert_eq!(AuthForm::parse(form.as_str()), Some(form));
        }
        assert_eq!(AuthForm::parse("Header"), None);

        let Begin::Authenticate(r) = begin(AuthForm::Header, KEY) else {
            panic!()
        };
        assert_eq!(r.method, http::Method::POST);
        assert_eq!(r.path_and_query, "/bim/apikey/authenticate");
        assert_eq!(r.authorization.as_ref().map(Secret::expose), Some(KEY));
        assert_eq!(r.json_body, None);
        assert!(!format!("{r:?}").contains(KEY));

        let Begin::Authenticate(r) = begin(AuthForm::Body, KEY) else {
            panic!()
        };
        assert_eq!(r.authorization, None);
        let body: Value = serde_json::from_str(r.json_body.as_ref().unwrap().expose()).unwrap();
        assert_eq!(body, serde_json::json!({ "apikey": KEY }));
        assert!(!format!("{r:?}").contains(KEY));

        let Begin::Direct(a) = begin(AuthForm::Direct, KEY) else {
            panic!()
        };
        assert_eq!(a.header_value(), KEY);

        // Not a credential: denied without a call, in every form (no header injection, no huge bodies).
        let huge = "k".repeat(MAX_CREDENTIAL_BYTES + 1);
        for bad in ["", "a b", "key\r\nX-Evil: 1", "clé", huge.as_str()] {
            for form in [AuthForm::Header, AuthForm::Body, AuthForm::Direct] {
                assert_eq!(begin(form, bad), Begin::Denied, "{bad:?} {form:?}");
            }
        }
    }

    #[test]
    fn authenticate_answers() {
        let token = |a: Authorization| a.header_value().to_string();
        let found = |status, body: &str| match parse_authenticate(status, body.as_bytes()) {
            Ok(Lookup::Found(a)) => token(a),
            other => panic!("{status} {body}: {other:?}"),
        };
        let bearer = format!("Bearer {TOKEN}");
        assert_eq!(found(200, &format!(r#"{{"token":"{TOKEN}"}}"#)), bearer);
        assert_eq!(
            found(
                200,
                &format!(r#"{{"access_token":"{TOKEN}","token_type":"Bearer","expires_in":3600}}"#)
            ),
            bearer
        );
        // Extra fields are ignored; `token` wins over `access_token`; a null `token` falls back.
        assert_eq!(
            found(
                200,
                &format!(
                    r#"{{"token":"{TOKEN}","access_token":"other","userid":7,"profile":{{}}}}"#
                )
            ),
            bearer
        );
        assert_eq!(
            found(
                201,
                &format!(r#"{{"token":null,"access_token":"{TOKEN}"}}"#)
            ),
            bearer
        );

        // 401 and 403: the key is unknown or revoked.
        for status in [401, 403] {
            assert_eq!(
                parse_authenticate(status, b"{\"message\":\"Invalid API key\"}"),
                Ok(Lookup::Denied)
            );
        }
        // Anything else is the service failing, never a deny.
        for (status, body) in [
            (500, "{}".to_string()),
            (502, "<html>Bad Gateway</html>".to_string()),
            (404, String::new()),
            (429, String::new()),
            (200, "".to_string()),
            (200, "{\"token\":".to_string()),
            (200, format!("[\"{TOKEN}\"]")),
            (200, format!("{{\"token\":[\"{TOKEN}\"]}}")),
            (200, "{\"token\":12345}".to_string()),
            (200, "{\"token\":\"\"}".to_string()),
            (200, "{\"token\":\"two words\"}".to_string()),
            (200, "{\"userid\":7}".to_string()),
            (200, format!("{{\"token\":\"{TOKEN}\"}}   garbage {TOKEN}")),
        ] {
            let e = parse_authenticate(status, body.as_bytes()).unwrap_err();
            assert_eq!(e.call, "authenticate");
            no_secret_in(&e);
        }
        // Too large: refused before parsing.
        let mut big = format!("{{\"token\":\"{TOKEN}\",\"pad\":\"");
        big.push_str(&"x".repeat(MAX_ANSWER_BYTES));
        big.push_str("\"}");
        let e = parse_authenticate(200, big.as_bytes()).unwrap_err();
        assert!(e.problem.contains("bytes"), "{e}");
    }

    /// What Immuta's `/dataSource` answers look like (trimmed; real ones carry many more fields).
    const OBJECT_PAGE: &str = r#"{
      "count": 4,
      "hits": [
        {"id": 12, "name": "Sales 2024", "type": "queryable", "subscriptionStatus": "subscribed",
         "accessGrant": "READ", "expiration": null, "connectionString": "x", "tags": [{"name": "PII"}]},
        {"id": 13, "name": "Sandbox", "subscriptionStatus": "subscribed", "accessGrant": "WRITE",
         "expiration": "2026-03-01T12:00:00.000Z"},
        {"id": 14, "name": "HR Salaries", "subscriptionStatus": "pending"},
        {"id": 15, "name": "Products", "subscriptionStatus": "subscribed",
         "expiration": "2025-12-31T23:59:59Z"}
      ]
    }"#;

    const ARRAY_PAGE: &str = r#"[
      {"id": "ds-1", "name": "Sales 2024", "subscriptionStatus": "subscribed"},
      {"id": "ds-2", "name": "Products", "subscriptionStatus": "subscribed", "accessGrant": "write",
       "expiration": "2026-02-01T00:00:00+01:00"}
    ]"#;

    fn names() -> BTreeMap<String, String> {
        [
            ("sales", "Sales 2024"),
            ("sandbox", "Sandbox"),
            ("hr", "HR Salaries"),
            ("products", "Products"),
            ("sales-eu", "Sales 2024"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
    }

    fn page(body: &str) -> (Vec<Subscription>, Option<u64>) {
        match parse_subscriptions_page(200, body.as_bytes()) {
            Ok(Lookup::Found(p)) => (p.items, p.count),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn both_answer_shapes_parse() {
        let (items, count) = page(OBJECT_PAGE);
        assert_eq!(count, Some(4));
        assert_eq!(items.len(), 4);
        assert_eq!(
            items[1],
            Subscription {
                name: "Sandbox".into(),
                id: Some("13".into()),
                subscribed: true,
                access: Some(Access::Write),
                expires_at: Some(NEW_YEAR + 59 * 86_400 + 12 * 3600),
            }
        );
        assert!(!items[2].subscribed);
        assert_eq!(
            items[3].access,
            Some(Access::Read),
            "absent accessGrant is READ"
        );

        let (items, count) = page(ARRAY_PAGE);
        assert_eq!(count, None);
        assert_eq!(items[0].id.as_deref(), Some("ds-1"));
        assert_eq!(items[1].access, Some(Access::Write));
        // +01:00: an hour before midnight UTC.
        assert_eq!(items[1].expires_at, Some(NEW_YEAR + 31 * 86_400 - 3600));

        assert_eq!(page(r#"{"hits": []}"#), (vec![], None));
        assert_eq!(page("[]"), (vec![], None));
    }

    #[test]
    fn grants_are_mapped_to_s3p_names() {
        let (items, _) = page(OBJECT_PAGE);
        let mapped = map_grants(&items, &names(), now());
        let grants: Vec<(&str, Access)> = mapped
            .grants
            .named
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        // Sales 2024 serves two s3p data sources; HR is pending; Products expired a second ago.
        assert_eq!(
            grants,
            vec![
                ("sales", Access::Read),
                ("sales-eu", Access::Read),
                ("sandbox", Access::Write),
            ]
        );
        assert_eq!(mapped.grants.every, None);
        assert_eq!(mapped.expires_at, Some(NEW_YEAR + 59 * 86_400 + 12 * 3600));
        assert_eq!(mapped.ignored, 2);
    }

    #[test]
    fn what_grants_nothing() {
        let sub = |name: &str, subscribed, access, expires_at| Subscription {
            name: name.into(),
            id: None,
            subscribed,
            access,
            expires_at,
        };
        let names = names();
        let read = Some(Access::Read);
        // (what, subscription, the grant on `sales` it gives, expiration kept).
        let cases = [
            (
                "plain read",
                sub("Sales 2024", true, read, None),
                read,
                None,
            ),
            (
                "write",
                sub("Sales 2024", true, Some(Access::Write), None),
                Some(Access::Write),
                None,
            ),
            (
                "not subscribed",
                sub("Sales 2024", false, read, None),
                None,
                None,
            ),
            (
                "unknown access level",
                sub("Sales 2024", true, None, None),
                None,
                None,
            ),
            (
                "a name s3p does not map",
                sub("Finance", true, read, None),
                None,
                None,
            ),
            (
                "the s3p name is not the service's",
                sub("sales", true, read, None),
                None,
                None,
            ),
            (
                "names are exact",
                sub("sales 2024", true, read, None),
                None,
                None,
            ),
            (
                "expired",
                sub("Sales 2024", true, read, Some(NEW_YEAR - 1)),
                None,
                None,
            ),
            (
                "expires now",
                sub("Sales 2024", true, read, Some(NEW_YEAR)),
                None,
                None,
            ),
            (
                "expires later",
                sub("Sales 2024", true, read, Some(NEW_YEAR + 1)),
                read,
                Some(NEW_YEAR + 1),
            ),
        ];
        for (what, s, grant, expires) in cases {
            let mapped = map_grants(&[s], &names, now());
            assert_eq!(mapped.grants.access("sales"), grant, "{what}");
            assert_eq!(mapped.expires_at, expires, "{what}");
            assert_eq!(mapped.ignored, usize::from(grant.is_none()), "{what}");
        }

        // The strongest grant of a name applies; the earliest expiration of the kept grants bounds.
        let mapped = map_grants(
            &[
                sub(
                    "Sales 2024",
                    true,
                    Some(Access::Write),
                    Some(NEW_YEAR + 100),
                ),
                sub("Sales 2024", true, read, Some(NEW_YEAR + 50)),
                sub("Finance", true, read, Some(NEW_YEAR + 10)),
            ],
            &names,
            now(),
        );
        assert_eq!(mapped.grants.access("sales"), Some(Access::Write));
        assert_eq!(mapped.expires_at, Some(NEW_YEAR + 50));
    }

    #[test]
    fn paging_follows_offset_while_there_is_more() {
        let auth = Authorization::bearer(TOKEN).unwrap();
        let hits = |from: usize, n: usize| -> String {
            let items: Vec<String> = (from..from + n)
                .map(|i| {
                    format!(r#"{{"id":{i},"name":"ds{i}","subscriptionStatus":"subscribed"}}"#)
                })
                .collect();
            format!("[{}]", items.join(","))
        };
        let with_count =
            |from, n, count: u64| format!(r#"{{"count":{count},"hits":{}}}"#, hits(from, n));

        // (what, page size, answers, pages read, items, truncated).
        type Case = (&'static str, u32, Vec<String>, usize, usize, bool);
        let cases: Vec<Case> = vec![
            ("one short page", 10, vec![with_count(0, 3, 3)], 1, 3, false),
            (
                "full pages until count",
                2,
                vec![
                    with_count(0, 2, 5),
                    with_count(2, 2, 5),
                    with_count(4, 1, 5),
                ],
                3,
                5,
                false,
            ),
            (
                "count reached on a full page",
                2,
                vec![with_count(0, 2, 2)],
                1,
                2,
                false,
            ),
            (
                "a service that caps the page size is still read whole",
                10,
                vec![with_count(0, 4, 6), with_count(4, 2, 6)],
                2,
                6,
                false,
            ),
            (
                "an empty page ends it even if count says more",
                2,
                vec![with_count(0, 2, 9), with_count(2, 0, 9)],
                2,
                2,
                false,
            ),
            (
                "array form: full pages until a short one",
                2,
                vec![hits(0, 2), hits(2, 2), hits(4, 0)],
                3,
                4,
                false,
            ),
            (
                "at most MAX_PAGES pages",
                1,
                (0..30).map(|i| with_count(i, 1, 1000)).collect(),
                MAX_PAGES as usize,
                MAX_PAGES as usize,
                true,
            ),
        ];
        for (what, size, answers, pages, items, truncated) in cases {
            let mut pager = Pager::new(size);
            let mut sent = 0;
            let mut offsets = vec![];
            let done = loop {
                let r = pager.request(&auth);
                assert_eq!(r.method, http::Method::GET, "{what}");
                assert_eq!(
                    r.authorization.as_ref().map(Secret::expose),
                    Some(format!("Bearer {TOKEN}").as_str())
                );
                let q = r.path_and_query.clone();
                assert!(
                    q.starts_with(&format!(
                        "/dataSource?subscription=subscribed&size={size}&offset="
                    )),
                    "{what}: {q}"
                );
                offsets.push(q.rsplit('=').next().unwrap().parse::<usize>().unwrap());
                let answer = &answers[sent];
                sent += 1;
                match pager.take(200, answer.as_bytes()).unwrap() {
                    Paging::More => continue,
                    Paging::Done(s) => break s,
                    Paging::Denied => panic!("{what}"),
                }
            };
            assert_eq!(sent, pages, "{what}: pages read");
            assert_eq!(done.items.len(), items, "{what}: items");
            assert_eq!(done.truncated, truncated, "{what}");
            // Each offset is the number of items read before it.
            let mut expected = 0;
            for (i, o) in offsets.iter().enumerate() {
                assert_eq!(*o, expected, "{what}: offset of page {i}");
                expected += page(&answers[i]).0.len();
            }
        }
        // The page size is kept sensible.
        assert!(Pager::new(0)
            .request(&auth)
            .path_and_query
            .contains("size=1&"));
        assert!(Pager::new(u32::MAX)
            .request(&auth)
            .path_and_query
            .contains("size=1000&"));
    }

    #[test]
    fn subscription_statuses_and_malformed_answers() {
        let mut pager = Pager::new(10);
        assert_eq!(pager.take(401, b""), Ok(Paging::Denied));
        assert_eq!(pager.take(403, b"{}"), Ok(Paging::Denied));
        for (status, body) in [
            (500, "[]"),
            (503, ""),
            (404, "[]"),
            (302, ""),
            (200, ""),
            (200, "[{\"name\": \"a\"},"),
            (200, "\"hits\""),
            (200, "{\"count\": 3}"),
            (200, "{\"hits\": {}}"),
            (200, "{\"count\": \"3\", \"hits\": []}"),
            (200, "{\"count\": -1, \"hits\": []}"),
            (200, "{\"count\": 1.5, \"hits\": []}"),
            (200, "[1]"),
            (200, "[{\"id\": 1}]"),
            (200, "[{\"name\": 7}]"),
            (200, "[{\"name\": \"a\", \"id\": [1]}]"),
            (200, "[{\"name\": \"a\", \"subscriptionStatus\": true}]"),
            (200, "[{\"name\": \"a\", \"accessGrant\": 2}]"),
            (200, "[{\"name\": \"a\", \"expiration\": 1767225600}]"),
            (200, "[{\"name\": \"a\", \"expiration\": \"next tuesday\"}]"),
            (
                200,
                "[{\"name\": \"a\", \"expiration\": \"2026-02-30T00:00:00Z\"}]",
            ),
        ] {
            let e = Pager::new(10).take(status, body.as_bytes()).unwrap_err();
            assert_eq!(e.call, "subscriptions", "{status} {body}");
        }
        // The message names the field and the type found, not the value.
        let e = parse_subscriptions_page(
            200,
            br#"[{"name":"a"},{"name":"hunter2","expiration":{"at":"hunter2"}}]"#,
        )
        .unwrap_err();
        assert_eq!(
            e.problem,
            "hits[1].expiration: expected a string or null, found an object"
        );
        no_secret_in(&e);
        let e =
            parse_subscriptions_page(200, br#"[{"name":"a","expiration":"hunter2"}]"#).unwrap_err();
        no_secret_in(&e);
        let e = parse_subscriptions_page(200, b"[{\"name\": \"hunter2\" \"x\"}]").unwrap_err();
        assert!(
            e.problem
                .starts_with("the answer is not JSON (Syntax error at line 1"),
            "{e}"
        );
        no_secret_in(&e);
    }

    #[test]
    fn signing_secret_call() {
        let service = Authorization::bearer("svc-token-123").unwrap();
        let r = signing_secret_request("AKIA/EXAMPLE+1", &service).unwrap();
        assert_eq!(r.method, http::Method::GET);
        assert_eq!(
            r.path_and_query,
            "/s3p/v1/signing-secret?accessKeyId=AKIA%2FEXAMPLE%2B1"
        );
        assert_eq!(
            r.authorization.as_ref().map(Secret::expose),
            Some("Bearer svc-token-123")
        );
        assert_eq!(signing_secret_request("AKID EXAMPLE", &service), None);
        assert_eq!(signing_secret_request("", &service), None);
        assert_eq!(Authorization::bearer("bad token"), None);

        let found = parse_signing_secret(
            200,
            format!(
                r#"{{"secret":"s3cr3t","apikey":"{KEY}","name":"Alice","created":"2025-01-01"}}"#
            )
            .as_bytes(),
        );
        let Ok(Lookup::Found(s)) = found else {
            panic!("{found:?}")
        };
        assert_eq!((s.secret.expose(), s.api_key.expose()), ("s3cr3t", KEY));
        assert_eq!(s.name.as_deref(), Some("Alice"));
        assert!(!format!("{s:?}").contains("s3cr3t") && !format!("{s:?}").contains(KEY));
        let Ok(Lookup::Found(s)) = parse_signing_secret(
            200,
            format!(r#"{{"secret":"s3cr3t","apikey":"{KEY}","name":null}}"#).as_bytes(),
        ) else {
            panic!()
        };
        assert_eq!(s.name, None);

        assert_eq!(parse_signing_secret(404, b"{}"), Ok(Lookup::Denied));
        // s3p's own token refused is a misconfiguration, never the client's deny.
        for (status, body) in [
            (401, "{}".to_string()),
            (403, "{}".to_string()),
            (500, "{}".to_string()),
            (200, format!(r#"{{"apikey":"{KEY}"}}"#)),
            (200, format!(r#"{{"secret":"","apikey":"{KEY}"}}"#)),
            (200, format!(r#"{{"secret":["s3cr3t"],"apikey":"{KEY}"}}"#)),
            (200, r#"{"secret":"s3cr3t"}"#.to_string()),
            (
                200,
                r#"{"secret":"s3cr3t","apikey":"has space"}"#.to_string(),
            ),
            (
                200,
                format!(r#"{{"secret":"s3cr3t","apikey":{KEY:?},"name":5}}"#),
            ),
            (200, format!(r#"{{"secret":"s3cr3t","apikey":"{KEY}"#)),
        ] {
            let e = parse_signing_secret(status, body.as_bytes()).unwrap_err();
            assert_eq!(e.call, "signing secret", "{status} {body}");
            no_secret_in(&e);
        }
    }

    #[test]
    fn rfc3339_dates() {
        for (text, expected) in [
            ("2026-01-01T00:00:00Z", Some(NEW_YEAR)),
            ("2026-01-01t00:00:00z", Some(NEW_YEAR)),
            ("2026-01-01 00:00:00Z", Some(NEW_YEAR)),
            ("2026-01-01T00:00:00.999Z", Some(NEW_YEAR)),
            ("2026-01-01T00:00:00.123456789Z", Some(NEW_YEAR)),
            ("2026-01-01T01:30:00+01:30", Some(NEW_YEAR)),
            ("2025-12-31T22:00:00-02:00", Some(NEW_YEAR)),
            ("2025-12-31T23:59:60Z", Some(NEW_YEAR - 1)),
            ("2024-02-29T00:00:00Z", Some(1_709_164_800)),
            ("1970-01-01T00:00:00Z", Some(0)),
            ("2023-02-29T00:00:00Z", None),
            ("2026-13-01T00:00:00Z", None),
            ("2026-01-01T24:00:00Z", None),
            ("2026-01-01T00:00:00", None),
            ("2026-01-01T00:00:00.Z", None),
            ("2026-01-01T00:00:00+0100", None),
            ("2026-01-01T00:00:00+24:00", None),
            ("2026-01-01", None),
            ("1970-01-01T00:00:00+01:00", None),
            ("+2026-01-01T00:00:00Z", None),
            ("2026-01-01T00:00:00Zjunk", None),
            ("２026-01-01T00:00:00Z", None),
        ] {
            assert_eq!(parse_rfc3339(text), expected, "{text}");
        }
    }
}
