-- A claimed notification is due again when its claim ends: `next_attempt_at` says so itself, so
-- the earliest due notification is read from the `outbox_due` index instead of every row.
UPDATE outbox SET next_attempt_at = claimed_until
WHERE delivered_at IS NULL AND claimed_until > next_attempt_at;
