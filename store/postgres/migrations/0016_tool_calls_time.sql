-- 0016_tool_calls_time: tool calls by start time, for the console.

CREATE INDEX tool_calls_started ON tool_calls (started_at);
