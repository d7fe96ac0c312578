//! The audit entry: who did what, when, on whose behalf, about which escalation and facts, for
//! which purpose and with which outcome. Metadata only: identifiers are short tokens without
//! spaces, so a fact's content, a name or a sentence cannot be written into the log. Entries are
//! encoded as deterministic protobuf (`doorzet.v1.AuditEntry`); decoding insists on that canonical
//! form, so one entry has exactly one leaf hash.

use std::time::SystemTime;

use doorzet_domain::Oin;
use doorzet_proto::v1;
use prost::Message;

pub use crate::canonical::EntryView;

/// Current encoding version.
pub const VERSION: u32 = 1;
/// Longest identifier token.
pub const MAX_TOKEN: usize = 64;
/// Most fact ids or categories in one entry.
pub const MAX_FACTS: usize = 64;
/// Most entries one `AuditLog.Append` call may carry. The coordinator's per-organisation burst
/// (`audit.append_burst`) is at least this, so that a full call is never refused for good.
pub const MAX_APPEND: usize = 500;

/// Why an entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid audit entry {field}: {reason}")]
pub struct EntryError {
    /// The field.
    pub field: &'static str,
    /// What is wrong (never echoes the value).
    pub reason: &'static str,
}

fn err(field: &'static str, reason: &'static str) -> EntryError {
    EntryError { field, reason }
}

/// Checks an identifier token: 1..=64 characters of `[A-Za-z0-9._:-]`, or empty when optional.
fn token(field: &'static str, value: &str, is_required: bool) -> Result<(), EntryError> {
    if value.is_empty() {
        return if is_required {
            Err(err(field, "must be set"))
        } else {
            Ok(())
        };
    }
    if value.len() > MAX_TOKEN {
        return Err(err(field, "longer than 64 characters"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        return Err(err(field, "may only hold letters, digits and . _ : -"));
    }
    Ok(())
}

fn org(field: &'static str, value: &str, is_required: bool) -> Result<(), EntryError> {
    if value.is_empty() && !is_required {
        return Ok(());
    }
    value
        .parse::<Oin>()
        .map(|_| ())
        .map_err(|_| err(field, "must be a 20-digit organisation id"))
}

/// Validates a wire entry: every field within its shape.
pub fn validate(entry: &v1::AuditEntry) -> Result<(), EntryError> {
    check(&EntryView::of(entry))
}

/// [`validate`] on an entry's fields wherever they are borrowed from.
pub fn check(entry: &EntryView<'_>) -> Result<(), EntryError> {
    if entry.version != VERSION {
        return Err(err("version", "unsupported version"));
    }
    if entry.time.is_none() {
        return Err(err("time", "must be set"));
    }
    org("actor_org", entry.actor_org, true)?;
    token("actor_subject", entry.actor_subject, false)?;
    org("on_behalf_of_org", entry.on_behalf_of_org, false)?;
    org("recipient_org", entry.recipient_org, false)?;
    match v1::AuditAction::try_from(entry.action) {
        Ok(v1::AuditAction::Unspecified) | Err(_) => {
            return Err(err("action", "must be a known action"));
        }
        Ok(_) => {}
    }
    match v1::AuditOutcome::try_from(entry.outcome) {
        Ok(v1::AuditOutcome::Unspecified) | Err(_) => {
            return Err(err("outcome", "must be a known outcome"));
        }
        Ok(_) => {}
    }
    token("escalation_id", entry.escalation_id, false)?;
    token("case_ref", entry.case_ref, false)?;
    token("purpose", entry.purpose, false)?;
    token("record_id", entry.record_id, false)?;
    for (ids, categories, ids_field, categories_field) in [
        (
            &entry.fact_ids,
            &entry.fact_categories,
            "fact_ids",
            "fact_categories",
        ),
        (
            &entry.withheld_fact_ids,
            &entry.withheld_fact_categories,
            "withheld_fact_ids",
            "withheld_fact_categories",
        ),
    ] {
        if ids.len() > MAX_FACTS || categories.len() > MAX_FACTS {
            return Err(err(ids_field, "more than 64 facts"));
        }
        for id in ids {
            token(ids_field, id, true)?;
        }
        for category in categories {
            token(categories_field, category, true)?;
        }
    }
    Ok(())
}

/// Latest time an entry may carry: the end of year 9999 (RFC 3339 cannot write later).
const MAX_SECONDS: i64 = 253_402_300_799;

/// Checks the rules a new entry must meet on top of [`validate`]: a time that is a real moment
/// (not before 1970, not after 9999, nanoseconds below one second) and no identifier that could
/// carry a citizen service number. Entries already in the log are read with [`validate`] alone,
/// so a rule added later never makes an old log unreadable.
pub fn validate_new(entry: &v1::AuditEntry) -> Result<(), EntryError> {
    check_new(&EntryView::of(entry))
}

/// [`validate_new`] on an entry's fields wherever they are borrowed from.
pub fn check_new(entry: &EntryView<'_>) -> Result<(), EntryError> {
    check(entry)?;
    if let Some(time) = &entry.time
        && (!(0..1_000_000_000).contains(&time.nanos) || !(0..=MAX_SECONDS).contains(&time.seconds))
    {
        return Err(err(
            "time",
            "must lie between 1970 and 9999 with nanos below 10^9",
        ));
    }
    let identifiers = [
        ("actor_subject", entry.actor_subject),
        ("escalation_id", entry.escalation_id),
        ("case_ref", entry.case_ref),
        ("purpose", entry.purpose),
        ("record_id", entry.record_id),
    ]
    .into_iter()
    .chain(entry.fact_ids.iter().map(|id| ("fact_ids", *id)))
    .chain(
        entry
            .fact_categories
            .iter()
            .map(|c| ("fact_categories", *c)),
    )
    .chain(
        entry
            .withheld_fact_ids
            .iter()
            .map(|id| ("withheld_fact_ids", *id)),
    )
    .chain(
        entry
            .withheld_fact_categories
            .iter()
            .map(|c| ("withheld_fact_categories", *c)),
    );
    for (field, value) in identifiers {
        if doorzet_domain::bsn::contains_bsn_shaped(value) {
            return Err(err(
                field,
                "holds a number that could be a citizen service number",
            ));
        }
    }
    Ok(())
}

/// A new entry as received, in its canonical encoding, read in place: its fields for the
/// receiver's own checks ([`Received::view`]), then [`Received::check_new`] for the bytes to
/// append, without decoding every identifier into a string of its own and encoding it again.
#[derive(Debug)]
pub struct Received<'a> {
    view: EntryView<'a>,
    bytes: &'a [u8],
}

impl<'a> Received<'a> {
    /// Reads `bytes`; an error when they are not the canonical encoding of an entry.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, EntryError> {
        Ok(Self {
            view: EntryView::parse(bytes)?,
            bytes,
        })
    }

    /// The entry's fields.
    pub fn view(&self) -> &EntryView<'a> {
        &self.view
    }

    /// Checks the rules of a new entry ([`check_new`]); the bytes to append.
    pub fn check_new(self) -> Result<Encoded, EntryError> {
        check_new(&self.view)?;
        Ok(Encoded {
            bytes: self.bytes.to_vec(),
            keyed: !self.view.record_id.is_empty(),
        })
    }
}

/// Validates a new entry ([`validate_new`]) and encodes it canonically.
pub fn encode(entry: &v1::AuditEntry) -> Result<Vec<u8>, EntryError> {
    encode_new(entry).map(Encoded::into_bytes)
}

/// A new entry that passed [`validate_new`], in its canonical encoding: what the log appends
/// without checking it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    bytes: Vec<u8>,
    keyed: bool,
}

impl Encoded {
    /// The encoded bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The encoded bytes, borrowed.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether the entry has a `record_id`, and so is appended once however often it is sent.
    pub fn is_keyed(&self) -> bool {
        self.keyed
    }
}

/// Validates a new entry ([`validate_new`]) and encodes it canonically, once.
pub fn encode_new(entry: &v1::AuditEntry) -> Result<Encoded, EntryError> {
    validate_new(entry)?;
    Ok(Encoded {
        bytes: entry.encode_to_vec(),
        keyed: !entry.record_id.is_empty(),
    })
}

/// Reads entry bytes in place as [`check_encoded`] does, for appending: the bytes, and whether
/// the entry is keyed.
pub fn check_for_append(bytes: Vec<u8>) -> Result<Encoded, EntryError> {
    let keyed = !check_encoded(&bytes)?.record_id.is_empty();
    Ok(Encoded { bytes, keyed })
}

/// Reads entry bytes in place, insisting on the canonical encoding and a valid entry ([`check`]):
/// what a reader of the log needs when it does not keep the entry.
pub fn check_encoded(bytes: &[u8]) -> Result<EntryView<'_>, EntryError> {
    let view = EntryView::parse(bytes)?;
    check(&view)?;
    Ok(view)
}

/// Decodes entry bytes, insisting on the canonical encoding and a valid entry.
pub fn decode(bytes: &[u8]) -> Result<v1::AuditEntry, EntryError> {
    check_encoded(bytes)?;
    v1::AuditEntry::decode(bytes).map_err(|_| err("bytes", "not an AuditEntry"))
}

/// Starts an entry for `action` by `actor` at `time`, outcome success; fill in the rest.
pub fn new_entry(time: SystemTime, actor: Oin, action: v1::AuditAction) -> v1::AuditEntry {
    v1::AuditEntry {
        version: VERSION,
        time: Some(time.into()),
        actor_org: actor.as_str().to_owned(),
        action: action as i32,
        outcome: v1::AuditOutcome::Success as i32,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> v1::AuditEntry {
        let mut e = new_entry(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_790_000_000),
            "00000001999000002002".parse().unwrap(),
            v1::AuditAction::FactsDisclosed,
        );
        e.actor_subject = "emp-0042".into();
        e.recipient_org = "00000001999000001001".into();
        e.case_ref = "case-7f3a".into();
        e.fact_ids = vec!["f-1".into(), "f-2".into()];
        e.fact_categories = vec!["legal_title".into()];
        e.purpose = "tier3_meeting".into();
        e
    }

    #[test]
    fn encodes_canonically_and_round_trips() {
        let bytes = encode(&sample()).unwrap();
        assert_eq!(decode(&bytes).unwrap(), sample());
        // A non-canonical encoding of the same message (a field repeated) is refused.
        let mut odd = bytes.clone();
        odd.extend_from_slice(&[0x08, 0x01]); // version = 1 again
        assert_eq!(
            decode(&odd).unwrap_err().reason,
            "not in canonical encoding"
        );
    }

    #[test]
    fn free_text_cannot_be_written() {
        let mut e = sample();
        e.purpose = "discuss the eviction on 12 March".into();
        assert_eq!(encode(&e).unwrap_err().field, "purpose");
        let mut e = sample();
        e.fact_ids = vec!["Jan Jansen, BSN 123456782".into()];
        assert_eq!(encode(&e).unwrap_err().field, "fact_ids");
        let mut e = sample();
        e.actor_org = "ZVH".into();
        assert_eq!(encode(&e).unwrap_err().field, "actor_org");
        let mut e = sample();
        e.action = 0;
        assert_eq!(encode(&e).unwrap_err().field, "action");
        // The withheld facts beside the disclosed ones are held to the same rules.
        let mut e = sample();
        e.withheld_fact_ids = vec!["f-3".into()];
        e.withheld_fact_categories = vec!["diagnosis group".into()];
        assert_eq!(encode(&e).unwrap_err().field, "withheld_fact_categories");
        e.withheld_fact_categories = vec!["diagnosis_group".into()];
        assert!(encode(&e).is_ok());
        e.withheld_fact_ids = (0..=MAX_FACTS).map(|i| format!("f-{i}")).collect();
        assert_eq!(encode(&e).unwrap_err().field, "withheld_fact_ids");
        e.withheld_fact_ids = vec!["f-123456782".into()];
        assert_eq!(encode(&e).unwrap_err().field, "withheld_fact_ids");
        // A record id is a token like the others, and makes an entry keyed.
        let mut e = sample();
        e.record_id = "disc-abcdefghij".into();
        assert!(encode_new(&e).unwrap().is_keyed());
        assert!(!encode_new(&sample()).unwrap().is_keyed());
        e.record_id = "disc 42".into();
        assert_eq!(encode(&e).unwrap_err().field, "record_id");
        e.record_id = "disc-123456782".into();
        assert_eq!(encode(&e).unwrap_err().field, "record_id");
    }

    #[test]
    fn new_entries_need_a_real_time_and_no_bsn_shaped_ids() {
        let mut e = sample();
        e.time = Some(prost_types::Timestamp {
            seconds: 1_790_000_000,
            nanos: 2_000_000_000,
        });
        assert_eq!(encode(&e).unwrap_err().field, "time");
        e.time = Some(prost_types::Timestamp {
            seconds: -1,
            nanos: 0,
        });
        assert_eq!(encode(&e).unwrap_err().field, "time");
        e.time = Some(prost_types::Timestamp {
            seconds: MAX_SECONDS + 1,
            nanos: 0,
        });
        assert_eq!(encode(&e).unwrap_err().field, "time");
        let mut e = sample();
        e.case_ref = "case-123456782".into();
        assert_eq!(encode(&e).unwrap_err().field, "case_ref");
        let mut e = sample();
        e.fact_ids = vec!["f-1".into(), "123456782".into()];
        assert_eq!(encode(&e).unwrap_err().field, "fact_ids");
        // The same id that fails the eleven-test is a plain number.
        let mut e = sample();
        e.case_ref = "case-123456789".into();
        assert!(encode(&e).is_ok());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn tokens_with_spaces_are_always_refused(a in "[a-z]{1,10}", b in "[a-z]{1,10}") {
            let mut e = sample();
            e.case_ref = format!("{a} {b}");
            prop_assert!(encode(&e).is_err());
        }
    }
}
