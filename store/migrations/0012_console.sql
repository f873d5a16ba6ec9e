-- 0012_console: what the operator's console reads and writes. A model call
-- (turn step) names its model, so usage is counted per model; steps and
-- turns are indexed by time for the console's daily and hourly sums; the
-- console's admin actions (sign-in, sign-out, deletions) are audited.

ALTER TABLE turn_steps ADD COLUMN model TEXT NOT NULL DEFAULT '';
CREATE INDEX turn_steps_created ON turn_steps (created_at);
CREATE INDEX turns_started ON turns (started_at);

CREATE TABLE console_audit (
    id     INTEGER PRIMARY KEY,
    at     INTEGER NOT NULL,
    actor  TEXT    NOT NULL,
    action TEXT    NOT NULL,
    target TEXT    NOT NULL DEFAULT '',
    remote TEXT    NOT NULL DEFAULT ''
);
