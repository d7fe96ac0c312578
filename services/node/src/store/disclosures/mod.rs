//! The disclosure log (NEN 7513): every `QueryFacts` decision, allowed or refused, with who asked,
//! on whose behalf, about which case reference, which facts and categories, for what, and the
//! outcome. Never fact contents. Records are appended to the coordinator's audit log in order, so
//! one watermark (`disclosure_audit_progress.appended_through`) says which are in it; the few the
//! audit log refuses are marked as kept here only.
//!
//! # Layout
//! - this module: the record, how the table stores it, and the reads.
//! - `writer`: how a record becomes durable before its request is answered, and reaches the
//!   table ([`Writer`]).
//! - `journal`: on an SQLite file, the append-only file where records are durable first.

mod journal;
mod writer;

use std::time::SystemTime;

use doorzet_store::{Backend, Database};

pub use writer::{Taken, Writer};

use crate::Error;
use crate::store::cases::{Joined, from_millis, millis};

/// The outcome of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything asked for was disclosed.
    Disclosed,
    /// Some disclosed, some withheld.
    PartlyWithheld,
    /// Everything withheld.
    Withheld,
    /// Refused as a whole (no valid grant).
    Refused,
}

impl Outcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disclosed => "disclosed",
            Self::PartlyWithheld => "partly_withheld",
            Self::Withheld => "withheld",
            Self::Refused => "refused",
        }
    }

    fn parse(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "disclosed" => Self::Disclosed,
            "partly_withheld" => Self::PartlyWithheld,
            "withheld" => Self::Withheld,
            "refused" => Self::Refused,
            other => return Err(Error::Corrupt(format!("disclosure outcome `{other}`"))),
        })
    }
}

/// One entry of the disclosure log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Log id.
    pub disclosure_id: String,
    /// When.
    pub at: SystemTime,
    /// The asking organisation.
    pub requester_org: String,
    /// The person asking, as that organisation identifies them.
    pub requester_person: String,
    /// On whose behalf (the grant's issuer), empty when no grant was read.
    pub on_behalf_of_org: String,
    /// Case reference asked about.
    pub case_ref: String,
    /// Escalation, from the grant.
    pub escalation_id: String,
    /// Purpose, from the grant.
    pub purpose: String,
    /// Facts disclosed.
    pub disclosed_fact_ids: Vec<String>,
    /// Their categories.
    pub disclosed_categories: Vec<String>,
    /// Facts withheld.
    pub withheld_fact_ids: Vec<String>,
    /// Their categories.
    pub withheld_categories: Vec<String>,
    /// Outcome.
    pub outcome: Outcome,
    /// Why refused.
    pub refusal: String,
    /// The grant id, when read.
    pub grant_id: String,
}

/// Where an entry stands with the coordinator's audit log, besides the watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditState {
    /// Appended once the watermark passes it (older rows may say 1, "appended", from before the
    /// watermark existed).
    InOrder = 0,
    /// Kept here only: its identifiers cannot go into the audit log (a malformed case reference).
    LocalOnly = 2,
}

/// The fields of a record that are not columns of their own, stored as one JSON array (`detail`)
/// in this order (migration 0007 names them). Lists are comma-separated.
struct Detail<'a>(&'a Record);

/// [`Detail`] as read back (serde reads a JSON array into these fields in order).
#[derive(serde::Deserialize)]
struct StoredDetail {
    disclosure_id: String,
    requester_org: String,
    requester_person: String,
    on_behalf_of_org: String,
    escalation_id: String,
    purpose: String,
    disclosed_fact_ids: String,
    disclosed_categories: String,
    withheld_fact_ids: String,
    withheld_categories: String,
    outcome: String,
    refusal: String,
    grant_id: String,
}

impl serde::Serialize for Detail<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let r = self.0;
        let mut t = s.serialize_tuple(13)?;
        t.serialize_element(&r.disclosure_id)?;
        t.serialize_element(&r.requester_org)?;
        t.serialize_element(&r.requester_person)?;
        t.serialize_element(&r.on_behalf_of_org)?;
        t.serialize_element(&r.escalation_id)?;
        t.serialize_element(&r.purpose)?;
        t.serialize_element(&Joined(&r.disclosed_fact_ids))?;
        t.serialize_element(&Joined(&r.disclosed_categories))?;
        t.serialize_element(&Joined(&r.withheld_fact_ids))?;
        t.serialize_element(&Joined(&r.withheld_categories))?;
        t.serialize_element(r.outcome.as_str())?;
        t.serialize_element(&r.refusal)?;
        t.serialize_element(&r.grant_id)?;
        t.end()
    }
}

/// One statement stores a whole batch, from two bound values: `$1`, the rows as one JSON array of
/// `[seq, at, case_ref, start, length]`, and `$2`, the rows' details end to end as one blob, each
/// row pointing at its own (from 1, in bytes). Binding values per row cost more than the insert
/// itself, and a statement per row shape cost a round trip each to SQLite's thread. SQLite reads
/// the rows with `jsonb_each`, which parses them once into its binary form so that each column is
/// a look-up; the details it only copies, so a record costs it five look-ups instead of seventeen.
fn insert_sql(backend: Backend) -> &'static str {
    fn build(backend: Backend) -> String {
        let in_order = AuditState::InOrder as i32;
        match backend {
            Backend::Sqlite => format!(
                "INSERT INTO disclosures (seq, at, case_ref, audit_state, detail) \
                 SELECT value ->> 0, value ->> 1, value ->> 2, {in_order}, \
                 CAST(substr($2, value ->> 3, value ->> 4) AS TEXT) FROM jsonb_each($1)"
            ),
            Backend::Postgres => format!(
                "INSERT INTO disclosures (seq, at, case_ref, audit_state, detail) \
                 SELECT (value ->> 0)::bigint, (value ->> 1)::bigint, value ->> 2, {in_order}, \
                 convert_from(substring($2::bytea FROM (value ->> 3)::int FOR (value ->> 4)::int), \
                 'UTF8') FROM jsonb_array_elements($1::jsonb) AS value"
            ),
        }
    }
    static SQLITE: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| build(Backend::Sqlite));
    static POSTGRES: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| build(Backend::Postgres));
    match backend {
        Backend::Sqlite => &SQLITE,
        Backend::Postgres => &POSTGRES,
    }
}

/// A batch as the log's table stores it, bound to [`insert_sql`] as two values.
#[derive(Debug, Default)]
struct Encoded {
    /// `[seq, at, case_ref, start, length]` per record, `start` counting from 1 into `details`.
    rows: Vec<(i64, i64, String, usize, usize)>,
    /// The records' `detail` arrays, end to end.
    details: Vec<u8>,
}

impl Encoded {
    /// `records`, numbered from `first_seq`.
    fn of(first_seq: i64, records: &[Record]) -> Result<Self, Error> {
        let mut encoded = Self {
            rows: Vec::with_capacity(records.len()),
            details: Vec::with_capacity(records.len() * 320),
        };
        for (seq, r) in (first_seq..).zip(records) {
            let start = encoded.details.len();
            serde_json::to_writer(&mut encoded.details, &Detail(r))
                .map_err(|e| Error::Corrupt(format!("disclosure records do not encode: {e}")))?;
            encoded.row(seq, millis(r.at), r.case_ref.clone(), start);
        }
        Ok(encoded)
    }

    /// Adds a record whose detail is already encoded (read back from the journal).
    fn push(&mut self, seq: i64, at: i64, case_ref: String, detail: &[u8]) {
        let start = self.details.len();
        self.details.extend_from_slice(detail);
        self.row(seq, at, case_ref, start);
    }

    fn row(&mut self, seq: i64, at: i64, case_ref: String, start: usize) {
        let length = self.details.len() - start;
        self.rows.push((seq, at, case_ref, start + 1, length));
    }

    /// Adds `later`'s records after these.
    fn extend(&mut self, later: Self) {
        let shift = self.details.len();
        self.details.extend_from_slice(&later.details);
        self.rows.extend(
            later
                .rows
                .into_iter()
                .map(|(seq, at, case_ref, start, length)| {
                    (seq, at, case_ref, start + shift, length)
                }),
        );
    }

    fn last_seq(&self) -> Option<i64> {
        self.rows.last().map(|row| row.0)
    }

    /// Appends each record's journal frame to `out`.
    fn frames(&self, out: &mut Vec<u8>) {
        for (seq, at, case_ref, start, length) in &self.rows {
            let detail = &self.details[start - 1..start - 1 + length];
            journal::frame(out, *seq, *at, case_ref, detail);
        }
    }

    /// The insert of these records, ready to run.
    fn query(
        &self,
        backend: Backend,
    ) -> Result<sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments>, Error> {
        let rows = serde_json::to_string(&self.rows)
            .map_err(|e| Error::Corrupt(format!("disclosure records do not encode: {e}")))?;
        Ok(sqlx::query(insert_sql(backend))
            .bind(rows)
            .bind(self.details.clone()))
    }
}

/// Stores `batch` and moves the watermark to `watermark`, in one transaction that is durable
/// when it returns.
async fn commit(db: &Database, batch: &Encoded, watermark: Option<i64>) -> Result<(), Error> {
    use sqlx::Connection;
    let mut conn = db.writer().await?;
    let mut tx = conn.begin().await?;
    if !batch.rows.is_empty() {
        batch.query(db.backend())?.execute(&mut *tx).await?;
    }
    if let Some(last) = watermark {
        sqlx::query(sqlx::AssertSqlSafe(mark_appended_sql("$1")))
            .bind(last)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The highest sequence number in the table (0: none) and the watermark (which no new record may
/// fall under).
async fn numbered(db: &Database) -> Result<(i64, i64), Error> {
    let (max, through): (Option<i64>, i64) = sqlx::query_as(
        "SELECT (SELECT MAX(seq) FROM disclosures), appended_through \
         FROM disclosure_audit_progress WHERE id = 1",
    )
    .fetch_one(&mut *db.writer().await?)
    .await?;
    Ok((max.unwrap_or(0), through))
}

const COLUMNS: &str = "seq, at, case_ref, detail";

type Row = (i64, i64, String, String);

fn list(column: &str) -> Vec<String> {
    column
        .split(',')
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

fn record_of((seq, at, case_ref, detail): Row) -> Result<(i64, Record), Error> {
    let d: StoredDetail = serde_json::from_str(&detail)
        .map_err(|e| Error::Corrupt(format!("disclosure {seq}'s detail: {e}")))?;
    Ok((
        seq,
        Record {
            disclosure_id: d.disclosure_id,
            at: from_millis(at),
            requester_org: d.requester_org,
            requester_person: d.requester_person,
            on_behalf_of_org: d.on_behalf_of_org,
            case_ref,
            escalation_id: d.escalation_id,
            purpose: d.purpose,
            disclosed_fact_ids: list(&d.disclosed_fact_ids),
            disclosed_categories: list(&d.disclosed_categories),
            withheld_fact_ids: list(&d.withheld_fact_ids),
            withheld_categories: list(&d.withheld_categories),
            outcome: Outcome::parse(&d.outcome)?,
            refusal: d.refusal,
            grant_id: d.grant_id,
        },
    ))
}

/// Lists the newest `limit` entries for a case reference, newest first.
async fn for_case_ref(db: &Database, case_ref: &str, limit: u32) -> Result<Vec<Record>, Error> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM disclosures WHERE case_ref = $1 ORDER BY seq DESC LIMIT $2"
    )))
    .bind(case_ref)
    .bind(limit as i64)
    .fetch_all(db.pool())
    .await?;
    rows.into_iter()
        .map(|r| record_of(r).map(|(_, rec)| rec))
        .collect()
}

/// The oldest `limit` entries after sequence number `after` (the watermark, or further when the
/// appender is ahead of it) that go to the audit log, with their sequence numbers.
async fn pending(db: &Database, after: i64, limit: u32) -> Result<Vec<(i64, Record)>, Error> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM disclosures \
         WHERE seq > $1 AND audit_state <> $2 ORDER BY seq LIMIT $3"
    )))
    .bind(after)
    .bind(AuditState::LocalOnly as i32)
    .bind(limit as i64)
    .fetch_all(db.pool())
    .await?;
    rows.into_iter().map(record_of).collect()
}

/// Moves the watermark up to the value bound at `param` (never down).
fn mark_appended_sql(param: &str) -> String {
    format!(
        "UPDATE disclosure_audit_progress SET appended_through = {param} \
         WHERE id = 1 AND appended_through < {param}"
    )
}

/// The watermark: every entry up to it is in the audit log or kept here only.
pub async fn appended_through(db: &Database) -> Result<i64, Error> {
    Ok(
        sqlx::query_scalar("SELECT appended_through FROM disclosure_audit_progress WHERE id = 1")
            .fetch_one(db.pool())
            .await?,
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use doorzet_store::Migrations;
    use doorzet_store::testing::TestDatabase;

    use super::*;

    pub(super) fn record(n: u64) -> Record {
        Record {
            disclosure_id: crate::ids::ordered("disc"),
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + n),
            requester_org: "00000001000000000002".into(),
            requester_person: format!("emp-{n}"),
            on_behalf_of_org: "00000001000000000001".into(),
            case_ref: "case-abcdefgh".into(),
            escalation_id: "esc-abcdefgh".into(),
            purpose: "escalation".into(),
            disclosed_fact_ids: vec!["fact-a".into(), "fact-b".into()],
            disclosed_categories: vec!["eviction_date".into(), "legal_title".into()],
            withheld_fact_ids: vec!["fact-c".into()],
            withheld_categories: vec!["diagnosis_group".into()],
            outcome: Outcome::PartlyWithheld,
            refusal: String::new(),
            grant_id: "grant-1".into(),
        }
    }

    pub(super) fn persons(records: &[(i64, Record)]) -> Vec<String> {
        records
            .iter()
            .map(|(_, r)| r.requester_person.clone())
            .collect()
    }

    #[tokio::test]
    async fn a_record_reads_back_exactly_as_written_whatever_its_characters() {
        for test_db in TestDatabase::all().await {
            let db = Database::connect(test_db.url(), &[&crate::store::MIGRATIONS])
                .await
                .unwrap();
            let writer = Writer::start(db.clone()).await.unwrap();
            let mut odd = record(1);
            odd.requester_person = "mw. \"de Vries\" \\ ÿ ü 💡 ' ; -- $1 ?".into();
            odd.refusal = "grant is malformed: {\"a\": [1]}".into();
            odd.disclosed_fact_ids.clear();
            odd.disclosed_categories.clear();
            odd.outcome = Outcome::Withheld;
            let plain = record(2);
            // Together, so that they most likely go in with one statement.
            let (a, b) = tokio::join!(writer.write(odd.clone()), writer.write(plain.clone()));
            a.unwrap();
            b.unwrap();
            let stored: Vec<Record> = writer
                .pending(0, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|(_, r)| r)
                .collect();
            assert_eq!(stored, [odd.clone(), plain]);
            assert_eq!(
                writer.for_case_ref(&odd.case_ref, 1).await.unwrap()[0].requester_person,
                "emp-2"
            );
            db.close().await;
            test_db.drop().await;
        }
    }

    #[tokio::test]
    async fn records_logged_before_the_detail_column_read_back_unchanged_after_it() {
        use sqlx::migrate::Migrator;
        // The node's migrations before 0007, when every field was a column of its own.
        fn before_0007(all: &Migrator) -> &'static Migrator {
            let earlier = all.migrations.iter().filter(|m| m.version < 7).cloned();
            Box::leak(Box::new(Migrator::with_migrations(earlier.collect())))
        }
        let old = Migrations {
            sqlite: before_0007(&crate::store::SQLITE),
            postgres: before_0007(&crate::store::POSTGRES),
        };
        for test_db in TestDatabase::all().await {
            let db = Database::connect(test_db.url(), &[&old]).await.unwrap();
            let mut odd = record(1);
            odd.requester_person = "mw. \"de Vries\" \\ ÿ 💡 ' ; --".into();
            odd.refusal = "grant expired".into();
            odd.outcome = Outcome::Refused;
            let plain = record(2);
            let (appended, local_only) = (1, AuditState::LocalOnly as i32);
            for (seq, r, state) in [(1_i64, &odd, appended), (2, &plain, local_only)] {
                let mut conn = db.writer().await.unwrap();
                sqlx::query(
                    "INSERT INTO disclosures (seq, disclosure_id, at, requester_org, \
                     requester_person, on_behalf_of_org, case_ref, escalation_id, purpose, \
                     disclosed_fact_ids, disclosed_categories, withheld_fact_ids, \
                     withheld_categories, outcome, refusal, grant_id, audit_state) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
                     $16, $17)",
                )
                .bind(seq)
                .bind(&r.disclosure_id)
                .bind(millis(r.at))
                .bind(&r.requester_org)
                .bind(&r.requester_person)
                .bind(&r.on_behalf_of_org)
                .bind(&r.case_ref)
                .bind(&r.escalation_id)
                .bind(&r.purpose)
                .bind(Joined(&r.disclosed_fact_ids).to_string())
                .bind(Joined(&r.disclosed_categories).to_string())
                .bind(Joined(&r.withheld_fact_ids).to_string())
                .bind(Joined(&r.withheld_categories).to_string())
                .bind(r.outcome.as_str())
                .bind(&r.refusal)
                .bind(&r.grant_id)
                .bind(state)
                .execute(&mut *conn)
                .await
                .unwrap();
            }
            db.close().await;

            let db = Database::connect(test_db.url(), &[&crate::store::MIGRATIONS])
                .await
                .unwrap();
            assert_eq!(
                for_case_ref(&db, &odd.case_ref, 10).await.unwrap(),
                [plain.clone(), odd.clone()]
            );
            // The one kept here only stays out of the audit log's queue.
            assert_eq!(pending(&db, 0, 10).await.unwrap(), [(1, odd.clone())]);
            // The view names every field.
            let person: String =
                sqlx::query_scalar("SELECT requester_person FROM disclosure_log WHERE seq = 1")
                    .fetch_one(db.pool())
                    .await
                    .unwrap();
            assert_eq!(person, odd.requester_person);
            // New records go in after them.
            let writer = Writer::start(db.clone()).await.unwrap();
            writer.write(record(3)).await.unwrap();
            assert_eq!(persons(&writer.pending(1, 10).await.unwrap()), ["emp-3"]);
            db.close().await;
            test_db.drop().await;
        }
    }

    #[tokio::test]
    async fn a_record_whose_detail_was_altered_is_reported_not_misread() {
        for test_db in TestDatabase::all().await {
            let db = Database::connect(test_db.url(), &[&crate::store::MIGRATIONS])
                .await
                .unwrap();
            let writer = Writer::start(db.clone()).await.unwrap();
            writer.write(record(1)).await.unwrap();
            let case_ref = record(1).case_ref;
            assert_eq!(writer.for_case_ref(&case_ref, 10).await.unwrap().len(), 1);
            // A field short: the log is not read as if the rest had moved up by one.
            let mut conn = db.writer().await.unwrap();
            sqlx::query("UPDATE disclosures SET detail = '[\"disc-1\", \"emp-1\"]'")
                .execute(&mut *conn)
                .await
                .unwrap();
            drop(conn);
            let err = writer.for_case_ref(&case_ref, 10).await.unwrap_err();
            assert!(err.to_string().contains("disclosure 1's detail"), "{err}");
            assert!(writer.pending(0, 10).await.is_err());
            db.close().await;
            test_db.drop().await;
        }
    }
}
