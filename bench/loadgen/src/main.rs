//! s3p-loadgen: the benchmark's own HTTP/1.1 keep-alive client, for what wrk cannot do: sign every
//! request with SigV4 (aws-sigv4, the same crate s3p uses), presign URL pools for wrk, walk paginated
//! listings and seed Garage. Blocking std TCP, one thread per connection; every loop is bounded in time
//! or count. Results are one JSON object on stdout.
//!
//! ```text
//! s3p-loadgen presign --host H --key K --secret S [--region R] [--expires 3600] [--method GET] --count N  < paths > urls
//! s3p-loadgen get     --host H --paths FILE --conns C --duration SECS [--sign header --key K --secret S]
//! s3p-loadgen list    --host H --path /bucket --key K --secret S [--region R] [--max-keys 1000] [--walks N]
//!                     [--encoding-type url] [--resume token|start-after]
//! s3p-loadgen put     --host H --path /bucket --prefix P --count N [--size B] [--conns C] --key K --secret S
//! ```
//! `--host` is `127.0.0.1:port` (also the signed Host header). Paths are already percent-encoded.

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
    SignatureLocation, SigningSettings, UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

// ---------- arguments ----------

struct Args(HashMap<String, String>);

impl Args {
    fn parse(list: &[String]) -> Args {
        let mut map = HashMap::new();
        let mut it = list.iter();
        while let Some(a) = it.next() {
            let name = a
                .strip_prefix("--")
                .unwrap_or_else(|| die(&format!("unexpected argument {a}")));
            let value = it
                .next()
                .unwrap_or_else(|| die(&format!("--{name} needs a value")));
            map.insert(name.to_string(), value.clone());
        }
        Args(map)
    }
    fn get(&self, name: &str) -> String {
        self.0
            .get(name)
            .cloned()
            .unwrap_or_else(|| die(&format!("--{name} is required")))
    }
    fn or(&self, name: &str, default: &str) -> String {
        self.0.get(name).cloned().unwrap_or_else(|| default.into())
    }
    fn num<T: std::str::FromStr>(&self, name: &str, default: &str) -> T {
        self.or(name, default)
            .parse()
            .unwrap_or_else(|_| die(&format!("--{name}: not a number")))
    }
}

fn die(msg: &str) -> ! {
    eprintln!("s3p-loadgen: {msg}");
    std::process::exit(2)
}

// ---------- signing ----------

#[derive(Clone)]
struct Signer {
    identity: Identity,
    region: String,
}

impl Signer {
    fn new(key: &str, secret: &str, region: &str) -> Signer {
        Signer {
            identity: Credentials::new(key, secret, None, None, "s3p-loadgen").into(),
            region: region.to_string(),
        }
    }

    fn settings(&self) -> SigningSettings {
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings
    }

    fn run(
        &self,
        settings: SigningSettings,
        method: &str,
        host: &str,
        path_and_query: &str,
        time: SystemTime,
    ) -> (Vec<(String, String)>, Vec<(String, String)>) {
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name("s3")
            .time(time)
            .settings(settings)
            .build()
            .expect("signing params")
            .into();
        let signable = SignableRequest::new(
            method,
            path_and_query,
            std::iter::once(("host", host)),
            SignableBody::UnsignedPayload,
        )
        .expect("signable request");
        let (instructions, _) = sign(signable, &params).expect("sign").into_parts();
        let (headers, query) = instructions.into_parts();
        (
            headers
                .into_iter()
                .map(|h| (h.name().to_string(), h.value().to_string()))
                .collect(),
            query
                .into_iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// `Authorization`, `x-amz-date` and `x-amz-content-sha256` for one request, signed now.
    fn headers(&self, method: &str, host: &str, path_and_query: &str) -> Vec<(String, String)> {
        let mut s = self.settings();
        s.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        self.run(s, method, host, path_and_query, SystemTime::now()).0
    }

    /// A presigned path and query for `method`.
    fn presign(
        &self,
        method: &str,
        host: &str,
        path: &str,
        expires: Duration,
        time: SystemTime,
    ) -> String {
        let mut s = self.settings();
        s.signature_location = SignatureLocation::QueryParams;
        s.expires_in = Some(expires);
        let (_, query) = self.run(s, method, host, path, time);
        let qs: Vec<String> = query
            .iter()
            .map(|(n, v)| format!("{}={}", encode(n), encode(v)))
            .collect();
        format!("{path}?{}", qs.join("&"))
    }
}

/// Percent-encoding of everything but RFC 3986 unreserved characters (SigV4 canonical form).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------- a minimal HTTP/1.1 keep-alive client ----------

struct Response {
    status: u16,
    body_len: u64,
    body: Vec<u8>,
}

struct Conn {
    addr: SocketAddr,
    timeout: Duration,
    stream: Option<BufReader<TcpStream>>,
    scratch: Vec<u8>,
    /// Connections opened (1 = all requests on one keep-alive connection).
    opened: u64,
}

impl Conn {
    fn new(addr: SocketAddr, timeout: Duration) -> Conn {
        Conn {
            addr,
            timeout,
            stream: None,
            scratch: vec![0; 256 * 1024],
            opened: 0,
        }
    }

    fn connect(&mut self) -> io::Result<()> {
        let s = TcpStream::connect_timeout(&self.addr, self.timeout)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(self.timeout))?;
        s.set_write_timeout(Some(self.timeout))?;
        self.stream = Some(BufReader::with_capacity(64 * 1024, s));
        self.opened += 1;
        Ok(())
    }

    /// Sends one request (head and body) and reads the whole response. A request on a reused connection
    /// that fails before any response byte is retried once on a fresh connection.
    fn exchange(&mut self, head: &[u8], body: &[u8], keep_body: bool) -> io::Result<Response> {
        let reused = self.stream.is_some();
        match self.try_exchange(head, body, keep_body) {
            Err(e) if reused && e.kind() != io::ErrorKind::TimedOut => {
                self.stream = None;
                self.try_exchange(head, body, keep_body)
            }
            r => r,
        }
    }

    fn try_exchange(&mut self, head: &[u8], body: &[u8], keep_body: bool) -> io::Result<Response> {
        if self.stream.is_none() {
            self.connect()?;
        }
        let r = self.io(head, body, keep_body);
        if r.is_err() {
            self.stream = None;
        }
        r
    }

    fn io(&mut self, head: &[u8], body: &[u8], keep_body: bool) -> io::Result<Response> {
        let reader = self.stream.as_mut().expect("connected");
        {
            let w = reader.get_mut();
            if body.is_empty() {
                w.write_all(head)?;
            } else {
                let mut all = Vec::with_capacity(head.len() + body.len());
                all.extend_from_slice(head);
                all.extend_from_slice(body);
                w.write_all(&all)?;
            }
        }
        let mut line = Vec::with_capacity(256);
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
        }
        let status: u16 = std::str::from_utf8(&line)
            .ok()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad status line"))?;
        let mut content_length: Option<u64> = None;
        let mut chunked = false;
        let mut close = false;
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "cut headers"));
            }
            let l = std::str::from_utf8(&line).unwrap_or("").trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((n, v)) = l.split_once(':') {
                let v = v.trim();
                if n.eq_ignore_ascii_case("content-length") {
                    content_length = v.parse().ok();
                } else if n.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = v.to_ascii_lowercase().contains("chunked");
                } else if n.eq_ignore_ascii_case("connection") {
                    close = v.eq_ignore_ascii_case("close");
                }
            }
        }
        let mut out = Vec::new();
        let mut total = 0u64;
        let scratch = &mut self.scratch;
        let mut take = |reader: &mut BufReader<TcpStream>, mut n: u64| -> io::Result<()> {
            while n > 0 {
                let want = n.min(scratch.len() as u64) as usize;
                let got = reader.read(&mut scratch[..want])?;
                if got == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "cut body"));
                }
                if keep_body {
                    out.extend_from_slice(&scratch[..got]);
                }
                n -= got as u64;
                total += got as u64;
            }
            Ok(())
        };
        if chunked {
            loop {
                line.clear();
                reader.read_until(b'\n', &mut line)?;
                let size_text = std::str::from_utf8(&line).unwrap_or("").trim();
                let size = u64::from_str_radix(size_text.split(';').next().unwrap_or(""), 16)
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk"))?;
                if size == 0 {
                    // Trailers, then the empty line.
                    loop {
                        line.clear();
                        reader.read_until(b'\n', &mut line)?;
                        if line == b"\r\n" || line.is_empty() {
                            break;
                        }
                    }
                    break;
                }
                take(reader, size)?;
                line.clear();
                reader.read_until(b'\n', &mut line)?;
            }
        } else if let Some(n) = content_length {
            take(reader, n)?;
        } else if status != 204 && status != 304 {
            // Body until close.
            take(reader, u64::MAX).or_else(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    Ok(())
                } else {
                    Err(e)
                }
            })?;
            close = true;
        }
        if close {
            self.stream = None;
        }
        Ok(Response {
            status,
            body_len: total,
            body: out,
        })
    }
}

fn resolve(host: &str) -> SocketAddr {
    host.parse()
        .unwrap_or_else(|_| die(&format!("--host must be ip:port, not {host}")))
}

fn request_head(method: &str, host: &str, pq: &str, headers: &[(String, String)]) -> Vec<u8> {
    let mut h = format!("{method} {pq} HTTP/1.1\r\nHost: {host}\r\n");
    for (n, v) in headers {
        h.push_str(n);
        h.push_str(": ");
        h.push_str(v);
        h.push_str("\r\n");
    }
    h.push_str("\r\n");
    h.into_bytes()
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn signer_from(args: &Args, default_region: &str) -> Signer {
    Signer::new(
        &args.get("key"),
        &args.get("secret"),
        &args.or("region", default_region),
    )
}

// ---------- subcommands ----------

fn presign(args: &Args) {
    let host = args.get("host");
    let method = args.or("method", "GET");
    let signer = signer_from(args, "us-east-1");
    let expires = Duration::from_secs(args.num("expires", "3600"));
    let count: usize = args.num("count", "1000");
    let paths: Vec<String> = io::stdin()
        .lock()
        .lines()
        .map(|l| l.expect("stdin"))
        .filter(|l| !l.is_empty())
        .collect();
    if paths.is_empty() {
        die("no paths on stdin");
    }
    let now = SystemTime::now();
    let mut out = io::BufWriter::new(io::stdout().lock());
    for i in 0..count {
        // Every URL distinct: same path again only with another signing second.
        let time = now - Duration::from_secs((i / paths.len()) as u64);
        writeln!(
            out,
            "{}",
            signer.presign(&method, &host, &paths[i % paths.len()], expires, time)
        )
        .expect("stdout");
    }
}

fn get(args: &Args) {
    let host = args.get("host");
    let addr = resolve(&host);
    let conns: usize = args.num("conns", "16");
    let duration = Duration::from_secs_f64(args.num("duration", "5"));
    let timeout = Duration::from_secs_f64(args.num("timeout", "30"));
    let sign_mode = args.or("sign", "none");
    let signer = match sign_mode.as_str() {
        "none" => None,
        "header" => Some(signer_from(args, "us-east-1")),
        other => die(&format!("--sign none|header, not {other}")),
    };
    let paths: Arc<Vec<String>> = Arc::new(
        std::fs::read_to_string(args.get("paths"))
            .unwrap_or_else(|e| die(&format!("--paths: {e}")))
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
    );
    if paths.is_empty() {
        die("--paths file is empty");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + duration;
    let handles: Vec<_> = (0..conns)
        .map(|t| {
            let (paths, host, signer, stop) =
                (paths.clone(), host.clone(), signer.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut conn = Conn::new(addr, timeout);
                let mut lat: Vec<u32> = Vec::with_capacity(1 << 16);
                let (mut bytes, mut io_errors, mut status_errors) = (0u64, 0u64, 0u64);
                let mut i = t * paths.len() / conns.max(1);
                while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                    let pq = &paths[i % paths.len()];
                    i += 1;
                    let headers = match &signer {
                        Some(s) => s.headers("GET", &host, pq),
                        None => Vec::new(),
                    };
                    let head = request_head("GET", &host, pq, &headers);
                    // Latency is the server's: signing happens before the clock starts.
                    let t0 = Instant::now();
                    match conn.exchange(&head, &[], false) {
                        Ok(r) => {
                            lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                            bytes += r.body_len;
                            if !(200..300).contains(&r.status) {
                                status_errors += 1;
                                if status_errors == 1 {
                                    eprintln!("s3p-loadgen: {pq}: status {}", r.status);
                                }
                            }
                        }
                        Err(e) => {
                            io_errors += 1;
                            if io_errors == 1 {
                                eprintln!("s3p-loadgen: {pq}: {e}");
                            }
                            if io_errors > 1000 {
                                break;
                            }
                        }
                    }
                }
                (lat, bytes, io_errors, status_errors, conn.opened)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let (mut bytes, mut io_errors, mut status_errors, mut opened) = (0u64, 0u64, 0u64, 0u64);
    for h in handles {
        let (l, b, e, s, o) = h.join().expect("worker");
        lat.extend(l);
        bytes += b;
        io_errors += e;
        status_errors += s;
        opened += o;
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    let n = lat.len() as f64;
    let mean = if lat.is_empty() {
        0.0
    } else {
        lat.iter().map(|&x| x as f64).sum::<f64>() / n
    };
    println!(
        "{{\"requests\":{},\"bytes\":{},\"duration_s\":{:.3},\"rps\":{:.1},\"mb_s\":{:.2},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"max_us\":{},\"mean_us\":{:.1},\"io_errors\":{},\"status_errors\":{},\"connections_opened\":{}}}",
        lat.len(),
        bytes,
        elapsed,
        n / elapsed,
        bytes as f64 / elapsed / 1e6,
        percentile(&lat, 50.0),
        percentile(&lat, 90.0),
        percentile(&lat, 99.0),
        lat.last().copied().unwrap_or(0),
        mean,
        io_errors,
        status_errors,
        opened
    );
}

/// The text of `<tag>...</tag>` after XML unescaping, if present.
/// `%XX` sequences decoded (keys listed with `encoding-type=url`).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn xml_value(body: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&close)? + start;
    Some(
        body[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

fn list(args: &Args) {
    let host = args.get("host");
    let addr = resolve(&host);
    let path = args.get("path");
    let signer = signer_from(args, "us-east-1");
    let max_keys: usize = args.num("max-keys", "1000");
    let walks: usize = args.num("walks", "1");
    // `--encoding-type url` asks for URL-encoded keys, as s3p asks its backends.
    let encoding = args.0.get("encoding-type").cloned();
    // `--resume start-after` resumes each page after the last key instead of with the token.
    let by_start_after = args.or("resume", "token") == "start-after";
    let timeout = Duration::from_secs_f64(args.num("timeout", "60"));
    let mut conn = Conn::new(addr, timeout);
    let mut times = Vec::new();
    let mut pages_per_walk = 0;
    let mut keys_per_walk = 0;
    for _ in 0..walks {
        let t0 = Instant::now();
        let mut token: Option<String> = None;
        let mut last_key = String::new();
        let (mut pages, mut keys) = (0usize, 0usize);
        loop {
            let mut q = vec![
                ("list-type".to_string(), "2".to_string()),
                ("max-keys".to_string(), max_keys.to_string()),
            ];
            match (&token, by_start_after) {
                (Some(t), false) => q.push(("continuation-token".into(), t.clone())),
                (Some(_), true) => q.push(("start-after".into(), last_key.clone())),
                (None, _) => {}
            }
            if let Some(e) = &encoding {
                q.push(("encoding-type".into(), e.clone()));
            }
            q.sort();
            let qs: Vec<String> = q
                .iter()
                .map(|(n, v)| format!("{n}={}", encode(v)))
                .collect();
            let pq = format!("{path}?{}", qs.join("&"));
            let headers = signer.headers("GET", &host, &pq);
            let head = request_head("GET", &host, &pq, &headers);
            let r = conn
                .exchange(&head, &[], true)
                .unwrap_or_else(|e| die(&format!("listing {pq}: {e}")));
            let body = String::from_utf8_lossy(&r.body);
            if r.status != 200 {
                die(&format!("listing {pq}: status {}: {body}", r.status));
            }
            pages += 1;
            keys += body.matches("<Key>").count();
            token = xml_value(&body, "NextContinuationToken");
            if let Some(i) = body.rfind("<Key>") {
                last_key = xml_value(&body[i..], "Key").unwrap_or_default();
                if encoding.is_some() {
                    last_key = percent_decode(&last_key);
                }
            }
            if xml_value(&body, "IsTruncated").as_deref() != Some("true") || token.is_none() {
                break;
            }
            if pages > 100_000 {
                die("listing does not end");
            }
        }
        times.push(t0.elapsed().as_secs_f64());
        pages_per_walk = pages;
        keys_per_walk = keys;
    }
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = sorted[sorted.len() / 2];
    let walks_json: Vec<String> = times.iter().map(|t| format!("{t:.4}")).collect();
    println!(
        "{{\"walks\":[{}],\"median_s\":{:.4},\"min_s\":{:.4},\"pages\":{},\"keys\":{},\"connections_opened\":{}}}",
        walks_json.join(","),
        median,
        sorted[0],
        pages_per_walk,
        keys_per_walk,
        conn.opened
    );
}

fn put(args: &Args) {
    let host = args.get("host");
    let addr = resolve(&host);
    let path = args.get("path");
    let prefix = args.or("prefix", "");
    let count: usize = args.num("count", "1000");
    let size: usize = args.num("size", "16");
    let conns: usize = args.num("conns", "8");
    let signer = signer_from(args, "us-east-1");
    let started = Instant::now();
    let handles: Vec<_> = (0..conns)
        .map(|t| {
            let (host, path, prefix, signer) =
                (host.clone(), path.clone(), prefix.clone(), signer.clone());
            std::thread::spawn(move || {
                let mut conn = Conn::new(addr, Duration::from_secs(60));
                for i in (t..count).step_by(conns) {
                    let key = format!("{prefix}{i:06}");
                    let body = vec![b'a' + (i % 26) as u8; size];
                    let pq = format!("{path}/{}", encode(&key).replace("%2F", "/"));
                    for attempt in 1.. {
                        let mut headers = signer.headers("PUT", &host, &pq);
                        headers.push(("Content-Length".into(), size.to_string()));
                        let head = request_head("PUT", &host, &pq, &headers);
                        match conn.exchange(&head, &body, true) {
                            Ok(r) if r.status == 200 => break,
                            Ok(r) => die(&format!(
                                "PUT {pq}: status {}: {}",
                                r.status,
                                String::from_utf8_lossy(&r.body)
                            )),
                            Err(e) if attempt >= 3 => die(&format!("PUT {pq}: {e}")),
                            Err(_) => std::thread::sleep(Duration::from_millis(200)),
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("worker");
    }
    println!(
        "{{\"put\":{},\"seconds\":{:.3}}}",
        count,
        started.elapsed().as_secs_f64()
    );
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = argv.split_first() else {
        die("usage: s3p-loadgen presign|get|list|put --option value ...");
    };
    let args = Args::parse(rest);
    match cmd.as_str() {
        "presign" => presign(&args),
        "get" => get(&args),
        "list" => list(&args),
        "put" => put(&args),
        other => die(&format!("unknown command {other}")),
    }
}
