-- The organisation's own cases, their facts, the consents and legal bases that cover them, their
-- links to escalations, the disclosure log (NEN 7513) and the inbox. Times are Unix milliseconds;
-- lists are comma-separated vocabulary values or organisation ids.
CREATE TABLE cases (
    case_id     TEXT   PRIMARY KEY,
    local_id    TEXT   NOT NULL UNIQUE,
    -- The BSN sealed with the node's key (nonce || ciphertext); never leaves the node.
    bsn_sealed  BYTEA,
    created_at  BIGINT NOT NULL,
    created_by  TEXT   NOT NULL
);

CREATE TABLE facts (
    fact_id      TEXT   PRIMARY KEY,
    case_id      TEXT   NOT NULL REFERENCES cases (case_id),
    category     TEXT   NOT NULL,
    value        TEXT   NOT NULL,
    source       TEXT   NOT NULL,
    recorded_at  BIGINT NOT NULL,
    recorded_by  TEXT   NOT NULL
);
CREATE INDEX facts_by_case ON facts (case_id);

-- Consents (given_by person or representative) and legal bases (given_by law).
CREATE TABLE bases (
    basis_id         TEXT   PRIMARY KEY,
    case_id          TEXT   NOT NULL REFERENCES cases (case_id),
    given_by         TEXT   NOT NULL,
    law              TEXT,
    article          TEXT,
    categories       TEXT   NOT NULL,
    recipient_orgs   TEXT   NOT NULL,
    recipient_kinds  TEXT   NOT NULL,
    purposes         TEXT   NOT NULL,
    valid_from       BIGINT NOT NULL,
    valid_until      BIGINT,
    withdrawn_at     BIGINT,
    recorded_at      BIGINT NOT NULL,
    recorded_by      TEXT   NOT NULL
);
CREATE INDEX bases_by_case ON bases (case_id);

CREATE TABLE case_links (
    case_ref           TEXT   PRIMARY KEY,
    case_id            TEXT   NOT NULL REFERENCES cases (case_id),
    subject_pseudonym  TEXT,
    linked_at          BIGINT NOT NULL
);
CREATE INDEX case_links_by_case ON case_links (case_id);

-- Every QueryFacts decision, allowed or refused; audit_state: 0 to append to the coordinator's
-- audit log, 1 appended, 2 kept here only (its case reference cannot go into the audit log).
CREATE TABLE disclosures (
    seq                   BIGSERIAL PRIMARY KEY,
    disclosure_id         TEXT   NOT NULL UNIQUE,
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
CREATE INDEX disclosures_by_case_ref ON disclosures (case_ref, seq);
CREATE INDEX disclosures_to_audit ON disclosures (audit_state, seq);

CREATE TABLE inbox (
    position         BIGSERIAL PRIMARY KEY,
    notification_id  TEXT   NOT NULL UNIQUE,
    body             BYTEA  NOT NULL,
    received_at      BIGINT NOT NULL
);

CREATE TABLE mandates (
    mandate_id      TEXT   PRIMARY KEY,
    role            TEXT   NOT NULL,
    person          TEXT   NOT NULL,
    tiers           TEXT   NOT NULL,
    domains         TEXT   NOT NULL,
    decision_types  TEXT   NOT NULL,
    legal_basis     TEXT   NOT NULL,
    valid_from      BIGINT NOT NULL,
    valid_until     BIGINT,
    review_date     BIGINT NOT NULL,
    ended_at        BIGINT,
    updated_at      BIGINT NOT NULL,
    updated_by      TEXT   NOT NULL
);
