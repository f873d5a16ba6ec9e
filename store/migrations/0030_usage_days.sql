-- 0030_usage_days: the usage rows of each settled day (a day ended more
-- than the store's grace ago), encoded in one value (store.EncodeUsageDay):
-- the console's first load of a period reads one value a day instead of each
-- principal's rows (40,000 for 30 days of 10,000 users). Written by the first
-- reader of a day; a resumed turn that takes back a step of a day deletes
-- that day's value in its transaction, so that the day is read again from
-- usage_daily (PostgreSQL's 0028 keeps the usage generation instead).
-- Derived, so never copied (talon migrate-store).

CREATE TABLE usage_days (
    day  INTEGER PRIMARY KEY,
    data BLOB    NOT NULL
);
