-- Escalations, their events, idempotency keys, the notification outbox and the audit entries
-- waiting for the log. A transition writes all of them in one transaction.

-- The escalation as the contract has it (`body`, a doorzet.v1.Escalation), with the columns the
-- coordinator queries by. No facts, no direct identifiers.
CREATE TABLE escalations (
    escalation_id      TEXT    PRIMARY KEY,
    case_ref           TEXT    NOT NULL,
    state              TEXT    NOT NULL,
    tier               INTEGER NOT NULL,
    registrant_org     TEXT    NOT NULL,
    registered_at      BIGINT  NOT NULL,
    updated_at         BIGINT  NOT NULL,
    deadline           BIGINT,
    -- The next moment the scheduler must act on it (a deadline or a follow-up), if any.
    next_due           BIGINT,
    sequence           BIGINT  NOT NULL,
    body               BYTEA    NOT NULL
);
CREATE INDEX escalations_next_due ON escalations (next_due) WHERE next_due IS NOT NULL;
CREATE INDEX escalations_by_registered ON escalations (registered_at, escalation_id);

-- Organisations taking part (registrant and participants), for listing and access checks.
CREATE TABLE escalation_members (
    escalation_id  TEXT NOT NULL,
    org            TEXT NOT NULL,
    PRIMARY KEY (escalation_id, org)
);
CREATE INDEX escalation_members_by_org ON escalation_members (org, escalation_id);

CREATE TABLE escalation_events (
    escalation_id  TEXT   NOT NULL,
    sequence       BIGINT NOT NULL,
    body           BYTEA   NOT NULL,
    PRIMARY KEY (escalation_id, sequence)
);

-- Idempotency: (organisation, request id) → the request's hash and the answer given.
CREATE TABLE escalation_requests (
    org           TEXT   NOT NULL,
    request_id    TEXT   NOT NULL,
    request_hash  TEXT   NOT NULL,
    response      BYTEA   NOT NULL,
    at            BIGINT NOT NULL,
    PRIMARY KEY (org, request_id)
);

-- Notifications to nodes, delivered at least once with backoff; the nodes deduplicate by id.
CREATE TABLE outbox (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_id  TEXT    NOT NULL UNIQUE,
    recipient_org    TEXT    NOT NULL,
    body             BYTEA    NOT NULL,
    attempts         INTEGER NOT NULL,
    next_attempt_at  BIGINT  NOT NULL,
    claimed_until    BIGINT  NOT NULL,
    -- The coordinator instance holding the claim; a restarted instance releases its own at once.
    claimed_by       TEXT    NOT NULL,
    last_error       TEXT    NOT NULL,
    delivered_at     BIGINT
);
CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE delivered_at IS NULL;

-- Audit entries (canonically encoded) written with their transition, drained into the log in order.
CREATE TABLE audit_pending (
    id     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entry  BYTEA    NOT NULL
);
