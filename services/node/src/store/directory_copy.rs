//! The last good copy of the directory, stored as the protobuf the coordinator sent, with the time
//! it was fetched so that its age survives a restart.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use doorzet_proto::v1;
use doorzet_store::Database;
use prost::Message;

use crate::Error;

/// Replaces the stored copy.
pub async fn save(
    db: &Database,
    wire: &v1::ListMembersResponse,
    fetched_at: SystemTime,
) -> Result<(), Error> {
    let millis = fetched_at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    sqlx::query(
        "INSERT INTO directory_copy (id, body, fetched_at) VALUES (1, $1, $2) \
         ON CONFLICT (id) DO UPDATE SET body = excluded.body, fetched_at = excluded.fetched_at",
    )
    .bind(wire.encode_to_vec())
    .bind(millis)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Returns the stored copy and when it was fetched, if there is one.
pub async fn load(db: &Database) -> Result<Option<(v1::ListMembersResponse, SystemTime)>, Error> {
    let row: Option<(Vec<u8>, i64)> =
        sqlx::query_as("SELECT body, fetched_at FROM directory_copy WHERE id = 1")
            .fetch_optional(db.pool())
            .await?;
    row.map(|(body, millis)| {
        let wire = v1::ListMembersResponse::decode(body.as_slice())
            .map_err(|e| Error::Corrupt(format!("directory_copy.body: {e}")))?;
        Ok((
            wire,
            UNIX_EPOCH + Duration::from_millis(millis.max(0) as u64),
        ))
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use doorzet_store::testing::TestDatabase;

    #[tokio::test]
    async fn keeps_only_the_latest_copy_with_its_fetch_time() {
        for test_db in TestDatabase::all().await {
            let db = Database::connect(test_db.url(), &[&crate::store::MIGRATIONS])
                .await
                .unwrap();
            assert!(load(&db).await.unwrap().is_none());
            let t1 = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
            let mut wire = v1::ListMembersResponse {
                region: "twente-demo".into(),
                version: 1,
                ..Default::default()
            };
            save(&db, &wire, t1).await.unwrap();
            wire.version = 2;
            let t2 = t1 + Duration::from_secs(60);
            save(&db, &wire, t2).await.unwrap();
            let (stored, at) = load(&db).await.unwrap().unwrap();
            assert_eq!(stored.version, 2);
            assert_eq!(stored.region, "twente-demo");
            assert_eq!(at, t2);
            db.close().await;
            test_db.drop().await;
        }
    }
}
