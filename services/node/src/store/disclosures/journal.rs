//! The disclosure log's journal, for a node on an SQLite file. A disclosure record must be on
//! disk before its request is answered. Committing it to SQLite first put a B-tree insert, WAL
//! frames and a round trip to SQLite's thread on every batch's path; instead a batch goes to
//! this file with one `write` and one `fdatasync`, and the log's table is filled from the records
//! behind, in larger transactions ([`super::Writer`]). When the node starts, it puts what the
//! table lacks back from here before it serves.
//!
//! Two files take turns, `<database>-disclosures-0` and `-1`, each written from its start. Once
//! the one being written has grown past [`ROTATE_AT`] and every record of the other is in the
//! table, the other is written next, from its start again. The files are filled with zeros when
//! made ([`ROTATE_AT`] bytes each) and never shrink, so that a sync writes the records and not
//! the file's size as well (which doubled its cost).
//!
//! A frame is `[length: u32][CRC-32C of the rest: u32][seq: i64][at: i64][case reference's
//! length: u32][case reference][detail]`, integers little-endian, `length` counting what follows
//! the CRC. A file is read up to the first frame that is cut short, does not check, or does not
//! number on from the one before: what follows is a batch whose write failed (its requests
//! failed) or was cut off by a crash (its requests were not answered), or records of the file's
//! earlier turns, which the table holds.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Size past which the journal turns to its other file (about 10,000 records), and the size each
/// file is made with.
pub(super) const ROTATE_AT: u64 = 4 << 20;

/// Sixteen tables: a frame of 400 bytes costs a tenth of what one table (the default) costs.
const CRC: crc::Crc<u32, crc::Table<16>> = crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);
const HEADER: usize = 8;
const FIXED: usize = 8 + 8 + 4;

/// One record as the journal holds it: what the log's table stores (its `detail` as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub seq: i64,
    pub at: i64,
    pub case_ref: String,
    pub detail: Vec<u8>,
}

/// Appends the frame of one record to `out`.
pub(super) fn frame(out: &mut Vec<u8>, seq: i64, at: i64, case_ref: &str, detail: &[u8]) {
    let start = out.len();
    let length = FIXED + case_ref.len() + detail.len();
    out.extend_from_slice(&(length as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&at.to_le_bytes());
    out.extend_from_slice(&(case_ref.len() as u32).to_le_bytes());
    out.extend_from_slice(case_ref.as_bytes());
    out.extend_from_slice(detail);
    let crc = CRC.checksum(&out[start + HEADER..]);
    out[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
}

/// The records framed in `bytes`, up to the first frame that is cut short, does not check or
/// does not number on from the one before, and how many bytes they take.
pub(super) fn read_frames(bytes: &[u8]) -> (Vec<Entry>, usize) {
    let mut entries: Vec<Entry> = Vec::new();
    let mut at = 0;
    while let Some((entry, next)) = read_frame(bytes, at) {
        if entries.last().is_some_and(|last| last.seq >= entry.seq) {
            break;
        }
        entries.push(entry);
        at = next;
    }
    (entries, at)
}

fn read_frame(bytes: &[u8], start: usize) -> Option<(Entry, usize)> {
    let u32_at = |i: usize| Some(u32::from_le_bytes(bytes.get(i..i + 4)?.try_into().ok()?));
    let i64_at = |i: usize| Some(i64::from_le_bytes(bytes.get(i..i + 8)?.try_into().ok()?));
    let length = u32_at(start)? as usize;
    let body = start + HEADER;
    let end = body.checked_add(length)?;
    let checked = bytes.get(body..end)?;
    if length < FIXED || CRC.checksum(checked) != u32_at(start + 4)? {
        return None;
    }
    let case_ref_len = u32_at(body + 16)? as usize;
    let case_ref_end = (body + FIXED)
        .checked_add(case_ref_len)
        .filter(|e| *e <= end)?;
    let case_ref = std::str::from_utf8(&bytes[body + FIXED..case_ref_end]).ok()?;
    Some((
        Entry {
            seq: i64_at(body)?,
            at: i64_at(body + 8)?,
            case_ref: case_ref.to_owned(),
            detail: bytes[case_ref_end..end].to_vec(),
        },
        end,
    ))
}

/// The two files of a database's journal.
#[derive(Debug)]
pub(super) struct Journal {
    parts: [Part; 2],
    current: usize,
}

#[derive(Debug)]
struct Part {
    path: PathBuf,
    file: File,
    /// Where the next frame goes: the end of this turn's records.
    len: u64,
    /// The highest sequence number written to it in this turn (0: none).
    last_seq: i64,
}

impl Part {
    /// Opens the file at `path`, taking the journal's lock on it first when `lock` (so that
    /// nothing is read or written while another process holds it).
    fn open(path: PathBuf, lock: bool) -> std::io::Result<(Self, Vec<Entry>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        if lock {
            take_lock(&file, &path)?;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (entries, _) = read_frames(&bytes);
        if (bytes.len() as u64) < ROTATE_AT {
            // Zeros, not a hole: writing into a hole allocates, and the sync then writes that.
            file.write_all(&vec![0; ROTATE_AT as usize - bytes.len()])?;
            file.sync_all()?;
        }
        let part = Self {
            path,
            file,
            len: 0,
            last_seq: 0,
        };
        Ok((part, entries))
    }

    /// Starts a new turn: the next frame goes at the start.
    fn restart(&mut self) {
        self.len = 0;
        self.last_seq = 0;
    }
}

/// Takes the journal for this process: two writers would number records alike. A node that
/// stopped a moment ago may still be closing its files, so this waits a little for them.
fn take_lock(file: &File, path: &Path) -> std::io::Result<()> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(std::io::Error::other(format!(
                    "{} is in use by another process: is another node running on this database?",
                    path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
    }
}

/// The journal's file `n` (0 or 1) of the SQLite database file `database`.
fn part_path(database: &Path, n: u8) -> PathBuf {
    let mut path = database.as_os_str().to_owned();
    path.push(format!("-disclosures-{n}"));
    PathBuf::from(path)
}

/// Reads back, while the journal is written, the records numbered `after + 1 ..= through`, in
/// order. The caller knows them to be on disk (written before `through` was handed on), and the
/// journal does not write over a file that holds records the table lacks, so they are all there;
/// a frame being written meanwhile only ends a file's records early.
pub(super) fn read_back(database: &Path, after: i64, through: i64) -> std::io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for n in 0..2 {
        let bytes = std::fs::read(part_path(database, n))?;
        let (held, _) = read_frames(&bytes);
        entries.extend(
            held.into_iter()
                .filter(|e| e.seq > after && e.seq <= through),
        );
    }
    entries.sort_by_key(|e| e.seq);
    entries.dedup_by_key(|e| e.seq);
    if through > after && entries.last().is_none_or(|e| e.seq != through) {
        return Err(std::io::Error::other(format!(
            "record {through} is not in the journal"
        )));
    }
    Ok(entries)
}

impl Journal {
    /// Opens the journal of the SQLite database file `database`, creating its files, with the
    /// records they hold in order of sequence number (to be put back into the table: see
    /// [`Journal::restart`]).
    pub(super) fn open(database: &Path) -> std::io::Result<(Self, Vec<Entry>)> {
        let path = |n: u8| part_path(database, n);
        let (first, mut entries) = Part::open(path(0), true)?;
        let (second, more) = Part::open(path(1), false)?;
        entries.extend(more);
        entries.sort_by_key(|e| e.seq);
        entries.dedup_by_key(|e| e.seq);
        let journal = Self {
            parts: [first, second],
            current: 0,
        };
        Ok((journal, entries))
    }

    /// Starts both files again, once the table holds every record they did.
    pub(super) fn restart(&mut self) {
        self.parts.iter_mut().for_each(Part::restart);
        self.current = 0;
    }

    /// Writes `frames`, whose highest sequence number is `last_seq`, and returns once they are
    /// on disk. On failure the next batch is written in the same place, and what of these may
    /// have reached the disk is overwritten with zeros first, so that a crash before the next
    /// batch does not leave records of requests that failed.
    pub(super) fn append(&mut self, frames: &[u8], last_seq: i64) -> std::io::Result<()> {
        let part = &mut self.parts[self.current];
        let written = part
            .file
            .write_all_at(frames, part.len)
            .and_then(|()| part.file.sync_data());
        if let Err(e) = written {
            if let Err(undo) = part
                .file
                .write_all_at(&vec![0; frames.len()], part.len)
                .and_then(|()| part.file.sync_data())
            {
                tracing::error!(error = %undo, file = %part.path.display(), "a failed batch of the disclosure journal could not be overwritten; should the node stop before its next batch, the records of its failed requests are put into the log at the next start");
            }
            return Err(e);
        }
        part.len += frames.len() as u64;
        part.last_seq = part.last_seq.max(last_seq);
        Ok(())
    }

    /// Turns to the other file when the current one has grown past [`ROTATE_AT`] and the table
    /// holds every record of the other (`in_table_through`).
    pub(super) fn rotate(&mut self, in_table_through: i64) {
        let other = 1 - self.current;
        if self.parts[self.current].len >= ROTATE_AT
            && self.parts[other].last_seq <= in_table_through
        {
            self.parts[other].restart();
            self.current = other;
        }
    }

    /// The files' sizes, the one being written first.
    #[cfg(test)]
    pub(super) fn sizes(&self) -> (u64, u64) {
        (
            self.parts[self.current].len,
            self.parts[1 - self.current].len,
        )
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn entry(seq: i64, case_ref: &str, detail: &str) -> Entry {
        Entry {
            seq,
            at: 1_700_000_000_000 + seq,
            case_ref: case_ref.into(),
            detail: detail.as_bytes().to_vec(),
        }
    }

    fn frames(entries: &[Entry]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in entries {
            frame(&mut out, e.seq, e.at, &e.case_ref, &e.detail);
        }
        out
    }

    /// The sequence numbers `journal` holds when it is opened again (as at the next start).
    fn seqs_when_opened_again(journal: Journal, db: &Path) -> Vec<i64> {
        drop(journal);
        let (_, held) = Journal::open(db).unwrap();
        held.iter().map(|e| e.seq).collect()
    }

    /// A new journal beside `node.db` in a directory of its own, holding record 1.
    fn journal_with_one() -> (tempfile::TempDir, PathBuf, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("node.db");
        let (mut journal, _) = Journal::open(&db).unwrap();
        journal
            .append(&frames(&[entry(1, "case-a", "[1]")]), 1)
            .unwrap();
        (dir, db, journal)
    }

    proptest! {
        /// Whatever the records, they read back exactly; cut short, with a byte changed, or
        /// followed by frames of an earlier turn, the frames before that still do and nothing
        /// after it is read.
        #[test]
        fn frames_read_back_and_damage_ends_the_reading(
            records in proptest::collection::vec(
                (1..1_000_i64, any::<i64>(), ".{0,20}", proptest::collection::vec(any::<u8>(), 0..64)),
                1..8,
            ),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
        ) {
            let mut seq = 0;
            let entries: Vec<Entry> = records
                .into_iter()
                .map(|(step, at, case_ref, detail)| {
                    seq += step;
                    Entry { seq, at, case_ref, detail }
                })
                .collect();
            let bytes = frames(&entries);
            prop_assert_eq!(read_frames(&bytes), (entries.clone(), bytes.len()));

            let ends: Vec<usize> = (1..=entries.len()).map(|n| frames(&entries[..n]).len()).collect();
            let whole_before = |at: usize| ends.iter().filter(|e| **e <= at).count();

            let short = cut.index(bytes.len());
            let (read, _) = read_frames(&bytes[..short]);
            prop_assert_eq!(&read[..], &entries[..whole_before(short)]);

            let mut damaged = bytes.clone();
            let at = flip.index(bytes.len());
            damaged[at] ^= 0x5a;
            let (read, _) = read_frames(&damaged);
            prop_assert_eq!(&read[..], &entries[..whole_before(at)]);

            // The file's earlier turn behind this one: its records number lower.
            let mut reused = frames(&entries[..1]);
            reused.extend(frames(&entries[..1]));
            prop_assert_eq!(read_frames(&reused).0, &entries[..1]);
        }

        /// Any bytes at all: reading them stops somewhere and does not panic.
        #[test]
        fn any_bytes_read_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let (_, valid) = read_frames(&bytes);
            prop_assert!(valid <= bytes.len());
        }
    }

    #[test]
    fn records_are_read_back_while_the_journal_is_open_and_a_missing_one_is_an_error() {
        let (_dir, db, mut journal) = journal_with_one();
        let written: Vec<_> = (1..=4)
            .map(|n| entry(n, "case-a", &format!("[{n}]")))
            .collect();
        journal.append(&frames(&written[1..2]), 2).unwrap();
        journal.append(&frames(&written[2..]), 4).unwrap();
        assert_eq!(read_back(&db, 1, 3).unwrap(), written[1..3]);
        assert_eq!(read_back(&db, 0, 4).unwrap(), written);
        assert!(read_back(&db, 4, 4).unwrap().is_empty());
        // Asked for a record the journal does not hold: not a short answer but an error.
        let err = read_back(&db, 2, 5).unwrap_err();
        assert!(err.to_string().contains("record 5"), "{err}");
        drop(journal);
    }

    #[test]
    fn the_journal_keeps_what_it_wrote_and_turns_to_its_other_file_only_when_that_is_in_the_table()
    {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("node.db");
        let (mut journal, held) = Journal::open(&db).unwrap();
        assert!(held.is_empty());
        let file = dir.path().join("node.db-disclosures-0");
        assert_eq!(
            std::fs::metadata(&file).unwrap().len(),
            ROTATE_AT,
            "made full size"
        );
        let first = [entry(1, "case-a", "[1]"), entry(2, "case-b", "[2]")];
        journal.append(&frames(&first), 2).unwrap();
        drop(journal);

        // Opened again (a restart): it holds them, and a torn frame after them is left out.
        let mut torn = frames(&[entry(3, "case-c", "[3]")]);
        torn.truncate(torn.len() - 2);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .write_all_at(&torn, frames(&first).len() as u64)
            .unwrap();
        let (mut journal, held) = Journal::open(&db).unwrap();
        assert_eq!(held, first);

        // Once the table has them, the files are written from the start again; what is left of
        // the earlier turn behind the new records is not read as records.
        journal.restart();
        journal
            .append(&frames(&[entry(3, "case-c", "[3]")]), 3)
            .unwrap();
        drop(journal);
        let (mut journal, held) = Journal::open(&db).unwrap();
        assert_eq!(held, [entry(3, "case-c", "[3]")]);
        journal.restart();

        // Past the size limit it turns to the other file, but only once the table holds every
        // record of that file.
        let big = "x".repeat(ROTATE_AT as usize);
        journal
            .append(&frames(&[entry(4, "case-d", &big)]), 4)
            .unwrap();
        journal.rotate(0);
        assert_eq!(journal.sizes().0, 0, "turned to the unused file");
        journal
            .append(&frames(&[entry(5, "case-e", &big)]), 5)
            .unwrap();
        journal.rotate(3);
        let (current, other) = journal.sizes();
        assert!(
            current > ROTATE_AT && other > ROTATE_AT,
            "4 is not in the table: no turn"
        );
        journal.rotate(4);
        assert_eq!(
            journal.sizes(),
            (0, current),
            "4 is in the table: its file is next"
        );
        journal
            .append(&frames(&[entry(6, "case-f", "[6]")]), 6)
            .unwrap();
        assert_eq!(seqs_when_opened_again(journal, &db), [5, 6]);
    }

    #[test]
    fn what_a_failed_batch_left_on_disk_is_not_read_after_the_next_batch() {
        let (dir, db, mut journal) = journal_with_one();
        // A batch (2 to 4) whose write reached the file but whose sync failed: the journal
        // did not move on, and the writer does not use its numbers again.
        let failed = frames(&[
            entry(2, "case-b", "[2]"),
            entry(3, "case-c", "[3]"),
            entry(4, "case-d", "[4]"),
        ]);
        let at = journal.sizes().0;
        std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("node.db-disclosures-0"))
            .unwrap()
            .write_all_at(&failed, at)
            .unwrap();
        // The next batch is written over it, shorter, and numbered after it.
        journal
            .append(&frames(&[entry(5, "case-e", "[5]")]), 5)
            .unwrap();
        assert_eq!(seqs_when_opened_again(journal, &db), [1, 5]);
    }

    #[test]
    fn a_batch_the_disk_refused_fails_and_the_next_goes_in_its_place() {
        let (dir, db, mut journal) = journal_with_one();
        let at = journal.sizes().0;
        // The file can no longer be written (as after a disk error).
        let writable = std::mem::replace(
            &mut journal.parts[0].file,
            File::open(dir.path().join("node.db-disclosures-0")).unwrap(),
        );
        assert!(
            journal
                .append(&frames(&[entry(2, "case-b", "[2]")]), 2)
                .is_err()
        );
        assert_eq!(journal.sizes().0, at, "the journal did not move on");
        journal.parts[0].file = writable;
        journal
            .append(&frames(&[entry(3, "case-c", "[3]")]), 3)
            .unwrap();
        assert_eq!(seqs_when_opened_again(journal, &db), [1, 3]);
    }
}
