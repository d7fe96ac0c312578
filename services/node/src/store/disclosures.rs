//! The disclosure log (NEN 7513): every `QueryFacts` decision, allowed or refused, with who asked,
//! on whose behalf, about which case reference, which facts and categories, for what, and the
//! outcome. Never fact contents. Records are appended to the coordinator's audit log in order, so
//! one watermark (`disclosure_audit_progress.appended_through`) says which are in it; the few the
//! audit log refuses are marked as kept here only.

use std::time::SystemTime;

use doorzet_store::Database;

use crate::Error;
use crate::store::cases::{from_millis, join, millis};

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

const INSERT_COLUMNS: &str = "disclosure_id, at, requester_org, requester_person, on_behalf_of_org, \
    case_ref, escalation_id, purpose, disclosed_fact_ids, disclosed_categories, withheld_fact_ids, \
    withheld_categories, outcome, refusal, grant_id, audit_state";

/// Rows per multi-row INSERT, largest first (a few fixed shapes, so statements are reused; sqlx
/// looks each `$N` up by name, so a statement of many parameters costs quadratically).
const ROW_SHAPES: [usize; 3] = [16, 4, 1];

/// Stores `records` on `conn` (within the writer's transaction), several rows per statement.
async fn insert_on(
    conn: &mut sqlx::AnyConnection,
    records: &[&Record],
    audit: AuditState,
) -> Result<(), Error> {
    let mut rest = records;
    while !rest.is_empty() {
        let rows = ROW_SHAPES
            .into_iter()
            .find(|n| *n <= rest.len())
            .unwrap_or(1);
        let (chunk, tail) = rest.split_at(rows);
        let values: Vec<String> = (0..rows)
            .map(|i| {
                let cols: Vec<String> = (1..=16).map(|c| format!("${}", i * 16 + c)).collect();
                format!("({})", cols.join(", "))
            })
            .collect();
        let sql = format!(
            "INSERT INTO disclosures ({INSERT_COLUMNS}) VALUES {}",
            values.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for r in chunk {
            query = query
                .bind(r.disclosure_id.clone())
                .bind(millis(r.at))
                .bind(r.requester_org.clone())
                .bind(r.requester_person.clone())
                .bind(r.on_behalf_of_org.clone())
                .bind(r.case_ref.clone())
                .bind(r.escalation_id.clone())
                .bind(r.purpose.clone())
                .bind(join(&r.disclosed_fact_ids))
                .bind(join(&r.disclosed_categories))
                .bind(join(&r.withheld_fact_ids))
                .bind(join(&r.withheld_categories))
                .bind(r.outcome.as_str())
                .bind(r.refusal.clone())
                .bind(r.grant_id.clone())
                .bind(audit as i32);
        }
        query.execute(&mut *conn).await?;
        rest = tail;
    }
    Ok(())
}

type Pending = (Record, tokio::sync::oneshot::Sender<Result<(), String>>);

/// Stores records with group commit: the records of concurrent requests share one transaction (one
/// fsync), and each request is answered only once its record is durable. It is the only writer of
/// the log and commits one transaction at a time, so sequence numbers become visible in order,
/// which the audit watermark relies on (on PostgreSQL too, where concurrent writers could commit a
/// lower sequence number after a higher one).
#[derive(Debug, Clone)]
pub struct Writer {
    queue: tokio::sync::mpsc::Sender<Pending>,
}

/// Most records in one transaction.
const MAX_BATCH: usize = 512;

impl Writer {
    /// Starts the writer task on `db`.
    pub fn start(db: Database) -> Self {
        let (queue, mut rx) = tokio::sync::mpsc::channel::<Pending>(4096);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let result = write_batch(&db, &batch).await.map_err(|e| e.to_string());
                if let Err(e) = &result {
                    tracing::error!(error = %e, records = batch.len(), "disclosure records not stored; their requests fail");
                }
                for (_, reply) in batch {
                    let _ = reply.send(result.clone());
                }
            }
        });
        Self { queue }
    }

    /// Stores `record` (to be appended to the audit log) and returns once it is durable.
    pub async fn write(&self, record: Record) -> Result<(), Error> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue
            .send((record, reply))
            .await
            .map_err(|_| Error::Corrupt("disclosure writer stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Corrupt("disclosure writer stopped".into()))?
            .map_err(Error::Corrupt)
    }
}

async fn write_batch(db: &Database, batch: &[Pending]) -> Result<(), Error> {
    use sqlx::Connection;
    let _turn = db.write_turn().await;
    let mut conn = db.pool().acquire().await?;
    let mut tx = conn.begin().await?;
    let records: Vec<&Record> = batch.iter().map(|(r, _)| r).collect();
    insert_on(&mut tx, &records, AuditState::InOrder).await?;
    tx.commit().await?;
    Ok(())
}

const COLUMNS: &str = "seq, disclosure_id, at, requester_org, requester_person, on_behalf_of_org, \
    case_ref, escalation_id, purpose, disclosed_fact_ids, disclosed_categories, withheld_fact_ids, \
    withheld_categories, outcome, refusal, grant_id";

type Row = (
    i64,
    String,
    i64,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
);

fn list(column: &str) -> Vec<String> {
    column
        .split(',')
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

fn record_of(row: Row) -> Result<(i64, Record), Error> {
    let (
        seq,
        id,
        at,
        org,
        person,
        behalf,
        case_ref,
        esc,
        purpose,
        dfi,
        dc,
        wfi,
        wc,
        outcome,
        refusal,
        grant,
    ) = row;
    Ok((
        seq,
        Record {
            disclosure_id: id,
            at: from_millis(at),
            requester_org: org,
            requester_person: person,
            on_behalf_of_org: behalf,
            case_ref,
            escalation_id: esc,
            purpose,
            disclosed_fact_ids: list(&dfi),
            disclosed_categories: list(&dc),
            withheld_fact_ids: list(&wfi),
            withheld_categories: list(&wc),
            outcome: Outcome::parse(&outcome)?,
            refusal,
            grant_id: grant,
        },
    ))
}

/// Lists the newest `limit` entries for a case reference, newest first.
pub async fn for_case_ref(db: &Database, case_ref: &str, limit: u32) -> Result<Vec<Record>, Error> {
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

/// The oldest `limit` entries past the watermark, with their sequence numbers.
pub async fn pending(db: &Database, limit: u32) -> Result<Vec<(i64, Record)>, Error> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM disclosures \
         WHERE seq > (SELECT appended_through FROM disclosure_audit_progress WHERE id = 1) \
         AND audit_state <> $1 ORDER BY seq LIMIT $2"
    )))
    .bind(AuditState::LocalOnly as i32)
    .bind(limit as i64)
    .fetch_all(db.pool())
    .await?;
    rows.into_iter().map(record_of).collect()
}

/// Moves the watermark to `last`: every entry up to it is in the audit log or kept here only.
pub async fn mark_appended(db: &Database, last: i64) -> Result<(), Error> {
    sqlx::query(
        "UPDATE disclosure_audit_progress SET appended_through = $1 \
         WHERE id = 1 AND appended_through < $1",
    )
    .bind(last)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Marks an entry as kept here only.
pub async fn mark_local_only(db: &Database, seq: i64) -> Result<(), Error> {
    sqlx::query("UPDATE disclosures SET audit_state = $1 WHERE seq = $2")
        .bind(AuditState::LocalOnly as i32)
        .bind(seq)
        .execute(db.pool())
        .await?;
    Ok(())
}
