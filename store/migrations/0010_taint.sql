-- 0010_taint: a turn whose context held untrusted content (a fetched page,
-- another person's message, a file) is tainted, with the source of the
-- content; its session keeps the first taint of its turns, so that a
-- resumed turn and the session's later turns stay tainted until /new. An
-- approval asked because of a taint says why, and how long the URL and
-- body it shows cut are.

ALTER TABLE turns     ADD COLUMN taint TEXT NOT NULL DEFAULT '';
ALTER TABLE sessions  ADD COLUMN taint TEXT NOT NULL DEFAULT '';
ALTER TABLE approvals ADD COLUMN reason     TEXT    NOT NULL DEFAULT '';
ALTER TABLE approvals ADD COLUMN url_bytes  INTEGER NOT NULL DEFAULT 0;
ALTER TABLE approvals ADD COLUMN body_bytes INTEGER NOT NULL DEFAULT 0;
