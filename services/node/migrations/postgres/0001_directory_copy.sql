-- The last good copy of the region's directory, so a restarted node keeps serving while the
-- coordinator is unreachable (up to directory.max_age).
CREATE TABLE directory_copy (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    body        BYTEA   NOT NULL,
    fetched_at  BIGINT  NOT NULL
);
