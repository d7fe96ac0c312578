-- The participation grant an invitation carries is the same for every participant of a
-- transition: it is stored once, by escalation and sequence, instead of in each notification's
-- body (where it was most of the row). And the notification id needs no index of its own: it is
-- made of the escalation, the sequence the transition claimed and the recipient, so it cannot
-- repeat.
CREATE TABLE outbox_grants (
    escalation_id  TEXT   NOT NULL,
    sequence       BIGINT NOT NULL,
    token          TEXT   NOT NULL,
    PRIMARY KEY (escalation_id, sequence)
);
ALTER TABLE outbox DROP CONSTRAINT outbox_notification_id_key;
