//! The running audit log. Appends go through one writer task that batches whatever is queued
//! (group commit): a batch's entries, the blocks and subtrees it finished and its signed checkpoint
//! are written in one transaction, and only then is anyone told their entry is in. A proof reads
//! at most two tiles (the leaf hashes of a complete 256-entry block, one row each); the hashes of
//! larger complete subtrees (n/256 of them) and of the incomplete block stay in memory, loaded
//! from storage at start, as does the index from leaf hash to leaf index ([`LeafIndex`], 8 bytes
//! an entry, built from the tiles 512 at a time).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};

use doorzet_proto::v1;
use doorzet_store::Database;
use tokio::sync::{mpsc, oneshot};

use crate::AuditError;
use crate::checkpoint::{Checkpoint, NoteSigner};
use crate::entry;
use crate::leaf_index::{self, LeafIndex};
use crate::merkle::{self, Frontier, Hash, Subtree, SubtreeSource};
use crate::store;

/// Height of the subtrees whose hashes are stored; below it, leaves are read and folded.
const STRIDE: u32 = 8;
/// Leaves per stored block.
const BLOCK: u64 = 1 << STRIDE;

/// Tuning of the log.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// The origin line of checkpoints, e.g. `zvh-hofland.example/doorzet/audit`.
    pub origin: String,
    /// Most entries in one batch (one transaction, one checkpoint).
    pub max_batch: usize,
    /// Most entries returned by one `entries` call.
    pub max_page: u64,
    /// On PostgreSQL, write only while holding the log's advisory lock (default). Off, this
    /// process writes regardless and only the entries' primary key fences a second writer: for
    /// tests that simulate two writers.
    pub writer_lock: bool,
}

impl LogOptions {
    /// Default tuning for `origin`.
    pub fn new(origin: &str) -> Self {
        Self {
            origin: origin.to_owned(),
            max_batch: 4096,
            max_page: 1000,
            writer_lock: true,
        }
    }
}

/// Where a batch of appended entries landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Leaf index of each entry, in order.
    pub indexes: Vec<u64>,
    /// Size of the signed checkpoint that covers them.
    pub tree_size: u64,
}

struct State {
    frontier: Frontier,
    /// Leaf index candidates by leaf hash (confirmed against the stored hash on use).
    by_hash: LeafIndex,
    /// Leaf hashes of the block not yet complete (fewer than 256).
    partial: Vec<Hash>,
    /// `upper[j]` holds complete subtrees of height `8 * (j + 1)`.
    upper: Vec<Vec<Hash>>,
    checkpoint: Checkpoint,
    note: String,
}

struct Shared {
    db: Database,
    signer: NoteSigner,
    options: LogOptions,
    state: RwLock<State>,
    /// Whether this process writes the log now: always on SQLite; on PostgreSQL while it holds
    /// the log's advisory lock (several coordinators may share one database; one writes).
    leader: AtomicBool,
    /// The session holding that lock; dropped with the log, which frees the lock at once.
    lock: tokio::sync::Mutex<Option<sqlx::AnyConnection>>,
}

/// The PostgreSQL advisory-lock key of the audit log's writer ("doorzet-audit" in ASCII).
const WRITER_LOCK: i64 = 0x646f_6f72_7a65_7461;
/// How often a follower looks for a newer checkpoint and tries to take over.
const FOLLOW_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

type Reply = oneshot::Sender<Result<Appended, AuditError>>;
type Queued = (Vec<entry::Encoded>, Reply);

/// A handle to the log; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    shared: Arc<Shared>,
    queue: mpsc::Sender<Queued>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("origin", &self.shared.options.origin)
            .finish_non_exhaustive()
    }
}

fn read_state(shared: &Shared) -> std::sync::RwLockReadGuard<'_, State> {
    shared.state.read().unwrap_or_else(|e| e.into_inner())
}

impl AuditLog {
    /// Opens the log in `db` (whose migrations must include [`store::MIGRATIONS`]) and starts the
    /// writer task. It checks that the stored hashes the log grows from (the upper subtrees, the
    /// tiles on the tree's right edge and the stored leaf hashes of the incomplete block) give the
    /// root of the latest stored checkpoint, and refuses to continue a log where they do not. It
    /// does not rehash entry bodies: a body changed under an unchanged leaf hash is found by the
    /// nodes' inclusion sweeps and by `doorzetctl audit verify`, which recompute from the bodies.
    pub async fn open(
        db: Database,
        signer: NoteSigner,
        options: LogOptions,
    ) -> Result<Self, AuditError> {
        // On PostgreSQL one process writes: whoever holds the advisory lock. The others follow:
        // they serve checkpoints and proofs from the stored log and take over when the lock frees.
        let mut lock = None;
        let leader = match db.backend() {
            doorzet_store::Backend::Sqlite => true,
            _ if !options.writer_lock => true,
            doorzet_store::Backend::Postgres => {
                // A moment's patience: a restarted writer's previous session may still be closing.
                let mut conn = db.pool().acquire().await?.detach();
                for _ in 0..10 {
                    if try_writer_lock(&mut conn).await? {
                        lock = Some(conn);
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                lock.is_some()
            }
        };
        let latest = if leader {
            store::latest_checkpoint(&db).await?
        } else {
            // A follower of a log no writer has started yet waits for its first checkpoint.
            let mut waited = std::time::Duration::ZERO;
            loop {
                if let Some(latest) = store::latest_checkpoint(&db).await? {
                    break Some(latest);
                }
                if waited > std::time::Duration::from_secs(30) {
                    return Err(AuditError::NotLeader);
                }
                tokio::time::sleep(FOLLOW_INTERVAL).await;
                waited += FOLLOW_INTERVAL;
            }
        };
        let state = match latest {
            None => {
                let checkpoint = Checkpoint {
                    origin: options.origin.clone(),
                    size: 0,
                    root: merkle::empty_root(),
                };
                let note = signer.sign(&checkpoint);
                store::write_empty_checkpoint(&db, &checkpoint.root, &note).await?;
                State {
                    frontier: Frontier::default(),
                    by_hash: LeafIndex::default(),
                    partial: Vec::new(),
                    upper: Vec::new(),
                    checkpoint,
                    note,
                }
            }
            Some((size, root, note)) => {
                let mut state = load_state(&db, &options, size, root, note).await?;
                // Signed again with the key(s) in force now, so after a key rotation the latest
                // checkpoint carries the new key (and the previous one's co-signature) at once.
                state.note = signer.sign(&state.checkpoint);
                state
            }
        };
        if !leader {
            tracing::info!(
                size = state.checkpoint.size,
                "another coordinator writes the audit log; following it"
            );
        }
        let follows = db.backend() == doorzet_store::Backend::Postgres && options.writer_lock;
        let shared = Arc::new(Shared {
            db,
            signer,
            options,
            state: RwLock::new(state),
            leader: AtomicBool::new(leader),
            lock: tokio::sync::Mutex::new(lock),
        });
        let (queue, rx) = mpsc::channel(16 * 1024);
        tokio::spawn(writer(shared.clone(), rx));
        if follows {
            tokio::spawn(leadership(Arc::downgrade(&shared)));
        }
        Ok(Self { shared, queue })
    }

    /// Whether this process writes the log now (see [`AuditLog::open`]).
    pub fn is_writer(&self) -> bool {
        self.shared.leader.load(Ordering::Acquire)
    }

    /// Appends entries (validated and canonically encoded here); returns once they are durable
    /// and covered by a signed checkpoint.
    pub async fn append(&self, entries: &[v1::AuditEntry]) -> Result<Appended, AuditError> {
        let encoded = entries
            .iter()
            .map(entry::encode_new)
            .collect::<Result<Vec<_>, _>>()?;
        self.append_checked(encoded).await
    }

    /// Appends entries that [`entry::encode_new`] checked and encoded. An entry with a
    /// `record_id` that the log already holds is not appended again: its index is the one it has.
    pub async fn append_checked(
        &self,
        entries: Vec<entry::Encoded>,
    ) -> Result<Appended, AuditError> {
        self.enqueue(entries).await
    }

    /// Appends already encoded entries, as [`AuditLog::append_checked`]; they are read in place to
    /// check they are canonical and valid.
    pub async fn append_encoded(&self, entries: Vec<Vec<u8>>) -> Result<Appended, AuditError> {
        let entries = entries
            .into_iter()
            .map(entry::check_for_append)
            .collect::<Result<Vec<_>, _>>()?;
        self.enqueue(entries).await
    }

    async fn enqueue(&self, entries: Vec<entry::Encoded>) -> Result<Appended, AuditError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((entries, reply))
            .await
            .map_err(|_| AuditError::Closed)?;
        answer.await.map_err(|_| AuditError::Closed)?
    }

    /// Returns the latest checkpoint and its signed note.
    pub fn checkpoint(&self) -> (Checkpoint, String) {
        let state = read_state(&self.shared);
        (state.checkpoint.clone(), state.note.clone())
    }

    /// Bytes of memory the leaf-hash index holds (8 an entry, plus 1.5 MB of buckets).
    pub fn index_bytes(&self) -> usize {
        read_state(&self.shared).by_hash.heap_bytes()
    }

    /// Returns the verifier key of the checkpoints.
    pub fn verifier_key(&self) -> String {
        self.shared.signer.verifier_key()
    }

    /// Returns the size to use and the latest size with the leaf hashes of its incomplete block.
    fn check_size(&self, size: u64) -> Result<(u64, Partial), AuditError> {
        let state = read_state(&self.shared);
        let latest = state.checkpoint.size;
        let size = if size == 0 { latest } else { size };
        if size > latest {
            return Err(AuditError::Range(format!(
                "tree_size {size} is larger than the latest checkpoint ({latest})"
            )));
        }
        Ok((
            size,
            Partial {
                latest,
                hashes: state.partial.clone(),
            },
        ))
    }

    /// Returns the inclusion proof of leaf `index` in the tree of `size` (0 = latest), with the
    /// size used.
    pub async fn inclusion_proof(
        &self,
        index: u64,
        size: u64,
    ) -> Result<(u64, Vec<Hash>), AuditError> {
        let (size, partial) = self.check_size(size)?;
        if index >= size {
            return Err(AuditError::Range(format!(
                "leaf_index {index} is not in the tree of size {size}"
            )));
        }
        let needed = merkle::subtrees_of(&merkle::inclusion_ranges(index, size));
        let blocks = fetch_blocks(&self.shared.db, &needed, size, &partial).await?;
        let state = read_state(&self.shared);
        let source = Fetched::new(&state.upper, blocks, &needed)?;
        Ok((size, merkle::inclusion_proof(&source, index, size)))
    }

    /// Returns the index and inclusion proof of the entry with leaf hash `hash`.
    pub async fn inclusion_proof_by_hash(
        &self,
        hash: &Hash,
        size: u64,
    ) -> Result<(u64, u64, Vec<Hash>), AuditError> {
        let (size, _) = self.check_size(size)?;
        let candidates: Vec<u64> = read_state(&self.shared)
            .by_hash
            .candidates(hash, size)
            .collect();
        for index in candidates {
            // A candidate shares the hash's first 40 bits; the stored leaf must be the very hash.
            if self.leaf_hash(index, size).await? == *hash {
                let (size, proof) = self.inclusion_proof(index, size).await?;
                return Ok((index, size, proof));
            }
        }
        Err(AuditError::UnknownHash(size))
    }

    async fn leaf_hash(&self, index: u64, size: u64) -> Result<Hash, AuditError> {
        let (_, partial) = self.check_size(size)?;
        Ok(stored_leaf_hashes(&self.shared, &[index], size, &partial).await?[0])
    }

    /// Returns the consistency proof between two sizes (0 < first ≤ second ≤ latest).
    pub async fn consistency_proof(
        &self,
        first: u64,
        second: u64,
    ) -> Result<Vec<Hash>, AuditError> {
        let (second, partial) = self.check_size(second)?;
        if first == 0 || first > second {
            return Err(AuditError::Range(format!(
                "first_size must be between 1 and second_size ({second}), got {first}"
            )));
        }
        let needed = merkle::subtrees_of(&merkle::consistency_ranges(first, second));
        let blocks = fetch_blocks(&self.shared.db, &needed, second, &partial).await?;
        let state = read_state(&self.shared);
        let source = Fetched::new(&state.upper, blocks, &needed)?;
        Ok(merkle::consistency_proof(&source, first, second))
    }

    /// Returns up to `limit` (capped) encoded entries from `start`, within the latest checkpoint.
    pub async fn entries(&self, start: u64, limit: u64) -> Result<Vec<Vec<u8>>, AuditError> {
        let size = read_state(&self.shared).checkpoint.size;
        if start >= size {
            return Ok(Vec::new());
        }
        let end = size.min(start + limit.clamp(1, self.shared.options.max_page));
        let rows = store::bodies(&self.shared.db, start, end).await?;
        Ok(rows.into_iter().map(|(_, body)| body).collect())
    }
}

/// Complete-subtree hashes for one proof: the in-memory upper levels and the leaf blocks read.
struct Fetched<'a> {
    upper: &'a [Vec<Hash>],
    blocks: HashMap<u64, Vec<Hash>>,
}

fn fold(hashes: &[Hash]) -> Hash {
    let mut row: Vec<Hash> = hashes.to_vec();
    while row.len() > 1 {
        row = row
            .chunks(2)
            .map(|p| merkle::node_hash(&p[0], &p[1]))
            .collect();
    }
    row[0]
}

impl SubtreeSource for Fetched<'_> {
    fn complete(&self, s: Subtree) -> Hash {
        if s.level >= STRIDE {
            let j = s.level / STRIDE - 1;
            let base = STRIDE * (j + 1);
            let row = &self.upper[j as usize];
            let span = 1usize << (s.level - base);
            let start = (s.index as usize) << (s.level - base);
            return fold(&row[start..start + span]);
        }
        let first_leaf = s.index << s.level;
        let block = first_leaf / BLOCK;
        let leaves = &self.blocks[&block];
        let offset = (first_leaf - block * BLOCK) as usize;
        fold(&leaves[offset..offset + (1usize << s.level)])
    }
}

impl<'a> Fetched<'a> {
    /// Checks that the upper levels hold every stored subtree `needed` refers to.
    fn new(
        upper: &'a [Vec<Hash>],
        blocks: HashMap<u64, Vec<Hash>>,
        needed: &[Subtree],
    ) -> Result<Self, AuditError> {
        for s in needed.iter().filter(|s| s.level >= STRIDE) {
            let j = (s.level / STRIDE - 1) as usize;
            let needed_len = ((s.index + 1) << (s.level - STRIDE * (j as u32 + 1))) as usize;
            if upper.get(j).is_none_or(|row| row.len() < needed_len) {
                return Err(AuditError::Corrupt(format!(
                    "subtree at height {} index {} is missing",
                    s.level, s.index
                )));
            }
        }
        Ok(Self { upper, blocks })
    }
}

/// The incomplete block of the latest tree.
struct Partial {
    latest: u64,
    hashes: Vec<Hash>,
}

/// Gets the 256-leaf blocks that the subtrees below height 8 in `needed` lie in, for the tree of
/// `size`: blocks complete in the latest tree from their tile (one row), the latest incomplete
/// one from memory.
async fn fetch_blocks(
    db: &Database,
    needed: &[Subtree],
    size: u64,
    partial: &Partial,
) -> Result<HashMap<u64, Vec<Hash>>, AuditError> {
    let mut blocks = HashMap::new();
    let complete_blocks = partial.latest / BLOCK;
    for s in needed.iter().filter(|s| s.level < STRIDE) {
        let block = (s.index << s.level) / BLOCK;
        if blocks.contains_key(&block) {
            continue;
        }
        let want = (size.min((block + 1) * BLOCK) - block * BLOCK) as usize;
        let mut hashes = if block < complete_blocks {
            store::tile(db, block).await?
        } else {
            partial.hashes.clone()
        };
        if hashes.len() < want {
            return Err(AuditError::Corrupt(format!("block {block} is incomplete")));
        }
        hashes.truncate(want);
        blocks.insert(block, hashes);
    }
    Ok(blocks)
}

/// The leaf hashes at `indexes` in the tree of `size`, from their tiles (one read each) or the
/// incomplete block.
async fn stored_leaf_hashes(
    shared: &Shared,
    indexes: &[u64],
    size: u64,
    partial: &Partial,
) -> Result<Vec<Hash>, AuditError> {
    let leaves: Vec<Subtree> = indexes
        .iter()
        .map(|&index| Subtree { level: 0, index })
        .collect();
    let blocks = fetch_blocks(&shared.db, &leaves, size, partial).await?;
    let state = read_state(shared);
    let fetched = Fetched::new(&state.upper, blocks, &leaves)?;
    Ok(leaves
        .into_iter()
        .map(|leaf| fetched.complete(leaf))
        .collect())
}

async fn writer(shared: Arc<Shared>, mut rx: mpsc::Receiver<Queued>) {
    while let Some(first) = rx.recv().await {
        let mut requests = vec![first];
        let mut count = requests[0].0.len();
        while count < shared.options.max_batch {
            match rx.try_recv() {
                Ok(next) => {
                    count += next.0.len();
                    requests.push(next);
                }
                Err(_) => break,
            }
        }
        // The entries move into the batch; only the replies stay here.
        let (batches, replies): (Vec<_>, Vec<_>) = requests.into_iter().unzip();
        if !shared.leader.load(Ordering::Acquire) {
            for reply in replies {
                let _ = reply.send(Err(AuditError::NotLeader));
            }
            continue;
        }
        let result = commit(&shared, batches).await;
        match result {
            Ok((size, index_ranges)) => {
                for (reply, indexes) in replies.into_iter().zip(index_ranges) {
                    let _ = reply.send(Ok(Appended {
                        indexes,
                        tree_size: size,
                    }));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, entries = count, "audit batch not written; appends refused");
                let message = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(AuditError::Corrupt(message.clone())));
                }
            }
        }
    }
}

async fn try_writer_lock(conn: &mut sqlx::AnyConnection) -> Result<bool, sqlx::Error> {
    let (held,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
        .bind(WRITER_LOCK)
        .fetch_one(&mut *conn)
        .await?;
    Ok(held)
}

/// Keeps the writer's lock (PostgreSQL): the writer checks the connection that holds it; a
/// follower reloads the stored log when it grew and takes over when the lock is free. Ends when
/// the log is dropped, which closes the connection and so frees the lock.
async fn leadership(shared: Weak<Shared>) {
    loop {
        tokio::time::sleep(FOLLOW_INTERVAL).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        {
            let mut lock = shared.lock.lock().await;
            if let Some(conn) = lock.as_mut() {
                if sqlx::query("SELECT 1").execute(&mut *conn).await.is_err() {
                    // The session that held the lock is gone, and with it the lock.
                    shared.leader.store(false, Ordering::Release);
                    *lock = None;
                    tracing::warn!("lost the audit log's writer lock; following whoever takes it");
                }
                continue;
            }
        }
        let Ok(Some((size, root, note))) = store::latest_checkpoint(&shared.db).await else {
            continue;
        };
        let taken = match shared.db.pool().acquire().await {
            Ok(conn) => {
                let mut conn = conn.detach();
                match try_writer_lock(&mut conn).await {
                    Ok(true) => Some(conn),
                    _ => None,
                }
            }
            Err(_) => None,
        };
        // Reload when the stored log grew, and always before writing it.
        let current = read_state(&shared).checkpoint.size;
        if taken.is_some() || size != current {
            let (size, root, note) = if taken.is_some() {
                match store::latest_checkpoint(&shared.db).await {
                    Ok(Some(latest)) => latest,
                    _ => continue,
                }
            } else {
                (size, root, note)
            };
            match load_state(&shared.db, &shared.options, size, root, note).await {
                Ok(mut state) => {
                    state.note = shared.signer.sign(&state.checkpoint);
                    *shared.state.write().unwrap_or_else(|e| e.into_inner()) = state;
                }
                Err(e) => {
                    tracing::error!(error = %e, "the stored audit log does not load; not following it");
                    continue;
                }
            }
        }
        if let Some(conn) = taken {
            *shared.lock.lock().await = Some(conn);
            shared.leader.store(true, Ordering::Release);
            tracing::info!(
                size = read_state(&shared).checkpoint.size,
                "took over writing the audit log"
            );
        }
    }
}

/// Rebuilds the in-memory state of a log whose latest stored checkpoint is `(size, root, note)`:
/// the upper subtrees, the right edge of the tree and the leaf-hash index, checking that they give
/// that root.
async fn load_state(
    db: &Database,
    options: &LogOptions,
    size: u64,
    root: Hash,
    note: String,
) -> Result<State, AuditError> {
    let mut upper: Vec<Vec<Hash>> = Vec::new();
    for (subtree, hash) in store::upper_subtrees(db).await? {
        let j = (subtree.level / STRIDE - 1) as usize;
        if upper.len() <= j {
            upper.resize(j + 1, Vec::new());
        }
        if upper[j].len() as u64 != subtree.index {
            return Err(AuditError::Corrupt(format!(
                "subtree at height {} index {} is out of sequence",
                subtree.level, subtree.index
            )));
        }
        upper[j].push(hash);
    }
    let partial = Partial {
        latest: size,
        hashes: store::leaf_hashes(db, size - size % BLOCK, size).await?,
    };
    let parts = Frontier::parts(size);
    let blocks = fetch_blocks(db, &parts, size, &partial).await?;
    let source = Fetched::new(&upper, blocks, &parts)?;
    let frontier = Frontier::from_parts(size, &source);
    if frontier.root() != root {
        return Err(AuditError::Corrupt(format!(
            "stored entries do not hash to the stored checkpoint of size {size}; refusing to continue a rewritten log"
        )));
    }
    let mut by_hash = LeafIndex::default();
    store::for_each_tile(db, size / BLOCK, |block, bytes| {
        for (offset, hash) in bytes.chunks_exact(32).enumerate() {
            let hash: &Hash = hash.try_into().unwrap_or(&[0; 32]);
            by_hash.push(hash, block * BLOCK + offset as u64);
        }
    })
    .await?;
    for (offset, hash) in partial.hashes.iter().enumerate() {
        by_hash.push(hash, size - size % BLOCK + offset as u64);
    }
    by_hash.shrink_to_fit();
    Ok(State {
        frontier,
        by_hash,
        partial: partial.hashes,
        upper,
        checkpoint: Checkpoint {
            origin: options.origin.clone(),
            size,
            root,
        },
        note,
    })
}

/// After a failed write whose outcome may be unknown (the connection broke during COMMIT), reads
/// what is stored again. When the stored checkpoint is the one this batch signed, the batch did
/// land and its appenders are told so. Either way the writer goes on from what is stored, so a
/// commit that landed unseen never wedges it with primary-key clashes until a restart.
async fn recover(
    shared: &Shared,
    signed: &Checkpoint,
    index_ranges: Vec<Vec<u64>>,
    error: AuditError,
) -> Result<(u64, Vec<Vec<u64>>), AuditError> {
    let Ok(Some((size, root, note))) = store::latest_checkpoint(&shared.db).await else {
        return Err(error);
    };
    if size == read_state(shared).checkpoint.size {
        return Err(error); // nothing landed: the state in memory is the stored one
    }
    match load_state(&shared.db, &shared.options, size, root, note).await {
        Ok(state) => *shared.state.write().unwrap_or_else(|e| e.into_inner()) = state,
        Err(e) => {
            tracing::error!(error = %e, "audit state could not be re-read after a failed write");
            return Err(error);
        }
    }
    if size == signed.size && root == signed.root {
        tracing::warn!(
            size,
            "audit batch was stored although its commit reported an error"
        );
        return Ok((size, index_ranges));
    }
    tracing::warn!(
        size,
        "audit log state re-read from storage after a failed write"
    );
    Err(error)
}

/// The indexes the log already holds of the keyed entries (those with a `record_id`) among
/// `hashes`: candidates from the leaf-hash index, each confirmed against the stored leaf hash.
async fn already_in(
    shared: &Shared,
    batches: &[Vec<entry::Encoded>],
    hashes: &[Hash],
) -> Result<HashMap<Hash, u64>, AuditError> {
    let keyed = batches.iter().flatten().zip(hashes);
    let (size, candidates, partial) = {
        let state = read_state(shared);
        let size = state.checkpoint.size;
        let candidates: Vec<(Hash, u64)> = keyed
            .filter(|(e, _)| e.is_keyed())
            .flat_map(|(_, h)| state.by_hash.candidates(h, size).map(|i| (*h, i)))
            .collect();
        if candidates.is_empty() {
            return Ok(HashMap::new());
        }
        let partial = Partial {
            latest: size,
            hashes: state.partial.clone(),
        };
        (size, candidates, partial)
    };
    let indexes: Vec<u64> = candidates.iter().map(|(_, index)| *index).collect();
    let stored = stored_leaf_hashes(shared, &indexes, size, &partial).await?;
    let mut found = HashMap::new();
    for ((hash, index), stored) in candidates.into_iter().zip(stored) {
        if stored == hash {
            found.entry(hash).or_insert(index);
        }
    }
    Ok(found)
}

async fn commit(
    shared: &Shared,
    batches: Vec<Vec<entry::Encoded>>,
) -> Result<(u64, Vec<Vec<u64>>), AuditError> {
    let hashes: Vec<Hash> = batches
        .iter()
        .flatten()
        .map(|e| merkle::leaf_hash(e.bytes()))
        .collect();
    // A keyed entry is in the log once: sent again, it gets the index it has (or the one it gets
    // in this batch).
    let mut known = already_in(shared, &batches, &hashes).await?;
    known.reserve(hashes.len());
    let (mut frontier, mut partial) = {
        let state = read_state(shared);
        (state.frontier.clone(), state.partial.clone())
    };
    let mut tiles = Vec::new();
    let first_index = frontier.size();
    let count: usize = batches.iter().map(Vec::len).sum();
    if first_index + count as u64 > leaf_index::MAX_LEAVES {
        return Err(AuditError::Range(format!(
            "the log is full at {} entries",
            leaf_index::MAX_LEAVES
        )));
    }
    let mut rows = Vec::new();
    let mut finished = Vec::new();
    let mut index_ranges = Vec::with_capacity(batches.len());
    let mut hashes = hashes.into_iter();
    for entries in batches {
        let mut indexes = Vec::with_capacity(entries.len());
        for entry in entries {
            let hash = hashes.next().expect("a hash for every entry");
            if entry.is_keyed() {
                if let Some(index) = known.get(&hash) {
                    indexes.push(*index);
                    continue;
                }
                known.insert(hash, frontier.size());
            }
            let bytes = entry.into_bytes();
            indexes.push(frontier.size());
            frontier.push(hash, |s, h| {
                if s.level % STRIDE == 0 {
                    finished.push((s, *h));
                }
            });
            partial.push(hash);
            if partial.len() as u64 == BLOCK {
                tiles.push(((frontier.size() - 1) / BLOCK, partial.concat()));
                partial.clear();
            }
            rows.push((hash, bytes));
        }
        index_ranges.push(indexes);
    }
    if rows.is_empty() {
        // Every entry was in the log already: nothing to write, and the latest checkpoint covers
        // them.
        return Ok((first_index, index_ranges));
    }
    let checkpoint = Checkpoint {
        origin: shared.options.origin.clone(),
        size: frontier.size(),
        root: frontier.root(),
    };
    let note = shared.signer.sign(&checkpoint);
    let batch = store::Batch {
        first_index,
        entries: &rows,
        subtrees: &finished,
        tiles: &tiles,
        size: checkpoint.size,
        root: checkpoint.root,
        note: &note,
    };
    // The database's writing connection: on SQLite its page cache for the indexes stays warm.
    let written = match shared.db.writer().await {
        Ok(mut conn) => store::write_batch(&mut conn, shared.db.backend(), &batch).await,
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        return recover(shared, &checkpoint, index_ranges, e.into()).await;
    }
    let size = checkpoint.size;
    let mut state = shared.state.write().unwrap_or_else(|e| e.into_inner());
    for (s, h) in finished {
        let j = (s.level / STRIDE - 1) as usize;
        if state.upper.len() <= j {
            state.upper.resize(j + 1, Vec::new());
        }
        state.upper[j].push(h);
    }
    for (offset, (hash, _)) in rows.iter().enumerate() {
        state.by_hash.push(hash, first_index + offset as u64);
    }
    state.frontier = frontier;
    state.partial = partial;
    state.checkpoint = checkpoint;
    state.note = note;
    Ok((size, index_ranges))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::NoteVerifier;
    use crate::merkle::{MemoryTree, verify_consistency, verify_inclusion};
    use doorzet_store::testing::TestDatabase;

    fn signer() -> NoteSigner {
        NoteSigner::new(
            "test.example/audit",
            ed25519_dalek::SigningKey::from_bytes(&[3; 32]),
        )
        .unwrap()
    }

    fn entry(i: u64) -> v1::AuditEntry {
        let mut e = entry::new_entry(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_790_000_000 + i),
            "00000001999000002002".parse().unwrap(),
            v1::AuditAction::FactsDisclosed,
        );
        e.case_ref = format!("case-{i}");
        e
    }

    async fn open(url: &str) -> AuditLog {
        let db = Database::connect(url, &[&store::MIGRATIONS]).await.unwrap();
        open_db(db).await.unwrap()
    }

    async fn open_db(db: Database) -> Result<AuditLog, AuditError> {
        let mut options = LogOptions::new("test.example/audit");
        options.max_batch = 100;
        AuditLog::open(db, signer(), options).await
    }

    async fn within(what: &str, mut ok: impl FnMut() -> bool) {
        for _ in 0..200 {
            if ok() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("{what} did not happen within 10 s");
    }

    #[tokio::test]
    async fn on_postgresql_one_process_writes_and_a_follower_takes_over() {
        let test_db = TestDatabase::postgres()
            .await
            .expect("DOORZET_TEST_DATABASE_URL must name the test PostgreSQL");
        let a = open(test_db.url()).await;
        let b = open(test_db.url()).await;
        assert!(a.is_writer() && !b.is_writer());
        a.append(&[entry(1)]).await.expect("the writer appends");
        assert!(matches!(
            b.append(&[entry(2)]).await,
            Err(AuditError::NotLeader)
        ));
        // The follower serves the log as it grows: checkpoint and proofs.
        within("the follower sees the new checkpoint", || {
            b.checkpoint().0.size == 1
        })
        .await;
        assert_eq!(b.checkpoint().0.root, a.checkpoint().0.root);
        b.inclusion_proof(0, 1)
            .await
            .expect("a proof from the follower");
        // The writer goes away; the follower takes over and continues the same log.
        drop(a);
        within("the follower takes over", || b.is_writer()).await;
        let appended = b.append(&[entry(3)]).await.expect("the new writer appends");
        assert_eq!((appended.indexes[0], appended.tree_size), (1, 2));
        drop(b);
        test_db.drop().await;
    }

    #[tokio::test]
    async fn appends_prove_and_survive_a_reopen_on_both_backends() {
        for test_db in TestDatabase::all().await {
            let log = open(test_db.url()).await;
            assert_eq!(log.checkpoint().0.size, 0);
            // Many concurrent appenders: batches form, every entry gets its own index.
            let n = 600u64;
            let mut tasks = Vec::new();
            for i in 0..n {
                let log = log.clone();
                tasks.push(tokio::spawn(async move {
                    (i, log.append(&[entry(i)]).await.unwrap())
                }));
            }
            let mut by_index = vec![None; n as usize];
            for task in tasks {
                let (i, appended) = task.await.unwrap();
                assert!(appended.tree_size > appended.indexes[0]);
                by_index[appended.indexes[0] as usize] = Some(i);
            }
            let leaves: Vec<Hash> = by_index
                .iter()
                .map(|i| merkle::leaf_hash(&entry::encode(&entry(i.unwrap())).unwrap()))
                .collect();
            let tree = MemoryTree::from_leaves(leaves.clone());
            let (checkpoint, note) = log.checkpoint();
            assert_eq!(checkpoint.size, n);
            assert_eq!(checkpoint.root, tree.root(n));
            let verifier = NoteVerifier::parse(&log.verifier_key()).unwrap();
            assert_eq!(verifier.verify(&note).unwrap(), checkpoint);

            for (index, size) in [(0, n), (5, 300), (257, 513), (n - 1, n), (511, 512)] {
                let (used, proof) = log.inclusion_proof(index, size).await.unwrap();
                assert_eq!(used, size);
                verify_inclusion(
                    index,
                    size,
                    &leaves[index as usize],
                    &proof,
                    &tree.root(size),
                )
                .unwrap();
            }
            let (index, _, proof) = log.inclusion_proof_by_hash(&leaves[300], 0).await.unwrap();
            assert_eq!(index, 300);
            verify_inclusion(300, n, &leaves[300], &proof, &tree.root(n)).unwrap();
            for (first, second) in [(1, n), (256, 512), (300, 599), (n, n), (7, 8)] {
                let proof = log.consistency_proof(first, second).await.unwrap();
                verify_consistency(first, second, &tree.root(first), &tree.root(second), &proof)
                    .unwrap();
            }
            assert!(matches!(
                log.inclusion_proof(0, n + 1).await,
                Err(AuditError::Range(_))
            ));
            assert!(matches!(
                log.consistency_proof(0, 5).await,
                Err(AuditError::Range(_))
            ));
            let page = log.entries(590, 1000).await.unwrap();
            assert_eq!(page.len(), 10);
            assert_eq!(merkle::leaf_hash(&page[0]), leaves[590]);
            // Every stored body, in order, is the entry its leaf hash was made from.
            let stored = log.entries(0, n).await.unwrap();
            let stored: Vec<Hash> = stored.iter().map(|b| merkle::leaf_hash(b)).collect();
            assert_eq!(stored, leaves);

            // Reopen: the same state is rebuilt from storage and appends continue.
            drop(log);
            let log = open(test_db.url()).await;
            assert_eq!(log.checkpoint().0, checkpoint);
            // The map from leaf hash to index is rebuilt from tiles and the incomplete block.
            for index in [10, 300, 599] {
                let (found, _, _) = log
                    .inclusion_proof_by_hash(&leaves[index], 0)
                    .await
                    .unwrap();
                assert_eq!(found, index as u64);
            }
            assert!(matches!(
                log.inclusion_proof_by_hash(&merkle::leaf_hash(b"never appended"), 0)
                    .await,
                Err(AuditError::UnknownHash(_))
            ));
            let appended = log.append(&[entry(n)]).await.unwrap();
            assert_eq!(appended.indexes, vec![n]);
            test_db.drop().await;
        }
    }

    #[tokio::test]
    async fn keeps_the_first_and_the_latest_checkpoint_of_each_hour_on_both_backends() {
        for test_db in TestDatabase::all().await {
            let log = open(test_db.url()).await;
            for i in 0..12 {
                log.append(&[entry(i)]).await.unwrap();
            }
            let db = Database::connect(test_db.url(), &[&store::MIGRATIONS])
                .await
                .unwrap();
            let sizes: Vec<i64> =
                sqlx::query_scalar("SELECT size FROM audit_checkpoints ORDER BY size")
                    .fetch_all(db.pool())
                    .await
                    .unwrap();
            // Twelve batches (and the empty log's checkpoint) in one hour leave the first and the
            // latest; a run that crosses an hour boundary keeps two per hour.
            assert!(sizes.len() <= 4, "{sizes:?}");
            assert_eq!(sizes.last(), Some(&12));
            assert_eq!(log.checkpoint().0.size, 12);
            db.close().await;
            drop(log);
            // The latest is what a reopen continues from.
            assert_eq!(open(test_db.url()).await.checkpoint().0.size, 12);
            test_db.drop().await;
        }
    }

    fn keyed(i: u64) -> v1::AuditEntry {
        let mut e = entry(i);
        e.record_id = format!("disc-{i}");
        e
    }

    #[tokio::test]
    async fn a_keyed_entry_is_in_the_log_once_however_often_it_is_sent_on_both_backends() {
        for test_db in TestDatabase::all().await {
            let log = open(test_db.url()).await;
            for chunk in (0..600).collect::<Vec<u64>>().chunks(100) {
                log.append(&chunk.iter().copied().map(keyed).collect::<Vec<_>>())
                    .await
                    .unwrap();
            }
            // Sent again: from a complete block (a stored tile), from the incomplete one, and a
            // new entry twice in one call.
            let again = [keyed(5), keyed(300), keyed(599), keyed(600), keyed(600)];
            let appended = log.append(&again).await.unwrap();
            assert_eq!(appended.indexes, vec![5, 300, 599, 600, 600]);
            assert_eq!((appended.tree_size, log.checkpoint().0.size), (601, 601));
            // A call of entries that are all in already writes nothing.
            let note = log.checkpoint().1;
            let appended = log.append(&[keyed(17), keyed(600)]).await.unwrap();
            assert_eq!((appended.indexes, appended.tree_size), (vec![17, 600], 601));
            assert_eq!(log.checkpoint().1, note);
            // Entries without a record id (the coordinator's own) are appended as sent.
            let appended = log.append(&[entry(7), entry(7)]).await.unwrap();
            assert_eq!(appended.indexes, vec![601, 602]);
            // After a reopen, the index of what is in comes from storage.
            drop(log);
            let log = open(test_db.url()).await;
            let appended = log.append(&[keyed(300), keyed(601)]).await.unwrap();
            assert_eq!(
                (appended.indexes, appended.tree_size),
                (vec![300, 603], 604)
            );
            let bodies = log.entries(0, 1000).await.unwrap();
            assert_eq!(bodies.len(), 604);
            assert_eq!(bodies[300], entry::encode(&keyed(300)).unwrap());
            test_db.drop().await;
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// Calls of keyed entries drawn with repeats from a small set, and unkeyed ones: the log
        /// holds every keyed entry once, in the order first sent, every unkeyed one as often as
        /// sent, and each call's answer points at the very entries it sent.
        #[test]
        fn keyed_entries_go_in_once_in_the_order_first_sent(
            calls in proptest::collection::vec(
                proptest::collection::vec((0u64..40, proptest::bool::weighted(0.9)), 1..30),
                1..8,
            ),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let test_db = TestDatabase::sqlite();
                let log = open(test_db.url()).await;
                let mut expected: Vec<Vec<u8>> = Vec::new();
                for call in &calls {
                    let sent: Vec<v1::AuditEntry> = call
                        .iter()
                        .map(|&(i, is_keyed)| if is_keyed { keyed(i) } else { entry(1000 + i) })
                        .collect();
                    let appended = log.append(&sent).await.unwrap();
                    for e in &sent {
                        let bytes = entry::encode(e).unwrap();
                        if e.record_id.is_empty() || !expected.contains(&bytes) {
                            expected.push(bytes);
                        }
                    }
                    let bodies = log.entries(0, 1000).await.unwrap();
                    assert_eq!(appended.tree_size as usize, expected.len());
                    for (e, index) in sent.iter().zip(&appended.indexes) {
                        assert_eq!(bodies[*index as usize], entry::encode(e).unwrap());
                    }
                }
                assert_eq!(log.entries(0, 1000).await.unwrap(), expected);
                test_db.drop().await;
            });
        }
    }

    async fn open_unlocked(url: &str) -> AuditLog {
        let db = Database::connect(url, &[&store::MIGRATIONS]).await.unwrap();
        let mut options = LogOptions::new("test.example/audit");
        options.writer_lock = false;
        AuditLog::open(db, signer(), options).await.unwrap()
    }

    #[tokio::test]
    async fn a_write_that_landed_unseen_does_not_wedge_the_writer() {
        for test_db in TestDatabase::all().await {
            let stale = open_unlocked(test_db.url()).await;
            stale.append(&[entry(0)]).await.unwrap();
            // Another writer stores entries this one does not know about, as a COMMIT that
            // succeeded while its connection broke would.
            let other = open_unlocked(test_db.url()).await;
            other
                .append(&(1..6).map(entry).collect::<Vec<_>>())
                .await
                .unwrap();
            drop(other);
            // The stale writer's next batch clashes, and it re-reads the stored state...
            assert!(stale.append(&[entry(100)]).await.is_err());
            assert_eq!(stale.checkpoint().0.size, 6);
            // ...so the one after goes on from there.
            let appended = stale.append(&[entry(101)]).await.unwrap();
            assert_eq!(appended.indexes, vec![6]);
            assert_eq!(appended.tree_size, 7);
            test_db.drop().await;
        }
    }

    #[tokio::test]
    async fn refuses_to_reopen_a_log_with_a_missing_tile() {
        let test_db = TestDatabase::sqlite();
        let log = open(test_db.url()).await;
        for chunk in (0..600).collect::<Vec<u64>>().chunks(100) {
            log.append(&chunk.iter().copied().map(entry).collect::<Vec<_>>())
                .await
                .unwrap();
        }
        drop(log);
        let db = Database::connect(test_db.url(), &[&store::MIGRATIONS])
            .await
            .unwrap();
        sqlx::query("DELETE FROM audit_tiles WHERE idx = 0")
            .execute(db.pool())
            .await
            .unwrap();
        let err = open_db(db).await.unwrap_err();
        assert!(err.to_string().contains("tile"), "{err}");
    }

    #[tokio::test]
    async fn refuses_to_reopen_a_rewritten_log() {
        let test_db = TestDatabase::sqlite();
        let log = open(test_db.url()).await;
        log.append(&(0..10).map(entry).collect::<Vec<_>>())
            .await
            .unwrap();
        drop(log);
        let db = Database::connect(test_db.url(), &[&store::MIGRATIONS])
            .await
            .unwrap();
        let forged = merkle::leaf_hash(b"forged");
        sqlx::query("UPDATE audit_entries SET leaf_hash = $1 WHERE idx = 9")
            .bind(forged.to_vec())
            .execute(db.pool())
            .await
            .unwrap();
        let err = open_db(db).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("do not hash to the stored checkpoint"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn refuses_entries_that_could_hold_content() {
        let test_db = TestDatabase::sqlite();
        let log = open(test_db.url()).await;
        let mut bad = entry(1);
        bad.purpose = "eviction on 12 March".into();
        assert!(matches!(
            log.append(&[bad]).await,
            Err(AuditError::Entry(_))
        ));
        assert_eq!(log.checkpoint().0.size, 0);
    }
}
