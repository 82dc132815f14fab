-- API keys for the HTTP API, and the audit log of operator actions.

-- A key is shown once when created; only its SHA-256 is kept, with a short prefix to recognise
-- it by. Scopes: 'trigger' (trigger runs and read runs), 'read' (read everything), 'admin'
-- (everything). A revoked key stays listed, with revoked_at set.
CREATE TABLE kiln.api_keys (
    id           uuid PRIMARY KEY DEFAULT kiln.uuid_v7(),
    name         text NOT NULL CHECK (name <> '' AND length(name) <= 100),
    prefix       text NOT NULL,
    secret_hash  bytea NOT NULL UNIQUE CHECK (length(secret_hash) = 32),
    scope        text NOT NULL CHECK (scope IN ('trigger', 'read', 'admin')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
-- Names are unique among live keys, so a revoked name can be used again.
CREATE UNIQUE INDEX api_keys_live_name ON kiln.api_keys (name) WHERE revoked_at IS NULL;

-- Every state-changing operator action: who (an API key's name, or the CLI's user), what, on what.
CREATE TABLE kiln.audit_log (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at     timestamptz NOT NULL DEFAULT now(),
    actor  text NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}'
);
