-- 0026_inbound_session_unfinished: a session's unfinished messages by
-- index (PendingUpTo, at every announced message), instead of walking every
-- unfinished message of the deployment with a lower id: the partial index on
-- id alone keeps the entries of finished messages until a vacuum, so that
-- walk grew with the traffic.
CREATE INDEX inbound_session_unfinished ON inbound (principal_id, channel, thread, id) WHERE state IN ('queued', 'running');
