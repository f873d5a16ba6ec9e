-- 0031_usage_periods: what the console derives from a period's settled days
-- (the usage CSV's lines of those days), kept under a name the console
-- chooses (the page, the period's length, its prices), so that a console
-- with nothing in memory (a restart, the first load of a day) reads one
-- value instead of summing 40,000 rows. A period ends at the settled day
-- (usage_days, 0030); keeping one deletes those that end earlier. A resumed
-- turn that takes back a step of a day deletes the periods that hold that
-- day in its transaction (PostgreSQL's 0029 keeps the usage generation
-- instead). Derived, so never copied (talon migrate-store).

CREATE TABLE usage_periods (
    name      TEXT    NOT NULL,
    first_day INTEGER NOT NULL,
    end_day   INTEGER NOT NULL,
    data      BLOB    NOT NULL,
    PRIMARY KEY (name, first_day, end_day)
);
