-- 0013_turn_files: files a turn's tools returned for the user (the bytes
-- are kept by content hash in the data directory, not here).

CREATE TABLE turn_files (
    turn_id    BIGINT NOT NULL REFERENCES turns (id),
    call_id    TEXT   NOT NULL,
    name       TEXT   NOT NULL,
    media_type TEXT   NOT NULL DEFAULT '',
    hash       TEXT   NOT NULL,
    size       BIGINT NOT NULL CHECK (size >= 0),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (turn_id, call_id)
);
