-- 0013_turn_files: files a turn's tools returned for the user, attached to
-- the turn's reply. The bytes are kept by content hash under the data
-- directory (store.FileDir), not here. One file per tool call: recording a
-- call's file again (the call ran again in a resumed turn) replaces it.

CREATE TABLE turn_files (
    turn_id    INTEGER NOT NULL REFERENCES turns (id),
    call_id    TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    media_type TEXT    NOT NULL DEFAULT '',
    hash       TEXT    NOT NULL,
    size       INTEGER NOT NULL CHECK (size >= 0),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (turn_id, call_id)
) WITHOUT ROWID;
