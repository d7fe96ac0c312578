//! The audit log's tables and queries, written once for SQLite and PostgreSQL.

use std::time::{SystemTime, UNIX_EPOCH};

use doorzet_store::{Backend, Database, Migrations, Params};
use sqlx::migrate::Migrator;

use crate::merkle::{Hash, Subtree};

static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");

/// The audit log's migrations (versions 1001 and up), to run with the host service's own.
pub static MIGRATIONS: Migrations = Migrations {
    sqlite: &SQLITE,
    postgres: &POSTGRES,
};

/// Rows per multi-row INSERT, largest first: well under both backends' parameter limits.
const ROW_SHAPES: [usize; 5] = [500, 100, 20, 5, 1];

fn insert_entries_sql(backend: Backend, rows: usize) -> String {
    format!(
        "INSERT INTO audit_entries (idx, leaf_hash, body) VALUES {}",
        Params::new(backend).rows(rows, 3)
    )
}

fn to_hash(bytes: Vec<u8>, what: &str) -> Result<Hash, crate::AuditError> {
    bytes
        .try_into()
        .map_err(|_| crate::AuditError::Corrupt(format!("{what} is not 32 bytes")))
}

/// One batch to write in a single transaction.
#[derive(Debug)]
pub struct Batch<'a> {
    /// Index of the first entry.
    pub first_index: u64,
    /// Entries with their leaf hashes.
    pub entries: &'a [(Hash, Vec<u8>)],
    /// Complete subtrees of height 8k that this batch finished.
    pub subtrees: &'a [(Subtree, Hash)],
    /// Complete 256-leaf blocks this batch finished: block index and its leaf hashes.
    pub tiles: &'a [(u64, Vec<u8>)],
    /// The checkpoint after the batch.
    pub size: u64,
    /// Its root.
    pub root: Hash,
    /// Its signed note.
    pub note: &'a str,
}

/// Writes a batch in one transaction on `conn` (the database's writing connection): entries,
/// finished subtrees and the checkpoint.
pub async fn write_batch(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    batch: &Batch<'_>,
) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let mut tx = conn.begin().await?;
    let mut offset = 0;
    while offset < batch.entries.len() {
        // A few fixed statement shapes, so prepared statements are reused across batches.
        let remaining = batch.entries.len() - offset;
        let rows = ROW_SHAPES
            .into_iter()
            .find(|&n| n <= remaining)
            .unwrap_or(1);
        let chunk = &batch.entries[offset..offset + rows];
        let mut query = sqlx::query(sqlx::AssertSqlSafe(insert_entries_sql(backend, rows)));
        let base = batch.first_index + offset as u64;
        for (i, (hash, body)) in chunk.iter().enumerate() {
            query = query
                .bind((base + i as u64) as i64)
                .bind(hash.to_vec())
                .bind(body.as_slice());
        }
        query.execute(&mut *tx).await?;
        offset += rows;
    }
    for (subtree, hash) in batch.subtrees {
        sqlx::query("INSERT INTO audit_subtrees (level, idx, hash) VALUES ($1, $2, $3)")
            .bind(subtree.level as i32)
            .bind(subtree.index as i64)
            .bind(hash.to_vec())
            .execute(&mut *tx)
            .await?;
    }
    for (block, hashes) in batch.tiles {
        sqlx::query("INSERT INTO audit_tiles (idx, hashes) VALUES ($1, $2)")
            .bind(*block as i64)
            .bind(hashes.clone())
            .execute(&mut *tx)
            .await?;
    }
    insert_checkpoint(&mut tx, batch.size, &batch.root, batch.note).await?;
    tx.commit().await
}

/// Returns the leaf hashes of complete block `block`.
pub async fn tile(db: &Database, block: u64) -> Result<Vec<Hash>, crate::AuditError> {
    let row: Option<(Vec<u8>,)> = sqlx::query_as("SELECT hashes FROM audit_tiles WHERE idx = $1")
        .bind(block as i64)
        .fetch_optional(db.pool())
        .await?;
    let (bytes,) =
        row.ok_or_else(|| crate::AuditError::Corrupt(format!("tile {block} is missing")))?;
    check_tile(block, &bytes)?;
    Ok(bytes
        .chunks_exact(32)
        .map(|c| c.try_into().unwrap_or([0; 32]))
        .collect())
}

/// A stored tile: the 256 leaf hashes of one complete block, concatenated.
const TILE_BYTES: usize = 256 * 32;

fn check_tile(block: u64, bytes: &[u8]) -> Result<(), crate::AuditError> {
    if bytes.len() == TILE_BYTES {
        Ok(())
    } else {
        Err(crate::AuditError::Corrupt(format!(
            "tile {block} has {} bytes",
            bytes.len()
        )))
    }
}

/// Tiles read per query when the whole index is loaded (about 4 MB of hashes per query).
pub const TILES_PER_QUERY: u64 = 512;

/// Calls `each(block, hashes)` for every complete block `0..blocks` in order, reading
/// [`TILES_PER_QUERY`] tiles per query instead of one query per tile (39,000 of them at 10^7
/// entries).
pub async fn for_each_tile(
    db: &Database,
    blocks: u64,
    mut each: impl FnMut(u64, &[u8]),
) -> Result<(), crate::AuditError> {
    let mut start = 0;
    while start < blocks {
        let end = (start + TILES_PER_QUERY).min(blocks);
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT idx, hashes FROM audit_tiles WHERE idx >= $1 AND idx < $2 ORDER BY idx",
        )
        .bind(start as i64)
        .bind(end as i64)
        .fetch_all(db.pool())
        .await?;
        if rows.len() as u64 != end - start {
            return Err(crate::AuditError::Corrupt(format!(
                "tiles {start}..{end}: {} of {} present",
                rows.len(),
                end - start
            )));
        }
        for (expected, (idx, bytes)) in (start..end).zip(rows) {
            if idx as u64 != expected {
                return Err(crate::AuditError::Corrupt(format!(
                    "tile {expected} is missing"
                )));
            }
            check_tile(expected, &bytes)?;
            each(expected, &bytes);
        }
        start = end;
    }
    Ok(())
}

/// The retention period of checkpoints: of each, the first and the latest are kept.
pub const CHECKPOINT_PERIOD_MS: i64 = 3_600_000;

/// Writes a checkpoint and thins the ones before it. Retention rule: of the checkpoints written in
/// one clock hour, the first and the latest are kept, every one between them is deleted. Nodes only
/// ever ask for the latest checkpoint (proofs come from the tree, for any size), so what is kept is
/// the latest plus two per hour for the record: bounded by time, not by the number of batches.
async fn insert_checkpoint(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    size: u64,
    root: &Hash,
    note: &str,
) -> Result<(), sqlx::Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    sqlx::query(
        "INSERT INTO audit_checkpoints (size, root, note, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(size as i64)
    .bind(root.to_vec())
    .bind(note)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    let hour = now - now.rem_euclid(CHECKPOINT_PERIOD_MS);
    sqlx::query(
        "DELETE FROM audit_checkpoints WHERE created_at >= $1 AND created_at < $2 AND size < $3 \
         AND size > (SELECT MIN(size) FROM audit_checkpoints WHERE created_at >= $1 AND created_at < $2)",
    )
    .bind(hour)
    .bind(hour + CHECKPOINT_PERIOD_MS)
    .bind(size as i64)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Stores the checkpoint of the empty log.
pub async fn write_empty_checkpoint(
    db: &Database,
    root: &Hash,
    note: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = db.pool().begin().await?;
    insert_checkpoint(&mut tx, 0, root, note).await?;
    tx.commit().await
}

/// Returns the latest checkpoint: size, root and note.
pub async fn latest_checkpoint(
    db: &Database,
) -> Result<Option<(u64, Hash, String)>, crate::AuditError> {
    let row: Option<(i64, Vec<u8>, String)> =
        sqlx::query_as("SELECT size, root, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1")
            .fetch_optional(db.pool())
            .await?;
    row.map(|(size, root, note)| Ok((size as u64, to_hash(root, "checkpoint root")?, note)))
        .transpose()
}

/// Returns every stored subtree hash of height 8k, ordered by level and index.
pub async fn upper_subtrees(db: &Database) -> Result<Vec<(Subtree, Hash)>, crate::AuditError> {
    let rows: Vec<(i32, i64, Vec<u8>)> =
        sqlx::query_as("SELECT level, idx, hash FROM audit_subtrees ORDER BY level, idx")
            .fetch_all(db.pool())
            .await?;
    rows.into_iter()
        .map(|(level, idx, hash)| {
            Ok((
                Subtree {
                    level: level as u32,
                    index: idx as u64,
                },
                to_hash(hash, "subtree hash")?,
            ))
        })
        .collect()
}

/// Returns the leaf hashes of entries `[start, end)`, in order.
pub async fn leaf_hashes(
    db: &Database,
    start: u64,
    end: u64,
) -> Result<Vec<Hash>, crate::AuditError> {
    let rows: Vec<(Vec<u8>,)> = sqlx::query_as(
        "SELECT leaf_hash FROM audit_entries WHERE idx >= $1 AND idx < $2 ORDER BY idx",
    )
    .bind(start as i64)
    .bind(end as i64)
    .fetch_all(db.pool())
    .await?;
    if rows.len() as u64 != end - start {
        return Err(crate::AuditError::Corrupt(format!(
            "entries {start}..{end} should be stored, found {}",
            rows.len()
        )));
    }
    rows.into_iter()
        .map(|(h,)| to_hash(h, "leaf hash"))
        .collect()
}

/// Returns the bodies of entries `[start, end)`, in order (fewer if some are missing).
pub async fn bodies(
    db: &Database,
    start: u64,
    end: u64,
) -> Result<Vec<(u64, Vec<u8>)>, sqlx::Error> {
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT idx, body FROM audit_entries WHERE idx >= $1 AND idx < $2 ORDER BY idx",
    )
    .bind(start as i64)
    .bind(end as i64)
    .fetch_all(db.pool())
    .await?;
    Ok(rows.into_iter().map(|(i, b)| (i as u64, b)).collect())
}
