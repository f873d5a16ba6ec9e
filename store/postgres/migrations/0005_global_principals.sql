-- 0005_global_principals: in SQLite this merged the principals of one
-- person (Discord users, Slack Enterprise Grid users) stored with a
-- workspace. A PostgreSQL database is only ever written by a Talon that
-- builds those principals without one (and talon migrate-store copies from
-- an SQLite file already migrated), so there is nothing to convert: the
-- version is recorded so that the numbers stay the same as SQLite's.
SELECT 1;
