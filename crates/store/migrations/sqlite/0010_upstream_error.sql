-- What the upstream itself said when it failed a task (its adapter's
-- quote), kept apart from gengate's reason so either can be shown.
ALTER TABLE tasks ADD COLUMN upstream_error TEXT;
