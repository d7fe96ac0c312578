-- The disclosure log's one writer numbers its records, and their ids are unique by construction
-- (time-ordered and random) and never looked up: the unique index on disclosure_id is a second
-- B-tree written for every record that nothing reads, and the sequence is never drawn from.
ALTER TABLE disclosures DROP CONSTRAINT disclosures_disclosure_id_key;
ALTER TABLE disclosures ALTER COLUMN seq DROP DEFAULT;
DROP SEQUENCE disclosures_seq_seq;
