//! Group sync of SQLite's write-ahead log. A writer that commits many small transactions can
//! commit them with `synchronous = NORMAL` (SQLite writes the WAL frames but does not wait for the
//! disk) and then make them durable together with one `fdatasync` of the WAL file, issued while
//! the next transaction is already being written; it acknowledges each commit only once a sync
//! that started after it returned. A commit is durable when its frames, the commit frame
//! included, are on disk, which is what `synchronous = FULL` waits for too; SQLite still syncs
//! the WAL before it copies frames into the database file, so NORMAL cannot corrupt the database.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The WAL file of an SQLite database, opened on demand.
#[derive(Debug)]
pub struct WalFile {
    path: PathBuf,
    open: Mutex<Option<Opened>>,
}

#[derive(Debug)]
struct Opened {
    file: File,
    /// Device and inode: SQLite deletes the WAL when its last connection closes and creates a new
    /// one with the next, and a sync of the old file would make nothing durable.
    id: (u64, u64),
}

impl WalFile {
    /// The WAL of the database file at `database`.
    pub fn of(database: &Path) -> Self {
        let mut path = database.as_os_str().to_owned();
        path.push("-wal");
        Self {
            path: path.into(),
            open: Mutex::new(None),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes every commit that returned before this call durable. Blocks for the disk: call it on
    /// a thread of its own, not on the async runtime.
    pub fn sync(&self) -> std::io::Result<()> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let current = std::fs::metadata(&self.path)?;
        let id = (current.dev(), current.ino());
        let opened = match open.take() {
            Some(opened) if opened.id == id => opened,
            _ => {
                let file = File::open(&self.path)?;
                let meta = file.metadata()?;
                Opened {
                    file,
                    id: (meta.dev(), meta.ino()),
                }
            }
        };
        let synced = opened.file.sync_data();
        *open = Some(opened);
        synced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wal_is_the_database_path_with_a_suffix_and_follows_a_new_file() {
        let dir = tempfile::tempdir().expect("dir");
        let wal = WalFile::of(&dir.path().join("node.db"));
        assert_eq!(wal.path(), dir.path().join("node.db-wal"));
        // No WAL yet: nothing to make durable is an error, not a silent success.
        assert!(wal.sync().is_err());
        std::fs::write(wal.path(), b"frames").expect("write");
        wal.sync().expect("sync");
        let first = wal.open.lock().unwrap().as_ref().map(|o| o.id);
        // Deleted and created again (SQLite does so when its last connection closed): the next
        // sync opens the new file.
        std::fs::remove_file(wal.path()).expect("remove");
        std::fs::write(wal.path(), b"more frames").expect("write");
        let _keep_inode_busy = File::open(wal.path()).expect("open");
        wal.sync().expect("sync");
        let second = wal.open.lock().unwrap().as_ref().map(|o| o.id);
        let meta = std::fs::metadata(wal.path()).expect("stat");
        assert_eq!(second, Some((meta.dev(), meta.ino())));
        assert!(first.is_some());
    }
}
