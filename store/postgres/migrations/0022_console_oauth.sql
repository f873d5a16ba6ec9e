-- 0022_console_oauth: what the console and the MCP authorization flow keep
-- (SQLite's 0020, 0023 and 0024): the vault audit log's filters, "Sign in
-- with Slack" in progress, the OAuth connect links, registered clients and
-- connections; and the index of the console's conversation search.

CREATE INDEX vault_audit_user ON vault_audit ("user", id);
CREATE INDEX vault_audit_at ON vault_audit (at);

-- Keyed by the SHA-256 of the state; each is taken once, and expires.
CREATE TABLE console_oidc_states (
    state_hash BYTEA  PRIMARY KEY,
    nonce      TEXT   NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX console_oidc_states_expires ON console_oidc_states (expires_at);

-- One row per connect link: id is the SHA-256 of the state (hex), bound to
-- a principal and a server, started once (started_at), deleted by the
-- callback, refused after expires_at.
CREATE TABLE oauth_states (
    id         TEXT   PRIMARY KEY,
    principal  TEXT   NOT NULL,
    server     TEXT   NOT NULL,
    verifier   TEXT   NOT NULL,
    issuer     TEXT   NOT NULL,
    auth_url   TEXT   NOT NULL,
    token_url  TEXT   NOT NULL,
    revoke_url TEXT   NOT NULL DEFAULT '',
    client_id  TEXT   NOT NULL,
    resource   TEXT   NOT NULL,
    scopes     TEXT   NOT NULL DEFAULT '',
    browser    TEXT   NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    started_at BIGINT NOT NULL DEFAULT 0,
    expires_at BIGINT NOT NULL
);
CREATE INDEX oauth_states_expiry ON oauth_states (expires_at);

CREATE TABLE oauth_clients (
    server        TEXT   NOT NULL,
    issuer        TEXT   NOT NULL,
    client_id     TEXT   NOT NULL,
    client_secret TEXT   NOT NULL DEFAULT '',
    registered_at BIGINT NOT NULL,
    PRIMARY KEY (server, issuer)
);

-- A user's connection to an MCP server, without its tokens (the vault
-- holds them).
CREATE TABLE oauth_connections (
    server       TEXT   NOT NULL,
    principal    TEXT   NOT NULL,
    issuer       TEXT   NOT NULL,
    client_id    TEXT   NOT NULL,
    token_url    TEXT   NOT NULL,
    revoke_url   TEXT   NOT NULL DEFAULT '',
    resource     TEXT   NOT NULL DEFAULT '',
    scopes       TEXT   NOT NULL DEFAULT '',
    expires_at   BIGINT NOT NULL DEFAULT 0,
    connected_at BIGINT NOT NULL,
    refreshed_at BIGINT NOT NULL,
    PRIMARY KEY (server, principal)
);

-- The conversation search (ILIKE '%text%' on the stored messages) uses a
-- trigram index when the server offers pg_trgm and this role may install
-- it (it is a trusted extension since PostgreSQL 13); without it the
-- search still works, by scanning the messages (README.md, PostgreSQL).
DO $$
DECLARE
    ns TEXT;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS pg_trgm;
        EXCEPTION WHEN insufficient_privilege OR unique_violation OR duplicate_object THEN
            NULL;
        END;
    END IF;
    SELECT n.nspname INTO ns FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm';
    IF ns IS NOT NULL THEN
        EXECUTE format('CREATE INDEX messages_content_trgm ON messages USING gin (content %I.gin_trgm_ops)', ns);
    END IF;
END
$$;
