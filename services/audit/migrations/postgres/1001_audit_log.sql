-- The audit log (versions 1001+ belong to doorzet-audit). Entries are keyed by leaf index; the hash
-- prefix index serves look-ups by leaf hash. Subtrees holds the hashes of complete subtrees whose
-- height is a multiple of 8, and tiles hold complete 256-leaf blocks, so a proof needs at most two single-row reads.
CREATE TABLE audit_entries (
    idx          BIGINT PRIMARY KEY,
    hash_prefix  BIGINT NOT NULL,
    leaf_hash    BYTEA  NOT NULL,
    body         BYTEA  NOT NULL
);
CREATE INDEX audit_entries_by_hash ON audit_entries (hash_prefix);

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
