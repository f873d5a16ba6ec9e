-- 0025_usage_generation: a generation of the settled days' usage, so that
-- the console keeps what it derives from them (UsageSettled) and every
-- replica sees when they change. After a day has settled its sums only
-- shrink: a resumed turn that records a step again takes the step's
-- figures back from the day it was first recorded on (calls - 1). Each such
-- write moves the generation on, in the writer's transaction.

CREATE TABLE usage_generation (n BIGINT NOT NULL);
INSERT INTO usage_generation (n) VALUES (0);

CREATE FUNCTION usage_generation_next() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE usage_generation SET n = n + 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER usage_daily_taken_back AFTER UPDATE ON usage_daily
    FOR EACH ROW WHEN (NEW.calls < OLD.calls) EXECUTE FUNCTION usage_generation_next();
CREATE TRIGGER usage_daily_taken_back_new AFTER INSERT ON usage_daily
    FOR EACH ROW WHEN (NEW.calls < 0) EXECUTE FUNCTION usage_generation_next();
