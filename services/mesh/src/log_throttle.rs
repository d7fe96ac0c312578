//! Rate limits for log lines that a stranger or a broken environment can make repeat (refused
//! handshakes, accept failures, a missing file): at most one line per interval per call site, and
//! that line says how many were suppressed since the previous one.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// One call site's rate limit; declare it as a `static` next to the log line.
#[derive(Debug)]
pub struct Throttle {
    interval_ms: u64,
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    /// Allows one line per `interval`.
    pub const fn per(interval: Duration) -> Self {
        Self {
            interval_ms: interval.as_millis() as u64,
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Returns `Some(suppressed)` when a line may be written now, with the number of lines
    /// suppressed since the last one; `None` (and counts one more) otherwise.
    pub fn allow(&self) -> Option<u64> {
        let now = EPOCH.elapsed().as_millis() as u64;
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now + self.interval_ms,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_one_line_per_interval_and_counts_the_rest() {
        let throttle = Throttle::per(Duration::from_secs(3600));
        assert_eq!(throttle.allow(), Some(0));
        for _ in 0..5 {
            assert_eq!(throttle.allow(), None);
        }
        assert_eq!(throttle.suppressed.load(Ordering::Relaxed), 5);

        let open = Throttle::per(Duration::ZERO);
        assert_eq!(open.allow(), Some(0));
        assert_eq!(open.allow(), Some(0));
    }
}
