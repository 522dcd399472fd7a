//! The client matrix (issue 3): every way real S3 clients authenticate, proven with the real clients. Each client
//! gets only the s3p endpoint, an API key and its secret, and must list the root (exactly the entitled data
//! sources), list a data source recursively, download byte for byte, presign a URL that a plain HTTP client can
//! fetch (where the client can presign), and be refused a data source its key may not read.
//!
//! The clients run as subprocesses of Python scripts in `tests/clients/` (one per client; the command-line
//! clients are driven by their script too). A script prints one `CHECK <name>: PASS|FAIL|N/A` line per check and
//! exits non-zero if any failed. A missing client is a failure that says how to install it, never a skip.
//!
//! Tools: `S3P_PYTHON` (a Python with tests/requirements.txt), `S3P_AWS_CLI`, `S3P_S3CMD`, `S3P_RCLONE`; each
//! falls back to the venv of `.ci/run` (`~/.cache/s3p/venv`), then to PATH.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use base64::Engine;
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const REGION: &str = "us-east-1";

/// Parquet parts put on the backends (part number, bucket, backend key, virtual key).
const PARQUET: [(u32, &str, &str, &str); 4] = [
    (
        0,
        ALPHA_BUCKET,
        "cities-0.parquet",
        "sales/cities-0.parquet",
    ),
    (
        1,
        ALPHA_BUCKET,
        "cities-1.parquet",
        "sales/cities-1.parquet",
    ),
    (
        2,
        ALPHA_BUCKET,
        "nested/deeper/cities-2.parquet",
        "sales/nested/deeper/cities-2.parquet",
    ),
    (
        9,
        BETA_BUCKET,
        "data-private/secret-9.parquet",
        "data-private/secret-9.parquet",
    ),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cache_dir() -> PathBuf {
    match std::env::var("S3P_CACHE") {
        Ok(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/s3p"),
    }
}

/// A tool from `env_var`, else the `.ci/run` venv, else PATH; a missing tool is a failure saying how to install it.
fn find_tool(env_var: &str, venv_bin: Option<&str>, name: &str, install: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env_var) {
        if !p.is_empty() {
            let p = PathBuf::from(p);
            assert!(
                p.exists(),
                "{env_var}={} does not exist; {install}",
                p.display()
            );
            return p;
        }
    }
    if let Some(bin) = venv_bin {
        let p = cache_dir().join("venv/bin").join(bin);
        if p.exists() {
            return p;
        }
    }
    if let Ok(out) = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
    {
        let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !p.is_empty() {
            return PathBuf::from(p);
        }
    }
    panic!("{name} is required for the client matrix and was not found (set {env_var} or put it on PATH); {install}");
}

const PIP_HINT: &str = "run .ci/run, or: python3 -m venv ~/.cache/s3p/venv && \
     ~/.cache/s3p/venv/bin/pip install -r tests/requirements.txt";

fn python() -> PathBuf {
    find_tool(
        "S3P_PYTHON",
        Some("python"),
        "python3",
        &format!("{PIP_HINT} (then S3P_PYTHON=~/.cache/s3p/venv/bin/python)"),
    )
}

/// The environment of every client subprocess: nothing inherited that could point a client at the user's own
/// configuration or credentials; explicit credentials, region and config paths inside `work`.
fn client_command(program: &Path, work: &Path) -> Command {
    let home = work.join("home");
    std::fs::create_dir_all(home.join(".config")).unwrap();
    let mut cmd = Command::new(program);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("AWS_") || k.starts_with("RCLONE_") || k.starts_with("S3CMD") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", ALICE)
        .env("AWS_SECRET_ACCESS_KEY", ALICE_SECRET)
        .env("AWS_REGION", REGION)
        .env("AWS_DEFAULT_REGION", REGION)
        .env("AWS_CONFIG_FILE", work.join("aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", work.join("aws-credentials"))
        .env("RCLONE_CONFIG", work.join("rclone.conf"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONNOUSERSITE", "1")
        .env("PYTHONIOENCODING", "utf-8")
        .env("LC_ALL", "C.UTF-8")
        .env("LANG", "C.UTF-8");
    cmd
}

/// Runs `cmd` with stdout/stderr to files in `work`, killing it after `limit`. Returns (success, stdout, stderr).
fn run_bounded(mut cmd: Command, work: &Path, limit: Duration) -> (bool, String, String) {
    let out_path = work.join("stdout.txt");
    let err_path = work.join("stderr.txt");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let mut err = std::fs::read_to_string(&err_path).unwrap_or_default();
    if status.is_none() {
        err.push_str(&format!("\n(killed after {} s)", limit.as_secs()));
    }
    (status.is_some_and(|s| s.success()), out, err)
}

struct Setup {
    python: PathBuf,
    dir: PathBuf,
    /// Sizes of the Parquet parts, by virtual key.
    parquet_sizes: BTreeMap<String, usize>,
}

/// The shared fixture plus the Parquet parts, generated with pyarrow and put on Garage directly (s3p is
/// read-only). Once per test binary; read_path.rs has its own Garage and seed.
fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let f = fixture();
        let python = python();
        let dir = f.dir.join("clients");
        let pq_dir = dir.join("parquet");
        std::fs::create_dir_all(&pq_dir).unwrap();
        let mut cmd = client_command(&python, &dir);
        cmd.arg(repo().join("tests/clients/make_parquet.py"))
            .arg(&pq_dir)
            .args(PARQUET.iter().map(|p| p.0.to_string()));
        let (ok, out, err) = run_bounded(cmd, &dir, Duration::from_secs(120));
        assert!(
            ok,
            "generating Parquet with pyarrow failed ({}):\n{out}\n{err}\n{PIP_HINT}",
            python.display()
        );
        let client = f.garage.client();
        let mut parquet_sizes = BTreeMap::new();
        runtime().block_on(async {
            for (part, bucket, key, vkey) in PARQUET {
                let body = std::fs::read(pq_dir.join(format!("cities-{part}.parquet"))).unwrap();
                parquet_sizes.insert(vkey.to_string(), body.len());
                client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(ByteStream::from(body))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("putting {bucket}/{key}: {e:?}"));
            }
        });
        Setup {
            python,
            dir,
            parquet_sizes,
        }
    })
}

/// Every virtual key of data source `ds` (seed plus Parquet parts), with its size.
fn virtual_keys(ds: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (bucket, key, body) in seed_objects() {
        let v = match (bucket, ds) {
            (ALPHA_BUCKET, "sales") => Some(format!("sales/{key}")),
            (BETA_BUCKET, "data") => key.strip_prefix("data/").map(|k| format!("data/{k}")),
            (BETA_BUCKET, "data-private") => key
                .strip_prefix("data-private/")
                .map(|k| format!("data-private/{k}")),
            _ => None,
        };
        if let Some(v) = v {
            out.insert(v, body.len());
        }
    }
    for (vkey, size) in &setup().parquet_sizes {
        if vkey.starts_with(&format!("{ds}/")) {
            out.insert(vkey.clone(), *size);
        }
    }
    out
}

/// A JSON string literal.
fn js(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn js_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let v: Vec<String> = items.into_iter().map(js).collect();
    format!("[{}]", v.join(", "))
}

/// The spec a client script reads: endpoint, keys, what each key must see, tool paths.
fn spec_json(
    work: &Path,
    s3p: &S3p,
    tools: &[(&str, PathBuf)],
    extra: &[(&str, String)],
) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let downloads: Vec<String> = [
        ("alice", "sales/big.bin"),
        ("alice", "sales/plus+sign.txt"),
        ("alice", "sales/caf\u{e9}/\u{fc}ber \u{2603}.txt"),
        ("bob", "data/x y/z.json"),
    ]
    .iter()
    .map(|(user, key)| {
        format!(
            "{{\"user\": {}, \"key\": {}, \"b64\": {}}}",
            js(user),
            js(key),
            js(&b64.encode(body_of(key)))
        )
    })
    .collect();
    let tools: Vec<String> = tools
        .iter()
        .map(|(n, p)| format!("{}: {}", js(n), js(&p.to_string_lossy())))
        .collect();
    let pq = |pred: &dyn Fn(&str) -> bool| {
        js_list(
            PARQUET
                .iter()
                .map(|p| p.3)
                .filter(|k| pred(k))
                .collect::<Vec<_>>(),
        )
    };
    format!(
        r#"{{
  "endpoint": {endpoint},
  "host_port": {host_port},
  "base_path": "/s3p",
  "bucket": "immuta",
  "region": {region},
  "workdir": {workdir},
  "users": {{
    "alice": {{"key": {alice}, "secret": {alice_secret}, "data_sources": ["data", "data-private", "sales"]}},
    "bob": {{"key": {bob}, "secret": {bob_secret}, "data_sources": ["data", "sales"]}}
  }},
  "list_user": "alice",
  "list_ds": "sales",
  "list_keys": {list_keys},
  "downloads": [{downloads}],
  "denied": {{"user": "bob", "key": "data-private/salaries.csv", "ds": "data-private"}},
  "parquet": {{
    "root_glob": "sales/*.parquet",
    "root_files": {root_files},
    "deep_glob": "sales/**/*.parquet",
    "all_files": {all_files},
    "private": "data-private/secret-9.parquet"
  }},
  "tools": {{{tools}}},
  "extra": {{{extra}}}
}}
"#,
        endpoint = js(&s3p.endpoint()),
        host_port = js(&s3p.addr().to_string()),
        region = js(REGION),
        workdir = js(&work.to_string_lossy()),
        alice = js(ALICE),
        alice_secret = js(ALICE_SECRET),
        bob = js(BOB),
        bob_secret = js(BOB_SECRET),
        list_keys = {
            let v: Vec<String> = virtual_keys("sales")
                .iter()
                .map(|(k, n)| format!("{}: {n}", js(k)))
                .collect();
            format!("{{{}}}", v.join(", "))
        },
        downloads = downloads.join(", "),
        root_files = pq(&|k| k.starts_with("sales/") && !k["sales/".len()..].contains('/')),
        all_files = pq(&|k| k.starts_with("sales/")),
        tools = tools.join(", "),
        extra = extra
            .iter()
            .map(|(k, v)| format!("{}: {}", js(k), js(v)))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// A second s3p on the shared Garage for the write checks: `sandbox` (beta under `sandbox/`) is writable
/// and alice may write it (and read everything, as on the shared one); bob may not write. It also
/// listens on https, since botocore sends its default trailing checksums (aws-chunked) only there.
struct Writable {
    s3p: S3p,
    tls_port: u16,
    ca: PathBuf,
}

const WRITE_DS: &str = "sandbox";

fn writable() -> &'static Writable {
    static WRITABLE: OnceLock<Writable> = OnceLock::new();
    WRITABLE.get_or_init(|| {
        let f = fixture();
        let dir = f.dir.join("s3p-writable");
        let (ca, cert, key) = make_ca_and_cert(&dir.join("certs"), "writable");
        let tls_port = free_port();
        let yaml = standard_config(&f.garage)
            .replace(
                "data_sources:\n",
                &format!(
                    "data_sources:\n  {WRITE_DS}: {{ backend: garage, bucket: {BETA_BUCKET}, prefix: {WRITE_DS}/, writable: true }}\n"
                ),
            )
            .replace(
                "    name: Alice\n    data_sources: all\n",
                &format!("    name: Alice\n    data_sources: {{ \"*\": read, {WRITE_DS}: write }}\n"),
            )
            // s3cmd signs without the base path (see the s3cmd test).
            .replace("bucket: immuta\n", "bucket: immuta\nsignature_base_path_tolerance: true\n")
            + &format!(
                "tls:\n  listen: 127.0.0.1:{tls_port}\n  cert: {}\n  key: {}\n",
                cert.display(),
                key.display()
            );
        assert_eq!(yaml.matches(&format!("{WRITE_DS}: write")).count(), 2, "{yaml}");
        let s3p = S3p::start(&dir, &yaml);
        Writable { s3p, tls_port, ca }
    })
}

/// What a script needs for its write checks.
fn write_extras() -> Vec<(&'static str, String)> {
    let w = writable();
    vec![
        ("write_endpoint", w.s3p.endpoint()),
        ("write_host_port", w.s3p.addr().to_string()),
        (
            "write_https_endpoint",
            format!("https://localhost:{}/s3p", w.tls_port),
        ),
        ("write_ca", w.ca.to_string_lossy().into_owned()),
        ("write_ds", WRITE_DS.to_string()),
    ]
}

/// Runs `tests/clients/<script>` for one client against the shared s3p (reads) and the writable one
/// (writes), and fails with every failed check.
fn run_client(client: &str, script: &str, tools: &[(&str, PathBuf)]) {
    run_client_on(client, script, &fixture().s3p, tools, &write_extras());
}

fn run_client_on(
    client: &str,
    script: &str,
    s3p: &S3p,
    tools: &[(&str, PathBuf)],
    extra: &[(&str, String)],
) {
    let s = setup();
    let work = s.dir.join(client);
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let spec = work.join("spec.json");
    std::fs::write(&spec, spec_json(&work, s3p, tools, extra)).unwrap();
    // A default aws config: region and path style, for any AWS SDK that looks (scripts write their own too).
    std::fs::write(
        work.join("aws-config"),
        format!("[default]\nregion = {REGION}\ns3 =\n    addressing_style = path\n"),
    )
    .unwrap();
    let mut cmd = client_command(&s.python, &work);
    cmd.arg(repo().join("tests/clients").join(script))
        .arg(&spec);
    let (ok, out, err) = run_bounded(cmd, &work, Duration::from_secs(480));
    // The matrix lines, visible with --nocapture.
    println!("{out}");
    if !ok {
        let failed: Vec<&str> = out
            .lines()
            .filter(|l| l.contains(": FAIL") || l.starts_with("MISSING"))
            .collect();
        let tail: String = {
            let lines: Vec<&str> = err.lines().collect();
            lines[lines.len().saturating_sub(60)..].join("\n")
        };
        panic!(
            "client {client} failed ({script}, work dir {}):\n{}\n--- stdout ---\n{out}\n--- stderr (tail) ---\n{tail}",
            work.display(),
            failed.join("\n"),
        );
    }
}

#[test]
fn aws_cli_v1() {
    let aws = find_tool(
        "S3P_AWS_CLI",
        Some("aws"),
        "aws",
        &format!("the aws CLI v1 is PyPI's awscli: {PIP_HINT}"),
    );
    run_client("awscli", "awscli_client.py", &[("aws", aws)]);
}

#[test]
fn boto3() {
    run_client("boto3", "boto3_client.py", &[]);
}

#[test]
fn rclone() {
    let rclone = find_tool(
        "S3P_RCLONE",
        None,
        "rclone",
        "install Debian's package: apt-get install -y rclone (.ci/run does)",
    );
    run_client("rclone", "rclone_client.py", &[("rclone", rclone)]);
}

#[test]
fn s3cmd() {
    let s3cmd = find_tool(
        "S3P_S3CMD",
        Some("s3cmd"),
        "s3cmd",
        &format!("s3cmd is PyPI's s3cmd: {PIP_HINT}"),
    );
    // s3cmd signs without the base path (SigV4: `/s3p` moved into the signed host; SigV2: left out), so it
    // needs `signature_base_path_tolerance: true`; the shared s3p (default: off) must refuse its SigV4.
    let f = fixture();
    setup();
    let yaml = standard_config(&f.garage).replace(
        "bucket: immuta\n",
        "bucket: immuta\nsignature_base_path_tolerance: true\n",
    );
    assert!(yaml.contains("signature_base_path_tolerance: true"));
    let tolerant = S3p::start(&f.dir.join("s3p-base-path-tolerance"), &yaml);
    run_client_on(
        "s3cmd",
        "s3cmd_client.py",
        &tolerant,
        &[("s3cmd", s3cmd)],
        &[
            &[("strict_host_port", f.s3p.addr().to_string())][..],
            &write_extras(),
        ]
        .concat(),
    );
}

#[test]
fn pyarrow_s3filesystem() {
    run_client("pyarrow", "pyarrow_client.py", &[]);
}

#[test]
fn duckdb_httpfs() {
    run_client("duckdb", "duckdb_client.py", &[]);
}

#[test]
fn polars() {
    run_client("polars", "polars_client.py", &[]);
}
