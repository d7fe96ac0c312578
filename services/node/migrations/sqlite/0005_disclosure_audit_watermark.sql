-- The disclosure log is appended to the coordinator's audit log in order, so one watermark says
-- which records are in it: every record with seq <= appended_through, except those kept here only
-- (audit_state = 2). Writing the watermark once per batch replaces rewriting every appended row and
-- its index entry.
CREATE TABLE disclosure_audit_progress (
    id                 INTEGER PRIMARY KEY CHECK (id = 1),
    appended_through   BIGINT NOT NULL
);
INSERT INTO disclosure_audit_progress (id, appended_through)
SELECT 1, COALESCE(
    (SELECT MIN(seq) - 1 FROM disclosures WHERE audit_state = 0),
    (SELECT MAX(seq) FROM disclosures),
    0);
DROP INDEX disclosures_to_audit;
