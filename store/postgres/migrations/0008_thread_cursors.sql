-- 0008_thread_cursors: how far a session has read its platform thread,
-- recorded with the inbound message whose turn read it.

ALTER TABLE inbound ADD COLUMN thread_cursor TEXT NOT NULL DEFAULT '';
