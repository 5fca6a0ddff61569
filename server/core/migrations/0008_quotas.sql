-- Per-tenant quotas. A NULL column (or no row) means the server's default
-- (DATAMILL_QUOTA_*); 0 means unlimited. Set with `datamill quotas set`.

CREATE TABLE tenant_quotas (
    tenant          text        PRIMARY KEY,
    concurrent_jobs integer     CHECK (concurrent_jobs >= 0),
    generate_rows   bigint      CHECK (generate_rows >= 0),
    upload_bytes    bigint      CHECK (upload_bytes >= 0),
    datasets        integer     CHECK (datasets >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Counting a tenant's live top-level jobs at admission reads only them.
CREATE INDEX jobs_tenant_live_idx ON jobs (tenant) WHERE state IN ('QUEUED', 'RUNNING') AND parent_id IS NULL;

-- The second guard of migration 0007 covers quotas too: an RPC reads only its own tenant's row.
SELECT datamill_guard_tenant_table('tenant_quotas');
