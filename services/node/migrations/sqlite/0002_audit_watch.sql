-- What this node has verified of the coordinator's audit log: the checkpoints it saw (so the ZVH
-- cannot rewrite history unnoticed), the pinned verifier key, the sweep position and any alarm.
CREATE TABLE audit_checkpoints_seen (
    size     BIGINT PRIMARY KEY,
    root     BLOB   NOT NULL,
    note     TEXT   NOT NULL,
    seen_at  BIGINT NOT NULL
);
CREATE TABLE audit_watch (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    verifier_key  TEXT   NOT NULL,
    sweep_cursor  BIGINT NOT NULL,
    alarm         TEXT
);
