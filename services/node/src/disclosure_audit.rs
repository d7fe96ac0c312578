//! Appends the disclosure log's metadata to the coordinator's audit log. Records are stored first
//! (so a request never waits on the coordinator) and appended in order in the background, in
//! batches taken from the writer's hand (read back from the database only after a restart, a
//! failed append or when the writer dropped some), retried with backoff while the coordinator is
//! unreachable; a record the coordinator refuses as invalid (its recipient left the directory,
//! say) is kept here only and counted.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use doorzet_audit::entry::{MAX_APPEND, MAX_FACTS};
use doorzet_domain::Oin;
use doorzet_mesh::layers::shape::message_limit;
use doorzet_proto::v1::{self, audit_log_client::AuditLogClient};
use doorzet_store::Database;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::store::disclosures::{self, Outcome, Record, Taken};

/// Records taken per round (sent in calls of at most [`MAX_APPEND`] entries and [`CALL_BYTES`]).
const BATCH: u32 = 1000;
/// How long records gather after a wake-up before they are appended: a little delay in the audit
/// log for far fewer, fuller appends. Much of the coordinator's cost of an entry is its share of a
/// call (a commit, an `fsync`, a signed checkpoint, the task switches around them): at 10 ms a busy
/// node's calls carried about 150 entries and the coordinator spent 13–18 µs an entry; at 25 ms
/// they carry about 400 and it spends 7.5–11 µs.
const LINGER: Duration = Duration::from_millis(25);
/// Most encoded bytes of entries in one call (one larger entry goes alone): a quarter of the mesh's
/// default message limit (`limits.max_message_bytes`, 1 MiB), so that a call of entries with many
/// facts stays well within it. A coordinator that refuses a call as larger than its limit names
/// the limit, and calls are kept within that from then on.
const CALL_BYTES: usize = 256 * 1024;

/// The background appender; `wake` after storing a record.
#[derive(Debug, Clone)]
pub struct Appender {
    /// The node's database.
    pub db: Database,
    /// The coordinator (mutual TLS, checked against the directory).
    pub coordinator: Channel,
    /// This organisation.
    pub org: Oin,
    /// Signalled when a record is stored.
    pub wake: Arc<Notify>,
    /// Records the coordinator refused (kept locally only).
    pub refused: Counter,
    /// The disclosure writer: hands over what it committed and stores the watermark.
    pub writer: disclosures::Writer,
}

/// The audit entries for one record, each with the record's id: one per decision (facts split 64
/// per entry, disclosed and withheld side by side). FACTS_DISCLOSED when the answer disclosed
/// anything, with what it withheld beside it; FACTS_WITHHELD otherwise: outcome REFUSED for a
/// refused request (no facts) or an answer that withheld every fact, SUCCESS when nothing was
/// linked to the case reference.
pub fn entries_of(org: Oin, record: Record) -> Vec<v1::AuditEntry> {
    let (action, outcome) = match record.outcome {
        Outcome::Refused => (v1::AuditAction::FactsWithheld, v1::AuditOutcome::Refused),
        _ if !record.disclosed_fact_ids.is_empty() => {
            (v1::AuditAction::FactsDisclosed, v1::AuditOutcome::Success)
        }
        _ if !record.withheld_fact_ids.is_empty() => {
            (v1::AuditAction::FactsWithheld, v1::AuditOutcome::Refused)
        }
        // Nothing linked to the case reference: the request is on record all the same.
        _ => (v1::AuditAction::FactsWithheld, v1::AuditOutcome::Success),
    };
    let mut base = doorzet_audit::entry::new_entry(record.at, org, action);
    // The coordinator appends an entry with a record id once, so a record sent again after a
    // crash (appended, but the node stopped before it noted so) is not in its log twice.
    base.record_id = record.disclosure_id;
    base.actor_subject = "doorzet-node".into();
    base.recipient_org = record.requester_org;
    base.escalation_id = record.escalation_id;
    base.case_ref = record.case_ref;
    base.purpose = record.purpose;
    base.outcome = outcome as i32;
    if record.outcome == Outcome::Refused {
        return vec![base];
    }
    let parts = record
        .disclosed_fact_ids
        .len()
        .max(record.withheld_fact_ids.len())
        .div_ceil(MAX_FACTS)
        .max(1);
    if parts == 1 {
        // Nearly every answer: the record's lists move into the entry as they are.
        base.fact_ids = record.disclosed_fact_ids;
        base.fact_categories = record.disclosed_categories;
        base.withheld_fact_ids = record.withheld_fact_ids;
        base.withheld_fact_categories = record.withheld_categories;
        return vec![base];
    }
    let mut lists = [
        record.disclosed_fact_ids.into_iter(),
        record.disclosed_categories.into_iter(),
        record.withheld_fact_ids.into_iter(),
        record.withheld_categories.into_iter(),
    ];
    (0..parts)
        .map(|_| {
            let mut e = base.clone();
            let [a, b, c, d] = &mut lists;
            e.fact_ids = a.by_ref().take(MAX_FACTS).collect();
            e.fact_categories = b.by_ref().take(MAX_FACTS).collect();
            e.withheld_fact_ids = c.by_ref().take(MAX_FACTS).collect();
            e.withheld_fact_categories = d.by_ref().take(MAX_FACTS).collect();
            e
        })
        .collect()
}

/// One `Append` call: the encoded entries of `records` records, the last of which has sequence
/// number `last_seq`.
#[derive(Debug, PartialEq)]
struct Call {
    records: usize,
    last_seq: i64,
    entries: Vec<Bytes>,
    bytes: usize,
}

/// The entries of one record, encoded, and their size as a call carries them.
fn encoded(org: Oin, record: Record) -> (Vec<Bytes>, usize) {
    let entries = v1::AppendRequest::of(&entries_of(org, record)).entries;
    let bytes = entries.iter().map(on_the_wire).sum();
    (entries, bytes)
}

/// What an encoded entry adds to a call: its tag, its length and itself.
fn on_the_wire(entry: &Bytes) -> usize {
    prost::encoding::bytes::encoded_len(1, entry)
}

/// Splits records into `Append` calls in order, each at most [`MAX_APPEND`] entries and
/// `call_bytes`, and ending on a record's last entry. A record with more than one call carries
/// goes alone and is sent in as many calls as it takes.
fn appends(org: Oin, records: Vec<(i64, Record)>, call_bytes: usize) -> Vec<Call> {
    let mut calls: Vec<Call> = Vec::new();
    for (seq, record) in records {
        let (entries, bytes) = encoded(org, record);
        match calls.last_mut() {
            Some(call)
                if call.entries.len() + entries.len() <= MAX_APPEND
                    && call.bytes + bytes <= call_bytes =>
            {
                call.records += 1;
                call.last_seq = seq;
                call.bytes += bytes;
                call.entries.extend(entries);
            }
            _ => calls.push(Call {
                records: 1,
                last_seq: seq,
                entries,
                bytes,
            }),
        }
    }
    calls
}

/// How many of `entries`, from the first, one call carries: at most [`MAX_APPEND`] and
/// `call_bytes`, and at least one.
fn first_call(entries: &[Bytes], call_bytes: usize) -> usize {
    let mut bytes = 0;
    entries
        .iter()
        .take(MAX_APPEND)
        .take_while(|e| {
            bytes += on_the_wire(e);
            bytes <= call_bytes
        })
        .count()
        .max(1)
}

/// Appends encoded `entries` in calls of at most [`MAX_APPEND`] entries and `call_bytes`.
async fn append_all(
    client: &mut AuditLogClient<Channel>,
    entries: Vec<Bytes>,
    call_bytes: usize,
) -> Result<(), tonic::Status> {
    let mut rest = entries.as_slice();
    while !rest.is_empty() {
        let (call, more) = rest.split_at(first_call(rest, call_bytes));
        client
            .append(v1::AppendRequest {
                entries: call.to_vec(),
            })
            .await?;
        rest = more;
    }
    Ok(())
}

/// The coordinator's message limit when `status` refused a call as larger than it and the limit is
/// below `call_bytes` (a single entry above the limit gets the same refusal again: an error, not a
/// smaller budget).
fn smaller_limit(status: &tonic::Status, call_bytes: usize) -> Option<usize> {
    message_limit(status).filter(|&limit| limit < call_bytes)
}

fn coordinator_error(status: &tonic::Status) -> crate::Error {
    crate::Error::Coordinator(format!("{}: {}", status.code(), status.message()))
}

/// How far the appender is: the last record appended, whether the next come from the database
/// (at start, after a failed append, and when the writer dropped some) or from the writer's hand,
/// and how many bytes a call carries.
#[derive(Debug)]
struct Progress {
    appended_through: i64,
    from_db: bool,
    call_bytes: usize,
}

impl Appender {
    /// Runs until `shutdown`; an append under way when it comes is finished first.
    pub fn spawn(self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut progress = None;
            let mut backoff = Duration::from_millis(250);
            loop {
                match self.drain(&mut progress).await {
                    Ok(()) => {
                        backoff = Duration::from_millis(250);
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = self.wake.notified() => {}
                            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                        }
                        // Let a busy node's records gather into one append instead of one each.
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(LINGER) => {}
                        }
                    }
                    Err(e) => {
                        if let Some(p) = progress.as_mut() {
                            p.from_db = true;
                        }
                        tracing::warn!(error = %e, retry_in = ?backoff, "disclosure records not yet in the audit log");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        })
    }

    /// Appends everything pending, in order; the first call reads the watermark.
    async fn drain(&self, progress: &mut Option<Progress>) -> Result<(), crate::Error> {
        let progress = match progress {
            Some(p) => p,
            None => progress.insert(Progress {
                appended_through: disclosures::appended_through(&self.db).await?,
                from_db: true,
                call_bytes: CALL_BYTES,
            }),
        };
        let mut client = AuditLogClient::new(self.coordinator.clone());
        loop {
            let pending = if progress.from_db {
                let pending = self
                    .writer
                    .pending(progress.appended_through, BATCH)
                    .await?;
                if pending.is_empty() {
                    // Everything committed so far is appended; what comes next, the writer hands
                    // over (or says it dropped).
                    progress.from_db = false;
                    continue;
                }
                pending
            } else {
                match self
                    .writer
                    .take_committed(progress.appended_through, BATCH as usize)
                {
                    Taken::Lost => {
                        progress.from_db = true;
                        continue;
                    }
                    Taken::Records(r) if r.is_empty() => return Ok(()),
                    Taken::Records(r) => r,
                }
            };
            // Until these are appended, the database is where to find them.
            let from_db = std::mem::replace(&mut progress.from_db, true);
            let taken = pending.len();
            let mut smaller = None;
            for call in appends(self.org, pending, progress.call_bytes) {
                match append_all(&mut client, call.entries, progress.call_bytes).await {
                    Ok(()) => self.appended(progress, call.last_seq).await?,
                    Err(status)
                        if let Some(limit) = smaller_limit(&status, progress.call_bytes) =>
                    {
                        smaller = Some(limit);
                        break;
                    }
                    Err(status) if status.code() != tonic::Code::InvalidArgument => {
                        return Err(coordinator_error(&status));
                    }
                    // One record spoils the call: append its records one by one (read back from
                    // the database, as the call took the entries), keep the refused here.
                    Err(_) => {
                        let these = self
                            .writer
                            .pending(progress.appended_through, call.records as u32)
                            .await?;
                        for (seq, record) in these {
                            let id = record.disclosure_id.clone();
                            let entries = encoded(self.org, record).0;
                            match append_all(&mut client, entries, progress.call_bytes).await {
                                Ok(()) => {}
                                Err(s) if s.code() == tonic::Code::InvalidArgument => {
                                    tracing::error!(disclosure = %id, reason = %s.message(), "disclosure record refused by the audit log; kept in the node's log only");
                                    self.refused.inc();
                                    self.writer.mark_local_only(seq).await?;
                                }
                                Err(s) => return Err(coordinator_error(&s)),
                            }
                            self.appended(progress, seq).await?;
                        }
                    }
                }
            }
            if let Some(limit) = smaller {
                // The rest is read back from the database (`from_db` stays set) and sent again
                // in smaller calls.
                tracing::warn!(
                    limit,
                    "the coordinator's message limit is below the node's calls; audit appends keep within it from now on"
                );
                progress.call_bytes = limit;
                continue;
            }
            progress.from_db = from_db;
            if !from_db && taken < BATCH as usize {
                return Ok(());
            }
        }
    }

    /// Moves the watermark past `seq`: here at once, in the database with the writer's next
    /// transaction.
    async fn appended(&self, progress: &mut Progress, seq: i64) -> Result<(), crate::Error> {
        progress.appended_through = seq;
        self.writer.appended(seq).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use proptest::prelude::*;
    use prost::Message;

    use super::*;

    fn record(disclosed: usize, withheld: usize, refused: bool) -> Record {
        let ids = |n: usize, kind: &str| (0..n).map(|i| format!("{kind}-{i}")).collect();
        Record {
            disclosure_id: crate::ids::ordered("disc"),
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            requester_org: "00000001000000000002".into(),
            requester_person: "emp-1".into(),
            on_behalf_of_org: "00000001000000000001".into(),
            case_ref: "case-abcdefgh".into(),
            escalation_id: "esc-abcdefgh".into(),
            purpose: "escalation_meeting".into(),
            disclosed_fact_ids: ids(disclosed, "fact"),
            disclosed_categories: ids(disclosed, "cat"),
            withheld_fact_ids: ids(withheld, "fact"),
            withheld_categories: ids(withheld, "cat"),
            outcome: if refused {
                Outcome::Refused
            } else {
                Outcome::PartlyWithheld
            },
            refusal: String::new(),
            grant_id: String::new(),
        }
    }

    proptest! {
        /// The calls carry every record's entries once, in order, never more than the audit log
        /// takes in one call, and end on a record's last entry.
        #[test]
        fn appends_keep_order_and_the_audit_logs_limit(
            shapes in prop::collection::vec((0usize..300, 0usize..300, any::<bool>()), 0..120),
            // From the smallest message limit a coordinator takes up to the node's own budget.
            call_bytes in prop_oneof![Just(CALL_BYTES), 1024usize..CALL_BYTES],
        ) {
            let org: Oin = "00000001000000000003".parse().unwrap();
            let records: Vec<(i64, Record)> = shapes
                .iter()
                .enumerate()
                .map(|(i, (d, w, r))| (i as i64 + 1, record(*d, *w, *r)))
                .collect();
            let calls = appends(org, records.clone(), call_bytes);
            prop_assert_eq!(calls.iter().map(|c| c.records).sum::<usize>(), records.len());
            let mut next = 0;
            for call in &calls {
                let n = call.records;
                prop_assert!(n >= 1);
                let bytes = v1::AppendRequest { entries: call.entries.clone() }.encoded_len();
                prop_assert_eq!(bytes, call.bytes);
                prop_assert!(n == 1 || (call.entries.len() <= MAX_APPEND && bytes <= call_bytes));
                prop_assert_eq!(call.last_seq, records[next + n - 1].0);
                let expected: Vec<_> = records[next..next + n]
                    .iter()
                    .flat_map(|(_, r)| entries_of(org, r.clone()))
                    .map(|e| Bytes::from(e.encode_to_vec()))
                    .collect();
                prop_assert_eq!(&call.entries, &expected);
                next += n;
            }
        }
    }

    proptest! {
        /// One decision is one entry (more only past 64 facts a side): every disclosed and every
        /// withheld fact is in exactly one, in order, and each entry is one the audit log takes.
        #[test]
        fn a_decision_is_recorded_once_with_every_fact(
            disclosed in 0usize..150, withheld in 0usize..150, refused in any::<bool>()
        ) {
            let org: Oin = "00000001000000000003".parse().unwrap();
            let r = record(disclosed, withheld, refused);
            let entries = entries_of(org, r.clone());
            let parts = disclosed.max(withheld).div_ceil(MAX_FACTS).max(1);
            prop_assert_eq!(entries.len(), if refused { 1 } else { parts });
            for e in &entries {
                prop_assert!(doorzet_audit::entry::validate_new(e).is_ok());
            }
            let all = |f: fn(&v1::AuditEntry) -> &Vec<String>| -> Vec<String> {
                entries.iter().flat_map(|e| f(e).clone()).collect()
            };
            if refused {
                prop_assert!(all(|e| &e.fact_ids).is_empty());
                prop_assert!(all(|e| &e.withheld_fact_ids).is_empty());
                prop_assert_eq!(entries[0].outcome, v1::AuditOutcome::Refused as i32);
            } else {
                prop_assert_eq!(all(|e| &e.fact_ids), r.disclosed_fact_ids.clone());
                prop_assert_eq!(all(|e| &e.fact_categories), r.disclosed_categories.clone());
                prop_assert_eq!(all(|e| &e.withheld_fact_ids), r.withheld_fact_ids.clone());
                prop_assert_eq!(
                    all(|e| &e.withheld_fact_categories),
                    r.withheld_categories.clone()
                );
                let action = if disclosed > 0 {
                    v1::AuditAction::FactsDisclosed
                } else {
                    v1::AuditAction::FactsWithheld
                };
                prop_assert!(entries.iter().all(|e| e.action == action as i32));
            }
        }
    }

    #[test]
    fn a_busy_round_fills_calls_to_the_limit() {
        let org: Oin = "00000001000000000003".parse().unwrap();
        // A round of records of 7 disclosed and 3 withheld facts: one entry each.
        let records: Vec<(i64, Record)> = (1..=BATCH as i64)
            .map(|i| (i, record(7, 3, false)))
            .collect();
        let calls = appends(org, records, CALL_BYTES);
        assert_eq!(calls.len(), BATCH as usize / MAX_APPEND);
        assert!(
            calls
                .iter()
                .all(|c| c.records == MAX_APPEND && c.entries.len() == MAX_APPEND)
        );
        // Records of 64 facts a side fill a call by its bytes first.
        let large: Vec<(i64, Record)> = (1..=200).map(|i| (i, record(64, 64, false))).collect();
        let calls = appends(org, large, CALL_BYTES);
        assert!(calls.len() > 1);
        assert!(
            calls
                .iter()
                .all(|c| c.bytes <= CALL_BYTES && c.records < MAX_APPEND)
        );
    }

    #[test]
    fn only_a_refusal_for_a_smaller_message_limit_shrinks_the_calls() {
        let limit = |n: usize| {
            let mut s = tonic::Status::resource_exhausted("message too large");
            s.metadata_mut()
                .insert(doorzet_mesh::layers::shape::MESSAGE_LIMIT_KEY, n.into());
            s
        };
        assert_eq!(smaller_limit(&limit(65_536), CALL_BYTES), Some(65_536));
        // Already within it: one entry is larger than the limit, and that is an error.
        assert_eq!(smaller_limit(&limit(65_536), 65_536), None);
        // A quota's refusal names no limit.
        let quota = tonic::Status::resource_exhausted("over the append quota");
        assert_eq!(smaller_limit(&quota, CALL_BYTES), None);
    }

    #[test]
    fn a_call_takes_entries_up_to_its_limits_and_always_one() {
        let small = vec![Bytes::from(vec![1u8; 400]); MAX_APPEND + 10];
        assert_eq!(first_call(&small, CALL_BYTES), MAX_APPEND);
        let large = vec![Bytes::from(vec![1u8; 100_000]); 5];
        assert_eq!(first_call(&large, CALL_BYTES), 2);
        let huge = vec![Bytes::from(vec![1u8; CALL_BYTES + 1]); 2];
        assert_eq!(first_call(&huge, CALL_BYTES), 1);
        // Within a coordinator's smaller limit (400 bytes with tag and length: 403 on the wire).
        assert_eq!(first_call(&small, 4096), 10);
        assert_eq!(first_call(&large, 4096), 1);
    }
}
