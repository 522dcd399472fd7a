//! Who the client is, as far as limits and the audit log are concerned: the connection's peer, or, when
//! that peer is a trusted proxy (a load balancer or TLS terminator in `trusted_proxies`), the address it
//! reports in `X-Forwarded-For`. Pure: addresses and header values in, an address out.
//!
//! Only the rightmost entries of `X-Forwarded-For` can be trusted: each proxy appends the address it saw,
//! while anything to the left may have been written by the client itself. So the list is read from the
//! right, skipping trusted proxies, and the first untrusted entry is the client.

use std::net::IpAddr;

/// An address block (`10.0.0.0/8`, `2001:db8::/32`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let network: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an address or address/bits block"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => match b.trim().parse::<u8>() {
                Ok(b) if b <= max => b,
                _ => return Err(format!("`{s}`: the prefix length must be 0..={max}")),
            },
        };
        Ok(Cidr { network, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.bits as u32).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.bits as u32).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// IPv4 clients of a dual-stack listener show up as `::ffff:a.b.c.d`: treat them as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

pub fn is_trusted(trusted: &[Cidr], ip: IpAddr) -> bool {
    trusted.iter().any(|c| c.contains(ip))
}

/// The client's address: `peer` itself unless it is a trusted proxy; then the rightmost address of the
/// `X-Forwarded-For` values (in header order) that is not a trusted proxy. A malformed entry ends the
/// search at the last address known good: whatever stands left of garbage cannot be trusted.
pub fn client_address<'a>(
    peer: IpAddr,
    forwarded_for: impl DoubleEndedIterator<Item = &'a str>,
    trusted: &[Cidr],
) -> IpAddr {
    let peer = canonical(peer);
    if !is_trusted(trusted, peer) {
        return peer;
    }
    let mut client = peer;
    for value in forwarded_for.rev() {
        for entry in value.rsplit(',') {
            let Some(ip) = parse_entry(entry.trim()) else {
                return client;
            };
            client = canonical(ip);
            if !is_trusted(trusted, client) {
                return client;
            }
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5678`, `[2001:db8::1]:80`).
fn parse_entry(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    s.parse::<std::net::SocketAddr>().ok().map(|a| a.ip())
}

/// The network a client address belongs to for per-client limits and throttling: one IPv4 address, or an
/// IPv6 /64 (what one customer usually owns).
pub fn client_network(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & (u128::MAX << 64);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// Who is calling, as limits and the audit see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Client {
    /// The client's address (after `trusted_proxies`).
    pub ip: Option<IpAddr>,
    /// `ip:port` of a direct client; the forwarded address behind a trusted proxy.
    pub text: String,
}

/// The client of a connection from `peer` with these `X-Forwarded-For` values.
/// (`forwarded_for` is read only when some proxy is trusted: most requests never look the header up.)
pub fn client_of<'a, I: DoubleEndedIterator<Item = &'a str>>(
    peer: Option<std::net::SocketAddr>,
    forwarded_for: impl FnOnce() -> I,
    trusted: &[Cidr],
) -> Client {
    let ip = peer.map(|p| {
        if trusted.is_empty() {
            p.ip()
        } else {
            client_address(p.ip(), forwarded_for(), trusted)
        }
    });
    let text = match (peer, ip) {
        (Some(p), Some(ip)) if p.ip() == ip => p.to_string(),
        (_, Some(ip)) => ip.to_string(),
        _ => String::new(),
    };
    Client { ip, text }
}

/// How the client reached s3p: over TLS, or as a trusted proxy says with `X-Forwarded-Proto` (from
/// anyone else, the header is not believed).
/// (`forwarded_proto` is read only for a trusted peer: most requests never look the header up.)
pub fn scheme<'a>(
    tls: bool,
    peer: Option<IpAddr>,
    forwarded_proto: impl FnOnce() -> Option<&'a str>,
    trusted: &[Cidr],
) -> &'static str {
    let forwarded_https = !tls
        && peer.is_some_and(|ip| is_trusted(trusted, ip))
        && forwarded_proto().is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    if tls || forwarded_https {
        "https"
    } else {
        "http"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_is_believed_only_from_trusted_proxies() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        #[rustfmt::skip]
        let table = [
            (false, "10.1.2.3", Some("https"), "https"),
            (false, "10.1.2.3", Some("HTTPS "), "https"),
            (false, "10.1.2.3", Some("http"), "http"),
            (false, "10.1.2.3", None, "http"),
            (false, "192.0.2.1", Some("https"), "http"),
            (true, "192.0.2.1", None, "https"),
            (true, "192.0.2.1", Some("http"), "https"),
        ];
        for (tls, peer, proto, want) in table {
            assert_eq!(
                scheme(tls, Some(ip(peer)), || proto, &trusted),
                want,
                "{tls} {peer} {proto:?}"
            );
        }
        assert_eq!(scheme(false, None, || Some("https"), &trusted), "http");
    }

    #[test]
    fn the_client_is_the_peer_or_what_a_trusted_proxy_forwards() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        let peer: std::net::SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let c = client_of(Some(peer), || ["198.51.100.7"].into_iter(), &trusted);
        assert_eq!(
            (c.ip, c.text.as_str()),
            (Some(ip("198.51.100.7")), "198.51.100.7")
        );
        let direct: std::net::SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let c = client_of(Some(direct), || ["198.51.100.7"].into_iter(), &trusted);
        assert_eq!(
            (c.ip, c.text.as_str()),
            (Some(ip("192.0.2.1")), "192.0.2.1:5000")
        );
        let c = client_of(Some(direct), std::iter::empty, &[]);
        assert_eq!(c.text, "192.0.2.1:5000");
        assert_eq!(
            client_of(None, std::iter::empty, &trusted),
            Client::default()
        );
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_table() {
        let table: &[(&str, &str, bool)] = &[
            ("10.0.0.0/8", "10.1.2.3", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("127.0.0.1", "127.0.0.1", true),
            ("127.0.0.1", "127.0.0.2", false),
            ("0.0.0.0/0", "8.8.8.8", true),
            ("0.0.0.0/0", "::1", false),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("::/0", "::1", true),
            ("10.0.0.0/8", "::ffff:10.0.0.1", true),
        ];
        for (cidr, addr, want) in table {
            assert_eq!(
                Cidr::parse(cidr).unwrap().contains(ip(addr)),
                *want,
                "{cidr} {addr}"
            );
        }
        for bad in ["10.0.0.0/33", "::/129", "nope", "10.0.0.0/x", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_for_is_read_from_the_right_and_only_from_trusted_peers() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        let table: &[(&str, &[&str], &str)] = &[
            // An untrusted peer: its header is ignored, whatever it says.
            ("203.0.113.9", &["1.1.1.1"], "203.0.113.9"),
            // A trusted balancer: the address it appended.
            ("10.0.0.5", &["198.51.100.7"], "198.51.100.7"),
            // A client that forged entries on the left: the rightmost untrusted one wins.
            ("10.0.0.5", &["6.6.6.6, 198.51.100.7"], "198.51.100.7"),
            // Two trusted hops.
            ("10.0.0.5", &["198.51.100.7, 10.0.0.9"], "198.51.100.7"),
            // Several header lines are one list, in order.
            ("10.0.0.5", &["6.6.6.6", "198.51.100.7"], "198.51.100.7"),
            // Ports and brackets.
            ("10.0.0.5", &["[2001:db8::1]:443"], "2001:db8::1"),
            ("10.0.0.5", &["198.51.100.7:5555"], "198.51.100.7"),
            // No header: the balancer itself.
            ("10.0.0.5", &[], "10.0.0.5"),
            // Garbage stops the walk at the last good address.
            ("10.0.0.5", &["198.51.100.7, garbage"], "10.0.0.5"),
            ("10.0.0.5", &["garbage, 10.0.0.7"], "10.0.0.7"),
        ];
        for (peer, xff, want) in table {
            let got = client_address(ip(peer), xff.iter().copied(), &trusted);
            assert_eq!(got, ip(want), "{peer} {xff:?}");
        }
    }

    #[test]
    fn ipv6_clients_are_grouped_by_64() {
        assert_eq!(
            client_network(ip("2001:db8:1:2:3:4:5:6")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(client_network(ip("192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(client_network(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }
}
