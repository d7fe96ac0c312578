//! Fewer, fuller writes on the mesh listeners' HTTP/2 connections over TLS.
//!
//! Two things made a busy connection send one TLS record and one `writev` per response:
//!
//! - Responses that complete together (a group commit answers dozens of requests at once) each
//!   wake the connection's task, and the runtime runs a woken task straight after the one that woke
//!   it. So the connection wrote the first response before the others had queued theirs.
//!   [`WriteYield`] lets the connection's task yield once before its first write after a flush, so
//!   the responses already on their way are in its buffer when it writes.
//! - h2 copies a frame's payload into its write buffer only below a threshold, and sends a larger
//!   one with a write of its own. The threshold is 256 bytes when the transport says it writes
//!   vectored and 1 KiB when it does not. Over TLS nothing gains from vectored writes (rustls copies
//!   the plaintext into its records either way), so the listeners' streams say they do not, and
//!   answers up to 1 KiB (a `QueryFacts` answer) share writes. Client streams already say so.
//!
//! Clients do not yield: their calls to one peer come one or a few at a time (a delivery lane, a
//! `ListMandates` fan-out), so a yield there would cost a poll and save nothing. Measured with
//! `cargo bench -p doorzet-e2e --bench facts`: see the README.

use std::task::{Context, Poll};

/// Yields once before the first write after a flush.
#[derive(Debug, Default)]
pub struct WriteYield {
    yielded: bool,
}

impl WriteYield {
    /// Call before writing: `Pending` (with the task woken again) the first time after a flush.
    pub fn poll_before_write(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Call when a flush completed.
    pub fn flushed(&mut self) {
        self.yielded = false;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    use super::*;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn it_yields_once_per_flush_and_wakes_the_task_to_come_back() {
        let wakes = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut y = WriteYield::default();

        assert!(y.poll_before_write(&mut cx).is_pending());
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            1,
            "a yield without a wake would hang"
        );
        // Every write until the flush goes ahead.
        assert!(y.poll_before_write(&mut cx).is_ready());
        assert!(y.poll_before_write(&mut cx).is_ready());
        y.flushed();
        assert!(y.poll_before_write(&mut cx).is_pending());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2);
        assert!(y.poll_before_write(&mut cx).is_ready());
    }
}
