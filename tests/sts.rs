//! Temporary credentials (`sts:`), end to end: s3p's STS API in front of the suite's Garage, sessions
//! minted by real clients (the aws CLI, boto3) and by the legacy header, used by boto3, DuckDB, pyarrow,
//! rclone and the AWS SDK; tokens checked on every request (tampered, foreign, expired, another key's),
//! across replicas, under a narrowed or revoked parent; OIDC tokens verified (ES256 from a file, RS256
//! from a URL; wrong audience, expired, unknown key). Each test starts its own s3p.

mod common;

use aws_sdk_s3::error::ProvideErrorMetadata;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::immuta::Immuta;
use common::*;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const WRITER: &str = "writer-api-key";
const WRITER_SECRET: &str = "writer-secret-0123456789";
const WRITER_LEGACY: &str = "writer-legacy-token";
const ROLE_ARN: &str = "arn:aws:iam::000000000000:role/analyst";
const ISSUER: &str = "https://idp.s3p.test";
const URL_ISSUER: &str = "https://other-idp.s3p.test";

/// The suite's configuration, with a writable `sandbox`, keys that may write it, and `sts` on (a 2 s
/// minimum duration, so that expiry is tested in seconds).
fn config(extra_sts: &str) -> String {
    let f = fixture();
    let yaml = standard_config(&f.garage).replace(
        "api_keys:\n",
        &format!(
            "  sandbox: {{ backend: garage, bucket: {BETA_BUCKET}, prefix: sandbox/, writable: true }}\n\
             api_keys:\n\
             \x20 - {{ id: {WRITER}, secret: {WRITER_SECRET}, name: Writer, data_sources: {{ sales: read, data: read, sandbox: write }} }}\n\
             \x20 - {{ id: {WRITER_LEGACY}, name: Writer by header, data_sources: {{ sales: read, data: read, sandbox: write }} }}\n"
        ),
    );
    format!("{yaml}sts:\n  min_duration_s: 2\n{extra_sts}")
}

fn start(name: &str, yaml: &str) -> S3p {
    S3p::start(
        &fixture()
            .dir
            .join(format!("s3p-sts-{name}-{}", free_port())),
        yaml,
    )
}

/// Temporary credentials, as an STS answer gives them.
#[derive(Clone, Debug)]
struct Creds {
    akid: String,
    secret: String,
    token: String,
}

fn tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(&xml[start..end])
}

fn creds_of(r: &RawResponse) -> Creds {
    let xml = r.text();
    assert_eq!(r.status, 200, "{xml}");
    Creds {
        akid: tag(&xml, "AccessKeyId").unwrap().to_string(),
        secret: tag(&xml, "SecretAccessKey").unwrap().to_string(),
        token: tag(&xml, "SessionToken").unwrap().to_string(),
    }
}

/// An STS call with a form body (`Authorization` as given, or none).
fn sts_call(s3p: &S3p, authorization: Option<&str>, form: &str) -> RawResponse {
    let mut headers = vec![
        (
            "content-type".to_string(),
            "application/x-www-form-urlencoded; charset=utf-8".to_string(),
        ),
        ("content-length".to_string(), form.len().to_string()),
        ("host".to_string(), s3p.addr().to_string()),
    ];
    if let Some(a) = authorization {
        headers.push(("authorization".to_string(), a.to_string()));
    }
    send(s3p.addr(), "POST", "/sts", &headers, form.as_bytes())
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// AssumeRole with the legacy header of `key`.
fn assume(s3p: &S3p, key: &str, extra: &str) -> RawResponse {
    let form = format!(
        "Action=AssumeRole&Version=2011-06-15&RoleArn={}&RoleSessionName=test-session{extra}",
        enc(ROLE_ARN)
    );
    sts_call(s3p, Some(&format!("AWS {key}:immuta")), &form)
}

fn session_client(s3p: &S3p, c: &Creds) -> aws_sdk_s3::Client {
    let http = aws_smithy_http_client::Builder::new().build_http();
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        // aws-sdk-rust keeps the base path only with a trailing slash on the endpoint.
        .endpoint_url(format!("{}/", s3p.endpoint()))
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            &c.akid,
            &c.secret,
            Some(c.token.clone()),
            None,
            "sts",
        ))
        .force_path_style(true)
        .http_client(http)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Reads `vkey` with the session: its body, or the S3 error code.
fn read(s3p: &S3p, c: &Creds, vkey: &str) -> Result<Vec<u8>, String> {
    let client = session_client(s3p, c);
    runtime().block_on(async {
        match client.get_object().bucket("immuta").key(vkey).send().await {
            Ok(o) => Ok(o.body.collect().await.unwrap().into_bytes().to_vec()),
            Err(e) => Err(e.code().unwrap_or("no code").to_string()),
        }
    })
}

fn write(s3p: &S3p, c: &Creds, vkey: &str) -> Result<(), String> {
    let client = session_client(s3p, c);
    runtime().block_on(async {
        client
            .put_object()
            .bucket("immuta")
            .key(vkey)
            .body(b"from a session".to_vec().into())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| e.code().unwrap_or("no code").to_string())
    })
}

fn aws_cli() -> String {
    std::env::var("S3P_AWS_CLI").unwrap_or_else(|_| "aws".into())
}

/// [`aws`], which must succeed: its standard output.
fn aws_ok(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> String {
    let out = aws(dir, env, args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "aws {args:?}: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The aws CLI with explicit credentials (and a session token when given), nothing inherited.
fn aws(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("config");
    std::fs::write(&config, "[default]\ns3 =\n    addressing_style = path\n").unwrap();
    let mut cmd = Command::new(aws_cli());
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", &config)
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("none"))
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("the aws CLI is required ({}): {e}", aws_cli()))
}

#[test]
fn the_aws_cli_assumes_a_role_and_uses_the_session() {
    let s3p = start("cli", &config(""));
    let dir = fixture().dir.join(format!("sts-cli-{}", free_port()));
    let sts_url = format!("http://{}/sts", s3p.addr());
    let stdout = aws_ok(
        &dir,
        &[
            ("AWS_ACCESS_KEY_ID", WRITER),
            ("AWS_SECRET_ACCESS_KEY", WRITER_SECRET),
        ],
        &[
            "sts",
            "assume-role",
            "--endpoint-url",
            &sts_url,
            "--role-arn",
            ROLE_ARN,
            "--role-session-name",
            "cli-job",
            "--duration-seconds",
            "900",
        ],
    );
    let answer: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let c = &answer["Credentials"];
    let (akid, secret, token) = (
        c["AccessKeyId"].as_str().unwrap(),
        c["SecretAccessKey"].as_str().unwrap(),
        c["SessionToken"].as_str().unwrap(),
    );
    assert!(akid.starts_with("ASIA"), "{akid}");
    let session_env = [
        ("AWS_ACCESS_KEY_ID", akid),
        ("AWS_SECRET_ACCESS_KEY", secret),
        ("AWS_SESSION_TOKEN", token),
    ];
    // `aws sts get-caller-identity`, what jobs run first: the session, then the key itself.
    let who = |env: &[(&str, &str)]| {
        let stdout = aws_ok(
            &dir,
            env,
            &["sts", "get-caller-identity", "--endpoint-url", &sts_url],
        );
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap()
    };
    let me = who(&session_env);
    assert_eq!(
        me["Arn"],
        "arn:aws:sts::000000000000:assumed-role/analyst/cli-job"
    );
    assert_eq!(me["Account"], "000000000000");
    let me = who(&[
        ("AWS_ACCESS_KEY_ID", WRITER),
        ("AWS_SECRET_ACCESS_KEY", WRITER_SECRET),
    ]);
    assert_eq!(me["Arn"], "arn:aws:iam::000000000000:user/Writer");
    assert!(!me.to_string().contains(WRITER), "the key id is not shown");
    let endpoint = s3p.endpoint();
    let stdout = aws_ok(
        &dir,
        &session_env,
        &[
            "s3",
            "cp",
            "s3://immuta/sales/plain.txt",
            "-",
            "--endpoint-url",
            &endpoint,
        ],
    );
    assert_eq!(stdout.as_bytes(), body_of("sales/plain.txt"));
    // The session lists what its key may read, nothing else.
    let listing = aws_ok(
        &dir,
        &session_env,
        &["s3", "ls", "s3://immuta/", "--endpoint-url", &endpoint],
    );
    for ds in ["sales/", "data/", "sandbox/"] {
        assert!(listing.contains(ds), "{listing}");
    }
    assert!(!listing.contains("data-private"), "{listing}");
    // It writes where its key may: `aws s3 cp` into sandbox.
    let file = dir.join("up.txt");
    std::fs::write(&file, "uploaded by a session").unwrap();
    aws_ok(
        &dir,
        &session_env,
        &[
            "s3",
            "cp",
            file.to_str().unwrap(),
            "s3://immuta/sandbox/cli-session.txt",
            "--endpoint-url",
            &endpoint,
        ],
    );
    // The audit lines name the parent and the session, never the token or the secret.
    let log = s3p.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let issued = lines
        .iter()
        .find(|l| l["operation"] == "AssumeRole")
        .expect("an audit line for the STS call");
    assert_eq!(issued["decision"], "allowed");
    assert_eq!(issued["api_key"], "Writer");
    let label = issued["session"].as_str().unwrap();
    assert!(label.starts_with("analyst/cli-job#"), "{label}");
    let get = lines
        .iter()
        .find(|l| l["operation"] == "GetObject")
        .expect("an audit line for the read");
    assert_eq!(get["api_key"], "Writer");
    assert_eq!(get["session"], label);
    for secret in [token, secret, WRITER_SECRET] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
}

#[test]
fn sessions_serve_boto3_duckdb_pyarrow_and_rclone() {
    let dir = fixture().dir.join(format!("sts-clients-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let idp = Idp::new(&dir);
    let s3p = start("clients", &config(&idp.sts_yaml(None)));
    let python = std::env::var("S3P_PYTHON").unwrap_or_else(|_| "python3".into());
    let rclone = std::env::var("S3P_RCLONE").unwrap_or_else(|_| "rclone".into());
    let now = unix_now();
    let spec = serde_json::json!({
        "s3_url": s3p.endpoint(),
        "sts_url": format!("http://{}/sts", s3p.addr()),
        "host_port": s3p.addr().to_string(),
        "region": "us-east-1",
        "writer": WRITER,
        "writer_secret": WRITER_SECRET,
        "role_arn": ROLE_ARN,
        "plain_body": String::from_utf8(body_of("sales/plain.txt")).unwrap(),
        "jwt": idp.es256(&claims(ISSUER, "s3p", now + 300, &["readers"])),
        "rclone": rclone,
    });
    let spec_path = dir.join("spec.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/sts_clients.py");
    let mut cmd = Command::new(&python);
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") || k.starts_with("RCLONE_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .arg(&script)
        .arg(&spec_path)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", dir.join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("none"))
        .env("HOME", &dir)
        .output()
        .unwrap_or_else(|e| panic!("python with the clients is required ({python}): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every check ran and passed (none skipped).
    assert_eq!(stdout.matches(": PASS").count(), 7, "{stdout}");
}

#[test]
fn tokens_are_checked_on_every_request() {
    let admin = free_port();
    let yaml = config("").replace(
        "listen: 127.0.0.1:{PORT}\n",
        &format!("listen: 127.0.0.1:{{PORT}}\nadmin_listen: 127.0.0.1:{admin}\n"),
    );
    let s3p = start("tokens", &yaml);
    let c = creds_of(&assume(&s3p, WRITER_LEGACY, "&DurationSeconds=3"));
    assert_eq!(
        read(&s3p, &c, "sales/plain.txt").unwrap(),
        body_of("sales/plain.txt")
    );
    // Tampered: one character of the token changed.
    let mut tampered = c.clone();
    let mut bytes = tampered.token.into_bytes();
    bytes[20] = if bytes[20] == b'A' { b'B' } else { b'A' };
    tampered.token = String::from_utf8(bytes).unwrap();
    assert_eq!(
        read(&s3p, &tampered, "sales/plain.txt").unwrap_err(),
        "InvalidToken"
    );
    // Truncated.
    let mut truncated = c.clone();
    truncated.token.truncate(c.token.len() - 4);
    assert_eq!(
        read(&s3p, &truncated, "sales/plain.txt").unwrap_err(),
        "InvalidToken"
    );
    // Another session's token with this session's key id and secret.
    let other = creds_of(&assume(&s3p, WRITER_LEGACY, ""));
    let swapped = Creds {
        token: other.token.clone(),
        ..c.clone()
    };
    assert_eq!(
        read(&s3p, &swapped, "sales/plain.txt").unwrap_err(),
        "InvalidToken"
    );
    // A long-lived key with a token it was not issued.
    let long_lived = Creds {
        akid: ALICE.into(),
        secret: ALICE_SECRET.into(),
        token: c.token.clone(),
    };
    assert_eq!(
        read(&s3p, &long_lived, "sales/plain.txt").unwrap_err(),
        "InvalidToken"
    );
    // The session's key id and secret without the token: an unknown key.
    let no_token = sdk_client(
        &format!("{}/", s3p.endpoint()),
        &c.akid,
        &c.secret,
        "us-east-1",
    );
    let code = runtime().block_on(async {
        no_token
            .get_object()
            .bucket("immuta")
            .key("sales/plain.txt")
            .send()
            .await
            .unwrap_err()
            .code()
            .map(str::to_string)
    });
    assert_eq!(code.as_deref(), Some("InvalidAccessKeyId"));
    // The right token with a wrong secret: the signature does not match.
    let wrong_secret = Creds {
        secret: "not-the-derived-secret-0000000000000000".into(),
        ..c.clone()
    };
    assert_eq!(
        read(&s3p, &wrong_secret, "sales/plain.txt").unwrap_err(),
        "SignatureDoesNotMatch"
    );
    // A raw request: the answer is S3's error XML, 400 InvalidToken, naming nothing of the token.
    let headers = [
        ("Authorization", format!("AWS {ALICE_LEGACY}:immuta")),
        ("x-amz-security-token", "made-up".to_string()),
    ];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let r = raw(s3p.addr(), "GET", "/s3p/immuta/sales/plain.txt", &headers);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("<Code>InvalidToken</Code>"),
        "{}",
        r.text()
    );
    // Expiry: the 3-second session stops.
    std::thread::sleep(Duration::from_millis(3200));
    assert_eq!(
        read(&s3p, &c, "sales/plain.txt").unwrap_err(),
        "ExpiredToken"
    );
    // The metrics count issued sessions and refused tokens.
    let metrics = raw(
        format!("127.0.0.1:{admin}").parse().unwrap(),
        "GET",
        "/metrics",
        &[],
    )
    .text();
    for line in [
        "s3p_sts_calls_total{action=\"AssumeRole\",result=\"issued\"} 2",
        "s3p_auth_failures_total{reason=\"ExpiredToken\"} 1",
        "s3p_auth_failures_total{reason=\"InvalidToken\"} 5",
    ] {
        assert!(metrics.contains(line), "{line} not in {metrics}");
    }
    // A presigned URL of a session carries its token, and works (SDK presigning).
    let fresh = creds_of(&assume(&s3p, WRITER_LEGACY, ""));
    let client = session_client(&s3p, &fresh);
    let url = runtime().block_on(async {
        client
            .get_object()
            .bucket("immuta")
            .key("sales/plain.txt")
            .presigned(
                aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(60))
                    .unwrap(),
            )
            .await
            .unwrap()
            .uri()
            .to_string()
    });
    assert!(url.contains("X-Amz-Security-Token="), "{url}");
    let target = url.split_once(&s3p.addr().to_string()).unwrap().1;
    let r = raw(s3p.addr(), "GET", target, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, body_of("sales/plain.txt"));
}

#[test]
fn sessions_are_narrowed_by_policy_and_role_and_bound_by_their_parent() {
    let yaml = config(
        "  roles:\n    analyst: { data_sources: { sales: read, data: read, sandbox: write } }\n    sales-reader: { data_sources: [sales] }\n",
    );
    let s3p = start("narrow", &yaml);
    // A policy narrows to sales read.
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:GetObject","s3:ListBucket"],"Resource":["arn:aws:s3:::immuta","arn:aws:s3:::immuta/sales/*"]}]}"#;
    let narrow = creds_of(&assume(
        &s3p,
        WRITER_LEGACY,
        &format!("&Policy={}", enc(policy)),
    ));
    assert!(read(&s3p, &narrow, "sales/plain.txt").is_ok());
    assert_eq!(
        read(&s3p, &narrow, "data/q1.csv").unwrap_err(),
        "AccessDenied"
    );
    assert_eq!(
        write(&s3p, &narrow, "sandbox/narrow.txt").unwrap_err(),
        "AccessDenied"
    );
    // A role caps: `sales-reader` reads sales only, whatever the key may.
    let form = format!(
        "Action=AssumeRole&Version=2011-06-15&RoleArn={}&RoleSessionName=capped",
        enc("arn:aws:iam::000000000000:role/sales-reader")
    );
    let capped = creds_of(&sts_call(
        &s3p,
        Some(&format!("AWS {WRITER_LEGACY}:immuta")),
        &form,
    ));
    assert!(read(&s3p, &capped, "sales/plain.txt").is_ok());
    assert_eq!(
        read(&s3p, &capped, "data/q1.csv").unwrap_err(),
        "AccessDenied"
    );
    // A role that is not configured is refused.
    let form = format!(
        "Action=AssumeRole&Version=2011-06-15&RoleArn={}&RoleSessionName=capped",
        enc("arn:aws:iam::000000000000:role/admin")
    );
    let r = sts_call(&s3p, Some(&format!("AWS {WRITER_LEGACY}:immuta")), &form);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("<Code>AccessDenied</Code>"));
    // The whole session writes where its key may.
    let whole = creds_of(&assume(&s3p, WRITER_LEGACY, ""));
    write(&s3p, &whole, "sandbox/whole.txt").unwrap();
    assert!(read(&s3p, &whole, "data/q1.csv").is_ok());
    // A role narrowed or removed (a reload): its sessions narrow or end with it.
    let roles_changed = yaml.replace(
        "    analyst: { data_sources: { sales: read, data: read, sandbox: write } }\n    sales-reader: { data_sources: [sales] }\n",
        "    analyst: { data_sources: { sales: read, sandbox: write } }\n",
    );
    assert_ne!(roles_changed, yaml);
    reload(&s3p, &roles_changed);
    assert_eq!(
        read(&s3p, &capped, "sales/plain.txt").unwrap_err(),
        "InvalidToken"
    );
    assert!(read(&s3p, &whole, "sales/plain.txt").is_ok());
    assert_eq!(
        read(&s3p, &whole, "data/q1.csv").unwrap_err(),
        "AccessDenied"
    );
    reload(&s3p, &yaml);
    assert!(read(&s3p, &whole, "data/q1.csv").is_ok());
    // The parent narrowed (a reload): its sessions narrow with it at once.
    let narrowed = yaml.replace(
        &format!("{{ id: {WRITER_LEGACY}, name: Writer by header, data_sources: {{ sales: read, data: read, sandbox: write }} }}"),
        &format!("{{ id: {WRITER_LEGACY}, name: Writer by header, data_sources: [sales] }}"),
    );
    assert_ne!(narrowed, yaml);
    reload(&s3p, &narrowed);
    assert!(read(&s3p, &whole, "sales/plain.txt").is_ok());
    assert_eq!(
        read(&s3p, &whole, "data/q1.csv").unwrap_err(),
        "AccessDenied"
    );
    assert_eq!(
        write(&s3p, &whole, "sandbox/whole2.txt").unwrap_err(),
        "AccessDenied"
    );
    // The parent removed: its sessions end.
    let removed = narrowed.replace(
        &format!("  - {{ id: {WRITER_LEGACY}, name: Writer by header, data_sources: [sales] }}\n"),
        "",
    );
    assert_ne!(removed, narrowed);
    reload(&s3p, &removed);
    assert_eq!(
        read(&s3p, &whole, "sales/plain.txt").unwrap_err(),
        "InvalidToken"
    );
}

/// Rewrites the configuration and reloads it (SIGHUP), waiting for the log to say so.
fn reload(s3p: &S3p, yaml: &str) {
    let yaml = yaml.replace("{PORT}", &s3p.port.to_string());
    std::fs::write(&s3p.config_path, yaml).unwrap();
    let needle = format!("reloaded {}", s3p.config_path.display());
    let before = s3p.log().matches(&needle).count();
    s3p.signal("HUP");
    for _ in 0..200 {
        if s3p.log().matches(&needle).count() > before {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("no reload: {}", s3p.log());
}

#[test]
fn a_session_from_one_replica_works_on_another_with_the_same_secret() {
    let yaml = config("");
    let a = start("replica-a", &yaml);
    let b = start("replica-b", &yaml);
    let c = creds_of(&assume(&a, WRITER_LEGACY, ""));
    assert_eq!(
        read(&b, &c, "sales/plain.txt").unwrap(),
        body_of("sales/plain.txt")
    );
    // A deployment with another token_secret does not know it; one that rotated keeps it.
    let other = start(
        "replica-other",
        &yaml.replace(
            "test-token-secret-0123456789",
            "another-token-secret-000000",
        ),
    );
    assert_eq!(
        read(&other, &c, "sales/plain.txt").unwrap_err(),
        "InvalidToken"
    );
    let rotated = start(
        "replica-rotated",
        &yaml.replace(
            "token_secret: test-token-secret-0123456789",
            "token_secret: rotated-token-secret-00000\nprevious_token_secrets: [test-token-secret-0123456789]",
        ),
    );
    assert!(read(&rotated, &c, "sales/plain.txt").is_ok());
}

#[test]
fn sts_calls_are_refused_clearly() {
    let s3p = start("refusals", &config(""));
    let code = |r: &RawResponse| tag(&r.text(), "Code").unwrap_or("").to_string();
    let base = format!(
        "Action=AssumeRole&Version=2011-06-15&RoleArn={}&RoleSessionName=s1",
        enc(ROLE_ARN)
    );
    let legacy_auth = format!("AWS {WRITER_LEGACY}:immuta");
    let table: Vec<(Option<&str>, String, u16, &str)> = vec![
        (None, base.clone(), 403, "MissingAuthenticationToken"),
        (
            Some("AWS nobody-knows-me:immuta"),
            base.clone(),
            403,
            "InvalidClientTokenId",
        ),
        (
            Some(&legacy_auth),
            base.replace("AssumeRole&", "GetSessionToken&"),
            400,
            "InvalidAction",
        ),
        (
            Some(&legacy_auth),
            format!("{base}&DurationSeconds=50000"),
            400,
            "ValidationError",
        ),
        (
            Some(&legacy_auth),
            base.replace("RoleSessionName=s1", "RoleSessionName=has%20space"),
            400,
            "ValidationError",
        ),
        (
            Some(&legacy_auth),
            format!(
                "{base}&Policy={}",
                enc(
                    r#"{"Statement":[{"Effect":"Allow","Action":"s3:PutObject","Resource":"arn:aws:s3:::immuta/sandbox/*"}]}"#
                )
            ),
            400,
            "MalformedPolicyDocument",
        ),
        (
            Some(&legacy_auth),
            format!("{base}&PolicyArns.member.1.arn=x"),
            400,
            "InvalidParameterValue",
        ),
    ];
    for (auth, form, status, expected) in table {
        let r = sts_call(&s3p, auth, &form);
        assert_eq!(
            (r.status, code(&r).as_str()),
            (status, expected),
            "{form}: {}",
            r.text()
        );
        assert!(r
            .text()
            .contains("<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"));
    }
    // A body over the limit is refused before it is read.
    let headers = vec![
        ("content-length".to_string(), "1000000".to_string()),
        ("authorization".to_string(), legacy_auth.clone()),
    ];
    let r = send(s3p.addr(), "POST", "/sts", &headers, b"");
    assert_eq!(r.status, 400, "{}", r.text());
    // A session cannot mint another.
    let c = creds_of(&assume(&s3p, WRITER_LEGACY, ""));
    let dir = fixture().dir.join(format!("sts-chain-{}", free_port()));
    let sts_url = format!("http://{}/sts", s3p.addr());
    let assume_role = |env: &[(&str, &str)], name: &str| {
        let args = [
            "sts",
            "assume-role",
            "--endpoint-url",
            &sts_url,
            "--role-arn",
            ROLE_ARN,
        ];
        aws(
            &dir,
            env,
            &[&args[..], &["--role-session-name", name]].concat(),
        )
    };
    let out = assume_role(
        &[
            ("AWS_ACCESS_KEY_ID", &c.akid),
            ("AWS_SECRET_ACCESS_KEY", &c.secret),
            ("AWS_SESSION_TOKEN", &c.token),
        ],
        "chained",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("AccessDenied"));
    // A wrong secret: SignatureDoesNotMatch, as STS says it.
    let out = assume_role(
        &[
            ("AWS_ACCESS_KEY_ID", WRITER),
            ("AWS_SECRET_ACCESS_KEY", "not-the-secret-0000000"),
        ],
        "wrong",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SignatureDoesNotMatch"));
    // Every refusal is audited as denied or failed, with its code.
    let log = s3p.log();
    assert!(log.contains("\"operation\":\"AssumeRole\""), "{log}");
    assert!(
        log.contains("\"reason\":\"MissingAuthenticationToken\""),
        "{log}"
    );
}

#[test]
fn a_key_only_the_governance_service_knows_mints_sessions_bound_by_its_subscriptions() {
    let immuta = Immuta::start();
    immuta.add_key("svc-key-sts", "Dana");
    immuta.subscribe("svc-key-sts", "sales", Some("READ"), None);
    immuta.subscribe("svc-key-sts", "data", Some("READ"), None);
    let yaml = config("").replace(
        "data_sources:\n",
        &format!(
            "entitlements:\n  source: http\n  http: {{ endpoint: \"{}\", timeout_ms: 1000, service_token: \"{}\" }}\n  cache: {{ allow_ttl_s: 1, deny_ttl_s: 1 }}\ndata_sources:\n",
            immuta.endpoint(),
            immuta.service_token()
        ),
    );
    let s3p = start("service", &yaml);
    let c = creds_of(&assume(&s3p, "svc-key-sts", ""));
    // SigV4 with the session, though the key itself can only be checked by the service.
    assert_eq!(
        read(&s3p, &c, "data/q1.csv").unwrap(),
        body_of("data/q1.csv")
    );
    // Unsubscribed at the service: the session loses it within the cache TTL.
    immuta.unsubscribe("svc-key-sts", "data");
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(read(&s3p, &c, "data/q1.csv").unwrap_err(), "AccessDenied");
    assert!(read(&s3p, &c, "sales/plain.txt").is_ok());
    // Revoked at the service: the session ends.
    immuta.revoke_key("svc-key-sts");
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(
        read(&s3p, &c, "sales/plain.txt").unwrap_err(),
        "InvalidToken"
    );
    assert!(
        !s3p.log().contains("svc-key-sts"),
        "the key is never logged"
    );
}

#[test]
fn web_identity_tokens_are_verified_and_mapped() {
    let dir = fixture().dir.join(format!("sts-oidc-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let idp = Idp::new(&dir);
    let jwks_server = JwksServer::start(idp.rsa_jwks());
    let s3p = start("oidc", &config(&idp.sts_yaml(Some(&jwks_server.url()))));
    let now = unix_now();
    let call = |token: &str| {
        let form = format!(
            "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn={}&RoleSessionName=oidc&WebIdentityToken={}",
            enc(ROLE_ARN),
            enc(token)
        );
        sts_call(&s3p, None, &form)
    };
    let code = |r: &RawResponse| tag(&r.text(), "Code").unwrap_or("").to_string();
    // Good ES256 token from the file issuer: `readers` -> sales read.
    let r = call(&idp.es256(&claims(ISSUER, "s3p", now + 300, &["readers"])));
    let c = creds_of(&r);
    assert!(r
        .text()
        .contains("<SubjectFromWebIdentityToken>user-42</SubjectFromWebIdentityToken>"));
    assert!(read(&s3p, &c, "sales/plain.txt").is_ok());
    assert_eq!(read(&s3p, &c, "data/q1.csv").unwrap_err(), "AccessDenied");
    assert_eq!(
        write(&s3p, &c, "sandbox/x.txt").unwrap_err(),
        "AccessDenied"
    );
    // The aws CLI, as README shows it (`--no-sign-request`: the token is the proof).
    let cli_dir = dir.join("cli");
    let token = idp.es256(&claims(ISSUER, "s3p", now + 300, &["readers"]));
    let stdout = aws_ok(
        &cli_dir,
        &[],
        &[
            "sts",
            "assume-role-with-web-identity",
            "--endpoint-url",
            &format!("http://{}/sts", s3p.addr()),
            "--no-sign-request",
            "--role-arn",
            ROLE_ARN,
            "--role-session-name",
            "cli-oidc",
            "--web-identity-token",
            &token,
        ],
    );
    assert!(
        stdout.contains("\"SubjectFromWebIdentityToken\": \"user-42\""),
        "{stdout}"
    );
    // Two groups: the union (`writers` -> sandbox write).
    let c = creds_of(&call(&idp.es256(&claims(
        ISSUER,
        "s3p",
        now + 300,
        &["readers", "writers"],
    ))));
    write(&s3p, &c, "sandbox/oidc.txt").unwrap();
    // Good RS256 token from the URL issuer.
    let c = creds_of(&call(&idp.rs256(&claims(
        URL_ISSUER,
        "s3p-url",
        now + 300,
        &["readers"],
    ))));
    assert!(read(&s3p, &c, "sales/plain.txt").is_ok());
    // Refusals.
    let foreign = Idp::new(&dir.join("foreign"));
    let table = [
        (
            idp.es256(&claims(ISSUER, "someone-else", now + 300, &["readers"])),
            400,
            "InvalidIdentityToken",
        ),
        (
            idp.es256(&claims(ISSUER, "s3p", now - 120, &["readers"])),
            400,
            "ExpiredTokenException",
        ),
        (
            foreign.es256(&claims(ISSUER, "s3p", now + 300, &["readers"])),
            400,
            "InvalidIdentityToken",
        ),
        (
            idp.es256(&claims(
                "https://not-trusted.example",
                "s3p",
                now + 300,
                &["readers"],
            )),
            400,
            "InvalidIdentityToken",
        ),
        (
            idp.es256(&claims(ISSUER, "s3p", now + 300, &["nobody"])),
            403,
            "AccessDenied",
        ),
        ("not.a.token".to_string(), 400, "InvalidIdentityToken"),
    ];
    for (token, status, expected) in table {
        let r = call(&token);
        assert_eq!(
            (r.status, code(&r).as_str()),
            (status, expected),
            "{}",
            r.text()
        );
    }
    // An `alg: none` token is refused before any key.
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
    let payload =
        URL_SAFE_NO_PAD.encode(claims(ISSUER, "s3p", now + 300, &["readers"]).to_string());
    let r = call(&format!("{header}.{payload}."));
    assert_eq!(code(&r), "InvalidIdentityToken");
    // An issuer no longer trusted (a reload): its sessions end; the other issuer's go on.
    let from_url = creds_of(&call(&idp.rs256(&claims(
        URL_ISSUER,
        "s3p-url",
        now + 300,
        &["readers"],
    ))));
    let file_session = creds_of(&call(&idp.es256(&claims(
        ISSUER,
        "s3p",
        now + 300,
        &["readers"],
    ))));
    let yaml = config(&idp.sts_yaml(Some(&jwks_server.url())));
    let start_of_url_issuer = yaml.find(&format!("    - issuer: {URL_ISSUER}")).unwrap();
    let only_url = format!(
        "{}{}",
        &yaml[..yaml.find(&format!("    - issuer: {ISSUER}")).unwrap()],
        &yaml[start_of_url_issuer..]
    );
    reload(&s3p, &only_url);
    assert_eq!(
        read(&s3p, &file_session, "sales/plain.txt").unwrap_err(),
        "InvalidToken"
    );
    assert!(read(&s3p, &from_url, "sales/plain.txt").is_ok());
    // The audit names the web identity (its email), and the session.
    let log = s3p.log();
    assert!(log.contains("\"api_key\":\"user42@example.com\""), "{log}");
    assert!(log.contains("\"operation\":\"AssumeRoleWithWebIdentity\""));
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(iss: &str, aud: &str, exp: u64, groups: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "iss": iss,
        "aud": aud,
        "sub": "user-42",
        "email": "user42@example.com",
        "exp": exp,
        "iat": exp.saturating_sub(600),
        "groups": groups,
    })
}

/// A test identity provider: an ES256 key (its JWKS in a file) and an RS256 key (its JWKS served by
/// [`JwksServer`]), made fresh for each test.
struct Idp {
    ec: ring::signature::EcdsaKeyPair,
    rsa: ring::signature::RsaKeyPair,
    jwks_file: PathBuf,
}

impl Idp {
    fn new(dir: &Path) -> Idp {
        use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        std::fs::create_dir_all(dir).unwrap();
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let ec = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let point = ec.public_key().as_ref();
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "ec-1", "use": "sig", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }]});
        let jwks_file = dir.join("jwks.json");
        std::fs::write(&jwks_file, jwks.to_string()).unwrap();
        // An RSA key from openssl (ring does not generate RSA keys), as PKCS#1 DER.
        let (pem, der) = (dir.join("rsa.pem"), dir.join("rsa.der"));
        for args in [
            vec![
                "genrsa",
                "-traditional",
                "-out",
                pem.to_str().unwrap(),
                "2048",
            ],
            vec![
                "rsa",
                "-in",
                pem.to_str().unwrap(),
                "-traditional",
                "-outform",
                "DER",
                "-out",
                der.to_str().unwrap(),
            ],
        ] {
            let out = Command::new("openssl")
                .args(&args)
                .output()
                .expect("openssl is required to make a test RSA key");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let rsa = ring::signature::RsaKeyPair::from_der(&std::fs::read(&der).unwrap()).unwrap();
        Idp { ec, rsa, jwks_file }
    }

    fn rsa_jwks(&self) -> String {
        let public = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(self.rsa.public());
        serde_json::json!({"keys": [{
            "kty": "RSA", "kid": "rsa-1", "use": "sig",
            "n": URL_SAFE_NO_PAD.encode(&public.n),
            "e": URL_SAFE_NO_PAD.encode(&public.e),
        }]})
        .to_string()
    }

    /// The `sts:` lines of the issuers: this file's (ES256) and, given a URL, the URL's (RS256).
    fn sts_yaml(&self, url: Option<&str>) -> String {
        let mut yaml = format!(
            "  web_identity:\n    - issuer: {ISSUER}\n      audiences: [s3p]\n      jwks_file: {}\n      name_claim: email\n      rules:\n        - {{ claim: groups, contains: readers, data_sources: [sales] }}\n        - {{ claim: groups, contains: writers, data_sources: {{ sales: read, sandbox: write }} }}\n",
            self.jwks_file.display()
        );
        if let Some(url) = url {
            yaml.push_str(&format!(
                "    - issuer: {URL_ISSUER}\n      audiences: [s3p-url]\n      jwks_url: {url}\n      rules:\n        - {{ claim: groups, contains: readers, data_sources: [sales] }}\n"
            ));
        }
        yaml
    }

    fn es256(&self, claims: &serde_json::Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","typ":"JWT","kid":"ec-1"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = ring::rand::SystemRandom::new();
        let sig = self.ec.sign(&rng, input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    fn rs256(&self, claims: &serde_json::Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT","kid":"rsa-1"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = ring::rand::SystemRandom::new();
        let mut sig = vec![0u8; self.rsa.public().modulus_len()];
        self.rsa
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &rng,
                input.as_bytes(),
                &mut sig,
            )
            .unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(&sig))
    }
}

/// Serves one JWKS document over HTTP on loopback (the provider's `jwks_uri`).
struct JwksServer {
    addr: std::net::SocketAddr,
}

impl JwksServer {
    fn start(jwks: String) -> JwksServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{jwks}",
                    jwks.len()
                );
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        JwksServer { addr }
    }

    fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }
}

#[test]
fn s3p_check_reads_every_issuers_keys() {
    let dir = fixture().dir.join(format!("sts-check-{}", free_port()));
    let idp = Idp::new(&dir);
    let jwks_server = JwksServer::start(idp.rsa_jwks());
    let check = |yaml: &str, args: &[&str]| {
        let path = dir.join("check.yaml");
        std::fs::write(&path, yaml.replace("{PORT}", &free_port().to_string())).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_s3p"))
            .args(["check", "--config"])
            .arg(&path)
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let good = config(&idp.sts_yaml(Some(&jwks_server.url())));
    let (code, text) = check(&good, &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("sts.web_identity[0]: {ISSUER} (1 key(s))")),
        "{text}"
    );
    assert!(
        text.contains(&format!("sts.web_identity[1]: {URL_ISSUER} (1 key(s))")),
        "{text}"
    );
    assert!(text.contains("jwks_url is plain http"), "{text}");
    // Offline, the URL is not fetched; the file still is.
    let (code, text) = check(&good, &["--offline"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("jwks_url not fetched offline"), "{text}");
    // A file that is missing, or holds no usable key, is a problem named by its field.
    let missing = good.replace(idp.jwks_file.to_str().unwrap(), "/nonexistent/jwks.json");
    let (code, text) = check(&missing, &["--offline"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("sts.web_identity[0]: the signing keys cannot be read"),
        "{text}"
    );
    let unusable = dir.join("unusable.json");
    std::fs::write(&unusable, r#"{"keys":[{"kty":"oct","k":"AAAA"}]}"#).unwrap();
    let (code, text) = check(
        &good.replace(idp.jwks_file.to_str().unwrap(), unusable.to_str().unwrap()),
        &["--offline"],
    );
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("no usable key"), "{text}");
    // Rules and paths are validated with the rest of the configuration.
    for (bad, field) in [
        (
            good.replace("contains: readers", "contains: readers, equals: x"),
            "rules[0]",
        ),
        (
            good.replace(
                "data_sources: [sales] }\n        - { claim: groups, contains: writers",
                "data_sources: [nope] }\n        - { claim: groups, contains: writers",
            ),
            "rules[0].data_sources",
        ),
        (
            good.replace("sts:\n", "sts:\n  path: /s3p/sts\n"),
            "sts.path",
        ),
        (
            good.replace("min_duration_s: 2", "min_duration_s: 0"),
            "sts",
        ),
    ] {
        assert_ne!(bad, good);
        let (code, text) = check(&bad, &["--offline"]);
        assert_eq!(code, Some(2), "{text}");
        assert!(text.contains(field), "{field}: {text}");
    }
}

#[test]
fn the_sts_path_takes_get_and_post_only_and_is_no_s3_path() {
    let s3p = start("methods", &config(""));
    let r = raw(
        s3p.addr(),
        "PUT",
        "/sts",
        &[
            ("Authorization", &format!("AWS {WRITER_LEGACY}:immuta")),
            ("content-length", "0"),
        ],
    );
    assert_eq!(r.status, 405, "{}", r.text());
    // AssumeRole as a GET with the query (the legacy header), as STS's Query API allows.
    let target = format!(
        "/sts?Action=AssumeRole&Version=2011-06-15&RoleArn={}&RoleSessionName=by-get",
        enc(ROLE_ARN)
    );
    let auth = format!("AWS {WRITER_LEGACY}:immuta");
    let r = raw(s3p.addr(), "GET", &target, &[("Authorization", &auth)]);
    let c = creds_of(&r);
    assert!(read(&s3p, &c, "sales/plain.txt").is_ok());
    // Without `sts:`, /sts is nothing s3p serves, and no token is accepted.
    let off = start(
        "off",
        &config("").replace("sts:\n  min_duration_s: 2\n", ""),
    );
    let r = raw(off.addr(), "GET", &target, &[("Authorization", &auth)]);
    assert_ne!(r.status, 200, "{}", r.text());
    assert_eq!(
        read(&off, &c, "sales/plain.txt").unwrap_err(),
        "InvalidToken"
    );
}

#[test]
fn forged_web_identity_tokens_meet_the_failed_authentication_throttle() {
    let dir = fixture().dir.join(format!("sts-throttle-{}", free_port()));
    let idp = Idp::new(&dir);
    let yaml = format!(
        "{}limits:\n  auth_failures_per_minute: 3\n",
        config(&idp.sts_yaml(None))
    );
    let s3p = start("throttle", &yaml);
    let now = unix_now();
    let forged =
        Idp::new(&dir.join("forged")).es256(&claims(ISSUER, "s3p", now + 300, &["readers"]));
    let form = format!(
        "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn={}&RoleSessionName=forged&WebIdentityToken={}",
        enc(ROLE_ARN),
        enc(&forged)
    );
    let codes: Vec<(u16, String)> = (0..5)
        .map(|_| {
            let r = sts_call(&s3p, None, &form);
            (r.status, tag(&r.text(), "Code").unwrap_or("").to_string())
        })
        .collect();
    assert_eq!(
        codes[0],
        (400, "InvalidIdentityToken".to_string()),
        "{codes:?}"
    );
    // STS's own code for it (boto3 backs off and retries on it).
    assert_eq!(codes[4], (400, "Throttling".to_string()), "{codes:?}");
}

#[test]
fn an_sts_body_is_held_in_the_body_budget() {
    // A budget of 1,000 bytes: a call announcing 2,000 is refused before its body is read; a small one
    // passes.
    let yaml = format!("{}limits:\n  max_buffered_body_bytes: 1000\n", config(""));
    let s3p = start("budget", &yaml);
    let headers = vec![
        ("content-length".to_string(), "2000".to_string()),
        (
            "authorization".to_string(),
            format!("AWS {WRITER_LEGACY}:immuta"),
        ),
    ];
    let r = send(s3p.addr(), "POST", "/sts", &headers, &[b'x'; 2000]);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("SlowDown"), "{}", r.text());
    assert!(creds_of(&assume(&s3p, WRITER_LEGACY, ""))
        .akid
        .starts_with("ASIA"));
}
