-- 0027_routine_notice: the notice a routine's owner is owed (that it
-- paused, and why) until it is delivered: the scheduler retries it with
-- backoff at notice_at (milliseconds), notice_tries attempts made so far.
-- '' is none; a resume clears it, a delete removes it with the routine.

ALTER TABLE routines ADD COLUMN notice TEXT NOT NULL DEFAULT '';
ALTER TABLE routines ADD COLUMN notice_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE routines ADD COLUMN notice_tries INTEGER NOT NULL DEFAULT 0;
