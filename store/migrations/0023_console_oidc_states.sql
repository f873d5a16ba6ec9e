-- 0023_console_oidc_states: "Sign in with Slack" started and not finished
-- yet, so that a restart in between does not fail it. Keyed by the SHA-256
-- of the state (the browser holds the state in a cookie); each is taken
-- once, and expires.

CREATE TABLE console_oidc_states (
    state_hash BLOB    PRIMARY KEY,
    nonce      TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX console_oidc_states_expires ON console_oidc_states (expires_at);
