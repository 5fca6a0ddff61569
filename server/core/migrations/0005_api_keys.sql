-- API keys: long-lived credentials for services, each bound to one tenant and one role.
--
-- A key is shown once, at creation: `dmk_<id>_<secret>`, the secret 32 random bytes.
-- Only a salted hash of the secret is stored (HMAC-SHA256 keyed by a per-key salt:
-- with 256 random bits there is nothing to brute-force, so a slow hash would only
-- slow every call down). A revoked key stays, for the audit trail.

CREATE TABLE api_keys (
    id          uuid        PRIMARY KEY,
    tenant      text        NOT NULL,
    role        text        NOT NULL CHECK (role IN ('viewer', 'editor', 'admin')),
    name        text        NOT NULL,
    salt        bytea       NOT NULL,
    secret_hash bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE INDEX api_keys_tenant_idx ON api_keys (tenant, created_at DESC);
