-- Resumable uploads: a client's file streamed into an object-store multipart
-- upload, part by part. A part is recorded here only once the object store has
-- it, together with the SHA-256 state of every byte up to it, so a stream that
-- breaks (or a server that dies) resumes from committed_offset in any process.

CREATE TABLE uploads (
    id               uuid PRIMARY KEY,
    tenant           text        NOT NULL,
    state            text        NOT NULL CHECK (state IN ('OPEN', 'COMPLETED', 'ABORTED')),
    request_id       text,
    request_hash     text        NOT NULL,
    -- The header as first sent (format, options, dataset name, columns, ...).
    header           jsonb       NOT NULL,
    dataset_name     text        NOT NULL,
    object_key       text        NOT NULL UNIQUE,
    -- The object store's handle of the multipart upload (S3's UploadId).
    multipart_handle text        NOT NULL,
    part_size        bigint      NOT NULL CHECK (part_size > 0),
    committed_offset bigint      NOT NULL DEFAULT 0,
    -- SHA-256 state (rehashes) of bytes [0, committed_offset).
    sha256_state     bytea       NOT NULL,
    -- Bumped by every stream that attaches; a write by an older stream changes nothing.
    generation       integer     NOT NULL DEFAULT 1,
    size_bytes       bigint,
    sha256           text,
    job_id           uuid REFERENCES jobs (id) ON DELETE SET NULL,
    error            jsonb,
    -- An OPEN upload untouched until then is aborted (object store and rows).
    expires_at       timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uploads_tenant_request_id_key UNIQUE (tenant, request_id)
);

CREATE INDEX uploads_expiry_idx ON uploads (expires_at) WHERE state <> 'COMPLETED';

CREATE TABLE upload_parts (
    upload_id uuid    NOT NULL REFERENCES uploads (id) ON DELETE CASCADE,
    number    integer NOT NULL CHECK (number BETWEEN 1 AND 10000),
    size      bigint  NOT NULL,
    etag      text    NOT NULL,
    PRIMARY KEY (upload_id, number)
);
