//! A fake Immuta governance API on loopback, started by the tests: the documented endpoints s3p's `http`
//! entitlement source calls, with latency, failures, subscriptions and revocations under the test's control.
//!
//! Endpoints (all JSON, HTTP/1.1, keep-alive or `Connection: close`, every answer with a Content-Length):
//! - `POST /bim/apikey/authenticate`: the API key as header `Authorization: <key>` or as body
//!   `{"apikey": "<key>"}` → 200 `{"token": "<bearer>", "expiresIn": 3600}`, or 401 for an unknown or revoked key;
//! - `GET /dataSource?subscription=subscribed&size=<n>&offset=<o>` with `Authorization: Bearer <token>` (or the
//!   API key itself as `Authorization`) → 200 `{"count": <total>, "hits": [...]}` (or a bare array, older
//!   versions), 401 for an unknown or expired token or a revoked key;
//! - `GET /s3p/v1/signing-secret?accessKeyId=<id>` with `Authorization: Bearer <service token>` → 200
//!   `{"secret": "...", "apikey": "..."}`, 404 for an id without a secret (or whose key is revoked), 401 for a
//!   wrong service token;
//! - anything else: 404.
//!
//! A revoked key's bearer tokens stop working at once (its next `/dataSource` call is a 401), like a deleted key.
//! Std threads only: one accept thread, one thread answering 503 to connections over the cap, and at most
//! [`MAX_CONNECTIONS`] connection threads. The state (keys, subscriptions, counters) survives
//! `stop()`/`restart()`; dropping the handle stops everything.
#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The paths counted by [`Immuta::calls`].
pub const AUTHENTICATE: &str = "/bim/apikey/authenticate";
pub const DATA_SOURCE: &str = "/dataSource";
pub const SIGNING_SECRET: &str = "/s3p/v1/signing-secret";

/// Open connections at once; one more is answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 256;
/// Request line plus headers.
pub const MAX_HEAD: usize = 16 * 1024;
pub const MAX_BODY: usize = 64 * 1024;
/// An idle keep-alive connection is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The default `size` of a `/dataSource` page.
const DEFAULT_PAGE: usize = 100;

/// A running (or stopped) fake. All methods take `&self` and may be called from any thread while it serves.
pub struct Immuta {
    shared: Arc<Shared>,
    port: u16,
    server: Mutex<Option<Server>>,
}

struct Shared {
    state: Mutex<State>,
    service_token: String,
}

#[derive(Clone)]
struct Key {
    user_name: String,
    revoked: bool,
}

#[derive(Clone)]
struct Subscription {
    name: String,
    grant: Option<String>,
    expiration: Option<String>,
}

struct State {
    keys: HashMap<String, Key>,
    /// Bearer token → (API key, expiry).
    tokens: HashMap<String, (String, Instant)>,
    /// API key → its subscriptions, in subscription order.
    subscriptions: HashMap<String, Vec<Subscription>>,
    /// Access key id → (secret, API key).
    secrets: HashMap<String, (String, String)>,
    /// Data source name → id, stable for the fake's life.
    ids: HashMap<String, u64>,
    token_ttl: Duration,
    latency: Duration,
    failure: Option<u16>,
    array_answers: bool,
    calls: HashMap<String, usize>,
    in_flight: usize,
    max_concurrent: usize,
}

/// One listening incarnation: its accept thread and its connections.
struct Server {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    accept: JoinHandle<()>,
    conns: Arc<Mutex<Connections>>,
}

#[derive(Default)]
struct Connections {
    next: u64,
    /// A clone of every open connection's socket, to shut it down on stop.
    open: HashMap<u64, TcpStream>,
    threads: Vec<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not make the fake unusable for the others.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// 128 random bits as hex, from std's per-process random hash keys plus a counter and the clock.
pub fn random_hex() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = String::new();
    for _ in 0..2 {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

impl Immuta {
    /// Starts on a free loopback port with a random service token.
    pub fn start() -> Immuta {
        Immuta::start_with(0, &format!("svc-{}", random_hex()))
    }

    /// Starts on `port` (e.g. the port of a fake that was dropped), with a random service token.
    pub fn start_on(port: u16) -> Immuta {
        Immuta::start_with(port, &format!("svc-{}", random_hex()))
    }

    /// Starts on `port` (0: a free one) with the given service token for `/s3p/v1/signing-secret`.
    pub fn start_with(port: u16, service_token: &str) -> Immuta {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                keys: HashMap::new(),
                tokens: HashMap::new(),
                subscriptions: HashMap::new(),
                secrets: HashMap::new(),
                ids: HashMap::new(),
                token_ttl: Duration::from_secs(3600),
                latency: Duration::ZERO,
                failure: None,
                array_answers: false,
                calls: HashMap::new(),
                in_flight: 0,
                max_concurrent: 0,
            }),
            service_token: service_token.to_string(),
        });
        let server = Server::start(port, shared.clone());
        Immuta {
            port: server.addr.port(),
            shared,
            server: Mutex::new(Some(server)),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The bearer token `/s3p/v1/signing-secret` requires.
    pub fn service_token(&self) -> String {
        self.shared.service_token.clone()
    }

    pub fn is_running(&self) -> bool {
        lock(&self.server).is_some()
    }

    /// Closes the listener and every open connection (requests being delayed are abandoned unanswered) and
    /// waits for every thread. Afterwards connections are refused. Idempotent.
    pub fn stop(&self) {
        let server = lock(&self.server).take();
        if let Some(server) = server {
            server.stop();
        }
    }

    /// Listens again on the same port, with the same state. A no-op while running.
    pub fn restart(&self) {
        let mut server = lock(&self.server);
        if server.is_none() {
            *server = Some(Server::start(self.port, self.shared.clone()));
        }
    }

    /// A known key (a revoked one is known again).
    pub fn add_key(&self, apikey: &str, user_name: &str) {
        lock(&self.shared.state).keys.insert(
            apikey.to_string(),
            Key {
                user_name: user_name.to_string(),
                revoked: false,
            },
        );
    }

    /// The key is refused from now on, and so are the bearer tokens issued for it.
    pub fn revoke_key(&self, apikey: &str) {
        let mut st = lock(&self.shared.state);
        st.keys
            .entry(apikey.to_string())
            .or_insert(Key {
                user_name: String::new(),
                revoked: true,
            })
            .revoked = true;
        st.tokens.retain(|_, (k, _)| k != apikey);
    }

    /// `/s3p/v1/signing-secret?accessKeyId=<access_key_id>` answers `{"secret": secret, "apikey": apikey}`.
    pub fn set_signing_secret(&self, access_key_id: &str, secret: &str, apikey: &str) {
        lock(&self.shared.state).secrets.insert(
            access_key_id.to_string(),
            (secret.to_string(), apikey.to_string()),
        );
    }

    pub fn remove_signing_secret(&self, access_key_id: &str) {
        lock(&self.shared.state).secrets.remove(access_key_id);
    }

    /// Subscribes the key's user to a data source (or changes the subscription's grant and expiration).
    /// `grant`: `Some("READ")`, `Some("WRITE")`, or `None` to omit `accessGrant` like older versions.
    /// `expiration`: e.g. `Some("2026-12-31T00:00:00.000Z")`, or `None` for `null`.
    pub fn subscribe(
        &self,
        apikey: &str,
        data_source_name: &str,
        grant: Option<&str>,
        expiration: Option<&str>,
    ) {
        let mut st = lock(&self.shared.state);
        if !st.ids.contains_key(data_source_name) {
            let id = st.ids.len() as u64 + 1;
            st.ids.insert(data_source_name.to_string(), id);
        }
        let sub = Subscription {
            name: data_source_name.to_string(),
            grant: grant.map(str::to_string),
            expiration: expiration.map(str::to_string),
        };
        let subs = st.subscriptions.entry(apikey.to_string()).or_default();
        match subs.iter_mut().find(|s| s.name == data_source_name) {
            Some(existing) => *existing = sub,
            None => subs.push(sub),
        }
    }

    pub fn unsubscribe(&self, apikey: &str, data_source_name: &str) {
        if let Some(subs) = lock(&self.shared.state).subscriptions.get_mut(apikey) {
            subs.retain(|s| s.name != data_source_name);
        }
    }

    /// The id `/dataSource` reports for a data source name (assigned at its first subscription).
    pub fn data_source_id(&self, data_source_name: &str) -> Option<u64> {
        lock(&self.shared.state).ids.get(data_source_name).copied()
    }

    /// Every answer (failures included) is delayed by this much.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.shared.state).latency = latency;
    }

    /// `Some(status)`: every request is answered with that status (e.g. 500, 503) and a JSON message.
    pub fn set_failure(&self, status: Option<u16>) {
        lock(&self.shared.state).failure = status;
    }

    /// `true`: `/dataSource` answers a bare JSON array of hits, like older versions.
    pub fn set_array_answers(&self, on: bool) {
        lock(&self.shared.state).array_answers = on;
    }

    /// Lifetime of the bearer tokens issued from now on (`expiresIn`); 3600 s by default.
    pub fn set_token_ttl(&self, ttl: Duration) {
        lock(&self.shared.state).token_ttl = ttl;
    }

    /// Requests received for a path (`AUTHENTICATE`, `DATA_SOURCE`, `SIGNING_SECRET`, or any other path),
    /// whatever their answer, since the last reset.
    pub fn calls(&self, path: &str) -> usize {
        lock(&self.shared.state)
            .calls
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Every request received since the last reset.
    pub fn total_calls(&self) -> usize {
        lock(&self.shared.state).calls.values().sum()
    }

    /// Zeroes the call counters and `max_concurrent` (to the number of requests being handled now).
    pub fn reset_calls(&self) {
        let mut st = lock(&self.shared.state);
        st.calls.clear();
        st.max_concurrent = st.in_flight;
    }

    /// The most requests handled at once (received, not yet answered) since the last reset.
    pub fn max_concurrent(&self) -> usize {
        lock(&self.shared.state).max_concurrent
    }

    /// Requests being handled right now.
    pub fn in_flight(&self) -> usize {
        lock(&self.shared.state).in_flight
    }
}

impl Drop for Immuta {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Server {
    fn start(port: u16, shared: Arc<Shared>) -> Server {
        // Restarting on a port just closed may race with the kernel: retry briefly.
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline && port != 0 => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("fake Immuta cannot listen on 127.0.0.1:{port}: {e}"),
            }
        };
        let addr = listener.local_addr().expect("local addr");
        let stopping = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Connections::default()));
        let accept = {
            let stopping = stopping.clone();
            let conns = conns.clone();
            std::thread::Builder::new()
                .name(format!("immuta-accept-{}", addr.port()))
                .spawn(move || accept_loop(listener, stopping, conns, shared))
                .expect("spawn accept thread")
        };
        Server {
            addr,
            stopping,
            accept,
            conns,
        }
    }

    fn stop(self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own until the accept thread has gone (and with it
        // the listener).
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.accept.is_finished() && Instant::now() < deadline {
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = self.accept.join();
        // Every connection was registered by the accept thread, which is gone: close them all.
        let threads = {
            let mut c = lock(&self.conns);
            for s in c.open.values() {
                let _ = s.shutdown(Shutdown::Both);
            }
            std::mem::take(&mut c.threads)
        };
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    stopping: Arc<AtomicBool>,
    conns: Arc<Mutex<Connections>>,
    shared: Arc<Shared>,
) {
    // Connections over the cap are answered 503 by one thread of their own, so that the accept loop never
    // waits on a client.
    let (reject, rejected) = std::sync::mpsc::sync_channel::<TcpStream>(64);
    let rejecter = {
        let stopping = stopping.clone();
        std::thread::Builder::new()
            .name("immuta-reject".into())
            .spawn(move || {
                for mut stream in rejected {
                    if stopping.load(Ordering::SeqCst) {
                        continue;
                    }
                    let _ = stream.set_write_timeout(Some(Duration::from_millis(500)));
                    let answer = Response::message(503, "too many connections");
                    let _ = stream.write_all(&render(&answer, true, false));
                    linger(&mut stream, Duration::from_millis(300));
                }
            })
            .expect("spawn reject thread")
    };
    for stream in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else {
            // EMFILE and the like: back off rather than spin.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let mut c = lock(&conns);
        c.threads.retain(|t| !t.is_finished());
        if c.open.len() >= MAX_CONNECTIONS {
            drop(c);
            // A full queue of rejections: the connection is just closed.
            let _ = reject.try_send(stream);
            continue;
        }
        let Ok(clone) = stream.try_clone() else {
            continue;
        };
        let id = c.next;
        c.next += 1;
        c.open.insert(id, clone);
        let ctx = Conn {
            shared: shared.clone(),
            stopping: stopping.clone(),
            conns: conns.clone(),
            id,
        };
        match std::thread::Builder::new()
            .name("immuta-conn".into())
            .spawn(move || ctx.serve(stream))
        {
            Ok(t) => c.threads.push(t),
            Err(_) => {
                if let Some(s) = c.open.remove(&id) {
                    let _ = s.shutdown(Shutdown::Both);
                }
            }
        }
    }
    drop(reject);
    let _ = rejecter.join();
}

struct Conn {
    shared: Arc<Shared>,
    stopping: Arc<AtomicBool>,
    conns: Arc<Mutex<Connections>>,
    id: u64,
}

impl Drop for Conn {
    fn drop(&mut self) {
        lock(&self.conns).open.remove(&self.id);
    }
}

/// Counts a request as being handled until dropped (even if the connection dies meanwhile).
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared, path: &str) -> InFlight<'a> {
        let mut st = lock(&shared.state);
        *st.calls.entry(path.to_string()).or_insert(0) += 1;
        st.in_flight += 1;
        st.max_concurrent = st.max_concurrent.max(st.in_flight);
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut st = lock(&self.0.state);
        st.in_flight = st.in_flight.saturating_sub(1);
    }
}

struct Request {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    close: bool,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

struct Response {
    status: u16,
    body: String,
}

impl Response {
    fn json(status: u16, v: serde_json::Value) -> Response {
        Response {
            status,
            body: v.to_string(),
        }
    }
    fn message(status: u16, msg: &str) -> Response {
        Response::json(status, serde_json::json!({ "message": msg }))
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn render(resp: &Response, close: bool, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        resp.status,
        reason(resp.status),
        resp.body.len()
    );
    out.push_str(if close {
        "Connection: close\r\n\r\n"
    } else {
        "Connection: keep-alive\r\n\r\n"
    });
    let mut out = out.into_bytes();
    if !head_only {
        out.extend_from_slice(resp.body.as_bytes());
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Why a request could not be read: answer this status and close, or just close.
enum ReadError {
    Closed,
    Answer(u16, &'static str),
}

impl Conn {
    fn serve(self, mut stream: TcpStream) {
        let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
        let _ = stream.set_nodelay(true);
        let mut buf: Vec<u8> = Vec::new();
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let req = match read_request(&mut stream, &mut buf) {
                Ok(r) => r,
                Err(ReadError::Closed) => return,
                Err(ReadError::Answer(status, msg)) => {
                    let _ = stream.write_all(&render(&Response::message(status, msg), true, false));
                    linger(&mut stream, Duration::from_secs(1));
                    return;
                }
            };
            let close = req.close;
            let head_only = req.method == "HEAD";
            let _guard = InFlight::enter(&self.shared, &req.path);
            let latency = lock(&self.shared.state).latency;
            if !self.sleep(latency) {
                return;
            }
            let resp = self.answer(&req);
            if stream
                .write_all(&render(&resp, close, head_only))
                .and_then(|_| stream.flush())
                .is_err()
                || close
            {
                return;
            }
        }
    }

    /// Sleeps in small steps; false if the server stopped meanwhile.
    fn sleep(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return false;
            }
            let now = Instant::now();
            if now >= end {
                return true;
            }
            std::thread::sleep((end - now).min(Duration::from_millis(10)));
        }
    }

    fn answer(&self, req: &Request) -> Response {
        let mut st = lock(&self.shared.state);
        if let Some(status) = st.failure {
            return Response::message(status, "injected failure");
        }
        match (req.method.as_str(), req.path.as_str()) {
            ("POST", AUTHENTICATE) => authenticate(&mut st, req),
            ("GET", DATA_SOURCE) => data_sources(&mut st, req),
            ("GET", SIGNING_SECRET) => signing_secret(&st, &self.shared.service_token, req),
            _ => Response::message(404, "not found"),
        }
    }
}

/// A lingering close: the answer sent, what the client still sends is read and dropped for a moment, so that
/// closing with unread input does not reset the connection before the client has read the answer.
fn linger(stream: &mut TcpStream, at_most: Duration) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let deadline = Instant::now() + at_most;
    let mut tmp = [0u8; 8192];
    let mut drained = 0usize;
    while Instant::now() < deadline && drained < (1 << 20) {
        match stream.read(&mut tmp) {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), ReadError> {
    let mut tmp = [0u8; 8192];
    match stream.read(&mut tmp) {
        Ok(0) | Err(_) => Err(ReadError::Closed),
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            Ok(())
        }
    }
}

fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Request, ReadError> {
    let head_end = loop {
        // Empty lines before a request line are ignored (RFC 9112 §2.2).
        while buf.starts_with(b"\r\n") {
            buf.drain(..2);
        }
        if let Some(p) = find(buf, b"\r\n\r\n") {
            break p;
        }
        if buf.len() > MAX_HEAD {
            return Err(ReadError::Answer(431, "request head too large"));
        }
        read_more(stream, buf)?;
    };
    if head_end > MAX_HEAD {
        return Err(ReadError::Answer(431, "request head too large"));
    }
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Err(ReadError::Answer(400, "bad request line"));
    };
    if method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !target.starts_with('/')
        || !(version == "HTTP/1.1" || version == "HTTP/1.0")
    {
        return Err(ReadError::Answer(400, "bad request line"));
    }
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(ReadError::Answer(400, "bad header line"));
        };
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(ReadError::Answer(400, "bad header name"));
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    let get = |n: &str| {
        headers
            .iter()
            .filter(|(h, _)| h.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    if !get("transfer-encoding").is_empty() {
        return Err(ReadError::Answer(501, "only Content-Length bodies"));
    }
    let lengths = get("content-length");
    let len = match lengths.first() {
        None => 0,
        Some(first) => {
            if lengths.iter().any(|l| l != first) {
                return Err(ReadError::Answer(400, "conflicting Content-Length"));
            }
            if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ReadError::Answer(400, "bad Content-Length"));
            }
            match first.parse::<usize>() {
                Ok(n) if n <= MAX_BODY => n,
                _ => return Err(ReadError::Answer(413, "body too large")),
            }
        }
    };
    let connection = get("connection").join(",").to_ascii_lowercase();
    let close = if version == "HTTP/1.0" {
        !connection.contains("keep-alive")
    } else {
        connection.split(',').any(|t| t.trim() == "close")
    };
    let expect_continue = get("expect")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("100-continue"));
    let total = head_end + 4 + len;
    if buf.len() < total && expect_continue {
        let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    while buf.len() < total {
        read_more(stream, buf)?;
    }
    let body = buf[head_end + 4..total].to_vec();
    buf.drain(..total);
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (decode(n), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect();
    Ok(Request {
        method: method.to_string(),
        path: path.to_string(),
        query,
        headers,
        body,
        close,
    })
}

/// Percent-decoding of a query component (`+` is a space), lossy on bad UTF-8.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn key_ok(st: &State, apikey: &str) -> bool {
    st.keys.get(apikey).is_some_and(|k| !k.revoked)
}

fn authenticate(st: &mut State, req: &Request) -> Response {
    let from_header = req
        .header("authorization")
        .filter(|v| !v.is_empty())
        .map(str::to_string);
    let from_body = || {
        serde_json::from_slice::<serde_json::Value>(&req.body)
            .ok()
            .and_then(|v| v.get("apikey").and_then(|k| k.as_str()).map(str::to_string))
    };
    let Some(apikey) = from_header.or_else(from_body) else {
        return Response::message(401, "unauthorized");
    };
    if !key_ok(st, &apikey) {
        return Response::message(401, "unauthorized");
    }
    let token = random_hex();
    let ttl = st.token_ttl;
    st.tokens
        .insert(token.clone(), (apikey, Instant::now() + ttl));
    Response::json(
        200,
        serde_json::json!({ "token": token, "expiresIn": ttl.as_secs() }),
    )
}

/// The API key behind an `Authorization` header: a live bearer token of a live key, or a live key itself.
fn caller(st: &mut State, req: &Request) -> Option<String> {
    let auth = req.header("authorization")?;
    let now = Instant::now();
    st.tokens.retain(|_, (_, exp)| *exp > now);
    let apikey = match auth.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            st.tokens.get(token.trim())?.0.clone()
        }
        _ => auth.to_string(),
    };
    key_ok(st, &apikey).then_some(apikey)
}

fn data_sources(st: &mut State, req: &Request) -> Response {
    let Some(apikey) = caller(st, req) else {
        return Response::message(401, "unauthorized");
    };
    let parse = |name: &str, default: usize| match req.param(name) {
        None | Some("") => Some(default),
        Some(v) => v.parse::<usize>().ok(),
    };
    let (Some(size), Some(offset)) = (parse("size", DEFAULT_PAGE), parse("offset", 0)) else {
        return Response::message(400, "bad size or offset");
    };
    // The fake knows subscribed data sources only: any other subscription filter finds none.
    let subs: Vec<Subscription> = match req.param("subscription") {
        None | Some("subscribed") => st.subscriptions.get(&apikey).cloned().unwrap_or_default(),
        Some(_) => Vec::new(),
    };
    let count = subs.len();
    let hits: Vec<serde_json::Value> = subs
        .iter()
        .skip(offset)
        .take(size)
        .map(|s| {
            let mut hit = serde_json::json!({
                "id": st.ids.get(&s.name).copied().unwrap_or(0),
                "name": s.name,
                "subscriptionStatus": "subscribed",
                "expiration": s.expiration,
            });
            if let Some(g) = &s.grant {
                hit["accessGrant"] = serde_json::Value::from(g.as_str());
            }
            hit
        })
        .collect();
    if st.array_answers {
        Response::json(200, serde_json::Value::from(hits))
    } else {
        Response::json(200, serde_json::json!({ "count": count, "hits": hits }))
    }
}

fn signing_secret(st: &State, service_token: &str, req: &Request) -> Response {
    let authorized = req
        .header("authorization")
        .and_then(|a| a.split_once(' '))
        .is_some_and(|(scheme, t)| {
            scheme.eq_ignore_ascii_case("bearer") && t.trim() == service_token
        });
    if !authorized {
        return Response::message(401, "unauthorized");
    }
    let Some(id) = req.param("accessKeyId").filter(|i| !i.is_empty()) else {
        return Response::message(400, "accessKeyId is required");
    };
    match st.secrets.get(id) {
        Some((secret, apikey)) if !st.keys.get(apikey).is_some_and(|k| k.revoked) => {
            Response::json(
                200,
                serde_json::json!({ "secret": secret, "apikey": apikey }),
            )
        }
        _ => Response::message(404, "not found"),
    }
}
