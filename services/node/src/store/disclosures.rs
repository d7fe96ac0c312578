//! The disclosure log (NEN 7513): every `QueryFacts` decision, allowed or refused, with who asked,
//! on whose behalf, about which case reference, which facts and categories, for what, and the
//! outcome. Never fact contents. Records are appended to the coordinator's audit log in order, so
//! one watermark (`disclosure_audit_progress.appended_through`) says which are in it; the few the
//! audit log refuses are marked as kept here only.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use doorzet_store::{Backend, Database};

use super::journal::{self, Journal};
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

/// Answers a request once its record is durable (or with why it is not stored).
type Reply = tokio::sync::oneshot::Sender<Result<(), String>>;

/// The log's writing side: it stores records with group commit, the records of concurrent
/// requests together, and answers each request only once its record is durable. It numbers the
/// records itself and stores one batch at a time, so sequence numbers become durable in order,
/// which the audit watermark relies on (on PostgreSQL too, where concurrent writers could commit a
/// lower sequence number after a higher one). It hands what it stored to the audit appender in
/// memory ([`Committed`]), and stores the appender's watermark.
///
/// - On an SQLite file a batch is durable once it is in the journal ([`journal`]): one write and
///   one `fdatasync` on a thread of its own. A task fills the log's table from there behind, in
///   transactions of up to [`MOVE_LINGER`]'s worth of records. Reads through the writer
///   ([`Writer::for_case_ref`], [`Writer::pending`]) first wait for it to catch up.
/// - On PostgreSQL (which groups concurrent commits itself) and on SQLite in memory, a batch is
///   one transaction.
#[derive(Debug, Clone)]
pub struct Writer {
    db: Database,
    sink: Sink,
    committed: Arc<Mutex<Committed>>,
}

#[derive(Debug, Clone)]
enum Sink {
    /// One transaction a batch, by the writer task.
    Transactions(tokio::sync::mpsc::Sender<Message>),
    /// Into the journal by its thread; into the table by the mover ([`Move`]).
    Journal {
        records: tokio::sync::mpsc::Sender<(Record, Reply)>,
        mover: tokio::sync::mpsc::UnboundedSender<Move>,
    },
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

/// What the mover is given: journalled records to put into the table, the watermark, and
/// requests to catch up.
enum Move {
    Records(Encoded),
    Appended(i64),
    CatchUp(tokio::sync::oneshot::Sender<Result<(), String>>),
}

/// Records committed and not yet taken by the audit appender, in commit order with their sequence
/// numbers, so that it need not read them back. Bounded: what does not fit is dropped here (it is
/// in the log) and `lost` tells the appender to read from there.
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
    /// Some were dropped: read them from the log ([`Writer::pending`]).
    Lost,
}

/// Most records in one batch.
const MAX_BATCH: usize = 512;
/// Most committed records held for the audit appender.
const MAX_COMMITTED: usize = 4096;
/// How long the mover gathers journalled records into one transaction.
const MOVE_LINGER: std::time::Duration = std::time::Duration::from_millis(100);
/// Most records the mover stores in one transaction.
const MAX_MOVE: usize = 2048;

fn stopped() -> Error {
    Error::DisclosureLog("the disclosure log's writer stopped".into())
}

impl Writer {
    /// Starts the writer on `db`. On an SQLite file it first puts into the table what the
    /// journal holds and the table lacks (after a crash), so it fails if the journal cannot be
    /// read.
    pub async fn start(db: Database) -> Result<Self, Error> {
        Self::start_with(db, MAX_COMMITTED).await
    }

    /// Starts the writer, holding at most `capacity` committed records for the appender.
    async fn start_with(db: Database, capacity: usize) -> Result<Self, Error> {
        let committed = Arc::new(Mutex::new(Committed::default()));
        let handoff = Handoff {
            committed: committed.clone(),
            capacity,
        };
        let sink = match db.sqlite_file() {
            Some(file) => start_journal(&db, file, handoff).await?,
            None => start_transactions(&db, handoff),
        };
        Ok(Self {
            db,
            sink,
            committed,
        })
    }

    /// Stores `record` (to be appended to the audit log) and returns once it is durable.
    pub async fn write(&self, record: Record) -> Result<(), Error> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let sent = match &self.sink {
            Sink::Transactions(queue) => queue.send(Message::Record(record, reply)).await.is_ok(),
            Sink::Journal { records, .. } => records.send((record, reply)).await.is_ok(),
        };
        if !sent {
            return Err(stopped());
        }
        answer
            .await
            .map_err(|_| stopped())?
            .map_err(Error::DisclosureLog)
    }

    /// Records that every record up to `seq` is in the audit log (stored with the next
    /// transaction; after a crash before that, the appender sends the same records again).
    pub async fn appended(&self, seq: i64) -> Result<(), Error> {
        let sent = match &self.sink {
            Sink::Transactions(queue) => queue.send(Message::Appended(seq)).await.is_ok(),
            Sink::Journal { mover, .. } => mover.send(Move::Appended(seq)).is_ok(),
        };
        sent.then_some(()).ok_or_else(stopped)
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

    /// Returns once the table holds every record whose [`Writer::write`] returned before.
    async fn catch_up(&self) -> Result<(), Error> {
        let Sink::Journal { mover, .. } = &self.sink else {
            return Ok(());
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        mover.send(Move::CatchUp(reply)).map_err(|_| stopped())?;
        answer
            .await
            .map_err(|_| stopped())?
            .map_err(Error::DisclosureLog)
    }

    /// Lists the newest `limit` entries for a case reference, newest first.
    pub async fn for_case_ref(&self, case_ref: &str, limit: u32) -> Result<Vec<Record>, Error> {
        self.catch_up().await?;
        for_case_ref(&self.db, case_ref, limit).await
    }

    /// The oldest `limit` entries after sequence number `after` (the watermark, or further when
    /// the appender is ahead of it) that go to the audit log, with their sequence numbers.
    pub async fn pending(&self, after: i64, limit: u32) -> Result<Vec<(i64, Record)>, Error> {
        self.catch_up().await?;
        pending(&self.db, after, limit).await
    }

    /// Marks an entry as kept here only.
    pub async fn mark_local_only(&self, seq: i64) -> Result<(), Error> {
        self.catch_up().await?;
        let mut conn = self.db.writer().await?;
        sqlx::query("UPDATE disclosures SET audit_state = $1 WHERE seq = $2")
            .bind(AuditState::LocalOnly as i32)
            .bind(seq)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

/// The writer task of [`Sink::Transactions`].
fn start_transactions(db: &Database, handoff: Handoff) -> Sink {
    let (queue, mut rx) = tokio::sync::mpsc::channel::<Message>(4096);
    let db = db.clone();
    tokio::spawn(async move {
        // The next sequence number, read again after a failed batch.
        let mut next_seq = None;
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
            let stored = async {
                let first = match next_seq {
                    Some(seq) => seq,
                    None => {
                        let (max, through) = numbered(&db).await?;
                        max.max(through) + 1
                    }
                };
                commit(&db, &Encoded::of(first, &records)?, watermark).await?;
                Ok::<_, Error>(first)
            };
            match stored.await {
                Ok(first) => {
                    next_seq = Some(first + records.len() as i64);
                    handoff.durable(first, records, replies);
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
    Sink::Transactions(queue)
}

/// Puts what the journal of `file` holds and the table lacks into the table, then starts the
/// journal's thread and the mover ([`Sink::Journal`]).
async fn start_journal(
    db: &Database,
    file: &std::path::Path,
    handoff: Handoff,
) -> Result<Sink, Error> {
    let unreadable = |e: std::io::Error| {
        Error::DisclosureLog(format!(
            "the journal beside {} cannot be read: {e}",
            file.display()
        ))
    };
    // Off the runtime: it may wait for a writer that is stopping to let the journal go.
    let path = file.to_owned();
    let (mut journal, held) = tokio::task::spawn_blocking(move || Journal::open(&path))
        .await
        .map_err(|e| unreadable(std::io::Error::other(e)))?
        .map_err(unreadable)?;
    let (max, through) = numbered(db).await?;
    let mut last = max.max(through);
    let missing: Vec<_> = held.into_iter().filter(|e| e.seq > max).collect();
    if !missing.is_empty() {
        tracing::info!(
            records = missing.len(),
            "disclosure records from the journal put into the log's table (the node stopped before it had moved them)"
        );
    }
    for chunk in missing.chunks(MAX_MOVE) {
        let mut batch = Encoded::default();
        for e in chunk {
            batch.push(e.seq, e.at, e.case_ref.clone(), &e.detail);
            last = last.max(e.seq);
        }
        commit(db, &batch, None).await?;
    }
    journal.restart();

    let in_table = Arc::new(AtomicI64::new(last));
    let (mover, moves) = tokio::sync::mpsc::unbounded_channel();
    let (mover_done, mover_ended) = std::sync::mpsc::channel();
    tokio::spawn(run_mover(db.clone(), moves, in_table.clone(), mover_done));
    let (records, rx) = tokio::sync::mpsc::channel(4096);
    let thread = JournalThread {
        journal,
        next_seq: last + 1,
        mover: mover.clone(),
        handoff,
        in_table,
        mover_ended,
    };
    std::thread::Builder::new()
        .name("disclosure-journal".into())
        .spawn(move || thread.run(rx))
        .map_err(|e| Error::DisclosureLog(format!("no thread for the journal: {e}")))?;
    Ok(Sink::Journal { records, mover })
}

/// Writes batches to the journal, on a thread of its own (a sync blocks for the disk).
struct JournalThread {
    journal: Journal,
    next_seq: i64,
    mover: tokio::sync::mpsc::UnboundedSender<Move>,
    handoff: Handoff,
    /// Every record up to this sequence number is in the table (for the journal's rotation).
    in_table: Arc<AtomicI64>,
    /// Disconnected when the mover has ended.
    mover_ended: std::sync::mpsc::Receiver<()>,
}

impl JournalThread {
    fn run(mut self, mut rx: tokio::sync::mpsc::Receiver<(Record, Reply)>) {
        let mut frames = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            // Every record that arrived while the last batch was written goes into this one.
            let (mut records, mut replies) = (Vec::new(), Vec::new());
            let mut next = Some(first);
            while let Some((record, reply)) = next.take() {
                records.push(record);
                replies.push(reply);
                if records.len() < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            match self.write(&records, &mut frames) {
                Ok(batch) => {
                    let first = self.next_seq;
                    self.next_seq += records.len() as i64;
                    // Before the answers, so that a read after them finds the records.
                    let _ = self.mover.send(Move::Records(batch));
                    self.handoff.durable(first, records, replies);
                    self.journal.rotate(self.in_table.load(Ordering::Acquire));
                }
                Err(e) => {
                    // The batch's numbers are not used again: whatever of it reached the disk
                    // (a write that went through before its sync failed) is overwritten by the
                    // next batch, and where that batch is shorter, the rest no longer numbers on
                    // from it, so it is never read as records of requests that failed.
                    self.next_seq += records.len() as i64;
                    tracing::error!(error = %e, records = records.len(), "disclosure records not stored; their requests fail");
                    for reply in replies {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
        }
        // The writer is gone. The journal (and its lock) is let go only once the mover has
        // stored what it was given, so that a writer started next does not put the same records
        // back at the same time.
        let Self {
            journal,
            mover,
            mover_ended,
            ..
        } = self;
        drop(mover);
        let _ = mover_ended.recv();
        drop(journal);
    }

    /// Writes `records`, numbered from the next sequence number, and returns them as the table
    /// will store them.
    fn write(&mut self, records: &[Record], frames: &mut Vec<u8>) -> Result<Encoded, Error> {
        let batch = Encoded::of(self.next_seq, records)?;
        frames.clear();
        batch.frames(frames);
        let last = self.next_seq + records.len() as i64 - 1;
        self.journal.append(frames, last).map_err(|e| {
            Error::DisclosureLog(format!("the journal was not written to disk: {e}"))
        })?;
        Ok(batch)
    }
}

/// Fills the table from the journal: gathers what the journal thread wrote for up to
/// [`MOVE_LINGER`] (less when a reader waits) and stores it with the latest watermark in one
/// transaction. A transaction that fails is tried again with what came in meanwhile.
async fn run_mover(
    db: Database,
    mut moves: tokio::sync::mpsc::UnboundedReceiver<Move>,
    in_table: Arc<AtomicI64>,
    _done: std::sync::mpsc::Sender<()>,
) {
    /// What the next transaction stores, and who waits for it.
    #[derive(Default)]
    struct Gathered {
        batch: Encoded,
        watermark: Option<i64>,
        waiting: Vec<tokio::sync::oneshot::Sender<Result<(), String>>>,
    }
    impl Gathered {
        fn take(&mut self, m: Move) {
            match m {
                Move::Records(more) => self.batch.extend(more),
                Move::Appended(seq) => self.watermark = self.watermark.max(Some(seq)),
                Move::CatchUp(reply) => self.waiting.push(reply),
            }
        }
        fn is_empty(&self) -> bool {
            self.batch.rows.is_empty() && self.watermark.is_none()
        }
        fn answer(&mut self, answer: &Result<(), String>) {
            for w in self.waiting.drain(..) {
                let _ = w.send(answer.clone());
            }
        }
    }

    let mut next = Gathered::default();
    let mut open = true;
    let mut backoff = std::time::Duration::from_millis(100);
    while open || !next.is_empty() {
        if open && next.is_empty() {
            match moves.recv().await {
                Some(m) => next.take(m),
                None => open = false,
            }
        }
        let until = tokio::time::Instant::now() + MOVE_LINGER;
        while open && next.waiting.is_empty() && next.batch.rows.len() < MAX_MOVE {
            match tokio::time::timeout_at(until, moves.recv()).await {
                Ok(Some(m)) => next.take(m),
                Ok(None) => open = false,
                Err(_) => break,
            }
        }
        while let Ok(m) = moves.try_recv() {
            next.take(m);
        }
        if next.is_empty() {
            next.answer(&Ok(()));
            continue;
        }
        match commit(&db, &next.batch, next.watermark).await {
            Ok(()) => {
                if let Some(last) = next.batch.last_seq() {
                    in_table.store(last, Ordering::Release);
                }
                next.answer(&Ok(()));
                next = Gathered::default();
                backoff = std::time::Duration::from_millis(100);
            }
            Err(e) if !open => {
                tracing::error!(error = %e, records = next.batch.rows.len(), "disclosure records not moved from the journal into the log's table before the writer stopped; the next start puts them there");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, records = next.batch.rows.len(), "disclosure records not yet moved from the journal into the log's table; trying again");
                next.answer(&Err(format!(
                    "the disclosure log's table is behind its journal: {e}"
                )));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
            }
        }
    }
}

/// Where durable records go: to the audit appender's hand ([`Committed`]), and their requests
/// are answered.
#[derive(Debug, Clone)]
struct Handoff {
    committed: Arc<Mutex<Committed>>,
    capacity: usize,
}

impl Handoff {
    /// `records`, numbered from `first`, are durable: hand them over and answer their requests.
    fn durable(&self, first: i64, records: Vec<Record>, replies: Vec<Reply>) {
        {
            let mut c = self.committed.lock().unwrap_or_else(|e| e.into_inner());
            for (seq, record) in (first..).zip(records) {
                if c.records.len() < self.capacity {
                    c.records.push_back((seq, record));
                } else {
                    c.lost = true;
                }
            }
        }
        for reply in replies {
            let _ = reply.send(Ok(()));
        }
    }
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

    /// A database on a file, with the node's migrations, and its writer.
    async fn on_file() -> (TestDatabase, Database, Writer) {
        let test_db = TestDatabase::sqlite();
        let db = Database::connect(test_db.url(), &[&crate::store::MIGRATIONS])
            .await
            .unwrap();
        assert!(db.sqlite_file().is_some(), "an SQLite file has a journal");
        let writer = Writer::start(db.clone()).await.unwrap();
        (test_db, db, writer)
    }

    async fn rename(db: &Database, from: &str, to: &str) {
        let mut conn = db.writer().await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE {from} RENAME TO {to}"
        )))
        .execute(&mut *conn)
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_record_the_table_cannot_take_yet_is_durable_in_the_journal_and_moved_later() {
        let (_test_db, db, writer) = on_file().await;
        writer.write(record(1)).await.unwrap();
        assert_eq!(persons(&writer.pending(0, 10).await.unwrap()), ["emp-1"]);

        // The table is away: the request still succeeds (its record is on disk in the journal),
        // and a reader is told that the table is behind rather than shown a short log.
        rename(&db, "disclosures", "disclosures_away").await;
        writer.write(record(2)).await.unwrap();
        let err = writer.pending(0, 10).await.unwrap_err();
        assert!(err.to_string().contains("behind its journal"), "{err}");

        // Back: the mover's next try stores it, numbered in order, and nothing is lost.
        rename(&db, "disclosures_away", "disclosures").await;
        writer.write(record(3)).await.unwrap();
        let stored = writer.pending(0, 10).await.unwrap();
        assert_eq!(persons(&stored), ["emp-1", "emp-2", "emp-3"]);
        assert_eq!(
            stored.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        db.close().await;
    }

    #[tokio::test]
    async fn records_the_table_lacks_are_put_back_from_the_journal_when_the_writer_starts() {
        let (_test_db, db, writer) = on_file().await;
        for n in 1..=3 {
            writer.write(record(n)).await.unwrap();
        }
        assert_eq!(writer.pending(0, 10).await.unwrap().len(), 3);
        // Another writer on the same database is refused while this one runs.
        let err = Writer::start(db.clone()).await.unwrap_err();
        assert!(err.to_string().contains("another node"), "{err}");

        // As if the node had stopped before it moved the last two into the table.
        let mut conn = db.writer().await.unwrap();
        sqlx::query("DELETE FROM disclosures WHERE seq > 1")
            .execute(&mut *conn)
            .await
            .unwrap();
        drop(conn);
        drop(writer);
        let again = Writer::start(db.clone()).await.unwrap();
        let stored = again.pending(0, 10).await.unwrap();
        assert_eq!(persons(&stored), ["emp-1", "emp-2", "emp-3"]);
        again.write(record(4)).await.unwrap();
        assert_eq!(again.pending(3, 10).await.unwrap()[0].0, 4);
        db.close().await;
    }

    #[tokio::test]
    async fn the_writer_hands_over_what_it_committed_in_order_and_says_when_it_dropped_some() {
        for test_db in TestDatabase::all().await {
            let db = Database::connect(test_db.url(), &[&crate::store::MIGRATIONS])
                .await
                .unwrap();
            let writer = Writer::start_with(db.clone(), 4).await.unwrap();
            for n in 0..3 {
                writer.write(record(n)).await.unwrap();
            }
            let Taken::Records(taken) = writer.take_committed(0, 10) else {
                panic!("nothing was dropped");
            };
            assert_eq!(persons(&taken), ["emp-0", "emp-1", "emp-2"]);
            assert!(taken.windows(2).all(|w| w[0].0 < w[1].0));
            // Exactly what the database holds, sequence numbers included.
            assert_eq!(writer.pending(0, 10).await.unwrap(), taken);
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
            let rest = writer.pending(last, 100).await.unwrap();
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
            writer.catch_up().await.unwrap();
            assert_eq!(appended_through(&db).await.unwrap(), last);

            // A writer started again (after a restart) numbers on from the highest stored record.
            let highest = writer.pending(0, 100).await.unwrap().last().unwrap().0;
            drop(writer);
            let again = Writer::start_with(db.clone(), 4).await.unwrap();
            again.write(record(11)).await.unwrap();
            let Taken::Records(after_restart) = again.take_committed(0, 10) else {
                panic!("nothing was dropped");
            };
            assert_eq!(persons(&after_restart), ["emp-11"]);
            assert_eq!(after_restart[0].0, highest + 1);
            assert_eq!(again.pending(highest, 10).await.unwrap(), after_restart);
            db.close().await;
            test_db.drop().await;
        }
    }
}
