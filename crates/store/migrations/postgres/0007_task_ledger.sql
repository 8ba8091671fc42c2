-- A task's charge and refund are ledger entries kept on the task's own row,
-- which accepting and finishing write anyway: charging then costs no row of
-- its own. The charge is the entry (id = the task's id, at = created_at,
-- -charged); the refund, made only as the task ends, the entry (refund_id,
-- finished_at, refunded). The ledger table keeps grants and adjustments,
-- and receives a task's two entries when the task is deleted.
ALTER TABLE tasks ADD COLUMN refund_id UUID;

-- Move the task entries 0006 wrote into the ledger table onto their tasks.
UPDATE tasks SET refund_id = (
    SELECT l.id FROM ledger l
    WHERE l.key_id = tasks.owner AND l.task_id = tasks.id AND l.kind = 'refund'
) WHERE refunded > 0;
DELETE FROM ledger WHERE kind IN ('charge', 'refund') AND task_id IN (SELECT id FROM tasks);

-- A key's refunds, newest first, for its ledger: written only for refunded tasks.
CREATE INDEX tasks_refunds ON tasks (owner, finished_at DESC) WHERE refunded > 0;
