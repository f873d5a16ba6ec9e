-- 0017_console_sessions: console sign-ins survive a restart (the SHA-256 of
-- a session's cookie value, who, and when it expires). The console reads
-- the SQLite store only for now; the table keeps the numbering.

CREATE TABLE console_sessions (
    id_hash    BYTEA  PRIMARY KEY,
    who        TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);
