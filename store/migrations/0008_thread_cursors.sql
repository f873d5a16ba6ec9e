-- 0008_thread_cursors: how far a session has read the platform thread its
-- messages come from (a Slack ts, a Discord snowflake), recorded with the
-- inbound message whose turn read it, before the turn starts. A cursor
-- counts once its turn has started (the read messages are in the history
-- then, with the question), so the next turn reads only newer messages and
-- a read whose turn never started (a crash in between) is read again.

ALTER TABLE inbound ADD COLUMN thread_cursor TEXT NOT NULL DEFAULT '';
