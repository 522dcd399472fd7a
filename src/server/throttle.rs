//! Throttling of repeated authentication failures, and per-key and per-client concurrency limits.
//!
//! Authentication failures count against the subject that caused them, never against anyone else
//! (behind NAT, a load balancer or a TLS terminator, many users share one address):
//! - anonymous requests and unknown key ids count per client network (an IPv4 address, or an IPv6 /64);
//! - a known key with a bad signature or an expired URL counts per (client network, key id);
//! - a request whose credentials verify is never throttled.
//!
//! A key id alone is never throttled: it is public (it is in every signature), so a global per-key limit
//! would let anyone lock a key out. Past the limit within a one-minute window, failing requests of that
//! subject are answered 503 SlowDown (with `Retry-After`) instead of their real error, so a guesser learns
//! nothing more.

use crate::client_addr::client_network;
use crate::config::ApiKey;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
/// Hard bound on remembered subjects. When full, expired entries are dropped; if none has expired, the
/// oldest half goes (an attacker cycling addresses can at most dilute the throttle, never grow memory).
const MAX_SUBJECTS: usize = 100_000;

/// Subjects are stored as fixed-size hashes, whatever the attacker-chosen key id looks like.
type SubjectHash = [u8; 16];

/// Who an authentication failure is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureSubject<'a> {
    /// Anonymous, or a key id s3p does not know.
    Client(Option<IpAddr>),
    /// A key s3p knows, presented with a bad signature or an expired URL.
    ClientAndKey(Option<IpAddr>, &'a str),
}

impl FailureSubject<'_> {
    fn hash(&self) -> SubjectHash {
        let net = |ip: &Option<IpAddr>| {
            ip.map(|ip| client_network(ip).to_string())
                .unwrap_or_default()
        };
        match self {
            FailureSubject::Client(ip) => subject(&["net", &net(ip)]),
            FailureSubject::ClientAndKey(ip, id) => subject(&["net+key", &net(ip), id]),
        }
    }
}

pub struct AuthThrottle {
    limit: u32,
    max_subjects: usize,
    failures: Mutex<HashMap<SubjectHash, (Instant, u32)>>,
}

fn subject(parts: &[&str]) -> SubjectHash {
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

    /// When the subject is over its limit now: how long until its window ends (for `Retry-After`).
    pub fn blocked_for(&self, who: FailureSubject, now: Instant) -> Option<Duration> {
        if self.limit == 0 {
            return None;
        }
        let map = self.failures.lock().unwrap();
        // The common case, no recent failures at all, costs no hashing.
        if map.is_empty() {
            return None;
        }
        let (start, count) = map.get(&who.hash())?;
        let age = now.duration_since(*start);
        (age < WINDOW && *count >= self.limit).then(|| WINDOW - age)
    }

    pub fn record_failure(&self, who: FailureSubject, now: Instant) {
        if self.limit == 0 {
            return;
        }
        let s = who.hash();
        let mut map = self.failures.lock().unwrap();
        if map.len() + 1 > self.max_subjects {
            map.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            if map.len() + 1 > self.max_subjects {
                let mut starts: Vec<Instant> = map.values().map(|(start, _)| *start).collect();
                starts.sort();
                let cutoff = starts[starts.len() / 2];
                map.retain(|_, (start, _)| *start > cutoff);
            }
        }
        let entry = map.entry(s).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.failures.lock().unwrap().len()
    }
}

/// Requests in flight per API key and per client network, so that one key or one address cannot hold
/// every slot of `max_concurrent_requests` (stalled downloads, slow listings) and starve everyone else.
///
/// One per process (in the `Runtime`, which outlives reloads), so counts survive a reload: requests
/// begun before it still count against their key and client, under the reloaded limits. (When a key's
/// count lived with the key in the configuration, a reload started every key at zero.)
#[derive(Default)]
pub struct ConcurrencyLimits {
    /// Requests in flight per API key, by a hash of its id: ids are unique, display names are not (two
    /// keys sharing a name must not share a count), and the map holds no credential (a key without a
    /// secret is its id). Only configured keys are counted, so it holds at most those (and, for a
    /// while after a reload, removed ones with requests still in flight).
    per_key: Mutex<HashMap<KeyId, usize, KeyIdHasher>>,
    /// Seeded per process, so that no client can choose addresses that collide.
    per_client: Mutex<HashMap<IpAddr, usize, foldhash::fast::RandomState>>,
    /// Copies in flight per API key (by the same id hash), and over every key.
    copies_per_key: Mutex<HashMap<KeyId, usize, KeyIdHasher>>,
    copies: AtomicUsize,
    /// Request body bytes held in memory over every request (`limits.max_buffered_body_bytes`).
    buffered_body_bytes: AtomicUsize,
}

/// A request's place in one of the counts; dropping it gives the place back.
pub enum Slot {
    Key(Arc<ConcurrencyLimits>, KeyId),
    Client(Arc<ConcurrencyLimits>, IpAddr),
    Copy(Arc<ConcurrencyLimits>, KeyId),
    /// Body bytes reserved in the process-wide budget.
    Body(Arc<ConcurrencyLimits>, usize),
}

/// An API key as the in-flight counts know it: a hash of its id, keyed per process (so that no client
/// can choose ids that collide), cheap enough for every request (no allocation, no SHA-256).
pub type KeyId = u64;

/// A [`KeyId`] is already a keyed hash: the maps use it as it is (every request counts its key in and
/// out; SipHash over it would cost more than the rest of the count).
#[derive(Default, Clone, Copy)]
pub struct KeyIdHasher;

impl std::hash::BuildHasher for KeyIdHasher {
    type Hasher = KeyIdHash;
    fn build_hasher(&self) -> KeyIdHash {
        KeyIdHash(0)
    }
}

/// The hasher of [`KeyIdHasher`]: the `u64` it is given.
#[derive(Default)]
pub struct KeyIdHash(u64);

impl std::hash::Hasher for KeyIdHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64`s are hashed here; anything else is folded in, never lost.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn key_id(key: &ApiKey) -> KeyId {
    use std::hash::BuildHasher;
    static SEED: std::sync::OnceLock<foldhash::quality::RandomState> = std::sync::OnceLock::new();
    SEED.get_or_init(Default::default).hash_one(key.limit_id())
}

/// Why a copy could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyRefusal {
    PerKey,
    PerReplica,
}

impl Drop for Slot {
    fn drop(&mut self) {
        match self {
            Slot::Key(limits, key) => {
                let mut counts = limits.per_key.lock().unwrap();
                if let Some(n) = counts.get_mut(key) {
                    *n -= 1;
                    if *n == 0 {
                        counts.remove(key);
                    }
                }
            }
            Slot::Client(limits, ip) => {
                let mut counts = limits.per_client.lock().unwrap();
                if let Some(n) = counts.get_mut(ip) {
                    *n -= 1;
                    if *n == 0 {
                        counts.remove(ip);
                    }
                }
            }
            Slot::Copy(limits, key) => {
                let mut counts = limits.copies_per_key.lock().unwrap();
                if let Some(n) = counts.get_mut(key) {
                    *n -= 1;
                    if *n == 0 {
                        counts.remove(key);
                    }
                }
                limits.copies.fetch_sub(1, Ordering::Relaxed);
            }
            Slot::Body(limits, bytes) => {
                limits
                    .buffered_body_bytes
                    .fetch_sub(*bytes, Ordering::Relaxed);
            }
        }
    }
}

impl ConcurrencyLimits {
    /// A place for one more request of this key, or `None` when it has `limit` in flight.
    pub fn enter_key(self: &Arc<Self>, key: &ApiKey, limit: usize) -> Option<Slot> {
        let id = key_id(key);
        let mut counts = self.per_key.lock().unwrap();
        let n = counts.get(&id).copied().unwrap_or(0);
        if n >= limit {
            return None;
        }
        counts.insert(id, n + 1);
        Some(Slot::Key(self.clone(), id))
    }

    /// A place for one more request from this client's network, or `None` when it has `limit` in flight.
    pub fn enter_client(self: &Arc<Self>, client: IpAddr, limit: usize) -> Option<Slot> {
        let network = client_network(client);
        let mut counts = self.per_client.lock().unwrap();
        let n = counts.entry(network).or_default();
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(Slot::Client(self.clone(), network))
    }

    /// A place for one more copy of this key: at most `per_key` of its own and `per_replica` in all.
    pub fn enter_copy(
        self: &Arc<Self>,
        key: &ApiKey,
        per_key: usize,
        per_replica: usize,
    ) -> Result<Slot, CopyRefusal> {
        let id = key_id(key);
        let mut counts = self.copies_per_key.lock().unwrap();
        let n = counts.get(&id).copied().unwrap_or(0);
        if n >= per_key {
            return Err(CopyRefusal::PerKey);
        }
        // Under the lock, so that the two counts move together.
        if self.copies.load(Ordering::Relaxed) >= per_replica {
            return Err(CopyRefusal::PerReplica);
        }
        self.copies.fetch_add(1, Ordering::Relaxed);
        counts.insert(id, n + 1);
        Ok(Slot::Copy(self.clone(), id))
    }

    /// Reserves `bytes` of the process-wide budget for request bodies held in memory, or `None` when
    /// they do not fit in `budget` beside what other requests hold.
    pub fn reserve_body(self: &Arc<Self>, bytes: usize, budget: usize) -> Option<Slot> {
        let held = &self.buffered_body_bytes;
        let mut now = held.load(Ordering::Relaxed);
        loop {
            let after = now.checked_add(bytes).filter(|&a| a <= budget)?;
            match held.compare_exchange_weak(now, after, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some(Slot::Body(self.clone(), bytes)),
                Err(actual) => now = actual,
            }
        }
    }

    /// Body bytes held now (`s3p_buffered_body_bytes`).
    pub fn buffered_body_bytes(&self) -> usize {
        self.buffered_body_bytes.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.per_client.lock().unwrap().values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn failures_count_only_against_their_own_subject() {
        let t = AuthThrottle::new(3);
        let t0 = Instant::now();
        let anon = FailureSubject::Client(ip("1.2.3.4"));
        for _ in 0..3 {
            assert_eq!(t.blocked_for(anon, t0), None);
            t.record_failure(anon, t0);
        }
        let wait = t.blocked_for(anon, t0 + Duration::from_secs(10));
        assert_eq!(
            wait,
            Some(Duration::from_secs(50)),
            "Retry-After: the rest of the window"
        );
        // A known key from the same address is a different subject: not locked out by anonymous noise.
        assert_eq!(
            t.blocked_for(FailureSubject::ClientAndKey(ip("1.2.3.4"), "k"), t0),
            None
        );
        assert_eq!(
            t.blocked_for(FailureSubject::Client(ip("9.9.9.9")), t0),
            None
        );
        assert_eq!(t.blocked_for(anon, t0 + WINDOW), None, "the window slides");
        assert_eq!(AuthThrottle::new(0).blocked_for(anon, t0), None);

        // Bad signatures of one key from one address lock out that pair only.
        let k = FailureSubject::ClientAndKey(ip("1.2.3.4"), "k");
        for _ in 0..3 {
            t.record_failure(k, t0);
        }
        assert!(t.blocked_for(k, t0).is_some());
        assert_eq!(
            t.blocked_for(FailureSubject::ClientAndKey(ip("1.2.3.4"), "other"), t0),
            None
        );
        assert_eq!(
            t.blocked_for(FailureSubject::ClientAndKey(ip("5.5.5.5"), "k"), t0),
            None
        );
    }

    #[test]
    fn ipv6_clients_are_grouped_by_64() {
        let t = AuthThrottle::new(1);
        let t0 = Instant::now();
        t.record_failure(FailureSubject::Client(ip("2001:db8:1:2::1")), t0);
        assert!(t
            .blocked_for(FailureSubject::Client(ip("2001:db8:1:2:ffff::9")), t0)
            .is_some());
        assert!(t
            .blocked_for(FailureSubject::Client(ip("2001:db8:1:3::1")), t0)
            .is_none());
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
                FailureSubject::ClientAndKey(Some(addr), &long_id),
                t0 + Duration::from_micros(i as u64),
            );
        }
        assert!(t.len() <= 1_000, "{}", t.len());
    }

    fn key(id: &str, name: &str) -> ApiKey {
        ApiKey {
            id: crate::config::Secret::new(id),
            secrets: Vec::new(),
            name: name.into(),
            legacy_header: true,
            enabled: true,
            expires_at: None,
            data_sources: crate::config::Entitlement::read_all(),
            session: None,
        }
    }

    #[test]
    fn concurrency_slots_are_per_holder_and_given_back() {
        let limits = Arc::new(ConcurrencyLimits::default());
        let (ka, kb) = (key("a", "a"), key("b", "b"));
        let a: Vec<Slot> = (0..3).map(|_| limits.enter_key(&ka, 3).unwrap()).collect();
        assert!(
            limits.enter_key(&ka, 3).is_none(),
            "a fourth request of key a"
        );
        assert!(
            limits.enter_key(&kb, 3).is_some(),
            "another key is not affected"
        );
        let c1 = limits
            .enter_client("2001:db8::1".parse().unwrap(), 1)
            .unwrap();
        assert!(
            limits
                .enter_client("2001:db8::2".parse().unwrap(), 1)
                .is_none(),
            "same /64"
        );
        drop(a);
        drop(c1);
        assert_eq!(limits.held(), 0);
        assert!(limits.per_key.lock().unwrap().is_empty());
        assert!(limits.enter_key(&ka, 3).is_some());
    }

    #[test]
    fn key_counts_are_per_key_and_given_back_on_drop() {
        let limits = Arc::new(ConcurrencyLimits::default());
        // Two keys with one display name (names are not checked unique) count apart: by id.
        let (alice, namesake) = (key("AKalice", "Alice"), key("AKother", "Alice"));
        let first = limits.enter_key(&alice, 2).unwrap();
        let second = limits.enter_key(&alice, 2).unwrap();
        assert!(
            limits.enter_key(&alice, 2).is_none(),
            "alice is at her limit"
        );
        let other = limits.enter_key(&namesake, 2).unwrap();
        // The same key loaded again (a reload builds a new `ApiKey`, here renamed) shares the count.
        assert!(limits.enter_key(&key("AKalice", "Alice B."), 2).is_none());
        // A reloaded, higher limit applies to the requests already in flight.
        let third = limits.enter_key(&alice, 3).unwrap();

        drop(first);
        let again = limits
            .enter_key(&alice, 3)
            .expect("a dropped slot is given back");
        drop((second, third, again, other));
        assert!(
            limits.per_key.lock().unwrap().is_empty(),
            "counts at zero are removed"
        );
        assert!(limits.enter_key(&namesake, 1).is_some());
    }

    #[test]
    fn copies_are_limited_per_key_and_per_replica() {
        let limits = Arc::new(ConcurrencyLimits::default());
        // Two keys sharing a display name still count apart: by id.
        let (alice, bob) = (key("AKalice", "Same"), key("AKbob", "Same"));
        let a1 = limits.enter_copy(&alice, 2, 3).unwrap();
        let _a2 = limits.enter_copy(&alice, 2, 3).unwrap();
        assert_eq!(
            limits.enter_copy(&alice, 2, 3).err(),
            Some(CopyRefusal::PerKey)
        );
        let _b1 = limits.enter_copy(&bob, 2, 3).unwrap();
        // Bob has room of his own, the replica has none.
        assert_eq!(
            limits.enter_copy(&bob, 2, 3).err(),
            Some(CopyRefusal::PerReplica)
        );
        drop(a1);
        assert!(limits.enter_copy(&bob, 2, 3).is_ok());
        assert_eq!(limits.copies.load(Ordering::Relaxed), 2);
        assert_eq!(limits.copies_per_key.lock().unwrap().len(), 2);
    }

    #[test]
    fn body_bytes_are_budgeted_over_every_request() {
        let limits = Arc::new(ConcurrencyLimits::default());
        let a = limits.reserve_body(40, 100).unwrap();
        let b = limits.reserve_body(60, 100).unwrap();
        assert!(limits.reserve_body(1, 100).is_none());
        assert!(limits.reserve_body(usize::MAX, 100).is_none());
        drop(a);
        assert_eq!(limits.buffered_body_bytes(), 60);
        assert!(limits.reserve_body(41, 100).is_none());
        let c = limits.reserve_body(40, 100).unwrap();
        drop((b, c));
        assert_eq!(limits.buffered_body_bytes(), 0);
    }
}
