-- 0007_approval_prompts: what an approval's prompt shows and the platform
-- message that shows it.

ALTER TABLE approvals
    ADD COLUMN method       TEXT   NOT NULL DEFAULT '',
    ADD COLUMN host         TEXT   NOT NULL DEFAULT '',
    ADD COLUMN path         TEXT   NOT NULL DEFAULT '',
    ADD COLUMN args         TEXT   NOT NULL DEFAULT '',
    ADD COLUMN args_omitted BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN message      TEXT   NOT NULL DEFAULT '';
