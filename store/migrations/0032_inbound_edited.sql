-- 0032_inbound_edited: the platform's time of the newest edit applied to a
-- queued inbound (AmendInbound), in microseconds since the Unix epoch; 0:
-- none, or only edits without a time. An older edit is refused: one that a
-- replica received before it stalled cannot replace, when it wakes, a
-- newer one applied meanwhile.

ALTER TABLE inbound ADD COLUMN edited_us INTEGER NOT NULL DEFAULT 0;
