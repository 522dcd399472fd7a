//! The docker-compose deployment, checked without Docker (no engine runs here and no image can be pulled,
//! so `docker compose up` is never run by the tests). What is checked: docker-compose.yml is well formed
//! in the ways `docker compose config` would check (keys, interpolation, ports, volumes, healthchecks,
//! dependencies) and agrees with proxy.yaml, .env.example, the Dockerfile, .dockerignore and the demo
//! scripts; the scripts that the compose services run are run here (the init script against a stub `mc`),
//! and the s3p healthcheck command is run against a real s3p process.

mod common;
use common::{free_port, TempDir};

use s3p::config::{BackendCredentials, Config};
use serde_yaml_ng::{Mapping, Value};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------------
// helpers

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn compose() -> Value {
    serde_yaml_ng::from_str(&read("docker-compose.yml")).expect("docker-compose.yml is not YAML")
}

fn services(c: &Value) -> &Mapping {
    c.get("services")
        .and_then(Value::as_mapping)
        .expect("docker-compose.yml has no services mapping")
}

fn service<'a>(c: &'a Value, name: &str) -> &'a Value {
    services(c)
        .get(name)
        .unwrap_or_else(|| panic!("docker-compose.yml has no service `{name}`"))
}

fn s(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v:?}"))
}

fn string_list(v: &Value, what: &str) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("{what}: expected a list of strings (exec form), got {v:?}"))
        .iter()
        .map(|x| {
            x.as_str()
                .unwrap_or_else(|| panic!("{what}: {x:?} is not a string"))
                .to_string()
        })
        .collect()
}

/// `.env.example` as KEY -> VALUE. Values must be plain (no quotes, spaces, `$` or `#`), so that docker
/// compose's .env reader and scripts/quickstart's line reader see the same values.
fn env_example() -> BTreeMap<String, String> {
    env_file(".env.example")
}

/// An env file (`KEY=VALUE` lines, `#` comments) as KEY -> VALUE, with plain values only.
fn env_file(rel: &str) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    for (i, line) in read(rel).lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{rel}:{}: not KEY=VALUE: {line}", i + 1));
        assert!(is_var_name(k), "{rel}:{}: bad name `{k}`", i + 1);
        assert!(
            !v.is_empty() && !v.contains(['"', '\'', ' ', '$', '#', '\\']),
            "{rel}:{}: value of {k} must be plain (no quotes, spaces, $, # or \\)",
            i + 1
        );
        assert!(
            vars.insert(k.to_string(), v.to_string()).is_none(),
            "{rel}: {k} twice"
        );
    }
    vars
}

fn is_var_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// Docker compose interpolation of one string: `$$`, `$NAME`, `${NAME}`, `${NAME:-default}`,
/// `${NAME-default}`, `${NAME:?error}`, `${NAME?error}`, `${NAME:+alt}`, `${NAME+alt}` (nested in the
/// default too). Every variable named is pushed to `used`. Errors for malformed text and for a missing
/// required variable, as compose does.
fn interpolate(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    used: &mut Vec<String>,
) -> Result<String, String> {
    let mut out = String::new();
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        if !rest.starts_with('$') {
            let ch = rest.chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
            continue;
        }
        let after = &rest[1..];
        if after.starts_with('$') {
            out.push('$');
            i += 2;
        } else if let Some(inner_start) = after.strip_prefix('{') {
            // find the matching brace
            let mut depth = 1;
            let mut end = None;
            for (j, ch) in inner_start.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(j);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let end = end.ok_or_else(|| format!("unterminated ${{ in `{text}`"))?;
            let inner = &inner_start[..end];
            let name_len = inner
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(inner.len());
            let (name, op) = inner.split_at(name_len);
            if !is_var_name(name) {
                return Err(format!("invalid variable name in `${{{inner}}}`"));
            }
            used.push(name.to_string());
            let value = env(name);
            let set = value.is_some();
            let nonempty = value.as_deref().is_some_and(|v| !v.is_empty());
            let v = value.clone().unwrap_or_default();
            let sub = |arg: &str, used: &mut Vec<String>| interpolate(arg, env, used);
            let result = if op.is_empty() {
                v
            } else if let Some(arg) = op.strip_prefix(":-") {
                if nonempty {
                    sub(arg, used)?; // names in the default still count as used
                    v
                } else {
                    sub(arg, used)?
                }
            } else if let Some(arg) = op.strip_prefix(":?") {
                if !nonempty {
                    return Err(format!("required variable {name} is missing: {arg}"));
                }
                v
            } else if let Some(arg) = op.strip_prefix(":+") {
                let alt = sub(arg, used)?;
                if nonempty {
                    alt
                } else {
                    String::new()
                }
            } else if let Some(arg) = op.strip_prefix('-') {
                let d = sub(arg, used)?;
                if set {
                    v
                } else {
                    d
                }
            } else if let Some(arg) = op.strip_prefix('?') {
                if !set {
                    return Err(format!("required variable {name} is missing: {arg}"));
                }
                v
            } else if let Some(arg) = op.strip_prefix('+') {
                let alt = sub(arg, used)?;
                if set {
                    alt
                } else {
                    String::new()
                }
            } else {
                return Err(format!("invalid interpolation `${{{inner}}}`"));
            };
            out.push_str(&result);
            i += 2 + end + 1;
        } else {
            let name_len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            let name = &after[..name_len];
            if !is_var_name(name) {
                return Err(format!(
                    "`$` not followed by a variable in `{text}` (write $$ for a literal $)"
                ));
            }
            used.push(name.to_string());
            out.push_str(&env(name).unwrap_or_default());
            i += 1 + name_len;
        }
    }
    Ok(out)
}

/// Every string scalar of the compose file (values only: compose does not interpolate keys).
fn strings_of(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(x) => out.push(x.clone()),
        Value::Sequence(seq) => seq.iter().for_each(|x| strings_of(x, out)),
        Value::Mapping(m) => m.values().for_each(|x| strings_of(x, out)),
        Value::Tagged(t) => strings_of(&t.value, out),
        _ => {}
    }
}

/// The compose file with every string interpolated from .env.example (as `docker compose config` does).
fn interpolated(v: &Value, env: &BTreeMap<String, String>) -> Value {
    match v {
        Value::String(x) => Value::String(
            interpolate(x, &|n| env.get(n).cloned(), &mut Vec::new())
                .unwrap_or_else(|e| panic!("docker-compose.yml: {e}")),
        ),
        Value::Sequence(seq) => Value::Sequence(seq.iter().map(|x| interpolated(x, env)).collect()),
        Value::Mapping(m) => Value::Mapping(
            m.iter()
                .map(|(k, x)| (k.clone(), interpolated(x, env)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// proxy.yaml validated with the values of .env.example, and the variables it asked for.
fn proxy_config() -> (Config, BTreeSet<String>) {
    proxy_config_of("proxy.yaml")
}

/// The Garage variant: docker-compose.garage.yml.
fn garage_compose() -> Value {
    serde_yaml_ng::from_str(&read("docker-compose.garage.yml"))
        .expect("docker-compose.garage.yml is not YAML")
}

/// Every `${VAR}` a compose file uses, interpolated with .env.example.
fn vars_of_compose(c: &Value, env: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut all = Vec::new();
    strings_of(c, &mut all);
    let mut vars = Vec::new();
    for text in &all {
        interpolate(text, &|n| env.get(n).cloned(), &mut vars)
            .unwrap_or_else(|e| panic!("with .env.example: {e}"));
    }
    vars.into_iter().collect()
}

fn proxy_config_of(rel: &str) -> (Config, BTreeSet<String>) {
    proxy_config_with(rel, &env_example())
}

fn proxy_config_with(rel: &str, env: &BTreeMap<String, String>) -> (Config, BTreeSet<String>) {
    let asked = RefCell::new(BTreeSet::new());
    let lookup = |name: &str| {
        asked.borrow_mut().insert(name.to_string());
        env.get(name).cloned()
    };
    let config = Config::from_yaml_str(&read(rel), &lookup)
        .unwrap_or_else(|errors| panic!("{rel} with the values of .env.example: {errors:?}"));
    (config, asked.into_inner())
}

/// A service's `environment` as NAME -> raw (uninterpolated) value; map or `KEY=VALUE` list form.
fn environment(svc: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match svc.get("environment") {
        None => {}
        Some(Value::Mapping(m)) => {
            for (k, v) in m {
                let v = match v {
                    Value::String(x) => x.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    Value::Null => String::new(),
                    other => panic!("environment value {other:?} must be a scalar"),
                };
                out.insert(s(k).to_string(), v);
            }
        }
        Some(Value::Sequence(seq)) => {
            for x in seq {
                let (k, v) = s(x).split_once('=').expect("environment entry KEY=VALUE");
                out.insert(k.to_string(), v.to_string());
            }
        }
        Some(other) => panic!("environment must be a map or a list, got {other:?}"),
    }
    out
}

/// Short-syntax volume `SRC:DST[:MODE]` of a service.
struct Mount {
    source: String,
    target: String,
    read_only: bool,
}

fn mounts(svc: &Value) -> Vec<Mount> {
    let Some(list) = svc.get("volumes") else {
        return Vec::new();
    };
    string_list(list, "volumes")
        .iter()
        .map(|v| {
            let parts: Vec<&str> = v.split(':').collect();
            assert!(
                (2..=3).contains(&parts.len()),
                "volume `{v}`: expected SOURCE:TARGET[:MODE]"
            );
            let mode = parts.get(2).copied().unwrap_or("rw");
            assert!(
                mode == "ro" || mode == "rw",
                "volume `{v}`: mode must be ro or rw"
            );
            assert!(
                parts[1].starts_with('/'),
                "volume `{v}`: target must be absolute"
            );
            Mount {
                source: parts[0].to_string(),
                target: parts[1].to_string(),
                read_only: mode == "ro",
            }
        })
        .collect()
}

fn mount_of<'a>(svc: &'a [Mount], source: &str) -> &'a Mount {
    svc.iter()
        .find(|m| m.source == source)
        .unwrap_or_else(|| panic!("no volume with source {source}"))
}

/// `[IP:]HOST:CONTAINER[/PROTO]` (after interpolation).
struct Port {
    ip: Option<String>,
    host: u16,
    container: u16,
}

fn parse_port(p: &str) -> Port {
    let p = p.strip_suffix("/tcp").unwrap_or(p);
    let parts: Vec<&str> = p.split(':').collect();
    let num = |x: &str| {
        x.parse::<u16>()
            .unwrap_or_else(|_| panic!("port `{p}`: `{x}` is not a port number"))
    };
    match parts.as_slice() {
        [h, c] => Port {
            ip: None,
            host: num(h),
            container: num(c),
        },
        [ip, h, c] => {
            ip.parse::<std::net::IpAddr>()
                .unwrap_or_else(|_| panic!("port `{p}`: bad IP"));
            Port {
                ip: Some(ip.to_string()),
                host: num(h),
                container: num(c),
            }
        }
        _ => panic!("port `{p}`: expected [IP:]HOST:CONTAINER (publish a fixed host port)"),
    }
}

fn is_duration(d: &str) -> bool {
    // Go durations as compose accepts them: 1m30s, 500ms, 5s.
    let mut rest = d;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ns", "us", "ms", "s", "m", "h"]
            .iter()
            .find(|u| rest.starts_with(*u));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}

/// The Dockerfile as (INSTRUCTION, arguments) with continuation lines joined and comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in read("Dockerfile").lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(t);
        let (ins, args) = current
            .trim()
            .split_once(char::is_whitespace)
            .unwrap_or((current.trim(), ""));
        out.push((ins.to_uppercase(), args.trim().to_string()));
        current.clear();
    }
    assert!(current.is_empty(), "Dockerfile ends inside a continuation");
    out
}

/// The Dockerfile's stages: (FROM arguments, instructions after it).
fn stages() -> Vec<(String, Vec<(String, String)>)> {
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for (ins, args) in dockerfile() {
        if ins == "FROM" {
            out.push((args, Vec::new()));
        } else {
            out.last_mut()
                .unwrap_or_else(|| panic!("Dockerfile: {ins} before FROM"))
                .1
                .push((ins, args));
        }
    }
    out
}

fn json_list(args: &str, what: &str) -> Vec<String> {
    let v: Value = serde_yaml_ng::from_str(args)
        .unwrap_or_else(|e| panic!("Dockerfile {what}: not an exec-form list: {e}"));
    string_list(&v, what)
}

/// The binary name Cargo builds: `[[bin]] name` of Cargo.toml, else the package name.
fn cargo_bin_name() -> String {
    let toml = read("Cargo.toml");
    let mut section = String::new();
    let mut package_name = None;
    let mut bin_names = Vec::new();
    for line in toml.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            section = t.to_string();
            continue;
        }
        if let Some(v) = t.strip_prefix("name") {
            let v = v
                .trim_start()
                .strip_prefix('=')
                .map(|x| x.trim().trim_matches('"'));
            if let Some(v) = v {
                match section.as_str() {
                    "[package]" => package_name = Some(v.to_string()),
                    "[[bin]]" => bin_names.push(v.to_string()),
                    _ => {}
                }
            }
        }
    }
    assert!(bin_names.len() <= 1, "Cargo.toml has several [[bin]]s");
    bin_names
        .pop()
        .or(package_name)
        .expect("Cargo.toml has no package name")
}

/// `.dockerignore` evaluated as Docker does: a path is left out when the last pattern matching it, or
/// one of its parent directories, is not a `!` exception.
fn dockerignored(path: &str) -> bool {
    let rules: Vec<(bool, String)> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (neg, p) = match l.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, l),
            };
            assert!(
                !p.contains('[') && !p.contains("**") && !p.contains('\\'),
                "this test's matcher does not handle `{p}`"
            );
            (
                neg,
                p.trim_start_matches('/').trim_end_matches('/').to_string(),
            )
        })
        .collect();
    let segments: Vec<&str> = path.split('/').collect();
    let mut excluded = false;
    for (neg, pattern) in &rules {
        let matches = (1..=segments.len()).any(|n| glob(pattern, &segments[..n].join("/")));
        if matches {
            excluded = !neg;
        }
    }
    excluded
}

/// Go's filepath.Match for `*` and `?` (neither crosses `/`).
fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some(b'*') => (0..=n.len())
                .take_while(|&i| i == 0 || n[i - 1] != b'/')
                .any(|i| go(&p[1..], &n[i..])),
            Some(b'?') => !n.is_empty() && n[0] != b'/' && go(&p[1..], &n[1..]),
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

/// Runs scripts/gen-demo-data into `dir`; returns (bucket, key) of every file it wrote.
fn generate_demo_data(dir: &Path) -> BTreeSet<(String, String)> {
    let out = Command::new("python3")
        .arg(repo().join("scripts/gen-demo-data"))
        .arg(dir)
        .output()
        .expect("python3 is required to run scripts/gen-demo-data");
    assert!(
        out.status.success(),
        "gen-demo-data: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files = BTreeSet::new();
    fn walk(base: &Path, p: &Path, files: &mut BTreeSet<(String, String)>) {
        for e in std::fs::read_dir(p).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                walk(base, &e.path(), files);
            } else {
                let rel = e
                    .path()
                    .strip_prefix(base)
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                let (bucket, key) = rel
                    .split_once('/')
                    .expect("a file outside any bucket folder");
                files.insert((bucket.to_string(), key.to_string()));
            }
        }
    }
    walk(dir, dir, &mut files);
    files
}

// ---------------------------------------------------------------------------------------------------
// docker-compose.yml on its own

const SERVICE_KEYS: &[&str] = &[
    "image",
    "build",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "volumes",
    "ports",
    "expose",
    "depends_on",
    "healthcheck",
    "restart",
    "read_only",
    "tmpfs",
    "cap_drop",
    "cap_add",
    "security_opt",
    "user",
    "working_dir",
    "networks",
    "labels",
    "stop_signal",
    "stop_grace_period",
    "init",
];

#[test]
fn compose_file_is_well_formed() {
    let c = compose();
    let top = c.as_mapping().expect("docker-compose.yml is not a mapping");
    for k in top.keys() {
        let k = s(k);
        assert!(
            ["name", "services", "volumes", "networks", "configs", "secrets"].contains(&k)
                || k.starts_with("x-"),
            "unknown top-level key `{k}` (`version` is obsolete in the Compose specification)"
        );
    }
    let name = s(c.get("name").expect("set a project name"));
    assert!(
        name.chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == '_'),
        "project name `{name}`"
    );

    // interpolation is well formed everywhere
    let mut all = Vec::new();
    strings_of(&c, &mut all);
    for text in &all {
        interpolate(text, &|_| Some("x".into()), &mut Vec::new())
            .unwrap_or_else(|e| panic!("docker-compose.yml: {e}"));
    }

    let declared_volumes: BTreeSet<String> = c
        .get("volumes")
        .and_then(Value::as_mapping)
        .map(|m| m.keys().map(|k| s(k).to_string()).collect())
        .unwrap_or_default();
    let mut used_volumes = BTreeSet::new();
    let names: BTreeSet<String> = services(&c).keys().map(|k| s(k).to_string()).collect();
    assert_eq!(
        names,
        ["demo-data", "minio", "minio-init", "s3p"]
            .map(String::from)
            .into(),
        "the services the README describes"
    );

    for (name, svc) in services(&c) {
        let name = s(name);
        let m = svc
            .as_mapping()
            .unwrap_or_else(|| panic!("{name}: not a mapping"));
        for k in m.keys() {
            assert!(
                SERVICE_KEYS.contains(&s(k)),
                "{name}: unknown key `{}`",
                s(k)
            );
        }
        assert!(
            svc.get("image").is_some() || svc.get("build").is_some(),
            "{name}: needs image or build"
        );
        if let Some(image) = svc.get("image") {
            let image = s(image);
            if svc.get("build").is_none() {
                let (_, tag) = image
                    .rsplit_once(':')
                    .unwrap_or_else(|| panic!("{name}: image `{image}` has no tag: pin one"));
                assert!(
                    !tag.is_empty() && tag != "latest" && !tag.contains('/'),
                    "{name}: image `{image}` must be pinned to a version tag"
                );
            }
        }
        if let Some(build) = svc.get("build") {
            let context = build.get("context").map(s).unwrap_or(".");
            let dockerfile = build.get("dockerfile").map(s).unwrap_or("Dockerfile");
            let dir = repo().join(context);
            assert!(dir.is_dir(), "{name}: build context {context} missing");
            assert!(
                dir.join(dockerfile).is_file(),
                "{name}: {dockerfile} missing in {context}"
            );
        }
        for key in ["command", "entrypoint"] {
            if let Some(v) = svc.get(key) {
                string_list(v, &format!("{name}.{key}"));
            }
        }
        environment(svc);
        if let Some(r) = svc.get("restart") {
            let r = s(r);
            assert!(
                ["no", "always", "unless-stopped", "on-failure"].contains(&r)
                    || r.strip_prefix("on-failure:")
                        .is_some_and(|n| n.parse::<u32>().is_ok()),
                "{name}: restart `{r}`"
            );
        }
        if let Some(hc) = svc.get("healthcheck") {
            let test = string_list(
                hc.get("test").expect("healthcheck.test"),
                "healthcheck.test",
            );
            assert!(
                ["CMD", "CMD-SHELL"].contains(&test[0].as_str()) && test.len() >= 2,
                "{name}: healthcheck.test must start with CMD or CMD-SHELL"
            );
            for d in ["interval", "timeout", "start_period", "start_interval"] {
                if let Some(v) = hc.get(d) {
                    assert!(is_duration(s(v)), "{name}: healthcheck.{d} `{}`", s(v));
                }
            }
            if let Some(r) = hc.get("retries") {
                assert!(r.as_u64().is_some_and(|r| r > 0), "{name}: retries");
            }
        }
        for p in svc
            .get("ports")
            .map(|p| string_list(p, "ports"))
            .unwrap_or_default()
        {
            let p = interpolate(&p, &|_| Some("8080".into()), &mut Vec::new()).unwrap();
            parse_port(&p);
        }
        for mount in mounts(svc) {
            if mount.source.starts_with("./") || mount.source.starts_with('/') {
                let path = repo().join(mount.source.trim_start_matches("./"));
                assert!(
                    mount.source.starts_with("./") && path.exists(),
                    "{name}: bind mount {} is not a file of the repo",
                    mount.source
                );
                assert!(
                    mount.read_only,
                    "{name}: the repo's {} must be mounted read-only",
                    mount.source
                );
                assert!(
                    !mount.source.contains(".env"),
                    "{name}: never mount .env into a container"
                );
            } else {
                assert!(
                    declared_volumes.contains(&mount.source),
                    "{name}: named volume `{}` is not declared under top-level volumes",
                    mount.source
                );
                used_volumes.insert(mount.source.clone());
            }
        }
        if let Some(t) = svc.get("tmpfs") {
            for p in string_list(t, "tmpfs") {
                assert!(p.starts_with('/'), "{name}: tmpfs {p}");
            }
        }
    }
    assert_eq!(
        used_volumes, declared_volumes,
        "every declared volume is used"
    );
}

#[test]
fn dependencies_exist_have_the_right_conditions_and_no_cycle() {
    let c = compose();
    let svcs = services(&c);
    let mut graph: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, svc) in svcs {
        let name = s(name).to_string();
        let mut deps = Vec::new();
        match svc.get("depends_on") {
            None => {}
            Some(Value::Sequence(seq)) => deps.extend(
                seq.iter()
                    .map(|d| (s(d).to_string(), "service_started".to_string())),
            ),
            Some(Value::Mapping(m)) => {
                for (d, spec) in m {
                    let cond = spec
                        .get("condition")
                        .map(s)
                        .unwrap_or("service_started")
                        .to_string();
                    deps.push((s(d).to_string(), cond));
                }
            }
            Some(other) => panic!("{name}: depends_on {other:?}"),
        }
        for (dep, cond) in &deps {
            let target = svcs
                .get(dep.as_str())
                .unwrap_or_else(|| panic!("{name} depends on `{dep}`, which is not a service"));
            assert_ne!(dep, &name, "{name} depends on itself");
            match cond.as_str() {
                "service_started" => {}
                "service_healthy" => assert!(
                    target.get("healthcheck").is_some(),
                    "{name} waits for {dep} to be healthy, but {dep} has no healthcheck"
                ),
                "service_completed_successfully" => assert!(
                    target.get("restart").map(s).unwrap_or("no") == "no",
                    "{name} waits for {dep} to complete, but {dep} is restarted"
                ),
                other => panic!("{name}: unknown depends_on condition {other}"),
            }
        }
        graph.insert(name, deps.into_iter().map(|(d, _)| d).collect());
    }
    // Kahn: every service can be started in some order
    let mut done: BTreeSet<String> = BTreeSet::new();
    while done.len() < graph.len() {
        let ready: Vec<String> = graph
            .iter()
            .filter(|(n, deps)| !done.contains(*n) && deps.iter().all(|d| done.contains(d)))
            .map(|(n, _)| n.clone())
            .collect();
        assert!(!ready.is_empty(), "dependency cycle among {graph:?}");
        done.extend(ready);
    }

    // The start order the README describes.
    let cond = |svc: &str, dep: &str| -> String {
        s(&service(&c, svc)["depends_on"][dep]["condition"]).to_string()
    };
    assert_eq!(cond("s3p", "minio"), "service_healthy");
    assert_eq!(cond("s3p", "minio-init"), "service_completed_successfully");
    assert_eq!(cond("minio-init", "minio"), "service_healthy");
    assert_eq!(
        cond("minio-init", "demo-data"),
        "service_completed_successfully"
    );
    assert!(
        service(&c, "s3p").get("healthcheck").is_some(),
        "s3p has a healthcheck"
    );
}

// ---------------------------------------------------------------------------------------------------
// docker-compose.yml against .env.example and proxy.yaml

#[test]
fn every_variable_is_defined_in_env_example_and_secrets_come_from_it() {
    let c = compose();
    let env = env_example();
    let (config, proxy_vars) = proxy_config();

    let mut all = Vec::new();
    strings_of(&c, &mut all);
    let mut compose_vars = Vec::new();
    for text in &all {
        interpolate(text, &|n| env.get(n).cloned(), &mut compose_vars)
            .unwrap_or_else(|e| panic!("with .env.example: {e}"));
    }
    let compose_vars: BTreeSet<String> = compose_vars.into_iter().collect();
    for v in compose_vars.iter().chain(proxy_vars.iter()) {
        assert!(
            env.contains_key(v),
            "{v} is used but not defined in .env.example"
        );
    }
    // The Garage variant's compose file and configuration share .env.example.
    let garage_vars = vars_of_compose(&garage_compose(), &env);
    let (_, garage_proxy_vars) = proxy_config_of("deploy/garage/proxy.yaml");
    for k in env.keys() {
        assert!(
            compose_vars.contains(k)
                || proxy_vars.contains(k)
                || garage_vars.contains(k)
                || garage_proxy_vars.contains(k),
            ".env.example defines {k}, which nothing uses"
        );
    }
    assert!(
        !proxy_vars.is_empty(),
        "proxy.yaml takes its secrets from ${{...}}"
    );

    // s3p's container receives every variable proxy.yaml asks for, from the same-named variable of .env.
    let s3p_env = environment(service(&c, "s3p"));
    for v in &proxy_vars {
        let raw = s3p_env
            .get(v)
            .unwrap_or_else(|| panic!("proxy.yaml needs {v}, but the s3p service does not set it"));
        let mut used = Vec::new();
        interpolate(raw, &|n| env.get(n).cloned(), &mut used).unwrap();
        assert_eq!(
            used.first(),
            Some(v),
            "s3p's {v} must be ${{{v}...}}, got `{raw}`"
        );
    }

    // No literal credential anywhere in the compose file.
    for (name, svc) in services(&c) {
        for (k, raw) in environment(svc) {
            let secretish = ["SECRET", "PASSWORD", "KEY", "USER", "TOKEN"]
                .iter()
                .any(|w| k.contains(w));
            if secretish {
                let mut used = Vec::new();
                interpolate(&raw, &|n| env.get(n).cloned(), &mut used).unwrap();
                assert!(
                    raw.starts_with("${") && raw.ends_with('}') && used.len() == 1,
                    "{}: {k} must come from .env (${{...}}), not be written in the file",
                    s(name)
                );
            }
        }
    }

    // s3p signs for MinIO with exactly the credentials MinIO is started with, and so does the init job.
    let ic = interpolated(&c, &env);
    let minio_env = |svc: &str, k: &str| s(&service(&ic, svc)["environment"][k]).to_string();
    let BackendCredentials::Static {
        access_key_id,
        secret_access_key,
    } = &config.backends["minio"].credentials
    else {
        panic!("the minio backend has credentials in proxy.yaml (from .env)");
    };
    assert_eq!(
        access_key_id.expose(),
        minio_env("minio", "MINIO_ROOT_USER")
    );
    assert_eq!(
        secret_access_key.expose(),
        minio_env("minio", "MINIO_ROOT_PASSWORD")
    );
    for k in ["MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"] {
        assert_eq!(
            minio_env("minio-init", k),
            minio_env("minio", k),
            "minio-init {k}"
        );
    }
    // MinIO refuses to start with a shorter root user or password.
    assert!(minio_env("minio", "MINIO_ROOT_USER").len() >= 3);
    assert!(minio_env("minio", "MINIO_ROOT_PASSWORD").len() >= 8);

    // A missing .env is a clear error, not an empty credential.
    let err = interpolate(
        s(&service(&c, "s3p")["environment"]["S3P_TOKEN_SECRET"]),
        &|_| None,
        &mut Vec::new(),
    );
    assert!(
        err.is_err(),
        "S3P_TOKEN_SECRET must be required (${{S3P_TOKEN_SECRET:?...}})"
    );
}

#[test]
fn ports_paths_and_hosts_agree_with_proxy_yaml() {
    let c = interpolated(&compose(), &env_example());
    let env = env_example();
    let (config, _) = proxy_config();
    let s3p = service(&c, "s3p");

    // published port -> proxy.yaml's listen port, which must accept connections from outside the
    // container (0.0.0.0), while the host side stays on loopback.
    let ports = string_list(&s3p["ports"], "s3p.ports");
    assert_eq!(ports.len(), 1, "s3p publishes one port");
    let p = parse_port(&ports[0]);
    assert_eq!(
        p.container,
        config.listen.port(),
        "published port vs proxy.yaml listen"
    );
    assert!(
        config.listen.ip().is_unspecified(),
        "proxy.yaml listen {} is unreachable from outside the container: use 0.0.0.0",
        config.listen
    );
    assert_eq!(
        p.ip.as_deref(),
        Some("127.0.0.1"),
        "publish on loopback only"
    );
    assert_eq!(p.host.to_string(), env["S3P_PORT"], "host port is S3P_PORT");
    for (name, svc) in services(&c) {
        if s(name) != "s3p" {
            assert!(
                svc.get("ports").is_none(),
                "only s3p is published, not {}",
                s(name)
            );
        }
    }

    // each backend endpoint is a compose service on the port it listens on
    let minio_cmd = string_list(&service(&c, "minio")["command"], "minio.command");
    let minio_port: u16 = minio_cmd
        .iter()
        .position(|a| a == "--address")
        .map(|i| minio_cmd[i + 1].trim_start_matches(':').parse().unwrap())
        .unwrap_or(9000);
    for (name, b) in &config.backends {
        assert!(
            services(&c).contains_key(b.host.as_str()),
            "backend {name}: host {} is not a compose service",
            b.host
        );
        assert_eq!(b.host, "minio");
        assert_eq!(b.port, minio_port, "backend {name}: MinIO's S3 port");
        assert!(!b.tls, "MinIO serves plain HTTP inside the compose network");
    }
    let init_env = environment(service(&c, "minio-init"));
    assert_eq!(
        init_env["MINIO_ENDPOINT"],
        format!("http://minio:{minio_port}"),
        "minio-init talks to the same MinIO"
    );

    // the configuration s3p reads is the mounted proxy.yaml
    let config_arg = |args: &[String]| {
        args.iter()
            .position(|a| a == "--config" || a == "-c")
            .map(|i| args[i + 1].clone())
    };
    let compose_cmd = s3p.get("command").map(|v| string_list(v, "s3p.command"));
    let docker_cmd = stages()
        .last()
        .unwrap()
        .1
        .iter()
        .rev()
        .find(|(i, _)| i == "CMD")
        .map(|(_, a)| json_list(a, "CMD"));
    let path = compose_cmd
        .as_deref()
        .and_then(config_arg)
        .or_else(|| docker_cmd.as_deref().and_then(config_arg))
        .expect("s3p is started with --config");
    if let (Some(a), Some(b)) = (&compose_cmd, &docker_cmd) {
        assert_eq!(
            config_arg(a),
            config_arg(b),
            "compose command and Dockerfile CMD disagree"
        );
    }
    let mount = mounts(s3p);
    let m = mount_of(&mount, "./proxy.yaml");
    assert_eq!(m.target, path, "s3p reads the mounted proxy.yaml");
    assert!(m.read_only);

    // the healthcheck asks s3p's admin listener for /ready; that port is not published
    let admin = config
        .admin_listen
        .expect("proxy.yaml sets admin_listen (the healthcheck uses /ready)");
    assert_ne!(admin.port(), config.listen.port());
    assert!(
        admin.ip().is_unspecified() || admin.ip().is_loopback(),
        "the healthcheck connects to 127.0.0.1"
    );
    assert!(ports
        .iter()
        .all(|p| parse_port(p).container != admin.port()));
    let test = string_list(&s3p["healthcheck"]["test"], "healthcheck.test").join(" ");
    assert!(
        test.contains(&format!("/dev/tcp/127.0.0.1/{} ", admin.port())),
        "healthcheck port: {test}"
    );
    assert!(test.contains("GET /ready "), "healthcheck path: {test}");
}

#[test]
fn s3p_check_accepts_proxy_yaml_but_for_resolving_minio() {
    let env = env_example();
    let out = Command::new(env!("CARGO_BIN_EXE_s3p"))
        .args(["check", "--config"])
        .arg(repo().join("proxy.yaml"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(&env)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // `minio` resolves inside the compose network only. Any other problem is a real one.
        let problems: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("  "))
            .map(str::trim)
            .collect();
        assert_eq!(problems.len(), 1, "s3p check: {stderr}");
        assert!(
            problems[0].starts_with("backends.minio: cannot resolve minio"),
            "s3p check: {stderr}"
        );
    }
    // And without the environment, every secret is named as missing (nothing is baked in).
    let out = Command::new(env!("CARGO_BIN_EXE_s3p"))
        .args(["check", "--config"])
        .arg(repo().join("proxy.yaml"))
        .env_clear()
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let (_, proxy_vars) = proxy_config();
    assert!(proxy_vars.len() >= 8, "{proxy_vars:?}");
    for k in &proxy_vars {
        assert!(
            stderr.contains(&format!("environment variable {k} is not set")),
            "{k}: {stderr}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// demo data and the init job

#[test]
fn init_script_creates_the_buckets_proxy_yaml_uses() {
    let c = compose();
    let env = env_example();
    let (config, _) = proxy_config();

    // demo-data writes into the volume that minio-init reads, at the path the script reads
    let gen = service(&c, "demo-data");
    let gen_mounts = mounts(gen);
    let gen_cmd = string_list(&gen["command"], "demo-data.command");
    let script = mount_of(&gen_mounts, "./scripts/gen-demo-data");
    assert!(
        gen_cmd.contains(&script.target),
        "demo-data runs the mounted gen-demo-data"
    );
    let out_dir = gen_cmd.last().unwrap();
    let gen_volume = gen_mounts
        .iter()
        .find(|m| &m.target == out_dir)
        .expect("demo-data writes into a volume");
    assert!(!gen_volume.read_only);

    let init = service(&c, "minio-init");
    let init_mounts = mounts(init);
    let init_env = environment(init);
    let entry = string_list(&init["entrypoint"], "minio-init.entrypoint");
    let script = mount_of(&init_mounts, "./scripts/minio-init");
    assert!(
        entry.contains(&script.target),
        "minio-init runs the mounted script"
    );
    assert_eq!(entry[0], "/bin/sh", "the mc image has sh, not bash");
    let data = mount_of(&init_mounts, &gen_volume.source);
    assert_eq!(
        init_env["DEMO_DATA"], data.target,
        "DEMO_DATA is where the data is mounted"
    );

    // run gen-demo-data, then minio-init against a stub mc that records its calls
    let tmp = TempDir::new("deploy-init");
    let files = generate_demo_data(&tmp.0.join("data"));
    let bin = tmp.0.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = tmp.0.join("mc.log");
    std::fs::write(
        bin.join("mc"),
        format!("#!/bin/sh\necho \"$*\" >> '{}'\n", log.display()),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(bin.join("mc"), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = Command::new("sh")
        .arg(repo().join("scripts/minio-init"))
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("DEMO_DATA", tmp.0.join("data"))
        .env("MINIO_ENDPOINT", &init_env["MINIO_ENDPOINT"])
        .env("MINIO_ROOT_USER", &env["MINIO_ROOT_USER"])
        .env("MINIO_ROOT_PASSWORD", &env["MINIO_ROOT_PASSWORD"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "minio-init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(
        calls[0],
        format!(
            "alias set demo {} {} {}",
            init_env["MINIO_ENDPOINT"], env["MINIO_ROOT_USER"], env["MINIO_ROOT_PASSWORD"]
        )
    );
    let created: BTreeSet<String> = calls
        .iter()
        .filter_map(|c| c.strip_prefix("mb --ignore-existing demo/"))
        .map(String::from)
        .collect();
    let wanted: BTreeSet<String> = config
        .data_sources
        .values()
        .map(|d| d.bucket.clone())
        .collect();
    assert_eq!(
        created, wanted,
        "buckets created vs buckets of proxy.yaml's data sources"
    );
    for b in &wanted {
        let mirror = format!(
            "mirror --overwrite {}/{b} demo/{b}",
            tmp.0.join("data").display()
        );
        let mb = calls
            .iter()
            .position(|c| c.ends_with(&format!("demo/{b}")) && c.starts_with("mb"));
        let mi = calls.iter().position(|c| c == &mirror);
        assert!(
            mb.is_some() && mi.is_some() && mb < mi,
            "{b}: bucket created, then uploaded: {calls:?}"
        );
    }
    let buckets_written: BTreeSet<String> = files.iter().map(|(b, _)| b.clone()).collect();
    assert_eq!(buckets_written, wanted);

    // no data: the init job fails loudly instead of leaving empty buckets
    let empty = tmp.0.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = Command::new("sh")
        .arg(repo().join("scripts/minio-init"))
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("DEMO_DATA", &empty)
        .env("MINIO_ROOT_USER", "u")
        .env("MINIO_ROOT_PASSWORD", "p")
        .output()
        .unwrap();
    assert!(!out.status.success(), "minio-init with no data must fail");
}

#[test]
fn demo_data_covers_every_data_source_in_csv_json_and_parquet() {
    let (config, _) = proxy_config();
    let tmp = TempDir::new("deploy-data");
    let files = generate_demo_data(&tmp.0);
    for (name, ds) in &config.data_sources {
        let n = files
            .iter()
            .filter(|(b, k)| b == &ds.bucket && k.starts_with(&ds.prefix))
            .count();
        assert!(n > 0, "data source {name} has no demo object");
    }
    let outside: Vec<_> = files
        .iter()
        .filter(|(b, k)| {
            !config
                .data_sources
                .values()
                .any(|d| &d.bucket == b && k.starts_with(&d.prefix))
        })
        .collect();
    assert!(
        !outside.is_empty(),
        "one demo object lies outside every data source"
    );
    let ext = |e: &str| files.iter().filter(|(_, k)| k.ends_with(e)).count();
    assert!(
        ext(".csv") >= 2 && ext(".json") >= 1 && ext(".parquet") >= 2,
        "{files:?}"
    );
    // one of the data sources is a prefix of a bucket
    assert!(config.data_sources.values().any(|d| !d.prefix.is_empty()));

    for (b, k) in &files {
        let body = std::fs::read(tmp.0.join(b).join(k)).unwrap();
        if k.ends_with(".parquet") {
            assert!(body.starts_with(b"PAR1") && body.ends_with(b"PAR1"), "{k}");
            let footer =
                u32::from_le_bytes(body[body.len() - 8..body.len() - 4].try_into().unwrap());
            assert!((footer as usize) < body.len() - 12, "{k}: footer length");
        } else if k.ends_with(".json") {
            let v: Value = serde_yaml_ng::from_slice(&body).expect("valid JSON");
            assert!(v.as_sequence().is_some_and(|s| !s.is_empty()), "{k}");
        } else if k.ends_with(".csv") {
            let text = String::from_utf8(body).unwrap();
            let widths: BTreeSet<usize> = text.lines().map(|l| l.split(',').count()).collect();
            assert_eq!(widths.len(), 1, "{k}: rows of different widths");
            assert!(text.lines().count() >= 2, "{k}: a header and rows");
        }
    }
    // deterministic: a second run writes the same bytes
    let tmp2 = TempDir::new("deploy-data2");
    generate_demo_data(&tmp2.0);
    for (b, k) in &files {
        assert_eq!(
            std::fs::read(tmp.0.join(b).join(k)).unwrap(),
            std::fs::read(tmp2.0.join(b).join(k)).unwrap(),
            "{b}/{k} differs between runs"
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// Dockerfile and .dockerignore

#[test]
fn dockerfile_builds_the_cargo_binary_and_runs_it_as_non_root() {
    let bin = cargo_bin_name();
    assert_eq!(bin, "s3p");
    let stages = stages();
    assert!(stages.len() >= 2, "multi-stage build");
    let (build_from, build) = &stages[0];
    let (run_from, run) = stages.last().unwrap();

    let (image, alias) = build_from
        .split_once(" AS ")
        .or_else(|| build_from.split_once(" as "))
        .expect("the build stage is named (FROM ... AS build)");
    let version = image
        .strip_prefix("rust:")
        .and_then(|t| t.strip_suffix("-slim-bookworm"))
        .unwrap_or_else(|| panic!("build stage `{image}`: rust:1.NN.P-slim-bookworm"));
    let minor: u32 = version
        .strip_prefix("1.")
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("rust image version `{version}`"));
    assert!(minor >= 85, "edition 2024 dependencies need rust 1.85+");
    let runs: Vec<&str> = build
        .iter()
        .filter(|(i, _)| i == "RUN")
        .map(|(_, a)| a.as_str())
        .collect();
    assert!(
        runs.iter()
            .any(|r| r.contains("apt-get install") && r.contains("cmake")),
        "cmake is installed for zlib-ng"
    );
    let cargo = runs
        .iter()
        .find(|r| r.contains("cargo build"))
        .expect("the build stage runs cargo build");
    let words: Vec<&str> = cargo.split_whitespace().collect();
    for flag in ["--release", "--locked"] {
        assert!(words.contains(&flag), "cargo build {flag}: {cargo}");
    }
    assert!(
        words.windows(2).any(|w| w == ["--bin", bin.as_str()]),
        "cargo build --bin {bin}: {cargo}"
    );
    // The build stage copies the Cargo inputs, which .dockerignore lets through.
    let mut copied = Vec::new();
    for (i, a) in build.iter() {
        assert_ne!(i, "ADD", "use COPY");
        if i == "COPY" {
            let words: Vec<&str> = a
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            for src in &words[..words.len() - 1] {
                assert!(repo().join(src).exists(), "COPY {src}: not in the repo");
                assert!(!dockerignored(src), "COPY {src}: excluded by .dockerignore");
                assert!(
                    !src.contains("env") && !src.contains("proxy.yaml"),
                    "COPY {src}"
                );
                copied.push(src.to_string());
            }
        }
    }
    // Cargo refuses a manifest whose declared targets are missing: every `path = "..."` of Cargo.toml
    // (the binary, the benchmark) must be in the build stage too.
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let target_dirs: Vec<String> = manifest
        .lines()
        .filter_map(|l| l.trim().strip_prefix("path = \""))
        .map(|p| p.split('/').next().unwrap().to_string())
        .collect();
    assert!(
        target_dirs.contains(&"benches".to_string()),
        "{target_dirs:?}"
    );
    for needed in ["Cargo.toml", "Cargo.lock"]
        .into_iter()
        .chain(target_dirs.iter().map(String::as_str))
    {
        assert!(
            copied.iter().any(|c| c == needed),
            "build stage copies {needed}"
        );
    }

    assert_eq!(
        run_from, "debian:12.12-slim",
        "slim Debian 12 (bookworm) run stage"
    );
    let copies: Vec<&str> = run
        .iter()
        .filter(|(i, _)| i == "COPY")
        .map(|(_, a)| a.as_str())
        .collect();
    assert_eq!(
        copies.len(),
        1,
        "the run stage copies the binary only: {copies:?}"
    );
    let words: Vec<&str> = copies[0].split_whitespace().collect();
    assert_eq!(words[0], format!("--from={alias}"));
    assert_eq!(words.len(), 3, "COPY --from=build SRC DST");
    let (src, dst) = (words[1], words[2]);
    let built = runs.iter().any(|r| {
        r.contains(&format!("target/release/{bin} {src}"))
            || src.ends_with(&format!("target/release/{bin}"))
    });
    assert!(
        built,
        "the copied file {src} is cargo's target/release/{bin}"
    );
    assert!(
        dst.ends_with(&format!("/{bin}")),
        "installed as {bin}: {dst}"
    );
    assert!(!run.iter().any(|(i, _)| i == "ADD"));

    let entry = run
        .iter()
        .rev()
        .find(|(i, _)| i == "ENTRYPOINT")
        .map(|(_, a)| json_list(a, "ENTRYPOINT"))
        .expect("ENTRYPOINT");
    assert_eq!(
        entry,
        vec![dst.to_string()],
        "the entrypoint is the copied binary"
    );

    // USER: set, not root, and in force at the end of the run stage
    let users: Vec<(usize, &str)> = run
        .iter()
        .enumerate()
        .filter(|(_, (i, _))| i == "USER")
        .map(|(n, (_, a))| (n, a.as_str()))
        .collect();
    let (at, user) = *users.last().expect("the run stage sets USER");
    let name = user.split(':').next().unwrap();
    assert!(
        name != "root" && name != "0" && !name.is_empty(),
        "USER {user}"
    );
    assert!(
        run[at..].iter().all(|(i, _)| i != "RUN"),
        "nothing runs as root after USER"
    );
    if let Ok(uid) = name.parse::<u32>() {
        assert!(uid >= 1000, "an unprivileged uid");
        assert!(
            run.iter()
                .any(|(i, a)| i == "RUN" && a.contains(&format!("--uid {uid}"))),
            "the uid {uid} has a passwd entry"
        );
    }

    // nothing secret in the image
    for (i, a) in stages.iter().flat_map(|(_, ins)| ins.iter()) {
        if i == "ENV" || i == "ARG" {
            let up = a.to_uppercase();
            for w in ["SECRET", "PASSWORD", "TOKEN", "KEY", "MINIO_ROOT"] {
                assert!(!up.contains(w), "{i} {a}: secrets come at run time");
            }
        }
    }
    let exposed: Vec<&str> = run
        .iter()
        .filter(|(i, _)| i == "EXPOSE")
        .map(|(_, a)| a.as_str())
        .collect();
    let (config, _) = proxy_config();
    let admin = config.admin_listen.expect("admin_listen").port();
    assert_eq!(
        exposed,
        vec![format!("{} {admin}", config.listen.port())],
        "EXPOSE the S3 and admin ports"
    );
}

#[test]
fn dockerignore_lets_in_only_the_build_inputs() {
    for p in [
        "Cargo.toml",
        "Cargo.lock",
        "src",
        "src/main.rs",
        "src/auth/sigv4.rs",
    ] {
        assert!(!dockerignored(p), "{p} must reach the build");
    }
    for p in [
        ".env",
        ".env.example",
        ".git/config",
        "target/release/s3p",
        "proxy.yaml",
        "docker-compose.yml",
        "tests/read_path.rs",
        "scripts/quickstart",
        "demo-data/demo-sales/2024/q1.csv",
        "README.md",
    ] {
        assert!(dockerignored(p), "{p} must stay out of the build context");
    }
    // the matcher itself
    assert!(
        glob("*", "anything") && !glob("*", "a/b") && glob("src", "src") && !glob("src", "srcx")
    );
}

// ---------------------------------------------------------------------------------------------------
// the s3p healthcheck, run for real

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn s3p_healthcheck_tells_a_ready_s3p_from_a_dead_or_unready_one() {
    let c = compose();
    let (config, _) = proxy_config();
    let test = string_list(
        &service(&c, "s3p")["healthcheck"]["test"],
        "healthcheck.test",
    );
    assert_eq!(
        test[0], "CMD",
        "exec form (CMD), run here as it is in the container"
    );
    let admin = config
        .admin_listen
        .expect("admin_listen")
        .port()
        .to_string();
    let (port, admin_port) = (free_port(), free_port());
    let argv: Vec<String> = test[1..]
        .iter()
        .map(|a| {
            a.replace(
                &format!("127.0.0.1/{admin}"),
                &format!("127.0.0.1/{admin_port}"),
            )
        })
        .collect();
    assert_ne!(
        argv,
        test[1..],
        "the healthcheck connects to 127.0.0.1/{admin}"
    );
    let run_check = || {
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", argv[0]));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st.success();
            }
            assert!(Instant::now() < deadline, "the healthcheck hangs");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert!(!run_check(), "healthy with nothing listening");

    // s3p with the repo's proxy.yaml on free loopback ports; its backend is a listening socket (/ready
    // asks for a TCP connection only).
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_port = backend.local_addr().unwrap().port();
    let yaml: String = read("proxy.yaml")
        .lines()
        .map(|l| {
            if l.starts_with("listen:") {
                format!("listen: 127.0.0.1:{port}\n")
            } else if l.starts_with("admin_listen:") {
                format!("admin_listen: 127.0.0.1:{admin_port}\n")
            } else {
                format!(
                    "{}\n",
                    l.replace(
                        "http://minio:9000",
                        &format!("http://127.0.0.1:{backend_port}")
                    )
                )
            }
        })
        .collect();
    assert!(yaml.contains(&format!("admin_listen: 127.0.0.1:{admin_port}")));
    assert!(yaml.contains(&format!("http://127.0.0.1:{backend_port}")));
    let tmp = TempDir::new("deploy-health");
    let path = tmp.0.join("proxy.yaml");
    std::fs::write(&path, yaml).unwrap();
    let log = std::fs::File::create(tmp.0.join("s3p.log")).unwrap();
    let mut s3p = Proc(
        Command::new(env!("CARGO_BIN_EXE_s3p"))
            .arg("--config")
            .arg(&path)
            .envs(env_example())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", admin_port)).is_err() {
        assert!(
            s3p.0.try_wait().unwrap().is_none(),
            "s3p exited: {}",
            std::fs::read_to_string(tmp.0.join("s3p.log")).unwrap()
        );
        assert!(Instant::now() < deadline, "s3p did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(run_check(), "unhealthy while s3p and its backend are up");

    // backend gone: s3p stays ready (backends are shared by every replica; their reachability is in
    // /metrics), so the container stays healthy
    drop(backend);
    assert!(run_check(), "unhealthy because a backend is down");

    s3p.0.kill().unwrap();
    s3p.0.wait().unwrap();
    assert!(!run_check(), "healthy after s3p stopped");
}

/// Image references that are gone or float: Docker Hub's `minio/minio` and `minio/mc` were deleted in
/// September 2026 (quay.io serves the same releases), and a tag like `latest`, `3` or `3.11` moves.
fn image_problem(image: &str) -> Option<String> {
    // Built here by compose (`s3p:local`, the Dockerfile's own stages).
    if image.starts_with("s3p:") {
        return None;
    }
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let Some((repository, tag)) = name.rsplit_once(':').filter(|(_, t)| !t.contains('/')) else {
        return Some(format!("`{image}` has no tag"));
    };
    let hub = repository.strip_prefix("docker.io/").unwrap_or(repository);
    if hub.starts_with("minio/") {
        return Some(format!(
            "`{image}`: Docker Hub's minio repositories are gone; use quay.io/minio/..."
        ));
    }
    if repository.starts_with("quay.io/minio/")
        && !digest.is_some_and(|d| d.starts_with("sha256:") && d.len() == 71)
    {
        return Some(format!(
            "`{image}`: pin MinIO images by digest (@sha256:...)"
        ));
    }
    // An exact version: MinIO's RELEASE.<date>, or a version with major.minor.patch (v2.5.0,
    // 3.11.13-slim-bookworm) or Debian's point release (12.12-slim).
    let version = tag.strip_prefix('v').unwrap_or(tag);
    let numbers: Vec<&str> = version.split('-').next().unwrap_or("").split('.').collect();
    let numeric = numbers
        .iter()
        .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    let exact = tag.starts_with("RELEASE.")
        || (numeric && numbers.len() >= 3)
        || (repository == "debian" && numeric && numbers.len() == 2);
    if !exact {
        return Some(format!(
            "`{image}`: tag `{tag}` floats; pin an exact version"
        ));
    }
    None
}

#[test]
fn image_pins_refuse_floating_tags_and_deleted_repositories() {
    let table: &[(&str, bool)] = &[
        ("quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z@sha256:a1ea29fa28355559ef137d71fc570e508a214ec84ff8083e39bc5428980b015e", true),
        ("quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z", false),
        ("minio/minio:RELEASE.2025-04-22T22-12-26Z", false),
        ("docker.io/minio/mc:RELEASE.2025-04-16T18-13-26Z", false),
        ("python:3.11.13-slim-bookworm", true),
        ("python:3.11-slim-bookworm", false),
        ("python:3", false),
        ("python:latest", false),
        ("python", false),
        ("rust:1.95.0-slim-bookworm", true),
        ("rust:1.95-slim-bookworm", false),
        ("debian:12.12-slim", true),
        ("debian:bookworm-slim", false),
        ("dxflrs/garage:v2.5.0", true),
        ("dxflrs/garage:v2", false),
        ("s3p:local", true),
        ("localhost:5000/thing", false),
    ];
    for (image, ok) in table {
        assert_eq!(
            image_problem(image).is_none(),
            *ok,
            "{image}: {:?}",
            image_problem(image)
        );
    }
}

#[test]
fn every_image_is_pinned_and_pullable_from_a_live_repository() {
    let mut images: Vec<(String, String)> = Vec::new();
    for file in ["docker-compose.yml", "docker-compose.garage.yml"] {
        let Ok(text) = std::fs::read_to_string(repo().join(file)) else {
            assert_ne!(file, "docker-compose.yml", "docker-compose.yml is missing");
            continue;
        };
        let c: Value = serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        for (name, svc) in services(&c) {
            if let Some(image) = svc.get("image") {
                images.push((format!("{file}: {}", s(name)), s(image).to_string()));
            }
        }
    }
    for (from, _) in stages() {
        let image = from.split_whitespace().next().unwrap_or("").to_string();
        images.push(("Dockerfile".into(), image));
    }
    assert!(images.len() >= 6, "{images:?}");
    for (whose, image) in &images {
        assert_eq!(image_problem(image), None, "{whose}");
    }
    // No BuildKit frontend image pulled at build time.
    assert!(
        !read("Dockerfile")
            .lines()
            .any(|l| l.starts_with("# syntax=")),
        "the Dockerfile's `# syntax=` line pulls a frontend image: pin it or drop it"
    );
}

#[test]
fn garage_variant_runs_the_same_s3p_against_garage() {
    let env = env_example();
    let g = garage_compose();
    let m = compose();
    let names: BTreeSet<&str> = services(&g).keys().map(s).collect();
    assert_eq!(
        names,
        ["demo-data", "garage", "garage-init", "s3p"]
            .into_iter()
            .collect(),
        "docker-compose.garage.yml services"
    );
    // The same s3p service but for its configuration file, its backend's variables and dependencies.
    let (gs, ms) = (service(&g, "s3p"), service(&m, "s3p"));
    for key in [
        "build",
        "image",
        "command",
        "ports",
        "healthcheck",
        "read_only",
        "tmpfs",
        "cap_drop",
        "security_opt",
        "restart",
    ] {
        assert_eq!(
            gs.get(key),
            ms.get(key),
            "s3p.{key} differs between the compose files"
        );
    }
    assert_eq!(
        mounts(gs)
            .iter()
            .map(|m| (m.source.as_str(), m.target.as_str()))
            .collect::<Vec<_>>(),
        vec![("./deploy/garage/proxy.yaml", "/etc/s3p/proxy.yaml")]
    );
    // Every variable is in .env.example, and s3p gets each one its configuration asks for.
    let vars = vars_of_compose(&g, &env);
    for v in &vars {
        assert!(
            env.contains_key(v),
            "{v} is used but not defined in .env.example"
        );
    }
    let (garage_config, proxy_vars) = proxy_config_of("deploy/garage/proxy.yaml");
    let s3p_env = environment(gs);
    for v in &proxy_vars {
        let raw = s3p_env
            .get(v)
            .unwrap_or_else(|| panic!("deploy/garage/proxy.yaml needs {v}; s3p does not get it"));
        assert!(raw.starts_with(&format!("${{{v}")), "s3p's {v}: `{raw}`");
    }
    // Same data sources (but the backend), keys and limits as the MinIO configuration.
    let (minio_config, _) = proxy_config();
    assert_eq!(
        garage_config.data_sources.keys().collect::<Vec<_>>(),
        minio_config.data_sources.keys().collect::<Vec<_>>()
    );
    for (name, ds) in &garage_config.data_sources {
        let other = &minio_config.data_sources[name];
        assert_eq!(
            (&ds.bucket, &ds.prefix),
            (&other.bucket, &other.prefix),
            "{name}"
        );
        assert_eq!(ds.backend, "garage");
    }
    assert_eq!(garage_config.api_keys.len(), minio_config.api_keys.len());
    assert_eq!(garage_config.limits, minio_config.limits);
    // s3p signs with the key Garage creates at start, and garage-init grants that key.
    let ig = interpolated(&g, &env);
    let ge = |svc: &str, k: &str| s(&service(&ig, svc)["environment"][k]).to_string();
    let BackendCredentials::Static {
        access_key_id,
        secret_access_key,
    } = &garage_config.backends["garage"].credentials
    else {
        panic!("the garage backend has static credentials");
    };
    assert_eq!(
        access_key_id.expose(),
        ge("garage", "GARAGE_DEFAULT_ACCESS_KEY")
    );
    assert_eq!(
        secret_access_key.expose(),
        ge("garage", "GARAGE_DEFAULT_SECRET_KEY")
    );
    assert_eq!(
        ge("garage-init", "GARAGE_KEY_ID"),
        ge("garage", "GARAGE_DEFAULT_ACCESS_KEY")
    );
    assert_eq!(
        ge("garage-init", "GARAGE_SECRET"),
        ge("garage", "GARAGE_DEFAULT_SECRET_KEY")
    );
    assert_eq!(
        ge("garage-init", "GARAGE_ADMIN_TOKEN"),
        ge("garage", "GARAGE_ADMIN_TOKEN")
    );
    // Garage's formats: GK + 24 hex digits, 64 hex digits for the secret and the RPC secret.
    let hex = |v: &str| v.bytes().all(|b| b.is_ascii_hexdigit());
    let key = ge("garage", "GARAGE_DEFAULT_ACCESS_KEY");
    assert!(
        key.len() == 26 && key.starts_with("GK") && hex(&key[2..]),
        "{key}"
    );
    for k in ["GARAGE_DEFAULT_SECRET_KEY", "GARAGE_RPC_SECRET"] {
        let v = ge("garage", k);
        assert!(v.len() == 64 && hex(&v), "{k}: {v}");
    }
    // Garage reads its configuration at /etc/garage.toml; the endpoints s3p and the init use are its.
    assert!(mounts(service(&g, "garage"))
        .iter()
        .any(|m| m.source == "./deploy/garage/garage.toml" && m.target == "/etc/garage.toml"));
    let toml = read("deploy/garage/garage.toml");
    assert!(toml.contains("api_bind_addr = \"[::]:3900\""), "S3 on 3900");
    assert!(
        toml.contains("api_bind_addr = \"[::]:3903\""),
        "admin on 3903"
    );
    assert!(
        !toml.contains("rpc_secret") && !toml.contains("admin_token"),
        "no secret in garage.toml"
    );
    assert_eq!(
        garage_config.backends["garage"].endpoint.as_str(),
        "http://garage:3900/"
    );
    assert_eq!(
        ge("garage-init", "GARAGE_ADMIN_ENDPOINT"),
        "http://garage:3903"
    );
    assert_eq!(
        ge("garage-init", "GARAGE_S3_ENDPOINT"),
        "http://garage:3900"
    );
}

#[test]
fn garage_init_loads_the_demo_data_into_a_real_garage() {
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let dir = TempDir::new("garage-init");
    let garage = common::Garage::start(&dir.0.join("garage"));
    let files = generate_demo_data(&dir.0.join("demo"));
    let run = || {
        let out = Command::new("python3")
            .arg(repo().join("scripts/garage-init"))
            .env(
                "GARAGE_ADMIN_ENDPOINT",
                format!("http://127.0.0.1:{}", garage.admin_port),
            )
            .env("GARAGE_ADMIN_TOKEN", common::GARAGE_ADMIN_TOKEN)
            .env("GARAGE_S3_ENDPOINT", garage.endpoint())
            .env("GARAGE_KEY_ID", common::GARAGE_KEY_ID)
            .env("GARAGE_SECRET", common::GARAGE_SECRET)
            .env("DEMO_DATA", dir.0.join("demo"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "garage-init: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = run();
    assert!(first.contains("2 demo buckets ready"), "{first}");
    // Again: buckets and objects are reused.
    run();
    let client = garage.client();
    let rt = common::runtime();
    for (bucket, key) in &files {
        let got = rt.block_on(async {
            client
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{bucket}/{key}: {e:?}"))
                .body
                .collect()
                .await
                .unwrap()
                .into_bytes()
        });
        let want = std::fs::read(dir.0.join("demo").join(bucket).join(key)).unwrap();
        assert_eq!(got.as_ref(), want.as_slice(), "{bucket}/{key}");
    }
    assert!(files.len() >= 7, "{files:?}");
}

// ---------------------------------------------------------------------------------------------------
// Kubernetes (deploy/kubernetes)

fn k8s(rel: &str) -> Value {
    serde_yaml_ng::from_str(&read(&format!("deploy/kubernetes/{rel}")))
        .unwrap_or_else(|e| panic!("deploy/kubernetes/{rel}: {e}"))
}

/// The `kubernetes-validate` of the tests' Python venv (tests/requirements.txt), or on PATH.
fn kubernetes_validate() -> PathBuf {
    if let Ok(p) = std::env::var("S3P_KUBERNETES_VALIDATE") {
        return PathBuf::from(p);
    }
    if let Ok(py) = std::env::var("S3P_PYTHON") {
        let beside = Path::new(&py).with_file_name("kubernetes-validate");
        if beside.exists() {
            return beside;
        }
    }
    PathBuf::from("kubernetes-validate")
}

#[test]
fn kubernetes_manifests_pass_schema_validation() {
    let kustomization = k8s("kustomization.yaml");
    let resources = string_list(&kustomization["resources"], "kustomization resources");
    assert!(resources.len() >= 5, "{resources:?}");
    let validate = |path: &Path| {
        Command::new(kubernetes_validate())
            .arg("--strict")
            .arg(path)
            .output()
            .unwrap_or_else(|e| {
                panic!("kubernetes-validate (pip install kubernetes-validate; .ci/run does): {e}")
            })
    };
    for r in &resources {
        let out = validate(&repo().join("deploy/kubernetes").join(r));
        assert!(
            out.status.success(),
            "{r}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The validator does check: a Deployment with a misspelt field and a string for replicas fails.
    let tmp = TempDir::new("k8s-broken");
    let broken = read("deploy/kubernetes/deployment.yaml")
        .replace("replicas: 2", "replicas: two")
        .replace("readOnlyRootFilesystem", "readOnlyRootFileSystem");
    let path = tmp.0.join("deployment.yaml");
    std::fs::write(&path, broken).unwrap();
    assert!(
        !validate(&path).status.success(),
        "a broken manifest passed"
    );
}

#[test]
fn kubernetes_manifests_run_the_compose_image_and_configuration() {
    let kustomization = k8s("kustomization.yaml");
    for r in string_list(&kustomization["resources"], "resources") {
        assert!(
            repo().join("deploy/kubernetes").join(&r).is_file(),
            "{r} missing"
        );
    }
    assert_eq!(
        string_list(
            &kustomization["configMapGenerator"][0]["files"],
            "configmap files"
        ),
        vec!["proxy.yaml"]
    );
    assert_eq!(
        string_list(&kustomization["secretGenerator"][0]["envs"], "secret envs"),
        vec!["secrets.env"]
    );
    assert!(
        !repo().join("deploy/kubernetes/secrets.env").exists()
            || read(".gitignore").contains("deploy/kubernetes/secrets.env"),
        "secrets.env must never be committed"
    );
    // The image: the compose file's locally built s3p, tagged with a version (overridable with `images:`).
    let compose_image = s(&service(&compose(), "s3p")["image"]).to_string();
    let (repository, _) = compose_image.split_once(':').unwrap();
    let image = &kustomization["images"][0];
    assert_eq!(s(&image["name"]), repository);
    assert_eq!(s(&image["newName"]), repository);
    let tag = s(&image["newTag"]);
    assert!(tag.split('.').count() == 3, "image tag `{tag}`: a version");

    let d = k8s("deployment.yaml");
    let spec = &d["spec"];
    assert!(
        spec["replicas"].as_u64().unwrap() >= 2,
        "at least 2 replicas"
    );
    assert_eq!(
        spec["strategy"]["rollingUpdate"]["maxUnavailable"].as_u64(),
        Some(0)
    );
    let pod = &spec["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(s(&c["image"]), repository);
    // Same command as compose, the same non-root user as the Dockerfile, locked down.
    assert_eq!(
        string_list(&c["args"], "args"),
        string_list(&service(&compose(), "s3p")["command"], "compose command")
    );
    let user = stages()
        .last()
        .unwrap()
        .1
        .iter()
        .filter(|(i, _)| i == "USER")
        .map(|(_, a)| a.split(':').next().unwrap().to_string())
        .next_back()
        .unwrap();
    assert_eq!(
        pod["securityContext"]["runAsUser"]
            .as_u64()
            .unwrap()
            .to_string(),
        user
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(
        s(&pod["securityContext"]["seccompProfile"]["type"]),
        "RuntimeDefault"
    );
    assert_eq!(
        c["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    assert_eq!(
        c["securityContext"]["allowPrivilegeEscalation"].as_bool(),
        Some(false)
    );
    assert_eq!(
        string_list(&c["securityContext"]["capabilities"]["drop"], "drop"),
        vec!["ALL"]
    );
    assert!(
        c["resources"]["requests"]["cpu"].is_string()
            && c["resources"]["limits"]["memory"].is_string()
    );
    assert!(
        pod["affinity"]["podAntiAffinity"].is_mapping(),
        "replicas spread over nodes"
    );
    // The configuration: proxy.yaml from the ConfigMap, its secrets from the Secret.
    assert_eq!(s(&c["envFrom"][0]["secretRef"]["name"]), "s3p-secrets");
    let mount = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| s(&m["name"]) == "config")
        .unwrap();
    assert_eq!(s(&mount["mountPath"]), "/etc/s3p");
    let secrets = env_file("deploy/kubernetes/secrets.env.example");
    let (config, asked) = proxy_config_with("deploy/kubernetes/proxy.yaml", &secrets);
    assert_eq!(
        asked,
        secrets.keys().cloned().collect::<BTreeSet<_>>(),
        "secrets.env.example lists exactly the variables proxy.yaml asks for"
    );
    // Probes on the admin listener, the container ports on proxy.yaml's listeners.
    let ports: BTreeMap<String, u16> = c["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| {
            (
                s(&p["name"]).to_string(),
                p["containerPort"].as_u64().unwrap() as u16,
            )
        })
        .collect();
    assert_eq!(ports["s3"], config.listen.port());
    assert_eq!(ports["admin"], config.admin_listen.unwrap().port());
    assert_eq!(s(&c["readinessProbe"]["httpGet"]["path"]), "/ready");
    assert_eq!(s(&c["readinessProbe"]["httpGet"]["port"]), "admin");
    assert_eq!(s(&c["livenessProbe"]["httpGet"]["path"]), "/health");
    let annotations = &spec["template"]["metadata"]["annotations"];
    assert_eq!(
        s(&annotations["prometheus.io/port"]),
        ports["admin"].to_string()
    );
    assert_eq!(s(&annotations["prometheus.io/path"]), "/metrics");
    // Draining: the readiness probe notices within the drain delay, and the kubelet's hard kill comes
    // after the delay and the grace period.
    let probe = &c["readinessProbe"];
    let noticed =
        probe["periodSeconds"].as_u64().unwrap() * probe["failureThreshold"].as_u64().unwrap();
    assert!(
        noticed < config.limits.drain_delay_s,
        "probe {noticed} s vs drain delay"
    );
    let kill = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        kill > config.limits.drain_delay_s + config.limits.grace_period_s,
        "terminationGracePeriodSeconds {kill}"
    );
    // The same data sources, keys and limits (but the drain) as the compose configuration.
    let (compose_config, _) = proxy_config();
    assert_eq!(
        config.data_sources.keys().collect::<Vec<_>>(),
        compose_config.data_sources.keys().collect::<Vec<_>>()
    );
    assert_eq!(config.api_keys.len(), compose_config.api_keys.len());
    let mut limits = config.limits.clone();
    limits.drain_delay_s = compose_config.limits.drain_delay_s;
    limits.grace_period_s = compose_config.limits.grace_period_s;
    assert_eq!(limits, compose_config.limits);

    // Service, disruption budget, autoscaler.
    let svc = k8s("service.yaml");
    assert_eq!(s(&svc["spec"]["ports"][0]["targetPort"]), "s3");
    let pdb = k8s("poddisruptionbudget.yaml");
    assert!(pdb["spec"]["minAvailable"].as_u64().unwrap() < spec["replicas"].as_u64().unwrap());
    let hpa = k8s("horizontalpodautoscaler.yaml");
    assert_eq!(
        s(&hpa["spec"]["scaleTargetRef"]["name"]),
        s(&d["metadata"]["name"])
    );
    assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 2);
    let np = k8s("networkpolicy.yaml");
    assert!(np["spec"]["ingress"].as_sequence().unwrap().len() >= 2);
}

/// README's advice works as written outside docker-compose: `s3p check --offline` on the repository's own
/// proxy.yaml, with none of its variables set and the `minio` host unresolvable, passes and names each
/// unset variable; the plain check names the same problems as errors.
#[test]
fn check_offline_validates_the_repository_config_outside_compose() {
    let vars: BTreeSet<String> = {
        let text = read("proxy.yaml");
        let mut names = BTreeSet::new();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("${") {
            let after = &rest[start + 2..];
            let end = after.find('}').unwrap();
            // The file's header comment shows the syntax as `${NAME}`.
            if after[..end] != *"NAME" {
                names.insert(after[..end].to_string());
            }
            rest = &after[end + 1..];
        }
        names
    };
    assert!(vars.contains("S3P_TOKEN_SECRET"), "{vars:?}");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_s3p"))
            .args(args)
            .arg("--config")
            .arg(repo().join("proxy.yaml"))
            .env_clear()
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = run(&["check", "--offline"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("OK offline"), "{stdout}");
    for var in &vars {
        assert!(
            stderr.contains(&format!("warning: environment variable {var} is not set")),
            "{var} not named: {stderr}"
        );
    }
    let (code, _, stderr) = run(&["check"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("S3P_TOKEN_SECRET is not set"), "{stderr}");
    // A real problem is still one, offline.
    let dir = TempDir::new("check-offline-bad");
    let bad = read("proxy.yaml").replace("bucket: immuta", "bucket: Not_A_Bucket");
    let path = dir.0.join("proxy.yaml");
    std::fs::write(&path, bad).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_s3p"))
        .args(["check", "--offline", "--config"])
        .arg(&path)
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
