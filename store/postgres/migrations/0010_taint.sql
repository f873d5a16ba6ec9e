-- 0010_taint: the first source of untrusted content a turn and its session
-- read, and why an approval was asked because of it.

ALTER TABLE turns    ADD COLUMN taint TEXT NOT NULL DEFAULT '';
ALTER TABLE sessions ADD COLUMN taint TEXT NOT NULL DEFAULT '';
ALTER TABLE approvals
    ADD COLUMN reason     TEXT   NOT NULL DEFAULT '',
    ADD COLUMN url_bytes  BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN body_bytes BIGINT NOT NULL DEFAULT 0;
