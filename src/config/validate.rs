//! Validation: the raw YAML shape (`raw.rs`) turned into the types the rest of s3p uses (`mod.rs`).
//! `${ENV}` references are expanded here, in the fields that may hold them. Every problem names its
//! field (`data_sources.sales.backend`, `api_keys[1].id`) and validation goes on after one, so that a
//! configuration's problems are all reported at once.

use super::raw::{
    RawApiKey, RawBackend, RawConfig, RawDataSource, RawEntitlement, RawEntitlements, RawSts,
};
use super::{
    Access, ApiKey, Backend, BackendCredentials, ClaimRule, Config, ConfigError, Cors, DataSource,
    Entitlement, EntitlementService, Entitlements, Issuer, JwksSource, Owner, Secret, Sts,
    RESERVED_DATA_SOURCE_NAMES,
};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// The whole configuration, every setting checked; `backends`, `data_sources` and `api_keys` each by a
/// function of its own below. Goes on past a problem, so that every problem is reported at once.
pub(super) fn config(
    raw: RawConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Vec<ConfigError>> {
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

    // The service's names of the data sources (`immuta_name`), before the data sources are validated.
    let names: BTreeMap<String, String> = raw
        .data_sources
        .iter()
        .filter_map(|(ds, d)| d.immuta_name.clone().map(|n| (ds.clone(), n)))
        .collect();
    let data_sources = validate_data_sources(raw.data_sources, &base_path, &backends, &mut errors);

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
                    "needs trusted_proxies: the balancers whose PROXY headers are believed".into(),
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

    let entitlements =
        validate_entitlements(raw.entitlements, &names, &data_sources, env, &mut errors);
    let sts = raw
        .sts
        .map(|sts| validate_sts(sts, &base_path, &raw.bucket, &data_sources, &mut errors));
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
        entitlements,
        sts,
        tls: raw.tls,
        backends,
        data_sources,
        api_keys,
    })
}

/// `sts:`: where it is served (never an S3 path), the session durations, the roles and the OIDC issuers.
fn validate_sts(
    raw: RawSts,
    base_path: &str,
    bucket: &str,
    data_sources: &BTreeMap<String, DataSource>,
    errors: &mut Vec<ConfigError>,
) -> Sts {
    let path = raw.path.trim_end_matches('/').to_string();
    let first_segment = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let s3_path = if base_path.is_empty() {
        // The S3 API at the root: `/<bucket>` is the virtual bucket.
        first_segment == bucket
    } else {
        path == base_path || path.starts_with(&format!("{base_path}/"))
    };
    if !path.starts_with('/') || path.len() < 2 || path.contains(['?', '#', '%']) || s3_path {
        err(
            errors,
            "sts.path".into(),
            format!("`{}`: must start with `/`, name a path of its own, and be outside the S3 API (base_path `{base_path}`, bucket `{bucket}`)", raw.path),
        );
    }
    let (min, max, default) = (
        raw.min_duration_s,
        raw.max_duration_s,
        raw.default_duration_s,
    );
    if min == 0 || min > default || default > max || max > 43_200 {
        err(
            errors,
            "sts".into(),
            format!("durations must satisfy 0 < min_duration_s ({min}) <= default_duration_s ({default}) <= max_duration_s ({max}) <= 43200"),
        );
    }
    let roles = raw
        .roles
        .into_iter()
        .map(|(name, role)| {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
            {
                err(
                    errors,
                    format!("sts.roles.{name}"),
                    "a role name is letters, digits and +=,.@_-".into(),
                );
            }
            let grants = validate_grants(
                role.data_sources,
                &format!("sts.roles.{name}.data_sources"),
                data_sources,
                errors,
            );
            (name, grants)
        })
        .collect();
    let mut issuers = Vec::new();
    for (i, raw) in raw.web_identity.into_iter().enumerate() {
        let field = format!("sts.web_identity[{i}]");
        if url::Url::parse(&raw.issuer).is_err() {
            err(
                errors,
                format!("{field}.issuer"),
                format!("`{}` is not a URL", raw.issuer),
            );
        }
        if raw.audiences.is_empty() || raw.audiences.iter().any(String::is_empty) {
            err(
                errors,
                format!("{field}.audiences"),
                "at least one audience (the `aud` tokens must name)".into(),
            );
        }
        let jwks = match (raw.jwks_file, raw.jwks_url) {
            (Some(file), None) => JwksSource::File(file),
            (None, Some(url)) => {
                if !(url.starts_with("https://") || url.starts_with("http://"))
                    || url::Url::parse(&url).is_err()
                {
                    err(
                        errors,
                        format!("{field}.jwks_url"),
                        format!("`{url}` is not an http(s) URL"),
                    );
                }
                if raw.jwks_refresh_s == 0 {
                    err(
                        errors,
                        format!("{field}.jwks_refresh_s"),
                        "must be at least 1".into(),
                    );
                }
                JwksSource::Url {
                    url,
                    refresh_s: raw.jwks_refresh_s,
                    ca_file: raw.ca_file,
                }
            }
            _ => {
                err(
                    errors,
                    field.clone(),
                    "exactly one of jwks_file and jwks_url".into(),
                );
                JwksSource::File(String::new())
            }
        };
        if raw.rules.is_empty() {
            err(
                errors,
                format!("{field}.rules"),
                "at least one rule (a token that matches none gets nothing)".into(),
            );
        }
        let rules = raw
            .rules
            .into_iter()
            .enumerate()
            .map(|(j, rule)| {
                let rule_field = format!("{field}.rules[{j}]");
                let value = match (rule.equals, rule.contains) {
                    (Some(v), None) | (None, Some(v)) => v,
                    _ => {
                        err(
                            errors,
                            rule_field.clone(),
                            "exactly one of equals and contains".into(),
                        );
                        String::new()
                    }
                };
                if rule.claim.is_empty() {
                    err(
                        errors,
                        format!("{rule_field}.claim"),
                        "names a claim".into(),
                    );
                }
                let grants = validate_grants(
                    rule.data_sources,
                    &format!("{rule_field}.data_sources"),
                    data_sources,
                    errors,
                );
                ClaimRule {
                    claim: rule.claim,
                    value,
                    grants,
                }
            })
            .collect();
        if issuers.iter().any(|i: &Issuer| i.issuer == raw.issuer) {
            err(
                errors,
                format!("{field}.issuer"),
                format!("`{}` is listed twice", raw.issuer),
            );
        }
        issuers.push(Issuer {
            issuer: raw.issuer,
            audiences: raw.audiences,
            jwks,
            name_claim: raw.name_claim,
            rules,
        });
    }
    Sts {
        path,
        min_duration_s: min,
        max_duration_s: max,
        default_duration_s: default,
        roles,
        issuers,
    }
}

/// `entitlements:`: the source, the service's settings, the cache; the data sources' names at the
/// service (`immuta_name`, given as `names`).
fn validate_entitlements(
    raw: Option<RawEntitlements>,
    names: &BTreeMap<String, String>,
    data_sources: &BTreeMap<String, DataSource>,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) -> Entitlements {
    // Every data source is known to the service under its own name unless it says otherwise.
    let names: BTreeMap<String, String> = data_sources
        .keys()
        .map(|ds| {
            (
                ds.clone(),
                names.get(ds).cloned().unwrap_or_else(|| ds.clone()),
            )
        })
        .collect();
    let Some(raw) = raw else {
        return Entitlements { http: None, names };
    };
    let http = match (raw.source.as_str(), raw.http) {
        ("file", None) => None,
        ("file", Some(_)) => {
            err(
                errors,
                "entitlements.http".into(),
                "is only read with `source: http`".into(),
            );
            None
        }
        ("http", None) => {
            err(
                errors,
                "entitlements.http".into(),
                "is required with `source: http`".into(),
            );
            None
        }
        ("http", Some(h)) => {
            let endpoint = expand("entitlements.http.endpoint", &h.endpoint, env, errors);
            let endpoint = endpoint.trim_end_matches('/').to_string();
            let scheme_ok = endpoint.starts_with("http://") || endpoint.starts_with("https://");
            let after_scheme = endpoint.split_once("://").map_or("", |(_, rest)| rest);
            if !scheme_ok || after_scheme.is_empty() || after_scheme.contains('/') {
                err(
                    errors,
                    "entitlements.http.endpoint".into(),
                    format!("`{endpoint}` must be http(s)://host[:port] without a path"),
                );
            }
            if let Some(ca) = &h.ca_file {
                if !std::path::Path::new(ca).is_file() {
                    err(
                        errors,
                        "entitlements.http.ca_file".into(),
                        format!("`{ca}` is not a readable file"),
                    );
                }
            }
            for (field, value) in [
                ("timeout_ms", h.timeout_ms as usize),
                ("page_size", h.page_size),
            ] {
                if value == 0 {
                    err(
                        errors,
                        format!("entitlements.http.{field}"),
                        "must be at least 1".into(),
                    );
                }
            }
            let service_token = h
                .service_token
                .as_deref()
                .map(|t| Secret(expand("entitlements.http.service_token", t, env, errors)));
            Some(EntitlementService {
                endpoint,
                auth: h.auth,
                timeout_ms: h.timeout_ms,
                ca_file: h.ca_file,
                service_token,
                page_size: h.page_size,
                cache: raw.cache,
            })
        }
        (other, _) => {
            err(
                errors,
                "entitlements.source".into(),
                format!("`{other}` is not a source (file or http)"),
            );
            None
        }
    };
    if raw.cache.max_entries == 0 {
        err(
            errors,
            "entitlements.cache.max_entries".into(),
            "must be at least 1".into(),
        );
    }
    Entitlements { http, names }
}

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
    // Ids must be unique (a request names its key by id); names, only shown, need not be.
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
            session: None,
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
pub(super) fn check_segment_name(name: &str) -> Result<(), String> {
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
