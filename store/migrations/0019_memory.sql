-- 0019_memory: what the model was asked to remember (memory_save), per
-- user or per channel, with a full-text index (FTS5) over the text.
--
-- space is "user:<principal>" or "channel:<platform>:<channel id>"; tag is
-- the space as one search token (see store/memory.go), so that a search
-- narrows to its spaces inside the index. taint is the source of the
-- taint of the turn that saved the entry, '' when it read no untrusted
-- content. Entries are never edited: forgetting deletes the row. Words are
-- matched by their English stem (porter), without case or diacritics.

CREATE TABLE memories (
    id         INTEGER PRIMARY KEY,
    space      TEXT    NOT NULL,
    tag        TEXT    NOT NULL,
    author     TEXT    NOT NULL,
    text       TEXT    NOT NULL,
    taint      TEXT    NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL
);

CREATE INDEX memories_space ON memories (space, id);

CREATE VIRTUAL TABLE memories_fts USING fts5(
    text, tag,
    content = 'memories', content_rowid = 'id',
    tokenize = 'porter unicode61 remove_diacritics 2'
);

CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts (rowid, text, tag) VALUES (new.id, new.text, new.tag);
END;

CREATE TRIGGER memories_fts_delete AFTER DELETE ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, text, tag) VALUES ('delete', old.id, old.text, old.tag);
END;
