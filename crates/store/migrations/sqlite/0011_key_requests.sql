-- Authenticated API requests per key and UTC day (the day's start in Unix
-- ms): counted in memory by each instance and added every few seconds, for
-- the usage report's requests per day.
CREATE TABLE key_requests (
    key_id   BLOB NOT NULL,
    day      BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    PRIMARY KEY (key_id, day)
);
