//! The connection caps and the one admission of a new client connection ([`admit`]), whether it comes
//! in plain ([`super::GuardedApp`]) or is about to start a TLS handshake ([`super::TlsGuard`]): its PROXY
//! header read, its place taken in the counts in all and per client, or its refusal counted (and answered
//! where an answer is possible).

use super::answer::raw_error;
use crate::client_addr::{client_network, is_trusted};
use crate::config::Config;
use crate::error::S3Error;
use crate::proxy_protocol::{Parse, ProxyHeader};
use crate::server::metrics::Metrics;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// Open client connections, in all and per client network.
#[derive(Default)]
pub struct ConnectionLimits {
    total: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
}

/// A connection's place in the counts; dropped with the connection.
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    client: Option<IpAddr>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.limits.total.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.client {
            let mut map = self.limits.per_client.lock().unwrap();
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionRefusal {
    Total,
    PerClient,
}

impl ConnectionLimits {
    /// Takes a place for a connection from `client` (`None`: counted only in the total, as for a trusted
    /// proxy, which carries many clients).
    pub fn enter(
        self: &Arc<Self>,
        client: Option<IpAddr>,
        max_total: usize,
        max_per_client: usize,
    ) -> Result<ConnectionSlot, ConnectionRefusal> {
        if self.total.fetch_add(1, Ordering::Relaxed) >= max_total {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(ConnectionRefusal::Total);
        }
        let client = client.map(client_network);
        if let Some(ip) = client {
            let mut map = self.per_client.lock().unwrap();
            let n = map.entry(ip).or_default();
            if *n >= max_per_client {
                drop(map);
                self.total.fetch_sub(1, Ordering::Relaxed);
                return Err(ConnectionRefusal::PerClient);
            }
            *n += 1;
        }
        Ok(ConnectionSlot {
            limits: self.clone(),
            client,
        })
    }

    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

impl ConnectionRefusal {
    /// The limit it is counted under in `s3p_limit_hits_total`.
    fn limit(self) -> &'static str {
        match self {
            ConnectionRefusal::Total => "max_connections",
            ConnectionRefusal::PerClient => "max_connections_per_client",
        }
    }

    /// The message of the 503 SlowDown a refused connection is answered with.
    fn message(self) -> &'static str {
        match self {
            ConnectionRefusal::Total => "Too many connections; retry later.",
            ConnectionRefusal::PerClient => "Too many connections from this client; retry later.",
        }
    }
}

/// Where a connection stands when it is admitted, which decides whether its PROXY header is still to be
/// read and whether a refusal can be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// A TCP connection before its TLS handshake ([`super::TlsGuard`]): its PROXY header comes first; no
    /// answer is possible before the handshake, so a refused connection is only closed.
    BeforeTls,
    /// A plain connection: its PROXY header, then HTTP.
    Plain,
    /// A TLS connection after its handshake that [`super::TlsGuard`] no longer holds a place for: its
    /// PROXY header was read before the handshake.
    AfterTls,
}

impl Stage {
    fn reads_proxy_header(self) -> bool {
        matches!(self, Stage::BeforeTls | Stage::Plain)
    }

    fn can_answer(self) -> bool {
        !matches!(self, Stage::BeforeTls)
    }
}

/// Why [`admit`] turned a connection away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NotAdmitted {
    /// No valid PROXY header in time, or one from a peer not trusted to send it.
    ProxyHeader,
    /// Over a connection cap.
    Cap(ConnectionRefusal),
}

impl NotAdmitted {
    /// Why, in the words of the error handed to pingora before a TLS handshake.
    pub(super) fn reason(self) -> &'static str {
        match self {
            NotAdmitted::ProxyHeader => "no valid PROXY header",
            NotAdmitted::Cap(ConnectionRefusal::Total) => "too many connections",
            NotAdmitted::Cap(ConnectionRefusal::PerClient) => {
                "too many connections from this client"
            }
        }
    }
}

/// A connection let in: its place in the counts, and the client its PROXY header named.
pub(super) struct Admitted {
    pub slot: ConnectionSlot,
    pub proxied: Option<SocketAddr>,
}

/// Lets a new client connection in, or not (`peer`: the address it comes from):
/// - on a PROXY protocol listener, the header names the client; only trusted proxies may send it, and it
///   must arrive within `header_timeout_ms`;
/// - the connection takes its place in the counts, in all and for its client (the PROXY header's, else
///   the peer);
/// - a refused connection is counted under its limit in `s3p_limit_hits_total` and, where the stage
///   allows an answer, gets a 503 SlowDown; the caller then closes it.
pub(super) async fn admit<S>(
    stream: &mut S,
    peer: Option<IpAddr>,
    stage: Stage,
    config: &Config,
    metrics: &Metrics,
    connections: &Arc<ConnectionLimits>,
) -> Result<Admitted, NotAdmitted>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let limits = &config.limits;
    // On a PROXY protocol listener, the header names the client; only trusted proxies may send it.
    let mut proxied = None;
    if config.proxy_protocol && stage.reads_proxy_header() {
        let trusted = peer.is_some_and(|ip| is_trusted(&config.trusted_proxies, ip));
        let header = if trusted {
            let deadline = Duration::from_millis(limits.header_timeout_ms);
            tokio::time::timeout(deadline, read_proxy_header(stream)).await
        } else {
            Ok(Err(()))
        };
        match header {
            Ok(Ok(ProxyHeader::Client(addr))) => proxied = Some(addr),
            Ok(Ok(ProxyHeader::Unknown)) => {}
            _ => {
                metrics.limit_hit("proxy_protocol");
                return Err(NotAdmitted::ProxyHeader);
            }
        }
    }
    // A trusted proxy carries many clients: counted only in the total.
    let client = proxied
        .map(|a| a.ip())
        .or(peer)
        .filter(|ip| !is_trusted(&config.trusted_proxies, *ip));
    match connections.enter(
        client,
        limits.max_connections,
        limits.max_connections_per_client,
    ) {
        Ok(slot) => Ok(Admitted { slot, proxied }),
        Err(refusal) => {
            metrics.limit_hit(refusal.limit());
            if stage.can_answer() {
                use tokio::io::AsyncWriteExt;
                let answer = raw_error(S3Error::slow_down(refusal.message(), 1));
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), stream.write_all(&answer)).await;
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.flush()).await;
                linger(stream).await;
            }
            Err(NotAdmitted::Cap(refusal))
        }
    }
}

/// A lingering close: the answer's end is signalled (FIN), then what the client still sends (its
/// request, written before it read the answer) is read and dropped for a moment. Closing with unread
/// bytes would reset the connection, and a reset can destroy the answer before the client reads it.
/// Bounded in time and bytes: a refused connection costs little more than its answer.
/// Refused connections a replica lingers over at once; past it a refused connection is closed at once,
/// so that a flood of connections over the caps cannot hold sockets for the linger time each.
const MAX_LINGERING: usize = 256;
static LINGERING: AtomicUsize = AtomicUsize::new(0);

/// A refused connection's place among those lingering; dropping it gives the place back.
struct Lingering;

impl Lingering {
    fn enter() -> Option<Lingering> {
        if LINGERING.fetch_add(1, Ordering::Relaxed) >= MAX_LINGERING {
            LINGERING.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Lingering)
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        LINGERING.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn linger<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const LINGER: Duration = Duration::from_millis(500);
    const MAX_DRAINED: usize = 64 * 1024;
    let Some(_place) = Lingering::enter() else {
        return;
    };
    let _ = tokio::time::timeout(LINGER, stream.shutdown()).await;
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut drained = 0;
        while drained < MAX_DRAINED {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// The peer's IP address, as a connection's socket digest has it.
pub(super) fn peer_ip(digest: Option<Arc<pingora::protocols::SocketDigest>>) -> Option<IpAddr> {
    digest.and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()))
}

/// The socket as a PROXY header describes it: the client it names as the peer, the local address kept.
pub(super) fn proxied_digest(
    fd: std::os::fd::RawFd,
    client: std::net::SocketAddr,
    local: Option<pingora::protocols::l4::socket::SocketAddr>,
) -> pingora::protocols::SocketDigest {
    let digest = pingora::protocols::SocketDigest::from_raw_fd(fd);
    let _ = digest
        .peer_addr
        .set(Some(pingora::protocols::l4::socket::SocketAddr::Inet(
            client,
        )));
    let _ = digest.local_addr.set(local);
    let _ = digest.original_dst.set(None);
    digest
}

/// Reads a PROXY protocol header, and not one byte more (what follows is the client's request, or its
/// TLS handshake): a v2 header by its length, a v1 header byte by byte up to its line end.
async fn read_proxy_header<S: AsyncRead + Unpin>(stream: &mut S) -> Result<ProxyHeader, ()> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::with_capacity(64);
    loop {
        let want = match crate::proxy_protocol::parse(&buf) {
            Parse::Done(header, n) if n == buf.len() => return Ok(header),
            Parse::Done(..) | Parse::Invalid => return Err(()),
            // v2 says how long it is; v1 is read a byte at a time.
            Parse::Need(n) if buf.first() == Some(&b'\r') => n - buf.len(),
            Parse::Need(_) => 1,
        };
        let start = buf.len();
        buf.resize(start + want, 0);
        stream.read_exact(&mut buf[start..]).await.map_err(|_| ())?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn connection_counts_are_capped_and_given_back() {
        let limits = Arc::new(ConnectionLimits::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = limits.enter(Some(a), 3, 2).unwrap();
        let s2 = limits.enter(Some(a), 3, 2).unwrap();
        assert_eq!(
            limits.enter(Some(a), 3, 2).err(),
            Some(ConnectionRefusal::PerClient)
        );
        let s3 = limits.enter(Some(b), 3, 2).unwrap();
        assert_eq!(
            limits.enter(None, 3, 2).err(),
            Some(ConnectionRefusal::Total)
        );
        assert_eq!(limits.open(), 3);
        drop((s1, s2, s3));
        assert_eq!(limits.open(), 0);
        assert!(limits.enter(Some(a), 3, 2).is_ok());
    }

    const YAML: &str = r#"
listen: 127.0.0.1:0
token_secret: "0123456789abcdef0123456789abcdef"
backends:
  s3: { endpoint: "http://127.0.0.1:9000", region: us-east-1, access_key_id: a, secret_access_key: b }
data_sources:
  sales: { backend: s3, bucket: real }
api_keys:
  - { id: k, name: K, data_sources: all }
trusted_proxies: ["10.0.0.0/8"]
limits: { max_connections: 3, max_connections_per_client: 1 }
"#;

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// What the client end of a connection received once s3p's end is dropped.
    async fn received(mut client: tokio::io::DuplexStream) -> String {
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_connection_over_a_cap_is_answered_where_it_can_be_and_counted() {
        block_on(async {
            let config = Config::from_yaml_str(YAML, &|_| None).unwrap();
            let metrics = Metrics::default();
            let limits = Arc::new(ConnectionLimits::default());
            let a: IpAddr = "192.0.2.1".parse().unwrap();
            let (_client, mut s) = tokio::io::duplex(4096);
            let first = admit(&mut s, Some(a), Stage::Plain, &config, &metrics, &limits)
                .await
                .ok()
                .unwrap();
            assert_eq!(first.proxied, None);
            // The same client again, on a plain connection: 503 SlowDown, stamped, and closed.
            let (client, mut s) = tokio::io::duplex(4096);
            let refused = admit(&mut s, Some(a), Stage::Plain, &config, &metrics, &limits).await;
            assert_eq!(
                refused.err(),
                Some(NotAdmitted::Cap(ConnectionRefusal::PerClient))
            );
            drop(s);
            let answer = received(client).await;
            assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
            assert!(answer.contains("<Code>SlowDown</Code>"));
            assert!(answer.contains("x-amz-request-id: ") && answer.contains("x-amz-id-2: "));
            // ... and before a TLS handshake: closed without a word.
            let (client, mut s) = tokio::io::duplex(4096);
            let refused = admit(
                &mut s,
                Some(a),
                Stage::BeforeTls,
                &config,
                &metrics,
                &limits,
            )
            .await;
            assert_eq!(
                refused.err().map(NotAdmitted::reason),
                Some("too many connections from this client")
            );
            drop(s);
            assert_eq!(received(client).await, "");
            assert_eq!(limits.open(), 1);
            assert!(metrics
                .render()
                .contains("s3p_limit_hits_total{limit=\"max_connections_per_client\"} 2\n"));
        });
    }

    #[test]
    fn only_a_trusted_proxy_names_the_client_and_it_is_counted_in_the_total_only() {
        block_on(async {
            let mut config = Config::from_yaml_str(YAML, &|_| None).unwrap();
            config.proxy_protocol = true;
            let metrics = Metrics::default();
            let limits = Arc::new(ConnectionLimits::default());
            let proxy: IpAddr = "10.0.0.1".parse().unwrap();
            let stranger: IpAddr = "192.0.2.7".parse().unwrap();
            // A PROXY header from a peer not trusted to send one: refused, nothing read or counted.
            let (mut client, mut s) = tokio::io::duplex(4096);
            client
                .write_all(b"PROXY TCP4 192.0.2.9 10.0.0.2 5000 80\r\nGET")
                .await
                .unwrap();
            let refused = admit(
                &mut s,
                Some(stranger),
                Stage::Plain,
                &config,
                &metrics,
                &limits,
            );
            assert_eq!(refused.await.err(), Some(NotAdmitted::ProxyHeader));
            assert_eq!(limits.open(), 0);
            // From a trusted proxy: the header names the client, and not one byte more is read.
            let admitted = admit(
                &mut s,
                Some(proxy),
                Stage::BeforeTls,
                &config,
                &metrics,
                &limits,
            )
            .await
            .ok()
            .unwrap();
            assert_eq!(admitted.proxied, Some("192.0.2.9:5000".parse().unwrap()));
            let mut rest = [0; 3];
            s.read_exact(&mut rest).await.unwrap();
            assert_eq!(&rest, b"GET");
            // Counted for the client it names, whose cap is then reached.
            let (_c, mut s2) = tokio::io::duplex(4096);
            let named: IpAddr = "192.0.2.9".parse().unwrap();
            let again = admit(
                &mut s2,
                Some(named),
                Stage::AfterTls,
                &config,
                &metrics,
                &limits,
            );
            assert_eq!(
                again.await.err(),
                Some(NotAdmitted::Cap(ConnectionRefusal::PerClient))
            );
            // The proxy itself, without a PROXY header to read after a handshake: in the total only.
            let (_c, mut s3) = tokio::io::duplex(4096);
            let slot = admit(
                &mut s3,
                Some(proxy),
                Stage::AfterTls,
                &config,
                &metrics,
                &limits,
            )
            .await
            .ok()
            .unwrap();
            assert_eq!(limits.open(), 2);
            assert_eq!(limits.per_client.lock().unwrap().len(), 1);
            drop((admitted, slot));
            assert_eq!(limits.open(), 0);
            assert!(metrics
                .render()
                .contains("s3p_limit_hits_total{limit=\"proxy_protocol\"} 1\n"));
        });
    }

    #[test]
    fn lingering_refused_connections_are_bounded() {
        let places: Vec<Lingering> = std::iter::from_fn(Lingering::enter)
            .take(MAX_LINGERING + 10)
            .collect();
        // (Other tests may hold places at the same time: never more than the bound in all.)
        assert!(places.len() <= MAX_LINGERING);
        assert!(Lingering::enter().is_none());
        drop(places);
        assert!(Lingering::enter().is_some());
    }
}
