//! The PROXY protocol (HAProxy's, versions 1 and 2): a load balancer that passes TCP through prefixes
//! each connection with the client's address. Pure: bytes in, an address (or how many more bytes are
//! needed) out. Only read on listeners configured for it, and only believed from `trusted_proxies`.
//!
//! v1: `PROXY TCP4 <src> <dst> <sport> <dport>\r\n` (or `TCP6`, or `UNKNOWN ...`), at most 107 bytes.
//! v2: a 12-byte signature, version/command, family/protocol, a 2-byte length, then the addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const V1_MAX: usize = 107;

/// What a PROXY header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The client's address (the balancer's view of the connection's source).
    Client(SocketAddr),
    /// A header without an address (v1 `UNKNOWN`, v2 `LOCAL` health checks, other families): the
    /// connection's own peer stands.
    Unknown,
}

/// The result of looking at the first bytes of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse {
    /// A complete header of this many bytes.
    Done(ProxyHeader, usize),
    /// Not enough bytes yet: at least this many in all are needed.
    Need(usize),
    /// Not a PROXY header, or a malformed one.
    Invalid,
}

/// Parses the header at the start of `data`.
pub fn parse(data: &[u8]) -> Parse {
    // A v1 header may be shorter than 16 bytes (`PROXY UNKNOWN\r\n`).
    if data.starts_with(b"PROXY ") {
        return parse_v1(data);
    }
    if data.len() < 16 {
        // Enough to tell v1 from v2 and to read v2's length.
        let prefix_ok = V2_SIGNATURE.starts_with(&data[..data.len().min(12)])
            || b"PROXY ".starts_with(&data[..data.len().min(6)]);
        return if prefix_ok {
            Parse::Need(16)
        } else {
            Parse::Invalid
        };
    }
    if data[..12] == V2_SIGNATURE {
        return parse_v2(data);
    }
    Parse::Invalid
}

fn parse_v1(data: &[u8]) -> Parse {
    let window = &data[..data.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if data.len() >= V1_MAX {
            Parse::Invalid
        } else {
            Parse::Need(data.len() + 1)
        };
    };
    let Ok(line) = std::str::from_utf8(&data[6..end]) else {
        return Parse::Invalid;
    };
    let parts: Vec<&str> = line.split(' ').collect();
    let header = match parts.as_slice() {
        ["UNKNOWN", ..] => ProxyHeader::Unknown,
        [family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let (Ok(src), Ok(_), Ok(sport), Ok(_)) = (
                src.parse::<IpAddr>(),
                dst.parse::<IpAddr>(),
                sport.parse::<u16>(),
                dport.parse::<u16>(),
            ) else {
                return Parse::Invalid;
            };
            if (*family == "TCP4") != src.is_ipv4() {
                return Parse::Invalid;
            }
            ProxyHeader::Client(SocketAddr::new(src, sport))
        }
        _ => return Parse::Invalid,
    };
    Parse::Done(header, end + 2)
}

fn parse_v2(data: &[u8]) -> Parse {
    let version_command = data[12];
    if version_command >> 4 != 2 {
        return Parse::Invalid;
    }
    let len = u16::from_be_bytes([data[14], data[15]]) as usize;
    let total = 16 + len;
    if data.len() < total {
        return Parse::Need(total);
    }
    let body = &data[16..total];
    let header = match (version_command & 0x0f, data[13]) {
        // LOCAL: the balancer's own connection (a health check).
        (0, _) => ProxyHeader::Unknown,
        // PROXY over TCP/IPv4: src(4) dst(4) sport(2) dport(2).
        (1, 0x11) if body.len() >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            ProxyHeader::Client(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([body[8], body[9]]),
            ))
        }
        // PROXY over TCP/IPv6: src(16) dst(16) sport(2) dport(2).
        (1, 0x21) if body.len() >= 36 => {
            let octets: [u8; 16] = body[..16].try_into().expect("16 bytes");
            let ip = Ipv6Addr::from(octets);
            ProxyHeader::Client(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([body[32], body[33]]),
            ))
        }
        (1, 0x11 | 0x21) => return Parse::Invalid,
        // Other families (UNIX sockets, UDP): no client address to take.
        (1, _) => ProxyHeader::Unknown,
        _ => return Parse::Invalid,
    };
    Parse::Done(header, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    #[test]
    fn version_1_table() {
        let table: &[(&[u8], Parse)] = &[
            (
                b"PROXY TCP4 198.51.100.7 10.0.0.1 5555 8080\r\nGET /",
                Parse::Done(
                    ProxyHeader::Client("198.51.100.7:5555".parse().unwrap()),
                    44,
                ),
            ),
            (
                b"PROXY TCP6 2001:db8::1 2001:db8::2 443 8080\r\n",
                Parse::Done(
                    ProxyHeader::Client("[2001:db8::1]:443".parse().unwrap()),
                    45,
                ),
            ),
            (b"PROXY UNKNOWN\r\n", Parse::Done(ProxyHeader::Unknown, 15)),
            (b"PROXY TCP4 198.51.100.7 10.0.0.1 5555", Parse::Need(38)),
            (b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n", Parse::Invalid),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n", Parse::Invalid),
            (b"PROXY TCP4 1.2.3.4\r\n____________", Parse::Invalid),
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", Parse::Invalid),
            (b"PRO", Parse::Need(16)),
            (b"GE", Parse::Invalid),
        ];
        for (input, want) in table {
            assert_eq!(parse(input), *want, "{}", String::from_utf8_lossy(input));
        }
        // No end within 107 bytes: not a header.
        let mut long = b"PROXY TCP4 ".to_vec();
        long.extend(std::iter::repeat_n(b'1', 120));
        assert_eq!(parse(&long), Parse::Invalid);
    }

    #[test]
    fn version_2_table() {
        let mut v4 = vec![198, 51, 100, 7, 10, 0, 0, 1];
        v4.extend_from_slice(&5555u16.to_be_bytes());
        v4.extend_from_slice(&8080u16.to_be_bytes());
        let h = v2(1, 0x11, &v4);
        assert_eq!(
            parse(&[h.clone(), b"GET /".to_vec()].concat()),
            Parse::Done(
                ProxyHeader::Client("198.51.100.7:5555".parse().unwrap()),
                28
            )
        );
        // Every cut of it asks for more, never a wrong answer.
        for cut in 0..h.len() {
            assert!(matches!(parse(&h[..cut]), Parse::Need(_)), "cut at {cut}");
        }
        let mut v6 = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        v6.extend_from_slice(&[0; 16]);
        v6.extend_from_slice(&443u16.to_be_bytes());
        v6.extend_from_slice(&8080u16.to_be_bytes());
        assert_eq!(
            parse(&v2(1, 0x21, &v6)),
            Parse::Done(
                ProxyHeader::Client("[2001:db8::1]:443".parse().unwrap()),
                52
            )
        );
        // LOCAL (health checks), UNIX sockets: no address. Extra TLVs after the addresses are skipped.
        assert_eq!(
            parse(&v2(0, 0x00, &[])),
            Parse::Done(ProxyHeader::Unknown, 16)
        );
        assert_eq!(
            parse(&v2(1, 0x31, &[0; 216])),
            Parse::Done(ProxyHeader::Unknown, 232)
        );
        let mut tlv = v4.clone();
        tlv.extend_from_slice(&[0x04, 0, 1, 0]);
        assert!(matches!(
            parse(&v2(1, 0x11, &tlv)),
            Parse::Done(ProxyHeader::Client(_), 32)
        ));
        // Short address blocks, other versions and commands are refused.
        assert_eq!(parse(&v2(1, 0x11, &v4[..6])), Parse::Invalid);
        let mut bad = v2(1, 0x11, &v4);
        bad[12] = 0x11;
        assert_eq!(parse(&bad), Parse::Invalid);
        let mut bad = v2(1, 0x11, &v4);
        bad[12] = 0x2f;
        assert_eq!(parse(&bad), Parse::Invalid);
    }
}
