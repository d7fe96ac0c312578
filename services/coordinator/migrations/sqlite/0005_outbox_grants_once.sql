-- The participation grant an invitation carries is the same for every participant of a
-- transition: it is stored once, by escalation and sequence, instead of in each notification's
-- body (where it was most of the row). And the notification id needs no index of its own: it is
-- made of the escalation, the sequence the transition claimed and the recipient, so it cannot
-- repeat. SQLite drops a column's UNIQUE only by rebuilding the table.
CREATE TABLE outbox_grants (
    escalation_id  TEXT   NOT NULL,
    sequence       BIGINT NOT NULL,
    token          TEXT   NOT NULL,
    PRIMARY KEY (escalation_id, sequence)
) WITHOUT ROWID;

CREATE TABLE outbox_rebuilt (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    notification_id  TEXT    NOT NULL,
    recipient_org    TEXT    NOT NULL,
    body             BLOB    NOT NULL,
    attempts         INTEGER NOT NULL,
    next_attempt_at  BIGINT  NOT NULL,
    claimed_until    BIGINT  NOT NULL,
    -- The coordinator instance holding the claim; a restarted instance releases its own at once.
    claimed_by       TEXT    NOT NULL,
    last_error       TEXT    NOT NULL,
    delivered_at     BIGINT
);
INSERT INTO outbox_rebuilt (id, notification_id, recipient_org, body, attempts, next_attempt_at,
                            claimed_until, claimed_by, last_error, delivered_at)
SELECT id, notification_id, recipient_org, body, attempts, next_attempt_at, claimed_until,
       claimed_by, last_error, delivered_at
FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_rebuilt RENAME TO outbox;
CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE delivered_at IS NULL;
