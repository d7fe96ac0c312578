-- Checkpoints are thinned as they are written (the first and the latest of each hour stay); the
-- thinning looks them up by creation time.
CREATE INDEX audit_checkpoints_created_at ON audit_checkpoints (created_at);
