-- The disclosure log keeps as columns only what it is searched and filtered by: the sequence
-- number, the time, the case reference and the audit state. The rest of a record is one JSON array,
-- `detail`, in this order: [disclosure_id, requester_org, requester_person, on_behalf_of_org,
-- escalation_id, purpose, disclosed_fact_ids, disclosed_categories, withheld_fact_ids,
-- withheld_categories, outcome, refusal, grant_id] (lists comma-separated, as before). The writer
-- hands SQLite each detail ready-made, so a record costs it five values instead of seventeen: on a
-- busy node that was most of a QueryFacts's time on SQLite's thread. The view disclosure_log shows
-- every field by its name, for reading the log by hand.
CREATE TABLE disclosures_detailed (
    seq          INTEGER PRIMARY KEY,
    at           BIGINT  NOT NULL,
    case_ref     TEXT    NOT NULL,
    audit_state  INTEGER NOT NULL,
    detail       TEXT    NOT NULL
);
INSERT INTO disclosures_detailed (seq, at, case_ref, audit_state, detail)
SELECT seq, at, case_ref, audit_state,
       json_array(disclosure_id, requester_org, requester_person, on_behalf_of_org, escalation_id,
                  purpose, disclosed_fact_ids, disclosed_categories, withheld_fact_ids,
                  withheld_categories, outcome, refusal, grant_id)
FROM disclosures;
DROP TABLE disclosures;
ALTER TABLE disclosures_detailed RENAME TO disclosures;
CREATE INDEX disclosures_by_case_ref ON disclosures (case_ref, seq);
CREATE VIEW disclosure_log AS
SELECT seq, at, case_ref, audit_state,
       detail ->> 0 AS disclosure_id,
       detail ->> 1 AS requester_org,
       detail ->> 2 AS requester_person,
       detail ->> 3 AS on_behalf_of_org,
       detail ->> 4 AS escalation_id,
       detail ->> 5 AS purpose,
       detail ->> 6 AS disclosed_fact_ids,
       detail ->> 7 AS disclosed_categories,
       detail ->> 8 AS withheld_fact_ids,
       detail ->> 9 AS withheld_categories,
       detail ->> 10 AS outcome,
       detail ->> 11 AS refusal,
       detail ->> 12 AS grant_id
FROM disclosures;
