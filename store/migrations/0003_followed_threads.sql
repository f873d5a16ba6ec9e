-- 0003_followed_threads: the threads a channel adapter follows for a user
-- (one where they mentioned the bot: a follow-up there needs no new
-- mention), so that a restart does not forget them. A row holds the user's
-- last activity in the thread that reached the bot; the adapter decides how
-- long a quiet thread stays followed and prunes older rows. Slack keys a
-- thread by channel and thread ts; Discord's threads are channels (thread
-- is '').

CREATE TABLE followed_threads (
    platform  TEXT    NOT NULL,
    workspace TEXT    NOT NULL DEFAULT '',
    channel   TEXT    NOT NULL,
    thread    TEXT    NOT NULL DEFAULT '',
    user      TEXT    NOT NULL,
    active_at INTEGER NOT NULL,
    PRIMARY KEY (platform, workspace, channel, thread, user)
) WITHOUT ROWID;
CREATE INDEX followed_threads_age ON followed_threads (platform, active_at);
