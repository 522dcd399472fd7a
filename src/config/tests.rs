//! Unit tests of `proxy.yaml`: parsing, defaults and normalisation, and the problems validation reports
//! (each naming its field, none showing a secret).

use super::validate::check_segment_name;
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

#[test]
fn the_entitlement_source_is_configured_and_checked() {
    let base = r#"
token_secret: 0123456789abcdef
backends:
  b: { endpoint: "http://127.0.0.1:1", access_key_id: a, secret_access_key: s }
data_sources:
  sales: { backend: b, bucket: bucket-a, immuta_name: "Sales Data" }
  hr: { backend: b, bucket: bucket-b }
"#;
    // No section: the file source, every data source under its own name at the service.
    let c = Config::from_yaml_str(base, &|_| None).unwrap();
    assert_eq!(c.entitlements.http, None);
    assert_eq!(c.entitlements.names["sales"], "Sales Data");
    assert_eq!(c.entitlements.names["hr"], "hr");
    let with = |section: &str| {
        Config::from_yaml_str(&format!("{base}{section}"), &|n| {
            (n == "IMMUTA_TOKEN").then(|| "the-service-token".to_string())
        })
    };
    let c = with(
        "entitlements:\n  source: http\n  http: { endpoint: \"https://immuta.example:8443/\", auth: body, service_token: \"${IMMUTA_TOKEN}\" }\n  cache: { allow_ttl_s: 30, stale_if_error_s: 5 }\n",
    )
    .unwrap();
    let http = c.entitlements.http.unwrap();
    assert_eq!(http.endpoint, "https://immuta.example:8443");
    assert_eq!(http.auth, ServiceAuth::Body);
    assert_eq!(http.timeout_ms, 2000);
    assert_eq!(http.page_size, 100);
    assert_eq!(
        http.service_token.as_ref().map(|t| t.expose()),
        Some("the-service-token")
    );
    assert_eq!(
        http.cache,
        CachePolicy {
            allow_ttl_s: 30,
            deny_ttl_s: 10,
            max_entries: 10_000,
            stale_if_error_s: 5
        }
    );
    // Each problem names its field.
    #[rustfmt::skip]
    let refused = [
        ("entitlements: { source: ldap }", "entitlements.source"),
        ("entitlements: { source: http }", "entitlements.http"),
        ("entitlements: { source: file, http: { endpoint: \"http://x\" } }", "entitlements.http"),
        ("entitlements: { source: http, http: { endpoint: \"ftp://x\" } }", "entitlements.http.endpoint"),
        ("entitlements: { source: http, http: { endpoint: \"http://x/api\" } }", "entitlements.http.endpoint"),
        ("entitlements: { source: http, http: { endpoint: \"http://x\", timeout_ms: 0 } }", "entitlements.http.timeout_ms"),
        ("entitlements: { source: http, http: { endpoint: \"http://x\" }, cache: { max_entries: 0 } }", "entitlements.cache.max_entries"),
    ];
    for (section, field) in refused {
        let errors = with(&format!("{section}\n")).unwrap_err();
        assert!(
            errors.iter().any(|e| e.field == field),
            "{section}: {errors:?}"
        );
    }
    // Unknown fields are refused by the schema.
    assert!(
        with("entitlements: { source: http, http: { endpoint: \"http://x\", typo: 1 } }\n")
            .is_err()
    );
}
