-- 0028_fences: the newest fencing token of each claim (agent.Fence), e.g.
-- a partition's lease: writes of a turn made under an older token are
-- refused (agent.ErrFenced).
CREATE TABLE fences (
    name  TEXT    PRIMARY KEY,
    token INTEGER NOT NULL
) WITHOUT ROWID;
