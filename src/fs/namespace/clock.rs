//! The namespace's clock: when S3 answered, and how old an answer is.
//!
//! It is `Instant::now()` plus a skew that only tests move, so "the TTL runs out" can be one
//! step of a model test instead of a sleep. Every age the namespace compares with a TTL is
//! measured with this clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct Clock {
    skew_ns: AtomicU64,
}

impl Clock {
    pub fn now(&self) -> Instant {
        Instant::now() + Duration::from_nanos(self.skew_ns.load(Ordering::Relaxed))
    }

    /// How long ago `t` was.
    pub fn age(&self, t: Instant) -> Duration {
        self.now().saturating_duration_since(t)
    }

    /// Moves this clock forward (tests: "the TTL runs out").
    pub fn advance(&self, d: Duration) {
        self.skew_ns
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_ages_what_was_seen() {
        let c = Clock::default();
        let t = c.now();
        c.advance(Duration::from_secs(10));
        assert!(c.age(t) >= Duration::from_secs(10));
    }
}
