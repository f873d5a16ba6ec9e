-- 0017_console_sessions: console sign-ins survive a restart. Only the
-- SHA-256 of a session's cookie value is stored (reading the database does
-- not sign anyone in), with who signed in and when it expires.

CREATE TABLE console_sessions (
    id_hash    BLOB    PRIMARY KEY,
    who        TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);
