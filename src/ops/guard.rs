//! Throttling of repeated authentication failures. Subjects are a client network (an IPv4 address, or
//! an IPv6 /64) and the pair (network, claimed key id). A key is never throttled globally: its id is
//! public (it is in every signature), so a global per-key limit would let anyone lock a key out. Past
//! the limit within a one-minute window, requests are answered 503 SlowDown without being checked, so a
//! guesser gains nothing and costs s3p nothing.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
/// Hard bound on remembered subjects. When full, expired entries are dropped; if none has expired, the
/// oldest half goes (an attacker cycling addresses can at most dilute the throttle, never grow memory).
const MAX_SUBJECTS: usize = 100_000;

/// Subjects are stored as fixed-size hashes, whatever the attacker-chosen key id looks like.
type Subject = [u8; 16];

pub struct AuthThrottle {
    limit: u32,
    max_subjects: usize,
    failures: Mutex<HashMap<Subject, (Instant, u32)>>,
}

/// The network a client address belongs to for throttling: IPv6 clients usually own a whole /64.
fn network(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

fn subject(parts: &[&str]) -> Subject {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    h.finalize()[..16].try_into().expect("16 of 32 bytes")
}

impl AuthThrottle {
    /// `limit` failures per minute per subject; 0 turns throttling off.
    pub fn new(limit: u32) -> Self {
        AuthThrottle {
            limit,
            max_subjects: MAX_SUBJECTS,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn subjects(client: Option<IpAddr>, key_id: Option<&str>) -> Vec<Subject> {
        let net = client.map(network).unwrap_or_default();
        let mut out = vec![subject(&["net", &net])];
        if let Some(id) = key_id {
            out.push(subject(&["net+key", &net, id]));
        }
        out
    }

    /// Whether the client network, or the client network with this key, is over its limit now.
    pub fn is_blocked(&self, client: Option<IpAddr>, key_id: Option<&str>, now: Instant) -> bool {
        if self.limit == 0 {
            return false;
        }
        let map = self.failures.lock().unwrap();
        // The common case, no recent failures at all, costs no hashing.
        if map.is_empty() {
            return false;
        }
        let subjects = Self::subjects(client, key_id);
        subjects.iter().any(|s| {
            map.get(s).is_some_and(|(start, count)| {
                now.duration_since(*start) < WINDOW && *count >= self.limit
            })
        })
    }

    pub fn record_failure(&self, client: Option<IpAddr>, key_id: Option<&str>, now: Instant) {
        if self.limit == 0 {
            return;
        }
        let subjects = Self::subjects(client, key_id);
        let mut map = self.failures.lock().unwrap();
        if map.len() + subjects.len() > self.max_subjects {
            map.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            if map.len() + subjects.len() > self.max_subjects {
                let mut starts: Vec<Instant> = map.values().map(|(start, _)| *start).collect();
                starts.sort();
                let cutoff = starts[starts.len() / 2];
                map.retain(|_, (start, _)| *start > cutoff);
            }
        }
        for s in subjects {
            let entry = map.entry(s).or_insert((now, 0));
            if now.duration_since(entry.0) >= WINDOW {
                *entry = (now, 0);
            }
            entry.1 += 1;
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.failures.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn blocks_a_network_after_the_limit_within_a_window() {
        let t = AuthThrottle::new(3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(!t.is_blocked(ip("1.2.3.4"), Some("k"), t0));
            t.record_failure(ip("1.2.3.4"), Some("k"), t0);
        }
        assert!(t.is_blocked(ip("1.2.3.4"), None, t0));
        assert!(
            t.is_blocked(ip("1.2.3.4"), Some("other"), t0),
            "the network is throttled"
        );
        assert!(
            !t.is_blocked(ip("9.9.9.9"), Some("k"), t0),
            "a key is never throttled from elsewhere"
        );
        assert!(
            !t.is_blocked(ip("1.2.3.4"), None, t0 + WINDOW),
            "the window slides"
        );
        assert!(!AuthThrottle::new(0).is_blocked(ip("1.2.3.4"), None, t0));
    }

    #[test]
    fn ipv6_clients_are_grouped_by_64() {
        let t = AuthThrottle::new(1);
        let t0 = Instant::now();
        t.record_failure(ip("2001:db8:1:2::1"), None, t0);
        assert!(t.is_blocked(ip("2001:db8:1:2:ffff::9"), None, t0));
        assert!(!t.is_blocked(ip("2001:db8:1:3::1"), None, t0));
    }

    #[test]
    fn memory_is_bounded_whatever_the_subjects() {
        let t = AuthThrottle {
            max_subjects: 1_000,
            ..AuthThrottle::new(5)
        };
        let t0 = Instant::now();
        let long_id = "k".repeat(10_000);
        for i in 0..5_000u32 {
            let addr = IpAddr::from(std::net::Ipv4Addr::from(i));
            t.record_failure(
                Some(addr),
                Some(&long_id),
                t0 + Duration::from_micros(i as u64),
            );
        }
        assert!(t.len() <= 1_000, "{}", t.len());
    }
}
