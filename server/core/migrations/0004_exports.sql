-- Exports: a job that writes a dataset into a file in the object store.
--
-- An export streams into a multipart upload at a key of its own attempt. Until the
-- job commits its success, the upload (or, after a crash between completing it and
-- that commit, the object) is recorded here, so that the next attempt, or the
-- sweeper once the job has ended otherwise, removes it: no failed or cancelled
-- export leaves an object or an open multipart upload behind.

CREATE TABLE export_parts_pending (
    job_id           uuid        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt          integer     NOT NULL,
    object_key       text        NOT NULL UNIQUE,
    multipart_handle text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, attempt)
);

-- Bytes written by a job that writes a file (Export), beside the rows in progress_done.
ALTER TABLE jobs ADD COLUMN progress_bytes bigint NOT NULL DEFAULT 0;

-- Which stored object a key is, for DatasetService.ReadObject: one lookup by tenant and key.
CREATE INDEX objects_tenant_key_idx ON objects (tenant, key);
