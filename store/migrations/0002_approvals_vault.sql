-- Approvals keyed by (turn, call, description), so that one call may ask for
-- several requests and a restarted call finds the decision it already has;
-- they carry the conversation to ask in. Vault entries (sealed), the key
-- check, and the audit log of credential use.

DROP INDEX approvals_pending;
DROP TABLE approvals;
CREATE TABLE approvals (
    id           INTEGER PRIMARY KEY,
    turn_id      INTEGER NOT NULL REFERENCES turns (id),
    call_id      TEXT    NOT NULL,
    tool         TEXT    NOT NULL,
    description  TEXT    NOT NULL,
    principal_id INTEGER NOT NULL REFERENCES principals (id),
    channel      TEXT    NOT NULL DEFAULT '',
    thread       TEXT    NOT NULL DEFAULT '',
    reply_to     TEXT    NOT NULL DEFAULT '',
    state        TEXT    NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'approved', 'denied', 'expired')),
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    decided_at   INTEGER NOT NULL DEFAULT 0,
    decided_by   TEXT    NOT NULL DEFAULT '',
    UNIQUE (turn_id, call_id, description)
);
CREATE INDEX approvals_pending ON approvals (expires_at) WHERE state = 'pending';

-- One sealed credential of one user. Every column but created_at and
-- last_used_at is bound by the AEAD: editing it makes the entry unopenable.
CREATE TABLE vault_entries (
    user         TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    hosts        TEXT    NOT NULL, -- JSON array
    injection    TEXT    NOT NULL, -- JSON object
    key_id       BLOB    NOT NULL,
    salt         BLOB    NOT NULL,
    nonce        BLOB    NOT NULL,
    ciphertext   BLOB    NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user, name)
) WITHOUT ROWID;

CREATE TABLE vault_meta (
    k TEXT PRIMARY KEY,
    v BLOB NOT NULL
) WITHOUT ROWID;

CREATE TABLE vault_audit (
    id      INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    user    TEXT    NOT NULL,
    name    TEXT    NOT NULL,
    host    TEXT    NOT NULL,
    tool    TEXT    NOT NULL,
    allowed INTEGER NOT NULL CHECK (allowed IN (0, 1)),
    reason  TEXT    NOT NULL
);
