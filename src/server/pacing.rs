//! The minimum client rate: a reader or uploader that moves a few bytes now and then renews the
//! per-read client timeout for ever, so, every `client_timeout_ms`, the bytes moved since the last check
//! must average `min_client_rate_bytes_per_s`. An honest slow link (even 10 KB/s) never meets this.

use crate::config::Limits;
use std::time::{Duration, Instant};

/// Body bytes moved so far, and the last point the minimum client rate was checked at.
#[derive(Default)]
pub struct Pacing {
    body_sent: u64,
    rate_mark: Option<(Instant, u64)>,
}

impl Pacing {
    /// Counts a chunk of `len` bytes about to move. Every `client_timeout_ms`, the bytes moved since the
    /// last check must average `min_client_rate_bytes_per_s`; returns the bytes and seconds of a
    /// window that fell short.
    pub fn below_min_rate(&mut self, len: usize, limits: &Limits) -> Option<(u64, f64)> {
        self.below_min_rate_at(Instant::now(), len, limits)
    }

    /// Counts a chunk of `len` bytes about to move (`what`: an `upload` or a `response`): whether the
    /// client keeps up with the minimum rate. One that does not is counted in `s3p_limit_hits_total`
    /// and logged.
    pub fn keeps_up(
        &mut self,
        len: usize,
        limits: &Limits,
        metrics: &super::metrics::Metrics,
        request_id: &str,
        what: &str,
    ) -> bool {
        let Some((taken, secs)) = self.below_min_rate(len, limits) else {
            return true;
        };
        metrics.limit_hit("min_client_rate_bytes_per_s");
        log::info!(
            "request {request_id}: the client moved {taken} bytes in {secs:.1} s, less than {} bytes/s: {what} cut",
            limits.min_client_rate_bytes_per_s
        );
        false
    }

    fn below_min_rate_at(
        &mut self,
        now: Instant,
        len: usize,
        limits: &Limits,
    ) -> Option<(u64, f64)> {
        let rate = limits.min_client_rate_bytes_per_s;
        if rate == 0 {
            return None;
        }
        let (mark_time, mark_bytes) = *self.rate_mark.get_or_insert((now, 0));
        let window = Duration::from_millis(limits.client_timeout_ms);
        let elapsed = now.duration_since(mark_time);
        if elapsed >= window {
            // Bytes of earlier chunks only: they have moved (pingora moves a chunk before the next).
            let taken = self.body_sent - mark_bytes;
            if (taken as f64) < rate as f64 * elapsed.as_secs_f64() {
                return Some((taken, elapsed.as_secs_f64()));
            }
            self.rate_mark = Some((now, self.body_sent));
        }
        self.body_sent += len as u64;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_below_the_rate_is_reported_and_a_fast_one_is_not() {
        let limits = Limits {
            min_client_rate_bytes_per_s: 1000,
            client_timeout_ms: 1000,
            ..Limits::default()
        };
        let t0 = Instant::now();
        let mut fast = Pacing::default();
        assert!(fast.below_min_rate_at(t0, 5000, &limits).is_none());
        assert!(fast
            .below_min_rate_at(t0 + Duration::from_millis(1500), 10, &limits)
            .is_none());
        let mut slow = Pacing::default();
        assert!(slow.below_min_rate_at(t0, 10, &limits).is_none());
        let (taken, secs) = slow
            .below_min_rate_at(t0 + Duration::from_secs(2), 10, &limits)
            .unwrap();
        assert_eq!(taken, 10);
        assert!((secs - 2.0).abs() < 1e-9);
        // 0 turns the check off.
        let off = Limits {
            min_client_rate_bytes_per_s: 0,
            ..limits
        };
        assert!(slow
            .below_min_rate_at(t0 + Duration::from_secs(9), 0, &off)
            .is_none());
    }
}
