//! The decision cache of the governance source: one entry per credential (its key, or the service's
//! "no"), with the behaviour operators expect from a policy cache, and the bookkeeping of single-flight
//! lookups. Pure: the caller passes the time in ([`Now`]) and holds the lock (a `Mutex` around each; `get`
//! takes `&self`, so an `RwLock` works too).
//!
//! - An allow lives `allow_ttl`, never past the earliest expiration of its grants (wall clock); a deny
//!   (unknown or revoked key) lives `deny_ttl`, so a flood of random keys costs one lookup per key per
//!   `deny_ttl` at most, not one per request.
//! - `stale_if_error` (0 by default): an allow past its TTL may be used for this much longer, *only when
//!   the refresh failed* (service down or slow), never past the grants' expiration; a deny is never
//!   stale (an expired deny is `Missing`, so a failed refresh refuses).
//! - At most `max_entries` entries. See [`DecisionCache`] for the eviction order and its cost.
//! - Keyed by [`KeyHash`], a SHA-256 of the credential: the map never holds a credential in clear (the
//!   cached `ApiKey` holds its id, as the file source's keys do, but a dump of the map's keys does not).

use crate::config::ApiKey;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// SHA-256 of a credential with the kind of credential in front, the cache's key.
///
/// The kind keeps the two credential spaces apart: an access key id is public (it is in every presigned
/// URL), so without it anyone could send that id as a legacy-header API key, get it denied by the service
/// and so have the signing key's requests refused for `deny_ttl` (or the other way round).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    /// The cache key of an API key sent as a bearer (the legacy header, or any credential that is the key
    /// itself).
    pub fn api_key(api_key: &str) -> KeyHash {
        KeyHash::of(b'k', api_key)
    }

    /// The cache key of a signing credential, by its access key id.
    pub fn access_key_id(access_key_id: &str) -> KeyHash {
        KeyHash::of(b's', access_key_id)
    }

    fn of(kind: u8, credential: &str) -> KeyHash {
        let mut h = Sha256::new();
        // One fixed-length byte of kind, then the credential: no two (kind, credential) pairs give the
        // same input.
        h.update([kind]);
        h.update(credential.as_bytes());
        KeyHash(h.finalize().into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({}…)", hex::encode(&self.0[..6]))
    }
}

/// The time, as the cache needs it: monotonic for TTLs (a wall-clock step must not lengthen or shorten
/// them), wall clock for the grants' expirations (unix seconds, set by the service).
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub mono: Instant,
    pub wall: SystemTime,
}

impl Now {
    /// Both clocks, read now (for the caller; tests build `Now` from fixed values).
    pub fn current() -> Now {
        Now {
            mono: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

/// How long entries live and how many there may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    /// An allow is used this long after its lookup (then looked up again). Revocation takes this long at
    /// most to reach a replica.
    pub allow_ttl: Duration,
    /// A deny (unknown or revoked credential) is used this long.
    pub deny_ttl: Duration,
    /// An allow past `allow_ttl` may still be used this long when the lookup that should refresh it fails
    /// (0: never; a failed refresh refuses with 503).
    pub stale_if_error: Duration,
    /// Entries at most (0: nothing is cached).
    pub max_entries: usize,
}

impl Default for CachePolicy {
    /// 60 s / 10 s as issue 22 suggests; 10,000 entries is about a few MiB (an entry is ~100 bytes plus
    /// its shared `ApiKey`).
    fn default() -> Self {
        CachePolicy {
            allow_ttl: Duration::from_secs(60),
            deny_ttl: Duration::from_secs(10),
            stale_if_error: Duration::ZERO,
            max_entries: 10_000,
        }
    }
}

/// What the cache knows about a credential.
#[derive(Debug, Clone)]
pub enum Cached {
    /// An allow within its TTL: use it.
    Fresh(Arc<ApiKey>),
    /// A deny within its TTL: refuse without a lookup.
    Denied,
    /// An allow past its TTL but within `stale_if_error`: look up again, and use this only if the lookup
    /// fails (a service error; if the service answers "no", that is the answer).
    Stale(Arc<ApiKey>),
    /// Nothing usable: look up (and refuse with 503 if the lookup fails).
    Missing,
}

/// Counts for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Entries held (some may be past their life until the next sweep).
    pub entries: usize,
    /// Of which denies.
    pub deny_entries: usize,
    /// Live entries removed to make room (since the cache was made).
    pub evicted: u64,
    /// Dead entries removed by sweeps (since the cache was made).
    pub expired_removed: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    /// `None`: a deny.
    key: Option<Arc<ApiKey>>,
    /// Used as is until then.
    fresh_until: Instant,
    /// An allow is usable (as `Stale`) until then; a deny: `fresh_until`. Never past `grants_expire`.
    keep_until: Instant,
    /// The grants' earliest expiration, checked on the wall clock as well (unix seconds).
    grants_expire: Option<u64>,
}

impl Entry {
    fn dead(&self, now: Now) -> bool {
        now.mono >= self.keep_until || expired(self.grants_expire, now.wall)
    }
}

fn expired(expires_at: Option<u64>, wall: SystemTime) -> bool {
    expires_at.is_some_and(|at| wall >= UNIX_EPOCH + Duration::from_secs(at))
}

/// The decision cache.
///
/// **Eviction.** Only an insert of a new credential into a full cache makes room, in one O(n) pass that
/// frees at least an eighth of `max_entries`, so the cost is O(1) amortized per insert and `get` never
/// pays it: first every dead entry goes (past its life), then, if that was not enough, the live entries
/// whose freshness ends first (stale allows first, since their `fresh_until` has passed).
///
/// Closest-to-expiry rather than least-recently-used, because (1) it needs no bookkeeping on `get`, which
/// stays a read (`&self`) on the hot path instead of a write per request; (2) the entry that would expire
/// first is the one whose loss costs least: it was about to be looked up again anyway; (3) under a flood
/// of random keys the flood's own denies (short `deny_ttl`) go first, not the allows of real users,
/// whereas LRU would evict a real user idle for a few seconds in favour of the newest random key.
#[derive(Debug)]
pub struct DecisionCache {
    policy: CachePolicy,
    entries: HashMap<KeyHash, Entry>,
    deny_entries: usize,
    evicted: u64,
    expired_removed: u64,
}

impl DecisionCache {
    pub fn new(policy: CachePolicy) -> DecisionCache {
        DecisionCache {
            policy,
            entries: HashMap::new(),
            deny_entries: 0,
            evicted: 0,
            expired_removed: 0,
        }
    }

    pub fn policy(&self) -> &CachePolicy {
        &self.policy
    }

    /// A new policy (on reload with the same source): entries keep the life they were given, and a smaller
    /// `max_entries` is enforced at once.
    pub fn set_policy(&mut self, policy: CachePolicy, now: Now) {
        self.policy = policy;
        if self.entries.len() > policy.max_entries {
            self.sweep(now);
            let excess = self.entries.len().saturating_sub(policy.max_entries);
            self.evict_soonest(excess);
        }
    }

    pub fn get(&self, hash: &KeyHash, now: Now) -> Cached {
        let Some(entry) = self.entries.get(hash) else {
            return Cached::Missing;
        };
        if entry.dead(now) {
            return Cached::Missing;
        }
        match &entry.key {
            None if now.mono < entry.fresh_until => Cached::Denied,
            None => Cached::Missing,
            Some(key) if now.mono < entry.fresh_until => Cached::Fresh(key.clone()),
            Some(key) => Cached::Stale(key.clone()),
        }
    }

    /// Caches an allow: fresh for `allow_ttl`, usable when stale for `stale_if_error` more, both never
    /// past `expires_at` (unix seconds, the grants' earliest expiration). Returns the entries evicted to
    /// make room. An allow already past `expires_at` is not cached (and replaces what was there).
    pub fn insert_allow(
        &mut self,
        hash: KeyHash,
        key: Arc<ApiKey>,
        expires_at: Option<u64>,
        now: Now,
    ) -> usize {
        let left = match expires_at {
            // Already expired (or expiring this instant): nothing to cache.
            Some(at) => match (UNIX_EPOCH + Duration::from_secs(at)).duration_since(now.wall) {
                Ok(left) if !left.is_zero() => Some(left),
                _ => {
                    self.remove(&hash);
                    return 0;
                }
            },
            None => None,
        };
        let bound = |d: Duration| left.map_or(d, |left| d.min(left));
        let fresh_for = bound(self.policy.allow_ttl);
        let keep_for = bound(
            self.policy
                .allow_ttl
                .saturating_add(self.policy.stale_if_error),
        );
        if keep_for.is_zero() {
            self.remove(&hash);
            return 0;
        }
        self.put(
            hash,
            Entry {
                key: Some(key),
                fresh_until: now.mono + fresh_for,
                keep_until: now.mono + keep_for,
                grants_expire: expires_at,
            },
            now,
        )
    }

    /// Caches a deny for `deny_ttl` (it replaces an allow: the service's "no" is the newest answer).
    /// Returns the entries evicted to make room.
    pub fn insert_deny(&mut self, hash: KeyHash, now: Now) -> usize {
        if self.policy.deny_ttl.is_zero() {
            self.remove(&hash);
            return 0;
        }
        let until = now.mono + self.policy.deny_ttl;
        self.put(
            hash,
            Entry {
                key: None,
                fresh_until: until,
                keep_until: until,
                grants_expire: None,
            },
            now,
        )
    }

    /// Forgets a credential (e.g. on an explicit revocation). Whether it was there.
    pub fn remove(&mut self, hash: &KeyHash) -> bool {
        match self.entries.remove(hash) {
            Some(old) => {
                self.forget(&old);
                true
            }
            None => false,
        }
    }

    /// Forgets everything (on a reload that changes the source or the names it maps).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.deny_entries = 0;
    }

    /// Removes every dead entry, O(n): inserts do it when the cache is full; a caller may also run it on
    /// a timer so that `entries` counts only live ones. Returns how many went.
    pub fn sweep(&mut self, now: Now) -> usize {
        let before = self.entries.len();
        let mut denies_removed = 0;
        self.entries.retain(|_, e| {
            let dead = e.dead(now);
            if dead && e.key.is_none() {
                denies_removed += 1;
            }
            !dead
        });
        self.deny_entries -= denies_removed;
        let removed = before - self.entries.len();
        self.expired_removed += removed as u64;
        removed
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            entries: self.entries.len(),
            deny_entries: self.deny_entries,
            evicted: self.evicted,
            expired_removed: self.expired_removed,
        }
    }

    fn put(&mut self, hash: KeyHash, entry: Entry, now: Now) -> usize {
        let max = self.policy.max_entries;
        if max == 0 {
            return 0;
        }
        let mut evicted = 0;
        if !self.entries.contains_key(&hash) && self.entries.len() >= max {
            // Make room once for the next eighth of inserts (at least one): the O(n) pass is paid at
            // most once per max/8 inserts.
            let target = max - (max / 8).max(1);
            self.sweep(now);
            evicted = self.evict_soonest(self.entries.len().saturating_sub(target));
        }
        if entry.key.is_none() {
            self.deny_entries += 1;
        }
        if let Some(old) = self.entries.insert(hash, entry) {
            self.forget(&old);
        }
        evicted
    }

    /// Removes the `n` live entries whose freshness ends first. O(n log n) at worst through
    /// `select_nth_unstable` (O(n) on average); run only when the cache is full.
    fn evict_soonest(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        let mut order: Vec<(Instant, KeyHash)> = self
            .entries
            .iter()
            .map(|(h, e)| (e.fresh_until, *h))
            .collect();
        let n = n.min(order.len());
        if n < order.len() {
            order.select_nth_unstable_by_key(n, |(fresh_until, _)| *fresh_until);
        }
        for (_, hash) in &order[..n] {
            if let Some(old) = self.entries.remove(hash) {
                self.forget(&old);
            }
        }
        self.evicted += n as u64;
        n
    }

    fn forget(&mut self, old: &Entry) {
        if old.key.is_none() {
            self.deny_entries -= 1;
        }
    }
}

/// Limits of the single-flight bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlightLimits {
    /// Distinct credentials looked up at once (per replica): the most concurrent calls s3p makes to the
    /// service. Past it a lookup is refused (503 SlowDown), so a flood of random keys cannot queue
    /// unbounded work for the service.
    pub max_flights: usize,
    /// Requests waiting for one lookup; past it, refused (503 SlowDown). Bounds the memory of a pile-up
    /// on one slow key.
    pub max_waiters: usize,
    /// A lookup older than this is abandoned (its leader was cancelled without finishing, or is past the
    /// lookup deadline): the next request for the key leads a new one, and the old waiters are dropped.
    /// The lookup deadline or a little more.
    pub abandon_after: Duration,
}

impl Default for FlightLimits {
    fn default() -> Self {
        FlightLimits {
            max_flights: 64,
            max_waiters: 4096,
            abandon_after: Duration::from_secs(5),
        }
    }
}

/// Which lookup a leader runs; [`Flights::finish`] takes it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlightId(u64);

/// What a request that needs a lookup does.
#[derive(Debug, PartialEq, Eq)]
pub enum Join {
    /// No lookup of this credential is running: the caller runs it, then calls `finish` with this id
    /// (also when it fails, and when the request is cancelled: from a drop guard).
    Lead(FlightId),
    /// A lookup is running: the waiter was queued; `finish` hands it to the leader, which sends it the
    /// result (a dropped waiter means no result: answer 503 SlowDown).
    Follow,
    /// Too many lookups at once, or too many waiters on this one: answer 503 SlowDown.
    Refused,
}

/// The lookups in progress and who waits for each: the pure half of single-flight, generic over the
/// waiter (a `tokio::sync::oneshot::Sender`, say), so that 1,000 concurrent requests of one uncached key
/// cause one lookup. Use under one lock with the [`DecisionCache`]:
///
/// 1. `cache.get` → `Stale`/`Missing`; then `flights.join(hash, now, make_waiter)`;
/// 2. `Lead(id)`: release the lock, look up (with the deadline), take the lock, `flights.finish(hash, id)`:
///    `Some(waiters)` → insert the result into the cache and send it to each waiter; `None` → the flight
///    was abandoned and taken over, so the result is not cached (a newer lookup's is, or will be) and
///    this request alone uses it;
/// 3. `Follow`: release the lock, await the waiter's receiver (it resolves when the leader finishes, or
///    fails when the waiter is dropped: leader cancelled, flight abandoned).
#[derive(Debug)]
pub struct Flights<W> {
    limits: FlightLimits,
    flights: HashMap<KeyHash, Flight<W>>,
    next_id: u64,
}

#[derive(Debug)]
struct Flight<W> {
    id: u64,
    started: Instant,
    waiters: Vec<W>,
}

impl<W> Flights<W> {
    pub fn new(limits: FlightLimits) -> Flights<W> {
        Flights {
            limits,
            flights: HashMap::new(),
            next_id: 0,
        }
    }

    /// Joins the lookup of `hash`, or starts one. `waiter` is called only for a `Follow`, so a leader
    /// makes no channel (build the receiver in the closure and keep it outside).
    pub fn join(&mut self, hash: KeyHash, now: Instant, waiter: impl FnOnce() -> W) -> Join {
        let abandon_after = self.limits.abandon_after;
        let abandoned = |f: &Flight<W>| now.saturating_duration_since(f.started) >= abandon_after;
        if let Some(flight) = self.flights.get_mut(&hash) {
            if !abandoned(flight) {
                if flight.waiters.len() >= self.limits.max_waiters {
                    return Join::Refused;
                }
                flight.waiters.push(waiter());
                return Join::Follow;
            }
            // Taken over: the old waiters are dropped with the old flight (their receivers fail).
            self.flights.remove(&hash);
        }
        if self.flights.len() >= self.limits.max_flights {
            // Full: reclaim abandoned flights (leaders cancelled without a drop guard) before refusing,
            // so that they cannot hold the slots for ever. O(n) only when full.
            self.flights.retain(|_, f| !abandoned(f));
            if self.flights.len() >= self.limits.max_flights {
                return Join::Refused;
            }
        }
        self.next_id += 1;
        self.flights.insert(
            hash,
            Flight {
                id: self.next_id,
                started: now,
                waiters: Vec::new(),
            },
        );
        Join::Lead(FlightId(self.next_id))
    }

    /// Ends the lookup `id` of `hash`: its waiters, or `None` if that flight is no longer the one in
    /// progress (abandoned and taken over).
    pub fn finish(&mut self, hash: &KeyHash, id: FlightId) -> Option<Vec<W>> {
        match self.flights.get(hash) {
            Some(f) if f.id == id.0 => self.flights.remove(hash).map(|f| f.waiters),
            _ => None,
        }
    }

    /// Lookups in progress.
    pub fn len(&self) -> usize {
        self.flights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flights.is_empty()
    }

    /// Requests waiting, over every lookup (O(flights), for metrics).
    pub fn waiting(&self) -> usize {
        self.flights.values().map(|f| f.waiters.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Entitlement, Secret};

    const T0_UNIX: u64 = 1_800_000_000;

    /// A fixed origin for both clocks; `at(s)` is `s` seconds (fractions allowed) later on both.
    struct Clock(Instant);

    impl Clock {
        fn new() -> Clock {
            Clock(Instant::now())
        }
        fn at(&self, s: f64) -> Now {
            let d = Duration::from_secs_f64(s);
            Now {
                mono: self.0 + d,
                wall: UNIX_EPOCH + Duration::from_secs(T0_UNIX) + d,
            }
        }
    }

    fn key(id: &str) -> Arc<ApiKey> {
        Arc::new(ApiKey {
            id: Secret::new(id),
            secrets: vec![],
            name: format!("immuta:{id}"),
            legacy_header: true,
            enabled: true,
            expires_at: None,
            data_sources: Entitlement::read_all(),
            session: None,
        })
    }

    fn policy(allow: u64, deny: u64, stale: u64, max: usize) -> CachePolicy {
        CachePolicy {
            allow_ttl: Duration::from_secs(allow),
            deny_ttl: Duration::from_secs(deny),
            stale_if_error: Duration::from_secs(stale),
            max_entries: max,
        }
    }

    /// What `get` says, in one letter: F(resh), D(enied), S(tale), M(issing).
    fn state(c: &DecisionCache, h: &KeyHash, now: Now) -> char {
        match c.get(h, now) {
            Cached::Fresh(_) => 'F',
            Cached::Denied => 'D',
            Cached::Stale(_) => 'S',
            Cached::Missing => 'M',
        }
    }

    #[test]
    fn lifetimes_of_allows_and_denies() {
        // (what, policy allow/deny/stale, grant expiration in seconds after t0, [(time, expected)]).
        type Case = (
            &'static str,
            (u64, u64, u64),
            Option<u64>,
            &'static [(f64, char)],
        );
        let cases: &[Case] = &[
            (
                "allow lives allow_ttl",
                (60, 10, 0),
                None,
                &[(0.0, 'F'), (59.9, 'F'), (60.0, 'M'), (3600.0, 'M')],
            ),
            (
                "a grant expiring first bounds the allow",
                (60, 10, 0),
                Some(30),
                &[(0.0, 'F'), (29.9, 'F'), (30.0, 'M'), (45.0, 'M')],
            ),
            (
                "a grant expiring later does not lengthen it",
                (60, 10, 0),
                Some(3600),
                &[(59.9, 'F'), (60.0, 'M')],
            ),
            (
                "stale_if_error serves an expired allow for the window only",
                (60, 10, 30),
                None,
                &[
                    (59.9, 'F'),
                    (60.0, 'S'),
                    (89.9, 'S'),
                    (90.0, 'M'),
                    (500.0, 'M'),
                ],
            ),
            (
                "never stale past the grant's expiration",
                (60, 10, 30),
                Some(70),
                &[(59.9, 'F'), (60.0, 'S'), (69.9, 'S'), (70.0, 'M')],
            ),
            (
                "an expiration inside the TTL leaves no stale window",
                (60, 10, 30),
                Some(20),
                &[(19.9, 'F'), (20.0, 'M'), (60.0, 'M'), (80.0, 'M')],
            ),
            (
                "allow_ttl 0 with stale_if_error: stale from the start (refresh first)",
                (0, 10, 30),
                None,
                &[(0.0, 'S'), (29.9, 'S'), (30.0, 'M')],
            ),
            (
                "allow_ttl 0 and no stale: nothing cached",
                (0, 10, 0),
                None,
                &[(0.0, 'M')],
            ),
            (
                "a grant already expired: nothing cached",
                (60, 10, 30),
                Some(0),
                &[(0.0, 'M'), (1.0, 'M')],
            ),
        ];
        for (what, (a, d, s), expires, checks) in cases {
            let clock = Clock::new();
            let mut c = DecisionCache::new(policy(*a, *d, *s, 100));
            let h = KeyHash::api_key("k");
            c.insert_allow(h, key("k"), expires.map(|e| T0_UNIX + e), clock.at(0.0));
            for (t, expected) in *checks {
                assert_eq!(state(&c, &h, clock.at(*t)), *expected, "{what}: at {t} s");
            }
        }
    }

    #[test]
    fn denies_live_deny_ttl_and_are_never_stale() {
        let clock = Clock::new();
        let mut c = DecisionCache::new(policy(60, 10, 300, 100));
        let h = KeyHash::api_key("random");
        c.insert_deny(h, clock.at(0.0));
        for (t, expected) in [(0.0, 'D'), (9.9, 'D'), (10.0, 'M'), (100.0, 'M')] {
            assert_eq!(state(&c, &h, clock.at(t)), expected, "at {t} s");
        }
        // deny_ttl 0: denies are not cached.
        let mut c = DecisionCache::new(policy(60, 0, 300, 100));
        c.insert_deny(h, clock.at(0.0));
        assert_eq!(state(&c, &h, clock.at(0.0)), 'M');
        assert!(c.is_empty());
    }

    #[test]
    fn a_deny_replaces_an_allow_and_stale_never_turns_a_deny_into_an_allow() {
        let clock = Clock::new();
        let mut c = DecisionCache::new(policy(60, 10, 300, 100));
        let h = KeyHash::api_key("k");
        c.insert_allow(h, key("k"), None, clock.at(0.0));
        assert_eq!(state(&c, &h, clock.at(61.0)), 'S');
        // The refresh answered "revoked": denied, then missing (never the old allow again).
        c.insert_deny(h, clock.at(61.0));
        assert_eq!(state(&c, &h, clock.at(61.0)), 'D');
        assert_eq!(state(&c, &h, clock.at(71.0)), 'M');
        assert_eq!(state(&c, &h, clock.at(200.0)), 'M');
        assert_eq!(c.stats().deny_entries, 1);
        // An allow replaces a deny, and the counts follow.
        c.insert_allow(h, key("k"), None, clock.at(72.0));
        assert_eq!(state(&c, &h, clock.at(72.0)), 'F');
        assert_eq!((c.len(), c.stats().deny_entries), (1, 0));
    }

    #[test]
    fn the_wall_clock_expiration_holds_even_if_the_clocks_disagree() {
        // The wall clock jumps 1 hour forward while the monotonic clock does not: the grant's expiration
        // (wall) still ends the entry.
        let clock = Clock::new();
        let mut c = DecisionCache::new(policy(60, 10, 30, 100));
        let h = KeyHash::api_key("k");
        c.insert_allow(h, key("k"), Some(T0_UNIX + 40), clock.at(0.0));
        let mut now = clock.at(1.0);
        assert_eq!(state(&c, &h, now), 'F');
        now.wall += Duration::from_secs(3600);
        assert_eq!(state(&c, &h, now), 'M');
        // The wall clock steps an hour back: the expiration, turned into monotonic time at the insert,
        // still ends the entry at 40 s (stale window included).
        let mut now = clock.at(39.9);
        now.wall -= Duration::from_secs(3600);
        assert_eq!(state(&c, &h, now), 'F');
        let mut now = clock.at(40.0);
        now.wall -= Duration::from_secs(3600);
        assert_eq!(state(&c, &h, now), 'M');
    }

    #[test]
    fn the_map_is_keyed_by_hash_never_by_the_key() {
        let h = KeyHash::api_key("my-secret-api-key");
        assert_eq!(h, KeyHash::api_key("my-secret-api-key"));
        assert_ne!(h, KeyHash::api_key("my-secret-api-kez"));
        // The two credential spaces are apart: an access key id (public) sent as an API key cannot reach
        // the signing key's entry.
        assert_ne!(h, KeyHash::access_key_id("my-secret-api-key"));
        let mut plain = Sha256::new();
        plain.update(b"kmy-secret-api-key");
        assert_eq!(h.as_bytes(), &<[u8; 32]>::from(plain.finalize()));
        // Neither the hash's bytes nor its Debug hold the key.
        assert!(!h
            .as_bytes()
            .windows(6)
            .any(|w| w == b"secret" || w == b"my-sec"));
        let shown = format!("{h:?}");
        assert!(!shown.contains("secret") && shown.len() < 30, "{shown}");
        let clock = Clock::new();
        let mut c = DecisionCache::new(CachePolicy::default());
        c.insert_deny(h, clock.at(0.0));
        assert!(!format!("{:?}", c.entries.keys().collect::<Vec<_>>()).contains("secret"));
    }

    #[test]
    fn eviction_at_the_bound_takes_dead_entries_then_those_expiring_first() {
        let clock = Clock::new();
        let mut c = DecisionCache::new(policy(60, 10, 0, 8));
        let h = |i: usize| KeyHash::api_key(&format!("k{i}"));
        // 4 allows at t=0 (fresh until 60), 4 denies at t=5 (until 15).
        for i in 0..4 {
            c.insert_allow(h(i), key("k"), None, clock.at(0.0));
        }
        for i in 4..8 {
            assert_eq!(c.insert_deny(h(i), clock.at(5.0)), 0);
        }
        assert_eq!((c.len(), c.stats().deny_entries), (8, 4));
        // Full, nothing dead at t=6: one pass frees an eighth (1 entry), the one expiring first: a deny.
        assert_eq!(c.insert_allow(h(8), key("k"), None, clock.at(6.0)), 1);
        assert_eq!(c.len(), 8);
        assert_eq!(c.stats().deny_entries, 3);
        assert_eq!(
            (0..4)
                .filter(|i| state(&c, &h(*i), clock.at(6.0)) == 'F')
                .count(),
            4
        );
        // Replacing an existing entry when full evicts nothing.
        assert_eq!(c.insert_allow(h(8), key("k"), None, clock.at(6.5)), 0);
        assert_eq!(c.len(), 8);
        // At t=20 the denies are dead: the sweep removes them, nothing live is evicted.
        assert_eq!(c.insert_allow(h(9), key("k"), None, clock.at(20.0)), 0);
        let stats = c.stats();
        assert_eq!((stats.entries, stats.deny_entries), (6, 0));
        assert_eq!((stats.evicted, stats.expired_removed), (1, 3));
        for i in (0..4).chain(8..10) {
            assert_eq!(state(&c, &h(i), clock.at(20.0)), 'F', "k{i}");
        }
    }

    #[test]
    fn a_flood_of_random_keys_stays_within_the_bound_and_keeps_real_users() {
        let clock = Clock::new();
        let max = 1000;
        let mut c = DecisionCache::new(policy(60, 10, 0, max));
        let users: Vec<KeyHash> = (0..100)
            .map(|i| KeyHash::api_key(&format!("user{i}")))
            .collect();
        for u in &users {
            c.insert_allow(*u, key("u"), None, clock.at(0.0));
        }
        let mut passes = 0;
        for i in 0..20_000 {
            let t = 1.0 + i as f64 * 0.001; // 20,000 random keys in 20 s, each denied
            if c.insert_deny(KeyHash::api_key(&format!("random{i}")), clock.at(t)) > 0 {
                passes += 1;
            }
            assert!(c.len() <= max);
        }
        // Each pass freed an eighth: about one pass per 125 inserts once full, not one per insert.
        assert!(passes <= 20_000 / (max / 8) + 1, "{passes} eviction passes");
        // The users' allows (fresh until 60) outlived the flood's denies.
        for u in &users {
            assert_eq!(state(&c, u, clock.at(21.0)), 'F');
        }
    }

    #[test]
    fn stale_allows_are_evicted_before_fresh_entries() {
        let clock = Clock::new();
        let mut c = DecisionCache::new(policy(60, 100, 600, 8));
        let h = |i: usize| KeyHash::api_key(&format!("k{i}"));
        c.insert_allow(h(0), key("k"), None, clock.at(0.0)); // stale from 60 to 660
        for i in 1..8 {
            c.insert_deny(h(i), clock.at(50.0)); // fresh until 150
        }
        c.insert_deny(h(8), clock.at(70.0));
        assert_eq!(state(&c, &h(0), clock.at(70.0)), 'M');
        assert_eq!(c.len(), 8);
    }

    #[test]
    fn zero_entries_caches_nothing_and_a_smaller_bound_applies_at_once() {
        let clock = Clock::new();
        let mut c = DecisionCache::new(policy(60, 10, 0, 0));
        c.insert_allow(KeyHash::api_key("a"), key("a"), None, clock.at(0.0));
        c.insert_deny(KeyHash::api_key("b"), clock.at(0.0));
        assert!(c.is_empty());

        let mut c = DecisionCache::new(policy(60, 10, 0, 100));
        for i in 0..50 {
            c.insert_allow(
                KeyHash::api_key(&i.to_string()),
                key("k"),
                None,
                clock.at(i as f64),
            );
        }
        c.set_policy(policy(60, 10, 0, 10), clock.at(50.0));
        assert_eq!(c.len(), 10);
        // The ten newest stayed (the oldest expire first).
        for i in 40..50 {
            assert_eq!(
                state(&c, &KeyHash::api_key(&i.to_string()), clock.at(50.0)),
                'F'
            );
        }
        assert!(c.remove(&KeyHash::api_key("45")));
        assert!(!c.remove(&KeyHash::api_key("45")));
        c.clear();
        assert_eq!(c.stats().entries, 0);
    }

    #[test]
    fn sweep_removes_only_dead_entries() {
        let clock = Clock::new();
        let mut c = DecisionCache::new(policy(60, 10, 30, 100));
        c.insert_allow(KeyHash::api_key("a"), key("a"), None, clock.at(0.0)); // kept until 90
        c.insert_allow(
            KeyHash::api_key("b"),
            key("b"),
            Some(T0_UNIX + 20),
            clock.at(0.0),
        ); // 20
        c.insert_deny(KeyHash::api_key("c"), clock.at(0.0)); // 10
        assert_eq!(c.sweep(clock.at(15.0)), 1);
        assert_eq!(c.sweep(clock.at(75.0)), 1);
        assert_eq!(state(&c, &KeyHash::api_key("a"), clock.at(75.0)), 'S');
        assert_eq!(c.sweep(clock.at(90.0)), 1);
        assert!(c.is_empty());
        assert_eq!(c.stats().expired_removed, 3);
        assert_eq!(c.stats().deny_entries, 0);
    }

    fn limits(flights: usize, waiters: usize) -> FlightLimits {
        FlightLimits {
            max_flights: flights,
            max_waiters: waiters,
            abandon_after: Duration::from_secs(5),
        }
    }

    #[test]
    fn one_lookup_for_a_thousand_requests_of_one_key() {
        let t = Instant::now();
        let mut f: Flights<usize> = Flights::new(limits(4, 2000));
        let h = KeyHash::api_key("k");
        let Join::Lead(id) = f.join(h, t, || unreachable!("a leader makes no waiter")) else {
            panic!("the first request leads");
        };
        for i in 1..1000 {
            assert_eq!(f.join(h, t, || i), Join::Follow);
        }
        assert_eq!((f.len(), f.waiting()), (1, 999));
        let waiters = f.finish(&h, id).unwrap();
        assert_eq!(waiters, (1..1000).collect::<Vec<_>>());
        assert!(f.is_empty());
        // Finished: the next request leads a new lookup.
        assert!(matches!(f.join(h, t, || 0), Join::Lead(_)));
    }

    #[test]
    fn flights_and_waiters_are_bounded() {
        let t = Instant::now();
        let mut f: Flights<u8> = Flights::new(limits(2, 3));
        let h = |i: u8| KeyHash::api_key(&i.to_string());
        assert!(matches!(f.join(h(0), t, || 0), Join::Lead(_)));
        assert!(matches!(f.join(h(1), t, || 0), Join::Lead(_)));
        // A third distinct key: refused (503), not queued.
        assert_eq!(f.join(h(2), t, || 0), Join::Refused);
        for _ in 0..3 {
            assert_eq!(f.join(h(0), t, || 0), Join::Follow);
        }
        assert_eq!(f.join(h(0), t, || 0), Join::Refused);
        assert_eq!(f.waiting(), 3);
    }

    #[test]
    fn an_abandoned_lookup_is_taken_over_and_its_late_result_is_not_the_flights() {
        let t = Instant::now();
        let later = t + Duration::from_secs(6);
        let mut f: Flights<u8> = Flights::new(limits(1, 10));
        let h = KeyHash::api_key("k");
        let Join::Lead(first) = f.join(h, t, || 0) else {
            panic!()
        };
        assert_eq!(f.join(h, t, || 1), Join::Follow);
        // 6 s later (past abandon_after) the next request leads; the old waiter was dropped.
        let Join::Lead(second) = f.join(h, later, || 2) else {
            panic!("an abandoned lookup is taken over")
        };
        assert_ne!(first, second);
        assert_eq!(f.join(h, later, || 3), Join::Follow);
        // The first leader finishes late: not its flight any more.
        assert_eq!(f.finish(&h, first), None);
        assert_eq!(f.finish(&h, second), Some(vec![3]));

        // Abandoned flights of other keys do not hold the slots for ever.
        let Join::Lead(_) = f.join(KeyHash::api_key("x"), t, || 0) else {
            panic!()
        };
        assert_eq!(f.join(KeyHash::api_key("y"), t, || 0), Join::Refused);
        assert!(matches!(
            f.join(KeyHash::api_key("y"), later, || 0),
            Join::Lead(_)
        ));
        assert_eq!(f.len(), 1);
    }
}
