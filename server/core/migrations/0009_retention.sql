-- Retention: terminal jobs older than DATAMILL_RETENTION_DAYS are deleted with their
-- events, objects and dataset tables (server/core/retention.py).

-- When each periodic task last started: one UPDATE decides which replica starts the next.
CREATE TABLE maintenance_runs (
    name         text        PRIMARY KEY,
    last_started timestamptz NOT NULL
);

-- Oldest finished top-level jobs first.
CREATE INDEX jobs_retention_idx ON jobs (finished_at) WHERE parent_id IS NULL AND finished_at IS NOT NULL;
-- A job's datasets and objects, found when the job expires.
CREATE INDEX datasets_job_idx ON datasets (job_id);
CREATE INDEX objects_job_idx ON objects (job_id) WHERE job_id IS NOT NULL;
