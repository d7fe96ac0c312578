//! An encoded audit entry read in place: [`EntryView::parse`] accepts exactly the bytes that prost
//! writes for some `doorzet.v1.AuditEntry` (fields in tag order, no default values, no unknown
//! fields, shortest varints, valid UTF-8) and borrows its strings from them. The coordinator
//! checks a node's entries this way: the bytes it hashes are the bytes it received, with no
//! decoding into owned strings and no encoding again.

use doorzet_proto::v1;
use prost_types::Timestamp;

use crate::entry::EntryError;

/// An audit entry's fields, borrowed from its encoding or from a decoded entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryView<'a> {
    /// Encoding version.
    pub version: u32,
    /// When.
    pub time: Option<Timestamp>,
    /// The acting organisation.
    pub actor_org: &'a str,
    /// Who there.
    pub actor_subject: &'a str,
    /// On whose behalf.
    pub on_behalf_of_org: &'a str,
    /// `AuditAction`.
    pub action: i32,
    /// The escalation.
    pub escalation_id: &'a str,
    /// The case reference.
    pub case_ref: &'a str,
    /// Facts disclosed.
    pub fact_ids: Vec<&'a str>,
    /// Their categories.
    pub fact_categories: Vec<&'a str>,
    /// The purpose.
    pub purpose: &'a str,
    /// `AuditOutcome`.
    pub outcome: i32,
    /// The receiving organisation.
    pub recipient_org: &'a str,
    /// Facts withheld.
    pub withheld_fact_ids: Vec<&'a str>,
    /// Their categories.
    pub withheld_fact_categories: Vec<&'a str>,
    /// The sender's id of the record the entry is of.
    pub record_id: &'a str,
}

fn not_canonical() -> EntryError {
    EntryError {
        field: "bytes",
        reason: "not in canonical encoding",
    }
}

/// Reads the bytes of one canonical protobuf message.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn is_done(&self) -> bool {
        self.at == self.bytes.len()
    }

    /// A varint in its shortest form.
    fn varint(&mut self) -> Result<u64, EntryError> {
        let mut value = 0u64;
        for i in 0..10 {
            let b = *self.bytes.get(self.at).ok_or_else(not_canonical)?;
            self.at += 1;
            // The tenth byte holds one bit; a last byte of zero is a longer form than needed.
            if (i == 9 && b > 1) || (i > 0 && b == 0) {
                return Err(not_canonical());
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(not_canonical())
    }

    /// The next field's tag and wire type, or None at the end. Every tag of these messages is
    /// at most 16, so a key is one or two bytes.
    fn key(&mut self) -> Result<Option<(u8, u8)>, EntryError> {
        if self.is_done() {
            return Ok(None);
        }
        let key = self.varint()?;
        if key >= 17 << 3 {
            return Err(not_canonical());
        }
        Ok(Some(((key >> 3) as u8, (key & 7) as u8)))
    }

    fn bytes(&mut self) -> Result<&'a [u8], EntryError> {
        let len = usize::try_from(self.varint()?).map_err(|_| not_canonical())?;
        let end = self.at.checked_add(len).ok_or_else(not_canonical)?;
        let slice = self.bytes.get(self.at..end).ok_or_else(not_canonical)?;
        self.at = end;
        Ok(slice)
    }

    fn str(&mut self) -> Result<&'a str, EntryError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| not_canonical())
    }
}

const VARINT: u8 = 0;
const LEN: u8 = 2;

/// An `int32` as prost writes it (sign-extended to 64 bits), never zero.
fn int32(value: u64) -> Result<i32, EntryError> {
    let v = value as i64;
    match i32::try_from(v) {
        Ok(n) if n != 0 => Ok(n),
        _ => Err(not_canonical()),
    }
}

fn timestamp(bytes: &[u8]) -> Result<Timestamp, EntryError> {
    let mut r = Reader { bytes, at: 0 };
    let mut t = Timestamp::default();
    let mut last = 0;
    while let Some((tag, wire)) = r.key()? {
        if tag <= last || wire != VARINT {
            return Err(not_canonical());
        }
        last = tag;
        let value = r.varint()?;
        match tag {
            1 if value != 0 => t.seconds = value as i64,
            2 => t.nanos = int32(value)?,
            _ => return Err(not_canonical()),
        }
    }
    Ok(t)
}

impl<'a> EntryView<'a> {
    /// Reads `bytes` as the canonical encoding of an `AuditEntry`; anything else (including an
    /// encoding prost would decode but write differently) is an error.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, EntryError> {
        let mut r = Reader { bytes, at: 0 };
        let mut e = EntryView::default();
        let mut last = 0;
        while let Some((tag, wire)) = r.key()? {
            let is_repeated = matches!(tag, 9 | 10 | 14 | 15);
            if tag < last || (tag == last && !is_repeated) {
                return Err(not_canonical());
            }
            last = tag;
            let expected = if matches!(tag, 1 | 6 | 12) {
                VARINT
            } else {
                LEN
            };
            if wire != expected {
                return Err(not_canonical());
            }
            match tag {
                1 => {
                    e.version = u32::try_from(r.varint()?)
                        .ok()
                        .filter(|v| *v != 0)
                        .ok_or_else(not_canonical)?;
                }
                2 => e.time = Some(timestamp(r.bytes()?)?),
                6 => e.action = int32(r.varint()?)?,
                12 => e.outcome = int32(r.varint()?)?,
                9 => e.fact_ids.push(r.str()?),
                10 => e.fact_categories.push(r.str()?),
                14 => e.withheld_fact_ids.push(r.str()?),
                15 => e.withheld_fact_categories.push(r.str()?),
                3 | 4 | 5 | 7 | 8 | 11 | 13 | 16 => {
                    let s = r.str()?;
                    if s.is_empty() {
                        return Err(not_canonical());
                    }
                    *match tag {
                        3 => &mut e.actor_org,
                        4 => &mut e.actor_subject,
                        5 => &mut e.on_behalf_of_org,
                        7 => &mut e.escalation_id,
                        8 => &mut e.case_ref,
                        11 => &mut e.purpose,
                        13 => &mut e.recipient_org,
                        _ => &mut e.record_id,
                    } = s;
                }
                _ => return Err(not_canonical()),
            }
        }
        Ok(e)
    }

    /// The view of a decoded entry.
    pub fn of(entry: &'a v1::AuditEntry) -> Self {
        let strs = |list: &'a [String]| list.iter().map(String::as_str).collect();
        EntryView {
            version: entry.version,
            time: entry.time,
            actor_org: &entry.actor_org,
            actor_subject: &entry.actor_subject,
            on_behalf_of_org: &entry.on_behalf_of_org,
            action: entry.action,
            escalation_id: &entry.escalation_id,
            case_ref: &entry.case_ref,
            fact_ids: strs(&entry.fact_ids),
            fact_categories: strs(&entry.fact_categories),
            purpose: &entry.purpose,
            outcome: entry.outcome,
            recipient_org: &entry.recipient_org,
            withheld_fact_ids: strs(&entry.withheld_fact_ids),
            withheld_fact_categories: strs(&entry.withheld_fact_categories),
            record_id: &entry.record_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use prost::Message;

    use super::*;

    fn token() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), "[a-z0-9_.:-]{1,12}", "[ -~é€]{0,6}"]
    }

    fn entry() -> impl Strategy<Value = v1::AuditEntry> {
        let strings = (
            token(),
            token(),
            token(),
            token(),
            token(),
            token(),
            token(),
            token(),
        );
        let lists = (
            prop::collection::vec(token(), 0..4),
            prop::collection::vec(token(), 0..4),
            prop::collection::vec(token(), 0..4),
            prop::collection::vec(token(), 0..4),
        );
        let numbers = (
            prop_oneof![Just(0u32), any::<u32>()],
            prop::option::of((
                prop_oneof![Just(0i64), any::<i64>()],
                prop_oneof![Just(0i32), any::<i32>()],
            )),
            prop_oneof![Just(0i32), -3i32..20, any::<i32>()],
            prop_oneof![Just(0i32), -3i32..20, any::<i32>()],
        );
        (strings, lists, numbers).prop_map(
            |((a, b, c, d, e, f, g, h), (l1, l2, l3, l4), (version, time, action, outcome))| {
                v1::AuditEntry {
                    version,
                    time: time.map(|(seconds, nanos)| Timestamp { seconds, nanos }),
                    actor_org: a,
                    actor_subject: b,
                    on_behalf_of_org: c,
                    action,
                    escalation_id: d,
                    case_ref: e,
                    fact_ids: l1,
                    fact_categories: l2,
                    purpose: f,
                    outcome,
                    recipient_org: g,
                    withheld_fact_ids: l3,
                    withheld_fact_categories: l4,
                    record_id: h,
                }
            },
        )
    }

    /// What `parse` must accept: what prost decodes and writes back byte for byte.
    fn prost_canonical(bytes: &[u8]) -> Option<v1::AuditEntry> {
        let entry = v1::AuditEntry::decode(bytes).ok()?;
        (entry.encode_to_vec() == bytes).then_some(entry)
    }

    proptest! {
        /// Every entry prost writes is read back in place with the same fields.
        #[test]
        fn reads_what_prost_writes(e in entry()) {
            let bytes = e.encode_to_vec();
            prop_assert_eq!(EntryView::parse(&bytes), Ok(EntryView::of(&e)));
        }

        /// On damaged encodings (bytes changed, cut, inserted), `parse` accepts exactly what
        /// prost decodes and writes back unchanged, with the same fields.
        #[test]
        fn accepts_exactly_the_canonical_encodings(
            e in entry(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
        ) {
            let mut bytes = e.encode_to_vec();
            for (at, byte, kind) in edits {
                let i = at.index(bytes.len() + 1);
                match kind {
                    0 if i < bytes.len() => bytes[i] = byte,
                    1 if i < bytes.len() => { bytes.truncate(i); }
                    _ => bytes.insert(i.min(bytes.len()), byte),
                }
            }
            let expected = prost_canonical(&bytes);
            match EntryView::parse(&bytes) {
                Ok(view) => {
                    let decoded = expected.expect("parse accepted what prost writes differently");
                    prop_assert_eq!(view, EntryView::of(&decoded));
                }
                Err(_) => prop_assert!(expected.is_none(), "parse refused a canonical encoding"),
            }
        }

        /// Arbitrary bytes never panic, and are accepted only when canonical.
        #[test]
        fn arbitrary_bytes_are_accepted_only_when_canonical(
            bytes in prop::collection::vec(any::<u8>(), 0..200)
        ) {
            if EntryView::parse(&bytes).is_ok() {
                prop_assert!(prost_canonical(&bytes).is_some());
            }
        }
    }

    fn put_varint(out: &mut Vec<u8>, mut value: u64, padding: u8) {
        // `padding` extra bytes write the same number in a longer form than needed.
        let mut bytes = Vec::new();
        loop {
            bytes.push((value & 0x7f) as u8);
            value >>= 7;
            if value == 0 {
                break;
            }
        }
        bytes.extend(std::iter::repeat_n(0, usize::from(padding)));
        let last = bytes.len() - 1;
        for (i, b) in bytes.iter().enumerate() {
            out.push(if i < last { b | 0x80 } else { *b });
        }
    }

    /// One field as written on the wire, right or wrong: tag 17 is unknown to `AuditEntry`, and
    /// each part may take a wrong wire type, a value prost leaves out or a longer varint.
    fn field() -> impl Strategy<Value = Vec<u8>> {
        let varint = prop_oneof![
            Just(0u64),
            Just(1u64),
            0u64..300,
            Just(u64::from(u32::MAX) + 1),
            Just((-5i64) as u64),
            Just(u64::MAX),
        ];
        let timestamp =
            prop::collection::vec((1u8..4, varint.clone(), 0u8..2), 0..3).prop_map(|parts| {
                let mut out = Vec::new();
                for (tag, value, padding) in parts {
                    put_varint(&mut out, u64::from(tag) << 3, 0);
                    put_varint(&mut out, value, padding);
                }
                out
            });
        let payload = prop_oneof![
            Just(Vec::new()),
            Just(b"org-1".to_vec()),
            Just(vec![0xff, 0xfe]),
            timestamp,
        ];
        (1u8..18, any::<bool>(), 0u8..8, varint, 0u8..2, payload).prop_map(
            |(tag, right_wire, other_wire, value, padding, payload)| {
                let wire = match (right_wire, tag) {
                    (true, 1 | 6 | 12) => 0,
                    (true, _) => 2,
                    (false, _) => other_wire % 6,
                };
                let mut out = Vec::new();
                put_varint(&mut out, (u64::from(tag) << 3) | u64::from(wire), 0);
                if wire == 2 {
                    put_varint(&mut out, payload.len() as u64, padding);
                    out.extend_from_slice(&payload);
                } else {
                    put_varint(&mut out, value, padding);
                }
                out
            },
        )
    }

    proptest! {
        /// Entries written field by field, right and wrong (fields out of order or twice, values
        /// prost leaves out, wrong wire types, unknown fields, longer varints, bad UTF-8): `parse`
        /// accepts exactly those prost writes back unchanged, with the same fields.
        #[test]
        fn accepts_exactly_the_canonical_field_sequences(
            mut fields in prop::collection::vec(field(), 0..8),
            sorted in any::<bool>(),
        ) {
            if sorted {
                fields.sort_by_key(|f| f[0]);
            }
            let bytes = fields.concat();
            match (EntryView::parse(&bytes), prost_canonical(&bytes)) {
                (Ok(view), Some(decoded)) => prop_assert_eq!(view, EntryView::of(&decoded)),
                (Err(_), None) => {}
                (parsed, decoded) => prop_assert!(
                    false,
                    "{bytes:02x?}: parse {:?}, prost canonical {:?}",
                    parsed.is_ok(),
                    decoded.is_some()
                ),
            }
        }
    }

    #[test]
    fn reads_a_record_id_behind_a_two_byte_key() {
        let e = v1::AuditEntry {
            version: 1,
            record_id: "disc-1".into(),
            ..Default::default()
        };
        let bytes = e.encode_to_vec();
        assert_eq!(&bytes[2..4], [0x82, 0x01]);
        assert_eq!(EntryView::parse(&bytes).unwrap().record_id, "disc-1");
    }

    #[test]
    fn longer_forms_than_needed_are_refused() {
        let e = v1::AuditEntry {
            version: 1,
            ..Default::default()
        };
        assert_eq!(e.encode_to_vec(), [0x08, 0x01]);
        assert!(EntryView::parse(&[0x08, 0x01]).is_ok());
        // version = 1 written in two bytes; version = 0 written out; version twice; a field of
        // another wire type (tag 16 as a varint); an unknown field (tag 17); a key in three bytes.
        for bytes in [
            &[0x08, 0x81, 0x00][..],
            &[0x08, 0x00],
            &[0x08, 0x01, 0x08, 0x01],
            &[0x0a, 0x00],
            &[0x80, 0x01, 0x00],
            &[0x8a, 0x01, 0x01, 0x61],
            &[0x82, 0x81, 0x00, 0x01, 0x61],
        ] {
            assert!(EntryView::parse(bytes).is_err(), "{bytes:?}");
            assert!(prost_canonical(bytes).is_none(), "{bytes:?}");
        }
    }
}
