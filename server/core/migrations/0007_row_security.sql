-- Row-level security: a second guard behind every query's own tenant filter.
--
-- Inside an RPC each transaction runs set_config('datamill.tenant', <tenant>, true),
-- and these policies then hide (USING) and refuse to write (WITH CHECK) rows of any
-- other tenant. Unset or empty (workers, the sweeper, operator commands, migrations)
-- means every tenant. FORCE applies the policies to the tables' owner as well, so
-- datamill must connect as an ordinary role: superusers and BYPASSRLS roles skip them.

CREATE FUNCTION datamill_tenant_visible(row_tenant text) RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT coalesce(nullif(current_setting('datamill.tenant', true), ''), row_tenant) = row_tenant $$;

-- Guards one table with a `tenant` column: later migrations call it for each new tenant table.
CREATE FUNCTION datamill_guard_tenant_table(tab regclass) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tab);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tab);
    EXECUTE format(
        'CREATE POLICY tenant_scope ON %s USING (datamill_tenant_visible(tenant)) WITH CHECK (datamill_tenant_visible(tenant))',
        tab
    );
END $$;

SELECT datamill_guard_tenant_table(t) FROM unnest('{jobs, datasets, objects, uploads, api_keys}'::regclass[]) AS t;
