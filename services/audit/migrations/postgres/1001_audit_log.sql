-- The audit log (versions 1001+ belong to doorzet-audit). Entries are keyed by leaf index and only
-- ever appended: no index with random keys, so a batch writes a few sequential pages. Subtrees holds
-- the hashes of complete subtrees whose height is a multiple of 8, and tiles hold complete 256-leaf
-- blocks, so a proof needs at most two single-row reads; look-ups by leaf hash use a map the log
-- builds in memory from the tiles.
CREATE TABLE audit_entries (
    idx          BIGINT PRIMARY KEY,
    leaf_hash    BYTEA  NOT NULL,
    body         BYTEA  NOT NULL
);

CREATE TABLE audit_subtrees (
    level  INTEGER NOT NULL,
    idx    BIGINT  NOT NULL,
    hash   BYTEA   NOT NULL,
    PRIMARY KEY (level, idx)
);

-- The leaf hashes of each complete 256-entry block, concatenated (8 KiB): one read per proof
-- instead of 256.
CREATE TABLE audit_tiles (
    idx     BIGINT PRIMARY KEY,
    hashes  BYTEA  NOT NULL
);

CREATE TABLE audit_checkpoints (
    size        BIGINT PRIMARY KEY,
    root        BYTEA  NOT NULL,
    note        TEXT   NOT NULL,
    created_at  BIGINT NOT NULL
);
