//! Directory versions: each distinct file content the coordinator loaded gets a new version, the
//! larger of the last one plus one and the time of loading in milliseconds since the Unix epoch.
//! Versions grow across restarts, and also across a database restored from a backup or wiped: a
//! reset coordinator starts above every version a node has seen, so nodes keep taking its
//! directories (revocations included). A node that is served a lower version than its copy's
//! refuses it and counts a rollback.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use doorzet_domain::Oin;
use doorzet_store::Database;

/// Returns the members of the directory applied last, when one was recorded.
pub async fn last_members(db: &Database) -> Result<Option<BTreeSet<Oin>>, sqlx::Error> {
    let row: Option<(Option<String>,)> =
        sqlx::query_as("SELECT members FROM directory_versions ORDER BY version DESC LIMIT 1")
            .fetch_optional(db.pool())
            .await?;
    Ok(row
        .and_then(|(members,)| members)
        .map(|text| text.split(',').filter_map(|org| org.parse().ok()).collect()))
}

/// Returns the version for a file whose content hashes to `sha256` and lists `members`: the
/// current version when the content is unchanged since the last load, the next one otherwise.
pub async fn version_for(
    db: &Database,
    sha256: &str,
    members: &BTreeSet<Oin>,
    now: SystemTime,
) -> Result<u64, sqlx::Error> {
    let mut tx = db.pool().begin().await?;
    let latest: Option<(i64, String)> = sqlx::query_as(
        "SELECT version, sha256 FROM directory_versions ORDER BY version DESC LIMIT 1",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let from_time = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    let version = match latest {
        Some((version, ref latest_sha)) if latest_sha == sha256 => version,
        Some((version, _)) => (version + 1).max(from_time),
        None => from_time.max(1),
    };
    if latest.as_ref().is_none_or(|(v, _)| *v != version) {
        let loaded_at = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
        sqlx::query(
            "INSERT INTO directory_versions (version, sha256, loaded_at, members) VALUES ($1, $2, $3, $4)",
        )
        .bind(version)
        .bind(sha256)
        .bind(loaded_at)
        .bind(
            members
                .iter()
                .map(Oin::as_str)
                .collect::<Vec<_>>()
                .join(","),
        )
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
    async fn a_wiped_database_starts_above_every_version_before_it() {
        for test_db in TestDatabase::all().await {
            let db = Database::connect(test_db.url(), &[&crate::store::MIGRATIONS])
                .await
                .unwrap();
            let before = version_for(&db, "aa", &BTreeSet::new(), SystemTime::now())
                .await
                .unwrap();
            sqlx::query("DELETE FROM directory_versions")
                .execute(db.pool())
                .await
                .unwrap();
            let later = SystemTime::now() + std::time::Duration::from_millis(5);
            assert!(
                version_for(&db, "aa", &BTreeSet::new(), later)
                    .await
                    .unwrap()
                    > before
            );
            db.close().await;
            test_db.drop().await;
        }
    }

    #[tokio::test]
    async fn the_members_of_the_last_directory_are_kept_with_its_version() {
        for test_db in TestDatabase::all().await {
            let db = Database::connect(test_db.url(), &[&crate::store::MIGRATIONS])
                .await
                .unwrap();
            assert_eq!(last_members(&db).await.unwrap(), None);
            let members: BTreeSet<Oin> = ["00000001999000001001", "00000001999000002002"]
                .iter()
                .map(|o| o.parse().unwrap())
                .collect();
            version_for(&db, "aa", &members, SystemTime::now())
                .await
                .unwrap();
            assert_eq!(last_members(&db).await.unwrap(), Some(members));
            version_for(&db, "bb", &BTreeSet::new(), SystemTime::now())
                .await
                .unwrap();
            assert_eq!(last_members(&db).await.unwrap(), Some(BTreeSet::new()));
            db.close().await;
            test_db.drop().await;
        }
    }

    #[tokio::test]
    async fn versions_grow_only_when_content_changes() {
        for test_db in TestDatabase::all().await {
            let db = Database::connect(test_db.url(), &[&crate::store::MIGRATIONS])
                .await
                .unwrap();
            let now = SystemTime::now();
            let first = version_for(&db, "aa", &BTreeSet::new(), now).await.unwrap();
            assert_eq!(
                version_for(&db, "aa", &BTreeSet::new(), now).await.unwrap(),
                first
            );
            assert_eq!(
                version_for(&db, "bb", &BTreeSet::new(), now).await.unwrap(),
                first + 1
            );
            // Going back to an earlier content is still a change.
            assert_eq!(
                version_for(&db, "aa", &BTreeSet::new(), now).await.unwrap(),
                first + 2
            );
            // Later loads take the clock's side.
            let later = now + std::time::Duration::from_secs(60);
            assert_eq!(
                version_for(&db, "cc", &BTreeSet::new(), later)
                    .await
                    .unwrap(),
                first + 60_000
            );
            db.close().await;
            test_db.drop().await;
        }
    }
}
