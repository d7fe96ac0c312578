-- Webhook endpoints the organisation registered, what is to be delivered to them, and how far the
-- gateway has read its node's inbox.
CREATE TABLE webhooks (
    webhook_id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    events TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE deliveries (
    webhook_id TEXT NOT NULL REFERENCES webhooks (webhook_id),
    event_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    last_error TEXT NOT NULL,
    delivered_at BIGINT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (webhook_id, event_id)
);
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);

CREATE TABLE inbox_cursor (
    id INTEGER PRIMARY KEY,
    position BIGINT NOT NULL
);
