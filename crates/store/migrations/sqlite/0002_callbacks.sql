-- Callbacks: each key's signing secrets, and an outbox of deliveries written
-- in the same transaction as the event they announce.

ALTER TABLE api_keys ADD COLUMN webhook_secret TEXT;
ALTER TABLE api_keys ADD COLUMN previous_webhook_secret TEXT;
ALTER TABLE api_keys ADD COLUMN previous_secret_until INTEGER;

CREATE TABLE deliveries (
    id               BLOB PRIMARY KEY,
    -- The event announced; its id is the `webhook-id`, the same on every retry.
    event_id         BLOB NOT NULL,
    event_state      TEXT NOT NULL,
    event_at         INTEGER NOT NULL,
    task_id          BLOB NOT NULL REFERENCES tasks (id),
    owner            BLOB NOT NULL,
    seq              INTEGER NOT NULL,
    url              TEXT NOT NULL,
    -- pending, delivered, failed (given up) or gone (the receiver answered 410)
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    -- NULL once final, so the work index holds only what is still to send.
    next_attempt_at  INTEGER,
    lease_until      INTEGER,
    last_status      INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX deliveries_task ON deliveries (task_id, seq);

CREATE TABLE delivery_attempts (
    id               BLOB PRIMARY KEY,
    delivery_id      BLOB NOT NULL REFERENCES deliveries (id),
    attempt          INTEGER NOT NULL,
    at               INTEGER NOT NULL,
    status           INTEGER,
    error            TEXT,
    latency_ms       INTEGER NOT NULL,
    next_attempt_at  INTEGER
);
CREATE INDEX delivery_attempts_by_delivery ON delivery_attempts (delivery_id, attempt);
