-- 0025_messages_search: an index of the messages' stored text for the
-- console's conversation search (store/conversations.go), so a search
-- with few matches reads its matches instead of every message.
--
-- The index is FTS5 with the trigram tokenizer, which answers LIKE
-- '%text%' (case-insensitive, as LIKE is) from the index when the text
-- has 3 characters or more. It is an external-content index: it keeps
-- the trigrams of each message and its id (detail=none: no positions),
-- never a copy of the text, which stays in messages. What it indexes is
-- messages.content: the message as stored, redacted as the model saw it,
-- which is what the console's transcript shows. Messages are never
-- edited; the triggers keep the index in step with inserts and deletes.
--
-- Existing messages are indexed after the migration, in the background and
-- newest first, in small batches (store/search.go): a database of millions
-- of messages opens at once. messages_fts_backlog holds, while that lasts,
-- the id below which messages are not indexed yet; search reads the
-- messages instead of the index until it is empty. The delete and update
-- triggers leave alone a message not indexed yet.

CREATE VIRTUAL TABLE messages_fts USING fts5(
    content,
    content = 'messages', content_rowid = 'id',
    tokenize = 'trigram', detail = 'none'
);

CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
END;

CREATE TABLE messages_fts_backlog (
    below INTEGER NOT NULL
);
INSERT INTO messages_fts_backlog (below) SELECT max(id) + 1 FROM messages HAVING max(id) IS NOT NULL;

CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
WHEN old.id >= coalesce((SELECT below FROM messages_fts_backlog), 0) BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
END;

CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages
WHEN old.id >= coalesce((SELECT below FROM messages_fts_backlog), 0) BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
    INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
END;
