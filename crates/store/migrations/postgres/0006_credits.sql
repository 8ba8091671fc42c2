-- Credits: each key's balance, limits and ledger; what each task was charged
-- and refunded; the price book's entries added over the admin API.

-- Keys made before credits existed stay unlimited: they spent freely before.
ALTER TABLE api_keys ADD COLUMN enabled BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE api_keys ADD COLUMN unlimited BOOLEAN NOT NULL DEFAULT TRUE;
-- Always the sum of the key's ledger entries (gengate ledger verify checks).
ALTER TABLE api_keys ADD COLUMN balance BIGINT NOT NULL DEFAULT 0;
-- gengate_core::credits::KeyLimits as JSON.
ALTER TABLE api_keys ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
-- Credits charged net of refunds since `spend_day` (a UTC day's start, Unix
-- ms) began, for limits.daily_spend: kept on the row the charge updates.
ALTER TABLE api_keys ADD COLUMN spend_day BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN spent BIGINT NOT NULL DEFAULT 0;

-- The charge fixed at accept: `charged` in all, of which `charge_per_output`
-- for each of `charge_outputs` (the rest per task); `refunded` of it since;
-- `upstream_cost` what the channel's price list says the operator paid.
ALTER TABLE tasks ADD COLUMN charged BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN charge_per_output BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN charge_outputs BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN refunded BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN upstream_cost BIGINT NOT NULL DEFAULT 0;

-- A key's tasks not finished yet: what max_in_flight is checked against.
CREATE INDEX tasks_owner_open ON tasks (owner) WHERE due_at IS NOT NULL;

-- Append-only: rows are inserted, never changed or removed. Kept in
-- order of each key (no other index to write per entry): a task's charge
-- takes the task's id, so the primary key also says a task is charged once.
CREATE TABLE ledger (
    key_id   UUID NOT NULL REFERENCES api_keys (id),
    -- UUIDv7 (time-ordered), or the task's id for its charge
    id       UUID NOT NULL,
    at       BIGINT NOT NULL,
    -- grant, charge, refund or adjustment
    kind     TEXT NOT NULL,
    -- Signed: a charge is negative, a refund or grant positive.
    amount   BIGINT NOT NULL,
    task_id  UUID,
    reason   TEXT,
    PRIMARY KEY (key_id, id)
);

-- Prices added over the admin API (gengate.toml's are never stored).
CREATE TABLE prices (
    model       TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);
