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

ALTER TABLE jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE jobs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_scope ON jobs USING (datamill_tenant_visible(tenant)) WITH CHECK (datamill_tenant_visible(tenant));

ALTER TABLE datasets ENABLE ROW LEVEL SECURITY;
ALTER TABLE datasets FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_scope ON datasets USING (datamill_tenant_visible(tenant)) WITH CHECK (datamill_tenant_visible(tenant));

ALTER TABLE objects ENABLE ROW LEVEL SECURITY;
ALTER TABLE objects FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_scope ON objects USING (datamill_tenant_visible(tenant)) WITH CHECK (datamill_tenant_visible(tenant));

ALTER TABLE uploads ENABLE ROW LEVEL SECURITY;
ALTER TABLE uploads FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_scope ON uploads USING (datamill_tenant_visible(tenant)) WITH CHECK (datamill_tenant_visible(tenant));

ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_scope ON api_keys USING (datamill_tenant_visible(tenant)) WITH CHECK (datamill_tenant_visible(tenant));
