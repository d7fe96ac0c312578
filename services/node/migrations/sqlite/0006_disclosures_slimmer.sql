-- The disclosure log's one writer numbers its records, and their ids are unique by construction
-- (time-ordered and random) and never looked up, so neither AUTOINCREMENT (a sqlite_sequence
-- write every commit) nor a unique index on disclosure_id (a third B-tree) earns its cost: a
-- group commit of about 20 records writes 10 WAL pages instead of 14.
CREATE TABLE disclosures_slim (
    seq                   INTEGER PRIMARY KEY,
    disclosure_id         TEXT   NOT NULL,
    at                    BIGINT NOT NULL,
    requester_org         TEXT   NOT NULL,
    requester_person      TEXT   NOT NULL,
    on_behalf_of_org      TEXT   NOT NULL,
    case_ref              TEXT   NOT NULL,
    escalation_id         TEXT   NOT NULL,
    purpose               TEXT   NOT NULL,
    disclosed_fact_ids    TEXT   NOT NULL,
    disclosed_categories  TEXT   NOT NULL,
    withheld_fact_ids     TEXT   NOT NULL,
    withheld_categories   TEXT   NOT NULL,
    outcome               TEXT   NOT NULL,
    refusal               TEXT   NOT NULL,
    grant_id              TEXT   NOT NULL,
    audit_state           INTEGER NOT NULL
);
INSERT INTO disclosures_slim
SELECT seq, disclosure_id, at, requester_org, requester_person, on_behalf_of_org, case_ref,
       escalation_id, purpose, disclosed_fact_ids, disclosed_categories, withheld_fact_ids,
       withheld_categories, outcome, refusal, grant_id, audit_state
FROM disclosures;
DROP TABLE disclosures;
ALTER TABLE disclosures_slim RENAME TO disclosures;
CREATE INDEX disclosures_by_case_ref ON disclosures (case_ref, seq);
