-- 0021_memory_ids: an entry's number is never given to another entry
-- (AUTOINCREMENT), so a number a person or the model saw cannot come to
-- name another entry after it is forgotten. The table is rebuilt with its
-- rows and ids; the full-text index keeps them (its content table is named
-- memories again, with the same rowids).

DROP TRIGGER memories_fts_insert;
DROP TRIGGER memories_fts_delete;
DROP INDEX memories_space;

CREATE TABLE memories_new (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    space      TEXT    NOT NULL,
    tag        TEXT    NOT NULL,
    author     TEXT    NOT NULL,
    text       TEXT    NOT NULL,
    taint      TEXT    NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL
);
INSERT INTO memories_new (id, space, tag, author, text, taint, created_at)
    SELECT id, space, tag, author, text, taint, created_at FROM memories;
DROP TABLE memories;
ALTER TABLE memories_new RENAME TO memories;

CREATE INDEX memories_space ON memories (space, id);

CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts (rowid, text, tag) VALUES (new.id, new.text, new.tag);
END;

CREATE TRIGGER memories_fts_delete AFTER DELETE ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, text, tag) VALUES ('delete', old.id, old.text, old.tag);
END;
