use super::*;
use crate::config::{Access, Config};

fn config(roles: &str) -> Config {
    let yaml = format!(
        r#"
token_secret: 0123456789abcdef
backends:
  b: {{ endpoint: "http://127.0.0.1:1", access_key_id: a, secret_access_key: s }}
data_sources:
  sales: {{ backend: b, bucket: bucket-a }}
  products: {{ backend: b, bucket: bucket-b }}
  sandbox: {{ backend: b, bucket: bucket-c, writable: true }}
sts:
  min_duration_s: 900
  max_duration_s: 7200
  default_duration_s: 3600
{roles}
"#
    );
    Config::from_yaml_str(&yaml, &|_| None).unwrap()
}

fn params(form: &str) -> Params {
    Params::parse("", form.as_bytes()).unwrap()
}

fn grants(pairs: &[(&str, Access)]) -> Entitlement {
    let mut g = Entitlement::default();
    for (ds, a) in pairs {
        if *ds == "*" {
            g.every = Some(*a);
        } else {
            g.named.insert(ds.to_string(), *a);
        }
    }
    g
}

const BASE: &str = "Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fanalyst&RoleSessionName=job-42";

#[test]
fn the_action_and_version_are_checked() {
    assert_eq!(params(BASE).action().unwrap(), Action::AssumeRole);
    assert_eq!(
        params("Action=GetCallerIdentity&Version=2011-06-15")
            .action()
            .unwrap(),
        Action::GetCallerIdentity
    );
    for (form, code) in [
        (
            "Action=GetSessionToken&Version=2011-06-15",
            S3ErrorCode::InvalidAction,
        ),
        (
            "Action=AssumeRole&Version=2099-01-01",
            S3ErrorCode::InvalidAction,
        ),
        ("Version=2011-06-15", S3ErrorCode::InvalidAction),
    ] {
        assert_eq!(params(form).action().unwrap_err().code, code, "{form}");
    }
    // A parameter given twice (query and body) is refused, not silently chosen.
    let twice = Params::parse("Action=AssumeRole", b"Action=AssumeRoleWithWebIdentity");
    assert_eq!(twice.unwrap_err().code, S3ErrorCode::ValidationError);
}

#[test]
fn the_parameters_are_read_within_their_bounds() {
    let c = config("");
    let sts = c.sts.as_ref().unwrap();
    let a = asked(&params(BASE), sts, "immuta").unwrap();
    assert_eq!(
        (a.role.as_str(), a.session_name.as_str(), a.duration_s),
        ("analyst", "job-42", 3600)
    );
    assert_eq!((a.policy.clone(), a.role_grants.clone()), (None, None));
    let with = |extra: &str| asked(&params(&format!("{BASE}&{extra}")), sts, "immuta");
    assert_eq!(with("DurationSeconds=900").unwrap().duration_s, 900);
    assert_eq!(with("DurationSeconds=7200").unwrap().duration_s, 7200);
    for (extra, code) in [
        ("DurationSeconds=899", S3ErrorCode::ValidationError),
        ("DurationSeconds=7201", S3ErrorCode::ValidationError),
        ("DurationSeconds=x", S3ErrorCode::ValidationError),
        (
            "PolicyArns.member.1.arn=arn%3Aaws%3Aiam%3A%3Aaws%3Apolicy%2FX",
            S3ErrorCode::InvalidParameterValue,
        ),
        ("Policy=%7B%7D", S3ErrorCode::MalformedPolicyDocument),
        ("Policy=", S3ErrorCode::ValidationError),
    ] {
        assert_eq!(with(extra).unwrap_err().code, code, "{extra}");
    }
    for form in [
        "Action=AssumeRole&Version=2011-06-15&RoleSessionName=job-42",
        "Action=AssumeRole&Version=2011-06-15&RoleArn=r",
        "Action=AssumeRole&Version=2011-06-15&RoleArn=r&RoleSessionName=x",
        "Action=AssumeRole&Version=2011-06-15&RoleArn=r&RoleSessionName=has%20space",
        "Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fa%23b&RoleSessionName=job-42",
        "Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2F&RoleSessionName=job-42",
    ] {
        assert_eq!(
            asked(&params(form), sts, "immuta").unwrap_err().code,
            S3ErrorCode::ValidationError,
            "{form}"
        );
    }
}

#[test]
fn roles_policies_and_the_caller_narrow_a_session() {
    use Access::*;
    let c = config("  roles:\n    analyst: { data_sources: { sales: read, sandbox: write } }\n    reader: { data_sources: all }");
    let sts = c.sts.as_ref().unwrap();
    let caller = grants(&[("*", Write)]);
    // The role caps.
    let a = asked(&params(BASE), sts, "immuta").unwrap();
    assert_eq!(
        a.narrow(&caller),
        grants(&[("sales", Read), ("sandbox", Write)])
    );
    // A policy narrows further: sales read only.
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:GetObject","s3:ListBucket"],"Resource":["arn:aws:s3:::immuta","arn:aws:s3:::immuta/sales/*"]}]}"#;
    let form = format!(
        "{BASE}&Policy={}",
        percent_encoding::utf8_percent_encode(policy, percent_encoding::NON_ALPHANUMERIC)
    );
    let a = asked(&params(&form), sts, "immuta").unwrap();
    assert_eq!(a.narrow(&caller), grants(&[("sales", Read)]));
    // A policy never widens: a reader of `products` asking for everything gets `products`.
    assert_eq!(
        a.narrow(&grants(&[("products", Read)])),
        Entitlement::default()
    );
    let a = asked(&params(&BASE.replace("analyst", "reader")), sts, "immuta").unwrap();
    assert_eq!(
        a.narrow(&grants(&[("products", Read)])),
        grants(&[("products", Read)])
    );
    assert_eq!(a.narrow(&caller), grants(&[("*", Read)]));
    // With roles configured, another role is refused.
    let other = BASE.replace("analyst", "admin");
    assert_eq!(
        asked(&params(&other), sts, "immuta").unwrap_err().code,
        S3ErrorCode::AccessDenied
    );
}

#[test]
fn claim_rules_grant_the_union_of_what_matches() {
    use Access::*;
    let yaml_rules = r#"
  web_identity:
    - issuer: https://idp.example
      audiences: [s3p]
      jwks_file: /dev/null
      rules:
        - { claim: groups, contains: analysts, data_sources: { sales: read, sandbox: write } }
        - { claim: groups, contains: catalog, data_sources: [products] }
        - { claim: realm_access.roles, contains: admin, data_sources: { "*": read } }
        - { claim: email, equals: ops@example.com, data_sources: [sales] }
"#;
    let c = config(yaml_rules);
    let rules = &c.sts.as_ref().unwrap().issuers[0].rules;
    let claims = |json: &str| match serde_json::from_str(json).unwrap() {
        Value::Object(m) => m,
        _ => unreachable!(),
    };
    let table = [
        (
            r#"{"groups":["analysts"]}"#,
            grants(&[("sales", Read), ("sandbox", Write)]),
        ),
        (
            r#"{"groups":["analysts","catalog"]}"#,
            grants(&[("products", Read), ("sales", Read), ("sandbox", Write)]),
        ),
        (r#"{"groups":"catalog"}"#, grants(&[("products", Read)])),
        (
            r#"{"realm_access":{"roles":["admin"]},"groups":["analysts"]}"#,
            grants(&[("*", Read), ("sandbox", Write)]),
        ),
        (r#"{"email":"ops@example.com"}"#, grants(&[("sales", Read)])),
        (r#"{"email":"OPS@example.com"}"#, Entitlement::default()),
        (r#"{"groups":["analysts-2"]}"#, Entitlement::default()),
        (r#"{}"#, Entitlement::default()),
    ];
    for (json, expected) in table {
        assert_eq!(claim_grants(rules, &claims(json)), expected, "{json}");
    }
}

#[test]
fn intersections_and_unions_of_grants() {
    use Access::*;
    let table = [
        (
            grants(&[("*", Write)]),
            grants(&[("sales", Read)]),
            grants(&[("sales", Read)]),
        ),
        (
            grants(&[("*", Read)]),
            grants(&[("sandbox", Write)]),
            grants(&[("sandbox", Read)]),
        ),
        (
            grants(&[("*", Read), ("sandbox", Write)]),
            grants(&[("*", Write)]),
            grants(&[("*", Read), ("sandbox", Write)]),
        ),
        (
            grants(&[("sales", Read)]),
            grants(&[("products", Read)]),
            Entitlement::default(),
        ),
        (grants(&[]), grants(&[("*", Write)]), Entitlement::default()),
    ];
    for (a, b, expected) in table {
        assert_eq!(a.intersect(&b), expected, "{a:?} ∩ {b:?}");
        assert_eq!(b.intersect(&a), expected, "{b:?} ∩ {a:?}");
    }
    assert_eq!(
        grants(&[("*", Read)]).union(&grants(&[("sandbox", Write), ("sales", Read)])),
        grants(&[("*", Read), ("sandbox", Write)])
    );
}
