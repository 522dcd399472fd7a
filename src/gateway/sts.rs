//! The STS API's decision (`sts.path`, `/sts` by default, outside the S3 API): `AssumeRole` from an API
//! key (SigV4 with the service `sts`, or the legacy header), `AssumeRoleWithWebIdentity` from an OIDC
//! token; the answer in STS's XML, success or error. Pure: the glue (`server::sts`) reads the form body
//! (held in the body budget), fetches the issuer's keys for a web identity call, and supplies the
//! clock and the random session id.

use super::audit::{is_denial, AuditFacts, Verdict};
use super::{Answer, AuthFailure};
use crate::auth;
use crate::config::{ApiKey, Config, Issuer};
use crate::error::{S3Error, S3ErrorCode};
use crate::state::State;
use crate::sts::jwt::{self, Jwks, JwtError};
use crate::sts::session::{Credentials, Parent, Session};
use crate::sts::{self, Action, Params, NAMESPACE};
use crate::timefmt::format_iso8601;
use crate::wire::RequestView;
use crate::xml::escape;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest token issued: requests carry it in a header (`limits.max_header_bytes` is 16 KiB by
/// default) and s3p opens at most `session::MAX_TOKEN_CHARS`.
const MAX_ISSUED_TOKEN_CHARS: usize = 6 * 1024;

/// Whether the request's path (as sent, without the query) is the STS API's.
pub fn is_sts_path(config: &Config, raw_path: &str) -> bool {
    config
        .sts
        .as_ref()
        .is_some_and(|sts| raw_path.strip_suffix('/').unwrap_or(raw_path) == sts.path)
}

/// How many body bytes an STS call may send (its announced length; [`sts::MAX_BODY`] when it announces
/// none), or its refusal when it announces more.
pub fn body_limit(view: &RequestView) -> Result<u64, S3Error> {
    match view
        .header("content-length")
        .map(|v| v.trim().parse::<u64>())
    {
        None => Ok(sts::MAX_BODY),
        Some(Ok(n)) if n <= sts::MAX_BODY => Ok(n),
        Some(_) => Err(S3Error::with_message(
            S3ErrorCode::ValidationError,
            format!("An STS call's body is at most {} bytes.", sts::MAX_BODY),
        )),
    }
}

/// The issuer a web identity call's token names, when s3p trusts it, with the key id the token names:
/// the glue gets that issuer's keys before the decision. `None` for anything else (the decision then
/// refuses what must be refused).
pub fn web_identity_issuer<'c>(
    config: &'c Config,
    raw_query: &str,
    body: &[u8],
) -> Option<(&'c Issuer, Option<String>)> {
    let params = Params::parse(raw_query, body).ok()?;
    if params.action().ok()? != Action::AssumeRoleWithWebIdentity {
        return None;
    }
    let (iss, kid) = jwt::unverified_issuer_and_kid(params.get("WebIdentityToken")?).ok()?;
    let issuer = config
        .sts
        .as_ref()?
        .issuers
        .iter()
        .find(|i| i.issuer == iss)?;
    Some((issuer, kid))
}

/// One STS call, with everything its decision needs.
pub struct StsCall<'a> {
    pub view: &'a RequestView<'a>,
    pub body: &'a Bytes,
    /// A key the governance service vouched for (the caller of AssumeRole), as for S3 requests.
    pub resolved: Option<&'a Arc<ApiKey>>,
    pub now: SystemTime,
    /// Random: the session's id, from which its credentials are derived.
    pub session_id: [u8; 16],
    pub request_id: &'a str,
    /// The keys of the issuer [`web_identity_issuer`] named, or why they could not be had.
    pub issuer_keys: Option<Result<Arc<Jwks>, S3Error>>,
}

/// What the glue writes and records for an STS call.
pub struct StsDecision {
    pub answer: Answer,
    pub audit: AuditFacts,
    /// The label of the session issued, if one was (the audit facts name it, or the caller's session).
    pub issued: Option<String>,
    /// A failed authentication (counted by the throttle).
    pub auth_failure: Option<AuthFailure>,
}

/// Decides an STS call.
pub fn decide_sts(st: &State, call: &StsCall) -> StsDecision {
    let mut audit = AuditFacts::new(
        st.config
            .sts
            .as_ref()
            .map_or_else(String::new, |s| s.path.clone()),
    );
    audit.operation = "STS";
    let mut auth_failure = None;
    let result = issue(st, call, &mut audit, &mut auth_failure);
    let (answer, issued) = match result {
        Ok(done) => {
            audit.verdict = Verdict::Allowed;
            let answer = Answer {
                status: 200,
                headers: vec![("content-type", "text/xml".to_string())],
                body: Bytes::from(done.xml),
            };
            (answer, done.issued)
        }
        Err(e) => {
            audit.reason = Some(e.code.as_str());
            audit.verdict = if is_denial(e.code) || e.code == S3ErrorCode::AccessDenied {
                Verdict::Denied
            } else {
                Verdict::Failed
            };
            let (status, body) = render_error(&e, call.request_id);
            let mut headers = vec![("content-type", "text/xml".to_string())];
            if let Some(s) = e.retry_after_s {
                headers.push(("retry-after", s.to_string()));
            }
            let answer = Answer {
                status,
                headers,
                body: Bytes::from(body),
            };
            (answer, None)
        }
    };
    StsDecision {
        answer,
        audit,
        issued,
        auth_failure,
    }
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A call answered: its XML, and the label of the session it issued (`None`: GetCallerIdentity).
struct Done {
    xml: String,
    issued: Option<String>,
}

/// The caller of AssumeRole or GetCallerIdentity, authenticated (a failure is recorded for the
/// throttle, naming the key claimed when s3p knows it).
fn caller(
    st: &State,
    call: &StsCall,
    sessions_may_call: bool,
    audit: &mut AuditFacts,
    auth_failure: &mut Option<AuthFailure>,
) -> Result<auth::Authenticated, S3Error> {
    let keys = st.keys.with(call.resolved);
    let body_sha256 = hex::encode(Sha256::digest(call.body));
    let caller =
        auth::authenticate_sts_caller(keys, call.view, &body_sha256, call.now, sessions_may_call)
            .inspect_err(|e| {
            let known = auth::claimed_key_id(call.view).filter(|id| keys.knows(id));
            audit.key_name = known.and_then(|id| keys.name_of(id)).map(str::to_string);
            *auth_failure = Some(AuthFailure {
                known_key_id: known.map(str::to_string),
                is_denial: is_denial(e.code),
            });
        })?;
    audit.key_name = Some(caller.key.name.clone());
    Ok(caller)
}

/// The call's answer, or the refusal.
fn issue(
    st: &State,
    call: &StsCall,
    audit: &mut AuditFacts,
    auth_failure: &mut Option<AuthFailure>,
) -> Result<Done, S3Error> {
    let config = &st.config;
    let (Some(sts_config), Some(sealer)) = (&config.sts, st.keys.sessions()) else {
        return Err(S3Error::new(S3ErrorCode::InvalidAction));
    };
    let params = Params::parse(call.view.raw_query, call.body)?;
    let action = params.action()?;
    audit.operation = action.name();
    let now_s = unix_seconds(call.now);
    let id = hex::encode(call.session_id);
    // Who asks first, then what is asked: an unauthenticated caller learns nothing of the roles or
    // bounds (as AWS answers 403 before validating parameters).
    let (parent, granted, parent_expires, web) = match action {
        Action::AssumeRole => {
            let caller = caller(st, call, false, audit, auth_failure)?;
            let key = &caller.key;
            let parent = Parent::Key {
                id: key.id.expose().to_string(),
                bearer: caller.scheme == auth::Scheme::Legacy,
            };
            (parent, key.data_sources.clone(), key.expires_at, None)
        }
        // Answers who is calling; issues nothing.
        Action::GetCallerIdentity => {
            let caller = caller(st, call, true, audit, auth_failure)?;
            audit.session = caller.key.session.as_ref().map(|s| s.label.clone());
            return Ok(Done {
                xml: render_caller(&caller.key, call.request_id),
                issued: None,
            });
        }
        Action::AssumeRoleWithWebIdentity => {
            let token = params.get("WebIdentityToken").unwrap_or("");
            // A refused token counts for the failed-authentication throttle (per client: the token
            // names no key), so that forged tokens cannot be tried, and signatures checked, freely.
            let (claims, issuer) = verified_claims(config, token, call).inspect_err(|e| {
                *auth_failure = Some(AuthFailure {
                    known_key_id: None,
                    is_denial: is_denial(e.code),
                });
            })?;
            let subject = claims
                .get("sub")
                .and_then(|s| s.as_str())
                .unwrap_or_default()
                .to_string();
            let name = jwt::claim_values(&claims, &issuer.name_claim)
                .into_iter()
                .next()
                .unwrap_or_else(|| subject.clone());
            let name: String = name.chars().filter(|c| !c.is_control()).take(128).collect();
            audit.key_name = Some(name.clone());
            let mapped = sts::claim_grants(&issuer.rules, &claims);
            if mapped.is_empty() {
                return Err(S3Error::with_message(
                    S3ErrorCode::AccessDenied,
                    "No rule of this issuer grants the token anything.",
                ));
            }
            let audience = match claims.get("aud") {
                Some(serde_json::Value::String(a)) => a.clone(),
                list => list
                    .and_then(|l| l.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str())
                    .find(|a| issuer.audiences.iter().any(|e| e == a))
                    .unwrap_or_default()
                    .to_string(),
            };
            let parent = Parent::WebIdentity {
                issuer: issuer.issuer.clone(),
                subject: subject.clone(),
                name,
            };
            let web = Some((subject, audience, issuer.issuer.clone()));
            (parent, mapped, None, web)
        }
    };
    let asked = sts::asked(&params, sts_config, &config.bucket)?;
    let mut grants = asked.narrow(&granted);
    // Only data sources that exist go into the token (a policy may name others).
    grants
        .named
        .retain(|ds, _| config.data_sources.contains_key(ds));
    // A session never outlives the key that made it.
    let expires_at = (now_s + asked.duration_s).min(parent_expires.unwrap_or(u64::MAX));
    let session = Session {
        id,
        parent,
        grants,
        issued_at: now_s,
        expires_at,
        role: asked.role.clone(),
        name: asked.session_name.clone(),
    };
    let credentials = sealer.issue(&session);
    // A token every request can carry: well below the longest s3p opens, and the header limit.
    if credentials.session_token.len() > MAX_ISSUED_TOKEN_CHARS {
        return Err(S3Error::with_message(
            S3ErrorCode::PackedPolicyTooLarge,
            format!(
                "The session's grants make a token over {MAX_ISSUED_TOKEN_CHARS} characters: narrow it with a role or Policy."
            ),
        ));
    }
    let web = web
        .as_ref()
        .map(|(s, a, p)| (s.as_str(), a.as_str(), p.as_str()));
    let xml = render_issued(action, &credentials, &session, web, call.request_id);
    let label = session.label();
    audit.session = Some(label.clone());
    Ok(Done {
        xml,
        issued: Some(label),
    })
}

/// GetCallerIdentity's answer: an assumed-role ARN for a session, a user ARN (the key's name, made
/// ARN-safe) for an API key; ids derived from no secret (a session's id prefix, a hash of the key id).
fn render_caller(key: &ApiKey, request_id: &str) -> String {
    let safe = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "+=,.@_-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    let (arn, user_id) = match &key.session {
        Some(session) => (
            format!(
                "arn:aws:sts::000000000000:assumed-role/{}/{}",
                session.role, session.name
            ),
            format!(
                "AROAS3P{}:{}",
                session.id8.to_ascii_uppercase(),
                session.name
            ),
        ),
        None => {
            let digest = Sha256::digest(key.id.expose().as_bytes());
            (
                format!("arn:aws:iam::000000000000:user/{}", safe(&key.name)),
                format!("AIDAS3P{}", hex::encode_upper(&digest[..6])),
            )
        }
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<GetCallerIdentityResponse xmlns=\"{NAMESPACE}\"><GetCallerIdentityResult>\
         <Arn>{}</Arn><UserId>{}</UserId><Account>000000000000</Account></GetCallerIdentityResult>\
         <ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></GetCallerIdentityResponse>",
        escape(&arn),
        escape(&user_id),
        escape(request_id)
    )
}

/// A web identity token's claims, verified against its issuer's keys and expectations.
fn verified_claims<'c>(
    config: &'c Config,
    token: &str,
    call: &StsCall,
) -> Result<(serde_json::Map<String, serde_json::Value>, &'c Issuer), S3Error> {
    let invalid = |e: JwtError| {
        let code = match e {
            JwtError::Expired => S3ErrorCode::ExpiredTokenException,
            _ => S3ErrorCode::InvalidIdentityToken,
        };
        S3Error::with_message(code, e.to_string())
    };
    if token.is_empty() {
        return Err(S3Error::with_message(
            S3ErrorCode::ValidationError,
            "WebIdentityToken is required.",
        ));
    }
    let (iss, _) = jwt::unverified_issuer_and_kid(token).map_err(invalid)?;
    let issuer = config
        .sts
        .as_ref()
        .and_then(|s| s.issuers.iter().find(|i| i.issuer == iss))
        .ok_or_else(|| {
            S3Error::with_message(
                S3ErrorCode::InvalidIdentityToken,
                "The token's issuer is not trusted.",
            )
        })?;
    let keys = match &call.issuer_keys {
        Some(Ok(keys)) => keys,
        Some(Err(e)) => return Err(e.clone()),
        None => return Err(S3Error::new(S3ErrorCode::IDPCommunicationError)),
    };
    let claims = jwt::verify_signature(token, keys).map_err(invalid)?;
    let expected = jwt::Expected {
        issuer: &issuer.issuer,
        audiences: &issuer.audiences,
        now_s: unix_seconds(call.now),
    };
    jwt::check_claims(&claims, &expected).map_err(invalid)?;
    Ok((claims, issuer))
}

/// The STS answer to a successful call.
fn render_issued(
    action: Action,
    c: &Credentials,
    s: &Session,
    web: Option<(&str, &str, &str)>,
    request_id: &str,
) -> String {
    let action = action.name();
    let expiration = format_iso8601(UNIX_EPOCH + Duration::from_secs(c.expiration));
    // An assumed-role ARN and id in AWS's shapes (s3p has no account: zeros).
    let arn = format!(
        "arn:aws:sts::000000000000:assumed-role/{}/{}",
        s.role, s.name
    );
    let role_id = format!("AROAS3P{}:{}", s.id[..8].to_ascii_uppercase(), s.name);
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{action}Response xmlns=\"{NAMESPACE}\"><{action}Result>"
    );
    if let Some((subject, audience, provider)) = web {
        out.push_str(&format!(
            "<SubjectFromWebIdentityToken>{}</SubjectFromWebIdentityToken><Audience>{}</Audience><Provider>{}</Provider>",
            escape(subject),
            escape(audience),
            escape(provider)
        ));
    }
    out.push_str(&format!(
        "<AssumedRoleUser><AssumedRoleId>{}</AssumedRoleId><Arn>{}</Arn></AssumedRoleUser>\
         <Credentials><AccessKeyId>{}</AccessKeyId><SecretAccessKey>{}</SecretAccessKey>\
         <SessionToken>{}</SessionToken><Expiration>{expiration}</Expiration></Credentials>\
         </{action}Result><ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></{action}Response>",
        escape(&role_id),
        escape(&arn),
        c.access_key_id,
        escape(c.secret_access_key.expose()),
        c.session_token,
        escape(request_id),
    ));
    out
}

/// An STS error answer (`ErrorResponse`), from the one error type: the S3 codes authentication
/// answers with become STS's where they differ. Only the code and message are rendered (never
/// SignatureDoesNotMatch's string to sign: STS does not show it).
pub fn render_error(e: &S3Error, request_id: &str) -> (u16, String) {
    let code = match e.code {
        S3ErrorCode::InvalidAccessKeyId | S3ErrorCode::InvalidToken | S3ErrorCode::ExpiredToken => {
            S3ErrorCode::InvalidClientTokenId
        }
        S3ErrorCode::AuthorizationHeaderMalformed => S3ErrorCode::IncompleteSignature,
        S3ErrorCode::InvalidArgument => S3ErrorCode::InvalidParameterValue,
        S3ErrorCode::SlowDown => S3ErrorCode::Throttling,
        code => code,
    };
    let status = code.status();
    let kind = if status >= 500 { "Receiver" } else { "Sender" };
    let message = if code == e.code {
        e.message.clone()
    } else {
        S3Error::new(code).message
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ErrorResponse xmlns=\"{NAMESPACE}\"><Error><Type>{kind}</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
        code.as_str(),
        escape(&message),
        escape(request_id)
    );
    (status, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::wire::Headers;

    /// A configuration with `n` data sources, a legacy key granted each by name, and `sts` on.
    fn state(n: usize) -> State {
        let mut yaml = String::from(
            "token_secret: 0123456789abcdef\nbackends:\n  b: { endpoint: \"http://127.0.0.1:1\", access_key_id: a, secret_access_key: s }\ndata_sources:\n",
        );
        let names: Vec<String> = (0..n)
            .map(|i| format!("data-source-number-{i:04}"))
            .collect();
        for name in &names {
            yaml.push_str(&format!(
                "  {name}: {{ backend: b, bucket: bucket-a, prefix: {name}/ }}\n"
            ));
        }
        yaml.push_str(&format!(
            "sts: {{}}\napi_keys:\n  - {{ id: legacy-key, name: Legacy, data_sources: [{}] }}\n",
            names.join(", ")
        ));
        State::new(Config::from_yaml_str(&yaml, &|_| None).unwrap()).unwrap()
    }

    fn assume(st: &State, form: &str) -> StsDecision {
        let headers = vec![(
            "authorization".to_string(),
            "AWS legacy-key:immuta".to_string(),
        )];
        let view = RequestView {
            method: "POST",
            raw_path: "/sts",
            raw_query: "",
            headers: Headers::Pairs(&headers),
        };
        let body = Bytes::from(form.to_string());
        decide_sts(
            st,
            &StsCall {
                view: &view,
                body: &body,
                resolved: None,
                now: SystemTime::now(),
                session_id: [7; 16],
                request_id: "R1",
                issuer_keys: None,
            },
        )
    }

    const FORM: &str = "Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fr&RoleSessionName=job";

    #[test]
    fn a_session_too_large_for_its_token_is_refused_when_asked_for() {
        let small = assume(&state(3), FORM);
        assert_eq!(small.answer.status, 200);
        assert!(small.issued.is_some());
        let large = assume(&state(400), FORM);
        assert_eq!(large.answer.status, 400);
        let body = String::from_utf8_lossy(&large.answer.body).to_string();
        assert!(body.contains("<Code>PackedPolicyTooLarge</Code>"), "{body}");
        // Narrowed by a policy to one data source, the same key gets its session.
        let policy = r#"{"Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::immuta/data-source-number-0001/*"}]}"#;
        let form = format!(
            "{FORM}&Policy={}",
            percent_encoding::utf8_percent_encode(policy, percent_encoding::NON_ALPHANUMERIC)
        );
        assert_eq!(assume(&state(400), &form).answer.status, 200);
    }

    #[test]
    fn parameters_are_read_only_after_the_caller_is_known() {
        // An unknown caller asking for an impossible duration learns only that it is unknown.
        let st = state(1);
        let headers = vec![("authorization".to_string(), "AWS nobody:immuta".to_string())];
        let view = RequestView {
            method: "POST",
            raw_path: "/sts",
            raw_query: "",
            headers: Headers::Pairs(&headers),
        };
        let body = Bytes::from(format!("{FORM}&DurationSeconds=1"));
        let d = decide_sts(
            &st,
            &StsCall {
                view: &view,
                body: &body,
                resolved: None,
                now: SystemTime::now(),
                session_id: [7; 16],
                request_id: "R2",
                issuer_keys: None,
            },
        );
        let body = String::from_utf8_lossy(&d.answer.body).to_string();
        assert!(body.contains("<Code>InvalidClientTokenId</Code>"), "{body}");
        assert!(d.auth_failure.is_some());
        // Known, the same call is a validation error.
        let d = assume(&st, &format!("{FORM}&DurationSeconds=1"));
        assert!(String::from_utf8_lossy(&d.answer.body).contains("<Code>ValidationError</Code>"));
    }
}
