-- 0004_channel_cursors: the channels a channel adapter reads back after a
-- gap, with the newest message seen in each.

CREATE TABLE channel_cursors (
    platform  TEXT   NOT NULL,
    channel   TEXT   NOT NULL,
    workspace TEXT   NOT NULL DEFAULT '',
    last_id   TEXT   NOT NULL,
    active_at BIGINT NOT NULL,
    PRIMARY KEY (platform, channel)
);
CREATE INDEX channel_cursors_age ON channel_cursors (platform, active_at);
