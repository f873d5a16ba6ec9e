-- 0024_oauth: the MCP authorization flow (issue 13).
--
-- oauth_states: one row per connect link sent to a user. id is the
-- SHA-256 of the state (the raw state is only in the link and the
-- provider's redirect); it is bound to a principal and a server, used to
-- start once (started_at), consumed by the callback (the row is deleted)
-- and refused after expires_at.
CREATE TABLE oauth_states (
    id            TEXT    PRIMARY KEY,
    principal     TEXT    NOT NULL,
    server        TEXT    NOT NULL,
    verifier      TEXT    NOT NULL,
    issuer        TEXT    NOT NULL,
    auth_url      TEXT    NOT NULL,
    token_url     TEXT    NOT NULL,
    revoke_url    TEXT    NOT NULL DEFAULT '',
    client_id     TEXT    NOT NULL,
    resource      TEXT    NOT NULL,
    scopes        TEXT    NOT NULL DEFAULT '',
    browser       TEXT    NOT NULL DEFAULT '',
    created_at    INTEGER NOT NULL,
    started_at    INTEGER NOT NULL DEFAULT 0,
    expires_at    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX oauth_states_expiry ON oauth_states (expires_at);

-- oauth_clients: the client Talon registered (RFC 7591) with an
-- authorization server for an MCP server, kept so it is not registered
-- again on every connection.
CREATE TABLE oauth_clients (
    server        TEXT    NOT NULL,
    issuer        TEXT    NOT NULL,
    client_id     TEXT    NOT NULL,
    client_secret TEXT    NOT NULL DEFAULT '',
    registered_at INTEGER NOT NULL,
    PRIMARY KEY (server, issuer)
) WITHOUT ROWID;

-- oauth_connections: a user's connection to an MCP server, without its
-- tokens (they are vault entries of that user): where to refresh and
-- revoke them, and when the access token expires.
CREATE TABLE oauth_connections (
    server        TEXT    NOT NULL,
    principal     TEXT    NOT NULL,
    issuer        TEXT    NOT NULL,
    client_id     TEXT    NOT NULL,
    token_url     TEXT    NOT NULL,
    revoke_url    TEXT    NOT NULL DEFAULT '',
    resource      TEXT    NOT NULL DEFAULT '',
    scopes        TEXT    NOT NULL DEFAULT '',
    expires_at    INTEGER NOT NULL DEFAULT 0,
    connected_at  INTEGER NOT NULL,
    refreshed_at  INTEGER NOT NULL,
    PRIMARY KEY (server, principal)
) WITHOUT ROWID;
