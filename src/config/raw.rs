//! The YAML as serde reads it: field names, which fields may be left out, and what they default to.
//! Nothing is checked here beyond the shape (unknown fields are refused, so that a misspelt setting is an
//! error and not a silent default); `validate.rs` turns these into the types of `mod.rs`.
//!
//! Values stay as written (strings for addresses, URLs, CIDRs, `${ENV}` references) so that validation
//! can name the field of each problem, and report every problem at once instead of serde's first.

use super::{AddressingStyle, AuditOverflow, CachePolicy, Limits, ServiceAuth, TlsListener};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default = "default_listen")]
    pub(super) listen: String,
    #[serde(default = "default_base_path")]
    pub(super) base_path: String,
    #[serde(default = "default_bucket")]
    pub(super) bucket: String,
    #[serde(default = "default_region")]
    pub(super) region: String,
    #[serde(default)]
    pub(super) owner: Option<RawOwner>,
    pub(super) token_secret: Option<String>,
    #[serde(default)]
    pub(super) previous_token_secrets: Vec<String>,
    #[serde(default = "yes")]
    pub(super) legacy_auth: bool,
    #[serde(default)]
    pub(super) threads: Option<usize>,
    #[serde(default)]
    pub(super) virtual_host_suffixes: Vec<String>,
    #[serde(default)]
    pub(super) trusted_proxies: Vec<String>,
    #[serde(default)]
    pub(super) proxy_protocol: Option<String>,
    #[serde(default)]
    pub(super) signature_base_path_tolerance: bool,
    #[serde(default)]
    pub(super) cors: Option<RawCors>,
    #[serde(default)]
    pub(super) limits: Limits,
    #[serde(default)]
    pub(super) admin_listen: Option<String>,
    #[serde(default = "default_audit_log")]
    pub(super) audit_log: String,
    #[serde(default)]
    pub(super) audit_overflow: AuditOverflow,
    #[serde(default)]
    pub(super) entitlements: Option<RawEntitlements>,
    #[serde(default)]
    pub(super) sts: Option<RawSts>,
    #[serde(default)]
    pub(super) tls: Option<TlsListener>,
    #[serde(default)]
    pub(super) backends: BTreeMap<String, RawBackend>,
    #[serde(default)]
    pub(super) data_sources: BTreeMap<String, RawDataSource>,
    #[serde(default)]
    pub(super) api_keys: Vec<RawApiKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOwner {
    pub(super) id: String,
    pub(super) display_name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCors {
    #[serde(default)]
    pub(super) allowed_origins: Vec<String>,
    #[serde(default = "default_cors_max_age")]
    pub(super) max_age_s: u64,
}

fn default_cors_max_age() -> u64 {
    3600
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub(super) endpoint: String,
    #[serde(default = "default_region")]
    pub(super) region: String,
    #[serde(default)]
    pub(super) addressing: AddressingStyle,
    #[serde(default)]
    pub(super) access_key_id: Option<String>,
    #[serde(default)]
    pub(super) secret_access_key: Option<String>,
    /// `chain` to use the standard AWS credential chain instead of inline keys.
    #[serde(default)]
    pub(super) credentials: Option<String>,
    #[serde(default)]
    pub(super) profile: Option<String>,
    #[serde(default)]
    pub(super) ca_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDataSource {
    pub(super) backend: String,
    pub(super) bucket: String,
    #[serde(default)]
    pub(super) prefix: String,
    #[serde(default)]
    pub(super) writable: bool,
    /// The governance service's name for this data source.
    #[serde(default)]
    pub(super) immuta_name: Option<String>,
}

/// `entitlements:`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEntitlements {
    #[serde(default = "default_source")]
    pub(super) source: String,
    #[serde(default)]
    pub(super) http: Option<RawEntitlementService>,
    #[serde(default)]
    pub(super) cache: CachePolicy,
}

fn default_source() -> String {
    "file".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEntitlementService {
    pub(super) endpoint: String,
    #[serde(default)]
    pub(super) auth: ServiceAuth,
    #[serde(default = "default_service_timeout_ms")]
    pub(super) timeout_ms: u64,
    #[serde(default)]
    pub(super) ca_file: Option<String>,
    #[serde(default)]
    pub(super) service_token: Option<String>,
    #[serde(default = "default_page_size")]
    pub(super) page_size: usize,
}

fn default_service_timeout_ms() -> u64 {
    2_000
}

fn default_page_size() -> usize {
    100
}

/// `sts:` (temporary credentials).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSts {
    #[serde(default = "default_sts_path")]
    pub(super) path: String,
    #[serde(default = "default_min_duration")]
    pub(super) min_duration_s: u64,
    #[serde(default = "default_max_duration")]
    pub(super) max_duration_s: u64,
    #[serde(default = "default_duration")]
    pub(super) default_duration_s: u64,
    #[serde(default)]
    pub(super) roles: BTreeMap<String, RawRole>,
    #[serde(default)]
    pub(super) web_identity: Vec<RawIssuer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRole {
    pub(super) data_sources: RawEntitlement,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIssuer {
    pub(super) issuer: String,
    #[serde(default)]
    pub(super) audiences: Vec<String>,
    #[serde(default)]
    pub(super) jwks_file: Option<String>,
    #[serde(default)]
    pub(super) jwks_url: Option<String>,
    #[serde(default = "default_jwks_refresh")]
    pub(super) jwks_refresh_s: u64,
    #[serde(default)]
    pub(super) ca_file: Option<String>,
    #[serde(default = "default_name_claim")]
    pub(super) name_claim: String,
    #[serde(default)]
    pub(super) rules: Vec<RawClaimRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClaimRule {
    pub(super) claim: String,
    #[serde(default)]
    pub(super) equals: Option<String>,
    #[serde(default)]
    pub(super) contains: Option<String>,
    pub(super) data_sources: RawEntitlement,
}

fn default_sts_path() -> String {
    "/sts".into()
}
fn default_min_duration() -> u64 {
    900
}
fn default_max_duration() -> u64 {
    43_200
}
fn default_duration() -> u64 {
    3_600
}
fn default_jwks_refresh() -> u64 {
    300
}
fn default_name_claim() -> String {
    "sub".into()
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawEntitlement {
    /// `all` (read on every data source).
    Word(String),
    /// Names of data sources the key may read.
    List(Vec<String>),
    /// `{"*": read, sandbox: write}`.
    Map(BTreeMap<String, String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApiKey {
    pub(super) id: String,
    #[serde(default)]
    pub(super) secret: Option<String>,
    #[serde(default)]
    pub(super) secrets: Vec<String>,
    pub(super) name: String,
    /// Defaults to allowed for keys without a secret (Immuta's keys), refused for keys with one.
    #[serde(default)]
    pub(super) legacy_header: Option<bool>,
    #[serde(default = "yes")]
    pub(super) enabled: bool,
    #[serde(default)]
    pub(super) expires_at: Option<u64>,
    pub(super) data_sources: RawEntitlement,
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

/// `limits:` is read straight into [`Limits`] (every field optional); these are its defaults.
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
