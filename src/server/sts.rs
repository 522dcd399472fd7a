//! The STS API's I/O: the issuers' signing keys (a JWKS file, or a URL fetched with a deadline and
//! cached), and the call carried out: keys fetched when a web identity call needs them, the pure
//! decision (`gateway::decide_sts`), the throttle of failed authentications, the metrics.
//!
//! Keys are cached per issuer for `jwks_refresh_s` (files for 60 s, so a replaced file takes effect
//! within a minute without a reload); a token naming a key id not in the cached set makes one refetch.
//! At most one fetch per issuer every 30 s, a failed one included (a flood of made-up key ids, or of
//! calls while the provider is down, cannot make s3p hammer it or wait on it). When a refresh fails,
//! keys fetched within 10 × `jwks_refresh_s` still serve; past that, or when none were ever had, calls
//! fail closed at once (400 IDPCommunicationError).

use super::Runtime;
use crate::config::{Issuer, JwksSource};
use crate::error::{S3Error, S3ErrorCode};
use crate::sts::jwt::Jwks;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a fetch of keys may take.
const FETCH_DEADLINE: Duration = Duration::from_secs(5);
/// The most JWKS bytes read.
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// The least time between two refetches for an unknown key id.
const UNKNOWN_KID_REFETCH: Duration = Duration::from_secs(30);
/// How often a JWKS file is read again.
const FILE_REFRESH: Duration = Duration::from_secs(60);

struct Entry {
    keys: Option<Arc<Jwks>>,
    fetched_at: Instant,
    attempted_at: Instant,
}

/// The issuers' keys, cached across requests and reloads (keyed by where they come from).
#[derive(Default)]
pub struct IssuerKeys {
    cache: Mutex<HashMap<JwksSource, Entry>>,
    /// One fetch at a time: the calls that wait find the keys it fetched.
    fetching: tokio::sync::Mutex<()>,
}

/// What to do for a call, given what is cached.
#[derive(Debug, PartialEq)]
enum Plan {
    Use(Arc<Jwks>),
    /// No usable keys, and a fetch was tried too recently to try again: fail closed, fast.
    Fail,
    Fetch,
}

/// The plan for a token naming `kid`: fresh keys serve; a key id not in them makes a refetch, and so do
/// stale keys, but at most one attempt per [`UNKNOWN_KID_REFETCH`] (a failed one included, so that a
/// provider that is down is not asked on every call); meanwhile keys fetched within 10 × `refresh`
/// still serve.
fn plan(entry: Option<&Entry>, refresh: Duration, kid: Option<&str>, now: Instant) -> Plan {
    let Some(entry) = entry else {
        return Plan::Fetch;
    };
    let recent_attempt = now.duration_since(entry.attempted_at) < UNKNOWN_KID_REFETCH;
    match &entry.keys {
        None if recent_attempt => Plan::Fail,
        None => Plan::Fetch,
        Some(keys) => {
            let age = now.duration_since(entry.fetched_at);
            let knows_kid = kid.is_none_or(|k| keys.has_kid(k));
            if age < refresh && (knows_kid || recent_attempt) {
                Plan::Use(keys.clone())
            } else if !recent_attempt {
                Plan::Fetch
            } else if age < refresh * 10 {
                Plan::Use(keys.clone())
            } else {
                Plan::Fail
            }
        }
    }
}

impl IssuerKeys {
    /// The keys of `issuer` for a token naming `kid`.
    pub async fn keys_for(&self, issuer: &Issuer, kid: Option<&str>) -> Result<Arc<Jwks>, S3Error> {
        let refresh = match &issuer.jwks {
            JwksSource::File(_) => FILE_REFRESH,
            JwksSource::Url { refresh_s, .. } => Duration::from_secs(*refresh_s),
        };
        let decide = |cache: &HashMap<JwksSource, Entry>| {
            plan(cache.get(&issuer.jwks), refresh, kid, Instant::now())
        };
        let unavailable = || S3Error::new(S3ErrorCode::IDPCommunicationError);
        match decide(&self.cache.lock().unwrap()) {
            Plan::Use(keys) => return Ok(keys),
            Plan::Fail => return Err(unavailable()),
            Plan::Fetch => {}
        }
        // One fetch at a time; those that waited find what it fetched (or that it failed).
        let _one = self.fetching.lock().await;
        match decide(&self.cache.lock().unwrap()) {
            Plan::Use(keys) => return Ok(keys),
            Plan::Fail => return Err(unavailable()),
            Plan::Fetch => {}
        }
        let fetched = tokio::time::timeout(FETCH_DEADLINE, fetch(&issuer.jwks))
            .await
            .unwrap_or_else(|_| Err("no answer in time".into()))
            .and_then(|text| Jwks::from_json(&text));
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap();
        let entry = cache.entry(issuer.jwks.clone()).or_insert(Entry {
            keys: None,
            fetched_at: now,
            attempted_at: now,
        });
        entry.attempted_at = now;
        match fetched {
            Ok(keys) => {
                let keys = Arc::new(keys);
                entry.keys = Some(keys.clone());
                entry.fetched_at = now;
                Ok(keys)
            }
            Err(e) => {
                log::warn!(
                    "the signing keys of issuer {} could not be read: {e}",
                    issuer.issuer
                );
                match &entry.keys {
                    Some(keys) if now.duration_since(entry.fetched_at) < refresh * 10 => {
                        Ok(keys.clone())
                    }
                    _ => Err(unavailable()),
                }
            }
        }
    }
}

/// Reads a key set: the file, or the URL (http or https, the system's roots and `ca_file`).
async fn fetch(source: &JwksSource) -> Result<String, String> {
    match source {
        JwksSource::File(path) => tokio::fs::read_to_string(path)
            .await
            .map_err(|e| format!("{path}: {e}")),
        JwksSource::Url { url, ca_file, .. } => {
            let extra_ca = match ca_file {
                Some(path) => crate::backend::load_ca_certs(path)?,
                None => Vec::new(),
            };
            let tls = crate::backend::tls_client_config(&extra_ca, "sts.web_identity")?;
            let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
            http.enforce_http(false);
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_http1()
                .wrap_connector(http);
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build::<_, Empty<Bytes>>(https);
            let request = http::Request::get(url.as_str())
                .header("accept", "application/json")
                .body(Empty::new())
                .map_err(|e| e.to_string())?;
            let response = client.request(request).await.map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("{url}: status {}", response.status()));
            }
            let body = http_body_util::Limited::new(response.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map_err(|e| format!("{url}: {e}"))?
                .to_bytes();
            String::from_utf8(body.to_vec()).map_err(|_| format!("{url}: not UTF-8"))
        }
    }
}

/// Carries out an STS call whose body was read: the issuer's keys for a web identity call, the
/// decision, the throttle, the metrics. Returns the decision for the glue to write and audit.
pub async fn serve(
    runtime: &Runtime,
    st: &crate::state::State,
    view: &crate::wire::RequestView<'_>,
    body: &Bytes,
    resolved: Option<&Arc<crate::config::ApiKey>>,
    request_id: &str,
    client: Option<std::net::IpAddr>,
) -> crate::gateway::StsDecision {
    let issuer_keys = match crate::gateway::web_identity_issuer(&st.config, view.raw_query, body) {
        Some((issuer, kid)) => Some(runtime.sts.keys_for(issuer, kid.as_deref()).await),
        None => None,
    };
    let call = crate::gateway::StsCall {
        view,
        body,
        resolved,
        now: std::time::SystemTime::now(),
        session_id: rand::random(),
        request_id,
        issuer_keys,
    };
    let mut decision = crate::gateway::decide_sts(st, &call);
    if let Some(failure) = &decision.auth_failure {
        let code = decision.audit.reason.unwrap_or("AccessDenied");
        if let Some(e) = super::admission::throttle(runtime, failure, code, client) {
            let (status, xml) = crate::gateway::sts_error(&e, request_id);
            decision.answer.status = status;
            decision.answer.body = Bytes::from(xml);
            decision.audit.reason = Some(e.code.as_str());
        }
    }
    let result = match (&decision.issued, decision.audit.verdict) {
        (Some(_), _) => "issued",
        (None, crate::gateway::Verdict::Allowed) => "answered",
        (None, _) => "refused",
    };
    runtime.metrics.sts_call(decision.audit.operation, result);
    decision
}

/// Answers an STS call whose form body was read (`WithBody::Sts`): decided, audited, written.
pub async fn answer(
    runtime: &Runtime,
    session: &mut pingora::proxy::Session,
    ctx: &mut super::ctx::RequestCtx,
    resolved: Option<Arc<crate::config::ApiKey>>,
    body: Bytes,
) -> pingora::Result<()> {
    let st = ctx.state.clone();
    let decision = {
        let req = session.req_header();
        let raw = std::str::from_utf8(req.raw_path()).unwrap_or("");
        let (raw_path, raw_query) = raw.split_once('?').unwrap_or((raw, ""));
        let view = crate::wire::RequestView {
            method: req.method.as_str(),
            raw_path,
            raw_query,
            headers: crate::wire::Headers::Map(&req.headers),
        };
        let (id, client) = (&ctx.request_id, ctx.client.ip);
        serve(runtime, &st, &view, &body, resolved.as_ref(), id, client).await
    };
    ctx.held.body = None;
    ctx.audit = decision.audit;
    let a = decision.answer;
    super::respond::write_answer(session, &ctx.answering(), a.status, a.headers, a.body).await
}

/// `s3p check`: every issuer's keys can be read and hold a usable key (files always; URLs only when
/// `online`). Returns one line per issuer, or the problems.
pub fn check_issuers(
    config: &crate::config::Config,
    online: bool,
) -> Result<Vec<String>, Vec<String>> {
    let Some(sts) = &config.sts else {
        return Ok(Vec::new());
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| vec![e.to_string()])?;
    let (mut ok, mut problems) = (Vec::new(), Vec::new());
    for (i, issuer) in sts.issuers.iter().enumerate() {
        let field = format!("sts.web_identity[{i}]");
        if !online && matches!(issuer.jwks, JwksSource::Url { .. }) {
            ok.push(format!(
                "{field}: {} (jwks_url not fetched offline)",
                issuer.issuer
            ));
            continue;
        }
        let read = rt.block_on(async {
            tokio::time::timeout(FETCH_DEADLINE, fetch(&issuer.jwks))
                .await
                .unwrap_or_else(|_| Err("no answer in time".into()))
        });
        match read.and_then(|text| Jwks::from_json(&text)) {
            Ok(keys) => {
                ok.push(format!(
                    "{field}: {} ({} key(s))",
                    issuer.issuer,
                    keys.len()
                ));
                if let JwksSource::Url { url, .. } = &issuer.jwks {
                    if url.starts_with("http://") {
                        ok.push(format!(
                            "{field}: warning: jwks_url is plain http: whoever is on the path can put keys there and sign any identity; use https"
                        ));
                    }
                }
            }
            Err(e) => problems.push(format!("{field}: the signing keys cannot be read: {e}")),
        }
    }
    if problems.is_empty() {
        Ok(ok)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Arc<Jwks> {
        let x = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
        let y = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
        Arc::new(
            Jwks::from_json(&format!(
                r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"k1","x":"{x}","y":"{y}"}}]}}"#
            ))
            .unwrap(),
        )
    }

    #[test]
    fn fetches_are_planned_at_most_once_per_30_s_and_fail_closed() {
        let t0 = Instant::now();
        let refresh = Duration::from_secs(300);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let entry = |keys: Option<Arc<Jwks>>, fetched: u64, attempted: u64| Entry {
            keys,
            fetched_at: at(fetched),
            attempted_at: at(attempted),
        };
        let is_use = |p: Plan| matches!(p, Plan::Use(_));
        // Nothing cached: fetch.
        assert_eq!(plan(None, refresh, None, at(0)), Plan::Fetch);
        // Fresh keys serve; a kid they hold too.
        let fresh = entry(Some(keys()), 0, 0);
        assert!(is_use(plan(Some(&fresh), refresh, Some("k1"), at(10))));
        // An unknown kid: not within 30 s of the last attempt, then one refetch.
        assert!(is_use(plan(Some(&fresh), refresh, Some("k9"), at(10))));
        assert_eq!(plan(Some(&fresh), refresh, Some("k9"), at(31)), Plan::Fetch);
        // Stale keys: refetched; after a failed attempt, served (within 10 x refresh) without asking.
        assert_eq!(plan(Some(&fresh), refresh, None, at(301)), Plan::Fetch);
        let failed_stale = entry(Some(keys()), 0, 301);
        assert!(is_use(plan(Some(&failed_stale), refresh, None, at(302))));
        let too_old = entry(Some(keys()), 0, 3001);
        assert_eq!(plan(Some(&too_old), refresh, None, at(3002)), Plan::Fail);
        // Never had keys, and the last attempt failed just now: fail fast, then try again after 30 s.
        let never = entry(None, 0, 100);
        assert_eq!(plan(Some(&never), refresh, None, at(110)), Plan::Fail);
        assert_eq!(plan(Some(&never), refresh, None, at(131)), Plan::Fetch);
    }
}
