//! `proxy.yaml`: the types, `${ENV}` expansion and validation. Pure apart from reading the file and the
//! environment, which happen once in [`load`]; [`Config::from_yaml_str`] takes both as arguments so tests
//! need neither.
//!
//! YAML crate: `serde_yaml_ng` (a maintained fork of the archived `serde_yaml` with the same serde API,
//! small and synchronous; `serde-saphyr` was the alternative but its API is newer and less settled).

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;

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
    pub tls: Option<TlsListener>,
    pub backends: BTreeMap<String, Backend>,
    pub data_sources: BTreeMap<String, DataSource>,
    pub api_keys: Vec<ApiKey>,
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

/// Timeouts and sizes. Defaults are chosen for interactive data tools on a LAN.
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

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect_timeout_ms: 3_000,
            read_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            grace_period_s: 5,
            drain_delay_s: 5,
            client_timeout_ms: 60_000,
            keepalive_timeout_s: 60,
            client_read_buffer_bytes: 4 * 1024,
            max_header_bytes: 16 * 1024,
            header_timeout_ms: 10_000,
            max_connections: 8192,
            max_connections_per_client: 1024,
            max_concurrent_requests: 1024,
            max_concurrent_requests_per_key: None,
            max_concurrent_requests_per_client: None,
            min_client_rate_bytes_per_s: 1024,
            auth_failures_per_minute: 30,
            backend_resolve_interval_s: 60,
            max_backend_calls_per_list: 8,
            max_buffered_body_bytes: 64 << 20,
            body_timeout_ms: 30_000,
            max_concurrent_copies_per_key: 2,
            max_concurrent_copies: 16,
        }
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    Read,
    Write,
}

/// Which data sources a key may read, and which of them it may write.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entitlement {
    /// The grant on every data source (`all`, or `"*"` in the map form).
    pub every: Option<Access>,
    /// Grants on named data sources (the strongest of this and `every` applies).
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
}

#[derive(Debug, Clone)]
pub struct ApiKey {
    /// The API key as clients send it (the access key id of signatures).
    pub id: Secret,
    /// Secrets for signatures: none (legacy header only), one, or two while rotating.
    pub secrets: Vec<Secret>,
    /// Shown in logs instead of the key.
    pub name: String,
    pub legacy_header: bool,
    pub enabled: bool,
    /// Unix seconds after which the key is refused.
    pub expires_at: Option<u64>,
    pub data_sources: Entitlement,
    /// This key's requests in flight (for `limits.max_concurrent_requests_per_key`). Not configuration
    /// but the one piece of run-time state kept with it: a counter per key costs no lookup per request.
    /// Shared by clones of one loaded configuration; a reload starts new counters (requests that began
    /// before it count apart until they end).
    pub in_flight: std::sync::Arc<std::sync::atomic::AtomicUsize>,
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

// ---- the raw YAML shape ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default = "default_base_path")]
    base_path: String,
    #[serde(default = "default_bucket")]
    bucket: String,
    #[serde(default = "default_region")]
    region: String,
    #[serde(default)]
    owner: Option<RawOwner>,
    token_secret: Option<String>,
    #[serde(default)]
    previous_token_secrets: Vec<String>,
    #[serde(default = "yes")]
    legacy_auth: bool,
    #[serde(default)]
    threads: Option<usize>,
    #[serde(default)]
    virtual_host_suffixes: Vec<String>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    #[serde(default)]
    proxy_protocol: Option<String>,
    #[serde(default)]
    signature_base_path_tolerance: bool,
    #[serde(default)]
    cors: Option<RawCors>,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    admin_listen: Option<String>,
    #[serde(default = "default_audit_log")]
    audit_log: String,
    #[serde(default)]
    audit_overflow: AuditOverflow,
    #[serde(default)]
    tls: Option<TlsListener>,
    #[serde(default)]
    backends: BTreeMap<String, RawBackend>,
    #[serde(default)]
    data_sources: BTreeMap<String, RawDataSource>,
    #[serde(default)]
    api_keys: Vec<RawApiKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOwner {
    id: String,
    display_name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCors {
    #[serde(default)]
    allowed_origins: Vec<String>,
    #[serde(default = "default_cors_max_age")]
    max_age_s: u64,
}

fn default_cors_max_age() -> u64 {
    3600
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    endpoint: String,
    #[serde(default = "default_region")]
    region: String,
    #[serde(default)]
    addressing: AddressingStyle,
    #[serde(default)]
    access_key_id: Option<String>,
    #[serde(default)]
    secret_access_key: Option<String>,
    /// `chain` to use the standard AWS credential chain instead of inline keys.
    #[serde(default)]
    credentials: Option<String>,
    #[serde(default)]
    profile: Option<String>,
    #[serde(default)]
    ca_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataSource {
    backend: String,
    bucket: String,
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    writable: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawEntitlement {
    /// `all` (read on every data source).
    Word(String),
    /// Names of data sources the key may read.
    List(Vec<String>),
    /// `{"*": read, sandbox: write}`.
    Map(BTreeMap<String, String>),
}

/// Names a data source may not have: they mean "every data source" in grants.
pub const RESERVED_DATA_SOURCE_NAMES: [&str; 2] = ["all", "*"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiKey {
    id: String,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    secrets: Vec<String>,
    name: String,
    /// Defaults to allowed for keys without a secret (Immuta's keys), refused for keys with one.
    #[serde(default)]
    legacy_header: Option<bool>,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    expires_at: Option<u64>,
    data_sources: RawEntitlement,
}

fn default_audit_log() -> String {
    "-".into()
}
fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_base_path() -> String {
    "/s3p".into()
}
fn default_bucket() -> String {
    "immuta".into()
}
fn default_region() -> String {
    "us-east-1".into()
}
fn yes() -> bool {
    true
}

/// Expands `${NAME}` references. A missing variable is an error naming the field and the variable (never
/// the value of anything).
fn expand(
    field: &str,
    value: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                let name = &after[..end];
                match env(name) {
                    Some(v) => out.push_str(&v),
                    None => errors.push(ConfigError {
                        field: field.to_string(),
                        problem: format!("environment variable {name} is not set"),
                    }),
                }
                rest = &after[end + 1..];
            }
            None => {
                errors.push(ConfigError {
                    field: field.to_string(),
                    problem: "unterminated ${...} reference".into(),
                });
                return out;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A data source name is one path segment of the virtual bucket.
fn check_segment_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    // The namespace refuses dot segments (`..`, `..;x`, also between backslashes) in every path, so
    // such a data source could be listed but never read.
    if name.split('\\').any(crate::wire::is_dot_segment) {
        return Err(
            "must not be a `.` or `..` segment (nor `..;x`, nor one between backslashes)".into(),
        );
    }
    if name.contains('/') {
        return Err("must not contain `/`".into());
    }
    if name.chars().any(|c| c.is_control()) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// S3 bucket naming rules, simplified to what a client can address in both styles.
fn check_bucket_name(name: &str) -> Result<(), String> {
    let ok_len = (3..=63).contains(&name.len());
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    let ok_ends = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if ok_len && ok_chars && ok_ends {
        Ok(())
    } else {
        Err("must be 3-63 characters of a-z, 0-9, `-` and `.`, starting and ending with a letter or digit".into())
    }
}

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
        let raw: RawConfig = serde_yaml_ng::from_str(text).map_err(|e| {
            vec![ConfigError {
                field: "proxy.yaml".into(),
                problem: e.to_string(),
            }]
        })?;
        let mut errors = Vec::new();

        let listen = match raw.listen.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                err(
                    &mut errors,
                    "listen".into(),
                    format!("`{}` is not an address:port", raw.listen),
                );
                SocketAddr::from(([127, 0, 0, 1], 0))
            }
        };

        let base_path = raw.base_path.trim_end_matches('/').to_string();
        if !base_path.is_empty() && !base_path.starts_with('/') {
            err(
                &mut errors,
                "base_path".into(),
                "must be empty or start with `/`".into(),
            );
        }
        if base_path.contains(['?', '#', '%']) {
            err(
                &mut errors,
                "base_path".into(),
                "must not contain `?`, `#` or `%`".into(),
            );
        }

        if let Err(p) = check_bucket_name(&raw.bucket) {
            err(&mut errors, "bucket".into(), p);
        }

        let token_secret = match raw.token_secret {
            Some(t) => {
                let t = expand("token_secret", &t, env, &mut errors);
                if t.len() < 16 {
                    err(
                        &mut errors,
                        "token_secret".into(),
                        "must be at least 16 characters".into(),
                    );
                }
                Secret(t)
            }
            None => {
                err(
                    &mut errors,
                    "token_secret".into(),
                    "is required (it seals continuation tokens)".into(),
                );
                Secret::default()
            }
        };

        let mut previous_token_secrets = Vec::new();
        for (i, t) in raw.previous_token_secrets.iter().enumerate() {
            let field = format!("previous_token_secrets[{i}]");
            let t = expand(&field, t, env, &mut errors);
            if t.len() < 16 {
                err(&mut errors, field, "must be at least 16 characters".into());
            }
            previous_token_secrets.push(Secret(t));
        }

        let backends = validate_backends(raw.backends, env, &mut errors);

        let data_sources =
            validate_data_sources(raw.data_sources, &base_path, &backends, &mut errors);

        let api_keys = validate_api_keys(raw.api_keys, &data_sources, env, &mut errors);

        let limits = raw.limits;
        for (name, value) in [
            ("max_concurrent_requests", limits.max_concurrent_requests),
            (
                "max_backend_calls_per_list",
                limits.max_backend_calls_per_list,
            ),
            ("max_connections", limits.max_connections),
            (
                "max_connections_per_client",
                limits.max_connections_per_client,
            ),
            ("header_timeout_ms", limits.header_timeout_ms as usize),
            ("max_header_bytes", limits.max_header_bytes),
            ("max_buffered_body_bytes", limits.max_buffered_body_bytes),
            ("body_timeout_ms", limits.body_timeout_ms as usize),
            (
                "max_concurrent_copies_per_key",
                limits.max_concurrent_copies_per_key,
            ),
            ("max_concurrent_copies", limits.max_concurrent_copies),
            (
                "max_concurrent_requests_per_key",
                limits.max_concurrent_requests_per_key.unwrap_or(1),
            ),
            (
                "max_concurrent_requests_per_client",
                limits.max_concurrent_requests_per_client.unwrap_or(1),
            ),
        ] {
            if value == 0 {
                err(
                    &mut errors,
                    format!("limits.{name}"),
                    "must be at least 1".into(),
                );
            }
        }
        let admin_listen = match raw.admin_listen.as_deref() {
            None => None,
            Some(a) => match a.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    err(
                        &mut errors,
                        "admin_listen".into(),
                        format!("`{a}` is not an address:port"),
                    );
                    None
                }
            },
        };
        if let Some(t) = &raw.tls {
            for (field, path) in [("tls.cert", &t.cert), ("tls.key", &t.key)] {
                if !std::path::Path::new(path).is_file() {
                    err(
                        &mut errors,
                        field.into(),
                        format!("`{path}` is not a readable file"),
                    );
                }
            }
        }

        let mut virtual_host_suffixes = Vec::new();
        for (i, suffix) in raw.virtual_host_suffixes.iter().enumerate() {
            let s = suffix.trim().trim_start_matches('.').to_ascii_lowercase();
            if s.is_empty() || s.contains(['/', ':', ' ']) {
                err(
                    &mut errors,
                    format!("virtual_host_suffixes[{i}]"),
                    "must be a host name without port or path".into(),
                );
            }
            virtual_host_suffixes.push(s);
        }
        let mut trusted_proxies = Vec::new();
        for (i, t) in raw.trusted_proxies.iter().enumerate() {
            match crate::client_addr::Cidr::parse(t) {
                Ok(c) => trusted_proxies.push(c),
                Err(e) => err(&mut errors, format!("trusted_proxies[{i}]"), e),
            }
        }
        let proxy_protocol = match raw.proxy_protocol.as_deref() {
            None | Some("off") => false,
            Some("required") => {
                if trusted_proxies.is_empty() {
                    err(
                        &mut errors,
                        "proxy_protocol".into(),
                        "needs trusted_proxies: the balancers whose PROXY headers are believed"
                            .into(),
                    );
                }
                true
            }
            Some(other) => {
                err(
                    &mut errors,
                    "proxy_protocol".into(),
                    format!("`{other}`: `required` or `off`"),
                );
                false
            }
        };
        let cors = match raw.cors {
            Some(c) => {
                for (i, o) in c.allowed_origins.iter().enumerate() {
                    if o != "*" && !(o.starts_with("http://") || o.starts_with("https://")) {
                        err(
                            &mut errors,
                            format!("cors.allowed_origins[{i}]"),
                            "must be `*` or an http(s) origin".into(),
                        );
                    }
                }
                Cors {
                    allowed_origins: c.allowed_origins,
                    max_age_s: c.max_age_s,
                }
            }
            None => Cors::default(),
        };

        let owner = raw
            .owner
            .map(|o| Owner {
                id: o.id,
                display_name: o.display_name,
            })
            .unwrap_or_else(|| Owner {
                id: "immuta".into(),
                display_name: "Immuta".into(),
            });

        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Config {
            listen,
            base_path,
            bucket: raw.bucket,
            region: raw.region,
            owner,
            token_secret,
            previous_token_secrets,
            legacy_auth: raw.legacy_auth,
            threads: raw.threads.unwrap_or(2).max(1),
            virtual_host_suffixes,
            trusted_proxies,
            proxy_protocol,
            signature_base_path_tolerance: raw.signature_base_path_tolerance,
            cors,
            limits,
            admin_listen,
            audit_log: raw.audit_log,
            audit_overflow: raw.audit_overflow,
            tls: raw.tls,
            backends,
            data_sources,
            api_keys,
        })
    }
}

/// Reads `path` and validates it against the process environment.
/// Records one problem (validation goes on, so that every problem is reported at once).
fn err(errors: &mut Vec<ConfigError>, field: String, problem: String) {
    errors.push(ConfigError { field, problem })
}

/// `backends`: endpoints, regions, addressing, credentials, CA files.
fn validate_backends(
    raw: BTreeMap<String, RawBackend>,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, Backend> {
    let mut backends = BTreeMap::new();
    for (name, b) in raw {
        let field = format!("backends.{name}");
        let endpoint_text = expand(&format!("{field}.endpoint"), &b.endpoint, env, errors);
        let endpoint = match url::Url::parse(&endpoint_text) {
            Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host_str().is_some() => {
                if u.path() != "/" && !u.path().is_empty() {
                    err(
                        errors,
                        format!("{field}.endpoint"),
                        "must not have a path".into(),
                    );
                }
                if u.query().is_some() || !u.username().is_empty() || u.password().is_some() {
                    err(
                        errors,
                        format!("{field}.endpoint"),
                        "must not have a query or user info".into(),
                    );
                }
                u
            }
            _ => {
                err(
                    errors,
                    format!("{field}.endpoint"),
                    format!("`{endpoint_text}` is not an http(s) URL"),
                );
                continue;
            }
        };
        let tls = endpoint.scheme() == "https";
        let host = endpoint
            .host_str()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_string();
        let port = endpoint
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        let credentials = match (
            b.credentials.as_deref(),
            &b.access_key_id,
            &b.secret_access_key,
        ) {
            (Some("chain"), None, None) => BackendCredentials::Chain {
                profile: b.profile.clone(),
            },
            (Some("chain"), _, _) => {
                err(
                    errors,
                    format!("{field}.credentials"),
                    "`chain` takes no access_key_id/secret_access_key".into(),
                );
                BackendCredentials::Chain { profile: None }
            }
            (Some(other), _, _) => {
                err(
                    errors,
                    format!("{field}.credentials"),
                    format!("`{other}`: expected `chain`"),
                );
                BackendCredentials::Chain { profile: None }
            }
            (None, Some(ak), Some(sk)) => BackendCredentials::Static {
                access_key_id: Secret(expand(&format!("{field}.access_key_id"), ak, env, errors)),
                secret_access_key: Secret(expand(
                    &format!("{field}.secret_access_key"),
                    sk,
                    env,
                    errors,
                )),
            },
            (None, _, _) => {
                err(
                    errors,
                    field.clone(),
                    "needs access_key_id and secret_access_key, or `credentials: chain`".into(),
                );
                BackendCredentials::Chain { profile: None }
            }
        };
        if let Some(ca) = &b.ca_file {
            if !std::path::Path::new(ca).is_file() {
                err(
                    errors,
                    format!("{field}.ca_file"),
                    format!("`{ca}` is not a readable file"),
                );
            }
        }
        if b.profile.is_some() && b.credentials.is_none() {
            err(
                errors,
                format!("{field}.profile"),
                "only applies with `credentials: chain`".into(),
            );
        }
        backends.insert(
            name.clone(),
            Backend {
                name,
                endpoint,
                tls,
                host,
                port,
                region: b.region,
                addressing: b.addressing,
                credentials,
                ca_file: b.ca_file.clone(),
            },
        );
    }
    backends
}

/// `data_sources`: names (one addressable path segment), backends, buckets, prefixes.
fn validate_data_sources(
    raw: BTreeMap<String, RawDataSource>,
    base_path: &str,
    backends: &BTreeMap<String, Backend>,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, DataSource> {
    // A data source named like the base path's first segment (`s3p` under `/s3p`) would make
    // `/s3p/s3p/<key>` and `/s3p/<key>` differ only by the base path, which clients that sign
    // without it (and virtual-hosted SigV2) cannot tell apart.
    let base_segment = base_path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("")
        .to_string();
    let mut data_sources = BTreeMap::new();
    for (name, d) in raw {
        let field = format!("data_sources.{name}");
        if let Err(p) = check_segment_name(&name) {
            err(errors, field.clone(), format!("name {p}"));
        }
        if RESERVED_DATA_SOURCE_NAMES.contains(&name.as_str()) {
            err(
                errors,
                field.clone(),
                format!("`{name}` is reserved (it means every data source in grants)"),
            );
        }
        if !base_segment.is_empty() && name == base_segment {
            err(
                errors,
                field.clone(),
                format!("must not be named like the base path segment `{base_segment}`"),
            );
        }
        if !backends.contains_key(&d.backend) {
            err(
                errors,
                format!("{field}.backend"),
                format!("unknown backend `{}`", d.backend),
            );
        }
        if let Err(p) = check_bucket_name(&d.bucket) {
            err(errors, format!("{field}.bucket"), p);
        }
        let mut prefix = d.prefix;
        if prefix.starts_with('/') {
            err(
                errors,
                format!("{field}.prefix"),
                "must not start with `/`".into(),
            );
        }
        if prefix.split('/').any(|s| s == "." || s == "..") {
            err(
                errors,
                format!("{field}.prefix"),
                "must not contain `.` or `..` segments".into(),
            );
        }
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        data_sources.insert(
            name.clone(),
            DataSource {
                name,
                backend: d.backend,
                bucket: d.bucket,
                prefix,
                writable: d.writable,
            },
        );
    }
    // A write into a data source whose objects are also another's would land in the other one (which
    // its readers see, or whose writers did not expect it): a writable data source must overlap none.
    // Endpoints are not compared: two spellings of one store (a region's host name and the global one, a
    // name and its address) must not hide an overlap, so the same bucket name counts whatever the backend.
    for a in data_sources.values().filter(|d| d.writable) {
        for b in data_sources.values() {
            if a.name != b.name
                && a.bucket == b.bucket
                && (a.prefix.starts_with(&b.prefix) || b.prefix.starts_with(&a.prefix))
            {
                err(
                    errors,
                    format!("data_sources.{}.writable", a.name),
                    format!(
                        "a writable data source must not overlap another: its bucket and prefix \
                         overlap data source `{}` (the same bucket name on any backend counts)",
                        b.name
                    ),
                );
            }
        }
    }
    data_sources
}

/// `api_keys`: ids, secrets, names, entitlements (to configured data sources), expiry.
fn validate_api_keys(
    raw: Vec<RawApiKey>,
    data_sources: &BTreeMap<String, DataSource>,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) -> Vec<ApiKey> {
    let mut api_keys = Vec::new();
    let mut seen_ids = BTreeSet::new();
    for (i, k) in raw.into_iter().enumerate() {
        let field = format!("api_keys[{i}]");
        let id = expand(&format!("{field}.id"), &k.id, env, errors);
        if id.is_empty() || id.contains([':', ' ', '/']) {
            err(
                errors,
                format!("{field}.id"),
                "must be non-empty without `:`, `/` or spaces".into(),
            );
        }
        if !seen_ids.insert(id.clone()) {
            err(
                errors,
                format!("{field}.id"),
                format!("duplicate API key (name `{}`)", k.name),
            );
        }
        let mut secrets: Vec<Secret> = Vec::new();
        if let Some(s) = k.secret {
            secrets.push(Secret(expand(&format!("{field}.secret"), &s, env, errors)));
        }
        for (j, s) in k.secrets.iter().enumerate() {
            secrets.push(Secret(expand(
                &format!("{field}.secrets[{j}]"),
                s,
                env,
                errors,
            )));
        }
        // A key that signs must not also be a bearer credential: its id travels in clear in every
        // signed request and presigned URL, so the legacy header would turn a shared presigned URL
        // into permanent access to everything the key may read.
        let legacy_header = match k.legacy_header {
            Some(true) if !secrets.is_empty() => {
                err(
                    errors,
                    format!("{field}.legacy_header"),
                    "a key with a secret cannot accept the legacy header (its id is public in every \
                     signature and presigned URL); give legacy clients a separate key without a secret"
                        .into(),
                );
                false
            }
            Some(v) => v,
            None => secrets.is_empty(),
        };
        if secrets.len() > 2 {
            err(
                errors,
                format!("{field}.secrets"),
                "at most two secrets (the current one and the next)".into(),
            );
        }
        if secrets.iter().any(|s| s.0.is_empty()) {
            err(
                errors,
                format!("{field}.secrets"),
                "a secret must not be empty".into(),
            );
        }
        let data_sources_ent = validate_grants(
            k.data_sources,
            &format!("{field}.data_sources"),
            data_sources,
            errors,
        );
        if k.name.trim().is_empty() {
            err(errors, format!("{field}.name"), "must not be empty".into());
        }
        api_keys.push(ApiKey {
            id: Secret(id),
            secrets,
            name: k.name,
            legacy_header,
            enabled: k.enabled,
            expires_at: k.expires_at,
            data_sources: data_sources_ent,
            in_flight: Default::default(),
        });
    }
    api_keys
}

/// One key's `data_sources`: `all`, a list (read), or a map of grants (`"*"` and names to `read` or
/// `write`). A write grant needs a writable data source; `"*": write` grants write on the writable ones.
fn validate_grants(
    raw: RawEntitlement,
    field: &str,
    data_sources: &BTreeMap<String, DataSource>,
    errors: &mut Vec<ConfigError>,
) -> Entitlement {
    let mut ent = Entitlement::default();
    let known = |ds: &str, errors: &mut Vec<ConfigError>| {
        let ok = data_sources.contains_key(ds);
        if !ok {
            err(errors, field.into(), format!("unknown data source `{ds}`"));
        }
        ok
    };
    match raw {
        RawEntitlement::Word(w) if w == "all" || w == "*" => ent.every = Some(Access::Read),
        RawEntitlement::Word(w) => err(
            errors,
            field.into(),
            format!("`{w}`: expected `all`, a list or a map of grants"),
        ),
        RawEntitlement::List(list) => {
            for ds in list {
                if known(&ds, errors) {
                    ent.named.insert(ds, Access::Read);
                }
            }
        }
        RawEntitlement::Map(map) => {
            for (ds, access) in map {
                let access = match access.as_str() {
                    "read" => Access::Read,
                    "write" => Access::Write,
                    other => {
                        err(
                            errors,
                            format!("{field}.{ds}"),
                            format!("`{other}`: expected `read` or `write`"),
                        );
                        continue;
                    }
                };
                if ds == "*" || ds == "all" {
                    ent.every = Some(access);
                    continue;
                }
                if !known(&ds, errors) {
                    continue;
                }
                if access == Access::Write && !data_sources[&ds].writable {
                    err(
                        errors,
                        format!("{field}.{ds}"),
                        format!(
                            "write granted on data source `{ds}`, which is not `writable: true`"
                        ),
                    );
                }
                ent.named.insert(ds, access);
            }
        }
    }
    ent
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_source_names_the_namespace_could_not_read_are_refused() {
        // Every name refused here is one `namespace::parse_virtual_key` refuses in a path.
        let table = [
            ("sales", true),
            ("a..b", true),
            ("...", true),
            (".hidden", true),
            ("a;b", true),
            (".", false),
            ("..", false),
            ("..;x", false),
            (".;x", false),
            ("a\\..", false),
            ("..\\a", false),
            ("a/b", false),
            ("", false),
        ];
        for (name, ok) in table {
            assert_eq!(check_segment_name(name).is_ok(), ok, "{name:?}");
            let readable = crate::namespace::parse_virtual_key(&format!("{name}/k")).is_ok();
            if ok {
                assert!(readable, "{name:?} accepted but unreadable");
            }
        }
    }

    #[test]
    fn grants_and_writable_data_sources_are_checked() {
        let base = r#"
token_secret: "0123456789abcdef0123456789abcdef"
backends:
  s3: { endpoint: "http://127.0.0.1:9000", access_key_id: a, secret_access_key: b }
  same-place: { endpoint: "http://127.0.0.1:9000", access_key_id: c, secret_access_key: d }
  other: { endpoint: "http://127.0.0.1:9001", access_key_id: a, secret_access_key: b }
data_sources:
  sales: { backend: s3, bucket: sales }
  sandbox: { backend: s3, bucket: lake, prefix: sandbox/, writable: true }
  scratch: { backend: other, bucket: lake, prefix: scratch/, writable: true }
"#;
        let problems = |rest: &str| -> Vec<String> {
            match Config::from_yaml_str(&format!("{base}{rest}"), &|_| None) {
                Ok(_) => Vec::new(),
                Err(errs) => errs
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.problem))
                    .collect(),
            }
        };
        // Accepted: the list and `all` mean read; the map grants read or write; `*` any data source.
        for ok in [
            "api_keys:\n  - { id: k, name: K, data_sources: [sales, sandbox] }\n",
            "api_keys:\n  - { id: k, name: K, data_sources: all }\n",
            "api_keys:\n  - { id: k, name: K, data_sources: { sales: read, sandbox: write } }\n",
            "api_keys:\n  - { id: k, name: K, data_sources: { \"*\": write } }\n",
        ] {
            assert_eq!(problems(ok), Vec::<String>::new(), "{ok}");
        }
        let c = Config::from_yaml_str(
            &format!("{base}api_keys:\n  - {{ id: k, name: K, data_sources: {{ \"*\": read, sandbox: write }} }}\n"),
            &|_| None,
        )
        .unwrap();
        let ent = &c.api_keys[0].data_sources;
        assert_eq!(ent.access("sales"), Some(Access::Read));
        assert_eq!(ent.access("sandbox"), Some(Access::Write));
        assert!(c.data_sources["sandbox"].writable && !c.data_sources["sales"].writable);
        // Refused, each naming its field.
        #[rustfmt::skip]
        let refused = [
            ("api_keys:\n  - { id: k, name: K, data_sources: { sales: write } }\n",
             "api_keys[0].data_sources.sales: write granted on data source `sales`, which is not `writable: true`"),
            ("api_keys:\n  - { id: k, name: K, data_sources: { sandbox: admin } }\n",
             "api_keys[0].data_sources.sandbox: `admin`: expected `read` or `write`"),
            ("api_keys:\n  - { id: k, name: K, data_sources: { nope: read } }\n",
             "api_keys[0].data_sources: unknown data source `nope`"),
            ("api_keys:\n  - { id: k, name: K, data_sources: everything }\n",
             "api_keys[0].data_sources: `everything`: expected `all`, a list or a map of grants"),
            // A writable data source inside another (same bucket on the same endpoint).
            ("  whole-lake: { backend: same-place, bucket: lake }\napi_keys: []\n",
             "data_sources.sandbox.writable: a writable data source must not overlap another: its bucket and prefix overlap data source `whole-lake` (the same bucket name on any backend counts)"),
            // The same bucket name through another backend (another spelling of one store, maybe).
            ("  elsewhere: { backend: other, bucket: lake, prefix: sandbox/deep/ }\napi_keys: []\n",
             "data_sources.sandbox.writable: a writable data source must not overlap another: its bucket and prefix overlap data source `elsewhere` (the same bucket name on any backend counts)"),
            ("  all: { backend: s3, bucket: other-bucket }\napi_keys: []\n",
             "data_sources.all: `all` is reserved (it means every data source in grants)"),
        ];
        for (rest, want) in refused {
            let got = problems(rest);
            assert!(got.iter().any(|p| p == want), "{rest}\n{got:#?}");
        }
    }

    #[test]
    fn nested_data_sources_are_found() {
        let yaml = r#"
listen: 127.0.0.1:9000
token_secret: "0123456789abcdef0123456789abcdef"
backends:
  s3: { endpoint: "http://127.0.0.1:9000", region: us-east-1, access_key_id: a, secret_access_key: b }
  other: { endpoint: "http://127.0.0.1:9001", region: us-east-1, access_key_id: a, secret_access_key: b }
data_sources:
  warehouse: { backend: s3, bucket: whouse }
  hr: { backend: s3, bucket: whouse, prefix: hr/ }
  hr2024: { backend: s3, bucket: whouse, prefix: hr/2024 }
  hrx: { backend: s3, bucket: whouse, prefix: hrx/ }
  elsewhere: { backend: other, bucket: whouse, prefix: hr/ }
  sales: { backend: s3, bucket: sales }
api_keys:
  - { id: k, name: K, data_sources: all }
"#;
        let c = Config::from_yaml_str(yaml, &|_| None).unwrap();
        let mut got = c.nested_data_sources();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("hr", "hr2024"),
                ("warehouse", "hr"),
                ("warehouse", "hr2024"),
                ("warehouse", "hrx"),
            ]
        );
    }

    const GOOD: &str = r#"
listen: 127.0.0.1:9000
base_path: /s3p/
token_secret: ${TOKEN}
backends:
  garage:
    endpoint: http://127.0.0.1:3900
    region: garage
    access_key_id: ${AK}
    secret_access_key: ${SK}
data_sources:
  sales: { backend: garage, bucket: bucket-one }
  data: { backend: garage, bucket: bucket-two, prefix: data }
api_keys:
  - id: alice
    secret: alice-secret
    name: Alice
    data_sources: all
  - id: bob
    name: Bob
    data_sources: [sales]
"#;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("0123456789abcdef0123".into()),
            "AK" => Some("GKexample".into()),
            "SK" => Some("supersecretvalue".into()),
            _ => None,
        }
    }

    #[test]
    fn parses_and_normalises() {
        let c = Config::from_yaml_str(GOOD, &env).unwrap();
        assert_eq!(c.base_path, "/s3p");
        assert_eq!(c.bucket, "immuta");
        assert_eq!(c.region, "us-east-1");
        assert_eq!(
            c.data_sources["data"].prefix, "data/",
            "a prefix always ends at a `/` boundary"
        );
        assert_eq!(c.data_sources["sales"].prefix, "");
        assert_eq!(c.backends["garage"].port, 3900);
        assert_eq!(
            c.backends["garage"].credentials,
            BackendCredentials::Static {
                access_key_id: Secret::new("GKexample"),
                secret_access_key: Secret::new("supersecretvalue")
            }
        );
        assert!(c.api_keys[1].data_sources.allows("sales"));
        assert!(!c.api_keys[1].data_sources.allows("data"));
        assert!(c.api_keys[0].data_sources.allows("anything"));
        assert!(
            !c.api_keys[0].legacy_header,
            "a key with a secret refuses the legacy header by default"
        );
        assert!(
            c.api_keys[1].legacy_header,
            "a key without a secret accepts it by default, as Immuta does"
        );
    }

    #[test]
    fn a_key_with_a_secret_cannot_be_a_bearer_credential() {
        let text = GOOD.replacen(
            "    secret: alice-secret\n",
            "    secret: alice-secret\n    legacy_header: true\n",
            1,
        );
        assert_ne!(text, GOOD);
        let errs = Config::from_yaml_str(&text, &env).unwrap_err();
        assert!(
            errs.iter().any(|e| e.field == "api_keys[0].legacy_header"),
            "{errs:?}"
        );
        let off = GOOD.replacen(
            "    name: Bob\n",
            "    name: Bob\n    legacy_header: false\n",
            1,
        );
        assert!(!Config::from_yaml_str(&off, &env).unwrap().api_keys[1].legacy_header);
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let c = Config::from_yaml_str(GOOD, &env).unwrap();
        let dbg = format!("{c:?}");
        for secret in [
            "supersecretvalue",
            "alice-secret",
            "0123456789abcdef0123",
            "GKexample",
        ] {
            assert!(!dbg.contains(secret), "{secret} leaked into Debug output");
        }
    }

    #[test]
    fn each_problem_names_its_field() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "backend: garage, bucket: bucket-one",
                "backend: nope, bucket: bucket-one",
                "data_sources.sales.backend",
            ),
            (
                "endpoint: http://127.0.0.1:3900",
                "endpoint: ftp://x",
                "backends.garage.endpoint",
            ),
            (
                "endpoint: http://127.0.0.1:3900",
                "endpoint: http://127.0.0.1:3900/path",
                "backends.garage.endpoint",
            ),
            (
                "secret_access_key: ${SK}",
                "secret_access_key: ${MISSING_VAR}",
                "backends.garage.secret_access_key",
            ),
            (
                "data_sources: [sales]",
                "data_sources: [ghost]",
                "api_keys[1].data_sources",
            ),
            ("id: bob", "id: alice", "api_keys[1].id"),
            (
                "bucket: bucket-two, prefix: data",
                "bucket: Bad_Bucket, prefix: data",
                "data_sources.data.bucket",
            ),
            (
                "prefix: data }",
                "prefix: ../data }",
                "data_sources.data.prefix",
            ),
            ("listen: 127.0.0.1:9000", "listen: nowhere", "listen"),
            (
                "token_secret: ${TOKEN}",
                "token_secret: short",
                "token_secret",
            ),
            ("base_path: /s3p/", "base_path: s3p", "base_path"),
            // PROXY headers are believed only from trusted proxies: none listed is a mistake.
            (
                "base_path: /s3p/",
                "base_path: /s3p/\nproxy_protocol: required",
                "proxy_protocol",
            ),
            (
                "base_path: /s3p/",
                "base_path: /s3p/\nproxy_protocol: maybe\ntrusted_proxies: [10.0.0.0/8]",
                "proxy_protocol",
            ),
            (
                "base_path: /s3p/",
                "base_path: /s3p/\ntrusted_proxies: [10.0.0.0/33]",
                "trusted_proxies[0]",
            ),
            (
                "base_path: /s3p/",
                "base_path: /s3p/\nprevious_token_secrets: [short]",
                "previous_token_secrets[0]",
            ),
            // A password in the endpoint would show wherever the URL does.
            (
                "endpoint: http://127.0.0.1:3900",
                "endpoint: http://:pw@127.0.0.1:3900",
                "backends.garage.endpoint",
            ),
        ];
        for (from, to, field) in cases {
            assert!(GOOD.contains(from), "test case text `{from}` not found");
            let text = GOOD.replacen(from, to, 1);
            let errs = Config::from_yaml_str(&text, &env).expect_err(to);
            assert!(
                errs.iter().any(|e| e.field == *field),
                "{to}: expected an error on {field}, got {errs:?}"
            );
            let shown: String = errs.iter().map(|e| e.to_string()).collect();
            assert!(
                !shown.contains("supersecretvalue"),
                "error text leaked a secret"
            );
        }
    }

    #[test]
    fn backend_credentials_inline_or_from_the_chain() {
        let inline = "    access_key_id: ${AK}\n    secret_access_key: ${SK}\n";
        let chain = GOOD.replacen(inline, "    credentials: chain\n    profile: prod\n", 1);
        let c = Config::from_yaml_str(&chain, &env).unwrap();
        assert_eq!(
            c.backends["garage"].credentials,
            BackendCredentials::Chain {
                profile: Some("prod".into())
            }
        );
        for (bad, field) in [
            (
                "    credentials: chain\n    access_key_id: x\n",
                "backends.garage.credentials",
            ),
            ("    credentials: magic\n", "backends.garage.credentials"),
            ("    access_key_id: x\n", "backends.garage"),
            (
                "    access_key_id: x\n    secret_access_key: y\n    profile: p\n",
                "backends.garage.profile",
            ),
        ] {
            let text = GOOD.replacen(inline, bad, 1);
            let errs = Config::from_yaml_str(&text, &env).expect_err(bad);
            assert!(errs.iter().any(|e| e.field == field), "{bad}: {errs:?}");
        }
    }

    #[test]
    fn data_source_names_are_one_segment() {
        for bad in ["\"a/b\"", "\".\"", "\"..\"", "\"\"", "s3p"] {
            let text = GOOD.replacen("  sales:", &format!("  {bad}:"), 1);
            let errs = Config::from_yaml_str(&text, &env).expect_err(bad);
            assert!(
                errs.iter().any(|e| e.field.starts_with("data_sources.")),
                "{bad}: {errs:?}"
            );
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let text = GOOD.replacen("listen:", "lisen: x\nlisten:", 1);
        let errs = Config::from_yaml_str(&text, &env).unwrap_err();
        assert!(errs[0].problem.contains("lisen"), "{errs:?}");
    }
}
