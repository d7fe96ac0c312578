//! The disclosure log (NEN 7513): every `QueryFacts` decision, allowed or refused, with who asked,
//! on whose behalf, about which case reference, which facts and categories, for what, and the
//! outcome. Never fact contents. Records are appended to the coordinator's audit log in order, so
//! one watermark (`disclosure_audit_progress.appended_through`) says which are in it; the few the
//! audit log refuses are marked as kept here only.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use doorzet_store::wal::WalFile;
use doorzet_store::{Backend, Database};

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

/// `sql` (which holds [`insert_sql`]) with `records`, numbered from `first_seq`, bound as it
/// reads them: `$1` the rows, `$2` the details.
fn batch_query(
    sql: &'static str,
    first_seq: i64,
    records: &[Record],
) -> Result<sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments>, Error> {
    /// `[seq, at, case_ref, start, length]`.
    #[derive(serde::Serialize)]
    struct NewRow<'a>(i64, i64, &'a str, usize, usize);

    let fail =
        |e: serde_json::Error| Error::Corrupt(format!("disclosure records do not encode: {e}"));
    let mut details = Vec::with_capacity(records.len() * 320);
    let mut rows = Vec::with_capacity(records.len());
    for (seq, r) in (first_seq..).zip(records) {
        let start = details.len();
        serde_json::to_writer(&mut details, &Detail(r)).map_err(fail)?;
        rows.push(NewRow(
            seq,
            millis(r.at),
            &r.case_ref,
            start + 1,
            details.len() - start,
        ));
    }
    let rows = serde_json::to_string(&rows).map_err(fail)?;
    Ok(sqlx::query(sql).bind(rows).bind(details))
}

/// Stores `records` on `conn` (within the writer's transaction) with the sequence numbers
/// `first_seq..`, in the order of `records`, with one statement. The writer numbers them itself:
/// it is the log's only writer, and reading numbers back (`RETURNING`) cost a round trip per row
/// between SQLite's thread and the writer.
async fn insert_on(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    first_seq: i64,
    records: &[Record],
) -> Result<(), Error> {
    batch_query(insert_sql(backend), first_seq, records)?
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The statements of one unsynced SQLite commit ([`write_batch`]), in one round trip to
/// SQLite's thread: the batch (`$1`, `$2`) and, with `watermark`, the new watermark (`$3`). The
/// connection is back at `synchronous = FULL` when it ends, as every other writer expects it.
fn unsynced_sql(watermark: bool) -> &'static str {
    fn build(watermark: bool) -> String {
        let mark = if watermark {
            format!("{}; ", mark_appended_sql("$3"))
        } else {
            String::new()
        };
        format!(
            "PRAGMA synchronous = NORMAL; BEGIN; {}; {mark}COMMIT; PRAGMA synchronous = FULL",
            insert_sql(Backend::Sqlite)
        )
    }
    static PLAIN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| build(false));
    static MARKED: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| build(true));
    if watermark { &MARKED } else { &PLAIN }
}

#[expect(
    clippy::large_enum_variant,
    reason = "records are nearly all the traffic; boxing them would allocate once more per request"
)]
enum Message {
    /// A record to store; answered once it is durable.
    Record(Record, Reply),
    /// Everything up to this sequence number is in the audit log.
    Appended(i64),
}

/// Answers a request once its record is durable (or with why it is not stored).
type Reply = tokio::sync::oneshot::Sender<Result<(), String>>;

/// Stores records with group commit: the records of concurrent requests share one transaction (one
/// fsync), and each request is answered only once its record is durable. It is the only writer of
/// the log and commits one transaction at a time, so sequence numbers become visible in order,
/// which the audit watermark relies on (on PostgreSQL too, where concurrent writers could commit a
/// lower sequence number after a higher one). It also moves the watermark, in its next
/// transaction, and hands what it committed to the audit appender in memory ([`Committed`]).
///
/// On an SQLite file a commit does not wait for the disk itself: it is one round trip to SQLite's
/// thread at `synchronous = NORMAL`, and a thread of its own ([`Syncer`]) makes every commit that
/// returned durable with one sync of the WAL, while the next batch is being written. Requests are
/// answered, and records handed to the appender, only after that sync. So a busy node no longer
/// waits for the disk between batches, and one sync covers several commits.
#[derive(Debug, Clone)]
pub struct Writer {
    queue: tokio::sync::mpsc::Sender<Message>,
    committed: Arc<Mutex<Committed>>,
}

/// Records committed and not yet taken by the audit appender, in commit order with their sequence
/// numbers, so that it need not read them back. Bounded: what does not fit is dropped here (it is
/// in the database) and `lost` tells the appender to read from there.
#[derive(Debug, Default)]
struct Committed {
    records: VecDeque<(i64, Record)>,
    lost: bool,
}

/// What [`Writer::take_committed`] found.
#[derive(Debug)]
pub enum Taken {
    /// The records committed after the given sequence number, oldest first (none: all taken).
    Records(Vec<(i64, Record)>),
    /// Some were dropped: read them from the database.
    Lost,
}

/// Most records in one transaction.
const MAX_BATCH: usize = 512;
/// Most committed records held for the audit appender.
const MAX_COMMITTED: usize = 4096;

impl Writer {
    /// Starts the writer task on `db`.
    pub fn start(db: Database) -> Self {
        Self::start_with(db, MAX_COMMITTED)
    }

    /// Starts the writer task, holding at most `capacity` committed records for the appender.
    fn start_with(db: Database, capacity: usize) -> Self {
        let (queue, mut rx) = tokio::sync::mpsc::channel::<Message>(4096);
        let committed = Arc::new(Mutex::new(Committed::default()));
        let handoff = Handoff {
            committed: committed.clone(),
            capacity,
        };
        tokio::spawn(async move {
            // The next sequence number, read again after a failed batch.
            let mut next_seq = None;
            let syncer = db.wal().and_then(|wal| {
                Syncer::start(wal.clone(), handoff.clone())
                    .inspect_err(|e| {
                        tracing::warn!(error = %e, "no WAL sync thread; every disclosure commit syncs itself");
                    })
                    .ok()
            });
            while let Some(first) = rx.recv().await {
                let mut records = Vec::new();
                let mut replies = Vec::new();
                let mut watermark = None;
                let mut next = Some(first);
                let mut yielded = false;
                while let Some(message) = next.take() {
                    match message {
                        Message::Record(record, reply) => {
                            records.push(record);
                            replies.push(reply);
                        }
                        Message::Appended(seq) => watermark = watermark.max(Some(seq)),
                    }
                    if records.len() < MAX_BATCH {
                        next = rx.try_recv().ok();
                        if next.is_none() && !yielded {
                            // Once per batch, let the requests that are running now add their
                            // records first: a third more records per commit (per fsync) for one
                            // turn of the runtime's delay.
                            yielded = true;
                            tokio::task::yield_now().await;
                            next = rx.try_recv().ok();
                        }
                    }
                }
                let result =
                    write_batch(&db, next_seq, &records, watermark, syncer.is_some()).await;
                match result {
                    Ok(first) => {
                        next_seq = Some(first + records.len() as i64);
                        let stored = Stored {
                            first,
                            records,
                            replies,
                        };
                        match &syncer {
                            Some(syncer) => syncer.push(stored),
                            None => handoff.durable(stored),
                        }
                    }
                    Err(e) => {
                        next_seq = None;
                        tracing::error!(error = %e, records = records.len(), "disclosure records not stored; their requests fail");
                        for reply in replies {
                            let _ = reply.send(Err(e.to_string()));
                        }
                    }
                }
            }
        });
        Self { queue, committed }
    }

    /// Stores `record` (to be appended to the audit log) and returns once it is durable.
    pub async fn write(&self, record: Record) -> Result<(), Error> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue
            .send(Message::Record(record, reply))
            .await
            .map_err(|_| Error::Corrupt("disclosure writer stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Corrupt("disclosure writer stopped".into()))?
            .map_err(Error::Corrupt)
    }

    /// Records that every record up to `seq` is in the audit log (stored with the next
    /// transaction; after a crash before that, the appender sends the same records again).
    pub async fn appended(&self, seq: i64) -> Result<(), Error> {
        self.queue
            .send(Message::Appended(seq))
            .await
            .map_err(|_| Error::Corrupt("disclosure writer stopped".into()))
    }

    /// Takes up to `max` committed records with sequence numbers above `after`.
    pub fn take_committed(&self, after: i64, max: usize) -> Taken {
        let mut c = self.committed.lock().unwrap_or_else(|e| e.into_inner());
        if c.lost {
            c.lost = false;
            c.records.clear();
            return Taken::Lost;
        }
        while c.records.front().is_some_and(|(seq, _)| *seq <= after) {
            c.records.pop_front();
        }
        let n = c.records.len().min(max);
        Taken::Records(c.records.drain(..n).collect())
    }
}

/// A committed batch: its first sequence number, its records and the requests waiting for them.
struct Stored {
    first: i64,
    records: Vec<Record>,
    replies: Vec<Reply>,
}

/// Where durable records go: to the audit appender's hand ([`Committed`]), and their requests
/// are answered.
#[derive(Debug, Clone)]
struct Handoff {
    committed: Arc<Mutex<Committed>>,
    capacity: usize,
}

impl Handoff {
    /// `stored` is durable: hand its records over and answer its requests.
    fn durable(&self, stored: Stored) {
        {
            let mut c = self.committed.lock().unwrap_or_else(|e| e.into_inner());
            for (seq, record) in (stored.first..).zip(stored.records) {
                if c.records.len() < self.capacity {
                    c.records.push_back((seq, record));
                } else {
                    c.lost = true;
                }
            }
        }
        for reply in stored.replies {
            let _ = reply.send(Ok(()));
        }
    }

    /// The sync after `stored` failed: its records may not survive a power loss, so its requests
    /// fail, and the appender reads what the database holds instead of the records in hand.
    fn not_durable(&self, stored: Stored, why: &str) {
        self.committed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lost = true;
        for reply in stored.replies {
            let _ = reply.send(Err(why.to_owned()));
        }
    }
}

/// Makes unsynced commits durable, several with one sync of the WAL, on a thread of its own (a
/// sync blocks for the disk). Commits arrive in order and are answered in order.
struct Syncer {
    queue: std::sync::mpsc::Sender<Stored>,
}

impl Syncer {
    fn start(wal: Arc<WalFile>, handoff: Handoff) -> std::io::Result<Self> {
        let (queue, rx) = std::sync::mpsc::channel::<Stored>();
        std::thread::Builder::new()
            .name("disclosure-sync".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    // Every commit queued by now returned before this sync starts: one sync
                    // makes them all durable.
                    let waiting: Vec<Stored> = std::iter::once(first).chain(rx.try_iter()).collect();
                    match wal.sync() {
                        Ok(()) => waiting.into_iter().for_each(|s| handoff.durable(s)),
                        Err(e) => {
                            let records: usize = waiting.iter().map(|s| s.records.len()).sum();
                            tracing::error!(error = %e, records, "disclosure log's WAL did not sync; their requests fail");
                            let why = format!("disclosure log not synced to disk: {e}");
                            waiting
                                .into_iter()
                                .for_each(|s| handoff.not_durable(s, &why));
                        }
                    }
                }
            })?;
        Ok(Self { queue })
    }

    /// Queues a commit for the next sync.
    fn push(&self, stored: Stored) {
        // The thread ends only when this sender is dropped, or if it panicked: then the
        // requests' replies are dropped with the batch, and they fail as "writer stopped".
        let _ = self.queue.send(stored);
    }
}

/// Stores `records` numbered from `next_seq` (read from the table when `None`) and moves the
/// watermark; returns the first record's sequence number. `unsynced` (SQLite, with a [`Syncer`]):
/// in one round trip to SQLite's thread, committed without waiting for the disk; the caller
/// hands the batch to the syncer.
async fn write_batch(
    db: &Database,
    next_seq: Option<i64>,
    records: &[Record],
    watermark: Option<i64>,
    unsynced: bool,
) -> Result<i64, Error> {
    use sqlx::{Connection, Executor};
    let mut conn = db.writer().await?;
    // Read before the transaction: a deferred SQLite transaction that reads and then writes fails
    // at once (no busy wait) when another connection wrote in between. Only this writer inserts.
    let first = match next_seq {
        Some(seq) => seq,
        None => next_seq_on(&mut conn).await?,
    };
    if unsynced {
        let mut query = batch_query(unsynced_sql(watermark.is_some()), first, records)?;
        if let Some(last) = watermark {
            query = query.bind(last);
        }
        if let Err(e) = query.execute(&mut *conn).await {
            // A statement failed within the transaction: end it, and give the connection back
            // as every writer expects it (ROLLBACK fails harmlessly when BEGIN had not run).
            let _ = conn.execute("ROLLBACK").await;
            let _ = conn.execute("PRAGMA synchronous = FULL").await;
            return Err(e.into());
        }
        return Ok(first);
    }
    let mut tx = conn.begin().await?;
    insert_on(&mut tx, db.backend(), first, records).await?;
    if let Some(last) = watermark {
        mark_appended_on(&mut tx, last).await?;
    }
    tx.commit().await?;
    Ok(first)
}

/// The sequence number after the highest in use, and after the watermark (which no new record
/// may fall under).
async fn next_seq_on(conn: &mut sqlx::AnyConnection) -> Result<i64, Error> {
    let (max, through): (Option<i64>, i64) = sqlx::query_as(
        "SELECT (SELECT MAX(seq) FROM disclosures), appended_through \
         FROM disclosure_audit_progress WHERE id = 1",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(max.unwrap_or(0).max(through) + 1)
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

/// The oldest `limit` entries after sequence number `after` (the watermark, or further when the
/// appender is ahead of it) that go to the audit log, with their sequence numbers.
pub async fn pending(db: &Database, after: i64, limit: u32) -> Result<Vec<(i64, Record)>, Error> {
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

/// Moves the watermark to `last`: every entry up to it is in the audit log or kept here only.
async fn mark_appended_on(conn: &mut sqlx::AnyConnection, last: i64) -> Result<(), Error> {
    sqlx::query(sqlx::AssertSqlSafe(mark_appended_sql("$1")))
        .bind(last)
        .execute(&mut *conn)
        .await?;
    Ok(())
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

/// Marks an entry as kept here only.
pub async fn mark_local_only(db: &Database, seq: i64) -> Result<(), Error> {
    let mut conn = db.writer().await?;
    sqlx::query("UPDATE disclosures SET audit_state = $1 WHERE seq = $2")
        .bind(AuditState::LocalOnly as i32)
        .bind(seq)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use doorzet_store::Migrations;
    use doorzet_store::testing::TestDatabase;

    use super::*;

    fn record(n: u64) -> Record {
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

    fn persons(records: &[(i64, Record)]) -> Vec<String> {
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
            let writer = Writer::start(db.clone());
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
            let stored: Vec<Record> = pending(&db, 0, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|(_, r)| r)
                .collect();
            assert_eq!(stored, [odd.clone(), plain]);
            assert_eq!(
                for_case_ref(&db, &odd.case_ref, 1).await.unwrap()[0].requester_person,
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
            let writer = Writer::start(db.clone());
            writer.write(record(3)).await.unwrap();
            assert_eq!(persons(&pending(&db, 1, 10).await.unwrap()), ["emp-3"]);
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
            let writer = Writer::start(db.clone());
            writer.write(record(1)).await.unwrap();
            let case_ref = record(1).case_ref;
            assert_eq!(for_case_ref(&db, &case_ref, 10).await.unwrap().len(), 1);
            // A field short: the log is not read as if the rest had moved up by one.
            let mut conn = db.writer().await.unwrap();
            sqlx::query("UPDATE disclosures SET detail = '[\"disc-1\", \"emp-1\"]'")
                .execute(&mut *conn)
                .await
                .unwrap();
            drop(conn);
            let err = for_case_ref(&db, &case_ref, 10).await.unwrap_err();
            assert!(err.to_string().contains("disclosure 1's detail"), "{err}");
            assert!(pending(&db, 0, 10).await.is_err());
            db.close().await;
            test_db.drop().await;
        }
    }

    #[tokio::test]
    async fn a_failed_batch_leaves_the_writing_connection_durable_and_out_of_its_transaction() {
        let test_db = TestDatabase::sqlite();
        let db = Database::connect(test_db.url(), &[&crate::store::MIGRATIONS])
            .await
            .unwrap();
        assert!(
            db.wal().is_some(),
            "an SQLite file has its WAL synced apart"
        );
        let writer = Writer::start(db.clone());
        writer.write(record(1)).await.unwrap();
        let synchronous = || async {
            let mut conn = db.writer().await.unwrap();
            sqlx::query_scalar::<_, i64>("PRAGMA synchronous")
                .fetch_one(&mut *conn)
                .await
                .unwrap()
        };
        // Every other writer on the connection still commits with its own fsync.
        assert_eq!(synchronous().await, 2);

        // The insert fails inside the batch's transaction.
        let rename = |from: &'static str, to: &'static str| {
            let db = db.clone();
            async move {
                let mut conn = db.writer().await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "ALTER TABLE {from} RENAME TO {to}"
                )))
                .execute(&mut *conn)
                .await
                .unwrap();
            }
        };
        rename("disclosures", "disclosures_away").await;
        assert!(writer.write(record(2)).await.is_err());
        assert_eq!(synchronous().await, 2);
        // No transaction was left open: the connection takes the next write, and so does the
        // log once its table is back.
        rename("disclosures_away", "disclosures").await;
        writer.write(record(3)).await.unwrap();
        assert_eq!(
            persons(&pending(&db, 0, 10).await.unwrap()),
            ["emp-1", "emp-3"]
        );
        db.close().await;
    }

    #[tokio::test]
    async fn records_whose_sync_failed_are_refused_and_the_appender_reads_the_database() {
        let handoff = Handoff {
            committed: Arc::default(),
            capacity: 10,
        };
        let stored = |first| {
            let (reply, answer) = tokio::sync::oneshot::channel();
            let stored = Stored {
                first,
                records: vec![record(first as u64)],
                replies: vec![reply],
            };
            (stored, answer)
        };
        // A synced commit is answered and handed over.
        let (ok, answer) = stored(1);
        handoff.durable(ok);
        assert_eq!(answer.await.unwrap(), Ok(()));
        assert_eq!(handoff.committed.lock().unwrap().records.len(), 1);
        // One whose sync failed is refused, and the appender is told to read from the database.
        let (failed, answer) = stored(2);
        handoff.not_durable(failed, "disk gone");
        assert_eq!(answer.await.unwrap(), Err("disk gone".to_owned()));
        assert!(handoff.committed.lock().unwrap().lost);
    }

    #[tokio::test]
    async fn the_writer_hands_over_what_it_committed_in_order_and_says_when_it_dropped_some() {
        for test_db in TestDatabase::all().await {
            let db = Database::connect(test_db.url(), &[&crate::store::MIGRATIONS])
                .await
                .unwrap();
            let writer = Writer::start_with(db.clone(), 4);
            for n in 0..3 {
                writer.write(record(n)).await.unwrap();
            }
            let Taken::Records(taken) = writer.take_committed(0, 10) else {
                panic!("nothing was dropped");
            };
            assert_eq!(persons(&taken), ["emp-0", "emp-1", "emp-2"]);
            assert!(taken.windows(2).all(|w| w[0].0 < w[1].0));
            // Exactly what the database holds, sequence numbers included.
            assert_eq!(pending(&db, 0, 10).await.unwrap(), taken);
            let last = taken[2].0;

            for n in 3..5 {
                writer.write(record(n)).await.unwrap();
            }
            let Taken::Records(next) = writer.take_committed(last, 1) else {
                panic!("nothing was dropped");
            };
            assert_eq!(persons(&next), ["emp-3"]);
            let last = next[0].0;

            // More than it holds for the appender: it says so, and the database has them all.
            for n in 5..10 {
                writer.write(record(n)).await.unwrap();
            }
            assert!(matches!(writer.take_committed(last, 100), Taken::Lost));
            let rest = pending(&db, last, 100).await.unwrap();
            assert_eq!(
                persons(&rest),
                ["emp-4", "emp-5", "emp-6", "emp-7", "emp-8", "emp-9"]
            );
            let Taken::Records(after_loss) = writer.take_committed(last, 100) else {
                panic!("the loss was reported once");
            };
            assert!(after_loss.is_empty());

            // The watermark is stored with the writer's next transaction.
            assert_eq!(appended_through(&db).await.unwrap(), 0);
            writer.appended(last).await.unwrap();
            writer.write(record(10)).await.unwrap();
            assert_eq!(appended_through(&db).await.unwrap(), last);

            // A writer started again (after a restart) numbers on from the highest stored record.
            let highest = pending(&db, 0, 100).await.unwrap().last().unwrap().0;
            let again = Writer::start_with(db.clone(), 4);
            again.write(record(11)).await.unwrap();
            let Taken::Records(after_restart) = again.take_committed(0, 10) else {
                panic!("nothing was dropped");
            };
            assert_eq!(persons(&after_restart), ["emp-11"]);
            assert_eq!(after_restart[0].0, highest + 1);
            assert_eq!(pending(&db, highest, 10).await.unwrap(), after_restart);
            db.close().await;
            test_db.drop().await;
        }
    }
}
