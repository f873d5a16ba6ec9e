-- 0005_global_principals: a principal whose user id is global across its
-- platform's workspaces no longer names the workspace. Discord user ids are
-- global, so "discord:GUILD:USER" becomes "discord::USER" (a secret added in
-- one server is the same person's in a DM and in every other server); Slack
-- Enterprise Grid user ids (W…) are global too, so "slack:T…:W…" becomes
-- "slack::W…". Other Slack users keep their workspace. store.GlobalPrincipal
-- is the same rule in Go; the vault's sealed entries, whose user is bound
-- into their encryption, are re-sealed by the vault at start-up.
--
-- The principals of one person merge into one: every row pointing at an old
-- principal points at the new one. Two active sessions that become the same
-- (same person, channel and thread) cannot both stay active: the newer
-- stays, the older is retired, like /new would. Followed threads merge,
-- keeping the latest activity.

CREATE TEMP TABLE principal_moves (
    old_id INTEGER PRIMARY KEY,
    new_id INTEGER NOT NULL
);

INSERT OR IGNORE INTO principals (platform, workspace, user, created_at)
SELECT platform, '', user, MIN(created_at) FROM principals
WHERE workspace <> '' AND (platform = 'discord' OR (platform = 'slack' AND substr(user, 1, 1) = 'W'))
GROUP BY platform, user;

INSERT INTO principal_moves (old_id, new_id)
SELECT o.id, n.id FROM principals o
JOIN principals n ON n.platform = o.platform AND n.workspace = '' AND n.user = o.user
WHERE o.workspace <> '' AND (o.platform = 'discord' OR (o.platform = 'slack' AND substr(o.user, 1, 1) = 'W'));

UPDATE sessions SET active = 0, retired_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000
WHERE active = 1 AND EXISTS (
    SELECT 1 FROM sessions t
    WHERE t.active = 1 AND t.id > sessions.id AND t.channel = sessions.channel AND t.thread = sessions.thread
      AND coalesce((SELECT new_id FROM principal_moves WHERE old_id = t.principal_id), t.principal_id)
        = coalesce((SELECT new_id FROM principal_moves WHERE old_id = sessions.principal_id), sessions.principal_id)
);

UPDATE sessions SET principal_id = (SELECT new_id FROM principal_moves WHERE old_id = sessions.principal_id)
WHERE principal_id IN (SELECT old_id FROM principal_moves);
UPDATE inbound SET principal_id = (SELECT new_id FROM principal_moves WHERE old_id = inbound.principal_id)
WHERE principal_id IN (SELECT old_id FROM principal_moves);
UPDATE outbound SET principal_id = (SELECT new_id FROM principal_moves WHERE old_id = outbound.principal_id)
WHERE principal_id IN (SELECT old_id FROM principal_moves);
UPDATE approvals SET principal_id = (SELECT new_id FROM principal_moves WHERE old_id = approvals.principal_id)
WHERE principal_id IN (SELECT old_id FROM principal_moves);

DELETE FROM principals WHERE id IN (SELECT old_id FROM principal_moves);
DROP TABLE principal_moves;

INSERT INTO followed_threads (platform, workspace, channel, thread, user, active_at)
SELECT platform, '', channel, thread, user, MAX(active_at) FROM followed_threads
WHERE workspace <> '' AND (platform = 'discord' OR (platform = 'slack' AND substr(user, 1, 1) = 'W'))
GROUP BY platform, channel, thread, user
ON CONFLICT (platform, workspace, channel, thread, user) DO UPDATE SET active_at = max(active_at, excluded.active_at);

DELETE FROM followed_threads
WHERE workspace <> '' AND (platform = 'discord' OR (platform = 'slack' AND substr(user, 1, 1) = 'W'));
