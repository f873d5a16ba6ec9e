-- 0014_budgets: a principal's sessions are found by principal.

CREATE INDEX sessions_principal ON sessions (principal_id);
