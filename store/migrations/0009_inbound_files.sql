-- 0009_inbound_files: the files attached to an accepted message, as its
-- platform described them (name, type, size, where to download it; JSON of
-- []agent.File, '' for none), so that a message queued across a restart is
-- answered with its files. The bytes are downloaded when its turn starts and
-- kept by content hash under the data directory (store.FileDir), not here.

ALTER TABLE inbound ADD COLUMN files TEXT NOT NULL DEFAULT '';
