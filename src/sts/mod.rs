//! Temporary credentials: the pure core of s3p's STS API (`AssumeRole`, `AssumeRoleWithWebIdentity`)
//! and of the session tokens it hands out. No I/O: the gateway (`gateway::sts`) decides a call with
//! these pieces and renders the answers, the glue (`server::sts`) reads the body and fetches JWKS URLs.
//!
//! - `session.rs`: the sealed session token and the credentials derived from it;
//! - `policy.rs`: a session policy (IAM JSON) read as the grants it allows (it only narrows);
//! - `jwt.rs`: OIDC tokens (JWKS, RS256/ES256 signatures, registered claims);
//! - this file: the Query API's parameters, their bounds, and the claim rules.

pub mod jwt;
pub mod policy;
pub mod session;

use crate::config::{ClaimRule, Entitlement, Sts};
use crate::error::{S3Error, S3ErrorCode};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// STS's XML namespace.
pub const NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
/// The only API version.
pub const VERSION: &str = "2011-06-15";
/// The largest form body s3p reads for an STS call (counted in `limits.max_buffered_body_bytes`): a
/// policy, a web identity token and the rest fit many times over.
pub const MAX_BODY: u64 = 64 * 1024;

/// The STS actions s3p answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    AssumeRole,
    AssumeRoleWithWebIdentity,
    /// Who the signing credentials are (an API key, or a session): what jobs run first to check them.
    GetCallerIdentity,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::AssumeRole => "AssumeRole",
            Action::AssumeRoleWithWebIdentity => "AssumeRoleWithWebIdentity",
            Action::GetCallerIdentity => "GetCallerIdentity",
        }
    }
}

/// A Query API call's parameters: the query string and, for a form POST, the body.
#[derive(Debug, Default)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    pub fn parse(raw_query: &str, form_body: &[u8]) -> Result<Params, S3Error> {
        let mut map = BTreeMap::new();
        for part in [raw_query.as_bytes(), form_body] {
            for (k, v) in url::form_urlencoded::parse(part) {
                if map.insert(k.to_string(), v.to_string()).is_some() {
                    return Err(S3Error::with_message(
                        S3ErrorCode::ValidationError,
                        format!("The parameter {k} is given twice."),
                    ));
                }
            }
        }
        Ok(Params(map))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The action asked, for this API version.
    pub fn action(&self) -> Result<Action, S3Error> {
        let action = match self.get("Action") {
            Some("AssumeRole") => Action::AssumeRole,
            Some("AssumeRoleWithWebIdentity") => Action::AssumeRoleWithWebIdentity,
            Some("GetCallerIdentity") => Action::GetCallerIdentity,
            other => {
                return Err(S3Error::with_message(
                    S3ErrorCode::InvalidAction,
                    format!(
                        "Could not find operation {} for version {VERSION}; s3p answers AssumeRole, AssumeRoleWithWebIdentity and GetCallerIdentity.",
                        other.unwrap_or("(none)")
                    ),
                ))
            }
        };
        match self.get("Version") {
            Some(VERSION) => Ok(action),
            _ => Err(S3Error::with_message(
                S3ErrorCode::InvalidAction,
                format!("Version must be {VERSION}."),
            )),
        }
    }

    /// A parameter STS requires.
    fn required(&self, name: &str) -> Result<&str, S3Error> {
        self.get(name).filter(|v| !v.is_empty()).ok_or_else(|| {
            S3Error::with_message(
                S3ErrorCode::ValidationError,
                format!("1 validation error detected: Value null at '{name}' failed to satisfy constraint: Member must not be null"),
            )
        })
    }
}

/// What a call asks for, checked against the configured bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    /// The role's name (the last segment of `RoleArn`).
    pub role: String,
    pub role_arn: String,
    pub session_name: String,
    pub duration_s: u64,
    /// The grants a session `Policy` allows (`None`: no policy, no narrowing).
    pub policy: Option<Entitlement>,
    /// The role's cap (`None`: no roles configured).
    pub role_grants: Option<Entitlement>,
}

/// The characters of IAM role and session names.
fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "+=,.@_-".contains(c)
}

fn validation(message: String) -> S3Error {
    S3Error::with_message(S3ErrorCode::ValidationError, message)
}

/// The common parameters of both actions: `RoleArn`, `RoleSessionName`, `DurationSeconds`, `Policy`
/// (`PolicyArns` are refused: s3p has no managed policies, and ignoring one would grant more than
/// asked).
pub fn asked(params: &Params, sts: &Sts, bucket: &str) -> Result<Asked, S3Error> {
    let role_arn = params.required("RoleArn")?;
    if role_arn.len() > 2048 {
        return Err(validation("RoleArn is longer than 2048 characters.".into()));
    }
    // `arn:aws:iam::<account>:role/<path/><name>`, or just a name.
    let role = role_arn
        .rsplit_once(":role/")
        .map_or(role_arn, |(_, path)| {
            path.rsplit('/').next().unwrap_or(path)
        });
    // IAM's role names: it goes into the session, audit lines and ARNs.
    if !(1..=64).contains(&role.len()) || !role.chars().all(name_char) {
        return Err(validation(
            "RoleArn must end in a role name of 1 to 64 letters, digits and +=,.@_-".into(),
        ));
    }
    let role_grants = if sts.roles.is_empty() {
        None
    } else {
        match sts.roles.get(role) {
            Some(grants) => Some(grants.clone()),
            None => {
                return Err(S3Error::with_message(
                    S3ErrorCode::AccessDenied,
                    format!(
                        "Not authorized to perform sts:AssumeRole on role `{role}`: no such role."
                    ),
                ))
            }
        }
    };
    let session_name = params.required("RoleSessionName")?;
    if !(2..=64).contains(&session_name.len()) || !session_name.chars().all(name_char) {
        return Err(validation(
            "RoleSessionName must be 2 to 64 characters of letters, digits and +=,.@_-".into(),
        ));
    }
    let duration_s = match params.get("DurationSeconds") {
        None => sts.default_duration_s,
        Some(d) => match d.parse::<u64>() {
            Ok(d) if (sts.min_duration_s..=sts.max_duration_s).contains(&d) => d,
            _ => {
                return Err(validation(format!(
                    "DurationSeconds must be between {} and {} seconds.",
                    sts.min_duration_s, sts.max_duration_s
                )))
            }
        },
    };
    if params.0.keys().any(|k| k.starts_with("PolicyArns.")) {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidParameterValue,
            "PolicyArns are not supported: narrow a session with Policy.",
        ));
    }
    let policy = match params.get("Policy") {
        None => None,
        // As AWS: an empty policy is an error, not "no policy" (a template that lost its policy must
        // not get the caller's whole grants).
        Some("") => {
            return Err(validation(
                "Policy must be at least 1 character long.".into(),
            ))
        }
        Some(p) => Some(
            policy::grants_of(p, bucket)
                .map_err(|m| S3Error::with_message(S3ErrorCode::MalformedPolicyDocument, m))?,
        ),
    };
    Ok(Asked {
        role: role.to_string(),
        role_arn: role_arn.to_string(),
        session_name: session_name.to_string(),
        duration_s,
        policy,
        role_grants,
    })
}

impl Asked {
    /// The session's grants: `granted` (the caller's, or a web identity's mapped grants) under the
    /// role's cap and the policy.
    pub fn narrow(&self, granted: &Entitlement) -> Entitlement {
        let mut grants = granted.clone();
        for cap in [&self.role_grants, &self.policy].into_iter().flatten() {
            grants = grants.intersect(cap);
        }
        grants
    }
}

/// The grants of the claim rules a token matches (their union).
pub fn claim_grants(rules: &[ClaimRule], claims: &Map<String, Value>) -> Entitlement {
    rules
        .iter()
        .filter(|rule| jwt::claim_values(claims, &rule.claim).contains(&rule.value))
        .fold(Entitlement::default(), |acc, rule| acc.union(&rule.grants))
}

#[cfg(test)]
mod tests;
