-- Listing a key's tasks of every dialect now merges one range per dialect
-- of tasks_owner_listing (owner, dialect, created_at, id), so the index
-- 0004 added, one more write on every insert, goes.
DROP INDEX tasks_owner_created;
