-- 0021_memory_query_immutable: talon_memory_query is folded into a
-- constant when a search is planned, so that the planner estimates how
-- many entries hold the words (GIN statistics) and picks the index: the
-- words' GIN index for rare words, the entries newest first for common
-- ones. Left STABLE, it was evaluated again for every row a plan read,
-- and a plan made without the values (a prepared statement's generic
-- plan) read a whole memory for a rare word: 0.5 s for 100,000 entries.
-- Its result depends only on its arguments and the built-in English
-- snowball dictionary, which does not change while the server runs.

ALTER FUNCTION talon_memory_query(TEXT[], TEXT[]) IMMUTABLE;
