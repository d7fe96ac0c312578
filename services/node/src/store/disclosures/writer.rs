//! The disclosure log's writing side ([`Writer`]): group commit, the journal's thread and the
//! mover on an SQLite file, one transaction a batch elsewhere, and the hand-over of what it stored
//! to the audit appender.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use doorzet_store::Database;

use super::journal::Journal;
use super::{AuditState, Encoded, Record, commit, for_case_ref, numbered, pending};
use crate::Error;

/// Answers a request once its record is durable (or with why it is not stored).
type Reply = tokio::sync::oneshot::Sender<Result<(), String>>;

/// The log's writing side: it stores records with group commit, the records of concurrent
/// requests together, and answers each request only once its record is durable. It numbers the
/// records itself and stores one batch at a time, so sequence numbers become durable in order,
/// which the audit watermark relies on (on PostgreSQL too, where concurrent writers could commit a
/// lower sequence number after a higher one). It hands what it stored to the audit appender in
/// memory (`Committed`), and stores the appender's watermark.
///
/// - On an SQLite file a batch is durable once it is in the journal (`journal`): one write and
///   one `fdatasync` on a thread of its own. A task fills the log's table from there behind, in
///   transactions of up to `MOVE_LINGER`'s worth of records. Reads through the writer
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
/// Most records the mover holds while the table cannot take them (about 30 MiB). Past it, it lets
/// them go and reads them back from the journal once the table takes records again, so that a
/// long outage of the table does not grow the node's memory with its traffic.
const MAX_HELD: usize = 65_536;

fn stopped() -> Error {
    Error::DisclosureLog("the disclosure log's writer stopped".into())
}

impl Writer {
    /// Starts the writer on `db`. On an SQLite file it first puts into the table what the
    /// journal holds and the table lacks (after a crash), so it fails if the journal cannot be
    /// read.
    pub async fn start(db: Database) -> Result<Self, Error> {
        Self::start_with(db, MAX_COMMITTED, MAX_HELD).await
    }

    /// Starts the writer, holding at most `capacity` committed records for the appender and, on
    /// an SQLite file, at most `max_held` records the table cannot take yet.
    async fn start_with(db: Database, capacity: usize, max_held: usize) -> Result<Self, Error> {
        let committed = Arc::new(Mutex::new(Committed::default()));
        let handoff = Handoff {
            committed: committed.clone(),
            capacity,
        };
        let sink = match db.sqlite_file() {
            Some(file) => start_journal(&db, file, handoff, max_held).await?,
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

    /// Returns once the table holds every record whose [`Writer::write`] returned before, and
    /// the latest [`Writer::appended`] mark.
    pub async fn flush(&self) -> Result<(), Error> {
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
        self.flush().await?;
        for_case_ref(&self.db, case_ref, limit).await
    }

    /// The oldest `limit` entries after sequence number `after` (the watermark, or further when
    /// the appender is ahead of it) that go to the audit log, with their sequence numbers.
    pub async fn pending(&self, after: i64, limit: u32) -> Result<Vec<(i64, Record)>, Error> {
        self.flush().await?;
        pending(&self.db, after, limit).await
    }

    /// Marks an entry as kept here only.
    pub async fn mark_local_only(&self, seq: i64) -> Result<(), Error> {
        self.flush().await?;
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
    max_held: usize,
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
    let mover_task = Mover {
        db: db.clone(),
        file: file.to_owned(),
        in_table: in_table.clone(),
        max_held,
    };
    tokio::spawn(mover_task.run(moves, mover_done));
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
            let first = self.next_seq;
            let written = self.write(&records, &mut frames);
            // Taken whether or not the batch was written. A failed batch's numbers are not used
            // again: should some of it have stayed on disk after all (see `Journal::append`), the
            // next batch is written over it, and where that one is shorter, the rest no longer
            // numbers on from it, so it is never read as records of requests that failed.
            self.next_seq += records.len() as i64;
            match written {
                Ok(batch) => {
                    // Before the answers, so that a read after them finds the records.
                    let _ = self.mover.send(Move::Records(batch));
                    self.handoff.durable(first, records, replies);
                    self.journal.rotate(self.in_table.load(Ordering::Acquire));
                }
                Err(e) => {
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
/// transaction. A transaction that fails is tried again with what came in meanwhile; past
/// `max_held` records it lets them go and reads them back from the journal.
struct Mover {
    db: Database,
    /// The database's file, beside which the journal lies.
    file: std::path::PathBuf,
    /// Every record up to this sequence number is in the table.
    in_table: Arc<AtomicI64>,
    max_held: usize,
}

/// What the mover's next transaction stores, and who waits for it.
#[derive(Default)]
struct Gathered {
    batch: Encoded,
    /// The highest sequence number let go of: every record after the table's up to this one is
    /// read back from the journal, not held here.
    behind: Option<i64>,
    watermark: Option<i64>,
    waiting: Vec<tokio::sync::oneshot::Sender<Result<(), String>>>,
}

impl Gathered {
    fn take(&mut self, m: Move) {
        match m {
            Move::Records(more) if self.behind.is_some() => {
                self.behind = self.behind.max(more.last_seq());
            }
            Move::Records(more) => self.batch.extend(more),
            Move::Appended(seq) => self.watermark = self.watermark.max(Some(seq)),
            Move::CatchUp(reply) => self.waiting.push(reply),
        }
    }

    fn is_empty(&self) -> bool {
        self.batch.rows.is_empty() && self.behind.is_none() && self.watermark.is_none()
    }

    fn answer(&mut self, answer: &Result<(), String>) {
        for w in self.waiting.drain(..) {
            let _ = w.send(answer.clone());
        }
    }

    /// Lets go of the records held: they are in the journal.
    fn let_go(&mut self) {
        if let Some(last) = self.batch.last_seq() {
            self.behind = self.behind.max(Some(last));
            self.batch = Encoded::default();
        }
    }
}

impl Mover {
    async fn run(
        self,
        mut moves: tokio::sync::mpsc::UnboundedReceiver<Move>,
        _done: std::sync::mpsc::Sender<()>,
    ) {
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
            match self.store(&mut next).await {
                Ok(()) => {
                    next.answer(&Ok(()));
                    next = Gathered::default();
                    backoff = std::time::Duration::from_millis(100);
                }
                Err(e) if !open => {
                    tracing::error!(error = %e, "disclosure records not moved from the journal into the log's table before the writer stopped; the next start puts them there");
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, held = next.batch.rows.len(), "disclosure records not yet moved from the journal into the log's table; trying again");
                    next.answer(&Err(format!(
                        "the disclosure log's table is behind its journal: {e}"
                    )));
                    if next.batch.rows.len() > self.max_held {
                        tracing::warn!(
                            records = next.batch.rows.len(),
                            "disclosure records let go of in memory; they are read back from the journal once the log's table takes records again"
                        );
                        next.let_go();
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
                }
            }
        }
    }

    /// Stores what `next` gathered: first what it let go of, read back from the journal (and no
    /// longer owed once that is in the table), then what it holds, with the watermark. The read
    /// takes the journal's files into memory for a moment: after a long outage, that is what the
    /// outage wrote.
    async fn store(&self, next: &mut Gathered) -> Result<(), Error> {
        if let Some(through) = next.behind {
            let (path, after) = (self.file.clone(), self.in_table.load(Ordering::Acquire));
            let entries = tokio::task::spawn_blocking(move || {
                super::journal::read_back(&path, after, through)
            })
            .await
            .map_err(|e| Error::DisclosureLog(e.to_string()))?
            .map_err(|e| Error::DisclosureLog(format!("the journal cannot be read back: {e}")))?;
            for chunk in entries.chunks(MAX_MOVE) {
                let mut batch = Encoded::default();
                for e in chunk {
                    batch.push(e.seq, e.at, e.case_ref.clone(), &e.detail);
                }
                commit(&self.db, &batch, None).await?;
                if let Some(last) = batch.last_seq() {
                    self.in_table.store(last, Ordering::Release);
                }
            }
            next.behind = None;
        }
        commit(&self.db, &next.batch, next.watermark).await?;
        if let Some(last) = next.batch.last_seq() {
            self.in_table.store(last, Ordering::Release);
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use doorzet_store::testing::TestDatabase;

    use super::super::appended_through;
    use super::super::tests::{persons, record};
    use super::*;

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

    #[test]
    fn records_let_go_of_are_not_held_again_only_how_far_they_go() {
        let batch = |first: i64, n: u64| {
            let records: Vec<_> = (0..n).map(record).collect();
            Encoded::of(first, &records).unwrap()
        };
        let mut next = Gathered::default();
        next.take(Move::Records(batch(1, 3)));
        assert_eq!(next.batch.rows.len(), 3);
        next.let_go();
        assert!(next.batch.rows.is_empty());
        assert_eq!(next.behind, Some(3));
        // What comes next is in the journal too: only how far it goes is kept.
        next.take(Move::Records(batch(4, 2)));
        assert!(next.batch.rows.is_empty());
        assert_eq!(next.behind, Some(5));
        assert!(
            !next.is_empty(),
            "the records let go of are still to be stored"
        );
    }

    #[tokio::test]
    async fn records_let_go_of_while_the_table_is_away_are_read_back_from_the_journal() {
        let test_db = TestDatabase::sqlite();
        let db = Database::connect(test_db.url(), &[&crate::store::MIGRATIONS])
            .await
            .unwrap();
        // Holding at most two records the table cannot take.
        let writer = Writer::start_with(db.clone(), MAX_COMMITTED, 2)
            .await
            .unwrap();
        writer.write(record(1)).await.unwrap();
        assert_eq!(writer.pending(0, 10).await.unwrap().len(), 1);

        // The table is away for longer than the mover holds records: every request still
        // succeeds, and the mover lets go of the records after its next failed try.
        rename(&db, "disclosures", "disclosures_away").await;
        for n in 2..=7 {
            writer.write(record(n)).await.unwrap();
        }
        let err = writer.pending(0, 10).await.unwrap_err();
        assert!(err.to_string().contains("behind its journal"), "{err}");
        writer.write(record(8)).await.unwrap();

        // Back: the records come from the journal, then the ones after them, in order.
        rename(&db, "disclosures_away", "disclosures").await;
        writer.write(record(9)).await.unwrap();
        let stored = writer.pending(0, 20).await.unwrap();
        assert_eq!(
            persons(&stored),
            (1..=9).map(|n| format!("emp-{n}")).collect::<Vec<_>>()
        );
        assert_eq!(
            stored.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
            (1..=9).collect::<Vec<i64>>()
        );
        db.close().await;
    }

    #[tokio::test]
    async fn a_flush_stores_the_latest_audit_mark_at_once() {
        let (_test_db, db, writer) = on_file().await;
        for n in 1..=2 {
            writer.write(record(n)).await.unwrap();
        }
        writer.flush().await.unwrap();
        assert_eq!(super::super::appended_through(&db).await.unwrap(), 0);
        // The mark waits for the mover's next transaction (up to MOVE_LINGER); a flush, as at a
        // node's shutdown, stores it now.
        writer.appended(2).await.unwrap();
        writer.flush().await.unwrap();
        assert_eq!(super::super::appended_through(&db).await.unwrap(), 2);
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
            let writer = Writer::start_with(db.clone(), 4, MAX_HELD).await.unwrap();
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
            writer.flush().await.unwrap();
            assert_eq!(appended_through(&db).await.unwrap(), last);

            // A writer started again (after a restart) numbers on from the highest stored record.
            let highest = writer.pending(0, 100).await.unwrap().last().unwrap().0;
            drop(writer);
            let again = Writer::start_with(db.clone(), 4, MAX_HELD).await.unwrap();
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
