-- Retention. A task's results expire at keep_until (set as it finishes;
-- NULL: kept for ever). Files are shared by content hash, so each stored
-- file has a row keeping it until the latest keep_until of the tasks (and
-- writes in progress) that use it: once that passes, the sweeper marks it
-- `deleting`, deletes the object, then the row. A writer extends a row
-- before it writes the object and never extends one being deleted, so a
-- sweep cannot delete a file a new task is about to use.
ALTER TABLE tasks ADD COLUMN keep_until BIGINT;

CREATE TABLE files (
    key         TEXT PRIMARY KEY,
    -- Bytes, when the writer knew them (0: not known).
    size        BIGINT NOT NULL DEFAULT 0,
    keep_until  BIGINT,
    deleting    BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX files_expiring ON files (keep_until) WHERE keep_until IS NOT NULL AND deleting = FALSE;
CREATE INDEX files_deleting ON files (key) WHERE deleting = TRUE;

-- Results of tasks completed before retention existed are kept for ever,
-- as they were: a row each, so a new task sharing one (by content hash)
-- can never shorten its term.
INSERT INTO files (key, keep_until)
SELECT DISTINCT a ->> 'key', NULL::BIGINT
FROM tasks, jsonb_array_elements(tasks.artifacts) AS a
WHERE tasks.state = 'completed' AND a ->> 'key' IS NOT NULL
ON CONFLICT (key) DO NOTHING;

-- Work one instance at a time does (the sweep): held by `holder` until `held_until`.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    held_until BIGINT NOT NULL
);
