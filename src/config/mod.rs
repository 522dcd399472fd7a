//! `proxy.yaml`: the validated configuration the rest of s3p reads, and where it comes from. Pure apart
//! from reading the file and the environment, which happen once in [`load`]; [`Config::from_yaml_str`]
//! takes both as arguments so tests need neither.
//!
//! Three steps, one file each, so that the types the code uses are not buried in the YAML's shape:
//! - this file: the validated types (every `crate::config::X`) and the entry points;
//! - `raw.rs`: the YAML as serde reads it, with every default, before anything is checked;
//! - `validate.rs`: `${ENV}` expansion and the checks that turn the raw shape into these types, every
//!   problem naming its field (all of them reported at once).
//!
//! Configuration only: nothing here changes while s3p runs. Run-time counts kept per key (requests in
//! flight) live in `server::throttle`, which outlives reloads.
//!
//! YAML crate: `serde_yaml_ng` (a maintained fork of the archived `serde_yaml` with the same serde API,
//! small and synchronous; `serde-saphyr` was the alternative but its API is newer and less settled).

mod raw;
#[cfg(test)]
mod tests;
mod validate;

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

/// A secret string (credential, token secret). Its `Debug` never shows the value, so a secret cannot reach
/// a log line through `{:?}` of a config struct.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How the backend's bucket is named in requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AddressingStyle {
    /// `http://host/<bucket>/<key>`
    #[default]
    Path,
    /// `http://<bucket>.host/<key>`: s3p still connects to the endpoint's own address and sends the bucket in
    /// `Host` (and SNI), so no DNS entry per bucket is needed.
    VirtualHost,
}

/// The validated configuration. Built only by [`Config::from_yaml_str`].
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// `/s3p`, or empty when the S3 API is served at the root. Never ends with `/`.
    pub base_path: String,
    /// The virtual bucket's name (`immuta`).
    pub bucket: String,
    pub region: String,
    pub owner: Owner,
    pub token_secret: Secret,
    /// Secrets of earlier rotations: tokens they sealed are still accepted (new ones are sealed with
    /// `token_secret`), so that a new secret can roll out across replicas without breaking listings.
    pub previous_token_secrets: Vec<Secret>,
    /// Global switch for the legacy `Authorization: AWS <key>:immuta` header (a bearer credential).
    pub legacy_auth: bool,
    /// Worker threads for the proxy.
    pub threads: usize,
    /// Host names under which the virtual bucket is also addressed virtual-host style
    /// (`<bucket>.<suffix>`), lowercase, without port.
    pub virtual_host_suffixes: Vec<String>,
    /// Load balancers and TLS terminators in front of s3p: for connections from them, the client is the
    /// rightmost untrusted address of `X-Forwarded-For` (for throttling, per-client limits and the audit
    /// log). Never trusted from any other peer.
    pub trusted_proxies: Vec<crate::client_addr::Cidr>,
    /// Every connection to the plain listener (`listen`) starts with a PROXY protocol header (v1 or v2)
    /// from a trusted proxy, which names the client (`proxy_protocol: required`; HAProxy `send-proxy`,
    /// AWS NLB). Connections without one, or from other peers, are closed.
    pub proxy_protocol: bool,
    /// Accept SigV4 signatures computed without the base path in the path (s3fs-fuse 1.90) or with it
    /// appended to the host (s3cmd). Off by default; see README "Clients that sign without the base
    /// path". (SigV2 always accepts botocore's resource form, which leaves the base path out.)
    pub signature_base_path_tolerance: bool,
    pub cors: Cors,
    pub limits: Limits,
    /// Listener for /health, /ready and /metrics.
    pub admin_listen: Option<SocketAddr>,
    /// Where audit lines go: `-` for standard output, or a file (reopened on SIGHUP).
    pub audit_log: String,
    /// What happens when the audit log's consumer does not keep up and its buffer is full.
    pub audit_overflow: AuditOverflow,
    /// Where API keys and grants come from besides `api_keys` (`entitlements:`).
    pub entitlements: Entitlements,
    /// Temporary credentials (`sts:`): `None` when off.
    pub sts: Option<Sts>,
    pub tls: Option<TlsListener>,
    pub backends: BTreeMap<String, Backend>,
    pub data_sources: BTreeMap<String, DataSource>,
    pub api_keys: Vec<ApiKey>,
}

/// `sts:`: s3p hands out temporary credentials (README "Temporary credentials").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sts {
    /// Where the STS API is served on the S3 listener (`/sts`): never an S3 path.
    pub path: String,
    pub min_duration_s: u64,
    pub max_duration_s: u64,
    /// When `DurationSeconds` is not given.
    pub default_duration_s: u64,
    /// Roles `RoleArn` may name, each a cap on the session's grants; empty: any `RoleArn`, capped by
    /// nothing but the caller's grants.
    pub roles: BTreeMap<String, Entitlement>,
    /// OIDC issuers trusted by `AssumeRoleWithWebIdentity`.
    pub issuers: Vec<Issuer>,
}

/// An OIDC issuer for `AssumeRoleWithWebIdentity`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issuer {
    /// `iss`, exactly.
    pub issuer: String,
    /// `aud` must name one of these.
    pub audiences: Vec<String>,
    pub jwks: JwksSource,
    /// The claim whose value names the session's parent in logs (`sub` by default).
    pub name_claim: String,
    /// Claims -> grants: a session gets the union of the grants of every rule its token matches.
    pub rules: Vec<ClaimRule>,
}

/// Where an issuer's signing keys are read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JwksSource {
    /// A JWKS file, read when the configuration is (re)loaded.
    File(String),
    /// A JWKS URL, fetched on first use and every `refresh_s` (and when a token names a key not yet
    /// seen, at most every 30 s); trusting `ca_file` besides the system's roots.
    Url {
        url: String,
        refresh_s: u64,
        ca_file: Option<String>,
    },
}

/// A token whose `claim` (a name or a dotted path) is `value`, or a list holding it, gets `grants`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRule {
    pub claim: String,
    pub value: String,
    pub grants: Entitlement,
}

/// Where keys and grants come from. `api_keys` always count; `source: http` adds the keys an
/// Immuta-shaped governance service knows, looked up on use and cached (README "Keys and grants from
/// the governance service").
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entitlements {
    /// `None`: `source: file`, the default (only `api_keys`).
    pub http: Option<EntitlementService>,
    /// s3p data source -> the service's name for it (`data_sources.<ds>.immuta_name`, default: the
    /// s3p name).
    pub names: BTreeMap<String, String>,
}

/// How the governance service is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntitlementService {
    /// `http(s)://host[:port]`, no path.
    pub endpoint: String,
    /// How an API key is presented (Immuta versions differ).
    pub auth: ServiceAuth,
    /// A lookup (every call it makes) must be done within this time; later the request is refused
    /// 503 SlowDown (fail closed).
    pub timeout_ms: u64,
    /// PEM CA certificates trusted for an https endpoint, besides the system roots.
    pub ca_file: Option<String>,
    /// s3p's own token for the signing-secret extension (SigV4/SigV2 clients of keys the service
    /// knows); none: those keys work with the legacy header only.
    pub service_token: Option<Secret>,
    /// Data sources per page of the subscription list.
    pub page_size: usize,
    pub cache: CachePolicy,
}

/// How an API key is presented to the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceAuth {
    /// `POST /bim/apikey/authenticate` with `Authorization: <key>`, then the bearer token.
    #[default]
    Header,
    /// The same with a JSON body `{"apikey": "<key>"}` (older versions).
    Body,
    /// No authenticate call: the key itself is the `Authorization` of the subscription list.
    Direct,
}

/// The decision cache, as operators expect of a policy cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CachePolicy {
    /// How long a known key's grants are used before they are looked up again (never past a grant's
    /// expiration): revocation and unsubscription take effect within this time on every replica.
    pub allow_ttl_s: u64,
    /// How long an unknown or revoked key stays refused without asking the service again.
    pub deny_ttl_s: u64,
    /// Keys remembered at most (known and unknown).
    pub max_entries: usize,
    /// When the service fails, a known key whose entry expired less than this long ago is still
    /// served (0, the default: fail closed at once).
    pub stale_if_error_s: u64,
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy {
            allow_ttl_s: 60,
            deny_ttl_s: 10,
            max_entries: 10_000,
            stale_if_error_s: 0,
        }
    }
}

/// What s3p does when audit lines cannot be written as fast as requests come (README "Audit log").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOverflow {
    /// No line is ever lost: while the buffer is full, new requests are answered 503 SlowDown and
    /// requests already served wait for room before they end (the default: a governance log that
    /// loses lines cannot say who read what).
    #[default]
    Backpressure,
    /// Serving goes on and lines are dropped (counted; `/ready` answers 503 while lines are lost).
    Drop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub id: String,
    pub display_name: String,
}

/// CORS for browsers using presigned URLs. Empty `allowed_origins` turns CORS off.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cors {
    /// Exact origins (`https://app.example.com`), or `*` for any.
    pub allowed_origins: Vec<String>,
    pub max_age_s: u64,
}

impl Cors {
    pub fn allows(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|o| o == "*" || o == origin)
    }
}

/// Timeouts and sizes. Defaults are chosen for interactive data tools on a LAN. Read from YAML as it is
/// (every field optional, each check a lower bound made in `validate.rs`); its `Default` is in `raw.rs`
/// with the other defaults of `proxy.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub connect_timeout_ms: u64,
    /// Longest wait for any single read from a backend (headers or a body chunk).
    pub read_timeout_ms: u64,
    /// How long an idle pooled backend connection is kept.
    pub idle_timeout_ms: u64,
    /// Seconds given to in-flight requests on SIGTERM/SIGINT, after the drain delay.
    pub grace_period_s: u64,
    /// Seconds between SIGTERM/SIGINT and the refusal of new requests: `/ready` answers 503 at once while
    /// s3p keeps serving (each answer closing its connection), so that a load balancer's health check
    /// takes the replica out before it stops accepting. At least the balancer's check interval times
    /// its fall count; 0 without a balancer.
    pub drain_delay_s: u64,
    /// Longest wait for any single read from or write to a client, so a stalled client cannot pin a
    /// connection forever.
    pub client_timeout_ms: u64,
    /// How long an idle client keep-alive connection is kept.
    pub keepalive_timeout_s: u64,
    /// Read buffer per client connection (pingora's default is 64 KiB; request heads are small).
    pub client_read_buffer_bytes: usize,
    /// Largest request line plus header section accepted, in bytes (S3 answers larger ones with 400
    /// RequestHeaderSectionTooLarge). pingora itself refuses more than 1 MiB before s3p sees the request.
    pub max_header_bytes: usize,
    /// The whole request head (request line and headers) must arrive within this time: from the
    /// connection's start for its first request, from the first byte for later ones. A byte now and
    /// then no longer keeps a connection. (A TLS handshake is bounded separately, by pingora's fixed
    /// 60 s.)
    pub header_timeout_ms: u64,
    /// Client connections open at once; more are answered 503 SlowDown and closed.
    pub max_connections: usize,
    /// Client connections open at once from one client address (IPv4 address or IPv6 /64; trusted
    /// proxies exempt).
    pub max_connections_per_client: usize,
    /// Requests handled at once; more are answered 503 SlowDown.
    pub max_concurrent_requests: usize,
    /// Requests one API key may have in flight at once (default: a quarter of `max_concurrent_requests`),
    /// so that no key can take every slot; more are answered 503 SlowDown.
    pub max_concurrent_requests_per_key: Option<usize>,
    /// The same per client address (an IPv4 address or IPv6 /64, after `trusted_proxies`); trusted
    /// proxies without a forwarded address are exempt.
    pub max_concurrent_requests_per_client: Option<usize>,
    /// A response must reach the client at this average rate (bytes/s) once `client_timeout_ms` has
    /// passed since it started; a slower reader is cut, freeing its slot (0 turns this off).
    pub min_client_rate_bytes_per_s: u64,
    /// Failed authentications allowed per minute from one client address and for one key id; past it,
    /// 503 SlowDown without checking (0 turns the throttle off).
    pub auth_failures_per_minute: u32,
    /// Backend host names are resolved again this often (seconds; 0: only at start-up and on SIGHUP), so
    /// that endpoints whose addresses rotate, as AWS's do, keep working.
    pub backend_resolve_interval_s: u64,
    /// Backend listing calls one client listing page may cost once it holds an entry (see
    /// `listing::merge::CallBudget`; a page ends at 32 calls even when empty).
    pub max_backend_calls_per_list: usize,
    /// Request bytes s3p holds in memory at once, over every request of the process: the DeleteObjects
    /// bodies it reads whole, the small signed-chunk bodies it verifies before the backend sees them,
    /// and (counted by their announced length while they pass) CompleteMultipartUpload bodies, which
    /// backends buffer whole. A body that does not fit is answered 503 SlowDown with Retry-After.
    pub max_buffered_body_bytes: usize,
    /// Such a body must arrive whole within this time from the decision (a byte now and then does not
    /// keep the memory held); later: 400 RequestTimeout.
    pub body_timeout_ms: u64,
    /// CopyObject and UploadPartCopy requests one API key may have in flight at once: a few hundred
    /// bytes make the backend copy up to 5 GiB. More are answered 503 SlowDown.
    pub max_concurrent_copies_per_key: usize,
    /// The same over every key, per replica (the backends' copy work this replica may start at once).
    pub max_concurrent_copies: usize,
}

impl Limits {
    pub fn per_key(&self) -> usize {
        self.max_concurrent_requests_per_key
            .unwrap_or((self.max_concurrent_requests / 4).max(1))
    }

    pub fn per_client(&self) -> usize {
        self.max_concurrent_requests_per_client
            .unwrap_or((self.max_concurrent_requests / 4).max(1))
    }
}

/// The HTTPS listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListener {
    pub listen: SocketAddr,
    /// PEM certificate chain, leaf first. Reloaded on SIGHUP.
    pub cert: String,
    /// PEM private key. Reloaded on SIGHUP.
    pub key: String,
}

#[derive(Debug, Clone)]
pub struct Backend {
    pub name: String,
    pub endpoint: url::Url,
    /// `http` or `https`.
    pub tls: bool,
    /// Host name (or address) of the endpoint, without port.
    pub host: String,
    pub port: u16,
    pub region: String,
    pub addressing: AddressingStyle,
    pub credentials: BackendCredentials,
    /// PEM file of extra CA certificates trusted for this (https) backend, besides the system roots.
    pub ca_file: Option<String>,
}

/// Where a backend's credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendCredentials {
    /// Given in proxy.yaml (possibly through `${ENV}` references).
    Static {
        access_key_id: Secret,
        secret_access_key: Secret,
    },
    /// The standard AWS chain (environment, profile, web identity, container and instance metadata), for s3p
    /// running in the cloud. `profile` picks a named profile.
    Chain { profile: Option<String> },
}

/// One top-level folder of the virtual bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSource {
    pub name: String,
    pub backend: String,
    pub bucket: String,
    /// Key prefix inside the backend bucket: empty, or ending with `/` (added if missing, so that a prefix
    /// `data` can never match `data-private/...`).
    pub prefix: String,
    /// Keys granted write may write here (`writable: true`); read-only otherwise (the default).
    pub writable: bool,
}

/// What a grant lets a key do with a data source. Write includes overwrite and delete, and implies read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, Deserialize)]
pub enum Access {
    #[serde(rename = "r")]
    Read,
    #[serde(rename = "w")]
    Write,
}

/// Which data sources a key may read, and which of them it may write.
/// (Serialised with short names: it is sealed into every session token, `sts::session`.)
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, Deserialize)]
pub struct Entitlement {
    /// The grant on every data source (`all`, or `"*"` in the map form).
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    pub every: Option<Access>,
    /// Grants on named data sources (the strongest of this and `every` applies).
    #[serde(rename = "d", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub named: BTreeMap<String, Access>,
}

impl Entitlement {
    /// Read on every data source (`data_sources: all`).
    pub fn read_all() -> Entitlement {
        Entitlement {
            every: Some(Access::Read),
            named: BTreeMap::new(),
        }
    }

    /// What the key may do with `data_source`, if anything.
    pub fn access(&self, data_source: &str) -> Option<Access> {
        self.named.get(data_source).copied().max(self.every)
    }

    /// The key may read `data_source`.
    pub fn allows(&self, data_source: &str) -> bool {
        self.access(data_source).is_some()
    }

    /// The key is granted write on `data_source` (the data source must also be writable).
    pub fn grants_write(&self, data_source: &str) -> bool {
        self.access(data_source) == Some(Access::Write)
    }

    /// What both allow, data source by data source (a session's grants under its parent's current
    /// ones; a role's cap; a session policy): for every name, the weaker of the two accesses.
    pub fn intersect(&self, other: &Entitlement) -> Entitlement {
        let every = self.every.min(other.every);
        let named = self
            .named
            .keys()
            .chain(other.named.keys())
            .filter_map(|ds| {
                let both = match (self.access(ds), other.access(ds)) {
                    (Some(a), Some(b)) => a.min(b),
                    _ => return None,
                };
                // Only where it says more than `every` does.
                (Some(both) > every).then(|| (ds.clone(), both))
            })
            .collect();
        Entitlement { every, named }
    }

    /// What either allows (the grants of several matching claim rules): the stronger access.
    pub fn union(&self, other: &Entitlement) -> Entitlement {
        let every = self.every.max(other.every);
        let named = self
            .named
            .keys()
            .chain(other.named.keys())
            .filter_map(|ds| {
                let either = self.access(ds).max(other.access(ds))?;
                (Some(either) > every).then(|| (ds.clone(), either))
            })
            .collect();
        Entitlement { every, named }
    }

    /// Grants nothing.
    pub fn is_empty(&self) -> bool {
        self.every.is_none() && self.named.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct ApiKey {
    /// The API key as clients send it (the access key id of signatures).
    pub id: Secret,
    /// Secrets for signatures: none (legacy header only), one, or two while rotating.
    pub secrets: Vec<Secret>,
    /// Shown in logs instead of the key. Not checked unique (ids are): two keys may share a name.
    pub name: String,
    pub legacy_header: bool,
    pub enabled: bool,
    /// Unix seconds after which the key is refused.
    pub expires_at: Option<u64>,
    pub data_sources: Entitlement,
    /// Set for the temporary credentials of a session (`sts`): whose they are.
    pub session: Option<Arc<SessionOf>>,
}

/// The session a temporary credential belongs to (`sts::session`), as limits and audit lines need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOf {
    /// The parent's API key (or `web:<issuer>#<subject>` for a web identity): per-key limits count a
    /// session's requests against its parent, so that minting sessions does not multiply them.
    pub parent_id: Secret,
    /// `<role>/<session name>#<8 hex of the session id>`, for audit lines (no secret).
    pub label: String,
    /// The role, the session's name and the first 8 hex digits of its id (GetCallerIdentity).
    pub role: String,
    pub name: String,
    pub id8: String,
}

impl ApiKey {
    /// The id per-key limits count by: the parent's for a session.
    pub fn limit_id(&self) -> &str {
        match &self.session {
            Some(s) => s.parent_id.expose(),
            None => self.id.expose(),
        }
    }
}

/// One validation problem, naming the field (`data_sources.sales.backend`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

/// Names a data source may not have: they mean "every data source" in grants.
pub const RESERVED_DATA_SOURCE_NAMES: [&str; 2] = ["all", "*"];

impl Config {
    /// Pairs `(outer, inner)` of data sources where `outer` holds every object of `inner` (same backend and
    /// bucket, and `outer`'s prefix starts `inner`'s). Allowed, since a broad data source and a narrow one
    /// for other readers can both be meant, but a key entitled to `outer` reads `inner`'s objects too, so
    /// s3p says so when it loads the configuration.
    pub fn nested_data_sources(&self) -> Vec<(&str, &str)> {
        let mut nested = Vec::new();
        for outer in self.data_sources.values() {
            for inner in self.data_sources.values() {
                if outer.name != inner.name
                    && outer.backend == inner.backend
                    && outer.bucket == inner.bucket
                    && inner.prefix.starts_with(&outer.prefix)
                {
                    nested.push((outer.name.as_str(), inner.name.as_str()));
                }
            }
        }
        nested
    }

    /// Parses and validates. All problems are reported at once.
    pub fn from_yaml_str(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Vec<ConfigError>> {
        let raw: raw::RawConfig = serde_yaml_ng::from_str(text).map_err(|e| {
            vec![ConfigError {
                field: "proxy.yaml".into(),
                problem: e.to_string(),
            }]
        })?;
        validate::config(raw, env)
    }
}

/// Reads `path` and validates it against the process environment.
pub fn load(path: &str) -> Result<Config, Vec<ConfigError>> {
    load_with(path, &|name| std::env::var(name).ok())
}

/// Loads a configuration the way `s3p check --offline` checks it away from its deployment: an unset
/// `${NAME}` gets a placeholder value (distinct per name, long enough for any secret) instead of being an
/// error, and is returned as a warning naming the variable.
pub fn load_offline(path: &str) -> Result<(Config, Vec<String>), Vec<ConfigError>> {
    let unset = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let config = load_with(path, &|name| {
        std::env::var(name).ok().or_else(|| {
            unset.borrow_mut().insert(name.to_string());
            Some(format!("unset-{name}-placeholder-0000000000000000"))
        })
    })?;
    let warnings = unset
        .into_inner()
        .into_iter()
        .map(|name| format!("environment variable {name} is not set (checked with a placeholder)"))
        .collect();
    Ok((config, warnings))
}

fn load_with(path: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError {
            field: path.to_string(),
            problem: format!("cannot read: {e}"),
        }]
    })?;
    let config = Config::from_yaml_str(&text, env)?;
    for (outer, inner) in config.nested_data_sources() {
        log::warn!(
            "data source `{outer}` contains every object of data source `{inner}`: keys entitled to \
             `{outer}` read them too"
        );
    }
    Ok(config)
}
