-- 0029_messages_search_deferred: a new message is added to the search
-- index (0025) shortly after its turn wrote it, in the background, instead
-- of inside the turn's own write transaction. Indexing a message's
-- trigrams took about 1 ms of the writer, which every turn waits for, for
-- a question that carries 100 thread messages (about 10 KB): the Slack
-- thread context's overhead grew from ~2 ms to ~3.5 ms with 0025.
--
-- messages_fts_pending holds the ids of the messages not indexed yet; the
-- insert trigger only adds the id. store/search.go indexes them in small
-- write transactions (many at once when several turns ran meanwhile) and
-- the search reads these messages themselves, so that what it finds is
-- the same as before: a message is found from the moment it is stored.
--
-- A pending message that is deleted or updated is not in the index, so
-- the triggers remove only its id (the indexer reads its content when it
-- indexes it).

DROP TRIGGER messages_fts_insert;
DROP TRIGGER messages_fts_delete;
DROP TRIGGER messages_fts_update;

CREATE TABLE messages_fts_pending (
    id INTEGER PRIMARY KEY
);

CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts_pending (id) VALUES (new.id);
END;

-- One trigger, in this order: whether the message was indexed is read
-- before its pending id is removed.
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content)
    SELECT 'delete', old.id, old.content
    WHERE old.id >= coalesce((SELECT below FROM messages_fts_backlog), 0)
      AND NOT EXISTS (SELECT 1 FROM messages_fts_pending WHERE id = old.id);
    DELETE FROM messages_fts_pending WHERE id = old.id;
END;

CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages
WHEN old.id >= coalesce((SELECT below FROM messages_fts_backlog), 0)
 AND NOT EXISTS (SELECT 1 FROM messages_fts_pending WHERE id = old.id) BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
    INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
END;
