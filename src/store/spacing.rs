//! Writes to one key, spaced by a few milliseconds.
//!
//! Some S3-compatible servers order the versions of a key by the millisecond each write was
//! received and break a tie arbitrarily. Garage does, and gives a CopyObject the current
//! millisecond even when another version of the same key already has it (its PutObject moves
//! past it; its CopyObject does not). Two writes to one key in the same millisecond, such as
//! `rsync` setting a file's times and then its mode (two metadata self-copies), then leave
//! either one as the object's current version: the second change is lost about one time in a
//! hundred. So a write to a key waits until `GAP` has passed since the last write to that key
//! completed. It costs nothing unless the same key is written twice in a row that fast.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long after a write to a key completed the next one to it may start.
pub const GAP: Duration = Duration::from_millis(2);
/// Keys remembered (only the last few milliseconds matter).
const KEYS: usize = 4096;

#[derive(Debug)]
pub struct WriteSpacing {
    last: Mutex<lru::LruCache<String, Instant>>,
}

impl Default for WriteSpacing {
    fn default() -> Self {
        WriteSpacing {
            last: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(KEYS).expect("non-zero"),
            )),
        }
    }
}

impl WriteSpacing {
    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<String, Instant>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until a write to `key` may start.
    pub async fn before(&self, key: &str) {
        let wait = self
            .lock()
            .peek(key)
            .map(|t| GAP.saturating_sub(t.elapsed()));
        if let Some(w) = wait.filter(|w| !w.is_zero()) {
            tokio::time::sleep(w).await;
        }
    }

    /// A write to `key` completed (or failed: the server may still have stored it).
    pub fn after(&self, key: &str) {
        self.lock().put(key.to_string(), Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_write_to_one_key_waits_the_gap() {
        let s = WriteSpacing::default();
        s.after("k");
        let t = Instant::now();
        s.before("k").await;
        assert!(t.elapsed() >= GAP - Duration::from_micros(200));
        let t = Instant::now();
        s.before("other").await;
        assert!(t.elapsed() < GAP);
    }
}
