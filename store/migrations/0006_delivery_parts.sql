-- 0006_delivery_parts: how far the delivery of each reply went. A channel
-- posts a long reply in parts; each part is recorded here right after it is
-- posted, before the next, so that a delivery cut short (a failure, a
-- crash) continues with the first part not recorded instead of posting the
-- others again. The message that showed an answer while it was generated
-- (a streamed preview) is recorded by the inbound it answers, as soon as it
-- is posted: the reply's delivery edits it into the reply's first part.

CREATE TABLE outbound_parts (
    outbound_id INTEGER NOT NULL REFERENCES outbound (id),
    n           INTEGER NOT NULL CHECK (n >= 0),
    platform_id TEXT    NOT NULL DEFAULT '',
    posted_at   INTEGER NOT NULL,
    PRIMARY KEY (outbound_id, n)
) WITHOUT ROWID;

CREATE TABLE stream_previews (
    inbound_id  INTEGER PRIMARY KEY REFERENCES inbound (id),
    platform_id TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);
