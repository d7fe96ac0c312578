-- The audit log (versions 1001+ belong to doorzet-audit). Entries are keyed by leaf index; the hash
-- prefix index serves look-ups by leaf hash. Subtrees holds the hashes of complete subtrees whose
-- height is a multiple of 8, so any proof needs at most a couple of 256-leaf range reads.
CREATE TABLE audit_entries (
    idx          INTEGER PRIMARY KEY,
    hash_prefix  BIGINT  NOT NULL,
    leaf_hash    BLOB    NOT NULL,
    body         BLOB    NOT NULL
);
CREATE INDEX audit_entries_by_hash ON audit_entries (hash_prefix);

CREATE TABLE audit_subtrees (
    level  INTEGER NOT NULL,
    idx    BIGINT  NOT NULL,
    hash   BLOB    NOT NULL,
    PRIMARY KEY (level, idx)
);

CREATE TABLE audit_checkpoints (
    size        INTEGER PRIMARY KEY,
    root        BLOB    NOT NULL,
    note        TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL
);
