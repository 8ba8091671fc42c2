-- Callbacks: each key's signing secrets, and an outbox of deliveries written
-- in the same transaction as the event they announce.

ALTER TABLE api_keys ADD COLUMN webhook_secret TEXT;
ALTER TABLE api_keys ADD COLUMN previous_webhook_secret TEXT;
ALTER TABLE api_keys ADD COLUMN previous_secret_until BIGINT;

CREATE TABLE deliveries (
    id               UUID PRIMARY KEY,
    -- The event announced; its id is the `webhook-id`, the same on every retry.
    event_id         UUID NOT NULL,
    event_state      TEXT NOT NULL,
    event_at         BIGINT NOT NULL,
    task_id          UUID NOT NULL REFERENCES tasks (id),
    owner            UUID NOT NULL,
    seq              BIGINT NOT NULL,
    url              TEXT NOT NULL,
    -- pending, delivered, failed (given up) or gone (the receiver answered 410)
    state            TEXT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    -- NULL once final, so the work index holds only what is still to send.
    next_attempt_at  BIGINT,
    lease_until      BIGINT,
    last_status      BIGINT,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX deliveries_task ON deliveries (task_id, seq);

CREATE TABLE delivery_attempts (
    id               UUID PRIMARY KEY,
    delivery_id      UUID NOT NULL REFERENCES deliveries (id),
    attempt          BIGINT NOT NULL,
    at               BIGINT NOT NULL,
    status           BIGINT,
    error            TEXT,
    latency_ms       BIGINT NOT NULL,
    next_attempt_at  BIGINT
);
CREATE INDEX delivery_attempts_by_delivery ON delivery_attempts (delivery_id, attempt);
