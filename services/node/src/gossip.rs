//! Members compare the audit log's checkpoints on every call between them: the caller sends the
//! latest checkpoint it verified as metadata, the callee compares it with its own in the
//! background ([`AuditWatch::compare_peer`]). A coordinator that shows two members different
//! histories is caught the first time they talk.
//!
//! A busy caller (the coordinator delivering notifications, a participant asking for facts) sends
//! a newer checkpoint with nearly every call, and each comparison costs a signature check and often
//! a consistency proof from the coordinator. So one comparison per caller runs at a time, at most
//! one per [`PEER_CHECK_INTERVAL`]; the checkpoints that arrive meanwhile are not dropped but
//! replaced by the newest, which is compared next. A first contact is compared at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use doorzet_domain::Oin;
use doorzet_mesh::Caller;
use tonic::metadata::MetadataValue;

use crate::audit_watch::{AuditWatch, PeerCheck};

/// Shortest time between two comparisons of one caller's checkpoints.
pub const PEER_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The callers whose comparison is running, each with the newest checkpoint that came in since
/// (compared when the running one is done).
#[derive(Debug, Default)]
pub struct PeerQueue {
    running: Mutex<HashMap<Oin, Option<String>>>,
}

impl PeerQueue {
    /// Offers `note` from `peer`: returned when no comparison of `peer` runs (the caller starts
    /// one), otherwise kept as the next to compare in place of an older one.
    pub fn offer(&self, peer: Oin, note: String) -> Option<String> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        match running.get_mut(&peer) {
            Some(next) => {
                *next = Some(note);
                None
            }
            None => {
                running.insert(peer, None);
                Some(note)
            }
        }
    }

    /// The next note to compare for `peer` once a comparison is done; `None` ends its turn.
    pub fn next(&self, peer: Oin) -> Option<String> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let next = running.get_mut(&peer).and_then(Option::take);
        if next.is_none() {
            running.remove(&peer);
        }
        next
    }
}

/// The metadata key that carries the caller's latest verified checkpoint (its signed note).
pub const HEADER: &str = doorzet_mesh::CHECKPOINT_HEADER;

/// Adds this node's latest verified checkpoint to an outgoing call to another member.
pub fn attach<T>(audit: &AuditWatch, request: &mut tonic::Request<T>) {
    if let Some(note) = audit.latest_note() {
        request
            .metadata_mut()
            .insert_bin(HEADER, MetadataValue::from_bytes(note.as_bytes()));
    }
}

/// Compares the checkpoint a calling member sent, if any, without delaying its call.
pub fn observe<T>(audit: &AuditWatch, request: &tonic::Request<T>) {
    let Some(value) = request.metadata().get_bin(HEADER) else {
        return;
    };
    let Ok(caller) = Caller::from_request(request) else {
        return;
    };
    let Ok(bytes) = value.to_bytes() else {
        return;
    };
    let Ok(note) = String::from_utf8(bytes.to_vec()) else {
        return;
    };
    let peer = caller.org;
    let Some(mut note) = audit.peer_queue().offer(peer, note) else {
        return;
    };
    let audit = audit.clone();
    tokio::spawn(async move {
        loop {
            match audit.compare_peer(peer, &note).await {
                PeerCheck::Consistent | PeerCheck::Fork(_) => {}
                PeerCheck::Unverifiable(why) => {
                    tracing::warn!(%peer, reason = %why, "a member sent a checkpoint that does not verify")
                }
                PeerCheck::CannotCheck(why) => {
                    tracing::debug!(%peer, reason = %why, "member's checkpoint not compared")
                }
            }
            tokio::time::sleep(PEER_CHECK_INTERVAL).await;
            match audit.peer_queue().next(peer) {
                Some(newer) => note = newer,
                None => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn org(i: u8) -> Oin {
        format!("0000000199900000000{i}").parse().expect("oin")
    }

    #[test]
    fn a_first_contact_is_compared_at_once_and_the_newest_waiting_note_next() {
        let queue = PeerQueue::default();
        assert_eq!(queue.offer(org(1), "a".into()).as_deref(), Some("a"));
        // Another caller is not held up by the first.
        assert_eq!(queue.offer(org(2), "x".into()).as_deref(), Some("x"));
        assert_eq!(queue.offer(org(1), "b".into()), None);
        assert_eq!(queue.offer(org(1), "c".into()), None);
        assert_eq!(queue.next(org(1)).as_deref(), Some("c"));
        assert_eq!(queue.next(org(1)), None);
        // The turn ended: the next note starts a comparison again.
        assert_eq!(queue.offer(org(1), "d".into()).as_deref(), Some("d"));
    }

    proptest! {
        /// Whatever the order of offers and finished comparisons, the last note a caller sent is
        /// compared (started by an offer or handed over by `next`), and never two comparisons of
        /// one caller run at once.
        #[test]
        fn the_last_note_is_always_compared(steps in proptest::collection::vec(any::<bool>(), 1..60)) {
            let queue = PeerQueue::default();
            let (mut running, mut last_sent, mut last_compared) = (false, None, None);
            for (i, offer) in steps.into_iter().enumerate() {
                if offer {
                    let note = i.to_string();
                    last_sent = Some(note.clone());
                    if let Some(started) = queue.offer(org(1), note) {
                        prop_assert!(!running, "a second comparison started");
                        running = true;
                        last_compared = Some(started);
                    }
                } else if running {
                    match queue.next(org(1)) {
                        Some(next) => last_compared = Some(next),
                        None => running = false,
                    }
                }
            }
            while running {
                match queue.next(org(1)) {
                    Some(next) => last_compared = Some(next),
                    None => running = false,
                }
            }
            prop_assert_eq!(last_compared, last_sent);
        }
    }
}
