//! The inbox of notifications from the coordinator, stored once per notification id.

use std::time::SystemTime;

use doorzet_store::Database;
use prost::Message;

use crate::Error;
use crate::store::cases::{from_millis, millis};
use doorzet_proto::v1;

/// Stores `notification` unless its id was stored before; returns whether it was new.
pub async fn store(
    db: &Database,
    notification: &v1::NotifyRequest,
    now: SystemTime,
) -> Result<bool, Error> {
    let inserted = sqlx::query(
        "INSERT INTO inbox (notification_id, body, received_at) VALUES ($1, $2, $3) \
         ON CONFLICT (notification_id) DO NOTHING",
    )
    .bind(&notification.notification_id)
    .bind(notification.encode_to_vec())
    .bind(millis(now))
    .execute(db.pool())
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Stores `notifications` in one transaction, each unless its id was stored before; returns
/// which were new.
pub async fn store_all(
    db: &Database,
    notifications: &[v1::NotifyRequest],
    now: SystemTime,
) -> Result<Vec<bool>, Error> {
    use sqlx::Connection;
    let mut conn = db.writer().await?;
    let mut tx = conn.begin().await?;
    let mut new = Vec::with_capacity(notifications.len());
    for n in notifications {
        let inserted = sqlx::query(
            "INSERT INTO inbox (notification_id, body, received_at) VALUES ($1, $2, $3) \
             ON CONFLICT (notification_id) DO NOTHING",
        )
        .bind(&n.notification_id)
        .bind(n.encode_to_vec())
        .bind(millis(now))
        .execute(&mut *tx)
        .await?;
        new.push(inserted.rows_affected() == 1);
    }
    tx.commit().await?;
    Ok(new)
}

/// Lists up to `limit` notifications after position `after`, oldest first.
pub async fn list(
    db: &Database,
    after: u64,
    before: u64,
    newest_first: bool,
    limit: u32,
) -> Result<Vec<v1::InboxItem>, Error> {
    let order = if newest_first { "DESC" } else { "ASC" };
    let before = if before == 0 { i64::MAX } else { before as i64 };
    let rows: Vec<(i64, Vec<u8>, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT position, body, received_at FROM inbox WHERE position > $1 AND position < $2 \
         ORDER BY position {order} LIMIT $3"
    )))
    .bind(after as i64)
    .bind(before)
    .bind(limit as i64)
    .fetch_all(db.pool())
    .await?;
    rows.into_iter()
        .map(|(position, body, at)| {
            Ok(v1::InboxItem {
                position: position as u64,
                notification: Some(
                    v1::NotifyRequest::decode(body.as_slice())
                        .map_err(|e| Error::Corrupt(format!("inbox body: {e}")))?,
                ),
                received_at: Some(from_millis(at).into()),
            })
        })
        .collect()
}
