//! Escalations in the database: the escalation (its contract form, with the columns queries need),
//! its events, idempotency keys, the notification outbox and the audit entries waiting for the log.
//! A transition is one [`Write`], committed in one transaction with the others that queued beside
//! it; two coordinators on one database cannot both commit a transition from the same state,
//! because the update names the sequence number it expects.

use std::time::{Duration, SystemTime};

use doorzet_proto::v1;
use doorzet_store::{Backend, Database, Params, from_millis, millis};
use prost::Message;
use sqlx::Row;

use crate::Error;

fn decode<M: Message + Default>(bytes: &[u8], what: &str) -> Result<M, Error> {
    M::decode(bytes).map_err(|_| Error::Corrupt(format!("stored {what} does not decode")))
}

/// Most rows in one INSERT.
const ROWS_PER_INSERT: usize = 64;

/// The VALUES of `rows` new outbox rows: id, recipient, body, when it is next due, the claim's
/// end and its holder as parameters; no attempts, no error yet.
fn outbox_values(backend: Backend, rows: usize) -> String {
    let mut p = Params::new(backend);
    (0..rows)
        .map(|_| {
            format!(
                "({}, {}, {}, 0, {}, {}, {}, '')",
                p.one(),
                p.one(),
                p.one(),
                p.one(),
                p.one(),
                p.one()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Who delivers the notifications a commit writes.
#[derive(Debug, Clone, Copy)]
pub enum Delivery<'a> {
    /// The committing instance, from memory: the rows are written claimed by it until `until`
    /// (and are due then, should it not mark them delivered or failed by that time).
    Claimed {
        /// The coordinator instance.
        instance: &'a str,
        /// The claim's end.
        until: SystemTime,
    },
    /// Whoever claims them from the database: the rows are due at once.
    Due,
}

/// What [`commit_all`] did.
#[derive(Debug)]
pub struct Committed {
    /// Each write's outcome, in the order of the writes.
    pub outcomes: Vec<Result<bool, Error>>,
    /// The row ids of the stored writes' notifications, in the order of the writes and of their
    /// `outbox`.
    pub outbox_ids: Vec<i64>,
}

/// One transition's writes.
#[derive(Debug, Default)]
pub struct Write {
    /// The escalation after the transition.
    pub escalation: v1::Escalation,
    /// The sequence number it had before (`None`: a new escalation).
    pub expected_sequence: Option<u64>,
    /// When the scheduler must look at it next.
    pub next_due: Option<SystemTime>,
    /// Organisations taking part (added; never removed, so past participants keep their view).
    pub members: Vec<String>,
    /// Its new events.
    pub events: Vec<v1::EscalationEvent>,
    /// Canonically encoded audit entries.
    pub audit: Vec<Vec<u8>>,
    /// Notifications: recipient and request.
    pub outbox: Vec<(String, v1::NotifyRequest)>,
    /// The idempotency key and the answer to remember: organisation, request id, request hash.
    pub request: Option<(String, String, String)>,
}

/// Commits `writes` (each with its instant) in one transaction, so a burst of transitions costs
/// one sync of the database's log rather than one each, and their rows (members, events, audit
/// entries, notifications) go in a few multi-row statements. Each write keeps its own outcome:
/// `Ok(false)` when another transition got there first (the sequence moved on), an error when its
/// idempotency key is being used by a concurrent request; either way nothing of it is stored and
/// the others are. `Err` only when the transaction itself failed: then none is in. The
/// notifications are written for `delivery`.
pub async fn commit_all(
    db: &Database,
    writes: &[(&Write, SystemTime)],
    delivery: Delivery<'_>,
) -> Result<Committed, Error> {
    use sqlx::Connection;
    let mut conn = db.writer().await?;
    let mut tx = conn.begin().await?;
    let mut outcomes: Vec<Option<Result<bool, Error>>> = writes.iter().map(|_| None).collect();
    // New escalations (a wave of registrations) are claimed together, a few statements for all;
    // moves of existing ones one by one, as each names the sequence it expects.
    let new: Vec<usize> = (0..writes.len())
        .filter(|i| writes[*i].0.expected_sequence.is_none())
        .collect();
    for (i, outcome) in claim_new(&mut tx, db.backend(), writes, &new).await? {
        outcomes[i] = Some(outcome);
    }
    for (i, &(write, now)) in writes.iter().enumerate() {
        if let Some(expected) = write.expected_sequence {
            outcomes[i] = Some(claim_move(&mut tx, write, expected, now).await?);
        }
    }
    let outcomes: Vec<Result<bool, Error>> = outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Ok(false)))
        .collect();
    // In the order of the writes: the log takes pending entries by id.
    let stored: Vec<(&Write, SystemTime)> = writes
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| matches!(o, Ok(true)))
        .map(|(w, _)| *w)
        .collect();
    let outbox_ids = insert_rows(db.backend(), &mut tx, &stored, delivery).await?;
    tx.commit().await?;
    Ok(Committed {
        outcomes,
        outbox_ids,
    })
}

fn key_taken() -> Error {
    Error::Unavailable("request_id: a request with this id is being handled; try again".into())
}

/// Claims the new escalations `new` (indexes into `writes`): their idempotency keys in multi-row
/// inserts that report which keys were free, then the escalations whose key was. A key already
/// taken, by an earlier request or by another write of this batch, is that write's error.
async fn claim_new(
    tx: &mut sqlx::AnyConnection,
    backend: Backend,
    writes: &[(&Write, SystemTime)],
    new: &[usize],
) -> Result<Vec<(usize, Result<bool, Error>)>, Error> {
    let mut outcomes = Vec::with_capacity(new.len());
    let mut keyed: Vec<(usize, &(String, String, String))> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut free: Vec<usize> = Vec::with_capacity(new.len());
    for &i in new {
        match &writes[i].0.request {
            Some(key) if !seen.insert((key.0.as_str(), key.1.as_str())) => {
                outcomes.push((i, Err(key_taken())))
            }
            Some(key) => keyed.push((i, key)),
            None => free.push(i),
        }
    }
    let mut claimed = std::collections::HashSet::new();
    for chunk in keyed.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO escalation_requests (org, request_id, request_hash, response, at)              VALUES {} ON CONFLICT (org, request_id) DO NOTHING RETURNING org, request_id",
            Params::new(backend).rows(chunk.len(), 5)
        );
        let mut q = sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(sql));
        for &(i, (org, request_id, hash)) in chunk {
            let (write, now) = writes[i];
            q = q
                .bind(org.clone())
                .bind(request_id.clone())
                .bind(hash.clone())
                .bind(write.escalation.escalation_id.as_bytes().to_vec())
                .bind(millis(now));
        }
        claimed.extend(q.fetch_all(&mut *tx).await?);
    }
    for (i, (org, request_id, _)) in keyed {
        if claimed.contains(&(org.clone(), request_id.clone())) {
            free.push(i);
        } else {
            outcomes.push((i, Err(key_taken())));
        }
    }
    free.sort_unstable();
    for chunk in free.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO escalations (escalation_id, case_ref, state, tier, registrant_org, \
             registered_at, updated_at, deadline, next_due, sequence, body) VALUES {}",
            Params::new(backend).rows(chunk.len(), 11)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for &i in chunk {
            let (write, now) = writes[i];
            let e = &write.escalation;
            q = q
                .bind(e.escalation_id.clone())
                .bind(e.case_ref.clone())
                .bind(e.state().as_str_name())
                .bind(e.tier as i64)
                .bind(e.registrant_org.clone())
                .bind(millis(now))
                .bind(millis(now))
                .bind(deadline_of(e))
                .bind(write.next_due.map(millis))
                .bind(e.sequence as i64)
                .bind(e.encode_to_vec());
        }
        q.execute(&mut *tx).await?;
        outcomes.extend(chunk.iter().map(|&i| (i, Ok(true))));
    }
    Ok(outcomes)
}

fn deadline_of(e: &v1::Escalation) -> Option<i64> {
    e.deadline
        .and_then(|t| SystemTime::try_from(t).ok())
        .map(millis)
}

/// Claims a move of an existing escalation: its idempotency key, and the escalation's row at the
/// sequence it expects. Nothing of it stays when either is taken.
async fn claim_move(
    tx: &mut sqlx::AnyConnection,
    write: &Write,
    expected: u64,
    now: SystemTime,
) -> Result<Result<bool, Error>, Error> {
    let e = &write.escalation;
    if let Some((org, request_id, hash)) = &write.request {
        let kept = sqlx::query(
            "INSERT INTO escalation_requests (org, request_id, request_hash, response, at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (org, request_id) DO NOTHING",
        )
        .bind(org)
        .bind(request_id)
        .bind(hash)
        .bind(e.escalation_id.as_bytes())
        .bind(millis(now))
        .execute(&mut *tx)
        .await?;
        if kept.rows_affected() != 1 {
            return Ok(Err(key_taken()));
        }
    }
    let written = sqlx::query(
        "UPDATE escalations SET state = $1, tier = $2, updated_at = $3, deadline = $4, \
         next_due = $5, sequence = $6, body = $7 WHERE escalation_id = $8 AND sequence = $9",
    )
    .bind(e.state().as_str_name())
    .bind(e.tier as i64)
    .bind(millis(now))
    .bind(deadline_of(e))
    .bind(write.next_due.map(millis))
    .bind(e.sequence as i64)
    .bind(e.encode_to_vec())
    .bind(&e.escalation_id)
    .bind(expected as i64)
    .execute(&mut *tx)
    .await?;
    if written.rows_affected() == 1 {
        return Ok(Ok(true));
    }
    if let Some((org, request_id, _)) = &write.request {
        sqlx::query("DELETE FROM escalation_requests WHERE org = $1 AND request_id = $2")
            .bind(org)
            .bind(request_id)
            .execute(&mut *tx)
            .await?;
    }
    Ok(Ok(false))
}

/// The rows of the writes that were claimed, a few statements for all of them: none of these can
/// collide (events and notifications are numbered by the sequence just claimed). Returns the
/// notifications' row ids in the order of the writes.
async fn insert_rows(
    backend: Backend,
    tx: &mut sqlx::AnyConnection,
    writes: &[(&Write, SystemTime)],
    delivery: Delivery<'_>,
) -> Result<Vec<i64>, Error> {
    let members: Vec<(&str, &str)> = writes
        .iter()
        .flat_map(|(w, _)| {
            w.members
                .iter()
                .map(|org| (w.escalation.escalation_id.as_str(), org.as_str()))
        })
        .collect();
    for chunk in members.chunks(ROWS_PER_INSERT) {
        let values = Params::new(backend).rows(chunk.len(), 2);
        let sql = match backend {
            Backend::Sqlite => format!(
                "INSERT OR IGNORE INTO escalation_members (escalation_id, org) VALUES {values}"
            ),
            Backend::Postgres => format!(
                "INSERT INTO escalation_members (escalation_id, org) VALUES {values} \
                 ON CONFLICT DO NOTHING"
            ),
        };
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (id, org) in chunk {
            q = q.bind(id.to_string()).bind(org.to_string());
        }
        q.execute(&mut *tx).await?;
    }
    let events: Vec<&v1::EscalationEvent> = writes.iter().flat_map(|(w, _)| &w.events).collect();
    for chunk in events.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO escalation_events (escalation_id, sequence, body) VALUES {}",
            Params::new(backend).rows(chunk.len(), 3)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for event in chunk {
            q = q
                .bind(event.escalation_id.clone())
                .bind(event.sequence as i64)
                .bind(event.encode_to_vec());
        }
        q.execute(&mut *tx).await?;
    }
    // In the order of the writes: the log takes pending entries by id.
    let audit: Vec<&Vec<u8>> = writes.iter().flat_map(|(w, _)| &w.audit).collect();
    for chunk in audit.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO audit_pending (entry) VALUES {}",
            Params::new(backend).rows(chunk.len(), 1)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for entry in chunk {
            q = q.bind(entry.to_vec());
        }
        q.execute(&mut *tx).await?;
    }
    let outbox: Vec<(&String, &v1::NotifyRequest, SystemTime)> = writes
        .iter()
        .flat_map(|(w, now)| w.outbox.iter().map(move |(org, n)| (org, n, *now)))
        .collect();
    let grants = insert_grants(backend, tx, &outbox).await?;
    let mut ids = Vec::with_capacity(outbox.len());
    for chunk in outbox.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO outbox (notification_id, recipient_org, body, attempts, next_attempt_at, \
             claimed_until, claimed_by, last_error) VALUES {} RETURNING id, notification_id",
            outbox_values(backend, chunk.len())
        );
        let mut q = sqlx::query_as::<_, (i64, String)>(sqlx::AssertSqlSafe(sql));
        for (recipient, notification, now) in chunk {
            let (due, claimed_until, claimed_by) = match delivery {
                Delivery::Claimed { instance, until } => (until, millis(until), instance),
                Delivery::Due => (*now, 0, ""),
            };
            q = q
                .bind(notification.notification_id.clone())
                .bind((*recipient).clone())
                .bind(body_without_stored_grant(notification, &grants))
                .bind(millis(due))
                .bind(claimed_until)
                .bind(claimed_by.to_string());
        }
        // RETURNING gives no order; a notification id is unique (escalation, sequence, recipient).
        let returned: std::collections::HashMap<String, i64> = q
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|(id, notification_id)| (notification_id, id))
            .collect();
        for (_, notification, _) in chunk {
            ids.push(
                *returned
                    .get(&notification.notification_id)
                    .ok_or_else(|| Error::Corrupt("outbox insert lost a row".into()))?,
            );
        }
    }
    Ok(ids)
}

/// The grants the notifications carry, each stored once by the escalation and sequence of its
/// transition (one grant serves every participant invited by it).
type StoredGrants<'a> = std::collections::HashMap<(&'a str, u64), &'a str>;

async fn insert_grants<'a>(
    backend: Backend,
    tx: &mut sqlx::AnyConnection,
    outbox: &[(&String, &'a v1::NotifyRequest, SystemTime)],
) -> Result<StoredGrants<'a>, Error> {
    let mut grants = StoredGrants::new();
    let mut new = Vec::new();
    for (_, n, _) in outbox {
        if !n.grant.is_empty() {
            let key = (n.escalation_id.as_str(), n.sequence);
            if let std::collections::hash_map::Entry::Vacant(e) = grants.entry(key) {
                e.insert(n.grant.as_str());
                new.push((key, n.grant.as_str()));
            }
        }
    }
    for chunk in new.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO outbox_grants (escalation_id, sequence, token) VALUES {}",
            Params::new(backend).rows(chunk.len(), 3)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for ((escalation_id, sequence), token) in chunk {
            q = q
                .bind(escalation_id.to_string())
                .bind(*sequence as i64)
                .bind(token.to_string());
        }
        q.execute(&mut *tx).await?;
    }
    Ok(grants)
}

/// The stored body of `n`: without its grant when that is the one stored for its transition.
fn body_without_stored_grant(n: &v1::NotifyRequest, grants: &StoredGrants<'_>) -> Vec<u8> {
    let stored = grants.get(&(n.escalation_id.as_str(), n.sequence));
    if n.grant.is_empty() || stored != Some(&n.grant.as_str()) {
        return n.encode_to_vec();
    }
    v1::NotifyRequest {
        grant: String::new(),
        ..n.clone()
    }
    .encode_to_vec()
}

/// Puts back the grants of claimed invitations whose body was stored without one.
async fn restore_grants(
    conn: &mut sqlx::AnyConnection,
    claimed: &mut [Claimed],
) -> Result<(), Error> {
    let mut found: std::collections::HashMap<(String, u64), Option<String>> =
        std::collections::HashMap::new();
    for c in claimed.iter_mut() {
        let n = &mut c.notification;
        if !n.grant.is_empty() || n.event != v1::EscalationEventType::Invited as i32 {
            continue;
        }
        let key = (n.escalation_id.clone(), n.sequence);
        let token = match found.get(&key) {
            Some(token) => token.clone(),
            None => {
                let token: Option<String> = sqlx::query_scalar(
                    "SELECT token FROM outbox_grants WHERE escalation_id = $1 AND sequence = $2",
                )
                .bind(&key.0)
                .bind(key.1 as i64)
                .fetch_optional(&mut *conn)
                .await?;
                found.insert(key, token.clone());
                token
            }
        };
        if let Some(token) = token {
            n.grant = token;
        }
    }
    Ok(())
}

/// One escalation.
pub async fn get(db: &Database, id: &str) -> Result<Option<v1::Escalation>, Error> {
    let row: Option<(Vec<u8>,)> =
        sqlx::query_as("SELECT body FROM escalations WHERE escalation_id = $1")
            .bind(id)
            .fetch_optional(db.pool())
            .await?;
    row.map(|(b,)| decode(&b, "escalation")).transpose()
}

/// Whether `org` takes part in escalation `id`.
pub async fn is_member(db: &Database, id: &str, org: &str) -> Result<bool, Error> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT 1 FROM escalation_members WHERE escalation_id = $1 AND org = $2")
            .bind(id)
            .bind(org)
            .fetch_optional(db.pool())
            .await?;
    Ok(row.is_some())
}

/// An earlier request under the same key: its hash and the escalation it answered with.
pub async fn request(
    db: &Database,
    org: &str,
    request_id: &str,
) -> Result<Option<(String, String)>, Error> {
    let row: Option<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT request_hash, response FROM escalation_requests WHERE org = $1 AND request_id = $2",
    )
    .bind(org)
    .bind(request_id)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.map(|(h, r)| (h, String::from_utf8_lossy(&r).into_owned())))
}

/// What to list.
#[derive(Debug, Default)]
pub struct ListFilter {
    /// State names (`ESCALATION_STATE_…`); empty: all.
    pub states: Vec<String>,
    /// Tier.
    pub tier: Option<u32>,
    /// Deadline before.
    pub deadline_before: Option<SystemTime>,
    /// Only those this organisation takes part in.
    pub org: Option<String>,
    /// Page size.
    pub limit: u32,
    /// Continue after (registered_at, escalation_id), newest first.
    pub after: Option<(i64, String)>,
}

/// Lists escalations, newest first, with the cursor of the next page.
pub async fn list(
    db: &Database,
    filter: &ListFilter,
) -> Result<(Vec<v1::Escalation>, Option<(i64, String)>), Error> {
    let mut sql =
        String::from("SELECT e.registered_at, e.escalation_id, e.body FROM escalations e");
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    let mut conditions = Vec::new();
    if filter.org.is_some() {
        sql.push_str(" JOIN escalation_members m ON m.escalation_id = e.escalation_id");
        conditions.push(format!("m.org = {}", next()));
    }
    if !filter.states.is_empty() {
        let marks: Vec<String> = filter.states.iter().map(|_| next()).collect();
        conditions.push(format!("e.state IN ({})", marks.join(", ")));
    }
    if filter.tier.is_some() {
        conditions.push(format!("e.tier = {}", next()));
    }
    if filter.deadline_before.is_some() {
        conditions.push(format!("e.deadline < {}", next()));
    }
    if filter.after.is_some() {
        let (a, b, c) = (next(), next(), next());
        conditions.push(format!(
            "(e.registered_at < {a} OR (e.registered_at = {b} AND e.escalation_id < {c}))"
        ));
    }
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql.push_str(&format!(
        " ORDER BY e.registered_at DESC, e.escalation_id DESC LIMIT {}",
        next()
    ));
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    if let Some(org) = &filter.org {
        query = query.bind(org.clone());
    }
    for state in &filter.states {
        query = query.bind(state.clone());
    }
    if let Some(tier) = filter.tier {
        query = query.bind(tier as i64);
    }
    if let Some(t) = filter.deadline_before {
        query = query.bind(millis(t));
    }
    if let Some((at, id)) = &filter.after {
        query = query.bind(*at).bind(*at).bind(id.clone());
    }
    query = query.bind(i64::from(filter.limit) + 1);
    let rows = query.fetch_all(db.pool()).await?;
    let mut out = Vec::new();
    let mut cursor = None;
    for (i, row) in rows.iter().enumerate() {
        if i as u32 == filter.limit {
            break;
        }
        let at: i64 = row.try_get(0)?;
        let id: String = row.try_get(1)?;
        let body: Vec<u8> = row.try_get(2)?;
        out.push(decode(&body, "escalation")?);
        cursor = Some((at, id));
    }
    let more = rows.len() as u32 > filter.limit;
    Ok((out, cursor.filter(|_| more)))
}

/// Events of escalation `id` after sequence `after`, in order.
pub async fn events_after(
    db: &Database,
    id: &str,
    after: u64,
) -> Result<Vec<v1::EscalationEvent>, Error> {
    let rows: Vec<(Vec<u8>,)> = sqlx::query_as(
        "SELECT body FROM escalation_events WHERE escalation_id = $1 AND sequence > $2 \
         ORDER BY sequence LIMIT 1000",
    )
    .bind(id)
    .bind(after as i64)
    .fetch_all(db.pool())
    .await?;
    rows.into_iter()
        .map(|(b,)| decode(&b, "escalation event"))
        .collect()
}

/// The earliest moment the scheduler must act.
pub async fn next_due(db: &Database) -> Result<Option<SystemTime>, Error> {
    let row: (Option<i64>,) =
        sqlx::query_as("SELECT MIN(next_due) FROM escalations WHERE next_due IS NOT NULL")
            .fetch_one(db.pool())
            .await?;
    Ok(row.0.map(from_millis))
}

/// Escalations due at `now` as stored, oldest deadline first (read with their bodies, so firing
/// them needs no read of its own; a transition names the sequence it read, so one that changed
/// since is not fired on a stale copy).
pub async fn due(db: &Database, now: SystemTime, limit: u32) -> Result<Vec<v1::Escalation>, Error> {
    let rows: Vec<(Vec<u8>,)> = sqlx::query_as(
        "SELECT body FROM escalations WHERE next_due IS NOT NULL AND next_due <= $1 \
         ORDER BY next_due LIMIT $2",
    )
    .bind(millis(now))
    .bind(i64::from(limit))
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(|(b,)| decode(b, "escalation")).collect()
}

/// A notification claimed for delivery.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Row id.
    pub id: i64,
    /// Recipient.
    pub recipient_org: String,
    /// The request.
    pub notification: v1::NotifyRequest,
    /// Attempts before this one.
    pub attempts: u32,
}

/// Claims up to `limit` due notifications for `lease` as coordinator `instance` (another
/// coordinator skips them meanwhile); they are due again when the lease ends.
pub async fn claim_due(
    db: &Database,
    instance: &str,
    now: SystemTime,
    lease: Duration,
    limit: u32,
) -> Result<Vec<Claimed>, Error> {
    let lock = match db.backend() {
        Backend::Sqlite => "",
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
    };
    let sql = format!(
        "UPDATE outbox SET claimed_until = $1, next_attempt_at = $1, claimed_by = $4 \
         WHERE id IN (SELECT id FROM outbox \
         WHERE delivered_at IS NULL AND next_attempt_at <= $2 AND claimed_until <= $2 \
         ORDER BY next_attempt_at, id LIMIT $3{lock}) \
         RETURNING id, recipient_org, body, attempts"
    );
    let mut conn = db.writer().await?;
    let rows: Vec<(i64, String, Vec<u8>, i32)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(millis(now + lease))
        .bind(millis(now))
        .bind(i64::from(limit))
        .bind(instance)
        .fetch_all(&mut *conn)
        .await?;
    let mut out: Vec<Claimed> = rows
        .into_iter()
        .map(|(id, recipient_org, body, attempts)| {
            Ok(Claimed {
                id,
                recipient_org,
                notification: decode(&body, "notification")?,
                attempts: attempts.max(0) as u32,
            })
        })
        .collect::<Result<_, Error>>()?;
    restore_grants(&mut conn, &mut out).await?;
    // RETURNING gives no order; deliver in the order written.
    out.sort_by_key(|c| c.id);
    Ok(out)
}

/// Releases the claims `instance` held before it restarted (it is not delivering them now): they
/// are due at `now`.
pub async fn release_claims(db: &Database, instance: &str, now: SystemTime) -> Result<u64, Error> {
    let mut conn = db.writer().await?;
    let done = sqlx::query(
        "UPDATE outbox SET claimed_until = 0, next_attempt_at = $2 WHERE claimed_by = $1 \
         AND delivered_at IS NULL AND claimed_until > 0",
    )
    .bind(instance)
    .bind(millis(now))
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// Marks notifications delivered, in one transaction.
pub async fn delivered(db: &Database, ids: &[i64], now: SystemTime) -> Result<(), Error> {
    use sqlx::Connection;
    if ids.is_empty() {
        return Ok(());
    }
    let mut conn = db.writer().await?;
    let mut tx = conn.begin().await?;
    for chunk in ids.chunks(256) {
        let mut p = Params::new(db.backend());
        let sql = format!(
            "UPDATE outbox SET delivered_at = {} WHERE id IN ({})",
            p.one(),
            p.list(chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(millis(now));
        for id in chunk {
            q = q.bind(*id);
        }
        q.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Schedules the next attempt of notifications that failed.
pub async fn failed(
    db: &Database,
    ids: &[i64],
    attempts: u32,
    next_attempt_at: SystemTime,
    error: &str,
) -> Result<(), Error> {
    let mut conn = db.writer().await?;
    for chunk in ids.chunks(256) {
        let mut p = Params::new(db.backend());
        let sql = format!(
            "UPDATE outbox SET attempts = {}, next_attempt_at = {}, claimed_until = 0, \
             last_error = {} WHERE id IN ({})",
            p.one(),
            p.one(),
            p.one(),
            p.list(chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(attempts as i32)
            .bind(millis(next_attempt_at))
            .bind(error.chars().take(200).collect::<String>());
        for id in chunk {
            q = q.bind(*id);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The earliest next attempt of an undelivered notification (a claimed one is due when its claim
/// ends).
pub async fn next_attempt(db: &Database) -> Result<Option<SystemTime>, Error> {
    let row: (Option<i64>,) =
        sqlx::query_as("SELECT MIN(next_attempt_at) FROM outbox WHERE delivered_at IS NULL")
            .fetch_one(db.pool())
            .await?;
    Ok(row.0.map(from_millis))
}

/// Undelivered notifications (for metrics and tests).
pub async fn undelivered(db: &Database) -> Result<i64, Error> {
    let row: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL")
        .fetch_one(db.pool())
        .await?;
    Ok(row.0)
}

/// Audit entries waiting for the log, oldest first.
pub async fn audit_pending(db: &Database, limit: u32) -> Result<Vec<(i64, Vec<u8>)>, Error> {
    Ok(
        sqlx::query_as("SELECT id, entry FROM audit_pending ORDER BY id LIMIT $1")
            .bind(i64::from(limit))
            .fetch_all(db.pool())
            .await?,
    )
}

/// Removes the audit entries `ids`, now in the log (by id: with several coordinators a lower id
/// may commit after a higher one was read).
pub async fn audit_drained(db: &Database, ids: &[i64]) -> Result<(), Error> {
    let mut conn = db.writer().await?;
    for chunk in ids.chunks(256) {
        let sql = format!(
            "DELETE FROM audit_pending WHERE id IN ({})",
            Params::new(db.backend()).list(chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            q = q.bind(*id);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Stores only the audit entries of `write` (a refused registration, which changes nothing else).
pub async fn commit_audit_only(db: &Database, write: &Write) -> Result<(), Error> {
    use sqlx::Connection;
    let mut conn = db.writer().await?;
    let mut tx = conn.begin().await?;
    for entry in &write.audit {
        sqlx::query("INSERT INTO audit_pending (entry) VALUES ($1)")
            .bind(entry.as_slice())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Sets when the scheduler looks at escalation `id` next, unless it changed meanwhile.
pub async fn set_due_if_unchanged(
    db: &Database,
    id: &str,
    sequence: u64,
    next_due: Option<SystemTime>,
) -> Result<(), Error> {
    let mut conn = db.writer().await?;
    sqlx::query("UPDATE escalations SET next_due = $1 WHERE escalation_id = $2 AND sequence = $3")
        .bind(next_due.map(millis))
        .bind(id)
        .bind(sequence as i64)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Escalations registered in `[from, until)`, with all their events (for statistics).
pub async fn registered_between(
    db: &Database,
    from: SystemTime,
    until: SystemTime,
) -> Result<Vec<(v1::Escalation, Vec<v1::EscalationEvent>)>, Error> {
    let rows: Vec<(Vec<u8>,)> = sqlx::query_as(
        "SELECT body FROM escalations WHERE registered_at >= $1 AND registered_at < $2 \
         ORDER BY registered_at LIMIT 100000",
    )
    .bind(millis(from))
    .bind(millis(until))
    .fetch_all(db.pool())
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (body,) in rows {
        let e: v1::Escalation = decode(&body, "escalation")?;
        let events = events_after(db, &e.escalation_id, 0).await?;
        out.push((e, events));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use doorzet_store::testing::TestDatabase;

    const ORG: &str = "00000001000000000001";

    /// Escalation `id` at `sequence`, moving on from `expected` (`None`: new).
    fn write(id: &str, sequence: u64, expected: Option<u64>, request: Option<&str>) -> Write {
        Write {
            escalation: v1::Escalation {
                escalation_id: id.into(),
                case_ref: format!("case-{id}"),
                tier: 1,
                registrant_org: ORG.into(),
                sequence,
                ..Default::default()
            },
            expected_sequence: expected,
            next_due: None,
            members: vec![ORG.into()],
            events: vec![v1::EscalationEvent {
                escalation_id: id.into(),
                sequence,
                ..Default::default()
            }],
            audit: vec![format!("{id}.{sequence}").into_bytes()],
            outbox: vec![(
                ORG.into(),
                v1::NotifyRequest {
                    notification_id: format!("{id}.{sequence}.{ORG}"),
                    ..Default::default()
                },
            )],
            request: request.map(|r| (ORG.into(), r.into(), "hash".into())),
        }
    }

    async fn count(db: &Database, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(db.pool()).await.unwrap()
    }

    #[tokio::test]
    async fn a_batch_keeps_each_transitions_own_outcome_and_hands_its_notifications_over() {
        for test_db in TestDatabase::all().await {
            let db = Database::connect(test_db.url(), &[&crate::store::MIGRATIONS])
                .await
                .unwrap();
            let now = SystemTime::now();
            // New escalations are claimed together; a key used twice in one batch is the second
            // one's error.
            let first = commit_all(
                &db,
                &[
                    (&write("a", 1, None, Some("req-1")), now),
                    (&write("e", 1, None, Some("req-2")), now),
                    (&write("f", 1, None, Some("req-2")), now),
                    (&write("b", 1, None, None), now),
                ],
                Delivery::Due,
            )
            .await
            .unwrap()
            .outcomes;
            assert!(
                matches!(first[..], [Ok(true), Ok(true), Err(_), Ok(true)]),
                "{first:?}"
            );
            assert!(get(&db, "f").await.unwrap().is_none());
            let pending: Vec<Vec<u8>> =
                sqlx::query_scalar("SELECT entry FROM audit_pending ORDER BY id")
                    .fetch_all(db.pool())
                    .await
                    .unwrap();
            assert_eq!(
                pending,
                [&b"a.1"[..], b"e.1", b"b.1"],
                "in the order of the writes"
            );

            // One moves on, a second move from the same state conflicts, a reused request id
            // fails: each is that write's own outcome, and the others are stored. Their
            // notifications are written claimed by the committing instance.
            let committed = commit_all(
                &db,
                &[
                    (&write("a", 2, Some(1), None), now),
                    (&write("a", 2, Some(1), None), now),
                    (&write("c", 1, None, Some("req-1")), now),
                    (&write("d", 1, None, None), now),
                ],
                Delivery::Claimed {
                    instance: "coordinator-1",
                    until: now + Duration::from_secs(30),
                },
            )
            .await
            .unwrap();
            let (outcomes, handed) = (committed.outcomes, committed.outbox_ids);
            assert!(
                matches!(outcomes[..], [Ok(true), Ok(false), Err(_), Ok(true)]),
                "{outcomes:?}"
            );
            assert_eq!(get(&db, "a").await.unwrap().unwrap().sequence, 2);
            assert!(get(&db, "c").await.unwrap().is_none());
            assert!(get(&db, "d").await.unwrap().is_some());
            assert_eq!(
                count(&db, "SELECT COUNT(*) FROM escalation_events").await,
                5
            );
            assert_eq!(count(&db, "SELECT COUNT(*) FROM audit_pending").await, 5);
            assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox").await, 5);
            assert_eq!(
                count(&db, "SELECT COUNT(*) FROM escalation_requests").await,
                2
            );

            // Another instance claims only the unclaimed ones; the committing instance's are
            // due when their claim ends, or at once when it restarts.
            let ids = |c: &[Claimed]| {
                c.iter()
                    .map(|c| c.notification.notification_id.clone())
                    .collect::<Vec<_>>()
            };
            let lease = Duration::from_secs(30);
            let due = claim_due(&db, "coordinator-2", now, lease, 100)
                .await
                .unwrap();
            assert_eq!(
                ids(&due),
                [
                    "a.1.00000001000000000001",
                    "e.1.00000001000000000001",
                    "b.1.00000001000000000001"
                ]
            );
            delivered(&db, &due.iter().map(|c| c.id).collect::<Vec<_>>(), now)
                .await
                .unwrap();
            assert_eq!(
                next_attempt(&db).await.unwrap(),
                Some(from_millis(millis(now + lease))),
                "the claimed ones are due when their claim ends"
            );
            assert!(
                claim_due(&db, "coordinator-2", now, lease, 100)
                    .await
                    .unwrap()
                    .is_empty()
            );
            assert_eq!(release_claims(&db, "coordinator-1", now).await.unwrap(), 2);
            let released = claim_due(&db, "coordinator-2", now, lease, 100)
                .await
                .unwrap();
            assert_eq!(
                ids(&released),
                ["a.2.00000001000000000001", "d.1.00000001000000000001"]
            );
            assert_eq!(
                handed,
                released.iter().map(|c| c.id).collect::<Vec<_>>(),
                "the committer learns the row ids in the order of the writes"
            );
            db.close().await;
            test_db.drop().await;
        }
    }

    #[tokio::test]
    async fn an_invitations_grant_is_stored_once_and_comes_back_with_a_claim() {
        for test_db in TestDatabase::all().await {
            let db = Database::connect(test_db.url(), &[&crate::store::MIGRATIONS])
                .await
                .unwrap();
            let now = SystemTime::now();
            let mut w = write("g", 1, None, None);
            // The participants are invited with the transition's grant; the registrant hears of
            // it without one.
            let notify = |org: &str, event: v1::EscalationEventType, grant: &str| {
                (
                    org.to_string(),
                    v1::NotifyRequest {
                        notification_id: format!("g.1.{org}"),
                        escalation_id: "g".into(),
                        sequence: 1,
                        event: event as i32,
                        grant: grant.into(),
                        ..Default::default()
                    },
                )
            };
            let invited = v1::EscalationEventType::Invited;
            w.outbox = vec![
                notify("00000001000000000002", invited, "grant-for-g-1"),
                notify("00000001000000000003", invited, "grant-for-g-1"),
                notify(ORG, v1::EscalationEventType::ParticipantsResolved, ""),
            ];
            commit_all(&db, &[(&w, now)], Delivery::Due).await.unwrap();
            assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox_grants").await, 1);
            let bodies: Vec<Vec<u8>> = sqlx::query_scalar("SELECT body FROM outbox ORDER BY id")
                .fetch_all(db.pool())
                .await
                .unwrap();
            for body in &bodies {
                let n: v1::NotifyRequest = decode(body, "notification").unwrap();
                assert!(
                    n.grant.is_empty(),
                    "the grant is not stored per notification"
                );
            }
            let claimed = claim_due(&db, "coordinator-1", now, Duration::from_secs(30), 10)
                .await
                .unwrap();
            let grants: Vec<&str> = claimed
                .iter()
                .map(|c| c.notification.grant.as_str())
                .collect();
            assert_eq!(grants, ["grant-for-g-1", "grant-for-g-1", ""]);
            db.close().await;
            test_db.drop().await;
        }
    }

    #[tokio::test]
    async fn each_move_keeps_its_own_outcome_and_a_refused_one_leaves_nothing() {
        for test_db in TestDatabase::all().await {
            let db = Database::connect(test_db.url(), &[&crate::store::MIGRATIONS])
                .await
                .unwrap();
            let now = SystemTime::now();
            let new: Vec<Write> = ["m1", "m2", "m3", "m4"]
                .iter()
                .map(|id| write(id, 1, None, None))
                .collect();
            let batch: Vec<(&Write, SystemTime)> = new.iter().map(|w| (w, now)).collect();
            commit_all(&db, &batch, Delivery::Due).await.unwrap();
            let mut moved = write("m1", 2, Some(1), None);
            moved.next_due = Some(now + Duration::from_secs(60));
            moved.escalation.tier = 2;
            let outcomes = commit_all(
                &db,
                &[
                    (&moved, now),
                    // Another coordinator moved it on already.
                    (&write("m2", 5, Some(4), None), now),
                    // With an idempotency key.
                    (&write("m3", 2, Some(1), Some("req-m3")), now),
                    // Twice in one batch, in order.
                    (&write("m4", 2, Some(1), None), now),
                    (&write("m4", 3, Some(2), None), now),
                ],
                Delivery::Due,
            )
            .await
            .unwrap()
            .outcomes;
            assert!(
                matches!(
                    outcomes[..],
                    [Ok(true), Ok(false), Ok(true), Ok(true), Ok(true)]
                ),
                "{outcomes:?}"
            );
            let m1 = get(&db, "m1").await.unwrap().unwrap();
            assert_eq!((m1.sequence, m1.tier), (2, 2));
            assert_eq!(get(&db, "m2").await.unwrap().unwrap().sequence, 1);
            assert_eq!(get(&db, "m3").await.unwrap().unwrap().sequence, 2);
            assert_eq!(get(&db, "m4").await.unwrap().unwrap().sequence, 3);
            assert_eq!(
                next_due(&db).await.unwrap(),
                Some(from_millis(millis(now + Duration::from_secs(60))))
            );
            // Nothing of the refused move is stored.
            let events: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM escalation_events WHERE escalation_id = 'm2'",
            )
            .fetch_one(db.pool())
            .await
            .unwrap();
            assert_eq!(events, 1);
            db.close().await;
            test_db.drop().await;
        }
    }
}
