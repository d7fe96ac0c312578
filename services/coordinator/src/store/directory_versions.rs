//! Directory versions: each distinct file content the coordinator loaded gets the next number, so
//! nodes see versions grow across coordinator restarts.

use std::time::{SystemTime, UNIX_EPOCH};

use doorzet_store::Database;

/// Returns the version for a file whose content hashes to `sha256`: the current version when the
/// content is unchanged since the last load, the next one otherwise.
pub async fn version_for(db: &Database, sha256: &str, now: SystemTime) -> Result<u64, sqlx::Error> {
    let mut tx = db.pool().begin().await?;
    let latest: Option<(i64, String)> = sqlx::query_as(
        "SELECT version, sha256 FROM directory_versions ORDER BY version DESC LIMIT 1",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let version = match latest {
        Some((version, ref latest_sha)) if latest_sha == sha256 => version,
        Some((version, _)) => version + 1,
        None => 1,
    };
    if latest.as_ref().is_none_or(|(v, _)| *v != version) {
        let loaded_at = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
        sqlx::query(
            "INSERT INTO directory_versions (version, sha256, loaded_at) VALUES ($1, $2, $3)",
        )
        .bind(version)
        .bind(sha256)
        .bind(loaded_at)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(version as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use doorzet_store::testing::TestDatabase;

    #[tokio::test]
    async fn versions_grow_only_when_content_changes() {
        for test_db in TestDatabase::all().await {
            let db = Database::connect(test_db.url(), &[&crate::store::MIGRATIONS])
                .await
                .unwrap();
            let now = SystemTime::now();
            assert_eq!(version_for(&db, "aa", now).await.unwrap(), 1);
            assert_eq!(version_for(&db, "aa", now).await.unwrap(), 1);
            assert_eq!(version_for(&db, "bb", now).await.unwrap(), 2);
            // Going back to an earlier content is still a change.
            assert_eq!(version_for(&db, "aa", now).await.unwrap(), 3);
            db.close().await;
            test_db.drop().await;
        }
    }
}
