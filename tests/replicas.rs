//! Several s3p replicas behind a real load balancer (HAProxy from Debian), on loopback: one token secret,
//! health checks on `/ready`, `X-Forwarded-For` from a trusted balancer. Bounded in time and count.
//!
//! HAProxy settings relied on: `option httpchk GET /ready` every 200 ms, `fall 2 rise 1`, so a replica
//! that turns unready leaves within ~400 ms (below s3p's 1 s drain delay here); `retries 3` with
//! `option redispatch` and `retry-on all-retryable-errors` (connection failures, empty answers and
//! 503s are retried on another replica: every request here is an idempotent GET); `option forwardfor`.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const REPLICAS: usize = 3;
/// Where the simulated clients connect from (HAProxy itself connects from 127.0.0.1, the trusted peer).
const CLIENT_ADDR: &str = "127.0.0.5";

struct Cluster {
    dir: PathBuf,
    yaml: String,
    ports: Vec<u16>,
    admins: Vec<u16>,
    replicas: Vec<Option<S3p>>,
    front: u16,
    haproxy: Option<Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(h) = self.haproxy.as_mut() {
            let _ = h.kill();
            let _ = h.wait();
        }
    }
}

fn haproxy_binary() -> String {
    std::env::var("S3P_HAPROXY").unwrap_or_else(|_| "haproxy".into())
}

/// Runs HAProxy in the foreground with `cfg`, logging beside it.
fn start_haproxy(dir: &std::path::Path, cfg: &str) -> Child {
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let log = std::fs::File::create(dir.join("haproxy.log")).unwrap();
    Command::new(haproxy_binary())
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("HAProxy is required (Debian package haproxy; .ci/run installs it)")
}

impl Cluster {
    fn start(name: &str) -> Cluster {
        Cluster::start_with(name, |yaml| yaml)
    }

    /// The cluster with its configuration changed by `edit` (the same for every replica).
    fn start_with(name: &str, edit: impl Fn(String) -> String) -> Cluster {
        let f = fixture();
        let dir = f.dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let ports: Vec<u16> = (0..REPLICAS).map(|_| free_port()).collect();
        let admins: Vec<u16> = (0..REPLICAS).map(|_| free_port()).collect();
        let yaml = standard_config(&f.garage).replace(
            "bucket: immuta\n",
            "bucket: immuta\nadmin_listen: 127.0.0.1:{ADMIN}\ntrusted_proxies: [127.0.0.1/32]\n",
        ) + "limits:\n  drain_delay_s: 1\n  grace_period_s: 5\n";
        let yaml = edit(yaml);
        let mut cluster = Cluster {
            dir,
            yaml,
            ports,
            admins,
            replicas: (0..REPLICAS).map(|_| None).collect(),
            front: free_port(),
            haproxy: None,
        };
        for i in 0..REPLICAS {
            cluster.start_replica(i);
        }
        let mut cfg = format!(
            "global\n  maxconn 2000\n\
             defaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n  \
             timeout check 1s\n  retries 3\n  option redispatch\n  retry-on all-retryable-errors\n  \
             option forwardfor\n\
             frontend s3\n  bind 127.0.0.1:{}\n  default_backend s3p\n\
             backend s3p\n  balance roundrobin\n  option httpchk GET /ready\n  \
             http-check expect status 200\n  default-server inter 200ms fall 2 rise 1\n",
            cluster.front
        );
        for i in 0..REPLICAS {
            cfg.push_str(&format!(
                "  server r{i} 127.0.0.1:{} check port {}\n",
                cluster.ports[i], cluster.admins[i]
            ));
        }
        cluster.haproxy = Some(start_haproxy(&cluster.dir, &cfg));
        // Until HAProxy listens and every replica is up in it.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if get(cluster.front_addr(), "/s3p/immuta/sales/plain.txt").is_ok_and(|(s, _)| s == 200)
            {
                break;
            }
            assert!(Instant::now() < deadline, "HAProxy did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(500));
        cluster
    }

    fn front_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.front))
    }

    fn replica_yaml(&self, i: usize) -> String {
        self.yaml.replace("{ADMIN}", &self.admins[i].to_string())
    }

    fn start_replica(&mut self, i: usize) {
        let yaml = self.replica_yaml(i);
        let s = S3p::start_at(&self.dir.join(format!("r{i}")), &yaml, &[], self.ports[i]);
        self.replicas[i] = Some(s);
    }

    fn replica(&self, i: usize) -> &S3p {
        self.replicas[i].as_ref().unwrap()
    }
}

/// One GET through a new connection from the client address, with Alice's legacy header; never panics.
fn get(to: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut c = try_connect_from(CLIENT_ADDR, to).map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        legacy(ALICE)
    )
    .map_err(|e| e.to_string())?;
    let mut all = Vec::new();
    c.read_to_end(&mut all).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&all).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line: {text:?}"))?;
    Ok((status, text))
}

/// Body of an HTTP/1.1 answer (listings are small and sent with Content-Length).
fn body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}

fn keys_and_token(xml: &str) -> (Vec<String>, Option<String>) {
    let keys = xml
        .split("<Key>")
        .skip(1)
        .chain(xml.split("<Prefix>").skip(2))
        .map(|p| p.split('<').next().unwrap().to_string())
        .collect();
    let token = xml
        .split("<NextContinuationToken>")
        .nth(1)
        .map(|t| t.split('<').next().unwrap().to_string());
    (keys, token)
}

/// Walks `prefix` page by page (v2, 2 keys a page) through `to`.
fn walk(to: SocketAddr, prefix: &str) -> (Vec<String>, usize) {
    let mut token: Option<String> = None;
    let mut keys = Vec::new();
    let mut pages = 0;
    loop {
        let mut path = format!("/s3p/immuta?list-type=2&max-keys=2&prefix={prefix}");
        if let Some(t) = &token {
            path.push_str(&format!("&continuation-token={t}"));
        }
        let (status, answer) = get(to, &path).unwrap();
        assert_eq!(status, 200, "{answer}");
        let (page, next) = keys_and_token(body(&answer));
        keys.extend(page);
        pages += 1;
        match next {
            Some(t) => token = Some(t),
            None => return (keys, pages),
        }
        assert!(pages < 500);
    }
}

/// Clients that keep sending GETs and listings through the balancer until stopped; counts failures.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(to: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let threads = (0..clients)
            .map(|i| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                std::thread::spawn(move || {
                    let mut errors = Vec::new();
                    let mut n = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let path = if (i + n).is_multiple_of(3) {
                            "/s3p/immuta?list-type=2&prefix=data%2F".to_string()
                        } else {
                            "/s3p/immuta/sales/plain.txt".to_string()
                        };
                        match get(to, &path) {
                            Ok((200, _)) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok((status, text)) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                errors.push(format!("{status}: {}", &text[..text.len().min(300)]));
                            }
                            Err(e) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                errors.push(e);
                            }
                        }
                        n += 1;
                    }
                    errors
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            threads,
        }
    }

    fn stop(self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let errors = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            errors,
        )
    }
}

#[test]
fn a_listing_walked_across_replicas_equals_the_single_replica_walk() {
    let cluster = Cluster::start("replicas-walk");
    let (through_balancer, pages) = walk(cluster.front_addr(), "");
    let direct = cluster.replica(0).addr();
    let (single, _) = walk(direct, "");
    assert_eq!(through_balancer, single);
    assert!(pages >= 6, "{pages} pages");
    // Round robin: the pages were served by every replica, each resuming the others' tokens.
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..REPLICAS {
        let lists = cluster
            .replica(i)
            .log()
            .lines()
            .filter(|l| l.contains("\"operation\":\"ListObjectsV2\""))
            .count();
        assert!(lists >= 1, "replica {i} served no page");
    }
    // Behind the trusted balancer, the audit log names the real client.
    let line = cluster
        .replica(1)
        .log()
        .lines()
        .find(|l| l.contains("\"operation\":\"ListObjectsV2\""))
        .unwrap()
        .to_string();
    assert!(
        line.contains(&format!("\"client\":\"{CLIENT_ADDR}\"")),
        "{line}"
    );
}

#[test]
fn a_rolling_restart_under_load_fails_no_request() {
    let mut cluster = Cluster::start("replicas-rolling");
    let load = Load::start(cluster.front_addr(), 8);
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..REPLICAS {
        let replica = cluster.replicas[i].as_mut().unwrap();
        replica.signal("TERM");
        let status = replica
            .wait_exit(Duration::from_secs(15))
            .unwrap_or_else(|| panic!("replica {i} did not stop"));
        assert!(status.success(), "replica {i}: {status}");
        cluster.start_replica(i);
        // Until HAProxy has seen it ready again (rise 1, checks every 200 ms).
        std::thread::sleep(Duration::from_millis(600));
    }
    std::thread::sleep(Duration::from_millis(300));
    let (ok, failed, errors) = load.stop();
    eprintln!("rolling restart: {ok} requests answered 200, {failed} failed");
    assert!(ok > 100, "{ok} requests in the whole run");
    assert_eq!(failed, 0, "failed requests: {errors:?}");
}

#[test]
fn a_config_change_rolled_out_with_sighup_is_in_force_everywhere_within_a_second() {
    let cluster = Cluster::start("replicas-sighup");
    // Bob cannot read data-private... until the new configuration grants it.
    let bob_private = |addr: SocketAddr| {
        raw(
            addr,
            "GET",
            "/s3p/immuta/data-private/salaries.csv",
            &[("Authorization", &legacy(BOB))],
        )
        .status
    };
    for i in 0..REPLICAS {
        assert_eq!(bob_private(cluster.replica(i).addr()), 403);
    }
    let load = Load::start(cluster.front_addr(), 8);
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    for i in 0..REPLICAS {
        let r = cluster.replica(i);
        let new = std::fs::read_to_string(&r.config_path).unwrap().replace(
            "name: Bob\n    data_sources: [sales, data]",
            "name: Bob\n    data_sources: [sales, data, data-private]",
        );
        std::fs::write(&r.config_path, new).unwrap();
        r.signal("HUP");
    }
    let mut in_force = vec![false; REPLICAS];
    while started.elapsed() < Duration::from_secs(1) && in_force.contains(&false) {
        for (i, done) in in_force.iter_mut().enumerate() {
            *done = *done || bob_private(cluster.replica(i).addr()) == 200;
        }
    }
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let (ok, failed, errors) = load.stop();
    assert_eq!(in_force, vec![true; REPLICAS], "after {took:?}");
    assert_eq!(failed, 0, "failed requests: {errors:?}");
    assert!(ok > 10);
}

#[test]
fn an_unsubscription_at_the_governance_service_is_in_force_on_every_replica_within_the_ttl() {
    let immuta = common::immuta::Immuta::start();
    immuta.add_key("svc-replicas-key", "Replicated");
    immuta.subscribe("svc-replicas-key", "sales", Some("READ"), None);
    let section = format!(
        "entitlements:\n  source: http\n  http: {{ endpoint: \"{}\", timeout_ms: 1000 }}\n  cache: {{ allow_ttl_s: 2, deny_ttl_s: 1 }}\ndata_sources:\n",
        immuta.endpoint()
    );
    let cluster = Cluster::start_with("replicas-entitlements", |yaml| {
        yaml.replace("data_sources:\n", &section)
    });
    let auth = legacy("svc-replicas-key");
    let read = |addr: SocketAddr| {
        raw(
            addr,
            "GET",
            "/s3p/immuta/sales/plain.txt",
            &[("Authorization", &auth)],
        )
        .status
    };
    // Through the balancer and on each replica: the service's key reads what it is subscribed to.
    assert_eq!(read(cluster.front_addr()), 200);
    for i in 0..REPLICAS {
        assert_eq!(read(cluster.replica(i).addr()), 200, "replica {i}");
    }
    immuta.unsubscribe("svc-replicas-key", "sales");
    let unsubscribed = Instant::now();
    let mut refused = [None; REPLICAS];
    while unsubscribed.elapsed() < Duration::from_secs(6) && refused.contains(&None) {
        for (i, at) in refused.iter_mut().enumerate() {
            if at.is_none() && read(cluster.replica(i).addr()) == 403 {
                *at = Some(unsubscribed.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // No coordination between replicas: each refuses once its own cached allow expires (2 s TTL).
    for (i, at) in refused.iter().enumerate() {
        let at = at.unwrap_or_else(|| panic!("replica {i} still serves the unsubscribed key"));
        assert!(
            at <= Duration::from_millis(2800),
            "replica {i} refused after {at:?}"
        );
    }
    assert_eq!(read(cluster.front_addr()), 403);
}

#[test]
fn a_killed_replica_fails_only_its_requests_in_flight() {
    let mut cluster = Cluster::start("replicas-kill");
    let load = Load::start(cluster.front_addr(), 8);
    std::thread::sleep(Duration::from_millis(500));
    let before = load.ok.load(Ordering::Relaxed);
    cluster.replicas[2].as_mut().unwrap().kill();
    // HAProxy notices within two checks; meanwhile it retries connection failures elsewhere.
    std::thread::sleep(Duration::from_millis(1500));
    let failed_at_kill = load.failed.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(1000));
    let (ok, failed, errors) = load.stop();
    eprintln!(
        "kill -9 of one replica: {failed} failed of {} requests",
        ok + failed
    );
    // At most the requests that were on that replica at the kill (one per client at most)...
    assert!(failed <= 8, "{failed} failed: {errors:?}");
    // ...and none after the balancer took it out.
    assert_eq!(
        failed, failed_at_kill,
        "failures after the kill: {errors:?}"
    );
    assert!(ok > before + 50, "the other replicas went on serving");
}

#[test]
fn the_proxy_protocol_names_the_client_and_only_trusted_peers_may_send_it() {
    let f = fixture();
    let dir = f.dir.join("replicas-proxy-protocol");
    std::fs::create_dir_all(&dir).unwrap();
    let admin = free_port();
    let yaml = standard_config(&f.garage).replace(
        "bucket: immuta\n",
        &format!(
            "bucket: immuta\nadmin_listen: 127.0.0.1:{admin}\ntrusted_proxies: [127.0.0.1/32]\nproxy_protocol: required\n"
        ),
    );
    let s3p = S3p::start(&dir.join("s3p"), &yaml);
    // HAProxy passing TCP through with a PROXY v2 header (no X-Forwarded-For), health checks on /ready.
    let front = free_port();
    let cfg = format!(
        "defaults\n  mode http\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
         frontend s3\n  bind 127.0.0.1:{front}\n  default_backend s3p\n\
         backend s3p\n  option httpchk GET /ready\n  \
         server r0 127.0.0.1:{} send-proxy-v2 check port {admin} inter 200ms\n",
        s3p.port
    );
    let mut haproxy = start_haproxy(&dir, &cfg);
    let front_addr = SocketAddr::from(([127, 0, 0, 1], front));
    let deadline = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        match get(front_addr, "/s3p/immuta/sales/plain.txt") {
            Ok((200, text)) => break text,
            _ => {
                assert!(Instant::now() < deadline, "nothing through HAProxy");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    // The client as the balancer saw it, port included (as for a direct connection).
    let client = audited_client(&s3p, &answer);
    assert!(client.starts_with(&format!("{CLIENT_ADDR}:")), "{client}");

    // A version 1 header from a trusted peer (this test, on 127.0.0.1).
    let send = |source: &str, preamble: &str| -> String {
        let mut c = connect_from(source, s3p.addr());
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = write!(
            c,
            "{preamble}GET /s3p/immuta/sales/plain.txt HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
            legacy(ALICE)
        );
        let mut all = Vec::new();
        let _ = c.read_to_end(&mut all);
        String::from_utf8_lossy(&all).into_owned()
    };
    let text = send(
        "127.0.0.1",
        "PROXY TCP4 198.51.100.7 127.0.0.1 5555 8080\r\n",
    );
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(audited_client(&s3p, &text), "198.51.100.7:5555");
    // The same header from a peer that is not a trusted proxy, or no header at all: closed unanswered.
    let text = send(
        "127.0.0.2",
        "PROXY TCP4 198.51.100.7 127.0.0.1 5555 8080\r\n",
    );
    assert!(text.is_empty(), "{text}");
    let text = send("127.0.0.1", "");
    assert!(text.is_empty(), "{text}");
    let _ = haproxy.kill();
    let _ = haproxy.wait();
}

#[test]
fn the_proxy_protocol_on_the_tls_listener_names_the_client() {
    let f = fixture();
    let dir = f.dir.join("replicas-proxy-protocol-tls");
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = make_ca_and_cert(&dir.join("certs"), "tls-proxy");
    let tls_port = free_port();
    let yaml = standard_config(&f.garage).replace(
        "bucket: immuta\n",
        &format!(
            "bucket: immuta\ntrusted_proxies: [127.0.0.1/32]\nproxy_protocol: required\ntls:\n  listen: 127.0.0.1:{tls_port}\n  cert: {}\n  key: {}\n",
            cert.display(),
            key.display()
        ),
    );
    let s3p = S3p::start(&dir.join("s3p"), &yaml);
    // HAProxy passing TLS through (TCP mode) with a PROXY v2 header before the handshake.
    let front = free_port();
    let cfg = format!(
        "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
         frontend s3\n  bind 127.0.0.1:{front}\n  default_backend s3p\n\
         backend s3p\n  server r0 127.0.0.1:{tls_port} send-proxy-v2\n"
    );
    let mut haproxy = start_haproxy(&dir, &cfg);
    let curl = |port: u16| {
        Command::new("curl")
            .args([
                "-sS",
                "-i",
                "--max-time",
                "10",
                "--interface",
                CLIENT_ADDR,
                "--cacert",
            ])
            .arg(&ca)
            .args(["-H", &format!("Authorization: {}", legacy(ALICE))])
            .arg(format!(
                "https://localhost:{port}/s3p/immuta/sales/plain.txt"
            ))
            .output()
            .expect("curl is required for the TLS tests")
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let out = curl(front);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.starts_with("HTTP/1.1 200") {
            break text;
        }
        assert!(Instant::now() < deadline, "nothing through HAProxy: {text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(text.ends_with("body of plain.txt"), "{text}");
    // The client as HAProxy saw it (curl's source address), not HAProxy itself.
    let client = audited_client(&s3p, &text);
    assert!(client.starts_with(&format!("{CLIENT_ADDR}:")), "{client}");
    // Straight to the TLS listener, without a PROXY header: closed before the handshake.
    let out = curl(tls_port);
    assert!(
        !out.status.success(),
        "a TLS connection without a PROXY header was served"
    );
    let _ = haproxy.kill();
    let _ = haproxy.wait();
}

/// The `client` of the audit line of the request whose raw answer (head and body) is `answer`.
fn audited_client(s3p: &S3p, answer: &str) -> String {
    let id = answer
        .lines()
        .find_map(|l| l.strip_prefix("x-amz-request-id: "))
        .expect("the answer carries its request id")
        .trim();
    audit_line(s3p, id)["client"]
        .as_str()
        .expect("the audit line names its client")
        .to_string()
}
