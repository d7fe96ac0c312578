//! The coordinator's clock: the system clock, which tests move forward to make deadlines pass
//! without sleeping. The scheduler re-reads it whenever it is moved.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;

/// The system clock plus an offset that only grows.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicU64>,
    moved: Arc<Notify>,
}

impl Clock {
    /// Now.
    pub fn now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_millis(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Moves the clock forward by `by` (tests) and wakes whoever waits on it.
    pub fn advance(&self, by: Duration) {
        self.offset_ms
            .fetch_add(by.as_millis() as u64, Ordering::Relaxed);
        self.moved.notify_waiters();
    }

    /// Resolves when the clock is moved.
    pub async fn moved(&self) {
        self.moved.notified().await;
    }

    /// Sleeps until `at` on this clock, or until it is moved (then the caller looks again).
    pub async fn sleep_until(&self, at: SystemTime) {
        let wait = at.duration_since(self.now()).unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = self.moved() => {}
        }
    }
}
