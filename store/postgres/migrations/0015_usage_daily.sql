-- 0015_usage_daily: the tokens of model calls summed per UTC day,
-- principal, channel and model, kept up to date as each step is recorded.

CREATE TABLE usage_daily (
    day           BIGINT NOT NULL, -- unix milliseconds / 86400000
    principal_id  BIGINT NOT NULL REFERENCES principals (id),
    channel       TEXT   NOT NULL,
    model         TEXT   NOT NULL,
    calls         BIGINT NOT NULL,
    input_tokens  BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    PRIMARY KEY (day, principal_id, channel, model)
);
CREATE INDEX usage_daily_principal ON usage_daily (principal_id, day);

INSERT INTO usage_daily (day, principal_id, channel, model, calls, input_tokens, output_tokens)
SELECT ts.created_at / 86400000, s.principal_id, s.channel, ts.model, count(*), sum(ts.input_tokens), sum(ts.output_tokens)
FROM turn_steps ts JOIN turns t ON t.id = ts.turn_id JOIN sessions s ON s.id = t.session_id
GROUP BY 1, 2, 3, 4;
