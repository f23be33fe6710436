//! At most N events of a kind per window; callers never wait on it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Window {
    start: Option<Instant>,
    count: u32,
    suppressed: u64,
}

/// A fixed-window rate limiter that counts what it suppresses.
#[derive(Debug)]
pub struct RateLimiter {
    max: u32,
    window: Duration,
    state: Mutex<Window>,
    /// Calls that found the lock taken (another thread is checking): they
    /// are suppressed rather than made to wait.
    contended: AtomicU64,
}

impl RateLimiter {
    /// At most `max` per `window`.
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            state: Mutex::new(Window {
                start: None,
                count: 0,
                suppressed: 0,
            }),
            contended: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when an event may go out at `now`, `n` being how many were
    /// suppressed since the last one that went out; `None` when suppressed.
    pub fn check(&self, now: Instant) -> Option<u64> {
        let Ok(mut w) = self.state.try_lock() else {
            self.contended.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let expired = w
            .start
            .is_none_or(|s| now.saturating_duration_since(s) >= self.window);
        if expired {
            w.start = Some(now);
            w.count = 0;
        }
        if w.count >= self.max {
            w.suppressed += 1;
            return None;
        }
        w.count += 1;
        let suppressed =
            std::mem::take(&mut w.suppressed) + self.contended.swap(0, Ordering::Relaxed);
        Some(suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_window_and_reports_suppressed() {
        let limiter = RateLimiter::new(2, Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(limiter.check(t0), Some(0));
        assert_eq!(limiter.check(t0), Some(0));
        assert_eq!(limiter.check(t0), None);
        assert_eq!(limiter.check(t0 + Duration::from_millis(999)), None);
        // A new window: the two suppressed are reported with the next one.
        assert_eq!(limiter.check(t0 + Duration::from_secs(1)), Some(2));
        assert_eq!(limiter.check(t0 + Duration::from_secs(1)), Some(0));
        assert_eq!(limiter.check(t0 + Duration::from_secs(1)), None);
    }

    #[test]
    fn zero_max_suppresses_everything() {
        let limiter = RateLimiter::new(0, Duration::from_secs(1));
        assert_eq!(limiter.check(Instant::now()), None);
    }
}
