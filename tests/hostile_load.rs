//! Hostile load, end to end against a real Garage and a real s3p: no single client may multiply its load
//! on the backends, lock other users out, or hold every slot. Each test is bounded in time and count.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

const AMP_BUCKET: &str = "amp-real-bucket";
const BIG_KEY: &str = "hostile/big-5MiB.bin";
const BIG_LEN: usize = 5 << 20;
/// Larger than what the kernel's socket buffers absorb on loopback (4 MiB of send buffer), so that a
/// slow reader really holds s3p's writes.
const HUGE_KEY: &str = "hostile/huge-40MiB.bin";
const HUGE_LEN: usize = 40 << 20;

/// The fixture plus a bucket `amp-real-bucket` holding 2,000 keys `amp/NNNN/x` and 3,000 keys
/// `many/kNNNNN`, and one 5 MiB object for stalled downloads.
fn setup() -> &'static Fixture {
    static DONE: OnceLock<()> = OnceLock::new();
    let f = fixture();
    DONE.get_or_init(|| {
        f.garage.cli(&["bucket", "create", AMP_BUCKET]);
        f.garage.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            AMP_BUCKET,
            "--key",
            GARAGE_KEY_ID,
        ]);
        let mut keys: Vec<String> = (0..2000).map(|i| format!("amp/{i:04}/x")).collect();
        keys.extend((0..3000).map(|i| format!("many/k{i:05}")));
        keys.push("more".into());
        let client = f.garage.client();
        runtime().block_on(async {
            for chunk in keys.chunks(64) {
                let puts = chunk.iter().map(|k| {
                    client
                        .put_object()
                        .bucket(AMP_BUCKET)
                        .key(k)
                        .body(ByteStream::from_static(b"x"))
                        .send()
                });
                for r in futures_join(puts).await {
                    r.expect("seeding the amplification bucket");
                }
            }
            for (key, len) in [(BIG_KEY, BIG_LEN), (HUGE_KEY, HUGE_LEN)] {
                let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                client
                    .put_object()
                    .bucket(ALPHA_BUCKET)
                    .key(key)
                    .body(ByteStream::from(body))
                    .send()
                    .await
                    .unwrap();
            }
        });
    });
    f
}

/// Awaits every future, concurrently (a minimal join_all, to need no extra crate).
async fn futures_join<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = futs.map(Box::pin).collect();
    let mut out = Vec::with_capacity(handles.len());
    // The SDK's futures make progress only when polled: poll them together through a JoinSet-free select.
    let mut pending: Vec<_> = handles.into_iter().map(Some).collect();
    let mut results: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (i, slot) in pending.iter_mut().enumerate() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        results[i] = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.extend(results.into_iter().map(|r| r.unwrap()));
    out
}

/// A TCP relay between s3p and Garage that counts the backend listing requests passing through it: an
/// independent count of what s3p asks the backend, whatever s3p reports about itself. (It forwards
/// bytes; the S3 server behind it is the real Garage.)
struct CountingRelay {
    port: u16,
    listings: Arc<AtomicUsize>,
    /// Connections s3p opened to the backend through the relay.
    connections: Arc<AtomicUsize>,
}

impl CountingRelay {
    fn start(target: SocketAddr) -> CountingRelay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let listings = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let count = listings.clone();
        let accepted = connections.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                accepted.fetch_add(1, Ordering::Relaxed);
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let count = count.clone();
                // Requests: counted by their `list-type=2` query (s3p lists with ListObjectsV2).
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    let mut tail: Vec<u8> = Vec::new();
                    while let Ok(n) = c_read.read(&mut buf) {
                        if n == 0 || s_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        tail.extend_from_slice(&buf[..n]);
                        let needle = b"list-type=2";
                        count.fetch_add(
                            tail.windows(needle.len()).filter(|w| w == needle).count(),
                            Ordering::Relaxed,
                        );
                        let keep = tail.len().min(needle.len() - 1);
                        tail.drain(..tail.len() - keep);
                    }
                    let _ = s_write.shutdown(std::net::Shutdown::Write);
                });
                let (mut s_read, mut c_write) = (server, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_read, &mut c_write);
                    let _ = c_write.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        CountingRelay {
            port,
            listings,
            connections,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    fn listings(&self) -> usize {
        self.listings.load(Ordering::Relaxed)
    }
}

fn dir(name: &str) -> PathBuf {
    setup().dir.join(name)
}

/// The standard configuration plus the `raw` data source, an admin listener and extra settings. `raw`
/// is reached through a [`CountingRelay`] when one is given.
fn config(f: &Fixture, admin: u16, top: &str, limits: &str) -> String {
    config_via(f, admin, top, limits, None)
}

fn config_via(f: &Fixture, admin: u16, top: &str, limits: &str, relay: Option<u16>) -> String {
    let raw_backend = match relay {
        Some(port) => format!(
            "  relay:\n    endpoint: http://127.0.0.1:{port}\n    region: garage\n    access_key_id: {GARAGE_KEY_ID}\n    secret_access_key: {GARAGE_SECRET}\n"
        ),
        None => String::new(),
    };
    let mut yaml = standard_config(&f.garage)
        .replace(
            "bucket: immuta\n",
            &format!("bucket: immuta\nadmin_listen: 127.0.0.1:{admin}\n{top}"),
        )
        .replace("backends:\n", &format!("backends:\n{raw_backend}"))
        .replace(
            "data_sources:\n",
            &format!(
                "data_sources:\n  raw: {{ backend: {}, bucket: {AMP_BUCKET} }}\n",
                if relay.is_some() { "relay" } else { "garage" }
            ),
        );
    if !limits.is_empty() {
        yaml.push_str(&format!("limits:\n{limits}"));
    }
    yaml
}

fn metric(admin: u16, name: &str) -> f64 {
    let r = raw(
        SocketAddr::from(([127, 0, 0, 1], admin)),
        "GET",
        "/metrics",
        &[],
    );
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// `<Key>` and `<Prefix>` entries of a listing page (in order), and its NextMarker / token.
fn entries(xml: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in xml.split("<Contents>").skip(1) {
        out.push(between(part, "<Key>", "</Key>").to_string());
    }
    for part in xml.split("<CommonPrefixes>").skip(1) {
        out.push(between(part, "<Prefix>", "</Prefix>").to_string());
    }
    out
}

fn between<'a>(s: &'a str, a: &str, b: &str) -> &'a str {
    let start = s.find(a).map(|i| i + a.len()).unwrap_or(0);
    let end = s[start..].find(b).map(|i| start + i).unwrap_or(start);
    &s[start..end]
}

fn encode(s: &str) -> String {
    percent_encode(s)
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn a_delimiter_s3p_must_roll_up_itself_costs_a_few_backend_calls_per_page() {
    let f = setup();
    let admin = free_port();
    let relay = CountingRelay::start(SocketAddr::from(([127, 0, 0, 1], f.garage.s3_port)));
    let s = S3p::start(
        &dir("s3p-amp"),
        &config_via(f, admin, "", "", Some(relay.port)),
    );
    let before = relay.listings();
    // The finding: `/x` straddles the data source root `raw/`, each key is its own common prefix.
    let started = Instant::now();
    let r = raw(
        s.addr(),
        "GET",
        "/s3p/immuta?prefix=raw&delimiter=%2Fx&max-keys=1000",
        &[("Authorization", &legacy(ALICE))],
    );
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    let calls = relay.listings() - before;
    assert_eq!(
        metric(admin, "s3p_list_backend_calls_total") as usize,
        calls,
        "s3p's own count agrees"
    );
    let page = entries(&r.text());
    assert!(!page.is_empty() && page.len() <= 1000, "{}", page.len());
    assert_eq!(page[0], "raw/amp/0000/x");
    // Before: about 1,000 backend calls of 1,000 keys each for this one page.
    assert!(calls <= 3, "{calls} backend calls for one page ({took:?})");
    eprintln!(
        "the amplification query: {calls} backend calls for one page of {} entries, {took:?}",
        page.len()
    );

    // The whole listing, page by page (v1 markers), is still every prefix, each once.
    let mut marker = String::new();
    let mut all = Vec::new();
    for _ in 0..50 {
        let r = raw(
            s.addr(),
            "GET",
            &format!(
                "/s3p/immuta?prefix=raw&delimiter=%2Fx&max-keys=1000&marker={}",
                encode(&marker)
            ),
            &[("Authorization", &legacy(ALICE))],
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let text = r.text();
        all.extend(entries(&text));
        if !text.contains("<IsTruncated>true</IsTruncated>") {
            break;
        }
        marker = between(&text, "<NextMarker>", "</NextMarker>").to_string();
        assert!(!marker.is_empty(), "a truncated page without NextMarker");
    }
    let amp: Vec<&String> = all.iter().filter(|e| e.starts_with("raw/amp/")).collect();
    assert_eq!(amp.len(), 2000);
    let mut dedup = all.clone();
    dedup.dedup();
    assert_eq!(dedup.len(), all.len(), "an entry listed twice");
}

#[test]
fn a_marker_on_a_large_common_prefix_skips_it_in_one_backend_call() {
    let f = setup();
    let admin = free_port();
    let relay = CountingRelay::start(SocketAddr::from(([127, 0, 0, 1], f.garage.s3_port)));
    let s = S3p::start(
        &dir("s3p-amp-marker"),
        &config_via(f, admin, "", "", Some(relay.port)),
    );
    let r = raw(
        s.addr(),
        "GET",
        "/s3p/immuta?delimiter=%2Fk&marker=raw%2Fmany%2Fk&max-keys=1",
        &[("Authorization", &legacy(ALICE))],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(entries(&r.text()), vec!["raw/more".to_string()]);
    // One call to `raw`'s backend skips `many/k` and finds `more` (one more, to `sales` on the other
    // backend, looks past the page for IsTruncated). Before: 4 pages through the 3,000 keys under
    // `many/k`, only to skip them.
    assert_eq!(relay.listings(), 1, "backend calls for the skip");
    assert!(metric(admin, "s3p_list_backend_calls_total") <= 2.0);
}

fn get_from(source: &str, to: SocketAddr, path: &str, auth: &str) -> (u16, String) {
    let mut c = connect_from(source, to);
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    let _ = c.read_to_end(&mut all);
    let text = String::from_utf8_lossy(&all).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Starts a download of the big object and never reads it; returns the connection and the status line.
fn stalled_download(source: &str, to: SocketAddr, auth: &str) -> (TcpStream, u16) {
    download_of(BIG_KEY, source, to, auth)
}

fn download_of(key: &str, source: &str, to: SocketAddr, auth: &str) -> (TcpStream, u16) {
    let mut c = connect_from(source, to);
    write!(
        c,
        "GET /s3p/immuta/sales/{key} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    c.read_exact(&mut head).unwrap();
    let status = String::from_utf8_lossy(&head[9..12]).parse().unwrap();
    (c, status)
}

#[test]
fn one_key_with_stalled_downloads_cannot_starve_another_key() {
    let f = setup();
    let admin = free_port();
    // By default 100 stalled downloads against 64 slots (one key or one address may hold 16);
    // `S3P_HOSTILE_STALLED=1000` runs the full scenario against the default 1,024 slots.
    let attempts: usize = std::env::var("S3P_HOSTILE_STALLED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let slots = if attempts > 100 { 1024 } else { 64 };
    let s = S3p::start(
        &dir("s3p-starve"),
        &config(
            f,
            admin,
            "",
            &format!("  max_concurrent_requests: {slots}\n"),
        ),
    );
    // Bob's ordinary latency first, from his own address.
    let started = Instant::now();
    let (status, _) = get_from(
        "127.0.0.20",
        s.addr(),
        "/s3p/immuta/sales/plain.txt",
        &legacy(BOB),
    );
    assert_eq!(status, 200);
    let idle_latency = started.elapsed();
    // Alice tries the stalled downloads from 5 addresses: her key gets a quarter of the slots.
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 0..attempts {
        let source = format!("127.0.0.{}", 2 + i % 5);
        let (c, status) = stalled_download(&source, s.addr(), &legacy(ALICE));
        match status {
            200 => held.push(c),
            503 => refused += 1,
            other => panic!("stalled download {i}: status {other}"),
        }
    }
    assert_eq!(held.len(), slots / 4, "alice's share of the slots");
    assert_eq!(refused, attempts - slots / 4);
    // Bob, from another address, is answered at once.
    let started = Instant::now();
    let (status, text) = get_from(
        "127.0.0.20",
        s.addr(),
        "/s3p/immuta/sales/plain.txt",
        &legacy(BOB),
    );
    let took = started.elapsed();
    assert_eq!(status, 200, "{text}");
    assert!(took < Duration::from_secs(2), "bob waited {took:?}");
    eprintln!(
        "{} of {attempts} stalled downloads held; another key's GET took {took:?} (before them: {idle_latency:?})",
        held.len()
    );
    assert!(
        metric(
            admin,
            "s3p_limit_hits_total{limit=\"max_concurrent_requests_per_key\"}"
        ) >= refused as f64
    );
    drop(held);
    wait_idle(admin);

    // One address with several keys is held to its share as well.
    let mut held = Vec::new();
    for i in 0..slots / 4 + 4 {
        let auth = legacy(if i % 2 == 0 { ALICE } else { BOB });
        let (c, status) = stalled_download("127.0.0.30", s.addr(), &auth);
        if status == 200 {
            held.push(c);
        }
    }
    assert_eq!(held.len(), slots / 4, "downloads held from one address");
    let (status, text) = get_from(
        "127.0.0.31",
        s.addr(),
        "/s3p/immuta/sales/plain.txt",
        &legacy(BOB),
    );
    assert_eq!(status, 200, "{text}");
}

/// Waits until s3p has no request in flight (dropped downloads end when s3p notices the closed socket).
fn wait_idle(admin: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(admin, "s3p_requests_in_flight") > 0.0 {
        assert!(Instant::now() < deadline, "requests still in flight");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_reader_below_the_minimum_rate_is_cut() {
    let f = setup();
    let admin = free_port();
    let s = S3p::start(
        &dir("s3p-min-rate"),
        &config(
            f,
            admin,
            "",
            "  client_timeout_ms: 3000\n  min_client_rate_bytes_per_s: 4000000\n",
        ),
    );
    // Reads 256 KiB at once, then pauses 150 ms (about 1.5 MB/s): each of s3p's writes completes within
    // the 3 s client timeout (the kernel wakes a writer once about half of its 4 MiB send buffer has
    // drained), so only the rate check (4 MB/s here) can end the response.
    // What counts is s3p's side: the kernel's socket buffers still hold megabytes for the client after
    // s3p has let go.
    let (mut c, status) = download_of(HUGE_KEY, "127.0.0.40", s.addr(), &legacy(ALICE));
    assert_eq!(status, 200);
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let rate_hits = |admin| {
        metric(
            admin,
            "s3p_limit_hits_total{limit=\"min_client_rate_bytes_per_s\"}",
        )
    };
    let cut = loop {
        let mut burst = 0;
        while burst < 256 * 1024 {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => burst += n,
            }
        }
        if rate_hits(admin) >= 1.0 {
            break true;
        }
        if started.elapsed() > Duration::from_secs(20) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        cut,
        "s3p kept serving a reader below the minimum rate for 20 s:\n{}",
        s.log()
    );
    wait_idle(admin);
    drop(c);
    // An ordinary reader is not affected.
    let (status, text) = get_from(
        "127.0.0.41",
        s.addr(),
        &format!("/s3p/immuta/sales/{BIG_KEY}"),
        &legacy(ALICE),
    );
    assert_eq!(status, 200);
    assert!(text.len() > BIG_LEN, "the download was cut: {}", text.len());
}

#[test]
fn failures_from_one_address_never_lock_out_verified_requests() {
    let f = setup();
    let admin = free_port();
    let s = S3p::start(
        &dir("s3p-throttle-nat"),
        &config(f, admin, "", "  auth_failures_per_minute: 5\n"),
    );
    let path = "/s3p/immuta/sales/plain.txt";
    // Anonymous requests and expired presigned URLs from one address (a NAT, a balancer).
    for _ in 0..10 {
        let r = raw(s.addr(), "GET", path, &[]);
        assert!(r.status == 403 || r.status == 503, "{}", r.text());
    }
    let r = raw(s.addr(), "GET", path, &[]);
    assert_eq!(
        r.status,
        503,
        "anonymous requests are throttled: {}",
        r.text()
    );
    assert!(r.text().contains("<Code>SlowDown</Code>"));
    let retry: u64 = r
        .header("retry-after")
        .expect("SlowDown says when to retry")
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // A valid legacy header and a valid SigV4 request from the same address still pass.
    let r = raw(s.addr(), "GET", path, &[("Authorization", &legacy(ALICE))]);
    assert_eq!(r.status, 200, "{}", r.text());
    let host = s.addr().to_string();
    let signed_get = |key: &str, secret: &str, at: std::time::SystemTime| {
        let signed = sigv4_headers("GET", &host, path, key, secret, at);
        let headers: Vec<(&str, &str)> = signed
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .chain([("Host", host.as_str())])
            .collect();
        raw(s.addr(), "GET", path, &headers)
    };
    let r = signed_get(BOB, BOB_SECRET, std::time::SystemTime::now());
    assert_eq!(r.status, 200, "{}", r.text());

    // Bad signatures of a known key count against that key from that address only.
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    for _ in 0..6 {
        signed_get(ALICE, "wrong-secret", old);
    }
    let r = signed_get(ALICE, "wrong-secret", old);
    assert_eq!(r.status, 503, "{}", r.text());
    let r = signed_get(ALICE, ALICE_SECRET, std::time::SystemTime::now());
    assert_eq!(r.status, 200, "alice's own valid signature: {}", r.text());
}

#[test]
fn behind_a_trusted_proxy_the_forwarded_client_is_throttled_and_audited() {
    let f = setup();
    let admin = free_port();
    let s = S3p::start(
        &dir("s3p-trusted-proxy"),
        &config(
            f,
            admin,
            "trusted_proxies: [127.0.0.1/32]\n",
            "  auth_failures_per_minute: 3\n",
        ),
    );
    let path = "/s3p/immuta/sales/plain.txt";
    let via = |xff: &str| raw(s.addr(), "GET", path, &[("X-Forwarded-For", xff)]);
    for _ in 0..4 {
        via("198.51.100.1");
    }
    let r = via("198.51.100.1");
    assert_eq!(r.status, 503, "{}", r.text());
    // Another client behind the same balancer is not affected.
    let r = via("198.51.100.2");
    assert_eq!(r.status, 403, "{}", r.text());
    // A client cannot escape by forging entries to the left of what the balancer appended.
    let r = via("203.0.113.77, 198.51.100.1");
    assert_eq!(r.status, 503, "{}", r.text());
    // The audit log names the forwarded client.
    let r = raw(
        s.addr(),
        "GET",
        path,
        &[
            ("X-Forwarded-For", "198.51.100.9"),
            ("Authorization", &legacy(ALICE)),
        ],
    );
    assert_eq!(r.status, 200);
    let line = audit_line(&s, r.header("x-amz-request-id").unwrap());
    assert_eq!(line["client"], "198.51.100.9", "{line}");

    // From a peer that is not trusted, the header means nothing.
    let s2 = S3p::start(
        &dir("s3p-untrusted-proxy"),
        &config(f, free_port(), "", "  auth_failures_per_minute: 3\n"),
    );
    for i in 0..4 {
        raw(
            s2.addr(),
            "GET",
            path,
            &[("X-Forwarded-For", &format!("198.51.100.{i}"))],
        );
    }
    let r = raw(
        s2.addr(),
        "GET",
        path,
        &[("X-Forwarded-For", "198.51.100.50")],
    );
    assert_eq!(
        r.status,
        503,
        "the forged header changed nothing: {}",
        r.text()
    );
}

#[test]
fn request_framing_s3p_cannot_forward_safely_is_refused_with_s3_xml() {
    let f = setup();
    let s = S3p::start(&dir("s3p-framing"), &config(f, free_port(), "", ""));
    let path = "/s3p/immuta/sales/plain.txt";
    let auth = legacy(ALICE);
    // `Connection: host` would make pingora strip Host as a hop-by-hop header.
    for connection in ["host", "authorization", "a, b, c, d, e, f, g, h, i, j"] {
        let r = raw(
            s.addr(),
            "GET",
            path,
            &[("Authorization", &auth), ("Connection", connection)],
        );
        assert_eq!(r.status, 400, "Connection: {connection}: {}", r.text());
        assert!(
            r.text().contains("<Code>InvalidArgument</Code>"),
            "{}",
            r.text()
        );
        let line = audit_line(&s, r.header("x-amz-request-id").unwrap());
        assert_ne!(line["decision"], "allowed", "{line}");
    }
    // A GET with a body is refused, never forwarded.
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: 5\r\n\r\nhello"
    )
    .unwrap();
    let mut all = Vec::new();
    let _ = c.read_to_end(&mut all);
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("<Code>InvalidRequest</Code>"), "{text}");
    assert_no_leak("GET with a body", &text);
}

/// A SigV2 presigned URL (query authentication) for `resource`, as botocore makes them.
fn sigv2_presigned(path: &str, resource: &str, extra_query: &str) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let expires = (std::time::SystemTime::now() + Duration::from_secs(600))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let string_to_sign = format!("GET\n\n\n{expires}\n{resource}");
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(ALICE_SECRET.as_bytes()).unwrap();
    mac.update(string_to_sign.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!(
        "{path}?{extra_query}AWSAccessKeyId={ALICE}&Expires={expires}&Signature={}",
        percent_encode(&signature)
    )
}

#[test]
fn sigv2_presigned_urls_cannot_list() {
    let f = setup();
    let s = S3p::start(&dir("s3p-v2-list"), &config(f, free_port(), "", ""));
    // The same signing works for an object (so the refusal below is not a bad signature).
    let url = sigv2_presigned("/s3p/immuta/sales/plain.txt", "/immuta/sales/plain.txt", "");
    let r = raw(s.addr(), "GET", &url, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    // SigV2 signs no listing parameter: this URL could be re-pointed at any prefix. Refused.
    let url = sigv2_presigned("/s3p/immuta", "/immuta", "prefix=sales%2F&");
    let r = raw(s.addr(), "GET", &url, &[]);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text().contains("Sign listings with SigV4"),
        "{}",
        r.text()
    );
    assert!(!r.text().contains("<ListBucketResult"));
}

/// Whether s3p has closed the connection: reads (whatever answer came first) until EOF or a reset;
/// a read that times out means the connection is still open.
fn is_closed(mut c: &TcpStream) -> bool {
    c.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn huge_and_slow_request_heads_pin_neither_memory_nor_connections() {
    let f = setup();
    let admin = free_port();
    let s = S3p::start(
        &dir("s3p-heads"),
        &config(f, admin, "", "  header_timeout_ms: 2000\n"),
    );
    // Warm up (first requests allocate pools and buffers), then measure.
    let r = raw(
        s.addr(),
        "GET",
        "/s3p/immuta/sales/plain.txt",
        &[("Authorization", &legacy(ALICE))],
    );
    assert_eq!(r.status, 200);
    let before = rss_kib(s.pid());

    // 300 connections that each send a 1 MB header and never end their head (5 client addresses).
    let pad = vec![b'a'; 1_000_000];
    let mut big = Vec::new();
    for i in 0..300 {
        let mut c = connect_from(&format!("127.0.1.{}", 1 + i % 5), s.addr());
        c.set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let _ = c.write_all(b"GET /s3p/immuta HTTP/1.1\r\nHost: x\r\nX-Pad: ");
        let _ = c.write_all(&pad);
        big.push(c);
    }
    // 50 connections that send their head one byte every 300 ms (each read renews a per-read timeout).
    let mut slow: Vec<TcpStream> = (0..50)
        .map(|i| connect_from(&format!("127.0.2.{}", 1 + i % 5), s.addr()))
        .collect();
    let head = b"GET /s3p/immuta HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let started = Instant::now();
    let mut peak = rss_kib(s.pid());
    for byte in head.iter().take(12) {
        for c in &mut slow {
            let _ = c.write_all(&[*byte]);
        }
        peak = peak.max(rss_kib(s.pid()));
        std::thread::sleep(Duration::from_millis(300));
    }
    let growth_mib = peak.saturating_sub(before) as f64 / 1024.0;
    assert!(
        growth_mib < 64.0,
        "RSS grew {growth_mib:.1} MiB ({before} KiB before)"
    );
    // By now (3.6 s, deadline 2 s) every one of them is closed.
    assert!(started.elapsed() >= Duration::from_secs(3));
    let open_big = big.iter().filter(|c| !is_closed(c)).count();
    let open_slow = slow.iter().filter(|c| !is_closed(c)).count();
    assert_eq!(
        (open_big, open_slow),
        (0, 0),
        "connections still open (huge, slow)"
    );
    assert!(metric(admin, "s3p_limit_hits_total{limit=\"max_header_bytes\"}") >= 1.0);
    assert!(metric(admin, "s3p_limit_hits_total{limit=\"header_timeout_ms\"}") >= 50.0);
    // The log holds a summary, not one ERROR line per connection.
    let errors = s.log().lines().filter(|l| l.contains("ERROR")).count();
    assert!(errors < 10, "{errors} ERROR lines:\n{}", s.log());
    // And s3p still serves.
    let r = raw(
        s.addr(),
        "GET",
        "/s3p/immuta/sales/plain.txt",
        &[("Authorization", &legacy(ALICE))],
    );
    assert_eq!(r.status, 200);
    eprintln!(
        "RSS {before} KiB before, peak {peak} KiB with 300 huge and 50 slow heads ({growth_mib:.1} MiB growth)"
    );
}

#[test]
fn an_oversized_head_is_answered_with_s3_xml_and_a_slow_one_with_request_timeout() {
    let f = setup();
    let s = S3p::start(
        &dir("s3p-head-answers"),
        &config(
            f,
            free_port(),
            "",
            "  header_timeout_ms: 1000\n  max_header_bytes: 8192\n",
        ),
    );
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = c.write_all(b"GET /s3p/immuta HTTP/1.1\r\nHost: x\r\nX-Pad: ");
    let _ = c.write_all(&[b'a'; 20_000]);
    let mut answer = Vec::new();
    let _ = c.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(
        text.contains("<Code>RequestHeaderSectionTooLarge</Code>"),
        "{text}"
    );

    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"GET /s3p/immuta HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = c.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("<Code>RequestTimeout</Code>"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // A kept-alive connection: the second head has its own deadline, counted from its first byte.
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        c,
        "GET /s3p/immuta/sales/plain.txt HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n",
        legacy(ALICE)
    )
    .unwrap();
    let mut first = [0u8; 2048];
    let n = c.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    std::thread::sleep(Duration::from_millis(1500));
    c.write_all(b"GET /s3p/immuta/sales/plain.txt HTTP/1.1\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = c.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.contains("<Code>RequestTimeout</Code>"), "{text}");
}

#[test]
fn connections_are_capped_per_client_and_in_all() {
    let f = setup();
    let admin = free_port();
    let s = S3p::start(
        &dir("s3p-conn-caps"),
        &config(
            f,
            admin,
            "",
            "  max_connections: 30\n  max_connections_per_client: 10\n",
        ),
    );
    let request = format!(
        "GET /s3p/immuta/sales/plain.txt HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n",
        legacy(ALICE)
    );
    // Ten kept-alive connections from one address, each having served a request.
    let mut held = Vec::new();
    for _ in 0..10 {
        let mut c = connect_from("127.0.3.1", s.addr());
        c.write_all(request.as_bytes()).unwrap();
        let mut buf = [0u8; 2048];
        let n = c.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(c);
    }
    let (status, text) = get_from(
        "127.0.3.1",
        s.addr(),
        "/s3p/immuta/sales/plain.txt",
        &legacy(ALICE),
    );
    assert_eq!(status, 503, "an 11th connection from one address: {text}");
    assert!(
        text.contains("<Code>SlowDown</Code>") && text.contains("Retry-After"),
        "{text}"
    );
    let (status, _) = get_from(
        "127.0.3.2",
        s.addr(),
        "/s3p/immuta/sales/plain.txt",
        &legacy(ALICE),
    );
    assert_eq!(status, 200, "another address");
    // Fill the global cap from two more addresses.
    for source in ["127.0.3.3", "127.0.3.4"] {
        for _ in 0..10 {
            let mut c = connect_from(source, s.addr());
            c.write_all(request.as_bytes()).unwrap();
            let mut buf = [0u8; 2048];
            let _ = c.read(&mut buf).unwrap();
            held.push(c);
        }
    }
    let (status, text) = get_from(
        "127.0.3.5",
        s.addr(),
        "/s3p/immuta/sales/plain.txt",
        &legacy(BOB),
    );
    assert_eq!(status, 503, "over the global cap: {text}");
    assert!(metric(admin, "s3p_limit_hits_total{limit=\"max_connections\"}") >= 1.0);
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let (status, _) = get_from(
        "127.0.3.5",
        s.addr(),
        "/s3p/immuta/sales/plain.txt",
        &legacy(BOB),
    );
    assert_eq!(status, 200, "places are given back when connections close");
}

#[test]
fn refusals_are_audited_with_their_resource_and_the_claimed_key() {
    let f = setup();
    let s = S3p::start(&dir("s3p-audit-refusals"), &config(f, free_port(), "", ""));
    let path = "/s3p/immuta/sales/plain.txt";
    // A preflight without Origin, and a head over max_header_bytes (caught by s3p's in-request check).
    let r = raw(s.addr(), "OPTIONS", path, &[]);
    // Not a preflight at all: 400, as S3 answers (it was 403).
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("<Code>BadRequest</Code>"), "{}", r.text());
    let line = audit_line(&s, r.header("x-amz-request-id").unwrap());
    assert_eq!(line["resource"], "/immuta/sales/plain.txt", "{line}");
    let big = "a".repeat(16_500);
    let r = raw(s.addr(), "GET", path, &[("x-big", &big)]);
    assert_eq!(r.status, 400, "{}", r.text());
    let line = audit_line(&s, r.header("x-amz-request-id").unwrap());
    assert_eq!(line["resource"], "/immuta/sales/plain.txt", "{line}");
    // A bad signature of a known key names that key (by its display name).
    let host = s.addr().to_string();
    let signed = sigv4_headers(
        "GET",
        &host,
        path,
        ALICE,
        "wrong-secret",
        std::time::SystemTime::now(),
    );
    let headers: Vec<(&str, &str)> = signed
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .chain([("Host", host.as_str())])
        .collect();
    let r = raw(s.addr(), "GET", path, &headers);
    assert_eq!(r.status, 403, "{}", r.text());
    let line = audit_line(&s, r.header("x-amz-request-id").unwrap());
    assert_eq!(line["api_key"], "Alice", "{line}");
    assert_eq!(line["decision"], "denied", "{line}");
}

/// A backend that answers every request with a 103 Early Hints carrying its own headers, then a 200. Not
/// an S3 server: a misbehaving HTTP upstream, to see what of an interim answer reaches the client.
fn early_hints_backend() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(20) {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let _ = conn.write_all(
                    b"HTTP/1.1 103 Early Hints\r\nLink: </backend-secret.css>; rel=preload\r\n\
                      x-amz-request-id: BACKEND-REQUEST-ID\r\nServer: backend-server-name\r\n\r\n\
                      HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\
                      x-amz-request-id: BACKEND-REQUEST-ID\r\nConnection: close\r\n\r\nhello",
                );
            });
        }
    });
    port
}

#[test]
fn interim_answers_of_a_backend_pass_without_its_headers() {
    let f = setup();
    let backend = early_hints_backend();
    let yaml = config(f, free_port(), "", "")
        .replace(
            "backends:\n",
            &format!(
                "backends:\n  hints:\n    endpoint: http://127.0.0.1:{backend}\n    region: garage\n    access_key_id: {GARAGE_KEY_ID}\n    secret_access_key: {GARAGE_SECRET}\n"
            ),
        )
        .replace(
            "data_sources:\n",
            "data_sources:\n  hints: { backend: hints, bucket: hints-bucket }\n",
        );
    let s = S3p::start(&dir("s3p-early-hints"), &yaml);
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "GET /s3p/immuta/hints/x HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        legacy(ALICE)
    )
    .unwrap();
    let mut all = Vec::new();
    let _ = c.read_to_end(&mut all);
    let text = String::from_utf8_lossy(&all);
    assert!(text.contains("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("hello"), "{text}");
    for leak in [
        "backend-secret.css",
        "BACKEND-REQUEST-ID",
        "backend-server-name",
        "hints-bucket",
    ] {
        assert!(!text.contains(leak), "`{leak}` reached the client:\n{text}");
    }
}

#[test]
fn heads_pingora_refuses_itself_are_counted() {
    let f = setup();
    let admin = free_port();
    let s = S3p::start(&dir("s3p-pingora-rejects"), &config(f, admin, "", ""));
    let before = metric(admin, "s3p_requests_rejected_by_pingora_total");
    for head in [
        // Two Content-Length headers.
        "GET /s3p/immuta/sales/plain.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        // A NUL in a header value.
        "GET /s3p/immuta/sales/plain.txt HTTP/1.1\r\nHost: x\r\nX-Bad: a\0b\r\n\r\n",
    ] {
        let mut c = TcpStream::connect(s.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(head.as_bytes()).unwrap();
        let mut answer = Vec::new();
        let _ = c.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 4"), "{head:?}: {text}");
    }
    assert_eq!(
        metric(admin, "s3p_requests_rejected_by_pingora_total") - before,
        2.0
    );
    // s3p's own refusals are not counted there.
    let r = raw(s.addr(), "GET", "/s3p/immuta/sales/plain.txt", &[]);
    assert_eq!(r.status, 403);
    assert_eq!(
        metric(admin, "s3p_requests_rejected_by_pingora_total") - before,
        2.0
    );
}

/// One HTTP/1.1 response read off a kept-alive connection: status, head, body (none for a HEAD).
fn read_response(conn: &mut TcpStream, head_only: bool) -> (u16, String, Vec<u8>) {
    let mut data = Vec::new();
    let mut byte = [0u8; 1];
    while !data.ends_with(b"\r\n\r\n") {
        let n = conn.read(&mut byte).expect("reading a response head");
        assert_eq!(
            n,
            1,
            "connection closed after {:?}",
            String::from_utf8_lossy(&data)
        );
        data.push(byte[0]);
    }
    let head = String::from_utf8(data).unwrap();
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .expect("a content-length");
    let mut body = vec![0u8; if head_only { 0 } else { length }];
    conn.read_exact(&mut body).expect("reading a response body");
    (status, head, body)
}

#[test]
fn missing_keys_keep_the_client_and_the_backend_connection() {
    let f = setup();
    let relay = CountingRelay::start(SocketAddr::from(([127, 0, 0, 1], f.garage.s3_port)));
    let s = S3p::start(
        &dir("s3p-misses"),
        &config_via(f, free_port(), "", "", Some(relay.port)),
    );
    let mut conn = TcpStream::connect(s.addr()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = legacy(ALICE);
    let mut ask = |method: &str, key: &str| {
        write!(
            conn,
            "{method} /s3p/immuta/raw/{key} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n\r\n"
        )
        .unwrap();
        read_response(&mut conn, method == "HEAD")
    };
    // Probes of missing keys, as DuckDB, pyarrow and `aws s3 sync` send them, all on one connection.
    for i in 0..100 {
        let method = if i % 2 == 0 { "HEAD" } else { "GET" };
        let (status, head, body) = ask(method, &format!("missing-{i}"));
        assert_eq!(status, 404, "{method} {i}: {head}");
        assert!(
            !head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
        assert!(head.contains("x-amz-request-id"), "{head}");
        if method == "GET" {
            let text = String::from_utf8(body).unwrap();
            assert!(text.contains("<Code>NoSuchKey</Code>"), "{text}");
            assert!(
                text.contains(&format!("<Resource>/immuta/raw/missing-{i}</Resource>")),
                "{text}"
            );
            assert!(
                !text.contains(AMP_BUCKET),
                "the backend bucket leaked: {text}"
            );
        }
    }
    // And the connection still serves a present object.
    let (status, _, body) = ask("GET", "more");
    assert_eq!((status, body.as_slice()), (200, b"x".as_slice()));
    // Before: every miss failed the proxy request, so neither connection was reused (100 backend
    // connections, and the client's closed after each answer).
    let backend_connections = relay.connections();
    assert!(
        backend_connections <= 2,
        "{backend_connections} backend connections for 101 requests on one client connection"
    );
}

#[test]
fn header_values_that_are_not_utf8_or_not_ascii_where_forwarded_are_refused() {
    let f = setup();
    let s = S3p::start(&dir("s3p-header-bytes"), &config(f, free_port(), "", ""));
    let auth = legacy(ALICE);
    for (value, code) in [
        // Not UTF-8 at all: refused before any reader sees it.
        (&b"bytes=\xff-1"[..], "InvalidArgument"),
        // UTF-8, but a forwarded header is signed for the backend as ASCII text.
        ("bytes=0-1\u{e9}".as_bytes(), "InvalidArgument"),
    ] {
        let mut conn = TcpStream::connect(s.addr()).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut request = format!(
            "GET /s3p/immuta/sales/plain.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\nRange: "
        )
        .into_bytes();
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n\r\n");
        conn.write_all(&request).unwrap();
        let (status, head, body) = read_response(&mut conn, false);
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, 400, "{head}{text}");
        assert!(text.contains(&format!("<Code>{code}</Code>")), "{text}");
        assert!(
            text.contains("<ArgumentName>range</ArgumentName>"),
            "{text}"
        );
    }
}

#[test]
fn tls_handshakes_are_inside_the_head_deadline_and_the_connection_caps() {
    let f = setup();
    let dir = f.dir.join("tls-handshake-limits");
    let (ca, cert, key) = make_ca_and_cert(&dir.join("certs"), "handshake");
    let tls_port = free_port();
    let yaml = standard_config(&f.garage).replace(
        "bucket: immuta\n",
        &format!(
            "bucket: immuta\nlimits: {{ header_timeout_ms: 1500, max_connections_per_client: 4 }}\ntls:\n  listen: 127.0.0.1:{tls_port}\n  cert: {}\n  key: {}\n",
            cert.display(),
            key.display()
        ),
    );
    let s3p = S3p::start(&dir.join("s3p"), &yaml);
    let tls_addr = SocketAddr::from(([127, 0, 0, 1], tls_port));
    let started = Instant::now();
    // Four connections that never finish a handshake: two send nothing, two half a ClientHello.
    let mut stalled: Vec<TcpStream> = (0..4)
        .map(|i| {
            let mut c = connect_from("127.0.0.7", tls_addr);
            if i % 2 == 1 {
                c.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
            }
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // A fifth from the same address is over its cap: closed before any handshake.
    let fifth = connect_from("127.0.0.7", tls_addr);
    assert!(
        is_closed(&fifth),
        "a fifth connection from one address was kept"
    );
    // Another address is not affected.
    let curl = |source: &str| {
        Command::new("curl")
            .args(["-sS", "--max-time", "5", "--interface", source, "--cacert"])
            .arg(&ca)
            .args(["-H", &format!("Authorization: {}", legacy(ALICE))])
            .arg(format!(
                "https://localhost:{tls_port}/s3p/immuta/sales/plain.txt"
            ))
            .output()
            .expect("curl is required for the TLS tests")
    };
    let out = curl("127.0.0.8");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "body of plain.txt");
    // The stalled handshakes are closed at the head deadline (1.5 s), not after pingora's 60 s.
    for c in &mut stalled {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        let closed = match c.read(&mut buf) {
            Ok(n) => n == 0,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        assert!(closed, "a stalled handshake was kept");
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "stalled handshakes closed after {took:?}"
    );
    // Their places are free again.
    let out = curl("127.0.0.7");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "body of plain.txt");
    drop(s3p);
}
