-- 0007_approval_prompts: what an approval's prompt shows (the request's
-- method, host and path, or the call's arguments: redacted and bounded by
-- the runtime before they are written) and the platform message that
-- shows it, so that after a restart the same message is used again instead
-- of a second prompt being posted.

ALTER TABLE approvals ADD COLUMN method       TEXT    NOT NULL DEFAULT '';
ALTER TABLE approvals ADD COLUMN host         TEXT    NOT NULL DEFAULT '';
ALTER TABLE approvals ADD COLUMN path         TEXT    NOT NULL DEFAULT '';
ALTER TABLE approvals ADD COLUMN args         TEXT    NOT NULL DEFAULT '';
ALTER TABLE approvals ADD COLUMN args_omitted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE approvals ADD COLUMN message      TEXT    NOT NULL DEFAULT '';
