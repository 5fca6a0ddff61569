-- Named queries of the JobStore. Each starts with `-- name: NAME` and uses
-- psycopg named parameters. A job change that bumps event_seq sets last_event;
-- the jobs trigger turns it into a job_events row and a NOTIFY.

-- name: insert_job
INSERT INTO jobs (id, tenant, kind, state, request_id, request_hash, dataset_id, dataset_name,
                  spec, progress_total, progress_unit, max_attempts, dispatched_at, parent_id, shard_count,
                  created_by)
VALUES (%(id)s, %(tenant)s, %(kind)s, 'QUEUED', %(request_id)s, %(request_hash)s, %(dataset_id)s,
        %(dataset_name)s, %(spec)s, %(progress_total)s, %(progress_unit)s, %(max_attempts)s, now(),
        %(parent_id)s, %(shard_count)s, %(created_by)s)
ON CONFLICT ON CONSTRAINT jobs_tenant_request_id_key DO NOTHING
RETURNING *;

-- name: get_job_by_request_id
SELECT * FROM jobs WHERE tenant = %(tenant)s AND request_id = %(request_id)s;

-- name: insert_dataset
-- Sent with insert_job in one pipeline: inserts nothing when that insert did nothing (its request_id was taken).
INSERT INTO datasets (id, tenant, name, table_name, columns, job_id)
SELECT %(id)s, %(tenant)s, %(name)s, %(table_name)s, %(columns)s, %(job_id)s
WHERE EXISTS (SELECT FROM jobs WHERE id = %(job_id)s);

-- name: get_job
SELECT * FROM jobs WHERE id = %(id)s AND tenant = %(tenant)s;

-- name: list_jobs
SELECT * FROM jobs
WHERE tenant = %(tenant)s AND parent_id IS NULL
  AND (%(kind)s::text IS NULL OR kind = %(kind)s)
  AND (%(state)s::text IS NULL OR state = %(state)s)
  AND (%(after_created)s::timestamptz IS NULL OR (created_at, id) < (%(after_created)s, %(after_id)s::uuid))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: cancel_queued_job
UPDATE jobs
SET state = 'CANCELLED', cancel_requested = true, finished_at = now(), updated_at = now(),
    event_seq = event_seq + 1, last_event = 'CANCELLED'
WHERE id = %(id)s AND tenant = %(tenant)s AND state = 'QUEUED'
RETURNING *;

-- name: request_cancel_running_job
UPDATE jobs
SET cancel_requested = true, updated_at = now(), event_seq = event_seq + 1, last_event = 'CANCEL_REQUESTED'
WHERE id = %(id)s AND tenant = %(tenant)s AND state = 'RUNNING' AND NOT cancel_requested
RETURNING *;

-- name: delete_pending_dataset
DELETE FROM datasets WHERE id = %(dataset_id)s AND NOT ready RETURNING table_name;

-- name: events_after
SELECT job_id, seq, type, snapshot, created_at FROM job_events
WHERE job_id = %(job_id)s AND seq > %(after)s
ORDER BY seq
LIMIT %(limit)s;

-- name: claim_job
UPDATE jobs
SET state = 'RUNNING', attempt = attempt + 1, lease_token = %(lease_token)s,
    lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
    started_at = coalesce(started_at, now()), updated_at = now(),
    event_seq = event_seq + 1, last_event = 'STARTED'
WHERE id = %(id)s AND state = 'QUEUED' AND NOT cancel_requested AND not_before <= now() AND shard_count = 0
RETURNING *;

-- name: renew_lease
UPDATE jobs
SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
WHERE id = %(id)s AND lease_token = %(lease_token)s AND state = 'RUNNING'
RETURNING cancel_requested;

-- name: checkpoint
UPDATE jobs
SET progress_done = %(done)s, lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
    updated_at = now(), event_seq = event_seq + 1, last_event = 'PROGRESS'
WHERE id = %(id)s AND lease_token = %(lease_token)s AND state = 'RUNNING'
RETURNING cancel_requested;

-- name: finish_job
UPDATE jobs
SET state = %(state)s, result = %(result)s, error = %(error)s, lease_token = NULL, lease_expires_at = NULL,
    progress_done = coalesce(%(done)s, progress_done),
    finished_at = now(), updated_at = now(), event_seq = event_seq + 1, last_event = %(state)s
WHERE id = %(id)s AND lease_token = %(lease_token)s AND state = 'RUNNING'
RETURNING *;

-- name: requeue_job
UPDATE jobs
SET state = 'QUEUED', error = %(error)s, lease_token = NULL, lease_expires_at = NULL, dispatched_at = NULL,
    not_before = now() + make_interval(secs => %(delay_seconds)s),
    updated_at = now(), event_seq = event_seq + 1, last_event = 'REQUEUED'
WHERE id = %(id)s AND lease_token = %(lease_token)s AND state = 'RUNNING'
RETURNING *;

-- name: expired_leases
-- Jobs whose worker stopped renewing; each is then settled under lock_expired.
SELECT id, parent_id FROM jobs
WHERE state = 'RUNNING' AND lease_expires_at < now()
ORDER BY lease_expires_at
LIMIT %(limit)s;

-- name: lock_expired
-- Skipped if another sweeper holds it; re-checked, since it may have been renewed or settled.
SELECT id, attempt, max_attempts, kind, dataset_id, parent_id, cancel_requested FROM jobs
WHERE id = %(id)s AND state = 'RUNNING' AND lease_expires_at < now()
FOR UPDATE SKIP LOCKED;

-- name: requeue_expired
UPDATE jobs
SET state = 'QUEUED', lease_token = NULL, lease_expires_at = NULL, dispatched_at = NULL,
    error = %(error)s, not_before = now() + make_interval(secs => %(delay_seconds)s),
    updated_at = now(), event_seq = event_seq + 1, last_event = 'REQUEUED'
WHERE id = %(id)s AND state = 'RUNNING'
RETURNING *;

-- name: fail_expired
-- Out of attempts (FAILED), or cancelled while its worker was gone (CANCELLED).
UPDATE jobs
SET state = %(state)s, lease_token = NULL, lease_expires_at = NULL, error = %(error)s,
    finished_at = now(), updated_at = now(), event_seq = event_seq + 1, last_event = %(state)s
WHERE id = %(id)s AND state = 'RUNNING'
RETURNING *;

-- name: due_for_dispatch
-- QUEUED jobs never handed to the queue (or whose hand-off may have been
-- lost); marking them dispatched in the same statement keeps sweepers from
-- sending one job twice per round.
UPDATE jobs SET dispatched_at = now()
WHERE id IN (
    SELECT id FROM jobs
    WHERE state = 'QUEUED' AND not_before <= now() AND shard_count = 0
      AND (dispatched_at IS NULL OR dispatched_at < now() - make_interval(secs => %(redispatch_after)s))
    ORDER BY not_before
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id;

-- name: clear_dispatched
UPDATE jobs SET dispatched_at = NULL WHERE id = %(id)s AND state = 'QUEUED';

-- name: get_dataset
SELECT * FROM datasets
WHERE tenant = %(tenant)s AND (name = %(name)s OR id = %(id)s::uuid);

-- name: list_datasets
SELECT * FROM datasets
WHERE tenant = %(tenant)s
  AND (%(after_created)s::timestamptz IS NULL OR (created_at, id) < (%(after_created)s, %(after_id)s::uuid))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: lock_dataset_for_delete
SELECT d.*, EXISTS (
    SELECT 1 FROM jobs j WHERE j.dataset_id = d.id AND j.state IN ('QUEUED', 'RUNNING')
) AS busy
FROM datasets d
WHERE d.tenant = %(tenant)s AND d.id = %(id)s
FOR UPDATE;

-- name: delete_dataset
DELETE FROM datasets WHERE id = %(id)s;

-- name: mark_dataset_ready
UPDATE datasets SET ready = true, row_count = %(row_count)s WHERE id = %(id)s;

-- name: release_job
-- A worker shutting down gives its job back at once instead of letting the
-- lease run out; the attempt it used is returned too, since it did not fail.
UPDATE jobs
SET state = 'QUEUED', attempt = attempt - 1, lease_token = NULL, lease_expires_at = NULL, dispatched_at = NULL,
    not_before = now(), updated_at = now(), event_seq = event_seq + 1, last_event = 'REQUEUED'
WHERE id = %(id)s AND lease_token = %(lease_token)s AND state = 'RUNNING'
RETURNING *;

-- name: shard_ids
SELECT id FROM jobs WHERE parent_id = %(parent_id)s ORDER BY (spec ->> 'start_row')::bigint;

-- name: sync_parent
-- Its own transaction after a shard's claim or chunk: the sum of committed shard
-- progress is exact and monotonic, so a lost update heals at the next one.
WITH total AS (SELECT coalesce(sum(progress_done), 0) AS done FROM jobs WHERE parent_id = %(id)s)
UPDATE jobs
SET state = 'RUNNING', attempt = greatest(attempt, 1), started_at = coalesce(started_at, now()),
    progress_done = total.done, updated_at = now(), event_seq = event_seq + 1,
    last_event = CASE WHEN state = 'QUEUED' THEN 'STARTED' ELSE 'PROGRESS' END
FROM total
WHERE id = %(id)s AND state IN ('QUEUED', 'RUNNING') AND (state = 'QUEUED' OR progress_done < total.done)
RETURNING id;

-- name: lock_job
SELECT id FROM jobs WHERE id = %(id)s FOR UPDATE;

-- name: count_shard_success
-- Locks the parent row, so that of two shards finishing at once exactly one sees the last count.
-- A parent being stopped (cancel_requested) counts no more successes.
UPDATE jobs SET shards_done = shards_done + 1
WHERE id = %(id)s AND state IN ('QUEUED', 'RUNNING') AND NOT cancel_requested
RETURNING shards_done, shard_count;

-- name: lock_live_parent
SELECT id FROM jobs
WHERE id = %(id)s AND tenant = %(tenant)s AND shard_count > 0 AND state IN ('QUEUED', 'RUNNING')
FOR UPDATE;

-- name: stop_parent
-- Keeps the first outcome in `error`; announced (CANCEL_REQUESTED) only for CancelJob.
UPDATE jobs
SET cancel_requested = true, error = coalesce(error, %(error)s), updated_at = now(),
    event_seq = event_seq + CASE WHEN %(announce)s AND NOT cancel_requested THEN 1 ELSE 0 END,
    last_event = CASE WHEN %(announce)s AND NOT cancel_requested THEN 'CANCEL_REQUESTED' ELSE last_event END
WHERE id = %(id)s AND state IN ('QUEUED', 'RUNNING')
RETURNING *;

-- name: finish_parent
UPDATE jobs
SET state = %(state)s, result = %(result)s, error = %(error)s, progress_done = coalesce(%(done)s, progress_done),
    cancel_requested = cancel_requested OR %(state)s = 'CANCELLED',
    started_at = coalesce(started_at, now()), finished_at = now(), updated_at = now(),
    event_seq = event_seq + 1, last_event = %(state)s
WHERE id = %(id)s AND state IN ('QUEUED', 'RUNNING')
RETURNING *;

-- name: cancel_queued_shards
UPDATE jobs
SET state = 'CANCELLED', cancel_requested = true, finished_at = now(), updated_at = now(),
    event_seq = event_seq + 1, last_event = 'CANCELLED'
WHERE parent_id = %(parent_id)s AND state = 'QUEUED'
RETURNING id;

-- name: stop_running_shards
UPDATE jobs
SET cancel_requested = true, updated_at = now(), event_seq = event_seq + 1, last_event = 'CANCEL_REQUESTED'
WHERE parent_id = %(parent_id)s AND state = 'RUNNING' AND NOT cancel_requested
RETURNING id;

-- name: other_running_shards
SELECT count(*) AS running FROM jobs
WHERE parent_id = %(parent_id)s AND state = 'RUNNING' AND id IS DISTINCT FROM %(shard_id)s::uuid;
