-- name: tenant_quotas
SELECT concurrent_jobs, generate_rows, upload_bytes, datasets FROM tenant_quotas WHERE tenant = %(tenant)s;

-- name: lock_tenant_quotas
-- Serialises admissions of one tenant until the transaction ends (other tenants are not held), and reads the
-- tenant's own quotas in the same round trip: a NULL column, or no row, is the server's default.
SELECT pg_advisory_xact_lock(hashtextextended('datamill.quota:' || %(tenant)s, 0)) AS locked,
       q.concurrent_jobs, q.generate_rows, q.upload_bytes, q.datasets
FROM (SELECT 1) AS one LEFT JOIN tenant_quotas q ON q.tenant = %(tenant)s;

-- name: count_usage
-- A tenant's live jobs and (with %(dataset)s) datasets, each count bounded: it stops one past the quota, and a quota
-- of 0 (unlimited) skips it. The quotas are the tenant's own (a NULL column, or no row: the server's default,
-- passed in), worked out here so that admission sends this together with the lock in one round trip; it is still
-- its own statement after the lock, so its snapshot is taken once the lock is held.
SELECT
    (SELECT count(*) FROM (
        SELECT 1 FROM jobs
        WHERE tenant = %(tenant)s AND state IN ('QUEUED', 'RUNNING') AND parent_id IS NULL
        LIMIT caps.jobs_cap
    ) live) AS concurrent_jobs,
    (SELECT count(*) FROM (SELECT 1 FROM datasets WHERE tenant = %(tenant)s LIMIT caps.datasets_cap) held) AS datasets
FROM (
    SELECT CASE WHEN jobs = 0 THEN 0 ELSE jobs + 1 END AS jobs_cap,
           CASE WHEN datasets = 0 OR NOT %(dataset)s THEN 0 ELSE datasets + 1 END AS datasets_cap
    FROM (SELECT coalesce(q.concurrent_jobs, %(jobs)s) AS jobs, coalesce(q.datasets, %(datasets)s) AS datasets
          FROM (SELECT 1) AS one LEFT JOIN tenant_quotas q ON q.tenant = %(tenant)s) AS quotas
) AS caps;

-- name: ensure_quota_row
INSERT INTO tenant_quotas (tenant) VALUES (%(tenant)s) ON CONFLICT (tenant) DO NOTHING;

-- name: tenant_quota_row
SELECT tenant, concurrent_jobs, generate_rows, upload_bytes, datasets FROM tenant_quotas WHERE tenant = %(tenant)s;

-- name: list_quotas
SELECT tenant, concurrent_jobs, generate_rows, upload_bytes, datasets FROM tenant_quotas ORDER BY tenant;
