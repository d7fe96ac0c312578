//! The inbox of notifications from the coordinator, stored once per notification id.

use std::collections::HashSet;
use std::time::SystemTime;

use doorzet_store::{Database, Params};
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
    let new = store_all(db, std::slice::from_ref(notification), now).await?;
    Ok(new.first().copied().unwrap_or(false))
}

/// Stores `notifications` in one statement (so in one transaction), each unless its id was stored
/// before or comes earlier in the batch; returns which were new.
pub async fn store_all(
    db: &Database,
    notifications: &[v1::NotifyRequest],
    now: SystemTime,
) -> Result<Vec<bool>, Error> {
    if notifications.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "INSERT INTO inbox (notification_id, body, received_at) VALUES {} \
         ON CONFLICT (notification_id) DO NOTHING RETURNING notification_id",
        Params::new(db.backend()).rows(notifications.len(), 3)
    );
    let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
    for n in notifications {
        q = q
            .bind(n.notification_id.clone())
            .bind(n.encode_to_vec())
            .bind(millis(now));
    }
    let mut conn = db.writer().await?;
    let mut inserted: HashSet<String> = q.fetch_all(&mut *conn).await?.into_iter().collect();
    // A repeated id within the batch conflicts with its first occurrence: only that one is new.
    Ok(notifications
        .iter()
        .map(|n| inserted.remove(&n.notification_id))
        .collect())
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

#[cfg(test)]
mod tests {
    use super::*;
    use doorzet_store::testing::TestDatabase;

    fn note(i: u64) -> v1::NotifyRequest {
        v1::NotifyRequest {
            notification_id: format!("ntf-{i}"),
            sequence: i,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_batch_stores_each_id_once_in_order_on_both_backends() {
        for test_db in TestDatabase::all().await {
            let db = Database::connect(test_db.url(), &[&crate::store::MIGRATIONS])
                .await
                .unwrap();
            let now = SystemTime::now();
            assert_eq!(
                store_all(&db, &[note(1), note(2)], now).await.unwrap(),
                [true, true]
            );
            // Stored before, new, and repeated within the batch.
            assert_eq!(
                store_all(&db, &[note(2), note(3), note(3), note(4)], now)
                    .await
                    .unwrap(),
                [false, true, false, true]
            );
            let stored: Vec<u64> = list(&db, 0, 0, false, 10)
                .await
                .unwrap()
                .into_iter()
                .filter_map(|i| i.notification.map(|n| n.sequence))
                .collect();
            assert_eq!(stored, [1, 2, 3, 4]);
            db.close().await;
            test_db.drop().await;
        }
    }
}
