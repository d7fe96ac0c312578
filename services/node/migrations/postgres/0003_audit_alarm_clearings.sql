-- Every audit alarm an operator cleared: when, by whom, what the alarm said and why it was cleared.
CREATE TABLE audit_alarm_clearings (
    cleared_at          BIGINT  NOT NULL,
    subject             TEXT    NOT NULL,
    role                TEXT    NOT NULL,
    alarm               TEXT    NOT NULL,
    reason              TEXT    NOT NULL,
    forgot_checkpoints  BOOLEAN NOT NULL
);
