-- 0001_init: principals, sessions, the inbox, history, turns, tool calls,
-- the outbox and approvals. Times are unix milliseconds (INTEGER).

-- One person on one platform.
CREATE TABLE principals (
    id         INTEGER PRIMARY KEY,
    platform   TEXT    NOT NULL,
    workspace  TEXT    NOT NULL DEFAULT '',
    user       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (platform, workspace, user)
);

-- The conversation one principal has in one place. Exactly one session per
-- (principal, channel, thread) is active; /new retires it and starts another.
CREATE TABLE sessions (
    id           INTEGER PRIMARY KEY,
    principal_id INTEGER NOT NULL REFERENCES principals (id),
    channel      TEXT    NOT NULL DEFAULT '',
    thread       TEXT    NOT NULL DEFAULT '',
    active       INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    summary      TEXT    NOT NULL DEFAULT '',
    summary_upto INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    retired_at   INTEGER
);
CREATE UNIQUE INDEX sessions_active_key
    ON sessions (principal_id, channel, thread) WHERE active = 1;

-- Accepted platform messages. The UNIQUE dedupe_key is the dedupe mechanism.
CREATE TABLE inbound (
    id           INTEGER PRIMARY KEY,
    dedupe_key   TEXT    NOT NULL UNIQUE,
    principal_id INTEGER NOT NULL REFERENCES principals (id),
    channel      TEXT    NOT NULL DEFAULT '',
    thread       TEXT    NOT NULL DEFAULT '',
    text         TEXT    NOT NULL DEFAULT '',
    reply_to     TEXT    NOT NULL DEFAULT '',
    state        TEXT    NOT NULL DEFAULT 'queued'
                 CHECK (state IN ('queued', 'running', 'done', 'failed')),
    received_at  INTEGER NOT NULL,
    accepted_at  INTEGER NOT NULL,
    turn_id      INTEGER REFERENCES turns (id)
);
CREATE INDEX inbound_unfinished ON inbound (id) WHERE state IN ('queued', 'running');

-- One answer to one inbound: the model calls and tool calls it took.
CREATE TABLE turns (
    id          INTEGER PRIMARY KEY,
    session_id  INTEGER NOT NULL REFERENCES sessions (id),
    inbound_id  INTEGER NOT NULL UNIQUE REFERENCES inbound (id),
    state       TEXT    NOT NULL DEFAULT 'running'
                CHECK (state IN ('running', 'done', 'failed')),
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    error       TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX turns_session ON turns (session_id);

-- A session's history; content is the JSON of an llm.Message.
CREATE TABLE messages (
    id         INTEGER PRIMARY KEY,
    session_id INTEGER NOT NULL REFERENCES sessions (id),
    turn_id    INTEGER REFERENCES turns (id),
    role       TEXT    NOT NULL,
    content    TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX messages_session ON messages (session_id, id);

-- One model call of a turn.
CREATE TABLE turn_steps (
    turn_id       INTEGER NOT NULL REFERENCES turns (id),
    step          INTEGER NOT NULL,
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    stop_reason   TEXT    NOT NULL DEFAULT '',
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (turn_id, step)
) WITHOUT ROWID;

-- The life of one tool call.
CREATE TABLE tool_calls (
    id          INTEGER PRIMARY KEY,
    turn_id     INTEGER NOT NULL REFERENCES turns (id),
    step        INTEGER NOT NULL,
    call_id     TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    arguments   TEXT    NOT NULL DEFAULT '',
    result      TEXT    NOT NULL DEFAULT '',
    is_error    INTEGER NOT NULL DEFAULT 0 CHECK (is_error IN (0, 1)),
    state       TEXT    NOT NULL DEFAULT 'started'
                CHECK (state IN ('started', 'finished')),
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    UNIQUE (turn_id, call_id)
);

-- Replies, persisted before delivery.
CREATE TABLE outbound (
    id           INTEGER PRIMARY KEY,
    inbound_id   INTEGER REFERENCES inbound (id),
    turn_id      INTEGER REFERENCES turns (id),
    principal_id INTEGER NOT NULL REFERENCES principals (id),
    channel      TEXT    NOT NULL DEFAULT '',
    thread       TEXT    NOT NULL DEFAULT '',
    reply_to     TEXT    NOT NULL DEFAULT '',
    kind         TEXT    NOT NULL,
    text         TEXT    NOT NULL DEFAULT '',
    state        TEXT    NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'delivered', 'failed')),
    platform_id  TEXT    NOT NULL DEFAULT '',
    attempts     INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    delivered_at INTEGER,
    reason       TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX outbound_pending ON outbound (id) WHERE state = 'pending';

-- Tool calls waiting for a person's decision. Schema only for now: the code
-- that writes it comes with the approval flow.
CREATE TABLE approvals (
    id           INTEGER PRIMARY KEY,
    turn_id      INTEGER NOT NULL REFERENCES turns (id),
    call_id      TEXT    NOT NULL,
    tool         TEXT    NOT NULL,
    principal_id INTEGER NOT NULL REFERENCES principals (id),
    state        TEXT    NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'approved', 'denied', 'expired')),
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    decided_at   INTEGER,
    decided_by   TEXT    NOT NULL DEFAULT '',
    UNIQUE (turn_id, call_id)
);
CREATE INDEX approvals_pending ON approvals (expires_at) WHERE state = 'pending';
