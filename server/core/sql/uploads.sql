-- Named queries of the UploadStore (see queries.sql for the conventions).
-- Writes on behalf of a stream are fenced by its generation.

-- name: insert_upload
INSERT INTO uploads (id, tenant, state, request_id, request_hash, header, dataset_name, object_key,
                     multipart_handle, part_size, sha256_state, expires_at, created_by)
VALUES (%(id)s, %(tenant)s, 'OPEN', %(request_id)s, %(request_hash)s, %(header)s, %(dataset_name)s,
        %(object_key)s, %(multipart_handle)s, %(part_size)s, %(sha256_state)s,
        now() + make_interval(secs => %(ttl_seconds)s), %(created_by)s)
ON CONFLICT ON CONSTRAINT uploads_tenant_request_id_key DO NOTHING
RETURNING *;

-- name: attach_upload_by_id
UPDATE uploads SET generation = generation + 1, updated_at = now(),
    expires_at = CASE WHEN state = 'OPEN' THEN now() + make_interval(secs => %(ttl_seconds)s) ELSE expires_at END
WHERE id = %(id)s AND tenant = %(tenant)s
RETURNING *;

-- name: attach_upload_by_request_id
UPDATE uploads SET generation = generation + 1, updated_at = now(),
    expires_at = CASE WHEN state = 'OPEN' THEN now() + make_interval(secs => %(ttl_seconds)s) ELSE expires_at END
WHERE tenant = %(tenant)s AND request_id = %(request_id)s
RETURNING *;

-- name: upload_parts
SELECT number, size, etag FROM upload_parts WHERE upload_id = %(id)s ORDER BY number;

-- name: commit_part
UPDATE uploads
SET committed_offset = %(committed_offset)s, sha256_state = %(sha256_state)s, updated_at = now(),
    expires_at = now() + make_interval(secs => %(ttl_seconds)s)
WHERE id = %(id)s AND generation = %(generation)s AND state = 'OPEN'
  AND committed_offset = %(committed_offset)s - %(size)s
RETURNING id;

-- name: upsert_part
INSERT INTO upload_parts (upload_id, number, size, etag)
VALUES (%(id)s, %(number)s, %(size)s, %(etag)s)
ON CONFLICT (upload_id, number) DO UPDATE SET size = EXCLUDED.size, etag = EXCLUDED.etag;

-- name: lock_open_upload
SELECT * FROM uploads WHERE id = %(id)s AND generation = %(generation)s AND state = 'OPEN' FOR UPDATE;

-- name: complete_upload
UPDATE uploads
SET state = 'COMPLETED', size_bytes = %(size_bytes)s, sha256 = %(sha256)s, job_id = %(job_id)s, updated_at = now()
WHERE id = %(id)s
RETURNING *;

-- name: abort_upload
UPDATE uploads
SET state = 'ABORTED', error = %(error)s, updated_at = now(),
    expires_at = now() + make_interval(secs => %(ttl_seconds)s)
WHERE id = %(id)s AND state = 'OPEN'
RETURNING *;

-- name: expired_uploads
SELECT * FROM uploads WHERE state <> 'COMPLETED' AND expires_at < now()
ORDER BY expires_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: delete_upload
DELETE FROM uploads WHERE id = %(id)s;
