-- Every task's events in time order, for the live feed of task changes
-- (`GET /v1/events`), which resumes after a position (created_at, id).
CREATE INDEX task_events_time ON task_events (created_at, id);
