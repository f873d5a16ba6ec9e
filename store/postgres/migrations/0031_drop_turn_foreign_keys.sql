-- 0031_drop_turn_foreign_keys: the foreign keys that a turn's writes check
-- are dropped, on PostgreSQL only: each check took a FOR KEY SHARE lock on
-- the parent row, which dirtied its page and wrote WAL on every accept,
-- session, start, message, step, tool call, reply, posted part and preview,
-- while the parents are never deleted. The tests check the same references
-- instead (DB.Orphans, whose list in integrity.go names these keys). The
-- keys of approvals, turn files, usage, routines and time zones, written off
-- a turn's path or once a day, stay.

ALTER TABLE inbound
    DROP CONSTRAINT IF EXISTS inbound_principal_id_fkey,
    DROP CONSTRAINT IF EXISTS inbound_turn_id_fkey;
ALTER TABLE sessions
    DROP CONSTRAINT IF EXISTS sessions_principal_id_fkey;
ALTER TABLE turns
    DROP CONSTRAINT IF EXISTS turns_session_id_fkey,
    DROP CONSTRAINT IF EXISTS turns_inbound_id_fkey;
ALTER TABLE messages
    DROP CONSTRAINT IF EXISTS messages_session_id_fkey,
    DROP CONSTRAINT IF EXISTS messages_turn_id_fkey;
ALTER TABLE turn_steps
    DROP CONSTRAINT IF EXISTS turn_steps_turn_id_fkey;
ALTER TABLE tool_calls
    DROP CONSTRAINT IF EXISTS tool_calls_turn_id_fkey;
ALTER TABLE outbound
    DROP CONSTRAINT IF EXISTS outbound_inbound_id_fkey,
    DROP CONSTRAINT IF EXISTS outbound_turn_id_fkey,
    DROP CONSTRAINT IF EXISTS outbound_principal_id_fkey;
ALTER TABLE outbound_parts
    DROP CONSTRAINT IF EXISTS outbound_parts_outbound_id_fkey;
ALTER TABLE stream_previews
    DROP CONSTRAINT IF EXISTS stream_previews_inbound_id_fkey;
