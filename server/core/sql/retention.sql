-- name: claim_run
-- True for exactly one caller per interval, whatever the number of server replicas.
INSERT INTO maintenance_runs AS m (name, last_started) VALUES (%(name)s, now())
ON CONFLICT (name) DO UPDATE SET last_started = now()
    WHERE m.last_started < now() - make_interval(secs => %(interval)s)
RETURNING name;

-- name: lock_expired_jobs
-- A batch of expired top-level jobs, locked; SKIP LOCKED lets other workers take the next ones. A job whose dataset
-- a live job still reads (an export) waits for a later round.
SELECT j.id FROM jobs j
WHERE j.parent_id IS NULL
  AND j.finished_at < now() - make_interval(secs => %(ttl_seconds)s)
  AND j.state IN ('SUCCEEDED', 'FAILED', 'CANCELLED')
  AND NOT EXISTS (
      SELECT 1 FROM datasets d JOIN jobs reader ON reader.dataset_id = d.id
      WHERE d.job_id = j.id AND reader.state IN ('QUEUED', 'RUNNING')
  )
ORDER BY j.finished_at
LIMIT %(limit)s
FOR UPDATE OF j SKIP LOCKED;

-- name: objects_of_jobs
SELECT key FROM objects WHERE job_id = ANY(%(ids)s);

-- name: delete_objects_of_jobs
DELETE FROM objects WHERE job_id = ANY(%(ids)s);

-- name: delete_datasets_of_jobs
DELETE FROM datasets WHERE job_id = ANY(%(ids)s) RETURNING table_name;

-- name: delete_jobs
-- Events, shards and pending export parts go with them (ON DELETE CASCADE).
DELETE FROM jobs WHERE id = ANY(%(ids)s);
