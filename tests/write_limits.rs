//! Writes under attack (issue 21), end to end against a real Garage: DeleteObjects refused before its
//! body is read, the process-wide budget of buffered bodies (`limits.max_buffered_body_bytes`), the
//! whole-body deadline (`limits.body_timeout_ms`), s3p's memory while 600 DeleteObjects bodies are held
//! open, the CompleteMultipartUpload body cap, signed-chunk integrity before anything is committed, and
//! the copy limits (`limits.max_concurrent_copies_per_key`, `limits.max_concurrent_copies`). Every loop is
//! bounded in count and time; all traffic stays on 127.0.0.0/8.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

const WRITER: &str = "writer-api-key";
const WRITER_SECRET: &str = "writer-secret-0123456789";
const READER: &str = "reader-api-key";
const READER_SECRET: &str = "reader-secret-0123456789";
const LEGACY_WRITER: &str = "legacy-writer-token";
const LEGACY_WRITER_2: &str = "legacy-writer-token-2";
const LEGACY_READER: &str = "legacy-reader-token";

/// Announced length of the DeleteObjects bodies held open (under S3's 2 MiB limit of such bodies).
const HELD_LENGTH: usize = 2_000_000;
/// A well-formed Content-MD5 (of the empty body): bodies that never arrive whole are never checked.
const ANY_MD5: &str = "1B2M2Y8AsgTpgAmY7PhCfg==";
/// What 10,000 parts need in a CompleteMultipartUpload body: 256 bytes each, plus 4 KiB.
const MAX_COMPLETE_BODY: usize = 10_000 * 256 + 4096;

struct Env {
    garage: Garage,
    /// An s3p with the defaults of issue 21 (no new field set), shared by the tests that change no limit.
    s3p: S3p,
    dir: TempDir,
}

/// One Garage for the file; `sales` (alpha, read-only), `sandbox` (beta under `sandbox/`, writable) and
/// `slowbox` (beta under `slowbox/`, writable, reached through a relay when a test starts one).
fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        let dir = TempDir::new("write-limits");
        let garage = Garage::start(&dir.0.join("garage"));
        runtime().block_on(async {
            let c = garage.client();
            c.put_object()
                .bucket(ALPHA_BUCKET)
                .key("seed.csv")
                .body(ByteStream::from_static(b"a,b\n1,2\n"))
                .send()
                .await
                .unwrap();
        });
        let yaml = config(&garage, None, None, "");
        let s3p = S3p::start(&dir.0.join("s3p"), &yaml);
        Env { garage, s3p, dir }
    })
}

/// The configuration of this file: `relay` is the port of a [`Relay`] in front of Garage for `slowbox`
/// (Garage itself otherwise), `admin` an admin listener, `limits` extra `limits.` fields (`a: 1, b: 2`).
fn config(garage: &Garage, relay: Option<u16>, admin: Option<u16>, limits: &str) -> String {
    let relay_endpoint = match relay {
        Some(port) => format!("http://127.0.0.1:{port}"),
        None => garage.endpoint(),
    };
    let admin = admin
        .map(|p| format!("admin_listen: 127.0.0.1:{p}\n"))
        .unwrap_or_default();
    let limits = if limits.is_empty() {
        "max_concurrent_requests: 64".to_string()
    } else {
        limits.to_string()
    };
    format!(
        r#"listen: 127.0.0.1:{{PORT}}
base_path: /s3p
bucket: immuta
token_secret: test-token-secret-0123456789
{admin}limits: {{ {limits} }}
backends:
  garage: {{ endpoint: "{endpoint}", region: garage, access_key_id: {GARAGE_KEY_ID}, secret_access_key: {GARAGE_SECRET} }}
  relay: {{ endpoint: "{relay_endpoint}", region: garage, access_key_id: {GARAGE_KEY_ID}, secret_access_key: {GARAGE_SECRET} }}
data_sources:
  sales: {{ backend: garage, bucket: {ALPHA_BUCKET} }}
  sandbox: {{ backend: garage, bucket: {BETA_BUCKET}, prefix: sandbox/, writable: true }}
  slowbox: {{ backend: relay, bucket: {BETA_BUCKET}, prefix: slowbox/, writable: true }}
api_keys:
  - {{ id: {WRITER}, secret: {WRITER_SECRET}, name: Writer, data_sources: {{ sales: read, sandbox: write, slowbox: write }} }}
  - {{ id: {READER}, secret: {READER_SECRET}, name: Reader, data_sources: all }}
  - {{ id: {LEGACY_WRITER}, name: Legacy writer, data_sources: {{ sandbox: write, slowbox: write }} }}
  - {{ id: {LEGACY_WRITER_2}, name: Legacy writer 2, data_sources: {{ sandbox: write, slowbox: write }} }}
  - {{ id: {LEGACY_READER}, name: Legacy reader, data_sources: all }}
"#,
        endpoint = garage.endpoint()
    )
}

/// An s3p of its own for one test (limits of its own, a process of its own to measure).
fn own_s3p(name: &str, relay: Option<u16>, admin: Option<u16>, limits: &str) -> S3p {
    let e = env();
    S3p::start(
        &e.dir.0.join(name),
        &config(&e.garage, relay, admin, limits),
    )
}

/// Who signs a request.
#[derive(Clone, Copy)]
enum Who {
    SigV4(&'static str, &'static str),
    Legacy(&'static str),
}

const SIGV4_WRITER: Who = Who::SigV4(WRITER, WRITER_SECRET);
const SIGV4_READER: Who = Who::SigV4(READER, READER_SECRET);

/// Every header of a request by `who` to `addr` (SigV4 by aws-sigv4, independent of s3p's verifier, with
/// `payload_hash` as `x-amz-content-sha256` and `headers` signed; or the legacy header).
fn auth_headers(
    who: Who,
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, String)],
    payload_hash: &str,
) -> Vec<(String, String)> {
    let host = addr.to_string();
    let mut out: Vec<(String, String)> = vec![("host".into(), host.clone())];
    out.extend(headers.iter().map(|(n, v)| (n.to_string(), v.clone())));
    match who {
        Who::Legacy(key) => out.push(("authorization".into(), format!("AWS {key}:immuta"))),
        Who::SigV4(key, secret) => {
            let extra: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let request = Signed {
                method,
                host: &host,
                path_and_query: target,
                headers: &extra,
                payload_hash,
            };
            out.extend(sigv4_sign(&request, key, secret, SystemTime::now()));
        }
    }
    out
}

/// The head of a DeleteObjects request announcing `length` bytes.
fn delete_head(who: Who, addr: SocketAddr, length: usize, md5: &str) -> Vec<(String, String)> {
    auth_headers(
        who,
        addr,
        "POST",
        "/s3p/immuta?delete",
        &[
            ("content-length", length.to_string()),
            ("content-md5", md5.to_string()),
        ],
        "UNSIGNED-PAYLOAD",
    )
}

/// A connection to `addr` with a request head written (`Connection: close`), and nothing else.
fn open_with_head(
    mut stream: TcpStream,
    method: &str,
    target: &str,
    headers: &[(String, String)],
) -> TcpStream {
    let mut head = format!("{method} {target} HTTP/1.1\r\nConnection: close\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream
}

fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).unwrap()
}

/// The answer on `stream` if one arrives within `timeout` (read to the end: every request here says
/// `Connection: close`), or None when nothing came.
fn answer_within(stream: &mut TcpStream, timeout: Duration) -> Option<RawResponse> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if buf.is_empty() {
                    return None;
                }
                // A head without its end: give it the rest of the time, then parse what came.
                if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    if buf.is_empty() {
        None
    } else {
        Some(parse_response(&buf))
    }
}

/// One whole exchange with a body (the answer may come, and the connection close, before the body is
/// sent: a refusal).
fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> RawResponse {
    let mut stream = open_with_head(connect(addr), method, target, headers);
    let _ = stream.write_all(body);
    answer_within(&mut stream, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("{method} {target}: no answer"))
}

fn code_of(r: &RawResponse) -> String {
    let t = r.text();
    let start = t.find("<Code>").map(|i| i + 6).unwrap_or(0);
    let end = t[start..]
        .find("</Code>")
        .map(|i| start + i)
        .unwrap_or(start);
    t[start..end].to_string()
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

fn limit_hits(admin: u16, limit: &str) -> f64 {
    metric(admin, &format!("s3p_limit_hits_total{{limit=\"{limit}\"}}"))
}

/// Waits until s3p has no request in flight (dropped connections end when s3p notices them).
fn wait_idle(admin: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(admin, "s3p_requests_in_flight") > 0.0 {
        assert!(Instant::now() < deadline, "requests still in flight");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn content_md5(body: &[u8]) -> String {
    use base64::Engine;
    use md5::Digest;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body))
}

/// A small, valid DeleteObjects body and its Content-MD5.
fn small_delete_body(key: &str) -> (Vec<u8>, String) {
    let body = format!("<Delete><Object><Key>{key}</Key></Object></Delete>").into_bytes();
    let md5 = content_md5(&body);
    (body, md5)
}

/// Pseudo-random bytes (a fixed xorshift stream), so that a misplaced byte cannot go unnoticed.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn put_direct(key: &str, body: Vec<u8>) {
    let c = env().garage.client();
    runtime().block_on(async {
        c.put_object()
            .bucket(BETA_BUCKET)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .unwrap_or_else(|e| panic!("putting {key} on Garage: {e:?}"));
    });
}

fn backend_object(key: &str) -> Option<Vec<u8>> {
    let c = env().garage.client();
    runtime().block_on(async {
        let got = c
            .get_object()
            .bucket(BETA_BUCKET)
            .key(key)
            .send()
            .await
            .ok()?;
        Some(got.body.collect().await.unwrap().into_bytes().to_vec())
    })
}

/// Asserts that the backend still holds `original` at `key` (lengths and the first difference, not
/// every byte, on failure).
fn assert_unchanged(key: &str, original: &[u8], what: &str) {
    let now = backend_object(key);
    if now.as_deref() != Some(original) {
        let detail = match &now {
            None => "the object is gone".to_string(),
            Some(b) => format!(
                "{} bytes now instead of {} (first difference at {:?})",
                b.len(),
                original.len(),
                b.iter().zip(original).position(|(x, y)| x != y)
            ),
        };
        panic!("{what}: {key} changed: {detail}");
    }
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

/// Starts a multipart upload of `key` through s3p (legacy writer); returns its (sealed) upload id.
fn create_upload(addr: SocketAddr, key: &str) -> String {
    let target = format!("/s3p/immuta/{key}?uploads");
    let headers = auth_headers(
        Who::Legacy(LEGACY_WRITER),
        addr,
        "POST",
        &target,
        &[("content-length", "0".into())],
        "UNSIGNED-PAYLOAD",
    );
    let r = send(addr, "POST", &target, &headers, b"");
    assert_eq!(r.status, 200, "CreateMultipartUpload: {}", r.text());
    let t = r.text();
    let start = t.find("<UploadId>").expect("an UploadId") + "<UploadId>".len();
    let end = start + t[start..].find("</UploadId>").unwrap();
    t[start..end].to_string()
}

/// A TCP relay between s3p and Garage: it records the requests s3p sends (an independent account of the
/// backend calls) and holds back the answer to each request naming `x-amz-copy-source` by `copy_delay`,
/// so that copies stay in flight. (It forwards bytes; the S3 server behind it is the real Garage.)
struct Relay {
    port: u16,
    requests: Arc<Mutex<Vec<u8>>>,
}

impl Relay {
    fn start(target: SocketAddr, copy_delay: Duration) -> Relay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let copying = Arc::new(AtomicBool::new(false));
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (log, flag) = (log.clone(), copying.clone());
                std::thread::spawn(move || {
                    let needle = b"x-amz-copy-source";
                    let mut buf = [0u8; 16 * 1024];
                    let mut tail: Vec<u8> = Vec::new();
                    while let Ok(n) = c_read.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        {
                            let mut log = log.lock().unwrap();
                            if log.len() < 4 << 20 {
                                log.extend_from_slice(&buf[..n]);
                            }
                        }
                        tail.extend_from_slice(&buf[..n]);
                        if tail
                            .windows(needle.len())
                            .any(|w| w.eq_ignore_ascii_case(needle))
                        {
                            // Set before the request goes on, so that its answer is held back.
                            flag.store(true, Ordering::SeqCst);
                            tail.clear();
                        } else {
                            let keep = tail.len().min(needle.len() - 1);
                            tail.drain(..tail.len() - keep);
                        }
                        if s_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s_write.shutdown(std::net::Shutdown::Write);
                });
                let (mut s_read, mut c_write) = (server, client);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = s_read.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        if copying.swap(false, Ordering::SeqCst) {
                            std::thread::sleep(copy_delay);
                        }
                        if c_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = c_write.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Relay { port, requests }
    }

    /// How often `needle` occurs in what s3p sent the backend so far.
    fn count(&self, needle: &str) -> usize {
        let log = self.requests.lock().unwrap();
        log.windows(needle.len())
            .filter(|w| *w == needle.as_bytes())
            .count()
    }
}

fn garage_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], env().garage.s3_port))
}

// ---------------------------------------------------------------------------------------------------
// 1. DeleteObjects from a key that may write nowhere: refused before its body is read.

#[test]
fn delete_objects_from_a_key_without_write_grant_is_refused_before_its_body() {
    let e = env();
    let addr = e.s3p.addr();
    for (name, who) in [
        ("SigV4 reader", SIGV4_READER),
        ("legacy reader", Who::Legacy(LEGACY_READER)),
    ] {
        let started = Instant::now();
        // The head of a 2 MB body, and no body at all.
        let mut c = open_with_head(
            connect(addr),
            "POST",
            "/s3p/immuta?delete",
            &delete_head(who, addr, HELD_LENGTH, ANY_MD5),
        );
        let r = answer_within(&mut c, Duration::from_secs(2))
            .unwrap_or_else(|| panic!("{name}: no answer within 2 s (s3p waits for the body)"));
        let took = started.elapsed();
        assert_eq!(r.status, 403, "{name}: {}", r.text());
        assert_eq!(code_of(&r), "AccessDenied", "{name}: {}", r.text());
        assert!(
            took < Duration::from_secs(2),
            "{name}: answered in {took:?}"
        );
        assert_no_leak(name, &r.all_bytes());
    }
    // A key that may write somewhere is not refused: s3p waits for its body.
    let mut c = open_with_head(
        connect(addr),
        "POST",
        "/s3p/immuta?delete",
        &delete_head(SIGV4_WRITER, addr, HELD_LENGTH, ANY_MD5),
    );
    if let Some(r) = answer_within(&mut c, Duration::from_millis(1500)) {
        panic!(
            "the writer's DeleteObjects was answered before its body: {} {}",
            r.status,
            r.text()
        );
    }
    drop(c);
    // And the same writer's whole request is served.
    let (body, md5) = small_delete_body("sandbox/never-there");
    let r = send(
        addr,
        "POST",
        "/s3p/immuta?delete",
        &delete_head(SIGV4_WRITER, addr, body.len(), &md5),
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("<Deleted>"), "{}", r.text());
}

// ---------------------------------------------------------------------------------------------------
// 2. The process-wide budget of buffered bodies.

#[test]
fn buffered_bodies_past_the_budget_are_answered_slow_down() {
    let admin = free_port();
    let s3p = own_s3p(
        "s3p-budget",
        None,
        Some(admin),
        "max_concurrent_requests: 64, max_buffered_body_bytes: 3145728",
    );
    let addr = s3p.addr();
    let upload_id = create_upload(addr, "sandbox/budget/complete.bin");
    let hits_before = limit_hits(admin, "max_buffered_body_bytes");

    // One 2 MB body held open (a part sent, then nothing): 2 MB of the 3 MiB budget.
    let mut held = open_with_head(
        connect(addr),
        "POST",
        "/s3p/immuta?delete",
        &delete_head(SIGV4_WRITER, addr, HELD_LENGTH, ANY_MD5),
    );
    held.write_all(&vec![b' '; 100_000]).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    // A second one does not fit: 503 SlowDown with Retry-After, at once, its body never sent.
    let started = Instant::now();
    let mut second = open_with_head(
        connect(addr),
        "POST",
        "/s3p/immuta?delete",
        &delete_head(SIGV4_WRITER, addr, HELD_LENGTH, ANY_MD5),
    );
    let r = answer_within(&mut second, Duration::from_secs(3))
        .expect("the DeleteObjects past the budget was not answered");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(code_of(&r), "SlowDown", "{}", r.text());
    assert!(r.header("retry-after").is_some(), "no Retry-After");
    assert!(started.elapsed() < Duration::from_secs(3));
    let hits = limit_hits(admin, "max_buffered_body_bytes");
    assert!(hits > hits_before, "limit hits {hits_before} -> {hits}");

    // A CompleteMultipartUpload body counts by its Content-Length while in flight: 2 MB does not fit.
    let target = format!(
        "/s3p/immuta/sandbox/budget/complete.bin?uploadId={}",
        percent_encode(&upload_id)
    );
    let mut complete = open_with_head(
        connect(addr),
        "POST",
        &target,
        &auth_headers(
            Who::Legacy(LEGACY_WRITER),
            addr,
            "POST",
            &target,
            &[("content-length", HELD_LENGTH.to_string())],
            "UNSIGNED-PAYLOAD",
        ),
    );
    let r = answer_within(&mut complete, Duration::from_secs(3))
        .expect("the Complete past the budget was not answered");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(code_of(&r), "SlowDown", "{}", r.text());
    assert!(r.header("retry-after").is_some(), "no Retry-After");
    assert!(limit_hits(admin, "max_buffered_body_bytes") > hits);

    // The held body still waits for the rest (it was not refused).
    assert!(
        answer_within(&mut held, Duration::from_millis(200)).is_none(),
        "the held body was answered"
    );
    // Released, its budget is given back: another 2 MB body is taken (it waits for its body).
    drop(held);
    wait_idle(admin);
    let mut again = open_with_head(
        connect(addr),
        "POST",
        "/s3p/immuta?delete",
        &delete_head(Who::Legacy(LEGACY_WRITER), addr, HELD_LENGTH, ANY_MD5),
    );
    again.write_all(&vec![b' '; 100_000]).unwrap();
    if let Some(r) = answer_within(&mut again, Duration::from_secs(1)) {
        panic!(
            "after the release, a 2 MB body was answered {} {}",
            r.status,
            r.text()
        );
    }
    drop(again);
    wait_idle(admin);
    // And a small whole request is served.
    let (body, md5) = small_delete_body("sandbox/budget/never-there");
    let r = send(
        addr,
        "POST",
        "/s3p/immuta?delete",
        &delete_head(SIGV4_WRITER, addr, body.len(), &md5),
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

// ---------------------------------------------------------------------------------------------------
// 3. The whole-body deadline.

/// Writes `piece` every `pause` until s3p answers (or `max` passes); returns the answer and when it came.
fn drip_until_answer(
    stream: &mut TcpStream,
    piece: &[u8],
    pause: Duration,
    max: Duration,
) -> Option<(RawResponse, Duration)> {
    let started = Instant::now();
    let mut writing = true;
    while started.elapsed() < max {
        if writing && stream.write_all(piece).is_err() {
            writing = false;
        }
        if let Some(r) = answer_within(stream, pause) {
            return Some((r, started.elapsed()));
        }
    }
    None
}

#[test]
fn a_body_not_whole_within_the_body_timeout_is_request_timeout_and_gives_back_its_budget() {
    let admin = free_port();
    let s3p = own_s3p(
        "s3p-body-timeout",
        None,
        Some(admin),
        "max_concurrent_requests: 64, max_buffered_body_bytes: 3145728, body_timeout_ms: 1000",
    );
    let addr = s3p.addr();
    // Dripped at 20 KB/s, far above the minimum rate (1 KiB/s): only the whole-body deadline cuts it.
    let mut dripping = open_with_head(
        connect(addr),
        "POST",
        "/s3p/immuta?delete",
        &delete_head(SIGV4_WRITER, addr, HELD_LENGTH, ANY_MD5),
    );
    let (r, took) = drip_until_answer(
        &mut dripping,
        &[b' '; 2048],
        Duration::from_millis(100),
        Duration::from_secs(8),
    )
    .expect("a dripped body was not cut within 8 s (body_timeout_ms: 1000)");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(code_of(&r), "RequestTimeout", "{}", r.text());
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "cut after {took:?}"
    );
    drop(dripping);

    // Its 2 MB were given back: another 2 MB body (over half the 3 MiB budget) is taken, then cut by
    // the deadline in turn (a stalled one: a part, then nothing) rather than refused 503.
    let mut stalled = open_with_head(
        connect(addr),
        "POST",
        "/s3p/immuta?delete",
        &delete_head(Who::Legacy(LEGACY_WRITER), addr, HELD_LENGTH, ANY_MD5),
    );
    stalled.write_all(&vec![b' '; 50_000]).unwrap();
    let started = Instant::now();
    let r = answer_within(&mut stalled, Duration::from_secs(6))
        .expect("a stalled body was not cut within 6 s");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(code_of(&r), "RequestTimeout", "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(stalled);

    // A whole small request is served.
    let (body, md5) = small_delete_body("sandbox/timeout/never-there");
    let r = send(
        addr,
        "POST",
        "/s3p/immuta?delete",
        &delete_head(SIGV4_WRITER, addr, body.len(), &md5),
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

// ---------------------------------------------------------------------------------------------------
// 4. Memory: 600 DeleteObjects bodies held open at once, from three keys, with the default budget.

const ATTACK_CONNECTIONS: usize = 600;
const ATTACK_PART: usize = 1_000_000;
const SOURCES: usize = 6;

/// Who sends attack request `i`: a third each from a read-only SigV4 key, a legacy writer, a SigV4 writer.
fn attacker(i: usize) -> Who {
    match i % 3 {
        0 => SIGV4_READER,
        1 => Who::Legacy(LEGACY_WRITER),
        _ => SIGV4_WRITER,
    }
}

#[derive(Default, Debug)]
struct Round {
    reader_403: usize,
    reader_other: Vec<String>,
    writer_503: usize,
    writer_other: Vec<String>,
    held: usize,
    peak_kib: u64,
    after_kib: u64,
}

/// One round: 600 heads announcing 2 MB each, the answers that come, then a 1 MB part to every
/// connection, a hold, and the release.
fn attack_round(addr: SocketAddr, admin: u16, pid: u32) -> Round {
    let peak = Arc::new(AtomicU64::new(rss_kib(pid)));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(25));
            }
        })
    };
    // Heads, from six source addresses.
    let mut conns: Vec<(usize, TcpStream)> = (0..ATTACK_CONNECTIONS)
        .map(|i| {
            let source = format!("127.0.0.{}", 2 + i % SOURCES);
            let c = open_with_head(
                connect_from(&source, addr),
                "POST",
                "/s3p/immuta?delete",
                &delete_head(attacker(i), addr, HELD_LENGTH, ANY_MD5),
            );
            (i, c)
        })
        .collect();
    // The answers that come (refusals are prompt), until none came for 1.5 s (30 s at most).
    let mut round = Round::default();
    let mut answered = vec![false; ATTACK_CONNECTIONS];
    let mut buffers: Vec<Vec<u8>> = vec![Vec::new(); ATTACK_CONNECTIONS];
    let started = Instant::now();
    let mut last_news = Instant::now();
    for (_, c) in &conns {
        c.set_nonblocking(true).unwrap();
    }
    while last_news.elapsed() < Duration::from_millis(1500)
        && started.elapsed() < Duration::from_secs(30)
    {
        let mut chunk = [0u8; 4096];
        for (i, c) in conns.iter_mut() {
            if answered[*i] {
                continue;
            }
            loop {
                match c.read(&mut chunk) {
                    Ok(0) => {
                        answered[*i] = true;
                        last_news = Instant::now();
                        break;
                    }
                    Ok(n) => buffers[*i].extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        answered[*i] = true;
                        last_news = Instant::now();
                        break;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for (i, c) in &conns {
        c.set_nonblocking(false).unwrap();
        let who = attacker(*i);
        if !answered[*i] && buffers[*i].is_empty() {
            if matches!(who, Who::SigV4(READER, _)) {
                round.reader_other.push(format!("#{i}: no answer"));
            } else {
                round.held += 1;
            }
            continue;
        }
        let summary = if buffers[*i].windows(4).any(|w| w == b"\r\n\r\n") {
            let r = parse_response(&buffers[*i]);
            (r.status, code_of(&r), r.header("retry-after").is_some())
        } else {
            (0, "closed without an answer".to_string(), false)
        };
        match (who, summary) {
            (Who::SigV4(READER, _), (403, code, _)) if code == "AccessDenied" => {
                round.reader_403 += 1
            }
            (Who::SigV4(READER, _), other) => round.reader_other.push(format!("#{i}: {other:?}")),
            (_, (503, code, true)) if code == "SlowDown" => round.writer_503 += 1,
            (_, other) => round.writer_other.push(format!("#{i}: {other:?}")),
        }
    }
    // A 1 MB part of its body to every connection, from one thread per source address (a refused
    // connection is closed: its writes fail at once).
    let per_source: Vec<Vec<TcpStream>> = {
        let mut v: Vec<Vec<TcpStream>> = (0..SOURCES).map(|_| Vec::new()).collect();
        for (i, c) in conns.drain(..) {
            v[i % SOURCES].push(c);
        }
        v
    };
    let writers: Vec<_> = per_source
        .into_iter()
        .map(|mut streams| {
            std::thread::spawn(move || {
                let part = vec![b' '; ATTACK_PART];
                for c in streams.iter_mut() {
                    c.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
                    let _ = c.write_all(&part);
                }
                streams
            })
        })
        .collect();
    let conns: Vec<TcpStream> = writers
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    // Held for a while (the sampler keeps the peak).
    std::thread::sleep(Duration::from_secs(2));
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    round.peak_kib = peak.load(Ordering::Relaxed).max(rss_kib(pid));
    drop(conns);
    wait_idle(admin);
    std::thread::sleep(Duration::from_millis(500));
    round.after_kib = rss_kib(pid);
    round
}

#[test]
fn six_hundred_held_delete_bodies_stay_within_the_budget_in_memory() {
    let admin = free_port();
    // Default budget (64 MiB); slots and connection caps high enough for the 600 to reach s3p.
    let s3p = own_s3p(
        "s3p-memory",
        None,
        Some(admin),
        "max_concurrent_requests: 2048, max_concurrent_requests_per_key: 2048, max_concurrent_requests_per_client: 2048, max_connections_per_client: 2048",
    );
    let (addr, pid) = (s3p.addr(), s3p.pid());
    // Warm up (pools, allocator) before the baseline.
    for _ in 0..3 {
        let (body, md5) = small_delete_body("sandbox/mem/never-there");
        let r = send(
            addr,
            "POST",
            "/s3p/immuta?delete",
            &delete_head(SIGV4_WRITER, addr, body.len(), &md5),
            &body,
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    wait_idle(admin);
    let baseline = rss_kib(pid);
    let slowdowns_before = limit_hits(admin, "max_buffered_body_bytes");
    let budget_fits = (64usize << 20) / HELD_LENGTH;
    let mut problems = Vec::new();
    for n in 1..=2 {
        let r = attack_round(addr, admin, pid);
        let growth_mib = (r.peak_kib.saturating_sub(baseline)) as f64 / 1024.0;
        let after_mib = (r.after_kib as f64 - baseline as f64) / 1024.0;
        eprintln!(
            "round {n}: RSS {} MiB before, peak +{growth_mib:.1} MiB while holding, {after_mib:+.1} MiB after release; \
             reader 403: {}, writers 503 SlowDown: {}, writers held: {}, other: {:?} {:?}",
            baseline / 1024,
            r.reader_403,
            r.writer_503,
            r.held,
            r.reader_other.iter().take(5).collect::<Vec<_>>(),
            r.writer_other.iter().take(5).collect::<Vec<_>>(),
        );
        let readers = ATTACK_CONNECTIONS / 3;
        if growth_mib >= 128.0 {
            problems.push(format!(
                "round {n}: RSS grew by {growth_mib:.1} MiB while holding"
            ));
        }
        if after_mib >= 128.0 {
            problems.push(format!(
                "round {n}: RSS {after_mib:.1} MiB above the baseline after release"
            ));
        }
        if r.reader_403 != readers {
            problems.push(format!(
                "round {n}: {} of the read-only key's {readers} requests answered 403 AccessDenied; others: {:?}",
                r.reader_403,
                r.reader_other.iter().take(5).collect::<Vec<_>>()
            ));
        }
        if !r.writer_other.is_empty() {
            problems.push(format!(
                "round {n}: {} writers' answers other than 503 SlowDown with Retry-After: {:?}",
                r.writer_other.len(),
                r.writer_other.iter().take(5).collect::<Vec<_>>()
            ));
        }
        if r.held < 1 || r.held > budget_fits {
            problems.push(format!(
                "round {n}: {} bodies held (the budget fits {budget_fits})",
                r.held
            ));
        }
        if r.writer_503 + r.held + r.writer_other.len() != ATTACK_CONNECTIONS - readers {
            problems.push(format!("round {n}: writers' requests unaccounted for"));
        }
    }
    let hits = limit_hits(admin, "max_buffered_body_bytes") - slowdowns_before;
    if hits < 2.0 * 300.0 {
        problems.push(format!(
            "s3p_limit_hits_total{{limit=\"max_buffered_body_bytes\"}} grew by {hits} over both rounds"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------------------
// 5. CompleteMultipartUpload bodies are capped at what 10,000 parts need.

#[test]
fn a_complete_body_larger_than_ten_thousand_parts_need_is_entity_too_large() {
    let relay = Relay::start(garage_addr(), Duration::ZERO);
    let s3p = own_s3p("s3p-complete-cap", Some(relay.port), None, "");
    let addr = s3p.addr();
    let key = "slowbox/cap/complete.bin";
    let upload_id = create_upload(addr, key);
    let target = format!("/s3p/immuta/{key}?uploadId={}", percent_encode(&upload_id));
    let complete_head = |length: usize, who: Who| {
        auth_headers(
            who,
            addr,
            "POST",
            &target,
            &[("content-length", length.to_string())],
            "UNSIGNED-PAYLOAD",
        )
    };
    for who in [Who::Legacy(LEGACY_WRITER), SIGV4_WRITER] {
        for length in [MAX_COMPLETE_BODY + 1, 3_000_000, 4 << 20] {
            let before = relay.count("uploadId=");
            let started = Instant::now();
            // The head only: the answer must not wait for a body.
            let mut c = open_with_head(connect(addr), "POST", &target, &complete_head(length, who));
            let r = answer_within(&mut c, Duration::from_secs(2)).unwrap_or_else(|| {
                panic!("a Complete of {length} bytes was not refused within 2 s")
            });
            assert_eq!(r.status, 400, "{length}: {}", r.text());
            assert_eq!(code_of(&r), "EntityTooLarge", "{length}: {}", r.text());
            assert!(started.elapsed() < Duration::from_secs(2));
            assert_eq!(
                relay.count("uploadId="),
                before,
                "a Complete of {length} bytes reached the backend"
            );
        }
    }
    // At the cap itself it is not refused as too large (it waits for its body).
    let mut c = open_with_head(
        connect(addr),
        "POST",
        &target,
        &complete_head(MAX_COMPLETE_BODY, Who::Legacy(LEGACY_WRITER)),
    );
    if let Some(r) = answer_within(&mut c, Duration::from_millis(1500)) {
        assert_ne!(
            code_of(&r),
            "EntityTooLarge",
            "a Complete of exactly {MAX_COMPLETE_BODY} bytes: {}",
            r.text()
        );
    }
    drop(c);
    // The upload is still there: a part and a real completion work.
    let part = bytes(1000, 9);
    let part_target = format!(
        "/s3p/immuta/{key}?partNumber=1&uploadId={}",
        percent_encode(&upload_id)
    );
    let r = send(
        addr,
        "PUT",
        &part_target,
        &auth_headers(
            Who::Legacy(LEGACY_WRITER),
            addr,
            "PUT",
            &part_target,
            &[("content-length", part.len().to_string())],
            "UNSIGNED-PAYLOAD",
        ),
        &part,
    );
    assert_eq!(r.status, 200, "UploadPart: {}", r.text());
    let etag = r.header("etag").expect("an ETag").to_string();
    let body = format!(
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{etag}</ETag></Part></CompleteMultipartUpload>"
    );
    let r = send(
        addr,
        "POST",
        &target,
        &complete_head(body.len(), Who::Legacy(LEGACY_WRITER)),
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "Complete: {}", r.text());
    assert_eq!(backend_object(key).as_deref(), Some(&part[..]));
}

// ---------------------------------------------------------------------------------------------------
// 6. Signed chunks: integrity before anything is committed at the backend.

/// Which chunk signature of a signed-chunk body to spoil.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Spoil {
    Nothing,
    /// The final, empty chunk's.
    FinalChunk,
    /// The last chunk that carries data.
    LastDataChunk,
}

/// The head (signed by the writer, `now`) and the body of a signed-chunk PUT of `data` to `key`.
fn chunked_put(
    addr: SocketAddr,
    key: &str,
    data: &[u8],
    chunk: usize,
    spoil: Spoil,
) -> (String, Vec<(String, String)>, Vec<u8>) {
    let target = format!("/s3p/immuta/{key}");
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let date = s3p::timefmt::format_amz_date(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
    // The encoded length is known before signing: the body once with a dummy seed.
    let encoded_len = signed_chunks(WRITER_SECRET, data, chunk, &"0".repeat(64), &date).len();
    let headers = auth_headers(
        SIGV4_WRITER,
        addr,
        "PUT",
        &target,
        &[
            ("content-encoding", "aws-chunked".to_string()),
            ("content-length", encoded_len.to_string()),
            ("x-amz-decoded-content-length", data.len().to_string()),
        ],
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    );
    let auth = &headers
        .iter()
        .find(|(n, _)| n == "authorization")
        .unwrap()
        .1;
    let seed = auth.rsplit("Signature=").next().unwrap();
    let mut body = signed_chunks(WRITER_SECRET, data, chunk, seed, &date);
    let spoil_at = |body: &mut Vec<u8>, nth_from_end: usize| {
        let marker = b"chunk-signature=";
        let at: Vec<usize> = body
            .windows(marker.len())
            .enumerate()
            .filter(|(_, w)| w == marker)
            .map(|(i, _)| i + marker.len())
            .collect();
        let i = at[at.len() - 1 - nth_from_end];
        // One hex digit of the signature, changed to another.
        body[i] = if body[i] == b'0' { b'1' } else { b'0' };
    };
    match spoil {
        Spoil::Nothing => {}
        Spoil::FinalChunk => spoil_at(&mut body, 0),
        Spoil::LastDataChunk => spoil_at(&mut body, 1),
    }
    (target, headers, body)
}

fn assert_refused_as_bad_signature(r: &RawResponse, what: &str) {
    assert!(
        (r.status == 403 && code_of(r) == "SignatureDoesNotMatch") || r.status == 400,
        "{what}: {} {}",
        r.status,
        r.text()
    );
}

#[test]
fn a_zero_length_signed_chunk_upload_with_a_bad_signature_changes_nothing() {
    let addr = env().s3p.addr();
    let key = "sandbox/integrity/zero.bin";
    let original = bytes(5000, 11);
    put_direct(key, original.clone());
    for attempt in 0..20 {
        let (target, headers, body) = chunked_put(addr, key, b"", 65_536, Spoil::FinalChunk);
        let r = send(addr, "PUT", &target, &headers, &body);
        assert_refused_as_bad_signature(&r, &format!("attempt {attempt}"));
        assert_no_leak("zero-length chunked put", &r.all_bytes());
    }
    assert_unchanged(
        key,
        &original,
        "20 zero-length uploads with a bad final chunk signature",
    );
    // The body ~50 ms after the head.
    for attempt in 0..3 {
        let (target, headers, body) = chunked_put(addr, key, b"", 65_536, Spoil::FinalChunk);
        let mut c = open_with_head(connect(addr), "PUT", &target, &headers);
        std::thread::sleep(Duration::from_millis(50));
        let _ = c.write_all(&body);
        let r = answer_within(&mut c, Duration::from_secs(10)).expect("an answer");
        assert_refused_as_bad_signature(&r, &format!("late body, attempt {attempt}"));
        assert_unchanged(
            key,
            &original,
            &format!("a zero-length upload whose bad body came 50 ms late (attempt {attempt})"),
        );
    }
    // Correctly signed, the same empty upload stores an empty object.
    let (target, headers, body) = chunked_put(addr, key, b"", 65_536, Spoil::Nothing);
    let r = send(addr, "PUT", &target, &headers, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(backend_object(key).as_deref(), Some(&b""[..]));
}

#[test]
fn a_small_signed_chunk_body_is_verified_whole_before_the_backend_sees_it() {
    let addr = env().s3p.addr();
    let key = "sandbox/integrity/small.bin";
    let original = bytes(7000, 12);
    put_direct(key, original.clone());
    let data = bytes(10 * 1024, 13);
    for spoil in [Spoil::LastDataChunk, Spoil::FinalChunk] {
        for attempt in 0..5 {
            let (target, headers, body) = chunked_put(addr, key, &data, 4096, spoil);
            let r = send(addr, "PUT", &target, &headers, &body);
            assert_refused_as_bad_signature(&r, &format!("{spoil:?}, attempt {attempt}"));
            assert_unchanged(
                key,
                &original,
                &format!("a 10 KiB upload with a bad signature ({spoil:?}, attempt {attempt})"),
            );
        }
        // And with the body ~50 ms after the head.
        let (target, headers, body) = chunked_put(addr, key, &data, 4096, spoil);
        let mut c = open_with_head(connect(addr), "PUT", &target, &headers);
        std::thread::sleep(Duration::from_millis(50));
        let _ = c.write_all(&body);
        let r = answer_within(&mut c, Duration::from_secs(10)).expect("an answer");
        assert_refused_as_bad_signature(&r, &format!("{spoil:?}, late body"));
        assert_unchanged(
            key,
            &original,
            &format!("a late 10 KiB body with a bad signature ({spoil:?})"),
        );
    }
    // Correctly signed, it replaces the object.
    let (target, headers, body) = chunked_put(addr, key, &data, 4096, Spoil::Nothing);
    let r = send(addr, "PUT", &target, &headers, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(backend_object(key).as_deref(), Some(&data[..]));
}

// ---------------------------------------------------------------------------------------------------
// 7. Copy limits.

const COPY_SOURCE: &str = "slowbox/copies/source.bin";

/// A CopyObject to `slowbox/copies/<dest>` from [`COPY_SOURCE`]; returns the answer.
fn copy(addr: SocketAddr, who: Who, dest: &str) -> RawResponse {
    let target = format!("/s3p/immuta/slowbox/copies/{dest}");
    let headers = auth_headers(
        who,
        addr,
        "PUT",
        &target,
        &[("x-amz-copy-source", format!("/immuta/{COPY_SOURCE}"))],
        "UNSIGNED-PAYLOAD",
    );
    send(addr, "PUT", &target, &headers, b"")
}

/// An UploadPartCopy of the whole [`COPY_SOURCE`] as part 1 of `upload_id` (for `slowbox/copies/parts`).
fn part_copy(addr: SocketAddr, who: Who, upload_id: &str) -> RawResponse {
    let target = format!(
        "/s3p/immuta/slowbox/copies/parts?partNumber=1&uploadId={}",
        percent_encode(upload_id)
    );
    let headers = auth_headers(
        who,
        addr,
        "PUT",
        &target,
        &[("x-amz-copy-source", format!("/immuta/{COPY_SOURCE}"))],
        "UNSIGNED-PAYLOAD",
    );
    send(addr, "PUT", &target, &headers, b"")
}

fn assert_slow_down(r: &RawResponse, what: &str) {
    assert_eq!(r.status, 503, "{what}: {}", r.text());
    assert_eq!(code_of(r), "SlowDown", "{what}: {}", r.text());
    assert!(r.header("retry-after").is_some(), "{what}: no Retry-After");
}

fn small_get(addr: SocketAddr, who: Who) -> (u16, Duration) {
    let target = "/s3p/immuta/sales/seed.csv";
    let started = Instant::now();
    let r = send(
        addr,
        "GET",
        target,
        &auth_headers(who, addr, "GET", target, &[], "UNSIGNED-PAYLOAD"),
        b"",
    );
    assert_eq!(r.body, b"a,b\n1,2\n");
    (r.status, started.elapsed())
}

#[test]
fn copies_beyond_the_per_key_and_per_replica_limits_are_slowed_down() {
    // Every backend answer to a copy comes 2.5 s late, so that copies stay in flight.
    let relay = Relay::start(garage_addr(), Duration::from_millis(2500));
    let admin = free_port();
    let s3p = own_s3p(
        "s3p-copies",
        Some(relay.port),
        Some(admin),
        "max_concurrent_requests: 64, max_concurrent_copies_per_key: 1, max_concurrent_copies: 2",
    );
    let addr = s3p.addr();
    let source = bytes(64 * 1024, 21);
    put_direct(COPY_SOURCE, source.clone());
    let upload_id = create_upload(addr, "slowbox/copies/parts");

    // Per key: the writer's first copy is in flight; its next CopyObject and UploadPartCopy are refused.
    let per_key_before = limit_hits(admin, "max_concurrent_copies_per_key");
    let first = std::thread::spawn(move || {
        let started = Instant::now();
        (copy(addr, SIGV4_WRITER, "first"), started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(700));
    let started = Instant::now();
    assert_slow_down(&copy(addr, SIGV4_WRITER, "second"), "a second CopyObject");
    assert_slow_down(
        &part_copy(addr, SIGV4_WRITER, &upload_id),
        "an UploadPartCopy beside a CopyObject",
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the refusals waited"
    );
    // Other keys' small GETs are served meanwhile.
    for who in [SIGV4_READER, Who::Legacy(LEGACY_READER)] {
        let (status, took) = small_get(addr, who);
        assert_eq!(status, 200);
        assert!(took < Duration::from_secs(2), "a small GET took {took:?}");
    }
    let hits = limit_hits(admin, "max_concurrent_copies_per_key") - per_key_before;
    assert!(hits >= 2.0, "per-key copy limit hits: {hits}");
    let (r, took) = first.join().unwrap();
    assert_eq!(r.status, 200, "the copy in flight: {}", r.text());
    // The relay held it: it was in flight while the others were refused.
    assert!(
        took >= Duration::from_secs(2),
        "the first copy took {took:?}"
    );
    assert!(r.text().contains("CopyObjectResult"), "{}", r.text());
    wait_idle(admin);

    // Per replica: two keys' copies in flight; a third key's copy is refused.
    let per_replica_before = limit_hits(admin, "max_concurrent_copies");
    let held: Vec<_> = [LEGACY_WRITER, LEGACY_WRITER_2]
        .into_iter()
        .map(|k| std::thread::spawn(move || copy(addr, Who::Legacy(k), k)))
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    assert_slow_down(
        &copy(addr, SIGV4_WRITER, "third"),
        "a copy past the replica's limit",
    );
    assert!(limit_hits(admin, "max_concurrent_copies") > per_replica_before);
    let (status, _) = small_get(addr, SIGV4_READER);
    assert_eq!(status, 200);
    for t in held {
        let r = t.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    wait_idle(admin);

    // Afterwards copies succeed again, both kinds.
    let r = copy(addr, SIGV4_WRITER, "after");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = part_copy(addr, SIGV4_WRITER, &upload_id);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("CopyPartResult"), "{}", r.text());
    for dest in ["first", "after", LEGACY_WRITER, LEGACY_WRITER_2] {
        assert_eq!(
            backend_object(&format!("slowbox/copies/{dest}")).as_deref(),
            Some(&source[..]),
            "copy {dest}"
        );
    }
    for dest in ["second", "third"] {
        assert_eq!(
            backend_object(&format!("slowbox/copies/{dest}")),
            None,
            "a refused copy {dest} was made"
        );
    }
}
