//! Keys and grants from the governance service, in process: the lookups over HTTP (their wire format is
//! `entitlements::immuta`, pure), the decision cache (`entitlements::cache`, pure), and single-flight, so
//! that 1,000 concurrent requests of one uncached key cause one lookup. Every lookup has a deadline;
//! a service that is down, slow or answers nonsense fails closed: the request is refused with 503
//! SlowDown (an expired *allow* may still serve within `stale_if_error_s`, never a deny).
//!
//! The sequence (README "Keys and grants from the governance service"): a request claims a credential
//! the configured `api_keys` do not know -> cache: fresh allow or deny, answered at once -> else one
//! lookup per credential at a time (the others wait for it, bounded) -> authenticate the API key (or,
//! for a signing access key id, first ask the service for its secret and API key) -> list its
//! subscriptions -> map them to s3p's data sources -> cache -> the decision, as for a configured key.

use super::metrics::Metrics;
use crate::config::{ApiKey, Config, EntitlementService, ServiceAuth};
use crate::entitlements::cache::{
    CachePolicy, Cached, DecisionCache, FlightId, FlightLimits, Flights, Join, KeyHash, Now,
};
use crate::entitlements::immuta::{self, AuthForm, Lookup, Paging, ServiceRequest};
use crate::entitlements::{display_name, Identity};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::oneshot;

/// What the service says about a credential, as a request uses it.
#[derive(Clone)]
pub enum Resolution {
    /// A key the service vouches for.
    Known(Arc<ApiKey>, Origin),
    /// Unknown or revoked: the request goes on and is refused as any unknown key is.
    Unknown(Origin),
    /// No answer could be had in time (the service down, slow, or answering nonsense; too many
    /// lookups at once): refuse with 503 SlowDown, never allow.
    Unavailable,
}

/// Where a decision came from (the audit line says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Cache,
    Service,
}

impl Origin {
    pub fn label(self) -> &'static str {
        match self {
            Origin::Cache => "service-cache",
            Origin::Service => "service",
        }
    }
}

/// A lookup's result, shared with the requests that waited for it: `Some(key)`, `None` (denied), or
/// `Err` (the service failed).
type Outcome = Result<Option<Arc<ApiKey>>, ()>;

type ServiceClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The source of one configuration of the service (replaced when its settings change on reload; kept,
/// cache and all, when they do not).
pub struct Source {
    settings: EntitlementService,
    names: BTreeMap<String, String>,
    client: ServiceClient,
    shared: Mutex<Shared>,
}

struct Shared {
    cache: DecisionCache,
    flights: Flights<oneshot::Sender<Outcome>>,
}

/// The run-time home of the source (in `server::Runtime`: it outlives reloads).
#[derive(Default)]
pub struct Entitlements {
    current: Mutex<Option<Arc<Source>>>,
}

impl Entitlements {
    /// The source for this configuration: `None` with `source: file`. A reload that changes how the
    /// service is reached (endpoint, auth form, CA, token, page size, timeout, names) starts a new source
    /// with an empty cache; one that changes only the cache's settings keeps the entries.
    pub fn source_for(&self, config: &Config) -> Result<Option<Arc<Source>>, String> {
        let Some(settings) = &config.entitlements.http else {
            *self.current.lock().unwrap() = None;
            return Ok(None);
        };
        let names = &config.entitlements.names;
        let mut current = self.current.lock().unwrap();
        if let Some(source) = current.as_ref() {
            let same = |a: &EntitlementService, b: &EntitlementService| {
                (
                    &a.endpoint,
                    a.auth,
                    &a.ca_file,
                    &a.service_token,
                    a.page_size,
                    a.timeout_ms,
                ) == (
                    &b.endpoint,
                    b.auth,
                    &b.ca_file,
                    &b.service_token,
                    b.page_size,
                    b.timeout_ms,
                )
            };
            if same(&source.settings, settings) && &source.names == names {
                if source.settings.cache != settings.cache {
                    let mut shared = source.shared.lock().unwrap();
                    shared
                        .cache
                        .set_policy(cache_policy(settings), Now::current());
                }
                return Ok(Some(source.clone()));
            }
        }
        let source = Arc::new(Source::new(settings, names)?);
        *current = Some(source.clone());
        Ok(Some(source))
    }
}

fn cache_policy(settings: &EntitlementService) -> CachePolicy {
    let c = &settings.cache;
    CachePolicy {
        allow_ttl: Duration::from_secs(c.allow_ttl_s),
        deny_ttl: Duration::from_secs(c.deny_ttl_s),
        stale_if_error: Duration::from_secs(c.stale_if_error_s),
        max_entries: c.max_entries,
    }
}

impl Source {
    fn new(
        settings: &EntitlementService,
        names: &BTreeMap<String, String>,
    ) -> Result<Source, String> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_millis(settings.timeout_ms)));
        let extra_ca = match &settings.ca_file {
            Some(path) => crate::backend::load_ca_certs(path)
                .map_err(|e| format!("entitlements.http.ca_file: {e}"))?,
            None => Vec::new(),
        };
        let tls = crate::backend::tls_client_config(&extra_ca, "entitlements.http")?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        let timeout = Duration::from_millis(settings.timeout_ms);
        Ok(Source {
            settings: settings.clone(),
            names: names.clone(),
            client,
            shared: Mutex::new(Shared {
                cache: DecisionCache::new(cache_policy(settings)),
                flights: Flights::new(FlightLimits {
                    // A lookup past its deadline is over; a little more lets its leader finish.
                    abandon_after: timeout + Duration::from_secs(1),
                    ..FlightLimits::default()
                }),
            }),
        })
    }

    /// What the service says about `credential` (the API key of the legacy header when `bearer`, else a
    /// signing access key id).
    pub async fn resolve(&self, credential: &str, bearer: bool, metrics: &Metrics) -> Resolution {
        let hash = if bearer {
            KeyHash::api_key(credential)
        } else {
            KeyHash::access_key_id(credential)
        };
        let (join, stale, receiver) = {
            let now = Now::current();
            let mut shared = self.shared.lock().unwrap();
            let stale = match shared.cache.get(&hash, now) {
                Cached::Fresh(key) => {
                    metrics.entitlement_cache(true);
                    return Resolution::Known(key, Origin::Cache);
                }
                Cached::Denied => {
                    metrics.entitlement_cache(true);
                    return Resolution::Unknown(Origin::Cache);
                }
                Cached::Stale(key) => Some(key),
                Cached::Missing => None,
            };
            metrics.entitlement_cache(false);
            let mut receiver = None;
            let join = shared.flights.join(hash, now.mono, || {
                let (tx, rx) = oneshot::channel();
                receiver = Some(rx);
                tx
            });
            (join, stale, receiver)
        };
        let outcome = match join {
            Join::Refused => return fall_back(stale),
            Join::Follow => {
                let Some(rx) = receiver else {
                    return fall_back(stale);
                };
                let deadline = Duration::from_millis(self.settings.timeout_ms) * 2;
                match tokio::time::timeout(deadline, rx).await {
                    Ok(Ok(outcome)) => outcome,
                    _ => Err(()),
                }
            }
            Join::Lead(id) => self.lead(hash, id, credential, bearer, metrics).await,
        };
        match outcome {
            Ok(Some(key)) => Resolution::Known(key, Origin::Service),
            Ok(None) => Resolution::Unknown(Origin::Service),
            Err(()) => fall_back(stale),
        }
    }

    /// Runs the lookup this request leads, caches it, and hands it to the requests that waited.
    async fn lead(
        &self,
        hash: KeyHash,
        id: FlightId,
        credential: &str,
        bearer: bool,
        metrics: &Metrics,
    ) -> Outcome {
        // Finishes the flight however this future ends (a cancelled request included): its waiters
        // are then dropped, and they fail closed rather than wait.
        struct Finish<'a> {
            source: &'a Source,
            hash: KeyHash,
            id: FlightId,
            done: bool,
        }
        impl Drop for Finish<'_> {
            fn drop(&mut self) {
                if !self.done {
                    let mut shared = self.source.shared.lock().unwrap();
                    shared.flights.finish(&self.hash, self.id);
                }
            }
        }
        let mut finish = Finish {
            source: self,
            hash,
            id,
            done: false,
        };
        let started = Instant::now();
        let deadline = Duration::from_millis(self.settings.timeout_ms);
        let looked_up = tokio::time::timeout(deadline, self.look_up(credential, bearer)).await;
        let mut expires = None;
        let outcome: Outcome = match looked_up {
            Ok(Ok(Lookup::Found(identity))) => {
                // The cache keeps it no longer than its earliest grant.
                expires = identity.expires_at;
                Ok(Some(identity.to_api_key(credential)))
            }
            Ok(Ok(Lookup::Denied)) => Ok(None),
            Ok(Err(problem)) => {
                log::warn!("the governance service failed a lookup: {problem}");
                Err(())
            }
            Err(_) => {
                log::warn!(
                    "the governance service did not answer a lookup within {} ms",
                    self.settings.timeout_ms
                );
                Err(())
            }
        };
        let mut shared = self.shared.lock().unwrap();
        finish.done = true;
        let waiters = shared.flights.finish(&hash, id);
        let now = Now::current();
        // A flight taken over (abandoned, then led again) is not cached: the newer lookup's result is.
        if waiters.is_some() {
            match &outcome {
                Ok(Some(key)) => {
                    shared.cache.insert_allow(hash, key.clone(), expires, now);
                }
                Ok(None) => {
                    shared.cache.insert_deny(hash, now);
                }
                Err(()) => {}
            }
        }
        let result = match &outcome {
            Ok(Some(_)) => "found",
            Ok(None) => "denied",
            Err(()) => "error",
        };
        metrics.entitlement_lookup(result, started.elapsed(), shared.cache.len());
        drop(shared);
        for waiter in waiters.into_iter().flatten() {
            let _ = waiter.send(outcome.clone());
        }
        outcome
    }

    /// The lookup itself: the identity the service gives the credential, or its deny.
    async fn look_up(&self, credential: &str, bearer: bool) -> Result<Lookup<Identity>, String> {
        let now = SystemTime::now();
        let (api_key, secrets, given_name) = if bearer {
            (credential.to_string(), Vec::new(), None)
        } else {
            // A signing access key id: its secret, and the API key whose subscriptions govern it.
            let Some(token) = &self.settings.service_token else {
                // Without s3p's own token no signing secret can be asked: such keys use the legacy
                // header (or temporary credentials).
                return Ok(Lookup::Denied);
            };
            let Some(service) = immuta::Authorization::bearer(token.expose()) else {
                return Err("the service token is not a valid credential".into());
            };
            let Some(request) = immuta::signing_secret_request(credential, &service) else {
                return Ok(Lookup::Denied);
            };
            let (status, body) = self.send(request).await?;
            match immuta::parse_signing_secret(status, &body).map_err(|e| e.to_string())? {
                Lookup::Denied => return Ok(Lookup::Denied),
                Lookup::Found(found) => (
                    found.api_key.expose().to_string(),
                    vec![found.secret],
                    found.name,
                ),
            }
        };
        let form = match self.settings.auth {
            ServiceAuth::Header => AuthForm::Header,
            ServiceAuth::Body => AuthForm::Body,
            ServiceAuth::Direct => AuthForm::Direct,
        };
        let authorization = match immuta::begin(form, &api_key) {
            immuta::Begin::Denied => return Ok(Lookup::Denied),
            immuta::Begin::Direct(a) => a,
            immuta::Begin::Authenticate(request) => {
                let (status, body) = self.send(request).await?;
                match immuta::parse_authenticate(status, &body).map_err(|e| e.to_string())? {
                    Lookup::Denied => return Ok(Lookup::Denied),
                    Lookup::Found(a) => a,
                }
            }
        };
        let page_size = u32::try_from(self.settings.page_size).unwrap_or(u32::MAX);
        let mut pager = immuta::Pager::new(page_size);
        let subscriptions = loop {
            let (status, body) = self.send(pager.request(&authorization)).await?;
            match pager.take(status, &body).map_err(|e| e.to_string())? {
                Paging::More => continue,
                Paging::Denied => return Ok(Lookup::Denied),
                Paging::Done(subs) => break subs,
            }
        };
        if subscriptions.truncated {
            log::warn!(
                "the governance service listed more subscriptions than s3p reads ({} pages): some grants are left out",
                immuta::MAX_PAGES
            );
        }
        let mapped = immuta::map_grants(&subscriptions.items, &self.names, now);
        let identity = Identity {
            name: display_name("immuta", credential, given_name.as_deref()),
            grants: mapped.grants,
            secrets,
            expires_at: mapped.expires_at,
        };
        Ok(Lookup::Found(identity))
    }

    /// One call to the service; its answer's status and body (at most `immuta::MAX_ANSWER_BYTES`).
    async fn send(&self, request: ServiceRequest) -> Result<(u16, Bytes), String> {
        let uri = format!("{}{}", self.settings.endpoint, request.path_and_query);
        let mut builder = http::Request::builder()
            .method(request.method)
            .uri(uri)
            .header("accept", "application/json");
        if let Some(a) = &request.authorization {
            builder = builder.header("authorization", a.expose());
        }
        let body = match &request.json_body {
            Some(json) => {
                builder = builder.header("content-type", "application/json");
                Bytes::from(json.expose().to_string())
            }
            None => Bytes::new(),
        };
        // Errors name the call's path, never a header or a body (they hold credentials).
        let path = request
            .path_and_query
            .split('?')
            .next()
            .unwrap_or("")
            .to_string();
        let request = builder
            .body(Full::new(body))
            .map_err(|_| format!("{path}: the request could not be built"))?;
        let response = self.client.request(request).await.map_err(|e| {
            format!(
                "{path}: {}",
                if e.is_connect() {
                    "no connection"
                } else {
                    "the exchange broke"
                }
            )
        })?;
        let status = response.status().as_u16();
        let limited = http_body_util::Limited::new(response.into_body(), immuta::MAX_ANSWER_BYTES);
        let body = limited
            .collect()
            .await
            .map_err(|_| format!("{path}: the answer is unreadable or too long"))?
            .to_bytes();
        Ok((status, body))
    }
}

/// The service failed: a recently valid allow may still serve (`stale_if_error_s`), else fail closed.
fn fall_back(stale: Option<Arc<ApiKey>>) -> Resolution {
    match stale {
        Some(key) => Resolution::Known(key, Origin::Cache),
        None => Resolution::Unavailable,
    }
}

/// Before the decision: the key the governance service vouches for the credential the request claims,
/// when `source: http` and the configured keys do not know it, and where that came from (for the audit
/// line). A service that cannot answer refuses the request (503 SlowDown): fail closed.
pub async fn resolve_request(
    entitlements: &Entitlements,
    metrics: &Metrics,
    config: &Config,
    keys: &crate::auth::KeyStore,
    view: &crate::wire::RequestView<'_>,
) -> Result<(Option<Arc<ApiKey>>, Option<&'static str>), crate::error::S3Error> {
    if config.entitlements.http.is_none() {
        return Ok((None, None));
    }
    // Temporary credentials: their parent is the key to ask about (its current grants bound the
    // session's); a token that does not open is refused by authentication, with no lookup.
    let parent = if crate::auth::security_token(view).is_some() {
        match keys.session_parent(view, std::time::SystemTime::now()) {
            Some(parent) => Some(parent),
            None => return Ok((None, None)),
        }
    } else {
        None
    };
    let Some((id, bearer)) = parent
        .as_ref()
        .map(|(id, bearer)| (id.as_str(), *bearer))
        .or_else(|| crate::auth::claimed_credential(view))
    else {
        return Ok((None, None));
    };
    if keys.knows(id) {
        return Ok((None, None));
    }
    let unavailable = || {
        metrics.limit_hit("entitlement_service");
        crate::error::S3Error::slow_down("The governance service is unavailable; retry later.", 1)
    };
    let source = match entitlements.source_for(config) {
        Ok(Some(source)) => source,
        Ok(None) => return Ok((None, None)),
        Err(e) => {
            log::error!("the governance service cannot be reached: {e}");
            return Err(unavailable());
        }
    };
    match source.resolve(id, bearer, metrics).await {
        Resolution::Known(key, origin) => Ok((Some(key), Some(origin.label()))),
        Resolution::Unknown(origin) => Ok((None, Some(origin.label()))),
        Resolution::Unavailable => Err(unavailable()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(endpoint: &str, allow_ttl_s: u64) -> Config {
        let yaml = format!(
            r#"
token_secret: 0123456789abcdef
backends:
  b: {{ endpoint: "http://127.0.0.1:1", access_key_id: a, secret_access_key: s }}
data_sources:
  sales: {{ backend: b, bucket: bucket-a }}
entitlements:
  source: http
  http: {{ endpoint: "{endpoint}" }}
  cache: {{ allow_ttl_s: {allow_ttl_s} }}
"#
        );
        Config::from_yaml_str(&yaml, &|_| None).unwrap()
    }

    #[test]
    fn a_reload_keeps_the_source_and_its_cache_unless_the_service_changed() {
        let e = Entitlements::default();
        let first = e
            .source_for(&config("http://127.0.0.1:9", 60))
            .unwrap()
            .unwrap();
        // The same settings, or only the cache's: the same source (its cache kept).
        let same = e
            .source_for(&config("http://127.0.0.1:9", 60))
            .unwrap()
            .unwrap();
        assert!(Arc::ptr_eq(&first, &same));
        let new_ttl = e
            .source_for(&config("http://127.0.0.1:9", 5))
            .unwrap()
            .unwrap();
        assert!(Arc::ptr_eq(&first, &new_ttl));
        assert_eq!(
            new_ttl.shared.lock().unwrap().cache.policy().allow_ttl,
            Duration::from_secs(5)
        );
        // Another endpoint: a new source, an empty cache.
        let moved = e
            .source_for(&config("http://127.0.0.1:10", 5))
            .unwrap()
            .unwrap();
        assert!(!Arc::ptr_eq(&first, &moved));
        // Back to the file source: none.
        let file = Config::from_yaml_str(
            "token_secret: 0123456789abcdef\nbackends: {}\ndata_sources: {}\n",
            &|_| None,
        )
        .unwrap();
        assert!(e.source_for(&file).unwrap().is_none());
    }
}
