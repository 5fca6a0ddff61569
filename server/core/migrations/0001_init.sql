-- datamill's first schema: jobs, their event log, datasets and stored objects.

CREATE SCHEMA IF NOT EXISTS datasets;

CREATE TABLE jobs (
    id               uuid PRIMARY KEY,
    tenant           text        NOT NULL,
    kind             text        NOT NULL CHECK (kind IN ('GENERATE', 'INGEST', 'EXPORT')),
    state            text        NOT NULL CHECK (state IN ('QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
    request_id       text,
    request_hash     text,
    dataset_id       uuid,
    dataset_name     text        NOT NULL DEFAULT '',
    spec             jsonb       NOT NULL,
    progress_done    bigint      NOT NULL DEFAULT 0,
    progress_total   bigint      NOT NULL DEFAULT 0,
    progress_unit    text        NOT NULL DEFAULT 'ROWS',
    attempt          integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL CHECK (max_attempts >= 1),
    cancel_requested boolean     NOT NULL DEFAULT false,
    -- Fencing token of the attempt that holds the lease: every write a worker
    -- makes is conditional on it, so a worker that lost its lease changes nothing.
    lease_token      uuid,
    lease_expires_at timestamptz,
    -- Backoff: a requeued job is not claimed or dispatched before this.
    not_before       timestamptz NOT NULL DEFAULT now(),
    dispatched_at    timestamptz,
    result           jsonb,
    error            jsonb,
    -- Number of the last event; an UPDATE that bumps it records `last_event`
    -- in job_events through the trigger below.
    event_seq        bigint      NOT NULL DEFAULT 1,
    last_event       text        NOT NULL DEFAULT 'CREATED',
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    CONSTRAINT jobs_tenant_request_id_key UNIQUE (tenant, request_id)
);

CREATE INDEX jobs_tenant_list_idx ON jobs (tenant, created_at DESC, id DESC);
CREATE INDEX jobs_queued_idx ON jobs (not_before) WHERE state = 'QUEUED';
CREATE INDEX jobs_running_lease_idx ON jobs (lease_expires_at) WHERE state = 'RUNNING';

CREATE TABLE job_events (
    job_id     uuid        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq        bigint      NOT NULL,
    type       text        NOT NULL,
    -- The job row right after the event (without its spec), so that a replayed
    -- event shows exactly what a live watcher saw.
    snapshot   jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, seq)
);

-- Every change of a job that bumps event_seq is recorded here by trigger, so
-- no code path can change a job without leaving an event.
CREATE FUNCTION datamill_record_job_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.event_seq <> OLD.event_seq THEN
        INSERT INTO job_events (job_id, seq, type, snapshot)
        VALUES (NEW.id, NEW.event_seq, NEW.last_event,
                to_jsonb(NEW) - 'spec' - 'request_hash' - 'lease_token');
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_record_event AFTER INSERT OR UPDATE ON jobs
FOR EACH ROW EXECUTE FUNCTION datamill_record_job_event();

-- Every event is announced on one channel. The payload is the event itself,
-- so a server fans it out to its watchers without a query per event.
CREATE FUNCTION datamill_notify_job_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(
        'datamill_job_events',
        json_build_object(
            'job_id', NEW.job_id, 'seq', NEW.seq, 'type', NEW.type,
            'created_at', NEW.created_at, 'snapshot', NEW.snapshot
        )::text
    );
    RETURN NULL;
END;
$$;

CREATE TRIGGER job_events_notify AFTER INSERT ON job_events
FOR EACH ROW EXECUTE FUNCTION datamill_notify_job_event();

CREATE TABLE datasets (
    id          uuid PRIMARY KEY,
    tenant      text        NOT NULL,
    name        text        NOT NULL,
    table_name  text        NOT NULL UNIQUE,
    columns     jsonb       NOT NULL,
    row_count   bigint      NOT NULL DEFAULT 0,
    ready       boolean     NOT NULL DEFAULT false,
    job_id      uuid        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT datasets_tenant_name_key UNIQUE (tenant, name)
);

CREATE INDEX datasets_tenant_list_idx ON datasets (tenant, created_at DESC, id DESC);

CREATE TABLE objects (
    id           uuid PRIMARY KEY,
    tenant       text        NOT NULL,
    key          text        NOT NULL UNIQUE,
    size_bytes   bigint      NOT NULL,
    sha256       text        NOT NULL,
    content_type text        NOT NULL,
    job_id       uuid REFERENCES jobs (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX objects_tenant_idx ON objects (tenant, created_at DESC);
