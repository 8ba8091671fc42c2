-- Tasks, their events and API keys. Times are Unix milliseconds; ids are
-- 16-byte UUIDs (v7 for tasks, so new rows land at the end of the index).

CREATE TABLE api_keys (
    id          BLOB PRIMARY KEY,
    name        TEXT NOT NULL,
    hash        BLOB NOT NULL UNIQUE,
    admin       INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE tasks (
    id              BLOB PRIMARY KEY,
    owner           BLOB NOT NULL,
    dialect         TEXT NOT NULL,
    kind            TEXT NOT NULL,
    model           TEXT NOT NULL,
    request         TEXT NOT NULL,
    callback_url    TEXT,
    external_id     TEXT,
    channel         TEXT,
    upstream_ref    TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    state           TEXT NOT NULL,
    failure_reason  TEXT,
    progress        INTEGER NOT NULL DEFAULT 0,
    artifacts       TEXT NOT NULL DEFAULT '[]',
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER,
    deadline_at     INTEGER NOT NULL,
    version         INTEGER NOT NULL,
    event_seq       INTEGER NOT NULL,
    -- When the engine should next look at the task; NULL once terminal, so
    -- the work index never grows with finished tasks.
    due_at          INTEGER,
    lease_owner     TEXT,
    lease_until     INTEGER
) WITHOUT ROWID;

CREATE UNIQUE INDEX tasks_external_id ON tasks (owner, external_id) WHERE external_id IS NOT NULL;
CREATE INDEX tasks_due ON tasks (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX tasks_owner_listing ON tasks (owner, dialect, created_at DESC, id DESC);

CREATE TABLE task_events (
    id          BLOB PRIMARY KEY,
    task_id     BLOB NOT NULL REFERENCES tasks (id),
    seq         INTEGER NOT NULL,
    state       TEXT NOT NULL,
    detail      TEXT,
    created_at  INTEGER NOT NULL,
    UNIQUE (task_id, seq)
);
