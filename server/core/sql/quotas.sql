-- name: tenant_quotas
SELECT concurrent_jobs, generate_rows, upload_bytes, datasets FROM tenant_quotas WHERE tenant = %(tenant)s;

-- name: lock_tenant
-- Serialises admissions of one tenant until the transaction ends; other tenants are not held.
SELECT pg_advisory_xact_lock(hashtextextended('datamill.quota:' || %(tenant)s, 0));

-- name: count_live_jobs
-- Bounded: stops counting one past the limit.
SELECT count(*) AS n FROM (
    SELECT 1 FROM jobs
    WHERE tenant = %(tenant)s AND state IN ('QUEUED', 'RUNNING') AND parent_id IS NULL
    LIMIT %(cap)s
) live;

-- name: count_datasets
SELECT count(*) AS n FROM (SELECT 1 FROM datasets WHERE tenant = %(tenant)s LIMIT %(cap)s) owned;

-- name: ensure_quota_row
INSERT INTO tenant_quotas (tenant) VALUES (%(tenant)s) ON CONFLICT (tenant) DO NOTHING;

-- name: tenant_quota_row
SELECT tenant, concurrent_jobs, generate_rows, upload_bytes, datasets FROM tenant_quotas WHERE tenant = %(tenant)s;

-- name: list_quotas
SELECT tenant, concurrent_jobs, generate_rows, upload_bytes, datasets FROM tenant_quotas ORDER BY tenant;
