-- 0023_usage_servers: the Discord server (guild) a message was sent in
-- (SQLite's 0026), so that budgets.workspace_monthly_tokens bounds each
-- server, and the console's Usage groups by it: inbound.server ('' in a DM
-- and on Slack); a session's channel lies in one server, which its first
-- turn from a server records; the day's usage sums carry the server of
-- their session. Usage recorded before this migration has no server.

ALTER TABLE inbound ADD COLUMN server TEXT NOT NULL DEFAULT '';
ALTER TABLE sessions ADD COLUMN server TEXT NOT NULL DEFAULT '';
ALTER TABLE usage_daily ADD COLUMN server TEXT NOT NULL DEFAULT '';
CREATE INDEX usage_daily_server ON usage_daily (server, day) WHERE server <> '';
