//! scripts/quickstart, run as a user would: it starts Garage and s3p, prints commands, and these tests
//! paste the printed curl, aws CLI and boto3 commands into bash and check what they answer. Then Ctrl-C
//! (SIGINT to the script's process group, as a terminal sends it) must stop everything it started.
//! The script is given the debug s3p (S3P_BIN) so that no release build happens here.
//! Needs Garage (S3P_GARAGE_BIN or ~/.cache/s3p), curl, python3 with boto3 (S3P_PYTHON, else python3 on
//! PATH after the aws CLI's directory) and the aws CLI (S3P_AWS_CLI or on PATH); .ci/run installs them.
//! The printed DuckDB command runs its SQL through DuckDB's Python package (S3P_PYTHON, with the
//! duckdb-extension-httpfs package), because the DuckDB CLI would download its httpfs extension.

mod common;
use common::{free_port, TempDir};

use s3p::config::{Config, Entitlement};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn env_example() -> BTreeMap<String, String> {
    std::fs::read_to_string(repo().join(".env.example"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The demo objects (bucket, key) -> body, from scripts/gen-demo-data.
fn demo_data(dir: &Path) -> BTreeMap<(String, String), Vec<u8>> {
    let st = Command::new("python3")
        .arg(repo().join("scripts/gen-demo-data"))
        .arg(dir)
        .stdout(Stdio::null())
        .status()
        .expect("python3");
    assert!(st.success());
    let mut out = BTreeMap::new();
    fn walk(base: &Path, p: &Path, out: &mut BTreeMap<(String, String), Vec<u8>>) {
        for e in std::fs::read_dir(p).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                walk(base, &e.path(), out);
            } else {
                let rel = e
                    .path()
                    .strip_prefix(base)
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                let (b, k) = rel.split_once('/').unwrap();
                out.insert(
                    (b.to_string(), k.to_string()),
                    std::fs::read(e.path()).unwrap(),
                );
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

/// What a key sees through s3p: virtual key -> body, from the demo data and proxy.yaml's data sources.
fn visible(
    data: &BTreeMap<(String, String), Vec<u8>>,
    config: &Config,
    ent: &Entitlement,
) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for ((bucket, key), body) in data {
        for (name, ds) in &config.data_sources {
            if ent.allows(name) && &ds.bucket == bucket {
                if let Some(rest) = key.strip_prefix(&ds.prefix) {
                    out.insert(format!("{name}/{rest}"), body.clone());
                }
            }
        }
    }
    out
}

fn proxy_config() -> Config {
    let env = env_example();
    Config::from_yaml_str(
        &std::fs::read_to_string(repo().join("proxy.yaml")).unwrap(),
        &|n| env.get(n).cloned(),
    )
    .expect("proxy.yaml")
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                out.push(format!("{name}: {cmd}"));
            }
        }
    }
    out
}

/// The quickstart process, in its own process group. Dropping it sends Ctrl-C (then SIGKILL).
struct Quickstart {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr_path: PathBuf,
}

impl Quickstart {
    fn start(tmp: &Path, port: u16, args: &[&str]) -> Quickstart {
        let stderr_path = tmp.join("quickstart.stderr");
        let qs_tmp = tmp.join("tmp");
        std::fs::create_dir_all(&qs_tmp).unwrap();
        let mut cmd = Command::new(repo().join("scripts/quickstart"));
        for k in env_example().keys() {
            cmd.env_remove(k); // the demo values of .env.example, whatever this environment holds
        }
        cmd.args(args)
            .env("S3P_BIN", env!("CARGO_BIN_EXE_s3p"))
            .env("S3P_GARAGE_BIN", common::garage_binary())
            .env("S3P_PORT", port.to_string())
            .env("TMPDIR", &qs_tmp)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .process_group(0);
        let mut child = cmd.spawn().expect("scripts/quickstart");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Quickstart {
            child,
            stdout: rx,
            stderr_path,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Stdout lines up to and including the first line starting with `marker`.
    fn read_until(&mut self, marker: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        let mut text = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left.max(Duration::from_millis(1))) {
                Ok(line) => {
                    text.push_str(&line);
                    text.push('\n');
                    if line.starts_with(marker) {
                        return text;
                    }
                }
                Err(e) => panic!(
                    "no `{marker}` line from the quickstart ({e:?}); stdout:\n{text}\nstderr:\n{}",
                    self.stderr()
                ),
            }
        }
    }

    /// The rest of stdout, once the script has exited.
    fn drain(&mut self) -> String {
        let mut text = String::new();
        while let Ok(line) = self.stdout.recv_timeout(Duration::from_secs(10)) {
            text.push_str(&line);
            text.push('\n');
        }
        text
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
    }

    fn wait(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st.code().unwrap_or(-1));
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Quickstart {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal("INT");
            if self.wait(Duration::from_secs(15)).is_none() {
                self.signal("KILL");
                let _ = self.child.wait();
            }
        }
    }
}

/// The printed blocks: a `# title` line, then the command lines up to a blank line.
fn blocks(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some((title, body)) = current.as_mut() {
            if line.trim().is_empty() {
                out.insert(title.clone(), std::mem::take(body));
                current = None;
            } else {
                body.push_str(line);
                body.push('\n');
            }
        } else if let Some(title) = line.strip_prefix("# ") {
            let word = title.split([' ', ',']).next().unwrap().to_string();
            current = Some((word, String::new()));
        }
    }
    out
}

/// Directory with `aws` and `python3` wrappers for S3P_AWS_CLI and S3P_PYTHON, put first on PATH.
fn tool_path(tmp: &Path) -> String {
    let bin = tmp.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let mut path = std::env::var("PATH").unwrap_or_default();
    let wrap = |name: &str, target: &str| {
        use std::os::unix::fs::PermissionsExt;
        let p = bin.join(name);
        std::fs::write(&p, format!("#!/bin/sh\nexec '{target}' \"$@\"\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    if let Ok(aws) = std::env::var("S3P_AWS_CLI") {
        if let Some(dir) = Path::new(&aws).parent() {
            path = format!("{}:{path}", dir.display());
        }
        wrap("aws", &aws);
    }
    if let Ok(py) = std::env::var("S3P_PYTHON") {
        wrap("python3", &py);
    }
    // `duckdb -c SQL`: the printed SQL, run by DuckDB's Python package with the httpfs extension of the
    // duckdb-extension-httpfs package (the CLI would download httpfs on first use, which cannot happen here).
    let script = bin.join("duckdb-cli.py");
    std::fs::write(&script, DUCKDB_CLI).unwrap();
    let p = bin.join("duckdb");
    std::fs::write(
        &p,
        format!("#!/bin/sh\nexec python3 '{}' \"$@\"\n", script.display()),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    format!("{}:{path}", bin.display())
}

/// A stand-in for the DuckDB CLI's `-c SQL`: runs each statement and prints each row as comma-separated
/// values.
const DUCKDB_CLI: &str = r#"
import os, sys
import duckdb, duckdb_extension_httpfs
ext = os.path.join(os.path.dirname(duckdb_extension_httpfs.__file__), "extensions",
                   f"v{duckdb.__version__}", "httpfs.duckdb_extension")
if len(sys.argv) != 3 or sys.argv[1] != "-c":
    sys.exit("usage: duckdb -c SQL")
con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
con.execute(f"LOAD '{ext}'")
for stmt in con.extract_statements(sys.argv[2]):
    for row in con.execute(stmt).fetchall():
        print(",".join(str(v) for v in row))
"#;

/// Runs a printed block with bash as a user's terminal would (no AWS settings of ours leak in).
fn paste(block: &str, path: &str, cwd: &Path) -> String {
    let out_path = cwd.join("paste.out");
    let err_path = cwd.join("paste.err");
    let mut cmd = Command::new("bash");
    cmd.arg("-e")
        .arg("-c")
        .arg(block)
        .current_dir(cwd)
        .env("PATH", path)
        .env("AWS_CONFIG_FILE", cwd.join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            cwd.join("no-aws-credentials"),
        )
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") && k != "AWS_EC2_METADATA_DISABLED" {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pasted block hangs:\n{block}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = std::fs::read_to_string(&out_path).unwrap();
    let err = std::fs::read_to_string(&err_path).unwrap();
    assert!(
        status.success(),
        "pasted block failed ({status}):\n{block}\nstdout:\n{out}\nstderr:\n{err}"
    );
    out
}

#[test]
fn printed_commands_work_and_ctrl_c_stops_everything() {
    let tmp = TempDir::new("qs-interactive");
    let port = free_port();
    let env = env_example();
    let config = proxy_config();
    let data = demo_data(&tmp.0.join("expected"));
    let key_of = |id: &str| {
        config
            .api_keys
            .iter()
            .find(|k| k.id.expose() == id)
            .unwrap_or_else(|| panic!("no API key {id}"))
    };
    let analyst = visible(
        &data,
        &config,
        &key_of(&env["S3P_ANALYST_KEY"]).data_sources,
    );
    let admin = visible(&data, &config, &key_of(&env["S3P_ADMIN_KEY"]).data_sources);
    assert!(
        admin.len() > analyst.len(),
        "the admin sees more than the analyst"
    );

    let mut qs = Quickstart::start(&tmp.0, port, &[]);
    let text = qs.read_until("Press Ctrl-C", Duration::from_secs(120));
    let work = text
        .lines()
        .find_map(|l| l.strip_prefix("Logs: "))
        .and_then(|l| l.split(',').next())
        .and_then(|l| Path::new(l.trim()).parent().map(Path::to_path_buf))
        .unwrap_or_else(|| panic!("no Logs: line:\n{text}"));
    assert!(work.is_dir());
    assert!(
        !processes_mentioning(&work.to_string_lossy()).is_empty(),
        "Garage and s3p run from {}",
        work.display()
    );
    let url = format!("http://127.0.0.1:{port}/s3p");
    assert!(text.contains(&url), "{text}");
    // the printed readiness URL answers 200
    let ready = text
        .lines()
        .find_map(|l| l.strip_prefix("Health and metrics: "))
        .and_then(|l| l.split(',').next())
        .unwrap_or_else(|| panic!("no Health and metrics: line:\n{text}"))
        .to_string();
    let admin_port: u16 = ready
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/ready")
        .parse()
        .unwrap_or_else(|_| panic!("readiness URL {ready}"));
    let code = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &ready])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&code.stdout), "200", "GET {ready}");
    for k in [
        "S3P_ANALYST_KEY",
        "S3P_ANALYST_SECRET",
        "S3P_ANALYST_TOKEN",
        "S3P_ADMIN_KEY",
        "S3P_ADMIN_SECRET",
    ] {
        assert!(text.contains(&env[k]), "the demo key {k} is printed");
    }
    assert!(
        !text.contains(&env["S3P_TOKEN_SECRET"]),
        "the token secret is not printed"
    );

    let blocks = blocks(&text);
    let path = tool_path(&tmp.0);
    let cwd = tmp.0.join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();

    // curl with the legacy header: a listing and an object
    let out = paste(&blocks["curl"], &path, &cwd);
    assert!(blocks["curl"].contains(&format!("AWS {}:immuta", env["S3P_ANALYST_TOKEN"])));
    let q1 = String::from_utf8(data[&("demo-sales".into(), "2024/q1.csv".into())].clone()).unwrap();
    assert!(out.contains(&q1), "curl GET q1.csv:\n{out}");
    let listed: BTreeSet<String> = out
        .split("<Key>")
        .skip(1)
        .map(|s| s.split("</Key>").next().unwrap().to_string())
        .collect();
    let want: BTreeSet<String> = analyst
        .keys()
        .filter(|k| k.starts_with("sales/"))
        .cloned()
        .collect();
    assert_eq!(listed, want, "curl listing of sales/");

    // aws CLI: the analyst's whole view, and one object
    let out = paste(&blocks["aws"], &path, &cwd);
    let listed: BTreeSet<String> = out
        .lines()
        .filter(|l| l.len() > 20 && l.as_bytes()[4] == b'-' && l.as_bytes()[7] == b'-')
        .map(|l| l.split_whitespace().last().unwrap().to_string())
        .collect();
    assert_eq!(
        listed,
        analyst.keys().cloned().collect::<BTreeSet<_>>(),
        "aws s3 ls --recursive as the analyst:\n{out}"
    );
    assert!(!out.contains("hr/"), "hr is invisible to the analyst");
    let products = String::from_utf8(analyst["products/products.json"].clone()).unwrap();
    assert!(out.contains(&products), "aws s3 cp products.json -:\n{out}");
    // The writable sandbox: an upload, read back.
    assert!(
        out.contains("written through s3p"),
        "aws s3 cp - s3://immuta/sandbox/hello.txt, read back:\n{out}"
    );

    // boto3 with the admin key: hr/
    let boto3 = Command::new("bash")
        .args(["-c", "python3 -c 'import boto3'"])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(
        boto3.status.success(),
        "boto3 must be importable by python3 (S3P_PYTHON, or the aws CLI's venv: tests/requirements.txt): {}",
        String::from_utf8_lossy(&boto3.stderr)
    );
    let out = paste(&blocks["boto3"], &path, &cwd);
    let salaries = String::from_utf8(admin["hr/salaries.csv"].clone()).unwrap();
    assert!(
        out.contains(&format!("hr/salaries.csv {}", salaries.len())),
        "boto3 listing of hr/:\n{out}"
    );
    assert!(out.contains(&salaries), "boto3 get_object:\n{out}");

    // DuckDB (the analyst): the Parquet aggregate and the CSV glob
    let duck = &blocks["DuckDB"];
    for needle in [
        format!("KEY_ID '{}'", env["S3P_ANALYST_KEY"]),
        format!("SECRET '{}'", env["S3P_ANALYST_SECRET"]),
        format!("ENDPOINT '127.0.0.1:{port}/s3p'"),
    ] {
        assert!(
            duck.contains(&needle),
            "DuckDB block lacks {needle}:\n{duck}"
        );
    }
    let duckdb = Command::new("bash")
        .args(["-c", "python3 -c 'import duckdb, duckdb_extension_httpfs'"])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(
        duckdb.status.success(),
        "duckdb and duckdb-extension-httpfs must be importable by python3 (S3P_PYTHON: tests/requirements.txt): {}",
        String::from_utf8_lossy(&duckdb.stderr)
    );
    let out = paste(duck, &path, &cwd);
    // every order of the CSVs, and per region the count and total of the Parquet file (the same orders)
    let mut regions: BTreeMap<String, (u32, f64)> = BTreeMap::new();
    for (k, body) in analyst.iter().filter(|(k, _)| k.ends_with(".csv")) {
        for line in String::from_utf8(body.clone()).unwrap().lines().skip(1) {
            assert!(
                out.lines().any(|l| l == line),
                "DuckDB read_csv lacks `{line}` of {k}:\n{out}"
            );
            let f: Vec<&str> = line.split(',').collect();
            let e = regions.entry(f[2].to_string()).or_default();
            e.0 += 1;
            e.1 += f[4].parse::<f64>().unwrap();
        }
    }
    assert!(!regions.is_empty());
    for (region, (count, total)) in &regions {
        let row = out
            .lines()
            .find(|l| l.starts_with(&format!("{region},")))
            .unwrap_or_else(|| panic!("DuckDB: no aggregate row for {region}:\n{out}"));
        let f: Vec<&str> = row.split(',').collect();
        assert_eq!(f[1], count.to_string(), "{row}");
        assert!(
            (f[2].parse::<f64>().unwrap() - total).abs() < 0.005,
            "{row} vs {total}"
        );
    }

    // Ctrl-C: the script stops Garage and s3p, removes its files, and exits 130
    qs.signal("INT");
    let code = qs.wait(Duration::from_secs(30));
    assert_eq!(
        code,
        Some(130),
        "exit status after Ctrl-C; stderr:\n{}",
        qs.stderr()
    );
    assert!(
        processes_mentioning(&work.to_string_lossy()).is_empty(),
        "left running: {:?}",
        processes_mentioning(&work.to_string_lossy())
    );
    assert!(!work.exists(), "{} left behind", work.display());
    for p in [port, admin_port] {
        assert!(
            TcpStream::connect(("127.0.0.1", p)).is_err(),
            "s3p still listens on {p}"
        );
    }
    assert!(qs.stderr().contains("Stopped s3p and Garage."));
}

#[test]
fn command_mode_runs_the_command_then_stops_everything() {
    let tmp = TempDir::new("qs-command");
    let port = free_port();
    let mut qs = Quickstart::start(
        &tmp.0,
        port,
        &[
            "bash",
            "-c",
            r#"curl -sSf -H "Authorization: AWS $S3P_ANALYST_TOKEN:immuta" "$S3P_URL/immuta/sales/2024/q1.csv" && echo "== pid $$" && exit 3"#,
        ],
    );
    let code = qs.wait(Duration::from_secs(120));
    let out = qs.drain();
    assert_eq!(
        code,
        Some(3),
        "the command's exit status is the script's; stdout:\n{out}\nstderr:\n{}",
        qs.stderr()
    );
    assert!(out.contains("order_id,order_date,region"), "{out}");
    assert!(out.contains("== pid"), "{out}");
    assert!(out.contains(&format!("http://127.0.0.1:{port}/s3p")));
    let qs_tmp = tmp.0.join("tmp");
    assert_eq!(
        std::fs::read_dir(&qs_tmp).unwrap().count(),
        0,
        "the quickstart's work directory is removed"
    );
    assert!(
        processes_mentioning(&qs_tmp.to_string_lossy()).is_empty(),
        "left running: {:?}",
        processes_mentioning(&qs_tmp.to_string_lossy())
    );
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "s3p still listens"
    );
}

#[test]
fn a_busy_port_is_refused_before_anything_starts() {
    let tmp = TempDir::new("qs-busy");
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let mut qs = Quickstart::start(&tmp.0, port, &["true"]);
    let code = qs.wait(Duration::from_secs(30));
    assert_eq!(code, Some(1), "stderr: {}", qs.stderr());
    assert!(
        qs.stderr().contains(&format!("port {port} is in use")),
        "{}",
        qs.stderr()
    );
    assert_eq!(std::fs::read_dir(tmp.0.join("tmp")).unwrap().count(), 0);
}
