-- 0003_followed_threads: the threads a channel adapter follows for a user.

CREATE TABLE followed_threads (
    platform  TEXT   NOT NULL,
    workspace TEXT   NOT NULL DEFAULT '',
    channel   TEXT   NOT NULL,
    thread    TEXT   NOT NULL DEFAULT '',
    "user"    TEXT   NOT NULL,
    active_at BIGINT NOT NULL,
    PRIMARY KEY (platform, workspace, channel, thread, "user")
);
CREATE INDEX followed_threads_age ON followed_threads (platform, active_at);
