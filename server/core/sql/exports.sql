-- Named queries of exports: the pending multipart uploads of running exports,
-- the stored objects they produce, and their progress.

-- name: pending_of_job
SELECT attempt, object_key, multipart_handle FROM export_parts_pending
WHERE job_id = %(job_id)s
ORDER BY attempt;

-- name: is_pending
SELECT 1 FROM export_parts_pending WHERE job_id = %(job_id)s AND attempt = %(attempt)s;

-- name: insert_pending
INSERT INTO export_parts_pending (job_id, attempt, object_key, multipart_handle)
VALUES (%(job_id)s, %(attempt)s, %(object_key)s, %(multipart_handle)s);

-- name: delete_pending
DELETE FROM export_parts_pending WHERE job_id = %(job_id)s AND attempt = %(attempt)s;

-- name: abandoned_pending
-- Uploads of exports that have ended: a success removes its own row when it commits, so
-- what is left belongs to a failed, cancelled or superseded attempt. The sweeper removes
-- them from the object store, then these rows.
SELECT p.job_id, p.attempt, p.object_key, p.multipart_handle
FROM export_parts_pending p
JOIN jobs j ON j.id = p.job_id
WHERE j.state IN ('SUCCEEDED', 'FAILED', 'CANCELLED')
ORDER BY p.created_at
LIMIT %(limit)s;

-- name: export_progress
UPDATE jobs
SET progress_done = %(done)s, progress_bytes = %(bytes)s,
    lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
    updated_at = now(), event_seq = event_seq + 1, last_event = 'PROGRESS'
WHERE id = %(id)s AND lease_token = %(lease_token)s AND state = 'RUNNING'
RETURNING cancel_requested;

-- name: final_size
-- In the success transaction: the file's size, recorded with the SUCCEEDED event that follows.
UPDATE jobs SET progress_bytes = %(bytes)s WHERE id = %(id)s AND lease_token = %(lease_token)s;

-- name: insert_object
INSERT INTO objects (id, tenant, key, size_bytes, sha256, content_type, job_id)
VALUES (%(id)s, %(tenant)s, %(key)s, %(size_bytes)s, %(sha256)s, %(content_type)s, %(job_id)s);

-- name: get_object
SELECT key, size_bytes, sha256, content_type FROM objects
WHERE tenant = %(tenant)s AND key = %(key)s;
