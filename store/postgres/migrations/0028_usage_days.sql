-- 0028_usage_days: the usage rows of each settled day (a day ended more than
-- the store's grace ago), encoded in one value, under the usage generation
-- (0025) read before the rows were: the console's first load of a period
-- reads one value a day instead of each principal's rows (40,000 for 30
-- days of 10,000 users), and a resumed turn that takes back a settled day's
-- step moves the generation on, so that the day is read again from
-- usage_daily. Written by the first reader of a day under a generation;
-- derived, so never copied (talon migrate-store).

CREATE TABLE usage_days (
    day  BIGINT PRIMARY KEY,
    gen  BIGINT NOT NULL,
    data BYTEA  NOT NULL
);
-- Kept out of line but not compressed: decompressing cost more than the
-- bytes saved on a local connection.
ALTER TABLE usage_days ALTER COLUMN data SET STORAGE EXTERNAL;
