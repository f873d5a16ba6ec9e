-- 0029_usage_periods: what the console derives from a period's settled days
-- (the usage CSV's lines of those days), kept under a name the console
-- chooses (the page, the period's length, its prices) and the usage
-- generation (0025) read before the period's rows were: a console with
-- nothing in memory (a restart, another replica, the first load of a day)
-- reads one value instead of summing 40,000 rows. A period ends at the
-- settled day (usage_days, 0028); keeping one deletes those that end
-- earlier. Derived, so never copied (talon migrate-store).

CREATE TABLE usage_periods (
    name      TEXT   NOT NULL,
    first_day BIGINT NOT NULL,
    end_day   BIGINT NOT NULL,
    gen       BIGINT NOT NULL,
    data      BYTEA  NOT NULL,
    PRIMARY KEY (name, first_day, end_day)
);
ALTER TABLE usage_periods ALTER COLUMN data SET STORAGE EXTERNAL;
