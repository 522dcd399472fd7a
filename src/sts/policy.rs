//! A session policy: the `Policy` parameter of `AssumeRole` and `AssumeRoleWithWebIdentity`, an IAM
//! policy document, read as the grants it allows. It can only narrow: the session gets the
//! intersection of these grants and the caller's (`Entitlement::intersect`).
//!
//! s3p grants whole data sources, read or write (write includes read), so it reads the part of IAM
//! that says that, and refuses what it cannot honour exactly rather than grant more than was asked:
//! - statements: `Effect: Allow` with `Action` and `Resource` (a string or a list), `Sid` allowed;
//!   `Deny`, `NotAction`, `NotResource`, `Condition` and `Principal` are refused;
//! - actions, with IAM's `*` and `?`: those matching an object read (`s3:GetObject`, its version,
//!   tagging, attributes and ACL forms) read; those matching an object write (`s3:PutObject`,
//!   `s3:DeleteObject[Version]`, `s3:AbortMultipartUpload`, `s3:ListMultipartUploadParts`) write; `s3:*`
//!   and `*` both; bucket and account actions (`s3:ListBucket`, `s3:GetBucketLocation`,
//!   `s3:PutBucketAcl`...) and other services' actions grant nothing, whatever their resource;
//! - resources: `*` and `arn:aws:s3:::<bucket>/*` every data source; `arn:aws:s3:::<bucket>/<ds>/*`
//!   (or `.../<ds>` and `.../<ds>/`) one; the bucket itself (`arn:aws:s3:::<bucket>`, for ListBucket)
//!   and other buckets nothing; a resource inside a data source (`.../<ds>/2024/*`) or a wildcard
//!   within a name is refused;
//! - a data source allowed write actions but no read ones is refused (s3p's write implies read).
//!
//! Pure.

use crate::config::{Access, Entitlement};
use serde_json::Value;
use std::collections::BTreeMap;

/// The longest policy read (AWS allows 2,048 packed characters; s3p reads the JSON as sent).
pub const MAX_POLICY_CHARS: usize = 10 * 1024;

#[derive(Default, Clone, Copy)]
struct Allowed {
    read: bool,
    write: bool,
}

/// What `policy` (JSON) allows on the virtual bucket `bucket`, or why it cannot be honoured.
pub fn grants_of(policy: &str, bucket: &str) -> Result<Entitlement, String> {
    if policy.len() > MAX_POLICY_CHARS {
        return Err(format!(
            "The policy is longer than {MAX_POLICY_CHARS} characters."
        ));
    }
    let doc: Value =
        serde_json::from_str(policy).map_err(|_| "The policy is not valid JSON.".to_string())?;
    let doc = doc.as_object().ok_or("The policy must be a JSON object.")?;
    for key in doc.keys() {
        if !matches!(key.as_str(), "Version" | "Id" | "Statement") {
            return Err(format!("Policy element `{key}` is not supported."));
        }
    }
    let statements = match doc.get("Statement") {
        Some(Value::Array(list)) => list.iter().collect::<Vec<_>>(),
        Some(one @ Value::Object(_)) => vec![one],
        _ => return Err("The policy has no Statement.".into()),
    };
    let mut every = Allowed::default();
    let mut named: BTreeMap<String, Allowed> = BTreeMap::new();
    for statement in statements {
        let statement = statement
            .as_object()
            .ok_or("Each Statement must be an object.")?;
        for key in statement.keys() {
            if !matches!(key.as_str(), "Sid" | "Effect" | "Action" | "Resource") {
                return Err(format!(
                    "Statement element `{key}` is not supported: s3p session policies allow whole data sources."
                ));
            }
        }
        match statement.get("Effect").and_then(Value::as_str) {
            Some("Allow") => {}
            Some("Deny") => {
                return Err(
                    "Deny statements are not supported: allow only what the session needs.".into(),
                )
            }
            _ => return Err("Each Statement needs `Effect: Allow`.".into()),
        }
        let mut allowed = Allowed::default();
        for action in strings(statement.get("Action"), "Action")? {
            let a = action.to_ascii_lowercase();
            // Only object actions grant: a bucket or account action (`s3:ListBucket`,
            // `s3:GetBucketLocation`, `s3:PutBucketAcl`), even on `*`, grants no data source.
            let matches_any = |actions: &[&str]| actions.iter().any(|x| wildcard_match(&a, x));
            allowed.read |= matches_any(OBJECT_READS);
            allowed.write |= matches_any(OBJECT_WRITES);
        }
        for resource in strings(statement.get("Resource"), "Resource")? {
            match data_source_of(resource, bucket)? {
                Scope::Nothing => {}
                Scope::Every => {
                    every.read |= allowed.read;
                    every.write |= allowed.write;
                }
                Scope::One(ds) => {
                    let entry = named.entry(ds).or_default();
                    entry.read |= allowed.read;
                    entry.write |= allowed.write;
                }
            }
        }
    }
    let access = |a: Allowed, what: &str| -> Result<Option<Access>, String> {
        match (a.read, a.write) {
            (true, true) => Ok(Some(Access::Write)),
            (true, false) => Ok(Some(Access::Read)),
            (false, true) => Err(format!(
                "The policy allows writing {what} but not reading it: s3p's write includes read; allow s3:GetObject too."
            )),
            (false, false) => Ok(None),
        }
    };
    let every_access = access(every, "every data source")?;
    let mut grants = Entitlement {
        every: every_access,
        named: BTreeMap::new(),
    };
    for (ds, a) in named {
        let merged = Allowed {
            read: a.read || every.read,
            write: a.write || every.write,
        };
        if let Some(access) = access(merged, &format!("`{ds}`"))? {
            if Some(access) > every_access {
                grants.named.insert(ds, access);
            }
        }
    }
    Ok(grants)
}

/// The object actions that read (lowercase): what s3p's read grant serves.
const OBJECT_READS: &[&str] = &[
    "s3:getobject",
    "s3:getobjectversion",
    "s3:getobjecttagging",
    "s3:getobjectversiontagging",
    "s3:getobjectattributes",
    "s3:getobjectversionattributes",
    "s3:getobjectacl",
    "s3:getobjectversionacl",
];

/// The object actions that write (lowercase): what s3p's write grant serves.
const OBJECT_WRITES: &[&str] = &[
    "s3:putobject",
    "s3:deleteobject",
    "s3:deleteobjectversion",
    "s3:abortmultipartupload",
    "s3:listmultipartuploadparts",
];

/// IAM's action matching: `*` any run of characters, `?` one; both lowercase here.
fn wildcard_match(pattern: &str, action: &str) -> bool {
    let (p, a) = (pattern.as_bytes(), action.as_bytes());
    let (mut pi, mut ai, mut star, mut mark) = (0, 0, None, 0);
    while ai < a.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == a[ai]) {
            pi += 1;
            ai += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ai;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ai = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

fn strings<'v>(value: Option<&'v Value>, name: &str) -> Result<Vec<&'v str>, String> {
    match value {
        Some(Value::String(s)) => Ok(vec![s]),
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| v.as_str().ok_or(format!("{name} must be strings.")))
            .collect(),
        _ => Err(format!("Each Statement needs `{name}`.")),
    }
}

enum Scope {
    Nothing,
    Every,
    One(String),
}

fn data_source_of(resource: &str, bucket: &str) -> Result<Scope, String> {
    if resource == "*" {
        return Ok(Scope::Every);
    }
    let Some(path) = resource.strip_prefix("arn:aws:s3:::") else {
        return Ok(Scope::Nothing);
    };
    let (b, rest) = match path.split_once('/') {
        Some((b, rest)) => (b, Some(rest)),
        None => (path, None),
    };
    if b != bucket {
        // Another bucket (or a wildcard bucket name, which s3p does not expand): nothing here.
        return Ok(Scope::Nothing);
    }
    let Some(rest) = rest else {
        return Ok(Scope::Nothing);
    };
    if rest == "*" {
        return Ok(Scope::Every);
    }
    let ds = rest
        .strip_suffix("/*")
        .or_else(|| rest.strip_suffix('/'))
        .unwrap_or(rest);
    if ds.is_empty() || ds.contains(['/', '*', '?']) {
        return Err(format!(
            "Resource `{resource}`: s3p narrows to whole data sources (arn:aws:s3:::{bucket}/<dataSource>/*)."
        ));
    }
    Ok(Scope::One(ds.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(policy: &str) -> Result<Vec<(String, Access)>, String> {
        let g = grants_of(policy, "immuta")?;
        let mut out: Vec<(String, Access)> =
            g.every.map(|a| ("*".to_string(), a)).into_iter().collect();
        out.extend(g.named);
        Ok(out)
    }

    fn doc(statements: &str) -> String {
        format!(r#"{{"Version":"2012-10-17","Statement":{statements}}}"#)
    }

    #[test]
    fn what_policies_allow() {
        use Access::*;
        let table: Vec<(&str, Vec<(&str, Access)>)> = vec![
            // The usual read-only policy: ListBucket on the bucket grants nothing by itself.
            (
                r#"[{"Effect":"Allow","Action":["s3:GetObject","s3:ListBucket"],"Resource":["arn:aws:s3:::immuta","arn:aws:s3:::immuta/sales/*"]}]"#,
                vec![("sales", Read)],
            ),
            (
                r#"{"Effect":"Allow","Action":"s3:*","Resource":"arn:aws:s3:::immuta/sandbox/*"}"#,
                vec![("sandbox", Write)],
            ),
            (
                r#"[{"Effect":"Allow","Action":"s3:Get*","Resource":"*"}]"#,
                vec![("*", Read)],
            ),
            (
                r#"[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::immuta/*"},
                    {"Sid":"w","Effect":"Allow","Action":["s3:PutObject","s3:GetObject"],"Resource":"arn:aws:s3:::immuta/sandbox"}]"#,
                vec![("*", Read), ("sandbox", Write)],
            ),
            // Write on one, read everywhere: the read comes from the wildcard.
            (
                r#"[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"},
                    {"Effect":"Allow","Action":"s3:PutObject","Resource":"arn:aws:s3:::immuta/sandbox/"}]"#,
                vec![("*", Read), ("sandbox", Write)],
            ),
            // Bucket and account actions on `*` grant nothing: only the object read on `sales` counts.
            (
                r#"[{"Effect":"Allow","Action":["s3:ListAllMyBuckets","s3:GetBucketLocation","s3:ListBucket"],"Resource":"*"},
                    {"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::immuta/sales/*"}]"#,
                vec![("sales", Read)],
            ),
            (
                r#"[{"Effect":"Allow","Action":["s3:GetObject","s3:PutBucketAcl","s3:PutBucketPolicy"],"Resource":"*"}]"#,
                vec![("*", Read)],
            ),
            // Wildcards match as IAM's do.
            (
                r#"[{"Effect":"Allow","Action":["s3:GetObj*","s3:?utObject"],"Resource":"arn:aws:s3:::immuta/sandbox/*"}]"#,
                vec![("sandbox", Write)],
            ),
            // Other buckets and other services grant nothing.
            (
                r#"[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::other/sales/*"},
                    {"Effect":"Allow","Action":"ec2:*","Resource":"*"}]"#,
                vec![],
            ),
        ];
        for (statements, expected) in table {
            let expected: Vec<(String, Access)> = expected
                .into_iter()
                .map(|(d, a)| (d.to_string(), a))
                .collect();
            assert_eq!(grants(&doc(statements)).unwrap(), expected, "{statements}");
        }
    }

    #[test]
    fn iam_wildcards() {
        for (pattern, action, expected) in [
            ("s3:getobject", "s3:getobject", true),
            ("s3:get*", "s3:getobject", true),
            ("s3:*object", "s3:getobject", true),
            ("*", "s3:putobject", true),
            ("s3:?etobject", "s3:getobject", true),
            ("s3:getobject", "s3:getobjectversion", false),
            ("s3:list*", "s3:getobject", false),
            ("s3:getbucket*", "s3:getobject", false),
            ("", "s3:getobject", false),
        ] {
            assert_eq!(
                wildcard_match(pattern, action),
                expected,
                "{pattern} ~ {action}"
            );
        }
    }

    #[test]
    fn what_cannot_be_honoured_is_refused() {
        for statements in [
            r#"[{"Effect":"Deny","Action":"s3:*","Resource":"*"}]"#,
            r#"[{"Effect":"Allow","NotAction":"s3:PutObject","Resource":"*"}]"#,
            r#"[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*","Condition":{"IpAddress":{}}}]"#,
            r#"[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::immuta/sales/2024/*"}]"#,
            r#"[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::immuta/sal*"}]"#,
            r#"[{"Effect":"Allow","Action":"s3:PutObject","Resource":"arn:aws:s3:::immuta/sandbox/*"}]"#,
            r#"[{"Effect":"Allow","Resource":"*"}]"#,
            r#"[{"Action":"s3:GetObject","Resource":"*"}]"#,
            r#"[{"Effect":"Allow","Action":[1],"Resource":"*"}]"#,
            r#""not a statement""#,
        ] {
            assert!(grants(&doc(statements)).is_err(), "{statements}");
        }
        assert!(grants("not json").is_err());
        assert!(grants(r#"{"Version":"2012-10-17"}"#).is_err());
        assert!(grants(&format!(
            r#"{{"Statement":[],"Pad":"{}"}}"#,
            "x".repeat(MAX_POLICY_CHARS)
        ))
        .is_err());
    }
}
