-- 0022_routines: routines (work a user scheduled), their runs, and the time
-- zone each person's schedules are read in. A run is recorded before it
-- starts; UNIQUE (routine_id, scheduled_at) is what keeps any run from
-- happening twice.

CREATE TABLE routines (
    id           INTEGER PRIMARY KEY,
    principal_id INTEGER NOT NULL REFERENCES principals (id),
    name         TEXT    NOT NULL DEFAULT '',
    schedule     TEXT    NOT NULL,
    tz           TEXT    NOT NULL DEFAULT 'UTC',
    prompt       TEXT    NOT NULL,
    dest         TEXT    NOT NULL DEFAULT 'here' CHECK (dest IN ('here', 'dm')),
    channel      TEXT    NOT NULL DEFAULT '',
    reply_to     TEXT    NOT NULL DEFAULT '',
    notify_to    TEXT    NOT NULL DEFAULT '',
    state        TEXT    NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'paused', 'done')),
    reason       TEXT    NOT NULL DEFAULT '',
    failures     INTEGER NOT NULL DEFAULT 0,
    next_at      INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL
);
CREATE INDEX routines_due ON routines (next_at) WHERE state = 'active';
CREATE INDEX routines_principal ON routines (principal_id);

CREATE TABLE routine_runs (
    id           INTEGER PRIMARY KEY,
    routine_id   INTEGER NOT NULL REFERENCES routines (id),
    scheduled_at INTEGER NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('started', 'done', 'failed', 'missed')),
    inbound_id   INTEGER REFERENCES inbound (id),
    reason       TEXT    NOT NULL DEFAULT '',
    created_at   INTEGER NOT NULL,
    finished_at  INTEGER NOT NULL DEFAULT 0,
    UNIQUE (routine_id, scheduled_at)
);
CREATE INDEX routine_runs_open ON routine_runs (id) WHERE state = 'started';

CREATE TABLE principal_zones (
    principal_id INTEGER PRIMARY KEY REFERENCES principals (id),
    tz           TEXT    NOT NULL
);
