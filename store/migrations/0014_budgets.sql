-- 0014_budgets: a principal's sessions are found by principal, so that the
-- tokens of one user (budgets, /usage) are summed from their own turns.

CREATE INDEX sessions_principal ON sessions (principal_id);
