-- Tasks, their events and API keys. Times are Unix milliseconds (BIGINT),
-- the same values the SQLite backend stores.

CREATE TABLE api_keys (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL,
    hash        BYTEA NOT NULL UNIQUE,
    admin       BOOLEAN NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

CREATE TABLE tasks (
    id              UUID PRIMARY KEY,
    owner           UUID NOT NULL,
    dialect         TEXT NOT NULL,
    kind            TEXT NOT NULL,
    model           TEXT NOT NULL,
    request         JSONB NOT NULL,
    callback_url    TEXT,
    external_id     TEXT,
    channel         TEXT,
    upstream_ref    TEXT,
    attempts        BIGINT NOT NULL DEFAULT 0,
    state           TEXT NOT NULL,
    failure_reason  TEXT,
    progress        BIGINT NOT NULL DEFAULT 0,
    artifacts       JSONB NOT NULL DEFAULT '[]',
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    started_at      BIGINT,
    finished_at     BIGINT,
    deadline_at     BIGINT NOT NULL,
    version         BIGINT NOT NULL,
    event_seq       BIGINT NOT NULL,
    -- When the engine should next look at the task; NULL once terminal, so
    -- the work index never grows with finished tasks.
    due_at          BIGINT,
    lease_owner     TEXT,
    lease_until     BIGINT
);

CREATE UNIQUE INDEX tasks_external_id ON tasks (owner, external_id) WHERE external_id IS NOT NULL;
CREATE INDEX tasks_due ON tasks (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX tasks_owner_listing ON tasks (owner, dialect, created_at DESC, id DESC);

CREATE TABLE task_events (
    id          UUID PRIMARY KEY,
    task_id     UUID NOT NULL REFERENCES tasks (id),
    seq         BIGINT NOT NULL,
    state       TEXT NOT NULL,
    detail      TEXT,
    created_at  BIGINT NOT NULL,
    UNIQUE (task_id, seq)
);
