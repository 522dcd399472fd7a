//! The fake Immuta governance API (tests/common/immuta.rs) speaks the documented protocol: raw HTTP/1.1 over
//! loopback sockets, no HTTP client library between the test and the bytes.

mod common;

use common::immuta::{Immuta, AUTHENTICATE, DATA_SOURCE, SIGNING_SECRET};
use common::{parse_response, RawResponse};
use serde_json::{json, Value};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

fn request_bytes(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: immuta.test\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// One request on its own connection (`Connection: close`), the whole answer read to EOF.
fn call(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawResponse {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut h = headers.to_vec();
    h.push(("Connection", "close"));
    stream
        .write_all(&request_bytes(method, target, &h, body))
        .unwrap();
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).unwrap();
    let resp = parse_response(&buf);
    let len: usize = resp.header("content-length").unwrap().parse().unwrap();
    assert_eq!(len, resp.body.len(), "Content-Length matches the body");
    resp
}

/// One answer read from a kept-alive connection, by its Content-Length.
fn read_one(stream: &mut TcpStream) -> RawResponse {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "answer cut short");
        buf.push(byte[0]);
    }
    let head = parse_response(&buf);
    let len: usize = head.header("content-length").unwrap().parse().unwrap();
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).unwrap();
    buf.extend_from_slice(&body);
    parse_response(&buf)
}

fn json_of(r: &RawResponse) -> Value {
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "{}",
        r.text()
    );
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

fn token_for(fake: &Immuta, apikey: &str) -> String {
    let r = call(
        fake.addr(),
        "POST",
        AUTHENTICATE,
        &[("Authorization", apikey)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    json_of(&r)["token"].as_str().unwrap().to_string()
}

#[test]
fn authenticates_by_header_and_by_body() {
    let fake = Immuta::start();
    assert!(fake.endpoint().starts_with("http://127.0.0.1:"));
    fake.add_key("key-a", "alice");

    let r = call(
        fake.addr(),
        "POST",
        AUTHENTICATE,
        &[("Authorization", "key-a")],
        b"",
    );
    assert_eq!(r.status, 200);
    let v = json_of(&r);
    assert_eq!(v["expiresIn"], 3600);
    let t1 = v["token"].as_str().unwrap().to_string();
    assert!(t1.len() >= 32);

    let body = br#"{"apikey": "key-a"}"#;
    let headers = [("Content-Type", "application/json")];
    let r = call(fake.addr(), "POST", AUTHENTICATE, &headers, body);
    assert_eq!(r.status, 200);
    let t2 = json_of(&r)["token"].as_str().unwrap().to_string();
    assert_ne!(t1, t2, "every token is fresh");

    for (h, b) in [
        (vec![("Authorization", "nobody")], &b""[..]),
        (vec![], &br#"{"apikey": "nobody"}"#[..]),
        (vec![], &b""[..]),
        (vec![], &b"not json"[..]),
    ] {
        let r = call(fake.addr(), "POST", AUTHENTICATE, &h, b);
        assert_eq!(r.status, 401);
        assert_eq!(json_of(&r), json!({"message": "unauthorized"}));
    }
    // GET is not the endpoint; nor is any other path.
    let auth = [("Authorization", "key-a")];
    assert_eq!(
        call(fake.addr(), "GET", AUTHENTICATE, &auth, b"").status,
        404
    );
    assert_eq!(call(fake.addr(), "GET", "/nowhere", &[], b"").status, 404);
    assert_eq!(fake.calls(AUTHENTICATE), 7);
    fake.reset_calls();
    assert_eq!(fake.calls(AUTHENTICATE), 0);
}

#[test]
fn subscriptions_page_in_both_answer_shapes() {
    let fake = Immuta::start();
    fake.add_key("key-a", "alice");
    fake.add_key("key-b", "bob");
    fake.subscribe(
        "key-a",
        "Sales Data",
        Some("WRITE"),
        Some("2026-12-31T00:00:00.000Z"),
    );
    fake.subscribe("key-a", "Data", Some("READ"), None);
    fake.subscribe("key-a", "Old Style", None, None);
    fake.subscribe("key-b", "Data", Some("WRITE"), None);
    let token = token_for(&fake, "key-a");
    let bearer = format!("Bearer {token}");

    // A kept-alive connection: three pages, one socket.
    let mut s = TcpStream::connect(fake.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut pages = Vec::new();
    for offset in [0, 2, 4] {
        let target = format!("{DATA_SOURCE}?subscription=subscribed&size=2&offset={offset}");
        s.write_all(&request_bytes(
            "GET",
            &target,
            &[("Authorization", &bearer)],
            b"",
        ))
        .unwrap();
        let r = read_one(&mut s);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("connection"), Some("keep-alive"));
        pages.push(json_of(&r));
    }
    for p in &pages {
        assert_eq!(p["count"], 3);
    }
    let hits: Vec<&Value> = pages
        .iter()
        .flat_map(|p| p["hits"].as_array().unwrap())
        .collect();
    assert_eq!(pages[0]["hits"].as_array().unwrap().len(), 2);
    assert_eq!(pages[1]["hits"].as_array().unwrap().len(), 1);
    assert_eq!(pages[2]["hits"].as_array().unwrap().len(), 0);
    assert_eq!(
        *hits[0],
        json!({"id": fake.data_source_id("Sales Data").unwrap(), "name": "Sales Data",
               "subscriptionStatus": "subscribed", "accessGrant": "WRITE",
               "expiration": "2026-12-31T00:00:00.000Z"})
    );
    assert_eq!(hits[1]["accessGrant"], "READ");
    assert!(hits[1]["expiration"].is_null());
    assert_eq!(hits[2]["name"], "Old Style");
    assert!(
        hits[2].get("accessGrant").is_none(),
        "no grant: the field is absent"
    );
    assert_eq!(fake.calls(DATA_SOURCE), 3);

    // The API key directly as Authorization; an unknown token or none is a 401.
    let r = call(
        fake.addr(),
        "GET",
        "/dataSource?subscription=subscribed",
        &[("Authorization", "key-b")],
        b"",
    );
    let v = json_of(&r);
    assert_eq!((r.status, v["count"].clone()), (200, json!(1)));
    assert_eq!(v["hits"][0]["accessGrant"], "WRITE");
    for h in [vec![("Authorization", "Bearer forged")], vec![]] {
        assert_eq!(call(fake.addr(), "GET", DATA_SOURCE, &h, b"").status, 401);
    }

    // Older versions: a bare array, still paged.
    fake.set_array_answers(true);
    let auth = [("Authorization", bearer.as_str())];
    let r = call(
        fake.addr(),
        "GET",
        "/dataSource?subscription=subscribed&size=2",
        &auth,
        b"",
    );
    let v = json_of(&r);
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v[0]["name"], "Sales Data");

    // Unsubscribed: gone at the next call.
    fake.set_array_answers(false);
    fake.unsubscribe("key-a", "Sales Data");
    let r = call(
        fake.addr(),
        "GET",
        "/dataSource?subscription=subscribed",
        &auth,
        b"",
    );
    let v = json_of(&r);
    assert_eq!(v["count"], 2);
    assert_eq!(v["hits"][0]["name"], "Data");
}

#[test]
fn revocation_refuses_the_key_and_its_tokens() {
    let fake = Immuta::start();
    fake.add_key("key-a", "alice");
    fake.subscribe("key-a", "Data", Some("READ"), None);
    let bearer = format!("Bearer {}", token_for(&fake, "key-a"));
    let target = "/dataSource?subscription=subscribed";
    assert_eq!(
        call(
            fake.addr(),
            "GET",
            target,
            &[("Authorization", &bearer)],
            b""
        )
        .status,
        200
    );

    fake.revoke_key("key-a");
    for auth in [bearer.as_str(), "key-a"] {
        assert_eq!(
            call(fake.addr(), "GET", target, &[("Authorization", auth)], b"").status,
            401
        );
    }
    let r = call(
        fake.addr(),
        "POST",
        AUTHENTICATE,
        &[("Authorization", "key-a")],
        b"",
    );
    assert_eq!(r.status, 401);

    // Expired tokens are refused too.
    fake.add_key("key-a", "alice");
    fake.set_token_ttl(Duration::ZERO);
    let bearer = format!("Bearer {}", token_for(&fake, "key-a"));
    assert_eq!(
        call(
            fake.addr(),
            "GET",
            target,
            &[("Authorization", &bearer)],
            b""
        )
        .status,
        401
    );
}

#[test]
fn signing_secret_answers_200_404_401() {
    let fake = Immuta::start_with(0, "the-service-token");
    assert_eq!(fake.service_token(), "the-service-token");
    fake.add_key("key-a", "alice");
    fake.set_signing_secret("AKIDALICE", "s3cr3t/+=", "key-a");
    let good = [("Authorization", "Bearer the-service-token")];

    let r = call(
        fake.addr(),
        "GET",
        "/s3p/v1/signing-secret?accessKeyId=AKIDALICE",
        &good,
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        json_of(&r),
        json!({"secret": "s3cr3t/+=", "apikey": "key-a"})
    );

    let r = call(
        fake.addr(),
        "GET",
        "/s3p/v1/signing-secret?accessKeyId=AKIDNOBODY",
        &good,
        b"",
    );
    assert_eq!(r.status, 404);
    for bad in [
        vec![("Authorization", "Bearer wrong")],
        vec![("Authorization", "key-a")],
        vec![],
    ] {
        let r = call(
            fake.addr(),
            "GET",
            "/s3p/v1/signing-secret?accessKeyId=AKIDALICE",
            &bad,
            b"",
        );
        assert_eq!(r.status, 401);
        assert!(!r.text().contains("s3cr3t"));
    }
    fake.revoke_key("key-a");
    let r = call(
        fake.addr(),
        "GET",
        "/s3p/v1/signing-secret?accessKeyId=AKIDALICE",
        &good,
        b"",
    );
    assert_eq!(r.status, 404, "a revoked key has no secret");
    assert_eq!(fake.calls(SIGNING_SECRET), 6);
}

#[test]
fn latency_and_failures_are_injected() {
    let fake = Immuta::start();
    fake.add_key("key-a", "alice");
    fake.set_latency(Duration::from_millis(400));
    let t = Instant::now();
    let r = call(
        fake.addr(),
        "POST",
        AUTHENTICATE,
        &[("Authorization", "key-a")],
        b"",
    );
    let took = t.elapsed();
    assert_eq!(r.status, 200);
    assert!(took >= Duration::from_millis(400), "answered in {took:?}");
    fake.set_latency(Duration::ZERO);

    for status in [500u16, 503] {
        fake.set_failure(Some(status));
        for (m, p) in [
            ("POST", AUTHENTICATE),
            ("GET", DATA_SOURCE),
            ("GET", SIGNING_SECRET),
        ] {
            let r = call(fake.addr(), m, p, &[("Authorization", "key-a")], b"");
            assert_eq!(r.status, status);
            json_of(&r);
        }
    }
    fake.set_failure(None);
    let r = call(
        fake.addr(),
        "POST",
        AUTHENTICATE,
        &[("Authorization", "key-a")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(fake.calls(AUTHENTICATE), 4);
    assert_eq!(fake.calls(DATA_SOURCE), 2);
}

fn refused(addr: SocketAddr) -> bool {
    matches!(TcpStream::connect(addr), Err(e) if e.kind() == ErrorKind::ConnectionRefused)
}

#[test]
fn stop_refuses_and_restart_serves_on_the_same_port() {
    let fake = Immuta::start();
    fake.add_key("key-a", "alice");
    let addr = fake.addr();
    // An idle kept-alive connection and one waiting on a slow answer are both closed by stop().
    let mut idle = TcpStream::connect(addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    idle.write_all(&request_bytes(
        "POST",
        AUTHENTICATE,
        &[("Authorization", "key-a")],
        b"",
    ))
    .unwrap();
    assert_eq!(read_one(&mut idle).status, 200);
    fake.set_latency(Duration::from_secs(20));
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    slow.write_all(&request_bytes(
        "POST",
        AUTHENTICATE,
        &[("Authorization", "key-a")],
        b"",
    ))
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.in_flight() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(fake.in_flight(), 1);

    let t = Instant::now();
    fake.stop();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        t.elapsed()
    );
    assert!(!fake.is_running());
    assert!(refused(addr), "stopped: connections refused");
    for s in [&mut idle, &mut slow] {
        let mut b = [0u8; 64];
        assert!(
            matches!(s.read(&mut b), Ok(0) | Err(_)),
            "connection closed by stop"
        );
    }
    assert_eq!(fake.in_flight(), 0);

    fake.set_latency(Duration::ZERO);
    fake.restart();
    assert_eq!(fake.addr(), addr);
    let r = call(
        addr,
        "POST",
        AUTHENTICATE,
        &[("Authorization", "key-a")],
        b"",
    );
    assert_eq!(r.status, 200, "the state survives a restart");

    // A fresh fake on the port of a dropped one.
    let port = fake.port();
    drop(fake);
    assert!(refused(addr));
    let again = Immuta::start_on(port);
    assert_eq!(again.port(), port);
    assert_eq!(
        call(
            addr,
            "POST",
            AUTHENTICATE,
            &[("Authorization", "key-a")],
            b""
        )
        .status,
        401
    );
}

#[test]
fn max_concurrent_counts_parallel_requests() {
    const CLIENTS: usize = 8;
    let fake = Arc::new(Immuta::start());
    fake.add_key("key-a", "alice");
    fake.set_latency(Duration::from_millis(600));
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (fake, barrier) = (fake.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                call(
                    fake.addr(),
                    "GET",
                    "/dataSource?subscription=subscribed",
                    &[("Authorization", "key-a")],
                    b"",
                )
                .status
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    assert_eq!(fake.max_concurrent(), CLIENTS);
    assert_eq!(fake.calls(DATA_SOURCE), CLIENTS);

    fake.reset_calls();
    fake.set_latency(Duration::ZERO);
    for _ in 0..3 {
        call(
            fake.addr(),
            "GET",
            DATA_SOURCE,
            &[("Authorization", "key-a")],
            b"",
        );
    }
    assert_eq!(fake.max_concurrent(), 1, "one after the other");
}

#[test]
fn garbage_is_answered_and_survived() {
    let fake = Immuta::start();
    fake.add_key("key-a", "alice");
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"garbage\r\n\r\n".to_vec(), 400),
        (b"GET /dataSource HTTP/9.9\r\n\r\n".to_vec(), 400),
        (b"GET /dataSource HTTP/1.1\r\nno colon\r\n\r\n".to_vec(), 400),
        (b"POST /bim/apikey/authenticate HTTP/1.1\r\nContent-Length: x\r\n\r\n".to_vec(), 400),
        (b"POST /bim/apikey/authenticate HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n".to_vec(), 413),
        (
            b"POST /bim/apikey/authenticate HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            501,
        ),
        ([b"GET / HTTP/1.1\r\nX: ".to_vec(), vec![b'a'; 40_000]].concat(), 431),
        (vec![0xff, 0xfe, 0, 1, 2, b'\r', b'\n', b'\r', b'\n'], 400),
    ];
    for (bytes, status) in cases {
        let mut s = TcpStream::connect(fake.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&bytes).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let r = parse_response(&buf);
        assert_eq!(
            r.status,
            status,
            "{:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(60)])
        );
        assert_eq!(r.header("connection"), Some("close"));
    }
    let r = call(
        fake.addr(),
        "POST",
        AUTHENTICATE,
        &[("Authorization", "key-a")],
        b"",
    );
    assert_eq!(r.status, 200, "still serving");
}

#[test]
fn connections_are_capped() {
    use common::immuta::MAX_CONNECTIONS;
    let fake = Immuta::start();
    fake.add_key("key-a", "alice");
    let auth = [("Authorization", "key-a")];
    let mut open = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        let mut s = TcpStream::connect(fake.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&request_bytes("POST", AUTHENTICATE, &auth, b""))
            .unwrap();
        assert_eq!(read_one(&mut s).status, 200);
        open.push(s);
    }
    let r = call(fake.addr(), "POST", AUTHENTICATE, &auth, b"");
    assert_eq!(r.status, 503, "one connection too many");
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = call(fake.addr(), "POST", AUTHENTICATE, &auth, b"");
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a closed connection frees its slot"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
