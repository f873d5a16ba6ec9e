-- 0015_usage_daily: the tokens of model calls summed per UTC day, principal,
-- channel and model, kept up to date as each step is recorded (a step
-- recorded again replaces its earlier figures). The console's Usage and
-- Overview and the budgets read these sums instead of every step.

CREATE TABLE usage_daily (
    day           INTEGER NOT NULL, -- unix milliseconds / 86400000
    principal_id  INTEGER NOT NULL REFERENCES principals (id),
    channel       TEXT    NOT NULL,
    model         TEXT    NOT NULL,
    calls         INTEGER NOT NULL,
    input_tokens  INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    PRIMARY KEY (day, principal_id, channel, model)
) WITHOUT ROWID;
CREATE INDEX usage_daily_principal ON usage_daily (principal_id, day);

INSERT INTO usage_daily (day, principal_id, channel, model, calls, input_tokens, output_tokens)
SELECT ts.created_at / 86400000, s.principal_id, s.channel, ts.model, count(*), sum(ts.input_tokens), sum(ts.output_tokens)
FROM turn_steps ts JOIN turns t ON t.id = ts.turn_id JOIN sessions s ON s.id = t.session_id
GROUP BY 1, 2, 3, 4;
