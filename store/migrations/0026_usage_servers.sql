-- 0026_usage_servers: the Discord server (guild) a message was sent in, so
-- that budgets.workspace_monthly_tokens bounds each server, and the
-- console's Usage groups by it. A Discord principal names no server (its
-- user id is global), so the server comes with each message: inbound.server
-- ('' in a DM and on Slack, whose principal names its workspace). A
-- session's channel lies in one server, which its first turn from a server
-- records; the day's usage sums carry the server of their session. Usage
-- recorded before this migration has no server.

ALTER TABLE inbound ADD COLUMN server TEXT NOT NULL DEFAULT '';
ALTER TABLE sessions ADD COLUMN server TEXT NOT NULL DEFAULT '';
ALTER TABLE usage_daily ADD COLUMN server TEXT NOT NULL DEFAULT '';
CREATE INDEX usage_daily_server ON usage_daily (server, day) WHERE server != '';
