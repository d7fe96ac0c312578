-- Every distinct directory file the coordinator loaded, so versions only grow across restarts.
CREATE TABLE directory_versions (
    version    BIGINT PRIMARY KEY,
    sha256     TEXT   NOT NULL,
    loaded_at  BIGINT NOT NULL
);
