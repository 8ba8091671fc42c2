-- Credits: each key's balance, limits and ledger; what each task was charged
-- and refunded; the price book's entries added over the admin API.

-- Keys made before credits existed stay unlimited: they spent freely before.
ALTER TABLE api_keys ADD COLUMN enabled INTEGER NOT NULL DEFAULT 1;
ALTER TABLE api_keys ADD COLUMN unlimited INTEGER NOT NULL DEFAULT 1;
-- Always the sum of the key's ledger entries (gengate ledger verify checks).
ALTER TABLE api_keys ADD COLUMN balance INTEGER NOT NULL DEFAULT 0;
-- gengate_core::credits::KeyLimits as JSON.
ALTER TABLE api_keys ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
-- Credits charged net of refunds since `spend_day` (a UTC day's start, Unix
-- ms) began, for limits.daily_spend: kept on the row the charge updates.
ALTER TABLE api_keys ADD COLUMN spend_day INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN spent INTEGER NOT NULL DEFAULT 0;

-- The charge fixed at accept: `charged` in all, of which `charge_per_output`
-- for each of `charge_outputs` (the rest per task); `refunded` of it since;
-- `upstream_cost` what the channel's price list says the operator paid.
ALTER TABLE tasks ADD COLUMN charged INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN charge_per_output INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN charge_outputs INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN refunded INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN upstream_cost INTEGER NOT NULL DEFAULT 0;

-- A key's tasks not finished yet: what max_in_flight is checked against.
CREATE INDEX tasks_owner_open ON tasks (owner) WHERE due_at IS NOT NULL;

-- Append-only: rows are inserted, never changed or removed. Kept in
-- order of each key (no other index to write per entry): a task's charge
-- takes the task's id, so the primary key also says a task is charged once.
CREATE TABLE ledger (
    key_id   BLOB NOT NULL REFERENCES api_keys (id),
    -- UUIDv7 (time-ordered), or the task's id for its charge
    id       BLOB NOT NULL,
    at       INTEGER NOT NULL,
    -- grant, charge, refund or adjustment
    kind     TEXT NOT NULL,
    -- Signed: a charge is negative, a refund or grant positive.
    amount   INTEGER NOT NULL,
    task_id  BLOB,
    reason   TEXT,
    PRIMARY KEY (key_id, id)
) WITHOUT ROWID;

-- Prices added over the admin API (gengate.toml's are never stored).
CREATE TABLE prices (
    model       TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);
