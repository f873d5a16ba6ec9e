-- 0027_fences: the newest fencing token of each claim (agent.Fence), e.g.
-- a partition's lease (SQLite's 0028). A write of a turn made under an
-- older token calls talon_fence first, in its transaction, which raises
-- TF001 (agent.ErrFenced). The writers hold a shared advisory lock on the
-- name until they commit; AdvanceFence takes it exclusively, so that it
-- waits for the writes that passed the check, and every write after it
-- sees the new token.

CREATE TABLE fences (
    name  TEXT   PRIMARY KEY,
    token BIGINT NOT NULL
);

CREATE FUNCTION talon_fence(n TEXT, t BIGINT) RETURNS VOID LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    cur BIGINT;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(1952541804, hashtext(n));
    SELECT token INTO cur FROM fences WHERE name = n;
    IF cur > t THEN
        RAISE EXCEPTION 'fencing token of % is %, this write has %', n, cur, t USING ERRCODE = 'TF001';
    END IF;
END
$$;
