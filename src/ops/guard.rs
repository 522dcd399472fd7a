//! Throttling of repeated authentication failures, per client address and per claimed key id. A sliding
//! one-minute window per subject; past the limit, requests are answered 503 SlowDown without being checked,
//! so a guesser gains nothing and costs s3p nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
/// Bound on remembered subjects; expired ones are dropped when it is reached.
const MAX_SUBJECTS: usize = 100_000;

pub struct AuthThrottle {
    limit: u32,
    failures: Mutex<HashMap<String, (Instant, u32)>>,
}

impl AuthThrottle {
    /// `limit` failures per minute per subject; 0 turns throttling off.
    pub fn new(limit: u32) -> Self {
        AuthThrottle {
            limit,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether any of the subjects is over its limit now.
    pub fn is_blocked(&self, subjects: &[&str], now: Instant) -> bool {
        if self.limit == 0 {
            return false;
        }
        let map = self.failures.lock().unwrap();
        subjects.iter().any(|s| {
            map.get(*s).is_some_and(|(start, count)| {
                now.duration_since(*start) < WINDOW && *count >= self.limit
            })
        })
    }

    pub fn record_failure(&self, subjects: &[&str], now: Instant) {
        if self.limit == 0 {
            return;
        }
        let mut map = self.failures.lock().unwrap();
        if map.len() >= MAX_SUBJECTS {
            map.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        for s in subjects {
            let entry = map.entry((*s).to_string()).or_insert((now, 0));
            if now.duration_since(entry.0) >= WINDOW {
                *entry = (now, 0);
            }
            entry.1 += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_within_a_window() {
        let t = AuthThrottle::new(3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(!t.is_blocked(&["ip:1.2.3.4"], t0));
            t.record_failure(&["ip:1.2.3.4", "key:k"], t0);
        }
        assert!(t.is_blocked(&["ip:1.2.3.4"], t0));
        assert!(
            t.is_blocked(&["ip:9.9.9.9", "key:k"], t0),
            "the key is throttled from anywhere"
        );
        assert!(!t.is_blocked(&["ip:9.9.9.9", "key:other"], t0));
        assert!(
            !t.is_blocked(&["ip:1.2.3.4"], t0 + WINDOW),
            "the window slides"
        );
        assert!(!AuthThrottle::new(0).is_blocked(&["x"], t0));
    }
}
