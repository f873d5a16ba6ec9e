-- 0004_channel_cursors: the channels a channel adapter reads back after a
-- gap (a reconnect, or a restart: messages sent while Talon was stopped),
-- with the newest message seen in each, so that a restart does not forget
-- them. Discord uses it; ids are snowflakes, which compare by length, then
-- bytes. The adapter decides which rows are recent enough to read back and
-- prunes older ones.

CREATE TABLE channel_cursors (
    platform  TEXT    NOT NULL,
    channel   TEXT    NOT NULL,
    workspace TEXT    NOT NULL DEFAULT '',
    last_id   TEXT    NOT NULL,
    active_at INTEGER NOT NULL,
    PRIMARY KEY (platform, channel)
) WITHOUT ROWID;
CREATE INDEX channel_cursors_age ON channel_cursors (platform, active_at);
