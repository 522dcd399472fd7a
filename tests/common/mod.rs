//! Test harness: a real Garage server and a real s3p process on free loopback ports, seeded with data.
//! A missing Garage binary is a failure, never a skip.
#![allow(dead_code)]

use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const GARAGE_KEY_ID: &str = "GK0123456789abcdef01234567";
pub const GARAGE_SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
pub const ALPHA_BUCKET: &str = "alpha-real-bucket";
pub const BETA_BUCKET: &str = "beta-real-bucket";

/// API keys of the test configuration.
pub const ALICE: &str = "alice-api-key";
pub const ALICE_SECRET: &str = "alice-secret-0123456789";
pub const BOB: &str = "bob-api-key";
pub const BOB_SECRET: &str = "bob-secret-0123456789";
pub const NOLEGACY: &str = "nolegacy-api-key";
/// Alice's and Bob's keys for the legacy header: a key with a secret never accepts it (its id is public in
/// every signature), so each has a second, secret-less key with the same entitlements.
pub const ALICE_LEGACY: &str = "alice-legacy-token";
pub const BOB_LEGACY: &str = "bob-legacy-token";

/// Objects put on the backends: (bucket, backend key, body).
pub fn seed_objects() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut v: Vec<(&'static str, String, Vec<u8>)> = Vec::new();
    // `sales`: the root of alpha.
    for k in awkward_keys() {
        v.push((
            ALPHA_BUCKET,
            k.to_string(),
            format!("body of {k}").into_bytes(),
        ));
    }
    v.push((
        ALPHA_BUCKET,
        "big.bin".into(),
        (0..200_000u32).map(|i| (i % 251) as u8).collect(),
    ));
    // `data` and `data-private`: prefixes of beta; plus noise that must never show.
    for k in [
        "q1.csv",
        "2024/jan.csv",
        "2024/feb.csv",
        "dir/",
        "x y/z.json",
    ] {
        v.push((
            BETA_BUCKET,
            format!("data/{k}"),
            format!("data {k}").into_bytes(),
        ));
    }
    for k in ["salaries.csv", "2024/secret.csv"] {
        v.push((
            BETA_BUCKET,
            format!("data-private/{k}"),
            format!("private {k}").into_bytes(),
        ));
    }
    v.push((
        BETA_BUCKET,
        "outside/not-a-data-source.txt".into(),
        b"outside".to_vec(),
    ));
    v.push((
        BETA_BUCKET,
        "data".into(),
        b"object named like the prefix".to_vec(),
    ));
    v
}

/// The body of a seeded object, by its virtual key (`sales/...` lives at the root of alpha, `data/...` and
/// `data-private/...` under the same prefixes of beta).
pub fn body_of(vkey: &str) -> Vec<u8> {
    for (bucket, key, body) in seed_objects() {
        let v = if bucket == ALPHA_BUCKET {
            format!("sales/{key}")
        } else {
            key.clone()
        };
        if v == vkey {
            return body;
        }
    }
    panic!("no seed object {vkey}");
}

/// Keys with characters that break naive proxies.
pub fn awkward_keys() -> Vec<&'static str> {
    vec![
        "plain.txt",
        "with space.txt",
        "plus+sign.txt",
        "equals=sign&amp.txt",
        "percent%20literal.txt",
        "100%.txt",
        "caf\u{e9}/\u{fc}ber \u{2603}.txt",
        "(parens) [brackets].txt",
        "deep/a/b/c/d/e/f.txt",
        "dir/",
        "tilde~star*at@.txt",
    ]
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on port {port} within 30 s");
}

/// Kills `child` when this test process ends, however it ends (statics are never dropped).
/// The watchdog is never waited for on purpose: it must outlive the test process, and init reaps it.
#[allow(clippy::zombie_processes)]
fn kill_with_test_process(child: &Child) {
    let script = format!(
        "while kill -0 {} 2>/dev/null; do sleep 0.5; done; kill {} 2>/dev/null; sleep 1; kill -9 {} 2>/dev/null",
        std::process::id(),
        child.id(),
        child.id()
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("watchdog");
}

pub fn garage_binary() -> PathBuf {
    if let Ok(p) = std::env::var("S3P_GARAGE_BIN") {
        return PathBuf::from(p);
    }
    let cached = PathBuf::from(std::env::var("HOME").unwrap_or_default())
        .join(".cache/s3p/garage-2.5.0/bin/garage");
    if cached.exists() {
        return cached;
    }
    if let Ok(out) = Command::new("sh")
        .arg("-c")
        .arg("command -v garage")
        .output()
    {
        let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !p.is_empty() {
            return PathBuf::from(p);
        }
    }
    panic!("Garage is required for the end-to-end tests: install it (see .ci/run) or set S3P_GARAGE_BIN");
}

/// The admin API token of the test Garage.
pub const GARAGE_ADMIN_TOKEN: &str = "test-admin-token";

pub struct Garage {
    pub s3_port: u16,
    pub admin_port: u16,
    pub config_path: PathBuf,
    pub dir: PathBuf,
    child: Child,
}

impl Garage {
    pub fn start(dir: &Path) -> Garage {
        let bin = garage_binary();
        let (rpc, s3, admin) = (free_port(), free_port(), free_port());
        std::fs::create_dir_all(dir).unwrap();
        let config_path = dir.join("garage.toml");
        let toml = format!(
            r#"metadata_dir = "{d}/meta"
data_dir = "{d}/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:{admin}"
admin_token = "{GARAGE_ADMIN_TOKEN}"
"#,
            d = dir.display(),
            secret = "ab".repeat(32),
        );
        std::fs::write(&config_path, toml).unwrap();
        let log = std::fs::File::create(dir.join("garage.log")).unwrap();
        let mut child = Command::new(&bin)
            .arg("-c")
            .arg(&config_path)
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", GARAGE_KEY_ID)
            .env("GARAGE_DEFAULT_SECRET_KEY", GARAGE_SECRET)
            .env("GARAGE_DEFAULT_BUCKET", ALPHA_BUCKET)
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start Garage at {}: {e}", bin.display()));
        kill_with_test_process(&child);
        wait_for_port(s3, "Garage", &mut child);
        let g = Garage {
            s3_port: s3,
            admin_port: admin,
            config_path,
            dir: dir.to_path_buf(),
            child,
        };
        // The default bucket and key exist once the S3 API answers; add the second bucket.
        g.cli(&["bucket", "create", BETA_BUCKET]);
        g.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            BETA_BUCKET,
            "--key",
            GARAGE_KEY_ID,
        ]);
        g
    }

    pub fn cli(&self, args: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = Command::new(garage_binary())
                .arg("-c")
                .arg(&self.config_path)
                .args(args)
                .output()
                .unwrap();
            if out.status.success() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "garage {args:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// A client straight to Garage (for seeding and for comparisons).
    pub fn client(&self) -> aws_sdk_s3::Client {
        sdk_client(&self.endpoint(), GARAGE_KEY_ID, GARAGE_SECRET, "garage")
    }
}

/// An aws-sdk-s3 client with explicit credentials and region (never the metadata service).
pub fn sdk_client(endpoint: &str, key: &str, secret: &str, region: &str) -> aws_sdk_s3::Client {
    let http = aws_smithy_http_client::Builder::new().build_http();
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(region.to_string()))
        .credentials_provider(Credentials::new(key, secret, None, None, "test"))
        .force_path_style(true)
        .http_client(http)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

pub struct S3p {
    pub port: u16,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    child: Child,
}

impl S3p {
    pub fn start(dir: &Path, yaml: &str) -> S3p {
        S3p::start_with_env(dir, yaml, &[])
    }

    /// Starts s3p with extra environment variables (AWS_* variables of the test process are not passed).
    pub fn start_with_env(dir: &Path, yaml: &str, env: &[(&str, &str)]) -> S3p {
        S3p::start_at(dir, yaml, env, free_port())
    }

    /// Starts s3p with `{PORT}` of `yaml` set to `port` (a replica restarted on its address).
    pub fn start_at(dir: &Path, yaml: &str, env: &[(&str, &str)], port: u16) -> S3p {
        std::fs::create_dir_all(dir).unwrap();
        let yaml = yaml.replace("{PORT}", &port.to_string());
        let config_path = dir.join("proxy.yaml");
        std::fs::write(&config_path, yaml).unwrap();
        let log_path = dir.join("s3p.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_s3p"));
        for (name, _) in std::env::vars() {
            if name.starts_with("AWS_") {
                command.env_remove(name);
            }
        }
        command
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(env.iter().copied());
        let mut child = command
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start s3p");
        kill_with_test_process(&child);
        wait_for_port(port, "s3p", &mut child);
        S3p {
            port,
            config_path,
            log_path,
            child,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a Unix signal (`HUP`, `TERM`, `INT`) to the process.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/s3p", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Kills the process at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A connection from a chosen loopback source address (127.0.0.2 and up), so that per-address limits and
/// audit lines see one simulated client per address. Its receive buffer is small (4 KiB), so a client
/// that does not read stalls a download quickly.
pub fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    try_connect_from(source, to).unwrap()
}

pub fn try_connect_from(source: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let source: std::net::IpAddr = source.parse().unwrap();
    runtime().block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source, 0))?;
        socket.set_recv_buffer_size(4096)?;
        let stream = socket.connect(to).await?;
        let std = stream.into_std()?;
        std.set_nonblocking(false)?;
        std.set_read_timeout(Some(Duration::from_secs(20)))?;
        Ok(std)
    })
}

/// The standard test configuration: `sales` at the root of alpha, `data` and `data-private` under prefixes
/// of beta; alice reads everything, bob reads `sales` and `data`.
pub fn standard_config(garage: &Garage) -> String {
    format!(
        r#"listen: 127.0.0.1:{{PORT}}
base_path: /s3p
bucket: immuta
token_secret: test-token-secret-0123456789
backends:
  garage:
    endpoint: {endpoint}
    region: garage
    access_key_id: {GARAGE_KEY_ID}
    secret_access_key: {GARAGE_SECRET}
data_sources:
  sales: {{ backend: garage, bucket: {ALPHA_BUCKET} }}
  data: {{ backend: garage, bucket: {BETA_BUCKET}, prefix: data/ }}
  data-private: {{ backend: garage, bucket: {BETA_BUCKET}, prefix: data-private/ }}
api_keys:
  - id: {ALICE}
    secret: {ALICE_SECRET}
    name: Alice
    data_sources: all
  - id: {BOB}
    secret: {BOB_SECRET}
    name: Bob
    data_sources: [sales, data]
  - id: {NOLEGACY}
    name: No legacy
    legacy_header: false
    data_sources: all
  - id: {ALICE_LEGACY}
    name: Alice
    data_sources: all
  - id: {BOB_LEGACY}
    name: Bob
    data_sources: [sales, data]
"#,
        endpoint = garage.endpoint()
    )
}

pub struct Fixture {
    pub garage: Garage,
    pub s3p: S3p,
    pub dir: PathBuf,
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One Garage + s3p per test binary, seeded once.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        let dir =
            std::env::temp_dir().join(format!("s3p-test-{}-{}", std::process::id(), free_port()));
        let garage = Garage::start(&dir.join("garage"));
        let client = garage.client();
        runtime().block_on(async {
            for (bucket, key, body) in seed_objects() {
                client
                    .put_object()
                    .bucket(bucket)
                    .key(&key)
                    .body(ByteStream::from(body))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("seeding {bucket}/{key}: {e:?}"));
            }
        });
        let s3p = S3p::start(&dir.join("s3p"), &standard_config(&garage));
        Fixture { garage, s3p, dir }
    })
}

/// A raw HTTP/1.1 exchange, so tests control every byte of the request line and headers.
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// Everything the client received, for leak checks.
    pub fn all_bytes(&self) -> String {
        let mut s = String::new();
        for (n, v) in &self.headers {
            s.push_str(&format!("{n}: {v}\n"));
        }
        s.push_str(&self.text());
        s
    }
}

pub fn raw(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)]) -> RawResponse {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut req = format!("{method} {target} HTTP/1.1\r\nConnection: close\r\n");
    // A test may name its own Host (virtual-hosted style); otherwise the address is the host.
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).unwrap();
    parse_response(&buf)
}

/// A whole HTTP/1.1 response as read from a socket (a chunked body is de-chunked).
pub fn parse_response(buf: &[u8]) -> RawResponse {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    let mut body = buf[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    RawResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .expect("chunk size");
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// The legacy Immuta header for a key. `ALICE` and `BOB` stand for their secret-less legacy keys.
pub fn legacy(key: &str) -> String {
    let key = match key {
        ALICE => ALICE_LEGACY,
        BOB => BOB_LEGACY,
        other => other,
    };
    format!("AWS {key}:immuta")
}

/// Strings that must never reach a client: the backend buckets and Garage's credentials.
pub fn assert_no_leak(what: &str, received: &str) {
    for s in [ALPHA_BUCKET, BETA_BUCKET, GARAGE_KEY_ID, GARAGE_SECRET] {
        assert!(
            !received.contains(s),
            "{what}: leaked `{s}` in:\n{received}"
        );
    }
}

/// SigV4 headers for a request, computed with the aws-sigv4 crate (an implementation independent of s3p's
/// verifier). `host` is the Host header the request will carry.
pub fn sigv4_headers(
    method: &str,
    host: &str,
    path_and_query: &str,
    key: &str,
    secret: &str,
    time: std::time::SystemTime,
) -> Vec<(String, String)> {
    let request = Signed {
        method,
        host,
        path_and_query,
        headers: &[],
        payload_hash: "UNSIGNED-PAYLOAD",
    };
    sigv4_sign(&request, key, secret, time)
}

/// A request to sign, in the shape s3p signs its backend requests (the signature itself comes from
/// aws-sigv4 below, independent of s3p's signer): `headers` are signed besides `host`; `payload_hash` is
/// its `x-amz-content-sha256`.
pub use s3p::backend::ToSign as Signed;

/// The headers aws-sigv4 adds to sign `request` (`authorization`, `x-amz-date`, `x-amz-content-sha256`).
pub fn sigv4_sign(
    request: &Signed,
    key: &str,
    secret: &str,
    time: std::time::SystemTime,
) -> Vec<(String, String)> {
    use aws_sigv4::http_request::{
        sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
        SigningSettings, UriPathNormalizationMode,
    };
    let identity = aws_credential_types::Credentials::new(key, secret, None, None, "test").into();
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("s3")
        .time(time)
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let body = match request.payload_hash {
        "UNSIGNED-PAYLOAD" => SignableBody::UnsignedPayload,
        hash => SignableBody::Precomputed(hash.to_string()),
    };
    let headers = std::iter::once(("host", request.host)).chain(request.headers.iter().copied());
    let signable =
        SignableRequest::new(request.method, request.path_and_query, headers, body).unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let (headers, _) = instructions.into_parts();
    headers
        .into_iter()
        .map(|h| (h.name().to_string(), h.value().to_string()))
        .collect()
}

/// The audit line of a request (s3p writes audit lines to standard output, captured in its log file).
pub fn audit_line(s3p: &S3p, request_id: &str) -> serde_json::Value {
    // Lines are written after the response; give the writer a moment.
    for _ in 0..100 {
        let needle = format!("\"request_id\":\"{request_id}\"");
        if let Some(line) = s3p
            .log()
            .lines()
            .find(|l| l.starts_with('{') && l.contains(&needle))
        {
            return serde_json::from_str(line).expect("audit lines are JSON");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no audit line for request {request_id}");
}

/// A CA and a certificate for localhost/127.0.0.1 signed by it, written as PEM files.
pub fn make_ca_and_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("s3p test CA {name}"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let (ca_path, cert_path, key_path) = (
        dir.join(format!("{name}-ca.pem")),
        dir.join(format!("{name}-cert.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (ca_path, cert_path, key_path)
}

/// The resident set of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A directory removed when the test ends.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("s3p-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
pub mod immuta;

/// One HTTP/1.1 exchange with a body (`Connection: close`), the answer read to its end. The server may
/// answer (and close) before the whole body is sent: that is a refusal, read like any answer.
pub fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> RawResponse {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!("{method} {target} HTTP/1.1\r\nConnection: close\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let _ = stream.write_all(body);
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    parse_response(&buf)
}

pub fn hex_sha256(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

pub fn hmac_hex(key: &[u8], text: &str) -> String {
    use hmac::Mac;
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    m.update(text.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// A STREAMING-AWS4-HMAC-SHA256-PAYLOAD body of `data` in `chunk`-byte chunks (and the final empty one),
/// signed from `seed` (the request's signature) with `secret` in us-east-1, computed here from the SigV4
/// definition (independent of s3p's decoder).
pub fn signed_chunks(
    secret: &str,
    data: &[u8],
    chunk: usize,
    seed: &str,
    amz_date: &str,
) -> Vec<u8> {
    let date = &amz_date[..8];
    let scope = format!("{date}/us-east-1/s3/aws4_request");
    let key = {
        use hmac::Mac;
        let step = |k: &[u8], m: &str| {
            let mut h = hmac::Hmac::<sha2::Sha256>::new_from_slice(k).unwrap();
            h.update(m.as_bytes());
            h.finalize().into_bytes().to_vec()
        };
        let k = step(format!("AWS4{secret}").as_bytes(), date);
        let k = step(&k, "us-east-1");
        let k = step(&k, "s3");
        step(&k, "aws4_request")
    };
    let mut previous = seed.to_string();
    let mut body = Vec::new();
    let mut pieces: Vec<&[u8]> = data.chunks(chunk).collect();
    pieces.push(&[]);
    for piece in pieces {
        let sts = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{amz_date}\n{scope}\n{previous}\n{}\n{}",
            hex_sha256(b""),
            hex_sha256(piece)
        );
        let sig = hmac_hex(&key, &sts);
        body.extend_from_slice(format!("{:x};chunk-signature={sig}\r\n", piece.len()).as_bytes());
        body.extend_from_slice(piece);
        body.extend_from_slice(b"\r\n");
        previous = sig;
    }
    body
}
