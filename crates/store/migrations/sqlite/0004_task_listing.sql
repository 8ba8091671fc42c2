-- gengate's own API lists a key's tasks of every dialect, newest first, by
-- position (created_at, id): this index keeps each page a short range scan
-- however many tasks the key has.
CREATE INDEX tasks_owner_created ON tasks (owner, created_at DESC, id DESC);
