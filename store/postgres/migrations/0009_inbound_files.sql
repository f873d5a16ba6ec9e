-- 0009_inbound_files: the files attached to an accepted message (JSON of
-- []agent.File, '' for none).

ALTER TABLE inbound ADD COLUMN files TEXT NOT NULL DEFAULT '';
