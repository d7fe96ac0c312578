//! The coordinator's clock: the system clock, which tests move forward to make deadlines pass
//! without sleeping. The scheduler re-reads it whenever it is moved.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

/// The system clock plus an offset that only grows.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicU64>,
    /// The clock's time right after its last move, in milliseconds since 1970 (0: never moved).
    moved_to_ms: Arc<AtomicU64>,
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
        let to = self.now().duration_since(UNIX_EPOCH).unwrap_or_default();
        self.moved_to_ms
            .fetch_max(to.as_millis() as u64, Ordering::Relaxed);
        self.moved.notify_waiters();
    }

    /// When a deadline at `due` fell due on this clock: `due` itself, unless the clock was moved
    /// past it, then the moment of that move (a deadline cannot fire before the clock reaches it).
    pub fn fell_due(&self, due: SystemTime) -> SystemTime {
        let moved_to = UNIX_EPOCH + Duration::from_millis(self.moved_to_ms.load(Ordering::Relaxed));
        due.max(moved_to)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_falls_due_when_the_clock_reaches_it_or_jumps_past_it() {
        let clock = Clock::default();
        let ahead = clock.now() + Duration::from_secs(3600);
        assert_eq!(clock.fell_due(ahead), ahead, "not moved: its own time");
        clock.advance(Duration::from_secs(7200));
        let moved_to = clock.fell_due(ahead);
        assert!(moved_to > ahead, "jumped past: the moment of the move");
        assert!(moved_to <= clock.now());
        let later = clock.now() + Duration::from_secs(60);
        assert_eq!(clock.fell_due(later), later, "still ahead after the move");
    }
}
